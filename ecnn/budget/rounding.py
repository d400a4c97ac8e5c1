"""Rounding a tensor to a step's grid other than to nearest: rate-distortion
optimized (:func:`quantize_rdo`) and error-compensated (:func:`quantize_compensated`).

Both return the symbols the codec itself computes from their dequantized
values (checked), so they reach a file through ``EncodeConfig.steps`` or
:func:`ecnn.codec.encode_quantized` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecnn import dtypes, quantize
from ecnn.budget.config import COMPENSATE_MIN_ROWS
from ecnn.errors import InvalidOption

COMPENSATE_BLOCK = 128  # columns per block of the compensated rounding's lazy updates


@dataclass
class Compensation:
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


def compensation(gram: np.ndarray, gram2: np.ndarray, count: int, h: np.ndarray, damp: float) -> Compensation | None:
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
    return Compensation(hd, u, gain, shrink)


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
    qmax = quantize.qmax(dt)
    if q.size and np.max(np.abs(q)) > qmax:
        raise InvalidOption(f"step {step} is too small for this tensor (|symbol| > {qmax})")
    q = q.astype(np.int32)
    back = quantize.quantize(quantize.dequantize(q, dt, step), dt, step)
    return q if np.array_equal(back, q) else quantize.quantize(arr, dt, step)

