"""Options of entropy-constrained training, as a frozen, versioned dataclass.

None of these fields shapes the bitstream directly: they shape the trained
weights, which :func:`ecnn.train.convert_` puts on per-tensor uniform grids
that :class:`ecnn.config.EncodeConfig` then packs without re-quantizing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ecnn.errors import InvalidOption

METHODS = ("none", "ect", "hemp", "ebp")
QUANTIZERS = ("uniform", "lloyd")


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`ecnn.train.prepare_` sets up a model.

    Attributes:
        method: ``"ect"`` entropy-constrained training (soft assignment to the
            grid levels, Wiedemann et al. 2019); ``"hemp"`` entropy of groups of
            ``order`` consecutive symbols (Tartaglione et al. 2021); ``"ebp"``
            per-layer pruning thresholds from a Gaussian model of the weights
            (after Hur & Kang 2019) plus the order-0 ECT regularizer;
            ``"none"`` quantization-aware training with a learned step only.
        lam: weight of the rate term; :func:`ecnn.train.regularizer` returns
            ``lam`` times the estimated rate in bits per quantized parameter.
        init_bits: the initial step of a tensor is ``max|w| / (2**(init_bits-1) - 1)``.
        quantize_bias: also quantize 1-D parameters (biases) with a learned step.
        temperature: softness of ECT's assignment of a weight to its four
            nearest levels, in squared steps; smaller is closer to rounding.
        assign_weight: the final (and forward) assignment of a weight minimizes
            ``(w/step - k)**2 + assign_weight * codelength(k)`` over the two
            neighbouring levels and zero; ``0`` is plain rounding.
        order: HEMP group size (2 or 3; 1 is the order-0 entropy).
        sample: at most this many weights (or groups) per tensor enter the soft
            entropy each step; the value of the order-0 rate is always exact.
        prune_energy: EBP: each layer prunes the weights below the magnitude
            that holds this fraction of its output energy under a Gaussian
            model of its weights.
        prune_ramp: EBP: steps over which ``prune_energy`` ramps up from 0.
        lam_warmup: training steps over which the rate weight ramps from 0 to
            ``lam`` (0: none), so the steps can grow before the weights collapse.
        target_bytes: compress to a size budget: after the warm-up,
            :func:`ecnn.train.regularizer` adapts the rate weight every step
            (starting from ``lam``, which must then be > 0) so that the
            estimated size of the packed file approaches this many bytes; see
            :func:`ecnn.train.budget_status`. ``None``: ``lam`` stays fixed.
        lam_gain: how fast the rate weight adapts to ``target_bytes``: each
            step it is multiplied by ``exp(lam_gain * e)``, where ``e`` is the
            log of the estimated size over the target, looked ahead along its
            trend and clipped to [-1, 1] (see :func:`ecnn.train.regularizer`).
            Larger gains reach small budgets sooner but overshoot more: on the
            MNIST CNN, one epoch to an 8 kB budget ended at 16.6 kB with 0.01
            and without the look-ahead, 5.9 kB with 0.03 without it, and 8.0 kB
            with 0.03 and the look-ahead.
        quantizer: ``"uniform"``, a grid ``k * step`` with a learned step, packed
            with the ``uniform`` representation; or ``"lloyd"``, ``2**init_bits - 1``
            non-uniform levels moved by entropy-constrained Lloyd-Max updates
            (zero stays a level), packed exactly with the ``codebook``
            representation (format 1.1).
        group_lam: weight of the group lasso that empties whole units
            (structured sparsity, :func:`ecnn.train.group_penalty`):
            :func:`ecnn.train.regularizer` adds ``group_lam`` times the sum
            over the groups of ``chain`` of ``sqrt(size) * ||group||_2`` (not
            divided by the parameter count, unlike ``lam``; with a mean
            cross-entropy, 5e-5 to 2e-4 suited the MNIST LeNets and about
            1e-3 small MLPs; too large empties whole layers). ``0``: none. Then
            :func:`ecnn.train.narrow_` removes the units it emptied. With it,
            the quantized bias of a unit whose weights all quantize to zero is
            zero too (in training and in :func:`ecnn.train.convert_`), so the
            unit outputs zero and can go (not with ``quantize_bias=False``).
        chain: the ``Linear`` / ``Conv2d`` layers' module names in data-flow
            order (e.g. ``("fc1", "fc2", "fc3")``), whose output units (all
            layers' but the last) form the groups; needed when ``group_lam > 0``.
        group_inputs: also make each input feature of the chain's first layer
            a group (its column of the weight, or input channel).
        version: version of this config's meaning.
    """

    method: str = "ect"
    lam: float = 0.0
    init_bits: int = 6
    quantize_bias: bool = True
    temperature: float = 0.25
    assign_weight: float = 0.05
    order: int = 2
    sample: int = 1 << 14
    prune_energy: float = 0.0
    prune_ramp: int = 1000
    lam_warmup: int = 0
    quantizer: str = "uniform"
    target_bytes: int | None = None
    lam_gain: float = 0.03
    group_lam: float = 0.0
    chain: tuple[str, ...] = ()
    group_inputs: bool = False
    version: int = field(default=1, repr=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise InvalidOption(f"method must be one of {METHODS}, got {self.method!r}")
        if not self.lam >= 0:
            raise InvalidOption(f"lam must be >= 0, got {self.lam!r}")
        if not 2 <= self.init_bits <= 16:
            raise InvalidOption(f"init_bits must be in [2, 16], got {self.init_bits!r}")
        if not self.temperature > 0:
            raise InvalidOption(f"temperature must be > 0, got {self.temperature!r}")
        if not self.assign_weight >= 0:
            raise InvalidOption(f"assign_weight must be >= 0, got {self.assign_weight!r}")
        if self.order not in (1, 2, 3):
            raise InvalidOption(f"order must be 1, 2 or 3, got {self.order!r}")
        if self.sample < 16:
            raise InvalidOption(f"sample must be >= 16, got {self.sample!r}")
        if not 0 <= self.prune_energy < 1:
            raise InvalidOption(f"prune_energy must be in [0, 1), got {self.prune_energy!r}")
        if self.quantizer not in QUANTIZERS:
            raise InvalidOption(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.lam_warmup < 0:
            raise InvalidOption(f"lam_warmup must be >= 0, got {self.lam_warmup!r}")
        if self.target_bytes is not None:
            if isinstance(self.target_bytes, bool) or not isinstance(self.target_bytes, int) or self.target_bytes <= 0:
                raise InvalidOption(f"target_bytes must be a positive int or None, got {self.target_bytes!r}")
            if self.lam <= 0:
                raise InvalidOption("target_bytes needs a starting lam > 0 (e.g. lam=0.05); the rate weight adapts from there")
            if self.method == "none":
                raise InvalidOption('target_bytes needs a rate term: method "ect", "hemp" or "ebp", not "none"')
        if not 0 < self.lam_gain <= 1:
            raise InvalidOption(f"lam_gain must be in (0, 1], got {self.lam_gain!r}")
        if isinstance(self.chain, list):
            object.__setattr__(self, "chain", tuple(self.chain))
        if not isinstance(self.chain, tuple) or not all(isinstance(n, str) for n in self.chain):
            raise InvalidOption(f"chain must be a tuple of module names, got {self.chain!r}")
        if not (isinstance(self.group_lam, (int, float)) and not isinstance(self.group_lam, bool)) or not self.group_lam >= 0:
            raise InvalidOption(f"group_lam must be a number >= 0, got {self.group_lam!r}")
        if self.group_lam > 0 and len(self.chain) < (1 if self.group_inputs else 2):
            raise InvalidOption(
                "group_lam > 0 needs a chain of at least two layers (one with group_inputs), "
                'e.g. chain=("fc1", "fc2", "fc3")'
            )
        if self.prune_ramp < 0:
            raise InvalidOption(f"prune_ramp must be >= 0, got {self.prune_ramp!r}")
