"""The ``.ecnn`` container (spec/FORMAT.md): preamble, header, payloads.

One table of fields (:mod:`ecnn.container.header`) drives both the reader and
the writer. Nothing here imports torch or any later stage.
"""

from ecnn.container.format import FORMAT_MAJOR, FORMAT_MINOR, SIGNATURE, Limits
from ecnn.container.reader import Container, read_preamble
from ecnn.container.writer import atomic_write, layout, serialize

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "SIGNATURE",
    "Limits",
    "Container",
    "read_preamble",
    "atomic_write",
    "layout",
    "serialize",
]
