"""ecnn/quantize: the error bound, rounding, and step choice."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ecnn import dtypes, quantize
from ecnn.errors import InvalidOption

F32 = dtypes.get("float32")


def _ulp(x: np.ndarray, dtype) -> np.ndarray:
    return np.spacing(np.abs(x).astype(dtype)).astype(np.float64)


@given(
    hnp.arrays(np.float32, st.integers(1, 200), elements=st.floats(-1e4, 1e4, width=32)),
    st.integers(2, 16),
)
def test_error_bound_float32(x, bits):
    step = quantize.step_for_bits(x, F32, bits)
    q = quantize.quantize(x, F32, step)
    assert np.abs(q).max() <= (1 << (bits - 1)) - 1 + 1
    y = quantize.dequantize(q, F32, step)
    err = np.abs(x.astype(np.float64) - y.astype(np.float64))
    assert (err <= step / 2 + _ulp(y, np.float32) / 2).all()


@pytest.mark.parametrize("name, np_dtype", [("float16", np.float16), ("float64", np.float64)])
def test_error_bound_other_floats(name, np_dtype):
    dt = dtypes.get(name)
    x = (np.random.default_rng(0).standard_normal(5000) * 3).astype(np_dtype)
    step = quantize.step_for_bits(x, dt, 6)
    y = quantize.dequantize(quantize.quantize(x, dt, step), dt, step)
    assert y.dtype == np_dtype
    err = np.abs(x.astype(np.float64) - y.astype(np.float64))
    assert (err <= step / 2 + _ulp(y, np_dtype) / 2).all()


def test_bfloat16_rounds_half_to_even():
    bf = dtypes.get("bfloat16")
    # 1 + 2**-8 lies halfway between bf16 1.0 and 1.0078125: ties go to the even one (1.0).
    halfway = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)], np.float32)
    bits = quantize.from_float(halfway, bf)
    back = quantize.to_float(bits, bf)
    np.testing.assert_array_equal(back, np.array([1.0, 1 + 2**-6, -1.0], np.float32))


def test_bfloat16_matches_torch_rounding():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 100
    ours = quantize.from_float(x, dtypes.get("bfloat16"))
    theirs = torch.from_numpy(x).bfloat16().view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)


def test_rounding_is_half_to_even():
    q = quantize.quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32), F32, 1.0)
    assert q.tolist() == [0, 2, 2, 0, -2]


def test_step_bits_roundtrip():
    for s in [1.0, 0.001, 3.4e38, 1e-45]:
        assert quantize.step_from_bits(quantize.step_bits(s)) == float(np.float32(s))


def test_all_zero_tensor_gets_a_valid_step():
    assert quantize.step_for_bits(np.zeros(10, np.float32), F32, 8) == 1.0


@pytest.mark.parametrize("bad", [np.array([np.nan], np.float32), np.array([np.inf], np.float32)])
def test_non_finite_values_cannot_be_quantized(bad):
    with pytest.raises(InvalidOption):
        quantize.quantize(bad, F32, 0.1)


def test_step_too_small_is_refused():
    with pytest.raises(InvalidOption):
        quantize.quantize(np.array([1.0], np.float32), F32, 1e-9)


@pytest.mark.parametrize("bits", [1, 17])
def test_bits_out_of_range(bits):
    with pytest.raises(InvalidOption):
        quantize.step_for_bits(np.ones(3, np.float32), F32, bits)


@pytest.mark.parametrize("name", ["float32", "float64", "float16", "bfloat16"])
def test_row_steps_of_many_rows_equal_the_formula(name):
    """Over 256 rows the steps are looked up among the 256 codes: the same bits as the formula row by row."""
    from ecnn import dtypes

    dt = dtypes.get(name)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, quantize.MAX_ROW_CODE + 1, 3000).astype(np.int32)
    for step in (0.1, 3.7e-5, 1e30):
        many = quantize.row_steps(step, codes, dt)
        few = np.concatenate([quantize.row_steps(step, codes[i : i + 100], dt) for i in range(0, codes.size, 100)])
        assert many.dtype == few.dtype and many.tobytes() == few.tobytes()


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float64", "float16"])
@pytest.mark.parametrize("qtype", [np.int8, np.int16, np.int32])
def test_dequantize_by_rows_matches_the_numpy_formula(name, qtype):
    """The compiled loop (float32, bfloat16, float64) gives the bits of ``from_float(float(q) * s_i)``, for
    blocks of rows, one long row and one step, with steps over a wide range of exponents (overflow included)."""
    from ecnn import chunkrun

    dt = dtypes.get(name)
    wide = np.float64 if name == "float64" else np.float32
    rng = np.random.default_rng(5)
    lim = np.iinfo(qtype).max if qtype != np.int32 else 1 << 23
    for shape in [(7, 13), (1, 70001), (70001,), (3, 0), (600, 1000)]:
        q = rng.integers(-lim, lim + 1, size=shape).astype(qtype)
        rows = shape[0] if len(shape) == 2 else 1
        steps = (rng.random(rows) * 2.0 ** rng.integers(-140, 100, rows)).astype(wide)
        with np.errstate(over="ignore"):
            want = quantize.from_float(q.reshape(rows, -1).astype(wide) * steps[:, None], dt).reshape(shape)
            got = quantize.dequantize_by_rows(q, dt, steps, block=4096, runner=chunkrun)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        if q.size:
            with np.errstate(over="ignore"):
                one = quantize.dequantize(q, dt, float(steps[0]))
                ref = quantize.from_float(q.astype(wide) * wide(np.float32(steps[0])), dt)
            assert one.tobytes() == ref.tobytes()


def test_scale_rows_in_place_and_bfloat16_ties():
    from ecnn._core import _bits

    q = np.array([[1, 3, -5, 1 << 22, 0, -(1 << 23)]], np.int32)
    want = q.astype(np.float32) * np.float32(0.1)
    _bits.scale_rows(q, np.array([0.1], np.float32), q.view(np.float32))  # int32 symbols into their own memory
    assert q.view(np.float32).tobytes() == want.tobytes()
    # bfloat16: halfway cases round to even (0x3F808000 -> 0x3F80, 0x3F818000 -> 0x3F82)
    vals = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF], np.uint32).view(np.float32)
    out = np.empty(4, np.uint16)
    _bits.scale_rows(np.ones((4, 1), np.int8), vals, out)  # one row per value, symbol 1: the value rounded
    assert out.tolist() == [0x3F80, 0x3F82, 0x3F81, 0x7F80] == quantize.from_float(vals, dtypes.get("bfloat16")).tolist()
    for args in [
        (np.ones(4, np.uint8), np.ones(1, np.float32), np.empty(4, np.float32)),  # unsigned symbols
        (np.ones(4, np.int64), np.ones(1, np.float32), np.empty(4, np.float32)),  # int64 symbols
        (np.ones(4, np.int8), np.ones(1, np.float64), np.empty(4, np.float32)),  # step and output types differ
        (np.ones(4, np.int8), np.ones(3, np.float32), np.empty(4, np.float32)),  # rows do not divide
        (np.ones(4, np.int8), np.ones(1, np.float32), np.empty(5, np.float32)),  # out of another length
    ]:
        with pytest.raises(TypeError):
            _bits.scale_rows(*args)
