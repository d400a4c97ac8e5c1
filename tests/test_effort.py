"""EncodeConfig.effort: lower efforts search less, write valid files, and decode to the same values."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import ecnn.numpy as en
from ecnn import dtypes, quantize, select
from ecnn.select import floats as select_floats
from ecnn import file as efile
from ecnn.cli import main
from ecnn.coder import ctx
from ecnn.container.reader import Container
from ecnn.config import EFFORTS, EncodeConfig, make_config
from ecnn.context import floats
from ecnn.select import lanes
from ecnn.errors import InvalidOption

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ref_decoder  # noqa: E402


def _scaled_matrix(seed: int, rows: int = 256, cols: int = 192) -> np.ndarray:
    """Weights whose rows and columns have very different scales: row/column contexts pay."""
    rng = np.random.default_rng(seed)
    r = np.exp(rng.uniform(-3, 0, size=(rows, 1)))
    c = np.exp(rng.uniform(-2, 0, size=(1, cols)))
    return (rng.laplace(size=(rows, cols)) * r * c * 0.05).astype(np.float32)


def _sparse_matrix(seed: int, rows: int = 300, cols: int = 100) -> np.ndarray:
    """Pruned weights on a grid: most symbols 0, the non-zero ones clustered in some columns."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-3, 4, size=(rows, cols))
    keep = rng.random((rows, cols)) < np.where(np.arange(cols) % 10 == 0, 0.9, 0.03)
    return (np.where(keep, q, 0) * 0.01).astype(np.float32)


def _coders(data: bytes) -> dict[str, tuple[str, ...]]:
    with efile.EcnnFile(data) as f:
        return {i.name: i.coders for i in f.infos()}


def test_effort_is_checked_and_defaults_to_best():
    assert EFFORTS == ("fast", "balanced", "best")
    assert EncodeConfig().effort == "best"
    with pytest.raises(InvalidOption, match="effort must be one of"):
        EncodeConfig(effort="max")
    w = {"w": _scaled_matrix(0)}
    assert en.encode(w, bits=8) == en.encode(w, config=make_config(bits=8, effort="best"))


def test_quantized_symbols_are_the_same_at_every_effort():
    arrays = {"a.weight": _scaled_matrix(1), "b.weight": _sparse_matrix(2), "a.bias": np.linspace(-1, 1, 256, dtype=np.float32)}
    sizes = {}
    decoded = {}
    for effort in EFFORTS:
        data = en.encode(arrays, config=make_config(bits=6, effort=effort))
        sizes[effort] = len(data)
        decoded[effort] = en.decode(data)
        ref = ref_decoder.decode_file(data)
        for name, a in decoded[effort].items():
            assert ref[name][2] == a.tobytes(), (effort, name)
    for effort in ("fast", "balanced"):
        for name in arrays:
            assert decoded[effort][name].tobytes() == decoded["best"][name].tobytes(), (effort, name)
    # Row/column contexts are worth a lot on these weights, and only "fast" goes without them.
    assert sizes["best"] <= sizes["balanced"] < sizes["fast"]


def _ctx_models(data: bytes) -> dict[str, list[int]]:
    """The model number of every ``ctx`` stream, by tensor (the first byte of the stream, a varint below 128)."""
    c = Container(data)
    out = {}
    for rec in c.records:
        payload = data[rec.offset : rec.offset + rec.length]
        pos, models = 0, []
        for d in rec.streams:
            if d["coder"] == "ctx":
                models.append(payload[pos])
            pos += d["length"]
        out[rec.name] = models
    return out


def test_fast_codes_each_stream_with_one_table():
    arrays = {"a.weight": _scaled_matrix(3), "b.weight": _sparse_matrix(4)}
    best = _ctx_models(en.encode(arrays, config=make_config(bits=8)))
    balanced = _ctx_models(en.encode(arrays, config=make_config(bits=8, effort="balanced")))
    fast = _ctx_models(en.encode(arrays, config=make_config(bits=8, effort="fast")))
    # Stream 1 of uniform_rows holds the weights: rowcol model 5 (model 4 in rANS lanes) and lanes (model 1)
    # at the higher efforts.
    assert best["a.weight"][1] == balanced["a.weight"][1] == ctx.MODEL_ROWCOL_LANES
    assert best["b.weight"][1] == balanced["b.weight"][1] == ctx.MODEL_LANES
    assert all(m == ctx.MODEL_ORDER0 for ms in fast.values() for m in ms) and len(fast["a.weight"]) == 2


def test_choose_picks_no_context_model_when_fast():
    q = quantize.quantize(_scaled_matrix(5), dtypes.get("float32"), 0.002).ravel()
    rows = 256
    best = select.choose(q, 4, True, rows=rows, contexts=True)
    balanced = select.choose(q, 4, True, rows=rows, contexts=True, effort="balanced")
    fast = select.choose(q, 4, True, rows=rows, contexts=True, effort="fast")
    assert best.kind == "ctx2" and balanced.kind == "ctx2"
    assert fast.kind == "ctx0"
    assert best.bits <= balanced.bits < fast.bits
    plan_ = balanced.how[0][2]
    assert (plan_.nrc, plan_.ncc) == (8, 8)


def test_balanced_tries_lanes_on_pruned_weights():
    q = np.rint(_sparse_matrix(6) / 0.01).astype(np.int64).ravel()
    assert np.mean(q == 0) > 0.5
    best = select.choose(q, 4, True, rows=300, contexts=True)
    balanced = select.choose(q, 4, True, rows=300, contexts=True, effort="balanced")
    fast = select.choose(q, 4, True, rows=300, contexts=True, effort="fast")
    assert best.kind == "lanes" and balanced.kind == "lanes"
    assert fast.kind != "lanes"


def test_lanes_plan_stops_at_its_bound():
    m = np.rint(_sparse_matrix(7) / 0.01).astype(np.int64)
    p = lanes.plan(m, 1 << 20)
    assert p is not None
    assert lanes.plan(m, 1 << 20, bound=p.bits * 10) is not None
    assert lanes.plan(m, 1 << 20, bound=1.0) is None


@pytest.mark.parametrize("effort", EFFORTS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_lossless_is_bit_exact_at_every_effort(effort, dtype):
    dt = dtypes.get(dtype)
    x = _scaled_matrix(8, 128, 96)
    a = quantize.from_float(x, dt) if dtype == "bfloat16" else x.astype(dt.storage)
    bias = quantize.from_float(x[0], dt) if dtype == "bfloat16" else x[0].astype(dt.storage)
    arrays = {"w": (a, dt), "b": (bias, dt)}
    data = efile.encode(arrays, make_config(lossless=True, effort=effort), None)
    with efile.EcnnFile(data) as f:
        out = {n: arr for n, (arr, _) in f.arrays().items()}
        kinds = {i.name: i.representation for i in f.infos()}
    ref = ref_decoder.decode_file(data)
    for name, (arr, _) in arrays.items():
        assert out[name].tobytes() == arr.tobytes()
        assert ref[name][2] == arr.tobytes()
    if effort != "best":
        assert "planes" not in kinds["w"]  # float matrices skip the byte planes below "best"


def test_head_search_stops_once_the_estimate_grows():
    x = _scaled_matrix(9)
    u = floats.bit_patterns(x)
    e_bits, m_bits = floats.layout("float32")
    calls = []
    real = select_floats.estimate_head_bits

    def counting(*args):
        calls.append(args[3])  # k
        return real(*args)

    select_floats.estimate_head_bits = counting
    try:
        k_best = select_floats.choose_head(u, e_bits, m_bits)
        n_best = len(calls)
        calls.clear()
        k_fast = select_floats.choose_head(u, e_bits, m_bits, "fast")
    finally:
        select_floats.estimate_head_bits = real
    assert 1 <= n_best <= floats.MAX_HEAD_MANTISSA + 1  # "best" skips the k that cannot win
    assert 3 <= len(calls) < floats.MAX_HEAD_MANTISSA + 1 and k_fast == k_best
    widest = select_floats.head_histogram(u, e_bits, m_bits, 8)
    every = [real(widest.reshape(-1, 1 << (8 - k)).sum(axis=1), e_bits, m_bits, k) for k in range(9)]
    assert k_best == int(np.argmin(every))


def test_cli_effort(tmp_path, capsys):
    from safetensors.numpy import save_file

    src = tmp_path / "m.safetensors"
    save_file({"w": _scaled_matrix(10), "b": np.ones(192, np.float32)}, str(src))
    outs = {}
    for effort in EFFORTS:
        out = tmp_path / f"{effort}.ecnn"
        assert main(["pack", str(src), "-o", str(out), "--lossless", "--effort", effort, "-q"]) == 0
        outs[effort] = out.read_bytes()
        assert en.decode(outs[effort])["w"].tobytes() == _scaled_matrix(10).tobytes()
    assert len(outs["best"]) <= len(outs["balanced"]) <= len(outs["fast"]) < _scaled_matrix(10).nbytes
    assert main(["pack", str(src), "-o", str(tmp_path / "x.ecnn"), "--target-size", "10kB", "--effort", "fast"]) != 0
    assert "--effort" in capsys.readouterr().err


def test_api_functions_take_effort(tmp_path):
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    import ecnn
    import ecnn.onnx as eonnx
    import ecnn.torch as et

    w = _scaled_matrix(11)
    fast = make_config(bits=8, effort="fast")
    assert ecnn.encode({"w": torch.from_numpy(w)}, bits=8, effort="fast") == ecnn.encode({"w": torch.from_numpy(w)}, config=fast)
    assert en.encode({"w": w}, bits=8, effort="fast") == en.encode({"w": w}, config=fast)
    assert en.encode({"w": w}, bits=8, effort="fast") != en.encode({"w": w}, bits=8)
    with pytest.raises(InvalidOption, match="either config"):
        en.encode({"w": w}, config=fast, effort="fast")
    with pytest.raises(InvalidOption, match="effort must be one of"):
        ecnn.save_file({"w": torch.from_numpy(w)}, tmp_path / "x.ecnn", effort="quick")
    model = torch.nn.Linear(192, 256)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
    n = et.save_model(model, tmp_path / "m.ecnn", lossless=True, effort="balanced")
    assert n == (tmp_path / "m.ecnn").stat().st_size
    assert torch.equal(ecnn.load_file(tmp_path / "m.ecnn")["weight"], model.weight.detach())
    init = numpy_helper.from_array(w, "w")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(w.shape))], [init]
    )
    proto = helper.make_model(graph)
    onnx.save(proto, tmp_path / "m.onnx")
    eonnx.save_model(tmp_path / "m.onnx", tmp_path / "m-onnx.ecnn", lossless=True, effort="fast")
    assert ecnn.load_file(tmp_path / "m-onnx.ecnn")["w"].numpy().tobytes() == w.tobytes()


@pytest.mark.parametrize("effort", EFFORTS)
def test_every_effort_on_format_1_0_and_other_types(effort):
    rng = np.random.default_rng(12)
    arrays = {
        "f32": _scaled_matrix(13, 64, 48),
        "f64": _scaled_matrix(14, 64, 48).astype(np.float64),
        "i16": rng.integers(-300, 300, size=(64, 48)).astype(np.int16),
        "u8": rng.integers(0, 4, size=(64, 48)).astype(np.uint8),
        "mask": rng.random((64, 48)) < 0.1,
        "empty": np.zeros((0, 4), np.float32),
    }
    for minor in (0, 1):
        cfg = EncodeConfig(lossless=True, effort=effort, format_minor=minor)
        data = en.encode(arrays, config=cfg)
        out = en.decode(data)
        ref = ref_decoder.decode_file(data)
        for name, a in arrays.items():
            assert out[name].tobytes() == a.tobytes() and out[name].shape == a.shape, (minor, name)
            assert ref[name][2] == a.tobytes(), (minor, name)
        with efile.EcnnFile(data) as f:
            kinds = {i.name: i.representation for i in f.infos()}
        if minor == 0:
            assert "fields" not in kinds.values()  # format 1.0 keeps byte planes at every effort
