/* libalignts internals: the handle, the plan's workspace and the paradigms' entry points (api.c drives them). */
#ifndef ALIGNTS_LIB_H
#define ALIGNTS_LIB_H

#include <stddef.h>
#include <stdint.h>

#include "alignts.h"
#include "bundle.h"
#include "npz.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The plan's workspace: one block, carved by a paradigm's reserve function. With base == NULL ws_take only
 * counts (the first pass sizes the block, the second carves it, so the two can never disagree). */
typedef struct {
    char *base;
    size_t used, cap;
} ws;

/* n bytes, 16-aligned, zeroed (NULL while counting). */
void *ws_take(ws *w, size_t n);
#define WS_ARRAY(w, type, count) ((type *)ws_take((w), sizeof(type) * (size_t)(count)))

typedef struct paradigm_ops paradigm_ops;

struct alignts {
    char err[2048];
    int status; /* of the last failed call */
    alignts_options opt;
    char *variant_name, *backbone_dir; /* copies of the options' strings */
    bundle b;
    const bundle_variant *v;
    const paradigm_ops *ops;
    void *st; /* the paradigm's state */
    int planned;
    alignts_plan_params params;
    alignts_plan_info info;
    char *ws_block;
    /* training scaler (Internal, Bridging): NULL = none */
    double *scaler_mean, *scaler_std;
    /* set by a point paradigm's forecast: the float32 scaled contexts it read [S, L] (for conformal quantiles) */
    const double *prepared;
    double *ctx_mean, *ctx_std; /* [max_series] in the workspace */
    const char **columns;       /* config.columns when it names n_channels channels */
};

struct paradigm_ops {
    const char *name;
    /* after the manifest is read and the variant picked: config checks, file verification. */
    int (*open)(alignts *h);
    /* resolve params (0 = the bundle's), load or keep llama.cpp, fill info (not workspace_bytes). */
    int (*plan)(alignts *h, alignts_plan_params *p, alignts_plan_info *info);
    /* carve the forecast's buffers for info->max_series series. */
    void (*reserve)(alignts *h, ws *w);
    /* x [B, C, L] raw -> out [B, C, H] raw; Injective also q_out [B, C, H, n_q] (levels checked by api.c). */
    int (*forecast)(alignts *h, const double *x, size_t B, size_t C, size_t L, double *out, const double *q,
                    size_t n_q, double *q_out);
    int (*prompt)(alignts *h, const double *x, size_t L, int32_t *ids, size_t cap, size_t *n);
    void (*close)(alignts *h);
};

extern const paradigm_ops internal_ops, injective_ops, bridging_ops;

/* Shared helpers (api.c) */
/* A one-line note through the handle's log callback. */
void lib_note(const alignts *h, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* "series 3 (batch 1, channel 'y')" for messages: series s of [B, C]. */
const char *lib_series_label(const alignts *h, size_t s, size_t C, char *buf, size_t size);
/* Internal's and Bridging's input path: raw [S = B*C, L] -> training scaler -> float32 (checked per series) -> x,
   then RevIN + patching into patches/mean/std. 0, or -1 with rt_error() naming the series. */
int lib_scale_patchify(const alignts *h, const double *xin, size_t S, size_t C, size_t L, size_t P, size_t stride,
                       double eps, double *x, double *patches, double *mean, double *std, double *work);
/* The training scaler of config.scaler into h->scaler_mean/std for C channels (absent: NULL). 0 or -1. */
int lib_read_scaler(alignts *h, size_t C);
/* Verify a file a variant reads even when the variant's file list forgot it. */
int lib_verify_extra(const alignts *h, const char *rel);
/* The linear skip (fit internal|bridging --linear-skip) of npz f: skip_w [H, L], skip_b [H], checked against the
   head's H rows, L, and stride <= P (the runtimes read the context back from the patches). 0, or -1 (rt_fail). */
int lib_read_skip(const npz_file *f, const char *path, size_t H, size_t L, size_t stride, size_t P,
                  const npz_array **w, const npz_array **b);
/* Row k of the skip on one series: float32(skip_w[k] @ z + skip_b[k]), z the normalized context read back from
   the series' float32 patches pc [N, P]. */
double lib_skip_row(const npz_array *w, const npz_array *b, size_t k, const double *pc, size_t N, size_t P,
                    size_t stride);

#ifdef __cplusplus
}
#endif

#endif
