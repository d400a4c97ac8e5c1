"""Order-0 model: one static table per stream, chosen by description length.

The encoder picks how finely to store the table: coarse counts cost few bytes
but code the symbols less well. ``fit`` tries a few resolutions and keeps the
one whose total (table bytes + coded symbol bits) is smallest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecnn.context import tables, varint

# Coded-stream overhead of the range coder beyond the ideal code length:
# flushing writes at most two extra 32-bit words (spec/RANGE_CODER.md).
FLUSH_BITS = 64
_RESOLUTIONS = (4, 6, 8, 10, 12, 14, 16, 18, 20)


@dataclass(frozen=True)
class Order0Fit:
    counts: np.ndarray  # counts as the decoder reads them, int64, one per symbol of the alphabet
    blob: bytes  # the stored table (spec/CODING.md, "Stored tables")
    symbol_bits: float  # ideal code length of the symbols under the expanded table

    @property
    def table_bytes(self) -> int:
        return len(self.blob)

    @property
    def total_bits(self) -> float:
        return 8.0 * self.table_bytes + self.symbol_bits


def histogram(indices: np.ndarray, nsym: int) -> np.ndarray:
    """Count each symbol index ``0..nsym-1``."""
    return np.bincount(indices.ravel(), minlength=nsym).astype(np.int64)


def symbol_bits(hist: np.ndarray, counts: np.ndarray) -> float:
    """Ideal code length in bits of symbols with histogram ``hist`` under ``counts``."""
    f = tables.expand(counts)
    used = hist > 0
    return float(np.dot(hist[used], tables.probabilities_bits(f[used])))


def scale_counts(hist: np.ndarray, resolution: int) -> np.ndarray:
    """Scale a histogram so that its total is about ``2**resolution``.

    Symbols that occur keep a count of at least 1, so none of them falls back
    to the leaky minimum probability of ``2**-24``.
    """
    total = int(hist.sum())
    target = 1 << resolution
    if total <= target:
        return hist.copy()
    scaled = np.rint(hist.astype(np.float64) * (target / total)).astype(np.int64)
    return np.where(hist > 0, np.maximum(scaled, 1), 0)


def fit(hist: np.ndarray) -> Order0Fit:
    """Choose a stored table for a histogram by minimum description length.

    Tries plain counts at several resolutions and log-coded counts with 1 to 3
    mantissa bits; keeps the smallest table bytes + coded symbol bits (the
    first of equal ones, in that order).
    """
    hist = np.asarray(hist, dtype=np.int64)
    cands: list[tuple[np.ndarray, int, object]] = []
    seen: set[bytes] = set()

    def add(counts: np.ndarray, table_bytes: int, make_blob) -> None:
        key = counts.tobytes()
        if key not in seen:
            seen.add(key)
            cands.append((counts, table_bytes, make_blob))

    total = int(hist.sum())
    for r in _RESOLUTIONS:
        counts = scale_counts(hist, r)
        add(counts, 1 + int(varint.varint_sizes(counts).sum()), lambda c=counts: tables.serialize(c))
        if total <= (1 << r):
            break  # larger resolutions give the same counts
    for m in (1, 2, 3):
        codes = tables.log_codes(hist, m)
        add(tables.code_to_count(codes, m), tables.log_table_bytes(codes), lambda c=codes, m=m: tables.serialize_log(c, m))
    used = hist > 0
    f = tables.expand_rows(np.stack([c for c, _, _ in cands]))[:, used]
    sym_bits = tables.probabilities_bits(f) @ hist[used].astype(np.float64)
    totals = 8.0 * np.array([tb for _, tb, _ in cands], np.float64) + sym_bits
    k = int(np.argmin(totals))  # the first of equal totals
    counts, _, make_blob = cands[k]
    return Order0Fit(counts=counts, blob=make_blob(), symbol_bits=float(sym_bits[k]))


def entropy_bits(hist: np.ndarray) -> float:
    """Zeroth-order empirical entropy of a histogram, in bits (total, not per symbol)."""
    h = np.asarray(hist, dtype=np.float64)
    n = h.sum()
    p = h[h > 0] / n
    return float(-(h[h > 0] * np.log2(p)).sum())
