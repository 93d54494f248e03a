/*
 * kernels_scalar.c - scalar reference kernels and the run-time selection of
 * the kernel table. Every SIMD kernel must agree with these (tests compare
 * them on random data).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

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

void kern_dot_q4_0_scalar(int nb, const void *w, const blk_q8 *x, size_t xs, int nr, float *o,
                          size_t os) {
    const block_q4_0 *wb = w;
    for (int r = 0; r < nr; r++) {
        const blk_q8 *xr = x + (size_t)r * xs;
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += (wb[b].qs[j] & 0xf) * xr[b].qs[j] + (wb[b].qs[j] >> 4) * xr[b].qs[j + 16];
            float d = qt_f16_to_f32(wb[b].d);
            acc += d * (xr[b].d * (float)s - 8.0f * xr[b].s);
        }
        o[(size_t)r * os] = acc;
    }
}

void kern_dot_q4_1_scalar(int nb, const void *w, const blk_q8 *x, size_t xs, int nr, float *o,
                          size_t os) {
    const block_q4_1 *wb = w;
    for (int r = 0; r < nr; r++) {
        const blk_q8 *xr = x + (size_t)r * xs;
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += (wb[b].qs[j] & 0xf) * xr[b].qs[j] + (wb[b].qs[j] >> 4) * xr[b].qs[j + 16];
            acc += qt_f16_to_f32(wb[b].d) * xr[b].d * (float)s + qt_f16_to_f32(wb[b].m) * xr[b].s;
        }
        o[(size_t)r * os] = acc;
    }
}

void kern_dot_q8_0_scalar(int nb, const void *w, const blk_q8 *x, size_t xs, int nr, float *o,
                          size_t os) {
    const block_q8_0 *wb = w;
    for (int r = 0; r < nr; r++) {
        const blk_q8 *xr = x + (size_t)r * xs;
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            int s = 0;
            for (int j = 0; j < 32; j++) s += wb[b].qs[j] * xr[b].qs[j];
            acc += qt_f16_to_f32(wb[b].d) * xr[b].d * (float)s;
        }
        o[(size_t)r * os] = acc;
    }
}

float kern_dot_f16_scalar(const uint16_t *a, const float *b, int n) {
    float acc = 0;
    for (int i = 0; i < n; i++) acc += qt_f16_to_f32(a[i]) * b[i];
    return acc;
}

void kern_axpy_f16_scalar(float a, const uint16_t *v, float *acc, int n) {
    for (int i = 0; i < n; i++) acc[i] += a * qt_f16_to_f32(v[i]);
}

static const kern_table SCALAR = {"scalar",           kern_quantize_scalar, kern_dot_q4_0_scalar,
                                  kern_dot_q4_1_scalar, kern_dot_q8_0_scalar, kern_dot_f16_scalar,
                                  kern_axpy_f16_scalar};

const kern_table *kern_scalar(void) { return &SCALAR; }

const kern_table *kern_select(void) {
    const char *force = getenv("ENGINE_ISA");
    if (force && strcmp(force, "scalar") == 0) return &SCALAR;
    if (force && strcmp(force, "avx2") == 0 && kern_avx2()) return kern_avx2();
    if (kern_vnni()) return kern_vnni();
    if (kern_avx2()) return kern_avx2();
    return &SCALAR;
}
