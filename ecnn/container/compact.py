"""The compact header of format 1.4 (spec/FORMAT.md, section 6.7).

The same fields as the MessagePack header, written as a byte string in a fixed
order: no key strings, element types, representation kinds and stream coders as
one-byte codes, integers as varints, payload offsets implied by the layout rule
(section 8) rather than stored, and each name as the bytes it shares with the
name before it plus the rest. Every payload keeps its own CRC-32.

:func:`decode` turns the bytes into the structure :func:`ecnn.container.header.decode`
returns for a MessagePack header, checked by the same field tables, so that the
layout and coding checks after it see no difference. It reads counts before
what they count and refuses any count the bytes left cannot hold, so parsing
allocates in proportion to the header's length.
"""

from __future__ import annotations

import struct

from ecnn import dtypes
from ecnn.container import format as fmt
from ecnn.errors import (
    DuplicateKey,
    InvalidField,
    LimitExceeded,
    MalformedHeader,
    UnknownField,
    UnsupportedCoding,
)

MARK = 0xC1  # the first byte: a MessagePack type byte that no MessagePack header can start with (6.1)
FLAG_METADATA = 1  # flags bit 0: a metadata block follows
FLAG_FILES = 2  # flags bit 1: a files block follows the records
FLAGS_KNOWN = FLAG_METADATA | FLAG_FILES
MAX_ALIGN_LOG2 = 12  # align 4096
MAX_VARINT_BYTES = 10

# One-byte codes (spec/FORMAT.md 6.7.3). The order is the order of the tables of
# FORMAT.md section 7 and CODING.md section 3; a new type, kind or coder gets the next code.
DTYPE_CODES: tuple[str, ...] = tuple(dtypes.BY_NAME)
KIND_CODES: tuple[str, ...] = ("raw", "planes", "int", "uniform", "uniform_rows", "codebook", "fields")
CODER_CODES: tuple[str, ...] = ("const", "raw", "cat0", "rowcol", "ctx", "packed", "blocks", "rans")

# The fields after ``kind`` or after ``coder`` and ``length``, in order, each with how it is stored:
# "u" an unsigned varint, "s" a signed (zigzag) varint, "b" one byte 0 or 1 (a boolean),
# "w" 4 bytes little-endian (a binary32 bit pattern).
KIND_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "raw": (),
    "planes": (),
    "int": (),
    "uniform": (("step", "w"),),
    "uniform_rows": (("step", "w"),),
    "codebook": (("levels", "u"), ("zero", "u")),
    "fields": (("head", "u"),),
}
CODER_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "const": (("value", "s"),),
    "raw": (("width", "u"), ("signed", "b")),
    "cat0": (("offset", "s"), ("nsym", "u"), ("chunk", "u"), ("precision", "u")),
    "rowcol": (
        ("offset", "s"),
        ("nsym", "u"),
        ("rows", "u"),
        ("cols", "u"),
        ("nrc", "u"),
        ("ncc", "u"),
        ("signs", "b"),
        ("chunk_rows", "u"),
        ("precision", "u"),
    ),
    "ctx": (),
    "packed": (("width", "u"),),
    "blocks": (),
    "rans": (),
}
_U64 = (1 << 64) - 1
_U32 = struct.Struct("<I")


# --- writing -------------------------------------------------------------------


def varint_bytes(z: int) -> bytes:
    """The unsigned LEB128 varint of a non-negative integer of any size, in its shortest form."""
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _uvarint(v: int) -> bytes:
    if type(v) is not int or not 0 <= v <= _U64:
        raise InvalidField(f"cannot store {v!r} as an unsigned varint (0..2^64-1)")
    return varint_bytes(v)


def _svarint(v: int) -> bytes:
    """Zigzag: 0, -1, 1, -2, ... as 0, 1, 2, 3, ...; the range is -2^64..2^64-1 (a varint below 2^65)."""
    if type(v) is not int or not -(1 << 64) <= v <= _U64:
        raise InvalidField(f"cannot store {v!r} as a signed varint (-2^64..2^64-1)")
    return varint_bytes(v << 1 if v >= 0 else (-v << 1) - 1)


def _string(b: bytes) -> bytes:
    return _uvarint(len(b)) + b


def _field(v, how: str) -> bytes:
    if how == "u":
        return _uvarint(v)
    if how == "s":
        return _svarint(v)
    if how == "b":
        if type(v) is not bool:
            raise InvalidField(f"expected a boolean, got {v!r}")
        return b"\x01" if v else b"\x00"
    if type(v) is not int or not 0 <= v <= 0xFFFFFFFF:
        raise InvalidField(f"expected a 32-bit unsigned integer, got {v!r}")
    return _U32.pack(v)


def _fields(obj: dict, table, what: str, written: tuple[str, ...]) -> bytes:
    """The fields of ``table``; ``written`` are the keys stored elsewhere (``kind``; ``coder`` and ``length``)."""
    extra = [k for k in obj if k not in dict(table) and k not in written]
    if extra:
        raise InvalidField(f"the compact header has no place for the field {extra[0]!r} of a {what}")
    out = bytearray()
    for key, how in table:
        if key not in obj:
            raise InvalidField(f"{what} lacks required field {key!r}")
        out += _field(obj[key], how)
    return bytes(out)


def _shared(a: bytes, b: bytes) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode(header: dict) -> bytes:
    """The compact form of a header already checked by the field tables (offsets are not stored).

    Raises:
        InvalidField: a value the compact form cannot hold (an ancillary field,
            a reserved kind or coder); such a header needs the MessagePack form.
    """
    md, files = header["metadata"], header.get("files") or []
    align = header["align"]
    out = bytearray([MARK])
    out += _uvarint((FLAG_METADATA if md else 0) | (FLAG_FILES if files else 0))
    out.append(align.bit_length() - 1)
    if md:
        out += _uvarint(len(md))
        for k, v in md.items():
            out += _string(k.encode("utf-8")) + _string(v.encode("utf-8"))
    out += _uvarint(len(header["tensors"]))
    prev = b""
    end = 0
    for rec in header["tensors"]:
        extra = [k for k in rec if k not in ("name", "dtype", "shape", "offset", "length", "crc32", "repr", "streams")]
        if extra:
            raise InvalidField(f"the compact header has no place for the field {extra[0]!r} of a tensor record")
        name = rec["name"].encode("utf-8")
        p = _shared(prev, name)
        out += _uvarint(p) + _string(name[p:])
        prev = name
        out.append(DTYPE_CODES.index(rec["dtype"]))
        out += _uvarint(len(rec["shape"])) + b"".join(_uvarint(d) for d in rec["shape"])
        out += _U32.pack(rec["crc32"])
        kind = rec["repr"]["kind"]
        if kind not in KIND_FIELDS:
            raise InvalidField(f"representation {kind!r} has no compact code")
        out.append(KIND_CODES.index(kind))
        out += _fields(rec["repr"], KIND_FIELDS[kind], "repr map", ("kind",))
        streams = rec["streams"]
        out += _uvarint(len(streams))
        if not streams:
            out += _uvarint(rec["length"])
        elif sum(s["length"] for s in streams) != rec["length"]:
            raise InvalidField("the stream lengths do not add up to the record's length")
        for s in streams:
            coder = s["coder"]
            if coder not in CODER_FIELDS:
                raise InvalidField(f"stream coder {coder!r} has no compact code")
            out.append(CODER_CODES.index(coder))
            out += _uvarint(s["length"]) + _fields(s, CODER_FIELDS[coder], "stream descriptor", ("coder", "length"))
        end = _check_offset(rec, end, align)
    if files:
        out += _uvarint(len(files))
        prev = b""
        for f in files:
            name = f["name"].encode("utf-8")
            p = _shared(prev, name)
            out += _uvarint(p) + _string(name[p:]) + _uvarint(f["length"]) + _U32.pack(f["crc32"])
            prev = name
            end = _check_offset(f, end, align)
    return bytes(out)


def _check_offset(rec: dict, end: int, align: int) -> int:
    at = fmt.align_up(end, align)
    if rec["offset"] != at:  # the compact form implies every offset (section 8)
        raise InvalidField(f"payload offset {rec['offset']} is not the one section 8 gives ({at})")
    return at + rec["length"]


# --- reading -------------------------------------------------------------------


def _malformed(what: str) -> MalformedHeader:
    return MalformedHeader(f"compact header: {what}")


class _Bytes:
    """A cursor over the header bytes; every read is checked against the end first."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 1  # after the mark

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise _malformed(f"it ends inside a field (byte {self.pos} of {len(self.data)})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise _malformed(f"it ends inside a field (byte {pos} of {len(self.data)})")
        self.pos = pos + 1
        return self.data[pos]

    def uvarint(self, limit_bits: int = 64) -> int:
        pos = self.pos
        if pos < len(self.data) and self.data[pos] < 0x80:  # the common case: one byte
            self.pos = pos + 1
            return self.data[pos]
        v = shift = 0
        for i in range(MAX_VARINT_BYTES):
            b = self.byte()
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise _malformed("a varint is not in its shortest form")
                if v >> limit_bits:
                    raise _malformed(f"a varint is 2^{limit_bits} or more")
                return v
        raise _malformed(f"a varint runs past {MAX_VARINT_BYTES} bytes")

    def svarint(self) -> int:
        z = self.uvarint(65)
        return -((z + 1) >> 1) if z & 1 else z >> 1

    def count(self, cap: int, error, what: str, each: int = 1) -> int:
        """A count, checked against its cap and then against the bytes left (``each`` bytes at least per item)."""
        n = self.uvarint()
        if n > cap:
            raise error(f"{what}: {n} (cap {cap})")
        if n * each > self.left():
            raise _malformed(f"{what}: {n} cannot fit in the {self.left()} bytes left")
        return n

    def string(self, max_bytes: int | None, what: str, prefix: bytes = b"") -> str:
        n = self.uvarint()
        if max_bytes is not None and len(prefix) + n > max_bytes:
            raise InvalidField(f"{what} is longer than {max_bytes} bytes")
        raw = prefix + self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed(f"{what} is not valid UTF-8") from None

    def name(self, prev: bytes, what: str) -> tuple[str, bytes]:
        p = self.uvarint()
        if p > len(prev):
            raise InvalidField(f"{what} shares {p} bytes with a name of {len(prev)} bytes")
        s = self.string(fmt.MAX_NAME_BYTES, what, prev[:p])
        return s, s.encode("utf-8")

    def field(self, how: str):
        if how == "u":
            return self.uvarint()
        if how == "s":
            return self.svarint()
        if how == "b":
            b = self.byte()
            if b > 1:
                raise InvalidField(f"a boolean byte is {b}, not 0 or 1")
            return b == 1
        return _U32.unpack(self.take(4))[0]

    def code(self, table: tuple[str, ...], what: str) -> str:
        c = self.byte()
        if c >= len(table):
            raise UnsupportedCoding(f"reserved {what} code {c}")
        return table[c]


def decode(data: bytes) -> dict:
    """Parse a compact header (``data[0]`` is :data:`MARK`) into the structure of ``header.decode``.

    Only the rules of spec/FORMAT.md 6.7 are checked here, in byte order; the
    caller then checks the fields (section 10, step 9) as for a MessagePack header.

    Raises:
        MalformedHeader, DuplicateKey, InvalidField, UnknownField, LimitExceeded,
        UnsupportedCoding, BadFileName.
    """
    r = _Bytes(bytes(data))
    flags = r.uvarint()
    if flags & ~FLAGS_KNOWN:
        raise UnknownField(f"compact header: reserved flag bits {flags & ~FLAGS_KNOWN:#x}")
    a = r.byte()
    if a > MAX_ALIGN_LOG2:
        raise InvalidField(f"align must be a power of two in [1, {fmt.MAX_ALIGN}], got 2^{a}")
    align = 1 << a
    metadata: dict[str, str] = {}
    if flags & FLAG_METADATA:
        n = r.count(fmt.MAX_METADATA_ENTRIES, _malformed, "metadata entries", 2)
        if n == 0:
            raise InvalidField("compact header: a metadata block of no entries")
        for _ in range(n):
            k = r.string(None, "a metadata key")  # too long: it runs past the header's end
            v = r.string(None, "a metadata value")
            if k in metadata:
                raise DuplicateKey(f"metadata key {k[:80]!r} appears twice")
            metadata[k] = v
    # A record takes 11 bytes at least: name (2), dtype, ndim, crc32 (4), kind, stream count, length or a stream.
    n = r.count(fmt.MAX_TENSORS, _malformed, "tensor records", 11)
    tensors = []
    prev = b""
    end = 0
    for _ in range(n):
        name, prev = r.name(prev, "tensor name")
        dtype = r.code(DTYPE_CODES, "dtype")
        shape = [r.uvarint() for _ in range(r.count(fmt.MAX_NDIM, LimitExceeded, "dimensions"))]
        crc = _U32.unpack(r.take(4))[0]
        kind = r.code(KIND_CODES, "representation")
        rep = {"kind": kind}
        for key, how in KIND_FIELDS[kind]:
            rep[key] = r.field(how)
        ns = r.count(fmt.MAX_STREAMS, LimitExceeded, "streams in one tensor", 2)
        streams = []
        length = r.uvarint() if ns == 0 else 0
        for _ in range(ns):
            coder = r.code(CODER_CODES, "stream coder")
            desc = {"coder": coder, "length": r.uvarint()}
            for key, how in CODER_FIELDS[coder]:
                desc[key] = r.field(how)
            length += desc["length"]
            streams.append(desc)
        offset = fmt.align_up(end, align)
        rec = {
            "name": name,
            "dtype": dtype,
            "shape": shape,
            "offset": offset,
            "length": length,
            "crc32": crc,
            "repr": rep,
            "streams": streams,
        }
        end = offset + length
        tensors.append(rec)
    out = {"align": align, "metadata": metadata, "tensors": tensors}
    if flags & FLAG_FILES:
        # A file record takes 7 bytes at least: name (2), length, crc32 (4).
        n = r.count(fmt.MAX_FILES, LimitExceeded, "stored files", 7)
        if n == 0:
            raise InvalidField("compact header: a files block of no files")
        files = []
        prev = b""
        for _ in range(n):
            name, prev = r.name(prev, "stored file name")
            length = r.uvarint()
            crc = _U32.unpack(r.take(4))[0]
            offset = fmt.align_up(end, align)
            frec = {"name": name, "offset": offset, "length": length, "crc32": crc}
            end = offset + length
            files.append(frec)
        out["files"] = files
    if r.left():
        raise _malformed(f"{r.left()} bytes after the last field")
    return out


__all__ = ["MARK", "DTYPE_CODES", "KIND_CODES", "CODER_CODES", "KIND_FIELDS", "CODER_FIELDS", "encode", "decode"]
