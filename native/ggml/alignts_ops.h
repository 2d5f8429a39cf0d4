// alignts: row kernels for ggml's element-wise CPU ops (scripts/patch_llama.py changes 3, 5 and 11). patch_llama
// copies this header next to the GEMMs (llamafile/) and includes it in ggml-cpu/ops.cpp after vec.h, whose
// ggml_v_expf, ggml_gelu_f32 and GELU constants it uses; ops.cpp calls these in place of ggml's loops. Every CPU
// variant compiles it with its own flags: AVX-512 (F+DQ) and AVX2+FMA get vectors, the others ggml's own code or
// plain loops.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// change 3: the tanh GELU of ggml_gelu_f32 vectorized, x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))), in f32
// (ggml's f32 path looks every value up in an f16 table: ~5e-4 relative error, one value at a time)
static void alignts_vec_gelu_f32(const int n, float * y, const float * x) {
#if (defined(__AVX512F__) && defined(__AVX512DQ__)) || (defined(__AVX2__) && defined(__FMA__))
    int i = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m512 t = _mm512_mul_ps(v, _mm512_fmadd_ps(_mm512_mul_ps(v, v),
            _mm512_set1_ps(-2.0f*SQRT_2_OVER_PI*GELU_COEF_A), _mm512_set1_ps(-2.0f*SQRT_2_OVER_PI)));
        _mm512_storeu_ps(y + i, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), ggml_v_expf(t))));
    }
#else
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 t = _mm256_mul_ps(v, _mm256_fmadd_ps(_mm256_mul_ps(v, v),
            _mm256_set1_ps(-2.0f*SQRT_2_OVER_PI*GELU_COEF_A), _mm256_set1_ps(-2.0f*SQRT_2_OVER_PI)));
        _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), ggml_v_expf(t))));
    }
#endif
    for (; i < n; ++i) {
        y[i] = ggml_gelu_f32(x[i]);
    }
#else
    ggml_vec_gelu_f32(n, y, x);  // other CPUs: ggml's own
#endif
}

// change 17: ggml's GELU node's row, for the panels' product fused with its bias add and GELU (alignts_gemm.h, in
// sgemm.cpp): the function ggml_compute_forward_gelu_f32 calls, so the fused node's values are the node's
extern "C" void alignts_gelu_row_f32(int n, float * y, const float * x);
extern "C" void alignts_gelu_row_f32(int n, float * y, const float * x) {
    alignts_vec_gelu_f32(n, y, x);
}

// change 5: the row maximum of ggml's f32 softmax a vector at a time (ggml_vec_max_f32 is a scalar loop: one
// dependent max an element); max is exact, so the value is ggml's
static float alignts_vec_max_f32(const int n, const float * x) {
    int i = 0;
    float max = -INFINITY;
#if defined(__AVX512F__)
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16) {
        m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    }
    max = _mm512_reduce_max_ps(m);
#elif defined(__AVX__)
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) {
        m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    max = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
#endif
    for (; i < n; ++i) {
        max = max > x[i] ? max : x[i];  // ggml's MAX(max, x[i]), a NaN included
    }
    return max;
}

// change 11 (layer norm): the sum of a row and the sum of its squared deviations in f32 vector accumulators,
// where ggml adds one element at a time into a double (ggml_vec_sum_f32) and reduces every 16 lanes into a
// double (ggml_vec_cvar_f32); a BERT layer's two norms over n_embd values a token ran ~1 ns an element
#if defined(__AVX512F__) && defined(__AVX512DQ__)
static inline __m512 alignts_load_tail(const float * x, int n) {  // x[0 .. n), zeros past it; n < 16
    return _mm512_maskz_loadu_ps((__mmask16) ((1u << n) - 1), x);
}
#endif

static float alignts_vec_sum_f32(const int n, const float * x) {
    int i = 0;
    float sum = 0.0f;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + i + 16));
    }
    for (; i + 16 <= n; i += 16) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + i));
    }
    if (i < n) {
        s1 = _mm512_add_ps(s1, alignts_load_tail(x + i, n - i));
        i = n;
    }
    sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
    }
    const __m256 s = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    sum = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
#endif
    for (; i < n; ++i) {
        sum += x[i];
    }
    return sum;
}

// y = x - mean; returns the mean of y^2 (ggml_vec_cvar_f32's contract)
static float alignts_vec_cvar_f32(const int n, float * y, const float * x, const float mean) {
    int i = 0;
    float sum = 0.0f;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    const __m512 m = _mm512_set1_ps(mean);
    __m512 s = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + i), m);
        _mm512_storeu_ps(y + i, d);
        s = _mm512_fmadd_ps(d, d, s);
    }
    sum = _mm512_reduce_add_ps(s);
#elif defined(__AVX2__) && defined(__FMA__)
    const __m256 m = _mm256_set1_ps(mean);
    __m256 s = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
        _mm256_storeu_ps(y + i, d);
        s = _mm256_fmadd_ps(d, d, s);
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    sum = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
#endif
    for (; i < n; ++i) {
        const float d = x[i] - mean;
        y[i] = d;
        sum += d * d;
    }
    return sum / n;
}

// change 11 (softmax): one row of ggml's f32 softmax, dst = softmax(scale * src + slope * mask), in three passes of
// AVX-512 registers with masked tails (scale and mask while taking the maximum, exp and sum, normalize). ggml runs
// five passes and finishes a row past its last 16 values with scalar expf: an encoder's attention rows are short
// (one per query token, a series' ~22 patches long). mask: f32, or nullptr. false where AVX-512 is missing (ggml's
// code then runs).
static bool alignts_soft_max_row_f32(const int n, float * dst, const float * src, const float * mask, const float scale,
                                     const float slope) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    const __m512 vscale = _mm512_set1_ps(scale), vslope = _mm512_set1_ps(slope);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << (n - i)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, src + i), vscale);
        if (mask) {
            v = _mm512_fmadd_ps(vslope, _mm512_maskz_loadu_ps(k, mask + i), v);
        }
        _mm512_mask_storeu_ps(dst + i, k, v);
        vmax = _mm512_mask_max_ps(vmax, k, vmax, v);
    }
    const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << (n - i)) - 1);
        const __m512 e = ggml_v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, dst + i), max));
        _mm512_mask_storeu_ps(dst + i, k, e);
        vsum = _mm512_mask_add_ps(vsum, k, vsum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dst + i), inv));
    }
    return true;
#else
    (void) n; (void) dst; (void) src; (void) mask; (void) scale; (void) slope;
    return false;
#endif
}

// change 17: one row of ggml's f32 softmax with an f32 mask (or none) and no sinks, whichever way this CPU variant
// computes it: the row above where AVX-512 is there, else ggml's own passes (wp: n floats of scratch). ggml's
// SOFT_MAX node calls it for such rows (ops.cpp), and so does the fused attention (alignts_gemm.h, in sgemm.cpp): the
// same values bit for bit. dst may be src.
extern "C" void alignts_soft_max_row(int n, float * dst, const float * src, const float * mask, float scale,
                                     float slope, float * wp);
extern "C" void alignts_soft_max_row(int n, float * dst, const float * src, const float * mask, float scale,
                                     float slope, float * wp) {
    if (alignts_soft_max_row_f32(n, dst, src, mask, scale, slope)) {
        return;
    }
    ggml_vec_cpy_f32(n, wp, src);
    ggml_vec_scale_f32(n, wp, scale);
    if (mask) {
        for (int i = 0; i < n; ++i) {
            wp[i] += slope*mask[i];
        }
    }
    const float max = alignts_vec_max_f32(n, wp);
    ggml_float sum = ggml_vec_soft_max_f32(n, dst, wp, max);
    sum = 1.0/sum;
    ggml_vec_scale_f32(n, dst, sum);
}

// change 11 (strided copies): one element of ggml_compute_forward_dup_bytes' element-by-element paths (a CONT of a
// transposed view: BERT's V before the attention product, every layer). ggml calls memcpy with a size it only knows
// at run time, a library call a 4-byte value; a size the compiler sees is a plain load and store.
static inline void alignts_copy_element(char * dst, const char * src, const size_t type_size) {
    switch (type_size) {
        case 4: std::memcpy(dst, src, 4); break;
        case 2: std::memcpy(dst, src, 2); break;
        case 1: *dst = *src; break;
        default: std::memcpy(dst, src, type_size); break;
    }
}

// change 16 (LayerNorm): ggml's NORM node and the MUL (the norm's weight) and ADD (its bias) nodes after it, as
// llama.cpp's build_norm(LLM_NORM) builds every LayerNorm of a BERT, in one node: each row normalized as
// ggml_compute_forward_norm_f32 does it (the same calls), then multiplied and shifted in place while it is in L1,
// written to add's tensor only. ggml_cpu_try_fuse_ops (ggml-cpu.c) checked that the three follow each other, that
// each is its successor's one input and that their shapes agree. The multiply and the add are separate loops
// (ggml_vec_mul_f32, ggml_vec_add_f32), two roundings as the two nodes make: the same values bit for bit. Two nodes
// and two barriers of ggml's threads fewer a LayerNorm. false (ggml runs the three nodes) unless the rows are
// contiguous f32, the weight and bias are contiguous f32 rows of the norm's width, and add's memory is either the
// input's own (a row is read whole before it is written) or apart from it (ggml's allocator could give add memory
// freed after the norm read it last; a partial overlap would overwrite rows still to be read).
extern "C" bool alignts_norm_mul_add(const struct ggml_compute_params * params, const struct ggml_tensor * norm,
                                     const struct ggml_tensor * mul, struct ggml_tensor * add);

extern "C" bool alignts_norm_mul_add(const struct ggml_compute_params * params, const struct ggml_tensor * norm,
                                     const struct ggml_tensor * mul, struct ggml_tensor * add) {
    const struct ggml_tensor * src0 = norm->src[0];
    const struct ggml_tensor * w = mul->src[0] == norm ? mul->src[1] : mul->src[0];
    const struct ggml_tensor * b = add->src[0] == mul ? add->src[1] : add->src[0];
    const int64_t n = src0->ne[0];
    for (const struct ggml_tensor * t : {src0, norm, mul, w, b, (const struct ggml_tensor *) add}) {
        if (t->type != GGML_TYPE_F32 || t->nb[0] != sizeof(float)) {
            return false;
        }
    }
    if (w->ne[0] != n || ggml_nelements(w) != n || b->ne[0] != n || ggml_nelements(b) != n) {
        return false;
    }
    const char * a0 = (const char *) add->data, * x0 = (const char *) src0->data;
    const bool same = a0 == x0 && add->nb[1] == src0->nb[1] && add->nb[2] == src0->nb[2] && add->nb[3] == src0->nb[3];
    if (!same && a0 < x0 + ggml_nbytes(src0) && x0 < a0 + ggml_nbytes(add)) {
        return false;
    }
    float eps;
    std::memcpy(&eps, norm->op_params, sizeof(float));
    const float * wf = (const float *) w->data;
    const float * bf = (const float *) b->data;
    // thread ith's rows: the block [ith*dr, (ith+1)*dr), as ggml's ADD cuts them (ggml's NORM interleaves its rows),
    // the rows this thread wrote in the ADD and the products before it (change 18)
    const int64_t ne1 = src0->ne[1], ne2 = src0->ne[2], rows = ne1 * ne2 * src0->ne[3];
    const int64_t dr = (rows + params->nth - 1) / params->nth;
    for (int64_t r = dr * params->ith; r < std::min(rows, dr * (params->ith + 1)); r++) {
        const int64_t i01 = r % ne1, i02 = r / ne1 % ne2, i03 = r / (ne1 * ne2);
        const float * xf = (const float *) ((const char *) src0->data + i01 * src0->nb[1] + i02 * src0->nb[2]
                                            + i03 * src0->nb[3]);
        float * yf = (float *) ((char *) add->data + i01 * add->nb[1] + i02 * add->nb[2] + i03 * add->nb[3]);
        const float mean = alignts_vec_sum_f32(n, xf) / n;
        const float variance = alignts_vec_cvar_f32(n, yf, xf, mean);
        ggml_vec_scale_f32(n, yf, 1.0f / sqrtf(variance + eps));
        ggml_vec_mul_f32(n, yf, yf, wf);
        ggml_vec_add_f32(n, yf, yf, bf);
    }
    return true;
}
