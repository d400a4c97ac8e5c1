"""ecnn/onnx.py on graphs as exporters write them: weights in Constant nodes and in If / Loop / Scan subgraphs."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ecnn
import ecnn.onnx as eo
from ecnn.cli import main
from ecnn.errors import InvalidField, InvalidOption, UnreadableInput

import onnx_graphs as G

CPU = ["CPUExecutionProvider"]
D = G.D
# Float weights each model holds (quantized at --bits 8), and what stays exact or in the graph.
EXPECTED = {  # name: (quantized, stored exactly, left in the graph)
    "constants": (2, 3, 3),  # W1, W2 | b (value_floats), S values and indices | scale, shape, tiny
    "if": (3, 0, 0),  # main w, then w, else w
    "loop": (1, 0, 0),
    "scan": (1, 1, 0),  # ws | bs (1-D Constant)
    "nested": (5, 0, 0),  # two inner w, two inner Constants, outer else w
    "function": (1, 1, 0),  # W | B (value_floats), both in a model-local function
}


def _float_tensors(m: onnx.ModelProto) -> list[tuple[str, np.ndarray]]:
    """(label, values) of every float initializer and Constant value, in graph order, sparse ones densified."""
    out = []
    for p in eo._places(m):
        if p.tensor is None:
            out.append((p.label, np.asarray(p.attr.floats, np.float32)))
        elif p.part == "values":
            s = p.attr.sparse_tensor
            dense = np.zeros(tuple(s.dims), np.float32)
            dense.flat[numpy_helper.to_array(s.indices)] = numpy_helper.to_array(s.values)
            out.append((p.label, dense))
        elif p.part == "" and p.tensor.data_type == TensorProto.FLOAT:
            out.append((p.label, numpy_helper.to_array(p.tensor)))
    return out


def _without_data(m: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every tensor's data removed: what must survive a round trip unchanged."""
    c = onnx.ModelProto()
    c.CopyFrom(m)
    for p in eo._places(c):
        if p.tensor is None or p.attr is not None and p.attr.name == "value_floats":
            p.attr.ClearField("floats")
            p.attr.ClearField("t")
            p.attr.type = onnx.AttributeProto.FLOATS
        else:
            for f in eo._DATA_FIELDS:
                p.tensor.ClearField(f)
    return c


@pytest.fixture(scope="module", params=sorted(G.ALL))
def graph(request, tmp_path_factory):
    m, feeds = G.ALL[request.param]()
    folder = tmp_path_factory.mktemp(request.param)
    path = folder / "m.onnx"
    onnx.save(m, str(path))
    return request.param, m, feeds, path


def test_every_float_weight_is_found_and_quantized(graph):
    name, m, _, path = graph
    r8 = eo.pack(path, path.with_name("b8.ecnn"), ecnn.config.make_config(bits=8))
    rl = eo.pack(path, path.with_name("lossless.ecnn"), ecnn.config.make_config(lossless=True))
    assert (r8.quantized[0], r8.exact[0], r8.in_graph[0]) == EXPECTED[name]
    assert rl.quantized == (0, 0) and rl.exact[0] == sum(EXPECTED[name][:2])
    assert r8.size < 0.4 * rl.size  # weights of 64-320 KiB: 8 bits is far smaller than lossless
    # the stored graph holds no float weight any more: only stubs and the tiny tensors
    with ecnn.open(path.with_name("b8.ecnn")) as f:
        assert f.info("onnx::model").nbytes < 2048
        # "2": Constant stubs or stubs named apart from their initializer (the If branches' two "w")
        assert f.metadata()["ecnn.onnx"] == ("1" if name == "loop" else "2")
        assert len(f.keys()) == 1 + sum(EXPECTED[name][:2])


def test_unpack_round_trips_and_passes_the_checker(graph):
    name, m, _, path = graph
    packed = path.with_name("rt.ecnn")
    eo.save_model(path, packed, bits=8)
    with ecnn.open(packed) as f:
        steps = {n: f.info(n).step for n in f.keys()}
    back = eo.load_model(packed)
    onnx.checker.check_model(back, full_check=True)
    assert _without_data(back) == _without_data(m)  # same graphs, nodes, order, names, attributes
    before, after = _float_tensors(m), _float_tensors(back)
    assert [n for n, _ in before] == [n for n, _ in after]
    bound = max((s for s in steps.values() if s), default=0.0) / 2 * (1 + 1e-6)
    for (label, a), (_, b) in zip(before, after):
        assert a.shape == b.shape and np.abs(a - b).max() <= bound, label
        if a.ndim < 2:
            assert np.array_equal(a, b), label  # 1-D and tiny tensors are exact
    # the lossless file gives back every value bit for bit
    eo.save_model(path, path.with_name("rt-l.ecnn"), lossless=True)
    exact = eo.load_model(path.with_name("rt-l.ecnn"))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(before, _float_tensors(exact)))


def test_inference_session_runs_every_branch_from_memory(graph):
    name, m, feeds, path = graph
    packed = path.with_name("sess.ecnn")
    eo.save_model(path, packed, bits=8)
    sess = eo.inference_session(packed.read_bytes(), providers=CPU)  # from bytes in memory
    ref = ort.InferenceSession(m.SerializeToString(), providers=CPU)
    rebuilt = ort.InferenceSession(eo.load_model(packed).SerializeToString(), providers=CPU)
    for feed in feeds:
        want, got, same = ref.run(None, feed), sess.run(None, feed), rebuilt.run(None, feed)
        for a, b, c in zip(want, got, same):
            assert np.array_equal(b, c)  # from memory == from the rebuilt model
            assert np.abs(a - b).max() <= 0.1 * max(np.abs(a).max(), 1e-3)  # 8 bits, a few layers deep
    assert len({tuple(np.round(ref.run(None, f)[0].ravel()[:4], 4)) for f in feeds}) == len(feeds)  # branches differ


def _lines(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines()) if v}


def test_cli_prints_true_counts_and_unpack_restores_them(tmp_path, capsys):
    m, _ = G.constants()
    src = tmp_path / "c.onnx"
    onnx.save(m, str(src))
    assert main(["pack", str(src), "-o", str(tmp_path / "c.ecnn"), "--bits", "8"]) == 0
    out = _lines(capsys.readouterr().out)
    assert out["quantized"] == "2 tensors, 192.00 KiB"  # W1 (64 KiB) and W2 (128 KiB)
    assert out["stored exactly"] == "3 tensors, 4.52 KiB"  # b: 256 floats, S: 300 values and 300 int64 indices
    assert out["left in the graph"].startswith("3 tensors, 52 B")  # scale (4 B), shape (3 int64), tiny (2x3 float)
    assert main(["unpack", str(tmp_path / "c.ecnn"), "-o", str(tmp_path / "back.onnx")]) == 0
    assert "0 initializers and 7 Constant nodes" in capsys.readouterr().out
    onnx.checker.check_model(str(tmp_path / "back.onnx"), full_check=True)

    m, _ = G.nested()
    onnx.save(m, str(src))
    assert main(["pack", str(src), "-o", str(tmp_path / "n.ecnn"), "-f"]) == 0
    assert main(["unpack", str(tmp_path / "n.ecnn"), "-o", str(tmp_path / "n.onnx")]) == 0
    assert "3 initializers and 2 Constant nodes" in capsys.readouterr().out


def _bias_only():
    """A model whose only weights are a 1-D bias and tiny Constants: nothing to quantize."""
    g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["s"], value_float=2.0),
            helper.make_node("Add", ["x", "b"], ["h"]),
            helper.make_node("Mul", ["h", "s"], ["y"]),
        ],
        "bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32), "b")],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=G.OPSET, ir_version=9)


def test_bits_that_quantize_nothing_warn_and_ratios_never_print_as_zero(tmp_path, capsys):
    src = tmp_path / "bias.onnx"
    onnx.save(_bias_only(), str(src))
    assert main(["pack", str(src), "-o", str(tmp_path / "b.ecnn"), "--bits", "4"]) == 0
    cap = capsys.readouterr()
    assert "warning: --bits quantized nothing" in cap.err
    assert "0.00x" not in cap.out and "quantized:         0 tensors, 0 B" in cap.out
    assert main(["pack", str(src), "-o", str(tmp_path / "b.ecnn"), "-f", "--step", "0.1"]) == 0
    assert "warning: --step quantized nothing" in capsys.readouterr().err
    assert main(["pack", str(src), "-o", str(tmp_path / "b.ecnn"), "-f", "--lossless"]) == 0
    assert capsys.readouterr().err == ""  # nothing was asked to be quantized


def test_check_prints_deviations_on_npz_and_synthetic_inputs(tmp_path, capsys):
    m, feeds = G.if_branches()
    src = tmp_path / "if.onnx"
    onnx.save(m, str(src))
    np.savez(tmp_path / "in.npz", **feeds[1])
    assert main(["pack", str(src), "-o", str(tmp_path / "a.ecnn"), "--bits", "4", "--check", str(tmp_path / "in.npz")]) == 0
    out = capsys.readouterr().out
    assert f"inputs from {tmp_path / 'in.npz'}" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("y [3, 128]"))
    dev = float(line.split("max |deviation| ")[1].split()[0])
    want = ort.InferenceSession(str(src), providers=CPU).run(None, feeds[1])[0]
    got = eo.inference_session(tmp_path / "a.ecnn", providers=CPU).run(None, feeds[1])[0]
    assert dev == pytest.approx(np.abs(want - got).max(), rel=1e-3) and dev > 0
    assert "top-1 agreement" in line and "% of its range" in line
    assert main(["pack", str(src), "-o", str(tmp_path / "a.ecnn"), "-f", "--check", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "synthetic inputs" in out and "not real data" in out and "y [1, 128]" in out


def test_check_refuses_bad_inputs_with_typed_errors(tmp_path, capsys):
    m, feeds = G.if_branches()
    src = tmp_path / "if.onnx"
    onnx.save(m, str(src))
    x, c = feeds[0]["x0"], feeds[0]["c"]
    cases = {
        "missing": {"x0": x},
        "extra": {"x0": x, "c": c, "z": x},
        "dtype": {"x0": x.astype(np.float64), "c": c},
        "shape": {"x0": x[:, :5], "c": c},
        "rank": {"x0": x[0], "c": c},
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(InvalidOption):
            eo.check_inputs(src, tmp_path / f"{name}.npz")
        assert main(["pack", str(src), "-o", str(tmp_path / f"{name}.ecnn"), "--check", str(tmp_path / f"{name}.npz")]) == 1
        assert "error:" in capsys.readouterr().err
        assert not (tmp_path / f"{name}.ecnn").exists()  # refused before any work
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UnreadableInput):
        eo.check_inputs(src, tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x0=np.array([{"a": 1}], dtype=object), c=c)
    with pytest.raises(UnreadableInput):  # nothing is unpickled
        eo.check_inputs(src, tmp_path / "obj.npz")
    from safetensors.numpy import save_file

    save_file({"w": np.ones((4, 4), np.float32)}, str(tmp_path / "w.safetensors"))
    assert main(["pack", str(tmp_path / "w.safetensors"), "--check", "synthetic"]) == 1  # --check runs .onnx models
    assert "--check runs .onnx models" in capsys.readouterr().err and not (tmp_path / "w.ecnn").exists()
    # an input without a declared shape: synthetic inputs are refused with a message, an npz works
    m.graph.input[0].type.tensor_type.ClearField("shape")
    onnx.save(m, str(tmp_path / "noshape.onnx"))
    with pytest.raises(InvalidOption, match="declares no shape"):
        eo.check_inputs(tmp_path / "noshape.onnx")
    assert set(eo.check_inputs(tmp_path / "noshape.onnx", _npz(tmp_path, feeds[0]))) == {"x0", "c"}


def _npz(folder, arrays):
    np.savez(folder / "good.npz", **arrays)
    return folder / "good.npz"


def test_external_data_unpack_of_subgraphs_and_constants_passes_the_checker(tmp_path, monkeypatch):
    m, feeds = G.nested()
    packed = tmp_path / "n.ecnn"
    eo.save_model(m, packed, bits=8)
    monkeypatch.setattr(eo, "EXTERNAL_DATA_THRESHOLD", 1024)  # as if the weights were over 1 GiB
    out = tmp_path / "out" / "n.onnx"
    out.parent.mkdir()
    eo.write_model(eo.load_model(packed), out)
    assert (out.parent / "n.onnx.data").stat().st_size == 5 * 64 * 1024 > out.stat().st_size  # all five weights, Constants too
    onnx.checker.check_model(str(out), full_check=True)
    ref = eo.inference_session(packed, providers=CPU)
    sess = ort.InferenceSession(str(out), providers=CPU)
    for feed in feeds:
        assert np.array_equal(sess.run(None, feed)[0], ref.run(None, feed)[0])


def _tampered(tmp_path, change) -> "Path":
    """The If model packed, with ``change(graph)`` applied to its stored graph."""
    m, _ = G.if_branches()
    packed = tmp_path / "if.ecnn"
    eo.save_model(m, packed, bits=8)
    with ecnn.open(packed) as f:
        arrays = {n: f.get_array(n) for n in f.keys()}
        md = f.metadata()
    graph = onnx.ModelProto()
    graph.ParseFromString(arrays["onnx::model"][0].tobytes())
    change(graph)
    arrays["onnx::model"] = (np.frombuffer(graph.SerializeToString(), np.uint8), arrays["onnx::model"][1])
    out = tmp_path / "bad.ecnn"
    ecnn.file.save(arrays, out, ecnn.config.make_config(lossless=True), md)
    return out


def _entries(graph, key):
    return [e for p in eo._places(graph) for e in p.tensor.external_data if e.key == key]


def test_malformed_stubs_are_refused(tmp_path):
    def rename(graph):
        renamed = _entries(graph, "tensor")
        assert [e.value for e in renamed] == ["w~2", "w~3"]  # the branches' "w", apart from the main graph's
        renamed[0].value = "nowhere"

    def main_graph_tensor_entry(graph):
        e = graph.graph.initializer[0].external_data.add()
        e.key, e.value = "tensor", "w~2"

    def unknown_key(graph):
        e = _entries(graph, "tensor")[1]
        e.key = "offset"

    def data_left(graph):
        graph.graph.initializer[0].float_data.append(1.0)

    def graph_tensor(graph):
        _entries(graph, "tensor")[0].value = "onnx::model"

    for change in (rename, main_graph_tensor_entry, unknown_key, data_left, graph_tensor):
        bad = _tampered(tmp_path, change)
        with pytest.raises(InvalidField):
            eo.load_model(bad)
        with pytest.raises(InvalidField):
            eo.inference_session(bad, providers=CPU)


def test_constants_with_external_data_pack_again(tmp_path, monkeypatch):
    m, feeds = G.constants()
    packed = tmp_path / "c.ecnn"
    eo.save_model(m, packed, bits=8)
    monkeypatch.setattr(eo, "EXTERNAL_DATA_THRESHOLD", 1024)
    eo.write_model(eo.load_model(packed), tmp_path / "c.onnx")
    assert any(p.tensor is not None and p.tensor.data_location == TensorProto.EXTERNAL
               for p in eo._places(onnx.load(str(tmp_path / "c.onnx"), load_external_data=False)))  # fmt: skip
    eo.save_model(tmp_path / "c.onnx", tmp_path / "again.ecnn", lossless=True)
    first, again = _float_tensors(eo.load_model(packed)), _float_tensors(eo.load_model(tmp_path / "again.ecnn"))
    assert [n for n, _ in first] == [n for n, _ in again]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again))


def test_onnx_fixtures_rebuild_as_recorded():
    import make_onnx_fixtures as mf  # tools/ is on the path (conftest)

    assert sorted(p.stem for p in (mf.OUT / "valid").glob("*.ecnn")) == sorted(mf.VALID)
    assert sorted(p.stem for p in (mf.OUT / "invalid").glob("*.ecnn")) == sorted(mf.INVALID)
    assert mf.check() == []
    back = eo.load_model(mf.OUT / "valid" / "constants_if_v2.ecnn")
    onnx.checker.check_model(back, full_check=True)
    feed = {"x": np.ones((2, 8), np.float32), "c": np.array(True)}
    want = ort.InferenceSession(back.SerializeToString(), providers=CPU).run(None, feed)
    got = eo.inference_session(mf.OUT / "valid" / "constants_if_v2.ecnn", providers=CPU).run(None, feed)
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_a_branch_that_outputs_its_initializer_runs_from_memory(tmp_path):
    rng = np.random.default_rng(9)
    w_then, w_else = G._w(rng, (16, 16)), G._w(rng, (16, 16))

    def branch(name, w):  # the initializer is the branch's output: it cannot be renamed away
        return helper.make_graph([], name, [], [G._vi("w", [16, 16])], [numpy_helper.from_array(w, "w")])

    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("t", w_then), else_branch=branch("e", w_else))],
        "out", [G._vi("c", [], TensorProto.BOOL)], [G._vi("y", [16, 16])],
    )  # fmt: skip
    m = G._model(g)
    eo.save_model(m, tmp_path / "o.ecnn", lossless=True)
    sess = eo.inference_session(tmp_path / "o.ecnn", providers=CPU)
    assert np.array_equal(sess.run(None, {"c": np.array(True)})[0], w_then)
    assert np.array_equal(sess.run(None, {"c": np.array(False)})[0], w_else)


def test_check_inputs_the_original_cannot_run_on_fail_before_packing(tmp_path, capsys):
    w = np.arange(400, dtype=np.float32).reshape(100, 4)
    g = helper.make_graph(
        [helper.make_node("Gather", ["w", "i"], ["y"])], "gather",
        [G._vi("i", ["N"], TensorProto.INT64)], [G._vi("y", ["N", 4])], [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    onnx.save(G._model(g), str(tmp_path / "g.onnx"))
    np.savez(tmp_path / "bad.npz", i=np.array([1000], np.int64))  # right dtype and rank, index out of range
    with pytest.raises(InvalidOption, match="cannot run the original"):
        eo.run_model(tmp_path / "g.onnx", eo.check_inputs(tmp_path / "g.onnx", tmp_path / "bad.npz"))
    assert main(["pack", str(tmp_path / "g.onnx"), "--check", str(tmp_path / "bad.npz")]) == 1
    assert "cannot run the original" in capsys.readouterr().err and not (tmp_path / "g.ecnn").exists()
    np.savez(tmp_path / "ok.npz", i=np.array([3, 99], np.int64))
    devs = eo.compare(tmp_path / "g.onnx", _packed(tmp_path), eo.check_inputs(tmp_path / "g.onnx", tmp_path / "ok.npz"))
    assert [(d.name, d.shape, d.top1[1]) for d in devs] == [("y", (2, 4), 2)]  # rows 3 and 99, 4 classes each
    assert 0 < devs[0].max_abs <= 0.5 * 399 / 127 * (1 + 1e-6)  # half the largest row's step
    assert devs[0].relative == pytest.approx(devs[0].max_abs / (399 - 12))


def _packed(folder):
    eo.save_model(folder / "g.onnx", folder / "g.ecnn", bits=8)
    return folder / "g.ecnn"


def test_pack_json_gives_the_onnx_counts_and_the_check(tmp_path, capsys):
    import json

    m, _ = G.constants()
    src = tmp_path / "c.onnx"
    onnx.save(m, str(src))
    argv = ["pack", str(src), "-o", str(tmp_path / "c.ecnn"), "--bits", "8", "--check", "synthetic", "--json"]
    assert main(argv) == 0
    fig = json.loads(capsys.readouterr().out)  # one object and nothing else on stdout
    assert (fig["tensors"], fig["quantized"], fig["exact"], fig["in_graph"]) == (5, 2, 3, 3)
    assert fig["quantized_bytes"] == 192 * 1024 and fig["input_bytes"] == fig["quantized_bytes"] + fig["exact_bytes"]
    assert fig["output_bytes"] == (tmp_path / "c.ecnn").stat().st_size < fig["model_bytes"]
    assert fig["check"]["inputs"] == "synthetic"
    assert [(o["name"], o["shape"]) for o in fig["check"]["outputs"]] == [("y", [1, 2, D]), ("t", [])]
    assert 0 < fig["check"]["outputs"][0]["max_abs"] < 0.1 * fig["check"]["outputs"][0]["range"]
    assert main(["unpack", str(tmp_path / "c.ecnn"), "-o", str(tmp_path / "back.onnx"), "--json"]) == 0
    back = json.loads(capsys.readouterr().out)
    assert (back["tensors"], back["constants"]) == (0, 7)
