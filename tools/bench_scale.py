#!/usr/bin/env python3
"""Checkpoints larger than memory: wall time, peak PSS and CPU use of ``ecnn`` on a sharded bf16 checkpoint.

The script generates a synthetic Llama-like bf16 checkpoint with
``tools/make_checkpoint.py`` (``--size``, 3 GiB by default) and runs, each as
a child process started from a clean interpreter:

* ``ecnn pack ckpt/ -o b.ecnn --lossless -f -q`` (then b.ecnn is deleted),
* ``ecnn pack ckpt/ -o a.ecnn --bits 8 -f -q`` (then the checkpoint is deleted),
* ``ecnn unpack a.ecnn -o out/ -f -q`` (then out/ is deleted),
* ``ecnn verify a.ecnn -q``,
* ``ecnn.torch.load_into`` of a.ecnn into a module built on the meta device
  from the file's tensor list (skipped when the model does not fit in memory).

For each it measures the wall time, the peak PSS of the whole process tree
(the child and every descendant, forked encode workers included: the sum of
``Pss:`` in ``/proc/PID/smaps_rollup``, sampled every 0.1 s), the largest
single process's peak RSS (its ``VmHWM``, the high-water mark the kernel
keeps, read at the same times: only a peak in a process's last 0.1 s can be
missed) and the CPU use (user + system seconds of the tree, from
``os.wait4``, over wall time and cores). ``ru_maxrss`` would not do: the
high-water mark it reports survives ``exec`` and starts at the launching
process's own RSS.

The issue's time target is that each command runs within 1.3x of the bytes
over the codec's own throughput on the same machine, i.e. that streaming adds
no stalls. That throughput is measured, not assumed: every step first runs on
a tiny checkpoint (its fixed cost: the interpreter, imports, opening files),
then on a checkpoint of the same layout small enough to sit in the page cache
(``--calib-size``, 1 GiB by default); the step's throughput is the
calibration checkpoint's bytes over its wall time less the fixed cost. The
ratio printed is the wall time over the fixed cost plus the bytes at that
throughput.

Generated files go under ``--workdir`` and are deleted as the run goes, in an
order that keeps at most the checkpoint plus one ``.ecnn`` file (or the 8-bit
file plus the unpacked folder) on disk; the script refuses to start when the
disk lacks twice the checkpoint's size.

Usage (from the repository root)::

    .venv/bin/python tools/bench_scale.py [--size 3GiB] [--calib-size 1GiB] [--workdir DIR] [--record]
    .venv/bin/python tools/bench_scale.py --size 32GiB --record
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import command_line, machine, proc_kib, record_results  # noqa: E402

log = logging.getLogger("bench_scale")

GiB = 1 << 30
SAMPLE_S = 0.1
TIME_RATIO = 1.3  # the "within 1.3x of bytes / the codec's throughput"
LOAD_SLACK = GiB  # load_into's allowance above the model itself: interpreter, torch and the decode window
STEPS = ("pack --bits 8", "pack --lossless", "unpack", "verify", "load_into (meta)")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """``3GiB``, ``200MiB``, ``1.5GB`` or a byte count, as bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 3GiB, 200MiB, 1.5GB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def size_arg(n: int) -> str:
    """A size as make_checkpoint's ``--size`` takes it: whole GiB or MiB."""
    return f"{n >> 30}GiB" if n % GiB == 0 else f"{max(n >> 20, 1)}MiB"


def human(n: float) -> str:
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= f:
            return f"{n / f:.2f} {unit}"
    return f"{int(n)} B"


# --- measuring a process tree ---------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    """Parent pid to child pids, from ``/proc/*/stat``.

    ``/proc/PID/task/TID/children`` would be cheaper, but kernels without
    CONFIG_PROC_CHILDREN lack it; the stat files are always there.
    """
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])  # the command name may hold spaces and parentheses
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    if os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            for task in Path(f"/proc/{p}/task").glob("*"):
                try:
                    todo.extend(int(c) for c in (task / "children").read_text().split())
                except OSError:
                    pass
        return out
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def hwm_bytes(pid: int) -> int:
    """A process's peak RSS so far (``VmHWM``; 0 once it has gone)."""
    return _proc_bytes(pid, "status", "VmHWM")


def pss_bytes(pid: int) -> int:
    """A process's proportional set size (0 once it has gone)."""
    return _proc_bytes(pid, "smaps_rollup", "Pss")


def _proc_bytes(pid: int, file: str, key: str) -> int:
    try:
        return proc_kib(key, pid, file) * 1024
    except (OSError, ValueError, KeyError):
        return 0


@dataclass
class Measured:
    wall_s: float
    peak_pss: int  # bytes, of the whole tree, sampled
    max_rss: int  # bytes, the largest VmHWM of a single process, sampled
    cpu_s: float  # user + system seconds of the child and the descendants it waited for
    rc: int
    stdout: str
    stderr: str


def measure(cmd: list[str], cwd: Path, env: dict | None = None) -> Measured:
    """Run ``cmd``, sampling the PSS and peak RSS of its process tree every :data:`SAMPLE_S` seconds."""
    log.info("$ %s", " ".join(cmd))
    out_path, err_path = cwd / ".bench_scale.out", cwd / ".bench_scale.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        peak = hwm = 0
        while True:
            # wait4 rather than Popen.wait: its rusage covers the child and the descendants it reaped
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - t0
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            pids = tree(proc.pid)
            peak = max(peak, sum(pss_bytes(p) for p in pids))
            hwm = max([hwm, *(hwm_bytes(p) for p in pids)])
            time.sleep(SAMPLE_S)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    out_path.unlink()
    err_path.unlink()
    m = Measured(wall, peak, hwm, ru.ru_utime + ru.ru_stime, proc.returncode, stdout, stderr)
    if m.rc:
        log.error("exit status %d: %s", m.rc, stderr.strip()[-2000:])
    else:
        log.info("%.2f s, peak PSS %s, max RSS %s, CPU %.1f s", m.wall_s, human(m.peak_pss), human(m.max_rss), m.cpu_s)
    return m


# --- the load_into child ----------------------------------------------------------------


def load_child(path: str, device: str) -> int:
    """Build a module tree matching the file's tensors on the meta device and ``load_into`` it.

    Prints a JSON line: the model's bytes, the load time, and how many tensors stayed on meta.
    """
    import torch

    import ecnn
    import ecnn.torch as et
    from ecnn import dtypes

    with ecnn.open(path) as f:
        infos = f.infos()
    with torch.device("meta"):
        root = torch.nn.Module()
        for info in infos:
            *parts, leaf = info.name.split(".")
            m = root
            for part in parts:
                if part not in m._modules:
                    m.add_module(part, torch.nn.Module())
                m = m._modules[part]
            t = torch.empty(info.shape, dtype=et.torch_dtype(dtypes.get(info.dtype)))
            if t.is_floating_point():
                m.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=False))
            else:
                m.register_buffer(leaf, t)
    t0 = time.perf_counter()
    et.load_into(root, path, device=device)
    load_s = time.perf_counter() - t0
    state = root.state_dict()
    on_meta = sum(t.is_meta for t in state.values())
    model_bytes = sum(t.numel() * t.element_size() for t in state.values())
    print(json.dumps({"model_bytes": model_bytes, "load_s": load_s, "on_meta": on_meta}))
    return 1 if on_meta else 0


# --- the steps --------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    m: Measured | None  # None: skipped
    note: str = ""


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def ecnn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ecnn", *args]


def checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def make_checkpoint(generator: Path, folder: Path, size: int) -> int:
    """Generate a bf16 checkpoint of about ``size`` bytes; returns its bytes on disk."""
    if folder.exists():
        shutil.rmtree(folder)
    cmd = [sys.executable, str(generator), str(folder), "--size", size_arg(size), "--dtype", "bf16"]
    m = measure(cmd, folder.parent, child_env())
    if m.rc:
        raise SystemExit(f"{generator.name} failed (exit status {m.rc})")
    n = checkpoint_bytes(folder)
    shards = len(list(folder.glob("*.safetensors")))
    log.info("checkpoint: %s in %d shards, %s, generated in %.1f s", folder, shards, human(n), m.wall_s)
    return n


def memory_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_steps(ckpt: Path, work: Path, pack_opts: list[str], model_bytes: int) -> tuple[dict[str, Step], dict[str, int]]:
    """Run every step on ``ckpt``, deleting what each leaves once the next no longer needs it.

    The checkpoint itself is deleted after the two packs. Returns the steps and the file sizes.
    """
    env = child_env()
    a, b, out = work / "a.ecnn", work / "b.ecnn", work / "out"
    steps: dict[str, Step] = {}
    sizes: dict[str, int] = {}
    # Lossless first: then at most the checkpoint and one .ecnn file are on disk together.
    cmd = ecnn_cmd("pack", str(ckpt), "-o", str(b), "--lossless", *pack_opts, "-f", "-q")
    steps["pack --lossless"] = Step("pack --lossless", measure(cmd, work, env))
    sizes["lossless"] = b.stat().st_size if b.exists() else 0
    b.unlink(missing_ok=True)
    cmd = ecnn_cmd("pack", str(ckpt), "-o", str(a), "--bits", "8", *pack_opts, "-f", "-q")
    steps["pack --bits 8"] = Step("pack --bits 8", measure(cmd, work, env))
    sizes["bits8"] = a.stat().st_size if a.exists() else 0
    shutil.rmtree(ckpt)
    if not a.exists():
        return steps, sizes
    steps["unpack"] = Step("unpack", measure(ecnn_cmd("unpack", str(a), "-o", f"{out}{os.sep}", "-f", "-q"), work, env))
    sizes["unpacked"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    steps["verify"] = Step("verify", measure(ecnn_cmd("verify", str(a), "-q"), work, env))
    if model_bytes + LOAD_SLACK > memory_available():
        why = f"skipped: the model ({human(model_bytes)}) does not fit in the available memory"
        steps["load_into (meta)"] = Step("load_into (meta)", None, why)
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--load-child", str(a)]
        m = measure(cmd, work, env)
        note = ""
        if not m.rc:
            got = json.loads(m.stdout.strip().splitlines()[-1])
            note = f"model {human(got['model_bytes'])}, load_into itself {got['load_s']:.2f} s"
        steps["load_into (meta)"] = Step("load_into (meta)", m, note)
    a.unlink()
    return steps, sizes


# --- targets and the table ------------------------------------------------------------------


def pss_target(step: str, size: int, model_bytes: int) -> int:
    """The issue's peak-PSS target for a step: 2 GiB, 1.5 GiB for pack --bits 8 and unpack up to 3 GiB checkpoints."""
    if step == "load_into (meta)":
        return model_bytes + LOAD_SLACK
    if step in ("pack --bits 8", "unpack") and size <= 3 * GiB:
        return 3 * GiB // 2
    return 2 * GiB


def expected_wall(
    step: str, nbytes: int, fixed: dict[str, float], calib: dict[str, Step] | None, calib_bytes: int
) -> float | None:
    """The step's fixed cost plus ``nbytes`` at its throughput on the calibration checkpoint."""
    if not calib or step not in calib or step not in fixed or calib[step].m is None or calib[step].m.rc:
        return None
    work_s = max(calib[step].m.wall_s - fixed[step], 1e-3)
    return fixed[step] + nbytes * work_s / calib_bytes


def table(
    steps: dict[str, Step], size: int, nbytes: int, model_bytes: int, fixed: dict[str, float], calib, calib_bytes
) -> tuple[str, bool]:
    """The Markdown table, and whether every step met its targets."""
    cores = len(os.sched_getaffinity(0))
    lines = [
        "| step | wall s | MB/s | peak PSS | max RSS (1 process) | CPU use | target | met? |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    ok = True
    for name in STEPS:
        s = steps.get(name)
        if s is None or s.m is None:
            lines.append(f"| {name} | – | – | – | – | – | – | {s.note if s else 'not run'} |")
            continue
        m = s.m
        limit = pss_target(name, size, model_bytes)
        exp = expected_wall(name, nbytes, fixed, calib, calib_bytes)
        target = f"PSS ≤ {human(limit)}" + (f", wall ≤ {TIME_RATIO}x {exp:.1f} s" if exp else "")
        if m.rc:
            met, ok = f"no: exit status {m.rc}", False
        else:
            misses = []
            if m.peak_pss > limit:
                misses.append("PSS")
            if exp and m.wall_s > TIME_RATIO * exp:
                misses.append(f"wall {m.wall_s / exp:.2f}x")
            ok = ok and not misses
            met = ("no: " + ", ".join(misses)) if misses else "yes" + (f" ({m.wall_s / exp:.2f}x)" if exp else "")
        cpu = m.cpu_s / m.wall_s / cores if m.wall_s else 0.0
        lines.append(
            f"| {name} | {m.wall_s:.1f} | {nbytes / m.wall_s / 1e6:.0f} | {human(m.peak_pss)} | {human(m.max_rss)} "
            f"| {100 * cpu:.0f}% of {cores} | {target} | {met} |"
        )
    return "\n".join(lines), ok


def versions() -> str:
    import numpy as np
    import torch

    import ecnn

    py = platform.python_version()
    return f"Python {py}, torch {torch.__version__}, numpy {np.__version__}, ecnn {ecnn.__version__}"


# --- main ---------------------------------------------------------------------------------------


def tiny_checkpoint(folder: Path) -> int:
    """A one-shard checkpoint of two small bf16 tensors, written by hand (no torch here): the steps' fixed costs."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shapes = {"model.layers.0.mlp.up_proj.weight": (16, 8), "model.norm.weight": (8,)}
    header, data, at = {}, bytearray(), 0
    for name, shape in shapes.items():
        n = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [at, at + n]}
        data += bytes((i * 37) % 251 & 0x3F for i in range(n))  # small finite bf16 values
        at += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    (folder / "model.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + bytes(data))
    return checkpoint_bytes(folder)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=parse_size, default=3 * GiB, help="checkpoint size (default 3GiB)")
    ap.add_argument(
        "--calib-size", type=parse_size, default=GiB,
        help="checkpoint the single-run throughput is measured on (default 1GiB; at most half of --size)",
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ecnn-bench-scale"), help="where files go")
    ap.add_argument("--effort", choices=("fast", "balanced", "best"), help="ecnn pack --effort (default: pack's own)")
    ap.add_argument(
        "--generator", type=Path, default=ROOT / "tools" / "make_checkpoint.py",
        help="the checkpoint generator (default: tools/make_checkpoint.py; another must take its arguments)",
    )
    ap.add_argument("--record", action="store_true", help="record the table in bench/RESULTS.md")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md", help="results file")
    ap.add_argument("--load-child", metavar="ECNN", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help="where load_into puts the tensors (default: cpu)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.load_child:
        return load_child(args.load_child, args.device)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.generator.is_file():
        ap.error(f"{args.generator} does not exist (it generates the checkpoint)")
    calib_size = min(args.calib_size, args.size // 2)

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # On disk at once: the checkpoint and its lossless file (at most its size),
    # or later the 8-bit file and the unpacked folder.
    need = 2 * args.size + GiB // 2
    free = shutil.disk_usage(work).free
    if free < need:
        raise SystemExit(
            f"{work}: {human(free)} free on its disk, the run needs about {human(need)} (twice --size and a margin)"
        )
    pack_opts = ["--effort", args.effort] if args.effort else []
    started = time.perf_counter()

    log.info("fixed costs: every step on a tiny checkpoint")
    ckpt = work / "ckpt"
    tiny_bytes = tiny_checkpoint(ckpt)
    tiny, _ = run_steps(ckpt, work, pack_opts, tiny_bytes)
    fixed = {k: s.m.wall_s for k, s in tiny.items() if s.m is not None and not s.m.rc}

    log.info("calibration: the single-run throughput on a %s checkpoint", human(calib_size))
    calib_bytes = make_checkpoint(args.generator, ckpt, calib_size)
    calib, _ = run_steps(ckpt, work, pack_opts, calib_bytes)

    log.info("the run: a %s checkpoint", human(args.size))
    nbytes = make_checkpoint(args.generator, ckpt, args.size)
    steps, sizes = run_steps(ckpt, work, pack_opts, nbytes)
    elapsed = time.perf_counter() - started
    with contextlib.suppress(OSError):
        work.rmdir()

    md, ok = table(steps, args.size, nbytes, nbytes, fixed, calib, calib_bytes)
    calib_md, _ = table(calib, calib_size, calib_bytes, calib_bytes, fixed, None, calib_bytes)
    print(md, flush=True)
    print(f"\ncalibration ({human(calib_bytes)} checkpoint):\n\n{calib_md}", flush=True)

    if args.record:
        when = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        name = "bench_scale" if args.size == 3 * GiB else f"bench_scale --size {size_arg(args.size)}"
        notes = "".join(f"- {s.name}: {s.note}\n" for s in steps.values() if s.note)
        section = (
            f"## {name}: a {human(nbytes)} sharded bf16 checkpoint through pack, unpack, verify, load_into"
            f" ({when})\n\n"
            f"- date: {when}\n"
            f"- machine: {machine()}\n"
            f"- software: {versions()}\n"
            f"- command (from the repository root): `{command_line()}`\n"
            f"- checkpoint: `tools/make_checkpoint.py --size {size_arg(args.size)} --dtype bf16`, {human(nbytes)}; "
            f"`--bits 8`: {human(sizes.get('bits8', 0))}, `--lossless`: {human(sizes.get('lossless', 0))}"
            f"{', pack ' + ' '.join(pack_opts) if pack_opts else ''}; whole run {elapsed:.0f} s\n"
            "- peak PSS: of the whole process tree (forked workers included), sampled every 0.1 s; "
            "max RSS: the largest single process's peak RSS (`VmHWM`, read at the same times). MB/s: checkpoint bytes over wall time. "
            "CPU use: user + system seconds of the tree over wall time and cores.\n"
            f"- wall target: within {TIME_RATIO}x of the step's fixed cost"
            f" (its wall time on a {human(tiny_bytes)} checkpoint: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in fixed.items())
            + f") plus the bytes at its throughput on a {human(calib_bytes)} checkpoint of the same layout (below).\n"
            f"{notes}\n{md}\n\n"
            f"Calibration, the {human(calib_bytes)} checkpoint:\n\n{calib_md}\n"
        )
        record_results(name, section, args.results)
    log.info("done in %.0f s", elapsed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
