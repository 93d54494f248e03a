/*
 * kernels_x86.c - AVX2 and AVX-512 VNNI variants of the kernels in
 * kernels.h. Functions carry target attributes so the file builds without
 * -march and the right table is picked at run time.
 *
 * The AVX2 table and the 256-bit GEMM tiles are one source, two
 * instantiations (VNNI vpdpbusd vs AVX2 maddubs + madd for the u8 x s8 dot).
 * The AVX-512 table adds kernels that keep each output's arithmetic (and so
 * its bits) but change the schedule so 16 outputs share each instruction:
 *   - GEMM, one row: gemv16, per-column scalars as vectors of 16 columns;
 *   - GEMM, 2+ rows: column lanes (cl_*), each chunk of 16 weight columns
 *     transposed once so one dpbusd serves 16 columns of a row;
 *   - attention, rmsnorm, softmax, silu in zmm registers.
 */
#include <math.h>
#include <string.h>

#include "core/backend/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
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

static inline T_AVX2 __m256i dot_u8s8_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
static inline T_VNNI __m256i dot_u8s8_vnni(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
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

static T_AVX2 void f32_to_f16_avx2(const float *x, uint16_t *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), 0));
    if (i < n) kern_f32_to_f16_scalar(x + i, y + i, n - i);
}

/* ---- activation quantization ---- */
static T_AVX2 void quantize_avx2(const float *x, blk_q8 *y, int n) {
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

static T_AVX2 float dot_f16_avx2(const uint16_t *a, const float *b, int n) {
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

static T_AVX2 float dot_f16_x4_avx2(const uint16_t *a, const float *b, int n) {
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

static T_AVX2 void silu_mul_avx2(const float *g, const float *u, float *out, int n) {
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
static T_AVX2 void rope_avx2(float *x, const float *cs, int n_heads, int head_dim, int half) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1], a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = __builtin_fmaf(a, c, -(b * s));
            v[2 * i + 1] = __builtin_fmaf(a, s, b * c);
        }
    }
}

static T_AVX2 double softmax_exp_avx2(float *x, int n, float max) {
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

static T_AVX2 void axpy_f16_avx2(float a, const uint16_t *v, float *acc, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            acc + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))),
                                     _mm256_loadu_ps(acc + i)));
    for (; i < n; i++) acc[i] = __builtin_fmaf(a, _cvtsh_ss(v[i]), acc[i]);
}

#define UNROLL8 _Pragma("GCC unroll 8")
#define UNROLL16 _Pragma("GCC unroll 16")

/* ---- attention (AVX-512) ----
 * Same arithmetic as kern_attn_f16_with (see kernels.h), scheduled for
 * registers: a score is one 16-lane accumulator chain reduced by the
 * kern_tree16 shuffle sequence, and the V sum keeps each lane's running
 * accumulator in a register for a 16-float slice of the head while the
 * positions stream past (lane p % 16 for the tiled shape; for the vec_dot
 * shape the 64 lanes are walked as 16 groups of 4 whose chains are combined
 * as kern_reduce64 combines them). */
static inline T_VNNI float tree16_zmm(__m512 v) {
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return hsum_avx2(_mm256_add_ps(hi, _mm512_castps512_ps256(v)));
}

static inline T_VNNI __m512 ld_f16x16(const uint8_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

/* kern_tree16 applied lane-wise to 16 vectors: out[i] = tree16(a[0][i], ..., a[15][i]) */
static inline T_VNNI __m512 tree16_vert(const __m512 *a) {
    __m512 t3[8], t6[4];
    UNROLL8 for (int l = 0; l < 8; l++) t3[l] = _mm512_add_ps(a[l + 8], a[l]);
    UNROLL8 for (int l = 0; l < 4; l++) t6[l] = _mm512_add_ps(t3[l + 4], t3[l]);
    return _mm512_add_ps(_mm512_add_ps(t6[0], t6[2]), _mm512_add_ps(t6[1], t6[3]));
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

/* kern_softmax_exp's contract: runs of 16 values reduced by the tree, the
 * runs added in double; the tail as the scalar reference does it. */
static T_VNNI double softmax_exp_avx512(float *x, int n, float max) {
    const __m512 vmax = _mm512_set1_ps(max);
    double sum = 0;
    int i = 0;
    for (; i < n; i += 16) {
        /* a short last run: its missing lanes are 0 in the tree, as in the reference */
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 e = _mm512_maskz_mov_ps(
            m, exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax)));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum += (double)tree16_zmm(e);
    }
    return sum;
}

/* rmsnorm: the sum of squares is one chain of double adds per row, which
 * latency bounds the scalar code; 8 rows at a time put the 8 chains in the
 * lanes of one vector (each row's adds still in column order), from an 8x8
 * transpose of the squares. */
static T_VNNI void rmsnorm_avx512(const float *x, const float *g, int rows, int cols, float eps,
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

static T_VNNI void silu_mul_avx512(const float *g, const float *u, float *out, int n) {
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

/* kern_tree16 of 16 vectors at once: out[j] = tree16(a[j][0..15]). The
 * shuffles pair exactly the lanes the tree pairs (l[i] with l[i + 8], then
 * t[i] with t[i + 4], then (t0 + t2) + (t1 + t3)), two to four vectors per
 * instruction. */
static inline T_VNNI __m512 tree16_horiz(const __m512 *a) {
    __m512 b[8], c[4];
    UNROLL8 for (int i = 0; i < 8; i++) b[i] =
        _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xee),
                      _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44));
    /* b[i]: t3 of a[2i] in 128-bit lanes 0-1, of a[2i+1] in lanes 2-3 */
    UNROLL8 for (int m = 0; m < 4; m++) c[m] =
        _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * m], b[2 * m + 1], 0xdd),
                      _mm512_shuffle_f32x4(b[2 * m], b[2 * m + 1], 0x88));
    /* c[m]: 128-bit lane k holds t6 of a[4m + k] */
    __m512 d0 =
        _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x44), _mm512_shuffle_ps(c[0], c[1], 0xee));
    __m512 d1 =
        _mm512_add_ps(_mm512_shuffle_ps(c[2], c[3], 0x44), _mm512_shuffle_ps(c[2], c[3], 0xee));
    /* d0 lane k: (t0 + t2, t1 + t3) of a[k], then of a[4 + k]; d1 the same for a[8 + k], a[12 + k]
     */
    __m512 e = _mm512_add_ps(_mm512_shuffle_ps(d0, d1, 0x88), _mm512_shuffle_ps(d0, d1, 0xdd));
    /* e[4k + m] is the result for a[k + 4m] */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, e);
}

#define ATTN_PF 64     /* positions ahead to prefetch K and V rows (a decode row's are cold) */
#define ATTN_VBLOCK 96 /* positions of V per block: 96 x 128-byte rows (hd 64) stay in L1 */
#define ATTN_NH 3      /* query heads of one KV head handled together by both shapes */
#define ATTN_KV_MAX 8  /* KV heads of one row the decode shape takes in one pass */

/* NH heads of q rounded to f16, as ggml's f16 matmuls round them */
static inline T_VNNI __attribute__((always_inline)) void
attn_round_q(const int NH, const float *q32, int hd, float *q) {
    for (int i = 0; i < NH * hd; i += 16)
        _mm512_storeu_ps(q + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(q32 + i), 0)));
}

/* Scores of positions [p0, p0 + cnt) for NH heads (head h's 16 dot lanes
 * per position in a[h]): the lanes reduced by the tree, times scale, stored
 * at s[h * ss], and the running maxima (NaN scores skipped). */
static inline T_VNNI __attribute__((always_inline)) void
attn_store_scores(const int NH, __m512 (*a)[16], float scale, int cnt, float *s, size_t ss,
                  __m512 *mxv) {
    const __mmask16 m = cnt >= 16 ? 0xffff : (__mmask16)((1u << cnt) - 1);
    UNROLL8 for (int h = 0; h < NH; h++) {
        const __m512 sc = _mm512_mul_ps(tree16_horiz(a[h]), _mm512_set1_ps(scale));
        _mm512_mask_storeu_ps(s + h * ss, m, sc);
        mxv[h] = _mm512_mask_max_ps(mxv[h], m, sc, mxv[h]);
    }
}

/* Each head's scores into softmax weights in place, rounded to f16 as the
 * reference rounds them, then zeros up to 64 past the end (and on to the
 * next multiple of 16). */
static inline T_VNNI __attribute__((always_inline)) void
attn_softmax_weights(const int NH, float *scores, size_t ss, int n_ctx, const __m512 *mxv) {
    for (int h = 0; h < NH; h++) {
        float *sh = scores + h * ss;
        const float mx = _mm512_reduce_max_ps(mxv[h]);
        const __m512 inv = _mm512_set1_ps((float)(1.0 / softmax_exp_avx512(sh, n_ctx, mx)));
        for (int p = 0; p < n_ctx + 64; p += 16) {
            __mmask16 m = n_ctx - p >= 16 ? 0xffff
                          : n_ctx > p     ? (__mmask16)((1u << (n_ctx - p)) - 1)
                                          : 0;
            __m512 w = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, sh + p), inv);
            _mm512_storeu_ps(sh + p,
                             _mm512_maskz_mov_ps(m, _mm512_cvtph_ps(_mm512_cvtps_ph(w, 0))));
        }
    }
}

/*
 * The decode shape (a sequence with one row in the step: llama.cpp's
 * vec_dot path) for NH query heads that share one KV head, so each K and V
 * row is loaded and converted from f16 once for all NH heads. Per head the
 * operations and their order are those of kern_attn_f16_with: the 64-lane
 * dot of dot_f16_x4 for each score, ggml's softmax, weights rounded to
 * f16, and V summed in 64 lanes (lane L holds positions L, L + 64, ... in
 * order) reduced as kern_reduce64. Three phases: scores (and the running
 * maxima), softmax weights, V sum; attn_single_kv runs them.
 */

/* Prefetch the K rows (into L1) and V rows (into L1, or with v_l2 into L2:
 * they are read after the scores of several heads) of positions [p0, p1),
 * pf_bytes of each: one KV head's, or the whole row of all heads. */
static inline T_VNNI __attribute__((always_inline)) void
attn_prefetch(const uint8_t *k, const uint8_t *v, const size_t *off, int p0, int p1,
              size_t pf_bytes, int v_l2) {
    for (int p = p0; p < p1; p++)
        for (size_t i = 0; i < pf_bytes; i += 64) {
            _mm_prefetch((const char *)k + off[p] + i, _MM_HINT_T0);
            if (v_l2) _mm_prefetch((const char *)v + off[p] + i, _MM_HINT_T1);
            else _mm_prefetch((const char *)v + off[p] + i, _MM_HINT_T0);
        }
}

/* Scores of positions [p0, p0 + cnt) (cnt <= 16) for the NH heads of q
 * (rounded to f16): head h's at s[h * ss], its running maximum in mxv[h]. */
static inline T_VNNI __attribute__((always_inline)) void
attn_single_scores16(const int NH, const uint8_t *k, const size_t *off, int p0, int cnt,
                     const float *q, int hd, float scale, float *s, size_t ss, __m512 *mxv) {
    const __m512 zero = _mm512_setzero_ps();
    __m512 a[ATTN_NH][16];
    for (int j = 0; j < 16; j++) {
        if (j >= cnt) { /* past the last position: not computed, not stored */
            UNROLL8 for (int h = 0; h < NH; h++) a[h][j] = zero;
            continue;
        }
        const uint8_t *kp = k + off[p0 + j];
        __m512 a0[ATTN_NH], a1[ATTN_NH], a2[ATTN_NH], a3[ATTN_NH];
        UNROLL8 for (int h = 0; h < NH; h++) a0[h] = a1[h] = a2[h] = a3[h] = zero;
        for (int i = 0; i < hd; i += 64) {
            const __m512 k0 = ld_f16x16(kp + 2 * i), k1 = ld_f16x16(kp + 2 * i + 32),
                         k2 = ld_f16x16(kp + 2 * i + 64), k3 = ld_f16x16(kp + 2 * i + 96);
            UNROLL8 for (int h = 0; h < NH; h++) {
                const float *qh = q + h * hd + i;
                a0[h] = _mm512_fmadd_ps(k0, _mm512_loadu_ps(qh), a0[h]);
                a1[h] = _mm512_fmadd_ps(k1, _mm512_loadu_ps(qh + 16), a1[h]);
                a2[h] = _mm512_fmadd_ps(k2, _mm512_loadu_ps(qh + 32), a2[h]);
                a3[h] = _mm512_fmadd_ps(k3, _mm512_loadu_ps(qh + 48), a3[h]);
            }
        }
        UNROLL8 for (int h = 0; h < NH; h++) a[h][j] =
            _mm512_add_ps(_mm512_add_ps(a0[h], a2[h]), _mm512_add_ps(a1[h], a3[h]));
    }
    attn_store_scores(NH, a, scale, cnt, s + p0, ss, mxv);
}

/* The weighted sum of V for NH heads from their softmax weights (scores
 * rounded to f16, zero up to 64 past the end). The V sum walks, for each
 * pair of 16-float slices and each lane group l, the positions
 * l + 16 g + 64 w: NH x 4 x 2 accumulators in registers, and every 64-byte
 * line of V is read once. */
static inline T_VNNI __attribute__((always_inline)) void
attn_single_v(const int NH, const uint8_t *v, const size_t *off, int n_ctx, const float *scores,
              size_t ss, int hd, float *out) {
    const int nchunk = hd / 16;
    const __m512 zero = _mm512_setzero_ps();
    const int nfull = n_ctx / 64 * 64, tail = n_ctx - nfull;
    for (int c = 0; c < nchunk; c += 2) {
        __m512 x[ATTN_NH][2][16];
        for (int l = 0; l < 16; l++) {
            __m512 acc[ATTN_NH][4][2];
            UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int g = 0; g < 4; g++) acc[h][g][0] =
                acc[h][g][1] = zero;
#define VTERM2(P, G)                                                                               \
    do {                                                                                           \
        const uint8_t *vp = v + off[P] + 32 * c;                                                   \
        const __m512 v0 = ld_f16x16(vp), v1 = ld_f16x16(vp + 32);                                  \
        UNROLL8 for (int h = 0; h < NH; h++) {                                                     \
            const __m512 wt = _mm512_set1_ps(scores[h * ss + (P)]);                                \
            acc[h][G][0] = _mm512_fmadd_ps(wt, v0, acc[h][G][0]);                                  \
            acc[h][G][1] = _mm512_fmadd_ps(wt, v1, acc[h][G][1]);                                  \
        }                                                                                          \
    } while (0)
            for (int w = 0; w < nfull; w += 64) {
                VTERM2(w + l, 0);
                VTERM2(w + l + 16, 1);
                VTERM2(w + l + 32, 2);
                VTERM2(w + l + 48, 3);
            }
            /* the last window: only its positions (lanes past the end stay +0) */
            if (l < tail) VTERM2(nfull + l, 0);
            if (l + 16 < tail) VTERM2(nfull + l + 16, 1);
            if (l + 32 < tail) VTERM2(nfull + l + 32, 2);
            if (l + 48 < tail) VTERM2(nfull + l + 48, 3);
#undef VTERM2
            UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int cc = 0; cc < 2; cc++)
                x[h][cc][l] = _mm512_add_ps(_mm512_add_ps(acc[h][0][cc], acc[h][2][cc]),
                                            _mm512_add_ps(acc[h][1][cc], acc[h][3][cc]));
        }
        UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int cc = 0; cc < 2; cc++)
            _mm512_storeu_ps(out + (size_t)h * hd + 16 * (c + cc), tree16_vert(x[h][cc]));
    }
}

/*
 * The decode shape for nkv KV heads of NH query heads each (kv_stride bytes
 * apart: a whole row of the cache, or nkv = 1): the scores of all heads in
 * one pass over the positions, so the K rows of every head of a position
 * (side by side in the cache) stream in together while the scores are
 * computed, and the V rows, prefetched meanwhile (into L2 when several
 * heads' scores come first), are summed head by head after. One KV head at
 * a time would leave the core waiting on memory in the first head's pass
 * and computing from cache in the others'. prefetch: the rows are cold
 * (the first group of heads of a KV head; the others find them in cache).
 */
static inline T_VNNI __attribute__((always_inline)) void
attn_single_kv(const int NH, const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
               const size_t *off, int n_ctx, const float *q32, int hd, float scale, int prefetch,
               float *work, float *out) {
    /* a head's scores, then zeros to 64 past the end and on to a multiple of 16 */
    const size_t ss = ((size_t)n_ctx + 64 + 15) / 16 * 16;
    const size_t row = nkv > 1 ? kv_stride * (size_t)nkv : 2 * (size_t)hd;
    float *q = work, *scores = q + (size_t)nkv * NH * hd;
    attn_round_q(nkv * NH, q32, hd, q);
    const int v_l2 = nkv > 1;
    if (prefetch) attn_prefetch(k, v, off, 0, n_ctx < ATTN_PF ? n_ctx : ATTN_PF, row, v_l2);
    __m512 mxv[ATTN_KV_MAX][ATTN_NH];
    for (int g = 0; g < nkv; g++)
        UNROLL8 for (int h = 0; h < NH; h++) mxv[g][h] = _mm512_set1_ps(-INFINITY);
    for (int p0 = 0; p0 < n_ctx; p0 += 16) {
        const int cnt = n_ctx - p0 < 16 ? n_ctx - p0 : 16;
        if (prefetch && p0 + ATTN_PF < n_ctx)
            attn_prefetch(k, v, off, p0 + ATTN_PF,
                          n_ctx - p0 - ATTN_PF < 16 ? n_ctx : p0 + ATTN_PF + 16, row, v_l2);
        for (int g = 0; g < nkv; g++)
            attn_single_scores16(NH, k + (size_t)g * kv_stride, off, p0, cnt,
                                 q + (size_t)g * NH * hd, hd, scale, scores + (size_t)g * NH * ss,
                                 ss, mxv[g]);
    }
    for (int g = 0; g < nkv; g++) {
        float *sg = scores + (size_t)g * NH * ss;
        attn_softmax_weights(NH, sg, ss, n_ctx, mxv[g]);
        attn_single_v(NH, v + (size_t)g * kv_stride, off, n_ctx, sg, ss, hd,
                      out + (size_t)g * NH * hd);
    }
}

/*
 * The tiled shape (a sequence with several rows in the step: llama.cpp's
 * multi-token path) for NH query heads that share one KV head. Per head the
 * operations and their order are those of kern_attn_f16_with: 16-lane dots
 * for the scores, ggml's softmax, weights rounded to f16, and V summed in 16
 * lanes (lane l holds positions l, l + 16, ... in order) reduced as
 * kern_tree16. K and V rows are converted from f16 once for all NH heads:
 * the scores of 16 positions are computed row by row for every head, and V
 * is summed one 16-float slice and 8 lanes at a time (NH x 8 accumulators
 * in registers), over blocks of ATTN_VBLOCK positions that stay in L1 across
 * the slices; the lanes wait in vacc between blocks.
 */
static inline T_VNNI __attribute__((always_inline)) void
attn_tiled_group(const int NH, const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                 const float *q32, int hd, float scale, float *work, float *out) {
    const int nchunk = hd / 16;
    const size_t ss = ((size_t)n_ctx + 64 + 15) / 16 * 16;
    /* work: q[NH][hd] | scores[NH][ss] | vacc[NH][nchunk][16 lanes][16] */
    float *q = work, *scores = q + NH * hd, *vacc = scores + NH * ss;
    const __m512 zero = _mm512_setzero_ps();
    attn_round_q(NH, q32, hd, q);
    __m512 mxv[ATTN_NH];
    UNROLL8 for (int h = 0; h < NH; h++) mxv[h] = _mm512_set1_ps(-INFINITY);
    for (int p0 = 0; p0 < n_ctx; p0 += 16) {
        const int cnt = n_ctx - p0 < 16 ? n_ctx - p0 : 16;
        __m512 a[ATTN_NH][16];
        /* 8 positions at a time: NH x 8 independent fma chains along hd */
        for (int j0 = 0; j0 < 16; j0 += 8) {
            const uint8_t *kp[8];
            /* past the last position: repeat it (computed, not stored) */
            UNROLL8 for (int j = 0; j < 8; j++) kp[j] =
                k + off[p0 + (j0 + j < cnt ? j0 + j : cnt - 1)];
            __m512 acc[ATTN_NH][8];
            UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int j = 0; j < 8; j++) acc[h][j] =
                zero;
            for (int i = 0; i < hd; i += 16) UNROLL8 for (int j = 0; j < 8; j++) {
                    const __m512 kk = ld_f16x16(kp[j] + 2 * i);
                    UNROLL8 for (int h = 0; h < NH; h++) acc[h][j] =
                        _mm512_fmadd_ps(kk, _mm512_loadu_ps(q + h * hd + i), acc[h][j]);
                }
            UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int j = 0; j < 8; j++) a[h][j0 + j] =
                acc[h][j];
        }
        attn_store_scores(NH, a, scale, cnt, scores + p0, ss, mxv);
    }
    attn_softmax_weights(NH, scores, ss, n_ctx, mxv);
    for (int pb = 0; pb < n_ctx; pb += ATTN_VBLOCK) {
        const int pe = n_ctx - pb <= ATTN_VBLOCK ? n_ctx : pb + ATTN_VBLOCK;
        for (int c = 0; c < nchunk; c++)
            for (int l0 = 0; l0 < 16; l0 += 8) {
                const uint8_t *vc = v + 32 * c;
                __m512 acc[ATTN_NH][8];
                UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int l = 0; l < 8; l++) acc[h][l] =
                    pb == 0 ? zero
                            : _mm512_loadu_ps(vacc + (((size_t)h * nchunk + c) * 16 + l0 + l) * 16);
                int p0 = pb;
                for (; p0 + 16 <= pe; p0 += 16) UNROLL8 for (int l = 0; l < 8; l++) {
                        const int p = p0 + l0 + l;
                        const __m512 vv = ld_f16x16(vc + off[p]);
                        UNROLL8 for (int h = 0; h < NH; h++) acc[h][l] =
                            _mm512_fmadd_ps(_mm512_set1_ps(scores[h * ss + p]), vv, acc[h][l]);
                    }
                /* last rows: masked, not branched (the predictor would miss) */
                if (p0 < pe) UNROLL8 for (int l = 0; l < 8; l++) {
                        const int p = p0 + l0 + l < pe ? p0 + l0 + l : pe - 1;
                        const __mmask16 mk = (__mmask16) - (p0 + l0 + l < pe);
                        const __m512 vv = ld_f16x16(vc + off[p]);
                        UNROLL8 for (int h = 0; h < NH; h++) acc[h][l] = _mm512_mask3_fmadd_ps(
                            _mm512_set1_ps(scores[h * ss + p]), vv, acc[h][l], mk);
                    }
                UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int l = 0; l < 8; l++)
                    _mm512_storeu_ps(vacc + (((size_t)h * nchunk + c) * 16 + l0 + l) * 16,
                                     acc[h][l]);
            }
    }
    for (int h = 0; h < NH; h++)
        for (int c = 0; c < nchunk; c++) {
            __m512 x[16];
            UNROLL16 for (int l = 0; l < 16; l++) x[l] =
                _mm512_loadu_ps(vacc + (((size_t)h * nchunk + c) * 16 + l) * 16);
            _mm512_storeu_ps(out + (size_t)h * hd + 16 * c, tree16_vert(x));
        }
}

static T_VNNI void attn_f16_avx512(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                                   const float *q32, int nq, int hd, float scale, int single,
                                   float *work, float *out) {
    if (hd % 64 != 0 && (single || hd % 16 != 0)) {
        /* shapes with double-precision tails: the reference schedule */
        kern_attn_f16_with(kern_vnni(), k, v, off, n_ctx, q32, nq, hd, scale, single, work, out);
        return;
    }
    /* groups of up to ATTN_NH heads; the decode shape prefetches once, for
     * the first group (the others find the rows in cache) */
    for (int h0 = 0; h0 < nq; h0 += ATTN_NH) {
        const int nh = nq - h0 < ATTN_NH ? nq - h0 : ATTN_NH;
        const float *qh = q32 + (size_t)h0 * hd;
        float *oh = out + (size_t)h0 * hd;
#define ATTN_GROUP(NH)                                                                             \
    (single ? attn_single_kv(NH, k, v, 0, 1, off, n_ctx, qh, hd, scale, h0 == 0, work, oh)         \
            : attn_tiled_group(NH, k, v, off, n_ctx, qh, hd, scale, work, oh))
        if (nh == 3) ATTN_GROUP(3);
        else if (nh == 2) ATTN_GROUP(2);
        else ATTN_GROUP(1);
#undef ATTN_GROUP
    }
}

static T_VNNI void attn_f16_row_avx512(const uint8_t *k, const uint8_t *v, size_t kv_stride,
                                       int nkv, const size_t *off, int n_ctx, const float *q32,
                                       int nq, int hd, float scale, int single, float *work,
                                       float *out) {
    if (single && nq == ATTN_NH && hd % 64 == 0 && nkv <= ATTN_KV_MAX) {
        attn_single_kv(ATTN_NH, k, v, kv_stride, nkv, off, n_ctx, q32, hd, scale, 1, work, out);
        return;
    }
    kern_attn_f16_row_with(kern_vnni(), k, v, kv_stride, nkv, off, n_ctx, q32, nq, hd, scale,
                           single, work, out);
}

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
#define GEMM_DRIVER(NAME, TILE, TARGET)                                                            \
    static TARGET void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x, size_t xs, \
                            int nr, float *y, size_t ys) {                                         \
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

#define DEFINE_GEMMS(SUFFIX, TARGET, DOT)                                                          \
    GEMM_TILE(tile_q4_1_##SUFFIX, TARGET, DOT, block_q4_1, Q4_1_PREP, Q4_PAIR(DOT), MIN_TERM)      \
    GEMM_TILE(tile_q4_0_##SUFFIX, TARGET, DOT, block_q4_0, Q4_0_PREP, Q4_PAIR(DOT), MIN_TERM)      \
    GEMM_TILE(tile_q8_0_##SUFFIX, TARGET, DOT, block_q8_0, Q8_0_PREP, Q8_PAIR(DOT), NO_MIN_TERM)   \
    GEMM_DRIVER(gemm_q4_1_##SUFFIX, tile_q4_1_##SUFFIX, TARGET)                                    \
    GEMM_DRIVER(gemm_q4_0_##SUFFIX, tile_q4_0_##SUFFIX, TARGET)                                    \
    GEMM_DRIVER(gemm_q8_0_##SUFFIX, tile_q8_0_##SUFFIX, TARGET)

DEFINE_GEMMS(avx2, T_AVX2, dot_u8s8_avx2)
DEFINE_GEMMS(vnni, T_VNNI, dot_u8s8_vnni)

enum { WK_Q4_0, WK_Q4_1, WK_Q8_0 }; /* weight kinds, for the templates below */

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

/* 16 x 4 dwords -> 4 vectors of 16 lanes: t[k] lane c = dword k of q[c]. */
static inline T_VNNI void cl_transpose16x4(const uint8_t *const *q, __m512i *t) {
    __m512i z[4];
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)q[k]));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)q[k + 4]), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)q[k + 8]), 2);
        z[k] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)q[k + 12]), 3);
    }
    /* z[k] 128-bit lane j = column 4j + k: a 4x4 transpose in each lane
     * leaves lane j of t[d] = dword d of columns 4j .. 4j + 3 */
    __m512i a0 = _mm512_unpacklo_epi32(z[0], z[1]), a1 = _mm512_unpackhi_epi32(z[0], z[1]);
    __m512i a2 = _mm512_unpacklo_epi32(z[2], z[3]), a3 = _mm512_unpackhi_epi32(z[2], z[3]);
    t[0] = _mm512_unpacklo_epi64(a0, a2);
    t[1] = _mm512_unpackhi_epi64(a0, a2);
    t[2] = _mm512_unpacklo_epi64(a1, a3);
    t[3] = _mm512_unpackhi_epi64(a1, a3);
}

/* Transpose nb blocks of columns [0, nc) (nc <= 16; missing columns repeat
 * the last one, their results are not stored). FAST (the fast numerics)
 * keeps Q8_0 codes signed and puts -128 * (each column's sum of codes) as
 * int32 in mw (see cl_rows_fast). */
static inline T_VNNI __attribute__((always_inline)) void cl_prepare(const int KIND, const int FAST,
                                                                    int nb, const uint8_t *w,
                                                                    size_t ws, int nc,
                                                                    cl_block *buf) {
    const size_t wblk = KIND == WK_Q4_0   ? sizeof(block_q4_0)
                        : KIND == WK_Q4_1 ? sizeof(block_q4_1)
                                          : sizeof(block_q8_0);
    const size_t qoff = KIND == WK_Q4_1 ? 4 : 2;
    const __m512i m4 = _mm512_set1_epi8(0x0f), bias = _mm512_set1_epi8((char)0x80);
    int cidx[16];
    for (int c = 0; c < 16; c++) cidx[c] = (c < nc ? c : nc - 1) * (int)ws;
    const __m512i idx = _mm512_loadu_si512((const void *)cidx);
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * wblk;
        /* the next 16 columns (the thread's next chunk) are contiguous:
         * fetch 1/nb of them per block, as gemv16 does */
        for (int l = 0; l < 16 * (int)wblk; l += 64)
            _mm_prefetch((const char *)w + 16 * ws + (size_t)b * 16 * wblk + l, _MM_HINT_T0);
        const uint8_t *q[16];
        UNROLL16 for (int c = 0; c < 16; c++) q[c] = wb + cidx[c] + qoff;
        __m512i t[4];
        cl_transpose16x4(q, t);
        cl_block *o = buf + b;
        if (KIND == WK_Q8_0 && FAST) {
            __m512i sum = _mm512_setzero_si512();
            UNROLL8 for (int k = 0; k < 4; k++) {
                _mm512_store_si512(o->w[k], t[k]);
                sum = _mm512_dpbusd_epi32(sum, bias, t[k]);
            }
            UNROLL16 for (int c = 0; c < 16; c++) q[c] += 16;
            cl_transpose16x4(q, t);
            UNROLL8 for (int k = 0; k < 4; k++) {
                _mm512_store_si512(o->w[4 + k], t[k]);
                sum = _mm512_dpbusd_epi32(sum, bias, t[k]);
            }
            _mm512_store_si512(o->mw, _mm512_sub_epi32(_mm512_setzero_si512(), sum));
        } else if (KIND == WK_Q8_0) {
            UNROLL8 for (int k = 0; k < 4; k++)
                _mm512_store_si512(o->w[k], _mm512_xor_si512(t[k], bias));
            UNROLL16 for (int c = 0; c < 16; c++) q[c] += 16;
            cl_transpose16x4(q, t);
            UNROLL8 for (int k = 0; k < 4; k++)
                _mm512_store_si512(o->w[4 + k], _mm512_xor_si512(t[k], bias));
        } else {
            UNROLL8 for (int k = 0; k < 4; k++) {
                _mm512_store_si512(o->w[k], _mm512_and_si512(t[k], m4));
                _mm512_store_si512(o->w[4 + k], _mm512_and_si512(_mm512_srli_epi32(t[k], 4), m4));
            }
        }
        __m512i dm; /* d | m << 16 */
        if (FAST) { /* 16 scalar loads: cheaper than a gather on Zen */
            int32_t dmv[16];
            UNROLL16 for (int c = 0; c < 16; c++) dmv[c] = ld_i32(wb + cidx[c]);
            dm = _mm512_loadu_si512((const void *)dmv);
        } else dm = _mm512_i32gather_epi32(idx, wb, 1);
        const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
        _mm512_store_ps(o->dw, dw);
        if (KIND == WK_Q8_0 && FAST) continue; /* mw holds the correction */
        _mm512_store_ps(o->mw,
                        KIND == WK_Q4_1
                            ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)))
                        : KIND == WK_Q4_0 ? _mm512_mul_ps(_mm512_set1_ps(-8.0f), dw)
                                          : _mm512_setzero_ps());
    }
}

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

/*
 * One activation row against 16 weight rows (AVX-512 VNNI; decode at batch
 * 1). Per block, the row kernels spend most of their instructions on
 * per-column scalars: converting d (and m) from f16, dw * dx, and the min
 * term. Here those are vectors across the 16 columns: one gather fetches the
 * 16 columns' (d, m) pairs, and scale[c] = dw[c] * dx feeds each column's
 * fma as a broadcast from memory. Per column and block that leaves unpack,
 * dpbusd, convert and fma: the same arithmetic as GEMM_TILE, in which the
 * min term is a separate product and sum, here in a vector of 16 columns.
 */
static inline T_VNNI __attribute__((always_inline)) void
gemv16(const int KIND, int nb, const uint8_t *w, size_t ws, const blk_q8 *x, float *y) {
    const size_t wblk = KIND == WK_Q4_0   ? sizeof(block_q4_0)
                        : KIND == WK_Q4_1 ? sizeof(block_q4_1)
                                          : sizeof(block_q8_0);
    const __m256i m4 = _mm256_set1_epi8(0x0f), hi4 = _mm256_setr_epi64x(0, 0, 4, 4);
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)ws));
    __m256 acc[16];
    __m512 macc = _mm512_setzero_ps();
    float scale[16];
    UNROLL16 for (int c = 0; c < 16; c++) acc[c] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * wblk;
        const blk_q8 *xb = x + b;
        /* The 16 rows after these (the thread's next chunk) are contiguous:
         * fetch 1/nb of them per block, so they arrive before they are read. */
        for (int l = 0; l < 16 * (int)wblk; l += 64)
            _mm_prefetch((const char *)w + 16 * ws + (size_t)b * 16 * wblk + l, _MM_HINT_T0);
        __m512i dm = _mm512_i32gather_epi32(idx, wb, 1); /* d | m << 16 per column */
        __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
        _mm512_storeu_ps(scale, _mm512_mul_ps(dw, _mm512_set1_ps(xb->d)));
        __asm__ volatile("" ::: "memory"); /* read scale[c] back as broadcasts from memory */
        if (KIND == WK_Q4_1)
            macc = _mm512_add_ps(
                macc,
                _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16))),
                              _mm512_set1_ps(xb->s)));
        if (KIND == WK_Q4_0)
            macc = _mm512_add_ps(macc, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-8.0f), dw),
                                                     _mm512_set1_ps(xb->s)));
        const __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
        UNROLL16 for (int c = 0; c < 16; c++) {
            const uint8_t *qs = wb + (size_t)c * ws + (KIND == WK_Q4_1 ? 4 : 2);
            __m256i p;
            if (KIND == WK_Q8_0) {
                __m256i q = _mm256_loadu_si256((const __m256i *)qs);
                p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(q, q),
                                        _mm256_sign_epi8(xq, q));
            } else {
                __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
                p = _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                        _mm256_and_si256(_mm256_srlv_epi64(t, hi4), m4), xq);
            }
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&scale[c]), acc[c]);
        }
    }
    float mt[16];
    _mm512_storeu_ps(mt, macc);
    UNROLL16 for (int c = 0; c < 16; c++) y[c] =
        KIND == WK_Q8_0 ? hsum_avx2(acc[c]) : hsum_avx2(acc[c]) + mt[c];
}

/* The AVX-512 table's kern_gemm_fn: one row: gemv16, which streams the
 * weights once without transposing them; 2+ rows: column-lane tiles
 * (measured per core, weights in cache: 53-85 GMAC/s at 2-4 rows where the
 * 256-bit tiles do 40-48, 160 at 16 rows, 210 at 64). Rows the stack buffer
 * cannot hold use the 256-bit tiles. */
#define AVX512_DRIVER(NAME, KIND, ROWS)                                                            \
    static T_VNNI void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x, size_t xs, \
                            int nr, float *y, size_t ys) {                                         \
        const uint8_t *w = wv;                                                                     \
        if (nr == 1 && nc >= 16) {                                                                 \
            int c = 0;                                                                             \
            for (; c + 16 <= nc; c += 16) gemv16(KIND, nb, w + (size_t)c * ws, ws, x, y + c);      \
            if (c < nc) ROWS(nb, w + (size_t)c * ws, ws, nc - c, x, xs, 1, y + c, ys);             \
            return;                                                                                \
        }                                                                                          \
        if (nr == 1 || nb > CL_MAX_NB) {                                                           \
            ROWS(nb, wv, ws, nc, x, xs, nr, y, ys);                                                \
            return;                                                                                \
        }                                                                                          \
        cl_block buf[CL_MAX_NB];                                                                   \
        int32_t xc[2 * CL_MAX_NB * 8]; /* Q8_0: corrections of the row pair (kern_q8_corr) */      \
        for (int c = 0; c < nc; c += 16) {                                                         \
            const int ncc = nc - c < 16 ? nc - c : 16;                                             \
            cl_prepare(KIND, 0, nb, w + (size_t)c * ws, ws, ncc, buf);                             \
            for (int r = 0; r < nr; r += 2) {                                                      \
                const int pair = nr - r >= 2;                                                      \
                if (KIND == WK_Q8_0)                                                               \
                    for (int i = 0; i <= pair; i++)                                                \
                        kern_q8_corr(x + (size_t)(r + i) * xs, (size_t)nb, xc + i * nb * 8);       \
                if (pair)                                                                          \
                    cl_rows(KIND, 2, nb, buf, x + (size_t)r * xs, xs, xc, (size_t)nb * 8,          \
                            y + (size_t)r * ys + c, ys, ncc, NULL, 0);                             \
                else                                                                               \
                    cl_rows(KIND, 1, nb, buf, x + (size_t)r * xs, xs, xc, (size_t)nb * 8,          \
                            y + (size_t)r * ys + c, ys, ncc, NULL, 0);                             \
            }                                                                                      \
        }                                                                                          \
    }
AVX512_DRIVER(gemm_q4_0_avx512, WK_Q4_0, gemm_q4_0_vnni)
AVX512_DRIVER(gemm_q4_1_avx512, WK_Q4_1, gemm_q4_1_vnni)
AVX512_DRIVER(gemm_q8_0_avx512, WK_Q8_0, gemm_q8_0_vnni)

/*
 * Fast numerics (kernels.h), AVX-512 VNNI. The same column lanes as above,
 * but each output keeps one int32 lane per block: dpbusd of the 8 groups of
 * 4 bytes all go into the same lane (an exact int dot of the block), then
 * one convert, one multiply (dw * dx) and one fma per 16 outputs, and one
 * more fma for the min term. NR activation rows share the 8 weight
 * registers of a block. Q4 weights are the unsigned operand and the
 * activation group a broadcast memory operand; Q8_0 weights stay signed and
 * the activations are made unsigned (x ^ 0x80 = x + 128), the column's
 * -128 * sum(w) from cl_prepare starting the dot.
 */
static inline T_VNNI __attribute__((always_inline)) void cl_rows_fast(const int KIND, const int NR,
                                                                      int nb, const cl_block *buf,
                                                                      const blk_q8 *x, size_t xs,
                                                                      __m512 *acc, __m512 *macc) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int b = 0; b < nb; b++) {
        const cl_block *o = buf + b;
        __m512i wl[8];
        UNROLL8 for (int l = 0; l < 8; l++) wl[l] = _mm512_load_si512(o->w[l]);
        const __m512 dw = _mm512_load_ps(o->dw);
        UNROLL8 for (int r = 0; r < NR; r++) {
            const blk_q8 *xb = x + (size_t)r * xs + b;
            __m512i p0, p1;
            if (KIND == WK_Q8_0) {
                p0 = _mm512_load_si512(o->mw);
                p1 = _mm512_setzero_si512();
                UNROLL8 for (int l = 0; l < 4; l++) {
                    p0 = _mm512_dpbusd_epi32(
                        p0, _mm512_xor_si512(_mm512_set1_epi32(ld_i32(xb->qs + 4 * l)), bias),
                        wl[l]);
                    p1 = _mm512_dpbusd_epi32(
                        p1, _mm512_xor_si512(_mm512_set1_epi32(ld_i32(xb->qs + 16 + 4 * l)), bias),
                        wl[4 + l]);
                }
            } else {
                p0 = _mm512_setzero_si512();
                p1 = _mm512_setzero_si512();
                UNROLL8 for (int l = 0; l < 4; l++) {
                    p0 = _mm512_dpbusd_epi32(p0, wl[l], _mm512_set1_epi32(ld_i32(xb->qs + 4 * l)));
                    p1 = _mm512_dpbusd_epi32(p1, wl[4 + l],
                                             _mm512_set1_epi32(ld_i32(xb->qs + 16 + 4 * l)));
                }
            }
            const __m512 isum = _mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1));
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xb->d)), isum, acc[r]);
            if (KIND != WK_Q8_0)
                macc[r] = _mm512_fmadd_ps(_mm512_load_ps(o->mw), _mm512_set1_ps(xb->s), macc[r]);
        }
    }
}

/* NR rows against one chunk of 16 columns, all its blocks: prepared in
 * segments of CL_MAX_NB blocks (the accumulators carry over, so the order
 * of operations is that of one pass; rows beyond one group re-transpose
 * the chunk, which only models wider than 4096 inputs pay). */
static inline T_VNNI __attribute__((always_inline)) void
cl_fast_group(const int KIND, const int NR, int nb, const uint8_t *w, size_t ws, int nc,
              cl_block *buf, int prepared, const blk_q8 *x, size_t xs, float *y, size_t ys) {
    __m512 acc[8], macc[8];
    UNROLL8 for (int r = 0; r < NR; r++) {
        acc[r] = _mm512_setzero_ps();
        macc[r] = _mm512_setzero_ps();
    }
    const size_t wblk = KIND == WK_Q4_0   ? sizeof(block_q4_0)
                        : KIND == WK_Q4_1 ? sizeof(block_q4_1)
                                          : sizeof(block_q8_0);
    for (int b0 = 0; b0 < nb; b0 += CL_MAX_NB) {
        const int nbs = nb - b0 < CL_MAX_NB ? nb - b0 : CL_MAX_NB;
        if (!prepared) cl_prepare(KIND, 1, nbs, w + (size_t)b0 * wblk, ws, nc, buf);
        cl_rows_fast(KIND, NR, nbs, buf, x + b0, xs, acc, macc);
    }
    const __mmask16 m = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
    UNROLL8 for (int r = 0; r < NR; r++) _mm512_mask_storeu_ps(
        y + (size_t)r * ys, m, KIND == WK_Q8_0 ? acc[r] : _mm512_add_ps(acc[r], macc[r]));
}

#define CL_FAST_NR 8
#define AVX512_FAST_DRIVER(NAME, KIND)                                                             \
    static T_VNNI void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x, size_t xs, \
                            int nr, float *y, size_t ys) {                                         \
        const uint8_t *w = wv;                                                                     \
        cl_block buf[CL_MAX_NB];                                                                   \
        const int once = nb <= CL_MAX_NB; /* the chunk is transposed once for all rows */          \
        for (int c = 0; c < nc; c += 16) {                                                         \
            const int ncc = nc - c < 16 ? nc - c : 16;                                             \
            const uint8_t *wc = w + (size_t)c * ws;                                                \
            if (once) cl_prepare(KIND, 1, nb, wc, ws, ncc, buf);                                   \
            int r = 0;                                                                             \
            for (; r + CL_FAST_NR <= nr; r += CL_FAST_NR)                                          \
                cl_fast_group(KIND, CL_FAST_NR, nb, wc, ws, ncc, buf, once, x + (size_t)r * xs,    \
                              xs, y + (size_t)r * ys + c, ys);                                     \
            const int left = nr - r;                                                               \
            const blk_q8 *xr = x + (size_t)r * xs;                                                 \
            float *yr = y + (size_t)r * ys + c;                                                    \
            if (left >= 4) {                                                                       \
                cl_fast_group(KIND, 4, nb, wc, ws, ncc, buf, once, xr, xs, yr, ys);                \
                xr += 4 * xs;                                                                      \
                yr += 4 * ys;                                                                      \
            }                                                                                      \
            if (left & 2) {                                                                        \
                cl_fast_group(KIND, 2, nb, wc, ws, ncc, buf, once, xr, xs, yr, ys);                \
                xr += 2 * xs;                                                                      \
                yr += 2 * ys;                                                                      \
            }                                                                                      \
            if (left & 1) cl_fast_group(KIND, 1, nb, wc, ws, ncc, buf, once, xr, xs, yr, ys);      \
        }                                                                                          \
    }
AVX512_FAST_DRIVER(gemm_q4_0_fast_avx512, WK_Q4_0)
AVX512_FAST_DRIVER(gemm_q4_1_fast_avx512, WK_Q4_1)
AVX512_FAST_DRIVER(gemm_q8_0_fast_avx512, WK_Q8_0)

/*
 * Fast numerics on packed weights (kernels.h, KERN_PACK_COLS): the layout
 * cl_rows_fast needs is already in memory, so a block costs 4 (Q8_0: 8)
 * loads and, for Q4, 8 and/shift ops, shared by NR rows, where cl_prepare
 * spent ~50 cycles a block transposing. This is also the one-row (decode)
 * kernel: 8 dpbusd and 3-4 float ops per 16 outputs and block.
 */
/* A packed block's scales as 16-column vectors: dw, and mw for the min
 * term (Q4_1: m; Q4_0: -8 dw; Q8_0: unused, 0). */
static inline T_VNNI __attribute__((always_inline)) void
pk_scales(const int KIND, const uint8_t *pb, __m512 *dw, __m512 *mw) {
    *mw = _mm512_setzero_ps();
    if (KIND == WK_Q8_0) *dw = _mm512_load_ps(pb + 512);
    else if (KIND == WK_Q4_1) {
        *dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(pb + 256)));
        *mw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(pb + 288)));
    } else {
        *dw = _mm512_load_ps(pb + 256);
        *mw = _mm512_mul_ps(_mm512_set1_ps(-8.0f), *dw);
    }
}

/* The thread's next group follows this one (nb blocks of blk bytes on):
 * fetch 1/nb of it per block, so it arrives before it is read. */
static inline T_VNNI __attribute__((always_inline)) void pk_prefetch_next(const uint8_t *pb, int nb,
                                                                          size_t blk) {
    for (size_t l = 0; l < blk; l += 64)
        _mm_prefetch((const char *)pb + (size_t)nb * blk + l, _MM_HINT_T0);
}

static inline T_VNNI __attribute__((always_inline)) void pk_rows(const int KIND, const int NR,
                                                                 int nb, const uint8_t *wp,
                                                                 const blk_q8 *x, size_t xs,
                                                                 float *y, size_t ys, int nc) {
    const size_t blk = KIND == WK_Q8_0 ? 640 : 320;
    const __m512i m4 = _mm512_set1_epi8(0x0f), bias = _mm512_set1_epi8((char)0x80);
    __m512 acc[8], macc[8];
    UNROLL8 for (int r = 0; r < NR; r++) {
        acc[r] = _mm512_setzero_ps();
        macc[r] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *pb = wp + (size_t)b * blk;
        pk_prefetch_next(pb, nb, blk);
        __m512i wl[8];
        __m512 dw, mw;
        pk_scales(KIND, pb, &dw, &mw);
        if (KIND == WK_Q8_0) {
            UNROLL8 for (int l = 0; l < 8; l++) wl[l] = _mm512_load_si512(pb + 64 * l);
        } else {
            UNROLL8 for (int k = 0; k < 4; k++) {
                const __m512i t = _mm512_load_si512(pb + 64 * k);
                wl[k] = _mm512_and_si512(t, m4);
                wl[4 + k] = _mm512_and_si512(_mm512_srli_epi16(t, 4), m4);
            }
        }
        UNROLL8 for (int r = 0; r < NR; r++) {
            const blk_q8 *xb = x + (size_t)r * xs + b;
            __m512i p0, p1;
            if (KIND == WK_Q8_0) {
                p0 = _mm512_load_si512(pb + 576);
                p1 = _mm512_setzero_si512();
                UNROLL8 for (int l = 0; l < 4; l++) {
                    p0 = _mm512_dpbusd_epi32(
                        p0, _mm512_xor_si512(_mm512_set1_epi32(ld_i32(xb->qs + 4 * l)), bias),
                        wl[l]);
                    p1 = _mm512_dpbusd_epi32(
                        p1, _mm512_xor_si512(_mm512_set1_epi32(ld_i32(xb->qs + 16 + 4 * l)), bias),
                        wl[4 + l]);
                }
            } else {
                p0 = _mm512_setzero_si512();
                p1 = _mm512_setzero_si512();
                UNROLL8 for (int l = 0; l < 4; l++) {
                    p0 = _mm512_dpbusd_epi32(p0, wl[l], _mm512_set1_epi32(ld_i32(xb->qs + 4 * l)));
                    p1 = _mm512_dpbusd_epi32(p1, wl[4 + l],
                                             _mm512_set1_epi32(ld_i32(xb->qs + 16 + 4 * l)));
                }
            }
            const __m512 isum = _mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1));
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xb->d)), isum, acc[r]);
            if (KIND != WK_Q8_0) macc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xb->s), macc[r]);
        }
    }
    const __mmask16 m = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
    UNROLL8 for (int r = 0; r < NR; r++) _mm512_mask_storeu_ps(
        y + (size_t)r * ys, m, KIND == WK_Q8_0 ? acc[r] : _mm512_add_ps(acc[r], macc[r]));
}

#define AVX512_PACKED_DRIVER(NAME, KIND)                                                           \
    static T_VNNI void NAME(int nb, const void *wv, int nc, const blk_q8 *x, size_t xs,            \
                            const int32_t *xc, int nr, float *y, size_t ys) {                      \
        const uint8_t *wp = wv;                                                                    \
        (void)xc;                                                                                  \
        int r = 0;                                                                                 \
        for (; r + CL_FAST_NR <= nr; r += CL_FAST_NR)                                              \
            pk_rows(KIND, CL_FAST_NR, nb, wp, x + (size_t)r * xs, xs, y + (size_t)r * ys, ys, nc); \
        const int left = nr - r;                                                                   \
        const blk_q8 *xr = x + (size_t)r * xs;                                                     \
        float *yr = y + (size_t)r * ys;                                                            \
        if (left >= 4) {                                                                           \
            pk_rows(KIND, 4, nb, wp, xr, xs, yr, ys, nc);                                          \
            xr += 4 * xs;                                                                          \
            yr += 4 * ys;                                                                          \
        }                                                                                          \
        if (left & 2) {                                                                            \
            pk_rows(KIND, 2, nb, wp, xr, xs, yr, ys, nc);                                          \
            xr += 2 * xs;                                                                          \
            yr += 2 * ys;                                                                          \
        }                                                                                          \
        if (left & 1) pk_rows(KIND, 1, nb, wp, xr, xs, yr, ys, nc);                                \
    }
AVX512_PACKED_DRIVER(gemm_q4_0_packed_avx512, WK_Q4_0)
AVX512_PACKED_DRIVER(gemm_q4_1_packed_avx512, WK_Q4_1)
AVX512_PACKED_DRIVER(gemm_q8_0_packed_avx512, WK_Q8_0)

/*
 * Exact numerics on packed weights: pk_rows' layout (no transposition per
 * chunk) with cl_rows' arithmetic: per output 8 lanes, lane l +=
 * (float)(int dot of group l) * (dw * dx) by fma, the min term a separate
 * product and sum, then the lanes summed as hsum_avx2 does, so the result
 * is ggml's bit for bit. NR (1 or 2) rows share each block's unpacked
 * codes; 16 accumulators, 2 min terms and 2 scales fill most of the 32
 * registers, which is what bounds NR. Q8_0 codes are stored signed (the
 * fast layout) and biased by 128 here to be dpbusd's unsigned operand; the
 * row's -128 * (sum of each group's 4 bytes) starts each group's dot.
 */
static inline T_VNNI __attribute__((always_inline)) void
pk_rows_exact(const int KIND, const int NR, int nb, const uint8_t *wp, const blk_q8 *x, size_t xs,
              const int32_t *xc, float *y, size_t ys, int nc) {
    const size_t blk = KIND == WK_Q8_0 ? 640 : 320;
    __m512 acc[2][8], macc[2];
    UNROLL8 for (int r = 0; r < NR; r++) {
        UNROLL8 for (int l = 0; l < 8; l++) acc[r][l] = _mm512_setzero_ps();
        macc[r] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *pb = wp + (size_t)b * blk;
        pk_prefetch_next(pb, nb, blk);
        __m512 dw, mw;
        pk_scales(KIND, pb, &dw, &mw);
        exact_block(KIND, 1, NR, pb, dw, mw, x, xs, xc, xs * 8, b, acc, macc);
    }
    exact_store(KIND, NR, acc, macc, y, ys, nc);
}

/* A packed group into cl_rows' buffer: codes unpacked to bytes (Q8_0
 * biased), scales as floats; loads and a few integer ops per block. */
static inline T_VNNI __attribute__((always_inline)) void
pk_to_cl(const int KIND, int nb, const uint8_t *wp, cl_block *buf) {
    const size_t blk = KIND == WK_Q8_0 ? 640 : 320;
    for (int b = 0; b < nb; b++) {
        const uint8_t *pb = wp + (size_t)b * blk;
        cl_block *o = buf + b;
        UNROLL8 for (int l = 0; l < 8; l++)
            _mm512_store_si512(o->w[l], exact_codes(KIND, 1, pb, l));
        __m512 dw, mw;
        pk_scales(KIND, pb, &dw, &mw);
        _mm512_store_ps(o->dw, dw);
        _mm512_store_ps(o->mw, mw);
    }
}

/* From PK_CL_ROWS rows on, the group is unpacked once into cl_rows' buffer,
 * whose rows then skip the unpacking and the f16 scales (measured per core,
 * Q4_1, 576 inputs, weights in cache, best of 4 runs, GMAC/s: on the AMD
 * EPYC pk_rows_exact 184 at 2 to 64 rows, through the buffer 160 at 4 rows,
 * 181 at 8, 193 at 16, 206 at 32 and 64; on the Intel Xeon, with the weights
 * out of cache as in a real step, the buffer wins from 4 rows: 75 against
 * 63 at 4 rows, 76 against 55 at 8 and 12). The next group (the thread's
 * next chunk, as a rule) is prefetched into L2 a share per row pair, spread
 * over its blocks: asked for all at once while the group is unpacked, its
 * ~90 lines queue behind the core's few line-fill buffers and stall it
 * (Intel Xeon, 16 rows, 55 MB of weights cycling out of cache: 72 -> 90
 * GMAC/s). */
#define PK_CL_ROWS 4
/* Row r's corrections (Q8_0 only: the others get NULL and read none). */
static inline const int32_t *xc_row(const int KIND, const int32_t *xc, int r, size_t xcs) {
    return KIND == WK_Q8_0 ? xc + (size_t)r * xcs : NULL;
}

#define AVX512_PACKED_EXACT_DRIVER(NAME, KIND)                                                     \
    static T_VNNI void NAME(int nb, const void *wv, int nc, const blk_q8 *x, size_t xs,            \
                            const int32_t *xc, int nr, float *y, size_t ys) {                      \
        const uint8_t *wp = wv;                                                                    \
        const size_t xcs = xs * 8;                                                                 \
        int r = 0;                                                                                 \
        if (nr >= PK_CL_ROWS && nb <= CL_MAX_NB) {                                                 \
            cl_block buf[CL_MAX_NB];                                                               \
            /* each row pair fetches its share of the next group (see PK_CL_ROWS) */               \
            const size_t group = (size_t)nb * (KIND == WK_Q8_0 ? 640 : 320);                       \
            const size_t share = (group / (size_t)((nr + 1) / 2) + 63) / 64 * 64;                  \
            pk_to_cl(KIND, nb, wp, buf);                                                           \
            for (; r + 2 <= nr; r += 2)                                                            \
                cl_rows(KIND, 2, nb, buf, x + (size_t)r * xs, xs, xc_row(KIND, xc, r, xcs), xcs,   \
                        y + (size_t)r * ys, ys, nc, wp + group + (size_t)(r / 2) * share, share);  \
            if (r < nr)                                                                            \
                cl_rows(KIND, 1, nb, buf, x + (size_t)r * xs, xs, xc_row(KIND, xc, r, xcs), xcs,   \
                        y + (size_t)r * ys, ys, nc, wp + group + (size_t)(r / 2) * share, share);  \
            return;                                                                                \
        }                                                                                          \
        for (; r + 2 <= nr; r += 2)                                                                \
            pk_rows_exact(KIND, 2, nb, wp, x + (size_t)r * xs, xs, xc_row(KIND, xc, r, xcs),       \
                          y + (size_t)r * ys, ys, nc);                                             \
        if (r < nr)                                                                                \
            pk_rows_exact(KIND, 1, nb, wp, x + (size_t)r * xs, xs, xc_row(KIND, xc, r, xcs),       \
                          y + (size_t)r * ys, ys, nc);                                             \
    }
AVX512_PACKED_EXACT_DRIVER(gemm_q4_0_packed_exact_avx512, WK_Q4_0)
AVX512_PACKED_EXACT_DRIVER(gemm_q4_1_packed_exact_avx512, WK_Q4_1)
AVX512_PACKED_EXACT_DRIVER(gemm_q8_0_packed_exact_avx512, WK_Q8_0)

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
    static T_AVX2 void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x, size_t xs, \
                            int nr, float *y, size_t ys) {                                         \
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
AVX2_FAST_DRIVER(gemm_q4_0_fast_avx2, WK_Q4_0, kern_gemm_q4_0_fast_scalar)
AVX2_FAST_DRIVER(gemm_q4_1_fast_avx2, WK_Q4_1, kern_gemm_q4_1_fast_scalar)
AVX2_FAST_DRIVER(gemm_q8_0_fast_avx2, WK_Q8_0, kern_gemm_q8_0_fast_scalar)

static const kern_table AVX2;
static void attn_f16_avx2(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                          const float *q, int nq, int hd, float scale, int single, float *work,
                          float *out) {
    kern_attn_f16_with(&AVX2, k, v, off, n_ctx, q, nq, hd, scale, single, work, out);
}

static void attn_f16_row_avx2(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                              const size_t *off, int n_ctx, const float *q, int nq, int hd,
                              float scale, int single, float *work, float *out) {
    kern_attn_f16_row_with(&AVX2, k, v, kv_stride, nkv, off, n_ctx, q, nq, hd, scale, single, work,
                           out);
}
static const kern_table AVX2 = {
    .isa = "avx2",
    .quantize = quantize_avx2,
    .gemm_q4_0 = gemm_q4_0_avx2,
    .gemm_q4_1 = gemm_q4_1_avx2,
    .gemm_q8_0 = gemm_q8_0_avx2,
    .gemm_q4_0_fast = gemm_q4_0_fast_avx2,
    .gemm_q4_1_fast = gemm_q4_1_fast_avx2,
    .gemm_q8_0_fast = gemm_q8_0_fast_avx2,
    .dot_f16 = dot_f16_avx2,
    .dot_f16_x4 = dot_f16_x4_avx2,
    .axpy_f16 = axpy_f16_avx2,
    .silu_mul = silu_mul_avx2,
    .softmax_exp = softmax_exp_avx2,
    .rope_rows = rope_avx2,
    .attn_f16 = attn_f16_avx2,
    .attn_f16_row = attn_f16_row_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .rmsnorm = kern_rmsnorm_scalar,
};
static const kern_table VNNI = {
    .isa = "avx512vnni",
    .quantize = quantize_avx2,
    .gemm_q4_0 = gemm_q4_0_avx512,
    .gemm_q4_1 = gemm_q4_1_avx512,
    .gemm_q8_0 = gemm_q8_0_avx512,
    .gemm_q4_0_fast = gemm_q4_0_fast_avx512,
    .gemm_q4_1_fast = gemm_q4_1_fast_avx512,
    .gemm_q8_0_fast = gemm_q8_0_fast_avx512,
    .gemm_q4_0_packed = gemm_q4_0_packed_avx512,
    .gemm_q4_1_packed = gemm_q4_1_packed_avx512,
    .gemm_q8_0_packed = gemm_q8_0_packed_avx512,
    .gemm_q4_0_packed_exact = gemm_q4_0_packed_exact_avx512,
    .gemm_q4_1_packed_exact = gemm_q4_1_packed_exact_avx512,
    .gemm_q8_0_packed_exact = gemm_q8_0_packed_exact_avx512,
    .dot_f16 = dot_f16_avx2,
    .dot_f16_x4 = dot_f16_x4_avx2,
    .axpy_f16 = axpy_f16_avx2,
    .silu_mul = silu_mul_avx512,
    .softmax_exp = softmax_exp_avx512,
    .rope_rows = rope_avx2,
    .attn_f16 = attn_f16_avx512,
    .attn_f16_row = attn_f16_row_avx512,
    .f32_to_f16 = f32_to_f16_avx2,
    .rmsnorm = rmsnorm_avx512,
};

const kern_table *kern_avx2(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return &AVX2;
    return NULL;
}

const kern_table *kern_vnni(void) {
    __builtin_cpu_init();
    if (kern_avx2() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return &VNNI;
    return NULL;
}

#else
const kern_table *kern_avx2(void) { return NULL; }
const kern_table *kern_vnni(void) { return NULL; }
#endif
