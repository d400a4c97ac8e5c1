/* ecnn._core._bits: the CPython binding of bits.c, the bit fields of `fields` merged into the output.
 *
 * or_bits(out, buf, bit, width, shift): out[j] |= (the width bits at bit + j * width of buf) << shift,
 * for every element of out (a C-contiguous, writable uint8/16/32/64 array); bits past the end of buf
 * read as 0. Runs without the GIL. Wrong buffer types raise TypeError, a width or shift that the
 * output cannot take ValueError. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "bits.h"

static PyObject *or_bits(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *out_o, *buf_o;
    unsigned long long bit;
    unsigned width, shift;
    if (!PyArg_ParseTuple(args, "OOKII:or_bits", &out_o, &buf_o, &bit, &width, &shift))
        return NULL;
    Py_buffer out, buf;
    if (PyObject_GetBuffer(out_o, &out, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0)
        return NULL;
    const char *f = out.format ? out.format : "B";
#if PY_BIG_ENDIAN
    if (*f == '>' || *f == '!' || *f == '=' || *f == '@')
        f++;
#else
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
#endif
    int ok = (f[0] == 'B' || f[0] == 'H' || f[0] == 'I' || f[0] == 'L' || f[0] == 'Q') && f[1] == '\0' &&
             (out.itemsize == 1 || out.itemsize == 2 || out.itemsize == 4 || out.itemsize == 8) &&
             ((uintptr_t)out.buf % (uintptr_t)out.itemsize) == 0;
    if (!ok) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_TypeError, "or_bits: out must be an aligned, native uint8/16/32/64 array");
        return NULL;
    }
    if (PyObject_GetBuffer(buf_o, &buf, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    int st;
    size_t count = (size_t)out.len / (size_t)out.itemsize;
    Py_BEGIN_ALLOW_THREADS
    st = ecnn_bits_or(out.buf, (int)out.itemsize, count, (const unsigned char *)buf.buf, (size_t)buf.len,
                      (uint64_t)bit, width, shift);
    Py_END_ALLOW_THREADS
    Py_ssize_t itemsize = out.itemsize;
    PyBuffer_Release(&buf);
    PyBuffer_Release(&out);
    if (st) {
        PyErr_Format(PyExc_ValueError, "or_bits: width %u and shift %u do not fit %zd-byte elements", width, shift,
                     itemsize);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"or_bits", or_bits, METH_VARARGS,
     "or_bits(out, buf, bit, width, shift)\n\nout[j] |= (the width bits at bit + j * width of buf) << shift."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bits", "Bit fields merged into integer arrays, in C.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bits(void) { return PyModule_Create(&module); }
