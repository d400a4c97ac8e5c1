"""Scheduling host-side decoding for the loaders: one tensor at a time, or on several threads.

The loaders in :mod:`ecnn.torch`, :mod:`ecnn.onnx` and :mod:`ecnn.file` move
tensors to their runtime one at a time. This module decides where each one is
decoded and hands back :class:`ecnn.codec.HostTensor` objects, which only
:mod:`ecnn.codec` makes: the storage array or, for a quantized tensor, its
integer symbols in the narrowest integer type that holds them.

The compiled range decoder and numpy's large operations release the GIL, so
with ``workers > 1`` a large tensor's chunks are split over threads
(:mod:`ecnn.chunkrun`), and runs of smaller tensors are split the same way,
one tensor per thread, each decoded into its own arrays; tensors come back in
order.

The file is anything with ``record(name)`` and ``payload(name, check=True)``
(:class:`ecnn.file.EcnnFile`).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from ecnn import chunkrun, codec

LARGE = 1 << 21  # elements: a tensor this large is split by chunks
BATCH_BYTES = 1 << 24  # host bytes of small tensors decoded together by the workers


def host_layout(f, name: str) -> tuple[np.dtype, bool]:
    """The dtype a tensor's host data will have, and whether it may narrow after decoding.

    Only the symbol stream's first bytes are read, unchecked: decoding checks the CRC and the parameters.
    """
    rec = f.record(name)
    return codec.host_dtype(rec, codec.symbol_head(rec, f.payload(name, check=False)))


def host_nbytes(f, name: str) -> int:
    """Bytes the host form of a tensor takes (symbols for quantized tensors)."""
    return f.record(name).numel * host_layout(f, name)[0].itemsize


def _decode(f, name: str) -> codec.HostTensor:
    return codec.decode_host(f.record(name), f.payload(name))


def _decode_batch(f, names: list[str], n: int) -> list[codec.HostTensor | Exception]:
    """Decode small tensors on up to ``n`` threads, one tensor each, the largest first; each into its own arrays.

    A tensor that fails gives its exception in its place, so that the caller raises it in order.
    """
    out: list[codec.HostTensor | Exception | None] = [None] * len(names)
    # The queue hands out the largest tensors first, so the batch ends on small ones.
    by_size = sorted(range(len(names)), key=lambda i: -f.record(names[i]).numel)

    def one(j: int) -> None:
        i = by_size[j]
        out[i] = _decode_or_error(f, names[i])  # its chunks inline: this is a chunkrun job already

    with chunkrun.using(n):
        chunkrun.run(len(names), one)
    return out


def _decode_or_error(f, name: str) -> codec.HostTensor | Exception:
    try:
        return _decode(f, name)
    except Exception as e:  # noqa: BLE001 - raised in order by iter_host
        return e


def iter_host(f, names: Iterable[str], workers: int | None = None) -> Iterator[codec.HostTensor]:
    """Decode tensors in order, with up to ``workers`` threads.

    A tensor of at least :data:`LARGE` elements is decoded with its chunks
    split over ``workers`` threads (:mod:`ecnn.chunkrun`). Runs of smaller
    tensors, up to :data:`BATCH_BYTES` of decoded data at a time (or the
    largest tensor's size, if more), are split over the same number of
    threads, one tensor each, the largest first, each decoded into arrays of
    its own. The smaller tensors that come before a large one wait for the run
    after it (so a slow small tensor does not leave the other threads idle);
    at most one large tensor waits for them. Host memory stays within the
    largest tensor plus one run, not the model. The tensors come out in the
    order of ``names``, and a failure is raised where decoding one tensor at
    a time would raise it: after the tensors before the failing one.

    Args:
        f: the opened file (:class:`ecnn.file.EcnnFile`).
        names: tensors to decode, in the order they are wanted.
        workers: threads to decode with; 1 decodes on the calling thread only; None: :func:`ecnn.chunkrun.workers`.
    """
    names = list(names)
    n = chunkrun.workers() if workers is None else workers
    if n <= 1 or len(names) <= 1:
        with chunkrun.using(n if len(names) == 1 else 1):
            for name in names:
                yield _decode(f, name)
        return
    batch: list[str] = []
    batch_bytes = 0
    # A large tensor decoded ahead of the batch's earlier tensors (or its error), and its place.
    held: tuple[int, codec.HostTensor | Exception] | None = None
    host_bytes = {name: host_nbytes(f, name) for name in names}
    # A batch may hold as much as the largest tensor: memory stays within twice that,
    # and larger batches leave the threads idle less often at their ends.
    limit = max([BATCH_BYTES, *host_bytes.values()])

    def flush():
        nonlocal batch, batch_bytes, held
        done = _decode_batch(f, batch, n) if batch else []
        if held is not None:
            done.insert(held[0], held[1])
        batch, batch_bytes, held = [], 0, None
        for h in done:
            if isinstance(h, Exception):
                raise h
            yield h

    for name in names:
        if f.record(name).numel >= LARGE:
            if held is not None:
                yield from flush()
            # Decoded now, yielded after the smaller tensors before it: those join the
            # next batch, so a slow small tensor does not leave the other threads idle.
            with chunkrun.using(n):
                held = (len(batch), _decode_or_error(f, name))
            continue
        batch.append(name)
        batch_bytes += host_bytes[name]
        if batch_bytes >= limit:
            yield from flush()
    if batch or held is not None:
        yield from flush()
