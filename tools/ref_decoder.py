"""Independent reference decoder for `.ecnn` files, written from the spec alone.

Sources: spec/FORMAT.md (container), spec/CODING.md (payload coding) and
spec/RANGE_CODER.md (through ``tools/ref_range_decoder.py``).  Nothing of the
``ecnn`` package is used.  Section references below are written as
``F§n`` (FORMAT.md), ``C§n`` (CODING.md) and ``RC§n`` (RANGE_CODER.md).

Public API
----------
``decode_file(data) -> {name: (dtype, shape, storage_bytes)}``
    Decode and verify a whole file (F§10 phases 1-3, padding, phase 4).
``decode(data) -> (metadata, tensors)``
    The same, also returning the metadata map (F§6.3).
``decode_all(data) -> (metadata, tensors, files)``
    The same, also returning the stored files ``{name: bytes}`` (F§6.6).

Every rejection raises ``SpecError`` (a ``ValueError``) whose ``error``
attribute is the error name the spec gives (F§10.1) and whose message names
the spec section.  Speed is not a goal; readability is.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_range_decoder import RangeDecoder, RangeDecoderError, cdf_from_freqs  # noqa: E402

__all__ = ["SpecError", "decode", "decode_all", "decode_file"]


class SpecError(ValueError):
    """A file the spec says must be rejected.  ``error`` is the F§10.1 name."""

    def __init__(self, error: str, section: str, message: str):
        super().__init__(f"{error} ({section}): {message}")
        self.error = error
        self.section = section


# ---------------------------------------------------------------------------
# Constants (F§4, F§5, F§7, F§9)
# ---------------------------------------------------------------------------

SIGNATURE = bytes([0x8E, 0x45, 0x43, 0x4E, 0x4E, 0x0D, 0x0A, 0x1A])  # F§4
PREAMBLE_SIZE = 20  # F§5

MAX_HEADER_LENGTH = 64 * 1024 * 1024  # F§9.1
MAX_ARRAY = 1 << 20  # F§6.1
MAX_MAP = 1 << 16  # F§6.1
MAX_DEPTH = 16  # F§6.1
MAX_NAME_BYTES = 1024  # F§6.5
MAX_NDIM = 32  # F§6.5
MAX_DIM = 1 << 48  # F§6.5
MAX_STREAMS = 64  # F§6.5
MAX_ALIGN = 4096  # F§6.3
MAX_FILES = 65536  # F§6.6
MAX_FILE_PARTS = 32  # F§6.6
MAX_FILE_PART_BYTES = 255  # F§6.6
FILE_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-+")  # F§6.6
WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {f"com{d}" for d in range(10)} | {f"lpt{d}" for d in range(10)}
# Reader limits, at their defaults (F§9.2).
MAX_TENSOR_BYTES = 1 << 36
MAX_TOTAL_BYTES = 1 << 40
MAX_FILE_BYTES = 1 << 28  # F§9.2, max_file_bytes
MAX_FILES_BYTES = 1 << 30  # F§9.2, max_files_bytes

MAX_NSYM = 1 << 20  # C§5.4
MAX_CHUNKS = 1 << 20  # C§5.4
MAX_COUNT = (1 << 32) - 1  # C§7.1
PRECISION = 24  # C§5.4, RC§1

# F§7: name -> (width, kind).  kind: "float", "int" (signed), "uint", "bool".
DTYPES = {
    "float64": (8, "float"),
    "float32": (4, "float"),
    "float16": (2, "float"),
    "bfloat16": (2, "float"),
    "float8_e4m3fn": (1, "float"),
    "float8_e5m2": (1, "float"),
    "int64": (8, "int"),
    "int32": (4, "int"),
    "int16": (2, "int"),
    "int8": (1, "int"),
    "uint64": (8, "uint"),
    "uint32": (4, "uint"),
    "uint16": (2, "uint"),
    "uint8": (1, "uint"),
    "bool": (1, "bool"),
}
UNIFORM_DTYPES = ("float64", "float32", "float16", "bfloat16")  # C§4.5, C§4.6
MAX_ROW_CODE = 255  # C§4.6: the row step codes of uniform_rows lie in 0..255


def _is_int(v) -> bool:
    """An integer field: a MessagePack integer, never a boolean (F§6.2)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _align_up(n: int, a: int) -> int:
    """F§2."""
    return (n + a - 1) // a * a


# ---------------------------------------------------------------------------
# Strict MessagePack parser (F§6.1)
# ---------------------------------------------------------------------------


class MsgMap(list):
    """A parsed map: a list of (key, value) pairs in stored order."""


class MsgFloat:
    """A parsed float; floats are parsed, then rejected by the tree walk (F§6.1)."""

    def __init__(self, value: float):
        self.value = value


def _malformed(msg: str) -> SpecError:
    return SpecError("MalformedHeader", "FORMAT.md §6.1", msg)


# F§6.1, nesting guard: an object of depth 257 or more stops the parse where it
# starts (MalformedHeader).  It is too deep anyway (depth > 16); the guard
# decides which error such a header reports, and bounds this recursive parser.
_PARSE_NESTING_GUARD = 256


class _MsgpackParser:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _malformed("truncated MessagePack object")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def sint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big", signed=True)

    def string(self, n: int) -> str:
        raw = self.take(n)
        try:
            # Python's UTF-8 codec rejects overlong forms and surrogates.
            return raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise _malformed("string is not valid UTF-8") from None

    def parse(self, nesting: int = 0):
        if nesting > _PARSE_NESTING_GUARD:
            raise _malformed("nesting far beyond the depth cap of 16")
        b = self.take(1)[0]
        if b <= 0x7F:
            return b  # positive fixint
        if b >= 0xE0:
            return b - 0x100  # negative fixint
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, nesting)
        if 0x90 <= b <= 0x9F:
            return self.array(b & 0x0F, nesting)
        if 0xA0 <= b <= 0xBF:
            return self.string(b & 0x1F)
        if b == 0xC0:
            return None
        if b == 0xC1:
            raise _malformed("reserved type byte 0xC1")
        if b in (0xC2, 0xC3):
            return b == 0xC3
        if 0xC4 <= b <= 0xC6:
            raise _malformed("bin object")
        if 0xC7 <= b <= 0xC9 or 0xD4 <= b <= 0xD8:
            raise _malformed("extension object")
        if b == 0xCA:
            return MsgFloat(struct.unpack(">f", self.take(4))[0])
        if b == 0xCB:
            return MsgFloat(struct.unpack(">d", self.take(8))[0])
        if 0xCC <= b <= 0xCF:
            return self.uint(1 << (b - 0xCC))
        if 0xD0 <= b <= 0xD3:
            return self.sint(1 << (b - 0xD0))
        if 0xD9 <= b <= 0xDB:
            return self.string(self.uint(1 << (b - 0xD9)))
        if b in (0xDC, 0xDD):
            return self.array(self.uint(2 if b == 0xDC else 4), nesting)
        # 0xDE, 0xDF
        return self.map(self.uint(2 if b == 0xDE else 4), nesting)

    def array(self, count: int, nesting: int) -> list:
        if count > MAX_ARRAY:  # checked before the elements are read
            raise _malformed(f"array of {count} elements (cap 2^20)")
        return [self.parse(nesting + 1) for _ in range(count)]

    def map(self, count: int, nesting: int) -> MsgMap:
        if count > MAX_MAP:  # checked before the entries are read
            raise _malformed(f"map of {count} entries (cap 2^16)")
        pairs = MsgMap()
        for _ in range(count):
            key = self.parse(nesting + 1)
            value = self.parse(nesting + 1)
            pairs.append((key, value))
        _check_map_keys(pairs)  # when the map has been parsed to its end
        return pairs


def _key_identity(key):
    """How keys compare for the duplicate rule (F§6.1): as (type, value).

    Keys of different types are never equal (a boolean never equals an
    integer, nil never equals false or 0).  Strings compare by code points,
    integers and booleans by value, nil equals nil, and floats by IEEE value
    whatever their width (0.0 equals -0.0; a NaN equals nothing, which the
    Python float comparison gives too).
    """
    if isinstance(key, bool):
        return ("bool", key)
    if isinstance(key, int):
        return ("int", key)
    if isinstance(key, str):
        return ("str", key)
    if isinstance(key, MsgFloat):
        return ("float", key.value)
    return ("nil",)


def _check_map_keys(pairs: MsgMap) -> None:
    """F§6.1 rows 7 and 8, on the keys in stored order."""
    seen = set()
    for key, _ in pairs:
        if isinstance(key, list):  # arrays and maps (MsgMap is a list)
            raise _malformed("map key is an array or a map")
        ident = _key_identity(key)
        if ident in seen:
            raise SpecError("DuplicateKey", "FORMAT.md §6.1", f"duplicate map key {key!r}")
        seen.add(ident)


def _walk_depth_and_floats(node, depth: int = 0) -> None:
    """F§6.1 depth and float rules: depth-first, containers before contents.

    Keys and values of a map both have the map's depth plus one; each entry's
    key is visited before its value.  Too deep is checked before float, so an
    object that is both is reported as too deep.
    """
    if depth > MAX_DEPTH:
        raise _malformed(f"object at depth {depth} (cap 16)")
    if isinstance(node, MsgFloat):
        raise SpecError("InvalidField", "FORMAT.md §6.1", "float in the header")
    if isinstance(node, MsgMap):
        for key, value in node:
            _walk_depth_and_floats(key, depth + 1)
            _walk_depth_and_floats(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            _walk_depth_and_floats(item, depth + 1)


def parse_header(buf: bytes):
    """F§10 steps 7 and 8: strict parse, then the tree walk."""
    parser = _MsgpackParser(buf)
    tree = parser.parse()
    if parser.pos != len(buf):
        raise _malformed("bytes after the header object")
    _walk_depth_and_floats(tree)
    return tree


# ---------------------------------------------------------------------------
# Field tables (F§6.2, F§6.3, F§6.5)
# ---------------------------------------------------------------------------


def _invalid(section: str, msg: str) -> SpecError:
    return SpecError("InvalidField", section, msg)


def check_keys(pairs: MsgMap, known: tuple, section: str) -> dict:
    """F§6.2 steps 1-3 on the keys in stored order; returns the known fields."""
    fields = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise _invalid(section, f"map key {key!r} is not a string")
        if key in known:
            fields[key] = value
        elif not key.startswith("_"):  # "_..." keys are ancillary and ignored
            raise SpecError("UnknownField", section, f"unknown field {key!r}")
    return fields


def _require(fields: dict, name: str, section: str):
    """F§6.2 step 4: every listed field is required."""
    if name not in fields:
        raise _invalid(section, f"missing field {name!r}")
    return fields[name]


def _require_int(fields: dict, name: str, lo: int, hi: int, section: str) -> int:
    value = _require(fields, name, section)
    if not _is_int(value) or not lo <= value <= hi:
        raise _invalid(section, f"{name!r} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _find_key(pairs: MsgMap, name: str):
    for key, value in pairs:
        if isinstance(key, str) and key == name:
            return True, value
    return False, None


def check_top_level(tree) -> tuple[int, dict, list, list]:
    """F§6.3: align, metadata, tensors (in this order), then files (F§6.6) if present."""
    sec = "FORMAT.md §6.3"
    if not isinstance(tree, MsgMap):
        raise _invalid(sec, "the header is not a map")
    fields = check_keys(tree, ("align", "metadata", "tensors", "files"), sec)
    align = _require_int(fields, "align", 1, MAX_ALIGN, sec)
    if align & (align - 1):
        raise _invalid(sec, f"align {align} is not a power of two")
    metadata = _require(fields, "metadata", sec)
    if not isinstance(metadata, MsgMap):
        raise _invalid(sec, "metadata is not a map")
    for key, value in metadata:
        if not isinstance(key, str) or not isinstance(value, str):
            raise _invalid(sec, "metadata keys and values must be strings")
    tensors = _require(fields, "tensors", sec)
    if not isinstance(tensors, list) or isinstance(tensors, MsgMap):
        raise _invalid(sec, "tensors is not an array")
    records = [check_record(r) for r in tensors]
    files = []
    if "files" in fields:  # optional (F§6.3)
        sec6 = "FORMAT.md §6.6"
        array = fields["files"]
        if not isinstance(array, list) or isinstance(array, MsgMap):
            raise _invalid(sec6, "files is not an array")
        if len(array) > MAX_FILES:
            raise SpecError("LimitExceeded", sec6, f"{len(array)} stored files (cap 65536)")
        files = [check_file_record(r) for r in array]
    return align, dict(metadata), records, files


FILE_FIELDS = ("name", "offset", "length", "crc32")


def check_file_record(rec) -> dict:
    """F§6.6, fields in the order of the table; the name rules last."""
    sec = "FORMAT.md §6.6"
    if not isinstance(rec, MsgMap):
        raise _invalid(sec, "file record is not a map")
    fields = check_keys(rec, FILE_FIELDS, sec)
    name = _require(fields, "name", sec)
    if not isinstance(name, str) or not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        raise _invalid(sec, "name must be a string of 1..1024 UTF-8 bytes")
    for ch in name:
        if ch != "/" and ch not in FILE_NAME_CHARS:
            raise SpecError("BadFileName", sec, f"character {ch!r} in {name!r}")
    parts = name.split("/")
    if len(parts) > MAX_FILE_PARTS:
        raise SpecError("BadFileName", sec, f"{len(parts)} parts in {name!r}")
    for part in parts:
        if part == "" or part.endswith(".") or len(part) > MAX_FILE_PART_BYTES:
            raise SpecError("BadFileName", sec, f"part {part!r} of {name!r}")
        if part.split(".")[0].lower() in WINDOWS_DEVICES:
            raise SpecError("BadFileName", sec, f"device name {part!r} in {name!r}")
    return {
        "name": name,
        "offset": _require_int(fields, "offset", 0, (1 << 64) - 1, sec),
        "length": _require_int(fields, "length", 0, (1 << 64) - 1, sec),
        "crc32": _require_int(fields, "crc32", 0, (1 << 32) - 1, sec),
    }


RECORD_FIELDS = ("name", "dtype", "shape", "offset", "length", "crc32", "repr", "streams")


def check_record(rec) -> dict:
    """F§6.5, fields in the order of the table."""
    sec = "FORMAT.md §6.5"
    if not isinstance(rec, MsgMap):
        raise _invalid(sec, "tensor record is not a map")
    fields = check_keys(rec, RECORD_FIELDS, sec)

    name = _require(fields, "name", sec)
    if not isinstance(name, str) or not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        raise _invalid(sec, "name must be a string of 1..1024 UTF-8 bytes")

    dtype = _require(fields, "dtype", sec)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SpecError("UnsupportedCoding", sec, f"reserved dtype {dtype!r}")

    shape = _require(fields, "shape", sec)
    if not isinstance(shape, list) or isinstance(shape, MsgMap):
        raise _invalid(sec, "shape is not an array")
    if len(shape) > MAX_NDIM:
        raise SpecError("LimitExceeded", sec, f"{len(shape)} dimensions (cap 32)")
    for dim in shape:
        if not _is_int(dim) or not 0 <= dim <= MAX_DIM:
            raise _invalid(sec, f"dimension {dim!r} is not an integer in 0..2^48")
    product = 1
    for dim in shape:
        product *= dim or 1
    if product > MAX_DIM:
        raise SpecError("LimitExceeded", sec, "the non-zero dimensions multiply past 2^48")

    offset = _require_int(fields, "offset", 0, (1 << 64) - 1, sec)
    length = _require_int(fields, "length", 0, (1 << 64) - 1, sec)
    crc32 = _require_int(fields, "crc32", 0, (1 << 32) - 1, sec)

    repr_map = _require(fields, "repr", sec)
    if not isinstance(repr_map, MsgMap):
        raise _invalid(sec, "repr is not a map")
    found, kind = _find_key(repr_map, "kind")
    if not found or not isinstance(kind, str):
        raise _invalid(sec, "repr has no string field 'kind'")

    streams = _require(fields, "streams", sec)
    if not isinstance(streams, list) or isinstance(streams, MsgMap):
        raise _invalid(sec, "streams is not an array")
    if len(streams) > MAX_STREAMS:
        raise SpecError("LimitExceeded", sec, f"{len(streams)} streams (cap 64)")

    n = 1
    for dim in shape:
        n *= dim
    return {
        "name": name,
        "dtype": dtype,
        "shape": list(shape),
        "offset": offset,
        "length": length,
        "crc32": crc32,
        "repr": repr_map,
        "streams": streams,
        "n": n,  # number of elements (F§6.5)
        "width": DTYPES[dtype][0],
    }


# ---------------------------------------------------------------------------
# Container: preamble and layout (F§4, F§5, F§8, F§10)
# ---------------------------------------------------------------------------


def check_preamble(data: bytes) -> int:
    """F§10 steps 1-6.  Returns Header_Length H."""
    head = data[:8]
    if head != SIGNATURE[: len(head)]:
        raise SpecError("BadSignature", "FORMAT.md §4", "the first bytes are not the signature")
    if len(data) < PREAMBLE_SIZE:
        raise SpecError("TruncatedFile", "FORMAT.md §10 step 2", "shorter than the preamble")
    major, _minor, hlen, hcrc = struct.unpack_from("<HHII", data, 8)
    if major != 1:  # Format_Minor is never checked (F§5)
        raise SpecError("UnsupportedVersion", "FORMAT.md §5", f"Format_Major {major}")
    if hlen > MAX_HEADER_LENGTH:
        raise SpecError("HeaderTooLarge", "FORMAT.md §5, §9.1", f"Header_Length {hlen}")
    if PREAMBLE_SIZE + hlen > len(data):
        raise SpecError("TruncatedFile", "FORMAT.md §5", "the header runs past the end of file")
    # CRC-32 of bytes 8..15 as stored, then of the H header bytes (not 16..19).
    if zlib.crc32(data[8:16] + data[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen]) != hcrc:
        raise SpecError("HeaderChecksumMismatch", "FORMAT.md §5", "Header_CRC32 differs")
    return hlen


def check_layout(data: bytes, hlen: int, align: int, records: list, files: list = ()) -> int:
    """F§8 and F§10 steps 10-15 (with the stored files of F§6.6).  Returns D, the start of the data section."""
    sec = "FORMAT.md §8, §10"
    data_start = _align_up(PREAMBLE_SIZE + hlen, align)
    names = set()
    total = 0
    expected = 0
    for rec in records:
        if rec["name"] in names:
            raise SpecError("DuplicateTensorName", "FORMAT.md §6.5", f"{rec['name']!r} twice")
        names.add(rec["name"])
        size = rec["n"] * rec["width"]  # decoded size, exact
        if size > MAX_TENSOR_BYTES:
            raise SpecError("LimitExceeded", "FORMAT.md §9.2", f"tensor of {size} bytes")
        total += size
        if total > MAX_TOTAL_BYTES:
            raise SpecError("LimitExceeded", "FORMAT.md §9.2", f"{total} bytes in all")
        expected = _align_up(expected, align)
        if rec["offset"] != expected:
            raise SpecError("BadLayout", sec, f"{rec['name']!r} at {rec['offset']}, expected {expected}")
        expected += rec["length"]
        if data_start + expected > len(data):
            raise SpecError("TruncatedFile", sec, f"payload of {rec['name']!r} runs past the end")
    lowered = []  # F§6.6: names compared with A-Z folded to a-z
    file_total = 0
    for f in files:
        low = f["name"].lower()
        for other in lowered:
            if low == other or low.startswith(other + "/") or other.startswith(low + "/"):
                raise SpecError("DuplicateFileName", "FORMAT.md §6.6", f"{f['name']!r} clashes with {other!r}")
        lowered.append(low)
        if f["length"] > MAX_FILE_BYTES:
            raise SpecError("LimitExceeded", "FORMAT.md §9.2", f"stored file of {f['length']} bytes")
        file_total += f["length"]
        if file_total > MAX_FILES_BYTES:
            raise SpecError("LimitExceeded", "FORMAT.md §9.2", f"{file_total} bytes of stored files")
        expected = _align_up(expected, align)
        if f["offset"] != expected:
            raise SpecError("BadLayout", sec, f"file {f['name']!r} at {f['offset']}, expected {expected}")
        expected += f["length"]
        if data_start + expected > len(data):
            raise SpecError("TruncatedFile", sec, f"stored file {f['name']!r} runs past the end")
    end = data_start + expected if records or files else PREAMBLE_SIZE + hlen
    if len(data) > end:
        raise SpecError("TrailingData", sec, f"{len(data) - end} bytes after the end")
    return data_start


def check_padding(data: bytes, hlen: int, data_start: int, records: list) -> None:
    """F§8 "Padding": header-to-D and between payloads (tensors', then stored files') must be zero."""
    if not records:
        return
    gaps = [(PREAMBLE_SIZE + hlen, data_start)]
    for prev, rec in zip(records, records[1:]):
        gaps.append((data_start + prev["offset"] + prev["length"], data_start + rec["offset"]))
    for start, stop in gaps:
        if any(data[start:stop]):
            raise SpecError("NonZeroPadding", "FORMAT.md §8", f"non-zero padding in {start}..{stop - 1}")


# ---------------------------------------------------------------------------
# Representations and stream descriptors (C§4, C§5, C§9)
# ---------------------------------------------------------------------------

REPR_FIELDS = {
    "raw": ("kind",),
    "planes": ("kind",),
    "int": ("kind",),
    "uniform": ("kind", "step"),
    "uniform_rows": ("kind", "step"),
    "codebook": ("kind", "levels", "zero"),  # 1.1
}
CODEBOOK_DTYPES = ("float32", "float16", "bfloat16")  # C§4.8
MAX_LEVELS = 65536
REPR_FIELDS["fields"] = ("kind", "head")  # 1.1
FIELD_LAYOUT = {  # C§4.9: (E, M) of each float type
    "float64": (11, 52),
    "float32": (8, 23),
    "float16": (5, 10),
    "bfloat16": (8, 7),
    "float8_e4m3fn": (4, 3),
    "float8_e5m2": (5, 2),
}

STREAM_FIELDS = {
    "const": ("coder", "length", "value"),
    "raw": ("coder", "length", "width", "signed"),
    "cat0": ("coder", "length", "offset", "nsym", "chunk", "precision"),
    "rowcol": (
        "coder", "length", "offset", "nsym", "rows", "cols",
        "nrc", "ncc", "signs", "chunk_rows", "precision",
    ),
}
STREAM_FIELDS["ctx"] = ("coder", "length")  # 1.1, C§5.6

STREAM_FIELDS["packed"] = ("coder", "length", "width")  # 1.1, C§5.7
BLOCKS_FIELDS = ("coder", "length")  # 1.1, C§5.8: only in stream 2 of fields
RANS_FIELDS = ("coder", "length")  # 1.2, C§5.9: only in stream 2 of fields

def symbol_range(kind: str, dtype: str) -> tuple[int, int]:
    """C§4.1: the symbol range lo..hi of the representation's streams.

    For uniform_rows this is the range of stream 1 (the indices); stream 0
    (the row step codes) has 0..255 (C§4.6).
    """
    width, dkind = DTYPES[dtype]
    if kind == "planes":
        return 0, 255
    if kind in ("uniform", "uniform_rows"):
        return (-(2**31 - 1), 2**31 - 1) if dtype == "float64" else (-(2**24), 2**24)
    # kind == "int"
    if dkind == "int":
        return -(1 << (8 * width - 1)), (1 << (8 * width - 1)) - 1
    if dkind == "uint":
        return 0, (1 << (8 * width)) - 1
    return 0, 1  # bool


def check_repr(rec: dict) -> None:
    """C§9: the record's repr and streams (F§10 phase 3).  Adds parsed fields to rec."""
    sec = "CODING.md §9"
    for key, _ in rec["repr"]:  # step 1: all keys first
        if not isinstance(key, str):
            raise _invalid("CODING.md §9 step 1", f"repr key {key!r} is not a string")
    _, kind = _find_key(rec["repr"], "kind")  # a string (F§6.5)
    if kind not in REPR_FIELDS:  # step 2
        raise SpecError("UnsupportedCoding", "CODING.md §4.1, §9", f"reserved repr kind {kind!r}")
    fields = check_keys(rec["repr"], REPR_FIELDS[kind], "CODING.md §4.1, §9")
    rec["kind"] = kind
    streams, dtype, width, n = rec["streams"], rec["dtype"], rec["width"], rec["n"]

    # step 3, by kind
    if kind == "raw":  # C§4.2
        if streams:
            raise _invalid("CODING.md §4.2", "raw representation with streams")
        if rec["length"] != n * width:
            raise _invalid("CODING.md §4.2", f"length {rec['length']} != N * width {n * width}")
        return
    if kind == "planes" and len(streams) != width:  # C§4.3
        raise _invalid("CODING.md §4.3", f"{len(streams)} streams for width {width}")
    if kind == "int":  # C§4.4
        if DTYPES[dtype][1] == "float":
            raise _invalid("CODING.md §4.4", f"int representation for {dtype}")
        if len(streams) != 1:
            raise _invalid("CODING.md §4.4", "int representation needs exactly 1 stream")
    if kind in ("uniform", "uniform_rows"):  # C§4.5, C§4.6
        ksec = "CODING.md §4.5" if kind == "uniform" else "CODING.md §4.6"
        if dtype not in UNIFORM_DTYPES:
            raise _invalid(ksec, f"{kind} representation for {dtype}")
        step = _require_int(fields, "step", 0, (1 << 32) - 1, ksec)
        if not 0x00000001 <= step <= 0x7F7FFFFF:
            raise _invalid(ksec, f"step {step:#010x} is not a positive finite binary32")
        rec["step"] = step
        if kind == "uniform_rows":
            if not rec["shape"]:
                raise _invalid(ksec, "uniform_rows of a scalar (shape [])")
            if 0 in rec["shape"]:
                raise _invalid(ksec, "uniform_rows of a tensor with no elements")
            if len(streams) != 2:
                raise _invalid(ksec, "uniform_rows representation needs exactly 2 streams")
        elif len(streams) != 1:
            raise _invalid(ksec, "uniform representation needs exactly 1 stream")
    if kind == "codebook":  # C§4.8
        ksec = "CODING.md §4.8"
        if dtype not in CODEBOOK_DTYPES:
            raise _invalid(ksec, f"codebook representation for {dtype}")
        rec["levels"] = _require_int(fields, "levels", 1, MAX_LEVELS, ksec)
        rec["zero"] = _require_int(fields, "zero", 0, rec["levels"] - 1, ksec)
        if len(streams) != 2:
            raise _invalid(ksec, "codebook representation needs exactly 2 streams")

    if kind == "fields":  # C§4.9, in the order given there
        _check_fields(rec, fields, streams)
        return

    # step 4: each stream with its symbol count and range
    lo, hi = symbol_range(kind, dtype) if kind != "codebook" else (0, 0)
    rec["descs"] = []
    for k, desc in enumerate(streams):
        if kind == "uniform_rows" and k == 0:  # the row step codes: R symbols in 0..255
            rec["descs"].append(check_stream(desc, rec["shape"][0], 0, MAX_ROW_CODE))
        elif kind == "codebook" and k == 0:  # the levels' bit patterns
            rec["descs"].append(check_stream(desc, rec["levels"], 0, (1 << (8 * width)) - 1))
        elif kind == "codebook":  # level index minus zero
            rec["descs"].append(check_stream(desc, n, -(rec["levels"] - 1), rec["levels"] - 1))
        else:
            rec["descs"].append(check_stream(desc, n, lo, hi))
    if sum(d["length"] for d in rec["descs"]) != rec["length"]:  # step 5
        raise _invalid(sec + " step 5", "stream lengths do not add up to the record's length")


def fields_rows(shape: list[int]) -> int:
    """C§4.9: R is the first dimension of a shape of two or more dimensions, else 1."""
    return shape[0] if len(shape) >= 2 else 1


def _check_fields(rec: dict, fields: dict, streams: list) -> None:
    """C§4.9 / C§9: dtype, head, N >= 1, four streams, each stream, the width of a packed stream 3."""
    ksec = "CODING.md §4.9"
    dtype, n = rec["dtype"], rec["n"]
    if dtype not in FIELD_LAYOUT:
        raise _invalid(ksec, f"fields representation for {dtype}")
    e_bits, m_bits = FIELD_LAYOUT[dtype]
    k = _require_int(fields, "head", 0, m_bits, ksec)
    if n < 1:
        raise _invalid(ksec, "fields representation of a tensor with no elements")
    if len(streams) != 4:
        raise _invalid(ksec, "fields representation needs exactly 4 streams")
    r = m_bits - k
    rec["head"], rec["e_bits"], rec["m_bits"], rec["r"] = k, e_bits, m_bits, r
    counts = [(n, 0, 1), (fields_rows(rec["shape"]), 0, r), (n, 0, (1 << (e_bits + k)) - 1), (n, 0, (1 << r) - 1)]
    rec["descs"] = [check_stream(desc, *c, blocks_ok=j == 2) for j, (desc, c) in enumerate(zip(streams, counts))]
    if rec["descs"][3]["coder"] == "packed" and rec["descs"][3]["width"] != r:
        raise _invalid(ksec, f"packed stream 3 has width {rec['descs'][3]['width']}, not r = {r}")
    if sum(d["length"] for d in rec["descs"]) != rec["length"]:  # step 5
        raise _invalid("CODING.md §9 step 5", "stream lengths do not add up to the record's length")


def check_stream(desc, n: int, lo: int, hi: int, blocks_ok: bool = False) -> dict:
    """C§9 step 4 for one stream of n symbols in lo..hi.  Returns its fields
    (plus "n", "lo", "hi").  ``blocks_ok``: the stream is stream 2 of a fields
    record, where the coders `blocks` (1.1, C§5.8) and `rans` (1.2, C§5.9) are also accepted."""
    sec = "CODING.md §5.1, §9 step 4"
    if not isinstance(desc, MsgMap):  # 4.1
        raise _invalid(sec, "stream descriptor is not a map")
    for key, _ in desc:  # 4.2: all keys first
        if not isinstance(key, str):
            raise _invalid(sec, f"stream descriptor key {key!r} is not a string")
    found, coder = _find_key(desc, "coder")
    if not found or not isinstance(coder, str):  # 4.3
        raise _invalid(sec, f"coder is missing or not a string: {coder!r}")
    known = dict(STREAM_FIELDS, blocks=BLOCKS_FIELDS, rans=RANS_FIELDS) if blocks_ok else STREAM_FIELDS
    if coder not in known:  # 4.4
        raise SpecError("UnsupportedCoding", sec, f"reserved stream coder {coder!r}")
    f = check_keys(desc, known[coder], sec)  # 4.5
    f["length"] = _require_int(f, "length", 0, (1 << 63) - 1, sec)  # 4.6
    f["n"], f["lo"], f["hi"] = n, lo, hi
    if coder == "blocks":  # 1.1, C§5.8
        if n < 1 or f["length"] < 7:
            raise _invalid("CODING.md §5.8", "a blocks stream codes at least one symbol in at least 7 bytes")
        return f
    if coder == "rans":  # 1.2, C§5.9
        if n < 1 or f["length"] < 13:
            raise _invalid("CODING.md §5.9", "a rans stream codes at least one symbol in at least 13 bytes")
        return f
    if coder == "ctx":  # 1.1, C§5.6
        _check_ctx(f, n, lo, hi)
        return f
    {"const": _check_const, "raw": _check_raw, "cat0": _check_cat0, "rowcol": _check_rowcol, "packed": _check_packed}[coder](
        f, n, lo, hi
    )  # 4.7
    return f


def _check_packed(f: dict, n: int, lo: int, hi: int) -> None:
    """C§5.7 descriptor checks."""
    sec = "CODING.md §5.7"
    f["width"] = _require_int(f, "width", 1, 64, sec)
    if f["length"] > (n * f["width"] + 7) // 8 + f["width"] - 1:
        raise _invalid(sec, f"length {f['length']} exceeds ceil({n} * {f['width']} / 8) + {f['width']} - 1")


def _check_const(f: dict, n: int, lo: int, hi: int) -> None:
    """C§5.2."""
    sec = "CODING.md §5.2"
    if f["length"] != 0:
        raise _invalid(sec, "const stream with bytes")
    _require_int(f, "value", lo, hi, sec)


def _check_raw(f: dict, n: int, lo: int, hi: int) -> None:
    """C§5.3 (the symbol range is checked on decoding)."""
    sec = "CODING.md §5.3"
    width = _require_int(f, "width", 1, 8, sec)
    if width not in (1, 2, 4, 8):
        raise _invalid(sec, f"raw width {width}")
    if not isinstance(_require(f, "signed", sec), bool):
        raise _invalid(sec, "signed is not a boolean")
    if f["length"] != n * width:
        raise _invalid(sec, f"length {f['length']} != N * width {n * width}")


def _check_precision(f: dict, sec: str) -> None:
    precision = _require_int(f, "precision", 1, 64, sec)
    if precision != PRECISION:
        raise SpecError("UnsupportedCoding", sec, f"reserved precision {precision}")


def _check_cat0(f: dict, n: int, lo: int, hi: int) -> None:
    """C§5.4 descriptor checks 1-8, in order."""
    sec = "CODING.md §5.4"
    _check_precision(f, sec)  # 1
    nsym = _require_int(f, "nsym", 2, MAX_NSYM, sec)  # 2
    offset = _require_int(f, "offset", -(1 << 63), (1 << 63) - 1, sec)  # 3
    if offset < lo or offset + nsym - 1 > hi:  # 4
        raise _invalid(sec, f"alphabet {offset}..{offset + nsym - 1} outside {lo}..{hi}")
    chunk = _require_int(f, "chunk", 1, (1 << 63) - 1, sec)  # 5
    if n < 1:  # 6
        raise _invalid(sec, "cat0 stream of no symbols")
    k = -(-n // chunk)
    if k > MAX_CHUNKS:  # 7
        raise SpecError("LimitExceeded", sec, f"{k} chunks (cap 2^20)")
    if f["length"] < 2 + k:  # 8
        raise _invalid(sec, f"length {f['length']} < 2 + K = {2 + k}")
    f["K"] = k


def _check_rowcol(f: dict, n: int, lo: int, hi: int) -> None:
    """C§5.5 descriptor checks 1-7, in order."""
    sec = "CODING.md §5.5"
    _check_precision(f, sec)  # 1
    nsym = _require_int(f, "nsym", 2, MAX_NSYM, sec)  # 2
    offset = _require_int(f, "offset", -(1 << 63), (1 << 63) - 1, sec)
    signs = _require(f, "signs", sec)  # 3
    if not isinstance(signs, bool):
        raise _invalid(sec, "signs is not a boolean")
    if signs:
        if offset != 0 or -(nsym - 1) < lo or nsym - 1 > hi:
            raise _invalid(sec, "signed alphabet outside the symbol range (or offset != 0)")
    elif offset < lo or offset + nsym - 1 > hi:
        raise _invalid(sec, f"alphabet {offset}..{offset + nsym - 1} outside {lo}..{hi}")
    rows = _require_int(f, "rows", 1, max(n, 1), sec)  # 4
    cols = _require_int(f, "cols", 1, max(n, 1), sec)
    if rows * cols != n:
        raise _invalid(sec, f"rows * cols = {rows * cols} != N = {n}")
    nrc = _require_int(f, "nrc", 1, 64, sec)  # 5
    ncc = _require_int(f, "ncc", 1, 64, sec)
    if nrc > rows or ncc > cols:
        raise _invalid(sec, "more classes than rows or columns")
    chunk_rows = _require_int(f, "chunk_rows", 1, rows, sec)  # 6
    k = -(-rows // chunk_rows)
    if k > MAX_CHUNKS:
        raise SpecError("LimitExceeded", sec, f"{k} chunks (cap 2^20)")
    if f["length"] < (nrc + ncc - 1) + 2 + k:  # 7
        raise _invalid(sec, f"length {f['length']} too small")
    f["K"] = k


# ---------------------------------------------------------------------------
# Varints, stored tables, expansion (C§6, C§7)
# ---------------------------------------------------------------------------


def _corrupt(section: str, msg: str) -> SpecError:
    return SpecError("CorruptPayload", section, msg)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """C§6: unsigned LEB128, at most 10 bytes, below 2^64, minimal."""
    sec = "CODING.md §6"
    value = 0
    for k in range(10):
        if pos >= len(buf):
            raise _corrupt(sec, "varint runs past the end of the stream")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * k)
        if not byte & 0x80:
            if byte == 0 and k > 0:
                raise _corrupt(sec, "non-minimal varint")
            if value >= 1 << 64:
                raise _corrupt(sec, "varint value of 2^64 or more")
            return value, pos
    raise _corrupt(sec, "varint of more than 10 bytes")


def log_count(e: int, m: int) -> int:
    """C§7.1: count(e, m) of a log code."""
    if e == 0:
        return 0
    k, r = divmod(e - 1, 1 << m)
    return ((1 << m) + r) << k


def max_log_code(m: int) -> int:
    """C§7.1: E_m, the largest code whose count is at most 2^32 - 1."""
    e = 0
    while log_count(e + 1, m) <= MAX_COUNT:
        e += 1
    return e


class _Nibbles:
    """Reads 4-bit units, high nibble of each byte first (C§7.1)."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.start, self.count = buf, pos, 0

    def next(self) -> int:
        index = self.start + self.count // 2
        if index >= len(self.buf):
            raise _corrupt("CODING.md §7.1", "table runs past the end of the stream")
        byte = self.buf[index]
        nib = byte >> 4 if self.count % 2 == 0 else byte & 0x0F
        self.count += 1
        return nib

    def finish(self) -> int:
        """Check the pad nibble; return the position after the last byte."""
        if self.count % 2 and self.buf[self.start + self.count // 2] & 0x0F:
            raise _corrupt("CODING.md §7.1", "non-zero pad nibble")
        return self.start + (self.count + 1) // 2


def read_table(buf: bytes, pos: int, n: int) -> tuple[list[int], int]:
    """C§7.1: a stored table of n counts (mode 0 or mode 1)."""
    sec = "CODING.md §7.1"
    mode, pos = read_varint(buf, pos)
    counts = []
    if mode == 0:
        for _ in range(n):
            c, pos = read_varint(buf, pos)
            if c > MAX_COUNT:
                raise _corrupt(sec, f"count {c} above 2^32 - 1")
            counts.append(c)
    elif mode == 1:
        m, pos = read_varint(buf, pos)
        if m > 4:
            raise _corrupt(sec, f"log-code mantissa bits m = {m} > 4")
        e_max = max_log_code(m)
        nibbles = _Nibbles(buf, pos)
        e = 0
        for _ in range(n):
            z = nibbles.next()
            if z == 15:  # escape: z - 15 as three nibbles, most significant first
                z = 15 + (nibbles.next() << 8 | nibbles.next() << 4 | nibbles.next())
            e += z // 2 if z % 2 == 0 else -(z + 1) // 2  # zigzag
            if not 0 <= e <= e_max:
                raise _corrupt(sec, f"log code {e} outside 0..{e_max}")
            counts.append(log_count(e, m))
        pos = nibbles.finish()
    else:
        raise _corrupt(sec, f"table mode {mode} is neither 0 nor 1")
    if not any(counts):
        raise _corrupt(sec, "table whose counts are all 0")
    return counts, pos


def expand(counts: list[int]) -> list[int]:
    """C§7.2: counts -> frequencies summing to 2^24 - n; returns the RC§2 cdf."""
    n = len(counts)
    total = sum(counts)
    free = (1 << PRECISION) - n
    freqs = [c * free // total for c in counts]
    rest = free - sum(freqs)
    freqs[counts.index(max(counts))] += rest
    return cdf_from_freqs(freqs, PRECISION)


# ---------------------------------------------------------------------------
# Range-coded chunks (C§8, RC§3-§5)
# ---------------------------------------------------------------------------


def read_words(buf: bytes, pos: int, count: int) -> tuple[list[int], int]:
    """`count` u32 little-endian words (C§5.4 / C§8)."""
    if pos + 4 * count > len(buf):
        raise _corrupt("CODING.md §8", "words run past the end of the stream")
    words = list(struct.unpack_from(f"<{count}I", buf, pos))
    return words, pos + 4 * count


class _Chunk:
    """A range decoder on one chunk's words, with the C§8 end-of-chunk check."""

    def __init__(self, words: list[int]):
        self.nwords = len(words)
        self.dec = RangeDecoder(words, PRECISION)  # RC§4

    def symbol(self, cdf: list[int]) -> int:
        try:
            return self.dec.decode_symbol(cdf)  # RC§5
        except RangeDecoderError as exc:  # RC§5 step 3: q >= 2^24
            raise _corrupt("CODING.md §8", f"invalid data: {exc}") from None

    def finish(self) -> None:
        d = self.dec
        if d.pos != self.nwords:  # (a) all W_j words read
            raise _corrupt("CODING.md §8", f"chunk read {d.pos} of {self.nwords} words")
        if (d.point - d.lower) % (1 << 64) >= (1 << 33) - 1:  # (b)
            raise _corrupt("CODING.md §8", "end-of-chunk state check (b) fails")


def decode_chunk(words: list[int], cdf: list[int], count: int) -> list[int]:
    """Decode `count` indices with one table, then check the chunk's end."""
    chunk = _Chunk(words)
    out = [chunk.symbol(cdf) for _ in range(count)]
    chunk.finish()
    return out


# ---------------------------------------------------------------------------
# Stream coders (C§5, C§10 step 2)
# ---------------------------------------------------------------------------


def decode_stream(f: dict, buf: bytes, n: int) -> list[int]:
    """Decode one stream's bytes into its n symbols."""
    coder = f["coder"]
    if coder == "const":  # C§5.2
        return [f["value"]] * n
    if coder == "raw":
        return decode_raw_stream(f, buf, n)
    if coder == "ctx":  # 1.1, C§5.6
        return decode_ctx(f, buf, n)
    if coder == "packed":  # C§5.7, every symbol `width` bits
        return decode_packed(f, buf, [f["width"]] * n)
    if coder == "blocks":  # 1.1, C§5.8
        return decode_blocks(f, buf, n)
    if coder == "rans":  # 1.2, C§5.9
        return decode_rans(f, buf, n)
    if coder == "cat0":
        return decode_cat0(f, buf, n)
    return decode_rowcol(f, buf, n)


def decode_packed(f: dict, buf: bytes, widths: list[int]) -> list[int]:
    """C§5.7: groups of equal width, widest first, each least significant bit first."""
    sec = "CODING.md §5.7"
    out = [0] * len(widths)
    pos = 0
    for v in sorted(set(w for w in widths if w > 0), reverse=True):
        members = [e for e, w in enumerate(widths) if w == v]
        size = (len(members) * v + 7) // 8
        if pos + size > len(buf):
            raise _corrupt(sec, "stream shorter than its groups")
        group = int.from_bytes(buf[pos : pos + size], "little")
        for j, e in enumerate(members):
            out[e] = (group >> (j * v)) & ((1 << v) - 1)
        if group >> (len(members) * v):
            raise _corrupt(sec, "non-zero pad bits")
        pos += size
    if pos != len(buf):
        raise _corrupt(sec, f"stream has {len(buf)} bytes, its groups {pos}")
    for x in out:
        if not f["lo"] <= x <= f["hi"]:
            raise _corrupt(sec, f"packed symbol {x} outside {f['lo']}..{f['hi']}")
    return out


def decode_raw_stream(f: dict, buf: bytes, n: int) -> list[int]:
    """C§5.3: n fixed-width little-endian integers, each in lo..hi."""
    width, signed = f["width"], f["signed"]
    out = []
    for e in range(n):
        v = int.from_bytes(buf[e * width : (e + 1) * width], "little", signed=signed)
        if not f["lo"] <= v <= f["hi"]:
            raise _corrupt("CODING.md §5.3", f"raw symbol {v} outside {f['lo']}..{f['hi']}")
        out.append(v)
    return out


def _read_chunk_index(buf: bytes, pos: int, k: int) -> tuple[list[int], int]:
    """K varints W_j; then the length check of C§8 / C§5.5."""
    counts = []
    for _ in range(k):
        w, pos = read_varint(buf, pos)
        counts.append(w)
    if len(buf) != pos + 4 * sum(counts):
        raise _corrupt("CODING.md §8", f"stream length {len(buf)} != {pos} + 4 * {sum(counts)}")
    return counts, pos


def decode_cat0(f: dict, buf: bytes, n: int) -> list[int]:
    """C§5.4 and C§8: table, chunk index, then each chunk with its own decoder."""
    counts, pos = read_table(buf, 0, f["nsym"])
    word_counts, pos = _read_chunk_index(buf, pos, f["K"])
    cdf = expand(counts)
    chunk, offset = f["chunk"], f["offset"]
    out = []
    for j, wj in enumerate(word_counts):
        nj = min(chunk, n - j * chunk)
        words, pos = read_words(buf, pos, wj)
        out.extend(index + offset for index in decode_chunk(words, cdf, nj))
    return out


def _read_classes_and_map(buf, pos, rows, cols, nrc, ncc, sec):
    """The row and column class streams (when there is more than one class) and the table map of
    rowcol-style streams (CODING.md §5.5, §5.8): (row classes, column classes, table map, next position)."""
    row_class, col_class = [0] * rows, [0] * cols
    if nrc > 1:
        row_class, pos = _read_class_stream(buf, pos, rows, nrc)
    if ncc > 1:
        col_class, pos = _read_class_stream(buf, pos, cols, ncc)
    table_map = []
    for x in range(nrc + ncc - 1):
        m, pos = read_varint(buf, pos)
        prev = table_map[-1] if table_map else None
        if (prev is None and m != 0) or (prev is not None and m not in (prev, prev + 1)):
            raise _corrupt(sec, f"table map entry {x} = {m} breaks the 0, +0/+1 rule")
        table_map.append(m)
    return row_class, col_class, table_map, pos


def _read_class_stream(buf: bytes, pos: int, n: int, k: int) -> tuple[list[int], int]:
    """C§5.5 class stream: k counts, one varint W, W words, one chunk of n symbols."""
    counts, pos = read_table(buf, pos, k)
    nwords, pos = read_varint(buf, pos)
    words, pos = read_words(buf, pos, nwords)
    return decode_chunk(words, expand(counts), n), pos


def decode_rowcol(f: dict, buf: bytes, n: int, pos: int = 0, sign_class: list[int] | None = None) -> list[int]:
    """C§5.5: class streams, table map, tables, sign table, chunk index, chunks.

    From ``pos``; with ``sign_class`` (C§5.6.3), ``f["nsc"]`` sign tables, the sign
    of column j decoded with table ``sign_class[j]``; with ``f["by_class"]``
    (model 3) the signs class by class; with ``f["blocks_order"]`` (model 4, C§5.6.4)
    the magnitudes in the order of C§5.8 and the signs four per symbol.
    """
    sec = "CODING.md §5.5"
    rows, cols, nrc, ncc = f["rows"], f["cols"], f["nrc"], f["ncc"]
    row_class, col_class, table_map, pos = _read_classes_and_map(buf, pos, rows, cols, nrc, ncc, sec)
    ntables = table_map[-1] + 1

    cdfs = []
    for _ in range(ntables):
        counts, pos = read_table(buf, pos, f["nsym"])
        cdfs.append(expand(counts))
    sign_cdf = None
    sign_counts = []
    if f["signs"]:
        sign_cdfs = []
        for _ in range(f.get("nsc", 1)):
            counts, pos = read_table(buf, pos, 2)
            sign_counts.append(counts)
            sign_cdfs.append(expand(counts))
        classes = sign_class if sign_class is not None else [0] * cols
        sign_cdf = [sign_cdfs[classes[c]] for c in range(cols)]  # the sign table of each column
    word_counts, pos = _read_chunk_index(buf, pos, f["K"])

    if f.get("blocks_order"):  # C§5.6.4, model 4
        classes = sign_class if sign_class is not None else [0] * cols
        quads = [expand(quad_counts(c0, c1)) for c0, c1 in sign_counts]
        singles = [expand(counts) for counts in sign_counts]
        out = [0] * n
        for j, wj in enumerate(word_counts):
            words, pos = read_words(buf, pos, wj)
            first = j * f["chunk_rows"]
            last = min(rows, first + f["chunk_rows"])
            _decode_model4_chunk(f, words, first, last, row_class, col_class, table_map, cdfs,
                                 classes, quads, singles, out)
        return out

    out = []
    for j, wj in enumerate(word_counts):
        words, pos = read_words(buf, pos, wj)
        first = j * f["chunk_rows"]
        last = min(rows, first + f["chunk_rows"])
        tables = [table_map[row_class[i] + col_class[c]] for i in range(first, last) for c in range(cols)]
        out.extend(_decode_rowcol_chunk(f, words, tables, cdfs, sign_cdf, sign_class))
    return out


def _decode_rowcol_chunk(f, words, table_of, cdfs, sign_cdf, sign_class=None):
    """One rowcol chunk (C§5.5); table_of[e] = m_x of element e, in row-major order.

    Indices are decoded table by table (E_t in row-major order), then signs.
    """
    chunk = _Chunk(words)
    index = [0] * len(table_of)
    for t, cdf in enumerate(cdfs):  # tables in order; E_t in row-major order
        for e, te in enumerate(table_of):
            if te == t:
                index[e] = chunk.symbol(cdf)
    if sign_cdf is not None and f.get("by_class"):  # C§5.6.3, model 3: class 0's signs first
        values = index[:]
        cols = len(sign_cdf)
        for g in range(f["nsc"]):
            for e, magnitude in enumerate(index):
                if magnitude != 0 and sign_class[e % cols] == g and chunk.symbol(sign_cdf[e % cols]) == 0:
                    values[e] = -magnitude
    elif sign_cdf is not None:
        values = index[:]
        cols = len(sign_cdf)
        for e, magnitude in enumerate(index):
            if magnitude != 0 and chunk.symbol(sign_cdf[e % cols]) == 0:  # 0: negative
                values[e] = -magnitude
    else:
        values = [i + f["offset"] for i in index]
    chunk.finish()
    return values


def quad_counts(c0: int, c1: int) -> list[int]:
    """C§5.6.4: the 16 counts of the quad table of a sign table (c0 negative, c1 positive)."""
    total = c0 + c1
    u1 = min(255, max(1, (512 * c1 + total) // (2 * total)))
    u0 = 256 - u1
    return [u0 ** (4 - bin(d).count("1")) * u1 ** bin(d).count("1") for d in range(16)]


def blocks_order(first, last, cols, row_class, col_class, table_map, nrc):
    """C§5.8, "Column order" and "Decoding chunk j": the chunk's elements (row, column) in
    decoding order, each with its table: row class by row class, each class's runs of equal
    table along the column order P, each run row by row."""
    column_order = sorted(range(cols), key=lambda c: (col_class[c], c))
    for g in range(nrc):
        members = [i for i in range(first, last) if row_class[i] == g]
        if not members:
            continue
        tables = [table_map[g + col_class[c]] for c in column_order]
        start = 0
        while start < cols:  # a run: the column-ordered columns of one table
            end = start
            while end < cols and tables[end] == tables[start]:
                end += 1
            for i in members:
                for c in column_order[start:end]:
                    yield i, c, tables[start]
            start = end


def _decode_model4_chunk(f, words, first, last, row_class, col_class, table_map, cdfs,
                         sign_class, quads, singles, out):
    """C§5.6.4 chunk (rows first..last-1): indices in blocks order, then each sign class's
    signs, four per quad-table index, the n mod 4 left one by one with the sign table."""
    cols = f["cols"]
    chunk = _Chunk(words)
    for i, c, t in blocks_order(first, last, cols, row_class, col_class, table_map, f["nrc"]):
        out[i * cols + c] = chunk.symbol(cdfs[t])
    if f["signs"]:
        for g in range(f["nsc"]):
            members = [e for e in range(first * cols, last * cols)  # S_g, row-major
                       if out[e] != 0 and sign_class[e % cols] == g]
            signs = []
            for _ in range(len(members) // 4):
                d = chunk.symbol(quads[g])
                signs.extend((d >> b) & 1 for b in range(4))  # bit b: sign of S_g[4t + b]
            for _ in range(len(members) % 4):
                signs.append(chunk.symbol(singles[g]))
            for e, positive in zip(members, signs):
                if not positive:  # 0: negative
                    out[e] = -out[e]
    else:
        for e in range(first * cols, last * cols):
            out[e] += f["offset"]
    chunk.finish()


def decode_blocks(f: dict, buf: bytes, n: int) -> list[int]:
    """C§5.8: parameters, class streams, table map, tables, chunk index; each chunk
    row class by row class, each class's runs of equal table in column order."""
    sec = "CODING.md §5.8"
    (zo, nsym, rows, nrc, ncc, chunk_rows), pos = _read_varints(buf, 0, 6)
    offset = _unzigzag(zo)
    if not 2 <= nsym <= MAX_NSYM:
        raise _corrupt(sec, f"nsym {nsym} outside 2..2^20")
    if offset < f["lo"] or offset + nsym - 1 > f["hi"]:
        raise _corrupt(sec, "alphabet outside the symbol range")
    if not 1 <= rows <= n or n % rows:
        raise _corrupt(sec, f"rows {rows} do not divide N = {n}")
    cols = n // rows
    if not 1 <= nrc <= min(64, rows) or not 1 <= ncc <= min(64, cols):
        raise _corrupt(sec, f"class counts {nrc}, {ncc} out of range")
    if not 1 <= chunk_rows <= rows:
        raise _corrupt(sec, f"chunk_rows {chunk_rows} outside 1..rows")
    k = -(-rows // chunk_rows)
    if k > MAX_CHUNKS:
        raise _corrupt(sec, f"{k} chunks, more than 2^20")
    row_class, col_class, table_map, pos = _read_classes_and_map(buf, pos, rows, cols, nrc, ncc, sec)
    cdfs = []
    for _ in range(table_map[-1] + 1):
        counts, pos = read_table(buf, pos, nsym)
        cdfs.append(expand(counts))
    word_counts, pos = _read_chunk_index(buf, pos, k)
    out = [0] * n
    for j, wj in enumerate(word_counts):
        words, pos = read_words(buf, pos, wj)
        chunk = _Chunk(words)
        first, last = j * chunk_rows, min(rows, (j + 1) * chunk_rows)
        for i, c, t in blocks_order(first, last, cols, row_class, col_class, table_map, nrc):
            out[i * cols + c] = chunk.symbol(cdfs[t]) + offset
        chunk.finish()
    return out


def rans_freqs(counts: list[int], p: int) -> list[int]:
    """C§7.3: stored counts to rANS frequencies summing to 2^p."""
    sec = "CODING.md §7.3"
    total = sum(counts)
    z = sum(1 for c in counts if c > 0)
    if z > 1 << p:
        raise _corrupt(sec, f"{z} symbols with non-zero counts do not fit 2^{p} slots")
    free = (1 << p) - z
    g = [0 if c == 0 else 1 + (c * free) // total for c in counts]
    g[counts.index(max(counts))] += (1 << p) - sum(g)
    return g


class _Lane:
    """C§5.9: one rANS lane: its state and its 16-bit words."""

    def __init__(self, state: int, words: list[int]):
        if state < 1 << 16:
            raise _corrupt("CODING.md §5.9", f"lane state {state} below 2^16")
        self.x, self.words, self.pos = state, words, 0

    def symbol(self, g: list[int], p: int) -> int:
        slot = self.x % (1 << p)
        s, start = 0, 0
        while start + g[s] <= slot:  # the g sum to 2^p, so this stops at a symbol with g_s >= 1
            start += g[s]
            s += 1
        self.x = g[s] * (self.x >> p) + slot - start
        if self.x < 1 << 16:
            if self.pos >= len(self.words):
                raise _corrupt("CODING.md §5.9", "a lane ran out of words")
            self.x = (self.x << 16) | self.words[self.pos]
            self.pos += 1
        return s

    def finish(self) -> None:
        if self.pos != len(self.words) or self.x != 1 << 16:
            raise _corrupt("CODING.md §5.9", "a lane has words left over or does not end at state 2^16")


def _rans_chunks(buf: bytes, pos: int, k: int, lanes: int, sec: str):
    """C§5.9: the lane index at pos (K * L word counts, the lanes ending the stream), then, chunk by
    chunk, the chunk's L lanes."""
    sizes, pos = _read_varints(buf, pos, k * lanes)
    if any(w >= 1 << 62 for w in sizes):
        raise _corrupt(sec, "lane size out of range")
    if pos + sum(4 + 2 * w for w in sizes) != len(buf):
        raise _corrupt(sec, "the stream's length does not match its lane index")
    for j in range(k):
        chunk_lanes = []
        for w in sizes[j * lanes : (j + 1) * lanes]:
            state = int.from_bytes(buf[pos : pos + 4], "little")
            words = [int.from_bytes(buf[pos + 4 + 2 * i : pos + 6 + 2 * i], "little") for i in range(w)]
            chunk_lanes.append(_Lane(state, words))
            pos += 4 + 2 * w
        yield chunk_lanes


def decode_rans(f: dict, buf: bytes, n: int) -> list[int]:
    """C§5.9: the parameters, class streams, table map and tables of C§5.8 plus lanes and
    precision; the lane index; each chunk in blocks order, symbol k by lane k mod L."""
    sec = "CODING.md §5.9"
    (zo, nsym, rows, nrc, ncc, chunk_rows, lanes, p), pos = _read_varints(buf, 0, 8)
    offset = _unzigzag(zo)
    if not 2 <= nsym <= 1 << 16:
        raise _corrupt(sec, f"nsym {nsym} outside 2..2^16")
    if offset < f["lo"] or offset + nsym - 1 > f["hi"]:
        raise _corrupt(sec, "alphabet outside the symbol range")
    if not 1 <= rows <= n or n % rows:
        raise _corrupt(sec, f"rows {rows} do not divide N = {n}")
    cols = n // rows
    if not 1 <= nrc <= min(64, rows) or not 1 <= ncc <= min(64, cols):
        raise _corrupt(sec, f"class counts {nrc}, {ncc} out of range")
    if not 1 <= chunk_rows <= rows:
        raise _corrupt(sec, f"chunk_rows {chunk_rows} outside 1..rows")
    if not 1 <= lanes <= 64:
        raise _corrupt(sec, f"lanes {lanes} outside 1..64")
    if not 10 <= p <= 15:
        raise _corrupt(sec, f"precision {p} outside 10..15")
    k = -(-rows // chunk_rows)
    if k * lanes > MAX_CHUNKS:
        raise _corrupt(sec, f"{k} chunks of {lanes} lanes, more than 2^20 lanes")
    row_class, col_class, table_map, pos = _read_classes_and_map(buf, pos, rows, cols, nrc, ncc, sec)
    freqs = []
    for _ in range(table_map[-1] + 1):
        counts, pos = read_table(buf, pos, nsym)
        freqs.append(rans_freqs(counts, p))
    out = [0] * n
    for j, chunk_lanes in enumerate(_rans_chunks(buf, pos, k, lanes, sec)):
        first, last = j * chunk_rows, min(rows, (j + 1) * chunk_rows)
        for idx, (i, c, t) in enumerate(blocks_order(first, last, cols, row_class, col_class, table_map, nrc)):
            out[i * cols + c] = chunk_lanes[idx % lanes].symbol(freqs[t], p) + offset
        for lane in chunk_lanes:
            lane.finish()
    return out


# ---------------------------------------------------------------------------
# Building elements (C§4, F§7)
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# The ctx coder (C§5.6, format 1.1)
# ---------------------------------------------------------------------------

SIG_MANTISSA = (16777216, 14107901, 11863283, 9975792)  # C§5.6.2, M[0..3]
MAX_BUCKETS = 32  # C§5.6.2, nb
MAX_STEP_CLASSES = 64  # C§5.6.2, k


def _check_ctx(f: dict, n: int, lo: int, hi: int) -> None:
    """C§5.6 descriptor checks: at least one symbol, at least the model byte."""
    sec = "CODING.md §5.6"
    if n < 1:
        raise _invalid(sec, "a ctx stream codes at least one symbol")
    if f["length"] < 1:
        raise _invalid(sec, "a ctx stream holds at least its model varint")


def _unzigzag(z: int) -> int:
    """C§5.6: signed parameters are zigzag varints."""
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


def _read_varints(buf: bytes, pos: int, count: int) -> tuple[list[int], int]:
    out = []
    for _ in range(count):
        v, pos = read_varint(buf, pos)
        out.append(v)
    return out, pos


def decode_ctx(f: dict, buf: bytes, n: int) -> list[int]:
    """C§5.6: the model varint, then model 0 (order-0), 1 (lanes) or 2, 3, 4 (rowcol)."""
    model, pos = read_varint(buf, 0)
    if model == 0:
        return _decode_ctx_order0(f, buf, pos, n)
    if model == 1:
        return _decode_ctx_lanes(f, buf, pos, n)
    if model in (2, 3, 4):
        return _decode_ctx_rowcol(f, buf, pos, n, model)
    if model == 5:  # 1.2
        return _decode_ctx_model5(f, buf, pos, n)
    raise SpecError("UnsupportedCoding", "CODING.md §5.6", f"reserved model {model}")


def _decode_ctx_model5(f: dict, buf: bytes, pos: int, n: int) -> list[int]:
    """C§5.6.5: model 4's parameters plus lanes and precision, its parts with every table expanded
    by C§7.3, a lane index and lanes as in C§5.9; the magnitudes then the signs, symbol k by lane k mod L."""
    sec = "CODING.md §5.6.5"
    (zo, nsym, rows, nrc, ncc, nsc, chunk_rows, lanes, p), pos = _read_varints(buf, pos, 9)
    offset, lo, hi = _unzigzag(zo), f["lo"], f["hi"]
    if not 2 <= nsym <= 1 << 16:
        raise _corrupt(sec, f"nsym {nsym} outside 2..2^16")
    if not 1 <= rows <= n or n % rows:
        raise _corrupt(sec, f"rows {rows} do not divide N = {n}")
    cols = n // rows
    if not 1 <= nrc <= min(64, rows) or not 1 <= ncc <= min(64, cols):
        raise _corrupt(sec, f"class counts {nrc}, {ncc} out of range")
    if not 0 <= nsc <= min(64, cols):
        raise _corrupt(sec, f"nsc = {nsc} outside 0..min(64, cols)")
    if nsc >= 1 and (offset != 0 or -(nsym - 1) < lo or nsym - 1 > hi):
        raise _corrupt(sec, "signs apart need offset 0 and magnitudes within the symbol range")
    if nsc == 0 and (offset < lo or offset + nsym - 1 > hi):
        raise _corrupt(sec, "alphabet outside the symbol range")
    if not 1 <= chunk_rows <= rows:
        raise _corrupt(sec, f"chunk_rows {chunk_rows} outside 1..rows")
    if not 1 <= lanes <= 64:
        raise _corrupt(sec, f"lanes {lanes} outside 1..64")
    if not 10 <= p <= 15:
        raise _corrupt(sec, f"precision {p} outside 10..15")
    k = -(-rows // chunk_rows)
    if k * lanes > MAX_CHUNKS:
        raise _corrupt(sec, f"{k} chunks of {lanes} lanes, more than 2^20 lanes")
    sign_class = [0] * cols
    if nsc > 1:
        sign_class, pos = _read_class_stream(buf, pos, cols, nsc)
    row_class, col_class, table_map, pos = _read_classes_and_map(buf, pos, rows, cols, nrc, ncc, sec)
    mags = []
    for _ in range(table_map[-1] + 1):
        counts, pos = read_table(buf, pos, nsym)
        mags.append(rans_freqs(counts, p))
    quads, singles = [], []
    for _ in range(nsc):
        (c0, c1), pos = read_table(buf, pos, 2)
        quads.append(rans_freqs(quad_counts(c0, c1), p))
        singles.append(rans_freqs([c0, c1], p))
    out = [0] * n
    for j, chunk_lanes in enumerate(_rans_chunks(buf, pos, k, lanes, sec)):
        count = 0

        def symbol(g):
            nonlocal count
            s = chunk_lanes[count % lanes].symbol(g, p)
            count += 1
            return s

        first, last = j * chunk_rows, min(rows, (j + 1) * chunk_rows)
        for i, c, t in blocks_order(first, last, cols, row_class, col_class, table_map, nrc):
            out[i * cols + c] = symbol(mags[t])
        if nsc:
            for g in range(nsc):
                members = [e for e in range(first * cols, last * cols) if out[e] != 0 and sign_class[e % cols] == g]
                signs = []
                for _ in range(len(members) // 4):
                    d = symbol(quads[g])
                    signs.extend((d >> b) & 1 for b in range(4))
                for _ in range(len(members) % 4):
                    signs.append(symbol(singles[g]))
                for e, positive in zip(members, signs):
                    if not positive:
                        out[e] = -out[e]
        else:
            for e in range(first * cols, last * cols):
                out[e] += offset
        for lane in chunk_lanes:
            lane.finish()
    return out


def _decode_ctx_rowcol(f: dict, buf: bytes, pos: int, n: int, model: int) -> list[int]:
    """C§5.6.3 (models 2, 3) and C§5.6.4 (model 4, the same parameters and parts): offset, nsym,
    rows, nrc, ncc, nsc, chunk_rows, sign classes, then a rowcol stream's parts."""
    sec = "CODING.md §5.6.3"
    (zo, nsym, rows, nrc, ncc, nsc, chunk_rows), pos = _read_varints(buf, pos, 7)
    offset, lo, hi = _unzigzag(zo), f["lo"], f["hi"]
    if not 2 <= nsym <= MAX_NSYM:
        raise _corrupt(sec, f"nsym {nsym} outside 2..2^20")
    if not 1 <= rows <= n or n % rows:
        raise _corrupt(sec, f"rows {rows} do not divide N = {n}")
    cols = n // rows
    if not 1 <= nrc <= min(64, rows) or not 1 <= ncc <= min(64, cols):
        raise _corrupt(sec, f"class counts {nrc}, {ncc} out of range")
    if not 0 <= nsc <= min(64, cols):
        raise _corrupt(sec, f"nsc = {nsc} outside 0..min(64, cols)")
    if nsc >= 1 and (offset != 0 or -(nsym - 1) < lo or nsym - 1 > hi):
        raise _corrupt(sec, "signs apart need offset 0 and magnitudes within the symbol range")
    if nsc == 0 and (offset < lo or offset + nsym - 1 > hi):
        raise _corrupt(sec, "alphabet outside the symbol range")
    if not 1 <= chunk_rows <= rows:
        raise _corrupt(sec, f"chunk_rows {chunk_rows} outside 1..rows")
    k = -(-rows // chunk_rows)
    if k > MAX_CHUNKS:
        raise _corrupt(sec, f"{k} chunks, more than 2^20")
    sign_class = [0] * cols
    if nsc > 1:
        sign_class, pos = _read_class_stream(buf, pos, cols, nsc)
    fields = {"rows": rows, "cols": cols, "nrc": nrc, "ncc": ncc, "nsym": nsym, "signs": nsc >= 1,
              "offset": offset, "chunk_rows": chunk_rows, "K": k, "nsc": max(nsc, 1), "by_class": model == 3,
              "blocks_order": model == 4}
    return decode_rowcol(fields, buf, n, pos, sign_class)


def _decode_ctx_order0(f: dict, buf: bytes, pos: int, n: int) -> list[int]:
    """C§5.6.1: offset, nsym, chunk, then the bytes of a cat0 stream."""
    sec = "CODING.md §5.6.1"
    (zo, nsym, chunk), pos = _read_varints(buf, pos, 3)
    offset = _unzigzag(zo)
    if not 2 <= nsym <= MAX_NSYM:
        raise _corrupt(sec, f"nsym {nsym} outside 2..2^20")
    if offset < f["lo"] or offset + nsym - 1 > f["hi"]:
        raise _corrupt(sec, "alphabet outside the symbol range")
    if not 1 <= chunk <= (1 << 63) - 1:
        raise _corrupt(sec, f"chunk {chunk} outside 1..2^63-1")
    k = -(-n // chunk)
    if k > MAX_CHUNKS:
        raise _corrupt(sec, f"{k} chunks, more than 2^20")
    return decode_cat0({"nsym": nsym, "K": k, "chunk": chunk, "offset": offset}, buf[pos:], n)


def _sig_counts(beta: int) -> list[int]:
    """C§5.6.2, significance tables: the counts (zero, non-zero) of one byte."""
    t = beta % 128
    if not 4 <= t <= 95:
        raise _corrupt("CODING.md §5.6.2", f"significance byte {beta}: t = {t} outside 4..95")
    c = SIG_MANTISSA[t % 4] >> (t // 4)
    return [(1 << 24) - c, c] if beta < 128 else [c, (1 << 24) - c]


def _decode_ctx_lanes(f: dict, buf: bytes, pos: int, n: int) -> list[int]:
    """C§5.6.2: parameters, step classes, tables, chunk index, then each chunk of lanes."""
    sec = "CODING.md §5.6.2"
    (rows, flags, nb, k, d1, d2, zlo, zhi, cl), pos = _read_varints(buf, pos, 9)
    lo, hi = f["lo"], f["hi"]
    if not 1 <= rows <= n or n % rows:
        raise _corrupt(sec, f"rows {rows} do not divide N = {n}")
    if flags > 3:
        raise SpecError("UnsupportedCoding", sec, f"reserved flag bits in {flags}")
    transpose, vsign = flags & 1, (flags >> 1) & 1
    cols = n // rows
    lanes, steps = (cols, rows) if transpose else (rows, cols)
    if not 1 <= nb <= MAX_BUCKETS:
        raise _corrupt(sec, f"nb = {nb} outside 1..32")
    if not 1 <= k <= min(MAX_STEP_CLASSES, steps):
        raise _corrupt(sec, f"k = {k} outside 1..min(64, S)")
    if d1 >= steps or d2 >= steps:
        raise _corrupt(sec, "a neighbour offset is not below S")
    vlo, vhi = _unzigzag(zlo), _unzigzag(zhi)
    if not lo <= vlo <= vhi <= hi:
        raise _corrupt(sec, f"non-zero values {vlo}..{vhi} outside the symbol range {lo}..{hi}")
    if not 1 <= cl <= lanes:
        raise _corrupt(sec, f"cl = {cl} outside 1..L")
    if not lo <= 0 <= hi:
        raise _corrupt(sec, "the symbol range does not hold 0")
    nv = vhi - vlo + 1 - (1 if vlo <= 0 <= vhi else 0)
    if not 1 <= nv <= MAX_NSYM:
        raise _corrupt(sec, f"{nv} non-zero values, outside 1..2^20")
    nchunks = -(-lanes // cl)
    if nchunks > MAX_CHUNKS:
        raise _corrupt(sec, f"{nchunks} chunks, more than 2^20")
    if nchunks * steps > max(1 << 16, n // 16):
        raise _corrupt(sec, f"K * S = {nchunks * steps} exceeds max(2^16, N div 16)")
    classes = [0] * steps
    if k > 1:
        classes, pos = _read_class_stream(buf, pos, steps, k)
    x_count = nb * k * 2 ** ((d1 != 0) + (d2 != 0))
    if pos + x_count > len(buf):
        raise _corrupt(sec, "significance tables run past the end of the stream")
    sig_cdfs = [expand(_sig_counts(beta)) for beta in buf[pos : pos + x_count]]
    pos += x_count
    value_cdfs = []
    if nv >= 2:
        for _ in range(3 if vsign else 1):
            counts, pos = read_table(buf, pos, nv)
            value_cdfs.append(expand(counts))
    word_counts, pos = _read_chunk_index(buf, pos, nchunks)
    out = [0] * n
    for j, wj in enumerate(word_counts):
        words, pos = read_words(buf, pos, wj)
        chunk_lanes = range(j * cl, min(lanes, j * cl + cl))
        chunk = _Chunk(words)
        nonzero = {lane: [0] * steps for lane in chunk_lanes}
        n1 = {lane: 0 for lane in chunk_lanes}
        for s in range(steps):  # 1. significance, step by step
            for lane in chunk_lanes:
                b = min(nb - 1, ((2 * s + 2) // (2 * n1[lane] + 1)).bit_length() - 1)
                x = b * k + classes[s]
                for d in (d1, d2):
                    if d:
                        x = 2 * x + (1 if s >= d and nonzero[lane][s - d] else 0)
                bit = chunk.symbol(sig_cdfs[x])
                nonzero[lane][s] = bit
                n1[lane] += bit
        last = {lane: 0 for lane in chunk_lanes}  # value context: 0 none, 1 negative, 2 positive
        for s in range(steps):  # 2. the non-zero values
            for lane in chunk_lanes:
                if not nonzero[lane][s]:
                    continue
                i = chunk.symbol(value_cdfs[last[lane] if vsign else 0]) if nv >= 2 else 0
                v = vlo + i + (1 if vlo < 0 and vlo + i >= 0 else 0)
                last[lane] = 1 if v < 0 else 2
                out[s * cols + lane if transpose else lane * cols + s] = v
        chunk.finish()  # 3.
    return out


def _check_bool_bytes(raw: bytes) -> None:
    """F§7: a bool element is 0x00 or 0x01, in every representation."""
    if any(b > 1 for b in raw):
        raise _corrupt("FORMAT.md §7", "bool byte other than 0x00 or 0x01")


def build_planes(streams: list[list[int]], n: int, width: int) -> bytes:
    """C§4.3: stream k holds byte k of each element's little-endian form."""
    out = bytearray(n * width)
    for k, symbols in enumerate(streams):
        out[k::width] = bytes(symbols)
    return bytes(out)


def build_int(symbols: list[int], dtype: str) -> bytes:
    """C§4.4: each symbol is the element's integer value."""
    width, dkind = DTYPES[dtype]
    signed = dkind == "int"
    return b"".join(v.to_bytes(width, "little", signed=signed) for v in symbols)


def _binary32_of_pattern(step: int) -> np.float32:
    """C§4.5: the binary32 number s whose bit pattern is `step`."""
    return np.frombuffer(struct.pack("<I", step), dtype="<f4")[0]


def _reconstruct(symbols: list[int], dtype: str, steps) -> bytes:
    """C§4.5 reconstruction, element by element with its own step.

    `steps` holds one step per element: binary64 values for float64 tensors,
    binary32 values otherwise.  y = q * s is one IEEE multiplication with RNE,
    then the type's rounding.
    """
    if dtype == "float64":
        q = np.array(symbols, dtype=np.float64)  # exact: |q| < 2^31
        with np.errstate(over="ignore", under="ignore"):
            return (q * np.asarray(steps, dtype=np.float64)).astype("<f8").tobytes()
    q = np.array(symbols, dtype=np.float32)  # exact: |q| <= 2^24
    with np.errstate(over="ignore", under="ignore"):
        y = q * np.asarray(steps, dtype=np.float32)  # one binary32 multiplication, RNE
        if dtype == "float32":
            return y.astype("<f4").tobytes()
        if dtype == "float16":
            return y.astype("<f2").tobytes()  # RNE, overflow to inf, gradual underflow
    # bfloat16: ((u + 0x7FFF + ((u >> 16) & 1)) mod 2^32) >> 16
    u = y.view(np.uint32).astype(np.uint64)
    bits = ((u + 0x7FFF + ((u >> 16) & 1)) % (1 << 32)) >> 16
    return bits.astype("<u2").tobytes()


def build_uniform(symbols: list[int], dtype: str, step: int) -> bytes:
    """C§4.5: exact IEEE reconstruction y = q * s, then the type's rounding."""
    s = _binary32_of_pattern(step)
    if dtype == "float64":
        s = np.float64(s)  # every binary32 value is a binary64 value
    return _reconstruct(symbols, dtype, np.full(len(symbols), s))


def row_step(step: int, code: int, dtype: str):
    """C§4.6: the step of a row with code c = 8k + r.

    The exact real number s * (16 - r) * 2^-(k + 4), rounded once (RNE) to
    binary32, or to binary64 for float64 tensors. In binary64 the product and
    the scaling are both exact, so one conversion does the rounding.
    """
    r, k = code & 7, code >> 3
    exact = np.float64(_binary32_of_pattern(step)) * np.float64(16 - r) * 2.0 ** -(k + 4)
    return exact if dtype == "float64" else np.float32(exact)


def build_uniform_rows(codes: list[int], symbols: list[int], dtype: str, step: int) -> bytes:
    """C§4.6: row i (C = N / R elements in row-major order) uses s_i."""
    rows = len(codes)
    per_row = len(symbols) // rows if rows else 0
    steps = []
    for c in codes:
        steps.extend([row_step(step, c, dtype)] * per_row)
    return _reconstruct(symbols, dtype, steps)


def build_fields(rec: dict, payload: bytes) -> bytes:
    """C§4.9: u_e = s_e * 2^(W-1) + h_e * 2^r + a_e * 2^(t_i), as W-bit little-endian patterns."""
    n, width, r = rec["n"], rec["width"], rec["r"]
    parts, pos = [], 0
    for f in rec["descs"]:
        parts.append(payload[pos : pos + f["length"]])
        pos += f["length"]
    d = rec["descs"]
    signs = decode_stream(d[0], parts[0], n)
    shifts = decode_stream(d[1], parts[1], d[1]["n"])
    heads = decode_stream(d[2], parts[2], n)
    cols = n // len(shifts)
    if d[3]["coder"] == "packed":
        tails = decode_packed(d[3], parts[3], [r - shifts[e // cols] for e in range(n)])
    else:
        tails = decode_stream(d[3], parts[3], n)
    out = bytearray()
    for e in range(n):
        t = shifts[e // cols]
        if tails[e] >> (r - t):
            raise _corrupt("CODING.md §4.9", f"tail {tails[e]} wider than r - t_i = {r - t} bits")
        u = (signs[e] << (8 * width - 1)) | (heads[e] << r) | (tails[e] << t)
        out += u.to_bytes(width, "little")
    return bytes(out)


def decode_payload(rec: dict, payload: bytes) -> bytes:
    """C§10: split into streams, decode them, build the elements."""
    n, dtype, width = rec["n"], rec["dtype"], rec["width"]
    if rec["kind"] == "raw":  # C§4.2
        elements = payload
    elif rec["kind"] == "fields":
        elements = build_fields(rec, payload)
    else:
        streams, pos = [], 0
        for f in rec["descs"]:  # each stream has its own symbol count (C§10 step 2)
            streams.append(decode_stream(f, payload[pos : pos + f["length"]], f["n"]))
            pos += f["length"]
        if rec["kind"] == "planes":
            elements = build_planes(streams, n, width)
        elif rec["kind"] == "int":
            elements = build_int(streams[0], dtype)
        elif rec["kind"] == "uniform":
            elements = build_uniform(streams[0], dtype, rec["step"])
        elif rec["kind"] == "codebook":  # C§4.8: element e is level q_e + z
            levels = [b.to_bytes(width, "little") for b in streams[0]]
            if any(not 0 <= q + rec["zero"] < rec["levels"] for q in streams[1]):
                raise _corrupt("CODING.md §4.8", "a codebook index lies outside the levels")
            elements = b"".join(levels[q + rec["zero"]] for q in streams[1])
        else:  # uniform_rows: stream 0 the row step codes, stream 1 the indices
            elements = build_uniform_rows(streams[0], streams[1], dtype, rec["step"])
    if dtype == "bool":  # C§10 step 4, F§7
        _check_bool_bytes(elements)
    return elements


# ---------------------------------------------------------------------------
# The whole file (F§10)
# ---------------------------------------------------------------------------


def decode(data: bytes) -> tuple[dict, dict]:
    """Decode and verify a whole file.  Returns (metadata, tensors)."""
    metadata, tensors, _ = decode_all(data)
    return metadata, tensors


def decode_all(data: bytes) -> tuple[dict, dict, dict]:
    """Decode and verify a whole file.  Returns (metadata, tensors, stored files)."""
    data = bytes(data)
    hlen = check_preamble(data)  # phase 1, steps 1-6
    tree = parse_header(data[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen])  # steps 7-8
    align, metadata, records, files = check_top_level(tree)  # step 9
    data_start = check_layout(data, hlen, align, records, files)  # phase 2
    for rec in records:  # phase 3
        check_repr(rec)
    check_padding(data, hlen, data_start, records + files)  # verification (F§10)
    tensors = {}
    for rec in records:  # phase 4
        start = data_start + rec["offset"]
        payload = data[start : start + rec["length"]]
        if zlib.crc32(payload) != rec["crc32"]:
            raise SpecError("PayloadChecksumMismatch", "FORMAT.md §10 step 16", rec["name"])
        tensors[rec["name"]] = (rec["dtype"], rec["shape"], decode_payload(rec, payload))
    stored = {}
    for f in files:  # verification: the stored files' CRC-32, after the tensors (F§10)
        start = data_start + f["offset"]
        blob = data[start : start + f["length"]]
        if zlib.crc32(blob) != f["crc32"]:
            raise SpecError("PayloadChecksumMismatch", "FORMAT.md §6.6", f"stored file {f['name']!r}")
        stored[f["name"]] = blob
    return metadata, tensors, stored


def decode_file(data: bytes) -> dict[str, tuple[str, list[int], bytes]]:
    """Map each tensor name to (dtype, shape, little-endian row-major bytes)."""
    return decode(data)[1]


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path, "rb") as fh:
            try:
                meta, result, stored = decode_all(fh.read())
            except SpecError as exc:
                print(f"{path}: REJECTED {exc}")
                continue
        print(f"{path}: {len(result)} tensors, {len(stored)} stored files, metadata {meta}")
        for name, (dtype, shape, raw) in result.items():
            print(f"  {name}: {dtype} {shape} {len(raw)} bytes")
        for name, blob in stored.items():
            print(f"  file {name}: {len(blob)} bytes")
