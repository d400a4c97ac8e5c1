"""Rate of integer symbols under ecnn's coders: the estimate the encoder uses, and the exact size.

These are what training (``ecnn.train``) and rate allocation call to know how
many bytes a tensor of quantization symbols will take in a ``.ecnn`` file.
The estimate is the encoder's own choice (:func:`ecnn.select.choose`), costed
with the shared estimator :mod:`ecnn.context.rate`.

Example:
    >>> import numpy as np
    >>> from ecnn import rate
    >>> q = np.random.default_rng(0).laplace(0, 2, (64, 64)).round().astype(np.int32)
    >>> exact = rate.exact_bytes(q)
    >>> abs(rate.estimate_bytes(q) - exact) <= 0.01 * exact + 16
    True
"""

from __future__ import annotations

import numpy as np

from ecnn import select
from ecnn.coder import streams


def _rows(q: np.ndarray) -> int | None:
    return int(q.shape[0]) if q.ndim >= 2 else None


def exact_bytes(q: np.ndarray, chunk: int = streams.DEFAULT_CHUNK) -> int:
    """Exact payload bytes of one tensor of int symbols (codes it; the header entry is not counted)."""
    q = np.asarray(q)
    _, data = select.encode_best(q.ravel().astype(np.int64), 8, True, chunk, rows=_rows(q), contexts=True)
    return len(data)


def estimate_bytes(q: np.ndarray, chunk: int = streams.DEFAULT_CHUNK) -> float:
    """The encoder's own size estimate for one tensor of int symbols, in bytes.

    Within about 1% of :func:`exact_bytes` (the range coder adds at most two
    words per chunk to the ideal code length); cheaper, since nothing is coded.
    """
    q = np.asarray(q)
    choice = select.choose(q.ravel().astype(np.int64), 8, True, chunk, rows=_rows(q), contexts=True)
    return (choice.bits - choice.desc_bits) / 8.0
