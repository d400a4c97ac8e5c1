"""Lane contexts for sparse tensors: the ``lanes`` model of ``ctx`` streams (spec/CODING.md, section 5.6.2).

A tensor's symbols are viewed as ``L`` lanes of ``S`` steps: the rows of its
matrix view, or (transposed) its columns. Each symbol is first coded as
significant (non-zero) or not, then the non-zero values. The significance
context of lane ``l`` at step ``s`` is built only from earlier steps of the same
lane and from side information, so a decoder decodes one step of every lane
at once:

* a **density bucket** ``b``: about ``log2`` of ``s`` over the lane's number of
  non-zeros so far (an adaptive estimate of the lane's sparsity);
* the **step class** ``c_s``: a class per step (column), sent as side
  information, by the density of that step over all lanes;
* up to two **neighbour flags**: whether the lane's symbols ``d1`` and ``d2``
  steps back are non-zero.

Every context has a binary table stored in one byte (a log-scaled probability).
Non-zero values are coded with order-0 tables, optionally selected by the sign
of the lane's previous non-zero value.

This module holds what encoder and decoder share (buckets, the probability
bytes) and the tables and size of a plan with given parameters (:func:`fit`);
the search for the cheapest parameters is :mod:`ecnn.select.lanes`. Nothing
here imports torch or later stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecnn._core import _hist
from ecnn.context import order0, rate, tables, varint

MAX_BUCKETS = 32
MAX_CLASSES = 64
# Counts of the minority symbol for probability byte t (bits 0..6): M[t & 3] >> (t >> 2),
# M[r] = round(2^24 * 2^(-r/4)); valid t are 4..95 (minority probability 1/2 down to 2^-24).
_MANTISSA = (16777216, 14107901, 11863283, 9975792)
MIN_T, MAX_T = 4, 95
SIG_BYTES = np.array([m << 7 | t for m in (0, 1) for t in range(MIN_T, MAX_T + 1)], np.int64)


def sig_counts(byte: int) -> tuple[int, int]:
    """Stored counts (zero, non-zero) of a significance probability byte (spec/CODING.md 5.6.2, "Significance tables").

    Raises:
        ValueError: a byte whose low seven bits are outside 4..95.
    """
    t = byte & 0x7F
    if not MIN_T <= t <= MAX_T:
        raise ValueError(f"significance byte {byte:#x}: t = {t} outside {MIN_T}..{MAX_T}")
    c = _MANTISSA[t & 3] >> (t >> 2)
    return ((1 << 24) - c, c) if not byte & 0x80 else (c, (1 << 24) - c)


def sig_freqs(byte: int) -> np.ndarray:
    """Expanded frequencies ``[f_zero, f_nonzero]`` of a significance byte."""
    return tables.expand(np.array(sig_counts(byte), np.int64))


def _sig_code_lengths() -> tuple[np.ndarray, np.ndarray]:
    f = np.array([sig_freqs(int(b)) for b in SIG_BYTES], np.float64)
    bits = tables.PRECISION - np.log2(f + 1.0)
    return bits[:, 0], bits[:, 1]


_LEN0, _LEN1 = _sig_code_lengths()


def fit_sig_bytes(n0: np.ndarray, n1: np.ndarray) -> tuple[np.ndarray, float]:
    """The cheapest probability byte of each context and the total ideal code length in bits.

    Args:
        n0, n1: zero and non-zero counts per context.
    """
    n0 = np.asarray(n0, np.float64)
    n1 = np.asarray(n1, np.float64)
    cost = n0[:, None] * _LEN0[None, :] + n1[:, None] * _LEN1[None, :]
    best = np.argmin(cost, axis=1)
    return SIG_BYTES[best].astype(np.uint8), float(cost[np.arange(best.size), best].sum())


def bitlen(q: np.ndarray) -> np.ndarray:
    """Bit length of positive integers below 2**53 (exact through float64)."""
    return np.frexp(np.asarray(q, np.float64))[1].astype(np.int64)


def buckets(s, n1: np.ndarray, nb: int) -> np.ndarray:
    """Density bucket ``min(nb - 1, bitlen((2s + 2) // (2 n1 + 1)) - 1)`` (spec/CODING.md 5.6.2, "Contexts")."""
    q = (2 * np.asarray(s, np.int64) + 2) // (2 * np.asarray(n1, np.int64) + 1)
    return np.minimum(nb - 1, bitlen(q) - 1)


def value_index(v: np.ndarray, vlo: int) -> np.ndarray:
    """Index of non-zero values in the alphabet ``vlo..vhi`` without 0."""
    v = np.asarray(v, np.int64)
    return (v - vlo - ((v > 0) & (vlo < 0))).astype(np.int32)


def value_of(idx: np.ndarray, vlo: int) -> np.ndarray:
    """Inverse of :func:`value_index`."""
    v = np.asarray(idx, np.int64) + vlo
    if vlo < 0:
        v += v >= 0
    return v


def nval_of(vlo: int, vhi: int) -> int:
    """Size of the non-zero alphabet ``vlo..vhi``."""
    return vhi - vlo + 1 - (1 if vlo <= 0 <= vhi else 0)


def step_classes(z: np.ndarray, k: int) -> np.ndarray:
    """Classes ``0..k-1`` of the steps (columns of ``z``), by the log of their density."""
    if k == 1:
        return np.zeros(z.shape[1], np.int64)
    d = np.log2(z.mean(axis=0) + 1.0 / z.shape[0])
    lo, hi = float(d.min()), float(d.max())
    if hi - lo < 1e-9:
        return np.zeros(z.shape[1], np.int64)
    return np.clip(((d - lo) / (hi - lo) * k).astype(np.int64), 0, k - 1)


def shifted(z: np.ndarray, d: int) -> np.ndarray:
    """``z`` moved ``d`` steps later along each lane (zeros before step ``d``)."""
    out = np.zeros_like(z)
    if d < z.shape[1]:
        out[:, d:] = z[:, : z.shape[1] - d]
    return out


def contexts(z: np.ndarray, nb: int, k: int, sclass: np.ndarray, d1: int, d2: int) -> np.ndarray:
    """The significance context of every symbol of a lane-by-step map ``z`` (0/1)."""
    zi = z.astype(np.int64)
    n1 = np.cumsum(zi, axis=1) - zi
    x = buckets(np.arange(z.shape[1])[None, :], n1, nb) * k + sclass[None, :]
    for d in (d1, d2):
        if d:
            x = 2 * x + shifted(zi, d)
    return x


def sig_hist(z: np.ndarray, b: np.ndarray, sclass: np.ndarray, k: int, ds: tuple, size: int) -> np.ndarray:
    """Counts of (context, z) pairs, index ``2 x + z``, where ``x`` is :func:`contexts`' context with the
    density buckets ``b`` given and the neighbour offsets ``ds`` (none, one or two): one compiled pass.

    Args:
        z: the lane-by-step map (0/1) as uint8; b: its buckets (uint8); sclass: the step classes (int64).
        size: the histogram's length (every index must fall below it).
    """
    h = np.zeros(size, np.int64)
    _hist.sig_hist(z, b, sclass, k, ds[0] if ds else 0, ds[1] if len(ds) > 1 else 0, h)
    return h


def prev_sign(v: np.ndarray) -> np.ndarray:
    """Value context per symbol (uint8): 0 if the lane has no earlier non-zero, 1 if its last one is negative,
    2 if positive. One compiled pass over the values as int32 (wider ones by their signs)."""
    v = np.asarray(v)
    out = np.zeros(v.shape, np.uint8)
    if v.size:
        w = v if v.dtype.kind == "i" and v.dtype.itemsize <= 4 else np.sign(v)
        _hist.prev_sign(np.ascontiguousarray(w, np.int32).reshape(v.shape[0], -1), out)
    return out


@dataclass(frozen=True)
class LanePlan:
    """What the encoder decided for one ``lanes`` stream.

    Attributes:
        rows: rows of the stream's matrix view.
        transpose: lanes are the columns (else the rows).
        nb, k, d1, d2: buckets, step classes, neighbour offsets (0: none).
        vsign: value tables selected by the previous sign in the lane.
        vlo, vhi: range of the non-zero values.
        sclass: class of every step; ``sclass_fit`` its order-0 fit (None if ``k == 1``).
        sig: probability byte of every significance context.
        vfits: stored value tables (empty if only one non-zero value is possible).
        bits: estimated size of the whole stream in bits, chunk allowances included.
    """

    rows: int
    transpose: bool
    nb: int
    k: int
    d1: int
    d2: int
    vsign: bool
    vlo: int
    vhi: int
    sclass: np.ndarray
    sclass_fit: order0.Order0Fit | None
    sig: np.ndarray
    vfits: list
    bits: float


def _params_bytes(rows, flags, nb, k, d1, d2, vlo, vhi, cl) -> int:
    zz = [varint.zigzag(v) for v in (vlo, vhi)]
    return int(varint.varint_sizes([1, rows, flags, nb, k, d1, d2, *zz, cl]).sum())


def value_tables(idx: np.ndarray, ctx: np.ndarray | None, nval: int) -> tuple[list, float]:
    """Order-0 fits of the value indices per value context, and their total bits."""
    if nval < 2:
        return [], 0.0
    groups = [idx] if ctx is None else [idx[ctx == u] for u in range(3)]
    fits, bits = [], 0.0
    for g in groups:
        h = np.bincount(g, minlength=nval).astype(np.int64)
        if not h.any():
            h[0] = 1  # an unused table still has to be valid
        f = order0.fit(h)
        fits.append(f)
        bits += f.total_bits
    return fits, bits


def max_lane_steps(count: int) -> int:
    """The most steps (chunks times steps) a lanes stream of ``count`` symbols may take: max(2^16, N div 16)."""
    return max(1 << 16, count // 16)


def chunk_lanes_for(lanes: int, steps: int, chunk: int) -> int:
    """Lanes per chunk so that a chunk holds about ``chunk`` symbols, and the steps stay within :func:`max_lane_steps`."""
    cl = min(lanes, max(1, chunk // max(steps, 1)))
    while cl < lanes and -(-lanes // cl) * steps > max_lane_steps(lanes * steps):
        cl = min(lanes, 2 * cl)
    return cl


def fit(m: np.ndarray, transpose: bool, nb: int, k: int, d1: int, d2: int, vsign: bool, chunk: int) -> LanePlan:
    """Tables and exact size estimate of a ``lanes`` stream with the given parameters."""
    v = m.T if transpose else m
    z = (v != 0).astype(np.int64)
    lanes, steps = z.shape
    nz = v[v != 0]
    vlo, vhi = int(nz.min()), int(nz.max())
    nval = nval_of(vlo, vhi)
    if not 0 <= d1 < steps or not 0 <= d2 < steps:
        raise ValueError(f"neighbour offsets {d1}, {d2} must be below the {steps} steps")
    k = min(k, steps)
    sc = step_classes(z, k)
    sfit = None
    bits = 0.0
    if k > 1:
        h = np.bincount(sc, minlength=k)
        if (h > 0).sum() < 2:
            k, sc = 1, np.zeros(steps, np.int64)
        else:
            sfit = order0.fit(h)
            bits += rate.side_bits(sfit) + 8.0 * int(varint.varint_sizes([1]).sum())
    nx = nb * k * (2 if d1 else 1) * (2 if d2 else 1)
    n1 = np.cumsum(z, axis=1) - z
    b = buckets(np.arange(steps)[None, :], n1, nb)  # below MAX_BUCKETS: a byte
    z8, b8 = np.ascontiguousarray(z, np.uint8), np.ascontiguousarray(b, np.uint8)
    h = sig_hist(z8, b8, np.ascontiguousarray(sc, np.int64), k, tuple(d for d in (d1, d2) if d), 2 * nx)
    h = h.reshape(nx, 2)  # (zero, non-zero) counts of each context of contexts()
    sig, sig_bits = fit_sig_bytes(h[:, 0], h[:, 1])
    bits += sig_bits + 8.0 * nx
    sel = v != 0
    vfits, vbits = value_tables(value_index(v[sel], vlo), prev_sign(v)[sel] if vsign else None, nval)
    bits += vbits
    cl = chunk_lanes_for(lanes, steps, chunk)
    nchunks = -(-lanes // cl)
    flags = int(transpose) | (2 if vsign else 0)
    bits += 8.0 * _params_bytes(m.shape[0], flags, nb, k, d1, d2, vlo, vhi, cl)
    bits += rate.chunk_bits(nchunks)
    return LanePlan(int(m.shape[0]), transpose, nb, k, d1, d2, vsign, vlo, vhi, sc, sfit, sig, vfits, bits)
