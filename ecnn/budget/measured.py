"""Budgets for models run by a black box: sensitivities measured on the outputs, no gradients.

The torch path (:func:`ecnn.budget.compress`) weighs each weight's error by
a Gauss-Newton diagonal that autograd computes. A model run by an engine
without gradients (an ONNX model in ONNX Runtime, :mod:`ecnn.onnx`) gets
each tensor's sensitivity by measuring instead: the tensor alone is rounded
to a probe grid (:data:`PROBE_BITS`), the model runs on the calibration
inputs, and the output error it causes, relative to the outputs' energy,
divided by the tensor's squared rounding error is the tensor's sensitivity
``h`` (one number per tensor). That is the linearized model the allocation
assumes (``D = h * ||w - Q(w)||**2``), measured where the budget's steps
lie, so a tensor whose rounding the model amplifies (a recurrent weight, a
fixed basis, a lookup table) is weighted by what it does to the outputs.
One run per tensor and probe, plus one for the reference.

The candidates, the Lagrangian path and the size search are the torch path's
(:mod:`ecnn.budget.candidates`, :mod:`ecnn.budget.search`); :func:`compress`
walks them to a size or to a metric budget, the metric being computed from
the outputs (:func:`top1_agreement`, :func:`cosine`). Numpy only.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np

from ecnn import quantize
from ecnn.budget import summary as budget_summary
from ecnn.budget.allocate import _plain_fit, result
from ecnn.budget.candidates import Tensor, measure_all
from ecnn.budget.config import BudgetConfig, CompressResult, Progress, SweepPoint, check_drop, check_target
from ecnn.budget.search import Search, bisect_metric
from ecnn.budget.summary import METADATA_KEY
from ecnn.config import EncodeConfig
from ecnn.errors import BudgetTooSmall, InvalidOption, MetricNotReached

log = logging.getLogger(__name__)

PROBE_BITS = (4,)  # each tensor's sensitivity is measured rounded to this many bits (per tensor); the largest counts
SENSITIVITY = "measured"  # the summary's name for this sensitivity
METRICS = ("top1", "cosine")
# The ONNX budget's defaults: weights of 2+ dimensions (what plain pack quantizes), and eight candidate
# steps an octave: a model's few large tensors move the file size in finer steps along the path.
ONNX_CONFIG = BudgetConfig(min_ndim=2, steps_per_octave=8)
SUMMARY_SPARE = 96  # characters kept for the figures the summary gains after the size search

# calibration({name: storage array}) -> the model's outputs, the named tensors replaced, the others original
Calibration = Callable[[Mapping[str, np.ndarray]], Sequence[np.ndarray]]


def _float_outputs(outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(o, np.float64) for o in outputs if np.asarray(o).dtype.kind == "f" and np.asarray(o).size]


def output_error(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """The outputs' squared error relative to the reference's energy, summed over the float outputs.

    Each output counts as ``mean((y - y_ref)**2) / mean(y_ref**2)``, so outputs
    of any scale weigh alike; non-finite outputs count as infinitely wrong.
    """
    total = 0.0
    for a, b in zip(_float_outputs(reference), _float_outputs(outputs)):
        if a.shape != b.shape or not np.isfinite(b).all():
            return float("inf")
        energy = float(np.mean(a * a))
        total += float(np.mean((a - b) ** 2)) / (energy if energy > 0 else 1.0)
    return total


def _rows(o: np.ndarray) -> np.ndarray:
    return o.reshape(-1, o.shape[-1]) if o.ndim >= 1 else o.reshape(1, 1)


def top1_agreement(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Percent of rows of the first float output (argmax over its last axis) that agree with the reference."""
    a, b = _float_outputs(reference)[0], _float_outputs(outputs)[0]
    ia, ib = _rows(a).argmax(-1), _rows(b).argmax(-1)
    return 100.0 * float(np.mean(ia == ib))


def cosine(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """100 times the mean cosine similarity of the rows (last axis) of the first float output and the reference's."""
    a, b = _rows(_float_outputs(reference)[0]), _rows(_float_outputs(outputs)[0])
    if not np.isfinite(b).all():
        return -100.0
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both = (na > 0) & (nb > 0)
    cos = np.where(both, np.einsum("ij,ij->i", a, b) / np.where(both, na * nb, 1.0), (na == nb).astype(np.float64))
    return 100.0 * float(np.mean(cos))


def default_metric(reference: Sequence[np.ndarray]) -> str:
    """``"top1"`` when the first float output is classifier-like (last dimension at least 2), else ``"cosine"``."""
    outs = _float_outputs(reference)
    if not outs:
        raise InvalidOption("the model has no float output to measure")
    return "top1" if outs[0].ndim >= 1 and outs[0].shape[-1] >= 2 else "cosine"


def output_sensitivities(
    arrays: Mapping[str, tuple[np.ndarray, object]],
    names: Sequence[str],
    calibration: Calibration,
    *,
    probe_bits: Sequence[int] = PROBE_BITS,
    floor: float = 1e-2,
    reference: Sequence[np.ndarray] | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Each named tensor's sensitivity, measured on the outputs (see the module docstring).

    Args:
        arrays: ``{name: (storage array, dtype)}`` of the model's tensors.
        names: the tensors to measure.
        calibration: ``calibration({name: storage array}) -> outputs``, the model run on
            calibration inputs with the given tensors in place of the originals.
        probe_bits: the tensor is rounded per tensor to each of these bit widths; the
            largest ratio counts.
        floor: a sensitivity is raised to at least ``floor`` times the median (a tensor the
            calibration inputs do not reach is barely sensitive, not free).
        reference: the original outputs, if already computed.
        progress: ``progress(stage, done, total)``.

    Returns:
        ``{name: h}``, ``h`` the relative output error per unit of squared weight error.
    """
    report = progress or (lambda stage, done, total: None)
    ref = list(reference) if reference is not None else list(calibration({}))
    if not _float_outputs(ref):
        raise InvalidOption("the model has no float output to measure")
    h: dict[str, float] = {}
    for i, n in enumerate(names):
        report("sensitivity", i, len(names))
        a, dt = arrays[n]
        x = quantize.to_float(a, dt).astype(np.float64)
        best = 0.0
        for bits in probe_bits:
            step = quantize.step_for_bits(a, dt, bits)
            if not step > 0:
                continue
            q = quantize.dequantize(quantize.quantize(a, dt, step), dt, step).reshape(a.shape)
            err = float(np.sum((quantize.to_float(q, dt).astype(np.float64) - x) ** 2))
            if err <= 0:
                continue
            d = output_error(ref, calibration({n: q}))
            best = max(best, d / err if np.isfinite(d) else float("inf"))
        h[n] = best
        log.info("%s: measured sensitivity %.4g", n, best)
    report("sensitivity", len(names), len(names))
    finite = np.array([v for v in h.values() if np.isfinite(v) and v > 0])
    low = floor * float(np.median(finite)) if finite.size else 1.0
    top = float(finite.max()) * 1e6 if finite.size else 1.0
    for n, v in h.items():
        h[n] = top if not np.isfinite(v) else max(v, low)  # non-finite outputs: as sensitive as can be, kept fine
    return h


def _summary(search: Search, sweep, target, drop, base, value, metric: str) -> dict:
    """The summary stored in the file (:mod:`ecnn.budget.summary`), with the metric's name."""
    summ = budget_summary.build(search, sweep, target, drop, SENSITIVITY, base, value)
    summ["metric_name"] = metric
    return summ


def metric_of(data: bytes) -> str | None:
    """The metric a file made by :func:`compress` was measured with (from its summary), or None."""
    import json

    from ecnn import file as _file

    with _file.EcnnFile(data) as f:
        try:
            return json.loads(f.metadata().get(METADATA_KEY, "{}")).get("metric_name")
        except ValueError:
            return None


def compress(
    arrays: Mapping[str, tuple[np.ndarray, object]],
    names: Sequence[str],
    calibration: Calibration,
    path=None,
    *,
    target_bytes: int | None = None,
    max_metric_drop: float | None = None,
    metric: str | None = None,
    config: BudgetConfig = BudgetConfig(min_ndim=2),
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> CompressResult:
    """Steps per tensor for a size or metric budget, sensitivities measured on the outputs.

    Args:
        arrays: every tensor of the file, ``{name: (storage array, dtype)}`` (those not in
            ``names`` are stored exactly, e.g. an ONNX graph).
        names: the tensors to allocate (floats).
        calibration: ``calibration({name: storage array}) -> outputs``, see
            :func:`output_sensitivities`; also computes the metric.
        path: write the file here (atomically) as well as returning its bytes.
        target_bytes: the file must be at most this many bytes.
        max_metric_drop: the smallest file (within ``target_bytes``, if given) whose
            metric stays at most this many points below 100, the original's.
        metric: ``"top1"`` (percent of rows of the first float output whose argmax
            agrees with the original's) or ``"cosine"`` (100 times the mean cosine
            similarity of its rows); None: :func:`default_metric`.
        config: candidate options (:class:`BudgetConfig`; ``floor``, ``steps_per_octave``,
            ``max_bits``, ``strengths``, ``rate_sample``, ``rtol`` are used).
        metadata: string-to-string map stored in the file.
        progress: ``progress(stage, done, total)``.

    Returns:
        A :class:`ecnn.budget.CompressResult`; ``metric`` and ``base_metric`` (100) are the
        chosen metric on the calibration inputs.

    Raises:
        InvalidOption: no budget, bad options, or nothing to allocate.
        BudgetTooSmall: ``target_bytes`` is below the smallest file the allocation can make.
        MetricNotReached: even the largest allocation considered drops the metric by more
            than ``max_metric_drop``.
    """
    target = check_target(target_bytes)
    if metric is not None and metric not in METRICS:
        raise InvalidOption(f"metric must be one of {METRICS}, got {metric!r}")
    drop = check_drop(max_metric_drop, calibration)
    if target is None and drop is None:
        raise InvalidOption("give target_bytes, max_metric_drop, or both")
    if not names:
        raise InvalidOption("no float tensor to quantize")
    report = progress or (lambda stage, done, total: None)
    ref = list(calibration({}))
    metric = metric or default_metric(ref)
    score = top1_agreement if metric == "top1" else cosine
    h = output_sensitivities(arrays, names, calibration, floor=config.floor, reference=ref, progress=progress)
    tensors = [Tensor(n, arrays[n][0], arrays[n][1], h[n]) for n in names]  # plain grids (pack --bits N) among the candidates
    report("candidates", 0, len(tensors))
    measure_all(tensors, config, False, report)

    search = Search(dict(arrays), tensors, EncodeConfig(lossless=True), metadata)
    room = budget_summary.summary_room(target if target is not None else search.size(search.last))
    search.summary = "x" * room
    sweep: list[SweepPoint] = []
    k = search.last
    if target is not None:
        smallest = search.size(0)
        if smallest > target:
            raise BudgetTooSmall(f"target {target} bytes is below the smallest file this allocation can make ({smallest} bytes)")
        k = search.fit(target)
        log.info("largest allocation within %d bytes: %d of %d moves, %d bytes", target, k, search.last, search.size(k))
    limit = room
    if target is not None and drop is None:
        # Use the room the reservation leaves: size the file with the summary it will carry
        # (and room for the metric's figures), then move up the path.
        text = budget_summary.summary_json(_summary(search, sweep, target, drop, None, None, metric), room - SUMMARY_SPARE)
        limit = len(text) + SUMMARY_SPARE
        search.summary = text + " " * SUMMARY_SPARE
        k = search.fit(target, lo=k)

    errors: dict = {}

    def run(kk) -> float:  # an allocation on the path, or a choice
        outs = calibration({n: a for n, (a, _) in search.dequantized(kk).items()})
        m = score(ref, outs)
        path_k = isinstance(kk, (int, np.integer))
        errors[kk if path_k else "plain"] = output_error(ref, outs)
        sweep.append(SweepPoint(search.size(kk), search.cum_dist[kk] if path_k else search.distortion(kk), m))
        log.info("allocation %s: %d bytes, %s %.6g", kk if path_k else "plain", search.size(kk), metric, m)
        return m

    base = 100.0
    report("evaluate", 0, 1)
    value = run(k)
    if drop is not None:
        if base - value > drop:
            raise MetricNotReached(
                f"the largest allocation ({search.size(k)} bytes) drops {metric} by {base - value:.6g} points "
                f"(to {value:.6g}), more than {drop}"
            )
        k, value = bisect_metric(search, run, k, value, base - drop, config.rtol, report)
    choice = search.choice(k)
    plain_bits = None
    if target is not None and drop is None:
        plain = _plain_fit(search, target, k)
        if plain is not None:  # the largest plain --bits N file that fits: kept when its outputs are no worse
            bits, pch = plain
            m_plain = run(pch)
            log.info("plain --bits %d fits: output error %.6g (allocation: %.6g)", bits, errors["plain"], errors[k])
            if errors["plain"] <= errors[k]:
                plain_bits, choice, value = bits, pch, m_plain
    data = search.write(choice, _summary(search, sweep, target, drop, base, value, metric), limit, target, plain_bits, metadata, path)
    report("done", 1, 1)
    return result(search, tensors, choice, data, value, base, sweep, plain_bits, True)


def compress_onnx(
    source,
    path,
    feeds: Mapping[str, np.ndarray],
    *,
    target_bytes: int | None = None,
    max_drop: float | None = None,
    metric: str | None = None,
    config: BudgetConfig = ONNX_CONFIG,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    base_dir=None,
) -> CompressResult:
    """Pack an ONNX model to a size or accuracy budget: a step per weight, chosen on its outputs in ONNX Runtime.

    The weights are split out as ``ecnn pack model.onnx`` does
    (:func:`ecnn.onnx.packable`); each float weight with at least
    ``config.min_ndim`` dimensions (2 by default, as plain ``pack``
    quantizes) gets a step by :func:`compress`, its sensitivity the output
    error ONNX Runtime computes on ``feeds`` with that weight rounded, in one
    :class:`ecnn.onnx.WeightSession` (the weights fed as graph inputs); the
    others are stored exactly. The file is an ordinary packed ONNX model
    (:func:`ecnn.onnx.inference_session`, :func:`ecnn.onnx.load_model`). No
    torch is needed.

    Args:
        source: a ``.onnx`` path or an ``onnx.ModelProto`` (not modified).
        path: the ``.ecnn`` file to write (atomically).
        feeds: calibration inputs ``{input name: array}`` (e.g. from :func:`ecnn.onnx.check_inputs`).
        target_bytes: the file must be at most this many bytes.
        max_drop: the smallest file whose ``metric`` on ``feeds`` is at most this many points
            below the original's 100.
        metric: ``"top1"`` or ``"cosine"`` (see :func:`compress`); None: top1 for a
            classifier-like first float output (last dimension at least 2), else cosine.
        config: a :class:`BudgetConfig` (default :data:`ONNX_CONFIG`; ``exact`` patterns keep tensors exact).
        metadata: string-to-string map stored in the file.
        progress: ``progress(stage, done, total)``.
        base_dir: folder of the model's external data (default: the ``.onnx`` file's folder).

    Returns:
        A :class:`CompressResult` (``metric`` on ``feeds``).

    Raises:
        InvalidOption: no budget or bad options; nothing to allocate; ONNX Runtime cannot run
            the model on ``feeds``.
        BudgetTooSmall, MetricNotReached: as :func:`compress`.
        UnreadableInput, UnsafeInput: as :func:`ecnn.onnx.pack`.

    Example:
        >>> from ecnn.budget.measured import compress_onnx            # doctest: +SKIP
        >>> res = compress_onnx("model.onnx", "model.ecnn", {"x": x}, target_bytes=200_000)
    """
    import fnmatch

    from ecnn import onnx as eonnx

    if not isinstance(config, BudgetConfig):
        raise InvalidOption("config must be a BudgetConfig")
    p = eonnx.packable(source, base_dir)
    names = [
        n
        for n, (a, dt) in p.tensors.items()
        if n in p.feedable
        and dt.name in eonnx.FEED_DTYPES
        and a.ndim >= config.min_ndim
        and a.size > 0
        and not any(fnmatch.fnmatchcase(n, pat) for pat in config.exact)
        and np.isfinite(a).all()
    ]
    if not names:
        raise InvalidOption(
            f"the model has no float weight to allocate ({', '.join(eonnx.FEED_DTYPES)} with "
            f"{config.min_ndim}+ dimensions, outside the graph)"
        )
    sess = eonnx.WeightSession(p.model, p.tensors, names, feeds)
    md = {**dict(metadata or {}), **p.metadata}
    return compress(
        p.tensors, names, sess.run, path, target_bytes=target_bytes, max_metric_drop=max_drop, metric=metric,
        config=config, metadata=md, progress=progress,
    )  # fmt: skip
