"""Helpers every benchmark in tools/ shares: the machine line, the command line,
and recording a section in bench/RESULTS.md, the dashboard of today's figures
(one section per benchmark; the runs a new one replaces go to bench/history/).
Imports nothing heavy."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
RESULTS_HEADING = "# Benchmark results\n\nEvery figure here was measured by the command shown with it.\n"

log = logging.getLogger(__name__)


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` entry in KiB (``VmRSS``, ``VmHWM``, ...)."""
    return proc_kib(key)


def proc_kib(key: str, pid: int | str = "self", file: str = "status") -> int:
    """An entry of ``/proc/<pid>/<file>`` in KiB (``VmHWM`` in ``status``, ``Pss`` in ``smaps_rollup``, ...).

    Raises:
        KeyError: the file has no such entry.
        OSError: no such process (or file).
    """
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (``/proc/self/clear_refs``); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine() -> str:
    """``N CPUs (nproc), <CPU model>, <RAM>`` from /proc."""
    model, mem = "unknown CPU", "unknown RAM"
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:"))
        mem = f"{kb / 1024**2:.1f} GiB RAM"
    except (OSError, StopIteration):
        pass
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{ncpu} CPUs (nproc), {model}, {mem}"


def _relative(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, with the interpreter and script relative to the working directory."""
    args = sys.argv[1:] if argv is None else argv
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(Path.cwd()))  # not resolved: keep .venv/bin/python, not its target
    except ValueError:
        exe_s = str(exe)
    return shlex.join([exe_s, _relative(Path(sys.argv[0])), *args])


def _split(text: str) -> tuple[str, list[str]]:
    """Split RESULTS.md text into its preamble and its ``## `` sections.

    A section runs from its ``## `` heading to the next one; each is returned with
    its trailing blank lines removed and ending in exactly one newline.
    """
    lines = text.splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if ln.startswith("## ")]
    if not starts:
        return text, []
    bounds = zip(starts, starts[1:] + [len(lines)])
    sections = ["".join(lines[a:b]).rstrip("\n") + "\n" for a, b in bounds]
    return "".join(lines[: starts[0]]), sections


def _heading(section: str) -> str:
    """A section's heading line without its ``## ``."""
    return section.split("\n", 1)[0][3:]


def section_name(section: str) -> str:
    """The benchmark name of a section: its heading up to the first ``": "``."""
    return _heading(section).split(": ", 1)[0].strip()


def history_path(name: str, path: Path = RESULTS) -> Path:
    """Where the replaced runs of benchmark ``name`` go: ``history/<tool>.md`` beside ``path``.

    A name may carry the options of a sub-run (``fuzz_ecnn --corruption``); all runs
    of one tool share one history file.
    """
    return path.parent / "history" / f"{name.split()[0]}.md"


def anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading (its text without ``#``): ``#bench_pack-all-minilm-l6-v2-...``.

    Lower case, every character but letters, digits, ``_``, ``-`` and spaces dropped,
    each space a ``-``. A heading that repeats an earlier one gets ``-1``, ``-2``...;
    :func:`anchors` counts those.
    """
    return "#" + re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> list[str]:
    """The fragments of every heading of a Markdown text, in order, repeats numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.*)", line)
        if m:
            a = anchor(m.group(1))
            out.append(a if a not in seen else f"{a}-{seen[a]}")
            seen[a] = seen.get(a, 0) + 1
    return out


def _preamble(sections: list[str]) -> str:
    contents = "".join(f"- [{_heading(s)}]({anchor(_heading(s))})\n" for s in sections) or "- (none yet)\n"
    return (
        f"{RESULTS_HEADING}\n"
        "Today's figures: one section per benchmark (a tool, or one sub-run of it such as "
        "`fuzz_ecnn --corruption`), each with the command that produced it, its date and the machine. "
        "A new run replaces its benchmark's section (`tools/benchlib.py: record_results`); "
        "the runs it replaced are kept, oldest first, in [bench/history/](history/) (one file per tool).\n\n"
        f"Contents:\n\n{contents}"
    )


def render(sections: list[str]) -> str:
    """The whole RESULTS.md text: the preamble with its contents list, then the sections."""
    return _preamble(sections) + "".join("\n" + s for s in sections)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The file keeps its permissions (a new one gets 0644; mkstemp's own are 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def append_history(name: str, sections: list[str], note: str, path: Path = RESULTS) -> Path:
    """Append ``sections`` (verbatim) to the history file of ``name`` under a one-line heading ``note``."""
    hist = history_path(name, path)
    if hist.exists():
        old = hist.read_text(encoding="utf-8")
    else:
        old = (
            f"# {name.split()[0]}: earlier runs\n\nRuns that bench/RESULTS.md no longer shows, oldest first, "
            "each under a line saying when it left the dashboard.\n"
        )
    body = "".join("\n" + s for s in sections)
    _write_atomic(hist, old.rstrip("\n") + "\n\n" + f"# {note}\n" + body)
    return hist


def record_results(name: str, section: str, path: Path = RESULTS) -> None:
    """Make ``section`` the one section of benchmark ``name`` in RESULTS.md.

    The benchmark's previous section, if any, is replaced in place and appended to
    ``history/<tool>.md`` beside ``path``; a new benchmark's section goes in name
    order. Other sections stay byte for byte as they were, and the preamble's
    contents list is rewritten to match. Both files are written atomically.

    Args:
        name: The benchmark, e.g. ``"bench_codec"`` or ``"fuzz_ecnn --corruption"``.
        section: Markdown starting with ``"## <name>: "``; it runs to its end and holds
            no other ``## `` heading.
        path: The dashboard file (bench/RESULTS.md by default).

    Raises:
        ValueError: If ``name`` is empty or holds outer spaces or ``": "``, or if
            ``section`` does not start with ``"## <name>: "`` or holds another ``## `` heading.
    """
    if not name or name != name.strip() or ": " in name or "\n" in name:
        raise ValueError(f"not a benchmark name: {name!r}")
    section = section.lstrip("\n").rstrip("\n") + "\n"
    if not section.startswith(f"## {name}: "):
        raise ValueError(f"a section of {name!r} must start with '## {name}: ', not {section[:60]!r}")
    if "\n## " in section:
        raise ValueError(f"the section of {name!r} holds another '## ' heading")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    _, sections = _split(text)
    replaced = [s for s in sections if section_name(s) == name]
    if replaced:
        at = next(i for i, s in enumerate(sections) if section_name(s) == name)
        sections = [s for s in sections if section_name(s) != name]
    else:
        at = next((i for i, s in enumerate(sections) if section_name(s) > name), len(sections))
    sections.insert(at, section)
    if replaced:
        hist = history_path(name, path)
        kept = hist.read_text(encoding="utf-8") if hist.exists() else ""
        moved = [s for s in replaced if s not in kept]  # the migrated dashboard copies are there already
        if moved:
            when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            append_history(name, moved, f"moved from bench/RESULTS.md on {when}", path)
    _write_atomic(path, render(sections))
    log.info("recorded the results of %s in %s", name, path)
