/* Histograms and table choices for the encoder's model search (spec/CODING.md, sections 11.4 and 11.5).
 *
 * Plain C11, no Python. These functions count symbols, fit order-0 tables and merge contexts into
 * tables; they shape no bitstream by themselves except through the tables a fit returns, whose counts
 * come from integer arithmetic and correctly rounded binary64 products only. Costs are estimates in
 * binary64 (with log2), used to choose.
 *
 * Call ecnn_hist_init() once before any other function (it fills a table of n log2 n). */
#ifndef ECNN_HIST_H
#define ECNN_HIST_H

#include <stddef.h>
#include <stdint.h>

enum {
    ECNN_HIST_OK = 0,
    ECNN_HIST_RANGE = -1,  /* a symbol, class or count outside its allowed range */
    ECNN_HIST_NOMEM = -2,  /* an allocation failed */
    ECNN_HIST_SHAPE = -3,  /* sizes the function cannot take */
};

#define ECNN_HIST_PRECISION 24
#define ECNN_HIST_MAX_NSYM (1 << 20)
#define ECNN_HIST_MAX_COUNT 4294967295LL /* 2^32 - 1: the largest stored count */

void ecnn_hist_init(void);

/* Kinds of integer arrays: the width in bytes, negative for signed types. */
enum { ECNN_HIST_U8 = 1, ECNN_HIST_U16 = 2, ECNN_HIST_U32 = 4, ECNN_HIST_U64 = 8,
       ECNN_HIST_I8 = -1, ECNN_HIST_I16 = -2, ECNN_HIST_I32 = -4, ECNN_HIST_I64 = -8 };

/* hist[v[j] - lo] += 1 for the count integers v of the given kind, hist holding nsym counts.
 * ECNN_HIST_RANGE for a value outside lo..lo + nsym - 1 (hist then holds a partial count). */
int ecnn_hist_counts(const void *v, int kind, size_t count, int64_t lo, size_t nsym, int64_t *hist);

/* Row and column sums of a rows x cols array of uint8, uint16 or int32 (kind ECNN_HIST_U8, _U16 or _I32)
 * whose rows start row_stride elements apart. */
int ecnn_hist_axis_sums(const void *sym, int kind, size_t rows, size_t cols, size_t row_stride, int64_t *row_sums,
                        int64_t *col_sums);

/* hist[(rclass[i] + cclass[j]) * nsym + sym[i, j]] += 1 for every element of an array as above, hist
 * holding nctx * nsym counts. ECNN_HIST_RANGE, before counting anything, for a class pair outside
 * 0..nctx-1 or a negative class; after, for a symbol outside 0..nsym-1 (hist then holds a partial count). */
int ecnn_hist_context(const void *sym, int kind, size_t rows, size_t cols, size_t row_stride, const int64_t *rclass,
                      const int64_t *cclass, size_t nsym, size_t nctx, int64_t *hist);

/* The significance histogram of a lanes model (section 5.6.2, "Contexts") over a lanes x steps map z (0/1)
 * with density buckets b (both uint8, rows zstride and bstride apart): the context of element (i, t) is
 * x = b[i, t] * k + sc[t], then for d = d1 and d = d2 where non-zero x = 2x + z[i, t - d] (0 before step d);
 * hist[2x + z[i, t]] += 1. ECNN_HIST_RANGE for a step class outside 0..k-1 (before counting), or an index
 * at or past nh (hist then holds a partial count). */
int ecnn_hist_sig(const uint8_t *z, const uint8_t *b, size_t lanes, size_t steps, size_t zstride, size_t bstride,
                  const int64_t *sc, int64_t k, size_t d1, size_t d2, int64_t *hist, size_t nh);

/* The value context of a lanes model (section 5.6.2): for each element of a rows x cols array of int32 values
 * (rows row_stride elements apart), 0 if no earlier element of its row is non-zero, else 1 if the last such
 * is negative, 2 if positive; into out (rows x cols uint8, row-major). */
int ecnn_hist_prev_sign(const int32_t *v, size_t rows, size_t cols, size_t row_stride, uint8_t *out);

/* The empirical entropy in bits of the counts in each row of the k x nsym counts, summed over the rows
 * (sum of n log2 n - sum_s h_s log2 h_s, n the row's total). ECNN_HIST_RANGE for a negative count. */
int ecnn_hist_entropy(const int64_t *hist, size_t k, size_t nsym, double *bits);

/* Group adjacent contexts (rows of the k x nsym counts, each to be multiplied by weight) into tables by a
 * dynamic programme minimising the estimated cost of section 11.4: table_of[c] is the table of context c,
 * non-decreasing from 0. */
int ecnn_hist_merge(const int64_t *hist, size_t k, size_t nsym, int64_t weight, int64_t *table_of);

/* The stored table of section 11.5 for a histogram of n >= 2 counts (not all 0): its counts, and for a
 * log-coded table (mode 1) its codes and mantissa bits m (1..3; 0 for mode 0, codes then untouched), its
 * stored length in bytes and the ideal code length in bits of the symbols under its expansion. */
int ecnn_hist_fit(const int64_t *hist, size_t n, int64_t *counts, int64_t *codes, int *m, int64_t *table_bytes,
                  double *symbol_bits);

#endif
