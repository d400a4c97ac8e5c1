/* CRC-32 (ISO-HDLC: the CRC of zlib, PNG and spec/FORMAT.md) with carry-less multiplication.
 *
 * Plain C11; the fast path uses the x86-64 PCLMULQDQ instruction where the compiler and the CPU have it. */
#ifndef ECNN_CRC_H
#define ECNN_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Build the byte table and look at the CPU; once, before any other call (the module's import). */
void ecnn_crc32_init(void);

/* Whether ecnn_crc32 runs on carry-less multiplication here (else callers should use zlib's). */
int ecnn_crc32_fast(void);

/* zlib's crc32(crc, buf, len): the CRC-32 of the bytes after those whose CRC is crc. */
uint32_t ecnn_crc32(uint32_t crc, const unsigned char *buf, size_t len);

#endif
