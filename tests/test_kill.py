"""No data loss: ``ecnn pack`` and ``ecnn unpack`` killed with SIGKILL at many moments.

Each run is a forked child process running the real command (``ecnn.cli.main``)
that is killed with SIGKILL: either by itself at a chosen moment of the write
(after exactly N bytes of the output have reached the file, for N from 0 to the
whole file, including mid-payload; just before and just after the rename), or
by the test after a random delay. Whatever the moment, the output path must
hold the complete previous file (byte-identical) or, where there was none,
nothing or the complete new file; and whatever is left behind must be a hidden
temporary file that no one would take for a finished output.

``ecnn unpack -o DIR/`` writes a folder of shards: killed at any moment, the
folder's name holds the complete previous folder, none (only between moving
the old one aside and renaming the new one in), or the complete new one; what
is left beside it are hidden temporary folders.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from ecnn.cli import main

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

TEMP = re.compile(r"^\.ecnn-.*\.tmp$")  # the writer's temporary files (ecnn/container/writer.py)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    r = np.random.default_rng(0)
    sd = {
        "a.weight": (r.standard_normal((8, 64)) * 0.05).astype(np.float32),
        "a.bias": r.standard_normal(8).astype(np.float32),
        "table": r.integers(0, 256, 16384, dtype=np.uint8),  # stored raw: a long payload to be cut inside
        "steps": np.arange(100, dtype=np.int64),
    }
    d = tmp_path_factory.mktemp("kill")
    src = d / "model.safetensors"
    save_file(sd, str(src))
    # One run in this process first, so that every forked child starts with everything imported.
    assert main(["pack", str(src), "-o", str(d / "warm.ecnn"), "-q"]) == 0
    assert main(["unpack", str(d / "warm.ecnn"), "-o", str(d / "warm.safetensors"), "-q"]) == 0
    return src


def _child(argv: list[str], kill_after: int | None, at_replace: str | None) -> None:
    """Run the command in this (forked) process; SIGKILL it at the chosen moment."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if kill_after is not None:
        real_fdopen = os.fdopen
        written = [0]

        class Killing:
            def __init__(self, f):
                self.f = f

            def write(self, b):
                mv = memoryview(b).cast("B")
                room = kill_after - written[0]
                if room < len(mv):
                    self.f.write(mv[:room])
                    self.f.flush()  # these bytes reach the file; the rest never does
                    die()
                written[0] += len(mv)
                return self.f.write(mv)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

        def fdopen(fd, *a, **kw):
            return Killing(real_fdopen(fd, *a, **kw))

        os.fdopen = fdopen
        real_copy = getattr(os, "copy_file_range", None)

        def copy_file_range(src, dst, count, offset_src=None, offset_dst=None):
            # The payloads reach the output from the writer's spool file through this call.
            room = kill_after - written[0]
            if room < count:
                if room > 0:
                    real_copy(src, dst, room, offset_src, offset_dst)
                die()
            k = real_copy(src, dst, count, offset_src, offset_dst)
            written[0] += k
            return k

        if real_copy is not None:
            os.copy_file_range = copy_file_range
    if at_replace is not None:
        # "before" or "after" the first os.replace, or (when, n): around the n-th.
        when, nth = at_replace if isinstance(at_replace, tuple) else (at_replace, 1)
        real_replace = os.replace
        calls = [0]

        def replace(a, b):
            calls[0] += 1
            if calls[0] == nth and when == "before":
                die()
            real_replace(a, b)
            if calls[0] == nth:
                die()

        os.replace = replace
    main(argv)


def _run(argv, kill_after=None, at_replace=None, kill_in: float | None = None) -> int:
    """Fork, run the command in the child, return its wait status."""
    pid = os.fork()
    if pid == 0:
        try:
            _child(argv, kill_after, at_replace)
        finally:
            os._exit(0)
    if kill_in is not None:
        time.sleep(kill_in)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    return status


def _check_folder(folder, outputs: set[str]) -> int:
    """Every file other than the expected ones must be a hidden temporary file; remove them."""
    left = 0
    for name in os.listdir(folder):
        if name in outputs:
            continue
        assert TEMP.match(name), f"{name} left in {folder}"
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
        else:
            os.unlink(folder / name)
        left += 1
    return left


def _moments(size: int, header_end: int, rng: random.Random) -> list[int]:
    """Byte counts after which to kill: in the preamble, the header, payloads, the last byte."""
    picks = {0, 8, 20, header_end - 1, header_end + 1, size - 1, size}
    picks |= {rng.randrange(header_end, size) for _ in range(3)}
    return sorted(p for p in picks if 0 <= p <= size)


@pytest.mark.parametrize("command", ["pack", "unpack"])
def test_killed_writes_leave_the_old_file_or_none(model, tmp_path, command):
    rng = random.Random(0)
    if command == "pack":
        src, out = model, tmp_path / "model.ecnn"
        argv = ["pack", str(model), "-o", str(out), "--bits", "6", "-q", "--force"]
    else:
        src = tmp_path / "src.ecnn"
        assert main(["pack", str(model), "-o", str(src), "-q"]) == 0
        out = tmp_path / "back.safetensors"
        argv = ["unpack", str(src), "-o", str(out), "-q", "--force"]
    # The complete output, from a run that is not interrupted.
    assert os.waitstatus_to_exitcode(_run(argv)) == 0
    new = out.read_bytes()
    header_end = 20 + int.from_bytes(new[12:16], "little") if command == "pack" else 8 + int.from_bytes(new[:8], "little")
    old = b"previous contents, not to be lost\n" * 100
    names = {out.name, src.name, model.name}
    kills = 0
    for previous in (None, old) if command == "pack" else (old,):
        # Killed by itself after N bytes of the output, and around the rename.
        cases = [{"kill_after": n} for n in _moments(len(new), header_end, rng)] + [{"at_replace": "before"}, {"at_replace": "after"}]
        for case in cases:
            if previous is None:
                out.unlink(missing_ok=True)
            else:
                out.write_bytes(previous)
            status = _run(argv, **case)
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            kills += killed
            assert killed or os.waitstatus_to_exitcode(status) == 0, (case, status)
            got = out.read_bytes() if out.exists() else None
            if case.get("at_replace") == "after" or (not killed):
                assert got == new, case
            elif case.get("at_replace") == "before" or case.get("kill_after", 0) < len(new):
                assert got == previous, (case, previous is None, None if got is None else len(got))
            else:  # killed after the last byte but before the rename finished
                assert got in (previous, new), case
            _check_folder(tmp_path, names)
    assert kills >= (16 if command == "pack" else 8)


def test_pack_killed_at_random_times_over_an_existing_file(model, tmp_path):
    rng = random.Random(1)
    out = tmp_path / "model.ecnn"
    argv = ["pack", str(model), "-o", str(out), "-q", "--force"]
    t = time.perf_counter()
    assert os.waitstatus_to_exitcode(_run(argv)) == 0
    took = time.perf_counter() - t
    new = out.read_bytes()
    old = b"an older model\n" * 50
    for _ in range(6):
        out.write_bytes(old)
        _run(argv, kill_in=rng.uniform(0, took * 1.2))
        assert out.read_bytes() in (old, new)
        _check_folder(tmp_path, {out.name})


def _tree(folder) -> dict[str, bytes] | None:
    """The files of a folder and their bytes; None where there is no folder."""
    if not folder.exists():
        return None
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_unpack_to_a_folder_killed_leaves_the_old_folder_or_none(model, tmp_path):
    rng = random.Random(2)
    src = tmp_path / "src.ecnn"
    assert main(["pack", str(model), "-o", str(src), "-q"]) == 0
    out = tmp_path / "ckpt"
    argv = ["unpack", str(src), "-o", f"{out}/", "--shard-size", "10kB", "-q", "--force"]
    t = time.perf_counter()
    assert os.waitstatus_to_exitcode(_run(argv)) == 0
    took = time.perf_counter() - t
    new = _tree(out)
    assert len(new) == 3  # two shards and the index
    total = sum(len(b) for b in new.values())
    old = {"model-00001-of-00002.safetensors": b"an older shard", "model.safetensors.index.json": b"{}"}
    kills = 0
    for previous in (None, old):
        # os.replace: one per shard and the index inside the temporary folder, then the old folder
        # aside (where there is one) and the new one in.
        renames = len(new) + (2 if previous else 1)
        cases = [{"kill_after": n} for n in sorted({0, 8, total - 1, *(rng.randrange(total) for _ in range(4))})]
        cases += [{"at_replace": (when, k)} for k in range(1, renames + 1) for when in ("before", "after")]
        cases += [{"kill_in": rng.uniform(0, took * 1.2)} for _ in range(3)]
        for case in cases:
            shutil.rmtree(out, ignore_errors=True)
            if previous:
                out.mkdir()
                for name, data in previous.items():
                    (out / name).write_bytes(data)
            status = _run(argv, **case)
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            kills += killed
            assert killed or os.waitstatus_to_exitcode(status) == 0, (case, status)
            got = _tree(out)
            when, k = case.get("at_replace", (None, 0))
            if not killed or (when == "after" and k == renames):
                assert got == new, case
            elif "kill_in" in case:
                assert got in (previous, None, new), case
            elif previous and (when, k) in (("after", renames - 1), ("before", renames)):
                assert got is None, case  # the old folder is aside, the new one not yet in
            else:
                assert got == previous, (case, None if got is None else sorted(got))
            _check_folder(tmp_path, {out.name, src.name, model.name, "warm.ecnn", "warm.safetensors"})
    assert kills >= 20
