/* Histograms and table choices for the encoder's model search (see hist.h). */
#include "hist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* n log2 n for the counts below XLOGX_SIZE, filled by ecnn_hist_init. */
#define XLOGX_SIZE (1 << 16)
static double xlogx_table[XLOGX_SIZE];

/* The counts of the log codes 1..top of each mantissa width m = 0..MAX_M (section 7.1), filled by ecnn_hist_init. */
#define MAX_M 4
#define MAX_CODES 300
static int64_t code_count[MAX_M + 1][MAX_CODES + 1]; /* [m][e], e = 1..code_top[m] */
static int code_top[MAX_M + 1];
/* log2 of the integers below LOG2_SIZE, filled by ecnn_hist_init: the rare symbols' frequencies. */
#define LOG2_SIZE (1 << 12)
static double log2_table[LOG2_SIZE];
static int ready;

static int64_t count_of_code(int64_t e, int m)
{
    int64_t em1 = e - 1;
    return (((int64_t)1 << m) + (em1 & (((int64_t)1 << m) - 1))) << (em1 >> m);
}

void ecnn_hist_init(void)
{
    if (ready)
        return;
    for (int i = 0; i < XLOGX_SIZE; i++)
        xlogx_table[i] = i > 1 ? (double)i * log2((double)i) : 0.0;
    for (int i = 1; i < LOG2_SIZE; i++)
        log2_table[i] = log2((double)i);
    for (int m = 0; m <= MAX_M; m++) {
        int e = 1;
        while (e < MAX_CODES && count_of_code(e + 1, m) <= ECNN_HIST_MAX_COUNT)
            e++;
        code_top[m] = e;
        for (int k = 1; k <= e; k++)
            code_count[m][k] = count_of_code(k, m);
    }
    ready = 1;
}

static inline double xlogx(int64_t h)
{
    return h < XLOGX_SIZE ? xlogx_table[h] : (double)h * log2((double)h);
}

#define COUNTS_LOOP(T, S)                                                             \
    do {                                                                              \
        const T *p = (const T *)v;                                                    \
        for (size_t j = 0; j < count; j++) {                                          \
            if ((S)p[j] < (S)lo)                                                      \
                return ECNN_HIST_RANGE;                                               \
            uint64_t i = (uint64_t)p[j] - (uint64_t)lo;                               \
            if (i >= nsym)                                                            \
                return ECNN_HIST_RANGE;                                               \
            hist[i]++;                                                                \
        }                                                                             \
    } while (0)

int ecnn_hist_counts(const void *v, int kind, size_t count, int64_t lo, size_t nsym, int64_t *hist)
{
    switch (kind) {
    case ECNN_HIST_U8: if (lo < 0) return ECNN_HIST_RANGE; COUNTS_LOOP(uint8_t, uint64_t); break;
    case ECNN_HIST_U16: if (lo < 0) return ECNN_HIST_RANGE; COUNTS_LOOP(uint16_t, uint64_t); break;
    case ECNN_HIST_U32: if (lo < 0) return ECNN_HIST_RANGE; COUNTS_LOOP(uint32_t, uint64_t); break;
    case ECNN_HIST_U64: if (lo < 0) return ECNN_HIST_RANGE; COUNTS_LOOP(uint64_t, uint64_t); break;
    case ECNN_HIST_I8: COUNTS_LOOP(int8_t, int64_t); break;
    case ECNN_HIST_I16: COUNTS_LOOP(int16_t, int64_t); break;
    case ECNN_HIST_I32: COUNTS_LOOP(int32_t, int64_t); break;
    case ECNN_HIST_I64: COUNTS_LOOP(int64_t, int64_t); break;
    default: return ECNN_HIST_SHAPE;
    }
    return ECNN_HIST_OK;
}

#define AXIS_LOOP(T)                                                   \
    do {                                                               \
        for (size_t i = 0; i < rows; i++) {                            \
            const T *p = (const T *)sym + i * row_stride;              \
            int64_t s = 0;                                             \
            for (size_t j = 0; j < cols; j++) {                        \
                s += p[j];                                             \
                col_sums[j] += p[j];                                   \
            }                                                          \
            row_sums[i] = s;                                           \
        }                                                              \
    } while (0)

int ecnn_hist_axis_sums(const void *sym, int kind, size_t rows, size_t cols, size_t row_stride, int64_t *row_sums,
                        int64_t *col_sums)
{
    if (rows > ((size_t)1 << 32) || cols > ((size_t)1 << 32) || (rows > 1 && row_stride < cols))
        return ECNN_HIST_SHAPE;
    memset(col_sums, 0, cols * sizeof *col_sums);
    switch (kind) {
    case ECNN_HIST_U8: AXIS_LOOP(uint8_t); break;
    case ECNN_HIST_U16: AXIS_LOOP(uint16_t); break;
    case ECNN_HIST_I32: AXIS_LOOP(int32_t); break;
    default: return ECNN_HIST_SHAPE;
    }
    return ECNN_HIST_OK;
}

/* Counts of 32 bits (where they cannot overflow), four symbols a step with one range check for the four. */
#define CONTEXT32_LOOP(T)                                                                              \
    do {                                                                                               \
        for (size_t i = 0; i < rows && st == ECNN_HIST_OK; i++) {                                      \
            const T *p = (const T *)sym + i * row_stride;                                              \
            uint32_t *h = h32 + (size_t)rclass[i] * nsym;                                              \
            size_t j = 0;                                                                              \
            for (; j + 4 <= cols; j += 4) {                                                            \
                uint32_t a = (uint32_t)p[j], b = (uint32_t)p[j + 1], c = (uint32_t)p[j + 2], d = (uint32_t)p[j + 3]; \
                if (a >= nsym || b >= nsym || c >= nsym || d >= nsym) {                                \
                    st = ECNN_HIST_RANGE;                                                              \
                    break;                                                                             \
                }                                                                                      \
                h[coff[j] + a]++;                                                                      \
                h[coff[j + 1] + b]++;                                                                  \
                h[coff[j + 2] + c]++;                                                                  \
                h[coff[j + 3] + d]++;                                                                  \
            }                                                                                          \
            for (; j < cols && st == ECNN_HIST_OK; j++) {                                              \
                uint32_t v = (uint32_t)p[j];                                                           \
                if (v >= nsym)                                                                         \
                    st = ECNN_HIST_RANGE;                                                              \
                else                                                                                   \
                    h[coff[j] + v]++;                                                                  \
            }                                                                                          \
        }                                                                                              \
    } while (0)

#define CONTEXT64_LOOP(T)                                                                              \
    do {                                                                                               \
        for (size_t i = 0; i < rows && st == ECNN_HIST_OK; i++) {                                      \
            const T *p = (const T *)sym + i * row_stride;                                              \
            int64_t *h = hist + (size_t)rclass[i] * nsym;                                              \
            for (size_t j = 0; j < cols; j++) {                                                        \
                uint32_t v = (uint32_t)p[j];                                                           \
                if (v >= nsym) {                                                                       \
                    st = ECNN_HIST_RANGE;                                                              \
                    break;                                                                             \
                }                                                                                      \
                h[coff[j] + v]++;                                                                      \
            }                                                                                          \
        }                                                                                              \
    } while (0)

int ecnn_hist_context(const void *sym, int kind, size_t rows, size_t cols, size_t row_stride, const int64_t *rclass,
                      const int64_t *cclass, size_t nsym, size_t nctx, int64_t *hist)
{
    if (nsym == 0 || nctx == 0 || nsym > SIZE_MAX / nctx || (rows > 1 && row_stride < cols) ||
        (kind != ECNN_HIST_U8 && kind != ECNN_HIST_U16 && kind != ECNN_HIST_I32))
        return ECNN_HIST_SHAPE;
    if (rows == 0 || cols == 0)
        return ECNN_HIST_OK;
    int64_t rmax = 0, cmax = 0;
    for (size_t i = 0; i < rows; i++) {
        if (rclass[i] < 0 || (uint64_t)rclass[i] >= nctx)
            return ECNN_HIST_RANGE;
        rmax = rclass[i] > rmax ? rclass[i] : rmax;
    }
    for (size_t j = 0; j < cols; j++) {
        if (cclass[j] < 0 || (uint64_t)cclass[j] >= nctx)
            return ECNN_HIST_RANGE;
        cmax = cclass[j] > cmax ? cclass[j] : cmax;
    }
    if ((uint64_t)(rmax + cmax) >= nctx)
        return ECNN_HIST_RANGE;
    size_t *coff = malloc(cols * sizeof *coff);
    if (!coff)
        return ECNN_HIST_NOMEM;
    for (size_t j = 0; j < cols; j++)
        coff[j] = (size_t)cclass[j] * nsym;
    int st = ECNN_HIST_OK;
    /* 32-bit counts (half the cache lines) where they cannot overflow and take a few MiB at most. */
    uint32_t *h32 = NULL;
    if (rows < ((size_t)1 << 32) / cols && nctx * nsym <= ((size_t)1 << 20))
        h32 = calloc(nctx * nsym, sizeof *h32);
    if (h32) {
        switch (kind) {
        case ECNN_HIST_U8: CONTEXT32_LOOP(uint8_t); break;
        case ECNN_HIST_U16: CONTEXT32_LOOP(uint16_t); break;
        default: CONTEXT32_LOOP(int32_t); break;
        }
        for (size_t i = 0; i < nctx * nsym; i++) /* added even after a symbol out of range: a partial count */
            hist[i] += h32[i];
        free(h32);
    } else {
        switch (kind) {
        case ECNN_HIST_U8: CONTEXT64_LOOP(uint8_t); break;
        case ECNN_HIST_U16: CONTEXT64_LOOP(uint16_t); break;
        default: CONTEXT64_LOOP(int32_t); break;
        }
    }
    free(coff);
    return st;
}

int ecnn_hist_entropy(const int64_t *hist, size_t k, size_t nsym, double *bits)
{
    double total = 0.0;
    for (size_t c = 0; c < k; c++) {
        const int64_t *h = hist + c * nsym;
        int64_t n = 0;
        double sx = 0.0;
        for (size_t s = 0; s < nsym; s++) {
            if (h[s] < 0 || h[s] > ((int64_t)1 << 52) || n > ((int64_t)1 << 52))
                return ECNN_HIST_RANGE;
            n += h[s];
            sx += xlogx(h[s]);
        }
        total += xlogx(n) - sx;
    }
    *bits = total;
    return ECNN_HIST_OK;
}

/* The least integer c with c * scale >= 127.5 in binary64, for a scale in (0, 1]: a count scaled to a total
 * of about 1024 takes two varint bytes from there on (rint(x) >= 128 exactly when x >= 127.5). */
static int64_t least_count(double scale)
{
    int64_t c = (int64_t)ceil(127.5 / scale);
    for (int k = 0; k < 2; k++) { /* the quotient's rounding puts the first guess at most a step off */
        if ((double)(c - 1) * scale >= 127.5)
            c--;
        if ((double)c * scale < 127.5)
            c++;
    }
    return c;
}

/* The entropy term of one table for the contexts whose counts are hb - ha (u symbols, ng in all, each
 * standing for weight): n log2 n - sum_s wH_s log2 wH_s with n = w * ng, where
 * sum_s wH_s log2 wH_s = w * sum_s H_s log2 H_s + n log2 w; and in *big the H_s whose w * H_s scaled to a
 * total of about 1024 take two varint bytes. */
static double segment(const int64_t *ha, const int64_t *hb, size_t u, int64_t ng, int64_t weight, double w, double lw,
                      int64_t *big)
{
    int64_t n = ng * weight;
    double nd = (double)n;
    double scale = n > 1024 ? 1024.0 / nd : 1.0;
    int64_t lc = least_count(scale);
    int64_t lg = (lc + weight - 1) / weight; /* w * H >= lc exactly when H >= lg */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0; /* four sums: no one waits on the last addition */
    int64_t nb = 0;
    size_t i = 0;
    for (; i + 4 <= u; i += 4) {
        int64_t h0 = hb[i] - ha[i], h1 = hb[i + 1] - ha[i + 1], h2 = hb[i + 2] - ha[i + 2], h3 = hb[i + 3] - ha[i + 3];
        s0 += xlogx(h0);
        s1 += xlogx(h1);
        s2 += xlogx(h2);
        s3 += xlogx(h3);
        nb += (h0 >= lg) + (h1 >= lg) + (h2 >= lg) + (h3 >= lg);
    }
    for (; i < u; i++) {
        int64_t h = hb[i] - ha[i];
        s0 += xlogx(h);
        nb += h >= lg;
    }
    *big = nb;
    double sx = (s0 + s1) + (s2 + s3);
    return (n > 1 ? nd * log2(nd) : 0.0) - (w * sx + nd * lw);
}

int ecnn_hist_merge(const int64_t *hist, size_t k, size_t nsym, int64_t weight, int64_t *table_of)
{
    if (k == 0)
        return ECNN_HIST_OK;
    if (nsym == 0 || weight < 1 || k > ((size_t)1 << 20) || nsym > ((size_t)1 << 30))
        return ECNN_HIST_SHAPE;
    /* Symbols that occur nowhere add nothing to any cost: the sums run over the others only. */
    int64_t *total = calloc(nsym, sizeof *total);
    size_t *used = malloc(nsym * sizeof *used);
    if (!total || !used) {
        free(total);
        free(used);
        return ECNN_HIST_NOMEM;
    }
    int64_t all = 0;
    int st = ECNN_HIST_OK;
    for (size_t c = 0; c < k && st == ECNN_HIST_OK; c++)
        for (size_t s = 0; s < nsym; s++) {
            int64_t h = hist[c * nsym + s];
            if (h < 0 || h > ((int64_t)1 << 52) || all > ((int64_t)1 << 52)) {
                st = ECNN_HIST_RANGE;
                break;
            }
            total[s] += h;
            all += h;
        }
    if (st == ECNN_HIST_OK && all > INT64_MAX / 4 / weight)
        st = ECNN_HIST_RANGE;
    size_t u = 0;
    for (size_t s = 0; s < nsym; s++)
        if (total[s] > 0)
            used[u++] = s;
    free(total);
    int64_t *cum = NULL, *ncum = NULL;
    double *best = NULL, *esep = NULL, *pg = NULL;
    size_t *back = NULL;
    if (st == ECNN_HIST_OK) {
        cum = malloc((k + 1) * (u ? u : 1) * sizeof *cum);
        ncum = malloc((k + 1) * sizeof *ncum);
        best = malloc((k + 1) * sizeof *best);
        esep = malloc((k + 1) * sizeof *esep);
        pg = malloc((k + 1) * sizeof *pg);
        back = malloc((k + 1) * sizeof *back);
        if (!cum || !ncum || !best || !esep || !pg || !back)
            st = ECNN_HIST_NOMEM;
    }
    if (st == ECNN_HIST_OK) {
        /* cum[c] = counts of contexts 0..c-1, over the used symbols; ncum[c] their total. */
        memset(cum, 0, u * sizeof *cum);
        ncum[0] = 0;
        for (size_t c = 0; c < k; c++) {
            int64_t n = 0;
            for (size_t i = 0; i < u; i++) {
                int64_t h = hist[c * nsym + used[i]];
                cum[(c + 1) * u + i] = cum[c * u + i] + h;
                n += h;
            }
            ncum[c + 1] = ncum[c] + n;
        }
        /* The cost of one table for contexts a..b-1 (section 11.4, step 3):
         *   1.01 * segment(a, b) + 8 * (nsym + big) + 8,
         * and best[b] the least cost of tables for contexts 0..b-1, from the table that ends them. */
        double w = (double)weight, lw = weight > 1 ? log2(w) : 0.0;
        const double one = 8.0 * (double)nsym + 8.0; /* the least a table costs beyond its entropy term */
        int64_t big;
        esep[0] = 0.0; /* esep[c]: the entropy terms of contexts 0..c-1, each alone */
        for (size_t c = 0; c < k; c++)
            esep[c + 1] = esep[c] + segment(cum + c * u, cum + (c + 1) * u, u, ncum[c + 1] - ncum[c], weight, w, lw, &big);
        best[0] = 0.0;
        back[0] = 0;
        for (size_t b = 1; b <= k; b++) {
            const int64_t *hb = cum + b * u;
            if (b > 1) { /* pg[a] = min over 1 <= a' <= a of best[a'] - 1.01 esep[a'] */
                double g = best[b - 1] - 1.01 * esep[b - 1];
                pg[b - 1] = b > 2 && pg[b - 2] < g ? pg[b - 2] : g;
            }
            double bv = INFINITY;
            size_t ba = 0;
            /* The last table starts at a = b-1, b-2, ... The entropy term of a..b-1 is that of its contexts
             * alone plus a loss that only grows as a falls (merging never lowers it), so a table from any
             * a' < a, after tables for 0..a'-1, costs at least
             *   1.01 * esep[b] + min(best[a'] - 1.01 esep[a']) + 1.01 * loss(a..b-1) + one   (a' >= 1):
             * once that exceeds the cheapest cost so far, only a' = 0 (one table for all) is left to try.
             * Going down, "<=" keeps the first of equal costs. */
            for (size_t a = b - 1;; a--) {
                const int64_t *ha = cum + a * u;
                double ent = segment(ha, hb, u, ncum[b] - ncum[a], weight, w, lw, &big);
                double cost = best[a] + (ent * 1.01 + 8.0 * (double)((int64_t)nsym + big) + 8.0);
                if (cost <= bv) {
                    bv = cost;
                    ba = a;
                }
                if (a == 0)
                    break;
                if (a >= 2) {
                    double loss = ent - (esep[b] - esep[a]);
                    double least = 1.01 * esep[b] + pg[a - 1] + 1.01 * loss + one;
                    if (least > bv + 1e-9 * fabs(bv) + 1e-6) /* room for the rounding of the sums */
                        a = 1;                              /* then a = 0 */
                }
            }
            best[b] = bv;
            back[b] = ba;
        }
        /* The tables' first contexts, back from the end; then every context's table. */
        size_t ntab = 0;
        for (size_t b = k; b > 0; b = back[b])
            ntab++;
        size_t t = ntab, end = k;
        for (size_t b = k; b > 0; b = back[b]) {
            t--;
            for (size_t c = back[b]; c < end; c++)
                table_of[c] = (int64_t)t;
            end = back[b];
        }
    }
    free(used);
    free(cum);
    free(ncum);
    free(best);
    free(esep);
    free(pg);
    free(back);
    return st;
}

/* --- order-0 fits (section 11.5) ------------------------------------------------------------------ */

static const int resolutions[] = {4, 6, 8, 10, 12, 14, 16, 18, 20};
#define NRES ((int)(sizeof resolutions / sizeof resolutions[0]))
#define NCAND (NRES + 3)

static int64_t varint_size(int64_t v)
{
    int64_t n = 1;
    for (uint64_t x = (uint64_t)v; x >= 128; x >>= 7)
        n++;
    return n;
}

/* Codes (section 7.1, mantissa bits m) whose counts are nearest in ratio to h * 2^m, all scaled down alike
 * if the largest would exceed the largest code's count; 0 for h = 0. */
static void log_codes(const int64_t *hist, size_t n, int m, int64_t hmax, int64_t *codes)
{
    const int top = code_top[m];
    const int64_t *cc = code_count[m];
    if (hmax <= (cc[top] >> m)) {
        /* Exact in integers: t = h * 2^m <= cc[top] < 2^32, and t sits nearer (in ratio) to the lower of
         * the counts lo < t <= hi around it when t^2 <= lo * hi (no product of two neighbours is a square,
         * so there is no tie, and binary64 logarithms decide the same). */
        for (size_t s = 0; s < n; s++) {
            int64_t h = hist[s];
            if (h == 0) {
                codes[s] = 0;
                continue;
            }
            uint64_t t = (uint64_t)h << m;
            int lo = 1, hi = top; /* the first code e with cc[e] >= t */
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if ((uint64_t)cc[mid] >= t)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            int e = lo;
            if (e > 1 && t * t <= (uint64_t)cc[e - 1] * (uint64_t)cc[e])
                e--;
            codes[s] = e;
        }
        return;
    }
    /* Scaled (counts near 2^32 / 2^m and above): in binary64 logarithms. */
    double grid[MAX_CODES];
    for (int e = 1; e <= top; e++)
        grid[e - 1] = log2((double)cc[e]);
    double over = (log2((double)hmax) + (double)m) - grid[top - 1];
    for (size_t s = 0; s < n; s++) {
        int64_t h = hist[s];
        if (h == 0) {
            codes[s] = 0;
            continue;
        }
        double t = log2((double)h) + (double)m;
        t -= over;
        int lo = 0, hi = top; /* the first index i with grid[i] >= t, top if none */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (grid[mid] >= t)
                hi = mid;
            else
                lo = mid + 1;
        }
        int i = lo < 1 ? 1 : lo > top - 1 ? top - 1 : lo;
        codes[s] = (t - grid[i - 1]) <= (grid[i] - t) ? i : i + 1;
    }
}

static int64_t log_table_bytes(const int64_t *codes, size_t n)
{
    int64_t nib = 0, prev = 0;
    for (size_t s = 0; s < n; s++) {
        int64_t d = codes[s] - prev, z = d >= 0 ? 2 * d : -2 * d - 1;
        nib += z < 15 ? 1 : 4;
        prev = codes[s];
    }
    return 2 + (nib + 1) / 2;
}

int ecnn_hist_fit(const int64_t *hist, size_t n, int64_t *counts, int64_t *codes, int *m_out, int64_t *table_bytes,
                  double *symbol_bits)
{
    if (n < 2 || n > ECNN_HIST_MAX_NSYM)
        return ECNN_HIST_SHAPE;
    int64_t total = 0, hmax = 0;
    for (size_t s = 0; s < n; s++) {
        if (hist[s] < 0 || hist[s] > ((int64_t)1 << 52) || total > ((int64_t)1 << 52))
            return ECNN_HIST_RANGE;
        total += hist[s];
        hmax = hist[s] > hmax ? hist[s] : hmax;
    }
    if (total == 0)
        return ECNN_HIST_RANGE;
    int64_t *cand = malloc((size_t)NCAND * n * sizeof *cand); /* each candidate's counts */
    int64_t *lcodes = malloc(3 * n * sizeof *lcodes);          /* the codes of m = 1, 2, 3 */
    size_t *used = malloc(n * sizeof *used);
    if (!cand || !lcodes || !used) {
        free(cand);
        free(lcodes);
        free(used);
        return ECNN_HIST_NOMEM;
    }
    int64_t bytes[NCAND];
    int mode[NCAND]; /* 0: plain counts, else the log codes' m */
    int nc = 0;
    /* Plain counts at each resolution up to the first that holds the whole total, then log codes. */
    for (int r = 0; r < NRES + 3; r++) {
        int64_t *c = cand + (size_t)nc * n, b;
        int md = 0;
        if (r < NRES) {
            int res = resolutions[r];
            if (r > 0 && total <= ((int64_t)1 << resolutions[r - 1]))
                continue; /* the previous resolution held the total already */
            if (total <= ((int64_t)1 << res)) {
                memcpy(c, hist, n * sizeof *c);
            } else {
                double f = (double)((int64_t)1 << res) / (double)total;
                for (size_t s = 0; s < n; s++) {
                    int64_t v = (int64_t)rint((double)hist[s] * f);
                    c[s] = hist[s] > 0 ? (v > 1 ? v : 1) : 0;
                }
            }
            b = 1;
            for (size_t s = 0; s < n; s++)
                b += varint_size(c[s]);
        } else {
            md = r - NRES + 1;
            int64_t *e = lcodes + (size_t)(md - 1) * n;
            log_codes(hist, n, md, hmax, e);
            for (size_t s = 0; s < n; s++)
                c[s] = e[s] ? count_of_code(e[s], md) : 0;
            b = log_table_bytes(e, n);
        }
        int dup = 0;
        for (int j = 0; j < nc && !dup; j++)
            dup = memcmp(cand + (size_t)j * n, c, n * sizeof *c) == 0;
        if (dup)
            continue;
        bytes[nc] = b;
        mode[nc] = md;
        nc++;
    }
    size_t nu = 0;
    for (size_t s = 0; s < n; s++)
        if (hist[s] > 0)
            used[nu++] = s;
    /* Each candidate's expansion (section 7.2) and the ideal code length of the symbols under it, in order
     * of table bytes: no candidate codes the symbols in fewer bits than their entropy, so one whose table
     * alone takes it past the cheapest so far is skipped (it would not be chosen). */
    double ent = (double)total * log2((double)total); /* total * (entropy in bits per symbol) */
    for (size_t i = 0; i < nu; i++)
        ent -= xlogx(hist[used[i]]);
    ent = ent * (1.0 - 1e-9) - 1.0; /* room for the rounding of the sums */
    int by_bytes[NCAND];
    for (int j = 0; j < nc; j++) { /* insertion sort, stable */
        int i = j;
        for (; i > 0 && bytes[by_bytes[i - 1]] > bytes[j]; i--)
            by_bytes[i] = by_bytes[i - 1];
        by_bytes[i] = j;
    }
    const int64_t free_ = ((int64_t)1 << ECNN_HIST_PRECISION) - (int64_t)n;
    int bestk = -1;
    double best_total = 0.0, best_bits = 0.0;
    for (int jj = 0; jj < nc; jj++) {
        int j = by_bytes[jj];
        if (bestk >= 0 && 8.0 * (double)bytes[j] + ent > best_total)
            break; /* and every later one, with as many bytes or more */
        const int64_t *c = cand + (size_t)j * n;
        int64_t ct = 0, fsum = 0;
        size_t amax = 0;
        for (size_t s = 0; s < n; s++) {
            ct += c[s];
            if (c[s] > c[amax])
                amax = s;
        }
        for (size_t s = 0; s < n; s++)
            fsum += (c[s] * free_) / ct;
        int64_t rest = free_ - fsum;
        double bits = 0.0;
        for (size_t i = 0; i < nu; i++) {
            size_t s = used[i];
            int64_t f = (c[s] * free_) / ct + (s == amax ? rest : 0) + 1;
            double lf = f < LOG2_SIZE ? log2_table[f] : log2((double)f);
            bits += (double)hist[s] * ((double)ECNN_HIST_PRECISION - lf);
        }
        double tot = 8.0 * (double)bytes[j] + bits;
        if (bestk < 0 || tot < best_total || (tot == best_total && j < bestk)) { /* the first of equal ones */
            bestk = j;
            best_total = tot;
            best_bits = bits;
        }
    }
    memcpy(counts, cand + (size_t)bestk * n, n * sizeof *counts);
    *m_out = mode[bestk];
    if (mode[bestk])
        memcpy(codes, lcodes + (size_t)(mode[bestk] - 1) * n, n * sizeof *codes);
    *table_bytes = bytes[bestk];
    *symbol_bits = best_bits;
    free(cand);
    free(lcodes);
    free(used);
    return ECNN_HIST_OK;
}

int ecnn_hist_sig(const uint8_t *z, const uint8_t *b, size_t lanes, size_t steps, size_t zstride, size_t bstride,
                  const int64_t *sc, int64_t k, size_t d1, size_t d2, int64_t *hist, size_t nh)
{
    if (k < 1)
        return ECNN_HIST_RANGE;
    for (size_t t = 0; t < steps; t++)
        if (sc[t] < 0 || sc[t] >= k)
            return ECNN_HIST_RANGE;
    for (size_t i = 0; i < lanes; i++) {
        const uint8_t *zr = z + i * zstride, *br = b + i * bstride;
        for (size_t t = 0; t < steps; t++) {
            uint64_t x = (uint64_t)br[t] * (uint64_t)k + (uint64_t)sc[t];
            if (d1)
                x = 2 * x + (t >= d1 ? zr[t - d1] : 0u);
            if (d2)
                x = 2 * x + (t >= d2 ? zr[t - d2] : 0u);
            x = 2 * x + zr[t];
            if (x >= nh)
                return ECNN_HIST_RANGE;
            hist[x]++;
        }
    }
    return ECNN_HIST_OK;
}

int ecnn_hist_prev_sign(const int32_t *v, size_t rows, size_t cols, size_t row_stride, uint8_t *out)
{
    for (size_t i = 0; i < rows; i++) {
        const int32_t *r = v + i * row_stride;
        uint8_t *o = out + i * cols, last = 0;
        for (size_t t = 0; t < cols; t++) {
            o[t] = last;
            int32_t x = r[t];
            last = x < 0 ? 1 : x > 0 ? 2 : last;
        }
    }
    return ECNN_HIST_OK;
}
