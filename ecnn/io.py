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

import torch

from ecnn.container.writer import atomic_write
from ecnn.errors import InvalidOption, UnreadableInput, UnsafeInput

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


def _load_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise UnreadableInput(f"{p}: not a readable safetensors file ({e})") from None


def _load_index(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnreadableInput(f"{index}: not a safetensors index ({e})") from None
    folder = index.parent.resolve()
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    out: dict[str, torch.Tensor] = {}
    for shard, names in shards.items():
        sp = (folder / shard).resolve()
        if sp.parent != folder:
            raise UnsafeInput(f"{index}: shard {shard!r} is outside the checkpoint's folder")
        tensors = _load_safetensors(sp)
        for n in names:
            if n not in tensors:
                raise UnreadableInput(f"{sp}: index names tensor {n!r}, which the shard lacks")
            out[n] = tensors[n]
    return out


def _load_torch(p: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
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
