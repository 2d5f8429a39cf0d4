/* Internal paradigm (GPT4TS / LLM4TS, LoRA fused) on GGUF, as alignts/runtime/paradigms/internal.py:
 * raw [C, L] -> training scaler -> float32 -> RevIN + patching (at_norm_patchify) -> patch embedding (io.npz)
 * -> llama.cpp hidden states -> flatten head -> instance denorm -> float32 -> training scaler inverse. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
#include "lib.h"
#include "llm.h"
#include "npz.h"
#include "rt_util.h"
#include "runner.h"

typedef struct {
    long L, H, C, P, stride;
    size_t N, d;
    double eps, adapter_scale;
    int flash_attn;
    const char *io_name, *lm_name, *kv, *adapter;
    npz_file io;
    const npz_array *pw, *pb, *hw, *hb, *sw, *sb;
    llm *lm;
    /* workspace (alignts_plan) */
    double *x, *patches, *mean, *std, *work;
    float *emb, *hid;
} internal_state;

static int internal_open(alignts *h) {
    const json_value *cfg = h->b.config;
    const bundle_variant *v = h->v;
    internal_state *st;
    long Nn, d_model;
    char *path = NULL;
    size_t i;
    int rc = -1;
    if (!cfg) return rt_fail("malformed manifest: an internal bundle needs a 'config' object; re-export the bundle.");
    if (!(st = (internal_state *)rt_calloc(1, sizeof *st))) return -1;
    h->st = st;
    st->io_name = "io.npz";
    st->adapter_scale = 1.0;
    if (cfg_int(cfg, "config", "context_len", -1, &st->L) || cfg_int(cfg, "config", "horizon", -1, &st->H) ||
        cfg_int(cfg, "config", "n_channels", 1, &st->C) || cfg_int(cfg, "config", "patch_len", 16, &st->P) ||
        cfg_int(cfg, "config", "stride", 8, &st->stride) || cfg_int(cfg, "config", "n_patches", -1, &Nn) ||
        cfg_int(cfg, "config", "d_model", -1, &d_model) || cfg_number(cfg, "config", "eps", 1e-5, &st->eps))
        return -1;
    if (st->L < 1 || st->H < 1 || st->C < 1 || st->P < 1 || st->stride < 1 || st->P > 4096)
        return rt_fail("malformed manifest: config needs context_len, horizon, n_channels, patch_len (<= 4096), stride "
                       ">= 1 (got %ld, %ld, %ld, %ld, %ld); re-export the bundle.", st->L, st->H, st->C, st->P,
                       st->stride);
    st->N = at_n_patches((size_t)st->L, (size_t)st->P, (size_t)st->stride);
    if (st->N == 0 || (Nn >= 0 && (size_t)Nn != st->N))
        return rt_fail("malformed manifest: config.n_patches is %ld but L=%ld, patch_len=%ld, stride=%ld give %zu; "
                       "re-export the bundle.", Nn, st->L, st->P, st->stride, st->N);
    if (v->extra) {
        const char *s;
        if (cfg_string(v->extra, "variant.extra", "io_file", &s)) return -1;
        if (s) st->io_name = s;
        if (cfg_string(v->extra, "variant.extra", "lm_file", &st->lm_name) ||
            cfg_string(v->extra, "variant.extra", "kv_type", &st->kv) ||
            cfg_string(v->extra, "variant.extra", "adapter_file", &st->adapter) ||
            cfg_number(v->extra, "variant.extra", "adapter_scale", 1.0, &st->adapter_scale) ||
            cfg_bool(v->extra, "variant.extra", "flash_attn", 0, &st->flash_attn))
            return -1;
    }
    if (!st->lm_name)
        for (i = 0; i < v->n_files && !st->lm_name; i++) {
            size_t ln = strlen(v->files[i]);
            if (ln > 5 && strcmp(v->files[i] + ln - 5, ".gguf") == 0) st->lm_name = v->files[i];
        }
    if (!st->lm_name) return rt_fail("variant '%s' lists no .gguf file; re-export the bundle.", v->name);
    if (st->kv && strcmp(st->kv, "f32") && strcmp(st->kv, "f16"))
        return rt_fail("variant '%s': kv_type '%s' is not supported; expected f32 or f16.", v->name, st->kv);
    if (lib_verify_extra(h, st->io_name) || lib_verify_extra(h, st->lm_name) ||
        (st->adapter && lib_verify_extra(h, st->adapter)))
        return -1;
    if (lib_read_scaler(h, (size_t)st->C)) return -1;

    path = rt_join(h->b.dir, st->io_name);
    if (!path || npz_read(path, &st->io)) goto done;
    if (!(st->pw = npz_get(&st->io, "patch_w", 2, path)) || !(st->pb = npz_get(&st->io, "patch_b", 1, path)) ||
        !(st->hw = npz_get(&st->io, "head_w", 2, path)) || !(st->hb = npz_get(&st->io, "head_b", 1, path)))
        goto done;
    st->d = st->pw->shape[0];
    if (st->pw->shape[1] != (size_t)st->P || st->pb->shape[0] != st->d || st->hw->shape[1] != st->N * st->d ||
        st->hb->shape[0] != st->hw->shape[0] || st->hw->shape[0] < (size_t)st->H) {
        rt_fail("%s: shapes patch_w [%zu, %zu], patch_b [%zu], head_w [%zu, %zu], head_b [%zu] do not fit patch_len=%ld, "
                "n_patches=%zu, horizon=%ld; re-export the bundle.", path, st->pw->shape[0], st->pw->shape[1],
                st->pb->shape[0], st->hw->shape[0], st->hw->shape[1], st->hb->shape[0], st->P, st->N, st->H);
        goto done;
    }
    for (i = 0; i < st->io.n; i++) /* optional linear skip (fit internal --linear-skip) */
        if (strcmp(st->io.arrays[i].name, "skip_w") == 0 &&
            lib_read_skip(&st->io, path, st->hw->shape[0], (size_t)st->L, (size_t)st->stride, (size_t)st->P, &st->sw,
                          &st->sb))
            goto done;
    if (d_model > 0 && (size_t)d_model != st->d) {
        rt_fail("%s: patch_w has width %zu, config.d_model is %ld; re-export the bundle.", path, st->d, d_model);
        goto done;
    }
    rc = 0;
done:
    free(path);
    return rc;
}

static int internal_plan(alignts *h, alignts_plan_params *p, alignts_plan_info *info) {
    internal_state *st = (internal_state *)h->st;
    const json_value *cols = json_get(h->b.config, "columns");
    (void)cols;
    if (p->context && p->context != st->L)
        return rt_fail_as(RT_STATUS_ARG, "--context %ld: this bundle's model takes exactly L=%ld points; pass "
                          "--context %ld or leave it out (longer inputs keep their last L points).", p->context, st->L,
                          st->L);
    if (p->horizon && (p->horizon < 1 || p->horizon > st->H))
        return rt_fail_as(RT_STATUS_ARG, "--horizon %ld: expected 1..%ld (the model's horizon); re-fit with a longer "
                          "--horizon for more.", p->horizon, st->H);
    if (!st->lm) {
        llm_params lp;
        char *path = rt_join(h->b.dir, st->lm_name), *ap = NULL;
        if (!path) return -1;
        memset(&lp, 0, sizeof lp);
        /* as the Python runtime (alignts/runtime/budget.py embedding_geometry): n_ctx per sequence; n_seq_max
           series per llama_decode: ~480 tokens for a BERT encoder on alignts' llama.cpp, which attends per series
           (ENCODER_STREAMS_DECODE_TOKENS), ~160 on a stock one (its mask makes attention quadratic in the group;
           ENCODER_DECODE_TOKENS), ~256 with flash attention (which skips the masked cells), as many as fit 512
           tokens for a causal LM (one KV stream per sequence) */
        lp.n_ctx = (int)st->N;
        if (h->b.architecture && strcmp(h->b.architecture, "bert") == 0) {
            long tokens = st->flash_attn ? 256 : llm_patch_level() >= 4 ? 480 : 160;
            lp.n_seq_max = (int)((tokens + (long)st->N / 2) / (long)st->N);
        } else
            lp.n_seq_max = (int)(512 / st->N);
        if ((size_t)lp.n_seq_max > (size_t)st->C) lp.n_seq_max = (int)st->C;
        if (lp.n_seq_max < 1) lp.n_seq_max = 1;
        lp.n_batch = lp.n_seq_max * (int)st->N;
        lp.embeddings = 1;
        lp.n_threads = h->opt.n_threads;
        lp.kv_f16 = st->kv && strcmp(st->kv, "f16") == 0;
        lp.flash_attn = st->flash_attn;
        if (st->adapter && !(ap = rt_join(h->b.dir, st->adapter))) {
            free(path);
            return -1;
        }
        lp.lora_path = ap;
        lp.lora_scale = (float)st->adapter_scale;
        st->lm = llm_open(path, &lp);
        free(ap);
        if (!st->lm) {
            free(path);
            return -1;
        }
        if ((size_t)llm_n_embd(st->lm) != st->d) {
            rt_fail("%s has width %d but the patch embedding in %s has %zu; the files do not belong together. "
                    "Re-export the bundle.", path, llm_n_embd(st->lm), st->io_name, st->d);
            free(path);
            return -1;
        }
        free(path);
    }
    info->context = st->L;
    info->horizon = p->horizon ? p->horizon : st->H;
    info->n_channels = st->C;
    info->max_series = p->max_series ? p->max_series : st->C;
    info->model_bytes = llm_model_bytes(st->lm);
    info->kv_bytes = llm_kv_bytes(st->lm);
    return 0;
}

static void internal_reserve(alignts *h, ws *w) {
    internal_state *st = (internal_state *)h->st;
    size_t S = (size_t)h->info.max_series, L = (size_t)st->L, NP = st->N * (size_t)st->P, Nd = st->N * st->d;
    (void)0;
    st->x = WS_ARRAY(w, double, S * L);
    st->patches = WS_ARRAY(w, double, S * NP);
    st->mean = WS_ARRAY(w, double, S);
    st->std = WS_ARRAY(w, double, S);
    st->work = WS_ARRAY(w, double, L);
    st->emb = WS_ARRAY(w, float, S * Nd);
    st->hid = WS_ARRAY(w, float, S * Nd);
}

static int internal_forecast(alignts *h, const double *xin, size_t B, size_t C, size_t L, double *out,
                             const double *q, size_t n_q, double *q_out) {
    internal_state *st = (internal_state *)h->st;
    size_t S = B * C, N = st->N, d = st->d, P = (size_t)st->P, Hp = (size_t)h->info.horizon, s, i, n, k, p;
    const double *smean = h->scaler_mean, *sstd = h->scaler_std;
    (void)q;
    (void)n_q;
    (void)q_out;
    if (lib_scale_patchify(h, xin, S, C, L, P, (size_t)st->stride, st->eps, st->x, st->patches, st->mean, st->std,
                           st->work))
        return -1;
    for (n = 0; n < S * N; n++) { /* e = patches @ patch_w.T + patch_b  [S, N, d] */
        float pf[4096];
        const double *pr = st->patches + n * P;
        for (p = 0; p < P; p++) pf[p] = (float)pr[p]; /* patches are float32 in the runtime */
        for (k = 0; k < d; k++) {
            const float *w = st->pw->data + k * P;
            double acc = 0.0;
            for (p = 0; p < P; p++) acc += (double)pf[p] * (double)w[p];
            st->emb[n * d + k] = (float)(acc + (double)st->pb->data[k]);
        }
    }
    if (llm_hidden_states(st->lm, st->emb, (int)S, (int)N, (int)N, st->hid)) return -1;
    for (s = 0; s < S; s++) {
        const float *hr = st->hid + s * N * d; /* [N * d] flattened */
        size_t c = s % C;
        for (k = 0; k < Hp; k++) {
            const float *w = st->hw->data + k * N * d;
            double acc = 0.0, y;
            for (i = 0; i < N * d; i++) acc += (double)hr[i] * (double)w[i];
            y = (double)(float)(acc + (double)st->hb->data[k]); /* head output, float32 */
            if (st->sw) /* + the linear skip on the normalized context */
                y = (double)(float)(y + lib_skip_row(st->sw, st->sb, k, st->patches + s * N * P, N, P,
                                                     (size_t)st->stride));
            y = (double)(float)(y * st->std[s] + st->mean[s]); /* instance denorm, float32 forecast */
            out[s * Hp + k] = smean ? y * sstd[c] + smean[c] : y;
        }
    }
    h->prepared = st->x; /* the float32 scaled contexts: their std scales the conformal quantiles */
    return 0;
}

static void internal_close(alignts *h) {
    internal_state *st = (internal_state *)h->st;
    if (!st) return;
    npz_free(&st->io);
    llm_close(st->lm);
    free(st);
    h->st = NULL;
}

const paradigm_ops internal_ops = {"internal", internal_open, internal_plan, internal_reserve, internal_forecast,
                                   NULL, internal_close};
