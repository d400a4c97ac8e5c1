"""The ``fields`` representation and the ``packed`` coder (spec/CODING.md sections 4.9 and 5.7)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ecnn.numpy as en
from ecnn import dtypes
from ecnn.codec import minor_version
from ecnn.repr import fields
from ecnn import file as efile
from ecnn.coder import blocks, packed
from ecnn.config import EncodeConfig, make_config
from ecnn.container.reader import Container
from ecnn.context import floats
from ecnn.errors import CorruptPayload, InvalidField, UnknownField, UnsupportedCoding

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ref_decoder  # noqa: E402

FLOATS = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
LOSSLESS = make_config(lossless=True)


def _bits_ref(values, width: int) -> bytes:
    """Least-significant-bit-first packing, written out bit by bit."""
    acc = 0
    for j, v in enumerate(values):
        acc |= int(v) << (j * width)
    return acc.to_bytes((len(values) * width + 7) // 8, "little")


def _encode(arrays: dict, cfg: EncodeConfig = LOSSLESS) -> bytes:
    """Encode ``name -> (storage array, dtype name)``."""
    return efile.encode({n: (a, dtypes.get(d)) for n, (a, d) in arrays.items()}, cfg, None)


def _decode(data: bytes) -> dict:
    with efile.EcnnFile(data) as f:
        return {n: a for n, (a, _) in f.arrays().items()}


def _patterns(dtype: str, n: int, seed: int) -> np.ndarray:
    """Random bit patterns of a float type: every bit pattern is a valid element."""
    dt = dtypes.get(dtype)
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    return u.view(dt.storage).copy()


def _record(data: bytes, name: str):
    return next(r for r in Container(data).records if r.name == name)


# --- packed -------------------------------------------------------------------


@given(st.integers(1, 64), st.lists(st.integers(0, 2**64 - 1), max_size=40))
def test_packed_matches_bitwise_reference(width, raw):
    values = np.array([v & ((1 << width) - 1) for v in raw], dtype=np.uint64)
    data = packed.pack(values, width)
    assert data == _bits_ref(values.tolist(), width)
    assert np.array_equal(packed.unpack(data, values.size, width), values)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("width", [1, 7, 8, 13])
@pytest.mark.parametrize("n", [5, 16, 1001])
def test_packed_takes_any_integer_type(dtype, width, n):
    rng = np.random.default_rng(width * n)
    top = min(1 << width, np.iinfo(dtype).max + 1)
    values = rng.integers(0, top, size=n).astype(dtype)
    assert packed.pack(values, width) == _bits_ref([int(v) for v in values], width)


@given(st.integers(1, 5), st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2**60)), min_size=1, max_size=12))
def test_packed_groups_widest_first(cols, rows):
    widths = np.array([w for w, _ in rows], dtype=np.int64)
    rng = np.random.default_rng(rows[0][1])
    values = np.stack([rng.integers(0, 1 << w, size=cols, dtype=np.uint64) if w else np.zeros(cols, np.uint64) for w, _ in rows])
    data = packed.pack_groups(values, widths, cols)
    expect = b"".join(_bits_ref(values[widths == g].ravel().tolist(), g) for g in sorted(set(widths.tolist()), reverse=True) if g)
    assert data == expect
    assert len(data) == packed.groups_length(widths, cols)
    assert np.array_equal(packed.unpack_groups(data, widths, cols), values.ravel())


def test_packed_spec_examples():
    assert packed.pack(np.array([5, 1, 6], np.uint64), 3) == bytes.fromhex("8d01")
    assert packed.pack_groups(np.array([5, 1, 2, 0], np.uint64), np.array([3, 2]), 2) == bytes.fromhex("0d02")


def _split_in_numpy(u, e_bits, m_bits, k, rows):
    """spec/CODING.md section 4.9, written plainly on Python integers."""
    width, r = 1 + e_bits + m_bits, m_bits - k
    vals = [int(x) for x in u]
    cols = len(vals) // rows
    tails = [x & ((1 << r) - 1) for x in vals]
    shifts = []
    for i in range(rows):
        any_ = 0
        for t in tails[i * cols : (i + 1) * cols]:
            any_ |= t
        shifts.append(r if any_ == 0 else (any_ & -any_).bit_length() - 1)
    signs = [x >> (width - 1) for x in vals]
    heads = [(x >> r) & ((1 << (e_bits + k)) - 1) for x in vals]
    return signs, heads, shifts, [t >> shifts[j // cols] for j, t in enumerate(tails)]


@pytest.mark.parametrize("dtype", sorted(floats.LAYOUT))
def test_split_cuts_every_bit_pattern_as_the_spec_says(dtype):
    e_bits, m_bits = floats.layout(dtype)
    rows, cols = 6, 7
    arr = _patterns(dtype, rows * cols, 5).reshape(rows, cols)
    u = floats.bit_patterns(arr).copy()
    u[2] &= u.dtype.type(~((1 << (m_bits // 2)) - 1) & ((1 << (8 * u.itemsize)) - 1))  # a row of shared zero bits
    u[4] &= u.dtype.type(~((1 << m_bits) - 1) & ((1 << (8 * u.itemsize)) - 1))  # a row with no tail bits
    for k in range(0, min(m_bits, floats.MAX_HEAD_MANTISSA) + 1):
        got = floats.split(u, e_bits, m_bits, k, rows)
        assert [g.dtype for g in got] == [np.uint8, np.uint32, np.int64, u.dtype]
        want = _split_in_numpy(u, e_bits, m_bits, k, rows)
        for g, w in zip(got, want):
            assert g.tolist() == w


def test_head_histograms_fold_into_narrower_heads():
    from ecnn.select import floats as select_floats

    u = floats.bit_patterns(_patterns("float32", 5000, 3))
    widest = select_floats.head_histogram(u, 8, 23, 8)
    for k in range(9):
        folded = widest.reshape(-1, 1 << (8 - k)).sum(axis=1)
        np.testing.assert_array_equal(folded, select_floats.head_histogram(u, 8, 23, k))


def test_split_and_pack_check_their_arrays():
    from ecnn._core import _bits

    u = np.arange(12, dtype=np.uint32)
    out = (np.empty(12, np.uint8), np.empty(12, np.uint32), np.empty(12, np.uint32), np.empty(3, np.int64))
    with pytest.raises(ValueError):
        _bits.split(u, 8, 22, 2, *out)  # 1 + 8 + 22 bits is not a 32-bit type
    with pytest.raises(ValueError):
        _bits.split(u, 8, 23, 2, out[0], out[1], out[2], np.empty(5, np.int64))  # 12 elements in 5 rows
    with pytest.raises(TypeError):
        _bits.split(u.astype(np.int32), 8, 23, 2, *out)
    with pytest.raises(ValueError):
        _bits.pack(u, 65)
    with pytest.raises(TypeError):
        _bits.pack(u.astype(np.float32), 3)


# --- fields: bit exactness ----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(FLOATS),
    st.integers(0, 8),
    st.integers(1, 6),
    st.integers(1, 16),
    st.integers(0, 2**32 - 1),
)
@example("float8_e4m3fn", 0, 2, 1, 1)  # two tail groups of one symbol each: 2 bytes for 2 x 3 bits
def test_fields_round_trip_any_bit_pattern(dtype, k, rows, cols, seed):
    """Every bit pattern comes back: NaN payloads, signed zeros, subnormals, infinities."""
    dt = dtypes.get(dtype)
    _, m_bits = floats.layout(dtype)
    k = min(k, m_bits)
    arr = _patterns(dtype, rows * cols, seed).reshape(rows, cols)
    # some rows with shared zero low bits, as if widened from a narrower type
    u = arr.view(f"<u{dt.itemsize}")
    u[::2] &= np.array(~((1 << (m_bits // 2)) - 1) & ((1 << (8 * dt.itemsize)) - 1), dtype=u.dtype)
    rep, descs, payload = fields.encode(arr, dt, 4096, k=k)
    assert rep == {"kind": "fields", "head": k}
    fields.validate("t", rep, descs, arr.shape, dt)
    parts, pos = [], 0
    for d in descs:
        parts.append((d, memoryview(payload)[pos : pos + d["length"]]))
        pos += d["length"]
    out = fields.decode("t", rep, parts, arr.shape, dt)
    assert out.dtype == dt.storage and out.shape == arr.shape
    assert out.tobytes() == arr.tobytes()


SPECIALS32 = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7FA12345, 0xFFFFFFFF, 0x00000001, 0x807FFFFF, 0x3F800000]


@pytest.mark.parametrize("shape", [(), (1,), (10,), (2, 5), (5, 2, 1)])
def test_special_values_through_the_file_and_the_reference_decoder(shape):
    n = int(np.prod(shape)) if shape else 1
    a32 = np.array((SPECIALS32 * 2)[:n], dtype="<u4").view(np.float32).reshape(shape)
    a16 = np.array(([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0x0001, 0x83FF, 0x3C00, 0xFFFF, 0x7BFF] * 2)[:n], dtype="<u2")
    arrays = {"f32": (a32, "float32"), "bf16": (a16.reshape(shape), "bfloat16"), "f16": (a16.view(np.float16).reshape(shape), "float16")}
    for name, (a, d) in arrays.items():
        dt = dtypes.get(d)
        rep, descs, payload = fields.encode(a, dt, 4096)
        parts, pos = [], 0
        for desc in descs:
            parts.append((desc, payload[pos : pos + desc["length"]]))
            pos += desc["length"]
        assert fields.decode(name, rep, parts, a.shape, dt).tobytes() == a.tobytes()
    data = _encode(arrays)
    out = _decode(data)
    ref = ref_decoder.decode_file(data)
    for name, (a, d) in arrays.items():
        assert out[name].tobytes() == a.tobytes()
        assert ref[name][2] == a.tobytes()


def test_rows_from_a_narrower_type_drop_their_zero_bits():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 128)) * 0.05).astype(np.float32)
    w[10:20] = w[10:20].astype(np.float16).astype(np.float32)
    _, m_bits = floats.layout("float32")
    k = 2
    signs, heads, shifts, tails = floats.split(floats.bit_patterns(w), 8, m_bits, k, 64)
    assert shifts[10:20].tolist() == [13] * 10 and not shifts[:10].any()
    rep, descs, payload = fields.encode(w, dtypes.get("float32"), 1 << 20, k=k)
    full = packed.group_bytes(w.size, m_bits - k)
    assert descs[3]["coder"] == "packed" and descs[3]["length"] == full - (10 * 128 * 13) // 8
    data = _encode({"w": (w, "float32")})
    assert _record(data, "w").repr["kind"] == "fields"
    assert _decode(data)["w"].tobytes() == w.tobytes()
    assert ref_decoder.decode_file(data)["w"][2] == w.tobytes()


# --- the encoder's choices ------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_lossless_picks_fields_and_beats_planes(dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((96, 256)) * rng.uniform(0.01, 0.1, size=(96, 1))).astype(np.float32)
    dt = dtypes.get(dtype)
    from ecnn import quantize

    a = quantize.from_float(x, dt) if dtype == "bfloat16" else x.astype(dt.storage)
    data = _encode({"w": (a, dtype)})
    rec = _record(data, "w")
    assert rec.repr["kind"] == "fields"
    # the heads of a 96 x 256 matrix are a rans stream (format 1.2), the rest 1.1
    c = Container(data)
    assert rec.streams[2]["coder"] == "rans" and c.minor == 4  # with the compact header of the default options (1.4)
    assert minor_version(c.header["tensors"]) == 2
    from ecnn import codec
    from ecnn.config import EncodeConfig
    from ecnn.repr import planes as planes_repr

    planes = codec.cost(planes_repr.encode(a, dt, EncodeConfig(lossless=True, chunk=1 << 20)))
    mine = rec.length + len(msgpack.packb(rec.repr)) + len(msgpack.packb(rec.streams))
    assert mine < planes
    assert _decode(data)["w"].tobytes() == a.tobytes()


def test_planes_give_up_only_where_their_estimate_cannot_win():
    from ecnn import codec
    from ecnn.repr import base
    from ecnn.repr import planes as planes_repr

    rng = np.random.default_rng(8)
    a = (rng.standard_normal((96, 256)) * rng.uniform(0.01, 0.1, size=(96, 1))).astype(np.float32)
    dt, cfg = dtypes.get("float32"), EncodeConfig(lossless=True)
    full = planes_repr.encode(a, dt, cfg)
    cost = codec.cost(full)
    # within the estimator's margin the planes are built, byte for byte as without a bound
    assert planes_repr.encode(a, dt, cfg, bound=int(cost * (1 - base.ESTIMATE_MARGIN / 4))) == full
    assert planes_repr.encode(a, dt, cfg, bound=10 * cost) == full
    assert planes_repr.encode(a, dt, cfg, bound=int(cost * 0.99)) is None


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["float32", "float16", "bfloat16"]), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_exact_tensors_never_grow_beyond_raw(dtype, n, seed):
    """Random bit patterns do not compress: the choice falls back to raw (at most its bytes plus the header)."""
    a = _patterns(dtype, n, seed)
    data = _encode({"x": (a, dtype)})
    rec = _record(data, "x")
    assert rec.length + len(msgpack.packb(rec.repr)) + len(msgpack.packb(rec.streams)) <= a.nbytes + 11
    assert _decode(data)["x"].tobytes() == a.tobytes()


def test_lossy_mode_keeps_biases_exact_with_fields():
    rng = np.random.default_rng(7)
    arrays = {"fc.weight": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32), "fc.bias": (rng.standard_normal(4096) * 0.02).astype(np.float32)}
    data = en.encode(arrays, bits=8)
    assert _record(data, "fc.weight").repr["kind"] in ("uniform", "uniform_rows")
    assert _record(data, "fc.bias").repr["kind"] == "fields"
    assert en.decode(data)["fc.bias"].tobytes() == arrays["fc.bias"].tobytes()


def test_format_minor_0_writes_no_fields():
    if "format_minor" not in EncodeConfig.__dataclass_fields__:
        pytest.skip("this EncodeConfig has no format_minor")
    rng = np.random.default_rng(8)
    w = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
    data = en.encode({"w": w}, config=EncodeConfig(lossless=True, format_minor=0))
    assert _record(data, "w").repr["kind"] in ("raw", "planes")


# --- checks on hostile records --------------------------------------------------


def _one(dtype="float32", shape=(16, 32)):
    rng = np.random.default_rng(11)
    a = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    a[:4] = a[:4].astype(np.float16).astype(np.float32)
    dt = dtypes.get(dtype)
    return a, dt, fields.encode(a, dt, 4096, k=2)


def test_validate_rejects_bad_records():
    a, dt, (rep, descs, _) = _one()
    with pytest.raises(InvalidField):
        fields.validate("t", {"kind": "fields", "head": 24}, descs, a.shape, dt)
    with pytest.raises(InvalidField):
        fields.validate("t", {"kind": "fields", "head": True}, descs, a.shape, dt)
    with pytest.raises(InvalidField):
        fields.validate("t", {"kind": "fields"}, descs, a.shape, dt)
    with pytest.raises(InvalidField):
        fields.validate("t", rep, descs[:3], a.shape, dt)
    with pytest.raises(InvalidField):
        fields.validate("t", rep, descs, a.shape, dtypes.get("int32"))
    with pytest.raises(InvalidField):
        fields.validate("t", rep, descs, (0, 32), dt)
    bad = [dict(d) for d in descs]
    bad[3]["width"] = 20
    with pytest.raises(InvalidField):
        fields.validate("t", rep, bad, a.shape, dt)
    bad = [dict(d) for d in descs]
    bad[3]["length"] = packed.group_bytes(a.size, 21) + 21  # past N * width bits plus one byte per group but one
    with pytest.raises(InvalidField):
        fields.validate("t", rep, bad, a.shape, dt)


def _parts(descs, payload):
    out, pos = [], 0
    for d in descs:
        out.append((d, bytes(payload[pos : pos + d["length"]])))
        pos += d["length"]
    return out


def test_decode_rejects_damaged_tails():
    a, dt, (rep, descs, payload) = _one()
    parts = _parts(descs, payload)
    d3, p3 = parts[3]
    for damaged in (p3 + b"\x00", p3[:-1]):  # the groups' sizes follow from the row shifts
        with pytest.raises(CorruptPayload):
            fields.decode("t", rep, parts[:3] + [(d3, damaged)], a.shape, dt)
    # 3 x 5 elements of 21 bits leave 5 pad bits in the last byte
    b = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    rep, descs, payload = fields.encode(b, dt, 4096, k=2)
    parts = _parts(descs, payload)
    d3, p3 = parts[3]
    assert d3["length"] == packed.group_bytes(15, 21)
    damaged = p3[:-1] + bytes([p3[-1] | 0x80])
    with pytest.raises(CorruptPayload):
        fields.decode("t", rep, parts[:3] + [(d3, damaged)], b.shape, dt)
    assert fields.decode("t", rep, parts, b.shape, dt).tobytes() == b.tobytes()


def test_decode_rejects_tails_wider_than_their_row():
    a, dt, (rep, descs, payload) = _one()
    parts = _parts(descs, payload)
    r = 21
    # the same tails stored raw (4 bytes each), one of them with a bit its row's shift forbids
    signs, heads, shifts, tails = floats.split(floats.bit_patterns(a), 8, 23, 2, a.shape[0])
    tails = tails.copy()
    tails[0] |= np.uint64(1 << (r - int(shifts[0])))
    raw = tails.astype("<u4").tobytes()
    d3 = {"coder": "raw", "length": len(raw), "width": 4, "signed": False}
    with pytest.raises(CorruptPayload):
        fields.decode("t", rep, parts[:3] + [(d3, raw)], a.shape, dt)


def test_packed_stream_rejects_pad_bits_and_out_of_range():
    d = {"coder": "packed", "length": 1, "width": 3}
    assert packed.decode(d, b"\x05", 2, np.int64, 0, 7).tolist() == [5, 0]
    with pytest.raises(CorruptPayload):
        packed.decode(d, b"\x45", 2, np.int64, 0, 7)  # bit 6 is a pad bit
    with pytest.raises(CorruptPayload):
        packed.decode(d, b"\x07", 2, np.int64, 0, 1)  # 7 outside 0..1
    with pytest.raises(CorruptPayload):
        packed.decode(d, b"\x05\x00", 2, np.int64, 0, 7)
    with pytest.raises(InvalidField):
        packed.validate({"coder": "packed", "length": 1, "width": 0}, 2)
    packed.validate({"coder": "packed", "length": 2, "width": 3}, 2)  # two groups of one 3-bit symbol each
    with pytest.raises(InvalidField):
        packed.validate({"coder": "packed", "length": 4, "width": 3}, 2)


# --- packed.unpack_at and the blocks coder (section 5.8) ------------------------


@given(st.integers(1, 57), st.integers(0, 70), st.lists(st.integers(0, 2**64 - 1), max_size=40), st.sampled_from(["u1", "u2", "u4", "u8"]))
def test_unpack_at_reads_from_any_bit(width, bit, raw, dt):
    """Bit fields read from any bit: the bits of an LSB-first bit string, bits past the end read as 0."""
    if np.dtype(dt).itemsize * 8 < width:
        dt = "u8"
    values = [v & ((1 << width) - 1) for v in raw]
    junk = (1 << bit) - 1  # the bits before the first field are ones, to catch a wrong start
    acc = junk | sum(v << (bit + j * width) for j, v in enumerate(values))
    buf = acc.to_bytes((bit + len(values) * width + 7) // 8, "little")
    got = packed.unpack_at(buf, bit, len(values), width, dt)
    assert got.dtype == np.dtype(dt) and got.tolist() == values
    assert packed.unpack_at(buf, bit, len(values) + 3, width, dt).tolist() == values + [0, 0, 0]


def _blocks_stream(sym, nrc, ncc, crows, offset=0):
    from ecnn.context import rowcol as rowcol_ctx

    p = rowcol_ctx.plan(sym, int(sym.max()) + 1, None, nrc, ncc)
    return blocks.encode(sym, p, offset, int(sym.max()) + 1, crows)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 8), st.integers(1, 8), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_blocks_round_trip_and_reference(rows, cols, nrc, ncc, crows, seed):
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.standard_normal((rows, 1)) + rng.standard_normal((1, cols)))
    sym = np.minimum(np.abs(rng.standard_normal((rows, cols)) * scale * 4), 40).astype(np.int32)
    sym.flat[0] = 1  # at least two symbols
    nrc, ncc, crows = min(nrc, rows), min(ncc, cols), min(crows, rows)
    desc, data = _blocks_stream(sym, nrc, ncc, crows, offset=5)
    assert desc == {"coder": "blocks", "length": len(data)}
    out = blocks.decode(desc, data, sym.size, np.int64, 0, 100)
    assert np.array_equal(out, sym.ravel() + 5)
    f = {"coder": "blocks", "length": len(data), "lo": 0, "hi": 100}
    assert ref_decoder.decode_blocks(f, data, sym.size) == (sym.ravel() + 5).tolist()


def test_blocks_spec_example_order():
    """The example of section 5.8: runs of each row class, rows in order, columns in class order."""
    import constriction

    from ecnn.context import order0, tables
    from ecnn.context import rowcol as rowcol_ctx

    sym = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    p = rowcol_ctx.plan(sym, 7, None, 2, 2)
    fits = [order0.fit(np.ones(7, np.int64)), order0.fit(np.arange(1, 8))]
    p = dataclasses.replace(p, rclass=np.array([1, 0]), cclass=np.array([1, 0, 0]), table_of=np.array([0, 0, 1]), fits=fits)
    desc, data = blocks.encode(sym, p, 0, 7, 2)
    bl = blocks.parse(data, 6, 0, 6)
    assert bl.runs == [[(0, 0, 3)], [(0, 0, 2), (1, 2, 3)]]
    dec = constriction.stream.queue.RangeDecoder(bl.words[0])
    m = [constriction.stream.model.Categorical(tables.expand(f.counts).astype(np.float64), perfect=False) for f in fits]
    # table 0: (1, 1), (1, 2), (1, 0); table 0: (0, 1), (0, 2); table 1: (0, 0)
    assert dec.decode(m[0], 3).tolist() == [5, 6, 4]
    assert dec.decode(m[0], 2).tolist() == [2, 3]
    assert dec.decode(m[1], 1).tolist() == [1]
    assert blocks.decode(desc, data, 6, np.int32, 0, 6).tolist() == [1, 2, 3, 4, 5, 6]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["float32", "bfloat16", "float16"]), st.integers(2, 40), st.integers(1, 20), st.integers(1, 64), st.integers(0, 2**32 - 1))
def test_fields_decodes_chunk_by_chunk(dtype, rows, cols, chunk, seed):
    """Small chunks: rows of several tail widths inside one chunk and across chunk boundaries."""
    dt = dtypes.get(dtype)
    _, m_bits = floats.layout(dtype)
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((rows, cols)) * np.exp(rng.standard_normal((rows, 1)))).astype(np.float32)
    u = floats.bit_patterns(a).reshape(rows, cols)
    arr = _patterns(dtype, rows * cols, seed).reshape(rows, cols)
    au = arr.view(f"<u{dt.itemsize}")
    au[rows // 3 : rows // 2] &= np.array(~((1 << (m_bits // 2)) - 1) & ((1 << (8 * dt.itemsize)) - 1), dtype=au.dtype)
    au[1::4] = (u[1::4] >> np.uint64(32 - 8 * dt.itemsize)).astype(au.dtype)  # some rows of ordinary weights
    rep, descs, payload = fields.encode(arr, dt, chunk, k=2)
    parts = _parts(descs, payload)
    assert fields.decode("t", rep, parts, arr.shape, dt).tobytes() == arr.tobytes()


def test_blocks_only_in_stream_2_and_checked():
    a, dt, (rep, descs, payload) = _one()
    assert descs[2]["coder"] == "blocks"
    bad = [dict(d) for d in descs]
    bad[0] = {"coder": "blocks", "length": bad[0]["length"]}
    with pytest.raises(UnsupportedCoding):
        fields.validate("t", rep, bad, a.shape, dt)
    bad = [dict(d) for d in descs]
    bad[2]["length"] = 6
    with pytest.raises(InvalidField):
        fields.validate("t", rep, bad, a.shape, dt)
    bad[2] = dict(descs[2], nsym=3)
    with pytest.raises(UnknownField):
        fields.validate("t", rep, bad, a.shape, dt)
    parts = _parts(descs, payload)
    d2, p2 = parts[2]
    for damaged in (p2[:-1], p2 + b"\x00", b"\x00\x01" + p2[2:], p2[:-4] + bytes(4)):
        with pytest.raises(CorruptPayload):
            fields.decode("t", rep, parts[:2] + [(d2, damaged)] + parts[3:], a.shape, dt)


def test_fields_chunks_on_worker_threads(monkeypatch, splits):
    """The chunks of one tensor split over threads give the same bits; a damaged chunk is CorruptPayload."""
    from ecnn import chunkrun
    from ecnn.context import varint

    monkeypatch.setattr(chunkrun, "MIN_SPLIT_BYTES", 0)
    a, dt, _ = _one(shape=(64, 48))
    rep, descs, payload = fields.encode(a, dt, 256, k=3)  # 5 rows per chunk
    parts = _parts(descs, payload)
    with chunkrun.using(3):
        out = fields.decode("t", rep, parts, a.shape, dt)
        assert splits and out.tobytes() == a.tobytes()
        # Two more words in the last chunk: its decoder leaves them unread (section 8, check (a)).
        d2, p2 = parts[2]
        bl = blocks.parse(p2, a.size, 0, (1 << 11) - 1)
        sizes = [w.size for w in bl.words]
        end = len(p2) - 4 * sum(sizes)
        start = end - len(varint.encode(sizes))
        damaged = p2[:start] + varint.encode(sizes[:-1] + [sizes[-1] + 2]) + p2[end:] + bytes(8)
        with pytest.raises(CorruptPayload, match="left over"):
            fields.decode("t", rep, parts[:2] + [(dict(d2, length=len(damaged)), damaged)] + parts[3:], a.shape, dt)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_head_choice_is_the_cheapest_estimate(dtype):
    from ecnn.select import floats as select_floats

    e_bits, m_bits = floats.layout(dtype)
    top = min(m_bits, floats.MAX_HEAD_MANTISSA)
    rng = np.random.default_rng(len(dtype))
    for spread in (0.01, 1.0, 30.0):
        x = rng.standard_normal((64, 96)) * np.exp(rng.standard_normal((64, 1)) * spread)
        u = floats.bit_patterns(_patterns(dtype, 10, 1) if spread > 10 else x.astype(dtypes.get(dtype).storage if dtype != "bfloat16" else np.float32))
        if dtype == "bfloat16" and spread <= 10:
            u = (u >> 16).astype(np.uint16)
        widest = select_floats.head_histogram(u, e_bits, m_bits, top)
        every = [select_floats.estimate_head_bits(widest.reshape(-1, 1 << (top - k)).sum(axis=1), e_bits, m_bits, k) for k in range(top + 1)]
        assert select_floats.choose_head(u, e_bits, m_bits) == int(np.argmin(every))


@pytest.mark.parametrize("count, width", [(1, 1), (7, 3), (8, 13), (1001, 19), (5, 64)])
def test_packed_cost_is_the_cost_of_the_packed_stream(count, width):
    from ecnn.select import floats as select_floats

    values = np.random.default_rng(count).integers(0, 1 << min(width, 62), count).astype(np.uint64)
    assert select_floats.packed_cost(count, width) == select_floats.desc_cost(*select_floats.packed_stream(values, width))
