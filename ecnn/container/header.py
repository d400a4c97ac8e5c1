"""The header: one MessagePack map, parsed strictly (spec/FORMAT.md, "Header").

``TOP_FIELDS`` and ``RECORD_FIELDS`` list every field with its type and range.
The reader checks a parsed header against them; the writer emits fields in
table order and runs the same checks on what it is about to write.

Unknown keys: a key that starts with ``_`` is ancillary and a decoder ignores
it; any other unknown key means the file needs a newer decoder
(:class:`~ecnn.errors.UnknownField`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import msgpack

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


# --- MessagePack ----------------------------------------------------------


def _pairs_hook(pairs):
    out = {}
    seen = set()
    for k, v in pairs:
        key = (type(k), k)  # 1 and True are different keys
        if key in seen:
            raise DuplicateKey(f"duplicate key {k!r} in a header map")
        seen.add(key)
        out[k] = v
    return out


def _ext_hook(code, data):
    raise MalformedHeader("MessagePack extension types are not allowed in the header")


def decode(data: bytes) -> dict:
    """Parse header bytes strictly and check them against the field tables.

    Raises:
        MalformedHeader, DuplicateKey, InvalidField, UnknownField, LimitExceeded.
    """
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,  # keys are type-checked below, with a clearer error
            use_list=True,
            object_pairs_hook=_pairs_hook,
            ext_hook=_ext_hook,
            max_array_len=fmt.MAX_TENSORS,
            max_map_len=fmt.MAX_METADATA_ENTRIES,
            max_bin_len=0,
        )
    except (DuplicateKey, MalformedHeader):
        raise
    except Exception as e:  # msgpack raises several unrelated types on bad input
        raise MalformedHeader(f"header is not valid MessagePack: {e}") from None
    _check_types(obj)
    check_map(obj, TOP_FIELDS, "header")
    return obj


def _check_types(obj, depth: int = 0) -> None:
    """Only maps, arrays, strings, integers, booleans and nil, nested at most 16 deep."""
    if depth > 16:
        raise MalformedHeader("header nests deeper than 16 levels")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_types(k, depth + 1)
            _check_types(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_types(v, depth + 1)
    elif isinstance(obj, float):
        raise InvalidField("floating-point values are not allowed in the header")
    elif obj is not None and type(obj) not in (str, int, bool):
        # bin and extension objects (msgpack decodes the timestamp extension itself)
        raise MalformedHeader(f"MessagePack {type(obj).__name__} objects are not allowed in the header")


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
