"""ecnn/onnx.py: packing ONNX models, rebuilding them, and ONNX Runtime sessions from memory."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import ecnn
import ecnn.onnx as eo
import ecnn.torch as et
from ecnn.cli import main
from ecnn.errors import UnreadableInput, UnsafeInput

CPU = ["CPUExecutionProvider"]


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = torch.nn.Linear(4 * 6 * 6, 32)
        self.fc2 = torch.nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _export(model, x, path, dynamo=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"])
    return path


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(3, 1, 6, 6)
    path = _export(model, x, tmp_path_factory.mktemp("small") / "small.onnx")
    m = onnx.load(str(path))
    m.doc_string = "a small test model"
    helper.set_model_props(m, {"author": "tests"})
    onnx.save(m, str(path))
    return model, x, path


def _run(sess, x):
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _inits(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def test_pack_keeps_the_graph_and_quantizes_only_weights(small_onnx, tmp_path):
    model, x, path = small_onnx
    orig = onnx.load(str(path))
    out = tmp_path / "small.ecnn"
    eo.save_model(path, out, bits=8, metadata={"task": "test"})
    with ecnn.open(out) as f:
        assert f.metadata() == {"task": "test", "ecnn.onnx": "1"}
        assert f.info("onnx::model").dtype == "uint8" and f.info("onnx::model").step is None
        assert f.info("fc1.weight").step is not None and f.info("fc1.bias").step is None
        steps = {n: f.info(n).step for n in f.keys()}
    back = eo.load_model(out)
    onnx.checker.check_model(back)
    assert back.graph.node == orig.graph.node
    assert back.graph.input == orig.graph.input and back.graph.output == orig.graph.output
    assert back.opset_import == orig.opset_import and back.ir_version == orig.ir_version
    assert back.metadata_props == orig.metadata_props and back.doc_string == orig.doc_string
    a, b = _inits(orig), _inits(back)
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        if steps.get(name):
            assert np.abs(a[name] - b[name]).max() <= steps[name] / 2 * (1 + 1e-6)
        else:
            assert np.array_equal(a[name], b[name]), name


def test_inference_session_from_memory_matches_the_rebuilt_model(small_onnx, tmp_path):
    model, x, path = small_onnx
    out = tmp_path / "small.ecnn"
    eo.save_model(path, out, bits=8)
    sess = eo.inference_session(out, providers=CPU)
    rebuilt = ort.InferenceSession(eo.load_model(out).SerializeToString(), providers=CPU)
    xn = x.numpy()
    y = _run(sess, xn)
    assert np.array_equal(y, _run(rebuilt, xn))
    ref = model(x).detach().numpy()
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()
    # the same weights reach PyTorch through load_into (initializer names are parameter names)
    fresh = Small()
    et.load_into(fresh, out)
    assert torch.allclose(fresh.eval()(x), torch.from_numpy(y), atol=1e-5)


def test_lossless_round_trip_is_exact(small_onnx, tmp_path):
    _, x, path = small_onnx
    out = tmp_path / "exact.ecnn"
    eo.save_model(path, out, lossless=True)
    orig, back = onnx.load(str(path)), eo.load_model(out)
    assert all(np.array_equal(v, _inits(back)[k]) for k, v in _inits(orig).items())
    y1 = _run(ort.InferenceSession(str(path), providers=CPU), x.numpy())
    assert np.array_equal(y1, _run(eo.inference_session(out.read_bytes(), providers=CPU), x.numpy()))


def _qdq_model():
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(16, 8), dtype=np.int8)
    inits = [
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
        numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([-1, 3, 2], np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float16).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["h2"]),
        helper.make_node("Add", ["h2", "b"], ["h3"]),
        helper.make_node("Reshape", ["h3", "shape"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 2])], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def test_integer_initializers_are_exact_and_shape_constants_stay_in_the_graph(tmp_path):
    m = _qdq_model()
    onnx.checker.check_model(m)
    out = tmp_path / "qdq.ecnn"
    eo.save_model(m, out, bits=4)  # the ModelProto is not modified
    assert m.graph.initializer[0].HasField("raw_data")
    with ecnn.open(out) as f:
        assert "shape" not in f  # read by shape inference before external initializers arrive
        assert f.info("w_q").dtype == "int8" and f.info("w_q").step is None
        assert f.info("w2").step is not None
    back = eo.load_model(out)
    onnx.checker.check_model(back)
    assert np.array_equal(_inits(back)["w_q"], _inits(m)["w_q"])
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    y = _run(eo.inference_session(out, providers=CPU), x)
    assert y.shape == (4, 3, 2)
    assert np.array_equal(y, _run(ort.InferenceSession(back.SerializeToString(), providers=CPU), x))


def test_bfloat16_and_float16_initializers(tmp_path):
    w16 = np.linspace(-2, 2, 64, dtype=np.float32).reshape(8, 8)
    bf = helper.make_tensor("wbf", TensorProto.BFLOAT16, [8, 8], (w16.view(np.uint32) >> 16).astype(np.uint16).tobytes(), raw=True)
    inits = [bf, numpy_helper.from_array(w16.astype(np.float16), "wh")]
    nodes = [
        helper.make_node("Cast", ["wbf"], ["a"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["wh"], ["b"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "types",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])], inits,
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    out = tmp_path / "types.ecnn"
    eo.save_model(m, out, lossless=True)
    x = np.zeros((8, 8), np.float32)
    ref = _run(ort.InferenceSession(m.SerializeToString(), providers=CPU), x)
    assert np.array_equal(_run(eo.inference_session(out, providers=CPU), x), ref)
    assert eo.load_model(out).graph.initializer[0].raw_data == bf.raw_data


def test_external_data_is_read_and_paths_outside_the_folder_are_refused(small_onnx, tmp_path):
    _, x, path = small_onnx
    m = onnx.load(str(path))
    folder = tmp_path / "ext"
    folder.mkdir()
    ext = onnx.ModelProto()
    ext.CopyFrom(m)  # save_model moves the data of the model it is given
    onnx.save_model(ext, str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    eo.save_model(folder / "m.onnx", tmp_path / "ext.ecnn", lossless=True)
    assert all(np.array_equal(v, _inits(eo.load_model(tmp_path / "ext.ecnn"))[k]) for k, v in _inits(m).items())

    for bad in ("../m.onnx.data", str((folder / "m.onnx.data").resolve())):
        evil = onnx.load(str(folder / "m.onnx"), load_external_data=False)
        for t in evil.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = bad
        onnx.save(evil, str(folder / "evil.onnx"))
        with pytest.raises(UnsafeInput):
            eo.save_model(folder / "evil.onnx", tmp_path / "evil.ecnn")
        assert not (tmp_path / "evil.ecnn").exists()


def test_cli_pack_and_unpack_onnx(small_onnx, tmp_path, capsys):
    _, x, path = small_onnx
    packed = tmp_path / "m.ecnn"
    assert main(["pack", str(path), "-o", str(packed), "--lossless", "-q"]) == 0
    assert main(["unpack", str(packed), "-q"]) == 0  # a packed ONNX model unpacks to .onnx by default
    back = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(back)
    assert all(np.array_equal(v, _inits(back)[k]) for k, v in _inits(onnx.load(str(path))).items())
    assert main(["pack", str(path), "-o", str(tmp_path / "m4.ecnn"), "--bits", "4"]) == 0
    text = capsys.readouterr().out
    assert "quantized:         3 tensors" in text and "stored exactly:    3 tensors" in text
    assert main(["unpack", str(tmp_path / "m4.ecnn"), "-o", str(tmp_path / "m4.onnx"), "-q"]) == 0
    y = _run(ort.InferenceSession(str(tmp_path / "m4.onnx"), providers=CPU), x.numpy())
    assert np.array_equal(y, _run(eo.inference_session(tmp_path / "m4.ecnn", providers=CPU), x.numpy()))


def test_files_without_a_graph_are_refused(tmp_path):
    p = tmp_path / "plain.ecnn"
    ecnn.save_file({"w": torch.ones(4, 4)}, p)
    with pytest.raises(UnreadableInput):
        eo.load_model(p)
    with pytest.raises(UnreadableInput):
        eo.inference_session(p, providers=CPU)


def test_model_trained_with_ecnn_train_exports_and_packs_on_its_grid(tmp_path):
    import ecnn.train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(), torch.nn.Linear(24, 3))
    ecnn.train.prepare_(model, ecnn.train.TrainConfig(method="ect", lam=0.05))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y) + ecnn.train.regularizer(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    steps = ecnn.train.convert_(model)
    onnx_path = _export(model, x[:2], tmp_path / "trained.onnx", dynamo=True)  # the default exporter (onnxscript)
    out = tmp_path / "trained.ecnn"
    eo.save_model(onnx_path, out, config=ecnn.train.encode_config(steps))
    got = et.load_file(out)
    for name, p in model.state_dict().items():
        assert torch.equal(got[name], p), name  # weights on their learned grid are stored exactly
    ref = model(x[:2]).detach().numpy()
    assert np.allclose(_run(eo.inference_session(out, providers=CPU), x[:2].numpy()), ref, atol=1e-5)


def test_large_models_unpack_with_external_data(small_onnx, tmp_path, monkeypatch):
    _, x, path = small_onnx
    packed = tmp_path / "m.ecnn"
    eo.save_model(path, packed, lossless=True)
    monkeypatch.setattr(eo, "EXTERNAL_DATA_THRESHOLD", 1024)  # as if the weights were over 1 GiB
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    eo.write_model(eo.load_model(packed), out)
    assert (out.parent / "m.onnx.data").stat().st_size > out.stat().st_size
    y = _run(ort.InferenceSession(str(out), providers=CPU), x.numpy())
    assert np.array_equal(y, _run(eo.inference_session(packed, providers=CPU), x.numpy()))
    # packing the external-data model again reads the weights through memory maps
    eo.save_model(out, tmp_path / "again.ecnn", lossless=True)
    assert all(np.array_equal(v, _inits(eo.load_model(tmp_path / "again.ecnn"))[k]) for k, v in _inits(onnx.load(str(path))).items())
