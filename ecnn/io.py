"""Reading and writing the weight files ecnn packs from and unpacks to.

Inputs: ``.safetensors`` (one file, or a sharded checkpoint through its
``model.safetensors.index.json``), and ``.pt`` / ``.pth`` / ``.bin`` state
dicts, which are loaded only with ``torch.load(weights_only=True)``: nothing is
ever unpickled beyond tensors and plain containers.
Outputs: ``.pt``, and ``.safetensors`` files or sharded checkpoint folders
written by a streaming writer (:func:`write_safetensors`,
:func:`write_sharded`) that takes one numpy array at a time, so that nothing
holds more than one tensor; it needs no torch.
"""

from __future__ import annotations

import io as _io
import json
import logging
import os
import pickle
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ecnn import dtypes
from ecnn.container import format as fmt
from ecnn.container.writer import atomic_write, fsync_dir
from ecnn.errors import (
    ForeignOutput,
    InvalidFileName,
    InvalidOption,
    InvalidTensorName,
    OutputExists,
    UnreadableInput,
    UnsafeInput,
    UnsupportedDtype,
)
from ecnn.file import Source, write_file_into

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"  # Hugging Face's name for a checkpoint in one file
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
    kind, p = _resolve(path)
    if kind == "index":
        return _load_index(p)
    if kind == "safetensors":
        return _load_safetensors(p)
    return _load_torch(p)


def _resolve(path) -> tuple[str, Path]:
    """``("index" | "safetensors" | "torch", the file)`` that a weights path names (a folder: its index or only shard).

    Raises:
        UnreadableInput: no such path, or nothing this reader reads.
    """
    p = Path(path)
    if not p.exists():
        raise UnreadableInput(f"{path}: no such file or folder")
    kind = kind_of(p)
    if kind == "dir":
        if (p / SAFETENSORS_INDEX).exists():
            return "index", p / SAFETENSORS_INDEX
        files = sorted(p.glob("*.safetensors"))
        if len(files) == 1:
            return "safetensors", files[0]
        raise UnreadableInput(f"{path}: expected {SAFETENSORS_INDEX} or exactly one .safetensors file in the folder")
    if kind in ("index", "safetensors", "torch"):
        return kind, p
    raise UnreadableInput(f"{path}: {kind} files are not weight files this command reads")


# --- a model folder's other files ----------------------------------------------

# What ``ecnn pack FOLDER/`` stores beside the weights (spec/FORMAT.md 6.6): the folder's small regular
# files, except weights (packed as tensors, or another format's copy of them), shard indexes, pickles,
# and code, which Hugging Face's trust_remote_code would execute.
WEIGHT_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".hdf5", ".msgpack", ".onnx", ".onnx_data", ".gguf",
    ".ggml", ".npz", ".npy", ".pb", ".tflite", ".ot", ".ecnn", ".index.json", ".mlmodel", ".keras",
)  # fmt: skip
UNSAFE_SUFFIXES = (
    ".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".exe", ".sh", ".bat", ".cmd", ".ps1", ".js",
    ".pkl", ".pickle", ".joblib", ".ipynb",
)  # fmt: skip
MAX_STORED_FILE_BYTES = 64 << 20  # larger files are not stored by default (a big tokenizer.json is ~35 MB)
MAX_STORED_BYTES = 256 << 20  # all stored files together


@dataclass(frozen=True)
class FolderFiles:
    """A model folder's files to store in a ``.ecnn`` beside its weights.

    Attributes:
        stored: ``{name: bytes}``, names relative POSIX paths in sorted order.
        skipped: ``(name, why)`` of the files left out, for the user.
    """

    stored: dict[str, bytes]
    skipped: list[tuple[str, str]]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.stored.values())


def model_folder_files(
    folder, max_file_bytes: int = MAX_STORED_FILE_BYTES, max_total_bytes: int = MAX_STORED_BYTES
) -> FolderFiles:
    """The files of a model folder worth storing in its ``.ecnn``: configuration, tokenizer, vocabularies.

    Takes every regular file under ``folder`` (subfolders too, e.g. sentence-transformers'
    ``1_Pooling/config.json``; a symbolic link to a file counts as the file, as in a Hugging
    Face cache snapshot; links to folders are not followed) except:

    * hidden files and folders (a name starting with ``.``: ``.git``, ``.gitattributes``, ``.cache``);
    * weights and shard indexes (:data:`WEIGHT_SUFFIXES`): the weights become the ``.ecnn``'s tensors;
    * code and pickles (:data:`UNSAFE_SUFFIXES`): a stored file is data, never run;
    * files over ``max_file_bytes``, or past ``max_total_bytes`` in all;
    * names the format cannot store (spec/FORMAT.md 6.6: e.g. spaces or non-ASCII letters).

    Raises:
        UnreadableInput: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UnreadableInput(f"{folder}: not a folder")
    stored: dict[str, bytes] = {}
    skipped: list[tuple[str, str]] = []
    taken = fmt.FileNames()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            rel = (here / d).relative_to(root).as_posix()
            if d.startswith("."):
                continue  # hidden: .git, .cache, ...
            if (here / d).is_symlink():
                skipped.append((rel + "/", "a link to a folder"))
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            rel = (here / f).relative_to(root).as_posix()
            low = f.lower()
            if f.startswith("."):
                continue
            why = None
            if low.endswith(WEIGHT_SUFFIXES):
                why = "weights or a shard index"
            elif low.endswith(UNSAFE_SUFFIXES):
                why = "code or a pickle: never stored"
            else:
                try:
                    st = os.stat(here / f)  # follows a link: a cache snapshot links to its blobs
                except OSError as e:
                    st, why = None, f"unreadable ({e.strerror})"
                if st is not None:
                    if not stat.S_ISREG(st.st_mode):
                        why = "not a regular file"
                    elif st.st_size > max_file_bytes:
                        why = f"larger than {max_file_bytes} bytes"
                    elif total + st.st_size > max_total_bytes:
                        why = f"the stored files would pass {max_total_bytes} bytes"
            if why is None:
                why = fmt.file_name_problem(rel) or taken.add(rel)
            if why is not None:
                skipped.append((rel, why))
                continue
            data = (here / f).read_bytes()
            stored[rel] = data
            total += len(data)
    return FolderFiles(dict(sorted(stored.items())), skipped)


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
    kind, p = _resolve(path)
    if kind == "index":
        return _index_entries(p)
    if kind == "safetensors":
        return safetensors_entries(p)
    from ecnn import torch as et

    out = []
    for name, t in _load_torch(p, mmap=True).items():
        dt = et.to_array(t.reshape(-1)[:0])[1]
        out.append(Source(name, dt, tuple(t.shape), lambda t=t: np.array(et.to_array(t)[0], copy=True)))
    return out


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
    import torch

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
    import torch

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
        import torch

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


# --- writing safetensors, one tensor at a time -------------------------------

DEFAULT_SHARD_SIZE = 5_000_000_000  # Hugging Face's default max_shard_size, "5GB"
MAX_HEADER_BYTES = 100_000_000  # the safetensors reader refuses longer JSON headers
_TEMP_PREFIX, _TEMP_SUFFIX = ".ecnn-", ".tmp"  # as ecnn.container.writer.atomic_write names its files


@dataclass(frozen=True)
class TensorSpec:
    """What the writers must know of a tensor before its data.

    Attributes:
        name: the tensor's name in the file.
        dtype: an ecnn dtype name (:mod:`ecnn.dtypes`), e.g. ``"bfloat16"``.
        shape: its dimensions.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = dtypes.get(self.dtype).itemsize
        for d in self.shape:
            n *= d
        return n


def safetensors_dtype(name: str) -> str:
    """The safetensors dtype string (``"BF16"``) of an ecnn dtype name (``"bfloat16"``).

    Raises:
        UnsupportedDtype: a name safetensors has no type for.
    """
    try:
        return dtypes.TO_SAFETENSORS[name]
    except (KeyError, TypeError):
        raise UnsupportedDtype(f"dtype {name!r} has no safetensors equivalent") from None


def _check_specs(specs: Iterable[TensorSpec]) -> list[TensorSpec]:
    out: list[TensorSpec] = []
    seen: set[str] = set()
    for s in specs:
        name = s.name
        if not isinstance(name, str) or not name:
            raise InvalidTensorName(f"tensor names must be non-empty strings, got {name!r}")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTensorName(f"tensor name {name[:40]!r} is not valid UTF-8 text") from None
        if name == "__metadata__":
            raise InvalidTensorName("a safetensors file cannot hold a tensor named '__metadata__'")
        if name in seen:
            raise InvalidTensorName(f"tensor name {name!r} appears twice")
        seen.add(name)
        safetensors_dtype(s.dtype)
        shape = tuple(s.shape)
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise InvalidOption(f"tensor {name!r}: shape {shape} is not a tuple of non-negative integers")
        out.append(TensorSpec(name, s.dtype, tuple(int(d) for d in shape)))
    return out


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    md = dict(metadata or {})
    for k, v in md.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidOption("safetensors metadata must map strings to strings")
        try:
            k.encode("utf-8"), v.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidOption(f"metadata entry {k[:40]!r} is not valid UTF-8 text") from None
    return md


def safetensors_header(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """The first bytes of a safetensors file holding ``specs`` back to back, in order.

    That is the header's length (8 bytes, little-endian), then the JSON header,
    padded with spaces so that the data starts at a multiple of 8.

    Raises:
        InvalidTensorName: an empty, repeated or reserved name.
        UnsupportedDtype: a dtype safetensors has no type for.
        InvalidOption: a bad shape, metadata that is not strings to strings, or a
            header longer than safetensors reads (100 MB).
    """
    specs = _check_specs(specs)
    md = _check_metadata(metadata)
    header: dict = {"__metadata__": md} if md else {}
    pos = 0
    for s in specs:
        end = pos + s.nbytes
        header[s.name] = {"dtype": safetensors_dtype(s.dtype), "shape": list(s.shape), "data_offsets": [pos, end]}
        pos = end
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_BYTES:
        raise InvalidOption(
            f"the safetensors header would take {len(text)} bytes, over the {MAX_HEADER_BYTES} readers accept"
        )
    return len(text).to_bytes(8, "little") + text


def _array_bytes(spec: TensorSpec, arr) -> np.ndarray:
    """An array's bytes as a flat uint8 view (a copy only where it is not C-contiguous little-endian)."""
    storage = dtypes.get(spec.dtype).storage
    arr = np.asarray(arr)
    if arr.dtype != storage:
        if arr.dtype.kind != storage.kind or arr.dtype.itemsize != storage.itemsize:
            raise UnsupportedDtype(
                f"tensor {spec.name!r}: a {spec.dtype} tensor travels as {storage} storage, got {arr.dtype}"
            )
        arr = arr.astype(storage)  # another byte order
    if arr.shape != spec.shape:
        raise InvalidOption(f"tensor {spec.name!r}: the array has shape {arr.shape}, the header says {spec.shape}")
    return dtypes.contiguous(arr).reshape(-1).view(np.uint8)


def _data(specs: Sequence[TensorSpec], arrays: Iterator, before: int) -> Iterator[memoryview]:
    """The arrays' bytes for ``specs``, taking one array at a time from ``arrays``.

    Each chunk is released once written, before the next array is asked for: the
    writer's loop variable still names it then, and would keep the array alive
    beside the next one.
    """
    for i, s in enumerate(specs):
        try:
            arr = next(arrays)
        except StopIteration:
            raise InvalidOption(f"the arrays ended after {before + i} tensors; the header lists more") from None
        chunk = memoryview(_array_bytes(s, arr))
        del arr
        yield chunk
        try:
            chunk.release()
        except BufferError:
            pass  # still exported by whoever wrote it; it goes when they let go


def _expect_end(arrays: Iterator, count: int) -> None:
    for _ in arrays:
        raise InvalidOption(f"more arrays than the {count} tensors listed")


def write_safetensors(
    path, specs: Sequence[TensorSpec], arrays: Iterable, metadata: Mapping[str, str] | None = None
) -> int:
    """Write a ``.safetensors`` file one tensor at a time, atomically.

    The header is made from ``specs`` before any data; then ``arrays`` is read
    one array at a time, each written and dropped before the next is asked for,
    so a generator that decodes or makes tensors on demand keeps at most one in
    memory. The file appears at ``path`` complete or not at all (temporary file
    in the same folder, fsync, rename).

    Args:
        path: the output file.
        specs: name, ecnn dtype name and shape of every tensor, in file order.
        arrays: one numpy storage array per spec, in the same order
            (:mod:`ecnn.dtypes`: bfloat16 and float8 as their bit patterns).
        metadata: string-to-string map stored as ``__metadata__``.

    Returns:
        The number of bytes written.

    Raises:
        InvalidTensorName, UnsupportedDtype, InvalidOption: as
            :func:`safetensors_header` raises them; also an array whose dtype or
            shape is not its spec's, or too few or too many arrays.

    Example:
        >>> specs = [TensorSpec("w", "float32", (2, 3))]           # doctest: +SKIP
        >>> write_safetensors("w.safetensors", specs, [np.zeros((2, 3), np.float32)])
        80
    """
    specs = _check_specs(specs)
    head = safetensors_header(specs, metadata)
    it = iter(arrays)

    def chunks():
        yield head
        yield from _data(specs, it, 0)
        _expect_end(it, len(specs))

    return atomic_write(path, chunks())


def plan_shards(specs: Sequence[TensorSpec], shard_size: int = DEFAULT_SHARD_SIZE) -> list[list[TensorSpec]]:
    """Split tensors, in order, into shards of at most ``shard_size`` bytes of data each.

    A tensor larger than ``shard_size`` gets a shard of its own. There is always
    at least one shard (empty when there are no tensors).

    Raises:
        InvalidOption: ``shard_size`` below 1.
    """
    if not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise InvalidOption(f"the shard size must be a positive number of bytes, got {shard_size!r}")
    shards: list[list[TensorSpec]] = []
    cur: list[TensorSpec] = []
    cur_bytes = 0
    for s in specs:
        n = s.nbytes
        if cur and cur_bytes + n > shard_size:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(s)
        cur_bytes += n
    if cur or not shards:
        shards.append(cur)
    return shards


def shard_name(i: int, count: int) -> str:
    """Hugging Face's name of shard ``i`` (from 1) of ``count``: ``model-00001-of-00003.safetensors``."""
    return f"model-{i:05d}-of-{count:05d}.safetensors"


def check_output_folder(folder, files: Iterable[str] = ()) -> bool:
    """Whether :func:`write_sharded` would replace files at ``folder``.

    False when there is nothing there or an empty folder; True when it is a
    folder of ``.safetensors`` files and a ``model.safetensors.index.json``
    (what ecnn writes there), and of the files and folders that the stored
    ``files`` (names, spec/FORMAT.md 6.6) begin with, which overwriting
    replaces as a whole.

    Raises:
        ForeignOutput: ``folder`` is a file or a link, or holds anything else
            (other files, subfolders): ecnn never replaces those.
    """
    p = Path(folder)
    if not os.path.lexists(p):
        return False
    if p.is_symlink() or not p.is_dir():
        raise ForeignOutput(
            f"{p} exists and is not a folder; a checkpoint folder is written only where there is none or one ecnn wrote"
        )
    entries = sorted(os.scandir(p), key=lambda e: e.name)
    top_files = {n for n in files if "/" not in n}
    top_folders = {n.split("/", 1)[0] for n in files if "/" in n}

    def ours(e: os.DirEntry) -> bool:
        if _ours(e):
            return True
        if e.is_symlink():
            return False
        return (e.name in top_files and e.is_file()) or (e.name in top_folders and e.is_dir())

    foreign = [e.name for e in entries if not ours(e)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ForeignOutput(
            f"{p} holds {foreign[0]!r}{more}, not a .safetensors shard or {SAFETENSORS_INDEX}: "
            "refusing to replace a folder that ecnn did not write"
        )
    return bool(entries)


def _ours(entry: os.DirEntry) -> bool:
    """A file ecnn writes into a checkpoint folder: a shard or the index."""
    return entry.is_file(follow_symlinks=False) and (entry.name.endswith(".safetensors") or entry.name == SAFETENSORS_INDEX)


def write_sharded(
    folder,
    specs: Sequence[TensorSpec],
    arrays: Iterable,
    metadata: Mapping[str, str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    files: Mapping[str, bytes] | None = None,
    single: bool = False,
) -> int:
    """Write a sharded safetensors checkpoint folder, one tensor at a time, atomically.

    With ``single``, a checkpoint that fits one shard is written as Hugging
    Face writes it: one ``model.safetensors`` and no index. ``files`` (names
    checked by spec/FORMAT.md 6.6, e.g. ``config.json``, ``1_Pooling/config.json``)
    are written into the folder beside the weights: the folder a ``.ecnn``
    with stored files was packed from.

    The folder holds Hugging Face's layout: shards ``model-00001-of-0000N.safetensors``
    of at most ``shard_size`` bytes of tensor data each (:func:`plan_shards`;
    every shard carries ``metadata``) and ``model.safetensors.index.json``
    (``{"metadata": {"total_size": ...}, "weight_map": {name: shard}}``). It is
    built in a hidden temporary folder beside ``folder`` (``.ecnn-*.tmp``) and
    renamed into place when complete. An existing folder is first renamed aside,
    then deleted once the new one is in place: an interruption leaves the old
    folder, none, or the complete new one at ``folder``, never a partial one;
    what it leaves beside it are hidden ``.ecnn-*.tmp`` folders.

    Args:
        folder: the output folder. Its parent must exist.
        specs: name, ecnn dtype name and shape of every tensor, in order.
        arrays: one numpy storage array per spec, in the same order; each is
            written before the next is asked for.
        metadata: string-to-string map stored in every shard's ``__metadata__``.
        shard_size: the most bytes of tensor data in a shard.
        overwrite: replace a folder that holds shards and an index already.
        files: other files to write into the folder, ``{name: bytes}``.
        single: one ``model.safetensors`` without an index when one shard holds every tensor.

    Returns:
        The number of bytes written, shards and index together.

    Raises:
        OutputExists: ``folder`` holds files and ``overwrite`` is False.
        ForeignOutput: ``folder`` holds anything but safetensors shards and the
            index (:func:`check_output_folder`), whatever ``overwrite`` says.
        InvalidTensorName, UnsupportedDtype, InvalidOption: as
            :func:`write_safetensors` raises them.
        UnsafeInput: a file name that is not a safe relative path, or that
            names a weights file or the index the folder gets.
    """
    specs = _check_specs(specs)
    md = _check_metadata(metadata)
    extra = check_folder_files(files)
    shards = plan_shards(specs, shard_size)
    heads = [safetensors_header(group, md) for group in shards]
    target = Path(os.path.abspath(folder))
    if check_output_folder(target, extra) and not overwrite:
        raise OutputExists(f"{target} exists and holds a checkpoint; pass overwrite=True (--force) to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; give it the mode mkdir would
        it = iter(arrays)
        written = 0
        weight_map: dict[str, str] = {}
        before = 0
        one = single and len(shards) == 1
        for k, (group, head) in enumerate(zip(shards, heads), 1):
            name = SAFETENSORS_SINGLE if one else shard_name(k, len(shards))

            def chunks(group=group, head=head):
                yield head
                yield from _data(group, it, before)

            written += atomic_write(tmp / name, chunks())
            weight_map.update((s.name, name) for s in group)
            before += len(group)
        _expect_end(it, len(specs))
        if not one:
            index = {"metadata": {"total_size": sum(s.nbytes for s in specs)}, "weight_map": weight_map}
            text = json.dumps(index, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
            written += atomic_write(tmp / SAFETENSORS_INDEX, [text])
        for name, data in extra.items():
            written += write_file_into(tmp, name, data)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d tensors in %d shards to %s", len(specs), len(shards), target)
    return written


def check_folder_files(files: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """Files to write beside the weights: safe names (spec/FORMAT.md 6.6) that are not the weights' own.

    Raises:
        UnsafeInput: a name the format refuses, or one of the weights files or the index.
    """
    from ecnn.file import check_files

    try:
        out = dict(check_files(files))
    except InvalidFileName as e:
        raise UnsafeInput(f"refusing to write into the folder: {e}") from None
    for name in out:
        low = name.lower()
        if low.endswith(".safetensors") or low == SAFETENSORS_INDEX:
            raise UnsafeInput(f"refusing to write a file named {name!r} into the folder: the folder's weights are written under that name")
    return out


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename the complete folder ``tmp`` to ``target``, moving an existing ``target`` aside first."""
    if os.path.lexists(target):
        aside = tmp.with_name(tmp.name[: -len(_TEMP_SUFFIX)] + "-old" + _TEMP_SUFFIX)
        os.replace(target, aside)  # hidden; from here to the next rename there is no folder at target
        os.replace(tmp, target)
        fsync_dir(target.parent)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)
        fsync_dir(target.parent)


