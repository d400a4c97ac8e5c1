/* The range encoder of spec/RANGE_CODER.md (section 9): 32-bit words, 64-bit state, 24-bit precision.
 *
 * Plain C11, no Python. It writes the words that constriction's queue RangeEncoder
 * (0.5.0, the same configuration) writes for the same tables and symbols. The output
 * grows on the heap; every symbol and table entry is checked before it is used, and
 * a call that fails leaves the encoder as it was before the call. */
#ifndef ECNN_RCE_H
#define ECNN_RCE_H

#include <stddef.h>
#include <stdint.h>

#include "rc.h" /* the precision and the integer kinds, shared with the decoder */

enum ecnn_rce_status {
    ECNN_RCE_OK = 0,
    ECNN_RCE_BAD_SYMBOL = 1,  /* a symbol outside 0 .. n-1 */
    ECNN_RCE_BAD_TABLE = 2,   /* c_s < c_{s+1} <= 2^24 fails for a symbol s (e.g. a zero-probability symbol) */
    ECNN_RCE_BAD_CONTEXT = 3, /* a context index outside the table array */
    ECNN_RCE_NO_MEMORY = 4    /* the output could not grow */
};

typedef struct {
    uint32_t *words; /* the settled words, words[0 .. nwords-1]; heap, capacity cap */
    size_t nwords, cap;
    uint64_t lower, range;
    /* Held-back words (RC section 9): ninv > 0 means the words first_inv, then ninv - 1 words
     * 0xFFFFFFFF, are pending; a carry turns them into first_inv + 1, then zeros. */
    size_t ninv;
    uint32_t first_inv;
} ecnn_rce;

/* An empty encoder (no allocation yet). */
void ecnn_rce_init(ecnn_rce *e);

/* Free the output; the encoder is empty again afterwards. */
void ecnn_rce_free(ecnn_rce *e);

/* Encode count symbols sym[0..count-1] (integers of kind sym_kind), each with the cumulative table cdf[0..n].
 * On an error nothing of this call is kept, and *at tells the failing symbol. */
int ecnn_rce_encode(ecnn_rce *e, const uint32_t *cdf, size_t n, const void *sym, int sym_kind, size_t count,
                    size_t *at);

/* Encode count symbols; symbol j uses table ctx[j] of the ntab tables cdfs[t * (n + 1) .. t * (n + 1) + n]. */
int ecnn_rce_encode_ctx(ecnn_rce *e, const uint32_t *cdfs, size_t ntab, size_t n, const void *ctx, int ctx_kind,
                        const void *sym, int sym_kind, size_t count, size_t *at);

/* Words of the sealed stream: the settled words, then the held-back and sealing words (0 if nothing was encoded). */
size_t ecnn_rce_sealed_len(const ecnn_rce *e);

/* Write the sealed stream's ecnn_rce_sealed_len(e) words to out. The encoder is not changed, so encoding may go on. */
void ecnn_rce_seal(const ecnn_rce *e, uint32_t *out);

#endif
