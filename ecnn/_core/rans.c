/* Interleaved rANS lanes (see rans.h; spec/CODING.md, section 5.9). */
#include "rans.h"

#include <stdlib.h>
#include <string.h>

int ecnn_rans_tables_init(ecnn_rans_tables *t, const uint32_t *freqs, size_t ntab, size_t nsym, unsigned precision)
{
    memset(t, 0, sizeof *t);
    if (precision < ECNN_RANS_MIN_PRECISION || precision > ECNN_RANS_MAX_PRECISION || ntab == 0 || nsym == 0 ||
        nsym > ECNN_RANS_MAX_NSYM)
        return ECNN_RANS_BAD_TABLE;
    size_t m = (size_t)1 << precision;
    if (ntab > SIZE_MAX / m / sizeof(uint32_t) || ntab > SIZE_MAX / nsym / sizeof(uint32_t))
        return ECNN_RANS_NOMEM;
    t->sym = (uint16_t *)calloc(ntab * m + 2, sizeof(uint16_t)); /* + 2: a 4-byte gather at the last slot */
    t->fb = (uint32_t *)malloc(ntab * m * sizeof(uint32_t));
    if (!t->sym || !t->fb) {
        ecnn_rans_tables_free(t);
        return ECNN_RANS_NOMEM;
    }
    t->precision = precision;
    t->ntab = ntab;
    t->nsym = nsym;
    for (size_t k = 0; k < ntab; k++) {
        const uint32_t *f = freqs + k * nsym;
        uint16_t *sy = t->sym + k * m;
        uint32_t *fb = t->fb + k * m;
        uint64_t start = 0;
        for (size_t s = 0; s < nsym; s++) {
            uint64_t n = f[s];
            if (n > m - start) {
                ecnn_rans_tables_free(t);
                return ECNN_RANS_BAD_TABLE;
            }
            /* slot start + j: the symbol, its frequency (at most 2^15) and j (below it) */
            for (uint64_t j = 0; j < n; j++) {
                sy[start + j] = (uint16_t)s;
                fb[start + j] = (uint32_t)n | (uint32_t)(j << 16);
            }
            start += n;
        }
        if (start != m) {
            ecnn_rans_tables_free(t);
            return ECNN_RANS_BAD_TABLE;
        }
    }
    return ECNN_RANS_OK;
}

int ecnn_rans_freqs(const int64_t *counts, size_t k, size_t n, unsigned precision, uint32_t *out)
{
    if (precision < ECNN_RANS_MIN_PRECISION || precision > ECNN_RANS_MAX_PRECISION || n > ((size_t)1 << 20))
        return ECNN_RANS_BAD_TABLE;
    const int64_t m = (int64_t)1 << precision;
    for (size_t r = 0; r < k; r++) {
        const int64_t *c = counts + r * n;
        uint32_t *f = out + r * n;
        int64_t total = 0, z = 0;
        size_t top = 0;
        for (size_t s = 0; s < n; s++) {
            if (c[s] < 0 || c[s] > (int64_t)UINT32_MAX)
                return ECNN_RANS_BAD_TABLE;
            total += c[s];
            z += c[s] > 0;
            if (c[s] > c[top])
                top = s;
        }
        if (total == 0 || z > m)
            return ECNN_RANS_BAD_TABLE;
        int64_t free_ = m - z, sum = 0; /* c * free_ < 2^32 * 2^15 */
        for (size_t s = 0; s < n; s++) {
            int64_t v = c[s] > 0 ? 1 + c[s] * free_ / total : 0;
            f[s] = (uint32_t)v;
            sum += v;
        }
        f[top] += (uint32_t)(m - sum);
    }
    return ECNN_RANS_OK;
}

void ecnn_rans_tables_free(ecnn_rans_tables *t)
{
    free(t->sym);
    free(t->fb);
    t->sym = NULL;
    t->fb = NULL;
}

static inline uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void store(void *out, int kind, size_t j, int64_t v)
{
    switch (kind) {
    case ECNN_RANS_I8: ((int8_t *)out)[j] = (int8_t)v; break;
    case ECNN_RANS_U8: ((uint8_t *)out)[j] = (uint8_t)v; break;
    case ECNN_RANS_I16: ((int16_t *)out)[j] = (int16_t)v; break;
    case ECNN_RANS_U16: ((uint16_t *)out)[j] = (uint16_t)v; break;
    case ECNN_RANS_I32: ((int32_t *)out)[j] = (int32_t)v; break;
    case ECNN_RANS_U32: ((uint32_t *)out)[j] = (uint32_t)v; break;
    case ECNN_RANS_I64: ((int64_t *)out)[j] = v; break;
    default: ((uint64_t *)out)[j] = (uint64_t)v; break;
    }
}

/* (sym + offset) << shift, wrapping as unsigned (the caller checks that the values fit). */
static inline int64_t shifted(uint32_t sym, int64_t offset, unsigned shift)
{
    return (int64_t)(((uint64_t)sym + (uint64_t)offset) << shift);
}

/* The lanes of one chunk: states, next word and end of each lane's words. */
typedef struct {
    uint32_t x[ECNN_RANS_MAX_LANES];
    const unsigned char *p[ECNN_RANS_MAX_LANES], *end[ECNN_RANS_MAX_LANES];
    const unsigned char *base; /* the chunk's first byte */
    size_t len;                /* and its length */
    size_t n, next; /* lanes, the lane of the next symbol */
    uint32_t short_read; /* set once a lane needed a word it did not have */
} lanes_t;

static const unsigned char zero_word[2] = {0, 0};

/* One symbol with state x, next word *p and word end e: two independent lookups of the slot (the symbol,
 * and its frequency and offset in its interval), a multiply, and a renormalization without a branch. A lane
 * out of words reads zeros and sets *bad, so the chunk is rejected. */
static inline uint32_t dec1(uint32_t *x, const unsigned char **p, const unsigned char *e, const uint16_t *sy,
                            const uint32_t *fb, unsigned prec, uint32_t mask, uint32_t *bad)
{
    uint32_t v = *x, slot = v & mask, sym = sy[slot], f = fb[slot];
    v = (f & 0xFFFFu) * (v >> prec) + (f >> 16);
    uint32_t need = v < ECNN_RANS_LOW;
    const unsigned char *q = *p;
    uint32_t ok = q < e;
    const unsigned char *r = ok ? q : zero_word;
    uint32_t w = (uint32_t)r[0] | ((uint32_t)r[1] << 8);
    *bad |= need & !ok;
    *x = (v << (need << 4)) | (w & (0u - need));
    *p = q + 2 * (need & ok);
    return sym;
}

/* Whole rounds of NL lanes (NL a constant), the states in locals so that the chains stay in registers. */
#define ROUNDS(NL)                                                                          \
    do {                                                                                    \
        uint32_t x[NL];                                                                     \
        const unsigned char *p[NL];                                                         \
        for (size_t i = 0; i < NL; i++)                                                     \
            x[i] = L->x[i], p[i] = L->p[i];                                                 \
        for (; k + NL <= n; k += NL)                                                        \
            for (size_t i = 0; i < NL; i++)                                                 \
                buf[k + i] = (uint16_t)dec1(&x[i], &p[i], L->end[i], sy, fb, prec, mask, &bad); \
        for (size_t i = 0; i < NL; i++)                                                     \
            L->x[i] = x[i], L->p[i] = p[i];                                                 \
    } while (0)

/* A little-endian 16-bit word. */
static inline uint32_t load16(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
#else
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
#endif
}

/* One step of a lane known to hold at least one more word: no bounds check, no branch. */
#define FAST_STEP(x, p, k)                                                           \
    do {                                                                             \
        uint32_t slot_ = x & mask, f_ = fb[slot_];                                   \
        buf[k] = sy[slot_];                                                          \
        uint32_t v_ = (f_ & 0xFFFFu) * (x >> prec) + (f_ >> 16);                     \
        uint32_t w_ = load16(p);                                                     \
        uint32_t need_ = v_ < ECNN_RANS_LOW;                                         \
        uint32_t m_ = 0u - need_;                                                    \
        x = (((v_ << 16) | w_) & m_) | (v_ & ~m_);                                   \
        p += 2 * need_;                                                              \
    } while (0)

/* rounds whole rounds of NL lanes whose words last (each lane holds at least rounds words, and a symbol
 * reads at most one), with the states in locals; one function per lane count and precision, so that the
 * loops unroll and the shifts are constants. */
#define STEPS4(o) FAST_STEP(x[o], p[o], o); FAST_STEP(x[o + 1], p[o + 1], o + 1); \
                  FAST_STEP(x[o + 2], p[o + 2], o + 2); FAST_STEP(x[o + 3], p[o + 3], o + 3)
#define ROUNDS_FN(NL, P)                                                                                  \
    static void rounds##NL##_##P(lanes_t *L, const uint16_t *sy, const uint32_t *fb, uint16_t *buf,       \
                                 size_t rounds)                                                           \
    {                                                                                                     \
        const unsigned prec = P;                                                                          \
        const uint32_t mask = ((uint32_t)1 << P) - 1;                                                     \
        uint32_t x[NL];                                                                                   \
        const unsigned char *p[NL];                                                                       \
        memcpy(x, L->x, sizeof x);                                                                        \
        memcpy(p, L->p, sizeof p);                                                                        \
        for (size_t r = 0; r < rounds; r++, buf += NL) {                                                  \
            STEPS4(0);                                                                                    \
            if (NL >= 8) {                                                                                \
                STEPS4(4 % NL);                                                                           \
            }                                                                                             \
            if (NL >= 16) {                                                                               \
                STEPS4(8 % NL);                                                                           \
                STEPS4(12 % NL);                                                                          \
            }                                                                                             \
            if (NL >= 32) {                                                                               \
                STEPS4(16 % NL);                                                                          \
                STEPS4(20 % NL);                                                                          \
                STEPS4(24 % NL);                                                                          \
                STEPS4(28 % NL);                                                                          \
            }                                                                                             \
        }                                                                                                 \
        memcpy(L->x, x, sizeof x);                                                                        \
        memcpy(L->p, p, sizeof p);                                                                        \
    }
#define ROUNDS_PRECISIONS(NL) \
    ROUNDS_FN(NL, 10) ROUNDS_FN(NL, 11) ROUNDS_FN(NL, 12) ROUNDS_FN(NL, 13) ROUNDS_FN(NL, 14) ROUNDS_FN(NL, 15)
ROUNDS_PRECISIONS(4)
ROUNDS_PRECISIONS(8)
ROUNDS_PRECISIONS(16)
ROUNDS_PRECISIONS(32)

typedef void (*rounds_fn)(lanes_t *, const uint16_t *, const uint32_t *, uint16_t *, size_t);
static const rounds_fn ROUNDS4[6] = {rounds4_10, rounds4_11, rounds4_12, rounds4_13, rounds4_14, rounds4_15};
static const rounds_fn ROUNDS8[6] = {rounds8_10, rounds8_11, rounds8_12, rounds8_13, rounds8_14, rounds8_15};
static const rounds_fn ROUNDS16[6] = {rounds16_10, rounds16_11, rounds16_12, rounds16_13, rounds16_14, rounds16_15};
static const rounds_fn ROUNDS32[6] = {rounds32_10, rounds32_11, rounds32_12, rounds32_13, rounds32_14, rounds32_15};

/* The same rounds with AVX2 where the compiler and the CPU have it, for 16 or 32 lanes (two or four vectors
 * of eight): the table entries and the words of the lanes that need one come from gathers. The words are
 * read 4 bytes at a time at the lanes' byte offsets from the chunk's start, so each lane must hold at least
 * rounds + 1 words (the caller checks), and the symbol table has 2 bytes of padding. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ECNN_HAVE_AVX2 1
static int have_avx2;

#define AVX2_STEP(V)                                                                                          \
    do {                                                                                                      \
        __m256i s_ = _mm256_and_si256(x[V], mask);                                                            \
        __m256i e_ = _mm256_i32gather_epi32((const int *)fb, s_, 4);                                          \
        y[V] = _mm256_and_si256(_mm256_i32gather_epi32((const int *)sy, s_, 2), lo16);                        \
        __m256i n_ = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_and_si256(e_, lo16), _mm256_srl_epi32(x[V], sh)), \
                                      _mm256_srli_epi32(e_, 16));                                             \
        __m256i need_ = _mm256_cmpeq_epi32(_mm256_min_epu32(n_, lo16), n_);                                   \
        __m256i w_ = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)base, off[V], need_, 1); \
        x[V] = _mm256_blendv_epi8(n_, _mm256_or_si256(_mm256_slli_epi32(n_, 16), _mm256_and_si256(w_, lo16)), need_); \
        off[V] = _mm256_sub_epi32(off[V], _mm256_add_epi32(need_, need_));                                    \
    } while (0)

__attribute__((target("avx2"))) static void rounds_avx2(lanes_t *L, const uint16_t *sy, const uint32_t *fb,
                                                       unsigned prec, uint16_t *buf, size_t rounds)
{
    size_t nv = L->n / 8; /* 2 or 4 */
    const unsigned char *base = L->base;
    __m256i x[4], off[4], y[4];
    for (size_t v = 0; v < nv; v++) {
        uint32_t o[8];
        for (size_t i = 0; i < 8; i++)
            o[i] = (uint32_t)(L->p[8 * v + i] - base);
        x[v] = _mm256_loadu_si256((const __m256i *)(L->x + 8 * v));
        off[v] = _mm256_loadu_si256((const __m256i *)o);
    }
    const __m256i mask = _mm256_set1_epi32((int)(((uint32_t)1 << prec) - 1)), lo16 = _mm256_set1_epi32(0xFFFF);
    const __m128i sh = _mm_cvtsi32_si128((int)prec);
    if (nv == 2) {
        for (size_t r = 0; r < rounds; r++, buf += 16) {
            AVX2_STEP(0);
            AVX2_STEP(1);
            _mm256_storeu_si256((__m256i *)buf, _mm256_permute4x64_epi64(_mm256_packus_epi32(y[0], y[1]), 0xD8));
        }
    } else {
        for (size_t r = 0; r < rounds; r++, buf += 32) {
            AVX2_STEP(0);
            AVX2_STEP(1);
            AVX2_STEP(2);
            AVX2_STEP(3);
            _mm256_storeu_si256((__m256i *)buf, _mm256_permute4x64_epi64(_mm256_packus_epi32(y[0], y[1]), 0xD8));
            _mm256_storeu_si256((__m256i *)(buf + 16), _mm256_permute4x64_epi64(_mm256_packus_epi32(y[2], y[3]), 0xD8));
        }
    }
    for (size_t v = 0; v < nv; v++) {
        uint32_t o[8];
        _mm256_storeu_si256((__m256i *)(L->x + 8 * v), x[v]);
        _mm256_storeu_si256((__m256i *)o, off[v]);
        for (size_t i = 0; i < 8; i++)
            L->p[8 * v + i] = base + o[i];
    }
}
#endif

void ecnn_rans_init(void)
{
#ifdef ECNN_HAVE_AVX2
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
}

int ecnn_rans_use_simd(int on)
{
#ifdef ECNN_HAVE_AVX2
    ecnn_rans_init();
    have_avx2 = have_avx2 && on;
#else
    (void)on;
#endif
    return ecnn_rans_simd();
}

int ecnn_rans_simd(void)
{
#ifdef ECNN_HAVE_AVX2
    return have_avx2;
#else
    return 0;
#endif
}

/* Whole rounds that every lane surely has words for (one per symbol at most; `spare` more kept back). */
static size_t safe_rounds(const lanes_t *L, size_t want, size_t spare)
{
    size_t rounds = want;
    for (size_t l = 0; l < L->n; l++) {
        size_t left = (size_t)(L->end[l] - L->p[l]) / 2;
        left = left > spare ? left - spare : 0;
        if (left < rounds)
            rounds = left;
    }
    return rounds;
}

/* n symbols with one table into buf, the lanes taken in turn. */
static void dec_run(lanes_t *L, const uint16_t *sy, const uint32_t *fb, unsigned prec, uint16_t *buf, size_t n)
{
    uint32_t mask = ((uint32_t)1 << prec) - 1, bad = 0;
    size_t k = 0, nl = L->n, j = L->next;
    while (k < n && j) { /* to the start of a round */
        buf[k++] = (uint16_t)dec1(&L->x[j], &L->p[j], L->end[j], sy, fb, prec, mask, &bad);
        j = j + 1 == nl ? 0 : j + 1;
    }
#ifdef ECNN_HAVE_AVX2
    if (have_avx2 && (nl == 16 || nl == 32) && L->len < ((size_t)1 << 31)) {
        /* Batches of rounds: each batch as many as the lanes' words surely cover (a symbol reads at most
         * one word, and the 4-byte reads one more); the words left shrink by about the bits per symbol / 16,
         * so the batches soon cover nearly all rounds. */
        for (;;) {
            size_t rounds = safe_rounds(L, (n - k) / nl, 1);
            if (rounds < 8)
                break;
            rounds_avx2(L, sy, fb, prec, buf + k, rounds);
            k += nl * rounds;
        }
    }
#endif
    if (nl == 4 || nl == 8 || nl == 16 || nl == 32) { /* what ecnn writes */
        /* as many rounds as every lane surely has words for, without checks; the rest checked */
        for (;;) {
            size_t rounds = safe_rounds(L, (n - k) / nl, 0);
            if (!rounds)
                break;
            const rounds_fn *fns = nl == 4 ? ROUNDS4 : nl == 8 ? ROUNDS8 : nl == 16 ? ROUNDS16 : ROUNDS32;
            fns[prec - ECNN_RANS_MIN_PRECISION](L, sy, fb, buf + k, rounds);
            k += nl * rounds;
        }
        if (nl == 4)
            ROUNDS(4);
        else if (nl == 8)
            ROUNDS(8);
    }
    for (; k < n; k++) {
        buf[k] = (uint16_t)dec1(&L->x[j], &L->p[j], L->end[j], sy, fb, prec, mask, &bad);
        j = j + 1 == nl ? 0 : j + 1;
    }
    L->next = j;
    L->short_read |= bad;
}

/* Symbols of a staging buffer to their places: out[base + at(k)] = (buf[k] + offset) << shift. */
#define PUT_LOOP(T, AT, VAL)                            \
    do {                                                \
        T *o = (T *)out;                                \
        for (size_t k = 0; k < m; k++)                  \
            o[base + (AT)] = (T)(VAL);                  \
    } while (0)

static void put(void *out, int kind, size_t base, const int64_t *ord, const uint16_t *buf, size_t m, int64_t offset,
                unsigned shift)
{
    /* unsigned outputs (the heads of fields): (symbol + offset) << shift, wrapping as the store does */
    uint64_t off = (uint64_t)offset;
    if (kind == ECNN_RANS_U32) {
        if (ord)
            PUT_LOOP(uint32_t, (size_t)ord[k], (buf[k] + off) << shift);
        else
            PUT_LOOP(uint32_t, k, (buf[k] + off) << shift);
    } else if (kind == ECNN_RANS_U64) {
        if (ord)
            PUT_LOOP(uint64_t, (size_t)ord[k], (buf[k] + off) << shift);
        else
            PUT_LOOP(uint64_t, k, (buf[k] + off) << shift);
    } else if (kind == ECNN_RANS_U16) {
        if (ord)
            PUT_LOOP(uint16_t, (size_t)ord[k], (buf[k] + off) << shift);
        else
            PUT_LOOP(uint16_t, k, (buf[k] + off) << shift);
    } else if (!shift && kind == ECNN_RANS_I8) {
        if (ord)
            PUT_LOOP(int8_t, (size_t)ord[k], (int64_t)buf[k] + offset);
        else
            PUT_LOOP(int8_t, k, (int64_t)buf[k] + offset);
    } else if (!shift && kind == ECNN_RANS_I16) {
        if (ord)
            PUT_LOOP(int16_t, (size_t)ord[k], (int64_t)buf[k] + offset);
        else
            PUT_LOOP(int16_t, k, (int64_t)buf[k] + offset);
    } else if (!shift && kind == ECNN_RANS_I32) {
        if (ord)
            PUT_LOOP(int32_t, (size_t)ord[k], (int64_t)buf[k] + offset);
        else
            PUT_LOOP(int32_t, k, (int64_t)buf[k] + offset);
    } else {
        for (size_t k = 0; k < m; k++)
            store(out, kind, base + (ord ? (size_t)ord[k] : k), shifted(buf[k], offset, shift));
    }
}

#define STAGE 1024 /* symbols decoded before they are put in place */

/* A schedule whose runs, run starts, column order and row classes stay inside the chunk, with table indices
 * below ntab; ECNN_RANS_OK or ECNN_RANS_BAD_LAYOUT. */
static int check_sched(const ecnn_rans_sched *s, size_t ntab)
{
    if (s->run_start[0] != 0 || (size_t)s->run_start[s->nrc] != s->nruns)
        return ECNN_RANS_BAD_LAYOUT;
    for (size_t g = 0; g < s->nrc; g++)
        if (s->run_start[g + 1] < s->run_start[g])
            return ECNN_RANS_BAD_LAYOUT;
    for (size_t r = 0; r < s->nruns; r++) {
        const int32_t *ru = s->runs + 3 * r;
        if (ru[0] < 0 || (size_t)ru[0] >= ntab || ru[1] < 0 || ru[1] > ru[2] || (size_t)ru[2] > s->cols)
            return ECNN_RANS_BAD_LAYOUT;
    }
    if (s->order)
        for (size_t q = 0; q < s->cols; q++)
            if (s->order[q] < 0 || (size_t)s->order[q] >= s->cols)
                return ECNN_RANS_BAD_LAYOUT;
    for (size_t i = 0; i < s->nr; i++)
        if (s->rclass[i] >= s->nrc)
            return ECNN_RANS_BAD_LAYOUT;
    return ECNN_RANS_OK;
}

/* Sign classes whose columns scols[sstart[g] .. sstart[g + 1] - 1] lie in 0..cols-1, the starts running from 0
 * to cols without falling; ECNN_RANS_OK or ECNN_RANS_BAD_LAYOUT. */
static int check_sign_classes(const int64_t *scols, const int64_t *sstart, size_t nsc, size_t cols)
{
    if (sstart[0] != 0 || (size_t)sstart[nsc] != cols)
        return ECNN_RANS_BAD_LAYOUT;
    for (size_t g = 0; g < nsc; g++)
        if (sstart[g + 1] < sstart[g])
            return ECNN_RANS_BAD_LAYOUT;
    for (size_t q = 0; q < cols; q++)
        if (scols[q] < 0 || (size_t)scols[q] >= cols)
            return ECNN_RANS_BAD_LAYOUT;
    return ECNN_RANS_OK;
}

/* The chunk's rows by class, in increasing order (a counting sort): rows of class g at
 * (*rows)[(*first)[g] .. (*first)[g + 1] - 1]. The caller frees both; ECNN_RANS_OK or ECNN_RANS_NOMEM. */
static int rows_by_class(const ecnn_rans_sched *s, size_t **first, size_t **rows)
{
    size_t nr = s->nr;
    size_t *fs = (size_t *)calloc(s->nrc + 1, sizeof *fs), *rs = (size_t *)malloc((nr ? nr : 1) * sizeof *rs);
    size_t *f = (size_t *)malloc((s->nrc ? s->nrc : 1) * sizeof *f);
    if (!fs || !rs || !f) {
        free(fs);
        free(rs);
        free(f);
        return ECNN_RANS_NOMEM;
    }
    for (size_t i = 0; i < nr; i++)
        fs[s->rclass[i] + 1]++;
    for (size_t g = 0; g < s->nrc; g++)
        fs[g + 1] += fs[g];
    memcpy(f, fs, s->nrc * sizeof *f);
    for (size_t i = 0; i < nr; i++)
        rs[f[s->rclass[i]]++] = i;
    free(f);
    *first = fs;
    *rows = rs;
    return ECNN_RANS_OK;
}

/* Bind the lanes of a chunk and check the schedule; a status. */
static int open_chunk(lanes_t *L, const ecnn_rans_tables *t, const ecnn_rans_chunk *c, const ecnn_rans_sched *s,
                      unsigned shift)
{
    size_t nl = c->lanes;
    if (nl == 0 || nl > ECNN_RANS_MAX_LANES || shift > 63)
        return ECNN_RANS_BAD_LAYOUT;
    L->n = nl;
    L->next = 0;
    L->base = c->data;
    L->len = c->len;
    L->short_read = 0;
    size_t pos = 0;
    for (size_t l = 0; l < nl; l++) {
        uint64_t w = c->words[l];
        if (c->len - pos < 4 || w > (c->len - pos - 4) / 2)
            return ECNN_RANS_BAD_LAYOUT;
        L->x[l] = rd32(c->data + pos);
        if (L->x[l] < ECNN_RANS_LOW)
            return ECNN_RANS_BAD_STATE;
        L->p[l] = c->data + pos + 4;
        L->end[l] = L->p[l] + 2 * w;
        pos += 4 + 2 * (size_t)w;
    }
    if (pos != c->len)
        return ECNN_RANS_BAD_LAYOUT;
    /* The schedule comes from the parsed stream; check it anyway so that no write leaves out. */
    return check_sched(s, t->ntab);
}

/* Section 5.8's rectangles: every run of every row class, row by row. A run's symbols over all the
 * chunk's rows of its class share one table, so they decode as one long run, STAGE at a time, and are
 * then put row by row. */
static int blocks_body(lanes_t *L, const ecnn_rans_tables *t, const ecnn_rans_sched *s, int64_t offset,
                       unsigned shift, void *out, int out_kind)
{
    unsigned prec = t->precision;
    size_t cols = s->cols;
    uint16_t buf[STAGE];
    size_t *first, *rows;
    int st = rows_by_class(s, &first, &rows);
    if (st)
        return st;
    for (size_t g = 0; g < s->nrc && !st; g++) {
        size_t nrg = first[g + 1] - first[g];
        const size_t *rg = rows + first[g];
        if (!nrg)
            continue;
        for (int64_t r = s->run_start[g]; r < s->run_start[g + 1]; r++) {
            const int32_t *ru = s->runs + 3 * r;
            const uint16_t *sy = t->sym + ((size_t)ru[0] << prec);
            const uint32_t *fb = t->fb + ((size_t)ru[0] << prec);
            size_t c0 = (size_t)ru[1], len = (size_t)(ru[2] - ru[1]), n = nrg * len;
            size_t ri = 0, cj = 0; /* where the next decoded symbol goes: row rg[ri], column c0 + cj */
            for (size_t k0 = 0; k0 < n; k0 += STAGE) {
                size_t m = n - k0 < STAGE ? n - k0 : STAGE;
                dec_run(L, sy, fb, prec, buf, m);
                for (size_t used = 0; used < m;) {
                    size_t take = len - cj < m - used ? len - cj : m - used;
                    size_t base = rg[ri] * cols;
                    if (s->order)
                        put(out, out_kind, base, s->order + c0 + cj, buf + used, take, offset, shift);
                    else
                        put(out, out_kind, base + c0 + cj, NULL, buf + used, take, offset, shift);
                    used += take;
                    cj += take;
                    if (cj == len)
                        cj = 0, ri++;
                }
            }
            if (L->short_read) {
                st = ECNN_RANS_SHORT;
                break;
            }
        }
    }
    free(first);
    free(rows);
    return st;
}

static int close_chunk(const lanes_t *L)
{
    if (L->short_read)
        return ECNN_RANS_SHORT;
    for (size_t l = 0; l < L->n; l++)
        if (L->p[l] != L->end[l] || L->x[l] != ECNN_RANS_LOW)
            return ECNN_RANS_LEFTOVER;
    return ECNN_RANS_OK;
}

int ecnn_rans_decode_blocks(const ecnn_rans_tables *t, const ecnn_rans_chunk *c, const ecnn_rans_sched *s,
                            int64_t offset, unsigned shift, void *out, int out_kind)
{
    lanes_t L;
    int st = open_chunk(&L, t, c, s, shift);
    if (!st)
        st = blocks_body(&L, t, s, offset, shift, out, out_kind);
    return st ? st : close_chunk(&L);
}

/* One symbol of the next lane with the table sy/fb. */
static inline uint32_t dec_next(lanes_t *L, const uint16_t *sy, const uint32_t *fb, unsigned prec, uint32_t *bad)
{
    size_t j = L->next;
    uint32_t sym = dec1(&L->x[j], &L->p[j], L->end[j], sy, fb, prec, ((uint32_t)1 << prec) - 1, bad);
    L->next = j + 1 == L->n ? 0 : j + 1;
    return sym;
}

/* The positions of the non-zero elements of sign class g's columns cg[0..ncg-1], in row-major order, into
 * pos; their number into n. Branch-free: every position is written, and kept if its element is non-zero. */
#define CLASS_NONZERO(T)                                                                           \
    do {                                                                                           \
        const T *o = (const T *)out;                                                               \
        size_t k = 0;                                                                              \
        for (size_t i = 0; i < s->nr; i++) {                                                       \
            const T *row = o + i * cols;                                                           \
            uint32_t base = (uint32_t)(i * cols);                                                  \
            for (size_t q = 0; q < ncg; q++) {                                                     \
                pos[k] = base + (uint32_t)cg[q];                                                   \
                k += row[cg[q]] != 0;                                                              \
            }                                                                                      \
        }                                                                                          \
        n = k;                                                                                     \
    } while (0)

/* Negate the elements at = pos[0..m-1] whose sign bit (bit k of the quad k / 4, or single k) is 0. */
#define APPLY_SIGNS(T)                                                                             \
    do {                                                                                           \
        T *o = (T *)out;                                                                           \
        for (size_t k = 0; k < m; k++) {                                                           \
            uint32_t positive = quad ? (buf[k >> 2] >> (k & 3)) & 1u : buf[k];                    \
            T v_ = o[at[k]];                                                                       \
            o[at[k]] = positive ? v_ : (T)(0 - (uint64_t)v_);                                      \
        }                                                                                          \
    } while (0)

static void apply_signs(void *out, int kind, const uint32_t *at, const uint16_t *buf, size_t m, int quad)
{
    switch (kind) {
    case ECNN_RANS_I8: APPLY_SIGNS(int8_t); break;
    case ECNN_RANS_I16: APPLY_SIGNS(int16_t); break;
    case ECNN_RANS_I32: APPLY_SIGNS(int32_t); break;
    default: APPLY_SIGNS(int64_t); break;
    }
}

int ecnn_rans_decode_rowcol(const ecnn_rans_tables *t, const ecnn_rans_tables *quads, const ecnn_rans_tables *signs,
                            const ecnn_rans_chunk *c, const ecnn_rans_sched *s, const int64_t *scols,
                            const int64_t *sstart, size_t nsc, int64_t offset, void *out, int out_kind)
{
    lanes_t L;
    int st = open_chunk(&L, t, c, s, 0);
    if (st)
        return st;
    if (nsc) {
        if (out_kind == ECNN_RANS_U8 || out_kind == ECNN_RANS_U16 || out_kind == ECNN_RANS_U32 ||
            out_kind == ECNN_RANS_U64 || !quads || !signs || quads->ntab < nsc || signs->ntab < nsc ||
            quads->nsym != 16 || signs->nsym != 2 || offset)
            return ECNN_RANS_BAD_LAYOUT;
        st = check_sign_classes(scols, sstart, nsc, s->cols);
        if (st)
            return st;
    }
    st = blocks_body(&L, t, s, offset, 0, out, out_kind);
    if (st)
        return st;
    /* Section 5.6.5 step 2: class by class, the non-zero magnitudes in row-major order, four signs per
     * quad symbol (decoded STAGE at a time as runs of one table), then the last n mod 4 one by one. */
    if (!nsc)
        return close_chunk(&L);
    size_t cols = s->cols, total = s->nr * cols;
    unsigned prec = t->precision;
    if (quads->precision != prec || signs->precision != prec || total > UINT32_MAX)
        return ECNN_RANS_BAD_LAYOUT;
    uint32_t *pos = (uint32_t *)malloc((total ? total : 1) * sizeof *pos);
    if (!pos)
        return ECNN_RANS_NOMEM;
    uint16_t buf[STAGE];
    uint32_t bad = 0;
    for (size_t g = 0; g < nsc; g++) {
        const uint16_t *qsy = quads->sym + (g << prec), *ssy = signs->sym + (g << prec);
        const uint32_t *qfb = quads->fb + (g << prec), *sfb = signs->fb + (g << prec);
        const int64_t *cg = scols + sstart[g];
        size_t ncg = (size_t)(sstart[g + 1] - sstart[g]), n;
        switch (out_kind) {
        case ECNN_RANS_I8: CLASS_NONZERO(int8_t); break;
        case ECNN_RANS_I16: CLASS_NONZERO(int16_t); break;
        case ECNN_RANS_I32: CLASS_NONZERO(int32_t); break;
        default: CLASS_NONZERO(int64_t); break;
        }
        size_t nq = n / 4;
        for (size_t k0 = 0; k0 < nq; k0 += STAGE) {
            size_t m = nq - k0 < STAGE ? nq - k0 : STAGE;
            dec_run(&L, qsy, qfb, prec, buf, m);
            apply_signs(out, out_kind, pos + 4 * k0, buf, 4 * m, 1);
        }
        for (size_t j = 0; j < n % 4; j++)
            buf[j] = (uint16_t)dec_next(&L, ssy, sfb, prec, &bad);
        apply_signs(out, out_kind, pos + 4 * nq, buf, n % 4, 0);
        if (bad || L.short_read) {
            free(pos);
            return ECNN_RANS_SHORT;
        }
    }
    free(pos);
    return close_chunk(&L);
}


#define COPY_RUN(T)                                                            \
    do {                                                                       \
        const T *row = (const T *)mag + i * cols + c0;                         \
        for (size_t c = 0; c < len; c++)                                       \
            syms[k + c] = (int32_t)row[c];                                     \
    } while (0)

/* The signs (1 positive) of class g's non-zero values in row-major order into bits; their number into n.
 * Branch-free: every element's sign is written, and kept if it is non-zero. */
#define GATHER_SIGNS(T)                                                                  \
    do {                                                                                 \
        const T *v_ = (const T *)vals;                                                   \
        size_t m_ = 0;                                                                   \
        for (size_t i = 0; i < nr; i++) {                                                \
            const T *row = v_ + i * cols;                                                \
            if (ncg == cols) {                                                           \
                for (size_t q = 0; q < cols; q++) {                                      \
                    bits[m_] = (uint8_t)(row[q] > 0);                                    \
                    m_ += row[q] != 0;                                                   \
                }                                                                        \
            } else {                                                                     \
                for (size_t q = 0; q < ncg; q++) {                                       \
                    T x = row[cg[q]];                                                    \
                    bits[m_] = (uint8_t)(x > 0);                                         \
                    m_ += x != 0;                                                        \
                }                                                                        \
            }                                                                            \
        }                                                                                \
        n = m_;                                                                          \
    } while (0)

int ecnn_rans_chunk_order(const void *mag, int mag_kind, const ecnn_rans_sched *s, const void *vals, int val_kind,
                          const int64_t *scols, const int64_t *sstart, size_t nsc, size_t ntab, int32_t *syms,
                          int32_t *tabs, size_t cap, size_t *count)
{
    size_t nr = s->nr, cols = s->cols, k = 0;
    if (mag_kind != ECNN_RANS_U8 && mag_kind != ECNN_RANS_U16 && mag_kind != ECNN_RANS_I32)
        return ECNN_RANS_BAD_LAYOUT;
    if (cap < nr * cols || check_sched(s, SIZE_MAX)) /* table indices are checked when the symbols are coded */
        return ECNN_RANS_BAD_LAYOUT;
    if (nsc && vals && check_sign_classes(scols, sstart, nsc, cols))
        return ECNN_RANS_BAD_LAYOUT;
    size_t *first = NULL, *rows = NULL;
    uint8_t *bits = NULL;
    int st = rows_by_class(s, &first, &rows);
    if (st)
        return st;
    if (nsc && vals && !(bits = (uint8_t *)malloc(nr * cols + 1))) {
        st = ECNN_RANS_NOMEM;
        goto done;
    }
    for (size_t g = 0; g < s->nrc; g++) {
        const size_t *rg = rows + first[g], nrg = first[g + 1] - first[g];
        for (int64_t r = s->run_start[g]; r < s->run_start[g + 1]; r++) {
            const int32_t *ru = s->runs + 3 * r;
            size_t c0 = (size_t)ru[1], len = (size_t)(ru[2] - ru[1]);
            if (cap - k < len * nrg) {
                st = ECNN_RANS_BAD_LAYOUT;
                goto done;
            }
            for (size_t j = 0; j < nrg; j++) {
                size_t i = rg[j];
                if (mag_kind == ECNN_RANS_U8)
                    COPY_RUN(uint8_t);
                else if (mag_kind == ECNN_RANS_U16)
                    COPY_RUN(uint16_t);
                else
                    COPY_RUN(int32_t);
                for (size_t c = 0; c < len; c++)
                    tabs[k + c] = ru[0];
                k += len;
            }
        }
    }
    if (nsc && vals) {
        if (cap - k < (nr * cols) / 4 + 3 * nsc) {
            st = ECNN_RANS_BAD_LAYOUT;
            goto done;
        }
        for (size_t g = 0; g < nsc; g++) {
            const int64_t *cg = scols + sstart[g];
            size_t ncg = (size_t)(sstart[g + 1] - sstart[g]), n = 0;
            switch (val_kind) {
            case ECNN_RANS_I8: GATHER_SIGNS(int8_t); break;
            case ECNN_RANS_I16: GATHER_SIGNS(int16_t); break;
            case ECNN_RANS_I32: GATHER_SIGNS(int32_t); break;
            case ECNN_RANS_I64: GATHER_SIGNS(int64_t); break;
            default: st = ECNN_RANS_BAD_LAYOUT; goto done;
            }
            size_t nq = n / 4;
            for (size_t j = 0; j < nq; j++) {
                const uint8_t *b4 = bits + 4 * j;
                syms[k + j] = (int32_t)(b4[0] | b4[1] << 1 | b4[2] << 2 | b4[3] << 3);
                tabs[k + j] = (int32_t)(ntab + g);
            }
            k += nq;
            for (size_t j = 4 * nq; j < n; j++, k++) {
                syms[k] = bits[j];
                tabs[k] = (int32_t)(ntab + nsc + g);
            }
        }
    }
done:
    free(bits);
    free(rows);
    free(first);
    if (st)
        return st;
    *count = k;
    return ECNN_RANS_OK;
}

int ecnn_rans_encode(const uint32_t *cum, size_t ntab, size_t nsym, unsigned precision, const int32_t *syms,
                     const int32_t *tab, size_t count, size_t lanes, unsigned char *out, size_t *len, uint64_t *words)
{
    if (lanes == 0 || lanes > ECNN_RANS_MAX_LANES || precision < ECNN_RANS_MIN_PRECISION ||
        precision > ECNN_RANS_MAX_PRECISION)
        return ECNN_RANS_BAD_LAYOUT;
    /* Lane l codes the symbols k = l, l + L, ...; its words are written backwards into its own
     * region of a scratch buffer (at most one word per symbol), then copied out in decoding order. */
    size_t per = count / lanes + 1;
    uint16_t *scratch = (uint16_t *)malloc(lanes * per * sizeof(uint16_t));
    if (!scratch)
        return ECNN_RANS_NOMEM;
    uint32_t xs[ECNN_RANS_MAX_LANES];
    size_t nw[ECNN_RANS_MAX_LANES];
    for (size_t l = 0; l < lanes; l++) {
        xs[l] = ECNN_RANS_LOW;
        nw[l] = 0;
    }
    int status = ECNN_RANS_OK;
    size_t l = count % lanes; /* the lane of symbol k, counted down with k */
    for (size_t k = count; k-- > 0;) {
        l = l ? l - 1 : lanes - 1;
        int32_t tk = tab[k], sk = syms[k];
        if (tk < 0 || (size_t)tk >= ntab || sk < 0 || (size_t)sk >= nsym) {
            status = ECNN_RANS_BAD_SYMBOL;
            break;
        }
        const uint32_t *c = cum + (size_t)tk * (nsym + 1);
        uint32_t start = c[sk], f = c[sk + 1] - c[sk];
        if (f == 0) {
            status = ECNN_RANS_BAD_SYMBOL;
            break;
        }
        uint32_t x = xs[l];
        uint32_t xmax = (uint32_t)((((uint64_t)ECNN_RANS_LOW >> precision) << 16) * f - 1);
        /* Renormalize without a branch: the low word is stored in the lane's next slot either way, and
         * kept (the slot taken) only when x is too large. The slot exists: a lane has at most per
         * symbols, and this one's word is at most its (nw + 1)-th. */
        uint32_t big = x > xmax;
        scratch[l * per + per - 1 - nw[l]] = (uint16_t)x;
        nw[l] += big;
        x >>= big << 4;
        xs[l] = ((x / f) << precision) + (x % f) + start;
    }
    if (status == ECNN_RANS_OK) {
        size_t pos = 0;
        for (size_t l = 0; l < lanes; l++) {
            uint32_t x = xs[l];
            out[pos] = (unsigned char)x;
            out[pos + 1] = (unsigned char)(x >> 8);
            out[pos + 2] = (unsigned char)(x >> 16);
            out[pos + 3] = (unsigned char)(x >> 24);
            pos += 4;
            const uint16_t *w = scratch + l * per + per - nw[l];
            for (size_t j = 0; j < nw[l]; j++) {
                out[pos++] = (unsigned char)w[j];
                out[pos++] = (unsigned char)(w[j] >> 8);
            }
            words[l] = nw[l];
        }
        *len = pos;
    }
    free(scratch);
    return status;
}
