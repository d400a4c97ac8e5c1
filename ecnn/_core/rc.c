/* The range decoder of spec/RANGE_CODER.md (see rc.h). */
#include "rc.h"

#include <stdlib.h>
#include <string.h>

#define M64 UINT64_MAX
#define RENORM_BELOW (UINT64_C(1) << 32)

static inline uint64_t next_word(ecnn_rc *d)
{
    if (d->pos >= d->nwords)
        return 0; /* RC section 3: a missing word reads as zero */
    const unsigned char *p = d->bytes + 4 * d->pos++;
    if (d->order == ECNN_RC_BIG)
        return ((uint64_t)p[0] << 24) | ((uint64_t)p[1] << 16) | ((uint64_t)p[2] << 8) | (uint64_t)p[3];
    return ((uint64_t)p[3] << 24) | ((uint64_t)p[2] << 16) | ((uint64_t)p[1] << 8) | (uint64_t)p[0];
}

void ecnn_rc_init(ecnn_rc *d, const unsigned char *bytes, size_t nwords, int order)
{
    d->bytes = bytes;
    d->nwords = nwords;
    d->pos = 0;
    d->order = order;
    d->lower = 0;
    d->range = M64; /* RC section 4: 2^64 - 1, not 2^64 */
    uint64_t w0 = next_word(d);
    d->point = (w0 << 32) | next_word(d);
}

/* One symbol (RC section 5) whose index is known to lie in first..last (a candidate range of the table
 * c[0..n], clamped below n); returns the symbol or a negative status. */
static inline int64_t step_in(ecnn_rc *d, const uint32_t *c, uint64_t q, uint64_t scale, size_t first, size_t len)
{
    /* The last s in first..first+len-1 with c[s] <= q (branch-free binary search; stays in range for any table). */
    const uint32_t *b = c + first;
    while (len > 1) {
        size_t half = len >> 1;
        b = (b[half] <= q) ? b + half : b;
        len -= half;
    }
    uint32_t lo = b[0], hi = b[1];
    if (!(lo <= q && q < hi && hi <= ECNN_RC_TOTAL))
        return -ECNN_RC_BAD_TABLE; /* so 1 <= hi - lo <= 2^24 and range cannot overflow or vanish */
    d->lower += scale * lo;
    d->range = scale * (uint64_t)(hi - lo);
    if (d->range < RENORM_BELOW) {
        d->lower <<= 32;
        d->range <<= 32;
        d->point = (d->point << 32) | next_word(d);
    }
    return (int64_t)(b - c);
}

/* RC section 5 steps 1 to 3: the quantile q, or ECNN_RC_TOTAL and above for invalid data. */
static inline uint64_t quantile(const ecnn_rc *d, uint64_t *scale)
{
    *scale = d->range >> ECNN_RC_PRECISION; /* >= 2^8: range >= 2^32 between symbols */
    return (d->point - d->lower) / *scale;
}

/* One symbol with the table c[0..n], by binary search over the whole table. */
static inline int64_t step(ecnn_rc *d, const uint32_t *c, size_t n)
{
    uint64_t scale, q = quantile(d, &scale);
    if (q >= ECNN_RC_TOTAL)
        return -ECNN_RC_INVALID_DATA;
    return step_in(d, c, q, scale, 0, n);
}

/* A lookup table of 2^bits buckets of the quantile: lut[k] is the symbol whose interval holds k << (24 - bits),
 * lut[2^bits] = n - 1; so a quantile in bucket k decodes to a symbol in lut[k] .. lut[k + 1]. */
typedef struct {
    uint32_t *lut;
    unsigned shift;
} ecnn_lut;

static int lut_build(ecnn_lut *t, const uint32_t *c, size_t n, size_t count)
{
    unsigned bits = 4;
    while (bits < 12 && ((size_t)1 << bits) < 4 * n)
        bits++;
    size_t nb = (size_t)1 << bits;
    if (count < 64 || count * 4 < nb + n)
        return 0; /* not worth building */
    t->lut = (uint32_t *)malloc((nb + 1) * sizeof *t->lut);
    if (!t->lut)
        return 0;
    t->shift = ECNN_RC_PRECISION - bits;
    size_t s = 0;
    for (size_t k = 0; k < nb; k++) {
        uint64_t x = (uint64_t)k << t->shift;
        while (s + 1 < n && c[s + 1] <= x) /* bounded for any table; monotone tables give the exact symbol */
            s++;
        t->lut[k] = (uint32_t)s;
    }
    t->lut[nb] = (uint32_t)(n - 1);
    return 1;
}

static inline int64_t step_lut(ecnn_rc *d, const uint32_t *c, const ecnn_lut *t)
{
    uint64_t scale, q = quantile(d, &scale);
    if (q >= ECNN_RC_TOTAL)
        return -ECNN_RC_INVALID_DATA;
    size_t k = (size_t)(q >> t->shift);
    size_t first = t->lut[k];
    return step_in(d, c, q, scale, first, (size_t)t->lut[k + 1] - first + 1);
}

static inline void store(ecnn_out out, size_t j, int64_t v)
{
    switch (out.kind) {
    case ECNN_I8: ((int8_t *)out.data)[j] = (int8_t)v; break;
    case ECNN_U8: ((uint8_t *)out.data)[j] = (uint8_t)v; break;
    case ECNN_I16: ((int16_t *)out.data)[j] = (int16_t)v; break;
    case ECNN_U16: ((uint16_t *)out.data)[j] = (uint16_t)v; break;
    case ECNN_I32: ((int32_t *)out.data)[j] = (int32_t)v; break;
    case ECNN_U32: ((uint32_t *)out.data)[j] = (uint32_t)v; break;
    case ECNN_I64: ((int64_t *)out.data)[j] = v; break;
    default: ((uint64_t *)out.data)[j] = (uint64_t)v; break;
    }
}

/* Context j as an unsigned index; negative values map to a huge index, which the caller rejects. */
static inline uint64_t load_ctx(const void *ctx, int kind, size_t j)
{
    switch (kind) {
    case ECNN_I8: return (uint64_t)(int64_t)((const int8_t *)ctx)[j];
    case ECNN_U8: return ((const uint8_t *)ctx)[j];
    case ECNN_I16: return (uint64_t)(int64_t)((const int16_t *)ctx)[j];
    case ECNN_U16: return ((const uint16_t *)ctx)[j];
    case ECNN_I32: return (uint64_t)(int64_t)((const int32_t *)ctx)[j];
    case ECNN_U32: return ((const uint32_t *)ctx)[j];
    case ECNN_I64: return (uint64_t)((const int64_t *)ctx)[j];
    default: return ((const uint64_t *)ctx)[j];
    }
}

/* Specialised loops for the common output kinds; the generic one for the rest. */
#define DECODE_LOOP(T, STEP)                             \
    do {                                                 \
        T *o = (T *)out.data;                            \
        for (j = 0; j < count; j++) {                    \
            int64_t s = STEP;                            \
            if (s < 0) {                                 \
                status = (int)-s;                        \
                goto end;                                \
            }                                            \
            o[j] = (T)s;                                 \
        }                                                \
    } while (0)

int ecnn_rc_decode(ecnn_rc *d, const uint32_t *cdf, size_t n, ecnn_out out, size_t count, size_t *done)
{
    size_t j = 0;
    int status = ECNN_RC_OK;
    ecnn_lut t;
    if (lut_build(&t, cdf, n, count)) {
        if (out.kind == ECNN_I32)
            DECODE_LOOP(int32_t, step_lut(d, cdf, &t));
        else if (out.kind == ECNN_I64)
            DECODE_LOOP(int64_t, step_lut(d, cdf, &t));
        else if (out.kind == ECNN_U8)
            DECODE_LOOP(uint8_t, step_lut(d, cdf, &t));
        else
            for (j = 0; j < count; j++) {
                int64_t s = step_lut(d, cdf, &t);
                if (s < 0) {
                    status = (int)-s;
                    goto end;
                }
                store(out, j, s);
            }
    } else {
        t.lut = NULL;
        for (j = 0; j < count; j++) {
            int64_t s = step(d, cdf, n);
            if (s < 0) {
                status = (int)-s;
                goto end;
            }
            store(out, j, s);
        }
    }
end:
    free(t.lut);
    *done = j;
    return status;
}

int ecnn_rc_decode_ctx(ecnn_rc *d, const uint32_t *cdfs, size_t ntab, size_t n, const void *ctx, int ctx_kind,
                       ecnn_out out, size_t count, size_t *done)
{
    for (size_t j = 0; j < count; j++) {
        uint64_t t = load_ctx(ctx, ctx_kind, j);
        if (t >= ntab) {
            *done = j;
            return ECNN_RC_BAD_CONTEXT;
        }
        int64_t s = step(d, cdfs + (size_t)t * (n + 1), n);
        if (s < 0) {
            *done = j;
            return (int)-s;
        }
        store(out, j, s);
    }
    *done = count;
    return ECNN_RC_OK;
}

int ecnn_rc_exhausted(const ecnn_rc *d)
{
    /* The largest (point - lower) of a stream padded with zero words: 2^33 - 1 exclusive. */
    const uint64_t max_difference = (UINT64_C(1) << 33) - 1;
    if (d->pos < d->nwords)
        return 0;
    return d->range == M64 || d->point - d->lower < max_difference;
}
