"""Cross-check tools/ref_range_decoder.py (and spec/RANGE_CODER.md) against constriction."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

constriction = pytest.importorskip("constriction")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ref_range_decoder as ref  # noqa: E402

P = 24
TOTAL = 1 << P
M64 = (1 << 64) - 1


# ---------------------------------------------------------------- helpers

def make_model(freqs):
    return constriction.stream.model.Categorical(
        np.asarray(freqs, dtype=np.float64), perfect=False
    )


def encode(segments):
    """segments: list of (freqs, symbols); one encode() call per segment."""
    enc = constriction.stream.queue.RangeEncoder()
    for freqs, symbols in segments:
        enc.encode(np.asarray(symbols, dtype=np.int32), make_model(freqs))
    return [int(w) for w in enc.get_compressed()]


def random_freqs(rng, n, kind):
    """Integer f_i >= 0 with sum(f) == 2^24 - n."""
    free = TOTAL - n
    if kind == "dense":
        w = rng.random(n)
    elif kind == "sparse":  # most f_i are zero
        w = rng.random(n) * (rng.random(n) < 0.05)
        w[rng.integers(n)] += 1.0
    elif kind == "peaked":  # one symbol has almost all mass
        w = np.zeros(n)
        w[rng.integers(n)] = 1.0
        if n > 2:
            w[rng.integers(n)] += 1e-6
    elif kind == "zipf":
        w = 1.0 / np.arange(1, n + 1) ** 1.5
        rng.shuffle(w)
    else:
        raise ValueError(kind)
    w = w / w.sum()
    f = np.floor(w * free).astype(np.int64)
    f[int(np.argmax(f))] += free - int(f.sum())
    assert f.min() >= 0 and int(f.sum()) == free
    return [int(x) for x in f]


def random_symbols(rng, freqs, length):
    p = np.asarray(freqs, dtype=np.float64) + 1.0
    p /= p.sum()
    syms = rng.choice(len(freqs), size=length, p=p)
    # sprinkle in some arbitrary (possibly very improbable) symbols
    if length:
        k = max(1, length // 20)
        idx = rng.integers(length, size=k)
        syms[idx] = rng.integers(len(freqs), size=k)
    return [int(s) for s in syms]


CASES = [
    (n, kind, length)
    for n in (2, 3, 255, 4000)
    for kind in ("dense", "sparse", "peaked", "zipf")
    for length in (0, 1, 2, 5, 1000)
]


# ---------------------------------------------------------------- main cross-check

@pytest.mark.parametrize("n,kind,length", CASES)
def test_matches_constriction(n, kind, length):
    rng = np.random.default_rng(CASES.index((n, kind, length)))
    reps = 2 if length == 1000 else 6
    for _ in range(reps):
        freqs = random_freqs(rng, n, kind)
        symbols = random_symbols(rng, freqs, length)
        words = encode([(freqs, symbols)])

        # pure-Python decoder (strict end-of-stream checks on)
        assert ref.decode_categorical(words, freqs, length) == symbols

        # constriction's own decoder agrees
        dec = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))
        if length:
            got = dec.decode(make_model(freqs), length)
            assert [int(s) for s in got] == symbols

        # stream length formula of spec section 6
        d = ref.RangeDecoder(words)
        cdf = ref.cdf_from_freqs(freqs)
        for _s in symbols:
            d.decode_symbol(cdf)
        assert len(words) == d.expected_num_words()
        assert d.pads <= (2 if length == 0 else 1)


def test_many_short_streams_exercise_carry_and_trailing_zero():
    """Random short streams; make sure carries and the extra zero word both occur."""
    rng = np.random.default_rng(1234)
    seen_carry = seen_trailing_zero = seen_pad = 0
    for _ in range(400):
        n = int(rng.choice([2, 3, 17]))
        freqs = random_freqs(rng, n, str(rng.choice(["dense", "sparse", "peaked"])))
        symbols = random_symbols(rng, freqs, int(rng.integers(1, 12)))
        words = encode([(freqs, symbols)])
        d = ref.RangeDecoder(words)
        cdf = ref.cdf_from_freqs(freqs)
        out = []
        for _s in symbols:
            r0 = d.renorms
            out.append(d.decode_symbol(cdf))
            if d.renorms > r0 and d.lower + d.range > (1 << 64):
                seen_carry += 1
        d.finish()
        assert out == symbols
        seen_trailing_zero += d.expected_num_words() == d.renorms + 2
        seen_pad += d.pads
    assert seen_carry and seen_trailing_zero and seen_pad


# ---------------------------------------------------------------- f+1 convention / state

@pytest.mark.parametrize("n", [2, 3, 255])
def test_fixed_point_model_is_f_plus_one(n):
    """Encoder state after one symbol reveals constriction's (c_i, p_i) directly."""
    rng = np.random.default_rng(n)
    for kind in ("dense", "sparse", "peaked"):
        freqs = random_freqs(rng, n, kind)
        model = make_model(freqs)
        scale = M64 >> P
        c = 0
        for i, f in enumerate(freqs):
            p = f + 1
            enc = constriction.stream.queue.RangeEncoder()
            enc.encode(np.asarray([i], dtype=np.int32), model)
            lower, rng_ = scale * c, scale * p
            if rng_ < (1 << 32):
                lower, rng_ = (lower << 32) & M64, rng_ << 32
            assert enc.pos()[1] == (lower, rng_), (kind, i)
            c += p
        assert c == TOTAL


def test_decoder_state_equals_encoder_state():
    rng = np.random.default_rng(7)
    for n in (2, 3, 255, 4000):
        freqs = random_freqs(rng, n, "sparse")
        symbols = random_symbols(rng, freqs, 40)
        enc = constriction.stream.queue.RangeEncoder()
        model = make_model(freqs)
        states = []
        for s in symbols:
            enc.encode(np.asarray([s], dtype=np.int32), model)
            states.append(enc.pos()[1])
        words = [int(w) for w in enc.get_compressed()]
        d = ref.RangeDecoder(words)
        cdf = ref.cdf_from_freqs(freqs)
        for s, st in zip(symbols, states):
            assert d.decode_symbol(cdf) == s
            assert (d.lower, d.range) == st
        d.finish()


# ---------------------------------------------------------------- several tables

@pytest.mark.parametrize("seed", range(6))
def test_multiple_encode_calls_with_different_tables(seed):
    rng = np.random.default_rng(100 + seed)
    segments = []
    for _ in range(int(rng.integers(2, 5))):
        n = int(rng.choice([2, 3, 255, 4000]))
        freqs = random_freqs(rng, n, str(rng.choice(["dense", "sparse", "peaked", "zipf"])))
        length = int(rng.choice([0, 1, 2, 5, 300]))
        segments.append((freqs, random_symbols(rng, freqs, length)))
    words = encode(segments)
    expected = [s for _f, syms in segments for s in syms]
    got = ref.decode_segments(words, [(f, len(syms)) for f, syms in segments])
    assert got == expected

    dec = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))
    got_c = []
    for f, syms in segments:
        if syms:
            got_c += [int(s) for s in dec.decode(make_model(f), len(syms))]
    assert got_c == expected


def test_get_compressed_midway_does_not_disturb():
    rng = np.random.default_rng(5)
    fa, fb = random_freqs(rng, 3, "dense"), random_freqs(rng, 255, "sparse")
    sa, sb = random_symbols(rng, fa, 50), random_symbols(rng, fb, 50)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(np.asarray(sa, dtype=np.int32), make_model(fa))
    first = [int(w) for w in enc.get_compressed()]
    enc.encode(np.asarray(sb, dtype=np.int32), make_model(fb))
    both = [int(w) for w in enc.get_compressed()]
    assert ref.decode_categorical(first, fa, 50) == sa
    assert ref.decode_segments(both, [(fa, 50), (fb, 50)]) == sa + sb
    assert both == encode([(fa, sa), (fb, sb)])


# ---------------------------------------------------------------- worked examples (spec section 8)

F_EX = [0, 9, 16777204]


@pytest.mark.parametrize(
    "symbols,words",
    [
        ([2, 0, 1, 0, 2], [0x00000B00, 0x0000FFF4, 0x0000006E]),
        ([1, 0], [0x000000FF, 0xFFFFFFFF]),
        ([0, 1, 1, 1, 1, 1], [0x00000000, 0x0000FFFF, 0x09FFF663, 0xFF9FE7FD, 0x00000000]),
        ([], []),
    ],
)
def test_worked_examples(symbols, words):
    assert encode([(F_EX, symbols)]) == words
    assert ref.decode_categorical(words, F_EX, len(symbols)) == symbols


def test_worked_example_trace():
    d = ref.RangeDecoder([0x00000B00, 0x0000FFF4, 0x0000006E])
    assert (d.lower, d.range, d.point, d.pos) == (0, M64, 0x00000B000000FFF4, 2)
    cdf = ref.cdf_from_freqs(F_EX)
    assert cdf == [0, 1, 11, TOTAL]
    trace = [
        (2, 0x00000AFFFFFFFFF5, 0xFFFFF4FFFF00000B, 0x00000B000000FFF4, 2),
        (0, 0x00000AFFFFFFFFF5, 0x000000FFFFF4FFFF, 0x00000B000000FFF4, 2),
        (1, 0x0000FFF400000000, 0x0009FFF600000000, 0x0000FFF40000006E, 3),
        (0, 0x0000000000000000, 0x09FFF60000000000, 0x0000006E00000000, 3),
        (2, 0x0000006DFF920000, 0x09FFF592006E0000, 0x0000006E00000000, 3),
    ]
    for sym, lower, range_, point, pos in trace:
        assert d.decode_symbol(cdf) == sym
        assert (d.lower, d.range, d.point, d.pos) == (lower, range_, point, pos)
    assert d.pads == 1 and d.renorms == 2
    d.finish()


# ---------------------------------------------------------------- corruption detection

def test_detects_trailing_and_missing_words():
    rng = np.random.default_rng(99)
    for _ in range(50):
        n = int(rng.choice([2, 3, 255]))
        freqs = random_freqs(rng, n, "dense")
        symbols = random_symbols(rng, freqs, int(rng.integers(1, 60)))
        words = encode([(freqs, symbols)])
        with pytest.raises(ref.RangeDecoderError):
            ref.decode_categorical(words + [int(rng.integers(1 << 32))], freqs, len(symbols))
        with pytest.raises(ref.RangeDecoderError):
            ref.decode_categorical(words[:-1], freqs, len(symbols))
        # non-strict mode still decodes the intact stream with trailing garbage
        assert (
            ref.decode_categorical(words + [123], freqs, len(symbols), strict=False) == symbols
        )


def test_detects_all_bit_flips():
    """With the end checks, a flipped bit either raises or changes the decoded symbols."""
    rng = np.random.default_rng(3)
    detected = total = 0
    for _ in range(100):
        freqs = random_freqs(rng, 255, "dense")
        symbols = random_symbols(rng, freqs, 100)
        words = encode([(freqs, symbols)])
        bad = list(words)
        i = int(rng.integers(len(bad)))
        bad[i] ^= 1 << int(rng.integers(32))
        total += 1
        try:
            detected += ref.decode_categorical(bad, freqs, len(symbols)) != symbols
        except ref.RangeDecoderError:
            detected += 1
    assert detected == total


def test_strict_acceptance_is_canonical():
    """Any word list the strict decoder accepts is exactly the encoder's output."""
    rng = np.random.default_rng(11)
    accepted = 0
    for _ in range(3000):
        freqs = random_freqs(rng, int(rng.choice([2, 3])), "dense")
        count = int(rng.integers(1, 4))
        words = [int(w) for w in rng.integers(0, 1 << 32, size=int(rng.integers(1, 3)))]
        if rng.random() < 0.5:  # make the last word plausible
            words[-1] = 0
        try:
            symbols = ref.decode_categorical(words, freqs, count)
        except ref.RangeDecoderError:
            continue
        accepted += 1
        assert encode([(freqs, symbols)]) == words
    assert accepted > 0


def test_invalid_quantile_raises():
    # point = 2^64 - 1 lies in the slack above scale * 2^24 of the initial range.
    with pytest.raises(ref.RangeDecoderError):
        ref.decode_categorical([0xFFFFFFFF, 0xFFFFFFFF], F_EX, 1)
    dec = constriction.stream.queue.RangeDecoder(np.asarray([0xFFFFFFFF] * 2, dtype=np.uint32))
    with pytest.raises(AssertionError):
        dec.decode(make_model(F_EX))


@pytest.mark.parametrize(
    "freqs",
    [[TOTAL - 1], [1, TOTAL - 2], [-1, TOTAL], [0, TOTAL - 2 - 1]],
)
def test_rejects_bad_tables(freqs):
    with pytest.raises(ValueError):
        ref.cdf_from_freqs(freqs)
