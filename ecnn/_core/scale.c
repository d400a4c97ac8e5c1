/* Quantized symbols to values (see scale.h). */
#include "scale.h"

#include <string.h>

/* The top 16 bits of a binary32, rounded half to even (what ecnn.quantize.from_float computes: the
 * products are never NaN). */
static inline uint16_t bf16_of(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* Elements are read and written with memcpy, so that out may be q itself (as bytes, which may alias). */
/* Elements are read and written with memcpy, so that out may be q itself (as bytes, which may alias). */
#define ROWS_LOOP(QT, OT, EXPR)                                                 \
    do {                                                                        \
        for (size_t i = 0; i < rows; i++) {                                     \
            const unsigned char *qr = (const unsigned char *)q + i * cols * sizeof(QT); \
            unsigned char *orow = (unsigned char *)out + i * cols * sizeof(OT);  \
            for (size_t j = 0; j < cols; j++) {                                 \
                QT v;                                                           \
                memcpy(&v, qr + j * sizeof(QT), sizeof v);                      \
                OT r = EXPR;                                                    \
                memcpy(orow + j * sizeof(OT), &r, sizeof r);                    \
            }                                                                   \
        }                                                                       \
    } while (0)

#define BY_QSIZE(OT, EXPR)                                            \
    do {                                                              \
        if (qsize == 1)                                               \
            ROWS_LOOP(int8_t, OT, EXPR);                              \
        else if (qsize == 2)                                          \
            ROWS_LOOP(int16_t, OT, EXPR);                             \
        else                                                          \
            ROWS_LOOP(int32_t, OT, EXPR);                             \
    } while (0)

int ecnn_scale_rows(const void *q, unsigned qsize, size_t rows, size_t cols, const void *steps, int kind, void *out)
{
    if (qsize != 1 && qsize != 2 && qsize != 4)
        return -1;
    if (kind == ECNN_SCALE_F32) {
        const float *s = (const float *)steps;
        BY_QSIZE(float, (float)v * s[i]);
    } else if (kind == ECNN_SCALE_BF16) {
        const float *s = (const float *)steps;
        BY_QSIZE(uint16_t, bf16_of((float)v * s[i]));
    } else if (kind == ECNN_SCALE_F64) {
        const double *s = (const double *)steps;
        BY_QSIZE(double, (double)v * s[i]);
    } else {
        return -1;
    }
    return 0;
}
