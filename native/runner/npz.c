#include "npz.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_util.h"

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* Find `key` in the .npy header dict text and return a pointer just after "key':" (skipping spaces). */
static const char *dict_value(const char *h, const char *key) {
    char pat[32];
    const char *p;
    snprintf(pat, sizeof pat, "'%s':", key);
    p = strstr(h, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ') p++;
    return p;
}

static int parse_npy(const char *path, const char *member, const unsigned char *d, uint64_t n, npz_array *a) {
    size_t hlen, off, i, elem;
    int f8;
    char *hdr;
    const char *v;
    if (n < 10 || memcmp(d, "\x93NUMPY", 6) != 0)
        return rt_fail("%s: member %s is not a .npy array (no \\x93NUMPY magic); expected np.savez output. "
                       "Fix: re-export the bundle.", path, member);
    if (d[6] == 1) {
        hlen = rd16(d + 8);
        off = 10;
    } else if (d[6] == 2 || d[6] == 3) {
        if (n < 12) return rt_fail("%s: member %s: truncated .npy header", path, member);
        hlen = rd32(d + 8);
        off = 12;
    } else {
        return rt_fail("%s: member %s has .npy format version %d; expected 1, 2 or 3", path, member, d[6]);
    }
    if (off + hlen > n) return rt_fail("%s: member %s: truncated .npy header", path, member);
    hdr = (char *)rt_malloc(hlen + 1);
    if (!hdr) return -1;
    memcpy(hdr, d + off, hlen);
    hdr[hlen] = '\0';
    off += hlen;
    v = dict_value(hdr, "descr");
    if (v && (strncmp(v, "'<f4'", 5) == 0 || strncmp(v, "'<f8'", 5) == 0)) {
        f8 = v[3] == '8';
    } else {
        rt_fail("%s: member %s has dtype %.12s; expected little-endian float32 or float64 ('<f4', '<f8'). "
                "Fix: re-export the bundle.", path, member, v ? v : "(none)");
        free(hdr);
        return -1;
    }
    v = dict_value(hdr, "fortran_order");
    if (!v || strncmp(v, "False", 5) != 0) {
        rt_fail("%s: member %s is not in C order (fortran_order must be False)", path, member);
        free(hdr);
        return -1;
    }
    v = dict_value(hdr, "shape");
    if (!v || *v != '(') {
        rt_fail("%s: member %s: no shape in the .npy header", path, member);
        free(hdr);
        return -1;
    }
    v++;
    a->ndim = 0;
    a->count = 1;
    for (;;) {
        char *end;
        unsigned long long dim;
        while (*v == ' ' || *v == ',') v++;
        if (*v == ')') break;
        if (*v < '0' || *v > '9' || a->ndim == NPZ_MAX_DIMS) {
            rt_fail("%s: member %s: cannot read the shape in the .npy header", path, member);
            free(hdr);
            return -1;
        }
        dim = strtoull(v, &end, 10);
        v = end;
        a->shape[a->ndim++] = (size_t)dim;
        if (dim && a->count > SIZE_MAX / 8 / dim) {
            rt_fail("%s: member %s: shape too large", path, member);
            free(hdr);
            return -1;
        }
        a->count *= (size_t)dim;
    }
    free(hdr);
    elem = f8 ? 8 : 4;
    if (n - off != (uint64_t)a->count * elem) /* np.save writes the header, then exactly the data */
        return rt_fail("%s: member %s holds %llu data bytes; its shape and dtype need %llu. The file is truncated "
                       "or its header was changed: re-export the bundle.", path, member, (unsigned long long)(n - off),
                       (unsigned long long)a->count * elem);
    a->data = (float *)rt_malloc(a->count * sizeof(float));
    if (!a->data) return -1;
    d += off;
    for (i = 0; i < a->count; i++) {
        if (f8) {
            double x;
            uint64_t u = rd64(d + 8 * i);
            memcpy(&x, &u, 8);
            a->data[i] = (float)x;
        } else {
            float x;
            uint32_t u = rd32(d + 4 * i);
            memcpy(&x, &u, 4);
            a->data[i] = x;
        }
        if (!isfinite(a->data[i])) {
            rt_fail("%s: member %s holds %s at flat index %zu; expected finite weights (float32: |x| <= 3.4e+38). "
                    "Fix: re-export the bundle.", path, member, isnan(a->data[i]) ? "NaN" : "inf or a value past "
                    "float32's range", i);
            free(a->data);
            a->data = NULL;
            return -1;
        }
    }
    return 0;
}

/* Pull 64-bit sizes/offset from a ZIP64 extra field where the 32-bit ones are 0xFFFFFFFF. */
static void zip64_extra(const unsigned char *ex, size_t n, uint64_t *usize, uint64_t *csize, uint64_t *offset) {
    size_t p = 0;
    while (p + 4 <= n) {
        uint16_t id = rd16(ex + p), len = rd16(ex + p + 2);
        if (p + 4 + len > n) return;
        if (id == 0x0001) {
            size_t q = p + 4, end = p + 4 + len;
            if (usize && *usize == 0xFFFFFFFFu && q + 8 <= end) *usize = rd64(ex + q), q += 8;
            if (csize && *csize == 0xFFFFFFFFu && q + 8 <= end) *csize = rd64(ex + q), q += 8;
            if (offset && *offset == 0xFFFFFFFFu && q + 8 <= end) *offset = rd64(ex + q);
            return;
        }
        p += 4 + len;
    }
}

int npz_read(const char *path, npz_file *out) {
    char *raw;
    size_t len, i, eocd = (size_t)-1;
    const unsigned char *z;
    uint64_t n_entries, cd_off, pos;
    memset(out, 0, sizeof *out);
    if (rt_read_file(path, &raw, &len)) return -1;
    z = (const unsigned char *)raw;
    if (len >= 22) {
        size_t lo = len >= 22 + 65535 ? len - 22 - 65535 : 0;
        for (i = len - 22 + 1; i-- > lo;)
            if (rd32(z + i) == 0x06054b50) {
                eocd = i;
                break;
            }
    }
    if (eocd == (size_t)-1) {
        free(raw);
        return rt_fail("%s is not a ZIP/.npz file (no end-of-central-directory record); expected the io.npz "
                       "np.savez wrote. Fix: re-export the bundle.", path);
    }
    n_entries = rd16(z + eocd + 10);
    cd_off = rd32(z + eocd + 16);
    if ((n_entries == 0xFFFF || cd_off == 0xFFFFFFFFu) && eocd >= 20 && rd32(z + eocd - 20) == 0x07064b50) {
        uint64_t loc = rd64(z + eocd - 20 + 8);
        if (loc + 56 <= len && rd32(z + loc) == 0x06064b50) {
            n_entries = rd64(z + loc + 32);
            cd_off = rd64(z + loc + 48);
        }
    }
    out->arrays = (npz_array *)rt_calloc(n_entries ? n_entries : 1, sizeof(npz_array));
    if (!out->arrays) {
        free(raw);
        return -1;
    }
    pos = cd_off;
    for (i = 0; i < n_entries; i++) {
        uint16_t method, flags, name_len, extra_len, comment_len;
        uint64_t csize, usize, loff, data;
        npz_array *a = &out->arrays[out->n];
        if (pos + 46 > len || rd32(z + pos) != 0x02014b50) {
            free(raw);
            npz_free(out);
            return rt_fail("%s: damaged ZIP central directory (entry %zu); re-export the bundle.", path, i);
        }
        flags = rd16(z + pos + 8);
        method = rd16(z + pos + 10);
        csize = rd32(z + pos + 20);
        usize = rd32(z + pos + 24);
        name_len = rd16(z + pos + 28);
        extra_len = rd16(z + pos + 30);
        comment_len = rd16(z + pos + 32);
        loff = rd32(z + pos + 42);
        if (pos + 46 + name_len + extra_len > len) {
            free(raw);
            npz_free(out);
            return rt_fail("%s: damaged ZIP central directory; re-export the bundle.", path);
        }
        zip64_extra(z + pos + 46 + name_len, extra_len, &usize, &csize, &loff);
        a->name = (char *)rt_malloc((size_t)name_len + 1);
        if (!a->name) {
            free(raw);
            npz_free(out);
            return -1;
        }
        memcpy(a->name, z + pos + 46, name_len);
        a->name[name_len] = '\0';
        out->n++;
        if (name_len > 4 && strcmp(a->name + name_len - 4, ".npy") == 0) a->name[name_len - 4] = '\0';
        if (method != 0 || (flags & 1)) {
            rt_fail("%s: member %s is %s; expected stored (uncompressed) members as np.savez writes them "
                    "(not np.savez_compressed). Fix: re-export the bundle.", path, a->name,
                    (flags & 1) ? "encrypted" : "compressed");
            free(raw);
            npz_free(out);
            return -1;
        }
        if (loff + 30 > len || rd32(z + loff) != 0x04034b50) {
            rt_fail("%s: damaged ZIP local header for %s; re-export the bundle.", path, a->name);
            free(raw);
            npz_free(out);
            return -1;
        }
        data = loff + 30 + rd16(z + loff + 26) + rd16(z + loff + 28);
        if (data > len || csize > len - data || csize != usize) {
            rt_fail("%s: member %s extends past the end of the file; the file is truncated.", path, a->name);
            free(raw);
            npz_free(out);
            return -1;
        }
        if (parse_npy(path, a->name, z + data, csize, a)) {
            free(raw);
            npz_free(out);
            return -1;
        }
        pos += 46 + (uint64_t)name_len + extra_len + comment_len;
    }
    free(raw);
    return 0;
}

void npz_free(npz_file *f) {
    size_t i;
    if (!f->arrays) return;
    for (i = 0; i < f->n; i++) {
        free(f->arrays[i].name);
        free(f->arrays[i].data);
    }
    free(f->arrays);
    f->arrays = NULL;
    f->n = 0;
}

const npz_array *npz_get(const npz_file *f, const char *name, size_t ndim, const char *path) {
    size_t i;
    for (i = 0; i < f->n; i++) {
        if (strcmp(f->arrays[i].name, name) == 0) {
            if (f->arrays[i].ndim != ndim) {
                rt_fail("%s: array %s has %zu dimensions; expected %zu. Fix: re-export the bundle.", path, name,
                        f->arrays[i].ndim, ndim);
                return NULL;
            }
            return &f->arrays[i];
        }
    }
    rt_fail("%s has no array %s; expected patch_w, patch_b, head_w, head_b (the Internal io file). "
            "Fix: re-export the bundle.", path, name);
    return NULL;
}
