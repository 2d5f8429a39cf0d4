#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_util.h"
#include "sha256.h"

#define FORMAT "alignts-bundle"
#define FORMAT_MAJOR "1"
#define REEXPORT "the file is corrupt or was edited by hand; re-export the bundle (alignts fit ...)"

/* A plain relative name, as alignts/runtime/manifest.py check_name: no leading '/', no empty, '.' or '..'
   component, no backslash, at most 1024 bytes. */
static int safe_rel_path(const char *p) {
    const char *s = p;
    if (!*p || strlen(p) > 1024 || strchr(p, '\\')) return 0;
    for (;;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
        if (!e) return 1;
        s = e + 1;
    }
}

/* Open dir/rel for reading unless a component of rel is a symbolic link (a link can point out of the bundle):
   every parent is lstat'ed, the file itself opened with O_NOFOLLOW. The fd, or -1 (rt_fail). */
static int open_in_bundle(const bundle *b, const char *rel, const char *path, struct stat *st) {
    char *prefix = rt_join(b->dir, rel);
    size_t base = strlen(b->dir) + 1, i;
    int fd;
    if (!prefix) return -1;
    for (i = base; prefix[i]; i++) {
        if (prefix[i] != '/') continue;
        prefix[i] = '\0';
        if (lstat(prefix, st) == 0 && S_ISLNK(st->st_mode)) {
            rt_fail("bundle %s: '%s' is a symbolic link; expected the real folder inside the bundle, since a link "
                    "can leave it. Fix: copy the bundle with its files (cp -rL) or re-export it.", b->dir, prefix);
            free(prefix);
            return -1;
        }
        prefix[i] = '/';
    }
    free(prefix);
    if (lstat(path, st) == 0 && S_ISLNK(st->st_mode))
        return rt_fail("bundle %s: '%s' is a symbolic link; expected the real file inside the bundle, since a link "
                       "can leave it. Fix: copy the bundle with its files (cp -rL) or re-export it.", b->dir, rel);
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        if (fd >= 0) close(fd);
        return rt_fail("bundle %s is missing '%s' (listed in its manifest) or it is not a regular file; copy the "
                       "whole bundle folder or re-export it.", b->dir, rel);
    }
    return fd;
}

static int is_hex64(const char *s) {
    size_t i;
    for (i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[64] == '\0';
}

static const char *str_member(const json_value *obj, const char *key, const char *where, const char *mpath) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type != JSON_STRING) {
        rt_fail("%s: malformed manifest: %s.%s should be a string, got %s; %s.", mpath, where, key,
                v ? json_type_name(v->type) : "nothing", REEXPORT);
        return NULL;
    }
    return v->string;
}

int bundle_open(const char *dir, bundle *b) {
    char *mpath, *text, err[256];
    size_t len, i, j;
    struct stat st;
    const json_value *files, *variants, *v;
    const char *fmt, *ver;
    memset(b, 0, sizeof *b);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return rt_fail("bundle folder '%s' does not exist; pass the folder that `alignts fit ... --out FOLDER` "
                       "wrote.", dir);
    b->dir = (char *)rt_malloc(strlen(dir) + 1);
    if (!b->dir) return -1;
    strcpy(b->dir, dir);
    mpath = rt_join(dir, "manifest.json");
    if (!mpath) return -1;
    if (lstat(mpath, &st) == 0 && S_ISLNK(st.st_mode)) {
        rt_fail("%s is a symbolic link; expected the bundle's own manifest.json file. Fix: copy the bundle with its "
                "files (cp -rL) or re-export it.", mpath);
        free(mpath);
        return -1;
    }
    if (stat(mpath, &st) != 0) {
        rt_fail("'%s' has no manifest.json; it is not an alignts bundle (or the export was interrupted: re-run "
                "`alignts fit ...`).", dir);
        free(mpath);
        return -1;
    }
    if (rt_read_file(mpath, &text, &len)) {
        free(mpath);
        return -1;
    }
    if (json_parse(text, len, &b->root, err, sizeof err)) {
        rt_fail("%s: not valid JSON (%s); %s.", mpath, err, REEXPORT);
        free(text);
        free(mpath);
        return -1;
    }
    free(text);
    if (b->root->type != JSON_OBJECT) {
        rt_fail("%s: expected a JSON object, got %s; %s.", mpath, json_type_name(b->root->type), REEXPORT);
        goto fail;
    }
    v = json_get(b->root, "format");
    fmt = v && v->type == JSON_STRING ? v->string : NULL;
    if (!fmt || strcmp(fmt, FORMAT) != 0) {
        rt_fail("%s: 'format' is %s%s%s, expected '" FORMAT "'; this folder is not an alignts bundle "
                "(re-export it with `alignts fit ...`).", mpath, fmt ? "'" : "", fmt ? fmt : "missing",
                fmt ? "'" : "");
        goto fail;
    }
    v = json_get(b->root, "format_version");
    ver = v && v->type == JSON_STRING ? v->string : "";
    if (strncmp(ver, FORMAT_MAJOR ".", 2) != 0 && strcmp(ver, FORMAT_MAJOR) != 0) {
        rt_fail("%s: format_version '%s' is not readable by this alignts-run (reads " FORMAT_MAJOR ".x). "
                "HINT: rebuild alignts-run from a newer alignts or re-export the bundle.", mpath, ver);
        goto fail;
    }
    if (!(b->paradigm = str_member(b->root, "paradigm", "manifest", mpath))) goto fail;
    if (strcmp(b->paradigm, "internal") && strcmp(b->paradigm, "injective") && strcmp(b->paradigm, "bridging") &&
        strcmp(b->paradigm, "backbone")) {
        rt_fail("%s: unknown paradigm '%s'; expected one of internal, bridging, injective, backbone.", mpath,
                b->paradigm);
        goto fail;
    }
    if (!(b->architecture = str_member(b->root, "architecture", "manifest", mpath))) goto fail;
    files = json_get(b->root, "files");
    if (!files || files->type != JSON_OBJECT) {
        rt_fail("%s: malformed manifest: 'files' should be an object {path: {sha256, size}}, got %s; %s.", mpath,
                files ? json_type_name(files->type) : "nothing", REEXPORT);
        goto fail;
    }
    b->files = (bundle_file *)rt_calloc(files->n, sizeof(bundle_file));
    if (!b->files) goto fail;
    for (i = 0; i < files->n; i++) {
        const json_value *e = &files->items[i], *size;
        bundle_file *f = &b->files[b->n_files++];
        f->name = files->keys[i];
        if (!safe_rel_path(f->name)) {
            rt_fail("%s: file name '%s' is not a plain relative name inside the bundle folder (absolute, '..', '.', "
                    "empty component or backslash); %s.", mpath, f->name, REEXPORT);
            goto fail;
        }
        if (e->type != JSON_OBJECT || !(f->sha256 = str_member(e, "sha256", f->name, mpath))) {
            rt_fail("%s: malformed manifest: files['%s'] should be {\"sha256\": hex, \"size\": int}; %s.", mpath,
                    f->name, REEXPORT);
            goto fail;
        }
        if (!is_hex64(f->sha256)) {
            rt_fail("%s: files['%s'].sha256 is '%.70s', expected 64 lowercase hex digits; %s.", mpath, f->name,
                    f->sha256, REEXPORT);
            goto fail;
        }
        size = json_get(e, "size");
        if (!size || size->type != JSON_NUMBER || !size->is_integer || size->number < 0 || size->number > 9e15) {
            rt_fail("%s: files['%s'].size should be a non-negative integer; %s.", mpath, f->name, REEXPORT);
            goto fail;
        }
        f->size = (uint64_t)size->number;
    }
    variants = json_get(b->root, "variants");
    if (!variants || variants->type != JSON_ARRAY) {
        rt_fail("%s: malformed manifest: 'variants' should be an array, got %s; %s.", mpath,
                variants ? json_type_name(variants->type) : "nothing", REEXPORT);
        goto fail;
    }
    b->variants = (bundle_variant *)rt_calloc(variants->n, sizeof(bundle_variant));
    if (!b->variants) goto fail;
    for (i = 0; i < variants->n; i++) {
        const json_value *e = &variants->items[i], *fl;
        bundle_variant *bv = &b->variants[b->n_variants++];
        char where[32];
        snprintf(where, sizeof where, "variants[%zu]", i);
        if (e->type != JSON_OBJECT) {
            rt_fail("%s: malformed manifest: %s should be an object; %s.", mpath, where, REEXPORT);
            goto fail;
        }
        if (!(bv->name = str_member(e, "name", where, mpath)) || !(bv->backend = str_member(e, "backend", where, mpath)) ||
            !(bv->dtype = str_member(e, "dtype", where, mpath)))
            goto fail;
        if (strcmp(bv->backend, "onnx") && strcmp(bv->backend, "gguf")) {
            rt_fail("%s: variant '%s' has unknown backend '%s'; expected onnx or gguf.", mpath, bv->name, bv->backend);
            goto fail;
        }
        fl = json_get(e, "files");
        if (!fl || fl->type != JSON_ARRAY || fl->n == 0) {
            rt_fail("%s: malformed manifest: variant '%s' needs a non-empty 'files' array; %s.", mpath, bv->name,
                    REEXPORT);
            goto fail;
        }
        bv->files = (const char **)rt_calloc(fl->n, sizeof(char *));
        if (!bv->files) goto fail;
        for (j = 0; j < fl->n; j++) {
            size_t k;
            int listed = 0;
            if (fl->items[j].type != JSON_STRING) {
                rt_fail("%s: malformed manifest: variant '%s' files[%zu] should be a string; %s.", mpath, bv->name, j,
                        REEXPORT);
                goto fail;
            }
            bv->files[bv->n_files++] = fl->items[j].string;
            for (k = 0; k < b->n_files; k++) listed |= strcmp(b->files[k].name, fl->items[j].string) == 0;
            if (!listed) {
                rt_fail("%s: variant '%s' uses '%s', which the manifest's 'files' does not list; the bundle is "
                        "inconsistent, re-export it.", mpath, bv->name, fl->items[j].string);
                goto fail;
            }
        }
        v = json_get(e, "extra");
        bv->extra = v && v->type == JSON_OBJECT ? v : NULL;
    }
    b->config = json_get(b->root, "config");
    if (b->config && b->config->type != JSON_OBJECT) {
        rt_fail("%s: malformed manifest: 'config' should be an object; %s.", mpath, REEXPORT);
        goto fail;
    }
    b->codec = json_get(b->root, "codec");
    if (b->codec && b->codec->type != JSON_OBJECT) {
        rt_fail("%s: malformed manifest: 'codec' should be an object; %s.", mpath, REEXPORT);
        goto fail;
    }
    free(mpath);
    return 0;
fail:
    free(mpath);
    bundle_close(b);
    return -1;
}

void bundle_close(bundle *b) {
    size_t i;
    if (b->variants)
        for (i = 0; i < b->n_variants; i++) free((void *)b->variants[i].files);
    free(b->variants);
    free(b->files);
    json_free(b->root);
    free(b->dir);
    memset(b, 0, sizeof *b);
}

const bundle_variant *bundle_pick_variant(const bundle *b, const char *name) {
    size_t i;
    char known[512] = "";
    for (i = 0; i < b->n_variants; i++) {
        const bundle_variant *v = &b->variants[i];
        if (name ? strcmp(v->name, name) == 0 : strcmp(v->backend, "gguf") == 0) {
            if (strcmp(v->backend, "gguf") != 0) {
                rt_fail("variant '%s' of %s runs on %s; alignts-run runs GGUF variants only (llama.cpp). Fix: pick a "
                        "gguf-* variant with --variant, or use `alignts forecast` for ONNX.", v->name, b->dir, v->backend);
                return NULL;
            }
            return v;
        }
        if (strlen(known) + strlen(v->name) + 3 < sizeof known) {
            if (known[0]) strcat(known, ", ");
            strcat(known, v->name);
        }
    }
    if (name)
        rt_fail("bundle %s has no variant '%s'; it has: %s.", b->dir, name, known[0] ? known : "none");
    else
        rt_fail("bundle %s has no GGUF variant (it has: %s); alignts-run needs one. Fix: re-export with GGUF "
                "(alignts fit ... with llama-cpp-python installed).", b->dir, known[0] ? known : "none");
    return NULL;
}

int bundle_verify_file(const bundle *b, const char *rel) {
    size_t i;
    const bundle_file *f = NULL;
    char *path, hex[65];
    unsigned char buf[1 << 16], digest[32];
    struct stat st;
    sha256_ctx c;
    ssize_t got;
    int fd;
    for (i = 0; i < b->n_files; i++)
        if (strcmp(b->files[i].name, rel) == 0) f = &b->files[i];
    if (!f)
        return rt_fail("bundle %s: '%s' is not listed in its manifest's 'files', so it was never hashed; the bundle "
                       "is inconsistent, re-export it.", b->dir, rel);
    path = rt_join(b->dir, rel);
    if (!path) return -1;
    if ((fd = open_in_bundle(b, rel, path, &st)) < 0) {
        free(path);
        return -1;
    }
    if ((uint64_t)st.st_size != f->size) {
        rt_fail("%s: size %llu bytes, manifest says %llu; the file is truncated or was changed after export. "
                "Re-export the bundle or restore the file.", path, (unsigned long long)st.st_size,
                (unsigned long long)f->size);
        close(fd);
        free(path);
        return -1;
    }
    sha256_init(&c);
    while ((got = read(fd, buf, sizeof buf)) > 0) sha256_update(&c, buf, (size_t)got);
    close(fd);
    if (got < 0) {
        rt_fail("error reading %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    sha256_final(&c, digest);
    sha256_hex(digest, hex);
    if (strcmp(hex, f->sha256) != 0) {
        rt_fail("%s: sha256 %.16s... does not match the manifest's %.16s...; the file was tampered with or "
                "corrupted. Re-export the bundle or restore the file.", path, hex, f->sha256);
        free(path);
        return -1;
    }
    free(path);
    return 0;
}

int bundle_verify_variant(const bundle *b, const bundle_variant *v) {
    size_t i;
    for (i = 0; i < v->n_files; i++)
        if (bundle_verify_file(b, v->files[i])) return -1;
    return 0;
}

int cfg_number(const json_value *obj, const char *section, const char *key, double dflt, double *out) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) {
        *out = dflt;
        return 0;
    }
    if (v->type != JSON_NUMBER)
        return rt_fail("malformed manifest: %s.%s should be a number, got %s; %s.", section, key,
                       json_type_name(v->type), REEXPORT);
    *out = v->number;
    return 0;
}

int cfg_int(const json_value *obj, const char *section, const char *key, long dflt, long *out) {
    double d = 0.0;
    if (cfg_number(obj, section, key, (double)dflt, &d)) return -1;
    if (d != floor(d) || fabs(d) > 1e15)
        return rt_fail("malformed manifest: %s.%s should be an integer, got %g; %s.", section, key, d, REEXPORT);
    *out = (long)d;
    return 0;
}

int cfg_bool(const json_value *obj, const char *section, const char *key, int dflt, int *out) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) {
        *out = dflt;
        return 0;
    }
    if (v->type != JSON_BOOL)
        return rt_fail("malformed manifest: %s.%s should be true or false, got %s; %s.", section, key,
                       json_type_name(v->type), REEXPORT);
    *out = v->boolean;
    return 0;
}

int cfg_string(const json_value *obj, const char *section, const char *key, const char **out) {
    const json_value *v = json_get(obj, key);
    *out = NULL;
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_STRING)
        return rt_fail("malformed manifest: %s.%s should be a string, got %s; %s.", section, key,
                       json_type_name(v->type), REEXPORT);
    *out = v->string;
    return 0;
}

int cfg_int_array(const json_value *obj, const char *section, const char *key, int64_t **out, size_t *n) {
    const json_value *v = json_get(obj, key);
    size_t i;
    *out = NULL;
    *n = 0;
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_ARRAY)
        return rt_fail("malformed manifest: %s.%s should be an array of integers, got %s; %s.", section, key,
                       json_type_name(v->type), REEXPORT);
    *out = (int64_t *)rt_calloc(v->n, sizeof(int64_t));
    if (!*out) return -1;
    for (i = 0; i < v->n; i++) {
        const json_value *e = &v->items[i];
        if (e->type != JSON_NUMBER || e->number != floor(e->number) || fabs(e->number) > 9e15) {
            free(*out);
            *out = NULL;
            return rt_fail("malformed manifest: %s.%s[%zu] should be an integer; %s.", section, key, i, REEXPORT);
        }
        (*out)[i] = (int64_t)e->number;
    }
    *n = v->n;
    return 0;
}
