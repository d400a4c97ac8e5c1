"""Compress to a budget: rate-distortion allocation of quantization steps across tensors.

:func:`compress` chooses one quantization step per tensor so that the file
meets a size target (``target_bytes``) or, given an evaluation function, is
the smallest file whose metric stays within ``max_metric_drop`` of the float
model's. The steps go into the file through ``EncodeConfig.steps`` (the
``uniform`` representation, spec/CODING.md), so nothing here changes the format.

How the steps are chosen (Lagrangian rate-distortion optimization):

1. Every float tensor with at least ``BudgetConfig.min_ndim`` dimensions gets
   candidate steps on a geometric grid, ``absmax / L`` with ``L = 2**(k / steps_per_octave)``
   from ``L = 1/2`` (every symbol is zero) to ``L = 2**max_bits``. A tensor
   that already lies on a uniform grid (weights trained with ``ecnn.train``
   and converted, or decoded from a file; :func:`grid_step`) also gets that
   grid's own step, which keeps it exactly, and multiples of it
   (:data:`GRID_MULTIPLES`) in place of the finer geometric steps.
2. For each candidate the tensor (or, for large tensors, an evenly spaced
   sample of its rows) is quantized exactly as the codec does it; its rate is
   a cheap proxy, the order-0 code length of the symbols plus table costs,
   calibrated per tensor and rounding against the codec's own size estimate
   (:func:`ecnn.rate.estimate_bytes`) at a few anchor steps, and its
   distortion is the squared error weighted by the tensor's
   sensitivity: ``sum_j h_j (w_j - Q(w_j))**2``. ``h`` is the diagonal of the
   Gauss-Newton matrix of the output error on a calibration batch (estimated
   with random output probes), the diagonal of the Fisher information when the
   output is a batch of logits, or 1 without calibration data.
   With a module and calibration data, the weight of each ``nn.Linear`` also
   gets error-compensated candidates (:func:`quantize_compensated`: each
   column's rounding error is pushed onto the columns not yet rounded, as in
   OPTQ/GPTQ), and all of that tensor's candidates are measured by the layer's
   output error, ``sum_i g_i e_i H e_i^T`` with ``H`` the second moment of
   the layer's inputs on the batch and ``g_i`` the row's sensitivity per unit
   of input energy. The table of each ``nn.Embedding`` is compensated along
   its rows the same way, ``H`` then being the second moment of the
   gradients of the looked-up rows' outputs (summed per row), so that a row's
   error is pushed into directions the layers after the table are blind to.
3. For a Lagrange multiplier ``lam`` each tensor takes the candidate
   minimizing ``D + lam * R``. Sweeping ``lam`` from infinity to 0 moves one
   tensor at a time one point along the lower convex hull of its (rate,
   distortion) candidates, the one with the most distortion removed per byte:
   a path of allocations whose size grows and whose distortion falls
   monotonically. ``target_bytes`` picks the largest allocation on the path
   whose real file (tensors coded one by one, header included) fits, found by
   coding a few allocations that the corrected rates predict to fit;
   ``max_metric_drop`` bisects the path with the caller's ``evaluate``.

Everything is deterministic: fixed probe seeds, ties broken by tensor order.
Importing this module imports neither torch nor matplotlib.

Example:
    >>> import torch, ecnn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    >>> res = ecnn.compress(model, target_bytes=3000, calibration=torch.randn(64, 32))
    >>> res.size <= 3000
    True
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ecnn import codec, dtypes, quantize, rate
from ecnn.config import EncodeConfig
from ecnn.errors import BudgetTooSmall, InvalidOption, MetricNotReached

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)
METADATA_KEY = "ecnn.budget"  # JSON summary of the allocation, read by `ecnn report`
SENSITIVITIES = ("auto", "output", "fisher", "weights")
SUMMARY_CHARS = 1024  # the summary is thinned to fit; sizes are computed with this much room
SUMMARY_SHARE = 0.01  # ... or less: at most this share of the target (or largest) file, so small files pay little
SUMMARY_MIN = 256  # ... but room for the summary's plain fields
TABLE_BITS = 12.0  # the rate proxy's cost of one distinct symbol in a tensor's tables
SMALL = 1 << 12  # tensors of up to this many elements are rated with the codec's estimate at every candidate
ANCHOR_BITS = (0.5, 2.0, 5.0)
FIT_PROBES = 24  # at most this many allocations are coded to fit one size target
COMPENSATE_BLOCK = 128  # columns per block of the compensated rounding's lazy updates
COMPENSATE_CACHE = 3  # compensated symbol arrays kept per tensor (the search revisits a few candidates)
COMPENSATE_MIN_ROWS = 2  # input rows (e.g. tokens) per input feature that compensation needs
COMPENSATE_MAX_IN = 8192  # layers with more inputs are not compensated (the moments are in**2 float64s)
FIT_RTOL = 1e-3  # a size search stops when fitting and failing allocations are this close in estimated rate  # bits a value at which larger tensors calibrate the proxy against the codec's estimate


@dataclass(frozen=True)
class BudgetConfig:
    """How :func:`compress` searches. None of these fields shapes the bitstream
    directly; they change which steps are chosen (and so the file).

    Attributes:
        steps_per_octave: candidate steps per factor of two.
        max_bits: the finest candidate step is ``absmax / 2**max_bits``.
        min_ndim: float tensors with fewer dimensions are stored exactly; with
            1 (the default) biases and norms are allocated too.
        exact: glob patterns of tensor names to keep bit-exact.
        sensitivity: ``"output"`` (Gauss-Newton diagonal of the mean squared
            output error on the calibration batch), ``"fisher"`` (Fisher
            diagonal, the output's last dimension being logits), ``"weights"``
            (plain squared weight error), or ``"auto"`` (``"output"`` with
            calibration data, else ``"weights"``).
        probes: random output probes (backward passes) for the sensitivity.
        floor: a tensor's mean sensitivity is raised to at least ``floor``
            times the median over tensors, so that a tensor the calibration
            batch does not exercise is not zeroed. Within a matrix, rows the
            batch does not reach share an embedding table's sensitivity evenly
            with the rows it reaches (tokens absent from the batch); so do a
            matrix's when at least half its rows are unreached.
        rate_sample: tensors with more elements are rated (and their distortion
            measured) on evenly spaced rows totalling about this many elements,
            scaled up; the real file size is always checked by coding. On
            all-MiniLM-L6-v2 the search's rate of a chosen step is within 2.5%
            of the coded size from 1 bit a weight up, and their sums within
            0.4% (bench/RESULTS.md).
        rtol: ``max_metric_drop`` search stops when the largest failing and the
            smallest passing allocation differ by less than this fraction of size.
        strengths: rate-distortion optimized quantization strengths tried at
            each step (0: round to nearest; see :func:`quantize_rdo`).
        rows: also try, for matrices whose sensitivity varies between rows, a
            step per row (the ``uniform_rows`` representation): rows get steps
            finer than the tensor's in proportion to ``1 / sqrt(mean row
            sensitivity)`` (the high-rate optimum), the least sensitive 5% of
            rows keeping the tensor's step; the allocation picks it where the
            predicted distortion falls. Rounds to nearest. Off by default: on
            the MNIST CNN it was never picked, and on all-MiniLM-L6-v2 it was
            picked for about 30 matrices and lowered the real metric (minimum
            embedding cosine 0.980 instead of 0.985 at 10 MB, 0.989 instead of
            0.993 at 12 MB).
        compensate: for ``nn.Linear`` weights of a module with calibration
            data, also try error-compensated rounding (:func:`quantize_compensated`,
            the OPTQ/GPTQ column update) at every step, with the layer's input
            second moments on the calibration batch; tensors taking it are
            rated and their distortion measured with those moments. The tables
            of ``nn.Embedding`` layers get it along their rows, with the
            second moments of the probes' output gradients summed per looked-up
            row (:func:`_add_embedding_grams`); on all-MiniLM-L6-v2 the word
            table rounded so at a step of 0.0195 (3.56 bits a value) gave
            0.74x the sentence-embedding error of rounding to nearest, at the
            same rate, on sentences outside the calibration batch. Weights
            that more than one module holds (tied weights) are not
            compensated. Layers with more than :data:`COMPENSATE_MAX_IN`
            inputs (table columns), or whose calibration batch has fewer than
            :data:`COMPENSATE_MIN_ROWS` input rows (samples, or tokens for a
            sequence model; for a table, looked-up rows times probes) per
            input, are not compensated: on
            all-MiniLM-L6-v2, 16 calibration sentences (about 240 token rows
            for 384 and 1536 inputs) gave no consistent gain; with 272 the
            mean cosine rose at 10-12 MB (bench/RESULTS.md).
        damp: the compensation's ridge: the input second-moment matrix gets
            ``damp`` times its mean diagonal added to its diagonal.
        seed: seed of the random probes.
    """

    steps_per_octave: int = 4
    max_bits: int = 12
    min_ndim: int = 1
    exact: tuple[str, ...] = ()
    sensitivity: str = "auto"
    probes: int = 16
    floor: float = 1e-3
    rate_sample: int = 1 << 16
    strengths: tuple[float, ...] = (0.0, 0.12)
    rtol: float = 0.01
    seed: int = 0
    rows: bool = False
    compensate: bool = True
    damp: float = 0.01
    version: int = field(default=1, repr=False)

    def __post_init__(self):
        if isinstance(self.exact, str):
            object.__setattr__(self, "exact", (self.exact,))
        if type(self.steps_per_octave) is not int or not 1 <= self.steps_per_octave <= 16:
            raise InvalidOption(f"steps_per_octave must be an integer in [1, 16], got {self.steps_per_octave!r}")
        if type(self.max_bits) is not int or not 1 <= self.max_bits <= 20:
            raise InvalidOption(f"max_bits must be an integer in [1, 20], got {self.max_bits!r}")
        if self.sensitivity not in SENSITIVITIES:
            raise InvalidOption(f"sensitivity must be one of {SENSITIVITIES}, got {self.sensitivity!r}")
        if type(self.probes) is not int or self.probes < 1:
            raise InvalidOption(f"probes must be a positive integer, got {self.probes!r}")
        if not 0 <= self.floor < 1:
            raise InvalidOption(f"floor must be in [0, 1), got {self.floor!r}")
        if self.rate_sample < 4096:
            raise InvalidOption(f"rate_sample must be at least 4096, got {self.rate_sample!r}")
        object.__setattr__(self, "strengths", tuple(float(v) for v in self.strengths))
        if not self.strengths or any(not 0 <= v < 10 for v in self.strengths):
            raise InvalidOption(f"strengths must be numbers in [0, 10), got {self.strengths!r}")
        if not 0 < self.damp < 1e3:
            raise InvalidOption(f"damp must be in (0, 1000), got {self.damp!r}")
        if not 0 < self.rtol < 1:
            raise InvalidOption(f"rtol must be in (0, 1), got {self.rtol!r}")


@dataclass(frozen=True)
class SweepPoint:
    """One evaluated allocation: its file size, predicted distortion and metric (None if not evaluated)."""

    size: int
    distortion: float
    metric: float | None


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress` made.

    Attributes:
        data: the file's bytes.
        size: ``len(data)``; with ``path`` given, the bytes written there.
        steps: the chosen step of each allocated tensor.
        metric: the evaluated metric of the file's weights (None without ``evaluate``).
        base_metric: the metric of the original weights (None without ``evaluate``).
        distortion: the allocation's predicted distortion (sum over tensors).
        sweep: the allocations evaluated or coded during the search, by size.
        tensors: per allocated tensor: ``{"name", "numel", "step", "strength", "rows",
            "compensated", "bytes", "estimate", "sensitivity"}`` (``rows``: a step
            per row, ``step`` being the tensor's; ``compensated``: rounded by
            :func:`quantize_compensated`); ``bytes`` is the coded payload,
            ``estimate`` the search's rate for it.
    """

    data: bytes
    size: int
    steps: dict[str, float]
    metric: float | None
    base_metric: float | None
    distortion: float
    sweep: tuple[SweepPoint, ...]
    tensors: tuple[dict, ...]

    @property
    def drop(self) -> float | None:
        """``base_metric - metric``, or None."""
        return None if self.metric is None or self.base_metric is None else self.base_metric - self.metric


# --- per-tensor candidates -------------------------------------------------------


@dataclass
class _Tensor:
    name: str
    arr: np.ndarray  # storage array (a private copy)
    dt: dtypes.DType
    h: np.ndarray | float  # per-element or scalar sensitivity
    comp: _Compensation | None = None  # error compensation of a linear layer's weight
    cands: list = None  # candidate (float32 step, strength, per-row, compensated) tuples
    codes: np.ndarray | None = None  # row step codes of the per-row candidates
    steps: np.ndarray = None  # their steps
    rates: np.ndarray = None  # estimated bytes
    dists: np.ndarray = None  # weighted squared error
    hull: list = None  # indices of the lower convex hull, by rate
    cache: dict = field(default_factory=dict)  # candidate -> whole-tensor symbols (compensated ones, the last few)


@dataclass
class _Compensation:
    """What error-compensated rounding of one ``(out, in)`` weight needs.

    ``hd`` is the damped second-moment matrix of the layer's inputs, ``u`` the
    upper Cholesky factor of its inverse, and ``gain`` the per-row factor that
    maps the layer's output error ``e hd e^T`` to the model's: the row's
    sensitivity total over ``trace(hd)``, so that for independent errors the
    distortion equals the diagonal one, ``sum_j h_j e_j**2``.
    """

    hd: np.ndarray
    u: np.ndarray
    gain: np.ndarray
    shrink: float  # weight of the diagonal in hd (0: the batch's moments as measured)


def _compensation(gram: np.ndarray, gram2: np.ndarray, count: int, h: np.ndarray, damp: float) -> _Compensation | None:
    """The compensation of a weight from its layer's input moments (None when
    degenerate, or from fewer than :data:`COMPENSATE_MIN_ROWS` input rows per input).

    The second-moment matrix ``S = gram / count`` is shrunk toward its diagonal,
    ``S_ij (1 - a)`` off the diagonal, with the weight ``a`` of Schafer and
    Strimmer (2005) on the scale of correlations: the summed estimation
    variance of the off-diagonal correlations (from ``gram2``, the sums of
    squared products) over their summed squares.
    A small calibration batch, whose ``S`` is rank-deficient, so gets little
    compensation instead of an error pushed into directions the batch never
    saw, and an error measured as free there.
    """
    if count < COMPENSATE_MIN_ROWS * gram.shape[0] or h.ndim != 2 or gram.shape != (h.shape[1], h.shape[1]) or gram2.shape != gram.shape:
        return None
    hd = gram / count
    mean = float(np.mean(np.diag(hd)))
    if not mean > 0 or not np.isfinite(hd).all() or not np.isfinite(gram2).all():
        return None
    diag = np.diag(hd)
    inv = np.divide(1.0, diag, out=np.zeros_like(diag), where=diag > 0)  # inputs that are always zero drop out
    norm = np.outer(inv, inv)  # on the scale of correlations, so that no input dominates
    var = np.maximum(gram2 / count - hd * hd, 0.0) / count * norm
    off = ~np.eye(hd.shape[0], dtype=bool)
    sq = float(np.sum((hd * hd * norm)[off]))
    shrink = min(1.0, float(np.sum(var[off])) / sq) if sq > 0 else 1.0
    hd = np.where(off, hd * (1.0 - shrink), hd)
    hd = hd + damp * mean * np.eye(hd.shape[0])
    try:
        u = np.linalg.cholesky(np.linalg.inv(hd)).T
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(u).all():
        return None
    gain = np.asarray(h, np.float64).sum(axis=1) / float(np.trace(hd))
    return _Compensation(hd, u, gain, shrink)


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


GRID_MULTIPLES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)  # candidate steps of a tensor already on a grid
GRID_LEVELS = 8  # grid_step: the smallest level of a grid tensor may be up to this many steps


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


def _order0_parts(q: np.ndarray) -> tuple[float, int]:
    """Order-0 code length of symbols in bits, and the number of distinct symbols (the cheap rate proxy)."""
    v = q.ravel().astype(np.int64)
    lo = int(v.min())
    counts = np.bincount(v - lo)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / v.size)).sum()), int(counts.size)


def quantize_rdo(arr: np.ndarray, dt: dtypes.DType, step: float, h, strength: float) -> np.ndarray:
    """Symbols of a tensor for ``step``; with ``strength > 0``, rate-distortion optimized.

    Each symbol may move one level toward zero when that lowers
    ``h_j (x_j - q s)**2 + strength * mean(h) * s**2 * L(q)``, ``L`` being the
    order-0 code length in bits (two passes). ``strength`` ~ ln(2) / 6 is the
    slope of an entropy-coded uniform quantizer at high rate. The symbols are
    what the codec computes from the dequantized values (checked), so they go
    into a file through ``EncodeConfig.steps`` unchanged.
    """
    q = quantize.quantize(arr, dt, step)
    if strength <= 0 or dt.name not in ("float32", "float64") or not q.any():
        return q
    x = quantize.to_float(arr, dt).astype(np.float64)
    h = np.asarray(h, np.float64)
    lam = strength * float(h.mean()) * step * step
    nz = q != 0
    for _ in range(2):
        v = q.ravel().astype(np.int64)
        lo = int(v.min()) - 1
        counts = np.bincount(v - lo, minlength=int(v.max()) - lo + 2).astype(np.float64)
        bits = np.log2(v.size) - np.log2(np.maximum(counts, 0.5))  # unseen symbols: ~log2(2n)
        alt = q - np.sign(q)
        d_q = h * (x - q * step) ** 2
        d_alt = h * (x - alt * step) ** 2
        better = nz & (d_alt + lam * bits[alt.astype(np.int64) - lo] < d_q + lam * bits[q.astype(np.int64) - lo])
        if not better.any():
            break
        q = np.where(better, alt, q).astype(np.int32)
        nz = q != 0
    back = quantize.quantize(quantize.dequantize(q, dt, step), dt, step)
    return q if np.array_equal(back, q) else quantize.quantize(arr, dt, step)


def quantize_compensated(arr: np.ndarray, dt: dtypes.DType, step: float, u: np.ndarray) -> np.ndarray:
    """Symbols of an ``(out, in)`` weight for ``step``, rounded with error compensation.

    The columns are rounded one at a time, and each column's rounding error is
    pushed onto the columns not yet rounded so as to minimize the layer's
    output error ``e H e^T`` per row, ``H`` being the second moment of the
    layer's inputs (the OPTQ/GPTQ update of Frantar et al., 2023, with the
    fixed grid of ``step``); ``u`` is the upper Cholesky factor of ``H^-1``.
    The symbols differ from round-to-nearest's where that lowers the output
    error, which falls most where the inputs are correlated. The symbols are
    what the codec computes from the dequantized values (checked, as for
    :func:`quantize_rdo`), so they go into a file through ``EncodeConfig.steps``.
    Storage types other than float32/float64 round to nearest.

    Raises:
        InvalidOption: if the step is too small for the tensor.
    """
    if dt.name not in ("float32", "float64") or arr.ndim != 2 or u.shape != (arr.shape[1], arr.shape[1]):
        return quantize.quantize(arr, dt, step)
    s = float(np.float32(step))
    w = quantize.to_float(arr, dt).astype(np.float64)  # a copy, updated in place
    n = w.shape[1]
    q = np.empty(w.shape, np.float64)
    for b0 in range(0, n, COMPENSATE_BLOCK):
        b1 = min(b0 + COMPENSATE_BLOCK, n)
        err = np.empty((w.shape[0], b1 - b0))
        for j in range(b0, b1):
            qj = np.rint(w[:, j] / s)
            q[:, j] = qj
            e = (w[:, j] - qj * s) / u[j, j]
            err[:, j - b0] = e
            if j + 1 < b1:
                w[:, j + 1 : b1] -= np.outer(e, u[j, j + 1 : b1])
        if b1 < n:
            w[:, b1:] -= err @ u[b0:b1, b1:]
    qmax = quantize.QMAX_FLOAT64 if dt.name == "float64" else quantize.QMAX_FLOAT32
    if q.size and np.max(np.abs(q)) > qmax:
        raise InvalidOption(f"step {step} is too small for this tensor (|symbol| > {qmax})")
    q = q.astype(np.int32)
    back = quantize.quantize(quantize.dequantize(q, dt, step), dt, step)
    return q if np.array_equal(back, q) else quantize.quantize(arr, dt, step)


def _measure(t: _Tensor, cfg: BudgetConfig) -> None:
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
            bits, nsym = _order0_parts(q)
            o0_sample.append((bits + TABLE_BITS * nsym) / 8 + 1.0)
            o0_whole.append((bits * scale + TABLE_BITS * nsym) / 8 + 1.0)
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


def _symbols(t: _Tensor, c: int) -> np.ndarray:
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


def _path(tensors: list[_Tensor]) -> list[tuple[int, int]]:
    """The Lagrangian sweep: moves ``(tensor index, hull position)`` from the smallest allocation up.

    Each move advances one tensor to its next hull point, the one removing the
    most distortion per byte; allocations along the path grow in rate and fall
    in distortion.
    """
    import heapq

    heap = []

    def push(i: int, pos: int) -> None:
        hull = tensors[i].hull
        if pos + 1 < len(hull):
            a, b = hull[pos], hull[pos + 1]
            dr = tensors[i].rates[b] - tensors[i].rates[a]
            dd = tensors[i].dists[a] - tensors[i].dists[b]
            slope = dd / dr if dr > 0 else math.inf
            heapq.heappush(heap, (-slope, i, pos + 1))

    for i in range(len(tensors)):
        push(i, 0)
    moves = []
    while heap:
        _, i, pos = heapq.heappop(heap)
        moves.append((i, pos))
        push(i, pos)
    return moves


# --- sensitivity -----------------------------------------------------------------


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "last_hidden_state" in out:
            return out["last_hidden_state"]
        if "logits" in out:
            return out["logits"]
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for v in out:
            if isinstance(v, torch.Tensor):
                return v
    raise InvalidOption("the calibration output must be a tensor, or hold one (tuple, dict, ModelOutput)")


def _forward(target, calibration):
    """The calibration output for ``target`` (a module or a state dict)."""
    if callable(calibration) and not _is_tensorlike(calibration):
        return _first_tensor(calibration(target))
    if isinstance(calibration, Mapping):
        return _first_tensor(target(**calibration))
    if isinstance(calibration, (tuple, list)):
        return _first_tensor(target(*calibration))
    return _first_tensor(target(calibration))


def _is_tensorlike(x) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def _compensable(obj, leaves: Mapping, kind):
    """``(weight name, module)`` of each module of type ``kind`` whose weight is
    in ``leaves``, has at most :data:`COMPENSATE_MAX_IN` columns and is held
    by no other module (tied weights: one module's inputs are not the whole
    story), once each."""
    seen: dict[int, int] = {}
    for mod in obj.modules():
        for p in mod.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    done = set()
    for prefix, mod in obj.named_modules(remove_duplicate=False):
        name = f"{prefix}.weight" if prefix else "weight"
        if not isinstance(mod, kind) or name not in leaves or name in done or seen[id(mod.weight)] > 1:
            continue
        if mod.weight.ndim != 2 or mod.weight.shape[1] > COMPENSATE_MAX_IN:
            continue
        done.add(name)
        yield name, mod


def _input_grams(obj, leaves: Mapping, cfg: BudgetConfig) -> tuple[dict, list]:
    """Forward hooks summing ``x^T x`` and ``(x*x)^T (x*x)`` over the input rows
    ``x`` of each ``nn.Linear`` whose weight is in ``leaves`` (``{weight name:
    [gram, gram of squares, rows]}``), and the hook handles."""
    import torch

    grams: dict = {}
    handles = []
    if not cfg.compensate or not isinstance(obj, torch.nn.Module):
        return grams, handles
    for name, mod in _compensable(obj, leaves, torch.nn.Linear):

        def hook(module, inputs, output, name=name):
            _add_moments(grams, name, inputs[0].detach().reshape(-1, module.in_features).double())

        handles.append(mod.register_forward_hook(hook))
    return grams, handles


def _add_moments(grams: dict, name: str, rows) -> None:
    """Add ``rows`` (a float64 torch matrix) to the moments ``grams[name]``:
    ``[sum of x^T x, sum of (x*x)^T (x*x), number of rows]``."""
    import torch

    d = rows.shape[1]
    acc = grams.setdefault(name, [torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 0])
    acc[0] += rows.T @ rows
    r2 = rows * rows
    acc[1] += r2.T @ r2
    acc[2] += rows.shape[0]


def _embedding_calls(obj, leaves: Mapping, cfg: BudgetConfig) -> tuple[dict, list]:
    """Forward hooks recording the indices and outputs of each ``nn.Embedding``
    whose weight is in ``leaves`` (``{weight name: [(indices, output), ...]}``),
    and the hook handles. The probes' gradients of those outputs give the
    tables' output-side moments (:func:`_add_embedding_grams`)."""
    import torch

    calls: dict = {}
    handles = []
    if not cfg.compensate or not isinstance(obj, torch.nn.Module):
        return calls, handles
    for name, mod in _compensable(obj, leaves, torch.nn.Embedding):
        rec = calls[name] = []

        def hook(module, inputs, output, rec=rec):
            rec.append((inputs[0].detach().reshape(-1), output))

        handles.append(mod.register_forward_hook(hook))
    return calls, handles


def _add_embedding_grams(grams: dict, name: str, ids, grads) -> None:
    """Add one probe's gradients of an embedding table's outputs to its moments.

    An error ``e_r`` in row ``r`` of the table changes the probe's loss by
    ``e_r . s_r``, ``s_r`` being the sum of the output gradients over the
    positions that look up row ``r``; so ``sum_r s_r^T s_r`` over rows and
    probes is the second moment, over the rows, that weighs the rows' errors,
    whose diagonal is the table's sensitivity ``h`` summed over rows. The table's
    rows play the part of a linear layer's input rows: the compensated
    rounding pushes a row's rounding error onto its not yet rounded entries.
    """
    import torch

    dim = grads[0].shape[-1]
    ids = torch.cat(ids)
    g = torch.cat([x.reshape(-1, dim) for x in grads]).double()
    uniq, inv = torch.unique(ids, return_inverse=True)
    rows = torch.zeros(uniq.numel(), dim, dtype=torch.float64).index_add_(0, inv, g)
    _add_moments(grams, name, rows[rows.abs().sum(1) > 0])


def _sensitivities(obj, names: list[str], calibration, cfg: BudgetConfig, progress) -> tuple[dict[str, np.ndarray], dict]:
    """Per-element sensitivity ``h`` of each named tensor (see the module docstring),
    and for the weights of ``nn.Linear`` layers (``cfg.compensate``) the Gram
    matrix of their calibration inputs and its row count (for the tables of
    ``nn.Embedding`` layers, that of their output gradients per looked-up row).

    Tensors the output does not depend on through autograd (buffers) are absent
    from the result.
    """
    import torch

    mode = cfg.sensitivity
    is_module = isinstance(obj, torch.nn.Module)
    if is_module:
        params = dict(obj.named_parameters(remove_duplicate=False))
        leaves = {n: params[n] for n in names if n in params and params[n].is_floating_point()}
        target = obj
        saved = {n: p.requires_grad for n, p in leaves.items()}
        for p in leaves.values():
            p.requires_grad_(True)
    else:
        if not callable(calibration) or _is_tensorlike(calibration):
            raise InvalidOption("with a state dict, calibration must be a callable taking the state dict and returning the output")
        leaves = {n: obj[n].detach().clone().requires_grad_(True) for n in names if obj[n].is_floating_point()}
        target = {**obj, **leaves}
        saved = None
    acc = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in leaves.items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    was_training = obj.training if is_module else None
    grams, handles = _input_grams(obj, leaves, cfg)
    calls, more = _embedding_calls(obj, leaves, cfg)
    handles += more
    try:
        if is_module:
            obj.eval()
        try:
            out = _forward(target, calibration).float()
        finally:
            for hd in handles:
                hd.remove()
        outs = [(n, ids, o) for n, rec in calls.items() for ids, o in rec if o.requires_grad]
        if mode == "fisher":
            logits = out.reshape(-1, out.shape[-1])
            p = torch.softmax(logits.detach(), -1)
            norm = logits.shape[0]
        else:
            norm = out.numel()
        for k in range(cfg.probes):
            if progress:
                progress("sensitivity", k, cfg.probes)
            if mode == "fisher":
                y = torch.multinomial(p, 1, generator=gen).squeeze(1)
                # sum over samples of per-sample score vectors: E[g g^T] = sum_s F_s
                loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            else:
                v = torch.randint(0, 2, out.shape, generator=gen).to(out.dtype) * 2 - 1  # Rademacher
                loss = (out * v).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()) + [o for _, _, o in outs], allow_unused=True, retain_graph=k + 1 < cfg.probes)
            for n, g in zip(leaves, grads):
                if g is not None:
                    acc[n] += g.detach().double() ** 2
            per_table: dict = {}
            for (n, ids, _), g in zip(outs, grads[len(leaves) :]):
                if g is not None:
                    per_table.setdefault(n, ([], []))[0].append(ids)
                    per_table[n][1].append(g.detach())
            for n, (ids, gs) in per_table.items():
                _add_embedding_grams(grams, n, ids, gs)
        if progress:
            progress("sensitivity", cfg.probes, cfg.probes)
    finally:
        if is_module:
            for n, p in leaves.items():
                p.requires_grad_(saved[n])
            obj.train(was_training)
    # output: E||J e||^2 / numel(out) ~ sum_j h_j e_j^2 with h = E[g^2] / numel(out)
    # fisher: KL(p || p~) ~ 1/2 e^T F e per sample, averaged over samples
    scale = 1.0 / (cfg.probes * norm) * (0.5 if mode == "fisher" else 1.0)
    return {n: (a * scale).numpy() for n, a in acc.items()}, {n: (g.numpy(), g2.numpy(), int(c)) for n, (g, g2, c) in grams.items() if c}


def _embedding_names(obj) -> set[str]:
    """Names of the weights of a module's embedding tables (none for a state dict)."""
    import torch

    if not isinstance(obj, torch.nn.Module):
        return set()
    kinds = (torch.nn.Embedding, torch.nn.EmbeddingBag)
    return {f"{m}.weight" if m else "weight" for m, mod in obj.named_modules(remove_duplicate=False) if isinstance(mod, kinds)}


def _fill_unseen_rows(h: np.ndarray, embedding: bool) -> np.ndarray:
    """An embedding table's sensitivity with every row set to the mean row,
    when the calibration batch reached some rows and not others (the total is
    kept).

    The batch reaches only its own tokens' rows, but any token may come at
    inference, so the batch's total sensitivity is spread evenly rather than
    leaving the unreached rows free (rate-distortion optimized rounding would
    zero them, and a row sample may miss every reached row) or giving each the
    weight of a reached row (which would overweight the table by the ratio of
    rows to tokens). A matrix that is not known to be an embedding table is
    treated so when at least half its rows are unreached; fewer zero rows are
    taken at their word (units that never fire on the batch).
    """
    if h.ndim < 2 or h.shape[0] < 2:
        return h
    rows = np.asarray(h, np.float64).reshape(h.shape[0], -1)
    seen = rows.any(axis=1)
    if seen.all() or not seen.any() or not (embedding or seen.mean() <= 0.5):
        return h
    return np.broadcast_to(rows.mean(axis=0), rows.shape).reshape(h.shape).copy()


# --- model access ----------------------------------------------------------------


def _state_of(obj) -> tuple[dict, bool]:
    """``({name: tensor}, is_module)``; tied tensors appear once (the first name)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        from ecnn import torch as et

        state = obj.state_dict()
        if any("parametrizations" in k.split(".") for k in state):
            raise InvalidOption(
                "the model has parametrized weights (prepared for ecnn.train?): convert it first with "
                "ecnn.train.convert_, or train to a size budget with ecnn.train.TrainConfig(target_bytes=...)"
            )
        return {g[0]: state[g[0]] for g in et._alias_groups(state)}, True
    if isinstance(obj, Mapping):
        return dict(obj), False
    raise InvalidOption(f"compress takes a torch.nn.Module or a state dict, got {type(obj).__name__}")


class _Weights:
    """Puts candidate weights into the model (or a state dict copy) for evaluation, and restores them."""

    def __init__(self, obj, is_module: bool, state: dict):
        self.obj, self.is_module, self.state = obj, is_module, state
        self.orig = {n: t.detach().clone() for n, t in state.items()} if is_module else None

    def apply(self, arrays: Mapping[str, tuple[np.ndarray, dtypes.DType]]):
        import torch

        from ecnn import torch as et

        if not self.is_module:
            out = dict(self.state)
            for n, (a, dt) in arrays.items():
                out[n] = et.from_array(a.copy(), dt).to(self.state[n].device)
            return out
        with torch.no_grad():
            for n, (a, dt) in arrays.items():
                self.state[n].copy_(et.from_array(a, dt))
        return self.obj

    def restore(self) -> None:
        if self.is_module:
            import torch

            with torch.no_grad():
                for n, t in self.orig.items():
                    self.state[n].copy_(t)


# --- the search ------------------------------------------------------------------


class _Search:
    def __init__(self, arrays, tensors: list[_Tensor], exact_cfg: EncodeConfig, metadata):
        self.arrays = arrays  # all tensors: {name: (array, dtype)}
        self.tensors = tensors
        self.by_name = {t.name: t for t in tensors}
        self.moves = _path(tensors)
        self.metadata = dict(metadata or {})
        self.exact_cfg = exact_cfg
        self.summary = "x" * SUMMARY_CHARS  # room for the summary written with the file
        self._records: dict = {}  # (name, step or None) -> (record, payload)
        self.ratio: dict[str, float] = {}  # per tensor: coded payload / estimated rate, where measured
        # cumulative rate and distortion along the path
        pos = [0] * len(tensors)
        r0 = sum(t.rates[t.hull[0]] for t in tensors)
        d0 = sum(t.dists[t.hull[0]] for t in tensors)
        self.cum_rate, self.cum_dist = [r0], [d0]
        self._move_tensor = np.array([i for i, _ in self.moves], np.int64)
        drate = []
        for i, p in self.moves:
            t = tensors[i]
            a, b = t.hull[pos[i]], t.hull[p]
            pos[i] = p
            drate.append(t.rates[b] - t.rates[a])
            self.cum_rate.append(self.cum_rate[-1] + t.rates[b] - t.rates[a])
            self.cum_dist.append(self.cum_dist[-1] + t.dists[b] - t.dists[a])
        self._move_drate = np.array(drate, np.float64)

    @property
    def last(self) -> int:
        return len(self.moves)

    def choice(self, k: int) -> dict[str, int]:
        """Candidate index of each tensor after ``k`` moves."""
        pos = [0] * len(self.tensors)
        for i, p in self.moves[:k]:
            pos[i] = p
        return {t.name: t.hull[pos[i]] for i, t in enumerate(self.tensors)}

    def steps(self, k: int) -> dict[str, float]:
        return {n: float(self.by_name[n].steps[c]) for n, c in self.choice(k).items()}

    def grid(self, name: str, c: int) -> np.ndarray:
        """Candidate ``c`` of a tensor as the dequantized storage array the file will hold."""
        t = self.by_name[name]
        s = float(t.steps[c])
        if t.cands[c][2]:
            return quantize.dequantize_rows(_symbols(t, c), t.dt, s, t.codes).reshape(t.arr.shape)
        return quantize.dequantize(_symbols(t, c), t.dt, s).reshape(t.arr.shape)

    def _record(self, name: str, c: int | None):
        key = (name, c)
        if key not in self._records:
            arr, dt = self.arrays[name]
            if c is None:
                self._records[key] = codec.encode_tensor(name, arr, dt, self.exact_cfg)
            elif self.by_name[name].cands[c][2]:
                self._records[key] = self._rows_record(name, c)
            else:
                step = float(self.by_name[name].steps[c])
                cfg = EncodeConfig(steps=((name, step),), chunk=self.exact_cfg.chunk, align=self.exact_cfg.align)
                self._records[key] = codec.encode_tensor(name, self.grid(name, c), dt, cfg)
        return self._records[key]

    def _rows_record(self, name: str, c: int) -> tuple[dict, bytes]:
        """A ``uniform_rows`` record (spec/CODING.md) with the candidate's own row codes."""
        from ecnn.coder import streams

        t = self.by_name[name]
        s = float(t.steps[c])
        chunk = self.exact_cfg.chunk
        q = _symbols(t, c)
        d0, p0 = streams.encode_best(t.codes, 1, False, chunk, contexts=True)
        d1, p1 = streams.encode_best(q.ravel(), 4, True, chunk, rows=int(q.shape[0]), contexts=True)
        rec = {
            "name": name,
            "dtype": t.dt.name,
            "shape": [int(v) for v in t.arr.shape],
            "repr": {"kind": "uniform_rows", "step": quantize.step_bits(s)},
            "streams": [d0, d1],
        }
        return rec, p0 + p1

    def size(self, k: int) -> int:
        """The real file size of allocation ``k`` (tensors coded one by one, cached), with
        ``self.summary`` (or room for it) as the budget metadata."""
        from ecnn import file as _file

        choice = self.choice(k)
        recs, pays = [], []
        for name in self.arrays:
            rec, pay = self._record(name, choice.get(name))
            recs.append(dict(rec))
            pays.append(pay)
        md = dict(self.metadata)
        md[METADATA_KEY] = self.summary
        return sum(len(p) for p in _file.assemble(recs, pays, md, self.exact_cfg.align))

    def dequantized(self, k: int) -> dict[str, tuple[np.ndarray, dtypes.DType]]:
        return {n: (self.grid(n, c), self.arrays[n][1]) for n, c in self.choice(k).items()}

    def encode(self, k: int, metadata: Mapping[str, str]) -> bytes:
        """The file of allocation ``k`` with ``metadata``, from the cached records (as
        ``ecnn.encode`` with the allocation's steps would write it, byte for byte)."""
        from ecnn import file as _file

        choice = self.choice(k)
        recs, pays = [], []
        for name in self.arrays:
            _file._check_name(name)
            rec, pay = self._record(name, choice.get(name))
            recs.append(dict(rec))
            pays.append(pay)
        return b"".join(_file.assemble(recs, pays, metadata, self.exact_cfg.align))

    def _payload_ratios(self, k: int) -> None:
        """Update each tensor's ratio of coded payload to estimated rate from allocation ``k``'s records."""
        for name, c in self.choice(k).items():
            est = float(self.by_name[name].rates[c])
            if est >= 64.0 and (name, c) in self._records:
                self.ratio[name] = len(self._records[(name, c)][1]) / est

    def fit(self, target: int, lo: int = 0) -> int:
        """The largest ``k >= lo`` whose real file fits in ``target`` bytes (``lo - 1`` if none).

        The search predicts real sizes from the estimated rates, corrected by the
        coded size of the last allocation that fitted and, per tensor, by the
        ratio of its coded payload to its estimate; each prediction is then
        coded (only the tensors whose step changed). It stops at a fitting
        allocation whose next one along the path does not fit, or whose
        estimated rate is within ``FIT_RTOL`` of the target of the smallest
        known not to fit.
        """
        if self.size(lo) > target:
            return lo - 1
        self._payload_ratios(lo)
        good, bad = lo, self.last + 1  # fits; smallest known not to fit
        cum = np.asarray(self.cum_rate, np.float64)
        for _ in range(FIT_PROBES):
            if bad - good <= 1 or cum[bad - 1] - cum[good] <= FIT_RTOL * target:
                break
            f = np.array([self.ratio.get(t.name, 1.0) for t in self.tensors])
            inc = f[self._move_tensor[good:bad - 1]] * self._move_drate[good:bad - 1]
            pred = self.size(good) + np.cumsum(inc)  # predicted size of good+1 .. bad-1
            k = good + int(np.searchsorted(pred, target, side="right"))
            k = min(max(k, good + 1), bad - 1)
            if self.size(k) <= target:
                good = k
            else:
                bad = k
            self._payload_ratios(k)
        return good


def _check_target(target_bytes) -> int | None:  # noqa: D103
    if target_bytes is None:
        return None
    if isinstance(target_bytes, bool) or not isinstance(target_bytes, (int, np.integer)) or target_bytes <= 0:
        raise InvalidOption(f"target_bytes must be a positive integer, got {target_bytes!r}")
    return int(target_bytes)


def _check_drop(max_metric_drop, evaluate) -> float | None:
    if max_metric_drop is None:
        return None
    if evaluate is None:
        raise InvalidOption("max_metric_drop needs an evaluate function")
    if isinstance(max_metric_drop, bool) or not (
        isinstance(max_metric_drop, (int, float)) and math.isfinite(max_metric_drop) and max_metric_drop >= 0
    ):
        raise InvalidOption(f"max_metric_drop must be a finite number >= 0, got {max_metric_drop!r}")
    return float(max_metric_drop)


class Plan:
    """The measured candidates and the allocation path of one model; makes files for any budget.

    Made by :func:`plan`. Measuring is the slow part; each :meth:`compress`
    call then costs a few encodes (and evaluations), so a sweep over budgets
    measures once.
    """

    def __init__(self, obj, state: dict, is_module: bool, arrays: dict, tensors: list[_Tensor], mode: str, cfg: BudgetConfig):
        self.obj, self.state, self.is_module = obj, state, is_module
        self.arrays, self.tensors, self.mode, self.config = arrays, tensors, mode, cfg

    @property
    def names(self) -> list[str]:
        """The allocated tensors (the others are stored exactly)."""
        return [t.name for t in self.tensors]

    def compress(
        self,
        path: str | os.PathLike | None = None,
        *,
        target_bytes: int | None = None,
        max_metric_drop: float | None = None,
        evaluate: Callable[[Any], float] | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> CompressResult:
        """A file for a budget; arguments as in :func:`compress`."""
        target = _check_target(target_bytes)
        drop = _check_drop(max_metric_drop, evaluate)
        if target is None and drop is None:
            raise InvalidOption("give target_bytes, max_metric_drop, or both")
        report = progress or (lambda stage, done, total: None)
        search = _Search(self.arrays, self.tensors, EncodeConfig(lossless=True), metadata)
        room = _summary_room(target if target is not None else search.size(search.last))
        search.summary = "x" * room
        sweep: list[SweepPoint] = []
        hi = search.last
        if target is not None:
            smallest = search.size(0)
            if smallest > target:
                raise BudgetTooSmall(f"target {target} bytes is below the smallest file this allocation can make ({smallest} bytes)")
            hi = search.fit(target)
            log.info("largest allocation within %d bytes: %d of %d moves, %d bytes", target, hi, search.last, search.size(hi))

        def summary(base=None, metric=None) -> dict:
            return {
                "version": 1,
                "target_bytes": target,
                "max_metric_drop": drop,
                "sensitivity": self.mode,
                "base_metric": base,
                "metric": metric,
                "sweep": [[p.size, p.distortion, p.metric] for p in sorted(sweep, key=lambda p: p.size)],
                "path": _path_summary(search),
            }

        k = hi
        limit = room
        if target is not None and drop is None:
            # Use the room the reservation leaves: size the file with the summary it
            # will carry (plus room for the metric figures), then move up the path.
            text = _summary_json(summary(), room - 64)
            limit = len(text) + 64
            search.summary = text + " " * 64
            k = search.fit(target, lo=hi)

        base = metric = None
        if evaluate is not None:
            weights = _Weights(self.obj, self.is_module, self.state)
            try:

                def run(kk: int) -> float:
                    m = float(evaluate(weights.apply(search.dequantized(kk))))
                    weights.restore()
                    sweep.append(SweepPoint(search.size(kk), search.cum_dist[kk], m))
                    log.info("allocation %d: %d bytes, metric %.6g", kk, search.size(kk), m)
                    return m

                report("evaluate", 0, 1)
                base = float(evaluate(self.obj if self.is_module else dict(self.state)))
                metric = run(k)
                if drop is not None:
                    if base - metric > drop:
                        raise MetricNotReached(
                            f"the largest allocation ({search.size(k)} bytes) drops the metric by {base - metric:.6g} "
                            f"(from {base:.6g} to {metric:.6g}), more than {drop}"
                        )
                    k, metric = _bisect_metric(search, run, k, metric, base - drop, self.config.rtol, report)
            finally:
                weights.restore()

        steps = search.steps(k)
        md = dict(metadata or {})
        md[METADATA_KEY] = _summary_json(summary(base, metric), limit)
        data = search.encode(k, md)
        if path is not None:
            from ecnn.container.writer import atomic_write

            atomic_write(path, [data])
        choice = search.choice(k)
        per = tuple(
            {
                "name": t.name,
                "numel": int(t.arr.size),
                "step": float(t.steps[choice[t.name]]),
                "strength": t.cands[choice[t.name]][1],
                "rows": t.cands[choice[t.name]][2],
                "compensated": t.cands[choice[t.name]][3],
                "bytes": len(search._record(t.name, choice[t.name])[1]),
                "estimate": round(float(t.rates[choice[t.name]]), 1),
                "sensitivity": float(np.mean(t.h)),
            }
            for t in self.tensors
        )
        report("done", 1, 1)
        return CompressResult(
            data=data,
            size=len(data),
            steps=steps,
            metric=metric,
            base_metric=base,
            distortion=float(search.cum_dist[k]),
            sweep=tuple(sorted(sweep, key=lambda p: p.size)),
            tensors=per,
        )


def plan(model_or_state_dict, *, calibration=None, config: BudgetConfig = BudgetConfig(), progress: Progress | None = None) -> Plan:
    """Measure a model's sensitivities and candidate steps once, for :meth:`Plan.compress`.

    Arguments as in :func:`compress`.
    """
    import fnmatch

    from ecnn import torch as et

    if not isinstance(config, BudgetConfig):
        raise InvalidOption("config must be a BudgetConfig")
    cfg = config
    report = progress or (lambda stage, done, total: None)
    state, is_module = _state_of(model_or_state_dict)
    arrays = {n: (a.copy(), dt) for n, (a, dt) in et.to_arrays(state).items()}
    names = [
        n
        for n, (a, dt) in arrays.items()
        if quantize.quantizable(dt)
        and a.ndim >= cfg.min_ndim
        and a.size > 0
        and np.isfinite(quantize.to_float(a, dt)).all()
        and not any(fnmatch.fnmatchcase(n, p) for p in cfg.exact)
    ]
    if not names:
        raise InvalidOption("no float tensor to quantize")

    mode = cfg.sensitivity
    if mode == "auto":
        mode = "output" if calibration is not None else "weights"
    if mode in ("output", "fisher"):
        if calibration is None:
            raise InvalidOption(f"sensitivity {mode!r} needs calibration data")
        h, grams = _sensitivities(model_or_state_dict, names, calibration, BudgetConfig(**{**cfg.__dict__, "sensitivity": mode}), progress)
        if not h:
            raise InvalidOption("the calibration output depends on none of the tensors through autograd")
        missing = [n for n in names if n not in h]
        if missing:
            log.info("no gradient reaches %d tensor(s) (buffers?); they are stored exactly: %s", len(missing), missing[:5])
            names = [n for n in names if n in h]
        tables = _embedding_names(model_or_state_dict)
        for n in names:
            h[n] = _fill_unseen_rows(h[n], n in tables)
        means = np.array([float(h[n].mean()) for n in names])
        low = cfg.floor * float(np.median(means))
        for n, m in zip(names, means):
            if m < low:  # not exercised by the calibration batch: treat it as barely sensitive, not as free
                h[n] = h[n] + (low - m)
    else:
        h, grams = {n: 1.0 for n in names}, {}

    tensors = [_Tensor(n, arrays[n][0], arrays[n][1], h[n]) for n in names]
    for t in tensors:
        if t.name in grams and t.dt.name in ("float32", "float64"):
            t.comp = _compensation(*grams[t.name], np.asarray(t.h).reshape(t.arr.shape), cfg.damp)
            if t.comp is None:
                log.info("%s: not compensated (%d rows of moments for %d columns)", t.name, grams[t.name][2], t.arr.shape[1])
            else:
                log.info("%s: compensation from %d rows of moments, shrinkage %.3f", t.name, grams[t.name][2], t.comp.shrink)
    for i, t in enumerate(tensors):
        report("candidates", i, len(tensors))
        _measure(t, cfg)
    report("candidates", len(tensors), len(tensors))
    log.info("%d tensors, %d candidates in all", len(tensors), sum(len(t.cands) for t in tensors))
    return Plan(model_or_state_dict, state, is_module, arrays, tensors, mode, cfg)


def compress(
    model_or_state_dict,
    path: str | os.PathLike | None = None,
    *,
    target_bytes: int | None = None,
    max_metric_drop: float | None = None,
    evaluate: Callable[[Any], float] | None = None,
    calibration=None,
    config: BudgetConfig = BudgetConfig(),
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> CompressResult:
    """Quantize a model to a size budget or an accuracy budget, choosing a step per tensor.

    Args:
        model_or_state_dict: a ``torch.nn.Module`` (its state dict is coded;
            tied tensors once) or a mapping of names to torch tensors.
        path: write the file here (atomically) as well as returning its bytes.
        target_bytes: the file must be at most this many bytes.
        max_metric_drop: the file is the smallest (within ``target_bytes``, if
            given) whose metric is at most this much below the original's.
            Needs ``evaluate``.
        evaluate: ``evaluate(model) -> float``, higher is better. It receives the
            module itself with the candidate weights loaded (they are restored
            afterwards), or, for a state dict, a new dict of torch tensors.
        calibration: data for the sensitivity: for a module, an input tensor,
            a tuple of inputs, or a dict of keyword inputs; for either, a
            callable ``calibration(model_or_state_dict) -> output tensor``.
        config: search options (:class:`BudgetConfig`).
        metadata: string-to-string map stored in the file.
        progress: ``progress(stage, done, total)`` callback.

    Returns:
        A :class:`CompressResult`.

    Raises:
        InvalidOption: no target given, or bad options.
        BudgetTooSmall: ``target_bytes`` is below the smallest file the
            allocation can make (every allocated tensor at its coarsest step).
        MetricNotReached: even the largest allocation considered (within
            ``target_bytes``) drops the metric by more than ``max_metric_drop``.

    Example:
        >>> import torch, ecnn
        >>> model = torch.nn.Linear(64, 64)
        >>> res = ecnn.compress(model, target_bytes=2500)
        >>> res.size <= 2500, sorted(res.steps)
        (True, ['bias', 'weight'])
    """
    target = _check_target(target_bytes)
    drop = _check_drop(max_metric_drop, evaluate)
    if target is None and drop is None:
        raise InvalidOption("give target_bytes, max_metric_drop, or both")
    p = plan(model_or_state_dict, calibration=calibration, config=config, progress=progress)
    return p.compress(path, target_bytes=target, max_metric_drop=drop, evaluate=evaluate, metadata=metadata, progress=progress)


def _g(x, digits: int = 4):
    return None if x is None else float(f"{x:.{digits}g}")


def _thin(points: list, n: int) -> list:
    if len(points) <= n:
        return points
    idx = sorted({int(round(i * (len(points) - 1) / (n - 1))) for i in range(n)})
    return [points[i] for i in idx]


def _path_summary(search: _Search, points: int = 32) -> list[list[float]]:
    """About ``points`` (predicted bytes, distortion) pairs along the path, for plots."""
    n = search.last
    ks = sorted({int(round(i * n / (points - 1))) for i in range(points)}) if n else [0]
    return [[round(float(search.cum_rate[k])), _g(search.cum_dist[k])] for k in ks]


def _summary_room(size: int) -> int:
    """Characters reserved for the allocation summary in a file of about ``size`` bytes."""
    return int(min(SUMMARY_CHARS, max(SUMMARY_MIN, SUMMARY_SHARE * size)))


def _summary_json(summary: dict, limit: int = SUMMARY_CHARS) -> str:
    """The summary as compact JSON of at most ``limit`` characters (path and sweep thinned)."""
    s = dict(summary)
    s["sweep"] = [[a, _g(b), _g(c, 6)] for a, b, c in s["sweep"]]
    for n in (32, 24, 16, 12, 8, 4, 2, 0):
        s["path"] = _thin(summary["path"], n) if n else []
        s["sweep"] = _thin(s["sweep"], max(n, 2)) if n else []
        text = json.dumps(s, separators=(",", ":"))
        if len(text) <= limit:
            return text
    return json.dumps({"version": 1}, separators=(",", ":"))


def _bisect_metric(search: _Search, run, hi: int, metric_hi: float, floor_metric: float, rtol: float, report):
    """The smallest allocation on the path (<= hi) whose metric is >= floor_metric, by bisection on size.

    Assumes the metric grows with the allocation; the returned allocation was
    evaluated and passed.
    """
    good, good_m = hi, metric_hi
    bad = -1
    # Bisect in log-size between a failing and a passing allocation.
    steps = 0
    while good - bad > 1:
        lo_r = search.cum_rate[max(bad, 0)]
        hi_r = search.cum_rate[good]
        if bad >= 0 and hi_r <= lo_r * (1 + rtol):
            break
        mid_r = math.sqrt(max(lo_r, 1.0) * hi_r)
        mid = int(np.searchsorted(np.asarray(search.cum_rate), mid_r))
        mid = min(max(mid, bad + 1), good - 1)
        steps += 1
        report("evaluate", steps, steps + max(1, int(math.log2(max(good - bad, 2)))))
        m = run(mid)
        if m >= floor_metric:
            good, good_m = mid, m
        else:
            bad = mid
    return good, good_m


# --- command-line helpers ---------------------------------------------------------

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
}  # fmt: skip


def parse_size(text: str) -> int:
    """A file size such as ``2MB`` (10**6 bytes), ``1.5MiB`` (2**20), ``800kB`` or ``123456``.

    Raises:
        InvalidOption: not a positive size.
    """
    t = str(text).strip().lower().replace(" ", "").replace("_", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _SIZE_UNITS or not (math.isfinite(value) and value > 0) or value * _SIZE_UNITS[unit] < 1:
        raise InvalidOption(f"expected a size such as 2MB, 1.5MiB or 800000, got {text!r}")
    return int(value * _SIZE_UNITS[unit])


def load_callable(spec: str) -> Callable:
    """``module:function`` (an importable module or a path to a ``.py`` file) to the function.

    This runs the module's code: pass only code you trust.

    Raises:
        InvalidOption: malformed spec, or the module or function cannot be found.
    """
    import importlib
    import importlib.util

    if not isinstance(spec, str) or ":" not in spec:
        raise InvalidOption(f"expected module:function, got {spec!r}")
    mod_name, _, fn_name = spec.rpartition(":")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            name = "ecnn_user_" + os.path.splitext(os.path.basename(mod_name))[0]
            s = importlib.util.spec_from_file_location(name, mod_name)
            if s is None or s.loader is None:
                raise ImportError(mod_name)
            mod = importlib.util.module_from_spec(s)
            s.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except (ImportError, OSError) as e:
        raise InvalidOption(f"cannot import {mod_name!r}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise InvalidOption(f"{mod_name!r} has no function {fn_name!r}")
    return fn
