"""The public API (ecnn/api.py, ecnn/file.py, ecnn/codec.py) on torch and numpy inputs."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ecnn
import ecnn.numpy as en
from ecnn.errors import (
    InvalidOption,
    InvalidTensorName,
    PayloadChecksumMismatch,
    TensorNotFound,
    UnsupportedDtype,
)

ALL_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
    torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2,
]  # fmt: skip


def _random(dtype, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.3
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 0.1).to(dtype)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -1000), min(info.max, 1000)
    return torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(dtype)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bytes(a.reshape(-1).contiguous().view(torch.uint8).numpy()) == bytes(
        b.reshape(-1).contiguous().view(torch.uint8).numpy()
    )


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (33, 17), (2, 3, 4, 5)], ids=str)
def test_lossless_roundtrip_every_dtype(dtype, shape):
    t = _random(dtype, shape)
    out = ecnn.decode(ecnn.encode({"t": t}, lossless=True))
    assert _same_bits(out["t"], t)


def test_lossless_keeps_special_float_bit_patterns():
    bits = np.array(
        [0x7FC00001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF],
        np.uint32,
    )
    x = np.tile(bits, 50).view(np.float32).reshape(30, 15)
    out = en.decode(en.encode({"x": x}, lossless=True))["x"]
    np.testing.assert_array_equal(out.view(np.uint32), x.view(np.uint32))


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, max_side=40), elements=st.floats(width=32)))
def test_lossless_property(x):
    out = en.decode(en.encode({"x": x}, lossless=True))["x"]
    np.testing.assert_array_equal(out.view(np.uint32), x.view(np.uint32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("bits", [2, 4, 8, 12])
@pytest.mark.parametrize("per_row", [True, False], ids=["per_row", "per_tensor"])
def test_quantized_error_bound(dtype, bits, per_row):
    t = _random(dtype, (64, 48), seed=bits)
    t[5] *= 40  # an outlier row: with per-row steps the other rows stay fine
    data = ecnn.encode({"w": t, "b": _random(dtype, (48,))}, config=ecnn.EncodeConfig(bits=bits, per_row=per_row))
    f = ecnn.open(data)
    step = f.info("w").step
    assert f.info("w").representation == ("uniform_rows" if per_row else "uniform")
    assert f.info("b").representation not in ("uniform", "uniform_rows")
    w = f.get_tensor("w")
    assert w.dtype == dtype
    x, y = t.double(), w.double()
    mag = np.abs(w.float().numpy())
    if dtype == torch.float64:
        ulp = np.spacing(np.abs(w.numpy()))
    elif dtype == torch.float16:
        ulp = np.spacing(mag.astype(np.float16)).astype(np.float64)
    elif dtype == torch.bfloat16:
        ulp = np.spacing(mag).astype(np.float64) * 65536  # 16 fewer mantissa bits than float32
    else:
        ulp = np.spacing(mag).astype(np.float64)
    ulp = torch.from_numpy(ulp)
    assert ((x - y).abs() <= step / 2 + ulp / 2 + 1e-300).all()
    if per_row:  # rows other than the outlier use at least 16x finer steps
        others = torch.cat([(x - y)[:5], (x - y)[6:]]).abs().max().item()
        assert others <= step / 32 + ulp.max().item()
    assert _same_bits(f.get_tensor("b"), _random(dtype, (48,)))  # 1-D kept exact


def test_fixed_step_and_exact_patterns():
    sd = {"enc.weight": torch.randn(32, 32), "head.weight": torch.randn(10, 32)}
    f = ecnn.open(ecnn.encode(sd, config=ecnn.EncodeConfig(step=0.05, exact=("head.*",))))
    assert f.info("enc.weight").step == pytest.approx(0.05)
    assert f.info("head.weight").representation in ("raw", "planes", "fields")
    assert _same_bits(f.get_tensor("head.weight"), sd["head.weight"])


def test_default_is_8_bits():
    t = torch.randn(100, 100)
    f = ecnn.open(ecnn.encode({"w": t}))
    assert f.info("w").step == pytest.approx(t.abs().max().item() / 127, rel=1e-6)


def test_non_finite_weights_are_kept_exact_with_a_warning(caplog):
    t = torch.randn(20, 20)
    t[3, 4] = float("nan")
    out = ecnn.decode(ecnn.encode({"w": t}, bits=8))
    assert _same_bits(out["w"], t)
    assert "kept exact" in caplog.text


def test_open_decodes_one_tensor_without_touching_the_others():
    sd = {"a": torch.randn(50, 50), "b": torch.randn(60, 60)}
    data = bytearray(ecnn.encode(sd, bits=8))
    f = ecnn.open(bytes(data))
    rec_a = f._c.record("a")
    data[rec_a.offset + 5] ^= 0xFF  # damage tensor "a" only
    g = ecnn.open(bytes(data))
    assert g.keys() == ["a", "b"]
    assert g.get_tensor("b").shape == (60, 60)
    with pytest.raises(PayloadChecksumMismatch):
        g.get_tensor("a")
    with pytest.raises(TensorNotFound):
        g.get_tensor("c")


def test_save_and_load_file(tmp_path):
    sd = {"w": torch.randn(30, 30), "n": torch.arange(10)}
    p = tmp_path / "m.ecnn"
    size = ecnn.save_file(sd, p, bits=6, metadata={"model": "test"})
    assert size == p.stat().st_size
    out = ecnn.load_file(p)
    assert torch.equal(out["n"], sd["n"])
    with ecnn.open(p) as f:
        assert f.metadata() == {"model": "test"}
        assert f.info("w").coded_bytes < 30 * 30


def test_numpy_and_torch_inputs_give_the_same_file():
    x = np.random.default_rng(0).standard_normal((40, 40)).astype(np.float32)
    assert en.encode({"x": x}, bits=8) == ecnn.encode({"x": torch.from_numpy(x)}, bits=8)


def test_deterministic_across_processes(determinism):
    """A torch state dict encodes to the same bytes here and in a child interpreter with another
    hash seed and worker count (the case ``api bits=5`` of tests/_determinism.py)."""
    import _determinism

    here, child = determinism
    assert child["hash"] != hash(_determinism.HASH_PROBE)
    runs = {here["api bits=5"], child["digests"]["api bits=5"]}
    assert len(runs) == 1


def test_non_contiguous_and_big_endian_inputs():
    t = torch.randn(20, 30).t()
    assert _same_bits(ecnn.decode(ecnn.encode({"t": t}, lossless=True))["t"], t.contiguous())
    be = np.arange(12, dtype=">i4").reshape(3, 4)
    np.testing.assert_array_equal(en.decode(en.encode({"be": be}, lossless=True))["be"], be)


@pytest.mark.parametrize(
    "kw",
    [dict(bits=8, step=0.1), dict(bits=8, lossless=True), dict(bits=1), dict(bits=17), dict(step=-1.0), dict(step=float("nan"))],
)
def test_bad_options(kw):
    with pytest.raises(InvalidOption):
        ecnn.encode({"w": torch.ones(2, 2)}, **kw)


def test_bad_names_and_dtypes():
    with pytest.raises(InvalidTensorName):
        ecnn.encode({"": torch.ones(2)})
    with pytest.raises(InvalidTensorName):
        ecnn.encode({"x" * 2000: torch.ones(2)})
    with pytest.raises(UnsupportedDtype):
        ecnn.encode({"c": torch.ones(2, dtype=torch.complex64)})


def test_chunked_tensor_roundtrip():
    t = torch.randn(300, 100)
    f = ecnn.open(ecnn.encode({"t": t}, config=ecnn.EncodeConfig(bits=8, chunk=4096)))
    ref = ecnn.decode(ecnn.encode({"t": t}, bits=8))["t"]
    assert torch.equal(f.get_tensor("t"), ref)


def test_per_tensor_steps_pack_grid_weights_without_requantizing():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-20, 21, (30, 40), generator=g)
    w = q.float() * 0.0173  # weights already on a grid, as after training
    b = torch.randint(-5, 6, (30,), generator=g).float() * 0.5
    cfg = ecnn.EncodeConfig(steps={"w": 0.0173, "b": 0.5})
    f = ecnn.open(ecnn.encode({"w": w, "b": b, "other": torch.randn(5, 5)}, config=cfg))
    assert torch.equal(f.get_tensor("w"), w) and torch.equal(f.get_tensor("b"), b)
    assert f.info("b").representation == "uniform"  # named explicitly, so 1-D is quantized too
    assert f.info("other").representation != "uniform"  # no bits/step: kept exact
    with pytest.raises(InvalidOption):
        ecnn.EncodeConfig(steps={"w": 0.0})


@pytest.mark.parametrize("opts", [{"bits": 8}, {"bits": 3}, {"lossless": True}, {"step": 0.01}])
def test_encode_reads_its_arrays_without_changing_or_copying_them(opts):
    """Native-order numpy arrays go to the encoder as they are (no copy of the model), and come back unchanged."""
    rng = np.random.default_rng(2)
    arrays = {"w": (rng.standard_normal((64, 48)) * 0.1).astype(np.float32), "b": rng.standard_normal(48).astype(np.float32),
              "i": rng.integers(-5, 5, 100).astype(np.int16)}
    before = {k: v.copy() for k, v in arrays.items()}
    from ecnn import numpy as enp

    prepared = enp._arrays(arrays)
    assert all(np.shares_memory(prepared[k][0], arrays[k]) for k in arrays)
    ecnn.numpy.encode(arrays, **opts)
    ecnn.encode(arrays, **opts)
    assert all(np.array_equal(arrays[k], before[k]) for k in arrays)
