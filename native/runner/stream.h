/* alignts-run --stream: forecast a series as its points arrive on stdin (the C side of `alignts stream`). */
#ifndef ALIGNTS_RUNNER_STREAM_H
#define ALIGNTS_RUNNER_STREAM_H

#include <stddef.h>

#include "alignts.h"

typedef struct {
    const char *bundle_dir;
    const char *context_from; /* lines ingested before stdin (no forecasts), or NULL */
    long every;               /* a forecast falls due every k points (>= 1) */
    int policy_every;         /* 1: one forecast per due point; 0 (latest): coalesce the due points of input
                                 that is already waiting into one forecast from the newest window */
    int quantiles_given;      /* 1: levels / n_q below (n_q = 0: none); 0: 0.1,0.5,0.9 where the bundle has them */
    const double *levels;
    size_t n_q;
} stream_options;

/* Plan h with p (Injective: again with max_series = the channel count once the first point shows it), read
 * points from stdin and write one JSON line per forecast on stdout; a summary line on stderr at the end.
 * Returns 0, or -1 with rt_error() set (bad lines and failed forecasts are reported, counted and skipped). */
int stream_run(alignts *h, alignts_plan_params *p, const stream_options *o);

#endif
