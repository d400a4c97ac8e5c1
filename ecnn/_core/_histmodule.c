/* ecnn._core._hist: the CPython binding of hist.c, the encoder's histograms and table choices.
 *
 * counts(values, lo, hist): hist[v - lo] += 1 for the values of any integer array.
 * axis_sums(sym, row_sums, col_sums): row and column sums of a 2-D uint8/uint16/int32 array (rows may be strided).
 * context_hist(sym, rclass, cclass, nsym, hist): hist[(rclass[i] + cclass[j]) * nsym + sym[i, j]] += 1.
 * entropy(hist) -> float: the empirical entropy in bits of each row of a 2-D int64 histogram, summed.
 * merge(hist, weight, table_of): the tables of adjacent contexts (section 11.4) of a 2-D int64 histogram.
 * fit(hist, counts, codes) -> (m, table_bytes, symbol_bits): the stored table of section 11.5.
 *
 * Outputs are caller-provided int64 arrays. The loops run without the GIL. Wrong buffer types or sizes
 * raise TypeError; values outside their ranges raise ValueError. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "hist.h"
#include "pyints.h"

/* A C-contiguous, aligned int64 buffer of at least one dimension; its element count in *n. */
static int get_i64(PyObject *obj, Py_buffer *v, int writable, size_t *n, const char *what)
{
    if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    int sgn;
    if (!native_int(v, &sgn) || !sgn || v->itemsize != 8) {
        PyErr_Format(PyExc_TypeError, "%s must be an aligned, native int64 array", what);
        PyBuffer_Release(v);
        return -1;
    }
    *n = (size_t)(v->len / 8);
    return 0;
}

/* A 2-D uint8, uint16 or int32 array (kind ECNN_HIST_U8, _U16, _I32) whose rows may lie any whole number
 * of elements apart, each row contiguous. */
typedef struct {
    Py_buffer view;
    int kind;
    size_t rows, cols, stride;
} mat;

static int get_mat(PyObject *obj, mat *a)
{
    if (PyObject_GetBuffer(obj, &a->view, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return -1;
    Py_buffer *v = &a->view;
    Py_ssize_t w = v->itemsize;
    int sgn = 0, ok = native_int(v, &sgn);
    a->kind = !ok ? 0 : !sgn && w == 1 ? ECNN_HIST_U8 : !sgn && w == 2 ? ECNN_HIST_U16 : sgn && w == 4 ? ECNN_HIST_I32 : 0;
    if (v->ndim != 2 || !a->kind) {
        PyErr_SetString(PyExc_TypeError, "sym must be an aligned, native 2-D uint8, uint16 or int32 array");
        goto fail;
    }
    a->rows = (size_t)v->shape[0];
    a->cols = (size_t)v->shape[1];
    Py_ssize_t s0 = v->strides ? v->strides[0] : w * v->shape[1], s1 = v->strides ? v->strides[1] : w;
    if (a->rows > 1 && (s0 < 0 || s0 % w || (size_t)(s0 / w) < a->cols)) {
        PyErr_SetString(PyExc_TypeError, "sym's rows must lie apart in increasing memory");
        goto fail;
    }
    if (a->cols > 1 && s1 != w) {
        PyErr_SetString(PyExc_TypeError, "sym's rows must be contiguous");
        goto fail;
    }
    a->stride = a->rows > 1 ? (size_t)(s0 / w) : a->cols;
    return 0;
fail:
    PyBuffer_Release(&a->view);
    return -1;
}

static PyObject *raise_status(int st, const char *fn)
{
    if (st == ECNN_HIST_NOMEM)
        return PyErr_NoMemory();
    if (st == ECNN_HIST_SHAPE)
        PyErr_Format(PyExc_ValueError, "%s: sizes out of range", fn);
    else
        PyErr_Format(PyExc_ValueError, "%s: a symbol, class or count out of range", fn);
    return NULL;
}

static PyObject *counts(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *v_o, *h_o;
    long long lo;
    if (!PyArg_ParseTuple(args, "OLO:counts", &v_o, &lo, &h_o))
        return NULL;
    Py_buffer v, h;
    size_t nh;
    if (PyObject_GetBuffer(v_o, &v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    int sgn;
    Py_ssize_t w = v.itemsize;
    if (!native_int(&v, &sgn)) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_TypeError, "values must be an aligned, native integer array");
        return NULL;
    }
    if (get_i64(h_o, &h, 1, &nh, "hist") < 0) {
        PyBuffer_Release(&v);
        return NULL;
    }
    int st, kind = sgn ? -(int)w : (int)w;
    size_t count = (size_t)(v.len / w);
    Py_BEGIN_ALLOW_THREADS
    st = nh ? ecnn_hist_counts(v.buf, kind, count, (int64_t)lo, nh, (int64_t *)h.buf) : (count ? ECNN_HIST_RANGE : 0);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&h);
    PyBuffer_Release(&v);
    if (st)
        return raise_status(st, "counts");
    Py_RETURN_NONE;
}

static PyObject *axis_sums(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sym_o, *r_o, *c_o;
    if (!PyArg_ParseTuple(args, "OOO:axis_sums", &sym_o, &r_o, &c_o))
        return NULL;
    mat a;
    Py_buffer r, c;
    size_t nr, nc;
    if (get_mat(sym_o, &a) < 0)
        return NULL;
    if (get_i64(r_o, &r, 1, &nr, "row_sums") < 0) {
        PyBuffer_Release(&a.view);
        return NULL;
    }
    if (get_i64(c_o, &c, 1, &nc, "col_sums") < 0) {
        PyBuffer_Release(&r);
        PyBuffer_Release(&a.view);
        return NULL;
    }
    int st = ECNN_HIST_SHAPE;
    if (nr == a.rows && nc == a.cols) {
        Py_BEGIN_ALLOW_THREADS
        st = ecnn_hist_axis_sums(a.view.buf, a.kind, a.rows, a.cols, a.stride, (int64_t *)r.buf,
                                 (int64_t *)c.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&c);
    PyBuffer_Release(&r);
    PyBuffer_Release(&a.view);
    if (st)
        return raise_status(st, "axis_sums");
    Py_RETURN_NONE;
}

static PyObject *context_hist(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sym_o, *r_o, *c_o, *h_o;
    Py_ssize_t nsym;
    if (!PyArg_ParseTuple(args, "OOOnO:context_hist", &sym_o, &r_o, &c_o, &nsym, &h_o))
        return NULL;
    mat a;
    Py_buffer r, c, h;
    size_t nr, nc, nh;
    if (get_mat(sym_o, &a) < 0)
        return NULL;
    if (get_i64(r_o, &r, 0, &nr, "rclass") < 0)
        goto fail_a;
    if (get_i64(c_o, &c, 0, &nc, "cclass") < 0)
        goto fail_r;
    if (get_i64(h_o, &h, 1, &nh, "hist") < 0)
        goto fail_c;
    int st = ECNN_HIST_SHAPE;
    if (nr == a.rows && nc == a.cols && nsym > 0 && nh % (size_t)nsym == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = ecnn_hist_context(a.view.buf, a.kind, a.rows, a.cols, a.stride, (const int64_t *)r.buf,
                               (const int64_t *)c.buf, (size_t)nsym, nh / (size_t)nsym, (int64_t *)h.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&h);
    PyBuffer_Release(&c);
    PyBuffer_Release(&r);
    PyBuffer_Release(&a.view);
    if (st)
        return raise_status(st, "context_hist");
    Py_RETURN_NONE;
fail_c:
    PyBuffer_Release(&c);
fail_r:
    PyBuffer_Release(&r);
fail_a:
    PyBuffer_Release(&a.view);
    return NULL;
}

/* A 2-D uint8 array with contiguous rows, as get_mat. */
static int get_u8mat(PyObject *obj, mat *a, const char *what)
{
    if (get_mat(obj, a) < 0)
        return -1;
    if (a->kind != ECNN_HIST_U8) {
        PyErr_Format(PyExc_TypeError, "%s must be a 2-D uint8 array", what);
        PyBuffer_Release(&a->view);
        return -1;
    }
    return 0;
}

static PyObject *sig_hist(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *z_o, *b_o, *sc_o, *h_o;
    Py_ssize_t k, d1, d2;
    if (!PyArg_ParseTuple(args, "OOOnnnO:sig_hist", &z_o, &b_o, &sc_o, &k, &d1, &d2, &h_o))
        return NULL;
    mat z, b;
    Py_buffer sc, h;
    size_t nsc, nh;
    PyObject *ret = NULL;
    if (get_u8mat(z_o, &z, "z") < 0)
        return NULL;
    if (get_u8mat(b_o, &b, "b") < 0)
        goto fail_z;
    if (get_i64(sc_o, &sc, 0, &nsc, "sc") < 0)
        goto fail_b;
    if (get_i64(h_o, &h, 1, &nh, "hist") < 0)
        goto fail_sc;
    int st = ECNN_HIST_SHAPE;
    if (z.rows == b.rows && z.cols == b.cols && nsc == z.cols && k > 0 && d1 >= 0 && d2 >= 0) {
        Py_BEGIN_ALLOW_THREADS
        st = ecnn_hist_sig((const uint8_t *)z.view.buf, (const uint8_t *)b.view.buf, z.rows, z.cols, z.stride, b.stride,
                           (const int64_t *)sc.buf, (int64_t)k, (size_t)d1, (size_t)d2, (int64_t *)h.buf, nh);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&h);
    if (st)
        raise_status(st, "sig_hist");
    else
        ret = Py_None, Py_INCREF(Py_None);
fail_sc:
    PyBuffer_Release(&sc);
fail_b:
    PyBuffer_Release(&b.view);
fail_z:
    PyBuffer_Release(&z.view);
    return ret;
}

static PyObject *prev_sign(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *v_o, *out_o;
    if (!PyArg_ParseTuple(args, "OO:prev_sign", &v_o, &out_o))
        return NULL;
    mat v;
    if (get_mat(v_o, &v) < 0)
        return NULL;
    Py_buffer out;
    if (PyObject_GetBuffer(out_o, &out, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&v.view);
        return NULL;
    }
    int sgn = 1, ok = v.kind == ECNN_HIST_I32 && native_int(&out, &sgn) && !sgn && out.itemsize == 1 &&
                      (size_t)out.len == v.rows * v.cols;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        ecnn_hist_prev_sign((const int32_t *)v.view.buf, v.rows, v.cols, v.stride, (uint8_t *)out.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&v.view);
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "prev_sign: v must be a 2-D int32 array and out a uint8 array of its size");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *entropy(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *h_o;
    if (!PyArg_ParseTuple(args, "O:entropy", &h_o))
        return NULL;
    Py_buffer h;
    size_t nh;
    if (get_i64(h_o, &h, 0, &nh, "hist") < 0)
        return NULL;
    if (h.ndim != 2) {
        PyBuffer_Release(&h);
        PyErr_SetString(PyExc_TypeError, "hist must be a 2-D array");
        return NULL;
    }
    size_t k = (size_t)h.shape[0], nsym = (size_t)h.shape[1];
    double bits = 0.0;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = ecnn_hist_entropy((const int64_t *)h.buf, k, nsym, &bits);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&h);
    if (st)
        return raise_status(st, "entropy");
    return PyFloat_FromDouble(bits);
}

static PyObject *merge(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *h_o, *t_o;
    long long weight;
    if (!PyArg_ParseTuple(args, "OLO:merge", &h_o, &weight, &t_o))
        return NULL;
    Py_buffer h, t;
    size_t nh, nt;
    if (get_i64(h_o, &h, 0, &nh, "hist") < 0)
        return NULL;
    if (h.ndim != 2) {
        PyBuffer_Release(&h);
        PyErr_SetString(PyExc_TypeError, "hist must be a 2-D array");
        return NULL;
    }
    size_t k = (size_t)h.shape[0], nsym = (size_t)h.shape[1];
    if (get_i64(t_o, &t, 1, &nt, "table_of") < 0) {
        PyBuffer_Release(&h);
        return NULL;
    }
    int st = ECNN_HIST_SHAPE;
    if (nt == k) {
        Py_BEGIN_ALLOW_THREADS
        st = ecnn_hist_merge((const int64_t *)h.buf, k, nsym, (int64_t)weight, (int64_t *)t.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&t);
    PyBuffer_Release(&h);
    if (st)
        return raise_status(st, "merge");
    Py_RETURN_NONE;
}

static PyObject *fit(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *h_o, *c_o, *e_o;
    if (!PyArg_ParseTuple(args, "OOO:fit", &h_o, &c_o, &e_o))
        return NULL;
    Py_buffer h, c, e;
    size_t nh, nc, ne;
    if (get_i64(h_o, &h, 0, &nh, "hist") < 0)
        return NULL;
    if (get_i64(c_o, &c, 1, &nc, "counts") < 0) {
        PyBuffer_Release(&h);
        return NULL;
    }
    if (get_i64(e_o, &e, 1, &ne, "codes") < 0) {
        PyBuffer_Release(&c);
        PyBuffer_Release(&h);
        return NULL;
    }
    int st = ECNN_HIST_SHAPE, m = 0;
    int64_t tb = 0;
    double bits = 0.0;
    if (nc == nh && ne == nh) {
        Py_BEGIN_ALLOW_THREADS
        st = ecnn_hist_fit((const int64_t *)h.buf, nh, (int64_t *)c.buf, (int64_t *)e.buf, &m, &tb, &bits);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&e);
    PyBuffer_Release(&c);
    PyBuffer_Release(&h);
    if (st)
        return raise_status(st, "fit");
    return Py_BuildValue("iLd", m, (long long)tb, bits);
}

static PyMethodDef module_methods[] = {
    {"counts", counts, METH_VARARGS,
     "counts(values, lo, hist)\n\nhist[v - lo] += 1 for every value of an integer array (any shape, C order)."},
    {"axis_sums", axis_sums, METH_VARARGS,
     "axis_sums(sym, row_sums, col_sums)\n\nRow and column sums of a 2-D uint8/uint16/int32 array into int64 arrays."},
    {"context_hist", context_hist, METH_VARARGS,
     "context_hist(sym, rclass, cclass, nsym, hist)\n\n"
     "hist[(rclass[i] + cclass[j]) * nsym + sym[i, j]] += 1 for every element of a 2-D uint8/uint16/int32 array."},
    {"sig_hist", sig_hist, METH_VARARGS,
     "sig_hist(z, b, sc, k, d1, d2, hist)\n\nThe significance histogram of a lanes model: hist[2x + z] += 1 with\n"
     "x = b * k + sc[t], then 2x + z[t - d] for d = d1, d2 where non-zero (z and b 2-D uint8)."},
    {"prev_sign", prev_sign, METH_VARARGS,
     "prev_sign(v, out)\n\nThe value context of each element of a 2-D int32 array: 0 none, 1 last earlier\n"
     "non-zero of its row negative, 2 positive (uint8 out)."},
    {"entropy", entropy, METH_VARARGS,
     "entropy(hist) -> float\n\nThe empirical entropy in bits of the counts in each row of a 2-D int64 array, summed."},
    {"merge", merge, METH_VARARGS,
     "merge(hist, weight, table_of)\n\n"
     "The table of each context (row of a 2-D int64 histogram, counts times weight): adjacent contexts merged."},
    {"fit", fit, METH_VARARGS,
     "fit(hist, counts, codes) -> (m, table_bytes, symbol_bits)\n\n"
     "The stored order-0 table of a histogram: its counts, and its log codes when m > 0."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hist", "Histograms and table choices of the encoder's model search, in C.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hist(void)
{
    ecnn_hist_init();
    return PyModule_Create(&module);
}
