/*
 * cpu_ops_ext.c - the CPU backend's ops for architectures beyond Llama
 * (backend.h states the contracts): LayerNorm with optional weight and
 * bias, adding a bias row, and GELU (optionally gated).
 *
 * Plain C loops the compiler vectorizes; rows are split over the pool with
 * cpu_par_rows (cpu_rowops.c) like the other row-wise ops.
 *
 * GELU follows ggml's CPU op (GGML_GELU_FP16): the value for |x| < 10 is
 * read from a table of gelu over every f16 input, rounded to f16, so the
 * input is rounded to f16 first. The table (64 Ki halfs) is built once per
 * process, on first use, under pthread_once.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/backend/cpu/cpu_internal.h"
#include "core/quant.h"

/* ---- LayerNorm ---- */
typedef struct {
    const float *x, *g, *b;
    int cols;
    float eps;
    float *y;
} ln_ctx;

/* mean and variance summed in double; then as ggml: y = (x - mean) * scale,
 * y *= g, y += b, each step rounded to float */
static void layernorm_rows(void *arg, int r0, int r1) {
    const ln_ctx *c = arg;
    const int n = c->cols;
    for (int r = r0; r < r1; r++) {
        const float *x = c->x + (size_t)r * n;
        float *y = c->y + (size_t)r * n;
        double sum = 0;
        for (int i = 0; i < n; i++) sum += x[i];
        const float mean = (float)(sum / n);
        double sum2 = 0;
        for (int i = 0; i < n; i++) {
            const float d = x[i] - mean;
            y[i] = d;
            sum2 += (double)(d * d);
        }
        const float scale = 1.0f / sqrtf((float)(sum2 / n) + c->eps);
        for (int i = 0; i < n; i++) y[i] *= scale;
        if (c->g)
            for (int i = 0; i < n; i++) y[i] *= c->g[i];
        if (c->b)
            for (int i = 0; i < n; i++) y[i] += c->b[i];
    }
}

void cpu_layernorm(backend *be, const float *x, const float *g, const float *b, int rows, int cols,
                   float eps, float *y) {
    ln_ctx c = {x, g, b, cols, eps, y};
    cpu_par_rows(impl_of(be), rows, 8, layernorm_rows, &c);
}

/* ---- bias ---- */
typedef struct {
    float *x;
    const float *b;
    int cols;
} bias_ctx;

static void bias_rows(void *arg, int r0, int r1) {
    const bias_ctx *c = arg;
    for (int r = r0; r < r1; r++) {
        float *x = c->x + (size_t)r * c->cols;
        for (int i = 0; i < c->cols; i++) x[i] += c->b[i];
    }
}

void cpu_add_bias(backend *be, float *x, const float *b, int rows, int cols) {
    bias_ctx c = {x, b, cols};
    cpu_par_rows(impl_of(be), rows, 8, bias_rows, &c);
}

/* ---- GELU ---- */
static uint16_t gelu_table[1 << 16];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static float gelu_f32(float x) {
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f, coef_a = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + coef_a * x * x)));
}

static void gelu_table_init(void) {
    for (uint32_t i = 0; i < 1u << 16; i++)
        gelu_table[i] = qt_f32_to_f16(gelu_f32(qt_f16_to_f32((uint16_t)i)));
}

typedef struct {
    const float *x, *up;
    float *out;
    size_t n;
} gelu_ctx;

enum { GELU_ROW = 1024 };

static void gelu_rows(void *arg, int r0, int r1) {
    const gelu_ctx *c = arg;
    size_t i1 = (size_t)r1 * GELU_ROW < c->n ? (size_t)r1 * GELU_ROW : c->n;
    for (size_t i = (size_t)r0 * GELU_ROW; i < i1; i++) {
        const float x = c->x[i];
        float v;
        if (x <= -10.0f) v = 0.0f;
        else if (x >= 10.0f) v = x;
        else v = qt_f16_to_f32(gelu_table[qt_f32_to_f16(x)]);
        c->out[i] = c->up ? v * c->up[i] : v;
    }
}

void cpu_gelu(backend *be, const float *x, const float *up, size_t n, float *out) {
    pthread_once(&gelu_once, gelu_table_init);
    gelu_ctx c = {x, up, out, n};
    size_t rows = (n + GELU_ROW - 1) / GELU_ROW;
    for (size_t r0 = 0; r0 < rows; r0 += 1u << 20) {
        /* cpu_par_rows takes int rows: blocks of at most 2^20 rows */
        gelu_ctx cc = c;
        cc.x += r0 * GELU_ROW;
        cc.up = c.up ? c.up + r0 * GELU_ROW : NULL;
        cc.out += r0 * GELU_ROW;
        cc.n = n - r0 * GELU_ROW;
        int nr = rows - r0 < (1u << 20) ? (int)(rows - r0) : 1 << 20;
        cpu_par_rows(impl_of(be), nr, 4, gelu_rows, &cc);
    }
}
