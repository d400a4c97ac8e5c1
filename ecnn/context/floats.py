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

from ecnn._core import _bits

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
    """The elements' bit patterns as a flat array of unsigned integers of the type's width (a view where it can be)."""
    a = np.ascontiguousarray(arr).ravel()
    return a.view(f"<u{a.dtype.itemsize}")


def split(u: np.ndarray, e_bits: int, m_bits: int, k: int, rows: int):
    """Cut bit patterns into fields (one pass, in C).

    Args:
        u: flat bit patterns (:func:`bit_patterns`, unsigned integers of the type's
            width), ``rows * C`` of them in row-major order.
        e_bits, m_bits: the type's layout.
        k: mantissa bits in the head, 0..min(m_bits, 32 - e_bits).
        rows: number of rows (see :func:`row_count`); ``u.size`` must be a multiple of it.

    Returns:
        ``(signs, heads, shifts, tails)``: the signs (uint8), heads (uint32) and
        shifted tails (``u``'s type) of every element, and the int64 shift of each row.
    """
    u = np.ascontiguousarray(u)
    width = 1 + e_bits + m_bits
    if u.dtype != np.dtype(f"<u{width // 8}"):
        u = u.astype(f"<u{width // 8}")  # bit patterns held in a wider type
    signs, heads = np.empty(u.size, np.uint8), np.empty(u.size, np.uint32)
    tails, shifts = np.empty_like(u), np.empty(rows, np.int64)
    if u.size:
        _bits.split(u, e_bits, m_bits, k, signs, heads, tails, shifts)
    else:
        shifts[:] = 0
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
