/* ecnn._core._rans: the CPython binding of the rANS lanes in rans.c (spec/CODING.md, section 5.9).
 *
 * tables(freqs, precision) builds the decoding tables once per stream (an opaque capsule);
 * decode_blocks(...) decodes one chunk into a caller-provided array; encode(...) codes one chunk.
 * The loops run without the GIL. Wrong buffer types raise TypeError; data that contradicts its
 * tables, or a bad layout, raises ValueError. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "rans.h"
#include "pyints.h"

#define CAPSULE "ecnn._core._rans.tables"

/* A C-contiguous, aligned, native-order integer buffer; its kind (ecnn_rans_kind) in *kind. */
static int get_buf(PyObject *obj, Py_buffer *v, int writable, int *kind, const char *what)
{
    if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    int sgn, big;
    if (int_layout(v, 0, &sgn, &big) < 0)
        goto bad;
    switch (v->itemsize) {
    case 1: *kind = sgn ? ECNN_RANS_I8 : ECNN_RANS_U8; break;
    case 2: *kind = sgn ? ECNN_RANS_I16 : ECNN_RANS_U16; break;
    case 4: *kind = sgn ? ECNN_RANS_I32 : ECNN_RANS_U32; break;
    default: *kind = sgn ? ECNN_RANS_I64 : ECNN_RANS_U64; break;
    }
    if (v->itemsize > 1 && big != PY_BIG_ENDIAN) {
        PyErr_Format(PyExc_TypeError, "%s must be in native byte order", what);
        goto fail;
    }
    if (((uintptr_t)v->buf) % (uintptr_t)v->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s is not aligned to its item size", what);
        goto fail;
    }
    return 0;
bad:
    PyErr_Format(PyExc_TypeError, "%s: expected an integer buffer, got format '%s'", what, v->format ? v->format : "B");
fail:
    PyBuffer_Release(v);
    return -1;
}

/* get_buf, requiring one kind. */
static int get_kind(PyObject *obj, Py_buffer *v, int writable, int want, const char *what, const char *name)
{
    int kind;
    if (get_buf(obj, v, writable, &kind, what) < 0)
        return -1;
    if (kind != want) {
        PyErr_Format(PyExc_TypeError, "%s must be %s", what, name);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static int raise_status(int status)
{
    switch (status) {
    case ECNN_RANS_OK: return 0;
    case ECNN_RANS_NOMEM: PyErr_NoMemory(); break;
    case ECNN_RANS_BAD_TABLE: PyErr_SetString(PyExc_ValueError, "rANS frequencies do not sum to 2^precision"); break;
    case ECNN_RANS_BAD_STATE: PyErr_SetString(PyExc_ValueError, "a lane's initial state is below 2^16"); break;
    case ECNN_RANS_SHORT: PyErr_SetString(PyExc_ValueError, "a lane ran out of words"); break;
    case ECNN_RANS_LEFTOVER:
        PyErr_SetString(PyExc_ValueError, "a lane has words left over or does not end in its initial state");
        break;
    case ECNN_RANS_BAD_LAYOUT: PyErr_SetString(PyExc_ValueError, "lane sizes or the chunk's layout do not add up"); break;
    case ECNN_RANS_BAD_SYMBOL: PyErr_SetString(PyExc_ValueError, "a symbol outside its table, or of frequency 0"); break;
    default: PyErr_Format(PyExc_ValueError, "rANS status %d", status); break;
    }
    return -1;
}

static void tables_free(PyObject *cap)
{
    ecnn_rans_tables *t = (ecnn_rans_tables *)PyCapsule_GetPointer(cap, CAPSULE);
    if (t) {
        ecnn_rans_tables_free(t);
        PyMem_Free(t);
    }
}

static PyObject *tables(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *fo;
    unsigned precision;
    if (!PyArg_ParseTuple(args, "OI:tables", &fo, &precision))
        return NULL;
    Py_buffer f;
    if (get_kind(fo, &f, 0, ECNN_RANS_U32, "freqs", "uint32") < 0)
        return NULL;
    if (f.ndim != 2 || f.shape[0] < 1 || f.shape[1] < 1) {
        PyBuffer_Release(&f);
        PyErr_SetString(PyExc_ValueError, "freqs must be a non-empty 2-D array (tables, symbols)");
        return NULL;
    }
    ecnn_rans_tables *t = (ecnn_rans_tables *)PyMem_Malloc(sizeof *t);
    if (!t) {
        PyBuffer_Release(&f);
        return PyErr_NoMemory();
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = ecnn_rans_tables_init(t, (const uint32_t *)f.buf, (size_t)f.shape[0], (size_t)f.shape[1], precision);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&f);
    if (st) {
        PyMem_Free(t);
        raise_status(st);
        return NULL;
    }
    PyObject *cap = PyCapsule_New(t, CAPSULE, tables_free);
    if (!cap) {
        ecnn_rans_tables_free(t);
        PyMem_Free(t);
    }
    return cap;
}

/* The buffers of one chunk's decoding: lanes and the blocks schedule, and the output. */
typedef struct {
    Py_buffer data, words, rclass, runs, start, order, out;
    int have_order, kind, n; /* n: buffers held, in the order above (order only if have_order) */
    ecnn_rans_chunk c;
    ecnn_rans_sched s;
} chunk_args;

static void release_chunk(chunk_args *a)
{
    Py_buffer *b[] = {&a->data, &a->words, &a->rclass, &a->runs, &a->start, &a->order, &a->out};
    for (int i = 0; i < a->n; i++)
        if (i != 5 || a->have_order)
            PyBuffer_Release(b[i]);
}

static int get_chunk(chunk_args *a, PyObject *data_o, PyObject *words_o, PyObject *rclass_o, PyObject *runs_o,
                     PyObject *start_o, PyObject *order_o, PyObject *out_o)
{
    a->n = 0;
    a->have_order = order_o != Py_None;
    if (PyObject_GetBuffer(data_o, &a->data, PyBUF_SIMPLE) < 0)
        return -1;
    a->n = 1;
    if (get_kind(words_o, &a->words, 0, ECNN_RANS_U64, "words", "uint64") < 0)
        goto fail;
    a->n = 2;
    if (get_kind(rclass_o, &a->rclass, 0, ECNN_RANS_U8, "rclass", "uint8") < 0)
        goto fail;
    a->n = 3;
    if (get_kind(runs_o, &a->runs, 0, ECNN_RANS_I32, "runs", "int32") < 0)
        goto fail;
    a->n = 4;
    if (get_kind(start_o, &a->start, 0, ECNN_RANS_I64, "run_start", "int64") < 0)
        goto fail;
    a->n = 5;
    if (a->have_order && get_kind(order_o, &a->order, 0, ECNN_RANS_I64, "order", "int64") < 0)
        goto fail;
    a->n = 6;
    if (get_buf(out_o, &a->out, 1, &a->kind, "out") < 0)
        goto fail;
    a->n = 7;
    size_t nr = (size_t)a->rclass.len, nruns = (size_t)a->runs.len / (3 * sizeof(int32_t));
    size_t nrc = (size_t)a->start.len / sizeof(int64_t);
    size_t cols = nr ? (size_t)a->out.len / (size_t)a->out.itemsize / nr : 0;
    if (nrc < 2 || (size_t)a->runs.len % (3 * sizeof(int32_t)) || nr == 0 ||
        cols * nr * (size_t)a->out.itemsize != (size_t)a->out.len ||
        (a->have_order && (size_t)a->order.len / sizeof(int64_t) != cols) || a->words.len == 0 ||
        (size_t)a->words.len / sizeof(uint64_t) > ECNN_RANS_MAX_LANES) {
        PyErr_SetString(PyExc_ValueError, "inconsistent array sizes for a rans chunk");
        goto fail;
    }
    ecnn_rans_chunk c = {(const unsigned char *)a->data.buf, (size_t)a->data.len, (const uint64_t *)a->words.buf,
                         (size_t)a->words.len / sizeof(uint64_t)};
    ecnn_rans_sched s = {(const uint8_t *)a->rclass.buf, nr, cols, (const int32_t *)a->runs.buf, nruns,
                         (const int64_t *)a->start.buf, nrc - 1, a->have_order ? (const int64_t *)a->order.buf : NULL};
    a->c = c;
    a->s = s;
    return 0;
fail:
    release_chunk(a);
    return -1;
}

static PyObject *decode_blocks(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *data_o, *words_o, *rclass_o, *runs_o, *start_o, *order_o, *out_o;
    long long offset;
    unsigned shift;
    if (!PyArg_ParseTuple(args, "OOOOOOOLIO:decode_blocks", &cap, &data_o, &words_o, &rclass_o, &runs_o, &start_o,
                          &order_o, &offset, &shift, &out_o))
        return NULL;
    ecnn_rans_tables *t = (ecnn_rans_tables *)PyCapsule_GetPointer(cap, CAPSULE);
    if (!t)
        return NULL;
    chunk_args a;
    if (get_chunk(&a, data_o, words_o, rclass_o, runs_o, start_o, order_o, out_o) < 0)
        return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = ecnn_rans_decode_blocks(t, &a.c, &a.s, (int64_t)offset, shift, a.out.buf, a.kind);
    Py_END_ALLOW_THREADS
    release_chunk(&a);
    if (raise_status(st))
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *decode_rowcol(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *qcap, *scap, *data_o, *words_o, *rclass_o, *runs_o, *start_o, *order_o, *scols_o, *sstart_o, *out_o;
    long long offset;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOLO:decode_rowcol", &cap, &qcap, &scap, &data_o, &words_o, &rclass_o, &runs_o,
                          &start_o, &order_o, &scols_o, &sstart_o, &offset, &out_o))
        return NULL;
    ecnn_rans_tables *t = (ecnn_rans_tables *)PyCapsule_GetPointer(cap, CAPSULE), *q = NULL, *sg = NULL;
    if (!t)
        return NULL;
    int with_signs = scols_o != Py_None;
    if (with_signs) {
        q = (ecnn_rans_tables *)PyCapsule_GetPointer(qcap, CAPSULE);
        sg = q ? (ecnn_rans_tables *)PyCapsule_GetPointer(scap, CAPSULE) : NULL;
        if (!sg)
            return NULL;
    }
    chunk_args a;
    if (get_chunk(&a, data_o, words_o, rclass_o, runs_o, start_o, order_o, out_o) < 0)
        return NULL;
    Py_buffer scols, sstart;
    size_t nsc = 0;
    int st = ECNN_RANS_OK;
    if (with_signs) {
        if (get_kind(scols_o, &scols, 0, ECNN_RANS_I64, "scols", "int64") < 0) {
            release_chunk(&a);
            return NULL;
        }
        if (get_kind(sstart_o, &sstart, 0, ECNN_RANS_I64, "sstart", "int64") < 0) {
            PyBuffer_Release(&scols);
            release_chunk(&a);
            return NULL;
        }
        nsc = (size_t)sstart.len / sizeof(int64_t);
        if (nsc < 2 || (size_t)scols.len / sizeof(int64_t) != a.s.cols)
            st = ECNN_RANS_BAD_LAYOUT;
        nsc -= 1;
    }
    if (!st) {
        const int64_t *sc = with_signs ? (const int64_t *)scols.buf : NULL, *ss = with_signs ? (const int64_t *)sstart.buf : NULL;
        Py_BEGIN_ALLOW_THREADS
        st = ecnn_rans_decode_rowcol(t, q, sg, &a.c, &a.s, sc, ss, nsc, (int64_t)offset, a.out.buf, a.kind);
        Py_END_ALLOW_THREADS
    }
    if (with_signs) {
        PyBuffer_Release(&sstart);
        PyBuffer_Release(&scols);
    }
    release_chunk(&a);
    if (raise_status(st))
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *encode(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cum_o, *syms_o, *tab_o;
    unsigned precision;
    Py_ssize_t lanes;
    if (!PyArg_ParseTuple(args, "OIOOn:encode", &cum_o, &precision, &syms_o, &tab_o, &lanes))
        return NULL;
    if (lanes < 1 || lanes > ECNN_RANS_MAX_LANES) {
        PyErr_Format(PyExc_ValueError, "lanes must be 1..%d", ECNN_RANS_MAX_LANES);
        return NULL;
    }
    Py_buffer cum, syms, tab;
    PyObject *ret = NULL;
    if (get_kind(cum_o, &cum, 0, ECNN_RANS_U32, "cum", "uint32") < 0)
        return NULL;
    if (get_kind(syms_o, &syms, 0, ECNN_RANS_I32, "syms", "int32") < 0)
        goto e0;
    if (get_kind(tab_o, &tab, 0, ECNN_RANS_I32, "tab", "int32") < 0)
        goto e1;
    if (cum.ndim != 2 || cum.shape[1] < 2 || syms.len != tab.len) {
        PyErr_SetString(PyExc_ValueError, "encode: cum must be 2-D (tables, symbols + 1), and tab as long as syms");
        goto e2;
    }
    size_t count = (size_t)syms.len / sizeof(int32_t);
    if (count > ((size_t)PY_SSIZE_T_MAX - 4 * ECNN_RANS_MAX_LANES) / 2) {
        PyErr_NoMemory();
        goto e2;
    }
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(2 * count + 4 * (size_t)lanes));
    if (!bytes)
        goto e2;
    uint64_t words[ECNN_RANS_MAX_LANES];
    size_t len = 0;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = ecnn_rans_encode((const uint32_t *)cum.buf, (size_t)cum.shape[0], (size_t)cum.shape[1] - 1, precision,
                          (const int32_t *)syms.buf, (const int32_t *)tab.buf, count, (size_t)lanes,
                          (unsigned char *)PyBytes_AS_STRING(bytes), &len, words);
    Py_END_ALLOW_THREADS
    if (raise_status(st) || _PyBytes_Resize(&bytes, (Py_ssize_t)len) < 0) {
        Py_XDECREF(bytes);
        goto e2;
    }
    PyObject *w = PyList_New(lanes);
    if (!w) {
        Py_DECREF(bytes);
        goto e2;
    }
    for (Py_ssize_t l = 0; l < lanes; l++)
        PyList_SET_ITEM(w, l, PyLong_FromUnsignedLongLong(words[l]));
    ret = Py_BuildValue("(NN)", bytes, w);
e2:
    PyBuffer_Release(&tab);
e1:
    PyBuffer_Release(&syms);
e0:
    PyBuffer_Release(&cum);
    return ret;
}

static PyObject *chunk_order(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *mag_o, *rclass_o, *runs_o, *start_o, *vals_o, *scols_o, *sstart_o, *syms_o, *tabs_o;
    Py_ssize_t ntab;
    if (!PyArg_ParseTuple(args, "OOOOOOOnOO:chunk_order", &mag_o, &rclass_o, &runs_o, &start_o, &vals_o, &scols_o,
                          &sstart_o, &ntab, &syms_o, &tabs_o))
        return NULL;
    Py_buffer b[9];
    int got = 0, mag_kind = 0, val_kind = 0, st = ECNN_RANS_BAD_LAYOUT;
    int with_signs = vals_o != Py_None;
    size_t nsc = 0, count = 0;
    if (get_buf(mag_o, &b[got], 0, &mag_kind, "mag") < 0)
        goto done;
    got++;
    if (mag_kind != ECNN_RANS_U8 && mag_kind != ECNN_RANS_U16 && mag_kind != ECNN_RANS_I32) {
        PyErr_SetString(PyExc_TypeError, "mag must be uint8, uint16 or int32");
        goto done;
    }
    if (get_kind(rclass_o, &b[got], 0, ECNN_RANS_U8, "rclass", "uint8") < 0)
        goto done;
    got++;
    if (get_kind(runs_o, &b[got], 0, ECNN_RANS_I32, "runs", "int32") < 0)
        goto done;
    got++;
    if (get_kind(start_o, &b[got], 0, ECNN_RANS_I64, "run_start", "int64") < 0)
        goto done;
    got++;
    if (get_kind(syms_o, &b[got], 1, ECNN_RANS_I32, "syms", "int32") < 0)
        goto done;
    got++;
    if (get_kind(tabs_o, &b[got], 1, ECNN_RANS_I32, "tabs", "int32") < 0)
        goto done;
    got++;
    if (with_signs) {
        if (get_buf(vals_o, &b[got], 0, &val_kind, "values") < 0)
            goto done;
        got++;
        if (get_kind(scols_o, &b[got], 0, ECNN_RANS_I64, "scols", "int64") < 0)
            goto done;
        got++;
        if (get_kind(sstart_o, &b[got], 0, ECNN_RANS_I64, "sstart", "int64") < 0)
            goto done;
        got++;
    }
    {
        size_t nr = (size_t)b[1].len, nruns = (size_t)b[2].len / (3 * sizeof(int32_t));
        size_t nrc = (size_t)b[3].len / sizeof(int64_t), n = (size_t)(b[0].len / b[0].itemsize);
        size_t cap = (size_t)b[4].len / sizeof(int32_t);
        int ok = nr > 0 && n % nr == 0 && nrc >= 2 && (size_t)b[2].len % (3 * sizeof(int32_t)) == 0 &&
                 (size_t)b[5].len == (size_t)b[4].len && ntab >= 0;
        size_t cols = ok ? n / nr : 0;
        if (ok && with_signs) {
            nsc = (size_t)b[8].len / sizeof(int64_t);
            ok = nsc >= 2 && (size_t)(b[6].len / b[6].itemsize) == n && (size_t)b[7].len / sizeof(int64_t) == cols &&
                 (val_kind == ECNN_RANS_I8 || val_kind == ECNN_RANS_I16 || val_kind == ECNN_RANS_I32 ||
                  val_kind == ECNN_RANS_I64);
            nsc -= 1;
        }
        if (ok) {
            ecnn_rans_sched sc = {(const uint8_t *)b[1].buf, nr, cols, (const int32_t *)b[2].buf, nruns,
                                  (const int64_t *)b[3].buf, nrc - 1, NULL};
            const void *vals = with_signs ? b[6].buf : NULL;
            const int64_t *scols = with_signs ? (const int64_t *)b[7].buf : NULL;
            const int64_t *sstart = with_signs ? (const int64_t *)b[8].buf : NULL;
            Py_BEGIN_ALLOW_THREADS
            st = ecnn_rans_chunk_order(b[0].buf, mag_kind, &sc, vals, val_kind, scols, sstart, nsc, (size_t)ntab,
                                       (int32_t *)b[4].buf, (int32_t *)b[5].buf, cap, &count);
            Py_END_ALLOW_THREADS
        }
    }
done:
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&b[i]);
    if (got < (with_signs ? 9 : 6))
        return NULL;
    if (raise_status(st))
        return NULL;
    return PyLong_FromSize_t(count);
}

static PyObject *freqs(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *c_o, *out_o;
    unsigned precision;
    if (!PyArg_ParseTuple(args, "OIO:freqs", &c_o, &precision, &out_o))
        return NULL;
    Py_buffer c, out;
    if (get_kind(c_o, &c, 0, ECNN_RANS_I64, "counts", "int64") < 0)
        return NULL;
    if (get_kind(out_o, &out, 1, ECNN_RANS_U32, "out", "uint32") < 0) {
        PyBuffer_Release(&c);
        return NULL;
    }
    int st = ECNN_RANS_BAD_LAYOUT;
    if (c.ndim == 2 && (size_t)out.len / 4 == (size_t)c.len / 8) {
        size_t k = (size_t)c.shape[0], n = (size_t)c.shape[1];
        Py_BEGIN_ALLOW_THREADS
        st = ecnn_rans_freqs((const int64_t *)c.buf, k, n, precision, (uint32_t *)out.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&c);
    if (st == ECNN_RANS_BAD_TABLE) {
        PyErr_Format(PyExc_ValueError, "freqs: a row of zero counts, more used symbols than 2^%u, or a count "
                                       "outside 0..2^32-1", precision);
        return NULL;
    }
    if (raise_status(st))
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *use_simd(PyObject *self, PyObject *args)
{
    (void)self;
    int on;
    if (!PyArg_ParseTuple(args, "p:use_simd", &on))
        return NULL;
    return PyBool_FromLong(ecnn_rans_use_simd(on));
}

static PyMethodDef module_methods[] = {
    {"tables", tables, METH_VARARGS,
     "tables(freqs, precision) -> capsule\n\nDecoding tables of a (tables, symbols) uint32 array of frequencies,\n"
     "each row summing to 2**precision (10..15)."},
    {"decode_blocks", decode_blocks, METH_VARARGS,
     "decode_blocks(tables, data, words, rclass, runs, run_start, order, offset, shift, out)\n\n"
     "Decode one blocks-layout chunk of rANS lanes into out (rows x cols, C order): words (uint64) the lanes'\n"
     "word counts, rclass (uint8) the chunk's row classes, runs (int32 triples t, c0, c1) with run_start\n"
     "(int64, one per row class plus one), order (int64 column order, or None)."},
    {"decode_rowcol", decode_rowcol, METH_VARARGS,
     "decode_rowcol(tables, quads, signs, data, words, rclass, runs, run_start, order, scols, sstart, offset, out)\n\n"
     "Decode one ctx model 5 chunk: the magnitudes as decode_blocks, then the signs of the non-zero ones, class by\n"
     "class (columns scols[sstart[g]:sstart[g + 1]]), four per quad symbol; scols None: no signs."},
    {"freqs", freqs, METH_VARARGS,
     "freqs(counts, precision, out)\n\nStored counts (a 2-D int64 array) to rANS frequencies summing to\n"
     "2**precision in each row (spec/CODING.md 7.3), into out (uint32, the same shape)."},
    {"use_simd", use_simd, METH_VARARGS,
     "use_simd(on) -> bool\n\nDecode chunks of 16 or 32 lanes with SIMD where the CPU has it (on), or never;\n"
     "whether it now does. For tests: both paths give the same symbols. Not while another thread decodes."},
    {"chunk_order", chunk_order, METH_VARARGS,
     "chunk_order(mag, rclass, runs, run_start, values, scols, sstart, ntab, syms, tabs) -> count\n\n"
     "One chunk's symbols in decoding order and each one's table, into syms and tabs (int32): the magnitudes\n"
     "mag (rows x cols, columns in column order) by the runs, then (values not None) the signs of the\n"
     "non-zero values class by class, four per quad symbol (table ntab + g), the rest one by one (ntab + nsc + g)."},
    {"encode", encode, METH_VARARGS,
     "encode(cum, precision, syms, tab, lanes) -> (bytes, words)\n\nCode int32 symbols, symbol k with table tab[k]\n"
     "of the (tables, symbols + 1) uint32 cumulative frequencies, in lanes lanes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rans", "Interleaved rANS lanes (spec/CODING.md section 5.9), in C.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rans(void)
{
    ecnn_rans_init();
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_LANES", ECNN_RANS_MAX_LANES) < 0 ||
        PyModule_AddIntConstant(m, "MIN_PRECISION", ECNN_RANS_MIN_PRECISION) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PRECISION", ECNN_RANS_MAX_PRECISION) < 0 ||
        PyModule_AddIntConstant(m, "SIMD", ecnn_rans_simd()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
