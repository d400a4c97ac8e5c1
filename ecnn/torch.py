"""PyTorch side: tensors to and from ecnn's numpy storage arrays, loaders and savers.

``load_file`` returns a state dict on any device, ``load_into`` fills an
existing module in place and ``save_model`` writes one (tied weights stored
once). Tensors are decoded one at a time, so the host holds about one tensor
beyond what it returns.

On a CUDA device, the range decoding runs on the CPU and only the integer
symbols of a quantized tensor (int8 for 8 bits or fewer) cross the bus: they
are staged in one of two pinned buffers, copied without blocking on a side
stream and dequantized there, while the CPU decodes the next tensor. The
result is bit-identical to decoding on the CPU.

Example:
    >>> import torch, ecnn.torch                       # doctest: +SKIP
    >>> sd = ecnn.torch.load_file("model.ecnn", device="cuda")
    >>> ecnn.torch.load_into(model, "model.ecnn")
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Mapping

import numpy as np

import torch

from ecnn import dtypes, parallel, quantize
from ecnn import file as _file
from ecnn.config import from_options
from ecnn.container.format import Limits
from ecnn.dtypes import contiguous as _contig
from ecnn.errors import UnsupportedDtype

_TORCH_NAMES = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
for _n in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _n):
        _TORCH_NAMES[getattr(torch, _n)] = _n
_BY_NAME = {v: k for k, v in _TORCH_NAMES.items()}
# Types numpy lacks travel through a same-width integer view.
_VIEW_AS = {"bfloat16": torch.int16, "float8_e4m3fn": torch.uint8, "float8_e5m2": torch.uint8}


def to_array(t: torch.Tensor) -> tuple[np.ndarray, dtypes.DType]:
    """A CPU numpy storage array holding a tensor's values, and its ecnn dtype."""
    name = _TORCH_NAMES.get(t.dtype)
    if name is None:
        raise UnsupportedDtype(f"unsupported torch dtype {t.dtype}")
    dt = dtypes.get(name)
    t = t.detach().to("cpu").contiguous()
    if name in _VIEW_AS:
        t = t.view(_VIEW_AS[name])
    return t.numpy().view(dt.storage), dt


def from_array(arr: np.ndarray, dt: dtypes.DType, device="cpu") -> torch.Tensor:
    """A torch tensor from a numpy storage array (shares memory when on CPU)."""
    if dt.name not in _BY_NAME:
        raise UnsupportedDtype(f"this torch build has no {dt.name}")
    shape = arr.shape
    if arr.size == 0:  # numpy may give empty arrays zero strides; torch's views dislike them
        return torch.empty(shape, dtype=_BY_NAME[dt.name], device=device)
    arr = _contig(arr)
    if dt.name in _VIEW_AS:
        flat = arr.reshape(-1)
        t = torch.from_numpy(flat.view(np.int16) if dt.itemsize == 2 else flat).view(_BY_NAME[dt.name]).reshape(shape)
    else:
        t = torch.from_numpy(arr)
    return t.to(device) if str(device) != "cpu" else t


def to_arrays(tensors) -> dict[str, tuple[np.ndarray, dtypes.DType]]:
    """Convert a mapping of torch tensors and/or numpy arrays."""
    out = {}
    for name, v in tensors.items():
        if isinstance(v, torch.Tensor):
            out[name] = to_array(v)
        else:
            a = np.asarray(v)
            out[name] = (a.astype(a.dtype.newbyteorder("=")), dtypes.from_numpy(a.dtype))
    return out


def torch_dtype(dt: dtypes.DType) -> torch.dtype:
    """The torch dtype of an ecnn dtype."""
    try:
        return _BY_NAME[dt.name]
    except KeyError:
        raise UnsupportedDtype(f"this torch build has no {dt.name}") from None


# --- host tensors to device tensors -----------------------------------------

_SYMBOL_TYPES = {np.dtype(np.int8): torch.int8, np.dtype(np.int16): torch.int16, np.dtype(np.int32): torch.int32}


def dequantize(
    q: torch.Tensor, dt: dtypes.DType, step: float, out: torch.Tensor | None = None, row_steps: np.ndarray | None = None
) -> torch.Tensor:
    """Reconstruct a quantized tensor from its integer symbols, on ``q``'s device.

    Computes ``float32(q) * float32(step)`` rounded to ``dt`` (float64 tensors:
    in float64), bit for bit what :func:`ecnn.quantize.dequantize` computes.

    Args:
        q: integer symbols (any integer dtype that holds them).
        dt: the tensor's dtype.
        step: the float32 step.
        out: a contiguous tensor of ``dt`` on ``q``'s device to write into.
        row_steps: per-row steps (``uniform_rows``), used instead of ``step``.
    """
    s = float(np.float32(step))  # an exact float32; torch's float32 kernels use it as one
    wide = torch.float64 if dt.name == "float64" else torch.float32
    target = torch_dtype(dt)
    if row_steps is not None:
        rs = torch.from_numpy(np.ascontiguousarray(row_steps)).to(device=q.device, dtype=wide)
        x = q.to(wide).reshape(rs.numel(), -1)
        x.mul_(rs[:, None])  # one IEEE multiplication per element, as in quantize.dequantize_by_rows
        x = x.reshape(q.shape)
        if target != wide:
            x = x.to(target)
        return out.copy_(x) if out is not None else x
    if out is not None and out.dtype == wide == target:
        out.copy_(q)  # integers up to 2**24 (2**31 for float64) convert exactly
        return out.mul_(s)
    x = q.to(wide)
    x.mul_(s)
    if target != wide:
        x = x.to(target)  # round half to even, like quantize.from_float
        if out is not None:
            return out.copy_(x)
    return x


def _host_torch(h) -> torch.Tensor:
    """A CPU tensor viewing a host tensor's array: symbols, or storage as its dtype."""
    if h.step is not None:
        return torch.from_numpy(_contig(h.data))
    return from_array(h.data, h.dtype, "cpu")


def _dequantize_numpy(h, out: torch.Tensor | None) -> torch.Tensor:
    """CPU dequantization with numpy, into ``out`` when it fits.

    One pass, one thread: ``float32(q) * float32(step)`` (float64 for float64
    tensors), as :func:`ecnn.quantize.dequantize`. torch's threaded kernels
    gain little here and suffer badly when the cores are oversubscribed.
    """
    if h.row_steps is not None:
        fits = out is not None and h.dtype.name not in ("bfloat16",)
        arr = quantize.dequantize_by_rows(h.data, h.dtype, h.row_steps, out.numpy() if fits else None)
        if fits:
            return out
        t = from_array(arr, h.dtype, "cpu")
        return out.copy_(t) if out is not None else t
    if out is not None and h.dtype.name in ("float32", "float64"):
        wide = np.float64 if h.dtype.name == "float64" else np.float32
        np.multiply(h.data, wide(np.float32(h.step)), out=out.numpy().reshape(h.data.shape), dtype=wide)
        return out
    arr = quantize.dequantize(h.data, h.dtype, h.step)
    t = from_array(arr, h.dtype, "cpu")
    return out.copy_(t) if out is not None else t


def materialize(h, device="cpu", out: torch.Tensor | None = None) -> torch.Tensor:
    """A host tensor (:class:`ecnn.codec.HostTensor`) as a torch tensor on ``device``.

    Quantized tensors are dequantized where they go: on the CPU with numpy,
    written into ``out`` when it is a contiguous CPU tensor of the right dtype;
    elsewhere with :func:`dequantize` on the device.
    """
    device = torch.device(device)
    src = _host_torch(h)
    if h.step is None:
        return src if device.type == "cpu" else src.to(device)
    if out is not None and not (out.device == device and out.is_contiguous() and out.dtype == torch_dtype(h.dtype)):
        out = None
    if device.type == "cpu":
        return _dequantize_numpy(h, out)
    return dequantize(src.to(device), h.dtype, h.step, out, h.row_steps)


class _CudaStager:
    """Two pinned staging buffers and a side stream: decode tensor i+1 while tensor i crosses the bus."""

    def __init__(self, device: torch.device, max_bytes: int):
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        n = max(int(max_bytes), 1)
        self.buffers = [torch.empty(n, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        self.events: list = [None, None]
        self.turn = 0

    def send(self, h, dtype: torch.dtype | None) -> torch.Tensor:
        k = self.turn
        self.turn ^= 1
        if self.events[k] is not None:
            self.events[k].synchronize()  # the copy out of this buffer has finished
        flat = _contig(h.data).reshape(-1).view(np.uint8)
        stage = self.buffers[k][: flat.size]
        stage.numpy()[:] = flat
        current = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            raw = stage.to(self.device, non_blocking=True)
            self.events[k] = torch.cuda.Event()
            self.events[k].record(self.stream)
            if h.step is not None:
                q = raw.view(_SYMBOL_TYPES[h.data.dtype]).reshape(h.shape)
                t = dequantize(q, h.dtype, h.step, row_steps=h.row_steps)
            else:
                t = raw.view(torch_dtype(h.dtype)).reshape(h.shape) if flat.size else torch.empty(
                    h.shape, dtype=torch_dtype(h.dtype), device=self.device
                )
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
        current.wait_stream(self.stream)
        t.record_stream(current)  # t was allocated on the side stream and is used on the current one
        return t


def iter_tensors(
    f,
    names: Iterable[str] | None = None,
    device="cpu",
    dtype: torch.dtype | None = None,
    workers: int | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Decode tensors of an open file one at a time onto ``device``.

    Args:
        f: an open :class:`~ecnn.file.EcnnFile`.
        names: which tensors, in order (default: all).
        device: where they go; on CUDA through pinned buffers and a side stream.
        dtype: cast floating-point tensors to it.
        workers: decoding threads (see :mod:`ecnn.parallel`); None: ``ECNN_WORKERS``
            or the CPU count (at most 8); 1: the calling thread only.

    Yields:
        ``(name, tensor)`` pairs.
    """
    names = list(f.keys() if names is None else names)
    device = torch.device(device)
    stager = None
    if device.type == "cuda":
        stager = _CudaStager(device, max((parallel.host_nbytes(f, n) for n in names), default=1))
    for h in parallel.iter_host(f, names, workers):
        if stager is not None:
            t = stager.send(h, dtype)
        else:
            t = materialize(h, device)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
        yield h.name, t


def _path_or_none(path):
    return path if isinstance(path, (str, os.PathLike)) else None


def load_file(
    path, device="cpu", dtype: torch.dtype | None = None, *, workers: int | None = None, limits: Limits = Limits()
) -> dict[str, torch.Tensor]:
    """Decode a ``.ecnn`` file into a state dict on ``device``.

    Args:
        path: the ``.ecnn`` file (or its bytes).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
        dtype: if given, floating-point tensors are cast to it.
        workers: threads for range decoding (None: ``ECNN_WORKERS`` or the CPU count,
            at most 8; 1: decode on the calling thread only).
        limits: caps on what the file may make the reader allocate (:class:`ecnn.Limits`);
            lower them for files from strangers.

    Returns:
        ``{name: tensor}`` in file order. For a packed ONNX model
        (:mod:`ecnn.onnx`) these are its initializers, without the graph
        (:meth:`ecnn.file.EcnnFile.weight_names`).

    Raises:
        FormatError: a subclass naming the check the file failed (LimitExceeded
            for a file over ``limits``, before anything is allocated).

    Example:
        >>> sd = ecnn.torch.load_file("model.ecnn", device="cuda", dtype=torch.float16)  # doctest: +SKIP
    """
    with _file.EcnnFile(path, limits) as f:
        f.check_padding()
        return dict(iter_tensors(f, f.weight_names(), device, dtype, workers))


# --- modules ----------------------------------------------------------------


def _identity(t: torch.Tensor):
    """What makes two state-dict entries the same tensor (tied weights)."""
    if t.numel() == 0 or t.device.type == "meta":
        return None
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def alias_groups(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """State-dict names grouped by the tensor they refer to, in state-dict order."""
    groups: dict = {}
    out: list[list[str]] = []
    for name, t in state.items():
        key = _identity(t)
        if key is None:
            out.append([name])
        elif key in groups:
            groups[key].append(name)
        else:
            groups[key] = [name]
            out.append(groups[key])
    return out


def load_into(module: torch.nn.Module, path, strict: bool = True, *, workers: int | None = None, limits: Limits = Limits()):
    """Fill an existing module's parameters and buffers from a ``.ecnn`` file, in place.

    Names are those of ``module.state_dict()`` (for a packed ONNX model, its
    initializer names, which ``torch.onnx.export(dynamo=True)`` keeps for
    parameters; the graph tensor is ignored): persistent buffers are loaded,
    non-persistent ones are not expected. Tied weights (one tensor under
    several names) are filled once from whichever of their names the file
    has, so a file written by :func:`save_model` (which stores them once)
    loads. Tensors are decoded one at a time onto each parameter's device and
    converted to its dtype; on the CPU a quantized float32 tensor is
    dequantized straight into the parameter. Every name and shape is checked
    before anything is written.

    Args:
        module: the module to fill.
        path: the ``.ecnn`` file (or its bytes).
        strict: fail on missing or unexpected names, as ``load_state_dict`` does.
        workers: threads for range decoding (None: ``ECNN_WORKERS`` or the CPU count,
            at most 8; 1: decode on the calling thread only).
        limits: caps on what the file may make the reader allocate (:class:`ecnn.Limits`).

    Returns:
        ``(missing_keys, unexpected_keys)``, as ``load_state_dict`` returns.

    Raises:
        RuntimeError: size mismatches, and with ``strict`` missing or unexpected names.
        FormatError: a subclass naming the check the file failed.
    """
    from torch.nn.modules.module import _IncompatibleKeys

    state = module.state_dict(keep_vars=True)
    with _file.EcnnFile(path, limits) as f:
        f.check_padding()
        weights = f.weight_names()
        in_file = set(weights)
        known = set(state)
        sources: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        for group in alias_groups(state):
            present = [n for n in group if n in in_file]
            if present:
                sources[present[0]] = state[group[0]]
            else:
                missing.extend(group)
        unexpected = [n for n in weights if n not in known]
        errors = []
        for name, target in sources.items():
            shape = f.info(name).shape
            if tuple(target.shape) != tuple(shape):
                errors.append(
                    f"size mismatch for {name}: copying a param with shape {torch.Size(shape)} from the file, "
                    f"the shape in the module is {target.shape}"
                )
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in the file: " + ", ".join(repr(n) for n in unexpected))
            if missing:
                errors.insert(0, "Missing key(s) in the file: " + ", ".join(repr(n) for n in missing))
        if errors:
            raise RuntimeError(
                f"Error(s) in loading {type(module).__name__} from {path if _path_or_none(path) else 'bytes'}:\n\t"
                + "\n\t".join(errors)
            )
        names = [n for n in weights if n in sources]
        devices = {sources[n].device for n in names}
        device = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
        with torch.no_grad():
            if device.type == "cpu":
                for h in parallel.iter_host(f, names, workers):
                    target = sources[h.name]
                    t = materialize(h, "cpu", out=target.data)
                    if t.data_ptr() != target.data_ptr():
                        target.copy_(t)
            else:
                for name, t in iter_tensors(f, names, device, None, workers):
                    sources[name].copy_(t)
    return _IncompatibleKeys(missing, unexpected)


def save_model(
    module: torch.nn.Module,
    path,
    *,
    bits: int | None = None,
    step: float | None = None,
    lossless: bool = False,
    metadata: Mapping[str, str] | None = None,
    config=None,
    effort: str | None = None,
) -> int:
    """Write a module's state dict to a ``.ecnn`` file; tied weights are stored once.

    Of each group of names sharing one tensor, the first in ``state_dict()``
    order is kept; :func:`load_into` fills the others. Options are those of
    :func:`ecnn.save_file`.

    Returns:
        The file size in bytes.

    Example:
        >>> ecnn.torch.save_model(model, "model.ecnn", bits=8)  # doctest: +SKIP
    """
    state = module.state_dict()
    kept = {g[0]: state[g[0]] for g in alias_groups(state)}
    return _file.save(to_arrays(kept), path, from_options(bits, step, lossless, config, effort), metadata)
