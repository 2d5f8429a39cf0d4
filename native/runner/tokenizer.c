#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rt_util.h"

enum { PRE_WS_SPLIT = 1, PRE_WHITESPACE, PRE_BERT, PRE_PUNCT, PRE_DIGITS };
enum { MODEL_WORDLEVEL = 1, MODEL_WORDPIECE = 2 };

static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_punct(int c) { /* BERT's ASCII punctuation (the Punctuation pre-tokenizer uses the same) */
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}
static int is_word(int c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const tok_entry *)a)->word, ((const tok_entry *)b)->word);
}

static int unsupported(const char *path, const char *what, const char *name) {
    return rt_fail("%s: the tokenizer's %s '%s' is not supported by libalignts (WordLevel / WordPiece models; "
                   "Lowercase, BertNormalizer and Unicode normalizers; WhitespaceSplit, Whitespace, BertPreTokenizer, "
                   "Punctuation, Digits pre-tokenizers). Fix: run this bundle with the Python runtime (alignts "
                   "forecast), or fit it on a backbone with a supported tokenizer (minilm, tiny-*).", path, what, name);
}

static const char *type_of(const json_value *v) {
    const json_value *t = json_get(v, "type");
    return t && t->type == JSON_STRING ? t->string : "";
}

static int add_normalizer(tokenizer *t, const json_value *n, const char *path) {
    const char *ty;
    size_t i;
    if (!n || n->type == JSON_NULL) return 0;
    ty = type_of(n);
    if (!strcmp(ty, "Sequence")) {
        const json_value *seq = json_get(n, "normalizers");
        if (!seq || seq->type != JSON_ARRAY) return unsupported(path, "normalizer", "Sequence without a list");
        for (i = 0; i < seq->n; i++)
            if (add_normalizer(t, &seq->items[i], path)) return -1;
        return 0;
    }
    if (!strcmp(ty, "Lowercase")) {
        t->lowercase = 1;
        return 0;
    }
    if (!strcmp(ty, "BertNormalizer")) {
        const json_value *lc = json_get(n, "lowercase");
        if (!lc || (lc->type == JSON_BOOL && lc->boolean)) t->lowercase = 1;
        return 0; /* clean_text, chinese chars, accents: nothing to do on the printable ASCII of a prompt */
    }
    if (!strcmp(ty, "NFC") || !strcmp(ty, "NFD") || !strcmp(ty, "NFKC") || !strcmp(ty, "NFKD") ||
        !strcmp(ty, "StripAccents"))
        return 0; /* identities on ASCII */
    return unsupported(path, "normalizer", ty);
}

static int add_pre(tokenizer *t, const json_value *p, const char *path) {
    const char *ty;
    size_t i;
    int kind = 0, individual = 0;
    if (!p || p->type == JSON_NULL) return 0;
    ty = type_of(p);
    if (!strcmp(ty, "Sequence")) {
        const json_value *seq = json_get(p, "pretokenizers");
        if (!seq || seq->type != JSON_ARRAY) return unsupported(path, "pre-tokenizer", "Sequence without a list");
        for (i = 0; i < seq->n; i++)
            if (add_pre(t, &seq->items[i], path)) return -1;
        return 0;
    }
    if (!strcmp(ty, "WhitespaceSplit")) kind = PRE_WS_SPLIT;
    else if (!strcmp(ty, "Whitespace")) kind = PRE_WHITESPACE;
    else if (!strcmp(ty, "BertPreTokenizer")) kind = PRE_BERT;
    else if (!strcmp(ty, "Punctuation")) {
        const json_value *b = json_get(p, "behavior");
        if (b && b->type == JSON_STRING && strcmp(b->string, "Isolated"))
            return unsupported(path, "Punctuation behavior", b->string);
        kind = PRE_PUNCT;
    } else if (!strcmp(ty, "Digits")) {
        const json_value *d = json_get(p, "individual_digits");
        individual = d && d->type == JSON_BOOL && d->boolean;
        kind = PRE_DIGITS;
    } else
        return unsupported(path, "pre-tokenizer", ty);
    if (t->n_pre >= TOK_MAX_PRE) return unsupported(path, "pre-tokenizer", "Sequence longer than 8");
    t->pre[t->n_pre] = kind;
    t->pre_individual[t->n_pre++] = individual;
    return 0;
}

int tokenizer_load(const char *path, tokenizer *t) {
    char *text = NULL, err[160];
    size_t len, i;
    json_value *root = NULL;
    const json_value *model, *vocab, *unk, *pre, *mx, *added;
    const char *ty;
    memset(t, 0, sizeof *t);
    t->unk = -1;
    if (rt_read_file(path, &text, &len)) return -1;
    if (json_parse(text, len, &root, err, sizeof err)) {
        free(text);
        return rt_fail("%s is not valid JSON (%s); expected the backbone's tokenizer.json. Re-export the backbone "
                       "bundle.", path, err);
    }
    free(text);
    t->json = root;
    model = json_get(root, "model");
    ty = model ? type_of(model) : "";
    if (!strcmp(ty, "WordLevel")) t->model = MODEL_WORDLEVEL;
    else if (!strcmp(ty, "WordPiece")) t->model = MODEL_WORDPIECE;
    else goto unsup;
    vocab = json_get(model, "vocab");
    if (!vocab || vocab->type != JSON_OBJECT || vocab->n == 0) {
        rt_fail("%s: model.vocab is not an object of token -> id; re-export the backbone bundle.", path);
        goto fail;
    }
    if (!(t->vocab = (tok_entry *)rt_calloc(vocab->n, sizeof *t->vocab))) goto fail;
    for (i = 0; i < vocab->n; i++) {
        const json_value *id = &vocab->items[i];
        if (id->type != JSON_NUMBER || !id->is_integer || id->number < 0 || id->number > 2147483647.0) {
            rt_fail("%s: model.vocab['%s'] is not a token id; re-export the backbone bundle.", path, vocab->keys[i]);
            goto fail;
        }
        t->vocab[i].word = vocab->keys[i];
        t->vocab[i].id = (int32_t)id->number;
    }
    t->n_vocab = vocab->n;
    qsort(t->vocab, t->n_vocab, sizeof *t->vocab, cmp_entry);
    unk = json_get(model, "unk_token");
    if (unk && unk->type == JSON_STRING) {
        tok_entry key = {unk->string, 0}, *e = (tok_entry *)bsearch(&key, t->vocab, t->n_vocab, sizeof key, cmp_entry);
        if (e) t->unk = e->id;
    }
    if (t->model == MODEL_WORDPIECE) {
        const json_value *pf = json_get(model, "continuing_subword_prefix");
        const char *s = pf && pf->type == JSON_STRING ? pf->string : "##";
        if (strlen(s) >= sizeof t->prefix) goto unsup;
        strcpy(t->prefix, s);
        mx = json_get(model, "max_input_chars_per_word");
        t->max_chars = mx && mx->type == JSON_NUMBER && mx->number >= 1 ? (size_t)mx->number : 100;
    }
    if (add_normalizer(t, json_get(root, "normalizer"), path)) goto fail;
    pre = json_get(root, "pre_tokenizer");
    if (add_pre(t, pre, path)) goto fail;
    added = json_get(root, "added_tokens");
    if (added && added->type == JSON_ARRAY && added->n) {
        if (!(t->added = (const char **)rt_calloc(added->n, sizeof(char *))) ||
            !(t->added_ids = (int32_t *)rt_calloc(added->n, sizeof(int32_t))))
            goto fail;
        for (i = 0; i < added->n; i++) {
            const json_value *c = json_get(&added->items[i], "content"), *id = json_get(&added->items[i], "id");
            if (c && c->type == JSON_STRING && c->string[0] && id && id->type == JSON_NUMBER && id->number >= 0) {
                t->added_ids[t->n_added] = (int32_t)id->number;
                t->added[t->n_added++] = c->string;
            }
        }
    }
    return 0;
unsup:
    unsupported(path, "model", ty[0] ? ty : "(none)");
fail:
    tokenizer_free(t);
    return -1;
}

int32_t tokenizer_token_id(const tokenizer *t, const char *word) {
    tok_entry key, *e;
    size_t i;
    key.word = word;
    key.id = 0;
    if ((e = (tok_entry *)bsearch(&key, t->vocab, t->n_vocab, sizeof key, cmp_entry))) return e->id;
    for (i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i], word)) return t->added_ids[i];
    return -1;
}

void tokenizer_free(tokenizer *t) {
    free(t->vocab);
    free(t->added_ids);
    free((void *)t->added);
    json_free((json_value *)t->json);
    memset(t, 0, sizeof *t);
}

/* pieces: [start, end) ranges into the normalized text */
typedef struct {
    size_t a, b;
} span;

static size_t split(const char *s, const span *in, size_t n_in, span *out, size_t cap, int kind, int individual) {
    size_t n = 0, i, k;
    for (i = 0; i < n_in; i++) {
        size_t a = in[i].a, b = in[i].b;
        k = a;
        while (k < b) {
            size_t e = k + 1;
            int c = (unsigned char)s[k];
            switch (kind) {
            case PRE_WS_SPLIT:
                if (is_space(c)) {
                    k++;
                    continue;
                }
                while (e < b && !is_space((unsigned char)s[e])) e++;
                break;
            case PRE_WHITESPACE: /* \w+|[^\w\s]+ */
                if (is_space(c)) {
                    k++;
                    continue;
                }
                if (is_word(c))
                    while (e < b && is_word((unsigned char)s[e])) e++;
                else
                    while (e < b && !is_word((unsigned char)s[e]) && !is_space((unsigned char)s[e])) e++;
                break;
            case PRE_BERT: /* whitespace removed, every punctuation character on its own */
                if (is_space(c)) {
                    k++;
                    continue;
                }
                if (!is_punct(c))
                    while (e < b && !is_space((unsigned char)s[e]) && !is_punct((unsigned char)s[e])) e++;
                break;
            case PRE_PUNCT:
                if (!is_punct(c))
                    while (e < b && !is_punct((unsigned char)s[e])) e++;
                break;
            default: /* PRE_DIGITS */
                if (is_digit(c)) {
                    if (!individual)
                        while (e < b && is_digit((unsigned char)s[e])) e++;
                } else {
                    while (e < b && !is_digit((unsigned char)s[e])) e++;
                }
            }
            if (n < cap) {
                out[n].a = k;
                out[n].b = e;
            }
            n++;
            k = e;
        }
    }
    return n;
}

static int32_t lookup(const tokenizer *t, const char *w, size_t len, char *buf) {
    tok_entry key, *e;
    memcpy(buf, w, len);
    buf[len] = '\0';
    key.word = buf;
    key.id = 0;
    e = (tok_entry *)bsearch(&key, t->vocab, t->n_vocab, sizeof key, cmp_entry);
    return e ? e->id : -1;
}

int tokenizer_encode(const tokenizer *t, const char *text, int32_t *ids, size_t cap, size_t *n) {
    char norm[1024], buf[1024 + 16];
    span s1[1024], s2[1024], *in = s1, *out = s2, *tmp;
    size_t len = strlen(text), n_sp = 1, i, k;
    *n = 0;
    if (len >= sizeof norm) return rt_fail("prompt text of %zu bytes; expected < 1024", len);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 128)
            return rt_fail("the prompt text '%.60s' is not ASCII; libalignts tokenizes ASCII prompts only. Fix: use an "
                           "ASCII description, or run this bundle with `alignts forecast`.", text);
        norm[i] = (char)(t->lowercase && c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    norm[len] = '\0';
    for (i = 0; i < t->n_added; i++)
        if (strstr(text, t->added[i]))
            return rt_fail("the prompt text holds the tokenizer's added token '%s'; libalignts does not split added "
                           "tokens. Fix: run this bundle with the Python runtime.", t->added[i]);
    in[0].a = 0;
    in[0].b = len;
    for (k = 0; k < (size_t)t->n_pre; k++) {
        n_sp = split(norm, in, n_sp, out, 1024, t->pre[k], t->pre_individual[k]);
        if (n_sp > 1024) return rt_fail("prompt text splits into more than 1024 pieces");
        tmp = in;
        in = out;
        out = tmp;
    }
    for (i = 0; i < n_sp; i++) {
        const char *w = norm + in[i].a;
        size_t wl = in[i].b - in[i].a;
        if (wl == 0) continue;
        if (t->model == MODEL_WORDLEVEL) {
            int32_t id = lookup(t, w, wl, buf);
            if (id < 0) id = t->unk;
            if (id < 0) return rt_fail("'%.*s' is not in the tokenizer's vocabulary and it has no unk_token", (int)wl, w);
            if (*n < cap) ids[*n] = id;
            (*n)++;
        } else { /* WordPiece: greedy longest match, continuation pieces behind the prefix; else the whole word unk */
            size_t start = 0, first = *n, pl = strlen(t->prefix);
            int bad = wl > t->max_chars;
            while (!bad && start < wl) {
                size_t end = wl;
                int32_t id = -1;
                while (end > start) {
                    if (start > 0) {
                        memcpy(buf, t->prefix, pl);
                        memcpy(buf + pl, w + start, end - start);
                        buf[pl + end - start] = '\0';
                        id = lookup(t, buf, pl + end - start, buf + 512);
                    } else {
                        id = lookup(t, w, end, buf);
                    }
                    if (id >= 0) break;
                    end--;
                }
                if (id < 0) {
                    bad = 1;
                    break;
                }
                if (*n < cap) ids[*n] = id;
                (*n)++;
                start = end;
            }
            if (bad) {
                if (t->unk < 0) return rt_fail("'%.*s' cannot be tokenized and the tokenizer has no unk_token", (int)wl, w);
                *n = first;
                if (*n < cap) ids[*n] = t->unk;
                (*n)++;
            }
        }
    }
    if (*n > cap) return -1;
    return 0;
}
