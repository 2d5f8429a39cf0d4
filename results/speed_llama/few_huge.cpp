// (session 28, results/speed_llama.md section 28) few_prefetch.cpp's bench with the matrix in huge pages or 4 KB
// ones: the few-token q8_0 kernel (one token) over 95 MB, beside a plain AVX-512 read, best of 15, one thread.
// Built as few_prefetch.cpp says (a copy of the header with FEW_PREFETCH replaced); argument 1: madvise huge.
#include "alignts_gemm_q8_0.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <vector>
int main(int argc, char ** argv) {
    using namespace alignts_q8;
    const bool huge = argc > 1 && atoi(argv[1]);
    const int64_t k = 768, m = 3072 * 38;
    const int64_t nb = k / QK, lda = nb * BLOCK_BYTES;
    size_t bytes = (m * lda + (2 << 20) - 1) / (2 << 20) * (2 << 20);
    uint8_t * A = static_cast<uint8_t *>(std::aligned_alloc(2 << 20, bytes));
    if (huge) madvise(A, bytes, MADV_HUGEPAGE); else madvise(A, bytes, MADV_NOHUGEPAGE);
    for (int64_t i = 0; i < m * lda; ++i) A[i] = (uint8_t) (i * 2654435761u >> 24);
    for (int64_t i = 0; i < m; ++i) for (int64_t b = 0; b < nb; ++b) { uint16_t d = _cvtss_sh(0.01f, 0); std::memcpy(&A[i * lda + b * BLOCK_BYTES], &d, 2); }
    std::vector<float> B(k, 0.5f), C(m);
    uint8_t * F = static_cast<uint8_t *>(std::aligned_alloc(64, few_pack_bytes(k, FEW_MAX)));
    double best = 1e9, best_read = 1e9;
    volatile long long sink = 0;
    for (int r = 0; r < 15; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        few_rows(0, m, 1, k, A, lda, B.data(), k, C.data(), m, F);
        auto t1 = std::chrono::steady_clock::now();
        __m512i s = _mm512_setzero_si512();
        for (int64_t i = 0; i + 64 <= m * lda; i += 64) s = _mm512_add_epi64(s, _mm512_loadu_si512(&A[i]));
        sink += _mm512_reduce_add_epi64(s);
        auto t2 = std::chrono::steady_clock::now();
        best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
        best_read = std::min(best_read, std::chrono::duration<double>(t2 - t1).count());
    }
    std::printf("huge %d prefetch %6d: few_rows %.1f GB/s, plain read %.1f GB/s\n", (int) huge, FEW_PREFETCH,
                m * lda / best / 1e9, m * lda / best_read / 1e9);
}
