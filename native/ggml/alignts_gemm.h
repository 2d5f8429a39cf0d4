// alignts: the entry point of alignts' matrix products in ggml's CPU backend. scripts/patch_llama.py copies the
// native/ggml headers next to llamafile/sgemm.cpp, includes this one at the end of that file (inside ggml, where
// ggml_compute_params and the tensor macros are known) and calls alignts_mul_mat() first in
// ggml_compute_forward_mul_mat. Every CPU variant of ggml compiles it with its own flags:
//   f32 x f32   alignts_panels_f32.h where llama.cpp loaded the weights into ggml's CPU_REPACK buffers (repacked
//               once into panels: alignts_panels_f32_pack, alignts_mul_mat_panels, called from repack.cpp), else
//               alignts_sgemm_f32.h (AVX2+FMA or AVX-512)
//   bf16 x f32  alignts_gemm_amx.h (AMX-BF16 tiles, where the CPU and the kernel allow them), else
//               alignts_gemm_bf16.h (AVX-512 BF16)
//   q8_0 x f32  alignts_gemm_q8_0.h (AVX-512 VNNI; a decode step's few tokens too)
// and leaves every other product (types, CPUs, bf16 with fewer tokens than a vector's lanes) to ggml.
#pragma once

#include "alignts_gemm_amx.h"
#include "alignts_gemm_bf16.h"
#include "alignts_gemm_q8_0.h"
#include "alignts_panels_f32.h"
#include "alignts_sgemm_f32.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

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

// jobs a thread, about, when the threads share a product's jobs: enough that a thread whose core runs slower for
// the moment (another tenant on a VM's core) takes fewer of them, few enough that the handing out stays cheap. The
// panels' products take more (alignts_panels::JOBS_PER_THREAD): they pack nothing a job.
constexpr int64_t SHARED_JOBS_PER_THREAD = 8;

// the most scratch a thread takes for the fused attention (its outputs wait there): an encoder's ~480 tokens need
// ~1 MB; a long prompt's attention is left to ggml's three nodes
constexpr size_t ATTENTION_SCRATCH_MAX = size_t(16) << 20;

// calls f(i_begin, i_end, n, A, B, C) for this thread's jobs: weight rows [i_begin, i_end) of a 2-D slice for n
// tokens (A: the slice's src0 bytes, B and C: its src1 and dst floats from the job's first token). Each slice's row
// tiles of rm rows are cut into parts so that every thread has work when there are few slices (attention has one a
// head).
// - One thread, a product of one tj-token block (a decode step's) or per_thread == 0: the jobs are the parts with
//   all tokens, thread ith taking jobs ith, ith + nth, ...: no barrier, no shared counter.
// - Else each part's tokens are cut into groups of whole tj-token blocks too (~per_thread jobs a thread), and the
//   threads take the jobs from ggml's shared chunk counter as each finishes its last one (as ggml's own products and
//   llamafile's do; one barrier). A fixed share waits for the slowest thread, and on a VM one core can run 2x slower
//   than the other for a while (results/speed_llama.md section 21); the threads still meet at the node's end, each
//   waiting for the other's last job, so smaller jobs waste less there (section 25). A part's groups are numbered
//   next to each other so that the threads work on the same weight rows at a time, and each job packs its own
//   tokens: they are packed once a part, as with fixed shares.
// Either way every output comes from the same tile, its sum in the same k order: the same values bit for bit.
// Every thread of the node must call it with the same arguments (the shared jobs meet at a barrier).
template <typename F>
static inline void for_each_job(const struct ggml_compute_params * params, const struct ggml_tensor * src0,
                                const struct ggml_tensor * src1, struct ggml_tensor * dst, int64_t rm, int64_t tj,
                                int64_t per_thread, F && f) {
    GGML_TENSOR_BINARY_OP_LOCALS
    const int64_t r2 = ne12 / ne02, r3 = ne13 / ne03, slices = ne12 * ne13, nth = params->nth;
    const int64_t tiles = (ne01 + rm - 1) / rm, blocks = (ne11 + tj - 1) / tj;
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(tiles, (nth + slices - 1) / slices));
    const bool shared = per_thread > 0 && nth > 1 && blocks > 1;
    const int64_t wanted = (per_thread * nth + slices * parts - 1) / (slices * parts);  // groups a part
    const int64_t groups = shared ? std::min<int64_t>(blocks, wanted) : 1;
    const int64_t jobs = slices * parts * groups;
    if (shared) {
        if (params->ith == 0) {
            ggml_threadpool_chunk_set(params->threadpool, (int) nth);  // thread ith starts with job ith
        }
        ggml_barrier(params->threadpool);
    }
    for (int64_t job = params->ith; job < jobs; job = shared ? ggml_threadpool_chunk_add(params->threadpool, 1)
                                                             : job + nth) {
        const int64_t g = job % groups, p = job / groups % parts, s = job / (groups * parts);
        const int64_t i12 = s % ne12, i13 = s / ne12;
        const int64_t i_begin = tiles * p / parts * rm, i_end = std::min<int64_t>(ne01, tiles * (p + 1) / parts * rm);
        const int64_t j_begin = blocks * g / groups * tj;
        const int64_t j_end = g + 1 == groups ? ne11 : blocks * (g + 1) / groups * tj;
        if (i_begin < i_end && j_begin < j_end) {
            f(i_begin, i_end, j_end - j_begin, (const uint8_t *) src0->data + i12 / r2 * nb02 + i13 / r3 * nb03,
              (const float *) ((const char *) src1->data + i12 * nb12 + i13 * nb13 + j_begin * nb11),
              (float *) ((char *) dst->data + i12 * nb2 + i13 * nb3 + j_begin * nb1));
        }
    }
}

// change 18: jobs taken from both ends of one list. The first (nth+1)/2 threads take jobs from the list's front, the
// others from its back, each claiming about the jobs left / (2 nth) at a time (guided self-scheduling: few claims
// while much is left, single jobs where the threads meet); take(first, count) runs the jobs [first, first + count).
// Callers order their jobs so that a thread's end holds the work whose data it wrote in the nodes before (and reads
// again in the nodes after): with 2 threads, the first half of the tokens for one thread, the second for the other.
// Yet no share is fixed: the two ends move towards each other, and a thread whose core runs slower for a while
// (results/speed_llama.md section 21) takes fewer jobs while the other goes on into its part.
// The one counter ggml gives the threads (ggml_threadpool_chunk_add) counts both ends: the jobs taken from the front
// in its low 16 bits, from the back in the bits above; a claim is valid while the jobs taken before it, both ends,
// are fewer than all. More jobs than BOTH_ENDS_MAX_JOBS (a long prompt's) are all taken from the front. Every thread
// of the node must call it with the same jobs (one barrier first).
constexpr int64_t BOTH_ENDS_MAX_JOBS = 8192;  // each end's count, claims past the end included, fits its 16 bits

template <typename F>
static inline void claim_from_both_ends(const struct ggml_compute_params * params, int64_t jobs, F && take) {
    const int64_t nth = params->nth;
    const bool two = jobs <= BOTH_ENDS_MAX_JOBS;
    const bool back = two && params->ith >= (nth + 1) / 2;
    const int one = back ? 1 << 16 : 1;
    auto front_count = [two](int v) -> int64_t { return two ? v & 0xffff : v; };
    auto back_count = [two](int v) -> int64_t { return two ? v >> 16 : 0; };
    if (params->ith == 0) {
        ggml_threadpool_chunk_set(params->threadpool, 0);
    }
    ggml_barrier(params->threadpool);
    for (;;) {
        const int now = ggml_threadpool_chunk_add(params->threadpool, 0);  // read: a claim sized by what is left now
        const int64_t want = std::max<int64_t>(1, (jobs - front_count(now) - back_count(now)) / (2 * nth));
        const int before = ggml_threadpool_chunk_add(params->threadpool, (int) want * one);
        const int64_t from_front = front_count(before), from_back = back_count(before);
        if (from_front + from_back >= jobs) {
            return;
        }
        const int64_t got = std::min(want, jobs - from_front - from_back);
        take(back ? jobs - from_back - got : from_front, got);
    }
}

// a linear layer's product (one 2-D slice) on 2+ threads through claim_from_both_ends. The tokens are cut in two
// where ggml's row nodes cut them (ggml's ADD gives thread ith the rows [ith*dr, (ith+1)*dr), dr = ceil(n / nth);
// alignts_norm_mul_add does the same): the front's jobs are the first part's tokens, the back's the second's. A job
// is one row tile for a group of tj tokens; a part's jobs run tile by tile, so a thread's consecutive jobs reuse a
// tile's weights from L2 and are multiplied as one call. With 2 threads each thread computes all the outputs of its
// own tokens, the ones it reads again in the residual ADD, the LayerNorm and the next product, from its own L2; with
// for_each_job's jobs, half of each row came from the other core's (results/speed_llama.md section 26).
// The same tiles compute every output, the same k-ordered sums: the same values bit for bit as for_each_job's.
// false (nothing done; the caller runs for_each_job) for one thread, several slices or fewer than 2 tj tokens.
template <typename F>
static inline bool for_each_job_from_both_ends(const struct ggml_compute_params * params,
                                               const struct ggml_tensor * src0, const struct ggml_tensor * src1,
                                               struct ggml_tensor * dst, int64_t rm, int64_t tj, F && f) {
    GGML_TENSOR_BINARY_OP_LOCALS
    const int64_t nth = params->nth;
    if (nth < 2 || ne12 * ne13 != 1 || ne11 < 2 * tj) {
        return false;
    }
    const int64_t split = std::min(ne11, (ne11 + nth - 1) / nth * ((nth + 1) / 2));  // the front part's tokens
    const int64_t tiles = (ne01 + rm - 1) / rm;
    const int64_t groups[2] = {(split + tj - 1) / tj, (ne11 - split + tj - 1) / tj};  // tj tokens a group
    const int64_t jobs = tiles * (groups[0] + groups[1]), front_jobs = tiles * groups[0];
    // row tile `tile` for the tokens [j_begin, j_end): one call
    auto run = [&](int64_t tile, int64_t j_begin, int64_t j_end) {
        const int64_t i_begin = tile * rm, i_end = std::min(ne01, i_begin + rm);
        f(i_begin, i_end, j_end - j_begin, (const uint8_t *) src0->data,
          (const float *) ((const char *) src1->data + j_begin * nb11),
          (float *) ((char *) dst->data + j_begin * nb1));
    };
    claim_from_both_ends(params, jobs, [&](int64_t first, int64_t count) {
        // job `job`: tile local / groups, group local % groups of its part; the back part's jobs are listed last to
        // first, so that its threads, taking from the back, walk it in the front's order. Consecutive groups of one
        // tile run as one call.
        int64_t run_tile = -1, run_begin = 0, run_end = 0;
        for (int64_t job = first; job < first + count; ++job) {
            const int64_t part = job >= front_jobs, local = part ? jobs - 1 - job : job;
            const int64_t tile = local / groups[part], group = local % groups[part];
            const int64_t j_begin = (part ? split : 0) + group * tj;
            const int64_t j_end = std::min(part ? ne11 : split, j_begin + tj);
            if (tile == run_tile && (j_begin == run_end || j_end == run_begin)) {
                run_begin = std::min(run_begin, j_begin);
                run_end = std::max(run_end, j_end);
                continue;
            }
            if (run_tile >= 0) {
                run(run_tile, run_begin, run_end);
            }
            run_tile = tile, run_begin = j_begin, run_end = j_end;
        }
        run(run_tile, run_begin, run_end);
    });
    return true;
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
        alignts_ggml::for_each_job(params, src0, src1, dst, alignts_f32::RM, alignts_f32::TJ,
                                   alignts_ggml::SHARED_JOBS_PER_THREAD,
            [&](int64_t i_begin, int64_t i_end, int64_t n, const uint8_t * A, const float * B, float * C) {
                alignts_f32::gemm_rows(i_begin, i_end, n, ne00, reinterpret_cast<const float *>(A),
                                       nb01 / sizeof(float), B, nb11 / sizeof(float), C, nb1 / sizeof(float),
                                       Bp);  // Bp == nullptr: dot products
            });
        return true;
    }
#endif
#if defined(ALIGNTS_DOT_F16)
    // f16 rows against a decode step's few tokens: an f16 KV cache's attention (K, and V's transposed rows) and
    // f16 weights' products, the halves widened in registers (ggml would round the tokens to f16)
    if (src0->type == GGML_TYPE_F16 && nb00 == sizeof(uint16_t) && nb01 % sizeof(uint16_t) == 0
        && ne11 <= alignts_ggml::F16_DOT_TOKENS) {
        alignts_ggml::for_each_job(params, src0, src1, dst, alignts_f32::RD, alignts_f32::TJ, 0,  // decode
            [&](int64_t i_begin, int64_t i_end, int64_t n, const uint8_t * A, const float * B, float * C) {
                alignts_f32::dot_rows_f16(i_begin, i_end, n, ne00, reinterpret_cast<const uint16_t *>(A),
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
        // many tokens: the weight rows paired, each thread its fixed share once a call (no shared jobs)
        const bool paired = amx && ne11 >= alignts_amx::PAIRED_MIN_TOKENS;
#else
        const int64_t rm = alignts_bf16::RM;
        const bool paired = false;
#endif
        const int64_t lda = nb01 / sizeof(uint16_t), ldb = nb11 / sizeof(float), ldc = nb1 / sizeof(float);
        alignts_ggml::for_each_job(params, src0, src1, dst, rm, alignts_bf16::TJ,
                                   paired ? 0 : alignts_ggml::SHARED_JOBS_PER_THREAD,
            [&](int64_t i_begin, int64_t i_end, int64_t n, const uint8_t * A, const float * B, float * C) {
                const uint16_t * W = reinterpret_cast<const uint16_t *>(A);
#if defined(ALIGNTS_GEMM_AMX)
                // C's layout in the tiles (no transpose), the rows in whole blocks of 32 (a thread's share is,
                // unless it holds the product's last rows)
                if (paired && (i_end - i_begin) % alignts_amx::TR == 0) {
                    if (void * S = alignts_ggml::scratch(alignts_amx::paired_bytes(i_end - i_begin, ne00))) {
                        alignts_amx::gemm_rows_paired(i_begin, i_end, n, ne00, W, lda, B, ldb, C, ldc, S);
                        return;
                    }
                }
#endif
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
#endif
#if defined(ALIGNTS_GEMM_Q8_0)
    // a decode step's few tokens (1 .. FEW_MAX) read each weight row once for all of them, the rows in address order
    // (few_rows); VL and more run on the packed tiles
    if (src0->type == GGML_TYPE_Q8_0 && nb00 == (size_t) alignts_q8::BLOCK_BYTES && ne00 % alignts_q8::QK == 0) {
        const bool few = ne11 <= alignts_q8::FEW_MAX;  // one token block: never shared jobs
        void * P = alignts_ggml::scratch(few ? alignts_q8::few_pack_bytes(ne00, ne11)
                                             : sizeof(int32_t) * alignts_q8::pack_ints(ne00));
        alignts_ggml::for_each_job(params, src0, src1, dst, few ? 1 : alignts_q8::RM, alignts_q8::TJ,
                                   alignts_ggml::SHARED_JOBS_PER_THREAD,
            [&](int64_t i_begin, int64_t i_end, int64_t n, const uint8_t * A, const float * B, float * C) {
                const int64_t ldb = nb11 / sizeof(float), ldc = nb1 / sizeof(float);
                if (!P) {
                    alignts_q8::gemm_rows_unpacked(i_begin, i_end, n, ne00, A, nb01, B, ldb, C, ldc);
                } else if (few) {
                    alignts_q8::few_rows(i_begin, i_end, n, ne00, A, nb01, B, ldb, C, ldc,
                                         static_cast<uint8_t *>(P));
                } else {
                    alignts_q8::gemm_rows(i_begin, i_end, n, ne00, A, nb01, B, ldb, C, ldc,
                                          static_cast<int32_t *>(P));
                }
            });
        return true;
    }
#endif
    return false;
}

// f32 weights repacked into panels at load (native/ggml/alignts_panels_f32.h). scripts/patch_llama.py puts a tensor
// trait into ggml's repack.cpp whose choice, repack and product are these three, so that llama.cpp keeps the 2-D f32
// weights of its products in the CPU_REPACK buffer type (as it does q4_0 on AVX2 and ARM). ALIGNTS_F32_PANELS=0 in
// the environment keeps them where they were (alignts_sgemm_f32.h's path).

// whether this CPU variant repacks t: a contiguous 2-D f32 matrix whose rows are whole panels
extern "C" bool alignts_panels_f32_fits(const struct ggml_tensor * t) {
#if defined(ALIGNTS_PANELS_F32)
    static const bool on = [] {
        const char * e = std::getenv("ALIGNTS_F32_PANELS");
        return !(e && e[0] == '0' && e[1] == 0);
    }();
    return on && t->type == GGML_TYPE_F32 && t->ne[2] == 1 && t->ne[3] == 1 && t->ne[1] % alignts_panels::PW == 0
        && t->nb[0] == sizeof(float) && t->nb[1] == t->ne[0] * sizeof(float);
#else
    (void) t;
    return false;
#endif
}

// t's panels from its rows as llama.cpp read them (size == ggml_nbytes(t)); 0 when done
extern "C" int alignts_panels_f32_pack(struct ggml_tensor * t, const void * data, size_t size) {
#if defined(ALIGNTS_PANELS_F32)
    if (size != ggml_nbytes(t) || !alignts_panels_f32_fits(t)) {
        return -1;
    }
    alignts_panels::pack(static_cast<const float *>(data), t->ne[1], t->ne[0], t->ne[0], static_cast<float *>(t->data));
    return 0;
#else
    (void) t, (void) data, (void) size;
    return -1;
#endif
}

// one row of ggml's f32 softmax (alignts_ops.h, in ops.cpp: the function ggml's SOFT_MAX node calls for it)
extern "C" void alignts_soft_max_row(int n, float * dst, const float * src, const float * mask, float scale,
                                     float slope, float * wp);

// change 17: attention without a KV cache's flash path, kq = K x Q, sm = softmax(kq * scale + mask), kqv = V^T x sm
// as llama.cpp builds it (build_attn_mha: three nodes; ggml_cpu_try_fuse_ops checked that they follow each other and
// that kq and sm have one reader each), in one node. ggml writes kq and sm, ~T x T floats a head, and reads them back:
// an encoder's 4 series of 119 tokens are 2.7 MB a layer, past L2, and the product of K and Q ran at 41 GFLOP/s in a
// forecast against 70 on warm data. Here a job is one head's block of TJ query tokens (blocks as the products' own):
// its scores go to this thread's scratch (TJ x T floats, in L1/L2), each row through the softmax node's own row
// function, and straight into the KQV product: the token tile on the same operands in the same blocks, so the values
// are the three nodes' bit for bit.
// The outputs wait in the thread's scratch until every job is done (a barrier), then each thread copies its own to
// kqv: ggml's allocator may give kqv the memory of Q or K (freed after kq in its schedule), which later jobs still
// read. kq and sm are never written. false (ggml runs the three nodes) unless all are f32 with rows of floats, the
// mask is f32 or absent, there are no sinks nor ALiBi, and a thread's scratch stays under ATTENTION_SCRATCH_MAX.
// vt: the CONT node that made kqv's V (the transposed copy of V an encoder's attention makes every layer), or
// nullptr. Given it, the copy is not made: the KQV product reads V's rows in place as panels of 16 dimensions
// (alignts_panels::gemm_transposed), the same k-ordered sums as the token tile on the copy, so the fused node
// replaces four. Only where the panels exist, V's dimensions are contiguous and a multiple of 16, and every block has
// more than DOT_MAX tokens (the token tile takes a block of fewer as dot products, other sums); else false, and
// ggml makes the copy and this function is asked again without it.
extern "C" bool alignts_attention(const struct ggml_compute_params * params, const struct ggml_tensor * vt,
                                  struct ggml_tensor * kq, const struct ggml_tensor * sm, struct ggml_tensor * kqv) {
#if defined(ALIGNTS_SGEMM_F32)
    const struct ggml_tensor * K = kq->src[0], * Q = kq->src[1], * mask = sm->src[1];
    const struct ggml_tensor * V = vt ? vt->src[0] : kqv->src[0];  // V^T: [n_kv, dv], a view with dv's stride 4
    float scale = 1.0f, max_bias = 0.0f;
    std::memcpy(&scale, (const float *) sm->op_params + 0, sizeof(float));
    std::memcpy(&max_bias, (const float *) sm->op_params + 1, sizeof(float));
    const int64_t d = K->ne[0], n_kv = K->ne[1], T = Q->ne[1], dv = V->ne[1];
    const bool f32 = K->type == GGML_TYPE_F32 && Q->type == GGML_TYPE_F32 && V->type == GGML_TYPE_F32
        && kq->type == GGML_TYPE_F32 && sm->type == GGML_TYPE_F32 && kqv->type == GGML_TYPE_F32
        && (!mask || mask->type == GGML_TYPE_F32);
    constexpr int64_t TJ = alignts_f32::TJ;
    if (vt) {  // V read in place
#if defined(ALIGNTS_PANELS_F32)
        if (vt->op != GGML_OP_CONT || kqv->src[0] != vt || !ggml_are_same_shape(vt, V) || V->nb[1] != sizeof(float)
            || V->nb[0] % sizeof(float) || V->ne[1] % alignts_panels::PW || Q->ne[1] <= alignts_f32::DOT_MAX
            || (Q->ne[1] % TJ != 0 && Q->ne[1] % TJ <= alignts_f32::DOT_MAX)) {
            return false;
        }
#else
        return false;
#endif
    }
    if (params->use_ref || !f32 || sm->src[2] || max_bias != 0.0f || kqv->src[1] != sm
        || K->nb[0] != sizeof(float) || Q->nb[0] != sizeof(float) || K->nb[1] % sizeof(float)
        || Q->nb[1] % sizeof(float) || (!vt && (V->nb[0] != sizeof(float) || V->nb[1] % sizeof(float)))
        || !ggml_is_contiguous(kq) || !ggml_is_contiguous(kqv) || !ggml_are_same_shape(kq, sm)
        || Q->ne[0] != d || V->ne[0] != n_kv || kq->ne[0] != n_kv || kq->ne[1] != T || kq->ne[2] != Q->ne[2]
        || kq->ne[3] != Q->ne[3] || kqv->ne[0] != dv || kqv->ne[1] != T || kqv->ne[2] != Q->ne[2]
        || kqv->ne[3] != Q->ne[3] || Q->ne[2] % K->ne[2] || Q->ne[3] % K->ne[3] || Q->ne[2] % V->ne[2]
        || Q->ne[3] % V->ne[3]
        || (mask && (mask->nb[0] != sizeof(float) || mask->ne[0] < n_kv || mask->ne[1] < T))) {
        return false;
    }
    const int64_t nth = params->nth, heads = Q->ne[2], slices = heads * Q->ne[3];
    const int64_t blocks = (T + TJ - 1) / TJ, jobs = slices * blocks;
    // this thread's scratch: the pack (TJ tokens of up to max(d, n_kv) values), the scores, the softmax's row, the
    // outputs of its jobs (room for all of them: the jobs are handed out as the threads finish) and their numbers
    const int64_t kmax = std::max(d, n_kv);
    const int64_t floats = (TJ * kmax + TJ * n_kv + n_kv + 16 + jobs * TJ * dv + 1) / 2 * 2;  // the numbers 8-aligned
    const size_t bytes = sizeof(float) * floats + sizeof(int64_t) * jobs;
    if (bytes > alignts_ggml::ATTENTION_SCRATCH_MAX) {  // a long prompt's attention: ggml's three nodes
        return false;
    }
    float * Bp = static_cast<float *>(alignts_ggml::scratch(bytes));
    if (!Bp) {
        GGML_ABORT("alignts: no memory for the attention's %zu bytes of scratch", bytes);
    }
    float * S = Bp + TJ * kmax, * wp = S + TJ * n_kv, * O = wp + n_kv + 16;
    int64_t * mine = reinterpret_cast<int64_t *>(Bp + floats), n_mine = 0;
    const int64_t rk2 = Q->ne[2] / K->ne[2], rk3 = Q->ne[3] / K->ne[3];
    const int64_t rv2 = Q->ne[2] / V->ne[2], rv3 = Q->ne[3] / V->ne[3];
    // job `job`: head i2 of query block b of sequence i3, heads the fastest, so that the jobs follow the tokens'
    // order (change 18): from both ends of the list, each of 2 threads reads the queries its products wrote and
    // leaves its outputs in the rows the next product reads on it
    auto locate = [&](int64_t job, int64_t & i2, int64_t & i3, int64_t & j0, int64_t & n) {
        i2 = job % heads, i3 = job / (heads * blocks), j0 = job / heads % blocks * TJ, n = std::min(TJ, T - j0);
    };
    auto run = [&](int64_t job) {
        int64_t i2, i3, j0, n;
        locate(job, i2, i3, j0, n);
        const float * Kp = (const float *) ((const char *) K->data + i2 / rk2 * K->nb[2] + i3 / rk3 * K->nb[3]);
        const float * Qp = (const float *) ((const char *) Q->data + i2 * Q->nb[2] + i3 * Q->nb[3] + j0 * Q->nb[1]);
        const float * Vp = (const float *) ((const char *) V->data + i2 / rv2 * V->nb[2] + i3 / rv3 * V->nb[3]);
        alignts_f32::gemm_rows(0, n_kv, n, d, Kp, K->nb[1] / sizeof(float), Qp, Q->nb[1] / sizeof(float), S, n_kv,
                               Bp);
        for (int64_t t = 0; t < n; ++t) {
            const float * m = mask ? (const float *) ((const char *) mask->data + (j0 + t) * mask->nb[1]
                                                      + i2 % mask->ne[2] * mask->nb[2]
                                                      + i3 % mask->ne[3] * mask->nb[3]) : nullptr;
            alignts_soft_max_row((int) n_kv, S + t * n_kv, S + t * n_kv, m, scale, 1.0f, wp);
        }
        float * out = O + n_mine * TJ * dv;
        mine[n_mine++] = job;
#if defined(ALIGNTS_PANELS_F32)
        if (vt) {
            alignts_panels::gemm_transposed(dv, n, n_kv, Vp, V->nb[0] / sizeof(float), S, n_kv, out, dv);
            return;
        }
#endif
        alignts_f32::gemm_rows(0, dv, n, n_kv, Vp, V->nb[1] / sizeof(float), S, n_kv, out, dv, Bp);
    };
    if (nth > 1) {
        alignts_ggml::claim_from_both_ends(params, jobs, [&](int64_t first, int64_t count) {
            for (int64_t job = first; job < first + count; ++job) {
                run(job);
            }
        });
    } else {
        for (int64_t job = 0; job < jobs; ++job) {
            run(job);
        }
    }
    ggml_barrier(params->threadpool);  // every job has read Q, K and V: kqv may lie on them
    for (int64_t i = 0; i < n_mine; ++i) {  // a block's n x dv outputs to kqv's rows (contiguous)
        int64_t i2, i3, j0, n;
        locate(mine[i], i2, i3, j0, n);
        std::memcpy((char *) kqv->data + i2 * kqv->nb[2] + i3 * kqv->nb[3] + j0 * kqv->nb[1], O + i * TJ * dv,
                    sizeof(float) * n * dv);
    }
    return true;
#else
    (void) params, (void) vt, (void) kq, (void) sm, (void) kqv;
    return false;
#endif
}

// whether t's data are panels (repack.cpp: t lies in ggml's CPU_REPACK buffer with alignts' trait)
extern "C" bool alignts_is_panels(const struct ggml_tensor * t);
// one row of ggml's GELU node (alignts_ops.h, in ops.cpp: the function that node calls), in place where y == x
extern "C" void alignts_gelu_row_f32(int n, float * y, const float * x);

#if defined(ALIGNTS_PANELS_F32)
namespace alignts_ggml {
// dst = src0 x src1 (+ bias: dst->ne[0] floats, or nullptr; then GELU where gelu) for src0 repacked by
// alignts_panels_f32_pack; dst has the product's shape
static inline void panels_product(const struct ggml_compute_params * params, const struct ggml_tensor * src0,
                                  const struct ggml_tensor * src1, struct ggml_tensor * dst, const float * bias,
                                  bool gelu = false) {
    GGML_TENSOR_BINARY_OP_LOCALS
    const float * P = static_cast<const float *>(src0->data);
    if (nb10 == sizeof(float) && nb11 % sizeof(float) == 0 && nb1 % sizeof(float) == 0) {
        auto job = [&](int64_t i_begin, int64_t i_end, int64_t n, const uint8_t *, const float * B, float * C) {
            alignts_panels::gemm_rows(i_begin, i_end, n, ne00, P, B, nb11 / sizeof(float), C, nb1 / sizeof(float),
                                      bias);
            for (int64_t j = 0; gelu && j < n; ++j) {  // the job's outputs, still in L2, through the GELU node's row
                float * c = C + j * (nb1 / sizeof(float)) + i_begin;
                alignts_gelu_row_f32(static_cast<int>(i_end - i_begin), c, c);
            }
        };
        constexpr int64_t rm = alignts_panels::NP * alignts_panels::PW;
        if (for_each_job_from_both_ends(params, src0, src1, dst, rm, alignts_panels::TJ, job)) {
            return;
        }
        for_each_job(params, src0, src1, dst, rm, alignts_panels::TJ, alignts_panels::JOBS_PER_THREAD, job);
        return;
    }
    // activations that are not rows of floats (a view no llama.cpp graph hands a weight's product today): one
    // output at a time, the same k-ordered sum
    for (int64_t s = params->ith; s < ne11 * ne12 * ne13; s += params->nth) {
        const int64_t i11 = s % ne11, i12 = s / ne11 % ne12, i13 = s / (ne11 * ne12);
        const char * b = (const char *) src1->data + i11 * nb11 + i12 * nb12 + i13 * nb13;
        float * c = (float *) ((char *) dst->data + i11 * nb1 + i12 * nb2 + i13 * nb3);
        for (int64_t i = 0; i < ne01; ++i) {
            const float * p = alignts_panels::row_start(P, ne00, i);
            float sum = 0.0f;
            for (int64_t l = 0; l < ne00; ++l) {
                sum = std::fma(p[l * alignts_panels::PW], *(const float *) (b + l * nb10), sum);
            }
            c[i] = bias ? sum + bias[i] : sum;
        }
        if (gelu) {
            alignts_gelu_row_f32(static_cast<int>(ne01), c, c);
        }
    }
}
}  // namespace alignts_ggml
#endif

// dst = src0 x src1 for src0 repacked by alignts_panels_f32_pack; false only for types this trait never sees
// (ggml would then multiply the panels as rows: the caller must not let that happen)
extern "C" bool alignts_mul_mat_panels(const struct ggml_compute_params * params, const struct ggml_tensor * src0,
                                       const struct ggml_tensor * src1, struct ggml_tensor * dst) {
#if defined(ALIGNTS_PANELS_F32)
    if (src0->type != GGML_TYPE_F32 || src1->type != GGML_TYPE_F32 || dst->type != GGML_TYPE_F32) {
        return false;
    }
    alignts_ggml::panels_product(params, src0, src1, dst, nullptr);
    return true;
#else
    (void) params, (void) src0, (void) src1, (void) dst;
    return false;
#endif
}

// a linear layer's product of panels and the bias ADD node ggml runs right after it (ggml_cpu_try_fuse_ops, which
// checked that add follows mm, is mm's one reader and has its shape), in one pass: each output gets the product's
// f32 sum and then the bias, as the two nodes compute it, written to add's tensor only. One node and one barrier of
// ggml's threads fewer, and no second pass over the outputs. false (ggml runs both nodes) unless mm multiplies
// panels by f32 rows, the add's other operand is a contiguous f32 row of mm's width, and add's memory is not mm's
// activations': ggml's allocator puts add in place of mm's output, but were add given memory freed after mm (mm was
// the activations' last reader), the fused node would overwrite activations it still reads.
// With gelu (change 17: a GELU node after the add, the add's one reader, of its shape; an FFN's up projection; else
// nullptr), each job's outputs then go through the GELU node's own row function while they are in L2, written to
// gelu's tensor: the same values bit for bit (the rows a job writes are whole vectors, as the node's rows are), two
// nodes fewer.
extern "C" bool alignts_mul_mat_panels_add(const struct ggml_compute_params * params, const struct ggml_tensor * mm,
                                           const struct ggml_tensor * add, struct ggml_tensor * gelu) {
#if defined(ALIGNTS_PANELS_F32)
    const struct ggml_tensor * bias = add->src[0] == mm ? add->src[1] : add->src[0];
    struct ggml_tensor * dst = gelu ? gelu : const_cast<struct ggml_tensor *>(add);
    if (mm->src[1]->type != GGML_TYPE_F32 || mm->type != GGML_TYPE_F32 || add->type != GGML_TYPE_F32
        || !alignts_is_panels(mm->src[0]) || bias->type != GGML_TYPE_F32 || bias->ne[0] != mm->ne[0]
        || ggml_nelements(bias) != bias->ne[0] || bias->nb[0] != sizeof(float) || add->nb[0] != sizeof(float)
        || dst->type != GGML_TYPE_F32 || dst->nb[0] != sizeof(float)) {
        return false;
    }
    if (gelu && (gelu->op != GGML_OP_UNARY || ggml_get_unary_op(gelu) != GGML_UNARY_OP_GELU || gelu->src[0] != add
                 || !ggml_are_same_shape(gelu, add))) {
        return false;
    }
    const char * a0 = (const char *) dst->data, * b0 = (const char *) mm->src[1]->data;
    if (a0 < b0 + ggml_nbytes(mm->src[1]) && b0 < a0 + ggml_nbytes(dst)) {
        return false;
    }
    alignts_ggml::panels_product(params, mm->src[0], mm->src[1], dst, static_cast<const float *>(bias->data),
                                 gelu != nullptr);
    return true;
#else
    (void) params, (void) mm, (void) add, (void) gelu;
    return false;
#endif
}
