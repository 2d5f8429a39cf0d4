/* The C API (alignts.h) on the cases scripts/native_cases.py writes into DIR/cases.txt:
 *   forecast NAME BUNDLE B C L H TOL NQ     then lines "x ..." (B*C*L), "q ..." (NQ levels), "y ..." (B*C*H
 *                                          Python's point forecast), "yq ..." (B*C*H*NQ Python's quantiles)
 *   refuse NAME BUNDLE PHRASE...           alignts_open + alignts_plan + one forecast must fail, and
 *                                          alignts_last_error must contain PHRASE (the rest of the line)
 * Forecasts must match within TOL x max(1, |y|). Also: NULL arguments, a call before alignts_plan, a wrong
 * channel count, two handles forecasting from two threads at once, and per forecast case the stream calls
 * (stream_case). Exit 0 when all pass. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts.h"

static int failures = 0;
#define CHECK(cond, ...)                     \
    do {                                     \
        if (!(cond)) {                       \
            fprintf(stderr, "FAIL: ");       \
            fprintf(stderr, __VA_ARGS__);    \
            fputc('\n', stderr);             \
            failures++;                      \
        }                                    \
    } while (0)

static double *read_values(FILE *f, const char *tag, size_t n) {
    char t[16];
    size_t i;
    double *v = (double *)malloc((n ? n : 1) * sizeof(double));
    if (!v || fscanf(f, "%15s", t) != 1 || strcmp(t, tag) != 0) {
        free(v);
        return NULL;
    }
    for (i = 0; i < n; i++)
        if (fscanf(f, "%lf", &v[i]) != 1) {
            free(v);
            return NULL;
        }
    return v;
}

typedef struct {
    alignts *h;
    const double *x;
    size_t B, C, L, H;
    double *out;
    int rc;
} job;

static void *run_job(void *arg) {
    job *j = (job *)arg;
    int r;
    for (r = 0; r < 3 && j->rc == 0; r++) j->rc = alignts_forecast(j->h, j->x, j->B, j->C, j->L, j->out, NULL, 0, NULL);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ streams */

/* The reference window of channel c: the last min(t, L) points of series v (v[i * C + c], i < t), NaN filled by
 * the linear rule between the nearest observations (the ends: the nearest one), left-padded with the first. */
static void reference_window(const double *v, size_t t, size_t C, size_t c, size_t L, double *dst) {
    size_t n = t < L ? t : L, i, pad = L - n;
    const double *w = v + (t - n) * C;
    for (i = 0; i < n; i++) {
        double y = w[i * C + c];
        if (y != y) {
            long a = (long)i, b = (long)i;
            while (a >= 0 && w[(size_t)a * C + c] != w[(size_t)a * C + c]) a--;
            while ((size_t)b < n && w[(size_t)b * C + c] != w[(size_t)b * C + c]) b++;
            if (a < 0) y = w[(size_t)b * C + c];
            else if ((size_t)b >= n) y = w[(size_t)a * C + c];
            else {
                double ya = w[(size_t)a * C + c], yb = w[(size_t)b * C + c];
                y = (yb - ya) / (double)(b - a) * ((double)i - (double)a) + ya;
            }
        }
        dst[pad + i] = y;
    }
    for (i = 0; i < pad; i++) dst[i] = dst[pad];
}

/* The stream's forecast after t points of v equals alignts_forecast's on the reference windows, bit for bit. */
static void check_stream_forecast(const char *name, const char *when, alignts *h, alignts_stream *s, int injective,
                                  const double *v, size_t t, size_t C, size_t L, size_t H, const double *q, size_t nq) {
    double *win = (double *)malloc(C * L * sizeof(double)), *o1 = (double *)calloc(C * H, sizeof(double));
    double *o2 = (double *)calloc(C * H, sizeof(double)), *q1 = (double *)calloc(C * H * (nq ? nq : 1), 8);
    double *q2 = (double *)calloc(C * H * (nq ? nq : 1), 8);
    size_t c;
    int rc1, rc2;
    for (c = 0; c < C; c++) reference_window(v, t, C, c, L, win + c * L);
    rc1 = alignts_stream_forecast(s, o1, nq ? q : NULL, nq, nq ? q1 : NULL);
    rc2 = alignts_forecast(h, win, injective ? C : 1, injective ? 1 : C, L, o2, nq ? q : NULL, nq, nq ? q2 : NULL);
    CHECK(rc1 == ALIGNTS_OK && rc2 == ALIGNTS_OK, "%s: stream %s: %s / %s", name, when, alignts_stream_last_error(s),
          alignts_last_error(h));
    CHECK(alignts_stream_count(s) == (int64_t)t, "%s: stream %s: count %lld, expected %zu", name, when,
          (long long)alignts_stream_count(s), t);
    CHECK(memcmp(o1, o2, C * H * sizeof(double)) == 0 && memcmp(q1, q2, C * H * nq * sizeof(double)) == 0,
          "%s: stream %s: the forecast differs from alignts_forecast on the same window", name, when);
    free(win);
    free(o1);
    free(o2);
    free(q1);
    free(q2);
}

/* A stream on planned h: fed point by point and in blocks, a short window, missing values, save / restore
 * mid-stream, damaged and mismatched states, inf, a channel with nothing observed. The series: the case's
 * contexts stretched to 2L + 3 points, some missing. */
static void stream_case(const char *name, alignts *h, const alignts_plan_info *info, const double *x, size_t S,
                        size_t L, size_t H, const double *q, size_t nq) {
    const int injective = !strcmp(info->paradigm, "injective");
    const size_t C = info->n_channels ? (size_t)info->n_channels : S, T = 2 * L + 3, mid = L + 2;
    double *v = (double *)malloc(T * C * sizeof(double)), *o1 = (double *)calloc(C * H, sizeof(double));
    double *o2 = (double *)calloc(C * H, sizeof(double)), *nan_pt = (double *)malloc(C * sizeof(double));
    unsigned char *st = NULL, *bad = NULL;
    alignts_stream *s = NULL, *r = NULL;
    size_t i, c, size;
    int rc;
    if (C > S) { /* the case's batch holds fewer series than the channels */
        free(v), free(o1), free(o2), free(nan_pt);
        return;
    }
    for (i = 0; i < T; i++)
        for (c = 0; c < C; c++) /* the context, then it again shifted by 1% a lap; channel c misses every (5+c)th */
            v[i * C + c] = (i % (5 + c) == 3) ? NAN : x[c * L + i % L] * (1.0 + 0.01 * (double)(i / L));
    for (c = 0; c < C; c++) nan_pt[c] = NAN;
    rc = alignts_stream_open(h, C, &s);
    CHECK(rc == ALIGNTS_OK, "%s: stream open: %s", name, alignts_last_error(h));
    if (rc != ALIGNTS_OK) goto done;
    CHECK(alignts_stream_bytes(s) >= C * L * sizeof(double), "%s: stream bytes %zu", name, alignts_stream_bytes(s));
    rc = alignts_stream_forecast(s, o1, NULL, 0, NULL);
    CHECK(rc == ALIGNTS_ERR_INPUT && strstr(alignts_stream_last_error(s), "no point"), "%s: empty stream: %s", name,
          alignts_stream_last_error(s));
    for (i = 0; i < L / 2; i++) CHECK(alignts_stream_update(s, v + i * C, 1) == ALIGNTS_OK, "%s: update", name);
    check_stream_forecast(name, "short window", h, s, injective, v, L / 2, C, L, H, q, nq);
    CHECK(alignts_stream_update(s, v + (L / 2) * C, mid - L / 2) == ALIGNTS_OK, "%s: block update", name);
    check_stream_forecast(name, "one block", h, s, injective, v, mid, C, L, H, q, nq);
    /* save mid-stream; a second stream restored from it forecasts what the first does after the same points */
    size = alignts_stream_state_size(s);
    st = (unsigned char *)malloc(size + 1);
    bad = (unsigned char *)malloc(size + 1);
    CHECK(alignts_stream_save(s, st, size - 1) == ALIGNTS_ERR_ARG, "%s: save into a short buffer", name);
    CHECK(alignts_stream_save(s, st + 1, size) == ALIGNTS_OK, "%s: save: %s", name, alignts_stream_last_error(s));
    for (i = mid; i < T; i++) CHECK(alignts_stream_update(s, v + i * C, 1) == ALIGNTS_OK, "%s: update", name);
    check_stream_forecast(name, "point by point", h, s, injective, v, T, C, L, H, q, nq);
    rc = alignts_stream_open(h, C, &r);
    CHECK(rc == ALIGNTS_OK, "%s: second stream: %s", name, alignts_last_error(h));
    if (rc != ALIGNTS_OK) goto done;
    CHECK(alignts_stream_update(r, v, 2) == ALIGNTS_OK, "%s: update r", name);
    CHECK(alignts_stream_restore(r, st + 1, size) == ALIGNTS_OK, "%s: restore: %s", name, alignts_stream_last_error(r));
    CHECK(alignts_stream_count(r) == (int64_t)mid, "%s: restored count %lld", name, (long long)alignts_stream_count(r));
    CHECK(alignts_stream_update(r, v + mid * C, T - mid) == ALIGNTS_OK, "%s: update r", name);
    check_stream_forecast(name, "restored", h, r, injective, v, T, C, L, H, q, nq);
    CHECK(alignts_stream_forecast(s, o1, NULL, 0, NULL) == ALIGNTS_OK &&
          alignts_stream_forecast(r, o2, NULL, 0, NULL) == ALIGNTS_OK && memcmp(o1, o2, C * H * sizeof(double)) == 0,
          "%s: the restored stream forecasts otherwise than the saved one", name);
    /* states of another channel count or context, another format, damaged: refused, the stream left as it was */
    {
        static const struct { size_t at; uint64_t add; const char *phrase; } cases[] = {
            {8, 1, "channels"}, {16, 1, "L="}, {0, 1, "not a stream state"}, {4, 1, "version"}, {32, 1, "damaged"}};
        size_t k;
        for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            uint64_t f = 0;
            memcpy(bad, st + 1, size);
            memcpy(&f, bad + cases[k].at, cases[k].at % 8 ? 4 : 8); /* little-endian test machines: low bytes */
            f += cases[k].add;
            memcpy(bad + cases[k].at, &f, cases[k].at % 8 ? 4 : 8);
            rc = alignts_stream_restore(r, bad, size);
            CHECK(rc == ALIGNTS_ERR_INPUT && strstr(alignts_stream_last_error(r), cases[k].phrase),
                  "%s: mismatched state %zu: %d '%s' lacks '%s'", name, k, rc, alignts_stream_last_error(r),
                  cases[k].phrase);
        }
        CHECK(alignts_stream_restore(r, st + 1, size - 8) == ALIGNTS_ERR_INPUT, "%s: a truncated state", name);
        CHECK(alignts_stream_count(r) == (int64_t)T, "%s: a refused state changed the stream", name);
    }
    if (injective) { /* a real stream of another channel count: its state is refused */
        alignts_stream *one = NULL;
        if (C > 1 && alignts_stream_open(h, C - 1, &one) == ALIGNTS_OK) {
            rc = alignts_stream_restore(one, st + 1, size);
            CHECK(rc == ALIGNTS_ERR_INPUT && strstr(alignts_stream_last_error(one), "channels"),
                  "%s: a state of %zu channels restored into %zu", name, C, C - 1);
        }
        alignts_stream_close(one);
    }
    /* inf: refused with a message, nothing of the call ingested */
    { /* two points, the second with an inf */
        double two[2 * 64];
        if (C <= 64) {
            memcpy(two, v, C * sizeof(double));
            memcpy(two + C, v, C * sizeof(double));
            two[C + C - 1] = INFINITY;
            rc = alignts_stream_update(s, two, 2);
            CHECK(rc == ALIGNTS_ERR_INPUT && strstr(alignts_stream_last_error(s), "inf") &&
                  alignts_stream_count(s) == (int64_t)T, "%s: inf: %d %s", name, rc, alignts_stream_last_error(s));
        }
    }
    check_stream_forecast(name, "after inf", h, s, injective, v, T, C, L, H, q, nq);
    /* a window with nothing observed in a channel is refused */
    for (i = 0; i < L; i++) CHECK(alignts_stream_update(s, nan_pt, 1) == ALIGNTS_OK, "%s: NaN update", name);
    rc = alignts_stream_forecast(s, o1, NULL, 0, NULL);
    CHECK(rc == ALIGNTS_ERR_INPUT && strstr(alignts_stream_last_error(s), "no observed value"), "%s: all missing: %s",
          name, alignts_stream_last_error(s));
    printf("%-28s stream: %zu channels x L=%zu, %zu bytes, state %zu bytes; forecasts equal alignts_forecast's\n",
           name, C, L, alignts_stream_bytes(s), size);
done:
    alignts_stream_close(s);
    alignts_stream_close(r);
    free(v);
    free(o1);
    free(o2);
    free(nan_pt);
    free(st);
    free(bad);
}

static void forecast_case(const char *dir, const char *name, const char *rel, size_t B, size_t C, size_t L, size_t H,
                          double tol, size_t nq, const double *x, const double *q, const double *y, const double *yq) {
    char path[4096];
    alignts *h = NULL, *h2 = NULL;
    alignts_plan_params p;
    alignts_plan_info info;
    double *out = (double *)calloc(B * C * H, sizeof(double)), *qo = (double *)calloc(B * C * H * (nq ? nq : 1), 8);
    double *o1 = (double *)calloc(B * C * H, sizeof(double)), *o2 = (double *)calloc(B * C * H, sizeof(double));
    double worst = 0.0, worst_q = 0.0;
    size_t i;
    int rc;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    rc = alignts_open(path, NULL, &h);
    CHECK(rc == ALIGNTS_OK, "%s: open: %s", name, alignts_last_error(h));
    if (rc != ALIGNTS_OK) goto done;
    /* a forecast before the plan is refused with a message */
    rc = alignts_forecast(h, x, B, C, L, out, NULL, 0, NULL);
    CHECK(rc == ALIGNTS_ERR_ARG && strstr(alignts_last_error(h), "alignts_plan"), "%s: forecast before plan: %d %s",
          name, rc, alignts_last_error(h));
    alignts_plan_params_init(&p);
    p.context = (long)L;
    p.horizon = (long)H;
    p.max_series = (long)(B * C);
    rc = alignts_plan(h, &p, &info);
    CHECK(rc == ALIGNTS_OK, "%s: plan: %s", name, alignts_last_error(h));
    if (rc != ALIGNTS_OK) goto done;
    CHECK(info.workspace_bytes > 0 && info.model_bytes > 0, "%s: plan info bytes", name);
    rc = alignts_forecast(h, x, B, C, L, out, nq ? q : NULL, nq, nq ? qo : NULL);
    CHECK(rc == ALIGNTS_OK, "%s: forecast: %s", name, alignts_last_error(h));
    if (rc != ALIGNTS_OK) goto done;
    for (i = 0; i < B * C * H; i++) {
        double d = fabs(out[i] - y[i]) / fmax(1.0, fabs(y[i]));
        if (!(d <= worst)) worst = d;
    }
    for (i = 0; i < B * C * H * nq; i++) {
        double d = fabs(qo[i] - yq[i]) / fmax(1.0, fabs(yq[i]));
        if (!(d <= worst_q)) worst_q = d;
    }
    CHECK(worst <= tol, "%s: forecast differs from Python by %.3g (relative) > %.3g", name, worst, tol);
    CHECK(worst_q <= tol, "%s: quantiles differ from Python by %.3g (relative) > %.3g", name, worst_q, tol);
    printf("%-28s max |C - Python| / max(1, |y|): forecast %.3g, quantiles %.3g (tol %.3g); workspace %zu B, "
           "model %zu B, kv %zu B\n", name, worst, worst_q, tol, info.workspace_bytes, info.model_bytes, info.kv_bytes);
    /* too many series for the plan, and a wrong channel count (Internal, Bridging) */
    rc = alignts_forecast(h, x, B * C + 1, 1, L, out, NULL, 0, NULL);
    CHECK(rc == ALIGNTS_ERR_ARG && strstr(alignts_last_error(h), "max_series"), "%s: too many series: %d %s", name, rc,
          alignts_last_error(h));
    if (info.n_channels > 1) {
        rc = alignts_forecast(h, x, 1, 1, L, out, NULL, 0, NULL);
        CHECK(rc == ALIGNTS_ERR_INPUT && strstr(alignts_last_error(h), "channels"), "%s: wrong C: %s", name,
              alignts_last_error(h));
    }
    stream_case(name, h, &info, x, B * C, L, H, q, nq);
    /* two handles, two threads, the same answer as one */
    rc = alignts_open(path, NULL, &h2);
    if (rc == ALIGNTS_OK) rc = alignts_plan(h2, &p, NULL);
    CHECK(rc == ALIGNTS_OK, "%s: second handle: %s", name, alignts_last_error(h2));
    if (rc == ALIGNTS_OK) {
        pthread_t t1, t2;
        job j1 = {h, x, B, C, L, H, o1, 0}, j2 = {h2, x, B, C, L, H, o2, 0};
        pthread_create(&t1, NULL, run_job, &j1);
        pthread_create(&t2, NULL, run_job, &j2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        CHECK(j1.rc == 0 && j2.rc == 0, "%s: threads: %s / %s", name, alignts_last_error(h), alignts_last_error(h2));
        CHECK(memcmp(o1, out, B * C * H * sizeof(double)) == 0 && memcmp(o2, out, B * C * H * sizeof(double)) == 0,
              "%s: two threads gave other forecasts than one", name);
    }
done:
    alignts_close(h);
    alignts_close(h2);
    free(out);
    free(qo);
    free(o1);
    free(o2);
}

static void refuse_case(const char *dir, const char *name, const char *rel, const char *phrase) {
    char path[4096];
    alignts *h = NULL;
    int rc;
    double x[4096], out[4096];
    memset(x, 0, sizeof x);
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    rc = alignts_open(path, NULL, &h);
    if (rc == ALIGNTS_OK) {
        alignts_plan_info info;
        rc = alignts_plan(h, NULL, &info);
        if (rc == ALIGNTS_OK) { /* a fuzzed file may only fail at the forecast */
            size_t i, L = (size_t)info.context;
            for (i = 0; i < L && i < 4096; i++) x[i] = sin((double)i);
            rc = L <= 4096 ? alignts_forecast(h, x, 1, info.n_channels ? (size_t)info.n_channels : 1, L, out, NULL, 0,
                                              NULL)
                           : ALIGNTS_ERR_ARG;
        }
    }
    CHECK(rc != ALIGNTS_OK, "%s: a damaged bundle was accepted", name);
    CHECK(h && alignts_last_error(h)[0] && strstr(alignts_last_error(h), phrase), "%s: message '%s' lacks '%s'", name,
          alignts_last_error(h), phrase);
    printf("%-28s refused: %.150s\n", name, alignts_last_error(h));
    alignts_close(h);
}

int main(int argc, char **argv) {
    char path[4096], kind[32], name[128], rel[1024];
    FILE *f;
    alignts *h = NULL;
    int n_cases = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: test_libalignts CASES_DIR (written by scripts/native_cases.py)\n");
        return 2;
    }
    /* arguments */
    CHECK(alignts_open("x", NULL, NULL) == ALIGNTS_ERR_ARG, "open with out == NULL");
    CHECK(alignts_open(NULL, NULL, &h) == ALIGNTS_ERR_ARG && strstr(alignts_last_error(h), "NULL"), "open NULL dir");
    alignts_close(h);
    h = NULL;
    CHECK(alignts_open("/nonexistent/bundle", NULL, &h) == ALIGNTS_ERR_BUNDLE && strstr(alignts_last_error(h), "does not exist"),
          "missing bundle: %s", alignts_last_error(h));
    CHECK(alignts_plan(h, NULL, NULL) == ALIGNTS_ERR_ARG, "plan on a failed handle");
    alignts_close(h);
    alignts_close(NULL);
    snprintf(path, sizeof path, "%s/cases.txt", argv[1]);
    if (!(f = fopen(path, "r"))) {
        fprintf(stderr, "cannot open %s\n", path);
        return 2;
    }
    while (fscanf(f, "%31s %127s %1023s", kind, name, rel) == 3) {
        n_cases++;
        if (!strcmp(kind, "forecast")) {
            size_t B, C, L, H, nq;
            double tol, *x, *q = NULL, *y, *yq = NULL;
            if (fscanf(f, "%zu %zu %zu %zu %lf %zu", &B, &C, &L, &H, &tol, &nq) != 6) break;
            x = read_values(f, "x", B * C * L);
            q = read_values(f, "q", nq);
            y = read_values(f, "y", B * C * H);
            yq = read_values(f, "yq", B * C * H * nq);
            if (!x || !q || !y || !yq) {
                fprintf(stderr, "malformed case %s\n", name);
                return 2;
            }
            forecast_case(argv[1], name, rel, B, C, L, H, tol, nq, x, q, y, yq);
            free(x);
            free(q);
            free(y);
            free(yq);
        } else if (!strcmp(kind, "refuse")) {
            char phrase[512] = "";
            if (!fgets(phrase, sizeof phrase, f)) break;
            phrase[strcspn(phrase, "\n")] = '\0';
            refuse_case(argv[1], name, rel, phrase[0] == ' ' ? phrase + 1 : phrase);
        } else {
            fprintf(stderr, "unknown case kind %s\n", kind);
            return 2;
        }
    }
    fclose(f);
    CHECK(n_cases > 0, "no cases in %s", path);
    printf("%d cases, %d failures\n", n_cases, failures);
    return failures ? 1 : 0;
}
