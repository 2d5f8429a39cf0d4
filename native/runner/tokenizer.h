/* The Bridging prompt's tokenizer: a Hugging Face tokenizer.json (the backbone bundle's) for ASCII text, as the
 * `tokenizers` library encodes it (alignts/runtime/tokenize.py, add_special_tokens=False). Supported: models
 * WordLevel and WordPiece; normalizers Lowercase, BertNormalizer, NFC/NFD/NFKC/NFKD/StripAccents (no-ops on
 * ASCII) and Sequence; pre-tokenizers WhitespaceSplit, Whitespace, BertPreTokenizer, Punctuation (isolated),
 * Digits and Sequence. Anything else (byte-level BPE, SentencePiece) is refused at load with a clear message. */
#ifndef ALIGNTS_TOKENIZER_H
#define ALIGNTS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TOK_MAX_PRE 8

typedef struct {
    const char *word;
    int32_t id;
} tok_entry;

typedef struct {
    int model;     /* 1 WordLevel, 2 WordPiece */
    int lowercase; /* normalizer */
    int n_pre;
    int pre[TOK_MAX_PRE];        /* pre-tokenizer kinds, applied in order */
    int pre_individual[TOK_MAX_PRE];
    tok_entry *vocab;            /* sorted by word */
    size_t n_vocab;
    int32_t unk;                 /* -1: none */
    char prefix[16];             /* WordPiece continuing-subword prefix */
    size_t max_chars;            /* WordPiece max_input_chars_per_word */
    const char **added;          /* added tokens' contents (refused inside the text) */
    int32_t *added_ids;
    size_t n_added;
    void *json;                  /* the parsed file (owns the strings) */
} tokenizer;

/* 0 or -1 (rt_fail). */
int tokenizer_load(const char *path, tokenizer *t);
void tokenizer_free(tokenizer *t);
/* The id of token word (vocabulary, then added tokens), or -1 (`tokenizers`' token_to_id). */
int32_t tokenizer_token_id(const tokenizer *t, const char *word);
/* ids [cap] of ASCII text; *n = their number (more than cap: -1). 0 or -1 (rt_fail). */
int tokenizer_encode(const tokenizer *t, const char *text, int32_t *ids, size_t cap, size_t *n);

#ifdef __cplusplus
}
#endif

#endif
