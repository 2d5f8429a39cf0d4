/* llama.cpp through its C API, the way alignts/runtime/backends/gguf.py drives it:
 * - hidden states for input embeddings (Internal: pooling none, embeddings on, f32 KV cache);
 * - prefill + step over n parallel sequences sharing one prompt, logits out (Injective). */
#ifndef ALIGNTS_LLM_H
#define ALIGNTS_LLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llm llm;

typedef struct {
    int n_ctx;        /* tokens per sequence */
    int n_batch;      /* most tokens per llama_decode (also the physical batch) */
    int n_seq_max;    /* parallel sequences */
    int embeddings;   /* start with embeddings output on */
    int n_threads;    /* 0 = the cores this process may use */
    int kv_f16;       /* KV cache in f16 instead of f32 (the bundle's variant.extra.kv_type) */
    int flash_attn;   /* llama.cpp's flash attention (the bundle's variant.extra.flash_attn; off = exact) */
    int kv_unified;   /* one KV cache for all sequences (llama.cpp's kv_unified): the samples share the prompt's
                         cells; ignored for an encoder or one sequence */
    int kv_cells;     /* with kv_unified: the shared cache's cells (n_ctx..n_ctx x n_seq_max); 0 = n_ctx x n_seq_max */
    const char *lora_path; /* optional LoRA adapter (GGUF), NULL for none */
    float lora_scale;
} llm_params;

/* How many of scripts/patch_llama.py's changes the linked libllama carries (its alignts_llama_patch_level()), 0 for
 * a stock build (the aarch64 cross-build's, say). */
int llm_patch_level(void);

/* 1 when a GGUF read into memory lands in transparent huge pages: the linked ggml asks for them (patch level 21),
 * Linux's THP mode is always or madvise, and ALIGNTS_HUGE_PAGES is not 0. llm_open then reads the file (a decode
 * step's weights stream 1.15-1.18x faster than mapped, results/speed_llama.md section 28), else maps it. As
 * alignts/runtime/backends/gguf.py huge_pages. */
int llm_huge_pages(void);

/* Check the GGUF header, load the model, create the context. NULL after rt_fail. */
llm *llm_open(const char *path, const llm_params *p);
void llm_close(llm *m);

/* Bytes of the model's tensors (llama_model_size) and of the context's KV cache (0 for an encoder). */
size_t llm_model_bytes(const llm *m);
size_t llm_kv_bytes(const llm *m);

int llm_n_embd(const llm *m);
int llm_n_vocab(const llm *m);
int llm_n_ctx_train(const llm *m);
const char *llm_arch(const llm *m);
int32_t llm_bos(const llm *m); /* -1 if none */
int32_t llm_eos(const llm *m); /* -1 if none */

/* embeds [S, N, d] -> out [S, last, d]: each series' last `last` hidden states (last = N: all of them; see
   LlamaCppModel.hidden_states). A BERT on alignts' llama.cpp (patch level 19) outputs only those, its last layer's
   FFN run on them alone. 0 or -1. */
int llm_hidden_states(llm *m, const float *embeds, int S, int N, int last, float *out);

/* Decode the prompt on sequence 0 and share its cache with sequences 1..n_parallel-1. Returns a pointer to
 * the logits [V] after the last prompt token (valid until the next call), or NULL after rt_fail. */
const float *llm_prefill(llm *m, const int32_t *ids, int n_ids, int n_parallel);
/* One token for each of seq[k] (k < n); 0 or -1. Logits of row k: llm_logits(m, k). */
int llm_step(llm *m, const int32_t *tokens, const int32_t *seq, int n);
const float *llm_logits(llm *m, int row);

/* Tokenize text with the model's tokenizer (no special tokens added). Returns a malloc'd array and *n, or
 * NULL after rt_fail. */
int32_t *llm_tokenize(llm *m, const char *text, int *n);
/* The text of one token into buf (NUL-terminated, maybe cut). Returns its length or -1. */
int llm_piece(llm *m, int32_t token, char *buf, int size);

/* Free llama.cpp's backend when no model is open (libalignts calls it from alignts_close; safe to call any time). */
void llm_shutdown(void);

/* Show llama.cpp's log on stderr (default: kept quiet; the last lines are quoted in errors). Per thread. */
void llm_set_verbose(int on);

#ifdef __cplusplus
}
#endif

#endif
