"""The ``packed`` stream: symbols stored as bit fields, no entropy coding (spec/CODING.md, "packed").

Each symbol has a width in bits (``width`` from the descriptor, or narrower
where a representation says so: the tails of ``fields``, whose rows may drop
their shared trailing zero bits). Symbols of equal width form a group; groups
come widest first, each in element order, each packed least significant bit
first and padded with zero bits to a whole byte:

    bit b of a group's bits is bit (b mod 8) of byte (b div 8) of the group;
    symbol j of a group of width w occupies bits j*w .. j*w + w - 1.

Packing and unpacking work on whole arrays: eight symbols of width ``w`` make
``w`` bytes, built from 64-bit words with shifts.
"""

from __future__ import annotations

import numpy as np

from ecnn.errors import CorruptPayload, InvalidField

KEYS = {"coder", "length", "width"}
MAX_WIDTH = 64
_U64 = np.uint64


def group_bytes(count: int, width: int) -> int:
    """Bytes of one group of ``count`` symbols of ``width`` bits."""
    return (count * width + 7) // 8


def _mask(width: int) -> np.uint64:
    return _U64((1 << width) - 1) if width < 64 else _U64(0xFFFFFFFFFFFFFFFF)


def pack(values: np.ndarray, width: int) -> bytes:
    """Pack unsigned values of at most ``width`` bits, least significant bit first.

    Args:
        values: non-negative integers, each below ``2**width`` (not checked).
        width: bits per value, 0..64.

    Returns:
        ``ceil(len(values) * width / 8)`` bytes; the pad bits of the last byte are 0.
    """
    v = np.ascontiguousarray(values).ravel()
    n = v.size
    if width == 0 or n == 0:
        return b""
    groups = -(-n // 8)
    pad = np.zeros(groups * 8, dtype=_U64)
    pad[:n] = v.astype(_U64, copy=False)
    cols = pad.reshape(groups, 8)
    nwords = -(-width // 8) + 1  # eight symbols take `width` bytes; one spare word for the spill
    words = np.zeros((groups, nwords), dtype=_U64)
    for i in range(8):
        off = width * i
        j, s = off >> 6, off & 63
        col = cols[:, i]
        words[:, j] |= col << _U64(s)
        if s and s + width > 64:
            words[:, j + 1] |= col >> _U64(64 - s)
    data = words.astype("<u8", copy=False).view(np.uint8).reshape(groups, 8 * nwords)[:, :width]
    return data.tobytes()[: group_bytes(n, width)]


def unpack(buf, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``count`` uint64 values of ``width`` bits from ``buf``.

    ``buf`` must hold exactly ``group_bytes(count, width)`` bytes (checked by the caller).
    """
    if width == 0 or count == 0:
        return np.zeros(count, dtype=_U64)
    groups = -(-count // 8)
    nwords = -(-width // 8) + 1
    raw = np.zeros((groups, 8 * nwords), dtype=np.uint8)
    flat = np.zeros(groups * width, dtype=np.uint8)
    src = np.frombuffer(buf, dtype=np.uint8)
    flat[: src.size] = src
    raw[:, :width] = flat.reshape(groups, width)
    words = raw.view("<u8").astype(_U64, copy=False)
    out = np.empty((groups, 8), dtype=_U64)
    m = _mask(width)
    for i in range(8):
        off = width * i
        j, s = off >> 6, off & 63
        col = words[:, j] >> _U64(s)
        if s and s + width > 64:
            col = col | (words[:, j + 1] << _U64(64 - s))
        out[:, i] = col & m
    return out.ravel()[:count]


def pack_groups(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Pack values whose widths vary: groups of equal width, widest first (see module docstring)."""
    v = np.ascontiguousarray(values).ravel()
    w = np.ascontiguousarray(widths).ravel()
    parts = []
    for width in sorted({int(x) for x in np.unique(w)}, reverse=True):
        parts.append(pack(v[w == width], width))
    return b"".join(parts)


def groups_length(widths: np.ndarray) -> int:
    """Bytes that :func:`pack_groups` writes for these widths."""
    w = np.ascontiguousarray(widths).ravel()
    counts = np.bincount(w.astype(np.int64), minlength=1)
    return int(sum(group_bytes(int(c), width) for width, c in enumerate(counts.tolist()) if c))


def unpack_groups(buf, widths: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_groups` (``buf`` must be exactly :func:`groups_length` bytes)."""
    w = np.ascontiguousarray(widths).ravel()
    out = np.zeros(w.size, dtype=_U64)
    mv = memoryview(buf)
    pos = 0
    for width in sorted({int(x) for x in np.unique(w)}, reverse=True):
        sel = w == width
        n = int(np.count_nonzero(sel))
        size = group_bytes(n, width)
        out[sel] = unpack(mv[pos : pos + size], n, width)
        pos += size
    return out


def pad_bits_zero(buf, widths: np.ndarray) -> bool:
    """Whether every group's pad bits (after its last symbol) are zero."""
    w = np.ascontiguousarray(widths).ravel()
    pos = 0
    mv = memoryview(buf)
    for width in sorted({int(x) for x in np.unique(w)}, reverse=True):
        n = int(np.count_nonzero(w == width))
        size = group_bytes(n, width)
        used = (n * width) % 8
        if used and mv[pos + size - 1] >> used:
            return False
        pos += size
    return True


def validate(desc: dict, count: int) -> None:
    """Coder checks of a ``packed`` descriptor (after the generic ones of :func:`ecnn.coder.streams.validate`).

    ``length`` may be below ``ceil(count * width / 8)`` only where a representation
    narrows some symbols; the exact length is checked when decoding.

    Raises:
        InvalidField: ``width`` is not an integer 1..64, or ``length`` is too large.
    """
    width = desc.get("width")
    if type(width) is not int or not 1 <= width <= MAX_WIDTH:
        raise InvalidField(f"packed stream width must be an integer in 1..{MAX_WIDTH}")
    if desc["length"] > group_bytes(count, width):
        raise InvalidField(f"packed stream length {desc['length']} exceeds {count} symbols of {width} bits")


def decode(desc: dict, buf, count: int, out_dtype, lo: int, hi: int) -> np.ndarray:
    """Decode a validated ``packed`` stream whose symbols all have ``width`` bits.

    Raises:
        CorruptPayload: wrong length, non-zero pad bits, or a symbol outside ``[lo, hi]``.
    """
    width = desc["width"]
    if len(buf) != group_bytes(count, width):
        raise CorruptPayload(f"packed stream has {len(buf)} bytes, {count} symbols of {width} bits need {group_bytes(count, width)}")
    if count and (count * width) % 8 and buf[len(buf) - 1] >> ((count * width) % 8):
        raise CorruptPayload("non-zero pad bits at the end of a packed stream")
    v = unpack(buf, count, width)
    if count and (lo > 0 or hi < (1 << width) - 1):
        if int(v.min()) < lo or int(v.max()) > hi:
            raise CorruptPayload(f"packed stream has symbols outside [{lo}, {hi}]")
    return v.astype(out_dtype)
