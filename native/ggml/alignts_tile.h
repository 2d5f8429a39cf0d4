// alignts: what the packed GEMMs (alignts_sgemm_f32.h, alignts_gemm_bf16.h, alignts_gemm_q8_0.h) share: writing a
// tile's accumulators to ggml's token-major output, and the dispatch of a remainder tile to the kernel compiled for
// its row count.
#pragma once

#include <cstdint>
#include <type_traits>

namespace alignts_tile {

// t[r][j]: the accumulators of weight row i0 + r for token j0 + j, lane by lane; C holds a row of outputs a token
template <int R, int TJ>
static inline void store(const float (&t)[R][TJ], float * C, int64_t ldc, int64_t i0, int64_t j0, int64_t nj) {
    for (int64_t j = 0; j < nj; ++j) {
        float * c = C + (j0 + j) * ldc + i0;
        for (int r = 0; r < R; ++r) {
            c[r] = t[r][j];
        }
    }
}

// f(std::integral_constant<int, rows>{}) for 1 <= rows <= R: a tile of fewer rows than R runs the kernel
// instantiated for exactly that many
template <int R, typename F>
static inline void with_rows(int64_t rows, F && f) {
    if constexpr (R > 1) {
        if (rows < R) {
            return with_rows<R - 1>(rows, f);
        }
    }
    f(std::integral_constant<int, R>{});
}

}  // namespace alignts_tile
