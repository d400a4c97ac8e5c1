"""The ``cat0`` stream: one order-0 categorical model over ``offset .. offset+nsym-1``.

Bytes: the stored counts, the number of words of each chunk as varints, then
the range coder's 32-bit words, little-endian (spec/CODING.md, "Streams").
"""

from __future__ import annotations

import numpy as np

from ecnn.coder import categorical
from ecnn.coder.desc import int_field
from ecnn.coder.runner import SERIAL
from ecnn.context import order0, tables
from ecnn.errors import CorruptPayload, InvalidField, LimitExceeded, UnsupportedCoding

KEYS = {"coder", "length", "offset", "nsym", "chunk", "precision"}


def validate(desc: dict, count: int, lo: int, hi: int) -> None:
    """The ``cat0`` checks after the generic ones (:func:`ecnn.coder.streams.validate`).

    Raises:
        UnsupportedCoding: a precision other than 24.
        LimitExceeded: more than :data:`ecnn.coder.categorical.MAX_CHUNKS` chunks.
        InvalidField: wrong field types or ranges, or a length too short.
    """
    precision = int_field(desc, "precision", 1, 64)
    if precision != tables.PRECISION:
        raise UnsupportedCoding(f"cat0 precision {precision} is not supported (only 24)")
    nsym = int_field(desc, "nsym", 2, tables.MAX_NSYM)
    offset = int_field(desc, "offset", -(1 << 63), (1 << 63) - 1)
    if offset < lo or offset + nsym - 1 > hi:
        raise InvalidField("cat0 alphabet falls outside the allowed symbol range")
    chunk = int_field(desc, "chunk", 1, (1 << 63) - 1)
    if count == 0:
        raise InvalidField("a cat0 stream must code at least one symbol")
    if categorical.num_chunks(count, chunk) > categorical.MAX_CHUNKS:
        raise LimitExceeded(f"cat0 stream has more than {categorical.MAX_CHUNKS} chunks")
    # Table (>= 2 bytes) and chunk index (>= 1 byte per chunk).
    if desc["length"] < 2 + categorical.num_chunks(count, chunk):
        raise InvalidField("cat0 stream too short for its table and chunk index")


def encode(indices: np.ndarray, offset: int, nsym: int, fit: order0.Order0Fit, chunk: int) -> tuple[dict, bytes]:
    """A ``cat0`` stream of indices ``0..nsym-1`` (symbols ``index + offset``) with the table of ``fit``."""
    freqs = tables.expand(fit.counts)
    data = fit.blob + categorical.chunks_bytes(categorical.encode(indices, freqs, chunk))
    desc = {
        "coder": "cat0",
        "length": len(data),
        "offset": int(offset),
        "nsym": int(nsym),
        "chunk": int(chunk),
        "precision": tables.PRECISION,
    }
    return desc, data


def decode(desc: dict, buf, count: int, out_dtype, lo: int, hi: int, runner=SERIAL) -> np.ndarray:
    """Decode a validated ``cat0`` stream into ``count`` values of ``out_dtype``, its chunks run by ``runner``.

    Raises:
        CorruptPayload: the bytes contradict the descriptor.
    """
    out_dtype = np.dtype(out_dtype)
    nsym, offset, chunk = desc["nsym"], desc["offset"], desc["chunk"]
    k = categorical.num_chunks(count, chunk)
    mv = memoryview(buf)
    try:
        counts, pos = tables.read(mv, 0, nsym)
        chunks = categorical.read_chunks(mv, pos, k)
        freqs = tables.expand(counts)
    except ValueError as e:
        raise CorruptPayload(f"cat0 stream: {e}") from None
    cdf = categorical.table(freqs)
    out = runner.empty(count, out_dtype, k)

    def one(i: int) -> None:
        start = i * chunk
        n = min(chunk, count - start)
        try:
            categorical.decode_into(chunks[i], cdf, out[start : start + n], offset)
        except ValueError as e:
            raise CorruptPayload(f"cat0 chunk {i}: damaged coded data ({type(e).__name__}: {e})") from None

    runner.run(k, one, out)
    return out
