"""``planes``: byte k of every element as stream k (spec/CODING.md section 4.3)."""

from __future__ import annotations

import numpy as np

from ecnn import chunkrun, select
from ecnn.coder import streams
from ecnn.dtypes import contiguous
from ecnn.repr import base


def encode(arr: np.ndarray, dt, cfg, step=None, bound: int | None = None) -> base.Candidate | None:
    """Byte plane ``k`` of every element as stream ``k``, each coded as :func:`ecnn.select.choose` chooses.

    With ``bound`` (the cost in bytes of another candidate), None when the planes'
    estimated payload shows that they cannot beat it (:func:`ecnn.repr.base.cannot_win`).
    """
    b = contiguous(arr).reshape(-1).view(np.uint8).reshape(-1, dt.itemsize)
    rows = base.rows_of(arr)
    planes = [np.ascontiguousarray(b[:, k]) for k in range(dt.itemsize)]
    if bound is not None and cfg.policy.name != "fast":
        # A quick look first: the planes' estimate with the fast search, which the full search seldom
        # improves on by enough to win (spec/CODING.md 11.3; Effort.planes_probe).
        quick = [select.choose(p, 1, False, cfg.chunk, rows, effort="fast") for p in planes]
        if base.cannot_win(sum(c.bits for c in quick) * (1.0 - cfg.policy.planes_probe), bound, [(p.size, cfg.chunk) for p in planes]):
            return None
    choices = [select.choose(p, 1, False, cfg.chunk, rows, effort=cfg.effort) for p in planes]
    if base.cannot_win(sum(c.bits for c in choices), bound, [(p.size, cfg.chunk) for p in planes]):
        return None
    coded = [select.encode_choice(p, c, 1, False, cfg.chunk) for p, c in zip(planes, choices)]
    return {"kind": "planes"}, [d for d, _ in coded], b"".join(p for _, p in coded)


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
