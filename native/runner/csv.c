#include "csv.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_util.h"

/* Split one record starting at *pos into fields (malloc'd copies); advances *pos past the line end. */
static int split_record(const char *path, size_t line, const char *s, size_t len, size_t *pos, char ***fields,
                        size_t *n_fields) {
    size_t cap = 8, n = 0, p = *pos;
    char **f = (char **)rt_malloc(cap * sizeof *f);
    if (!f) return -1;
    for (;;) {
        size_t flen = 0, fcap = 16;
        char *buf = (char *)rt_malloc(fcap);
        int quoted = 0;
        if (!buf) goto fail;
        if (p < len && s[p] == '"') {
            quoted = 1;
            p++;
        }
        for (;;) {
            char c;
            if (p >= len) {
                if (quoted) {
                    free(buf);
                    rt_fail("%s line %zu: a quoted field is not closed (missing '\"'). Fix: close the quotes.",
                            path, line);
                    goto fail;
                }
                break;
            }
            c = s[p];
            if (quoted) {
                if (c == '"') {
                    if (p + 1 < len && s[p + 1] == '"') {
                        p += 2;
                        c = '"';
                    } else {
                        p++;
                        quoted = 0;
                        if (p < len && s[p] != ',' && s[p] != '\n' && s[p] != '\r') {
                            free(buf);
                            rt_fail("%s line %zu: text after a closing quote; expected ',' or the line end.",
                                    path, line);
                            goto fail;
                        }
                        continue;
                    }
                } else {
                    p++;
                }
            } else {
                if (c == ',' || c == '\n' || c == '\r') break;
                if (c == '\0') {
                    free(buf);
                    rt_fail("%s line %zu: a NUL byte; expected a text CSV file.", path, line);
                    goto fail;
                }
                p++;
            }
            if (flen + 2 > fcap) {
                char *nb = (char *)realloc(buf, fcap * 2);
                if (!nb) {
                    free(buf);
                    rt_fail("out of memory reading %s", path);
                    goto fail;
                }
                buf = nb;
                fcap *= 2;
            }
            buf[flen++] = c;
        }
        buf[flen] = '\0';
        if (n == cap) {
            char **nf = (char **)realloc(f, cap * 2 * sizeof *f);
            if (!nf) {
                free(buf);
                rt_fail("out of memory reading %s", path);
                goto fail;
            }
            f = nf;
            cap *= 2;
        }
        f[n++] = buf;
        if (p < len && s[p] == ',') {
            p++;
            continue;
        }
        break;
    }
    if (p < len && s[p] == '\r') p++;
    if (p < len && s[p] == '\n') p++;
    *pos = p;
    *fields = f;
    *n_fields = n;
    return 0;
fail:
    while (n) free(f[--n]);
    free(f);
    return -1;
}

static void free_fields(char **f, size_t n) {
    while (n) free(f[--n]);
    free(f);
}

static int is_missing(const char *t) {
    static const char *names[] = {"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None", "-nan", "#N/A"};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(t, names[i]) == 0) return 1;
    return 0;
}

/* Parse a number as pandas does for plain decimal text; leading/trailing spaces allowed. 0 or -1. */
static int parse_number(const char *t, double *out) {
    char *end;
    const char *a = t;
    size_t n;
    char tmp[128];
    while (*a == ' ' || *a == '\t') a++;
    n = strlen(a);
    while (n && (a[n - 1] == ' ' || a[n - 1] == '\t')) n--;
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, a, n);
    tmp[n] = '\0';
    if (is_missing(tmp)) {
        *out = NAN;
        return 0;
    }
    if (!(isdigit((unsigned char)tmp[0]) || ((tmp[0] == '-' || tmp[0] == '+' || tmp[0] == '.') && n > 1)))
        return -1; /* no "inf", hex or other strtod extras */
    *out = strtod(tmp, &end);
    if (*end != '\0') return -1;
    return 0;
}

int csv_read(const char *path, csv_table *out) {
    char *text, **fields = NULL;
    size_t len, pos = 0, n_fields, line = 1, c, cap_rows = 256;
    memset(out, 0, sizeof *out);
    if (rt_read_file(path, &text, &len)) return -1;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) pos = 3;
    if (pos >= len) {
        free(text);
        return rt_fail("%s is empty; expected a CSV with a header row and one row per time step.", path);
    }
    if (split_record(path, line, text, len, &pos, &fields, &n_fields)) {
        free(text);
        return -1;
    }
    out->columns = (csv_column *)rt_calloc(n_fields, sizeof(csv_column));
    if (!out->columns) {
        free_fields(fields, n_fields);
        free(text);
        return -1;
    }
    out->n_columns = n_fields;
    for (c = 0; c < n_fields; c++) {
        out->columns[c].name = fields[c];
        out->columns[c].numeric = 1;
        out->columns[c].values = (double *)rt_malloc(cap_rows * sizeof(double));
        if (!out->columns[c].values) {
            free(fields);
            free(text);
            csv_free(out);
            return -1;
        }
    }
    free(fields); /* the names now belong to the columns */
    for (c = 0; c < n_fields; c++) {
        static const char *dates[] = {"date", "datetime", "timestamp", "time", "ds"};
        const char *a = out->columns[c].name;
        size_t n, k, d;
        int hit = 0;
        while (isspace((unsigned char)*a)) a++;
        n = strlen(a);
        while (n && isspace((unsigned char)a[n - 1])) n--;
        for (d = 0; d < 5 && !hit; d++) {
            if (strlen(dates[d]) != n) continue;
            for (k = 0; k < n && tolower((unsigned char)a[k]) == dates[d][k]; k++) {
            }
            hit = k == n;
        }
        if (hit) {
            out->columns[c].is_date = 1;
            break;
        }
    }
    while (pos < len) {
        line++;
        if (text[pos] == '\n' || text[pos] == '\r') { /* blank line */
            if (text[pos] == '\r') pos++;
            if (pos < len && text[pos] == '\n') pos++;
            continue;
        }
        if (split_record(path, line, text, len, &pos, &fields, &n_fields)) {
            free(text);
            csv_free(out);
            return -1;
        }
        if (n_fields != out->n_columns) {
            rt_fail("%s line %zu has %zu fields; the header has %zu. Fix: give every row one value per header "
                    "column (comma-separated).", path, line, n_fields, out->n_columns);
            free_fields(fields, n_fields);
            free(text);
            csv_free(out);
            return -1;
        }
        if (out->n_rows == cap_rows) {
            cap_rows *= 2;
            for (c = 0; c < out->n_columns; c++) {
                double *nv = (double *)realloc(out->columns[c].values, cap_rows * sizeof(double));
                if (!nv) {
                    rt_fail("out of memory reading %s", path);
                    free_fields(fields, n_fields);
                    free(text);
                    csv_free(out);
                    return -1;
                }
                out->columns[c].values = nv;
            }
        }
        for (c = 0; c < n_fields; c++) {
            csv_column *col = &out->columns[c];
            double v = NAN;
            if (col->numeric && parse_number(fields[c], &v) != 0) {
                col->numeric = 0;
                col->bad_row = out->n_rows + 1;
                col->bad_text = fields[c];
                fields[c] = NULL;
            }
            col->values[out->n_rows] = v;
        }
        out->n_rows++;
        free_fields(fields, n_fields);
    }
    free(text);
    if (out->n_rows == 0) {
        csv_free(out);
        return rt_fail("%s has a header but no rows; expected one row per time step.", path);
    }
    return 0;
}

void csv_free(csv_table *t) {
    size_t c;
    if (!t->columns) return;
    for (c = 0; c < t->n_columns; c++) {
        free(t->columns[c].name);
        free(t->columns[c].values);
        free(t->columns[c].bad_text);
    }
    free(t->columns);
    memset(t, 0, sizeof *t);
}

long csv_find(const csv_table *t, const char *name) {
    size_t c;
    for (c = 0; c < t->n_columns; c++)
        if (strcmp(t->columns[c].name, name) == 0) return (long)c;
    return -1;
}
