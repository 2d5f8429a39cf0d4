// native/ggml/alignts_gemm_bf16.h (the packed bf16 x f32 GEMM scripts/patch_llama.py puts into ggml's CPU backend)
// against a double-precision reference of the bf16-rounded operands (round to nearest even, as ggml rounds the
// activations): token remainders, strided rows, the columns past m untouched, the packed path, the one without
// a pack and, where the CPU and the kernel allow AMX-BF16, the tiles of alignts_gemm_amx.h (weight rows past the
// last full 32 on the packed path's tiles) and its paired-weights path (m a multiple of 32; rows in several
// chunks; a last block of fewer than 32 tokens, and 16 or fewer). Exits 77 (ctest: skipped) on a CPU without
// AVX-512 BF16.
#include "../ggml/alignts_gemm_amx.h"
#include "gemm_check.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

static uint16_t to_bf16(float f) {  // round to nearest even (finite values)
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static double from_bf16(uint16_t h) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

int main() {
#if !defined(ALIGNTS_GEMM_BF16)
    std::printf("built without AVX-512 BF16: nothing to test\n");
    return 77;
#else
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bf16")) {
        std::printf("SKIP: this CPU has no AVX-512 BF16\n");
        return 77;
    }
    using namespace alignts_bf16;
    const int64_t shapes[][3] = {{384, 66, 384}, {1536, 22, 384}, {384, 154, 1536}, {7, 17, 32}, {13, 33, 64},
                                 {25, 16, 96},   {5, 40, 32},     {1, 1, 32},        {11, 3, 64},
                                 {70, 40, 96},   {64, 16, 32},    {32, 1, 64},       {96, 7, 8448},
                                 {64, 200, 96},  {32, 129, 64},   {128, 160, 32},    {288, 40, 8448}};  // m, n, k
    std::mt19937 gen(0);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    int failures = 0;
#if defined(ALIGNTS_GEMM_AMX)
    const int paths = alignts_amx::available() ? 4 : 2;
    std::printf("AMX-BF16 tiles: %s\n", paths == 4 ? "tested" : "not on this CPU (or ALIGNTS_AMX=0)");
#else
    const int paths = 2;
    std::printf("AMX-BF16 tiles: not built (not x86-64 Linux)\n");
#endif
    for (const auto & s : shapes) {
        const int64_t m = s[0], n = s[1], k = s[2];
        const int64_t lda = k + 6, ldb = k + 5, ldc = m + 7;
        std::vector<uint16_t> A(m * lda);
        std::vector<float> B(n * ldb);
        for (auto & w : A) w = to_bf16(uni(gen));
        for (auto & x : B) x = uni(gen);
        uint32_t * Bp = static_cast<uint32_t *>(std::aligned_alloc(64, (sizeof(uint32_t) * pack_words(k) + 63) / 64 * 64));
        for (int path = 0; path < paths; ++path) {
            if (path == 3 && m % 32) {
                continue;  // the paired path takes whole blocks of 32 rows
            }
            std::vector<float> C(n * ldc, -7.0f);
            if (path == 0) gemm_rows_unpacked(0, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc);
            else if (path == 1) gemm_rows(0, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, Bp);
#if defined(ALIGNTS_GEMM_AMX)
            else if (path == 2) alignts_amx::gemm_rows(0, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, Bp);
            else {
                void * S = std::aligned_alloc(64, (alignts_amx::paired_bytes(m, k) + 63) / 64 * 64);
                alignts_amx::gemm_rows_paired(0, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, S);
                std::free(S);
            }
#endif
            static const char * names[] = {"unpacked", "packed", "amx", "amx paired"};
            failures += !check_gemm(m, n, k, C.data(), ldc, (double) k, names[path],
                [&](int64_t j, double * ref, double * mag) {
                    for (int64_t i = 0; i < m; ++i) {
                        ref[i] = mag[i] = 0.0;
                        for (int64_t l = 0; l < k; ++l) {
                            const double p = from_bf16(A[i * lda + l]) * from_bf16(to_bf16(B[j * ldb + l]));
                            ref[i] += p;
                            mag[i] += std::fabs(p);
                        }
                    }
                });
        }
        std::free(Bp);
    }
    return failures ? 1 : 0;
#endif
}
