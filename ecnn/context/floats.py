"""Sign, exponent and mantissa fields of float bit patterns (spec/CODING.md, "fields").

A float of width ``W = 1 + E + M`` bits is its sign bit, ``E`` exponent bits
and ``M`` mantissa bits. The ``fields`` representation cuts every element's
bit pattern ``u`` into

* the **sign** ``u >> (W - 1)``;
* the **head** ``(u >> r) mod 2^(E + k)``: the exponent and the top ``k``
  mantissa bits, which carry the value's magnitude on a log scale and are
  entropy coded with row/column contexts;
* the **tail** ``u mod 2^r`` with ``r = M - k``: the low mantissa bits, close to
  random, stored as bit fields. Each row ``i`` stores its tails shifted right
  by ``t_i``, the number of low bits that are zero in every tail of the row
  (rows that came from a narrower type, e.g. float16 values held as float32,
  drop their 13 zero bits).

Everything here is bit manipulation on integers, so every pattern (NaN
payloads, signed zeros, subnormals, infinities) comes back exactly. This
module also holds the encoder's choice of ``k``; it imports neither torch nor
later stages.
"""

from __future__ import annotations

import numpy as np

# (exponent bits E, mantissa bits M) of each float type; 1 + E + M = 8 * width.
LAYOUT: dict[str, tuple[int, int]] = {
    "float64": (11, 52),
    "float32": (8, 23),
    "float16": (5, 10),
    "bfloat16": (8, 7),
    "float8_e4m3fn": (4, 3),
    "float8_e5m2": (5, 2),
}
MAX_HEAD_MANTISSA = 8  # the encoder tries k = 0 .. min(M, this)
_U64 = np.uint64


def layout(dtype_name: str) -> tuple[int, int]:
    """``(E, M)`` of a float type (KeyError for other types)."""
    return LAYOUT[dtype_name]


def row_count(shape) -> int:
    """Rows of the ``fields`` representation: the first dimension of a tensor of two or more
    dimensions, else 1 (the whole tensor is one row)."""
    return int(shape[0]) if len(shape) >= 2 else 1


def bit_patterns(arr: np.ndarray) -> np.ndarray:
    """The elements' bit patterns as a flat uint64 array."""
    a = np.ascontiguousarray(arr).ravel()
    return a.view(f"<u{a.dtype.itemsize}").astype(_U64)


def trailing_zeros(x: np.ndarray, cap: int) -> np.ndarray:
    """Trailing zero bits of each uint64 value, at most ``cap`` (0 counts ``cap``)."""
    x = np.asarray(x, dtype=_U64)
    low = x & (~x + _U64(1))  # lowest set bit (0 for 0)
    tz = np.where(low == 0, cap, np.log2(np.maximum(low, _U64(1)).astype(np.float64)).astype(np.int64))
    return np.minimum(tz, cap)


def split(u: np.ndarray, e_bits: int, m_bits: int, k: int, rows: int):
    """Cut bit patterns into fields.

    Args:
        u: flat uint64 bit patterns, ``rows * C`` of them in row-major order.
        e_bits, m_bits: the type's layout.
        k: mantissa bits in the head, 0..m_bits.
        rows: number of rows (see :func:`row_count`); ``u.size`` must be a multiple of it.

    Returns:
        ``(signs, heads, shifts, tails)``: signs, heads and shifted tails as uint64
        arrays of ``u.size`` values, and the int64 shift of each row.
    """
    width = 1 + e_bits + m_bits
    r = m_bits - k
    signs = u >> _U64(width - 1)
    heads = (u >> _U64(r)) & _U64((1 << (e_bits + k)) - 1)
    tails = u & _U64((1 << r) - 1)
    if r == 0 or u.size == 0:
        return signs, heads, np.zeros(rows, np.int64), tails
    per_row = np.bitwise_or.reduce(tails.reshape(rows, -1), axis=1)
    shifts = trailing_zeros(per_row, r)
    tails = (tails.reshape(rows, -1) >> shifts.astype(_U64)[:, None]).ravel()
    return signs, heads, shifts, tails


def tail_widths(shifts: np.ndarray, r: int) -> np.ndarray:
    """Width in bits of the stored tails of each row: ``r - t_i``."""
    return r - np.asarray(shifts, np.int64)


def merge(signs, heads, shifts, tails, e_bits: int, m_bits: int, k: int, cols: int) -> np.ndarray:
    """Inverse of :func:`split`: the flat bit patterns, as unsigned integers of the type's width."""
    width = 1 + e_bits + m_bits
    ut = np.dtype(f"<u{width // 8}")
    r = m_bits - k
    u = np.asarray(heads).astype(ut)
    if r:
        u <<= ut.type(r)
        t = np.asarray(tails).astype(ut).reshape(-1, cols) if cols else np.zeros((len(shifts), 0), ut)
        t <<= np.asarray(shifts).astype(ut)[:, None]
        u |= t.ravel()
    u |= np.asarray(signs).astype(ut) << ut.type(width - 1)
    return u
