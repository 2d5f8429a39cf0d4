#include "safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rt_util.h"

static int bad(const char *path, const char *what) {
    return rt_fail("%s: %s; expected a safetensors file of float32 tensors written by alignts. Re-export the bundle.",
                   path, what);
}

int safetensors_read(const char *path, npz_file *out) {
    char *buf = NULL, err[160];
    size_t len, i, k, n = 0;
    uint64_t hlen = 0;
    json_value *hdr = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (rt_read_file(path, &buf, &len)) return -1;
    if (len < 8) {
        bad(path, "shorter than its 8-byte header length");
        goto done;
    }
    for (i = 0; i < 8; i++) hlen |= (uint64_t)(unsigned char)buf[i] << (8 * i);
    if (hlen > len - 8) {
        bad(path, "a header longer than the file");
        goto done;
    }
    if (json_parse(buf + 8, (size_t)hlen, &hdr, err, sizeof err) || hdr->type != JSON_OBJECT) {
        bad(path, "a header that is not a JSON object");
        goto done;
    }
    if (!(out->arrays = (npz_array *)rt_calloc(hdr->n ? hdr->n : 1, sizeof(npz_array)))) goto done;
    for (i = 0; i < hdr->n; i++) {
        const json_value *t = &hdr->items[i], *dt = json_get(t, "dtype"), *sh = json_get(t, "shape"),
                         *off = json_get(t, "data_offsets");
        npz_array *a = &out->arrays[n];
        size_t count = 1, a0, a1;
        if (!strcmp(hdr->keys[i], "__metadata__")) continue;
        if (!dt || dt->type != JSON_STRING || !sh || sh->type != JSON_ARRAY || sh->n > NPZ_MAX_DIMS || !off ||
            off->type != JSON_ARRAY || off->n != 2 || off->items[0].type != JSON_NUMBER ||
            off->items[1].type != JSON_NUMBER) {
            bad(path, "a tensor entry without dtype, shape (<= 8 dims) or data_offsets");
            goto done;
        }
        if (strcmp(dt->string, "F32") != 0) continue;
        for (k = 0; k < sh->n; k++) {
            if (sh->items[k].type != JSON_NUMBER || sh->items[k].number < 0 || sh->items[k].number > 1e12) {
                bad(path, "a negative or huge dimension");
                goto done;
            }
            a->shape[k] = (size_t)sh->items[k].number;
            count *= a->shape[k];
        }
        a0 = (size_t)off->items[0].number;
        a1 = (size_t)off->items[1].number;
        if (a1 < a0 || a1 - a0 != count * 4 || a1 > len - 8 - (size_t)hlen) {
            bad(path, "a tensor whose data_offsets do not match its shape or the file (truncated?)");
            goto done;
        }
        out->n = n + 1; /* freed by npz_free if what follows fails */
        if (!(a->name = (char *)rt_malloc(strlen(hdr->keys[i]) + 1)) ||
            !(a->data = (float *)rt_malloc((count ? count : 1) * sizeof(float))))
            goto done;
        strcpy(a->name, hdr->keys[i]);
        memcpy(a->data, buf + 8 + hlen + a0, count * 4); /* little-endian host (x86-64, aarch64) */
        a->ndim = sh->n;
        a->count = count;
        n++;
        out->n = n;
    }
    out->n = n;
    rc = 0;
done:
    json_free(hdr);
    free(buf);
    if (rc) npz_free(out);
    return rc;
}
