#include <math.h>
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
