"""Reading and writing the weight files ecnn packs from and unpacks to.

Inputs: ``.safetensors`` (one file, or a sharded checkpoint through its
``model.safetensors.index.json``), and ``.pt`` / ``.pth`` / ``.bin`` state
dicts, which are loaded only with ``torch.load(weights_only=True)``: nothing is
ever unpickled beyond tensors and plain containers.
Outputs: ``.safetensors`` and ``.pt``.
"""

from __future__ import annotations

import io as _io
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ecnn import dtypes
from ecnn.file import Source
from ecnn.container.writer import atomic_write
from ecnn.errors import InvalidOption, UnreadableInput, UnsafeInput, UnsupportedDtype

log = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def kind_of(path) -> str:
    """``safetensors``, ``index``, ``torch``, ``onnx``, ``ecnn`` or ``dir`` from a path."""
    p = Path(path)
    if p.is_dir():
        return "dir"
    name = p.name.lower()
    if name.endswith(".safetensors.index.json"):
        return "index"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".ecnn"):
        return "ecnn"
    raise UnreadableInput(f"cannot tell the kind of {path}: expected .safetensors, .pt, .pth, .bin or a folder")


def load_weights(path) -> dict[str, torch.Tensor]:
    """Read a weights file or checkpoint folder into a flat dict of CPU tensors.

    Raises:
        UnreadableInput: missing file, unknown kind, or no tensors in it.
        UnsafeInput: a torch file that needs more than ``weights_only`` loading,
            or a shard index naming files outside its folder.
    """
    p = Path(path)
    if not p.exists():
        raise UnreadableInput(f"{path}: no such file or folder")
    kind = kind_of(p)
    if kind == "dir":
        if (p / SAFETENSORS_INDEX).exists():
            return _load_index(p / SAFETENSORS_INDEX)
        files = sorted(p.glob("*.safetensors"))
        if len(files) == 1:
            return _load_safetensors(files[0])
        raise UnreadableInput(f"{path}: expected {SAFETENSORS_INDEX} or exactly one .safetensors file in the folder")
    if kind == "index":
        return _load_index(p)
    if kind == "safetensors":
        return _load_safetensors(p)
    if kind == "torch":
        return _load_torch(p)
    raise UnreadableInput(f"{path}: {kind} files are not weight files this command reads")


# --- reading one tensor at a time ---------------------------------------------

MAX_SAFETENSORS_HEADER = 100_000_000  # bytes: the cap the safetensors library itself sets


def open_weights(path) -> list[Source]:
    """The tensors of a weights file or checkpoint folder, as sources to be read one at a time.

    The same inputs, names and order as :func:`load_weights`, but nothing is read
    beyond the headers: a safetensors file is read tensor by tensor at its
    offsets, a sharded checkpoint shard by shard, and a PyTorch file is memory
    mapped (``torch.load(mmap=True, weights_only=True)``; files in the legacy
    format are loaded whole).

    Raises:
        UnreadableInput: missing file, unknown kind, a malformed safetensors
            header, or no tensors.
        UnsafeInput: as :func:`load_weights`.
        UnsupportedDtype: a tensor type ecnn does not store.
    """
    p = Path(path)
    if not p.exists():
        raise UnreadableInput(f"{path}: no such file or folder")
    kind = kind_of(p)
    if kind == "dir":
        if (p / SAFETENSORS_INDEX).exists():
            return _index_entries(p / SAFETENSORS_INDEX)
        files = sorted(p.glob("*.safetensors"))
        if len(files) == 1:
            return safetensors_entries(files[0])
        raise UnreadableInput(f"{path}: expected {SAFETENSORS_INDEX} or exactly one .safetensors file in the folder")
    if kind == "index":
        return _index_entries(p)
    if kind == "safetensors":
        return safetensors_entries(p)
    if kind == "torch":
        from ecnn import torch as et

        out = []
        for name, t in _load_torch(p, mmap=True).items():
            dt = et.to_array(t.reshape(-1)[:0])[1]
            out.append(Source(name, dt, tuple(t.shape), lambda t=t: np.array(et.to_array(t)[0], copy=True)))
        return out
    raise UnreadableInput(f"{path}: {kind} files are not weight files this command reads")


def _index_entries(index: Path) -> list[Source]:
    out = []
    for sp, names in _index_shards(index):
        by_name = {e.name: e for e in safetensors_entries(sp)}
        for n in names:
            if n not in by_name:
                raise UnreadableInput(f"{sp}: index names tensor {n!r}, which the shard lacks")
            out.append(by_name[n])
    return out


def safetensors_entries(p: Path) -> list[Source]:
    """The tensors of one safetensors file, in data order (as ``safetensors.load_file`` lists them), read lazily.

    The header is checked as the safetensors library checks it: its size,
    JSON of the expected shape, known dtypes, and data offsets that match the
    shapes and tile the data section without holes or overlaps.
    """
    p = Path(p)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than its header size")
            n = int.from_bytes(head, "little")
            if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise ValueError(f"header size {n} is past the file's end or the cap")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UnreadableInput(f"{p}: not a readable safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise UnreadableInput(f"{p}: not a readable safetensors file (header is not an object)")
    base = 8 + n
    data_size = size - base
    out = []
    for name in (k for k in header if k != "__metadata__"):
        info = header[name]
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
                raise TypeError("bad shape")
            if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_size):
                raise TypeError("data offsets outside the file")
        except (KeyError, TypeError, ValueError) as e:
            raise UnreadableInput(f"{p}: tensor {name!r}: bad header entry ({e})") from None
        if code not in dtypes.SAFETENSORS:
            raise UnsupportedDtype(f"{p}: tensor {name!r} has dtype {code!r}, which ecnn does not store")
        dt = dtypes.get(dtypes.SAFETENSORS[code])
        e = Source(name, dt, tuple(shape), lambda p=p, at=base + begin, dt=dt, shape=tuple(shape): _read_at(p, at, dt, shape))
        if e.nbytes != end - begin:
            raise UnreadableInput(f"{p}: tensor {name!r} holds {end - begin} bytes, its shape and dtype need {e.nbytes}")
        out.append((begin, end, e))
    out.sort(key=lambda x: (x[0], x[1]))
    pos = 0
    for begin, end, _ in out:
        if begin != pos:
            raise UnreadableInput(f"{p}: tensors overlap or leave a hole at byte {pos} of the data")
        pos = end
    if pos != data_size:
        raise UnreadableInput(f"{p}: {data_size - pos} bytes after the last tensor")
    return [e for _, _, e in out]


def _read_at(p: Path, at: int, dt: dtypes.DType, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.empty(shape, dt.storage)
    view = memoryview(arr.reshape(-1).view(np.uint8))
    try:
        with open(p, "rb", buffering=0) as f:
            f.seek(at)
            got = 0
            while got < len(view):
                k = f.readinto(view[got:])
                if not k:
                    raise UnreadableInput(f"{p}: file ended while reading a tensor (was it changed?)")
                got += k
    except OSError as e:
        raise UnreadableInput(f"{p}: {e}") from None
    return arr


def _load_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise UnreadableInput(f"{p}: not a readable safetensors file ({e})") from None


def _index_shards(index: Path) -> list[tuple[Path, list[str]]]:
    """The shards a safetensors index names, each with its tensors, in the index's order."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not an object of strings")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnreadableInput(f"{index}: not a safetensors index ({e})") from None
    folder = index.parent.resolve()
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    out = []
    for shard, names in shards.items():
        sp = (folder / shard).resolve()
        if sp.parent != folder:
            raise UnsafeInput(f"{index}: shard {shard!r} is outside the checkpoint's folder")
        out.append((sp, names))
    return out


def _load_index(index: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for sp, names in _index_shards(index):
        tensors = _load_safetensors(sp)
        for n in names:
            if n not in tensors:
                raise UnreadableInput(f"{sp}: index names tensor {n!r}, which the shard lacks")
            out[n] = tensors[n]
    return out


def _load_torch(p: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    try:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not mmap or "mmap" not in str(e):
                raise
            obj = torch.load(str(p), map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text or "GLOBAL" in text or "Unsupported class" in text:
            found = text[text.find("Unsupported global") :].splitlines()[0] if "Unsupported global" in text else ""
            raise UnsafeInput(
                f"{p}: refusing to load: the file holds objects other than tensors, and ecnn never "
                f"unpickles arbitrary objects. {found}".rstrip()
            ) from None
        raise UnreadableInput(f"{p}: not a readable PyTorch file ({text.splitlines()[0] if text else 'bad pickle'})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise UnreadableInput(f"{p}: not a readable PyTorch file ({e})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    out: dict[str, torch.Tensor] = {}
    _flatten(obj, "", out)
    if not out:
        raise UnreadableInput(f"{p}: no tensors found")
    return out


def _flatten(obj, prefix: str, out: dict) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)
    else:
        log.info("skipping non-tensor entry %r (%s)", prefix, type(obj).__name__)


def save_weights(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> int:
    """Write tensors to ``.safetensors`` or ``.pt`` (by suffix), atomically."""
    name = str(path).lower()
    if name.endswith(".safetensors"):
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata or None)
    elif name.endswith(TORCH_SUFFIXES):
        buf = _io.BytesIO()
        torch.save(dict(tensors), buf)
        data = buf.getvalue()
    else:
        raise InvalidOption(f"{path}: output must end in .safetensors, .pt, .pth or .bin")
    return atomic_write(path, [data])


def same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
