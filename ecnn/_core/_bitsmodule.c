/* ecnn._core._bits: the CPython binding of bits.c, the bit fields of `fields` split, packed and merged.
 *
 * or_bits(out, buf, bit, width, shift): out[j] |= (the width bits at bit + j * width of buf) << shift,
 * for every element of out (a C-contiguous, writable uint8/16/32/64 array); bits past the end of buf
 * read as 0.
 * split(u, e_bits, m_bits, k, signs, heads, tails, shifts): the encoder's cut of bit patterns into the
 * signs (uint8), heads (uint32), tails (u's type) and row shifts (int64) of spec/CODING.md section 4.9.
 * pack(values, width) -> bytes: the low width bits of each value, least significant bit first (section 5.7).
 * scale_rows(q, steps, out): quantized symbols to values (scale.h): q a rows x cols int8/16/32 array, steps
 * float32 (out float32, or uint16 for bfloat16) or float64 (out float64) of rows elements; out may be q.
 * crc32(buf, crc=0) -> int: zlib.crc32 with carry-less multiplication (crc.h); CRC32_FAST says whether this
 * machine has it (else zlib's is the faster).
 * varints(buf, pos, out) -> next: len(out) varints into out (a C-contiguous uint64 array).
 * log_codes(buf, pos, top, codes) -> next: the codes of a log-coded count table (section 7.1, mode 1) into codes
 * (a C-contiguous int64 array of nsym elements); the position after the table.
 *
 * The loops run without the GIL. Wrong buffer types raise TypeError, a width or layout that the
 * arrays cannot take ValueError. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "bits.h"
#include "crc.h"
#include "pyints.h"
#include "scale.h"

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
    int sgn;
    if (!native_int(&out, &sgn) || sgn || strchr(out.format ? out.format : "", 'N')) { /* size_t is not one of them */
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

/* A C-contiguous, aligned, native integer array (signed or not, if `any_sign`) of one of the widths 1, 2, 4, 8. */
static int get_ints(PyObject *obj, Py_buffer *v, int writable, int any_sign, const char *what)
{
    if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    int sgn;
    if (!native_int(v, &sgn) || (sgn && !any_sign)) {
        PyErr_Format(PyExc_TypeError, "%s must be an aligned, native %s array", what,
                     any_sign ? "integer" : "uint8/16/32/64");
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* A writable, C-contiguous, aligned, native int64 (is_signed) or uint64 array, for results. */
static int get_out64(PyObject *obj, Py_buffer *v, int is_signed, const char *what)
{
    if (get_ints(obj, v, 1, 1, what) < 0)
        return -1;
    int sgn = 0;
    native_int(v, &sgn);
    if (v->itemsize != 8 || sgn != is_signed) {
        PyErr_Format(PyExc_TypeError, "%s must be an aligned, native %s array", what, is_signed ? "int64" : "uint64");
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static PyObject *split(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *u_o, *s_o, *h_o, *t_o, *sh_o;
    unsigned e_bits, m_bits, k;
    if (!PyArg_ParseTuple(args, "OIIIOOOO:split", &u_o, &e_bits, &m_bits, &k, &s_o, &h_o, &t_o, &sh_o))
        return NULL;
    Py_buffer b[5];
    PyObject *objs[5] = {u_o, s_o, h_o, t_o, sh_o};
    const char *names[5] = {"u", "signs", "heads", "tails", "shifts"};
    int got = 0;
    for (; got < 5; got++)
        if (get_ints(objs[got], &b[got], got > 0, got == 4, names[got]) < 0)
            break;
    int st = -2;
    if (got == 5) {
        size_t n = (size_t)(b[0].len / b[0].itemsize), rows = (size_t)(b[4].len / b[4].itemsize);
        if (b[1].itemsize == 1 && b[2].itemsize == 4 && b[3].itemsize == b[0].itemsize && b[4].itemsize == 8 &&
            (size_t)b[1].len == n && (size_t)b[2].len == 4 * n && b[3].len == b[0].len && rows > 0 && n % rows == 0) {
            int kind = (int)b[0].itemsize;
            Py_BEGIN_ALLOW_THREADS
            st = ecnn_bits_split(b[0].buf, kind, rows, n / rows, e_bits, m_bits, k, (uint8_t *)b[1].buf,
                                 (uint32_t *)b[2].buf, b[3].buf, (int64_t *)b[4].buf);
            Py_END_ALLOW_THREADS
        }
    }
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&b[i]);
    if (got < 5)
        return NULL;
    if (st == -2) {
        PyErr_SetString(PyExc_ValueError, "split: arrays of the wrong sizes or types");
        return NULL;
    }
    if (st) {
        PyErr_Format(PyExc_ValueError, "split: layout %u + %u bits (head %u) does not fit the array", e_bits, m_bits, k);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *pack(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *v_o;
    unsigned width;
    if (!PyArg_ParseTuple(args, "OI:pack", &v_o, &width))
        return NULL;
    if (width < 1 || width > 64) {
        PyErr_Format(PyExc_ValueError, "pack: width %u is not in 1..64", width);
        return NULL;
    }
    Py_buffer v;
    if (get_ints(v_o, &v, 0, 1, "values") < 0)
        return NULL;
    size_t count = (size_t)(v.len / v.itemsize);
    if (count > (size_t)PY_SSIZE_T_MAX / 8) {
        PyBuffer_Release(&v);
        return PyErr_NoMemory();
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)ecnn_bits_pack_size(count, width));
    if (!out) {
        PyBuffer_Release(&v);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    int kind = (int)v.itemsize;
    Py_BEGIN_ALLOW_THREADS
    ecnn_bits_pack(dst, v.buf, kind, count, width);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    return out;
}

static PyObject *log_codes(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *buf_o, *codes_o;
    Py_ssize_t pos;
    long long top;
    if (!PyArg_ParseTuple(args, "OnLO:log_codes", &buf_o, &pos, &top, &codes_o))
        return NULL;
    if (pos < 0) {
        PyErr_SetString(PyExc_TypeError, "log_codes: pos must be >= 0");
        return NULL;
    }
    Py_buffer buf, codes;
    if (PyObject_GetBuffer(buf_o, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (get_out64(codes_o, &codes, 1, "log_codes: codes") < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    size_t next = 0;
    int64_t bad = 0;
    int st = ecnn_bits_log_codes((const unsigned char *)buf.buf, (size_t)buf.len, (size_t)pos,
                                 (size_t)(codes.len / 8), (int64_t)top, (int64_t *)codes.buf, &next, &bad);
    PyBuffer_Release(&codes);
    PyBuffer_Release(&buf);
    switch (st) {
    case 0: return PyLong_FromSize_t(next);
    case 1: PyErr_SetString(PyExc_ValueError, "table runs past the end of its stream"); return NULL;
    case 2: PyErr_Format(PyExc_ValueError, "table code %lld out of range 0..%lld", (long long)bad, top); return NULL;
    default: PyErr_SetString(PyExc_ValueError, "non-zero pad nibble after a table"); return NULL;
    }
}

/* The format letter of a native float or uint16 buffer ('f', 'd' or 'H'), or 0. */
static char plain_format(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=')
        f++;
    if (f[0] == '\0' || f[1] != '\0')
        return 0;
    if ((f[0] == 'f' && v->itemsize == 4) || (f[0] == 'd' && v->itemsize == 8) || (f[0] == 'H' && v->itemsize == 2))
        return ((uintptr_t)v->buf) % (uintptr_t)v->itemsize == 0 ? f[0] : 0;
    return 0;
}

static PyObject *scale_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *q_o, *s_o, *out_o;
    if (!PyArg_ParseTuple(args, "OOO:scale_rows", &q_o, &s_o, &out_o))
        return NULL;
    Py_buffer q, st, out;
    if (get_ints(q_o, &q, 0, 1, "q") < 0)
        return NULL;
    if (PyObject_GetBuffer(s_o, &st, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&q);
        return NULL;
    }
    if (PyObject_GetBuffer(out_o, &out, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&st);
        PyBuffer_Release(&q);
        return NULL;
    }
    char sf = plain_format(&st), of = plain_format(&out);
    int kind = sf == 'f' && of == 'f' ? ECNN_SCALE_F32 : sf == 'f' && of == 'H' ? ECNN_SCALE_BF16
             : sf == 'd' && of == 'd' ? ECNN_SCALE_F64 : -1;
    int sgn = 0;
    native_int(&q, &sgn);
    size_t rows = (size_t)(st.len / (st.itemsize ? st.itemsize : 1));
    size_t n = (size_t)(q.len / q.itemsize);
    int ok = kind >= 0 && sgn && q.itemsize <= 4 && rows > 0 && n % rows == 0 && (size_t)(out.len / out.itemsize) == n;
    int rc = -1;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        rc = ecnn_scale_rows(q.buf, (unsigned)q.itemsize, rows, n / rows, st.buf, kind, out.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&st);
    PyBuffer_Release(&q);
    if (rc) {
        PyErr_SetString(PyExc_TypeError, "scale_rows: q must be int8/16/32, steps float32 with out float32 or uint16, "
                                         "or steps and out float64, with one step per row and out as long as q");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *varints(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *buf_o, *out_o;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "OnO:varints", &buf_o, &pos, &out_o))
        return NULL;
    if (pos < 0) {
        PyErr_SetString(PyExc_TypeError, "varints: pos must be >= 0");
        return NULL;
    }
    Py_buffer buf, out;
    if (PyObject_GetBuffer(buf_o, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (get_out64(out_o, &out, 0, "varints: out") < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    size_t next = 0;
    int st = pos > buf.len ? 1
                           : ecnn_bits_varints((const unsigned char *)buf.buf, (size_t)buf.len, (size_t)pos,
                                               (size_t)(out.len / 8), (uint64_t *)out.buf, &next);
    PyBuffer_Release(&out);
    PyBuffer_Release(&buf);
    switch (st) {
    case 0: return PyLong_FromSize_t(next);
    case 1: PyErr_SetString(PyExc_ValueError, "varint runs past the end of its stream"); return NULL;
    case 2: PyErr_SetString(PyExc_ValueError, "varint longer than 10 bytes"); return NULL;
    case 3: PyErr_SetString(PyExc_ValueError, "non-minimal varint"); return NULL;
    default: PyErr_SetString(PyExc_ValueError, "varint value out of range"); return NULL;
    }
}

static PyObject *crc32(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32", &buf, &crc))
        return NULL;
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = ecnn_crc32((uint32_t)crc, (const unsigned char *)buf.buf, (size_t)buf.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef module_methods[] = {
    {"or_bits", or_bits, METH_VARARGS,
     "or_bits(out, buf, bit, width, shift)\n\nout[j] |= (the width bits at bit + j * width of buf) << shift."},
    {"split", split, METH_VARARGS,
     "split(u, e_bits, m_bits, k, signs, heads, tails, shifts)\n\nThe signs, heads, tails and row shifts of bit patterns."},
    {"pack", pack, METH_VARARGS, "pack(values, width) -> bytes\n\nThe low width bits of each value, LSB first."},
    {"scale_rows", scale_rows, METH_VARARGS,
     "scale_rows(q, steps, out)\n\nout[i, j] = binary32(q[i, j]) * steps[i] (binary64 for float64), rounded to out."},
    {"varints", varints, METH_VARARGS, "varints(buf, pos, out) -> next\n\nlen(out) unsigned LEB128 varints into out (uint64)."},
    {"crc32", crc32, METH_VARARGS, "crc32(buf, crc=0) -> int\n\nzlib.crc32, by carry-less multiplication where the CPU has it."},
    {"log_codes", log_codes, METH_VARARGS,
     "log_codes(buf, pos, top, codes) -> next\n\nThe codes of a log-coded count table; the position after it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bits", "Bit fields split, packed and merged into integer arrays, in C.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bits(void)
{
    ecnn_crc32_init();
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "CRC32_FAST", ecnn_crc32_fast()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
