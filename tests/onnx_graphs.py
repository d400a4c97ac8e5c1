"""Small ONNX graphs with weights where exporters put them: Constant nodes and If / Loop / Scan subgraphs.

Each builder returns ``(model, feeds)``: feeds is a list of input dicts that
between them run every branch. Used by tests/test_onnx_graphs.py.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D = 128  # a D x D float32 weight is 64 KiB
OPSET = [helper.make_opsetid("", 19)]


def _w(rng, shape, scale=0.1):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _model(g):
    m = helper.make_model(g, opset_imports=OPSET, ir_version=9)
    onnx.checker.check_model(m, full_check=True)
    return m


def constants():
    """Weights in Constant nodes of every attribute kind."""
    rng = np.random.default_rng(1)
    sparse_dense = np.zeros((D, D), np.float32)
    idx = rng.choice(D * D, size=300, replace=False)
    sparse_dense.flat[idx] = _w(rng, 300)
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(sparse_dense.flat[np.sort(idx)].copy(), "sv"),
        numpy_helper.from_array(np.sort(idx).astype(np.int64), "si"),
        [D, D],
    )
    nodes = [
        helper.make_node("Constant", [], ["W1"], value=numpy_helper.from_array(_w(rng, (D, D)), "W1")),
        helper.make_node("Constant", [], ["W2"], value=numpy_helper.from_array(_w(rng, (D, 2 * D)), "")),
        helper.make_node("Constant", [], ["b"], value_floats=_w(rng, 2 * D).tolist()),
        helper.make_node("Constant", [], ["S"], sparse_value=sparse),
        helper.make_node("Constant", [], ["scale"], value_float=0.5),
        helper.make_node("Constant", [], ["shape"], value_ints=[-1, 2, D]),
        helper.make_node("Constant", [], ["tiny"], value=numpy_helper.from_array(_w(rng, (2, 3)), "")),
        helper.make_node("MatMul", ["x", "W1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "S"], ["h1s"]),
        helper.make_node("MatMul", ["h1s", "W2"], ["h2"]),
        helper.make_node("Add", ["h2", "b"], ["h3"]),
        helper.make_node("Mul", ["h3", "scale"], ["h4"]),
        helper.make_node("Reshape", ["h4", "shape"], ["y"]),
        helper.make_node("ReduceSum", ["tiny"], ["t"], keepdims=0),
    ]
    g = helper.make_graph(nodes, "constants", [_vi("x", ["N", D])], [_vi("y", ["N", 2, D]), _vi("t", [])])
    x = rng.standard_normal((4, D)).astype(np.float32)
    return _model(g), [{"x": x}]


def _branch(name, w, out="y"):
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], [out])], name, [], [_vi(out, ["N", D])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip


def if_branches():
    """An If whose branches hold initializers of the same name, one shadowing a main-graph initializer."""
    rng = np.random.default_rng(2)
    then_g, else_g = _branch("then", _w(rng, (D, D)), "yt"), _branch("else", _w(rng, (D, D)), "ye")
    nodes = [
        helper.make_node("MatMul", ["x0", "w"], ["x"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(
        nodes, "if", [_vi("x0", ["N", D]), _vi("c", [], TensorProto.BOOL)], [_vi("y", ["N", D])],
        [numpy_helper.from_array(_w(rng, (D, D)), "w")],
    )  # fmt: skip
    x = rng.standard_normal((3, D)).astype(np.float32)
    return _model(g), [{"x0": x, "c": np.array(True)}, {"x0": x, "c": np.array(False)}]


def loop_body():
    """A Loop whose body holds its weight as an initializer."""
    rng = np.random.default_rng(3)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h", "wl"], ["hm"]),
            helper.make_node("Tanh", ["hm"], ["h_out"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL), _vi("h", ["N", D])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("h_out", ["N", D])],
        [numpy_helper.from_array(_w(rng, (D, D), 0.3), "wl")],
    )
    g = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)],
        "loop", [_vi("M", [], TensorProto.INT64), _vi("x", ["N", D])], [_vi("y", ["N", D])],
    )  # fmt: skip
    return _model(g), [{"M": np.array(3, np.int64), "x": rng.standard_normal((2, D)).astype(np.float32)}]


def scan_body():
    """A Scan whose body holds its weight as an initializer and a bias as a Constant."""
    rng = np.random.default_rng(4)
    body = helper.make_graph(
        [
            helper.make_node("Constant", [], ["bs"], value=numpy_helper.from_array(_w(rng, (D,)), "")),
            helper.make_node("MatMul", ["xt", "ws"], ["m"]),
            helper.make_node("Add", ["m", "s"], ["m2"]),
            helper.make_node("Add", ["m2", "bs"], ["m3"]),
            helper.make_node("Tanh", ["m3"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["y_t"]),
        ],
        "scan_body", [_vi("s", [D]), _vi("xt", [D])], [_vi("s_out", [D]), _vi("y_t", [D])],
        [numpy_helper.from_array(_w(rng, (D, D), 0.3), "ws")],
    )  # fmt: skip
    g = helper.make_graph(
        [helper.make_node("Scan", ["s0", "xs"], ["s_last", "ys"], body=body, num_scan_inputs=1)],
        "scan", [_vi("s0", [D]), _vi("xs", ["T", D])], [_vi("s_last", [D]), _vi("ys", ["T", D])],
    )  # fmt: skip
    return _model(g), [{"s0": np.zeros(D, np.float32), "xs": rng.standard_normal((5, D)).astype(np.float32)}]


def nested():
    """An If inside an If: the inner branches hold initializers and Constants, two graphs deep."""
    rng = np.random.default_rng(5)

    def inner(tag):
        wc = helper.make_node("Constant", [], ["wc"], value=numpy_helper.from_array(_w(rng, (D, D)), ""))
        return helper.make_graph(
            [wc, helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("MatMul", ["t", "wc"], [f"z{tag}"])],
            f"inner_{tag}", [], [_vi(f"z{tag}", ["N", D])], [numpy_helper.from_array(_w(rng, (D, D)), "w")],
        )  # fmt: skip

    outer_then = helper.make_graph(
        [helper.make_node("If", ["c2"], ["yt"], then_branch=inner("a"), else_branch=inner("b"))],
        "outer_then", [], [_vi("yt", ["N", D])],
    )  # fmt: skip
    outer_else = _branch("outer_else", _w(rng, (D, D)), "ye")
    g = helper.make_graph(
        [helper.make_node("If", ["c1"], ["y"], then_branch=outer_then, else_branch=outer_else)],
        "nested", [_vi("x", ["N", D]), _vi("c1", [], TensorProto.BOOL), _vi("c2", [], TensorProto.BOOL)],
        [_vi("y", ["N", D])],
    )  # fmt: skip
    x = rng.standard_normal((2, D)).astype(np.float32)
    feeds = [{"x": x, "c1": np.array(a), "c2": np.array(b)} for a, b in ((True, True), (True, False), (False, False))]
    return _model(g), feeds


def function():
    """A model-local function (model.functions) holding its weight and bias as Constants, called twice."""
    rng = np.random.default_rng(6)
    fn = helper.make_function(
        "local", "Dense", ["X"], ["Y"],
        [
            helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(_w(rng, (D, D)), "")),
            helper.make_node("Constant", [], ["B"], value_floats=_w(rng, D).tolist()),
            helper.make_node("MatMul", ["X", "W"], ["H"]),
            helper.make_node("Add", ["H", "B"], ["Y"]),
        ],
        OPSET,
    )  # fmt: skip
    g = helper.make_graph(
        [helper.make_node("Dense", ["x"], ["h"], domain="local"), helper.make_node("Dense", ["h"], ["y"], domain="local")],
        "function", [_vi("x", ["N", D])], [_vi("y", ["N", D])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[*OPSET, helper.make_opsetid("local", 1)], ir_version=9, functions=[fn])
    onnx.checker.check_model(m, full_check=True)
    return m, [{"x": rng.standard_normal((3, D)).astype(np.float32)}]


ALL = {"constants": constants, "if": if_branches, "loop": loop_body, "scan": scan_body, "nested": nested, "function": function}


def gru():
    """A GRU classifier over 12 steps with its initial state ``h0`` a graph input, and a linear head."""
    rng = np.random.default_rng(7)
    h, n_in, n_out, steps = 32, 16, 10, 12
    g = helper.make_graph(
        [
            helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["", "hT"], hidden_size=h, linear_before_reset=1),
            helper.make_node("Squeeze", ["hT", "axis0"], ["hs"]),
            helper.make_node("MatMul", ["hs", "head"], ["logits"]),
        ],
        "gru",
        [_vi("x", [steps, "N", n_in]), _vi("h0", [1, "N", h])],
        [_vi("logits", ["N", n_out])],
        [
            numpy_helper.from_array(_w(rng, (1, 3 * h, n_in), 0.4), "W"),
            numpy_helper.from_array(_w(rng, (1, 3 * h, h), 0.3), "R"),
            numpy_helper.from_array(_w(rng, (1, 6 * h), 0.1), "B"),
            numpy_helper.from_array(_w(rng, (h, n_out), 0.5), "head"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        ],
    )
    feeds = {"x": rng.standard_normal((steps, 64, n_in)).astype(np.float32), "h0": np.zeros((1, 64, h), np.float32)}
    return _model(g), [feeds]


def sensitive():
    """Two weights of one shape side by side: the output is 100 times the first's product plus 1/100 of the second's."""
    rng = np.random.default_rng(8)
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "loud"], ["a"]),
            helper.make_node("MatMul", ["x", "quiet"], ["b"]),
            helper.make_node("Mul", ["a", "hundred"], ["a2"]),
            helper.make_node("Mul", ["b", "hundredth"], ["b2"]),
            helper.make_node("Add", ["a2", "b2"], ["y"]),
        ],
        "sensitive",
        [_vi("x", ["N", D])],
        [_vi("y", ["N", 16])],
        [
            numpy_helper.from_array(_w(rng, (D, 16)), "loud"),
            numpy_helper.from_array(_w(rng, (D, 16)), "quiet"),
            numpy_helper.from_array(np.array(100.0, np.float32), "hundred"),
            numpy_helper.from_array(np.array(0.01, np.float32), "hundredth"),
        ],
    )
    return _model(g), [{"x": rng.standard_normal((64, D)).astype(np.float32)}]
