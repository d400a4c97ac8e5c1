"""Constants and caps of format v1 (spec/FORMAT.md, "Preamble" and "Limits")."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# 0x8E catches 7-bit transfers, CR LF catches line-ending conversion,
# 0x1A stops a DOS "type" (the same tricks as PNG's signature).
SIGNATURE = b"\x8eECNN\r\n\x1a"
FORMAT_MAJOR = 1
FORMAT_MINOR = 2  # the highest minor version this code writes and knows
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


@dataclass(frozen=True)
class Limits:
    """Caps a reader enforces before allocating (run option; does not shape the bitstream).

    Attributes:
        max_tensor_bytes: largest decoded size of one tensor.
        max_total_bytes: largest decoded size of all tensors together.
        max_header_length: largest header accepted (at most the format's cap).
    """

    max_tensor_bytes: int = 1 << 36
    max_total_bytes: int = 1 << 40
    max_header_length: int = MAX_HEADER_LENGTH


def crc32(*parts) -> int:
    """CRC-32 (ISO-HDLC, as zlib and PNG compute it) of the concatenated parts."""
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return c & 0xFFFFFFFF


def align_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align
