"""Frequency tables of the order-0 categorical model (spec/CODING.md, "Tables").

A table is stored as small integer counts ``c``. Both encoder and decoder expand
it, with integer arithmetic only, into frequencies ``f`` that sum to
``2**PRECISION - n``; symbol ``i`` then has probability ``(f[i] + 1) / 2**PRECISION``.
Because ``f`` is exact integers, the coder model built from it is the same on
every machine.
"""

from __future__ import annotations

import functools

import numpy as np

from ecnn._core import _bits
from ecnn.context import varint

PRECISION = 24
MAX_NSYM = 1 << 20  # cap on the alphabet of one table
MAX_COUNT = (1 << 32) - 1  # cap on one stored count


def expand(counts: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Expand stored counts into coder frequencies (spec/CODING.md, "Expansion").

    Args:
        counts: stored counts ``c[0..n-1]``, each in ``[0, MAX_COUNT]``, not all zero.
        precision: probability precision in bits.

    Returns:
        int64 frequencies ``f`` with ``f.sum() == 2**precision - n``.

    Raises:
        ValueError: if the counts break the rules above.
    """
    c = np.asarray(counts, dtype=np.int64)
    n = c.size
    if n < 2 or n > MAX_NSYM:
        raise ValueError(f"table has {n} symbols; allowed 2..{MAX_NSYM}")
    if c.min() < 0 or c.max() > MAX_COUNT:
        raise ValueError("stored count out of range")
    total = int(c.sum())
    if total == 0:
        raise ValueError("all stored counts are zero")
    free = (1 << precision) - n
    # c[i] * free < 2**32 * 2**24 fits int64 exactly.
    f = (c * free) // total
    rest = free - int(f.sum())
    f[int(np.argmax(c))] += rest  # argmax returns the first index of the maximum
    return f


def expand_rows(counts: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """:func:`expand` of every row of a ``(k, n)`` array of counts, at once (same results)."""
    c = np.asarray(counts, dtype=np.int64)
    k, n = c.shape
    if n < 2 or n > MAX_NSYM:
        raise ValueError(f"table has {n} symbols; allowed 2..{MAX_NSYM}")
    if c.min() < 0 or c.max() > MAX_COUNT:
        raise ValueError("stored count out of range")
    total = c.sum(axis=1)
    if np.any(total == 0):
        raise ValueError("all stored counts are zero")
    free = (1 << precision) - n
    f = (c * free) // total[:, None]
    f[np.arange(k), np.argmax(c, axis=1)] += free - f.sum(axis=1)
    return f


def probabilities_bits(f: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Code length in bits of each symbol under expanded frequencies ``f``."""
    return precision - np.log2(np.asarray(f, dtype=np.float64) + 1.0)


# --- stored form (spec/CODING.md, "Stored tables") ---------------------------

MODE_VARINT = 0  # the counts, one varint each
MODE_LOG = 1  # log-coded counts: nibble-packed differences of their codes
MAX_LOG_MANTISSA = 4
_NIBBLE_ESCAPE = 15


def code_to_count(e: np.ndarray, m: int) -> np.ndarray:
    """Count of log code ``e`` with ``m`` mantissa bits: 0 for 0, else ``(2^m + r) << k`` for ``e - 1 = k * 2^m + r``."""
    e = np.asarray(e, dtype=np.int64)
    em1 = np.maximum(e - 1, 0)
    c = ((1 << m) + (em1 & ((1 << m) - 1))) << (em1 >> m)
    return np.where(e == 0, 0, c)


@functools.lru_cache(maxsize=None)
def max_code(m: int) -> int:
    """Largest code whose count is at most MAX_COUNT."""
    e = 1
    while code_to_count(np.array([e + 1]), m)[0] <= MAX_COUNT:
        e += 1
    return e


@functools.lru_cache(maxsize=None)
def _log2_grid(m: int) -> np.ndarray:
    """log2 of the counts of codes 1 .. max_code(m)."""
    g = np.log2(code_to_count(np.arange(1, max_code(m) + 1), m).astype(np.float64))
    g.flags.writeable = False
    return g


def log_codes(hist: np.ndarray, m: int) -> np.ndarray:
    """Codes whose counts are closest (in ratio) to ``hist * 2^m`` (scaled down if that
    exceeds MAX_COUNT); occurring symbols get a code >= 1."""
    h = np.asarray(hist, dtype=np.float64)
    top = max_code(m)
    grid = _log2_grid(m)
    target = np.log2(np.maximum(h, 1.0)) + m
    over = float(target.max()) - grid[-1]
    if over > 0:
        target -= over  # scale every count down alike: only their ratios matter
    i = np.clip(np.searchsorted(grid, target), 1, top - 1)
    nearer_low = (target - grid[i - 1]) <= (grid[i] - target)
    e = np.where(nearer_low, i, i + 1)  # codes are 1-based
    return np.where(h > 0, e, 0).astype(np.int64)


def serialize(counts: np.ndarray) -> bytes:
    """Stored form of counts as plain varints (mode 0)."""
    return varint.encode([MODE_VARINT]) + varint.encode(counts)


def serialize_log(codes: np.ndarray, m: int) -> bytes:
    """Stored form of log codes (mode 1): mode, m, then nibble-packed zigzag differences.

    A difference ``v`` below 15 is one nibble; otherwise the escape nibble 15 and
    ``v - 15`` in three nibbles, high first. The last byte is padded with a zero nibble.
    """
    z = varint.zigzag(np.diff(np.concatenate([[0], np.asarray(codes, np.int64)])))
    small = z < _NIBBLE_ESCAPE
    lens = np.where(small, 1, 4)
    starts = np.cumsum(lens) - lens
    nib = np.zeros(int(lens.sum()) + 1, np.uint8)  # one spare nibble for the padding
    nib[starts[small]] = z[small]
    s, v = starts[~small], z[~small] - _NIBBLE_ESCAPE
    nib[s] = _NIBBLE_ESCAPE
    nib[s + 1], nib[s + 2], nib[s + 3] = (v >> 8) & 15, (v >> 4) & 15, v & 15
    n = nib.size - 1
    nib = nib[: n + (n & 1)]
    packed = (nib[0::2] << 4) | nib[1::2]
    return varint.encode([MODE_LOG, m]) + packed.astype(np.uint8).tobytes()


def log_table_bytes(codes: np.ndarray) -> int:
    """Length of :func:`serialize_log`'s output, without building it."""
    z = varint.zigzag(np.diff(np.concatenate([[0], np.asarray(codes, np.int64)])))
    nib = int(np.where(z < _NIBBLE_ESCAPE, 1, 4).sum())
    return 2 + (nib + 1) // 2


def read(buf, pos: int, nsym: int) -> tuple[np.ndarray, int]:
    """Read a stored table of ``nsym`` counts at ``pos``; returns the counts and the next position.

    Raises:
        ValueError: bad mode, truncation, code out of range, or non-zero final pad nibble.
    """
    (mode,), pos = varint.decode(buf, 1, pos)
    if mode == MODE_VARINT:
        counts, pos = varint.decode(buf, nsym, pos)
        return np.array(counts, dtype=np.int64), pos
    if mode != MODE_LOG:
        raise ValueError(f"unknown table mode {mode}")
    (m,), pos = varint.decode(buf, 1, pos)
    if m > MAX_LOG_MANTISSA:
        raise ValueError(f"table mantissa bits {m} > {MAX_LOG_MANTISSA}")
    codes = np.empty(nsym, np.int64)
    pos = _bits.log_codes(buf, pos, max_code(m), codes)  # ValueError for a truncated or out-of-range table
    return code_to_count(codes, m), pos
