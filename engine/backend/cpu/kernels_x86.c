/*
 * kernels_x86.c - AVX2 and AVX-512 VNNI variants of the kernels in
 * kernels.h. One source, two instantiations: the only difference is the
 * u8 x s8 -> i32 dot of 32 bytes (VNNI vpdpbusd vs AVX2 maddubs + madd).
 * Functions carry target attributes so the file builds without -march and
 * the right table is picked at run time.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))

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

static inline T_AVX2 float f16_avx2(uint16_t h) { return _cvtsh_ss(h); }

/* ---- activation quantization ---- */
static T_AVX2 void quantize_avx2(const float *x, blk_q8 *y, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / 32; b++, x += 32) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
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
            acc[j] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8 * j))),
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
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
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
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))),
                                                  _mm256_loadu_ps(acc + i)));
    for (; i < n; i++) acc[i] = __builtin_fmaf(a, _cvtsh_ss(v[i]), acc[i]);
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
        UNROLL for (int c = 0; c < NC; c++)                                                        \
            UNROLL for (int r = 0; r < NR; r++) {                                                         \
                acc[c][r] = _mm256_setzero_ps();                                                   \
                macc[c][r] = 0;                                                                    \
            }                                                                                      \
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
                    acc[c][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[c] * xb->d), \
                                                acc[c][r]);                                        \
                    MTERM                                                                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        UNROLL for (int c = 0; c < NC; c++)                                                        \
            UNROLL for (int r = 0; r < NR; r++) y[(size_t)r * ys + c] = hsum_avx2(acc[c][r]) + macc[c][r]; \
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
    static TARGET void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x,             \
                            size_t xs, int nr, float *y, size_t ys) {                              \
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

static const kern_table AVX2 = {"avx2", quantize_avx2, gemm_q4_0_avx2, gemm_q4_1_avx2, gemm_q8_0_avx2,
                                dot_f16_avx2, dot_f16_x4_avx2, axpy_f16_avx2, silu_mul_avx2, softmax_exp_avx2, rope_avx2};
static const kern_table VNNI = {"avx512vnni", quantize_avx2, gemm_q4_0_vnni, gemm_q4_1_vnni,
                                gemm_q8_0_vnni, dot_f16_avx2, dot_f16_x4_avx2, axpy_f16_avx2, silu_mul_avx2, softmax_exp_avx2, rope_avx2};

const kern_table *kern_avx2(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return &AVX2;
    return NULL;
}

const kern_table *kern_vnni(void) {
    __builtin_cpu_init();
    if (kern_avx2() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl"))
        return &VNNI;
    return NULL;
}

#else
const kern_table *kern_avx2(void) { return NULL; }
const kern_table *kern_vnni(void) { return NULL; }
#endif
