"""The ``rans`` stream (format 1.2): the ``blocks`` layout coded in interleaved rANS lanes (spec/CODING.md, section 5.9).

The model and the symbol order are those of ``blocks`` (section 5.8): row and
column classes, a table map, ``T`` stored tables, and chunks of ``chunk_rows``
rows whose symbols come rectangle by rectangle. Only the entropy coder
differs: the tables are expanded to frequencies summing to ``2**precision``
(section 7.3), and a chunk's symbols are dealt to ``lanes`` rANS coders in
turn, each with a 32-bit state and its own stream of 16-bit words. A symbol
decodes with one table lookup, no division, and the lanes of a chunk are
independent chains, so a core overlaps them (and a GPU could run every lane
of every chunk at once).

Decoding runs in the compiled core (:mod:`ecnn._core._rans`), chunk by chunk;
:class:`Lanes` has the same ``decode_chunk`` as :class:`ecnn.coder.blocks.Blocks`,
so the ``fields`` representation merges signs and tails in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecnn._core import _rans
from ecnn.coder import blocks, categorical
from ecnn.coder.categorical import MAX_CHUNKS
from ecnn.coder.runner import SERIAL
from ecnn.context import tables, varint
from ecnn.context import rowcol as rowcol_ctx
from ecnn.context.varint import unzigzag, zigzag
from ecnn.errors import CorruptPayload, InvalidField

KEYS = {"coder", "length"}
LANES = 4  # lanes per chunk that the encoder writes below WIDE_LANES * LANE_SYMBOLS symbols, at most
WIDE_LANES = (32, 16)  # lanes of larger chunks: vectors of 8 lanes (the compiled decoder's SIMD path)
LANE_SYMBOLS = 1 << 13  # and at least this many symbols per lane (each lane costs about 6 bytes)
MAX_LANES = _rans.MAX_LANES
MIN_PRECISION, MAX_PRECISION = _rans.MIN_PRECISION, _rans.MAX_PRECISION
PRECISION_SLACK = 1e-3  # the encoder takes the lowest precision within this fraction of the best size
MAX_NSYM = 1 << 16  # symbols of one table (the decoder keeps 16-bit symbols)


def validate(desc: dict, count: int, lo: int = 0, hi: int = 0) -> None:
    """Descriptor checks of a ``rans`` stream (after ``coder``, unknown keys and ``length``); the rest are in the stream.

    Raises:
        InvalidField: no symbols, or a length below the parameters' 8 bytes and one lane's state.
    """
    if count < 1:
        raise InvalidField("a rans stream must code at least one symbol")
    if desc["length"] < 13:
        raise InvalidField("a rans stream has at least its eight parameters, one lane size and one state")


# --- tables -----------------------------------------------------------------------


def freqs(counts: np.ndarray, precision: int) -> np.ndarray:
    """Stored counts to rANS frequencies summing to ``2**precision`` (spec/CODING.md, section 7.3).

    A count of 0 gives frequency 0 (that symbol cannot be coded); every other
    count gives at least 1.

    Raises:
        ValueError: all counts zero, or more non-zero counts than ``2**precision``.
    """
    return freqs_rows(np.asarray(counts, np.int64)[None, :], precision)[0]


def freqs_rows(counts: np.ndarray, precision: int) -> np.ndarray:
    """:func:`freqs` of every row of a ``(k, n)`` array of counts: a ``(k, n)`` uint32 array (compiled)."""
    c = np.ascontiguousarray(counts, np.int64)
    if c.ndim != 2:
        c = c.reshape(1, -1)
    f = np.empty(c.shape, np.uint32)
    try:
        _rans.freqs(c, precision, f)
    except ValueError:
        if np.any(c.sum(axis=1) == 0):
            raise ValueError("all stored counts are zero") from None
        raise ValueError(f"a table has more used symbols than 2^{precision}") from None
    return f


def cumulative(f: np.ndarray) -> np.ndarray:
    """``(k, n + 1)`` uint32 cumulative frequencies of a ``(k, n)`` array."""
    c = np.zeros((f.shape[0], f.shape[1] + 1), np.uint32)
    np.cumsum(f, axis=1, out=c[:, 1:])
    return c


def cost_bits(hists: list[np.ndarray], counts: list[np.ndarray], precision: int) -> float:
    """Ideal code length in bits of symbol histograms under their tables' frequencies at ``precision``."""
    f = freqs_rows(np.stack(counts), precision).astype(np.float64)
    bits = 0.0
    for h, fr in zip(hists, f):
        used = h > 0
        bits -= float(h[used] @ (np.log2(fr[used]) - precision))
    return bits


# --- encoding -----------------------------------------------------------------


def encode(
    sym: np.ndarray, p: rowcol_ctx.RowColPlan, offset: int, nsym: int, crows: int, lanes: int | None = None
) -> tuple[dict, bytes]:
    """A ``rans`` stream of a ``(rows, cols)`` array of indices ``0..nsym-1`` (symbols ``index + offset``).

    The plan is the ``blocks`` one; the precision is the lowest whose coded
    size is within :data:`PRECISION_SLACK` of the best; ``lanes`` by default
    by :func:`_lanes_for`.

    Raises:
        ValueError: a symbol that its table gives count 0, or an alphabet over :data:`MAX_NSYM`.
    """
    rows, cols = sym.shape
    lanes = _lanes_for(rows, cols, crows) if lanes is None else lanes
    rects = blocks.Rects.of(sym, p.nrc, p.rclass, p.cclass, p.table_of)
    counts = [np.asarray(f.counts, np.int64) for f in p.fits]
    prec = _precision(_plan_hists(p, rects, sym.size, nsym, len(counts)), counts)
    cum = cumulative(freqs_rows(np.stack(counts), prec))
    parts = [varint.encode([zigzag(int(offset)), int(nsym), int(rows), int(p.nrc), int(p.ncc), int(crows), int(lanes), prec])]
    if p.nrc > 1:
        parts.append(categorical.side_bytes(p.rclass, p.rows_fit))
    if p.ncc > 1:
        parts.append(categorical.side_bytes(p.cclass, p.cols_fit))
    parts.append(varint.encode(p.table_of))
    parts += [f.blob for f in p.fits]
    sizes, chunks = [], []
    orderer = _Orderer(rects)
    for a in range(0, rows, crows):
        s, t = orderer.chunk(a, min(rows, a + crows))
        data, words = _rans.encode(cum, prec, s, t, lanes)
        sizes += words
        chunks.append(data)
    parts.append(varint.encode(sizes))
    parts += chunks
    data = b"".join(parts)
    return {"coder": "rans", "length": len(data)}, data


def _lanes_for(rows: int, cols: int, crows: int) -> int:
    """Lanes per chunk: the largest of :data:`WIDE_LANES` with :data:`LANE_SYMBOLS` symbols each, else
    :data:`LANES`, fewer for chunks of fewer than ``LANES * LANE_SYMBOLS`` symbols."""
    size = min(rows, crows) * cols
    for wide in WIDE_LANES:
        if size >= wide * LANE_SYMBOLS:
            return wide
    return min(LANES, max(1, size // LANE_SYMBOLS))


def _precision(hists: list[np.ndarray], counts: list[np.ndarray]) -> int:
    """The lowest precision whose coded size of the histograms is within :data:`PRECISION_SLACK` of the best.

    Raises:
        ValueError: a symbol occurs that its stored table gives count 0, or a table uses more than ``2**15`` symbols.
    """
    for h, c in zip(hists, counts):
        if np.any((h > 0) & (c == 0)):
            raise ValueError("a symbol occurs that its stored table gives count 0")
    costs = {}
    for prec in range(MIN_PRECISION, MAX_PRECISION + 1):
        if max(np.count_nonzero(c) for c in counts) <= 1 << prec:
            costs[prec] = cost_bits(hists, counts, prec)
    if not costs:
        raise ValueError(f"a table uses more than 2^{MAX_PRECISION} symbols")
    best = min(costs.values())
    return min(q for q, b in costs.items() if b <= best * (1 + PRECISION_SLACK) + 64)


class _Orderer:
    """The encoder's chunks in decoding order (section 5.8, and the signs of section 5.6.5), by the compiled core."""

    def __init__(self, rects: blocks.Rects, values: np.ndarray | None = None, sclass: np.ndarray | None = None, nsc: int = 0, ntab: int = 0):
        self.rects = rects
        self.rclass = np.ascontiguousarray(rects.rclass, np.uint8)  # classes are below 64
        flat = [r for g in rects.runs for r in g]
        self.runs = np.array(flat, np.int32).reshape(-1, 3)
        self.run_start = np.concatenate([[0], np.cumsum([len(g) for g in rects.runs])]).astype(np.int64)
        self.values = values if nsc else None
        self.ntab = ntab
        self.nsc = nsc
        if nsc:
            self.scols = np.argsort(sclass, kind="stable").astype(np.int64)
            self.sstart = np.concatenate([[0], np.cumsum(np.bincount(sclass, minlength=nsc))]).astype(np.int64)
        else:
            self.scols = self.sstart = None

    def chunk(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``a .. b-1``: the symbols and each one's table."""
        mag = self.rects.sym[a:b]
        cap = mag.size + (mag.size // 4 + 3 * self.nsc if self.nsc else 0)
        syms, tabs = np.empty(cap, np.int32), np.empty(cap, np.int32)
        vals = None if self.values is None else np.ascontiguousarray(self.values[a:b])
        n = _rans.chunk_order(mag, self.rclass[a:b], self.runs, self.run_start, vals, self.scols, self.sstart, self.ntab, syms, tabs)
        return syms[:n], tabs[:n]


def _plan_hists(p: rowcol_ctx.RowColPlan, rects: blocks.Rects, count: int, nsym: int, ntab: int) -> list[np.ndarray]:
    """The histogram of the symbols each table codes: from the plan's context counts when it holds those of
    every symbol, else counted."""
    if p.counts is not None and p.counts.shape == (p.nrc + p.ncc - 1, nsym) and int(p.counts.sum()) == count:
        return list(np.add.reduceat(p.counts, np.flatnonzero(np.diff(p.table_of, prepend=-1)), axis=0))
    return _table_hists(rects, ntab, nsym)


def _table_hists(rects: blocks.Rects, ntab: int, nsym: int) -> list[np.ndarray]:
    """The histogram of the symbols each table codes."""
    h = np.zeros((ntab, nsym), np.int64)
    cols = rects.sym.shape[1]
    step = max(1, (1 << 20) // max(cols, 1))  # rows at a time: bounded temporaries
    for g in range(len(rects.runs)):
        sel = np.flatnonzero(rects.rclass == g)
        for k in range(0, sel.size, step):
            block = rects.sym[sel[k : k + step]]
            for t, c0, c1 in rects.runs[g]:
                h[t] += np.bincount(block[:, c0:c1].ravel(), minlength=nsym)
    return list(h)


# --- decoding ------------------------------------------------------------------


@dataclass
class Lanes:
    """A parsed ``rans`` stream, ready to decode chunk by chunk (the interface of :class:`ecnn.coder.blocks.Blocks`).

    Attributes:
        rows, cols: the matrix view.
        offset, nsym: symbols are ``offset .. offset + nsym - 1``.
        chunk_rows, nchunks: rows per chunk and number of chunks.
    """

    rows: int
    cols: int
    offset: int
    nsym: int
    chunk_rows: int
    nchunks: int
    rclass: np.ndarray  # uint8
    runs: np.ndarray  # int32 (t, c0, c1) triples
    run_start: np.ndarray  # int64, nrc + 1
    order: np.ndarray | None  # int64 column order, None for the identity
    tables: object  # the compiled decoding tables
    sizes: np.ndarray  # uint64 (nchunks, lanes) words per lane
    spans: list  # (start, end) byte range of each chunk in data
    data: memoryview  # the stream's bytes

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """First row and end row of chunk ``i``."""
        a = i * self.chunk_rows
        return a, min(self.rows, a + self.chunk_rows)

    def decode_chunk(self, i: int, dst: np.ndarray, shift: int = 0) -> None:
        """Decode chunk ``i`` into ``dst``, a C-contiguous ``(b - a, cols)`` integer array: each symbol shifted left by ``shift``.

        ``dst`` must hold ``(offset + nsym - 1) << shift``.

        Raises:
            CorruptPayload: the chunk's lanes are damaged or not used up exactly.
        """
        a, b = self.chunk_bounds(i)
        s, e = self.spans[i]
        try:
            _rans.decode_blocks(
                self.tables, self.data[s:e], self.sizes[i], self.rclass[a:b], self.runs, self.run_start,
                self.order, self.offset, shift, dst,
            )
        except ValueError as err:
            raise CorruptPayload(f"rans chunk {i}: {err}") from None


def parse(buf, count: int, lo: int, hi: int) -> Lanes:
    """Read a ``rans`` stream's parameters, classes, tables and lane index (section 5.9).

    Raises:
        CorruptPayload: any check of section 5.9 fails.
    """
    try:
        return _parse(memoryview(buf), count, lo, hi)
    except CorruptPayload:
        raise
    except Exception as e:  # varint, table and range decoder failures alike
        raise CorruptPayload(f"rans stream: {e}") from None


def _parse(mv, count: int, lo: int, hi: int) -> Lanes:
    (zoff, nsym, rows, nrc, ncc, crows, lanes, prec), pos = varint.decode(mv, 8, 0)
    offset = unzigzag(zoff)
    if not 2 <= nsym <= MAX_NSYM:
        raise CorruptPayload(f"rans nsym {nsym} outside 2..{MAX_NSYM}")
    if offset < lo or offset + nsym - 1 > hi:
        raise CorruptPayload("rans alphabet falls outside the allowed symbol range")
    if not 1 <= rows <= count or count % rows:
        raise CorruptPayload(f"rans rows {rows} do not divide {count} symbols")
    cols = count // rows
    if not 1 <= nrc <= min(blocks.MAX_CLASSES, rows) or not 1 <= ncc <= min(blocks.MAX_CLASSES, cols):
        raise CorruptPayload("rans class counts out of range")
    if not 1 <= crows <= rows:
        raise CorruptPayload(f"rans chunk_rows {crows} outside 1..{rows}")
    if not 1 <= lanes <= MAX_LANES:
        raise CorruptPayload(f"rans lanes {lanes} outside 1..{MAX_LANES}")
    if not MIN_PRECISION <= prec <= MAX_PRECISION:
        raise CorruptPayload(f"rans precision {prec} outside {MIN_PRECISION}..{MAX_PRECISION}")
    nchunks = categorical.num_chunks(rows, crows)
    if nchunks * lanes > MAX_CHUNKS:
        raise CorruptPayload(f"rans stream has more than {MAX_CHUNKS} lanes")
    rclass, cclass, table_of, counts, pos = blocks.read_layout(mv, pos, rows, cols, nrc, ncc, nsym, "rans")
    f = freqs_rows(np.stack(counts), prec)
    sizes, spans = _read_lane_index(mv, pos, nchunks, lanes, "rans")
    flat, run_start, order = _schedule(cclass, table_of, nrc, ncc)
    return Lanes(
        rows, cols, offset, nsym, crows, nchunks, rclass, flat, run_start, order, _rans.tables(f, prec), sizes, spans, mv
    )


def _read_lane_index(mv, pos: int, nchunks: int, lanes: int, what: str) -> tuple[np.ndarray, list]:
    """The lane index at ``pos`` (section 5.9): words per lane as a ``(nchunks, lanes)`` uint64 array, and each
    chunk's ``(start, end)`` byte range; the lanes must end the stream.

    Raises:
        CorruptPayload: a lane size of 2^62 or more, or lanes that do not end exactly at the end of ``mv``.
        ValueError: a bad varint.
    """
    sizes, pos = varint.decode(mv, nchunks * lanes, pos)
    sizes = np.array(sizes, np.uint64).reshape(nchunks, lanes)
    if np.any(sizes >= 1 << 62):
        raise CorruptPayload(f"{what} lane size out of range")
    ends = pos + np.cumsum((4 * lanes + 2 * sizes.sum(axis=1, dtype=np.uint64)).astype(np.int64))
    if int(ends[-1]) != len(mv):
        raise CorruptPayload(f"{what} stream length does not match its lane index")
    starts = np.concatenate([[pos], ends[:-1]])
    return sizes, [(int(s), int(e)) for s, e in zip(starts, ends)]


def _schedule(cclass: np.ndarray, table_of: np.ndarray, nrc: int, ncc: int) -> tuple:
    """The compiled decoder's view of the blocks order: the runs as int32 ``(t, c0, c1)`` triples, where each
    row class's runs start (int64, ``nrc + 1``), and the column order (int64; None for one column class)."""
    # As blocks.column_runs, for every row class at once: the tables along the ordered columns, cut where they change.
    order = np.argsort(cclass, kind="stable")
    cs = np.asarray(cclass, np.int64)[order]
    cols = cs.size
    t = np.asarray(table_of, np.int64)[np.arange(nrc)[:, None] + cs[None, :]]
    cut = np.ones((nrc, cols), bool)
    cut[:, 1:] = t[:, 1:] != t[:, :-1]
    g, c0 = np.nonzero(cut)  # row-major: class by class, columns in order
    c1 = np.empty_like(c0)
    c1[:-1] = np.where(g[1:] == g[:-1], c0[1:], cols)
    c1[-1:] = cols
    flat = np.ascontiguousarray(np.stack([t[g, c0], c0, c1], axis=1), np.int32)
    run_start = np.concatenate([[0], np.cumsum(np.bincount(g, minlength=nrc))]).astype(np.int64)
    return flat, run_start, np.ascontiguousarray(order, np.int64) if ncc > 1 else None


def decode(desc: dict, buf, count: int, out_dtype, lo: int, hi: int, runner=SERIAL) -> np.ndarray:
    """Decode a whole validated ``rans`` stream into ``count`` values of ``out_dtype``, its chunks run by ``runner``.

    Raises:
        CorruptPayload: the stream contradicts itself or its descriptor.
    """
    ln = parse(buf, count, lo, hi)
    work = np.dtype(np.int64 if ln.offset < 0 or np.dtype(out_dtype).itemsize > 4 else out_dtype)
    if work.kind == "u" and ln.offset + ln.nsym - 1 > np.iinfo(work).max:
        work = np.dtype(np.int64)
    out = runner.empty((ln.rows, ln.cols), work, ln.nchunks)

    def one(i: int) -> None:
        a, b = ln.chunk_bounds(i)
        ln.decode_chunk(i, out[a:b])

    runner.run(ln.nchunks, one, out)
    return out.reshape(-1).astype(out_dtype, copy=False)


# --- ctx model 5: rowcol in blocks order, signs four per symbol, in rANS lanes (section 5.6.5) ------


MODEL_ROWCOL_LANES = 5  # the ctx model number


def encode_rowcol(
    sym: np.ndarray,
    values: np.ndarray | None,
    plan: rowcol_ctx.RowColPlan,
    signs,
    offset: int,
    nsym: int,
    crows: int,
    lanes: int | None = None,
) -> tuple[dict, bytes]:
    """A ``ctx`` model-5 stream: the plan of model 4 (magnitudes, or indices from ``offset`` without
    ``values``, and sign tables by column class from ``signs``, a :class:`ecnn.context.rowcol.SignPlan`)
    coded in rANS lanes.

    Raises:
        ValueError: a table that uses more than ``2**15`` symbols, or ``nsym`` above :data:`MAX_NSYM`.
    """
    from ecnn.coder import rowcol

    rows, cols = sym.shape
    if nsym > MAX_NSYM:
        raise ValueError(f"model 5 codes at most {MAX_NSYM} symbols")
    lanes = _lanes_for(rows, cols, crows) if lanes is None else lanes
    rects = blocks.Rects.of(sym, plan.nrc, plan.rclass, plan.cclass, plan.table_of)
    counts = [np.asarray(f.counts, np.int64) for f in plan.fits]
    prec = _precision(_plan_hists(plan, rects, sym.size, nsym, len(counts)), counts)
    nsc = 0 if values is None else signs.k
    width = max(nsym, 16)
    rows_f = [np.pad(freqs(c, prec), (0, width - nsym)) for c in counts]
    if nsc:
        sign_counts = [np.asarray(f.counts, np.int64) for f in signs.fits]
        rows_f += [freqs(rowcol.quad_counts(c), prec) for c in sign_counts]
        rows_f += [freqs(c, prec) for c in sign_counts]
        rows_f = [np.pad(f, (0, width - f.size)) for f in rows_f]
    cum = cumulative(np.stack(rows_f))
    head = [MODEL_ROWCOL_LANES, zigzag(int(offset)), int(nsym), int(rows), int(plan.nrc), int(plan.ncc), nsc, int(crows), int(lanes), prec]
    parts = [varint.encode(head)]
    if nsc > 1:
        parts.append(categorical.side_bytes(signs.sclass, signs.side_fit))
    if plan.nrc > 1:
        parts.append(categorical.side_bytes(plan.rclass, plan.rows_fit))
    if plan.ncc > 1:
        parts.append(categorical.side_bytes(plan.cclass, plan.cols_fit))
    parts.append(varint.encode(plan.table_of))
    parts += [f.blob for f in plan.fits]
    if nsc:
        parts += [f.blob for f in signs.fits]
    ntab = len(counts)
    orderer = _Orderer(rects, values, np.asarray(signs.sclass, np.int64) if nsc else None, nsc, ntab)
    sizes, chunks = [], []
    for a in range(0, rows, crows):
        s, t = orderer.chunk(a, min(rows, a + crows))
        data, words = _rans.encode(cum, prec, s, t, lanes)
        sizes += words
        chunks.append(data)
    parts.append(varint.encode(sizes))
    parts += chunks
    data = b"".join(parts)
    return {"coder": "ctx", "length": len(data)}, data


def decode_rowcol(mv, pos: int, count: int, out_dtype: np.dtype, lo: int, hi: int, runner=SERIAL) -> np.ndarray:
    """Decode a ``ctx`` model-5 stream from ``pos`` (after the model number; section 5.6.5).

    Raises:
        CorruptPayload: any check of section 5.6.5 fails.
    """
    from ecnn.coder import rowcol

    (zo, nsym, rows, nrc, ncc, nsc, crows, lanes, prec), pos = varint.decode(mv, 9, pos)
    offset = unzigzag(zo)
    if not 2 <= nsym <= MAX_NSYM:
        raise CorruptPayload(f"ctx model 5: nsym {nsym} outside 2..{MAX_NSYM}")
    if rows < 1 or count % rows:
        raise CorruptPayload(f"ctx model 5: {rows} rows do not divide {count} symbols")
    cols = count // rows
    if not 1 <= nrc <= min(blocks.MAX_CLASSES, rows) or not 1 <= ncc <= min(blocks.MAX_CLASSES, cols):
        raise CorruptPayload("ctx model 5: class counts outside 1..min(64, rows or cols)")
    if nsc > min(blocks.MAX_CLASSES, cols):
        raise CorruptPayload("ctx model 5: sign classes outside 0..min(64, cols)")
    if nsc and (offset != 0 or -(nsym - 1) < lo or nsym - 1 > hi):
        raise CorruptPayload("ctx model 5: magnitudes outside the symbol range, or an offset with signs")
    if not nsc and (offset < lo or offset + nsym - 1 > hi):
        raise CorruptPayload("ctx model 5: alphabet outside the symbol range")
    if not 1 <= crows <= rows:
        raise CorruptPayload("ctx model 5: rows per chunk outside 1..rows")
    if not 1 <= lanes <= MAX_LANES:
        raise CorruptPayload(f"ctx model 5: lanes {lanes} outside 1..{MAX_LANES}")
    if not MIN_PRECISION <= prec <= MAX_PRECISION:
        raise CorruptPayload(f"ctx model 5: precision {prec} outside {MIN_PRECISION}..{MAX_PRECISION}")
    nchunks = categorical.num_chunks(rows, crows)
    if nchunks * lanes > MAX_CHUNKS:
        raise CorruptPayload(f"ctx model 5: more than {MAX_CHUNKS} lanes")
    sclass = np.zeros(cols, np.int64)
    if nsc > 1:
        sclass, pos = categorical.read_side(mv, pos, nsc, cols)
    rclass, cclass, table_of, counts, pos = blocks.read_layout(mv, pos, rows, cols, nrc, ncc, nsym, "ctx model 5:")
    mags = _rans.tables(freqs_rows(np.stack(counts), prec), prec)
    quads = singles = scols = sstart = None
    if nsc:
        sc = []
        for _ in range(nsc):
            c, pos = tables.read(mv, pos, 2)
            sc.append(c)
        quads = _rans.tables(freqs_rows(np.stack([rowcol.quad_counts(c) for c in sc]), prec), prec)
        singles = _rans.tables(freqs_rows(np.stack(sc), prec), prec)
        scols = np.argsort(sclass, kind="stable").astype(np.int64)
        sstart = np.concatenate([[0], np.cumsum(np.bincount(sclass, minlength=nsc))]).astype(np.int64)
    sizes, spans = _read_lane_index(mv, pos, nchunks, lanes, "ctx model 5:")
    flat, run_start, order = _schedule(cclass, table_of, nrc, ncc)
    out = runner.empty(rows * cols, out_dtype, nchunks)

    def one(i: int) -> None:
        a, b = i * crows, min(rows, (i + 1) * crows)
        try:
            _rans.decode_rowcol(
                mags, quads, singles, mv[spans[i][0] : spans[i][1]], sizes[i], rclass[a:b], flat, run_start,
                order, scols, sstart, offset, out[a * cols : b * cols].reshape(b - a, cols),
            )
        except ValueError as err:
            raise CorruptPayload(f"ctx model 5 chunk {i}: {err}") from None

    runner.run(nchunks, one, out)
    return out
