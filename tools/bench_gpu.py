#!/usr/bin/env python3
"""Loading .ecnn files onto a CUDA GPU: all-MiniLM-L6-v2 and the MNIST CNN, against safetensors and torch.load.

Two steps, so that the measurement can run on a GPU machine that has PyTorch
but none of the benchmark packages (and no network):

``--prepare DIR`` (on a machine set up with ``tools/setup_bench.sh``) writes
into DIR everything the measurement needs, derived from the real models and
data: all-MiniLM-L6-v2 packed at 8 and 4 bits, its ``config.json``, a fixed
set of tokenized sentences and the float model's embeddings of them (computed
on the CPU); the digit-recognizer CNN packed at 8 and 4 bits from its PyTorch
weights and from its ONNX export, its ``model.py``, its float accuracies, and
the 10,000 MNIST test images (exactly k/256 in the source, stored as k).

``--inputs DIR`` (on the GPU machine) then measures, in one process:

* that every tensor decoded onto the GPU is bit-identical to the CPU decode;
* MiniLM load time onto ``cuda`` (median of ``--repeat`` after one warm-up,
  with ``torch.cuda.synchronize``): ``ecnn.torch.load_into`` into a BertModel
  already on the GPU, ``ecnn.torch.load_file(device="cuda")``, with 1 and
  more decoding threads, against ``safetensors.torch.load_file(device="cuda")``
  and ``torch.load(map_location="cuda")`` of float32 files of the same tensors
  (the dequantized 8-bit weights written as float32: the original float file
  is larger than what travels to such a machine; the byte count and layout
  are the same), and the CPU-only decode of the same file for reference;
* host peak RSS above the RSS before each load (VmHWM reset with
  ``/proc/self/clear_refs``) and GPU peak memory above what was allocated
  before it;
* the MiniLM sentence embeddings computed on the GPU from the 8- and 4-bit
  files, by cosine against the float model's;
* MNIST test accuracy of the CNN loaded onto the GPU from each file, and
  through ``ecnn.onnx.inference_session`` with the best ONNX Runtime provider
  present (CUDA if the installed onnxruntime has it);
* decoding to the CPU with 1 to ``os.cpu_count()`` threads.

Without ``--inputs``, it prepares into ``--out-dir`` and measures from there.

Usage::

    .venv/bin/python tools/bench_gpu.py --prepare /tmp/gpu-inputs          # any machine, after setup_bench.sh
    python3 tools/bench_gpu.py --inputs /tmp/gpu-inputs [--results FILE]   # on the CUDA machine
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402

from bench_load import SENTENCES, embed, model_dir  # noqa: E402
from benchlib import reset_peak, status_kib  # noqa: E402

log = logging.getLogger("bench_gpu")


# --- preparing the inputs ---------------------------------------------------------------


def prepare(out: Path) -> None:
    """Write the packed models, inputs and float references into ``out``."""
    import torch
    from transformers import AutoTokenizer, BertModel

    import bench_mnist_cnn as mc
    import ecnn
    import ecnn.onnx as eo
    import ecnn.torch as et
    from safetensors.torch import load_file

    out.mkdir(parents=True, exist_ok=True)
    d = model_dir()
    sd = load_file(str(d / "model.safetensors"))
    for bits in (8, 4):
        ecnn.save_file(sd, out / f"minilm-{bits}.ecnn", bits=bits)
    shutil.copy(d / "config.json", out / "minilm-config.json")
    model = BertModel.from_pretrained(str(d), add_pooling_layer=True).eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    enc = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    np.savez(out / "minilm-inputs.npz", **{k: v.numpy() for k, v in enc.items()})
    np.save(out / "minilm-ref-emb.npy", embed(model, {k: v for k, v in enc.items()}).numpy())

    x, y = mc.load_mnist_test()
    k = np.round((x.numpy() * mc.STD + mc.MEAN) * 256).astype(np.uint8)  # the source pixels are exactly k/256
    np.savez_compressed(out / "mnist-test.npz", k=k.reshape(-1, 28, 28), y=y)
    shutil.copy(mc.DIGIT_DIR / "model.py", out / "cnn_model.py")
    CNN = mc.cnn_class()
    cnn = CNN()
    cnn.load_state_dict(torch.load(mc.DIGIT_DIR / "models" / "handwriting_model.pth", map_location="cpu", weights_only=True))
    cnn.eval()
    onnx_path = out / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn, (x[:2],), str(onnx_path), dynamo=True, input_names=["x"], dynamic_shapes={"x": {0: "batch"}})
    for bits in (8, 4):
        et.save_model(cnn, out / f"cnn-{bits}.ecnn", bits=bits)
        eo.save_model(onnx_path, out / f"cnn-onnx-{bits}.ecnn", bits=bits)
    float_acc = mc.acc(mc.torch_predict(cnn, x), y)
    for p in out.glob("cnn.onnx*"):
        p.unlink()
    manifest = {
        "minilm_float_bytes": int((d / "model.safetensors").stat().st_size),
        "cnn_float_acc_cpu": float_acc,
        "mnist_mean": mc.MEAN,
        "mnist_std": mc.STD,
        "sentences": len(SENTENCES),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log.info("prepared %s: %s", out, ", ".join(sorted(p.name for p in out.iterdir())))


# --- measuring -------------------------------------------------------------------------


def _digest(t) -> str:
    t = t.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(t.view(__import__("torch").uint8).numpy().tobytes()).hexdigest()


class Timer:
    """Median wall time of a CUDA load, host peak RSS and GPU peak memory above the start."""

    def __init__(self, repeat: int):
        self.repeat = repeat

    def run(self, fn):
        import torch

        times, host, gpu = [], [], []
        for i in range(self.repeat + 1):  # the first run warms up (page cache, CUDA kernels, allocator)
            torch.cuda.synchronize()
            before_gpu = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            rss0 = status_kib("VmRSS")
            reset = reset_peak()
            t0 = time.perf_counter()
            res = fn()
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if i:
                times.append(dt)
                host.append((status_kib("VmHWM") - rss0) * 1024 if reset else None)
                gpu.append(torch.cuda.max_memory_allocated() - before_gpu)
            del res
        return {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "host_peak": max(h for h in host) if all(h is not None for h in host) else None,
            "gpu_peak": max(gpu),
        }


def measure(inp: Path, repeat: int, workers_max: int) -> dict:
    import importlib.util

    import torch
    from safetensors.torch import load_file as st_load, save_file as st_save
    from transformers import BertConfig, BertModel

    import ecnn.onnx as eo
    import ecnn.torch as et

    assert torch.cuda.is_available(), "this measurement needs a CUDA device"
    dev = torch.device("cuda")
    man = json.loads((inp / "manifest.json").read_text())
    res: dict = {"device": torch.cuda.get_device_name(0), "manifest": man, "cpus": os.cpu_count()}
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "ecnn-bench-gpu"
    work.mkdir(parents=True, exist_ok=True)

    # 1. bit-identity of the GPU path, every file
    ident = {}
    for p in sorted(inp.glob("*.ecnn")):
        cpu_sd = et.load_file(p, device="cpu")
        names = [n for n in cpu_sd]
        gpu = et.load_file(p, device="cuda")
        ok = all(gpu[n].device.type == "cuda" and _digest(gpu[n]) == _digest(cpu_sd[n]) for n in names)
        ident[p.name] = {"tensors": len(names), "identical": bool(ok)}
        del cpu_sd, gpu
    res["identity"] = ident
    log.info("bit-identity: %s", ident)

    # 2. MiniLM loads onto the GPU
    p8, p4 = inp / "minilm-8.ecnn", inp / "minilm-4.ecnn"
    sd8 = et.load_file(p8)
    model_bytes = sum(v.numel() * v.element_size() for v in sd8.values())
    largest = max(v.numel() * v.element_size() for v in sd8.values())
    float_st = work / "minilm-float32.safetensors"
    float_pt = work / "minilm-float32.pt"
    st_save({k: v.contiguous() for k, v in sd8.items()}, str(float_st))
    torch.save(sd8, float_pt)
    del sd8
    cfg = BertConfig.from_json_file(str(inp / "minilm-config.json"))
    model = BertModel(cfg, add_pooling_layer=True).to(dev).eval()
    timer = Timer(repeat)
    w_many = min(8, workers_max)
    loads = [  # (method, file, load)
        (
            "safetensors.torch.load_file(device='cuda') + load_state_dict",
            float_st,
            lambda: model.load_state_dict(st_load(str(float_st), device="cuda"), strict=False),
        ),
        (
            "torch.load(map_location='cuda', weights_only=True) + load_state_dict",
            float_pt,
            lambda: model.load_state_dict(torch.load(float_pt, map_location="cuda", weights_only=True), strict=False),
        ),
        ("ecnn.torch.load_into, 8 bits", p8, lambda: et.load_into(model, p8, strict=False)),
        (
            f"ecnn.torch.load_into, 8 bits, workers={w_many}",
            p8,
            lambda: et.load_into(model, p8, strict=False, workers=w_many),
        ),
        (
            "ecnn.torch.load_file(device='cuda') + load_state_dict, 8 bits",
            p8,
            lambda: model.load_state_dict(et.load_file(p8, device="cuda"), strict=False),
        ),
        ("ecnn.torch.load_into, 4 bits", p4, lambda: et.load_into(model, p4, strict=False)),
        ("ecnn.torch.load_file(device='cpu'), 8 bits (CPU only, for reference)", p8, lambda: et.load_file(p8, device="cpu")),
    ]
    rows = []
    for name, path, fn in loads:
        r = timer.run(fn)
        rows.append({"method": name, "file_bytes": path.stat().st_size, **r})
        log.info("%s: %.3f s", name, r["median_s"])
    res["minilm_loads"] = rows
    res["minilm_model_bytes"] = model_bytes
    res["minilm_largest_bytes"] = largest

    enc = {k: torch.from_numpy(v).to(dev) for k, v in np.load(inp / "minilm-inputs.npz").items()}
    ref = np.load(inp / "minilm-ref-emb.npy")
    cos = {}
    for bits, p in ((8, p8), (4, p4)):
        et.load_into(model, p, strict=False)
        emb = embed(model, enc).numpy()
        cos[bits] = float((emb * ref).sum(1).min())
    res["minilm_cosine"] = cos
    log.info("MiniLM cosine on the GPU: %s", cos)
    del model
    torch.cuda.empty_cache()

    # 3. MNIST CNN on the GPU, and through ONNX Runtime
    import onnxruntime as ort

    spec = importlib.util.spec_from_file_location("cnn_model", inp / "cnn_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = np.load(inp / "mnist-test.npz")
    x = (torch.from_numpy(data["k"].astype(np.float32) / np.float32(256)).reshape(-1, 1, 28, 28) - man["mnist_mean"]) / man[
        "mnist_std"
    ]
    y = data["y"]
    xg = x.to(dev)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    cnn_rows = []
    for bits in (8, 4):
        row = {"bits": bits}
        for src in ("cnn", "cnn-onnx"):
            m = mod.CNN().to(dev).eval()
            et.load_into(m, inp / f"{src}-{bits}.ecnn")
            with torch.no_grad():
                pred = torch.cat([m(xg[i : i + 1000]).argmax(1) for i in range(0, len(xg), 1000)]).cpu().numpy()
            row[f"torch_gpu_{src}"] = 100.0 * float((pred == y).mean())
            if src == "cnn-onnx":
                sess = eo.inference_session(inp / f"{src}-{bits}.ecnn", providers=providers)
                name = sess.get_inputs()[0].name
                xo = x.numpy()
                po = np.concatenate([sess.run(None, {name: xo[i : i + 1000]})[0].argmax(1) for i in range(0, len(xo), 1000)])
                row["ort"] = 100.0 * float((po == y).mean())
                row["ort_providers"] = sess.get_providers()
                row["differ_torch_gpu_vs_ort"] = int((pred != po).sum())
        cnn_rows.append(row)
        log.info("CNN %d bits: %s", bits, row)
    res["cnn"] = cnn_rows

    # 4. decoding onto the CPU with more threads
    scale = []
    w = 1
    while w <= workers_max:
        t = []
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            et.load_file(p8, device="cpu", workers=w)
            if i:
                t.append(time.perf_counter() - t0)
        scale.append({"workers": w, "median_s": statistics.median(t)})
        log.info("CPU decode, %d workers: %.3f s", w, statistics.median(t))
        w *= 2
    res["cpu_scaling"] = scale
    shutil.rmtree(work, ignore_errors=True)
    return res


def table(res: dict) -> str:
    mib = lambda n: "–" if n is None else f"{n / 2**20:.1f}"  # noqa: E731
    limit = res["minilm_model_bytes"] + 2 * res["minilm_largest_bytes"]
    lines = [
        "| all-MiniLM-L6-v2 onto the GPU | file bytes | load s (median) | load s (min) | host peak RSS above start MiB "
        "| GPU peak above start MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["minilm_loads"]:
        lines.append(
            f"| {r['method']} | {r['file_bytes']:,} | {r['median_s']:.3f} | {r['min_s']:.3f} | {mib(r['host_peak'])} "
            f"| {mib(r['gpu_peak'])} |"
        )
    lines += [
        "",
        f"Model {res['minilm_model_bytes']:,} bytes decoded, largest tensor {res['minilm_largest_bytes']:,} bytes "
        f"(model + 2x largest = {mib(limit)} MiB). Embedding cosine to the float model (min over "
        f"{res['manifest']['sentences']} sentences, computed on the GPU): 8 bits {res['minilm_cosine'][8]:.6f}, "
        f"4 bits {res['minilm_cosine'][4]:.6f}.",
        "",
        "| MNIST CNN | PyTorch on GPU, from PyTorch .ecnn | PyTorch on GPU, from ONNX .ecnn | ONNX Runtime, from ONNX .ecnn "
        "| ORT providers | predictions differing (GPU PyTorch vs ORT) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in res["cnn"]:
        lines.append(
            f"| {r['bits']} bits | {r['torch_gpu_cnn']:.2f} | {r['torch_gpu_cnn-onnx']:.2f} | {r['ort']:.2f} "
            f"| {', '.join(r['ort_providers'])} | {r['differ_torch_gpu_vs_ort']} |"
        )
    lines += [
        "",
        f"Float CNN on the CPU: {res['manifest']['cnn_float_acc_cpu']:.2f}%.",
        "",
        "| decoding threads (MiniLM 8 bits, to CPU) | " + " | ".join(str(s["workers"]) for s in res["cpu_scaling"]) + " |",
        "|---|" + "---:|" * len(res["cpu_scaling"]),
        "| load_file s (median) | " + " | ".join(f"{s['median_s']:.3f}" for s in res["cpu_scaling"]) + " |",
        "",
        "Bit-identity of GPU-decoded tensors with the CPU decode: "
        + ", ".join(f"{k} {'identical' if v['identical'] else 'DIFFERENT'} ({v['tensors']} tensors)" for k, v in res["identity"].items()),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="only write the inputs into DIR")
    ap.add_argument("--inputs", type=Path, metavar="DIR", help="measure from inputs prepared in DIR")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ecnn-bench-gpu"), help="inputs go here without --inputs")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers-max", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--json", type=Path, help="also write the raw results as JSON")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.prepare:
        prepare(a.prepare)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured", file=sys.stderr)
        return 2
    inp = a.inputs
    if inp is None:
        prepare(a.out_dir)
        inp = a.out_dir
    t0 = time.perf_counter()
    res = measure(inp, a.repeat, a.workers_max)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    tbl = table(res)
    print(tbl)
    from benchlib import command_line, machine, record_results

    import ecnn
    import onnxruntime
    import transformers

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    section = (
        f"## bench_gpu: loading onto a CUDA GPU ({now})\n\n"
        f"- machine: {machine()}; GPU {res['device']}\n"
        f"- software: Python {sys.version.split()[0]}, ecnn {ecnn.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}\n"
        f"- command (from the repository root): `{command_line()}`; inputs made by `tools/bench_gpu.py --prepare DIR`\n"
        f"- whole run: {time.perf_counter() - t0:.1f} s; {a.repeat} timed loads per method after one warm-up, in one "
        "process, each ended by `torch.cuda.synchronize()`. The float32 baseline files hold the dequantized 8-bit "
        "tensors (same names, shapes and byte count as the original float file).\n\n"
        f"{tbl}\n"
    )
    if not a.no_append:
        record_results("bench_gpu", section, a.results)
    ok = all(v["identical"] for v in res["identity"].values()) and res["minilm_cosine"][8] >= 0.999
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
