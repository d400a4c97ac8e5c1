"""How a decoder runs its chunks: the caller decides, the coder only describes the work.

A decoder of a chunked stream asks its runner for an output array and then
calls ``run(nchunks, one, out)``, where ``one(i)`` decodes chunk ``i`` into its
own slice of ``out``. :data:`SERIAL` runs the chunks one after the other in
the calling thread. The codec passes :mod:`ecnn.chunkrun`, whose module
functions have the same signatures and split the chunks over threads; the
coders never import it. Decoding gives the same values with any runner.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


class Runner(Protocol):
    """Where a decoder's chunks run (see the module docstring)."""

    def empty(self, shape, dtype, nchunks: int) -> np.ndarray:
        """An uninitialized output for a decoder with ``nchunks`` chunks."""

    def run(self, nchunks: int, fn: Callable[[int], None], out: np.ndarray | None = None) -> None:
        """Call ``fn(i)`` for every chunk ``i`` in ``0 .. nchunks - 1``; ``fn`` writes only into ``out``."""


class Serial:
    """Every chunk on the calling thread, in order."""

    @staticmethod
    def empty(shape, dtype, nchunks: int) -> np.ndarray:
        return np.empty(shape, dtype)

    @staticmethod
    def run(nchunks: int, fn: Callable[[int], None], out: np.ndarray | None = None) -> None:
        for i in range(nchunks):
            fn(i)


SERIAL: Runner = Serial()
