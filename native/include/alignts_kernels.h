/*
 * alignts_kernels: the runtime kernels of alignts in portable C99, for embedding without Python.
 *
 * The same definitions as the Python kernels (the modules of alignts/kernels, see their docstrings); golden
 * vectors written by scripts/golden.py from the Python (numba) kernels keep the two from drifting.
 *
 * Conventions
 * - Series are row-major [S, L] (S series of L steps, time last); double precision throughout.
 * - Memory: the caller owns every buffer. No function allocates, frees or keeps a pointer after it
 *   returns; the sizes each buffer needs are given beside each function. Buffers must not overlap
 *   unless stated.
 * - Errors: functions return AT_OK (0) or a negative at_status; on error the outputs are unspecified.
 *   Where a series is at fault, *bad_series (if not NULL) receives its index.
 * - NaN marks a missing value where a function says so; +-inf is always an error (AT_ERR_NONFINITE).
 * - Thread safety: every function is reentrant (no global state; the sampler's RNG state is the caller's).
 */
#ifndef ALIGNTS_KERNELS_H
#define ALIGNTS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ALIGNTS_KERNELS_VERSION 1

typedef enum {
    AT_OK = 0,
    AT_ERR_ARG = -1,        /* a bad argument: NULL buffer, zero size, patch_len > L, alpha outside [0, 1] */
    AT_ERR_NONFINITE = -2,  /* inf (or NaN where NaN is not allowed) in the input */
    AT_ERR_ALL_NAN = -3,    /* a series has no observed (non-NaN) value */
    AT_ERR_RANGE = -4,      /* a value is too large to encode (|x| >= 1e15 or |x| * 10^p >= 1e18) */
    AT_ERR_SPACE = -5,      /* an output row is too small (encode: T < the row's length) */
    AT_ERR_TABLE = -6       /* an invalid codec table (see at_codec_validate) */
} at_status;

/* A short English description of a status code (static storage). */
const char *at_status_str(int status);

/* ---------------------------------------------------------------- instance norm (RevIN without affine) */

/* Per series: mean and population variance over the non-NaN points, std = sqrt(var + eps).
 * x [S, L]; mean, std [S]. AT_ERR_ALL_NAN if a series has no observed point. */
int at_instance_stats(const double *x, size_t n_series, size_t len, double eps, double *mean, double *std,
                      size_t *bad_series);

/* out = (x - mean) / std per series. x, out [S, L] (out may equal x); mean, std [S]. NaN stays NaN. */
int at_instance_norm(const double *x, size_t n_series, size_t len, const double *mean, const double *std,
                     double *out);

/* out = y * std + mean per series. y, out [S, H] (out may equal y); mean, std [S]. */
int at_instance_denorm(const double *y, size_t n_series, size_t len, const double *mean, const double *std,
                       double *out);

/* ---------------------------------------------------------------- patching */

/* Number of patches N = (L - P) / stride + 2 (replication pad of `stride` copies of the last value);
 * 0 if L < P or P == 0 or stride == 0. */
size_t at_n_patches(size_t len, size_t patch_len, size_t stride);

/* x [S, L] -> out [S, N, P]: out[s, n, p] = x[s, min(n * stride + p, L - 1)]. NaN copied as is. */
int at_patchify(const double *x, size_t n_series, size_t len, size_t patch_len, size_t stride, double *out);

/* Fused instance norm + patching: stats as at_instance_stats, then (x - mean) / std into the patch layout.
 * fill_nan != 0 writes 0 for NaN points (the series mean in normalized units). x [S, L]; out [S, N, P];
 * mean, std [S]; work [L] doubles (one normalized series). */
int at_norm_patchify(const double *x, size_t n_series, size_t len, size_t patch_len, size_t stride,
                     double eps, int fill_nan, double *out, double *mean, double *std, double *work,
                     size_t *bad_series);

/* ---------------------------------------------------------------- LLMTime scaler */

/* Per series over the non-NaN points: default mode offset = min - beta * (max - min),
 * scale = alpha-quantile of (x - offset) (0 -> 1); basic mode (basic != 0) offset = 0,
 * scale = max(alpha-quantile of |x|, 0.01). Quantile: NumPy's default linear method, same arithmetic.
 * x [S, L]; offset, scale [S]; work [L] doubles (sorted in place). */
int at_llmtime_scaler(const double *x, size_t n_series, size_t len, double alpha, double beta, int basic,
                      double *offset, double *scale, double *work, size_t *bad_series);

/* ---------------------------------------------------------------- LLMTime digit codec */

/* Token ids of the digit codec (the Python CodecTable). The arrays are the caller's and are only read. */
typedef struct {
    int64_t digit_ids[10];      /* ids of the digits 0-9, distinct, >= 0 */
    const int64_t *value_sep;   /* written after each value; n_value_sep >= 1 */
    size_t n_value_sep;
    const int64_t *digit_sep;   /* written between digits; may be empty */
    size_t n_digit_sep;
    int64_t minus_id;           /* written before negative values */
    const int64_t *end_ids;     /* stop decoding */
    size_t n_end_ids;
} at_codec_table;

/* AT_OK or AT_ERR_TABLE: 10 distinct non-negative digits; separators, minus and end ids disjoint from the
 * digits and from minus; end ids disjoint from separators; some value_sep id not a digit_sep id. */
int at_codec_validate(const at_codec_table *table);

#define AT_CODEC_MAX_DIGITS 18

/* Tokens each row needs: lengths [S]. Per value v = floor(|x| * 10^p): (x < 0) + n_digits(v)
 * + (n_digits - 1) * n_digit_sep + n_value_sep. x [S, L] finite, precision in [0, 15]. */
int at_encode_lengths(const double *x, size_t n_series, size_t len, const at_codec_table *table, int precision,
                      int64_t *lengths);

/* Encode x [S, L] into ids [S, T] (row stride T), each row padded with -1 after lengths[s] ids.
 * AT_ERR_SPACE if some row needs more than T ids (call at_encode_lengths first to size T). */
int at_encode_digits(const double *x, size_t n_series, size_t len, const at_codec_table *table, int precision,
                     int64_t *ids, size_t row_len, int64_t *lengths);

/* Decode ids [S, T] (lengths [S] valid ids per row, each <= T; NULL = T) into values [S, H] and
 * n_parsed [S] (<= H). Rules (the Python decode_digits docstring): digits accumulate (a 19th digit stops
 * and drops the value), digit_sep ids are skipped (an id in both separator lists only separates), minus
 * before the first digit negates, a value_sep ends a value, an end id / unknown id / misplaced minus stops
 * and keeps the value being read, the end of the row or a negative id stops and drops it, and decoding
 * stops after H values. value = sign * (v + 0.5) / 10^p; rows are padded with their last value (0.0 when
 * nothing was parsed, n_parsed = 0). */
int at_decode_digits(const int64_t *ids, size_t n_series, size_t row_len, const int64_t *lengths,
                     const at_codec_table *table, int precision, size_t horizon, double *values,
                     int64_t *n_parsed);

/* ---------------------------------------------------------------- constrained sampler */

/* splitmix64: advances *state and returns the next 64 random bits. */
uint64_t at_splitmix64(uint64_t *state);

/* Uniform double in [0, 1): the top 53 bits of at_splitmix64 times 2^-53. */
double at_uniform(uint64_t *state);

/* Draw one token id among allowed [n_allowed] from logits [vocab] (float, as llama.cpp returns them).
 * Ties always go to the earlier position in allowed (numpy's argmax / stable argsort); allowed ids should be
 * distinct (a repeated id is simply a second candidate).
 * - temperature == 0: greedy, the allowed id with the largest logit; the RNG is not advanced. The Python
 *   runtime's sampler (alignts/runtime/sampler.py, greedy: allowed[argmax(logits[allowed])]) picks the same.
 * - temperature > 0: p = softmax(logit / temperature) over the allowed ids (double precision), sorted by p
 *   descending; keep the shortest prefix whose running sum reaches top_p (at least one; top_p >= 1 keeps
 *   all); u = at_uniform(state) * (sum of kept p); the first kept id whose running sum exceeds u is drawn.
 *   (The Python runtime draws from numpy's Generator, so seeded draws differ from these; the distribution
 *   is the same.)
 * work: 2 * n_allowed doubles. AT_ERR_ARG for an allowed id outside [0, vocab), n_allowed == 0,
 * temperature < 0, top_p <= 0, or a NaN logit among the allowed ids. */
int at_sample(const float *logits, size_t vocab, const int64_t *allowed, size_t n_allowed, double temperature,
              double top_p, uint64_t *state, double *work, int64_t *out_id);

/* ---------------------------------------------------------------- stream kernels (alignts/kernels/stream.py) */

/* Push k points x [k, n_ch] (row-major, NaN = missing) into a window of the last w points: buf [n_ch, w] (the
 * point seen at time t in slot t % w), *seen (points pushed so far), and per channel the running count, mean
 * and sum of squared deviations (Welford add/remove, recomputed exactly once every w points), plus the min/max
 * monotonic deques of time indices qmin/qmax [n_ch, w] with heads hmin/hmax and lengths nmin/nmax [n_ch].
 * Start from buf all NaN and every other array 0. The window's min is buf[c][qmin[c][hmin[c]] % w] when
 * nmin[c] > 0 (max likewise). AT_ERR_NONFINITE for inf (nothing pushed). */
int at_window_push(double *buf, size_t n_ch, size_t w, int64_t *seen, const double *x, size_t k, int64_t *cnt,
                   double *mean, double *m2, int64_t *qmin, int64_t *hmin, int64_t *nmin, int64_t *qmax,
                   int64_t *hmax, int64_t *nmax);

/* Page-Hinkley tests per channel on x [k, n_ch] (NaN skipped); state [n_ch, 4] = (n, mean, cum, min_cum), all 0
 * at the start, updated in place and reset after an alarm; alarms [k, n_ch] receives 1 where a test fired.
 * cum = alpha * cum + (x - mean_n - delta); alarm when n >= min_n and cum - min(cum) > threshold. */
int at_page_hinkley(const double *x, size_t k, size_t n_ch, double *state, double delta, double threshold,
                    double alpha, double min_n, uint8_t *alarms);

/* Incremental patching: write k points x [k, n_ch] (row-major, NaN kept) seen at times t0..t0+k-1 into the patch
 * ring [n_ch, k_ring, p_len]: patch j (times j*stride .. j*stride+p_len-1) lives in slot j % k_ring. Each point
 * goes to every patch that covers it: O(k * n_ch * p_len / stride). stride in 1..p_len, t0 >= 0.
 * AT_ERR_NONFINITE for inf (nothing written). */
int at_patch_push(double *ring, size_t n_ch, size_t k_ring, size_t p_len, const double *x, size_t k, int64_t t0,
                  size_t stride);

/* Digits of new values under a frozen LLMTime scaler: z = clip((x - offset) / scale, -lim, lim), then each z as
 * at_encode_digits writes one value: (minus) digits of floor(|z| * 10^precision), digit_sep between digits,
 * value_sep after. ids receives every value's ids back to back (*n_ids in all), lengths [k] the ids per value.
 * scale > 0, 0 < lim < 1e15, lim * 10^precision < 1e18, precision 0..15; AT_ERR_NONFINITE for NaN/inf in x,
 * AT_ERR_SPACE when cap ids are too few (at most k * (20 + 18 * n_digit_sep + n_value_sep) are needed). */
int at_encode_fixed(const double *x, size_t k, double offset, double scale, double lim, int precision,
                    const at_codec_table *table, int64_t *ids, size_t cap, int64_t *lengths, size_t *n_ids);

#ifdef __cplusplus
}
#endif

#endif /* ALIGNTS_KERNELS_H */
