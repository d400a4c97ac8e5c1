"""ecnn/container/compact.py: the compact header of format 1.4 (spec/FORMAT.md 6.7).

Round trips against the MessagePack header, the encoder's choice of form and
version, and hostile compact headers: truncations, trailing bytes, huge counts,
reserved codes, varints too long or too large; each a typed error, the same one
the reference decoder (written from the spec alone) reports.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import ecnn
import ecnn.numpy as en
from ecnn import errors
from ecnn.container import compact
from ecnn.container.compact import varint_bytes
from ecnn.container import format as fmt
from ecnn.container import header as hdr
from ecnn.container import writer
from ecnn.container.reader import Container
from ecnn.file import EcnnFile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import fuzz_ecnn  # noqa: E402
import ref_decoder  # noqa: E402

VALID = ROOT / "fixtures" / "v1" / "valid"


def _file(hb: bytes, area: bytes = b"", align: int = 8, minor: int = 4) -> bytes:
    """A file of these header bytes (CRC-32 right) and data section."""
    head = struct.pack("<HHI", 1, minor, len(hb))
    out = fmt.SIGNATURE + head + struct.pack("<I", fmt.crc32(head, hb)) + hb
    if area:
        out += bytes(fmt.align_up(len(out), align) - len(out))
    return out + area


def _errors(data: bytes) -> tuple[str, str]:
    """(ecnn's error, the reference decoder's error) for a file; "ok" where it decodes and verifies."""
    try:
        en.decode(data)
        with EcnnFile(data) as f:
            f.verify()
        ours = "ok"
    except errors.FormatError as e:
        ours = type(e).__name__
    try:
        ref_decoder.decode_all(data)
        ref = "ok"
    except ref_decoder.SpecError as e:
        ref = e.error
    return ours, ref


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(VALID.glob("*.ecnn")), ids=lambda p: p.stem)
def test_every_valid_header_round_trips_through_the_compact_form(path):
    c = Container(path.read_bytes())  # ancillary fields are dropped by the parse: every parsed header has a compact form
    hb = compact.encode(c.header)
    assert hb[0] == compact.MARK
    assert hdr.decode(hb) == c.header
    assert ref_decoder.parse_header(hb) is not None
    if c.records:
        assert len(hb) < c.header_end - fmt.PREAMBLE_SIZE or c.buf[fmt.PREAMBLE_SIZE] == compact.MARK


def test_varints_at_their_bounds():
    def read(b: bytes, signed: bool = False):
        r = compact._Bytes(b"\xc1" + b)
        v = r.svarint() if signed else r.uvarint()
        assert r.left() == 0
        return v

    assert read(b"\x00") == 0 and read(b"\x7f") == 127 and read(b"\x80\x01") == 128
    assert read(b"\xff" * 9 + b"\x01") == (1 << 64) - 1
    for v in (0, 1, 127, 128, (1 << 63) - 1, (1 << 64) - 1):
        assert read(compact._uvarint(v)) == v
    for v in (0, -1, 1, -64, 64, -(1 << 63), (1 << 63) - 1, -(1 << 64), (1 << 64) - 1):
        assert read(compact._svarint(v), signed=True) == v
    for bad in (b"\xff" * 9 + b"\x02", b"\x80" * 10 + b"\x01", b"\x80\x00", b"\xff\x00", b"\x80", b""):
        with pytest.raises(errors.MalformedHeader):
            read(bad)
    with pytest.raises(errors.MalformedHeader):
        read(b"\xff" * 9 + b"\x04", signed=True)  # 2^65: past the svarint range
    with pytest.raises(errors.InvalidField):
        compact._uvarint(1 << 64)
    with pytest.raises(errors.InvalidField):
        compact._svarint(-(1 << 64) - 1)


# --- the encoder's choice -------------------------------------------------------------


def test_the_default_encoder_writes_the_compact_header_and_format_minor_4():
    arrays = {"fc.weight": (np.arange(64, dtype=np.float32).reshape(8, 8) - 30) / 16, "fc.bias": np.arange(8, dtype=np.int8)}
    new = en.encode(arrays, config=ecnn.EncodeConfig(bits=6))
    old = en.encode(arrays, config=ecnn.EncodeConfig(bits=6, format_minor=3))
    assert new[20] == compact.MARK and struct.unpack_from("<H", new, 10) == (4,)
    assert old[20] != compact.MARK and struct.unpack_from("<H", old, 10)[0] <= 2
    a, b = Container(new), Container(old)
    assert a.header == b.header and bytes(a.buf[a.data_start :]) == bytes(b.buf[b.data_start :])
    assert len(new) < len(old)
    for k, v in en.decode(new).items():
        assert np.array_equal(v, en.decode(old)[k])


def test_stored_files_with_either_header(tmp_path):
    from ecnn import file

    arrays = {"w": (np.ones((4, 4), np.float32), ecnn.dtypes.get("float32"))}
    files = {"config.json": b"{}", "sub/a.txt": b"a"}
    new = file.encode(arrays, ecnn.EncodeConfig(), files=files)
    old = file.encode(arrays, ecnn.EncodeConfig(format_minor=3), files=files)
    assert struct.unpack_from("<H", new, 10) == (4,) and new[20] == compact.MARK
    assert struct.unpack_from("<H", old, 10) == (3,) and old[20] != compact.MARK
    # save (one tensor at a time, through a spool) writes the same bytes as encode.
    assert file.save(arrays, tmp_path / "a.ecnn", ecnn.EncodeConfig(), files=files) == len(new)
    assert (tmp_path / "a.ecnn").read_bytes() == new
    with EcnnFile(new) as f:
        assert f.files() == files
    assert ref_decoder.decode_all(new)[2] == files


def test_a_header_the_compact_form_cannot_hold_stays_messagepack():
    rec = {"name": "w", "dtype": "int8", "shape": [3], "repr": {"kind": "raw"}, "streams": [], "_note": "ancillary"}
    data = b"".join(writer.serialize([rec], [b"\x01\x02\x03"], {}, minor=0, compact=True))
    assert data[20] != compact.MARK and struct.unpack_from("<H", data, 10) == (0,)
    assert list(en.decode(data)["w"]) == [1, 2, 3]


def test_an_empty_file_is_compact_too():
    data = en.encode({}, metadata={"k": "v"})
    assert data[20] == compact.MARK and Container(data).metadata == {"k": "v"}
    assert ref_decoder.decode_all(data) == ({"k": "v"}, {}, {})


# --- hostile compact headers ---------------------------------------------------------


def _sample() -> bytes:
    return (VALID / "compact_metadata_files.ecnn").read_bytes()


def test_every_truncation_of_a_compact_header_is_malformed_header():
    data = _sample()
    c = Container(data)
    hb, area = bytes(c.buf[20 : c.header_end]), bytes(c.buf[c.data_start :])
    for n in range(1, len(hb)):
        assert _errors(_file(hb[:n], area, align=c.align)) == ("MalformedHeader", "MalformedHeader"), n


def test_a_byte_after_a_compact_header_is_malformed_header():
    data = _sample()
    c = Container(data)
    hb, area = bytes(c.buf[20 : c.header_end]), bytes(c.buf[c.data_start :])
    for extra in (b"\x00", b"\xc1", b"\xff" * 3):
        assert _errors(_file(hb + extra, area, align=c.align)) == ("MalformedHeader", "MalformedHeader")


def test_every_single_bit_flip_of_a_compact_file_is_detected():
    data = (VALID / "compact_small.ecnn").read_bytes()
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(errors.FormatError):
                en.decode(bytes(bad))


@pytest.mark.parametrize(
    "hb, error",
    [
        # Records come with 16 spare bytes: room for one record (11 bytes at least), not for the counts inside it.
        (b"\xc1\x00\x03" + varint_bytes(1 << 20), "MalformedHeader"),  # 2^20 records in no bytes
        (b"\xc1\x00\x03" + varint_bytes((1 << 20) + 1), "MalformedHeader"),  # past the cap
        (b"\xc1\x00\x03" + varint_bytes((1 << 64) - 1), "MalformedHeader"),
        (b"\xc1\x01\x03" + varint_bytes(1 << 16), "MalformedHeader"),  # 65,536 metadata entries in no bytes
        (b"\xc1\x02\x03\x00" + varint_bytes(1 << 16), "MalformedHeader"),  # 65,536 files in no bytes
        (b"\xc1\x02\x03\x00" + varint_bytes((1 << 16) + 1), "LimitExceeded"),
        (b"\xc1\x00\x03\x01\x00\x01a\x09" + varint_bytes(32) + bytes(16), "MalformedHeader"),  # 32 dimensions in no bytes
        (b"\xc1\x00\x03\x01\x00\x01a\x09" + varint_bytes(33) + bytes(16), "LimitExceeded"),
        (b"\xc1\x00\x03\x01\x00\x01a\x09\x00" + bytes(4) + b"\x00" + varint_bytes(64) + bytes(16), "MalformedHeader"),
        (b"\xc1\x00\x03\x01\x00\x01a\x09\x00" + bytes(4) + b"\x00" + varint_bytes(65) + bytes(16), "LimitExceeded"),
        (b"\xc1\x00\x03\x01\x00" + varint_bytes(1 << 30) + bytes(16), "InvalidField"),  # a name of 2^30 bytes: refused before reading
        (b"\xc1\x00\x03\x01\x00\x01a\x0f" + bytes(16), "UnsupportedCoding"),
        (b"\xc1\x00\x03\x01\x00\x01a\x09\x00" + bytes(4) + b"\x07" + bytes(16), "UnsupportedCoding"),
        (b"\xc1\x00\x03\x01\x00\x01a\x09\x00" + bytes(4) + b"\x00\x01\x08" + bytes(16), "UnsupportedCoding"),
        (b"\xc1\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "MalformedHeader"),  # flags: an 11-byte varint
        (b"\xc1\x84\x00\x03\x00", "MalformedHeader"),  # flags 4, not in its shortest form: the form is checked first
        (b"\xc1\x04\x03\x00", "UnknownField"),
        (b"\xc1\x00\xff\x00", "InvalidField"),
        (b"\xc1", "MalformedHeader"),
        (b"\xc1\x00\x03\x00", "ok"),  # no tensors, no metadata: the smallest compact header
    ],
)
def test_hostile_compact_headers_fail_typed_and_small(hb, error):
    tracemalloc.start()
    try:
        got = _errors(_file(hb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == (error, error)
    assert peak < 1 << 20, f"{peak} bytes for a {len(hb)}-byte header"


def test_compact_header_memory_is_bounded_per_header_byte():
    """The densest valid-to-parse compact header: records of 12 bytes (FORMAT.md 9.3)."""
    what, hb = fuzz_ecnn._bomb_headers(1 << 18)[0]
    assert what.startswith("compact")
    data = _file(hb, b"")
    data += bytes(-len(data) % 8)  # the data section of records with empty payloads starts at the next multiple of 8
    tracemalloc.start()
    try:
        with pytest.raises(errors.DuplicateTensorName):  # every record is named "a": all parsed, then refused
            Container(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(hb), f"{peak / len(hb):.1f} bytes per header byte"


def test_fuzzed_compact_headers_agree_with_the_reference_decoder():
    """A short differential run of tools/fuzz_ecnn.py's compact generator: same outcome, same error."""
    seeds = fuzz_ecnn.load_seeds()
    seen: dict[str, int] = {}
    for i in range(400):
        rng = random.Random(f"compact:{i}")
        data = fuzz_ecnn.gen_compact(rng.choice(seeds), rng, seeds)
        if len(data) <= 20 or data[20] != compact.MARK:
            continue
        ours, ref = _errors(data)
        assert ours == ref, f"input {i}: ecnn {ours}, reference decoder {ref}"
        seen[ours] = seen.get(ours, 0) + 1
    assert seen.get("ok", 0) > 0 and len(seen) >= 6, seen


def test_the_codes_follow_the_tables_they_name():
    from ecnn import dtypes
    from ecnn import repr as reprs
    from ecnn.coder.registry import CODERS

    assert compact.DTYPE_CODES == tuple(dtypes.BY_NAME)
    assert set(compact.KIND_CODES) == set(reprs.REPRS) and set(compact.CODER_CODES) == set(CODERS)
    # Codes are append-only: the ones of version 1.4 never move (the order of FORMAT.md 7 and CODING.md 3).
    assert json.dumps(compact.KIND_CODES) == '["raw", "planes", "int", "uniform", "uniform_rows", "codebook", "fields"]'
    assert json.dumps(compact.CODER_CODES) == '["const", "raw", "cat0", "rowcol", "ctx", "packed", "blocks", "rans"]'


def test_bench_header_rewrites_a_trained_file_and_keeps_its_payloads():
    """tools/bench_header.py: the figures of docs/format.md (it checks the payloads and the decoded tensors itself)."""
    import bench_header

    r = bench_header.rewrite((ROOT / "bench" / "train" / "lenet5-mnist-ect-warmup-lam0.5.ecnn").read_bytes())
    assert r["tensors"] == 8 and r["size"] == (8042, 6946, 6912)
    assert r["framing"][0] / 8 > 170 and r["framing"][1] / 8 < 40
