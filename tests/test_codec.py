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


# --- encode_quantized: symbols chosen by the caller ---------------------------


@pytest.mark.parametrize("effort", ["best", "fast"])
@pytest.mark.parametrize("minor", [0, 1])
def test_encode_quantized_matches_encode_tensor(effort, minor):
    import numpy as np

    from ecnn import dtypes, quantize
    from ecnn.config import EncodeConfig

    rng = np.random.default_rng(0)
    f32 = dtypes.get("float32")
    w = (rng.laplace(0, 0.05, (48, 40)) * rng.uniform(0.2, 3, (48, 1))).astype(np.float32)
    # uniform: a fixed step
    cfg = EncodeConfig(steps=(("w", 0.01),), format_minor=minor, effort=effort)
    q = quantize.quantize(w, f32, 0.01)
    assert codec.encode_quantized("w", f32, w.shape, q, 0.01, config=cfg) == codec.encode_tensor("w", w, f32, cfg)
    # uniform_rows: the row codes the codec itself picks with bits=4
    cfg = EncodeConfig(bits=4, format_minor=minor, effort=effort)
    rec, payload = codec.encode_tensor("w", w, f32, cfg)
    assert rec["repr"]["kind"] == "uniform_rows"
    step = quantize.step_from_bits(rec["repr"]["step"])
    codes = quantize.row_codes(w, f32, step)
    q = quantize.quantize_rows(w, f32, step, codes)
    assert codec.encode_quantized("w", f32, w.shape, q, step, codes, cfg) == (rec, payload)


def test_encode_quantized_refuses_what_it_cannot_store():
    import numpy as np

    from ecnn import dtypes
    from ecnn.errors import InvalidOption

    f32, i8 = dtypes.get("float32"), dtypes.get("int8")
    q = np.zeros((4, 3), np.int32)
    with pytest.raises(InvalidOption):
        codec.encode_quantized("w", i8, (4, 3), q, 0.1)  # not a float type
    with pytest.raises(InvalidOption):
        codec.encode_quantized("w", f32, (4, 4), q, 0.1)  # too few symbols
    with pytest.raises(InvalidOption):
        codec.encode_quantized("w", f32, (4, 3), q.astype(np.float32), 0.1)  # not integers
    with pytest.raises(InvalidOption):
        codec.encode_quantized("w", f32, (4, 3), q + (1 << 25), 0.1)  # beyond the float32 symbol range
    with pytest.raises(InvalidOption):
        codec.encode_quantized("w", f32, (4, 3), q, 0.0)
    with pytest.raises(InvalidOption):
        codec.encode_quantized("w", f32, (4, 3), q, 0.1, np.zeros(3, np.int64))  # one code per row
    with pytest.raises(InvalidOption):
        codec.encode_quantized("w", f32, (4, 3), q, 0.1, np.full(4, 256))
