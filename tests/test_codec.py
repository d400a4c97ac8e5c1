"""ecnn/codec.py: record validation and decoding edge cases."""

import pytest

from ecnn import codec
from ecnn.container.reader import TensorRecord
from ecnn.errors import CorruptPayload, InvalidField, UnknownField, UnsupportedCoding


def _rec(**kw):
    base = dict(index=0, name="t", dtype="bool", shape=(4,), offset=0, length=4, crc32=0, repr={"kind": "raw"}, streams=[])
    base.update(kw)
    return TensorRecord(**base)


def test_bool_bytes_must_be_zero_or_one():
    rec = _rec()
    codec.validate_record(rec)
    assert codec.decode_tensor(rec, bytes([0, 1, 1, 0])).tolist() == [False, True, True, False]
    with pytest.raises(CorruptPayload):
        codec.decode_tensor(rec, bytes([0, 2, 1, 0]))
    planes = _rec(repr={"kind": "planes"}, streams=[{"coder": "raw", "length": 4, "width": 1, "signed": False}])
    codec.validate_record(planes)
    with pytest.raises(CorruptPayload):
        codec.decode_tensor(planes, bytes([0, 1, 255, 0]))


@pytest.mark.parametrize(
    "kw, err",
    [
        (dict(repr={"kind": "fft"}), UnsupportedCoding),
        (dict(repr={"kind": "raw", "extra": 1}), UnknownField),
        (dict(repr={"kind": "raw", 7: 1}), InvalidField),
        (dict(length=5), InvalidField),
        (dict(dtype="float32", length=16, repr={"kind": "int"}, streams=[{"coder": "const", "length": 0, "value": 0}]), InvalidField),
        (dict(dtype="float8_e4m3fn", repr={"kind": "uniform", "step": 0x3F800000}, streams=[{"coder": "const", "length": 0, "value": 0}], length=0), InvalidField),
        (dict(dtype="float32", repr={"kind": "uniform", "step": 0x7F800000}, streams=[{"coder": "const", "length": 0, "value": 0}], length=0), InvalidField),
        (dict(dtype="float32", repr={"kind": "uniform", "step": 0x3F800000}, streams=[], length=0), InvalidField),
    ],
)
def test_record_validation(kw, err):
    with pytest.raises(err):
        codec.validate_record(_rec(**kw))
