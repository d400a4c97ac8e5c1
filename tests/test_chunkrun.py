"""Decoding one tensor's chunks, and encoding whole tensors, on several threads (ecnn/chunkrun.py)."""

import contextvars
import os
import threading
import time

import numpy as np
import pytest

import ecnn.numpy as en
from ecnn import EncodeConfig, chunkrun, select
from ecnn.coder import ctx, streams
from ecnn.errors import CorruptPayload, InvalidOption, PayloadChecksumMismatch

LO, HI = -(1 << 24), 1 << 24
WORKERS = (1, 2, 3, 8)


@pytest.fixture
def split(monkeypatch, splits):
    """Split every multi-chunk output over 3 threads, and count the splits."""
    monkeypatch.setattr(chunkrun, "MIN_SPLIT_BYTES", 0)
    with chunkrun.using(3):
        yield splits


@pytest.fixture
def thread_jobs(monkeypatch):
    """imap_packed on threads, as off Linux."""
    monkeypatch.setattr(chunkrun, "JOBS_IN_PROCESSES", False)


needs_fork = pytest.mark.skipif(not chunkrun.JOBS_IN_PROCESSES, reason="encoder jobs run in processes only on Linux")


def _slow_here(seconds: float):
    """A chunk function's prelude: the calling thread sleeps, so that pool threads take chunks too."""
    caller = threading.get_ident()

    def wait():
        if threading.get_ident() == caller:
            time.sleep(seconds)

    return caller, wait


def _rowcol_symbols(rng, shape, signed=True):
    r, c = shape
    scale = np.exp(rng.standard_normal(r) * 0.7)[:, None] * np.exp(rng.standard_normal(c) * 0.7)[None, :] * 3
    mag = np.rint(np.abs(rng.laplace(0, 1, shape)) * scale).astype(np.int64)
    if not signed:
        return mag + 5
    lean = rng.uniform(0.2, 0.8, c)[None, :]
    return np.where(rng.random(shape) < lean, mag, -mag)


def _sparse(rng, shape):
    nz = rng.random(shape) < 0.08 * np.exp(rng.standard_normal(shape[0]))[:, None]
    return np.where(nz, rng.integers(1, 3, shape) * np.where(rng.random(shape) < 0.5, -1, 1), 0).astype(np.int64)


def _cases():
    rng = np.random.default_rng(5)
    lap = np.rint(rng.laplace(0, 4, 20000)).astype(np.int64)
    return [
        ("cat0", lap, None, False),
        ("ctx order-0", lap, None, True),
        ("rowcol", _rowcol_symbols(rng, (160, 96)), 160, False),
        ("rowcol unsigned", _rowcol_symbols(rng, (160, 96), signed=False), 160, False),
        ("ctx rowcol", _rowcol_symbols(rng, (160, 96)), 160, True),
        ("ctx lanes", _sparse(rng, (300, 64)), 300, True),
    ]


CASES = _cases()



@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_split_decoding_gives_the_same_symbols(case, monkeypatch, splits):
    name, v, rows, contexts = case
    d, data = select.encode_best(v.ravel(), 4, True, 2048, rows=rows, contexts=contexts)
    want_coder = "ctx" if name.startswith("ctx") else name.split()[0]
    assert d["coder"] == want_coder
    if name == "ctx lanes":
        assert data[0] == ctx.MODEL_LANES
    if name == "ctx rowcol":
        assert data[0] == ctx.MODEL_ROWCOL_BLOCKS
        assert ctx.varint.decode(data, 7, 0)[0][6] > 1  # sign classes
    streams.validate(d, v.size, LO, HI)
    monkeypatch.setattr(chunkrun, "MIN_SPLIT_BYTES", 0)
    got = {}
    for n in WORKERS:
        before = len(splits)
        with chunkrun.using(n):
            got[n] = streams.decode(d, data, v.size, np.int32, LO, HI, runner=chunkrun)
        assert splits[before:] == ([] if n == 1 else [n - 1])  # n - 1 pool threads beside the caller
    np.testing.assert_array_equal(got[1], v.ravel())
    for n in WORKERS:
        assert got[n].tobytes() == got[1].tobytes()


@pytest.mark.parametrize("jobs_in_processes", [False, chunkrun.JOBS_IN_PROCESSES], ids=["threads", "default"])
def test_a_whole_file_decodes_and_encodes_identically_on_any_number_of_workers(monkeypatch, splits, jobs_in_processes):
    monkeypatch.setattr(chunkrun, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(chunkrun, "JOBS_IN_PROCESSES", jobs_in_processes)
    rng = np.random.default_rng(2)
    tensors = {
        "w": (rng.laplace(0, 0.05, (256, 300))).astype(np.float32),
        "b": rng.standard_normal(7).astype(np.float32),
        "e": (rng.standard_normal((64, 96)) * 0.02).astype(np.float32),
    }
    blobs, decoded = {}, {}
    for cfg in (EncodeConfig(bits=6, chunk=4096), EncodeConfig(lossless=True, chunk=4096)):
        for n in WORKERS:
            with chunkrun.using(n):
                blobs[n] = en.encode(tensors, config=cfg)
                decoded[n] = en.decode(blobs[n])
        for n in WORKERS:
            assert blobs[n] == blobs[1], (cfg, n)
            assert all(decoded[n][k].tobytes() == decoded[1][k].tobytes() for k in tensors), (cfg, n)
    # Three tensors: decoded on the caller and up to 2 pool threads, one tensor each;
    # encoded on up to 3 pool threads (the caller collects) or in as many processes.
    assert set(splits) == ({1, 2} if jobs_in_processes else {1, 2, 3})


def test_worker_errors_come_back_typed(split):
    out = chunkrun.empty(40, np.int32, 40)
    caller, wait = _slow_here(0.2)
    where = []

    def fails_in_a_worker(i):
        wait()
        if threading.get_ident() != caller:
            where.append(i)
            raise CorruptPayload(f"chunk {i} is damaged")

    with pytest.raises(CorruptPayload, match=r"chunk \d+ is damaged"):
        chunkrun.run(40, fails_in_a_worker, out)
    assert where  # raised on a pool thread

    def other_error(i):
        wait()
        if threading.get_ident() != caller:
            raise ValueError("bad varint")

    with pytest.raises(CorruptPayload, match="ValueError: bad varint") as e:
        chunkrun.run(40, other_error, out)
    assert isinstance(e.value.__cause__, ValueError)

    def checksum_in_a_worker(i):
        wait()
        if threading.get_ident() != caller:
            raise PayloadChecksumMismatch(f"tensor {i}: payload CRC-32 mismatch")

    with pytest.raises(PayloadChecksumMismatch, match="CRC-32 mismatch"):
        chunkrun.run(40, checksum_in_a_worker, out)


def test_the_error_is_the_lowest_failing_chunks(split):
    """Chunk 5 fails at once, chunk 2 later: the error is chunk 2's, as in a serial loop."""

    def fn(i):
        if i == 2:
            time.sleep(0.2)
            raise CorruptPayload("chunk 2")
        if i == 5:
            raise InvalidOption("chunk 5")

    for _ in range(3):
        with pytest.raises(CorruptPayload, match="chunk 2"):
            chunkrun.run(8, fn)


def test_an_error_stops_new_chunks_and_waits_for_the_running_ones(split):
    started, finished = [], []

    def fn(i):
        started.append(i)
        if i == 0:
            time.sleep(0.05)
            raise CorruptPayload("first chunk")
        time.sleep(0.2)
        finished.append(i)

    with pytest.raises(CorruptPayload, match="first chunk"):
        chunkrun.run(40, fn)
    assert sorted(finished) == sorted(started[1:])  # nothing still running after run() returned
    assert len(started) <= 4  # no chunk started after the failure


def test_chunks_go_to_whichever_thread_is_free(split):
    out = np.zeros(40, np.int64)
    caller, wait = _slow_here(0.2)  # a busy thread takes few chunks

    def fn(i):
        wait()
        out[i] = threading.get_ident()

    chunkrun.run(40, fn, out)
    assert (out != 0).all()  # every chunk done
    assert np.count_nonzero(out == caller) <= 3  # the pool threads took the rest


def test_small_outputs_run_inline_and_other_runs_split(splits):
    calls = []
    with chunkrun.using(4):
        small = chunkrun.empty(100, np.int32, 10)  # under MIN_SPLIT_BYTES
        assert isinstance(small, np.ndarray) and small.base is None  # ordinary memory
        chunkrun.run(10, calls.append, small)
        assert calls == list(range(10)) and splits == []  # in order, on this thread
        chunkrun.run(1, calls.append)  # one chunk
        assert splits == []
        seen = []
        chunkrun.run(6, seen.append)  # no output to judge by: split
        assert sorted(seen) == list(range(6)) and splits == [3]
    with chunkrun.using(1):
        chunkrun.run(6, calls.append)
    assert splits == [3]


def test_nested_runs_run_inline_without_deadlock(split, monkeypatch, thread_jobs):
    """A chunk that runs chunks of its own (a tensor decoded on a pool thread) runs them inline."""
    monkeypatch.setattr(chunkrun, "DEFAULT_MAX_WORKERS", 8)
    grid = np.zeros((8, 8), np.int64)
    inner_threads = []

    def outer(i):
        me = threading.get_ident()

        def inner(j):
            inner_threads.append(threading.get_ident() == me)
            grid[i, j] = i * 8 + j

        chunkrun.run(8, inner)

    done = threading.Event()

    def go():
        with chunkrun.using(8):
            chunkrun.run(8, outer)
            # and the encoder's jobs, each running chunks
            got = dict(chunkrun.imap_packed(8, lambda k: chunkrun.run(4, lambda j: None) or k))
        assert got == {k: k for k in range(8)}
        done.set()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(30)
    assert done.is_set(), "nested run deadlocked"
    assert grid.ravel().tolist() == list(range(64))
    assert all(inner_threads)  # every inner chunk on its outer chunk's thread


def test_workers_see_the_callers_context(split, thread_jobs):
    """using() and other context variables reach the pool threads; each run sees its own."""
    var = contextvars.ContextVar("probe", default="unset")
    caller, wait = _slow_here(0.1)
    for n in (2, 5):
        seen = []
        token = var.set(f"caller {n}")
        try:
            with chunkrun.using(n):

                def fn(i):
                    wait()
                    seen.append((threading.get_ident() != caller, chunkrun.workers(), var.get()))

                chunkrun.run(12, fn)
                jobs = dict(chunkrun.imap_packed(12, lambda i: (wait(), chunkrun.workers(), var.get())[1:]))
        finally:
            var.reset(token)
        assert any(other for other, _, _ in seen)  # some chunks ran on pool threads
        assert {(w, v) for _, w, v in seen} == {(n, f"caller {n}")}
        assert set(jobs.values()) == {(n, f"caller {n}")}
    assert var.get() == "unset"


def test_worker_counts_are_checked(monkeypatch):
    with pytest.raises(InvalidOption):
        with chunkrun.using(0):
            pass
    monkeypatch.setenv("ECNN_WORKERS", "two")
    with pytest.raises(InvalidOption):
        chunkrun.default_workers()
    monkeypatch.setenv("ECNN_WORKERS", "3")
    assert chunkrun.workers() == 3
    monkeypatch.delenv("ECNN_WORKERS")
    assert 1 <= chunkrun.default_workers() <= chunkrun.DEFAULT_MAX_WORKERS


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_splits_with_threads_of_its_own(split):
    chunkrun.run(6, lambda i: None)  # the parent's pool has threads now
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            out = np.zeros(12, np.int64)
            caller, wait = _slow_here(0.05)

            def fn(i):
                wait()
                out[i] = threading.get_ident()

            chunkrun.run(12, fn)
            code = 0 if (out != 0).all() and (out != caller).any() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# --- imap_packed ----------------------------------------------------------------


def test_imap_packed_returns_every_result_once_as_it_is(thread_jobs):
    marker = object()
    with chunkrun.using(3):
        got = dict(chunkrun.imap_packed(7, lambda i: {"i": i, "b": bytes([i]) * i, "np": np.int64(i) * 2, "o": marker}, costs=range(7)))
    assert got == {i: {"i": i, "b": bytes([i]) * i, "np": 2 * i, "o": marker} for i in range(7)}
    assert all(type(v["np"]) is np.int64 for v in got.values())  # no serialization on the way


def test_imap_packed_starts_the_largest_first_and_uses_free_threads(splits, thread_jobs):
    started = []
    lock = threading.Lock()
    slow = []

    def fn(i):
        with lock:
            started.append(i)
            first = len(started) == 1
        if first:
            slow.append(threading.get_ident())
            time.sleep(0.3)  # the first job takes long, whatever its cost says
        return threading.get_ident()

    costs = [5, 1, 9, 3, 7, 2, 8, 4, 6, 0] * 2
    caller = threading.get_ident()
    with chunkrun.using(2):
        got = dict(chunkrun.imap_packed(20, fn, costs=costs))
    assert sorted(got) == list(range(20)) and splits == [2]
    assert set(started[:2]) == {2, 12}  # the two jobs of cost 9 first
    assert caller not in got.values()  # the caller collects
    assert sum(t == slow[0] for t in got.values()) <= 3  # the other thread took the rest


def test_imap_packed_bounds_the_results_in_flight(thread_jobs):
    state = {"started": 0, "collected": 0, "ahead": 0}
    lock = threading.Lock()

    def fn(i):
        with lock:
            state["started"] += 1
            state["ahead"] = max(state["ahead"], state["started"] - state["collected"])
        return i

    with chunkrun.using(3):
        for i, _ in chunkrun.imap_packed(30, fn):
            time.sleep(0.01)  # a slow consumer
            with lock:
                state["collected"] += 1
    assert state["collected"] == 30
    assert state["ahead"] <= 2 * 3 + 1  # results waiting, jobs running, and the one being collected


def test_imap_packed_stopped_early_leaves_nothing_running(thread_jobs):
    running = []

    def fn(i):
        running.append(i)
        time.sleep(0.05)
        running.remove(i)
        return i

    with chunkrun.using(3):
        gen = chunkrun.imap_packed(50, fn)
        next(gen)
        gen.close()
    assert running == []


def test_imap_packed_errors_come_back_as_raised(thread_jobs):
    def fn(i):
        if i == 4:
            raise InvalidOption("bad option for tensor 4")
        if i == 2:
            time.sleep(0.1)
            raise KeyError("tensor 2")
        return i

    for n in (1, 3):
        got = []
        with chunkrun.using(n), pytest.raises(KeyError, match="tensor 2"):  # the lowest failing job's, as it was raised
            for i, r in chunkrun.imap_packed(6, fn, costs=[1, 1, 1, 1, 9, 1]):
                got.append(i)
        assert {0, 1} <= set(got) and not {2, 4} & set(got)


@pytest.mark.parametrize("jobs_in_processes", [False, chunkrun.JOBS_IN_PROCESSES], ids=["threads", "default"])
def test_encoding_on_workers_reports_every_tensor(monkeypatch, jobs_in_processes):
    monkeypatch.setattr(chunkrun, "JOBS_IN_PROCESSES", jobs_in_processes)
    rng = np.random.default_rng(4)
    arrays = {
        "a": rng.laplace(0, 0.05, (300, 200)).astype(np.float32),
        "b": rng.standard_normal(50).astype(np.float32),
        "c": rng.integers(-5, 5, (40, 40)).astype(np.int16),
        "d": rng.standard_normal((64, 64)).astype(np.float16),
        "e": np.zeros((0, 3), np.float32),
    }
    for cfg in (EncodeConfig(bits=6), EncodeConfig(lossless=True)):
        blobs = {}
        for n in WORKERS:
            with chunkrun.using(n):
                blobs[n] = en.encode(arrays, config=cfg)
        assert all(b == blobs[1] for b in blobs.values())
    from ecnn import dtypes
    from ecnn import file as _file

    seen = []
    with chunkrun.using(3):
        _file.encode({k: (v, dtypes.from_numpy(v.dtype)) for k, v in arrays.items()}, EncodeConfig(bits=6), progress=lambda *a: seen.append(a))
    # Bytes of input done, in file order, up to the total.
    sizes = [a.nbytes for a in arrays.values()]
    assert seen[0] == ("", 0, sum(sizes))
    assert [s[1] for s in seen[1:]] == list(np.cumsum(sizes))
    assert [s[0] for s in seen[1:]] == list(arrays)


@needs_fork
def test_imap_packed_in_processes_returns_every_result_once():
    with chunkrun.using(3):
        got = dict(chunkrun.imap_packed(7, lambda i: {"i": i, "b": bytes([i]) * i, "np": np.int64(i) * 2}, costs=range(7)))
    assert got == {i: {"i": i, "b": bytes([i]) * i, "np": 2 * i} for i in range(7)}


@needs_fork
def test_imap_packed_in_processes_goes_to_whichever_worker_is_free():
    def fn(i):
        if i == 0:
            time.sleep(0.3)  # the first job in the queue takes long, whatever its cost says
        return os.getpid()

    with chunkrun.using(2):
        got = dict(chunkrun.imap_packed(21, fn, costs=[1] * 21))
    assert sorted(got) == list(range(21))
    assert os.getpid() not in got.values()
    assert sum(pid == got[0] for pid in got.values()) <= 3  # the other worker took the rest


@needs_fork
def test_imap_packed_in_processes_feeds_a_queue_larger_than_the_pipe(monkeypatch):
    monkeypatch.setattr(chunkrun, "_PIPE_CAPACITY", 16)  # 4 indices at a time
    with chunkrun.using(3):
        got = dict(chunkrun.imap_packed(50, lambda i: i * i, costs=range(50)))
    assert got == {i: i * i for i in range(50)}


@needs_fork
def test_imap_packed_in_processes_errors_come_back_typed():
    def fn(i):
        if i == 4:
            raise InvalidOption("bad option for tensor 4")
        return i

    with chunkrun.using(2), pytest.raises(InvalidOption, match="tensor 4"):
        list(chunkrun.imap_packed(6, fn))

    def dies(i):
        if i == 1:
            os._exit(5)
        return i

    with chunkrun.using(2), pytest.raises(RuntimeError, match="without reporting"):
        list(chunkrun.imap_packed(4, dies))

    with chunkrun.using(2), pytest.raises(RuntimeError, match="object"):
        list(chunkrun.imap_packed(3, lambda i: object()))


@needs_fork
def test_the_pool_ends_before_the_encoder_forks(split):
    def pool_threads():
        return [t for t in threading.enumerate() if t.name == "ecnn-worker"]

    chunkrun.run(6, lambda i: time.sleep(0.01))
    assert pool_threads()
    got = dict(chunkrun.imap_packed(4, lambda i: [os.getpid(), len(pool_threads())]))
    assert os.getpid() not in {pid for pid, _ in got.values()}  # in worker processes,
    assert {n for _, n in got.values()} == {0}  # forked from a process without pool threads
    seen = []
    chunkrun.run(6, seen.append)  # a new pool
    assert sorted(seen) == list(range(6)) and pool_threads()


@needs_fork
def test_the_encoder_does_not_fork_beside_another_thread():
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        with chunkrun.using(2):
            got = dict(chunkrun.imap_packed(4, lambda i: os.getpid()))
    finally:
        stop.set()
        other.join()
    assert set(got.values()) == {os.getpid()}  # on threads instead


@needs_fork
def test_imap_packed_in_processes_runs_nested_work_inline(splits):
    def fn(i):
        seen = []
        chunkrun.run(4, seen.append)  # in the worker: inline, in order
        return [chunkrun.workers(), seen]

    with chunkrun.using(3):
        got = dict(chunkrun.imap_packed(5, fn))
    assert got == {i: [1, [0, 1, 2, 3]] for i in range(5)}
    assert splits == []


# --- whole files ----------------------------------------------------------------


def test_every_fixture_decodes_the_same_on_threads(split):
    """EcnnFile.arrays splits small tensors over threads too: every vector gives the same bits, and the same error."""
    import json
    from pathlib import Path

    from ecnn import errors
    from ecnn.file import EcnnFile

    fix = Path(__file__).resolve().parent.parent / "fixtures" / "v1"
    for kind in ("valid", "invalid"):
        expected = json.loads((fix / kind / "expected.json").read_text())
        for name in sorted(expected):
            data = (fix / kind / f"{name}.ecnn").read_bytes()
            got = {}
            for n in (1, 3):
                with chunkrun.using(n):
                    try:
                        with EcnnFile(data) as f:
                            seen = []
                            arrays = f.arrays(progress=lambda t, i, total: seen.append((t, i, total)))
                            got[n] = {k: (a.dtype.str, a.shape, a.tobytes()) for k, (a, _) in arrays.items()}
                            assert sorted(t for t, _, _ in seen if t) == sorted(f.keys())  # every tensor reported once
                            assert seen[-1] == ("", len(f.keys()), len(f.keys()))  # then the end, n of n
                            f.files()  # the stored files too (format 1.3): file_checksum fails only there
                    except errors.FormatError as e:
                        got[n] = (type(e).__name__, str(e))
            assert got[3] == got[1], f"{kind}/{name}"
            if kind == "invalid":
                assert got[1][0] == expected[name]["error"], name


def test_a_damaged_tensor_fails_where_it_would_one_at_a_time(monkeypatch):
    """iter_host on threads yields the tensors before a damaged one, then raises its error."""
    from ecnn import parallel
    from ecnn.file import EcnnFile

    monkeypatch.setattr(parallel, "LARGE", 20000)  # t3 by chunks, the rest in batches
    rng = np.random.default_rng(3)
    shapes = [(300, 20), (10,), (40, 40), (300, 256), (5, 5), (30, 30)]
    tensors = {f"t{i}": rng.laplace(0, 0.05, s).astype(np.float32) for i, s in enumerate(shapes)}
    blob = en.encode(tensors, config=EncodeConfig(bits=6, chunk=4096))
    for damaged in ("t2", "t3"):
        data = bytearray(blob)
        with EcnnFile(bytes(blob)) as f:
            rec = f.record(damaged)
        data[rec.offset + rec.length - 3] ^= 0x40
        results = {}
        for n in (1, 3):
            names = []
            with EcnnFile(bytes(data)) as f, pytest.raises(PayloadChecksumMismatch) as e:
                for h in parallel.iter_host(f, list(tensors), workers=n):
                    names.append(h.name)
            results[n] = (names, str(e.value))
        assert results[3] == results[1]
        assert results[1][0] == list(tensors)[: list(tensors).index(damaged)]


# --- imap_ordered: bounded work in flight, results in order -------------------------


@pytest.mark.parametrize("jobs_in_processes", [False, chunkrun.JOBS_IN_PROCESSES], ids=["threads", "default"])
@pytest.mark.parametrize("n", WORKERS)
def test_imap_ordered_hands_back_every_result_in_order(monkeypatch, jobs_in_processes, n):
    monkeypatch.setattr(chunkrun, "JOBS_IN_PROCESSES", jobs_in_processes)
    rng = np.random.default_rng(n)
    costs = [int(c) for c in rng.integers(0, 50, 300)] + [500, 3, 3]  # one job larger than the window
    with chunkrun.using(n):
        for window in (60, 10**9):
            got = list(chunkrun.imap_ordered(len(costs), lambda i: [i, i * i], costs, window))
            assert [i for i, _ in got] == list(range(len(costs)))
            assert all(v == [i, i * i] for i, v in got)


@pytest.mark.parametrize("jobs_in_processes", [False, chunkrun.JOBS_IN_PROCESSES], ids=["threads", "default"])
def test_imap_ordered_raises_a_jobs_error(monkeypatch, jobs_in_processes):
    monkeypatch.setattr(chunkrun, "JOBS_IN_PROCESSES", jobs_in_processes)

    def fn(i):
        if i == 7:
            raise InvalidOption("job 7")
        return i

    with chunkrun.using(2), pytest.raises(InvalidOption, match="job 7"):
        list(chunkrun.imap_ordered(20, fn, [1] * 20, 4))


def test_the_window_keeps_the_cost_in_flight_within_its_budget():
    rng = np.random.default_rng(0)
    for trial in range(200):
        costs = [int(c) for c in rng.integers(0, 40, int(rng.integers(1, 60)))]
        window = int(rng.integers(1, 120))
        w = chunkrun._Window(costs, window)
        started, running, handed = [], [], []
        while len(handed) < len(costs):
            room = int(rng.integers(1, 5))
            new = w.admit(room)
            assert len(new) <= room and not set(new) & set(started)
            started += new
            running += new
            flying = [costs[j] for j in started if j not in handed]
            # Within the window, unless one job alone (beside jobs of no cost) exceeds it.
            assert sum(flying) <= window or sum(flying) == max(flying), (trial, costs, window)
            if not running:
                assert new or len(handed) == len(costs)
                continue
            j = running.pop(int(rng.integers(0, len(running))))  # some job finishes
            out = w.finished(j, j)
            assert [i for i, _ in out] == list(range(len(handed), len(handed) + len(out)))
            handed += [i for i, _ in out]
        assert sorted(started) == list(range(len(costs)))
