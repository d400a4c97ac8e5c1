"""ecnn/io: reading safetensors (single and sharded) and torch files safely."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ecnn import io as eio
from ecnn.errors import InvalidOption, UnreadableInput, UnsafeInput, UnsupportedDtype


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


# --- reading one tensor at a time (open_weights) --------------------------------


def _mixed():
    g = torch.Generator().manual_seed(1)
    return {
        "w": torch.randn(6, 5, generator=g).bfloat16(),
        "h": torch.randn(7, generator=g).half(),
        "i": torch.arange(4, dtype=torch.int64),
        "e": torch.zeros(0, 3),
        "f": torch.randn(3, 2, generator=g),
        "b": torch.tensor([True, False]),
        "s": torch.tensor(2.5),
    }


def _same_as_load_weights(src):
    from ecnn import torch as et

    srcs = eio.open_weights(src)
    ref = et.to_arrays(eio.load_weights(src))
    assert [s.name for s in srcs] == list(ref)  # the same order as the whole-model reader
    for s in srcs:
        arr, dt = ref[s.name]
        got = s.read()
        assert (s.dtype, s.shape, s.nbytes) == (dt, arr.shape, arr.nbytes)
        assert got.dtype == arr.dtype and got.shape == arr.shape and got.tobytes() == arr.tobytes(), s.name
        assert got.flags.c_contiguous and got.flags.writeable


def test_open_weights_reads_what_load_weights_reads(tmp_path):
    save_file(_mixed(), tmp_path / "m.safetensors")
    _same_as_load_weights(tmp_path / "m.safetensors")
    torch.save(_mixed(), tmp_path / "m.pt")
    _same_as_load_weights(tmp_path / "m.pt")
    torch.save(_mixed(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # cannot be memory mapped
    _same_as_load_weights(tmp_path / "legacy.pt")
    sd = _mixed()
    save_file({k: sd[k] for k in "whi"}, tmp_path / "s1.safetensors")
    save_file({k: sd[k] for k in "efbs"}, tmp_path / "s2.safetensors")
    (tmp_path / "ck").mkdir()
    for k in ("s1", "s2"):
        (tmp_path / f"{k}.safetensors").rename(tmp_path / "ck" / f"{k}.safetensors")
    wm = {k: ("s1" if k in "whi" else "s2") + ".safetensors" for k in sd}
    (tmp_path / "ck" / eio.SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": wm}))
    _same_as_load_weights(tmp_path / "ck")


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


@pytest.mark.parametrize(
    "header, data, error",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(4), UnreadableInput),  # past the end
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4), UnreadableInput),  # size vs shape
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), UnreadableInput),  # a hole
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
            bytes(8),
            UnreadableInput,
        ),  # overlap
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(6), UnreadableInput),  # trailing bytes
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4), UnreadableInput),
        ({"a": {"dtype": "F32", "shape": [1]}}, bytes(4), UnreadableInput),
        ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8), UnsupportedDtype),
        (["not", "an", "object"], b"", UnreadableInput),
    ],
)
def test_open_weights_checks_safetensors_headers(tmp_path, header, data, error):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(_safetensors_bytes(header, data))
    with pytest.raises(error):
        eio.open_weights(p)


def test_open_weights_refuses_huge_or_truncated_headers(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(UnreadableInput, match="header size"):
        eio.open_weights(p)
    p.write_bytes(b"\x01\x00")
    with pytest.raises(UnreadableInput):
        eio.open_weights(p)


def test_a_file_changed_after_opening_is_an_error_when_read(tmp_path):
    save_file({"a": torch.ones(1000)}, tmp_path / "m.safetensors")
    (src,) = eio.open_weights(tmp_path / "m.safetensors")
    with open(tmp_path / "m.safetensors", "r+b") as f:
        f.truncate(500)
    with pytest.raises(UnreadableInput, match="ended"):
        src.read()


def test_open_weights_refuses_what_load_weights_refuses(tmp_path):
    torch.save({"w": torch.ones(2), "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeInput):
        eio.open_weights(tmp_path / "evil.pt")
    (tmp_path / "inner").mkdir()
    save_file(_sd(), tmp_path / "outside.safetensors")
    (tmp_path / "inner" / eio.SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": {"a.bias": "../outside.safetensors"}}))
    with pytest.raises(UnsafeInput):
        eio.open_weights(tmp_path / "inner")
    (tmp_path / "inner" / eio.SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": {"nope": "outside.safetensors"}}))
    with pytest.raises(UnreadableInput):
        eio.open_weights(tmp_path / "inner")
    with pytest.raises(UnreadableInput):
        eio.open_weights(tmp_path / "missing.safetensors")


def test_save_weights(tmp_path):
    eio.save_weights(_sd(), tmp_path / "o.safetensors", {"k": "v"})
    eio.save_weights(_sd(), tmp_path / "o.pt")
    assert torch.equal(eio.load_weights(tmp_path / "o.pt")["a.bias"], _sd()["a.bias"])
    with pytest.raises(InvalidOption):
        eio.save_weights(_sd(), tmp_path / "o.npz")
