"""Choosing apart from coding: the Effort policy (ecnn/config.py), ecnn/select, the coder registry
(ecnn/coder/registry.py) and the shared rate estimator (ecnn/context/rate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ecnn import select
from ecnn.coder import cat0, streams
from ecnn.coder.registry import CODERS, coder_minor
from ecnn.config import EFFORTS, EncodeConfig, Effort
from ecnn.context import order0, rate
from ecnn.errors import InvalidOption, UnsupportedCoding
from ecnn.select import classes


def test_effort_of_takes_a_name_or_a_policy():
    assert [Effort.of(n).name for n in EFFORTS] == list(EFFORTS)
    assert Effort.of("best") is Effort.BEST and Effort.of(Effort.FAST) is Effort.FAST
    assert EncodeConfig(effort="balanced").policy is Effort.BALANCED
    for bad in ("max", None, 3):
        with pytest.raises(InvalidOption, match="effort must be one of"):
            Effort.of(bad)
    with pytest.raises(Exception):
        Effort.BEST.rowcol = False  # frozen


def test_the_named_policies_are_those_of_spec_section_11_8():
    best, balanced, fast = Effort.BEST, Effort.BALANCED, Effort.FAST
    assert best.rowcol and best.lanes and best.rowcol_classes is None and best.head_classes is None
    assert best.planes_with_fields and not best.head_early_stop and best.lanes_min_zeros == 0.25 and best.lanes_bound
    assert balanced.rowcol_classes == (8, 8) and balanced.sign_classes == (1,) and balanced.lanes_min_zeros == 0.5
    assert balanced.lanes_bound and balanced.head_classes == ((1, 1), (8, 8)) and balanced.codebook_probe == 256
    assert not fast.rowcol and not fast.lanes and fast.head_classes == ((1, 1),)
    assert not balanced.planes_with_fields and not fast.planes_with_fields


def test_the_registry_lists_every_coder_once():
    assert set(CODERS) == {"const", "raw", "cat0", "rowcol", "ctx", "packed", "blocks", "rans"}
    assert {n for n, c in CODERS.items() if c.minor == 1} == {"ctx", "packed", "blocks"}
    assert coder_minor("cat0") == 0 and coder_minor("ctx") == 1 and coder_minor("rans") == 2
    with pytest.raises(UnsupportedCoding):
        coder_minor("lz4")
    assert all({"coder", "length"} <= c.keys for c in CODERS.values())
    assert set(streams._KEYS) == set(CODERS) - {"blocks", "rans"}  # blocks, rans: the heads of fields only


def test_the_written_minor_version_comes_from_the_registries():
    from ecnn import codec
    from ecnn import repr as reprs

    rec = {"repr": {"kind": "uniform"}, "streams": [{"coder": "cat0"}]}
    assert codec.minor_version([rec]) == 0
    for name in CODERS:
        assert codec.minor_version([dict(rec, streams=[{"coder": name}])]) == CODERS[name].minor
    for kind, r in reprs.REPRS.items():
        assert codec.minor_version([dict(rec, repr={"kind": kind})]) == r.minor
    # a ctx stream counts with its model: model 5 is of format 1.2
    two = [{"coder": "cat0", "length": 3}, {"coder": "ctx", "length": 2}]
    assert codec.minor_version([dict(rec, streams=two)], [b"abc\x05\x00"]) == 2
    assert codec.minor_version([dict(rec, streams=two)], [b"abc\x04\x00"]) == 1


def test_streams_decode_dispatches_through_the_registry():
    v = np.random.default_rng(0).integers(-5, 9, 5000)
    for kind in ("const", "raw", "cat0"):
        if kind == "const":
            desc, data = CODERS[kind].encode(3)
        elif kind == "raw":
            desc, data = CODERS[kind].encode(v, 2, True)
        else:
            h = order0.histogram(v - v.min(), 14)
            desc, data = CODERS[kind].encode(v - v.min(), int(v.min()), 14, order0.fit(h), 1024)
        streams.validate(desc, v.size if kind != "const" else 10, -5, 8)
        got = streams.decode(desc, data, v.size if kind != "const" else 10, np.int64, -5, 8)
        np.testing.assert_array_equal(got, np.full(10, 3) if kind == "const" else v)


def test_the_order0_estimate_is_within_its_overhead_of_the_coded_size():
    rng = np.random.default_rng(1)
    v = np.clip(np.rint(rng.laplace(0, 3, 200_000)), -40, 40).astype(np.int64)
    idx = (v + 40).astype(np.int32)
    hist = order0.histogram(idx, 81)
    fit, bits = rate.order0_bits(hist, v.size, 1 << 16)
    _, data = cat0.encode(idx, -40, 81, fit, 1 << 16)
    k = rate.num_chunks(v.size, 1 << 16)
    assert bits - rate.chunk_bits(k) <= 8 * len(data) <= bits
    assert rate.entropy_bits(hist) <= fit.symbol_bits


def test_plan_blocks_follows_the_effort():
    rng = np.random.default_rng(2)
    scale = np.exp(rng.uniform(-3, 0, (128, 1))) * np.exp(rng.uniform(-2, 0, (1, 96)))
    sym = np.minimum(np.abs(rng.laplace(0, 20, (128, 96)) * scale), 30).astype(np.int32)
    plans = {e: select.plan_blocks(sym, 31, 1 << 20, e) for e in EFFORTS}
    assert (plans["fast"][0].nrc, plans["fast"][0].ncc) == (1, 1)
    assert (plans["balanced"][0].nrc, plans["balanced"][0].ncc) in {(1, 1), (8, 8)}
    # Every row is the sample here, so the search keeps the cheapest of all its class counts.
    assert plans["best"][1] <= plans["balanced"][1] <= plans["fast"][1]
    assert classes.ranked_plan(sym, 31, None, [(8, 8)]).bits == classes.fixed_plan(sym, 31, None, [(8, 8)]).bits


def test_ranking_plans_only_what_can_win_and_keeps_the_same_plans(monkeypatch):
    """Plans are skipped only where their least cost exceeds the plans kept: the result is that of planning all."""
    from ecnn.context import rowcol as rowcol_ctx

    rng = np.random.default_rng(4)
    scale = np.exp(rng.uniform(-3, 0, (200, 1))) * np.exp(rng.uniform(-2, 0, (1, 120)))
    sym = np.minimum(np.abs(rng.laplace(0, 20, (200, 120)) * scale), 30).astype(np.int32)
    counts = [rowcol_ctx.context_counts(sym, 31, None, a, b) for a, b in classes.ROWCOL_CLASSES]
    every = sorted(((rowcol_ctx.plan_counts(c).bits, i) for i, c in enumerate(counts)))
    assert all(counts[i].least_bits <= b for b, i in every)
    planned = []
    real = rowcol_ctx.plan_counts
    monkeypatch.setattr(rowcol_ctx, "plan_counts", lambda c: planned.append(c) or real(c))
    for keep in (1, 3):
        planned.clear()
        got = classes._best_plans(counts, keep)
        assert [p.bits for p in got] == [b for b, _ in every[:keep]]
        assert [(p.nrc, p.ncc) for p in got] == [(counts[i].nrc, counts[i].ncc) for _, i in every[:keep]]
    assert len(planned) < len(counts)  # some were never planned


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_signed_values_plan_their_magnitudes_in_any_integer_type(dtype):
    import ecnn.numpy as en

    rng = np.random.default_rng(6)
    q = np.clip(np.rint(rng.laplace(0, 12, (64, 80)) * np.exp(rng.uniform(-2, 2, (64, 1)))), -120, 120).astype(dtype)
    kind, bits, how, _ = select.choose(q.ravel(), q.itemsize, True, 1 << 20, rows=64)
    assert kind == "rowcol"
    sym, vals, plan_, offset, n = how
    np.testing.assert_array_equal(sym, np.abs(q.astype(np.int64)))
    np.testing.assert_array_equal(vals, q)
    back = en.decode(en.encode({"q": q}, lossless=True))["q"]
    np.testing.assert_array_equal(back, q)


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_the_most_negative_value_keeps_signs_in_the_symbols(dtype):
    """-128 (int8) has magnitude 128, which the symbol range -128..127 cannot hold: rowcol then
    codes the values themselves, and the file decodes."""
    import ecnn.numpy as en

    rng = np.random.default_rng(6)
    q = np.clip(np.rint(rng.laplace(0, 12, (64, 80)) * np.exp(rng.uniform(-2, 2, (64, 1)))), -120, 120).astype(dtype)
    q[3, 5] = np.iinfo(dtype).min
    kind, bits, how, _ = select.choose(q.ravel(), q.itemsize, True, 1 << 20, rows=64)
    if kind == "rowcol":
        assert how[1] is None  # no signs apart
    back = en.decode(en.encode({"q": q}, lossless=True))["q"]
    np.testing.assert_array_equal(back, q)
