/* A float32 .npy table (np.save: '<f4', C order, 2-D) memory-mapped read-only: the Bridging backbone's
 * word-embedding table, of which only the rows a prompt looks up are ever read. */
#ifndef ALIGNTS_NPY_H
#define ALIGNTS_NPY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    void *map;
    size_t map_len;
    const float *data; /* [rows, cols] */
    size_t rows, cols;
} npy_table;

/* 0 or -1 (rt_fail names the file and what is wrong). */
int npy_table_open(const char *path, npy_table *t);
void npy_table_close(npy_table *t);

#ifdef __cplusplus
}
#endif

#endif
