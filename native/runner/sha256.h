/* SHA-256 (FIPS 180-4), for checking bundle files against their manifest. */
#ifndef ALIGNTS_SHA256_H
#define ALIGNTS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t h[8];
    uint64_t n_bytes;
    unsigned char block[64];
    size_t fill;
    int ni; /* compress with the CPU's SHA-256 instructions, x86 or ARMv8 (sha256_init decides) */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, unsigned char digest[32]);
/* 64 lowercase hex chars + NUL. */
void sha256_hex(const unsigned char digest[32], char out[65]);
/* sha256 of a file as hex; *size receives its size in bytes. 0 or -1 (rt_fail: cannot open / read). */
int sha256_file(const char *path, char out[65], uint64_t *size);

#ifdef __cplusplus
}
#endif

#endif
