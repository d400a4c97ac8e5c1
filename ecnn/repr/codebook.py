"""``codebook``: a float tensor of few distinct values as levels and signed indices (spec/CODING.md section 4.8)."""

from __future__ import annotations

import numpy as np

from ecnn import chunkrun, select
from ecnn.coder import streams
from ecnn.config import Effort
from ecnn.context import order0
from ecnn.dtypes import contiguous
from ecnn.errors import CorruptPayload, InvalidField
from ecnn.repr import base

MAX_LEVELS = 1 << 16
DTYPES = ("float32", "float16", "bfloat16")


def _order_keys(bits: np.ndarray, width: int) -> np.ndarray:
    """Keys that sort IEEE bit patterns by value: negatives reversed below positives, -0 just below +0."""
    sign = np.array(1 << (8 * width - 1), dtype=bits.dtype)
    return np.where(bits & sign, ~bits, bits | sign)


def encode(arr: np.ndarray, dt, cfg, step=None, bound=None) -> base.Candidate | None:
    """Levels and signed level indices, or None when there are too many levels or the format is 1.0
    (or when the streams' estimates show that they cannot beat ``bound`` bytes)."""
    if cfg.format_minor < 1 or dt.name not in DTYPES or arr.size < 2:
        return None
    chunk, effort = cfg.chunk, cfg.effort
    utype = np.dtype(f"<u{dt.itemsize}")
    bits = contiguous(arr).reshape(-1).view(utype)
    probe = Effort.of(effort).codebook_probe  # tried only where a sample shows at most this many values
    sample = bits[:: max(1, bits.size // (4 * probe))]
    if np.unique(sample).size > probe:
        return None
    if dt.itemsize <= 2:  # every bit pattern counted: no sort
        levels = np.flatnonzero(order0.histogram(bits, 1 << (8 * dt.itemsize))).astype(utype)
    else:
        levels, inverse = np.unique(bits, return_inverse=True)  # sorted by bit pattern
    k = int(levels.size)
    if k > min(MAX_LEVELS, bits.size // 2):
        return None
    keys = _order_keys(levels, dt.itemsize)
    order = np.argsort(keys, kind="stable")
    levels, keys = levels[order], keys[order]
    rank = np.empty(k, np.int32)  # k <= 2^16
    rank[order] = np.arange(k, dtype=np.int32)
    zero = min(int(np.searchsorted(keys, _order_keys(np.zeros(1, utype), dt.itemsize)[0])), k - 1)
    if dt.itemsize <= 2:
        index = np.zeros(1 << (8 * dt.itemsize), np.int16 if k <= 1 << 15 else np.int32)  # q as narrow as it can be
        index[levels] = np.arange(k, dtype=np.int32) - zero  # levels are in order of value now
        q = np.empty(bits.size, index.dtype)
        for a in range(0, bits.size, 1 << 20):  # a block at a time: the lookup's intp indices stay small
            q[a : a + (1 << 20)] = index[bits[a : a + (1 << 20)]]
    else:
        q = rank[inverse.reshape(-1)] - zero
    rep = {"kind": "codebook", "levels": k, "zero": zero}
    ctxs = max(1, cfg.format_minor)  # codebook is 1.1 itself; from 1.2 on, rowcol plans go in rANS lanes (model 5)
    c0 = select.choose(levels, dt.itemsize, False, chunk, contexts=ctxs, effort=effort)
    c1 = select.choose(q, 4, True, chunk, base.rows_of(arr), contexts=ctxs, effort=effort)
    if base.cannot_win(c0.bits + c1.bits, bound, [(k, chunk), (q.size, chunk)]):
        return None
    d0, p0 = select.encode_choice(levels, c0, dt.itemsize, False, chunk, ctxs)
    d1, p1 = select.encode_choice(q, c1, 4, True, chunk, ctxs)
    return rep, [d0, d1], p0 + p1


def _stream(rec, dt, i: int) -> tuple[int, int, int]:
    """Symbols and range ``(count, lo, hi)`` of stream ``i``."""
    k = rec.repr["levels"]
    if i == 0:
        return k, 0, (1 << (8 * dt.itemsize)) - 1
    return rec.numel, -(k - 1), k - 1  # symmetric, for coders of magnitudes and signs; checked on decoding


def validate(rec, dt) -> None:
    if dt.name not in DTYPES:
        raise InvalidField(f"tensor {rec.name!r}: {dt.name} cannot use the codebook representation")
    k, z = rec.repr.get("levels"), rec.repr.get("zero")
    if type(k) is not int or not 1 <= k <= MAX_LEVELS:
        raise InvalidField(f"tensor {rec.name!r}: codebook levels must be an integer in 1..{MAX_LEVELS}")
    if type(z) is not int or not 0 <= z < k:
        raise InvalidField(f"tensor {rec.name!r}: codebook zero must be an integer in 0..levels-1")
    base.nstreams(rec, 2)
    for i, d in enumerate(rec.streams):
        streams.validate(d, *_stream(rec, dt, i))
    base.check_lengths(rec)


def decode(rec, payload, dt) -> np.ndarray:
    (d0, p0), (d1, p1) = base.split(rec, payload)
    utype = np.dtype(f"<u{dt.itemsize}")
    k, lo0, hi0 = _stream(rec, dt, 0)
    levels = streams.decode(d0, p0, k, utype, lo0, hi0, runner=chunkrun)
    _, lo1, hi1 = _stream(rec, dt, 1)
    q = streams.decode(d1, p1, rec.numel, np.int32, lo1, hi1, runner=chunkrun)
    idx = q.astype(np.int64) + rec.repr["zero"]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= k):
        raise CorruptPayload(f"tensor {rec.name!r}: a codebook index lies outside the {k} levels")
    return base.storage(levels[idx], dt, rec.shape)


REPR = base.Representation("codebook", 1, frozenset({"kind", "levels", "zero"}), validate, decode, encode)
