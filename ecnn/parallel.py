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
``workers > 1`` whole tensors are decoded in worker processes (forked, so they
start at once), at most ``2 * workers`` at a time, and come back in order.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ecnn import dtypes, quantize
from ecnn.coder import streams
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


def symbol_dtype(desc: dict) -> np.dtype:
    """The narrowest signed integer type known, from its descriptor, to hold a stream's symbols.

    For coders whose descriptor does not bound the symbols this is int32;
    :func:`decode_host` narrows those after decoding.
    """
    kind = desc["coder"]
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
    payload = f._c.payload(rec)
    row_steps = None
    step = quantize.step_from_bits(rec.repr["step"])
    if kind == "uniform_rows":
        d0, desc = rec.streams  # validate_record checked: row codes, then symbols
        codes = streams.decode(d0, payload[: d0["length"]], rec.shape[0], np.int32, 0, quantize.MAX_ROW_CODE)
        row_steps = quantize.row_steps(step, codes, dt)
        payload = payload[d0["length"] :]
    else:
        (desc,) = rec.streams  # validate_record checked: one stream covering the payload
    q = streams.decode(desc, payload, rec.numel, symbol_dtype(desc), lo, hi)
    if q.dtype.itemsize > 1 and q.size:
        narrow = _narrowest(int(q.min()), int(q.max()))
        if narrow.itemsize < q.dtype.itemsize:
            q = q.astype(narrow)
    return HostTensor(name, dt, rec.shape, q.reshape(rec.shape), step, row_steps)


def dequantize_host(t: HostTensor) -> np.ndarray:
    """The storage array of a host tensor (numpy reference for the device path)."""
    if t.step is None:
        return t.data
    if t.row_steps is not None:
        return quantize.dequantize_by_rows(t.data, t.dtype, t.row_steps)
    return quantize.dequantize(t.data.astype(np.int32), t.dtype, t.step)


# --- worker processes -------------------------------------------------------

_WORKER_FILE: EcnnFile | None = None


def _worker_init(path: str) -> None:
    global _WORKER_FILE
    _WORKER_FILE = EcnnFile(path)


def _worker_tensor(name: str) -> HostTensor:
    return decode_host(_WORKER_FILE, name)


def iter_host(f: EcnnFile, names: Iterable[str], workers: int = 1, path=None) -> Iterator[HostTensor]:
    """Decode tensors in order, one at a time or with ``workers`` processes.

    With workers, at most ``2 * workers`` tensors are in flight, so host
    memory stays near a few tensors, not the model.

    Args:
        f: the opened file.
        names: tensors to decode, in the order they are wanted.
        workers: processes to decode with; 1 decodes here.
        path: the file's path (workers open it themselves); required for workers > 1.
    """
    names = list(names)
    if workers <= 1 or path is None or len(names) == 0:
        for n in names:
            yield decode_host(f, n)
        return
    # fork starts a worker at once; the workers use numpy and constriction only, never torch.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(os.fspath(path),)) as pool:
        futures: deque = deque()
        pending = iter(names)
        for n in pending:
            futures.append(pool.submit(_worker_tensor, n))
            if len(futures) >= 2 * workers:
                break
        while futures:
            out = futures.popleft().result()
            n = next(pending, None)
            if n is not None:
                futures.append(pool.submit(_worker_tensor, n))
            yield out
