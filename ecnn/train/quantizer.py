"""The per-tensor quantizer that :func:`ecnn.train.prepare_` attaches to a parameter.

It is a ``torch.nn.utils.parametrize`` parametrization: the module keeps the
latent float weight and every access to ``module.weight`` returns it snapped to
the grid ``k * step``. The step is learned (``step = exp(log_step)``), with the
straight-through estimator for the rounding, so the gradient of the step is
LSQ's ``k - w/step`` (Esser et al. 2020).

The level a weight snaps to is ECT's entropy-constrained assignment: among the
two neighbouring levels and zero, the one that minimizes
``(w/step - k)**2 + assign_weight * codelength(k)``, where ``codelength`` is
``-log2`` of each level's frequency in the previous training step. Levels that
are frequent (zero above all) so win ties and grow. EBP's pruning mask, when
enabled, forces weights under the layer's threshold to zero first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ecnn.train import pruning
from ecnn.train.config import TrainConfig

# Code length given to a level that did not occur in the previous step.
_UNSEEN_BITS = 24.0


def initial_step(weight: torch.Tensor, bits: int) -> float:
    """``max|w| / (2**(bits-1) - 1)``, or 1e-3 for an all-zero tensor."""
    m = float(weight.detach().abs().max()) if weight.numel() else 0.0
    return m / ((1 << (bits - 1)) - 1) if m > 0 else 1e-3


class UniformQuantizer(nn.Module):
    """Snap a tensor to a uniform grid with a learned step (a parametrization).

    Args:
        weight: the tensor to be quantized (for the initial step and size).
        config: the training options.
        prune: whether this tensor takes EBP's pruning threshold (weights, not biases).

    Buffers:
        counts: symbol counts of the last training forward, over ``lo .. lo+len-1``.
        lo: the smallest symbol of ``counts``.
        steps_seen: training forwards so far (for EBP's ramp).
        fixed_threshold: a magnitude threshold set by
            :func:`ecnn.train.prune_magnitude_` (0: none).
        lam_now, budget_scale, budget_overhead, budget_excess, budget_trend:
            the rate weight in use, the codec-to-order-0 size ratio, the bytes
            outside the quantized payloads, the last log excess of the
            estimated size over the target and its trend per step, as
            :func:`ecnn.train.regularizer` tracks them for
            ``TrainConfig.target_bytes`` (the same in every quantizer).
    """

    def __init__(self, weight: torch.Tensor, config: TrainConfig, prune: bool = False):
        super().__init__()
        self.config = config
        self.prune = prune and config.method == "ebp" and config.prune_energy > 0
        self.log_step = nn.Parameter(torch.tensor(math.log(initial_step(weight, config.init_bits)), dtype=torch.float32))
        self.register_buffer("counts", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("lo", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("fixed_threshold", torch.zeros((), dtype=torch.float32))
        # The size-budget controller's state (TrainConfig.target_bytes), the same in every quantizer.
        self.register_buffer("lam_now", torch.tensor(float(config.lam), dtype=torch.float64))
        self.register_buffer("budget_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("budget_overhead", torch.full((), -1.0, dtype=torch.float64))
        self.register_buffer("budget_excess", torch.full((), math.nan, dtype=torch.float64))
        self.register_buffer("budget_trend", torch.zeros((), dtype=torch.float64))

    @property
    def step(self) -> torch.Tensor:
        return torch.exp(self.log_step.float())

    def float32_step(self) -> float:
        """The step as the float32 value the file stores."""
        return float(np.float32(math.exp(float(self.log_step.detach()))))

    def codelengths(self, device) -> tuple[torch.Tensor, int]:
        """``-log2`` frequency of each level in the last training step, and the first level."""
        c = self.counts.to(device)
        total = c.sum()
        if total <= 0:
            return torch.zeros_like(c, dtype=torch.float32), int(self.lo)
        bits = torch.where(c > 0, -torch.log2(c.clamp_min(1) / total), torch.full_like(c, _UNSEEN_BITS))
        return bits.float(), int(self.lo)

    def threshold(self, w: torch.Tensor) -> float:
        """The pruning threshold now: the fixed one, raised by EBP's Gaussian rule."""
        t = float(self.fixed_threshold)
        if self.prune:
            ramp = self.config.prune_ramp
            frac = 1.0 if ramp == 0 else min(1.0, float(self.steps_seen) / ramp)
            t = max(t, pruning.gaussian_threshold(w.detach(), self.config.prune_energy * frac))
        return t

    def mask(self, w: torch.Tensor) -> torch.Tensor | None:
        """Keep-mask ``|w| >= threshold``, or None when nothing is pruned."""
        t = self.threshold(w)
        return None if t <= 0 else w.detach().abs() >= t

    def code_length(self, device):
        """The code length of levels ``k`` (a function of a tensor of them) from the last training
        step's counts, or None when the assignment ignores the rate (``assign_weight`` 0, no counts yet)."""
        if not (self.config.assign_weight > 0 and float(self.counts.sum()) > 0):
            return None
        bits, lo = self.codelengths(device)

        def length(k: torch.Tensor) -> torch.Tensor:
            i = k - lo
            inside = (i >= 0) & (i < bits.numel())
            return torch.where(inside, bits[i.clamp(0, bits.numel() - 1).long()], _UNSEEN_BITS)

        return length

    @torch.no_grad()
    def assign(self, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Entropy-constrained levels (float tensor of integers) for positions ``v``."""
        beta = self.config.assign_weight
        length = self.code_length(v.device)
        if length is not None:
            f = torch.floor(v)
            frac = v - f
            cost_f = frac * frac + beta * length(f)
            cost_c = (1 - frac) * (1 - frac) + beta * length(f + 1)
            cost_0 = v * v + beta * length(torch.zeros_like(v))
            r = torch.where(cost_c < cost_f, f + 1, f)
            r = torch.where(cost_0 < torch.minimum(cost_f, cost_c), torch.zeros_like(r), r)
        else:
            r = torch.round(v)
        if keep is not None:
            r = torch.where(keep, r, torch.zeros_like(r))
        return r

    @torch.no_grad()
    def _record(self, q: torch.Tensor) -> None:
        qi = q.long().reshape(-1)
        lo = int(qi.min()) if qi.numel() else 0
        counts = torch.bincount(qi - lo).to(torch.float64)
        self.counts = counts.to(self.counts.device)
        self.lo.fill_(lo)
        self.steps_seen += 1

    @torch.no_grad()
    def settle_(self, w: torch.Tensor, max_iters: int = 100) -> int:
        """Alternate assignment and code lengths until the symbols stop changing.

        Each training step runs one round of this entropy-constrained scalar
        quantizer iteration (assign with the last code lengths, then count);
        both halves lower ``distortion + assign_weight * rate``, so it
        converges. Settling before :meth:`symbols` makes the symbols written
        to the file the ones whose counts the code lengths came from.

        Returns:
            The number of rounds run.
        """
        if self.config.assign_weight == 0:
            return 0
        v = self.coords(w.detach())
        keep = self.mask(w)
        prev = None
        for i in range(max_iters):
            q = self.assign(v, keep)
            if prev is not None and torch.equal(q, prev):
                return i
            lo = int(q.min())
            self.counts = torch.bincount(q.long().reshape(-1) - lo).to(torch.float64).to(self.counts.device)
            self.lo.fill_(lo)
            prev = q
        return max_iters

    def tie_to_units_(self, weight_quantizer: "UniformQuantizer", weight_latent: nn.Module) -> None:
        """Make this (bias) quantizer put a unit's bias on zero whenever the unit's weights are all zero.

        ``weight_latent`` is the weight's parametrization list (its ``original``
        is the latent weight). Kept outside the module tree (no cycle, not in
        the state dict); ``copy.deepcopy`` of the whole model keeps the link
        inside the copy.
        """
        self.__dict__["_unit_weight"] = (weight_quantizer, weight_latent)

    def _tie(self, q: torch.Tensor) -> torch.Tensor:
        """``q`` with the symbols of units whose weights quantize to all zero set to zero."""
        src = self.__dict__.get("_unit_weight")
        if src is None:
            return q
        wq, plist = src
        alive = wq.symbols(plist.original).flatten(1).ne(0).any(1).to(q.device)
        return torch.where(alive.reshape(alive.shape + (1,) * (q.ndim - 1)), q, torch.zeros_like(q))

    def coords(self, w: torch.Tensor) -> torch.Tensor:
        """Positions of ``w`` on the level axis: level ``k`` is at ``k`` (here ``w / step``)."""
        return w.float() / self.step

    def symbols(self, w: torch.Tensor) -> torch.Tensor:
        """Integer symbols (int64) of ``w`` under the current step and assignment."""
        with torch.no_grad():
            return self._tie(self.assign(self.coords(w.detach()), self.mask(w))).long()

    def values(self, q: torch.Tensor) -> torch.Tensor:
        """The float32 values of symbols ``q``, as the decoder computes them: ``float32(q) * float32(step)``."""
        return q.to(torch.float32) * torch.tensor(self.float32_step(), dtype=torch.float32, device=q.device)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self.step
        v = w.float() / s
        keep = self.mask(w)
        q = self._tie(self.assign(v.detach(), keep))
        if self.training and torch.is_grad_enabled():
            self._record(q)
        v_ste = v + (q - v).detach()
        out = v_ste * s
        if keep is not None:
            # A pruned weight is 0 whatever the step: it passes its gradient straight to the
            # latent weight but none to the step. (Through ``v_ste * s`` it would pull the step
            # by its whole rounding error, ``-w / step``, and, as the task loss wants the pruned
            # weights back, shrink the step until the grid has thousands of levels.)
            wf = w.float()
            out = torch.where(keep, out, wf - wf.detach())
        return out.to(w.dtype)


class LloydQuantizer(UniformQuantizer):
    """Snap a tensor to ``K`` non-uniform levels fitted by entropy-constrained Lloyd-Max iterations.

    The levels are ``step * shape``: a learned scale, as in :class:`UniformQuantizer`
    (so the rate can widen the whole grid, and the zero bin with it), times a
    shape that starts as the integers ``-(2**(init_bits-1)-1) .. 2**(init_bits-1)-1``
    and, after every training forward, moves each non-zero level to the mean
    of the weights assigned to it (Lloyd's centroid condition, in units of the
    step). The assignment is ECT's entropy-constrained one, with distortion in
    squared steps. Together they are the entropy-constrained scalar quantizer
    of Chou, Lookabaugh and Gray (1989). Symbols are level indices counted
    from the zero level, so the entropy terms and the codec see them as they
    see uniform symbols. The file stores such a tensor exactly, with the
    ``codebook`` representation.

    The rate's gradient flows through :meth:`coords`, the piecewise-linear
    position of ``w / step`` between its two neighbouring levels.
    """

    def __init__(self, weight: torch.Tensor, config: TrainConfig, prune: bool = False):
        super().__init__(weight, config, prune)
        half = (1 << (config.init_bits - 1)) - 1
        self.register_buffer("shape", torch.arange(-half, half + 1, dtype=torch.float32))
        self.zero_index = half

    @property
    def levels(self) -> torch.Tensor:
        """The current levels in weight units."""
        return self.shape * self.step.detach()

    def coords(self, w: torch.Tensor) -> torch.Tensor:
        sh = self.shape.to(w.device)
        v = w.float() / self.step
        j = torch.searchsorted(sh, v.detach().contiguous(), right=True).clamp(1, sh.numel() - 1) - 1
        lo, hi = sh[j], sh[j + 1]
        frac = (v - lo) / (hi - lo).clamp_min(1e-6)
        return (j - self.zero_index).to(v.dtype) + frac

    @torch.no_grad()
    def assign(self, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Among the two neighbouring levels and zero, the one minimizing ``(w/step - c)^2 + beta * len``."""
        sh = self.shape.to(v.device)
        k = sh.numel()
        z = self.zero_index
        f = torch.floor(v).clamp(-z, k - 1 - z)
        c = (f + 1).clamp(-z, k - 1 - z)
        x = self._value_at(v)
        beta = self.config.assign_weight
        length = self.code_length(v.device)

        def cost(q: torch.Tensor) -> torch.Tensor:
            d = (x - sh[(q + z).long()]) ** 2
            return d if length is None else d + beta * length(q)

        cf, cc, c0 = cost(f), cost(c), cost(torch.zeros_like(f))
        r = torch.where(cc < cf, c, f)
        r = torch.where(c0 < torch.minimum(cf, cc), torch.zeros_like(r), r)
        if keep is not None:
            r = torch.where(keep, r, torch.zeros_like(r))
        return r

    def _value_at(self, v: torch.Tensor) -> torch.Tensor:
        """``w / step`` at level position ``v`` (inverse of :meth:`coords`; clamped to the outer levels)."""
        sh = self.shape.to(v.device)
        k = sh.numel()
        pos = (v + self.zero_index).clamp(0, k - 1)
        j = torch.floor(pos).clamp(max=k - 2).long()
        frac = pos - j
        return sh[j] + frac * (sh[j + 1] - sh[j])

    @torch.no_grad()
    def update_levels_(self, w: torch.Tensor, q: torch.Tensor) -> None:
        """Lloyd's centroid step: each non-zero level moves to the mean of its weights (in steps)."""
        idx = q.reshape(-1).long() + self.zero_index
        k = self.shape.numel()
        n = torch.bincount(idx, minlength=k).to(torch.float64)
        s = torch.bincount(idx, weights=(w.detach().reshape(-1).double() / float(self.step)), minlength=k)
        sh = self.shape.double().clone()
        used = n > 0
        sh[used] = s[used] / n[used]
        sh[self.zero_index] = 0.0
        # Weights of a negative level are negative and of a positive one positive,
        # so sorting keeps zero at its index.
        sh, _ = torch.sort(sh)
        self.shape.copy_(sh.float())
        self.shape[self.zero_index] = 0.0

    def values(self, q: torch.Tensor) -> torch.Tensor:
        """The float32 levels of symbols ``q`` (stored exactly in the file)."""
        return self.shape.to(q.device)[(q.long() + self.zero_index)] * torch.tensor(
            self.float32_step(), dtype=torch.float32, device=q.device
        )

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self.step
        v = w.float() / s
        keep = self.mask(w)
        q = self._tie(self.assign(self.coords(w.detach()), keep))
        if self.training and torch.is_grad_enabled():
            self._record(q)
            self.update_levels_(w, q)
        target = self.shape.to(w.device)[(q.long() + self.zero_index)]
        v_ste = v + (target - v).detach()
        out = v_ste * s
        if keep is not None:
            # As in UniformQuantizer.forward: pruned weights give the step no gradient.
            wf = w.float()
            out = torch.where(keep, out, wf - wf.detach())
        return out.to(w.dtype)
