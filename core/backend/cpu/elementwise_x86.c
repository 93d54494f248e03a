/*
 * elementwise_x86.c - AVX2 and AVX-512 f32 -> f16, SiLU-multiply, RoPE and
 * rmsnorm.
 */
#include "core/backend/cpu/x86_simd.h"

#if KERN_X86

T_AVX2 void kern_f32_to_f16_avx2(const float *x, uint16_t *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), 0));
    if (i < n) kern_f32_to_f16_scalar(x + i, y + i, n - i);
}

T_AVX2 void kern_silu_mul_avx2(const float *g, const float *u, float *out, int n) {
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 e = exp_avx2(_mm256_sub_ps(zero, x));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)),
                                                _mm256_loadu_ps(u + i)));
    }
    if (i < n) kern_silu_mul_scalar(g + i, u + i, out + i, n - i);
}

/* Same arithmetic as kern_rope_scalar; the target attribute turns fmaf
 * into the fma instruction. */
T_AVX2 void kern_rope_avx2(float *x, const float *cs, int n_heads, int head_dim, int half) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1], a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = __builtin_fmaf(a, c, -(b * s));
            v[2 * i + 1] = __builtin_fmaf(a, s, b * c);
        }
    }
}

/* rmsnorm: the sum of squares is one chain of double adds per row, which
 * latency bounds the scalar code; 8 rows at a time put the 8 chains in the
 * lanes of one vector (each row's adds still in column order), from an 8x8
 * transpose of the squares. */
T_VNNI void kern_rmsnorm_avx512(const float *x, const float *g, int rows, int cols, float eps,
                                float *y) {
    int r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        const float *xr = x + (size_t)r0 * cols;
        __m512d ss = _mm512_setzero_pd();
        int i = 0;
        for (; i + 8 <= cols; i += 8) {
            __m256 v[8], t[8];
            UNROLL8 for (int r = 0; r < 8; r++) {
                __m256 a = _mm256_loadu_ps(xr + (size_t)r * cols + i);
                v[r] = _mm256_mul_ps(a, a);
            }
            UNROLL8 for (int r = 0; r < 8; r += 2) {
                t[r] = _mm256_unpacklo_ps(v[r], v[r + 1]);
                t[r + 1] = _mm256_unpackhi_ps(v[r], v[r + 1]);
            }
            /* t0 = r0r1 cols 0,1,4,5 (lo); t1 = cols 2,3,6,7 ... */
            __m256 u0 = _mm256_shuffle_ps(t[0], t[2], 0x44),
                   u1 = _mm256_shuffle_ps(t[0], t[2], 0xee);
            __m256 u2 = _mm256_shuffle_ps(t[1], t[3], 0x44),
                   u3 = _mm256_shuffle_ps(t[1], t[3], 0xee);
            __m256 u4 = _mm256_shuffle_ps(t[4], t[6], 0x44),
                   u5 = _mm256_shuffle_ps(t[4], t[6], 0xee);
            __m256 u6 = _mm256_shuffle_ps(t[5], t[7], 0x44),
                   u7 = _mm256_shuffle_ps(t[5], t[7], 0xee);
            /* column k of the 8 rows: rows 0-3 from u*, rows 4-7 from the matching u(4+*) */
            __m256 c[8];
            c[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
            c[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
            c[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
            c[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
            c[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
            c[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
            c[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
            c[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
            UNROLL8 for (int k = 0; k < 8; k++) ss = _mm512_add_pd(ss, _mm512_cvtps_pd(c[k]));
        }
        double s8[8];
        _mm512_storeu_pd(s8, ss);
        for (int r = 0; r < 8; r++) {
            const float *xrr = xr + (size_t)r * cols;
            for (int ii = i; ii < cols; ii++) s8[r] += (double)(xrr[ii] * xrr[ii]);
            const float mean = (float)(s8[r] / cols);
            const __m512 scale = _mm512_set1_ps(1.0f / sqrtf(mean + eps));
            float *yr = y + (size_t)(r0 + r) * cols;
            for (int j = 0; j < cols; j += 16) {
                __mmask16 m = cols - j >= 16 ? 0xffff : (__mmask16)((1u << (cols - j)) - 1);
                __m512 xv = _mm512_maskz_loadu_ps(m, xrr + j);
                _mm512_mask_storeu_ps(
                    yr + j, m,
                    _mm512_mul_ps(_mm512_mul_ps(xv, scale), _mm512_maskz_loadu_ps(m, g + j)));
            }
        }
    }
    if (r0 < rows)
        kern_rmsnorm_scalar(x + (size_t)r0 * cols, g, rows - r0, cols, eps, y + (size_t)r0 * cols);
}

T_VNNI void kern_silu_mul_avx512(const float *g, const float *u, float *out, int n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp_avx512(_mm512_sub_ps(zero, x));
        _mm512_mask_storeu_ps(out + i, m,
                              _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)),
                                            _mm512_maskz_loadu_ps(m, u + i)));
    }
}

#endif
