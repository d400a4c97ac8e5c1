"""Tests of ecnn.train.structured: group penalties, dead units, narrowing, and files of narrowed models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ecnn
import ecnn.train as et
from ecnn.errors import InvalidOption

MLP_CHAIN = ("0", "2", "4")


def _mlp(seed=0, d=16, h1=48, h2=32, k=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, k))


class _CNN(nn.Module):
    """conv -> pool -> conv -> pool -> flatten -> fc -> relu -> fc, as LeNet-5 (14x14 inputs)."""

    chain = ("conv1", "conv2", "fc1", "fc2")

    def __init__(self, widths=(6, 8, 24)):
        super().__init__()
        c1, c2, f1 = widths
        self.conv1, self.conv2 = nn.Conv2d(1, c1, 3), nn.Conv2d(c1, c2, 3)
        self.fc1, self.fc2 = nn.Linear(c2 * 2 * 2, f1), nn.Linear(f1, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _data(n=384, d=16, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x @ torch.randn(d, k, generator=g)).argmax(1)


def _train(model, x, y, config, steps=150, lr=1e-2):
    et.prepare_(model, config)
    opt = torch.optim.Adam(et.param_groups(model, lr, lr))
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y) + et.regularizer(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return et.convert_(model)


# --- options ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"group_lam": -1e-3, "chain": MLP_CHAIN},
        {"group_lam": True, "chain": MLP_CHAIN},
        {"group_lam": 1e-3},  # no chain
        {"group_lam": 1e-3, "chain": ("0",)},  # one layer has no hidden units
        {"chain": ("0", 2)},
        {"chain": "0,2,4"},
    ],
)
def test_config_rejects_bad_group_options(kw):
    with pytest.raises(InvalidOption):
        et.TrainConfig(**kw)


def test_config_takes_a_list_chain_and_one_layer_with_group_inputs():
    assert et.TrainConfig(group_lam=1e-3, chain=["0", "2"]).chain == ("0", "2")
    assert et.TrainConfig(group_lam=1e-3, chain=("0",), group_inputs=True).chain == ("0",)


@pytest.mark.parametrize(
    "chain, match",
    [
        (("0", "2", "9"), "no module"),
        (("0", "1", "2"), "ReLU"),
        (("0", "4"), "connect"),
        (("0", "0"), "twice"),
    ],
)
def test_prepare_and_narrow_reject_a_chain_that_does_not_fit_the_model(chain, match):
    with pytest.raises(InvalidOption, match=match):
        et.prepare_(_mlp(), et.TrainConfig(lam=0.1, group_lam=1e-3, chain=chain))
    with pytest.raises(InvalidOption, match=match):
        et.narrow_(_mlp(), chain)


def test_grouped_convolutions_are_refused():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 2, 1))
    with pytest.raises(InvalidOption, match="grouped"):
        et.narrow_(model, ("0", "1"))


def test_narrow_refuses_a_model_that_is_still_prepared():
    model = _mlp()
    et.prepare_(model, et.TrainConfig(lam=0.1))
    with pytest.raises(InvalidOption, match="convert_"):
        et.narrow_(model, MLP_CHAIN)


# --- the penalty ----------------------------------------------------------------


def test_group_penalty_is_the_l21_norm_of_units_and_of_first_layer_inputs():
    model = _mlp()
    w0, b0, w1, b1 = (t.detach() for t in (model[0].weight, model[0].bias, model[2].weight, model[2].bias))
    want = math.sqrt(17) * torch.cat([w0, b0[:, None]], 1).norm(dim=1).sum()
    want += math.sqrt(49) * torch.cat([w1, b1[:, None]], 1).norm(dim=1).sum()  # the last layer has no groups
    got = et.group_penalty(model, MLP_CHAIN)
    assert torch.allclose(got, want, rtol=1e-5)
    cols = math.sqrt(48) * w0.norm(dim=0).sum()
    assert torch.allclose(et.group_penalty(model, MLP_CHAIN, inputs=True), want + cols, rtol=1e-5)
    conv = _CNN()
    w = conv.conv1.weight.detach()
    expect = math.sqrt(10) * torch.cat([w.flatten(1), conv.conv1.bias.detach()[:, None]], 1).norm(dim=1).sum()
    assert torch.allclose(et.group_penalty(conv, ("conv1", "conv2")), expect, rtol=1e-5)


def test_regularizer_adds_the_group_term_on_the_latent_weights_with_the_warmup():
    model = _mlp()
    plain = float(et.group_penalty(model, MLP_CHAIN).detach())
    et.prepare_(model, et.TrainConfig(lam=0.0, group_lam=1e-3, chain=MLP_CHAIN))
    reg = et.regularizer(model)
    assert math.isclose(float(reg.detach()), 1e-3 * plain, rel_tol=1e-5)
    reg.backward()
    latent = model[0].parametrizations.weight.original
    assert latent.grad is not None and float(latent.grad.abs().sum()) > 0
    warm = _mlp()
    et.prepare_(warm, et.TrainConfig(lam=0.1, group_lam=1e-3, chain=MLP_CHAIN, lam_warmup=10))
    assert float(et.regularizer(warm).detach()) == 0.0  # no step taken yet: the ramp is at zero


def test_with_a_group_term_a_unit_whose_weights_quantize_to_zero_gets_a_zero_bias():
    model = _mlp()
    et.prepare_(model, et.TrainConfig(lam=0.1, group_lam=1e-3, chain=MLP_CHAIN))
    with torch.no_grad():
        model[0].parametrizations.weight.original[3] = 1e-6  # rounds to zero
        model[0].parametrizations.bias.original[3] = 0.5
        model[4].parametrizations.weight.original[1] = 1e-6  # the last layer's units are not tied
        model[4].parametrizations.bias.original[1] = 0.5
    copied = copy.deepcopy(model)  # the link between the two quantizers survives a copy
    for m in (model, copied):
        assert float(m[0].bias[3]) == 0.0 and float(m[0].bias[2]) != 0.0
        assert float(m[4].bias[1]) != 0.0
    with torch.no_grad():
        copied[0].parametrizations.weight.original[3] = 1.0
    assert float(copied[0].bias[3]) != 0.0 and float(model[0].bias[3]) == 0.0
    et.convert_(model)
    assert float(model[0].bias[3]) == 0.0 and not bool(model[0].weight[3].any())
    assert et.dead_units(model, MLP_CHAIN).kept["0"] == tuple(j for j in range(48) if j != 3)


# --- dead units and narrowing ----------------------------------------------------


def test_group_penalty_empties_units_that_narrow_removes_with_the_same_outputs():
    x, y = _data()
    widths = {}
    for group_lam in (0.0, 3e-3):
        model = _mlp()
        _train(model, x, y, et.TrainConfig(lam=0.05, group_lam=group_lam, chain=MLP_CHAIN if group_lam else ()))
        before = copy.deepcopy(model)
        plan = et.narrow_(model, MLP_CHAIN)
        widths[group_lam] = plan.widths
        assert model[0].weight.shape == (plan.widths[1], 16) and model[2].weight.shape == plan.widths[2:0:-1]
        assert model[2].in_features == plan.widths[1] and model[0].out_features == plan.widths[1]
        assert model[4].weight.shape == (4, plan.widths[2])
        assert plan.removed == 48 + 32 - plan.widths[1] - plan.widths[2]
        xt = torch.randn(1000, 16)
        with torch.no_grad():
            assert torch.allclose(model(xt), before(xt), rtol=0, atol=1e-5)
            assert torch.allclose(model.double()(xt.double()), before.double()(xt.double()), rtol=0, atol=1e-12)
    assert widths[0.0] == (16, 48, 32, 4)
    assert widths[3e-3][1] < 40 and widths[3e-3][2] < 28, widths


def test_narrowed_model_computes_bitwise_the_same_outputs_on_exact_arithmetic():
    # Small integer weights and inputs: every product and sum is exact in float32,
    # so any difference would be a wrong slice, not rounding.
    torch.manual_seed(1)
    model = _CNN()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-2, 3, p.shape).float())
        model.conv1.weight[2] = 0
        model.conv1.bias[2] = 0  # outputs zero
        model.conv2.weight[5] = 0
        model.conv2.bias[5] = 0  # outputs zero ...
        model.fc1.weight[:, 4 * 4 : 5 * 4] = 0  # ... and channel 4 is read by nothing
        model.fc1.weight[7] = 0
        model.fc1.bias[7] = 3  # constant output: kept
        model.fc2.weight[:, 9] = 0  # unit 9 is read by nothing
        model.fc1.weight[11, :] = 0
        model.fc1.weight[11, 5 * 4 : 6 * 4] = 1  # reads only a dead channel ...
        model.fc1.bias[11] = 0  # ... so it dies once channel 5 goes (the fixed point)
    before = copy.deepcopy(model)
    plan = et.narrow_(model, _CNN.chain)
    assert plan.kept["conv1"] == (0, 1, 3, 4, 5)
    assert plan.kept["conv2"] == (0, 1, 2, 3, 6, 7)
    assert 7 in plan.kept["fc1"] and 9 not in plan.kept["fc1"] and 11 not in plan.kept["fc1"]
    assert plan.widths == (1, 5, 6, 22, 3) and plan.removed == 1 + 2 + 2
    assert model.conv2.weight.shape == (6, 5, 3, 3) and model.fc1.weight.shape == (22, 24)
    x = torch.randint(-3, 4, (64, 1, 14, 14)).float()
    with torch.no_grad():
        assert torch.equal(model(x), before(x))


def test_an_emptied_layer_keeps_one_unit_and_the_outputs():
    model = _CNN()
    with torch.no_grad():
        model.conv2.weight.zero_()
        model.conv2.bias.zero_()
    before = copy.deepcopy(model)
    plan = et.narrow_(model, _CNN.chain)
    assert plan.widths[2] == 1 and plan.kept["conv2"] == (0,)
    x = torch.randn(8, 1, 14, 14)
    with torch.no_grad():
        assert torch.equal(model(x), before(x))


def test_narrow_inputs_drops_unused_first_layer_features():
    model = _mlp()
    with torch.no_grad():
        model[0].weight[:, [1, 5, 6]] = 0
    before = copy.deepcopy(model)
    assert et.dead_units(model, MLP_CHAIN).inputs is None
    plan = et.narrow_(model, MLP_CHAIN, inputs=True)
    assert plan.inputs == tuple(i for i in range(16) if i not in (1, 5, 6)) and plan.widths[0] == 13
    x = torch.randn(50, 16)
    with torch.no_grad():
        assert torch.allclose(model(x[:, list(plan.inputs)]), before(x), rtol=0, atol=1e-6)


def test_a_narrowed_cnn_file_decodes_and_loads_into_the_narrower_plain_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 14, 14, generator=g)
    y = (x.flatten(1) @ torch.randn(196, 3, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = _CNN()
    steps = _train(model, x, y, et.TrainConfig(lam=0.02, group_lam=1e-3, chain=_CNN.chain), steps=150)
    full = copy.deepcopy(model)
    plan = et.narrow_(model, _CNN.chain)
    assert plan.removed > 0 and plan.widths[3] < 24, plan.widths
    assert float((model(x).argmax(1) == y).float().mean()) > 0.9
    meta = {"widths": ",".join(map(str, plan.widths))}
    path = tmp_path / "narrow.ecnn"
    size = ecnn.save_file(model.state_dict(), path, config=et.encode_config(steps), metadata=meta)
    full_size = len(ecnn.encode(full.state_dict(), config=et.encode_config(steps)))
    assert size < full_size
    with ecnn.open(path) as f:
        widths = tuple(int(w) for w in f.metadata()["widths"].split(","))
    loaded = _CNN(widths[1:4])
    loaded.load_state_dict(ecnn.load_file(path))  # strict: every shape matches the narrower model
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.allclose(loaded(x), full(x), rtol=0, atol=1e-5)


# --- tools/train.py ---------------------------------------------------------------


def test_tool_models_take_narrower_widths_from_the_file_metadata():
    import train as tool  # tools/train.py (tests/conftest.py puts tools/ on the path)

    model = tool.LeNet5()
    with torch.no_grad():
        model.conv2.weight[3:10] = 0
        model.conv2.bias[3:10] = 0
        model.fc1.weight[100:] = 0
        model.fc1.bias[100:] = 0
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        want = model(x)
    plan = et.narrow_(model, tool.LeNet5.chain)
    meta = tool.file_metadata("lenet5", plan)
    assert meta == {"model": "lenet5", "widths": "1,20,43,100,10", "mean": "0.1307", "std": "0.3081"}
    small = tool.model_from_metadata(meta)
    small.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(small(x), want, rtol=0, atol=1e-5)
    assert tool.model_from_metadata({"model": "lenet300", "widths": "784,50,20,10"}).fc2.weight.shape == (20, 50)



def test_the_digit_cnn_narrows_along_its_chain_and_loads_from_the_file_metadata():
    import train as tool

    if not (tool.DIGIT_DIR / "model.py").exists():
        pytest.skip("digit-recognizer-py is not installed")
    torch.manual_seed(0)
    model = tool.digit_cnn(pretrained=False)
    conv, fc = model.conv_layers, model.fc_layers
    with torch.no_grad():
        conv[3].weight[5:20] = 0
        conv[3].bias[5:20] = 0
        fc[0].weight[100:] = 0
        fc[0].bias[100:] = 0
        fc[0].weight[:, 9 * 7 : 9 * 9] = 0  # nothing reads channels 7 and 8 of the last convolution
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        want = model(x)
    plan = et.narrow_(model, tool.chain_of("digit"))
    meta = tool.file_metadata("digit", plan)
    assert meta["widths"] == "1,32,49,126,100,10"
    small = tool.model_from_metadata(meta)
    assert small.fc_layers[0].weight.shape == (100, 126 * 9)
    small.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(small(x), want, rtol=0, atol=1e-5)
    assert sum(p.numel() for p in tool.digit_cnn(pretrained=False).parameters()) == 390_410
    with pytest.raises(ValueError, match="full widths"):
        tool.digit_cnn((8, 8, 8, 8), pretrained=True)

def test_structured_doctest():
    import doctest

    from ecnn.train import structured

    assert doctest.testmod(structured).failed == 0
