/* sha256.c (libalignts' bundle seal): FIPS 180-4 example digests, and the SHA-instruction path (x86 SHA extensions,
 * ARMv8 SHA2) equal to the portable one on every length 0..300 and on 1 MB of pseudo-random bytes fed in uneven
 * pieces. The portable path is what a context gets with ALIGNTS_SHA_NI=0 (read at sha256_init). Exits 1 on the
 * first mismatch. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static int failures = 0;

static void hex_of(const unsigned char *data, size_t n, size_t piece, int ni, char out[65]) {
    sha256_ctx c;
    unsigned char d[32];
    size_t i;
    setenv("ALIGNTS_SHA_NI", ni ? "1" : "0", 1);
    sha256_init(&c);
    for (i = 0; i < n; i += piece) sha256_update(&c, data + i, n - i < piece ? n - i : piece);
    sha256_final(&c, d);
    sha256_hex(d, out);
}

static void expect(const char *what, const char *got, const char *want) {
    if (strcmp(got, want)) {
        fprintf(stderr, "FAIL %s: %s, expected %s\n", what, got, want);
        failures++;
    }
}

int main(void) {
    static const struct { const char *msg; const char *hex; } fips[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"}};
    unsigned char *big = malloc(1 << 20);
    char a[65], b[65];
    size_t i, n;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    sha256_ctx probe;
    if (!big) return 1;
    setenv("ALIGNTS_SHA_NI", "1", 1);
    sha256_init(&probe);
    printf("SHA instructions: %s\n", probe.ni ? "used" : "not on this CPU / build (the portable path is checked alone)");
    for (i = 0; i < sizeof fips / sizeof fips[0]; i++)
        for (n = 0; n < 2; n++) {
            hex_of((const unsigned char *)fips[i].msg, strlen(fips[i].msg), 64, (int)n, a);
            expect(fips[i].msg, a, fips[i].hex);
        }
    memset(big, 'a', 1000000); /* one million 'a' */
    for (n = 0; n < 2; n++) {
        hex_of(big, 1000000, 4099, (int)n, a);
        expect("1e6 x 'a'", a, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }
    for (i = 0; i < (1 << 20); i++) { /* splitmix-style bytes */
        s += 0x9e3779b97f4a7c15ULL;
        big[i] = (unsigned char)((s ^ (s >> 31)) * 0xbf58476d1ce4e5b9ULL >> 56);
    }
    for (n = 0; n <= 300; n++) {
        char what[32];
        snprintf(what, sizeof what, "length %zu", n);
        hex_of(big, n, 7, 0, a);
        hex_of(big, n, 64, 1, b);
        expect(what, b, a);
    }
    hex_of(big, 1 << 20, 65536, 0, a);
    hex_of(big, 1 << 20, 1000, 1, b);
    expect("1 MiB", b, a);
    free(big);
    if (failures) return 1;
    printf("sha256: all digests match\n");
    return 0;
}
