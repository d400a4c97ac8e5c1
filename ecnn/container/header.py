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

import re
import struct
from array import array
from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from ecnn import dtypes
from ecnn.container import format as fmt
from ecnn.errors import (
    DuplicateKey,
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


@dataclass(frozen=True)
class Field:
    check: Callable[[Any], None]
    doc: str


TOP_FIELDS: dict[str, Field] = {
    "align": Field(_check_align, "payload alignment in bytes"),
    "metadata": Field(_check_metadata, "user metadata, string to string"),
    "tensors": Field(_check_tensors, "tensor records, in payload order"),
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


def check_map(obj, fields: dict[str, Field], what: str) -> None:
    """Check a map against a field table: every field present and valid, no unknown ones."""
    if not isinstance(obj, dict):
        raise InvalidField(f"{what} must be a map")
    for key in obj:
        if type(key) is not str:
            raise InvalidField(f"{what} keys must be strings")
        if key not in fields and not key.startswith("_"):
            raise UnknownField(f"unknown field {key!r} in {what}")
    for key, field in fields.items():
        if key not in obj:
            raise InvalidField(f"{what} lacks required field {key!r}")
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

MAX_DEPTH = 16
MAX_NESTING = 256  # spec/FORMAT.md 6.1: an object deeper than this stops the parse where it starts
_SMALL_MAP = 16
_KEEP = 16  # entries of a repr map or stream descriptor kept besides its kind or coder
# Short coder names are kept once rather than once per record (a memory saving, not a check).
_INTERN_MAX = 16  # bytes of a name worth keeping once
_INTERN_COUNT = 64  # distinct names kept at most
_DTYPE_NAMES = {n: n for n in dtypes.BY_NAME}

# Objects of one byte with nothing inside: fixints, nil, booleans, "", [] and {}.
_ONE_BYTE_RUN = re.compile(rb"[\x00-\x7f\x80\x90\xa0\xc0\xc2\xc3\xe0-\xff]+")
_ONE_BYTE = frozenset(b for b in range(256) if _ONE_BYTE_RUN.match(bytes([b])))
_U = {0xCC: struct.Struct(">B"), 0xCD: struct.Struct(">H"), 0xCE: struct.Struct(">I"), 0xCF: struct.Struct(">Q")}
_S = {0xD0: struct.Struct(">b"), 0xD1: struct.Struct(">h"), 0xD2: struct.Struct(">i"), 0xD3: struct.Struct(">q")}
_LEN = {0xD9: struct.Struct(">B"), 0xDA: struct.Struct(">H"), 0xDB: struct.Struct(">I")}
_N16, _N32 = struct.Struct(">H"), struct.Struct(">I")
_F32, _F64 = struct.Struct(">f"), struct.Struct(">d")
_MAP, _ARRAY = 0, 1


class _DroppedArray(tuple):
    """Stands in for an array that was checked and not kept (packs as an empty array)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "[...]"


class _DroppedMap(dict):
    """Stands in for a map that was checked and not kept: empty and read-only."""

    __slots__ = ()

    def _read_only(self, *args, **kwargs):
        raise TypeError("a map dropped from the header is read-only")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __repr__(self) -> str:
        return "{...}"


DROPPED_ARRAY, DROPPED_MAP = _DroppedArray(), _DroppedMap()


class _Failed:
    """A value whose check is certain to fail: the error, raised when the checks reach it."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


_TRUE, _FALSE, _NIL, _CONTAINER = object(), object(), object(), object()


def _key_identity(k):
    """Keys compare as a type and a value (spec/FORMAT.md 6.1): 1, 1.0 and true differ."""
    t = type(k)
    if t is str or t is int:
        return k
    if t is bool:
        return _TRUE if k else _FALSE
    if k is None:
        return _NIL
    return ("float", k)  # 0.0 equals -0.0; a NaN equals nothing


def _malformed(what: str) -> MalformedHeader:
    return MalformedHeader(f"header is not valid MessagePack: {what}")


class _Parser:
    def __init__(self, data: bytes):
        self.buf = data
        self.end = len(data)
        self.pos = 0
        self.issue: FormatError | None = None  # the first object too deep, or a float
        self.names: dict[str, str] = {}

    def intern(self, name: str) -> str:
        """One copy of each short name for the whole header (descriptors repeat a few coder names)."""
        kept = self.names.get(name)
        if kept is not None:
            return kept
        if len(name) <= _INTERN_MAX and len(self.names) < _INTERN_COUNT:
            self.names[name] = name
        return name

    def type_byte(self, depth: int) -> int:
        """The first byte of the object at ``pos``, after the nesting rules for its depth."""
        if depth > MAX_NESTING:
            raise MalformedHeader(f"the header nests more than {MAX_NESTING} levels deep")
        if depth > MAX_DEPTH and self.issue is None:
            self.issue = MalformedHeader(f"the header nests deeper than {MAX_DEPTH} levels")
        if self.pos >= self.end:
            raise _malformed("truncated")
        return self.buf[self.pos]

    def take(self, n: int) -> int:
        p = self.pos
        if p + n > self.end:
            raise _malformed("truncated")
        self.pos = p + n
        return p

    def container(self, depth: int, want: int) -> int | None:
        """If the object at ``pos`` is a map (``want=_MAP``) or an array, read its header and return its size."""
        t = self.type_byte(depth)
        if want == _MAP:
            if 0x80 <= t <= 0x8F:
                self.pos += 1
                return t & 0x0F
            if t == 0xDE or t == 0xDF:
                return self.map_size(t)
        else:
            if 0x90 <= t <= 0x9F:
                self.pos += 1
                return t & 0x0F
            if t == 0xDC or t == 0xDD:
                return self.array_size(t)
        return None

    def map_size(self, t: int) -> int:
        s = _N16 if t == 0xDE else _N32
        n = s.unpack_from(self.buf, self.take(1 + s.size) + 1)[0]
        if n > fmt.MAX_METADATA_ENTRIES:
            raise _malformed(f"a map of {n} entries (at most {fmt.MAX_METADATA_ENTRIES})")
        return n

    def array_size(self, t: int) -> int:
        s = _N16 if t == 0xDC else _N32
        n = s.unpack_from(self.buf, self.take(1 + s.size) + 1)[0]
        if n > fmt.MAX_TENSORS:
            raise _malformed(f"an array of {n} elements (at most {fmt.MAX_TENSORS})")
        return n

    def string(self, n: int, build: bool):
        p = self.take(n)
        try:
            s = self.buf[p : p + n].decode("utf-8")  # strict: no overlong forms, no surrogates
        except UnicodeDecodeError:
            raise _malformed("a string is not valid UTF-8") from None
        return s if build else None

    def value(self, depth: int, build: bool = True):
        """Parse one object: a scalar is returned (``build``), a container checked and dropped."""
        if depth > MAX_DEPTH:
            t = self.type_byte(depth)
        else:
            pos = self.pos
            if pos >= self.end:
                raise _malformed("truncated")
            t = self.buf[pos]
            if 0xA0 <= t <= 0xBF:  # fixstr, the commonest object in a header
                q = pos + 1 + (t & 0x1F)
                if q > self.end:
                    raise _malformed("truncated")
                try:
                    v = self.buf[pos + 1 : q].decode("utf-8")  # strict: no overlong forms, no surrogates
                except UnicodeDecodeError:
                    raise _malformed("a string is not valid UTF-8") from None
                self.pos = q
                return v
        if t <= 0x7F:
            self.pos += 1
            return t
        if t >= 0xE0:
            self.pos += 1
            return t - 0x100
        if t <= 0x8F:
            self.pos += 1
            self.entries(t & 0x0F, depth, None)
            return DROPPED_MAP
        if t <= 0x9F:
            self.pos += 1
            self.skip(t & 0x0F, depth)
            return DROPPED_ARRAY
        if t <= 0xBF:
            self.pos += 1
            return self.string(t & 0x1F, build)
        if t == 0xC0:
            self.pos += 1
            return None
        if t == 0xC2 or t == 0xC3:
            self.pos += 1
            return t == 0xC3
        if t in _U:
            s = _U[t]
            return s.unpack_from(self.buf, self.take(1 + s.size) + 1)[0]
        if t in _S:
            s = _S[t]
            return s.unpack_from(self.buf, self.take(1 + s.size) + 1)[0]
        if t in _LEN:
            s = _LEN[t]
            n = s.unpack_from(self.buf, self.take(1 + s.size) + 1)[0]
            return self.string(n, build)
        if t == 0xCA or t == 0xCB:
            s = _F32 if t == 0xCA else _F64
            v = s.unpack_from(self.buf, self.take(1 + s.size) + 1)[0]
            if self.issue is None:
                self.issue = InvalidField("floating-point values are not allowed in the header")
            return v
        if t == 0xDC or t == 0xDD:
            self.skip(self.array_size(t), depth)
            return DROPPED_ARRAY
        if t == 0xDE or t == 0xDF:
            self.entries(self.map_size(t), depth, None)
            return DROPPED_MAP
        if t == 0xC1:
            raise _malformed("the reserved type byte 0xc1")
        if 0xC4 <= t <= 0xC6:
            raise MalformedHeader("MessagePack bin objects are not allowed in the header")
        raise MalformedHeader("MessagePack extension types are not allowed in the header")  # 0xc7-0xc9, 0xd4-0xd8

    def skip(self, count: int, depth: int) -> None:
        """Parse ``count`` array elements at ``depth + 1`` and keep nothing."""
        d = depth + 1
        buf, end = self.buf, self.end
        while count:
            pos = self.pos
            if pos < end and buf[pos] in _ONE_BYTE:
                if d > MAX_DEPTH:
                    self.type_byte(d)  # the nesting rules, once for the run
                if count == 1:
                    self.pos = pos + 1
                    return
                k = _ONE_BYTE_RUN.match(buf, pos, min(end, pos + count)).end() - pos
                self.pos = pos + k
                count -= k
                if not count:
                    return
            self.value(d, False)
            count -= 1

    def entries(self, count: int, depth: int, entry) -> None:
        """Parse a map's entries at ``depth + 1``: ``entry(key, depth)`` parses each value (None: skip).

        Keys that are arrays or maps and duplicate keys are reported when the map ends,
        the first in stored order (spec/FORMAT.md 6.1).
        """
        d = depth + 1
        if count == 1:  # no duplicates possible
            key = self.value(d)
            if entry is None:
                self.value(d, False)
            else:
                entry(key, d)
            if key is DROPPED_MAP or key is DROPPED_ARRAY:
                raise _malformed("a map key is an array or a map")
            return
        small = count <= _SMALL_MAP
        keys: list = []
        offsets = None if small else array("I")
        for _ in range(count):
            if not small:
                offsets.append(self.pos)
            key = self.value(d)
            if small:
                keys.append(_CONTAINER if key is DROPPED_MAP or key is DROPPED_ARRAY else _key_identity(key))
            if entry is None:
                self.value(d, False)
            else:
                entry(key, d)
        if small:
            if keys:
                _check_keys(keys)
            return
        end = self.pos
        try:
            _check_keys(self.key_at(p, d) for p in offsets)
        finally:
            self.pos = end

    def key_at(self, p: int, depth: int):
        """The identity of the key at offset ``p``, parsed again (it was checked the first time)."""
        t = self.buf[p]
        if 0x80 <= t <= 0x9F or 0xDC <= t <= 0xDF:
            return _CONTAINER
        self.pos = p
        return _key_identity(self.value(depth))

    # --- the field tables' containers ---

    def root(self):
        n = self.container(0, _MAP)
        if n is None:
            self.value(0, False)
            return None  # not a map: InvalidField, once the parse is done
        return self.fields(n, 0, _TOP_BUILD, "header")

    def fields(self, n: int, depth: int, build: dict, what: str):
        """A map checked against a field table: the defined fields built, ancillary values dropped.

        Returns the fields, or a _Failed with the first bad key in stored order (spec/FORMAT.md 6.2).
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
        return _Failed(err) if err is not None else out

    def metadata(self, depth: int):
        n = self.container(depth, _MAP)
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
        return out if out is not None else _Failed(InvalidField("metadata keys and values must be strings"))

    def tensors(self, depth: int):
        n = self.container(depth, _ARRAY)
        if n is None:
            return self.value(depth)
        records = []
        for i in range(n):
            r = self.record(depth + 1)
            if isinstance(r, _Failed):  # the records after it cannot be reached by the checks
                self.skip(n - i - 1, depth)
                return r
            records.append(r)
        return records

    def record(self, depth: int):
        n = self.container(depth, _MAP)
        if n is None:
            self.value(depth, False)
            return _Failed(InvalidField("tensor record must be a map"))
        rec = self.fields(n, depth, _RECORD_BUILD, "tensor record")
        if isinstance(rec, _Failed):
            return rec
        try:
            for key, field in RECORD_FIELDS.items():
                if key not in rec:
                    raise InvalidField(f"tensor record lacks required field {key!r}")
                v = rec[key]
                if isinstance(v, _Failed):
                    raise v.error
                field.check(v)
        except FormatError as e:
            return _Failed(e)
        return {k: rec[k] for k in RECORD_FIELDS}

    def dtype(self, depth: int):
        v = self.value(depth)
        return _DTYPE_NAMES.get(v, v) if type(v) is str else v

    def shape(self, depth: int):
        n = self.container(depth, _ARRAY)
        if n is None:
            return self.value(depth)
        if n > fmt.MAX_NDIM:
            self.skip(n, depth)
            return _Failed(LimitExceeded(f"more than {fmt.MAX_NDIM} dimensions"))
        return [self.value(depth + 1) for _ in range(n)]

    def streams(self, depth: int):
        n = self.container(depth, _ARRAY)
        if n is None:
            return self.value(depth)
        if n > fmt.MAX_STREAMS:
            self.skip(n, depth)
            return _Failed(LimitExceeded(f"more than {fmt.MAX_STREAMS} streams in one tensor"))
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
        n = self.container(depth, _MAP)
        if n is None:
            return self.value(depth), True
        out, fails = self.coded_map(n, depth, "coder")
        coder, length = out.get("coder"), out.get("length")
        if type(coder) is not str or type(length) is not int or not 0 <= length < 1 << 63:
            return out, True  # CODING.md 9, step 4.3 or 4.6 fails, or an earlier one
        out["coder"] = self.intern(coder)
        return out, fails

    def repr_map(self, depth: int):
        n = self.container(depth, _MAP)
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
            elif not isinstance(key, (_DroppedMap, _DroppedArray)):  # those fail when the map ends
                fails = True
                if not nonstr:
                    nonstr = True
                    out[key] = self.value(d)
                    return
            self.value(d, False)

        self.entries(n, depth, entry)
        return out, fails


def _check_keys(keys) -> None:
    """The first key in stored order that is an array or a map, or equal to an earlier key."""
    seen = set()
    for k in keys:
        if k is _CONTAINER:
            raise _malformed("a map key is an array or a map")
        if k in seen:
            shown = k[1] if type(k) is tuple else {_TRUE: True, _FALSE: False, _NIL: None}.get(k, k)
            raise DuplicateKey(f"duplicate key {shown!r} in a header map")
        seen.add(k)


_TOP_BUILD = {
    "align": lambda p, d: p.value(d),
    "metadata": _Parser.metadata,
    "tensors": _Parser.tensors,
}
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
        raise _malformed("bytes after the header map")
    if p.issue is not None:
        raise p.issue
    if isinstance(top, _Failed):
        raise top.error
    if not isinstance(top, dict):
        raise InvalidField("header must be a map")
    for key, field in TOP_FIELDS.items():
        if key not in top:
            raise InvalidField(f"header lacks required field {key!r}")
        v = top[key]
        if isinstance(v, _Failed):
            raise v.error
        if key != "tensors":
            field.check(v)
        elif not isinstance(v, list):  # the records were checked as they were parsed
            raise InvalidField("tensors must be an array")
    return {k: top[k] for k in TOP_FIELDS}


def _ordered(obj: dict, fields: dict[str, Field]) -> dict:
    out = {k: obj[k] for k in fields}
    out.update({k: v for k, v in obj.items() if k not in fields})
    return out


def encode(header: dict) -> bytes:
    """Serialize a header: fields in table order, checked as a reader would check them."""
    check_map(header, TOP_FIELDS, "header")
    top = _ordered(header, TOP_FIELDS)
    top["tensors"] = [_ordered(r, RECORD_FIELDS) for r in header["tensors"]]
    data = msgpack.packb(top, use_bin_type=True)
    if len(data) > fmt.MAX_HEADER_LENGTH:
        raise LimitExceeded("header would exceed the format's 64 MiB cap")
    return data
