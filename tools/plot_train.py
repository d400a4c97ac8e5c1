"""Rate-accuracy plots of the training benchmarks against published compression results.

Reads the ``bench/train/*.json`` results that ``tools/train.py`` writes and
draws, for LeNet-300-100, LeNet-5 and the digit-recognizer CNN on MNIST, the compression ratio
(4 bytes x the original parameter count over the bytes of the whole .ecnn
file) against the test error, with the published points of other methods as
their papers state them (their ratios count the weights' storage as each
paper defines it, not necessarily a whole file; nothing of theirs is run here).

Example:
    .venv/bin/python tools/plot_train.py            # writes bench/train/<model>-mnist-rate-accuracy.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "train"
log = logging.getLogger("plot_train")

# (method, ratio, test error %), as published.
PUBLISHED: dict[str, list[tuple[str, float, float]]] = {
    "lenet300": [
        ("Deep Compression (Han et al. 2016)", 40, 1.58),
        ("Soft weight-sharing (Ullrich et al. 2017)", 64, 1.94),
        ("Bayesian Compression (Louizos et al. 2017)", 113, 1.8),
    ],
    "lenet5": [
        ("Deep Compression (Han et al. 2016)", 39, 0.74),
        ("Soft weight-sharing (Ullrich et al. 2017)", 162, 0.97),
        ("Weightless (Reagen et al. 2018)", 382, 1.0),
        ("MIRACLE (Havasi et al. 2019)", 555, 0.69),
        ("MIRACLE (Havasi et al. 2019)", 1110, 0.96),
        ("Bayesian Compression (Louizos et al. 2017)", 771, 1.0),
    ],
}
TITLES = {"lenet300": "LeNet-300-100 on MNIST", "lenet5": "LeNet-5-Caffe on MNIST", "digit": "digit-recognizer CNN on MNIST (no published points)"}


def load(model: str, folder: Path = OUT) -> list[dict]:
    """The results of ``model`` on MNIST in ``folder``."""
    out = []
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        if r.get("model") == model and r.get("dataset") == "mnist":
            out.append(r)
    return out


def plot(model: str, results: list[dict], path: Path) -> None:
    """One rate-accuracy figure: our runs (narrowed ones apart) and the published points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.2), dpi=130)
    groups = {
        "ecnn, entropy-constrained training": [r for r in results if not r.get("widths")],
        "ecnn, + group sparsity, narrowed": [r for r in results if r.get("widths")],
    }
    for (label, rs), marker in zip(groups.items(), ("o", "*")):
        if rs:
            ax.scatter([r["ratio"] for r in rs], [100 - r["ecnn_acc"] for r in rs], marker=marker,
                       s=60 if marker == "*" else 25, label=label, zorder=3)
    markers = iter("s^vDPXh")
    seen: dict[str, str] = {}
    for name, ratio, err in PUBLISHED.get(model, []):
        if name not in seen:
            seen[name] = next(markers)
            ax.scatter([ratio], [err], marker=seen[name], facecolors="none", edgecolors="k", label=f"{name}, published")
        else:
            ax.scatter([ratio], [err], marker=seen[name], facecolors="none", edgecolors="k")
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (float32 bytes / file bytes)")
    ax.set_ylabel("test error (%)")
    ax.set_title(TITLES[model])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    log.info("wrote %s", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="lenet300,lenet5,digit")
    p.add_argument("--results", default=str(OUT), help="folder of the JSON results")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for model in args.models.split(","):
        if model not in TITLES:
            raise SystemExit(f"unknown model {model!r}; choose from {sorted(TITLES)}")
        results = load(model, Path(args.results))
        plot(model, results, Path(args.out) / f"{model}-mnist-rate-accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
