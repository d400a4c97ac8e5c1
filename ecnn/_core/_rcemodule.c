/* ecnn._core._rce: the CPython binding of the range encoder in rce.c (plain C API).
 *
 * The functions take buffers (cumulative tables, contexts, symbols) of any integer
 * kind in native byte order, any shape (read in C order), strided or misaligned
 * (then copied once); the encoding loop runs without the GIL. The words come back
 * as bytes: 4 per word, little-endian, word 0 first, as a .ecnn file stores them.
 * Wrong buffer types raise TypeError; a symbol outside its table, a zero-probability
 * symbol and a context outside the tables raise ValueError. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "rce.h"
#include "pyints.h"

/* Release the GIL for runs at least this long: below it the switch costs more than it frees. */
#define NOGIL_MIN 1024

/* An integer array, read in C order: data points at count contiguous, aligned items of kind `kind`. */
typedef struct {
    Py_buffer view;
    const void *data;
    void *copy; /* a contiguous copy of a strided or misaligned buffer, or NULL */
    int kind;
    size_t count;
} ints;

static void ints_release(ints *a)
{
    PyMem_Free(a->copy);
    a->copy = NULL;
    PyBuffer_Release(&a->view);
}

static int ints_open(PyObject *obj, ints *a, const char *what)
{
    a->copy = NULL;
    if (PyObject_GetBuffer(obj, &a->view, PyBUF_RECORDS_RO) < 0)
        return -1;
    int big;
    if (int_format(&a->view, &a->kind, &big) < 0)
        goto fail;
    if (big != PY_BIG_ENDIAN && a->view.itemsize > 1) {
        PyErr_Format(PyExc_TypeError, "%s must be in native byte order", what);
        goto fail;
    }
    a->count = (size_t)(a->view.len / a->view.itemsize);
    a->data = a->view.buf;
    if (!PyBuffer_IsContiguous(&a->view, 'C') || ((uintptr_t)a->view.buf) % (uintptr_t)a->view.itemsize) {
        a->copy = PyMem_Malloc(a->view.len ? (size_t)a->view.len : 1);
        if (!a->copy) {
            PyErr_NoMemory();
            goto fail;
        }
        if (PyBuffer_ToContiguous(a->copy, &a->view, a->view.len, 'C') < 0)
            goto fail;
        a->data = a->copy;
    }
    return 0;
fail:
    ints_release(a);
    return -1;
}

/* Cumulative tables: 1-D (n + 1) or 2-D (ntab, n + 1), 32-bit integers, at least two entries per table. */
static int tables_open(PyObject *obj, ints *a, int two_d, size_t *ntab, size_t *n)
{
    if (ints_open(obj, a, "the table") < 0)
        return -1;
    if (a->kind != ECNN_I32 && a->kind != ECNN_U32) {
        PyErr_SetString(PyExc_TypeError, "cumulative tables must be int32 or uint32");
        goto fail;
    }
    if (a->view.ndim != (two_d ? 2 : 1)) {
        PyErr_SetString(PyExc_ValueError, two_d ? "expected a 2-D array of cumulative tables"
                                                : "expected a 1-D cumulative table");
        goto fail;
    }
    *ntab = two_d ? (size_t)a->view.shape[0] : 1;
    *n = (size_t)a->view.shape[two_d ? 1 : 0];
    if (*n < 2) {
        PyErr_SetString(PyExc_ValueError, "a cumulative table has at least two entries");
        goto fail;
    }
    *n -= 1; /* symbols per table */
    return 0;
fail:
    ints_release(a);
    return -1;
}

static int raise_status(int status, size_t at, size_t n)
{
    switch (status) {
    case ECNN_RCE_BAD_SYMBOL:
        PyErr_Format(PyExc_ValueError, "symbol %zu is outside the alphabet 0..%zu", at, n - 1);
        break;
    case ECNN_RCE_BAD_TABLE:
        PyErr_Format(PyExc_ValueError,
                     "symbol %zu has no probability: its interval of the cumulative table is empty or past 2**24", at);
        break;
    case ECNN_RCE_BAD_CONTEXT:
        PyErr_Format(PyExc_ValueError, "context of symbol %zu is not a table index", at);
        break;
    case ECNN_RCE_NO_MEMORY:
        PyErr_NoMemory();
        break;
    default:
        return 0;
    }
    return -1;
}

/* The sealed stream as bytes (little-endian words). */
static PyObject *sealed_bytes(const ecnn_rce *e)
{
    size_t len = ecnn_rce_sealed_len(e);
    if (len > (size_t)PY_SSIZE_T_MAX / 4)
        return PyErr_NoMemory();
    uint32_t *w = (uint32_t *)PyMem_Malloc(len ? len * sizeof(uint32_t) : 1);
    if (!w)
        return PyErr_NoMemory();
    ecnn_rce_seal(e, w);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(4 * len));
    if (b) {
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(b);
#if PY_LITTLE_ENDIAN
        if (len)
            memcpy(p, w, 4 * len);
#else
        for (size_t i = 0; i < len; i++) {
            p[4 * i] = (unsigned char)w[i];
            p[4 * i + 1] = (unsigned char)(w[i] >> 8);
            p[4 * i + 2] = (unsigned char)(w[i] >> 16);
            p[4 * i + 3] = (unsigned char)(w[i] >> 24);
        }
#endif
    }
    PyMem_Free(w);
    return b;
}

/* Encode symbols with one table (ctx_obj == NULL) or a table per symbol; 0, or -1 with an exception set. */
static int run_encode(ecnn_rce *e, PyObject *cdf_obj, PyObject *ctx_obj, PyObject *sym_obj)
{
    ints tab, ctx, sym;
    size_t ntab, n, at = 0;
    int status;
    if (tables_open(cdf_obj, &tab, ctx_obj != NULL, &ntab, &n) < 0)
        return -1;
    if (ints_open(sym_obj, &sym, "symbols") < 0) {
        ints_release(&tab);
        return -1;
    }
    if (ctx_obj) {
        if (ints_open(ctx_obj, &ctx, "ctx") < 0)
            goto fail;
        if (ctx.count != sym.count) {
            PyErr_Format(PyExc_ValueError, "%zu contexts for %zu symbols", ctx.count, sym.count);
            ints_release(&ctx);
            goto fail;
        }
    }
    const uint32_t *c = (const uint32_t *)tab.data;
    size_t count = sym.count;
    PyThreadState *ts = count >= NOGIL_MIN ? PyEval_SaveThread() : NULL;
    status = ctx_obj ? ecnn_rce_encode_ctx(e, c, ntab, n, ctx.data, ctx.kind, sym.data, sym.kind, count, &at)
                     : ecnn_rce_encode(e, c, n, sym.data, sym.kind, count, &at);
    if (ts)
        PyEval_RestoreThread(ts);
    if (ctx_obj)
        ints_release(&ctx);
    ints_release(&sym);
    ints_release(&tab);
    return raise_status(status, at, n);
fail:
    ints_release(&sym);
    ints_release(&tab);
    return -1;
}

/* --- the Encoder type ------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    ecnn_rce rce;
    int busy; /* an encode runs without the GIL: refuse a second call on the same encoder */
} Encoder;

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Encoder", kwlist))
        return -1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "encoder is in use");
        return -1;
    }
    ecnn_rce_free(&self->rce);
    return 0;
}

static PyObject *Encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Encoder *self = (Encoder *)PyType_GenericNew(type, args, kwds);
    if (self)
        ecnn_rce_init(&self->rce);
    return (PyObject *)self;
}

static void Encoder_dealloc(Encoder *self)
{
    ecnn_rce_free(&self->rce);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int enter(Encoder *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "encoder is in use by another thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static PyObject *Encoder_encode(Encoder *self, PyObject *args)
{
    PyObject *cdf, *sym;
    if (!PyArg_ParseTuple(args, "OO:encode", &cdf, &sym) || enter(self) < 0)
        return NULL;
    int r = run_encode(&self->rce, cdf, NULL, sym);
    self->busy = 0;
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Encoder_encode_ctx(Encoder *self, PyObject *args)
{
    PyObject *cdfs, *ctx, *sym;
    if (!PyArg_ParseTuple(args, "OOO:encode_ctx", &cdfs, &ctx, &sym) || enter(self) < 0)
        return NULL;
    int r = run_encode(&self->rce, cdfs, ctx, sym);
    self->busy = 0;
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Encoder_get_words(Encoder *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    PyObject *b = sealed_bytes(&self->rce);
    self->busy = 0;
    return b;
}

static PyObject *Encoder_num_words(Encoder *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    size_t len = ecnn_rce_sealed_len(&self->rce);
    self->busy = 0;
    return PyLong_FromSize_t(len);
}

static PyObject *Encoder_state(Encoder *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    PyObject *r = Py_BuildValue("(KKn)", (unsigned long long)self->rce.lower, (unsigned long long)self->rce.range,
                                (Py_ssize_t)self->rce.ninv);
    self->busy = 0;
    return r;
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_VARARGS,
     "encode(cdf, symbols) -> None\n\nEncode every symbol of the integer array symbols (C order) with the cumulative\n"
     "table cdf (int32/uint32, c_0 = 0 < ... < c_n = 2**24). ValueError for a symbol outside 0..n-1 or\n"
     "one with an empty interval; a failed call encodes nothing."},
    {"encode_ctx", (PyCFunction)Encoder_encode_ctx, METH_VARARGS,
     "encode_ctx(cdfs, ctx, symbols) -> None\n\nEncode symbols; symbol j uses row ctx[j] of the 2-D table array cdfs."},
    {"get_words", (PyCFunction)Encoder_get_words, METH_NOARGS,
     "get_words() -> bytes\n\nThe sealed stream, 4 bytes per word, little-endian (empty if nothing was encoded).\n"
     "The encoder is not changed: encoding may go on."},
    {"num_words", (PyCFunction)Encoder_num_words, METH_NOARGS, "num_words() -> int\n\nWords of get_words()."},
    {"state", (PyCFunction)Encoder_state, METH_NOARGS, "state() -> (lower, range, held)\n\nThe coder state, and how many words are held back for a possible carry."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ecnn._core._rce.Encoder",
    .tp_doc = "Encoder()\n\nA range encoder (spec/RANGE_CODER.md, section 9) that writes the words of constriction's\n"
              "queue RangeEncoder (32-bit words, 64-bit state, 24-bit precision) for the same tables.",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Encoder_new,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};

/* --- one-shot chunk encode ---------------------------------------------------------------------------------- */

static PyObject *encode_chunk(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *cdf, *sym;
    if (!PyArg_ParseTuple(args, "OO:encode_chunk", &cdf, &sym))
        return NULL;
    ecnn_rce e;
    ecnn_rce_init(&e);
    PyObject *r = run_encode(&e, cdf, NULL, sym) < 0 ? NULL : sealed_bytes(&e);
    ecnn_rce_free(&e);
    return r;
}

static PyMethodDef module_methods[] = {
    {"encode_chunk", encode_chunk, METH_VARARGS,
     "encode_chunk(cdf, symbols) -> bytes\n\nThe sealed stream of symbols, all with the table cdf: Encoder().encode(cdf, symbols)\n"
     "then get_words()."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rce", "The range encoder of spec/RANGE_CODER.md, in C.", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rce(void)
{
    if (PyType_Ready(&EncoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(&EncoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
