"""Every loader goes through one decode path: the same names, the same caps, the same bits."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import ecnn
import ecnn.numpy as en
import ecnn.onnx as eo
import ecnn.torch as et
from ecnn.errors import LimitExceeded

SMALL = ecnn.Limits(max_tensor_bytes=64)


def _onnx_model() -> onnx.ModelProto:
    """y = x @ W + b, with a 16 x 8 float weight (512 bytes) and an 8-element bias (32 bytes)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def packed_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    src = d / "affine.onnx"
    onnx.save(_onnx_model(), str(src))
    out = d / "affine.ecnn"
    eo.save_model(str(src), out, bits=8)
    return out


@pytest.fixture(scope="module")
def packed_torch(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    p = tmp_path_factory.mktemp("torch") / "mlp.ecnn"
    ecnn.save_file(model.state_dict(), p, bits=8)
    return model, p


def test_state_dict_loaders_agree_on_the_names_of_an_onnx_file(packed_onnx):
    with ecnn.open(packed_onnx) as f:
        assert f.keys() == ["onnx::model", "W", "b"]  # the low-level listing shows the graph entry
        assert f.weight_names() == ["W", "b"]
    for loaded in (
        ecnn.load_file(packed_onnx),
        ecnn.decode(packed_onnx.read_bytes()),
        et.load_file(packed_onnx, workers=1),
        et.load_file(packed_onnx, workers=2),
        en.load_file(packed_onnx),
    ):
        assert list(loaded) == ["W", "b"]


def test_every_loader_gives_the_same_bits(packed_torch, packed_onnx):
    _, p = packed_torch
    for path in (p, packed_onnx):
        ref = {k: np.asarray(v) for k, v in en.load_file(path, workers=1).items()}
        for got in (ecnn.load_file(path), et.load_file(path, workers=2), en.load_file(path, workers=2)):
            assert list(got) == list(ref)
            for k, v in got.items():
                assert np.asarray(v).tobytes() == ref[k].tobytes(), k
    inits = {t.name: numpy_helper.to_array(t) for t in eo.load_model(packed_onnx).graph.initializer}
    assert {k: v.tobytes() for k, v in inits.items()} == {k: v.tobytes() for k, v in ref.items()}


@pytest.mark.parametrize(
    "load",
    [
        lambda p: ecnn.load_file(p, limits=SMALL),
        lambda p: ecnn.decode(p.read_bytes(), limits=SMALL),
        lambda p: ecnn.open(p, limits=SMALL),
        lambda p: en.load_file(p, limits=SMALL),
        lambda p: en.decode(p.read_bytes(), limits=SMALL),
        lambda p: et.load_file(p, limits=SMALL),
        lambda p: et.load_file(p, dtype=torch.float16, limits=SMALL),
    ],
    ids=["ecnn.load_file", "ecnn.decode", "ecnn.open", "numpy.load_file", "numpy.decode", "torch.load_file", "torch.load_file-dtype"],
)
def test_state_dict_loaders_refuse_a_tensor_over_the_cap(packed_torch, load):
    _, p = packed_torch
    with pytest.raises(LimitExceeded, match="over the cap"):
        load(p)


def test_load_into_refuses_a_tensor_over_the_cap_and_leaves_the_module_alone(packed_torch):
    model, p = packed_torch
    target = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(LimitExceeded, match="over the cap"):
        et.load_into(target, p, limits=SMALL)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    et.load_into(target, p, limits=ecnn.Limits(max_tensor_bytes=16 * 8 * 4))  # the largest tensor fits exactly
    assert all(torch.equal(ecnn.load_file(p)[k], v) for k, v in target.state_dict().items())


def test_onnx_loaders_refuse_a_tensor_over_the_cap(packed_onnx):
    with pytest.raises(LimitExceeded, match="over the cap"):
        eo.load_model(packed_onnx, limits=SMALL)
    with pytest.raises(LimitExceeded, match="over the cap"):
        eo.inference_session(packed_onnx, providers=["CPUExecutionProvider"], limits=SMALL)
    with ecnn.open(packed_onnx) as f:
        largest = max(i.nbytes for i in f.infos())  # the weight W, or the graph tensor, which counts too
    with pytest.raises(LimitExceeded):
        eo.inference_session(packed_onnx, providers=["CPUExecutionProvider"], limits=ecnn.Limits(max_tensor_bytes=largest - 1))
    sess = eo.inference_session(packed_onnx, providers=["CPUExecutionProvider"], limits=ecnn.Limits(max_tensor_bytes=largest))
    x = np.ones((2, 16), np.float32)
    w, b = (np.asarray(v) for v in en.load_file(packed_onnx).values())
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w + b, rtol=1e-5)


def test_limits_are_keyword_only_everywhere():
    import inspect

    for fn in (ecnn.load_file, ecnn.decode, ecnn.open, en.load_file, en.decode, et.load_file, et.load_into, eo.load_model, eo.inference_session):
        p = inspect.signature(fn).parameters["limits"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default == ecnn.Limits(), fn.__qualname__


def test_cli_unpack_of_an_onnx_file_keeps_the_caps_and_gives_the_weights(packed_onnx, tmp_path, capsys):
    from safetensors.numpy import load_file as st_load

    from ecnn.cli import main

    assert main(["unpack", str(packed_onnx), "-o", str(tmp_path / "m.onnx"), "--max-tensor-bytes", "64", "-q"]) == 1
    assert "over the cap" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    assert main(["unpack", str(packed_onnx), "-o", str(tmp_path / "w.safetensors"), "-q"]) == 0
    assert list(st_load(str(tmp_path / "w.safetensors"))) == ["W", "b"]


def test_cli_report_keeps_the_caps(packed_torch, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from ecnn.cli import main

    _, p = packed_torch
    assert main(["report", str(p), "-o", str(tmp_path / "r.html"), "--max-tensor-bytes", "64", "-q"]) == 1
    assert "over the cap" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
