// native/ggml/alignts_sgemm_f32.h (the packed f32 GEMM scripts/patch_llama.py puts into ggml's CPU backend)
// against a double-precision reference: shapes with every kind of remainder (tokens < a vector, a few tokens past
// a block, k not a multiple of the vector width), row strides wider than the rows (ggml's permuted views), the
// columns past m untouched, and the path without a packing buffer; and the f16 rows of an f16 KV cache's decode
// products (dot_rows_f16); and native/ggml/alignts_panels_f32.h (the weights repacked into 16-row panels at load,
// and a transposed matrix read in place as panels):
// the same checks, its tile's sums bit for bit those of the packed tile wherever that one runs its tile. Built once with AVX2+FMA+F16C and once with AVX-512 flags; a build whose instructions
// this CPU lacks exits 77 (ctest: skipped).
#include "../ggml/alignts_panels_f32.h"
#include "../ggml/alignts_sgemm_f32.h"
#include "gemm_check.h"

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

// the double-precision reference of token j: ref[i] = sum_l A[i][l] B[j][l] and mag[i] = the sum of the |terms|
static void reference(int64_t m, int64_t k, const float * A, int64_t lda, const float * B, int64_t ldb, int64_t j,
                      double * ref, double * mag) {
    for (int64_t i = 0; i < m; ++i) {
        ref[i] = mag[i] = 0.0;
        for (int64_t l = 0; l < k; ++l) {
            ref[i] += (double) A[i * lda + l] * B[j * ldb + l];
            mag[i] += std::fabs((double) A[i * lda + l] * B[j * ldb + l]);
        }
    }
}

int main() {
#if !defined(ALIGNTS_SGEMM_F32)
    std::printf("built without AVX2+FMA / AVX-512: nothing to test\n");
    return 77;
#else
#if defined(__AVX512F__)
    if (!__builtin_cpu_supports("avx512f")) {
        std::printf("SKIP: this CPU has no AVX-512\n");
        return 77;
    }
#else
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) {
        std::printf("SKIP: this CPU has no AVX2+FMA+F16C\n");
        return 77;
    }
#endif
    const int64_t shapes[][3] = {  // m (weight rows), n (tokens), k
        {384, 66, 384}, {1536, 22, 384}, {384, 154, 1536}, {66, 66, 32}, {32, 66, 66}, {7, 17, 5},
        {13, 33, 19},   {25, 16, 3},     {21, 3, 19},       {40, 50, 17}, {9, 100, 8}, {1, 1, 1},
        {12, 32, 16},   {5, 47, 100},    {100, 9, 7},      {8, 48, 40},  {17, 95, 33}, {24, 64, 9},
        {420, 1, 64}, {64, 1, 420}};  // the last two: a decode step's attention
    std::mt19937 gen(0);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    int failures = 0;
    for (const auto & s : shapes) {
        const int64_t m = s[0], n = s[1], k = s[2];
        const int64_t lda = k + 3, ldb = k + 5, ldc = m + 7;  // strided rows, as ggml's views
        std::vector<float> A(m * lda), B(n * ldb);
        for (auto & x : A) x = uni(gen);
        for (auto & x : B) x = uni(gen);
        float * Bp = static_cast<float *>(std::aligned_alloc(64, (sizeof(float) * k * alignts_f32::TJ + 63) / 64 * 64));
        for (int buffered = 0; buffered < 2; ++buffered) {
            std::vector<float> C(n * ldc, -7.0f);
            // two row ranges, as two threads split them
            const int64_t half = (m / 2 + alignts_f32::RM - 1) / alignts_f32::RM * alignts_f32::RM;
            const int64_t cut = half < m ? half : m;
            alignts_f32::gemm_rows(0, cut, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, buffered ? Bp : nullptr);
            alignts_f32::gemm_rows(cut, m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, buffered ? Bp : nullptr);
            // f32 accumulation over k terms: k rounding steps of sum |a b|, with room
            failures += !check_gemm(m, n, k, C.data(), ldc, (double) k, buffered ? "packed" : "dot products",
                [&](int64_t j, double * ref, double * mag) {
                    reference(m, k, A.data(), lda, B.data(), ldb, j, ref, mag);
                });
        }
        std::free(Bp);
    }
#if defined(ALIGNTS_DOT_F16)
    // f16 rows: a decode step's attention against an f16 KV cache (K: a few query tokens a head, k = head size; V
    // transposed: k = cells), up to the 32 query tokens alignts_gemm.h sends here; the halves widen exactly, so the
    // reference takes the widened values
    const int64_t hshapes[][3] = {{420, 1, 64}, {64, 1, 420}, {320, 20, 64}, {64, 20, 320}, {7, 3, 5},
                                  {33, 8, 17},  {12, 32, 100}, {5, 15, 16}, {1, 1, 1}};
    for (const auto & s : hshapes) {
        const int64_t m = s[0], n = s[1], k = s[2];
        const int64_t lda = k + 3, ldb = k + 5, ldc = m + 7;
        std::vector<uint16_t> Ah(m * lda);
        std::vector<float> Aw(m * lda), B(n * ldb), C(n * ldc, -7.0f);
        for (int64_t i = 0; i < m * lda; ++i) {
            Ah[i] = _cvtss_sh(uni(gen), 0);
            Aw[i] = _cvtsh_ss(Ah[i]);
        }
        for (auto & x : B) x = uni(gen);
        const int64_t cut = m / 2;  // two threads' row ranges
        alignts_f32::dot_rows_f16(0, cut, n, k, Ah.data(), lda, B.data(), ldb, C.data(), ldc);
        alignts_f32::dot_rows_f16(cut, m, n, k, Ah.data(), lda, B.data(), ldb, C.data(), ldc);
        failures += !check_gemm(m, n, k, C.data(), ldc, (double) k, "f16 rows",
            [&](int64_t j, double * ref, double * mag) {
                reference(m, k, Aw.data(), lda, B.data(), ldb, j, ref, mag);
            });
    }
#else
#error "the f16 rows are part of this test: build it with -mf16c"
#endif
    // the weights as panels: rows a multiple of 16 (the tensors llama.cpp repacks), all kinds of token and k
    // remainders, the rows split at a 3-panel boundary as ggml's threads split them, source rows strided
    const int64_t pshapes[][3] = {{384, 154, 384}, {1536, 22, 384}, {384, 66, 1536}, {16, 1, 1}, {32, 7, 5},
                                  {48, 9, 17},     {80, 50, 33},    {64, 1, 420},    {112, 13, 3}, {16, 100, 64},
                                  {96, 48, 40},    {144, 95, 7}};
    for (const auto & s : pshapes) {
        const int64_t m = s[0], n = s[1], k = s[2];
        const int64_t lda = k + 3, ldb = k + 5, ldc = m + 7;
        std::vector<float> A(m * lda), B(n * ldb), C(n * ldc, -7.0f), Ct(n * ldc, -7.0f);
        for (auto & x : A) x = uni(gen);
        for (auto & x : B) x = uni(gen);
        // 32 bytes past a line, as ggml's 32-byte tensor alignment allows (the kernels must not assume 64)
        float * P0 = static_cast<float *>(std::aligned_alloc(64, (sizeof(float) * (m * k + 8) + 63) / 64 * 64));
        float * P = P0 + 8;
        alignts_panels::pack(A.data(), m, k, lda, P);
        const int64_t rows = alignts_panels::NP * alignts_panels::PW;
        const int64_t cut = std::min<int64_t>(m, (m / 2 + rows - 1) / rows * rows);
        alignts_panels::gemm_rows(0, cut, n, k, P, B.data(), ldb, C.data(), ldc);
        alignts_panels::gemm_rows(cut, m, n, k, P, B.data(), ldb, C.data(), ldc);
        failures += !check_gemm(m, n, k, C.data(), ldc, (double) k, "panels",
            [&](int64_t j, double * ref, double * mag) {
                reference(m, k, A.data(), lda, B.data(), ldb, j, ref, mag);
            });
        // a bias fused into the stores (ggml's ADD node after the product): the sums, then + bias[i], bit for bit
        std::vector<float> bias(m), Cb(n * ldc, -7.0f);
        for (auto & x : bias) x = uni(gen);
        alignts_panels::gemm_rows(0, cut, n, k, P, B.data(), ldb, Cb.data(), ldc, bias.data());
        alignts_panels::gemm_rows(cut, m, n, k, P, B.data(), ldb, Cb.data(), ldc, bias.data());
        bool biased = true;
        for (int64_t j = 0; j < n; ++j) {
            for (int64_t i = 0; i < ldc; ++i) {
                const float want = i < m ? C[j * ldc + i] + bias[i] : -7.0f;
                biased = biased && std::memcmp(&want, &Cb[j * ldc + i], sizeof(float)) == 0;
            }
        }
        std::printf("%s m=%ld n=%ld k=%ld panels with the bias fused: the product + bias bit for bit\n",
                    biased ? "ok  " : "FAIL", (long) m, (long) n, (long) k);
        failures += !biased;
        // every block of the packed tile past DOT_MAX tokens: the same k-ordered sums, bit for bit
        if (n % alignts_f32::TJ == 0 || n % alignts_f32::TJ > alignts_f32::DOT_MAX) {
            float * Bp = static_cast<float *>(
                std::aligned_alloc(64, (sizeof(float) * k * alignts_f32::TJ + 63) / 64 * 64));
            alignts_f32::gemm_rows(0, m, n, k, A.data(), lda, B.data(), ldb, Ct.data(), ldc, Bp);
            std::free(Bp);
            const bool same = std::memcmp(C.data(), Ct.data(), sizeof(float) * C.size()) == 0;
            std::printf("%s m=%ld n=%ld k=%ld panels and the packed tile bit for bit\n", same ? "ok  " : "FAIL",
                        (long) m, (long) n, (long) k);
            failures += !same;
        }
        // A given as its transpose and read in place as panels (attention's V, change 17): the same sums bit for bit
        const int64_t ldv = m + 9;
        std::vector<float> V(k * ldv, 5.0f), Cv(n * ldc, -7.0f);
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t l = 0; l < k; ++l) {
                V[l * ldv + i] = A[i * lda + l];
            }
        }
        alignts_panels::gemm_transposed(m, n, k, V.data(), ldv, B.data(), ldb, Cv.data(), ldc);
        const bool transposed = std::memcmp(C.data(), Cv.data(), sizeof(float) * C.size()) == 0;
        std::printf("%s m=%ld n=%ld k=%ld A read in place as its transpose: the panels' sums bit for bit\n",
                    transposed ? "ok  " : "FAIL", (long) m, (long) n, (long) k);
        failures += !transposed;
        std::free(P0);
    }
    return failures ? 1 : 0;
#endif
}
