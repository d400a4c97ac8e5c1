"""Choosing row and column class counts for the row/column context models (spec/CODING.md 11.4).

A row/column model (:mod:`ecnn.context.rowcol`) is planned for given class
counts; planning every class count on every row is slow, so the search ranks
the class counts on a sample of rows (counts weighted to stand for all rows)
and plans only the best few on every row (:func:`ranked_plan`). Lower efforts
plan a fixed list instead (:func:`fixed_plan`). Both serve the ``rowcol`` /
``ctx`` streams (:mod:`ecnn.select.stream`) and the ``blocks`` heads of
``fields`` (:func:`plan_blocks`).
"""

from __future__ import annotations

import numpy as np

from ecnn.coder import categorical
from ecnn.config import Effort
from ecnn.context import order0, rate
from ecnn.context import rowcol as rowcol_ctx

SEARCH_SYMBOLS = 1 << 17  # class counts are ranked on about this many symbols
FULL_PLANS = 3  # then the best few are planned on every row
# Class counts tried for rowcol and ctx streams.
ROWCOL_CLASSES = ((1, 8), (8, 1), (8, 8), (32, 8), (8, 32), (32, 32), (64, 64), (16, 4))
ROWCOL_PLAN_BINS = 1 << 22  # contexts^2 x nsym at most per plan (merging contexts into tables costs that)
# Class counts tried for the heads of fields (a blocks stream): at most 32 row
# classes, so that a chunk needs few decoder calls; 64 x 64 gained nothing on
# transformer weights.
HEAD_CLASSES = ((1, 1), (8, 1), (16, 1), (8, 8), (16, 4), (4, 16), (32, 8), (32, 32))


def affordable_classes(nsym: int) -> list[tuple[int, int]]:
    """The class counts of :data:`ROWCOL_CLASSES` whose table merging stays within
    :data:`ROWCOL_PLAN_BINS` (it costs contexts squared times ``nsym``): wide alphabets,
    such as a codebook's level indices, try fewer contexts. Never none."""
    ok = [(a, b) for a, b in ROWCOL_CLASSES if (a + b - 1) ** 2 * nsym <= ROWCOL_PLAN_BINS]
    return ok or [min(ROWCOL_CLASSES, key=lambda c: c[0] + c[1])]


def tables_can_pay(nsym: int, count: int) -> bool:
    """Whether a second table could save more than it costs: one stored table takes at
    least ``nsym / 2`` bytes (a nibble per count), and no split of the symbols saves more
    than their ``count * log2(nsym)`` bits. Planning tables of a wider alphabet (weights
    with nearly every value distinct) only costs time."""
    return 4 * nsym <= count * max(1.0, np.log2(nsym))


def ranked_plan(
    sym: np.ndarray, nsym: int, values: np.ndarray | None, classes, unique: bool = False
) -> rowcol_ctx.RowColPlan | None:
    """The cheapest plan of ``classes`` for a ``(rows, cols)`` array of indices, ranked on a sample first.

    Ranks the class counts (capped at the sample's rows and the columns) on every
    ``stride``-th row, ``stride`` chosen so that about :data:`SEARCH_SYMBOLS` symbols
    remain, then plans the best :data:`FULL_PLANS` on every row and keeps the
    cheapest (the first of equal ones). If the sample is every row, its best
    plan is the answer.

    Args:
        sym: indices ``0..nsym-1`` (magnitudes when ``values`` is given).
        nsym: alphabet size of ``sym``.
        values: the signed values when signs are coded apart, else None.
        classes: the class counts to try, in order (ties keep the earlier).
        unique: try each capped class count once, in increasing order.

    Returns:
        The :class:`ecnn.context.rowcol.RowColPlan`, or None if the sample's values are all 0.
    """
    cols = sym.shape[1]
    stride = max(1, sym.size // SEARCH_SYMBOLS)
    s_sym = sym[::stride]
    s_vals = values[::stride] if values is not None else None
    if s_vals is not None and not s_vals.any():
        return None
    s_scales = rowcol_ctx.scales_of(s_sym, s_vals)
    cands = [(min(a, s_sym.shape[0]), min(b, cols)) for a, b in classes]
    if unique:
        cands = sorted(set(cands))
    keep = 1 if stride == 1 else FULL_PLANS
    ranked = _best_plans([rowcol_ctx.context_counts(s_sym, nsym, s_vals, a, b, stride, s_scales) for a, b in cands], keep)
    if stride == 1:
        return ranked[0]  # the sample is every row: its plans are the plans
    full = rowcol_ctx.scales_of(sym, values)
    best = None
    for p in ranked:
        p = rowcol_ctx.plan(sym, nsym, values, p.nrc, p.ncc, scales=full)
        if best is None or p.bits < best.bits:  # the first of equal ones
            best = p
    return best


def _best_plans(counts: list, keep: int) -> list:
    """The ``keep`` cheapest plans of these context counts, cheapest first (ties in the order given).

    Planned in order of their least cost: once that exceeds the cost of the
    ``keep``-th cheapest plan so far, no later one can be among the cheapest,
    and none is planned (the result is the same as planning them all).
    """
    by_least = sorted(range(len(counts)), key=lambda i: counts[i].least_bits)
    done: list = []  # (bits, index, plan), cheapest first
    for i in by_least:
        if len(done) >= keep and counts[i].least_bits > done[keep - 1][0]:
            break
        p = rowcol_ctx.plan_counts(counts[i])
        done.append((p.bits, i, p))
        done.sort(key=lambda d: (d[0], d[1]))
    return [p for _, _, p in done[:keep]]


def fixed_plan(sym: np.ndarray, nsym: int, values: np.ndarray | None, classes):
    """The cheapest of ``classes`` (capped at the rows and columns), each planned on every row.

    The first of equal ones is kept.
    """
    rows, cols = sym.shape
    sc = rowcol_ctx.scales_of(sym, values)
    best = None
    for a, b in classes:
        p = rowcol_ctx.plan(sym, nsym, values, min(a, rows), min(b, cols), scales=sc)
        if best is None or p.bits < best.bits:
            best = p
    return best


def plan_blocks(
    sym: np.ndarray, nsym: int, chunk: int, effort: str | Effort = "best"
) -> tuple[rowcol_ctx.RowColPlan, float]:
    """Class counts for a ``blocks`` stream of a ``(rows, cols)`` array of indices ``0..nsym-1``.

    Searches :data:`HEAD_CLASSES`, or plans :attr:`ecnn.config.Effort.head_classes`
    where the effort names them. Returns the plan and its estimated size in bits
    (tables, classes, map, ideal code lengths, and the chunks of ``chunk`` symbols).
    """
    e = Effort.of(effort)
    rows, cols = sym.shape
    if e.head_classes is None:
        best = ranked_plan(sym, nsym, None, HEAD_CLASSES, unique=True)
    else:
        best = fixed_plan(sym, nsym, None, e.head_classes)
    k = categorical.num_chunks(rows, categorical.chunk_rows_for(rows, cols, chunk))
    return best, best.bits + rate.chunk_bits(k)


def plan_signs(values: np.ndarray, counts: tuple[int, ...]) -> rowcol_ctx.SignPlan:
    """The cheapest number of sign classes, of ``counts``, for a ``(rows, cols)`` array of signed values."""
    best = None
    nz = (values != 0).sum(axis=0)
    negative = (values < 0).sum(axis=0)
    positive = nz - negative
    for k in counts:
        if k > values.shape[1]:
            break
        cls = rowcol_ctx.column_sign_classes(nz, positive, k)
        neg = np.bincount(cls, weights=negative, minlength=k).astype(np.int64)
        tot = np.bincount(cls, weights=nz, minlength=k).astype(np.int64)
        fits, bits = [], 0.0
        for c in range(k):
            h = np.array([neg[c], tot[c] - neg[c]], np.int64)
            f = order0.fit(h if h.any() else np.array([1, 1], np.int64))
            fits.append(f)
            bits += f.total_bits
        side = None
        if k > 1:
            h = np.bincount(cls, minlength=k)
            if (h > 0).sum() < 2:
                continue
            side = order0.fit(h)
            bits += rate.side_bits(side) + 8.0
        if best is None or bits < best.bits:
            best = rowcol_ctx.SignPlan(k, cls, fits, side, bits)
    return best
