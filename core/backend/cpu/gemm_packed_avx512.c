/*
 * gemm_packed_avx512.c - AVX-512 VNNI quantized GEMM on packed weights
 * (kernels.h, KERN_PACK_COLS; laid out by weight_pack.c), both numerics.
 */
#include "core/backend/cpu/gemm_cl_avx512.h"

#if KERN_X86

/*
 * Fast numerics on packed weights (kernels.h, KERN_PACK_COLS): the layout
 * cl_rows_fast needs is already in memory, so a block costs 4 (Q8_0: 8)
 * loads and, for Q4, 8 and/shift ops, shared by NR rows, where cl_prepare
 * spends a transposition a block. This is also the one-row (decode)
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
    T_VNNI void NAME(int nb, const void *wv, int nc, const blk_q8 *x, size_t xs,                   \
                     const int32_t *xc, int nr, float *y, size_t ys) {                             \
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
AVX512_PACKED_DRIVER(kern_gemm_q4_0_packed_avx512, WK_Q4_0)
AVX512_PACKED_DRIVER(kern_gemm_q4_1_packed_avx512, WK_Q4_1)
AVX512_PACKED_DRIVER(kern_gemm_q8_0_packed_avx512, WK_Q8_0)

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
 * whose rows then skip the unpacking and the f16 scales: with the weights
 * out of cache, as in a real step, that wins from PK_CL_ROWS rows (with
 * them in cache, only from more; docs/benchmarks.md, "Figures moved from
 * code comments"). The next group (the thread's next chunk, as a rule) is
 * prefetched into L2 a share per row pair, spread over its blocks: asked
 * for all at once while the group is unpacked, its lines queue behind the
 * core's few line-fill buffers and stall it. */
#define PK_CL_ROWS 4
/* Row r's corrections (Q8_0 only: the others get NULL and read none). */
static inline const int32_t *xc_row(const int KIND, const int32_t *xc, int r, size_t xcs) {
    return KIND == WK_Q8_0 ? xc + (size_t)r * xcs : NULL;
}

#define AVX512_PACKED_EXACT_DRIVER(NAME, KIND)                                                     \
    T_VNNI void NAME(int nb, const void *wv, int nc, const blk_q8 *x, size_t xs,                   \
                     const int32_t *xc, int nr, float *y, size_t ys) {                             \
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
AVX512_PACKED_EXACT_DRIVER(kern_gemm_q4_0_packed_exact_avx512, WK_Q4_0)
AVX512_PACKED_EXACT_DRIVER(kern_gemm_q4_1_packed_exact_avx512, WK_Q4_1)
AVX512_PACKED_EXACT_DRIVER(kern_gemm_q8_0_packed_exact_avx512, WK_Q8_0)

#endif
