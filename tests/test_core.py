"""The compiled range decoder (ecnn._core._rc) against constriction's encoder and tools/ref_range_decoder.py.

constriction encodes and is the oracle for the symbols and for the end-of-chunk
check (``maybe_exhausted``); the reference decoder, written from
spec/RANGE_CODER.md alone, is the oracle for the decoder state, for damaged
words and for the worked examples of the spec.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import constriction
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ecnn._core import _rc
from ecnn.coder import categorical
from ecnn.context import tables

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ref_range_decoder as ref  # noqa: E402

TOTAL = 1 << 24
M64 = (1 << 64) - 1


# --- helpers -------------------------------------------------------------------------------------------------


def freqs_of(counts) -> np.ndarray:
    return tables.expand(np.asarray(counts, np.int64))


def cmodel(freqs):
    return constriction.stream.model.Categorical(np.asarray(freqs, np.float64), perfect=False)


def encode(segments) -> np.ndarray:
    """One constriction stream of ``[(freqs, symbols), ...]``, one encode() call per segment."""
    enc = constriction.stream.queue.RangeEncoder()
    for f, s in segments:
        if len(s):
            enc.encode(np.asarray(s, np.int32), cmodel(f))
    return np.asarray(enc.get_compressed(), np.uint32)


def draw_symbols(rng, freqs, n) -> np.ndarray:
    p = (np.asarray(freqs, np.float64) + 1) / TOTAL
    return rng.choice(len(freqs), size=n, p=p / p.sum()).astype(np.int32)


def c_decode(words, freqs, n, dtype=np.int32):
    dec = _rc.Decoder(words)
    out = dec.decode(categorical.table(freqs), np.empty(n, dtype))
    return out, dec


@st.composite
def counts_st(draw, max_nsym=300):
    n = draw(st.integers(2, max_nsym))
    shape = draw(st.sampled_from(["flat", "skewed", "sparse", "random"]))
    if shape == "flat":
        c = np.ones(n, np.int64)
    elif shape == "skewed":  # one symbol takes almost everything
        c = np.ones(n, np.int64)
        c[draw(st.integers(0, n - 1))] = 1 << 30
    elif shape == "sparse":  # most symbols never occur (f_i = 0)
        c = np.zeros(n, np.int64)
        for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5)):
            c[i] += draw(st.integers(1, 1000))
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        c = np.random.default_rng(seed).integers(0, 1 << draw(st.integers(1, 31)), n)
        c[0] += 1
    return c


# --- against constriction ------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=counts_st(), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1))
def test_one_table_matches_constriction(counts, n, seed):
    f = freqs_of(counts)
    sym = draw_symbols(np.random.default_rng(seed), f, n)
    words = encode([(f, sym)])
    out, dec = c_decode(words, f, n)
    np.testing.assert_array_equal(out, sym)
    cdec = constriction.stream.queue.RangeDecoder(words)
    cdec.decode(cmodel(f), n)
    assert dec.exhausted() is True and cdec.maybe_exhausted()
    ok = np.empty(n, np.int64)
    assert _rc.decode_chunk(words, categorical.table(f), ok) is True
    np.testing.assert_array_equal(ok, sym)


@settings(max_examples=60, deadline=None)
@given(
    nsyms=st.lists(st.integers(2, 40), min_size=1, max_size=4),
    nctx=st.integers(0, 2000),
    seed=st.integers(0, 2**32 - 1),
)
def test_table_per_symbol_matches_constriction(nsyms, nctx, seed):
    """decode_ctx: symbol j with row ctx[j] of a 2-D array, as constriction's model family with per-symbol rows."""
    rng = np.random.default_rng(seed)
    n = max(nsyms)
    rows = np.array([tables.expand(rng.integers(0, 100, n) + (np.arange(n) == 0)) for _ in nsyms])
    ctx = rng.integers(0, len(nsyms), nctx)
    sym = np.array([draw_symbols(rng, rows[t], 1)[0] for t in ctx], np.int32)
    enc = constriction.stream.queue.RangeEncoder()
    if nctx:
        enc.encode(sym, constriction.stream.model.Categorical(perfect=False), rows[ctx].astype(np.float64))
    words = np.asarray(enc.get_compressed(), np.uint32)
    for ctx_dtype in (np.uint8, np.int32, np.int64):
        dec = _rc.Decoder(words)
        out = dec.decode_ctx(categorical.tables_of(rows), ctx.astype(ctx_dtype), np.empty(nctx, np.int32))
        np.testing.assert_array_equal(out, sym)
        assert dec.exhausted()


def test_huge_alphabet():
    """2^20 symbols, flat and skewed tables: the binary search and the lookup table over a large table."""
    rng = np.random.default_rng(1)
    n = tables.MAX_NSYM
    for counts in (np.ones(n, np.int64), rng.integers(0, 4, n) * (rng.random(n) < 0.1) + (np.arange(n) == 7)):
        f = freqs_of(counts)
        for count in (5, 300_000):  # below and above the size where a lookup table pays
            sym = rng.integers(0, n, count).astype(np.int32) if counts.max() == 1 else draw_symbols(rng, f, count)
            out, dec = c_decode(encode([(f, sym)]), f, count)
            np.testing.assert_array_equal(out, sym)
            assert dec.exhausted()


def test_binary_alphabet_extremes():
    """Two symbols, one with f = 0: the smallest probability 1 / 2^24 in long runs."""
    for f in ([0, TOTAL - 2], [TOTAL - 2, 0], [(TOTAL - 2) // 2, (TOTAL - 2) // 2]):
        sym = np.zeros(5000, np.int32) + (0 if f[0] else 1)
        sym[::997] = 1 - sym[::997]
        out, dec = c_decode(encode([(f, sym)]), f, sym.size)
        np.testing.assert_array_equal(out, sym)
        assert dec.exhausted()


def test_segments_share_one_stream():
    """Several tables one after the other on one decoder, as rowcol decodes table by table."""
    rng = np.random.default_rng(2)
    segs = []
    for n in (2, 17, 300, 2, 5000):
        f = freqs_of(rng.integers(0, 50, n) + 1)
        segs.append((f, draw_symbols(rng, f, int(rng.integers(0, 900)))))
    words = encode(segs)
    dec = _rc.Decoder(words)
    for f, s in segs:
        np.testing.assert_array_equal(dec.decode(categorical.table(f), np.empty(len(s), np.int32)), s)
    assert dec.exhausted()
    assert ref.decode_segments([int(w) for w in words], [(list(map(int, f)), len(s)) for f, s in segs]) == list(
        np.concatenate([s for _, s in segs])
    )


@pytest.mark.parametrize("chunk", [1, 7, 1000, 4096])
def test_chunk_boundaries(chunk):
    rng = np.random.default_rng(chunk)
    f = freqs_of(rng.integers(0, 1000, 50))
    sym = draw_symbols(rng, f, 4096 + 3)
    chunks = categorical.encode(sym, f, chunk)
    cdf = categorical.table(f)
    got = np.concatenate([categorical.decode_chunk(w, cdf, min(chunk, sym.size - i * chunk)) for i, w in enumerate(chunks)])
    np.testing.assert_array_equal(got, sym)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64])
def test_every_output_dtype(dtype):
    rng = np.random.default_rng(3)
    f = freqs_of(np.arange(1, 101))
    sym = draw_symbols(rng, f, 3000)
    out, dec = c_decode(encode([(f, sym)]), f, sym.size, dtype)
    np.testing.assert_array_equal(out.astype(np.int64), sym)


def test_empty_streams():
    f = freqs_of([1, 1, 1])
    cdf = categorical.table(f)
    for words in (np.zeros(0, np.uint32), b""):
        dec = _rc.Decoder(words)
        assert dec.state() == (0, M64, 0, 0)
        assert dec.exhausted()  # no symbol: exhausted, as constriction says
        assert dec.decode(cdf, np.empty(0, np.int32)).size == 0
        assert _rc.decode_chunk(words, cdf, np.empty(0, np.int32))
    # Zero symbols over words that are there: not exhausted (words left over).
    assert not _rc.Decoder(np.array([1, 2, 3], np.uint32)).exhausted()


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.integers(0, 2**32 - 1), max_size=6), n=st.integers(0, 12), nsym=st.integers(2, 6))
def test_any_words_match_constriction_and_the_reference(words, n, nsym):
    """Arbitrary words (valid or not): the symbols, the error and the end check agree with both oracles."""
    f = freqs_of(np.arange(1, nsym + 1) ** 3)
    cdf_list = ref.cdf_from_freqs(list(map(int, f)))
    r = ref.RangeDecoder(words)
    want = []
    try:
        for _ in range(n):
            want.append(r.decode_symbol(cdf_list))
    except ref.RangeDecoderError:
        want = None
    w = np.array(words, np.uint32)
    dec = _rc.Decoder(w)
    if want is None:
        with pytest.raises(ValueError, match="invalid data"):
            dec.decode(categorical.table(f), np.empty(n, np.int32))
        return
    out = dec.decode(categorical.table(f), np.empty(n, np.int32))
    assert list(out) == want
    assert dec.state() == (r.lower, r.range, r.point, r.pos)
    cdec = constriction.stream.queue.RangeDecoder(w)
    np.testing.assert_array_equal(cdec.decode(cmodel(f), n), out)
    assert dec.exhausted() == cdec.maybe_exhausted()


# --- the spec's worked examples (RC section 8) ------------------------------------------------------------------

F_EXAMPLE = [0, 9, 16777204]
TRACES = {  # symbols, words, the (lower, range, point, pos) after each symbol
    "8.1": (
        [2, 0, 1, 0, 2],
        [0x00000B00, 0x0000FFF4, 0x0000006E],
        [
            (0x00000AFFFFFFFFF5, 0xFFFFF4FFFF00000B, 0x00000B000000FFF4, 2),
            (0x00000AFFFFFFFFF5, 0x000000FFFFF4FFFF, 0x00000B000000FFF4, 2),
            (0x0000FFF400000000, 0x0009FFF600000000, 0x0000FFF40000006E, 3),
            (0x0000000000000000, 0x09FFF60000000000, 0x0000006E00000000, 3),
            (0x0000006DFF920000, 0x09FFF592006E0000, 0x0000006E00000000, 3),
        ],
    ),
    "8.2": (
        [1, 0],
        [0x000000FF, 0xFFFFFFFF],
        [
            (0x000000FFFFFFFFFF, 0x000009FFFFFFFFF6, 0x000000FFFFFFFFFF, 2),
            (0xFFFFFFFF00000000, 0x0009FFFF00000000, 0xFFFFFFFF00000000, 2),
        ],
    ),
    "8.3": (
        [0, 1, 1, 1, 1, 1],
        [0x00000000, 0x0000FFFF, 0x09FFF663, 0xFF9FE7FD, 0x00000000],
        [
            (0x0000000000000000, 0x000000FFFFFFFFFF, 0x000000000000FFFF, 2),
            (0x0000FFFF00000000, 0x0009FFF600000000, 0x0000FFFF09FFF663, 3),
            (0x09FFF60000000000, 0x63FF9C0000000000, 0x09FFF663FF9FE7FD, 4),
            (0x09FFF663FF9C0000, 0x000003E7FC180000, 0x09FFF663FF9FE7FD, 4),
            (0xFF9FE7FC00000000, 0x00270FD800000000, 0xFF9FE7FD00000000, 5),
            (0xFF9FE7FC270FD800, 0x00000001869E7000, 0xFF9FE7FD00000000, 5),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_spec_traces(name):
    symbols, words, states = TRACES[name]
    cdf = categorical.table(F_EXAMPLE)
    w = np.array(words, np.uint32)
    np.testing.assert_array_equal(encode([(F_EXAMPLE, symbols)]), w)
    dec = _rc.Decoder(w)
    r = ref.RangeDecoder(words)
    for s, state in zip(symbols, states):
        assert dec.decode(cdf, np.empty(1, np.int32))[0] == s == r.decode_symbol(list(map(int, cdf)))
        assert dec.state() == state == (r.lower, r.range, r.point, r.pos)
    assert dec.exhausted()
    r.finish()


# --- buffers ---------------------------------------------------------------------------------------------------


def test_misaligned_and_byte_buffers():
    rng = np.random.default_rng(4)
    f = freqs_of(rng.integers(1, 100, 40))
    sym = draw_symbols(rng, f, 2000)
    words = encode([(f, sym)])
    raw = words.astype("<u4").tobytes()
    for lead in (1, 2, 3):
        buf = b"\xaa" * lead + raw
        mis = np.frombuffer(buf, "<u4", offset=lead)  # not 4-byte aligned
        assert mis.ctypes.data % 4 != 0 or lead == 0
        np.testing.assert_array_equal(c_decode(mis, f, sym.size)[0], sym)
        np.testing.assert_array_equal(c_decode(memoryview(buf)[lead:], f, sym.size)[0], sym)
    np.testing.assert_array_equal(c_decode(raw, f, sym.size)[0], sym)
    np.testing.assert_array_equal(c_decode(words.astype(">u4"), f, sym.size)[0], sym)  # byte order honoured
    for odd in (1, 2, 3, 5):
        with pytest.raises(ValueError, match="whole number of 32-bit words"):
            _rc.Decoder(raw[:-odd])


def test_bad_buffers_are_refused():
    f = freqs_of([1, 2, 3])
    cdf = categorical.table(f)
    w = encode([(f, [0, 1, 2])])
    dec = _rc.Decoder(w)
    with pytest.raises(TypeError):
        _rc.Decoder(np.zeros(2, np.float32))
    with pytest.raises(TypeError):
        _rc.Decoder(np.zeros(2, np.uint16))
    with pytest.raises(TypeError):
        dec.decode(cdf.astype(np.int64), np.empty(1, np.int32))  # tables are 32-bit
    with pytest.raises(TypeError):
        dec.decode(cdf, np.empty(1, np.float32))
    with pytest.raises(BufferError):
        dec.decode(cdf, b"abcd")  # read-only
    with pytest.raises(ValueError):
        dec.decode(cdf[:1], np.empty(1, np.int32))  # a table has at least two entries
    with pytest.raises(ValueError):
        dec.decode(cdf[::2], np.empty(1, np.int32))  # not contiguous
    with pytest.raises(ValueError, match="aligned"):
        dec.decode(cdf, _misaligned_int32(4))
    with pytest.raises(ValueError, match="contexts"):
        dec.decode_ctx(categorical.tables_of(f[None]), np.zeros(2, np.int64), np.empty(3, np.int32))
    with pytest.raises(ValueError, match="2-D"):
        dec.decode_ctx(cdf, np.zeros(1, np.int64), np.empty(1, np.int32))


def _misaligned_int32(n: int) -> np.ndarray:
    base = np.zeros(n * 4 + 4, np.uint8)
    return np.ndarray((n,), np.int32, base.data, offset=1)


def test_bad_tables_and_contexts_raise():
    w = np.array([0x12345678, 0x9ABCDEF0, 0x0F0F0F0F], np.uint32)  # first quantile about 0x123456
    bad = [
        (np.array([0, 100, 200], np.uint32), w),  # does not reach 2^24
        (np.array([0, 100, 0xFFFFFFFF], np.uint32), w),  # beyond 2^24
        (np.array([7, TOTAL], np.uint32), np.zeros(3, np.uint32)),  # c_0 != 0, quantile 0
    ]
    for cdf, words in bad:
        with pytest.raises(ValueError, match="table"):
            _rc.Decoder(words).decode(cdf, np.empty(64, np.int32))
    # A table that is not increasing may decode to nonsense, but stays inside its table and its words.
    rng = np.random.default_rng(7)
    for _ in range(50):
        cdf = np.sort(rng.integers(0, TOTAL, 6)).astype(np.uint32)[rng.permutation(6)]
        cdf[0], cdf[-1] = 0, TOTAL
        try:
            _rc.Decoder(rng.integers(0, 2**32, 8, dtype=np.uint64).astype(np.uint32)).decode(cdf, np.empty(500, np.int32))
        except ValueError:
            pass
    cdfs = categorical.tables_of(np.array([freqs_of([1, 1]), freqs_of([1, 3])]))
    for ctx in (np.array([0, 2], np.int64), np.array([0, -1], np.int64), np.array([1, 255], np.uint8)):
        with pytest.raises(ValueError, match="context"):
            _rc.Decoder(w).decode_ctx(cdfs, ctx, np.empty(2, np.int32))


# --- damaged words ---------------------------------------------------------------------------------------------


def test_truncated_and_corrupted_words_give_typed_errors():
    """Every truncation and single-word corruption of a stream: ValueError, a failed end check or other
    symbols, and the same outcome as the reference decoder; never a crash."""
    rng = np.random.default_rng(5)
    f = freqs_of(rng.integers(0, 30, 20) + (np.arange(20) < 3) * 1000)
    cdf = categorical.table(f)
    cdf_list = list(map(int, cdf))
    sym = draw_symbols(rng, f, 400)
    good = encode([(f, sym)])
    variants = [good[:k] for k in range(good.size)]
    for _ in range(300):
        w = good.copy()
        w[rng.integers(w.size)] ^= np.uint32(1 << int(rng.integers(32)))
        variants.append(w)
    variants += [np.concatenate([good, [0]]).astype(np.uint32), np.full(good.size, 0xFFFFFFFF, np.uint32)]
    caught = 0
    for w in variants:
        r = ref.RangeDecoder([int(x) for x in w])
        try:
            want = [r.decode_symbol(cdf_list) for _ in range(sym.size)]
        except ref.RangeDecoderError:
            want = None
        out = np.empty(sym.size, np.int32)
        if want is None:
            with pytest.raises(ValueError):
                categorical.decode_into(w, cdf, out)
            caught += 1
            continue
        dec = _rc.Decoder(w)
        assert list(dec.decode(cdf, out)) == want
        exhausted = r.pos == len(w) and (r.point - r.lower) % (1 << 64) < (1 << 33) - 1
        assert dec.exhausted() == exhausted
        if not exhausted:
            with pytest.raises(ValueError, match="left over"):
                categorical.decode_into(w, cdf, out)
            caught += 1
    assert caught > len(variants) // 4


def test_threads_decode_concurrently():
    """The decoding loop releases the GIL: decoders in several threads give their own streams' symbols."""
    rng = np.random.default_rng(6)
    f = freqs_of(rng.integers(1, 100, 64))
    cdf = categorical.table(f)
    streams = [draw_symbols(rng, f, 50_000) for _ in range(4)]
    words = [encode([(f, s)]) for s in streams]
    got = [None] * 4

    def work(i):
        out = np.empty(streams[i].size, np.int32)
        assert _rc.decode_chunk(words[i], cdf, out)
        got[i] = out

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, g in zip(streams, got):
        np.testing.assert_array_equal(g, s)


def test_decoder_keeps_its_words_alive():
    f = freqs_of([1, 2, 3, 4])
    sym = np.array([3, 2, 1, 0] * 100, np.int32)
    words = encode([(f, sym)])
    dec = _rc.Decoder(words.copy())  # the only reference to the copy is the decoder's
    np.testing.assert_array_equal(dec.decode(categorical.table(f), np.empty(sym.size, np.int32)), sym)
    arr = bytearray(words.tobytes())
    d2 = _rc.Decoder(arr)
    with pytest.raises(BufferError):  # the words cannot be resized under the decoder
        arr.extend(b"1234")
    del d2
    arr.extend(b"1234")


# --- _bits: bit fields merged into the output (fields tails and signs) -----------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 57), st.binary(max_size=48), st.integers(0, 400), st.integers(0, 60), st.integers(0, 63), st.sampled_from([8, 16, 32, 64]))
def test_or_bits_matches_unpack_at_and_reads_nothing_past_the_end(width, buf, bit, count, shift, bits):
    from ecnn._core import _bits
    from ecnn.coder import packed

    dt = np.dtype(f"uint{bits}")
    out = np.arange(count, dtype=dt)  # OR keeps what is there
    if width + shift > bits:
        with pytest.raises(ValueError):
            _bits.or_bits(out, buf, bit, width, shift)
        return
    want = out.astype(np.uint64) | (packed.unpack_at(buf, bit, count, width, np.uint64) << np.uint64(shift))
    _bits.or_bits(out, buf, bit, width, shift)
    assert np.array_equal(out.astype(np.uint64), want)


def test_or_bits_rejects_other_arrays():
    from ecnn._core import _bits

    with pytest.raises(TypeError):
        _bits.or_bits(np.zeros(4, np.int32), b"\xff" * 8, 0, 3, 0)
    with pytest.raises((TypeError, ValueError)):  # not contiguous
        _bits.or_bits(np.zeros(4, np.uint32)[::2], b"\xff" * 8, 0, 3, 0)
    with pytest.raises(ValueError):
        _bits.or_bits(np.zeros(4, np.uint8), b"\xff" * 8, 0, 0, 0)


def test_crc32_of_the_compiled_core_is_zlibs():
    """Every length around the 16- and 64-byte folds, odd offsets, chained CRCs, and a long buffer."""
    import zlib

    from ecnn._core import _bits
    from ecnn.container import format as fmt

    rng = np.random.default_rng(11)
    big = rng.integers(0, 256, 1 << 18, dtype=np.uint8).tobytes()
    for n in list(range(0, 200)) + [255, 256, 257, 1000, 4095, 4096, 4097, 65536 + 5, len(big) - 7]:
        for off in (0, 1, 5, 7):
            b = big[off : off + n]
            for init in (0, 0xFFFFFFFF, 0x1234567):
                assert _bits.crc32(b, init) == zlib.crc32(b, init), (n, off, init)
    mv = memoryview(big)[3:]
    assert fmt.crc32(mv[:100], mv[100:]) == zlib.crc32(big[3:])
    assert _bits.CRC32_FAST in (0, 1)
