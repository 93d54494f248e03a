/*
 * gemm_avx512.c - AVX-512 VNNI quantized GEMM on row-major weights (both
 * numerics): one row through gemv16, 2+ rows through column lanes
 * (gemm_cl_avx512.h), each chunk of 16 weight columns transposed once so
 * one dpbusd serves 16 columns of a row; the 256-bit tiles take what the
 * stack buffer cannot hold.
 */
#include "core/backend/cpu/gemm_cl_avx512.h"
#include "core/backend/cpu/gemm_tiles_x86.h"

#if KERN_X86

static inline T_VNNI __m256i dot_u8s8_vnni(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

DEFINE_GEMMS(static, vnni, T_VNNI, dot_u8s8_vnni)

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
 * weights once without transposing them; 2+ rows: column-lane tiles, faster
 * than the 256-bit tiles from 2 rows on (docs/benchmarks.md, "Figures moved
 * from code comments"). Rows the stack buffer cannot hold use the 256-bit
 * tiles. */
#define AVX512_DRIVER(NAME, KIND, ROWS)                                                            \
    T_VNNI void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x, size_t xs,        \
                     int nr, float *y, size_t ys) {                                                \
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
AVX512_DRIVER(kern_gemm_q4_0_avx512, WK_Q4_0, kern_gemm_q4_0_vnni)
AVX512_DRIVER(kern_gemm_q4_1_avx512, WK_Q4_1, kern_gemm_q4_1_vnni)
AVX512_DRIVER(kern_gemm_q8_0_avx512, WK_Q8_0, kern_gemm_q8_0_vnni)

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

#define AVX512_FAST_DRIVER(NAME, KIND)                                                             \
    T_VNNI void NAME(int nb, const void *wv, size_t ws, int nc, const blk_q8 *x, size_t xs,        \
                     int nr, float *y, size_t ys) {                                                \
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
AVX512_FAST_DRIVER(kern_gemm_q4_0_fast_avx512, WK_Q4_0)
AVX512_FAST_DRIVER(kern_gemm_q4_1_fast_avx512, WK_Q4_1)
AVX512_FAST_DRIVER(kern_gemm_q8_0_fast_avx512, WK_Q8_0)

#endif
