"""Reference range decoder for ecnn streams (pure Python, standard library only).

This module implements *only* what is written in ``spec/RANGE_CODER.md`` and is
meant as an executable cross-check of that specification.  It decodes the
output of constriction's queue-style range coder in the configuration that
ecnn uses (32-bit words, 64-bit state, 24-bit probability precision by
default), for categorical models given by integer frequencies ``f_i >= 0``
with ``sum(f) == 2**precision - n``.  Each symbol ``i`` then has the
fixed-point probability ``f_i + 1`` (out of ``2**precision``) and the left
cumulative ``cdf[i] = sum_{j<i} (f_j + 1)``.

Public API
----------
``cdf_from_freqs(freqs, precision=24)``
    Build and validate the cumulative table (length ``n + 1``).
``RangeDecoder(words, precision=24)``
    Incremental decoder: ``decode_symbol(cdf)`` per symbol (the table may
    change from symbol to symbol), then ``finish()`` for the end-of-stream
    checks.
``decode_categorical(words, freqs, count, precision=24, strict=True)``
    Decode ``count`` symbols that all use the same table.
``decode_segments(words, segments, precision=24, strict=True)``
    Decode consecutive runs ``[(freqs, count), ...]`` from a single stream.

Speed is deliberately not a goal; readability is.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable, Sequence

WORD_BITS = 32
STATE_BITS = 64
WORD_MASK = (1 << WORD_BITS) - 1
STATE_MASK = (1 << STATE_BITS) - 1
# Renormalization threshold: after each symbol, range >= 2**(64-32).
RANGE_THRESHOLD = 1 << (STATE_BITS - WORD_BITS)

__all__ = [
    "RangeDecoderError",
    "cdf_from_freqs",
    "RangeDecoder",
    "decode_categorical",
    "decode_segments",
]


class RangeDecoderError(ValueError):
    """The compressed data is inconsistent with the spec (corrupt or truncated)."""


def _check_precision(precision: int) -> None:
    if not (1 <= precision <= STATE_BITS - WORD_BITS):
        raise ValueError(f"precision must be in 1..{STATE_BITS - WORD_BITS}, got {precision}")


def cdf_from_freqs(freqs: Sequence[int], precision: int = 24) -> list[int]:
    """Return the cumulative table ``[cdf_0, ..., cdf_n]`` for frequencies ``freqs``.

    ``cdf_0 = 0``, ``cdf_{i+1} = cdf_i + f_i + 1`` and ``cdf_n = 2**precision``.
    Raises ``ValueError`` if the table violates the convention of the spec.
    """
    _check_precision(precision)
    n = len(freqs)
    total = 1 << precision
    if n < 2 or n >= total - 1:
        raise ValueError(f"alphabet size must satisfy 2 <= n < 2**{precision} - 1, got {n}")
    cdf = [0]
    for f in freqs:
        f = int(f)
        if f < 0:
            raise ValueError("frequencies must be non-negative")
        cdf.append(cdf[-1] + f + 1)
    if cdf[-1] != total:
        raise ValueError(
            f"frequencies must sum to 2**{precision} - n = {total - n}, got {cdf[-1] - n}"
        )
    return cdf


class RangeDecoder:
    """State machine of the range decoder described in spec/RANGE_CODER.md.

    Attributes (all plain ints):
      ``lower``  64-bit lower end of the current interval (arithmetic mod 2**64)
      ``range``  64-bit width of the current interval (never 0, never wraps)
      ``point``  64-bit window onto the compressed number (arithmetic mod 2**64)
      ``pos``    index of the next word to read from ``words``
      ``pads``   number of times a missing word was replaced by zero
      ``renorms`` number of renormalizations performed so far
      ``symbols_decoded``
    """

    def __init__(self, words: Iterable[int], precision: int = 24):
        _check_precision(precision)
        self.words = [int(w) for w in words]
        for w in self.words:
            if not (0 <= w <= WORD_MASK):
                raise ValueError("compressed words must be unsigned 32-bit integers")
        self.precision = precision
        self.pos = 0
        self.pads = 0
        self.renorms = 0
        self.symbols_decoded = 0
        self.lower = 0
        self.range = STATE_MASK  # 2**64 - 1, not 2**64
        # Initial point: the first two words, most significant first; a
        # missing word counts as zero.
        self.point = 0
        for _ in range(STATE_BITS // WORD_BITS):
            self.point = (self.point << WORD_BITS) | self._next_word()

    def _next_word(self) -> int:
        if self.pos < len(self.words):
            w = self.words[self.pos]
            self.pos += 1
            return w
        self.pads += 1
        return 0

    def decode_symbol(self, cdf: Sequence[int]) -> int:
        """Decode one symbol with the cumulative table ``cdf`` (as from cdf_from_freqs)."""
        p = self.precision
        scale = self.range >> p
        quantile = ((self.point - self.lower) & STATE_MASK) // scale
        if quantile >= (1 << p):
            raise RangeDecoderError(
                f"invalid data: quantile {quantile} >= 2**{p} at symbol {self.symbols_decoded}"
            )
        # The unique s with cdf[s] <= quantile < cdf[s+1].
        s = bisect_right(cdf, quantile) - 1
        left, prob = cdf[s], cdf[s + 1] - cdf[s]
        self.lower = (self.lower + scale * left) & STATE_MASK
        self.range = scale * prob
        if self.range < RANGE_THRESHOLD:
            # One renormalization step always suffices (precision <= 32).
            self.lower = (self.lower << WORD_BITS) & STATE_MASK
            self.range <<= WORD_BITS
            self.point = ((self.point << WORD_BITS) & STATE_MASK) | self._next_word()
            self.renorms += 1
        self.symbols_decoded += 1
        return s

    def expected_num_words(self) -> int:
        """Length the encoder's output must have had, given the symbols decoded so far."""
        if self.range == STATE_MASK:  # nothing was encoded
            return 0
        point_word, extra_zero = self._seal()
        return self.renorms + 1 + (1 if extra_zero else 0)

    def _seal(self) -> tuple[int, bool]:
        sealed_point = (self.lower + (1 << (STATE_BITS - WORD_BITS)) - 1) & STATE_MASK
        point_word = sealed_point >> (STATE_BITS - WORD_BITS)
        upper_word = ((self.lower + self.range) & STATE_MASK) >> (STATE_BITS - WORD_BITS)
        return point_word, upper_word == point_word

    def finish(self) -> None:
        """End-of-stream checks (spec section "Detecting corruption").

        Verifies that the stream has exactly the length the encoder would
        have produced and that its final words are exactly the encoder's
        sealing words.  Raises ``RangeDecoderError`` otherwise.
        """
        expected = self.expected_num_words()
        if len(self.words) != expected:
            raise RangeDecoderError(
                f"stream has {len(self.words)} words, encoder would have written {expected}"
            )
        if expected == 0:
            return
        point_word, _ = self._seal()
        if self.point != point_word << WORD_BITS:
            raise RangeDecoderError(
                f"final point {self.point:#018x} does not match sealing word {point_word:#010x}"
            )


def decode_segments(
    words: Sequence[int],
    segments: Iterable[tuple[Sequence[int], int]],
    precision: int = 24,
    strict: bool = True,
) -> list[int]:
    """Decode consecutive runs of symbols; run k has ``count_k`` symbols with table ``freqs_k``."""
    dec = RangeDecoder(words, precision)
    out: list[int] = []
    for freqs, count in segments:
        if count < 0:
            raise ValueError("count must be non-negative")
        cdf = cdf_from_freqs(freqs, precision)
        for _ in range(count):
            out.append(dec.decode_symbol(cdf))
    if strict:
        dec.finish()
    return out


def decode_categorical(
    words: list[int],
    freqs: list[int],
    count: int,
    precision: int = 24,
    strict: bool = True,
) -> list[int]:
    """Decode ``count`` symbols encoded i.i.d. with the categorical table ``freqs``.

    ``words``: the compressed u32 words in the order constriction's
    ``RangeEncoder.get_compressed()`` returns them.  ``freqs``: integer
    frequencies ``f_i >= 0`` with ``sum(f) == 2**precision - len(freqs)``
    (symbol ``i`` gets probability ``(f_i + 1) / 2**precision``).  With
    ``strict=True`` (default) the end-of-stream checks of the spec are
    applied and ``RangeDecoderError`` is raised on any inconsistency.
    """
    return decode_segments(words, [(freqs, count)], precision, strict)
