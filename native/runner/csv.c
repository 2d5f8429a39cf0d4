#include "csv.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_util.h"

/* The field separator: ',' unless the header line has none and holds ';', a tab or '|' (the order
 * alignts.data.load prefers them in). */
static char detect_sep(const char *s, size_t len, size_t pos) {
    static const char seps[] = ",;\t|";
    int seen[4] = {0, 0, 0, 0}, quoted = 0;
    size_t k;
    for (; pos < len && (quoted || (s[pos] != '\n' && s[pos] != '\r')); pos++) {
        if (s[pos] == '"') quoted = !quoted;
        if (!quoted)
            for (k = 0; k < 4; k++) seen[k] |= s[pos] == seps[k];
    }
    for (k = 0; k < 4; k++)
        if (seen[k]) return seps[k];
    return ',';
}

static const char *sep_name(char sep) {
    return sep == ',' ? "comma" : sep == ';' ? "semicolon" : sep == '\t' ? "tab" : "'|'";
}

/* Split one record starting at *pos into fields (malloc'd copies); advances *pos past the line end. */
static int split_record(const char *path, size_t line, const char *s, size_t len, char sep, size_t *pos,
                        char ***fields, size_t *n_fields) {
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
                        if (p < len && s[p] != sep && s[p] != '\n' && s[p] != '\r') {
                            free(buf);
                            rt_fail("%s line %zu: text after a closing quote; expected a %s or the line end.",
                                    path, line, sep_name(sep));
                            goto fail;
                        }
                        continue;
                    }
                } else {
                    p++;
                }
            } else {
                if (c == sep || c == '\n' || c == '\r') break;
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
        if (p < len && s[p] == sep) {
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

static char *copy_text(const char *t) {
    size_t n = strlen(t) + 1;
    char *p = (char *)rt_malloc(n);
    if (p) memcpy(p, t, n);
    return p;
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

typedef struct {
    const char *text;
    size_t row;
} date_ref;

static int cmp_date(const void *a, const void *b) {
    const date_ref *x = (const date_ref *)a, *y = (const date_ref *)b;
    int c = strcmp(x->text, y->text);
    return c ? c : (x->row > y->row) - (x->row < y->row);
}

/* As alignts.data.load: one row per time step. Two rows with the same date text are refused (the earliest pair
 * is named); empty cells are not compared. */
static int check_unique_dates(const char *path, const csv_column *col, size_t n_rows) {
    date_ref *r = (date_ref *)rt_malloc((n_rows ? n_rows : 1) * sizeof *r);
    size_t i, m = 0, best = (size_t)-1;
    if (!r) return -1;
    for (i = 0; i < n_rows; i++)
        if (col->texts[i] && col->texts[i][0]) {
            r[m].text = col->texts[i];
            r[m++].row = i;
        }
    qsort(r, m, sizeof *r, cmp_date);
    for (i = 1; i < m; i++)
        if (strcmp(r[i - 1].text, r[i].text) == 0 && (best == (size_t)-1 || r[i - 1].row < r[best].row)) best = i - 1;
    if (best != (size_t)-1)
        rt_fail("%s: date column '%s' repeats '%.40s' at data rows %zu and %zu; expected one row per time step. "
                "Fix: remove or aggregate the duplicate rows.", path, col->name, r[best].text, r[best].row + 1,
                r[best + 1].row + 1);
    free(r);
    return best == (size_t)-1 ? 0 : -1;
}

int csv_read(const char *path, csv_table *out) {
    char *text, **fields = NULL, sep;
    size_t len, pos = 0, n_fields, line = 1, c, cap_rows = 256;
    long date_col = -1;
    memset(out, 0, sizeof *out);
    if (rt_read_file(path, &text, &len)) return -1;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) pos = 3;
    if (pos >= len) {
        free(text);
        return rt_fail("%s is empty; expected a CSV with a header row and one row per time step.", path);
    }
    sep = detect_sep(text, len, pos);
    if (split_record(path, line, text, len, sep, &pos, &fields, &n_fields)) {
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
            out->columns[c].texts = (char **)rt_calloc(cap_rows, sizeof(char *));
            if (!out->columns[c].texts) {
                free(text);
                csv_free(out);
                return -1;
            }
            date_col = (long)c;
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
        if (split_record(path, line, text, len, sep, &pos, &fields, &n_fields)) {
            free(text);
            csv_free(out);
            return -1;
        }
        if (n_fields != out->n_columns) {
            rt_fail("%s line %zu has %zu fields; the header has %zu (%s-separated). Fix: give every row one value "
                    "per header column.", path, line, n_fields, out->n_columns, sep_name(sep));
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
            if (date_col >= 0) {
                char **nt = (char **)realloc(out->columns[date_col].texts, cap_rows * sizeof(char *));
                if (!nt) {
                    rt_fail("out of memory reading %s", path);
                    free_fields(fields, n_fields);
                    free(text);
                    csv_free(out);
                    return -1;
                }
                out->columns[date_col].texts = nt;
            }
        }
        for (c = 0; c < n_fields; c++) {
            csv_column *col = &out->columns[c];
            double v = NAN;
            if (col->numeric && parse_number(fields[c], &v) != 0) {
                col->numeric = 0;
                col->bad_row = out->n_rows + 1;
                col->bad_text = col->texts ? copy_text(fields[c]) : fields[c];
                if (!col->texts) fields[c] = NULL;
            }
            col->values[out->n_rows] = v;
            if (col->texts) {
                col->texts[out->n_rows] = fields[c];
                fields[c] = NULL;
            }
        }
        out->n_rows++;
        free_fields(fields, n_fields);
    }
    free(text);
    if (out->n_rows == 0) {
        csv_free(out);
        return rt_fail("%s has a header but no rows; expected one row per time step.", path);
    }
    if (date_col >= 0 && check_unique_dates(path, &out->columns[date_col], out->n_rows)) {
        csv_free(out);
        return -1;
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
        if (t->columns[c].texts) {
            size_t r;
            for (r = 0; r < t->n_rows; r++) free(t->columns[c].texts[r]);
            free(t->columns[c].texts);
        }
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
