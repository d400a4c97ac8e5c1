"""The rowcol stream coder (ecnn/context/rowcol.py, ecnn/coder/rowcol.py).

Includes an independent decoder written from spec/CODING.md section 5.5 on
top of the pure-Python range decoder (tools/ref_range_decoder.py).
"""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ecnn
import ecnn.numpy as en
from ecnn import select
from ecnn.coder import streams
from ecnn.select import classes
from ecnn._core import _hist
from ecnn.context import order0
from ecnn.context import rowcol as ctx
from ecnn.errors import CorruptPayload, InvalidField
from ref_range_decoder import RangeDecoder, cdf_from_freqs


def scaled_matrix(rows, cols, seed=0, spread=0.7, dtype=np.float32):
    rng = np.random.default_rng(seed)
    rs = np.exp(rng.standard_normal(rows) * spread)
    cs = np.exp(rng.standard_normal(cols) * spread)
    return (rng.standard_normal((rows, cols)) * rs[:, None] * cs[None, :]).astype(dtype)


def _stream(q, rows, chunk=streams.DEFAULT_CHUNK):
    desc, data = select.encode_best(q.ravel(), 4, True, chunk, rows=rows)
    return desc, data


def test_rowcol_beats_order0_on_scaled_matrices():
    w = scaled_matrix(300, 200)
    q = np.rint(w / (np.abs(w).max() / 127)).astype(np.int32)
    desc, data = _stream(q, 300)
    assert desc["coder"] == "rowcol" and desc["signs"]
    cat0_desc, cat0_data = select.encode_best(q.ravel(), 4, True)
    assert cat0_desc["coder"] == "cat0"
    assert len(data) < 0.95 * len(cat0_data)
    out = streams.decode(desc, data, q.size, np.int32, -(1 << 24), 1 << 24)
    np.testing.assert_array_equal(out, q.ravel())


@settings(max_examples=20)
@given(st.integers(8, 70), st.integers(8, 70), st.integers(0, 2**31), st.sampled_from([4096, 1 << 20]), st.booleans())
def test_rowcol_roundtrip(rows, cols, seed, chunk, signed):
    w = scaled_matrix(rows, cols, seed) * 40
    q = np.rint(w).astype(np.int32)
    if not signed:
        q = np.abs(q)
    if q.size < select.stream.ROWCOL_MIN_COUNT:
        q = np.tile(q, (select.stream.ROWCOL_MIN_COUNT // q.size + 1, 1))
    r = q.shape[0]
    desc, data = _stream(q, r, chunk)
    out = streams.decode(desc, data, q.size, np.int32, -(1 << 24), 1 << 24)
    np.testing.assert_array_equal(out, q.ravel())
    if desc["coder"] == "rowcol":
        streams.validate(desc, q.size, -(1 << 24), 1 << 24)
        assert desc["signs"] == bool(signed and q.min() < 0)


def test_multi_chunk_rowcol_through_the_api():
    w = scaled_matrix(400, 64, seed=3)
    f = ecnn.open(en.encode({"w": w}, config=ecnn.EncodeConfig(bits=6, chunk=4096, per_row=False, format_minor=0)))
    d = f._c.records[0].streams[0]
    assert d["coder"] == "rowcol" and d["chunk_rows"] == 64 and -(-400 // 64) == 7
    out = f.get_array("w")[0]
    assert np.abs(out - w).max() <= f.info("w").step / 2 * (1 + 1e-6)


def test_unsigned_int_tensor_uses_rowcol_without_signs():
    q = np.abs(np.rint(scaled_matrix(256, 64, seed=5) * 20)).astype(np.uint8)
    f = ecnn.open(en.encode({"q": q}, lossless=True))
    rec = f._c.records[0]
    assert rec.repr["kind"] == "int" and rec.streams[0]["coder"] == "rowcol" and not rec.streams[0]["signs"]
    np.testing.assert_array_equal(f.get_array("q")[0], q)


def test_merge_contexts_groups_adjacent_contexts():
    rng = np.random.default_rng(0)
    a = np.bincount(rng.geometric(0.3, 5000), minlength=40)[:40]
    b = np.bincount(rng.geometric(0.05, 5000), minlength=40)[:40]
    hist = np.stack([a, a, a, b, b, np.zeros(40, np.int64)])
    table_of = ctx.merge_contexts(hist)
    assert table_of.tolist()[:5] == [0, 0, 0, 1, 1] and table_of[5] in (1, 2)
    assert table_of[0] == 0 and set(np.diff(table_of)) <= {0, 1}


def _table_cost_in_floats(hist):
    """The encoder's merge cost (ecnn.context.rowcol.merge_contexts), computed plainly in float64."""
    h = hist.astype(np.float64)
    n = h.sum(axis=-1)
    ent = n * np.log2(np.maximum(n, 1.0)) - (h * np.log2(np.maximum(h, 1.0))).sum(axis=-1)
    scale = np.minimum(1.0, 1024.0 / np.maximum(n, 1.0))
    table = 8.0 * (h.shape[-1] + np.count_nonzero(h * scale[..., None] >= 127.5, axis=-1))
    return ent * 1.01 + table + 8.0


def _merge_in_floats(hist):
    """The dynamic programme of merge_contexts over the plain float64 costs: the table of each context."""
    k = hist.shape[0]
    cum = np.concatenate([np.zeros((1, hist.shape[1]), np.int64), np.cumsum(hist, axis=0)])
    best, back = np.zeros(k + 1), np.zeros(k + 1, np.int64)
    for b in range(1, k + 1):
        c = best[:b] + _table_cost_in_floats(cum[b] - cum[:b])
        back[b] = int(np.argmin(c))  # the first of equal ones
        best[b] = c[back[b]]
    starts, b = [], k
    while b > 0:
        starts.append(back[b])
        b = back[b]
    return np.searchsorted(np.array(sorted(starts)), np.arange(k), side="right") - 1


@pytest.mark.parametrize("top", [3, 300, 1 << 17, 1 << 24])  # small counts from the table, large ones computed
def test_merges_follow_the_float_formula(top):
    rng = np.random.default_rng(top)
    for k, nsym in ((1, 5), (7, 37), (40, 37), (127, 9)):
        hist = rng.integers(0, top, (k, nsym)) * (rng.random((k, nsym)) < rng.random((k, 1)))
        hist[min(1, k - 1)] = 0  # an empty context
        if k > 3:
            hist[2, :] = 0
            hist[2, :3] = [127, 128, 1]  # a total below 1024: counts of 128 and more take 2 bytes
        for weight in (1, 3):
            np.testing.assert_array_equal(ctx.merge_contexts(hist, weight), _merge_in_floats(hist * weight))


def test_merge_rejects_negative_counts_and_bad_shapes():
    with pytest.raises(ValueError):
        ctx.merge_contexts(np.array([[1, -1], [2, 2]]))
    with pytest.raises(ValueError):
        ctx.merge_contexts(np.ones((2, 2), np.int64), 0)
    assert ctx.merge_contexts(np.zeros((0, 3), np.int64)).size == 0


def test_bad_table_map_is_corrupt_payload():
    w = scaled_matrix(128, 64, seed=1)
    q = np.rint(w / (np.abs(w).max() / 127)).astype(np.int32)
    desc, data = _stream(q, 128)
    assert desc["coder"] == "rowcol" and desc["nrc"] > 1
    # Find the map: skip the class streams, then set the first map entry to 1.
    pos = _skip_class_streams(desc, data)
    bad = data[:pos] + bytes([1]) + data[pos + 1 :]
    with pytest.raises(CorruptPayload):
        streams.decode(desc, bad, q.size, np.int32, -(1 << 24), 1 << 24)


@pytest.mark.parametrize(
    "change, err",
    [
        ({"rows": 7}, InvalidField),
        ({"nrc": 65}, InvalidField),
        ({"signs": 1}, InvalidField),
        ({"offset": 3}, InvalidField),
        ({"chunk_rows": 0}, InvalidField),
        ({"length": 3}, InvalidField),
    ],
)
def test_rowcol_descriptor_checks(change, err):
    w = scaled_matrix(128, 64, seed=1)
    q = np.rint(w / (np.abs(w).max() / 127)).astype(np.int32)
    desc, _ = _stream(q, 128)
    with pytest.raises(err):
        streams.validate(dict(desc, **change), q.size, -(1 << 24), 1 << 24)


# --- an independent decoder, from spec/CODING.md 5.5, 6, 7 and RANGE_CODER.md ---


def _varints(buf, n, pos):
    out = []
    for _ in range(n):
        v = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append(v)
    return out, pos


def _table(buf, n, pos):
    """A stored table (spec/CODING.md section 7.1): mode 0 varints, mode 1 nibble-coded log codes."""
    (mode,), pos = _varints(buf, 1, pos)
    if mode == 0:
        return _varints(buf, n, pos)
    assert mode == 1
    (m,), pos = _varints(buf, 1, pos)
    nibbles = []
    k = pos
    while len(nibbles) < 4 * n + 1 and k < len(buf):
        nibbles += [buf[k] >> 4, buf[k] & 15]
        k += 1
    codes, e, i = [], 0, 0
    for _ in range(n):
        z = nibbles[i]
        i += 1
        if z == 15:
            z = 15 + (nibbles[i] << 8 | nibbles[i + 1] << 4 | nibbles[i + 2])
            i += 3
        e += z // 2 if z % 2 == 0 else -(z + 1) // 2
        codes.append(e)
    counts = [0 if e == 0 else ((1 << m) + ((e - 1) % (1 << m))) << ((e - 1) >> m) for e in codes]
    return counts, pos + (i + 1) // 2


def _expand(c):
    n, total = len(c), sum(c)
    free = (1 << 24) - n
    f = [ci * free // total for ci in c]
    f[c.index(max(c))] += free - sum(f)
    return f


def _words(buf, pos, n):
    return list(struct.unpack_from(f"<{n}I", buf, pos)), pos + 4 * n


def _class_stream(buf, pos, k, n):
    counts, pos = _table(buf, k, pos)
    (w,), pos = _varints(buf, 1, pos)
    words, pos = _words(buf, pos, w)
    dec = RangeDecoder(words)
    cdf = cdf_from_freqs(_expand(counts))
    return [dec.decode_symbol(cdf) for _ in range(n)], pos


def _skip_class_streams(d, buf):
    pos = 0
    if d["nrc"] > 1:
        _, pos = _class_stream(buf, pos, d["nrc"], d["rows"])
    if d["ncc"] > 1:
        _, pos = _class_stream(buf, pos, d["ncc"], d["cols"])
    return pos


def reference_decode(d, buf):
    rows, cols = d["rows"], d["cols"]
    pos = 0
    r = [0] * rows
    c = [0] * cols
    if d["nrc"] > 1:
        r, pos = _class_stream(buf, pos, d["nrc"], rows)
    if d["ncc"] > 1:
        c, pos = _class_stream(buf, pos, d["ncc"], cols)
    m, pos = _varints(buf, d["nrc"] + d["ncc"] - 1, pos)
    cdfs = []
    for _ in range(m[-1] + 1):
        counts, pos = _table(buf, d["nsym"], pos)
        cdfs.append(cdf_from_freqs(_expand(counts)))
    if d["signs"]:
        sc, pos = _table(buf, 2, pos)
        sign_cdf = cdf_from_freqs(_expand(sc))
    k = -(-rows // d["chunk_rows"])
    nw, pos = _varints(buf, k, pos)
    out = [0] * (rows * cols)
    for j in range(k):
        words, pos = _words(buf, pos, nw[j])
        dec = RangeDecoder(words)
        a, b = j * d["chunk_rows"], min(rows, (j + 1) * d["chunk_rows"])
        elems = [(i, jj) for i in range(a, b) for jj in range(cols)]
        for t in range(len(cdfs)):
            for i, jj in elems:
                if m[r[i] + c[jj]] == t:
                    out[i * cols + jj] = dec.decode_symbol(cdfs[t])
        if d["signs"]:
            for i, jj in elems:
                if out[i * cols + jj] and dec.decode_symbol(sign_cdf) == 0:
                    out[i * cols + jj] = -out[i * cols + jj]
        else:
            for i, jj in elems:
                out[i * cols + jj] += d["offset"]
    assert pos == len(buf)
    return out


@pytest.mark.parametrize("signed", [True, False])
def test_reference_decoder_agrees(signed):
    from ecnn.coder import rowcol as coder

    q = np.rint(scaled_matrix(96, 48, seed=11, spread=1.0) * 8).astype(np.int64)
    if signed:
        sym, vals, offset, nsym = np.abs(q), q, 0, int(np.abs(q).max()) + 1
    else:
        q = np.abs(q) + 3
        sym, vals, offset, nsym = q - q.min(), None, int(q.min()), int(q.max() - q.min()) + 1
    plan = ctx.plan(sym.astype(np.int32), nsym, vals, 8, 4)
    desc, data = coder.encode(sym.astype(np.int32), vals, plan, offset, nsym, chunk=1000)
    streams.validate(desc, q.size, -(1 << 24), 1 << 24)
    assert desc["signs"] == signed and -(-96 // desc["chunk_rows"]) > 1  # several chunks
    assert reference_decode(desc, data) == q.ravel().tolist()
    np.testing.assert_array_equal(streams.decode(desc, data, q.size, np.int64, -(1 << 24), 1 << 24), q.ravel())


@pytest.mark.parametrize("shape", [(300, 200), (64, 48), (20, 600), (1000, 7)])
@pytest.mark.parametrize("signed", [True, False])
def test_plans_count_the_contexts_of_every_element(shape, signed):
    """The compiled histogram and sums give the plan that plain numpy counts give; strided samples too."""
    rng = np.random.default_rng(sum(shape))
    r, c = shape
    scale = np.exp(rng.standard_normal(r) * 0.7)[:, None] * np.exp(rng.standard_normal(c) * 0.7)[None, :] * 3
    vals = np.rint(rng.laplace(0, 1, shape) * scale).astype(np.int64)
    mag = np.abs(vals).astype(np.int32)
    values = vals if signed else None
    n = int(mag.max()) + 1
    for stride in (1, 3):
        m, v = mag[::stride], None if values is None else values[::stride]
        sc = ctx.scales_of(m, v)
        np.testing.assert_array_equal(sc.rows, m.sum(axis=1, dtype=np.int64) / m.shape[1] + 0.5)
        np.testing.assert_array_equal(sc.cols, m.sum(axis=0, dtype=np.int64) / m.shape[0] + 0.5)
        for nrc, ncc in classes.ROWCOL_CLASSES + ((2, 64), (3, 5)):
            nrc, ncc = min(nrc, m.shape[0]), min(ncc, c)
            a = ctx.plan(m, n, v, nrc, ncc, stride)
            assert ctx.plan(m, n, v, nrc, ncc, stride, sc).bits == a.bits
            cx = a.rclass[:, None] + a.cclass[None, :]
            hist = np.bincount((cx * n + m).ravel(), minlength=(nrc + ncc - 1) * n).reshape(-1, n) * stride
            np.testing.assert_array_equal(a.table_of, ctx.merge_contexts(hist))
            tables = [hist[a.table_of == t].sum(axis=0) for t in range(len(a.fits))]
            assert [f.counts.tolist() for f in a.fits] == [order0.fit(h).counts.tolist() for h in tables]
            assert (a.sign_fit is None) == (not signed)


def test_context_hist_checks_its_inputs():
    sym = np.arange(12, dtype=np.int32).reshape(3, 4) % 5
    h = np.zeros(3 * 5, np.int64)
    _hist.context_hist(sym, np.array([0, 1, 0]), np.array([0, 0, 1, 1]), 5, h)
    assert h.sum() == 12
    with pytest.raises(ValueError):  # a symbol outside 0..nsym-1
        _hist.context_hist(sym, np.array([0, 1, 0]), np.array([0, 0, 1, 1]), 4, np.zeros(12, np.int64))
    with pytest.raises(ValueError):  # a context outside the histogram
        _hist.context_hist(sym, np.array([0, 2, 0]), np.array([0, 0, 1, 1]), 5, h)
    with pytest.raises(ValueError):  # a negative class
        _hist.context_hist(sym, np.array([0, -1, 0]), np.array([0, 0, 1, 1]), 5, h)
    with pytest.raises(TypeError):  # columns not contiguous
        _hist.context_hist(sym[:, ::2], np.array([0, 1, 0]), np.array([0, 0]), 5, h)
    with pytest.raises(TypeError):
        _hist.context_hist(sym.astype(np.int64), np.array([0, 1, 0]), np.array([0, 0, 1, 1]), 5, h)


@pytest.mark.parametrize("nsym", [2, 9])
def test_cell_entropy_bounds_every_plan_from_below(nsym):
    rng = np.random.default_rng(nsym)
    scale = np.exp(rng.standard_normal(150) * 0.5)[:, None] * np.exp(rng.standard_normal(90) * 0.5)[None, :]
    sym = np.minimum(rng.exponential(scale * nsym / 4), nsym - 1).astype(np.int32)
    least = ctx.cell_entropy_bits(sym, nsym)
    assert least > 0
    for nrc, ncc in classes.ROWCOL_CLASSES + ((1, 1), (2, 4)):
        p = ctx.plan(sym, nsym, None, nrc, ncc)
        assert sum(f.symbol_bits for f in p.fits) >= least
    assert order0.fit(np.bincount(sym.ravel(), minlength=nsym)).symbol_bits >= least


def test_classes_divide_down_from_the_finest_and_entropy_is_the_plain_sum():
    rng = np.random.default_rng(9)
    for scale in (np.exp(rng.standard_normal(500) * 2), np.full(40, 3.0), rng.integers(1, 5, 300) + 0.5):
        sc = ctx.Scales(scale, scale[:7], 0, 0)
        for n in (1, 2, 3, 4, 5, 8, 16, 32, 64):
            np.testing.assert_array_equal(sc.classes(0, n), ctx.classes(scale, n))
            np.testing.assert_array_equal(sc.classes(1, n), ctx.classes(scale[:7], n))
    hist = rng.integers(0, 1 << 18, (9, 33)) * (rng.random((9, 33)) < 0.5)
    hist[3] = 0
    h = hist.astype(np.float64)
    n = h.sum(axis=1)
    plain = (n * np.log2(np.maximum(n, 1.0))).sum() - (h * np.log2(np.maximum(h, 1.0))).sum()
    assert ctx.entropy_bits(hist) == pytest.approx(plain, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_context_counts_read_bytes_words_and_int32_alike(dtype):
    rng = np.random.default_rng(2)
    sym = rng.integers(0, 200, (50, 70)).astype(dtype)
    rc, cc = rng.integers(0, 4, 50), rng.integers(0, 3, 70)
    got = np.zeros(6 * 200, np.int64)
    _hist.context_hist(sym[::2], np.ascontiguousarray(rc[::2]), cc, 200, got)
    want = np.bincount(((rc[::2, None] + cc[None, :]) * 200 + sym[::2].astype(np.int64)).ravel(), minlength=6 * 200)
    np.testing.assert_array_equal(got, want)
    rs, cs = np.empty(25, np.int64), np.empty(70, np.int64)
    _hist.axis_sums(sym[::2], rs, cs)
    np.testing.assert_array_equal(rs, sym[::2].sum(axis=1, dtype=np.int64))
    np.testing.assert_array_equal(cs, sym[::2].sum(axis=0, dtype=np.int64))
