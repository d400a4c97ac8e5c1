/* Bit fields of spec/CODING.md section 5.7 merged into integer arrays: the tails and signs of `fields`.
 *
 * Plain C11, no Python. Every read is bounds-checked: bits past the end of the buffer read as 0,
 * as in a `packed` stream decoder. */
#ifndef ECNN_BITS_H
#define ECNN_BITS_H

#include <stddef.h>
#include <stdint.h>

/* Element kinds of the output: unsigned 8, 16, 32 or 64 bits. */
enum ecnn_bits_kind { ECNN_BITS_U8 = 1, ECNN_BITS_U16 = 2, ECNN_BITS_U32 = 4, ECNN_BITS_U64 = 8 };

/* out[j] |= field_j << shift for j = 0..count-1, where field_j is the width bits (1..57) that start at bit
 * bit + j * width of buf, least significant bit first. Returns 0, or -1 for a width or shift the output
 * kind cannot take. */
int ecnn_bits_or(void *out, int kind, size_t count, const unsigned char *buf, size_t len, uint64_t bit,
                 unsigned width, unsigned shift);

/* The fields of spec/CODING.md section 4.9 of a rows x cols array of bit patterns u (unsigned integers of
 * 1 + e_bits + m_bits bits, the kind's width): signs[j] = u >> (width - 1), heads[j] = (u >> r) mod 2^(e_bits + k),
 * and tails[j] = (u mod 2^r) >> shifts[i] (same kind as u) with r = m_bits - k, where shifts[i] is the number of
 * trailing zero bits that every tail of row i shares (r if all are 0). Returns 0, or -1 for a layout that
 * does not fit the kind (or heads wider than 32 bits). */
int ecnn_bits_split(const void *u, int kind, size_t rows, size_t cols, unsigned e_bits, unsigned m_bits, unsigned k,
                    uint8_t *signs, uint32_t *heads, void *tails, int64_t *shifts);

/* Bytes of `count` fields of `width` bits, packed (ceil(count * width / 8)). */
size_t ecnn_bits_pack_size(size_t count, unsigned width);

/* The `packed` layout of section 5.7: the low `width` bits (1..64) of each of the count unsigned values of
 * the given kind, least significant bit first, into ecnn_bits_pack_size(count, width) bytes of out; the
 * last byte's pad bits are 0. Returns 0, or -1 for a width out of range. */
int ecnn_bits_pack(unsigned char *out, const void *values, int kind, size_t count, unsigned width);

/* count unsigned LEB128 varints (spec/CODING.md section 6) from byte pos of buf into out; *next the byte
 * after them. Returns 0; 1 if they run past len; 2 for one longer than 10 bytes; 3 for a non-minimal one (a
 * final 0x00 group); 4 for a value of 2^64 or more. */
int ecnn_bits_varints(const unsigned char *buf, size_t len, size_t pos, size_t count, uint64_t *out, size_t *next);

/* The codes of a log-coded count table (spec/CODING.md section 7.1, mode 1): nsym zigzag deltas, one nibble each
 * (most significant nibble of a byte first) from nibble 0 at byte pos of buf, where the nibble 15 escapes
 * 15 + the next three nibbles; each running sum must lie in 0..top. codes receives the nsym codes, *next the
 * byte after the last nibble. Returns 0; 1 if the nibbles run past len; 2 for a code out of range (into
 * *bad); 3 for a non-zero pad nibble after an odd number of nibbles. */
int ecnn_bits_log_codes(const unsigned char *buf, size_t len, size_t pos, size_t nsym, int64_t top, int64_t *codes,
                        size_t *next, int64_t *bad);

#endif
