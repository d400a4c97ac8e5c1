"""The rate estimator everybody shares: bits of symbols under the context models, without coding them.

The encoder's choice (:mod:`ecnn.select`), the public :mod:`ecnn.rate`,
training (:mod:`ecnn.train`) and rate allocation (:mod:`ecnn.budget`) read
their order-0 figures from here, so that they agree with each other and with
what the coders write:

* :func:`entropy_bits` -- the zeroth-order empirical entropy of a histogram
  (a lower bound: no table, no flush);
* :func:`order0_bits` -- the size of an order-0 stream with its best stored
  table (:func:`ecnn.context.order0.fit`) and the cost of its chunks;
* :func:`chunk_bits` -- what each independently decodable chunk adds;
* :func:`side_bits` -- a class side stream (row, column, step or sign classes).

Example:
    >>> import numpy as np
    >>> from ecnn.context import rate
    >>> hist = np.array([900, 90, 10])
    >>> round(rate.entropy_bits(hist))
    516
    >>> fit, bits = rate.order0_bits(hist, 1000, 1 << 20)
    >>> bits > rate.entropy_bits(hist)
    True
"""

from __future__ import annotations

import numpy as np

from ecnn.context import order0

CHUNK_INDEX_BITS = 24  # a chunk's entry in the chunk index, about 2 to 3 bytes of varint


def chunk_bits(nchunks: int) -> float:
    """What ``nchunks`` chunks add to the ideal code length: each its index entry and up to
    :data:`ecnn.context.order0.FLUSH_BITS` of range-coder flush."""
    return nchunks * (CHUNK_INDEX_BITS + order0.FLUSH_BITS)


def side_bits(fit: order0.Order0Fit) -> float:
    """Bits of a class side stream coded with ``fit`` (one chunk): its table and symbols, and the flush."""
    return fit.total_bits + order0.FLUSH_BITS


def num_chunks(count: int, chunk: int) -> int:
    """Chunks of ``chunk`` symbols that ``count`` symbols take (0 for none)."""
    return -(-count // chunk) if count else 0


def order0_bits(hist: np.ndarray, count: int, chunk: int) -> tuple[order0.Order0Fit, float]:
    """The best stored table for a histogram of ``count`` symbols, and the estimated size of an
    order-0 stream (``cat0``, or ``ctx`` model 0 without its parameters) in chunks of ``chunk``, in bits."""
    fit = order0.fit(hist)
    return fit, fit.total_bits + chunk_bits(num_chunks(count, chunk))


def entropy_bits(hist: np.ndarray) -> float:
    """Zeroth-order empirical entropy of a histogram, in bits (total, not per symbol)."""
    h = np.asarray(hist, dtype=np.float64)
    n = h.sum()
    p = h[h > 0] / n
    return float(-(h[h > 0] * np.log2(p)).sum())
