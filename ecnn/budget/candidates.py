"""Per-tensor candidates: the steps and roundings tried for each tensor, with their rates and distortions.

:func:`measure` gives a :class:`Tensor` its candidates (step, rounding
strength, per-row steps, compensated), each with an estimated rate (the
proxy of :mod:`ecnn.budget.rate_proxy`, calibrated against the codec's own
estimate) and a sensitivity-weighted distortion, and the lower convex hull of
those points that the search walks. :func:`symbols` rounds the whole tensor as
a candidate says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ecnn import dtypes, quantize, rate
from ecnn.budget.config import BudgetConfig
from ecnn.budget.rate_proxy import order0_parts, proxy_bytes
from ecnn.budget.rounding import Compensation, quantize_compensated, quantize_rdo
from ecnn.errors import InvalidOption

SMALL = 1 << 12  # tensors of up to this many elements are rated with the codec's estimate at every candidate
ANCHOR_BITS = (0.5, 2.0, 5.0)  # bits a value at which larger tensors calibrate the proxy against the codec's estimate
COMPENSATE_CACHE = 3  # compensated symbol arrays kept per tensor (the search revisits a few candidates)
GRID_MULTIPLES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)  # candidate steps of a tensor already on a grid
GRID_LEVELS = 8  # grid_step: the smallest level of a grid tensor may be up to this many steps


@dataclass
class Tensor:
    """One allocated tensor: its array, sensitivity and (after :func:`measure`) its candidates."""

    name: str
    arr: np.ndarray  # storage array (a private copy)
    dt: dtypes.DType
    h: np.ndarray | float  # per-element or scalar sensitivity
    comp: Compensation | None = None  # error compensation of a linear layer's weight
    cands: list = None  # candidate (float32 step, strength, per-row, compensated) tuples
    codes: np.ndarray | None = None  # row step codes of the per-row candidates
    steps: np.ndarray = None  # their steps
    rates: np.ndarray = None  # estimated bytes
    dists: np.ndarray = None  # weighted squared error
    hull: list = None  # indices of the lower convex hull, by rate
    cache: dict = field(default_factory=dict)  # candidate -> whole-tensor symbols (compensated ones, the last few)


def _sample_rows(x: np.ndarray, limit: int) -> np.ndarray | None:
    """Indices of evenly spaced rows of ``x`` totalling about ``limit`` elements (None: all of it)."""
    if x.size <= limit or x.ndim == 0:
        return None
    rows = x.shape[0]
    per_row = x.size // max(rows, 1)
    take = max(1, min(rows, limit // max(per_row, 1)))
    if take >= rows:
        return None
    return np.unique(np.linspace(0, rows - 1, take).round().astype(np.int64))


def _rows_sample(x: np.ndarray, limit: int) -> tuple[np.ndarray, float]:
    """Evenly spaced rows of ``x`` totalling about ``limit`` elements, and the scale back to the whole."""
    idx = _sample_rows(x, limit)
    if idx is None:
        return x, 1.0
    return x[idx], x.size / (idx.size * (x.size // x.shape[0]))


def _row_codes(h: np.ndarray, dt: dtypes.DType) -> np.ndarray | None:
    """Row step codes (``uniform_rows``) from a matrix's sensitivity: row steps
    proportional to ``1 / sqrt(mean row sensitivity)``, the least sensitive 5%
    of rows at code 0 (the tensor's step). None when every row gets code 0."""
    if h.ndim < 2 or h.shape[0] < 2:
        return None
    hr = np.asarray(h, np.float64).reshape(h.shape[0], -1).mean(axis=1)
    pos = hr[hr > 0]
    if pos.size == 0:
        return None
    h_lo = float(np.quantile(pos, 0.05))
    want = 0.5 * np.log2(h_lo / np.maximum(hr, h_lo))  # log2 of the wanted step ratio, <= 0
    ladder = np.log2(quantize.row_steps(1.0, np.arange(quantize.MAX_ROW_CODE + 1), dt).astype(np.float64))
    codes = np.abs(ladder[None, :] - want[:, None]).argmin(axis=1).astype(np.int64)
    return codes if codes.any() else None


def _candidate_steps(absmax: float, cfg: BudgetConfig) -> np.ndarray:
    if absmax == 0.0 or not math.isfinite(absmax):
        return np.array([1.0], np.float32)
    spo = cfg.steps_per_octave
    ks = np.arange(-spo, spo * cfg.max_bits + 1)
    steps = (absmax / np.exp2(ks / spo)).astype(np.float32)
    steps = steps[np.isfinite(steps) & (steps > 0)]
    steps = np.unique(steps)[::-1]  # coarse to fine, float32 values as stored in the file
    return steps


def grid_step(arr: np.ndarray, dt: dtypes.DType) -> float | None:
    """The step of the uniform grid a tensor already lies on, or None.

    A tensor lies on the grid of step ``s`` when the codec's quantization at
    ``s`` reproduces it bit for bit, as for weights that ``ecnn.train.convert_``
    put on their learned grids, or that a file decoded. The smallest non-zero
    magnitude ``m`` is ``j * s`` for a small ``j`` (1 when the level ``±1``
    occurs); ``s`` is looked for among the float32 values nearest ``m / j``
    for ``j`` up to :data:`GRID_LEVELS`. Checked on a sample first, so other
    tensors cost little.
    """
    x = quantize.to_float(arr, dt)
    if x.size < 2 or dt.name not in ("float32", "float16", "bfloat16") or not np.isfinite(x).all():
        return None
    mag = np.abs(x[x != 0])
    if mag.size == 0:
        return None
    m = float(mag.min())
    probe = x.ravel()[:: max(1, x.size // 4096)].astype(np.float64)
    for j in range(1, GRID_LEVELS + 1):
        s0 = np.float32(m / j)
        r = probe / float(s0)
        if not s0 > 0 or np.max(np.abs(r - np.rint(r))) > 1e-3:
            continue
        for s in (s0, np.nextafter(s0, np.float32(0)), np.nextafter(s0, np.float32(np.inf))):
            try:
                q = quantize.quantize(arr, dt, float(s))
            except InvalidOption:
                return None
            if np.array_equal(quantize.dequantize(q, dt, float(s)), arr):
                return float(s)
    return None


def measure(t: Tensor, cfg: BudgetConfig) -> None:
    """Rates and weighted distortions of every candidate (step, strength) of a tensor.

    The search's rate is a cheap proxy for the codec's estimate: the order-0
    code length of the candidate's symbols on the row sample (scaled to the
    whole tensor) plus a table cost, times a per-tensor correction, the ratio of
    the codec's own estimate (:func:`ecnn.rate.estimate_bytes`, which includes
    the context models' gains) to the proxy on the same sample, measured at a
    few anchor steps (:data:`ANCHOR_BITS`) for each rounding (the contexts gain
    more on rate-distortion optimized symbols) and interpolated in log-step.
    Tensors of up to :data:`SMALL` elements get the codec's estimate at every
    candidate. The real size of a chosen allocation is always checked by coding.
    """
    x = quantize.to_float(t.arr, t.dt)
    absmax = float(np.max(np.abs(x))) if x.size else 0.0
    steps = _candidate_steps(absmax, cfg)
    grid = grid_step(t.arr, t.dt)
    if grid is not None:  # e.g. trained weights: their own step (no error) and coarser multiples of it
        multiples = np.float32(grid) * np.array(GRID_MULTIPLES, np.float32)
        steps = np.unique(np.concatenate([steps[steps > grid], multiples[multiples <= 2 * absmax]]))[::-1]
    sample, scale = _rows_sample(t.arr, cfg.rate_sample)
    idx = _sample_rows(t.arr, cfg.rate_sample)
    xs = quantize.to_float(sample, t.dt).astype(np.float64)
    if isinstance(t.h, np.ndarray):
        hs, _ = _rows_sample(t.h.reshape(t.arr.shape), cfg.rate_sample)
        hs = np.asarray(hs, np.float64)
    else:
        hs = np.full(sample.shape, float(t.h))
    small = sample.size <= SMALL
    t.codes = _row_codes(t.h.reshape(t.arr.shape), t.dt) if cfg.rows and isinstance(t.h, np.ndarray) else None
    codes_s = None if t.codes is None else (t.codes if idx is None else t.codes[idx])
    codes_bytes = 0.0 if t.codes is None else rate.estimate_bytes(t.codes) + 4.0
    comp = t.comp
    gain_s = None if comp is None else (comp.gain if idx is None else comp.gain[idx])
    schemes = [(strength, False, False) for strength in cfg.strengths]
    schemes += [(0.0, True, False)] if t.codes is not None else []
    schemes += [(0.0, False, True)] if comp is not None else []
    cands, o0_sample, o0_whole, syms, zero, dists = [], [], [], [], [], []
    for s in steps:
        s = float(s)
        for strength, per_row, compensated in schemes:
            try:
                if per_row:
                    q = quantize.quantize_rows(sample, t.dt, s, codes_s)
                    xr = quantize.dequantize_rows(q.copy(), t.dt, s, codes_s)
                elif compensated:
                    q = quantize_compensated(sample, t.dt, s, comp.u)
                    xr = quantize.dequantize(q, t.dt, s)
                else:
                    q = quantize_rdo(sample, t.dt, s, hs, strength)
                    xr = quantize.dequantize(q, t.dt, s)
            except InvalidOption:  # step too fine for the symbol range
                continue
            e = quantize.to_float(xr, t.dt).astype(np.float64) - xs
            if comp is None:
                dists.append(float(np.sum(hs * e**2)) * scale)
            else:  # the layer's output error, every candidate alike
                dists.append(float(np.sum(gain_s * np.einsum("ij,ij->i", e @ comp.hd, e))) * scale)
            cands.append((s, strength, per_row, compensated))
            bits, nsym = order0_parts(q)
            o0_sample.append(proxy_bytes(bits, nsym))
            o0_whole.append(proxy_bytes(bits, nsym, scale))
            syms.append(q)
            zero.append(not q.any())
    n = len(cands)
    # anchors: every candidate of a small tensor, else the round-to-nearest
    # candidates whose proxy is nearest to each of ANCHOR_BITS bits a value
    if small:
        anchors = [i for i in range(n) if not zero[i]]
    else:
        anchors = []
        for scheme in schemes:  # rate-distortion optimized symbols gain more from the contexts
            rn = [i for i in range(n) if not zero[i] and cands[i][1:] == scheme]
            per_value = {i: 8 * o0_sample[i] / sample.size for i in rn}
            anchors += sorted({min(rn, key=lambda i: (abs(per_value[i] - b), i)) for b in ANCHOR_BITS} if rn else set())
    ratio = {}
    for i in anchors:
        q = syms[i]
        ratio[i] = rate.estimate_bytes(q.reshape(sample.shape) if sample.ndim else q) / o0_sample[i]
    logs = np.log2(np.array([c[0] for c in cands], np.float64))
    rates = np.zeros(n)
    for i in range(n):
        if zero[i]:
            continue  # every symbol zero: a const stream, no payload
        r = ratio.get(i)
        if r is None:
            order = sorted((k for k in ratio if cands[k][1:] == cands[i][1:]), key=lambda k: logs[k])
            r = float(np.interp(logs[i], logs[order], [ratio[k] for k in order])) if order else 1.0
        rates[i] = o0_whole[i] * r + (codes_bytes if cands[i][2] else 0.0)
    t.cands = cands
    t.steps = np.array([c[0] for c in cands], np.float32)
    t.rates, t.dists = rates, np.array(dists)
    t.hull = _lower_hull(t.rates, t.dists)


def symbols(t: Tensor, c: int) -> np.ndarray:
    """The symbols of candidate ``c`` for the whole tensor."""
    s, strength, per_row, compensated = t.cands[c]
    if per_row:
        return quantize.quantize_rows(t.arr, t.dt, s, t.codes)
    if compensated:
        if c not in t.cache:
            while len(t.cache) >= COMPENSATE_CACHE:
                t.cache.pop(next(iter(t.cache)))
            t.cache[c] = quantize_compensated(t.arr, t.dt, s, t.comp.u)
        return t.cache[c]
    h = t.h if isinstance(t.h, np.ndarray) else np.full(t.arr.shape, float(t.h))
    return quantize_rdo(t.arr, t.dt, s, h.reshape(t.arr.shape), strength)


def _lower_hull(r: np.ndarray, d: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of points (r, d), by increasing rate and falling distortion."""
    order = sorted(range(len(r)), key=lambda i: (r[i], d[i], i))
    pts: list[int] = []
    for i in order:
        if pts and d[i] >= d[pts[-1]]:
            continue  # no less distortion for more rate
        while len(pts) >= 2:
            a, b = pts[-2], pts[-1]
            # b lies on or above the segment a-i: drop it
            if (d[b] - d[a]) * (r[i] - r[a]) >= (d[i] - d[a]) * (r[b] - r[a]):
                pts.pop()
            else:
                break
        pts.append(i)
    return pts

