/* Bit fields merged into integer arrays (see bits.h). */
#include "bits.h"

#include <string.h>

/* The 64 bits of buf from byte i on, little-endian; i + 8 <= the buffer's length. */
static inline uint64_t load64(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8); /* one unaligned load */
    return v;
#else
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v |= (uint64_t)p[k] << (8 * k);
    return v;
#endif
}

/* The same near the end of buf: zeros past it. */
static inline uint64_t load_tail(const unsigned char *buf, size_t len, size_t i)
{
    uint64_t v = 0;
    for (size_t k = 0; k < 8 && i + k < len; k++)
        v |= (uint64_t)buf[i + k] << (8 * k);
    return v;
}

/* Fields j0..j1-1 whose 8-byte windows lie inside buf, then the rest with bounds checks. */
#define OR_LOOP(T)                                                                 \
    do {                                                                           \
        T *o = (T *)out;                                                           \
        size_t j = 0;                                                              \
        for (; j < safe; j++, b += width)                                          \
            o[j] |= (T)(((load64(buf + (b >> 3)) >> (b & 7)) & m) << shift);       \
        for (; j < count; j++, b += width) {                                       \
            if ((b >> 3) >= len)                                                   \
                break;                                                             \
            o[j] |= (T)(((load_tail(buf, len, (size_t)(b >> 3)) >> (b & 7)) & m) << shift); \
        }                                                                          \
    } while (0)

/* Width 1 (the signs of fields): a byte of eight fields at a time once the bit position is byte-aligned. */
#define OR_BITS1(T)                                                                      \
    do {                                                                                 \
        T *o = (T *)out;                                                                 \
        size_t j = 0;                                                                    \
        for (; j < count && (b & 7); j++, b++)                                           \
            if ((b >> 3) < len)                                                          \
                o[j] |= (T)((T)((buf[b >> 3] >> (b & 7)) & 1u) << shift);               \
        for (; j + 8 <= count && (b >> 3) < len; j += 8, b += 8) {                        \
            unsigned v = buf[b >> 3];                                                    \
            for (unsigned k = 0; k < 8; k++)                                             \
                o[j + k] |= (T)((T)((v >> k) & 1u) << shift);                            \
        }                                                                                \
        for (; j < count && (b >> 3) < len; j++, b++)                                    \
            o[j] |= (T)((T)((buf[b >> 3] >> (b & 7)) & 1u) << shift);                    \
    } while (0)

int ecnn_bits_or(void *out, int kind, size_t count, const unsigned char *buf, size_t len, uint64_t bit,
                 unsigned width, unsigned shift)
{
    if (width < 1 || width > 57 || width + shift > 8u * (unsigned)kind)
        return -1;
    if (width == 1) {
        uint64_t b = bit;
        switch (kind) {
        case ECNN_BITS_U8: OR_BITS1(uint8_t); break;
        case ECNN_BITS_U16: OR_BITS1(uint16_t); break;
        case ECNN_BITS_U32: OR_BITS1(uint32_t); break;
        case ECNN_BITS_U64: OR_BITS1(uint64_t); break;
        default: return -1;
        }
        return 0;
    }
    uint64_t m = ((uint64_t)1 << width) - 1, b = bit;
    /* Field j's window starts at byte (bit + j * width) / 8 and must end by len. */
    size_t safe = 0;
    if (len >= 8 && bit <= (uint64_t)(len - 8) * 8)
        safe = (size_t)(((uint64_t)(len - 8) * 8 - bit) / width + 1);
    if (safe > count)
        safe = count;
    switch (kind) {
    case ECNN_BITS_U8: OR_LOOP(uint8_t); break;
    case ECNN_BITS_U16: OR_LOOP(uint16_t); break;
    case ECNN_BITS_U32: OR_LOOP(uint32_t); break;
    case ECNN_BITS_U64: OR_LOOP(uint64_t); break;
    default: return -1;
    }
    return 0;
}
