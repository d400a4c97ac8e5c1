"""Using several cores: the chunks of one tensor when decoding, whole tensors when encoding.

A coded stream splits a large tensor into chunks that decode independently
(spec/CODING.md, "Chunking"). A decoder written as a loop over chunk indices,
each writing its own slice of a preallocated output, runs here either in this
process or split over forked worker processes::

    out = chunkrun.empty(count, np.int32, nchunks)

    def one(i):
        out[i * chunk : ...] = ...  # decode chunk i

    chunkrun.run(nchunks, one, out)

constriction holds the GIL while it decodes, so threads would not help. The
workers are forked, so they inherit everything the decoder has parsed (tables,
models, the chunks' words) and nothing is sent to them; they write into the
output, which :func:`empty` places in shared anonymous memory when it will be
split. A worker reports back only a status and, on failure, the error's class
name and message as text; nothing is ever pickled. Off Linux, or for small
outputs, everything runs in this process.

The number of processes is :func:`workers`: the ``ECNN_WORKERS`` environment
variable, else the CPUs this process may run on, at most
:data:`DEFAULT_MAX_WORKERS`; :func:`using` changes it for a block of code.
Decoding is the same bits whatever the split.

:func:`imap_packed` runs independent jobs (the encoder's tensors) in forked
workers that send their results back as MessagePack.
"""

from __future__ import annotations

import contextlib
import contextvars
import mmap
import os
import sys
from typing import Callable, Iterator

import numpy as np

from ecnn import errors
from ecnn.errors import CorruptPayload

DEFAULT_MAX_WORKERS = 8
MIN_SPLIT_BYTES = 1 << 21  # outputs smaller than this decode in this process
# fork is safe to use this way on Linux; elsewhere (macOS system frameworks, Windows) decoding stays in-process.
_FORK = hasattr(os, "fork") and sys.platform.startswith("linux")

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
    """Processes a tensor's chunks are split over (1: this process only)."""
    n = _workers.get()
    return default_workers() if n is None else n


@contextlib.contextmanager
def using(n: int | None):
    """Split chunks over ``n`` processes inside the block (None: the default)."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise errors.InvalidOption(f"workers must be a positive integer, not {n!r}")
    token = _workers.set(n)
    try:
        yield
    finally:
        _workers.reset(token)


def _split(nchunks: int, nbytes: int) -> int:
    if not _FORK or nchunks < 2 or nbytes < MIN_SPLIT_BYTES:
        return 1
    return min(workers(), nchunks)


def empty(shape, dtype, nchunks: int) -> np.ndarray:
    """An uninitialized output for a decoder with ``nchunks`` chunks.

    It lies in shared memory when :func:`run` will split those chunks over
    worker processes, in ordinary memory otherwise.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _split(nchunks, nbytes) == 1:
        return np.empty(shape, dtype)
    buf = mmap.mmap(-1, nbytes)  # anonymous and shared: forked workers write into the same pages
    return np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize).reshape(shape)


def is_shared(a: np.ndarray) -> bool:
    """Whether ``a`` (or the array it views) came from :func:`empty`'s shared memory."""
    while isinstance(a, np.ndarray):
        a = a.base
    if isinstance(a, memoryview):
        a = a.obj
    return isinstance(a, mmap.mmap)


def run(nchunks: int, fn: Callable[[int], None], out: np.ndarray | None = None) -> None:
    """Call ``fn(i)`` for every chunk ``i`` in ``0 .. nchunks - 1``.

    With an ``out`` from :func:`empty` in shared memory, the chunks are shared
    out among this process and forked workers, each taking the next chunk
    from a common queue as it finishes one (so a slow or busy core holds up
    no one). ``fn`` must write its results only into ``out``.

    Raises:
        EcnnError: ``fn`` raised one of ecnn's errors in any process: the same
            class and message.
        CorruptPayload: ``fn`` failed otherwise (the error's class name and
            message are kept in the message), or a worker died without reporting.
    """
    nproc = 1
    if out is not None and is_shared(out):
        nproc = _split(nchunks, out.nbytes)
    if nproc == 1:
        for i in range(nchunks):
            fn(i)
        return
    indices = np.arange(nchunks, dtype="<u4").tobytes()
    if len(indices) > _PIPE_CAPACITY:  # too many chunks to queue at once: contiguous ranges instead
        bounds = [nchunks * k // nproc for k in range(nproc + 1)]
        _spread(nproc, lambda k: [fn(i) for i in range(bounds[k], bounds[k + 1])])
        return
    # The queue: every chunk index, 4 bytes each, written before any worker starts.
    # Reads of 4 bytes from a pipe are atomic, so each index goes to exactly one process.
    qr, qw = os.pipe()
    _write_all(qw, indices)
    os.close(qw)
    try:
        _spread(nproc, lambda k: _drain(qr, fn))
    finally:
        os.close(qr)


def _spread(nproc: int, work: Callable[[int], object]) -> None:
    """Run ``work(k)`` in forked workers ``k = 1 .. nproc - 1`` and ``work(0)`` here; raise the first failure."""
    children = []
    error = None
    try:
        for k in range(1, nproc):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # worker: do its part, report, exit without any cleanup
                os.close(r)
                _set_child()
                os._exit(_report(w, lambda: work(k)))
            os.close(w)
            children.append((pid, r))
        try:
            work(0)
        except errors.EcnnError as e:
            error = e
        except Exception as e:  # the same error whichever process met it
            error = CorruptPayload(f"{type(e).__name__}: {e}")
    finally:
        failures = [_reap(pid, r) for pid, r in children]
    for f in [error] + failures:
        if f is not None:
            raise f


_PIPE_CAPACITY = 4096  # bytes any pipe holds (one page, even when the system limits pipe buffers): 1024 chunks


def _drain(qr: int, fn: Callable[[int], None]) -> None:
    while True:
        b = os.read(qr, 4)
        if len(b) < 4:
            return
        fn(int.from_bytes(b, "little"))


def _report(w: int, work: Callable[[], None]) -> int:
    """Run ``work`` in a worker; write nothing on success, the error as text otherwise; the exit status."""
    code, msg = 0, b""
    try:
        work()
    except BaseException as e:  # noqa: BLE001 - reported to the parent as text
        code, msg = 1, f"{type(e).__name__}\0{e}".encode("utf-8", "replace")
    try:
        _write_all(w, msg[:65536])
    except BaseException:  # noqa: BLE001
        pass
    return code


def _set_child() -> None:
    # A worker never splits again.
    _workers.set(1)


def _error(name: str, msg: str, other: type[Exception] = errors.CorruptPayload) -> Exception:
    """A worker's error from its class name: ecnn's own classes (say a tensor's
    ``PayloadChecksumMismatch``) as themselves, anything else as ``other``."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.EcnnError):
        return cls(msg)
    return other(f"{name}: {msg}")


def _reap(pid: int, r: int) -> Exception | None:
    try:
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return None
    if chunks:
        name, _, msg = b"".join(chunks).decode("utf-8", "replace").partition("\0")
        return _error(name, msg)
    return errors.CorruptPayload(f"a decoding worker process ended without reporting (status {status})")


# --- independent jobs with results ----------------------------------------------


def imap_packed(n: int, fn: Callable[[int], object], costs=None) -> Iterator[tuple[int, object]]:
    """``(i, fn(i))`` for every ``i`` in ``0 .. n - 1``, in completion order.

    With more than one process (:func:`workers`) and at least two jobs, the
    jobs wait in one queue, the largest by ``costs`` first, and each forked
    worker takes the next job whenever it finishes one (so a job that takes
    longer than its cost says holds up no one). Each worker sends its results
    back as MessagePack (so a result must be made of MessagePack types: ints,
    strings, bytes, lists, dicts...) through a pipe, read here as they come. A
    worker's exception comes back as the :mod:`ecnn.errors` class of the same
    name if there is one, else as RuntimeError. Off Linux, everything runs here.
    """
    nproc = min(workers(), n) if _FORK else 1
    if nproc <= 1:
        for i in range(n):
            yield i, fn(i)
        return
    import msgpack
    import selectors

    costs = [1] * n if costs is None else list(costs)
    queue = memoryview(np.array(sorted(range(n), key=lambda j: -costs[j]), dtype="<u4").tobytes())
    # The queue: job indices, 4 bytes each. What fits the pipe goes in before any worker
    # starts; the rest is fed below as the workers drain it, in writes of at most one
    # page (atomic, so every index arrives whole: reads of 4 bytes take one each).
    qr, qw = os.pipe()
    _write_all(qw, queue[:_PIPE_CAPACITY])
    queue = queue[_PIPE_CAPACITY:]
    if queue:
        os.set_blocking(qw, False)
    else:
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
                    _drain(qr, lambda i: _write_all(w, _frame(msgpack.packb([i, True, fn(i)], use_bin_type=True, default=_plain))))
                except BaseException as e:  # noqa: BLE001 - reported to the parent as data
                    code = 1
                    try:
                        _write_all(w, _frame(msgpack.packb([-1, False, [type(e).__name__, str(e)]], use_bin_type=True)))
                    except BaseException:  # noqa: BLE001
                        pass
                finally:
                    os._exit(code)
            os.close(w)
            children[r] = (pid, bytearray())
            sel.register(r, selectors.EVENT_READ)
        os.close(qr)
        qr = -1
        if qw >= 0:
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
                b = os.read(r, 1 << 20)
                pid, buf = children[r]
                if not b:
                    sel.unregister(r)
                    os.close(r)
                    del children[r]
                    _, status = os.waitpid(pid, 0)
                    if buf and failure is None:
                        failure = RuntimeError("a worker process sent an incomplete result")
                    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 1)) and failure is None:
                        failure = RuntimeError(f"a worker process ended without reporting (status {status})")
                    continue
                buf += b
                while len(buf) >= 8:
                    size = int.from_bytes(buf[:8], "little")
                    if len(buf) < 8 + size:
                        break
                    i, ok, value = msgpack.unpackb(bytes(buf[8 : 8 + size]), raw=False, strict_map_key=False)
                    del buf[: 8 + size]
                    if ok:
                        yield i, value
                    elif failure is None:
                        failure = _error(*value, other=RuntimeError)
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


def _plain(o):
    if isinstance(o, np.generic):  # numpy scalars in a result travel as Python numbers
        return o.item()
    raise TypeError(f"cannot send a {type(o).__name__} between processes")


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
