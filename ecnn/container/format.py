"""Constants and caps of format v1 (spec/FORMAT.md, "Preamble" and "Limits")."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ecnn._core import _bits

# 0x8E catches 7-bit transfers, CR LF catches line-ending conversion,
# 0x1A stops a DOS "type" (the same tricks as PNG's signature).
SIGNATURE = b"\x8eECNN\r\n\x1a"
FORMAT_MAJOR = 1
FORMAT_MINOR = 4  # the highest minor version this code writes and knows
FILES_MINOR = 3  # the first minor version with stored files (spec/FORMAT.md 6.6)
COMPACT_MINOR = 4  # the first minor version with the compact header (spec/FORMAT.md 6.7)
PREAMBLE = struct.Struct("<8sHHII")  # signature, major, minor, header length, header CRC-32
PREAMBLE_SIZE = PREAMBLE.size  # 20

MAX_HEADER_LENGTH = 64 << 20
MAX_ARRAY_ELEMENTS = 1 << 20  # elements of any header array (spec/FORMAT.md 9.1)
MAX_MAP_ENTRIES = 1 << 16  # entries of any header map
MAX_TENSORS = MAX_ARRAY_ELEMENTS  # the records are one array
MAX_NAME_BYTES = 1024
MAX_NDIM = 32
MAX_DIM = 1 << 48
MAX_STREAMS = 64
MAX_METADATA_ENTRIES = MAX_MAP_ENTRIES  # the metadata is one map
MAX_ALIGN = 4096
MAX_FILES = 1 << 16  # stored files in one file (spec/FORMAT.md 6.6)
MAX_FILE_COMPONENTS = 32  # parts of a stored file's name between slashes
MAX_FILE_COMPONENT_BYTES = 255
# The characters of a stored file's name besides "/": enough for every model folder's file names,
# and none that a file system reads specially (spec/FORMAT.md 6.6).
FILE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-+")
# Names Windows gives to devices, whatever the suffix: a component whose part before its first dot is one.
RESERVED_FILE_STEMS = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(10)] + [f"lpt{i}" for i in range(10)]
)


@dataclass(frozen=True)
class Limits:
    """Caps a reader enforces before allocating (run option; does not shape the bitstream).

    Attributes:
        max_tensor_bytes: largest decoded size of one tensor.
        max_total_bytes: largest decoded size of all tensors together.
        max_header_length: largest header accepted (at most the format's cap).
        max_file_bytes: largest stored file (spec/FORMAT.md 6.6).
        max_files_bytes: largest size of all stored files together.
    """

    max_tensor_bytes: int = 1 << 36
    max_total_bytes: int = 1 << 40
    max_header_length: int = MAX_HEADER_LENGTH
    max_file_bytes: int = 1 << 28
    max_files_bytes: int = 1 << 30


# The compiled CRC folds with carry-less multiplication where the CPU has it (about 3x zlib's speed).
_crc = _bits.crc32 if _bits.CRC32_FAST else zlib.crc32


def crc32(*parts) -> int:
    """CRC-32 (ISO-HDLC, as zlib and PNG compute it) of the concatenated parts."""
    c = 0
    for p in parts:
        c = _crc(p, c)
    return c & 0xFFFFFFFF


def align_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def file_name_problem(name) -> str | None:
    """Why ``name`` is not a valid stored file name (spec/FORMAT.md 6.6), or None when it is.

    A valid name is a relative POSIX path that stays inside whatever folder it
    is written to, on every common file system: components of the characters
    ``A-Z a-z 0-9 . _ - +``, none empty, none ending in ``.`` (so neither
    ``.`` nor ``..``), none a Windows device name.
    """
    if type(name) is not str:
        return "it is not a string"
    if not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return f"it is not 1..{MAX_NAME_BYTES} bytes long"
    bad = next((c for c in name if c != "/" and c not in FILE_NAME_CHARS), None)
    if bad is not None:
        return f"it holds the character {bad!r} (allowed: A-Z a-z 0-9 . _ - + and / between parts)"
    parts = name.split("/")
    if len(parts) > MAX_FILE_COMPONENTS:
        return f"it has more than {MAX_FILE_COMPONENTS} parts"
    for part in parts:
        if not part:
            return "it is absolute, ends in '/' or holds '//'"
        if part.endswith("."):
            return f"its part {part!r} ends in '.' (as '.' and '..' do)"
        if len(part) > MAX_FILE_COMPONENT_BYTES:
            return f"a part is longer than {MAX_FILE_COMPONENT_BYTES} bytes"
        if part.split(".", 1)[0].lower() in RESERVED_FILE_STEMS:
            return f"its part {part!r} is a device name on Windows"
    return None


def file_name_key(name: str) -> str:
    """What two stored file names are compared by: ASCII letters folded to lower case (spec/FORMAT.md 6.6)."""
    return name.lower()  # names are ASCII (file_name_problem), so this folds A-Z only


class FileNames:
    """The stored file names seen so far, for the rule that no two may clash (spec/FORMAT.md 6.6)."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._folders: set[str] = set()

    def add(self, name: str) -> str | None:
        """Take ``name``; returns why it clashes with an earlier name (then it is not taken), or None."""
        key = file_name_key(name)
        parts = key.split("/")
        folders = ["/".join(parts[:k]) for k in range(1, len(parts))]
        if key in self._keys:
            return "an earlier stored file has the same name (letter case ignored)"
        if key in self._folders:
            return "an earlier stored file lies in a folder of this name"
        clash = next((d for d in folders if d in self._keys), None)
        if clash is not None:
            return f"it lies in a folder named like the earlier stored file {clash!r}"
        self._keys.add(key)
        self._folders.update(folders)
        return None
