/* alignts-run: run an exported alignts bundle (manifest.json + GGUF) through llama.cpp, no Python. */
#ifndef ALIGNTS_RUNNER_H
#define ALIGNTS_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#include "bundle.h"
#include "csv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *bundle_dir;
    const char *data;
    const char **columns; /* --column (repeatable); NULL = the bundle's columns / every numeric column */
    size_t n_columns;
    long context;         /* --context, 0 = the bundle's */
    long horizon;         /* --horizon, 0 = the bundle's */
    int greedy;           /* --greedy */
    int have_seed;
    uint64_t seed;        /* --seed */
    long samples;         /* --samples, 0 = the bundle's */
    const char *variant;  /* --variant, NULL = the first GGUF variant */
    int threads;          /* --threads, 0 = all cores this process may use */
    int dump_prompt;      /* --dump-prompt: Injective prompt ids per series on stderr (debugging, tests) */
} run_options;

/* The forecast: values [n_series, horizon] in raw units, series named. */
typedef struct {
    size_t n_series, horizon;
    const char **names; /* [n_series], borrowed from the CSV table */
    double *values;     /* [n_series * horizon] */
    size_t first_step;  /* the row index after the data (as `alignts forecast` numbers steps) */
} forecast;

int run_internal(const bundle *b, const bundle_variant *v, const csv_table *t, const run_options *o, forecast *f);
int run_injective(const bundle *b, const bundle_variant *v, const csv_table *t, const run_options *o, forecast *f);

/* The last L values of column name (raw units) into out [L]; errors for a missing / non-numeric column, too
 * few rows, or NaN inside the last L rows. */
int series_tail(const csv_table *t, const char *path, const char *name, size_t L, double *out);
/* The float32 rule of alignts' Forecaster.prepare on what the model reads, x [L] (raw [L] before the training
 * scaler; the same pointer without one): finite and |x| <= FLT_MAX; a series not all zero reaches FLT_MIN; a
 * series that varies in raw units does not turn constant in float32. 0 or -1 (rt_fail says which and the fix). */
int series_check_float32(const double *raw, const double *x, size_t L, const char *name, const char *path);

#ifdef __cplusplus
}
#endif

#endif
