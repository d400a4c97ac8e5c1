"""Reading and writing whole ``.ecnn`` files on numpy arrays.

This layer knows nothing of torch: tensors are numpy storage arrays plus a
:class:`~ecnn.dtypes.DType` (bfloat16 and float8 travel as their bit patterns).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from ecnn import chunkrun, codec, dtypes, parallel
from ecnn.config import EncodeConfig
from ecnn.container import format as fmt
from ecnn.container.reader import Container, TensorRecord
from ecnn.container.writer import DEFAULT_ALIGN, Spool, atomic_write, head, serialize
from ecnn.errors import EcnnError, InvalidFileName, InvalidOption, InvalidTensorName, TruncatedFile

# A file packed from an ONNX model holds its graph as this uint8 tensor (spec/FORMAT.md, ONNX appendix).
ONNX_GRAPH_TENSOR = "onnx::model"
ONNX_METADATA_KEY = "ecnn.onnx"
ONNX_METADATA_VERSION = "1"
# Every value of ``ecnn.onnx`` that marks a packed ONNX model ("2": Constant and renamed stubs).
ONNX_METADATA_VERSIONS = ("1", "2")

# Drops a range of pages from a process's mapping (EcnnFile.release); None where the platform lacks it.
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None) if hasattr(mmap.mmap, "madvise") else None

# (tensor name, position, total): input bytes done when encoding; when decoding, the
# tensor's index (or decoded bytes done, with count_bytes).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TensorInfo:
    """What the header says about one tensor, for listing without decoding."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    representation: str
    step: float | None
    coded_bytes: int
    coders: tuple[str, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * dtypes.get(self.dtype).itemsize

    @property
    def bits_per_value(self) -> float:
        return 8.0 * self.coded_bytes / self.numel if self.numel else 0.0


def _info(rec: TensorRecord) -> TensorInfo:
    from ecnn import quantize, repr as reprs

    step = quantize.step_from_bits(rec.repr["step"]) if reprs.REPRS[rec.repr["kind"]].quantized else None
    return TensorInfo(
        name=rec.name,
        dtype=rec.dtype,
        shape=rec.shape,
        representation=rec.repr["kind"],
        step=step,
        coded_bytes=rec.length,
        coders=tuple(s["coder"] for s in rec.streams),
    )


# --- encoding ---------------------------------------------------------------


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise InvalidTensorName(f"tensor names must be strings, got {type(name).__name__}")
    if not 1 <= len(name.encode("utf-8")) <= fmt.MAX_NAME_BYTES:
        raise InvalidTensorName(f"tensor name must be 1..{fmt.MAX_NAME_BYTES} UTF-8 bytes: {name[:40]!r}")
    return name


def _check_metadata(metadata) -> dict[str, str]:
    md = dict(metadata or {})
    for k, v in md.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidOption("metadata must map strings to strings")
    return md


def check_files(files: Mapping[str, bytes] | None) -> list[tuple[str, bytes]]:
    """Files to store (spec/FORMAT.md 6.6), checked: ``(name, bytes)`` in the caller's order.

    Raises:
        InvalidFileName: a name the format refuses (not a safe relative path) or
            one that clashes with an earlier one (letter case ignored, or a
            file named like another's folder); InvalidOption: contents that are
            not bytes.
    """
    out: list[tuple[str, bytes]] = []
    taken = fmt.FileNames()
    for name, data in (files or {}).items():
        why = fmt.file_name_problem(name)
        if why is None:
            why = taken.add(name)
        if why is not None:
            raise InvalidFileName(f"cannot store a file named {str(name)[:80]!r}: {why}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidOption(f"stored file {name!r}: contents must be bytes, got {type(data).__name__}")
        out.append((name, bytes(data)))
    return out


def write_file_into(folder, name: str, data: bytes) -> int:
    """Write a stored file to ``folder/name``, creating its subfolders; returns its size.

    ``name`` must be valid by spec/FORMAT.md 6.6 (:func:`check_files`), so the
    path stays inside ``folder``; the file is created new (``"xb"``), never
    written through an existing file or link. For folders this process has
    just made (nothing else writes there).

    Raises:
        InvalidFileName: ``name`` is not a valid stored file name.
        FileExistsError: something is already at that path.
    """
    why = fmt.file_name_problem(name)
    if why is not None:
        raise InvalidFileName(f"cannot write a file named {str(name)[:80]!r}: {why}")
    root = os.path.realpath(os.fspath(folder))
    path = os.path.join(root, *name.split("/"))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    if os.path.commonpath([os.path.realpath(parent), root]) != root:  # a link among the subfolders
        raise InvalidFileName(f"{name!r} would be written outside {folder}")
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(data)


@dataclass(frozen=True)
class Source:
    """A tensor to encode, read only when :attr:`read` is called (see :func:`ecnn.io.open_weights`).

    ``read()`` returns the storage array (``dtype.storage``, ``shape``). It may
    run in a forked worker process, so it should open whatever it reads itself.
    """

    name: str
    dtype: dtypes.DType
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for s in self.shape:
            n *= s
        return n


def sources(arrays: Mapping[str, tuple[np.ndarray, dtypes.DType]]) -> list[Source]:
    """Arrays already in memory, as sources."""
    return [Source(name, dt, tuple(arr.shape), lambda arr=arr: arr) for name, (arr, dt) in arrays.items()]


# Input bytes in flight when encoding a stream of tensors: read, being encoded, or
# encoded and waiting for the tensors before them to be written. At least twice the
# largest tensor, so that while one worker encodes the largest the others have
# tensors to work on; the payloads that wait behind it stay within about that much.
STREAM_WINDOW = 1 << 29


def _window(srcs: list[Source], window: int | None) -> int:
    if window is not None:
        return window
    return max(STREAM_WINDOW, 2 * max((s.nbytes for s in srcs), default=0))


def encode_stream(
    srcs: list[Source], config: EncodeConfig, progress: Progress | None = None, window: int | None = None
) -> Iterable[tuple[dict, bytes]]:
    """Encode tensors one at a time; yields ``(record, payload)`` in their order.

    With several workers (:func:`ecnn.chunkrun.workers`) tensors are read and
    encoded side by side (in forked processes on Linux, on threads elsewhere:
    see ``ecnn.chunkrun.JOBS_IN_PROCESSES``), with at most ``window`` bytes of
    input in flight (default: :data:`STREAM_WINDOW`, or twice the largest
    tensor if more); the bytes are the same either way.
    ``progress`` is called as ``progress(name, bytes_done, bytes_total)``
    with the input bytes of the tensors handed back so far.
    """
    names = [_check_name(s.name) for s in srcs]
    if len(set(names)) != len(names):
        raise InvalidTensorName("tensor names must be unique")
    total = sum(s.nbytes for s in srcs)

    def one(i: int):
        s = srcs[i]
        arr = s.read()
        if tuple(arr.shape) != tuple(s.shape) or arr.dtype != s.dtype.storage:
            raise InvalidOption(f"tensor {s.name!r}: read {arr.dtype}{list(arr.shape)}, expected {s.dtype.name}{list(s.shape)}")
        return codec.encode_tensor(s.name, arr, s.dtype, config)

    if progress:
        progress("", 0, total)
    done = 0
    for i, (rec, payload) in chunkrun.imap_ordered(len(srcs), one, [s.nbytes for s in srcs], _window(srcs, window)):
        done += srcs[i].nbytes
        if progress:
            progress(srcs[i].name, done, total)
        yield rec, payload


def encode_parts(
    arrays: Mapping[str, tuple[np.ndarray, dtypes.DType]],
    config: EncodeConfig,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Iterable[bytes]:
    """Encode arrays; returns the file as a sequence of byte strings.

    ``progress(name, bytes_done, bytes_total)`` as in :func:`encode_stream`;
    ``files`` as in :func:`save_stream`.
    """
    md = _check_metadata(metadata)
    stored = check_files(files)
    records, payloads = [], []
    for rec, payload in encode_stream(sources(arrays), config, progress, window=1 << 62):  # all in memory anyway
        records.append(rec)
        payloads.append(payload)
    return encode_records(records, payloads, md, config.align, files=dict(stored))


def encode(arrays, config: EncodeConfig, metadata=None, progress: Progress | None = None, files=None) -> bytes:
    return b"".join(encode_parts(arrays, config, metadata, progress, files))


def save(arrays, path, config: EncodeConfig, metadata=None, progress: Progress | None = None, files=None) -> int:
    """Encode and write atomically; returns the file size."""
    return save_stream(sources(arrays), path, config, metadata, progress, files=files)


def save_stream(
    srcs: list[Source],
    path,
    config: EncodeConfig,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    window: int | None = None,
    files: Mapping[str, bytes] | None = None,
) -> int:
    """Encode tensors read one at a time and write the file atomically; returns its size.

    ``files`` maps names (relative POSIX paths such as ``config.json`` or
    ``1_Pooling/config.json``) to bytes stored beside the tensors, each with
    its CRC-32 (spec/FORMAT.md 6.6): a model folder's configuration and
    tokenizer files. Storing any makes the file's Format_Minor 3.

    Memory stays within the window of :func:`encode_stream` whatever the
    model's size: each payload goes to a hidden temporary file in the output's
    folder as soon as the ones before it have (:class:`ecnn.container.writer.Spool`),
    and the file is assembled from the header and that data once every tensor
    is encoded. Only the records are kept. The bytes are those
    :func:`encode` gives for the same tensors.

    Raises:
        InvalidTensorName, InvalidOption, UnsupportedDtype, InvalidFileName,
        and what the sources raise when read (e.g. UnreadableInput).
    """
    md = _check_metadata(metadata)
    stored = check_files(files)
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    records: list[dict] = []
    minor = 0
    with Spool(folder, config.align) as spool:
        for rec, payload in encode_stream(srcs, config, progress, window):
            rec = dict(rec)
            minor = max(minor, codec.minor_version([rec], [payload]))
            spool.add(rec, payload)
            records.append(rec)
        frecs = []
        for name, data in stored:  # after the tensors' payloads (spec/FORMAT.md 8)
            frec = {"name": name}
            spool.add(frec, data)
            frecs.append(frec)
        return atomic_write(path, [head(records, md, config.align, minor=minor, files=frecs), spool.chunk()])


def encode_records(
    records: list[dict],
    payloads: list,
    metadata: Mapping[str, str] | None = None,
    align: int = DEFAULT_ALIGN,
    files: Mapping[str, bytes] | None = None,
) -> list[bytes]:
    """The file made of tensors already encoded, as a sequence of byte strings.

    For callers that encode tensors one by one (:func:`ecnn.codec.encode_tensor`,
    :func:`ecnn.codec.encode_quantized`), e.g. to try several encodings of a
    tensor and keep some. Names and metadata are checked as :func:`encode_parts`
    checks them, and the bytes are those it writes for the same records. The
    records passed in are not modified.

    Args:
        records: one record per tensor, in file order, without ``offset``,
            ``length`` and ``crc32``.
        payloads: their payloads.
        metadata: string-to-string map stored in the file.
        align: payload alignment in bytes (``EncodeConfig.align``).
        files: stored files, as for :func:`save_stream`.

    Raises:
        InvalidTensorName: a bad or repeated tensor name.
        InvalidOption: metadata that is not strings to strings.
        InvalidFileName: a stored file name the format refuses.
    """
    md = _check_metadata(metadata)
    stored = check_files(files)
    names = [_check_name(r["name"]) for r in records]
    if len(set(names)) != len(names):
        raise InvalidTensorName("tensor names must be unique")
    records = [dict(r) for r in records]
    minor = codec.minor_version(records, payloads)
    return list(serialize(records, list(payloads), md, align, minor=minor, files=stored))


# --- decoding ---------------------------------------------------------------


class EcnnFile:
    """An opened ``.ecnn`` file: list tensors, decode any one without the rest.

    The header and every record are validated when the file is opened; a
    tensor's payload is checked against its CRC-32 when it is decoded.

    Example:
        >>> with ecnn.numpy.open("model.ecnn") as f:      # doctest: +SKIP
        ...     print(f.keys())
        ...     w, dtype = f.get_array("fc.weight")
    """

    def __init__(self, source, limits: fmt.Limits = fmt.Limits()):
        self._mmap = None
        self._file = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            buf = source
        else:
            self._file = open(os.fspath(source), "rb")
            try:
                size = os.fstat(self._file.fileno()).st_size
                if size == 0:
                    raise TruncatedFile("file is empty")
                self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            except BaseException:
                self._file.close()
                raise
            buf = self._mmap
        try:
            self._c = Container(buf, limits)
            for rec in self._c.records:
                codec.validate_record(rec)
        except BaseException:
            self.close()
            raise
        self._drop(0, self._c.header_end)  # the header is parsed into objects; its pages are not needed again

    # dict-like listing
    def keys(self) -> list[str]:
        return self._c.names()

    def weight_names(self) -> list[str]:
        """The tensors a state-dict loader returns: every tensor but a packed ONNX graph.

        A file packed from an ONNX model (metadata ``ecnn.onnx`` = ``"1"`` or ``"2"``) holds
        the graph itself as the uint8 tensor ``onnx::model`` (spec/FORMAT.md,
        appendix on ONNX models); it is not a weight, so ``ecnn.load_file``,
        ``ecnn.torch.load_file`` and ``ecnn.numpy.load_file`` leave it out.
        :meth:`keys` lists it.
        """
        if self.metadata().get(ONNX_METADATA_KEY) in ONNX_METADATA_VERSIONS:
            return [n for n in self.keys() if n != ONNX_GRAPH_TENSOR]
        return self.keys()

    def __contains__(self, name) -> bool:
        return name in self._c._by_name

    def __len__(self) -> int:
        return len(self._c)

    def metadata(self) -> dict[str, str]:
        return dict(self._c.metadata)

    @property
    def version(self) -> tuple[int, int]:
        return self._c.major, self._c.minor

    @property
    def size(self) -> int:
        return len(self._c.buf)

    # stored files (spec/FORMAT.md 6.6)
    def file_names(self) -> list[str]:
        """The names of the stored files, in file order (none for files before format 1.3)."""
        return [r.name for r in self._c.files]

    def file_sizes(self) -> dict[str, int]:
        """``{name: size in bytes}`` of the stored files, in file order."""
        return {r.name: r.length for r in self._c.files}

    def read_file(self, name: str) -> bytes:
        """A stored file's bytes, checked against its CRC-32.

        Raises:
            FileNotStored: no stored file of that name.
            PayloadChecksumMismatch: its bytes are damaged.
        """
        rec = self._c.file_record(name)
        data = bytes(self._c.file_payload(rec))
        self._drop(rec.offset, rec.length)
        return data

    def files(self) -> dict[str, bytes]:
        """Every stored file, ``{name: bytes}`` in file order, each checked against its CRC-32."""
        return {name: self.read_file(name) for name in self.file_names()}

    def info(self, name: str) -> TensorInfo:
        return _info(self._c.record(name))

    def infos(self) -> list[TensorInfo]:
        return [_info(r) for r in self._c.records]

    def record(self, name: str) -> TensorRecord:
        """The validated header record of a tensor (TensorNotFound if there is none)."""
        return self._c.record(name)

    def payload(self, name: str, check: bool = True) -> memoryview:
        """A tensor's payload bytes (zero-copy), checked against its CRC-32 unless ``check`` is False."""
        return self._c.payload(self._c.record(name), check)

    def get_array(self, name: str) -> tuple[np.ndarray, dtypes.DType]:
        """Decode one tensor to its numpy storage array and dtype."""
        rec = self._c.record(name)
        return codec.decode_tensor(rec, self._c.payload(rec)), dtypes.get(rec.dtype)

    def get_host(self, name: str) -> codec.HostTensor:
        """Decode one tensor for a loader: a quantized tensor's symbols and steps, else its storage array."""
        rec = self._c.record(name)
        return codec.decode_host(rec, self._c.payload(rec))

    def _arrays(self, names: list[str], progress: Progress | None = None, workers: int | None = None):
        return {name: (arr, dt) for name, arr, dt in self._iter(names, progress, workers, False)}

    def _iter(self, names: list[str], progress: Progress | None, workers: int | None, count_bytes: bool):
        total = sum(self._c.record(n).nbytes for n in names) if count_bytes else len(names)
        done = 0
        for i, h in enumerate(parallel.iter_host(self, names, workers)):
            if progress:
                progress(h.name, done if count_bytes else i, total)
            name, dtype = h.name, h.dtype
            values = codec.host_values(h)
            del h
            yield name, values, dtype
            del values
            self.release(name)
            done += self._c.record(name).nbytes
        if progress:
            progress("", total, total)

    def iter_arrays(
        self,
        names: list[str] | None = None,
        progress: Progress | None = None,
        workers: int | None = None,
        count_bytes: bool = False,
    ) -> Iterator[tuple[str, np.ndarray, dtypes.DType]]:
        """Decode tensors one after another, after checking the padding between payloads.

        Memory stays within what :func:`ecnn.parallel.iter_host` holds (the
        largest tensor and one run of smaller ones), whatever the file's size:
        each tensor's payload pages leave this process's mapping of the file
        (:meth:`release`) once the caller has taken the next one.

        Args:
            names: which tensors, in order (default: every one).
            progress: called as ``progress(name, position, total)`` as each tensor
                comes out, and ``progress("", total, total)`` at the end.
            workers: decoding threads, as for :meth:`arrays`.
            count_bytes: positions and total count decoded bytes (for a bar showing
                MB/s); otherwise tensors.

        Yields:
            ``(name, storage array, dtype)``.
        """
        self.check_padding()
        yield from self._iter(self.keys() if names is None else list(names), progress, workers, count_bytes)

    def release(self, name: str) -> None:
        """Drop a tensor's payload pages from this process's mapping of the file.

        A payload read once (checksum, decoding) stays resident in the mapping
        and counts in the process's memory until the file is closed; streaming
        readers call this after each tensor, so that reading a file larger than
        memory takes constant memory. The pages remain in the operating system's
        page cache, and the data stays readable: the mapping is read-only and
        shared, so a page dropped here comes back from the file on the next read
        (an array that views the payload, or another thread still decoding it,
        sees the same bytes). Nothing happens for a file read from bytes, or
        where ``madvise`` is missing.
        """
        rec = self._c.record(name)
        self._drop(rec.offset, rec.length)

    def _drop(self, start: int, length: int) -> None:
        if self._mmap is None or _DONTNEED is None or length <= 0:
            return
        first = start - start % mmap.PAGESIZE  # madvise takes a page-aligned start; the kernel rounds the end up
        try:
            self._mmap.madvise(_DONTNEED, first, start + length - first)
        except (OSError, ValueError):
            pass  # only a hint

    def check_padding(self) -> None:
        """Check that every padding byte of the file is zero (NonZeroPadding if not).

        The pages read for it leave the process's mapping afterwards (:meth:`release`).
        """
        try:
            self._c.check_padding()
        finally:
            for a, b in self._c.padding():
                self._drop(a, b - a)

    def arrays(self, progress: Progress | None = None, names: list[str] | None = None, workers: int | None = None):
        """Decode tensors (default: every one) after checking the padding between payloads.

        Args:
            progress: called as ``progress(name, index, total)`` before each tensor.
            names: which tensors, in order.
            workers: decoding threads (:func:`ecnn.parallel.iter_host`); None: ``ECNN_WORKERS``
                or the CPU count (at most 8); 1: the calling thread only.

        Returns:
            ``{name: (storage array, dtype)}``.
        """
        self.check_padding()
        return self._arrays(self.keys() if names is None else list(names), progress, workers)

    def verify(self, progress: Progress | None = None, count_bytes: bool = False) -> None:
        """Check every checksum and padding byte and decode every tensor, one at a time; then check
        every stored file's checksum (spec/FORMAT.md 10, "Verification").

        Args:
            progress: as for :meth:`iter_arrays`.
            count_bytes: progress positions count decoded bytes instead of tensors.

        Raises:
            FormatError: the first problem found.
        """
        for _ in self.iter_arrays(progress=progress, count_bytes=count_bytes):
            pass
        for rec in self._c.files:
            self._c.file_payload(rec)
            self._drop(rec.offset, rec.length)

    def close(self) -> None:
        if getattr(self, "_c", None) is not None:
            self._c.release()
            self._c = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a caller still holds a view of it; it closes when that view goes
            self._mmap = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "EcnnFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except EcnnError:
            pass
