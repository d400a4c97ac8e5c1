"""tools/plot_train.py: the rate-accuracy figures of the MNIST training results."""

from __future__ import annotations

import json

import pytest

import plot_train  # tools/, put on the path by conftest.py


def _result(model, ratio, acc, widths=None):
    return {"model": model, "dataset": "mnist", "ratio": ratio, "ecnn_acc": acc, "widths": widths}


def test_load_keeps_the_models_mnist_results(tmp_path):
    rows = [_result("lenet5", 600.0, 99.0, [1, 18, 15, 63, 10]), _result("lenet300", 270.0, 98.1)]
    rows.append(dict(_result("vgg", 90.0, 91.7), dataset="fashion"))
    for i, r in enumerate(rows):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    assert [r["ratio"] for r in plot_train.load("lenet5", tmp_path)] == [600.0]
    assert plot_train.load("vgg", tmp_path) == []


def test_plot_writes_a_png_with_the_published_points(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lenet5.png"
    plot_train.plot("lenet5", [_result("lenet5", 650.0, 99.05, [1, 18, 15, 63, 10]), _result("lenet5", 214.0, 99.06)], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {name for name, _, _ in plot_train.PUBLISHED["lenet5"]} >= {"MIRACLE (Havasi et al. 2019)"}
    with pytest.raises(SystemExit):
        plot_train.main(["--models", "resnet", "--results", str(tmp_path), "--out", str(tmp_path)])
