/* A small, strict JSON reader (RFC 8259) for bundle manifests.
 *
 * One extension: the tokens NaN, Infinity and -Infinity are numbers, because Python's json.dumps writes them
 * for non-finite floats (allow_nan=True), e.g. an unbounded tolerance in a variant's validation record.
 * Strings are returned as UTF-8 (\u escapes decoded, surrogate pairs joined); a string holding "\u0000" is
 * refused (C strings cannot carry it). Nesting depth is limited to 64. */
#ifndef ALIGNTS_JSON_H
#define ALIGNTS_JSON_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    int boolean;
    double number;
    int is_integer;        /* the number was written without fraction or exponent */
    char *string;          /* JSON_STRING */
    size_t n;              /* array items / object members */
    struct json_value *items; /* [n] */
    char **keys;           /* [n], JSON_OBJECT */
} json_value;

/* Parse text[len]; on success *out is a malloc'd tree (free with json_free). On failure returns -1 and
 * writes "line L, column C: what" into err. */
int json_parse(const char *text, size_t len, json_value **out, char *err, size_t err_size);
void json_free(json_value *v);

/* The member `key` of an object (the last one if repeated), or NULL (also for a non-object). */
const json_value *json_get(const json_value *obj, const char *key);
const char *json_type_name(json_type t);

#ifdef __cplusplus
}
#endif

#endif
