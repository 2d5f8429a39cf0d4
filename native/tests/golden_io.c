#include "golden_io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int read_token(FILE *fp, char *buf, size_t cap) {
    int c;
    size_t k = 0;
    do {
        c = fgetc(fp);
    } while (c == ' ' || c == '\n' || c == '\t' || c == '\r');
    if (c == EOF) return -1;
    while (c != EOF && c != ' ' && c != '\n' && c != '\t' && c != '\r') {
        if (k + 1 < cap) buf[k++] = (char)c;
        c = fgetc(fp);
    }
    buf[k] = '\0';
    return 0;
}

int gt_load(const char *dir, const char *kernel, gt_file *out) {
    char path[1024], line[4096], tok[128];
    FILE *fp;
    int version = 0;
    size_t cap = 16;
    memset(out, 0, sizeof(*out));
    snprintf(path, sizeof(path), "%s/%s.txt", dir, kernel);
    fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "cannot open %s: %s. Fix: run `python scripts/golden.py`\n", path, strerror(errno));
        return -1;
    }
    if (!fgets(line, sizeof(line), fp) || sscanf(line, "alignts-golden %d %31s", &version, out->kernel) != 2
        || version != GT_FORMAT_VERSION || strcmp(out->kernel, kernel) != 0) {
        fprintf(stderr, "%s: expected header 'alignts-golden %d %s', got '%s'. Fix: regenerate with "
                "`python scripts/golden.py`\n", path, GT_FORMAT_VERSION, kernel, line);
        fclose(fp);
        return -1;
    }
    out->arrays = calloc(cap, sizeof(gt_array));
    while (fgets(line, sizeof(line), fp)) {
        gt_array *a;
        char kind[8];
        int used = 0, d;
        size_t k;
        if (line[0] == '#' || line[0] == '\n') continue;
        if (out->n == cap) {
            cap *= 2;
            out->arrays = realloc(out->arrays, cap * sizeof(gt_array));
        }
        a = &out->arrays[out->n];
        memset(a, 0, sizeof(*a));
        if (sscanf(line, "%63s %7s %d%n", a->name, kind, &a->ndim, &used) != 3 || a->ndim < 1
            || a->ndim > GT_MAX_DIMS) {
            fprintf(stderr, "%s: bad array header '%s'\n", path, line);
            fclose(fp);
            return -1;
        }
        a->is_int = strcmp(kind, "i64") == 0;
        a->n = 1;
        for (d = 0; d < a->ndim; d++) {
            unsigned long long v;
            int more = 0;
            if (sscanf(line + used, "%llu%n", &v, &more) != 1) {
                fprintf(stderr, "%s: bad dims in '%s'\n", path, line);
                fclose(fp);
                return -1;
            }
            used += more;
            a->dims[d] = (size_t)v;
            a->n *= (size_t)v;
        }
        if (a->is_int)
            a->i = malloc((a->n ? a->n : 1) * sizeof(int64_t));
        else
            a->f = malloc((a->n ? a->n : 1) * sizeof(double));
        for (k = 0; k < a->n; k++) {
            if (read_token(fp, tok, sizeof(tok)) != 0) {
                fprintf(stderr, "%s: %s ends after %zu of %zu values\n", path, a->name, k, a->n);
                fclose(fp);
                out->n++;
                return -1;
            }
            if (a->is_int)
                a->i[k] = strtoll(tok, NULL, 10);
            else
                a->f[k] = strtod(tok, NULL);
        }
        out->n++;
    }
    fclose(fp);
    return 0;
}

void gt_free(gt_file *f) {
    size_t k;
    for (k = 0; k < f->n; k++) {
        free(f->arrays[k].f);
        free(f->arrays[k].i);
    }
    free(f->arrays);
    memset(f, 0, sizeof(*f));
}

static gt_array *find(const gt_file *f, const char *name) {
    size_t k;
    for (k = 0; k < f->n; k++)
        if (strcmp(f->arrays[k].name, name) == 0) return &f->arrays[k];
    fprintf(stderr, "golden %s: no array '%s'. Fix: regenerate with `python scripts/golden.py`\n", f->kernel, name);
    exit(2);
}

const gt_array *gt_f64(const gt_file *f, const char *name) {
    const gt_array *a = find(f, name);
    if (a->is_int) {
        fprintf(stderr, "golden %s: '%s' is i64, expected f64\n", f->kernel, name);
        exit(2);
    }
    return a;
}

const gt_array *gt_i64(const gt_file *f, const char *name) {
    const gt_array *a = find(f, name);
    if (!a->is_int) {
        fprintf(stderr, "golden %s: '%s' is f64, expected i64\n", f->kernel, name);
        exit(2);
    }
    return a;
}

void gt_flip(gt_file *f, const char *name) {
    gt_array *a = find(f, name);
    size_t k = a->n / 2;
    if (a->is_int)
        a->i[k] += 1;
    else
        a->f[k] = a->f[k] * (1.0 + 1e-6) + 1e-6;
    printf("flipped %s[%zu]\n", name, k);
}

size_t gt_cmp_f64(const char *what, const double *got, const double *want, size_t n, double rtol, double atol) {
    size_t k, bad = 0;
    double worst = 0.0;
    for (k = 0; k < n; k++) {
        double g = got[k], w = want[k];
        int ok = (isnan(g) && isnan(w)) || (!isnan(g) && !isnan(w) && fabs(g - w) <= atol + rtol * fabs(w));
        if (!isnan(g) && !isnan(w) && fabs(g - w) > worst) worst = fabs(g - w);
        if (!ok) {
            if (bad < 5) fprintf(stderr, "  %s[%zu]: got %.17g, want %.17g\n", what, k, g, w);
            bad++;
        }
    }
    printf("%-28s %6zu values  %s (max abs diff %.3g)\n", what, n, bad ? "MISMATCH" : "ok", worst);
    return bad;
}

size_t gt_cmp_i64(const char *what, const int64_t *got, const int64_t *want, size_t n) {
    size_t k, bad = 0;
    for (k = 0; k < n; k++) {
        if (got[k] != want[k]) {
            if (bad < 5) fprintf(stderr, "  %s[%zu]: got %lld, want %lld\n", what, k, (long long)got[k],
                                 (long long)want[k]);
            bad++;
        }
    }
    printf("%-28s %6zu values  %s\n", what, n, bad ? "MISMATCH" : "ok");
    return bad;
}
