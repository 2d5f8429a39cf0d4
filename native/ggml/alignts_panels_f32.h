// alignts: f32 weights repacked once at load into panels of 16 rows, and the product tile that reads them.
//
// alignts_sgemm_f32.h packs a product's tokens k-major at every call and broadcasts each weight from its row: its
// vectors run over tokens, so a block of 154 tokens leaves lanes empty, the tokens are transposed at every call and
// the outputs transposed back before they are stored. Here the weights are transposed once, when llama.cpp loads
// them (ggml's CPU_REPACK buffer type, which does the same for q4_0 on ARM and AVX2): panel p holds rows
// 16p .. 16p+15 k-major, P[(p*k + l)*16 + r] = W[(16p + r)*ldw + l], one 64-byte line a k step. The tile broadcasts
// each token's activation from its row as ggml lays it out and multiplies it into a panel's vectors: the vectors run
// over the weights' rows (384 and 1536 for MiniLM, whole panels), nothing is packed at a call, and each token's
// outputs are adjacent in C, stored as they are. This is how onnxruntime's MLAS multiplies weights it prepacked.
//
// C[j*ldc + i] = sum_l W[i*ldw + l] * B[j*ldb + l] (+ bias[i]) for rows i and tokens j: each sum runs in order over l,
// one fused multiply-add a step, as alignts_sgemm_f32.h's tile does; the bias (a linear layer's, the ADD node ggml
// runs after the product, fused into it by alignts_gemm.h) is added to the finished f32 sum as that node would.
#pragma once

#include "alignts_sgemm_f32.h"

#if defined(ALIGNTS_SGEMM_F32)
#define ALIGNTS_PANELS_F32 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace alignts_panels {

using alignts_f32::vec;
using alignts_f32::VL;
// unaligned loads and stores throughout: ggml aligns a tensor in its buffer to 32 bytes (TENSOR_ALIGNMENT), not to
// a 64-byte vector (a q4_0 tensor repacked in the same buffer can leave the next one 32 bytes off a line)
using alignts_f32::vloadu;
using alignts_f32::vstoreu;

constexpr int PW = 16;        // weight rows a panel (the rows of a repacked tensor are a multiple of it)
constexpr int PV = PW / VL;   // vectors a panel's k step
#if defined(__AVX512F__)
constexpr int PT = 8;  // tokens a tile: 8 x 3 accumulators + 3 panel vectors + 1 broadcast <= 32 registers
constexpr int NP = 3;  // panels a tile (48 weight rows)
#else
constexpr int PT = 6;  // 6 x 2 accumulators + 2 + 1 <= 16 registers
constexpr int NP = 1;
#endif
// when ggml's threads share a product: tokens a job's group (a linear layer's, alignts_gemm.h's
// for_each_job_from_both_ends: one row tile a job; else for_each_job's token blocks, JOBS_PER_THREAD jobs a thread
// about). A job's weight rows are reused from L2 by each of its token tiles, so small token groups cost little; small
// jobs keep the wait at the node's end short (2 threads, Bridging's backbone: each thread waited 1.4-1.6 ms of a
// 35 ms call at the products' ends with for_each_job's 48 x 8, 0.1-0.3 with 16 x 32; results/speed_llama.md
// section 25)
constexpr int64_t TJ = 16;
constexpr int64_t JOBS_PER_THREAD = 32;

// weight row i's value at l = 0 in the panels P of rows of k values; its next values follow PW floats apart
static inline const float * row_start(const float * P, int64_t k, int64_t i) {
    return P + (i / PW) * k * PW + i % PW;
}

// P = W's rows [0, m) as panels (m % PW == 0), W's rows ldw floats apart
static inline void pack(const float * W, int64_t m, int64_t k, int64_t ldw, float * P) {
    for (int64_t p = 0; p < m / PW; ++p) {
        const float * w = W + p * PW * ldw;
        float * out = P + p * k * PW;
        int64_t l = 0;
#if defined(__AVX512F__)
        for (; l + VL <= k; l += VL) {
            vec r[VL];
            for (int i = 0; i < VL; ++i) {
                r[i] = vloadu(w + i * ldw + l);
            }
            alignts_f32::transpose(r);
            for (int c = 0; c < VL; ++c) {
                vstoreu(out + (l + c) * PW, r[c]);
            }
        }
#endif
        for (; l < k; ++l) {
            for (int i = 0; i < PW; ++i) {
                out[l * PW + i] = w[i * ldw + l];
            }
        }
    }
}

// C's rows for T tokens (B's rows ldb floats apart, C's ldc) x the N panels from P, plus bias (N*PW floats) unless
// it is nullptr. Panel p's k step l is the PW floats at P + p*pp + l*pk: pp = k*PW, pk = PW for repacked weights;
// pp = PW, pk = the row stride for a matrix whose rows are the k steps (attention's V, read in place)
template <int T, int N>
static inline void tile(const float * P, int64_t pp, int64_t pk, int64_t k, const float * B, int64_t ldb, float * C,
                        int64_t ldc, const float * bias) {
    vec acc[T][N * PV];
    for (int t = 0; t < T; ++t) {
        for (int q = 0; q < N * PV; ++q) {
            acc[t][q] = alignts_f32::vzero();
        }
    }
    ALIGNTS_UNROLL4
    for (int64_t l = 0; l < k; ++l) {
        vec w[N * PV];
        for (int p = 0; p < N; ++p) {
            for (int v = 0; v < PV; ++v) {
                w[p * PV + v] = vloadu(P + p * pp + l * pk + v * VL);
            }
        }
        for (int t = 0; t < T; ++t) {
            const vec b = alignts_f32::vset1(B[t * ldb + l]);
            for (int q = 0; q < N * PV; ++q) {
                acc[t][q] = alignts_f32::vfma(b, w[q], acc[t][q]);
            }
        }
    }
    if (bias) {
        for (int q = 0; q < N * PV; ++q) {
            const vec b = vloadu(bias + q * VL);
            for (int t = 0; t < T; ++t) {
                acc[t][q] = alignts_f32::vadd(acc[t][q], b);
            }
        }
    }
    for (int t = 0; t < T; ++t) {
        for (int q = 0; q < N * PV; ++q) {
            vstoreu(C + t * ldc + q * VL, acc[t][q]);
        }
    }
}

// a tile of `tokens` <= T tokens
template <int T, int N>
static inline void tile_tokens(int64_t tokens, const float * P, int64_t pp, int64_t pk, int64_t k, const float * B,
                               int64_t ldb, float * C, int64_t ldc, const float * bias) {
    if constexpr (T > 1) {
        if (tokens < T) {
            return tile_tokens<T - 1, N>(tokens, P, pp, pk, k, B, ldb, C, ldc, bias);
        }
    }
    tile<T, N>(P, pp, pk, k, B, ldb, C, ldc, bias);
}

// N panels from P (laid out as tile's) for all n tokens
template <int N>
static inline void panels(const float * P, int64_t pp, int64_t pk, int64_t k, int64_t n, const float * B,
                          int64_t ldb, float * C, int64_t ldc, const float * bias) {
    for (int64_t j = 0; j < n; j += PT) {
        tile_tokens<PT, N>(std::min<int64_t>(PT, n - j), P, pp, pk, k, B + j * ldb, ldb, C + j * ldc, ldc, bias);
    }
}

// rows [i_begin, i_end) of C (both multiples of PW, or i_end = m) for n tokens; P: the whole repacked tensor; bias:
// m floats, or nullptr
static inline void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const float * P,
                             const float * B, int64_t ldb, float * C, int64_t ldc, const float * bias = nullptr) {
    int64_t i = i_begin;
    for (; i + NP * PW <= i_end; i += NP * PW) {
        panels<NP>(P + i * k, k * PW, PW, k, n, B, ldb, C + i, ldc, bias ? bias + i : nullptr);
    }
    if constexpr (NP > 1) {
        for (; i + PW <= i_end; i += PW) {
            panels<1>(P + i * k, k * PW, PW, k, n, B, ldb, C + i, ldc, bias ? bias + i : nullptr);
        }
    }
}

// C = A x B for the m rows of A (m % PW == 0) given as their transpose: A's row r at k step l is V[l*ldv + r] (V's
// rows are the k steps, as attention's V is laid out: its rows are read as panels in place, nothing packed), for n
// tokens (B's rows ldb floats apart, C's ldc). Each output is the same k-ordered chain of fused multiply-adds as the
// repacked panels' and the token tile's.
static inline void gemm_transposed(int64_t m, int64_t n, int64_t k, const float * V, int64_t ldv, const float * B,
                                   int64_t ldb, float * C, int64_t ldc) {
    int64_t i = 0;
    for (; i + NP * PW <= m; i += NP * PW) {
        panels<NP>(V + i, PW, ldv, k, n, B, ldb, C + i, ldc, nullptr);
    }
    if constexpr (NP > 2) {
        for (; i + 2 * PW <= m; i += 2 * PW) {  // a head of 32
            panels<2>(V + i, PW, ldv, k, n, B, ldb, C + i, ldc, nullptr);
        }
    }
    if constexpr (NP > 1) {
        for (; i + PW <= m; i += PW) {
            panels<1>(V + i, PW, ldv, k, n, B, ldb, C + i, ldc, nullptr);
        }
    }
}

}  // namespace alignts_panels

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
