"""Scheduling host-side decoding for the loaders: one tensor at a time, or in worker processes.

The loaders in :mod:`ecnn.torch`, :mod:`ecnn.onnx` and :mod:`ecnn.file` move
tensors to their runtime one at a time. This module decides where each one is
decoded and hands back :class:`ecnn.codec.HostTensor` objects, which only
:mod:`ecnn.codec` makes: the storage array or, for a quantized tensor, its
integer symbols in the narrowest integer type that holds them.

constriction holds the GIL while it decodes, so threads do not help; with
``workers > 1`` a large tensor's chunks are split over forked processes
(:mod:`ecnn.chunkrun`), and runs of smaller tensors are split the same way,
one tensor per process. The workers write into shared memory; tensors come
back in order.

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


def _decode_batch(f, names: list[str], n: int) -> list[codec.HostTensor]:
    """Decode small tensors in up to ``n`` forked processes, into shared memory; nothing is pickled."""
    layouts = [host_layout(f, name) for name in names]
    sizes = [f.record(name).numel * dt.itemsize for name, (dt, _) in zip(names, layouts)]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    # One "chunk" per tensor; the shared buffer is split like a chunked output.
    buf = chunkrun.empty(int(offsets[-1]), np.uint8, len(names))
    kept: list[codec.HostTensor | None] = [None] * len(names)
    # The queue hands out the largest tensors first, so the batch ends on small ones.
    by_size = sorted(range(len(names)), key=lambda i: -f.record(names[i]).numel)

    def one(j: int) -> None:
        i = by_size[j]
        with chunkrun.using(1):
            h = _decode(f, names[i])
        dst = buf[offsets[i] : offsets[i + 1]].view(layouts[i][0])
        dst[...] = h.data.reshape(-1)
        kept[i] = h  # in this process only; a worker's results live in buf

    with chunkrun.using(n):
        chunkrun.run(len(names), one, buf)
    out = []
    for i, name in enumerate(names):
        h = kept[i]
        if h is None:  # decoded by a worker: only the row steps, if any, are decoded here
            data = buf[offsets[i] : offsets[i + 1]].view(layouts[i][0])
            h = codec.decode_host(f.record(name), f.payload(name, check=False), data)
        out.append(h)
    return out


def iter_host(f, names: Iterable[str], workers: int | None = None) -> Iterator[codec.HostTensor]:
    """Decode tensors in order, with up to ``workers`` processes.

    A tensor of at least :data:`LARGE` elements is decoded with its chunks
    split over ``workers`` forked processes (:mod:`ecnn.chunkrun`). Runs of
    smaller tensors, up to :data:`BATCH_BYTES` of decoded data at a time (or
    the largest tensor's size, if more), are split over the same number of
    processes, one tensor each, the largest first. The smaller tensors that
    come before a large one wait for the run after it (so a slow small tensor
    does not leave the other processes idle); at most one large tensor waits
    for them. Workers write into shared memory, so host memory stays within
    the largest tensor plus one run, not the model, and nothing passes between
    processes but a status.

    Args:
        f: the opened file (:class:`ecnn.file.EcnnFile`).
        names: tensors to decode, in the order they are wanted.
        workers: processes to decode with; 1 decodes here only; None: :func:`ecnn.chunkrun.workers`.
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
    held: tuple[int, codec.HostTensor] | None = None  # a large tensor decoded ahead of the batch's earlier tensors
    host_bytes = {name: host_nbytes(f, name) for name in names}
    # A batch may hold as much as the largest tensor: memory stays within twice that,
    # and larger batches leave the processes idle less often at their ends.
    limit = max([BATCH_BYTES, *host_bytes.values()])

    def flush():
        nonlocal batch, batch_bytes, held
        done = _decode_batch(f, batch, n) if batch else []
        if held is not None:
            done.insert(held[0], held[1])
        batch, batch_bytes, held = [], 0, None
        return done

    for name in names:
        if f.record(name).numel >= LARGE:
            if held is not None:
                yield from flush()
            # Decoded now, yielded after the smaller tensors before it: those join the
            # next batch, so a slow small tensor does not leave the other processes idle.
            with chunkrun.using(n):
                held = (len(batch), _decode(f, name))
            continue
        batch.append(name)
        batch_bytes += host_bytes[name]
        if batch_bytes >= limit:
            yield from flush()
    if batch or held is not None:
        yield from flush()
