"""ecnn/budget/measured.py and ecnn/onnx.py (WeightSession, packable): ONNX models packed to a size or accuracy budget, measured in ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest

import ecnn
import ecnn.onnx as eo
from ecnn.budget import measured
from ecnn.budget.measured import compress_onnx
from ecnn.cli import main
from ecnn.errors import BudgetTooSmall, InvalidOption, MetricNotReached, UnreadableInput

import onnx_graphs as G

CPU = ["CPUExecutionProvider"]


def _save(tmp_path, build, name="m"):
    m, feeds = build()
    src = tmp_path / f"{name}.onnx"
    onnx.save(m, str(src))
    return src, feeds[0]


def _npz(tmp_path, feeds) -> str:
    np.savez(tmp_path / "calib.npz", **feeds)
    return str(tmp_path / "calib.npz")


def _steps(path) -> dict:
    with ecnn.open(path) as f:
        return {i.name: i.step for i in f.infos()}


def test_gru_budget_meets_the_plain_4bit_size_and_runs_from_memory(tmp_path):
    src, feeds = _save(tmp_path, G.gru)
    target = eo.save_model(src, tmp_path / "p4.ecnn", bits=4)
    res = compress_onnx(src, tmp_path / "b.ecnn", feeds, target_bytes=target)
    assert res.size <= target and (tmp_path / "b.ecnn").stat().st_size == res.size
    assert sorted(res.steps) == ["B", "R", "W", "head"]  # every float weight of the GRU and the head
    steps = _steps(tmp_path / "b.ecnn")
    assert all(steps[n] is not None for n in ("W", "R", "B", "head"))
    # an ordinary packed ONNX file: a session from memory and the unpacked model agree
    got = eo.inference_session(tmp_path / "b.ecnn", providers=CPU).run(None, feeds)[0]
    back = eo.load_model(tmp_path / "b.ecnn")
    onnx.checker.check_model(back)
    again = eo.run_model(back, feeds)["logits"]
    np.testing.assert_array_equal(got, again)
    # the metric reported is the packed model's top-1 agreement on the calibration inputs
    ref = eo.run_model(src, feeds)["logits"]
    assert res.metric == pytest.approx(100 * np.mean(ref.argmax(1) == got.argmax(1)))
    assert measured.metric_of(res.data) == "top1"


def test_a_sensitive_weight_gets_a_finer_step(tmp_path):
    src, feeds = _save(tmp_path, G.sensitive)
    target = eo.save_model(src, tmp_path / "p4.ecnn", bits=4)
    res = compress_onnx(src, tmp_path / "b.ecnn", feeds, target_bytes=target)
    sens = {t["name"]: t["sensitivity"] for t in res.tensors}
    assert sens["loud"] > 1e3 * sens["quiet"]  # 100x vs 1/100 of the same-sized product
    m = onnx.load(str(src))
    absmax = {t.name: float(np.abs(onnx.numpy_helper.to_array(t)).max()) for t in m.graph.initializer}
    rel = {n: res.steps[n] / absmax[n] for n in ("loud", "quiet")}
    assert rel["loud"] * 8 < rel["quiet"]  # at least three bits finer
    # and the output is closer than plain --bits 4 at the same size
    ref = eo.run_model(src, feeds)["y"]
    dev_b = np.abs(eo.inference_session(tmp_path / "b.ecnn", providers=CPU).run(None, feeds)[0] - ref).max()
    dev_4 = np.abs(eo.inference_session(tmp_path / "p4.ecnn", providers=CPU).run(None, feeds)[0] - ref).max()
    assert dev_b < dev_4


def test_loop_body_weight_is_allocated(tmp_path):
    src, feeds = _save(tmp_path, G.loop_body)
    target = eo.save_model(src, tmp_path / "p8.ecnn", bits=8)
    res = compress_onnx(src, tmp_path / "b.ecnn", feeds, target_bytes=target)
    assert res.size <= target and list(res.steps) == ["wl"]
    out = eo.inference_session(tmp_path / "b.ecnn", providers=CPU).run(None, feeds)[0]
    assert out.shape == (2, G.D) and np.isfinite(out).all()


def test_max_drop_keeps_the_metric_and_fails_typed_when_it_cannot(tmp_path):
    src, feeds = _save(tmp_path, G.gru)
    res = compress_onnx(src, tmp_path / "b.ecnn", feeds, max_drop=2.0)
    assert res.metric >= 98.0 and res.base_metric == 100.0
    ref = eo.run_model(src, feeds)["logits"]
    got = eo.inference_session(tmp_path / "b.ecnn", providers=CPU).run(None, feeds)[0]
    assert 100 * np.mean(ref.argmax(1) == got.argmax(1)) >= 98.0
    loose = compress_onnx(src, tmp_path / "c.ecnn", feeds, max_drop=30.0)
    assert loose.size < res.size
    cos = compress_onnx(src, tmp_path / "d.ecnn", feeds, max_drop=0.5, metric="cosine")
    assert cos.metric >= 99.5 and measured.metric_of(cos.data) == "cosine"
    with pytest.raises(MetricNotReached):
        compress_onnx(src, tmp_path / "e.ecnn", feeds, target_bytes=2000, max_drop=0.0)
    with pytest.raises(BudgetTooSmall):
        compress_onnx(src, tmp_path / "e.ecnn", feeds, target_bytes=500)
    with pytest.raises(InvalidOption):
        compress_onnx(src, tmp_path / "e.ecnn", feeds, max_drop=1.0, metric="accuracy")
    assert not (tmp_path / "e.ecnn").exists()


def test_cli_target_size_with_npz_and_synthetic_inputs(tmp_path, capsys):
    src, feeds = _save(tmp_path, G.gru)
    np.savez(tmp_path / "in.npz", **feeds)
    assert main(["pack", str(src), "-o", str(tmp_path / "p4.ecnn"), "--bits", "4", "-q"]) == 0
    target = (tmp_path / "p4.ecnn").stat().st_size
    args = ["pack", str(src), "-o", str(tmp_path / "b.ecnn"), "--target-size", str(target)]
    assert main(args + ["--calib-inputs", str(tmp_path / "in.npz"), "--json"]) == 0
    cap = capsys.readouterr()
    fig = json.loads(cap.out)
    assert fig["output_bytes"] <= target and fig["metric_name"] == "top1" and fig["calib_inputs"].endswith("in.npz")
    assert "synthetic" not in cap.err
    assert main(args + ["-f"]) == 0
    cap = capsys.readouterr()
    assert "warning: no --calib-inputs" in cap.err and "synthetic inputs" in cap.err
    assert "top1 on the calibration inputs 100 ->" in cap.out
    assert (tmp_path / "b.ecnn").stat().st_size <= target
    # --check runs both models on other inputs after a budget too
    held = {"x": feeds["x"][:, :16] * 0.5, "h0": feeds["h0"][:, :16]}
    np.savez(tmp_path / "held.npz", **held)
    assert main(args + ["-f", "--calib-inputs", str(tmp_path / "in.npz"), "--check", str(tmp_path / "held.npz"), "--json"]) == 0
    fig = json.loads(capsys.readouterr().out)
    (dev,) = fig["check"]["outputs"]
    got = eo.inference_session(tmp_path / "b.ecnn", providers=CPU).run(None, held)[0]
    ref = eo.run_model(src, held)["logits"]
    assert dev["max_abs"] == pytest.approx(float(np.abs(got - ref).max())) and dev["top1"][1] == 16


def test_cli_refuses_bad_inputs_and_options_with_typed_errors(tmp_path, capsys):
    src, feeds = _save(tmp_path, G.gru)
    out = tmp_path / "b.ecnn"
    bad = {
        "missing": {"x": feeds["x"]},
        "extra": {**feeds, "z": feeds["x"]},
        "dtype": {**feeds, "x": feeds["x"].astype(np.float64)},
        "shape": {**feeds, "x": feeds["x"][:, :, :3]},
    }
    for name, arrays in bad.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(InvalidOption):
            eo.check_inputs(src, tmp_path / f"{name}.npz")
        assert main(["pack", str(src), "-o", str(out), "--target-size", "3kB", "--calib-inputs", str(tmp_path / f"{name}.npz")]) == 1
        assert "error:" in capsys.readouterr().err and not out.exists()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["pack", str(src), "-o", str(out), "--target-size", "3kB", "--calib-inputs", str(tmp_path / "junk.npz")]) == 1
    assert "not a readable .npz" in capsys.readouterr().err
    with pytest.raises(UnreadableInput):
        eo.check_inputs(src, tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), h0=feeds["h0"])
    with pytest.raises(UnreadableInput):  # nothing is unpickled
        eo.check_inputs(src, tmp_path / "obj.npz")
    for extra, msg in (
        (["--eval", "m.py:f"], "instead of --eval"),
        (["--bits", "4"], "drop --bits"),
        (["--drop-metric", "f1"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) if msg == "invalid choice" else _no_raise():
            assert main(["pack", str(src), "-o", str(out), "--max-drop", "1"] + extra) in (1, 2)
        assert msg in capsys.readouterr().err and not out.exists()
    assert main(["pack", str(tmp_path / "p.safetensors"), "--target-size", "1kB", "--calib-inputs", "x.npz"]) == 1
    assert "--calib-inputs and --drop-metric are for .onnx models" in capsys.readouterr().err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_measured_sensitivity_of_a_linear_model():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal((8, 4)).astype(np.float32)
    x = rng.standard_normal((32, 8))
    arrays = {"a": (a, ecnn.dtypes.get("float32")), "b": (b, ecnn.dtypes.get("float32"))}

    def calib(replaced):
        return [x @ replaced.get("a", a) * 10 + x @ replaced.get("b", b)]

    h = measured.output_sensitivities(arrays, ["a", "b"], calib)
    assert 50 < h["a"] / h["b"] < 200  # output error grows with the square of the gain: 10**2
    assert measured.output_error([np.ones(3)], [np.full(3, np.nan)]) == float("inf")
    assert measured.cosine([np.eye(3)], [np.eye(3)]) == pytest.approx(100.0)
    assert measured.top1_agreement([np.eye(3)], [np.eye(3)[::-1]]) == pytest.approx(100 / 3)


def test_plain_file_is_kept_when_the_allocation_does_not_beat_it(tmp_path, capsys):
    # one weight (in a Loop body): at the plain --bits 4 size no allocation is better than that very file
    src, feeds = _save(tmp_path, G.loop_body)
    target = eo.save_model(src, tmp_path / "p4.ecnn", bits=4)
    res = compress_onnx(src, tmp_path / "b.ecnn", feeds, target_bytes=target)
    assert res.plain_bits == 4 and res.size <= target
    assert (tmp_path / "b.ecnn").read_bytes() == (tmp_path / "p4.ecnn").read_bytes()
    # with room to spare the allocation wins, and says so
    target8 = eo.save_model(src, tmp_path / "p8.ecnn", bits=8)
    res8 = compress_onnx(src, tmp_path / "c.ecnn", feeds, target_bytes=target8 - 200)
    assert res8.plain_bits is None and res8.size <= target8 - 200
    assert main(["pack", str(src), "-o", str(tmp_path / "d.ecnn"), "--target-size", str(target), "--calib-inputs", _npz(tmp_path, feeds)]) == 0
    assert "the plain --bits 4 file (no better allocation found)" in capsys.readouterr().out
