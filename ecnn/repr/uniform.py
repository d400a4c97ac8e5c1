"""``uniform`` and ``uniform_rows``: quantized floats (spec/CODING.md sections 4.5 and 4.6).

``uniform`` has one float32 step per tensor and one stream of signed symbols;
``uniform_rows`` adds a stream of row step codes before the symbols, each row's
step being the tensor's step scaled by its code. Both decode to
:class:`~ecnn.repr.base.Symbols`, so loaders can move the small integers to a
device and reconstruct there, bit for bit as :func:`decode` does on the host.
"""

from __future__ import annotations

import numpy as np

from ecnn import chunkrun, quantize, select
from ecnn.coder import ctx, streams
from ecnn.errors import InvalidField
from ecnn.repr import base


def _encode_uniform(arr: np.ndarray, dt, cfg, step: float) -> base.Candidate:
    q = quantize.quantize(arr, dt, step, narrow=True)
    d, p = select.encode_best(q.ravel(), 4, True, cfg.chunk, rows=base.rows_of(arr), contexts=cfg.format_minor, effort=cfg.effort)
    return {"kind": "uniform", "step": quantize.step_bits(step)}, [d], p


def _encode_rows(arr: np.ndarray, dt, cfg, step: float) -> base.Candidate:
    contexts = cfg.format_minor  # 1: ctx models of 1.1; 2: model 5 of 1.2 too
    codes = quantize.row_codes(arr, dt, step)
    q = quantize.quantize_rows(arr, dt, step, codes, narrow=True)
    d0, p0 = select.encode_best(codes, 1, False, cfg.chunk, contexts=contexts, effort=cfg.effort)
    d1, p1 = select.encode_best(q.ravel(), 4, True, cfg.chunk, rows=base.rows_of(arr), contexts=contexts, effort=cfg.effort)
    return {"kind": "uniform_rows", "step": quantize.step_bits(step)}, [d0, d1], p0 + p1


def encode_symbols(q: np.ndarray, step: float, cfg, rows: int | None, row_codes: np.ndarray | None = None) -> base.Candidate:
    """The candidate of symbols already chosen (by a rate-distortion search, say).

    Args:
        q: the symbols, one per element, in C order.
        step: the tensor's float32 step.
        cfg: the :class:`~ecnn.config.EncodeConfig` (chunk size, effort, minor version).
        rows: rows of the matrix view for row/column contexts (None for 1-D tensors).
        row_codes: the row step codes of ``uniform_rows``; None for ``uniform``.
    """
    contexts = cfg.format_minor  # 1: ctx models of 1.1; 2: model 5 of 1.2 too
    d1, p1 = select.encode_best(np.asarray(q).ravel(), 4, True, cfg.chunk, rows=rows, contexts=contexts, effort=cfg.effort)
    if row_codes is None:
        return {"kind": "uniform", "step": quantize.step_bits(step)}, [d1], p1
    d0, p0 = select.encode_best(np.asarray(row_codes), 1, False, cfg.chunk, contexts=contexts, effort=cfg.effort)
    return {"kind": "uniform_rows", "step": quantize.step_bits(step)}, [d0, d1], p0 + p1


def _validate(rec, dt, rows: bool) -> None:
    kind = rec.repr["kind"]
    if not quantize.quantizable(dt):
        raise InvalidField(f"tensor {rec.name!r}: {dt.name} cannot use the {kind} representation")
    s = rec.repr.get("step")
    if type(s) is not int or not 0 <= s <= 0xFFFFFFFF:
        raise InvalidField(f"tensor {rec.name!r}: step must be a uint32 bit pattern")
    v = quantize.step_from_bits(s)
    if not (np.isfinite(v) and v > 0):
        raise InvalidField(f"tensor {rec.name!r}: step is not a positive finite float32")
    if rows:
        if len(rec.shape) < 1:
            raise InvalidField(f"tensor {rec.name!r}: uniform_rows needs at least one dimension")
        if rec.numel == 0:  # else its row codes alone could cost memory no declared size accounts for
            raise InvalidField(f"tensor {rec.name!r}: uniform_rows of a tensor with no elements")
        base.nstreams(rec, 2)
        streams.validate(rec.streams[0], rec.shape[0], 0, quantize.MAX_ROW_CODE)
    else:
        base.nstreams(rec, 1)
    m = quantize.qmax(dt)
    streams.validate(rec.streams[-1], rec.numel, -m, m)
    base.check_lengths(rec)


def _narrowest(lo: int, hi: int) -> np.dtype:
    for t in (np.int8, np.int16):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return np.dtype(t)
    return np.dtype(np.int32)


def symbol_dtype(rec, head) -> np.dtype:
    """The narrowest signed integer type known to hold a record's symbols.

    Known from the symbol stream's descriptor, or for ``ctx`` streams from the
    parameters in its first bytes ``head`` (unchecked here: decoding checks
    them). Otherwise int32; :func:`narrowed` can narrow after decoding.
    """
    desc = rec.streams[-1]
    kind = desc["coder"]
    if kind == "ctx" and head is not None:
        bounds = ctx.symbol_bounds(head)
        if bounds is not None:
            return _narrowest(*bounds)
    if kind == "const":
        return _narrowest(desc["value"], desc["value"])
    if kind == "cat0" or (kind == "rowcol" and not desc["signs"]):
        return _narrowest(desc["offset"], desc["offset"] + desc["nsym"] - 1)
    if kind == "rowcol":  # magnitudes 0 .. nsym-1 and a sign (streams.validate checks the range)
        return _narrowest(-(desc["nsym"] - 1), desc["nsym"] - 1)
    return np.dtype(np.int32)


def narrowed(q: np.ndarray) -> np.ndarray:
    """Symbols in the narrowest integer type that holds them."""
    if q.dtype.itemsize > 1 and q.size:
        narrow = _narrowest(int(q.min()), int(q.max()))
        if narrow.itemsize < q.dtype.itemsize:
            return q.astype(narrow)
    return q


def row_steps(rec, payload, dt) -> np.ndarray | None:
    """The step of each row of a ``uniform_rows`` record (None for ``uniform``)."""
    if rec.repr["kind"] != "uniform_rows":
        return None
    d0 = rec.streams[0]
    codes = streams.decode(d0, memoryview(payload)[: d0["length"]], rec.shape[0], np.int32, 0, quantize.MAX_ROW_CODE, runner=chunkrun)
    return quantize.row_steps(quantize.step_from_bits(rec.repr["step"]), codes, dt)


def symbols(rec, payload, dt, sym_dtype: np.dtype | None = None) -> base.Symbols:
    """The symbols and steps of a record, without reconstructing the values.

    Args:
        rec: a validated ``uniform`` or ``uniform_rows`` record.
        payload: its payload (CRC-checked by the caller).
        dt: its dtype.
        sym_dtype: the integer type to decode into (default: :func:`symbol_dtype`).
    """
    desc = rec.streams[-1]
    tail = memoryview(payload)[rec.length - desc["length"] :]
    m = quantize.qmax(dt)
    q = streams.decode(desc, tail, rec.numel, sym_dtype or symbol_dtype(rec, tail), -m, m, runner=chunkrun)
    q = narrowed(q).reshape(rec.shape)
    return base.Symbols(q, quantize.step_from_bits(rec.repr["step"]), row_steps(rec, payload, dt))


def values(s: base.Symbols, dt) -> np.ndarray:
    """Reconstruct the storage array from :class:`~ecnn.repr.base.Symbols` (``float32(q) * float32(step)``)."""
    if s.row_steps is not None:
        return quantize.dequantize_by_rows(s.q, dt, s.row_steps, runner=chunkrun)
    return quantize.dequantize(s.q, dt, s.step, runner=chunkrun)


def _decode_uniform(rec, payload, dt) -> np.ndarray:
    ((d, p),) = base.split(rec, payload)
    m = quantize.qmax(dt)
    q = streams.decode(d, p, rec.numel, np.int32, -m, m, runner=chunkrun)
    return quantize.dequantize(q, dt, quantize.step_from_bits(rec.repr["step"]), runner=chunkrun).reshape(rec.shape)


def _decode_rows(rec, payload, dt) -> np.ndarray:
    (d0, p0), (d1, p1) = base.split(rec, payload)
    m = quantize.qmax(dt)
    codes = streams.decode(d0, p0, rec.shape[0], np.int32, 0, quantize.MAX_ROW_CODE, runner=chunkrun)
    q = streams.decode(d1, p1, rec.numel, np.int32, -m, m, runner=chunkrun)
    return quantize.dequantize_rows(q, dt, quantize.step_from_bits(rec.repr["step"]), codes, runner=chunkrun).reshape(rec.shape)


_KEYS = frozenset({"kind", "step"})
UNIFORM = base.Representation(
    "uniform", 0, _KEYS, lambda rec, dt: _validate(rec, dt, False), _decode_uniform, _encode_uniform, symbols, symbol_dtype
)
UNIFORM_ROWS = base.Representation(
    "uniform_rows", 0, _KEYS, lambda rec, dt: _validate(rec, dt, True), _decode_rows, _encode_rows, symbols, symbol_dtype
)
