"""The compiled core: hot loops in C11 behind a thin CPython binding (no third-party libraries).

:mod:`ecnn._core._rc` is the range decoder of spec/RANGE_CODER.md. Its
functions take buffers (the 32-bit words, cumulative tables, contexts) and
write into a caller-provided integer array, without the GIL while they loop:

* ``Decoder(words)``: ``decode(cdf, out)`` decodes ``len(out)`` symbols with
  one cumulative table ``cdf`` (``c_0 = 0 < ... < c_n = 2**24``, int32 or
  uint32); ``decode_ctx(cdfs, ctx, out)`` decodes symbol ``j`` with row
  ``ctx[j]`` of a 2-D array of tables; ``exhausted()`` is the end-of-chunk
  check of spec/CODING.md, section 8.
* ``decode_chunk(words, cdf, out)``: one chunk with one table; returns
  whether the end-of-chunk conditions hold.

Invalid data, a table that contradicts the data and a context outside the
tables raise ``ValueError``; wrong buffer types raise ``TypeError``. The
module is built by pip from ``setup.py`` when ecnn is installed.
"""

try:
    import ecnn._core._rc  # noqa: F401 - the compiled module, built by pip (setup.py)
except ImportError as e:  # pragma: no cover - a source tree whose core was never built
    raise ImportError(
        "ecnn's compiled core (ecnn/_core/_rc) is not built: install ecnn with pip (`pip install -e .` in a "
        "checkout, or tools/setup.sh), which needs a C compiler and the Python headers"
    ) from e
