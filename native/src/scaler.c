/* LLMTime scaler; see alignts/kernels/scaler.py. */
#include <math.h>
#include <stdlib.h>

#include "alignts_kernels.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* NumPy's "linear" quantile of sorted v[0..n-1], with its operations: virtual index (n - 1) * alpha and
 * the lerp that interpolates from the upper neighbour when the weight is >= 0.5. */
static double quantile_sorted(const double *v, size_t n, double alpha) {
    double vi = (double)(n - 1) * alpha, gamma, a, b, diff;
    size_t lo;
    if (vi >= (double)(n - 1)) return v[n - 1];
    lo = (size_t)floor(vi);
    gamma = vi - (double)lo;
    a = v[lo];
    b = v[lo + 1];
    diff = b - a;
    if (gamma >= 0.5) return b - diff * (1.0 - gamma);
    return a + diff * gamma;
}

int at_llmtime_scaler(const double *x, size_t n_series, size_t len, double alpha, double beta, int basic,
                      double *offset, double *scale, double *work, size_t *bad_series) {
    size_t s, t;
    if (!x || !offset || !scale || !work || len == 0 || !(alpha >= 0.0 && alpha <= 1.0) || !isfinite(beta))
        return AT_ERR_ARG;
    for (s = 0; s < n_series; s++) {
        const double *row = x + s * len;
        double mn = INFINITY, mx = -INFINITY, q;
        size_t n = 0, i;
        for (t = 0; t < len; t++) {
            double v = row[t];
            if (isinf(v)) {
                if (bad_series) *bad_series = s;
                return AT_ERR_NONFINITE;
            }
            if (v == v) {
                work[n++] = v;
                if (v < mn) mn = v;
                if (v > mx) mx = v;
            }
        }
        if (n == 0) {
            if (bad_series) *bad_series = s;
            return AT_ERR_ALL_NAN;
        }
        if (basic) {
            for (i = 0; i < n; i++) work[i] = fabs(work[i]);
            qsort(work, n, sizeof(double), cmp_double);
            q = quantile_sorted(work, n, alpha);
            offset[s] = 0.0;
            scale[s] = q > 0.01 ? q : 0.01;
        } else {
            double m = mn - beta * (mx - mn), floor;
            for (i = 0; i < n; i++) work[i] = work[i] - m;
            qsort(work, n, sizeof(double), cmp_double);
            q = quantile_sorted(work, n, alpha);
            offset[s] = m;
            /* a scale below 1e-12 of the span would overflow the scaled values (same rule as the Python kernel) */
            floor = (mx - m) * 1e-12;
            scale[s] = q == 0.0 ? 1.0 : (q < floor ? floor : q);
        }
    }
    return AT_OK;
}
