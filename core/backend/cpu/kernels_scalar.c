/*
 * kernels_scalar.c - the scalar reference kernels, the bottom of the kernel
 * files: they call no other kernel file. Every SIMD kernel must agree with
 * these (test_kernels compares them on random data); the SIMD kernels call
 * them for tails and the shapes they do not take.
 */
#include <math.h>
#include <string.h>

#include "core/backend/cpu/kernels.h"

void kern_quantize_scalar(const float *x, blk_q8 *y, int n) {
    for (int b = 0; b < n / 32; b++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            int q = (int)nearbyintf(x[j] * id);
            y[b].qs[j] = (int8_t)q;
            sum += q;
        }
        /* scales are rounded through f16 as in ggml's Q8_0/Q8_1 blocks, so
         * results track llama.cpp's bit for bit where the math allows */
        y[b].d = qt_f16_to_f32(qt_f32_to_f16(d));
        y[b].s = qt_f16_to_f32(qt_f32_to_f16(d * (float)sum));
    }
}

/* Sum of 8 lanes in the order of an AVX hsum: (i, i+4), then (0,2)+(1,3). */
static float hsum8(const float *l) {
    float t[4];
    for (int i = 0; i < 4; i++) t[i] = l[i] + l[i + 4];
    return (t[0] + t[2]) + (t[1] + t[3]);
}

/*
 * The scalar references emulate the SIMD arithmetic exactly: 8 int32 lanes
 * each summing 4 consecutive byte products of the 32-byte unpacked block,
 * one fma per lane per block, the 8-lane sum at the end. Integer sums are
 * exact, so results are bit-identical to the AVX2 and VNNI kernels.
 */
typedef enum { W_Q4_0, W_Q4_1, W_Q8_0, W_Q5_0, W_Q5_1, W_IQ4_NL } wkind;

static const int8_t IQ4NL_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

/* Block b of a weight row as 32 integer codes, its scale dw and the weight
 * of the activation sum mw (0 for the formats with signed codes). */
static void decode_block32(wkind kind, const uint8_t *wrow, int b, int *wq, float *dw, float *mw) {
    const uint8_t *qs;
    uint32_t qh = 0;
    *mw = 0;
    switch (kind) {
    case W_Q8_0: {
        const block_q8_0 *wb = (const block_q8_0 *)wrow + b;
        for (int k = 0; k < 32; k++) wq[k] = wb->qs[k];
        *dw = qt_f16_to_f32(wb->d);
        return;
    }
    case W_Q4_1: {
        const block_q4_1 *wb = (const block_q4_1 *)wrow + b;
        qs = wb->qs;
        *dw = qt_f16_to_f32(wb->d);
        *mw = qt_f16_to_f32(wb->m);
        break;
    }
    case W_Q5_0: {
        const block_q5_0 *wb = (const block_q5_0 *)wrow + b;
        qs = wb->qs;
        memcpy(&qh, wb->qh, 4);
        *dw = qt_f16_to_f32(wb->d);
        break;
    }
    case W_Q5_1: {
        const block_q5_1 *wb = (const block_q5_1 *)wrow + b;
        qs = wb->qs;
        memcpy(&qh, wb->qh, 4);
        *dw = qt_f16_to_f32(wb->d);
        *mw = qt_f16_to_f32(wb->m);
        break;
    }
    case W_IQ4_NL: {
        const block_iq4_nl *wb = (const block_iq4_nl *)wrow + b;
        *dw = qt_f16_to_f32(wb->d);
        for (int k = 0; k < 16; k++) {
            wq[k] = IQ4NL_VALUES[wb->qs[k] & 0xf];
            wq[k + 16] = IQ4NL_VALUES[wb->qs[k] >> 4];
        }
        return;
    }
    default: { /* W_Q4_0 */
        const block_q4_0 *wb = (const block_q4_0 *)wrow + b;
        qs = wb->qs;
        *dw = qt_f16_to_f32(wb->d);
        *mw = -8.0f * *dw;
        break;
    }
    }
    for (int k = 0; k < 16; k++) {
        wq[k] = (qs[k] & 0xf) | (int)(((qh >> k) & 1) << 4);
        wq[k + 16] = (qs[k] >> 4) | (int)(((qh >> (k + 16)) & 1) << 4);
    }
    if (kind == W_Q5_0)
        for (int k = 0; k < 32; k++) wq[k] -= 16;
}

static void gemm_scalar(wkind kind, int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                        size_t xs, int nr, float *y, size_t ys) {
    const int has_min = kind == W_Q4_0 || kind == W_Q4_1 || kind == W_Q5_1;
    for (int c = 0; c < nc; c++) {
        const uint8_t *wrow = (const uint8_t *)w + (size_t)c * ws;
        for (int r = 0; r < nr; r++) {
            const blk_q8 *xr = x + (size_t)r * xs;
            float lanes[8] = {0}, macc = 0;
            for (int b = 0; b < nb; b++) {
                int wq[32];
                float dw, mw;
                decode_block32(kind, wrow, b, wq, &dw, &mw);
                float scale = dw * xr[b].d;
                for (int l = 0; l < 8; l++) {
                    int sum = 0;
                    for (int k = 4 * l; k < 4 * l + 4; k++) sum += wq[k] * xr[b].qs[k];
                    lanes[l] = fmaf((float)sum, scale, lanes[l]);
                }
                if (has_min) macc += mw * xr[b].s;
            }
            y[(size_t)r * ys + c] = hsum8(lanes) + macc;
        }
    }
}

void kern_gemm_q4_0_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_scalar(W_Q4_0, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q4_1_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_scalar(W_Q4_1, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q8_0_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_scalar(W_Q8_0, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q5_0_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_scalar(W_Q5_0, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q5_1_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys) {
    gemm_scalar(W_Q5_1, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_iq4_nl_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                             int nr, float *y, size_t ys) {
    gemm_scalar(W_IQ4_NL, nb, w, ws, nc, x, xs, nr, y, ys);
}

/* The "fast" numerics (kernels.h): one int dot per block, one fma chain
 * per output, the min/offset term in a second chain. */
static void gemm_fast_scalar(wkind kind, int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                             size_t xs, int nr, float *y, size_t ys) {
    for (int c = 0; c < nc; c++) {
        const uint8_t *wrow = (const uint8_t *)w + (size_t)c * ws;
        for (int r = 0; r < nr; r++) {
            const blk_q8 *xr = x + (size_t)r * xs;
            float acc = 0, macc = 0;
            for (int b = 0; b < nb; b++) {
                int32_t isum = 0;
                float dw, mw = 0;
                if (kind == W_Q8_0) {
                    const block_q8_0 *wb = (const block_q8_0 *)wrow + b;
                    for (int k = 0; k < 32; k++) isum += wb->qs[k] * xr[b].qs[k];
                    dw = qt_f16_to_f32(wb->d);
                } else {
                    const uint8_t *qs;
                    if (kind == W_Q4_1) {
                        const block_q4_1 *wb = (const block_q4_1 *)wrow + b;
                        qs = wb->qs;
                        dw = qt_f16_to_f32(wb->d);
                        mw = qt_f16_to_f32(wb->m);
                    } else {
                        const block_q4_0 *wb = (const block_q4_0 *)wrow + b;
                        qs = wb->qs;
                        dw = qt_f16_to_f32(wb->d);
                        mw = -8.0f * dw;
                    }
                    for (int k = 0; k < 16; k++)
                        isum += (qs[k] & 0xf) * xr[b].qs[k] + (qs[k] >> 4) * xr[b].qs[k + 16];
                }
                acc = fmaf(dw * xr[b].d, (float)isum, acc);
                if (kind != W_Q8_0) macc = fmaf(mw, xr[b].s, macc);
            }
            y[(size_t)r * ys + c] = kind == W_Q8_0 ? acc : acc + macc;
        }
    }
}

void kern_gemm_q4_0_fast_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                                size_t xs, int nr, float *y, size_t ys) {
    gemm_fast_scalar(W_Q4_0, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q4_1_fast_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                                size_t xs, int nr, float *y, size_t ys) {
    gemm_fast_scalar(W_Q4_1, nb, w, ws, nc, x, xs, nr, y, ys);
}
void kern_gemm_q8_0_fast_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                                size_t xs, int nr, float *y, size_t ys) {
    gemm_fast_scalar(W_Q8_0, nb, w, ws, nc, x, xs, nr, y, ys);
}

float kern_tree16(const float *l) {
    float t3[8], t6[4];
    for (int i = 0; i < 8; i++) t3[i] = l[i + 8] + l[i];
    for (int i = 0; i < 4; i++) t6[i] = t3[i + 4] + t3[i];
    return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

float kern_dot_f16_scalar(const uint16_t *a, const float *b, int n) {
    if (n % 16 == 0) {
        float lanes[16] = {0};
        for (int i = 0; i < n; i += 16)
            for (int l = 0; l < 16; l++)
                lanes[l] = fmaf(qt_f16_to_f32(a[i + l]), b[i + l], lanes[l]);
        return kern_tree16(lanes);
    }
    float acc = 0;
    for (int i = 0; i < n; i++) acc = fmaf(qt_f16_to_f32(a[i]), b[i], acc);
    return acc;
}

float kern_reduce64(const float *l) {
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = (l[i] + l[32 + i]) + (l[16 + i] + l[48 + i]);
    return kern_tree16(x);
}

float kern_dot_f16_x4_scalar(const uint16_t *a, const float *b, int n) {
    float lanes[64] = {0};
    int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int l = 0; l < 64; l++) lanes[l] = fmaf(qt_f16_to_f32(a[i + l]), b[i + l], lanes[l]);
    double sum = np ? kern_reduce64(lanes) : 0.0;
    for (int i = np; i < n; i++) sum += (double)(qt_f16_to_f32(a[i]) * b[i]);
    return (float)sum;
}

void kern_axpy_f16_scalar(float a, const uint16_t *v, float *acc, int n) {
    for (int i = 0; i < n; i++) acc[i] = fmaf(a, qt_f16_to_f32(v[i]), acc[i]);
}

/* 2^n for integral n in [-126, 127], built from its bits. */
static float pow2i(int n) {
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float kern_exp_ref(float x) {
    const float r = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, r);
    float n = z - r;
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    if (fabsf(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    float u = b * b;
    float j = fmaf(
        fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
        u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (isnan(n)) return n;
    /* j * 2^n in two exact-then-rounded steps (|n| <= 192 splits into halves
     * that are both normal powers of two), equal to one correctly rounded
     * scaling */
    int ni = (int)n, n1 = ni / 2, n2 = ni - n1;
    return (j * pow2i(n1)) * pow2i(n2);
}

void kern_silu_mul_scalar(const float *g, const float *u, float *out, int n) {
    for (int i = 0; i < n; i++) {
        float x = g[i];
        out[i] = (x / (1.0f + kern_exp_ref(0.0f - x))) * u[i];
    }
}

void kern_rope_scalar(float *x, const float *cs, int n_heads, int head_dim, int half) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1], a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = fmaf(a, c, -(b * s));
            v[2 * i + 1] = fmaf(a, s, b * c);
        }
    }
}

double kern_softmax_exp_scalar(float *x, int n, float max) {
    double sum = 0;
    for (int i = 0; i < n; i += 16) {
        float lanes[16];
        for (int l = 0; l < 16; l++) {
            lanes[l] = i + l < n ? kern_exp_ref(x[i + l] - max) : 0.0f;
            if (i + l < n) x[i + l] = lanes[l];
        }
        sum += (double)kern_tree16(lanes);
    }
    return sum;
}

void kern_f32_to_f16_scalar(const float *x, uint16_t *y, int n) {
    for (int i = 0; i < n; i++) y[i] = qt_f32_to_f16(x[i]);
}

void kern_rmsnorm_scalar(const float *x, const float *g, int rows, int cols, float eps, float *y) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        double ss = 0;
        for (int i = 0; i < cols; i++) ss += (double)(xr[i] * xr[i]);
        const float mean = (float)(ss / cols);
        float scale = 1.0f / sqrtf(mean + eps);
        for (int i = 0; i < cols; i++) yr[i] = xr[i] * scale * g[i];
    }
}

/* the reference's scores, q and 64 lanes of hd; the AVX-512 tiled shape's
 * 3 heads of q, scores (rounded up to 16 past n_ctx + 64) and 16 lanes of
 * hd for V; its decode shape's q and scores of all n_heads of a row (see
 * attn_avx512.c): all fit in the same */
size_t kern_attn_work(int n_ctx, int hd, int n_heads) {
    const size_t nh = n_heads > 3 ? (size_t)n_heads : 3;
    return nh * ((size_t)n_ctx + 80) + (66 + nh) * (size_t)hd;
}

void kern_attn_f16_row_with(kern_attn_f16_fn attn, const uint8_t *k, const uint8_t *v,
                            size_t kv_stride, int nkv, const size_t *off, int n_ctx, const float *q,
                            int nq, int hd, float scale, int single, float *work, float *out) {
    for (int g = 0; g < nkv; g++)
        attn(k + (size_t)g * kv_stride, v + (size_t)g * kv_stride, off, n_ctx,
             q + (size_t)g * nq * hd, nq, hd, scale, single, work, out + (size_t)g * nq * hd);
}

void kern_attn_f16_with(const kern_attn_parts *t, const uint8_t *k, const uint8_t *v,
                        const size_t *off, int n_ctx, const float *q32, int nq, int hd, float scale,
                        int single, float *work, float *out) {
    const int lanes = single ? 64 : 16;
    float *scores = work, *q = work + n_ctx, *acc = q + hd; /* acc[lanes][hd] */
    for (int h = 0; h < nq; h++, q32 += hd, out += hd) {
        for (int i = 0; i < hd; i++) q[i] = qt_f16_to_f32(qt_f32_to_f16(q32[i]));
        float mx = -INFINITY;
        for (int p = 0; p < n_ctx; p++) {
            const uint16_t *kp = (const uint16_t *)(k + off[p]);
            float sc = (single ? t->dot_f16_x4(kp, q, hd) : t->dot_f16(kp, q, hd)) * scale;
            scores[p] = sc;
            if (sc > mx) mx = sc;
        }
        float inv = (float)(1.0 / t->softmax_exp(scores, n_ctx, mx));
        /* lanes past the context stay 0: only the used ones live in acc */
        const int used = n_ctx < lanes ? n_ctx : lanes;
        memset(acc, 0, (size_t)hd * (size_t)used * sizeof *acc);
        for (int p = 0; p < n_ctx; p++) {
            float wgt = qt_f16_to_f32(qt_f32_to_f16(scores[p] * inv));
            t->axpy_f16(wgt, (const uint16_t *)(v + off[p]), acc + (size_t)(p % lanes) * hd, hd);
        }
        for (int i = 0; i < hd; i++) {
            float l[64];
            for (int ln = 0; ln < lanes; ln++) l[ln] = ln < used ? acc[(size_t)ln * hd + i] : 0.0f;
            out[i] = single ? kern_reduce64(l) : kern_tree16(l);
        }
    }
}

static const kern_attn_parts SCALAR_PARTS = {kern_dot_f16_scalar, kern_dot_f16_x4_scalar,
                                             kern_axpy_f16_scalar, kern_softmax_exp_scalar};

void kern_attn_f16_scalar(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                          const float *q, int nq, int hd, float scale, int single, float *work,
                          float *out) {
    kern_attn_f16_with(&SCALAR_PARTS, k, v, off, n_ctx, q, nq, hd, scale, single, work, out);
}

void kern_attn_f16_row_scalar(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                              const size_t *off, int n_ctx, const float *q, int nq, int hd,
                              float scale, int single, float *work, float *out) {
    kern_attn_f16_row_with(kern_attn_f16_scalar, k, v, kv_stride, nkv, off, n_ctx, q, nq, hd, scale,
                           single, work, out);
}

void kern_q8_corr(const blk_q8 *x, size_t n, int32_t *corr) {
    for (size_t i = 0; i < n; i++)
        for (int l = 0; l < 8; l++) {
            const int8_t *q = x[i].qs + 4 * l;
            corr[8 * i + (size_t)l] = -128 * (q[0] + q[1] + q[2] + q[3]);
        }
}
