"""Host-side decoding for the loaders: one tensor at a time, or in worker processes.

The loaders in :mod:`ecnn.torch` and :mod:`ecnn.onnx` move tensors to their
runtime one at a time. This module produces what they move:
:class:`HostTensor`, either the tensor's storage array or, for a quantized
tensor (representation ``uniform``, spec/CODING.md), its integer symbols in
the narrowest integer type that holds them (int8 for 8 bits or fewer). The
symbols are dequantized later, on the target device, by
``float32(q) * float32(step)`` rounded to the tensor's dtype, exactly as
:func:`ecnn.quantize.dequantize` does on the host.

constriction holds the GIL while it decodes, so threads do not help; with
``workers > 1`` a large tensor's chunks are split over forked processes
(:mod:`ecnn.chunkrun`), and runs of smaller tensors are split the same way,
one tensor per process. The workers write into shared memory; tensors come
back in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ecnn import chunkrun, dtypes, quantize
from ecnn.coder import ctx, streams
from ecnn.file import EcnnFile

@dataclass(frozen=True)
class HostTensor:
    """One decoded tensor on the host, before it reaches its runtime.

    Attributes:
        name: tensor name.
        dtype: the tensor's element type.
        shape: its shape.
        data: the storage array (``step is None``) or the quantized symbols.
        step: the float32 quantization step, or None for exactly stored tensors.
        row_steps: for per-row quantization, the step of each row (float32, or
            float64 for float64 tensors); None otherwise.
    """

    name: str
    dtype: dtypes.DType
    shape: tuple[int, ...]
    data: np.ndarray
    step: float | None
    row_steps: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


def _narrowest(lo: int, hi: int) -> np.dtype:
    for t in (np.int8, np.int16):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return np.dtype(t)
    return np.dtype(np.int32)


def symbol_dtype(desc: dict, buf=None) -> np.dtype:
    """The narrowest signed integer type known to hold a stream's symbols.

    Known from the descriptor, or for ``ctx`` streams from the parameters at the
    start of the stream's bytes ``buf``. Otherwise this is int32, and
    :func:`decode_host` narrows after decoding.
    """
    kind = desc["coder"]
    if kind == "ctx" and buf is not None:
        bounds = ctx.symbol_bounds(buf)
        if bounds is not None:
            return _narrowest(*bounds)
    if kind == "const":
        return _narrowest(desc["value"], desc["value"])
    if kind == "cat0" or (kind == "rowcol" and not desc["signs"]):
        return _narrowest(desc["offset"], desc["offset"] + desc["nsym"] - 1)
    if kind == "rowcol":  # magnitudes 0 .. nsym-1 and a sign (streams.validate checks the range)
        return _narrowest(-(desc["nsym"] - 1), desc["nsym"] - 1)
    return np.dtype(np.int32)


def _symbol_range(dt: dtypes.DType) -> tuple[int, int]:
    qmax = quantize.QMAX_FLOAT64 if dt.name == "float64" else quantize.QMAX_FLOAT32
    return -qmax, qmax


def _record(f: EcnnFile, name: str):
    # EcnnFile exposes decoded arrays only; the loaders need the symbols, so
    # they read the record and payload from the validated container.
    return f._c.record(name)


def decode_host(f: EcnnFile, name: str) -> HostTensor:
    """Decode one tensor on the host: symbols for quantized tensors, storage otherwise.

    Raises:
        FormatError: a subclass naming the check the payload failed.
    """
    rec = _record(f, name)
    dt = dtypes.get(rec.dtype)
    kind = rec.repr["kind"]
    if kind not in ("uniform", "uniform_rows") or rec.numel == 0:
        arr, _ = f.get_array(name)
        return HostTensor(name, dt, rec.shape, arr, None)
    lo, hi = _symbol_range(dt)
    desc = rec.streams[-1]  # validate_record checked: (the row codes, then) the symbols, ending the payload
    payload = f._c.payload(rec)[rec.length - desc["length"] :]
    q = streams.decode(desc, payload, rec.numel, symbol_dtype(desc, payload), lo, hi, runner=chunkrun)
    return _host_tensor(f, rec, _narrowed(q).reshape(rec.shape))


def _narrowed(q: np.ndarray) -> np.ndarray:
    """Symbols in the narrowest integer type that holds them."""
    if q.dtype.itemsize > 1 and q.size:
        narrow = _narrowest(int(q.min()), int(q.max()))
        if narrow.itemsize < q.dtype.itemsize:
            return q.astype(narrow)
    return q


def dequantize_host(t: HostTensor) -> np.ndarray:
    """The storage array of a host tensor (numpy reference for the device path)."""
    if t.step is None:
        return t.data
    if t.row_steps is not None:
        return quantize.dequantize_by_rows(t.data, t.dtype, t.row_steps)
    return quantize.dequantize(t.data, t.dtype, t.step)  # int8/16/32 symbols convert to float exactly


# --- worker processes -------------------------------------------------------

LARGE = 1 << 21  # elements: a tensor this large is split by chunks
BATCH_BYTES = 1 << 24  # host bytes of small tensors decoded together by the workers


def _host_layout(f: EcnnFile, name: str) -> tuple[np.dtype, bool]:
    """The dtype :func:`decode_host` gives a tensor's data, and whether it may narrow it after decoding."""
    rec = _record(f, name)
    dt = dtypes.get(rec.dtype)
    if rec.repr["kind"] not in ("uniform", "uniform_rows") or rec.numel == 0:
        return dt.storage, False
    desc = rec.streams[-1]
    start = rec.length - desc["length"]
    # Only the stream's first bytes are read, unchecked: the decoder checks the CRC and the parameters.
    sym = symbol_dtype(desc, f._c.payload(rec, check=False)[start : start + 64])
    return sym, sym.itemsize > 1


def _decode_batch(f: EcnnFile, names: list[str], n: int) -> list[HostTensor]:
    """Decode small tensors in up to ``n`` forked processes, into shared memory; nothing is pickled."""
    layouts = [_host_layout(f, name) for name in names]
    sizes = [_record(f, name).numel * dt.itemsize for name, (dt, _) in zip(names, layouts)]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    # One "chunk" per tensor; the shared buffer is split like a chunked output.
    buf = chunkrun.empty(int(offsets[-1]), np.uint8, len(names))
    kept: list[HostTensor | None] = [None] * len(names)
    # The queue hands out the largest tensors first, so the batch ends on small ones.
    by_size = sorted(range(len(names)), key=lambda i: -_record(f, names[i]).numel)

    def one(j: int) -> None:
        i = by_size[j]
        with chunkrun.using(1):
            h = decode_host(f, names[i])
        dst = buf[offsets[i] : offsets[i + 1]].view(layouts[i][0])
        dst[...] = h.data.reshape(-1)
        kept[i] = h  # in this process only; a worker's results live in buf

    with chunkrun.using(n):
        chunkrun.run(len(names), one, buf)
    out = []
    for i, name in enumerate(names):
        h = kept[i]
        if h is None:  # decoded by a worker
            rec = _record(f, name)
            dt, narrows = layouts[i]
            data = buf[offsets[i] : offsets[i + 1]].view(dt).reshape(rec.shape)
            h = _host_tensor(f, rec, _narrowed(data) if narrows else data)
        out.append(h)
    return out


def _host_tensor(f: EcnnFile, rec, data: np.ndarray) -> HostTensor:
    """The host tensor of ``rec`` around already decoded ``data`` (its row steps decoded here)."""
    dt = dtypes.get(rec.dtype)
    if rec.repr["kind"] not in ("uniform", "uniform_rows") or rec.numel == 0:
        return HostTensor(rec.name, dt, rec.shape, data, None)
    step = quantize.step_from_bits(rec.repr["step"])
    row_steps = None
    if rec.repr["kind"] == "uniform_rows":
        d0 = rec.streams[0]
        codes = streams.decode(d0, f._c.payload(rec, check=False)[: d0["length"]], rec.shape[0], np.int32, 0, quantize.MAX_ROW_CODE, runner=chunkrun)
        row_steps = quantize.row_steps(step, codes, dt)
    return HostTensor(rec.name, dt, rec.shape, data, step, row_steps)


def iter_host(f: EcnnFile, names: Iterable[str], workers: int | None = None, path=None) -> Iterator[HostTensor]:
    """Decode tensors in order, with up to ``workers`` processes.

    A tensor of at least :data:`LARGE` elements is decoded with its chunks
    split over ``workers`` forked processes (:mod:`ecnn.chunkrun`). Runs of
    smaller tensors, up to :data:`BATCH_BYTES` of decoded data at a time (or
    the largest tensor's size, if more), are split over the same number of
    processes, one tensor each, the largest first. The smaller tensors that
    come before a large one wait for the run after it (so a slow small tensor
    does not leave the other processes idle); at most one large tensor waits
    for them. Workers write into shared memory, so host memory stays within
    the largest tensor plus one run, not the model, and nothing passes between
    processes but a status.

    Args:
        f: the opened file.
        names: tensors to decode, in the order they are wanted.
        workers: processes to decode with; 1 decodes here only; None: :func:`ecnn.chunkrun.workers`.
        path: unused; kept for callers that pass the file's path.
    """
    names = list(names)
    n = chunkrun.workers() if workers is None else workers
    if n <= 1:
        with chunkrun.using(1):
            for name in names:
                yield decode_host(f, name)
        return
    batch: list[str] = []
    batch_bytes = 0
    held: tuple[int, HostTensor] | None = None  # a large tensor decoded ahead of the batch's earlier tensors
    host_bytes = {name: _record(f, name).numel * _host_layout(f, name)[0].itemsize for name in names}
    # A batch may hold as much as the largest tensor: memory stays within twice that,
    # and larger batches leave the processes idle less often at their ends.
    limit = max([BATCH_BYTES, *host_bytes.values()])

    def flush():
        nonlocal batch, batch_bytes, held
        done = _decode_batch(f, batch, n) if batch else []
        if held is not None:
            done.insert(held[0], held[1])
        batch, batch_bytes, held = [], 0, None
        return done

    for name in names:
        rec = _record(f, name)
        if rec.numel >= LARGE:
            if held is not None:
                yield from flush()
            # Decoded now, yielded after the smaller tensors before it: those join the
            # next batch, so a slow small tensor does not leave the other processes idle.
            with chunkrun.using(n):
                held = (len(batch), decode_host(f, name))
            continue
        batch.append(name)
        batch_bytes += host_bytes[name]
        if batch_bytes >= limit:
            yield from flush()
    if batch or held is not None:
        yield from flush()
