#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t len, pos;
    char *err;
    size_t err_size;
    int failed;
} parser;

static int fail(parser *p, const char *what) {
    if (!p->failed) {
        size_t line = 1, col = 1, i;
        for (i = 0; i < p->pos && i < p->len; i++) {
            if (p->s[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        snprintf(p->err, p->err_size, "line %zu, column %zu: %s", line, col, what);
        p->failed = 1;
    }
    return -1;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            p->pos++;
        else
            break;
    }
}

static int match(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static void free_value(json_value *v) {
    size_t i;
    if (!v) return;
    if (v->type == JSON_STRING) free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (i = 0; i < v->n; i++) {
            free_value(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
    memset(v, 0, sizeof *v);
}

static int hex4(parser *p, unsigned *out) {
    unsigned v = 0;
    int i;
    if (p->len - p->pos < 4) return fail(p, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return fail(p, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of a valid UTF-8 sequence starting at s (max n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t k, i;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) k = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) k = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) k = 4, cp = c & 0x07;
    else return 0;
    if (n < k) return 0;
    for (i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return k;
}

static int parse_string(parser *p, char **out) {
    size_t start = ++p->pos, cap, n = 0;
    char *buf;
    /* the decoded string is never longer than the raw text */
    size_t end = start;
    while (end < p->len && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->len) return fail(p, "unterminated string");
    cap = end - start + 1;
    buf = (char *)malloc(cap);
    if (!buf) return fail(p, "out of memory");
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            buf[n] = '\0';
            *out = buf;
            return 0;
        }
        if (c < 0x20) {
            free(buf);
            return fail(p, "control character in string (must be escaped)");
        }
        if (c == '\\') {
            char e;
            p->pos++;
            if (p->pos >= p->len) break;
            e = p->s[p->pos++];
            switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (hex4(p, &cp)) {
                    free(buf);
                    return -1;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (!match(p, "\\u") || hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        free(buf);
                        return fail(p, "unpaired UTF-16 surrogate in \\u escape");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    free(buf);
                    return fail(p, "unpaired UTF-16 surrogate in \\u escape");
                }
                if (cp == 0) {
                    free(buf);
                    return fail(p, "\\u0000 in a string is not supported");
                }
                n += put_utf8(buf + n, cp); /* <= 4 bytes for >= 6 (or 12) raw bytes */
                break;
            }
            default:
                free(buf);
                p->pos--;
                return fail(p, "invalid escape in string");
            }
            continue;
        }
        {
            size_t k = utf8_len((const unsigned char *)p->s + p->pos, p->len - p->pos);
            if (k == 0) {
                free(buf);
                return fail(p, "invalid UTF-8 in string");
            }
            memcpy(buf + n, p->s + p->pos, k);
            n += k;
            p->pos += k;
        }
    }
    free(buf);
    return fail(p, "unterminated string");
}

static int parse_number(parser *p, json_value *v) {
    size_t start = p->pos;
    int integer = 1;
    char tmp[64];
    const char *s = p->s;
    if (match(p, "NaN")) {
        v->type = JSON_NUMBER;
        v->number = NAN;
        return 0;
    }
    if (match(p, "Infinity")) {
        v->type = JSON_NUMBER;
        v->number = INFINITY;
        return 0;
    }
    if (match(p, "-Infinity")) {
        v->type = JSON_NUMBER;
        v->number = -INFINITY;
        return 0;
    }
    if (p->pos < p->len && s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len) return fail(p, "truncated number");
    if (s[p->pos] == '0') {
        p->pos++;
    } else if (s[p->pos] >= '1' && s[p->pos] <= '9') {
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    } else {
        return fail(p, "invalid number");
    }
    if (p->pos < p->len && s[p->pos] == '.') {
        integer = 0;
        p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return fail(p, "digit expected after '.'");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        integer = 0;
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return fail(p, "digit expected in exponent");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    if (p->pos - start >= sizeof tmp) return fail(p, "number too long");
    memcpy(tmp, s + start, p->pos - start);
    tmp[p->pos - start] = '\0';
    v->type = JSON_NUMBER;
    v->number = strtod(tmp, NULL);
    v->is_integer = integer;
    return 0;
}

static int parse_value(parser *p, json_value *v, int depth);

static int grow(parser *p, json_value *v, size_t *cap, int with_keys) {
    if (v->n < *cap) return 0;
    {
        size_t ncap = *cap ? *cap * 2 : 4;
        json_value *items = (json_value *)realloc(v->items, ncap * sizeof *items);
        if (!items) return fail(p, "out of memory");
        v->items = items;
        if (with_keys) {
            char **keys = (char **)realloc(v->keys, ncap * sizeof *keys);
            if (!keys) return fail(p, "out of memory");
            v->keys = keys;
        }
        *cap = ncap;
    }
    return 0;
}

static int parse_container(parser *p, json_value *v, int depth, int object) {
    size_t cap = 0;
    char close = object ? '}' : ']';
    v->type = object ? JSON_OBJECT : JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "object key (a string) expected");
            if (parse_string(p, &key)) return -1;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return fail(p, "':' expected after object key");
            }
            p->pos++;
        }
        if (grow(p, v, &cap, object)) {
            free(key);
            return -1;
        }
        memset(&v->items[v->n], 0, sizeof v->items[v->n]);
        if (object) v->keys[v->n] = key;
        v->n++;
        if (parse_value(p, &v->items[v->n - 1], depth + 1)) return -1;
        skip_ws(p);
        if (p->pos >= p->len) return fail(p, object ? "unterminated object" : "unterminated array");
        if (p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos] == close) {
            p->pos++;
            return 0;
        }
        return fail(p, object ? "',' or '}' expected in object" : "',' or ']' expected in array");
    }
}

static int parse_value(parser *p, json_value *v, int depth) {
    char c;
    if (depth > JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "value expected, found end of text");
    c = p->s[p->pos];
    if (c == '{') return parse_container(p, v, depth, 1);
    if (c == '[') return parse_container(p, v, depth, 0);
    if (c == '"') {
        v->type = JSON_STRING;
        return parse_string(p, &v->string);
    }
    if (match(p, "true")) {
        v->type = JSON_BOOL;
        v->boolean = 1;
        return 0;
    }
    if (match(p, "false")) {
        v->type = JSON_BOOL;
        return 0;
    }
    if (match(p, "null")) {
        v->type = JSON_NULL;
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9') || c == 'N' || c == 'I') return parse_number(p, v);
    return fail(p, "unexpected character (expected a JSON value)");
}

int json_parse(const char *text, size_t len, json_value **out, char *err, size_t err_size) {
    parser p;
    json_value *root;
    *out = NULL;
    p.s = text;
    p.len = len;
    p.pos = 0;
    p.err = err;
    p.err_size = err_size;
    p.failed = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.pos = 3; /* UTF-8 BOM */
    root = (json_value *)calloc(1, sizeof *root);
    if (!root) return fail(&p, "out of memory");
    if (parse_value(&p, root, 0) == 0) {
        skip_ws(&p);
        if (p.pos == p.len) {
            *out = root;
            return 0;
        }
        fail(&p, "extra text after the JSON value");
    }
    free_value(root);
    free(root);
    return -1;
}

void json_free(json_value *v) {
    if (!v) return;
    free_value(v);
    free(v);
}

const json_value *json_get(const json_value *obj, const char *key) {
    size_t i;
    const json_value *found = NULL;
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) found = &obj->items[i];
    return found;
}

const char *json_type_name(json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}
