"""Row/column scale contexts (spec/CODING.md, "rowcol streams").

A weight matrix's rows (output channels) and columns (input features) have
scales of their own. The encoder gives every row a class ``r[i]`` and every
column a class ``c[j]`` by the log of its mean magnitude; element ``(i, j)``
then has context ``r[i] + c[j]``, a bucket of its predicted log-scale. A map
sends each context to one of ``T`` tables (adjacent contexts share a table
when that is cheaper), and each table codes its symbols with an order-0 model.

Every context is known before a single weight is decoded, so the decoder
groups the symbols of a chunk by table and decodes each group with one
static model: no per-symbol Python loop.

This module holds the model: the classes, the merges of contexts into tables
and the exact cost of a plan for given class counts; the search over class
counts is :mod:`ecnn.select.classes`. Nothing here imports torch or later stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecnn.context import order0, rate, varint

MAX_CLASSES = 64  # per axis
MAX_CONTEXTS = 2 * MAX_CLASSES - 1


@dataclass(frozen=True)
class RowColPlan:
    """What the encoder decided for one stream.

    Attributes:
        rclass, cclass: class of each row / column.
        nrc, ncc: number of row / column classes.
        table_of: table index of each context ``0 .. nrc + ncc - 2``.
        fits: the stored table of each table index (alphabet of ``nsym`` symbols).
        sign_fit: the sign table (negative, positive), or None.
        rows_fit, cols_fit: order-0 fits of the class side streams (None if one class).
        bits: estimated size of the whole stream in bits.
    """

    rclass: np.ndarray
    cclass: np.ndarray
    nrc: int
    ncc: int
    table_of: np.ndarray
    fits: list
    sign_fit: order0.Order0Fit | None
    rows_fit: order0.Order0Fit | None
    cols_fit: order0.Order0Fit | None
    bits: float


def classes(scale: np.ndarray, n: int) -> np.ndarray:
    """Classes ``0..n-1`` spread evenly over the range of ``log2(scale)``."""
    if n == 1:
        return np.zeros(scale.shape, np.int64)
    ls = np.log2(scale)
    lo, hi = float(ls.min()), float(ls.max())
    if hi - lo < 1e-9:
        return np.zeros(scale.shape, np.int64)
    return np.clip(((ls - lo) / (hi - lo) * n).astype(np.int64), 0, n - 1)


_XLOGX_SIZE = 1 << 20  # counts below this take n log2 n from a table
_xlogx_table = np.zeros(0)  # grown to the next power of two above the largest count seen


def _xlogx(hist: np.ndarray) -> np.ndarray:
    """``h * log2(max(h, 1))`` of integer counts ``h``, as float64: from a table when every count is small."""
    global _xlogx_table
    top = int(hist.max()) if hist.size else 0
    if top >= _XLOGX_SIZE:
        h = hist.astype(np.float64)
        return h * np.log2(np.maximum(h, 1.0))
    table = _xlogx_table
    if table.size <= top:
        h = np.arange(1 << top.bit_length(), dtype=np.float64)
        table = _xlogx_table = h * np.log2(np.maximum(h, 1.0))  # the same operations as above, value by value
    return table[hist]


def _table_cost_bits(hist: np.ndarray) -> np.ndarray:
    """Approximate cost in bits of coding with one order-0 table per row of ``hist`` (integer counts).

    Used to decide merges; the final plan is costed exactly with ``order0.fit``.
    """
    # Sums of integers below 2^53 are exact, in int64 as in float64.
    n = hist.sum(axis=-1).astype(np.float64)
    # n log2 n - sum h log2 h, with 0 log2 0 = 0 (log2 1 = 0 as well)
    ent = n * np.log2(np.maximum(n, 1.0)) - _xlogx(hist).sum(axis=-1)
    # A count scaled to a total of about 1024 takes 2 bytes from rint(.) >= 128 on, else 1
    # (rint(x) >= 128 exactly when x >= 127.5; none reaches the 3 bytes of 16384).
    scale = np.minimum(1.0, 1024.0 / np.maximum(n, 1.0))
    table = 8.0 * (hist.shape[-1] + np.count_nonzero(hist >= _least_count(scale)[..., None], axis=-1))
    # The real fit spends a little over the entropy (coarse counts); 1% is typical.
    # Every table costs at least a byte of map, so an empty context joins a neighbour.
    return ent * 1.01 + table + 8.0


def _least_count(scale: np.ndarray) -> np.ndarray:
    """The least integer ``c`` with ``c * scale >= 127.5`` in float64, for each scale in ``(0, 1]``.

    ``c * scale`` rounds monotonically in ``c``, so a count passes exactly when it is at least this.
    """
    c = np.ceil(127.5 / scale).astype(np.int64)
    for _ in range(2):  # the quotient's rounding puts the first guess at most a step off
        c = np.where((c - 1) * scale >= 127.5, c - 1, c)
        c = np.where(c * scale < 127.5, c + 1, c)
    return c


_SEGMENT_BINS = 1 << 22  # counts of the context ranges costed per call of _table_cost_bits


def merge_contexts(hist: np.ndarray) -> np.ndarray:
    """Group adjacent contexts into tables minimising the estimated cost (dynamic programme).

    Args:
        hist: ``(K, nsym)`` symbol counts per context.

    Returns:
        ``table_of``: the table index of every context, non-decreasing from 0.
        Every table has at least one symbol when ``hist`` has any.
    """
    k = hist.shape[0]
    cum = np.concatenate([np.zeros((1, hist.shape[1]), np.int64), np.cumsum(hist, axis=0)])
    # seg[a, b] = cost of one table for contexts a..b-1, every a < b at once
    seg = np.full((k + 1, k + 1), np.inf)
    a_idx, b_idx = np.triu_indices(k + 1, 1)
    step = max(1, _SEGMENT_BINS // hist.shape[1])  # ranges per call: temporaries of about 2^22 counts
    for s0 in range(0, a_idx.size, step):
        a, b = a_idx[s0 : s0 + step], b_idx[s0 : s0 + step]
        seg[a, b] = _table_cost_bits(cum[b] - cum[a])
    best = np.full(k + 1, np.inf)
    best[0] = 0.0
    back = np.zeros(k + 1, np.int64)
    for b in range(1, k + 1):
        c = best[:b] + seg[:b, b]
        a = int(np.argmin(c))
        best[b], back[b] = c[a], a
    bounds = []
    b = k
    while b > 0:
        bounds.append(back[b])
        b = back[b]
    starts = sorted(bounds)
    table_of = np.zeros(k, np.int64)
    for t, s in enumerate(starts):
        table_of[s:] = t
    return table_of


def _side_fit(cls: np.ndarray, n: int) -> order0.Order0Fit | None:
    if n == 1:
        return None
    return order0.fit(np.bincount(cls, minlength=n))


GRID_MAX_BINS = 1 << 22  # a grid holds 64 x 64 x nsym counts at most this many


@dataclass(frozen=True)
class Grid:
    """Symbol counts by 64 row classes and 64 column classes, computed once per array.

    ``classes(x, n)`` for ``n`` dividing 64 is ``classes(x, 64) // (64 // n)``
    exactly (scaling by a power of two is exact in floating point), so
    :func:`plan` derives the histogram of any such class counts from these
    counts without another pass over the array.

    Attributes:
        fr, fc: the 64-class row and column classes.
        counts: ``(64, 64, nsym)`` symbol counts.
        neg, nnz: negative and non-zero values (when signs are apart).
    """

    fr: np.ndarray
    fc: np.ndarray
    counts: np.ndarray
    neg: int
    nnz: int


def _mean_scales(mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Integer sums are exact, so these equal the float64 means of the magnitudes.
    rows, cols = mag.shape
    return mag.sum(axis=1, dtype=np.int64) / cols + 0.5, mag.sum(axis=0, dtype=np.int64) / rows + 0.5


def grid(sym: np.ndarray, nsym: int, values: np.ndarray | None) -> Grid | None:
    """The :class:`Grid` of a ``(rows, cols)`` array for :func:`plan`, or None if it would be too large."""
    fine = MAX_CLASSES
    if fine * fine * nsym > GRID_MAX_BINS:
        return None
    mag = np.abs(values) if values is not None else sym
    rmean, cmean = _mean_scales(mag)
    fr, fc = classes(rmean, fine), classes(cmean, fine)
    rows, cols = sym.shape
    counts = np.zeros(fine * fine * nsym, np.int64)
    ckey = (fc * nsym).astype(np.int32)
    step = max(1, (1 << 20) // max(cols, 1))
    for a in range(0, rows, step):  # by blocks of rows, so the keys stay small
        key = (fr[a : a + step, None] * (fine * nsym)).astype(np.int32) + ckey[None, :] + sym[a : a + step].astype(np.int32)
        counts += np.bincount(key.ravel(), minlength=counts.size)
    neg = nnz = 0
    if values is not None:
        nnz = int(np.count_nonzero(values))
        neg = int(np.count_nonzero(values < 0))
    return Grid(fr, fc, counts.reshape(fine, fine, nsym), neg, nnz)


def plan(
    sym: np.ndarray, nsym: int, values: np.ndarray | None, nrc: int, ncc: int, weight: int = 1, grid: Grid | None = None
) -> RowColPlan:
    """Cost a rowcol stream for a 2-D array of symbol indices.

    Args:
        sym: ``(rows, cols)`` indices ``0..nsym-1`` coded by the context tables
            (magnitudes when the sign is coded apart).
        nsym: alphabet size of ``sym``.
        values: the signed values when signs are coded apart, else None.
        nrc, ncc: number of row and column classes.
        weight: the rows stand for ``weight`` times as many (a sample of every
            ``weight``-th row): counts are scaled so that merges and the cost
            weigh tables against symbols as they would on all rows.
        grid: :func:`grid` of the same arrays; used when both class counts
            divide 64 (the result is the same, without a pass over the array).
    """
    nctx = nrc + ncc - 1
    fine = MAX_CLASSES
    if grid is not None and fine % nrc == 0 and fine % ncc == 0:
        rclass, cclass = grid.fr // (fine // nrc), grid.fc // (fine // ncc)
        g = grid.counts.reshape(nrc, fine // nrc, ncc, fine // ncc, nsym).sum(axis=(1, 3))
        hist = np.zeros((nctx, nsym), np.int64)
        for r in range(nrc):
            hist[r : r + ncc] += g[r]
        hist *= weight
        neg, nnz = grid.neg, grid.nnz
    else:
        mag = np.abs(values) if values is not None else sym
        rmean, cmean = _mean_scales(mag)
        rclass, cclass = classes(rmean, nrc), classes(cmean, ncc)
        ctx = rclass[:, None] + cclass[None, :]
        hist = np.bincount((ctx * nsym + sym).ravel(), minlength=nctx * nsym).reshape(nctx, nsym) * weight
        if values is not None:
            nnz = int(np.count_nonzero(values))
            neg = int(np.count_nonzero(values < 0))
    table_of = merge_contexts(hist)
    ntab = int(table_of.max()) + 1
    fits = []
    bits = 0.0
    for t in range(ntab):
        f = order0.fit(hist[table_of == t].sum(axis=0))  # every table holds symbols (see merge_contexts)
        fits.append(f)
        bits += f.total_bits
    sign_fit = None
    if values is not None:
        sign_fit = order0.fit(np.array([neg, nnz - neg], np.int64) * weight)  # caller ensures nnz > 0
        bits += sign_fit.total_bits
    rows_fit, cols_fit = _side_fit(np.repeat(rclass, weight), nrc), _side_fit(cclass, ncc)
    for side in (rows_fit, cols_fit):
        if side is not None:
            bits += rate.side_bits(side)
    bits += 8.0 * int(varint.varint_sizes(table_of).sum())
    return RowColPlan(rclass, cclass, nrc, ncc, table_of, fits, sign_fit, rows_fit, cols_fit, bits)


@dataclass(frozen=True)
class SignPlan:
    """Sign tables chosen by column (format 1.1, ``ctx`` model 2).

    Attributes:
        k: number of sign classes.
        sclass: sign class of every column.
        fits: the sign table (negative, positive) of each class.
        side_fit: order-0 fit of the class stream (None if ``k == 1``).
        bits: estimated bits of the class stream and every sign.
    """

    k: int
    sclass: np.ndarray
    fits: list
    side_fit: order0.Order0Fit | None
    bits: float


def sign_classes(values: np.ndarray, k: int) -> np.ndarray:
    """Column classes ``0..k-1`` by the share of positive values among the column's non-zero ones.

    The classes are spread evenly between the 1st and 99th percentile of the
    shares, so that a few columns of one sign do not take every class.
    """
    return column_sign_classes((values != 0).sum(axis=0), (values > 0).sum(axis=0), k)


def column_sign_classes(nz: np.ndarray, positive: np.ndarray, k: int) -> np.ndarray:
    """:func:`sign_classes` from each column's non-zero and positive counts."""
    if k == 1:
        return np.zeros(nz.size, np.int64)
    pos = np.where(nz > 0, positive / np.maximum(nz, 1), 0.5)
    lo, hi = np.quantile(pos, [0.01, 0.99])
    if hi - lo < 1e-9:
        return np.zeros(nz.size, np.int64)
    return np.clip(((pos - lo) / (hi - lo) * k).astype(np.int64), 0, k - 1)
