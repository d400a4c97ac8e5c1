"""The representations of a tensor's values as symbol streams, and their registry.

One module per representation (spec/CODING.md section 4), each describing
itself with a :class:`~ecnn.repr.base.Representation`. :data:`REPRS` is the
one list of them: the codec validates, decodes and encodes through it, and the
writer takes each one's minor version from it. Adding a representation is one
module and one line here.
"""

from __future__ import annotations

from ecnn.errors import UnsupportedCoding
from ecnn.repr import codebook, fields, ints, planes, raw, uniform
from ecnn.repr.base import Representation, Symbols

REPRS: dict[str, Representation] = {
    r.name: r
    for r in (
        raw.REPR,
        planes.REPR,
        ints.REPR,
        uniform.UNIFORM,
        uniform.UNIFORM_ROWS,
        codebook.REPR,  # format 1.1
        fields.REPR,  # format 1.1
    )
}


def get(kind) -> Representation:
    """The representation of a ``kind`` string.

    Raises:
        UnsupportedCoding: no such representation (a reserved or future kind).
    """
    try:
        return REPRS[kind]
    except (KeyError, TypeError):
        raise UnsupportedCoding(f"unknown representation {kind!r}") from None


__all__ = ["REPRS", "Representation", "Symbols", "get"]
