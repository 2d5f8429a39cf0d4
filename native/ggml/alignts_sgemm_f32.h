// alignts: a packed f32 GEMM for ggml's CPU backend (x86-64: AVX-512 or AVX2+FMA).
//
// scripts/patch_llama.py copies this file (and alignts_gemm.h, its entry point in ggml) next to
// llamafile/sgemm.cpp, so every CPU variant of ggml compiles it with its own flags; variants without AVX2+FMA
// (and other architectures) leave the products to ggml.
//
// Why: ggml multiplies f32 weights by f32 activations with llamafile's tinyBLAS, a dot-product kernel that
// ends every 4x6 output tile with 24 horizontal sums (a third of its vector work when k = 384) and needs
// k % 16 == 0 and contiguous activations; attention's products (permuted views, k = head size) fall back to
// one dot product per output. Here the activations of up to TJ tokens are packed k-major once
// (Bp[l][j] = B[j][l]) and every weight row is broadcast against them: an outer-product tile of RM weight
// rows x TJ tokens in registers, no horizontal sums, any k, any row strides. Measured on an AMD EPYC (Zen 5,
// 1 thread; results/speed_llama.md section 8): ~160-240 GFLOP/s on MiniLM's products against ~80 for tinyBLAS.
//
// C[j*ldc + i] = sum_l A[i*lda + l] * B[j*ldb + l] for weight rows i < m and tokens j < n (ggml's layout:
// A = src0 rows, B = src1 rows, C = dst rows). The sums run in order over l, one fused multiply-add a step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define ALIGNTS_SGEMM_F32 1
#if defined(__GNUC__) && !defined(__clang__)
// gcc 12's AVX-512 intrinsics start from _mm512_undefined_ps() and warn of it under -Wall
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace alignts_f32 {

#if defined(__AVX512F__)
using vec = __m512;
constexpr int VL = 16;  // floats a vector
// weight rows a tile: 8 x 3 accumulators + 3 token vectors + 1 broadcast <= 32 registers, and 8 row pointers in
// general registers. 12 rows x 2 vectors (the same 24 accumulators) needed 12 row pointers, which gcc spilled to the
// stack inside the k loop; it also broadcast 12 weights per 24 multiply-adds where this broadcasts 8. MiniLM's 36
// products at 154 tokens, one Zen 4 core: 1.034-1.046x faster (results/speed_llama.md section 23)
constexpr int RM = 8;
constexpr int NV = 3;  // token vectors a tile
static inline vec vload(const float * p) { return _mm512_load_ps(p); }
static inline vec vloadu(const float * p) { return _mm512_loadu_ps(p); }
static inline void vstore(float * p, vec v) { _mm512_store_ps(p, v); }
static inline void vstoreu(float * p, vec v) { _mm512_storeu_ps(p, v); }
static inline vec vset1(float x) { return _mm512_set1_ps(x); }
static inline vec vzero() { return _mm512_setzero_ps(); }
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
// r[c] = column c of the 16 x 16 block whose rows are r[0..15]
static inline void transpose(vec r[16]) {
    vec s[16];
    for (int g = 0; g < 4; ++g) {  // within each 128-bit lane: 4 rows -> 4 columns of 4
        const vec t0 = _mm512_unpacklo_ps(r[4 * g], r[4 * g + 1]), t1 = _mm512_unpackhi_ps(r[4 * g], r[4 * g + 1]);
        const vec t2 = _mm512_unpacklo_ps(r[4 * g + 2], r[4 * g + 3]), t3 = _mm512_unpackhi_ps(r[4 * g + 2], r[4 * g + 3]);
        s[4 * g + 0] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * g + 1] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * g + 2] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * g + 3] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {  // lane q of group g's column i -> lane g of column 4q + i
        const vec x0 = _mm512_shuffle_f32x4(s[i], s[4 + i], 0x44), x1 = _mm512_shuffle_f32x4(s[i], s[4 + i], 0xEE);
        const vec y0 = _mm512_shuffle_f32x4(s[8 + i], s[12 + i], 0x44);
        const vec y1 = _mm512_shuffle_f32x4(s[8 + i], s[12 + i], 0xEE);
        r[i] = _mm512_shuffle_f32x4(x0, y0, 0x88);
        r[4 + i] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
        r[8 + i] = _mm512_shuffle_f32x4(x1, y1, 0x88);
        r[12 + i] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
    }
}
static inline float vsum(vec v) { return _mm512_reduce_add_ps(v); }
// p[0..R) = the first R lanes of v
template <int R>
static inline void store_lanes(float * p, vec v) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << R) - 1), v);
}
constexpr int STORE_MIN_ROWS = 4;  // tiles of fewer rows store through memory (the transpose would cost more)
#else
using vec = __m256;
constexpr int VL = 8;
constexpr int RM = 6;   // 6 x 2 accumulators + 2 + 1 <= 16 registers
constexpr int NV = 2;   // token vectors a tile
static inline vec vload(const float * p) { return _mm256_load_ps(p); }
static inline vec vloadu(const float * p) { return _mm256_loadu_ps(p); }
static inline void vstore(float * p, vec v) { _mm256_store_ps(p, v); }
static inline void vstoreu(float * p, vec v) { _mm256_storeu_ps(p, v); }
static inline vec vset1(float x) { return _mm256_set1_ps(x); }
static inline vec vzero() { return _mm256_setzero_ps(); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
static inline float vsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// p[0..R) = the first R lanes of v, R == RM (two plain stores: AVX2's masked store is slow on some CPUs)
template <int R>
static inline void store_lanes(float * p, vec v) {
    static_assert(R == 6, "store_lanes writes 4 + 2 lanes");
    _mm_storeu_ps(p, _mm256_castps256_ps128(v));
    _mm_storel_pi(reinterpret_cast<__m64 *>(p + 4), _mm256_extractf128_ps(v, 1));
}
constexpr int STORE_MIN_ROWS = RM;  // only full tiles are transposed
// r[c] = column c of the 8 x 8 block whose rows are r[0..7]
static inline void transpose(vec r[8]) {
    const vec t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const vec t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const vec t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const vec t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const vec s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const vec s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const vec s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const vec s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

// the k loop of a tile unrolled 4 times (gcc leaves it rolled: a compare with a stack slot and a branch every 24
// fused multiply-adds)
#if defined(__clang__)
#define ALIGNTS_UNROLL4 _Pragma("unroll 4")
#elif defined(__GNUC__)
#define ALIGNTS_UNROLL4 _Pragma("GCC unroll 4")
#else
#define ALIGNTS_UNROLL4
#endif

static inline float to_float(float x) { return x; }
#if defined(__F16C__)
#define ALIGNTS_DOT_F16 1
// IEEE half rows (ggml_fp16_t: an f16 KV cache), widened to f32 in registers
static inline vec vloadu(const uint16_t * p) {
#if defined(__AVX512F__)
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
#else
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
#endif
}
static inline float to_float(uint16_t h) { return _cvtsh_ss(h); }
#endif

constexpr int TJ = NV * VL;  // tokens a packed block
constexpr int DOT_MAX = VL / 2 - 1;  // a block of this few tokens runs as dot products (less than half the lanes)
constexpr int RD = 4;                // weight rows a dot-product tile
// rows ahead that dot_tile asks the memory for, at the offset it reads. A decode step's attention reads the KV cache a
// head at a time: K rows a cell apart (3 KB on a 12 x 768 GPT-2), 256 B each, where the hardware prefetchers do not
// follow. That GPT-2's decode step after a 294-token prompt (1 thread, Zen 5, weights and cache in DRAM): 4.8-4.9 ms
// without, 4.5-4.7 / 4.2-4.6 / 4.0-4.5 / 4.6 with 8 / 16 / 24 / 32 rows ahead; the 6 MB numeric LM (in the caches):
// 257-261 us a step without, 231-239 / 234-243 / 248-254 at 8 / 16 / 24. Past the last row it is a hint to nothing
constexpr int DOT_PREFETCH_ROWS = 16;

// Bp[l*TJ + j] = B[(j0 + j)*ldb + l] for j < nj, in blocks of VL x VL transposed in registers; the lanes
// nj <= j < ceil(nj / VL)*VL hold zeros (computed, never stored), the vectors past them are not written
static inline void pack_tokens(const float * B, int64_t ldb, int64_t k, int64_t j0, int64_t nj, float * Bp) {
    const int64_t kv = k - k % VL;
    for (int64_t g = 0; g * VL < nj; ++g) {
        const int64_t rows = std::min<int64_t>(VL, nj - g * VL);
        const float * b = B + (j0 + g * VL) * ldb;
        float * out = Bp + g * VL;
        for (int64_t l = 0; l < kv; l += VL) {
            vec r[VL];
            for (int i = 0; i < VL; ++i) {
                r[i] = i < rows ? vloadu(b + i * ldb + l) : vzero();
            }
            transpose(r);
            for (int c = 0; c < VL; ++c) {
                vstore(out + (l + c) * TJ, r[c]);
            }
        }
        for (int64_t l = kv; l < k; ++l) {
            for (int i = 0; i < VL; ++i) {
                out[l * TJ + i] = i < rows ? b[i * ldb + l] : 0.0f;
            }
        }
    }
}

// C[(j0 + j)*ldc + i0 + r] = lane j % VL of acc[r][j / VL], for r < R and tokens j < nj: a tile's outputs. Each
// token's R outputs are adjacent in C, so the accumulators are transposed in registers and stored a token at a time
// (they went through a stack buffer, one float at a time). With the unrolled k loop below: MiniLM's 36 f32 products
// at 154 tokens 1.17-1.19x faster on one Xeon core, within 1-10 % of onnxruntime's MLAS in step
// (results/speed_llama/f32_chain.txt). Shared by the bf16 and q8_0 tiles (AVX-512: vec is __m512 there too).
template <int R, int NV2>
static inline void store_tile(const vec (&acc)[R][NV2], float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    if constexpr (R >= STORE_MIN_ROWS) {
        for (int v = 0; v < NV2; ++v) {
            vec t[VL];
            for (int r = 0; r < VL; ++r) {
                t[r] = r < R ? acc[r][v] : vzero();
            }
            transpose(t);
            const int64_t jn = std::min<int64_t>(VL, nj - v * VL);
            for (int64_t j = 0; j < jn; ++j) {
                store_lanes<R>(C + (j0 + v * VL + j) * ldc + i0, t[j]);
            }
        }
    } else {
        alignas(64) float t[R][TJ];
        for (int r = 0; r < R; ++r) {
            for (int v = 0; v < NV2; ++v) {
                vstore(t[r] + v * VL, acc[r][v]);
            }
        }
        for (int64_t j = 0; j < nj; ++j) {
            float * c = C + (j0 + j) * ldc + i0;
            for (int r = 0; r < R; ++r) {
                c[r] = t[r][j];
            }
        }
    }
}

// rows i0 .. i0+R-1 of C for the nj tokens of one packed block starting at token j0; NV2 token vectors
template <int R, int NV2>
static inline void tile(const float * A, int64_t lda, const float * Bp, int64_t k,
                        float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    vec acc[R][NV2];
    for (int r = 0; r < R; ++r) {
        for (int v = 0; v < NV2; ++v) {
            acc[r][v] = vzero();
        }
    }
    const float * a = A + i0 * lda;
    ALIGNTS_UNROLL4
    for (int64_t l = 0; l < k; ++l) {
        vec b[NV2];
        for (int v = 0; v < NV2; ++v) {
            b[v] = vload(Bp + l * TJ + v * VL);
        }
        for (int r = 0; r < R; ++r) {
            const vec w = vset1(a[r * lda + l]);
            for (int v = 0; v < NV2; ++v) {
                acc[r][v] = vfma(w, b[v], acc[r][v]);
            }
        }
    }
    store_tile<R, NV2>(acc, C, ldc, i0, j0, nj);
}

// a tile of `rows` <= R weight rows
template <int R, int NV2>
static inline void tile_rows(int64_t rows, const float * A, int64_t lda, const float * Bp, int64_t k,
                             float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    if constexpr (R > 1) {
        if (rows < R) {
            return tile_rows<R - 1, NV2>(rows, A, lda, Bp, k, C, ldc, i0, j0, nj);
        }
    }
    tile<R, NV2>(A, lda, Bp, k, C, ldc, i0, j0, nj);
}

// a tile of `rows` weight rows and as few token vectors as hold the block's nj tokens
template <int NV2>
static inline void tile_vectors(int64_t rows, const float * A, int64_t lda, const float * Bp, int64_t k,
                                float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    if constexpr (NV2 > 1) {
        if (nj <= (NV2 - 1) * VL) {
            return tile_vectors<NV2 - 1>(rows, A, lda, Bp, k, C, ldc, i0, j0, nj);
        }
    }
    tile_rows<RM, NV2>(rows, A, lda, Bp, k, C, ldc, i0, j0, nj);
}

// a block of NJ <= DOT_MAX tokens: packed lanes would mostly multiply zeros, so take dot products along k
// (R weight rows x NJ tokens, one horizontal sum an output)
template <int R, int NJ, typename TA>
static inline void dot_tile(const TA * A, int64_t lda, const float * B, int64_t ldb, int64_t k,
                            float * C, int64_t ldc, int64_t i0, int64_t j0) {
    vec acc[R][NJ];
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < NJ; ++j) {
            acc[r][j] = vzero();
        }
    }
    const TA * a = A + i0 * lda;
    const float * b = B + j0 * ldb;
    const int64_t kv = k - k % VL;
    for (int64_t l = 0; l < kv; l += VL) {
        vec bv[NJ];
        for (int j = 0; j < NJ; ++j) {
            bv[j] = vloadu(b + j * ldb + l);
        }
        for (int r = 0; r < R; ++r) {
            _mm_prefetch(reinterpret_cast<const char *>(a + (r + DOT_PREFETCH_ROWS) * lda + l), _MM_HINT_T0);
            const vec av = vloadu(a + r * lda + l);
            for (int j = 0; j < NJ; ++j) {
                acc[r][j] = vfma(av, bv[j], acc[r][j]);
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < NJ; ++j) {
            float sum = vsum(acc[r][j]);
            for (int64_t l = kv; l < k; ++l) {
                sum += to_float(a[r * lda + l]) * b[j * ldb + l];
            }
            C[(j0 + j) * ldc + i0 + r] = sum;
        }
    }
}

template <int NJ, typename TA>
static inline void dot_rows(int64_t i_begin, int64_t i_end, int64_t k, const TA * A, int64_t lda,
                            const float * B, int64_t ldb, float * C, int64_t ldc, int64_t j0) {
    int64_t i0 = i_begin;
    for (; i0 + RD <= i_end; i0 += RD) {
        dot_tile<RD, NJ>(A, lda, B, ldb, k, C, ldc, i0, j0);
    }
    for (; i0 < i_end; ++i0) {
        dot_tile<1, NJ>(A, lda, B, ldb, k, C, ldc, i0, j0);
    }
}

// dot_rows for nj <= J tokens
template <int J, typename TA>
static inline void dot_block(int64_t nj, int64_t i_begin, int64_t i_end, int64_t k, const TA * A, int64_t lda,
                             const float * B, int64_t ldb, float * C, int64_t ldc, int64_t j0) {
    if constexpr (J > 1) {
        if (nj < J) {
            return dot_block<J - 1>(nj, i_begin, i_end, k, A, lda, B, ldb, C, ldc, j0);
        }
    }
    dot_rows<J>(i_begin, i_end, k, A, lda, B, ldb, C, ldc, j0);
}

// weight rows [i_begin, i_end) of C for all n tokens; Bp holds k*TJ floats, 64-byte aligned (nullptr: no memory
// for it, so every block runs as dot products)
static inline void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k,
                             const float * A, int64_t lda, const float * B, int64_t ldb,
                             float * C, int64_t ldc, float * Bp) {
    for (int64_t j0 = 0; j0 < n; j0 += Bp ? TJ : DOT_MAX) {
        const int64_t nj = std::min<int64_t>(Bp ? TJ : DOT_MAX, n - j0);
        if (nj <= DOT_MAX) {
            dot_block<DOT_MAX>(nj, i_begin, i_end, k, A, lda, B, ldb, C, ldc, j0);
            continue;
        }
        pack_tokens(B, ldb, k, j0, nj, Bp);
        for (int64_t i0 = i_begin; i0 < i_end; i0 += RM) {
            const int64_t rows = std::min<int64_t>(RM, i_end - i0);
            tile_vectors<NV>(rows, A, lda, Bp, k, C, ldc, i0, j0, nj);
        }
    }
}

#if defined(ALIGNTS_DOT_F16)
// f16 rows [i_begin, i_end) against n f32 tokens, DOT_MAX tokens at a time: an f16 KV cache's decode step (a few
// query tokens a head against K, the attention weights against V's transposed rows) and f16 weights' products of a
// few tokens. ggml would round the tokens to f16 and take one dot product an output; here the halves widen in
// registers and the sums stay f32.
static inline void dot_rows_f16(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint16_t * A,
                                int64_t lda, const float * B, int64_t ldb, float * C, int64_t ldc) {
    for (int64_t j0 = 0; j0 < n; j0 += DOT_MAX) {
        dot_block<DOT_MAX>(std::min<int64_t>(DOT_MAX, n - j0), i_begin, i_end, k, A, lda, B, ldb, C, ldc, j0);
    }
}
#endif

}  // namespace alignts_f32

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
