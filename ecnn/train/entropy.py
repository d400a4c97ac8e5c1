"""Differentiable and exact entropies of quantized weights.

A weight ``w`` on a grid of step ``s`` has the fractional position ``v = w / s``.
Rounding ``v`` gives integer symbols whose empirical entropy is the rate of an
order-0 coder, but it has no gradient. The relaxations here spread each ``v``
over nearby integer levels with weights that depend smoothly on ``v``:

* :func:`soft_counts_window` -- ECT's soft assignment: a softmax over the four
  nearest levels of ``-(v - k)**2 / temperature``.
* :func:`soft_counts_interp` -- HEMP's interpolation: ``v`` between its two
  neighbouring levels ``floor(v)`` and ``floor(v) + 1`` with weights
  ``1 - frac`` and ``frac``.
* :func:`soft_block_counts` -- the same interpolation for groups of ``order``
  consecutive weights (in the row-major order the coder scans): each group
  spreads over the ``2**order`` corners of its cell, with product weights.

The entropy of the resulting (fractional) histogram is differentiable in the
weights and the step. The exact figures (:func:`hard_entropy_bits`,
:func:`block_entropy_bits`) use numpy and have no gradient.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

LOG2 = float(np.log(2.0))


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Total code length ``-sum c log2(c / n)`` in bits of a (soft) histogram."""
    counts = counts.float()
    n = counts.sum()
    used = counts > 0
    safe = torch.where(used, counts, torch.ones_like(counts))
    return -(torch.where(used, safe * torch.log(safe / n), torch.zeros_like(counts))).sum() / LOG2


def sample_positions(n: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Random positions ``0..n-1`` (with replacement) when ``n > k``; None means all."""
    if n <= k:
        return None
    return torch.randint(0, n, (k,), generator=generator)


def soft_counts_window(v: torch.Tensor, temperature: float) -> torch.Tensor:
    """ECT soft histogram of positions ``v`` over the levels ``floor(v)-1 .. floor(v)+2``.

    Returns:
        Soft counts over ``lo .. hi`` (a compact range; only the entropy matters).
    """
    v = v.reshape(-1).float()
    f = torch.floor(v.detach())
    ks = f[:, None] + torch.arange(-1.0, 3.0, device=v.device)
    d = (v[:, None] - ks) ** 2
    # The nearest level has d <= 1/4: subtracting it keeps exp() in range without a softmax pass.
    e = torch.exp(-(d - d.detach().amin(dim=1, keepdim=True)) / temperature)
    a = e / e.sum(dim=1, keepdim=True)
    lo = int(f.min()) - 1
    idx = (ks - lo).long().reshape(-1)
    nbins = int(idx.max()) + 1
    return torch.zeros(nbins, device=v.device).scatter_add(0, idx, a.reshape(-1))


def soft_counts_interp(v: torch.Tensor) -> torch.Tensor:
    """HEMP soft histogram: each position split between its two neighbouring levels."""
    v = v.reshape(-1).float()
    f = torch.floor(v.detach())
    frac = v - f
    lo = int(f.min())
    i0 = (f - lo).long()
    nbins = int(i0.max()) + 2
    out = torch.zeros(nbins, device=v.device)
    out = out.scatter_add(0, i0, 1.0 - frac)
    return out.scatter_add(0, i0 + 1, frac)


def soft_block_counts(v: torch.Tensor, order: int, starts: torch.Tensor | None = None) -> torch.Tensor:
    """Soft histogram of groups of ``order`` consecutive positions (sliding windows).

    Args:
        v: positions ``w / step``, scanned in row-major order.
        order: group size (1, 2 or 3).
        starts: first position of each group to count; None counts all
            ``numel - order + 1`` windows.

    Returns:
        Soft counts of the groups that occur (compacted; order is arbitrary).
    """
    v = v.reshape(-1).float()
    if starts is None:
        starts = torch.arange(v.numel() - order + 1, device=v.device)
    cols = [v[starts + j] for j in range(order)]
    floors = [torch.floor(c.detach()) for c in cols]
    fracs = [c - f for c, f in zip(cols, floors)]
    lo = min(int(f.min()) for f in floors)
    base = max(int(f.max()) for f in floors) - lo + 2
    codes, weights = [], []
    for corner in itertools.product((0, 1), repeat=order):
        code = torch.zeros_like(floors[0], dtype=torch.long)
        w = torch.ones_like(fracs[0])
        for j, c in enumerate(corner):
            code = code * base + (floors[j] - lo).long() + c
            w = w * (fracs[j] if c else 1.0 - fracs[j])
        codes.append(code)
        weights.append(w)
    codes_t = torch.cat(codes)
    uniq, inverse = torch.unique(codes_t, return_inverse=True)
    return torch.zeros(uniq.numel(), device=v.device).scatter_add(0, inverse, torch.cat(weights))


def hard_entropy_bits(q: np.ndarray) -> float:
    """Zeroth-order empirical entropy in bits (total) of integer symbols."""
    q = np.asarray(q).ravel()
    if q.size == 0:
        return 0.0
    counts = np.bincount(q - q.min()).astype(np.float64)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / q.size)).sum())


def block_entropy_bits(q: np.ndarray, order: int) -> float:
    """Empirical entropy in bits of the sliding groups of ``order`` symbols, per group, times groups."""
    q = np.asarray(q, dtype=np.int64).ravel()
    n = q.size - order + 1
    if n <= 0:
        return 0.0
    lo = int(q.min())
    base = int(q.max()) - lo + 1
    code = np.zeros(n, dtype=np.int64)
    for j in range(order):
        code = code * base + (q[j : j + n] - lo)
    _, counts = np.unique(code, return_counts=True)
    counts = counts.astype(np.float64)
    return float(-(counts * np.log2(counts / n)).sum())


def conditional_entropy_bits(q: np.ndarray, order: int) -> float:
    """Total bits of ``q`` under its empirical order-``order - 1`` context model.

    ``H(X_i | X_{i-order+1} .. X_{i-1})`` per symbol, estimated as the block
    entropy difference ``H_order - H_{order-1}``, times the number of symbols:
    the rate an ideal order-(order-1) context coder approaches (no table cost).
    """
    q = np.asarray(q).ravel()
    if order == 1:
        return hard_entropy_bits(q)
    n = q.size
    h_n = block_entropy_bits(q, order) / max(n - order + 1, 1)
    h_m = block_entropy_bits(q, order - 1) / max(n - order + 2, 1)
    return max(h_n - h_m, 0.0) * n
