"""Choosing the parameters of a ``lanes`` model (``ctx`` model 1, spec/CODING.md 5.6.2 and 11.4).

The model and its tables for given parameters are :mod:`ecnn.context.sparse`;
this module searches the parameters (orientation, step classes, neighbour
offsets, buckets, value contexts) on a sample of lanes and fits the winner on
every lane.
"""

from __future__ import annotations

import numpy as np

from ecnn.context import order0, rate, sparse, tables

# Step classes and neighbours are searched on about this many symbols.
SEARCH_SYMBOLS = 1 << 18
_CLASS_COUNTS = (1, 2, 4, 8)
# The encoder lets the lanes run along the shorter axis only when it has at most this many steps.
MAX_STEPS = 4096


def _neighbour_candidates(z: np.ndarray) -> list[int]:
    """Up to two neighbour offsets that tell most about significance, best first."""
    s = z.shape[1]
    cands = sorted({d for d in (1, 2, 3, 4, 5, 7, 9) if d < s} | {d for d in range(2, min(s, 257)) if s % d == 0 and d < s})
    n = z.size
    p = z.mean()
    if p <= 0 or p >= 1:
        return []
    zb = z.astype(bool)
    ones = int(np.count_nonzero(zb))
    tail = np.concatenate([[0], np.cumsum(np.count_nonzero(zb, axis=0)[::-1])])  # ones in the last d steps
    gains = []
    for d in cands:
        # Pairs (z[t - d], z[t]), with 0 before step d: counts of 00, 01, 10, 11.
        n11 = int(np.count_nonzero(zb[:, d:] & zb[:, : s - d]))
        n10 = ones - int(tail[d]) - n11
        n01 = ones - n11
        h = np.array([n - n01 - n10 - n11, n01, n10, n11], np.float64)
        cond = 0.0
        for a in (0, 1):
            m = h[2 * a] + h[2 * a + 1]
            for c in (h[2 * a], h[2 * a + 1]):
                if c > 0:
                    cond -= c * np.log2(c / m)
        h0 = -n * (p * np.log2(p) + (1 - p) * np.log2(1 - p))
        gains.append((h0 - cond, d))
    gains.sort(reverse=True)
    return [d for g, d in gains[:2] if g > 8.0 * 4]  # a flag must save more than its extra tables


def plan(values: np.ndarray, chunk: int, bound: float | None = None) -> sparse.LanePlan | None:
    """The cheapest ``lanes`` plan for a ``(rows, cols)`` array of integer symbols, or None.

    Tries both orientations, step-class counts, neighbour offsets, bucket counts
    and both value-context modes on a sample of lanes, then fits the winner on
    every lane; or returns None before that fit when the sample's estimate,
    scaled to every lane, is not below ``bound`` bits.
    """
    m = np.asarray(values, np.int64)
    if m.ndim != 2 or m.size == 0 or not (m == 0).any() or not (m != 0).any():
        return None
    nz = m[m != 0]
    vlo, vhi = int(nz.min()), int(nz.max())
    nval = sparse.nval_of(vlo, vhi)
    if nval > tables.MAX_NSYM:
        return None
    best = None
    for transpose in (False, True):
        v = m.T if transpose else m
        if v.shape[1] > MAX_STEPS and v.shape[1] > v.shape[0]:
            continue  # a decoder takes one step at a time: keep the steps few
        stride = max(1, v.size // SEARCH_SYMBOLS)
        sv = v[::stride]
        cand = _search(sv, transpose, vlo, vhi, nval)
        if cand is None:
            continue
        # Scale the sample's estimate to all lanes to rank the orientations.
        if best is None or cand[0] * stride < best[0] * best[1]:
            best = (cand[0], stride, transpose, cand[1])
    if best is None or (bound is not None and best[0] * best[1] >= bound):
        return None
    _, _, transpose, (nb, k, d1, d2, vsign) = best
    return sparse.fit(m, transpose, nb, k, d1, d2, vsign, chunk)


def _search(v: np.ndarray, transpose: bool, vlo: int, vhi: int, nval: int):
    """Best (bits, (nb, k, d1, d2, vsign)) on a sample ``v`` of lanes."""
    z = (v != 0).astype(np.int64)
    steps = z.shape[1]
    n1 = np.cumsum(z, axis=1) - z
    top = int(sparse.bitlen(np.array([2 * steps])).max())  # buckets above this never occur
    bfull = sparse.buckets(np.arange(steps)[None, :], n1, top + 1)
    z8, b8 = np.ascontiguousarray(z, np.uint8), np.ascontiguousarray(bfull, np.uint8)  # buckets <= top, below 2**8
    nbr = _neighbour_candidates(z)
    nsets = [()] + [tuple(nbr[:i]) for i in range(1, len(nbr) + 1)]
    best = None
    for k in _CLASS_COUNTS:
        if k > steps:
            break
        sc = sparse.step_classes(z, k)
        side = 0.0
        if k > 1:
            h = np.bincount(sc, minlength=k)
            if (h > 0).sum() < 2:
                continue
            side = rate.side_bits(order0.fit(h))
        sc64 = np.ascontiguousarray(sc, np.int64)
        for ds in nsets:
            # contexts x = (bucket * k + class), then 2x + z[t - d] for each neighbour d: counts of (x, z)
            nx = (top + 1) * k * (1 << len(ds))
            h01 = sparse.sig_hist(z8, b8, sc64, k, ds, 2 * nx).astype(np.float64).reshape(-1, 2)
            h1 = h01[:, 1].reshape(top + 1, -1)
            ht = (h01[:, 0] + h01[:, 1]).reshape(top + 1, -1)
            for nb in range(1, min(top + 1, sparse.MAX_BUCKETS) + 1):
                f1 = np.concatenate([h1[: nb - 1], h1[nb - 1 :].sum(axis=0, keepdims=True)])
                ft = np.concatenate([ht[: nb - 1], ht[nb - 1 :].sum(axis=0, keepdims=True)])
                _, sig_bits = sparse.fit_sig_bytes((ft - f1).ravel(), f1.ravel())
                bits = side + sig_bits + 8.0 * f1.size
                d1 = ds[0] if ds else 0
                d2 = ds[1] if len(ds) > 1 else 0
                if best is None or bits < best[0]:
                    best = (bits, (nb, k, d1, d2))
    if best is None:
        return None
    sel = v != 0
    idx = sparse.value_index(v[sel], vlo)
    vbits = {}
    for vsign in (False, True):
        ctx = sparse.prev_sign(v)[sel] if vsign else None
        vbits[vsign] = sparse.value_tables(idx, ctx, nval)[1]
    vsign = vbits[True] < vbits[False]
    nb, k, d1, d2 = best[1]
    return best[0] + vbits[vsign], (nb, k, d1, d2, vsign)
