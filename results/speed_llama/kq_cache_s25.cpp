// (session 25, results/speed_llama.md section 25) g++ -O3 -march=x86-64-v4 -std=c++17 -I native/ggml kq_cache_s25.cpp
// KQ of Bridging's attention (4 series x 12 heads, 119 tokens, d = 32, K and Q rows 384 floats apart as ggml's views)
// through the token tile (alignts_f32::gemm_rows, as ggml's KQ node runs it), warm and with the caches flushed
// between runs (FLUSH=1: 64 MB written), against K packed into panels on the fly (not kept: no faster).
//   ./a.out [T]
#include "alignts_panels_f32.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include <algorithm>
int main(int argc, char ** argv) {
    const int T = argc > 1 ? atoi(argv[1]) : 119, S = 4, H = 12, D = 32, E = 384;
    std::mt19937 g(0); std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> Kc(S * T * E), Qc(S * T * E), KQ1(S * H * T * T), KQ2(S * H * T * T);
    for (auto & x : Kc) x = u(g); for (auto & x : Qc) x = u(g);
    float * Bp = (float *) std::aligned_alloc(64, sizeof(float) * 4096 * 64);
    const int Tp = (T + 15) / 16 * 16;
    float * Pk = (float *) std::aligned_alloc(64, sizeof(float) * Tp * D);
    auto tok = [&] {
        for (int s = 0; s < S; ++s) for (int h = 0; h < H; ++h) {
            const float * K = Kc.data() + s * T * E + h * D, * Q = Qc.data() + s * T * E + h * D;
            alignts_f32::gemm_rows(0, T, T, D, K, E, Q, E, KQ1.data() + (s * H + h) * T * T, T, Bp);
        }
    };
    auto pan = [&] {
        for (int s = 0; s < S; ++s) for (int h = 0; h < H; ++h) {
            const float * K = Kc.data() + s * T * E + h * D, * Q = Qc.data() + s * T * E + h * D;
            // pack K's T rows (of D) into panels of 16 rows, k-major; rows past T zero
            for (int p = 0; p < Tp / 16; ++p) for (int l = 0; l < D; ++l) for (int r = 0; r < 16; ++r) {
                const int i = p * 16 + r; Pk[(p * D + l) * 16 + r] = i < T ? K[i * E + l] : 0.f; }
            alignts_panels::gemm_rows(0, T / 16 * 16, T, D, Pk, Q, E, KQ2.data() + (s * H + h) * T * T, T);
            // rows past the last whole panel: (the real kernel would handle a partial panel)
            if (T % 16) for (int t = 0; t < T; ++t) for (int i = T / 16 * 16; i < T; ++i) { float a = 0; for (int l = 0; l < D; ++l) a = std::fma(K[i * E + l], Q[t * E + l], a); KQ2[(s * H + h) * T * T + t * T + i] = a; }
        }
    };
    static std::vector<float> junk(16 << 20);
    auto time = [&](auto f) { std::vector<double> t; for (int i = 0; i < 40; ++i) { if (getenv("FLUSH")) for (size_t z = 0; z < junk.size(); z += 16) junk[z] += 1.f; auto a = std::chrono::steady_clock::now(); f();
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count()); }
        std::sort(t.begin(), t.end()); return t[t.size() / 2]; };
    tok(); pan();
    double a = time(tok), b = time(pan);
    double fl = 2.0 * S * H * T * T * D;
    int diff = 0; for (size_t i = 0; i < KQ1.size(); ++i) diff += KQ1[i] != KQ2[i];
    std::printf("T=%d token tile %.3f ms (%.0f GFLOP/s), packed panels %.3f ms (%.0f GFLOP/s), %d of %zu differ\n", T, a, fl / a / 1e6, b, fl / b / 1e6, diff, KQ1.size());
}
