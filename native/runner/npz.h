/* Reader for the arrays of an uncompressed .npz (np.savez): a ZIP archive of stored (method 0) .npy files.
 *
 * Only what bundles hold is accepted: little-endian float32/float64 ('<f4', '<f8'), C order, up to 8
 * dimensions, ZIP or ZIP64 records, no compression, no encryption. Anything else is a clear error. */
#ifndef ALIGNTS_NPZ_H
#define ALIGNTS_NPZ_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NPZ_MAX_DIMS 8

typedef struct {
    char *name;                 /* member name without ".npy" */
    size_t ndim;
    size_t shape[NPZ_MAX_DIMS];
    size_t count;               /* product of shape */
    float *data;                /* [count], converted to float32 */
} npz_array;

typedef struct {
    npz_array *arrays;
    size_t n;
} npz_file;

/* Read every member of path. 0 or -1 (rt_fail names the file and what is wrong). */
int npz_read(const char *path, npz_file *out);
void npz_free(npz_file *f);
/* The array `name` with ndim dimensions, or NULL after rt_fail (missing or another rank). */
const npz_array *npz_get(const npz_file *f, const char *name, size_t ndim, const char *path);

#ifdef __cplusplus
}
#endif

#endif
