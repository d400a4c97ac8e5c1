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
tables raise ``ValueError``; wrong buffer types raise ``TypeError``.

:mod:`ecnn._core._rce` is the range encoder (spec/RANGE_CODER.md, section 9):
it writes, bit for bit, the words of constriction's ``RangeEncoder`` (32-bit
words, 64-bit state, 24-bit precision) for the same tables. It takes the same
cumulative tables as the decoder and symbols of any integer type, shape
(read in C order) and layout, and returns the sealed words as bytes, 4 per
word, little-endian, as a ``.ecnn`` file stores them:

* ``Encoder()``: ``encode(cdf, symbols)`` with one table, ``encode_ctx(cdfs,
  ctx, symbols)`` with row ``ctx[j]`` of a 2-D array of tables for symbol
  ``j``; ``get_words()`` seals a copy of the stream (encoding may go on);
  ``num_words()``; ``state()``.
* ``encode_chunk(cdf, symbols)``: one chunk with one table, sealed.

A symbol outside its table, a symbol whose interval is empty (zero
probability) and a context outside the tables raise ``ValueError``, and the
call then encodes nothing; wrong buffer types raise ``TypeError``.

Two more modules serve the ``fields`` representation:

* :mod:`ecnn._core._rans`, the interleaved rANS lanes of the ``rans`` coder
  (spec/CODING.md, section 5.9): ``tables(freqs, precision)`` builds a
  stream's decoding tables once, ``decode_blocks(...)`` decodes one chunk in
  the blocks order straight into the output (each symbol shifted into place),
  ``encode(cum, precision, syms, tab, lanes)`` codes one chunk;
* :mod:`ecnn._core._bits`, ``or_bits(out, buf, bit, width, shift)``: the
  packed tails and signs ORed into the output in one pass.

:mod:`ecnn._core._hist` serves the encoder's model search (spec/CODING.md,
sections 11.4 and 11.5), into caller-provided int64 arrays:
``axis_sums(sym, row_sums, col_sums)`` and ``context_hist(sym, rclass, cclass,
nsym, hist)`` count a 2-D int32 array (rows may be a strided sample) in one
pass; ``merge(hist, weight, table_of)`` merges adjacent contexts into tables;
``fit(hist, counts, codes)`` chooses a stored order-0 table.

Every module is built by pip from ``setup.py`` when ecnn is installed.
"""

try:
    import ecnn._core._rc  # noqa: F401 - the compiled modules, built by pip (setup.py)
    import ecnn._core._rce  # noqa: F401
    import ecnn._core._rans  # noqa: F401
    import ecnn._core._bits  # noqa: F401
    import ecnn._core._hist  # noqa: F401
except ImportError as e:  # pragma: no cover - a source tree whose core was never built
    raise ImportError(
        "ecnn's compiled core (ecnn/_core/_rc, _rce) is not built: install ecnn with pip (`pip install -e .` in a "
        "checkout, or tools/setup.sh), which needs a C compiler and the Python headers"
    ) from e
