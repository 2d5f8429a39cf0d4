// The AMX bf16 products of native/ggml/alignts_gemm_amx.h on MiniLM's shapes, each timed beside a register-only
// tdpbf16ps loop in the same round (this VM's AMX rate swings 2.4x from one tenth of a second to the next, section
// 17), so every figure is a fraction of what the tiles did in that moment: gemm_rows (weights as A, packed tokens as
// B, a transposed store a 32 x 32 block), the same blocks from a pack made beforehand with and without the
// transposed store (where the time goes), and gemm_rows_paired (change 12: tokens as A, paired weights as B, the
// tiles stored into C). One thread, operands hot in the caches; 40 rounds, medians. Also the largest difference
// between gemm_rows and gemm_rows_paired (the same sums: 0).
//   g++ -O2 -march=sapphirerapids -I native/ggml -o /tmp/amx_paired_bench results/speed_llama/amx_paired_bench.cpp
//   /tmp/amx_paired_bench          (session 17: amx_paired_bench.txt)
#include "alignts_gemm_amx.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#if !defined(ALIGNTS_GEMM_AMX)
int main() { std::printf("built without the AMX path\n"); return 0; }
#else
using namespace alignts_amx;
#define TL(t, base, stride) asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((int64_t) (stride)) : "memory")
#define TS(t, base, stride) asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"((int64_t) (stride)) : "memory")
#define TDP(c, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

alignas(64) static uint16_t ones[512];

static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

static double tdp_only(long n) {  // GFLOP/s
    load_config();
    TL(4, ones, 64);
    TL(5, ones, 64);
    TL(6, ones, 64);
    TL(7, ones, 64);
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
        TDP(0, 4, 6);
        TDP(1, 4, 7);
        TDP(2, 5, 6);
        TDP(3, 5, 7);
    }
    const double s = seconds_since(t0);
    release();
    return 4.0 * n * 16 * 16 * 32 * 2 / s / 1e9;
}

// block() without its transposed store: the four tiles into a scratch
static void block_no_store(const uint16_t * A, int64_t lda, const uint32_t * Bp, int64_t k, float * out, int64_t i0) {
    const uint16_t * a0 = A + i0 * lda;
    const uint16_t * a1 = a0 + 16 * lda;
    asm volatile("tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3" ::);
    for (int64_t l = 0; l < k; l += 32) {
        const uint32_t * b = Bp + l / 2 * TT;
        TL(4, a0 + l, lda * 2);
        TL(6, b, TT * 4);
        TL(7, b + 16, TT * 4);
        TDP(0, 4, 6);
        TDP(1, 4, 7);
        TL(5, a1 + l, lda * 2);
        TDP(2, 5, 6);
        TDP(3, 5, 7);
    }
    TS(0, out, 128);
    TS(2, out + 512, 128);
    TS(1, out + 16, 128);
    TS(3, out + 528, 128);
}

struct Product {
    int64_t m, k, n;
    std::vector<uint16_t> A;
    std::vector<float> B, C, C2;
    uint32_t * Bp;    // one block's pack
    uint32_t * Pall;  // every block's pack
    void * S;         // gemm_rows_paired's scratch
};

template <int WAY>
static double run(Product & p, int iters) {  // GFLOP/s
    alignas(64) static float out[TT * TT];
    const auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < iters; ++it) {
        if (WAY == 0) {
            gemm_rows(0, p.m, p.n, p.k, p.A.data(), p.k, p.B.data(), p.k, p.C.data(), p.m, p.Bp);
        } else if (WAY == 3) {
            gemm_rows_paired(0, p.m, p.n, p.k, p.A.data(), p.k, p.B.data(), p.k, p.C2.data(), p.m, p.S);
        } else {
            load_config();
            for (int64_t j0 = 0; j0 < p.n; j0 += TT) {
                const uint32_t * pack = p.Pall + j0 / TT * alignts_bf16::pack_words(p.k);
                for (int64_t i0 = 0; i0 < p.m; i0 += TR) {
                    if (WAY == 1) {
                        block(p.A.data(), p.k, pack, p.k, p.C.data(), p.m, i0, j0, std::min<int64_t>(TT, p.n - j0));
                    } else {
                        block_no_store(p.A.data(), p.k, pack, p.k, out, i0);
                    }
                }
            }
            release();
        }
    }
    return 2.0 * p.m * p.n * p.k * iters / seconds_since(t0) / 1e9;
}

int main() {
    if (!available()) {
        std::printf("no AMX-BF16 here\n");
        return 1;
    }
    for (auto & x : ones) {
        x = 0x3f80;
    }
    std::mt19937 gen(0);
    const int64_t shapes[][3] = {{384, 384, 32},    {384, 384, 96},    {384, 384, 154},   {1536, 384, 154},
                                 {384, 1536, 154},  {384, 384, 1232},  {1536, 384, 1232}, {384, 1536, 1232}};
    std::printf("| weights (rows x k) | tokens | gemm_rows | packed beforehand | and no transposed store | "
                "gemm_rows_paired | paired / gemm_rows | max abs diff |\n|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (const auto & s : shapes) {
        Product p{s[0], s[1], s[2], {}, {}, {}, {}, nullptr, nullptr, nullptr};
        p.A.resize(p.m * p.k);
        p.B.resize(p.n * p.k);
        p.C.resize(p.n * p.m);
        p.C2.resize(p.n * p.m);
        for (auto & w : p.A) {
            w = static_cast<uint16_t>(0x3c00 + (gen() & 0x3ff)) | static_cast<uint16_t>((gen() & 1) << 15);
        }
        for (auto & x : p.B) {
            x = (static_cast<int>(gen() & 0xff) - 128) / 256.0f;
        }
        const int64_t blocks = (p.n + TT - 1) / TT;
        p.Bp = static_cast<uint32_t *>(std::aligned_alloc(64, 4 * alignts_bf16::pack_words(p.k)));
        p.Pall = static_cast<uint32_t *>(std::aligned_alloc(64, 4 * blocks * alignts_bf16::pack_words(p.k)));
        p.S = std::aligned_alloc(64, (paired_bytes(p.m, p.k) + 63) / 64 * 64);
        for (int64_t j0 = 0; j0 < p.n; j0 += TT) {
            alignts_bf16::pack_tokens(p.B.data(), p.k, p.k, j0, std::min<int64_t>(TT, p.n - j0),
                                      p.Pall + j0 / TT * alignts_bf16::pack_words(p.k));
        }
        run<0>(p, 1);
        run<3>(p, 1);
        double diff = 0;
        for (size_t i = 0; i < p.C.size(); ++i) {
            diff = std::max(diff, (double) std::fabs(p.C[i] - p.C2[i]));
        }
        std::vector<double> f[4], ratio;
        const int iters = p.n > 200 ? 2 : p.n > 64 ? 10 : 40;
        for (int round = 0; round < 40; ++round) {
            const double peak = tdp_only(20000);
            const double x[4] = {run<0>(p, iters), run<1>(p, iters), run<2>(p, iters), run<3>(p, iters)};
            for (int w = 0; w < 4; ++w) {
                f[w].push_back(x[w] / peak);
            }
            ratio.push_back(x[3] / x[0]);
        }
        for (auto & v : f) {
            std::sort(v.begin(), v.end());
        }
        std::sort(ratio.begin(), ratio.end());
        std::printf("| %ld x %ld | %ld | %.0f %% | %.0f %% | %.0f %% | %.0f %% | %.2fx | %.1e |\n", (long) p.m,
                    (long) p.k, (long) p.n, 100 * f[0][20], 100 * f[1][20], 100 * f[2][20], 100 * f[3][20],
                    ratio[20], diff);
        std::free(p.Bp);
        std::free(p.Pall);
        std::free(p.S);
    }
    std::printf("(fractions of a register-only tdpbf16ps loop timed in the same round; medians of 40 rounds)\n");
}
#endif
