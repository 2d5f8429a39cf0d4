/* libalignts streams (alignts.h, "streams"): the last L points of C channels in a ring window (at_window_push,
 * the C twin of alignts/kernels/stream.py), filled as Forecaster.context fills a context and forecast with
 * alignts_forecast. One block per stream, allocated at open; a state to save and restore. */
#define _POSIX_C_SOURCE 200809L
#include "alignts.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
#include "lib.h"
#include "rt_util.h"

#define STATE_MAGIC 0x53535441u /* "ATSS" read in this machine's byte order */
#define STATE_VERSION 1u
#define STATE_HEADER 40 /* magic u32, version u32, C u64, L u64, seen i64, n u64 */

struct alignts_stream {
    alignts *h;
    size_t C, L, H, bytes;
    int injective;
    char err[2048];
    /* the window: buf [C, L] (the point seen at t in slot t % L) and at_window_push's running statistics */
    int64_t seen;
    double *buf, *mean, *m2;
    int64_t *cnt, *qmin, *hmin, *nmin, *qmax, *hmax, *nmax;
    /* one forecast: the filled contexts x [C, L], one channel's points row [L] and observed indices obs [L] */
    double *x, *row;
    int64_t *obs;
};

static int fail(alignts_stream *s, int status, const char *fmt, ...) RT_PRINTF(3, 4);
static int fail(alignts_stream *s, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return status;
}

/* The stream's arrays carved from one block (base NULL: only counted), as the plan's workspace. */
static void carve(alignts_stream *s, ws *w) {
    const size_t C = s->C, L = s->L;
    s->buf = WS_ARRAY(w, double, C * L);
    s->mean = WS_ARRAY(w, double, C);
    s->m2 = WS_ARRAY(w, double, C);
    s->cnt = WS_ARRAY(w, int64_t, C);
    s->qmin = WS_ARRAY(w, int64_t, C * L);
    s->hmin = WS_ARRAY(w, int64_t, C);
    s->nmin = WS_ARRAY(w, int64_t, C);
    s->qmax = WS_ARRAY(w, int64_t, C * L);
    s->hmax = WS_ARRAY(w, int64_t, C);
    s->nmax = WS_ARRAY(w, int64_t, C);
    s->x = WS_ARRAY(w, double, C * L);
    s->row = WS_ARRAY(w, double, L);
    s->obs = WS_ARRAY(w, int64_t, L);
}

/* An empty window: buf NaN, every statistic 0 (at_window_push's start). */
static void reset(alignts_stream *s) {
    const size_t C = s->C, L = s->L;
    size_t i;
    s->seen = 0;
    for (i = 0; i < C * L; i++) s->buf[i] = NAN;
    memset(s->mean, 0, C * sizeof(double));
    memset(s->m2, 0, C * sizeof(double));
    memset(s->cnt, 0, C * sizeof(int64_t));
    memset(s->qmin, 0, C * L * sizeof(int64_t));
    memset(s->hmin, 0, C * sizeof(int64_t));
    memset(s->nmin, 0, C * sizeof(int64_t));
    memset(s->qmax, 0, C * L * sizeof(int64_t));
    memset(s->hmax, 0, C * sizeof(int64_t));
    memset(s->nmax, 0, C * sizeof(int64_t));
}

int alignts_stream_open(alignts *h, size_t n_channels, alignts_stream **out) {
    alignts_plan_info info;
    alignts_stream tmp, *s;
    ws w = {NULL, 0, 0};
    char *block;
    if (out) *out = NULL;
    if (!h) return ALIGNTS_ERR_ARG;
    if (!out || alignts_info(h, &info) != ALIGNTS_OK || n_channels == 0 || n_channels > ((size_t)1 << 24)) {
        snprintf(h->err, sizeof h->err, "alignts_stream_open: needs a planned handle, out non-NULL and 1 <= "
                 "n_channels <= 16777216 (got %zu%s%s). Fix: call alignts_plan first.", n_channels,
                 out ? "" : ", out NULL", h->planned ? "" : ", h not planned");
        return h->status = ALIGNTS_ERR_ARG;
    }
    if (info.n_channels && n_channels != (size_t)info.n_channels) {
        snprintf(h->err, sizeof h->err, "alignts_stream_open: %zu channels; this bundle's model takes %ld. Fix: open "
                 "the stream with the channels the model was fitted on.", n_channels, info.n_channels);
        return h->status = ALIGNTS_ERR_INPUT;
    }
    if (!strcmp(info.paradigm, "injective") && n_channels > (size_t)info.max_series) {
        snprintf(h->err, sizeof h->err, "alignts_stream_open: %zu channels; the plan forecasts at most %ld series "
                 "per call (one stream forecast takes every channel). Fix: alignts_plan with max_series >= %zu.",
                 n_channels, info.max_series, n_channels);
        return h->status = ALIGNTS_ERR_ARG;
    }
    memset(&tmp, 0, sizeof tmp);
    tmp.C = n_channels;
    tmp.L = (size_t)info.context;
    ws_take(&w, sizeof tmp); /* the struct itself at the front of the block */
    carve(&tmp, &w);
    if (!(block = (char *)calloc(1, w.used))) {
        snprintf(h->err, sizeof h->err, "alignts_stream_open: out of memory for %zu bytes (%zu channels x %zu "
                 "points).", w.used, tmp.C, tmp.L);
        return h->status = ALIGNTS_ERR_MEMORY;
    }
    s = (alignts_stream *)block;
    *s = tmp;
    s->bytes = w.used;
    w.base = block;
    w.cap = w.used;
    w.used = 0;
    ws_take(&w, sizeof *s);
    carve(s, &w);
    s->h = h;
    s->H = (size_t)info.horizon;
    s->injective = !strcmp(info.paradigm, "injective");
    reset(s);
    *out = s;
    return ALIGNTS_OK;
}

void alignts_stream_close(alignts_stream *s) {
    free(s); /* the struct heads its block */
}

int64_t alignts_stream_count(const alignts_stream *s) {
    return s ? s->seen : 0;
}

size_t alignts_stream_bytes(const alignts_stream *s) {
    return s ? s->bytes : 0;
}

const char *alignts_stream_last_error(const alignts_stream *s) {
    return s ? s->err : "alignts: no stream (alignts_stream_open failed: see alignts_last_error of its handle)";
}

/* k points, checked first: an inf refuses the whole call (at_window_push would too, with no message). */
static int push(alignts_stream *s, const double *x, size_t k) {
    size_t i;
    for (i = 0; i < k * s->C; i++)
        if (isinf(x[i]))
            return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_update: point %zu, channel %zu is %s; expected finite "
                        "numbers (NaN for a missing value). Nothing of this call was ingested. Fix: send NaN for an "
                        "unknown value.", i / s->C, i % s->C, x[i] > 0 ? "inf" : "-inf");
    if (k && at_window_push(s->buf, s->C, s->L, &s->seen, x, k, s->cnt, s->mean, s->m2, s->qmin, s->hmin, s->nmin,
                            s->qmax, s->hmax, s->nmax) != AT_OK)
        return fail(s, ALIGNTS_ERR_RUNTIME, "internal error: at_window_push refused checked points");
    return ALIGNTS_OK;
}

int alignts_stream_update(alignts_stream *s, const double *x, size_t k) {
    if (!s) return ALIGNTS_ERR_ARG;
    s->err[0] = '\0';
    if (k && !x) return fail(s, ALIGNTS_ERR_ARG, "alignts_stream_update: x is NULL for %zu points.", k);
    if (k > (size_t)1 << 40) return fail(s, ALIGNTS_ERR_ARG, "alignts_stream_update: k=%zu points; too many.", k);
    return push(s, x, k);
}

/* The context of channel c as Forecaster.context makes it from the window: NaN filled as
 * alignts.data.series.fill_missing (np.interp: interior linear, the ends the nearest observation), a window
 * shorter than L left-padded with its first value. -1 when the channel has no observation. */
static int fill_context(alignts_stream *s, size_t c) {
    const size_t L = s->L, n = s->seen < (int64_t)L ? (size_t)s->seen : L;
    double *dst = s->x + c * L, *r = s->row;
    size_t i, m = 0, j = 0;
    for (i = 0; i < n; i++) {
        r[i] = s->buf[c * L + (size_t)((s->seen - (int64_t)n + (int64_t)i) % (int64_t)L)];
        if (r[i] == r[i]) s->obs[m++] = (int64_t)i;
    }
    if (m == 0) return -1;
    for (i = 0; i < n; i++) {
        if (r[i] == r[i]) continue;
        if ((int64_t)i < s->obs[0]) r[i] = r[s->obs[0]];
        else if ((int64_t)i > s->obs[m - 1]) r[i] = r[s->obs[m - 1]];
        else {
            double x0, x1, slope;
            while (s->obs[j + 1] < (int64_t)i) j++;
            x0 = (double)s->obs[j];
            x1 = (double)s->obs[j + 1];
            slope = (r[s->obs[j + 1]] - r[s->obs[j]]) / (x1 - x0);
            r[i] = slope * ((double)i - x0) + r[s->obs[j]];
        }
    }
    for (i = 0; i < L - n; i++) dst[i] = r[0];
    memcpy(dst + (L - n), r, n * sizeof(double));
    return 0;
}

int alignts_stream_forecast(alignts_stream *s, double *out, const double *levels, size_t n_q, double *quantiles) {
    size_t c;
    int rc;
    if (!s) return ALIGNTS_ERR_ARG;
    s->err[0] = '\0';
    if (!out || (n_q && (!levels || !quantiles)))
        return fail(s, ALIGNTS_ERR_ARG, "alignts_stream_forecast: out%s must be non-NULL.",
                    n_q ? ", levels and quantiles" : "");
    if (s->seen == 0)
        return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_forecast: the stream has no point yet; expected at least "
                    "one. Fix: alignts_stream_update first.");
    for (c = 0; c < s->C; c++)
        if (fill_context(s, c))
            return fail(s, ALIGNTS_ERR_INPUT, "channel %zu has no observed value in the window (all %lld missing); "
                        "expected at least one. Fix: send values for it.", c,
                        (long long)(s->seen < (int64_t)s->L ? s->seen : (int64_t)s->L));
    rc = alignts_forecast(s->h, s->x, s->injective ? s->C : 1, s->injective ? 1 : s->C, s->L, out, levels, n_q,
                          n_q ? quantiles : NULL);
    if (rc != ALIGNTS_OK) fail(s, rc, "%s", alignts_last_error(s->h));
    return rc;
}

/* ------------------------------------------------------------------------------------------ state */
size_t alignts_stream_state_size(const alignts_stream *s) {
    return s ? STATE_HEADER + s->C * s->L * sizeof(double) : 0;
}

/* Header: magic u32, version u32, C u64, L u64, seen i64, n u64 (points held = min(seen, L)); then the window's
 * points oldest first, rows [L, C] (rows n.. NaN). */
int alignts_stream_save(alignts_stream *s, void *buf, size_t size) {
    const uint32_t magic = STATE_MAGIC, version = STATE_VERSION;
    uint64_t C, L, n;
    unsigned char *p = (unsigned char *)buf;
    size_t t, c;
    if (!s) return ALIGNTS_ERR_ARG;
    s->err[0] = '\0';
    if (!buf || size < alignts_stream_state_size(s))
        return fail(s, ALIGNTS_ERR_ARG, "alignts_stream_save: the buffer holds %zu bytes%s; the state needs %zu. Fix: "
                    "allocate alignts_stream_state_size(s) bytes.", size, buf ? "" : " (NULL)",
                    alignts_stream_state_size(s));
    C = s->C;
    L = s->L;
    n = s->seen < (int64_t)s->L ? (uint64_t)s->seen : L;
    memcpy(p, &magic, 4);
    memcpy(p + 4, &version, 4);
    memcpy(p + 8, &C, 8);
    memcpy(p + 16, &L, 8);
    memcpy(p + 24, &s->seen, 8);
    memcpy(p + 32, &n, 8);
    p += STATE_HEADER;
    for (t = 0; t < s->L; t++)
        for (c = 0; c < s->C; c++) {
            double v = NAN;
            if (t < n) v = s->buf[c * s->L + (size_t)((s->seen - (int64_t)n + (int64_t)t) % (int64_t)s->L)];
            memcpy(p + (t * s->C + c) * sizeof(double), &v, sizeof v);
        }
    return ALIGNTS_OK;
}

int alignts_stream_restore(alignts_stream *s, const void *buf, size_t size) {
    const unsigned char *p = (const unsigned char *)buf;
    uint32_t magic, version;
    uint64_t C, L, n;
    int64_t seen;
    size_t i;
    double v;
    if (!s) return ALIGNTS_ERR_ARG;
    s->err[0] = '\0';
    if (!buf || size < STATE_HEADER)
        return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_restore: %zu bytes%s; expected a state of %zu bytes saved by "
                    "alignts_stream_save.", size, buf ? "" : " (NULL)", alignts_stream_state_size(s));
    memcpy(&magic, p, 4);
    memcpy(&version, p + 4, 4);
    memcpy(&C, p + 8, 8);
    memcpy(&L, p + 16, 8);
    memcpy(&seen, p + 24, 8);
    memcpy(&n, p + 32, 8);
    if (magic != STATE_MAGIC)
        return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_restore: not a stream state (magic 0x%08x, expected "
                    "0x%08x: saved by alignts_stream_save on a machine of this byte order).", (unsigned)magic,
                    STATE_MAGIC);
    if (version != STATE_VERSION)
        return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_restore: state version %u; this libalignts reads version %u. "
                    "Fix: save the state again with this libalignts.", (unsigned)version, STATE_VERSION);
    if (C != s->C || L != s->L)
        return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_restore: the state is of %llu channels x L=%llu; this stream "
                    "holds %zu channels x L=%zu. Fix: restore into a stream opened with the same channel count on a "
                    "handle planned with the same context.", (unsigned long long)C, (unsigned long long)L, s->C,
                    s->L);
    if (size < alignts_stream_state_size(s) || seen < 0 || n != (seen < (int64_t)L ? (uint64_t)seen : L))
        return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_restore: a damaged state (%zu bytes of %zu, count %lld, "
                    "%llu points held). Fix: pass the buffer alignts_stream_save wrote, whole.", size,
                    alignts_stream_state_size(s), (long long)seen, (unsigned long long)n);
    p += STATE_HEADER;
    for (i = 0; i < n * C; i++) {
        memcpy(&v, p + i * sizeof v, sizeof v);
        if (isinf(v))
            return fail(s, ALIGNTS_ERR_INPUT, "alignts_stream_restore: a damaged state (an inf in the window). Fix: "
                        "pass the buffer alignts_stream_save wrote, whole.");
    }
    /* the window's points pushed again from count seen - n: the same slots, statistics rebuilt */
    reset(s);
    s->seen = seen - (int64_t)n;
    memcpy(s->x, p, (size_t)(n * C) * sizeof v); /* x [C, L] is scratch between forecasts; buf may be unaligned */
    return push(s, s->x, (size_t)n);
}
