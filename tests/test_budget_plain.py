"""ecnn.budget without calibration data: what plain pack keeps exact stays exact, and at the
size of a plain ``--bits N`` file the budget is no worse than that file (tiny BatchNorm CNN
trained here)."""

import json

import numpy as np
import pytest
import torch

import ecnn
from ecnn import budget
from ecnn.budget.search import Search
from ecnn.config import EncodeConfig


class _BnCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.c2, self.b2 = torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32)
        self.fc = torch.nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


def _data(n, seed):
    """Images of 16x16 whose class is which of 10 fixed patterns (plus noise) they show."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(10, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (n,), generator=g)
    return protos[y] + 1.5 * torch.randn(n, 1, 16, 16, generator=g), y


@pytest.fixture(scope="module")
def cnn():
    """The CNN trained for a few steps (its BatchNorm statistics updated), in eval mode."""
    torch.manual_seed(0)
    model = _BnCnn()
    x, y = _data(1024, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(0, 1024 * 3, 128):
        idx = torch.arange(i, i + 128) % 1024
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _held_out_error(model, sd) -> float:
    """Mean squared error of the logits on held-out inputs, relative to the float model's."""
    x, _ = _data(512, 7)
    m = _BnCnn()
    m.load_state_dict(sd)
    with torch.no_grad():
        ref, out = model(x), m.eval()(x)
    return float(((out - ref) ** 2).mean() / (ref**2).mean())


KEPT = ("running_mean", "running_var", "num_batches_tracked", "b1.weight", "b1.bias", "b2.weight", "b2.bias", "c1.bias", "c2.bias", "fc.bias")


def test_cli_target_size_without_calibration_keeps_batchnorm_exact(cnn, tmp_path, capsys):
    from ecnn import cli

    sd = cnn.state_dict()
    src = tmp_path / "cnn.pt"
    torch.save(sd, src)
    plain = len(ecnn.encode(sd, bits=4))
    out = tmp_path / "cnn.ecnn"
    assert cli.main(["pack", str(src), "-o", str(out), "--target-size", str(int(plain * 0.8))]) == 0
    err = capsys.readouterr().err
    assert "no calibration data" in err and "--calib" in err and "exact" in err
    dec = ecnn.load_file(out)
    kept = [n for n in sd if n.endswith(KEPT)]
    assert len(kept) == 13  # 2 BatchNorms x 5, and 3 biases
    for n in kept:
        assert dec[n].dtype == sd[n].dtype and torch.equal(dec[n], sd[n]), n
    assert any(not torch.equal(dec[n], sd[n]) for n in ("c1.weight", "c2.weight", "fc.weight"))  # the weights were quantized
    assert out.stat().st_size <= int(plain * 0.8)
    assert cli.main(["pack", str(src), "-o", str(tmp_path / "q.ecnn"), "--target-size", str(plain), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_calibrated_allocation_keeps_running_statistics_exact(cnn):
    x, _ = _data(64, 3)
    p = budget.plan(cnn, calibration=x, config=budget.BudgetConfig(steps_per_octave=2, probes=2))
    assert not any(n.endswith(("running_mean", "running_var", "num_batches_tracked")) for n in p.names)
    sd = cnn.state_dict()
    fn = lambda s: torch.func.functional_call(_BnCnn().eval(), s, (x,))  # noqa: E731
    q = budget.plan(sd, calibration=fn, config=budget.BudgetConfig(steps_per_octave=2, probes=2))
    assert not any(n.endswith(("running_mean", "running_var", "num_batches_tracked")) for n in q.names)
    assert "b1.weight" in q.names  # with calibration, 1-D weights may still be allocated
    assert budget.running_statistics(sd, {n: None for n in sd}) == {n for n in sd if n.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.parametrize("bits", [4, 3])
def test_at_the_size_of_plain_bits_the_budget_is_no_worse(cnn, bits):
    sd = cnn.state_dict()
    plain = ecnn.encode(sd, bits=bits)
    p = budget.plan(cnn)
    r = p.compress(target_bytes=len(plain))
    assert r.size <= len(plain) and not r.calibrated
    # by the budget's own objective
    search = Search(p.arrays, p.tensors, EncodeConfig(lossless=True), None)
    choice = search.plain(bits)
    assert choice is not None
    assert r.distortion <= search.distortion(choice) * (1 + 1e-9)
    # the plain choice is plain pack's file, tensor by tensor
    assert search.size(choice, None) == len(plain)
    # and by a held-out metric
    dec = ecnn.decode(r.data)
    assert _held_out_error(cnn, dec) <= _held_out_error(cnn, ecnn.decode(plain)) * (1 + 1e-9)
    if r.plain_bits is not None:
        assert r.plain_bits == bits
        for n, t in ecnn.decode(plain).items():
            assert torch.equal(dec[n], t)


def test_the_plain_grid_is_a_candidate_of_every_quantized_tensor(cnn):
    p = budget.plan(cnn)
    assert {t.name for t in p.tensors} == {"c1.weight", "c2.weight", "fc.weight"}
    for t in p.tensors:
        assert {c.bits for c in t.cands if c.bits} == {b for b in budget.PLAIN_BITS if b <= p.config.max_bits}
        assert all(c.strength == 0 for c in t.cands)  # no calibration: round to nearest
    # the proxy: relative squared error per tensor
    w = cnn.fc.weight.detach().double().numpy()
    t = next(t for t in p.tensors if t.name == "fc.weight")
    assert t.h == pytest.approx(1.0 / float(np.sum(w * w)))


def test_cli_target_size_on_a_model_folder_stores_its_files_within_the_target(cnn, tmp_path, capsys):
    from safetensors.torch import save_file

    from ecnn import cli

    folder = tmp_path / "model"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, folder / "model.safetensors")
    config = b'{"architectures": ["BnCnn"], "hidden": 16}\n' + b" " * 3000  # a config that costs its bytes
    (folder / "config.json").write_bytes(config)
    (folder / "vocab.txt").write_bytes(b"a\nb\nc\n")
    target = int(len(ecnn.encode(cnn.state_dict(), bits=4)) * 0.9) + len(config)
    out = tmp_path / "m.ecnn"
    assert cli.main(["pack", f"{folder}/", "-o", str(out), "--target-size", str(target), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["stored_files"] == 2 and out.stat().st_size <= target
    with ecnn.open(out) as f:
        assert f.read_file("config.json") == config and f.read_file("vocab.txt") == b"a\nb\nc\n"
    assert cli.main(["pack", f"{folder}/", "-o", str(tmp_path / "w.ecnn"), "--target-size", str(target), "--no-files", "-q"]) == 0
    with ecnn.open(tmp_path / "w.ecnn") as f:
        assert f.file_names() == []
