"""Writing a container (spec/FORMAT.md, "Encoding a file").

Payload offsets are relative to the data section, so they do not depend on the
header's own length; the writer can fill them in before serializing the header.
"""

from __future__ import annotations

import os
import struct
import tempfile
from typing import Iterable, Iterator

from ecnn.container import format as fmt
from ecnn.container import header as hdr

DEFAULT_ALIGN = 8


def layout(records: list[dict], payloads: list, align: int = DEFAULT_ALIGN) -> None:
    """Fill in ``offset``, ``length`` and ``crc32`` of each record from its payload."""
    pos = 0
    for rec, data in zip(records, payloads, strict=True):
        pos = fmt.align_up(pos, align)
        rec["offset"] = pos
        rec["length"] = len(data)
        rec["crc32"] = fmt.crc32(data)
        pos += len(data)


def serialize(
    records: list[dict], payloads: list, metadata: dict[str, str], align: int = DEFAULT_ALIGN, *, minor: int
) -> Iterator[bytes]:
    """Yield the bytes of a whole file, piece by piece (payloads are not copied).

    ``minor`` is the Format_Minor written: the lowest that covers the features the
    records use (spec/FORMAT.md section 11), which the codec knows.
    """
    layout(records, payloads, align)
    header = hdr.encode({"align": align, "metadata": dict(metadata), "tensors": records})
    versions_and_length = struct.pack("<HHI", fmt.FORMAT_MAJOR, minor, len(header))
    preamble = fmt.PREAMBLE.pack(fmt.SIGNATURE, fmt.FORMAT_MAJOR, minor, len(header), fmt.crc32(versions_and_length, header))
    yield preamble
    yield header
    pos = fmt.PREAMBLE_SIZE + len(header)
    data_start = fmt.align_up(pos, align)
    for rec, data in zip(records, payloads):
        gap = data_start + rec["offset"] - pos
        if gap:
            yield bytes(gap)
        yield data
        pos = data_start + rec["offset"] + len(data)


def atomic_write(path: str | os.PathLike, chunks: Iterable) -> int:
    """Write chunks to ``path`` atomically: temporary file, fsync, rename.

    An interruption at any point leaves either the old file or none at
    ``path``, never a partial one. Returns the number of bytes written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ecnn-", suffix=".tmp", dir=folder)
    n = 0
    try:
        # mkstemp creates the file 0600; give it the mode open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
                n += len(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is done
    return n
