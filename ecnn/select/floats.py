"""Choosing the streams of the ``fields`` representation (spec/CODING.md 4.9 and 11).

How many mantissa bits go into the heads (:func:`choose_head`), and which coder
the signs (:func:`signs`) and the heads (:func:`heads`) get: ``packed`` bit
fields unless an entropy-coded stream pays for its tables and decoding time.
The representation itself (:mod:`ecnn.repr.fields`) splits and merges the fields.
"""

from __future__ import annotations

import msgpack
import numpy as np

from ecnn.coder import blocks, categorical, packed, rans, streams
from ecnn.config import Effort
from ecnn.context import floats, order0
from ecnn.context import rowcol as rowcol_ctx
from ecnn.select.classes import plan_blocks
from ecnn.select.stream import encode_best

SIGN_GAIN = 0.97  # signs are entropy coded only when that saves at least 3% of their packed bytes
SIGN_TRY_ENTROPY = 0.995  # ... and tried only where their order-0 entropy (bits) is below this,
SIGN_TRY_COUNT = 1 << 20  # or where there are at most this many (a large tensor's row/column plans are slow)
LOWER_BOUND_SLACK = 256  # bits a coded stream may come out below the entropy bound (range-coder words), with room


def desc_cost(desc: dict, payload: bytes) -> int:
    return len(payload) + len(msgpack.packb(desc))


def packed_cost(count: int, width: int) -> int:
    """:func:`desc_cost` of :func:`packed_stream` of ``count`` values, without packing them."""
    length = packed.group_bytes(count, width)
    return length + len(msgpack.packb({"coder": "packed", "length": length, "width": width}))


def packed_stream(values: np.ndarray, width: int) -> tuple[dict, bytes]:
    data = packed.pack(values, width)
    return {"coder": "packed", "length": len(data), "width": width}, data


def head_histogram(u: np.ndarray, e_bits: int, m_bits: int, k: int) -> np.ndarray:
    """Counts of each head value ``(u >> (m_bits - k)) mod 2^(e_bits + k)``, ``2^(e_bits + k)`` of them."""
    heads = (u >> (m_bits - k)) & ((1 << (e_bits + k)) - 1)  # in u's own type
    return np.bincount(heads.astype(np.intp), minlength=1 << (e_bits + k))


def estimate_head_bits(hist: np.ndarray, e_bits: int, m_bits: int, k: int) -> float:
    """Order-0 cost of heads with ``k`` mantissa bits plus ``r`` tail bits each (shifts ignored),
    from the counts of each head value (:func:`head_histogram`)."""
    count = int(hist.sum())
    used = np.flatnonzero(hist)
    lo, hi = int(used[0]), int(used[-1])
    if lo == hi:
        return float(count * (m_bits - k))
    if hi - lo + 1 > 1 << 20:
        return float(count * (e_bits + m_bits))
    fit = order0.fit(hist[lo : hi + 1])
    return fit.total_bits + float(count * (m_bits - k))


def choose_head(u: np.ndarray, e_bits: int, m_bits: int, effort: str = "best") -> int:
    """Mantissa bits ``k`` in the head: the cheapest by the order-0 estimate, on a sample of large tensors.

    The heads of every ``k`` come from one histogram of the widest heads tried (a head
    with ``k`` mantissa bits is that head shifted right). Below effort ``"best"`` the
    search stops once the estimate has grown twice in a row.
    """
    sample = u[:: max(1, u.size // (1 << 21))]
    top = min(m_bits, floats.MAX_HEAD_MANTISSA)
    widest = head_histogram(sample, e_bits, m_bits, top)
    hists = [widest]
    for _ in range(top):  # one mantissa bit fewer: pairs of neighbours added
        hists.append(hists[-1][0::2] + hists[-1][1::2])
    hists.reverse()  # hists[k]: heads with k mantissa bits
    if Effort.of(effort).head_early_stop:
        costs: list[float] = []
        for k in range(0, top + 1):
            costs.append(estimate_head_bits(hists[k], e_bits, m_bits, k))
            if len(costs) >= 3 and costs[-1] > costs[-2] > costs[-3]:
                break
        return int(np.argmin(costs))
    # Every k, in order of a cost that none undercuts (the heads' entropy and the tails):
    # once that exceeds the cheapest estimate so far, no later k can be cheaper.
    least = [_least_head_bits(h, m_bits - k) for k, h in enumerate(hists)]
    best_k, best = -1, 0.0
    for k in sorted(range(top + 1), key=lambda k: least[k]):
        if best_k >= 0 and least[k] > best:
            break
        c = estimate_head_bits(hists[k], e_bits, m_bits, k)
        if best_k < 0 or c < best or (c == best and k < best_k):  # the smallest k of least cost
            best_k, best = k, c
    return best_k


def _least_head_bits(hist: np.ndarray, r: int) -> float:
    """A lower bound of :func:`estimate_head_bits`: the heads' entropy (less a little for rounding) and ``r`` bits each."""
    count = int(hist.sum())
    h = hist[hist > 0].astype(np.float64)
    ent = float(count * np.log2(count) - (h * np.log2(h)).sum()) if h.size > 1 else 0.0
    return ent * (1.0 - 1e-9) - 1.0 + float(count * r)


def head_stream(
    heads: np.ndarray, hb: int, rows: int, block_chunk: int, chunk: int, effort: str = "best", lanes: bool = False
) -> tuple[dict, bytes]:
    """Stream 2: ``const``, ``blocks`` (row and column class tables) or ``packed``, whichever is smallest.

    With ``lanes``, the class tables are coded as a ``rans`` stream (format 1.2), which decodes several times faster.

    ``block_chunk`` bounds the symbols per chunk of a ``blocks`` stream; ``chunk`` is the config's chunk size.
    """
    lo, hi = int(heads.min()), int(heads.max())
    if lo == hi:
        return streams.encode_const(lo)
    packed_bytes = packed_cost(heads.size, hb)
    nsym = hi - lo + 1
    if nsym <= blocks.MAX_NSYM:
        # Indices in the narrowest type that holds them (the plan search and coders take uint8 and uint16 as they are).
        sym = np.empty(heads.shape, np.uint8 if nsym <= 1 << 8 else np.uint16 if nsym <= 1 << 16 else np.int32)
        np.subtract(heads, heads.dtype.type(lo), out=sym, casting="unsafe")  # every head >= lo: no wrap
        sym = sym.reshape(rows, -1)
        p, bits = plan_blocks(sym, nsym, chunk, effort)
        if bits < 8.0 * packed_bytes:
            crows = categorical.chunk_rows_for(rows, sym.shape[1], block_chunk)
            coded = None
            if lanes and nsym <= rans.MAX_NSYM:
                try:
                    coded = rans.encode(sym, p, lo, nsym, crows)
                except ValueError:  # a table with more used symbols than 2^15 slots
                    coded = None
            coded = coded or blocks.encode(sym, p, lo, nsym, crows)
            if desc_cost(*coded) <= packed_bytes:  # ties to the coded stream, as before
                return coded
    return packed_stream(heads, hb)


def sign_stream(signs: np.ndarray, rows: int | None, chunk: int, effort: str = "best") -> tuple[dict, bytes]:
    """Stream 0: ``packed``, unless a coded stream saves at least 3% (coded signs cost decoding time)."""
    s = packed_stream(signs, 1)
    ones = int(np.count_nonzero(signs))
    if ones in (0, signs.size):
        return streams.encode_const(int(signs[0]))
    p1 = ones / signs.size
    h0 = -(p1 * np.log2(p1) + (1 - p1) * np.log2(1 - p1))
    # Row/column contexts are tried only where they could plausibly save 3%: on
    # small tensors, or where the signs are skewed overall.
    if h0 > SIGN_TRY_ENTROPY and signs.size > SIGN_TRY_COUNT:
        return s
    # No coded stream spends fewer bits than the entropy of the signs given their row and
    # column classes (less a few words of range-coder slack): where even that misses 3%, none is tried.
    least = signs.size * h0 if rows is None else rowcol_ctx.cell_entropy_bits(signs.reshape(rows, -1), 2)
    if least - LOWER_BOUND_SLACK > SIGN_GAIN * 8.0 * desc_cost(*s):
        return s
    coded = encode_best(signs.astype(np.uint8, copy=False), 1, False, chunk, rows=rows, effort=effort)
    return coded if desc_cost(*coded) <= SIGN_GAIN * desc_cost(*s) else s
