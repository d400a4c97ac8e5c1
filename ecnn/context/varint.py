"""Unsigned LEB128 varints (spec/CODING.md, "Varints")."""

from __future__ import annotations

import numpy as np

from ecnn._core import _bits

MAX_VARINT_BYTES = 10  # enough for any value below 2**64
_COMPILED_FROM = 8  # runs of at least this many varints are read by the compiled core


def encode(values) -> bytes:
    """Encode non-negative integers as concatenated unsigned LEB128 varints."""
    v = np.asarray(values, dtype=np.uint64).ravel()
    if v.size == 0:
        return b""
    # Vectorised: emit 7-bit groups for all values at once.
    nbytes = varint_sizes(v)
    total = int(nbytes.sum())
    out = np.zeros(total, dtype=np.uint8)
    starts = np.concatenate(([0], np.cumsum(nbytes)[:-1]))
    rest = v.copy()
    for k in range(int(nbytes.max())):
        live = nbytes > k
        idx = starts[live] + k
        group = (rest[live] & np.uint64(0x7F)).astype(np.uint8)
        more = (nbytes[live] > k + 1).astype(np.uint8) << 7
        out[idx] = group | more
        rest[live] >>= np.uint64(7)
    return out.tobytes()


def varint_sizes(values) -> np.ndarray:
    """Number of bytes each value takes as a LEB128 varint."""
    v = np.asarray(values, dtype=np.uint64)
    return np.searchsorted(_THRESHOLDS, v, side="right").astype(np.int64) + 1


_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, MAX_VARINT_BYTES)], dtype=np.uint64)


def decode(buf, count: int, pos: int = 0) -> tuple[list[int], int]:
    """Read ``count`` varints from ``buf`` starting at ``pos``.

    Returns the values and the position after the last one. Raises
    ``ValueError`` on truncation, on a varint longer than 10 bytes, on a value
    of 2**64 or more, or on a non-minimal encoding (a redundant final 0x00
    group), so that every value has exactly one encoding.
    """
    if count >= _COMPILED_FROM:
        vals = np.empty(count, np.uint64)
        pos = _bits.varints(buf, pos, vals)  # the same checks and messages, in C
        return vals.tolist(), pos
    out: list[int] = []
    end = len(buf)
    for _ in range(count):
        value = 0
        shift = 0
        for k in range(MAX_VARINT_BYTES):
            if pos >= end:
                raise ValueError("varint runs past the end of its stream")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and k > 0:
                    raise ValueError("non-minimal varint")
                break
        else:
            raise ValueError("varint longer than 10 bytes")
        if value >= 1 << 64:
            raise ValueError("varint value out of range")
        out.append(value)
    return out, pos


def zigzag(v):
    """The unsigned varint value of a signed integer: 0, -1, 1, -2, ... as 0, 1, 2, 3, ...

    ``v`` is a Python integer (a stream parameter) or an integer array (each element mapped).
    """
    if isinstance(v, np.ndarray):
        return np.where(v >= 0, 2 * v, -2 * v - 1)
    return 2 * v if v >= 0 else -2 * v - 1


def unzigzag(z: int) -> int:
    """The signed parameter of a zigzag value (the inverse of :func:`zigzag`)."""
    return z >> 1 if not z & 1 else -((z + 1) >> 1)
