/* LLMTime digit codec; see alignts/kernels/digits.py (same rules, same arithmetic). */
#include <math.h>

#include "alignts_kernels.h"

enum { C_DSEP = 10, C_MINUS = 11, C_VSEP = 12, C_END = 13, C_OTHER = 14, C_PAD = 15 };

static const int64_t POW10[AT_CODEC_MAX_DIGITS + 1] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL, 100000000LL, 1000000000LL,
    10000000000LL, 100000000000LL, 1000000000000LL, 10000000000000LL, 100000000000000LL,
    1000000000000000LL, 10000000000000000LL, 100000000000000000LL, 1000000000000000000LL};

static int in_list(int64_t id, const int64_t *list, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (list[i] == id) return 1;
    return 0;
}

static int lists_meet(const int64_t *a, size_t na, const int64_t *b, size_t nb) {
    size_t i;
    for (i = 0; i < na; i++)
        if (in_list(a[i], b, nb)) return 1;
    return 0;
}

static int all_nonneg(const int64_t *a, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (a[i] < 0) return 0;
    return 1;
}

int at_codec_validate(const at_codec_table *t) {
    size_t i, j;
    if (!t) return AT_ERR_ARG;
    if (t->n_value_sep == 0 || !t->value_sep) return AT_ERR_TABLE;
    if ((t->n_digit_sep && !t->digit_sep) || (t->n_end_ids && !t->end_ids)) return AT_ERR_TABLE;
    for (i = 0; i < 10; i++) {
        if (t->digit_ids[i] < 0) return AT_ERR_TABLE;
        for (j = i + 1; j < 10; j++)
            if (t->digit_ids[i] == t->digit_ids[j]) return AT_ERR_TABLE;
    }
    if (t->minus_id < 0 || !all_nonneg(t->value_sep, t->n_value_sep) || !all_nonneg(t->digit_sep, t->n_digit_sep)
        || !all_nonneg(t->end_ids, t->n_end_ids))
        return AT_ERR_TABLE;
    if (in_list(t->minus_id, t->digit_ids, 10) || lists_meet(t->value_sep, t->n_value_sep, t->digit_ids, 10)
        || lists_meet(t->digit_sep, t->n_digit_sep, t->digit_ids, 10)
        || lists_meet(t->end_ids, t->n_end_ids, t->digit_ids, 10))
        return AT_ERR_TABLE;
    if (in_list(t->minus_id, t->value_sep, t->n_value_sep) || in_list(t->minus_id, t->digit_sep, t->n_digit_sep)
        || in_list(t->minus_id, t->end_ids, t->n_end_ids))
        return AT_ERR_TABLE;
    if (lists_meet(t->end_ids, t->n_end_ids, t->value_sep, t->n_value_sep)
        || lists_meet(t->end_ids, t->n_end_ids, t->digit_sep, t->n_digit_sep))
        return AT_ERR_TABLE;
    for (i = 0; i < t->n_value_sep; i++)
        if (!in_list(t->value_sep[i], t->digit_sep, t->n_digit_sep)) return AT_OK;
    return AT_ERR_TABLE; /* every value_sep id is a digit_sep id: no value could end */
}

static int n_digits(int64_t v) {
    int nd = 1;
    while (nd < AT_CODEC_MAX_DIGITS + 1 && v >= POW10[nd]) nd++;
    return nd;
}

static int check_args(const double *x, size_t n_series, size_t len, const at_codec_table *table, int precision) {
    size_t i;
    double p_scale;
    int rc;
    if (!x || precision < 0 || precision > AT_CODEC_MAX_DIGITS - 3) return AT_ERR_ARG;
    rc = at_codec_validate(table);
    if (rc != AT_OK) return rc;
    p_scale = pow(10.0, precision);
    for (i = 0; i < n_series * len; i++) {
        double a = fabs(x[i]);
        if (!isfinite(x[i])) return AT_ERR_NONFINITE;
        if (a >= 1e15 || a * p_scale >= 1e18) return AT_ERR_RANGE;
    }
    return AT_OK;
}

/* Ids one value takes: (minus) + digits of floor(|x| * p_scale) + separators between them + value_sep. */
static size_t value_len(double xv, double p_scale, const at_codec_table *t) {
    size_t nd = (size_t)n_digits((int64_t)floor(fabs(xv) * p_scale));
    return (xv < 0) + nd + (nd - 1) * t->n_digit_sep + t->n_value_sep;
}

/* Write one value's ids at out; returns how many (value_len). */
static size_t write_value(double xv, double p_scale, const at_codec_table *t, int64_t *out) {
    int64_t v = (int64_t)floor(fabs(xv) * p_scale);
    size_t nd = (size_t)n_digits(v), k, j, step = 1 + t->n_digit_sep, pos = 0, q;
    if (xv < 0) out[pos++] = t->minus_id;
    /* digits from the last one backwards, each followed by the digit separators (but the last) */
    q = pos + (nd - 1) * step;
    for (k = 0; k < nd; k++) {
        out[q] = t->digit_ids[v % 10];
        v /= 10;
        if (k > 0)
            for (j = 0; j < t->n_digit_sep; j++) out[q + 1 + j] = t->digit_sep[j];
        q -= step;
    }
    pos += nd + (nd - 1) * t->n_digit_sep;
    for (j = 0; j < t->n_value_sep; j++) out[pos++] = t->value_sep[j];
    return pos;
}

int at_encode_lengths(const double *x, size_t n_series, size_t len, const at_codec_table *table, int precision,
                      int64_t *lengths) {
    size_t s, t;
    double p_scale;
    int rc = check_args(x, n_series, len, table, precision);
    if (rc != AT_OK) return rc;
    if (!lengths) return AT_ERR_ARG;
    p_scale = pow(10.0, precision);
    for (s = 0; s < n_series; s++) {
        int64_t total = 0;
        for (t = 0; t < len; t++) total += (int64_t)value_len(x[s * len + t], p_scale, table);
        lengths[s] = total;
    }
    return AT_OK;
}

int at_encode_digits(const double *x, size_t n_series, size_t len, const at_codec_table *table, int precision,
                     int64_t *ids, size_t row_len, int64_t *lengths) {
    size_t s, t;
    double p_scale;
    int rc = at_encode_lengths(x, n_series, len, table, precision, lengths);
    if (rc != AT_OK) return rc;
    if (!ids) return AT_ERR_ARG;
    for (s = 0; s < n_series; s++)
        if (lengths[s] > (int64_t)row_len) return AT_ERR_SPACE;
    p_scale = pow(10.0, precision);
    for (s = 0; s < n_series; s++) {
        int64_t *out = ids + s * row_len;
        size_t pos = 0;
        for (t = 0; t < len; t++) pos += write_value(x[s * len + t], p_scale, table, out + pos);
        for (; pos < row_len; pos++) out[pos] = -1;
    }
    return AT_OK;
}

int at_encode_fixed(const double *x, size_t k, double offset, double scale, double lim, int precision,
                    const at_codec_table *table, int64_t *ids, size_t cap, int64_t *lengths, size_t *n_ids) {
    size_t i, pos = 0;
    double p_scale;
    int rc;
    if ((!x && k) || !table || !ids || (!lengths && k) || !n_ids || precision < 0 || precision > 15) return AT_ERR_ARG;
    rc = at_codec_validate(table);
    if (rc != AT_OK) return rc;
    p_scale = pow(10.0, precision);
    if (!isfinite(offset) || !isfinite(scale) || !(scale > 0) || !(lim > 0) || !(lim < 1e15) || lim * p_scale >= 1e18)
        return AT_ERR_ARG;
    for (i = 0; i < k; i++)
        if (!isfinite(x[i])) return AT_ERR_NONFINITE;
    for (i = 0; i < k; i++) {
        double z = (x[i] - offset) / scale;
        if (z > lim)
            z = lim;
        else if (z < -lim)
            z = -lim;
        if (pos + value_len(z, p_scale, table) > cap) return AT_ERR_SPACE;
        lengths[i] = (int64_t)write_value(z, p_scale, table, ids + pos);
        pos += (size_t)lengths[i];
    }
    *n_ids = pos;
    return AT_OK;
}

/* Class of a token; the precedence mirrors the Python lookup table: digit, minus, digit_sep, value_sep,
 * end, other. */
static int token_class(int64_t tok, const at_codec_table *t) {
    int k;
    if (tok < 0) return C_PAD;
    for (k = 0; k < 10; k++)
        if (t->digit_ids[k] == tok) return k;
    if (tok == t->minus_id) return C_MINUS;
    if (in_list(tok, t->digit_sep, t->n_digit_sep)) return C_DSEP;
    if (in_list(tok, t->value_sep, t->n_value_sep)) return C_VSEP;
    if (in_list(tok, t->end_ids, t->n_end_ids)) return C_END;
    return C_OTHER;
}

int at_decode_digits(const int64_t *ids, size_t n_series, size_t row_len, const int64_t *lengths,
                     const at_codec_table *table, int precision, size_t horizon, double *values,
                     int64_t *n_parsed) {
    size_t s, t, h;
    double p_scale;
    int rc;
    if (!ids || !values || !n_parsed || horizon == 0 || precision < 0 || precision > AT_CODEC_MAX_DIGITS - 3)
        return AT_ERR_ARG;
    rc = at_codec_validate(table);
    if (rc != AT_OK) return rc;
    p_scale = pow(10.0, precision);
    for (s = 0; s < n_series; s++) {
        const int64_t *row = ids + s * row_len;
        double *out = values + s * horizon;
        size_t end = row_len, n = 0;
        int64_t acc = 0;
        int nd = 0, neg = 0, commit = 0;
        if (lengths) {
            if (lengths[s] < 0 || lengths[s] > (int64_t)row_len) return AT_ERR_ARG;
            end = (size_t)lengths[s];
        }
        for (t = 0; t < end; t++) {
            int c = token_class(row[t], table);
            if (c < 10) {
                if (nd == AT_CODEC_MAX_DIGITS) {
                    nd = 0;
                    break;
                }
                acc = acc * 10 + c;
                nd++;
            } else if (c == C_DSEP) {
                continue;
            } else if (c == C_VSEP) {
                if (nd > 0) {
                    double val = ((double)acc + 0.5) / p_scale;
                    out[n++] = neg ? -val : val;
                    if (n == horizon) break;
                }
                acc = 0;
                nd = 0;
                neg = 0;
            } else if (c == C_MINUS) {
                if (nd > 0 || neg) {
                    commit = 1;
                    break;
                }
                neg = 1;
            } else if (c == C_PAD) {
                break;
            } else { /* end id or a token outside the table */
                commit = 1;
                break;
            }
        }
        if (commit && nd > 0) {
            double val = ((double)acc + 0.5) / p_scale;
            out[n++] = neg ? -val : val;
        }
        n_parsed[s] = (int64_t)n;
        for (h = n; h < horizon; h++) out[h] = n > 0 ? out[n - 1] : 0.0;
    }
    return AT_OK;
}
