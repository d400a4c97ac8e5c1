"""ecnn.budget: compress to a size or metric budget (tiny models made here)."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import ecnn
import ecnn.numpy
from ecnn import budget, dtypes, quantize, rate
from ecnn.budget import candidates, rounding, sensitivity
from ecnn.errors import BudgetTooSmall, InvalidOption, MetricNotReached


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 96), torch.nn.ReLU(), torch.nn.Linear(96, 8))


FAST = budget.BudgetConfig(steps_per_octave=2, max_bits=9, probes=4)


def _calib(seed=1):
    return torch.randn(128, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def plan():
    return budget.plan(_mlp(), calibration=_calib(), config=FAST)


def test_target_is_respected_and_file_decodes(plan):
    for target in (2200, 3000, 4500, 7000):
        r = plan.compress(target_bytes=target)
        assert r.size == len(r.data) <= target
        dec = ecnn.decode(r.data)
        assert set(dec) == {"0.weight", "0.bias", "2.weight", "2.bias"}
        rows = {t["name"] for t in r.tensors if t["rows"] or t["bits"]}
        with ecnn.open(r.data) as f:
            for name, step in r.steps.items():
                assert f.info(name).step == pytest.approx(step, rel=1e-7)
                # every stored value sits on the chosen grid (a plain grid's rows: on finer steps)
                s = step if name not in rows else quantize.row_steps(step, quantize.row_codes(plan.arrays[name][0], plan.arrays[name][1], step), plan.arrays[name][1])
                q = dec[name].double() / torch.as_tensor(np.asarray(s, np.float64)).reshape(-1, *([1] * (dec[name].ndim - 1)))
                assert torch.allclose(q, q.round(), atol=1e-3)


def test_budget_is_used(plan):
    # most of the budget is used: the next move on the path would not fit
    r = plan.compress(target_bytes=5000)
    assert r.size > 0.8 * 5000


def test_larger_budget_never_gives_more_distortion(plan):
    sizes, dists = [], []
    for target in range(2200, 9000, 600):
        r = plan.compress(target_bytes=target)
        sizes.append(r.size)
        dists.append(r.distortion)
    assert all(s <= t for s, t in zip(sizes, range(2200, 9000, 600)))
    assert dists == sorted(dists, reverse=True)  # sizes need not grow: a plain grid may win with a smaller file
    assert dists[0] > dists[-1]


def test_larger_budget_lowers_output_error():
    model = _mlp()
    x = _calib(2)
    with torch.no_grad():
        ref = model(x)
    errs = []
    for target in (2300, 4000, 8000):
        r = ecnn.compress(model, target_bytes=target, calibration=_calib(), config=FAST)
        m = _mlp()
        m.load_state_dict(ecnn.decode(r.data))
        with torch.no_grad():
            errs.append(float(((m(x) - ref) ** 2).mean()))
    assert errs[0] > errs[1] > errs[2]


def test_sensitivity_moves_bits_to_the_sensitive_layer():
    # Scale the last layer's effect up: with the output sensitivity it gets a finer step
    # relative to its range than with plain weight error.
    model = _mlp()
    with torch.no_grad():
        model[2].weight.mul_(0.05)
        model[2].bias.mul_(0.05)
    out = ecnn.compress(model, target_bytes=3000, calibration=_calib(), config=FAST)
    flat = ecnn.compress(model, target_bytes=3000, config=FAST)
    rel = lambda r: r.steps["2.weight"] / float(model[2].weight.detach().abs().max())  # noqa: E731
    assert rel(out) < rel(flat)


def test_deterministic():
    a = ecnn.compress(_mlp(), target_bytes=3500, calibration=_calib(), config=FAST)
    b = ecnn.compress(_mlp(), target_bytes=3500, calibration=_calib(), config=FAST)
    assert a.data == b.data


def test_state_dict_input_and_path(tmp_path):
    sd = _mlp().state_dict()
    p = tmp_path / "m.ecnn"
    r = ecnn.compress(sd, p, target_bytes=4000, config=FAST)
    assert p.read_bytes() == r.data
    assert set(ecnn.load_file(p)) == set(sd)


def test_impossible_size_budget():
    with pytest.raises(BudgetTooSmall):
        ecnn.compress(_mlp(), target_bytes=300, config=FAST)


def test_max_drop_finds_a_small_file_within_the_drop():
    model = _mlp()
    x = _calib(3)
    with torch.no_grad():
        ref = model(x)

    def evaluate(m):
        with torch.no_grad():
            return -100.0 * float(((m(x) - ref) ** 2).mean()) / float((ref**2).mean())  # minus relative error in %

    sizes = []
    for drop in (0.01, 0.1, 1.0):
        r = ecnn.compress(model, max_metric_drop=drop, evaluate=evaluate, calibration=_calib(), config=FAST)
        assert r.base_metric == 0.0
        assert r.drop <= drop
        m = _mlp()
        m.load_state_dict(ecnn.decode(r.data))
        assert evaluate(m) == pytest.approx(r.metric, abs=1e-9)  # the file holds what was evaluated
        sizes.append(r.size)
    assert sizes[0] >= sizes[1] >= sizes[2]
    assert sizes[0] > sizes[2]
    # the model was restored after the search
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_max_drop_within_a_target():
    model = _mlp()
    r = ecnn.compress(model, target_bytes=6000, max_metric_drop=0.5, evaluate=lambda m: 1.0, calibration=_calib(), config=FAST)
    assert r.size <= 6000 and r.drop == 0.0


def test_impossible_metric_budget():
    model = _mlp()
    orig = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate(m):  # any change to the weights costs 1 point
        same = all(torch.equal(v, orig[k]) for k, v in m.state_dict().items())
        return 1.0 if same else 0.0

    with pytest.raises(MetricNotReached):
        ecnn.compress(model, max_metric_drop=0.5, evaluate=evaluate, config=FAST)
    assert all(torch.equal(v, orig[k]) for k, v in model.state_dict().items())


def test_evaluate_gets_a_state_dict_for_a_state_dict():
    seen = []

    def evaluate(sd):
        seen.append(type(sd))
        return 0.0

    ecnn.compress(_mlp().state_dict(), target_bytes=4000, evaluate=evaluate, config=FAST)
    assert seen and all(t is dict for t in seen)


def test_bad_options():
    m = _mlp()
    with pytest.raises(InvalidOption):
        ecnn.compress(m, config=FAST)
    with pytest.raises(InvalidOption):
        ecnn.compress(m, max_metric_drop=0.5, config=FAST)
    with pytest.raises(InvalidOption):
        ecnn.compress(m, target_bytes=-5, config=FAST)
    with pytest.raises(InvalidOption):
        ecnn.compress(m, target_bytes=4000, config=ecnn.BudgetConfig(sensitivity="output"))
    with pytest.raises(InvalidOption):
        ecnn.BudgetConfig(steps_per_octave=0)


def test_a_model_prepared_for_training_is_refused_with_directions():
    import ecnn.train

    m = ecnn.train.prepare_(_mlp(), ecnn.train.TrainConfig(method="ect", lam=0.1))
    with pytest.raises(InvalidOption, match="convert_"):
        ecnn.compress(m, target_bytes=4000, config=FAST)


def test_rdo_symbols_survive_the_codec():
    rng = np.random.default_rng(0)
    x = rng.laplace(0, 0.05, (64, 64)).astype(np.float32)
    dt = dtypes.get("float32")
    step = 0.02
    plain = quantize.quantize(x, dt, step)
    q = budget.quantize_rdo(x, dt, step, np.ones_like(x), 0.3)
    assert (np.abs(q) <= np.abs(plain)).all() and (q == 0).sum() > (plain == 0).sum()
    grid = quantize.dequantize(q, dt, step)
    data = ecnn.numpy.encode({"w": grid}, config=ecnn.EncodeConfig(steps=(("w", step),)))
    assert np.array_equal(ecnn.numpy.decode(data)["w"], grid)


def test_parse_size():
    assert budget.parse_size("2MB") == 2_000_000
    assert budget.parse_size("1.5MiB") == 1_572_864
    assert budget.parse_size("800kB") == 800_000
    assert budget.parse_size("123456") == 123456
    for bad in ("", "2XB", "-1MB", "0", "abc"):
        with pytest.raises(InvalidOption):
            budget.parse_size(bad)


EVAL_MODULE = '''
import torch

X = torch.randn(64, 32, generator=torch.Generator().manual_seed(5))


def _out(sd):
    h = torch.relu(X @ sd["0.weight"].T + sd["0.bias"])
    return h @ sd["2.weight"].T + sd["2.bias"]


REF = None


def accuracy(sd):
    global REF
    out = _out(sd)
    if REF is None:
        REF = out.detach()
    return -100.0 * float(((out - REF) ** 2).mean() / (REF ** 2).mean())


def calib(sd):
    return _out(sd)
'''


class _Done:
    def __init__(self, rc, out, err):
        self.returncode, self.stdout, self.stderr = rc, out, err


@pytest.fixture
def _cli(capsys):
    from ecnn import cli

    def run(*args):
        capsys.readouterr()
        rc = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return _Done(rc, out, err)

    return run


def test_cli_pack_to_a_target_and_back(tmp_path, _cli):
    from safetensors.torch import save_file

    src = tmp_path / "m.safetensors"
    save_file(_mlp().state_dict(), str(src))
    out = tmp_path / "m.ecnn"
    p = _cli("pack", src, "-o", out, "--target-size", "4kB")
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size <= 4000
    p = _cli("unpack", out, "-o", tmp_path / "back.safetensors")
    assert p.returncode == 0, p.stderr
    p = _cli("pack", src, "-o", tmp_path / "x.ecnn", "--target-size", "100B")
    assert p.returncode == 1 and "error: target 100 bytes" in p.stderr
    p = _cli("pack", src, "-o", tmp_path / "x.ecnn", "--target-size", "4kB", "--bits", "4")
    assert p.returncode == 1 and "error:" in p.stderr


def test_cli_max_drop_with_eval_and_calib(tmp_path, _cli):
    from safetensors.torch import save_file

    src = tmp_path / "m.safetensors"
    save_file(_mlp().state_dict(), str(src))
    mod = tmp_path / "evalmod.py"
    mod.write_text(EVAL_MODULE)
    sizes = []
    for drop in ("0.05", "2"):
        out = tmp_path / f"m{drop}.ecnn"
        p = _cli("pack", src, "-o", out, "--max-drop", drop, "--eval", f"{mod}:accuracy", "--calib", f"{mod}:calib")
        assert p.returncode == 0, p.stderr
        assert re.search(r"metric -?0 -> -", p.stdout)
        sizes.append(out.stat().st_size)
    assert sizes[0] > sizes[1]
    p = _cli("pack", src, "-o", tmp_path / "y.ecnn", "--max-drop", "1")
    assert p.returncode == 1 and "--eval" in p.stderr
    p = _cli("pack", src, "-o", tmp_path / "y.ecnn", "--max-drop", "1", "--eval", f"{mod}:nothing")
    assert p.returncode == 1 and "nothing" in p.stderr


def test_import_stays_lean():
    code = "import sys, ecnn, ecnn.budget, ecnn.report; ecnn.BudgetConfig(); assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_file_is_what_encode_writes_for_the_steps(plan):
    # the file is assembled from the search's cached records; it must be the
    # file ecnn.encode writes for the same values, steps and metadata
    r = plan.compress(target_bytes=4000)
    with ecnn.open(r.data) as f:
        md = f.metadata()
    dec = ecnn.numpy.decode(r.data)
    again = ecnn.numpy.encode(dec, config=ecnn.EncodeConfig(steps=tuple(r.steps.items())), metadata=md)
    assert again == r.data


@pytest.mark.parametrize("shape", [(256, 128), (2048,)])
def test_rate_proxy_is_close_to_the_coded_size(shape):
    # the search's cheap rate (order-0 on a row sample, calibrated at a few
    # anchors) against the exact coded payload of the whole tensor
    rng = np.random.default_rng(3)
    x = (rng.laplace(0, 0.02, shape) * rng.uniform(0.5, 2, shape[:1] + (1,) * (len(shape) - 1))).astype(np.float32)
    t = candidates.Tensor("w", x, dtypes.get("float32"), 1.0)
    candidates.measure(t, budget.BudgetConfig(rate_sample=8192, strengths=(0.0,)))
    checked = 0
    for c in t.hull:
        q = candidates.symbols(t, c)
        exact = rate.exact_bytes(q)
        if exact * 8 >= 1.0 * x.size:  # at least a bit a value: a few percent
            assert abs(t.rates[c] - exact) <= 0.05 * exact, (t.steps[c], t.rates[c], exact)
            checked += 1
    assert checked >= 5


def test_unreached_embedding_rows_share_the_sensitivity():
    h = np.zeros((8, 3))
    h[1] = [1.0, 2.0, 3.0]
    spread = sensitivity.fill_unseen_rows(h, embedding=True)
    assert np.allclose(spread, np.tile(h.mean(axis=0), (8, 1))) and spread.sum() == pytest.approx(h.sum())
    assert sensitivity.fill_unseen_rows(h, embedding=False) is not h  # 7 of 8 rows unreached: treated as a table
    few = np.ones((8, 3))
    few[2] = 0.0  # a unit that never fires: its zero is kept
    assert sensitivity.fill_unseen_rows(few, embedding=False) is few


def test_embedding_rows_of_absent_tokens_are_kept():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(4096, 16), torch.nn.Linear(16, 4))
    # the batch reaches 28 of 4096 rows, none of those in the search's row sample (every 8th row)
    tokens = torch.tensor([i for i in range(32) if i % 8]).reshape(4, 7)
    cfg = budget.BudgetConfig(steps_per_octave=2, max_bits=9, probes=4, rate_sample=8192, floor=0.0)
    r = budget.compress(model, target_bytes=40_000, calibration=tokens, config=cfg)
    emb = ecnn.numpy.decode(r.data)["0.weight"]
    assert np.count_nonzero(np.abs(emb[32:]).sum(axis=1)) > 0.9 * (4096 - 32)


def test_rows_option_gives_sensitive_rows_finer_steps():
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(0, 0.1, (64, 48)).astype(np.float32))
    scale = torch.logspace(0, 2, 64)[:, None]  # row i's error matters scale_i**2 times more
    x = torch.from_numpy(rng.normal(0, 1, (48, 32)).astype(np.float32))
    sd = {"w": w}

    def out(s):
        return (s["w"] * scale) @ x

    res = {}
    for rows in (False, True):
        cfg = budget.BudgetConfig(steps_per_octave=2, max_bits=10, probes=4, rows=rows, strengths=(0.0,))
        res[rows] = budget.compress(sd, target_bytes=2500, calibration=out, config=cfg)
    r = res[True]
    assert r.size <= 2500
    assert r.distortion <= res[False].distortion
    t = budget.plan(sd, calibration=out, config=cfg).tensors[0]
    assert t.codes is not None and t.codes[-8:].mean() > t.codes[:8].mean() + 4  # sensitive rows: finer steps
    assert any(c.rows for c in t.cands)
    if r.tensors[0]["rows"]:  # else a plain grid had less distortion still
        with ecnn.open(r.data) as f:
            assert f.info("w").representation == "uniform_rows"
        dec = ecnn.numpy.decode(r.data)["w"]
        err = np.abs(dec - w.numpy()).max(axis=1)
        assert err[-8:].mean() < 0.5 * err[:8].mean()


def test_grid_step_recognizes_weights_on_a_grid_and_nothing_else():
    rng = np.random.default_rng(0)
    step = float(np.float32(0.0123))
    k = rng.integers(-9, 10, size=(64, 32)).astype(np.float32)
    k[0, 0] = 1
    on = k * np.float32(step)
    f32 = dtypes.get("float32")
    assert budget.grid_step(on, f32) == step
    assert budget.grid_step(on + np.float32(1e-4), f32) is None  # off the grid
    assert budget.grid_step(rng.standard_normal((64, 32)).astype(np.float32), f32) is None
    assert budget.grid_step(np.zeros((8, 8), np.float32), f32) is None
    no_one = np.where(np.abs(k) <= 2, np.float32(3), k) * np.float32(step)  # smallest level 3
    assert budget.grid_step(no_one, f32) == step
    sparse = np.float32(step) * np.array([0, 9, -10, 27, 0, 45], np.float32)  # smallest level 9 > GRID_LEVELS
    assert budget.grid_step(sparse, f32) is None


def test_compress_keeps_a_trained_model_exactly_or_coarsens_its_grid():
    import ecnn.train

    torch.manual_seed(0)
    model = ecnn.train.prepare_(_mlp(), ecnn.train.TrainConfig(method="ect", lam=0.1))
    x = torch.randn(128, 32)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(20):
        loss = model(x).square().mean() + ecnn.train.regularizer(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    steps = ecnn.train.convert_(model)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    exact = len(ecnn.encode(trained, config=ecnn.train.encode_config(steps)))
    roomy = ecnn.compress(model, target_bytes=exact + 2 * budget.SUMMARY_MIN, calibration=x, config=FAST)
    got = ecnn.decode(roomy.data)
    assert all(torch.equal(got[k], trained[k]) for k in trained)  # its own grids: no error at all
    assert roomy.steps == pytest.approx(steps, rel=0)
    tight = ecnn.compress(model, target_bytes=int(0.7 * exact), calibration=x, config=FAST)
    assert tight.size <= 0.7 * exact
    assert all(tight.steps[k] >= steps[k] for k in steps)  # nothing finer than its own grid is tried
    assert any(tight.steps[k] > steps[k] for k in steps)


# --- error-compensated rounding -------------------------------------------------


def _correlated_inputs(n, d=48, seed=0):
    """``n`` draws (``seed``) from one fixed distribution of correlated inputs."""
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(1234)) * 0.3 + torch.eye(d)
    scale = torch.linspace(0.2, 3.0, d)
    return (torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) @ mix) * scale


def _moments(x):
    x = x.double().numpy()
    return x.T @ x, (x * x).T @ (x * x), x.shape[0]


def test_compensated_rounding_lowers_the_output_error_on_fresh_inputs():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (40, 48)).astype(np.float32)
    dt = dtypes.get("float32")
    comp = rounding.compensation(*_moments(_correlated_inputs(4096)), np.ones(w.shape), 0.01)
    assert comp is not None and comp.shrink < 0.1
    fresh = _correlated_inputs(4096, seed=1).double().numpy()
    for step in (0.01, 0.03, 0.08):
        plain = quantize.quantize(w, dt, step)
        q = budget.quantize_compensated(w, dt, step, comp.u)
        err = lambda s: float(np.sum(((quantize.dequantize(s, dt, step).astype(np.float64) - w) @ fresh.T) ** 2))  # noqa: E731
        assert err(q) < 0.8 * err(plain), step
        # the symbols are what the codec computes from the values: a file keeps them
        grid = quantize.dequantize(q, dt, step)
        data = ecnn.numpy.encode({"w": grid}, config=ecnn.EncodeConfig(steps=(("w", step),)))
        assert np.array_equal(ecnn.numpy.decode(data)["w"], grid)
    # uncorrelated inputs: nothing to compensate, round to nearest
    eye = rounding.compensation(np.eye(48) * 100, np.eye(48) * 300, 100, np.ones(w.shape), 0.01)
    assert np.array_equal(budget.quantize_compensated(w, dt, 0.03, eye.u), quantize.quantize(w, dt, 0.03))


def test_few_calibration_rows_shrink_the_moments_toward_their_diagonal():
    h = np.ones((8, 48))
    few = rounding.compensation(*_moments(_correlated_inputs(96)), h, 0.01)
    many = rounding.compensation(*_moments(_correlated_inputs(8192)), h, 0.01)
    assert 0 <= many.shrink < few.shrink <= 1
    assert rounding.compensation(*_moments(_correlated_inputs(95)), h, 0.01) is None  # < 2 rows per input
    assert rounding.compensation(np.zeros((48, 48)), np.zeros((48, 48)), 0, h, 0.01) is None
    assert rounding.compensation(np.zeros((48, 48)), np.zeros((48, 48)), 100, h, 0.01) is None  # no input energy
    # an input that is always zero (a dead ReLU unit) leaves the shrinkage of the others as it was
    x = _correlated_inputs(512)
    with np.errstate(all="raise"):
        live = rounding.compensation(*_moments(x), h, 0.01)
        dead = rounding.compensation(*_moments(torch.cat([x, torch.zeros(512, 1)], 1)), np.ones((8, 49)), 0.01)
    assert dead.shrink == pytest.approx(live.shrink, rel=1e-9) and live.shrink < 0.5


def _wide_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))


@pytest.mark.parametrize("target", [3500, 5000])
def test_compensation_lowers_the_real_output_error_at_a_size(target):
    model = _wide_mlp()
    calib, fresh = _correlated_inputs(2048), _correlated_inputs(2048, seed=5)
    with torch.no_grad():
        ref = model(fresh)
    errs = {}
    for on in (False, True):
        cfg = budget.BudgetConfig(steps_per_octave=4, max_bits=9, probes=8, compensate=on)
        r = ecnn.compress(model, target_bytes=target, calibration=calib, config=cfg)
        assert r.size <= target
        assert any(t["compensated"] for t in r.tensors) == on
        m = _wide_mlp()
        m.load_state_dict(ecnn.decode(r.data))
        with torch.no_grad():
            errs[on] = float(((m(fresh) - ref) ** 2).mean())
    assert errs[True] < 0.9 * errs[False], errs


class _TokenModel(torch.nn.Module):
    """Embedding table, mean over the sequence, then a narrow linear read-out."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(120, 32)
        self.head = torch.nn.Linear(32, 6)

    def forward(self, ids):
        return self.head(self.emb(ids).mean(1))


def _tokens(n, seed):
    return torch.randint(0, 120, (n, 12), generator=torch.Generator().manual_seed(seed))


def test_embedding_moments_are_the_row_summed_output_gradients():
    model = _TokenModel()
    ids = _tokens(64, 1)
    ids[:, 0] = 7  # a row looked up many times: its positions' gradients add up before the square
    cfg = budget.BudgetConfig(probes=4)
    names = ["emb.weight", "head.weight"]
    h, grams = sensitivity.sensitivities(model, names, ids, cfg, None)
    gram, gram2, rows = grams["emb.weight"]
    # one row per probe and looked-up table row, less the rows whose gradients cancel out
    assert 4 * len(torch.unique(ids)) - 8 <= rows <= 4 * len(torch.unique(ids))
    ratio = np.diag(gram) / h["emb.weight"].sum(axis=0)  # the diagonal is h summed over the table's rows
    assert np.allclose(ratio, ratio[0], rtol=1e-5) and ratio[0] > 0
    assert np.all(np.diag(gram2) > 0)
    assert "head.weight" in grams and grams["head.weight"][2] == 64  # the read-out's input rows
    # a table that is also another module's weight is left alone
    model.head2 = torch.nn.Linear(120, 32, bias=False)
    model.head2.weight = model.emb.weight
    assert "emb.weight" not in sensitivity.sensitivities(model, names, ids, cfg, None)[1]


def test_embedding_compensation_lowers_the_real_output_error_at_a_size():
    calib, fresh = _tokens(512, 2), _tokens(512, 3)
    ref_model = _TokenModel()
    with torch.no_grad():
        ref = ref_model(fresh)
    errs = {}
    for on in (False, True):
        cfg = budget.BudgetConfig(steps_per_octave=4, max_bits=9, probes=8, compensate=on)
        r = ecnn.compress(_TokenModel(), target_bytes=2600, calibration=calib, config=cfg)
        assert r.size <= 2600
        emb = next(t for t in r.tensors if t["name"] == "emb.weight")
        assert emb["compensated"] == on
        m = _TokenModel()
        m.load_state_dict(ecnn.decode(r.data))
        with torch.no_grad():
            errs[on] = float(((m(fresh) - ref) ** 2).mean())
    assert errs[True] < 0.8 * errs[False], errs


def test_compensation_needs_a_module_and_float32_weights():
    model = _wide_mlp()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    fn = lambda s: torch.func.functional_call(model, s, (_correlated_inputs(256),))  # noqa: E731
    p = budget.plan(sd, calibration=fn, config=FAST)
    assert all(t.comp is None for t in p.tensors)
    half = _wide_mlp().to(torch.bfloat16)
    p = budget.plan(half, calibration=_correlated_inputs(256).to(torch.bfloat16), config=FAST)
    assert all(t.comp is None for t in p.tensors)
    p = budget.plan(model, calibration=_correlated_inputs(80), config=FAST)  # fewer rows than 2 per input
    assert all(t.comp is None for t in p.tensors)
    p = budget.plan(model, calibration=_correlated_inputs(256), config=FAST)
    assert sorted(t.name for t in p.tensors if t.comp is not None) == ["0.weight", "2.weight"]
    with pytest.raises(InvalidOption, match="damp"):
        budget.BudgetConfig(damp=0.0)
