"""ecnn/io: reading safetensors (single, sharded) and torch files safely; writing safetensors a tensor at a time."""

import json
import os
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ecnn import dtypes
from ecnn import io as eio
from ecnn.errors import (
    ForeignOutput,
    InvalidOption,
    InvalidTensorName,
    OutputExists,
    UnreadableInput,
    UnsafeInput,
    UnsupportedDtype,
)


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


# --- the streaming safetensors writer ----------------------------------------

TensorSpec = eio.TensorSpec


def _bits(t: torch.Tensor) -> bytes:
    """A tensor's bytes, whatever its dtype (torch has no numpy form of bfloat16, float8, uint16...)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _random(dtype: str, shape, rng) -> np.ndarray:
    storage = dtypes.get(dtype).storage
    if storage.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 256, (*shape, storage.itemsize), dtype=np.uint8).view(storage).reshape(shape)


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".ecnn-")]


@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(dtypes.TO_SAFETENSORS)), st.lists(st.integers(0, 5), max_size=3)),
        max_size=6,
    ),
    st.integers(0, 2**32 - 1),
    st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=2),
)
def test_writer_round_trips_every_dtype_bit_exactly(tmp_path_factory, items, seed, metadata):
    """Every ecnn dtype, 0-d and empty tensors included: safetensors reads back the same bits and metadata."""
    rng = np.random.default_rng(seed)
    specs = [TensorSpec(f"t{i}.{dt}", dt, tuple(shape)) for i, (dt, shape) in enumerate(items)]
    arrays = [_random(s.dtype, s.shape, rng) for s in specs]
    path = tmp_path_factory.mktemp("w") / "x.safetensors"
    n = eio.write_safetensors(path, specs, iter(arrays), metadata)
    data = path.read_bytes()
    assert n == len(data) and (8 + int.from_bytes(data[:8], "little")) % 8 == 0
    back = load_file(path)
    assert set(back) == {s.name for s in specs}
    for s, a in zip(specs, arrays):
        assert tuple(back[s.name].shape) == s.shape
        assert _bits(back[s.name]) == a.tobytes(), s
        assert str(back[s.name].dtype) == "torch." + s.dtype
    with safe_open(path, "pt") as f:
        assert (f.metadata() or {}) == metadata


def test_writer_holds_one_array_at_a_time(tmp_path):
    """Each array is dropped by the writer before the next is asked for."""
    specs = [TensorSpec(f"w{i}", "float32", (64, 64)) for i in range(4)]
    alive = []

    def arrays():
        previous = None
        for i in range(len(specs)):
            assert previous is None or previous() is None, f"array {i - 1} still alive when {i} is made"
            a = np.full((64, 64), i, np.float32)
            previous = weakref.ref(a)
            alive.append(True)
            yield a
            del a

    eio.write_safetensors(tmp_path / "x.safetensors", specs, arrays())
    eio.write_sharded(tmp_path / "out", specs, arrays(), shard_size=64 * 64 * 4 * 2)
    assert len(alive) == 8
    assert torch.equal(load_file(tmp_path / "x.safetensors")["w3"], torch.full((64, 64), 3.0))


def test_writer_refuses_bad_input_and_leaves_nothing(tmp_path):
    out = tmp_path / "x.safetensors"
    good = [TensorSpec("a", "float32", (2,))]
    cases = [
        ([TensorSpec("a", "complex64", (2,))], [np.zeros(2, np.complex64)], UnsupportedDtype),
        (good, [np.zeros(2, np.float64)], UnsupportedDtype),
        ([TensorSpec("a", "bfloat16", (2,))], [np.zeros(2, np.float16)], UnsupportedDtype),
        (good, [np.zeros(3, np.float32)], InvalidOption),
        (good, [], InvalidOption),
        (good, [np.zeros(2, np.float32)] * 2, InvalidOption),
        ([TensorSpec("a", "float32", (-1,))], [], InvalidOption),
        ([TensorSpec("a", "float32", (2,))] * 2, [np.zeros(2, np.float32)] * 2, InvalidTensorName),
        ([TensorSpec("__metadata__", "float32", (2,))], [np.zeros(2, np.float32)], InvalidTensorName),
        ([TensorSpec("", "float32", (2,))], [np.zeros(2, np.float32)], InvalidTensorName),
    ]
    for specs, arrays, error in cases:
        with pytest.raises(error):
            eio.write_safetensors(out, specs, arrays)
        with pytest.raises(error):
            eio.write_sharded(tmp_path / "dir", specs, arrays)
        assert os.listdir(tmp_path) == [], (specs, error)
    with pytest.raises(InvalidOption):
        eio.write_safetensors(out, good, [np.zeros(2, np.float32)], {"k": 1})
    # Big-endian arrays are byte-swapped, not refused.
    eio.write_safetensors(out, good, [np.array([1.5, -2], ">f4")])
    assert torch.equal(load_file(out)["a"], torch.tensor([1.5, -2.0]))


def test_plan_shards():
    s = [TensorSpec(n, "uint8", (k,)) for n, k in [("a", 3), ("b", 4), ("big", 20), ("c", 5), ("d", 5), ("e", 1)]]
    assert [[t.name for t in g] for g in eio.plan_shards(s, 10)] == [["a", "b"], ["big"], ["c", "d"], ["e"]]
    assert [[t.name for t in g] for g in eio.plan_shards(s, 1000)] == [[t.name for t in s]]
    assert eio.plan_shards([], 10) == [[]]
    with pytest.raises(InvalidOption):
        eio.plan_shards(s, 0)
    assert eio.shard_name(2, 3) == "model-00002-of-00003.safetensors"


def test_sharded_folder_loads_and_indexes(tmp_path):
    rng = np.random.default_rng(0)
    specs = [TensorSpec("a", "float32", (10, 10)), TensorSpec("b", "bfloat16", (300,)), TensorSpec("c", "int8", (7,))]
    arrays = [_random(s.dtype, s.shape, rng) for s in specs]
    out = tmp_path / "ckpt"
    eio.write_sharded(out, specs, arrays, {"format": "pt"}, shard_size=700)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sorted(os.listdir(out)) == [*names, eio.SAFETENSORS_INDEX]
    index = json.loads((out / eio.SAFETENSORS_INDEX).read_text())
    assert index == {"metadata": {"total_size": 400 + 600 + 7}, "weight_map": {"a": names[0], "b": names[1], "c": names[1]}}
    back = eio.load_weights(out)
    assert all(_bits(back[s.name]) == a.tobytes() for s, a in zip(specs, arrays))
    with safe_open(out / names[1], "pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert _leftovers(tmp_path) == []


def test_sharded_folder_replaces_only_its_own_kind(tmp_path):
    specs = [TensorSpec("a", "float32", (4,))]
    one = [np.ones(4, np.float32)]
    out = tmp_path / "ckpt"
    out.mkdir()  # an empty folder is written into without asking
    assert eio.check_output_folder(out) is False
    eio.write_sharded(out, [TensorSpec(n, "float32", (4,)) for n in "abc"], one * 3, shard_size=16)
    assert len(os.listdir(out)) == 4 and eio.check_output_folder(out) is True
    with pytest.raises(OutputExists):
        eio.write_sharded(out, specs, one)
    eio.write_sharded(out, specs, one, overwrite=True)  # the old three shards go with the old folder
    assert sorted(os.listdir(out)) == ["model-00001-of-00001.safetensors", eio.SAFETENSORS_INDEX]
    assert _leftovers(tmp_path) == []
    (out / "README.md").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ForeignOutput, match="README.md"):
            eio.write_sharded(out, specs, one, overwrite=overwrite)
    assert (out / "README.md").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner").mkdir()
    for target in (tmp_path / "file", tmp_path / "sub"):
        with pytest.raises(ForeignOutput):
            eio.write_sharded(target, specs, one, overwrite=True)
    assert _leftovers(tmp_path) == []


def test_sharded_write_failing_midway_keeps_the_old_folder(tmp_path):
    out = tmp_path / "ckpt"
    eio.write_sharded(out, [TensorSpec("old", "uint8", (3,))], [np.arange(3, dtype=np.uint8)])
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}

    def arrays():
        yield np.zeros(4, np.float32)
        raise RuntimeError("decoder failed")

    specs = [TensorSpec("a", "float32", (4,)), TensorSpec("b", "float32", (4,))]
    with pytest.raises(RuntimeError):
        eio.write_sharded(out, specs, arrays(), shard_size=16, overwrite=True)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert _leftovers(tmp_path) == []
