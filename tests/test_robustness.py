"""Hostile files: decoded-size caps, every committed fixture through every reader,
determinism across processes, and the memory a header may take to parse.

The attacks of single fields (each one a named error) are in tests/test_container.py
and the conformance vectors; fuzzing is tools/fuzz_ecnn.py (tests/test_fuzz_ecnn.py
runs a few hundred of its inputs).
"""

from __future__ import annotations

import contextlib
import json
import struct
import tracemalloc
from pathlib import Path

import msgpack
import pytest

import ecnn
import ecnn.numpy as en
from ecnn import errors
from ecnn.cli import main
from ecnn.container import format as fmt
from ecnn.container import header as hdr
from ecnn.file import EcnnFile

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def _file(records: list[dict], payloads: list[bytes] | None = None, metadata=None, align: int = 8) -> bytes:
    """A container with the given records; offsets, lengths and CRCs filled in."""
    payloads = payloads or [b""] * len(records)
    pos = 0
    for r, p in zip(records, payloads):
        pos = fmt.align_up(pos, align)
        r.update(offset=pos, length=len(p), crc32=fmt.crc32(p))
        pos += len(p)
    hb = msgpack.packb({"align": align, "metadata": metadata or {}, "tensors": records})
    head = struct.pack("<HHI", fmt.FORMAT_MAJOR, 0, len(hb))
    out = bytearray(fmt.SIGNATURE + head + struct.pack("<I", fmt.crc32(head, hb)) + hb)
    out += bytes(fmt.align_up(len(out), align) - len(out))
    pos = 0
    for p in payloads:
        out += bytes(fmt.align_up(pos, align) - pos) + p
        pos = fmt.align_up(pos, align) + len(p)
    return bytes(out)


def _const(name: str, shape: list[int], dtype: str = "float32") -> dict:
    """A record whose every byte plane is a ``const`` stream: no payload, any size."""
    width = ecnn.dtypes.get(dtype).itemsize
    streams = [{"coder": "const", "length": 0, "value": 0} for _ in range(width)]
    return {"name": name, "dtype": dtype, "shape": shape, "repr": {"kind": "planes"}, "streams": streams}


@contextlib.contextmanager
def _peak(limit: int):
    """Fail if Python and numpy allocate more than ``limit`` bytes at once inside the block."""
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < limit, f"peak allocation {peak} bytes"


# --- decoded-size caps ---------------------------------------------------------


def test_a_file_declaring_a_1_tb_tensor_fails_at_once():
    data = _file([_const("w", [1 << 40], "uint8")])
    assert len(data) < 200
    for read in (ecnn.decode, en.decode, ecnn.open, lambda d: EcnnFile(d).get_array("w")):
        with _peak(1 << 20), pytest.raises(errors.LimitExceeded, match="over the cap"):
            read(data)
    # 1025 tensors of 1 GiB: each under the tensor cap, together over the total cap (1 TiB).
    many = _file([_const(f"t{i}", [1 << 28]) for i in range(1025)])
    with _peak(16 << 20), pytest.raises(errors.LimitExceeded, match="in all"):
        ecnn.open(many)


def test_a_const_tensor_is_refused_above_a_user_cap_before_allocating(tmp_path):
    gib = _file([_const("w", [1 << 28])])  # 1 GiB of float32 zeros in a 150-byte file
    with ecnn.open(gib) as f:  # valid under the default caps: the caps are the defense
        assert f.info("w").nbytes == 1 << 30
    cap = fmt.Limits(max_tensor_bytes=256 << 20)
    path = tmp_path / "gib.ecnn"
    path.write_bytes(gib)
    with _peak(1 << 20):
        for read in (
            lambda: ecnn.open(gib, limits=cap),
            lambda: ecnn.decode(gib, limits=cap),
            lambda: en.decode(gib, limits=cap),
            lambda: ecnn.load_file(path, limits=cap),
        ):
            with pytest.raises(errors.LimitExceeded):
                read()
    total = fmt.Limits(max_total_bytes=(1 << 30) - 1)
    with _peak(1 << 20), pytest.raises(errors.LimitExceeded, match="in all"):
        ecnn.open(gib, limits=total)


def test_caps_are_exact():
    data = _file([_const("a", [1000]), _const("b", [24], "int8")])  # 4000 and 24 bytes
    assert ecnn.decode(data, limits=fmt.Limits(max_tensor_bytes=4000, max_total_bytes=4024))["a"].shape == (1000,)
    with pytest.raises(errors.LimitExceeded):
        ecnn.decode(data, limits=fmt.Limits(max_tensor_bytes=3999))
    with pytest.raises(errors.LimitExceeded):
        ecnn.decode(data, limits=fmt.Limits(max_total_bytes=4023))


@pytest.mark.parametrize("command", [["verify", "-q"], ["info"], ["unpack", "-q", "-o", "{tmp}/x.safetensors"]])
def test_cli_caps(command, tmp_path, capsys):
    path = tmp_path / "gib.ecnn"
    path.write_bytes(_file([_const("w", [1 << 28])]))
    argv = [a.format(tmp=tmp_path) for a in command] + [str(path)]
    assert main(argv + ["--max-tensor-bytes", "512MiB"]) == 1  # once first: the modules the command imports are not counted
    capsys.readouterr()
    with _peak(2 << 20):
        assert main(argv + ["--max-tensor-bytes", "512MiB"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "536870912" in err
    assert main(argv + ["--max-total-bytes", "1000MiB"]) == 1
    assert "in all" in capsys.readouterr().err
    assert main(["info", str(path), "--max-tensor-bytes", "1GiB", "--max-total-bytes", "1073741824"]) == 0
    assert "w" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["info", str(path), "--max-tensor-bytes", "lots"])


# --- every committed fixture, every reader ---------------------------------------


def _fixture_files(kind: str) -> list[Path]:
    return sorted(FIXTURES.glob(f"v*/{kind}/*.ecnn"))


def test_every_committed_fixture_through_every_reader(tmp_path, capsys):
    """Globs the folders (fixtures added later are included); never skips, never parametrizes to nothing."""
    valid, invalid = _fixture_files("valid"), _fixture_files("invalid")
    assert len(valid) >= 10 and len(invalid) >= 20
    for p in valid:
        want = json.loads((p.parent / "expected.json").read_text())[p.stem]
        data = p.read_bytes()
        tensors = ecnn.decode(data)
        assert sorted(tensors) == sorted(want["tensors"]), p.name
        with ecnn.open(p) as f:  # lazily, one tensor at a time, from the file (mmap)
            for name in reversed(f.keys()):
                arr, dt = f.get_array(name)
                assert list(arr.shape) == want["tensors"][name]["shape"] and dt.name == want["tensors"][name]["dtype"]
                assert list(tensors[name].shape) == want["tensors"][name]["shape"]
            assert f.metadata() == want["metadata"]
        assert main(["verify", "-q", str(p)]) == 0, p.name
        assert main(["info", "--json", str(p)]) == 0, p.name
        assert json.loads(capsys.readouterr().out)["file_bytes"] == len(data)
    for p in invalid:
        err = getattr(errors, json.loads((p.parent / "expected.json").read_text())[p.stem]["error"])
        with pytest.raises(err), ecnn.open(p) as f:
            for name in f.keys():  # noqa: SIM118 - EcnnFile is not a dict
                f.get_tensor(name)
            f.check_padding()
            f.files()  # stored files (1.3), each checked against its CRC-32
        assert main(["verify", "-q", str(p)]) == 1
        text = capsys.readouterr().err
        assert text.startswith("error: ") and text.count("\n") == 1, (p.name, text)


# --- determinism -----------------------------------------------------------------

def test_same_input_same_bytes_across_processes_and_hash_seeds(determinism):
    """numpy, torch, ONNX and trained-model encodes give the same bytes in a child interpreter
    with another hash seed and worker count (tests/_determinism.py, run once by tests/conftest.py)."""
    import _determinism

    here, child = determinism
    assert child["hash"] != hash(_determinism.HASH_PROBE)  # the two processes hash strings differently
    assert child["workers"] == 2  # two encoding workers there, one here
    cases = ["numpy bits=8", "numpy lossless", "numpy config", "torch bits=5", "onnx bits=6", "trained"]
    runs = [[d[c] for c in cases] for d in (here, child["digests"])]
    assert len(runs[0]) == 6 and runs[0] == runs[1]
    assert len(set(runs[0])) == len(runs[0])  # different options give different files


def test_cli_pack_is_deterministic(determinism):
    """``ecnn pack`` writes the same bytes in the child interpreter as here."""
    import _determinism

    here, child = determinism
    assert child["hash"] != hash(_determinism.HASH_PROBE)
    digests = {here["cli pack"], child["digests"]["cli pack"]}
    assert len(digests) == 1 and len(here["cli pack"]) == 64, digests


# --- header parsing memory ----------------------------------------------------------


def _with_header(hb: bytes) -> bytes:
    head = struct.pack("<HHI", fmt.FORMAT_MAJOR, 0, len(hb))
    return fmt.SIGNATURE + head + struct.pack("<I", fmt.crc32(head, hb)) + hb


def _header_of_empty_arrays(nbytes: int) -> bytes:
    n = nbytes // 4
    body = (b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n) * 4
    return _with_header(b"\x83\xa5align\x08\xa8metadata\x80\xa7tensors\x94" + body)


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_header_of_empty_arrays_is_rejected_within_16_bytes_of_memory_per_byte():
    data = _header_of_empty_arrays(1 << 18)

    def run():
        with pytest.raises(errors.InvalidField, match="record must be a map"):
            ecnn.open(data)

    peak = _traced_peak(run)
    assert peak < 16 * len(data), f"{peak / len(data):.0f} bytes per header byte"


_REC = {"name": "a", "dtype": "int8", "shape": [], "offset": 0, "length": 0, "crc32": 0, "repr": {"kind": "raw"}, "streams": []}


def _records(n: int, streams: list) -> bytes:
    """n records that pass the record checks, whose streams are checked later (CODING.md section 9)."""
    return msgpack.packb({"align": 8, "metadata": {}, "tensors": [dict(_REC, streams=streams)] * n})


def _ancillary(body: bytes) -> bytes:
    return b"\x84\xa5align\x08\xa8metadata\x80\xa7tensors\x90\xa2_x" + body


def _array(n: int, element: bytes) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big") + element * n


@pytest.mark.parametrize(
    "what, header, outcome",
    [
        ("ancillary empty arrays", _ancillary(_array(1 << 17, b"\x90")), None),
        ("ancillary one-entry maps", _ancillary(_array(1 << 16, b"\x81\x00\x00")), None),
        ("ancillary two-character strings", _ancillary(_array(1 << 16, b"\xa2ab")), None),
        ("ancillary int16 values", _ancillary(_array(1 << 16, b"\xd1\x80\x00")), None),
        ("ancillary maps of 65535 keys", _ancillary(b"\x92" + (b"\xde\xff\xff" + b"".join(b"\xcd" + i.to_bytes(2, "big") + b"\xc0" for i in range(65535))) * 2), None),
        ("ancillary arrays nested 200 deep", _ancillary(_array(1 << 10, b"\x91" * 200 + b"\x00")), errors.MalformedHeader),
        ("empty records", b"\x83\xa5align\x08\xa8metadata\x80\xa7tensors" + _array(1 << 17, b"\x80"), errors.InvalidField),
        ("records of 64 empty descriptors", _records(2000, [{}] * 64), None),
        ("records of 64 one-key descriptors", _records(1000, [{"": 0}] * 64), None),
        ("records of 64 shortest descriptors", _records(200, [{"coder": "ctx", "length": 0}] * 64), None),
        ("shortest records", _records(4000, []), None),
    ],
)
def test_header_parsing_memory_is_bounded_by_16_bytes_per_header_byte(what, header, outcome):
    """Whatever the header holds, only what the field tables use is built (spec/FORMAT.md section 9.3)."""

    def run():
        if outcome is None:
            hdr.decode(header)
        else:
            with pytest.raises(outcome):
                hdr.decode(header)

    peak = _traced_peak(run)
    assert len(header) > 1 << 17 and peak < 16 * len(header), f"{what}: {peak / len(header):.1f} bytes per header byte"


def test_a_parsed_header_keeps_what_the_checks_use():
    h = {"align": 8, "metadata": {"_k": "v"}, "_note": [[1, 2], {"a": 3}], "tensors": [
        {"name": "w", "dtype": "int8", "shape": [2, 3], "offset": 0, "length": 6, "crc32": 5, "_x": {"y": []},
         "repr": {"kind": "raw", "_r": [1], "zz": [0]}, "streams": [{"coder": "raw", "length": 6, "_d": 1, "w": {}}]},
    ]}
    got = hdr.decode(msgpack.packb(h))
    assert got["metadata"] == {"_k": "v"}  # "_" is an ordinary key in metadata
    rec = got["tensors"][0]
    assert list(rec) == list(hdr.RECORD_FIELDS) and rec["shape"] == [2, 3] and rec["crc32"] == 5
    assert rec["repr"] == {"kind": "raw", "zz": ()} and rec["streams"] == [{"coder": "raw", "length": 6, "w": {}}]
    assert "_note" not in got and "_x" not in rec  # ancillary values are checked, then dropped
    # After a descriptor certain to fail (no length), the rest are only counted.
    h["tensors"][0]["streams"] = [{"coder": "raw"}, {"coder": "const", "length": 0, "value": 1}]
    assert hdr.decode(msgpack.packb(h))["tensors"][0]["streams"] == [{"coder": "raw"}, {}]
    with pytest.raises(TypeError):
        hdr.decode(msgpack.packb(h))["tensors"][0]["streams"][1]["coder"] = "x"  # the shared stand-in is read-only


def test_no_kind_or_coder_defines_more_fields_than_the_parser_keeps():
    """A repr map or stream descriptor keeps its kind or coder and 16 more entries; with more, some key is unknown."""
    from ecnn import repr as reprs
    from ecnn.coder import blocks, streams
    from ecnn.repr import fields

    tables = [*(r.keys for r in reprs.REPRS.values()), *streams._KEYS.values(), blocks.KEYS]
    assert fields.KIND in reprs.REPRS and "blocks" not in streams._KEYS  # blocks: fields stream 2 only
    assert max(len(t) for t in tables) <= hdr._KEEP + 1


def test_an_object_nested_more_than_256_deep_stops_the_parse_where_it_starts():
    """spec/FORMAT.md 6.1: reported there, before a later duplicate key or an earlier float."""
    deep = b"\x91" * 300 + b"\x00"
    with pytest.raises(errors.MalformedHeader, match="256"):
        hdr.decode(b"\x82\xa1a\xcb" + bytes(8) + b"\xa1b" + deep)  # a float comes first
    with pytest.raises(errors.InvalidField, match="floating"):
        hdr.decode(b"\x82\xa1a\xcb" + bytes(8) + b"\xa1b" + b"\x91" * 200 + b"\x00")


def test_header_errors_agree_with_the_reference_decoder():
    """The parser against tools/ref_decoder.py on random and damaged headers: the same error, or both accept."""
    import random

    import ref_decoder as ref

    r = random.Random(4)
    keys = ["align", "metadata", "tensors", "name", "dtype", "shape", "offset", "length", "crc32", "repr", "streams",
            "kind", "coder", "_x", "", "zz"]

    def scalar():
        return r.choice([0, 1, 8, -7, 300, 2**48, 2**64 - 1, None, True, False, 1.5, "", "ab", "raw", "int8", *keys])

    def tree(d=0):
        if d > 18 or r.random() < 0.45 + d * 0.03:
            return scalar()
        if r.random() < 0.5:
            return [tree(d + 1) for _ in range(r.choice([0, 1, 2, 3, 17 if d < 3 else 2]))]
        return {r.choice(keys) if r.random() < 0.8 else scalar(): tree(d + 1) for _ in range(r.choice([0, 1, 2, 3, 17 if d < 3 else 2]))}

    def header():
        rec = dict(_REC, shape=[2], length=2, repr={"kind": "raw"}, streams=[{"coder": "raw", "length": 2, "width": 1, "signed": False}])
        h = {"align": 8, "metadata": {"k": "v"}, "tensors": [rec, dict(rec, name="b")]}
        for _ in range(r.randrange(4)):
            target = r.choice([t for t in (h, rec, rec.get("repr"), *(rec["streams"] if isinstance(rec.get("streams"), list) else [])) if isinstance(t, dict)])
            target[r.choice(keys) if r.random() < 0.9 else scalar()] = tree(2)
        b = bytearray(msgpack.packb(h if r.random() < 0.8 else tree()))
        for _ in range(r.randrange(3)):
            if not b:
                break
            i = r.randrange(len(b))
            op = r.randrange(4)
            if op == 0:
                b[i] = r.randrange(256)
            elif op == 1:
                b[i] = r.choice([0xC1, 0xC4, 0xD4, 0xCA, 0x90, 0x80, 0xDC, 0xDE, 0xA1, 0xC0])
            elif op == 2:
                del b[i:]
            else:
                b[i:i] = bytes([r.choice([0x91, 0x81, 0xC0])]) * r.randrange(1, 300)
        return bytes(b)

    outcomes = set()
    for _ in range(1500):
        b = header()
        try:
            ref.check_top_level(ref.parse_header(b))
            want = "ok"
        except ref.SpecError as e:
            want = e.error
        try:
            hdr.decode(b)
            got = "ok"
        except errors.FormatError as e:
            got = type(e).__name__
        assert got == want, b
        outcomes.add(got)
    assert len(outcomes) >= 5, outcomes


def _raw_stream(width: int, signed: bool) -> dict:
    return {"coder": "raw", "length": 0, "width": width, "signed": signed}


@pytest.mark.parametrize("shape", [[0, 5], [1 << 25, 0]])
def test_a_uniform_rows_tensor_without_elements_is_invalid(shape):
    """spec/CODING.md 4.6: R row codes for no elements would cost memory that no declared size accounts for."""
    rec = {
        "name": "w",
        "dtype": "float32",
        "shape": shape,
        "repr": {"kind": "uniform_rows", "step": 0x3C23D70A},
        "streams": [_raw_stream(1, False), _raw_stream(4, True)],
    }
    with pytest.raises(errors.InvalidField, match="no elements"):
        ecnn.decode(_file([rec]))


@pytest.mark.parametrize("kind", ["raw", "planes", "uniform"])
def test_an_empty_tensor_with_huge_dimensions_fails_typed(kind):
    """The non-zero dimensions may multiply to at most 2^48 (spec/FORMAT.md, shape), zeros or not."""
    shape = [1 << 48, 1 << 48, 0]
    if kind == "planes":
        rec = _const("z", shape)
    else:
        rec = {"name": "z", "dtype": "float32", "shape": shape, "repr": {"kind": kind}, "streams": []}
        if kind == "uniform":
            rec["repr"]["step"] = 0x3C23D70A
            rec["streams"] = [_raw_stream(4, True)]
    with pytest.raises(errors.LimitExceeded):
        ecnn.decode(_file([rec]))
    rec["shape"] = [1 << 24, 1 << 24, 0]
    assert ecnn.decode(_file([rec]))["z"].shape == (1 << 24, 1 << 24, 0)


# --- stored files (format 1.3) -----------------------------------------------------


def _with_files(files: list[dict], blobs: list[bytes], align: int = 8, tail: bytes = b"") -> bytes:
    """A file of one raw tensor and the given file records, laid out as given (no checks)."""
    rec = dict(_REC, shape=[2], offset=0, length=2, crc32=fmt.crc32(b"\x01\x02"))
    rec["streams"] = []
    hb = msgpack.packb({"align": align, "metadata": {}, "tensors": [rec], "files": files})
    head = struct.pack("<HHI", fmt.FORMAT_MAJOR, 3, len(hb))
    out = bytearray(fmt.SIGNATURE + head + struct.pack("<I", fmt.crc32(head, hb)) + hb)
    out += bytes(fmt.align_up(len(out), align) - len(out))
    start = len(out)
    out += b"\x01\x02"
    for f, b in zip(files if isinstance(files, list) else [], blobs):
        at = start + f["offset"] if type(f.get("offset")) is int and 0 <= f["offset"] < 1 << 20 else len(out)
        out += bytes(max(0, at - len(out)))
        out[at : at + len(b)] = b
    return bytes(out) + tail


def _laid_out(names: list, blobs: list[bytes], align: int = 8) -> list[dict]:
    pos, out = 2, []
    for n, b in zip(names, blobs):
        pos = fmt.align_up(pos, align)
        out.append({"name": n, "offset": pos, "length": len(b), "crc32": fmt.crc32(b)})
        pos += len(b)
    return out


def _outcome_ecnn(data: bytes) -> str:
    try:
        with EcnnFile(data) as f:
            f.verify()
            f.files()
        return "ok"
    except errors.FormatError as e:
        return type(e).__name__


def _outcome_ref(data: bytes) -> str:
    import ref_decoder as ref

    try:
        ref.decode_all(data)
        return "ok"
    except ref.SpecError as e:
        return e.error


@pytest.mark.parametrize(
    "name, error",
    [
        ("../escape.json", "BadFileName"),
        ("/abs/config.json", "BadFileName"),
        ("a\\b.json", "BadFileName"),
        ("C:config.json", "BadFileName"),
        ("nul\x00.json", "BadFileName"),
        ("line\nbreak.txt", "BadFileName"),
        ("a//b", "BadFileName"),
        ("a/", "BadFileName"),
        (".", "BadFileName"),
        ("a/./b", "BadFileName"),
        ("trailing.", "BadFileName"),
        ("CON", "BadFileName"),
        ("lpt1.txt", "BadFileName"),
        ("caf\u00e9.txt", "BadFileName"),
        ("a b.txt", "BadFileName"),
        ("/".join(["d"] * 33), "BadFileName"),
        ("x" * 256, "BadFileName"),
        ("", "InvalidField"),
        ("y" * 1025, "InvalidField"),
        (b"config.json", "MalformedHeader"),  # a MessagePack bin object
        ("ok/.hidden-but-allowed", "ok"),
        ("1_Pooling/config.json", "ok"),
    ],
)
def test_a_hostile_stored_file_name_is_refused_by_both_decoders(name, error):
    blobs = [b'{"a": 1}']
    data = _with_files(_laid_out([name], blobs), blobs)
    assert _outcome_ecnn(data) == error
    assert _outcome_ref(data) == error
    if error != "ok":  # nor may a writer store it
        with pytest.raises(errors.InvalidFileName):
            ecnn.file.check_files({name: b"x"})


@pytest.mark.parametrize(
    "names, error",
    [
        (["config.json", "Config.JSON"], "DuplicateFileName"),
        (["a/b.txt", "a"], "DuplicateFileName"),
        (["A", "a/b.txt"], "DuplicateFileName"),
        (["a/b.txt", "a/c.txt", "b"], "ok"),
        (["ab", "a/b"], "ok"),
    ],
)
def test_clashing_stored_file_names(names, error):
    blobs = [b"x"] * len(names)
    data = _with_files(_laid_out(names, blobs), blobs)
    assert _outcome_ecnn(data) == error and _outcome_ref(data) == error


def test_stored_file_lengths_offsets_and_checksums_are_checked():
    blobs = [b"{}", b"hello"]
    good = _laid_out(["a.json", "b.txt"], blobs)
    cases = {
        "ok": _with_files(good, blobs),
        "TruncatedFile": _with_files([good[0], dict(good[1], length=1000)], blobs),
        "LimitExceeded": _with_files([good[0], dict(good[1], length=1 << 40)], blobs),  # over max_file_bytes first
        "BadLayout": _with_files([good[0], dict(good[1], offset=good[1]["offset"] + 8)], blobs),
        "PayloadChecksumMismatch": _with_files([good[0], dict(good[1], crc32=good[1]["crc32"] ^ 0x80)], blobs),
        "TrailingData": _with_files(good, blobs, tail=b"\0"),
        "InvalidField": _with_files([good[0], dict(good[1], length=-1)], blobs),
        "UnknownField": _with_files([good[0], dict(good[1], executable=True)], blobs),
    }
    for want, data in cases.items():
        assert _outcome_ecnn(data) == want and _outcome_ref(data) == want, want
    nonzero = bytearray(cases["ok"])
    nonzero[-len(blobs[1]) - 1] = 0xFF  # the padding before the second stored file
    assert _outcome_ecnn(bytes(nonzero)) == _outcome_ref(bytes(nonzero)) == "NonZeroPadding"


def test_stored_file_reader_limits(tmp_path):
    blobs = [b"a" * 100, b"b" * 100]
    data = _with_files(_laid_out(["a", "b"], blobs), blobs)
    with pytest.raises(errors.LimitExceeded):
        EcnnFile(data, fmt.Limits(max_file_bytes=99))
    with pytest.raises(errors.LimitExceeded):
        EcnnFile(data, fmt.Limits(max_files_bytes=199))
    with EcnnFile(data, fmt.Limits(max_file_bytes=100, max_files_bytes=200)) as f:
        assert f.files() == {"a": blobs[0], "b": blobs[1]}
        with pytest.raises(errors.FileNotStored):
            f.read_file("c")


def test_random_stored_file_records_agree_with_the_reference_decoder():
    import random

    r = random.Random(5)
    pieces = ["config.json", "a", "A", "..", ".", "", "b/c", "\\", "x\x01", "CON", "d.", "+_-", "1_Pooling", "/"]
    outcomes = set()
    for _ in range(600):
        n = r.randrange(0, 4)
        names = ["/".join(r.choice(pieces) for _ in range(r.randrange(1, 3))) for _ in range(n)]
        blobs = [bytes(r.randrange(256) for _ in range(r.randrange(0, 12))) for _ in range(n)]
        recs = _laid_out(names, blobs)
        for rec in recs:
            if r.random() < 0.15:
                rec[r.choice(["offset", "length", "crc32"])] = r.choice([0, 1, 7, 2**32, 2**64 - 1, -1, "x", None])
            if r.random() < 0.05:
                rec[r.choice(["_anc", "zz"])] = 1
        files = recs if r.random() < 0.95 else r.choice([{}, "files", 3, None])
        data = _with_files(files, blobs, tail=b"\0" if r.random() < 0.05 else b"")
        got, want = _outcome_ecnn(data), _outcome_ref(data)
        assert got == want, (names, recs)
        outcomes.add(got)
    assert len(outcomes) >= 6, outcomes


@pytest.mark.parametrize("command", [["verify", "-q"], ["info"], ["unpack", "-q", "-o", "{tmp}/out/"]])
def test_cli_stored_file_caps(command, tmp_path, capsys):
    blobs = [b"a" * 3000, b"b" * 3000]
    path = tmp_path / "files.ecnn"
    path.write_bytes(_with_files(_laid_out(["a.json", "b.json"], blobs), blobs))
    argv = [a.format(tmp=tmp_path) for a in command] + [str(path)]
    assert main(argv + ["--max-file-bytes", "2999"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "a.json" in err and "2999" in err
    assert main(argv + ["--max-files-bytes", "5KiB"]) == 1
    assert "in all" in capsys.readouterr().err
    assert main(argv + ["--max-file-bytes", "3000", "--max-files-bytes", "6000"]) == 0
