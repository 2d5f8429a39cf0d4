// The bf16 x f32 GEMM on AMX tiles (native/ggml/alignts_gemm_amx.h) against the vdpbf16ps tiles it replaces
// (alignts_gemm_bf16.h), on MiniLM's products: one matrix at a time (hot in the caches), and the 36 weight matrices
// of a 6-layer MiniLM in turn (21 MB of bf16, from L3 as in a forecast), on 1 thread and on 2 (the rows split, as
// ggml's threads split them). GFLOP/s, best of 5 x N calls; the two paths' max abs difference.
//   g++ -O3 -std=c++17 -pthread -mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mavx2 -mfma \
//       -o amx_gemm_bench results/speed_llama/amx_gemm_bench.cpp && ./amx_gemm_bench
#include "../../native/ggml/alignts_gemm_amx.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#if !defined(ALIGNTS_GEMM_AMX)
int main() { std::printf("built without the AMX path (not x86-64 Linux with AVX-512 BF16)\n"); return 0; }
#else
struct Mat {
    int64_t m, k;
    std::vector<uint16_t> w;
};

static void run(const std::vector<Mat> & ws, int64_t n, const float * B, float * C, bool amx, int threads) {
    auto part = [&](int t) {
        uint32_t * Bp = static_cast<uint32_t *>(std::aligned_alloc(64, sizeof(uint32_t) * alignts_bf16::pack_words(1536)));
        for (const Mat & a : ws) {
            const int64_t rm = amx ? alignts_amx::TR : alignts_bf16::RM, tiles = (a.m + rm - 1) / rm;
            const int64_t i0 = tiles * t / threads * rm, i1 = std::min(a.m, tiles * (t + 1) / threads * rm);
            if (amx) alignts_amx::gemm_rows(i0, i1, n, a.k, a.w.data(), a.k, B, a.k, C, a.m, Bp);
            else alignts_bf16::gemm_rows(i0, i1, n, a.k, a.w.data(), a.k, B, a.k, C, a.m, Bp);
        }
        std::free(Bp);
    };
    if (threads == 1) return part(0);
    std::vector<std::thread> th;
    for (int t = 0; t < threads; ++t) th.emplace_back(part, t);
    for (auto & x : th) x.join();
}

int main() {
    if (!alignts_amx::available()) {
        std::printf("no AMX-BF16 here (or ALIGNTS_AMX=0): nothing to compare\n");
        return 0;
    }
    std::mt19937 gen(0);
    auto mat = [&](int64_t m, int64_t k) {
        Mat a{m, k, std::vector<uint16_t>(m * k)};
        for (auto & x : a.w) x = static_cast<uint16_t>(0x3c00 + (gen() & 0x3ff));  // ~0.008 .. 0.03
        return a;
    };
    std::vector<Mat> model;
    for (int l = 0; l < 6; ++l) {
        for (int q = 0; q < 4; ++q) model.push_back(mat(384, 384));
        model.push_back(mat(1536, 384));
        model.push_back(mat(384, 1536));
    }
    struct Case { const char * name; std::vector<Mat> ws; };
    std::vector<Case> cases;
    cases.push_back({"384 x 384", {mat(384, 384)}});
    cases.push_back({"1536 x 384", {mat(1536, 384)}});
    cases.push_back({"384 x 1536", {mat(384, 1536)}});
    cases.push_back({"MiniLM's 36", model});
    std::printf("| weights (rows x k) | tokens | threads | vdpbf16ps GFLOP/s | AMX GFLOP/s | AMX / vdpbf16ps | max abs diff |\n");
    std::printf("|---|--:|--:|--:|--:|--:|--:|\n");
    for (const Case & c : cases) {
        for (int64_t n : {154, 484}) {
            std::vector<float> B(n * 1536), C1(n * 1536), C2(n * 1536);
            for (auto & x : B) x = std::uniform_real_distribution<float>(-1.0f, 1.0f)(gen);
            double flop = 0.0;
            for (const Mat & a : c.ws) flop += 2.0 * a.m * n * a.k;
            const int reps = std::max(1, static_cast<int>(2e9 / flop));  // ~2 GFLOP a timing
            for (int threads : {1, 2}) {
                double t[2] = {1e9, 1e9};
                for (int rep = 0; rep < 5; ++rep) {
                    for (int amx = 0; amx < 2; ++amx) {
                        const auto t0 = std::chrono::steady_clock::now();
                        for (int r = 0; r < reps; ++r) run(c.ws, n, B.data(), amx ? C2.data() : C1.data(), amx, threads);
                        t[amx] = std::min(t[amx], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
                    }
                }
                float diff = 0.0f;
                for (int64_t i = 0; i < n * c.ws.back().m; ++i) diff = std::max(diff, std::fabs(C1[i] - C2[i]));
                std::printf("| %s | %ld | %d | %.0f | %.0f | %.2fx | %.1e |\n", c.name, (long) n, threads,
                            flop / t[0] / 1e9, flop / t[1] / 1e9, t[0] / t[1], diff);
            }
        }
    }
}
#endif
