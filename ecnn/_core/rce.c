/* The range encoder of spec/RANGE_CODER.md, section 9 (see rce.h). */
#include "rce.h"

#include <stdlib.h>
#include <string.h>

#define M64 UINT64_MAX
#define RENORM_BELOW (UINT64_C(1) << 32)
#define MIN_CAP 256

void ecnn_rce_init(ecnn_rce *e)
{
    memset(e, 0, sizeof *e);
    e->range = M64; /* RC section 4: 2^64 - 1, not 2^64 */
}

void ecnn_rce_free(ecnn_rce *e)
{
    free(e->words);
    ecnn_rce_init(e);
}

/* Room for at least `more` words past nwords; 0 on success. */
static int reserve(ecnn_rce *e, size_t more)
{
    if (more <= e->cap - e->nwords)
        return 0;
    if (more > SIZE_MAX / sizeof(uint32_t) - e->nwords)
        return -1;
    size_t need = e->nwords + more;
    size_t cap = e->cap < MIN_CAP ? MIN_CAP : e->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / sizeof(uint32_t) / 2 ? need : 2 * cap;
    uint32_t *w = (uint32_t *)realloc(e->words, cap * sizeof(uint32_t));
    if (!w)
        return -1;
    e->words = w;
    e->cap = cap;
    return 0;
}

/* One symbol with interval [lo, lo + p) of 2^24, 1 <= p and lo + p <= 2^24 (checked by the caller), on the
 * stored state: RC section 9.2 in full, held-back words and growing the output included. It follows
 * constriction's RangeEncoder::encode_symbol step by step, so the words are the same. The loops below
 * take a shortcut for the common case and come here for the rest. */
static int step(ecnn_rce *e, uint64_t lo, uint64_t p)
{
    uint64_t scale = e->range >> ECNN_RC_PRECISION; /* >= 2^8: range >= 2^32 between symbols */
    uint64_t range = scale * p;                     /* >= 2^8, never above the old range */
    uint64_t lower = e->lower + scale * lo;         /* mod 2^64: a wrap is a carry into held-back words */
    if (e->ninv && lower + range > lower) {
        /* The interval no longer straddles 2^64: the held-back words are settled, with a carry
         * if lower wrapped. */
        if (reserve(e, e->ninv))
            return -1;
        int carry = lower < e->lower;
        uint32_t rest = carry ? 0 : UINT32_MAX;
        e->words[e->nwords++] = e->first_inv + (uint32_t)carry;
        for (size_t i = 1; i < e->ninv; i++)
            e->words[e->nwords++] = rest;
        e->ninv = 0;
    }
    if (range < RENORM_BELOW) {
        uint32_t w = (uint32_t)(lower >> 32);
        lower <<= 32;
        range <<= 32;
        if (e->ninv) {
            e->ninv++; /* lower + range still wraps, so the word is 0xFFFFFFFF and stays held back */
        } else if (lower + range > lower) {
            if (e->nwords == e->cap && reserve(e, 1))
                return -1;
            e->words[e->nwords++] = w;
        } else {
            e->ninv = 1; /* a later carry may still change w: hold it back */
            e->first_inv = w;
        }
    }
    e->lower = lower;
    e->range = range;
    return 0;
}

/* Symbol j of an integer array of kind `kind`, as an unsigned index; negative values become huge. */
static inline uint64_t load(const void *a, int kind, size_t j)
{
    switch (kind) {
    case ECNN_I8: return (uint64_t)(int64_t)((const int8_t *)a)[j];
    case ECNN_U8: return ((const uint8_t *)a)[j];
    case ECNN_I16: return (uint64_t)(int64_t)((const int16_t *)a)[j];
    case ECNN_U16: return ((const uint16_t *)a)[j];
    case ECNN_I32: return (uint64_t)(int64_t)((const int32_t *)a)[j];
    case ECNN_U32: return ((const uint32_t *)a)[j];
    case ECNN_I64: return (uint64_t)((const int64_t *)a)[j];
    default: return ((const uint64_t *)a)[j];
    }
}

/* The interval [*lo, *lo + *p) of symbol s of table c[0..n]; 0 or a status. */
static inline int interval(const uint32_t *c, size_t n, uint64_t s, uint64_t *lo, uint64_t *p)
{
    if (s >= n)
        return ECNN_RCE_BAD_SYMBOL;
    uint32_t a = c[s], b = c[s + 1];
    if (!(a < b && b <= ECNN_RC_TOTAL))
        return ECNN_RCE_BAD_TABLE;
    *lo = a;
    *p = b - a;
    return ECNN_RCE_OK;
}

/* The loop over count symbols, on a copy `s` of the encoder so that a failure keeps nothing of the call.
 * TABLE_J sets `c` to symbol j's table (or sets status and breaks); SYMBOL_J is symbol j as uint64_t.
 * The common case (no held-back words, room for a word) keeps the state in registers; every other
 * symbol goes through step() on the stored state. */
#define ENCODE_LOOP(TABLE_J, SYMBOL_J)                                                \
    do {                                                                              \
        uint64_t lower = s.lower, range = s.range;                                    \
        for (j = 0; j < count; j++) {                                                 \
            const uint32_t *c;                                                        \
            uint64_t lo, p;                                                           \
            TABLE_J;                                                                  \
            status = interval(c, n, SYMBOL_J, &lo, &p);                               \
            if (status)                                                               \
                break;                                                                \
            uint64_t scale = range >> ECNN_RC_PRECISION;                              \
            uint64_t nr = scale * p, nl = lower + scale * lo;                         \
            if (!s.ninv) {                                                            \
                if (nr >= RENORM_BELOW) {                                             \
                    lower = nl;                                                       \
                    range = nr;                                                       \
                    continue;                                                         \
                }                                                                     \
                uint64_t wl = nl << 32, wr = nr << 32;                                \
                if (wl + wr > wl && s.nwords < s.cap) {                               \
                    s.words[s.nwords++] = (uint32_t)(nl >> 32);                       \
                    lower = wl;                                                       \
                    range = wr;                                                       \
                    continue;                                                         \
                }                                                                     \
            }                                                                         \
            s.lower = lower;                                                          \
            s.range = range;                                                          \
            if (step(&s, lo, p)) {                                                    \
                status = ECNN_RCE_NO_MEMORY;                                          \
                break;                                                                \
            }                                                                         \
            lower = s.lower;                                                          \
            range = s.range;                                                          \
        }                                                                             \
        s.lower = lower;                                                              \
        s.range = range;                                                              \
    } while (0)

static int finish(ecnn_rce *e, ecnn_rce *s, int status, size_t j, size_t *at)
{
    *at = j;
    if (status) {
        e->words = s->words; /* the buffer may have moved; its first e->nwords words are unchanged */
        e->cap = s->cap;
    } else {
        *e = *s;
    }
    return status;
}

int ecnn_rce_encode(ecnn_rce *e, const uint32_t *cdf, size_t n, const void *sym, int sym_kind, size_t count,
                    size_t *at)
{
    ecnn_rce s = *e;
    size_t j = 0;
    int status = ECNN_RCE_OK;
    switch (sym_kind) {
    case ECNN_I32: ENCODE_LOOP(c = cdf, (uint64_t)(int64_t)((const int32_t *)sym)[j]); break;
    case ECNN_I64: ENCODE_LOOP(c = cdf, (uint64_t)((const int64_t *)sym)[j]); break;
    case ECNN_U8: ENCODE_LOOP(c = cdf, (uint64_t)((const uint8_t *)sym)[j]); break;
    default: ENCODE_LOOP(c = cdf, load(sym, sym_kind, j)); break;
    }
    return finish(e, &s, status, j, at);
}

/* Table of symbol j of encode_ctx: row ctx[j], or status BAD_CONTEXT. */
#define CTX_TABLE(LOAD_T)                                 \
    do {                                                  \
        uint64_t t = (LOAD_T);                            \
        if (t >= ntab) {                                  \
            status = ECNN_RCE_BAD_CONTEXT;                \
            goto done;                                    \
        }                                                 \
        c = cdfs + (size_t)t * (n + 1);                   \
    } while (0)

int ecnn_rce_encode_ctx(ecnn_rce *e, const uint32_t *cdfs, size_t ntab, size_t n, const void *ctx, int ctx_kind,
                        const void *sym, int sym_kind, size_t count, size_t *at)
{
    ecnn_rce s = *e;
    size_t j = 0;
    int status = ECNN_RCE_OK;
    if (ctx_kind == ECNN_U8 && sym_kind == ECNN_U8)
        ENCODE_LOOP(CTX_TABLE(((const uint8_t *)ctx)[j]), (uint64_t)((const uint8_t *)sym)[j]);
    else if (ctx_kind == ECNN_I64 && sym_kind == ECNN_I64)
        ENCODE_LOOP(CTX_TABLE((uint64_t)((const int64_t *)ctx)[j]), (uint64_t)((const int64_t *)sym)[j]);
    else
        ENCODE_LOOP(CTX_TABLE(load(ctx, ctx_kind, j)), load(sym, sym_kind, j));
done:
    return finish(e, &s, status, j, at);
}

size_t ecnn_rce_sealed_len(const ecnn_rce *e)
{
    if (e->range == M64)
        return e->nwords; /* nothing encoded: no sealing words */
    uint64_t point = e->lower + (RENORM_BELOW - 1);
    int zero = (uint32_t)((e->lower + e->range) >> 32) == (uint32_t)(point >> 32);
    return e->nwords + e->ninv + 1 + (size_t)zero;
}

void ecnn_rce_seal(const ecnn_rce *e, uint32_t *out)
{
    if (e->nwords)
        memcpy(out, e->words, e->nwords * sizeof(uint32_t));
    if (e->range == M64)
        return;
    size_t k = e->nwords;
    /* The point lower + 2^32 - 1 lies in the interval and its top word, then (if needed) a zero word,
     * identify it whatever follows the stream. */
    uint64_t point = e->lower + (RENORM_BELOW - 1);
    if (e->ninv) {
        int carry = point < e->lower;
        uint32_t rest = carry ? 0 : UINT32_MAX;
        out[k++] = e->first_inv + (uint32_t)carry;
        for (size_t i = 1; i < e->ninv; i++)
            out[k++] = rest;
    }
    uint32_t point_word = (uint32_t)(point >> 32);
    out[k++] = point_word;
    if ((uint32_t)((e->lower + e->range) >> 32) == point_word)
        out[k++] = 0;
}
