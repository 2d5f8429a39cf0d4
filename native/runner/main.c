/* alignts-run BUNDLE --data CSV [options]: forecast the next H steps of a CSV's series with an exported
 * alignts bundle, through llama.cpp's C API (no Python). Prints CSV: step,<column>... one row per step. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "csv.h"
#include "llm.h"
#include "rt_util.h"
#include "runner.h"

static const char USAGE[] =
    "usage: alignts-run BUNDLE --data CSV [--column NAME]... [--context L] [--horizon H]\n"
    "                   [--greedy] [--seed S] [--samples N] [--variant NAME] [--threads N] [--verbose]\n                   [--dump-prompt]\n"
    "\n"
    "Forecast the next H steps after the end of each series in CSV with an alignts bundle (Internal or\n"
    "Injective paradigm, GGUF variant) through llama.cpp. Prints CSV: a header 'step,<column>...' and one row\n"
    "per step (step = row number after the data, as `alignts forecast` numbers steps without dates).\n"
    "\n"
    "  BUNDLE          bundle folder (manifest.json + files); every file used is checked against its sha256\n"
    "  --data CSV      header row, one row per time step; the last L rows are the context\n"
    "  --column NAME   series to forecast (repeat for several). Injective: default every numeric column;\n"
    "                  Internal: maps CSV columns onto the model's channels (default: the fitted names)\n"
    "  --context L     context length (Injective: any L >= 2; Internal: must equal the model's L)\n"
    "  --horizon H     steps to forecast (Internal: <= the model's H)\n"
    "  --greedy        Injective: most likely allowed token at each step (deterministic)\n"
    "  --seed S        Injective: seed of the sampler's RNG (default: the manifest's seed)\n"
    "  --samples N     Injective: parallel samples, the forecast is their median (default: the manifest's)\n"
    "  --variant NAME  GGUF variant (default: the first gguf-* variant of the manifest)\n"
    "  --threads N     CPU threads for llama.cpp (default: all cores this process may use)\n"
    "  --verbose       show llama.cpp's log on stderr\n"
    "  --dump-prompt   Injective: print each series' prompt token ids on stderr (debugging)\n"
    "\n"
    "Exit status: 0 on success, 1 on an error (message on stderr), 2 on a usage error.\n";

static int parse_long(const char *flag, const char *s, long lo, long *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo) {
        fprintf(stderr, "alignts-run: error: %s '%s': expected an integer >= %ld.\n%s", flag, s, lo, USAGE);
        return -1;
    }
    *out = v;
    return 0;
}

/* Every value printed is finite, or the run fails with the reason (as alignts' Forecaster.forecast). */
static int check_finite(const forecast *f) {
    size_t i, bad = 0, first = 0;
    for (i = 0; i < f->n_series * f->horizon; i++)
        if (!isfinite(f->values[i]) && !bad++) first = i;
    if (!bad) return 0;
    return rt_fail("the forecast has %zu NaN/inf value(s) of %zu, e.g. series '%s' step %zu; expected finite numbers. "
                   "Fix: if the input is extreme, rescale it; otherwise the bundle is broken (NaN/inf weights or "
                   "normalization settings): re-export it.", bad, f->n_series * f->horizon,
                   f->names[first / f->horizon], f->first_step + first % f->horizon);
}

static void print_forecast(const forecast *f) {
    size_t s, h;
    char buf[40];
    fputs("step", stdout);
    for (s = 0; s < f->n_series; s++) {
        const char *n = f->names[s];
        if (strpbrk(n, ",\"\n\r")) { /* quote as CSV */
            fputs(",\"", stdout);
            for (; *n; n++) {
                if (*n == '"') fputc('"', stdout);
                fputc(*n, stdout);
            }
            fputc('"', stdout);
        } else {
            printf(",%s", n);
        }
    }
    fputc('\n', stdout);
    for (h = 0; h < f->horizon; h++) {
        printf("%zu", f->first_step + h);
        for (s = 0; s < f->n_series; s++) {
            rt_format_double(f->values[s * f->horizon + h], buf, sizeof buf);
            printf(",%s", buf);
        }
        fputc('\n', stdout);
    }
}

int main(int argc, char **argv) {
    run_options o;
    bundle b;
    csv_table t;
    forecast f;
    const bundle_variant *v;
    int i, rc = 1, verbose = 0;
    long tmp;
    memset(&o, 0, sizeof o);
    memset(&f, 0, sizeof f);
    memset(&b, 0, sizeof b);
    memset(&t, 0, sizeof t);
    o.columns = (const char **)calloc((size_t)argc, sizeof(char *));
    if (!o.columns) return 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            free(o.columns);
            return 0;
        } else if (!strcmp(a, "--greedy")) {
            o.greedy = 1;
        } else if (!strcmp(a, "--dump-prompt")) {
            o.dump_prompt = 1;
        } else if (!strcmp(a, "--verbose")) {
            verbose = 1;
        } else if (!strcmp(a, "--data") || !strcmp(a, "--column") || !strcmp(a, "--context") ||
                   !strcmp(a, "--horizon") || !strcmp(a, "--seed") || !strcmp(a, "--samples") ||
                   !strcmp(a, "--variant") || !strcmp(a, "--threads")) {
            const char *val;
            if (!has_value) {
                fprintf(stderr, "alignts-run: error: %s needs a value.\n%s", a, USAGE);
                free(o.columns);
                return 2;
            }
            val = argv[++i];
            if (!strcmp(a, "--data")) o.data = val;
            else if (!strcmp(a, "--column")) o.columns[o.n_columns++] = val;
            else if (!strcmp(a, "--variant")) o.variant = val;
            else {
                if (parse_long(a, val, !strcmp(a, "--seed") ? 0 : 1, &tmp)) {
                    free(o.columns);
                    return 2;
                }
                if (!strcmp(a, "--context")) o.context = tmp;
                else if (!strcmp(a, "--horizon")) o.horizon = tmp;
                else if (!strcmp(a, "--samples")) o.samples = tmp;
                else if (!strcmp(a, "--threads")) o.threads = (int)tmp;
                else {
                    o.seed = (uint64_t)tmp;
                    o.have_seed = 1;
                }
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "alignts-run: error: unknown option %s.\n%s", a, USAGE);
            free(o.columns);
            return 2;
        } else if (!o.bundle_dir) {
            o.bundle_dir = a;
        } else {
            fprintf(stderr, "alignts-run: error: unexpected argument '%s' (the bundle is '%s').\n%s", a, o.bundle_dir,
                    USAGE);
            free(o.columns);
            return 2;
        }
    }
    if (!o.bundle_dir || !o.data) {
        fprintf(stderr, "alignts-run: error: %s is required.\n%s", !o.bundle_dir ? "BUNDLE" : "--data CSV", USAGE);
        free(o.columns);
        return 2;
    }
    llm_set_verbose(verbose);

    if (bundle_open(o.bundle_dir, &b)) goto done;
    if (strcmp(b.paradigm, "internal") != 0 && strcmp(b.paradigm, "injective") != 0) {
        rt_fail("bundle %s is a '%s' bundle; alignts-run runs internal and injective bundles. Fix: use `alignts "
                "forecast` for it.", o.bundle_dir, b.paradigm);
        goto done;
    }
    if (!(v = bundle_pick_variant(&b, o.variant))) goto done;
    if (bundle_verify_variant(&b, v)) goto done;
    if (csv_read(o.data, &t)) goto done;
    if (!strcmp(b.paradigm, "internal")) {
        if (run_internal(&b, v, &t, &o, &f)) goto done;
    } else {
        if (run_injective(&b, v, &t, &o, &f)) goto done;
    }
    if (check_finite(&f)) goto done;
    print_forecast(&f);
    if (fflush(stdout) != 0) {
        rt_fail("cannot write the forecast to stdout: %s", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "alignts-run: error: %s\n", rt_error());
    free(f.values);
    free((void *)f.names);
    csv_free(&t);
    bundle_close(&b);
    free(o.columns);
    llm_shutdown();
    return rc;
}
