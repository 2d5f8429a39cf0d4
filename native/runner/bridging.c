/* Bridging paradigm (Time-LLM) on GGUF, as alignts/runtime/paradigms/bridging.py with the backbone's gguf-f32
 * variant: raw [S, L] -> training scaler -> float32 -> RevIN + patching -> the adapter (torch_trained.safetensors:
 * circular Conv1d patch embedding, then cross-attention onto the prototypes, out to the LM width; what depends on
 * the weights alone is computed at open, as AdapterExport does at export)
 * -> [prompt prefix rows of the word-embedding table ; adapter output] -> frozen backbone (llama.cpp, input
 * embeddings) -> last N hidden states, first d_ff features -> head (head.npz; + skip_w @ z + skip_b with
 * config.linear_skip, z the normalized context read back from the patches) -> instance denorm -> float32 ->
 * training scaler inverse. The backbone bundle is found by the sha256 of its manifest (backbone_store.py). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alignts_kernels.h"
#include "lib.h"
#include "llm.h"
#include "npy.h"
#include "npz.h"
#include "prompt_stats.h"
#include "rt_util.h"
#include "runner.h"
#include "safetensors.h"
#include "sha256.h"
#include "tokenizer.h"

/* The adapter's loops (gemm_acc, gemm_acc_d, fold_adapter, adapter) also built for AVX2 and AVX-512 on x86-64, the
 * widest picked at load (gcc's target_clones, an ifunc: glibc only): the same operations in the same order (no FMA:
 * -ffp-contract=off), so the same results. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef VECTOR_CLONES
#define VECTOR_CLONES
#endif

typedef struct {
    long L, H, C, P, stride, D, n_heads, d_keys, K, d_ff, d_llm, T, top_k, decimals;
    size_t N, HE;
    double eps;
    npz_file ad, head;
    const npz_array *pw, *qw, *qb, *ow, *ob, *hw, *hb, *sw, *sb; /* sw, sb: the linear skip, or NULL */
    int linear_skip;
    float *g;   /* [n_heads, D + 1, K]: the scores' weights, (query projection . prototype keys) / sqrt(E) */
    float *vt;  /* [n_heads, K, E]: the prototypes' values, a block a head */
    float *owt; /* [HE, d_llm]: the out projection, transposed */
    int32_t *const_ids, pad_id;
    size_t n_const;
    bundle bb; /* the backbone bundle */
    char *bb_dir;
    const bundle_variant *bv;
    npy_table table;
    tokenizer tok;
    llm *lm;
    long n_ctx, n_batch, n_seq_max;
    const char *kv;
    /* workspace */
    double *x, *patches, *mean, *std, *work, *swork;
    float *emb, *hid, *enc, *att, *o;
    int32_t *ids;
    char *text;
} bridging_state;

/* ------------------------------------------------------------------------------------------ the backbone */
static int manifest_hash(const char *dir, char hex[65]) {
    char *p = rt_join(dir, "manifest.json");
    uint64_t size;
    struct stat st;
    int rc;
    if (!p) return -1;
    if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(p);
        return 1; /* not a bundle */
    }
    rc = sha256_file(p, hex, &size);
    free(p);
    return rc;
}

/* dir itself, or one of its sub-folders, whose manifest hashes to want: malloc'd path or NULL */
static char *search_folder(const char *dir, const char *want) {
    char hex[65];
    DIR *d;
    struct dirent *e;
    char *best = NULL;
    if (manifest_hash(dir, hex) == 0 && strcmp(hex, want) == 0) {
        char *c = rt_join(dir, ".");
        if (c) c[strlen(c) - 2] = '\0';
        return c;
    }
    if (!(d = opendir(dir))) return NULL;
    while ((e = readdir(d))) {
        char *sub;
        if (e->d_name[0] == '.') continue;
        if (!(sub = rt_join(dir, e->d_name))) break;
        if (manifest_hash(sub, hex) == 0 && strcmp(hex, want) == 0 && (!best || strcmp(sub, best) < 0)) {
            free(best);
            best = sub;
        } else {
            free(sub);
        }
    }
    closedir(d);
    return best;
}

/* The search order of alignts/runtime/backbone_store.py (the option's folder first). */
static char *find_backbone(alignts *h, const char *want, const char *hint, char *looked, size_t size) {
    char *dirs[8], *found = NULL, *env = getenv("ALIGNTS_BACKBONE_PATH"), *home = getenv("HOME");
    size_t n = 0, i;
    char hex[65];
    if (hint && hint[0]) {
        char *hp = hint[0] == '/' ? rt_join(hint, ".") : rt_join(h->b.dir, hint);
        if (hp && hint[0] == '/') hp[strlen(hp) - 2] = '\0';
        if (hp && manifest_hash(hp, hex) == 0 && strcmp(hex, want) == 0) return hp;
        snprintf(looked + strlen(looked), size - strlen(looked), "%s (the manifest's path hint); ", hp ? hp : hint);
        free(hp);
    }
    if (h->opt.backbone_dir) dirs[n++] = rt_join(h->opt.backbone_dir, ".");
    dirs[n++] = rt_join(h->b.dir, "../backbones");
    dirs[n++] = rt_join(h->b.dir, "backbones");
    if (env && env[0]) {
        char *copy = rt_join(env, "."), *tok, *save = NULL;
        if (copy) {
            copy[strlen(copy) - 2] = '\0';
            for (tok = strtok_r(copy, ":", &save); tok && n < 7; tok = strtok_r(NULL, ":", &save))
                dirs[n++] = rt_join(tok, ".");
            free(copy);
        }
    }
    if (home && n < 8) dirs[n++] = rt_join(home, ".cache/alignts/backbones");
    for (i = 0; i < n; i++) {
        if (!dirs[i]) continue;
        if (!found && (found = search_folder(dirs[i], want)) == NULL)
            snprintf(looked + strlen(looked), size - strlen(looked), "%s; ", dirs[i]);
        free(dirs[i]);
    }
    return found;
}

static int open_backbone(alignts *h, bridging_state *st) {
    const json_value *bbj = json_get(h->b.root, "backbone"), *sha, *hint, *cfg;
    const char *bv_name = NULL, *table = "word_embeddings.npy", *tokf = "tokenizer.json";
    char looked[2048] = "", *path = NULL;
    long d_model;
    size_t i;
    int rc = -1;
    if (!bbj || bbj->type != JSON_OBJECT || !(sha = json_get(bbj, "sha256")) || sha->type != JSON_STRING)
        return rt_fail("%s: a bridging manifest must name its backbone (manifest.backbone.sha256); re-export the "
                       "bundle with `alignts fit bridging`.", h->b.dir);
    hint = json_get(bbj, "path");
    if (h->v->extra && cfg_string(h->v->extra, "variant.extra", "backbone_variant", &bv_name)) return -1;
    if (!bv_name || strncmp(bv_name, "gguf", 4) != 0)
        return rt_fail("variant '%s' runs its backbone on '%s'; libalignts runs GGUF backbones only (llama.cpp). Fix: "
                       "pick the gguf-* variant with --variant.", h->v->name, bv_name ? bv_name : "?");
    if (!(st->bb_dir = find_backbone(h, sha->string, hint && hint->type == JSON_STRING ? hint->string : NULL, looked,
                                     sizeof looked)))
        return rt_fail("the bundle %s needs the backbone with manifest sha256 %s, and no backbone bundle with that hash "
                       "was found. Looked in: %s Fix: copy that backbone bundle folder (written by `alignts fit "
                       "bridging` into backbones/ beside the adapter) into one of these folders, or pass its folder "
                       "(--backbone-dir / alignts_options.backbone_dir).", h->b.dir, sha->string, looked);
    if (bundle_open(st->bb_dir, &st->bb)) return -1;
    if (strcmp(st->bb.paradigm, "backbone") != 0)
        return rt_fail("%s: paradigm is '%s', expected 'backbone'.", st->bb_dir, st->bb.paradigm);
    if (!(st->bv = bundle_pick_variant(&st->bb, bv_name)) || bundle_verify_variant(&st->bb, st->bv)) return -1;
    cfg = st->bb.config;
    if (cfg_int(cfg, "config", "d_model", -1, &d_model) || cfg_string(cfg, "config", "table", &table) ||
        cfg_string(cfg, "config", "tokenizer", &tokf))
        return -1;
    if (!table) table = "word_embeddings.npy";
    if (!tokf) tokf = "tokenizer.json";
    if (d_model != st->d_llm)
        return rt_fail("backbone width %ld != the adapter's d_llm %ld; the backbone bundle does not belong to this "
                       "adapter. Re-export both.", d_model, st->d_llm);
    if (bundle_verify_file(&st->bb, table) || bundle_verify_file(&st->bb, tokf)) return -1;
    if (!(path = rt_join(st->bb_dir, table)) || npy_table_open(path, &st->table)) goto done;
    if (st->table.cols != (size_t)st->d_llm) {
        rt_fail("%s: table of width %zu; expected %ld (config.d_model). Re-export the backbone bundle.", path,
                st->table.cols, st->d_llm);
        goto done;
    }
    free(path);
    if (!(path = rt_join(st->bb_dir, tokf)) || tokenizer_load(path, &st->tok)) goto done;
    { /* the prompt's constant segment (PromptConfig.constant_text) and the pad id (PromptTokenizer._find_pad_id) */
        static const char *pads[] = {"[PAD]", "<pad>", "<|endoftext|>", "</s>", "<|end_of_text|>", "<unk>", "[UNK]"};
        const char *desc = NULL, *s;
        char text[1024], *w = text;
        size_t n = 0;
        int32_t ids[1024];
        if (cfg_string(h->b.config, "config", "description", &desc)) goto done;
        if (!desc) desc = "a time series.";
        w += snprintf(text, sizeof text, "Dataset description: ");
        for (s = desc; *s && w < text + 700;) { /* " ".join(description.split()) */
            while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v') s++;
            if (!*s) break;
            if (w > text + 21) *w++ = ' ';
            while (*s && !(*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v') &&
                   w < text + 700)
                *w++ = *s++;
        }
        if (*s) {
            rt_fail("config.description is longer than libalignts' 680 characters; run this bundle with `alignts "
                    "forecast`.");
            goto done;
        }
        snprintf(w, sizeof text - (size_t)(w - text), " Task description: forecast the next %ld steps given the "
                 "previous %ld steps information; ", st->H, st->L);
        if (tokenizer_encode(&st->tok, text, ids, sizeof ids / sizeof ids[0], &n)) goto done;
        if (!(st->const_ids = (int32_t *)rt_malloc((n ? n : 1) * sizeof(int32_t)))) goto done;
        memcpy(st->const_ids, ids, n * sizeof(int32_t));
        st->n_const = n;
        st->pad_id = 0;
        for (i = 0; i < sizeof pads / sizeof pads[0]; i++)
            if (tokenizer_token_id(&st->tok, pads[i]) >= 0) {
                st->pad_id = tokenizer_token_id(&st->tok, pads[i]);
                break;
            }
    }
    for (i = 0; i < st->n_const; i++)
        if (st->const_ids[i] < 0 || (size_t)st->const_ids[i] >= st->table.rows) break;
    if (i < st->n_const || st->pad_id < 0 || (size_t)st->pad_id >= st->table.rows) {
        rt_fail("the prompt's ids reach past the backbone's %zu table rows; the files do not belong together. "
                "Re-export the bundle.", st->table.rows);
        goto done;
    }
    for (i = 0; i < st->tok.n_vocab; i++)
        if ((size_t)st->tok.vocab[i].id >= st->table.rows) {
            rt_fail("the tokenizer has id %d but the embedding table has %zu rows; the tokenizer does not belong to "
                    "this backbone. Re-export the backbone bundle.", st->tok.vocab[i].id, st->table.rows);
            goto done;
        }
    if (st->bv->extra) {
        if (cfg_int(st->bv->extra, "variant.extra", "n_ctx", 512, &st->n_ctx) ||
            cfg_int(st->bv->extra, "variant.extra", "n_batch", st->n_ctx, &st->n_batch) ||
            cfg_int(st->bv->extra, "variant.extra", "n_seq_max", 1, &st->n_seq_max) ||
            cfg_string(st->bv->extra, "variant.extra", "kv_type", &st->kv))
            goto done;
    } else {
        st->n_ctx = st->n_batch = 512;
        st->n_seq_max = 1;
    }
    if (st->kv && strcmp(st->kv, "f32") && strcmp(st->kv, "f16")) {
        rt_fail("backbone variant '%s': kv_type '%s'; expected f32 or f16.", st->bv->name, st->kv);
        goto done;
    }
    if (st->T + (long)st->N > st->n_ctx) {
        rt_fail("prompt_len %ld + %zu patches exceed the backbone's n_ctx %ld; re-export the bundle.", st->T, st->N,
                st->n_ctx);
        goto done;
    }
    rc = 0;
done:
    free(path);
    return rc;
}

/* ------------------------------------------------------------------------------------------ open / plan */
static const npz_array *need(const npz_file *f, const char *name, size_t nd, size_t d0, size_t d1, const char *path) {
    const npz_array *a = npz_get(f, name, nd, path);
    if (!a) return NULL;
    if (a->shape[0] != d0 || (nd > 1 && d1 && a->shape[1] != d1)) {
        rt_fail("%s: %s has shape [%zu%s%zu]; expected [%zu, %zu] from the manifest's config. Re-export the bundle.",
                path, name, a->shape[0], nd > 1 ? ", " : "", nd > 1 ? a->shape[1] : 0, d0, d1);
        return NULL;
    }
    return a;
}

/* 64 bytes as one value (GCC / Clang vector extensions): 16 floats or 8 doubles; AVX-512 one register, AVX2 two, SSE
 * and NEON four */
typedef float v16f __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));

/* NAME(M, n, k, A, lda, B, ldb, C, ldc): C[M, n] += A[M, k] B[k, n] in T, row-major with leading dimensions: blocks
 * of 4 rows x one vector VT of columns whose sums stay in registers across k, the rest one row at a time. Each
 * element's sum runs over k in order, as the plain loop would: the same results. gemm_acc (float) runs the
 * adapter's products, gemm_acc_d (double) what the adapter folds at open. */
#define DEFINE_GEMM_ACC(NAME, T, VT)                                                                                  \
    VECTOR_CLONES static void NAME(size_t M, size_t n, size_t k, const T *A, size_t lda, const T *B, size_t ldb,       \
                                   T *C, size_t ldc) {                                                                \
        const size_t w = sizeof(VT) / sizeof(T);                                                                      \
        size_t i = 0, c, l, r, e;                                                                                     \
        for (; i + 4 <= M; i += 4) {                                                                                  \
            const T *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;                                \
            for (c = 0; c + w <= n; c += w) {                                                                         \
                T *c0 = C + i * ldc + c;                                                                              \
                VT s0, s1, s2, s3, b;                                                                                 \
                memcpy(&s0, c0, sizeof s0);                                                                           \
                memcpy(&s1, c0 + ldc, sizeof s1);                                                                     \
                memcpy(&s2, c0 + 2 * ldc, sizeof s2);                                                                 \
                memcpy(&s3, c0 + 3 * ldc, sizeof s3);                                                                 \
                for (l = 0; l < k; l++) {                                                                             \
                    memcpy(&b, B + l * ldb + c, sizeof b);                                                            \
                    s0 += a0[l] * b;                                                                                  \
                    s1 += a1[l] * b;                                                                                  \
                    s2 += a2[l] * b;                                                                                  \
                    s3 += a3[l] * b;                                                                                  \
                }                                                                                                     \
                memcpy(c0, &s0, sizeof s0);                                                                           \
                memcpy(c0 + ldc, &s1, sizeof s1);                                                                     \
                memcpy(c0 + 2 * ldc, &s2, sizeof s2);                                                                 \
                memcpy(c0 + 3 * ldc, &s3, sizeof s3);                                                                 \
            }                                                                                                         \
            for (r = 0; r < 4 && c < n; r++) /* the columns past the last whole vector */                             \
                for (l = 0; l < k; l++) {                                                                             \
                    const T a = A[(i + r) * lda + l], *b = B + l * ldb;                                               \
                    for (e = c; e < n; e++) C[(i + r) * ldc + e] += a * b[e];                                         \
                }                                                                                                     \
        }                                                                                                             \
        for (; i < M; i++) /* the rows past the last 4 */                                                             \
            for (l = 0; l < k; l++) {                                                                                 \
                const T a = A[i * lda + l], *b = B + l * ldb;                                                         \
                for (e = 0; e < n; e++) C[i * ldc + e] += a * b[e];                                                   \
            }                                                                                                         \
    }

DEFINE_GEMM_ACC(gemm_acc, float, v16f)
DEFINE_GEMM_ACC(gemm_acc_d, double, v8d)

/* What the adapter computes from its weights alone, once (AdapterExport in alignts/export/bridging.py, in double):
 * keys, values = Linear(prototypes) [K, HE]; head h's scores (x Wq_h^T + bq_h) K_h^T / sqrt(E) = [x, 1] g_h with
 * g_h = [Wq_h^T K_h^T ; bq_h K_h^T] / sqrt(E) [D + 1, K]; the values as [n_heads, K, E]; the out projection
 * transposed. The key / value projections are products of 64 prototypes at a time (gemm_acc_d), in double. */
VECTOR_CLONES static int fold_adapter(bridging_state *st, const char *path) {
    const npz_array *pr, *kw, *kb, *vw, *vb;
    size_t K = (size_t)st->K, HE = st->HE, dl = (size_t)st->d_llm, D = (size_t)st->D, E = (size_t)st->d_keys;
    enum { PB = 64 };
    size_t NH = (size_t)st->n_heads, j0, b, e, m, d, hh;
    double *kwt = NULL, *vwt = NULL, *key = NULL, *val = NULL, *qwt = NULL, *pd = NULL, scale = 1.0 / sqrt((double)E);
    int rc = -1;
    if (!(pr = need(&st->ad, "prototype_table", 2, K, dl, path)) ||
        !(kw = need(&st->ad, "reprogram.key.weight", 2, HE, dl, path)) ||
        !(kb = need(&st->ad, "reprogram.key.bias", 1, HE, 0, path)) ||
        !(vw = need(&st->ad, "reprogram.value.weight", 2, HE, dl, path)) ||
        !(vb = need(&st->ad, "reprogram.value.bias", 1, HE, 0, path)))
        return -1;
    if (!(st->g = (float *)rt_malloc(NH * (D + 1) * K * sizeof(float))) ||
        !(st->vt = (float *)rt_malloc(NH * K * E * sizeof(float))) ||
        !(st->owt = (float *)rt_malloc(HE * dl * sizeof(float))) ||
        !(kwt = (double *)rt_malloc(dl * HE * sizeof(double))) || !(vwt = (double *)rt_malloc(dl * HE * sizeof(double))) ||
        !(key = (double *)rt_malloc(PB * HE * sizeof(double))) || !(val = (double *)rt_malloc(PB * HE * sizeof(double))) ||
        !(qwt = (double *)rt_malloc((D + 1) * HE * sizeof(double))) ||
        !(pd = (double *)rt_malloc(PB * dl * sizeof(double))))
        goto done;
    for (e = 0; e < HE; e++) {
        for (m = 0; m < dl; m++) {
            kwt[m * HE + e] = (double)kw->data[e * dl + m];
            vwt[m * HE + e] = (double)vw->data[e * dl + m];
        }
        for (d = 0; d < D; d++) qwt[d * HE + e] = (double)st->qw->data[e * D + d];
        qwt[D * HE + e] = (double)st->qb->data[e]; /* the bias as row D */
        for (m = 0; m < dl; m++) st->owt[e * dl + m] = st->ow->data[m * HE + e];
    }
    for (j0 = 0; j0 < K; j0 += PB) { /* PB prototypes' key and value rows: [PB, dl] x [dl, HE] + the biases */
        const size_t nb = K - j0 < PB ? K - j0 : PB;
        for (b = 0; b < nb; b++) {
            for (m = 0; m < dl; m++) pd[b * dl + m] = (double)pr->data[(j0 + b) * dl + m];
            for (e = 0; e < HE; e++) {
                key[b * HE + e] = (double)kb->data[e];
                val[b * HE + e] = (double)vb->data[e];
            }
        }
        gemm_acc_d(nb, HE, dl, pd, dl, kwt, HE, key, HE);
        gemm_acc_d(nb, HE, dl, pd, dl, vwt, HE, val, HE);
        for (b = 0; b < nb; b++) /* then their columns of every g_h and rows of every v_h */
            for (hh = 0; hh < NH; hh++) {
                const double *k = key + b * HE + hh * E;
                for (e = 0; e < E; e++) st->vt[(hh * K + j0 + b) * E + e] = (float)val[b * HE + hh * E + e];
                for (d = 0; d <= D; d++) {
                    const double *q = qwt + d * HE + hh * E;
                    double acc = 0.0;
                    for (e = 0; e < E; e++) acc += q[e] * k[e];
                    st->g[(hh * (D + 1) + d) * K + j0 + b] = (float)(acc * scale);
                }
            }
    }
    rc = 0;
done:
    free(kwt);
    free(vwt);
    free(key);
    free(val);
    free(qwt);
    free(pd);
    return rc;
}

static int bridging_open(alignts *h) {
    const json_value *cfg = h->b.config;
    bridging_state *st;
    const char *adapter = "torch_trained.safetensors", *head = "head.npz";
    char *path = NULL;
    int rc = -1;
    long Nn;
    if (!cfg) return rt_fail("malformed manifest: a bridging bundle needs a 'config' object; re-export the bundle.");
    if (!(st = (bridging_state *)rt_calloc(1, sizeof *st))) return -1;
    h->st = st;
    if (cfg_int(cfg, "config", "context_len", -1, &st->L) || cfg_int(cfg, "config", "horizon", -1, &st->H) ||
        cfg_int(cfg, "config", "n_channels", 1, &st->C) || cfg_int(cfg, "config", "patch_len", 16, &st->P) ||
        cfg_int(cfg, "config", "stride", 8, &st->stride) || cfg_int(cfg, "config", "n_patches", -1, &Nn) ||
        cfg_int(cfg, "config", "d_model", -1, &st->D) || cfg_int(cfg, "config", "n_heads", 8, &st->n_heads) ||
        cfg_int(cfg, "config", "d_keys", 128, &st->d_keys) || cfg_int(cfg, "config", "n_prototypes", 1000, &st->K) ||
        cfg_int(cfg, "config", "d_ff", -1, &st->d_ff) || cfg_int(cfg, "config", "d_llm", -1, &st->d_llm) ||
        cfg_int(cfg, "config", "prompt_len", -1, &st->T) || cfg_int(cfg, "config", "top_k", 5, &st->top_k) ||
        cfg_int(cfg, "config", "decimals", 3, &st->decimals) || cfg_number(cfg, "config", "eps", 1e-5, &st->eps) ||
        cfg_bool(cfg, "config", "linear_skip", 0, &st->linear_skip))
        return -1;
    if (st->L < 2 || st->H < 1 || st->C < 1 || st->P < 1 || st->P > 4096 || st->stride < 1 || st->D < 1 ||
        st->n_heads < 1 || st->d_keys < 1 || st->K < 1 || st->d_ff < 1 || st->d_llm < st->d_ff || st->T < 1 ||
        st->top_k < 1 || st->top_k > 64 || st->L < 2 * st->top_k)
        return rt_fail("malformed manifest: bridging config out of range (context_len %ld, horizon %ld, n_channels %ld, "
                       "patch_len %ld, stride %ld, d_model %ld, n_heads %ld, d_keys %ld, n_prototypes %ld, d_ff %ld, "
                       "d_llm %ld, prompt_len %ld, top_k %ld); re-export the bundle.", st->L, st->H, st->C, st->P,
                       st->stride, st->D, st->n_heads, st->d_keys, st->K, st->d_ff, st->d_llm, st->T, st->top_k);
    st->N = at_n_patches((size_t)st->L, (size_t)st->P, (size_t)st->stride);
    if (st->N == 0 || (Nn >= 0 && (size_t)Nn != st->N))
        return rt_fail("malformed manifest: config.n_patches is %ld but L=%ld, patch_len=%ld, stride=%ld give %zu; "
                       "re-export the bundle.", Nn, st->L, st->P, st->stride, st->N);
    st->HE = (size_t)st->n_heads * (size_t)st->d_keys;
    {
        const json_value *abl = json_get(cfg, "ablate_lm");
        if (abl && !(abl->type == JSON_STRING && !strcmp(abl->string, "none")))
            return rt_fail("bundle %s is an LM-removed twin (config.ablate_lm); libalignts runs Bridging bundles with "
                           "their backbone. Fix: run it with `alignts forecast`.", h->b.dir);
    }
    if (h->v->extra && cfg_string(h->v->extra, "variant.extra", "head_file", &head)) return -1;
    if (!head) head = "head.npz";
    /* the adapter's trained tensors: the bundle's torch_trained.safetensors (alignts/export/reference.py) */
    if (lib_verify_extra(h, adapter) || lib_verify_extra(h, head) || lib_read_scaler(h, (size_t)st->C)) return -1;
    if (!(path = rt_join(h->b.dir, adapter)) || safetensors_read(path, &st->ad)) goto done;
    if (!(st->pw = need(&st->ad, "patch_embed.conv.weight", 3, (size_t)st->D, (size_t)st->P, path)) ||
        !(st->qw = need(&st->ad, "reprogram.query.weight", 2, st->HE, (size_t)st->D, path)) ||
        !(st->qb = need(&st->ad, "reprogram.query.bias", 1, st->HE, 0, path)) ||
        !(st->ow = need(&st->ad, "reprogram.out.weight", 2, (size_t)st->d_llm, st->HE, path)) ||
        !(st->ob = need(&st->ad, "reprogram.out.bias", 1, (size_t)st->d_llm, 0, path)))
        goto done;
    if (st->pw->shape[2] != 3) {
        rt_fail("%s: patch_embed.conv.weight must be [d_model, patch_len, 3] (Conv1d kernel 3); re-export the "
                "bundle.", path);
        goto done;
    }
    if (fold_adapter(st, path)) goto done;
    free(path);
    if (!(path = rt_join(h->b.dir, head)) || npz_read(path, &st->head)) goto done;
    if (!(st->hw = npz_get(&st->head, "weight", 2, path)) || !(st->hb = npz_get(&st->head, "bias", 1, path))) goto done;
    if (st->hw->shape[0] < (size_t)st->H || st->hw->shape[1] != st->N * (size_t)st->d_ff ||
        st->hb->shape[0] != st->hw->shape[0]) {
        rt_fail("%s: weight [%zu, %zu], bias [%zu] do not fit horizon %ld and n_patches x d_ff = %zu; re-export the "
                "bundle.", path, st->hw->shape[0], st->hw->shape[1], st->hb->shape[0], st->H, st->N * (size_t)st->d_ff);
        goto done;
    }
    if (st->linear_skip && /* fit bridging --linear-skip */
        lib_read_skip(&st->head, path, st->hw->shape[0], (size_t)st->L, (size_t)st->stride, (size_t)st->P, &st->sw,
                      &st->sb))
        goto done;
    if (open_backbone(h, st)) goto done;
    rc = 0;
done:
    free(path);
    return rc;
}

static int bridging_plan(alignts *h, alignts_plan_params *p, alignts_plan_info *info) {
    bridging_state *st = (bridging_state *)h->st;
    if (p->context && p->context != st->L)
        return rt_fail_as(RT_STATUS_ARG, "--context %ld: this bundle's model takes exactly L=%ld points; pass "
                          "--context %ld or leave it out (longer inputs keep their last L points).", p->context, st->L,
                          st->L);
    if (p->horizon && (p->horizon < 1 || p->horizon > st->H))
        return rt_fail_as(RT_STATUS_ARG, "--horizon %ld: expected 1..%ld (the model's horizon); re-fit with a longer "
                          "--horizon for more.", p->horizon, st->H);
    if (!st->lm) { /* the backbone variant's llama.cpp settings (backbone_store.py LoadedBackbone) */
        llm_params lp;
        char *path = rt_join(st->bb_dir, st->bv->files[0]);
        if (!path) return -1;
        memset(&lp, 0, sizeof lp);
        lp.n_ctx = (int)st->n_ctx;
        lp.n_batch = (int)st->n_batch;
        lp.n_seq_max = (int)st->n_seq_max;
        lp.embeddings = 1;
        lp.n_threads = h->opt.n_threads;
        lp.kv_f16 = st->kv && !strcmp(st->kv, "f16");
        st->lm = llm_open(path, &lp);
        free(path);
        if (!st->lm) return -1;
        if (llm_n_embd(st->lm) != st->d_llm) {
            rt_fail("the backbone's GGUF has width %d; the adapter's d_llm is %ld. Re-export both.", llm_n_embd(st->lm),
                    st->d_llm);
            return -1;
        }
    }
    info->context = st->L;
    info->horizon = p->horizon ? p->horizon : st->H;
    info->n_channels = st->C;
    info->max_series = p->max_series ? p->max_series : st->C;
    info->model_bytes = llm_model_bytes(st->lm);
    info->kv_bytes = llm_kv_bytes(st->lm);
    info->table_bytes = st->table.rows * st->table.cols * sizeof(float);
    return 0;
}

static void bridging_reserve(alignts *h, ws *w) {
    bridging_state *st = (bridging_state *)h->st;
    size_t S = (size_t)h->info.max_series, L = (size_t)st->L, N = st->N, P = (size_t)st->P, TN = (size_t)st->T + N;
    st->x = WS_ARRAY(w, double, S * L);
    st->patches = WS_ARRAY(w, double, S * N * P);
    st->mean = WS_ARRAY(w, double, S);
    st->std = WS_ARRAY(w, double, S);
    st->work = WS_ARRAY(w, double, L);
    st->swork = WS_ARRAY(w, double, 3 * L);
    st->emb = WS_ARRAY(w, float, S * TN * (size_t)st->d_llm);
    st->hid = WS_ARRAY(w, float, S * N * (size_t)st->d_llm); /* the last N states of each series */
    st->enc = WS_ARRAY(w, float, N * (size_t)st->D);
    st->att = WS_ARRAY(w, float, N * (size_t)st->K);
    st->o = WS_ARRAY(w, float, N * st->HE);
    st->ids = WS_ARRAY(w, int32_t, (size_t)st->T + 1024);
    st->text = WS_ARRAY(w, char, 1024);
}

/* ------------------------------------------------------------------------------------------ forecast */
/* The prompt ids of series x [L] (float32 scaled values): [const ; stats][:T], left-padded to T. */
static int prompt_ids(bridging_state *st, const double *x, int32_t *out) {
    size_t n_stats = 0, T = (size_t)st->T, n, n_c, n_s, i;
    int32_t *sid = st->ids + T;
    if (prompt_stats_text(x, (size_t)st->L, st->eps, (int)st->top_k, (int)st->decimals, st->text, 1024, st->swork))
        return -1;
    if (tokenizer_encode(&st->tok, st->text, sid, 1024, &n_stats))
        return rt_fail("the prompt statistics need %zu tokens; expected <= 1024.", n_stats);
    n_c = st->n_const < T ? st->n_const : T;
    n_s = n_stats < T - n_c ? n_stats : T - n_c;
    n = n_c + n_s;
    for (i = 0; i < T - n; i++) out[i] = st->pad_id;
    memcpy(out + T - n, st->const_ids, n_c * sizeof(int32_t));
    memcpy(out + T - n + n_c, sid, n_s * sizeof(int32_t));
    return 0;
}

/* adapter: patches [N, P] (float32 values) -> out [N, d_llm] (AdapterExport in alignts/export/bridging.py: the
 * scores from g, softmax, the values, the out projection; float32 as onnxruntime runs it) */
VECTOR_CLONES static void adapter(bridging_state *st, const double *patches, float *out) {
    size_t N = st->N, P = (size_t)st->P, D = (size_t)st->D, HE = st->HE, E = (size_t)st->d_keys, K = (size_t)st->K;
    size_t n, o, p, k, j, hh, e, dl = (size_t)st->d_llm;
    for (n = 0; n < N; n++) /* circular Conv1d(P -> D, kernel 3, no bias) over the patch axis */
        for (o = 0; o < D; o++) {
            double acc = 0.0;
            for (k = 0; k < 3; k++) {
                const double *src = patches + ((n + N + k - 1) % N) * P;
                for (p = 0; p < P; p++) acc += (double)st->pw->data[(o * P + p) * 3 + k] * (double)(float)src[p];
            }
            st->enc[n * D + o] = (float)acc;
        }
    for (hh = 0; hh < (size_t)st->n_heads; hh++) { /* softmax([x, 1] g_h) v_h for all N patches at once */
        const float *g = st->g + hh * (D + 1) * K;
        for (n = 0; n < N; n++) memcpy(st->att + n * K, g + D * K, K * sizeof(float)); /* the bias row */
        gemm_acc(N, K, D, st->enc, D, g, K, st->att, K);
        for (n = 0; n < N; n++) {
            float *a = st->att + n * K, mx = -INFINITY;
            double sum = 0.0;
            for (j = 0; j < K; j++) mx = a[j] > mx ? a[j] : mx;
            for (j = 0; j < K; j++) {
                a[j] = expf(a[j] - mx);
                sum += a[j];
            }
            for (j = 0; j < K; j++) a[j] = (float)(a[j] / sum);
            for (e = 0; e < E; e++) st->o[n * HE + hh * E + e] = 0.0f;
        }
        gemm_acc(N, E, K, st->att, K, st->vt + hh * K * E, E, st->o + hh * E, HE);
    }
    for (n = 0; n < N; n++) /* out projection to the LM width */
        memcpy(out + n * dl, st->ob->data, dl * sizeof(float));
    gemm_acc(N, dl, HE, st->o, HE, st->owt, dl, out, dl);
}

static int bridging_forecast(alignts *h, const double *xin, size_t B, size_t C, size_t L, double *out,
                             const double *q, size_t n_q, double *q_out) {
    bridging_state *st = (bridging_state *)h->st;
    size_t S = B * C, N = st->N, P = (size_t)st->P, T = (size_t)st->T, TN = T + N, dl = (size_t)st->d_llm;
    size_t dff = (size_t)st->d_ff, Hp = (size_t)h->info.horizon, s, i, k, n;
    const double *smean = h->scaler_mean, *sstd = h->scaler_std;
    (void)q;
    (void)n_q;
    (void)q_out;
    if (lib_scale_patchify(h, xin, S, C, L, P, (size_t)st->stride, st->eps, st->x, st->patches, st->mean, st->std,
                           st->work))
        return -1;
    for (s = 0; s < S; s++) { /* [prefix ; adapter output] per series */
        float *e = st->emb + s * TN * dl;
        int32_t *ids = st->ids;
        if (prompt_ids(st, st->x + s * L, ids)) return -1;
        for (k = 0; k < T; k++) memcpy(e + k * dl, st->table.data + (size_t)ids[k] * dl, dl * sizeof(float));
        adapter(st, st->patches + s * N * P, e + T * dl);
    }
    /* the head reads the patches' states only: the last N of each series (a BERT's last FFN skips the prompt's) */
    if (llm_hidden_states(st->lm, st->emb, (int)S, (int)TN, (int)N, st->hid)) return -1;
    for (s = 0; s < S; s++) {
        const float *hr = st->hid + s * N * dl; /* the last N hidden states, first d_ff features */
        size_t c = s % C;
        for (k = 0; k < Hp; k++) {
            const float *w = st->hw->data + k * N * dff;
            double acc = 0.0, y;
            for (n = 0; n < N; n++)
                for (i = 0; i < dff; i++) acc += (double)hr[n * dl + i] * (double)w[n * dff + i];
            y = (double)(float)(acc + (double)st->hb->data[k]); /* head output, float32 */
            if (st->sw) /* + the linear skip on the normalized context */
                y = (double)(float)(y + lib_skip_row(st->sw, st->sb, k, st->patches + s * N * P, N, P,
                                                     (size_t)st->stride));
            y = (double)(float)(y * st->std[s] + st->mean[s]);  /* instance denorm, float32 forecast */
            out[s * Hp + k] = smean ? y * sstd[c] + smean[c] : y;
        }
    }
    h->prepared = st->x;
    return 0;
}

static int bridging_prompt(alignts *h, const double *x, size_t L, int32_t *ids, size_t cap, size_t *n) {
    bridging_state *st = (bridging_state *)h->st;
    size_t i, T = (size_t)st->T;
    const double *smean = h->scaler_mean, *sstd = h->scaler_std;
    if (L != (size_t)st->L) return rt_fail_as(RT_STATUS_INPUT, "alignts_prompt: L=%zu; the model's is %ld.", L, st->L);
    for (i = 0; i < L; i++) /* channel 0's scaler: the prompt of the first channel */
        st->x[i] = (double)(float)(smean ? (x[i] - smean[0]) / sstd[0] : x[i]);
    *n = T;
    if (T > cap) return rt_fail_as(RT_STATUS_ARG, "alignts_prompt: the prompt has %zu ids; ids holds %zu.", T, cap);
    return prompt_ids(st, st->x, ids);
}

static void bridging_close(alignts *h) {
    bridging_state *st = (bridging_state *)h->st;
    if (!st) return;
    llm_close(st->lm);
    npz_free(&st->ad);
    npz_free(&st->head);
    free(st->const_ids);
    free(st->g);
    free(st->vt);
    free(st->owt);
    npy_table_close(&st->table);
    tokenizer_free(&st->tok);
    bundle_close(&st->bb);
    free(st->bb_dir);
    free(st);
    h->st = NULL;
}

const paradigm_ops bridging_ops = {"bridging", bridging_open, bridging_plan, bridging_reserve, bridging_forecast,
                                   bridging_prompt, bridging_close};
