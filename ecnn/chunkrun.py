"""Using several cores: the chunks of one tensor when decoding, whole tensors when encoding.

A coded stream splits a large tensor into chunks that decode independently
(spec/CODING.md, "Chunking"). A decoder written as a loop over chunk indices,
each writing its own slice of a preallocated output, runs here on several
threads::

    out = chunkrun.empty(count, np.int32, nchunks)

    def one(i):
        out[i * chunk : ...] = ...  # decode chunk i

    chunkrun.run(nchunks, one, out)

The compiled range decoder (:mod:`ecnn._core`) and numpy's large array
operations release the GIL, so chunks decode at the same time on threads of
one process. The calling thread takes part: it and up to ``workers() - 1``
threads of a pool shared by the whole process each take the next chunk from
one counter as they finish one, so a slow chunk holds up no one. The pool
starts a thread whenever a task finds none idle, so a task never waits for
another to finish before it starts. Work started from inside a chunk (a
tensor decoded on a pool thread, say) runs inline on that thread, so nested
use cannot deadlock. Each pool thread runs its share in a
copy of the caller's :mod:`contextvars` context, so it sees the caller's
:func:`using` (and numpy's ``errstate``). Decoding is the same bits whatever
the split, and an error is the one the lowest failing chunk raises.

The number of workers is :func:`workers`: the ``ECNN_WORKERS`` environment
variable, else the CPUs this process may run on, at most
:data:`DEFAULT_MAX_WORKERS`; :func:`using` changes it for a block of code.

:func:`imap_packed` runs independent jobs (the encoder's tensors) and hands
back their results as they finish: on the same pool of threads, or, on Linux
and for now, in forked worker processes (:data:`JOBS_IN_PROCESSES`): most of
the encoder still holds the GIL.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from collections import deque
from typing import Callable, Iterator

import numpy as np

from ecnn import errors
from ecnn.errors import CorruptPayload

DEFAULT_MAX_WORKERS = 8
MIN_SPLIT_BYTES = 1 << 16  # outputs smaller than this decode inline: handing chunks to threads costs more than it saves

_workers: contextvars.ContextVar[int | None] = contextvars.ContextVar("ecnn_chunk_workers", default=None)


def default_workers() -> int:
    """``ECNN_WORKERS`` if set, else the usable CPUs, at most :data:`DEFAULT_MAX_WORKERS`."""
    env = os.environ.get("ECNN_WORKERS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise errors.InvalidOption(f"ECNN_WORKERS must be a positive integer, not {env!r}") from None
        if n < 1:
            raise errors.InvalidOption(f"ECNN_WORKERS must be a positive integer, not {env!r}")
        return n
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, DEFAULT_MAX_WORKERS))


def workers() -> int:
    """Threads a tensor's chunks (or the encoder's tensors) are split over (1: the calling thread only)."""
    n = _workers.get()
    return default_workers() if n is None else n


@contextlib.contextmanager
def using(n: int | None):
    """Split chunks over ``n`` threads inside the block (None: the default)."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise errors.InvalidOption(f"workers must be a positive integer, not {n!r}")
    token = _workers.set(n)
    try:
        yield
    finally:
        _workers.reset(token)


# --- the threads ----------------------------------------------------------------

_local = threading.local()  # .inside: this thread is running chunks or jobs (nested work runs inline)


def _inside() -> bool:
    return getattr(_local, "inside", False)


@contextlib.contextmanager
def _marked():
    before = _inside()
    _local.inside = True
    try:
        yield
    finally:
        _local.inside = before


class _Pool:
    """Daemon threads that run submitted tasks; a thread is started whenever no idle one is left for a task."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._tasks: deque[Callable[[], None]] = deque()
        self._idle = 0
        self._threads: set[threading.Thread] = set()
        self._closing = False  # idle threads end

    def submit(self, task: Callable[[], None], copies: int) -> None:
        with self._cv:
            self._tasks.extend([task] * copies)
            for _ in range(len(self._tasks) - self._idle):
                t = threading.Thread(target=self._loop, name="ecnn-worker", daemon=True)
                self._threads.add(t)
                self._idle += 1  # counted as idle until it takes a task
                t.start()
            self._cv.notify(copies)

    def _loop(self) -> None:
        _local.inside = True
        while True:
            with self._cv:
                while not self._tasks:
                    if self._closing:
                        self._idle -= 1
                        self._threads.discard(threading.current_thread())
                        return
                    self._cv.wait()
                self._idle -= 1
                task = self._tasks.popleft()
            try:
                task()  # tasks keep their own errors
            finally:
                with self._cv:
                    self._idle += 1

    def close(self) -> list[threading.Thread]:
        """Let every thread end once no task is left; the threads, to join."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
            return list(self._threads)


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _submit(task: Callable[[], None], copies: int) -> None:
    """Run ``task`` on ``copies`` pool threads, each in its own copy of the caller's context."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool()
        pool = _pool
    for _ in range(copies):
        pool.submit(_in_context(task), 1)


def _in_context(task: Callable[[], None]) -> Callable[[], None]:
    ctx = contextvars.copy_context()  # one copy per thread: a context is entered by one thread at a time
    return lambda: ctx.run(task)


def _forget_pool() -> None:
    # A forked child has none of its parent's threads: it starts a pool of its own when it needs one.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _end_pool(timeout: float) -> bool:
    """End the pool's threads, waiting up to ``timeout`` seconds for busy ones; whether they all ended.

    The next split starts a new pool.
    """
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is None:
        return True
    deadline = time.monotonic() + timeout
    threads = pool.close()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


def _may_fork() -> bool:
    """Whether this process may fork its encoding workers: it has no other thread (once the pool's have ended).

    A thread that holds a lock (in malloc, say) when the process forks leaves
    that lock held forever in the child.
    """
    return _end_pool(timeout=1.0) and threading.active_count() == 1


def _raised(e: BaseException) -> BaseException:
    """What :func:`run` raises for a chunk's exception: ecnn's errors as they are, others as CorruptPayload."""
    if isinstance(e, errors.EcnnError) or not isinstance(e, Exception):
        return e
    err = CorruptPayload(f"{type(e).__name__}: {e}")
    err.__cause__ = e
    return err


# --- the chunks of one output -----------------------------------------------------


def empty(shape, dtype, nchunks: int) -> np.ndarray:
    """An uninitialized output for a decoder with ``nchunks`` chunks (ordinary memory: the threads share it)."""
    return np.empty(shape, dtype)


def _split(nchunks: int, out: np.ndarray | None) -> int:
    if nchunks < 2 or _inside() or (out is not None and out.nbytes < MIN_SPLIT_BYTES):
        return 1
    return min(workers(), nchunks)


class _Chunks:
    """Chunk indices handed out one at a time; the errors of the chunks that failed."""

    def __init__(self, nchunks: int, fn: Callable[[int], None]) -> None:
        self.fn = fn
        self.lock = threading.Condition(threading.Lock())
        self.next = 0
        self.end = nchunks  # lowered to stop handing out chunks
        self.running = 0
        self.failed: dict[int, BaseException] = {}

    def work(self) -> None:
        while True:
            with self.lock:
                if self.next >= self.end:
                    return
                i = self.next
                self.next += 1
                self.running += 1
            try:
                self.fn(i)
            except BaseException as e:  # noqa: BLE001 - raised by the caller of run()
                with self.lock:
                    self.failed[i] = e
                    self.end = self.next  # every chunk below i is handed out already
            finally:
                with self.lock:
                    self.running -= 1
                    if not self.running:
                        self.lock.notify_all()

    def stop_and_wait(self) -> None:
        with self.lock:
            self.end = self.next
            while self.running:
                self.lock.wait()


def run(nchunks: int, fn: Callable[[int], None], out: np.ndarray | None = None) -> None:
    """Call ``fn(i)`` for every chunk ``i`` in ``0 .. nchunks - 1``.

    The chunks are shared out among the calling thread and up to
    ``workers() - 1`` pool threads, each taking the next chunk as it finishes
    one. Inline instead (in order, on the calling thread): one chunk, one
    worker, an ``out`` smaller than :data:`MIN_SPLIT_BYTES`, or a call from
    inside another :func:`run` or :func:`imap_packed` job. ``fn`` must write
    only into its own part of ``out``, which serves here to judge the work's
    size; without one the chunks are split. When a chunk fails, no further
    chunk starts; the call returns once the running ones have finished.

    Raises:
        EcnnError: ``fn`` raised one of ecnn's errors: that error, from the
            lowest failing chunk (the one a serial loop would meet first).
        CorruptPayload: ``fn`` failed otherwise on a split run (the error's class
            name and message are kept in the message).
    """
    n = _split(nchunks, out)
    if n <= 1:
        for i in range(nchunks):
            fn(i)
        return
    chunks = _Chunks(nchunks, fn)
    _submit(chunks.work, n - 1)
    try:
        with _marked():
            chunks.work()
    finally:
        chunks.stop_and_wait()
    if chunks.failed:
        raise _raised(chunks.failed[min(chunks.failed)])


# --- independent jobs with results ----------------------------------------------


class _Jobs:
    """Jobs handed out largest first; their results, waiting to be collected."""

    def __init__(self, n: int, fn: Callable[[int], object], costs, limit: int) -> None:
        costs = [1] * n if costs is None else list(costs)
        self.order = sorted(range(n), key=lambda j: -costs[j])  # stable: equal costs in index order
        self.fn = fn
        self.cv = threading.Condition(threading.Lock())
        self.pos = 0
        self.running = 0
        self.results: deque[tuple[int, bool, object]] = deque()
        self.limit = limit  # results waiting to be collected, at most, before another job starts
        self.first_failed = n  # no job above the lowest failed index starts
        self.closed = False

    def _left(self) -> bool:
        """Whether a job is left to start (the lock held)."""
        while self.pos < len(self.order) and self.order[self.pos] > self.first_failed:
            self.pos += 1
        return not self.closed and self.pos < len(self.order)

    def _claim(self) -> int | None:
        """The next job's index, -1 to wait (too many results waiting), None when none is left (the lock held)."""
        if not self._left():
            return None
        if len(self.results) >= self.limit:
            return -1
        j = self.order[self.pos]
        self.pos += 1
        self.running += 1
        return j

    def work(self) -> None:
        """A pool thread's share: the next job, as long as there is one."""
        while True:
            with self.cv:
                j = self._claim()
                while j == -1:
                    self.cv.wait()  # the consumer collects a result first
                    j = self._claim()
                if j is None:
                    return
            try:
                r = (j, True, self.fn(j))
            except BaseException as e:  # noqa: BLE001 - raised by the consumer
                r = (j, False, e)
            with self.cv:  # the result is waiting before the job stops counting as running
                self.results.append(r)
                self.running -= 1
                if not r[1]:
                    self.first_failed = min(self.first_failed, j)
                self.cv.notify_all()

    def next(self) -> tuple[int, bool, object] | None:
        """The next result to collect, waiting for one; None when every job is done."""
        with self.cv:
            while not self.results:
                if not self.running and not self._left():
                    return None
                self.cv.wait()
            self.cv.notify_all()  # room for another job
            return self.results.popleft()

    def close(self) -> None:
        """Start no more jobs; return once the running ones have finished."""
        with self.cv:
            self.closed = True
            self.cv.notify_all()
            while self.running:
                self.cv.wait()


# The encoder's jobs are mostly small numpy and Python steps (model selection, rate estimates)
# that hold the GIL, so they scale on threads far less than in processes: packing MiniLM on
# 2 cores took 16% (lossless) to 25% (8 bits) longer on threads than in forked processes. So
# where fork is safe (Linux, and no other thread running) the jobs of imap_packed run in
# forked processes; elsewhere, or with this set to False, on threads. Decoding always runs
# on threads.
JOBS_IN_PROCESSES = hasattr(os, "fork") and sys.platform.startswith("linux")


def imap_packed(n: int, fn: Callable[[int], object], costs=None) -> Iterator[tuple[int, object]]:
    """``(i, fn(i))`` for every ``i`` in ``0 .. n - 1``, in completion order.

    With more than one worker (:func:`workers`) and at least two jobs, the
    jobs wait in one queue, the largest by ``costs`` first, and each of
    ``workers()`` workers takes the next job whenever it finishes one (so a
    job that takes longer than its cost says holds up no one); the calling
    thread collects the results. From inside a job or a :func:`run` chunk,
    everything runs inline, in order.

    The workers are forked processes where :data:`JOBS_IN_PROCESSES` is true
    (Linux) and the calling thread is the process's only thread once the
    pool's threads have ended (forking beside running threads is unsafe).
    Each sends its results back as MessagePack through a pipe, so a result
    must be made of MessagePack types (ints, strings, bytes, lists, dicts,
    numpy scalars); a worker's exception comes back as the :mod:`ecnn.errors`
    class of the same name if there is one, else as RuntimeError, and the
    first to arrive is raised. Otherwise they are pool threads: a result is
    the object ``fn`` returned; no job starts while ``workers()`` results wait
    to be collected, so a slow consumer bounds the work in flight; the
    exception of the failing job with the lowest index is raised as it was,
    once the jobs below it have run (the error a serial loop would meet
    first), and jobs above it do not start.
    """
    nworkers = 1 if _inside() else min(workers(), n)
    if nworkers <= 1:
        for i in range(n):
            yield i, fn(i)
    elif JOBS_IN_PROCESSES and _may_fork():
        yield from _imap_processes(n, fn, costs, nworkers)
    else:
        yield from _imap_threads(n, fn, costs, nworkers)


def imap_ordered(n: int, fn: Callable[[int], object], costs, window: int) -> Iterator[tuple[int, object]]:
    """``(i, fn(i))`` for every ``i`` in ``0 .. n - 1``, in index order, with bounded work in flight.

    As :func:`imap_packed`, but a job starts only while the costs of the jobs
    started and not yet handed back, its own included, stay within ``window``
    (or when it would be the only one): a stream of tensors read and encoded
    this way holds a bounded part of the model however large the model is.
    Jobs start in index order, except that once every job left fits in the
    window they start largest first. Results are handed back in index order,
    each as soon as the ones before it are.
    """
    costs = [max(0, int(c)) for c in costs]
    nworkers = 1 if _inside() else min(workers(), n)
    if nworkers <= 1:
        for i in range(n):
            yield i, fn(i)
    elif JOBS_IN_PROCESSES and _may_fork():
        yield from _imap_processes(n, fn, costs, nworkers, _Window(costs, window))
    else:
        # Threads: windows one after another, each run as imap_packed runs its jobs.
        start = 0
        while start < n:
            end, used = start + 1, costs[start]
            while end < n and used + costs[end] <= window:
                used += costs[end]
                end += 1
            done: dict[int, object] = {}
            for j, value in _imap_threads(end - start, lambda j, s=start: fn(s + j), costs[start:end], nworkers):
                done[start + j] = value
            for i in range(start, end):
                yield i, done.pop(i)
            start = end


class _Window:
    """Which jobs may start: index order within a budget of cost in flight (see :func:`imap_ordered`)."""

    def __init__(self, costs: list[int], window: int) -> None:
        self.costs = costs
        self.window = window
        self.admitted = 0  # jobs 0 .. admitted - 1 have started
        self.returned = 0  # results handed back, in index order
        self.in_flight = 0  # cost of the started jobs not handed back
        self.rest = sum(costs)  # cost of the jobs not started
        self.done: dict[int, object] = {}

    def admit(self, room: int) -> list[int]:
        """Jobs to start now, at most ``room`` of them."""
        out: list[int] = []
        n = len(self.costs)
        if self.in_flight + self.rest <= self.window:  # everything left fits: largest first
            out = sorted(range(self.admitted, n), key=lambda j: -self.costs[j])[:room]
            if len(out) == n - self.admitted:
                self.admitted = n
                self.in_flight += self.rest
                self.rest = 0
                return out
            out = []
        while self.admitted < n and len(out) < room:
            c = self.costs[self.admitted]
            if self.in_flight and self.in_flight + c > self.window:
                break
            out.append(self.admitted)
            self.admitted += 1
            self.in_flight += c
            self.rest -= c
        return out

    def finished(self, i: int, value: object) -> list[tuple[int, object]]:
        """Record job ``i``'s result; the results now ready to hand back, in order."""
        self.done[i] = value
        out = []
        while self.returned in self.done:
            j = self.returned
            out.append((j, self.done.pop(j)))
            self.in_flight -= self.costs[j]
            self.returned += 1
        return out


def _imap_threads(n: int, fn: Callable[[int], object], costs, nthreads: int) -> Iterator[tuple[int, object]]:
    jobs = _Jobs(n, fn, costs, nthreads)
    _submit(jobs.work, nthreads)
    failed: dict[int, BaseException] = {}
    try:
        while (r := jobs.next()) is not None:
            i, ok, value = r
            if ok:
                yield i, value
            else:
                failed[i] = value
    finally:
        jobs.close()
    if failed:
        raise failed[min(failed)]


# --- the encoder's jobs in forked processes (see JOBS_IN_PROCESSES) ----------------

_PIPE_CAPACITY = 4096  # bytes any pipe holds (one page, even when the system limits pipe buffers): 1024 job indices


def _imap_processes(n: int, fn: Callable[[int], object], costs, nproc: int, window: "_Window | None" = None) -> Iterator[tuple[int, object]]:
    import msgpack
    import selectors

    costs = [1] * n if costs is None else list(costs)
    # The queue: job indices, 4 bytes each, fed to the workers through a pipe in writes
    # of at most one page (atomic, so every index arrives whole: reads of 4 bytes take
    # one each). Without a window, what fits the pipe goes in before any worker starts
    # and the rest as the workers drain it. With one, the jobs the window admits go in
    # as results are handed back, at most a pipe's worth waiting at a time.
    qr, qw = os.pipe()
    if window is None:
        queue = memoryview(np.array(sorted(range(n), key=lambda j: -costs[j]), dtype="<u4").tobytes())
    else:
        queue = memoryview(np.array(window.admit(_PIPE_CAPACITY // 4), dtype="<u4").tobytes())
    _write_all(qw, queue[:_PIPE_CAPACITY])
    queue = queue[_PIPE_CAPACITY:]
    if queue:
        os.set_blocking(qw, False)
    elif window is None or window.admitted == n:
        os.close(qw)
        qw = -1
    children = {}
    sel = selectors.DefaultSelector()
    try:
        for _ in range(nproc):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                code = 0
                try:
                    if qw >= 0:
                        os.close(qw)
                    _set_child()
                    _drain(qr, lambda i: _send(w, msgpack.packb([i, True, fn(i)], use_bin_type=True, default=_plain)))
                except BaseException as e:  # noqa: BLE001 - reported to the parent as data
                    code = 1
                    try:
                        _send(w, msgpack.packb([-1, False, [type(e).__name__, str(e)]], use_bin_type=True))
                    except BaseException:  # noqa: BLE001
                        pass
                finally:
                    os._exit(code)
            os.close(w)
            children[r] = (pid, _Frames())
            sel.register(r, selectors.EVENT_READ)
        os.close(qr)
        qr = -1
        if queue:
            sel.register(qw, selectors.EVENT_WRITE)
        failure = None
        while children and failure is None:
            for key, _ in sel.select():
                if key.fd == qw:
                    try:
                        queue = queue[os.write(qw, queue[:_PIPE_CAPACITY]) :]
                    except BlockingIOError:
                        continue
                    if not queue:
                        sel.unregister(qw)
                        os.close(qw)
                        qw = -1
                    continue
                r = key.fd
                pid, frames = children[r]
                message = frames.read(r)
                if message is None:  # the worker closed its end
                    sel.unregister(r)
                    os.close(r)
                    del children[r]
                    _, status = os.waitpid(pid, 0)
                    if frames.partial() and failure is None:
                        failure = RuntimeError("a worker process sent an incomplete result")
                    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 1)) and failure is None:
                        failure = RuntimeError(f"a worker process ended without reporting (status {status})")
                    continue
                if message:
                    i, ok, value = msgpack.unpackb(message, raw=False, strict_map_key=False)
                    del message
                    if not ok:
                        if failure is None:
                            failure = _error(*value)
                    elif window is None:
                        yield i, value
                    else:
                        for item in window.finished(i, value):
                            yield item
                        if qw >= 0:
                            more = window.admit(_PIPE_CAPACITY // 4 - (window.admitted - window.returned))
                            if more:
                                _write_all(qw, np.array(more, dtype="<u4").tobytes())  # never more than the pipe holds
                            if window.admitted == n:
                                os.close(qw)
                                qw = -1
        if failure is not None:
            raise failure
    finally:
        for fd in (qr, qw):
            if fd >= 0:
                os.close(fd)
        for r, (pid, _) in children.items():  # stopped early: end the rest
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
            os.close(r)
        sel.close()


def _set_child() -> None:
    # A worker process runs its jobs inline.
    _workers.set(1)
    _local.inside = True


def _drain(qr: int, fn: Callable[[int], None]) -> None:
    while True:
        b = os.read(qr, 4)
        if len(b) < 4:
            return
        fn(int.from_bytes(b, "little"))


def _error(name: str, msg: str) -> Exception:
    """A worker's error from its class name: ecnn's own classes as themselves, anything else as RuntimeError."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.EcnnError):
        return cls(msg)
    return RuntimeError(f"{name}: {msg}")


def _plain(o):
    if isinstance(o, np.generic):  # numpy scalars in a result travel as Python numbers
        return o.item()
    raise TypeError(f"cannot send a {type(o).__name__} between processes")


def _send(fd: int, data: bytes) -> None:
    """One message: its length (8 bytes, little-endian), then the bytes as they are (not copied)."""
    _write_all(fd, len(data).to_bytes(8, "little"))
    _write_all(fd, data)


class _Frames:
    """The messages :func:`_send` writes, read from a pipe into one buffer of their size each."""

    def __init__(self) -> None:
        self.head = b""
        self.body: bytearray | None = None
        self.got = 0

    def partial(self) -> bool:
        return bool(self.head) or self.body is not None

    def read(self, fd: int):
        """Read what the pipe has: a whole message, ``b""`` for none yet, or None at the end of the pipe."""
        if self.body is None:
            b = os.read(fd, 8 - len(self.head))
            if not b:
                return None
            self.head += b
            if len(self.head) < 8:
                return b""
            self.body, self.got = bytearray(int.from_bytes(self.head, "little")), 0
            self.head = b""
            if self.body:
                return b""  # the body on the next wake-up: a read now could wait for the writer
        if self.got < len(self.body):
            with memoryview(self.body) as view:
                k = os.readv(fd, [view[self.got :]])
            if not k:
                return None
            self.got += k
        if self.got < len(self.body):
            return b""
        message, self.body = self.body, None
        return message


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
