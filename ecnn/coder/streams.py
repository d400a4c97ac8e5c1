"""Symbol streams: the unit the coders work on (spec/CODING.md, "Streams").

A stream is a sequence of ``count`` integer symbols with a descriptor (a small
dict stored in the file header) saying how its bytes code them:

* ``const`` -- every symbol equals ``value``; no bytes.
* ``raw``   -- little-endian integers of ``width`` bytes, ``signed`` or not.
* ``cat0``  -- an order-0 categorical model over ``offset .. offset+nsym-1``:
  the stored counts as varints, the number of words of each chunk as varints,
  then the range coder's 32-bit words, little-endian.
* ``ctx``   -- (format 1.1) a descriptor of ``coder`` and ``length`` only; the
  stream starts with its model and parameters: order-0, or lane contexts for
  sparse tensors (``ecnn.coder.ctx``).

Decoders validate a descriptor with :func:`validate` before touching any bytes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack
import numpy as np

from ecnn import chunkrun
from ecnn.coder import categorical
from ecnn.coder import packed
from ecnn.coder import ctx
from ecnn.coder import rowcol
from ecnn.context import order0, sparse, tables, varint
from ecnn.context import rowcol as rowcol_ctx
from ecnn.errors import CorruptPayload, InvalidField, LimitExceeded, UnknownField, UnsupportedCoding

DEFAULT_CHUNK = 1 << 20
MAX_CHUNKS = 1 << 20
_RAW_DTYPES = {
    (1, False): np.dtype("u1"),
    (2, False): np.dtype("<u2"),
    (4, False): np.dtype("<u4"),
    (8, False): np.dtype("<u8"),
    (1, True): np.dtype("i1"),
    (2, True): np.dtype("<i2"),
    (4, True): np.dtype("<i4"),
    (8, True): np.dtype("<i8"),
}
_KEYS = {
    "const": {"coder", "length", "value"},
    "raw": {"coder", "length", "width", "signed"},
    "cat0": {"coder", "length", "offset", "nsym", "chunk", "precision"},
    "rowcol": rowcol.KEYS,
    "packed": packed.KEYS,  # format 1.1: bit fields, no entropy coding
    "ctx": ctx.KEYS,
}
# rowcol is tried only for streams with at least this many symbols and rows/columns.
ROWCOL_MIN_COUNT = 4096
ROWCOL_MIN_SIDE = 8
ROWCOL_SEARCH_SYMBOLS = 1 << 17  # class counts are chosen on about this many symbols
ROWCOL_CLASSES = ((1, 8), (8, 1), (8, 8), (32, 8), (8, 32), (32, 32), (64, 64), (16, 4))
ROWCOL_FULL_PLANS = 3  # class counts planned on every row, of those ranked best on the sample
ROWCOL_PLAN_BINS = 1 << 22  # contexts^2 x nsym at most per plan (merging contexts into tables costs that)
# The lanes model of ctx streams is tried for matrices with at least this many symbols, a quarter of them zero.
LANES_MIN_COUNT = 256
LANES_MIN_ZEROS = 0.25
LANES_MIN_ZEROS_BALANCED = 0.5  # effort "balanced" tries lanes only where most symbols are 0 (pruned weights)


class Choice(NamedTuple):
    """A coder picked by :func:`choose`.

    Attributes:
        kind: ``const``, ``raw``, ``cat0``, ``rowcol``, ``ctx0``, ``lanes`` or ``ctx2`` (the last three are ``ctx`` streams).
        bits: estimated size in bits, the descriptor's included when it was costed.
        how: what the encoder needs to code it.
        desc_bits: the descriptor's part of ``bits`` (0 when descriptors were not costed).
    """

    kind: str
    bits: float
    how: Any = None
    desc_bits: float = 0.0


def _int(desc: dict, key: str, lo: int, hi: int) -> int:
    v = desc.get(key)
    if type(v) is not int:  # bool is not an int here
        raise InvalidField(f"stream field {key!r} must be an integer")
    if not lo <= v <= hi:
        raise InvalidField(f"stream field {key!r}={v} out of range [{lo}, {hi}]")
    return v


def validate(desc, count: int, lo: int, hi: int) -> None:
    """Check a stream descriptor whose symbols must lie in ``[lo, hi]``.

    Raises:
        UnsupportedCoding: unknown coder kind or parameter value.
        UnknownField: a field this decoder does not know.
        InvalidField: wrong field types or ranges.
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
    length = _int(desc, "length", 0, (1 << 63) - 1)
    if kind == "const":
        if length != 0:
            raise InvalidField("a const stream has length 0")
        _int(desc, "value", lo, hi)
    elif kind == "raw":
        width = _int(desc, "width", 1, 8)
        signed = desc.get("signed")
        if type(signed) is not bool or (width, signed) not in _RAW_DTYPES:
            raise InvalidField("raw stream needs width in {1,2,4,8} and a bool 'signed'")
        if length != count * width:
            raise InvalidField(f"raw stream length {length} != {count} x {width}")
    elif kind == "rowcol":
        _validate_rowcol(desc, count, lo, hi, length)
    elif kind == "packed":
        packed.validate(desc, count)
    elif kind == "ctx":
        if count == 0:
            raise InvalidField("a ctx stream must code at least one symbol")
        if length < 1:
            raise InvalidField("a ctx stream has at least its model byte")
    else:
        precision = _int(desc, "precision", 1, 64)
        if precision != tables.PRECISION:
            raise UnsupportedCoding(f"cat0 precision {precision} is not supported (only 24)")
        nsym = _int(desc, "nsym", 2, tables.MAX_NSYM)
        offset = _int(desc, "offset", -(1 << 63), (1 << 63) - 1)
        if offset < lo or offset + nsym - 1 > hi:
            raise InvalidField("cat0 alphabet falls outside the allowed symbol range")
        chunk = _int(desc, "chunk", 1, (1 << 63) - 1)
        if count == 0:
            raise InvalidField("a cat0 stream must code at least one symbol")
        if categorical.num_chunks(count, chunk) > MAX_CHUNKS:
            raise LimitExceeded(f"cat0 stream has more than {MAX_CHUNKS} chunks")
        # Table (>= 2 bytes) and chunk index (>= 1 byte per chunk).
        if length < 2 + categorical.num_chunks(count, chunk):
            raise InvalidField("cat0 stream too short for its table and chunk index")


def _validate_rowcol(desc: dict, count: int, lo: int, hi: int, length: int) -> None:
    precision = _int(desc, "precision", 1, 64)
    if precision != tables.PRECISION:
        raise UnsupportedCoding(f"rowcol precision {precision} is not supported (only 24)")
    nsym = _int(desc, "nsym", 2, tables.MAX_NSYM)
    offset = _int(desc, "offset", -(1 << 63), (1 << 63) - 1)
    signs = desc.get("signs")
    if type(signs) is not bool:
        raise InvalidField("rowcol field 'signs' must be a boolean")
    if signs:
        if offset != 0:
            raise InvalidField("a rowcol stream with signs has offset 0")
        if -(nsym - 1) < lo or nsym - 1 > hi:
            raise InvalidField("rowcol magnitudes fall outside the allowed symbol range")
    elif offset < lo or offset + nsym - 1 > hi:
        raise InvalidField("rowcol alphabet falls outside the allowed symbol range")
    rows = _int(desc, "rows", 1, count if count else 1)
    cols = _int(desc, "cols", 1, count if count else 1)
    if rows * cols != count:
        raise InvalidField(f"rowcol rows x cols = {rows * cols}, stream has {count} symbols")
    nrc = _int(desc, "nrc", 1, rowcol_ctx.MAX_CLASSES)
    ncc = _int(desc, "ncc", 1, rowcol_ctx.MAX_CLASSES)
    if nrc > rows or ncc > cols:
        raise InvalidField("rowcol has more classes than rows or columns")
    crows = _int(desc, "chunk_rows", 1, rows)
    nchunks = categorical.num_chunks(rows, crows)
    if nchunks > MAX_CHUNKS:
        raise LimitExceeded(f"rowcol stream has more than {MAX_CHUNKS} chunks")
    # map (>= 1 byte per context), one table (>= 2 bytes), chunk index (>= 1 byte per chunk)
    if length < (nrc + ncc - 1) + 2 + nchunks:
        raise InvalidField("rowcol stream too short for its map, tables and chunk index")


# --- encoding ---------------------------------------------------------------


def encode_const(value: int) -> tuple[dict, bytes]:
    return {"coder": "const", "length": 0, "value": int(value)}, b""


def encode_raw(values: np.ndarray, width: int, signed: bool) -> tuple[dict, bytes]:
    data = np.ascontiguousarray(values, dtype=_RAW_DTYPES[(width, signed)]).tobytes()
    return {"coder": "raw", "length": len(data), "width": width, "signed": signed}, data


def cat0_estimate(hist: np.ndarray, count: int, chunk: int) -> tuple[order0.Order0Fit, float]:
    """Best table for a histogram and the estimated stream size in bits."""
    fit = order0.fit(hist)
    k = categorical.num_chunks(count, chunk)
    # Each chunk: its index varint (~2-3 bytes) plus up to FLUSH_BITS of flush.
    bits = fit.total_bits + k * (24 + order0.FLUSH_BITS)
    return fit, bits


def encode_cat0(indices: np.ndarray, offset: int, nsym: int, fit: order0.Order0Fit, chunk: int) -> tuple[dict, bytes]:
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


def encode_best(
    values: np.ndarray,
    width: int,
    signed: bool,
    chunk: int = DEFAULT_CHUNK,
    rows: int | None = None,
    contexts: bool = False,
    effort: str = "best",
) -> tuple[dict, bytes]:
    """Code integer values with whichever of const / raw / cat0 / rowcol is smallest.

    ``width`` and ``signed`` describe the raw fallback and must hold every value.
    ``rows``, if given, views the values as a ``(rows, count // rows)`` matrix
    for the row/column contexts. With ``contexts``, the format 1.1 ``ctx``
    coder is tried too, and every candidate also pays for its descriptor.
    ``effort`` (:data:`ecnn.config.EFFORTS`) limits the models tried, as :func:`choose` says.
    """
    v = np.asarray(values).ravel()
    if v.size == 0:
        return encode_raw(v, width, signed)
    kind, _, how, _ = choose(v, width, signed, chunk, rows, contexts, effort)
    lo, hi = int(v.min()), int(v.max())
    if kind == "const":
        return encode_const(lo)
    if kind == "cat0":
        indices, fit = how
        return encode_cat0(indices, lo, hi - lo + 1, fit, chunk)
    if kind == "ctx0":
        indices, fit = how
        return ctx.encode_order0(indices, lo, hi - lo + 1, fit, chunk)
    if kind == "lanes":
        m, plan_ = how
        return ctx.encode_lanes(m, plan_, chunk)
    if kind == "rowcol":
        sym, vals, plan_, offset, n = how
        return rowcol.encode(sym, vals, plan_, offset, n, chunk)
    if kind == "ctx2":
        (sym, vals, plan_, offset, n), signs = how
        return ctx.encode_rowcol(sym, vals, plan_, offset, n, chunk, signs)
    return encode_raw(v, *raw_width(lo, hi, width, signed))


def choose(
    values: np.ndarray,
    width: int,
    signed: bool,
    chunk: int = DEFAULT_CHUNK,
    rows: int | None = None,
    contexts: bool = False,
    effort: str = "best",
):
    """The cheapest coder for non-empty values: ``(kind, estimated bits, encoding inputs)``.

    With ``contexts`` the kinds include ``ctx0`` and ``lanes`` (the two models of
    the ``ctx`` coder), and each estimate includes the descriptor's bytes, so
    that the choice is by total description length.

    ``effort`` ``"best"`` tries every model; ``"balanced"`` plans row/column
    contexts with :data:`ecnn.context.rowcol.BALANCED_CLASSES` classes only and
    tries ``lanes`` only where at least :data:`LANES_MIN_ZEROS_BALANCED` of the
    symbols are 0 and the sample's estimate beats the best so far; ``"fast"``
    tries no row/column contexts and no ``lanes``.
    """
    v = values
    lo, hi = int(v.min()), int(v.max())

    def cand(kind: str, bits: float, how, coder: str, **fields) -> Choice:
        d = _desc_bits(coder, bits, **fields) if contexts else 0.0
        return Choice(kind, bits + d, how, d)

    if lo == hi:
        return cand("const", 0.0, None, "const", value=lo)
    w, sg = raw_width(lo, hi, width, signed)
    best = cand("raw", 8.0 * v.size * w, None, "raw", width=w, signed=sg)
    nsym = hi - lo + 1
    if nsym <= tables.MAX_NSYM and lo >= -(1 << 63) and hi < (1 << 63):
        indices = (v - v.dtype.type(lo)).astype(np.int32) if v.dtype.kind == "u" else (v.astype(np.int64) - lo).astype(np.int32)
        fit, bits = cat0_estimate(order0.histogram(indices, nsym), v.size, chunk)
        if contexts:
            c = cand("ctx0", bits + 8.0 * ctx.order0_header_bytes(lo, nsym, chunk), (indices, fit), "ctx")
        else:
            c = cand("cat0", bits, (indices, fit), "cat0")
        best = min(best, c, key=lambda ch: ch.bits)
        rowcol_ok = rows and effort != "fast" and v.size >= ROWCOL_MIN_COUNT and min(rows, v.size // rows) >= ROWCOL_MIN_SIDE
        if rowcol_ok and _tables_can_pay(nsym, v.size):
            rc = _best_rowcol(v, indices, lo, nsym, rows, chunk, effort == "best")
            if rc is not None and contexts:
                best = min(best, _ctx_rowcol(rc, rows, chunk, cand, effort == "best"), key=lambda ch: ch.bits)
            elif rc is not None:
                best = min(best, cand("rowcol", rc[1], rc[2], "rowcol"), key=lambda ch: ch.bits)
    lanes_ok = effort != "fast" and contexts and rows and v.size >= LANES_MIN_COUNT and v.size % rows == 0 and lo <= 0 <= hi
    min_zeros = LANES_MIN_ZEROS if effort == "best" else LANES_MIN_ZEROS_BALANCED
    if lanes_ok and np.count_nonzero(v == 0) >= min_zeros * v.size:
        m = v.astype(np.int64).reshape(rows, -1)
        p = sparse.plan(m, chunk, None if effort == "best" else best.bits)
        if p is not None:
            best = min(best, cand("lanes", p.bits, (m, p), "ctx"), key=lambda ch: ch.bits)
    return best


def _affordable_classes(nsym: int) -> list[tuple[int, int]]:
    """The class counts of :data:`ROWCOL_CLASSES` whose table merging stays within
    :data:`ROWCOL_PLAN_BINS` (it costs contexts squared times ``nsym``): wide alphabets,
    such as a codebook's level indices, try fewer contexts. Never none."""
    ok = [(a, b) for a, b in ROWCOL_CLASSES if (a + b - 1) ** 2 * nsym <= ROWCOL_PLAN_BINS]
    return ok or [min(ROWCOL_CLASSES, key=lambda c: c[0] + c[1])]


def _tables_can_pay(nsym: int, count: int) -> bool:
    """Whether a second table could save more than it costs: one stored table takes at
    least ``nsym / 2`` bytes (a nibble per count), and no split of the symbols saves more
    than their ``count * log2(nsym)`` bits. Planning tables of a wider alphabet (weights
    with nearly every value distinct) only costs time."""
    return 4 * nsym <= count * max(1.0, np.log2(nsym))


def _ctx_rowcol(rc, rows: int, chunk: int, cand, search: bool = True) -> Choice:
    """A rowcol plan as a ``ctx`` model-4 stream: parameters in the stream, sign tables by column class
    (one table without ``search``)."""
    sym, vals, plan_, offset, n = rc[2]
    bits, signs, nsc = rc[1], None, 0
    if vals is not None:
        signs = rowcol_ctx.plan_signs(vals, rowcol_ctx.SIGN_CLASSES if search else (1,))
        bits += signs.bits - plan_.sign_fit.total_bits
        nsc = signs.k
    crows = rowcol.chunk_rows_for(rows, sym.shape[1], chunk)
    bits += 8.0 * int(varint.varint_sizes(ctx.rowcol_params(offset, n, rows, plan_.nrc, plan_.ncc, nsc, crows)).sum())
    return cand("ctx2", bits, (rc[2], signs), "ctx")


def _desc_bits(kind: str, bits: float, **fields) -> float:
    """Bits of a descriptor in the header (msgpack), for a payload of about ``bits`` bits."""
    length = int(np.ceil(bits / 8.0))
    if kind == "const":
        d = {"coder": "const", "length": 0, "value": fields["value"]}
    elif kind == "raw":
        d = {"coder": "raw", "length": length, "width": fields["width"], "signed": fields["signed"]}
    elif kind == "ctx":
        d = {"coder": "ctx", "length": length}
    else:
        raise ValueError(f"no descriptor estimate for {kind!r}")
    return 8.0 * len(msgpack.packb(d))


def raw_width(lo: int, hi: int, width: int, signed: bool) -> tuple[int, bool]:
    """The narrowest raw integer type holding ``lo..hi`` (else ``width``, ``signed``)."""
    for w in (1, 2, 4, 8):
        if w >= width:
            break
        if lo >= 0 and hi < 1 << (8 * w):
            return w, False
        if -(1 << (8 * w - 1)) <= lo and hi < 1 << (8 * w - 1):
            return w, True
    return width, signed


def _best_rowcol(v: np.ndarray, indices: np.ndarray, lo: int, nsym: int, rows: int, chunk: int, search: bool = True):
    """The cheapest rowcol plan for these values, as ``("rowcol", bits, encoding inputs)``, or None.

    Without ``search``, only :data:`ecnn.context.rowcol.BALANCED_CLASSES` (or the one affordable class count) is planned, on every row.
    """
    cols = v.size // rows
    shape = (rows, cols)
    variants = [(indices.reshape(shape), None, lo, nsym)]
    if lo < 0 < int(v.max()):
        vals = v.astype(np.int64).reshape(shape)
        m = np.abs(vals)
        mmax = int(m.max())
        if mmax >= 1 and mmax + 1 <= tables.MAX_NSYM:
            # Symmetric values: magnitudes with signs apart halve every table. Try that alone.
            variants = [(m.astype(np.int32), vals, 0, mmax + 1)]
    if search:
        found = _ranked_plan(variants, v.size, cols)
        if found is None:
            return None
        plan_, i = found
    else:
        i = 0
        sym, vals, _, n = variants[0]
        ok = _affordable_classes(n)
        nrc, ncc = rowcol_ctx.BALANCED_CLASSES if rowcol_ctx.BALANCED_CLASSES in ok else ok[0]
        plan_ = rowcol_ctx.plan(sym, n, vals, min(nrc, rows), min(ncc, cols))
    sym, vals, offset, n = variants[i]
    nchunks = categorical.num_chunks(rows, rowcol.chunk_rows_for(rows, cols, chunk))
    return ("rowcol", plan_.bits + nchunks * (24 + order0.FLUSH_BITS), (sym, vals, plan_, offset, n))


def _ranked_plan(variants: list, count: int, cols: int):
    """The cheapest plan of :func:`_best_rowcol`'s search and the index of its variant, or None.

    Ranks the class counts on a sample of rows (counts weighted to stand for all
    rows), then plans the best few on every row and keeps the cheapest.
    """
    stride = max(1, count // ROWCOL_SEARCH_SYMBOLS)
    ranked = []
    sample_grids: dict = {}
    for i, (sym, vals, offset, n) in enumerate(variants):
        s_sym = sym[::stride]
        s_vals = vals[::stride] if vals is not None else None
        if s_vals is not None and not s_vals.any():
            continue
        g = sample_grids[i] = rowcol_ctx.grid(s_sym, n, s_vals)
        for nrc, ncc in _affordable_classes(n):
            nrc, ncc = min(nrc, s_sym.shape[0]), min(ncc, cols)
            ranked.append((rowcol_ctx.plan(s_sym, n, s_vals, nrc, ncc, stride, g).bits, i, nrc, ncc))
    if not ranked:
        return None
    ranked.sort(key=lambda r: r[0])
    best = None
    grids: dict = {}
    for _, i, nrc, ncc in ranked[: 1 if stride == 1 else ROWCOL_FULL_PLANS]:
        sym, vals, offset, n = variants[i]
        if i not in grids:
            grids[i] = rowcol_ctx.grid(sym, n, vals) if stride > 1 else sample_grids[i]
        p = rowcol_ctx.plan(sym, n, vals, nrc, ncc, grid=grids[i])
        if best is None or p.bits < best[0].bits:
            best = (p, i)
    return best


# --- decoding ---------------------------------------------------------------


def decode(desc: dict, buf, count: int, out_dtype: np.dtype, lo: int, hi: int) -> np.ndarray:
    """Decode a validated stream into ``count`` values of ``out_dtype``.

    ``buf`` holds exactly the stream's ``length`` bytes; symbols must lie in
    ``[lo, hi]`` (checked by :func:`validate` for const and cat0 streams, and
    here, value by value, for raw streams).

    Raises:
        CorruptPayload: the bytes contradict the descriptor.
    """
    kind = desc["coder"]
    out_dtype = np.dtype(out_dtype)
    if kind == "const":
        return np.full(count, desc["value"], dtype=out_dtype)
    if kind == "rowcol":
        return rowcol.decode(desc, buf, count, out_dtype)
    if kind == "packed":
        return packed.decode(desc, buf, count, out_dtype, lo, hi)
    if kind == "ctx":
        return ctx.decode(buf, count, out_dtype, lo, hi)
    if kind == "raw":
        raw = np.frombuffer(buf, dtype=_RAW_DTYPES[(desc["width"], desc["signed"])], count=count)
        info = np.iinfo(raw.dtype)
        if count and (info.min < lo or info.max > hi):
            if int(raw.min()) < lo or int(raw.max()) > hi:
                raise CorruptPayload(f"raw stream has symbols outside [{lo}, {hi}]")
        return raw.astype(out_dtype)
    return _decode_cat0(desc, buf, count, out_dtype)


def _decode_cat0(desc: dict, buf, count: int, out_dtype: np.dtype) -> np.ndarray:
    nsym, offset, chunk = desc["nsym"], desc["offset"], desc["chunk"]
    k = categorical.num_chunks(count, chunk)
    mv = memoryview(buf)
    try:
        counts, pos = tables.read(mv, 0, nsym)
        chunks = categorical.read_chunks(mv, pos, k)
        freqs = tables.expand(counts)
    except ValueError as e:
        raise CorruptPayload(f"cat0 stream: {e}") from None
    m = categorical.model(freqs)
    out = chunkrun.empty(count, out_dtype, k)

    def one(i: int) -> None:
        start = i * chunk
        n = min(chunk, count - start)
        try:
            idx = categorical.decode_chunk(chunks[i], m, n)
        except Exception as e:  # constriction signals impossible states with AssertionError
            raise CorruptPayload(f"cat0 chunk {i}: damaged coded data ({type(e).__name__}: {e})") from None
        if offset == 0:
            out[start : start + n] = idx
        else:
            out[start : start + n] = idx.astype(np.int64) + offset

    chunkrun.run(k, one, out)
    return out
