// The few-token q8_0 kernel (one token) over a 95 MB q8_0 matrix streamed from DRAM, GB/s of weight bytes, best of
// 15, beside a plain AVX-512 read of the same bytes; one thread. FEW_PREFETCH varies by building against a copy of
// native/ggml/alignts_gemm_q8_0.h with the constant replaced (session 14, results/speed_llama.md section 14):
//   for pf in 0 4096 8192 16384 32768 65536; do
//     sed "s/constexpr int FEW_PREFETCH = 16384;/constexpr int FEW_PREFETCH = $pf;/" native/ggml/alignts_gemm_q8_0.h \
//       > /tmp/pf/alignts_gemm_q8_0.h
//     g++ -O2 -std=c++17 -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512vnni -I/tmp/pf \
//       results/speed_llama/few_prefetch.cpp -o /tmp/pf/bench_$pf && /tmp/pf/bench_$pf
//   done
// Argument 1 (session 28, section 28): 1 puts the matrix in transparent huge pages (madvise MADV_HUGEPAGE), 0 keeps
// it in 4 KB pages (MADV_NOHUGEPAGE); none leaves it to the kernel's THP mode, as sessions 14-23 ran it.
#include "alignts_gemm_q8_0.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <vector>
int main(int argc, char ** argv) {
    using namespace alignts_q8;
    const int64_t k = 768, m = 3072 * 38;  // 38 MLP-up sized matrices: 768 x 116736 rows x 816 B = 95 MB
    const int64_t nb = k / QK, lda = nb * BLOCK_BYTES;
    const size_t huge = size_t(2) << 20, bytes = (m * lda + huge - 1) / huge * huge;
    uint8_t * A = static_cast<uint8_t *>(std::aligned_alloc(huge, bytes));
    const char * pages = argc > 1 ? (std::atoi(argv[1]) ? "huge" : "4 KB") : "THP mode";
    if (argc > 1) madvise(A, bytes, std::atoi(argv[1]) ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
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
    std::printf("prefetch %6d, pages %s: few_rows %.1f GB/s, plain read %.1f GB/s (%.0f MB)\n", FEW_PREFETCH, pages,
                m * lda / best / 1e9, m * lda / best_read / 1e9, m * lda / 1e6);
}
