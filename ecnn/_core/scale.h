/* Quantized symbols to values (spec/CODING.md section 4.5): element j of row i is binary32(q_j) * s_i, one
 * IEEE multiplication in binary32 (binary64 for float64 tensors), then rounded to the tensor's type.
 *
 * Plain C11, no Python. */
#ifndef ECNN_SCALE_H
#define ECNN_SCALE_H

#include <stddef.h>
#include <stdint.h>

/* Output kinds. */
enum ecnn_scale_out { ECNN_SCALE_F32 = 0, ECNN_SCALE_BF16 = 1, ECNN_SCALE_F64 = 2 };

/* rows x cols symbols q (signed integers of qsize = 1, 2 or 4 bytes), row-major, into out:
 * F32: float out[j] = (float)q_j * steps_f[i];
 * BF16: the float32 product rounded half to even to its top 16 bits (uint16 out);
 * F64: double out[j] = (double)q_j * steps_d[i].
 * steps is float for F32 and BF16, double for F64. Returns 0, or -1 for a kind or size it does not know.
 * out may be q itself when both have the same element size (every element is read before it is written). */
int ecnn_scale_rows(const void *q, unsigned qsize, size_t rows, size_t cols, const void *steps, int kind, void *out);

#endif
