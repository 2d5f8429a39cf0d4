// (session 28, results/speed_llama.md section 28) the few-token q8_0 kernel over a 12-layer GPT-2's weights as
// llama.cpp lays them out (qkv, o, up, down a layer, contiguous), one token, best of 15, GB/s of weight bytes;
// argument 1: huge pages (1) or 4 KB (0); argument 2: bytes of a layer's K and V read after its output product (0:
// none). Built as few_prefetch.cpp says (a copy of the header with FEW_PREFETCH replaced).
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
    const int64_t kv = argc > 2 ? atoll(argv[2]) : 0;  // bytes of "attention" read after each layer's products
    const int64_t d = 768;
    const int64_t shapes[4][2] = {{d, 3 * d}, {d, d}, {d, 4 * d}, {4 * d, d}};  // k, rows
    std::vector<int64_t> off;
    int64_t total = 0;
    for (int l = 0; l < 12; ++l)
        for (auto & s : shapes) { off.push_back(total); total += s[1] * (s[0] / QK) * BLOCK_BYTES; }
    size_t bytes = (total + (2 << 20) - 1) / (2 << 20) * (2 << 20);
    uint8_t * A = static_cast<uint8_t *>(std::aligned_alloc(2 << 20, bytes));
    madvise(A, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (int64_t i = 0; i < total; ++i) A[i] = (uint8_t) (i * 2654435761u >> 24);
    for (int64_t i = 0; i + BLOCK_BYTES <= total; i += BLOCK_BYTES) { uint16_t h = _cvtss_sh(0.01f, 0); std::memcpy(&A[i], &h, 2); }
    std::vector<float> B(4 * d, 0.5f), C(4 * d);
    uint8_t * F = static_cast<uint8_t *>(std::aligned_alloc(64, few_pack_bytes(4 * d, FEW_MAX)));
    const int64_t kvb = kv * 12 + 64;
    uint8_t * KV = static_cast<uint8_t *>(std::aligned_alloc(2 << 20, (kvb + (2 << 20)) / (2 << 20) * (2 << 20)));
    madvise(KV, kvb, MADV_HUGEPAGE);
    std::memset(KV, 1, kvb);
    volatile long long sink = 0;
    double best = 1e9, best_kv = 1e9;
    for (int r = 0; r < 15; ++r) {
        double t_kv = 0;
        auto t0 = std::chrono::steady_clock::now();
        int i = 0;
        for (int l = 0; l < 12; ++l)
            for (auto & s : shapes) {
                const int64_t k = s[0], m = s[1], lda = k / QK * BLOCK_BYTES;
                few_rows(0, m, 1, k, A + off[i++], lda, B.data(), k, C.data(), m, F);
                if (&s == &shapes[1] && kv) {  // after the attention output product: the layer's K and V
                    auto k0 = std::chrono::steady_clock::now();
                    __m512i acc = _mm512_setzero_si512();
                    for (int64_t b = 0; b < kv; b += 64) acc = _mm512_add_epi64(acc, _mm512_load_si512(KV + l * kv + b));
                    sink += _mm512_reduce_add_epi64(acc);
                    t_kv += std::chrono::duration<double>(std::chrono::steady_clock::now() - k0).count();
                }
            }
        auto t1 = std::chrono::steady_clock::now();
        best = std::min(best, std::chrono::duration<double>(t1 - t0).count() - t_kv);
        best_kv = std::min(best_kv, t_kv);
    }
    std::printf("huge %d prefetch %6d kv %7ld: 12 layers' products %.1f GB/s (%.3f ms), kv reads %.3f ms\n", (int) huge,
                FEW_PREFETCH, (long) kv, total / best / 1e9, best * 1e3, best_kv * 1e3);
}
