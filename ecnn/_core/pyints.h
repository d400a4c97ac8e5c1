/* The integer buffers the bindings of the compiled core take (shared by _rcmodule.c and _rcemodule.c).
 *
 * Python.h and rc.h (for the ecnn_int_kind values) must be included first. */
#ifndef ECNN_PYINTS_H
#define ECNN_PYINTS_H

/* The integer kind and byte order of a buffer's format; returns -1 (TypeError set) if not an integer format. */
static inline int int_format(const Py_buffer *v, int *kind, int *big)
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
        goto bad;
    int is_signed;
    switch (f[0]) {
    case 'b': case 'h': case 'i': case 'l': case 'q': case 'n': is_signed = 1; break;
    case 'B': case 'c': case 'H': case 'I': case 'L': case 'Q': case 'N': is_signed = 0; break;
    default: goto bad;
    }
    switch (v->itemsize) {
    case 1: *kind = is_signed ? ECNN_I8 : ECNN_U8; break;
    case 2: *kind = is_signed ? ECNN_I16 : ECNN_U16; break;
    case 4: *kind = is_signed ? ECNN_I32 : ECNN_U32; break;
    case 8: *kind = is_signed ? ECNN_I64 : ECNN_U64; break;
    default: goto bad;
    }
#if PY_BIG_ENDIAN
    *big = order != 1;
#else
    *big = order == 2;
#endif
    return 0;
bad:
    PyErr_Format(PyExc_TypeError, "expected an integer buffer, got format '%s'", v->format ? v->format : "B");
    return -1;
}

#endif
