/*
 * kernels_dispatch.c - the kernel tables (which kernel each ISA uses for
 * each op) and the run-time choice between them from the CPU's features
 * and ENGINE_ISA. The top of the kernel files: it names kernels from all
 * of them, and none of them calls back into it.
 */
#include <stdlib.h>
#include <string.h>

#include "core/backend/cpu/kernels.h"
#include "core/backend/cpu/kernels_x86.h"

static const kern_table SCALAR = {
    .isa = "scalar",
    .quantize = kern_quantize_scalar,
    .gemm_q4_0 = kern_gemm_q4_0_scalar,
    .gemm_q4_1 = kern_gemm_q4_1_scalar,
    .gemm_q8_0 = kern_gemm_q8_0_scalar,
    .gemm_q4_0_fast = kern_gemm_q4_0_fast_scalar,
    .gemm_q4_1_fast = kern_gemm_q4_1_fast_scalar,
    .gemm_q8_0_fast = kern_gemm_q8_0_fast_scalar,
    .quantize_q8k = kern_quantize_q8k_scalar,
    .gemm_q5_0 = kern_gemm_q5_0_scalar,
    .gemm_q5_1 = kern_gemm_q5_1_scalar,
    .gemm_iq4_nl = kern_gemm_iq4_nl_scalar,
    .gemm_q4_k = kern_gemm_q4_k_scalar,
    .gemm_q5_k = kern_gemm_q5_k_scalar,
    .gemm_q6_k = kern_gemm_q6_k_scalar,
    .gemm_q2_k = kern_gemm_q2_k_scalar,
    .gemm_q3_k = kern_gemm_q3_k_scalar,
    .gemm_iq4_xs = kern_gemm_iq4_xs_scalar,
    .gemm_f32 = kern_gemm_f32_scalar,
    .gemm_f16 = kern_gemm_f16_scalar,
    .gemm_bf16 = kern_gemm_bf16_scalar,
    .dot_f16 = kern_dot_f16_scalar,
    .dot_f16_x4 = kern_dot_f16_x4_scalar,
    .axpy_f16 = kern_axpy_f16_scalar,
    .silu_mul = kern_silu_mul_scalar,
    .softmax_exp = kern_softmax_exp_scalar,
    .rope_rows = kern_rope_scalar,
    .attn_f16 = kern_attn_f16_scalar,
    .attn_f16_row = kern_attn_f16_row_scalar,
    .f32_to_f16 = kern_f32_to_f16_scalar,
    .rmsnorm = kern_rmsnorm_scalar,
};

const kern_table *kern_scalar(void) { return &SCALAR; }

const kern_table *kern_select(void) {
    const char *force = getenv("ENGINE_ISA");
    if (force && strcmp(force, "scalar") == 0) return &SCALAR;
    if (force && strcmp(force, "avx2") == 0 && kern_avx2()) return kern_avx2();
    if (kern_vnni()) return kern_vnni();
    if (kern_avx2()) return kern_avx2();
    return &SCALAR;
}

#if KERN_X86
/* The kernels of the formats beyond Q4_0 / Q4_1 / Q8_0, which both x86
 * tables take from the AVX2 files (none has an AVX-512 variant yet). */
#define AVX2_OTHER_FORMATS                                                                         \
    .quantize_q8k = kern_quantize_q8k_avx2, .gemm_q5_0 = kern_gemm_q5_0_avx2,                      \
    .gemm_q5_1 = kern_gemm_q5_1_avx2, .gemm_iq4_nl = kern_gemm_iq4_nl_avx2,                        \
    .gemm_q4_k = kern_gemm_q4_k_avx2, .gemm_q5_k = kern_gemm_q5_k_avx2,                            \
    .gemm_q6_k = kern_gemm_q6_k_avx2, .gemm_q2_k = kern_gemm_q2_k_avx2,                            \
    .gemm_q3_k = kern_gemm_q3_k_avx2, .gemm_iq4_xs = kern_gemm_iq4_xs_avx2,                        \
    .gemm_f32 = kern_gemm_f32_avx2, .gemm_f16 = kern_gemm_f16_avx2,                                \
    .gemm_bf16 = kern_gemm_bf16_avx2

static const kern_table AVX2 = {
    .isa = "avx2",
    .quantize = kern_quantize_avx2,
    .gemm_q4_0 = kern_gemm_q4_0_avx2,
    .gemm_q4_1 = kern_gemm_q4_1_avx2,
    .gemm_q8_0 = kern_gemm_q8_0_avx2,
    .gemm_q4_0_fast = kern_gemm_q4_0_fast_avx2,
    .gemm_q4_1_fast = kern_gemm_q4_1_fast_avx2,
    .gemm_q8_0_fast = kern_gemm_q8_0_fast_avx2,
    AVX2_OTHER_FORMATS,
    .dot_f16 = kern_dot_f16_avx2,
    .dot_f16_x4 = kern_dot_f16_x4_avx2,
    .axpy_f16 = kern_axpy_f16_avx2,
    .silu_mul = kern_silu_mul_avx2,
    .softmax_exp = kern_softmax_exp_avx2,
    .rope_rows = kern_rope_avx2,
    .attn_f16 = kern_attn_f16_avx2,
    .attn_f16_row = kern_attn_f16_row_avx2,
    .f32_to_f16 = kern_f32_to_f16_avx2,
    .rmsnorm = kern_rmsnorm_scalar,
};
static const kern_table VNNI = {
    .isa = "avx512vnni",
    .quantize = kern_quantize_avx2,
    .gemm_q4_0 = kern_gemm_q4_0_avx512,
    .gemm_q4_1 = kern_gemm_q4_1_avx512,
    .gemm_q8_0 = kern_gemm_q8_0_avx512,
    .gemm_q4_0_fast = kern_gemm_q4_0_fast_avx512,
    .gemm_q4_1_fast = kern_gemm_q4_1_fast_avx512,
    .gemm_q8_0_fast = kern_gemm_q8_0_fast_avx512,
    .gemm_q4_0_packed = kern_gemm_q4_0_packed_avx512,
    .gemm_q4_1_packed = kern_gemm_q4_1_packed_avx512,
    .gemm_q8_0_packed = kern_gemm_q8_0_packed_avx512,
    .gemm_q4_0_packed_exact = kern_gemm_q4_0_packed_exact_avx512,
    .gemm_q4_1_packed_exact = kern_gemm_q4_1_packed_exact_avx512,
    .gemm_q8_0_packed_exact = kern_gemm_q8_0_packed_exact_avx512,
    AVX2_OTHER_FORMATS,
    .dot_f16 = kern_dot_f16_avx2,
    .dot_f16_x4 = kern_dot_f16_x4_avx2,
    .axpy_f16 = kern_axpy_f16_avx2,
    .silu_mul = kern_silu_mul_avx512,
    .softmax_exp = kern_softmax_exp_avx512,
    .rope_rows = kern_rope_avx2,
    .attn_f16 = kern_attn_f16_avx512,
    .attn_f16_row = kern_attn_f16_row_avx512,
    .f32_to_f16 = kern_f32_to_f16_avx2,
    .rmsnorm = kern_rmsnorm_avx512,
};

const kern_table *kern_avx2(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return &AVX2;
    return NULL;
}

const kern_table *kern_vnni(void) {
    __builtin_cpu_init();
    if (kern_avx2() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return &VNNI;
    return NULL;
}
#else
const kern_table *kern_avx2(void) { return NULL; }
const kern_table *kern_vnni(void) { return NULL; }
#endif
