"""ecnn/cli.py: the commands, their output and their errors."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from ecnn.cli import main


@pytest.fixture
def model(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {"fc.weight": torch.randn(64, 32, generator=g) * 0.1, "fc.bias": torch.randn(64, generator=g), "idx": torch.arange(7)}
    p = tmp_path / "model.safetensors"
    save_file(sd, p)
    return p, sd


def test_pack_info_verify_unpack(model, tmp_path, capsys):
    src, sd = model
    out = tmp_path / "model.ecnn"
    assert main(["pack", str(src), "-o", str(out), "--bits", "6"]) == 0
    assert "packed 3 tensors" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fc.weight" in text and "per-row step<=" in text and "bits per value" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file_bytes"] == out.stat().st_size and len(info["tensors"]) == 3
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("ok:")
    back = tmp_path / "back.safetensors"
    assert main(["unpack", str(out), "-o", str(back)]) == 0
    dec = load_file(back)
    assert torch.equal(dec["fc.bias"], sd["fc.bias"]) and torch.equal(dec["idx"], sd["idx"])
    step = next(t["step"] for t in info["tensors"] if t["name"] == "fc.weight")
    assert (dec["fc.weight"] - sd["fc.weight"]).abs().max() <= step / 2 * 1.0001


def test_lossless_pack_to_pt(model, tmp_path):
    src, sd = model
    out = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(out), "--lossless", "-q"]) == 0
    assert main(["unpack", str(out), "-o", str(tmp_path / "m.pt"), "-q"]) == 0
    dec = torch.load(tmp_path / "m.pt", weights_only=True)
    assert all(torch.equal(dec[k], v) for k, v in sd.items())


def test_overwrite_rules(model, tmp_path, capsys):
    src, _ = model
    out = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(out), "-q"]) == 0
    before = out.read_bytes()
    assert main(["pack", str(src), "-o", str(out), "--bits", "4", "-q"]) == 1
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["pack", str(src), "-o", str(out), "--bits", "4", "-q", "--force"]) == 0
    assert out.read_bytes() != before
    assert main(["unpack", str(out), "-o", str(out)]) == 1
    assert "refusing" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["info", "/nonexistent.ecnn"], "No such file"),
        (["pack", "/nonexistent.safetensors"], "no such file"),
        (["unpack", "{bad}", "-o", "{tmp}/x.safetensors"], "signature"),
        (["verify", "{bad}"], "signature"),
        (["pack", "{model}", "-o", "{tmp}/y.ecnn", "--step", "-1"], "step"),
        (["unpack", "{good}", "-o", "{tmp}/x.npz"], ".safetensors"),
    ],
)
def test_errors_are_one_line(argv, needle, model, tmp_path):
    src, _ = model
    bad = tmp_path / "bad.ecnn"
    bad.write_bytes(b"hello, not a model")
    good = tmp_path / "good.ecnn"
    main(["pack", str(src), "-o", str(good), "-q"])
    argv = [a.format(bad=bad, tmp=tmp_path, model=src, good=good) for a in argv]
    r = subprocess.run([sys.executable, "-m", "ecnn", *argv], capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_help_has_examples():
    r = subprocess.run([sys.executable, "-m", "ecnn", "--help"], capture_output=True, text=True, check=True)
    assert "examples:" in r.stdout and "ecnn pack" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ecnn", "pack", "--help"], capture_output=True, text=True, check=True)
    assert "--lossless" in r.stdout and "examples:" in r.stdout
