"""The rans coder (spec/CODING.md sections 5.9 and 7.3): tables, round trips against the reference
decoder, and damaged streams."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ecnn
import ecnn.numpy
from ecnn import codec, errors
from ecnn._core import _rans
from ecnn.coder import blocks, categorical, rans
from ecnn.config import EncodeConfig
from ecnn.container.reader import Container
from ecnn.select.classes import plan_blocks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ref_decoder  # noqa: E402


def test_freqs_follow_the_worked_example_of_section_7_3():
    assert rans.freqs(np.array([1, 0, 3]), 10).tolist() == [256, 0, 768]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=300), st.integers(10, 15))
def test_freqs_sum_to_two_to_the_precision_and_keep_every_used_symbol(counts, p):
    c = np.array(counts, np.int64)
    if c.sum() == 0 or np.count_nonzero(c) > 1 << p:
        with pytest.raises(ValueError):
            rans.freqs(c, p)
        return
    f = rans.freqs(c, p).astype(np.int64)
    assert f.sum() == 1 << p
    assert np.all((f > 0) == (c > 0))
    assert f.tolist() == ref_decoder.rans_freqs(counts, p)


def _stream(sym, crows, lanes, effort="best", offset=0):
    nsym = int(sym.max()) + 1
    nsym = max(nsym, 2)
    p, _ = plan_blocks(sym, nsym, 1 << 16, effort)
    return rans.encode(sym, p, offset, nsym, crows, lanes=lanes)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40), st.integers(1, 40), st.integers(2, 300), st.integers(1, 40), st.integers(1, 64),
    st.sampled_from(["best", "fast"]), st.integers(-5, 5), st.integers(0, 2**32 - 1),
)
def test_round_trip_matches_the_reference_decoder(rows, cols, nsym, crows, lanes, effort, offset, seed):
    rng = np.random.default_rng(seed)
    sym = np.minimum(rng.geometric(rng.uniform(0.05, 0.9), (rows, cols)) - 1, nsym - 1).astype(np.int32)
    crows = min(crows, rows)
    desc, data = _stream(sym, crows, lanes, effort, offset)
    assert desc == {"coder": "rans", "length": len(data)}
    n = rows * cols
    got = rans.decode(desc, data, n, np.int64, -10, 400)
    assert np.array_equal(got, sym.ravel() + offset)
    ref = ref_decoder.decode_rans({"lo": -10, "hi": 400}, data, n)
    assert ref == (sym.ravel() + offset).tolist()


def test_the_heads_decode_in_place_with_a_shift_into_every_unsigned_width():
    rng = np.random.default_rng(3)
    sym = np.minimum(rng.geometric(0.2, (50, 70)) - 1, 40).astype(np.int32)
    _, data = _stream(sym, 13, 4)
    ln = rans.parse(data, sym.size, 0, 1000)
    for dt, shift in ((np.uint16, 5), (np.uint32, 20), (np.uint64, 40), (np.int32, 3), (np.int64, 0)):
        out = np.zeros((50, 70), dt)
        for i in range(ln.nchunks):
            a, b = ln.chunk_bounds(i)
            ln.decode_chunk(i, out[a:b], shift)
        assert np.array_equal(out, (sym.astype(np.uint64) << np.uint64(shift)).astype(dt))


def test_a_misaligned_stream_decodes_the_same():
    rng = np.random.default_rng(4)
    sym = np.minimum(rng.geometric(0.3, (30, 33)) - 1, 20).astype(np.int32)
    desc, data = _stream(sym, 7, 3)
    shifted = memoryview(b"\0" + data)[1:]
    assert np.array_equal(rans.decode(desc, shifted, sym.size, np.int32, 0, 100), sym.ravel())


def test_huge_alphabets_with_few_used_symbols_and_the_limits():
    rng = np.random.default_rng(5)
    sym = rng.choice(np.array([0, 7, 65535], np.int32), size=(20, 20))
    desc, data = _stream(sym, 20, 2)
    assert np.array_equal(rans.decode(desc, data, sym.size, np.int32, 0, 1 << 17), sym.ravel())
    # more used symbols than 2^15 slots cannot be coded; more than 2^16 symbols cannot be decoded
    many = np.arange(40000, dtype=np.int32).reshape(200, 200)
    with pytest.raises(ValueError):
        _stream(many, 200, 1)


def test_empty_lanes_and_one_symbol_tables():
    sym = np.array([[3, 3, 3]], np.int32)  # three symbols in eight lanes, one table of one used symbol
    desc, data = _stream(sym, 1, 8)
    assert np.array_equal(rans.decode(desc, data, 3, np.int32, 0, 10), sym.ravel())
    assert ref_decoder.decode_rans({"lo": 0, "hi": 10}, data, 3) == [3, 3, 3]


def _corruptions(data: bytes, rng) -> list[bytes]:
    out = [data[:k] for k in (0, 5, len(data) // 2, len(data) - 1)]
    for _ in range(40):
        b = bytearray(data)
        i = int(rng.integers(len(b)))
        b[i] ^= int(rng.integers(1, 256))
        out.append(bytes(b))
    out.append(data + b"\0\0")
    return out


def test_damaged_streams_are_corrupt_payload_or_decode_never_crash():
    rng = np.random.default_rng(6)
    sym = np.minimum(rng.geometric(0.25, (40, 60)) - 1, 30).astype(np.int32)
    desc, data = _stream(sym, 9, 4)
    for bad in _corruptions(data, rng):
        d = dict(desc, length=len(bad))
        try:
            got = rans.decode(d, bad, sym.size, np.int64, 0, 1000)
        except errors.CorruptPayload:
            continue
        assert got.shape == (sym.size,)  # a change the checks cannot see (a table count, say) decodes to something


def test_the_compiled_core_rejects_bad_arguments_with_typed_errors():
    f = rans.freqs(np.array([1, 2, 3]), 10)[None, :]
    t = _rans.tables(f, 10)
    with pytest.raises(ValueError):
        _rans.tables(f, 9)  # precision out of range
    with pytest.raises(ValueError):
        _rans.tables(f[:, :2], 10)  # does not sum to 2^10
    with pytest.raises(TypeError):
        _rans.tables(f.astype(np.int64), 10)
    out = np.zeros((1, 4), np.uint32)
    runs, start = np.array([[0, 0, 4]], np.int32), np.array([0, 1], np.int64)
    words, rclass = np.array([0], np.uint64), np.zeros(1, np.uint8)
    with pytest.raises(ValueError):  # a state of zero bytes: the lane layout does not add up
        _rans.decode_blocks(t, b"", words, rclass, runs, start, None, 0, 0, out)
    with pytest.raises(ValueError):  # a run past the columns
        _rans.decode_blocks(t, b"\0\0\1\0", words, rclass, np.array([[0, 0, 5]], np.int32), start, None, 0, 0, out)
    with pytest.raises(ValueError):  # a table index outside the tables
        _rans.decode_blocks(t, b"\0\0\1\0", words, rclass, np.array([[1, 0, 4]], np.int32), start, None, 0, 0, out)
    with pytest.raises(ValueError):  # a symbol of frequency 0
        _rans.encode(rans.cumulative(rans.freqs(np.array([1, 0]), 10)[None, :]), 10, np.array([1], np.int32), np.zeros(1, np.int32), 1)
    with pytest.raises(ValueError):
        _rans.encode(rans.cumulative(f), 10, np.array([1], np.int32), np.zeros(1, np.int32), 65)


def test_files_use_rans_heads_by_default_and_format_minor_1_keeps_blocks():
    rng = np.random.default_rng(8)
    w = (rng.standard_normal((128, 256)) * 0.02).astype(np.float32)
    new = ecnn.encode({"w": w}, lossless=True)
    old = ecnn.encode({"w": w}, config=EncodeConfig(lossless=True, format_minor=1))
    cn, co = Container(new), Container(old)
    assert cn.minor == 4 and cn.records[0].streams[2]["coder"] == "rans"  # 1.4: the default options' compact header
    assert codec.minor_version(cn.header["tensors"]) == 2
    assert co.minor == 1 and co.records[0].streams[2]["coder"] == "blocks"
    assert ecnn.decode(new)["w"].numpy().tobytes() == w.tobytes() == ecnn.decode(old)["w"].numpy().tobytes()
    assert len(new) <= len(old) * 1.01 + 64


def test_rans_and_blocks_code_the_same_plan_to_close_sizes():
    rng = np.random.default_rng(9)
    sym = np.minimum(rng.geometric(0.1, (256, 512)) - 1, 90).astype(np.int32)
    nsym = int(sym.max()) + 1
    p, _ = plan_blocks(sym, nsym, 1 << 18, "best")
    crows = categorical.chunk_rows_for(256, 512, 1 << 18)
    _, a = rans.encode(sym, p, 0, nsym, crows)
    _, b = blocks.encode(sym, p, 0, nsym, crows)
    assert len(a) <= len(b) * 1.003


# --- ctx model 5 (section 5.6.5) ---------------------------------------------------------------


def _scaled_ints(rng, rows, cols, signed=True):
    scale = np.exp(rng.standard_normal((rows, 1))) * np.exp(rng.standard_normal((1, cols)))
    v = np.rint(rng.laplace(0, 1, (rows, cols)) * scale * 3).astype(np.int64)
    return v if signed else np.abs(v) + 5


def _model5(v, chunk=4096):
    from ecnn import select
    from ecnn.coder import ctx

    desc, data = select.encode_best(v.ravel(), 4, True, chunk, rows=v.shape[0], contexts=2)
    return desc, data, (desc["coder"] == "ctx" and data[0] == ctx.MODEL_ROWCOL_LANES)


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 90), st.integers(8, 90), st.booleans(), st.integers(0, 2**32 - 1))
def test_model5_round_trip_matches_the_reference_decoder(rows, cols, signed, seed):
    from ecnn.coder import ctx

    v = _scaled_ints(np.random.default_rng(seed), rows, cols, signed)
    desc, data, is5 = _model5(v, chunk=int(np.random.default_rng(seed).integers(4096, 9000)))
    if not is5:
        return
    lo, hi = -(1 << 20), 1 << 20
    got = ctx.decode(data, v.size, np.int64, lo, hi)
    assert np.array_equal(got, v.ravel())
    assert ref_decoder.decode_ctx({"lo": lo, "hi": hi}, data, v.size) == v.ravel().tolist()


def test_model5_is_what_the_encoder_writes_for_scaled_matrices_and_narrow_outputs_decode():
    from ecnn.coder import ctx

    rng = np.random.default_rng(11)
    v = _scaled_ints(rng, 200, 300)
    desc, data, is5 = _model5(v, chunk=1 << 14)
    assert is5
    for dt in (np.int8, np.int16, np.int32):
        w = np.clip(v, np.iinfo(dt).min + 1, np.iinfo(dt).max)
        if not np.array_equal(w, v):
            continue
        assert np.array_equal(ctx.decode(data, v.size, dt, -(1 << 20), 1 << 20), v.ravel().astype(dt))
    with pytest.raises(errors.CorruptPayload):  # signs into an unsigned output
        ctx.decode(data, v.size, np.uint32, -(1 << 20), 1 << 20)


def test_model5_damage_is_corrupt_payload():
    from ecnn.coder import ctx

    rng = np.random.default_rng(12)
    v = _scaled_ints(rng, 60, 70)
    desc, data, is5 = _model5(v)
    assert is5
    for bad in _corruptions(data, rng):
        try:
            got = ctx.decode(bad, v.size, np.int64, -(1 << 20), 1 << 20)
        except errors.CorruptPayload:
            continue
        assert got.shape == (v.size,)


def test_format_minor_1_writes_model_4_and_files_say_their_minor():
    rng = np.random.default_rng(13)
    scale = np.exp(rng.standard_normal((256, 1)) * 1.5) * np.exp(rng.standard_normal((1, 192)) * 1.5)
    w = (rng.laplace(0, 1, (256, 192)) * scale).astype(np.float32)
    new = ecnn.encode({"w": w}, bits=8)
    old = ecnn.encode({"w": w}, config=EncodeConfig(bits=8, format_minor=1))
    cn, co = Container(new), Container(old)
    pn = new[cn.records[0].offset :]
    po = old[co.records[0].offset :]
    s0 = cn.records[0].streams[0]["length"]
    assert cn.records[0].streams[1]["coder"] == "ctx" and pn[s0] == 5 and cn.minor == 4  # a compact header (1.4)
    assert codec.minor_version(cn.header["tensors"], [bytes(cn.payload(r)) for r in cn.records]) == 2  # model 5
    assert po[co.records[0].streams[0]["length"]] == 4 and co.minor == 1
    assert np.array_equal(ecnn.decode(new)["w"].numpy(), ecnn.decode(old)["w"].numpy())


def _order_reference(rects, values, sclass, nsc, ntab, a, b):
    """A chunk's symbols and tables in decoding order, written out with numpy (sections 5.8 and 5.6.5)."""
    rc = rects.rclass[a:b]
    syms, tabs = [], []
    for g in range(len(rects.runs)):
        sel = np.flatnonzero(rc == g) + a
        if sel.size:
            block = rects.sym[sel]
            for t, c0, c1 in rects.runs[g]:
                syms.append(np.ascontiguousarray(block[:, c0:c1]).ravel())
                tabs.append(np.full(syms[-1].size, t, np.int32))
    for g in range(nsc):
        sub = values[a:b][:, np.flatnonzero(sclass == g)]
        bits = (sub[sub != 0] > 0).astype(np.int32)
        nq = bits.size // 4
        syms += [(bits[: 4 * nq].reshape(nq, 4) << np.arange(4)).sum(axis=1), bits[4 * nq :]]
        tabs += [np.full(nq, ntab + g, np.int32), np.full(bits.size - 4 * nq, ntab + nsc + g, np.int32)]
    return np.concatenate(syms).astype(np.int32), np.concatenate(tabs).astype(np.int32)


@pytest.mark.parametrize("seed", range(6))
def test_chunk_order_of_the_compiled_core_matches_numpy(seed):
    """The encoder's compiled chunk order: magnitudes by row class and run, columns in column order, then
    the signs class by class, four per quad; for every symbol type and sign-class count."""
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(1, 40)), int(rng.integers(1, 50))
    nrc, ncc = int(rng.integers(1, min(rows, 5) + 1)), int(rng.integers(1, min(cols, 6) + 1))
    rclass = rng.integers(0, nrc, rows)
    rclass[:nrc] = np.arange(nrc)
    cclass = rng.integers(0, ncc, cols)
    cclass[:ncc] = np.arange(ncc)
    table_of = rng.integers(0, 3, nrc + ncc - 1)
    values = rng.integers(-5, 6, (rows, cols)).astype([np.int8, np.int16, np.int32, np.int64][seed % 4])
    sym = np.abs(values).astype([np.uint8, np.uint16, np.int32][seed % 3])
    rects = blocks.Rects.of(sym, nrc, rclass, cclass, table_of)
    nsc = [0, 1, 3][seed % 3]
    sclass = rng.integers(0, max(nsc, 1), cols)
    ntab = int(table_of.max()) + 1
    orderer = rans._Orderer(rects, values, sclass if nsc else None, nsc, ntab)
    for a in range(0, rows, 7):
        b = min(rows, a + 7)
        got_s, got_t = orderer.chunk(a, b)
        want_s, want_t = _order_reference(rects, values, sclass, nsc, ntab, a, b)
        np.testing.assert_array_equal(got_s, want_s)
        np.testing.assert_array_equal(got_t, want_t)


def test_chunk_order_rejects_a_bad_schedule():
    sym = np.zeros((2, 4), np.uint8)
    out = np.empty(8, np.int32), np.empty(8, np.int32)
    runs = np.array([[0, 0, 4]], np.int32)
    assert _rans.chunk_order(sym, np.zeros(2, np.uint8), runs, np.array([0, 1], np.int64), None, None, None, 1, *out) == 8
    with pytest.raises(ValueError):  # a run past the columns
        _rans.chunk_order(sym, np.zeros(2, np.uint8), np.array([[0, 0, 5]], np.int32), np.array([0, 1], np.int64), None, None, None, 1, *out)
    with pytest.raises(ValueError):  # a row class without runs
        _rans.chunk_order(sym, np.array([0, 1], np.uint8), runs, np.array([0, 1], np.int64), None, None, None, 1, *out)
    with pytest.raises(ValueError):  # no room for the symbols
        _rans.chunk_order(sym, np.zeros(2, np.uint8), runs, np.array([0, 1], np.int64), None, None, None, 1, np.empty(7, np.int32), np.empty(7, np.int32))
    with pytest.raises(TypeError):  # int64 magnitudes
        _rans.chunk_order(sym.astype(np.int64), np.zeros(2, np.uint8), runs, np.array([0, 1], np.int64), None, None, None, 1, *out)


@pytest.fixture
def simd_off():
    """Decode with the scalar path for the test's duration (the SIMD path is restored after)."""
    _rans.use_simd(False)
    yield
    _rans.use_simd(True)


@pytest.mark.parametrize("lanes", [16, 32])
@pytest.mark.parametrize("p_geo, nsym", [(0.02, 300), (0.3, 40), (0.9, 3), (0.001, 5000)])
def test_wide_lanes_decode_the_same_with_and_without_simd(lanes, p_geo, nsym):
    """Chunks of 16 and 32 lanes (what the encoder writes for large chunks) through the SIMD path (where the
    CPU has it) and the scalar one: the same symbols, those of the reference decoder; a damaged stream is
    rejected by both, or both decode the same symbols."""
    rng = np.random.default_rng(lanes + nsym)
    sym = np.minimum(rng.geometric(p_geo, (300, 700)) - 1, nsym - 1).astype(np.int32)
    desc, data = _stream(sym, 150, lanes)
    assert rans.parse(data, sym.size, 0, 1 << 16).nchunks == 2
    flips = [(int(pos), 1 << int(bit)) for pos, bit in zip(rng.integers(len(data) // 2, len(data), 12), rng.integers(0, 8, 12))]
    results = []
    for on in (True, False):
        _rans.use_simd(on)
        try:
            results.append(rans.decode(desc, data, sym.size, np.int32, 0, 1 << 16))
            damaged = []
            for pos, bit in flips:
                bad = bytearray(data)
                bad[pos] ^= bit
                try:
                    damaged.append(rans.decode(desc, bytes(bad), sym.size, np.int32, 0, 1 << 16).tobytes())
                except errors.CorruptPayload:
                    damaged.append(None)
            results.append(damaged)
        finally:
            _rans.use_simd(True)
    assert np.array_equal(results[0], sym.ravel()) and np.array_equal(results[2], sym.ravel())
    assert results[1] == results[3]
    if nsym <= 300:
        assert ref_decoder.decode_rans({"lo": 0, "hi": 1 << 16}, data, sym.size) == sym.ravel().tolist()


def test_the_encoder_writes_wide_lanes_for_large_chunks_only():
    assert rans._lanes_for(1000, 1000, 1000) == 32
    assert rans._lanes_for(40, 4096, 40) == 16
    assert rans._lanes_for(1, 5 * rans.LANE_SYMBOLS, 1) == 4
    assert rans._lanes_for(1, 2 * rans.LANE_SYMBOLS, 1) == 2
    assert rans._lanes_for(3, 3, 3) == 1


def test_rowcol_signs_in_wide_lanes_decode_the_same_without_simd(simd_off):
    """ctx model 5 (magnitudes and signs) of a quantized MiniLM-sized matrix, on the scalar path."""
    rng = np.random.default_rng(9)
    w = np.rint(rng.laplace(0, 6, (384, 1536))).astype(np.int32)
    data = ecnn.numpy.encode({"w": w.astype(np.float32)}, config=EncodeConfig(steps={"w": 1.0}))
    with ecnn.open(data) as f:
        scalar = f.arrays()["w"][0]
    _rans.use_simd(True)
    with ecnn.open(data) as f:
        simd = f.arrays()["w"][0]
    assert np.array_equal(scalar, w.astype(np.float32)) and np.array_equal(simd, scalar)


def test_the_decoders_schedule_is_the_encoders_column_runs():
    """rans._schedule cuts every row class's tables at once: the same runs as blocks.column_runs, class by class."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        nrc, ncc, cols = int(rng.integers(1, 10)), int(rng.integers(1, 10)), int(rng.integers(1, 40))
        cclass = rng.integers(0, ncc, cols)
        table_of = np.sort(rng.integers(0, 4, nrc + ncc - 1))
        order, runs = blocks.column_runs(cclass, table_of, nrc)
        flat, run_start, o = rans._schedule(cclass, table_of, nrc, ncc)
        assert flat.tolist() == [list(r) for g in runs for r in g]
        assert run_start.tolist() == np.concatenate([[0], np.cumsum([len(g) for g in runs])]).tolist()
        assert (o is None) == (ncc == 1) and (o is None or o.tolist() == order.tolist())
