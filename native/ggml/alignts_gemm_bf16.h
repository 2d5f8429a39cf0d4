// alignts: a packed bf16 x f32 GEMM for ggml's CPU backend (x86-64 with AVX-512 BF16), the bf16 twin of
// alignts_sgemm_f32.h (scripts/patch_llama.py puts it into ggml with the others; entry point alignts_gemm.h).
//
// ggml multiplies bf16 weights by activations it first rounds to bf16 with llamafile's tinyBLAS (vdpbf16ps dot
// products, a horizontal sum per output). Here a block of TJ tokens is rounded the same way (round to nearest
// even) and packed k-major in pairs, two consecutive bf16 values of a token per 32-bit lane (after the rounding,
// alignts_f32::transpose moves the 32-bit lanes), and each weight row's pair is broadcast against them: vdpbf16ps
// adds both products of a lane, 2 x 16 multiply-adds an instruction, into a 12 x 32 tile of f32 accumulators.
//
// C[j*ldc + i] = sum_l bf16(A[i, l]) * bf16(B[j, l]); A holds bf16 rows lda values apart, B f32 rows ldb apart;
// k must be a multiple of 32 (gemm_rows' caller checks).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "alignts_sgemm_f32.h"  // transpose

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define ALIGNTS_GEMM_BF16 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace alignts_bf16 {

constexpr int VL = 16;       // 32-bit lanes a vector: tokens a vector
constexpr int NV = 2;        // token vectors a tile
constexpr int TJ = NV * VL;  // tokens a packed block
constexpr int RM = 12;       // weight rows a tile
constexpr int KB = 32;       // k a step of the pack (16 pairs)

// Bp[(l/2)*TJ + j] = the bf16 pair (B[j0+j, l], B[j0+j, l+1]) for j < nj, zeros for the other lanes of the
// vectors holding tokens; k a multiple of 32
static inline void pack_tokens(const float * B, int64_t ldb, int64_t k, int64_t j0, int64_t nj, uint32_t * Bp) {
    for (int64_t g = 0; g * VL < nj; ++g) {
        const int64_t rows = std::min<int64_t>(VL, nj - g * VL);
        const float * b = B + (j0 + g * VL) * ldb;
        uint32_t * out = Bp + g * VL;
        for (int64_t l = 0; l < k; l += KB) {
            __m512 r[VL];  // the bf16 pairs as 32-bit lanes; the f32 transpose only moves bits
            for (int i = 0; i < VL; ++i) {
                if (i < rows) {
                    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(b + i * ldb + l + 16),
                                                           _mm512_loadu_ps(b + i * ldb + l));
                    std::memcpy(&r[i], &h, sizeof h);
                } else {
                    r[i] = _mm512_setzero_ps();
                }
            }
            alignts_f32::transpose(r);
            for (int c = 0; c < VL; ++c) {
                _mm512_store_ps(reinterpret_cast<float *>(out + (l / 2 + c) * TJ), r[c]);
            }
        }
    }
}

template <int R, int NV2>
static inline void tile(const uint16_t * A, int64_t lda, const uint32_t * Bp, int64_t k,
                        float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    __m512 acc[R][NV2];
    for (int r = 0; r < R; ++r) {
        for (int v = 0; v < NV2; ++v) {
            acc[r][v] = _mm512_setzero_ps();
        }
    }
    const uint16_t * a = A + i0 * lda;
    ALIGNTS_UNROLL4  // as the f32 tile's: gcc leaves the loop rolled (results/speed_llama.md section 21)
    for (int64_t q = 0; q < k / 2; ++q) {
        __m512bh b[NV2];
        for (int v = 0; v < NV2; ++v) {
            const __m512i x = _mm512_load_si512(Bp + q * TJ + v * VL);
            std::memcpy(&b[v], &x, sizeof x);
        }
        for (int r = 0; r < R; ++r) {
            uint32_t pair;
            std::memcpy(&pair, a + r * lda + 2 * q, sizeof pair);
            const __m512i wi = _mm512_set1_epi32(static_cast<int32_t>(pair));
            __m512bh w;
            std::memcpy(&w, &wi, sizeof wi);
            for (int v = 0; v < NV2; ++v) {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], w, b[v]);
            }
        }
    }
    alignts_f32::store_tile<R, NV2>(acc, C, ldc, i0, j0, nj);
}

template <int R, int NV2>
static inline void tile_rows(int64_t rows, const uint16_t * A, int64_t lda, const uint32_t * Bp, int64_t k,
                             float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    if constexpr (R > 1) {
        if (rows < R) {
            return tile_rows<R - 1, NV2>(rows, A, lda, Bp, k, C, ldc, i0, j0, nj);
        }
    }
    tile<R, NV2>(A, lda, Bp, k, C, ldc, i0, j0, nj);
}

// weight rows [i_begin, i_end) of C for the nj tokens from j0 that the pack Bp holds (alignts_amx::gemm_rows runs
// the rows past its last full tile block here too)
static inline void rows_on_pack(int64_t i_begin, int64_t i_end, int64_t k, const uint16_t * A, int64_t lda,
                                const uint32_t * Bp, float * C, int64_t ldc, int64_t j0, int64_t nj) {
    for (int64_t i0 = i_begin; i0 < i_end; i0 += RM) {
        const int64_t rows = std::min<int64_t>(RM, i_end - i0);
        if (nj <= VL) {
            tile_rows<RM, 1>(rows, A, lda, Bp, k, C, ldc, i0, j0, nj);
        } else {
            tile_rows<RM, NV>(rows, A, lda, Bp, k, C, ldc, i0, j0, nj);
        }
    }
}

// weight rows [i_begin, i_end) of C for all n tokens; Bp holds k/2*TJ uint32, 64-byte aligned
static inline void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint16_t * A, int64_t lda,
                             const float * B, int64_t ldb, float * C, int64_t ldc, uint32_t * Bp) {
    for (int64_t j0 = 0; j0 < n; j0 += TJ) {
        const int64_t nj = std::min<int64_t>(TJ, n - j0);
        pack_tokens(B, ldb, k, j0, nj, Bp);
        rows_on_pack(i_begin, i_end, k, A, lda, Bp, C, ldc, j0, nj);
    }
}

static inline int64_t pack_words(int64_t k) { return k / 2 * TJ; }

static inline float bf16_to_f32(uint16_t h) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

static inline float round_bf16(float x) {  // to the nearest bf16, ties to even, as vcvtne2ps2bf16 (finite x)
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return bf16_to_f32(static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16));
}

// the same products without a pack (no memory for one): one output at a time, the activation rounded to bf16 as the
// pack rounds it
static inline void gemm_rows_unpacked(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint16_t * A,
                                      int64_t lda, const float * B, int64_t ldb, float * C, int64_t ldc) {
    for (int64_t j = 0; j < n; ++j) {
        const float * x = B + j * ldb;
        for (int64_t i = i_begin; i < i_end; ++i) {
            const uint16_t * w = A + i * lda;
            float sum = 0.0f;
            for (int64_t l = 0; l < k; ++l) {
                sum += bf16_to_f32(w[l]) * round_bf16(x[l]);
            }
            C[j * ldc + i] = sum;
        }
    }
}

}  // namespace alignts_bf16

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
