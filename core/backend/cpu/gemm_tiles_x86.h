/*
 * gemm_tiles_x86.h - the 256-bit GEMM tile template (internal to
 * core/backend/cpu): one source, two instantiations, gemm_avx2.c's (AVX2
 * maddubs + madd for the u8 x s8 dot) and gemm_avx512.c's (VNNI vpdpbusd,
 * used there for the rows its own kernels leave to it). DEFINE_GEMMS'
 * LINKAGE is empty for kernels a dispatch table names, static otherwise.
 */
#ifndef CPU_GEMM_TILES_X86_H
#define CPU_GEMM_TILES_X86_H

#include "core/backend/cpu/x86_simd.h"

#if KERN_X86
/*
 * Quantized GEMM micro-kernels. Each output (column c, row r) is computed
 * with exactly ggml's per-pair arithmetic (one 8-lane accumulator fed by
 * fma(int dot of the block, dw * dx), a scalar min/offset term, a final
 * horizontal sum), so results are bit-identical to llama.cpp's; only the
 * schedule differs: NC weight rows x NR activation rows are computed
 * together so each unpacked weight block and each activation block is
 * loaded once per tile. NC and NR are compile-time constants.
 */
#define UNROLL _Pragma("GCC unroll 4")
#define GEMM_TILE(NAME, TARGET, DOT, WTYPE, PREP, PAIR, MTERM)                                     \
    static inline TARGET __attribute__((always_inline)) void NAME(                                 \
        int nb, const uint8_t *w, size_t ws, const blk_q8 *x, size_t xs, float *y, size_t ys,      \
        const int NC, const int NR) {                                                              \
        __m256 acc[4][4];                                                                          \
        float macc[4][4];                                                                          \
        const size_t pf = (size_t)NC * ws * 2; /* two tiles ahead in the weight stream */          \
        UNROLL for (int c = 0; c < NC; c++) UNROLL for (int r = 0; r < NR; r++) {                  \
            acc[c][r] = _mm256_setzero_ps();                                                       \
            macc[c][r] = 0;                                                                        \
        }                                                                                          \
        for (int b = 0; b < nb; b++) {                                                             \
            __m256i wq[4];                                                                         \
            float dw[4], mw[4];                                                                    \
            UNROLL for (int c = 0; c < NC; c++) {                                                  \
                const WTYPE *wb = (const WTYPE *)(w + (size_t)c * ws) + b;                         \
                _mm_prefetch((const char *)wb + pf, _MM_HINT_T0);                                  \
                PREP                                                                               \
            }                                                                                      \
            UNROLL for (int r = 0; r < NR; r++) {                                                  \
                const blk_q8 *xb = x + (size_t)r * xs + b;                                         \
                __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);                          \
                UNROLL for (int c = 0; c < NC; c++) {                                              \
                    __m256i p = PAIR;                                                              \
                    acc[c][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),                             \
                                                _mm256_set1_ps(dw[c] * xb->d), acc[c][r]);         \
                    MTERM                                                                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        UNROLL for (int c = 0; c < NC; c++) UNROLL for (int r = 0; r < NR; r++)                    \
            y[(size_t)r * ys + c] = hsum_avx2(acc[c][r]) + macc[c][r];                             \
    }

#define Q4_PREP                                                                                    \
    wq[c] = unpack_q4(wb->qs);                                                                     \
    dw[c] = _cvtsh_ss(wb->d);
#define Q4_1_PREP Q4_PREP mw[c] = _cvtsh_ss(wb->m);
#define Q4_0_PREP Q4_PREP mw[c] = -8.0f * dw[c];
#define Q8_0_PREP                                                                                  \
    wq[c] = _mm256_loadu_si256((const __m256i *)wb->qs);                                           \
    dw[c] = _cvtsh_ss(wb->d);                                                                      \
    (void)mw;
#define Q4_PAIR(DOT) DOT(wq[c], xq)
#define Q8_PAIR(DOT) DOT(_mm256_sign_epi8(wq[c], wq[c]), _mm256_sign_epi8(xq, wq[c]))
#define MIN_TERM macc[c][r] += mw[c] * xb->s;
#define NO_MIN_TERM

/* Dispatch a (nc x nr) problem onto tiles: 4x1 for decode, 2x4 for many
 * rows, smaller tiles at the edges. */
#define GEMM_DRIVER(LINKAGE, NAME, TILE, TARGET)                                                   \
    LINKAGE TARGET void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x,           \
                             size_t xs, int nr, float *y, size_t ys) {                             \
        const uint8_t *w = wv;                                                                     \
        for (int r = 0; r < nr;) {                                                                 \
            int tr = nr - r >= 4 ? 4 : nr - r;                                                     \
            const blk_q8 *xr = x + (size_t)r * xs;                                                 \
            float *yr = y + (size_t)r * ys;                                                        \
            int c = 0;                                                                             \
            switch (tr) {                                                                          \
            case 4:                                                                                \
                for (; c + 2 <= nc; c += 2) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 2, 4);    \
                for (; c < nc; c++) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 1, 4);            \
                break;                                                                             \
            case 3:                                                                                \
                for (; c + 2 <= nc; c += 2) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 2, 3);    \
                for (; c < nc; c++) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 1, 3);            \
                break;                                                                             \
            case 2:                                                                                \
                for (; c + 4 <= nc; c += 4) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 4, 2);    \
                for (; c < nc; c++) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 1, 2);            \
                break;                                                                             \
            default:                                                                               \
                for (; c + 4 <= nc; c += 4) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 4, 1);    \
                for (; c < nc; c++) TILE(nb, w + c * ws, ws, xr, xs, yr + c, ys, 1, 1);            \
                break;                                                                             \
            }                                                                                      \
            r += tr;                                                                               \
        }                                                                                          \
    }

#define DEFINE_GEMMS(LINKAGE, SUFFIX, TARGET, DOT)                                                 \
    GEMM_TILE(tile_q4_1_##SUFFIX, TARGET, DOT, block_q4_1, Q4_1_PREP, Q4_PAIR(DOT), MIN_TERM)      \
    GEMM_TILE(tile_q4_0_##SUFFIX, TARGET, DOT, block_q4_0, Q4_0_PREP, Q4_PAIR(DOT), MIN_TERM)      \
    GEMM_TILE(tile_q8_0_##SUFFIX, TARGET, DOT, block_q8_0, Q8_0_PREP, Q8_PAIR(DOT), NO_MIN_TERM)   \
    GEMM_DRIVER(LINKAGE, kern_gemm_q4_1_##SUFFIX, tile_q4_1_##SUFFIX, TARGET)                      \
    GEMM_DRIVER(LINKAGE, kern_gemm_q4_0_##SUFFIX, tile_q4_0_##SUFFIX, TARGET)                      \
    GEMM_DRIVER(LINKAGE, kern_gemm_q8_0_##SUFFIX, tile_q8_0_##SUFFIX, TARGET)

#endif
#endif
