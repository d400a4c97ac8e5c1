"""Strict MessagePack reading for the header (spec/FORMAT.md, section 6.1).

A generic parser builds every object before anything is checked, so a header
of one-byte empty arrays would cost about 64 bytes of memory per header byte.
:class:`Reader` checks the rules of section 6.1 while it reads, with every count
checked against the caps of section 9.1 before anything is allocated, and
builds only what its caller asks for; :mod:`ecnn.container.header` builds the
header's fields on it.
"""

from __future__ import annotations

import re
import struct
from array import array

from ecnn.container import format as fmt
from ecnn.errors import DuplicateKey, FormatError, InvalidField, MalformedHeader

MAX_DEPTH = 16
MAX_NESTING = 256  # spec/FORMAT.md 6.1: an object deeper than this stops the parse where it starts
_SMALL_MAP = 16

# Objects of one byte with nothing inside: fixints, nil, booleans, "", [] and {}.
_ONE_BYTE_RUN = re.compile(rb"[\x00-\x7f\x80\x90\xa0\xc0\xc2\xc3\xe0-\xff]+")
_ONE_BYTE = frozenset(b for b in range(256) if _ONE_BYTE_RUN.match(bytes([b])))
_U = {0xCC: struct.Struct(">B"), 0xCD: struct.Struct(">H"), 0xCE: struct.Struct(">I"), 0xCF: struct.Struct(">Q")}
_S = {0xD0: struct.Struct(">b"), 0xD1: struct.Struct(">h"), 0xD2: struct.Struct(">i"), 0xD3: struct.Struct(">q")}
_LEN = {0xD9: struct.Struct(">B"), 0xDA: struct.Struct(">H"), 0xDB: struct.Struct(">I")}
_N16, _N32 = struct.Struct(">H"), struct.Struct(">I")
_F32, _F64 = struct.Struct(">f"), struct.Struct(">d")
MAP, ARRAY = 0, 1


class DroppedArray(tuple):
    """Stands in for an array that was checked and not kept (packs as an empty array)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "[...]"


class DroppedMap(dict):
    """Stands in for a map that was checked and not kept: empty and read-only."""

    __slots__ = ()

    def _read_only(self, *args, **kwargs):
        raise TypeError("a map dropped from the header is read-only")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __repr__(self) -> str:
        return "{...}"


DROPPED_ARRAY, DROPPED_MAP = DroppedArray(), DroppedMap()


class Failed:
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


def malformed(what: str) -> MalformedHeader:
    return MalformedHeader(f"header is not valid MessagePack: {what}")


def _check_keys(keys) -> None:
    """The first key in stored order that is an array or a map, or equal to an earlier key."""
    seen = set()
    for k in keys:
        if k is _CONTAINER:
            raise malformed("a map key is an array or a map")
        if k in seen:
            shown = k[1] if type(k) is tuple else {_TRUE: True, _FALSE: False, _NIL: None}.get(k, k)
            raise DuplicateKey(f"duplicate key {shown!r} in a header map")
        seen.add(k)




class Reader:
    """Reads MessagePack objects from ``data`` under the rules of spec/FORMAT.md, section 6.1."""

    def __init__(self, data: bytes):
        self.buf = data
        self.end = len(data)
        self.pos = 0
        self.issue: FormatError | None = None  # the first object too deep, or a float

    def type_byte(self, depth: int) -> int:
        """The first byte of the object at ``pos``, after the nesting rules for its depth."""
        if depth > MAX_NESTING:
            raise MalformedHeader(f"the header nests more than {MAX_NESTING} levels deep")
        if depth > MAX_DEPTH and self.issue is None:
            self.issue = MalformedHeader(f"the header nests deeper than {MAX_DEPTH} levels")
        if self.pos >= self.end:
            raise malformed("truncated")
        return self.buf[self.pos]

    def take(self, n: int) -> int:
        p = self.pos
        if p + n > self.end:
            raise malformed("truncated")
        self.pos = p + n
        return p

    def container(self, depth: int, want: int) -> int | None:
        """If the object at ``pos`` is a map (``want=MAP``) or an array, read its header and return its size."""
        t = self.type_byte(depth)
        if want == MAP:
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
        if n > fmt.MAX_MAP_ENTRIES:
            raise malformed(f"a map of {n} entries (at most {fmt.MAX_MAP_ENTRIES})")
        return n

    def array_size(self, t: int) -> int:
        s = _N16 if t == 0xDC else _N32
        n = s.unpack_from(self.buf, self.take(1 + s.size) + 1)[0]
        if n > fmt.MAX_ARRAY_ELEMENTS:
            raise malformed(f"an array of {n} elements (at most {fmt.MAX_ARRAY_ELEMENTS})")
        return n

    def string(self, n: int, build: bool):
        p = self.take(n)
        try:
            s = self.buf[p : p + n].decode("utf-8")  # strict: no overlong forms, no surrogates
        except UnicodeDecodeError:
            raise malformed("a string is not valid UTF-8") from None
        return s if build else None

    def value(self, depth: int, build: bool = True):
        """Parse one object: a scalar is returned (``build``), a container checked and dropped."""
        if depth > MAX_DEPTH:
            t = self.type_byte(depth)
        else:
            pos = self.pos
            if pos >= self.end:
                raise malformed("truncated")
            t = self.buf[pos]
            if 0xA0 <= t <= 0xBF:  # fixstr, the commonest object in a header
                q = pos + 1 + (t & 0x1F)
                if q > self.end:
                    raise malformed("truncated")
                try:
                    v = self.buf[pos + 1 : q].decode("utf-8")  # strict: no overlong forms, no surrogates
                except UnicodeDecodeError:
                    raise malformed("a string is not valid UTF-8") from None
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
            raise malformed("the reserved type byte 0xc1")
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
                raise malformed("a map key is an array or a map")
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
