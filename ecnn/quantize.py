"""Uniform scalar quantization (spec/CODING.md, "Uniform quantizer").

A float tensor ``x`` becomes integer symbols ``q = round_half_even(x / step)``,
where ``step`` is a positive finite float32 and the division is done in float64.
The decoder reconstructs ``q * step`` in float32 (float64 for float64 tensors)
and rounds that to the tensor's dtype. So every value is within ``step / 2`` of
the original, plus half a unit in the last place of the reconstructed value
from the final rounding.
"""

from __future__ import annotations

import numpy as np

from ecnn._core import _bits
from ecnn.dtypes import DType
from ecnn.errors import InvalidOption

MIN_BITS, MAX_BITS = 2, 16
# Largest |symbol|: float32 holds every integer up to 2**24 exactly; float64 tensors
# allow the int32 range.
QMAX_FLOAT32 = 1 << 24
QMAX_FLOAT64 = (1 << 31) - 1


def qmax(dtype: DType) -> int:
    """The largest symbol magnitude of a quantized tensor of ``dtype`` (spec/CODING.md section 4.4)."""
    return QMAX_FLOAT64 if dtype.name == "float64" else QMAX_FLOAT32


def to_float(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Values of a float tensor as float32 (float64 for float64 tensors)."""
    if dtype.name == "bfloat16":
        return (values.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if dtype.name in ("float32", "float16"):
        return values.astype(np.float32, copy=False)
    if dtype.name == "float64":
        return values
    raise InvalidOption(f"{dtype.name} tensors cannot be quantized; they are stored exactly")


def from_float(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Round float32/float64 values to ``dtype`` storage, round-half-to-even."""
    if dtype.name == "bfloat16":
        u = values.astype(np.float32, copy=False).view(np.uint32)
        rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        return rounded.astype(np.uint16)
    return values.astype(dtype.storage, copy=False)


def quantizable(dtype: DType) -> bool:
    return dtype.name in ("float64", "float32", "float16", "bfloat16")


def step_for_bits(values: np.ndarray, dtype: DType, bits: int) -> float:
    """The float32 step that maps the tensor's largest magnitude to ``2**(bits-1) - 1``."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidOption(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    absmax = float(np.max(_abs_max_rows(values.reshape(1, -1) if values.ndim < 2 else values, dtype))) if values.size else 0.0
    if absmax == 0.0:
        return 1.0
    step = np.float32(absmax / ((1 << (bits - 1)) - 1))
    if not np.isfinite(step) or step <= 0:
        # absmax below float32's smallest subnormal times the level count.
        step = np.float32(np.finfo(np.float32).smallest_subnormal)
    return float(step)


def check_step(step: float) -> float:
    s = np.float32(step)
    if not (np.isfinite(s) and s > 0):
        raise InvalidOption(f"step must be a positive finite float32, got {step}")
    return float(s)


def quantize(values: np.ndarray, dtype: DType, step: float, narrow: bool = False) -> np.ndarray:
    """Integer symbols (int32) of a float tensor; ``step`` must be a float32 value.

    With ``narrow``, the symbols come in the narrowest of int8, int16 and int32
    that holds them (the same values), which takes a fraction of the memory.

    Raises:
        InvalidOption: if the tensor has non-finite values or the step is so
            small that a symbol would not fit in int32.
    """
    v = values.reshape(1, -1)
    s = np.array([np.float64(np.float32(step))])
    return _quantize_blocks(v, dtype, step, s, narrow).reshape(values.shape)


def dequantize(q: np.ndarray, dtype: DType, step: float, runner=None) -> np.ndarray:
    """Reconstruct a tensor's storage array from its symbols (one step for all; see :func:`dequantize_by_rows`)."""
    if dtype.name in ("float32", "bfloat16", "float64") and q.size and q.dtype.kind == "i" and q.dtype.itemsize <= 4:
        wide = np.float64 if dtype.name == "float64" else np.float32
        return dequantize_by_rows(q, dtype, np.full(1, wide(np.float32(step))), runner=runner)
    with np.errstate(over="ignore"):  # overflow to infinity is the specified value (CODING.md 4.5)
        if dtype.name == "float64":
            return q.astype(np.float64) * np.float64(np.float32(step))
        x = q.astype(np.float32)
        x *= np.float32(step)
        return from_float(x, dtype)


def step_bits(step: float) -> int:
    """The IEEE-754 binary32 bit pattern of a step, as stored in the file."""
    return int(np.array(step, dtype=np.float32).view(np.uint32))


def step_from_bits(bits: int) -> float:
    return float(np.array(bits, dtype=np.uint32).view(np.float32))


# --- per-row steps (representation "uniform_rows") ------------------------------

MAX_ROW_CODE = 255  # row step codes: 3 mantissa bits, 5 exponent bits


def row_steps(step: float, codes: np.ndarray, dtype: DType) -> np.ndarray:
    """The step of each row from its code ``c``: ``s * (16 - (c & 7)) * 2**-((c >> 3) + 4)``.

    Steps fall as codes grow: code 0 is ``s`` itself, code 8 is ``s / 2``, and
    each code in between is 1/16 of an octave's top finer. The exact value
    (never above ``s``, so it cannot overflow) is rounded once to binary32
    (binary64 for float64 tensors).
    """
    ftype = np.float64 if dtype.name == "float64" else np.float32
    c = np.asarray(codes)
    if c.size > MAX_ROW_CODE + 1 and c.dtype.kind in "iu" and int(c.min()) >= 0 and int(c.max()) <= MAX_ROW_CODE:
        # Many rows: look the step up among the 256 codes' (the same values, without row-sized temporaries).
        return row_steps(step, np.arange(MAX_ROW_CODE + 1), dtype)[c]
    c = c.astype(np.int64)
    # Exact in binary64 (at most 28 significant bits, exponent in range), then one rounding.
    exact = np.ldexp(np.float64(np.float32(step)) * (16 - (c & 7)).astype(np.float64), -((c >> 3) + 4).astype(np.int32))
    return exact.astype(ftype)


def row_codes(values: np.ndarray, dtype: DType, step: float) -> np.ndarray:
    """Per-row step codes: each row gets the finest step that keeps its largest
    magnitude within the symbol range ``step`` gives the whole tensor.

    Code 0 is the tensor's own step; larger codes are finer. A row of zeros
    gets code 0.
    """
    row_max = _abs_max_rows(values, dtype).astype(np.float64)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)  # quantize_rows rejects non-finite rows
    top = float(row_max.max()) if row_max.size else 0.0
    all_codes = np.arange(MAX_ROW_CODE + 1)
    ladder = row_steps(step, all_codes, dtype).astype(np.float64)  # non-increasing in the code
    if top == 0.0:
        return np.zeros(values.shape[0], np.int64)
    need = float(np.float32(step)) * row_max / top  # the finest step that keeps the row in range
    # The largest code whose step is still >= need (steps fall as codes grow).
    ok = ladder[None, :] >= need[:, None] * (1 - 1e-12)
    codes = np.where(ok.any(axis=1), MAX_ROW_CODE - np.argmax(ok[:, ::-1], axis=1), 0)
    return np.where(row_max > 0, codes, 0).astype(np.int64)


_QUANTIZE_BLOCK = 1 << 16  # elements quantized at a time: binary64 temporaries that stay in cache


def _abs_max_rows(values: np.ndarray, dtype: DType) -> np.ndarray:
    """The largest magnitude of each row (first dimension; NaN where a row has one), as float32/float64.

    Works through blocks of elements, so that no float copy of the whole tensor is made.
    """
    v = values.reshape(values.shape[0], -1)
    rows, cols = v.shape
    if cols == 0:
        return np.zeros(rows, np.float64 if dtype.name == "float64" else np.float32)
    out = np.empty(rows, np.float64 if dtype.name == "float64" else np.float32)
    if rows == 1:  # one long row: blocks of its columns
        parts = [np.max(np.abs(to_float(v[0, a : a + _QUANTIZE_BLOCK], dtype))) for a in range(0, cols, _QUANTIZE_BLOCK)]
        out[0] = np.max(np.array(parts))
        return out
    step_rows = max(1, _QUANTIZE_BLOCK // cols)
    for a in range(0, rows, step_rows):
        b = min(rows, a + step_rows)
        out[a:b] = np.abs(to_float(v[a:b], dtype)).max(axis=1)
    return out


def quantize_rows(values: np.ndarray, dtype: DType, step: float, codes: np.ndarray, narrow: bool = False) -> np.ndarray:
    """Integer symbols with a step per row (first dimension); see :func:`quantize` (and its ``narrow``).

    Works through blocks of rows (the same operations, element by element, as on the whole).
    """
    v = values.reshape(values.shape[0], -1)
    s = row_steps(step, codes, dtype).astype(np.float64)
    if not (s > 0).all():
        raise InvalidOption("a row step underflows to zero")
    return _quantize_blocks(v, dtype, step, s, narrow).reshape(values.shape)


_NARROW = (np.int8, np.int16, np.int32)


def _quantize_blocks(v: np.ndarray, dtype: DType, step: float, s: np.ndarray, narrow: bool) -> np.ndarray:
    """``rint(x / s_i)`` for the rows of ``v`` (float64 arithmetic, one block of elements at a time).

    With ``narrow`` the output starts as int8 and is widened (what is done copied)
    only when a block holds a symbol it cannot; else it is int32.
    """
    rows, cols = v.shape
    if v.size and not all(np.isfinite(to_float(v[a : a + 4096], dtype)).all() for a in range(0, rows, 4096)):
        raise InvalidOption("tensor has NaN or infinite values and cannot be quantized")
    qmax_ = qmax(dtype)
    kind = 0 if narrow else len(_NARROW) - 1
    out = np.empty((rows, cols), _NARROW[kind])
    if rows == 1:  # one long row: blocks of its columns
        spans = [(0, 1, c, min(cols, c + _QUANTIZE_BLOCK)) for c in range(0, cols, _QUANTIZE_BLOCK)]
    else:
        step_rows = max(1, _QUANTIZE_BLOCK // max(cols, 1))
        spans = [(a, min(rows, a + step_rows), 0, cols) for a in range(0, rows, step_rows)]
    for a, b, c0, c1 in spans:
        x = to_float(v[a:b, c0:c1], dtype).astype(np.float64)
        np.divide(x, s[a:b, None], out=x)
        np.rint(x, out=x)
        top = float(np.max(np.abs(x))) if x.size else 0.0
        if top > qmax_:
            raise InvalidOption(f"step {step} is too small for this tensor (|symbol| > {qmax_})")
        while top > np.iinfo(_NARROW[kind]).max:
            kind += 1
            wider = np.empty((rows, cols), _NARROW[kind])
            wider[:a] = out[:a]
            wider[a, :c0] = out[a, :c0]
            out = wider
        out[a:b, c0:c1] = x
    return out


def dequantize_rows(q: np.ndarray, dtype: DType, step: float, codes: np.ndarray, runner=None) -> np.ndarray:
    """Reconstruct a tensor quantized with :func:`quantize_rows`.

    For float32, the result reuses ``q``'s memory when ``q`` is a C-contiguous
    int32 array (the caller must no longer need it), so the peak stays near
    one copy of the tensor.
    """
    s = row_steps(step, codes, dtype)
    out = None
    if dtype.name == "float32" and q.dtype == np.int32 and q.flags.c_contiguous:
        out = q.view(np.float32)
    return dequantize_by_rows(q, dtype, s, out, runner=runner)


def dequantize_by_rows(
    q: np.ndarray, dtype: DType, row_steps_: np.ndarray, out: np.ndarray | None = None, block: int = 1 << 18, runner=None
) -> np.ndarray:
    """``binary32(q) * s_i`` row by row (binary64 for float64), rounded to ``dtype``.

    Writes into ``out`` (the tensor's storage dtype and shape, or a float
    view of ``q`` itself) when given. float32, bfloat16 and float64 run in the
    compiled core, float16 with numpy, in blocks of about ``block`` elements
    (of whole rows, or of the one row's columns) that ``runner`` (an
    :mod:`ecnn.coder.runner` runner; default: one after the other) may share
    out among threads.
    """
    wide = np.float64 if dtype.name == "float64" else np.float32
    steps = np.ascontiguousarray(row_steps_, wide).reshape(-1)
    rows = steps.size
    cols = q.size // rows if rows else 0
    out = np.empty(q.shape, dtype=dtype.storage) if out is None else out
    if rows == 1:  # one step: blocks of elements
        q2, out2, span = q.reshape(1, -1), out.reshape(1, -1), block
        nblocks = -(-cols // span)
    else:  # blocks of whole rows
        q2, out2, span = q.reshape(rows, cols), out.reshape(rows, cols), max(1, block // max(cols, 1))
        nblocks = -(-rows // span)
    compiled = dtype.name in ("float32", "bfloat16", "float64") and q2.dtype.kind == "i" and q2.dtype.itemsize <= 4
    if compiled:
        q2 = np.ascontiguousarray(q2)
        compiled = out2.flags.c_contiguous

    def one(i: int) -> None:
        a = i * span
        if rows == 1:
            qs, os_, ss = q2[:, a : a + span], out2[:, a : a + span], steps
        else:
            qs, os_, ss = q2[a : a + span], out2[a : a + span], steps[a : a + span]
        if compiled:
            _bits.scale_rows(qs, ss, os_.view(np.uint16) if dtype.name == "bfloat16" else os_)
            return
        with np.errstate(over="ignore"):  # overflow to infinity is the specified value (CODING.md 4.5)
            x = qs.astype(wide)
            x *= ss[:, None]
            os_[...] = from_float(x, dtype)

    if runner is None or nblocks < 2:
        for i in range(nblocks):
            one(i)
    else:
        runner.run(nblocks, one, out2)
    return out.reshape(q.shape)
