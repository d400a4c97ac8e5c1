"""The ``ctx`` stream (format 1.1): a compact descriptor, and the model's parameters in the stream.

Its descriptor holds only ``coder`` and ``length``; the stream's bytes start
with a varint naming the model (spec/CODING.md, section 5.6):

* model 0, **order-0**: the ``cat0`` coding with its parameters (offset, alphabet
  size, chunk size) as varints at the start of the stream instead of in the
  header, which saves about 35 header bytes per stream;
* model 1, **lanes**: significance coded with lane contexts (density bucket, step
  class, neighbour flags), then the non-zero values (section 5.6.2);
* models 2, 3 and 4, **rowcol**: the ``rowcol`` coding with its parameters in the
  stream, and with signs apart, a sign table per column sign class; model 3
  codes the signs class by class, so that each class decodes with one call
  (section 5.6.3); model 4 (the one the encoder writes) codes the symbols in
  the rectangle order of the ``blocks`` coder, so that decoding needs no sort,
  and the signs four per symbol (section 5.6.4).

Within a chunk of a lanes stream, symbol ``(lane, step)`` depends only on
earlier steps of its lane and on side information, so the decoder decodes one
step of all the chunk's lanes with a single call (a table per symbol).
"""

from __future__ import annotations

import numpy as np

from ecnn.coder import categorical, rans, rowcol
from ecnn.coder.categorical import MAX_CHUNKS
from ecnn.coder.runner import SERIAL
from ecnn.context import order0, sparse, tables, varint
from ecnn.context import rowcol as rowcol_ctx
from ecnn.context.varint import unzigzag, zigzag
from ecnn.errors import CorruptPayload, InvalidField, UnsupportedCoding

KEYS = {"coder", "length"}
MODEL_ORDER0 = 0
MODEL_LANES = 1
MODEL_ROWCOL = 2  # signs in row-major order, each with its column's table
MODEL_ROWCOL_GROUPED = 3  # signs class by class
MODEL_ROWCOL_BLOCKS = 4  # symbols in block order, signs class by class four per symbol
MODEL_ROWCOL_LANES = rans.MODEL_ROWCOL_LANES  # model 4 in rANS lanes (format 1.2)
ROWCOL_MODELS = (MODEL_ROWCOL, MODEL_ROWCOL_GROUPED, MODEL_ROWCOL_BLOCKS)
_FLAGS = 3  # bit 0: lanes are columns; bit 1: value tables by previous sign


# --- encoding ---------------------------------------------------------------


def encode_order0(indices: np.ndarray, offset: int, nsym: int, fit: order0.Order0Fit, chunk: int) -> tuple[dict, bytes]:
    """A model-0 stream: the cat0 coding with its parameters in the stream."""
    head = varint.encode([MODEL_ORDER0, zigzag(int(offset)), int(nsym), int(chunk)])
    data = head + fit.blob + categorical.chunks_bytes(categorical.encode(indices, tables.expand(fit.counts), chunk))
    return {"coder": "ctx", "length": len(data)}, data


def order0_header_bytes(offset: int, nsym: int, chunk: int) -> int:
    """Bytes of a model-0 stream's parameters."""
    return int(varint.varint_sizes([MODEL_ORDER0, zigzag(int(offset)), int(nsym), int(chunk)]).sum())


def _sig_table(sig: np.ndarray) -> np.ndarray:
    """Expanded frequencies of every significance byte, one row of two per byte.

    Raises:
        ValueError: a byte that is not a significance table (spec/CODING.md, section 5.6.2).
    """
    return np.array([sparse.sig_freqs(int(b)) for b in sig], np.int64).reshape(-1, 2)


def encode_lanes(m: np.ndarray, plan: sparse.LanePlan, chunk: int) -> tuple[dict, bytes]:
    """A model-1 stream for a ``(rows, cols)`` array of integer symbols."""
    m = np.asarray(m, np.int64)
    v = m.T if plan.transpose else m
    lanes, steps = v.shape
    cl = sparse.chunk_lanes_for(lanes, steps, chunk)
    flags = int(plan.transpose) | (2 if plan.vsign else 0)
    parts = [
        varint.encode(
            [MODEL_LANES, plan.rows, flags, plan.nb, plan.k, plan.d1, plan.d2, zigzag(plan.vlo), zigzag(plan.vhi), cl]
        )
    ]
    if plan.k > 1:
        parts.append(categorical.side_bytes(plan.sclass, plan.sclass_fit))
    parts.append(plan.sig.astype(np.uint8).tobytes())
    parts += [f.blob for f in plan.vfits]
    sig_c = categorical.tables_of(_sig_table(plan.sig))
    val_c = categorical.tables_of(np.array([tables.expand(f.counts) for f in plan.vfits], np.int64)) if plan.vfits else None
    chunks = []
    for a in range(0, lanes, cl):
        vc = v[a : a + cl]
        z = (vc != 0).astype(np.int64)
        x = sparse.contexts(z, plan.nb, plan.k, plan.sclass, plan.d1, plan.d2)
        enc = categorical.encoder()
        enc.encode_ctx(sig_c, x.T.ravel(), z.T.ravel())  # step by step, lanes in order
        if val_c is not None:
            sel = z.T.astype(bool)
            idx = sparse.value_index(vc.T[sel], plan.vlo)
            if plan.vsign:
                enc.encode_ctx(val_c, sparse.prev_sign(vc).T[sel], idx)
            else:
                enc.encode(val_c[0], idx)
        chunks.append(categorical.words(enc))
    parts.append(categorical.chunks_bytes(chunks))
    data = b"".join(parts)
    return {"coder": "ctx", "length": len(data)}, data


def rowcol_params(offset: int, nsym: int, rows: int, nrc: int, ncc: int, nsc: int, crows: int, model: int = MODEL_ROWCOL_BLOCKS) -> list[int]:
    """The varints that start a model-2, 3 or 4 stream (the model first)."""
    return [model, zigzag(int(offset)), int(nsym), int(rows), int(nrc), int(ncc), int(nsc), int(crows)]


def encode_rowcol(
    sym: np.ndarray,
    values: np.ndarray | None,
    plan: rowcol_ctx.RowColPlan,
    offset: int,
    nsym: int,
    chunk: int,
    signs: rowcol_ctx.SignPlan | None,
    model: int = MODEL_ROWCOL_BLOCKS,
) -> tuple[dict, bytes]:
    """A model-4 (or model-2, 3 or 5) stream: rowcol with its parameters in the stream and, with signs, sign tables by column class.

    Model 5 (format 1.2) falls back to model 4 where it cannot code the stream (a table of more than 2^15 symbols)."""
    rows, cols = sym.shape
    crows = categorical.chunk_rows_for(rows, cols, chunk)
    if model == MODEL_ROWCOL_LANES:
        try:
            return rans.encode_rowcol(sym, values, plan, signs, offset, nsym, crows)
        except ValueError:
            model = MODEL_ROWCOL_BLOCKS
    if model not in ROWCOL_MODELS:
        raise ValueError(f"not a rowcol model: {model}")
    nsc = 0 if values is None else signs.k
    parts = [varint.encode(rowcol_params(offset, nsym, rows, plan.nrc, plan.ncc, nsc, crows, model))]
    if nsc > 1:
        parts.append(categorical.side_bytes(signs.sclass, signs.side_fit))
    parts.append(rowcol.encode_body(sym, values, plan, crows, signs, grouped=model == MODEL_ROWCOL_GROUPED, blocks=model == MODEL_ROWCOL_BLOCKS))
    data = b"".join(parts)
    return {"coder": "ctx", "length": len(data)}, data


def encode(model: int, *args, **kw) -> tuple[dict, bytes]:
    """A ``ctx`` stream of ``model``: the arguments are those of :func:`encode_order0`,
    :func:`encode_lanes` or :func:`encode_rowcol` (which also takes the rowcol ``model``)."""
    if model == MODEL_ORDER0:
        return encode_order0(*args, **kw)
    if model == MODEL_LANES:
        return encode_lanes(*args, **kw)
    return encode_rowcol(*args, model=model, **kw)


# --- decoding ---------------------------------------------------------------


def validate(desc: dict, count: int, lo: int, hi: int) -> None:
    """The ``ctx`` checks after the generic ones (:func:`ecnn.coder.streams.validate`); the rest are in the stream.

    Raises:
        InvalidField: no symbols, or an empty stream.
    """
    if count == 0:
        raise InvalidField("a ctx stream must code at least one symbol")
    if desc["length"] < 1:
        raise InvalidField("a ctx stream has at least its model byte")


def decode_stream(desc: dict, buf, count: int, out_dtype: np.dtype, lo: int, hi: int, runner=SERIAL) -> np.ndarray:
    """:func:`decode` with the arguments of every coder's decoder (the descriptor holds nothing more)."""
    return decode(buf, count, out_dtype, lo, hi, runner)


def decode(buf, count: int, out_dtype: np.dtype, lo: int, hi: int, runner=SERIAL) -> np.ndarray:
    """Decode a ctx stream of ``count`` symbols in ``[lo, hi]`` into ``out_dtype``, its chunks run by ``runner``.

    Raises:
        CorruptPayload: bad parameters, tables or coded data.
    """
    mv = memoryview(buf)
    try:
        (model,), pos = varint.decode(mv, 1, 0)
        if model == MODEL_ORDER0:
            return _decode_order0(mv, pos, count, out_dtype, lo, hi, runner)
        if model == MODEL_LANES:
            return _decode_lanes(mv, pos, count, out_dtype, lo, hi, runner)
        if model in ROWCOL_MODELS:
            return _decode_rowcol(mv, pos, count, out_dtype, lo, hi, model, runner)
        if model == MODEL_ROWCOL_LANES:
            return rans.decode_rowcol(mv, pos, count, out_dtype, lo, hi, runner)
    except (CorruptPayload, UnsupportedCoding):
        raise
    except Exception as e:  # varint, table and range decoder failures alike
        raise CorruptPayload(f"ctx stream: {type(e).__name__}: {e}") from None
    raise UnsupportedCoding(f"ctx stream: reserved model {model}")


def model_minor(buf) -> int:
    """The format minor version that introduced the model of a ctx stream (model 5: 1.2; the others 1.1)."""
    try:
        (model,), _ = varint.decode(memoryview(buf), 1, 0)
    except Exception:  # noqa: BLE001 - an unreadable model is the decoder's to report
        return 1
    return 2 if model == MODEL_ROWCOL_LANES else 1


def symbol_bounds(buf) -> tuple[int, int] | None:
    """The range ``(lo, hi)`` a ctx stream's own parameters allow its symbols, or None if they do not parse.

    Read from the first bytes of the stream only; :func:`decode` checks the
    parameters and the symbols fall in this range.
    """
    mv = memoryview(buf)
    try:
        (model,), pos = varint.decode(mv, 1, 0)
        if model == MODEL_ORDER0:
            (zo, nsym, _), _ = varint.decode(mv, 3, pos)
            return unzigzag(zo), unzigzag(zo) + nsym - 1
        if model in ROWCOL_MODELS or model == MODEL_ROWCOL_LANES:
            (zo, nsym, _, _, _, nsc), _ = varint.decode(mv, 6, pos)
            return (-(nsym - 1), nsym - 1) if nsc else (unzigzag(zo), unzigzag(zo) + nsym - 1)
        if model == MODEL_LANES:
            params, _ = varint.decode(mv, 8, pos)
            vlo, vhi = unzigzag(params[6]), unzigzag(params[7])
            return min(vlo, 0), max(vhi, 0)
    except Exception:  # noqa: BLE001 - decode reports the damage
        return None
    return None


def _decode_order0(mv, pos: int, count: int, out_dtype: np.dtype, lo: int, hi: int, runner) -> np.ndarray:
    (zo, nsym, chunk), pos = varint.decode(mv, 3, pos)
    offset = unzigzag(zo)
    if not 2 <= nsym <= tables.MAX_NSYM:
        raise CorruptPayload(f"ctx order-0: nsym {nsym} outside 2..{tables.MAX_NSYM}")
    if offset < lo or offset + nsym - 1 > hi:
        raise CorruptPayload("ctx order-0: alphabet outside the symbol range")
    if chunk < 1 or chunk >= 1 << 63:
        raise CorruptPayload("ctx order-0: chunk must be 1..2^63-1")
    k = categorical.num_chunks(count, chunk)
    if k > MAX_CHUNKS:
        raise CorruptPayload(f"ctx order-0: more than {MAX_CHUNKS} chunks")
    counts, pos = tables.read(mv, pos, nsym)
    chunks = categorical.read_chunks(mv, pos, k)
    cdf = categorical.table(tables.expand(counts))
    out = runner.empty(count, out_dtype, k)

    def one(i: int) -> None:
        start = i * chunk
        n = min(chunk, count - start)
        categorical.decode_into(chunks[i], cdf, out[start : start + n], offset)

    runner.run(k, one, out)
    return out


def _decode_rowcol(mv, pos: int, count: int, out_dtype: np.dtype, lo: int, hi: int, model: int, runner) -> np.ndarray:
    (zo, nsym, rows, nrc, ncc, nsc, crows), pos = varint.decode(mv, 7, pos)
    offset = unzigzag(zo)
    if not 2 <= nsym <= tables.MAX_NSYM:
        raise CorruptPayload(f"ctx rowcol: nsym {nsym} outside 2..{tables.MAX_NSYM}")
    if rows < 1 or count % rows:
        raise CorruptPayload(f"ctx rowcol: {rows} rows do not divide {count} symbols")
    cols = count // rows
    if not 1 <= nrc <= min(rowcol_ctx.MAX_CLASSES, rows) or not 1 <= ncc <= min(rowcol_ctx.MAX_CLASSES, cols):
        raise CorruptPayload("ctx rowcol: class counts outside 1..min(64, rows or cols)")
    if nsc > min(rowcol_ctx.MAX_CLASSES, cols):
        raise CorruptPayload("ctx rowcol: sign classes outside 0..min(64, cols)")
    if nsc and (offset != 0 or -(nsym - 1) < lo or nsym - 1 > hi):
        raise CorruptPayload("ctx rowcol: magnitudes outside the symbol range, or an offset with signs")
    if not nsc and (offset < lo or offset + nsym - 1 > hi):
        raise CorruptPayload("ctx rowcol: alphabet outside the symbol range")
    if not 1 <= crows <= rows or categorical.num_chunks(rows, crows) > MAX_CHUNKS:
        raise CorruptPayload("ctx rowcol: rows per chunk outside 1..rows, or too many chunks")
    sclass = None
    if nsc > 1:
        sclass, pos = categorical.read_side(mv, pos, nsc, cols)
    elif nsc == 1:
        sclass = np.zeros(cols, np.int64)
    desc = {"rows": rows, "cols": cols, "nrc": nrc, "ncc": ncc, "nsym": nsym, "signs": nsc > 0, "offset": offset, "chunk_rows": crows}
    grouped, blocks = model == MODEL_ROWCOL_GROUPED, model == MODEL_ROWCOL_BLOCKS
    return rowcol._decode(desc, mv, out_dtype, pos, sclass, max(nsc, 1), grouped, blocks, runner)


def _decode_lanes(mv, pos: int, count: int, out_dtype: np.dtype, lo: int, hi: int, runner) -> np.ndarray:
    (rows, flags, nb, k, d1, d2, zlo, zhi, cl), pos = varint.decode(mv, 9, pos)
    if rows < 1 or count % rows:
        raise CorruptPayload(f"ctx lanes: {rows} rows do not divide {count} symbols")
    cols = count // rows
    if flags & ~_FLAGS:
        raise UnsupportedCoding(f"ctx lanes: reserved flag bits in {flags}")
    transpose, vsign = bool(flags & 1), bool(flags & 2)
    lanes, steps = (cols, rows) if transpose else (rows, cols)
    vlo, vhi = unzigzag(zlo), unzigzag(zhi)
    if not 1 <= nb <= sparse.MAX_BUCKETS:
        raise CorruptPayload(f"ctx lanes: {nb} buckets outside 1..{sparse.MAX_BUCKETS}")
    if not 1 <= k <= min(sparse.MAX_CLASSES, steps):
        raise CorruptPayload(f"ctx lanes: {k} step classes outside 1..min(64, steps)")
    if d1 >= steps or d2 >= steps:
        raise CorruptPayload("ctx lanes: a neighbour offset is not below the number of steps")
    if not lo <= 0 <= hi or vlo > vhi or vlo < lo or vhi > hi:
        raise CorruptPayload("ctx lanes: value range outside the symbol range")
    nval = sparse.nval_of(vlo, vhi)
    if not 1 <= nval <= tables.MAX_NSYM:
        raise CorruptPayload(f"ctx lanes: {nval} non-zero values outside 1..{tables.MAX_NSYM}")
    if not 1 <= cl <= lanes:
        raise CorruptPayload("ctx lanes: lanes per chunk outside 1..lanes")
    nchunks = -(-lanes // cl)
    if nchunks > MAX_CHUNKS:
        raise CorruptPayload(f"ctx lanes: more than {MAX_CHUNKS} chunks")
    if nchunks * steps > sparse.max_lane_steps(count):
        raise CorruptPayload(f"ctx lanes: K * S = {nchunks * steps} steps exceed max(2^16, N div 16)")
    sclass = np.zeros(steps, np.int64)
    if k > 1:
        sclass, pos = categorical.read_side(mv, pos, k, steps)
    nx = nb * k * (2 if d1 else 1) * (2 if d2 else 1)
    if pos + nx > len(mv):
        raise CorruptPayload("ctx lanes: significance tables run past the end of the stream")
    sig = np.frombuffer(mv, np.uint8, count=nx, offset=pos)
    pos += nx
    sig_c = categorical.tables_of(_sig_table(sig))  # ValueError on a bad byte
    vmodels = []
    if nval >= 2:
        for _ in range(3 if vsign else 1):
            c, pos = tables.read(mv, pos, nval)
            vmodels.append(tables.expand(c))
    val_c = categorical.tables_of(np.array(vmodels, np.int64).reshape(len(vmodels), -1 if vmodels else 2))
    chunks = categorical.read_chunks(mv, pos, nchunks)
    out = runner.empty((steps, lanes) if transpose else (lanes, steps), out_dtype, nchunks)

    def one(i: int) -> None:
        a, b = i * cl, min(lanes, (i + 1) * cl)
        vals = _decode_lanes_chunk(chunks[i], b - a, steps, nb, k, sclass, d1, d2, sig_c, val_c, vsign, vlo, vhi, i)
        if transpose:
            out[:, a:b] = vals.T
        else:
            out[a:b] = vals

    runner.run(nchunks, one, out)
    return out.reshape(-1)


def _decode_lanes_chunk(words, n, steps, nb, k, sclass, d1, d2, sig_c, val_c, vsign, vlo, vhi, i) -> np.ndarray:
    """One chunk of ``n`` lanes: significance step by step (a table per lane), then the non-zero values.

    ``sig_c`` and ``val_c`` are the cumulative tables of the significance and value models, one per row.
    """
    dec = categorical.decoder(words)
    z = np.zeros((steps, n), np.int32)  # step-major while decoding
    n1 = np.zeros(n, np.int64)
    base = sclass.copy()
    for s in range(steps):
        x = sparse.buckets(s, n1, nb) * k + base[s]
        for d in (d1, d2):
            if d:
                x = 2 * x + (z[s - d] if s >= d else 0)
        dec.decode_ctx(sig_c, x, z[s])
        n1 += z[s]
    vals = np.zeros((steps, n), np.int64)
    sel = z.astype(bool)
    total = int(n1.sum())
    if val_c.shape[0] == 0:
        vals[sel] = vlo  # one possible non-zero value
    elif not vsign:
        if total:
            vals[sel] = sparse.value_of(categorical.take(dec, val_c[0], total), vlo)
    else:
        last = np.zeros(n, np.int64)  # 0 none, 1 negative, 2 positive
        for s in range(steps):
            lanes_s = np.flatnonzero(sel[s])
            if lanes_s.size == 0:
                continue
            got = dec.decode_ctx(val_c, last[lanes_s], np.empty(lanes_s.size, np.int64))
            v = sparse.value_of(got, vlo)
            vals[s, lanes_s] = v
            last[lanes_s] = np.where(v < 0, 1, 2)
    if not dec.exhausted():
        raise CorruptPayload(f"ctx lanes chunk {i}: compressed words left over after the last symbol")
    return vals.T
