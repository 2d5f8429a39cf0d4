// The verdict the GEMM tests share: every output within `eps_terms` rounding steps (1.2e-7 of the sum of |terms|
// each) of a double-precision reference, the columns past m untouched (C starts filled with -7), one line printed.
// ref(j, r, mag) fills r[i] and mag[i] (the reference and the sum of |terms| of C[j][i]) for i < m.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

template <typename Ref>
static bool check_gemm(int64_t m, int64_t n, int64_t k, const float * C, int64_t ldc, double eps_terms,
                       const char * path, Ref ref) {
    double worst = 0.0;
    bool untouched = true;
    std::vector<double> r(m), mag(m);
    for (int64_t j = 0; j < n; ++j) {
        ref(j, r.data(), mag.data());
        for (int64_t i = 0; i < m; ++i) {
            worst = std::fmax(worst, std::fabs(r[i] - C[j * ldc + i]) / (1e-30 + mag[i] * 1.2e-7 * eps_terms));
        }
        for (int64_t i = m; i < ldc; ++i) untouched = untouched && C[j * ldc + i] == -7.0f;
    }
    const bool ok = worst <= 1.0 && untouched;
    std::printf("%s m=%ld n=%ld k=%ld %s: error %.3f of the bound, padding %s\n", ok ? "ok  " : "FAIL", (long) m,
                (long) n, (long) k, path, worst, untouched ? "untouched" : "WRITTEN");
    return ok;
}
