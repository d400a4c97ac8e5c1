"""The search's cheap size proxy: order-0 code length plus a table cost per distinct symbol.

The allocation rates hundreds of candidates per tensor, too many for the
codec's own estimate (:func:`ecnn.rate.estimate_bytes`) at each one. This
proxy estimates the bytes a tensor's symbols take in a file as the order-0
(empirical entropy) code length of the symbols, plus :data:`TABLE_BITS` for
each distinct symbol (the coder's frequency tables), plus one byte. It ignores
what the context models gain; :func:`ecnn.budget.candidates.measure`
corrects it per tensor against the codec's estimate at a few anchor steps.
"""

from __future__ import annotations

import numpy as np

from ecnn.context import rate

TABLE_BITS = 12.0  # the rate proxy's cost of one distinct symbol in a tensor's tables


def order0_parts(q: np.ndarray) -> tuple[float, int]:
    """Order-0 code length of symbols in bits, and the number of distinct symbols.

    Args:
        q: integer symbols (any shape).

    Returns:
        ``(bits, nsym)``: ``-sum_s n_s log2(n_s / n)`` over the distinct
        symbols ``s`` with counts ``n_s``, and how many distinct symbols occur.
    """
    v = q.ravel().astype(np.int64)
    hist = np.bincount(v - int(v.min()))
    return rate.entropy_bits(hist), int(np.count_nonzero(hist))


def proxy_bytes(bits: float, nsym: int, scale: float = 1.0) -> float:
    """Estimated bytes of a tensor from :func:`order0_parts` of its symbols (or of a
    row sample of them, ``scale`` being the whole tensor's size over the sample's):
    the code length scaled up, plus the tables, plus one byte."""
    return (bits * scale + TABLE_BITS * nsym) / 8 + 1.0
