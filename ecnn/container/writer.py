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


def layout_files(files: list[dict], blobs: list, start: int, align: int = DEFAULT_ALIGN) -> int:
    """Fill in the file records' ``offset``, ``length`` and ``crc32``, their payloads after the
    tensors' (whose data ends at ``start``, relative to the data section); returns the new end."""
    pos = start
    for rec, data in zip(files, blobs, strict=True):
        pos = fmt.align_up(pos, align)
        rec["offset"] = pos
        rec["length"] = len(data)
        rec["crc32"] = fmt.crc32(data)
        pos += len(data)
    return pos


def head(
    records: list[dict], metadata: dict[str, str], align: int = DEFAULT_ALIGN, *, minor: int, files: list[dict] | None = None
) -> bytes:
    """Preamble, header and the padding up to the data section, for records already laid out.

    The payloads follow, each at its record's ``offset`` from the end of these
    bytes (spec/FORMAT.md section 8). ``files`` are stored file records (spec/FORMAT.md
    section 6.6), laid out after the tensors; none leaves the field out.
    """
    top = {"align": align, "metadata": dict(metadata), "tensors": records}
    if files:
        top["files"] = files
        minor = max(minor, fmt.FILES_MINOR)
    header = hdr.encode(top)
    versions_and_length = struct.pack("<HHI", fmt.FORMAT_MAJOR, minor, len(header))
    preamble = fmt.PREAMBLE.pack(fmt.SIGNATURE, fmt.FORMAT_MAJOR, minor, len(header), fmt.crc32(versions_and_length, header))
    end = fmt.PREAMBLE_SIZE + len(header)
    pad = fmt.align_up(end, align) - end if records or files else 0  # an empty file ends at its header
    return preamble + header + bytes(pad)


def serialize(
    records: list[dict],
    payloads: list,
    metadata: dict[str, str],
    align: int = DEFAULT_ALIGN,
    *,
    minor: int,
    files: list[tuple[str, bytes]] | None = None,
) -> Iterator[bytes]:
    """Yield the bytes of a whole file, piece by piece (payloads are not copied).

    ``minor`` is the Format_Minor written: the lowest that covers the features the
    records use (spec/FORMAT.md section 11), which the codec knows; stored
    ``files`` (name, bytes), if any, raise it to 3.
    """
    layout(records, payloads, align)
    end = records[-1]["offset"] + records[-1]["length"] if records else 0
    frecs = [{"name": n} for n, _ in files or ()]
    blobs = [b for _, b in files or ()]
    layout_files(frecs, blobs, end, align)
    yield head(records, metadata, align, minor=minor, files=frecs)
    pos = 0
    for rec, data in zip([*records, *frecs], [*payloads, *blobs]):
        gap = rec["offset"] - pos
        if gap:
            yield bytes(gap)
        yield data
        pos = rec["offset"] + len(data)


class Spool:
    """Payloads written one after another to a hidden temporary file, laid out as the data section.

    For writers that produce payloads one at a time and cannot hold them all:
    each :meth:`add` pads to the alignment, writes the payload and fills in the
    record's ``offset``, ``length`` and ``crc32`` (as :func:`layout` does).
    :func:`atomic_write` then copies the data section into the output after
    the header (:meth:`chunk`), inside the kernel where it can, cutting the
    spool short behind the copy, so the disk never holds the data twice. The
    file is deleted on :meth:`close` (it has no name where the system allows).
    """

    def __init__(self, folder: str | os.PathLike, align: int = DEFAULT_ALIGN) -> None:
        self.align = align
        self.size = 0
        self._file = tempfile.TemporaryFile(prefix=".ecnn-", suffix=".tmp", dir=os.fspath(folder))

    def add(self, rec: dict, data) -> None:
        start = fmt.align_up(self.size, self.align)
        if start > self.size:
            self._file.write(bytes(start - self.size))
        self._file.write(data)
        rec["offset"] = start
        rec["length"] = len(data)
        rec["crc32"] = fmt.crc32(data)
        self.size = start + len(data)

    def chunk(self) -> "FileSpan":
        """The data section, as a chunk for :func:`atomic_write` (used up as it is copied: once only)."""
        self._file.flush()
        return FileSpan(self._file.fileno(), 0, self.size, consume=True)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FileSpan:
    """``length`` bytes of an open file from ``offset``: a chunk :func:`atomic_write` copies without reading it into memory.

    With ``consume``, the source file is cut short behind the copy as it goes
    (the copy runs from the end backwards), so that copying a spool into the
    output never needs disk space for both.
    """

    BLOCK = 1 << 26  # bytes copied at a time, and the most disk both files hold at once beyond the output

    def __init__(self, fd: int, offset: int, length: int, consume: bool = False) -> None:
        self.fd, self.offset, self.length, self.consume = fd, offset, length, consume

    def __len__(self) -> int:
        return self.length

    def copy_to(self, out) -> None:
        out.flush()
        dst = out.fileno()
        base = os.lseek(dst, 0, os.SEEK_CUR)
        end = self.length
        while end > 0:
            start = max(0, end - self.BLOCK)
            self._copy(dst, self.offset + start, base + start, end - start)
            if self.consume:
                os.ftruncate(self.fd, self.offset + start)  # the source's blocks behind the copy are let go
            end = start
        os.lseek(dst, base + self.length, os.SEEK_SET)

    def _copy(self, dst: int, src_pos: int, dst_pos: int, left: int) -> None:
        while left:
            try:
                k = os.copy_file_range(self.fd, dst, left, src_pos, dst_pos)
            except (AttributeError, OSError):
                k = 0  # not on this system or between these file systems: copy through a buffer
            if not k:
                block = os.pread(self.fd, min(left, 1 << 23), src_pos)
                if not block:
                    raise OSError(f"spool file ended {left} bytes early")
                view = memoryview(block)
                at = dst_pos
                while view:
                    w = os.pwrite(dst, view, at)
                    view, at = view[w:], at + w
                k = len(block)
            src_pos += k
            dst_pos += k
            left -= k


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
                if isinstance(c, FileSpan):
                    c.copy_to(f)
                else:
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
    fsync_dir(folder)
    return n


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (where the file system can fsync a folder)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is done
