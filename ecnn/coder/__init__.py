"""Entropy coding on top of constriction: integers and a model in, bytes out, and back.

The coders code; they do not choose (that is :mod:`ecnn.select`). Every coder
is listed once in :data:`ecnn.coder.registry.CODERS`; :mod:`ecnn.coder.streams`
validates and decodes a stream through it. Decoders run their chunks with the
runner the caller passes (:mod:`ecnn.coder.runner`).

Nothing here imports torch or any later stage (select, container, codec).
"""
