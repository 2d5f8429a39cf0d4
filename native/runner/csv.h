/* CSV reading for alignts-run: a header row, then one row per time step (the layout `alignts forecast`
 * reads). A column is numeric when every cell parses as a number or is empty / NaN / NA / null (missing);
 * other columns (dates, labels) are kept as text-only and skipped unless asked for. A column named like a
 * date (date, datetime, timestamp, time, ds) is the date column even when it holds numbers; two rows with the
 * same date text are refused. Fields may be quoted ("a,b", "" inside quotes) and are separated by commas, or by
 * semicolons, tabs or '|' when the header holds no comma. Rows are taken in file order (not sorted by date). */
#ifndef ALIGNTS_CSV_H
#define ALIGNTS_CSV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *name;
    int numeric;        /* every cell a number or missing */
    size_t bad_row;     /* numeric == 0: the first data row (1-based) that is not a number */
    char *bad_text;     /* ... and its text */
    double *values;     /* [n_rows]; NaN = missing; only when numeric */
    int is_date;        /* the date column (as alignts.data.load: the first named date, datetime, timestamp,
                           time or ds, case and spaces ignored): never a series by default */
    char **texts;       /* the date column only: [n_rows] cell texts (rows with the same date are refused) */
} csv_column;

typedef struct {
    csv_column *columns;
    size_t n_columns;
    size_t n_rows;
} csv_table;

/* 0 or -1 (rt_fail: unreadable file, no header, no rows, a row with another number of fields, ...). */
int csv_read(const char *path, csv_table *out);
void csv_free(csv_table *t);
/* Index of the column called name, or -1. */
long csv_find(const csv_table *t, const char *name);

#ifdef __cplusplus
}
#endif

#endif
