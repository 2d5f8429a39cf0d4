// MiniLM's f32 weight products through alignts_panels::gemm_rows (native/ggml/alignts_panels_f32.h: the weights
// repacked into 16-row panels once, as llama.cpp's load does): pack() once a weight, chain() as a forecast runs them.
// Built by f32_chain.py. (session 24, results/speed_llama.md section 24)
#include "alignts_panels_f32.h"

extern "C" void pack(const float * W, long m, long k, float * P) { alignts_panels::pack(W, m, k, k, P); }

extern "C" void chain(int n, int np, const float ** P, const long * M, const long * K, const float * X, float * y0,
                      float * y1) {
    const float * x = X;
    float * ys[2] = {y0, y1};
    for (int p = 0; p < np; ++p) {
        alignts_panels::gemm_rows(0, M[p], n, K[p], P[p], x, K[p], ys[p % 2], M[p]);
        x = ys[p % 2];
    }
}
