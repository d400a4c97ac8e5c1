"""Helpers every benchmark in tools/ shares: the machine line, the command line,
and appending a section to bench/RESULTS.md. Imports nothing heavy."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
RESULTS_HEADING = "# Benchmark results\n\nEvery figure here was measured by the command shown with it.\n"

log = logging.getLogger(__name__)


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` entry in KiB (``VmRSS``, ``VmHWM``, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
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


def append_results(section: str, path: Path = RESULTS) -> None:
    """Append a section to RESULTS.md (creating it with its heading if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size == 0:
        path.write_text(RESULTS_HEADING)
    with path.open("a") as f:
        f.write("\n" + section)
    log.info("appended the results to %s", path)
