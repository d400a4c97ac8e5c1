"""Sensitivities: how much each weight's error costs, measured on a calibration batch.

:func:`sensitivities` runs the calibration forward pass once and a few
backward passes with random output probes, and returns per element the
diagonal ``h`` of the Gauss-Newton matrix of the mean squared output error
(``"output"``) or of the Fisher information of the output logits
(``"fisher"``). Forward hooks also collect, for error-compensated rounding
(:mod:`ecnn.budget.rounding`), the second moments ("grams") of the inputs of
each ``nn.Linear`` and of the row-summed output gradients of each
``nn.Embedding``. :func:`fill_unseen_rows` spreads an embedding table's
sensitivity over the rows the batch never looked up.

Torch is imported inside the functions, so importing this module does not
import it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ecnn.budget.config import COMPENSATE_MAX_IN, BudgetConfig
from ecnn.errors import InvalidOption


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


def sensitivities(obj, names: list[str], calibration, cfg: BudgetConfig, progress) -> tuple[dict[str, np.ndarray], dict]:
    """Per-element sensitivity ``h`` of each named tensor (``cfg.sensitivity``, see the module docstring),
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


def embedding_names(obj) -> set[str]:
    """Names of the weights of a module's embedding tables (none for a state dict)."""
    import torch

    if not isinstance(obj, torch.nn.Module):
        return set()
    kinds = (torch.nn.Embedding, torch.nn.EmbeddingBag)
    return {f"{m}.weight" if m else "weight" for m, mod in obj.named_modules(remove_duplicate=False) if isinstance(mod, kinds)}


def fill_unseen_rows(h: np.ndarray, embedding: bool) -> np.ndarray:
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

