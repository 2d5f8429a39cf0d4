/* Internal paradigm (GPT4TS / LLM4TS, LoRA fused) on GGUF, as alignts/runtime/paradigms/internal.py:
 * raw [C, L] -> training scaler -> float32 -> RevIN + patching (at_norm_patchify) -> patch embedding (io.npz)
 * -> llama.cpp hidden states -> flatten head -> instance denorm -> float32 -> training scaler inverse. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
#include "llm.h"
#include "npz.h"
#include "rt_util.h"
#include "runner.h"

static int scaler_stats(const json_value *cfg, size_t C, double **mean, double **std) {
    const json_value *sc = json_get(cfg, "scaler"), *m, *s;
    size_t c;
    *mean = *std = NULL;
    if (!sc || sc->type == JSON_NULL || (sc->type == JSON_OBJECT && sc->n == 0)) return 0;
    m = json_get(sc, "mean");
    s = json_get(sc, "std");
    if (sc->type != JSON_OBJECT || !m || !s || m->type != JSON_ARRAY || s->type != JSON_ARRAY || m->n != C || s->n != C)
        return rt_fail("malformed manifest: config.scaler should be {\"mean\": [C], \"std\": [C]} with C=%zu; "
                       "re-export the bundle.", C);
    *mean = (double *)rt_malloc(C * sizeof(double));
    *std = (double *)rt_malloc(C * sizeof(double));
    if (!*mean || !*std) return -1;
    for (c = 0; c < C; c++) {
        if (m->items[c].type != JSON_NUMBER || s->items[c].type != JSON_NUMBER || !(s->items[c].number != 0.0))
            return rt_fail("malformed manifest: config.scaler.mean/std[%zu] should be numbers (std != 0); "
                           "re-export the bundle.", c);
        (*mean)[c] = m->items[c].number;
        (*std)[c] = s->items[c].number;
    }
    return 0;
}

/* Verify a file the variant reads even when the variant's list forgot it. */
static int verify_extra(const bundle *b, const bundle_variant *v, const char *rel) {
    size_t i;
    for (i = 0; i < v->n_files; i++)
        if (strcmp(v->files[i], rel) == 0) return 0; /* already verified with the variant */
    return bundle_verify_file(b, rel);
}

int run_internal(const bundle *b, const bundle_variant *v, const csv_table *t, const run_options *o, forecast *f) {
    const json_value *cfg = b->config, *cols;
    long L, H, C, P, stride, Nn, d_model;
    double eps, adapter_scale = 1.0;
    const char *io_name = "io.npz", *lm_name = NULL, *kv = NULL, *adapter = NULL;
    size_t i, c, n, p, k, N, d;
    const char **names = NULL;
    double *smean = NULL, *sstd = NULL, *x = NULL, *patches = NULL, *mean = NULL, *std = NULL, *work = NULL;
    float *emb = NULL, *hid = NULL;
    npz_file io = {0};
    const npz_array *pw, *pb, *hw, *hb, *sw = NULL, *sb = NULL;
    llm *lm = NULL;
    llm_params lp;
    char *path = NULL;
    int rc = -1, st;
    size_t bad;

    if (!cfg) return rt_fail("malformed manifest: an internal bundle needs a 'config' object; re-export the bundle.");
    if (cfg_int(cfg, "config", "context_len", -1, &L) || cfg_int(cfg, "config", "horizon", -1, &H) ||
        cfg_int(cfg, "config", "n_channels", 1, &C) || cfg_int(cfg, "config", "patch_len", 16, &P) ||
        cfg_int(cfg, "config", "stride", 8, &stride) || cfg_int(cfg, "config", "n_patches", -1, &Nn) ||
        cfg_int(cfg, "config", "d_model", -1, &d_model) || cfg_number(cfg, "config", "eps", 1e-5, &eps))
        return -1;
    if (L < 1 || H < 1 || C < 1 || P < 1 || stride < 1)
        return rt_fail("malformed manifest: config needs context_len, horizon, n_channels, patch_len, stride >= 1 "
                       "(got %ld, %ld, %ld, %ld, %ld); re-export the bundle.", L, H, C, P, stride);
    N = at_n_patches((size_t)L, (size_t)P, (size_t)stride);
    if (N == 0 || (Nn >= 0 && (size_t)Nn != N))
        return rt_fail("malformed manifest: config.n_patches is %ld but L=%ld, patch_len=%ld, stride=%ld give %zu; "
                       "re-export the bundle.", Nn, L, P, stride, N);
    if (o->context && o->context != L)
        return rt_fail("--context %ld: this bundle's model takes exactly L=%ld points; pass --context %ld or leave "
                       "it out (longer inputs keep their last L points).", o->context, L, L);
    if (o->horizon && (o->horizon < 1 || o->horizon > H))
        return rt_fail("--horizon %ld: expected 1..%ld (the model's horizon); re-fit with a longer --horizon for "
                       "more.", o->horizon, H);
    if (v->extra) {
        const char *s;
        if (cfg_string(v->extra, "variant.extra", "io_file", &s)) return -1;
        if (s) io_name = s;
        if (cfg_string(v->extra, "variant.extra", "lm_file", &lm_name) ||
            cfg_string(v->extra, "variant.extra", "kv_type", &kv) ||
            cfg_string(v->extra, "variant.extra", "adapter_file", &adapter) ||
            cfg_number(v->extra, "variant.extra", "adapter_scale", 1.0, &adapter_scale))
            return -1;
    }
    if (!lm_name)
        for (i = 0; i < v->n_files && !lm_name; i++) {
            size_t ln = strlen(v->files[i]);
            if (ln > 5 && strcmp(v->files[i] + ln - 5, ".gguf") == 0) lm_name = v->files[i];
        }
    if (!lm_name) return rt_fail("variant '%s' lists no .gguf file; re-export the bundle.", v->name);
    if (kv && strcmp(kv, "f32") && strcmp(kv, "f16"))
        return rt_fail("variant '%s': kv_type '%s' is not supported; expected f32 or f16.", v->name, kv);
    if (verify_extra(b, v, io_name) || verify_extra(b, v, lm_name) || (adapter && verify_extra(b, v, adapter)))
        return -1;

    /* channels: --column NAME... maps CSV columns onto the model's channels; default config.columns */
    names = (const char **)rt_calloc((size_t)C, sizeof(char *));
    if (!names) return -1;
    cols = json_get(cfg, "columns");
    if (o->n_columns) {
        if (o->n_columns != (size_t)C) {
            rt_fail("%zu --column given; this bundle's model takes %ld channels. Fix: pass one --column per "
                    "channel, in the order of the bundle's columns, or none to use the fitted names.",
                    o->n_columns, C);
            goto done;
        }
        for (c = 0; c < (size_t)C; c++) names[c] = o->columns[c];
    } else if (cols && cols->type == JSON_ARRAY) {
        if (cols->n != (size_t)C) {
            rt_fail("malformed manifest: config.columns has %zu names for %ld channels; re-export the bundle.",
                    cols->n, C);
            goto done;
        }
        for (c = 0; c < (size_t)C; c++) {
            if (cols->items[c].type != JSON_STRING) {
                rt_fail("malformed manifest: config.columns[%zu] should be a string; re-export the bundle.", c);
                goto done;
            }
            names[c] = cols->items[c].string;
        }
    } else {
        size_t got = 0;
        for (i = 0; i < t->n_columns; i++)
            if (t->columns[i].numeric && !t->columns[i].is_date) {
                if (got < (size_t)C) names[got] = t->columns[i].name;
                got++;
            }
        if (got != (size_t)C) {
            rt_fail("%s has %zu numeric columns; this bundle's model takes %ld channels. Fix: pass --column once "
                    "per channel.", o->data, got, C);
            goto done;
        }
    }
    if (scaler_stats(cfg, (size_t)C, &smean, &sstd)) goto done;

    x = (double *)rt_malloc((size_t)C * (size_t)L * sizeof(double));
    patches = (double *)rt_malloc((size_t)C * N * (size_t)P * sizeof(double));
    mean = (double *)rt_malloc((size_t)C * sizeof(double));
    std = (double *)rt_malloc((size_t)C * sizeof(double));
    work = (double *)rt_malloc((size_t)L * sizeof(double));
    if (!x || !patches || !mean || !std || !work) goto done;
    for (c = 0; c < (size_t)C; c++) {
        double *row = x + c * (size_t)L;
        if (series_tail(t, o->data, names[c], (size_t)L, row)) goto done;
        memcpy(work, row, (size_t)L * sizeof(double)); /* raw, for the float32 check */
        for (i = 0; i < (size_t)L; i++) row[i] = smean ? (row[i] - smean[c]) / sstd[c] : row[i];
        if (series_check_float32(work, row, (size_t)L, names[c], o->data)) goto done;
        for (i = 0; i < (size_t)L; i++) row[i] = (double)(float)row[i]; /* the runtime works on float32 input */
    }
    st = at_norm_patchify(x, (size_t)C, (size_t)L, (size_t)P, (size_t)stride, eps, 1, patches, mean, std, work, &bad);
    if (st != AT_OK) {
        rt_fail("instance norm / patching of channel '%s' failed: %s", names[bad < (size_t)C ? bad : 0],
                at_status_str(st));
        goto done;
    }

    path = rt_join(b->dir, io_name);
    if (!path || npz_read(path, &io)) goto done;
    if (!(pw = npz_get(&io, "patch_w", 2, path)) || !(pb = npz_get(&io, "patch_b", 1, path)) ||
        !(hw = npz_get(&io, "head_w", 2, path)) || !(hb = npz_get(&io, "head_b", 1, path)))
        goto done;
    d = pw->shape[0];
    if (pw->shape[1] != (size_t)P || pb->shape[0] != d || hw->shape[1] != N * d || hb->shape[0] != hw->shape[0] ||
        hw->shape[0] < (size_t)H) {
        rt_fail("%s: shapes patch_w [%zu, %zu], patch_b [%zu], head_w [%zu, %zu], head_b [%zu] do not fit patch_len=%ld, "
                "n_patches=%zu, horizon=%ld; re-export the bundle.", path, pw->shape[0], pw->shape[1], pb->shape[0],
                hw->shape[0], hw->shape[1], hb->shape[0], P, N, H);
        goto done;
    }
    for (i = 0; i < io.n; i++) /* optional linear skip (fit internal --linear-skip): skip_w [H, L], skip_b [H] */
        if (strcmp(io.arrays[i].name, "skip_w") == 0) {
            if (!(sw = npz_get(&io, "skip_w", 2, path)) || !(sb = npz_get(&io, "skip_b", 1, path))) goto done;
            if (sw->shape[0] != hw->shape[0] || sw->shape[1] != (size_t)L || sb->shape[0] != sw->shape[0] ||
                stride > P) {
                rt_fail("%s: skip_w [%zu, %zu], skip_b [%zu] do not fit context_len=%ld, horizon=%zu (stride %ld <= "
                        "patch_len %ld); re-export the bundle.", path, sw->shape[0], sw->shape[1], sb->shape[0], L,
                        hw->shape[0], stride, P);
                goto done;
            }
        }
    if (d_model > 0 && (size_t)d_model != d) {
        rt_fail("%s: patch_w has width %zu, config.d_model is %ld; re-export the bundle.", path, d, d_model);
        goto done;
    }
    free(path);
    path = rt_join(b->dir, lm_name);
    if (!path) goto done;
    memset(&lp, 0, sizeof lp);
    /* as the Python runtime: n_ctx per sequence; up to min(n_seq_max, n_batch / N) series per llama_decode */
    lp.n_ctx = (int)N;
    lp.n_batch = N > 512 ? (int)N : 512;
    lp.n_seq_max = (int)((size_t)C < (size_t)lp.n_batch / N ? (size_t)C : (size_t)lp.n_batch / N);
    if (lp.n_seq_max < 1) lp.n_seq_max = 1;
    lp.embeddings = 1;
    lp.n_threads = o->threads;
    lp.kv_f16 = kv && strcmp(kv, "f16") == 0;
    {
        char *ap = adapter ? rt_join(b->dir, adapter) : NULL;
        if (adapter && !ap) goto done;
        lp.lora_path = ap;
        lp.lora_scale = (float)adapter_scale;
        lm = llm_open(path, &lp);
        free(ap);
    }
    if (!lm) goto done;
    if ((size_t)llm_n_embd(lm) != d) {
        rt_fail("%s has width %d but the patch embedding in %s has %zu; the files do not belong together. "
                "Re-export the bundle.", path, llm_n_embd(lm), io_name, d);
        goto done;
    }

    emb = (float *)rt_malloc((size_t)C * N * d * sizeof(float));
    hid = (float *)rt_malloc((size_t)C * N * d * sizeof(float));
    if (!emb || !hid) goto done;
    for (n = 0; n < (size_t)C * N; n++) { /* e = patches @ patch_w.T + patch_b  [S, N, d] */
        float pf[4096];
        const double *pr = patches + n * (size_t)P;
        if ((size_t)P > sizeof pf / sizeof pf[0]) {
            rt_fail("patch_len %ld is larger than alignts-run supports (4096)", P);
            goto done;
        }
        for (p = 0; p < (size_t)P; p++) pf[p] = (float)pr[p]; /* patches are float32 in the runtime */
        for (k = 0; k < d; k++) {
            const float *w = pw->data + k * (size_t)P;
            double acc = 0.0;
            for (p = 0; p < (size_t)P; p++) acc += (double)pf[p] * (double)w[p];
            emb[n * d + k] = (float)(acc + (double)pb->data[k]);
        }
    }
    if (llm_hidden_states(lm, emb, (int)C, (int)N, hid)) goto done;

    f->n_series = (size_t)C;
    f->horizon = o->horizon ? (size_t)o->horizon : (size_t)H;
    f->names = names;
    f->first_step = t->n_rows;
    f->values = (double *)rt_malloc((size_t)C * f->horizon * sizeof(double));
    if (!f->values) goto done;
    for (c = 0; c < (size_t)C; c++) {
        const float *hr = hid + c * N * d; /* [N * d] flattened */
        for (k = 0; k < f->horizon; k++) {
            const float *w = hw->data + k * N * d;
            double acc = 0.0, y;
            for (i = 0; i < N * d; i++) acc += (double)hr[i] * (double)w[i];
            y = (double)(float)(acc + (double)hb->data[k]);     /* head output, float32 */
            if (sw) { /* + skip_w @ z + skip_b, z = the normalized context read back from the float32 patches */
                const double *pc = patches + c * N * (size_t)P;
                const float *ws = sw->data + k * (size_t)L;
                double a2 = 0.0;
                for (i = 0; i < (size_t)L; i++) {
                    size_t n_ = i / (size_t)stride < N - 1 ? i / (size_t)stride : N - 1;
                    a2 += (double)(float)pc[n_ * (size_t)P + (i - n_ * (size_t)stride)] * (double)ws[i];
                }
                y = (double)(float)(y + (double)(float)(a2 + (double)sb->data[k]));
            }
            y = (double)(float)(y * std[c] + mean[c]);          /* instance denorm, float32 forecast */
            f->values[c * f->horizon + k] = smean ? y * sstd[c] + smean[c] : y;
        }
    }
    names = NULL; /* now owned by the forecast */
    rc = 0;
done:
    free(names);
    free(smean);
    free(sstd);
    free(x);
    free(patches);
    free(mean);
    free(std);
    free(work);
    free(emb);
    free(hid);
    free(path);
    npz_free(&io);
    llm_close(lm);
    return rc;
}
