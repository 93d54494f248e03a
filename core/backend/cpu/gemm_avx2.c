/*
 * gemm_avx2.c - AVX2 activation quantization and quantized GEMM (both
 * numerics), for the AVX2 table; the AVX-512 table shares the quantization.
 */
#include "core/backend/cpu/gemm_tiles_x86.h"

#if KERN_X86

static inline T_AVX2 __m256i dot_u8s8_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* ---- activation quantization ---- */
T_AVX2 void kern_quantize_avx2(const float *x, blk_q8 *y, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / 32; b++, x += 32) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m =
            _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                          _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m1 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m1 = _mm_max_ps(m1, _mm_movehl_ps(m1, m1));
        m1 = _mm_max_ss(m1, _mm_movehdup_ps(m1));
        float amax = _mm_cvtss_f32(m1);
        float d = amax / 127.0f, id = d != 0.0f ? 127.0f / amax : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, vid), rnd));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, vid), rnd));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, vid), rnd));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, vid), rnd));
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s1 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s1 = _mm_add_epi32(s1, _mm_shuffle_epi32(s1, 0x4e));
        s1 = _mm_add_epi32(s1, _mm_shuffle_epi32(s1, 0xb1));
        int sum = _mm_cvtsi128_si32(s1);
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
        y[b].d = _cvtsh_ss(_cvtss_sh(d, 0));
        y[b].s = _cvtsh_ss(_cvtss_sh(d * (float)sum, 0));
    }
}

DEFINE_GEMMS(, avx2, T_AVX2, dot_u8s8_avx2)

/*
 * Fast numerics, AVX2 (also without VNNI): 8 weight columns at a time, each
 * block's codes unpacked once for up to 4 activation rows; a column's int
 * dot is 8 lanes from maddubs + madd (no saturation: |pair sum| <= 2 * 128
 * * 127), the 8 columns' lanes summed into one vector by hadd (integer adds,
 * exact), then the scale and min-term fmas as vectors of 8 columns. The
 * last nc % 8 columns use the scalar reference (same definition).
 */
static inline T_AVX2 __m256i hsum8x8_epi32(const __m256i *v) {
    __m256i a = _mm256_hadd_epi32(v[0], v[1]), b = _mm256_hadd_epi32(v[2], v[3]);
    __m256i c = _mm256_hadd_epi32(v[4], v[5]), d = _mm256_hadd_epi32(v[6], v[7]);
    __m256i e = _mm256_hadd_epi32(a, b), f = _mm256_hadd_epi32(c, d);
    return _mm256_add_epi32(_mm256_permute2x128_si256(e, f, 0x20),
                            _mm256_permute2x128_si256(e, f, 0x31));
}

static inline T_AVX2 __attribute__((always_inline)) void
avx2_fast_tile(const int KIND, const int NR, int nb, const uint8_t *w, size_t ws, const blk_q8 *x,
               size_t xs, float *y, size_t ys) {
    const size_t wblk = KIND == WK_Q4_0   ? sizeof(block_q4_0)
                        : KIND == WK_Q4_1 ? sizeof(block_q4_1)
                                          : sizeof(block_q8_0);
    __m256 acc[4], macc[4];
    for (int r = 0; r < NR; r++) acc[r] = macc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i wq[8];
        uint16_t dh[8], mh[8];
        for (int c = 0; c < 8; c++) {
            const uint8_t *wb = w + (size_t)c * ws + (size_t)b * wblk;
            dh[c] = (uint16_t)ld_i16(wb);
            mh[c] = KIND == WK_Q4_1 ? (uint16_t)ld_i16(wb + 2) : 0;
            wq[c] = KIND == WK_Q8_0 ? _mm256_loadu_si256((const __m256i *)(wb + 2))
                                    : unpack_q4(wb + (KIND == WK_Q4_1 ? 4 : 2));
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
        const __m256 mw = KIND == WK_Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)mh))
                                          : _mm256_mul_ps(_mm256_set1_ps(-8.0f), dw);
        for (int r = 0; r < NR; r++) {
            const blk_q8 *xb = x + (size_t)r * xs + b;
            const __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256i p[8];
            for (int c = 0; c < 8; c++)
                p[c] = KIND == WK_Q8_0 ? dot_u8s8_avx2(_mm256_sign_epi8(wq[c], wq[c]),
                                                       _mm256_sign_epi8(xq, wq[c]))
                                       : dot_u8s8_avx2(wq[c], xq);
            const __m256 isum = _mm256_cvtepi32_ps(hsum8x8_epi32(p));
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xb->d)), isum, acc[r]);
            if (KIND != WK_Q8_0) macc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xb->s), macc[r]);
        }
    }
    for (int r = 0; r < NR; r++)
        _mm256_storeu_ps(y + (size_t)r * ys,
                         KIND == WK_Q8_0 ? acc[r] : _mm256_add_ps(acc[r], macc[r]));
}

#define AVX2_FAST_DRIVER(NAME, KIND, SCALAR)                                                       \
    T_AVX2 void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x, size_t xs,        \
                     int nr, float *y, size_t ys) {                                                \
        const uint8_t *w = wv;                                                                     \
        int c = 0;                                                                                 \
        for (; c + 8 <= nc; c += 8) {                                                              \
            int r = 0;                                                                             \
            for (; r + 4 <= nr; r += 4)                                                            \
                avx2_fast_tile(KIND, 4, nb, w + (size_t)c * ws, ws, x + (size_t)r * xs, xs,        \
                               y + (size_t)r * ys + c, ys);                                        \
            for (; r < nr; r++)                                                                    \
                avx2_fast_tile(KIND, 1, nb, w + (size_t)c * ws, ws, x + (size_t)r * xs, xs,        \
                               y + (size_t)r * ys + c, ys);                                        \
        }                                                                                          \
        if (c < nc) SCALAR(nb, w + (size_t)c * ws, ws, nc - c, x, xs, nr, y + c, ys);              \
    }
AVX2_FAST_DRIVER(kern_gemm_q4_0_fast_avx2, WK_Q4_0, kern_gemm_q4_0_fast_scalar)
AVX2_FAST_DRIVER(kern_gemm_q4_1_fast_avx2, WK_Q4_1, kern_gemm_q4_1_fast_scalar)
AVX2_FAST_DRIVER(kern_gemm_q8_0_fast_avx2, WK_Q8_0, kern_gemm_q8_0_fast_scalar)

#endif
