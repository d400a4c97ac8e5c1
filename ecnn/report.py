"""``ecnn report``: an offline HTML page about a ``.ecnn`` file, with PNG plots.

The page (one HTML file and a folder of PNGs beside it, no scripts, nothing
fetched) shows:

* a table of tensors (shape, quantizer, bytes, bits per value);
* per-tensor bits per value and coded bytes;
* histograms of the largest quantized tensors' values as stored, over the
  original values when the original weights are given;
* the rate-distortion path and evaluated points that ``ecnn.compress`` stored
  in the file (metadata key ``ecnn.budget``), if any;
* with an evaluation function, a rate-accuracy sweep: the file's weights (or
  the original's) recompressed with ``ecnn.compress`` at fractions of the
  file's size and with uniform bits, each evaluated.

Needs matplotlib (``pip install ecnn[report]``); importing this module does not
import it, nor torch.
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ecnn.errors import InvalidOption

log = logging.getLogger(__name__)

SWEEP_FRACTIONS = (0.3, 0.45, 0.6, 0.8, 1.0)
SWEEP_BITS = (2, 3, 4, 5, 6, 8)
HISTOGRAMS = 6


def _figure(w: float = 8.0, h: float = 3.6):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InvalidOption("ecnn report needs matplotlib: pip install 'ecnn[report]'") from None
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1) :]


def _plot_layers(infos, out: Path) -> None:
    fig = _figure(max(6.0, 0.28 * len(infos) + 2), 5.0)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(infos))
    ax1.bar(x, [i.bits_per_value for i in infos], color="#3572a5")
    ax1.set_ylabel("bits per value")
    ax1.set_title("per tensor")
    ax2.bar(x, [i.coded_bytes for i in infos], color="#c05030")
    ax2.set_ylabel("coded bytes")
    ax2.set_yscale("log")
    ax2.set_xticks(x, [_short(i.name) for i in infos], rotation=90, fontsize=7)
    fig.savefig(out)


def _plot_histograms(f, names: list[str], original: Mapping | None, out: Path) -> None:
    from ecnn import quantize
    from ecnn.dtypes import get as get_dtype

    cols = 2
    rows = max(1, (len(names) + cols - 1) // cols)
    fig = _figure(9.0, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names):
        arr, dt = f.get_array(name)
        after = quantize.to_float(arr, dt).astype(np.float64).ravel()
        lo, hi = float(after.min()), float(after.max())
        before = None
        if original is not None and name in original:
            before = np.asarray(original[name], np.float64).ravel()
            lo, hi = min(lo, float(before.min())), max(hi, float(before.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 121)
        if before is not None:
            ax.hist(before, bins=bins, color="#999999", alpha=0.7, label="original")
        ax.hist(after, bins=bins, color="#3572a5", alpha=0.7, label="in the file")
        ax.set_yscale("log")
        ax.set_title(_short(name, 48) + f" ({get_dtype(dt.name).name})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.savefig(out)


def _plot_budget(summary: dict, out: Path) -> None:
    fig = _figure(9.0, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    path = summary.get("path") or []
    if path:
        ax1.plot([p[0] for p in path], [max(p[1], 1e-30) for p in path], ".-", color="#3572a5")
        ax1.set_yscale("log")
    ax1.set_xlabel("predicted payload bytes")
    ax1.set_ylabel("predicted distortion")
    ax1.set_title("allocation path", fontsize=9)
    pts = [p for p in summary.get("sweep") or [] if p[2] is not None]
    if pts:
        ax2.plot([p[0] for p in pts], [p[2] for p in pts], "o", color="#c05030", label="evaluated")
        if summary.get("base_metric") is not None:
            ax2.axhline(summary["base_metric"], color="#777777", ls="--", lw=1, label="original")
        ax2.legend(fontsize=7)
    ax2.set_xlabel("file bytes")
    ax2.set_ylabel("metric")
    ax2.set_title("evaluated during the search", fontsize=9)
    fig.savefig(out)


def _plot_sweep(points: list[tuple[str, int, float]], base: float | None, out: Path) -> None:
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    for method, style in (("ecnn.compress", "o-"), ("uniform bits", "s--")):
        pts = sorted((b, m) for meth, b, m in points if meth == method)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
    if base is not None:
        ax.axhline(base, color="#777777", ls=":", lw=1, label="weights given")
    ax.set_xscale("log")
    ax.set_xlabel("file bytes")
    ax.set_ylabel("metric")
    ax.set_title("rate-accuracy sweep", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(out)


def _sweep(weights: Mapping, size: int, evaluate: Callable, progress) -> tuple[list, float]:
    """(method, bytes, metric) points: ecnn.compress at fractions of ``size`` and uniform bits."""
    import ecnn
    from ecnn import budget
    from ecnn.errors import BudgetTooSmall

    base = float(evaluate(dict(weights)))
    points = []
    pl = budget.plan(dict(weights))
    total = len(SWEEP_FRACTIONS) + len(SWEEP_BITS)
    for i, frac in enumerate(SWEEP_FRACTIONS):
        if progress:
            progress("sweep", i, total)
        try:
            r = pl.compress(target_bytes=max(1, int(size * frac)))
        except BudgetTooSmall:
            continue
        points.append(("ecnn.compress", r.size, float(evaluate(ecnn.decode(r.data)))))
    for j, bits in enumerate(SWEEP_BITS):
        if progress:
            progress("sweep", len(SWEEP_FRACTIONS) + j, total)
        data = ecnn.encode(dict(weights), bits=bits)
        points.append(("uniform bits", len(data), float(evaluate(ecnn.decode(data)))))
    return points, base


def write_report(
    ecnn_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    evaluate: Callable | None = None,
    original: Mapping | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    limits=None,
) -> Path:
    """Write the HTML report of a ``.ecnn`` file and its PNGs (in ``<out stem>_files/``).

    Args:
        ecnn_path: the file to describe.
        out: the HTML file to write.
        evaluate: ``evaluate(state_dict) -> float`` (higher is better; gets
            ``{name: torch.Tensor}``); adds the rate-accuracy sweep.
        original: the original weights (``{name: array or tensor}``) for the
            before/after histograms; the sweep starts from them when given.
        progress: ``progress(stage, done, total)`` callback.
        limits: caps on what the file may make the reader allocate (:class:`ecnn.Limits`;
            None: the defaults).

    Returns:
        The path of the HTML file.
    """
    import ecnn

    limits = ecnn.Limits() if limits is None else limits
    from ecnn.budget import METADATA_KEY

    out = Path(out)
    assets = out.with_name(out.stem + "_files")
    assets.mkdir(parents=True, exist_ok=True)
    orig_np = None
    if original is not None:
        orig_np = {}
        for k, v in original.items():
            v = v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            if v.dtype.kind == "f":
                orig_np[k] = v
    with ecnn.open(ecnn_path, limits=limits) as f:
        infos = f.infos()
        meta = f.metadata()
        size = f.size
        quantized = sorted((i for i in infos if i.step is not None), key=lambda i: -i.numel)[:HISTOGRAMS]
        images = []
        _plot_layers(infos, assets / "layers.png")
        images.append(("Bits per value and bytes per tensor", "layers.png"))
        if quantized:
            _plot_histograms(f, [i.name for i in quantized], orig_np, assets / "histograms.png")
            images.append(
                ("Values of the largest quantized tensors" + (" (grey: original)" if orig_np else ""), "histograms.png")
            )
    summary = None
    if METADATA_KEY in meta:
        try:
            summary = json.loads(meta[METADATA_KEY])
        except ValueError:
            summary = None
        if isinstance(summary, dict):
            _plot_budget(summary, assets / "budget.png")
            images.append(("Allocation made by ecnn.compress", "budget.png"))
    sweep_rows = []
    if evaluate is not None:
        weights = original if original is not None else ecnn.load_file(ecnn_path, limits=limits)
        points, base = _sweep(weights, size, evaluate, progress)
        _plot_sweep(points, base, assets / "sweep.png")
        images.append(("Rate-accuracy sweep", "sweep.png"))
        sweep_rows = [(m, b, v) for m, b, v in sorted(points, key=lambda p: (p[0], p[1]))]
        sweep_rows.insert(0, ("weights given", None, base))

    raw = sum(i.nbytes for i in infos)
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>ecnn report: {e(Path(ecnn_path).name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px}td.n{text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>{e(Path(ecnn_path).name)}</h1>",
        f"<p>{size:,} bytes, {len(infos)} tensors, {raw:,} bytes decoded ({raw / max(size, 1):.2f}x).</p>",
    ]
    if summary:
        parts.append(
            "<p>Made by ecnn.compress: "
            + e(", ".join(f"{k} = {summary.get(k)}" for k in ("target_bytes", "max_metric_drop", "sensitivity", "base_metric", "metric")))
            + "</p>"
        )
    for title, name in images:
        parts.append(f"<h2>{e(title)}</h2><img src='{e(assets.name)}/{e(name)}' alt='{e(title)}'>")
    if sweep_rows:
        parts.append("<h2>Sweep points</h2><table><tr><th>method</th><th>bytes</th><th>metric</th></tr>")
        for m, b, v in sweep_rows:
            parts.append(f"<tr><td>{e(m)}</td><td class=n>{'' if b is None else f'{b:,}'}</td><td class=n>{v:.6g}</td></tr>")
        parts.append("</table>")
    parts.append(
        "<h2>Tensors</h2><table><tr><th>tensor</th><th>shape</th><th>dtype</th><th>representation</th>"
        "<th>step</th><th>bytes</th><th>bits/value</th></tr>"
    )
    for i in infos:
        step = "" if i.step is None else f"{i.step:.4g}"
        parts.append(
            f"<tr><td>{e(i.name)}</td><td>{e('x'.join(map(str, i.shape)))}</td><td>{e(i.dtype)}</td>"
            f"<td>{e(i.representation)}</td><td class=n>{step}</td><td class=n>{i.coded_bytes:,}</td>"
            f"<td class=n>{i.bits_per_value:.3f}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    from ecnn.container.writer import atomic_write

    atomic_write(out, ["\n".join(parts).encode()])
    return out
