"""ecnn/file.py: whole files from records encoded one by one."""

import numpy as np
import pytest

from ecnn import codec, dtypes, file
from ecnn.config import EncodeConfig
from ecnn.errors import InvalidOption, InvalidTensorName


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "w": (rng.standard_normal((16, 8)).astype(np.float32), dtypes.get("float32")),
        "n": (np.arange(5, dtype=np.int64), dtypes.get("int64")),
    }


def test_encode_records_writes_what_encode_writes():
    arrays, cfg, md = _arrays(), EncodeConfig(bits=6, align=64), {"k": "v"}
    recs, pays = zip(*(codec.encode_tensor(n, a, dt, cfg) for n, (a, dt) in arrays.items()))
    kept = [dict(r) for r in recs]
    assert b"".join(file.encode_records(list(recs), list(pays), md, cfg.align)) == file.encode(arrays, cfg, md)
    assert list(recs) == kept  # the records are not filled in


@pytest.mark.parametrize(
    "names, md, err",
    [(["w", "w"], {}, InvalidTensorName), (["", "n"], {}, InvalidTensorName), (["w", "n"], {"k": 1}, InvalidOption)],
)
def test_encode_records_checks_names_and_metadata(names, md, err):
    cfg = EncodeConfig(lossless=True)
    recs, pays = [], []
    for name, (a, dt) in zip(names, _arrays().values()):
        rec, pay = codec.encode_tensor(name, a, dt, cfg)
        recs.append(rec)
        pays.append(pay)
    with pytest.raises(err):
        file.encode_records(recs, pays, md)


# --- save_stream: one tensor at a time, spooled ------------------------------------


def _many():
    rng = np.random.default_rng(3)
    out = {f"t{i}": (rng.laplace(0, 0.05, (int(rng.integers(1, 40)), 64)).astype(np.float32), dtypes.get("float32")) for i in range(12)}
    out["empty"] = (np.zeros((0, 4), np.float32), dtypes.get("float32"))
    out["ints"] = (np.arange(100, dtype=np.int16), dtypes.get("int16"))
    return out


@pytest.mark.parametrize("window", [1, 4096, None])
@pytest.mark.parametrize("workers", [1, 2])
def test_save_stream_writes_what_encode_writes(tmp_path, window, workers):
    from ecnn import chunkrun

    arrays = _many()
    for cfg in (EncodeConfig(bits=6, align=64), EncodeConfig(lossless=True)):
        want = file.encode(arrays, cfg, {"k": "v"})
        reads = []

        def reader(arr, name):
            def read():
                reads.append(name)
                return arr

            return read

        srcs = [file.Source(n, dt, arr.shape, reader(arr, n)) for n, (arr, dt) in arrays.items()]
        with chunkrun.using(workers):
            size = file.save_stream(srcs, tmp_path / "s.ecnn", cfg, {"k": "v"}, window=window)
        assert size == len(want) and (tmp_path / "s.ecnn").read_bytes() == want
        if workers == 1:
            assert reads == list(arrays)  # each tensor read once, in order
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ecnn"]  # the spool is gone


def test_save_stream_of_nothing_and_the_progress_it_reports(tmp_path):
    assert file.save_stream([], tmp_path / "e.ecnn", EncodeConfig()) == len(file.encode({}, EncodeConfig()))
    seen = []
    arrays = _many()
    file.save_stream(file.sources(arrays), tmp_path / "p.ecnn", EncodeConfig(bits=8), progress=lambda *a: seen.append(a))
    sizes = np.cumsum([a.nbytes for a, _ in arrays.values()])
    assert seen == [("", 0, int(sizes[-1]))] + [(n, int(s), int(sizes[-1])) for n, s in zip(arrays, sizes)]


def test_a_source_that_reads_something_else_is_an_error_and_leaves_no_file(tmp_path):
    srcs = [file.Source("w", dtypes.get("float32"), (4, 4), lambda: np.zeros((4, 5), np.float32))]
    with pytest.raises(InvalidOption, match="expected float32"):
        file.save_stream(srcs, tmp_path / "x.ecnn", EncodeConfig())
    srcs = [file.Source("w", dtypes.get("float32"), (2,), lambda: np.zeros(2, np.float32))] * 2
    with pytest.raises(InvalidTensorName):
        file.save_stream(srcs, tmp_path / "x.ecnn", EncodeConfig())
    assert list(tmp_path.iterdir()) == []

def _mapped_rss(path) -> int:
    """Resident bytes of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    rss, current = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:  # a mapping's first line
                current = len(parts) >= 6 and parts[5] == str(path)
            elif current and parts[0] == "Rss:":
                rss += int(parts[1]) * 1024
    return rss


@pytest.mark.skipif(not file._DONTNEED or not __import__("os").path.exists("/proc/self/smaps"), reason="Linux madvise")
@pytest.mark.parametrize("workers", [1, 2])
def test_streaming_reads_leave_no_payload_resident(tmp_path, workers):
    """verify, iter_arrays and arrays drop each payload's pages from the mapping once decoded."""
    rng = np.random.default_rng(0)
    arrays = {f"t{i}": (rng.integers(0, 256, 1 << 20, dtype=np.uint8), dtypes.get("uint8")) for i in range(6)}
    arrays["w"] = (rng.standard_normal((256, 512)).astype(np.float32), dtypes.get("float32"))
    path = tmp_path / "m.ecnn"
    file.save(arrays, path, EncodeConfig(bits=8))
    size = path.stat().st_size
    with file.EcnnFile(path) as f:
        f.verify(count_bytes=True)
        assert _mapped_rss(path) < size / 8
        seen = {}
        for name, arr, _ in f.iter_arrays(workers=workers):
            seen[name] = arr  # raw payloads come back as views of the mapping: still readable once released
        assert _mapped_rss(path) < size / 8
        assert all(np.array_equal(seen[f"t{i}"], arrays[f"t{i}"][0]) for i in range(6))
        out = f.arrays(workers=workers)
        assert _mapped_rss(path) < size / 8
        assert np.abs(out["w"][0] - arrays["w"][0]).max() < 0.1
        # Without the release, the same reads keep the whole file resident: the check above means something.
        f._drop = lambda start, length: None
        f.verify()
        assert _mapped_rss(path) > size * 0.9


def test_verify_counts_bytes_when_asked():
    arrays = _arrays()
    with file.EcnnFile(file.encode(arrays, EncodeConfig(lossless=True))) as f:
        calls = []
        f.verify(lambda name, i, total: calls.append((name, i, total)), count_bytes=True)
        assert calls == [("w", 0, 16 * 8 * 4 + 5 * 8), ("n", 16 * 8 * 4, 552), ("", 552, 552)]
        f.release("w")  # a file read from bytes: nothing to drop
