#include "prompt_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
#include "rt_util.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Python's f"{round(v, d) + 0.0:.{d}f}": printf rounds the exact binary value as round() does; "+ 0.0" turns a
   negative zero into "0.000". */
static void fmt_value(double v, int d, char *buf, size_t size) {
    const char *p;
    snprintf(buf, size, "%.*f", d, v);
    if (buf[0] == '-') {
        for (p = buf + 1; *p == '0' || *p == '.'; p++) {
        }
        if (*p == '\0') memmove(buf, buf + 1, strlen(buf));
    }
}

int prompt_stats_text(const double *x, size_t L, double eps, int top_k, int decimals, char *text, size_t size,
                      double *work) {
    double *z = work, *sorted = work + L, *corr = work + 2 * L, mean, std, lo, hi, med, tr, dm = 0.0;
    size_t t, j, half = L / 2;
    long lags[64];
    int n_top = 0, k = top_k, st, i, w;
    char a[48], b[48], c[48];
    if (k < 1 || k > 64 || L < 2 * (size_t)k)
        return rt_fail_as(RT_STATUS_INPUT, "prompt statistics need L >= 2 * top_k = %d points and top_k in 1..64; got "
                          "L=%zu, top_k=%d.", 2 * k, L, k);
    if (decimals < 0 || decimals > 12) return rt_fail("prompt decimals %d: expected 0..12; re-export the bundle.", decimals);
    st = at_instance_stats(x, 1, L, eps, &mean, &std, NULL);
    if (st == AT_OK) st = at_instance_norm(x, 1, L, &mean, &std, z);
    if (st != AT_OK) return rt_fail_as(RT_STATUS_INPUT, "prompt statistics: %s", at_status_str(st));
    lo = hi = z[0];
    tr = 0.0;
    for (t = 1; t < L; t++) { /* as the numba kernel: running min/max, trend = sum of first differences */
        if (z[t] < lo) lo = z[t];
        if (z[t] > hi) hi = z[t];
        tr += z[t] - z[t - 1];
    }
    memcpy(sorted, z, L * sizeof(double));
    qsort(sorted, L, sizeof(double), cmp_double);
    med = (L % 2) ? sorted[L / 2] : (sorted[L / 2 - 1] + sorted[L / 2]) / 2.0;
    for (t = 0; t < L; t++) dm += z[t];
    dm /= (double)L;
    for (j = 0; j <= half; j++) { /* circular autocorrelation of the demeaned series */
        double s = 0.0;
        for (t = 0; t < L; t++) s += (z[t] - dm) * (z[(t + j) % L] - dm);
        corr[j] = s;
    }
    for (j = 1; j <= half; j++) { /* top-k by insertion, ties to the smaller lag (the numba kernel's loop) */
        double v = corr[j];
        int pos;
        if (n_top == k && !(v > corr[lags[k - 1]])) continue;
        pos = n_top < k ? n_top : k - 1;
        while (pos > 0 && v > corr[lags[pos - 1]]) {
            if (pos < k) lags[pos] = lags[pos - 1];
            pos--;
        }
        lags[pos] = (long)j;
        if (n_top < k) n_top++;
    }
    fmt_value(lo, decimals, a, sizeof a);
    fmt_value(hi, decimals, b, sizeof b);
    fmt_value(med, decimals, c, sizeof c);
    w = snprintf(text, size, "Input statistics: min value %s, max value %s, median value %s, the trend of input is "
                 "%s, top %d lags are : [", a, b, c, tr > 0 ? "upward" : "downward", n_top);
    for (i = 0; i < n_top && w > 0 && (size_t)w < size; i++)
        w += snprintf(text + w, size - (size_t)w, "%s%ld", i ? ", " : "", lags[i]);
    if (w > 0 && (size_t)w < size) w += snprintf(text + w, size - (size_t)w, "]");
    if (w < 0 || (size_t)w >= size) return rt_fail("internal error: the prompt statistics text exceeds %zu bytes", size);
    return 0;
}
