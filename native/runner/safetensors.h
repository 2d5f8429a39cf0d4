/* Reader for a safetensors file (the Bridging bundle's trained tensors, torch_trained.safetensors): an 8-byte
 * little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the data. F32 tensors
 * only (what alignts writes); the arrays come back as npz_array (npz.h) so npz_get reads them. */
#ifndef ALIGNTS_SAFETENSORS_H
#define ALIGNTS_SAFETENSORS_H

#include "npz.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every F32 tensor of path (others are skipped). 0 or -1 (rt_fail). Free with npz_free. */
int safetensors_read(const char *path, npz_file *out);

#ifdef __cplusplus
}
#endif

#endif
