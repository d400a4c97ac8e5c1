"""Every example in README.md and docs/*.md runs, and every link in them leads somewhere.

The pages are found by glob, so a page added to docs/ is tested without a change here.
Each fenced block is one example, run in a fresh temporary folder:

- ```` ```python ````: executed in this process;
- ```` ```sh ````: run by bash (``set -euo pipefail``), with ``ecnn`` and ``python``
  meaning this checkout's command and interpreter;
- ```` ```console ````: shown, not run (benchmarks, set-up scripts, commands that need
  files a reader has and a test has not). Each ``ecnn ...`` line must still parse with
  the command's own argument parser, and each ``tools/...`` script named must exist and
  know every ``--option`` given to it.

Other fences (``text``, ``json``, none) are output or data, not examples.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import benchlib  # tools/, put on the path by conftest.py

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Linked from README.md, written on another branch; drop a name once its page is merged.
PENDING: set[str] = set()

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(kind: str) -> list[tuple[str, int, str]]:
    """``(page, n, code)`` for every block of ``kind``, n counting from 1 within the page."""
    out = []
    for page in PAGES:
        found = [code for k, code in FENCE.findall(page.read_text()) if k == kind]
        out += [(page.relative_to(ROOT).as_posix(), i + 1, code) for i, code in enumerate(found)]
    return out


PYTHON = _blocks("python")
SH = _blocks("sh")
CONSOLE = _blocks("console")


def _id(block) -> str:
    return f"{block[0]}:{block[1]}"


def test_the_pages_have_examples():
    assert len(PAGES) >= 9, [p.name for p in PAGES]  # README.md and the pages of docs/
    assert len(PYTHON) >= 10 and len(SH) >= 2 and len(CONSOLE) >= 3


def test_the_two_commands_are_what_ci_runs():
    """README.md's two commands: the demo, and the tests exactly as .ci/run runs them."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec bash tools/test.sh" in ci
    for command in ("bash tools/demo.sh", "bash tools/test.sh"):
        assert command in readme and (ROOT / command.split()[1]).is_file(), command


@pytest.mark.parametrize("block", PYTHON, ids=_id)
def test_python_example(block, tmp_path, monkeypatch):
    page, n, code = block
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page} python example {n}", "exec"), {"__name__": "__example__"})


_SH_PRELUDE = """set -euo pipefail
ecnn() {{ {py} -m ecnn "$@"; }}
python() {{ {py} "$@"; }}
"""


@pytest.mark.parametrize("block", SH, ids=_id)
def test_sh_example(block, tmp_path):
    page, n, code = block
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = _SH_PRELUDE.format(py=shlex.quote(sys.executable)) + code
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{page} sh example {n} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


def _commands(code: str) -> list[list[str]]:
    """The commands of a console block: each line without its ``# comment``, split as the shell would."""
    out = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "$":
            words = words[1:]
        if words:
            out.append(words)
    return out


@pytest.mark.parametrize("block", CONSOLE, ids=_id)
def test_console_example_names_real_commands_and_options(block):
    from ecnn.cli import build_parser

    page, n, code = block
    for words in _commands(code):
        if words[0] == "ecnn":
            try:
                build_parser().parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"{page} console example {n}: `{shlex.join(words)}` does not parse")
            continue
        scripts = [w for w in words if w.startswith("tools/")]
        for script in scripts:
            path = ROOT / script
            assert path.is_file(), f"{page} console example {n}: no {script}"
            if path.suffix == ".py":
                source = path.read_text()
                for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
                    assert f'"{option}"' in source, f"{page} console example {n}: {script} has no {option}"


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        out += [(page.relative_to(ROOT).as_posix(), target) for target in _LINK.findall(text)]
    return out


@pytest.mark.parametrize("link", _links(), ids=lambda link: f"{link[0]}->{link[1]}")
def test_link_leads_somewhere(link):
    """A relative link names a file of the repository, and its #fragment one of that page's headings."""
    page, target = link
    if re.match(r"[a-z]+:", target):  # http:, https:, mailto:: not followed, nothing is downloaded
        return
    path, _, fragment = target.partition("#")
    file = (ROOT / page).parent / path if path else ROOT / page
    name = file.resolve().relative_to(ROOT).as_posix() if file.resolve().is_relative_to(ROOT) else str(file)
    if name in PENDING and not file.exists():
        return
    assert file.exists(), f"{page} links to {target}: no such file"
    if fragment:
        assert file.suffix == ".md", f"{page} links to {target}: a fragment of a file that is not Markdown"
        headings = benchlib.anchors(file.read_text())
        assert f"#{fragment}" in headings, (
            f"{page} links to {target}, which has no such heading (a benchmark run renames its section: "
            "take the fragment from the contents list of bench/RESULTS.md)"
        )
