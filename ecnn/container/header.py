"""The header: one MessagePack map, parsed strictly (spec/FORMAT.md, "Header").

``TOP_FIELDS`` and ``RECORD_FIELDS`` list every field with its type and range.
The reader checks each record against them as soon as the parser has read it,
and keeps only what the tables use, so parsing takes memory in proportion to
the header's size whatever it holds (see "MessagePack" below); the writer emits
fields in table order and runs the same checks on what it is about to write.

Unknown keys: a key that starts with ``_`` is ancillary and a decoder ignores
it (its value is checked as MessagePack, then dropped: it is not in the parsed
header); any other unknown key means the file needs a newer decoder
(:class:`~ecnn.errors.UnknownField`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from ecnn import dtypes
from ecnn.container import format as fmt
from ecnn.container.mpack import ARRAY, DROPPED_MAP, MAP, DroppedArray, DroppedMap, Failed, Reader, malformed
from ecnn.errors import (
    BadFileName,
    FormatError,
    InvalidField,
    LimitExceeded,
    MalformedHeader,
    UnknownField,
    UnsupportedCoding,
)


def _is_uint(v, hi: int) -> bool:
    return type(v) is int and 0 <= v <= hi


def _check_align(v) -> None:
    if not _is_uint(v, fmt.MAX_ALIGN) or v == 0 or v & (v - 1):
        raise InvalidField(f"align must be a power of two in [1, {fmt.MAX_ALIGN}], got {v!r}")


def _check_metadata(v) -> None:
    if not isinstance(v, dict):
        raise InvalidField("metadata must be a map")
    if len(v) > fmt.MAX_METADATA_ENTRIES:
        raise LimitExceeded(f"metadata has more than {fmt.MAX_METADATA_ENTRIES} entries")
    for k, val in v.items():
        if type(k) is not str or type(val) is not str:
            raise InvalidField("metadata keys and values must be strings")


def _check_tensors(v) -> None:
    if not isinstance(v, list):
        raise InvalidField("tensors must be an array")
    if len(v) > fmt.MAX_TENSORS:
        raise LimitExceeded(f"more than {fmt.MAX_TENSORS} tensors")
    for rec in v:
        check_map(rec, RECORD_FIELDS, "tensor record")


def _check_name(v) -> None:
    if type(v) is not str:
        raise InvalidField("tensor name must be a string")
    n = len(v.encode("utf-8"))
    if not 1 <= n <= fmt.MAX_NAME_BYTES:
        raise InvalidField(f"tensor name must be 1..{fmt.MAX_NAME_BYTES} UTF-8 bytes")


def _check_dtype(v) -> None:
    if type(v) is not str or v not in dtypes.BY_NAME:
        raise UnsupportedCoding(f"unknown dtype {v!r}")


def _check_shape(v) -> None:
    if not isinstance(v, list):
        raise InvalidField("shape must be an array")
    if len(v) > fmt.MAX_NDIM:
        raise LimitExceeded(f"more than {fmt.MAX_NDIM} dimensions")
    for d in v:
        if not _is_uint(d, fmt.MAX_DIM):
            raise InvalidField(f"shape entries must be integers in [0, {fmt.MAX_DIM}]")
    product = 1
    for d in v:
        product *= d or 1
    if product > fmt.MAX_DIM:
        raise LimitExceeded(f"the non-zero dimensions multiply to more than 2^48 ({product})")


def _check_u64(v) -> None:
    if not _is_uint(v, (1 << 64) - 1):
        raise InvalidField(f"expected an unsigned integer, got {v!r}")


def _check_u32(v) -> None:
    if not _is_uint(v, 0xFFFFFFFF):
        raise InvalidField(f"expected a 32-bit unsigned integer, got {v!r}")


def _check_repr(v) -> None:
    if not isinstance(v, dict) or type(v.get("kind")) is not str:
        raise InvalidField("repr must be a map with a string 'kind'")


def _check_streams(v) -> None:
    if not isinstance(v, list):
        raise InvalidField("streams must be an array")
    if len(v) > fmt.MAX_STREAMS:
        raise LimitExceeded(f"more than {fmt.MAX_STREAMS} streams in one tensor")


def _check_file_name(v) -> None:
    if type(v) is not str or not 1 <= len(v.encode("utf-8")) <= fmt.MAX_NAME_BYTES:
        raise InvalidField(f"stored file name must be a string of 1..{fmt.MAX_NAME_BYTES} UTF-8 bytes")
    why = fmt.file_name_problem(v)
    if why is not None:
        raise BadFileName(f"stored file name {v[:80]!r} is refused: {why}")


def _check_files(v) -> None:
    if not isinstance(v, list):
        raise InvalidField("files must be an array")
    if len(v) > fmt.MAX_FILES:
        raise LimitExceeded(f"more than {fmt.MAX_FILES} stored files")
    for rec in v:
        check_map(rec, FILE_FIELDS, "file record")


@dataclass(frozen=True)
class Field:
    check: Callable[[Any], None]
    doc: str


TOP_FIELDS: dict[str, Field] = {
    "align": Field(_check_align, "payload alignment in bytes"),
    "metadata": Field(_check_metadata, "user metadata, string to string"),
    "tensors": Field(_check_tensors, "tensor records, in payload order"),
}

# Fields of the top-level map that may be left out (version 1.3): checked, in this order, after TOP_FIELDS.
OPTIONAL_TOP_FIELDS: dict[str, Field] = {
    "files": Field(_check_files, "stored file records, in payload order after the tensors' (1.3)"),
}

FILE_FIELDS: dict[str, Field] = {
    "name": Field(_check_file_name, "relative POSIX path, unique in the file"),
    "offset": Field(_check_u64, "payload offset from the start of the data section"),
    "length": Field(_check_u64, "payload length in bytes"),
    "crc32": Field(_check_u32, "CRC-32 of the payload"),
}

RECORD_FIELDS: dict[str, Field] = {
    "name": Field(_check_name, "tensor name, unique in the file"),
    "dtype": Field(_check_dtype, "element type name"),
    "shape": Field(_check_shape, "dimensions, outermost first"),
    "offset": Field(_check_u64, "payload offset from the start of the data section"),
    "length": Field(_check_u64, "payload length in bytes"),
    "crc32": Field(_check_u32, "CRC-32 of the payload"),
    "repr": Field(_check_repr, "representation: how values map to symbol streams"),
    "streams": Field(_check_streams, "stream descriptors, in payload order"),
}


def check_map(obj, fields: dict[str, Field], what: str, optional: dict[str, Field] | None = None) -> None:
    """Check a map against a field table: every field present and valid, no unknown ones.

    ``optional`` fields are checked, after the others, where they are present.
    """
    optional = optional or {}
    if not isinstance(obj, dict):
        raise InvalidField(f"{what} must be a map")
    for key in obj:
        if type(key) is not str:
            raise InvalidField(f"{what} keys must be strings")
        if key not in fields and key not in optional and not key.startswith("_"):
            raise UnknownField(f"unknown field {key!r} in {what}")
    for key, field in fields.items():
        if key not in obj:
            raise InvalidField(f"{what} lacks required field {key!r}")
        field.check(obj[key])
    for key, field in optional.items():
        if key in obj:
            field.check(obj[key])


# --- MessagePack -------------------------------------------------------------
#
# The header is parsed by hand rather than by msgpack.unpackb: a generic parser
# builds every object before anything is checked, so a header of one-byte empty
# arrays costs about 64 bytes of memory per header byte. This parser builds only
# what the field tables can use, and checks each tensor record as soon as it
# ends (spec/FORMAT.md, section 9.3):
#
# * values of ancillary keys, and arrays or maps where a field wants a scalar,
#   are checked against section 6.1 and then dropped (a shared marker stands in
#   for a dropped container, so the field check still fails as it would);
# * at most fmt.MAX_NDIM shape entries and fmt.MAX_STREAMS descriptors are kept, and of
#   a repr map or stream descriptor its kind or coder and at most _KEEP entries;
# * once a record fails its checks, the records after it are only parsed, and
#   the error is kept for the moment the checks of section 10 reach it; likewise
#   the descriptors after one that is certain to fail its checks (CODING.md,
#   section 9, step 4) are only parsed and counted;
# * duplicate keys: a map of at most 16 entries keeps its keys; a larger one
#   keeps only their offsets and parses them again when it ends.
#
# Errors come in the order of spec/FORMAT.md, section 6.1: the parse-time rules
# where they occur, then the first object too deep or a float (recorded while
# parsing, raised when the parse has ended), then the field checks.

_KEEP = 16  # entries of a repr map or stream descriptor kept besides its kind or coder
# Short coder names are kept once rather than once per record (a memory saving, not a check).
_INTERN_MAX = 16  # bytes of a name worth keeping once
_INTERN_COUNT = 64  # distinct names kept at most
_DTYPE_NAMES = {n: n for n in dtypes.BY_NAME}


class _Parser(Reader):
    """The header's fields on a strict reader: each record checked as soon as it ends."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.names: dict[str, str] = {}

    def intern(self, name: str) -> str:
        """One copy of each short name for the whole header (descriptors repeat a few coder names)."""
        kept = self.names.get(name)
        if kept is not None:
            return kept
        if len(name) <= _INTERN_MAX and len(self.names) < _INTERN_COUNT:
            self.names[name] = name
        return name

    # --- the field tables' containers ---

    def root(self):
        n = self.container(0, MAP)
        if n is None:
            self.value(0, False)
            return None  # not a map: InvalidField, once the parse is done
        return self.fields(n, 0, _TOP_BUILD, "header")

    def fields(self, n: int, depth: int, build: dict, what: str):
        """A map checked against a field table: the defined fields built, ancillary values dropped.

        Returns the fields, or a Failed with the first bad key in stored order (spec/FORMAT.md 6.2).
        """
        out: dict = {}
        err = None

        def entry(key, d):
            nonlocal err
            if err is None:
                if type(key) is not str:
                    err = InvalidField(f"{what} keys must be strings")
                elif key in build:
                    out[key] = build[key](self, d)
                    return
                elif not key.startswith("_"):
                    err = UnknownField(f"unknown field {key!r} in {what}")
            self.value(d, False)

        self.entries(n, depth, entry)
        return Failed(err) if err is not None else out

    def metadata(self, depth: int):
        n = self.container(depth, MAP)
        if n is None:
            return self.value(depth)
        out: dict | None = {}

        def entry(key, d):
            nonlocal out
            v = self.value(d, out is not None)
            if out is not None:
                if type(key) is str and type(v) is str:
                    out[key] = v
                else:
                    out = None

        self.entries(n, depth, entry)
        return out if out is not None else Failed(InvalidField("metadata keys and values must be strings"))

    def tensors(self, depth: int):
        n = self.container(depth, ARRAY)
        if n is None:
            return self.value(depth)
        records = []
        for i in range(n):
            r = self.record(depth + 1)
            if isinstance(r, Failed):  # the records after it cannot be reached by the checks
                self.skip(n - i - 1, depth)
                return r
            records.append(r)
        return records

    def files(self, depth: int):
        n = self.container(depth, ARRAY)
        if n is None:
            return self.value(depth)
        if n > fmt.MAX_FILES:
            self.skip(n, depth)
            return Failed(LimitExceeded(f"more than {fmt.MAX_FILES} stored files"))
        out = []
        for i in range(n):
            r = self.file_record(depth + 1)
            if isinstance(r, Failed):  # the records after it cannot be reached by the checks
                self.skip(n - i - 1, depth)
                return r
            out.append(r)
        return out

    def file_record(self, depth: int):
        n = self.container(depth, MAP)
        if n is None:
            self.value(depth, False)
            return Failed(InvalidField("file record must be a map"))
        rec = self.fields(n, depth, _FILE_BUILD, "file record")
        if isinstance(rec, Failed):
            return rec
        try:
            for key, field in FILE_FIELDS.items():
                if key not in rec:
                    raise InvalidField(f"file record lacks required field {key!r}")
                field.check(rec[key])
        except FormatError as e:
            return Failed(e)
        return {k: rec[k] for k in FILE_FIELDS}

    def record(self, depth: int):
        n = self.container(depth, MAP)
        if n is None:
            self.value(depth, False)
            return Failed(InvalidField("tensor record must be a map"))
        rec = self.fields(n, depth, _RECORD_BUILD, "tensor record")
        if isinstance(rec, Failed):
            return rec
        try:
            for key, field in RECORD_FIELDS.items():
                if key not in rec:
                    raise InvalidField(f"tensor record lacks required field {key!r}")
                v = rec[key]
                if isinstance(v, Failed):
                    raise v.error
                field.check(v)
        except FormatError as e:
            return Failed(e)
        return {k: rec[k] for k in RECORD_FIELDS}

    def dtype(self, depth: int):
        v = self.value(depth)
        return _DTYPE_NAMES.get(v, v) if type(v) is str else v

    def shape(self, depth: int):
        n = self.container(depth, ARRAY)
        if n is None:
            return self.value(depth)
        if n > fmt.MAX_NDIM:
            self.skip(n, depth)
            return Failed(LimitExceeded(f"more than {fmt.MAX_NDIM} dimensions"))
        return [self.value(depth + 1) for _ in range(n)]

    def streams(self, depth: int):
        n = self.container(depth, ARRAY)
        if n is None:
            return self.value(depth)
        if n > fmt.MAX_STREAMS:
            self.skip(n, depth)
            return Failed(LimitExceeded(f"more than {fmt.MAX_STREAMS} streams in one tensor"))
        out = []
        for i in range(n):
            desc, fails = self.descriptor(depth + 1)
            out.append(desc)
            if fails:  # CODING.md 9 checks the descriptors in order and stops at this one
                self.skip(n - i - 1, depth)
                out += [DROPPED_MAP] * (n - i - 1)
                break
        return out

    def descriptor(self, depth: int):
        """A stream descriptor, and whether it is certain to fail CODING.md 9, step 4."""
        n = self.container(depth, MAP)
        if n is None:
            return self.value(depth), True
        out, fails = self.coded_map(n, depth, "coder")
        coder, length = out.get("coder"), out.get("length")
        if type(coder) is not str or type(length) is not int or not 0 <= length < 1 << 63:
            return out, True  # CODING.md 9, step 4.3 or 4.6 fails, or an earlier one
        out["coder"] = self.intern(coder)
        return out, fails

    def repr_map(self, depth: int):
        n = self.container(depth, MAP)
        if n is None:
            return self.value(depth)
        return self.coded_map(n, depth, "kind")[0]

    def coded_map(self, n: int, depth: int, main: str):
        """A repr map or stream descriptor, checked later (CODING.md 9): its ``main`` key, the first
        key that is not a string, and at most _KEEP other entries; ancillary values dropped.

        Returns the map and whether it is certain to fail: a key is not a string, or there are more
        entries than any kind or coder defines (then the kept ones include a key it does not define).
        """
        out: dict = {}
        kept = 0
        fails = nonstr = False

        def entry(key, d):
            nonlocal kept, fails, nonstr
            if type(key) is str:
                if key == main:
                    out[key] = self.value(d)
                    return
                if key.startswith("_"):
                    self.value(d, False)
                    return
                if kept < _KEEP:
                    kept += 1
                    out[key] = self.value(d)
                    return
                fails = True  # more keys than any kind or coder defines
            elif not isinstance(key, (DroppedMap, DroppedArray)):  # those fail when the map ends
                fails = True
                if not nonstr:
                    nonstr = True
                    out[key] = self.value(d)
                    return
            self.value(d, False)

        self.entries(n, depth, entry)
        return out, fails


_TOP_BUILD = {
    "align": lambda p, d: p.value(d),
    "metadata": _Parser.metadata,
    "tensors": _Parser.tensors,
    "files": _Parser.files,
}
_FILE_BUILD = {k: (lambda p, d: p.value(d)) for k in FILE_FIELDS}
_RECORD_BUILD = {
    "name": lambda p, d: p.value(d),
    "dtype": _Parser.dtype,
    "shape": _Parser.shape,
    "offset": lambda p, d: p.value(d),
    "length": lambda p, d: p.value(d),
    "crc32": lambda p, d: p.value(d),
    "repr": _Parser.repr_map,
    "streams": _Parser.streams,
}


def decode(data: bytes) -> dict:
    """Parse header bytes strictly and check them against the field tables.

    Memory grows with the parts of the header the tables use, not with the
    header's size alone (see the notes above ``MAX_DEPTH``).

    Raises:
        MalformedHeader, DuplicateKey, InvalidField, UnknownField, LimitExceeded, UnsupportedCoding.
    """
    p = _Parser(bytes(data))
    try:
        top = p.root()
    except RecursionError:  # only a caller's own deep stack leaves too little room for 256 levels
        raise MalformedHeader("the header nests too deep for the stack left to the parser") from None
    if p.pos != p.end:
        raise malformed("bytes after the header map")
    if p.issue is not None:
        raise p.issue
    if isinstance(top, Failed):
        raise top.error
    if not isinstance(top, dict):
        raise InvalidField("header must be a map")
    for key, field in TOP_FIELDS.items():
        if key not in top:
            raise InvalidField(f"header lacks required field {key!r}")
        v = top[key]
        if isinstance(v, Failed):
            raise v.error
        if key != "tensors":
            field.check(v)
        elif not isinstance(v, list):  # the records were checked as they were parsed
            raise InvalidField("tensors must be an array")
    out = {k: top[k] for k in TOP_FIELDS}
    if "files" in top:
        v = top["files"]
        if isinstance(v, Failed):
            raise v.error
        if not isinstance(v, list):  # the records were checked as they were parsed
            raise InvalidField("files must be an array")
        out["files"] = v
    return out


def _ordered(obj: dict, fields: dict[str, Field]) -> dict:
    out = {k: obj[k] for k in fields}
    out.update({k: v for k, v in obj.items() if k not in fields})
    return out


def encode(header: dict) -> bytes:
    """Serialize a header: fields in table order, checked as a reader would check them."""
    check_map(header, TOP_FIELDS, "header", OPTIONAL_TOP_FIELDS)
    top = _ordered(header, TOP_FIELDS)
    top["tensors"] = [_ordered(r, RECORD_FIELDS) for r in header["tensors"]]
    if "files" in header:
        top["files"] = [_ordered(r, FILE_FIELDS) for r in header["files"]]
    data = msgpack.packb(top, use_bin_type=True)
    if len(data) > fmt.MAX_HEADER_LENGTH:
        raise LimitExceeded("header would exceed the format's 64 MiB cap")
    return data
