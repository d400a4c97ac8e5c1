"""What every representation shares: the registry entry and the stream helpers.

A representation (spec/CODING.md section 4) says how a tensor's values become
integer symbol streams. Each one lives in its own module of :mod:`ecnn.repr`
and describes itself with a :class:`Representation`, which the registry
(:data:`ecnn.repr.REPRS`) collects; the container and the codec read only the
registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from ecnn.container.reader import TensorRecord
from ecnn.context import order0, rate
from ecnn.dtypes import DType
from ecnn.errors import CorruptPayload, InvalidField

Candidate = tuple[dict, list, bytes]  # (repr map, stream descriptors, payload)
Parts = list  # [(descriptor, memoryview of the stream's bytes), ...]


class Symbols(NamedTuple):
    """A quantized tensor before reconstruction: its integer symbols and steps.

    Attributes:
        q: the symbols, one per element, in C order (any integer type that holds them).
        step: the tensor's float32 step.
        row_steps: for per-row steps, the step of each row (float32, or float64
            for float64 tensors); None otherwise.
    """

    q: np.ndarray
    step: float
    row_steps: np.ndarray | None


@dataclass(frozen=True)
class Representation:
    """One representation: its header vocabulary and what encodes and decodes it.

    Attributes:
        name: the ``kind`` string of the ``repr`` map.
        minor: the Format_Minor that introduced it (spec/FORMAT.md section 11).
        keys: the keys its ``repr`` map may hold (``kind`` included; keys
            starting with ``_`` are ancillary and always allowed).
        validate: ``validate(rec, dt)`` checks the record's repr map and
            stream descriptors before anything is decoded (spec/CODING.md
            section 9); raises a FormatError subclass.
        decode: ``decode(rec, payload, dt)`` gives the tensor's storage
            array from its CRC-checked payload.
        encode: ``encode(arr, dt, cfg, step)`` gives a :data:`Candidate`, or
            None where the representation does not apply or cannot win
            (``step`` is used by the quantized representations only). The
            exact ones also take ``bound=``, the cost in bytes of a candidate
            already built, and may return None where their estimate shows
            that they cannot beat it.
        symbols: for quantized representations, ``symbols(rec, payload, dt,
            symbol_dtype)`` gives the :class:`Symbols` without reconstructing
            values; None for exact ones.
        symbol_dtype: for quantized representations, ``symbol_dtype(rec,
            head)`` is the narrowest integer type known, from the descriptor
            and the first bytes ``head`` of the symbol stream, to hold the
            symbols.
    """

    name: str
    minor: int
    keys: frozenset
    validate: Callable[[TensorRecord, DType], None]
    decode: Callable[[TensorRecord, memoryview, DType], np.ndarray]
    encode: Callable[..., Candidate | None]
    symbols: Callable[..., Symbols] | None = None
    symbol_dtype: Callable[[TensorRecord, memoryview], np.dtype] | None = None

    @property
    def quantized(self) -> bool:
        return self.symbols is not None


def nstreams(rec: TensorRecord, n: int) -> None:
    """Check that a record has ``n`` stream descriptors."""
    if len(rec.streams) != n:
        raise InvalidField(f"tensor {rec.name!r}: {rec.repr['kind']} needs {n} streams, has {len(rec.streams)}")


def check_lengths(rec: TensorRecord) -> None:
    """Check that the streams' lengths add up to the payload's."""
    total = sum(d["length"] for d in rec.streams)
    if total != rec.length:
        raise InvalidField(f"tensor {rec.name!r}: stream lengths sum to {total}, payload is {rec.length}")


def split(rec: TensorRecord, payload) -> Parts:
    """The payload cut into its streams: ``[(descriptor, bytes), ...]`` (zero-copy)."""
    mv = memoryview(payload)
    pos = 0
    out = []
    for d in rec.streams:
        out.append((d, mv[pos : pos + d["length"]]))
        pos += d["length"]
    if pos != len(mv):
        raise CorruptPayload(f"tensor {rec.name!r}: streams do not cover the payload")
    return out


def storage(values: np.ndarray, dt: DType, shape) -> np.ndarray:
    """Little-endian element bytes viewed as ``dt``'s storage type, in native order and ``shape``."""
    little = dt.storage.newbyteorder("<") if dt.itemsize > 1 else dt.storage
    return values.view(little).astype(dt.storage, copy=False).reshape(shape)


def bools(values: np.ndarray, rec: TensorRecord) -> np.ndarray:
    """Bytes of a bool tensor: only 0 and 1 are valid."""
    if values.size and int(values.max()) > 1:
        raise CorruptPayload(f"tensor {rec.name!r}: bool bytes other than 0 and 1")
    return values.astype(np.bool_).reshape(rec.shape)


# A stream's estimate (ecnn.select.choose) is its ideal code length plus an allowance
# per chunk for the chunk index and the range coder's final words: the coded size
# differs from it by a few millionths of the symbols' bits and at most that allowance.
ESTIMATE_MARGIN = 1e-3


def cannot_win(estimate_bits: float, bound: int | None, streams: list[tuple[int, int]]) -> bool:
    """Whether a candidate whose streams' estimates sum to ``estimate_bits`` cannot beat
    another of ``bound`` bytes (None: no other), however its estimates err.

    Args:
        estimate_bits: the sum of :func:`ecnn.select.choose`'s estimates of its streams
            (descriptors included where they were costed).
        bound: the cost in bytes of the other candidate, or None.
        streams: ``(symbols, chunk)`` of each stream, for the allowance of its chunks.
    """
    if bound is None:
        return False
    slack = sum(n // chunk + 2 for n, chunk in streams) * (rate.CHUNK_INDEX_BITS + order0.FLUSH_BITS)
    return estimate_bits - slack > 8.0 * bound * (1.0 + ESTIMATE_MARGIN)


def rows_of(arr: np.ndarray) -> int | None:
    """Rows of the matrix view used by row/column contexts: the first dimension."""
    return int(arr.shape[0]) if arr.ndim >= 2 else None
