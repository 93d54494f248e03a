/*
 * attn_avx512.c - AVX-512 softmax and attention: the decode and tiled
 * shapes keep each head's arithmetic (and so its bits) but let several
 * query heads of a KV head share every K and V row loaded.
 */
#include "core/backend/cpu/x86_simd.h"

#if KERN_X86

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

/* kern_softmax_exp's contract: runs of 16 values reduced by the tree, the
 * runs added in double; the tail as the scalar reference does it. */
T_VNNI double kern_softmax_exp_avx512(float *x, int n, float max) {
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
        const __m512 inv = _mm512_set1_ps((float)(1.0 / kern_softmax_exp_avx512(sh, n_ctx, mx)));
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

/* kern_attn_f16_with's parts on this ISA (the reference schedule for the
 * shapes the kernels below do not take): the AVX-512 table's entries */
static const kern_attn_parts VNNI_PARTS = {kern_dot_f16_avx2, kern_dot_f16_x4_avx2,
                                           kern_axpy_f16_avx2, kern_softmax_exp_avx512};

T_VNNI void kern_attn_f16_avx512(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                                 const float *q32, int nq, int hd, float scale, int single,
                                 float *work, float *out) {
    if (hd % 64 != 0 && (single || hd % 16 != 0)) {
        /* shapes with double-precision tails: the reference schedule */
        kern_attn_f16_with(&VNNI_PARTS, k, v, off, n_ctx, q32, nq, hd, scale, single, work, out);
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

T_VNNI void kern_attn_f16_row_avx512(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                                     const size_t *off, int n_ctx, const float *q32, int nq, int hd,
                                     float scale, int single, float *work, float *out) {
    if (single && nq == ATTN_NH && hd % 64 == 0 && nkv <= ATTN_KV_MAX) {
        attn_single_kv(ATTN_NH, k, v, kv_stride, nkv, off, n_ctx, q32, hd, scale, 1, work, out);
        return;
    }
    kern_attn_f16_row_with(kern_attn_f16_avx512, k, v, kv_stride, nkv, off, n_ctx, q32, nq, hd,
                           scale, single, work, out);
}

#endif
