#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rt_util.h"
#include "runner.h"

int series_tail(const csv_table *t, const char *path, const char *name, size_t L, double *out) {
    long c = csv_find(t, name);
    const csv_column *col;
    size_t i;
    if (c < 0) {
        char names[600] = "";
        for (i = 0; i < t->n_columns; i++) {
            if (strlen(names) + strlen(t->columns[i].name) + 3 >= sizeof names) break;
            if (names[0]) strcat(names, ", ");
            strcat(names, t->columns[i].name);
        }
        return rt_fail("column '%s' is not in %s; it has: %s. Fix: pass names from that list (case matters).", name,
                       path, names);
    }
    col = &t->columns[c];
    if (!col->numeric)
        return rt_fail("column '%s' of %s is not numeric: data row %zu holds '%.40s'. Fix: clean that column or "
                       "choose another with --column.", name, path, col->bad_row, col->bad_text ? col->bad_text : "");
    if (t->n_rows < L)
        return rt_fail("expected at least L=%zu time steps in %s; got %zu rows. Fix: pass a longer history (the "
                       "last %zu points are used) or a shorter --context.", L, path, t->n_rows, L);
    for (i = 0; i < L; i++) {
        double v = col->values[t->n_rows - L + i];
        if (!isfinite(v))
            return rt_fail("column '%s' of %s has a missing value at data row %zu, inside the last L=%zu points; "
                           "expected finite numbers. Fix: fill the gaps first (e.g. interpolate).", name, path,
                           t->n_rows - L + i + 1, L);
        out[i] = v;
    }
    return 0;
}

int series_check_float32(const double *raw, const double *x, size_t L, const char *name, const char *path) {
    double mag = 0.0, raw_mag = 0.0, raw_lo = INFINITY, raw_hi = -INFINITY;
    float f_lo = INFINITY, f_hi = -INFINITY;
    size_t i;
    for (i = 0; i < L; i++) {
        float f = (float)x[i];
        if (!isfinite(x[i]) || fabs(x[i]) > FLT_MAX) {
            char as_read[64] = "";
            if (raw != x) snprintf(as_read, sizeof as_read, " (%.17g before the training scaler)", raw[i]);
            return rt_fail("column '%s' of %s: the value %.17g%s among its last L=%zu points is outside float32's "
                           "range (|x| <= 3.4e+38): the models compute in float32. Fix: rescale the series (e.g. "
                           "divide by a power of 10) and undo that on the forecast.", name, path, x[i], as_read, L);
        }
        mag = fmax(mag, fabs(x[i]));
        f_lo = fminf(f_lo, f);
        f_hi = fmaxf(f_hi, f);
        raw_mag = fmax(raw_mag, fabs(raw[i]));
        raw_lo = fmin(raw_lo, raw[i]);
        raw_hi = fmax(raw_hi, raw[i]);
    }
    if (mag > 0.0 && mag < FLT_MIN)
        return rt_fail("column '%s' of %s: its last L=%zu values have magnitude %.17g, below float32's smallest "
                       "normal number 1.18e-38: the models compute in float32, where they underflow to 0 and the "
                       "forecast would be meaningless. Fix: rescale the series (e.g. multiply by a power of 10) and "
                       "undo that on the forecast.", name, path, L, mag);
    if (raw_hi - raw_lo > FLT_EPSILON * raw_mag && f_lo == f_hi)
        return rt_fail("column '%s' of %s: its last L=%zu values vary (range %.17g) but are constant in float32 "
                       "after the bundle's training scaler: the model would see a flat line. Expected values near "
                       "the training data's scale. Fix: rescale the series and undo that on the forecast.", name,
                       path, L, raw_hi - raw_lo);
    return 0;
}
