/* The integer buffers the bindings of the compiled core take (shared by every _*module.c).
 *
 * Python.h must be included first; int_format also needs rc.h (the ecnn_int_kind values) before it. */
#ifndef ECNN_PYINTS_H
#define ECNN_PYINTS_H

#include <stdint.h>

/* The signedness and byte order (*big) of an integer buffer of 1, 2, 4 or 8 bytes; -1 (no exception set)
 * if its format is not one. With `chars`, the char format 'c' counts as an unsigned byte. */
static inline int int_layout(const Py_buffer *v, int chars, int *is_signed, int *big)
{
    const char *f = v->format ? v->format : "B";
    int order = 0; /* 0 native, 1 little, 2 big */
    if (*f == '@' || *f == '=') {
        f++;
    } else if (*f == '<') {
        order = 1;
        f++;
    } else if (*f == '>' || *f == '!') {
        order = 2;
        f++;
    }
    if (f[0] == '\0' || f[1] != '\0')
        return -1;
    switch (f[0]) {
    case 'b': case 'h': case 'i': case 'l': case 'q': case 'n': *is_signed = 1; break;
    case 'B': case 'H': case 'I': case 'L': case 'Q': case 'N': *is_signed = 0; break;
    case 'c': if (!chars) return -1; *is_signed = 0; break;
    default: return -1;
    }
    if (v->itemsize != 1 && v->itemsize != 2 && v->itemsize != 4 && v->itemsize != 8)
        return -1;
#if PY_BIG_ENDIAN
    *big = order != 1;
#else
    *big = order == 2;
#endif
    return 0;
}

/* Whether a buffer holds integers of 1, 2, 4 or 8 bytes in native byte order, aligned to their size (no
 * exception set); their signedness in *is_signed. */
static inline int native_int(const Py_buffer *v, int *is_signed)
{
    int big;
    return int_layout(v, 0, is_signed, &big) == 0 && big == PY_BIG_ENDIAN &&
           ((uintptr_t)v->buf) % (uintptr_t)v->itemsize == 0;
}

#ifdef ECNN_RC_H
/* The integer kind and byte order of a buffer's format; returns -1 (TypeError set) if not an integer format. */
static inline int int_format(const Py_buffer *v, int *kind, int *big)
{
    int is_signed;
    if (int_layout(v, 1, &is_signed, big) < 0) {
        PyErr_Format(PyExc_TypeError, "expected an integer buffer, got format '%s'", v->format ? v->format : "B");
        return -1;
    }
    switch (v->itemsize) {
    case 1: *kind = is_signed ? ECNN_I8 : ECNN_U8; break;
    case 2: *kind = is_signed ? ECNN_I16 : ECNN_U16; break;
    case 4: *kind = is_signed ? ECNN_I32 : ECNN_U32; break;
    default: *kind = is_signed ? ECNN_I64 : ECNN_U64; break;
    }
    return 0;
}
#endif

#endif
