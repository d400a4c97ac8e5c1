"""ecnn/context: varints, table expansion, order-0 fitting and its rate estimate."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecnn.coder import categorical
from ecnn.context import order0, rate, tables, varint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ref_decoder  # noqa: E402


@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=50))
def test_varint_roundtrip(values):
    data = varint.encode(values)
    assert len(data) == int(varint.varint_sizes(values).sum()) if values else data == b""
    back, pos = varint.decode(data, len(values))
    assert back == values and pos == len(data)


@pytest.mark.parametrize(
    "data, why",
    [(b"\x80", "past the end"), (b"\x80\x00", "non-minimal"), (b"\xff" * 10 + b"\x01", "longer than 10"), (b"\xff" * 9 + b"\x7f", "out of range")],
)
def test_varint_rejects_bad_encodings(data, why):
    with pytest.raises(ValueError, match=why):
        varint.decode(data, 1)


@given(st.lists(st.integers(0, 1 << 20), min_size=2, max_size=300).filter(lambda c: sum(c) > 0))
def test_expand_sums_to_free_weight(counts):
    f = tables.expand(np.array(counts))
    n = len(counts)
    assert f.sum() == (1 << 24) - n
    assert (f >= 0).all()
    # Proportional up to the floor and the remainder on one symbol.
    c = np.array(counts, dtype=np.int64)
    base = c * ((1 << 24) - n) // c.sum()
    diff = f - base
    assert (diff >= 0).all() and np.count_nonzero(diff) <= 1
    assert diff[np.argmax(c)] == diff.sum()


@pytest.mark.parametrize("counts", [[5], [0, 0, 0], [1, -1], [1, 1 << 32]])
def test_expand_rejects_bad_tables(counts):
    with pytest.raises(ValueError):
        tables.expand(np.array(counts))


def test_fit_is_never_worse_than_exact_counts():
    hist = np.array([3, 0, 5, 1])
    fit = order0.fit(hist)
    exact = 8 * len(tables.serialize(hist)) + order0.symbol_bits(hist, hist)
    assert fit.total_bits <= exact
    counts, pos = tables.read(fit.blob, 0, 4)
    assert pos == len(fit.blob) and counts.tolist() == fit.counts.tolist()


@given(st.lists(st.integers(0, 1 << 30), min_size=2, max_size=300), st.integers(0, 4))
def test_log_tables_roundtrip(hist, m):
    h = np.array(hist, dtype=np.int64)
    codes = tables.log_codes(h, m)
    assert ((h > 0) == (codes > 0)).all()
    blob = tables.serialize_log(codes, m)
    assert len(blob) == tables.log_table_bytes(codes)
    counts, pos = tables.read(blob + b"tail", 0, len(hist))
    assert pos == len(blob)
    assert counts.tolist() == tables.code_to_count(codes, m).tolist()
    nz = h > 0
    # Counts keep the histogram's ratios to within a mantissa step each way (up to
    # the rounding of small counts, which all map to the smallest code).
    big = nz & (h * 2.0**m >= 2 ** (m + 1))
    if big.sum() >= 2 and h.max() * 2.0**m <= tables.MAX_COUNT:
        ratio = counts[big] / (h[big] * 2.0**m)
        assert ratio.max() / ratio.min() <= 2 ** (2 / 2**m) * (1 + 1e-9)


def test_log_codes_count_formula():
    assert tables.code_to_count(np.arange(8), 2).tolist() == [0, 4, 5, 6, 7, 8, 10, 12]
    assert tables.code_to_count(np.arange(4), 0).tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize(
    "blob, why",
    [
        (b"\x02", "unknown table mode"),
        (b"\x01\x05", "mantissa"),
        (b"\x01\x02\x20", "past the end"),  # 3 symbols, only 2 nibbles
        (b"\x01\x02\x22\x21", "pad nibble"),  # 3 codes 1,2,1? then pad nibble 1
        (b"\x01\x00\x13", "out of range"),  # code -1
    ],
)
def test_bad_stored_tables(blob, why):
    with pytest.raises(ValueError, match=why):
        tables.read(blob, 0, 3)


def test_fit_never_zeroes_an_occurring_symbol():
    rng = np.random.default_rng(1)
    hist = np.bincount(rng.geometric(0.05, 200_000), minlength=300)[:300]
    fit = order0.fit(hist)
    assert ((hist > 0) <= (fit.counts > 0)).all()


def test_fit_builds_its_stored_table_when_asked_and_knows_its_length():
    rng = np.random.default_rng(4)
    for _ in range(300):
        n = int(rng.integers(2, 2000))
        hist = rng.integers(0, int(rng.choice([3, 100, 10**6])), size=n)
        hist[rng.random(n) < 0.3] = 0
        if not hist.any():
            continue
        fit = order0._fit(hist.astype(np.int64))
        assert "blob" not in fit.__dict__  # not built by the fit itself
        assert fit.table_bytes == len(fit.blob)
        counts, pos = tables.read(memoryview(fit.blob), 0, n)
        assert pos == len(fit.blob) and np.array_equal(counts, fit.counts)


@pytest.mark.parametrize("scale, n", [(2.0, 100_000), (30.0, 300_000), (0.4, 5_000)])
def test_rate_estimate_matches_coded_size(scale, n):
    rng = np.random.default_rng(7)
    x = np.rint(rng.laplace(0, scale, n)).astype(np.int64)
    idx = (x - x.min()).astype(np.int32)
    hist = order0.histogram(idx, int(idx.max()) + 1)
    fit = order0.fit(hist)
    words = categorical.encode(idx, tables.expand(fit.counts), chunk=1 << 20)
    coded_bits = 32 * sum(w.size for w in words)
    assert abs(coded_bits - fit.symbol_bits) <= 0.01 * fit.symbol_bits + order0.FLUSH_BITS
    # The table costs less than it saves over coding with 8-bit symbols.
    assert fit.total_bits < 8 * n


def test_entropy_is_a_lower_bound_of_the_fit():
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 17, 50_000)
    hist = order0.histogram(idx, 17)
    assert order0.fit(hist).symbol_bits >= rate.entropy_bits(hist) - 1e-6


@pytest.mark.parametrize("nsym", [1, 5, 127, 128, 129, 300, 2000])
def test_log_tables_read_as_the_spec_words_them(nsym):
    """The compiled reader of log tables against the reference decoder's nibble-by-nibble reading; truncation,
    a code out of range and a non-zero pad nibble are ValueErrors."""
    rng = np.random.default_rng(nsym)
    for m in range(tables.MAX_LOG_MANTISSA + 1):
        top = tables.max_code(m)
        codes = rng.integers(0, top + 1, nsym)  # large steps: many escaped differences
        blob = bytes([7]) + tables.serialize_log(codes, m) + bytes([0xAB])
        got, end = tables.read(blob, 1, nsym)
        np.testing.assert_array_equal(got, tables.code_to_count(codes, m))
        assert end == len(blob) - 1
        if codes.any():  # the reference decoder rejects a table of zero counts (section 7.1)
            assert ref_decoder.read_table(blob, 1, nsym) == (tables.code_to_count(codes, m).tolist(), end)
        for cut in range(1, min(end, 12)):
            with pytest.raises(ValueError, match="past the end"):
                tables.read(blob[: end - cut], 1, nsym)
    # one code above top (m = 0: codes 0..max_code(0)); the escape holds it
    top = tables.max_code(0)
    bad = bytes([1, 0]) + bytes([0xF0 | ((2 * (top + 1)) - 15) >> 8, ((2 * (top + 1) - 15) & 0xFF)])
    with pytest.raises(ValueError, match=f"code {top + 1} out of range"):
        tables.read(bad, 0, 1)
    with pytest.raises(ValueError, match="code -1 out of range"):
        tables.read(bytes([1, 0, 0x10]), 0, 1)  # zigzag 1 is -1
    with pytest.raises(ValueError, match="pad nibble"):
        tables.read(bytes([1, 0, 0x21]), 0, 1)  # code 1, then a non-zero pad nibble
    assert tables.read(bytes([1, 0, 0x20]), 0, 1)[1] == 3
    with pytest.raises(ValueError, match="past the end"):
        tables.read(bytes([1, 0]), 0, 1)


def test_repeated_fits_come_from_the_cache_unchanged(monkeypatch):
    rng = np.random.default_rng(7)
    hists = [rng.poisson(rng.exponential(50, 30)).astype(np.int64) + (i == 0) for i in range(40)]
    fresh = [order0._fit(h) for h in hists]
    monkeypatch.setattr(order0, "_cache", order0.OrderedDict())
    monkeypatch.setattr(order0, "_cache_counts", 0)
    monkeypatch.setattr(order0, "_CACHE_COUNTS", 10 * 30)  # room for 10 of them
    for _ in range(2):
        for h, want in zip(hists, fresh):
            got = order0.fit(h.copy())
            assert got.blob == want.blob and got.symbol_bits == want.symbol_bits
            np.testing.assert_array_equal(got.counts, want.counts)
            assert not got.counts.flags.writeable  # shared between callers: nobody may change it
    assert order0._cache_counts <= 300 and len(order0._cache) == 10
    assert order0.fit(hists[-1]) is order0.fit(hists[-1].copy())  # a recent fit is returned again


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_order0_fit_in_a_forked_child_never_waits_on_the_parents_lock():
    """The fit cache renews its lock in a child (no fork hook registered at import)."""
    import time

    hist = np.array([5, 3, 2], np.int64)
    with order0._lock():  # as if another thread of the parent were inside fit at the fork
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if order0.fit(hist).counts.size == 3 else 1
            finally:
                os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child waited on the parent's lock")
        time.sleep(0.01)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _fit_in_numpy(hist):
    """spec/CODING.md section 11.5 in numpy: the counts, stored bytes and symbol bits of the chosen table."""
    cands = []
    total = int(hist.sum())
    for r in (4, 6, 8, 10, 12, 14, 16, 18, 20):
        if total <= 1 << r:
            counts = hist.copy()
        else:
            c = np.rint(hist.astype(np.float64) * ((1 << r) / total)).astype(np.int64)
            counts = np.where(hist > 0, np.maximum(c, 1), 0)
        cands.append((counts, 1 + int(varint.varint_sizes(counts).sum())))
        if total <= 1 << r:
            break
    for m in (1, 2, 3):
        codes = tables.log_codes(hist, m)
        cands.append((tables.code_to_count(codes, m), tables.log_table_bytes(codes)))
    seen, kept = set(), []
    for counts, nbytes in cands:
        if counts.tobytes() not in seen:
            seen.add(counts.tobytes())
            kept.append((counts, nbytes))
    used = hist > 0
    bits = [float(tables.probabilities_bits(tables.expand(c)[used]) @ hist[used].astype(np.float64)) for c, _ in kept]
    totals = [8.0 * nb + b for (_, nb), b in zip(kept, bits)]
    k = int(np.argmin(totals))
    return kept[k][0], kept[k][1], bits[k]


def test_fit_is_the_spec_rule():
    """The compiled fit chooses the table that the rule of section 11.5, written plainly, chooses."""
    rng = np.random.default_rng(11)
    for _ in range(400):
        n = int(rng.integers(2, 700))
        top = int(rng.choice([2, 3, 100, 10**4, 10**6, 10**9, 10**11]))  # the last two scale the log codes down
        hist = (rng.integers(0, top, n) * (rng.random(n) < rng.random())).astype(np.int64)
        hist[int(rng.integers(n))] += 1
        counts, nbytes, bits = _fit_in_numpy(hist)
        fit = order0._fit(hist)
        np.testing.assert_array_equal(fit.counts, counts)
        assert fit.table_bytes == nbytes and fit.symbol_bits == pytest.approx(bits, rel=1e-12)


@pytest.mark.parametrize("hist", [[5], [0, 0, 0], [3, -1, 2]])
def test_fit_rejects_what_makes_no_table(hist):
    with pytest.raises(ValueError):
        order0.fit(np.array(hist, np.int64))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.uint64])
def test_histogram_counts_any_integer_type(dtype):
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    n = min(300, int(info.max) - int(info.min) + 1)
    for lo in (int(info.min), min(int(info.max), (1 << 63) - 1) - n + 1):  # lo is an int64
        idx = rng.integers(0, n, 5000)
        idx[:2] = [0, n - 1]
        v = (np.array(idx, dtype=object) + lo).astype(dtype)
        np.testing.assert_array_equal(order0.histogram(v, n, lo), np.bincount(idx, minlength=n))
        with pytest.raises(ValueError):
            order0.histogram(v, n - 1, lo)  # the largest value is outside
        if lo > int(info.min):
            with pytest.raises(ValueError):
                order0.histogram(v, n, lo + 1)  # the smallest value is outside


def test_varint_runs_read_by_the_compiled_core_match_the_python_reader(monkeypatch):
    """Long runs of varints are read in C: the same values, positions and errors as the byte-by-byte reader,
    on valid, cut, damaged and overlong inputs."""
    from ecnn.context import varint

    def read(buf, count, compiled):
        monkeypatch.setattr(varint, "_COMPILED_FROM", 1 if compiled else 1 << 62)
        try:
            return varint.decode(buf, count, 1)
        except ValueError as e:
            return str(e)

    rng = np.random.default_rng(1)
    for it in range(3000):
        k = int(rng.integers(1, 40))
        vals = [int(x) >> int(s) for x, s in zip(rng.integers(0, 2**63, k, dtype=np.uint64), rng.integers(0, 63, k))]
        b = bytearray(b"\x05" + varint.encode(vals))
        if it % 3 == 0:
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        if it % 5 == 0:
            b = b[: int(rng.integers(0, len(b) + 1))]
        if it % 7 == 0:
            b += bytes([0xFF] * int(rng.integers(0, 12)) + [int(rng.integers(0, 256))])
        assert read(bytes(b), k, True) == read(bytes(b), k, False)
    assert read(bytes([0] + [0x80] * 9 + [0x02]), 1, True) == "varint value out of range"
    assert read(bytes([0] + [0xFF] * 9 + [0x01]), 1, True) == ([2**64 - 1], 11)
    assert read(bytes([0, 0x80, 0x00]), 1, True) == "non-minimal varint"
