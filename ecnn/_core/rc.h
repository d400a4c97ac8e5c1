/* The range decoder of spec/RANGE_CODER.md: 32-bit words, 64-bit state, 24-bit precision.
 *
 * Plain C11, no allocation, no Python. Every read of the input is bounds-checked:
 * words past the end read as zero (RC section 3), a table lookup never leaves its
 * table, and a table or context that contradicts the data is reported, never used. */
#ifndef ECNN_RC_H
#define ECNN_RC_H

#include <stddef.h>
#include <stdint.h>

#define ECNN_RC_PRECISION 24
#define ECNN_RC_TOTAL (UINT32_C(1) << ECNN_RC_PRECISION)

enum ecnn_rc_status {
    ECNN_RC_OK = 0,
    ECNN_RC_INVALID_DATA = 1, /* RC section 5 step 3: q >= 2^24 */
    ECNN_RC_BAD_TABLE = 2,    /* the cumulative table is not 0 = c_0 < c_1 < ... < c_n = 2^24 where it was used */
    ECNN_RC_BAD_CONTEXT = 3   /* a context index outside the table array */
};

/* How the words are stored in the input bytes. */
enum ecnn_rc_order { ECNN_RC_LITTLE = 0, ECNN_RC_BIG = 1 };

typedef struct {
    const unsigned char *bytes; /* the words, 4 bytes each, no alignment required */
    size_t nwords;
    size_t pos; /* next word to read; stays at nwords once exhausted */
    int order;
    uint64_t lower, range, point;
} ecnn_rc;

/* Element types of the output and context arrays. */
enum ecnn_int_kind { ECNN_I8, ECNN_U8, ECNN_I16, ECNN_U16, ECNN_I32, ECNN_U32, ECNN_I64, ECNN_U64 };

/* A run of decoded symbols goes to an integer array of this kind (symbols are below 2^24). */
typedef struct {
    void *data;
    int kind;
} ecnn_out;

void ecnn_rc_init(ecnn_rc *d, const unsigned char *bytes, size_t nwords, int order);

/* Decode count symbols, each with the cumulative table cdf[0..n] (n >= 1 symbols), into out[0..count-1].
 * On an error, *done tells how many symbols were decoded before it. */
int ecnn_rc_decode(ecnn_rc *d, const uint32_t *cdf, size_t n, ecnn_out out, size_t count, size_t *done);

/* Decode count symbols; symbol j uses table ctx[j] of the ntab tables cdfs[t * (n + 1) .. t * (n + 1) + n]. */
int ecnn_rc_decode_ctx(ecnn_rc *d, const uint32_t *cdfs, size_t ntab, size_t n, const void *ctx, int ctx_kind,
                       ecnn_out out, size_t count, size_t *done);

/* The end conditions of spec/CODING.md section 8 (RC section 7): every word read, and
 * (point - lower) mod 2^64 < 2^33 - 1; true as well if no symbol was decoded. */
int ecnn_rc_exhausted(const ecnn_rc *d);

#endif
