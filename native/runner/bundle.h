/* Bundle manifests (alignts/runtime/manifest.py): parse manifest.json, pick a GGUF variant, verify files. */
#ifndef ALIGNTS_BUNDLE_H
#define ALIGNTS_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *name;
    const char *sha256;
    uint64_t size;
} bundle_file;

typedef struct {
    const char *name, *backend, *dtype;
    const char **files; /* [n_files] */
    size_t n_files;
    const json_value *extra; /* object or NULL */
} bundle_variant;

typedef struct {
    char *dir;
    json_value *root;
    const char *paradigm, *architecture;
    bundle_file *files;
    size_t n_files;
    bundle_variant *variants;
    size_t n_variants;
    const json_value *config, *codec; /* objects (maybe empty) or NULL */
} bundle;

/* Read and check dir/manifest.json (format, version, paradigm, files, variants). 0 or -1 (rt_fail). */
int bundle_open(const char *dir, bundle *b);
void bundle_close(bundle *b);

/* The variant called name, or (name NULL) the first GGUF variant. NULL after rt_fail. */
const bundle_variant *bundle_pick_variant(const bundle *b, const char *name);

/* Check that rel exists with the manifest's size and sha256. 0 or -1 (rt_fail). */
int bundle_verify_file(const bundle *b, const char *rel);
/* Verify every file of the variant. */
int bundle_verify_variant(const bundle *b, const bundle_variant *v);

/* Typed access to manifest values, with defaults. Each returns 0 or -1 after rt_fail naming section.key. */
int cfg_number(const json_value *obj, const char *section, const char *key, double dflt, double *out);
int cfg_int(const json_value *obj, const char *section, const char *key, long dflt, long *out);
int cfg_bool(const json_value *obj, const char *section, const char *key, int dflt, int *out);
/* String or NULL (absent / null); -1 if present with another type. */
int cfg_string(const json_value *obj, const char *section, const char *key, const char **out);
/* An array of integers (absent -> *n = 0). out is malloc'd. */
int cfg_int_array(const json_value *obj, const char *section, const char *key, int64_t **out, size_t *n);

#ifdef __cplusplus
}
#endif

#endif
