#define _GNU_SOURCE
#include "llm.h"

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "llama.h"
#include "rt_util.h"

struct llm {
    struct llama_model *model;
    struct llama_context *ctx;
    struct llama_adapter_lora *adapter;
    const struct llama_vocab *vocab;
    llama_memory_t mem;
    int n_embd, n_vocab, n_ctx, n_batch, n_seq_max, is_encoder, embeddings_on, kv_f16;
    int n_threads, adapt_threads, threads_used; /* the most threads a call uses; cap each call by the idle cores */
    struct ggml_threadpool *tp;                 /* the context's workers, polling level 0 (NULL: llama.cpp's own) */
    char arch[64];
    int32_t *seq_pos; /* [n_seq_max] next position per sequence */
    int n_live;
    /* one batch, owned here */
    int cap;
    llama_token *tok;
    float *embd;
    llama_pos *pos;
    int32_t *nseq;
    llama_seq_id *seq;
    llama_seq_id **seq_ptrs;
    int8_t *out;
};

/* ------------------------------------------------------------------------------------------------ logging */
/* llama.cpp's log callback is process-wide; what it says is kept per thread (the thread that called into
   llama.cpp reads it back for its error message), and so is the verbosity (set per libalignts call). */
static RT_TLS int g_verbose = 0;
static RT_TLS char g_log[8][256];
static RT_TLS int g_log_n = 0;

static void log_cb(enum ggml_log_level level, const char *text, void *user) {
    size_t n;
    (void)level;
    (void)user;
    if (g_verbose) fputs(text, stderr);
    n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' ')) n--;
    if (n == 0) return;
    if (n >= sizeof g_log[0]) n = sizeof g_log[0] - 1;
    memcpy(g_log[g_log_n % 8], text, n);
    g_log[g_log_n % 8][n] = '\0';
    g_log_n++;
}

static const char *last_log(void) {
    static RT_TLS char buf[900];
    int i, first = g_log_n > 3 ? g_log_n - 3 : 0;
    buf[0] = '\0';
    if (g_log_n == 0) return "";
    strcat(buf, " llama.cpp said:");
    for (i = first; i < g_log_n; i++) {
        strncat(buf, " | ", sizeof buf - strlen(buf) - 1);
        strncat(buf, g_log[i % 8], sizeof buf - strlen(buf) - 1);
    }
    return buf;
}

void llm_set_verbose(int on) { g_verbose = on; }

/* llama.cpp's backend: initialised once per process, freed when the last model is closed (llm_shutdown). */
static pthread_mutex_t g_backend_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_backend_up = 0;
static int g_live = 0; /* llm handles open */

/* A llama.cpp built with GGML_BACKEND_DL (scripts/setup's portable build: one CPU backend per x86-64 level, the
   best for this CPU picked from cpuid at run time) keeps its backends beside libllama, and ggml_backend_load_all
   searches only the executable's folder and the working directory: load them from libllama's own folder (where
   the dynamic loader found it; the folder CMake linked against if that cannot be told). A build with its CPU
   backend linked in has it registered already. */
static void load_backends(void) {
    Dl_info info;
    char dir[4096];
    const char *slash;
    if (ggml_backend_reg_count() > 0) return;
    if (dladdr((void *)&llama_backend_init, &info) && info.dli_fname && (slash = strrchr(info.dli_fname, '/')) &&
        (size_t)(slash - info.dli_fname) < sizeof dir) {
        memcpy(dir, info.dli_fname, (size_t)(slash - info.dli_fname));
        dir[slash - info.dli_fname] = '\0';
        ggml_backend_load_all_from_path(dir);
    }
#ifdef ALIGNTS_LLAMA_LIB_DIR
    if (ggml_backend_reg_count() == 0) ggml_backend_load_all_from_path(ALIGNTS_LLAMA_LIB_DIR);
#endif
}

static void init_backend_once(void) {
    pthread_mutex_lock(&g_backend_lock);
    if (!g_backend_up) {
        llama_log_set(log_cb, NULL);
        load_backends();
        llama_backend_init();
        g_backend_up = 1;
    }
    g_live++;
    pthread_mutex_unlock(&g_backend_lock);
}

void llm_shutdown(void) {
    pthread_mutex_lock(&g_backend_lock);
    if (g_backend_up && g_live == 0) {
        llama_backend_free();
        g_backend_up = 0;
    }
    pthread_mutex_unlock(&g_backend_lock);
}

/* Physical cores among the CPUs this process may use (SMT siblings once), as alignts/runtime/threads.py. */
static int default_threads(void) {
    cpu_set_t set;
    int cpu, n = 0, seen = 0;
    int pkg[CPU_SETSIZE], core[CPU_SETSIZE]; /* on the stack: two handles may open at once */
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        long k = sysconf(_SC_NPROCESSORS_ONLN);
        return k > 0 ? (int)k : 1;
    }
    for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        char path[96];
        FILE *f;
        int a = -1, b = -1, i, dup = 0;
        if (!CPU_ISSET(cpu, &set)) continue;
        n++;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%d", &a) != 1) a = -1;
            fclose(f);
        }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%d", &b) != 1) b = -1;
            fclose(f);
        }
        if (a < 0 || b < 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1; /* no topology: logical CPUs */
        for (i = 0; i < seen; i++) dup |= pkg[i] == a && core[i] == b;
        if (!dup) {
            pkg[seen] = a;
            core[seen] = b;
            seen++;
        }
    }
    return seen > 0 ? seen : (n > 0 ? n : 1);
}

/* At most limit threads, no more than the cores no other runnable thread holds now (/proc/loadavg's running
   count minus the caller), at least 1: ggml's workers meet at a spinning barrier after every graph node, so a
   thread more than the idle cores spins for one the kernel descheduled (alignts/runtime/threads.py). */
static int idle_cores(int limit) {
    FILE *f = fopen("/proc/loadavg", "r");
    double l1, l5, l15;
    int running = 0, total = 0, n;
    if (!f) return limit;
    n = fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total);
    fclose(f);
    if (n != 5) return limit;
    n = default_threads() - (running - 1);
    return n < 1 ? 1 : (n < limit ? n : limit);
}

/* One ggml threadpool of n workers at polling level 0 (asleep between calls; llama.cpp's own pools poll at 50)
   attached to the context. ggml_threadpool_new lives in the CPU backend, which a GGML_BACKEND_DL build loads at
   run time: found through the backend registry, as llama.cpp's tools do. NULL where this build lacks it. */
static struct ggml_threadpool *attach_threadpool(struct llama_context *ctx, int n) {
    typedef struct ggml_threadpool *(*tp_new_fn)(struct ggml_threadpool_params *);
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_reg_t reg = dev ? ggml_backend_dev_backend_reg(dev) : NULL;
    tp_new_fn tp_new = reg ? (tp_new_fn)ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new") : NULL;
    struct ggml_threadpool_params tpp;
    struct ggml_threadpool *tp;
    if (!tp_new) return NULL;
    tpp = ggml_threadpool_params_default(n);
    tpp.poll = 0;
    if (!(tp = tp_new(&tpp))) return NULL;
    llama_attach_threadpool(ctx, tp, tp);
    return tp;
}

static void free_threadpool(struct ggml_threadpool *tp) {
    typedef void (*tp_free_fn)(struct ggml_threadpool *);
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_reg_t reg = dev ? ggml_backend_dev_backend_reg(dev) : NULL;
    tp_free_fn tp_free = reg ? (tp_free_fn)ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free") : NULL;
    if (tp && tp_free) tp_free(tp);
}

/* This call's thread count: n_threads, or the idle cores when fewer and the count was not given. */
static void use_threads(llm *m) {
    int n = m->n_threads;
    if (m->adapt_threads && n > 1) n = idle_cores(n);
    if (n != m->threads_used) {
        llama_set_n_threads(m->ctx, n, n);
        m->threads_used = n;
    }
}

/* GGUF magic and version before llama.cpp reads it (llama.cpp aborts on some malformed files). */
static int check_gguf_header(const char *path) {
    unsigned char h[8];
    FILE *f = fopen(path, "rb");
    size_t got;
    unsigned v;
    if (!f) return rt_fail("cannot open %s", path);
    got = fread(h, 1, 8, f);
    fclose(f);
    if (got < 8 || memcmp(h, "GGUF", 4) != 0)
        return rt_fail("%s is not a GGUF file (no 'GGUF' magic); expected a llama.cpp model. Re-export the "
                       "bundle.", path);
    v = (unsigned)h[4] | ((unsigned)h[5] << 8) | ((unsigned)h[6] << 16) | ((unsigned)h[7] << 24);
    if (v < 2 || v > 3)
        return rt_fail("%s has GGUF version %u; expected 2 or 3. Re-export the bundle.", path, v);
    return 0;
}

/* ------------------------------------------------------------------------------------ GGUF hyperparameters */
/* llama.cpp aborts the process (GGML_ASSERT) on some hyperparameters it loads (src/llama-model.cpp
   load_hparams, llama-vocab.cpp, the gpt2/llama/bert graphs); alignts/runtime/gguf_check.py bounds the same
   ones. Read the metadata with gguf (no tensor data) and refuse such a file, or an n_ctx the model or the
   machine cannot hold, before llama.cpp sees it. */
#define GG_MAX_LAYERS 512   /* LLAMA_MAX_LAYERS */
#define GG_MAX_EXPERTS 1024 /* LLAMA_MAX_EXPERTS */

typedef struct {
    const char *path;
    const struct gguf_context *g;
} gg_file;

static int gg_is_int(enum gguf_type t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_INT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_INT16 ||
           t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}

static int64_t gg_int_at(enum gguf_type t, const void *data, size_t i) {
    switch (t) {
        case GGUF_TYPE_UINT8: return ((const uint8_t *)data)[i];
        case GGUF_TYPE_INT8: return ((const int8_t *)data)[i];
        case GGUF_TYPE_UINT16: return ((const uint16_t *)data)[i];
        case GGUF_TYPE_INT16: return ((const int16_t *)data)[i];
        case GGUF_TYPE_UINT32: return ((const uint32_t *)data)[i];
        case GGUF_TYPE_INT32: return ((const int32_t *)data)[i];
        case GGUF_TYPE_INT64: return ((const int64_t *)data)[i];
        default: { /* UINT64: clamp so that a huge value stays out of range */
            uint64_t u = ((const uint64_t *)data)[i];
            return u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
        }
    }
}

static int gg_bad(const gg_file *f, const char *key, const char *got, const char *expected) {
    return rt_fail("%s: %s is %s; expected %s. The file is corrupt or not one llama.cpp can load: re-export the "
                   "bundle.", f->path, key, got, expected);
}

/* "a string", "an array", or the integer value, for messages */
static const char *gg_got(const gg_file *f, int64_t id, int64_t value, char *buf, size_t size) {
    enum gguf_type t = gguf_get_kv_type(f->g, id);
    if (t == GGUF_TYPE_ARRAY) return "an array";
    if (!gg_is_int(t)) {
        snprintf(buf, size, "a %s", gguf_type_name(t));
        return buf;
    }
    snprintf(buf, size, "%lld", (long long)value);
    return buf;
}

/* One integer (any GGUF integer type) in lo..hi; dflt when absent. 0 or -1. */
static int gg_int(const gg_file *f, const char *key, int64_t dflt, int64_t lo, int64_t hi, int64_t *out) {
    char want[96], got[48];
    int64_t id = gguf_find_key(f->g, key);
    snprintf(want, sizeof want, "an integer in %lld..%lld", (long long)lo, (long long)hi);
    if (id < 0) {
        *out = dflt;
        return 0;
    }
    *out = gg_is_int(gguf_get_kv_type(f->g, id)) ? gg_int_at(gguf_get_kv_type(f->g, id), gguf_get_val_data(f->g, id), 0)
                                                  : lo - 1;
    return *out < lo || *out > hi ? gg_bad(f, key, gg_got(f, id, *out, got, sizeof got), want) : 0;
}

/* A value llama.cpp reads as one integer for every layer or as an array of n_layer integers. 0 or -1. */
static int gg_layers(const gg_file *f, const char *key, int64_t n_layer, int64_t dflt, int64_t lo, int64_t hi,
                     int64_t *vals) {
    int64_t id = gguf_find_key(f->g, key), v, i;
    char want[96];
    if (id < 0 || gguf_get_kv_type(f->g, id) != GGUF_TYPE_ARRAY) {
        if (gg_int(f, key, dflt, lo, hi, &v)) return -1;
        if (v < lo) return gg_bad(f, key, "missing", "a value for every layer (llama.cpp aborts without it)");
        for (i = 0; i < n_layer; i++) vals[i] = v;
        return 0;
    }
    snprintf(want, sizeof want, "an integer or an array of %lld integers in %lld..%lld", (long long)n_layer,
             (long long)lo, (long long)hi);
    if (!gg_is_int(gguf_get_arr_type(f->g, id)) || (int64_t)gguf_get_arr_n(f->g, id) != n_layer)
        return gg_bad(f, key, "an array of another length or type", want);
    for (i = 0; i < n_layer; i++) {
        vals[i] = gg_int_at(gguf_get_arr_type(f->g, id), gguf_get_arr_data(f->g, id), (size_t)i);
        if (vals[i] < lo || vals[i] > hi) return gg_bad(f, key, "an array with a value out of range", want);
    }
    return 0;
}

static int gg_string(const gg_file *f, const char *key, const char **out) {
    int64_t id = gguf_find_key(f->g, key);
    *out = NULL;
    if (id < 0) return 0;
    if (gguf_get_kv_type(f->g, id) != GGUF_TYPE_STRING)
        return gg_bad(f, key, gguf_type_name(gguf_get_kv_type(f->g, id)), "a string");
    *out = gguf_get_val_str(f->g, id);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The vocabulary: an array of distinct strings (llama.cpp aborts on a repeated token). */
static int gg_vocab(const gg_file *f, int64_t *n_vocab) {
    int64_t id = gguf_find_key(f->g, "tokenizer.ggml.tokens");
    size_t n, i;
    const char **s;
    *n_vocab = 0;
    if (id < 0) return 0;
    if (gguf_get_kv_type(f->g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(f->g, id) != GGUF_TYPE_STRING)
        return gg_bad(f, "tokenizer.ggml.tokens", "not an array of strings", "an array of strings");
    n = gguf_get_arr_n(f->g, id);
    if (!(s = (const char **)rt_calloc(n ? n : 1, sizeof *s))) return -1;
    for (i = 0; i < n; i++) s[i] = gguf_get_arr_str(f->g, id, i);
    qsort(s, n, sizeof *s, cmp_str);
    for (i = 1; i < n && strcmp(s[i - 1], s[i]) != 0; i++) {
    }
    free(s);
    if (n > 1 && i < n)
        return gg_bad(f, "tokenizer.ggml.tokens", "a vocabulary with a repeated token",
                      "distinct tokens (llama.cpp aborts on a repeated one)");
    *n_vocab = (int64_t)n;
    return 0;
}

static int gg_check_model(const gg_file *f, const char *arch, const llm_params *p, uint64_t file_size) {
    char k[160];
    int64_t n_layer, n_ctx_train, n_embd, v, n_expert, groups, group_used, used_max = 0, head_k, head_v, n_vocab, i;
    int64_t *head = NULL, *head_kv = NULL, *vals = NULL;
    uint64_t kv_per_token = 0;
    double kv_bytes, ram;
    int ours = !strcmp(arch, "gpt2") || !strcmp(arch, "llama") || !strcmp(arch, "bert"), rc = -1;
    const char *scaling;
#define KEY(name) (snprintf(k, sizeof k, "%s." name, arch), k)
    if (gg_int(f, KEY("block_count"), 0, 1, GG_MAX_LAYERS, &n_layer) ||
        gg_int(f, KEY("context_length"), 0, 1, UINT32_MAX, &n_ctx_train) ||
        gg_int(f, KEY("embedding_length"), 0, 1, 1 << 20, &n_embd) ||
        gg_int(f, KEY("nextn_predict_layers"), 0, 0, n_layer, &v) ||
        gg_int(f, KEY("expert_count"), 0, 0, GG_MAX_EXPERTS, &n_expert))
        return -1;
    head = (int64_t *)rt_calloc((size_t)n_layer, sizeof *head);
    head_kv = (int64_t *)rt_calloc((size_t)n_layer, sizeof *head_kv);
    vals = (int64_t *)rt_calloc((size_t)n_layer, sizeof *vals);
    if (!head || !head_kv || !vals) goto done;
    if (gg_layers(f, KEY("expert_used_count"), n_layer, 0, 0, n_expert, vals)) goto done;
    for (i = 0; i < n_layer; i++) used_max = vals[i] > used_max ? vals[i] : used_max;
    if (gg_int(f, KEY("expert_group_count"), 0, 0, n_expert > 0 ? n_expert - 1 : 0, &groups) ||
        gg_int(f, KEY("expert_group_used_count"), 0, 0, UINT32_MAX, &group_used))
        goto done;
    if ((n_expert && (!used_max || (groups > 1 && (n_expert % groups || !(group_used > 0 && group_used < groups))))) ||
        (!n_expert && (used_max || groups))) {
        gg_bad(f, KEY("expert_used_count"), "inconsistent with expert_count / expert_group_count",
               "1..expert_count experts used (0 without experts), groups dividing expert_count");
        goto done;
    }
    if (gg_layers(f, KEY("attention.head_count"), n_layer, 0, ours, 1 << 16, head) ||
        gg_layers(f, KEY("feed_forward_length"), n_layer, 0, ours, 1 << 24, vals))
        goto done;
    if (gguf_find_key(f->g, KEY("attention.head_count_kv")) >= 0) {
        if (gg_layers(f, k, n_layer, 0, ours, 1 << 16, head_kv)) goto done;
    } else {
        memcpy(head_kv, head, (size_t)n_layer * sizeof *head);
    }
    if (head[0] > 0) {
        if (gg_int(f, KEY("attention.key_length"), n_embd / head[0], 1, 1 << 16, &head_k) ||
            gg_int(f, KEY("attention.value_length"), n_embd / head[0], 1, 1 << 16, &head_v))
            goto done;
        if (ours && gguf_find_key(f->g, KEY("attention.key_length")) < 0 && n_embd % head[0]) {
            gg_bad(f, KEY("attention.head_count"), "not a divisor of embedding_length", "a divisor of it");
            goto done;
        }
        if (ours && head_k != head_v) {
            gg_bad(f, KEY("attention.value_length"), "not the key length", "the key length");
            goto done;
        }
        for (i = 0; i < n_layer; i++) {
            if (head_kv[i] > head[i] || (head_kv[i] && head[i] % head_kv[i])) {
                gg_bad(f, KEY("attention.head_count_kv"), "not a divisor of head_count", "a divisor of it");
                goto done;
            }
            kv_per_token += (uint64_t)(head_k + head_v) * (uint64_t)head_kv[i];
        }
        if (!strcmp(arch, "llama") && gg_int(f, KEY("rope.dimension_count"), head_k, head_k, head_k, &v)) goto done;
    }
    if (gg_string(f, KEY("rope.scaling.type"), &scaling)) goto done;
    if (scaling && strcmp(scaling, "none") && strcmp(scaling, "linear") && strcmp(scaling, "yarn") &&
        strcmp(scaling, "longrope")) {
        gg_bad(f, k, scaling, "one of none, linear, yarn, longrope");
        goto done;
    }
    if (gg_vocab(f, &n_vocab)) goto done;
    if (ours && n_vocab < 1 && (gg_int(f, KEY("vocab_size"), 0, 0, 1 << 24, &n_vocab) || n_vocab < 1)) {
        gg_bad(f, "tokenizer.ggml.tokens", "empty", "a vocabulary of at least one token");
        goto done;
    }
    if (p->n_ctx > n_ctx_train) {
        rt_fail("%s: n_ctx=%d tokens asked; expected 1..%lld, the model's context_length. Fix: lower n_ctx "
                "(re-export with --n-ctx %lld or less).", f->path, p->n_ctx, (long long)n_ctx_train,
                (long long)n_ctx_train);
        goto done;
    }
    kv_bytes = (double)p->n_ctx * p->n_seq_max * (double)kv_per_token * (p->kv_f16 ? 2 : 4);
    ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
    if (ram > 0 && kv_bytes + (double)file_size > ram) {
        rt_fail("%s: n_ctx=%d x %d sequences needs a %.1f GiB KV cache beside %.2f GiB of weights; expected it to "
                "fit this machine's %.1f GiB. Fix: lower n_ctx or the samples (parallel sequences).", f->path,
                p->n_ctx, p->n_seq_max, kv_bytes / 1073741824.0, (double)file_size / 1073741824.0, ram / 1073741824.0);
        goto done;
    }
    rc = 0;
done:
#undef KEY
    free(head);
    free(head_kv);
    free(vals);
    return rc;
}

/* The metadata checks of alignts' check_gguf that keep llama.cpp from aborting, for a model (p != NULL) or a
   LoRA adapter (p == NULL). 0 or -1 (rt_fail). */
static int check_gguf_meta(const char *path, const llm_params *p) {
    struct ggml_context *meta = NULL;
    struct gguf_init_params gp = {true, &meta}; /* no_alloc: metadata and tensor shapes, no data */
    struct gguf_context *g;
    struct ggml_tensor *t;
    gg_file f;
    const char *arch, *type, *atype;
    int64_t v, id;
    struct stat st;
    int rc = -1;
    if (stat(path, &st) != 0) return rt_fail("cannot open %s: %s", path, strerror(errno));
    if (!(g = gguf_init_from_file(path, gp)))
        return rt_fail("%s: not a readable GGUF (a malformed header); expected a GGUF model written by alignts. "
                       "Re-export the bundle.%s", path, last_log());
    f.path = path;
    f.g = g;
    for (t = ggml_get_first_tensor(meta); t; t = ggml_get_next_tensor(meta, t)) {
        enum ggml_type tt = t->type;
        /* integer tensors have no compute kernels (SIGSEGV); vectors (norms, biases) enter add/mul, which abort on
           a quantized operand */
        if (tt == GGML_TYPE_I8 || tt == GGML_TYPE_I16 || tt == GGML_TYPE_I32 || tt == GGML_TYPE_I64 ||
            tt == GGML_TYPE_F64 || (ggml_n_dims(t) == 1 && tt != GGML_TYPE_F32 && tt != GGML_TYPE_F16 &&
                                    tt != GGML_TYPE_BF16)) {
            rt_fail("%s: tensor '%s' has type %s; expected a float or quantized weight type (F32/F16/BF16 for "
                    "vectors). The file is corrupt: re-export the bundle.", path, t->name, ggml_type_name(tt));
            goto done;
        }
    }
    if (gg_string(&f, "general.architecture", &arch) || gg_string(&f, "general.type", &type) ||
        gg_int(&f, "split.count", 1, 0, 1, &v) || gg_int(&f, "general.alignment", 32, 32, 1 << 30, &v))
        goto done; /* split files: sibling files no manifest lists; alignment < 32: ggml's buffers abort */
    if (!arch) {
        rt_fail("%s: no general.architecture key; expected a GGUF model or adapter. Re-export the bundle.", path);
        goto done;
    }
    if (p) {
        rc = gg_check_model(&f, arch, p, (uint64_t)st.st_size);
        goto done;
    }
    /* llama.cpp reads these with gguf_get_val_str / _f32, which abort on another type */
    if (gg_string(&f, "adapter.type", &atype)) goto done;
    id = gguf_find_key(g, "adapter.lora.alpha");
    if (id >= 0 && (gguf_get_kv_type(g, id) != GGUF_TYPE_FLOAT32 || !isfinite(gguf_get_val_f32(g, id)))) {
        gg_bad(&f, "adapter.lora.alpha", gguf_get_kv_type(g, id) == GGUF_TYPE_FLOAT32 ? "not finite"
                                         : gguf_type_name(gguf_get_kv_type(g, id)), "a finite float32");
        goto done;
    }
    rc = 0;
done:
    gguf_free(g);
    ggml_free(meta);
    return rc;
}

/* an empty, NULL-terminated device list: llama.cpp offloads to none of a GPU build's devices */
static ggml_backend_dev_t no_devices[1] = {NULL};

llm *llm_open(const char *path, const llm_params *p) {
    struct llama_model_params mp;
    struct llama_context_params cp;
    llm *m;
    int i, nt;
    if (p->n_ctx < 1 || p->n_batch < 1 || p->n_seq_max < 1) {
        rt_fail("n_ctx, n_batch, n_seq_max must be >= 1, got %d, %d, %d", p->n_ctx, p->n_batch, p->n_seq_max);
        return NULL;
    }
    if (check_gguf_header(path)) return NULL;
    init_backend_once(); /* counts this open as live, so a concurrent llm_shutdown keeps the backend */
    if (check_gguf_meta(path, p) || (p->lora_path && check_gguf_meta(p->lora_path, NULL)) ||
        !(m = (llm *)rt_calloc(1, sizeof *m))) {
        pthread_mutex_lock(&g_backend_lock);
        g_live--;
        pthread_mutex_unlock(&g_backend_lock);
        return NULL;
    }
    mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.devices = no_devices; /* a GPU build of libllama stays on the CPU (no pinned host buffers, no op offload) */
    mp.load_mode = llm_huge_pages() ? LLAMA_LOAD_MODE_NONE : LLAMA_LOAD_MODE_MMAP;
    m->model = llama_model_load_from_file(path, mp);
    if (!m->model) {
        rt_fail("llama.cpp could not load %s; expected a GGUF model of a supported architecture.%s", path,
                last_log());
        llm_close(m);
        return NULL;
    }
    if (llama_model_meta_val_str(m->model, "general.architecture", m->arch, sizeof m->arch) < 0) m->arch[0] = '\0';
    m->is_encoder = strcmp(m->arch, "bert") == 0; /* no KV cache: llama_decode runs the encoder */
    m->n_ctx = p->n_ctx;
    m->n_batch = p->n_batch;
    m->n_seq_max = p->n_seq_max;
    m->kv_f16 = p->kv_f16 != 0;
    cp = llama_context_default_params();
    cp.kv_unified = p->kv_unified && !m->is_encoder && p->n_seq_max > 1;
    cp.n_ctx = (uint32_t)p->n_ctx * (uint32_t)p->n_seq_max;
    if (cp.kv_unified && p->kv_cells > 0) {
        if (p->kv_cells < p->n_ctx || (uint32_t)p->kv_cells > cp.n_ctx) {
            rt_fail("kv_cells=%d: expected %d..%u (n_ctx .. n_ctx x n_seq_max)", p->kv_cells, p->n_ctx, cp.n_ctx);
            llm_close(m);
            return NULL;
        }
        cp.n_ctx = (uint32_t)p->kv_cells;
    }
    cp.n_batch = (uint32_t)p->n_batch;
    cp.n_ubatch = (uint32_t)p->n_batch; /* encoders need the whole batch in one ubatch */
    cp.n_seq_max = (uint32_t)p->n_seq_max;
    cp.n_outputs_max_per_seq = 0;
    nt = p->n_threads > 0 ? p->n_threads : default_threads();
    m->n_threads = m->threads_used = nt;
    m->adapt_threads = p->n_threads <= 0;
    cp.n_threads = nt;
    cp.n_threads_batch = nt;
    cp.pooling_type = LLAMA_POOLING_TYPE_NONE;
    cp.flash_attn_type = p->flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = p->kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32; /* f16 costs accuracy (DESIGN.md) */
    cp.type_v = cp.type_k;
    cp.embeddings = p->embeddings || m->is_encoder;
    cp.no_perf = 1;
    m->ctx = llama_init_from_model(m->model, cp);
    if (!m->ctx) {
        rt_fail("llama.cpp could not create a context for %s (n_ctx=%u, n_batch=%d, n_seq_max=%d); expected enough "
                "memory.%s", path, cp.n_ctx, p->n_batch, p->n_seq_max, last_log());
        llm_close(m);
        return NULL;
    }
    m->embeddings_on = cp.embeddings;
    m->mem = llama_get_memory(m->ctx);
    if (nt > 1) m->tp = attach_threadpool(m->ctx, nt);
    m->vocab = llama_model_get_vocab(m->model);
    m->n_vocab = llama_vocab_n_tokens(m->vocab);
    m->n_embd = llama_model_n_embd(m->model);
    if (p->lora_path) {
        float scale = p->lora_scale;
        m->adapter = llama_adapter_lora_init(m->model, p->lora_path);
        if (!m->adapter || llama_set_adapters_lora(m->ctx, &m->adapter, 1, &scale) != 0) {
            rt_fail("llama.cpp refused LoRA adapter %s for %s.%s", p->lora_path, path, last_log());
            llm_close(m);
            return NULL;
        }
    }
    m->cap = p->n_batch > p->n_seq_max ? p->n_batch : p->n_seq_max;
    m->tok = (llama_token *)rt_calloc((size_t)m->cap, sizeof(llama_token));
    m->embd = (float *)rt_calloc((size_t)m->cap * (size_t)m->n_embd, sizeof(float));
    m->pos = (llama_pos *)rt_calloc((size_t)m->cap, sizeof(llama_pos));
    m->nseq = (int32_t *)rt_calloc((size_t)m->cap, sizeof(int32_t));
    m->seq = (llama_seq_id *)rt_calloc((size_t)m->cap, sizeof(llama_seq_id));
    m->seq_ptrs = (llama_seq_id **)rt_calloc((size_t)m->cap, sizeof(llama_seq_id *));
    m->out = (int8_t *)rt_calloc((size_t)m->cap, sizeof(int8_t));
    m->seq_pos = (int32_t *)rt_calloc((size_t)m->n_seq_max, sizeof(int32_t));
    if (!m->tok || !m->embd || !m->pos || !m->nseq || !m->seq || !m->seq_ptrs || !m->out || !m->seq_pos) {
        llm_close(m);
        return NULL;
    }
    for (i = 0; i < m->cap; i++) {
        m->seq_ptrs[i] = &m->seq[i];
        m->nseq[i] = 1;
    }
    return m;
}

void llm_close(llm *m) {
    if (!m) return;
    if (m->ctx) llama_free(m->ctx);
    if (m->tp) free_threadpool(m->tp); /* after the context that used it */
    if (m->adapter) llama_adapter_lora_free(m->adapter);
    if (m->model) llama_model_free(m->model);
    free(m->tok);
    free(m->embd);
    free(m->pos);
    free(m->nseq);
    free(m->seq);
    free(m->seq_ptrs);
    free(m->out);
    free(m->seq_pos);
    free(m);
    pthread_mutex_lock(&g_backend_lock);
    g_live--;
    pthread_mutex_unlock(&g_backend_lock);
}

size_t llm_model_bytes(const llm *m) { return (size_t)llama_model_size(m->model); }

size_t llm_kv_bytes(const llm *m) {
    const struct llama_context *c = m->ctx;
    int n_head = llama_model_n_head(m->model), n_head_kv = llama_model_n_head_kv(m->model);
    size_t per;
    if (m->is_encoder || n_head < 1) return 0;
    per = (size_t)(m->n_embd / n_head) * (size_t)(n_head_kv > 0 ? n_head_kv : n_head); /* k (= v) width per layer */
    return (size_t)llama_n_ctx(c) * (size_t)llama_model_n_layer(m->model) * 2 * per * (m->kv_f16 ? 2 : 4);
}

int llm_n_embd(const llm *m) { return m->n_embd; }
int llm_n_vocab(const llm *m) { return m->n_vocab; }
int llm_patch_level(void) {
    int (*level)(void);
    *(void **)&level = dlsym(RTLD_DEFAULT, "alignts_llama_patch_level"); /* only alignts' build exports it */
    return level ? level() : 0;
}

int llm_huge_pages(void) {
    char mode[128] = "";
    const char *off = getenv("ALIGNTS_HUGE_PAGES");
    FILE *f;
    if ((off && strcmp(off, "0") == 0) || llm_patch_level() < 21) return 0;
    if (!(f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r"))) return 0; /* not Linux, or no THP */
    if (!fgets(mode, sizeof mode, f)) mode[0] = '\0';
    fclose(f);
    return strchr(mode, '[') && !strstr(mode, "[never]");
}

int llm_n_ctx_train(const llm *m) { return llama_model_n_ctx_train(m->model); }
const char *llm_arch(const llm *m) { return m->arch; }

int32_t llm_bos(const llm *m) {
    llama_token t = llama_vocab_bos(m->vocab);
    return (t >= 0 && t < m->n_vocab) ? t : -1;
}

int32_t llm_eos(const llm *m) {
    llama_token t = llama_vocab_eos(m->vocab);
    return (t >= 0 && t < m->n_vocab) ? t : -1;
}

/* One llama_decode of n entries: tokens, or input embeddings (pos/seq/out already set). */
static int decode_batch(llm *m, llama_token *tok, float *embd, int n) {
    struct llama_batch b;
    int rc;
    b.n_tokens = n;
    b.token = tok;
    b.embd = embd;
    b.pos = m->pos;
    b.n_seq_id = m->nseq;
    b.seq_id = m->seq_ptrs;
    b.logits = m->out;
    rc = llama_decode(m->ctx, b);
    if (rc != 0)
        return rt_fail("llama_decode failed with code %d on %d tokens; %s.%s", rc, n,
                       rc == 1 ? "the KV cache is full: raise n_ctx" : "run with --verbose for llama.cpp's log",
                       last_log());
    return 0;
}

static int decode(llm *m, int n, int use_embd) {
    return decode_batch(m, use_embd ? NULL : m->tok, use_embd ? m->embd : NULL, n);
}

/* Decode n input embeddings read in place from rows (pos/seq/out already set). */
static int decode_rows(llm *m, const float *rows, int n) {
    return decode_batch(m, NULL, (float *)rows, n); /* llama.cpp copies the batch before computing; never writes it */
}

static void clear_memory(llm *m) {
    if (m->mem) llama_memory_clear(m->mem, 0);
    memset(m->seq_pos, 0, (size_t)m->n_seq_max * sizeof(int32_t));
    m->n_live = 0;
}

static void set_embeddings(llm *m, int on) {
    if (m->embeddings_on != on && !m->is_encoder) {
        llama_set_embeddings(m->ctx, on != 0);
        m->embeddings_on = on;
    }
}

/* Up to min(n_seq_max, n_batch / N) series per llama_decode (the group the caller's plan chose: a BERT
   encoder's attention is quadratic in it, see alignts/runtime/budget.py embedding_geometry); the decode reads
   the embeddings in place; only a causal LM has a KV cache to clear before each group. Each series' last `last`
   states go to out [S, last, d]: a BERT on patch level 19 returns only the rows flagged as outputs, any other
   model every row, of which the last are taken. */
int llm_hidden_states(llm *m, const float *x, int S, int N, int last, float *out) {
    int d = m->n_embd, per, s0, t;
    int marked = last < N && m->is_encoder && llm_patch_level() >= 19;
    if (N > m->n_ctx) return rt_fail("sequence length %d exceeds n_ctx=%d", N, m->n_ctx);
    if (last < 1 || last > N) return rt_fail("last=%d: expected 1 <= last <= N=%d", last, N);
    if (m->is_encoder && N > m->n_batch)
        return rt_fail("BERT needs a whole sequence in one batch: N=%d > n_batch=%d", N, m->n_batch);
    if (m->is_encoder && N > llama_model_n_ctx_train(m->model))
        return rt_fail("N=%d exceeds the model's %d position embeddings", N, llama_model_n_ctx_train(m->model));
    set_embeddings(m, 1);
    use_threads(m);
    per = m->n_batch / N;
    if (per > m->n_seq_max) per = m->n_seq_max;
    if (per < 1) per = 1;
    for (t = 0; t < m->cap; t++) {
        m->out[t] = 1;
        m->nseq[t] = 1;
    }
    if (N <= m->n_batch) {
        for (t = 0; t < per * N; t++) { /* one layout for every group */
            m->pos[t] = t % N;
            m->seq[t] = t / N;
            if (marked) m->out[t] = t % N >= N - last;
        }
    }
    for (s0 = 0; s0 < S; s0 += per) {
        int k = S - s0 < per ? S - s0 : per;
        if (N <= m->n_batch) {
            int n = k * N, j;
            const float *e;
            if (!m->is_encoder) clear_memory(m);
            if (decode_rows(m, x + (size_t)s0 * N * d, n)) return -1;
            e = llama_get_embeddings(m->ctx);
            if (!e) return rt_fail("llama.cpp returned no embeddings for %s.%s", m->arch, last_log());
            if (marked || last == N)
                memcpy(out + (size_t)s0 * last * d, e, (size_t)k * last * d * sizeof(float));
            else
                for (j = 0; j < k; j++)
                    memcpy(out + (size_t)(s0 + j) * last * d, e + ((size_t)j * N + N - last) * d,
                           (size_t)last * d * sizeof(float));
        } else { /* one long causal sequence in chunks (the KV cache carries the prefix) */
            int t0;
            clear_memory(m);
            for (t0 = 0; t0 < N; t0 += m->n_batch) {
                int n = N - t0 < m->n_batch ? N - t0 : m->n_batch, first;
                const float *e;
                for (t = 0; t < n; t++) {
                    m->pos[t] = t0 + t;
                    m->seq[t] = 0;
                }
                if (decode_rows(m, x + ((size_t)s0 * N + t0) * d, n)) return -1;
                e = llama_get_embeddings(m->ctx);
                if (!e) return rt_fail("llama.cpp returned no embeddings.%s", last_log());
                first = t0 > N - last ? t0 : N - last; /* this chunk's rows among the last `last` */
                if (first < t0 + n)
                    memcpy(out + ((size_t)s0 * last + first - (N - last)) * d, e + (size_t)(first - t0) * d,
                           (size_t)(t0 + n - first) * d * sizeof(float));
            }
        }
    }
    clear_memory(m);
    return 0;
}

const float *llm_prefill(llm *m, const int32_t *ids, int T, int n_parallel) {
    int t0, s;
    const float *row;
    if (m->is_encoder) {
        rt_fail("the model is a BERT encoder; generation needs a causal LM (gpt2, llama)");
        return NULL;
    }
    if (T < 1) {
        rt_fail("prefill needs at least one prompt token; got none");
        return NULL;
    }
    if (n_parallel < 1 || n_parallel > m->n_seq_max) {
        rt_fail("n_parallel=%d must be in 1..%d", n_parallel, m->n_seq_max);
        return NULL;
    }
    if (T >= m->n_ctx) {
        rt_fail("prompt of %d tokens does not fit n_ctx=%d", T, m->n_ctx);
        return NULL;
    }
    for (t0 = 0; t0 < T; t0++)
        if (ids[t0] < 0 || ids[t0] >= m->n_vocab) {
            rt_fail("prompt token id %d is outside [0, %d)", ids[t0], m->n_vocab);
            return NULL;
        }
    set_embeddings(m, 0);
    use_threads(m);
    clear_memory(m);
    for (t0 = 0; t0 < T; t0 += m->n_batch) {
        int n = T - t0 < m->n_batch ? T - t0 : m->n_batch, t;
        for (t = 0; t < n; t++) {
            m->tok[t] = ids[t0 + t];
            m->pos[t] = t0 + t;
            m->seq[t] = 0;
            m->nseq[t] = 1;
            m->out[t] = 0;
        }
        if (t0 + n == T) m->out[n - 1] = 1;
        if (decode(m, n, 0)) return NULL;
    }
    row = llama_get_logits_ith(m->ctx, -1);
    if (!row) {
        rt_fail("llama.cpp returned no logits (a %s model without an LM head?); expected a causal LM.%s", m->arch,
                last_log());
        return NULL;
    }
    for (s = 1; s < n_parallel; s++) llama_memory_seq_cp(m->mem, 0, s, -1, -1);
    for (s = 0; s < n_parallel; s++) m->seq_pos[s] = T;
    m->n_live = n_parallel;
    return row;
}

int llm_step(llm *m, const int32_t *tokens, const int32_t *seq, int n) {
    int k;
    if (n < 1 || n > m->cap) return rt_fail("step got %d tokens; expected 1..%d", n, m->cap);
    for (k = 0; k < n; k++) {
        int s = seq[k];
        if (s < 0 || s >= m->n_live) return rt_fail("step: sequence %d is not live (0..%d)", s, m->n_live - 1);
        if (m->seq_pos[s] >= m->n_ctx)
            return rt_fail("a sequence reached n_ctx=%d tokens; forecast a shorter horizon", m->n_ctx);
        m->tok[k] = tokens[k];
        m->pos[k] = m->seq_pos[s];
        m->seq[k] = s;
        m->nseq[k] = 1;
        m->out[k] = 1;
    }
    if (decode(m, n, 0)) return -1;
    for (k = 0; k < n; k++) m->seq_pos[seq[k]]++;
    return 0;
}

const float *llm_logits(llm *m, int row) {
    const float *p = llama_get_logits_ith(m->ctx, row);
    if (!p) rt_fail("llama.cpp returned no logits for row %d.%s", row, last_log());
    return p;
}

int32_t *llm_tokenize(llm *m, const char *text, int *n) {
    int len = (int)strlen(text), cap = len + 8, got;
    int32_t *buf = (int32_t *)rt_malloc((size_t)cap * sizeof(int32_t));
    if (!buf) return NULL;
    got = llama_tokenize(m->vocab, text, len, buf, cap, 0, 0);
    if (got < 0) {
        int32_t *nb;
        cap = -got;
        nb = (int32_t *)realloc(buf, (size_t)cap * sizeof(int32_t));
        if (!nb) {
            free(buf);
            rt_fail("out of memory");
            return NULL;
        }
        buf = nb;
        got = llama_tokenize(m->vocab, text, len, buf, cap, 0, 0);
    }
    if (got < 0) {
        free(buf);
        rt_fail("llama.cpp could not tokenize '%.40s'.%s", text, last_log());
        return NULL;
    }
    *n = got;
    return buf;
}

int llm_piece(llm *m, int32_t token, char *buf, int size) {
    int n = llama_token_to_piece(m->vocab, token, buf, size - 1, 0, 1);
    if (n < 0 || n >= size) return -1;
    buf[n] = '\0';
    return n;
}
