"""Range coding of symbol indices with a static categorical model.

The model is built from integer frequencies produced by
:func:`ecnn.context.tables.expand`; the range coder has 32-bit words and 24-bit
precision (spec/RANGE_CODER.md). Both directions are compiled and take
cumulative tables (:func:`table`): the encoder of :mod:`ecnn._core._rce`
(which writes the words constriction's ``RangeEncoder`` writes) and the decoder
of :mod:`ecnn._core._rc`. Long sequences are cut into chunks of ``chunk``
symbols, each coded independently so that chunks can be decoded separately.
"""

from __future__ import annotations

import numpy as np

from ecnn._core import _rc, _rce
from ecnn.context import tables, varint
from ecnn.context.rate import num_chunks  # noqa: F401 - chunk arithmetic, shared with the rate estimate


WORD_BITS = 32
MAX_CHUNKS = 1 << 20  # chunks of one stream at most (spec/CODING.md, "Chunking")


def table(freqs: np.ndarray) -> np.ndarray:
    """The decoder's cumulative table of expanded frequencies ``freqs`` (spec/RANGE_CODER.md, section 2).

    Returns:
        uint32 ``c`` of ``n + 1`` entries: ``c[0] = 0``, ``c[i + 1] = c[i] + freqs[i] + 1``, ``c[n] = 2**24``.
    """
    f = np.asarray(freqs, dtype=np.int64)
    c = np.zeros(f.size + 1, np.uint32)
    np.cumsum(f + 1, out=c[1:])
    return c


def tables_of(freqs: np.ndarray) -> np.ndarray:
    """:func:`table` of every row of a ``(k, n)`` array of expanded frequencies: a ``(k, n + 1)`` uint32 array."""
    f = np.asarray(freqs, dtype=np.int64)
    c = np.zeros((f.shape[0], f.shape[1] + 1), np.uint32)
    np.cumsum(f + 1, axis=1, out=c[:, 1:])
    return c


def decoder(words) -> "_rc.Decoder":
    """A range decoder over one chunk's words (a uint32 array or little-endian bytes)."""
    return _rc.Decoder(words)


def take(dec, cdf: np.ndarray, count: int, dtype=np.int32) -> np.ndarray:
    """The next ``count`` symbols of ``dec``, all with the cumulative table ``cdf``, as a new ``dtype`` array.

    Raises:
        ValueError: invalid data (spec/RANGE_CODER.md, section 5 step 3).
    """
    return dec.decode(cdf, np.empty(count, dtype))


def chunk_rows_for(rows: int, cols: int, chunk: int) -> int:
    """Rows per chunk so that a chunk of a matrix stream holds about ``chunk`` symbols (at least one row)."""
    return min(rows, max(1, chunk // max(cols, 1)))


def encoder() -> "_rce.Encoder":
    """An empty range encoder: ``encode(cdf, symbols)`` with one cumulative table, ``encode_ctx(cdfs, ctx,
    symbols)`` with row ``ctx[j]`` of a 2-D table array for symbol ``j``; :func:`words` seals it."""
    return _rce.Encoder()


def words(enc) -> np.ndarray:
    """The sealed words of encoder ``enc`` (a read-only ``<u4`` array); ``enc`` may go on encoding."""
    return np.frombuffer(enc.get_words(), "<u4")


def encode(indices: np.ndarray, freqs: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Encode symbol indices ``0..n-1``; returns the uint32 words of each chunk.

    Raises:
        ValueError: an index outside ``0..n-1``.
    """
    idx = np.asarray(indices).reshape(-1)
    if idx.dtype.kind not in "iu":
        idx = idx.astype(np.int32)
    cdf = table(freqs)
    return [np.frombuffer(_rce.encode_chunk(cdf, idx[start : start + chunk]), "<u4") for start in range(0, idx.size, chunk)]


def decode_chunk(words: np.ndarray, cdf: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbol indices (int32) from one chunk's words with the cumulative table ``cdf``.

    Raises:
        ValueError: invalid data, or the end-of-chunk check fails (spec/CODING.md, section 8).
    """
    out = np.empty(count, np.int32)
    decode_into(words, cdf, out)
    return out


def decode_into(words: np.ndarray, cdf: np.ndarray, out: np.ndarray, offset: int = 0) -> None:
    """Decode ``out.size`` symbols of one chunk with the cumulative table ``cdf`` into ``out``, plus ``offset``.

    ``out`` is a contiguous array that holds every symbol ``index + offset``;
    without an offset, an integer ``out`` is written by the decoder directly.

    Raises:
        ValueError: invalid data, or the end-of-chunk check fails (spec/CODING.md, section 8).
    """
    direct = offset == 0 and out.dtype.kind in "iu" and out.flags.c_contiguous and out.flags.writeable
    idx = out if direct else np.empty(out.shape, np.int64 if offset else np.int32)
    if not _rc.decode_chunk(words, cdf, idx.reshape(-1)):
        raise ValueError("compressed words left over after the last symbol")
    if not direct:
        out[...] = idx + offset if offset else idx


def chunks_bytes(chunks: list[np.ndarray]) -> bytes:
    """The chunk index (words per chunk, as varints) followed by every chunk's words, u32 little-endian."""
    return varint.encode([w.size for w in chunks]) + b"".join(np.asarray(w, "<u4").tobytes() for w in chunks)


def read_chunks(buf, pos: int, k: int) -> list[np.ndarray]:
    """Read a chunk index of ``k`` chunks at ``pos`` and the words after it, which must end the stream.

    Raises:
        ValueError: a bad varint, or words that do not end exactly at the end of ``buf``.
    """
    nwords, pos = varint.decode(buf, k, pos)
    total = sum(nwords)
    if pos + 4 * total != len(buf):
        raise ValueError("stream length does not match its chunk index")
    words = np.frombuffer(buf, dtype="<u4", offset=pos, count=total)
    bounds = np.cumsum([0] + nwords)
    return [words[bounds[i] : bounds[i + 1]] for i in range(k)]


def side_bytes(cls: np.ndarray, fit) -> bytes:
    """A class side stream (the inverse of :func:`read_side`): the stored table of ``fit``
    (an :class:`ecnn.context.order0.Order0Fit` of the classes), a varint word count, the words of one chunk."""
    (words,) = encode(cls, tables.expand(fit.counts), cls.size)
    return fit.blob + varint.encode([words.size]) + words.astype("<u4").tobytes()


def read_side(buf, pos: int, k: int, count: int) -> tuple[np.ndarray, int]:
    """Read a class side stream at ``pos``: ``k`` stored counts, a varint word count, the
    words of one chunk of ``count`` classes. Returns the classes (int64) and the next position.

    Raises:
        ValueError: a bad table or varint, words past the end, or words left over.
    """
    counts, pos = tables.read(buf, pos, k)
    (nw,), pos = varint.decode(buf, 1, pos)
    if pos + 4 * nw > len(buf):
        raise ValueError("class stream runs past the end of the stream")
    words = np.frombuffer(buf, dtype="<u4", offset=pos, count=nw)
    cls = np.empty(count, np.int64)
    decode_into(words, table(tables.expand(counts)), cls)
    return cls, pos + 4 * nw
