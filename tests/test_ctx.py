"""The ctx stream coder of format 1.1 (ecnn/coder/ctx.py, ecnn/context/sparse.py)."""

import constriction
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ecnn
import ecnn.numpy as en
from ecnn import codec, rate, select
from ecnn.coder import categorical, ctx, streams
from ecnn.container.reader import Container
from ecnn.context import sparse, tables
from ecnn.errors import CorruptPayload, InvalidField, UnsupportedCoding
from ecnn.select import classes

LO, HI = -(1 << 24), 1 << 24


def sparse_matrix(rng, shape, density, levels=3, col_bias=True):
    """Signed symbols, mostly zero, with rows and columns of their own density."""
    r, c = shape
    p = density * np.exp(rng.standard_normal(r))[:, None]
    if col_bias:
        p = p * np.exp(rng.standard_normal(c))[None, :]
    nz = rng.random(shape) < np.minimum(p, 0.9)
    vals = rng.integers(1, levels + 1, shape) * np.where(rng.random(shape) < 0.6, -1, 1)
    return np.where(nz, vals, 0).astype(np.int64)


def roundtrip(v, rows, chunk=streams.DEFAULT_CHUNK):
    d, data = select.encode_best(v.ravel(), 4, True, chunk, rows=rows, contexts=True)
    streams.validate(d, v.size, LO, HI)
    out = streams.decode(d, data, v.size, np.int32, LO, HI)
    np.testing.assert_array_equal(out, v.ravel())
    return d, data


def test_sparse_matrix_takes_the_lanes_model_and_beats_rowcol():
    q = sparse_matrix(np.random.default_rng(0), (120, 300), 0.03)
    d, data = roundtrip(q, 120)
    assert d == {"coder": "ctx", "length": len(data)} and data[0] == ctx.MODEL_LANES
    d0, data0 = select.encode_best(q.ravel(), 4, True, rows=120)
    assert d0["coder"] in ("rowcol", "cat0")
    new = len(data) + len(msgpack.packb(d))
    old = len(data0) + len(msgpack.packb(d0))
    assert new < 0.95 * old


def test_small_stream_takes_order0_with_a_short_descriptor():
    v = np.random.default_rng(1).integers(-20, 20, 300)
    d, data = roundtrip(v, None)
    assert data[0] == ctx.MODEL_ORDER0
    d0, data0 = select.encode_best(v, 4, True)
    assert d0["coder"] == "cat0"
    # The same table and words; the parameters moved from the header into the stream.
    assert len(data) - len(data0) == ctx.order0_header_bytes(int(v.min()), int(v.max() - v.min() + 1), streams.DEFAULT_CHUNK)
    assert len(msgpack.packb(d)) + 30 < len(msgpack.packb(d0))


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("vsign", [False, True])
@pytest.mark.parametrize("nb,k,d1,d2", [(1, 1, 0, 0), (6, 2, 1, 0), (12, 4, 1, 5), (3, 1, 0, 2), (32, 3, 7, 1)])
def test_every_parameter_combination_round_trips(transpose, vsign, nb, k, d1, d2):
    q = sparse_matrix(np.random.default_rng(nb * 7 + k), (40, 30), 0.2, levels=4)
    plan = sparse.fit(q, transpose, nb, k, d1, d2, vsign, 4096)
    # 4096 symbols per chunk at 30 or 40 steps: several chunks of lanes.
    _, data = ctx.encode_lanes(q, plan, 300)
    out = ctx.decode(data, q.size, np.int64, LO, HI)
    np.testing.assert_array_equal(out, q.ravel())
    assert abs(len(data) - plan.bits / 8) < 0.02 * len(data) + 24


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 30),
    cols=st.integers(1, 40),
    density=st.floats(0.0, 1.0),
    lo=st.integers(-300, 0),
    hi=st.integers(0, 300),
    chunk=st.sampled_from([1, 7, 64, 1 << 20]),
    seed=st.integers(0, 1 << 30),
)
def test_lanes_round_trip_property(rows, cols, density, lo, hi, chunk, seed):
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((rows, cols)) < density, rng.integers(lo, hi + 1, (rows, cols)), 0)
    if not q.any() or q.all():
        return
    transpose = bool(seed & 1)
    steps = rows if transpose else cols
    nb, k = int(rng.integers(1, 33)), int(rng.integers(1, min(steps, 64) + 1))
    d1, d2 = int(rng.integers(0, steps)), int(rng.integers(0, steps))
    plan = sparse.fit(q, transpose, nb, k, d1, d2, bool(seed & 2), chunk)
    _, data = ctx.encode_lanes(q, plan, chunk)
    np.testing.assert_array_equal(ctx.decode(data, q.size, np.int64, lo, hi), q.ravel())


def test_unsigned_and_single_value_streams():
    rng = np.random.default_rng(3)
    u = np.where(rng.random((50, 60)) < 0.1, rng.integers(1, 200, (50, 60)), 0)
    roundtrip(u, 50)
    ones = (rng.random((64, 64)) < 0.05).astype(np.int64)  # one non-zero value: no value tables
    plan = sparse.fit(ones, False, 8, 1, 1, 0, False, 1 << 20)
    assert plan.vfits == []
    _, data = ctx.encode_lanes(ones, plan, 1 << 20)
    np.testing.assert_array_equal(ctx.decode(data, ones.size, np.int32, 0, 1), ones.ravel())
    neg = -ones
    _, data = ctx.encode_lanes(neg, sparse.fit(neg, True, 4, 2, 0, 0, True, 1 << 20), 1 << 20)
    np.testing.assert_array_equal(ctx.decode(data, neg.size, np.int32, -1, 0), neg.ravel())


def test_per_symbol_tables_are_the_fixed_tables():
    """constriction's per-symbol Categorical equals one fixed model per symbol (spec/CODING.md 5.6.2)."""
    rng = np.random.default_rng(4)
    counts = [rng.integers(0, 50, 7) + (np.arange(7) == i) for i in range(3)]
    f = np.array([tables.expand(c) for c in counts], np.float64)
    u = rng.integers(0, 3, 500)
    x = rng.integers(0, 7, 500).astype(np.int32)
    a = constriction.stream.queue.RangeEncoder()
    a.encode(x, constriction.stream.model.Categorical(perfect=False), f[u])
    b = constriction.stream.queue.RangeEncoder()
    for xi, ui in zip(x, u):
        b.encode(np.array([xi], np.int32), constriction.stream.model.Categorical(f[ui], perfect=False))
    np.testing.assert_array_equal(a.get_compressed(), b.get_compressed())
    # and ecnn's encoder, with the cumulative table of each row, writes the same words
    enc = categorical.encoder()
    enc.encode_ctx(categorical.tables_of(f.astype(np.int64)), u, x)
    np.testing.assert_array_equal(categorical.words(enc), a.get_compressed())


def test_sig_bytes_give_the_specified_counts():
    assert sparse.sig_counts(4) == (1 << 23, 1 << 23)
    assert sparse.sig_counts(95) == ((1 << 24) - 1, 1)
    assert sparse.sig_counts(0x80 | 5) == (14107901 >> 1, (1 << 24) - (14107901 >> 1))
    for bad in (0, 3, 96, 127, 0x80, 0xFF):
        with pytest.raises(ValueError):
            sparse.sig_counts(bad)
    # The fit picks the byte nearest the empirical probability.
    sig, _ = sparse.fit_sig_bytes(np.array([990.0, 0.0, 500.0]), np.array([10.0, 5.0, 500.0]))
    c0, c1 = sparse.sig_counts(int(sig[0]))
    assert 0.007 < c1 / (c0 + c1) < 0.013
    assert sparse.sig_counts(int(sig[1]))[1] > (1 << 23) and sparse.sig_counts(int(sig[2])) == (1 << 23, 1 << 23)


def test_buckets_match_the_integer_rule():
    s = np.arange(200)[:, None]
    n1 = np.arange(200)[None, :]
    ok = n1 <= s
    got = sparse.buckets(s, n1, 32)[ok]
    want = np.array([min(31, ((2 * a + 2) // (2 * b + 1)).bit_length() - 1) for a, b in zip(*(i.tolist() for i in np.nonzero(ok)))])
    np.testing.assert_array_equal(got, want)


def _damage(data: bytes, pos: int, value: int) -> bytes:
    b = bytearray(data)
    b[pos] = value
    return bytes(b)


def test_damaged_streams_are_corrupt_and_reserved_values_unsupported():
    q = sparse_matrix(np.random.default_rng(5), (60, 80), 0.05)
    plan = sparse.fit(q, False, 8, 2, 1, 0, True, 1 << 20)
    _, data = ctx.encode_lanes(q, plan, 1 << 20)
    for reserved in (b"\x07" + data[1:], data[:2] + b"\x04" + data[3:]):  # a model, a flag bit (C§5.6)
        with pytest.raises(UnsupportedCoding):
            ctx.decode(reserved, q.size, np.int64, LO, HI)
    bad = [
        data[:-1],  # truncated words
        data + b"\0\0\0\0",  # trailing words
        data[:3] + b"\x00" + data[4:],  # 0 buckets
    ]
    for b in bad:
        with pytest.raises(CorruptPayload):
            ctx.decode(b, q.size, np.int64, LO, HI)
    with pytest.raises(CorruptPayload):
        ctx.decode(data, q.size + 1, np.int64, LO, HI)  # rows no longer divide the count
    with pytest.raises(CorruptPayload):
        ctx.decode(data, q.size, np.int64, -1, 1)  # values outside the symbol range
    with pytest.raises(CorruptPayload):
        ctx.decode(b"", q.size, np.int64, LO, HI)


def test_bad_significance_byte_is_corrupt():
    q = sparse_matrix(np.random.default_rng(6), (20, 20), 0.2)
    plan = sparse.fit(q, False, 2, 1, 0, 0, False, 1 << 20)
    _, data = ctx.encode_lanes(q, plan, 1 << 20)
    head = len(ctx.varint.encode([1, 20, 0, 2, 1, 0, 0, ctx.zigzag(plan.vlo), ctx.zigzag(plan.vhi), 20]))
    with pytest.raises(CorruptPayload):
        ctx.decode(_damage(data, head, 0x7F), q.size, np.int64, LO, HI)


def test_validate_ctx_descriptor():
    streams.validate({"coder": "ctx", "length": 5}, 10, LO, HI)
    with pytest.raises(InvalidField):
        streams.validate({"coder": "ctx", "length": 5}, 0, LO, HI)
    with pytest.raises(InvalidField):
        streams.validate({"coder": "ctx", "length": 0}, 10, LO, HI)
    with pytest.raises(ecnn.errors.UnknownField):
        streams.validate({"coder": "ctx", "length": 5, "nsym": 3}, 10, LO, HI)


def test_files_with_ctx_streams_are_format_1_1_and_format_minor_0_avoids_them():
    rng = np.random.default_rng(7)
    w = (sparse_matrix(rng, (64, 100), 0.05) * 0.01).astype(np.float32)
    cfg = ecnn.EncodeConfig(steps={"w": 0.01})
    data = en.encode({"w": w}, config=cfg)
    c = Container(data)
    assert c.records[0].streams[0]["coder"] == "ctx" and data[10] == 4  # the compact header (1.4) of the default options
    assert codec.minor_version(c.header["tensors"]) == 1  # ctx, a feature of 1.1
    np.testing.assert_array_equal(en.decode(data)["w"], w)
    old = en.encode({"w": w}, config=ecnn.EncodeConfig(steps={"w": 0.01}, format_minor=0))
    assert Container(old).records[0].streams[0]["coder"] != "ctx" and old[10] == 0
    np.testing.assert_array_equal(en.decode(old)["w"], w)
    assert len(data) < len(old)
    with pytest.raises(ecnn.errors.InvalidOption):
        ecnn.EncodeConfig(format_minor=5)


def test_rate_estimate_is_within_one_percent_on_sparse_symbols():
    rng = np.random.default_rng(8)
    for shape, density in (((300, 784), 0.03), ((100, 300), 0.1), ((500, 800), 0.01)):
        q = sparse_matrix(rng, shape, density)
        exact = rate.exact_bytes(q)
        assert abs(rate.estimate_bytes(q) - exact) <= 0.01 * exact


@pytest.mark.parametrize("transpose,vsign,nb,k,d1,d2", [(False, False, 4, 1, 0, 0), (True, True, 9, 3, 2, 1), (False, True, 32, 2, 5, 0)])
def test_reference_decoder_agrees(transpose, vsign, nb, k, d1, d2):
    """tools/ref_decoder.py, written from the spec alone, decodes what the coder writes."""
    import ref_decoder

    q = sparse_matrix(np.random.default_rng(9 + nb), (24, 18), 0.15, levels=3)
    q[3, 4] = 6  # a gap in the non-zero values
    _, data = ctx.encode_lanes(q, sparse.fit(q, transpose, nb, k, d1, d2, vsign, 100), 100)
    assert ref_decoder.decode_ctx({"lo": -8, "hi": 8}, data, q.size) == q.ravel().tolist()
    v = np.random.default_rng(10).integers(-5, 9, 333)
    _, data = select.encode_best(v, 4, True, 50, contexts=True)
    assert data[0] == ctx.MODEL_ORDER0
    assert ref_decoder.decode_ctx({"lo": -8, "hi": 8}, data, v.size) == v.tolist()
    with pytest.raises(ref_decoder.SpecError):
        ref_decoder.decode_ctx({"lo": -4, "hi": 8}, data, v.size)  # alphabet outside the symbol range


def biased_signs(rng, shape):
    """Laplace symbols whose columns lean to one sign, with row and column scales."""
    r, c = shape
    scale = np.exp(rng.standard_normal(r) * 0.5)[:, None] * np.exp(rng.standard_normal(c) * 0.5)[None, :] * 4
    mag = np.rint(np.abs(rng.laplace(0, 1, shape)) * scale).astype(np.int64)
    lean = rng.uniform(0.2, 0.8, c)[None, :]
    return np.where(rng.random(shape) < lean, mag, -mag)


def test_rowcol_model_with_sign_classes():
    import ref_decoder

    q = biased_signs(np.random.default_rng(11), (256, 96))
    _, data = roundtrip(q, 256, chunk=4096)
    assert data[0] == ctx.MODEL_ROWCOL_BLOCKS
    params, _ = ctx.varint.decode(data, 8, 0)
    assert params[6] > 1  # sign classes
    d0, data0 = select.encode_best(q.ravel(), 4, True, 4096, rows=256)
    assert d0["coder"] == "rowcol" and len(data) < len(data0)
    assert ref_decoder.decode_ctx({"lo": LO, "hi": HI}, data, q.size) == q.ravel().tolist()
    # Models 2 (signs in row-major order) and 3 (signs class by class, one per symbol)
    # hold the same tables and decode to the same symbols.
    (sym, vals, plan, offset, n), signs = select.choose(q.ravel(), 4, True, 4096, 256, True).how
    for model in (ctx.MODEL_ROWCOL, ctx.MODEL_ROWCOL_GROUPED):
        _, data2 = ctx.encode_rowcol(sym, vals, plan, offset, n, 4096, signs, model=model)
        assert data2[0] == model and data2[1:24] == data[1:24] and abs(len(data2) - len(data)) <= 8 * 6
        np.testing.assert_array_equal(ctx.decode(data2, q.size, np.int64, LO, HI), q.ravel())
        assert ref_decoder.decode_ctx({"lo": LO, "hi": HI}, data2, q.size) == q.ravel().tolist()


def test_quad_table_follows_the_sign_counts():
    from ecnn.coder import rowcol
    from ecnn.context import tables

    # counts (3, 5): u1 = (512 * 5 + 8) div 16 = 160, u0 = 96; w_d = 96^(4-k) * 160^k.
    k = np.array([bin(d).count("1") for d in range(16)])
    np.testing.assert_array_equal(rowcol.quad_freqs([3, 5]), tables.expand(96 ** (4 - k) * 160**k))
    # A class of one sign only is clamped to 1/256 for the other.
    np.testing.assert_array_equal(rowcol.quad_freqs([0, 9]), tables.expand(1 ** (4 - k) * 255**k))
    np.testing.assert_array_equal(rowcol.quad_freqs([7, 0]), tables.expand(255 ** (4 - k) * 1**k))
    assert int(tables.expand(255 ** (4 - k)).sum()) == (1 << 24) - 16


@pytest.mark.parametrize("rows, cols, chunk", [(257, 96, 4096), (64, 33, 1 << 20), (1000, 7, 700)])
def test_block_order_model_decodes_what_model_3_decodes(rows, cols, chunk):
    """Model 4 codes the same tables in another order: same symbols, sizes within a few words per chunk."""
    import ref_decoder

    rng = np.random.default_rng(rows + cols)
    q = biased_signs(rng, (rows, cols))
    q *= rng.random(q.shape) >= 0.1  # more zeros: sign counts per class and chunk not a multiple of 4
    from ecnn.context import rowcol as rowcol_ctx

    sym, vals, offset, n = np.abs(q).astype(np.int32), q, 0, int(np.abs(q).max()) + 1
    plan = rowcol_ctx.plan(sym, n, q, min(8, rows), min(4, cols))
    from ecnn.context import order0

    cls = rowcol_ctx.sign_classes(q, 3)  # three sign classes, whatever they save
    fits = []
    for g in range(3):
        h = np.array([np.count_nonzero(q[:, cls == g] < 0), np.count_nonzero(q[:, cls == g] > 0)])
        fits.append(order0.fit(h if h.any() else np.array([1, 1])))
    signs = rowcol_ctx.SignPlan(3, cls, fits, order0.fit(np.bincount(cls, minlength=3)), 0.0)
    _, d4 = ctx.encode_rowcol(sym, vals, plan, offset, n, chunk, signs)
    _, d3 = ctx.encode_rowcol(sym, vals, plan, offset, n, chunk, signs, model=ctx.MODEL_ROWCOL_GROUPED)
    assert d4[0] == ctx.MODEL_ROWCOL_BLOCKS and d3[0] == ctx.MODEL_ROWCOL_GROUPED
    nchunks = -(-rows // ctx.varint.decode(d4, 8, 0)[0][7])
    assert abs(len(d4) - len(d3)) <= 8 * nchunks + 16
    for dt in (np.int64, np.int16):
        np.testing.assert_array_equal(ctx.decode(d4, q.size, np.dtype(dt), LO, HI), q.ravel())
    assert ref_decoder.decode_ctx({"lo": LO, "hi": HI}, d4, q.size) == q.ravel().tolist()
    for cut in (1, 4, 9):
        with pytest.raises(CorruptPayload):
            ctx.decode(d4[:-cut], q.size, np.int64, LO, HI)
    with pytest.raises(CorruptPayload):
        ctx.decode(d4 + b"\0\0\0\0", q.size, np.int64, LO, HI)


def test_rowcol_model_unsigned_and_one_sign_class():
    import ref_decoder

    rng = np.random.default_rng(12)
    u = np.abs(biased_signs(rng, (128, 96))) + 3  # no zero, no sign: indices from an offset
    d, data = roundtrip(u, 128)
    assert data[0] == ctx.MODEL_ROWCOL_BLOCKS and ctx.varint.decode(data, 8, 0)[0][6] == 0
    assert ref_decoder.decode_ctx({"lo": LO, "hi": HI}, data, u.size) == u.ravel().tolist()
    q = rng.laplace(0, 3, (64, 80)).round().astype(np.int64)  # no sign lean: one class
    from ecnn.context import rowcol as rowcol_ctx

    m = np.abs(q)
    p = rowcol_ctx.plan(m.astype(np.int32), int(m.max()) + 1, q, 8, 8)
    one = rowcol_ctx.SignPlan(1, np.zeros(80, np.int64), [p.sign_fit], None, 0.0)
    _, data = ctx.encode_rowcol(m.astype(np.int32), q, p, 0, int(m.max()) + 1, 1 << 20, one)
    np.testing.assert_array_equal(ctx.decode(data, q.size, np.int64, LO, HI), q.ravel())
    assert ref_decoder.decode_ctx({"lo": LO, "hi": HI}, data, q.size) == q.ravel().tolist()
    bad = bytearray(data)
    bad[6] = 81  # nsc above the 80 columns
    with pytest.raises(CorruptPayload):
        ctx.decode(bytes(bad), q.size, np.int64, LO, HI)
    with pytest.raises(CorruptPayload):
        ctx.decode(data, q.size, np.int64, -2, 2)  # magnitudes outside the symbol range


def test_lanes_work_is_bounded():
    """K * S (chunks times steps, the decoder's loop) must stay within max(2^16, N div 16)."""
    assert sparse.chunk_lanes_for(4096, 4096, 4096) == 16 and (4096 // 16) * 4096 == sparse.max_lane_steps(4096 * 4096)
    assert sparse.chunk_lanes_for(300, 784, 1 << 20) == 300
    q = sparse_matrix(np.random.default_rng(13), (512, 256), 0.02)
    plan = sparse.fit(q, False, 8, 1, 0, 0, False, 1 << 20)
    _, data = ctx.encode_lanes(q, plan, 1 << 20)
    params, _ = ctx.varint.decode(data, 10, 0)
    assert params[9] == 512  # one chunk
    head = len(ctx.varint.encode(params[:9]))
    tail = data[head + len(ctx.varint.encode(params[9:])) :]
    bad = ctx.varint.encode(params[:9] + [1]) + tail  # 512 chunks of 256 steps: 2^17 > max(2^16, 2^13)
    with pytest.raises(CorruptPayload, match="K \\* S"):
        ctx.decode(bad, q.size, np.int64, LO, HI)
    import ref_decoder

    with pytest.raises(ref_decoder.SpecError, match="K \\* S"):
        ref_decoder.decode_ctx({"lo": LO, "hi": HI}, bad, q.size)


def test_wide_alphabets_skip_the_table_planning(monkeypatch):
    """Weights with nearly every value distinct: more tables cannot pay, so none are planned (that took minutes)."""
    from ecnn.context import rowcol as rowcol_ctx

    rng = np.random.default_rng(21)
    q = np.rint(rng.laplace(0, 60000, (100, 300))).astype(np.int64)
    nsym = int(q.max() - q.min()) + 1
    assert not classes.tables_can_pay(nsym, q.size) and classes.tables_can_pay(255, 384 * 384)

    def no_plans(*a, **k):
        raise AssertionError("rowcol planned for a wide alphabet")

    monkeypatch.setattr(rowcol_ctx, "plan", no_plans)
    d, data = select.encode_best(q.ravel(), 4, True, 1 << 20, rows=100, contexts=True)
    np.testing.assert_array_equal(streams.decode(d, data, q.size, np.int64, LO, HI), q.ravel())


def test_wide_alphabets_plan_fewer_contexts():
    """Merging contexts costs contexts^2 x nsym: byte alphabets try every class count, wider ones fewer, never none."""
    assert classes.affordable_classes(256) == list(classes.ROWCOL_CLASSES)
    for nsym in (4096, 65536, 1 << 20):
        got = classes.affordable_classes(nsym)
        assert got and set(got) <= set(classes.ROWCOL_CLASSES)
        assert all((a + b - 1) ** 2 * nsym <= classes.ROWCOL_PLAN_BINS for a, b in got) or len(got) == 1
    assert len(classes.affordable_classes(65536)) < len(classes.affordable_classes(4096)) < len(classes.ROWCOL_CLASSES)


@pytest.mark.parametrize("ds", [(), (1,), (3,), (2, 5), (1, 40)])
def test_sig_hist_counts_the_contexts_of_sparse_contexts(ds):
    """The compiled significance histogram against sparse.contexts and a bincount; a class out of range raises."""
    from ecnn.context import sparse

    rng = np.random.default_rng(len(ds) * 7 + sum(ds))
    z = (rng.random((37, 29)) < 0.3).astype(np.int64)
    top = int(sparse.bitlen(np.array([2 * z.shape[1]])).max())
    n1 = np.cumsum(z, axis=1) - z
    b = sparse.buckets(np.arange(z.shape[1])[None, :], n1, top + 1)
    for k in (1, 3):
        sc = sparse.step_classes(z, k)
        d1, d2 = (ds + (0, 0))[:2]
        x = sparse.contexts(z, top + 1, k, sc, d1, d2)
        size = 2 * (top + 1) * k * (1 << len(ds))
        want = np.bincount((2 * x + z).ravel(), minlength=size)
        got = sparse.sig_hist(z.astype(np.uint8), b.astype(np.uint8), sc.astype(np.int64), k, ds, size)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        sparse.sig_hist(z.astype(np.uint8), b.astype(np.uint8), np.full(z.shape[1], 3, np.int64), 3, (), size)
    with pytest.raises(ValueError):  # a histogram too short for the contexts
        sparse.sig_hist(z.astype(np.uint8), b.astype(np.uint8), np.zeros(z.shape[1], np.int64), 1, (), 4)


def test_prev_sign_is_the_sign_of_the_last_earlier_nonzero():
    from ecnn.context import sparse

    rng = np.random.default_rng(4)
    for dtype, hi in ((np.int8, 3), (np.int32, 3), (np.int64, 1 << 40)):
        v = (rng.integers(-hi, hi + 1, (13, 31)) * (rng.random((13, 31)) < 0.4)).astype(dtype)
        want = np.zeros(v.shape, np.int64)
        for i in range(v.shape[0]):
            last = 0
            for t in range(v.shape[1]):
                want[i, t] = last
                last = 1 if v[i, t] < 0 else 2 if v[i, t] > 0 else last
        np.testing.assert_array_equal(sparse.prev_sign(v), want)
        np.testing.assert_array_equal(sparse.prev_sign(v.T), sparse.prev_sign(np.ascontiguousarray(v.T)))
        np.testing.assert_array_equal(sparse.prev_sign(v[::3]), want[::3])
