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
from typing import NamedTuple

import msgpack
import numpy as np

from ecnn import codec, dtypes, quantize, rate
from ecnn.budget.config import BudgetConfig
from ecnn.budget.rate_proxy import order0_parts, proxy_bytes
from ecnn.budget.rounding import Compensation, quantize_compensated, quantize_rdo
from ecnn.config import EncodeConfig
from ecnn.errors import InvalidOption

EXACT = EncodeConfig(lossless=True)  # how tensors kept exact are coded

SMALL = 1 << 12  # tensors of up to this many elements are rated with the codec's estimate at every candidate
ANCHOR_BITS = (0.5, 2.0, 5.0)  # bits a value at which larger tensors calibrate the proxy against the codec's estimate
COMPENSATE_CACHE = 3  # compensated symbol arrays kept per tensor (the search revisits a few candidates)
GRID_MULTIPLES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)  # candidate steps of a tensor already on a grid
GRID_LEVELS = 8  # grid_step: the smallest level of a grid tensor may be up to this many steps
PLAIN_ONLY_SAMPLE = 1 << 15  # without calibration, the row sample's size (of ``BudgetConfig.rate_sample`` at most)
PLAIN_ONLY_LEVELS = 10  # without calibration, the finest step of the ladder is absmax / 2**PLAIN_ONLY_LEVELS
PLAIN_BITS = tuple(range(2, 13))  # plain per-row grids (``pack --bits N``) among every tensor's candidates


class Cand(NamedTuple):
    """One candidate of a tensor.

    ``step`` is the tensor's float32 step; ``strength`` the rate-distortion
    rounding strength (0: to nearest); ``rows`` a step per row from the
    sensitivity (``BudgetConfig.rows``); ``compensated`` error-compensated
    rounding; ``bits`` > 0: exactly the per-row grid that ``pack --bits bits``
    writes for the tensor (``step`` its step, rows at the codec's own codes);
    ``exact``: stored bit-exact, as plain ``pack`` stores the tensors it does not
    quantize (``step`` 0).
    """

    step: float
    strength: float = 0.0
    rows: bool = False
    compensated: bool = False
    bits: int = 0
    exact: bool = False


@dataclass
class Tensor:
    """One allocated tensor: its array, sensitivity and (after :func:`measure`) its candidates."""

    name: str
    arr: np.ndarray  # storage array (a private copy for a module; never written)
    dt: dtypes.DType
    h: np.ndarray | float  # per-element or scalar sensitivity
    comp: Compensation | None = None  # error compensation of a linear layer's weight
    cands: list = None  # candidates (:class:`Cand`)
    codes: np.ndarray | None = None  # row step codes of the per-row candidates from the sensitivity
    plain: dict = field(default_factory=dict)  # bits -> row step codes of the plain grid (pack --bits)
    steps: np.ndarray = None  # their steps
    rates: np.ndarray = None  # estimated bytes
    dists: np.ndarray = None  # weighted squared error
    hull: list = None  # indices of the lower convex hull, by rate
    cache: dict = field(default_factory=dict)  # candidate -> whole-tensor symbols (compensated ones, the last few)
    plain_quantized: bool = True  # plain pack quantizes it (else it also gets an exact candidate)

    def row_codes(self, c: int) -> np.ndarray | None:
        """The row step codes of candidate ``c`` (None: one step for the tensor)."""
        cand = self.cands[c]
        if cand.bits:
            return self.plain.get(cand.bits)
        return self.codes if cand.rows else None

    def plain_index(self, bits: int) -> int | None:
        """The index of the plain ``--bits bits`` candidate (for a tensor plain pack keeps
        exact, the exact candidate), or None."""
        for i, c in enumerate(self.cands):
            if (c.bits == bits and self.plain_quantized) or (c.exact and not self.plain_quantized):
                return i
        return None


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


def measure(t: Tensor, cfg: BudgetConfig, plain_only: bool = False) -> None:
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

    Every tensor that plain ``pack`` quantizes gets the plain grids of ``pack
    --bits N`` (:data:`PLAIN_BITS` up to ``cfg.max_bits``); with ``plain_only``
    (no calibration data) every candidate rounds to nearest, the row sample holds
    at most :data:`PLAIN_ONLY_SAMPLE` elements, and the ladder of steps has two
    an octave (the plain grids, and a grid the tensor already lies
    on, stay).
    """
    x = quantize.to_float(t.arr, t.dt)
    absmax = float(np.max(np.abs(x))) if x.size else 0.0
    steps = _candidate_steps(absmax, cfg)
    grid = grid_step(t.arr, t.dt)
    if grid is not None:  # e.g. trained weights: their own step (no error) and coarser multiples of it
        multiples = np.float32(grid) * np.array(GRID_MULTIPLES, np.float32)
        steps = np.unique(np.concatenate([steps[steps > grid] if not plain_only else [], multiples[multiples <= 2 * absmax]]))[::-1]
    elif plain_only:  # a coarser ladder beside the plain grids: the proxy cannot tell finer choices apart
        steps = steps[:: max(1, cfg.steps_per_octave // 2)]
        steps = steps[steps >= absmax / 2.0**PLAIN_ONLY_LEVELS]  # finer: the plain grids up to max_bits
    limit = cfg.rate_sample if not plain_only else min(cfg.rate_sample, PLAIN_ONLY_SAMPLE)
    sample, scale = _rows_sample(t.arr, limit)
    idx = _sample_rows(t.arr, limit)
    xs = quantize.to_float(sample, t.dt).astype(np.float64)
    if isinstance(t.h, np.ndarray):
        hs, _ = _rows_sample(t.h.reshape(t.arr.shape), limit)
        hs = np.asarray(hs, np.float64)
    else:
        hs = np.full(sample.shape, float(t.h))
    small = sample.size <= SMALL
    t.codes = _row_codes(t.h.reshape(t.arr.shape), t.dt) if cfg.rows and isinstance(t.h, np.ndarray) else None
    codes_s = None if t.codes is None else (t.codes if idx is None else t.codes[idx])
    codes_bytes = 0.0 if t.codes is None else rate.estimate_bytes(t.codes) + 4.0
    comp = t.comp
    gain_s = None if comp is None else (comp.gain if idx is None else comp.gain[idx])
    schemes = [Cand(0.0, strength) for strength in (cfg.strengths if not plain_only else (0.0,))]
    schemes += [Cand(0.0, rows=True)] if t.codes is not None else []
    schemes += [Cand(0.0, compensated=True)] if comp is not None else []
    todo = [(float(s), sc) for s in steps for sc in schemes]
    if t.plain_quantized and t.arr.ndim >= 2:  # the grids of plain `pack --bits N`, exactly
        for bits in PLAIN_BITS:
            if bits > cfg.max_bits:
                break
            step = quantize.step_for_bits(t.arr, t.dt, bits)
            t.plain[bits] = quantize.row_codes(t.arr, t.dt, step)
            todo.append((step, Cand(step, bits=bits)))
    cands, o0_sample, o0_whole, syms, zero, dists = [], [], [], [], [], []
    for s, sc in todo:
        try:
            if sc.bits:
                cs = t.plain[sc.bits] if idx is None else t.plain[sc.bits][idx]
                q = quantize.quantize_rows(sample, t.dt, s, cs)
                xr = quantize.dequantize_rows(q.copy(), t.dt, s, cs)
            elif sc.rows:
                q = quantize.quantize_rows(sample, t.dt, s, codes_s)
                xr = quantize.dequantize_rows(q.copy(), t.dt, s, codes_s)
            elif sc.compensated:
                q = quantize_compensated(sample, t.dt, s, comp.u)
                xr = quantize.dequantize(q, t.dt, s)
            else:
                q = quantize_rdo(sample, t.dt, s, hs, sc.strength)
                xr = quantize.dequantize(q, t.dt, s)
        except InvalidOption:  # step too fine for the symbol range
            continue
        e = quantize.to_float(xr, t.dt).astype(np.float64) - xs
        if comp is None:
            dists.append(float(np.sum(hs * e**2)) * scale)
        else:  # the layer's output error, every candidate alike
            dists.append(float(np.sum(gain_s * np.einsum("ij,ij->i", e @ comp.hd, e))) * scale)
        cands.append(sc._replace(step=s))
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
        for scheme in {_scheme(c) for c in cands}:  # rate-distortion optimized symbols gain more from the contexts
            rn = [i for i in range(n) if not zero[i] and _scheme(cands[i]) == scheme]
            per_value = {i: 8 * o0_sample[i] / sample.size for i in rn}
            anchors += sorted({min(rn, key=lambda i: (abs(per_value[i] - b), i)) for b in ANCHOR_BITS} if rn else set())
    ratio = {}
    for i in anchors:
        q = syms[i]
        ratio[i] = rate.estimate_bytes(q.reshape(sample.shape) if sample.ndim else q) / o0_sample[i]
    logs = np.log2(np.array([c.step for c in cands], np.float64))
    plain_bytes = {b: rate.estimate_bytes(c) + 4.0 for b, c in t.plain.items()}
    rates = np.zeros(n)
    for i in range(n):
        if zero[i]:
            continue  # every symbol zero: a const stream, no payload
        r = ratio.get(i)
        if r is None:
            order = sorted((k for k in ratio if _scheme(cands[k]) == _scheme(cands[i])), key=lambda k: logs[k])
            r = float(np.interp(logs[i], logs[order], [ratio[k] for k in order])) if order else 1.0
        rates[i] = o0_whole[i] * r + (codes_bytes if cands[i].rows else plain_bytes.get(cands[i].bits, 0.0))
    if not t.plain_quantized:  # plain pack stores it exactly: so may the allocation
        rec, pay = codec.encode_tensor(t.name, t.arr, t.dt, EXACT)
        cands.append(Cand(0.0, exact=True))
        rates = np.append(rates, float(len(pay) + len(msgpack.packb(rec))))
        dists.append(0.0)
    t.cands = cands
    t.steps = np.array([c.step for c in cands], np.float32)
    t.rates, t.dists = rates, np.array(dists)
    t.hull = _lower_hull(t.rates, t.dists)


def measure_all(tensors: list[Tensor], cfg: BudgetConfig, plain_only: bool = False, report=None) -> None:
    """:func:`measure` every tensor, side by side on :func:`ecnn.chunkrun.workers` workers
    (the largest first); each worker hands back what it measured."""
    from ecnn import chunkrun

    def one(i: int) -> dict:
        t = tensors[i]
        measure(t, cfg, plain_only)
        return {
            "cands": [list(c) for c in t.cands],
            "rates": np.asarray(t.rates, np.float64).tobytes(),
            "dists": np.asarray(t.dists, np.float64).tobytes(),
            "codes": None if t.codes is None else np.asarray(t.codes, np.int64).tobytes(),
            "plain": [[b, np.asarray(c, np.int64).tobytes()] for b, c in t.plain.items()],
        }

    done = 0
    for i, m in chunkrun.imap_packed(len(tensors), one, [t.arr.size for t in tensors]):
        t = tensors[i]
        t.cands = [Cand(*c) for c in m["cands"]]
        t.steps = np.array([c.step for c in t.cands], np.float32)
        t.rates = np.frombuffer(m["rates"], np.float64).copy()
        t.dists = np.frombuffer(m["dists"], np.float64).copy()
        t.codes = None if m["codes"] is None else np.frombuffer(m["codes"], np.int64).copy()
        t.plain = {int(b): np.frombuffer(c, np.int64).copy() for b, c in m["plain"]}
        t.hull = _lower_hull(t.rates, t.dists)
        done += 1
        if report:
            report("candidates", done, len(tensors))


def _scheme(c: Cand) -> tuple:
    """A candidate's rounding, without its step (the proxy's correction is per rounding:
    one for every rounding to nearest, whether by row or by tensor)."""
    return (c.strength, c.compensated)


def symbols(t: Tensor, c: int) -> np.ndarray:
    """The symbols of candidate ``c`` for the whole tensor (not for an exact candidate)."""
    s, strength, _, compensated, _, exact = t.cands[c]
    if exact:
        raise InvalidOption(f"tensor {t.name!r}: an exact candidate has no symbols")
    codes = t.row_codes(c)
    if codes is not None:
        return quantize.quantize_rows(t.arr, t.dt, s, codes)
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

