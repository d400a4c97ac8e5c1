/* ecnn._core._rc: the CPython binding of the range decoder in rc.c (plain C API).
 *
 * Every function takes buffers (the words, cumulative tables, contexts) and writes
 * into a caller-provided integer array; the decoding loop runs without the GIL.
 * Wrong buffer types raise TypeError; data that contradicts its tables raises ValueError. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "rc.h"
#include "pyints.h"

/* Release the GIL for runs at least this long: below it the switch costs more than it frees. */
#define NOGIL_MIN 1024

/* An integer array in native byte order, aligned for its items, C-contiguous. */
static int get_ints(PyObject *obj, Py_buffer *v, int writable, int *kind, const char *what)
{
    if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    int big;
    if (int_format(v, kind, &big) < 0)
        goto fail;
    if (big != PY_BIG_ENDIAN && v->itemsize > 1) {
        PyErr_Format(PyExc_TypeError, "%s must be in native byte order", what);
        goto fail;
    }
    if (((uintptr_t)v->buf) % (uintptr_t)v->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s is not aligned to its item size", what);
        goto fail;
    }
    return 0;
fail:
    PyBuffer_Release(v);
    return -1;
}

/* The cumulative tables: 1-D (n + 1) or 2-D (ntab, n + 1), 32-bit integers, at least two entries per table. */
static int get_tables(PyObject *obj, Py_buffer *v, int two_d, size_t *ntab, size_t *n)
{
    int kind;
    if (get_ints(obj, v, 0, &kind, "the table") < 0)
        return -1;
    if (kind != ECNN_I32 && kind != ECNN_U32) {
        PyErr_SetString(PyExc_TypeError, "cumulative tables must be int32 or uint32");
        goto fail;
    }
    if (two_d) {
        if (v->ndim != 2) {
            PyErr_SetString(PyExc_ValueError, "expected a 2-D array of cumulative tables");
            goto fail;
        }
        *ntab = (size_t)v->shape[0];
        *n = (size_t)v->shape[1];
    } else {
        if (v->ndim != 1) {
            PyErr_SetString(PyExc_ValueError, "expected a 1-D cumulative table");
            goto fail;
        }
        *ntab = 1;
        *n = (size_t)v->shape[0];
    }
    if (*n < 2) {
        PyErr_SetString(PyExc_ValueError, "a cumulative table has at least two entries");
        goto fail;
    }
    *n -= 1; /* symbols per table */
    return 0;
fail:
    PyBuffer_Release(v);
    return -1;
}

static int raise_status(int status, size_t at)
{
    switch (status) {
    case ECNN_RC_INVALID_DATA:
        PyErr_Format(PyExc_ValueError, "invalid data: the coded value lies outside the model at symbol %zu", at);
        break;
    case ECNN_RC_BAD_TABLE:
        PyErr_Format(PyExc_ValueError, "the cumulative table is not valid where symbol %zu falls", at);
        break;
    case ECNN_RC_BAD_CONTEXT:
        PyErr_Format(PyExc_ValueError, "context of symbol %zu is not a table index", at);
        break;
    default:
        return 0;
    }
    return -1;
}

/* --- the Decoder type ------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    Py_buffer words;
    int has_words;
    int busy; /* a decode runs without the GIL: refuse a second one on the same decoder */
    ecnn_rc rc;
} Decoder;

/* Bind d->rc to the words of obj: 32-bit integers, or bytes whose length is a multiple of 4 (little-endian words). */
static int open_words(PyObject *obj, Py_buffer *v, ecnn_rc *rc)
{
    if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    int kind, big;
    if (int_format(v, &kind, &big) < 0)
        goto fail;
    if (v->itemsize == 1) {
        big = 0; /* bytes: the file's little-endian words */
    } else if (v->itemsize != 4) {
        PyErr_SetString(PyExc_TypeError, "words must be 32-bit integers or bytes");
        goto fail;
    }
    if (v->len % 4) {
        PyErr_Format(PyExc_ValueError, "%zd bytes are not a whole number of 32-bit words", v->len);
        goto fail;
    }
    ecnn_rc_init(rc, (const unsigned char *)v->buf, (size_t)v->len / 4, big ? ECNN_RC_BIG : ECNN_RC_LITTLE);
    return 0;
fail:
    PyBuffer_Release(v);
    return -1;
}

static int Decoder_init(Decoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"words", NULL};
    PyObject *words;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Decoder", kwlist, &words))
        return -1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "decoder is in use");
        return -1;
    }
    if (self->has_words) {
        PyBuffer_Release(&self->words);
        self->has_words = 0;
    }
    if (open_words(words, &self->words, &self->rc) < 0)
        return -1;
    self->has_words = 1;
    return 0;
}

static void Decoder_dealloc(Decoder *self)
{
    if (self->has_words)
        PyBuffer_Release(&self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int enter(Decoder *self)
{
    if (!self->has_words) {
        PyErr_SetString(PyExc_RuntimeError, "decoder is not initialized");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "decoder is in use by another thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

/* Decode len(out) symbols with one table (ctx == NULL) or a table per symbol. */
static PyObject *run_decode(Decoder *self, PyObject *cdf_obj, PyObject *ctx_obj, PyObject *out_obj)
{
    Py_buffer tab, ctx, out;
    size_t ntab, n, done = 0;
    int out_kind, ctx_kind = 0, status;
    if (get_tables(cdf_obj, &tab, ctx_obj != NULL, &ntab, &n) < 0)
        return NULL;
    if (get_ints(out_obj, &out, 1, &out_kind, "out") < 0) {
        PyBuffer_Release(&tab);
        return NULL;
    }
    size_t count = (size_t)(out.len / out.itemsize);
    if (ctx_obj) {
        if (get_ints(ctx_obj, &ctx, 0, &ctx_kind, "ctx") < 0)
            goto fail;
        if ((size_t)(ctx.len / ctx.itemsize) != count) {
            PyErr_Format(PyExc_ValueError, "%zd contexts for %zu symbols", ctx.len / ctx.itemsize, count);
            PyBuffer_Release(&ctx);
            goto fail;
        }
    }
    if (enter(self) < 0) {
        if (ctx_obj)
            PyBuffer_Release(&ctx);
        goto fail;
    }
    ecnn_out o = {out.buf, out_kind};
    const uint32_t *c = (const uint32_t *)tab.buf;
    if (count >= NOGIL_MIN) {
        Py_BEGIN_ALLOW_THREADS
        status = ctx_obj ? ecnn_rc_decode_ctx(&self->rc, c, ntab, n, ctx.buf, ctx_kind, o, count, &done)
                         : ecnn_rc_decode(&self->rc, c, n, o, count, &done);
        Py_END_ALLOW_THREADS
    } else {
        status = ctx_obj ? ecnn_rc_decode_ctx(&self->rc, c, ntab, n, ctx.buf, ctx_kind, o, count, &done)
                         : ecnn_rc_decode(&self->rc, c, n, o, count, &done);
    }
    self->busy = 0;
    if (ctx_obj)
        PyBuffer_Release(&ctx);
    PyBuffer_Release(&tab);
    PyBuffer_Release(&out);
    if (raise_status(status, done) < 0)
        return NULL;
    Py_INCREF(out_obj);
    return out_obj;
fail:
    PyBuffer_Release(&tab);
    PyBuffer_Release(&out);
    return NULL;
}

static PyObject *Decoder_decode(Decoder *self, PyObject *args)
{
    PyObject *cdf, *out;
    if (!PyArg_ParseTuple(args, "OO:decode", &cdf, &out))
        return NULL;
    return run_decode(self, cdf, NULL, out);
}

static PyObject *Decoder_decode_ctx(Decoder *self, PyObject *args)
{
    PyObject *cdfs, *ctx, *out;
    if (!PyArg_ParseTuple(args, "OOO:decode_ctx", &cdfs, &ctx, &out))
        return NULL;
    return run_decode(self, cdfs, ctx, out);
}

static PyObject *Decoder_exhausted(Decoder *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->has_words) {
        PyErr_SetString(PyExc_RuntimeError, "decoder is not initialized");
        return NULL;
    }
    return PyBool_FromLong(ecnn_rc_exhausted(&self->rc));
}

static PyObject *Decoder_state(Decoder *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->has_words) {
        PyErr_SetString(PyExc_RuntimeError, "decoder is not initialized");
        return NULL;
    }
    return Py_BuildValue("(KKKn)", (unsigned long long)self->rc.lower, (unsigned long long)self->rc.range,
                         (unsigned long long)self->rc.point, (Py_ssize_t)self->rc.pos);
}

static PyMethodDef Decoder_methods[] = {
    {"decode", (PyCFunction)Decoder_decode, METH_VARARGS,
     "decode(cdf, out) -> out\n\nDecode len(out) symbols, each with the cumulative table cdf (int32/uint32,\n"
     "c_0 = 0 < ... < c_n = 2**24), into the integer array out. ValueError on invalid data."},
    {"decode_ctx", (PyCFunction)Decoder_decode_ctx, METH_VARARGS,
     "decode_ctx(cdfs, ctx, out) -> out\n\nDecode len(out) symbols; symbol j uses row ctx[j] of the 2-D table array cdfs."},
    {"exhausted", (PyCFunction)Decoder_exhausted, METH_NOARGS,
     "exhausted() -> bool\n\nThe end-of-chunk conditions (spec/CODING.md section 8): every word read and\n"
     "(point - lower) mod 2**64 < 2**33 - 1."},
    {"state", (PyCFunction)Decoder_state, METH_NOARGS, "state() -> (lower, range, point, pos)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ecnn._core._rc.Decoder",
    .tp_doc = "Decoder(words)\n\nA range decoder (spec/RANGE_CODER.md) over 32-bit words: a numpy uint32 array or\n"
              "bytes holding little-endian words. The words stay referenced while the decoder lives.",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
};

/* --- one-shot chunk decode ---------------------------------------------------------------------------------- */

static PyObject *decode_chunk(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *words, *cdf, *out;
    if (!PyArg_ParseTuple(args, "OOO:decode_chunk", &words, &cdf, &out))
        return NULL;
    Decoder d;
    memset(&d, 0, sizeof d);
    if (open_words(words, &d.words, &d.rc) < 0)
        return NULL;
    d.has_words = 1;
    PyObject *r = run_decode(&d, cdf, NULL, out);
    int ok = ecnn_rc_exhausted(&d.rc);
    PyBuffer_Release(&d.words);
    if (!r)
        return NULL;
    Py_DECREF(r);
    return PyBool_FromLong(ok);
}

static PyMethodDef module_methods[] = {
    {"decode_chunk", decode_chunk, METH_VARARGS,
     "decode_chunk(words, cdf, out) -> bool\n\nDecode len(out) symbols of one chunk with one table into out;\n"
     "returns whether the end-of-chunk conditions hold. ValueError on invalid data."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rc", "The range decoder of spec/RANGE_CODER.md, in C.", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rc(void)
{
    if (PyType_Ready(&DecoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&DecoderType);
    if (PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(&DecoderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "PRECISION", ECNN_RC_PRECISION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
