/* Instance norm (RevIN without affine) and patching; see alignts/kernels/norm.py and patch.py. */
#include <math.h>

#include "alignts_kernels.h"

/* Sums run left to right in double, exactly as the numba kernels do (no reassociation: golden vectors
 * compare bit for bit where they can). */
static int series_stats(const double *row, size_t len, double eps, double *mean, double *std) {
    double acc = 0.0, ss = 0.0, m;
    size_t n = 0, t;
    for (t = 0; t < len; t++) {
        double v = row[t];
        if (isinf(v)) return AT_ERR_NONFINITE;
        if (v == v) {
            acc += v;
            n++;
        }
    }
    if (n == 0) return AT_ERR_ALL_NAN;
    m = acc / (double)n;
    for (t = 0; t < len; t++) {
        double v = row[t];
        if (v == v) {
            double d = v - m;
            ss += d * d;
        }
    }
    *mean = m;
    *std = sqrt(ss / (double)n + eps);
    return AT_OK;
}

int at_instance_stats(const double *x, size_t n_series, size_t len, double eps, double *mean, double *std,
                      size_t *bad_series) {
    size_t s;
    if (!x || !mean || !std || len == 0) return AT_ERR_ARG;
    for (s = 0; s < n_series; s++) {
        int rc = series_stats(x + s * len, len, eps, &mean[s], &std[s]);
        if (rc != AT_OK) {
            if (bad_series) *bad_series = s;
            return rc;
        }
    }
    return AT_OK;
}

int at_instance_norm(const double *x, size_t n_series, size_t len, const double *mean, const double *std,
                     double *out) {
    size_t s, t;
    if (!x || !mean || !std || !out) return AT_ERR_ARG;
    for (s = 0; s < n_series; s++) {
        const double m = mean[s], sd = std[s];
        for (t = 0; t < len; t++) out[s * len + t] = (x[s * len + t] - m) / sd;
    }
    return AT_OK;
}

int at_instance_denorm(const double *y, size_t n_series, size_t len, const double *mean, const double *std,
                       double *out) {
    size_t s, t;
    if (!y || !mean || !std || !out) return AT_ERR_ARG;
    for (s = 0; s < n_series; s++) {
        const double m = mean[s], sd = std[s];
        for (t = 0; t < len; t++) out[s * len + t] = y[s * len + t] * sd + m;
    }
    return AT_OK;
}

size_t at_n_patches(size_t len, size_t patch_len, size_t stride) {
    if (patch_len == 0 || stride == 0 || len < patch_len) return 0;
    return (len - patch_len) / stride + 2;
}

static void patch_row(const double *row, size_t len, size_t patch_len, size_t stride, size_t n_patches,
                      double *out) {
    size_t n, p;
    for (n = 0; n < n_patches; n++) {
        size_t start = n * stride;
        for (p = 0; p < patch_len; p++) {
            size_t i = start + p;
            out[n * patch_len + p] = row[i < len ? i : len - 1];
        }
    }
}

int at_patchify(const double *x, size_t n_series, size_t len, size_t patch_len, size_t stride, double *out) {
    size_t s, n_p = at_n_patches(len, patch_len, stride);
    if (!x || !out || n_p == 0) return AT_ERR_ARG;
    for (s = 0; s < n_series; s++) {
        size_t t;
        for (t = 0; t < len; t++)
            if (isinf(x[s * len + t])) return AT_ERR_NONFINITE;
        patch_row(x + s * len, len, patch_len, stride, n_p, out + s * n_p * patch_len);
    }
    return AT_OK;
}

int at_norm_patchify(const double *x, size_t n_series, size_t len, size_t patch_len, size_t stride,
                     double eps, int fill_nan, double *out, double *mean, double *std, double *work,
                     size_t *bad_series) {
    size_t s, t, n_p = at_n_patches(len, patch_len, stride);
    if (!x || !out || !mean || !std || !work || n_p == 0) return AT_ERR_ARG;
    for (s = 0; s < n_series; s++) {
        const double *row = x + s * len;
        int rc = series_stats(row, len, eps, &mean[s], &std[s]);
        if (rc != AT_OK) {
            if (bad_series) *bad_series = s;
            return rc;
        }
        for (t = 0; t < len; t++) {
            double v = (row[t] - mean[s]) / std[s];
            work[t] = (fill_nan && v != v) ? 0.0 : v;
        }
        patch_row(work, len, patch_len, stride, n_p, out + s * n_p * patch_len);
    }
    return AT_OK;
}
