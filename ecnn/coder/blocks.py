"""The ``blocks`` stream (format 1.1): row/column class tables, coded block by block (spec/CODING.md, section 5.8).

The model is that of ``rowcol`` (section 5.5): the ``N`` symbols form a
``rows x cols`` matrix, every row has a class and every column a class,
element ``(i, j)`` has context ``r_i + c_j``, and a non-decreasing map sends
each context to one of ``T`` order-0 tables. Only the order of the symbols in
a chunk differs, so that a decoder needs no per-element ordering:

* the **column order** lists the columns by class, then by index;
* for a row class ``g``, the columns in column order fall into **runs** of
  equal table (the map is non-decreasing, so each table is one run);
* a chunk (``chunk_rows`` rows) holds, for each row class ``g`` with rows in
  the chunk and for each of its runs in turn, the chunk's rows of class ``g``
  in increasing order, each with its symbols in the run's columns.

So each run of each row class is one range coder call whose output is a
rectangle of the column-ordered chunk; one column permutation per chunk puts
the columns back. The stream starts with its parameters as varints, like the
``ctx`` coder, so its descriptor is only ``coder`` and ``length``.

The ``fields`` representation decodes its heads chunk by chunk with
:meth:`Blocks.decode_chunk`, merging signs and tails in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecnn.coder import categorical
from ecnn.coder.categorical import MAX_CHUNKS
from ecnn.coder.runner import SERIAL
from ecnn.context import tables, varint
from ecnn.context import rowcol as rowcol_ctx
from ecnn.context.varint import unzigzag, zigzag
from ecnn.errors import CorruptPayload, InvalidField

KEYS = {"coder", "length"}
MAX_CLASSES = rowcol_ctx.MAX_CLASSES
MAX_NSYM = tables.MAX_NSYM


def validate(desc: dict, count: int, lo: int = 0, hi: int = 0) -> None:
    """Descriptor checks of a ``blocks`` stream (after ``coder``, unknown keys and ``length``); the rest are in the stream.

    Raises:
        InvalidField: no symbols, or a length below the parameters' 7 bytes.
    """
    if count < 1:
        raise InvalidField("a blocks stream must code at least one symbol")
    if desc["length"] < 7:
        raise InvalidField("a blocks stream has at least its six parameters and one chunk index byte")


# --- encoding -----------------------------------------------------------------


def _runs(table_of: np.ndarray, cclass_sorted: np.ndarray, g: int) -> list[tuple[int, int, int]]:
    """``(table, start, end)`` of the runs of row class ``g`` over the column-ordered columns."""
    t = table_of[g + cclass_sorted]
    cuts = np.flatnonzero(np.diff(t)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [t.size]])
    return [(int(t[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def column_runs(cclass: np.ndarray, table_of: np.ndarray, nrc: int) -> tuple[np.ndarray, list]:
    """The column order (columns by class, then index) and the runs of every row class over it."""
    order = np.argsort(cclass, kind="stable")
    cs = np.asarray(cclass)[order].astype(np.int64)
    return order, [_runs(np.asarray(table_of, np.int64), cs, g) for g in range(nrc)]


def encode(sym: np.ndarray, p: rowcol_ctx.RowColPlan, offset: int, nsym: int, crows: int) -> tuple[dict, bytes]:
    """A ``blocks`` stream of a ``(rows, cols)`` array of indices ``0..nsym-1`` (symbols ``index + offset``)."""
    rows = sym.shape[0]
    parts = [varint.encode([zigzag(int(offset)), int(nsym), int(rows), int(p.nrc), int(p.ncc), int(crows)])]
    if p.nrc > 1:
        parts.append(categorical.side_bytes(p.rclass, p.rows_fit))
    if p.ncc > 1:
        parts.append(categorical.side_bytes(p.cclass, p.cols_fit))
    parts.append(varint.encode(p.table_of))
    parts += [f.blob for f in p.fits]
    cdfs = [categorical.table(tables.expand(f.counts)) for f in p.fits]
    rects = Rects.of(sym, p.nrc, p.rclass, p.cclass, p.table_of)
    chunks = []
    for a in range(0, rows, crows):
        enc = categorical.encoder()
        rects.encode(enc, cdfs, a, min(rows, a + crows))
        chunks.append(categorical.words(enc))
    parts.append(categorical.chunks_bytes(chunks))
    data = b"".join(parts)
    return {"coder": "blocks", "length": len(data)}, data


@dataclass
class Rects:
    """The encoder's view of a matrix in block order: columns in column order, and the runs of each row class."""

    sym: np.ndarray  # (rows, cols) indices (uint8, uint16 or int32), columns in column order
    rclass: np.ndarray
    runs: list

    @classmethod
    def of(cls, sym: np.ndarray, nrc: int, rclass: np.ndarray, cclass: np.ndarray, table_of: np.ndarray) -> "Rects":
        order, runs = column_runs(cclass, table_of, nrc)
        keep = sym.dtype if sym.dtype in (np.uint8, np.uint16, np.int32) else np.int32  # narrow indices stay narrow
        s = np.ascontiguousarray(np.take(sym, order, axis=1) if order.size > 1 else sym, dtype=keep)
        return cls(s, np.asarray(rclass), runs)

    def encode(self, enc, cdfs: list, a: int, b: int) -> None:
        """Encode rows ``a .. b-1`` (one chunk) rectangle by rectangle into ``enc``, with the cumulative table
        ``cdfs[t]`` for table ``t`` (:func:`ecnn.coder.categorical.encoder`)."""
        rc = self.rclass[a:b]
        for g in range(len(self.runs)):
            sel = np.flatnonzero(rc == g) + a
            if sel.size:
                block = self.sym[sel]
                for t, c0, c1 in self.runs[g]:
                    enc.encode(cdfs[t], block[:, c0:c1])  # the rectangle, read row by row


# --- decoding ------------------------------------------------------------------


@dataclass
class Blocks:
    """A parsed ``blocks`` stream, ready to decode chunk by chunk.

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
    rclass: np.ndarray
    runs: list
    inverse: np.ndarray | None
    models: list  # the cumulative table of each context table (categorical.table)
    words: list

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """First row and end row of chunk ``i``."""
        a = i * self.chunk_rows
        return a, min(self.rows, a + self.chunk_rows)

    def decode_chunk(self, i: int, dst: np.ndarray, shift: int = 0) -> None:
        """Decode chunk ``i`` into ``dst``, a ``(b - a, cols)`` integer array: each symbol shifted left by ``shift``.

        ``dst`` must hold ``(offset + nsym - 1) << shift``.

        Raises:
            CorruptPayload: the chunk's words are damaged or not used up exactly.
        """
        try:
            dec = categorical.decoder(self.words[i])
            self.fill(dec, i, dst, shift)
            ok = dec.exhausted()
        except ValueError as e:  # the decoder's invalid data
            raise CorruptPayload(f"blocks chunk {i}: damaged coded data ({type(e).__name__}: {e})") from None
        if not ok:
            raise CorruptPayload(f"blocks chunk {i}: compressed words left over after the last symbol")

    def fill(self, dec, i: int, dst: np.ndarray, shift: int = 0) -> None:
        """Decode chunk ``i``'s symbols from ``dec``, rectangle by rectangle, into ``dst`` (as :meth:`decode_chunk`)."""
        a, b = self.chunk_bounds(i)
        nr = b - a
        buf = dst if self.inverse is None else np.empty((nr, self.cols), dst.dtype)
        flat = buf.reshape(-1)
        rc = self.rclass[a:b]
        wide = (self.offset + self.nsym - 1) << shift >= 1 << 31 or self.offset < 0
        counts = np.bincount(rc, minlength=len(self.runs))
        for g in np.flatnonzero(counts):
            n = int(counts[g])
            sel = None if n == nr else np.flatnonzero(rc == g)
            for t, c0, c1 in self.runs[g]:
                v = categorical.take(dec, self.models[t], n * (c1 - c0), np.int64 if wide else np.int32)
                if self.offset:
                    v += self.offset
                if shift:
                    v <<= shift
                if sel is None and c1 - c0 == self.cols:
                    flat[...] = v
                elif sel is None:
                    buf[:, c0:c1] = v.reshape(n, c1 - c0)
                else:
                    buf[sel, c0:c1] = v.reshape(n, c1 - c0)
        if self.inverse is not None:
            np.take(buf, self.inverse, axis=1, out=dst, mode="clip")  # "raise" would buffer the output


def parse(buf, count: int, lo: int, hi: int) -> Blocks:
    """Read a ``blocks`` stream's parameters, classes, tables and chunk index (section 5.8).

    Raises:
        CorruptPayload: any check of section 5.8 fails.
    """
    try:
        return _parse(memoryview(buf), count, lo, hi)
    except CorruptPayload:
        raise
    except Exception as e:  # varint, table and range decoder failures alike
        raise CorruptPayload(f"blocks stream: {e}") from None


def _parse(mv, count: int, lo: int, hi: int) -> Blocks:
    (zoff, nsym, rows, nrc, ncc, crows), pos = varint.decode(mv, 6, 0)
    offset = unzigzag(zoff)
    if not 2 <= nsym <= MAX_NSYM:
        raise CorruptPayload(f"blocks nsym {nsym} outside 2..{MAX_NSYM}")
    if offset < lo or offset + nsym - 1 > hi:
        raise CorruptPayload("blocks alphabet falls outside the allowed symbol range")
    if not 1 <= rows <= count or count % rows:
        raise CorruptPayload(f"blocks rows {rows} do not divide {count} symbols")
    cols = count // rows
    if not 1 <= nrc <= min(MAX_CLASSES, rows) or not 1 <= ncc <= min(MAX_CLASSES, cols):
        raise CorruptPayload("blocks class counts out of range")
    if not 1 <= crows <= rows:
        raise CorruptPayload(f"blocks chunk_rows {crows} outside 1..{rows}")
    nchunks = categorical.num_chunks(rows, crows)
    if nchunks > MAX_CHUNKS:
        raise CorruptPayload(f"blocks stream has more than {MAX_CHUNKS} chunks")
    rclass, cclass, table_of, counts, pos = read_layout(mv, pos, rows, cols, nrc, ncc, nsym, "blocks")
    models = [categorical.table(tables.expand(c)) for c in counts]
    words = categorical.read_chunks(mv, pos, nchunks)
    return assemble(rows, cols, offset, nsym, crows, nrc, ncc, rclass, cclass, table_of, models, words)


def read_layout(mv, pos: int, rows: int, cols: int, nrc: int, ncc: int, nsym: int, what: str) -> tuple:
    """The row classes, column classes, table map and stored table counts of the blocks layout (section 5.8;
    also ``rans`` and ``ctx`` model 5), from ``pos``. Classes are below 64, so uint8.

    Returns:
        ``(rclass, cclass, table_of, counts, next position)``.

    Raises:
        CorruptPayload: a table map that does not start at 0 and grow by 0 or 1 (``what`` names the stream).
        ValueError: a bad class stream, varint or table.
    """
    rclass = np.zeros(rows, np.uint8)
    cclass = np.zeros(cols, np.uint8)
    if nrc > 1:
        rclass, pos = categorical.read_side(mv, pos, nrc, rows)
        rclass = rclass.astype(np.uint8)
    if ncc > 1:
        cclass, pos = categorical.read_side(mv, pos, ncc, cols)
        cclass = cclass.astype(np.uint8)
    table_of, pos = varint.decode(mv, nrc + ncc - 1, pos)
    table_of = np.array(table_of, np.int64)
    steps = np.diff(table_of)
    if table_of[0] != 0 or np.any(steps < 0) or np.any(steps > 1):
        raise CorruptPayload(f"{what} table map must start at 0 and grow by 0 or 1")
    counts = []
    for _ in range(int(table_of[-1]) + 1):
        c, pos = tables.read(mv, pos, nsym)
        counts.append(c)
    return rclass, cclass, table_of, counts, pos


def assemble(rows, cols, offset, nsym, crows, nrc, ncc, rclass, cclass, table_of, models, words) -> Blocks:
    """A :class:`Blocks` from parsed parameters, classes, table map, table models and chunk words."""
    order, runs = column_runs(cclass, table_of, nrc)
    inverse = np.argsort(order).astype(np.intp) if ncc > 1 else None
    nchunks = categorical.num_chunks(rows, crows)
    return Blocks(rows, cols, offset, nsym, crows, nchunks, rclass, runs, inverse, models, [np.ascontiguousarray(w) for w in words])


def decode(desc: dict, buf, count: int, out_dtype, lo: int, hi: int, runner=SERIAL) -> np.ndarray:
    """Decode a whole validated ``blocks`` stream into ``count`` values of ``out_dtype``, its chunks run by ``runner``.

    Raises:
        CorruptPayload: the stream contradicts itself or its descriptor.
    """
    bl = parse(buf, count, lo, hi)
    work = np.dtype(np.int64 if bl.offset < 0 or np.dtype(out_dtype).itemsize > 4 else out_dtype)
    if work.kind == "u" and bl.offset + bl.nsym - 1 > np.iinfo(work).max:
        work = np.dtype(np.int64)
    out = runner.empty((bl.rows, bl.cols), work, bl.nchunks)

    def one(i: int) -> None:
        a, b = bl.chunk_bounds(i)
        bl.decode_chunk(i, out[a:b])

    runner.run(bl.nchunks, one, out)
    return out.reshape(-1).astype(out_dtype, copy=False)
