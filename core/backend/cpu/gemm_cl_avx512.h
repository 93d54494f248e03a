/*
 * gemm_cl_avx512.h - the column-lane building blocks (internal to
 * core/backend/cpu) that gemm_avx512.c (row-major weights, transposed per
 * chunk) and gemm_packed_avx512.c (weights packed in this layout once) share.
 */
#ifndef CPU_GEMM_CL_AVX512_H
#define CPU_GEMM_CL_AVX512_H

#include "core/backend/cpu/x86_simd.h"

#if KERN_X86
/*
 * Column-lane GEMM (AVX-512 VNNI). For a chunk of 16 weight columns, each
 * block is first transposed into "column lanes": W[l] holds lane group l
 * (bytes 4l..4l+3 of the unpacked block) of the 16 columns in its 16 dword
 * lanes, with the columns' dw and mw as 16-float vectors beside it. Then for
 * each activation row, dpbusd(W[l], x's group l broadcast) yields lane l of
 * 16 outputs at once, so every column's 8-lane accumulator lives across 8
 * registers (lane l in acc[l]) and each output is computed exactly as in
 * GEMM_TILE: int dot per lane, fma with dw * dx per block, the min term as
 * a separate product and sum, then (l0 + l4 + ...) summed as hsum_avx2 does.
 * The transposition is paid once per chunk and block, not per row; the
 * result of a row is 16 contiguous columns, stored with one instruction.
 * Q8_0 weights are biased by 128 to be the unsigned operand; each block's
 * dot then starts from -128 * (the row's 4 bytes of the group) to cancel it.
 */
#define CL_MAX_NB 128 /* blocks (4096 inputs) the stack buffer holds: 128 x 640 bytes */

typedef struct {
    _Alignas(64) int32_t w[8][16]; /* lane group l of the 16 columns (4 unsigned bytes each) */
    float dw[16], mw[16];
} cl_block;

/* Lane group l of a block's 16 columns as dpbusd's unsigned operand, from
 * the column-lane buffer (PACKED 0: a cl_block) or a packed group's block
 * (PACKED 1: nibbles split here; Q8_0 codes biased by 128 here). */
static inline T_VNNI __attribute__((always_inline)) __m512i
exact_codes(const int KIND, const int PACKED, const void *src, int l) {
    if (!PACKED) return _mm512_load_si512(((const cl_block *)src)->w[l]);
    const uint8_t *pb = src;
    if (KIND == WK_Q8_0)
        return _mm512_xor_si512(_mm512_load_si512(pb + 64 * l), _mm512_set1_epi8((char)0x80));
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    if (l < 4) return _mm512_and_si512(_mm512_load_si512(pb + 64 * l), m4);
    return _mm512_and_si512(_mm512_srli_epi16(_mm512_load_si512(pb + 64 * (l - 4)), 4), m4);
}

/* Block b of the exact column-lane GEMM for NR (1 or 2) activation rows:
 * lane l of 16 outputs += (float)(int dot of group l) * (dw * dx) by fma,
 * the min term mw * sx summed apart in macc (Q8_0: none; its biased codes'
 * correction, -128 * (sum of each group's 4 activation bytes), starts
 * each dot: row r's block b has it at xc_row(KIND, xc, r, xcs) + 8 * b). */
static inline T_VNNI __attribute__((always_inline)) void
exact_block(const int KIND, const int PACKED, const int NR, const void *src, __m512 dw, __m512 mw,
            const blk_q8 *x, size_t xs, const int32_t *xc, size_t xcs, int b, __m512 (*acc)[8],
            __m512 *macc) {
    __m512 sc[2];
    UNROLL8 for (int r = 0; r < NR; r++) {
        const blk_q8 *xb = x + (size_t)r * xs + b;
        sc[r] = _mm512_mul_ps(dw, _mm512_set1_ps(xb->d));
        if (KIND != WK_Q8_0)
            macc[r] = _mm512_add_ps(macc[r], _mm512_mul_ps(mw, _mm512_set1_ps(xb->s)));
    }
    UNROLL8 for (int l = 0; l < 8; l++) {
        const __m512i wl = exact_codes(KIND, PACKED, src, l);
        UNROLL8 for (int r = 0; r < NR; r++) {
            const blk_q8 *xb = x + (size_t)r * xs + b;
            const __m512i init = KIND == WK_Q8_0
                                     ? _mm512_set1_epi32(xc[(size_t)r * xcs + (size_t)b * 8 + l])
                                     : _mm512_setzero_si512();
            const __m512i p =
                _mm512_dpbusd_epi32(init, wl, _mm512_set1_epi32(ld_i32(xb->qs + 4 * l)));
            acc[r][l] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc[r], acc[r][l]);
        }
    }
}

/* The 8 lanes summed as hsum_avx2 sums them, plus the min term; columns
 * [0, nc) of NR rows stored. */
static inline T_VNNI __attribute__((always_inline)) void exact_store(const int KIND, const int NR,
                                                                     __m512 (*acc)[8],
                                                                     const __m512 *macc, float *y,
                                                                     size_t ys, int nc) {
    const __mmask16 m = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
    UNROLL8 for (int r = 0; r < NR; r++) {
        const __m512 *a = acc[r];
        __m512 h =
            _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])),
                          _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])));
        if (KIND != WK_Q8_0) h = _mm512_add_ps(h, macc[r]);
        _mm512_mask_storeu_ps(y + (size_t)r * ys, m, h);
    }
}

/* NR (1 or 2) activation rows against the prepared chunk; meanwhile the
 * pf_len bytes at pf are fetched into L2, spread evenly over the blocks. */
static inline T_VNNI __attribute__((always_inline)) void
cl_rows(const int KIND, const int NR, int nb, const cl_block *buf, const blk_q8 *x, size_t xs,
        const int32_t *xc, size_t xcs, float *y, size_t ys, int nc, const uint8_t *pf,
        size_t pf_len) {
    __m512 acc[2][8], macc[2];
    UNROLL8 for (int r = 0; r < NR; r++) {
        UNROLL8 for (int l = 0; l < 8; l++) acc[r][l] = _mm512_setzero_ps();
        macc[r] = _mm512_setzero_ps();
    }
    const size_t pf_step = (pf_len + (size_t)nb - 1) / (size_t)nb;
    size_t pfo = 0;
    for (int b = 0; b < nb; b++) {
        for (const size_t end = pfo + pf_step; pfo < end && pfo < pf_len; pfo += 64)
            _mm_prefetch((const char *)pf + pfo, _MM_HINT_T1);
        exact_block(KIND, 0, NR, buf + b, _mm512_load_ps(buf[b].dw), _mm512_load_ps(buf[b].mw), x,
                    xs, xc, xcs, b, acc, macc);
    }
    exact_store(KIND, NR, acc, macc, y, ys, nc);
}

#define CL_FAST_NR 8

#endif
#endif
