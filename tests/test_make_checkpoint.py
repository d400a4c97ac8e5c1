"""tools/make_checkpoint.py: synthetic LLM checkpoints of a given size, and their trip through pack and unpack."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ecnn
import make_checkpoint as mc
from ecnn import io as eio
from ecnn.cli import main


def _folder(path) -> dict[str, torch.Tensor]:
    index = json.loads((path / eio.SAFETENSORS_INDEX).read_text())
    shards = {shard: load_file(path / shard) for shard in set(index["weight_map"].values())}
    return {name: shards[shard][name] for name, shard in index["weight_map"].items()}


@pytest.mark.parametrize("size, dtype, hidden", [(3 << 30, "bfloat16", 4096), (100 * 10**6, "bfloat16", 512), (10**6, "float32", 64)])
def test_plan_has_llama_names_and_the_size(size, dtype, hidden):
    specs = mc.plan(size, dtype)
    names = [s.name for s in specs]
    assert names[0] == "model.embed_tokens.weight" and names[-2:] == ["model.norm.weight", "lm_head.weight"]
    assert "model.layers.0.self_attn.q_proj.weight" in names and "model.layers.0.post_attention_layernorm.weight" in names
    assert specs[0].shape[1] == hidden and all(s.dtype == dtype for s in specs)
    per_layer = sum(s.nbytes for s in specs if s.name.startswith("model.layers.0."))
    assert abs(sum(s.nbytes for s in specs) - size) <= per_layer / 2 + 1


def test_checkpoint_packs_and_unpacks_to_the_same_tensors(tmp_path):
    ck = tmp_path / "ck"
    assert mc.main([str(ck), "--size", "3MB", "--dtype", "bf16", "--shard-size", "1MB", "--workers", "2"]) == 0
    made = _folder(ck)
    assert len(list(ck.glob("*.safetensors"))) >= 3
    assert made["model.layers.0.mlp.down_proj.weight"].dtype == torch.bfloat16
    norm = made["model.norm.weight"].float()
    assert (norm - 1).abs().max() < 0.2
    w = made["model.layers.0.mlp.up_proj.weight"].float()
    stds = w.std(dim=1) * w.shape[1] ** 0.5  # per-row scales between 0.5 and 2
    assert 0.4 < stds.min() < 0.8 and 1.4 < stds.max() < 2.2 and torch.isfinite(w).all()
    # The bytes depend on the seed only.
    assert mc.main([str(tmp_path / "again"), "--size", "3MB", "--shard-size", "1MB", "--workers", "1"]) == 0
    again = _folder(tmp_path / "again")
    assert all(torch.equal(again[k], v) for k, v in made.items())

    packed = tmp_path / "x.ecnn"
    assert main(["pack", str(ck), "-o", str(packed), "--bits", "8", "-q"]) == 0
    assert main(["unpack", str(packed), "-o", f"{tmp_path}/back/", "--shard-size", "1MB", "-q"]) == 0
    direct = ecnn.load_file(packed)
    back = _folder(tmp_path / "back")
    assert list(back) == list(direct) == list(made)
    assert all(torch.equal(back[k], v) for k, v in direct.items())
    err = max((back[k].float() - made[k].float()).abs().max().item() for k in made)
    assert 0 < err < 0.05


def test_bfloat16_rounds_to_nearest_even():
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 100
    x[:3] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)]  # ties
    out = np.empty(x.shape, np.uint16)
    mc.store(x.copy(), out, "bfloat16")
    assert np.array_equal(out, torch.from_numpy(x).bfloat16().view(torch.uint16).numpy())
