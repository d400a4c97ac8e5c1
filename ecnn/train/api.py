"""prepare / regularize / convert: entropy-constrained training in any PyTorch loop.

Example:
    >>> import torch, ecnn, ecnn.train
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> _ = ecnn.train.prepare_(model, ecnn.train.TrainConfig(method="ect", lam=0.1))
    >>> opt = torch.optim.Adam(model.parameters(), 1e-2)
    >>> x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    >>> for _ in range(5):
    ...     loss = torch.nn.functional.cross_entropy(model(x), y) + ecnn.train.regularizer(model)
    ...     opt.zero_grad(); loss.backward(); opt.step()
    >>> steps = ecnn.train.convert_(model)
    >>> data = ecnn.encode(model.state_dict(), config=ecnn.train.encode_config(steps))
    >>> torch.equal(ecnn.decode(data)["0.weight"], model[0].weight.detach())
    True
"""

from __future__ import annotations

import glob
import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ecnn import rate
from ecnn.coder.streams import DEFAULT_CHUNK
from ecnn.context import rate as context_rate
from ecnn.config import EncodeConfig
from ecnn.errors import InvalidOption
from ecnn.train import entropy, pruning, structured
from ecnn.train.config import TrainConfig
from ecnn.train.quantizer import LloydQuantizer, UniformQuantizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizedParam:
    """One quantized parameter of a prepared model."""

    name: str  # its key in the converted model's state dict
    module: nn.Module
    attr: str
    quantizer: UniformQuantizer

    @property
    def latent(self) -> torch.Tensor:
        return getattr(self.module.parametrizations, self.attr).original


@dataclass(frozen=True)
class TensorRate:
    """Rate figures of one quantized tensor (bits are totals over the tensor).

    ``estimate_bits`` is the order-0 coder's size (table + symbols + chunk
    overhead) as the codec estimates it; ``entropy_bits`` is the zeroth-order
    empirical entropy alone; ``context2_bits`` / ``context3_bits`` are the
    empirical conditional entropies given the previous one / two symbols;
    ``coder_bits`` is the codec's own estimate for the coder it would pick
    (context models included), which tracks the real coded size.
    """

    name: str
    numel: int
    step: float
    levels: int
    zero_fraction: float
    entropy_bits: float
    estimate_bits: float
    context2_bits: float
    context3_bits: float
    coder_bits: float


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _wanted(param: nn.Parameter, config: TrainConfig) -> bool:
    if not param.is_floating_point() or param.numel() < 2:
        return False
    return param.ndim >= 2 or config.quantize_bias


def prepare_(model: nn.Module, config: TrainConfig = TrainConfig()) -> nn.Module:
    """Attach a learned-step uniform quantizer to every weight (and bias) of ``model``, in place.

    Call it before wrapping the model in DistributedDataParallel and before
    building the optimizer (the steps are new parameters).

    Args:
        model: any module; parameters with 2+ dimensions are quantized, and
            1-D ones too when ``config.quantize_bias``.
        config: the method and its options.

    Returns:
        ``model``.

    Raises:
        InvalidOption: ``config.chain`` names modules that are not a chain of
            Linear / Conv2d layers of ``model`` (see :func:`ecnn.train.group_penalty`).
    """
    if config.chain:
        structured.chain_layers(model, config.chain)
    targets = []
    for _, mod in model.named_modules():
        for attr, p in mod.named_parameters(recurse=False):
            if _wanted(p, config):
                targets.append((mod, attr, p))
    for mod, attr, p in targets:
        kind = LloydQuantizer if config.quantizer == "lloyd" else UniformQuantizer
        q = kind(p, config, prune=p.ndim >= 2).to(p.device)
        parametrize.register_parametrization(mod, attr, q)
        q.steps_seen.zero_()  # registering ran one check forward; training has not started
    if config.group_lam > 0:
        # A unit whose weights are all zero gets a zero bias too, so that it outputs
        # zero and narrow_ can remove it exactly.
        for _, mod, _ in structured.chain_layers(model, config.chain)[:-1]:
            if parametrize.is_parametrized(mod, "weight") and parametrize.is_parametrized(mod, "bias"):
                mod.parametrizations.bias[0].tie_to_units_(mod.parametrizations.weight[0], mod.parametrizations.weight)
    log.info("prepared %d tensors for %s training (lam=%g)", len(targets), config.method, config.lam)
    return model


def quantized_params(model: nn.Module) -> Iterator[QuantizedParam]:
    """The quantized parameters of a prepared model, with their state-dict names."""
    for prefix, mod in unwrap(model).named_modules():
        if not parametrize.is_parametrized(mod):
            continue
        for attr, plist in mod.parametrizations.items():
            for q in plist:
                if isinstance(q, UniformQuantizer):
                    yield QuantizedParam(f"{prefix}.{attr}" if prefix else attr, mod, attr, q)


def param_groups(model: nn.Module, lr: float, step_lr: float) -> list[dict]:
    """Optimizer parameter groups: the learned steps with ``step_lr``, the rest with ``lr``.

    A step is one scalar per tensor; with Adam it moves about ``lr`` in
    log-space per iteration, so it usually wants a larger rate than the weights.
    """
    steps = [qp.quantizer.log_step for qp in quantized_params(model)]
    ids = {id(p) for p in steps}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}, {"params": steps, "lr": step_lr}]


def _hard_counts(qp: QuantizedParam) -> np.ndarray:
    c = qp.quantizer.counts
    if float(c.sum()) != qp.latent.numel():  # no training forward yet
        s = qp.quantizer.symbols(qp.latent).reshape(-1)
        return np.bincount((s - s.min()).numpy()).astype(np.int64)
    return c.cpu().numpy().astype(np.int64)


def estimate_bits(hist: np.ndarray) -> float:
    """The order-0 coded size in bits of symbols with this histogram (0 if one symbol)."""
    hist = np.asarray(hist, dtype=np.int64)
    hist = hist[np.flatnonzero(hist)[0] : np.flatnonzero(hist)[-1] + 1]
    if hist.size < 2:
        return 0.0
    return context_rate.order0_bits(hist, int(hist.sum()), DEFAULT_CHUNK)[1]


def coder_estimate_bits(symbols: np.ndarray, shape: tuple[int, ...]) -> float:
    """The codec's estimate in bits for a tensor's integer symbols (whatever coder it picks).

    This is :func:`ecnn.rate.estimate_bytes`, the figure the encoder itself
    uses to choose a coder (within 1% of the coded size).
    """
    v = np.ascontiguousarray(symbols, dtype=np.int32).reshape(shape if len(shape) else (-1,))
    if v.size == 0 or v.min() == v.max():
        return 0.0
    return 8.0 * rate.estimate_bytes(v)


def _soft_bits(qp: QuantizedParam, config: TrainConfig) -> torch.Tensor:
    """The relaxed rate of one tensor in bits (differentiable in weights and step)."""
    q = qp.quantizer
    w = qp.latent
    v = q.coords(w).reshape(-1)
    keep = q.mask(w)
    if keep is not None:
        v = torch.where(keep.reshape(-1), v, torch.zeros_like(v))
    n = v.numel()
    if config.method == "hemp" and config.order > 1 and n > config.order:
        groups = n - config.order + 1
        starts = entropy.sample_positions(groups, config.sample)
        counts = entropy.soft_block_counts(v, config.order, starts)
        per_group = entropy.entropy_bits(counts) / counts.sum()
        return per_group * n / config.order
    idx = entropy.sample_positions(n, config.sample)
    vs = v if idx is None else v[idx]
    if config.method == "hemp":
        counts = entropy.soft_counts_interp(vs)
    else:
        counts = entropy.soft_counts_window(vs, config.temperature)
    return entropy.entropy_bits(counts) * (n / vs.numel())


def rate_bits(model: nn.Module, coder: bool = False) -> tuple[torch.Tensor, int]:
    """The regularizer's rate in bits (differentiable) and the number of quantized parameters.

    For ECT and EBP the value is the order-0 coder's estimated size of the
    symbols the forward pass used (table and all), and the gradient is that of
    the soft relaxation (a straight-through estimate). For HEMP it is the
    relaxed block entropy per symbol times the symbol count.

    Args:
        model: a prepared model.
        coder: take the value from the codec's own estimate of the current
            symbols (context models included; slower) instead of order-0.
            The gradient is the same.
    """
    total = None
    count = 0
    for qp in quantized_params(model):
        cfg = qp.quantizer.config
        count += qp.latent.numel()
        soft = _soft_bits(qp, cfg)
        if coder:
            sym = qp.quantizer.symbols(qp.latent).cpu().numpy()
            bits = soft - soft.detach() + coder_estimate_bits(sym, tuple(qp.latent.shape))
        elif cfg.method == "hemp" and cfg.order > 1:
            bits = soft
        else:
            bits = soft - soft.detach() + estimate_bits(_hard_counts(qp))
        bits = bits + _codebook_bits(qp)
        total = bits if total is None else total + bits
    if total is None:
        return torch.zeros(()), 0
    return total, count


def regularizer(model: nn.Module) -> torch.Tensor:
    """``lam`` times the estimated rate in bits per quantized parameter; add it to the loss.

    With ``TrainConfig.group_lam > 0`` it also adds ``group_lam`` times
    :func:`ecnn.train.group_penalty` of ``TrainConfig.chain``: the
    structured-sparsity term, the usual group lasso ``sum sqrt(size) * ||group||_2``,
    which ramps up with ``lam_warmup`` too. Whole units die under it, and
    :func:`ecnn.train.narrow_` removes them after :func:`convert_`.

    With ``TrainConfig.target_bytes`` the rate weight is not fixed: each call
    with gradients enabled (one per training step), after the warm-up,
    multiplies it by ``exp(lam_gain * e)``, where ``e`` is the log of the
    estimated file size over the target, extrapolated ``BUDGET_HORIZON`` steps
    ahead along its recent trend and clipped to [-1, 1]. It grows while the
    model is too large and not shrinking fast enough, and shrinks while it is
    smaller than needed, so training settles where the rate term just holds
    the file at its budget (the size answers the weight with a lag; looking
    ahead keeps the weight from overshooting).
    One weight for all tensors is the rate-distortion optimal allocation
    across layers: each tensor's rate falls where the task loss pays least
    for it. The estimate is the order-0 size of the current symbols, scaled
    by the codec's own estimate every ``BUDGET_CALIBRATE_EVERY`` steps, plus
    the file's bytes outside the quantized payloads (header, names and the
    tensors that are not quantized); :func:`budget_status` reports it.

    Works on a model wrapped in DistributedDataParallel: every rank computes the
    same value from its identical weights (the soft term's random sample may
    differ, and DDP averages those gradients), and the same rate weight. Computed
    in float32 even under autocast.
    """
    qps = list(quantized_params(model))
    if not qps:
        return torch.zeros(())
    q0 = qps[0].quantizer
    cfg = q0.config
    device = qps[0].latent.device
    rate_on = cfg.lam > 0 and cfg.method != "none"
    if not rate_on and cfg.group_lam == 0:
        return torch.zeros((), device=device)
    warm = cfg.lam_warmup and int(q0.steps_seen) < cfg.lam_warmup
    ramp = float(q0.steps_seen) / cfg.lam_warmup if warm else 1.0
    out = torch.zeros((), device=device)
    with torch.autocast(device_type=device.type, enabled=False):
        if rate_on:
            bits, n = rate_bits(model)
            out = float(q0.lam_now) * ramp * bits / n
        if cfg.group_lam > 0:
            out = out + cfg.group_lam * ramp * structured.group_penalty(unwrap(model), cfg.chain, cfg.group_inputs)
    if rate_on and cfg.target_bytes is not None and torch.is_grad_enabled() and not warm:
        _adapt_lam(model, qps)
    return out


BUDGET_CALIBRATE_EVERY = 100  # training steps between the codec's own estimates of the symbols
BUDGET_HORIZON = 40  # the size controller acts on the log excess expected this many steps ahead
BUDGET_TREND_SMOOTHING = 0.05  # weight of the newest step in the excess's trend (an exponential average)
_LAM_RANGE = (1e-8, 1e4)


@dataclass(frozen=True)
class BudgetStatus:
    """Where a model trained to ``TrainConfig.target_bytes`` stands (see :func:`budget_status`)."""

    target_bytes: int | None
    estimate_bytes: float  # the estimated size of the packed file now
    lam: float  # the rate weight in use (after the warm-up)
    scale: float  # the codec's estimate over the order-0 estimate of the current symbols
    overhead_bytes: float  # file bytes outside the quantized payloads


def _codebook_bits(qp: QuantizedParam) -> float:
    """A Lloyd quantizer's level table in the file: one float32 per level in use (0 for a uniform grid)."""
    if not isinstance(qp.quantizer, LloydQuantizer):
        return 0.0
    return 32.0 * int(np.count_nonzero(_hard_counts(qp)))


def _order0_bits(qps: list[QuantizedParam]) -> float:
    return sum(estimate_bits(_hard_counts(qp)) + _codebook_bits(qp) for qp in qps)


def _overhead_bytes(model: nn.Module, qps: list[QuantizedParam]) -> int:
    """The packed file's size with every quantized tensor zero: header, names, unquantized tensors."""
    import ecnn  # the package imports nothing from ecnn.train

    state = {
        k: v.detach().cpu()
        for k, v in unwrap(model).state_dict().items()
        if "parametrizations" not in k.split(".")
    }
    steps: dict[str, float | None] = {}
    for qp in qps:
        state[qp.name] = torch.zeros(qp.latent.shape, dtype=qp.latent.dtype)
        steps[qp.name] = None if isinstance(qp.quantizer, LloydQuantizer) else 1.0
    return len(ecnn.encode(state, config=encode_config(steps)))


def _set_budget(qps: list[QuantizedParam], **values: float) -> None:
    for qp in qps:
        for key, v in values.items():
            getattr(qp.quantizer, key).fill_(v)


def _known_overhead(model: nn.Module, qps: list[QuantizedParam]) -> float:
    """:func:`_overhead_bytes`, computed once and kept (it does not change while training)."""
    if float(qps[0].quantizer.budget_overhead) < 0:
        _set_budget(qps, budget_overhead=float(_overhead_bytes(model, qps)))
    return float(qps[0].quantizer.budget_overhead)


@torch.no_grad()
def _codec_scale(qps: list[QuantizedParam]) -> float:
    """The codec's estimate of the current symbols over their order-0 estimate."""
    order0 = _order0_bits(qps)
    codec = 0.0
    for qp in qps:
        if isinstance(qp.quantizer, LloydQuantizer):  # packed exactly, as a codebook
            codec += estimate_bits(_hard_counts(qp)) + _codebook_bits(qp)
        else:
            sym = qp.quantizer.symbols(qp.latent).cpu().numpy()
            codec += coder_estimate_bits(sym, tuple(qp.latent.shape))
    return codec / order0 if order0 > 0 else 1.0


def _estimate(overhead: float, scale: float, qps: list[QuantizedParam]) -> float:
    return overhead + scale * _order0_bits(qps) / 8.0


@torch.no_grad()
def _adapt_lam(model: nn.Module, qps: list[QuantizedParam]) -> None:
    q0 = qps[0].quantizer
    overhead = _known_overhead(model, qps)
    if int(q0.steps_seen) % BUDGET_CALIBRATE_EVERY == 0 or not math.isfinite(float(q0.budget_excess)):
        _set_budget(qps, budget_scale=_codec_scale(qps))
    excess = math.log(max(_estimate(overhead, float(q0.budget_scale), qps), 1.0) / q0.config.target_bytes)
    last, trend = float(q0.budget_excess), float(q0.budget_trend)
    if math.isfinite(last):
        trend += BUDGET_TREND_SMOOTHING * (excess - last - trend)
    signal = min(1.0, max(-1.0, excess + BUDGET_HORIZON * trend))
    lam = float(q0.lam_now) * math.exp(q0.config.lam_gain * signal)
    _set_budget(qps, lam_now=min(_LAM_RANGE[1], max(_LAM_RANGE[0], lam)), budget_excess=excess, budget_trend=trend)


def budget_status(model: nn.Module) -> BudgetStatus:
    """The estimated packed size of a prepared model now, and the size controller's state.

    The estimate is the one :func:`regularizer` steers with, its ratio to the
    codec measured now. Calling it does not change what the controller does
    (its ratio is updated on its own schedule, the same on every DDP rank),
    so it can be called at any time and on any rank, e.g. once per epoch for
    a log line. Works without ``target_bytes`` too.
    """
    qps = list(quantized_params(model))
    if not qps:
        raise InvalidOption("the model has no quantized parameters; call ecnn.train.prepare_ first")
    q0 = qps[0].quantizer
    overhead, scale = _known_overhead(model, qps), _codec_scale(qps)
    return BudgetStatus(
        target_bytes=q0.config.target_bytes,
        estimate_bytes=_estimate(overhead, scale, qps),
        lam=float(q0.lam_now),
        scale=scale,
        overhead_bytes=overhead,
    )


def rate_report(model: nn.Module, contexts: bool = True) -> list[TensorRate]:
    """Exact rate figures of each quantized tensor under the current steps (no gradient).

    Args:
        model: a prepared model.
        contexts: also compute the conditional entropies and the codec's estimate (slower).
    """
    out = []
    for qp in quantized_params(model):
        sym = qp.quantizer.symbols(qp.latent).cpu().numpy()
        s = sym.reshape(-1)
        hist = np.bincount(s - s.min())
        out.append(
            TensorRate(
                name=qp.name,
                numel=int(s.size),
                step=qp.quantizer.float32_step(),
                levels=int(np.count_nonzero(hist)),
                zero_fraction=float(np.mean(s == 0)),
                entropy_bits=entropy.hard_entropy_bits(s),
                estimate_bits=estimate_bits(hist),
                context2_bits=entropy.conditional_entropy_bits(s, 2) if contexts else float("nan"),
                context3_bits=entropy.conditional_entropy_bits(s, 3) if contexts else float("nan"),
                coder_bits=coder_estimate_bits(sym, tuple(sym.shape)) if contexts else float("nan"),
            )
        )
    return out


def prune_magnitude_(model: nn.Module, sparsity: float) -> float:
    """Magnitude-pruning baseline: fix one global threshold zeroing ``sparsity`` of all weights.

    Biases are not pruned. The threshold stays fixed while training goes on
    (fine-tuning the rest). Returns the threshold.
    """
    qps = [qp for qp in quantized_params(model) if qp.latent.ndim >= 2]
    t = pruning.magnitude_thresholds({qp.name: qp.latent for qp in qps}, sparsity)
    for qp in qps:
        qp.quantizer.fixed_threshold.fill_(t)
    log.info("magnitude pruning: threshold %.4g for sparsity %.3f", t, sparsity)
    return t


@torch.no_grad()
def settle_(model: nn.Module) -> None:
    """Run each quantizer's assignment to its fixed point (see ``UniformQuantizer.settle_``).

    Call it after training, before the final :func:`rate_bits`; :func:`convert_`
    calls it too, so the figure describes exactly the symbols that are packed.
    """
    for qp in quantized_params(model):
        rounds = qp.quantizer.settle_(qp.latent)
        log.debug("%s settled in %d rounds", qp.name, rounds)


@torch.no_grad()
def convert_(model: nn.Module) -> dict[str, float | None]:
    """Replace each quantized parameter by its quantized values, in place.

    Uniform quantizers give ``k * step``; Lloyd quantizers (``quantizer="lloyd"``)
    their levels. The parametrizations are removed, so the model is a plain
    module again whose state dict ``ecnn.save_file`` packs without re-quantizing,
    given :func:`encode_config` of the result.

    Returns:
        ``{state-dict name: float32 step}`` for uniform quantizers, ``None``
        for Lloyd quantizers (packed exactly, as a codebook).
    """
    settle_(model)
    steps: dict[str, float | None] = {}
    qps = list(quantized_params(model))
    # All symbols first: a bias tied to its units reads the latent weights.
    values = [qp.quantizer.values(qp.quantizer.symbols(qp.latent)) for qp in qps]
    for qp, value in zip(qps, values):
        # The decoder's values: float32(k) * float32(step), or the stored levels.
        steps[qp.name] = None if isinstance(qp.quantizer, LloydQuantizer) else qp.quantizer.float32_step()
        parametrize.remove_parametrizations(qp.module, qp.attr, leave_parametrized=False)
        param = getattr(qp.module, qp.attr)
        param.copy_(value.to(param.dtype))
    log.info("converted %d tensors", len(steps))
    return steps


def encode_config(steps: dict[str, float | None], **kwargs) -> EncodeConfig:
    """An :class:`ecnn.config.EncodeConfig` that packs converted tensors as they are.

    Tensors with a step are packed on their grid; those without (Lloyd levels)
    are kept exact, which the codec stores as a codebook.
    """
    exact = tuple(kwargs.pop("exact", ())) + tuple(glob.escape(n) for n, s in steps.items() if s is None)
    return EncodeConfig(steps=tuple((n, s) for n, s in steps.items() if s is not None), exact=exact, **kwargs)
