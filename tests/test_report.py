"""ecnn.report and `ecnn report`: an offline HTML page whose PNGs exist."""

import re

import pytest
import torch

import ecnn
from ecnn import budget, report

pytest.importorskip("matplotlib")

FAST = budget.BudgetConfig(steps_per_octave=2, max_bits=9, probes=4)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(24, 64), torch.nn.ReLU(), torch.nn.Linear(64, 6))


def _images(html_path):
    text = html_path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    srcs = re.findall(r"<img src='([^']+)'", text)
    assert srcs
    for s in srcs:
        assert not s.startswith(("http:", "https:", "/"))  # offline, relative
        png = html_path.parent / s
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in text and "http" not in text
    return srcs


def test_report_of_a_budget_file_with_sweep(tmp_path):
    model = _model()
    x = torch.randn(32, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)

    def evaluate(sd):
        with torch.no_grad():
            out = torch.func.functional_call(model, sd, (x,))
        return -float(((out - ref) ** 2).mean())

    path = tmp_path / "m.ecnn"
    ecnn.compress(model, path, target_bytes=5000, evaluate=lambda m: evaluate(m.state_dict()), calibration=x, config=FAST)
    out = report.write_report(path, tmp_path / "r.html", evaluate=evaluate, original=model.state_dict())
    srcs = _images(out)
    assert {s.split("/")[-1] for s in srcs} == {"layers.png", "histograms.png", "budget.png", "sweep.png"}
    text = out.read_text()
    assert "Sweep points" in text and "uniform bits" in text and "0.weight" in text


def test_report_of_a_plain_file_from_the_cli(tmp_path, capsys):
    from ecnn import cli

    path = tmp_path / "plain.ecnn"
    ecnn.save_file(_model().state_dict(), path, bits=6)
    out = tmp_path / "plain.html"
    assert cli.main(["report", str(path), "-o", str(out)]) == 0
    srcs = _images(out)
    assert "budget.png" not in " ".join(srcs)  # no allocation stored in this file
    capsys.readouterr()
    assert cli.main(["report", str(path), "-o", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
