/*
 * kernels_x86.h - the AVX2 and AVX-512 VNNI kernels that kernels_dispatch.c
 * puts in its tables (internal to core/backend/cpu). Each implements the
 * kernels.h type of the same name; the AVX-512 ones need the CPU features
 * kern_vnni() checks, the AVX2 ones those of kern_avx2(). They exist only
 * where KERN_X86 is 1.
 */
#ifndef CPU_KERNELS_X86_H
#define CPU_KERNELS_X86_H

#include "core/backend/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define KERN_X86 1
#else
#define KERN_X86 0
#endif

#define KERN_X86_GEMM(NAME)                                                                        \
    void NAME(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs, int nr,        \
              float *y, size_t ys)
#define KERN_X86_GEMM_PACKED(NAME)                                                                 \
    void NAME(int nb, const void *wp, int nc, const blk_q8 *x, size_t xs, const int32_t *xc,       \
              int nr, float *y, size_t ys)

/* gemm_avx2.c */
void kern_quantize_avx2(const float *x, blk_q8 *y, int n);
KERN_X86_GEMM(kern_gemm_q4_0_avx2);
KERN_X86_GEMM(kern_gemm_q4_1_avx2);
KERN_X86_GEMM(kern_gemm_q8_0_avx2);
KERN_X86_GEMM(kern_gemm_q4_0_fast_avx2);
KERN_X86_GEMM(kern_gemm_q4_1_fast_avx2);
KERN_X86_GEMM(kern_gemm_q8_0_fast_avx2);
/* gemm_kquant_avx2.c (also the VNNI table's) */
void kern_quantize_q8k_avx2(const float *x, block_q8_K *y, int n);
KERN_X86_GEMM(kern_gemm_q5_0_avx2);
KERN_X86_GEMM(kern_gemm_q5_1_avx2);
KERN_X86_GEMM(kern_gemm_iq4_nl_avx2);
void kern_gemm_q4_k_avx2(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                         int nr, float *y, size_t ys);
void kern_gemm_q5_k_avx2(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                         int nr, float *y, size_t ys);
void kern_gemm_q6_k_avx2(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                         int nr, float *y, size_t ys);
void kern_gemm_q2_k_avx2(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                         int nr, float *y, size_t ys);
void kern_gemm_q3_k_avx2(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                         int nr, float *y, size_t ys);
void kern_gemm_iq4_xs_avx2(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_f32_avx2(int n, const void *w, size_t ws, int nc, const float *x, size_t xs, int nr,
                        float *y, size_t ys);
void kern_gemm_f16_avx2(int n, const void *w, size_t ws, int nc, const float *x, size_t xs, int nr,
                        float *y, size_t ys);
void kern_gemm_bf16_avx2(int n, const void *w, size_t ws, int nc, const float *x, size_t xs, int nr,
                         float *y, size_t ys);
/* gemm_avx512.c */
KERN_X86_GEMM(kern_gemm_q4_0_avx512);
KERN_X86_GEMM(kern_gemm_q4_1_avx512);
KERN_X86_GEMM(kern_gemm_q8_0_avx512);
KERN_X86_GEMM(kern_gemm_q4_0_fast_avx512);
KERN_X86_GEMM(kern_gemm_q4_1_fast_avx512);
KERN_X86_GEMM(kern_gemm_q8_0_fast_avx512);
/* gemm_packed_avx512.c */
KERN_X86_GEMM_PACKED(kern_gemm_q4_0_packed_avx512);
KERN_X86_GEMM_PACKED(kern_gemm_q4_1_packed_avx512);
KERN_X86_GEMM_PACKED(kern_gemm_q8_0_packed_avx512);
KERN_X86_GEMM_PACKED(kern_gemm_q4_0_packed_exact_avx512);
KERN_X86_GEMM_PACKED(kern_gemm_q4_1_packed_exact_avx512);
KERN_X86_GEMM_PACKED(kern_gemm_q8_0_packed_exact_avx512);
/* attn_avx2.c */
float kern_dot_f16_avx2(const uint16_t *a, const float *b, int n);
float kern_dot_f16_x4_avx2(const uint16_t *a, const float *b, int n);
void kern_axpy_f16_avx2(float a, const uint16_t *v, float *acc, int n);
double kern_softmax_exp_avx2(float *x, int n, float max);
void kern_attn_f16_avx2(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                        const float *q, int nq, int hd, float scale, int single, float *work,
                        float *out);
void kern_attn_f16_row_avx2(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                            const size_t *off, int n_ctx, const float *q, int nq, int hd,
                            float scale, int single, float *work, float *out);
/* attn_avx512.c */
double kern_softmax_exp_avx512(float *x, int n, float max);
void kern_attn_f16_avx512(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                          const float *q, int nq, int hd, float scale, int single, float *work,
                          float *out);
void kern_attn_f16_row_avx512(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                              const size_t *off, int n_ctx, const float *q, int nq, int hd,
                              float scale, int single, float *work, float *out);
/* elementwise_x86.c */
void kern_f32_to_f16_avx2(const float *x, uint16_t *y, int n);
void kern_silu_mul_avx2(const float *g, const float *u, float *out, int n);
void kern_rope_avx2(float *x, const float *cs, int n_heads, int head_dim, int half);
void kern_rmsnorm_avx512(const float *x, const float *g, int rows, int cols, float eps, float *y);
void kern_silu_mul_avx512(const float *g, const float *u, float *out, int n);

#endif
