"""Tests of ecnn.train: relaxations, quantizer, prepare / regularizer / convert, DDP, bf16."""

from __future__ import annotations

import doctest
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ecnn
import ecnn.train as et
from ecnn.errors import InvalidOption
from ecnn.train import api, entropy, pruning
from ecnn.train.quantizer import LloydQuantizer, UniformQuantizer

ROOT = Path(__file__).resolve().parent.parent


def _data(n=256, d=16, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, k, generator=g)
    return x, (x @ w).argmax(1)


def _mlp(seed=0, d=16, h=64, k=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))


def _train(model, steps=30, lr=1e-2, bf16=False, seed=0):
    x, y = _data(seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y) + et.regularizer(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


# --- config -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "bogus"},
        {"lam": -1.0},
        {"order": 4},
        {"init_bits": 1},
        {"prune_energy": 1.0},
        {"temperature": 0},
        {"lam": 0.1, "target_bytes": 0},
        {"lam": 0.1, "target_bytes": True},
        {"lam": 0.1, "target_bytes": 1000.0},
        {"lam": 0.0, "target_bytes": 1000},  # the rate weight adapts from lam, so it must be > 0
        {"method": "none", "lam": 0.1, "target_bytes": 1000},
        {"lam_gain": 0.0},
    ],
)
def test_config_rejects_bad_options(kw):
    with pytest.raises(InvalidOption):
        et.TrainConfig(**kw)


# --- relaxations ------------------------------------------------------------


def test_soft_counts_keep_the_mass_and_match_rounding_on_the_grid():
    v = torch.tensor([-2.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0])
    ci = entropy.soft_counts_interp(v)
    assert float(ci.sum()) == pytest.approx(v.numel())
    assert float(entropy.entropy_bits(ci)) == pytest.approx(entropy.hard_entropy_bits(v.long().numpy()), abs=1e-4)
    cw = entropy.soft_counts_window(v, temperature=0.01)
    assert float(cw.sum()) == pytest.approx(v.numel(), rel=1e-5)
    assert float(entropy.entropy_bits(cw)) == pytest.approx(entropy.hard_entropy_bits(v.long().numpy()), abs=1e-3)


@pytest.mark.parametrize("order", [2, 3])
def test_soft_block_entropy_equals_the_hard_one_on_integers(order):
    q = np.random.default_rng(0).integers(-3, 4, size=500)
    counts = entropy.soft_block_counts(torch.tensor(q, dtype=torch.float32), order)
    assert float(counts.sum()) == pytest.approx(q.size - order + 1)
    assert float(entropy.entropy_bits(counts)) == pytest.approx(entropy.block_entropy_bits(q, order), rel=1e-4)


def test_relaxed_entropy_has_finite_gradients_that_favour_the_frequent_level():
    v = torch.cat([torch.zeros(90), torch.full((10,), 2.0), torch.tensor([0.5])]).requires_grad_()
    entropy.entropy_bits(entropy.soft_counts_interp(v)).backward()
    assert torch.isfinite(v.grad).all()
    assert v.grad[-1] > 0  # the weight at 0.5 moves down, towards the crowded zero level


def test_conditional_entropy_sees_structure_that_order0_misses():
    q = np.tile([0, 1, 2, 3], 1000)
    assert entropy.hard_entropy_bits(q) == pytest.approx(2 * q.size)
    assert entropy.conditional_entropy_bits(q, 2) < 0.01 * q.size


# --- pruning ----------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.5])
def test_gaussian_threshold_holds_the_requested_energy(eps):
    a = pruning.threshold_ratio(eps)
    assert pruning.energy_fraction(a) == pytest.approx(eps, abs=1e-9)
    w = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    t = pruning.gaussian_threshold(w, eps)
    held = float((w[w.abs() < t] ** 2).sum() / (w**2).sum())
    assert held == pytest.approx(eps, abs=0.01)


def test_ebp_prunes_each_layer_during_training_and_magnitude_pruning_fixes_sparsity():
    model = et.prepare_(_mlp(), et.TrainConfig(method="ebp", lam=0.0, prune_energy=0.1, prune_ramp=5))
    _train(model, steps=10)
    rates = et.rate_report(model)
    assert all(r.zero_fraction > 0.2 for r in rates if r.name.endswith("weight"))
    base = et.prepare_(_mlp(), et.TrainConfig(method="none"))
    et.prune_magnitude_(base, 0.75)
    w = [r for r in et.rate_report(base) if r.name.endswith("weight")]
    zeros = sum(r.zero_fraction * r.numel for r in w) / sum(r.numel for r in w)
    assert zeros >= 0.75


@pytest.mark.parametrize("cls", [UniformQuantizer, LloydQuantizer])
def test_pruned_weights_pass_their_gradient_to_the_weight_and_none_to_the_step(cls):
    # Through ``v_ste * step`` a pruned weight would pull the step by its whole rounding
    # error ``-w / step``; as the task loss wants pruned weights back, that shrank the step
    # without end (thousands of levels). Pruned weights are 0 whatever the step.
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=gen)
    g = torch.randn(64, 32, generator=gen)
    cfg = et.TrainConfig(method="ebp", lam=0.0, prune_energy=0.5, prune_ramp=0)
    keep = None
    step_grads = []
    for upstream in (g, None):
        q = cls(w, cfg, prune=True)
        latent = w.clone().requires_grad_(True)
        out = q(latent)
        keep = q.mask(latent)
        (out * (g if upstream is not None else g * keep)).sum().backward()
        if upstream is not None:
            assert 0.5 < float((~keep).float().mean()) < 0.95
            assert torch.equal(out[~keep].detach(), torch.zeros(int((~keep).sum())))
            assert torch.allclose(latent.grad, g, rtol=1e-5, atol=1e-6)  # straight through to every latent weight
        step_grads.append(float(q.log_step.grad))
    # The loss's gradient at the pruned positions does not reach the step.
    assert step_grads[0] == pytest.approx(step_grads[1], rel=1e-5, abs=1e-7)
    assert step_grads[0] != 0.0


# --- prepare / regularizer / convert ------------------------------------------


def test_prepare_regularize_convert_pack_round_trip(tmp_path):
    model = _train(et.prepare_(_mlp(), et.TrainConfig(method="ect", lam=0.05)))
    names = [qp.name for qp in et.quantized_params(model)]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x, _ = _data()
    et.settle_(model)  # the assignment's fixed point, which convert_ packs
    with torch.no_grad():
        before = model(x)
    steps = et.convert_(model)
    assert not any(isinstance(m, et.api.UniformQuantizer) for m in model.modules())
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    path = tmp_path / "m.ecnn"
    ecnn.save_file(model.state_dict(), path, config=et.encode_config(steps))
    state = ecnn.load_file(path)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k  # packed without re-quantizing: bit-exact
    with ecnn.open(path) as f:
        for k, s in steps.items():
            assert f.info(k).step == pytest.approx(s, rel=0)
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5)  # convert keeps what training saw


def test_regularizer_lowers_the_rate_and_the_number_of_levels():
    plain = _train(et.prepare_(_mlp(), et.TrainConfig(method="none")), steps=60)
    ect = _train(et.prepare_(_mlp(), et.TrainConfig(method="ect", lam=2.0, assign_weight=0.2)), steps=60)
    rates = [et.rate_report(m) for m in (plain, ect)]
    bits = [sum(r.estimate_bits for r in rs) for rs in rates]
    assert bits[1] < 0.6 * bits[0]
    assert rates[1][0].levels < 0.5 * rates[0][0].levels  # cardinality reduction


def test_entropy_constrained_assignment_moves_weights_to_the_frequent_zero_level():
    w = torch.tensor([0.0] * 90 + [1.0] * 10 + [0.6, -0.6, 1.4])
    q = UniformQuantizer(w, et.TrainConfig(method="ect", assign_weight=0.2))
    q.log_step.data.fill_(0.0)  # step 1
    q.train()
    q(w)  # records the counts: 91 zeros, 12 ones (rounding has no counts to use yet)
    assert q.symbols(w)[-3:].tolist() == [0, 0, 1]  # 0.6 and -0.6 join the crowded zero
    plain = UniformQuantizer(w, et.TrainConfig(method="ect", assign_weight=0.0))
    plain.log_step.data.fill_(0.0)
    assert plain.symbols(w)[-3:].tolist() == [1, -1, 1]


def _block_bits(model, order):
    total = 0.0
    for qp in et.quantized_params(model):
        s = qp.quantizer.symbols(qp.latent).reshape(-1).numpy()
        total += entropy.block_entropy_bits(s, order) * s.size / max(s.size - order + 1, 1) / order
    return total


@pytest.mark.parametrize("order", [2, 3])
def test_hemp_regularizer_lowers_the_block_entropy(order):
    # Few levels (init_bits=3), so that 1k weights estimate the block entropy well.
    plain = _train(et.prepare_(_mlp(), et.TrainConfig(method="none", init_bits=3)), steps=40)
    hemp = _train(et.prepare_(_mlp(), et.TrainConfig(method="hemp", lam=2.0, order=order, init_bits=3)), steps=40)
    assert _block_bits(hemp, order) < 0.8 * _block_bits(plain, order)


def test_rate_figure_agrees_with_the_real_coded_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
    et.prepare_(model, et.TrainConfig(method="ect", lam=0.5))
    x = torch.randn(256, 64)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(20):
        loss = (model(x) - x).pow(2).mean() + et.regularizer(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    et.settle_(model)
    with torch.no_grad():
        model(x)  # eval forwards do not change the recorded symbols
        order0 = float(et.rate_bits(model)[0]) / 8
        figure = float(et.rate_bits(model, coder=True)[0]) / 8
    names = [qp.name for qp in et.quantized_params(model)]
    steps = et.convert_(model)
    f = ecnn.open(ecnn.encode(model.state_dict(), config=et.encode_config(steps)))
    coded = sum(f.info(n).coded_bytes for n in names)
    assert abs(figure / coded - 1) < 0.02  # the codec's estimate of the trained symbols
    assert order0 >= 0.98 * coded  # context models only ever lower the order-0 size


def test_bf16_autocast_training_keeps_the_regularizer_in_float32():
    model = et.prepare_(_mlp(), et.TrainConfig(method="ect", lam=0.1))
    x, _ = _data()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16
        assert et.regularizer(model).dtype == torch.float32
    _train(model, steps=10, bf16=True)
    steps = et.convert_(model)
    data = ecnn.encode(model.state_dict(), config=et.encode_config(steps))
    assert torch.equal(ecnn.decode(data)["0.weight"], model[0].weight.detach())


def test_api_doctest():
    assert doctest.testmod(api, raise_on_error=False).failed == 0


def test_import_ecnn_does_not_import_train(lean_import):
    assert "ecnn" in lean_import["import ecnn"]
    assert "ecnn.train" not in lean_import["import ecnn"]


# --- DistributedDataParallel ------------------------------------------------

_DDP_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from torch import nn
    import ecnn, ecnn.train as et

    out, rank = sys.argv[1], int(sys.argv[2])
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    et.prepare_(model, et.TrainConfig(method="ect", lam=0.5, target_bytes=900, lam_gain=0.05))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(ddp.parameters(), 1e-2)
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees its own data
    for _ in range(8):
        x = torch.randn(32, 16, generator=g)
        y = x[:, :4].argmax(1)
        loss = nn.functional.cross_entropy(ddp(x), y) + et.regularizer(ddp)
        opt.zero_grad(); loss.backward(); opt.step()
    lam_now = et.budget_status(ddp).lam  # the size controller's weight: the same on every rank
    steps = et.convert_(ddp)
    ecnn.save_file(model.state_dict(), f"{out}/rank{rank}.ecnn", config=et.encode_config(steps))
    json.dump(dict(steps, lam=lam_now), open(f"{out}/rank{rank}.json", "w"))
    dist.destroy_process_group()
    """
)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_two_processes_gloo_train_identical_quantized_models(tmp_path):
    """Two ranks, started directly (a file store instead of torchrun's rendezvous), train on different data."""
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    logs = [tmp_path / f"rank{rank}.log" for rank in (0, 1)]
    ranks = []
    try:
        for rank, log in enumerate(logs):
            with open(log, "w") as err:
                ranks.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), str(rank)], env=env, stderr=err))
        for p in ranks:
            p.wait(timeout=120)
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in ranks] == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    s0, s1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert s0 == s1
    assert s0.pop("lam") != 0.5  # the size budget moved the rate weight, identically on both ranks
    a, b = (ecnn.load_file(tmp_path / f"rank{i}.ecnn") for i in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert math.isfinite(sum(s0.values()))


# --- tools/train.py -----------------------------------------------------------


def test_tool_models_have_the_reference_parameter_counts():
    import train as tool  # tools/train.py (tests/conftest.py puts tools/ on the path)

    counts = {name: sum(p.numel() for p in tool.new_model(name).parameters()) for name in ("lenet300", "lenet5")}
    assert counts == {"lenet300": 266_610, "lenet5": 431_080}
    x = torch.zeros(2, 1, 28, 28)
    assert tool.SmallVGG()(x).shape == (2, 10)


def test_lam_warmup_starts_the_rate_weight_at_zero():
    model = et.prepare_(_mlp(), et.TrainConfig(method="ect", lam=1.0, lam_warmup=10))
    assert float(et.regularizer(model).detach()) == 0.0
    _train(model, steps=5)
    full = et.prepare_(_mlp(), et.TrainConfig(method="ect", lam=1.0))
    assert 0 < float(et.regularizer(model).detach()) < float(et.regularizer(full).detach())


# --- size budget (TrainConfig.target_bytes) ---------------------------------


def _lams(model) -> set[float]:
    return {float(qp.quantizer.lam_now) for qp in et.quantized_params(model)}


@pytest.mark.parametrize("target, sign", [(10, 1), (10**9, -1)])
def test_size_budget_moves_the_rate_weight_by_the_clipped_log_excess_each_step(target, sign):
    # 10 bytes is below the header alone (log excess > 1), 1 GB far above (< -1): both clip.
    cfg = et.TrainConfig(method="ect", lam=0.1, target_bytes=target, lam_gain=0.1, lam_warmup=3)
    model = et.prepare_(_mlp(), cfg)
    _train(model, steps=5)  # the warm-up covers steps 1 and 2; steps 3, 4 and 5 adapt
    (lam,) = _lams(model)  # every quantizer holds the same weight
    assert lam == pytest.approx(0.1 * math.exp(sign * 0.3), rel=1e-12)
    with torch.no_grad():
        et.regularizer(model)  # not a training step: no update
    assert et.budget_status(model).lam == lam
    x, _ = _data()
    model(x)
    bits, n = et.rate_bits(model)
    assert float(et.regularizer(model).detach()) == pytest.approx(lam * float(bits.detach()) / n, rel=1e-6)  # uses the weight in force


def test_size_budget_weight_is_clamped_and_fixed_without_a_target():
    model = _train(et.prepare_(_mlp(), et.TrainConfig(method="ect", lam=0.1)), steps=3)
    assert _lams(model) == {0.1}
    model = _train(et.prepare_(_mlp(), et.TrainConfig(method="ect", lam=9e3, target_bytes=10, lam_gain=1.0)), steps=3)
    assert _lams(model) == {1e4}


def test_budget_status_estimates_the_packed_file():
    model = _train(et.prepare_(_mlp(h=128), et.TrainConfig(method="ect", lam=0.2)), steps=40)
    et.settle_(model)
    status = et.budget_status(model)
    assert status.target_bytes is None and status.lam == pytest.approx(0.2)
    steps = et.convert_(model)
    size = len(ecnn.encode(model.state_dict(), config=et.encode_config(steps)))
    assert status.estimate_bytes == pytest.approx(size, rel=0.03)
    assert 0 < status.overhead_bytes < 0.5 * size


def test_budget_status_does_not_change_what_the_controller_does():
    cfg = et.TrainConfig(method="ect", lam=0.1, target_bytes=1500, lam_gain=0.1)  # unclipped: the estimate matters
    plain, watched = et.prepare_(_mlp(), cfg), et.prepare_(_mlp(), cfg)
    x, y = _data()
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (plain, watched)]
    for _ in range(6):
        for m, opt in zip((plain, watched), opts):
            loss = nn.functional.cross_entropy(m(x), y) + et.regularizer(m)
            opt.zero_grad()
            loss.backward()
            opt.step()
        et.budget_status(watched)  # as a log line on one DDP rank would
    assert _lams(plain) == _lams(watched) and _lams(plain) != {0.1}


def test_budget_status_needs_a_prepared_model():
    with pytest.raises(InvalidOption, match="prepare_"):
        et.budget_status(_mlp())


# --- Lloyd-Max levels -------------------------------------------------------


def test_lloyd_update_moves_each_level_to_the_mean_of_its_weights():
    w = torch.tensor([[-0.9, -0.8, -0.05, 0.0, 0.02, 0.6, 0.7, 0.95]])
    q = et.quantizer.LloydQuantizer(w, et.TrainConfig(method="ect", init_bits=2, assign_weight=0.0))
    assert q.levels.tolist() == pytest.approx([-0.95, 0.0, 0.95])
    assert q.symbols(w).reshape(-1).tolist() == [-1, -1, 0, 0, 0, 1, 1, 1]  # the nearest level
    q.train()
    with torch.enable_grad():
        q(w)
    assert q.levels.tolist() == pytest.approx([-0.85, 0.0, 0.75], rel=1e-5)
    assert q.shape[q.zero_index] == 0.0


def test_lloyd_coords_interpolate_between_neighbouring_levels_and_carry_the_step_gradient():
    w = torch.tensor([-1.0, -0.25, 0.0, 0.5, 2.0])
    q = et.quantizer.LloydQuantizer(w.reshape(1, -1), et.TrainConfig(init_bits=2))
    q.shape.copy_(torch.tensor([-1.0, 0.0, 2.0]) / q.step.detach())
    assert q.coords(w).tolist() == pytest.approx([-1.0, -0.25, 0.0, 0.25, 1.0], rel=1e-5)
    q.coords(w).abs().sum().backward()
    assert q.log_step.grad is not None and q.log_step.grad < 0  # a larger step pulls every weight towards zero


def test_lloyd_training_packs_as_an_exact_codebook(tmp_path):
    cfg = et.TrainConfig(method="ect", lam=0.05, quantizer="lloyd", init_bits=4)
    model = _train(et.prepare_(_mlp(), cfg), steps=40)
    x, _ = _data()
    et.settle_(model)
    with torch.no_grad():
        before = model(x)
    bits, n = et.rate_bits(model)
    steps = et.convert_(model)
    assert all(s is None for s in steps.values())
    path = tmp_path / "lloyd.ecnn"
    ecnn.save_file(model.state_dict(), path, config=et.encode_config(steps))
    state = ecnn.load_file(path)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k  # exact: the levels are stored, not re-quantized
        assert len(torch.unique(v)) <= 15
    with ecnn.open(path) as f:
        kinds = {k: f._c.record(k).repr["kind"] for k in f.keys()}
    assert kinds["0.weight"] == "codebook" and kinds["2.weight"] == "codebook"
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6)
    assert float(bits.detach()) > 0 and n == sum(v.numel() for v in model.state_dict().values())


def test_config_rejects_an_unknown_quantizer():
    with pytest.raises(ecnn.errors.InvalidOption):
        et.TrainConfig(quantizer="kmeans")
