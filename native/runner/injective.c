/* Injective paradigm (LLMTime) on GGUF, as alignts/runtime/paradigms/injective.py and runtime/sampler.py:
 * per series: float32 context -> LLMTime scaler -> clip -> digit ids (codec table of the manifest) behind the
 * prefix (BOS, description) -> n constrained samples from llama.cpp (the grammar of sampler.py; the draw is
 * the kernels' at_sample) -> parse -> unscale -> median over samples. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alignts_kernels.h"
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

/* Generate n samples of H values each: ids [n, cap] (-1 padded), lengths [n]. max_d: digits per value. A sample
 * that reaches max_tok tokens (the end of the LM's window) stops with fewer values. */
static int generate(llm *lm, injective_cfg *g, const int32_t *prompt, int T, size_t H, int max_d, int64_t *out,
                    size_t cap, size_t max_tok, int64_t *length) {
    size_t n = (size_t)g->n_samples, r, j, V = (size_t)llm_n_vocab(lm);
    int *state = NULL, *n_dig = NULL;
    size_t *n_val = NULL, *vpos = NULL, *dpos = NULL;
    int32_t *live = NULL, *tok = NULL;
    double work[26];
    int rc = -1, first = 1;
    const float *row0;
    state = (int *)rt_calloc(n, sizeof(int));
    n_dig = (int *)rt_calloc(n, sizeof(int));
    n_val = (size_t *)rt_calloc(n, sizeof(size_t));
    vpos = (size_t *)rt_calloc(n, sizeof(size_t));
    dpos = (size_t *)rt_calloc(n, sizeof(size_t));
    live = (int32_t *)rt_calloc(n, sizeof(int32_t));
    tok = (int32_t *)rt_calloc(n, sizeof(int32_t));
    if (!state || !n_dig || !n_val || !vpos || !dpos || !live || !tok) goto done;
    for (j = 0; j < n; j++) {
        live[j] = (int32_t)j;
        length[j] = 0;
    }
    for (j = 0; j < n * cap; j++) out[j] = -1;
    row0 = llm_prefill(lm, prompt, T, (int)n);
    if (!row0) goto done;
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
                    int st;
                    if (!logits) goto done;
                    for (c = 0; c < g->K; c++)
                        if (g->mask[state[s]][c]) {
                            allowed[n_allowed] = g->cand[c];
                            slot[n_allowed++] = c;
                        }
                    st = at_sample(logits, V, allowed, n_allowed, g->greedy ? 0.0 : g->temperature, g->top_p, &g->rng,
                                   work, &id);
                    if (st != AT_OK) {
                        rt_fail("sampling failed (%s): NaN logits from the model?", at_status_str(st));
                        goto done;
                    }
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
            if ((size_t)length[s] >= cap) {
                rt_fail("internal error: sample %zu exceeded %zu tokens", s, cap);
                goto done;
            }
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
        if (llm_step(lm, tok, live, (int)r)) goto done;
    }
    rc = 0;
done:
    free(state);
    free(n_dig);
    free(n_val);
    free(vpos);
    free(dpos);
    free(live);
    free(tok);
    return rc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int run_injective(const bundle *b, const bundle_variant *v, const csv_table *t, const run_options *o, forecast *f) {
    const json_value *cfg = b->config, *codec = b->codec;
    injective_cfg g;
    long L, H, n_ctx, seed, prec, maxd;
    const char *desc = NULL;
    const char **names = NULL;
    size_t n_series = 0, i, s, need, prefix_n = 0, cap, n_short = 0;
    int32_t *prefix = NULL, *prompt = NULL;
    int64_t *ids = NULL, *gen = NULL, *lengths = NULL, *n_parsed = NULL, enc_len;
    double *x = NULL, *work = NULL, *vals = NULL, *col = NULL;
    long budget, per_value, used;
    llm *lm = NULL;
    llm_params lp;
    char *path = NULL;
    int rc = -1;

    memset(&g, 0, sizeof g);
    if (!codec) return rt_fail("malformed manifest: an injective bundle needs a 'codec' object; re-export the bundle.");
    if (cfg_int(cfg, "config", "context_len", 96, &L) || cfg_int(cfg, "config", "horizon", 24, &H) ||
        cfg_int(cfg, "config", "n_ctx", 512, &n_ctx) || cfg_int(cfg, "config", "samples", 20, &g.n_samples) ||
        cfg_number(cfg, "config", "temperature", 0.9, &g.temperature) ||
        cfg_number(cfg, "config", "top_p", 0.9, &g.top_p) || cfg_bool(cfg, "config", "greedy", 0, &g.greedy) ||
        cfg_int(cfg, "config", "seed", 0, &seed) || cfg_string(cfg, "config", "description", &desc) ||
        cfg_int(codec, "codec", "precision", 3, &prec) || cfg_int(codec, "codec", "max_digits", 6, &maxd) ||
        cfg_number(codec, "codec", "alpha", 0.95, &g.alpha) || cfg_number(codec, "codec", "beta", 0.3, &g.beta) ||
        cfg_bool(codec, "codec", "basic", 0, &g.basic) || cfg_bool(codec, "codec", "prefix_bos", 1, &g.prefix_bos))
        goto done;
    g.precision = (int)prec;
    g.max_digits = (int)maxd;
    if (o->context) L = o->context;
    if (o->horizon) H = o->horizon;
    if (o->samples) g.n_samples = o->samples;
    if (o->greedy) g.greedy = 1;
    g.rng = o->have_seed ? o->seed : (uint64_t)seed;
    if (L < 2) {
        rt_fail("--context %ld: expected >= 2 (the scaler needs a range).", L);
        goto done;
    }
    if (H < 1 || g.n_samples < 1 || g.n_samples > 4096) {
        rt_fail("horizon %ld and samples %ld: expected >= 1 and 1..4096.", H, g.n_samples);
        goto done;
    }
    if (!g.greedy && !(g.temperature > 0)) {
        rt_fail("temperature=%g: expected > 0 (or --greedy).", g.temperature);
        goto done;
    }
    if (!(g.top_p > 0 && g.top_p <= 1)) {
        rt_fail("top_p=%g: expected in (0, 1].", g.top_p);
        goto done;
    }
    if (g.precision < 0 || g.precision > 15 || g.max_digits < 1 || g.max_digits > 15) {
        rt_fail("malformed manifest: codec.precision %d / max_digits %d out of range (0..15, 1..15); re-export "
                "the bundle.", g.precision, g.max_digits);
        goto done;
    }
    if (read_table(b, &g)) goto done;
    need = max_new_tokens(&g, (size_t)H); /* the grammar's most tokens for H values: the sample buffer's width */
    per_value = context_value_tokens(&g);

    path = rt_join(b->dir, v->files[0]);
    if (!path) goto done;
    memset(&lp, 0, sizeof lp);
    lp.n_ctx = (int)n_ctx;
    lp.n_batch = n_ctx < 512 ? (int)n_ctx : 512;
    lp.n_seq_max = (int)g.n_samples;
    lp.n_threads = o->threads;
    {
        long n_embd;
        if (cfg_int(cfg, "config", "n_embd", 0, &n_embd)) goto done;
        if (!o->threads && n_embd > 0 && n_embd <= 256)
            lp.n_threads = 1; /* a tiny LM decodes faster on one thread (as the Python runtime does) */
    }
    {
        const char *lora = NULL;
        double lora_scale = 1.0;
        char *lora_path = NULL;
        if (v->extra && (cfg_string(v->extra, "variant.extra", "lora_file", &lora) ||
                         cfg_number(v->extra, "variant.extra", "lora_scale", 1.0, &lora_scale)))
            goto done;
        if (lora) {
            for (i = 0; i < v->n_files && strcmp(v->files[i], lora) != 0; i++) {
            }
            if (i == v->n_files && bundle_verify_file(b, lora)) goto done; /* not verified with the variant */
            if (!(lora_path = rt_join(b->dir, lora))) goto done;
            lp.lora_path = lora_path;
            lp.lora_scale = (float)lora_scale;
        }
        lm = llm_open(path, &lp);
        free(lora_path);
    }
    if (!lm) goto done;
    if (llm_n_ctx_train(lm) > 0 && llm_n_ctx_train(lm) < n_ctx) {
        rt_fail("bundle %s: n_ctx=%ld exceeds the model's trained context %d; expected n_ctx <= %d. Fix: re-export "
                "with --n-ctx %d.", b->dir, n_ctx, llm_n_ctx_train(lm), llm_n_ctx_train(lm), llm_n_ctx_train(lm));
        goto done;
    }
    if (check_table_vocab(lm, &g, path)) goto done;

    /* prefix: BOS (or EOS) as in pretraining, then the domain description */
    prefix = (int32_t *)rt_malloc(sizeof(int32_t));
    if (!prefix) goto done;
    if (g.prefix_bos) {
        int32_t bos = llm_bos(lm) >= 0 ? llm_bos(lm) : llm_eos(lm);
        if (bos >= 0) prefix[prefix_n++] = bos;
    }
    if (desc && desc[0]) {
        size_t dl = strlen(desc);
        char *text = (char *)rt_malloc(dl + 2);
        int32_t *dt, *np;
        int nd = 0;
        if (!text) goto done;
        memcpy(text, desc, dl + 1);
        while (dl && (text[dl - 1] == ' ' || text[dl - 1] == '\t' || text[dl - 1] == '\n' || text[dl - 1] == '\r' ||
                      text[dl - 1] == '\f' || text[dl - 1] == '\v'))
            dl--;
        text[dl] = '\n';
        text[dl + 1] = '\0';
        dt = llm_tokenize(lm, text, &nd);
        free(text);
        if (!dt) goto done;
        np = (int32_t *)realloc(prefix, (prefix_n + (size_t)nd + 1) * sizeof(int32_t));
        if (!np) {
            free(dt);
            rt_fail("out of memory");
            goto done;
        }
        prefix = np;
        memcpy(prefix + prefix_n, dt, (size_t)nd * sizeof(int32_t));
        prefix_n += (size_t)nd;
        free(dt);
    }
    /* L' = the last context values that fit next to H values (LLMTime's truncation), at least 2 */
    budget = n_ctx - 1 - (long)prefix_n - forecast_tokens(&g, H);
    used = (budget > 0 ? budget : 0) / per_value;
    if (used > L) used = L;
    if (used < 2) {
        long room = n_ctx - 1 - (long)prefix_n - 2 * per_value;
        long most = room > 0 ? (long)floor((double)room / ((double)per_value * 1.2)) : 0;
        rt_fail("horizon=%ld needs about %ld generated tokens (%ld per value x 1.2), which leaves no room for 2 "
                "context values in the LM's context of %ld tokens; expected horizon <= %ld. Fix: forecast a shorter "
                "--horizon.", H, forecast_tokens(&g, H), per_value, n_ctx, most);
        goto done;
    }
    if (used < L)
        fprintf(stderr, "alignts-run: %ld context values and %ld forecast values do not fit the LM's %ld-token "
                "window; the prompt keeps the last %ld values (LLMTime's truncation)\n", L, H, n_ctx, used);

    /* series: --column NAME..., else every numeric column (as `alignts forecast` on an Injective bundle) */
    names = (const char **)rt_calloc(o->n_columns ? o->n_columns : t->n_columns, sizeof(char *));
    if (!names) goto done;
    if (o->n_columns) {
        for (i = 0; i < o->n_columns; i++) names[n_series++] = o->columns[i];
    } else {
        for (i = 0; i < t->n_columns; i++)
            if (t->columns[i].numeric && !t->columns[i].is_date) names[n_series++] = t->columns[i].name;
        if (n_series == 0) {
            rt_fail("%s has no numeric columns; expected a header row and numeric value columns. Fix: pass a CSV "
                    "with numbers or name one with --column.", o->data);
            goto done;
        }
    }

    cap = need;
    x = (double *)rt_malloc((size_t)L * sizeof(double));
    work = (double *)rt_malloc((size_t)L * sizeof(double));
    gen = (int64_t *)rt_malloc((size_t)g.n_samples * cap * sizeof(int64_t));
    lengths = (int64_t *)rt_malloc((size_t)g.n_samples * sizeof(int64_t));
    n_parsed = (int64_t *)rt_malloc((size_t)g.n_samples * sizeof(int64_t));
    vals = (double *)rt_malloc((size_t)g.n_samples * (size_t)H * sizeof(double));
    col = (double *)rt_malloc((size_t)g.n_samples * sizeof(double));
    f->values = (double *)rt_malloc(n_series * (size_t)H * sizeof(double));
    if (!x || !work || !gen || !lengths || !n_parsed || !vals || !col || !f->values) goto done;
    for (s = 0; s < n_series; s++) {
        double off, sc, lim = (pow(10.0, g.max_digits) - 1.0) / pow(10.0, g.precision);
        size_t cut, n_prompt, h, k;
        double last;
        int st, max_d;
        if (series_tail(t, o->data, names[s], (size_t)L, x) ||
            series_check_float32(x, x, (size_t)L, names[s], o->data))
            goto done;
        for (i = 0; i < (size_t)L; i++) x[i] = (double)(float)x[i]; /* the runtime works on float32 input */
        st = at_llmtime_scaler(x, 1, (size_t)L, g.alpha, g.beta, g.basic, &off, &sc, work, NULL);
        if (st != AT_OK) {
            rt_fail("LLMTime scaler on column '%s' failed: %s", names[s], at_status_str(st));
            goto done;
        }
        max_d = digit_cap(x, (size_t)L, off, sc, g.precision, g.max_digits);
        last = (x[L - 1] - off) / sc; /* fills a sample that parsed nothing before the window ended */
        for (i = 0; i < (size_t)used; i++) { /* the scaler saw all L values; the prompt holds the last L' */
            double z = (x[(size_t)(L - used) + i] - off) / sc;
            x[i] = z < -lim ? -lim : (z > lim ? lim : z);
        }
        if ((st = at_encode_lengths(x, 1, (size_t)used, &g.table, g.precision, &enc_len)) != AT_OK) {
            rt_fail("digit encoding of column '%s' failed: %s", names[s], at_status_str(st));
            goto done;
        }
        free(ids);
        ids = (int64_t *)rt_malloc((size_t)enc_len * sizeof(int64_t));
        if (!ids) goto done;
        if ((st = at_encode_digits(x, 1, (size_t)used, &g.table, g.precision, ids, (size_t)enc_len, &enc_len))
            != AT_OK) {
            rt_fail("digit encoding of column '%s' failed: %s", names[s], at_status_str(st));
            goto done;
        }
        cut = 0;
        if (enc_len > budget) { /* keep the last whole values that fit */
            size_t target = (size_t)(enc_len - budget);
            int64_t last = g.vsep[g.n_vsep - 1];
            cut = (size_t)enc_len;
            for (i = 0; i < (size_t)enc_len; i++)
                if (ids[i] == last && i + 1 >= target) {
                    cut = i + 1;
                    break;
                }
        }
        n_prompt = prefix_n + (size_t)enc_len - cut;
        free(prompt);
        prompt = (int32_t *)rt_malloc((n_prompt ? n_prompt : 1) * sizeof(int32_t));
        if (!prompt) goto done;
        memcpy(prompt, prefix, prefix_n * sizeof(int32_t));
        for (i = cut; i < (size_t)enc_len; i++) prompt[prefix_n + i - cut] = (int32_t)ids[i];
        if (o->dump_prompt) {
            fprintf(stderr, "prompt %s:", names[s]);
            for (i = 0; i < n_prompt; i++) fprintf(stderr, " %d", prompt[i]);
            fputc('\n', stderr);
        }
        if (generate(lm, &g, prompt, (int)n_prompt, (size_t)H, max_d, gen, cap, (size_t)n_ctx - n_prompt, lengths))
            goto done;
        st = at_decode_digits(gen, (size_t)g.n_samples, cap, lengths, &g.table, g.precision, (size_t)H, vals, n_parsed);
        if (st != AT_OK) {
            rt_fail("decoding the samples failed: %s", at_status_str(st));
            goto done;
        }
        for (k = 0; k < (size_t)g.n_samples; k++) {
            if (n_parsed[k] == H) continue;
            if ((size_t)lengths[k] < (size_t)n_ctx - n_prompt) { /* the grammar makes this impossible */
                rt_fail("internal error: sample %zu parsed %lld of %ld values", k, (long long)n_parsed[k], H);
                goto done;
            }
            n_short++; /* stopped by the end of the window: padded with its last value (decode), or the context's */
            if (n_parsed[k] == 0)
                for (h = 0; h < (size_t)H; h++) vals[k * (size_t)H + h] = last;
        }
        for (h = 0; h < (size_t)H; h++) { /* unscale, then the median over samples (numpy's) */
            size_t n = (size_t)g.n_samples;
            for (k = 0; k < n; k++) col[k] = vals[k * (size_t)H + h] * sc + off;
            qsort(col, n, sizeof(double), cmp_double);
            f->values[s * (size_t)H + h] = (n % 2) ? col[n / 2] : (col[n / 2 - 1] + col[n / 2]) / 2.0;
        }
    }
    if (n_short)
        fprintf(stderr, "alignts-run: %zu samples reached the end of the LM's window before H values; padded with "
                "their last value\n", n_short);
    f->n_series = n_series;
    f->horizon = (size_t)H;
    f->names = names;
    f->first_step = t->n_rows;
    names = NULL;
    rc = 0;
done:
    free(names);
    free(prefix);
    free(prompt);
    free(ids);
    free(gen);
    free(lengths);
    free(n_parsed);
    free(vals);
    free(col);
    free(x);
    free(work);
    free(path);
    free(g.vsep);
    free(g.dsep);
    free(g.ends);
    llm_close(lm);
    if (rc != 0) {
        free(f->values);
        f->values = NULL;
    }
    return rc;
}
