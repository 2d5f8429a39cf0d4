/* Compare the C kernels with the golden vectors of the Python (numba) kernels.
 *
 * usage: golden_test KERNEL GOLDEN_DIR [--flip]
 * KERNEL: norm | patch | scaler | digits | sampler | stream. --flip changes one expected value first and
 * inverts the verdict: exit 0 only if the comparison caught the change (the ctest golden_*_flipped tests).
 *
 * Tolerance: integers (ids, lengths, n_parsed, draws) must be equal; floats must satisfy
 * |c - python| <= 1e-12 + 1e-12 * |python| (NaN equals NaN). Both sides do the same double operations in the
 * same order, so they agree bit for bit in practice; the tolerance only allows for a libm that rounds
 * sqrt/pow/exp differently. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
#include "golden_io.h"

#define RTOL 1e-12
#define ATOL 1e-12

static size_t failures = 0;

static void check_rc(const char *what, int rc) {
    if (rc != AT_OK) {
        fprintf(stderr, "%s returned %d (%s)\n", what, rc, at_status_str(rc));
        failures++;
    }
}

static void cmp_f(const char *what, const double *got, const gt_array *want) {
    failures += gt_cmp_f64(what, got, want->f, want->n, RTOL, ATOL);
}

static void cmp_i(const char *what, const int64_t *got, const gt_array *want) {
    failures += gt_cmp_i64(what, got, want->i, want->n);
}

static char *key(const char *prefix, const char *name) {
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s.%s", prefix, name);
    return buf;
}

static void test_norm(const gt_file *g) {
    const gt_array *x = gt_f64(g, "x"), *mean = gt_f64(g, "mean"), *stdv = gt_f64(g, "std"), *y = gt_f64(g, "y");
    size_t S = x->dims[0], L = x->dims[1];
    double *m = malloc(S * sizeof(double)), *s = malloc(S * sizeof(double)), *out = malloc(S * L * sizeof(double));
    check_rc("at_instance_stats", at_instance_stats(x->f, S, L, gt_f64(g, "eps")->f[0], m, s, NULL));
    cmp_f("norm.mean", m, mean);
    cmp_f("norm.std", s, stdv);
    check_rc("at_instance_norm", at_instance_norm(x->f, S, L, mean->f, stdv->f, out));
    cmp_f("norm.y", out, y);
    check_rc("at_instance_denorm", at_instance_denorm(y->f, S, L, mean->f, stdv->f, out));
    cmp_f("norm.back", out, gt_f64(g, "back"));
    free(m);
    free(s);
    free(out);
}

static void test_patch(const gt_file *g) {
    const char *cases[] = {"a", "b", "c", "d"};
    size_t c;
    for (c = 0; c < 4; c++) {
        const char *k = cases[c];
        const gt_array *x = gt_f64(g, key(k, "x")), *params = gt_i64(g, key(k, "params"));
        size_t S = x->dims[0], L = x->dims[1], P = (size_t)params->i[0], stride = (size_t)params->i[1];
        size_t N = at_n_patches(L, P, stride);
        double *out = malloc(S * N * P * sizeof(double)), *m = malloc(S * sizeof(double));
        double *s = malloc(S * sizeof(double)), *work = malloc(L * sizeof(double));
        char what[64];
        if (N * P * S != gt_f64(g, key(k, "patches"))->n) {
            fprintf(stderr, "patch %s: C gives %zu patches, golden has another count\n", k, N);
            failures++;
        } else {
            check_rc("at_patchify", at_patchify(x->f, S, L, P, stride, out));
            snprintf(what, sizeof(what), "patch.%s.patches", k);
            cmp_f(what, out, gt_f64(g, key(k, "patches")));
            check_rc("at_norm_patchify", at_norm_patchify(x->f, S, L, P, stride, gt_f64(g, key(k, "eps"))->f[0],
                                                          (int)params->i[2], out, m, s, work, NULL));
            snprintf(what, sizeof(what), "patch.%s.norm_patches", k);
            cmp_f(what, out, gt_f64(g, key(k, "norm_patches")));
            snprintf(what, sizeof(what), "patch.%s.mean", k);
            cmp_f(what, m, gt_f64(g, key(k, "mean")));
            snprintf(what, sizeof(what), "patch.%s.std", k);
            cmp_f(what, s, gt_f64(g, key(k, "std")));
        }
        free(out);
        free(m);
        free(s);
        free(work);
    }
}

static void test_scaler(const gt_file *g) {
    const char *cases[] = {"a", "b", "c", "d", "e", "f"};
    const gt_array *x = gt_f64(g, "x");
    size_t S = x->dims[0], L = x->dims[1], c;
    double *off = malloc(S * sizeof(double)), *sc = malloc(S * sizeof(double)), *work = malloc(L * sizeof(double));
    for (c = 0; c < 6; c++) {
        const char *k = cases[c];
        const gt_array *p = gt_f64(g, key(k, "params"));
        char what[64];
        check_rc("at_llmtime_scaler", at_llmtime_scaler(x->f, S, L, p->f[0], p->f[1], (int)p->f[2], off, sc, work,
                                                        NULL));
        snprintf(what, sizeof(what), "scaler.%s.offset", k);
        cmp_f(what, off, gt_f64(g, key(k, "offset")));
        snprintf(what, sizeof(what), "scaler.%s.scale", k);
        cmp_f(what, sc, gt_f64(g, key(k, "scale")));
    }
    free(off);
    free(sc);
    free(work);
}

static at_codec_table load_table(const gt_file *g, int k) {
    at_codec_table t;
    char name[32];
    const gt_array *a;
    int d;
    memset(&t, 0, sizeof(t));
    snprintf(name, sizeof(name), "t%d.digits", k);
    a = gt_i64(g, name);
    for (d = 0; d < 10; d++) t.digit_ids[d] = a->i[d];
    snprintf(name, sizeof(name), "t%d.vsep", k);
    a = gt_i64(g, name);
    t.value_sep = a->i;
    t.n_value_sep = a->n;
    snprintf(name, sizeof(name), "t%d.dsep", k);
    a = gt_i64(g, name);
    t.digit_sep = a->i;
    t.n_digit_sep = a->n;
    snprintf(name, sizeof(name), "t%d.minus", k);
    t.minus_id = gt_i64(g, name)->i[0];
    snprintf(name, sizeof(name), "t%d.end", k);
    a = gt_i64(g, name);
    t.end_ids = a->i;
    t.n_end_ids = a->n;
    return t;
}

static void decode_case(const gt_file *g, const char *k, const at_codec_table *t, int p, size_t H) {
    const gt_array *ids = gt_i64(g, key(k, "ids")), *lengths = gt_i64(g, key(k, "lengths"));
    size_t S = ids->dims[0], T = ids->dims[1];
    double *values = malloc(S * H * sizeof(double));
    int64_t *n_parsed = malloc(S * sizeof(int64_t));
    char what[64];
    check_rc("at_decode_digits", at_decode_digits(ids->i, S, T, lengths->i, t, p, H, values, n_parsed));
    snprintf(what, sizeof(what), "digits.%s.n_parsed", k);
    cmp_i(what, n_parsed, gt_i64(g, key(k, "n_parsed")));
    snprintf(what, sizeof(what), "digits.%s.values", k);
    cmp_f(what, values, gt_f64(g, key(k, "values")));
    free(values);
    free(n_parsed);
}

static void test_digits(const gt_file *g) {
    at_codec_table tables[2];
    const char *enc[] = {"e0", "e1", "e2"}, *dec[] = {"d0", "d1"};
    size_t c;
    tables[0] = load_table(g, 0);
    tables[1] = load_table(g, 1);
    check_rc("at_codec_validate t0", at_codec_validate(&tables[0]));
    check_rc("at_codec_validate t1", at_codec_validate(&tables[1]));
    for (c = 0; c < 3; c++) {
        const char *k = enc[c];
        const gt_array *params = gt_i64(g, key(k, "params")), *x = gt_f64(g, key(k, "x"));
        const gt_array *ids = gt_i64(g, key(k, "ids"));
        const at_codec_table *t = &tables[params->i[0]];
        int p = (int)params->i[1];
        size_t S = x->dims[0], L = x->dims[1], T = ids->dims[1];
        int64_t *out = malloc(S * T * sizeof(int64_t)), *lengths = malloc(S * sizeof(int64_t));
        char what[64];
        check_rc("at_encode_lengths", at_encode_lengths(x->f, S, L, t, p, lengths));
        snprintf(what, sizeof(what), "digits.%s.lengths", k);
        cmp_i(what, lengths, gt_i64(g, key(k, "lengths")));
        check_rc("at_encode_digits", at_encode_digits(x->f, S, L, t, p, out, T, lengths));
        snprintf(what, sizeof(what), "digits.%s.ids", k);
        cmp_i(what, out, ids);
        decode_case(g, k, t, p, (size_t)params->i[2]);
        free(out);
        free(lengths);
    }
    for (c = 0; c < 2; c++) {
        const gt_array *params = gt_i64(g, key(dec[c], "params"));
        decode_case(g, dec[c], &tables[params->i[0]], (int)params->i[1], (size_t)params->i[2]);
    }
}

static void test_sampler(const gt_file *g) {
    const char *cases[] = {"c0", "c1", "c2", "c3", "c4"};
    const gt_array *logits = gt_f64(g, "logits"), *allowed = gt_i64(g, "allowed");
    size_t R = logits->dims[0], V = logits->dims[1], c, r, d, i;
    float *lf = malloc(R * V * sizeof(float));
    double *work = malloc(2 * allowed->n * sizeof(double));
    for (i = 0; i < R * V; i++) lf[i] = (float)logits->f[i]; /* float32 values, exact in the file */
    for (c = 0; c < 5; c++) {
        const char *k = cases[c];
        const gt_array *p = gt_f64(g, key(k, "params")), *seed = gt_i64(g, key(k, "seed"));
        const gt_array *draws = gt_i64(g, key(k, "draws"));
        size_t D = draws->dims[1];
        uint64_t s0 = ((uint64_t)seed->i[0] << 32) | (uint64_t)seed->i[1];
        int64_t *out = malloc(R * D * sizeof(int64_t));
        char what[64];
        for (r = 0; r < R; r++) {
            uint64_t state = s0 + r;
            for (d = 0; d < D; d++)
                check_rc("at_sample", at_sample(lf + r * V, V, allowed->i, allowed->n, p->f[0], p->f[1], &state,
                                                work, &out[r * D + d]));
        }
        snprintf(what, sizeof(what), "sampler.%s.draws", k);
        cmp_i(what, out, draws);
        free(out);
    }
    free(lf);
    free(work);
}

static void test_stream(const gt_file *g) {
    const gt_array *x = gt_f64(g, "w.x"), *chunks = gt_i64(g, "w.chunks"), *px = gt_f64(g, "ph.x");
    const gt_array *pp = gt_f64(g, "ph.params");
    const size_t C = x->dims[1], W = (size_t)gt_i64(g, "w.window")->i[0];
    double *buf = malloc(C * W * sizeof(double)), *mean = calloc(C, sizeof(double)), *m2 = calloc(C, sizeof(double));
    int64_t *q = calloc(2 * C * W, sizeof(int64_t)), *iv = calloc(6 * C + 1, sizeof(int64_t));
    int64_t *cnt = iv, *hmin = iv + C, *nmin = iv + 2 * C, *hmax = iv + 3 * C, *nmax = iv + 4 * C, *seen = iv + 6 * C;
    size_t i, t = 0, PC = px->dims[1], PK = px->dims[0];
    double *state = calloc(4 * PC, sizeof(double));
    uint8_t *al = malloc(PK * PC);
    int64_t *al64 = malloc(PK * PC * sizeof(int64_t));
    for (i = 0; i < C * W; i++) buf[i] = NAN;
    for (i = 0; i < chunks->n; i++) {
        check_rc("at_window_push", at_window_push(buf, C, W, seen, x->f + t * C, (size_t)chunks->i[i], cnt, mean, m2,
                                                  q, hmin, nmin, q + C * W, hmax, nmax));
        t += (size_t)chunks->i[i];
    }
    cmp_f("stream.w.buf", buf, gt_f64(g, "w.buf"));
    cmp_i("stream.w.seen", seen, gt_i64(g, "w.seen"));
    cmp_i("stream.w.cnt", cnt, gt_i64(g, "w.cnt"));
    cmp_f("stream.w.mean", mean, gt_f64(g, "w.mean"));
    cmp_f("stream.w.m2", m2, gt_f64(g, "w.m2"));
    cmp_i("stream.w.qmin", q, gt_i64(g, "w.qmin"));
    cmp_i("stream.w.hmin", hmin, gt_i64(g, "w.hmin"));
    cmp_i("stream.w.nmin", nmin, gt_i64(g, "w.nmin"));
    cmp_i("stream.w.qmax", q + C * W, gt_i64(g, "w.qmax"));
    cmp_i("stream.w.hmax", hmax, gt_i64(g, "w.hmax"));
    cmp_i("stream.w.nmax", nmax, gt_i64(g, "w.nmax"));
    check_rc("at_page_hinkley", at_page_hinkley(px->f, PK, PC, state, pp->f[0], pp->f[1], pp->f[2], pp->f[3], al));
    for (i = 0; i < PK * PC; i++) al64[i] = al[i];
    cmp_i("stream.ph.alarms", al64, gt_i64(g, "ph.alarms"));
    cmp_f("stream.ph.state", state, gt_f64(g, "ph.state"));
    free(buf), free(mean), free(m2), free(q), free(iv), free(state), free(al), free(al64);
    { /* incremental patching, fed in the same chunks */
        const gt_array *pp = gt_i64(g, "pp.params");
        const size_t K = (size_t)pp->i[0], P = (size_t)pp->i[1], S = (size_t)pp->i[2];
        double *ring = malloc(C * K * P * sizeof(double));
        for (i = 0; i < C * K * P; i++) ring[i] = NAN;
        for (i = 0, t = 0; i < chunks->n; i++) {
            check_rc("at_patch_push", at_patch_push(ring, C, K, P, x->f + t * C, (size_t)chunks->i[i], (int64_t)t, S));
            t += (size_t)chunks->i[i];
        }
        cmp_f("stream.pp.ring", ring, gt_f64(g, "pp.ring"));
        free(ring);
    }
    { /* digits under a frozen scaler, both tables */
        const gt_array *z = gt_f64(g, "ef.x");
        at_codec_table tables[2];
        int k;
        tables[0] = load_table(g, 0);
        tables[1] = load_table(g, 1);
        for (k = 0; k < 2; k++) {
            char name[32], what[64];
            const gt_array *prm, *sc, *want;
            size_t cap = z->n * 40, n_ids = 0;
            int64_t *ids = malloc(cap * sizeof(int64_t)), *lengths = malloc(z->n * sizeof(int64_t));
            snprintf(name, sizeof(name), "ef%d.params", k);
            prm = gt_i64(g, name);
            snprintf(name, sizeof(name), "ef%d.scaler", k);
            sc = gt_f64(g, name);
            check_rc("at_encode_fixed", at_encode_fixed(z->f, z->n, sc->f[0], sc->f[1], sc->f[2], (int)prm->i[1],
                                                        &tables[prm->i[0]], ids, cap, lengths, &n_ids));
            snprintf(name, sizeof(name), "ef%d.ids", k);
            want = gt_i64(g, name);
            snprintf(what, sizeof(what), "stream.ef%d.n_ids", k);
            if (n_ids != want->n) {
                fprintf(stderr, "%s: %zu ids, expected %zu\n", what, n_ids, want->n);
                failures++;
            } else {
                snprintf(what, sizeof(what), "stream.ef%d.ids", k);
                cmp_i(what, ids, want);
            }
            snprintf(name, sizeof(name), "ef%d.lengths", k);
            snprintf(what, sizeof(what), "stream.ef%d.lengths", k);
            cmp_i(what, lengths, gt_i64(g, name));
            if (at_encode_fixed(z->f, z->n, sc->f[0], sc->f[1], sc->f[2], (int)prm->i[1], &tables[prm->i[0]], ids,
                                n_ids - 1, lengths, &n_ids) != AT_ERR_SPACE) {
                fprintf(stderr, "stream.ef%d: one id too few was not AT_ERR_SPACE\n", k);
                failures++;
            }
            free(ids), free(lengths);
        }
    }
}

int main(int argc, char **argv) {
    static const struct {
        const char *kernel;
        void (*run)(const gt_file *);
        const char *flip; /* the expected array --flip changes */
    } tests[] = {{"norm", test_norm, "y"},           {"patch", test_patch, "a.norm_patches"},
                 {"scaler", test_scaler, "a.scale"}, {"digits", test_digits, "e0.ids"},
                 {"sampler", test_sampler, "c1.draws"}, {"stream", test_stream, "w.mean"}};
    gt_file g;
    size_t k;
    if (argc < 3 || (argc == 4 && strcmp(argv[3], "--flip") != 0) || argc > 4) {
        fprintf(stderr, "usage: %s KERNEL GOLDEN_DIR [--flip]\n", argv[0]);
        return 2;
    }
    for (k = 0; k < sizeof(tests) / sizeof(tests[0]); k++) {
        if (strcmp(argv[1], tests[k].kernel) != 0) continue;
        if (gt_load(argv[2], argv[1], &g) != 0) return 2;
        if (argc == 4) gt_flip(&g, tests[k].flip);
        tests[k].run(&g);
        gt_free(&g);
        if (argc == 4) {
            printf("%s --flip: %s\n", argv[1], failures ? "the changed value was caught" : "NOT CAUGHT");
            return failures ? 0 : 1;
        }
        printf("%s: %s\n", argv[1], failures ? "FAILED" : "passed");
        return failures ? 1 : 0;
    }
    fprintf(stderr, "unknown kernel '%s'\n", argv[1]);
    return 2;
}
