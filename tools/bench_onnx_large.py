#!/usr/bin/env python3
"""An ONNX model over 2 GiB (the protobuf limit) through ecnn: pack, ONNX Runtime session from memory, unpack.

One protobuf message cannot exceed 2 GiB, so large ONNX models keep their
weights in an external-data file. This benchmark checks that ecnn handles
them end to end, and measures time and peak memory of each step:

1. builds a model of ``--layers`` MatMul+Tanh layers with ``--dim`` x ``--dim``
   float32 weights (seeded normal, std 1/sqrt(dim)) and saves it with
   external data; the default (9 layers of 8192 x 8192) is 2.25 GiB of weights.
   The weights are synthetic: the largest real model this project ships
   offline is 91 MB, and what is tested here is the size path, not the rate;
2. runs it with ONNX Runtime from the file, for the reference output;
3. ``ecnn.onnx.save_model(..., bits=N)`` (what ``ecnn pack model.onnx --bits N`` does);
4. ``ecnn.onnx.inference_session`` from the ``.ecnn`` file (graph with
   external stubs, arrays handed over with ``add_external_initializers``, no
   protobuf copy of the weights, nothing written to disk), and compares its
   output with the reference;
5. ``ecnn.onnx.load_model`` + ``write_model`` (what ``ecnn unpack`` does; the
   weights go to ``<name>.data``), ``onnx.checker.check_model`` on that path,
   and an ONNX Runtime session from it, whose output must equal step 4's exactly.

Each step's time and the process's peak RSS growth during it (VmHWM reset by
``/proc/self/clear_refs``) are printed as a Markdown table and appended to
bench/RESULTS.md.

Usage::

    .venv/bin/python tools/bench_onnx_large.py [--dim 8192 --layers 9 --bits 8] [--out-dir DIR] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402

from benchlib import reset_peak, status_kib  # noqa: E402

log = logging.getLogger("bench_onnx_large")


class Step:
    """Times a step and measures the peak RSS growth during it."""

    rows: list = []

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.reset = reset_peak()
        self.rss0 = status_kib("VmRSS")
        self.t0 = time.perf_counter()
        log.info("%s ...", self.name)
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t0
        peak = (status_kib("VmHWM") - self.rss0) * 1024 if self.reset else None
        Step.rows.append((self.name, dt, peak))
        log.info("%s: %.1f s, peak RSS +%s MiB", self.name, dt, "?" if peak is None else f"{peak / 2**20:.0f}")
        return False


def build(path: Path, dim: int, layers: int, batch: int) -> int:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = np.random.default_rng(i).standard_normal((dim, dim), dtype=np.float32) * np.float32(1 / np.sqrt(dim))
        inits.append(numpy_helper.from_array(w, f"layer{i}.weight"))
        del w
        nodes.append(helper.make_node("MatMul", [x, f"layer{i}.weight"], [f"h{i}"]))
        nodes.append(helper.make_node("Tanh", [f"h{i}"], [f"a{i}"]))
        x = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dim])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    return sum(len(t.raw_data) for t in inits)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=9)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ecnn-bench-onnx-large"))
    ap.add_argument("--keep", action="store_true", help="keep the files written")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import onnx
    import onnxruntime as ort

    import ecnn
    import ecnn.onnx as eo
    from benchlib import command_line, machine, record_results

    t_start = time.perf_counter()
    shutil.rmtree(a.out_dir, ignore_errors=True)
    a.out_dir.mkdir(parents=True)
    src, packed, unpacked = a.out_dir / "large.onnx", a.out_dir / "large.ecnn", a.out_dir / "unpacked" / "large.onnx"
    unpacked.parent.mkdir()
    cpu = ["CPUExecutionProvider"]
    x = np.random.default_rng(99).standard_normal((a.batch, a.dim), dtype=np.float32)

    with Step("build and save the float model (external data)"):
        weight_bytes = build(src, a.dim, a.layers, a.batch)
    src_bytes = src.stat().st_size + (a.out_dir / "large.onnx.data").stat().st_size
    with Step("ONNX Runtime session from the float file + run"):
        ref = ort.InferenceSession(str(src), providers=cpu).run(None, {"x": x})[0]
    with Step(f"ecnn.onnx.save_model --bits {a.bits}"):
        eo.save_model(src, packed, bits=a.bits)
    packed_bytes = packed.stat().st_size
    with Step("ecnn.onnx.inference_session (from memory) + run"):
        sess = eo.inference_session(packed, providers=cpu)
        y = sess.run(None, {"x": x})[0]
        del sess
    with Step("ecnn.onnx.load_model + write_model (ecnn unpack)"):
        model = eo.load_model(packed)
        eo.write_model(model, unpacked)
        del model
    with Step("onnx.checker.check_model(path) of the unpacked model"):
        onnx.checker.check_model(str(unpacked))
    with Step("ONNX Runtime session from the unpacked file + run"):
        y2 = ort.InferenceSession(str(unpacked), providers=cpu).run(None, {"x": x})[0]

    rel = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    cos = float((y * ref).sum() / (np.linalg.norm(y) * np.linalg.norm(ref)))
    same = bool(np.array_equal(y, y2))
    if not a.keep:
        shutil.rmtree(a.out_dir, ignore_errors=True)

    mib = lambda n: "?" if n is None else f"{n / 2**20:,.0f}"  # noqa: E731
    lines = ["| step | seconds | peak RSS growth MiB |", "|---|---:|---:|"]
    lines += [f"| {n} | {t:.1f} | {mib(p)} |" for n, t, p in Step.rows]
    tbl = "\n".join(lines)
    summary = (
        f"Weights {weight_bytes:,} bytes ({weight_bytes / 2**30:.2f} GiB) in {a.layers} tensors of {a.dim} x {a.dim}; "
        f"the float .onnx + .data {src_bytes:,} bytes, the .ecnn {packed_bytes:,} bytes "
        f"({100 * packed_bytes / src_bytes:.1f}%). Output of the session from the .ecnn against the float model: "
        f"relative L2 error {rel:.2e}, cosine {cos:.6f}; the unpacked file's session gives "
        f"{'exactly the same output' if same else 'A DIFFERENT OUTPUT'}."
    )
    print(tbl + "\n\n" + summary)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    section = (
        f"## bench_onnx_large: an ONNX model over 2 GiB ({now})\n\n"
        f"- machine: {machine()}\n- software: ecnn {ecnn.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
        f"numpy {np.__version__}\n- command (from the repository root): `{command_line()}`\n"
        f"- whole run: {time.perf_counter() - t_start:.1f} s. Synthetic weights (seeded normal): this checks the path "
        "past the protobuf limit, not the rate. Peak RSS growth is VmHWM (reset before each step) minus VmRSS at its start.\n\n"
        f"{tbl}\n\n{summary}\n"
    )
    if not a.no_append:
        record_results("bench_onnx_large", section, a.results)
    return 0 if same and cos > 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
