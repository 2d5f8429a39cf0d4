/* Chronos bins codec; see alignts/kernels/bins.py. */
#include <math.h>

#include "alignts_kernels.h"

/* NumPy's linspace: i * step + low, with the last point set to high. */
static double centre(size_t i, size_t n_bins, double low, double high, double step) {
    return i == n_bins - 1 ? high : (double)i * step + low;
}

static double boundary(size_t i, size_t n_bins, double low, double high, double step) {
    return (centre(i + 1, n_bins, low, high, step) + centre(i, n_bins, low, high, step)) / 2.0;
}

static int check_grid(size_t n_bins, double low, double high) {
    return n_bins >= 2 && isfinite(low) && isfinite(high) && low < high;
}

int at_bins_encode(const double *x, size_t n_series, size_t len, size_t n_bins, double low, double high,
                   int64_t *ids, double *scale) {
    size_t s, t, n_b = n_bins - 1;
    double step, width;
    if (!x || !ids || !scale || len == 0 || !check_grid(n_bins, low, high)) return AT_ERR_ARG;
    step = (high - low) / (double)(n_bins - 1);
    width = step;
    for (s = 0; s < n_series; s++) {
        const double *row = x + s * len;
        double acc = 0.0, sc;
        size_t n = 0;
        for (t = 0; t < len; t++) {
            double v = row[t];
            if (isinf(v)) return AT_ERR_NONFINITE;
            if (v == v) {
                acc += fabs(v);
                n++;
            }
        }
        sc = n > 0 ? acc / (double)n : 0.0;
        if (!(sc > 0.0)) sc = 1.0;
        scale[s] = sc;
        for (t = 0; t < len; t++) {
            double v = row[t], z, f;
            size_t i;
            if (v != v) {
                ids[s * len + t] = -1;
                continue;
            }
            z = v / sc;
            /* the nearest centre, then fixed up against the exact boundaries */
            f = (z - low) / width + 0.5;
            if (f < 0.0)
                i = 0;
            else if (f > (double)n_b)
                i = n_b;
            else
                i = (size_t)f;
            while (i < n_b && z >= boundary(i, n_bins, low, high, step)) i++;
            while (i > 0 && z < boundary(i - 1, n_bins, low, high, step)) i--;
            ids[s * len + t] = (int64_t)i;
        }
    }
    return AT_OK;
}

int at_bins_decode(const int64_t *ids, size_t n_series, size_t len, const double *scale, size_t n_bins,
                   double low, double high, double *out) {
    size_t s, t;
    double step;
    if (!ids || !scale || !out || !check_grid(n_bins, low, high)) return AT_ERR_ARG;
    step = (high - low) / (double)(n_bins - 1);
    for (s = 0; s < n_series; s++) {
        for (t = 0; t < len; t++) {
            int64_t i = ids[s * len + t];
            if (i < -1 || i >= (int64_t)n_bins) return AT_ERR_ARG;
            out[s * len + t] = i < 0 ? NAN : centre((size_t)i, n_bins, low, high, step) * scale[s];
        }
    }
    return AT_OK;
}
