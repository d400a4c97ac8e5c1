"""The ``fields`` representation: float tensors stored exactly, field by field (spec/CODING.md, section 4.9).

Every element's bit pattern is cut into its sign, its **head** (the exponent
and the top ``k`` mantissa bits) and its **tail** (the other mantissa bits;
see :mod:`ecnn.context.floats`). Four streams follow:

0. the signs, ``N`` symbols 0..1;
1. the row shifts ``t_i``, one per row, 0..r (``r = M - k``);
2. the heads, ``N`` symbols 0..2^(E+k)-1, entropy coded (row/column contexts
   where they pay);
3. the tails shifted right by their row's ``t_i``, normally ``packed`` as bit
   fields of ``r - t_i`` bits.

Each stream uses whichever coder is smallest; the whole candidate competes with
``raw`` and ``planes`` by its total size, header entries included.
"""

from __future__ import annotations

import msgpack
import numpy as np

from ecnn.coder import packed, streams
from ecnn.context import floats, order0
from ecnn.dtypes import DType
from ecnn.errors import CorruptPayload, InvalidField

KIND = "fields"
KEYS = {"kind", "head"}
NSTREAMS = 4
SIGN_GAIN = 0.97  # signs are entropy coded only when that saves at least 3% of their packed bytes


def applies(dt: DType) -> bool:
    """Whether a type can use ``fields`` (every float type)."""
    return dt.name in floats.LAYOUT


def _raw_width(bits: int) -> int:
    """Width of the raw fallback for unsigned values of ``bits`` bits."""
    return next(w for w in (1, 2, 4, 8) if bits <= 8 * w)


def _desc_cost(desc: dict, payload: bytes) -> int:
    return len(payload) + len(msgpack.packb(desc))


def _smaller(a, b):
    return a if _desc_cost(*a) <= _desc_cost(*b) else b


def _packed(values: np.ndarray, width: int) -> tuple[dict, bytes]:
    data = packed.pack(values, width)
    return {"coder": "packed", "length": len(data), "width": width}, data


def _estimate_head_bits(u: np.ndarray, e_bits: int, m_bits: int, k: int) -> float:
    """Order-0 cost of the heads with ``k`` mantissa bits plus ``r`` tail bits each (shifts ignored)."""
    heads = (u >> np.uint64(m_bits - k)) & np.uint64((1 << (e_bits + k)) - 1)
    lo = int(heads.min())
    idx = (heads - np.uint64(lo)).astype(np.int64)
    nsym = int(idx.max()) + 1
    if nsym == 1:
        return float(u.size * (m_bits - k))
    if nsym > 1 << 20:
        return float(u.size * (e_bits + m_bits))
    fit = order0.fit(np.bincount(idx, minlength=nsym))
    return fit.total_bits + float(u.size * (m_bits - k))


def choose_head(u: np.ndarray, e_bits: int, m_bits: int) -> int:
    """Mantissa bits ``k`` in the head: the cheapest by the order-0 estimate, on a sample of large tensors."""
    sample = u[:: max(1, u.size // (1 << 21))]
    ks = range(0, min(m_bits, floats.MAX_HEAD_MANTISSA) + 1)
    costs = [_estimate_head_bits(sample, e_bits, m_bits, k) for k in ks]
    return int(np.argmin(costs))


def encode(arr: np.ndarray, dt: DType, chunk: int, k: int | None = None) -> tuple[dict, list, bytes]:
    """The ``fields`` candidate of a non-empty float tensor: ``(repr, stream descriptors, payload)``.

    Args:
        arr: the tensor's storage array (bit patterns for bfloat16 and float8).
        dt: its type.
        chunk: symbols per independently decodable chunk of coded streams.
        k: mantissa bits in the head; chosen by estimate when None.
    """
    e_bits, m_bits = floats.layout(dt.name)
    u = floats.bit_patterns(arr)
    rows = floats.row_count(arr.shape)
    cols = u.size // rows
    if k is None:
        k = choose_head(u, e_bits, m_bits)
    r = m_bits - k
    signs, heads, shifts, tails = floats.split(u, e_bits, m_bits, k, rows)
    ctx_rows = rows if arr.ndim >= 2 else None
    s = _packed(signs, 1)
    coded = streams.encode_best(signs.astype(np.uint8), 1, False, chunk, rows=ctx_rows)
    if _desc_cost(*coded) <= SIGN_GAIN * _desc_cost(*s):  # coded signs cost decoding time: only for a clear gain
        s = coded
    t = streams.encode_best(shifts, 1, False, chunk)
    hb = e_bits + k
    h = streams.encode_best(heads.astype(np.int64) if hb < 63 else heads, _raw_width(hb), False, chunk, rows=ctx_rows)
    h = _smaller(h, _packed(heads, hb))
    if r == 0:
        tl = streams.encode_const(0)
    else:
        data = packed.pack_groups(tails, floats.tail_widths(shifts, r), cols)
        tl = {"coder": "packed", "length": len(data), "width": r}, data
    parts = (s, t, h, tl)
    return {"kind": KIND, "head": int(k)}, [d for d, _ in parts], b"".join(p for _, p in parts)


# --- checking and decoding ---------------------------------------------------


def stream_ranges(shape, dt: DType, k: int) -> list[tuple[int, int, int]]:
    """``(count, lo, hi)`` of each of the four streams (spec/CODING.md, section 4.9)."""
    e_bits, m_bits = floats.layout(dt.name)
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    r = m_bits - k
    return [(n, 0, 1), (floats.row_count(shape), 0, r), (n, 0, (1 << (e_bits + k)) - 1), (n, 0, (1 << r) - 1)]


def validate(name: str, rep: dict, descs: list, shape, dt: DType) -> None:
    """Check a ``fields`` record's repr and streams (header only).

    Raises:
        InvalidField, UnknownField, UnsupportedCoding, LimitExceeded.
    """
    if not applies(dt):
        raise InvalidField(f"tensor {name!r}: {dt.name} cannot use the fields representation")
    _, m_bits = floats.layout(dt.name)
    k = rep.get("head")
    if type(k) is not int or not 0 <= k <= m_bits:
        raise InvalidField(f"tensor {name!r}: fields head must be an integer in 0..{m_bits}")
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if n == 0:
        raise InvalidField(f"tensor {name!r}: the fields representation needs at least one element")
    if len(descs) != NSTREAMS:
        raise InvalidField(f"tensor {name!r}: fields needs {NSTREAMS} streams, has {len(descs)}")
    for d, (count, lo, hi) in zip(descs, stream_ranges(shape, dt, k)):
        streams.validate(d, count, lo, hi)
    d3 = descs[3]
    if d3["coder"] == "packed" and d3["width"] != m_bits - k:
        raise InvalidField(f"tensor {name!r}: packed tails must have width {m_bits - k}")


def decode(name: str, rep: dict, parts: list, shape, dt: DType) -> np.ndarray:
    """Decode a validated ``fields`` record from its four ``(descriptor, bytes)`` streams.

    Raises:
        CorruptPayload: a stream contradicts its descriptor, or a tail does not fit its row.
    """
    e_bits, m_bits = floats.layout(dt.name)
    k = rep["head"]
    r = m_bits - k
    ranges = stream_ranges(shape, dt, k)
    rows = ranges[1][0]
    n = ranges[0][0]
    cols = n // rows
    (d0, p0), (d1, p1), (d2, p2), (d3, p3) = parts
    signs = streams.decode(d0, p0, n, np.uint64, *ranges[0][1:])
    shifts = streams.decode(d1, p1, rows, np.int64, *ranges[1][1:])
    heads = streams.decode(d2, p2, n, np.uint64, *ranges[2][1:])
    if d3["coder"] == "packed":
        widths = floats.tail_widths(shifts, r)
        need = packed.groups_length(widths, cols)
        if len(p3) != need:
            raise CorruptPayload(f"tensor {name!r}: packed tails have {len(p3)} bytes, the row shifts need {need}")
        try:
            tails = packed.unpack_groups(p3, widths, cols)
        except CorruptPayload as e:
            raise CorruptPayload(f"tensor {name!r}: {e}") from None
    else:
        tails = streams.decode(d3, p3, n, np.uint64, *ranges[3][1:])
        if r and np.any(tails.reshape(rows, cols) >> floats.tail_widths(shifts, r).astype(np.uint64)[:, None]):
            raise CorruptPayload(f"tensor {name!r}: a tail is wider than its row allows")
    u = floats.merge(signs, heads, shifts, tails, e_bits, m_bits, k, cols)
    out = u.view(dt.storage.newbyteorder("<") if dt.itemsize > 1 else dt.storage)
    return out.astype(dt.storage, copy=False).reshape(shape)
