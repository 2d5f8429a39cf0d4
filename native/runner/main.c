/* alignts-run BUNDLE --data CSV [options]: forecast the next H steps of a CSV's series with an exported
 * alignts bundle (no Python). A CLI over libalignts (alignts.h): it reads the CSV, picks the series, and prints
 * CSV: step,<column>... one row per step. With --stream it forecasts points read from stdin as they arrive
 * (stream.c). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts.h"
#include "csv.h"
#include "rt_util.h"
#include "stream.h"

static const char USAGE[] =
    "usage: alignts-run BUNDLE --data CSV [--column NAME]... [--context L] [--horizon H]\n"
    "                   [--greedy] [--seed S] [--samples N] [--variant NAME] [--threads N] [--verbose]\n                   [--dump-prompt]\n"
    "       alignts-run BUNDLE --stream [--every K] [--policy latest|every] [--context-from FILE]\n"
    "                   [--quantiles LIST|none] [the model options above]\n"
    "\n"
    "Forecast the next H steps after the end of each series in CSV with an alignts bundle (Internal, Bridging\n"
    "or Injective paradigm, GGUF variant) through llama.cpp. Prints CSV: a header 'step,<column>...' and one row\n"
    "per step (step = row number after the data, as `alignts forecast` numbers steps without dates).\n"
    "\n"
    "  BUNDLE          bundle folder (manifest.json + files); every file used is checked against its sha256\n"
    "  --data CSV      header row, one row per time step; the last L rows are the context\n"
    "  --column NAME   series to forecast (repeat for several). Injective: default every numeric column;\n"
    "                  Internal, Bridging: maps CSV columns onto the model's channels (default: the fitted names)\n"
    "  --context L     context length (Injective: any L >= 2; Internal, Bridging: must equal the model's L)\n"
    "  --horizon H     steps to forecast (Internal, Bridging: <= the model's H)\n"
    "  --greedy        Injective: most likely allowed token at each step (deterministic)\n"
    "  --seed S        Injective: seed of the sampler's RNG (default: the manifest's seed)\n"
    "  --samples N     Injective: parallel samples, the forecast is their median (default: the manifest's)\n"
    "  --variant NAME  GGUF variant (default: the first gguf-* variant of the manifest)\n"
    "  --backbone-dir D  Bridging: a folder to search first for the backbone bundle\n"
    "  --threads N     CPU threads for llama.cpp, exactly (default: the physical cores, each call taking no\n"
    "                  more than the cores other jobs leave idle)\n"
    "  --verbose       show llama.cpp's log on stderr\n"
    "  --dump-prompt   Injective, Bridging: print each series' prompt token ids on stderr (debugging)\n"
    "  --stream        read points from stdin as they arrive (CSV rows of C values, optional header with a\n"
    "                  timestamp/date/time/ts column; or JSON lines [v, ...] / {\"timestamp\": t, \"values\": [...]};\n"
    "                  empty/nan/null = missing) and write one JSON line per forecast (as `alignts stream`);\n"
    "                  bad lines are reported on stderr with their line number, counted and skipped\n"
    "  --every K       --stream: a forecast falls due every K points (default 1)\n"
    "  --policy P      --stream: latest (default) coalesces the due points of input already waiting into one\n"
    "                  forecast of the newest window (reported as skipped/lag); every: one per due point\n"
    "  --context-from FILE  --stream: points read before stdin, without forecasts (warms the window)\n"
    "  --quantiles Q   --stream: levels, e.g. 0.1,0.9, or none (default 0.1,0.5,0.9 where the bundle has them)\n"
    "  --stats         print one JSON line on stderr: open/plan/forecast milliseconds, the plan's bytes\n"
    "                  (workspace, model, KV cache, table) and the peak RSS\n"
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

/* The options alignts-run passes on to libalignts. */
typedef struct {
    const char *bundle_dir, *data, *variant, *backbone_dir;
    const char **columns; /* --column (repeatable) */
    size_t n_columns;
    long context, horizon, samples; /* 0 = the bundle's */
    int greedy, have_seed, threads, dump_prompt, verbose, stats;
    uint64_t seed;
    int stream; /* --stream (stream.h) */
    stream_options so;
    double levels[64];
} cli_options;

/* --every, --policy, --context-from, --quantiles (of --stream). 0, or -1 after a usage message. */
static int parse_stream_option(cli_options *o, const char *flag, const char *val) {
    long k;
    if (!strcmp(flag, "--every")) {
        if (parse_long(flag, val, 1, &k)) return -1;
        o->so.every = k;
    } else if (!strcmp(flag, "--policy")) {
        if (strcmp(val, "latest") && strcmp(val, "every")) {
            fprintf(stderr, "alignts-run: error: --policy '%s': expected latest or every.\n%s", val, USAGE);
            return -1;
        }
        o->so.policy_every = !strcmp(val, "every");
    } else if (!strcmp(flag, "--context-from")) {
        o->so.context_from = val;
    } else {
        const char *p = val;
        o->so.quantiles_given = 1;
        o->so.levels = o->levels;
        o->so.n_q = 0;
        if (!strcmp(val, "none")) return 0;
        while (*p) {
            char *end;
            double v;
            errno = 0;
            v = strtod(p, &end);
            if (end == p || errno || !(v > 0 && v < 1) || (*end && *end != ',') ||
                (o->so.n_q && v <= o->levels[o->so.n_q - 1]) || o->so.n_q == sizeof o->levels / sizeof o->levels[0]) {
                fprintf(stderr, "alignts-run: error: --quantiles '%s': expected ascending levels in (0, 1) separated "
                        "by commas (at most 64), or none.\n%s", val, USAGE);
                return -1;
            }
            o->levels[o->so.n_q++] = v;
            p = *end ? end + 1 : end;
        }
    }
    return 0;
}

/* The forecast to print: values [n_series, horizon] in raw units, series named. */
typedef struct {
    size_t n_series, horizon;
    const char **names;
    double *values;
    size_t first_step; /* the row index after the data (as `alignts forecast` numbers steps) */
} forecast;

static void log_line(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "alignts-run: %s\n", line);
}

/* The last L values of column name (raw units) into out [L]; errors for a missing / non-numeric column, too
 * few rows, or NaN inside the last L rows. */
static int series_tail(const csv_table *t, const char *path, const char *name, size_t L, double *out) {
    long c = csv_find(t, name);
    const csv_column *col;
    size_t i;
    if (c < 0) {
        char names[600] = "";
        for (i = 0; i < t->n_columns; i++) {
            if (strlen(names) + strlen(t->columns[i].name) + 3 >= sizeof names) break;
            if (names[0]) strcat(names, ", ");
            strcat(names, t->columns[i].name);
        }
        return rt_fail("column '%s' is not in %s; it has: %s. Fix: pass names from that list (case matters).", name,
                       path, names);
    }
    col = &t->columns[c];
    if (!col->numeric)
        return rt_fail("column '%s' of %s is not numeric: data row %zu holds '%.40s'. Fix: clean that column or "
                       "choose another with --column.", name, path, col->bad_row, col->bad_text ? col->bad_text : "");
    if (t->n_rows < L)
        return rt_fail("expected at least L=%zu time steps in %s; got %zu rows. Fix: pass a longer history (the "
                       "last %zu points are used) or a shorter --context.", L, path, t->n_rows, L);
    for (i = 0; i < L; i++) {
        double v = col->values[t->n_rows - L + i];
        if (!isfinite(v))
            return rt_fail("column '%s' of %s has a missing value at data row %zu, inside the last L=%zu points; "
                           "expected finite numbers. Fix: fill the gaps first (e.g. interpolate).", name, path,
                           t->n_rows - L + i + 1, L);
        out[i] = v;
    }
    return 0;
}

/* The series to forecast: Internal / Bridging map --column onto the model's channels (default: the fitted
 * names); Injective takes --column, else every numeric column. *names is malloc'd. */
static int pick_series(const cli_options *o, const csv_table *t, const alignts_plan_info *info, const char ***names,
                       size_t *n) {
    size_t i, C = (size_t)info->n_channels;
    const char **out = (const char **)rt_calloc(t->n_columns + o->n_columns + C + 1, sizeof(char *));
    *names = out;
    *n = 0;
    if (!out) return -1;
    if (C) {
        if (o->n_columns) {
            if (o->n_columns != C)
                return rt_fail("%zu --column given; this bundle's model takes %zu channels. Fix: pass one --column per "
                               "channel, in the order of the bundle's columns, or none to use the fitted names.",
                               o->n_columns, C);
            for (i = 0; i < C; i++) out[i] = o->columns[i];
        } else if (info->columns) {
            for (i = 0; i < C; i++) out[i] = info->columns[i];
        } else {
            size_t got = 0;
            for (i = 0; i < t->n_columns; i++)
                if (t->columns[i].numeric && !t->columns[i].is_date) {
                    if (got < C) out[got] = t->columns[i].name;
                    got++;
                }
            if (got != C)
                return rt_fail("%s has %zu numeric columns; this bundle's model takes %zu channels. Fix: pass "
                               "--column once per channel.", o->data, got, C);
        }
        *n = C;
        return 0;
    }
    if (o->n_columns) {
        for (i = 0; i < o->n_columns; i++) out[(*n)++] = o->columns[i];
        return 0;
    }
    for (i = 0; i < t->n_columns; i++)
        if (t->columns[i].numeric && !t->columns[i].is_date) out[(*n)++] = t->columns[i].name;
    if (*n == 0)
        return rt_fail("%s has no numeric columns; expected a header row and numeric value columns. Fix: pass a CSV "
                       "with numbers or name one with --column.", o->data);
    return 0;
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

static double g_t0, g_open_ms, g_plan_ms, g_forecast_ms;

static void print_stats(const alignts_plan_info *info) {
    fprintf(stderr, "{\"paradigm\": \"%s\", \"variant\": \"%s\", \"open_ms\": %.3f, \"plan_ms\": %.3f, "
            "\"forecast_ms\": %.3f, \"workspace_bytes\": %zu, \"model_bytes\": %zu, \"kv_bytes\": %zu, "
            "\"table_bytes\": %zu, \"peak_rss_kib\": %ld}\n", info->paradigm, info->variant, g_open_ms, g_plan_ms,
            g_forecast_ms, info->workspace_bytes, info->model_bytes, info->kv_bytes, info->table_bytes, rt_peak_rss_kib());
}

static int run(const cli_options *o, alignts *h, forecast *f) {
    alignts_plan_params p;
    alignts_plan_info info;
    csv_table t;
    double *x = NULL;
    size_t n = 0, s, L;
    int rc = -1;
    memset(&t, 0, sizeof t);
    alignts_plan_params_init(&p);
    p.context = o->context;
    p.horizon = o->horizon;
    p.samples = o->samples;
    p.greedy = o->greedy;
    p.have_seed = o->have_seed;
    p.seed = o->seed;
    g_t0 = rt_now_ms();
    if (alignts_plan(h, &p, &info) != ALIGNTS_OK) return rt_fail("%s", alignts_last_error(h));
    g_plan_ms = rt_now_ms() - g_t0;
    if (csv_read(o->data, &t)) goto done;
    if (pick_series(o, &t, &info, &f->names, &n)) goto done;
    if ((long)n > info.max_series) { /* Injective, several series: one call for all of them */
        p.max_series = (long)n;
        if (alignts_plan(h, &p, &info) != ALIGNTS_OK) {
            rt_fail("%s", alignts_last_error(h));
            goto done;
        }
    }
    L = (size_t)info.context;
    if (!(x = (double *)rt_malloc(n * L * sizeof(double)))) goto done;
    for (s = 0; s < n; s++)
        if (series_tail(&t, o->data, f->names[s], L, x + s * L)) goto done;
    if (o->dump_prompt)
        for (s = 0; s < n; s++) {
            size_t k, m = 0;
            int32_t *ids;
            alignts_prompt(h, x + s * L, L, NULL, 0, &m); /* the length first */
            if (!(ids = (int32_t *)rt_malloc((m ? m : 1) * sizeof(int32_t)))) goto done;
            if (alignts_prompt(h, x + s * L, L, ids, m, &m) != ALIGNTS_OK) {
                free(ids);
                rt_fail("%s", alignts_last_error(h));
                goto done;
            }
            fprintf(stderr, "prompt %s:", f->names[s]);
            for (k = 0; k < m; k++) fprintf(stderr, " %d", ids[k]);
            fputc('\n', stderr);
            free(ids);
        }
    f->n_series = n;
    f->horizon = (size_t)info.horizon;
    f->first_step = t.n_rows;
    if (!(f->values = (double *)rt_malloc(n * f->horizon * sizeof(double)))) goto done;
    /* Internal / Bridging: one batch of the model's C channels; Injective: n series of one channel each */
    g_t0 = rt_now_ms();
    if (alignts_forecast(h, x, info.n_channels ? 1 : n, info.n_channels ? n : 1, L, f->values, NULL, 0, NULL) !=
        ALIGNTS_OK) {
        rt_fail("%s", alignts_last_error(h));
        goto done;
    }
    g_forecast_ms = rt_now_ms() - g_t0;
    if (o->stats) print_stats(&info);
    print_forecast(f);
    if (fflush(stdout) != 0) {
        rt_fail("cannot write the forecast to stdout: %s", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(x);
    csv_free(&t); /* f->names may point into it: the forecast is printed above */
    return rc;
}

int main(int argc, char **argv) {
    cli_options o;
    alignts_options ao;
    alignts *h = NULL;
    forecast f;
    int i, rc = 1;
    long tmp;
    memset(&o, 0, sizeof o);
    o.so.every = 1;
    memset(&f, 0, sizeof f);
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
            o.verbose = 1;
        } else if (!strcmp(a, "--stats")) {
            o.stats = 1;
        } else if (!strcmp(a, "--stream")) {
            o.stream = 1;
        } else if (!strcmp(a, "--every") || !strcmp(a, "--policy") || !strcmp(a, "--context-from") ||
                   !strcmp(a, "--quantiles")) {
            if (!has_value) fprintf(stderr, "alignts-run: error: %s needs a value.\n%s", a, USAGE);
            if (!has_value || parse_stream_option(&o, a, argv[++i])) {
                free(o.columns);
                return 2;
            }
        } else if (!strcmp(a, "--data") || !strcmp(a, "--column") || !strcmp(a, "--context") ||
                   !strcmp(a, "--horizon") || !strcmp(a, "--seed") || !strcmp(a, "--samples") ||
                   !strcmp(a, "--variant") || !strcmp(a, "--threads") || !strcmp(a, "--backbone-dir")) {
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
            else if (!strcmp(a, "--backbone-dir")) o.backbone_dir = val;
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
    if (o.stream && (o.data || o.n_columns || o.dump_prompt)) {
        fprintf(stderr, "alignts-run: error: --stream reads points from stdin; --data, --column and --dump-prompt "
                "are for a CSV forecast. Fix: drop them (--context-from FILE warms the stream's window).\n%s", USAGE);
        free(o.columns);
        return 2;
    }
    if (!o.bundle_dir || (!o.data && !o.stream)) {
        fprintf(stderr, "alignts-run: error: %s is required.\n%s", !o.bundle_dir ? "BUNDLE" : "--data CSV", USAGE);
        free(o.columns);
        return 2;
    }
    alignts_options_init(&ao);
    ao.variant = o.variant;
    ao.backbone_dir = o.backbone_dir;
    ao.n_threads = o.threads;
    ao.verbose = o.verbose;
    ao.log = log_line;
    g_t0 = rt_now_ms();
    if (alignts_open(o.bundle_dir, &ao, &h) != ALIGNTS_OK) {
        rt_fail("%s", alignts_last_error(h));
        goto done;
    }
    g_open_ms = rt_now_ms() - g_t0;
    if (o.stream) {
        alignts_plan_params p;
        alignts_plan_params_init(&p);
        p.context = o.context;
        p.horizon = o.horizon;
        p.samples = o.samples;
        p.greedy = o.greedy;
        p.have_seed = o.have_seed;
        p.seed = o.seed;
        o.so.bundle_dir = o.bundle_dir;
        if (stream_run(h, &p, &o.so)) goto done;
    } else if (run(&o, h, &f)) goto done;
    rc = 0;
done:
    if (rc) fprintf(stderr, "alignts-run: error: %s\n", rt_error());
    free(f.values);
    free((void *)f.names);
    alignts_close(h);
    free(o.columns);
    return rc;
}
