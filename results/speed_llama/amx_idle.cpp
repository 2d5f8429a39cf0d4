// What an idle gap costs the AMX products (section 18): MiniLM's 36 encoder products at 154 tokens (a batch-1 Internal
// forecast's, through alignts_amx::gemm_rows, weights of each layer its own: 21 MB in all), each timed alone,
// rounds alternating between "warm" (the products back to back) and "after sleep" (a sleep of SLEEP_MS first, as
// `alignts bench` settles before each timed call); p50 of 40 rounds per product, and their sum.
//   g++ -O2 -march=sapphirerapids -I native/ggml -o /tmp/amx_idle results/speed_llama/amx_idle.cpp
//   /tmp/amx_idle 50          (session 18: amx_idle.txt)
#include "alignts_gemm_amx.h"
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>
#include <algorithm>
#include <thread>
using namespace alignts_amx;
static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
struct Prod { int64_t m, k; std::vector<uint16_t> w; };
int main(int argc, char ** argv) {
    if (!available()) { std::printf("no AMX\n"); return 0; }
    const int64_t n = 154;
    const int sleep_ms = argc > 1 ? atoi(argv[1]) : 50;
    std::mt19937 g(0); std::uniform_int_distribution<int> u(0x3c00, 0x3f80);
    std::vector<Prod> prods;
    for (int L = 0; L < 6; ++L) {
        int64_t shapes[6][2] = {{384, 384}, {384, 384}, {384, 384}, {384, 384}, {1536, 384}, {384, 1536}};
        for (auto & s : shapes) { Prod p{s[0], s[1], std::vector<uint16_t>(s[0] * s[1])}; for (auto & v : p.w) v = u(g); prods.push_back(std::move(p)); }
    }
    std::vector<float> B(n * 1536), C(n * 1536);
    for (auto & v : B) v = 0.01f * (g() % 100);
    uint32_t * Bp = static_cast<uint32_t *>(std::aligned_alloc(64, 4 * (1536 / 2 * 32 + 64)));
    const int P = prods.size(), R = 40;
    std::vector<std::vector<double>> t[2];
    for (int c = 0; c < 2; ++c) t[c].assign(P, {});
    for (int w = 0; w < 5; ++w) for (auto & p : prods) gemm_rows(0, p.m, n, p.k, p.w.data(), p.k, B.data(), p.k, C.data(), p.m, Bp);
    for (int r = 0; r < R; ++r) for (int c = 0; c < 2; ++c) {
        if (c) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
        for (int i = 0; i < P; ++i) { auto & p = prods[i]; double t0 = now(); gemm_rows(0, p.m, n, p.k, p.w.data(), p.k, B.data(), p.k, C.data(), p.m, Bp); t[c][i].push_back(1e6 * (now() - t0)); }
    }
    double tot[2] = {0, 0};
    std::printf("product: warm us / after sleep us (p50)\n");
    for (int i = 0; i < P; ++i) {
        double m[2];
        for (int c = 0; c < 2; ++c) { auto v = t[c][i]; std::sort(v.begin(), v.end()); m[c] = v[R / 2]; tot[c] += m[c]; }
        if (i < 8 || i % 6 == 0) std::printf("%2d %4ldx%4ld  %7.1f  %7.1f\n", i, prods[i].m, prods[i].k, m[0], m[1]);
    }
    std::printf("sum of p50s: warm %.2f ms, after sleep %.2f ms\n", tot[0] / 1e3, tot[1] / 1e3);
}
