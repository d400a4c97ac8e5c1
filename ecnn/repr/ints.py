"""``int``: integer and bool tensors as one stream of their values (spec/CODING.md section 4.4)."""

from __future__ import annotations

import numpy as np

from ecnn import chunkrun, select
from ecnn.coder import streams
from ecnn.errors import InvalidField
from ecnn.repr import base


def encode(arr: np.ndarray, dt, cfg, step=None, bound=None) -> base.Candidate | None:
    if dt.is_float:
        return None
    values = arr.ravel().astype(np.uint8) if dt.kind == "b" else arr.ravel()
    d, p = select.encode_best(values, dt.itemsize, dt.kind != "u", cfg.chunk, rows=base.rows_of(arr), effort=cfg.effort)
    if d["coder"] == "raw":
        return None  # the raw representation stores the same bytes more simply
    return {"kind": "int"}, [d], p


def validate(rec, dt) -> None:
    if dt.is_float:
        raise InvalidField(f"tensor {rec.name!r}: int representation of a float dtype")
    base.nstreams(rec, 1)
    lo, hi = dt.int_range
    streams.validate(rec.streams[0], rec.numel, lo, hi)
    base.check_lengths(rec)


def decode(rec, payload, dt) -> np.ndarray:
    ((d, p),) = base.split(rec, payload)
    lo, hi = dt.int_range
    if dt.kind == "b":
        return streams.decode(d, p, rec.numel, np.uint8, lo, hi, runner=chunkrun).view(np.bool_).reshape(rec.shape)
    return streams.decode(d, p, rec.numel, dt.storage, lo, hi, runner=chunkrun).reshape(rec.shape)


REPR = base.Representation("int", 0, frozenset({"kind"}), validate, decode, encode)
