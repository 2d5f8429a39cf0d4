// alignts: the bf16 x f32 GEMM of alignts_gemm_bf16.h on AMX tiles (Intel Xeon 4th generation and later: AMX-TILE and
// AMX-BF16), for the CPU variants of ggml built with AVX-512 BF16 (scripts/patch_llama.py puts it into ggml with the
// other kernels; entry point alignts_gemm.h). The same operands as gemm_rows there: the weight rows untouched, a
// block of 32 tokens rounded to bf16 and packed in pairs (alignts_bf16::pack_tokens), so each tile multiply is
//   C[16 weight rows x 16 tokens] += A[16 rows x 32 k of the weights] . B[16 k pairs x 16 tokens of the pack]
// (tdpbf16ps: 16 x 16 x 32 multiply-adds an instruction, 256 vdpbf16ps' worth). Four accumulator tiles (32 rows x 32
// tokens), two weight tiles and two token tiles fill the eight tile registers; the accumulators go to C through an
// AVX-512 transpose (C is token-major). Weight rows past the last full 32 take alignts_bf16's vdpbf16ps tiles.
//
// With 256 tokens and more the roles swap (gemm_rows_paired): the weight rows are paired instead (each 16 rows' k
// pairs transposed once a call, pair_rows, up to 4 MB of them at a time), the tokens only rounded to bf16
// (round_tokens), and each tile multiply is
//   C[16 tokens x 16 weight rows] += A[16 tokens x 32 k] . B[16 k pairs x 16 weight rows]
// whose accumulators are in C's own layout: tilestored writes them into C, no transpose. The same sums in the same
// order (bit for bit the products above). The product alone gains from ~100 tokens up; a forecast measurably from
// more (the pairing is paid once a call; results/speed_llama.md section 17).
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

// ---- the weights paired, the tokens as the A operand (PAIRED_MIN_TOKENS and more) ----

constexpr int64_t PAIRED_MIN_TOKENS = 256;  // fewer: no gain measured in a forecast (the pairing is paid once a call)
constexpr int64_t PAIRED_BYTES = 4 << 20;  // paired weights a chunk: bounds the scratch (MiniLM's largest: 1.2 MB)

// weight rows a chunk of gemm_rows_paired: a multiple of 32, at least 32
static inline int64_t paired_rows(int64_t k) {
    return std::max<int64_t>(TR, PAIRED_BYTES / (int64_t) (sizeof(uint16_t) * k) / TR * TR);
}

// bytes of gemm_rows_paired's scratch for `rows` weight rows: a chunk's paired rows, a block of rounded tokens, a
// block of C
static inline size_t paired_bytes(int64_t rows, int64_t k) {
    return sizeof(uint16_t) * (std::min(rows, paired_rows(k)) + TT) * k + sizeof(float) * TT * TT;
}

// Wp[(g*(k/2) + q)*16 + r] = the pair (W[16g + r, 2q], W[16g + r, 2q + 1]) for the rows' groups of 16 (rows a
// multiple of 16): a B tile is the 1 KB of 16 pairs from q of one group
static inline void pair_rows(const uint16_t * W, int64_t lda, int64_t rows, int64_t k, uint32_t * Wp) {
    for (int64_t g = 0; g < rows / 16; ++g) {
        for (int64_t q = 0; q < k / 2; q += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; ++i) {
                r[i] = _mm512_castsi512_ps(_mm512_loadu_si512(W + (g * 16 + i) * lda + 2 * q));
            }
            alignts_f32::transpose(r);  // r[c] = pair q + c of the 16 rows (the transpose only moves bits)
            for (int c = 0; c < 16; ++c) {
                _mm512_store_ps(reinterpret_cast<float *>(Wp + (g * (k / 2) + q + c) * 16), r[c]);
            }
        }
    }
}

// T[j*k + l] = B[j0 + j, l] rounded to bf16 (to nearest even, as pack_tokens) for j < nj; rows nj .. TT-1 zeros
static inline void round_tokens(const float * B, int64_t ldb, int64_t k, int64_t j0, int64_t nj, uint16_t * T) {
    for (int64_t j = 0; j < TT; ++j) {
        for (int64_t l = 0; l < k; l += 32) {
            __m512i v = _mm512_setzero_si512();
            if (j < nj) {
                const float * b = B + (j0 + j) * ldb + l;
                const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(b + 16), _mm512_loadu_ps(b));
                std::memcpy(&v, &h, sizeof v);
            }
            _mm512_store_si512(T + j * k + l, v);
        }
    }
}

// gemm_rows with the roles swapped: weight rows [i_begin, i_end) (a multiple of 32) of C for all n tokens, in chunks
// of paired_rows(k); S: paired_bytes(i_end - i_begin, k), 64-byte aligned. tmm0..3: accumulators (tokens j0..,
// j0+16.. x rows i0.., i0+16..); tmm4, 5: token tiles; tmm6, 7: paired weight tiles. The caller checked available().
static inline void gemm_rows_paired(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const uint16_t * A,
                                    int64_t lda, const float * B, int64_t ldb, float * C, int64_t ldc, void * S) {
    const int64_t chunk = std::min(i_end - i_begin, paired_rows(k)), group = k / 2 * 16;  // uint32: 16 paired rows
    uint32_t * Wp = static_cast<uint32_t *>(S);
    uint16_t * T = reinterpret_cast<uint16_t *>(Wp + chunk / 16 * group);
    float * part = reinterpret_cast<float *>(T + TT * k);  // a block of fewer than 32 tokens, before C
    const int64_t st = k * sizeof(uint16_t), sw = 16 * sizeof(uint32_t);
    load_config();
    for (int64_t r0 = i_begin; r0 < i_end; r0 += chunk) {
        const int64_t rows = std::min<int64_t>(chunk, i_end - r0);
        pair_rows(A + r0 * lda, lda, rows, k, Wp);
        for (int64_t j0 = 0; j0 < n; j0 += TT) {
            const int64_t nj = std::min<int64_t>(TT, n - j0);
            round_tokens(B, ldb, k, j0, nj, T);
            for (int64_t i0 = 0; i0 < rows; i0 += TR) {
                const uint32_t * w0 = Wp + i0 / 16 * group;
                const uint32_t * w1 = w0 + group;
                asm volatile("tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3" ::);
                for (int64_t l = 0; l < k; l += 32) {
                    ALIGNTS_TILELOAD(4, T + l, st);
                    ALIGNTS_TILELOAD(6, w0 + l / 2 * 16, sw);
                    ALIGNTS_TILELOAD(7, w1 + l / 2 * 16, sw);
                    ALIGNTS_TDP(0, 4, 6);
                    ALIGNTS_TDP(1, 4, 7);
                    ALIGNTS_TILELOAD(5, T + 16 * k + l, st);
                    ALIGNTS_TDP(2, 5, 6);
                    ALIGNTS_TDP(3, 5, 7);
                }
                float * c = C + j0 * ldc + r0 + i0;
                float * out = nj == TT ? c : part;  // a full block straight into C
                const int64_t so = nj == TT ? ldc : TT;
                ALIGNTS_TILESTORE(0, out, so * sizeof(float));
                ALIGNTS_TILESTORE(1, out + 16, so * sizeof(float));
                ALIGNTS_TILESTORE(2, out + 16 * so, so * sizeof(float));
                ALIGNTS_TILESTORE(3, out + 16 * so + 16, so * sizeof(float));
                for (int64_t j = 0; out == part && j < nj; ++j) {
                    _mm512_storeu_ps(c + j * ldc, _mm512_load_ps(part + j * TT));
                    _mm512_storeu_ps(c + j * ldc + 16, _mm512_load_ps(part + j * TT + 16));
                }
            }
        }
    }
    release();
}

#undef ALIGNTS_TILELOAD
#undef ALIGNTS_TILESTORE
#undef ALIGNTS_TDP

}  // namespace alignts_amx
#endif
