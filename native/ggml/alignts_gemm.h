// alignts: the entry point of alignts' matrix products in ggml's CPU backend. scripts/patch_llama.py copies the
// native/ggml headers next to llamafile/sgemm.cpp, includes this one at the end of that file (inside ggml, where
// ggml_compute_params and the tensor macros are known) and calls alignts_mul_mat() first in
// ggml_compute_forward_mul_mat. Every CPU variant of ggml compiles it with its own flags:
//   f32 x f32   alignts_sgemm_f32.h (AVX2+FMA or AVX-512)
//   bf16 x f32  alignts_gemm_amx.h (AMX-BF16 tiles, where the CPU and the kernel allow them), else
//               alignts_gemm_bf16.h (AVX-512 BF16)
//   q8_0 x f32  alignts_gemm_q8_0.h (AVX-512 VNNI; a decode step's few tokens too)
// and leaves every other product (types, CPUs, bf16 with fewer tokens than a vector's lanes) to ggml.
#pragma once

#include "alignts_gemm_amx.h"
#include "alignts_gemm_bf16.h"
#include "alignts_gemm_q8_0.h"
#include "alignts_sgemm_f32.h"

#include <cstdlib>

namespace alignts_ggml {

// this thread's packing buffer (grown on demand, 64-byte aligned, freed when the thread exits); nullptr when out of
// memory
struct scratch_buffer {
    void * data = nullptr;
    size_t size = 0;
    ~scratch_buffer() { std::free(data); }
};

static inline void * scratch(size_t bytes) {
    thread_local scratch_buffer buf;
    if (bytes > buf.size) {
        std::free(buf.data);
        buf.data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
        buf.size = buf.data ? bytes : 0;
    }
    return buf.data;
}

// calls f(i_begin, i_end, A, B, C) for this thread's jobs: each 2-D slice's row tiles of rm rows (A: the slice's
// src0 bytes, B and C: its src1 and dst floats), a slice cut into parts so that every thread has work when there
// are few slices (attention has one a head); static, so no barrier or shared counter is needed
template <typename F>
static inline void for_each_job(const struct ggml_compute_params * params, const struct ggml_tensor * src0,
                                const struct ggml_tensor * src1, struct ggml_tensor * dst, int64_t rm, F && f) {
    GGML_TENSOR_BINARY_OP_LOCALS
    const int64_t r2 = ne12 / ne02, r3 = ne13 / ne03, slices = ne12 * ne13;
    const int64_t tiles = (ne01 + rm - 1) / rm;
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(tiles, (params->nth + slices - 1) / slices));
    for (int64_t job = params->ith; job < slices * parts; job += params->nth) {
        const int64_t s = job / parts, p = job % parts, i12 = s % ne12, i13 = s / ne12;
        const int64_t i_begin = tiles * p / parts * rm, i_end = std::min<int64_t>(ne01, tiles * (p + 1) / parts * rm);
        if (i_begin < i_end) {
            f(i_begin, i_end, (const uint8_t *) src0->data + i12 / r2 * nb02 + i13 / r3 * nb03,
              (const float *) ((const char *) src1->data + i12 * nb12 + i13 * nb13),
              (float *) ((char *) dst->data + i12 * nb2 + i13 * nb3));
        }
    }
}

// jobs a thread, about, that for_each_shared_job cuts a product into: enough that a thread whose core runs slower
// for the moment (another tenant on a VM's core) takes fewer of them, few enough that the handing out stays cheap
constexpr int64_t SHARED_JOBS_PER_THREAD = 8;

// calls f(i_begin, i_end, j_begin, j_end, A, B, C) for jobs that the node's threads take from ggml's shared chunk
// counter as each finishes its last one (as ggml's own products and llamafile's do): a 2-D slice's rows in the parts
// for_each_job cuts, each part's tokens in groups of whole tj-token blocks (j_begin a multiple of tj), the groups of
// a part numbered next to each other so that the threads work on the same weight rows at a time. Each job packs its
// own tokens, so the tokens are packed as often as under the static split (once a part). A static split waits for
// its slowest thread, and on a VM one core can run 2x slower than the other for a while (results/speed_llama.md
// section 21). The sums are the static split's: every output from the same tile, in the same k order.
// Every thread of the node must call it (a barrier inside), with nth > 1. Products of one token block (a decode
// step's) keep the static split: their jobs would be the same, and the barrier a cost.
template <typename F>
static inline void for_each_shared_job(const struct ggml_compute_params * params, const struct ggml_tensor * src0,
                                       const struct ggml_tensor * src1, struct ggml_tensor * dst, int64_t rm,
                                       int64_t tj, F && f) {
    GGML_TENSOR_BINARY_OP_LOCALS
    const int64_t r2 = ne12 / ne02, r3 = ne13 / ne03, slices = ne12 * ne13, nth = params->nth;
    const int64_t tiles = (ne01 + rm - 1) / rm, blocks = (ne11 + tj - 1) / tj;
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(tiles, (nth + slices - 1) / slices));
    const int64_t wanted = (SHARED_JOBS_PER_THREAD * nth + slices * parts - 1) / (slices * parts);  // groups a part
    const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(blocks, wanted));
    const int64_t jobs = slices * parts * groups;
    if (params->ith == 0) {
        ggml_threadpool_chunk_set(params->threadpool, (int) nth);  // thread ith starts with job ith
    }
    ggml_barrier(params->threadpool);
    for (int64_t job = params->ith; job < jobs; job = ggml_threadpool_chunk_add(params->threadpool, 1)) {
        const int64_t g = job % groups, p = job / groups % parts, s = job / (groups * parts);
        const int64_t i12 = s % ne12, i13 = s / ne12;
        const int64_t i_begin = tiles * p / parts * rm, i_end = std::min<int64_t>(ne01, tiles * (p + 1) / parts * rm);
        const int64_t j_begin = blocks * g / groups * tj;
        const int64_t j_end = std::min<int64_t>(ne11, blocks * (g + 1) / groups * tj);
        if (i_begin < i_end && j_begin < j_end) {
            f(i_begin, i_end, j_begin, j_end, (const uint8_t *) src0->data + i12 / r2 * nb02 + i13 / r3 * nb03,
              (const float *) ((const char *) src1->data + i12 * nb12 + i13 * nb13),
              (float *) ((char *) dst->data + i12 * nb2 + i13 * nb3));
        }
    }
}

// the most tokens a slice that f16 rows multiply as dot products here: a decode step's (20 parallel samples in one
// shared cache are 20 a head); a prompt's products stay ggml's
constexpr int64_t F16_DOT_TOKENS = 32;

}  // namespace alignts_ggml

// true when dst = src0 x src1 was computed here. Every thread of the node calls it with its ith / nth and must get
// the same answer: had one thread declined, ggml's path would wait at a barrier for the others. So the decision
// depends on the tensors only, and a thread without memory for its pack computes its share without one.
extern "C" bool alignts_mul_mat(const struct ggml_compute_params * params, const struct ggml_tensor * src0,
                                const struct ggml_tensor * src1, struct ggml_tensor * dst) {
    if (params->use_ref || src1->type != GGML_TYPE_F32 || dst->type != GGML_TYPE_F32) {
        return false;
    }
    GGML_TENSOR_BINARY_OP_LOCALS
    // activation and output rows contiguous, strides whole floats, no broadcast remainder
    if (nb10 != sizeof(float) || nb0 != sizeof(float) || nb11 % sizeof(float) || nb1 % sizeof(float)
        || ne12 % ne02 || ne13 % ne03) {
        return false;
    }
#if defined(ALIGNTS_SGEMM_F32)
    // any number of tokens: a decode step's attention (one token a sequence against its KV cache) runs as dot
    // products of 4 rows at a time (gemm_rows), where ggml pays a call and a reduction an output
    if (src0->type == GGML_TYPE_F32 && nb00 == sizeof(float) && nb01 % sizeof(float) == 0) {
        float * Bp = static_cast<float *>(alignts_ggml::scratch(sizeof(float) * ne00 * alignts_f32::TJ));
        const int64_t lda = nb01 / sizeof(float), ldb = nb11 / sizeof(float), ldc = nb1 / sizeof(float);
        if (params->nth > 1 && ne11 > alignts_f32::TJ) {  // a prompt's or a forecast's tokens: shared jobs
            alignts_ggml::for_each_shared_job(params, src0, src1, dst, alignts_f32::RM, alignts_f32::TJ,
                [&](int64_t i_begin, int64_t i_end, int64_t j_begin, int64_t j_end, const uint8_t * A,
                    const float * B, float * C) {
                    alignts_f32::gemm_rows(i_begin, i_end, j_end - j_begin, ne00, reinterpret_cast<const float *>(A),
                                           lda, B + j_begin * ldb, ldb, C + j_begin * ldc, ldc, Bp);
                });
            return true;
        }
        alignts_ggml::for_each_job(params, src0, src1, dst, alignts_f32::RM,
            [&](int64_t i_begin, int64_t i_end, const uint8_t * A, const float * B, float * C) {
                alignts_f32::gemm_rows(i_begin, i_end, ne11, ne00, reinterpret_cast<const float *>(A), lda, B, ldb,
                                       C, ldc, Bp);  // Bp == nullptr: dot products
            });
        return true;
    }
#endif
#if defined(ALIGNTS_DOT_F16)
    // f16 rows against a decode step's few tokens: an f16 KV cache's attention (K, and V's transposed rows) and
    // f16 weights' products, the halves widened in registers (ggml would round the tokens to f16)
    if (src0->type == GGML_TYPE_F16 && nb00 == sizeof(uint16_t) && nb01 % sizeof(uint16_t) == 0
        && ne11 <= alignts_ggml::F16_DOT_TOKENS) {
        alignts_ggml::for_each_job(params, src0, src1, dst, alignts_f32::RD,
            [&](int64_t i_begin, int64_t i_end, const uint8_t * A, const float * B, float * C) {
                alignts_f32::dot_rows_f16(i_begin, i_end, ne11, ne00, reinterpret_cast<const uint16_t *>(A),
                                          nb01 / sizeof(uint16_t), B, nb11 / sizeof(float), C, nb1 / sizeof(float));
            });
        return true;
    }
#endif
#if defined(ALIGNTS_GEMM_BF16)
    if (src0->type == GGML_TYPE_BF16 && nb00 == sizeof(uint16_t) && nb01 % sizeof(uint16_t) == 0
        && ne00 % alignts_bf16::KB == 0 && ne11 >= alignts_bf16::VL) {
#if defined(ALIGNTS_GEMM_AMX)
        const bool amx = alignts_amx::available();  // rows in blocks of the tiles' 32
        const int64_t rm = amx ? alignts_amx::TR : alignts_bf16::RM;
        const bool paired = amx && ne11 >= alignts_amx::PAIRED_MIN_TOKENS;  // each thread pairs its rows once
#else
        const int64_t rm = alignts_bf16::RM;
        const bool paired = false;
#endif
        const int64_t lda = nb01 / sizeof(uint16_t), ldb = nb11 / sizeof(float), ldc = nb1 / sizeof(float);
        if (params->nth > 1 && ne11 > alignts_bf16::TJ && !paired) {  // tokens packed per block: shared jobs
            alignts_ggml::for_each_shared_job(params, src0, src1, dst, rm, alignts_bf16::TJ,
                [&](int64_t i_begin, int64_t i_end, int64_t j_begin, int64_t j_end, const uint8_t * A,
                    const float * B, float * C) {
                    const uint16_t * W = reinterpret_cast<const uint16_t *>(A);
                    const int64_t n = j_end - j_begin;
                    B += j_begin * ldb;
                    C += j_begin * ldc;
                    uint32_t * Bp = static_cast<uint32_t *>(
                        alignts_ggml::scratch(sizeof(uint32_t) * alignts_bf16::pack_words(ne00)));
#if defined(ALIGNTS_GEMM_AMX)
                    if (amx && Bp) {
                        alignts_amx::gemm_rows(i_begin, i_end, n, ne00, W, lda, B, ldb, C, ldc, Bp);
                        return;
                    }
#endif
                    if (Bp) {
                        alignts_bf16::gemm_rows(i_begin, i_end, n, ne00, W, lda, B, ldb, C, ldc, Bp);
                    } else {
                        alignts_bf16::gemm_rows_unpacked(i_begin, i_end, n, ne00, W, lda, B, ldb, C, ldc);
                    }
                });
            return true;
        }
        alignts_ggml::for_each_job(params, src0, src1, dst, rm,
            [&](int64_t i_begin, int64_t i_end, const uint8_t * A, const float * B, float * C) {
                const uint16_t * W = reinterpret_cast<const uint16_t *>(A);
#if defined(ALIGNTS_GEMM_AMX)
                // many tokens: the weight rows paired and C's layout in the tiles (no transpose), the rows in whole
                // blocks of 32 (a thread's share is, unless it holds the product's last rows)
                if (amx && ne11 >= alignts_amx::PAIRED_MIN_TOKENS && (i_end - i_begin) % alignts_amx::TR == 0) {
                    if (void * S = alignts_ggml::scratch(alignts_amx::paired_bytes(i_end - i_begin, ne00))) {
                        alignts_amx::gemm_rows_paired(i_begin, i_end, ne11, ne00, W, nb01 / sizeof(uint16_t), B,
                                                      nb11 / sizeof(float), C, nb1 / sizeof(float), S);
                        return;
                    }
                }
#endif
                uint32_t * Bp = static_cast<uint32_t *>(
                    alignts_ggml::scratch(sizeof(uint32_t) * alignts_bf16::pack_words(ne00)));
#if defined(ALIGNTS_GEMM_AMX)
                if (amx && Bp) {
                    alignts_amx::gemm_rows(i_begin, i_end, ne11, ne00, W, nb01 / sizeof(uint16_t), B,
                                           nb11 / sizeof(float), C, nb1 / sizeof(float), Bp);
                    return;
                }
#endif
                if (Bp) {
                    alignts_bf16::gemm_rows(i_begin, i_end, ne11, ne00, W, nb01 / sizeof(uint16_t), B,
                                            nb11 / sizeof(float), C, nb1 / sizeof(float), Bp);
                } else {
                    alignts_bf16::gemm_rows_unpacked(i_begin, i_end, ne11, ne00, W, nb01 / sizeof(uint16_t), B,
                                                     nb11 / sizeof(float), C, nb1 / sizeof(float));
                }
            });
        return true;
    }
#endif
#if defined(ALIGNTS_GEMM_Q8_0)
    // a decode step's few tokens (1 .. FEW_MAX) read each weight row once for all of them, the rows in address order
    // (few_rows); VL and more run on the packed tiles
    if (src0->type == GGML_TYPE_Q8_0 && nb00 == (size_t) alignts_q8::BLOCK_BYTES && ne00 % alignts_q8::QK == 0) {
        const bool few = ne11 <= alignts_q8::FEW_MAX;
        void * P = alignts_ggml::scratch(few ? alignts_q8::few_pack_bytes(ne00, ne11)
                                             : sizeof(int32_t) * alignts_q8::pack_ints(ne00));
        const int64_t ldb = nb11 / sizeof(float), ldc = nb1 / sizeof(float);
        if (params->nth > 1 && ne11 > alignts_q8::TJ) {  // a prompt's or a forecast's tokens: shared jobs
            alignts_ggml::for_each_shared_job(params, src0, src1, dst, alignts_q8::RM, alignts_q8::TJ,
                [&](int64_t i_begin, int64_t i_end, int64_t j_begin, int64_t j_end, const uint8_t * A,
                    const float * B, float * C) {
                    const int64_t n = j_end - j_begin;
                    if (P) {
                        alignts_q8::gemm_rows(i_begin, i_end, n, ne00, A, nb01, B + j_begin * ldb, ldb,
                                              C + j_begin * ldc, ldc, static_cast<int32_t *>(P));
                    } else {
                        alignts_q8::gemm_rows_unpacked(i_begin, i_end, n, ne00, A, nb01, B + j_begin * ldb, ldb,
                                                       C + j_begin * ldc, ldc);
                    }
                });
            return true;
        }
        alignts_ggml::for_each_job(params, src0, src1, dst, few ? 1 : alignts_q8::RM,
            [&](int64_t i_begin, int64_t i_end, const uint8_t * A, const float * B, float * C) {
                if (!P) {
                    alignts_q8::gemm_rows_unpacked(i_begin, i_end, ne11, ne00, A, nb01, B, ldb, C, ldc);
                } else if (few) {
                    alignts_q8::few_rows(i_begin, i_end, ne11, ne00, A, nb01, B, ldb, C, ldc,
                                         static_cast<uint8_t *>(P));
                } else {
                    alignts_q8::gemm_rows(i_begin, i_end, ne11, ne00, A, nb01, B, ldb, C, ldc,
                                          static_cast<int32_t *>(P));
                }
            });
        return true;
    }
#endif
    return false;
}
