/*
 * gemm_kquant_avx2.c - AVX2 GEMMs of the weight formats beyond Q4_0, Q4_1
 * and Q8_0: Q5_0, Q5_1 and IQ4_NL (32-blocks, through the tile template of
 * gemm_tiles_x86.h), Q2_K .. Q6_K and IQ4_XS against Q8_K activations, and
 * F32, F16 and BF16 weights against float activations. Each output gets
 * the operations of its scalar reference (gemm_kquant_scalar.c,
 * kernels_scalar.c) in the same order, as the numerics contract in
 * kernels.h spells out; what a tile shares between outputs is only the
 * loading and unpacking of weight codes and scales, done once for up to 4
 * activation rows (prefill), while one row (decode) streams the weights
 * once. The VNNI table uses these kernels too.
 */
#include "core/backend/cpu/gemm_tiles_x86.h"

#if KERN_X86

#define AI __attribute__((always_inline))

static inline T_AVX2 __m256i kq_dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* ---- 32-element blocks against blk_q8 ---- */

/* 32 bytes, 0xff where bit i of the 4 bytes at p is set (ggml's
 * bytes_from_bits_32). */
static inline T_AVX2 __m256i bits_to_bytes(const uint8_t *p) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(ld_i32(p)), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

static const int8_t IQ4NL_TABLE[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                       1,    13,   25,  38,  53,  69,  89,  113};

/* Q5_0: q - 16 as signed bytes (the missing fifth bit makes the byte
 * nibble - 16); Q5_1: the unsigned 5-bit codes. */
#define Q5_0_PREP                                                                                  \
    wq[c] = _mm256_or_si256(unpack_q4(wb->qs),                                                     \
                            _mm256_andnot_si256(bits_to_bytes(wb->qh), _mm256_set1_epi8(-16)));    \
    dw[c] = _cvtsh_ss(wb->d);                                                                      \
    (void)mw;
#define Q5_1_PREP                                                                                  \
    wq[c] = _mm256_or_si256(unpack_q4(wb->qs),                                                     \
                            _mm256_and_si256(bits_to_bytes(wb->qh), _mm256_set1_epi8(16)));        \
    dw[c] = _cvtsh_ss(wb->d);                                                                      \
    mw[c] = _cvtsh_ss(wb->m);
#define IQ4_NL_PREP                                                                                \
    wq[c] = _mm256_shuffle_epi8(                                                                   \
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)IQ4NL_TABLE)),                \
        unpack_q4(wb->qs));                                                                        \
    dw[c] = _cvtsh_ss(wb->d);                                                                      \
    (void)mw;

GEMM_TILE(tile_q5_0_kq, T_AVX2, kq_dot_u8s8, block_q5_0, Q5_0_PREP, Q8_PAIR(kq_dot_u8s8),
          NO_MIN_TERM)
GEMM_TILE(tile_q5_1_kq, T_AVX2, kq_dot_u8s8, block_q5_1, Q5_1_PREP, Q4_PAIR(kq_dot_u8s8), MIN_TERM)
GEMM_TILE(tile_iq4_nl_kq, T_AVX2, kq_dot_u8s8, block_iq4_nl, IQ4_NL_PREP, Q8_PAIR(kq_dot_u8s8),
          NO_MIN_TERM)
GEMM_DRIVER(, kern_gemm_q5_0_avx2, tile_q5_0_kq, T_AVX2)
GEMM_DRIVER(, kern_gemm_q5_1_avx2, tile_q5_1_kq, T_AVX2)
GEMM_DRIVER(, kern_gemm_iq4_nl_avx2, tile_iq4_nl_kq, T_AVX2)

/* ---- K-quants against Q8_K ---- */

/* quant_quantize_row_q8_K with vectors: the same value of largest
 * magnitude (the first one, as the reference's strict > keeps), the same
 * products and rounding (nearest even), so the same bits. */
T_AVX2 void kern_quantize_q8k_avx2(const float *x, block_q8_K *y, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < QK_K; i += 8)
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
        __m128 m1 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m1 = _mm_max_ps(m1, _mm_movehl_ps(m1, m1));
        m1 = _mm_max_ss(m1, _mm_movehdup_ps(m1));
        const float amax = _mm_cvtss_f32(m1);
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) continue;
        const __m256 va = _mm256_set1_ps(amax);
        int first = 0;
        for (int i = 0; i < QK_K; i += 8) {
            int hit = _mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)), va, _CMP_EQ_OQ));
            if (hit) {
                first = i + __builtin_ctz((unsigned)hit);
                break;
            }
        }
        const float iscale = -127.0f / x[first];
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        for (int i = 0; i < QK_K; i += 32) {
            __m256i v[4];
            for (int k = 0; k < 4; k++)
                v[k] =
                    _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_round_ps(
                                         _mm256_mul_ps(vs, _mm256_loadu_ps(x + i + 8 * k)), rnd)),
                                     cap);
            /* bsums: elements i .. i + 15 are v[0], v[1]; i + 16 .. are v[2], v[3] */
            for (int h = 0; h < 2; h++) {
                __m256i s8 = _mm256_add_epi32(v[2 * h], v[2 * h + 1]);
                __m128i s4 =
                    _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
                y[b].bsums[i / 16 + h] = (int16_t)_mm_cvtsi128_si32(s4);
            }
            __m256i p =
                _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y[b].qs + i), p);
        }
        y[b].d = 1.0f / iscale;
    }
}

/* The 8 (scale, min) pairs of Q4_K/Q5_K's 12 bytes as 16 int16 lanes:
 * the scales in lanes 0..7, the mins in 8..15 (ggml's utmp shuffle). */
static inline T_AVX2 __m256i k45_scales(const uint8_t *q) {
    uint32_t u[4];
    memcpy(u, q, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
    const uint32_t mins_lo = u[1] & 0x3f3f3f3f;
    u[1] = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
    u[2] = mins_lo;
    u[0] &= 0x3f3f3f3f;
    return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)u));
}

static inline T_AVX2 float hsum4_avx2(__m128 v) {
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

/* One Q4_K (FIVE = 0) or Q5_K (FIVE = 1) weight row against NR rows. */
static inline T_AVX2 AI void k45_tile(const int FIVE, const int NR, int nb, const uint8_t *w,
                                      const block_q8_K *x, size_t xs, float *y, size_t ys) {
    const size_t bsz = FIVE ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 acc[4];
    __m128 accm[4]; /* Q4_K's min term */
    float summs[4]; /* Q5_K's */
    UNROLL for (int r = 0; r < NR; r++) {
        acc[r] = _mm256_setzero_ps();
        accm[r] = _mm_setzero_ps();
        summs[r] = 0;
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * bsz; /* d, dmin, scales[12], (qh[32]), qs[128] */
        _mm_prefetch((const char *)wb + 2 * bsz, _MM_HINT_T0);
        const float dw = _cvtsh_ss((unsigned short)ld_i16(wb)),
                    dm = _cvtsh_ss((unsigned short)ld_i16(wb + 2));
        const __m256i sm = k45_scales(wb + 4);
        const __m128i mins = _mm256_extracti128_si256(sm, 1);
        const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
        const uint8_t *qs = wb + 16 + (FIVE ? 32 : 0);
        const __m256i hb = FIVE ? _mm256_loadu_si256((const __m256i *)(wb + 16)) : m4;
        __m256i sumi[4];
        UNROLL for (int r = 0; r < NR; r++) {
            const block_q8_K *xb = x + (size_t)r * xs + b;
            const __m128i q8s = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb->bsums),
                                               _mm_loadu_si128((const __m128i *)xb->bsums + 1));
            const __m128i prod = _mm_madd_epi16(mins, q8s);
            if (FIVE) {
                __m128i t = _mm_add_epi32(prod, _mm_shuffle_epi32(prod, 0x4e));
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
                summs[r] = fmaf(-(xb->d * dm), (float)_mm_cvtsi128_si32(t), summs[r]);
            } else {
                accm[r] = _mm_fmadd_ps(_mm_set1_ps(-(xb->d * dm)), _mm_cvtepi32_ps(prod), accm[r]);
            }
            sumi[r] = _mm256_setzero_si256();
        }
        UNROLL for (int j = 0; j < 4; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i lo = _mm256_and_si256(bits, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (FIVE) {
                lo = _mm256_or_si256(
                    lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
                hi = _mm256_or_si256(
                    hi,
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
            }
            /* int16 lanes 2j and 2j + 1 of scales, broadcast */
            const __m256i sl =
                _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(0x0100 + 0x0404 * j)));
            const __m256i sh =
                _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(0x0302 + 0x0404 * j)));
            UNROLL for (int r = 0; r < NR; r++) {
                const int8_t *q8 = x[(size_t)r * xs + b].qs + 64 * j;
                __m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
                __m256i ph =
                    _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(_mm256_madd_epi16(sl, pl),
                                                                     _mm256_madd_epi16(sh, ph)));
            }
        }
        UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm256_fmadd_ps(
            _mm256_set1_ps(x[(size_t)r * xs + b].d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
    }
    UNROLL for (int r = 0; r < NR; r++) y[(size_t)r * ys] =
        hsum_avx2(acc[r]) + (FIVE ? summs[r] : hsum4_avx2(accm[r]));
}

/* The 4 runs of 32 codes of one half (128 codes) of a Q6_K block, as
 * unsigned 6-bit values. */
static inline T_AVX2 AI void q6k_half(const block_q6_K *wb, int h, __m256i *q) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(wb->qh + 32 * h));
    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(wb->ql + 64 * h));
    const __m256i l2 = _mm256_loadu_si256((const __m256i *)(wb->ql + 64 * h + 32));
    q[0] =
        _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(l2, m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l2, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
}

static inline T_AVX2 AI void q6k_tile(const int NR, int nb, const uint8_t *w, const block_q8_K *x,
                                      size_t xs, float *y, size_t ys) {
    __m256 acc[4];
    UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const block_q6_K *wb = (const block_q6_K *)w + b;
        _mm_prefetch((const char *)(wb + 2), _MM_HINT_T0);
        const float dw = _cvtsh_ss(wb->d);
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)wb->scales);
        __m256i sumi[4];
        /* the codes' offset of 32: 32 * scale * (activation sum) per 16, in
         * lanes of 2 groups of 16 */
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        UNROLL for (int r = 0; r < NR; r++) sumi[r] = _mm256_sub_epi32(
            _mm256_setzero_si256(),
            _mm256_slli_epi32(
                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x[(size_t)r * xs + b].bsums),
                                  sc16),
                5));
        UNROLL for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6k_half(wb, h, q);
            UNROLL for (int k = 0; k < 4; k++) {
                const int si = 8 * h + 2 * k;
                /* int16 lanes 0..7 scale si, 8..15 scale si + 1 */
                const __m256i sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
                    sc8, _mm_set_epi64x((long long)(0x0101010101010101ull * (uint64_t)(si + 1)),
                                        (long long)(0x0101010101010101ull * (uint64_t)si))));
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i q8 = _mm256_loadu_si256(
                        (const __m256i *)(x[(size_t)r * xs + b].qs + 128 * h + 32 * k));
                    sumi[r] = _mm256_add_epi32(
                        sumi[r], _mm256_madd_epi16(sv, _mm256_maddubs_epi16(q[k], q8)));
                }
            }
        }
        UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm256_fmadd_ps(
            _mm256_set1_ps(x[(size_t)r * xs + b].d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
    }
    UNROLL for (int r = 0; r < NR; r++) y[(size_t)r * ys] = hsum_avx2(acc[r]);
}

/* Q2_K, Q3_K and IQ4_XS: per block the 16 scales as int8 (one a 16 codes;
 * IQ4_XS repeats each of its 8), then 8 runs of 32 codes. */
enum { KS_Q2_K, KS_Q3_K, KS_IQ4_XS };

static inline T_AVX2 __m128i q3k_scales(const uint8_t *s) {
    uint32_t a[3], u[4];
    memcpy(a, s, 12);
    u[0] = (a[0] & 0x0f0f0f0f) | ((a[2] & 0x03030303) << 4);
    u[1] = (a[1] & 0x0f0f0f0f) | (((a[2] >> 2) & 0x03030303) << 4);
    u[2] = ((a[0] >> 4) & 0x0f0f0f0f) | (((a[2] >> 4) & 0x03030303) << 4);
    u[3] = ((a[1] >> 4) & 0x0f0f0f0f) | (((a[2] >> 6) & 0x03030303) << 4);
    return _mm_sub_epi8(_mm_loadu_si128((const __m128i *)u), _mm_set1_epi8(32));
}

static inline T_AVX2 __m128i iq4xs_scales(const block_iq4_xs *b) {
    int8_t s[16];
    for (int t = 0; t < 8; t++)
        s[2 * t] = s[2 * t + 1] = (int8_t)((((b->scales_l[t / 2] >> (4 * (t % 2))) & 0xf) |
                                            (((b->scales_h >> (2 * t)) & 3) << 4)) -
                                           32);
    return _mm_loadu_si128((const __m128i *)s);
}

static inline T_AVX2 AI void ks_tile(const int KIND, const int NR, int nb, const uint8_t *w,
                                     const block_q8_K *x, size_t xs, float *y, size_t ys) {
    const size_t bsz = KIND == KS_Q2_K   ? sizeof(block_q2_K)
                       : KIND == KS_Q3_K ? sizeof(block_q3_K)
                                         : sizeof(block_iq4_xs);
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)IQ4NL_TABLE));
    __m256 acc[4];
    UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * bsz;
        _mm_prefetch((const char *)wb + 2 * bsz, _MM_HINT_T0);
        const block_q2_K *b2 = (const block_q2_K *)wb;
        const block_q3_K *b3 = (const block_q3_K *)wb;
        const block_iq4_xs *b4 = (const block_iq4_xs *)wb;
        __m128i sc8;
        float dw;
        const uint8_t *qs = KIND == KS_Q2_K ? b2->qs : KIND == KS_Q3_K ? b3->qs : b4->qs;
        __m256i hb = one;
        if (KIND == KS_Q2_K) {
            const __m128i ms = _mm_loadu_si128((const __m128i *)b2->scales);
            sc8 = _mm_and_si128(ms, _mm_set1_epi8(0x0f));
            const __m256i mins =
                _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), _mm_set1_epi8(0x0f)));
            const float dm = _cvtsh_ss(b2->dmin);
            UNROLL for (int r = 0; r < NR; r++) {
                const block_q8_K *xb = x + (size_t)r * xs + b;
                const __m256i prod =
                    _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)xb->bsums));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(-(xb->d * dm)), _mm256_cvtepi32_ps(prod),
                                         acc[r]);
            }
            dw = _cvtsh_ss(b2->d);
        } else if (KIND == KS_Q3_K) {
            sc8 = q3k_scales(b3->scales);
            hb = _mm256_loadu_si256((const __m256i *)b3->hmask);
            dw = _cvtsh_ss(b3->d);
        } else {
            sc8 = iq4xs_scales(b4);
            dw = _cvtsh_ss(b4->d);
        }
        __m256i sumi[4];
        UNROLL for (int r = 0; r < NR; r++) sumi[r] = _mm256_setzero_si256();
        UNROLL8 for (int t = 0; t < 8; t++) {
            __m256i u, h4 = one;
            if (KIND == KS_IQ4_XS) {
                u = _mm256_shuffle_epi8(tbl, unpack_q4(qs + 16 * t));
            } else {
                u = _mm256_and_si256(
                    _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(qs + 32 * (t / 4))),
                                      2 * (t % 4)),
                    m3);
                if (KIND == KS_Q3_K) /* 4 where the hmask bit is clear */
                    h4 = _mm256_slli_epi16(_mm256_andnot_si256(_mm256_srli_epi16(hb, t), one), 2);
            }
            const __m256i sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
                sc8, _mm_set_epi64x((long long)(0x0101010101010101ull * (uint64_t)(2 * t + 1)),
                                    (long long)(0x0101010101010101ull * (uint64_t)(2 * t)))));
            UNROLL for (int r = 0; r < NR; r++) {
                const __m256i q8 =
                    _mm256_loadu_si256((const __m256i *)(x[(size_t)r * xs + b].qs + 32 * t));
                __m256i p;
                if (KIND == KS_IQ4_XS)
                    p = _mm256_maddubs_epi16(_mm256_sign_epi8(u, u), _mm256_sign_epi8(q8, u));
                else if (KIND == KS_Q3_K)
                    p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, q8), _mm256_maddubs_epi16(h4, q8));
                else p = _mm256_maddubs_epi16(u, q8);
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sv, p));
            }
        }
        UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm256_fmadd_ps(
            _mm256_set1_ps(x[(size_t)r * xs + b].d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
    }
    UNROLL for (int r = 0; r < NR; r++) y[(size_t)r * ys] = hsum_avx2(acc[r]);
}

#define KQ_TILE_Q2_K(NR, nb, w, x, xs, y, ys) ks_tile(KS_Q2_K, NR, nb, w, x, xs, y, ys)
#define KQ_TILE_Q3_K(NR, nb, w, x, xs, y, ys) ks_tile(KS_Q3_K, NR, nb, w, x, xs, y, ys)
#define KQ_TILE_IQ4_XS(NR, nb, w, x, xs, y, ys) ks_tile(KS_IQ4_XS, NR, nb, w, x, xs, y, ys)
#define KQ_TILE_Q4_K(NR, nb, w, x, xs, y, ys) k45_tile(0, NR, nb, w, x, xs, y, ys)
#define KQ_TILE_Q5_K(NR, nb, w, x, xs, y, ys) k45_tile(1, NR, nb, w, x, xs, y, ys)
#define KQ_TILE_Q6_K(NR, nb, w, x, xs, y, ys) q6k_tile(NR, nb, w, x, xs, y, ys)

/* Rows in tiles of 4 (edges 3, 2, 1), each weight row once per tile. */
#define KQ_DRIVER(NAME, TILE)                                                                      \
    T_AVX2 void NAME(int nb, const void *wv, size_t ws, int nc, const block_q8_K *x, size_t xs,    \
                     int nr, float *y, size_t ys) {                                                \
        const uint8_t *w = wv;                                                                     \
        int r = 0;                                                                                 \
        for (; r + 4 <= nr; r += 4)                                                                \
            for (int c = 0; c < nc; c++)                                                           \
                TILE(4, nb, w + (size_t)c * ws, x + (size_t)r * xs, xs, y + (size_t)r * ys + c,    \
                     ys);                                                                          \
        const int left = nr - r;                                                                   \
        for (int c = 0; c < nc && left; c++) {                                                     \
            const uint8_t *wc = w + (size_t)c * ws;                                                \
            const block_q8_K *xr = x + (size_t)r * xs;                                             \
            float *yr = y + (size_t)r * ys + c;                                                    \
            if (left == 3) TILE(3, nb, wc, xr, xs, yr, ys);                                        \
            else if (left == 2) TILE(2, nb, wc, xr, xs, yr, ys);                                   \
            else TILE(1, nb, wc, xr, xs, yr, ys);                                                  \
        }                                                                                          \
    }
KQ_DRIVER(kern_gemm_q4_k_avx2, KQ_TILE_Q4_K)
KQ_DRIVER(kern_gemm_q5_k_avx2, KQ_TILE_Q5_K)
KQ_DRIVER(kern_gemm_q6_k_avx2, KQ_TILE_Q6_K)
KQ_DRIVER(kern_gemm_q2_k_avx2, KQ_TILE_Q2_K)
KQ_DRIVER(kern_gemm_q3_k_avx2, KQ_TILE_Q3_K)
KQ_DRIVER(kern_gemm_iq4_xs_avx2, KQ_TILE_IQ4_XS)

/* ---- float weights ---- */

/* 8 weights of row w from element i, as floats. */
static inline T_AVX2 AI __m256 fw_load(uint32_t type, const uint8_t *w, int i) {
    if (type == QT_F32) return _mm256_loadu_ps((const float *)w + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (type == QT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* 32 lanes (4 vectors) per output, NR <= 3 rows sharing each weight load. */
static inline T_AVX2 AI void fw_tile(uint32_t type, const int NR, int n, const uint8_t *w,
                                     const float *x, size_t xs, float *y, size_t ys) {
    __m256 a[3][4];
    UNROLL for (int r = 0; r < NR; r++) UNROLL for (int k = 0; k < 4; k++) a[r][k] =
        _mm256_setzero_ps();
    for (int i = 0; i < n; i += 32) {
        __m256 wv[4];
        UNROLL for (int k = 0; k < 4; k++) wv[k] = fw_load(type, w, i + 8 * k);
        UNROLL for (int r = 0; r < NR; r++) UNROLL for (int k = 0; k < 4; k++) a[r][k] =
            _mm256_fmadd_ps(wv[k], _mm256_loadu_ps(x + (size_t)r * xs + i + 8 * k), a[r][k]);
    }
    UNROLL for (int r = 0; r < NR; r++) y[(size_t)r * ys] =
        hsum_avx2(_mm256_add_ps(_mm256_add_ps(a[r][0], a[r][2]), _mm256_add_ps(a[r][1], a[r][3])));
}

#define FW_DRIVER(NAME, TYPE)                                                                      \
    T_AVX2 void NAME(int n, const void *wv, size_t ws, int nc, const float *x, size_t xs, int nr,  \
                     float *y, size_t ys) {                                                        \
        const uint8_t *w = wv;                                                                     \
        int r = 0;                                                                                 \
        for (; r + 3 <= nr; r += 3)                                                                \
            for (int c = 0; c < nc; c++)                                                           \
                fw_tile(TYPE, 3, n, w + (size_t)c * ws, x + (size_t)r * xs, xs,                    \
                        y + (size_t)r * ys + c, ys);                                               \
        for (int c = 0; c < nc && r < nr; c++) {                                                   \
            if (nr - r == 2)                                                                       \
                fw_tile(TYPE, 2, n, w + (size_t)c * ws, x + (size_t)r * xs, xs,                    \
                        y + (size_t)r * ys + c, ys);                                               \
            else                                                                                   \
                fw_tile(TYPE, 1, n, w + (size_t)c * ws, x + (size_t)r * xs, xs,                    \
                        y + (size_t)r * ys + c, ys);                                               \
        }                                                                                          \
    }
FW_DRIVER(kern_gemm_f32_avx2, QT_F32)
FW_DRIVER(kern_gemm_f16_avx2, QT_F16)
FW_DRIVER(kern_gemm_bf16_avx2, QT_BF16)

#endif
