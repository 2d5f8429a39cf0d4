/* Series helpers shared by libalignts and alignts-run. */
#ifndef ALIGNTS_RUNNER_H
#define ALIGNTS_RUNNER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The float32 rule of alignts' Forecaster.prepare on what the model reads, x [L] (raw [L] before the training
 * scaler; the same pointer without one): finite and |x| <= FLT_MAX; a series not all zero reaches FLT_MIN; a
 * series that varies in raw units does not turn constant in float32. what names the series in the message.
 * 0 or -1 (rt_fail says which and the fix). */
int series_check_float32(const double *raw, const double *x, size_t L, const char *what);

#ifdef __cplusplus
}
#endif

#endif
