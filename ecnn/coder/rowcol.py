"""The ``rowcol`` stream: order-0 tables selected by row and column scale classes.

Byte layout (spec/CODING.md, "rowcol streams"), all varints unsigned LEB128:

1. if ``nrc > 1``: the row classes as a side stream: ``nrc`` stored counts,
   one varint word count, the words (one range-coder chunk of ``rows`` symbols);
2. if ``ncc > 1``: the column classes, likewise (``cols`` symbols);
3. the table map: ``nrc + ncc - 1`` varints, the table of each context;
4. the tables: ``T x nsym`` stored counts (``T`` = largest map entry + 1);
5. if ``signs``: the sign table, 2 stored counts (negative, positive);
6. the chunk index: one varint word count per chunk of ``chunk_rows`` rows;
7. the words of every chunk, 32-bit little-endian.

In a chunk, symbols are coded table by table (table 0 first), each table's
symbols in row-major order; then, if ``signs``, one sign per non-zero symbol
in row-major order (0 negative, 1 positive).
"""

from __future__ import annotations

import numpy as np

from ecnn.coder import blocks as blocks_mod
from ecnn.coder import categorical
from ecnn.coder.desc import int_field
from ecnn.coder.runner import SERIAL
from ecnn.context import rowcol as ctxmod
from ecnn.context import tables, varint
from ecnn.errors import CorruptPayload, InvalidField, LimitExceeded, UnsupportedCoding

_POPCOUNT4 = np.array([bin(d).count("1") for d in range(16)], np.int64)
_SHIFT4 = np.arange(4, dtype=np.int32)
# Byte k of entry d is the k-th sign as an int8 factor: 1 if bit k of d is 1 (positive), else -1 (0xff);
# little-endian, so .view gives the bytes in order.
_FACTOR4 = np.array([sum((1 if (d >> k) & 1 else 0xFF) << (8 * k) for k in range(4)) for d in range(16)], "<u4")
KEYS = {"coder", "length", "offset", "nsym", "rows", "cols", "nrc", "ncc", "signs", "chunk_rows", "precision"}


def validate(desc: dict, count: int, lo: int, hi: int) -> None:
    """The ``rowcol`` checks after the generic ones (:func:`ecnn.coder.streams.validate`).

    Raises:
        UnsupportedCoding: a precision other than 24.
        LimitExceeded: more than :data:`ecnn.coder.categorical.MAX_CHUNKS` chunks.
        InvalidField: wrong field types or ranges, or a length too short.
    """
    precision = int_field(desc, "precision", 1, 64)
    if precision != tables.PRECISION:
        raise UnsupportedCoding(f"rowcol precision {precision} is not supported (only 24)")
    nsym = int_field(desc, "nsym", 2, tables.MAX_NSYM)
    offset = int_field(desc, "offset", -(1 << 63), (1 << 63) - 1)
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
    rows = int_field(desc, "rows", 1, count if count else 1)
    cols = int_field(desc, "cols", 1, count if count else 1)
    if rows * cols != count:
        raise InvalidField(f"rowcol rows x cols = {rows * cols}, stream has {count} symbols")
    nrc = int_field(desc, "nrc", 1, ctxmod.MAX_CLASSES)
    ncc = int_field(desc, "ncc", 1, ctxmod.MAX_CLASSES)
    if nrc > rows or ncc > cols:
        raise InvalidField("rowcol has more classes than rows or columns")
    crows = int_field(desc, "chunk_rows", 1, rows)
    nchunks = categorical.num_chunks(rows, crows)
    if nchunks > categorical.MAX_CHUNKS:
        raise LimitExceeded(f"rowcol stream has more than {categorical.MAX_CHUNKS} chunks")
    # map (>= 1 byte per context), one table (>= 2 bytes), chunk index (>= 1 byte per chunk)
    if desc["length"] < (nrc + ncc - 1) + 2 + nchunks:
        raise InvalidField("rowcol stream too short for its map, tables and chunk index")


def encode(sym: np.ndarray, values: np.ndarray | None, plan: ctxmod.RowColPlan, offset: int, nsym: int, chunk: int) -> tuple[dict, bytes]:
    """Encode a ``(rows, cols)`` array of symbol indices (magnitudes when ``values`` is given)."""
    rows, cols = sym.shape
    crows = categorical.chunk_rows_for(rows, cols, chunk)
    data = encode_body(sym, values, plan, crows)
    desc = {
        "coder": "rowcol",
        "length": len(data),
        "offset": int(offset),
        "nsym": int(nsym),
        "rows": int(rows),
        "cols": int(cols),
        "nrc": int(plan.nrc),
        "ncc": int(plan.ncc),
        "signs": values is not None,
        "chunk_rows": int(crows),
        "precision": tables.PRECISION,
    }
    return desc, data


def encode_body(
    sym: np.ndarray,
    values: np.ndarray | None,
    plan: ctxmod.RowColPlan,
    crows: int,
    signs: ctxmod.SignPlan | None = None,
    grouped: bool = False,
    blocks: bool = False,
) -> bytes:
    """The bytes of a rowcol stream; with ``signs``, one sign table per column sign class (``ctx`` models 2 to 4).

    ``grouped`` (model 3) codes the signs class by class, each class's in
    row-major order; otherwise (model 2) all in row-major order. ``blocks``
    (model 4) codes the symbols in the order of the ``blocks`` coder and the
    signs class by class, four per symbol (spec/CODING.md, section 5.6.4).
    """
    rows = sym.shape[0]
    parts = []
    if blocks and signs is None and values is not None:
        raise ValueError("the block order (ctx model 4) needs a sign plan")
    if plan.nrc > 1:
        parts.append(categorical.side_bytes(plan.rclass, plan.rows_fit))
    if plan.ncc > 1:
        parts.append(categorical.side_bytes(plan.cclass, plan.cols_fit))
    parts.append(varint.encode(plan.table_of))
    parts += [f.blob for f in plan.fits]
    cdfs = [categorical.table(tables.expand(f.counts)) for f in plan.fits]
    sign_cdf = sign_c = None
    if values is not None and signs is None:
        parts.append(plan.sign_fit.blob)
        sign_cdf = categorical.table(tables.expand(plan.sign_fit.counts))
    elif values is not None:
        parts += [f.blob for f in signs.fits]
        sign_c = categorical.tables_of(np.array([tables.expand(f.counts) for f in signs.fits], np.int64))
        if signs.k == 1:
            sign_cdf = sign_c[0]
    if blocks:
        parts.append(categorical.chunks_bytes(_blocks_chunks(sym, values, plan, crows, signs, cdfs, sign_c)))
        return b"".join(parts)
    chunks = []
    # Classes are below 64, so contexts fit a byte (as in the decoder).
    table8, rclass8, cclass8 = plan.table_of.astype(np.uint8), plan.rclass.astype(np.uint8), plan.cclass.astype(np.uint8)
    sclass8 = signs.sclass.astype(np.uint8) if signs is not None else None
    for a in range(0, rows, crows):
        b = min(rows, a + crows)
        tid = table8[rclass8[a:b, None] + cclass8[None, :]].ravel()
        s = sym[a:b].ravel()
        order = np.argsort(tid, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(tid, minlength=len(cdfs)))])
        enc = categorical.encoder()
        for t, c in enumerate(cdfs):
            if bounds[t + 1] > bounds[t]:
                enc.encode(c, s[order[bounds[t] : bounds[t + 1]]])
        if values is not None:
            v = values[a:b]
            nz = v != 0
            bits = (v[nz] > 0).astype(np.uint8)
            if bits.size and sign_cdf is not None:
                enc.encode(sign_cdf, bits)
            elif bits.size and grouped:  # class by class, each with its own table, each in row-major order
                cls = np.broadcast_to(sclass8[None, :], v.shape)[nz]
                by_class = np.argsort(cls, kind="stable")
                ends = np.cumsum(np.bincount(cls, minlength=signs.k))
                for g in range(signs.k):
                    lo_, hi_ = int(ends[g - 1]) if g else 0, int(ends[g])
                    if hi_ > lo_:
                        enc.encode(sign_c[g], bits[by_class[lo_:hi_]])
            elif bits.size:  # the table of each sign's column class, in row-major order
                enc.encode_ctx(sign_c, np.broadcast_to(sclass8[None, :], v.shape)[nz], bits)
        chunks.append(categorical.words(enc))
    parts.append(categorical.chunks_bytes(chunks))
    return b"".join(parts)


def quad_freqs(counts) -> np.ndarray:
    """Frequencies of the table that codes four signs as one symbol, from a sign table's stored counts (section 5.6.4).

    The sign probability is rounded to ``u1 / 256`` (``u1`` in 1..255) and
    symbol ``d`` (bit ``k`` is the ``k``-th sign, 1 positive) weighs
    ``u0^(4 - popcount(d)) * u1^popcount(d)`` with ``u0 = 256 - u1``; the 16
    weights are expanded like stored counts (they are below ``2^32``).
    """
    return tables.expand(quad_counts(counts))


def quad_counts(counts) -> np.ndarray:
    """The 16 counts ``u0^(4 - popcount(d)) * u1^popcount(d)`` of the quad table of a sign table (section 5.6.4)."""
    c0, c1 = int(counts[0]), int(counts[1])
    total = c0 + c1
    u1 = min(255, max(1, (512 * c1 + total) // (2 * total)))
    u0 = 256 - u1
    return u0 ** (4 - _POPCOUNT4) * u1**_POPCOUNT4


def _encode_quads(enc, bits: np.ndarray, quad_cdf: np.ndarray, sign_cdf: np.ndarray) -> None:
    """Signs (1 positive) four per symbol, then the last ``n mod 4`` one by one (cumulative tables of the
    quad and sign models)."""
    nq = bits.size // 4
    if nq:
        enc.encode(quad_cdf, (bits[: 4 * nq].reshape(nq, 4) << _SHIFT4).sum(axis=1, dtype=np.int32))
    if bits.size > 4 * nq:
        enc.encode(sign_cdf, bits[4 * nq :])


def _decode_factors(dec, n: int, quad_cdf: np.ndarray, sign_cdf: np.ndarray) -> np.ndarray:
    """``n`` signs as written by :func:`_encode_quads`, as int8 factors: -1 negative, 1 positive.

    ``quad_cdf`` and ``sign_cdf`` are the cumulative tables of the quad and sign models."""
    nq = n // 4
    f = np.empty(n, np.int8)
    if nq:
        f[: 4 * nq] = _FACTOR4[categorical.take(dec, quad_cdf, nq)].view(np.int8)
    if n > 4 * nq:
        f[4 * nq :] = 2 * categorical.take(dec, sign_cdf, n - 4 * nq, np.int8) - 1
    return f


def _blocks_chunks(sym, values, plan: ctxmod.RowColPlan, crows: int, signs, cdfs, sign_c) -> list[np.ndarray]:
    """The chunks of a model-4 stream: magnitudes rectangle by rectangle, then the signs class by class, four per symbol.

    ``cdfs`` are the cumulative tables of the magnitudes, ``sign_c`` those of the sign classes, one per row."""
    rows = sym.shape[0]
    rects = blocks_mod.Rects.of(sym, plan.nrc, plan.rclass, plan.cclass, plan.table_of)
    if values is not None:
        quads = [categorical.table(quad_freqs(f.counts)) for f in signs.fits]
        class_cols = [np.flatnonzero(signs.sclass == g) for g in range(signs.k)]
    chunks = []
    for a in range(0, rows, crows):
        b = min(rows, a + crows)
        enc = categorical.encoder()
        rects.encode(enc, cdfs, a, b)
        if values is not None:
            v = values[a:b]
            for g, cols_g in enumerate(class_cols):
                sub = v if signs.k == 1 else v[:, cols_g]
                _encode_quads(enc, (sub[sub != 0] > 0).astype(np.int32), quads[g], sign_c[g])
        chunks.append(categorical.words(enc))
    return chunks


def decode(desc: dict, buf, count: int, out_dtype: np.dtype, lo: int = 0, hi: int = 0, runner=SERIAL) -> np.ndarray:
    """Decode a validated rowcol stream into ``count`` values of ``out_dtype``, its chunks run by ``runner``.

    ``lo`` and ``hi`` are checked by :func:`validate` already.

    Raises:
        CorruptPayload: the bytes contradict the descriptor.
    """
    try:
        return _decode(desc, memoryview(buf), out_dtype, runner=runner)
    except CorruptPayload:
        raise
    except Exception as e:  # varint, table and range decoder failures alike
        raise CorruptPayload(f"rowcol stream: {e}") from None


def _decode(
    desc: dict,
    mv,
    out_dtype: np.dtype,
    pos: int = 0,
    sclass: np.ndarray | None = None,
    nsc: int = 1,
    by_class: bool = False,
    blocks: bool = False,
    runner=SERIAL,
) -> np.ndarray:
    """Decode from ``pos``; with ``sclass`` (``ctx`` models 2 to 4) the signs use ``nsc`` tables, one per column
    class, class by class if ``by_class`` (model 3); ``blocks`` is model 4."""
    rows, cols, nrc, ncc, nsym = desc["rows"], desc["cols"], desc["nrc"], desc["ncc"], desc["nsym"]
    rclass = np.zeros(rows, np.int64)
    cclass = np.zeros(cols, np.int64)
    if nrc > 1:
        rclass, pos = categorical.read_side(mv, pos, nrc, rows)
    if ncc > 1:
        cclass, pos = categorical.read_side(mv, pos, ncc, cols)
    nctx = nrc + ncc - 1
    table_of, pos = varint.decode(mv, nctx, pos)
    table_of = np.array(table_of, np.int64)
    if table_of[0] != 0 or np.any(np.diff(table_of) > 1) or np.any(np.diff(table_of) < 0):
        raise CorruptPayload("rowcol table map must start at 0 and grow by 0 or 1")
    ntab = int(table_of[-1]) + 1
    models = []  # cumulative tables, one per context table
    for _ in range(ntab):
        c, pos = tables.read(mv, pos, nsym)
        models.append(categorical.table(tables.expand(c)))
    sign_model = sign_f = sign_models = None
    sign_counts = []
    if desc["signs"]:
        sign_f = []
        for _ in range(nsc):
            c, pos = tables.read(mv, pos, 2)
            sign_counts.append(c)
            sign_f.append(tables.expand(c))
        sign_f = categorical.tables_of(np.array(sign_f, np.int64))  # a cumulative table per sign class
        sign_models = list(sign_f)
        if sclass is None or nsc == 1:
            sign_model = sign_models[0]
    crows = desc["chunk_rows"]
    nchunks = categorical.num_chunks(rows, crows)
    chunks = categorical.read_chunks(mv, pos, nchunks)
    if blocks:
        bl = blocks_mod.assemble(
            rows, cols, desc["offset"], nsym, crows, nrc, ncc, rclass.astype(np.uint8), cclass.astype(np.uint8), table_of, models, chunks
        )
        quads = [categorical.table(quad_freqs(c)) for c in sign_counts]
        return _decode_blocks(bl, out_dtype, sclass, quads, sign_models, runner)
    # Classes are below 64, so a context fits a byte and the table map is a byte lookup.
    rclass8, cclass8 = rclass.astype(np.uint8), cclass.astype(np.uint8)
    table8 = table_of.astype(np.uint8)
    signs, offset = desc["signs"], desc["offset"]
    idx_dtype = np.int64 if not signs and offset else np.int32
    out = runner.empty(rows * cols, out_dtype, nchunks)

    def one(i: int) -> None:
        a, b = i * crows, min(rows, (i + 1) * crows)
        tid = table8[rclass8[a:b, None] + cclass8[None, :]].ravel()
        order = np.argsort(tid, kind="stable")  # a radix sort for bytes
        bounds = np.concatenate([[0], np.cumsum(np.bincount(tid, minlength=ntab))])
        del tid
        dec = categorical.decoder(chunks[i])
        idx = np.empty(order.size, idx_dtype)
        for t, m in enumerate(models):  # the chunk's indices, table by table, back to row-major order
            lo_, hi_ = int(bounds[t]), int(bounds[t + 1])
            if hi_ > lo_:
                idx[order[lo_:hi_]] = categorical.take(dec, m, hi_ - lo_)
        del order
        if signs:
            _decode_signs(dec, idx, b - a, cols, sign_model, sign_models, sign_f, sclass, by_class)
        elif offset:
            idx += offset
        if not dec.exhausted():
            raise CorruptPayload(f"rowcol chunk {i}: compressed words left over after the last symbol")
        out[a * cols : b * cols] = idx

    runner.run(nchunks, one, out)
    return out


def _decode_signs(dec, idx, nrows, cols, sign_model, sign_models, sign_f, sclass, by_class) -> None:
    """Give the non-zero magnitudes of one chunk (``idx``, row-major) their signs.

    ``sign_model`` is the one sign table's cumulative table (or None), ``sign_models`` the list of
    every class's and ``sign_f`` the same as one 2-D array."""
    nz = np.flatnonzero(idx)
    if not nz.size:
        return
    if sign_model is not None:
        s = categorical.take(dec, sign_model, nz.size)
        idx[nz] *= 2 * s - 1
    elif by_class:
        # The columns of one class, in order, keep the row-major order of their elements.
        mat = idx.reshape(nrows, cols)
        for g, m in enumerate(sign_models):
            cols_g = np.flatnonzero(sclass == g)
            sub = mat[:, cols_g]
            sel = sub != 0
            n_g = int(np.count_nonzero(sel))
            if n_g:
                sub[sel] *= 2 * categorical.take(dec, m, n_g, sub.dtype) - 1
                mat[:, cols_g] = sub
    else:
        cls = sclass[nz % cols]
        s = dec.decode_ctx(sign_f, cls, np.empty(nz.size, np.int32))
        idx[nz] *= 2 * s - 1


def _decode_blocks(bl, out_dtype: np.dtype, sclass, quads: list, singles, runner=SERIAL) -> np.ndarray:
    """Decode a model-4 stream's chunks (parsed as ``bl``): magnitudes by rectangles, then signs four per symbol."""
    rows, cols = bl.rows, bl.cols
    one_class = not quads or len(quads) == 1
    class_cols = [] if one_class else [np.flatnonzero(sclass == g) for g in range(len(quads))]
    out = runner.empty(rows * cols, out_dtype, bl.nchunks)

    def one(i: int) -> None:
        a, b = bl.chunk_bounds(i)
        dst = out[a * cols : b * cols].reshape(b - a, cols)
        dec = categorical.decoder(bl.words[i])
        bl.fill(dec, i, dst)
        if quads:
            nonzero = dst != 0
            factor = np.ones(dst.shape, np.int8)
            if one_class:
                n = int(np.count_nonzero(nonzero))
                if n:
                    factor[nonzero] = _decode_factors(dec, n, quads[0], singles[0])
            for g, cols_g in enumerate(class_cols):
                nz_g = nonzero[:, cols_g]
                n = int(np.count_nonzero(nz_g))
                if n:
                    f_g = np.ones(nz_g.shape, np.int8)
                    f_g[nz_g] = _decode_factors(dec, n, quads[g], singles[g])
                    factor[:, cols_g] = f_g
            dst *= factor  # magnitudes are at most nsym - 1, whose negation the symbol range holds
        if not dec.exhausted():
            raise CorruptPayload(f"rowcol chunk {i}: compressed words left over after the last symbol")

    runner.run(bl.nchunks, one, out)
    return out
