"""Every stream coder in one table: name, the format minor that introduced it, descriptor keys, functions.

:func:`ecnn.coder.streams.validate` and :func:`ecnn.coder.streams.decode`
dispatch through :data:`CODERS`; the container reads a coder's minor version
with :func:`coder_minor`. Adding a coder is one module and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ecnn.coder import blocks, cat0, ctx, packed, rans, raw, rowcol
from ecnn.errors import UnsupportedCoding


@dataclass(frozen=True)
class Coder:
    """One stream coder.

    Attributes:
        name: the descriptor's ``coder`` value.
        minor: the format minor version that introduced it (spec/FORMAT.md section 13).
        keys: the descriptor keys it defines (``coder`` and ``length`` included).
        validate: ``validate(desc, count, lo, hi)``: its own descriptor checks, after the
            generic ones of :func:`ecnn.coder.streams.validate`.
        decode: ``decode(desc, buf, count, out_dtype, lo, hi, runner)``: the stream's
            ``count`` symbols in ``[lo, hi]`` as ``out_dtype``.
        encode: its encoder, ``(desc, bytes)`` from the coder's own arguments (integers
            and the model :mod:`ecnn.select` chose).
        general: any stream may use it; False where only a representation that names
            it may (``blocks``: the heads of ``fields``).
    """

    name: str
    minor: int
    keys: frozenset
    validate: Callable[[dict, int, int, int], None]
    decode: Callable[..., np.ndarray]
    encode: Callable[..., tuple]
    general: bool = True


CODERS: dict[str, Coder] = {
    c.name: c
    for c in (
        Coder("const", 0, frozenset(raw.CONST_KEYS), raw.validate_const, raw.decode_const, raw.encode_const),
        Coder("raw", 0, frozenset(raw.RAW_KEYS), raw.validate_raw, raw.decode_raw, raw.encode_raw),
        Coder("cat0", 0, frozenset(cat0.KEYS), cat0.validate, cat0.decode, cat0.encode),
        Coder("rowcol", 0, frozenset(rowcol.KEYS), rowcol.validate, rowcol.decode, rowcol.encode),
        Coder("ctx", 1, frozenset(ctx.KEYS), ctx.validate, ctx.decode_stream, ctx.encode),
        # bit fields (spec/CODING.md section 5.7)
        Coder("packed", 1, frozenset(packed.KEYS), packed.validate, packed.decode, packed.encode),
        # class tables coded block by block, for the heads of fields only (section 5.8)
        Coder("blocks", 1, frozenset(blocks.KEYS), blocks.validate, blocks.decode, blocks.encode, general=False),
        # the blocks layout in interleaved rANS lanes, for the heads of fields only (section 5.9)
        Coder("rans", 2, frozenset(rans.KEYS), rans.validate, rans.decode, rans.encode, general=False),
    )
}


def coder_minor(name: str) -> int:
    """The format minor version that introduced coder ``name``.

    Raises:
        UnsupportedCoding: no coder has that name.
    """
    c = CODERS.get(name)
    if c is None:
        raise UnsupportedCoding(f"unknown stream coder {name!r}")
    return c.minor
