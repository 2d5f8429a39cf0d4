// alignts: a packed q8_0 x f32 GEMM for ggml's CPU backend (x86-64 with AVX-512 VNNI), the integer twin of
// alignts_sgemm_f32.h (same layout, same tiling idea; scripts/patch_llama.py puts both into ggml).
//
// ggml multiplies q8_0 weights by activations it first quantizes to q8_0 (blocks of 32 values, one f16 scale
// each) with llamafile's tinyBLAS: 256-bit dot products, a horizontal sum per output. Here a block of TJ tokens
// is quantized the same way (ggml's quantize_row_q8_0: d = max|x| / 127, q = round(x / d), d kept as f16) into a
// k-major pack, 4 bytes of a token per 32-bit lane, and every weight row's 4 bytes are broadcast against it:
// vpdpbusd sums 4 byte products a lane. vpdpbusd multiplies unsigned by signed bytes, so the weights go in
// shifted by 128 (w + 128) and 128 * sum(q) of the token's block comes off again, exactly. After a block's 32
// values the integer sums are scaled by both blocks' scales into f32 accumulators: the products are ggml's
// integer dot products of the same quantized values; only the order of the f32 sums over blocks can differ.
//
// C[j*ldc + i] = sum over blocks of d_w(i,b) d_x(j,b) sum_l q_w(i,b,l) q_x(j,b,l); A holds rows of k/32
// block_q8_0 (34 bytes: f16 d, 32 int8), lda_bytes apart; B is f32, ldb floats a row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "alignts_sgemm_f32.h"  // store_tile

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__F16C__)
#include <immintrin.h>
#define ALIGNTS_GEMM_Q8_0 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace alignts_q8 {

constexpr int QK = 32;              // values a block
constexpr int BLOCK_BYTES = 2 + QK; // block_q8_0: f16 scale + 32 int8
constexpr int VL = 16;              // 32-bit lanes a vector: tokens a vector
constexpr int NV = 2;               // token vectors a tile
constexpr int TJ = NV * VL;         // tokens a packed block
constexpr int RM = 5;               // weight rows a tile: 5 x 2 integer + 5 x 2 float accumulators (4-7
                                    // measured: 5 fastest)
// the pack of one k-block for TJ tokens: 8 x TJ int32 (4 quantized bytes a token), TJ f32 scales, TJ int32
// corrections (128 * the sum of the token's 32 quantized values)
constexpr int PACK_INTS = QK / 4 * TJ + TJ + TJ;

static inline float f16_to_f32(const uint8_t * p) {
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

// one block of QK values as ggml's quantize_row_q8_0 quantizes it: d = max|x| / 127, q = round(x / d) (to nearest,
// ties to even; ggml's reference rounds ties away from zero: a tie needs x / d to land exactly on .5); returns d
// rounded to the f16 ggml keeps. q stays in a register: two 16-byte stores read back as one 32-byte load would stall
// on store forwarding (a third of the pack's time, measured)
static inline float quantize_block(const float * x, __m256i & q) {
    const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + VL);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512 s = _mm512_set1_ps(id);
    q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x0, s)))),
                                _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x1, s))), 1);
    return _cvtsh_ss(_cvtss_sh(d, 0));
}

// the sum of a block's 32 quantized values: vpsadbw sums 8 bytes (shifted to unsigned) into each 64-bit lane
static inline int32_t block_sum(__m256i q) {
    const __m256i s4 = _mm256_sad_epu8(_mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80))),
                                       _mm256_setzero_si256());
    const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
    return static_cast<int32_t>(_mm_cvtsi128_si64(_mm_add_epi64(s2, _mm_unpackhi_epi64(s2, s2)))) - 128 * QK;
}

// quantize tokens j0 .. j0+nj-1 of B (k values each) into the pack; tokens nj .. TJ-1 are zeros
static inline void pack_tokens(const float * B, int64_t ldb, int64_t k, int64_t j0, int64_t nj, int32_t * P) {
    const int64_t nb = k / QK;
    std::memset(P, 0, sizeof(int32_t) * PACK_INTS * nb);
    for (int64_t j = 0; j < nj; ++j) {
        const float * x = B + (j0 + j) * ldb;
        for (int64_t b = 0; b < nb; ++b) {
            __m256i qv;
            const float dh = quantize_block(x + b * QK, qv);
            alignas(32) int32_t words[QK / 4];
            _mm256_store_si256(reinterpret_cast<__m256i *>(words), qv);
            int32_t * pb = P + b * PACK_INTS;
            for (int g = 0; g < QK / 4; ++g) {
                pb[g * TJ + j] = words[g];
            }
            std::memcpy(pb + QK / 4 * TJ + j, &dh, sizeof dh);
            pb[QK / 4 * TJ + TJ + j] = 128 * block_sum(qv);
        }
    }
}

template <int R, int NV2>
static inline void tile(const uint8_t * A, int64_t lda_bytes, const int32_t * P, int64_t nb,
                        float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    __m512 acc[R][NV2];
    for (int r = 0; r < R; ++r) {
        for (int v = 0; v < NV2; ++v) {
            acc[r][v] = _mm512_setzero_ps();
        }
    }
    const __m512i shift = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
    const uint8_t * a = A + i0 * lda_bytes;
    for (int64_t b = 0; b < nb; ++b) {
        const int32_t * pb = P + b * PACK_INTS;
        __m512i iacc[R][NV2];
        for (int r = 0; r < R; ++r) {
            for (int v = 0; v < NV2; ++v) {
                iacc[r][v] = _mm512_setzero_si512();
            }
        }
        for (int g = 0; g < QK / 4; ++g) {
            __m512i t[NV2];
            for (int v = 0; v < NV2; ++v) {
                t[v] = _mm512_load_si512(pb + g * TJ + v * VL);
            }
            for (int r = 0; r < R; ++r) {
                int32_t word;
                std::memcpy(&word, a + r * lda_bytes + b * BLOCK_BYTES + 2 + 4 * g, sizeof word);
                const __m512i w = _mm512_xor_si512(_mm512_set1_epi32(word), shift);  // w + 128, unsigned
                for (int v = 0; v < NV2; ++v) {
                    iacc[r][v] = _mm512_dpbusd_epi32(iacc[r][v], w, t[v]);
                }
            }
        }
        for (int v = 0; v < NV2; ++v) {
            const __m512 dx = _mm512_load_ps(reinterpret_cast<const float *>(pb + QK / 4 * TJ) + v * VL);
            const __m512i corr = _mm512_load_si512(pb + QK / 4 * TJ + TJ + v * VL);
            for (int r = 0; r < R; ++r) {
                const __m512 dw = _mm512_set1_ps(f16_to_f32(a + r * lda_bytes + b * BLOCK_BYTES));
                const __m512 sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(iacc[r][v], corr));
                acc[r][v] = _mm512_fmadd_ps(sum, _mm512_mul_ps(dw, dx), acc[r][v]);
            }
        }
    }
    alignts_f32::store_tile<R, NV2>(acc, C, ldc, i0, j0, nj);
}

template <int R, int NV2>
static inline void tile_rows(int64_t rows, const uint8_t * A, int64_t lda_bytes, const int32_t * P, int64_t nb,
                             float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    if constexpr (R > 1) {
        if (rows < R) {
            return tile_rows<R - 1, NV2>(rows, A, lda_bytes, P, nb, C, ldc, i0, j0, nj);
        }
    }
    tile<R, NV2>(A, lda_bytes, P, nb, C, ldc, i0, j0, nj);
}

// weight rows [i_begin, i_end) of C for all n tokens; P holds pack_ints(k) int32, 64-byte aligned
static inline void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint8_t * A,
                             int64_t lda_bytes, const float * B, int64_t ldb, float * C, int64_t ldc, int32_t * P) {
    const int64_t nb = k / QK;
    for (int64_t j0 = 0; j0 < n; j0 += TJ) {
        const int64_t nj = std::min<int64_t>(TJ, n - j0);
        pack_tokens(B, ldb, k, j0, nj, P);
        for (int64_t i0 = i_begin; i0 < i_end; i0 += RM) {
            const int64_t rows = std::min<int64_t>(RM, i_end - i0);
            if (nj <= VL) {
                tile_rows<RM, 1>(rows, A, lda_bytes, P, nb, C, ldc, i0, j0, nj);
            } else {
                tile_rows<RM, NV>(rows, A, lda_bytes, P, nb, C, ldc, i0, j0, nj);
            }
        }
    }
}

static inline int64_t pack_ints(int64_t k) { return k / QK * PACK_INTS; }

// the same products without a pack (no memory for one): token by token, block by block, C as the accumulator
static inline void gemm_rows_unpacked(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint8_t * A,
                                      int64_t lda_bytes, const float * B, int64_t ldb, float * C, int64_t ldc) {
    const int64_t nb = k / QK;
    for (int64_t j = 0; j < n; ++j) {
        float * c = C + j * ldc;
        for (int64_t i = i_begin; i < i_end; ++i) {
            c[i] = 0.0f;
        }
        for (int64_t b = 0; b < nb; ++b) {
            const float * x = B + j * ldb + b * QK;
            float amax = 0.0f;
            for (int l = 0; l < QK; ++l) {
                amax = std::max(amax, std::fabs(x[l]));
            }
            const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            const float dh = _cvtsh_ss(_cvtss_sh(d, 0));
            int8_t q[QK];
            for (int l = 0; l < QK; ++l) {
                q[l] = static_cast<int8_t>(std::nearbyint(x[l] * id));
            }
            for (int64_t i = i_begin; i < i_end; ++i) {
                const uint8_t * w = A + i * lda_bytes + b * BLOCK_BYTES;
                // in f32, exact (|sum| <= 32 * 127 * 127 < 2^24): gcc 12 vectorizes an int8 x int8 -> int32 sum
                // with vpdpbusd, which reads the weights as unsigned
                float dot = 0.0f;
                for (int l = 0; l < QK; ++l) {
                    dot += static_cast<float>(static_cast<int8_t>(w[2 + l])) * static_cast<float>(q[l]);
                }
                c[i] += f16_to_f32(w) * dh * dot;
            }
        }
    }
}

// ---- a few tokens (1 .. FEW_MAX: a decode step's products): one pass over the weight rows for all of them.
// Packed lanes would mostly multiply zeros here, so each weight row is read as ggml's dot product reads it, but two
// blocks a 512-bit vector (vpdpbusd: 8 lanes a block) for all tokens at once, with no horizontal sum until the row's
// end. A token's pack, per pair of blocks (2p, 2p+1): its 64 quantized bytes, the 16 lane corrections (-128 x the
// sum of the lane's 4 bytes: the weights go in shifted by 128, as in the tiles above) and the 16 scales (dx of block
// 2p in lanes 0-7, of 2p+1 in 8-15). An odd last block has zeros for its missing partner.
constexpr int FEW_MAX = VL - 1;  // tokens the few-token path takes (the tiles take VL and more)
// bytes ahead of the pair being read that few_row asks the memory for: the rows are read in address order, so this is
// the same stream 16 KB on. The hardware prefetchers alone kept one core at 36 GB/s on a 91 MB matrix (Zen 5; a plain
// read of the same bytes: 45-47 GB/s); asking 8 / 12 / 16 / 24 / 32 KB ahead: 48 / 51-53 / 49-50 / 52-53 / 51-52
// GB/s (256 B-1 KB ahead: no better than none; a 12 x 768 GPT-2's decode step: 8 and 16 KB alike)
constexpr int FEW_PREFETCH = 16384;

static inline int64_t few_pairs(int64_t k) { return (k / QK + 1) / 2; }
// bytes of the pack of n tokens (64-byte aligned parts)
static inline int64_t few_pack_bytes(int64_t k, int64_t n) { return n * few_pairs(k) * 3 * 64; }

static inline void few_pack(const float * B, int64_t ldb, int64_t k, int64_t n, uint8_t * P) {
    const int64_t nb = k / QK, np = few_pairs(k);
    for (int64_t j = 0; j < n; ++j) {
        const float * x = B + j * ldb;
        uint8_t * pj = P + j * np * 3 * 64;
        for (int64_t p = 0; p < np; ++p) {
            __m256i q[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
            float dh[2] = {0.0f, 0.0f};
            for (int h = 0; h < 2 && 2 * p + h < nb; ++h) {
                dh[h] = quantize_block(x + (2 * p + h) * QK, q[h]);
            }
            const __m512i xq = _mm512_inserti64x4(_mm512_castsi256_si512(q[0]), q[1], 1);
            const __m512i sum128 = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                                       _mm512_set1_epi8(static_cast<char>(0x80)), xq);
            uint8_t * pp = pj + p * 3 * 64;
            _mm512_store_si512(pp, xq);
            _mm512_store_si512(pp + 64, _mm512_sub_epi32(_mm512_setzero_si512(), sum128));
            _mm512_store_ps(pp + 128, _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(dh[0]), _mm512_set1_ps(dh[1])));
        }
    }
}

// the two blocks of a pair at blk, shifted to unsigned (w + 128), and their f32 scales (8 lanes each); `two`: false
// for an odd last block (zeros stand for its missing partner)
static inline void load_pair(const uint8_t * blk, bool two, __m512i & w, __m512 & dw) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk + 2));
    const __m256i hi = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk + BLOCK_BYTES + 2))
                           : _mm256_set1_epi8(static_cast<char>(0x80));  // 0 after the shift
    w = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                         _mm512_set1_epi8(static_cast<char>(0x80)));
    const __m256 dlo = _mm256_set1_ps(f16_to_f32(blk));
    const __m256 dhi = two ? _mm256_set1_ps(f16_to_f32(blk + BLOCK_BYTES)) : _mm256_setzero_ps();
    dw = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(dlo)), _mm256_castps_pd(dhi), 1));
}

// row i of C for the NJ tokens of the pack: each pair of weight blocks is loaded once for all of them. One row at a
// time, in order: the weights stream from memory in address order, which the hardware prefetchers follow (4 rows
// interleaved ran at a quarter of the bandwidth: 8.7 vs 36.8 GB/s on a 90 MB matrix, Zen 5)
template <int NJ>
static inline void few_row(const uint8_t * a, const uint8_t * P, int64_t k, float * C, int64_t ldc, int64_t i) {
    const int64_t nb = k / QK, np = few_pairs(k), stride = np * 3 * 64;
    __m512 acc[NJ];
    for (int j = 0; j < NJ; ++j) {
        acc[j] = _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < np; ++p) {
        __m512i w;
        __m512 dw;
        _mm_prefetch(reinterpret_cast<const char *>(a + 2 * p * BLOCK_BYTES + FEW_PREFETCH), _MM_HINT_T0);
        load_pair(a + 2 * p * BLOCK_BYTES, 2 * p + 1 < nb, w, dw);
        for (int j = 0; j < NJ; ++j) {
            const uint8_t * pp = P + j * stride + p * 3 * 64;  // quantized bytes, lane corrections, scales
            const __m512i s = _mm512_dpbusd_epi32(_mm512_load_si512(pp + 64), w, _mm512_load_si512(pp));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_load_ps(pp + 128)), acc[j]);
        }
    }
    for (int j = 0; j < NJ; ++j) {
        C[j * ldc + i] = _mm512_reduce_add_ps(acc[j]);
    }
}

template <int NJ>
static inline void few_block(int64_t n, int64_t i_begin, int64_t i_end, const uint8_t * A, int64_t lda_bytes,
                             const uint8_t * P, int64_t k, float * C, int64_t ldc) {
    if constexpr (NJ > 1) {
        if (n < NJ) {
            return few_block<NJ - 1>(n, i_begin, i_end, A, lda_bytes, P, k, C, ldc);
        }
    }
    for (int64_t i = i_begin; i < i_end; ++i) {
        few_row<NJ>(A + i * lda_bytes, P, k, C, ldc, i);
    }
}

// weight rows [i_begin, i_end) of C for 1 <= n <= FEW_MAX tokens; P holds few_pack_bytes(k, n), 64-byte aligned
static inline void few_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint8_t * A,
                            int64_t lda_bytes, const float * B, int64_t ldb, float * C, int64_t ldc, uint8_t * P) {
    few_pack(B, ldb, k, n, P);
    few_block<FEW_MAX>(n, i_begin, i_end, A, lda_bytes, P, k, C, ldc);
}

}  // namespace alignts_q8

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
