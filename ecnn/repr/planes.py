"""``planes``: byte k of every element as stream k (spec/CODING.md section 4.3)."""

from __future__ import annotations

import numpy as np

from ecnn import chunkrun, select
from ecnn.coder import streams
from ecnn.dtypes import contiguous
from ecnn.repr import base


def encode(arr: np.ndarray, dt, cfg, step=None) -> base.Candidate:
    b = contiguous(arr).reshape(-1).view(np.uint8).reshape(-1, dt.itemsize)
    descs, parts = [], []
    rows = base.rows_of(arr)
    for k in range(dt.itemsize):
        d, p = select.encode_best(b[:, k], 1, False, cfg.chunk, rows=rows, effort=cfg.effort)
        descs.append(d)
        parts.append(p)
    return {"kind": "planes"}, descs, b"".join(parts)


def validate(rec, dt) -> None:
    base.nstreams(rec, dt.itemsize)
    for d in rec.streams:
        streams.validate(d, rec.numel, 0, 255)
    base.check_lengths(rec)


def decode(rec, payload, dt) -> np.ndarray:
    count = rec.numel
    out = np.empty((count, dt.itemsize), dtype=np.uint8)
    for k, (d, p) in enumerate(base.split(rec, payload)):
        out[:, k] = streams.decode(d, p, count, np.uint8, 0, 255, runner=chunkrun)
    if dt.kind == "b":
        return base.bools(out[:, 0], rec)
    return base.storage(out, dt, rec.shape)


REPR = base.Representation("planes", 0, frozenset({"kind"}), validate, decode, encode)
