"""Reading a container: every check happens before anything is allocated.

:class:`Container` takes any buffer (``bytes``, ``mmap``, ``memoryview``) and
validates the preamble, the header and the payload layout against the file size
(spec/FORMAT.md, "Decoding a file"). Payloads are then handed out as zero-copy
``memoryview`` slices, each checked against its CRC-32 on request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ecnn import dtypes
from ecnn.container import format as fmt
from ecnn.container import header as hdr
from ecnn.errors import (
    BadLayout,
    BadSignature,
    DuplicateFileName,
    DuplicateTensorName,
    FileNotStored,
    HeaderChecksumMismatch,
    HeaderTooLarge,
    LimitExceeded,
    NonZeroPadding,
    PayloadChecksumMismatch,
    TensorNotFound,
    TrailingData,
    TruncatedFile,
    UnsupportedVersion,
)


@dataclass(frozen=True)
class TensorRecord:
    """One tensor's entry in the header (fields as in spec/FORMAT.md, "Tensor record")."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute offset in the file
    length: int
    crc32: int
    repr: dict
    streams: list

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * dtypes.get(self.dtype).itemsize


@dataclass(frozen=True)
class FileRecord:
    """One stored file's entry in the header (spec/FORMAT.md, "Stored files")."""

    index: int
    name: str
    offset: int  # absolute offset in the file
    length: int
    crc32: int


def read_preamble(buf) -> tuple[int, int, int, int]:
    """Parse the 20-byte preamble: (major, minor, header length, header CRC).

    Raises:
        BadSignature, TruncatedFile, UnsupportedVersion.
    """
    head = bytes(buf[: fmt.PREAMBLE_SIZE])
    n = min(len(head), len(fmt.SIGNATURE))
    if head[:n] != fmt.SIGNATURE[:n]:
        raise BadSignature("not an .ecnn file (bad signature)")
    if len(head) < fmt.PREAMBLE_SIZE:
        raise TruncatedFile(f"file is {len(head)} bytes, shorter than the 20-byte preamble")
    _, major, minor, hlen, hcrc = fmt.PREAMBLE.unpack(head)
    if major != fmt.FORMAT_MAJOR:
        raise UnsupportedVersion(
            f"format version {major}.{minor} is not supported (this decoder reads {fmt.FORMAT_MAJOR}.x)"
        )
    return major, minor, hlen, hcrc


class Container:
    """A validated view of a ``.ecnn`` file held in a buffer.

    Args:
        buf: the whole file. Kept by reference (e.g. an mmap).
        limits: caps checked before any allocation.

    Raises:
        FormatError subclasses, in the order spec/FORMAT.md gives.
    """

    def __init__(self, buf, limits: fmt.Limits = fmt.Limits()):
        self.buf = memoryview(buf).cast("B")
        try:
            self._parse(limits)
        except BaseException:
            self.buf.release()
            raise

    def _parse(self, limits: fmt.Limits) -> None:
        size = len(self.buf)
        self.major, self.minor, hlen, hcrc = read_preamble(self.buf)
        if hlen > min(limits.max_header_length, fmt.MAX_HEADER_LENGTH):
            raise HeaderTooLarge(f"header length {hlen} exceeds the cap of {limits.max_header_length}")
        hend = fmt.PREAMBLE_SIZE + hlen
        if hend > size:
            raise TruncatedFile(f"file ends at byte {size}, inside the {hlen}-byte header")
        header_bytes = bytes(self.buf[fmt.PREAMBLE_SIZE : hend])  # a copy: no view outlives an error
        if fmt.crc32(bytes(self.buf[8:16]), header_bytes) != hcrc:
            raise HeaderChecksumMismatch("header checksum mismatch (the file is damaged)")
        h = hdr.decode(header_bytes)
        self.header = h
        self.metadata: dict[str, str] = dict(h["metadata"])
        self.align: int = h["align"]
        self.header_end = hend
        self.data_start = fmt.align_up(hend, self.align)
        self.records: list[TensorRecord] = []
        self._by_name: dict[str, TensorRecord] = {}
        expected = 0
        total = 0
        for i, r in enumerate(h["tensors"]):
            rec = TensorRecord(
                index=i,
                name=r["name"],
                dtype=r["dtype"],
                shape=tuple(r["shape"]),
                offset=self.data_start + r["offset"],
                length=r["length"],
                crc32=r["crc32"],
                repr=r["repr"],
                streams=r["streams"],
            )
            if rec.name in self._by_name:
                raise DuplicateTensorName(f"tensor name {rec.name!r} appears twice")
            if rec.nbytes > limits.max_tensor_bytes:
                raise LimitExceeded(
                    f"tensor {rec.name!r} declares {rec.nbytes} bytes, over the cap of {limits.max_tensor_bytes}"
                )
            total += rec.nbytes
            if total > limits.max_total_bytes:
                raise LimitExceeded(f"tensors declare more than {limits.max_total_bytes} bytes in all")
            expected = fmt.align_up(expected, self.align)
            if r["offset"] != expected:
                raise BadLayout(
                    f"tensor {rec.name!r} payload at offset {r['offset']}, expected {expected}"
                )
            expected += rec.length
            if self.data_start + expected > size:
                raise TruncatedFile(f"payload of tensor {rec.name!r} runs past the end of the file")
            self.records.append(rec)
            self._by_name[rec.name] = rec
        self.files: list[FileRecord] = []
        self._files_by_name: dict[str, FileRecord] = {}
        taken = fmt.FileNames()
        file_total = 0
        for i, r in enumerate(h.get("files", ())):
            frec = FileRecord(index=i, name=r["name"], offset=self.data_start + r["offset"], length=r["length"], crc32=r["crc32"])
            clash = taken.add(frec.name)
            if clash is not None:
                raise DuplicateFileName(f"stored file name {frec.name!r} is refused: {clash}")
            if frec.length > limits.max_file_bytes:
                raise LimitExceeded(
                    f"stored file {frec.name!r} is {frec.length} bytes, over the cap of {limits.max_file_bytes}"
                )
            file_total += frec.length
            if file_total > limits.max_files_bytes:
                raise LimitExceeded(f"stored files take more than {limits.max_files_bytes} bytes in all")
            expected = fmt.align_up(expected, self.align)
            if r["offset"] != expected:
                raise BadLayout(f"stored file {frec.name!r} at offset {r['offset']}, expected {expected}")
            expected += frec.length
            if self.data_start + expected > size:
                raise TruncatedFile(f"stored file {frec.name!r} runs past the end of the file")
            self.files.append(frec)
            self._files_by_name[frec.name] = frec
        self.data_end = self.data_start + expected if self.records or self.files else hend
        if self.data_end < size:
            raise TrailingData(f"{size - self.data_end} bytes follow the last payload")

    # --- access -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def record(self, name: str) -> TensorRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise TensorNotFound(f"no tensor named {name!r} in the file") from None

    def payload(self, rec: TensorRecord, check: bool = True) -> memoryview:
        """The payload bytes of a record (zero-copy), checked against its CRC-32."""
        return self._checked(rec, check, f"payload of tensor {rec.name!r}")

    def file_record(self, name: str) -> FileRecord:
        try:
            return self._files_by_name[name]
        except KeyError:
            raise FileNotStored(f"no stored file named {name!r} in the file") from None

    def file_payload(self, rec: FileRecord, check: bool = True) -> memoryview:
        """A stored file's bytes (zero-copy), checked against its CRC-32."""
        return self._checked(rec, check, f"stored file {rec.name!r}")

    def _checked(self, rec: TensorRecord | FileRecord, check: bool, what: str) -> memoryview:
        """The bytes a record points at (zero-copy), checked against its CRC-32 when ``check``."""
        data = self.buf[rec.offset : rec.offset + rec.length]
        if check and fmt.crc32(data) != rec.crc32:
            raise PayloadChecksumMismatch(f"{what} is damaged (CRC-32 mismatch)")
        return data

    def padding(self) -> list[tuple[int, int]]:
        """The padding of the file as ``(start, end)`` byte ranges: after the header, between payloads."""
        gaps = []
        pos = self.header_end
        for rec in [*self.records, *self.files]:
            gaps.append((pos, rec.offset))
            pos = rec.offset + rec.length
        if not self.records and not self.files:
            gaps.append((self.header_end, self.header_end))
        return gaps

    def check_padding(self) -> None:
        """Check that every padding byte (after the header, between payloads) is zero."""
        for a, b in self.padding():
            if any(self.buf[a:b]):
                raise NonZeroPadding(f"non-zero padding in bytes {a}..{b}")

    def release(self) -> None:
        self.buf.release()
