// alignts: the bf16 x f32 GEMM of alignts_gemm_bf16.h on AMX tiles (Intel Xeon 4th generation and later: AMX-TILE and
// AMX-BF16), for the CPU variants of ggml built with AVX-512 BF16 (scripts/patch_llama.py puts it into ggml with the
// other kernels; entry point alignts_gemm.h). The same operands as gemm_rows there: the weight rows untouched, a
// block of 32 tokens rounded to bf16 and packed in pairs (alignts_bf16::pack_tokens), so each tile multiply is
//   C[16 weight rows x 16 tokens] += A[16 rows x 32 k of the weights] . B[16 k pairs x 16 tokens of the pack]
// (tdpbf16ps: 16 x 16 x 32 multiply-adds an instruction, 256 vdpbf16ps' worth). Four accumulator tiles (32 rows x 32
// tokens), two weight tiles and two token tiles fill the eight tile registers; the accumulators go to C through an
// AVX-512 transpose (C is token-major). Weight rows past the last full 32 take alignts_bf16's vdpbf16ps tiles.
//
// The instructions are written as inline assembly (the assembler must know them; binutils 2.40 here), not gcc's
// intrinsics: the sapphirerapids variant of ggml is compiled without -mamx-bf16, and gcc 12's _tile_loadconfig does
// not tell the compiler it reads its 64-byte argument (so the stores that fill the configuration can be dropped;
// scripts/patch_llama.py change 8). Linux lends a process the tile registers only after it asks
// (arch_prctl ARCH_REQ_XCOMP_PERM): available() asks once, and says no on any other CPU or kernel, or when the
// environment sets ALIGNTS_AMX=0 (the A/B switch of benchmarks and tests).
#pragma once

#include "alignts_gemm_bf16.h"

#if defined(ALIGNTS_GEMM_BF16) && defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#define ALIGNTS_GEMM_AMX 1

namespace alignts_amx {

constexpr int TR = 32;  // weight rows a block: two tiles of 16
constexpr int TT = alignts_bf16::TJ;  // tokens a block: two tiles of 16 (the pack's width)
static_assert(TT == 32, "the token tiles read the pack's 32-token rows");

// true when this process may run AMX-BF16 tiles (asked once; every thread sees the same answer)
static inline bool available() {
    static const bool ok = [] {
        const char * env = std::getenv("ALIGNTS_AMX");
        if (env && std::strcmp(env, "0") == 0) {
            return false;
        }
        unsigned a, b, c, d;
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1)) {
            return false;  // no AMX-BF16 or no AMX-TILE
        }
        // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): fails on a kernel without AMX support
        return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    }();
    return ok;
}

struct alignas(64) tile_config {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

// tmm0..3: accumulators (rows i0.., i0+16.. x tokens 0.., 16..); tmm4, 5: weight tiles; tmm6, 7: token tiles. All
// 16 rows of 64 bytes.
static inline void load_config() {
    tile_config cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    asm volatile("ldtilecfg %0" ::"m"(cfg));
}

static inline void release() { asm volatile("tilerelease" ::); }

#define ALIGNTS_TILELOAD(t, base, stride) \
    asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((int64_t) (stride)) : "memory")
#define ALIGNTS_TILESTORE(t, base, stride) \
    asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"((int64_t) (stride)) : "memory")
#define ALIGNTS_TDP(c, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

// C[j0+j, i0+r] for r < 32, j < nj (<= 32) from the 32 weight rows at A + i0*lda and the pack Bp (k/2 rows of 32
// tokens); two token tiles when nj > 16, one otherwise
static inline void block(const uint16_t * A, int64_t lda, const uint32_t * Bp, int64_t k, float * C, int64_t ldc,
                         int64_t i0, int64_t j0, int64_t nj) {
    const uint16_t * a0 = A + i0 * lda;
    const uint16_t * a1 = a0 + 16 * lda;
    const int64_t sa = lda * sizeof(uint16_t), sb = TT * sizeof(uint32_t);
    asm volatile("tilezero %%tmm0\n\ttilezero %%tmm2" ::);
    if (nj > 16) {
        asm volatile("tilezero %%tmm1\n\ttilezero %%tmm3" ::);
        for (int64_t l = 0; l < k; l += 32) {
            const uint32_t * b = Bp + l / 2 * TT;
            ALIGNTS_TILELOAD(4, a0 + l, sa);
            ALIGNTS_TILELOAD(6, b, sb);
            ALIGNTS_TILELOAD(7, b + 16, sb);
            ALIGNTS_TDP(0, 4, 6);
            ALIGNTS_TDP(1, 4, 7);
            ALIGNTS_TILELOAD(5, a1 + l, sa);
            ALIGNTS_TDP(2, 5, 6);
            ALIGNTS_TDP(3, 5, 7);
        }
    } else {
        for (int64_t l = 0; l < k; l += 32) {
            const uint32_t * b = Bp + l / 2 * TT;
            ALIGNTS_TILELOAD(4, a0 + l, sa);
            ALIGNTS_TILELOAD(6, b, sb);
            ALIGNTS_TILELOAD(5, a1 + l, sa);
            ALIGNTS_TDP(0, 4, 6);
            ALIGNTS_TDP(2, 5, 6);
        }
    }
    alignas(64) float out[TR][TT];  // out[r][j]: weight row i0 + r, token j0 + j
    ALIGNTS_TILESTORE(0, &out[0][0], TT * sizeof(float));
    ALIGNTS_TILESTORE(2, &out[16][0], TT * sizeof(float));
    if (nj > 16) {
        ALIGNTS_TILESTORE(1, &out[0][16], TT * sizeof(float));
        ALIGNTS_TILESTORE(3, &out[16][16], TT * sizeof(float));
    }
    for (int jb = 0; jb < nj; jb += 16) {
        for (int rb = 0; rb < TR; rb += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; ++i) {
                r[i] = _mm512_load_ps(&out[rb + i][jb]);
            }
            alignts_f32::transpose(r);  // r[j] = the 16 rows' values of token jb + j
            for (int j = 0; j < 16 && jb + j < nj; ++j) {
                _mm512_storeu_ps(C + (j0 + jb + j) * ldc + i0 + rb, r[j]);
            }
        }
    }
}

#undef ALIGNTS_TILELOAD
#undef ALIGNTS_TILESTORE
#undef ALIGNTS_TDP

// alignts_bf16::gemm_rows on tiles: weight rows [i_begin, i_end) of C for all n tokens, Bp as there; the caller
// checked available()
static inline void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint16_t * A, int64_t lda,
                             const float * B, int64_t ldb, float * C, int64_t ldc, uint32_t * Bp) {
    const int64_t i_tiles = i_begin + (i_end - i_begin) / TR * TR;  // rows the tiles take; the rest: vdpbf16ps
    if (i_tiles > i_begin) {
        load_config();
    }
    for (int64_t j0 = 0; j0 < n; j0 += TT) {
        const int64_t nj = std::min<int64_t>(TT, n - j0);
        alignts_bf16::pack_tokens(B, ldb, k, j0, nj, Bp);
        for (int64_t i0 = i_begin; i0 < i_tiles; i0 += TR) {
            block(A, lda, Bp, k, C, ldc, i0, j0, nj);
        }
        alignts_bf16::rows_on_pack(i_tiles, i_end, k, A, lda, Bp, C, ldc, j0, nj);
    }
    if (i_tiles > i_begin) {
        release();
    }
}

}  // namespace alignts_amx
#endif
