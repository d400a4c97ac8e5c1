/* Interleaved rANS lanes with static tables (spec/CODING.md, section 5.9): 32-bit states, 16-bit words.
 *
 * Plain C11, no Python. A chunk's symbols are dealt to L lanes in turn (symbol k to lane k mod L); each
 * lane is an rANS coder of its own with its own word stream, so lanes decode independently. Every read is
 * bounds-checked, and a stream that contradicts its tables is reported, never followed. */
#ifndef ECNN_RANS_H
#define ECNN_RANS_H

#include <stddef.h>
#include <stdint.h>

#define ECNN_RANS_LOW (UINT32_C(1) << 16) /* states lie in [2^16, 2^32) between symbols */
#define ECNN_RANS_MIN_PRECISION 10
#define ECNN_RANS_MAX_PRECISION 15
#define ECNN_RANS_MAX_LANES 64

enum ecnn_rans_status {
    ECNN_RANS_OK = 0,
    ECNN_RANS_NOMEM = 1,
    ECNN_RANS_BAD_TABLE = 2,  /* frequencies that do not sum to 2^P */
    ECNN_RANS_BAD_STATE = 3,  /* a lane's initial state below 2^16 */
    ECNN_RANS_SHORT = 4,      /* a lane ran out of words */
    ECNN_RANS_LEFTOVER = 5,   /* words left in a lane, or a final state other than 2^16 */
    ECNN_RANS_BAD_LAYOUT = 6, /* lane sizes that do not add up to the chunk, or a bad schedule */
    ECNN_RANS_BAD_SYMBOL = 7  /* encoder: a symbol outside the table, or of frequency 0 */
};

#define ECNN_RANS_MAX_NSYM (1 << 16)

/* The decoding tables of T tables of n symbols (n <= 2^16) at precision P: for each table and each slot
 * s in 0..2^P-1, the symbol whose interval holds s (u16), and that symbol's frequency f with s's offset
 * in its interval, f | (s - start) << 16 (u32; 48 KiB a table at P = 13). */
typedef struct {
    unsigned precision;
    size_t ntab, nsym;
    uint16_t *sym; /* ntab << P entries */
    uint32_t *fb;  /* ntab << P entries: frequency | offset << 16 (frequency at most 2^15, offset below it) */
} ecnn_rans_tables;

/* Look at the CPU once, before any decoding (the module's import). */
void ecnn_rans_init(void);

/* Whether the decoder uses SIMD gathers (AVX2) for chunks of 16 or 32 lanes here. */
int ecnn_rans_simd(void);

/* Use the SIMD path where the CPU has it (on != 0) or never (for tests: both paths give the same symbols);
 * not while another thread decodes. Returns ecnn_rans_simd(). */
int ecnn_rans_use_simd(int on);

/* Stored counts to rANS frequencies summing to 2^precision (spec/CODING.md section 7.3), for each of k rows
 * of n counts (each at most 2^32 - 1, n at most 2^20): f_s = 0 for a count of 0, else 1 + c_s * (2^p - z)
 * div total (z the non-zero counts), and the first largest count's symbol gets what is left. Returns
 * ECNN_RANS_OK, or ECNN_RANS_BAD_TABLE for a row of zeros, more than 2^p non-zero counts, or a count out
 * of range. */
int ecnn_rans_freqs(const int64_t *counts, size_t k, size_t n, unsigned precision, uint32_t *out);

/* freqs: ntab * nsym frequencies, each table summing to 2^precision. */
int ecnn_rans_tables_init(ecnn_rans_tables *t, const uint32_t *freqs, size_t ntab, size_t nsym, unsigned precision);
void ecnn_rans_tables_free(ecnn_rans_tables *t);

/* The lane streams of one chunk: lane l is a u32 little-endian initial state and words[l] u16
 * little-endian words, lane 0 first, filling exactly len bytes. */
typedef struct {
    const unsigned char *data;
    size_t len;
    const uint64_t *words;
    size_t lanes;
} ecnn_rans_chunk;

/* The symbol order of a blocks-layout chunk (section 5.8): for each row class g with rows in the chunk,
 * for each run (t, c0, c1) of g, for each row i of class g in order, columns order[c0..c1-1]. */
typedef struct {
    const uint8_t *rclass; /* nr classes */
    size_t nr, cols;
    const int32_t *runs; /* (t, c0, c1) triples, runs of class g at run_start[g] .. run_start[g + 1] - 1 */
    size_t nruns;
    const int64_t *run_start; /* nrc + 1 */
    size_t nrc;
    const int64_t *order; /* cols column indices, or NULL for the identity */
} ecnn_rans_sched;

/* Output element kinds (as ecnn_int_kind of rc.h). */
enum ecnn_rans_kind { ECNN_RANS_I8, ECNN_RANS_U8, ECNN_RANS_I16, ECNN_RANS_U16, ECNN_RANS_I32, ECNN_RANS_U32,
                      ECNN_RANS_I64, ECNN_RANS_U64 };

/* Decode one chunk into out (nr x cols, row-major, of kind out_kind): element (i, order[q]) gets
 * (symbol + offset) << shift. The caller checks that the kind holds every such value. */
int ecnn_rans_decode_blocks(const ecnn_rans_tables *t, const ecnn_rans_chunk *c, const ecnn_rans_sched *s,
                            int64_t offset, unsigned shift, void *out, int out_kind);

/* A ctx model 5 chunk (spec/CODING.md section 5.6.5): the magnitudes as decode_blocks (no shift; an offset
 * only without signs), then, for each sign class g < nsc, the signs of the non-zero magnitudes of the columns
 * scols[sstart[g] .. sstart[g + 1] - 1] in row-major order: four per symbol of quad table g (bit b the
 * b-th sign, 1 positive), the last n mod 4 one per symbol of sign table g. out must be signed. */
int ecnn_rans_decode_rowcol(const ecnn_rans_tables *t, const ecnn_rans_tables *quads, const ecnn_rans_tables *signs,
                            const ecnn_rans_chunk *c, const ecnn_rans_sched *s, const int64_t *scols,
                            const int64_t *sstart, size_t nsc, int64_t offset, void *out, int out_kind);

/* The encoder's view of one chunk: its symbols in decoding order and the table of each. The magnitudes (or
 * indices) mag, nr x cols of kind mag_kind (unsigned 8 or 16 bits, or signed 32), with their columns already
 * in column order, as the runs of s read them (s->order is not used; s->cols is cols): run (t, c0, c1) of
 * row class g gives, for each row of class g, mag's columns c0..c1-1, with table t. Then, with vals (nr x
 * cols signed values of kind val_kind, columns in their own order) and nsc > 0 sign classes, for each class
 * g: the signs (1 positive) of the non-zero values of the columns scols[sstart[g] .. sstart[g + 1] - 1] in
 * row-major order, four per symbol of table ntab + g (bit b the b-th sign), the last n mod 4 one per symbol
 * of table ntab + nsc + g. syms and tabs have room for cap symbols; *count gets how many were written.
 * Returns ECNN_RANS_OK, or ECNN_RANS_BAD_LAYOUT for a schedule or sizes that do not fit. */
int ecnn_rans_chunk_order(const void *mag, int mag_kind, const ecnn_rans_sched *s, const void *vals, int val_kind,
                          const int64_t *scols, const int64_t *sstart, size_t nsc, size_t ntab, int32_t *syms,
                          int32_t *tabs, size_t cap, size_t *count);

/* Encode count symbols (indices into their tables) given in decoding order, symbol k with table
 * tab[k]; lanes lanes. out receives the chunk's bytes (at most count * 2 + lanes * 4), words[l]
 * each lane's word count; *len the bytes written. cum: ntab * (nsym + 1) cumulative frequencies. */
int ecnn_rans_encode(const uint32_t *cum, size_t ntab, size_t nsym, unsigned precision, const int32_t *syms,
                     const int32_t *tab, size_t count, size_t lanes, unsigned char *out, size_t *len, uint64_t *words);

#endif
