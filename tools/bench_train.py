"""Entropy-constrained training benchmark: run the table's jobs, print it, record it in bench/RESULTS.md.

Each job is one ``tools/train.py`` command (a model, a dataset, a method and a
lambda); its JSON result lands in ``bench/train/``. ``--collect`` skips
training and only tabulates the JSON files already there.

Examples:
    .venv/bin/python tools/bench_train.py --only lenet300      # run the LeNet-300-100 jobs, append
    .venv/bin/python tools/bench_train.py --collect --no-append  # print the table of what is there
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import train  # noqa: E402

log = logging.getLogger("bench_train")
OUT = ROOT / "bench" / "train"

# (model, arguments of tools/train.py): each row of the table, with and without each method.
JOBS: list[tuple[str, str]] = [
    ("lenet300", "--model lenet300 --method none --lam 0 --epochs 4"),
    ("lenet300", "--model lenet300 --method ect --sweep 0.1,0.3,1 --epochs 6 --assign-weight 0.1"),
    ("lenet300", "--model lenet300 --method ect --lam 1 --lam-warmup 400 --epochs 6 --assign-weight 0.1 --name lenet300-mnist-ect-warmup"),
    ("lenet300", "--model lenet300 --method ect --quantizer lloyd --lam 1 --lam-warmup 400 --epochs 6 --assign-weight 0.1 --name lenet300-mnist-ect-lloyd-warmup"),
    ("lenet300", "--model lenet300 --method hemp --order 2 --lam 0.3 --epochs 6 --assign-weight 0.1"),
    ("lenet300", "--model lenet300 --method magnitude --sparsity 0.9 --lam 0 --epochs 4"),
    ("lenet300", "--model lenet300 --method magnitude --sparsity 0.9 --lam 0.3 --epochs 4 --assign-weight 0.1"),
    ("lenet300", "--model lenet300 --method ebp --prune-energy 0.6 --prune-ramp 800 --lam 0 --epochs 4"),
    ("lenet300", "--model lenet300 --method ebp --prune-energy 0.3 --prune-ramp 800 --lam 0.3 --epochs 4 --assign-weight 0.1"),
    # EBP against magnitude pruning at equal accuracy (docs/training.md): each one's smallest file at >= 98.0%, and ECT alone.
    ("lenet300", "--model lenet300 --method magnitude --sparsity 0.99 --lam 0 --epochs 4 --name lenet300-mnist-magnitude-s0.99"),
    ("lenet300", "--model lenet300 --method ebp --prune-energy 0.8 --prune-ramp 400 --lam 0 --epochs 4 --name lenet300-mnist-ebp-e0.8-r400"),
    ("lenet300", "--model lenet300 --method magnitude --sparsity 0.99 --lam 0.3 --epochs 4 --assign-weight 0.1 --name lenet300-mnist-magnitude-s0.99"),
    ("lenet300", "--model lenet300 --method ebp --prune-energy 0.45 --prune-ramp 800 --lam 0.3 --epochs 4 --assign-weight 0.1 --name lenet300-mnist-ebp-e0.45-r800"),
    ("lenet300", "--model lenet300 --method ect --lam 0.3 --epochs 4 --assign-weight 0.1 --name lenet300-mnist-ect-e4"),
    ("lenet300", "--model lenet300 --method ect --lam 0.5 --epochs 4 --assign-weight 0.1 --name lenet300-mnist-ect-e4"),
    ("lenet300", "--model lenet300 --method ect --lam 0.5 --lam-warmup 400 --epochs 15 --assign-weight 0.1 --group-lam 5e-5 --name lenet300-mnist-ect-group5e-5"),
    ("lenet300", "--model lenet300 --method ect --lam 0.5 --lam-warmup 400 --epochs 15 --assign-weight 0.1 --group-lam 5e-5 --finetune-epochs 3 --finetune-lr 2e-4 --name lenet300-mnist-ect-group5e-5-ft3"),
    ("lenet5", "--model lenet5 --base-epochs 6 --method ect --sweep 0.2,0.3,0.4,0.5 --epochs 4 --assign-weight 0.1"),
    ("lenet5", "--model lenet5 --base-epochs 6 --method ect --lam 0.5 --lam-warmup 400 --assign-weight 0.1 --group-lam 1.5e-4 --epochs 8 --finetune-epochs 8 --name lenet5-mnist-ect-group1.5e-4-ft8"),
    ("lenet5", "--model lenet5 --base-epochs 6 --method ect --lam 0.5 --lam-warmup 400 --epochs 4 --assign-weight 0.1 --name lenet5-mnist-ect-warmup"),
    ("digit", "--model digit --method ect --lam 0.2 --epochs 2 --assign-weight 0.1"),
    ("digit", "--model digit --method ect --lam 0.5 --lam-warmup 400 --assign-weight 0.1 --group-lam 1.5e-4 --epochs 4 --finetune-epochs 2 --name digit-mnist-ect-group1.5e-4-ft2"),
    ("digit", "--model digit --method ect --lam 0.5 --lam-warmup 400 --assign-weight 0.1 --group-lam 3e-4 --epochs 4 --finetune-epochs 3 --name digit-mnist-ect-group3e-4-ft3"),
    ("digit", "--model digit --method ect --lam 0.5 --lam-warmup 400 --assign-weight 0.1 --group-lam 6e-4 --epochs 4 --finetune-epochs 4 --name digit-mnist-ect-group6e-4-ft4"),
    ("vgg", "--model vgg --dataset fashion --base-epochs 3 --method ect --lam 0.1 --epochs 2 --assign-weight 0.1"),
]


def table(results: list[dict]) -> str:
    """Markdown table of results (one row per run)."""
    head = (
        "| model | dataset | method | λ | params | widths | file bytes | ratio | bits/param | float acc | .ecnn acc | drop "
        "| rate figure / coded | order-0 figure / coded | command |\n"
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in results:
        method = r["method"] + (f" + group λ {r['group_lam']:g}" if r.get("group_lam") else "")
        widths = "-".join(map(str, r["widths"])) if r.get("widths") else "full"
        rows.append(
            f"| {r['model']} | {r['dataset']} | {method} | {r['lam']:g} | {r['params']:,} | {widths} | {r['file_bytes']:,} "
            f"| {r['ratio']:.1f}x | {r['bits_per_param']:.3f} | {r['float_acc']:.2f}% | {r['ecnn_acc']:.2f}% "
            f"| {r['drop']:+.2f} | {100 * r['rate_vs_coded']:+.2f}% | {100 * r['order0_vs_coded']:+.2f}% | `{r['command']}` |"
        )
    return head + "\n".join(rows) + "\n"


def symbol_table(results: list[dict]) -> str:
    """Per-tensor symbol statistics: what the codec sees."""
    lines = [
        "| run | tensor | params | levels | zeros | step | coded B | order-0 est. B | ctx-1 entropy B | ctx-2 entropy B |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for t in r["tensors"]:
            if t["numel"] < 1000:
                continue
            lines.append(
                f"| {r['run']} | {t['name']} | {t['numel']:,} | {t['levels']} | {100 * t['zero_fraction']:.1f}% "
                f"| {t['step']:.4g} | {t['coded_bytes']:,} | {t['estimate_bits'] / 8:,.0f} "
                f"| {t['context2_bits'] / 8:,.0f} | {t['context3_bits'] / 8:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def collect(names: list[str] | None = None) -> list[dict]:
    files = sorted(OUT.glob("*.json"))
    res = [json.loads(f.read_text()) for f in files]
    return [r for r in res if names is None or r["run"] in names]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help="comma-separated models to run (default: all)")
    p.add_argument("--collect", action="store_true", help="do not train; tabulate bench/train/*.json")
    p.add_argument("--no-append", action="store_true", help="print only; do not record it in bench/RESULTS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.time()
    runs = None
    if not args.collect:
        only = set(args.only.split(",")) if args.only else None
        runs = []
        for model, job in JOBS:
            if only and model not in only:
                continue
            log.info("job: %s", job)
            train.main(shlex.split(job))
            a = train.parse(shlex.split(job))
            stem = a.name or f"{a.model}-{a.dataset}-{a.method}"
            lams = [float(x) for x in a.sweep.split(",")] if a.sweep else [a.lam]
            runs += [f"{stem}-lam{lam:g}" for lam in lams]
    results = collect(runs)
    text = table(results) + "\nSymbol statistics of the quantized tensors with 1,000+ parameters:\n\n" + symbol_table(results)
    print(text)
    if not args.no_append:
        import torch
        from benchlib import machine, record_results

        bench = "bench_train" if not args.only else f"bench_train --only {args.only}"
        cmd = "python tools/bench_train.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        head = (
            f"## {bench}: entropy-constrained training ({time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())})\n\n"
            f"- machine: {machine()}; Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread "
            "(the figures are those of each run's JSON, from the machine that ran it)\n"
            f"- command (from the repository root, after `bash tools/setup_bench.sh`): `.venv/bin/{cmd}` ({time.time() - t0:.0f} s)\n"
            "- ratio = 4 bytes x parameters of the original network / bytes of the whole .ecnn file; widths: "
            "the layer widths after narrowing (group sparsity; full: not narrowed); accuracies on the 10k test set; "
            "float acc is the same net trained without regularizer or quantizer; drop = float - .ecnn (points)\n"
            "- rate figure / coded: the final rate figure (the codec's estimate of the trained symbols) against the real coded "
            "bytes of the quantized tensors; order-0 figure: the value the regularizer trains on (order-0 coder); for a "
            "narrowed run (widths given) both figures and the symbol statistics describe the tensors before the last "
            "narrowing, the coded bytes those after, so the figures overstate the rate\n\n"
        )
        record_results(bench, head + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
