"""tools/fuzz_ecnn.py: a short run of each target, so the harness and the readers stay honest.

The benchmark run (100,000 inputs per target) is in bench/RESULTS.md; this runs
a few hundred inputs in-process and fails on any crash.
"""

from __future__ import annotations

import random
import warnings

import fuzz_ecnn as fz
import pytest


@pytest.fixture(scope="module")
def seeds():
    return fz.load_seeds()


def test_inputs_are_reproducible_from_their_number(seeds):
    for i in range(20):
        assert fz.make_input(seeds, 0, "decode", i) == fz.make_input(seeds, 0, "decode", i)
    assert fz.make_input(seeds, 0, "decode", 1) != fz.make_input(seeds, 1, "decode", 1)


@pytest.mark.parametrize("target, n", [("decode", 400), ("open", 300), ("cli", 120)])
def test_a_short_fuzz_run_has_no_crash(seeds, tmp_path, target, n):
    outcomes: dict[str, int] = {}
    gens: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            gen, data = fz.make_input(seeds, 11, target, i)
            gens.add(gen)
            try:
                fz.RUN[target](data, random.Random(i), tmp_path)
                what = "accepted"
            except fz.Rejected as r:
                what = r.what
            except Exception as e:  # a crash: report which input, to replay with --seed 11 --replay
                raise AssertionError(f"{target}:{i} ({gen}) crashed: {type(e).__name__}: {e}") from e
            outcomes[what] = outcomes.get(what, 0) + 1
    assert gens == set(fz.GEN)
    assert outcomes.get("accepted", 0) > 0
    if target != "cli":  # the inputs reach many different checks, not only the signature
        assert len(outcomes) >= 8, outcomes


def test_corruption_counts_every_flip_and_cut_of_a_small_file():
    data = (fz.ROOT / "fixtures" / "v1" / "valid" / "ancillary_fields.ecnn").read_bytes()
    [row] = fz.corruption([("ancillary_fields", data)], workers=1)
    assert row["bytes"] == len(data) and row["flips"] == 8 * len(data) and row["cuts"] == len(data)
    assert row["flips_found"] == row["flips"] and row["cuts_found"] == row["cuts"] and row["bad"] == []


def test_corruption_reports_damage_that_decodes(monkeypatch):
    """The counts come from each damaged input's outcome: a reader that let damage through would show."""
    data = fz.small_model()
    monkeypatch.setattr(fz, "_damage_outcome", lambda bad, ref: "silent" if bad[:1] not in (data[:1], b"") else "detected")
    [row] = fz.corruption([("small", data)], workers=1)
    assert row["flips_found"] == row["flips"] - 8 and row["cuts_found"] == row["cuts"]
    assert len(row["bad"]) == 8 and all("byte 0:" in b and "silent" in b for b in row["bad"])


def test_found_crashes_stay_fixed(seeds, tmp_path):
    """Inputs that once crashed a reader (``fuzz_ecnn --seed S --replay TARGET:I``) are rejected with a typed error."""
    for seed, target, i in [(3, "decode", 2281)]:  # a fields tensor whose head stream's coder was a map
        _, data = fz.make_input(seeds, seed, target, i)
        with pytest.raises(fz.Rejected):
            fz.RUN[target](data, random.Random(i), tmp_path)
