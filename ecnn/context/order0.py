"""Order-0 model: one static table per stream, chosen by description length.

The encoder picks how finely to store the table: coarse counts cost few bytes
but code the symbols less well. ``fit`` tries a few resolutions and keeps the
one whose total (table bytes + coded symbol bits) is smallest.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Callable

import numpy as np

from ecnn._core import _hist
from ecnn.context import tables

# Coded-stream overhead of the range coder beyond the ideal code length:
# flushing writes at most two extra 32-bit words (spec/RANGE_CODER.md).
FLUSH_BITS = 64


@dataclass(frozen=True)
class Order0Fit:
    counts: np.ndarray  # counts as the decoder reads them, int64, one per symbol of the alphabet
    table_bytes: int  # length of the stored table
    symbol_bits: float  # ideal code length of the symbols under the expanded table
    make_blob: Callable[[], bytes] = field(repr=False, compare=False)

    @cached_property
    def blob(self) -> bytes:
        """The stored table (spec/CODING.md, "Stored tables"), built when first asked for: the
        encoder's searches fit many tables and store few."""
        return self.make_blob()

    @property
    def total_bits(self) -> float:
        return 8.0 * self.table_bytes + self.symbol_bits


def histogram(indices: np.ndarray, nsym: int, lo: int = 0) -> np.ndarray:
    """Count each symbol index ``0..nsym-1`` (of an integer array; with ``lo``, an int64, each value ``lo..lo+nsym-1``).

    Raises:
        ValueError: a value outside that range.
    """
    hist = np.zeros(nsym, np.int64)
    v = np.ascontiguousarray(indices)
    if v.dtype.kind not in "iu" or v.dtype.byteorder == ">":
        v = v.astype(np.int64)
    _hist.counts(v, int(lo), hist)
    return hist


def symbol_bits(hist: np.ndarray, counts: np.ndarray) -> float:
    """Ideal code length in bits of symbols with histogram ``hist`` under ``counts``."""
    f = tables.expand(counts)
    used = hist > 0
    return float(np.dot(hist[used], tables.probabilities_bits(f[used])))


_CACHE_COUNTS = 1 << 20  # fits kept for repeated histograms, in counts (8 MiB of int64) at most
_CACHE_LARGEST = 1 << 14  # larger histograms are not kept
_cache: OrderedDict[bytes, Order0Fit] = OrderedDict()
_cache_counts = 0
_cache_lock = threading.Lock()
_cache_pid = os.getpid()


def _lock() -> threading.Lock:
    """The cache's lock; in a forked child, a new lock and an empty cache, so that it never
    waits on a lock that another thread of its parent held at the fork."""
    global _cache_lock, _cache_pid, _cache, _cache_counts
    if _cache_pid != os.getpid():
        _cache_lock, _cache_pid = threading.Lock(), os.getpid()
        _cache, _cache_counts = OrderedDict(), 0
    return _cache_lock


def fit(hist: np.ndarray) -> Order0Fit:
    """Choose a stored table for a histogram by minimum description length.

    Tries plain counts at several resolutions and log-coded counts with 1 to 3
    mantissa bits; keeps the smallest table bytes + coded symbol bits (the
    first of equal ones, in that order). The encoder's searches fit the same
    histogram many times (a row class's counts in every plan with that many
    row classes), so recent fits are kept and returned again; their counts
    are read-only.
    """
    global _cache_counts
    hist = np.asarray(hist, dtype=np.int64)
    key = hist.tobytes()
    with _lock():
        got = _cache.get(key)
        if got is not None:
            _cache.move_to_end(key)
            return got
    got = _fit(hist)
    got.counts.flags.writeable = False
    if hist.size <= _CACHE_LARGEST:
        with _lock():
            if key not in _cache:
                _cache[key] = got
                _cache_counts += hist.size
            while _cache_counts > _CACHE_COUNTS:
                _, old = _cache.popitem(last=False)
                _cache_counts -= old.counts.size
    return got


def _fit(hist: np.ndarray) -> Order0Fit:
    """The fit of :func:`fit`, without the cache (in C, spec/CODING.md section 11.5)."""
    hist = np.ascontiguousarray(hist, dtype=np.int64)
    counts, codes = np.empty(hist.size, np.int64), np.empty(hist.size, np.int64)
    m, table_bytes, symbol_bits = _hist.fit(hist, counts, codes)
    make_blob = partial(tables.serialize, counts) if m == 0 else partial(tables.serialize_log, codes, m)
    return Order0Fit(counts=counts, table_bytes=table_bytes, symbol_bits=symbol_bits, make_blob=make_blob)
