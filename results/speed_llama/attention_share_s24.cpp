// (session 24, results/speed_llama.md section 24) g++ -O3 -march=x86-64-v4 -std=c++17 -I native/ggml attention_share_s24.cpp
// Bridging's attention products a decode (4 series of 119 tokens, 12 heads of 32, 2 layers) through the token tile
// (alignts_f32::gemm_rows, as ggml's attention runs), against the same decode's linear products through the panels.
#include "alignts_panels_f32.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
#include <algorithm>
int main() {
    const int T = 119, S = 4, H = 12, D = 32, L = 2, E = 384, F = 1536, N = S * T;
    std::mt19937 g(0); std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> K(T * D), Q(T * D), KQ(T * T), VT(D * T), O(T * D);
    for (auto & x : K) x = u(g); for (auto & x : Q) x = u(g); for (auto & x : VT) x = u(g);
    for (auto & x : KQ) x = u(g);
    float * Bp = (float *) std::aligned_alloc(64, sizeof(float) * 1536 * 64);
    auto attn = [&] {
        for (int r = 0; r < L * S * H; ++r) {
            alignts_f32::gemm_rows(0, T, T, D, K.data(), D, Q.data(), D, KQ.data(), T, Bp);   // KQ: rows = K, tokens = Q
            alignts_f32::gemm_rows(0, D, T, T, VT.data(), T, KQ.data(), T, O.data(), D, Bp);  // KQV: rows = V^T, tokens = softmax rows
        }
    };
    const int shapes[6][2] = {{E, E}, {E, E}, {E, E}, {E, E}, {F, E}, {E, F}};
    std::vector<std::vector<float>> P;
    for (auto & s : shapes) { std::vector<float> W(s[0] * s[1]); for (auto & x : W) x = u(g);
        float * p = (float *) std::aligned_alloc(64, sizeof(float) * W.size()); alignts_panels::pack(W.data(), s[0], s[1], s[1], p);
        P.emplace_back(p, p + W.size()); std::free(p); }
    std::vector<float> X(N * F), Y(N * F); for (auto & x : X) x = u(g);
    auto lin = [&] { for (int l = 0; l < L; ++l) for (int i = 0; i < 6; ++i)
        alignts_panels::gemm_rows(0, shapes[i][0], N, shapes[i][1], P[i].data(), X.data(), shapes[i][1], Y.data(), shapes[i][0]); };
    auto time = [](auto f) { std::vector<double> t; for (int i = 0; i < 30; ++i) { auto a = std::chrono::steady_clock::now(); f();
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count()); }
        std::sort(t.begin(), t.end()); return t[t.size() / 2]; };
    attn(); lin();
    double ta = time(attn), tl = time(lin);
    double fa = 2.0 * L * S * H * (2.0 * T * T * D), fl = 2.0 * L * N * (4.0 * E * E + 2.0 * E * F);
    std::printf("attention products %.2f ms (%.0f GFLOP/s), linear products (panels) %.2f ms (%.0f GFLOP/s): attention %.1f %% of the products' time\n",
                ta, fa / ta / 1e6, tl, fl / tl / 1e6, 100 * ta / (ta + tl));
}
