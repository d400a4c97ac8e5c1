"""Entropy coding: integers and a model in, bytes out, and back.

The range coder encodes and decodes with the compiled encoder and decoder of
:mod:`ecnn._core` (both follow spec/RANGE_CODER.md; the encoder writes the
words that constriction's ``RangeEncoder`` writes, which the tests check).

The coders code; they do not choose (that is :mod:`ecnn.select`). Every coder
is listed once in :data:`ecnn.coder.registry.CODERS`; :mod:`ecnn.coder.streams`
validates and decodes a stream through it. Decoders run their chunks with the
runner the caller passes (:mod:`ecnn.coder.runner`).

Nothing here imports torch or any later stage (select, container, codec);
of ecnn it imports only :mod:`ecnn.context` and :mod:`ecnn._core`.
"""
