/* Injective paradigm (LLMTime) on GGUF, as alignts/runtime/paradigms/injective.py and runtime/sampler.py:
 * per series: float32 context -> LLMTime scaler -> clip -> digit ids (codec table of the manifest) behind the
 * prefix (BOS, description) -> n constrained samples from llama.cpp (the grammar of sampler.py; the draw is
 * the kernels' at_sample) -> parse -> unscale -> median over samples. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
#include "lib.h"
#include "llm.h"
#include "rt_util.h"
#include "runner.h"

enum { ST_START = 0, ST_AFTER_MINUS = 1, ST_AFTER_DIGIT = 2, ST_AFTER_DSEP = 3 };
enum { KIND_DIGIT = 0, KIND_MINUS = 1, KIND_VSEP = 2, KIND_DSEP = 3 };
#define K_MINUS 10
#define K_VSEP 11
#define K_DSEP 12

typedef struct {
    /* codec settings */
    int precision, max_digits, basic, prefix_bos;
    double alpha, beta;
    /* sampling */
    long n_samples;
    double temperature, top_p;
    int greedy;
    uint64_t rng;
    /* the table */
    at_codec_table table;
    int64_t *vsep, *dsep, *ends;
    size_t n_vsep, n_dsep, n_ends;
    /* candidates and their grammar */
    int64_t cand[13];
    int kind[13];
    int mask[4][13];
    size_t K;
} injective_cfg;

static size_t max_new_tokens(const injective_cfg *g, size_t horizon) {
    size_t per = 1 + (size_t)g->max_digits + (size_t)(g->max_digits - 1) * g->n_dsep + g->n_vsep;
    return horizon * per;
}

/* Context fitting as the Python runtime (paradigms/injective.py, LLMTime's truncate_input): most tokens a scaled
 * context value takes (the default scaler bounds values by (1 + beta) / beta; no minus sign unless basic). */
static long context_value_tokens(const injective_cfg *g) {
    int digits = g->max_digits, minus = g->basic ? 1 : 0;
    if (!g->basic && g->beta > 0) {
        double top = floor((1.0 + g->beta) / g->beta * pow(10.0, g->precision) * (1 + 1e-9));
        int d = 1;
        for (top = top < 1 ? 1 : top; top >= 10; top = floor(top / 10)) d++;
        if (d < digits) digits = d;
    }
    return minus + digits + (long)(digits - 1) * (long)g->n_dsep + (long)g->n_vsep;
}

/* Tokens set aside for H generated values: tokens per value x H x 1.2 (LLMTime's STEP_MULTIPLIER). */
static long forecast_tokens(const injective_cfg *g, long horizon) {
    return (long)ceil((double)horizon * (double)context_value_tokens(g) * 1.2);
}

/* Whether the samples share one KV cache (the prompt's cells once) rather than a stream each: while all samples'
 * generated tokens are at most SHARED_KV_PROMPTS prompts' worth (alignts/runtime/budget.py shared_prompt_kv, where
 * the measurements are). */
#define SHARED_KV_PROMPTS 16
static int shared_prompt_kv(long samples, long prompt_tokens, long generated_tokens) {
    return samples > 1 && (double)samples * (double)generated_tokens <=
                              (double)SHARED_KV_PROMPTS * (double)(prompt_tokens > 1 ? prompt_tokens : 1);
}

/* A shared cache's cells, as alignts/runtime/budget.py shared_kv_cells: one window (the prompt and the first sample's
 * tokens, stopped at the window's end) plus every other sample's generated tokens, at most max_gen each (the
 * grammar's bound); never more than a stream each. */
static long shared_kv_cells(long n_ctx, long samples, long max_gen) {
    long gen = max_gen < n_ctx ? max_gen : n_ctx, cells = n_ctx + (samples - 1) * gen;
    return cells < n_ctx * samples ? cells : n_ctx * samples;
}

static int read_table(const bundle *b, injective_cfg *g) {
    const json_value *tab = json_get(b->codec, "table");
    int64_t *digits = NULL;
    size_t nd = 0, i, j;
    long minus;
    if (!tab || tab->type != JSON_OBJECT)
        return rt_fail("bundle %s: the manifest's codec has no 'table' (token ids); re-export it with `alignts fit "
                       "injective`.", b->dir);
    if (cfg_int_array(tab, "codec.table", "digit_ids", &digits, &nd)) return -1;
    if (nd != 10) {
        free(digits);
        return rt_fail("malformed manifest: codec.table.digit_ids has %zu ids; expected 10. Re-export the bundle.", nd);
    }
    memcpy(g->table.digit_ids, digits, sizeof g->table.digit_ids);
    free(digits);
    if (cfg_int_array(tab, "codec.table", "value_sep_ids", &g->vsep, &g->n_vsep) ||
        cfg_int_array(tab, "codec.table", "digit_sep_ids", &g->dsep, &g->n_dsep) ||
        cfg_int_array(tab, "codec.table", "end_ids", &g->ends, &g->n_ends) ||
        cfg_int(tab, "codec.table", "minus_id", -1, &minus))
        return -1;
    g->table.value_sep = g->vsep;
    g->table.n_value_sep = g->n_vsep;
    g->table.digit_sep = g->dsep;
    g->table.n_digit_sep = g->n_dsep;
    g->table.minus_id = minus;
    g->table.end_ids = g->ends;
    g->table.n_end_ids = g->n_ends;
    if (at_codec_validate(&g->table) != AT_OK)
        return rt_fail("bundle %s: the manifest's codec table is invalid (10 distinct digit ids, a value separator, "
                       "minus and separators disjoint from the digits); re-export the bundle.", b->dir);
    for (i = 0; i < g->n_vsep; i++)
        for (j = 0; j < g->n_dsep; j++)
            if (g->vsep[i] == g->dsep[j])
                return rt_fail("the codec table's value_sep and digit_sep share id %lld; the sampler's grammar needs "
                               "them distinct. Re-export the bundle.", (long long)g->vsep[i]);
    /* candidates: digits 0-9, minus, the value separator's first id, the digit separator's first id */
    for (i = 0; i < 10; i++) g->cand[i] = g->table.digit_ids[i];
    g->cand[K_MINUS] = g->table.minus_id;
    g->cand[K_VSEP] = g->vsep[0];
    g->K = 12;
    if (g->n_dsep) g->cand[K_DSEP] = g->dsep[0], g->K = 13;
    memset(g->mask, 0, sizeof g->mask);
    for (i = 0; i < 10; i++) {
        g->kind[i] = KIND_DIGIT;
        g->mask[ST_START][i] = g->mask[ST_AFTER_MINUS][i] = g->mask[ST_AFTER_DSEP][i] = 1;
        if (!g->n_dsep) g->mask[ST_AFTER_DIGIT][i] = 1;
    }
    g->kind[K_MINUS] = KIND_MINUS;
    g->kind[K_VSEP] = KIND_VSEP;
    g->mask[ST_START][K_MINUS] = 1;
    g->mask[ST_AFTER_DIGIT][K_VSEP] = 1;
    if (g->n_dsep) {
        g->kind[K_DSEP] = KIND_DSEP;
        g->mask[ST_AFTER_DIGIT][K_DSEP] = 1;
    }
    return 0;
}

/* The model must know the table's tokens: digits read as "0".."9" and minus as "-" (else the GGUF does not
 * belong to this bundle). */
static int check_table_vocab(llm *lm, const injective_cfg *g, const char *path) {
    int V = llm_n_vocab(lm), d;
    char piece[64];
    size_t i;
    for (i = 0; i < g->K; i++)
        if (g->cand[i] < 0 || g->cand[i] >= V)
            return rt_fail("the codec table uses token id %lld but %s has %d tokens; the model file does not belong "
                           "to this bundle. Re-export the bundle.", (long long)g->cand[i], path, V);
    for (i = 0; i < g->n_vsep; i++)
        if (g->vsep[i] >= V) return rt_fail("value separator id %lld >= n_vocab %d", (long long)g->vsep[i], V);
    for (i = 0; i < g->n_dsep; i++)
        if (g->dsep[i] >= V) return rt_fail("digit separator id %lld >= n_vocab %d", (long long)g->dsep[i], V);
    for (d = 0; d <= 10; d++) {
        const char *want = d < 10 ? "0123456789" + d : "-";
        int64_t id = d < 10 ? g->table.digit_ids[d] : g->table.minus_id;
        char *s = piece;
        size_t n;
        if (llm_piece(lm, (int32_t)id, piece, sizeof piece) < 0) return rt_fail("cannot read token %lld", (long long)id);
        while (*s == ' ') s++;
        n = strlen(s);
        while (n && s[n - 1] == ' ') n--;
        if (n != 1 || s[0] != want[0])
            return rt_fail("%s: token %lld reads '%s', the manifest's codec table says it is '%c'; the model file "
                           "does not belong to this bundle. Re-export the bundle.", path, (long long)id, piece, want[0]);
    }
    return 0;
}

/* Digits a forecast value may have (DigitPrompter.digit_cap): one more than the context's largest scaled
 * value needs, within max_digits. x [L] the context, not yet clipped. */
static int digit_cap(const double *x, size_t L, double off, double sc, int precision, int max_digits) {
    double big = 0.0;
    size_t i;
    int need = 1;
    for (i = 0; i < L; i++) {
        double z = fabs((x[i] - off) / sc);
        if (z > big) big = z;
    }
    big *= pow(10.0, precision);
    if (!isfinite(big) || big >= 1e15) return max_digits; /* >= 16 digits: above any max_digits (<= 15) */
    {
        long long v = (long long)big; /* int() truncates */
        while (v >= 10) {
            v /= 10;
            need++;
        }
    }
    return need + 1 < max_digits ? need + 1 : max_digits;
}


typedef struct {
    injective_cfg g;
    long L0, H0, n_ctx, seed;
    const char *desc, *lora;
    double lora_scale;
    llm *lm;
    long lm_samples;     /* n_seq_max of the open context */
    int lm_shared;       /* its samples share one KV cache */
    long lm_cells;       /* that shared cache's cells (0: a stream each) */
    int32_t *prefix;     /* BOS + description ids (plan) */
    size_t prefix_n;
    /* the plan */
    long L, H, used, budget, per_value;
    size_t cap, enc_cap;
    uint64_t seed0;
    /* workspace */
    double *x, *work, *vals, *col;
    int64_t *ids, *gen, *lengths, *n_parsed;
    int32_t *prompt;
    int *state, *n_dig;
    size_t *n_val, *vpos, *dpos;
    int32_t *live, *tok;
} injective_state;

/* Generate n samples of H values each: ids [n, cap] (-1 padded), lengths [n]. max_d: digits per value. A sample
 * that reaches max_tok tokens (the end of the LM's window) stops with fewer values. Buffers: the workspace. */
static int generate(injective_state *st, const int32_t *prompt, int T, size_t H, int max_d, size_t max_tok) {
    injective_cfg *g = &st->g;
    llm *lm = st->lm;
    size_t n = (size_t)g->n_samples, r, j, V = (size_t)llm_n_vocab(lm), cap = st->cap;
    int *state = st->state, *n_dig = st->n_dig;
    size_t *n_val = st->n_val, *vpos = st->vpos, *dpos = st->dpos;
    int32_t *live = st->live, *tok = st->tok;
    int64_t *out = st->gen, *length = st->lengths;
    double work[26];
    int first = 1;
    const float *row0;
    for (j = 0; j < n; j++) {
        live[j] = (int32_t)j;
        length[j] = 0;
        state[j] = n_dig[j] = 0;
        n_val[j] = vpos[j] = dpos[j] = 0;
    }
    for (j = 0; j < n * cap; j++) out[j] = -1;
    row0 = llm_prefill(lm, prompt, T, (int)n);
    if (!row0) return -1;
    r = n;
    for (;;) {
        size_t kept = 0;
        for (j = 0; j < r; j++) {
            size_t s = (size_t)live[j];
            int done = 0;
            int64_t t;
            if (vpos[s] > 0) { /* the rest of a multi-token value separator */
                t = g->vsep[vpos[s]++];
                if (vpos[s] >= g->n_vsep) {
                    vpos[s] = 0;
                    done = 1;
                }
            } else if (dpos[s] > 0) {
                t = g->dsep[dpos[s]++];
                if (dpos[s] >= g->n_dsep) dpos[s] = 0;
            } else {
                size_t k = 0, c, n_allowed = 0;
                int64_t allowed[13], id;
                size_t slot[13];
                if (state[s] == ST_AFTER_DIGIT && n_dig[s] >= max_d) {
                    k = K_VSEP; /* max_digits reached: the separator is forced */
                } else {
                    const float *logits = first ? row0 : llm_logits(lm, (int)j);
                    int rc;
                    if (!logits) return -1;
                    for (c = 0; c < g->K; c++)
                        if (g->mask[state[s]][c]) {
                            allowed[n_allowed] = g->cand[c];
                            slot[n_allowed++] = c;
                        }
                    rc = at_sample(logits, V, allowed, n_allowed, g->greedy ? 0.0 : g->temperature, g->top_p, &g->rng,
                                   work, &id);
                    if (rc != AT_OK)
                        return rt_fail_as(RT_STATUS_RUNTIME, "sampling failed (%s): NaN logits from the model?",
                                          at_status_str(rc));
                    for (c = 0; c < n_allowed; c++)
                        if (allowed[c] == id) {
                            k = slot[c];
                            break;
                        }
                }
                t = g->cand[k];
                switch (g->kind[k]) {
                case KIND_DIGIT:
                    n_dig[s]++;
                    state[s] = ST_AFTER_DIGIT;
                    break;
                case KIND_MINUS:
                    state[s] = ST_AFTER_MINUS;
                    break;
                case KIND_DSEP:
                    state[s] = ST_AFTER_DSEP;
                    if (g->n_dsep > 1) dpos[s] = 1;
                    break;
                default:
                    n_dig[s] = 0;
                    state[s] = ST_START;
                    if (g->n_vsep > 1)
                        vpos[s] = 1;
                    else
                        done = 1;
                }
            }
            if ((size_t)length[s] >= cap)
                return rt_fail_as(RT_STATUS_RUNTIME, "internal error: sample %zu exceeded %zu tokens", s, cap);
            out[s * cap + (size_t)length[s]++] = t;
            if (done) n_val[s]++;
            if (n_val[s] < H && (size_t)length[s] < max_tok) { /* still generating: keep it, in order */
                live[kept] = (int32_t)s;
                tok[kept] = (int32_t)t;
                kept++;
            }
        }
        first = 0;
        if (kept == 0) break;
        r = kept;
        if (llm_step(lm, tok, live, (int)r)) return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int injective_open(alignts *h) {
    const json_value *cfg = h->b.config, *codec = h->b.codec;
    injective_state *st;
    long prec, maxd;
    const bundle_variant *v = h->v;
    size_t i;
    if (!codec) return rt_fail("malformed manifest: an injective bundle needs a 'codec' object; re-export the bundle.");
    if (!(st = (injective_state *)rt_calloc(1, sizeof *st))) return -1;
    h->st = st;
    st->lora_scale = 1.0;
    if (cfg_int(cfg, "config", "context_len", 96, &st->L0) || cfg_int(cfg, "config", "horizon", 24, &st->H0) ||
        cfg_int(cfg, "config", "n_ctx", 512, &st->n_ctx) || cfg_int(cfg, "config", "samples", 20, &st->g.n_samples) ||
        cfg_number(cfg, "config", "temperature", 0.9, &st->g.temperature) ||
        cfg_number(cfg, "config", "top_p", 0.9, &st->g.top_p) || cfg_bool(cfg, "config", "greedy", 0, &st->g.greedy) ||
        cfg_int(cfg, "config", "seed", 0, &st->seed) || cfg_string(cfg, "config", "description", &st->desc) ||
        cfg_int(codec, "codec", "precision", 3, &prec) || cfg_int(codec, "codec", "max_digits", 6, &maxd) ||
        cfg_number(codec, "codec", "alpha", 0.95, &st->g.alpha) || cfg_number(codec, "codec", "beta", 0.3, &st->g.beta) ||
        cfg_bool(codec, "codec", "basic", 0, &st->g.basic) ||
        cfg_bool(codec, "codec", "prefix_bos", 1, &st->g.prefix_bos))
        return -1;
    if (prec < 0 || prec > 15 || maxd < 1 || maxd > 15)
        return rt_fail("malformed manifest: codec.precision %ld / max_digits %ld out of range (0..15, 1..15); re-export "
                       "the bundle.", prec, maxd);
    st->g.precision = (int)prec;
    st->g.max_digits = (int)maxd;
    if (read_table(&h->b, &st->g)) return -1;
    st->per_value = context_value_tokens(&st->g);
    if (v->extra && (cfg_string(v->extra, "variant.extra", "lora_file", &st->lora) ||
                     cfg_number(v->extra, "variant.extra", "lora_scale", 1.0, &st->lora_scale)))
        return -1;
    if (st->lora) {
        for (i = 0; i < v->n_files && strcmp(v->files[i], st->lora) != 0; i++) {
        }
        if (i == v->n_files && bundle_verify_file(&h->b, st->lora)) return -1; /* not verified with the variant */
    }
    return 0;
}

/* The tokens a prompt's context may take beside the prefix and H values (may be <= 0). */
static long context_room(const injective_state *st, long H, long prefix_n) {
    return st->n_ctx - 1 - prefix_n - forecast_tokens(&st->g, H);
}

/* The last context values of L that fit that room (LLMTime's truncation; may be < 2), as paradigms/injective.py's
 * fit_context. */
static long context_fit(const injective_state *st, long L, long H, long prefix_n) {
    long room = context_room(st, H, prefix_n), fit = (room > 0 ? room : 0) / st->per_value;
    return fit < L ? fit : L;
}

/* The KV cache's type, as alignts/runtime/budget.py decode_kv_type: the variant's kv_type when it names one, else
 * f16 where the weights are no finer (f16, bf16, q8_0, q4_0, q4_1) and this llama.cpp's CPU kernels take an f16
 * cache's decode products in f32 (x86-64, patch level 7), else f32. 1: f16, 0: f32, -1: error (reported). */
static int decode_kv_f16(const alignts *h) {
    const char *kv = NULL;
    if (h->v->extra && cfg_string(h->v->extra, "variant.extra", "kv_type", &kv)) return -1;
    if (kv) {
        if (strcmp(kv, "f32") && strcmp(kv, "f16"))
            return rt_fail("variant '%s': kv_type '%s' is not supported; expected f32 or f16.", h->v->name, kv);
        return strcmp(kv, "f16") == 0;
    }
#if defined(__x86_64__)
    {
        static const char *const half_or_less[] = {"f16", "bf16", "q8_0", "q4_0", "q4_1"};
        size_t i;
        for (i = 0; h->v->dtype && i < sizeof half_or_less / sizeof *half_or_less; i++)
            if (strcmp(h->v->dtype, half_or_less[i]) == 0) return llm_patch_level() >= 7;
    }
#endif
    return 0;
}

/* (Re)open llama.cpp with n_seq_max = samples, and the prompt prefix (BOS or EOS, then the description). L and H:
 * the plan's context and horizon (whether the samples share the prompt's KV cells: the prompt estimated as the
 * Python runtime does, without the prefix). */
static int open_lm(alignts *h, injective_state *st, long samples, long L, long H) {
    const json_value *cfg = h->b.config;
    llm_params lp;
    char *path, *lora_path = NULL;
    long n_embd;
    int shared = shared_prompt_kv(samples, context_fit(st, L, H, 0) * st->per_value, forecast_tokens(&st->g, H));
    long cells = shared ? shared_kv_cells(st->n_ctx, samples, (long)max_new_tokens(&st->g, (size_t)H)) : 0;
    if (st->lm && st->lm_samples == samples && st->lm_shared == shared && st->lm_cells >= cells) return 0;
    llm_close(st->lm);
    st->lm = NULL;
    free(st->prefix);
    st->prefix = NULL;
    st->prefix_n = 0;
    if (!(path = rt_join(h->b.dir, h->v->files[0]))) return -1;
    memset(&lp, 0, sizeof lp);
    lp.n_ctx = (int)st->n_ctx;
    lp.n_batch = st->n_ctx < 512 ? (int)st->n_ctx : 512;
    lp.n_seq_max = (int)samples;
    lp.kv_unified = shared;
    lp.kv_cells = (int)cells;
    if ((lp.kv_f16 = decode_kv_f16(h)) < 0) goto fail;
    lp.n_threads = h->opt.n_threads;
    if (cfg_int(cfg, "config", "n_embd", 0, &n_embd)) goto fail;
    if (!h->opt.n_threads && n_embd > 0 && n_embd <= 256)
        lp.n_threads = 1; /* a tiny LM decodes faster on one thread (as the Python runtime does) */
    if (st->lora) {
        if (!(lora_path = rt_join(h->b.dir, st->lora))) goto fail;
        lp.lora_path = lora_path;
        lp.lora_scale = (float)st->lora_scale;
    }
    st->lm = llm_open(path, &lp);
    free(lora_path);
    lora_path = NULL;
    if (!st->lm) goto fail;
    st->lm_samples = samples;
    st->lm_shared = shared;
    st->lm_cells = cells;
    if (llm_n_ctx_train(st->lm) > 0 && llm_n_ctx_train(st->lm) < st->n_ctx) {
        rt_fail("bundle %s: n_ctx=%ld exceeds the model's trained context %d; expected n_ctx <= %d. Fix: re-export "
                "with --n-ctx %d.", h->b.dir, st->n_ctx, llm_n_ctx_train(st->lm), llm_n_ctx_train(st->lm),
                llm_n_ctx_train(st->lm));
        goto fail;
    }
    if (check_table_vocab(st->lm, &st->g, path)) goto fail;
    if (!(st->prefix = (int32_t *)rt_malloc(sizeof(int32_t)))) goto fail;
    if (st->g.prefix_bos) {
        int32_t bos = llm_bos(st->lm) >= 0 ? llm_bos(st->lm) : llm_eos(st->lm);
        if (bos >= 0) st->prefix[st->prefix_n++] = bos;
    }
    if (st->desc && st->desc[0]) {
        size_t dl = strlen(st->desc);
        char *text = (char *)rt_malloc(dl + 2);
        int32_t *dt, *np;
        int nd = 0;
        if (!text) goto fail;
        memcpy(text, st->desc, dl + 1);
        while (dl && (text[dl - 1] == ' ' || text[dl - 1] == '\t' || text[dl - 1] == '\n' || text[dl - 1] == '\r' ||
                      text[dl - 1] == '\f' || text[dl - 1] == '\v'))
            dl--;
        text[dl] = '\n';
        text[dl + 1] = '\0';
        dt = llm_tokenize(st->lm, text, &nd);
        free(text);
        if (!dt) goto fail;
        np = (int32_t *)realloc(st->prefix, (st->prefix_n + (size_t)nd + 1) * sizeof(int32_t));
        if (!np) {
            free(dt);
            rt_fail_as(RT_STATUS_MEMORY, "out of memory");
            goto fail;
        }
        st->prefix = np;
        memcpy(st->prefix + st->prefix_n, dt, (size_t)nd * sizeof(int32_t));
        st->prefix_n += (size_t)nd;
        free(dt);
    }
    free(path);
    return 0;
fail:
    free(path);
    llm_close(st->lm);
    st->lm = NULL;
    return -1;
}

static int injective_plan(alignts *h, alignts_plan_params *p, alignts_plan_info *info) {
    injective_state *st = (injective_state *)h->st;
    injective_cfg *g = &st->g;
    long L = p->context ? p->context : st->L0, H = p->horizon ? p->horizon : st->H0;
    long samples = p->samples ? p->samples : g->n_samples;
    int greedy;
    if (cfg_bool(h->b.config, "config", "greedy", 0, &greedy)) return -1;
    greedy = greedy || p->greedy;
    if (L < 2) return rt_fail_as(RT_STATUS_ARG, "--context %ld: expected >= 2 (the scaler needs a range).", L);
    if (H < 1 || samples < 1 || samples > 4096)
        return rt_fail_as(RT_STATUS_ARG, "horizon %ld and samples %ld: expected >= 1 and 1..4096.", H, samples);
    if (!greedy && !(g->temperature > 0))
        return rt_fail("temperature=%g: expected > 0 (or --greedy).", g->temperature);
    if (!(g->top_p > 0 && g->top_p <= 1)) return rt_fail("top_p=%g: expected in (0, 1].", g->top_p);
    if (open_lm(h, st, samples, L, H)) return -1;
    g->n_samples = samples;
    g->greedy = greedy;
    st->seed0 = p->have_seed ? p->seed : (uint64_t)st->seed;
    /* L' = the last context values that fit next to H values (LLMTime's truncation), at least 2 */
    st->budget = context_room(st, H, (long)st->prefix_n);
    st->used = context_fit(st, L, H, (long)st->prefix_n);
    if (st->used < 2) {
        long room = st->n_ctx - 1 - (long)st->prefix_n - 2 * st->per_value;
        long most = room > 0 ? (long)floor((double)room / ((double)st->per_value * 1.2)) : 0;
        return rt_fail_as(RT_STATUS_ARG, "horizon=%ld needs about %ld generated tokens (%ld per value x 1.2), which "
                          "leaves no room for 2 context values in the LM's context of %ld tokens; expected horizon <= "
                          "%ld. Fix: forecast a shorter --horizon.", H, forecast_tokens(g, H), st->per_value,
                          st->n_ctx, most);
    }
    if (st->used < L)
        lib_note(h, "%ld context values and %ld forecast values do not fit the LM's %ld-token window; the prompt "
                 "keeps the last %ld values (LLMTime's truncation)", L, H, st->n_ctx, st->used);
    st->L = L;
    st->H = H;
    st->cap = max_new_tokens(g, (size_t)H); /* the grammar's most tokens for H values: the sample buffer's width */
    st->enc_cap = (size_t)st->used * (1 + (size_t)g->max_digits + (size_t)(g->max_digits - 1) * g->n_dsep + g->n_vsep);
    info->context = L;
    info->horizon = H;
    info->n_channels = 0;
    info->max_series = p->max_series ? p->max_series : 1;
    info->samples = samples;
    info->model_bytes = llm_model_bytes(st->lm);
    info->kv_bytes = llm_kv_bytes(st->lm);
    return 0;
}

static void injective_reserve(alignts *h, ws *w) {
    injective_state *st = (injective_state *)h->st;
    size_t n = (size_t)st->g.n_samples, L = (size_t)st->L, H = (size_t)st->H;
    st->x = WS_ARRAY(w, double, L);
    st->work = WS_ARRAY(w, double, L);
    st->vals = WS_ARRAY(w, double, n * H);
    st->col = WS_ARRAY(w, double, n);
    st->ids = WS_ARRAY(w, int64_t, st->enc_cap);
    st->gen = WS_ARRAY(w, int64_t, n * st->cap);
    st->lengths = WS_ARRAY(w, int64_t, n);
    st->n_parsed = WS_ARRAY(w, int64_t, n);
    st->prompt = WS_ARRAY(w, int32_t, st->prefix_n + st->enc_cap);
    st->state = WS_ARRAY(w, int, n);
    st->n_dig = WS_ARRAY(w, int, n);
    st->n_val = WS_ARRAY(w, size_t, n);
    st->vpos = WS_ARRAY(w, size_t, n);
    st->dpos = WS_ARRAY(w, size_t, n);
    st->live = WS_ARRAY(w, int32_t, n);
    st->tok = WS_ARRAY(w, int32_t, n);
}

/* One series x [L] raw: float32, scaler, clip, digits behind the prefix -> st->prompt [*n_prompt]; the scaler's
 * offset and scale, the digit cap and the scaled last value for the forecast. */
static int build_prompt(alignts *h, const double *xin, const char *label, size_t *n_prompt, int *max_d, double *off,
                        double *sc, double *last) {
    injective_state *st = (injective_state *)h->st;
    injective_cfg *g = &st->g;
    size_t L = (size_t)st->L, used = (size_t)st->used, i, cut;
    double lim = (pow(10.0, g->max_digits) - 1.0) / pow(10.0, g->precision);
    int64_t enc_len;
    int rc;
    if (series_check_float32(xin, xin, L, label)) return -1;
    for (i = 0; i < L; i++) st->x[i] = (double)(float)xin[i]; /* the runtime works on float32 input */
    rc = at_llmtime_scaler(st->x, 1, L, g->alpha, g->beta, g->basic, off, sc, st->work, NULL);
    if (rc != AT_OK) return rt_fail_as(RT_STATUS_INPUT, "LLMTime scaler on %s failed: %s", label, at_status_str(rc));
    *max_d = digit_cap(st->x, L, *off, *sc, g->precision, g->max_digits);
    *last = (st->x[L - 1] - *off) / *sc; /* fills a sample that parsed nothing before the window ended */
    for (i = 0; i < used; i++) { /* the scaler saw all L values; the prompt holds the last L' */
        double z = (st->x[L - used + i] - *off) / *sc;
        st->x[i] = z < -lim ? -lim : (z > lim ? lim : z);
    }
    if ((rc = at_encode_lengths(st->x, 1, used, &g->table, g->precision, &enc_len)) != AT_OK)
        return rt_fail_as(RT_STATUS_INPUT, "digit encoding of %s failed: %s", label, at_status_str(rc));
    if ((size_t)enc_len > st->enc_cap)
        return rt_fail_as(RT_STATUS_RUNTIME, "internal error: %lld digit tokens for %zu values (planned %zu)",
                          (long long)enc_len, used, st->enc_cap);
    if ((rc = at_encode_digits(st->x, 1, used, &g->table, g->precision, st->ids, st->enc_cap, &enc_len)) != AT_OK)
        return rt_fail_as(RT_STATUS_INPUT, "digit encoding of %s failed: %s", label, at_status_str(rc));
    cut = 0;
    if (enc_len > st->budget) { /* keep the last whole values that fit */
        size_t target = (size_t)(enc_len - st->budget);
        int64_t sep = g->vsep[g->n_vsep - 1];
        cut = (size_t)enc_len;
        for (i = 0; i < (size_t)enc_len; i++)
            if (st->ids[i] == sep && i + 1 >= target) {
                cut = i + 1;
                break;
            }
    }
    *n_prompt = st->prefix_n + (size_t)enc_len - cut;
    memcpy(st->prompt, st->prefix, st->prefix_n * sizeof(int32_t));
    for (i = cut; i < (size_t)enc_len; i++) st->prompt[st->prefix_n + i - cut] = (int32_t)st->ids[i];
    return 0;
}

/* numpy's quantile, method 'linear' (its _lerp, exact at the ends), of sorted v [n] */
static double quantile_sorted(const double *v, size_t n, double q) {
    double pos = q * (double)(n - 1), t, a, b, d;
    size_t lo = (size_t)floor(pos);
    if (lo >= n - 1) return v[n - 1];
    t = pos - (double)lo;
    a = v[lo];
    b = v[lo + 1];
    d = b - a;
    return t >= 0.5 ? b - d * (1 - t) : a + d * t;
}

static int injective_forecast(alignts *h, const double *xin, size_t B, size_t C, size_t L, double *out,
                              const double *q, size_t n_q, double *q_out) {
    injective_state *st = (injective_state *)h->st;
    injective_cfg *g = &st->g;
    size_t S = B * C, s, k, hh, n = (size_t)g->n_samples, H = (size_t)st->H, n_short = 0;
    char label[160];
    g->rng = st->seed0; /* every call restarts the seeded stream */
    for (s = 0; s < S; s++) {
        size_t n_prompt;
        int max_d, rc;
        double off, sc, last;
        lib_series_label(h, s, C, label, sizeof label);
        if (build_prompt(h, xin + s * L, label, &n_prompt, &max_d, &off, &sc, &last)) return -1;
        if (generate(st, st->prompt, (int)n_prompt, H, max_d, (size_t)st->n_ctx - n_prompt)) return -1;
        rc = at_decode_digits(st->gen, n, st->cap, st->lengths, &g->table, g->precision, H, st->vals, st->n_parsed);
        if (rc != AT_OK) return rt_fail_as(RT_STATUS_RUNTIME, "decoding the samples failed: %s", at_status_str(rc));
        for (k = 0; k < n; k++) {
            if (st->n_parsed[k] == (int64_t)H) continue;
            if ((size_t)st->lengths[k] < (size_t)st->n_ctx - n_prompt) /* the grammar makes this impossible */
                return rt_fail_as(RT_STATUS_RUNTIME, "internal error: sample %zu parsed %lld of %zu values", k,
                                  (long long)st->n_parsed[k], H);
            n_short++; /* stopped by the end of the window: padded with its last value (decode), or the context's */
            if (st->n_parsed[k] == 0)
                for (hh = 0; hh < H; hh++) st->vals[k * H + hh] = last;
        }
        for (hh = 0; hh < H; hh++) { /* unscale, then the median over samples (numpy's) and the quantiles */
            size_t i;
            for (k = 0; k < n; k++) st->col[k] = st->vals[k * H + hh] * sc + off;
            qsort(st->col, n, sizeof(double), cmp_double);
            out[s * H + hh] = (n % 2) ? st->col[n / 2] : (st->col[n / 2 - 1] + st->col[n / 2]) / 2.0;
            for (i = 0; i < n_q; i++) q_out[(s * H + hh) * n_q + i] = quantile_sorted(st->col, n, q[i]);
        }
    }
    if (n_short)
        lib_note(h, "%zu samples reached the end of the LM's window before H values; padded with their last value",
                 n_short);
    return 0;
}

static int injective_prompt(alignts *h, const double *x, size_t L, int32_t *ids, size_t cap, size_t *n) {
    injective_state *st = (injective_state *)h->st;
    size_t n_prompt;
    int max_d;
    double off, sc, last;
    if (L != (size_t)st->L)
        return rt_fail_as(RT_STATUS_INPUT, "alignts_prompt: L=%zu; the plan's context is %ld.", L, st->L);
    if (build_prompt(h, x, "the series", &n_prompt, &max_d, &off, &sc, &last)) return -1;
    *n = n_prompt;
    if (n_prompt > cap)
        return rt_fail_as(RT_STATUS_ARG, "alignts_prompt: the prompt has %zu ids; ids holds %zu.", n_prompt, cap);
    memcpy(ids, st->prompt, n_prompt * sizeof(int32_t));
    return 0;
}

static void injective_close(alignts *h) {
    injective_state *st = (injective_state *)h->st;
    if (!st) return;
    llm_close(st->lm);
    free(st->prefix);
    free(st->g.vsep);
    free(st->g.dsep);
    free(st->g.ends);
    free(st);
    h->st = NULL;
}

const paradigm_ops injective_ops = {"injective", injective_open, injective_plan, injective_reserve,
                                    injective_forecast, injective_prompt, injective_close};
