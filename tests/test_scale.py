"""Checkpoints larger than memory: ``ecnn pack`` and ``ecnn unpack`` never hold the whole model,
and ``load_into`` a meta-device model holds it once.

A ~200 MiB sharded bf16 checkpoint is packed and unpacked to a folder, each in
a child process (``python -m ecnn``), whose peak memory is compared with the
same command on a tiny checkpoint of the same layout (the interpreter, torch
and the command's setup). Holding the whole model, or the whole encoded file,
would add at least the checkpoint's size, or half of it at 8 bits; a
streaming command adds its window of a few tensors.

With one worker (``ECNN_WORKERS=1``) the command is one process, so the
comparison is not blurred by what each forked encode worker holds for its own
tensor (``tools/bench_scale.py`` measures the default pool). The peaks are
those of ``tools/bench_scale.py``, read every 0.1 s: the largest single
process's peak RSS (``VmHWM``) and the PSS of the whole process tree. Not
``ru_maxrss``: it starts at the launching process's RSS, here pytest's with
torch loaded.

The checkpoint is written here, not by ``tools/make_checkpoint.py``, whose
layout at this size has 32 MiB embeddings: encoding one of them takes about as
much memory as the margin, which would leave the test no room.

Deselect with ``-m "not scale"``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import bench_scale

pytestmark = pytest.mark.scale

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
# About 200 MiB of bf16 in tensors of at most 3 MiB: encoding one takes several
# times its size (floats, symbols, statistics), which must stay well below the model.
HIDDEN, INTER, VOCAB, LAYERS = 768, 2048, 2048, 15
SHARD = 64 * MiB


def _llama_shapes(hidden: int, inter: int, vocab: int, layers: int) -> dict[str, tuple[int, ...]]:
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + f"self_attn.{x}_proj.weight": (hidden, hidden) for x in "qkvo"})
        shapes.update({p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden)})
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_checkpoint(folder: Path, shapes: dict[str, tuple[int, ...]], shard_bytes: int = SHARD) -> int:
    """Sharded bf16 safetensors with ``model.safetensors.index.json``; returns the tensors' bytes."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    shards: list[dict[str, torch.Tensor]] = [{}]
    held = 0
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g).mul_(0.02).bfloat16() if len(shape) > 1 else torch.ones(shape).bfloat16()
        if shards[-1] and held + 2 * t.numel() > shard_bytes:
            shards.append({})
            held = 0
        shards[-1][name] = t
        held += 2 * t.numel()
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file))
        weight_map.update(dict.fromkeys(shard, file))
        total += sum(2 * t.numel() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["ECNN_WORKERS"] = "1"  # one process (see above)
    return env


def _run(cwd: Path, *args: str) -> bench_scale.Measured:
    m = bench_scale.measure([sys.executable, "-m", "ecnn", *args], cwd, _env())
    assert m.rc == 0, f"ecnn {' '.join(args)} failed with exit status {m.rc}:\n{m.stderr[-3000:]}"
    return m


def _check(what: str, m: bench_scale.Measured, base: bench_scale.Measured, nbytes: int) -> None:
    allowed = nbytes // 2  # what holding the whole model (or its whole 8-bit encoding) adds at least
    extra_rss, extra_pss = m.max_rss - base.max_rss, m.peak_pss - base.peak_pss
    detail = (
        f"ecnn {what} of a {nbytes / MiB:.0f} MiB checkpoint: peak RSS {m.max_rss / MiB:.0f} MiB "
        f"({extra_rss / MiB:+.0f} MiB over a tiny checkpoint), peak PSS {m.peak_pss / MiB:.0f} MiB "
        f"({extra_pss / MiB:+.0f} MiB); at most +{allowed / MiB:.0f} MiB allowed"
    )
    assert extra_rss <= allowed and extra_pss <= allowed, detail


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The tiny and the 200 MiB checkpoints, packed at 8 bits: folders, files and measurements."""
    work = tmp_path_factory.mktemp("scale")
    shapes = _llama_shapes(HIDDEN, INTER, VOCAB, LAYERS)
    runs = {}
    for name, s in (("tiny", _llama_shapes(hidden=8, inter=16, vocab=32, layers=1)), ("ckpt", shapes)):
        nbytes = write_checkpoint(work / name, s)
        out = str(work / f"{name}.ecnn")
        m = _run(work, "pack", str(work / name), "-o", out, "--bits", "8", "--effort", "fast", "-f", "-q")
        runs[name] = (work / f"{name}.ecnn", nbytes, m)
    shutil.rmtree(work / "ckpt")
    return work, shapes, runs


def test_pack_does_not_hold_the_whole_checkpoint(packed):
    _, shapes, runs = packed
    (_, _, base), (_, nbytes, m) = runs["tiny"], runs["ckpt"]
    assert nbytes > 150 * MiB and 2 * max(torch.Size(s).numel() for s in shapes.values()) <= 3 * MiB
    _check("pack", m, base, nbytes)


def test_unpack_to_a_folder_does_not_hold_the_whole_model(packed):
    work, shapes, runs = packed
    measured = {}
    for name, (path, _, _) in runs.items():
        # Shards of 50 MB: one model.safetensors would hold everything at the default shard size.
        measured[name] = _run(work, "unpack", str(path), "-o", f"{work / name}.out{os.sep}", "--shard-size", "50MB", "-f", "-q")
    index = json.loads((work / "ckpt.out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(shapes)
    _check("unpack", measured["ckpt"], measured["tiny"], runs["ckpt"][1])


def test_bench_scale_load_child_builds_a_meta_model_from_the_file(tmp_path, capsys):
    """The benchmark's load_into step: a module tree matching the file's names, built on meta, then loaded."""
    write_checkpoint(tmp_path / "tiny", _llama_shapes(hidden=8, inter=16, vocab=32, layers=2))
    _run(tmp_path, "pack", str(tmp_path / "tiny"), "-o", str(tmp_path / "t.ecnn"), "--bits", "8", "-q")
    assert bench_scale.load_child(str(tmp_path / "t.ecnn"), "cpu") == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["on_meta"] == 0
    assert got["model_bytes"] == sum(2 * torch.Size(s).numel() for s in _llama_shapes(8, 16, 32, 2).values())


def test_load_into_a_meta_model_holds_the_model_once(packed):
    """The benchmark's load step: the module's tensors, and little beside them (not the file's pages)."""
    work, _, runs = packed
    measured = {}
    for name, (path, _, _) in runs.items():
        cmd = [sys.executable, str(ROOT / "tools" / "bench_scale.py"), "--load-child", str(path)]
        measured[name] = m = bench_scale.measure(cmd, work, _env())
        assert m.rc == 0, m.stderr[-3000:]
    model = json.loads(measured["ckpt"].stdout.strip().splitlines()[-1])["model_bytes"]
    m, base = measured["ckpt"], measured["tiny"]
    # Keeping the file's pages mapped (about half the model at 8 bits) would add its size;
    # decoding one tensor of at most 3 MiB adds a few times that.
    allowed = model + 2 * runs["ckpt"][0].stat().st_size // 3
    extra_rss, extra_pss = m.max_rss - base.max_rss, m.peak_pss - base.peak_pss
    detail = (
        f"load_into of a {model / MiB:.0f} MiB model: {extra_rss / MiB:+.0f} MiB peak RSS and "
        f"{extra_pss / MiB:+.0f} MiB peak PSS over a tiny model; at most +{allowed / MiB:.0f} MiB allowed"
    )
    assert extra_rss <= allowed and extra_pss <= allowed, detail
