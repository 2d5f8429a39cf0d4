/* The Bridging prompt's statistics segment (alignts/runtime/prompt.py stats_texts, alignts/kernels/stats.py):
 * "Input statistics: min value m, max value M, median value d, the trend of input is upward|downward, top k
 * lags are : [l1, ..., lk]" on the instance-normalized series. */
#ifndef ALIGNTS_PROMPT_STATS_H
#define ALIGNTS_PROMPT_STATS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x [L] (the float32 scaled context, as doubles) -> text (NUL-terminated, at most size - 1 chars).
 * work: 3 * L doubles. The autocorrelation is summed directly (numpy: by FFT); lags whose autocorrelations
 * agree to rounding (~1e-13 relative) can rank differently. 0 or -1 (rt_fail). */
int prompt_stats_text(const double *x, size_t L, double eps, int top_k, int decimals, char *text, size_t size,
                      double *work);

#ifdef __cplusplus
}
#endif

#endif
