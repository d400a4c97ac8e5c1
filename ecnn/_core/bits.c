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

/* The value of element j of an unsigned array of the given kind. */
static inline uint64_t load_kind(const void *p, int kind, size_t j)
{
    switch (kind) {
    case ECNN_BITS_U8: return ((const uint8_t *)p)[j];
    case ECNN_BITS_U16: return ((const uint16_t *)p)[j];
    case ECNN_BITS_U32: return ((const uint32_t *)p)[j];
    default: return ((const uint64_t *)p)[j];
    }
}

#define SPLIT_LOOP(T)                                                                          \
    do {                                                                                       \
        const T *src = (const T *)u + i * cols;                                                \
        T *dst = (T *)tails + i * cols;                                                        \
        T any = 0;                                                                             \
        for (size_t j = 0; j < cols; j++)                                                      \
            any |= src[j];                                                                     \
        any &= (T)tmask;                                                                       \
        unsigned t = 0;                                                                        \
        if (!any)                                                                              \
            t = r;                                                                             \
        else                                                                                   \
            while (!((any >> t) & 1))                                                          \
                t++;                                                                           \
        shifts[i] = (int64_t)t;                                                                \
        for (size_t j = 0; j < cols; j++) {                                                    \
            T v = src[j];                                                                      \
            signs[i * cols + j] = (uint8_t)(v >> (width - 1));                                 \
            heads[i * cols + j] = (uint32_t)((v >> r) & hmask);                                \
            dst[j] = r ? (T)((v & (T)tmask) >> t) : 0;                                         \
        }                                                                                      \
    } while (0)

int ecnn_bits_split(const void *u, int kind, size_t rows, size_t cols, unsigned e_bits, unsigned m_bits, unsigned k,
                    uint8_t *signs, uint32_t *heads, void *tails, int64_t *shifts)
{
    unsigned width = 1 + e_bits + m_bits;
    if (width != 8u * (unsigned)kind || k > m_bits || e_bits + k > 32)
        return -1;
    unsigned r = m_bits - k;
    uint64_t hmask = ((uint64_t)1 << (e_bits + k)) - 1, tmask = r ? ((uint64_t)1 << r) - 1 : 0;
    for (size_t i = 0; i < rows; i++) {
        switch (kind) {
        case ECNN_BITS_U8: SPLIT_LOOP(uint8_t); break;
        case ECNN_BITS_U16: SPLIT_LOOP(uint16_t); break;
        case ECNN_BITS_U32: SPLIT_LOOP(uint32_t); break;
        case ECNN_BITS_U64: SPLIT_LOOP(uint64_t); break;
        default: return -1;
        }
    }
    return 0;
}

size_t ecnn_bits_pack_size(size_t count, unsigned width)
{
    /* count * width / 8 rounded up, without overflowing for any count below SIZE_MAX / 8 */
    return count / 8 * width + (count % 8 * width + 7) / 8;
}

/* Fields of at most 32 bits: 32 bits written at a time. */
#define PACK32_LOOP(T)                                                       \
    do {                                                                     \
        const T *src = (const T *)values;                                    \
        for (size_t j = 0; j < count; j++) {                                 \
            acc |= ((uint64_t)src[j] & m) << n;                              \
            n += width;                                                      \
            if (n >= 32) {                                                   \
                for (int b = 0; b < 4; b++)                                  \
                    out[pos + b] = (unsigned char)(acc >> (8 * b));          \
                pos += 4;                                                    \
                acc >>= 32;                                                  \
                n -= 32;                                                     \
            }                                                                \
        }                                                                    \
    } while (0)

int ecnn_bits_pack(unsigned char *out, const void *values, int kind, size_t count, unsigned width)
{
    if (width < 1 || width > 64)
        return -1;
    uint64_t m = width == 64 ? ~(uint64_t)0 : ((uint64_t)1 << width) - 1;
    if (width <= 32) { /* acc holds fewer than 32 bits before each field, so never more than 63 */
        uint64_t acc = 0;
        unsigned n = 0;
        size_t pos = 0;
        switch (kind) {
        case ECNN_BITS_U8: PACK32_LOOP(uint8_t); break;
        case ECNN_BITS_U16: PACK32_LOOP(uint16_t); break;
        case ECNN_BITS_U32: PACK32_LOOP(uint32_t); break;
        default: PACK32_LOOP(uint64_t); break;
        }
        for (; n >= 8; n -= 8, acc >>= 8)
            out[pos++] = (unsigned char)acc;
        if (n)
            out[pos++] = (unsigned char)acc; /* the pad bits are 0 */
        return 0;
    }
    uint64_t acc = 0; /* bits not yet written, least significant first */
    unsigned n = 0;   /* how many */
    size_t pos = 0;
    for (size_t j = 0; j < count; j++) {
        uint64_t v = load_kind(values, kind, j) & m;
        unsigned w = width;
        while (w) { /* at most 32 bits at a time, so that acc never holds more than 63 */
            unsigned take = w > 32 ? 32 : w;
            acc |= (v & (((uint64_t)1 << take) - 1)) << n;
            v >>= take;
            n += take;
            w -= take;
            while (n >= 8) {
                out[pos++] = (unsigned char)acc;
                acc >>= 8;
                n -= 8;
            }
        }
    }
    if (n)
        out[pos++] = (unsigned char)acc; /* the pad bits are 0 */
    return 0;
}

int ecnn_bits_log_codes(const unsigned char *buf, size_t len, size_t pos, size_t nsym, int64_t top, int64_t *codes,
                        size_t *next, int64_t *bad)
{
    if (pos > len)
        return 1;
    const unsigned char *b = buf + pos;
    size_t avail = 2 * (len - pos); /* nibbles left */
    size_t nib = 0;
    int64_t prev = 0;
    for (size_t k = 0; k < nsym; k++) {
        if (nib >= avail)
            return 1;
        uint32_t z = (b[nib >> 1] >> (4 * (~nib & 1))) & 15u;
        nib++;
        if (z == 15) {
            if (avail - nib < 3)
                return 1;
            uint32_t e = 0;
            for (int j = 0; j < 3; j++, nib++)
                e = (e << 4) | ((b[nib >> 1] >> (4 * (~nib & 1))) & 15u);
            z = 15 + e;
        }
        prev += (z & 1) ? -(int64_t)((z + 1) >> 1) : (int64_t)(z >> 1);
        if (prev < 0 || prev > top) {
            *bad = prev;
            return 2;
        }
        codes[k] = prev;
    }
    if ((nib & 1) && (b[nib >> 1] & 15))
        return 3;
    *next = pos + (nib + 1) / 2;
    return 0;
}

int ecnn_bits_varints(const unsigned char *buf, size_t len, size_t pos, size_t count, uint64_t *out, size_t *next)
{
    for (size_t i = 0; i < count; i++) {
        uint64_t value = 0;
        unsigned k = 0;
        for (;; k++) {
            if (k == 10)
                return 2;
            if (pos >= len)
                return 1;
            unsigned b = buf[pos++];
            if (k == 9 && !(b & 0x80) && (b & 0x7F) > 1)
                return 4; /* bits above 2^63 */
            value |= (uint64_t)(b & 0x7F) << (7 * k);
            if (!(b & 0x80)) {
                if (b == 0 && k > 0)
                    return 3;
                break;
            }
        }
        out[i] = value;
    }
    *next = pos;
    return 0;
}
