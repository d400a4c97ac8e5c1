"""Cross-check the fixtures with the independent decoder tools/ref_decoder.py.

tools/ref_decoder.py is written from spec/FORMAT.md, spec/CODING.md and
spec/RANGE_CODER.md alone; it shares no code with the ecnn package.  Some
tests below also run the ecnn library on the same bytes (when it can be
imported) to check that the spec, as the reference decoder reads it, and the
library agree: same error name, same values.
"""

import numpy as np
import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.fspath(ROOT / "tools"))

import ref_decoder  # noqa: E402

VALID = ROOT / "fixtures" / "v1" / "valid"
INVALID = ROOT / "fixtures" / "v1" / "invalid"
VALID_EXPECTED = json.loads((VALID / "expected.json").read_text())
INVALID_EXPECTED = json.loads((INVALID / "expected.json").read_text())
VALID_FILES = sorted(VALID.glob("*.ecnn"))
INVALID_FILES = sorted(INVALID.glob("*.ecnn"))


def test_fixture_lists_match_expected():
    assert VALID_FILES and INVALID_FILES
    assert {p.stem for p in VALID_FILES} == set(VALID_EXPECTED)
    assert {p.stem for p in INVALID_FILES} == set(INVALID_EXPECTED)


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.stem)
def test_valid_fixture_decodes(path):
    expected = VALID_EXPECTED[path.stem]
    data = path.read_bytes()
    tensors = ref_decoder.decode_file(data)
    assert set(tensors) == set(expected["tensors"])
    for name, want in expected["tensors"].items():
        dtype, shape, raw = tensors[name]
        assert dtype == want["dtype"], name
        assert shape == want["shape"], name
        n = 1
        for dim in shape:
            n *= dim
        assert len(raw) == n * ref_decoder.DTYPES[dtype][0], name
        assert hashlib.sha256(raw).hexdigest() == want["sha256"], name
    metadata, _, stored = ref_decoder.decode_all(data)
    assert metadata == expected["metadata"]
    got = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in stored.items()}
    assert got == expected.get("files", {})


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_fixture_rejected(path):
    with pytest.raises(ValueError) as info:
        ref_decoder.decode_file(path.read_bytes())
    # Not required by the brief, but the spec fixes the order of the checks
    # (FORMAT.md §10), so the independent decoder should name the same error.
    assert info.value.error == INVALID_EXPECTED[path.stem]["error"], str(info.value)


# ---------------------------------------------------------------------------
# Small unit checks of spec details not covered by the fixtures
# ---------------------------------------------------------------------------


def test_varint_rules():
    read = ref_decoder.read_varint
    assert read(bytes([0xAC, 0x02]), 0) == (300, 2)  # CODING.md §6 example
    assert read(bytes([0xFF] * 9 + [0x01]), 0) == ((1 << 64) - 1, 10)
    for bad in ([0x80, 0x00], [0x80], [0xFF] * 9 + [0x02], [0x80] * 10 + [0x01]):
        with pytest.raises(ValueError):
            read(bytes(bad), 0)


def test_log_codes():
    # CODING.md §7.1: with m = 2 the counts of codes 1, 2, 3, ... are 4, 5, 6, ...
    counts = [ref_decoder.log_count(e, 2) for e in range(1, 11)]
    assert counts == [4, 5, 6, 7, 8, 10, 12, 14, 16, 20]
    for m in range(5):
        e_max = ref_decoder.max_log_code(m)
        assert ref_decoder.log_count(e_max, m) <= 2**32 - 1 < ref_decoder.log_count(e_max + 1, m)


def test_mode1_table_and_pad_nibble():
    # mode 1, m = 0, codes 1, 2 -> d = 1, 1 -> z = 2, 2: nibbles 2 2 -> one byte.
    counts, pos = ref_decoder.read_table(bytes([1, 0, 0x22]), 0, 2)
    assert counts == [1, 2] and pos == 3
    # three values (codes 1, 2, 1: z = 2, 2, 1) -> 3 nibbles; the low nibble
    # of the second byte is padding and must be 0
    counts, pos = ref_decoder.read_table(bytes([1, 0, 0x22, 0x10]), 0, 3)
    assert counts == [1, 2, 1] and pos == 4
    with pytest.raises(ValueError):
        ref_decoder.read_table(bytes([1, 0, 0x22, 0x11]), 0, 3)
    # escape: z >= 15 is nibble 15 then z - 15 in three nibbles (z = 40 -> code 20)
    counts, pos = ref_decoder.read_table(bytes([1, 0, 0xF0, 0x19, 0x00]), 0, 2)
    assert counts == [2**19, 2**19] and pos == 5
    with pytest.raises(ValueError):  # m > 4
        ref_decoder.read_table(bytes([1, 5, 0x22]), 0, 2)
    with pytest.raises(ValueError):  # reserved mode
        ref_decoder.read_table(bytes([2, 1, 1]), 0, 2)


def test_expansion_example():
    # CODING.md §7.2: counts 1, 1, 2 -> probabilities 1/4, 1/4, 1/2.
    assert ref_decoder.expand([1, 1, 2]) == [0, 0x400000, 0x800000, 0x1000000]


def test_quad_table_example():
    # CODING.md §5.6.4: counts c0 = 3, c1 = 5 -> u1 = 160, u0 = 96; w_d by the one bits of d.
    w = ref_decoder.quad_counts(3, 5)
    assert w[0] == 96**4 and w[15] == 160**4 and w[13] == 96 * 160**3 and w[6] == 96**2 * 160**2
    assert sum(w) == 2**32
    cdf = ref_decoder.expand(w)
    freqs = [cdf[d + 1] - cdf[d] for d in range(16)]  # f_d + 1
    assert freqs[0] == 331776 and freqs[1] == 552960 and freqs[3] == 921600 and freqs[7] == 1535999
    assert freqs[15] == 2560004
    # u1 clamped to 1..255: no positive sign counted, or no negative one.
    assert ref_decoder.quad_counts(7, 0)[0] == 255**4 and ref_decoder.quad_counts(7, 0)[15] == 1
    assert ref_decoder.quad_counts(0, 7)[15] == 255**4 and ref_decoder.quad_counts(0, 7)[0] == 1
    # Half up: 256 * 1 / 512 = 0.5 -> u1 = 1; 256 * 3 / 512 = 1.5 -> u1 = 2.
    assert ref_decoder.quad_counts(511, 1)[15] == 1 and ref_decoder.quad_counts(509, 3)[15] == 2**4


def test_blocks_order_example():
    # CODING.md §5.8 example: row classes (1, 0), column classes (1, 0, 0), map (0, 0, 1).
    order = list(ref_decoder.blocks_order(0, 2, 3, [1, 0], [1, 0, 0], [0, 0, 1], 2))
    assert order == [(1, 1, 0), (1, 2, 0), (1, 0, 0), (0, 1, 0), (0, 2, 0), (0, 0, 1)]


def test_uniform_rounding():
    step_half = 0x3F000000  # 0.5
    raw = ref_decoder.build_uniform([1, -1, 0, 1], "float32", step_half)
    assert raw == bytes.fromhex("0000003f000000bf000000000000003f")
    # float16 overflow to infinity: 65520 = 65520 * 1.0
    raw = ref_decoder.build_uniform([65520, 65519], "float16", 0x3F800000)
    assert raw == bytes.fromhex("007cff7b")
    # bfloat16 RNE: 0x3F808000 (tie, even) -> 0x3F80; 0x3F818000 (tie, odd) -> 0x3F82
    assert ref_decoder.build_uniform([257], "bfloat16", 0x3B800000) == bytes.fromhex("803f")
    assert ref_decoder.build_uniform([259], "bfloat16", 0x3B800000) == bytes.fromhex("823f")


# ---------------------------------------------------------------------------
# Header rules (FORMAT.md §6), on small hand-made files
# ---------------------------------------------------------------------------


def _file(header: bytes, data: bytes = b"") -> bytes:
    """Preamble (FORMAT.md §5) + header + data, with a correct Header_CRC32."""
    import struct
    import zlib

    fields = struct.pack("<HHI", 1, 0, len(header))
    crc = zlib.crc32(fields + header)
    return ref_decoder.SIGNATURE + fields + struct.pack("<I", crc) + header + data


def _top(align=b"\x08", metadata=b"\x80", tensors=b"\x90", extra=b"", nkeys=3):
    return (
        bytes([0x80 | nkeys])
        + b"\xa5align" + align
        + b"\xa8metadata" + metadata
        + b"\xa7tensors" + tensors
        + extra
    )


def test_header_accepts_non_shortest_forms():
    header = (
        b"\xde\x00\x03"  # map 16
        + b"\xd9\x05align" + b"\xcc\x08"  # str 8, uint 8
        + b"\xa8metadata" + b"\xde\x00\x01\xa1k\xda\x00\x01v"  # map 16, str 16
        + b"\xa7tensors" + b"\xdc\x00\x00"  # array 16
    )
    metadata, tensors = ref_decoder.decode(_file(header))
    assert metadata == {"k": "v"} and tensors == {}


@pytest.mark.parametrize(
    "header, error",
    [
        pytest.param(_top(align=b"\xc3"), "InvalidField", id="a_boolean_is_not_an_integer"),
        pytest.param(_top(align=b"\x03"), "InvalidField", id="not_a_power_of_two"),
        pytest.param(_top(align=b"\xcd\x20\x00"), "InvalidField", id="align_8192"),
        pytest.param(_top(extra=b"\xa2_x\xca\x00\x00\x00\x00", nkeys=4), "InvalidField", id="ancillary_float"),
        pytest.param(_top(extra=b"\xa2_x\xc4\x00", nkeys=4), "MalformedHeader", id="bin"),
        pytest.param(_top(extra=b"\xa2_x\xd4\x00\x00", nkeys=4), "MalformedHeader", id="fixext"),
        pytest.param(_top(extra=b"\xa2_x" + b"\x91" * 16 + b"\x00", nkeys=4), "MalformedHeader", id="depth_17"),
        pytest.param(_top(extra=b"\xa2x_\x00", nkeys=4), "UnknownField", id="unknown_critical_key"),
        pytest.param(_top(extra=b"\x01\x00", nkeys=4), "InvalidField", id="non_string_key"),
        pytest.param(_top(extra=b"\xa2_x\x81\x91\x00\x00", nkeys=4), "MalformedHeader", id="array_key"),
        pytest.param(_top(extra=b"\xa2_x\x82\x01\x00\xc3\x00", nkeys=4), None, id="true_is_not_1"),
        pytest.param(_top(extra=b"\xa2_x\x82\x01\x00\xd0\x01\x00", nkeys=4), "DuplicateKey", id="1_equals_int8_1"),
        pytest.param(_top(extra=b"\xa2_x\xa3\xed\xa0\x80", nkeys=4), "MalformedHeader", id="surrogate"),
        pytest.param(_top(extra=b"\xa2_x\xa2\xc0\x80", nkeys=4), "MalformedHeader", id="overlong"),
        pytest.param(_top() + b"\x00", "MalformedHeader", id="bytes_after_the_map"),
        pytest.param(_top()[:-1], "MalformedHeader", id="truncated"),
        pytest.param(b"\x90", "InvalidField", id="not_a_map"),
        pytest.param(b"", "MalformedHeader", id="header_length_0"),
        pytest.param(_top(metadata=b"\x81\xa1k\x01"), "InvalidField", id="non_string_metadata_value"),
    ],
)
def test_header_rules(header, error):
    if error is None:
        ref_decoder.decode(_file(header))
        return
    with pytest.raises(ValueError) as info:
        ref_decoder.decode(_file(header))
    assert info.value.error == error, str(info.value)


def test_depth_16_is_allowed():
    # the "_x" value (an array) is at depth 1; with 15 nested arrays the
    # innermost 0 is at depth 16, the deepest allowed (FORMAT.md §6.1).
    ref_decoder.decode(_file(_top(extra=b"\xa2_x" + b"\x91" * 15 + b"\x00", nkeys=4)))


# ---------------------------------------------------------------------------
# The worked example of FORMAT.md, Appendix A
# ---------------------------------------------------------------------------


def _appendix_a_bytes() -> bytes:
    """The hex dump of FORMAT.md, Appendix A (the code block that starts at 00000000)."""
    text = (ROOT / "spec" / "FORMAT.md").read_text()
    blocks = text.split("## Appendix A")[-1].split("```")[1::2]
    (dump,) = [b for b in blocks if b.lstrip().startswith("00000000:")]
    return b"".join(bytes.fromhex(line[10:58].replace(" ", "")) for line in dump.strip().splitlines())


def test_format_appendix_a_example():
    import hashlib

    data = _appendix_a_bytes()
    assert len(data) == 291
    assert hashlib.sha256(data).hexdigest() == (
        "6a9bc5b984731270930a6c32d5c02daf72708ee456a856cb146b84e7679d2694"
    )
    tensors = ref_decoder.decode_file(data)
    assert tensors["b"] == ("int8", [3], bytes([1, 2, 3]))
    values = [511, 510, 510, 510, 510, 510, 511, 510]
    assert tensors["w"] == ("float32", [2, 4], struct.pack("<8f", *values))


def test_format_appendix_a_matches_the_library():
    """The appendix says how the file was made; the library must still make it."""
    import ecnn
    import ecnn.numpy

    data = ecnn.numpy.encode(
        {"w": np.array([[511, 510, 510, 510], [510, 510, 511, 510]], np.float32),
         "b": np.array([1, 2, 3], np.int8)},
        config=ecnn.EncodeConfig(bits=10, per_row=False, format_minor=0),
    )
    assert data == _appendix_a_bytes()


def test_coding_appendix_a_trace():
    """CODING.md, Appendix A: the cat0 payload of `w`, symbol by symbol."""
    payload = bytes.fromhex("0006020100 0064cb".replace(" ", ""))
    counts, pos = ref_decoder.read_table(payload, 0, 2)
    assert counts == [6, 2] and pos == 3
    nwords, pos = ref_decoder.read_varint(payload, pos)
    words, pos = ref_decoder.read_words(payload, pos, nwords)
    assert words == [0xCB640000] and pos == len(payload)
    cdf = ref_decoder.expand(counts)
    assert cdf == [0, 0xC00000, 0x1000000]
    chunk = ref_decoder._Chunk(words)
    trace = []
    for _ in range(8):
        index = chunk.symbol(cdf)
        trace.append((index, chunk.dec.lower, chunk.dec.range))
    chunk.finish()
    assert [t[0] for t in trace] == [1, 0, 0, 0, 0, 0, 1, 0]
    assert trace[0][1:] == (0xBFFFFFFFFF400000, 0x3FFFFFFFFFC00000)
    assert trace[-1][1:] == (0xCB63FFFFFE800000, 0x02D8FFFFFF400000)
    assert (chunk.dec.point - chunk.dec.lower) % 2**64 == 0x1800000


# ---------------------------------------------------------------------------
# uniform_rows (CODING.md §4.6, §4.7)
# ---------------------------------------------------------------------------


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def test_row_step_codes():
    one = 0x3F800000  # s = 1.0
    step = ref_decoder.row_step
    assert step(one, 0, "float32") == 1.0  # code 0 is s
    assert step(one, 8, "float32") == 0.5  # one octave finer
    assert step(one, 4, "float32") == 0.75  # 12/16
    assert step(one, 7, "float32") == 9 / 16
    assert step(one, 255, "float32") == 9 / 16 * 2.0**-31
    assert step(one, 255, "float64") == 9 / 16 * 2.0**-31
    # binary32: the exact value s * (16 - r) * 2^-(k+4) is rounded once (RNE)
    s = 0x3F800001  # 1 + 2^-23
    exact = (1 + 2**-23) * 15  # 15 + 15 * 2^-23 needs 27 significant bits
    rounded = 15 + 2 * 2**-20  # RNE to 24 bits (the ulp at 15 is 2^-20)
    assert float(step(s, 1, "float32")) == rounded / 16
    assert float(step(s, 1, "float64")) == exact / 16  # exact in binary64
    # scaleB into the subnormals: 2^-149 * 9 * 2^-4 rounds (RNE) to 2^-149 ... or 0
    tiny = 0x00000001  # 2^-149
    assert float(step(tiny, 7, "float32")) == 2.0**-149  # 9/16 of the smallest subnormal -> rounds up
    assert float(step(tiny, 8, "float32")) == 0.0  # exactly half of it -> ties to even: 0
    assert float(step(tiny, 8, "float64")) == 2.0**-150
    # no overflow: a row step is never above s, even at the top of the binary32 range
    assert float(step(0x7F7FFFFF, 0, "float32")) == _f32(0x7F7FFFFF)
    assert float(step(0x7F7FFFFF, 1, "float32")) == float(np.float32(_f32(0x7F7FFFFF) * 15 / 16))
    from ecnn import dtypes, quantize

    for code in (0, 1, 7, 8, 100, 255):
        for pattern in (0x3F800001, 0x7F7FFFFF, 0x00000001, 0x00800000):
            ours = quantize.row_steps(_f32(pattern), np.array([code]), dtypes.get("float32"))[0]
            assert np.float32(ours).tobytes() == np.float32(step(pattern, code, "float32")).tobytes()


def test_coding_uniform_rows_example():
    # CODING.md §4.7: codes 0, 4 and symbols 3, -2, 3, -2 with s = 1.0
    raw = ref_decoder.build_uniform_rows([0, 4], [3, -2, 3, -2], "float32", 0x3F800000)
    assert raw == struct.pack("<4f", 3, -2, 2.25, -1.5)


# ---------------------------------------------------------------------------
# Whole files built from a header dict, checked against the spec's error
# names and, where ecnn is importable, against the library
# ---------------------------------------------------------------------------


def _pack_file(records: list, payloads: list, align: int = 8) -> bytes:
    import zlib

    msgpack = pytest.importorskip("msgpack")
    offset = 0
    data = b""
    for rec, payload in zip(records, payloads):
        pad = -offset % align
        data += b"\x00" * pad
        offset += pad
        rec.setdefault("offset", offset)
        rec.setdefault("length", len(payload))
        rec.setdefault("crc32", zlib.crc32(payload))
        data += payload
        offset += len(payload)
    header = msgpack.packb({"align": align, "metadata": {}, "tensors": records}, use_bin_type=True)
    body = _file(header)
    if records:
        body += b"\x00" * (-len(body) % align)
    return body + data


def _rec(name, dtype, shape, repr_map, streams):
    return {"name": name, "dtype": dtype, "shape": shape, "repr": repr_map, "streams": streams}


def _both(data: bytes):
    """(ref decoder's error or None, ecnn's error or None)."""
    try:
        ref_decoder.decode_file(data)
        ref = None
    except ref_decoder.SpecError as exc:
        ref = exc.error
    try:
        import ecnn.numpy

        ecnn.numpy.decode(data)
        lib = None
    except ImportError:
        lib = ref
    except Exception as exc:  # noqa: BLE001
        lib = type(exc).__name__
    return ref, lib


_ROWS_REPR = {"kind": "uniform_rows", "step": 0x3F800000}
_RAW_U1 = {"coder": "raw", "length": 2, "width": 1, "signed": False}
_RAW_S1 = {"coder": "raw", "length": 4, "width": 1, "signed": True}
_EXAMPLE_PAYLOAD = bytes.fromhex("000403fe03fe")


def _rows_file(repr_map=None, streams=None, payload=_EXAMPLE_PAYLOAD, shape=(2, 2), dtype="float32"):
    repr_map = dict(_ROWS_REPR) if repr_map is None else repr_map
    streams = [dict(_RAW_U1), dict(_RAW_S1)] if streams is None else streams
    return _pack_file([_rec("w", dtype, list(shape), repr_map, streams)], [payload])


def test_uniform_rows_example_file():
    data = _rows_file()
    assert ref_decoder.decode_file(data)["w"] == ("float32", [2, 2], struct.pack("<4f", 3, -2, 2.25, -1.5))
    assert _both(data) == (None, None)


@pytest.mark.parametrize(
    "make, error",
    [
        # CODING.md §9 step 1: a non-string repr key comes before the kind
        pytest.param(lambda: _rows_file(repr_map={"kind": "nope", 1: 0}), "InvalidField", id="repr_int_key_before_kind"),
        pytest.param(lambda: _rows_file(repr_map={"kind": "nope"}), "UnsupportedCoding", id="repr_reserved_kind"),
        pytest.param(lambda: _rows_file(repr_map={**_ROWS_REPR, "zz": 0}), "UnknownField", id="repr_unknown_key"),
        pytest.param(lambda: _rows_file(repr_map={"kind": "uniform_rows"}), "InvalidField", id="rows_missing_step"),
        pytest.param(lambda: _rows_file(repr_map={**_ROWS_REPR, "step": 0x7F800000}), "InvalidField", id="rows_infinite_step"),
        pytest.param(lambda: _rows_file(shape=(), payload=b"\x00\x03"), "InvalidField", id="rows_scalar"),
        pytest.param(lambda: _rows_file(dtype="int8"), "InvalidField", id="rows_int8"),
        pytest.param(lambda: _rows_file(streams=[dict(_RAW_S1)], payload=b"\x03\xfe\x03\xfe"), "InvalidField", id="rows_one_stream"),
        # stream 0 has R = 2 symbols: a raw stream of 4 bytes is the wrong length
        pytest.param(
            lambda: _rows_file(streams=[{**_RAW_U1, "length": 4}, dict(_RAW_S1)], payload=b"\x00\x04\x00\x00\x03\xfe\x03\xfe"),
            "InvalidField",
            id="rows_codes_stream_counts_rows",
        ),
        # the codes' range is 0..255: a const 256 is out of range, 255 is fine
        pytest.param(
            lambda: _rows_file(streams=[{"coder": "const", "length": 0, "value": 256}, dict(_RAW_S1)], payload=b"\x03\xfe\x03\xfe"),
            "InvalidField",
            id="rows_code_256",
        ),
        pytest.param(
            lambda: _rows_file(streams=[{"coder": "const", "length": 0, "value": 255}, dict(_RAW_S1)], payload=b"\x03\xfe\x03\xfe"),
            None,
            id="rows_code_255",
        ),
        # CODING.md §9 step 4: descriptor checks in order
        pytest.param(
            lambda: _rows_file(streams=[{"length": 2, "width": 1, "signed": False}, dict(_RAW_S1)]),
            "InvalidField",
            id="coder_missing",
        ),
        pytest.param(lambda: _rows_file(streams=[{**_RAW_U1, "coder": 5}, dict(_RAW_S1)]), "InvalidField", id="coder_not_a_string"),
        pytest.param(lambda: _rows_file(streams=[{**_RAW_U1, "coder": "zip"}, dict(_RAW_S1)]), "UnsupportedCoding", id="coder_reserved"),
        pytest.param(
            lambda: _rows_file(streams=[{**_RAW_U1, "coder": "zip", 7: 0}, dict(_RAW_S1)]),
            "InvalidField",
            id="int_key_before_coder",
        ),
        pytest.param(lambda: _rows_file(streams=[{**_RAW_U1, "zz": 0}, dict(_RAW_S1)]), "UnknownField", id="descriptor_unknown_key"),
        # raw symbols outside the codes' range 0..255 cannot happen with width 1 unsigned,
        # but a signed 2-byte raw code stream can hold -1
        pytest.param(
            lambda: _rows_file(
                streams=[{"coder": "raw", "length": 4, "width": 2, "signed": True}, dict(_RAW_S1)],
                payload=b"\xff\xff\x04\x00\x03\xfe\x03\xfe",
            ),
            "CorruptPayload",
            id="raw_code_minus_1",
        ),
    ],
)
def test_record_checks(make, error):
    ref, lib = _both(make())
    assert ref == error
    assert lib == error  # the library reports the same error (or accepts the file)


def _cat0_file(length_extra: int):
    """A cat0 stream of 2 symbols (K = 1) whose length is 2 + K + length_extra."""
    n = 2 + 1 + length_extra
    desc = {"coder": "cat0", "length": n, "offset": 0, "nsym": 2, "chunk": 1 << 20, "precision": 24}
    return _pack_file([_rec("x", "uint8", [2], {"kind": "int"}, [desc])], [bytes(n)])


def test_cat0_minimum_length():
    # CODING.md §5.4 check 8: length >= 2 + K; a stream of exactly 2 + K bytes
    # passes the check and fails on decoding (a stored table takes 3 bytes).
    assert _both(_cat0_file(-1)) == ("InvalidField", "InvalidField")
    assert _both(_cat0_file(0)) == ("CorruptPayload", "CorruptPayload")


# ---------------------------------------------------------------------------
# FORMAT.md §6.1: nil and float keys, key depth
# ---------------------------------------------------------------------------

_F1 = b"\xca" + struct.pack(">f", 1.0)
_D1 = b"\xcb" + struct.pack(">d", 1.0)


@pytest.mark.parametrize(
    "extra, error",
    [
        pytest.param(b"\xa2_x\x82\xc0\x00\xc0\x01", "DuplicateKey", id="two_nils"),
        pytest.param(b"\xa2_x\x82\xc0\x00\xc2\x01", None, id="nil_is_not_false"),
        pytest.param(b"\xa2_x\x82\xc0\x00\x00\x01", None, id="nil_is_not_0"),
        pytest.param(b"\xa2_x\x82" + _F1 + b"\x00" + _D1 + b"\x01", "DuplicateKey", id="float32_1_equals_float64_1"),
        pytest.param(
            b"\xa2_x\x82\xca" + struct.pack(">f", 0.0) + b"\x00\xca" + struct.pack(">f", -0.0) + b"\x01",
            "DuplicateKey",
            id="0.0_equals_-0.0",
        ),
        pytest.param(
            b"\xa2_x\x82\xca" + struct.pack(">f", float("nan")) + b"\x00\xca" + struct.pack(">f", float("nan")) + b"\x01",
            "InvalidField",
            id="nan_equals_nothing",
        ),
        pytest.param(b"\xa2_x\x82" + _F1 + b"\x00\x01\x01", "InvalidField", id="float_is_not_int"),
        pytest.param(b"\xa2_x\x81" + _F1 + b"\x00", "InvalidField", id="one_float_key"),
        # a map at depth 16: its keys are at depth 17, too deep before being floats
        pytest.param(b"\xa2_x" + b"\x91" * 15 + b"\x81" + _F1 + b"\x00", "MalformedHeader", id="float_key_at_depth_17"),
        pytest.param(b"\xa2_x" + b"\x91" * 14 + b"\x81" + _F1 + b"\x00", "InvalidField", id="float_key_at_depth_16"),
        pytest.param(b"\xa2_x" + b"\x91" * 15 + b"\x80", None, id="empty_map_at_depth_16"),
    ],
)
def test_key_comparison_and_depth(extra, error):
    data = _file(_top(extra=extra, nkeys=4))
    ref, lib = _both(data)
    assert ref == error
    assert lib == error


def test_row_steps_match_the_library():
    """CODING.md §4.6 as written gives the library's row steps, bit for bit."""
    np = pytest.importorskip("numpy")
    quantize = pytest.importorskip("ecnn.quantize")
    dtypes = pytest.importorskip("ecnn.dtypes")
    rng = np.random.default_rng(1)
    patterns = [1, 2, 3, 0x007FFFFF, 0x00800000, 0x3F800000, 0x3F800001, 0x7D7FFFFF, 0x7D800000, 0x7F7FFFFF]
    patterns += [int(p) for p in rng.integers(1, 0x7F7FFFFF, 200)]
    codes = np.arange(256)
    for name in ("float32", "float64"):
        dt = dtypes.get(name)
        for p in patterns:
            with np.errstate(over="ignore"):
                lib = quantize.row_steps(quantize.step_from_bits(p), codes, dt)
            ref = np.array([ref_decoder.row_step(p, int(c), name) for c in codes], dtype=lib.dtype)
            assert lib.tobytes() == ref.tobytes(), (name, hex(p))
