#include "sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CPUs with SHA-256 instructions hash several times faster with them: x86-64 with the SHA extensions (Intel since
 * Goldmont / Ice Lake, AMD since Zen: sha256rnds2 does two rounds, sha256msg1/2 the message schedule) and ARMv8
 * with its SHA2 extension (sha256h/h2 four rounds, sha256su0/su1 the schedule; Cortex-A53 and later, Apple, Neoverse
 * where the crypto extension is in). compress_hw is chosen per context at sha256_init when the CPU says so (CPUID;
 * AT_HWCAP) and ALIGNTS_SHA_NI is not "0" (the switch test_sha256 uses). */
#if defined(__x86_64__) && defined(__GNUC__)
#define SHA256_HW 1
#include <cpuid.h>
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#define SHA256_HW 1
#include <arm_neon.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "rt_util.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(uint32_t h[8], const unsigned char *b) {
    uint32_t w[64], a, bb, c, d, e, f, g, hh;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)b[4 * i] << 24) | ((uint32_t)b[4 * i + 1] << 16) | ((uint32_t)b[4 * i + 2] << 8) |
               (uint32_t)b[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (i = 0; i < 64; i++) {
        uint32_t S1 = ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + K[i] + w[i];
        uint32_t S0 = ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22);
        uint32_t maj = (a & bb) ^ (a & c) ^ (bb & c);
        uint32_t t2 = S0 + maj;
        hh = g, g = f, f = e, e = d + t1, d = c, c = bb, bb = a, a = t1 + t2;
    }
    h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

#if defined(SHA256_HW) && defined(__x86_64__)
/* n blocks of 64 bytes. The state as the instructions keep it: ABEF and CDGH, each a register of four words. */
__attribute__((target("sha,sse4.1"))) static void compress_hw(uint32_t h[8], const unsigned char *b, size_t n) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL); /* big-endian words */
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);      /* B A D C */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B); /* H G F E */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);                                        /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);                                             /* CDGH */
    for (; n > 0; n--, b += 64) {
        const __m128i abef = s0, cdgh = s1;
        __m128i w[4], m;
        int g;
        for (g = 0; g < 4; g++) w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 16 * g)), bswap);
        for (g = 0; g < 16; g++) { /* rounds 4g .. 4g+3 */
            m = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)(K + 4 * g)));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            if (g >= 3 && g < 15) { /* words of group g+1: w[t-16..] + s0(..) (msg1, earlier) + w[t-7..] + s1(..) */
                w[(g + 1) & 3] = _mm_add_epi32(w[(g + 1) & 3], _mm_alignr_epi8(w[g & 3], w[(g - 1) & 3], 4));
                w[(g + 1) & 3] = _mm_sha256msg2_epu32(w[(g + 1) & 3], w[g & 3]);
            }
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
            if (g >= 1 && g < 13) w[(g - 1) & 3] = _mm_sha256msg1_epu32(w[(g - 1) & 3], w[g & 3]);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }
    t = _mm_shuffle_epi32(s0, 0x1B);                                        /* F E B A */
    s1 = _mm_shuffle_epi32(s1, 0xB1);                                       /* D C H G */
    _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(t, s1, 0xF0));           /* D C B A */
    _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(s1, t, 8));        /* H G F E */
}

static int cpu_has_sha(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1)) return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((b >> 29) & 1); /* CPUID.7.0:EBX.SHA */
}
#elif defined(SHA256_HW)
/* n blocks of 64 bytes; the state as two registers, ABCD and EFGH */
__attribute__((target("+crypto"))) static void compress_hw(uint32_t h[8], const unsigned char *b, size_t n) {
    uint32x4_t abcd = vld1q_u32(h), efgh = vld1q_u32(h + 4);
    for (; n > 0; n--, b += 64) {
        const uint32x4_t abcd0 = abcd, efgh0 = efgh;
        uint32x4_t w[4];
        int g;
        for (g = 0; g < 4; g++) w[g] = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(b + 16 * g))); /* big-endian */
        for (g = 0; g < 16; g++) { /* rounds 4g .. 4g+3 */
            const uint32x4_t wk = vaddq_u32(w[g & 3], vld1q_u32(K + 4 * g)), prev = abcd;
            if (g < 12) /* group g+4 of the schedule, from groups g .. g+3 */
                w[g & 3] = vsha256su1q_u32(vsha256su0q_u32(w[g & 3], w[(g + 1) & 3]), w[(g + 2) & 3], w[(g + 3) & 3]);
            abcd = vsha256hq_u32(abcd, efgh, wk);
            efgh = vsha256h2q_u32(efgh, prev, wk);
        }
        abcd = vaddq_u32(abcd, abcd0);
        efgh = vaddq_u32(efgh, efgh0);
    }
    vst1q_u32(h, abcd);
    vst1q_u32(h + 4, efgh);
}

static int cpu_has_sha(void) { return (getauxval(AT_HWCAP) & HWCAP_SHA2) != 0; }
#endif

#ifdef SHA256_HW
static int use_sha_instructions(void) {
    const char *env = getenv("ALIGNTS_SHA_NI");
    return !(env && !strcmp(env, "0")) && cpu_has_sha();
}
#endif

static void compress_blocks(sha256_ctx *c, const unsigned char *b, size_t n) {
#ifdef SHA256_HW
    if (c->ni) {
        compress_hw(c->h, b, n);
        return;
    }
#endif
    for (; n > 0; n--, b += 64) compress(c->h, b);
}

void sha256_init(sha256_ctx *c) {
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, H0, sizeof H0);
    c->n_bytes = 0;
    c->fill = 0;
#ifdef SHA256_HW
    c->ni = use_sha_instructions();
#else
    c->ni = 0;
#endif
}

void sha256_update(sha256_ctx *c, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    c->n_bytes += n;
    if (c->fill) {
        size_t take = 64 - c->fill < n ? 64 - c->fill : n;
        memcpy(c->block + c->fill, p, take);
        c->fill += take;
        p += take;
        n -= take;
        if (c->fill < 64) return;
        compress_blocks(c, c->block, 1);
        c->fill = 0;
    }
    compress_blocks(c, p, n / 64);
    p += n / 64 * 64;
    n %= 64;
    memcpy(c->block, p, n);
    c->fill = n;
}

void sha256_final(sha256_ctx *c, unsigned char digest[32]) {
    uint64_t bits = c->n_bytes * 8;
    int i;
    c->block[c->fill++] = 0x80;
    if (c->fill > 56) {
        memset(c->block + c->fill, 0, 64 - c->fill);
        compress_blocks(c, c->block, 1);
        c->fill = 0;
    }
    memset(c->block + c->fill, 0, 56 - c->fill);
    for (i = 0; i < 8; i++) c->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    compress_blocks(c, c->block, 1);
    for (i = 0; i < 8; i++) {
        digest[4 * i] = (unsigned char)(c->h[i] >> 24);
        digest[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        digest[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        digest[4 * i + 3] = (unsigned char)c->h[i];
    }
}

void sha256_hex(const unsigned char digest[32], char out[65]) {
    static const char hex[] = "0123456789abcdef";
    int i;
    for (i = 0; i < 32; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[64] = '\0';
}

int sha256_file(const char *path, char out[65], uint64_t *size) {
    unsigned char buf[1 << 16], digest[32];
    sha256_ctx c;
    size_t got;
    FILE *f = fopen(path, "rb");
    if (!f) return rt_fail("cannot open %s: %s", path, strerror(errno));
    sha256_init(&c);
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&c, buf, got);
    if (ferror(f)) {
        fclose(f);
        return rt_fail("error reading %s", path);
    }
    fclose(f);
    sha256_final(&c, digest);
    sha256_hex(digest, out);
    if (size) *size = c.n_bytes;
    return 0;
}
