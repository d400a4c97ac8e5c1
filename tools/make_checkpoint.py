#!/usr/bin/env python3
"""Write a synthetic decoder-only LLM checkpoint of a given size, for benchmarks.

The folder has Hugging Face's sharded layout (``model-00001-of-0000N.safetensors``
and ``model.safetensors.index.json``) with Llama's tensor names and shapes:
``model.embed_tokens.weight`` [vocab, hidden]; per layer
``model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`` [hidden, hidden],
``mlp.{gate,up}_proj.weight`` [intermediate, hidden], ``mlp.down_proj.weight``
[hidden, intermediate], ``input_layernorm.weight`` and
``post_attention_layernorm.weight`` [hidden]; then ``model.norm.weight`` and
``lm_head.weight``. The widths come from the size (Llama-2-7B's 4096 / 11008 /
32000 from about 2 GB, narrower below, so that a test can make a checkpoint of
a few MB), and the number of layers makes up the size.

Weights are Gaussian, each row with its own scale drawn log-uniform in
[0.5, 2] / sqrt(fan-in), like trained weights; norms are 1 plus small noise.
bfloat16 is rounded to nearest-even from float32. Every block of rows has its
own seed, so the bytes depend on ``--seed`` only, not on ``--workers``.
Tensors are made and written one at a time (ecnn.io.write_sharded): memory
stays within one tensor. Nothing this writes is ever committed.

Usage (from the repository root)::

    .venv/bin/python tools/make_checkpoint.py OUT_DIR --size 3GiB --dtype bf16 [--shard-size 5GB] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the working tree's ecnn importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ecnn import io as eio  # noqa: E402
from ecnn.cli import _shard_size as parse_size  # noqa: E402 - the sizes `ecnn unpack --shard-size` reads

log = logging.getLogger("make_checkpoint")

DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
# (hidden, intermediate, vocab), narrowest first; the last is Llama-2-7B's.
WIDTHS = [
    (64, 176, 512),
    (128, 352, 1024),
    (256, 688, 4096),
    (512, 1376, 8000),
    (1024, 2816, 16000),
    (2048, 5504, 32000),
    (4096, 11008, 32000),
]
MIN_LAYERS = 4  # the widest config with room for this many layers is chosen
BLOCK = 1 << 22  # values generated per task


def layer_shapes(hidden: int, inter: int) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors of one decoder layer: (name under ``model.layers.{i}.``, shape)."""
    return [
        ("self_attn.q_proj.weight", (hidden, hidden)),
        ("self_attn.k_proj.weight", (hidden, hidden)),
        ("self_attn.v_proj.weight", (hidden, hidden)),
        ("self_attn.o_proj.weight", (hidden, hidden)),
        ("mlp.gate_proj.weight", (inter, hidden)),
        ("mlp.up_proj.weight", (inter, hidden)),
        ("mlp.down_proj.weight", (hidden, inter)),
        ("input_layernorm.weight", (hidden,)),
        ("post_attention_layernorm.weight", (hidden,)),
    ]


def plan(size: int, dtype: str) -> list[eio.TensorSpec]:
    """The tensors of a checkpoint of about ``size`` bytes: widths from :data:`WIDTHS`, layers to fill the size."""
    itemsize = 4 if dtype == "float32" else 2
    for hidden, inter, vocab in reversed(WIDTHS):
        fixed = (2 * vocab * hidden + hidden) * itemsize
        per_layer = sum(math.prod(s) for _, s in layer_shapes(hidden, inter)) * itemsize
        if fixed + MIN_LAYERS * per_layer <= size:
            break
    layers = max(1, round((size - fixed) / per_layer))
    specs = [eio.TensorSpec("model.embed_tokens.weight", dtype, (vocab, hidden))]
    for i in range(layers):
        specs += [eio.TensorSpec(f"model.layers.{i}.{n}", dtype, s) for n, s in layer_shapes(hidden, inter)]
    specs += [eio.TensorSpec("model.norm.weight", dtype, (hidden,)), eio.TensorSpec("lm_head.weight", dtype, (vocab, hidden))]
    return specs


def store(x: np.ndarray, out: np.ndarray, dtype: str) -> None:
    """Write float32 values into ``out``, the storage array of ``dtype``; ``x`` is scratch, overwritten.

    bfloat16 is stored as bit patterns, rounded to nearest-even (the values are finite).
    """
    if dtype != "bfloat16":
        np.copyto(out, x, casting="same_kind")
        return
    u = x.view(np.uint32)
    lsb = u >> 16
    lsb &= 1
    u += 0x7FFF
    u += lsb
    u >>= 16
    np.copyto(out, u, casting="unsafe")


def make_tensor(spec: eio.TensorSpec, index: int, seed: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """One tensor's storage array, generated block by block on the pool's threads."""
    from ecnn import dtypes

    out = np.empty(spec.shape, dtypes.get(spec.dtype).storage)
    if len(spec.shape) == 1:  # a norm: near 1
        x = np.random.default_rng([seed, index]).standard_normal(spec.shape, dtype=np.float32)
        x *= 0.02
        x += 1
        store(x, out, spec.dtype)
        return out
    rows, cols = spec.shape
    scale = np.exp(np.random.default_rng([seed, index]).uniform(math.log(0.5), math.log(2.0), rows)) / math.sqrt(cols)
    scale = scale.astype(np.float32)[:, None]
    step = max(1, BLOCK // cols)

    def block(start: int) -> None:
        stop = min(rows, start + step)
        x = np.random.default_rng([seed, index, start]).standard_normal((stop - start, cols), dtype=np.float32)
        x *= scale[start:stop]
        store(x, out[start:stop], spec.dtype)

    for _ in pool.map(block, range(0, rows, step)):
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (created; replaced with --force if it holds only a checkpoint)")
    p.add_argument("--size", required=True, type=parse_size, help="about this many bytes of tensors: 3GiB, 100MB, ...")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--shard-size", type=parse_size, default=eio.DEFAULT_SHARD_SIZE, help="the most bytes in a shard (default 5GB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="generating threads")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing checkpoint folder")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    specs = plan(a.size, DTYPES[a.dtype])
    total = sum(s.nbytes for s in specs)
    t0 = time.perf_counter()
    Path(a.out).absolute().parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, a.workers)) as pool:

        def arrays():
            for i, s in enumerate(specs):
                arr = make_tensor(s, i, a.seed, pool)
                yield arr
                del arr

        eio.write_sharded(a.out, specs, arrays(), {"format": "pt"}, a.shard_size, overwrite=a.force)
    dt = time.perf_counter() - t0
    hidden, vocab = specs[0].shape[1], specs[0].shape[0]
    layers = (len(specs) - 3) // len(layer_shapes(1, 1))
    shards = len(eio.plan_shards(specs, a.shard_size))
    log.info(
        "wrote %s: %d tensors (%d layers, hidden %d, intermediate %d, vocab %d, %s), %.3f GB in %d shard(s), "
        "%.1f s (%.0f MB/s)",
        a.out, len(specs), layers, hidden, specs[5].shape[0] if layers else 0, vocab, a.dtype, total / 1e9, shards,
        dt, total / 1e6 / max(dt, 1e-9),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
