"""The ``packed`` stream: symbols stored as bit fields, no entropy coding (spec/CODING.md, "packed").

Each symbol has a width in bits (``width`` from the descriptor, or narrower
where a representation says so: the tails of ``fields``, whose rows may drop
their shared trailing zero bits). Symbols of equal width form a group; groups
come widest first, each in element order, each packed least significant bit
first and padded with zero bits to a whole byte:

    bit b of a group's bits is bit (b mod 8) of byte (b div 8) of the group;
    symbol j of a group of width w occupies bits j*w .. j*w + w - 1.

Packing runs in the compiled core (:func:`ecnn._core._bits.pack`); unpacking
works on whole arrays: eight symbols of width ``w`` make ``w`` bytes, read
as 64-bit words with shifts.
"""

from __future__ import annotations

import numpy as np

from ecnn._core import _bits
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
    """Pack unsigned values of at most ``width`` bits, least significant bit first (in C).

    Args:
        values: non-negative integers of any integer type, each below ``2**width``
            (not checked: only the low ``width`` bits are stored).
        width: bits per value, 0..64.

    Returns:
        ``ceil(len(values) * width / 8)`` bytes; the pad bits of the last byte are 0.
    """
    v = np.ascontiguousarray(values).ravel()
    if width == 0 or v.size == 0:
        return b""
    if v.dtype.kind not in "iu" or v.dtype.byteorder == ">":
        v = v.astype(_U64)
    return _bits.pack(v, width)


def unpack(buf, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``count`` uint64 values of ``width`` bits from ``buf``.

    ``buf`` must hold exactly ``group_bytes(count, width)`` bytes (checked by the caller).
    """
    if width <= 57:
        return unpack_at(buf, 0, count, width, _U64)
    src = np.frombuffer(buf, dtype=np.uint8)
    if width == 64:
        return src[: count * 8].view("<u8").astype(_U64)
    src = np.frombuffer(buf, dtype=np.uint8)
    groups = -(-count // 8)
    padded = np.zeros(groups * width + 16, dtype=np.uint8)
    padded[: src.size] = src
    out = np.empty((groups, 8), dtype=_U64)
    m = _mask(width)
    nwords = -(-width // 8) + 1
    raw = np.zeros((groups, 8 * nwords), dtype=np.uint8)
    raw[:, :width] = padded[: groups * width].reshape(groups, width)
    words = raw.view("<u8").astype(_U64, copy=False)
    for i in range(8):
        off = width * i
        j, s = off >> 6, off & 63
        col = words[:, j] >> _U64(s)
        if s and s + width > 64:
            col = col | (words[:, j + 1] << _U64(64 - s))
        out[:, i] = col & m
    return out.ravel()[:count]


def unpack_at(buf, bit: int, count: int, width: int, dtype=_U64) -> np.ndarray:
    """``count`` values of ``width`` bits (1..57) that start at bit ``bit`` of ``buf``, as ``dtype``.

    Symbol ``j`` is bits ``bit + j*width .. bit + j*width + width - 1`` of ``buf``,
    least significant bit first (the layout of :func:`pack`, from any bit on).
    Bits past the end of ``buf`` read as 0; ``dtype`` must hold ``width`` bits.
    """
    dtype = np.dtype(dtype)
    if width == 0 or count == 0:
        return np.zeros(count, dtype=dtype)
    src = np.frombuffer(buf, dtype=np.uint8)
    byte0, s0 = bit >> 3, bit & 7
    nbytes = (s0 + count * width + 7) >> 3
    if byte0 + nbytes > src.size:  # past the end: zeros
        tail = np.zeros(nbytes, np.uint8)
        have = src[byte0 : byte0 + nbytes]
        tail[: have.size] = have
        src, byte0 = tail, 0
    if width == 1:
        bits = np.unpackbits(src[byte0 : byte0 + nbytes], bitorder="little")[s0 : s0 + count]
        return bits if dtype == np.uint8 else bits.astype(dtype)
    if s0 == 0 and width in (8, 16, 32):
        v = src[byte0 : byte0 + count * (width // 8)].view(f"<u{width // 8}")
        return v.astype(dtype)
    groups = -(-count // 8)
    # Symbol i of each group of eight starts at byte (s0 + i*width) div 8 of the group, bit
    # (s0 + i*width) mod 8 (at most 7): one unaligned little-endian window per symbol holds it
    # whole, 32 bits wide when width + 7 <= 32, else 64.
    wide = width + 7 > 32
    padded = np.zeros(groups * width + 16, dtype=np.uint8)
    avail = min(nbytes, src.size - byte0)
    padded[:avail] = src[byte0 : byte0 + avail]
    wt = np.dtype("<u8" if wide else "<u4")
    m = wt.type((1 << width) - 1)
    out = np.empty((groups, 8), dtype=dtype)
    tmp = np.empty(groups, dtype=wt)
    for i in range(8):
        off = s0 + i * width
        win = np.ndarray((groups,), dtype=wt, buffer=padded, offset=off >> 3, strides=(width,))
        tmp[...] = win  # an aligned copy first: numpy's ufuncs are slow on unaligned wide input
        np.right_shift(tmp, wt.type(off & 7), out=tmp)
        np.bitwise_and(tmp, m, out=tmp)
        out[:, i] = tmp
    return out.reshape(-1)[:count]


def _row_groups(row_widths: np.ndarray):
    """``(width, rows of that width)`` for the widths present, widest first (width 0 skipped)."""
    w = np.asarray(row_widths, dtype=np.int64).ravel()
    present = np.nonzero(np.bincount(w, minlength=1))[0][::-1]
    return [(int(v), np.nonzero(w == v)[0]) for v in present if v > 0]


def pack_groups(values: np.ndarray, row_widths: np.ndarray, cols: int) -> bytes:
    """Pack a ``(rows, cols)`` array whose rows have their own widths: one group per width,
    widest first, each holding its rows in order (see the module docstring)."""
    v = np.ascontiguousarray(values).reshape(-1, cols) if cols else np.zeros((len(row_widths), 0), _U64)
    return b"".join(pack(v.ravel() if rows.size == v.shape[0] else v[rows].ravel(), width) for width, rows in _row_groups(row_widths))


def groups_length(row_widths: np.ndarray, cols: int) -> int:
    """Bytes that :func:`pack_groups` writes."""
    return sum(group_bytes(rows.size * cols, width) for width, rows in _row_groups(row_widths))


def unpack_groups(buf, row_widths: np.ndarray, cols: int, check_pad: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_groups`: a flat uint64 array of ``rows * cols`` values.

    ``buf`` must be exactly :func:`groups_length` bytes.

    Raises:
        CorruptPayload: a group's pad bits are not zero (when ``check_pad``).
    """
    w = np.asarray(row_widths, dtype=np.int64).ravel()
    out = np.zeros((w.size, cols), dtype=_U64)
    mv = memoryview(buf)
    pos = 0
    for width, rows in _row_groups(w):
        n = rows.size * cols
        size = group_bytes(n, width)
        used = (n * width) % 8
        if check_pad and used and mv[pos + size - 1] >> used:
            raise CorruptPayload("non-zero pad bits in a packed group")
        vals = unpack(mv[pos : pos + size], n, width).reshape(rows.size, cols)
        if rows.size == w.size:
            out = vals
        else:
            out[rows] = vals
        pos += size
    return out.ravel()


def encode(values: np.ndarray, width: int) -> tuple[dict, bytes]:
    """A ``packed`` stream of unsigned values of at most ``width`` bits."""
    data = pack(values, width)
    return {"coder": "packed", "length": len(data), "width": width}, data


def validate(desc: dict, count: int, lo: int = 0, hi: int = 0) -> None:
    """Coder checks of a ``packed`` descriptor (after the generic ones of :func:`ecnn.coder.streams.validate`).

    ``length`` may be below ``ceil(count * width / 8)`` only where a representation
    narrows some symbols; the exact length is checked when decoding.

    Raises:
        InvalidField: ``width`` is not an integer 1..64, or ``length`` is too large.
    """
    width = desc.get("width")
    if type(width) is not int or not 1 <= width <= MAX_WIDTH:
        raise InvalidField(f"packed stream width must be an integer in 1..{MAX_WIDTH}")
    if desc["length"] > group_bytes(count, width) + width - 1:  # each of at most `width` groups rounds up
        raise InvalidField(f"packed stream length {desc['length']} exceeds {count} symbols of {width} bits")


def decode(desc: dict, buf, count: int, out_dtype, lo: int, hi: int, runner=None) -> np.ndarray:
    """Decode a validated ``packed`` stream whose symbols all have ``width`` bits (in one piece: ``runner`` is unused).

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
