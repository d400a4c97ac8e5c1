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

#endif
