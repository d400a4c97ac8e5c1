"""The ``const`` and ``raw`` streams (spec/CODING.md, "Streams"): no entropy coding.

* ``const`` -- every symbol equals ``value``; no bytes.
* ``raw``   -- little-endian integers of ``width`` bytes, ``signed`` or not.
"""

from __future__ import annotations

import numpy as np

from ecnn.coder.desc import int_field
from ecnn.errors import CorruptPayload, InvalidField

CONST_KEYS = {"coder", "length", "value"}
RAW_KEYS = {"coder", "length", "width", "signed"}
DTYPES = {
    (1, False): np.dtype("u1"),
    (2, False): np.dtype("<u2"),
    (4, False): np.dtype("<u4"),
    (8, False): np.dtype("<u8"),
    (1, True): np.dtype("i1"),
    (2, True): np.dtype("<i2"),
    (4, True): np.dtype("<i4"),
    (8, True): np.dtype("<i8"),
}


def validate_const(desc: dict, count: int, lo: int, hi: int) -> None:
    """The ``const`` checks after the generic ones (:func:`ecnn.coder.streams.validate`).

    Raises:
        InvalidField: a length other than 0, or a value outside ``[lo, hi]``.
    """
    if desc["length"] != 0:
        raise InvalidField("a const stream has length 0")
    int_field(desc, "value", lo, hi)


def encode_const(value: int) -> tuple[dict, bytes]:
    """A ``const`` stream of ``value``."""
    return {"coder": "const", "length": 0, "value": int(value)}, b""


def decode_const(desc: dict, buf, count: int, out_dtype, lo: int, hi: int, runner=None) -> np.ndarray:
    return np.full(count, desc["value"], dtype=np.dtype(out_dtype))


def validate_raw(desc: dict, count: int, lo: int, hi: int) -> None:
    """The ``raw`` checks after the generic ones.

    Raises:
        InvalidField: a width outside {1, 2, 4, 8}, a non-bool ``signed``, or a wrong length.
    """
    width = int_field(desc, "width", 1, 8)
    signed = desc.get("signed")
    if type(signed) is not bool or (width, signed) not in DTYPES:
        raise InvalidField("raw stream needs width in {1,2,4,8} and a bool 'signed'")
    if desc["length"] != count * width:
        raise InvalidField(f"raw stream length {desc['length']} != {count} x {width}")


def encode_raw(values: np.ndarray, width: int, signed: bool) -> tuple[dict, bytes]:
    """A ``raw`` stream of integers that fit ``width`` bytes (``signed`` or not)."""
    data = np.ascontiguousarray(values, dtype=DTYPES[(width, signed)]).tobytes()
    return {"coder": "raw", "length": len(data), "width": width, "signed": signed}, data


def decode_raw(desc: dict, buf, count: int, out_dtype, lo: int, hi: int, runner=None) -> np.ndarray:
    """Decode a validated ``raw`` stream, checking every value against ``[lo, hi]``.

    Raises:
        CorruptPayload: a value outside ``[lo, hi]``.
    """
    raw = np.frombuffer(buf, dtype=DTYPES[(desc["width"], desc["signed"])], count=count)
    info = np.iinfo(raw.dtype)
    if count and (info.min < lo or info.max > hi):
        if int(raw.min()) < lo or int(raw.max()) > hi:
            raise CorruptPayload(f"raw stream has symbols outside [{lo}, {hi}]")
    return raw.astype(np.dtype(out_dtype))

