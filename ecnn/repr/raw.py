"""``raw``: the little-endian element bytes, uncoded (spec/CODING.md section 4.2)."""

from __future__ import annotations

import numpy as np

from ecnn.errors import InvalidField
from ecnn.repr import base


def encode(arr: np.ndarray, dt=None, cfg=None, step=None, bound=None) -> base.Candidate:
    flat = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1))
    return {"kind": "raw"}, [], memoryview(flat.view(np.uint8))  # the array's own bytes, not a copy


def validate(rec, dt) -> None:
    base.nstreams(rec, 0)
    if rec.length != rec.nbytes:
        raise InvalidField(f"tensor {rec.name!r}: raw payload length {rec.length} != {rec.nbytes}")


def decode(rec, payload, dt) -> np.ndarray:
    count = rec.numel
    if dt.kind == "b":
        return base.bools(np.frombuffer(payload, dtype=np.uint8, count=count), rec)
    arr = np.frombuffer(payload, dtype=dt.storage.newbyteorder("<") if dt.itemsize > 1 else dt.storage, count=count)
    return arr.astype(dt.storage).reshape(rec.shape)  # copies: the result owns its memory


REPR = base.Representation("raw", 0, frozenset({"kind"}), validate, decode, encode)
