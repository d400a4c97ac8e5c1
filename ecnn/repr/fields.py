"""The ``fields`` representation: float tensors stored exactly, field by field (spec/CODING.md, section 4.9).

Every element's bit pattern is cut into its sign, its **head** (the exponent
and the top ``k`` mantissa bits) and its **tail** (the other mantissa bits;
see :mod:`ecnn.context.floats`). Four streams follow:

0. the signs, ``N`` symbols 0..1;
1. the row shifts ``t_i``, one per row, 0..r (``r = M - k``);
2. the heads, ``N`` symbols 0..2^(E+k)-1, entropy coded: a ``blocks`` stream
   (row and column class tables, :mod:`ecnn.coder.blocks`);
3. the tails shifted right by their row's ``t_i``, normally ``packed`` as bit
   fields of ``r - t_i`` bits.

Each stream uses whichever coder is smallest; the whole candidate competes with
``raw``, ``planes`` and ``codebook`` by its total size, header entries included.

Decoding builds the tensor chunk by chunk of rows: a chunk's heads come from
one range decoder, its tails and signs are read from their bit offsets, and all
three are merged into the output in the same pass, so temporaries stay the
size of a chunk and chunks can run on several threads (:mod:`ecnn.chunkrun`).
Files whose heads use another coder (``rowcol``, ``cat0``, ...) decode their
heads whole, then merge chunk by chunk the same way.
"""

from __future__ import annotations

import numpy as np

from ecnn import chunkrun, select
from ecnn.select import floats as select_floats
from ecnn._core import _bits
from ecnn.coder import blocks, packed, rans, streams
from ecnn.context import floats
from ecnn.dtypes import DType
from ecnn.errors import CorruptPayload, InvalidField, UnknownField
from ecnn.repr import base

KIND = "fields"
KEYS = {"kind", "head"}
NSTREAMS = 4
HEAD_CHUNK = 1 << 18  # heads per chunk at most: few decoder calls per chunk, and chunks for several cores
HEAD_CODERS = {"blocks": blocks, "rans": rans}  # the coders only the heads may use (sections 5.8, 5.9)
MERGE_CHUNK = 1 << 16  # elements per chunk when the heads are not a blocks stream


def applies(dt: DType) -> bool:
    """Whether a type can use ``fields`` (every float type)."""
    return dt.name in floats.LAYOUT


def _raw_width(bits: int) -> int:
    """Width of the raw fallback for unsigned values of ``bits`` bits."""
    return next(w for w in (1, 2, 4, 8) if bits <= 8 * w)


def encode(
    arr: np.ndarray, dt: DType, chunk: int, k: int | None = None, effort: str = "best", lanes: bool = False
) -> tuple[dict, list, bytes]:
    """The ``fields`` candidate of a non-empty float tensor: ``(repr, stream descriptors, payload)``.

    Args:
        arr: the tensor's storage array (bit patterns for bfloat16 and float8).
        dt: its type.
        chunk: symbols per independently decodable chunk of coded streams.
        k: mantissa bits in the head; chosen by estimate when None.
        effort: the encoder's search effort (:data:`ecnn.config.EFFORTS`) for the signs and heads.
        lanes: code the heads as a ``rans`` stream (format 1.2) rather than ``blocks``.
    """
    e_bits, m_bits = floats.layout(dt.name)
    u = floats.bit_patterns(arr)
    rows = floats.row_count(arr.shape)
    cols = u.size // rows
    if k is None:
        k = select_floats.choose_head(u, e_bits, m_bits, effort)
    r = m_bits - k
    signs, heads, shifts, tails = floats.split(u, e_bits, m_bits, k, rows)
    # The streams are independent: the signs and tails are coded (and let go) before the heads,
    # whose search holds the most memory.
    s = select_floats.sign_stream(signs, rows if arr.ndim >= 2 else None, chunk, effort)
    del signs
    t = select.encode_best(shifts, 1, False, chunk, effort=effort)
    if r == 0:
        tl = streams.encode_const(0)
    else:
        data = packed.pack_groups(tails, floats.tail_widths(shifts, r), cols)
        tl = {"coder": "packed", "length": len(data), "width": r}, data
    del tails
    if e_bits + k <= 16:
        heads = heads.astype(np.uint16)  # half the memory for the heads' search; the same values
    h = select_floats.head_stream(heads, e_bits + k, rows, min(chunk, HEAD_CHUNK), chunk, effort, lanes)
    parts = (s, t, h, tl)
    return {"kind": KIND, "head": int(k)}, [d for d, _ in parts], b"".join(p for _, p in parts)


# --- checking and decoding ---------------------------------------------------


def stream_ranges(shape, dt: DType, k: int) -> list[tuple[int, int, int]]:
    """``(count, lo, hi)`` of each of the four streams (spec/CODING.md, section 4.9)."""
    e_bits, m_bits = floats.layout(dt.name)
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    r = m_bits - k
    return [(n, 0, 1), (floats.row_count(shape), 0, r), (n, 0, (1 << (e_bits + k)) - 1), (n, 0, (1 << r) - 1)]


def _validate_blocks(d, count: int) -> None:
    """The generic descriptor checks of spec/CODING.md section 9, step 4, for a ``blocks`` stream 2."""
    if any(type(key) is not str for key in d):
        raise InvalidField("stream descriptor keys must be strings")
    mod = HEAD_CODERS[d["coder"]]
    extra = {key for key in d if key not in mod.KEYS and not key.startswith("_")}
    if extra:
        raise UnknownField(f"unknown field(s) in {d['coder']} stream: {sorted(extra)}")
    length = d.get("length")
    if type(length) is not int or not 0 <= length < 1 << 63:
        raise InvalidField("stream field 'length' must be an integer in 0..2^63-1")
    mod.validate(d, count)


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
    for j, (d, (count, lo, hi)) in enumerate(zip(descs, stream_ranges(shape, dt, k))):
        if j == 2 and isinstance(d, dict) and isinstance(d.get("coder"), str) and d["coder"] in HEAD_CODERS:
            _validate_blocks(d, count)
        else:
            streams.validate(d, count, lo, hi)
    d3 = descs[3]
    if d3["coder"] == "packed" and d3["width"] != m_bits - k:
        raise InvalidField(f"tensor {name!r}: packed tails must have width {m_bits - k}")


def _head_dtype(width: int, hb: int) -> np.dtype:
    """The narrowest unsigned type for heads of ``hb`` bits in a type of ``width`` bits."""
    if width == 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16 if hb <= 16 else np.uint32)


def _tail_starts(name: str, p3, widths: np.ndarray, cols: int) -> np.ndarray:
    """The first bit of each row's tails in a packed stream 3, after its length and pad checks (section 5.7)."""
    need = packed.groups_length(widths, cols)
    if len(p3) != need:
        raise CorruptPayload(f"tensor {name!r}: packed tails have {len(p3)} bytes, the row shifts need {need}")
    starts = np.zeros(widths.size, np.int64)
    pos = 0
    for width, rows in packed._row_groups(widths):
        nbits = rows.size * cols * width
        starts[rows] = 8 * pos + np.arange(rows.size, dtype=np.int64) * (cols * width)
        size = (nbits + 7) // 8
        if nbits % 8 and p3[pos + size - 1] >> (nbits % 8):
            raise CorruptPayload(f"tensor {name!r}: non-zero pad bits in a packed group")
        pos += size
    return starts


def decode(name: str, rep: dict, parts: list, shape, dt: DType) -> np.ndarray:
    """Decode a validated ``fields`` record from its four ``(descriptor, bytes)`` streams.

    The tensor is built chunk by chunk of rows (the chunks of a ``blocks``
    stream 2, else about :data:`MERGE_CHUNK` elements): heads, tails and signs
    of a chunk are merged into the output in one pass, and the chunks may run
    on several threads (:mod:`ecnn.chunkrun`).

    Raises:
        CorruptPayload: a stream contradicts its descriptor, or a tail does not fit its row.
    """
    e_bits, m_bits = floats.layout(dt.name)
    k = rep["head"]
    r = m_bits - k
    width = 1 + e_bits + m_bits
    ut = np.dtype(f"<u{width // 8}")
    ranges = stream_ranges(shape, dt, k)
    rows = ranges[1][0]
    n = ranges[0][0]
    cols = n // rows
    (d0, p0), (d1, p1), (d2, p2), (d3, p3) = parts
    shifts = streams.decode(d1, p1, rows, np.int64, *ranges[1][1:], runner=chunkrun)
    widths = floats.tail_widths(shifts, r)

    sign_const = sign_all = None
    if d0["coder"] == "const":
        sign_const = d0["value"]
    elif d0["coder"] == "packed" and d0["width"] == 1:
        if len(p0) != packed.group_bytes(n, 1) or (n % 8 and p0[len(p0) - 1] >> (n % 8)):
            raise CorruptPayload(f"tensor {name!r}: packed signs have a wrong length or non-zero pad bits")
    else:
        sign_all = streams.decode(d0, p0, n, np.uint8, *ranges[0][1:], runner=chunkrun)

    tail_starts = tails_all = None
    uniform = bool(np.all(widths == widths[0]))
    if r and d3["coder"] == "packed":
        tail_starts = _tail_starts(name, p3, widths, cols)
    elif r and d3["coder"] != "const":
        tails_all = streams.decode(d3, p3, n, ut, *ranges[3][1:], runner=chunkrun).reshape(rows, cols)
        if np.any(tails_all >> widths.astype(ut)[:, None]):
            raise CorruptPayload(f"tensor {name!r}: a tail is wider than its row allows")
    elif r and d3["value"] >> int(widths.min()):
        raise CorruptPayload(f"tensor {name!r}: a tail is wider than its row allows")

    hb = e_bits + k
    hdt = _head_dtype(width, hb)
    bl = heads_all = None
    if d2["coder"] in HEAD_CODERS:
        mod = HEAD_CODERS[d2["coder"]]
        bl = mod.parse(p2, n, *ranges[2][1:])
        if bl.rows != rows:
            heads_all, bl = mod.decode(d2, p2, n, hdt, *ranges[2][1:], runner=chunkrun), None
    else:
        heads_all = streams.decode(d2, p2, n, hdt, *ranges[2][1:], runner=chunkrun)
    if bl is not None:
        crows, nchunks = bl.chunk_rows, bl.nchunks
    else:
        crows = max(1, MERGE_CHUNK // cols)
        nchunks = -(-rows // crows)
    out = chunkrun.empty(n, ut, nchunks)

    def one(i: int) -> None:
        a, b = i * crows, min(rows, (i + 1) * crows)
        seg = out[a * cols : b * cols]
        if bl is not None:
            bl.decode_chunk(i, seg.reshape(b - a, cols), r)
        else:
            np.left_shift(heads_all[a * cols : b * cols], ut.type(r), out=seg, dtype=ut)
        if tail_starts is not None:
            wv = widths[a:b]
            if uniform or np.all(wv == wv[0]):
                if wv[0]:
                    _bits.or_bits(seg, p3, int(tail_starts[a]), int(wv[0]), int(r - wv[0]))
            else:  # runs of rows of one width whose tails follow each other in their group
                step = wv.astype(np.int64) * cols
                ts = tail_starts[a:b]
                cuts = np.flatnonzero((wv[1:] != wv[:-1]) | (ts[1:] != ts[:-1] + step[:-1])) + 1
                for s, e in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [b - a]])):
                    if wv[s]:
                        _bits.or_bits(seg[s * cols : e * cols], p3, int(ts[s]), int(wv[s]), int(r - wv[s]))
        elif tails_all is not None:
            seg.reshape(b - a, cols)[...] |= tails_all[a:b] << shifts[a:b, None].astype(ut)
        elif r and d3["value"]:
            seg.reshape(b - a, cols)[...] |= ut.type(d3["value"]) << shifts[a:b, None].astype(ut)
        # The sign is the top bit (a whole-element OR: faster than one on every last byte).
        if sign_const:
            seg |= ut.type(1 << (width - 1))
        elif sign_const is None:
            if sign_all is not None:
                seg |= sign_all[a * cols : b * cols].astype(ut) << ut.type(width - 1)
            else:
                _bits.or_bits(seg, p0, a * cols, 1, width - 1)

    chunkrun.run(nchunks, one, out)
    res = out.view(dt.storage.newbyteorder("<") if dt.itemsize > 1 else dt.storage)
    return res.astype(dt.storage, copy=False).reshape(shape)


# --- registry entry ------------------------------------------------------------


def _candidate(arr: np.ndarray, dt: DType, cfg, step=None, bound=None) -> base.Candidate | None:
    """The ``fields`` candidate where the type and the config (format 1.1) allow it."""
    if not applies(dt) or cfg.format_minor < 1:
        return None
    return encode(arr, dt, cfg.chunk, effort=cfg.effort, lanes=cfg.format_minor >= 2)


def _validate_record(rec, dt: DType) -> None:
    validate(rec.name, rec.repr, rec.streams, rec.shape, dt)
    if sum(d["length"] for d in rec.streams) != rec.length:
        raise InvalidField(f"tensor {rec.name!r}: stream lengths do not sum to the payload length {rec.length}")


def _decode_record(rec, payload, dt: DType) -> np.ndarray:
    return decode(rec.name, rec.repr, base.split(rec, payload), rec.shape, dt)


REPR = base.Representation(KIND, 1, frozenset(KEYS), _validate_record, _decode_record, _candidate)
