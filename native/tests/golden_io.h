/* Reader for the golden vector files written by scripts/golden.py, and the comparisons the tests use. */
#ifndef ALIGNTS_GOLDEN_IO_H
#define ALIGNTS_GOLDEN_IO_H

#include <stddef.h>
#include <stdint.h>

#define GT_FORMAT_VERSION 1
#define GT_MAX_DIMS 4

typedef struct {
    char name[64];
    int is_int;                 /* 1: i64 values in .i; 0: f64 values in .f */
    int ndim;
    size_t dims[GT_MAX_DIMS];
    size_t n;                   /* number of values */
    double *f;
    int64_t *i;
} gt_array;

typedef struct {
    char kernel[32];
    size_t n;
    gt_array *arrays;
} gt_file;

/* Load dir/<kernel>.txt; 0 on success, else prints why and returns -1. */
int gt_load(const char *dir, const char *kernel, gt_file *out);
void gt_free(gt_file *f);
/* The array called name; exits with a message if it is missing or of the wrong kind. */
const gt_array *gt_f64(const gt_file *f, const char *name);
const gt_array *gt_i64(const gt_file *f, const char *name);
/* Change one value of the named array (the middle one): ints += 1, floats * (1 + 1e-6) + 1e-6. */
void gt_flip(gt_file *f, const char *name);

/* Number of mismatches (printed, the first few in detail). Floats agree when both are NaN or
 * |got - want| <= atol + rtol * |want|. */
size_t gt_cmp_f64(const char *what, const double *got, const double *want, size_t n, double rtol, double atol);
size_t gt_cmp_i64(const char *what, const int64_t *got, const int64_t *want, size_t n);

#endif
