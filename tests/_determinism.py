"""Every file the determinism tests compare, made in this process or in one child interpreter.

tests/conftest.py (the ``determinism`` fixture) runs :func:`digests` once in pytest's
own process (encoding with one worker) and once in a child interpreter started with another
``PYTHONHASHSEED`` and 2 encoding workers (``ECNN_WORKERS``); the tests in
tests/test_robustness.py and tests/test_api.py compare the two. One child serves them all, since starting an
interpreter that imports torch and onnx costs more than the encoding itself.

Run as a child: ``python -c "...; _determinism.child(out_dir)"`` from the repository
root, so that ``import ecnn`` finds this checkout; it prints one JSON object.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

# Hashed by both processes: equal values would mean that the two share a hash seed.
HASH_PROBE = "ecnn determinism probe"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cli_input(out_dir: Path) -> Path:
    """The safetensors file that ``ecnn pack`` packs in both processes."""
    from safetensors.numpy import save_file

    r = np.random.default_rng(5)
    p = out_dir / "m.safetensors"
    save_file({"w": (r.standard_normal((40, 30)) * 0.1).astype(np.float32), "b": np.ones(40, np.float32)}, str(p))
    return p


def digests(out_dir: Path, tag: str) -> dict[str, str]:
    """sha256 of every compared file, by case; files go to ``out_dir`` under names that start with ``tag``.

    The cases ``numpy bits=8`` ... ``trained`` are those of
    test_robustness.test_same_input_same_bytes_across_processes_and_hash_seeds (different
    options, so all different), ``api bits=5`` that of test_api.test_deterministic_across_processes,
    and ``cli pack`` that of test_robustness.test_cli_pack_is_deterministic.
    """
    import torch
    from onnx import TensorProto, helper, numpy_helper

    import ecnn
    import ecnn.numpy as en
    import ecnn.onnx as eo
    import ecnn.train
    from ecnn.cli import main
    from ecnn.config import EncodeConfig

    out: dict[str, str] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            r = np.random.default_rng(3)
            w = (r.standard_normal((64, 64)) * 0.05).astype(np.float32)
            sparse = w * (r.random(w.shape) < 0.15)
            arrays = {
                "w": w, "b": r.standard_normal(64).astype(np.float32), "s": sparse, "h": w[:16].astype(np.float16),
                "i": r.integers(-9, 9, (20, 30)).astype(np.int32), "m": r.random((10, 20)) < 0.3,
                "e": np.zeros((0, 3), np.float32),
            }
            options = {
                "numpy bits=8": {"bits": 8},
                "numpy lossless": {"lossless": True},
                "numpy config": {"config": EncodeConfig(bits=3, per_row=False, chunk=4096)},
            }
            for case, kw in options.items():
                out[case] = _sha(en.encode(arrays, metadata={"k": "v", "a": "b"}, **kw))
            # The torch API on the same tensors, and an ONNX graph.
            out["torch bits=5"] = _sha(ecnn.encode({k: torch.from_numpy(v) for k, v in arrays.items()}, bits=5))
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
            y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
            graph = helper.make_graph(
                [helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)], "g", [x], [y],
                [numpy_helper.from_array(w, "W"), numpy_helper.from_array(arrays["b"], "B")],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            eo.save_model(model, out_dir / f"{tag}.a.ecnn", bits=6)
            out["onnx bits=6"] = _sha((out_dir / f"{tag}.a.ecnn").read_bytes())
            # A model trained with ecnn.train, converted to its grid, then packed.
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(), torch.nn.Linear(24, 3))
            ecnn.train.prepare_(net, ecnn.train.TrainConfig(method="ect", lam=0.05))
            opt = torch.optim.SGD(net.parameters(), 1e-2)
            xs, ys = torch.randn(32, 12), torch.randint(0, 3, (32,))
            for _ in range(3):
                loss = torch.nn.functional.cross_entropy(net(xs), ys) + ecnn.train.regularizer(net)
                opt.zero_grad()
                loss.backward()
                opt.step()
            steps = ecnn.train.convert_(net)
            out["trained"] = _sha(ecnn.encode(net.state_dict(), config=ecnn.train.encode_config(steps)))
            # A plain torch state dict.
            g = torch.Generator().manual_seed(1)
            sd = {"w": torch.randn(300, 200, generator=g), "b": torch.randn(200, generator=g)}
            out["api bits=5"] = _sha(ecnn.encode(sd, bits=5))
    finally:
        torch.set_num_threads(threads)
    # The CLI, from the file tests/conftest.py wrote.
    packed = out_dir / f"{tag}.m.ecnn"
    status = main(["pack", str(out_dir / "m.safetensors"), "-o", str(packed), "-q"])
    out["cli pack"] = _sha(packed.read_bytes()) if status == 0 else f"exit status {status}"
    return out


def child(out_dir: str) -> None:
    """The child interpreter's part: print its hash probe, worker count and digests as JSON."""
    from ecnn import chunkrun

    result = {"hash": hash(HASH_PROBE), "workers": chunkrun.workers(), "digests": digests(Path(out_dir), "child")}
    sys.stdout.write(json.dumps(result))
