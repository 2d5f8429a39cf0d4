// native/ggml/alignts_gemm_q8_0.h (the packed q8_0 x f32 GEMM scripts/patch_llama.py puts into ggml's CPU backend)
// against a reference that quantizes the activations as ggml does (d = max|x| / 127 kept as f16, q = round(x / d))
// and sums the exact integer block products in double: shapes with token remainders, strided rows (the columns past
// m untouched), the packed path, the one without a pack and the few-token one (n < 16; odd block counts too).
// Exits 77 (ctest: skipped) on a CPU without AVX-512 VNNI.
#include "../ggml/alignts_gemm_q8_0.h"
#include "gemm_check.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

int main() {
#if !defined(ALIGNTS_GEMM_Q8_0)
    std::printf("built without AVX-512 VNNI: nothing to test\n");
    return 77;
#else
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")
        || !__builtin_cpu_supports("avx512vnni")) {
        std::printf("SKIP: this CPU has no AVX-512 VNNI\n");
        return 77;
    }
    using namespace alignts_q8;
    const int64_t shapes[][3] = {{384, 66, 384}, {1536, 22, 384}, {384, 154, 1536}, {7, 17, 32}, {13, 33, 64},
                                 {25, 16, 96},   {5, 40, 32},     {1, 1, 32},        {11, 3, 64},
                                 {387, 1, 768},  {64, 15, 96},    {9, 7, 1536},      {6, 2, 160}};  // m, n, k
    std::mt19937 gen(0);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::uniform_int_distribution<int> qi(-127, 127);
    int failures = 0;
    for (const auto & s : shapes) {
        const int64_t m = s[0], n = s[1], k = s[2], nb = k / QK;
        const int64_t lda = nb * BLOCK_BYTES + 6, ldb = k + 5, ldc = m + 7;
        std::vector<uint8_t> A(m * lda);
        std::vector<float> B(n * ldb);
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t b = 0; b < nb; ++b) {
                const uint16_t d = _cvtss_sh(0.001f + 0.01f * std::fabs(uni(gen)), 0);
                std::memcpy(&A[i * lda + b * BLOCK_BYTES], &d, sizeof d);
                for (int l = 0; l < QK; ++l) A[i * lda + b * BLOCK_BYTES + 2 + l] = (uint8_t) (int8_t) qi(gen);
            }
        }
        for (auto & x : B) x = uni(gen);
        for (int j = 0; j < 5; ++j) B[j] = 0.0f;  // a block of zeros: scale 0
        int32_t * P = static_cast<int32_t *>(std::aligned_alloc(64, (sizeof(int32_t) * pack_ints(k) + 63) / 64 * 64));
        uint8_t * F = static_cast<uint8_t *>(std::aligned_alloc(64, few_pack_bytes(k, FEW_MAX)));
        const char * paths[] = {"unpacked", "packed", "few tokens"};
        for (int path = 0; path < (n <= FEW_MAX ? 3 : 2); ++path) {
            std::vector<float> C(n * ldc, -7.0f);
            if (path == 0) gemm_rows_unpacked(0, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc);
            if (path == 1) gemm_rows(0, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, P);
            if (path == 2) few_rows(0, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, F);
            // f32 sums over nb blocks of f32 products: a few rounding steps per block, with room
            failures += !check_gemm(m, n, k, C.data(), ldc, 4.0 * (double) nb, paths[path],
                [&](int64_t j, double * ref, double * mag) {
                    std::vector<int8_t> q(k);
                    std::vector<double> dx(nb);
                    for (int64_t b = 0; b < nb; ++b) {
                        float amax = 0.0f;
                        for (int l = 0; l < QK; ++l) amax = std::fmax(amax, std::fabs(B[j * ldb + b * QK + l]));
                        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                        dx[b] = _cvtsh_ss(_cvtss_sh(d, 0));
                        for (int l = 0; l < QK; ++l) q[b * QK + l] = (int8_t) std::nearbyint(B[j * ldb + b * QK + l] * id);
                    }
                    for (int64_t i = 0; i < m; ++i) {
                        ref[i] = mag[i] = 0.0;
                        for (int64_t b = 0; b < nb; ++b) {
                            uint16_t h;
                            std::memcpy(&h, &A[i * lda + b * BLOCK_BYTES], sizeof h);
                            long dot = 0;
                            for (int l = 0; l < QK; ++l) dot += (long) (int8_t) A[i * lda + b * BLOCK_BYTES + 2 + l] * q[b * QK + l];
                            ref[i] += _cvtsh_ss(h) * dx[b] * (double) dot;
                            mag[i] += std::fabs(_cvtsh_ss(h) * dx[b] * (double) dot);
                        }
                    }
                });
        }
        std::free(P);
        std::free(F);
    }
    return failures ? 1 : 0;
#endif
}
