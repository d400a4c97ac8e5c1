"""The compiled range encoder (ecnn._core._rce) against constriction's queue RangeEncoder.

constriction is the oracle: for every table and symbol sequence the words must
be the same, bit for bit (spec/RANGE_CODER.md, section 9). The compiled
decoder (ecnn._core._rc) closes the round trip.
"""

from __future__ import annotations

import threading

import constriction
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecnn._core import _rc, _rce
from ecnn.coder import categorical
from ecnn.context import tables

TOTAL = 1 << 24
M64 = (1 << 64) - 1
INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


# --- helpers -------------------------------------------------------------------------------------------------


def cmodel(freqs):
    return constriction.stream.model.Categorical(np.asarray(freqs, np.float64), perfect=False)


def oracle(segments) -> np.ndarray:
    """constriction's words for ``[(freqs, symbols), ...]``, one encode() call per segment; a segment
    ``(rows, ctx, symbols)`` codes symbol j with row ctx[j] of the 2-D frequencies ``rows``."""
    enc = constriction.stream.queue.RangeEncoder()
    for seg in segments:
        if len(seg[-1]) == 0:
            continue
        if len(seg) == 2:
            enc.encode(np.asarray(seg[1], np.int32), cmodel(seg[0]))
        else:
            rows, ctx, sym = seg
            fam = constriction.stream.model.Categorical(perfect=False)
            enc.encode(np.asarray(sym, np.int32), fam, np.asarray(rows, np.float64)[np.asarray(ctx)])
    return np.asarray(enc.get_compressed(), np.uint32)


def words_of(b: bytes) -> np.ndarray:
    return np.frombuffer(b, "<u4")


def ours(segments) -> np.ndarray:
    """The compiled encoder's words for the segments of :func:`oracle`."""
    enc = _rce.Encoder()
    for seg in segments:
        if len(seg) == 2:
            enc.encode(categorical.table(seg[0]), seg[1])
        else:
            rows, ctx, sym = seg
            enc.encode_ctx(categorical.tables_of(rows), ctx, sym)
    w = words_of(enc.get_words())
    assert enc.num_words() == w.size
    return w


def draw_symbols(rng, freqs, n) -> np.ndarray:
    p = (np.asarray(freqs, np.float64) + 1) / TOTAL
    return rng.choice(len(freqs), size=n, p=p / p.sum()).astype(np.int32)


def roundtrip(words, freqs, sym) -> None:
    out = np.empty(len(sym), np.int64)
    assert _rc.decode_chunk(np.ascontiguousarray(words, np.uint32), categorical.table(freqs), out) is True
    np.testing.assert_array_equal(out, sym)


@st.composite
def counts_st(draw, max_nsym=300):
    n = draw(st.integers(2, max_nsym))
    shape = draw(st.sampled_from(["flat", "skewed", "sparse", "random", "binary-ish"]))
    if shape == "flat":
        c = np.ones(n, np.int64)
    elif shape == "skewed":  # one symbol takes almost everything; the others get 1 / 2^24
        c = np.zeros(n, np.int64)
        c[draw(st.integers(0, n - 1))] = 1 << 30
    elif shape == "sparse":  # most symbols never occur (f_i = 0)
        c = np.zeros(n, np.int64)
        for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5)):
            c[i] += draw(st.integers(1, 1000))
    elif shape == "binary-ish":  # two big symbols: the interval straddles 2^64 often (held-back words)
        c = np.zeros(n, np.int64)
        c[0], c[-1] = draw(st.integers(1, 1000)), draw(st.integers(1, 1000))
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        c = np.random.default_rng(seed).integers(0, 1 << draw(st.integers(1, 31)), n)
        c[0] += 1
    return c


def straddling(enc, cdf) -> int | None:
    """The symbol whose interval holds 2^64 (mod 2^64 the point 0) in the encoder's state, if any: coding it
    keeps the interval across a word boundary, so the encoder holds words back."""
    lower, rng, _ = enc.state()
    q = ((1 << 64) - lower) % (1 << 64) // (rng >> 24)
    if q == 0 or q >= TOTAL:
        return None
    s = int(np.searchsorted(cdf, q, side="right")) - 1
    return s if cdf[s] < q else None  # a boundary exactly at 2^64 straddles nothing


# --- against constriction ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=counts_st(), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1))
def test_one_table_matches_constriction(counts, n, seed):
    f = tables.expand(counts)
    sym = draw_symbols(np.random.default_rng(seed), f, n)
    want = oracle([(f, sym)])
    got = words_of(_rce.encode_chunk(categorical.table(f), sym))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ours([(f, sym)]), want)
    if n:
        roundtrip(got, f, sym)
    else:
        assert got.size == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segs=st.lists(st.tuples(counts_st(40), st.integers(0, 400)), min_size=1, max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_several_tables_in_one_stream(segs, seed):
    """Several encode() calls with different tables on one encoder, as the rowcol and blocks coders do."""
    rng = np.random.default_rng(seed)
    segments = [(tables.expand(c), None) for c, _ in segs]
    segments = [(f, draw_symbols(rng, f, n)) for (f, _), (_, n) in zip(segments, segs)]
    np.testing.assert_array_equal(ours(segments), oracle(segments))


@settings(max_examples=60, deadline=None)
@given(
    nsyms=st.lists(st.integers(2, 40), min_size=1, max_size=4),
    count=st.integers(0, 2000),
    seed=st.integers(0, 2**32 - 1),
    ctx_dtype=st.sampled_from([np.uint8, np.int32, np.int64]),
)
def test_table_per_symbol_matches_constriction(nsyms, count, seed, ctx_dtype):
    """encode_ctx: symbol j with row ctx[j] of a 2-D array, as constriction's model family with per-symbol rows."""
    rng = np.random.default_rng(seed)
    n = max(nsyms)
    rows = np.array([tables.expand(rng.integers(0, 100, n) + (np.arange(n) == 0)) for _ in nsyms])
    ctx = rng.integers(0, len(nsyms), count).astype(ctx_dtype)
    sym = np.array([draw_symbols(rng, rows[t], 1)[0] for t in ctx], np.int32)
    want = oracle([(rows, ctx, sym)])
    np.testing.assert_array_equal(ours([(rows, ctx, sym)]), want)
    # mixed with one-table calls on the same encoder
    head = draw_symbols(rng, rows[0], 17)
    np.testing.assert_array_equal(ours([(rows[0], head), (rows, ctx, sym)]), oracle([(rows[0], head), (rows, ctx, sym)]))


@pytest.mark.parametrize("n", [tables.MAX_NSYM, tables.MAX_NSYM - 1, 70001])
def test_huge_alphabets(n):
    """Alphabets up to MAX_NSYM (2^20), flat and sparse, and a long run of symbols of ~20 bits each."""
    rng = np.random.default_rng(n)
    for counts in (np.ones(n, np.int64), np.where(rng.random(n) < 0.01, rng.integers(1, 1 << 20, n), 0)):
        counts[0] += 1
        f = tables.expand(counts)
        sym = draw_symbols(rng, f, 50_000)
        sym[:5] = [0, n - 1, n // 2, 1, n - 2]  # the ends of the table, whatever their probability
        want = oracle([(f, sym)])
        got = words_of(_rce.encode_chunk(categorical.table(f), sym))
        np.testing.assert_array_equal(got, want)
        roundtrip(got, f, sym)


def test_long_sequences_grow_the_output():
    """A million symbols of ~20 bits (about 650 000 words): the output grows many times over."""
    rng = np.random.default_rng(7)
    f = tables.expand(np.ones(1 << 20, np.int64))
    sym = rng.integers(0, 1 << 20, 1_000_000).astype(np.int32)
    got = words_of(_rce.encode_chunk(categorical.table(f), sym))
    np.testing.assert_array_equal(got, oracle([(f, sym)]))
    assert got.size > 600_000
    # and a long run of almost free symbols: few words
    g = tables.expand(np.array([1, 0, tables.MAX_COUNT]))
    sym = np.full(2_000_000, 2, np.uint8)
    got = words_of(_rce.encode_chunk(categorical.table(g), sym))
    np.testing.assert_array_equal(got, oracle([(g, sym)]))


@settings(max_examples=80, deadline=None)
@given(
    counts=counts_st(64),
    pre=st.integers(0, 50),
    hold=st.integers(1, 40),
    post=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_held_back_words_and_carries(counts, pre, hold, post, seed):
    """Symbols chosen to keep the interval across a word boundary: runs of held-back words, settled with
    and without a carry by the next symbols or by sealing."""
    rng = np.random.default_rng(seed)
    f = tables.expand(counts)
    cdf = categorical.table(f)
    enc = _rce.Encoder()
    sym = list(draw_symbols(rng, f, pre))
    enc.encode(cdf, np.array(sym, np.int32))
    for _ in range(hold):  # a straddling symbol where there is one, else a random one
        s = straddling(enc, cdf)
        sym.append(int(draw_symbols(rng, f, 1)[0]) if s is None else s)
        enc.encode(cdf, np.array(sym[-1:], np.int32))
    tail = draw_symbols(rng, f, post)
    enc.encode(cdf, tail)
    sym = np.array(sym + list(tail), np.int32)
    want = oracle([(f, sym)])
    np.testing.assert_array_equal(words_of(enc.get_words()), want)
    if sym.size:
        roundtrip(want, f, sym)


def test_held_back_runs_are_reached():
    """The construction of the test above does reach long held-back runs and both ways of settling them."""
    f = tables.expand(np.ones(256, np.int64))
    cdf = categorical.table(f)
    settled = set()
    for last in (0, 255):  # the lowest symbol settles without a carry, the highest with one (into >= 5 words)
        enc = _rce.Encoder()
        rng = np.random.default_rng(last)
        sym = []
        while straddling(enc, cdf) is None:  # random symbols until the interval holds 2^64
            sym.append(int(rng.integers(0, 256)))
            enc.encode(cdf, np.array(sym[-1:], np.int32))
        while enc.state()[2] < 5:
            s = straddling(enc, cdf)
            assert s is not None
            sym.append(s)
            enc.encode(cdf, np.array([s], np.int32))
        for _ in range(100):
            if enc.state()[2] == 0:
                break
            sym.append(last)
            enc.encode(cdf, np.array([last], np.int32))
        assert enc.state()[2] == 0
        got = words_of(enc.get_words())
        np.testing.assert_array_equal(got, oracle([(f, np.array(sym))]))
        roundtrip(got, f, np.array(sym))
        rest = 0 if last else 0xFFFFFFFF  # the held words: 0xFFFFFFFF, or 0 after the carry
        settled.add(np.full(4, rest, "<u4").tobytes() in got.tobytes())
    assert settled == {True}


def test_spec_worked_examples():
    """spec/RANGE_CODER.md, section 8: the words of the three worked examples."""
    f = np.array([0, 9, (1 << 24) - 3 - 9])
    cases = [
        ([2, 0, 1, 0, 2], [0x00000B00, 0x0000FFF4, 0x0000006E]),
        ([1, 0], [0x000000FF, 0xFFFFFFFF]),
        ([0, 1, 1, 1, 1, 1], [0x00000000, 0x0000FFFF, 0x09FFF663, 0xFF9FE7FD, 0x00000000]),
    ]
    for sym, want in cases:
        assert words_of(_rce.encode_chunk(categorical.table(f), np.array(sym, np.int32))).tolist() == want
    enc = _rce.Encoder()
    enc.encode(categorical.table(f), np.array([2, 0, 1, 0, 2], np.int8))
    assert enc.state() == (0x0000006DFF920000, 0x09FFF592006E0000, 0)


def test_one_symbol_alphabet_round_trips():
    """n = 1 (outside the spec's tables, which have n >= 2): probability 1, and the decoder agrees."""
    cdf = np.array([0, TOTAL], np.uint32)
    for count in (0, 1, 5, 5000):
        w = words_of(_rce.encode_chunk(cdf, np.zeros(count, np.int32)))
        out = np.empty(count, np.int32)
        assert _rc.decode_chunk(w, cdf, out) is True
        assert not out.any()


def test_get_words_does_not_seal_the_encoder():
    """get_words() seals a copy: encoding goes on as if it had not been called (like get_compressed())."""
    rng = np.random.default_rng(3)
    f = tables.expand(rng.integers(0, 50, 9) + 1)
    cdf = categorical.table(f)
    a, b = draw_symbols(rng, f, 300), draw_symbols(rng, f, 300)
    enc = _rce.Encoder()
    assert enc.get_words() == b"" and enc.num_words() == 0 and enc.state() == (0, M64, 0)
    enc.encode(cdf, a)
    np.testing.assert_array_equal(words_of(enc.get_words()), oracle([(f, a)]))
    enc.encode(cdf, b)
    np.testing.assert_array_equal(words_of(enc.get_words()), oracle([(f, np.concatenate([a, b]))]))
    enc.__init__()  # starts over
    assert enc.get_words() == b"" and enc.state() == (0, M64, 0)


# --- buffers: types and layouts -------------------------------------------------------------------------------


def test_symbol_and_context_types_and_layouts():
    """Every integer type; strided, transposed and misaligned arrays read in C order, as a copy would be."""
    rng = np.random.default_rng(11)
    f = tables.expand(rng.integers(0, 30, 100) + 1)
    cdf = categorical.table(f)
    sym = draw_symbols(rng, f, 4000)
    want = oracle([(f, sym)])
    for dt in INT_DTYPES:
        if np.iinfo(dt).max < 99:
            continue
        np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, sym.astype(dt))), want)
        np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf.astype(np.int32), sym.astype(dt))), want)
    m = sym.reshape(40, 100)
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, m)), want)  # 2-D, C order
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, np.asfortranarray(m))), want)
    t = np.ascontiguousarray(m.T).T  # a transposed view
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, t)), want)
    wide = np.zeros(8000, np.int64)
    wide[::2] = sym
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, wide[::2])), want)  # strided
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, sym[::-1][::-1])), want)
    raw = np.zeros(4 * sym.size + 1, np.uint8)
    mis = raw[1:].view(np.int32)  # misaligned int32
    mis[:] = sym
    assert mis.ctypes.data % 4
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, mis)), want)
    raw_c = np.zeros(4 * cdf.size + 1, np.uint8)
    mis_c = raw_c[1:].view(np.uint32)  # misaligned table
    mis_c[:] = cdf
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(mis_c, sym)), want)
    tall = np.zeros((cdf.size, 3), np.uint32)
    tall[:, 1] = cdf
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(tall[:, 1], sym)), want)  # strided table
    np.testing.assert_array_equal(words_of(_rce.encode_chunk(cdf, memoryview(sym.tobytes()).cast("i"))), want)
    # contexts of any type and layout, and a non-contiguous 2-D table array
    rows = np.array([f, tables.expand(rng.integers(0, 30, 100) + 1)])
    ctx = rng.integers(0, 2, sym.size)
    want = oracle([(rows, ctx, sym)])
    cdfs = categorical.tables_of(rows)
    for dt in INT_DTYPES:
        enc = _rce.Encoder()
        enc.encode_ctx(cdfs, ctx.astype(dt), sym)
        np.testing.assert_array_equal(words_of(enc.get_words()), want)
    enc = _rce.Encoder()
    enc.encode_ctx(np.asfortranarray(cdfs), np.repeat(ctx, 3)[::3], wide[::2])
    np.testing.assert_array_equal(words_of(enc.get_words()), want)


def test_words_are_little_endian_bytes():
    f = tables.expand(np.array([5, 1, 1]))
    b = _rce.encode_chunk(categorical.table(f), np.array([0, 2, 1, 0] * 50, np.int32))
    assert isinstance(b, bytes) and len(b) % 4 == 0
    w = oracle([(f, np.array([0, 2, 1, 0] * 50))])
    assert b == w.astype("<u4").tobytes()


def test_bad_buffer_types_raise_type_error():
    cdf = categorical.table(tables.expand(np.array([1, 1, 1])))
    sym = np.array([0, 1, 2], np.int32)
    enc = _rce.Encoder()
    for bad in (sym.astype(np.float64), sym.astype(bool), sym.astype(">i4"), "abc", 3, None, [0, 1]):
        with pytest.raises(TypeError):
            enc.encode(cdf, bad)
    for bad in (cdf.astype(np.int64), cdf.astype(np.uint16), cdf.astype(np.float32), cdf.astype(">u4"), None):
        with pytest.raises(TypeError):
            enc.encode(bad, sym)
    with pytest.raises(TypeError):
        enc.encode_ctx(cdf[None, :], np.zeros(3, np.float32), sym)
    with pytest.raises(TypeError):
        _rce.encode_chunk(cdf, sym.astype(np.float32))
    with pytest.raises(TypeError):
        _rce.Encoder(1)
    assert enc.get_words() == b""


def test_bad_values_raise_value_error_and_encode_nothing():
    f = tables.expand(np.array([3, 0, 5, 1]))
    cdf = categorical.table(f)
    enc = _rce.Encoder()
    good = np.array([0, 2, 3, 1, 2] * 300, np.int32)
    enc.encode(cdf, good)
    before, state = enc.get_words(), enc.state()

    def rejected(call, *args, match):
        with pytest.raises(ValueError, match=match):
            call(*args)
        assert enc.get_words() == before and enc.state() == state

    for bad_sym in (-1, 4, 1 << 40):
        s = good.astype(np.int64).copy()
        s[1234] = bad_sym  # after the output has grown: the words so far are dropped again
        rejected(enc.encode, cdf, s, match="symbol 1234 is outside")
    u = np.array([0, 1, 2], np.uint64)
    u[2] = np.uint64(1 << 63)
    rejected(enc.encode, cdf, u, match="symbol 2 is outside")
    zero = cdf.copy()
    zero[2] = zero[1]  # symbol 1 gets probability 0
    rejected(enc.encode, zero, good, match="symbol 3 has no probability")
    over = cdf.copy()
    over[4] = TOTAL + 1  # an interval past 2^24
    rejected(enc.encode, over, np.array([0, 3], np.int32), match="symbol 1 has no probability")
    down = cdf.copy()
    down[1], down[2] = down[2], down[1]  # not increasing
    rejected(enc.encode, down, np.array([1], np.int32), match="symbol 0 has no probability")
    neg = cdf.astype(np.int32)
    neg[2] = -5
    rejected(enc.encode, neg, np.array([2], np.int32), match="symbol 0 has no probability")
    rejected(enc.encode, np.array([0], np.uint32), good, match="at least two entries")
    rejected(enc.encode, np.stack([cdf, cdf]), good, match="1-D")
    rejected(enc.encode_ctx, cdf, np.zeros(good.size, np.int32), good, match="2-D")
    cdfs = np.stack([cdf, cdf])
    rejected(enc.encode_ctx, cdfs, np.zeros(3, np.int32), good, match="3 contexts")
    for bad_ctx in (2, -1):
        ctx = np.zeros(good.size, np.int64)
        ctx[700] = bad_ctx
        rejected(enc.encode_ctx, cdfs, ctx, good, match="context of symbol 700")
    s = good.copy()
    s[9] = 4
    rejected(enc.encode_ctx, cdfs, np.zeros(good.size, np.int8), s, match="symbol 9 is outside")
    with pytest.raises(ValueError, match="symbol 0 is outside"):
        _rce.encode_chunk(cdf, np.array([7], np.int32))
    # and the encoder still works
    enc.encode(cdf, good)
    np.testing.assert_array_equal(words_of(enc.get_words()), oracle([(f, np.concatenate([good, good]))]))


def test_threads():
    """The loop runs without the GIL: encoders in several threads give the same words as one at a time."""
    rng = np.random.default_rng(5)
    f = tables.expand(rng.integers(0, 1000, 300) + 1)
    cdf = categorical.table(f)
    syms = [draw_symbols(rng, f, 200_000) for _ in range(4)]
    want = [_rce.encode_chunk(cdf, s) for s in syms]
    got = [None] * 4

    def one(i):
        enc = _rce.Encoder()
        for part in np.array_split(syms[i], 7):
            enc.encode(cdf, part)
        got[i] = enc.get_words()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_one_encoder_in_two_threads_is_refused_or_serialised():
    """Sharing an encoder between threads never corrupts it: a call that overlaps another raises RuntimeError."""
    rng = np.random.default_rng(6)
    f = tables.expand(rng.integers(0, 1000, 300) + 1)
    cdf = categorical.table(f)
    sym = draw_symbols(rng, f, 300_000)
    enc = _rce.Encoder()
    done, refused = [], []

    def one():
        try:
            enc.encode(cdf, sym)
            done.append(1)
        except RuntimeError:
            refused.append(1)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) + len(refused) == 3 and done
    np.testing.assert_array_equal(words_of(enc.get_words()), oracle([(f, np.tile(sym, len(done)))]))
