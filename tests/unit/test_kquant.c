/*
 * test_kquant.c - the GEMM kernels of the weight formats beyond Q4_0, Q4_1
 * and Q8_0 (kernels.h: Q5_0, Q5_1, IQ4_NL against blk_q8; Q4_K, Q5_K,
 * Q6_K against Q8_K; F32, F16, BF16 against rounded floats), the new
 * dequantizers in core/quant.c, and the CPU backend's matmuls on them.
 *
 * Weights are random bytes with random finite scales, so every code and
 * scale bit pattern occurs. Each scalar kernel is checked against
 * quant_dequant_row + a double-precision dot with the dequantized
 * activations (the kernels' only error is float rounding of a few
 * products and sums); each SIMD table must give the scalar reference's
 * bits exactly, on row counts 1, 3, 17, 300, rows of 256, 768 and 1536
 * elements and a column count that no tile width divides.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/backend.h"
#include "core/backend/cpu/kernels.h"
#include "core/quant.h"
#include "tests/common/test_util.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_range(float lo, float hi) {
    return lo + (hi - lo) * (float)((rng_u64() >> 40) * 0x1p-24);
}
static float rng_normalish(void) {
    float s = 0;
    for (int i = 0; i < 4; i++) s += rng_range(-1.7320508f, 1.7320508f);
    return s * 0.5f;
}
static qt_f16 rand_scale(float lo, float hi) { return qt_f32_to_f16(rng_range(lo, hi)); }
static void put16(uint8_t *p, qt_f16 v) { memcpy(p, &v, 2); }

typedef enum { A_Q8, A_Q8K, A_FLOAT } act_kind;

static const uint32_t FORMATS[] = {QT_Q5_0, QT_Q5_1, QT_IQ4_NL, QT_Q2_K, QT_Q3_K, QT_Q4_K,
                                   QT_Q5_K, QT_Q6_K, QT_IQ4_XS, QT_F32,  QT_F16,  QT_BF16};

static act_kind act_of(uint32_t type) {
    switch (type) {
    case QT_Q2_K:
    case QT_Q3_K:
    case QT_Q4_K:
    case QT_Q5_K:
    case QT_Q6_K:
    case QT_IQ4_XS: return A_Q8K;
    case QT_F32:
    case QT_F16:
    case QT_BF16: return A_FLOAT;
    default: return A_Q8;
    }
}

/* Random bytes, then each block's f16 scales overwritten with finite
 * values (a random f16 can be inf or NaN); float formats get random values. */
static void fill_weights(uint32_t type, uint8_t *w, int64_t n_in, int64_t rows) {
    const size_t rb = quant_row_bytes(type, n_in), bb = quant_block_bytes(type);
    for (size_t i = 0; i < rb * (size_t)rows; i++) w[i] = (uint8_t)rng_u64();
    if (type == QT_F32 || type == QT_F16 || type == QT_BF16) {
        for (int64_t i = 0; i < n_in * rows; i++) {
            float v = rng_normalish() * 0.1f;
            if (type == QT_F32) memcpy(w + 4 * i, &v, 4);
            else if (type == QT_F16) put16(w + 2 * i, qt_f32_to_f16(v));
            else put16(w + 2 * i, qt_f32_to_bf16(v));
        }
        return;
    }
    for (uint8_t *b = w; b < w + rb * (size_t)rows; b += bb) {
        switch (type) {
        case QT_Q5_1:
            put16(b, rand_scale(0.001f, 0.01f));
            put16(b + 2, rand_scale(-0.1f, 0.1f));
            break;
        case QT_Q4_K:
        case QT_Q5_K:
            put16(b, rand_scale(0.0001f, 0.001f));
            put16(b + 2, rand_scale(0.0001f, 0.002f));
            break;
        case QT_Q6_K: put16(b + offsetof(block_q6_K, d), rand_scale(-0.0002f, 0.0002f)); break;
        case QT_Q2_K:
            put16(b + offsetof(block_q2_K, d), rand_scale(0.0001f, 0.001f));
            put16(b + offsetof(block_q2_K, dmin), rand_scale(0.0001f, 0.001f));
            break;
        case QT_Q3_K: put16(b + offsetof(block_q3_K, d), rand_scale(-0.001f, 0.001f)); break;
        default: put16(b, rand_scale(-0.01f, 0.01f)); break; /* Q5_0, IQ4_NL */
        }
    }
}

/* The activations in the kernel's format, and dequantized for the reference. */
typedef struct {
    blk_q8 *q8;
    block_q8_K *q8k;
    float *xf;  /* rounded floats (A_FLOAT) */
    float *deq; /* what the kernel's activation values are */
} acts;

static void make_acts(uint32_t type, const float *x, int n, int rows, acts *a) {
    a->q8 = calloc((size_t)rows * (size_t)(n / 32), sizeof *a->q8);
    a->q8k = calloc((size_t)rows * (size_t)(n / QK_K) + 1, sizeof *a->q8k);
    a->xf = calloc((size_t)rows * (size_t)n, sizeof *a->xf);
    a->deq = calloc((size_t)rows * (size_t)n, sizeof *a->deq);
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        float *d = a->deq + (size_t)r * n;
        switch (act_of(type)) {
        case A_Q8: {
            blk_q8 *q = a->q8 + (size_t)r * (n / 32);
            kern_quantize_scalar(xr, q, n);
            for (int i = 0; i < n; i++) d[i] = q[i / 32].d * (float)q[i / 32].qs[i % 32];
            break;
        }
        case A_Q8K: {
            block_q8_K *q = a->q8k + (size_t)r * (n / QK_K);
            quant_quantize_row_q8_K(xr, q, n);
            for (int i = 0; i < n; i++) d[i] = q[i / QK_K].d * (float)q[i / QK_K].qs[i % QK_K];
            break;
        }
        case A_FLOAT:
            kern_round_activations(type, xr, a->xf + (size_t)r * n, n);
            memcpy(d, a->xf + (size_t)r * n, (size_t)n * sizeof *d);
            break;
        }
    }
}

static void free_acts(acts *a) {
    free(a->q8);
    free(a->q8k);
    free(a->xf);
    free(a->deq);
}

/* Runs table t's kernel for the type. */
static void run_kernel(const kern_table *t, uint32_t type, int n, const uint8_t *w, size_t ws,
                       int nc, const acts *a, int nr, float *y, size_t ys) {
    switch (type) {
    case QT_Q5_0: t->gemm_q5_0(n / 32, w, ws, nc, a->q8, (size_t)n / 32, nr, y, ys); break;
    case QT_Q5_1: t->gemm_q5_1(n / 32, w, ws, nc, a->q8, (size_t)n / 32, nr, y, ys); break;
    case QT_IQ4_NL: t->gemm_iq4_nl(n / 32, w, ws, nc, a->q8, (size_t)n / 32, nr, y, ys); break;
    case QT_Q4_K: t->gemm_q4_k(n / QK_K, w, ws, nc, a->q8k, (size_t)n / QK_K, nr, y, ys); break;
    case QT_Q5_K: t->gemm_q5_k(n / QK_K, w, ws, nc, a->q8k, (size_t)n / QK_K, nr, y, ys); break;
    case QT_Q6_K: t->gemm_q6_k(n / QK_K, w, ws, nc, a->q8k, (size_t)n / QK_K, nr, y, ys); break;
    case QT_Q2_K: t->gemm_q2_k(n / QK_K, w, ws, nc, a->q8k, (size_t)n / QK_K, nr, y, ys); break;
    case QT_Q3_K: t->gemm_q3_k(n / QK_K, w, ws, nc, a->q8k, (size_t)n / QK_K, nr, y, ys); break;
    case QT_IQ4_XS: t->gemm_iq4_xs(n / QK_K, w, ws, nc, a->q8k, (size_t)n / QK_K, nr, y, ys); break;
    case QT_F32: t->gemm_f32(n, w, ws, nc, a->xf, (size_t)n, nr, y, ys); break;
    case QT_F16: t->gemm_f16(n, w, ws, nc, a->xf, (size_t)n, nr, y, ys); break;
    default: t->gemm_bf16(n, w, ws, nc, a->xf, (size_t)n, nr, y, ys); break;
    }
}

/* |kernel - reference| allowed for one output: float rounding of the
 * scale products and of the accumulation, relative to the sum of |terms|;
 * Q5_1's min term reads the activation sum s, which blk_q8 holds rounded
 * to f16 (2^-11 relative). */
static double tolerance(uint32_t type, const uint8_t *wrow, const blk_q8 *xq, int n,
                        double abs_sum) {
    double tol = 1e-5 * abs_sum + 1e-30;
    if (type == QT_Q5_1)
        for (int b = 0; b < n / 32; b++)
            tol += fabs((double)qt_f16_to_f32(((const block_q5_1 *)wrow)[b].m) * xq[b].s) * 0x1p-10;
    return tol;
}

static int check_shape(uint32_t type, int n, int nr, int nc) {
    const size_t rb = quant_row_bytes(type, n), ys = (size_t)nc + 3;
    uint8_t *w = malloc(rb * (size_t)nc);
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)nr);
    float *y = malloc(sizeof(float) * ys * (size_t)nr),
          *y2 = malloc(sizeof(float) * ys * (size_t)nr);
    float *wd = malloc(sizeof(float) * (size_t)n);
    fill_weights(type, w, n, nc);
    for (int i = 0; i < n * nr; i++) x[i] = rng_normalish() * (i % 7 == 0 ? 4.0f : 1.0f);
    acts a;
    make_acts(type, x, n, nr, &a);
    for (size_t i = 0; i < ys * (size_t)nr; i++) y[i] = y2[i] = -12345.0f;
    run_kernel(kern_scalar(), type, n, w, rb, nc, &a, nr, y, ys);
    int bad = 0;
    for (int c = 0; c < nc; c++) {
        quant_dequant_row(type, w + (size_t)c * rb, wd, n);
        for (int r = 0; r < nr; r++) {
            const float *xd = a.deq + (size_t)r * n;
            double ref = 0, abs_sum = 0;
            for (int i = 0; i < n; i++) {
                ref += (double)wd[i] * xd[i];
                abs_sum += fabs((double)wd[i] * xd[i]);
            }
            const double tol =
                tolerance(type, w + (size_t)c * rb, a.q8 + (size_t)r * (n / 32), n, abs_sum);
            const float got = y[(size_t)r * ys + c];
            if (!(fabs(got - ref) <= tol) && bad++ < 3)
                fprintf(stderr, "%s n=%d r=%d c=%d: scalar %.9g, reference %.9g (tol %.3g)\n",
                        quant_name(type), n, r, c, got, ref, tol);
        }
    }
    for (int r = 0; r < nr; r++) /* untouched beyond nc */
        for (size_t c = (size_t)nc; c < ys; c++) bad += y[(size_t)r * ys + c] != -12345.0f;
    const kern_table *simd[2] = {kern_avx2(), kern_vnni()};
    for (int s = 0; s < 2; s++) {
        if (!simd[s]) continue;
        run_kernel(simd[s], type, n, w, rb, nc, &a, nr, y2, ys);
        if (memcmp(y, y2, sizeof(float) * ys * (size_t)nr) && bad++ < 3)
            fprintf(stderr, "%s n=%d rows=%d: %s differs from scalar\n", quant_name(type), n, nr,
                    simd[s]->isa);
    }
    free_acts(&a);
    free(w);
    free(x);
    free(y);
    free(y2);
    free(wd);
    return bad;
}

static void test_kernels_match_reference(void) {
    const int ns[] = {256, 768, 1536}, rows[] = {1, 3, 17, 300};
    for (size_t f = 0; f < sizeof FORMATS / sizeof *FORMATS; f++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++) {
                const int nc = rows[j] >= 300 ? 21 : 37;
                CHECKF(check_shape(FORMATS[f], ns[i], rows[j], nc) == 0, "%s n=%d rows=%d",
                       quant_name(FORMATS[f]), ns[i], rows[j]);
            }
}

/* quant_quantize_row_q8_K: ggml's rounding, codes within [-127, 127], bsums. */
static void test_q8_K_quantizer(void) {
    float x[2 * QK_K];
    block_q8_K q[2];
    for (int i = 0; i < QK_K; i++) x[i] = rng_normalish();
    x[77] = -9.0f; /* the value of largest magnitude is negative: d > 0 */
    memset(x + QK_K, 0, sizeof(float) * QK_K);
    quant_quantize_row_q8_K(x, q, 2 * QK_K);
    CHECK(q[0].d == 1.0f / (-127.0f / -9.0f));
    CHECK(q[0].qs[77] == -127);
    int ok = 1;
    for (int i = 0; i < QK_K; i++) {
        ok &= fabsf(q[0].d * (float)q[0].qs[i] - x[i]) <= q[0].d * 0.5001f;
        ok &= q[0].qs[i] == (int)nearbyintf(x[i] * (-127.0f / -9.0f));
    }
    CHECK(ok);
    for (int g = 0; g < QK_K / 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += q[0].qs[16 * g + i];
        CHECK(q[0].bsums[g] == s);
    }
    CHECK(q[1].d == 0.0f && q[1].qs[5] == 0 && q[1].bsums[3] == 0);
}

/* Every table's quantize_q8k gives the reference's bytes: ordinary rows,
 * ties between x and -x at the largest magnitude (the first one sets the
 * sign of d), all-zero and tiny blocks, values that round to .5. */
static void test_q8_K_tables(void) {
    enum { N = 6 * QK_K };
    static float x[N];
    static block_q8_K want[N / QK_K], got[N / QK_K];
    const kern_table *simd[2] = {kern_avx2(), kern_vnni()};
    for (int style = 0; style < 4; style++) {
        for (int i = 0; i < N; i++) x[i] = rng_normalish() * (style == 1 ? 1e-30f : 1.0f);
        x[3] = 5.0f, x[200] = -5.0f;                   /* block 0: tie, positive first */
        x[QK_K + 9] = -7.0f, x[QK_K + 10] = 7.0f;      /* block 1: tie, negative first */
        memset(x + 2 * QK_K, 0, sizeof(float) * QK_K); /* block 2: zeros */
        if (style == 2)
            for (int i = 3 * QK_K; i < 4 * QK_K; i++) x[i] = (float)(i % 9) * 0.5f - 2.0f;
        if (style == 3) x[5 * QK_K + 17] = -0.0f;
        quant_quantize_row_q8_K(x, want, N);
        CHECK(kern_scalar()->quantize_q8k != NULL);
        for (int s = 0; s < 2; s++) {
            if (!simd[s]) continue;
            memset(got, 0x55, sizeof got);
            simd[s]->quantize_q8k(x, got, N);
            CHECKF(!memcmp(want, got, sizeof want), "%s quantize_q8k, style %d", simd[s]->isa,
                   style);
        }
    }
}

static const int8_t IQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                 1,    13,   25,  38,  53,  69,  89,  113};

static int k4_scale(const uint8_t *s, int j, int want_min) {
    int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
    int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    return want_min ? m : sc;
}

/* Element i of a block, written per element from the layouts in ggml's
 * ggml-common.h (rather than by the dequantizers' loops). */
static float element(uint32_t type, const uint8_t *b, int i) {
    const int n = i / 128, j = (i % 128) / 32, half = (i % 32) / 16, l = i % 16;
    switch (type) {
    case QT_Q2_K: {
        const block_q2_K *q = (const block_q2_K *)b;
        const int code = (q->qs[32 * n + 16 * half + l] >> (2 * j)) & 3;
        const uint8_t sc = q->scales[8 * n + 2 * j + half];
        return qt_f16_to_f32(q->d) * (float)(sc & 0xf) * (float)code -
               qt_f16_to_f32(q->dmin) * (float)(sc >> 4);
    }
    case QT_Q3_K: {
        const block_q3_K *q = (const block_q3_K *)b;
        const int si = 8 * n + 2 * j + half;
        const int lo = si < 8 ? q->scales[si] & 0xf : q->scales[si - 8] >> 4;
        const int hi = (q->scales[8 + si % 4] >> (2 * (si / 4))) & 3;
        int code = (q->qs[32 * n + 16 * half + l] >> (2 * j)) & 3;
        if (!((q->hmask[16 * half + l] >> (4 * n + j)) & 1)) code -= 4;
        return qt_f16_to_f32(q->d) * (float)((lo | hi << 4) - 32) * (float)code;
    }
    case QT_Q5_K: {
        const block_q5_K *q = (const block_q5_K *)b;
        const int sb = i / 32, k = i % 32, byte = q->qs[32 * (sb / 2) + k];
        const int code = (sb % 2 ? byte >> 4 : byte & 0xf) | (((q->qh[k] >> sb) & 1) << 4);
        return qt_f16_to_f32(q->d) * (float)k4_scale(q->scales, sb, 0) * (float)code -
               qt_f16_to_f32(q->dmin) * (float)k4_scale(q->scales, sb, 1);
    }
    case QT_IQ4_NL: {
        const block_iq4_nl *q = (const block_iq4_nl *)b;
        const int byte = q->qs[i % 16];
        return qt_f16_to_f32(q->d) * (float)IQ4NL[i < 16 ? byte & 0xf : byte >> 4];
    }
    default: { /* IQ4_XS */
        const block_iq4_xs *q = (const block_iq4_xs *)b;
        const int sb = i / 32, k = i % 32, byte = q->qs[16 * sb + k % 16];
        const int ls = ((q->scales_l[sb / 2] >> (4 * (sb % 2))) & 0xf) |
                       (((q->scales_h >> (2 * sb)) & 3) << 4);
        return qt_f16_to_f32(q->d) * (float)(ls - 32) *
               (float)IQ4NL[k < 16 ? byte & 0xf : byte >> 4];
    }
    }
}

static void test_dequantizers(void) {
    const uint32_t types[] = {QT_Q2_K, QT_Q3_K, QT_Q5_K, QT_IQ4_NL, QT_IQ4_XS};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        const uint32_t type = types[t];
        const int blk = quant_block_elems(type);
        const size_t bb = quant_block_bytes(type);
        CHECK(quant_can_dequant(type));
        CHECK(strstr(quant_supported_names(), quant_name(type)) != NULL);
        uint8_t buf[3 * 256];
        float y[3 * 256];
        for (size_t i = 0; i < 3 * bb; i++) buf[i] = (uint8_t)rng_u64();
        for (int b = 0; b < 3; b++) { /* finite f16 scales */
            uint8_t *p = buf + b * bb;
            const size_t off = type == QT_Q2_K   ? offsetof(block_q2_K, d)
                               : type == QT_Q3_K ? offsetof(block_q3_K, d)
                                                 : 0;
            put16(p + off, rand_scale(-1, 1));
            if (type == QT_Q2_K || type == QT_Q5_K) put16(p + off + 2, rand_scale(-1, 1));
        }
        quant_dequant_row(type, buf, y, 3 * blk);
        int bad = 0;
        for (int i = 0; i < 3 * blk; i++)
            bad += y[i] != element(type, buf + (size_t)(i / blk) * bb, i % blk);
        CHECKF(bad == 0, "%s: %d elements differ", quant_name(type), bad);
    }
    CHECK(!quant_can_dequant(QT_IQ2_XXS));
    CHECK(strstr(quant_supported_names(), "IQ2_XXS") == NULL);
}

static void weight_of(be_weight *w, uint32_t type, const uint8_t *data, int n_in, int n_out) {
    *w = (be_weight){data, type, n_in, n_out, quant_row_bytes(type, n_in), 0};
}

/* The backend: a Q4_K_M-style group (Q4_K, Q6_K, Q4_K sharing one input)
 * through matmul_n gives the bits of separate matmuls and of the scalar
 * kernels, whatever the row count or thread count (batch invariance), and
 * a shape no kernel takes still runs through the float fallback. */
static void test_backend_mixed_formats(void) {
    const int n = 512, n_out[3] = {50, 33, 64}, rows = 9;
    const uint32_t types[3] = {QT_Q4_K, QT_Q6_K, QT_Q4_K};
    uint8_t *data[3];
    be_weight w[3];
    const be_weight *wp[3];
    float *x = malloc(sizeof(float) * n * rows), *y[3], *y1[3];
    for (int i = 0; i < n * rows; i++) x[i] = rng_normalish();
    for (int i = 0; i < 3; i++) {
        data[i] = malloc(quant_row_bytes(types[i], n) * (size_t)n_out[i]);
        fill_weights(types[i], data[i], n, n_out[i]);
        weight_of(&w[i], types[i], data[i], n, n_out[i]);
        wp[i] = &w[i];
        y[i] = malloc(sizeof(float) * (size_t)n_out[i] * rows);
        y1[i] = malloc(sizeof(float) * (size_t)n_out[i] * rows);
    }
    char err[200];
    backend *b2 = backend_cpu_create(2, err, sizeof err),
            *b1 = backend_cpu_create(1, err, sizeof err);
    CHECK(b2 && b1);
    if (!b2 || !b1) return;
    b2->ops->matmul_n(b2, 3, wp, x, rows, y);
    acts a;
    make_acts(QT_Q4_K, x, n, rows, &a);
    for (int i = 0; i < 3; i++) {
        b1->ops->matmul(b1, &w[i], x, rows, y1[i]);
        CHECKF(!memcmp(y[i], y1[i], sizeof(float) * (size_t)n_out[i] * rows), "weight %d", i);
        for (int r = 0; r < rows; r++) { /* each row alone */
            b2->ops->matmul(b2, &w[i], x + (size_t)r * n, 1, y1[i]);
            CHECK(!memcmp(y[i] + (size_t)r * n_out[i], y1[i], sizeof(float) * (size_t)n_out[i]));
        }
        run_kernel(kern_scalar(), types[i], n, data[i], w[i].row_bytes, n_out[i], &a, rows, y1[i],
                   (size_t)n_out[i]);
        CHECK(!memcmp(y[i], y1[i], sizeof(float) * (size_t)n_out[i] * rows));
    }
    /* fallback: F16 rows of 200 elements (no kernel takes n % 32 != 0)
     * against the float dot of the dequantized weights */
    enum { FN = 200, FC = 20 };
    uint8_t f16w[FN * FC * 2];
    fill_weights(QT_F16, f16w, FN, FC);
    be_weight wf;
    weight_of(&wf, QT_F16, f16w, FN, FC);
    b2->ops->matmul(b2, &wf, x, rows, y1[0]);
    float wd[FN];
    int bad = 0;
    for (int c = 0; c < FC; c++) {
        quant_dequant_row(QT_F16, f16w + (size_t)c * wf.row_bytes, wd, FN);
        for (int r = 0; r < rows; r++) {
            double ref = 0, abs_sum = 0;
            for (int i = 0; i < FN; i++) {
                ref += (double)wd[i] * x[(size_t)r * FN + i];
                abs_sum += fabs((double)wd[i] * x[(size_t)r * FN + i]);
            }
            bad += !(fabs(y1[0][(size_t)r * FC + c] - ref) <= 1e-5 * abs_sum);
        }
    }
    CHECKF(bad == 0, "F16 fallback: %d outputs off", bad);
    free_acts(&a);
    backend_free(b1);
    backend_free(b2);
    for (int i = 0; i < 3; i++) {
        free(data[i]);
        free(y[i]);
        free(y1[i]);
    }
    free(x);
}

int main(void) {
    if (!kern_avx2()) printf("test_kquant: no AVX2 on this CPU: scalar checks only\n");
    if (!kern_vnni()) printf("test_kquant: no AVX-512 VNNI on this CPU\n");
    test_q8_K_quantizer();
    test_q8_K_tables();
    test_dequantizers();
    test_kernels_match_reference();
    test_backend_mixed_formats();
    return tu_finish("test_kquant");
}
