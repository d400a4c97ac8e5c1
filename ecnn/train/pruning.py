"""Pruning thresholds: EBP's Gaussian information rule and a magnitude baseline.

EBP (after Hur & Kang, J. Supercomputing 2019): during training, each layer's
threshold comes from a Gaussian model ``N(0, sigma**2)`` of its weights. A
weight's contribution to the layer's output scales with ``w**2`` (the output
variance for unit-variance inputs), so the magnitude ``t`` below which the
weights hold a fraction ``eps`` of that energy satisfies

    eps = E[w**2 ; |w| < t] / sigma**2 = erf(a / sqrt 2) - sqrt(2 / pi) * a * exp(-a**2 / 2),

with ``a = t / sigma``. The same ``eps`` gives each layer its own threshold,
recomputed at every step from the current weights, so layers with a wide
spread prune more. The paper's exact formula is not reproduced here (its text
was not available); this is the same idea: a per-layer, Gaussian,
output-information threshold set while training, not after.

The magnitude baseline (:func:`magnitude_thresholds`) is one global
percentile of |w| fixed after training.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_TABLE: dict[float, float] = {}


def energy_fraction(a: float) -> float:
    """Share of ``E[w**2]`` of a standard Gaussian held by ``|w| < a``."""
    return math.erf(a / math.sqrt(2.0)) - math.sqrt(2.0 / math.pi) * a * math.exp(-a * a / 2.0)


def threshold_ratio(eps: float) -> float:
    """The ``a = t / sigma`` whose energy fraction is ``eps`` (bisection)."""
    if eps <= 0:
        return 0.0
    key = round(eps, 6)
    if key not in _TABLE:
        lo, hi = 0.0, 10.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if energy_fraction(mid) < eps:
                lo = mid
            else:
                hi = mid
        _TABLE[key] = 0.5 * (lo + hi)
    return _TABLE[key]


def gaussian_threshold(w: torch.Tensor, eps: float) -> float:
    """EBP threshold of one layer: ``threshold_ratio(eps) * sigma`` with ``sigma`` the weights' RMS."""
    if eps <= 0 or w.numel() == 0:
        return 0.0
    sigma = float(w.float().pow(2).mean().sqrt())
    return threshold_ratio(eps) * sigma


def magnitude_thresholds(weights: dict[str, torch.Tensor], sparsity: float) -> float:
    """One global magnitude threshold that zeroes a fraction ``sparsity`` of all weights."""
    allw = torch.cat([w.detach().abs().reshape(-1).float() for w in weights.values()])
    k = int(sparsity * allw.numel())
    if k <= 0:
        return 0.0
    # Weights at or above the threshold are kept: step just past the k-th smallest.
    return float(np.nextafter(np.float32(allw.kthvalue(k).values), np.float32(np.inf)))
