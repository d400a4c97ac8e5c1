"""The two verbs: :func:`plan` measures a model once; :meth:`Plan.compress` (and
:func:`compress`, both at once) makes a file for a size or metric budget.

``plan`` takes the model's tensors, their sensitivities
(:mod:`ecnn.budget.sensitivity`) and compensation moments, and measures each
tensor's candidates (:mod:`ecnn.budget.candidates`); ``Plan.compress`` walks
the allocation path (:mod:`ecnn.budget.search`) to the budget and writes the
file with its summary (:mod:`ecnn.budget.summary`).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from typing import Any, Callable, Mapping

import numpy as np

from ecnn import codec, quantize
from ecnn.budget import summary as budget_summary
from ecnn.budget.candidates import PLAIN_BITS, Tensor, measure_all
from ecnn.budget.config import BudgetConfig, CompressResult, Progress, SweepPoint, check_drop, check_target
from ecnn.budget.model import Weights, state_of
from ecnn.budget.rounding import compensation
from ecnn.budget.search import Search, bisect_metric
from ecnn.budget.sensitivity import embedding_names, fill_unseen_rows, sensitivities
from ecnn.config import EncodeConfig
from ecnn.errors import BudgetTooSmall, InvalidOption, MetricNotReached

log = logging.getLogger(__name__)


class Plan:
    """The measured candidates and the allocation path of one model; makes files for any budget.

    Made by :func:`plan`. Measuring is the slow part; each :meth:`compress`
    call then costs a few encodes (and evaluations), so a sweep over budgets
    measures once.
    """

    def __init__(self, obj, state: dict, is_module: bool, arrays: dict, tensors: list[Tensor], mode: str, cfg: BudgetConfig, calibrated: bool):
        self.obj, self.state, self.is_module = obj, state, is_module
        self.arrays, self.tensors, self.mode, self.config = arrays, tensors, mode, cfg
        self.calibrated = calibrated  # calibration data weighted the errors (else a proxy did)

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
        files: Mapping[str, bytes] | None = None,
    ) -> CompressResult:
        """A file for a budget; arguments as in :func:`compress`."""
        target = check_target(target_bytes)
        drop = check_drop(max_metric_drop, evaluate)
        if target is None and drop is None:
            raise InvalidOption("give target_bytes, max_metric_drop, or both")
        report = progress or (lambda stage, done, total: None)
        search = Search(self.arrays, self.tensors, EncodeConfig(lossless=True), metadata, files)
        room = budget_summary.summary_room(target if target is not None else search.size(search.last))
        search.summary = "x" * room
        sweep: list[SweepPoint] = []
        hi = search.last
        if target is not None:
            hi = search.fit(target)
            if hi < 0:
                raise BudgetTooSmall(f"target {target} bytes is below the smallest file this allocation can make ({search.size(0)} bytes)")
            log.info("largest allocation within %d bytes: %d of %d moves, %d bytes", target, hi, search.last, search.size(hi))

        def summary(base=None, metric=None) -> dict:
            return budget_summary.build(search, sweep, target, drop, self.mode, base, metric)

        k = hi
        limit = room
        if target is not None and drop is None:
            # Use the room the reservation leaves: size the file with the summary it
            # will carry (plus room for the metric figures), then move up the path.
            text = budget_summary.summary_json(summary(), room - 64)
            limit = len(text) + 64
            search.summary = text + " " * 64
            k = search.fit(target, lo=hi)

        base = metric = None
        plain_bits = None  # the allocation is plain `pack --bits plain_bits`
        choice = search.choice(k)
        weights = Weights(self.obj, self.is_module, self.state) if evaluate is not None else None
        try:

            def run(kk) -> float:
                m = float(evaluate(weights.apply(search.dequantized(kk))))
                weights.restore()
                d = search.cum_dist[kk] if isinstance(kk, int) else search.distortion(kk)
                sweep.append(SweepPoint(search.size(kk), d, m))
                log.info("allocation %s: %d bytes, metric %.6g", kk if isinstance(kk, int) else "plain", search.size(kk), m)
                return m

            if evaluate is not None:
                report("evaluate", 0, 1)
                base = float(evaluate(self.obj if self.is_module else dict(self.state)))
                metric = run(k)
                if drop is not None:
                    if base - metric > drop:
                        raise MetricNotReached(
                            f"the largest allocation ({search.size(k)} bytes) drops the metric by {base - metric:.6g} "
                            f"(from {base:.6g} to {metric:.6g}), more than {drop}"
                        )
                    k, metric = bisect_metric(search, run, k, metric, base - drop, self.config.rtol, report)
                choice = search.choice(k)
            if target is not None and drop is None:
                plain = _plain_fit(search, target, k)
                if plain is not None:
                    bits, pch = plain
                    d_path, d_plain = float(search.cum_dist[k]), search.distortion(pch)
                    if evaluate is not None:
                        m_plain = run(pch)
                        better = m_plain >= metric
                    else:
                        better = d_plain <= d_path
                    log.info("plain --bits %d fits: distortion %.6g (allocation: %.6g)%s", bits, d_plain, d_path,
                             "; it is kept" if better else "")  # fmt: skip
                    if better:
                        plain_bits, choice = bits, pch
                        if evaluate is not None:
                            metric = m_plain
        finally:
            if weights is not None:
                weights.restore()

        data = search.write(choice, summary(base, metric), limit, target, plain_bits, metadata, path)
        report("done", 1, 1)
        return result(search, self.tensors, choice, data, metric, base, sweep, plain_bits, self.calibrated)


PLAIN_SLACK = 1.15  # plain files predicted up to this much over the target are still coded to see if they fit


def _plain_fit(search: Search, target: int, k: int) -> tuple[int, dict] | None:
    """The largest plain ``pack --bits N`` allocation whose file (without summary) fits in
    ``target`` bytes, ``(N, choice)``, or None; None too when even the plain allocation
    predicted to fit has more predicted distortion than allocation ``k`` (nothing coded).

    Sizes are predicted from the estimated rates, corrected by the real size of
    allocation ``k``; then coded, from the predicted ``N``, up or down.
    """
    plains = {b: ch for b in PLAIN_BITS if (ch := search.plain(b)) is not None}
    if not plains:
        return None
    f = search.size(k, None) / max(float(search.cum_rate[k]), 1.0)
    est = {b: f * float(sum(search.by_name[n].rates[c] for n, c in ch.items())) for b, ch in plains.items()}
    fits = [b for b in plains if est[b] <= target]
    b = max(fits) if fits else min(plains)
    up = max([c for c in plains if est[c] <= target * PLAIN_SLACK] or [b])
    if search.distortion(plains[up]) > search.cum_dist[k]:
        return None  # not even the largest plain grid that might fit would be better
    if search.size(plains[b], None) <= target:
        while b + 1 in plains and est[b + 1] <= target * PLAIN_SLACK and search.size(plains[b + 1], None) <= target:
            b += 1
        return b, plains[b]
    while b - 1 in plains:
        b -= 1
        if search.size(plains[b], None) <= target:
            return b, plains[b]
    return None


def result(
    search: Search, tensors: list[Tensor], choice: dict, data: bytes, metric, base, sweep, plain_bits, calibrated: bool
) -> CompressResult:
    """The :class:`CompressResult` of a written choice (torch and ONNX budgets alike)."""
    return CompressResult(
        data=data,
        size=len(data),
        steps=search.steps(choice),
        metric=metric,
        base_metric=base,
        distortion=search.distortion(choice),
        sweep=tuple(sorted(sweep, key=lambda p: p.size)),
        tensors=_per_tensor(search, tensors, choice),
        plain_bits=plain_bits,
        calibrated=calibrated,
    )


def _per_tensor(search: Search, tensors: list[Tensor], choice: dict) -> tuple[dict, ...]:
    """What a choice took for each tensor (:attr:`CompressResult.tensors`)."""
    return tuple(
        {
            "name": t.name,
            "numel": int(t.arr.size),
            "step": float(t.steps[choice[t.name]]),
            "strength": t.cands[choice[t.name]].strength,
            "rows": t.cands[choice[t.name]].rows,
            "compensated": t.cands[choice[t.name]].compensated,
            "bits": t.cands[choice[t.name]].bits or None,
            "exact": t.cands[choice[t.name]].exact,
            "bytes": len(search.record(t.name, choice[t.name])[1]),
            "estimate": round(float(t.rates[choice[t.name]]), 1),
            "sensitivity": float(np.mean(t.h)),
        }
        for t in tensors
    )


def plan(model_or_state_dict, *, calibration=None, config: BudgetConfig = BudgetConfig(), progress: Progress | None = None) -> Plan:
    """Measure a model's sensitivities and candidate steps once, for :meth:`Plan.compress`.

    Arguments as in :func:`compress`.
    """
    from ecnn import torch as et

    if not isinstance(config, BudgetConfig):
        raise InvalidOption("config must be a BudgetConfig")
    cfg = config
    report = progress or (lambda stage, done, total: None)
    state, is_module = state_of(model_or_state_dict)
    # private copies where evaluation puts candidate weights into the module's own tensors
    arrays = {n: (a.copy() if is_module else a, dt) for n, (a, dt) in et.to_arrays(state).items()}
    calibrated = calibration is not None
    plain_cfg = EncodeConfig(bits=8, exact=cfg.exact)  # which tensors plain `pack` quantizes
    plain = {n for n, (a, dt) in arrays.items() if codec.wants_quantization(n, a, dt, plain_cfg)}
    running = running_statistics(model_or_state_dict, arrays)
    names = [
        n
        for n, (a, dt) in arrays.items()
        if quantize.quantizable(dt)
        and a.ndim >= cfg.min_ndim
        and a.size > 0
        and np.isfinite(quantize.to_float(a, dt)).all()
        and not any(fnmatch.fnmatchcase(n, p) for p in cfg.exact)
        and (n in plain if not calibrated else n not in running)
    ]
    if not names:
        raise InvalidOption("no float tensor to quantize")
    if not calibrated:
        log.info("no calibration data: errors weighted by a proxy (relative weight error per tensor); "
                 "%d tensors that plain pack keeps exact stay exact", len(arrays) - len(names))  # fmt: skip

    mode = cfg.sensitivity
    if mode == "auto":
        mode = "output" if calibrated else "weights"
    names, h, grams = _sensitivities_of(model_or_state_dict, names, calibration, BudgetConfig(**{**cfg.__dict__, "sensitivity": mode}), progress)
    if mode == "weights":
        h = {n: weight_proxy(arrays[n][0], arrays[n][1]) for n in names}

    tensors = [Tensor(n, arrays[n][0], arrays[n][1], h[n], plain_quantized=n in plain) for n in names]
    for t in tensors:
        if t.name in grams and t.dt.name in ("float32", "float64"):
            t.comp = compensation(*grams[t.name], np.asarray(t.h).reshape(t.arr.shape), cfg.damp)
            if t.comp is None:
                log.info("%s: not compensated (%d rows of moments for %d columns)", t.name, grams[t.name][2], t.arr.shape[1])
            else:
                log.info("%s: compensation from %d rows of moments, shrinkage %.3f", t.name, grams[t.name][2], t.comp.shrink)
    report("candidates", 0, len(tensors))
    measure_all(tensors, cfg, not calibrated, report)
    log.info("%d tensors, %d candidates in all", len(tensors), sum(len(t.cands) for t in tensors))
    return Plan(model_or_state_dict, state, is_module, arrays, tensors, mode, cfg, calibrated)


RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm's buffers, by name


def running_statistics(obj, arrays: Mapping) -> set[str]:
    """The tensors that are running statistics rather than weights, kept exact by every
    allocation: a module's buffers, and tensors named ``*.running_mean``,
    ``*.running_var`` or ``*.num_batches_tracked``.

    A calibration batch run in eval mode does send gradients into BatchNorm's
    running statistics, but they are estimates the layer was trained around,
    a negligible share of the file, and a coarse ``running_var`` scales whole
    channels; so no calibration justifies coarsening them.
    """
    import torch

    names = {n for n in arrays if n.rpartition(".")[2] in RUNNING_STATISTICS}
    if isinstance(obj, torch.nn.Module):
        names |= {n for n, _ in obj.named_buffers(remove_duplicate=False)}
    return names


def weight_proxy(arr: np.ndarray, dt) -> float:
    """The sensitivity of every element of a tensor without calibration data: one over the
    tensor's squared norm, so that a tensor's distortion is its relative squared error
    ``||w - Q(w)||**2 / ||w||**2`` (for a layer ``y = W x`` with inputs of no preferred
    direction, the relative error of its output), and the allocation minimizes the sum
    of the layers' relative errors."""
    x = quantize.to_float(arr, dt).ravel()
    sq = float(np.dot(x, x)) if x.dtype == np.float32 else float(np.sum(x.astype(np.float64) ** 2))
    return 1.0 / sq if sq > 0 else 1.0


def _sensitivities_of(obj, names: list[str], calibration, cfg: BudgetConfig, progress) -> tuple[list[str], dict, dict]:
    """The tensors to allocate, their sensitivities and their compensation moments,
    for ``cfg.sensitivity`` (not ``"auto"``): see :func:`ecnn.budget.sensitivity.sensitivities`.

    Tensors no gradient reaches are dropped; an embedding table's unreached rows
    share its sensitivity, and every tensor's mean is raised to at least
    ``cfg.floor`` times the median.
    """
    if cfg.sensitivity == "weights":
        return names, {n: 1.0 for n in names}, {}
    if calibration is None:
        raise InvalidOption(f"sensitivity {cfg.sensitivity!r} needs calibration data")
    h, grams = sensitivities(obj, names, calibration, cfg, progress)
    if not h:
        raise InvalidOption("the calibration output depends on none of the tensors through autograd")
    missing = [n for n in names if n not in h]
    if missing:
        log.info("no gradient reaches %d tensor(s) (buffers?); they are stored exactly: %s", len(missing), missing[:5])
        names = [n for n in names if n in h]
    tables = embedding_names(obj)
    for n in names:
        h[n] = fill_unseen_rows(h[n], n in tables)
    means = np.array([float(h[n].mean()) for n in names])
    low = cfg.floor * float(np.median(means))
    for n, m in zip(names, means):
        if m < low:  # not exercised by the calibration batch: treat it as barely sensitive, not as free
            h[n] = h[n] + (low - m)
    return names, h, grams


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
    files: Mapping[str, bytes] | None = None,
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
        files: stored files (name to bytes, e.g. a model folder's config and
            tokenizer files), written into the file and counted in ``target_bytes``.

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
    target = check_target(target_bytes)
    drop = check_drop(max_metric_drop, evaluate)
    if target is None and drop is None:
        raise InvalidOption("give target_bytes, max_metric_drop, or both")
    p = plan(model_or_state_dict, calibration=calibration, config=config, progress=progress)
    return p.compress(
        path, target_bytes=target, max_metric_drop=drop, evaluate=evaluate, metadata=metadata, progress=progress, files=files
    )

