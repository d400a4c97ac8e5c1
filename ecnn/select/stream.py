"""Choosing the coder and model of one stream of integer symbols (spec/CODING.md 11.3 to 11.5).

:func:`choose` costs the candidates (``const``, ``raw``, ``cat0`` or ``ctx``
order-0, row/column contexts, sparse lanes) with the shared rate estimator
(:mod:`ecnn.context.rate`) and keeps the cheapest; :func:`encode_best` codes
that choice with its coder. The :class:`ecnn.config.Effort` policy says which
candidates are costed and how hard their models are searched.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack
import numpy as np

from ecnn.coder import cat0, categorical, ctx, raw, rowcol
from ecnn.coder.streams import DEFAULT_CHUNK
from ecnn.config import Effort
from ecnn.context import order0, rate, tables, varint
from ecnn.select import classes, lanes

# rowcol is tried only for streams with at least this many symbols and rows/columns.
ROWCOL_MIN_COUNT = 4096
ROWCOL_MIN_SIDE = 8
# The lanes model of ctx streams is tried for matrices with at least this many symbols
# (and at least Effort.lanes_min_zeros of them zero).
LANES_MIN_COUNT = 256


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


def encode_best(
    values: np.ndarray,
    width: int,
    signed: bool,
    chunk: int = DEFAULT_CHUNK,
    rows: int | None = None,
    contexts: int = 0,
    effort: str | Effort = "best",
) -> tuple[dict, bytes]:
    """Code integer values with whichever of const / raw / cat0 / rowcol (/ ctx) is smallest.

    ``width`` and ``signed`` describe the raw fallback and must hold every value.
    ``rows``, if given, views the values as a ``(rows, count // rows)`` matrix
    for the row/column contexts. With ``contexts`` (a format minor version, or
    True for 1), the format 1.1 ``ctx`` coder is tried too, and every candidate
    also pays for its descriptor; from 2 on its rowcol streams are model 5,
    in rANS lanes (format 1.2).
    ``effort`` (a name of :data:`ecnn.config.EFFORTS` or an :class:`ecnn.config.Effort`)
    limits the models tried.
    """
    v = np.asarray(values).ravel()
    if v.size == 0:
        return raw.encode_raw(v, width, signed)
    return encode_choice(v, choose(v, width, signed, chunk, rows, contexts, effort), width, signed, chunk, contexts)


def encode_choice(
    values: np.ndarray, choice: Choice, width: int, signed: bool, chunk: int = DEFAULT_CHUNK, contexts: int = 1
) -> tuple[dict, bytes]:
    """Code non-empty values as :func:`choose` chose (with the same ``width``, ``signed`` and ``chunk``).

    ``contexts`` is the format minor version allowed: a ``ctx`` rowcol plan is written as model 5 from 2
    on, as model 4 below."""
    v = np.asarray(values).ravel()
    kind, how = choice.kind, choice.how
    lo, hi = int(v.min()), int(v.max())
    if kind == "const":
        return raw.encode_const(lo)
    if kind == "cat0":
        return cat0.encode(_indices(v, lo), lo, hi - lo + 1, how, chunk)
    if kind == "ctx0":
        return ctx.encode_order0(_indices(v, lo), lo, hi - lo + 1, how, chunk)
    if kind == "lanes":
        m, plan_ = how
        return ctx.encode_lanes(m, plan_, chunk)
    if kind == "rowcol":
        sym, vals, plan_, offset, n = how
        return rowcol.encode(sym, vals, plan_, offset, n, chunk)
    if kind == "ctx2":
        (sym, vals, plan_, offset, n), signs = how
        model = ctx.MODEL_ROWCOL_LANES if contexts >= 2 else ctx.MODEL_ROWCOL_BLOCKS
        return ctx.encode_rowcol(sym, vals, plan_, offset, n, chunk, signs, model=model)
    return raw.encode_raw(v, *raw_width(lo, hi, width, signed))


def choose(
    values: np.ndarray,
    width: int,
    signed: bool,
    chunk: int = DEFAULT_CHUNK,
    rows: int | None = None,
    contexts: int = 0,
    effort: str | Effort = "best",
) -> Choice:
    """The cheapest coder for non-empty values, with its estimated bits and encoding inputs.

    With ``contexts`` the kinds include ``ctx0`` and ``lanes`` (the two models of
    the ``ctx`` coder), and each estimate includes the descriptor's bytes, so
    that the choice is by total description length. ``effort`` says which
    row/column and lanes models are costed (:class:`ecnn.config.Effort`).
    """
    e = Effort.of(effort)
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
        # The indices are made again for the stream that codes them: a tensor-sized
        # array fewer held while the row/column models are costed.
        fit, bits = rate.order0_bits(_histogram(v, lo, nsym), v.size, chunk)
        if contexts:
            c = cand("ctx0", bits + 8.0 * ctx.order0_header_bytes(lo, nsym, chunk), fit, "ctx")
        else:
            c = cand("cat0", bits, fit, "cat0")
        best = min(best, c, key=lambda ch: ch.bits)
        rowcol_ok = rows and e.rowcol and v.size >= ROWCOL_MIN_COUNT and min(rows, v.size // rows) >= ROWCOL_MIN_SIDE
        if rowcol_ok and classes.tables_can_pay(nsym, v.size):
            rc = _best_rowcol(v, lo, nsym, rows, chunk, e, (1 << (8 * width - 1)) - 1 if signed else 0)
            if rc is not None and contexts:
                best = min(best, _ctx_rowcol(rc, rows, chunk, cand, e), key=lambda ch: ch.bits)
            elif rc is not None:
                best = min(best, cand("rowcol", rc[0], rc[1], "rowcol"), key=lambda ch: ch.bits)
    lanes_ok = e.lanes and contexts and rows and v.size >= LANES_MIN_COUNT and v.size % rows == 0 and lo <= 0 <= hi
    if lanes_ok and np.count_nonzero(v == 0) >= e.lanes_min_zeros * v.size:
        m = v.astype(np.int64).reshape(rows, -1)
        p = lanes.plan(m, chunk, best.bits if e.lanes_bound else None)
        if p is not None:
            best = min(best, cand("lanes", p.bits, (m, p), "ctx"), key=lambda ch: ch.bits)
    return best


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


def _indices(v: np.ndarray, lo: int) -> np.ndarray:
    """``v - lo`` as order-0 and rowcol indices: 8- and 16-bit words as they are, else int32."""
    if v.dtype.kind == "u" and v.dtype.itemsize <= 2:  # bytes and 16-bit words stay as they are
        return v - v.dtype.type(lo) if lo else v
    if v.dtype.kind == "u":
        return (v - v.dtype.type(lo)).astype(np.int32)
    if v.dtype == np.int32:  # lo and every index fit int32
        return v - lo
    if v.dtype.kind == "i" and v.dtype.itemsize < 4:  # 8- and 16-bit symbols: indices as narrow as their count
        hi = int(v.max())
        out = np.empty(v.shape, np.uint8 if hi - lo < 1 << 8 else np.uint16)
        np.subtract(v, np.int32(lo), out=out, casting="unsafe")  # computed in int32, a buffer at a time
        return out
    return (v.astype(np.int64, copy=False) - lo).astype(np.int32)


def _histogram(v: np.ndarray, lo: int, nsym: int) -> np.ndarray:
    """The order-0 histogram of ``v - lo``, counted from ``v`` itself (no tensor-sized indices)."""
    return order0.histogram(v, nsym, lo)


def _magnitudes(vals: np.ndarray, n: int) -> np.ndarray:
    """``|vals|`` (all below ``n``) in the narrowest of uint8, uint16 and int32, without a full-size temporary."""
    out = np.empty(vals.shape, np.uint8 if n <= 1 << 8 else np.uint16 if n <= 1 << 16 else np.int32)
    flat_in, flat_out = vals.reshape(-1), out.reshape(-1)
    for a in range(0, flat_in.size, 1 << 20):
        np.abs(flat_in[a : a + (1 << 20)], out=flat_out[a : a + (1 << 20)], casting="unsafe")
    return out


def _best_rowcol(v: np.ndarray, lo: int, nsym: int, rows: int, chunk: int, e: Effort, most: int):
    """The cheapest rowcol plan for these values, as ``(bits, encoding inputs)``, or None.

    Symmetric values are planned as magnitudes with signs apart (that halves every
    table) where every magnitude is at most ``most``, the largest that the stream's
    symbol range holds on both sides (a decoder rejects others: spec/CODING.md 5.5);
    the class counts are searched, or fixed by ``e.rowcol_classes``.
    """
    cols = v.size // rows
    shape = (rows, cols)
    hi = lo + nsym - 1
    if lo < 0 < hi and max(-lo, hi) + 1 <= tables.MAX_NSYM and max(-lo, hi) <= most:
        # The signed values as they are (read only); magnitudes below 2^20 need 32 bits at most.
        signed_vals = (v if v.dtype.kind == "i" else v.astype(np.int32)).reshape(shape)
        n = max(-lo, hi) + 1
        sym, vals, offset = _magnitudes(signed_vals, n), signed_vals, 0
    else:
        sym, vals, offset, n = _indices(v, lo).reshape(shape), None, lo, nsym
    ok = classes.affordable_classes(n)
    if e.rowcol_classes is None:
        plan_ = classes.ranked_plan(sym, n, vals, ok)
        if plan_ is None:
            return None
    else:
        plan_ = classes.fixed_plan(sym, n, vals, [e.rowcol_classes if e.rowcol_classes in ok else ok[0]])
    nchunks = categorical.num_chunks(rows, categorical.chunk_rows_for(rows, cols, chunk))
    return plan_.bits + rate.chunk_bits(nchunks), (sym, vals, plan_, offset, n)


def _ctx_rowcol(rc, rows: int, chunk: int, cand, e: Effort) -> Choice:
    """A rowcol plan as a ``ctx`` model-4 stream: parameters in the stream, sign tables by column class
    (the counts of ``e.sign_classes`` tried)."""
    bits, how = rc
    sym, vals, plan_, offset, n = how
    signs, nsc = None, 0
    if vals is not None:
        signs = classes.plan_signs(vals, e.sign_classes)
        bits += signs.bits - plan_.sign_fit.total_bits
        nsc = signs.k
    crows = categorical.chunk_rows_for(rows, sym.shape[1], chunk)
    bits += 8.0 * int(varint.varint_sizes(ctx.rowcol_params(offset, n, rows, plan_.nrc, plan_.ncc, nsc, crows)).sum())
    return cand("ctx2", bits, (how, signs), "ctx")


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
