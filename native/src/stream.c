/* Incremental stream kernels; see alignts/kernels/stream.py. Same double operations in the same order as the
 * numba kernels (golden vectors compare bit for bit). */
#include <math.h>

#include "alignts_kernels.h"

static void recompute(const double *row, size_t n_in, int64_t *cnt, double *mean, double *m2) {
    double acc = 0.0, ss = 0.0, m;
    int64_t n = 0;
    size_t i;
    for (i = 0; i < n_in; i++)
        if (row[i] == row[i]) {
            acc += row[i];
            n++;
        }
    m = n > 0 ? acc / (double)n : 0.0;
    for (i = 0; i < n_in; i++)
        if (row[i] == row[i]) ss += (row[i] - m) * (row[i] - m);
    *cnt = n;
    *mean = m;
    *m2 = ss;
}

int at_window_push(double *buf, size_t n_ch, size_t w, int64_t *seen, const double *x, size_t k, int64_t *cnt,
                   double *mean, double *m2, int64_t *qmin, int64_t *hmin, int64_t *nmin, int64_t *qmax,
                   int64_t *hmax, int64_t *nmax) {
    size_t i, c;
    const int64_t W = (int64_t)w;
    if (!buf || !seen || (!x && k) || !cnt || !mean || !m2 || !qmin || !hmin || !nmin || !qmax || !hmax || !nmax ||
        n_ch == 0 || w == 0 || *seen < 0)
        return AT_ERR_ARG;
    for (i = 0; i < k * n_ch; i++)
        if (isinf(x[i])) return AT_ERR_NONFINITE;
    for (i = 0; i < k; i++) {
        const int64_t t = *seen;
        const size_t pos = (size_t)(t % W);
        for (c = 0; c < n_ch; c++) {
            double *row = buf + c * w;
            int64_t *qn = qmin + c * w, *qx = qmax + c * w;
            const double old = t >= W ? row[pos] : NAN;
            const double v = x[i * n_ch + c];
            if (old == old) { /* Welford remove */
                const int64_t n = cnt[c] - 1;
                if (n == 0) {
                    mean[c] = 0.0;
                    m2[c] = 0.0;
                } else {
                    const double d = old - mean[c];
                    mean[c] -= d / (double)n;
                    m2[c] -= d * (old - mean[c]);
                }
                cnt[c] = n;
            }
            row[pos] = v;
            if (v == v) { /* Welford add */
                const int64_t n = cnt[c] + 1;
                const double d = v - mean[c];
                mean[c] += d / (double)n;
                m2[c] += d * (v - mean[c]);
                cnt[c] = n;
            }
            while (nmin[c] > 0 && qn[hmin[c]] <= t - W) {
                hmin[c] = (hmin[c] + 1) % W;
                nmin[c]--;
            }
            while (nmax[c] > 0 && qx[hmax[c]] <= t - W) {
                hmax[c] = (hmax[c] + 1) % W;
                nmax[c]--;
            }
            if (v == v) {
                while (nmin[c] > 0 && row[qn[(hmin[c] + nmin[c] - 1) % W] % W] >= v) nmin[c]--;
                qn[(hmin[c] + nmin[c]) % W] = t;
                nmin[c]++;
                while (nmax[c] > 0 && row[qx[(hmax[c] + nmax[c] - 1) % W] % W] <= v) nmax[c]--;
                qx[(hmax[c] + nmax[c]) % W] = t;
                nmax[c]++;
            }
        }
        *seen = t + 1;
        if ((t + 1) % W == 0)
            for (c = 0; c < n_ch; c++) recompute(buf + c * w, w, &cnt[c], &mean[c], &m2[c]);
    }
    return AT_OK;
}

int at_page_hinkley(const double *x, size_t k, size_t n_ch, double *state, double delta, double threshold,
                    double alpha, double min_n, uint8_t *alarms) {
    size_t i, c;
    if ((!x && k) || !state || (!alarms && k) || n_ch == 0 || !(delta >= 0) || !(threshold > 0) || !(alpha > 0) ||
        !(alpha <= 1) || !(min_n >= 1))
        return AT_ERR_ARG;
    for (i = 0; i < k * n_ch; i++)
        if (isinf(x[i])) return AT_ERR_NONFINITE;
    for (i = 0; i < k; i++)
        for (c = 0; c < n_ch; c++) {
            double *s = state + 4 * c;
            const double v = x[i * n_ch + c];
            double n, m, cum, mc;
            alarms[i * n_ch + c] = 0;
            if (v != v) continue;
            n = s[0] + 1.0;
            m = s[1] + (v - s[1]) / n;
            cum = alpha * s[2] + (v - m - delta);
            mc = cum < s[3] ? cum : s[3]; /* Python min(state, cum) */
            if (n >= min_n && cum - mc > threshold) {
                alarms[i * n_ch + c] = 1;
                s[0] = s[1] = s[2] = s[3] = 0.0;
            } else {
                s[0] = n;
                s[1] = m;
                s[2] = cum;
                s[3] = mc;
            }
        }
    return AT_OK;
}

int at_patch_push(double *ring, size_t n_ch, size_t k_ring, size_t p_len, const double *x, size_t k, int64_t t0,
                  size_t stride) {
    size_t i, c;
    if (!ring || (!x && k) || n_ch == 0 || k_ring == 0 || p_len == 0 || stride == 0 || stride > p_len || t0 < 0)
        return AT_ERR_ARG;
    for (i = 0; i < k * n_ch; i++)
        if (isinf(x[i])) return AT_ERR_NONFINITE;
    for (i = 0; i < k; i++) {
        const int64_t t = t0 + (int64_t)i, S = (int64_t)stride, P = (int64_t)p_len;
        const int64_t j_hi = t / S, j_lo = t >= P ? (t - P + S) / S : 0; /* ceil((t - P + 1) / S) */
        int64_t j;
        for (j = j_lo; j <= j_hi; j++) {
            const size_t slot = (size_t)(j % (int64_t)k_ring), off = (size_t)(t - j * S);
            for (c = 0; c < n_ch; c++) ring[(c * k_ring + slot) * p_len + off] = x[i * n_ch + c];
        }
    }
    return AT_OK;
}
