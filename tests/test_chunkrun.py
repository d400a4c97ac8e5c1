"""Decoding one tensor's chunks in forked worker processes (ecnn/chunkrun.py)."""

import os
import time

import numpy as np
import pytest

import ecnn.numpy as en
from ecnn import EncodeConfig, chunkrun, select
from ecnn.coder import ctx, streams
from ecnn.errors import CorruptPayload, InvalidOption

LO, HI = -(1 << 24), 1 << 24
needs_fork = pytest.mark.skipif(not chunkrun._FORK, reason="splits only on Linux")


@pytest.fixture
def split(monkeypatch, forks):
    """Split every multi-chunk output over 3 processes, and count the forks."""
    monkeypatch.setattr(chunkrun, "MIN_SPLIT_BYTES", 0)
    with chunkrun.using(3):
        yield forks


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


@needs_fork
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_split_decoding_gives_the_same_symbols(case, split):
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
    before = len(split)
    out = streams.decode(d, data, v.size, np.int32, LO, HI, runner=chunkrun)
    assert len(split) - before == 2  # two workers beside this process
    assert chunkrun.is_shared(out)
    np.testing.assert_array_equal(out, v.ravel())
    with chunkrun.using(1):
        serial = streams.decode(d, data, v.size, np.int32, LO, HI, runner=chunkrun)
    assert not chunkrun.is_shared(serial)
    np.testing.assert_array_equal(serial, out)


@needs_fork
def test_a_whole_file_decodes_identically_when_split(split, tmp_path):
    rng = np.random.default_rng(2)
    tensors = {"w": (rng.laplace(0, 0.05, (256, 300))).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    blob = en.encode(tensors, config=EncodeConfig(bits=6, chunk=4096))
    with chunkrun.using(1):
        serial = en.decode(blob)
    before = len(split)
    parallel = en.decode(blob)
    assert len(split) > before
    for k in tensors:
        assert parallel[k].tobytes() == serial[k].tobytes()


@needs_fork
def test_worker_errors_come_back_typed(split):
    out = chunkrun.empty(8, np.int32, 4)

    def fails_in_a_worker(i):
        out[2 * i : 2 * i + 2] = i
        if i == 3:
            raise CorruptPayload("chunk 3 is damaged")

    with pytest.raises(CorruptPayload, match="chunk 3 is damaged"):
        chunkrun.run(4, fails_in_a_worker, out)

    def other_error(i):
        if i == 2:
            raise ValueError("bad varint")

    with pytest.raises(CorruptPayload, match="ValueError: bad varint"):
        chunkrun.run(4, other_error, out)

    parent = os.getpid()

    def dies(i):
        if os.getpid() != parent:
            os._exit(3)  # every worker dies on its first chunk
        time.sleep(0.05)  # leave chunks for the workers

    with pytest.raises(CorruptPayload, match="ended without reporting"):
        chunkrun.run(4, dies, out)


@needs_fork
def test_chunks_go_to_whichever_process_is_free(split):
    out = chunkrun.empty(40, np.int64, 40)
    parent = os.getpid()

    def fn(i):
        if os.getpid() == parent:
            time.sleep(0.2)  # a busy process takes few chunks
        out[i] = os.getpid()

    out[:] = 0
    chunkrun.run(40, fn, out)
    assert (out > 0).all()  # every chunk done
    assert np.count_nonzero(out == parent) <= 3  # the workers took the rest


@needs_fork
def test_many_chunks_fall_back_to_ranges(split, monkeypatch):
    monkeypatch.setattr(chunkrun, "_PIPE_CAPACITY", 16)
    out = chunkrun.empty(10, np.int64, 10)
    chunkrun.run(10, lambda i: out.__setitem__(i, i * i), out)
    assert out.tolist() == [i * i for i in range(10)]


@needs_fork
def test_an_error_in_this_process_still_waits_for_the_workers(split):
    out = chunkrun.empty(8, np.int32, 4)
    marks = chunkrun.empty(4, np.int32, 4)
    marks[:] = 0

    def fn(i):
        marks[i] = 1
        if i == 0:
            raise CorruptPayload("first chunk")

    with pytest.raises(CorruptPayload, match="first chunk"):
        chunkrun.run(4, fn, marks)
    assert marks[1:].tolist() == [1, 1, 1]  # the workers ran to the end before the error was raised
    assert out.shape == (8,)


def test_small_or_private_outputs_stay_in_this_process(monkeypatch):
    calls = []
    monkeypatch.setattr(chunkrun.os, "fork", lambda: pytest.fail("forked"))
    with chunkrun.using(4):
        small = chunkrun.empty(100, np.int32, 10)  # under MIN_SPLIT_BYTES
        assert not chunkrun.is_shared(small)
        chunkrun.run(10, calls.append, small)
        chunkrun.run(3, calls.append)  # no output: never split
    assert calls == list(range(10)) + [0, 1, 2]


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


@needs_fork
def test_imap_packed_returns_every_result_once():
    with chunkrun.using(3):
        got = dict(chunkrun.imap_packed(7, lambda i: {"i": i, "b": bytes([i]) * i, "np": np.int64(i) * 2}, costs=range(7)))
    assert got == {i: {"i": i, "b": bytes([i]) * i, "np": 2 * i} for i in range(7)}


@needs_fork
def test_imap_packed_jobs_go_to_whichever_worker_is_free():
    def fn(i):
        if i == 0:
            time.sleep(0.3)  # the first job in the queue takes long, whatever its cost says
        return os.getpid()

    with chunkrun.using(2):
        got = dict(chunkrun.imap_packed(21, fn, costs=[1] * 21))
    assert sorted(got) == list(range(21))
    assert sum(pid == got[0] for pid in got.values()) <= 3  # the other worker took the rest


@needs_fork
def test_imap_packed_feeds_a_queue_larger_than_the_pipe(monkeypatch):
    monkeypatch.setattr(chunkrun, "_PIPE_CAPACITY", 16)  # 4 indices at a time
    with chunkrun.using(3):
        got = dict(chunkrun.imap_packed(50, lambda i: i * i, costs=range(50)))
    assert got == {i: i * i for i in range(50)}


@needs_fork
def test_imap_packed_errors_come_back_typed():
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
def test_encoding_in_workers_gives_the_same_bytes():
    rng = np.random.default_rng(4)
    arrays = {
        "a": rng.laplace(0, 0.05, (300, 200)).astype(np.float32),
        "b": rng.standard_normal(50).astype(np.float32),
        "c": rng.integers(-5, 5, (40, 40)).astype(np.int16),
        "d": rng.standard_normal((64, 64)).astype(np.float16),
        "e": np.zeros((0, 3), np.float32),
    }
    seen = []
    for cfg in (EncodeConfig(bits=6), EncodeConfig(lossless=True)):
        with chunkrun.using(1):
            one = en.encode(arrays, config=cfg)
        with chunkrun.using(3):
            three = en.encode(arrays, config=cfg)
        assert one == three
    from ecnn import file as _file
    from ecnn import dtypes

    with chunkrun.using(3):
        _file.encode({k: (v, dtypes.from_numpy(v.dtype)) for k, v in arrays.items()}, EncodeConfig(bits=6), progress=lambda *a: seen.append(a))
    assert seen[0] == ("", 0, 5) and sorted(s[1] for s in seen[1:]) == [1, 2, 3, 4, 5]
    assert {s[0] for s in seen[1:]} == set(arrays)


@needs_fork
def test_every_fixture_decodes_the_same_in_worker_processes(split):
    """EcnnFile.arrays splits small tensors over workers too: every vector gives the same bits, and the same error."""
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
                    except errors.FormatError as e:
                        got[n] = type(e).__name__
            assert got[3] == got[1], f"{kind}/{name}"
            if kind == "invalid":
                assert got[1] == expected[name]["error"], name


@needs_fork
def test_a_workers_own_error_class_comes_back(split):
    """A tensor decoded in a worker that fails its checksum is PayloadChecksumMismatch, as in one process."""
    from ecnn.errors import PayloadChecksumMismatch

    out = chunkrun.empty(8, np.int32, 4)
    parent = os.getpid()

    def checksum_in_a_worker(i):
        if os.getpid() != parent:
            raise PayloadChecksumMismatch(f"tensor {i}: payload CRC-32 mismatch")
        time.sleep(0.05)  # leave chunks for the workers

    with pytest.raises(PayloadChecksumMismatch, match="CRC-32 mismatch"):
        chunkrun.run(4, checksum_in_a_worker, out)
    rng = np.random.default_rng(3)
    tensors = {f"t{i}": rng.laplace(0, 0.05, (300, 256)).astype(np.float32) for i in range(4)}
    blob = bytearray(en.encode(tensors, config=EncodeConfig(bits=6)))
    blob[-5] ^= 0x40  # the last tensor's payload
    for n in (1, 3):
        with chunkrun.using(n), pytest.raises(PayloadChecksumMismatch):
            en.decode(bytes(blob))
