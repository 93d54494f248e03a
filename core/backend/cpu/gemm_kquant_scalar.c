/*
 * gemm_kquant_scalar.c - the scalar reference GEMMs of the K-quant weight
 * formats (Q4_K, Q5_K, Q6_K against Q8_K activations) and of float weights
 * (F32, F16, BF16), and the activation rounding the float ones read. Each
 * computes, output by output, exactly the arithmetic of the numerics
 * contract in kernels.h, which the AVX2 kernels (gemm_kquant_avx2.c) follow
 * with vectors; like kernels_scalar.c, it calls no other kernel file.
 */
#include <math.h>
#include <string.h>

#include "core/backend/cpu/kernels.h"

/* lanes (l, l + 4), then (0 + 2) + (1 + 3): an AVX hsum of 8 lanes */
static float hsum8(const float *l) {
    float t[4];
    for (int i = 0; i < 4; i++) t[i] = l[i] + l[i + 4];
    return (t[0] + t[2]) + (t[1] + t[3]);
}

/* A K-quant block decoded: 256 codes as the integer dot uses them, the
 * scale of each 16 codes, the min of each 32 (Q4_K, Q5_K) and the f16
 * scales. */
/* How the min (or Q6_K's offset) term enters: none, 4 float lanes
 * (Q4_K), one float (Q5_K), the main lanes before the scales (Q2_K), the
 * integer lanes (Q6_K: 32 * scale * the activation sum of each 16). */
typedef enum { KM_NONE, KM_PAIRS, KM_SCALAR, KM_INTO_ACC, KM_OFFSET32 } kq_min;
typedef struct {
    int q[QK_K];
    int sc[QK_K / 16];
    int mn[QK_K / 16]; /* KM_PAIRS: one a 32 (8); KM_INTO_ACC: one a 16 */
    float d, dmin;
    kq_min min;
} kq_block;

/* Q4_K and Q5_K share the 12-byte packing of 8 six-bit (scale, min) pairs. */
static void k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K (qh NULL) or Q5_K: sub-block j holds codes 32j .. 32j + 31, the low
 * nibbles of qs[32 (j / 2) ..] for even j and the high ones for odd j. */
static void decode_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, qt_f16 d,
                       qt_f16 dmin, kq_block *o) {
    o->d = qt_f16_to_f32(d);
    o->dmin = qt_f16_to_f32(dmin);
    o->min = KM_PAIRS;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        k4_scale_min(scales, j, &sc, &m);
        o->sc[2 * j] = o->sc[2 * j + 1] = sc;
        o->mn[j] = m;
        for (int l = 0; l < 32; l++) {
            int v = j % 2 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 0xf;
            if (qh) v |= ((qh[l] >> j) & 1) << 4;
            o->q[32 * j + l] = v;
        }
    }
}

/* Q6_K's codes unsigned (0..63); kq_dot subtracts the offset of 32. */
static void decode_q6k(const block_q6_K *b, kq_block *o) {
    o->d = qt_f16_to_f32(b->d);
    o->dmin = 0;
    o->min = KM_OFFSET32;
    for (int i = 0; i < 16; i++) o->sc[i] = b->scales[i];
    for (int h = 0; h < 2; h++) { /* each 128 codes: 64 bytes of ql, 32 of qh */
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int *q = o->q + 128 * h;
        for (int l = 0; l < 32; l++) {
            q[l] = (ql[l] & 0xf) | ((qh[l] & 3) << 4);
            q[l + 32] = (ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4);
            q[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            q[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
}

/* Q2_K and Q3_K: run t (32 codes) is bits 2 (t % 4) .. of qs[32 (t / 4) ..];
 * Q3_K's code is that minus 4 where bit t of hmask[l] is clear. */
static void decode_q23k(const uint8_t *qs, const uint8_t *hmask, kq_block *o) {
    for (int t = 0; t < 8; t++)
        for (int l = 0; l < 32; l++) {
            int v = (qs[32 * (t / 4) + l] >> (2 * (t % 4))) & 3;
            if (hmask && !((hmask[l] >> t) & 1)) v -= 4;
            o->q[32 * t + l] = v;
        }
}

static const int8_t IQ4NL_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

static void decode_small_k(uint32_t type, const uint8_t *wb, kq_block *o) {
    o->dmin = 0;
    o->min = KM_NONE;
    if (type == QT_Q2_K) {
        const block_q2_K *b = (const block_q2_K *)wb;
        o->d = qt_f16_to_f32(b->d);
        o->dmin = qt_f16_to_f32(b->dmin);
        o->min = KM_INTO_ACC;
        for (int i = 0; i < 16; i++) {
            o->sc[i] = b->scales[i] & 0xf;
            o->mn[i] = b->scales[i] >> 4;
        }
        decode_q23k(b->qs, NULL, o);
    } else if (type == QT_Q3_K) {
        const block_q3_K *b = (const block_q3_K *)wb;
        o->d = qt_f16_to_f32(b->d);
        for (int i = 0; i < 16; i++) {
            int lo = i < 8 ? b->scales[i] & 0xf : b->scales[i - 8] >> 4;
            int hi = (b->scales[8 + i % 4] >> (2 * (i / 4))) & 3;
            o->sc[i] = (lo | hi << 4) - 32;
        }
        decode_q23k(b->qs, b->hmask, o);
    } else { /* IQ4_XS */
        const block_iq4_xs *b = (const block_iq4_xs *)wb;
        o->d = qt_f16_to_f32(b->d);
        for (int t = 0; t < 8; t++) {
            int ls = ((b->scales_l[t / 2] >> (4 * (t % 2))) & 0xf) |
                     (((b->scales_h >> (2 * t)) & 3) << 4);
            o->sc[2 * t] = o->sc[2 * t + 1] = ls - 32;
            for (int l = 0; l < 16; l++) {
                o->q[32 * t + l] = IQ4NL_VALUES[b->qs[16 * t + l] & 0xf];
                o->q[32 * t + l + 16] = IQ4NL_VALUES[b->qs[16 * t + l] >> 4];
            }
        }
    }
}

typedef enum { KQ_Q4_K, KQ_Q5_K, KQ_Q6_K, KQ_Q2_K, KQ_Q3_K, KQ_IQ4_XS } kq_kind;

static void decode_kq(kq_kind kind, const uint8_t *wrow, int b, kq_block *o) {
    if (kind == KQ_Q2_K) {
        decode_small_k(QT_Q2_K, wrow + (size_t)b * sizeof(block_q2_K), o);
    } else if (kind == KQ_Q3_K) {
        decode_small_k(QT_Q3_K, wrow + (size_t)b * sizeof(block_q3_K), o);
    } else if (kind == KQ_IQ4_XS) {
        decode_small_k(QT_IQ4_XS, wrow + (size_t)b * sizeof(block_iq4_xs), o);
    } else if (kind == KQ_Q4_K) {
        const block_q4_K *wb = (const block_q4_K *)wrow + b;
        decode_k45(wb->scales, wb->qs, NULL, wb->d, wb->dmin, o);
    } else if (kind == KQ_Q5_K) {
        const block_q5_K *wb = (const block_q5_K *)wrow + b;
        decode_k45(wb->scales, wb->qs, wb->qh, wb->d, wb->dmin, o);
        o->min = KM_SCALAR;
    } else {
        decode_q6k((const block_q6_K *)wrow + b, o);
    }
}

/* One output over nb blocks (the contract's K-quant arithmetic). */
static float kq_dot(kq_kind kind, const uint8_t *wrow, int nb, const block_q8_K *x) {
    float acc[8] = {0}, accm[4] = {0}, summs = 0;
    kq_block k;
    for (int b = 0; b < nb; b++) {
        decode_kq(kind, wrow, b, &k);
        int32_t lanes[8] = {0};
        for (int t = 0; t < QK_K; t++) lanes[(t % 32) / 4] += k.sc[t / 16] * k.q[t] * x[b].qs[t];
        if (k.min == KM_OFFSET32)
            for (int l = 0; l < 8; l++)
                lanes[l] -= 32 * (k.sc[2 * l] * x[b].bsums[2 * l] +
                                  k.sc[2 * l + 1] * x[b].bsums[2 * l + 1]);
        if (k.min == KM_INTO_ACC) { /* Q2_K: the min term first, into the same lanes */
            const float dmin = -(x[b].d * k.dmin);
            for (int l = 0; l < 8; l++) {
                int m = k.mn[2 * l] * x[b].bsums[2 * l] + k.mn[2 * l + 1] * x[b].bsums[2 * l + 1];
                acc[l] = fmaf(dmin, (float)m, acc[l]);
            }
        }
        const float d = x[b].d * k.d;
        for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lanes[l], acc[l]);
        if (k.min == KM_PAIRS || k.min == KM_SCALAR) {
            const float dmin = -(x[b].d * k.dmin);
            int32_t m[4], msum = 0;
            for (int i = 0; i < 4; i++) {
                int s0 = x[b].bsums[4 * i] + x[b].bsums[4 * i + 1];
                int s1 = x[b].bsums[4 * i + 2] + x[b].bsums[4 * i + 3];
                m[i] = k.mn[2 * i] * s0 + k.mn[2 * i + 1] * s1;
                msum += m[i];
                if (k.min == KM_PAIRS) accm[i] = fmaf(dmin, (float)m[i], accm[i]);
            }
            if (k.min == KM_SCALAR) summs = fmaf(dmin, (float)msum, summs);
        }
    }
    float y = hsum8(acc);
    if (kind == KQ_Q4_K) y += (accm[0] + accm[2]) + (accm[1] + accm[3]);
    if (kind == KQ_Q5_K) y += summs;
    return y;
}

static void gemm_kq_scalar(kq_kind kind, int nb, const void *w, size_t ws, int nc,
                           const block_q8_K *x, size_t xs, int nr, float *y, size_t ys) {
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++)
            y[(size_t)r * ys + c] =
                kq_dot(kind, (const uint8_t *)w + (size_t)c * ws, nb, x + (size_t)r * xs);
}

void kern_gemm_q4_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_kq_scalar(KQ_Q4_K, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q5_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_kq_scalar(KQ_Q5_K, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q6_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_kq_scalar(KQ_Q6_K, nb, w, ws, nc, x, xs, nr, y, ys);
}

void kern_gemm_q2_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_kq_scalar(KQ_Q2_K, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q3_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_kq_scalar(KQ_Q3_K, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_iq4_xs_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x,
                             size_t xs, int nr, float *y, size_t ys) {
    gemm_kq_scalar(KQ_IQ4_XS, nb, w, ws, nc, x, xs, nr, y, ys);
}

/* ---- float weights ---- */
static float wval(uint32_t type, const uint8_t *w, int i) {
    if (type == QT_F32) {
        float f;
        memcpy(&f, w + 4 * (size_t)i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, w + 2 * (size_t)i, 2);
    return type == QT_F16 ? qt_f16_to_f32(h) : qt_bf16_to_f32(h);
}

static void gemm_float_scalar(uint32_t type, int n, const void *w, size_t ws, int nc,
                              const float *x, size_t xs, int nr, float *y, size_t ys) {
    for (int c = 0; c < nc; c++) {
        const uint8_t *wrow = (const uint8_t *)w + (size_t)c * ws;
        for (int r = 0; r < nr; r++) {
            const float *xr = x + (size_t)r * xs;
            float a[32] = {0}, l8[8];
            for (int i = 0; i < n; i++) a[i % 32] = fmaf(wval(type, wrow, i), xr[i], a[i % 32]);
            for (int l = 0; l < 8; l++) l8[l] = (a[l] + a[l + 16]) + (a[l + 8] + a[l + 24]);
            y[(size_t)r * ys + c] = hsum8(l8);
        }
    }
}

void kern_gemm_f32_scalar(int n, const void *w, size_t ws, int nc, const float *x, size_t xs,
                          int nr, float *y, size_t ys) {
    gemm_float_scalar(QT_F32, n, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_f16_scalar(int n, const void *w, size_t ws, int nc, const float *x, size_t xs,
                          int nr, float *y, size_t ys) {
    gemm_float_scalar(QT_F16, n, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_bf16_scalar(int n, const void *w, size_t ws, int nc, const float *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_float_scalar(QT_BF16, n, w, ws, nc, x, xs, nr, y, ys);
}

void kern_quantize_q8k_scalar(const float *x, block_q8_K *y, int n) {
    quant_quantize_row_q8_K(x, y, n);
}

void kern_round_activations(uint32_t type, const float *x, float *y, int n) {
    for (int i = 0; i < n; i++)
        y[i] = type == QT_F16    ? qt_f16_to_f32(qt_f32_to_f16(x[i]))
               : type == QT_BF16 ? qt_bf16_to_f32(qt_f32_to_bf16(x[i]))
                                 : x[i];
}
