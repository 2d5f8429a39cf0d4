/* libalignts: the public API of alignts.h over the bundle reader and the paradigms (internal.c, bridging.c,
 * injective.c). Every entry point clears the per-thread error, runs, and on failure copies the message into
 * its handle, so alignts_last_error(h) is per handle. */
#define _POSIX_C_SOURCE 200809L
#include "alignts.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
#include "lib.h"
#include "llm.h"
#include "rt_util.h"
#include "runner.h"

#define STR2(x) #x
#define STR(x) STR2(x)

const char *alignts_version(void) {
    return STR(ALIGNTS_VERSION_MAJOR) "." STR(ALIGNTS_VERSION_MINOR) "." STR(ALIGNTS_VERSION_PATCH);
}

const char *alignts_status_str(int status) {
    switch (status) {
    case ALIGNTS_OK: return "ok";
    case ALIGNTS_ERR_ARG: return "invalid argument";
    case ALIGNTS_ERR_BUNDLE: return "bad bundle";
    case ALIGNTS_ERR_INPUT: return "bad input";
    case ALIGNTS_ERR_MEMORY: return "out of memory";
    case ALIGNTS_ERR_RUNTIME: return "runtime failure";
    default: return "unknown status";
    }
}

void alignts_options_init(alignts_options *o) {
    if (o) memset(o, 0, sizeof *o);
}

void alignts_plan_params_init(alignts_plan_params *p) {
    if (p) memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------------------------------ workspace */
void *ws_take(ws *w, size_t n) {
    size_t at = (w->used + 15) & ~(size_t)15;
    w->used = at + n;
    if (!w->base) return NULL;
    return w->base + at; /* the block is calloc'd and carved once */
}

/* ------------------------------------------------------------------------------------------ helpers */
void lib_note(const alignts *h, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    if (!h->opt.log) return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    h->opt.log(h->opt.log_user, line);
}

const char *lib_series_label(const alignts *h, size_t s, size_t C, char *buf, size_t size) {
    const json_value *cols = h->b.config ? json_get(h->b.config, "columns") : NULL;
    size_t c = C ? s % C : 0;
    if (cols && cols->type == JSON_ARRAY && cols->n == C && c < cols->n && cols->items[c].type == JSON_STRING)
        snprintf(buf, size, "series %zu (batch %zu, channel '%s')", s, C ? s / C : 0, cols->items[c].string);
    else
        snprintf(buf, size, "series %zu (batch %zu, channel %zu)", s, C ? s / C : 0, c);
    return buf;
}

int lib_scale_patchify(const alignts *h, const double *xin, size_t S, size_t C, size_t L, size_t P, size_t stride,
                       double eps, double *x, double *patches, double *mean, double *std, double *work) {
    const double *smean = h->scaler_mean, *sstd = h->scaler_std;
    char label[160];
    size_t s, i, bad;
    int rc;
    for (s = 0; s < S; s++) {
        double *row = x + s * L;
        size_t c = s % C;
        for (i = 0; i < L; i++) row[i] = smean ? (xin[s * L + i] - smean[c]) / sstd[c] : xin[s * L + i];
        if (series_check_float32(xin + s * L, row, L, lib_series_label(h, s, C, label, sizeof label))) return -1;
        for (i = 0; i < L; i++) row[i] = (double)(float)row[i]; /* the runtime works on float32 input */
    }
    rc = at_norm_patchify(x, S, L, P, stride, eps, 1, patches, mean, std, work, &bad);
    if (rc != AT_OK)
        return rt_fail_as(RT_STATUS_INPUT, "instance norm / patching of %s failed: %s",
                          lib_series_label(h, bad < S ? bad : 0, C, label, sizeof label), at_status_str(rc));
    return 0;
}

int lib_read_scaler(alignts *h, size_t C) {
    const json_value *sc = h->b.config ? json_get(h->b.config, "scaler") : NULL, *m, *s;
    size_t c;
    free(h->scaler_mean);
    free(h->scaler_std);
    h->scaler_mean = h->scaler_std = NULL;
    if (!sc || sc->type == JSON_NULL || (sc->type == JSON_OBJECT && sc->n == 0)) return 0;
    m = json_get(sc, "mean");
    s = json_get(sc, "std");
    if (sc->type != JSON_OBJECT || !m || !s || m->type != JSON_ARRAY || s->type != JSON_ARRAY || m->n != C || s->n != C)
        return rt_fail("malformed manifest: config.scaler should be {\"mean\": [C], \"std\": [C]} with C=%zu; "
                       "re-export the bundle.", C);
    h->scaler_mean = (double *)rt_malloc(C * sizeof(double));
    h->scaler_std = (double *)rt_malloc(C * sizeof(double));
    if (!h->scaler_mean || !h->scaler_std) return -1;
    for (c = 0; c < C; c++) {
        if (m->items[c].type != JSON_NUMBER || s->items[c].type != JSON_NUMBER || !(s->items[c].number != 0.0) ||
            !isfinite(m->items[c].number) || !isfinite(s->items[c].number))
            return rt_fail("malformed manifest: config.scaler.mean/std[%zu] should be finite numbers (std != 0); "
                           "re-export the bundle.", c);
        h->scaler_mean[c] = m->items[c].number;
        h->scaler_std[c] = s->items[c].number;
    }
    return 0;
}

int lib_read_skip(const npz_file *f, const char *path, size_t H, size_t L, size_t stride, size_t P,
                  const npz_array **w, const npz_array **b) {
    if (!(*w = npz_get(f, "skip_w", 2, path)) || !(*b = npz_get(f, "skip_b", 1, path))) return -1;
    if ((*w)->shape[0] != H || (*w)->shape[1] != L || (*b)->shape[0] != H || stride > P)
        return rt_fail("%s: skip_w [%zu, %zu], skip_b [%zu] do not fit context_len=%zu, horizon=%zu (stride %zu <= "
                       "patch_len %zu); re-export the bundle.", path, (*w)->shape[0], (*w)->shape[1], (*b)->shape[0],
                       L, H, stride, P);
    return 0;
}

double lib_skip_row(const npz_array *w, const npz_array *b, size_t k, const double *pc, size_t N, size_t P,
                    size_t stride) {
    size_t L = w->shape[1], i;
    const float *wk = w->data + k * L;
    double acc = 0.0;
    for (i = 0; i < L; i++) {
        size_t n = i / stride < N - 1 ? i / stride : N - 1;
        acc += (double)(float)pc[n * P + (i - n * stride)] * (double)wk[i];
    }
    return (double)(float)(acc + (double)b->data[k]);
}

int lib_verify_extra(const alignts *h, const char *rel) {
    size_t i;
    for (i = 0; i < h->v->n_files; i++)
        if (strcmp(h->v->files[i], rel) == 0) return 0; /* verified with the variant at open */
    return bundle_verify_file(&h->b, rel);
}

/* Entry and exit of every call on a handle: the per-thread message cleared, then copied into the handle. */
static void enter(alignts *h) {
    rt_clear_error();
    if (h) llm_set_verbose(h->opt.verbose);
}

static int leave(alignts *h, int rc, int dflt) {
    int st;
    if (rc == 0) return ALIGNTS_OK;
    st = rt_error_status();
    st = st ? st : dflt;
    if (h) {
        snprintf(h->err, sizeof h->err, "%s", rt_error());
        h->status = st;
    }
    return st;
}

/* ------------------------------------------------------------------------------------------ open / close */
static char *dup_or_null(const char *s) {
    char *d;
    if (!s) return NULL;
    d = (char *)rt_malloc(strlen(s) + 1);
    if (d) strcpy(d, s);
    return d;
}

int alignts_open(const char *bundle_dir, const alignts_options *options, alignts **out) {
    alignts *h;
    int rc = -1;
    rt_clear_error();
    if (!out) return ALIGNTS_ERR_ARG;
    *out = NULL;
    h = (alignts *)calloc(1, sizeof *h);
    if (!h) return ALIGNTS_ERR_MEMORY;
    *out = h;
    if (options) h->opt = *options;
    enter(h);
    if (!bundle_dir) {
        rt_fail_as(RT_STATUS_ARG, "alignts_open: bundle_dir is NULL; expected the bundle folder.");
        return leave(h, -1, ALIGNTS_ERR_ARG);
    }
    if ((options && options->variant && !(h->variant_name = dup_or_null(options->variant))) ||
        (options && options->backbone_dir && !(h->backbone_dir = dup_or_null(options->backbone_dir))))
        return leave(h, -1, ALIGNTS_ERR_MEMORY);
    h->opt.variant = h->variant_name;
    h->opt.backbone_dir = h->backbone_dir;
    if (bundle_open(bundle_dir, &h->b)) goto done;
    if (!strcmp(h->b.paradigm, "internal")) h->ops = &internal_ops;
    else if (!strcmp(h->b.paradigm, "injective")) h->ops = &injective_ops;
    else if (!strcmp(h->b.paradigm, "bridging")) h->ops = &bridging_ops;
    else {
        rt_fail("bundle %s is a '%s' bundle; libalignts forecasts with internal, bridging and injective bundles "
                "(a backbone bundle is found by the bridging bundle that uses it).", bundle_dir, h->b.paradigm);
        goto done;
    }
    if (!(h->v = bundle_pick_variant(&h->b, h->opt.variant))) goto done;
    if (bundle_verify_variant(&h->b, h->v)) goto done;
    if (h->ops->open(h)) goto done;
    rc = 0;
done:
    return leave(h, rc, ALIGNTS_ERR_BUNDLE);
}

void alignts_close(alignts *h) {
    if (!h) return;
    rt_clear_error();
    if (h->ops && h->ops->close) h->ops->close(h);
    free(h->ws_block);
    free((void *)h->columns);
    free(h->scaler_mean);
    free(h->scaler_std);
    bundle_close(&h->b);
    free(h->variant_name);
    free(h->backbone_dir);
    free(h);
    llm_shutdown(); /* frees llama.cpp's backend once no model is open */
}

const char *alignts_last_error(const alignts *h) {
    if (!h) return "alignts: no handle (alignts_open was given a NULL out pointer or ran out of memory)";
    return h->err[0] ? h->err : "";
}

/* ------------------------------------------------------------------------------------------ plan */
static int usable(alignts *h) {
    if (!h->ops || !h->v) {
        rt_fail_as(RT_STATUS_ARG, "this handle's alignts_open failed (%s); open the bundle again.",
                   h->err[0] ? h->err : "no bundle");
        return 0;
    }
    return 1;
}

int alignts_plan(alignts *h, const alignts_plan_params *params, alignts_plan_info *info) {
    alignts_plan_params p;
    alignts_plan_info in;
    ws w = {NULL, 0, 0};
    int rc = -1;
    if (!h) return ALIGNTS_ERR_ARG;
    enter(h);
    if (!usable(h)) return leave(h, -1, ALIGNTS_ERR_ARG);
    if (params) p = *params;
    else alignts_plan_params_init(&p);
    if (p.context < 0 || p.horizon < 0 || p.max_series < 0 || p.samples < 0) {
        rt_fail_as(RT_STATUS_ARG, "alignts_plan: context %ld, horizon %ld, max_series %ld, samples %ld; expected "
                   ">= 0 (0 = the bundle's).", p.context, p.horizon, p.max_series, p.samples);
        return leave(h, -1, ALIGNTS_ERR_ARG);
    }
    h->planned = 0;
    free(h->ws_block);
    h->ws_block = NULL;
    memset(&in, 0, sizeof in);
    in.paradigm = h->b.paradigm;
    in.variant = h->v->name;
    in.samples = 1;
    if (h->ops->plan(h, &p, &in)) goto done;
    if (in.max_series < 1) in.max_series = 1;
    free((void *)h->columns);
    h->columns = NULL;
    if (in.n_channels > 0) {
        const json_value *cols = json_get(h->b.config, "columns");
        size_t c;
        if (cols && cols->type == JSON_ARRAY && cols->n == (size_t)in.n_channels) {
            if (!(h->columns = (const char **)rt_calloc(cols->n, sizeof(char *)))) goto done;
            for (c = 0; c < cols->n; c++) {
                if (cols->items[c].type != JSON_STRING) {
                    rt_fail("malformed manifest: config.columns[%zu] should be a string; re-export the bundle.", c);
                    goto done;
                }
                h->columns[c] = cols->items[c].string;
            }
        } else if (cols && cols->type == JSON_ARRAY && cols->n) {
            rt_fail("malformed manifest: config.columns has %zu names for %ld channels; re-export the bundle.",
                    cols->n, in.n_channels);
            goto done;
        }
    }
    in.columns = (const char *const *)h->columns;
    h->info = in; /* the paradigms' reserve functions size their buffers from h->info */
    /* two passes over the same carving code: count, then carve one calloc'd block */
    h->ctx_mean = WS_ARRAY(&w, double, in.max_series);
    h->ctx_std = WS_ARRAY(&w, double, in.max_series);
    h->ops->reserve(h, &w);
    in.workspace_bytes = w.used;
    if (!(h->ws_block = (char *)rt_calloc(1, w.used ? w.used : 1))) goto done;
    w.base = h->ws_block;
    w.cap = w.used;
    w.used = 0;
    h->ctx_mean = WS_ARRAY(&w, double, in.max_series);
    h->ctx_std = WS_ARRAY(&w, double, in.max_series);
    h->ops->reserve(h, &w);
    if (w.used != in.workspace_bytes) {
        rt_fail_as(RT_STATUS_RUNTIME, "internal error: the workspace was sized %zu bytes and carved %zu",
                   in.workspace_bytes, w.used);
        goto done;
    }
    h->params = p;
    h->info = in;
    h->planned = 1;
    if (info) *info = in;
    rc = 0;
done:
    return leave(h, rc, ALIGNTS_ERR_BUNDLE);
}

int alignts_info(const alignts *h, alignts_plan_info *info) {
    if (!h || !info || !h->planned) return ALIGNTS_ERR_ARG;
    *info = h->info;
    return ALIGNTS_OK;
}

/* ------------------------------------------------------------------------------------------ forecast */
static int check_levels(const double *q, size_t n_q) {
    size_t i;
    for (i = 0; i < n_q; i++)
        if (!(q[i] > 0 && q[i] < 1) || (i && !(q[i] > q[i - 1])))
            return rt_fail_as(RT_STATUS_ARG, "quantile levels: level %zu is %g; expected strictly ascending numbers "
                              "in (0, 1). Fix: e.g. 0.1, 0.5, 0.9.", i, q[i]);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Split-conformal quantiles of a point forecast (alignts/runtime/conformal.py): in the model's scaled units
 * q = y + s * r_tau(h), s the instance std (eps 1e-5) of the float32 scaled context, r_tau interpolated linearly
 * between the stored levels; raw units: out + s * r_tau(h) * scaler_std; sorted along the levels. */
static int conformal(alignts *h, size_t S, size_t C, size_t L, size_t H, const double *out, const double *q,
                     size_t n_q, double *q_out) {
    const json_value *cf = json_get(h->b.config, "conformal"), *lv, *tab, *meth, *norm;
    size_t K, i, s, k, j;
    double lo, hi, r[64];
    int st;
    if (!cf || cf->type != JSON_OBJECT)
        return rt_fail_as(RT_STATUS_ARG, "%s has no calibration (no config 'conformal' in its manifest); expected a "
                          "calibrated Internal/Bridging bundle for quantiles. Fix: alignts calibrate %s --data DATA "
                          "(or re-fit the bundle with this alignts).", h->b.dir, h->b.dir);
    lv = json_get(cf, "levels");
    tab = json_get(cf, "residual_quantiles");
    meth = json_get(cf, "method");
    norm = json_get(cf, "normalized_by");
    if (!meth || meth->type != JSON_STRING || strcmp(meth->string, "split-conformal") || !norm ||
        norm->type != JSON_STRING || strcmp(norm->string, "instance_std") || !lv || lv->type != JSON_ARRAY ||
        lv->n < 2 || !tab || tab->type != JSON_ARRAY || tab->n != lv->n)
        return rt_fail("%s: config.conformal is not a split-conformal table normalized by instance_std with >= 2 "
                       "levels and one row per level. Fix: alignts calibrate %s --data DATA.", h->b.dir, h->b.dir);
    K = lv->n;
    for (i = 0; i < K; i++) {
        const json_value *row = &tab->items[i];
        if (lv->items[i].type != JSON_NUMBER || !(lv->items[i].number > 0 && lv->items[i].number < 1) ||
            (i && !(lv->items[i].number > lv->items[i - 1].number)) || row->type != JSON_ARRAY || row->n < 1 ||
            row->n != tab->items[0].n)
            return rt_fail("%s: config.conformal levels must ascend in (0, 1) with rows of one length. Fix: alignts "
                           "calibrate %s --data DATA.", h->b.dir, h->b.dir);
        for (j = 0; j < row->n; j++)
            if (row->items[j].type != JSON_NUMBER || !isfinite(row->items[j].number))
                return rt_fail("%s: config.conformal.residual_quantiles has a non-finite value. Fix: alignts "
                               "calibrate %s --data DATA.", h->b.dir, h->b.dir);
    }
    if (tab->items[0].n < H)
        return rt_fail_as(RT_STATUS_ARG, "the forecast has H=%zu steps; the calibration of %s covers %zu. Fix: "
                          "forecast at most that horizon, or re-calibrate.", H, h->b.dir, tab->items[0].n);
    lo = lv->items[0].number;
    hi = lv->items[K - 1].number;
    if (n_q > sizeof r / sizeof r[0])
        return rt_fail_as(RT_STATUS_ARG, "%zu quantile levels asked; expected at most 64.", n_q);
    for (i = 0; i < n_q; i++)
        if (!(q[i] >= lo - 1e-12 && q[i] <= hi + 1e-12))
            return rt_fail_as(RT_STATUS_ARG, "quantile level %g is outside the calibrated range [%g, %g] of %s; "
                              "expected levels within it. Fix: request levels in [%g, %g], or re-calibrate with "
                              "wider levels.", q[i], lo, hi, h->b.dir, lo, hi);
    st = at_instance_stats(h->prepared, S, L, 1e-5, h->ctx_mean, h->ctx_std, NULL);
    if (st != AT_OK) return rt_fail_as(RT_STATUS_INPUT, "context statistics failed: %s", at_status_str(st));
    for (k = 0; k < H; k++) {
        for (i = 0; i < n_q; i++) { /* r_tau(k), as numpy: searchsorted(right) - 1 clipped to [0, K-2] */
            double x = q[i] < lo ? lo : (q[i] > hi ? hi : q[i]), w;
            size_t a = 0;
            while (a + 1 < K && lv->items[a + 1].number <= x) a++;
            if (a > K - 2) a = K - 2;
            w = (x - lv->items[a].number) / (lv->items[a + 1].number - lv->items[a].number);
            r[i] = (1 - w) * tab->items[a].items[k].number + w * tab->items[a + 1].items[k].number;
        }
        for (s = 0; s < S; s++) {
            double *dst = q_out + (s * H + k) * n_q;
            size_t c = s % C;
            /* yhat + s * r in scaled units, then the training scaler's inverse */
            double sc = h->scaler_std ? h->scaler_std[c] : 1.0, off = h->scaler_mean ? h->scaler_mean[c] : 0.0;
            double y = (out[s * H + k] - off) / sc;
            for (i = 0; i < n_q; i++) dst[i] = (y + h->ctx_std[s] * r[i]) * sc + off;
            qsort(dst, n_q, sizeof(double), cmp_double);
        }
    }
    return 0;
}

int alignts_forecast(alignts *h, const double *x, size_t B, size_t C, size_t L, double *out, const double *quantiles,
                     size_t n_q, double *q_out) {
    size_t S, i, H;
    int rc = -1;
    if (!h) return ALIGNTS_ERR_ARG;
    enter(h);
    if (!usable(h)) return leave(h, -1, ALIGNTS_ERR_ARG);
    if (!h->planned) {
        rt_fail_as(RT_STATUS_ARG, "alignts_forecast before alignts_plan; call alignts_plan first.");
        return leave(h, -1, ALIGNTS_ERR_ARG);
    }
    S = B * C;
    H = (size_t)h->info.horizon;
    if (!x || !out || B == 0 || C == 0 || (n_q && (!quantiles || !q_out))) {
        rt_fail_as(RT_STATUS_ARG, "alignts_forecast: x, out%s must be non-NULL and B, C >= 1 (got B=%zu, C=%zu).",
                   n_q ? ", quantiles and q_out" : "", B, C);
        return leave(h, -1, ALIGNTS_ERR_ARG);
    }
    if (S > (size_t)h->info.max_series || (B && S / B != C)) {
        rt_fail_as(RT_STATUS_ARG, "alignts_forecast: B x C = %zu x %zu series; the plan holds at most %ld. Fix: "
                   "alignts_plan with max_series >= %zu, or split the batch.", B, C, h->info.max_series, S);
        return leave(h, -1, ALIGNTS_ERR_ARG);
    }
    if (L != (size_t)h->info.context) {
        rt_fail_as(RT_STATUS_INPUT, "alignts_forecast: L=%zu points per series; the plan's context is %ld. Fix: pass "
                   "the last %ld points, or plan another context.", L, h->info.context, h->info.context);
        return leave(h, -1, ALIGNTS_ERR_INPUT);
    }
    if (h->info.n_channels && C != (size_t)h->info.n_channels) {
        rt_fail_as(RT_STATUS_INPUT, "alignts_forecast: C=%zu channels; this bundle's model takes %ld. Fix: pass the "
                   "channels the model was fitted on, in its order.", C, h->info.n_channels);
        return leave(h, -1, ALIGNTS_ERR_INPUT);
    }
    if (n_q && check_levels(quantiles, n_q)) return leave(h, -1, ALIGNTS_ERR_ARG);
    h->prepared = NULL;
    if (h->ops->forecast(h, x, B, C, L, out, quantiles, n_q, q_out)) goto done;
    { /* every value handed out is finite, or the call fails with the reason (as alignts' Forecaster.forecast) */
        size_t bad = 0, first = 0;
        char label[160];
        for (i = 0; i < S * H; i++)
            if (!isfinite(out[i]) && !bad++) first = i;
        if (bad) {
            rt_fail_as(RT_STATUS_RUNTIME, "the forecast has %zu NaN/inf value(s) of %zu, e.g. %s step %zu; expected "
                       "finite numbers. Fix: if the input is extreme, rescale it; otherwise the bundle is broken "
                       "(NaN/inf weights or normalization settings): re-export it.", bad, S * H,
                       lib_series_label(h, first / H, C, label, sizeof label), first % H);
            goto done;
        }
    }
    if (n_q && h->prepared && conformal(h, S, C, L, H, out, quantiles, n_q, q_out)) goto done;
    rc = 0;
done:
    return leave(h, rc, ALIGNTS_ERR_INPUT);
}

int alignts_prompt(alignts *h, const double *x, size_t L, int32_t *ids, size_t cap, size_t *n) {
    int rc;
    if (!h) return ALIGNTS_ERR_ARG;
    enter(h);
    if (!usable(h)) return leave(h, -1, ALIGNTS_ERR_ARG);
    if (!x || !n || (cap && !ids) || !h->planned) {
        rt_fail_as(RT_STATUS_ARG, "alignts_prompt: x and n must be non-NULL (ids when cap > 0), after alignts_plan.");
        return leave(h, -1, ALIGNTS_ERR_ARG);
    }
    *n = 0;
    if (!h->ops->prompt) return ALIGNTS_OK;
    rc = h->ops->prompt(h, x, L, ids, cap, n);
    return leave(h, rc, ALIGNTS_ERR_INPUT);
}
