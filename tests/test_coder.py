"""ecnn/coder: streams round-trip, pick the smallest coder, and reject bad bytes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ecnn import select
from ecnn.coder import streams
from ecnn.errors import CorruptPayload, InvalidField, LimitExceeded, UnknownField, UnsupportedCoding

WIDTHS = {np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 4, np.dtype("uint8"): 1}


def _roundtrip(values, width, signed, chunk=streams.DEFAULT_CHUNK):
    desc, data = select.encode_best(values, width, signed, chunk)
    assert desc["length"] == len(data)
    lo, hi = (-(1 << (8 * width - 1)), (1 << (8 * width - 1)) - 1) if signed else (0, (1 << (8 * width)) - 1)
    streams.validate(desc, values.size, lo, hi)
    out = streams.decode(desc, data, values.size, values.dtype, lo, hi)
    np.testing.assert_array_equal(out, values)
    return desc, data


@given(hnp.arrays(st.sampled_from(list(WIDTHS)), st.integers(0, 3000)))
def test_streams_roundtrip(values):
    _roundtrip(values, WIDTHS[values.dtype], values.dtype.kind == "i")


def test_constant_stream_has_no_bytes():
    desc, data = _roundtrip(np.full(1000, -7, np.int32), 4, True)
    assert desc["coder"] == "const" and data == b""


def test_uniform_bytes_stay_raw():
    values = np.random.default_rng(0).integers(0, 256, 10_000).astype(np.uint8)
    desc, data = _roundtrip(values, 1, False)
    assert desc["coder"] == "raw" and len(data) == values.size


def test_skewed_symbols_use_cat0_and_chunks_decode_independently():
    rng = np.random.default_rng(0)
    values = np.rint(rng.laplace(0, 3, 50_000)).astype(np.int32)
    desc, data = _roundtrip(values, 4, True, chunk=4096)
    assert desc["coder"] == "cat0" and desc["chunk"] == 4096
    assert len(data) < values.size  # well under 8 bits per symbol


def _cat0(values=None):
    values = np.rint(np.random.default_rng(1).laplace(0, 3, 20_000)).astype(np.int32) if values is None else values
    desc, data = select.encode_best(values, 4, True, 4096)
    assert desc["coder"] == "cat0"
    return values, desc, data


def test_cat0_rejects_wrong_length_and_garbage():
    values, desc, data = _cat0()
    lo, hi = -(1 << 24), 1 << 24
    with pytest.raises(CorruptPayload):
        streams.decode(desc, data + b"\0\0\0\0", values.size, np.int32, lo, hi)
    with pytest.raises(CorruptPayload):
        streams.decode(desc, b"\x00" * len(data), values.size, np.int32, lo, hi)  # all-zero table


def test_cat0_detects_extra_words_in_a_chunk():
    values, desc, data = _cat0(np.zeros(5000, np.int32) + (np.arange(5000) % 3 == 0))
    # Move the chunk boundary: first chunk claims one more word than it has.
    from ecnn.context import varint

    n = desc["nsym"]
    counts, pos = varint.decode(data, n)
    k = -(-values.size // desc["chunk"])
    nwords, end = varint.decode(data, k, pos)
    if nwords[1] > 1:
        nwords[0] += 1
        nwords[1] -= 1
        bad = data[:pos] + varint.encode(nwords) + data[end:]
        if len(bad) == len(data):
            with pytest.raises(CorruptPayload):
                streams.decode(desc, bad, values.size, np.int32, -10, 10)


@pytest.mark.parametrize(
    "desc, err",
    [
        ({"coder": "ans9", "length": 0}, UnsupportedCoding),
        ({"coder": "const", "length": 0, "value": 3, "extra": 1}, UnknownField),
        ({"coder": "const", "length": 0, "value": 3, "_note": "ignored"}, None),
        ({"coder": "const", "length": 1, "value": 3}, InvalidField),
        ({"coder": "const", "length": 0, "value": 300}, InvalidField),
        ({"coder": "const", "length": 0, "value": True}, InvalidField),
        ({"coder": "raw", "length": 100, "width": 3, "signed": False}, InvalidField),
        ({"coder": "raw", "length": 99, "width": 1, "signed": False}, InvalidField),
        ({"coder": "cat0", "length": 100, "offset": 0, "nsym": 10, "chunk": 4096, "precision": 16}, UnsupportedCoding),
        ({"coder": "cat0", "length": 100, "offset": 250, "nsym": 10, "chunk": 4096, "precision": 24}, InvalidField),
        ({"coder": "cat0", "length": 100, "offset": 0, "nsym": 1, "chunk": 4096, "precision": 24}, InvalidField),
        ({"coder": "cat0", "length": 100, "offset": 0, "nsym": 10, "chunk": 50, "precision": 24}, None),
        ({"coder": "cat0", "length": 2, "offset": 0, "nsym": 10, "chunk": 4096, "precision": 24}, InvalidField),
    ],
)
def test_validate(desc, err):
    if err is None:
        streams.validate(desc, 100, 0, 255)
    else:
        with pytest.raises(err):
            streams.validate(desc, 100, 0, 255)


def test_validate_caps_chunk_count():
    desc = {"coder": "cat0", "length": 1 << 30, "offset": 0, "nsym": 2, "chunk": 1, "precision": 24}
    with pytest.raises(LimitExceeded):
        streams.validate(desc, (1 << 20) + 1, 0, 1)


def test_raw_stream_values_are_range_checked():
    data = np.array([0, 1, 2], np.uint8).tobytes()
    desc = {"coder": "raw", "length": 3, "width": 1, "signed": False}
    with pytest.raises(CorruptPayload):
        streams.decode(desc, data, 3, np.uint8, 0, 1)


def test_damaged_words_raise_corrupt_payload():
    values, desc, data = _cat0()
    from ecnn.context import varint

    counts, pos = varint.decode(data, desc["nsym"])
    nwords, end = varint.decode(data, -(-values.size // desc["chunk"]), pos)
    bad = data[:end] + b"\xff" * (len(data) - end)
    with pytest.raises(CorruptPayload):
        streams.decode(desc, bad, values.size, np.int32, -(1 << 24), 1 << 24)


@pytest.mark.parametrize("desc", [{1: 2, "coder": "const"}, {"coder": ["x"], "length": 0}])
def test_malformed_descriptors_are_typed_errors(desc):
    with pytest.raises(InvalidField):
        streams.validate(desc, 10, 0, 255)


def test_large_uint64_values_fall_back_to_raw():
    v = np.array([1 << 63, (1 << 63) + 5, (1 << 63) + 2] * 100, dtype=np.uint64)
    desc, data = select.encode_best(v, 8, False)
    out = streams.decode(desc, data, v.size, np.uint64, 0, (1 << 64) - 1)
    np.testing.assert_array_equal(out, v)
