/*
 * kernels.h - the CPU backend's inner loops, each with a scalar reference
 * and SIMD variants chosen at run time from the CPU's features.
 *
 * Activations are quantized once per row per matmul into blk_q8 blocks that
 * carry their scale d and s = d * sum(qs), so a weight-block dot product is an
 * integer dot plus one or two multiplies (s serves Q4_1's min term and
 * Q4_0's offset of 8).
 *
 * vec_dot kernels take one weight row and up to KERN_MAX_ROWS activation
 * rows: the weight block is loaded and unpacked once and reused for every
 * activation row while it sits in registers.
 */
#ifndef CPU_KERNELS_H
#define CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

#define KERN_MAX_ROWS 4

typedef struct {
    float d;
    float s;
    int8_t qs[32];
} blk_q8;

/* out[r * out_stride] = dot(w_row, x[r * x_stride ...]) for r < n_rows */
typedef void (*kern_vec_dot_fn)(int n_blocks, const void *w_row, const blk_q8 *x,
                                size_t x_stride, int n_rows, float *out, size_t out_stride);
typedef void (*kern_quantize_fn)(const float *x, blk_q8 *y, int n);
typedef float (*kern_dot_f16_fn)(const uint16_t *a, const float *b, int n);
/* acc[i] += a * v[i] with v in f16 */
typedef void (*kern_axpy_f16_fn)(float a, const uint16_t *v, float *acc, int n);

typedef struct {
    const char *isa; /* "avx512vnni", "avx2", "scalar" */
    kern_quantize_fn quantize;
    kern_vec_dot_fn dot_q4_0;
    kern_vec_dot_fn dot_q4_1;
    kern_vec_dot_fn dot_q8_0;
    kern_dot_f16_fn dot_f16;
    kern_axpy_f16_fn axpy_f16;
} kern_table;

/* Best table for this CPU; ENGINE_ISA=scalar|avx2|avx512vnni forces one
 * (falls back when unsupported). */
const kern_table *kern_select(void);
const kern_table *kern_scalar(void);
/* NULL when the CPU lacks the features. */
const kern_table *kern_avx2(void);
const kern_table *kern_vnni(void);

/* Scalar references (also used by the SIMD tables for tails). */
void kern_quantize_scalar(const float *x, blk_q8 *y, int n);
void kern_dot_q4_0_scalar(int nb, const void *w, const blk_q8 *x, size_t xs, int nr, float *o, size_t os);
void kern_dot_q4_1_scalar(int nb, const void *w, const blk_q8 *x, size_t xs, int nr, float *o, size_t os);
void kern_dot_q8_0_scalar(int nb, const void *w, const blk_q8 *x, size_t xs, int nr, float *o, size_t os);
float kern_dot_f16_scalar(const uint16_t *a, const float *b, int n);
void kern_axpy_f16_scalar(float a, const uint16_t *v, float *acc, int n);

#endif
