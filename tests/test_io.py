"""ecnn/io: reading safetensors (single and sharded) and torch files safely."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ecnn import io as eio
from ecnn.errors import InvalidOption, UnreadableInput, UnsafeInput


def _sd():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(8, 4, generator=g), "a.bias": torch.randn(8, generator=g), "step": torch.tensor(3)}


def test_safetensors_file(tmp_path):
    save_file(_sd(), tmp_path / "m.safetensors")
    out = eio.load_weights(tmp_path / "m.safetensors")
    assert all(torch.equal(out[k], v) for k, v in _sd().items())


def test_sharded_checkpoint_by_index_and_by_folder(tmp_path):
    sd = _sd()
    save_file({"a.weight": sd["a.weight"]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"a.bias": sd["a.bias"], "step": sd["step"]}, tmp_path / "model-00002-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "a.bias": "model-00002-of-00002.safetensors",
            "step": "model-00002-of-00002.safetensors",
        },
    }
    (tmp_path / eio.SAFETENSORS_INDEX).write_text(json.dumps(index))
    for src in (tmp_path, tmp_path / eio.SAFETENSORS_INDEX):
        out = eio.load_weights(src)
        assert set(out) == set(sd) and all(torch.equal(out[k], sd[k]) for k in sd)


def test_index_escaping_its_folder_is_refused(tmp_path):
    (tmp_path / "inner").mkdir()
    save_file(_sd(), tmp_path / "outside.safetensors")
    (tmp_path / "inner" / eio.SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": {"a.bias": "../outside.safetensors"}}))
    with pytest.raises(UnsafeInput):
        eio.load_weights(tmp_path / "inner")


def test_torch_state_dict_and_nested_checkpoint(tmp_path):
    torch.save(_sd(), tmp_path / "m.pt")
    assert set(eio.load_weights(tmp_path / "m.pt")) == set(_sd())
    torch.save({"state_dict": _sd(), "epoch": 3}, tmp_path / "ckpt.pth")
    assert set(eio.load_weights(tmp_path / "ckpt.pth")) == set(_sd())


class Payload:
    """Unpickling this would run code: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    torch.save({"w": torch.ones(2), "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeInput):
        eio.load_weights(tmp_path / "evil.pt")
    assert "pwned" not in capsys.readouterr().out


def test_unreadable_inputs(tmp_path):
    with pytest.raises(UnreadableInput):
        eio.load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UnreadableInput):
        eio.load_weights(tmp_path / "x.txt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(UnreadableInput):
        eio.load_weights(tmp_path / "bad.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(UnreadableInput):
        eio.load_weights(tmp_path / "bad.pt")


def test_save_weights(tmp_path):
    eio.save_weights(_sd(), tmp_path / "o.safetensors", {"k": "v"})
    eio.save_weights(_sd(), tmp_path / "o.pt")
    assert torch.equal(eio.load_weights(tmp_path / "o.pt")["a.bias"], _sd()["a.bias"])
    with pytest.raises(InvalidOption):
        eio.save_weights(_sd(), tmp_path / "o.npz")
