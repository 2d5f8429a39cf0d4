// MiniLM's f32 weight products through alignts_f32::gemm_rows (native/ggml/alignts_sgemm_f32.h, -I picks the
// version), one after another as a forecast runs them: x [n, k0] -> y = x W^T for each W (m x k, ggml's row layout).
// Built by f32_chain.py, once per header version. (session 20, results/speed_llama.md section 20)
#include "alignts_sgemm_f32.h"

extern "C" void chain(int n, int np, const float ** W, const long * M, const long * K, const float * X, float * y0,
                      float * y1, float * Bp) {
    const float * x = X;
    float * ys[2] = {y0, y1};
    for (int p = 0; p < np; ++p) {
        alignts_f32::gemm_rows(0, M[p], n, K[p], W[p], K[p], x, K[p], ys[p % 2], M[p], Bp);
        x = ys[p % 2];
    }
}
