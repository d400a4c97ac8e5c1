"""Frequency tables of the order-0 categorical model (spec/CODING.md, "Tables").

A table is stored as small integer counts ``c``. Both encoder and decoder expand
it, with integer arithmetic only, into frequencies ``f`` that sum to
``2**PRECISION - n``; symbol ``i`` then has probability ``(f[i] + 1) / 2**PRECISION``.
Because ``f`` is exact integers, the coder model built from it is the same on
every machine.
"""

from __future__ import annotations

import numpy as np

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


def probabilities_bits(f: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Code length in bits of each symbol under expanded frequencies ``f``."""
    return precision - np.log2(np.asarray(f, dtype=np.float64) + 1.0)
