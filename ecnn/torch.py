"""PyTorch side: tensors to and from ecnn's numpy storage arrays, loaders and savers.

``load_file`` returns a state dict on any device, ``load_into`` fills an
existing module in place and ``save_model`` writes one (tied weights stored
once). Tensors are decoded one at a time, so the host holds about one tensor
beyond what it returns; each tensor's payload pages leave the process's
mapping of the file once it is taken (:meth:`ecnn.file.EcnnFile.release`),
so the file's size adds nothing to that.

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

from ecnn import chunkrun, dtypes, parallel, quantize
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
            out[name] = (a.astype(a.dtype.newbyteorder("="), copy=False), dtypes.from_numpy(a.dtype))  # native arrays uncopied: encoding only reads them
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
    """CPU dequantization with :mod:`ecnn.quantize` (the compiled loop for float32, bfloat16 and float64),
    into ``out`` when it fits.

    ``float32(q) * float32(step)`` (float64 for float64 tensors), as
    :func:`ecnn.quantize.dequantize`, in blocks on the decoding threads.
    torch's threaded kernels gain little here and suffer badly when the cores
    are oversubscribed.
    """
    target = None
    if out is not None:  # a numpy view of out's storage (bfloat16 as its uint16 bit patterns)
        target = out.view(torch.int16).numpy().view(np.uint16) if h.dtype.name == "bfloat16" else out.numpy()
        target = target.reshape(h.data.shape)
    if h.row_steps is not None:
        arr = quantize.dequantize_by_rows(h.data, h.dtype, h.row_steps, target, runner=chunkrun)
    elif target is not None:
        wide = np.float64 if h.dtype.name == "float64" else np.float32
        arr = quantize.dequantize_by_rows(h.data, h.dtype, np.full(1, wide(np.float32(h.step))), target, runner=chunkrun)
    else:
        arr = quantize.dequantize(h.data, h.dtype, h.step, runner=chunkrun)
    if target is not None:
        return out
    return from_array(arr, h.dtype, "cpu")


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
        name = h.name
        del h
        yield name, t
        del t
        f.release(name)  # the payload's pages leave the mapping (a tensor viewing them reads them again)


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
    """What makes two state-dict entries the same tensor (tied weights).

    A meta tensor has no storage to compare: tied ones are the same object
    (``state_dict(keep_vars=True)`` gives the parameters themselves).
    """
    if t.device.type == "meta":
        return ("meta", id(t))
    if t.numel() == 0:
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


def _slot(module: torch.nn.Module, name: str) -> tuple[dict, str]:
    """The ``_parameters`` or ``_buffers`` dict holding a state-dict entry, and its key there."""
    prefix, _, attr = name.rpartition(".")
    try:
        owner = module.get_submodule(prefix) if prefix else module
    except AttributeError:
        owner = None
    for table in (getattr(owner, "_parameters", {}), getattr(owner, "_buffers", {})):
        if table.get(attr) is not None:
            return table, attr
    raise RuntimeError(f"cannot assign {name!r}: it is neither a parameter nor a buffer of the module")


def _assign(slots: list[tuple[dict, str]], t: torch.Tensor) -> None:
    """Put ``t`` in every slot of a tied group: one new Parameter (or buffer tensor) for all."""
    new = None
    for table, attr in slots:
        old = table[attr]
        if new is None:
            new = torch.nn.Parameter(t, requires_grad=old.requires_grad) if isinstance(old, torch.nn.Parameter) else t
        table[attr] = new


def load_into(
    module: torch.nn.Module,
    path,
    strict: bool = True,
    *,
    assign: bool | None = None,
    device="cpu",
    workers: int | None = None,
    limits: Limits = Limits(),
):
    """Fill a module's parameters and buffers from a ``.ecnn`` file.

    Names are those of ``module.state_dict()`` (for a packed ONNX model, its
    initializer names, which ``torch.onnx.export(dynamo=True)`` keeps for
    parameters; the graph tensor is ignored): persistent buffers are loaded,
    non-persistent ones are not expected. Tied weights (one tensor under
    several names) are filled once from whichever of their names the file
    has, so a file written by :func:`save_model` (which stores them once)
    loads. Every name and shape is checked before anything is written.

    Tensors are decoded one at a time and converted to the dtype of the
    module's tensor. By default a tensor is filled in place (on the CPU a
    quantized float32 tensor is dequantized straight into it), except a
    tensor on the ``meta`` device, which has no memory to fill: the decoded
    tensor, put on ``device``, replaces it, as ``load_state_dict(assign=True)``
    does (a parameter becomes a new ``nn.Parameter`` with the old one's
    ``requires_grad``; tied names all get the same one, so they stay tied).
    So a model built on the meta device loads with the host holding the
    model plus about one tensor, never two copies of it.

    With ``strict=False`` the names missing from the file are listed in the
    returned ``missing_keys`` and keep their tensors: on a meta module those
    stay on the meta device (with no values) until you materialize them.
    Non-persistent buffers are never in a file: on a meta module they stay on
    the meta device whatever ``strict`` is, so compute them after loading.

    Args:
        module: the module to fill.
        path: the ``.ecnn`` file (or its bytes).
        strict: fail on missing or unexpected names, as ``load_state_dict`` does.
        assign: True: every decoded tensor replaces the module's tensor (on
            that tensor's device) instead of being copied into it; False: copy
            into every tensor (meta tensors are then an error); None: replace
            exactly the meta tensors.
        device: where the tensors replacing meta tensors go (``"cpu"``,
            ``"cuda"``, a ``torch.device``); on CUDA only the integer symbols
            cross the bus.
        workers: threads for range decoding (None: ``ECNN_WORKERS`` or the CPU count,
            at most 8; 1: decode on the calling thread only).
        limits: caps on what the file may make the reader allocate (:class:`ecnn.Limits`).

    Returns:
        ``(missing_keys, unexpected_keys)``, as ``load_state_dict`` returns.

    Raises:
        RuntimeError: size mismatches, meta tensors with ``assign=False``, and
            with ``strict`` missing or unexpected names.
        FormatError: a subclass naming the check the file failed.

    Example:
        >>> with torch.device("meta"):                       # doctest: +SKIP
        ...     model = Net()                                 # no memory for the weights yet
        >>> ecnn.torch.load_into(model, "model.ecnn")         # decoded tensors replace the meta ones
    """
    from torch.nn.modules.module import _IncompatibleKeys

    state = module.state_dict(keep_vars=True)
    device = torch.device(device)
    with _file.EcnnFile(path, limits) as f:
        f.check_padding()
        weights = f.weight_names()
        in_file = set(weights)
        known = set(state)
        sources: dict[str, torch.Tensor] = {}
        tied: dict[str, list[str]] = {}
        missing: list[str] = []
        for group in alias_groups(state):
            present = [n for n in group if n in in_file]
            if present:
                sources[present[0]] = state[group[0]]
                tied[present[0]] = group
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
        on_meta = [n for n in sources if sources[n].device.type == "meta"]
        if on_meta and assign is False:
            errors.append("cannot copy into meta tensors (pass assign=None or True): " + ", ".join(map(repr, on_meta)))
        names = [n for n in weights if n in sources]
        replace = {n: bool(assign) or sources[n].device.type == "meta" for n in names}
        slots: dict[str, list[tuple[dict, str]]] = {}
        for n in names:
            if replace[n]:
                try:
                    slots[n] = [_slot(module, m) for m in tied[n]]
                except RuntimeError as e:
                    errors.append(str(e))
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
        dest = {n: device if sources[n].device.type == "meta" else sources[n].device for n in names}
        devices = set(dest.values())
        common = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
        with torch.no_grad():
            if common.type == "cpu":
                for h in parallel.iter_host(f, names, workers):
                    target = sources[h.name]
                    if not replace[h.name]:
                        out = target.data
                    else:
                        out = torch.empty(target.shape, dtype=target.dtype)
                    t = materialize(h, "cpu", out=out if out.device.type == "cpu" else None)
                    if t.data_ptr() != out.data_ptr():
                        out.copy_(t)  # the host arrays are not the module's to keep
                    if replace[h.name]:
                        _assign(slots[h.name], out.to(dest[h.name]))
                    f.release(h.name)  # its payload's pages leave the mapping: the file adds nothing to the model
            else:
                for name, t in iter_tensors(f, names, common, None, workers):
                    if replace[name]:
                        _assign(slots[name], t.to(sources[name].dtype))
                    else:
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
