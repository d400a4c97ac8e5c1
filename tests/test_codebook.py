"""The codebook representation (spec/CODING.md section 4.8, format 1.1): few distinct values, stored exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ecnn
from ecnn import codec, dtypes, quantize
from ecnn.config import EncodeConfig
from ecnn.container.reader import Container, TensorRecord
from ecnn.errors import CorruptPayload, InvalidField
from ecnn import file as efile

WIDTH_TYPE = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def _pack(arrays: dict, **cfg) -> bytes:
    return efile.encode({k: (v, dtypes.get(n)) for k, (v, n) in arrays.items()}, EncodeConfig(**cfg))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _levels_tensor(dt: str, levels: list, n: int, seed: int) -> np.ndarray:
    lv = quantize.from_float(np.array(levels, np.float32), dtypes.get(dt)) if dt != "float32" else np.array(levels, np.float32)
    return lv[np.random.default_rng(seed).integers(0, len(levels), n)].reshape(-1, 8)


@pytest.mark.parametrize("dt", ["float32", "float16", "bfloat16"])
def test_few_levels_use_the_codebook_and_decode_bit_exactly(dt):
    w = _levels_tensor(dt, [-0.5, -0.125, 0.0, 0.0625, 0.25, 1.0], 4000, 0)
    data = _pack({"w": (w, dt)}, lossless=True)
    c = Container(data)
    rec = c.record("w")
    assert rec.repr["kind"] == "codebook" and rec.repr["levels"] == 6
    assert codec.minor_version(c.header["tensors"]) == 1 and c.minor == 4  # a 1.1 feature, in a compact header (1.4)
    arr, _ = ecnn.open(data).get_array("w")
    assert _same_bits(arr, w)
    # several times smaller than the raw bytes: about 2.5 bits per element here
    assert len(data) < w.nbytes * 0.6


def test_levels_are_sorted_by_value_and_zero_is_symbol_zero():
    w = np.array([0.5, -0.0, 0.0, -2.0, 0.5, 0.0, 7.0, -2.0] * 16, np.float32).reshape(16, 8)
    rec = Container(_pack({"w": (w, "float32")}, lossless=True)).record("w")
    assert rec.repr == {"kind": "codebook", "levels": 5, "zero": 2}  # -2, -0, [+0], 0.5, 7


@settings(max_examples=60, deadline=None)
@given(
    bits=st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=40),
    n=st.integers(2, 300),
    seed=st.integers(0, 2**16),
)
def test_any_bit_patterns_round_trip(bits, n, seed):
    """NaN payloads, signed zeros, subnormals and infinities: every bit survives."""
    lv = np.array(bits, np.uint32)
    w = lv[np.random.default_rng(seed).integers(0, lv.size, n)].view(np.float32).reshape(n, 1)
    data = _pack({"w": (w, "float32")}, lossless=True)
    arr, _ = ecnn.open(data).get_array("w")
    assert _same_bits(arr.view(np.uint32), w.view(np.uint32))


def test_many_distinct_values_do_not_use_it():
    w = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    rec = Container(_pack({"w": (w, "float32")}, lossless=True)).record("w")
    assert rec.repr["kind"] != "codebook"


def test_format_minor_0_keeps_to_1_0_features():
    w = _levels_tensor("float32", [-0.5, 0.0, 0.25], 4000, 4)
    c = Container(_pack({"w": (w, "float32")}, lossless=True, format_minor=0))
    assert c.record("w").repr["kind"] != "codebook" and c.minor == 0


def test_quantized_tensors_are_unaffected():
    w = _levels_tensor("float32", [-0.5, 0.0, 0.25], 512, 2)
    rec = Container(_pack({"w": (w, "float32")}, bits=8)).record("w")
    assert rec.repr["kind"] in ("uniform", "uniform_rows")


def _rec(**kw):
    base = dict(
        index=0, name="t", dtype="float32", shape=(4,), offset=0, length=0, crc32=0,
        repr={"kind": "codebook", "levels": 2, "zero": 0},
        streams=[{"coder": "const", "length": 0, "value": 0}, {"coder": "const", "length": 0, "value": 0}],
    )
    base.update(kw)
    return TensorRecord(**base)


@pytest.mark.parametrize(
    "kw",
    [
        dict(dtype="float64"),
        dict(dtype="int32"),
        dict(repr={"kind": "codebook", "levels": 0, "zero": 0}),
        dict(repr={"kind": "codebook", "levels": 65537, "zero": 0}),
        dict(repr={"kind": "codebook", "levels": 2, "zero": 2}),
        dict(repr={"kind": "codebook", "levels": 2, "zero": -1}),
        dict(repr={"kind": "codebook", "levels": True, "zero": 0}),
        dict(repr={"kind": "codebook", "zero": 0}),
        dict(streams=[{"coder": "const", "length": 0, "value": 0}]),
        # a const index stream outside -(levels-1)..levels-1
        dict(streams=[{"coder": "const", "length": 0, "value": 0}, {"coder": "const", "length": 0, "value": 2}]),
        # a const level outside 0..2^32-1
        dict(streams=[{"coder": "const", "length": 0, "value": 1 << 32}, {"coder": "const", "length": 0, "value": 0}]),
    ],
)
def test_record_validation(kw):
    with pytest.raises(InvalidField):
        codec.validate_record(_rec(**kw))


def test_valid_record_decodes_and_out_of_range_raw_symbols_are_corrupt():
    rec = _rec(
        length=2 * 4 + 4,
        streams=[
            {"coder": "raw", "length": 8, "width": 4, "signed": False},
            {"coder": "raw", "length": 4, "width": 1, "signed": True},
        ],
    )
    codec.validate_record(rec)
    levels = np.array([0.0, 1.5], np.float32).view(np.uint32).astype("<u4").tobytes()
    out = codec.decode_tensor(rec, levels + bytes([0, 1, 1, 0]))
    assert out.tolist() == [0.0, 1.5, 1.5, 0.0]
    with pytest.raises(CorruptPayload):
        codec.decode_tensor(rec, levels + bytes([0, 2, 1, 0]))


@pytest.mark.parametrize("zero, value", [(0, -1), (1, 1)])
def test_an_index_outside_the_levels_is_corrupt(zero, value):
    """The index range is symmetric (-(K-1)..K-1); q + zero must still name a level."""
    rec = _rec(
        length=8,
        repr={"kind": "codebook", "levels": 2, "zero": zero},
        streams=[{"coder": "raw", "length": 8, "width": 4, "signed": False}, {"coder": "const", "length": 0, "value": value}],
    )
    codec.validate_record(rec)
    with pytest.raises(CorruptPayload):
        codec.decode_tensor(rec, np.array([0.0, 1.5], np.float32).view(np.uint32).astype("<u4").tobytes())


def test_lopsided_levels_with_row_scales_round_trip():
    """Few negative levels and many positive ones, rows of different scales: the coder may store magnitudes and signs."""
    r = np.random.default_rng(3)
    levels = np.concatenate([[-0.5, -0.25], np.arange(0, 40) * 0.05]).astype(np.float32)
    idx = np.minimum((r.exponential(1.0, (256, 64)) * np.exp(r.standard_normal(256))[:, None] * 4).astype(int), 39) + 2
    idx[r.random((256, 64)) < 0.05] = 0
    w = levels[idx]
    data = _pack({"w": (w, "float32")}, lossless=True)
    rec = Container(data).record("w")
    assert rec.repr["kind"] == "codebook" and rec.repr["zero"] == int((np.unique(w) < 0).sum())
    arr, _ = ecnn.open(data).get_array("w")
    assert _same_bits(arr, w)
