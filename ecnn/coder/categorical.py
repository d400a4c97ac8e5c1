"""Range coding of symbol indices with a static categorical model.

The model is built from integer frequencies produced by
:func:`ecnn.context.tables.expand`; the coder is constriction's range coder with
32-bit words and 24-bit precision (spec/RANGE_CODER.md). Long sequences are cut
into chunks of ``chunk`` symbols, each coded independently so that chunks can
be decoded separately.
"""

from __future__ import annotations

import numpy as np
import constriction

from ecnn.context import tables, varint
from ecnn.context.rate import num_chunks  # noqa: F401 - chunk arithmetic, shared with the rate estimate


WORD_BITS = 32
MAX_CHUNKS = 1 << 20  # chunks of one stream at most (spec/CODING.md, "Chunking")


def model(freqs: np.ndarray):
    """The constriction model for expanded frequencies ``freqs``.

    With ``perfect=False`` and frequencies summing to ``2**24 - n``, constriction
    assigns symbol ``i`` exactly ``freqs[i] + 1`` out of ``2**24``.
    """
    return constriction.stream.model.Categorical(
        np.asarray(freqs, dtype=np.float64), perfect=False
    )


def chunk_rows_for(rows: int, cols: int, chunk: int) -> int:
    """Rows per chunk so that a chunk of a matrix stream holds about ``chunk`` symbols (at least one row)."""
    return min(rows, max(1, chunk // max(cols, 1)))


def encode(indices: np.ndarray, freqs: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Encode symbol indices ``0..n-1``; returns the uint32 words of each chunk."""
    idx = np.ascontiguousarray(indices, dtype=np.int32).ravel()
    m = model(freqs)
    out = []
    for start in range(0, idx.size, chunk):
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(idx[start : start + chunk], m)
        out.append(np.asarray(enc.get_compressed(), dtype=np.uint32))
    return out


def decode_chunk(words: np.ndarray, freqs_model, count: int) -> np.ndarray:
    """Decode ``count`` symbol indices from one chunk's words.

    Raises:
        ValueError: if words are left over after the last symbol.
    """
    dec = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))
    out = dec.decode(freqs_model, count)
    if not dec.maybe_exhausted():
        raise ValueError("compressed words left over after the last symbol")
    return out


def chunks_bytes(chunks: list[np.ndarray]) -> bytes:
    """The chunk index (words per chunk, as varints) followed by every chunk's words, u32 little-endian."""
    return varint.encode([w.size for w in chunks]) + b"".join(w.astype("<u4").tobytes() for w in chunks)


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
    cls = decode_chunk(words, model(tables.expand(counts)), count)
    return cls.astype(np.int64), pos + 4 * nw
