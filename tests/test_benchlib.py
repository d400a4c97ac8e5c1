"""tools/benchlib.py: record_results keeps bench/RESULTS.md a dashboard of one section per benchmark."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import benchlib
from benchlib import record_results


def _section(name: str, when: str, body: str = "figures") -> str:
    return f"## {name}: a run ({when})\n\n- command: `x`\n- {body}\n"


def _names(path: Path) -> list[str]:
    _, sections = benchlib._split(path.read_text())
    return [benchlib.section_name(s) for s in sections]


def test_creates_the_file_with_its_preamble_and_contents(tmp_path):
    res = tmp_path / "bench" / "RESULTS.md"
    record_results("bench_load", _section("bench_load", "Mon 1"), res)
    text = res.read_text()
    assert text.startswith("# Benchmark results\n")
    assert "bench/history/" in text.split("\n## ", 1)[0]
    assert "- [bench_load: a run (Mon 1)](#bench_load-a-run-mon-1)\n" in text.split("\n## ", 1)[0]
    assert _names(res) == ["bench_load"]
    assert not (tmp_path / "bench" / "history").exists()


def test_replacing_keeps_one_section_and_moves_the_old_one_to_history(tmp_path):
    res = tmp_path / "RESULTS.md"
    for name in ("bench_pack", "bench_codec", "fuzz_ecnn --corruption", "bench_load"):
        record_results(name, _section(name, "Mon 1", f"old {name}"), res)
    assert _names(res) == ["bench_codec", "bench_load", "bench_pack", "fuzz_ecnn --corruption"]
    _, before = benchlib._split(res.read_text())

    record_results("bench_load", _section("bench_load", "Tue 2", "new"), res)
    _, after = benchlib._split(res.read_text())
    assert [benchlib.section_name(s) for s in after] == [
        "bench_codec",
        "bench_load",
        "bench_pack",
        "fuzz_ecnn --corruption",
    ]
    assert after[1] == _section("bench_load", "Tue 2", "new")
    for i in (0, 2, 3):  # the others, byte for byte and in their places
        assert after[i] == before[i]
    hist = (tmp_path / "history" / "bench_load.md").read_text()
    assert _section("bench_load", "Mon 1", "old bench_load") in hist
    assert "Tue 2" not in hist
    assert hist.count("\n# moved from bench/RESULTS.md on ") == 1

    # a third run: history grows, newest last; the dashboard still has one section
    record_results("bench_load", _section("bench_load", "Wed 3", "newer"), res)
    hist = (tmp_path / "history" / "bench_load.md").read_text()
    assert hist.index("old bench_load") < hist.index("- new\n")
    assert _names(res).count("bench_load") == 1
    head = res.read_text().split("\n## ", 1)[0]
    assert "- [bench_load: a run (Wed 3)](#bench_load-a-run-wed-3)\n" in head and "Tue 2" not in head

    # a sub-run's history shares its tool's file
    record_results("fuzz_ecnn --corruption", _section("fuzz_ecnn --corruption", "Tue 2"), res)
    assert "old fuzz_ecnn --corruption" in (tmp_path / "history" / "fuzz_ecnn.md").read_text()


def test_a_new_benchmark_goes_in_name_order_and_the_contents_follow(tmp_path):
    res = tmp_path / "RESULTS.md"
    for name in ("bench_pack", "fuzz_ecnn"):
        record_results(name, _section(name, "Mon 1"), res)
    _, before = benchlib._split(res.read_text())
    record_results("bench_codec --ecnn", _section("bench_codec --ecnn", "Tue 2"), res)
    text = res.read_text()
    _, after = benchlib._split(text)
    assert [benchlib.section_name(s) for s in after] == ["bench_codec --ecnn", "bench_pack", "fuzz_ecnn"]
    assert after[1:] == before
    contents = [ln[2:] for ln in text.split("\n## ", 1)[0].splitlines() if ln.startswith("- ")]
    assert contents == [f"[{s.splitlines()[0][3:]}]({benchlib.anchor(s.splitlines()[0][3:])})" for s in after]
    assert set(benchlib.anchor(s.splitlines()[0][3:]) for s in after) <= set(benchlib.anchors(text))
    assert not (tmp_path / "history").exists()


def test_a_section_already_in_history_is_not_copied_twice(tmp_path):
    res = tmp_path / "RESULTS.md"
    old = _section("bench_gpu", "Mon 1")
    record_results("bench_gpu", old, res)
    benchlib.append_history("bench_gpu", [old], "moved from bench/RESULTS.md on a day", res)
    record_results("bench_gpu", _section("bench_gpu", "Tue 2"), res)
    assert (tmp_path / "history" / "bench_gpu.md").read_text().count(old) == 1


def test_the_file_as_written_splits_back_into_the_same_sections(tmp_path):
    res = tmp_path / "RESULTS.md"
    for name in ("b", "a", "c"):
        record_results(name, "\n\n" + _section(name, "Mon 1") + "\n\n\n", res)
    text = res.read_text()
    _, sections = benchlib._split(text)
    assert benchlib.render(sections) == text
    assert all(s.endswith("figures\n") for s in sections)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("bench_load", "## bench_pack: a run\n"),  # another benchmark's heading
        ("bench_load", "bench_load: a run\n"),  # no heading
        ("bench_load", "## bench_load: a run\n\n## bench_load: again\n"),  # two sections
        ("bench_load ", "## bench_load : a run\n"),  # outer space
        ("", "## : a run\n"),
    ],
)
def test_refuses_a_section_that_is_not_the_benchmarks(tmp_path, name, section):
    res = tmp_path / "RESULTS.md"
    with pytest.raises(ValueError):
        record_results(name, section, res)
    assert not res.exists()


@pytest.mark.parametrize(
    ("heading", "fragment"),
    [
        ("bench_codec: ecnn vs DeepCABAC (Mon Dec  7 14:20:09 UTC 2026)", "#bench_codec-ecnn-vs-deepcabac-mon-dec--7-142009-utc-2026"),
        ("bench_budget --models mnist: ecnn's allocation", "#bench_budget---models-mnist-ecnns-allocation"),
        ("`lenet5.ecnn` (uniform tensors, 1.1)", "#lenet5ecnn-uniform-tensors-11"),
    ],
)
def test_anchors_are_githubs(heading, fragment):
    assert benchlib.anchor(heading) == fragment


def test_repeated_headings_are_numbered_and_code_is_not_a_heading():
    text = "# A\n## B\n```sh\n# not a heading\n```\n### B\n## B\n"
    assert benchlib.anchors(text) == ["#a", "#b", "#b-1", "#b-2"]


def test_the_repository_dashboard_has_one_section_per_benchmark_and_its_contents():
    text = benchlib.RESULTS.read_text()
    _, sections = benchlib._split(text)
    names = [benchlib.section_name(s) for s in sections]
    assert len(names) == len(set(names)) and names == sorted(names)
    assert benchlib.render(sections) == text  # the preamble and its contents list are in step
    for name in names:
        assert benchlib.history_path(name).is_file(), name


def test_importing_benchlib_is_light():
    code = "import sys; sys.path.insert(0, 'tools'); import benchlib; print(sorted(m for m in ('numpy', 'torch', 'ecnn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_files_keep_their_permissions(tmp_path):
    res = tmp_path / "RESULTS.md"
    record_results("bench_pack", _section("bench_pack", "Mon 1"), res)
    assert res.stat().st_mode & 0o777 == 0o644
    res.chmod(0o664)
    record_results("bench_pack", _section("bench_pack", "Tue 2"), res)
    assert res.stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "history" / "bench_pack.md").stat().st_mode & 0o777 == 0o644


def test_every_dashboard_section_says_its_command_date_and_machine():
    _, sections = benchlib._split(benchlib.RESULTS.read_text())
    for s in sections:
        head, body = s.split("\n", 1)
        assert re.search(r"\((\w{3} \w{3} +\d+ [\d:]+ UTC \d{4}|\d{4}-\d\d-\d\d)\)$", head), head  # the date
        assert "command" in body and "machine" in body, head
