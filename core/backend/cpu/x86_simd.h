/*
 * x86_simd.h - the SIMD helpers the x86 kernel files share (internal to
 * core/backend/cpu). Every helper is static inline, so the hot loops that
 * use them inline them whichever file they are in. Kernels carry per-function
 * target attributes (T_AVX2, T_VNNI) rather than per-file -m flags, so the
 * files build without -march and kernels_dispatch.c picks a table from the
 * CPU at run time.
 */
#ifndef CPU_X86_SIMD_H
#define CPU_X86_SIMD_H

#include <math.h>
#include <string.h>

#include "core/backend/cpu/kernels.h"
#include "core/backend/cpu/kernels_x86.h"

#if KERN_X86
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_VNNI                                                                                     \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))

static inline T_AVX2 float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline T_AVX2 __m256i unpack_q4(const uint8_t *qs) {
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(t, m4);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(t, 4), m4);
    return _mm256_set_m128i(hi, lo);
}

/* Loads from weight blocks, which are only 2-byte aligned. */
static inline int32_t ld_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline short ld_i16(const void *p) {
    short v;
    memcpy(&v, p, 2);
    return v;
}

/* ggml's vectorized expf (see kernels.h), 8 lanes; same operation order as
 * kern_exp_ref so results are bit-identical. */
static inline T_AVX2 __m256 pow2i_avx2(__m256i n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

static inline T_AVX2 __m256 exp_avx2(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    __m256 n = _mm256_sub_ps(z, r);
    __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    __m256 u = _mm256_mul_ps(b, b);
    __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    __m256 big = _mm256_cmp_ps(absn, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    /* clamp so the integer split below stays in range for lanes replaced anyway */
    __m256 nc = _mm256_min_ps(_mm256_max_ps(n, _mm256_set1_ps(-192.0f)), _mm256_set1_ps(192.0f));
    __m256i ni = _mm256_cvttps_epi32(nc);
    /* n1 = ni / 2 rounded toward zero, n2 = ni - n1 */
    __m256i n1 = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    __m256 res = _mm256_mul_ps(_mm256_mul_ps(j, pow2i_avx2(n1)), pow2i_avx2(n2));
    __m256 alt = _mm256_andnot_ps(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ),
                                  _mm256_set1_ps(INFINITY));
    res = _mm256_blendv_ps(res, alt, big);
    /* NaN input: propagate (n is NaN there) */
    return _mm256_blendv_ps(res, n, _mm256_cmp_ps(n, n, _CMP_UNORD_Q));
}

/* ggml's expf on 16 lanes: exp_avx2's operations in the same order */
static inline T_VNNI __m512 exp_avx512(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    __m512 n = _mm512_sub_ps(z, r);
    __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    __m512 u = _mm512_mul_ps(b, b);
    __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0f), _CMP_GT_OQ);
    __m512 nc = _mm512_min_ps(_mm512_max_ps(n, _mm512_set1_ps(-192.0f)), _mm512_set1_ps(192.0f));
    __m512i ni = _mm512_cvttps_epi32(nc);
    __m512i n1 = _mm512_srai_epi32(_mm512_add_epi32(ni, _mm512_srli_epi32(ni, 31)), 1);
    __m512i n2 = _mm512_sub_epi32(ni, n1);
    const __m512i bias = _mm512_set1_epi32(127);
    __m512 res = _mm512_mul_ps(
        _mm512_mul_ps(j, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23))),
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23)));
    /* |n| > 192: 0 or inf by the sign of n; NaN input: NaN (n is NaN there) */
    __m512 alt = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_NLE_UQ),
                                     _mm512_set1_ps(INFINITY));
    res = _mm512_mask_mov_ps(res, big, alt);
    return _mm512_mask_mov_ps(res, _mm512_cmp_ps_mask(n, n, _CMP_UNORD_Q), n);
}

#define UNROLL8 _Pragma("GCC unroll 8")
#define UNROLL16 _Pragma("GCC unroll 16")

enum { WK_Q4_0, WK_Q4_1, WK_Q8_0 }; /* weight kinds, for the GEMM templates */

#endif
#endif
