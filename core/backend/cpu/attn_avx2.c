/*
 * attn_avx2.c - AVX2 f16 dot products, axpy and softmax, and attention as
 * the reference schedule (kern_attn_f16_with) over them.
 */
#include "core/backend/cpu/x86_simd.h"

#if KERN_X86

T_AVX2 float kern_dot_f16_avx2(const uint16_t *a, const float *b, int n) {
    if (n % 16) return kern_dot_f16_scalar(a, b, n);
    /* lanes 0-7 and 8-15 of ggml's 16-lane accumulator */
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))),
                             _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8))),
                             _mm256_loadu_ps(b + i + 8), hi);
    }
    return hsum_avx2(_mm256_add_ps(hi, lo));
}

T_AVX2 float kern_dot_f16_x4_avx2(const uint16_t *a, const float *b, int n) {
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 8; j++)
            acc[j] =
                _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8 * j))),
                                _mm256_loadu_ps(b + i + 8 * j), acc[j]);
    /* lanes 0-15 = acc0|acc1, 16-31 = acc2|acc3, ... */
    __m256 lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    __m256 hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    double sum = np ? hsum_avx2(_mm256_add_ps(hi, lo)) : 0.0;
    for (int i = np; i < n; i++) sum += (double)(_cvtsh_ss(a[i]) * b[i]);
    return (float)sum;
}

T_AVX2 double kern_softmax_exp_avx2(float *x, int n, float max) {
    const __m256 vmax = _mm256_set1_ps(max);
    double sum = 0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 lo = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        __m256 hi = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmax));
        _mm256_storeu_ps(x + i, lo);
        _mm256_storeu_ps(x + i + 8, hi);
        sum += (double)hsum_avx2(_mm256_add_ps(hi, lo));
    }
    if (i < n) sum += kern_softmax_exp_scalar(x + i, n - i, max);
    return sum;
}

T_AVX2 void kern_axpy_f16_avx2(float a, const uint16_t *v, float *acc, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            acc + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))),
                                     _mm256_loadu_ps(acc + i)));
    for (; i < n; i++) acc[i] = __builtin_fmaf(a, _cvtsh_ss(v[i]), acc[i]);
}

/* kern_attn_f16_with's parts on this ISA: the AVX2 table's entries */
static const kern_attn_parts AVX2_PARTS = {kern_dot_f16_avx2, kern_dot_f16_x4_avx2,
                                           kern_axpy_f16_avx2, kern_softmax_exp_avx2};

void kern_attn_f16_avx2(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                        const float *q, int nq, int hd, float scale, int single, float *work,
                        float *out) {
    kern_attn_f16_with(&AVX2_PARTS, k, v, off, n_ctx, q, nq, hd, scale, single, work, out);
}

void kern_attn_f16_row_avx2(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                            const size_t *off, int n_ctx, const float *q, int nq, int hd,
                            float scale, int single, float *work, float *out) {
    kern_attn_f16_row_with(kern_attn_f16_avx2, k, v, kv_stride, nkv, off, n_ctx, q, nq, hd, scale,
                           single, work, out);
}

#endif
