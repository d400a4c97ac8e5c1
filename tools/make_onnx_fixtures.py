"""Build the ONNX conformance vectors under fixtures/onnx/ (spec/FORMAT.md, Appendix C).

    python tools/make_onnx_fixtures.py            # check the committed fixtures against expected.json
    python tools/make_onnx_fixtures.py --write    # add fixtures that do not exist yet (never changes old ones)

valid/NAME.ecnn must rebuild (ecnn.onnx.load_model) to the model described in
valid/expected.json: every graph's node operators in order, and every place
(initializer or Constant tensor, in model order) with its data type, dims and
the SHA-256 of its values as little-endian bytes. invalid/NAME.ecnn must be
refused with the error class named in invalid/expected.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ecnn.onnx as eo  # noqa: E402
from ecnn import errors  # noqa: E402
from ecnn import file as efile  # noqa: E402
from ecnn.config import make_config  # noqa: E402

OUT = ROOT / "fixtures" / "onnx"
OPSET = [helper.make_opsetid("", 19)]


def _w(seed: int, shape) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _model(g) -> onnx.ModelProto:
    m = helper.make_model(g, opset_imports=OPSET, ir_version=9, producer_name="ecnn fixtures")
    onnx.checker.check_model(m, full_check=True)
    return m


def loop_v1() -> onnx.ModelProto:
    """A Loop body holding its weight: a convention "1" file (names unique, no Constant stubs)."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h", "wl"], ["hm"]), helper.make_node("Tanh", ["hm"], ["h_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL), _vi("h", ["N", 8])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("h_out", ["N", 8])], [numpy_helper.from_array(_w(1, (8, 8)), "wl")],
    )  # fmt: skip
    g = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)], "loop",
        [_vi("M", [], TensorProto.INT64), _vi("x", ["N", 8])], [_vi("y", ["N", 8])],
    )  # fmt: skip
    return _model(g)


def constants_if_v2() -> onnx.ModelProto:
    """Constant value / value_floats / sparse_value and If branches that each hold a "w" shadowing the main graph's."""
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(_w(2, 70), ""), numpy_helper.from_array(np.arange(0, 140, 2, dtype=np.int64), ""), [12, 12]
    )

    def branch(tag, seed):
        return helper.make_graph(
            [helper.make_node("MatMul", ["h", "w"], [f"y{tag}"])], f"branch_{tag}", [], [_vi(f"y{tag}", ["N", 12])],
            [numpy_helper.from_array(_w(seed, (12, 12)), "w")],
        )  # fmt: skip

    g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(_w(3, (8, 12)), "")),
            helper.make_node("Constant", [], ["b"], value_floats=_w(4, 96).tolist()),
            helper.make_node("Constant", [], ["S"], sparse_value=sparse),
            helper.make_node("Constant", [], ["shape"], value_ints=[-1, 12]),
            helper.make_node("MatMul", ["x", "W"], ["h0"]),
            helper.make_node("Reshape", ["b", "shape"], ["b2"]),
            helper.make_node("MatMul", ["h0", "S"], ["h1"]),
            helper.make_node("MatMul", ["h1", "w"], ["h"]),
            helper.make_node("If", ["c"], ["y"], then_branch=branch("t", 5), else_branch=branch("e", 6)),
        ],
        "constants_if", [_vi("x", ["N", 8]), _vi("c", [], TensorProto.BOOL)], [_vi("y", ["N", 12]), _vi("b2", [8, 12])],
        [numpy_helper.from_array(_w(7, (12, 12)), "w")],
    )  # fmt: skip
    return _model(g)


VALID = {"loop_v1": (loop_v1, 8), "constants_if_v2": (constants_if_v2, 6)}


def _sha256(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    if a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def describe(model: onnx.ModelProto) -> dict:
    """What a rebuilt model must be: operators per graph, and every place's type, dims and values."""
    places = []
    for p in eo._places(model):
        if p.tensor is None:  # value_floats
            places.append({"label": p.label, "floats": _sha256(np.asarray(p.attr.floats, np.float32))})
            continue
        t = p.tensor
        places.append({"label": p.label, "data_type": t.data_type, "dims": list(t.dims), "sha256": _sha256(numpy_helper.to_array(t))})
    return {"graphs": [[n.op_type for n in g.node] for g in eo._graphs(model.graph)], "places": places}


def _drop_tensor(data: bytes) -> bytes:
    """constants_if_v2 without the tensor of the then-branch "w": its stub names nothing."""
    with efile.EcnnFile(data) as f:
        arrays = {n: f.get_array(n) for n in f.keys() if n != "w~2"}
        md = f.metadata()
    return efile.encode(arrays, make_config(lossless=True), md)


INVALID = {"missing_stub_tensor": (lambda: _drop_tensor(_pack(constants_if_v2(), 6)), "InvalidField")}


def _pack(model: onnx.ModelProto, bits: int) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.ecnn"
        eo.save_model(model, path, bits=bits)
        return path.read_bytes()


def check() -> list[str]:
    bad = []
    exp = json.loads((OUT / "valid" / "expected.json").read_text())
    for name in VALID:
        got = describe(eo.load_model(OUT / "valid" / f"{name}.ecnn"))
        with efile.EcnnFile(OUT / "valid" / f"{name}.ecnn") as f:
            md = f.metadata()
        if got != exp[name]["model"] or md != exp[name]["metadata"]:
            bad.append(name)
    exp = json.loads((OUT / "invalid" / "expected.json").read_text())
    for name in INVALID:
        try:
            eo.load_model(OUT / "invalid" / f"{name}.ecnn")
            bad.append(name)
        except errors.EcnnError as e:
            if type(e).__name__ != exp[name]:
                bad.append(name)
    return bad


def write() -> None:
    for sub in ("valid", "invalid"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    path = OUT / "valid" / "expected.json"
    exp = json.loads(path.read_text()) if path.exists() else {}
    for name, (build, bits) in VALID.items():
        f = OUT / "valid" / f"{name}.ecnn"
        if not f.exists():
            f.write_bytes(_pack(build(), bits))
            with efile.EcnnFile(f) as ef:
                md = ef.metadata()
            exp[name] = {"metadata": md, "model": describe(eo.load_model(f))}
    path.write_text(json.dumps(exp, indent=1, sort_keys=True) + "\n")
    path = OUT / "invalid" / "expected.json"
    exp = json.loads(path.read_text()) if path.exists() else {}
    for name, (build, err) in INVALID.items():
        f = OUT / "invalid" / f"{name}.ecnn"
        if not f.exists():
            f.write_bytes(build())
            exp[name] = err
    path.write_text(json.dumps(exp, indent=1, sort_keys=True) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="add fixtures that do not exist yet")
    a = ap.parse_args()
    if a.write:
        write()
    bad = check()
    print("ok" if not bad else f"mismatch: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
