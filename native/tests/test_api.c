/* C-side checks that need no golden file: error codes, buffer sizes, sampler properties, splitmix64. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alignts_kernels.h"

static int failures = 0;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static void test_errors(void) {
    double x[2 * 4] = {1, 2, 3, 4, NAN, NAN, NAN, NAN}, m[2], s[2], out[64], work[8];
    size_t bad = 99;
    CHECK(at_instance_stats(x, 2, 4, 1e-5, m, s, &bad) == AT_ERR_ALL_NAN && bad == 1);
    x[5] = INFINITY;
    CHECK(at_instance_stats(x, 2, 4, 1e-5, m, s, &bad) == AT_ERR_NONFINITE && bad == 1);
    x[5] = 7.0;
    CHECK(at_instance_stats(x, 2, 4, 0.0, m, s, NULL) == AT_OK && m[1] == 7.0 && s[1] == 0.0);
    CHECK(at_n_patches(4, 5, 1) == 0 && at_n_patches(16, 16, 8) == 2 && at_n_patches(512, 16, 8) == 64);
    CHECK(at_patchify(x, 2, 4, 5, 1, out) == AT_ERR_ARG);
    CHECK(at_norm_patchify(x, 2, 4, 2, 0, 1e-5, 1, out, m, s, work, NULL) == AT_ERR_ARG);
    CHECK(at_llmtime_scaler(x, 2, 4, 1.5, 0.3, 0, m, s, work, NULL) == AT_ERR_ARG);
    CHECK(strcmp(at_status_str(AT_ERR_SPACE), "output row too small") == 0);
}

static void test_codec(void) {
    static const int64_t vsep[] = {20, 21}, dsep[] = {20}, end[] = {0}, bad_vsep[] = {20};
    at_codec_table t = {{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, vsep, 2, dsep, 1, 22, end, 1};
    at_codec_table u = t;
    double x[3] = {1.25, -0.5, 0.0}, values[4];
    int64_t ids[16], lengths[1], n_parsed[1];
    CHECK(at_codec_validate(&t) == AT_OK);
    u.digit_ids[3] = 10;
    CHECK(at_codec_validate(&u) == AT_ERR_TABLE); /* duplicate digit */
    u = t;
    u.minus_id = 15;
    CHECK(at_codec_validate(&u) == AT_ERR_TABLE); /* minus is a digit */
    u = t;
    u.value_sep = bad_vsep;
    u.n_value_sep = 1;
    CHECK(at_codec_validate(&u) == AT_ERR_TABLE); /* no value could end */
    u = t;
    u.end_ids = dsep;
    CHECK(at_codec_validate(&u) == AT_ERR_TABLE); /* end id is a separator */
    /* 1.25, -0.5, 0 at precision 3: "1 2 5 0 ," (4 + 3 + 2), "-5 0 0 ," (1 + 3 + 2 + 2), "0 ," (1 + 2) */
    CHECK(at_encode_lengths(x, 1, 3, &t, 3, lengths) == AT_OK && lengths[0] == 20);
    CHECK(at_encode_digits(x, 1, 3, &t, 3, ids, 16, lengths) == AT_ERR_SPACE);
    {
        int64_t big[22];
        static const int64_t want[20] = {11, 20, 12, 20, 15, 20, 10, 20, 21, 22, 15, 20, 10, 20, 10, 20, 21,
                                         10, 20, 21};
        CHECK(at_encode_digits(x, 1, 3, &t, 3, big, 22, lengths) == AT_OK);
        CHECK(memcmp(big, want, sizeof(want)) == 0 && big[20] == -1 && big[21] == -1);
        CHECK(at_decode_digits(big, 1, 22, NULL, &t, 3, 4, values, n_parsed) == AT_OK);
        CHECK(n_parsed[0] == 3 && values[0] == 1.2505 && values[1] == -0.5005 && values[2] == 0.0005);
        CHECK(values[3] == values[2]);
        CHECK(at_decode_digits(big, 1, 22, NULL, &t, 3, 0, values, n_parsed) == AT_ERR_ARG);
    }
    x[0] = 1e15;
    CHECK(at_encode_lengths(x, 1, 3, &t, 3, lengths) == AT_ERR_RANGE);
    x[0] = NAN;
    CHECK(at_encode_lengths(x, 1, 3, &t, 3, lengths) == AT_ERR_NONFINITE);
}

static void test_sampler(void) {
    float logits[8] = {0.5f, 3.0f, 1.0f, 3.0f, -1.0f, 2.0f, 9.0f, 0.0f};
    int64_t allowed[4] = {0, 1, 3, 5}, id = -1;
    double work[8];
    uint64_t state = 0, before;
    int counts[8] = {0}, i;
    CHECK(at_splitmix64(&state) == 0xE220A8397B1DCDAFULL); /* the reference splitmix64 sequence from 0 */
    state = 1;
    before = state;
    CHECK(at_sample(logits, 8, allowed, 4, 0.0, 1.0, &state, work, &id) == AT_OK && id == 1 && state == before);
    CHECK(at_sample(logits, 8, allowed, 4, 1.0, 1e-9, &state, work, &id) == AT_OK && id == 1); /* top-p -> top 1 */
    allowed[1] = 3; /* ids 3 and 1 tie: top-p keeps the first in allowed order */
    allowed[2] = 1;
    CHECK(at_sample(logits, 8, allowed, 4, 1.0, 1e-9, &state, work, &id) == AT_OK && id == 3);
    allowed[1] = 1;
    allowed[2] = 3;
    for (i = 0; i < 2000; i++) {
        CHECK(at_sample(logits, 8, allowed, 4, 1.0, 1.0, &state, work, &id) == AT_OK);
        if (id >= 0 && id < 8) counts[id]++;
    }
    CHECK(counts[6] == 0 && counts[2] == 0 && counts[4] == 0 && counts[7] == 0); /* masked ids never drawn */
    CHECK(counts[1] > 600 && counts[3] > 600 && counts[0] > 10 && counts[5] > 200);
    CHECK(at_sample(logits, 8, allowed, 4, -1.0, 1.0, &state, work, &id) == AT_ERR_ARG);
    allowed[0] = 8;
    CHECK(at_sample(logits, 8, allowed, 4, 1.0, 1.0, &state, work, &id) == AT_ERR_ARG);
    allowed[0] = 3; /* logits 3.0 at ids 3 and 1: greedy takes the first in allowed order */
    CHECK(at_sample(logits, 8, allowed, 4, 0.0, 1.0, &state, work, &id) == AT_OK && id == 3);
}

int main(void) {
    test_errors();
    test_codec();
    test_sampler();
    printf("test_api: %s (%d failed checks)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
