"""Structured sparsity: group penalties that empty whole units, and narrowing the model after.

A **chain** names the ``nn.Linear`` / ``nn.Conv2d`` layers of a feed-forward
network in the order data flows through them, e.g. ``("fc1", "fc2", "fc3")``
or ``("conv1", "conv2", "fc1", "fc2")``: the outputs of each layer are the
inputs of the next, possibly through activations, pooling and a flatten.

:func:`group_penalty` is the group lasso (an L2,1 norm, as in Bayesian
Compression's group priors, Louizos et al. 2017, and Wen et al. 2016): the sum,
over the output units of every layer of the chain but the last, of
``sqrt(group size)`` times the L2 norm of the unit's incoming weights and its
bias (a row of a Linear weight, an output channel of a Conv2d), and, with
``inputs``, over the input features of the first layer (a column, an input
channel). Its gradient pulls a whole group towards zero at once, so units die
together with their bias, and the quantizer then puts them exactly on zero.

:func:`narrow_` removes the dead units of a converted model: a unit whose
incoming weights and bias are all zero (it outputs zero, given that what lies
between two layers maps zero to zero: ReLU, max-pooling, flatten) and a unit
whose outgoing weights in the next layer are all zero (nothing reads it). The
next layer's inputs are sliced to match (for a Conv2d followed by a Linear
through a flatten, the Linear's columns of each removed channel). The result
is a plain model of the same architecture with narrower layers, computing the
same outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ecnn.errors import InvalidOption

LAYER_TYPES = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Narrowing:
    """What :func:`narrow_` kept.

    Attributes:
        kept: for each layer of the chain, the indices of its output units that
            were kept, in their original order (all of them for the last layer).
        inputs: the indices of the first layer's input features that were kept
            (``narrow_(..., inputs=True)``), or None when its inputs were not narrowed.
        widths: the first layer's input width, then each layer's output width,
            after narrowing (Conv2d widths count channels).
        removed: output units removed over the whole chain.
    """

    kept: dict[str, tuple[int, ...]]
    inputs: tuple[int, ...] | None
    widths: tuple[int, ...]
    removed: int


def _out_units(mod: nn.Module) -> int:
    return mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels


def _in_units(mod: nn.Module) -> int:
    return mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels


def chain_layers(model: nn.Module, chain: tuple[str, ...] | list[str]) -> list[tuple[str, nn.Module, int]]:
    """The chain's layers as ``(name, module, span)``, checked against ``model``.

    ``span`` is the number of inputs of a layer that one output unit of the
    previous layer feeds: 1, or the spatial size ``H*W`` of a Conv2d's output
    where a Linear reads it through a flatten (0 for the first layer).

    Raises:
        InvalidOption: a name that is not a module of ``model``, a module that
            is not a Linear or an ungrouped Conv2d, a name given twice, or two
            consecutive layers whose widths do not connect.
    """
    if isinstance(chain, str) or not all(isinstance(n, str) for n in chain):
        raise InvalidOption(f"chain must be a sequence of module names, got {chain!r}")
    if len(set(chain)) != len(chain):
        raise InvalidOption(f"chain names a module twice: {list(chain)!r}")
    mods = dict(model.named_modules())
    out = []
    prev = None
    for name in chain:
        mod = mods.get(name)
        if mod is None:
            raise InvalidOption(f"chain: the model has no module {name!r}")
        if not isinstance(mod, LAYER_TYPES):
            raise InvalidOption(f"chain: {name!r} is a {type(mod).__name__}, not a Linear or Conv2d")
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            raise InvalidOption(f"chain: {name!r} is a grouped convolution (groups={mod.groups}); not supported")
        span = 0
        if prev is not None:
            p_name, p_mod = prev
            width, need = _out_units(p_mod), _in_units(mod)
            if width == need:
                span = 1
            elif isinstance(p_mod, nn.Conv2d) and isinstance(mod, nn.Linear) and width and need % width == 0:
                span = need // width  # flatten of (C, H, W): channel c owns columns c*H*W .. (c+1)*H*W-1
            else:
                raise InvalidOption(
                    f"chain: {p_name!r} has {width} outputs but {name!r} takes {need} inputs; "
                    "consecutive layers must connect (directly, or a Conv2d through a flatten to a Linear)"
                )
        out.append((name, mod, span))
        prev = (name, mod)
    return out


def _tensor(mod: nn.Module, attr: str) -> torch.Tensor | None:
    """The latent tensor of a (possibly parametrized) parameter, or None."""
    if parametrize.is_parametrized(mod, attr):
        return getattr(mod.parametrizations, attr).original
    return getattr(mod, attr, None)


def group_penalty(model: nn.Module, chain: tuple[str, ...] | list[str], inputs: bool = False) -> torch.Tensor:
    """The group lasso of a chain: sum of ``sqrt(size) * ||group||_2`` over its groups (differentiable).

    The groups are each output unit of every layer but the last (its incoming
    weights and its bias together) and, with ``inputs``, each input feature
    of the first layer (its column, or input channel, of the weight). On a
    prepared model it reads the latent weights, so the penalty's gradient
    reaches them whatever the quantizer does.

    Args:
        model: any module holding the chain's layers, prepared or not.
        chain: the layers' module names in data-flow order (see :func:`chain_layers`).
        inputs: also penalize the first layer's input features.

    Returns:
        A scalar tensor (zero when the chain has no groups).

    Raises:
        InvalidOption: a chain that does not fit the model.
    """
    layers = chain_layers(model, chain)
    total = None
    for i, (_, mod, _) in enumerate(layers):
        w = _tensor(mod, "weight").float()
        parts = []
        if i < len(layers) - 1:
            sq = w.pow(2).flatten(1).sum(1)
            b = _tensor(mod, "bias")
            if b is not None:
                sq = sq + b.float().pow(2)
            size = w[0].numel() + (b is not None)
            parts.append(math.sqrt(size) * torch.sqrt(sq + 1e-12).sum())
        if inputs and i == 0:
            sq = w.pow(2).transpose(0, 1).flatten(1).sum(1)
            parts.append(math.sqrt(w.numel() // w.shape[1]) * torch.sqrt(sq + 1e-12).sum())
        for p in parts:
            total = p if total is None else total + p
    if total is None:
        return torch.zeros(())
    return total


def _nonzero_units(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool per index of ``dim``: whether its slice of ``w`` has a non-zero entry."""
    return (w != 0).transpose(0, dim).flatten(1).any(1)


def _columns(mask: torch.Tensor, span: int) -> torch.Tensor:
    """A mask over a layer's inputs from one over the previous layer's units."""
    return mask.repeat_interleave(span) if span > 1 else mask


@torch.no_grad()
def dead_units(model: nn.Module, chain: tuple[str, ...] | list[str], inputs: bool = False) -> Narrowing:
    """What :func:`narrow_` would keep, without changing the model.

    A hidden unit goes when it outputs zero (its incoming weights from kept
    inputs and its bias are all zero) or when nothing reads it (its columns in
    the next layer's kept units are all zero); removing one unit can free
    others, so this runs to a fixed point. The last layer keeps all its units,
    and a layer left with none keeps its first one.

    Args:
        model: a plain (converted) model holding the chain.
        chain: the layers' module names in data-flow order.
        inputs: also drop the first layer's input features whose weights are all zero.
    """
    layers = chain_layers(model, chain)
    ws = [mod.weight.detach() for _, mod, _ in layers]
    bs = [mod.bias.detach() if mod.bias is not None else None for _, mod, _ in layers]
    keep = [torch.ones(w.shape[0], dtype=torch.bool, device=w.device) for w in ws]
    keep_in = torch.ones(ws[0].shape[1], dtype=torch.bool, device=ws[0].device)
    n = len(layers)
    changed = True
    while changed:
        changed = False
        for i in range(n - 1):
            cols = keep_in if i == 0 else _columns(keep[i - 1], layers[i][2])
            live_in = _nonzero_units(ws[i][:, cols], 0)
            if bs[i] is not None:
                live_in = live_in | (bs[i] != 0)
            nxt = ws[i + 1][keep[i + 1]]
            span = layers[i + 1][2]
            read = _nonzero_units(nxt, 1)
            if span > 1:
                read = read.reshape(-1, span).any(1)
            new = keep[i] & live_in & read
            if not torch.equal(new, keep[i]):
                keep[i], changed = new, True
        if inputs:
            new = keep_in & _nonzero_units(ws[0][keep[0]], 1)
            if not torch.equal(new, keep_in):
                keep_in, changed = new, True
    # Torch cannot run a convolution without channels: an emptied layer keeps its first
    # unit, which outputs zero or is read by nothing, so the outputs do not change.
    for k in keep + ([keep_in] if inputs else []):
        if k.numel() and not bool(k.any()):
            k[0] = True
    kept = {name: tuple(int(j) for j in torch.nonzero(k).reshape(-1)) for (name, _, _), k in zip(layers, keep)}
    widths = (int(keep_in.sum()),) + tuple(int(k.sum()) for k in keep)
    removed = sum(int((~k).sum()) for k in keep)
    in_idx = tuple(int(j) for j in torch.nonzero(keep_in).reshape(-1)) if inputs else None
    return Narrowing(kept=kept, inputs=in_idx, widths=widths, removed=removed)


def _set_param(mod: nn.Module, attr: str, value: torch.Tensor) -> None:
    old = getattr(mod, attr)
    setattr(mod, attr, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


@torch.no_grad()
def narrow_(model: nn.Module, chain: tuple[str, ...] | list[str], inputs: bool = False) -> Narrowing:
    """Remove the dead units of a converted model's chain, in place.

    Each layer of ``chain`` loses its dead output units (rows of a Linear's
    weight, output channels of a Conv2d, with their biases) and the next layer
    the matching inputs (columns, input channels, or for a Linear after a
    Conv2d the ``H*W`` columns of each removed channel); the modules'
    ``in_features`` / ``out_features`` (``in_channels`` / ``out_channels``)
    follow. The model stays a plain module of the same architecture, with
    narrower layers, and computes the same outputs: the removed units output
    zero or are read by nothing. That holds when what lies between two layers
    of the chain maps a zero unit to zero and works unit by unit (ReLU,
    max-pooling, flatten, dropout, identity), not for BatchNorm or sigmoid
    between layers of the chain. Parameter names do not change, so the steps
    of :func:`ecnn.train.convert_` still apply to the narrowed state dict.

    Args:
        model: a plain model, after :func:`ecnn.train.convert_` (or never prepared).
        chain: the layers' module names in data-flow order.
        inputs: also remove the first layer's input features whose weights
            are all zero; the caller must then feed only the features listed
            in the result's ``inputs``.

    Returns:
        A :class:`Narrowing`: the kept units per layer and the new widths.

    Raises:
        InvalidOption: a chain that does not fit the model, or a layer that is
            still parametrized (call :func:`ecnn.train.convert_` first).

    Example:
        >>> import torch, ecnn.train
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> with torch.no_grad():
        ...     model[0].weight[1] = 0; model[0].bias[1] = 0
        >>> ecnn.train.narrow_(model, ("0", "2")).widths
        (4, 2, 2)
        >>> model[2].weight.shape
        torch.Size([2, 2])
    """
    layers = chain_layers(model, chain)
    for name, mod, _ in layers:
        if parametrize.is_parametrized(mod):
            raise InvalidOption(f"narrow_: {name!r} is still prepared for training; call ecnn.train.convert_ first")
    plan = dead_units(model, chain, inputs)
    keep_in = None
    if inputs:
        keep_in = torch.tensor(plan.inputs, dtype=torch.long, device=layers[0][1].weight.device)
    for i, (name, mod, span) in enumerate(layers):
        dev = mod.weight.device
        rows = torch.tensor(plan.kept[name], dtype=torch.long, device=dev)
        if i > 0:
            prev = torch.tensor(plan.kept[layers[i - 1][0]], dtype=torch.long, device=dev)
            keep_in = prev if span == 1 else (prev[:, None] * span + torch.arange(span, device=dev)).reshape(-1)
        w = mod.weight.index_select(0, rows)
        if keep_in is not None:
            w = w.index_select(1, keep_in)
        _set_param(mod, "weight", w)
        if mod.bias is not None:
            _set_param(mod, "bias", mod.bias.index_select(0, rows))
        if isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = w.shape[0], w.shape[1]
        else:
            mod.out_channels, mod.in_channels = w.shape[0], w.shape[1]
    return plan
