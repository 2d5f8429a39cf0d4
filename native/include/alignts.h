/* libalignts: forecast with an exported alignts bundle (Internal, Bridging or Injective paradigm, GGUF variant)
 * from C, through llama.cpp. The library a device application links; `alignts-run` is a CLI over it.
 *
 *     alignts *h;
 *     alignts_options o;
 *     alignts_plan_params p;
 *     alignts_plan_info info;
 *     alignts_options_init(&o);
 *     if (alignts_open("bundle/", &o, &h) != ALIGNTS_OK) { puts(alignts_last_error(h)); alignts_close(h); }
 *     alignts_plan_params_init(&p);                 (0 fields: the bundle's own settings)
 *     alignts_plan(h, &p, &info);                   (loads the model, allocates info.workspace_bytes)
 *     alignts_forecast(h, x, B, C, L, out, NULL, 0, NULL);   (x [B, C, L] raw -> out [B, C, H] raw)
 *     alignts_close(h);
 *
 * Units: x and out are raw units (the bundle's training scaler is applied inside), float64, C order.
 *
 * Memory: alignts_open reads and checks the manifest and hashes the files it will read (sha256); alignts_plan
 * loads llama.cpp's model and context (mmap'd weights, KV cache) and allocates one workspace of exactly
 * info.workspace_bytes for up to info.max_series series per call; alignts_forecast allocates nothing of its own
 * (llama.cpp may grow its compute buffers on the first decode of a new shape).
 *
 * Threads: no function keeps process-wide state of its own (each handle holds its error message, settings,
 * model and workspace); llama.cpp's backend is initialised once per process (guarded) and its log callback is
 * process-wide (messages are kept per thread). Per call:
 *   alignts_open, alignts_close            safe from any thread, on different handles at once;
 *   alignts_plan, alignts_forecast,
 *   alignts_prompt                         one call at a time per handle (a handle owns one llama.cpp context);
 *                                          different handles in parallel are safe;
 *   alignts_last_error, alignts_info       as alignts_forecast: not during another call on the same handle;
 *   alignts_version, alignts_status_str,
 *   alignts_options_init,
 *   alignts_plan_params_init               pure, any thread.
 * Errors: every call returns ALIGNTS_OK (0) or a negative alignts_status; alignts_last_error(h) then says what
 * was expected, what came and the fix (a NUL-terminated string owned by h, valid until the next call on h).
 * alignts_open sets *out even when it fails (unless out is NULL or it runs out of memory), so the message
 * can be read; alignts_close(NULL) is a no-op. */
#ifndef ALIGNTS_H
#define ALIGNTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(ALIGNTS_SHARED)
#define ALIGNTS_API __declspec(dllexport)
#elif defined(__GNUC__)
#define ALIGNTS_API __attribute__((visibility("default")))
#else
#define ALIGNTS_API
#endif

#define ALIGNTS_VERSION_MAJOR 0
#define ALIGNTS_VERSION_MINOR 1
#define ALIGNTS_VERSION_PATCH 0

typedef enum {
    ALIGNTS_OK = 0,
    ALIGNTS_ERR_ARG = -1,      /* a NULL pointer, a size out of range, a call out of order (forecast before plan) */
    ALIGNTS_ERR_BUNDLE = -2,   /* manifest, file, seal (size / sha256) or model file problem */
    ALIGNTS_ERR_INPUT = -3,    /* x: non-finite values, outside float32, too short, ... */
    ALIGNTS_ERR_MEMORY = -4,   /* out of memory */
    ALIGNTS_ERR_RUNTIME = -5   /* llama.cpp failed, or the forecast came out non-finite */
} alignts_status;

typedef struct alignts alignts; /* opaque */

/* Called with one line (no newline) for warnings and notes (a prompt cut to fit the LM's window, ...). */
typedef void (*alignts_log_fn)(void *user, const char *line);

typedef struct {
    const char *variant;      /* GGUF variant name; NULL = the first gguf-* variant of the manifest */
    const char *backbone_dir; /* Bridging: a folder searched first for the backbone bundle (itself or its
                                 sub-folders); then the manifest's path hint, backbones/ beside and inside the
                                 bundle, $ALIGNTS_BACKBONE_PATH, ~/.cache/alignts/backbones. NULL = defaults */
    int n_threads;            /* CPU threads for llama.cpp; 0 = the cores this process may use (Injective on a
                                 tiny LM: 1, as the Python runtime) */
    int verbose;              /* 1: llama.cpp's own log on stderr */
    alignts_log_fn log;       /* warnings and notes; NULL = dropped */
    void *log_user;
} alignts_options;

typedef struct {
    long context;      /* L; 0 = the bundle's (Internal, Bridging: must equal it) */
    long horizon;      /* H; 0 = the bundle's (Internal, Bridging: 1..the model's) */
    long max_series;   /* most series (B x C) one alignts_forecast call takes; 0 = the bundle's channels */
    long samples;      /* Injective: parallel samples, the point forecast is their median; 0 = the bundle's */
    int greedy;        /* Injective: 1 = most likely allowed token at each step */
    int have_seed;     /* Injective: 1 = use seed instead of the bundle's (every forecast call restarts it) */
    uint64_t seed;
} alignts_plan_params;

typedef struct {
    const char *paradigm; /* "internal" | "bridging" | "injective" (owned by the handle) */
    const char *variant;  /* the variant in use */
    long context, horizon;
    long n_channels;      /* C the model was fitted on (Internal, Bridging: every call must pass it); 0 = any */
    const char *const *columns; /* the n_channels channel names of the manifest, or NULL (none recorded) */
    long max_series;      /* the most B x C per call */
    long samples;         /* Injective: samples per series; else 1 */
    size_t workspace_bytes; /* allocated by alignts_plan for the forecast calls (libalignts itself) */
    size_t model_bytes;     /* llama.cpp weights (GGUF tensors; mmap'd) */
    size_t kv_bytes;        /* llama.cpp KV cache of the context (0 for an encoder) */
    size_t table_bytes;     /* Bridging: the word-embedding table (mmap'd; only rows looked up are read) */
} alignts_plan_info;

ALIGNTS_API const char *alignts_version(void);
ALIGNTS_API const char *alignts_status_str(int status);
ALIGNTS_API void alignts_options_init(alignts_options *o);
ALIGNTS_API void alignts_plan_params_init(alignts_plan_params *p);

/* Read bundle_dir/manifest.json, check it and every file the variant reads (size, sha256, no symbolic links),
 * and for Bridging find and check the backbone bundle. options may be NULL (defaults). */
ALIGNTS_API int alignts_open(const char *bundle_dir, const alignts_options *options, alignts **out);

/* Fix context / horizon / batch size (and Injective's sampling), load llama.cpp and allocate the workspace.
 * May be called again (a changed llama.cpp setting reloads the model). params may be NULL (defaults); info
 * may be NULL. */
ALIGNTS_API int alignts_plan(alignts *h, const alignts_plan_params *params, alignts_plan_info *info);
ALIGNTS_API int alignts_info(const alignts *h, alignts_plan_info *info);

/* x [B, C, L] raw values (L = the planned context) -> out [B, C, H] point forecast in raw units (Injective:
 * the sample median). quantiles: n_q ascending levels in (0, 1) or NULL; q_out [B, C, H, n_q] (Internal /
 * Bridging: split-conformal from the manifest's calibration, as `alignts forecast`; Injective: of the
 * samples, numpy's linear method). B x C <= max_series. */
ALIGNTS_API int alignts_forecast(alignts *h, const double *x, size_t B, size_t C, size_t L, double *out,
                                 const double *quantiles, size_t n_q, double *q_out);

/* The prompt token ids the model reads for one series x [L] (Injective: BOS, description and the digits;
 * Bridging: the left-padded text prefix), into ids [cap]; *n = their number (more than cap: nothing written,
 * ALIGNTS_ERR_ARG). Internal has no prompt (*n = 0). For inspection and tests. */
ALIGNTS_API int alignts_prompt(alignts *h, const double *x, size_t L, int32_t *ids, size_t cap, size_t *n);

ALIGNTS_API const char *alignts_last_error(const alignts *h);
ALIGNTS_API void alignts_close(alignts *h);

/* ------------------------------------------------------------------------------------------ streams
 * A stream keeps the last L points of C channels (L = the plan's context) as they arrive and forecasts from
 * them, as the Python runtime's f.stream() (Stream.update / forecast / state / restore):
 *
 *     alignts_stream *s;
 *     alignts_stream_open(h, C, &s);                (after alignts_plan; allocates alignts_stream_bytes(s))
 *     alignts_stream_update(s, x, k);               (x [k, C] row-major raw values, NaN = missing)
 *     alignts_stream_forecast(s, out, NULL, 0, NULL);  (out [C, H])
 *     alignts_stream_close(s);
 *
 * The forecast is alignts_forecast's on the window made as Forecaster.context makes it: missing values filled
 * as alignts.data.series.fill_missing (interior linear, the ends the nearest observation), a window shorter
 * than L left-padded with its first value; a channel with no observed value in the window is refused.
 * Memory: one block of alignts_stream_bytes(s) (O(L x C)) at open; the other calls allocate nothing.
 * Threads: a stream is used by one thread at a time. alignts_stream_update, _count, _bytes, _state_size,
 * _save, _restore, _last_error, _close touch only the stream: different streams in parallel are safe, even on
 * one handle. alignts_stream_open and alignts_stream_forecast use the stream's handle (forecast calls
 * alignts_forecast): as alignts_forecast, one at a time per handle (streams of one handle forecast in turn; give
 * each thread its own handle to forecast in parallel). The handle must outlive its streams; a stream keeps the
 * L and H of the plan at open (re-plan another context and its forecasts are refused). Errors: as the other
 * calls; the message is in alignts_stream_last_error(s) (alignts_stream_open's: alignts_last_error(h)). */
typedef struct alignts_stream alignts_stream; /* opaque */

/* A stream of n_channels channels on planned h (Internal, Bridging: the bundle's channel count; Injective:
 * any, up to the plan's max_series, since one forecast call takes every channel). */
ALIGNTS_API int alignts_stream_open(alignts *h, size_t n_channels, alignts_stream **out);
/* Ingest k points x [k, C] (row-major; NaN = missing). An inf anywhere: ALIGNTS_ERR_INPUT, nothing ingested. */
ALIGNTS_API int alignts_stream_update(alignts_stream *s, const double *x, size_t k);
/* Forecast from the window: out [C, H] raw units; levels: n_q ascending levels in (0, 1) or NULL, quantiles
 * [C, H, n_q] (as alignts_forecast). No point yet, or a channel with no observed value in the window:
 * ALIGNTS_ERR_INPUT. */
ALIGNTS_API int alignts_stream_forecast(alignts_stream *s, double *out, const double *levels, size_t n_q,
                                        double *quantiles);
/* Points ingested since open (or since the restored state's open); 0 for NULL. */
ALIGNTS_API int64_t alignts_stream_count(const alignts_stream *s);
/* Bytes the stream allocated at open; 0 for NULL. */
ALIGNTS_API size_t alignts_stream_bytes(const alignts_stream *s);
/* The state (count and window): alignts_stream_state_size(s) bytes, fixed for a stream (40 + 8 x L x C);
 * written in this machine's byte order by _save into buf [size]; _restore replaces the stream's state with
 * one saved by a stream of the same channel count and L (checked with a magic, a version, C and L: another is
 * refused with ALIGNTS_ERR_INPUT and the stream is left as it was). */
ALIGNTS_API size_t alignts_stream_state_size(const alignts_stream *s);
ALIGNTS_API int alignts_stream_save(alignts_stream *s, void *buf, size_t size);
ALIGNTS_API int alignts_stream_restore(alignts_stream *s, const void *buf, size_t size);
ALIGNTS_API const char *alignts_stream_last_error(const alignts_stream *s);
ALIGNTS_API void alignts_stream_close(alignts_stream *s); /* NULL: a no-op */

#ifdef __cplusplus
}
#endif

#endif
