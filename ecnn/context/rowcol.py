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

from dataclasses import dataclass, field

import numpy as np

from ecnn._core import _hist
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
        counts: ``(nrc + ncc - 1, nsym)`` counts of the symbols of each context in
            the array the plan was made on, if that was every row (else None).
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
    counts: np.ndarray | None = None


def classes(scale: np.ndarray, n: int) -> np.ndarray:
    """Classes ``0..n-1`` spread evenly over the range of ``log2(scale)``.

    For ``n`` dividing 64, ``classes(x, n) == classes(x, 64) // (64 // n)``: the
    position in the range times ``n`` differs from it times 64 by a power of two,
    which is exact in floating point.
    """
    if n == 1:
        return np.zeros(scale.shape, np.int64)
    ls = np.log2(scale)
    lo, hi = float(ls.min()), float(ls.max())
    if hi - lo < 1e-9:
        return np.zeros(scale.shape, np.int64)
    return np.clip(((ls - lo) / (hi - lo) * n).astype(np.int64), 0, n - 1)


def merge_contexts(hist: np.ndarray, weight: int = 1) -> np.ndarray:
    """Group adjacent contexts into tables minimising the estimated cost (dynamic programme, in C).

    The cost of one table for the counts ``h`` of its contexts (times ``weight``)
    is an estimate: ``1.01 * (n log2 n - sum h log2 h) + 8 * (nsym + b) + 8``
    bits with ``n = sum h``, where ``b`` counts the ``h`` that scaled to a total
    of about 1024 take two varint bytes (``h * min(1, 1024 / n) >= 127.5``).
    The final plan is costed exactly with ``order0.fit``.

    Args:
        hist: ``(K, nsym)`` symbol counts per context.
        weight: the counts stand for ``weight`` times as many.

    Returns:
        ``table_of``: the table index of every context, non-decreasing from 0.
        Every table has at least one symbol when ``hist`` has any (an empty
        table would cost its bytes for nothing, so an empty context joins a neighbour).
    """
    hist = np.ascontiguousarray(hist, dtype=np.int64)
    table_of = np.empty(hist.shape[0], np.int64)
    _hist.merge(hist, int(weight), table_of)
    return table_of


def _side_fit(cls: np.ndarray, n: int, weight: int) -> order0.Order0Fit | None:
    if n == 1:
        return None
    return order0.fit(np.bincount(cls, minlength=n) * weight)


@dataclass(frozen=True)
class Scales:
    """What every plan of one array starts from: the mean magnitude of its rows and columns, and its signs.

    Attributes:
        rows, cols: ``mean |v| + 0.5`` of each row / column, in float64 (the
            integer sums are exact, so these equal the float64 means).
        neg, nnz: negative and non-zero values (when signs are apart, else 0).
    """

    rows: np.ndarray
    cols: np.ndarray
    neg: int
    nnz: int
    _fine: dict = field(default_factory=dict, compare=False, repr=False)

    def classes(self, axis: int, n: int) -> np.ndarray:
        """:func:`classes` of the rows (``axis`` 0) or columns (1) at ``n`` classes: for ``n`` dividing
        :data:`MAX_CLASSES`, the finest classes divided down (exactly the same, see :func:`classes`)."""
        scale = self.rows if axis == 0 else self.cols
        if MAX_CLASSES % n:
            return classes(scale, n)
        if axis not in self._fine:
            self._fine[axis] = classes(scale, MAX_CLASSES)
        return self._fine[axis] // (MAX_CLASSES // n)


def _native(sym: np.ndarray) -> np.ndarray:
    """Symbol indices as the compiled counts read them: uint8, uint16 or int32 as they are, others as int32."""
    return sym if sym.dtype in (np.uint8, np.uint16, np.int32) else sym.astype(np.int32)


def scales_of(sym: np.ndarray, values: np.ndarray | None) -> Scales:
    """The :class:`Scales` of a ``(rows, cols)`` array of indices for :func:`plan` (see there)."""
    rows, cols = sym.shape
    rs, cs = np.empty(rows, np.int64), np.empty(cols, np.int64)
    _hist.axis_sums(_native(sym), rs, cs)
    neg = nnz = 0
    if values is not None:
        nnz = int(np.count_nonzero(values))
        neg = int(np.count_nonzero(values < 0))
    return Scales(rs / cols + 0.5, cs / rows + 0.5, neg, nnz)


def cell_entropy_bits(sym: np.ndarray, nsym: int) -> float:
    """The empirical entropy in bits of a ``(rows, cols)`` array of indices given the pair of its
    row and column classes at :data:`MAX_CLASSES` classes each.

    Every context of a plan whose class counts divide 64 is a function of that pair
    (see :func:`classes`), and a table codes its symbols in no fewer bits than their
    empirical entropy, so no such plan, nor one table for all, codes the symbols in
    fewer bits than this.
    """
    sc = scales_of(sym, None)
    fine = MAX_CLASSES
    hist = np.zeros((fine * fine, nsym), np.int64)
    _hist.context_hist(_native(sym), sc.classes(0, fine) * fine, sc.classes(1, fine), nsym, hist)
    return entropy_bits(hist)


def entropy_bits(hist: np.ndarray) -> float:
    """The empirical entropy in bits of the counts in each row of ``hist``, summed over the rows (in C)."""
    return _hist.entropy(np.ascontiguousarray(hist, dtype=np.int64))


@dataclass(frozen=True)
class ContextCounts:
    """What a plan is made from: the symbols counted by context for one pair of class counts.

    Attributes:
        rclass, cclass, nrc, ncc: the classes, as in :class:`RowColPlan`.
        hist: ``(nrc + ncc - 1, nsym)`` counts of the (sampled) array.
        weight: each count stands for this many.
        sign_fit, rows_fit, cols_fit: as in :class:`RowColPlan`.
        least_bits: no plan of these counts costs fewer bits (:func:`plan_counts`):
            the symbols' entropy given their contexts, the sign table, the class
            streams and a byte of map per context.
    """

    rclass: np.ndarray
    cclass: np.ndarray
    nrc: int
    ncc: int
    hist: np.ndarray
    weight: int
    sign_fit: order0.Order0Fit | None
    rows_fit: order0.Order0Fit | None
    cols_fit: order0.Order0Fit | None
    least_bits: float


# least_bits gives way by this share (and a bit) to the rounding of the sums that it is compared with.
_LEAST_SLACK = 1e-9


def context_counts(
    sym: np.ndarray, nsym: int, values: np.ndarray | None, nrc: int, ncc: int, weight: int = 1, scales: Scales | None = None
) -> ContextCounts:
    """The :class:`ContextCounts` of a plan (arguments as for :func:`plan`): one pass over ``sym``."""
    nctx = nrc + ncc - 1
    sc = scales if scales is not None else scales_of(sym, values)
    rclass, cclass = sc.classes(0, nrc), sc.classes(1, ncc)
    hist = np.zeros((nctx, nsym), np.int64)
    _hist.context_hist(_native(sym), rclass, cclass, nsym, hist)
    sign_fit = None
    least = weight * entropy_bits(hist)
    if values is not None:
        sign_fit = order0.fit(np.array([sc.neg, sc.nnz - sc.neg], np.int64) * weight)  # caller ensures nnz > 0
        least += sign_fit.total_bits
    rows_fit, cols_fit = _side_fit(rclass, nrc, weight), _side_fit(cclass, ncc, 1)
    for side in (rows_fit, cols_fit):
        if side is not None:
            least += rate.side_bits(side)
    least = (least + 8.0 * nctx) * (1.0 - _LEAST_SLACK) - 1.0
    return ContextCounts(rclass, cclass, nrc, ncc, hist, weight, sign_fit, rows_fit, cols_fit, least)


def plan_counts(c: ContextCounts) -> RowColPlan:
    """The plan of some :class:`ContextCounts`: contexts merged into tables, each table fitted, all costed."""
    table_of = merge_contexts(c.hist, c.weight)
    starts = np.flatnonzero(np.diff(table_of, prepend=-1))
    fits = []
    bits = 0.0
    for h in np.add.reduceat(c.hist, starts, axis=0) * c.weight:
        f = order0.fit(h)  # every table holds symbols (see merge_contexts)
        fits.append(f)
        bits += f.total_bits
    if c.sign_fit is not None:
        bits += c.sign_fit.total_bits
    for side in (c.rows_fit, c.cols_fit):
        if side is not None:
            bits += rate.side_bits(side)
    bits += 8.0 * int(varint.varint_sizes(table_of).sum())
    full = c.hist if c.weight == 1 else None
    return RowColPlan(c.rclass, c.cclass, c.nrc, c.ncc, table_of, fits, c.sign_fit, c.rows_fit, c.cols_fit, bits, full)


def plan(
    sym: np.ndarray, nsym: int, values: np.ndarray | None, nrc: int, ncc: int, weight: int = 1, scales: Scales | None = None
) -> RowColPlan:
    """Cost a rowcol stream for a 2-D array of symbol indices.

    Args:
        sym: ``(rows, cols)`` indices ``0..nsym-1`` coded by the context tables
            (magnitudes ``|values|`` when the sign is coded apart).
        nsym: alphabet size of ``sym``.
        values: the signed values when signs are coded apart, else None.
        nrc, ncc: number of row and column classes.
        weight: the rows stand for ``weight`` times as many (a sample of every
            ``weight``-th row): counts are scaled so that merges and the cost
            weigh tables against symbols as they would on all rows.
        scales: :func:`scales_of` the same arrays, when the caller plans them
            several times (the result is the same).
    """
    return plan_counts(context_counts(sym, nsym, values, nrc, ncc, weight, scales))


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
