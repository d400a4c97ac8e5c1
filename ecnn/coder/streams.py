"""Symbol streams: the unit the coders work on (spec/CODING.md, "Streams").

A stream is a sequence of ``count`` integer symbols with a descriptor (a small
dict stored in the file header) saying how its bytes code them; the coders are
listed in :data:`ecnn.coder.registry.CODERS`:

* ``const`` -- every symbol equals ``value``; no bytes.
* ``raw``   -- little-endian integers of ``width`` bytes, ``signed`` or not.
* ``cat0``  -- an order-0 categorical model over ``offset .. offset+nsym-1``:
  the stored counts as varints, the number of words of each chunk as varints,
  then the range coder's 32-bit words, little-endian.
* ``rowcol`` -- order-0 tables chosen by row and column classes (``ecnn.coder.rowcol``).
* ``packed`` -- (format 1.1) bit fields, no entropy coding.
* ``ctx``   -- (format 1.1) a descriptor of ``coder`` and ``length`` only; the
  stream starts with its model and parameters: order-0, or lane contexts for
  sparse tensors (``ecnn.coder.ctx``).

Decoders validate a descriptor with :func:`validate` before touching any bytes.
Which coder and model a stream gets is chosen by :mod:`ecnn.select`.
"""

from __future__ import annotations

import numpy as np

from ecnn.coder.cat0 import encode as encode_cat0  # noqa: F401 - the stream encoders, by coder
from ecnn.coder.desc import int_field
from ecnn.coder.raw import encode_const, encode_raw  # noqa: F401
from ecnn.coder.registry import CODERS
from ecnn.coder.runner import SERIAL, Runner
from ecnn.errors import InvalidField, UnknownField, UnsupportedCoding

DEFAULT_CHUNK = 1 << 20
# The descriptor keys of every coder a stream may name (``blocks`` only where fields' heads say so).
_KEYS = {name: set(c.keys) for name, c in CODERS.items() if c.general}


def validate(desc, count: int, lo: int, hi: int) -> None:
    """Check a stream descriptor whose symbols must lie in ``[lo, hi]``.

    Raises:
        UnsupportedCoding: unknown coder kind or parameter value.
        UnknownField: a field this decoder does not know.
        InvalidField: wrong field types or ranges.
        LimitExceeded: more chunks than a decoder accepts.
    """
    if not isinstance(desc, dict):
        raise InvalidField("a stream descriptor must be a map")
    if any(type(k) is not str for k in desc):
        raise InvalidField("stream descriptor keys must be strings")
    kind = desc.get("coder")
    if type(kind) is not str:
        raise InvalidField("stream field 'coder' must be a string")
    if kind not in _KEYS:
        raise UnsupportedCoding(f"unknown stream coder {kind!r}")
    extra = {k for k in desc if k not in _KEYS[kind] and not k.startswith("_")}
    if extra:
        raise UnknownField(f"unknown field(s) in {kind} stream: {sorted(extra)}")
    int_field(desc, "length", 0, (1 << 63) - 1)
    CODERS[kind].validate(desc, count, lo, hi)


def decode(desc: dict, buf, count: int, out_dtype: np.dtype, lo: int, hi: int, runner: Runner = SERIAL) -> np.ndarray:
    """Decode a validated stream into ``count`` values of ``out_dtype``.

    ``buf`` holds exactly the stream's ``length`` bytes; symbols must lie in
    ``[lo, hi]`` (checked by :func:`validate` where the descriptor says, and
    while decoding otherwise). ``runner`` runs the stream's chunks
    (:mod:`ecnn.coder.runner`; the codec passes :mod:`ecnn.chunkrun`).

    Raises:
        CorruptPayload: the bytes contradict the descriptor.
    """
    return CODERS[desc["coder"]].decode(desc, buf, count, np.dtype(out_dtype), lo, hi, runner)
