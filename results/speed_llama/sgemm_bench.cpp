// The packed f32 GEMM (native/ggml/alignts_sgemm_f32.h) against a dot-product kernel with tinyBLAS's tiling (4 weight
// rows x 6 tokens of 16-float accumulators, one horizontal sum per output; llamafile/sgemm.cpp's f32 AVX-512
// path), and the packed bf16 and q8_0 GEMMs (alignts_gemm_bf16.h, alignts_gemm_q8_0.h), one thread, on MiniLM's
// shapes. Prints GFLOP/s (GOP/s for q8_0; best of 7 x 20 calls) and the f32 kernels' max abs difference.
//   g++ -O3 -std=c++17 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512bf16 -mf16c -mavx2 -mfma \
//       -o sgemm_bench results/speed_llama/sgemm_bench.cpp && ./sgemm_bench
#include "../../native/ggml/alignts_gemm_bf16.h"
#include "../../native/ggml/alignts_gemm_q8_0.h"
#include "../../native/ggml/alignts_sgemm_f32.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <vector>

template <int RM, int RN>
static void dot_tile(const float * A, int64_t lda, const float * B, int64_t ldb, float * C, int64_t ldc, int64_t k,
                     int64_t ii, int64_t jj) {
    __m512 acc[RN][RM];
    for (int j = 0; j < RN; ++j) for (int i = 0; i < RM; ++i) acc[j][i] = _mm512_setzero_ps();
    for (int64_t l = 0; l < k; l += 16) {
        __m512 a[RM];
        for (int i = 0; i < RM; ++i) a[i] = _mm512_loadu_ps(A + lda * (ii + i) + l);
        for (int j = 0; j < RN; ++j) {
            const __m512 b = _mm512_loadu_ps(B + ldb * (jj + j) + l);
            for (int i = 0; i < RM; ++i) acc[j][i] = _mm512_fmadd_ps(a[i], b, acc[j][i]);
        }
    }
    for (int j = 0; j < RN; ++j) for (int i = 0; i < RM; ++i) C[ldc * (jj + j) + ii + i] = _mm512_reduce_add_ps(acc[j][i]);
}

static void dot_gemm(int64_t m, int64_t n, int64_t k, const float * A, const float * B, float * C) {
    for (int64_t ii = 0; ii < m; ii += 4) {
        int64_t jj = 0;
        for (; jj + 6 <= n; jj += 6) dot_tile<4, 6>(A, k, B, k, C, m, k, ii, jj);
        for (; jj < n; ++jj) dot_tile<4, 1>(A, k, B, k, C, m, k, ii, jj);
    }
}

int main() {
    const int64_t shapes[][3] = {{384, 66, 384}, {1536, 66, 384}, {384, 66, 1536}, {384, 154, 384}, {1536, 154, 384},
                                 {384, 154, 1536}, {64, 66, 32}, {32, 66, 64}};  // m (rows, a multiple of 4), n (tokens), k
    std::mt19937 gen(0);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::printf("| m (weight rows) | n (tokens) | k | tinyBLAS-style dot tiles GFLOP/s | packed f32 GFLOP/s | max abs diff "
                "| packed bf16 GFLOP/s | packed q8_0 GOP/s |\n");
    std::printf("|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (const auto & s : shapes) {
        const int64_t m = s[0], n = s[1], k = s[2];
        std::vector<float> A(m * k), B(n * k), C1(n * m), C2(n * m);
        for (auto & x : A) x = uni(gen);
        for (auto & x : B) x = uni(gen);
        float * Bp = static_cast<float *>(std::aligned_alloc(64, (sizeof(float) * k * alignts_f32::TJ + 63) / 64 * 64));
        auto best = [&](auto f) {
            double t = 1e9;
            for (int rep = 0; rep < 7; ++rep) {
                const auto t0 = std::chrono::steady_clock::now();
                for (int it = 0; it < 20; ++it) f();
                t = std::min(t, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 20);
            }
            return t;
        };
        const double td = best([&] { dot_gemm(m, n, k, A.data(), B.data(), C1.data()); });
        const double tp = best([&] { alignts_f32::gemm_rows(0, m, n, k, A.data(), k, B.data(), k, C2.data(), m, Bp); });
        float diff = 0.0f;
        for (int64_t i = 0; i < n * m; ++i) diff = std::max(diff, std::fabs(C1[i] - C2[i]));
        const double flop = 2.0 * m * n * k;
        // q8_0 weights of the same shape (k a multiple of 32)
        const int64_t nb = k / alignts_q8::QK;
        std::vector<uint8_t> Aq(m * nb * alignts_q8::BLOCK_BYTES);
        for (size_t i = 0; i < Aq.size(); ++i) Aq[i] = (uint8_t) (gen() & 0x3f);  // scales ~1e-6..4e-3, small ints
        int32_t * P = static_cast<int32_t *>(std::aligned_alloc(64, (sizeof(int32_t) * alignts_q8::pack_ints(k) + 63) / 64 * 64));
        const double tq = best([&] {
            alignts_q8::gemm_rows(0, m, n, k, Aq.data(), nb * alignts_q8::BLOCK_BYTES, B.data(), k, C2.data(), m, P);
        });
        std::free(P);
        // bf16 weights of the same shape (k a multiple of 32)
        std::vector<uint16_t> Ab(m * k);
        for (auto & w : Ab) w = (uint16_t) (0x3c00 + (gen() & 0x3ff));  // ~0.008..0.03
        uint32_t * Pb = static_cast<uint32_t *>(std::aligned_alloc(64, (sizeof(uint32_t) * alignts_bf16::pack_words(k) + 63) / 64 * 64));
        const double tb = best([&] { alignts_bf16::gemm_rows(0, m, n, k, Ab.data(), k, B.data(), k, C2.data(), m, Pb); });
        std::free(Pb);
        std::printf("| %ld | %ld | %ld | %.0f | %.0f | %.1e | %.0f | %.0f |\n", (long) m, (long) n, (long) k,
                    flop / td / 1e9, flop / tp / 1e9, diff, flop / tb / 1e9, flop / tq / 1e9);
        std::free(Bp);
    }
}
