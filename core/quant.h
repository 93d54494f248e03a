/*
 * quant.h - tensor element formats (the ggml type codes used by GGUF).
 *
 * Quantized formats are plain block structs: a block of QK elements carries
 * its scale(s) and packed integers. Every format has a scalar reference
 * dequantizer here; SIMD kernels elsewhere are tested against these.
 *
 * Thread-safety: all functions are pure.
 */
#ifndef ENGINE_QUANT_H
#define ENGINE_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_IQ2_XXS = 16,
    QT_IQ2_XS = 17,
    QT_IQ3_XXS = 18,
    QT_IQ1_S = 19,
    QT_IQ4_NL = 20,
    QT_IQ3_S = 21,
    QT_IQ2_S = 22,
    QT_IQ4_XS = 23,
    QT_I8 = 24,
    QT_I16 = 25,
    QT_I32 = 26,
    QT_I64 = 27,
    QT_F64 = 28,
    QT_IQ1_M = 29,
    QT_BF16 = 30,
    QT_TQ1_0 = 34,
    QT_TQ2_0 = 35,
    QT_COUNT = 40
} quant_type;

typedef uint16_t qt_f16;
typedef uint16_t qt_bf16;

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256

typedef struct {
    qt_f16 d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;
typedef struct {
    qt_f16 d, m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
typedef struct {
    qt_f16 d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
typedef struct {
    qt_f16 d, m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
typedef struct {
    qt_f16 d;
    int8_t qs[QK8_0];
} block_q8_0;
/* Activation format: s = d * sum(qs), which serves Q4_1's min term. */
typedef struct {
    qt_f16 d, s;
    int8_t qs[QK8_1];
} block_q8_1;
typedef struct {
    qt_f16 d, dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    qt_f16 d;
} block_q6_K;
typedef struct {
    qt_f16 d, dmin;
    uint8_t scales[12]; /* 8 six-bit (scale, min) pairs, packed as Q4_K's */
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t scales[QK_K / 16]; /* low nibble scale, high nibble min */
    uint8_t qs[QK_K / 4];
    qt_f16 d, dmin;
} block_q2_K;
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12]; /* 16 six-bit scales, biased by 32 */
    qt_f16 d;
} block_q3_K;
#define QK4_NL 32
typedef struct {
    qt_f16 d;
    uint8_t qs[QK4_NL / 2]; /* indices into the non-linear table */
} block_iq4_nl;
typedef struct {
    qt_f16 d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;
/* Activation format of the K-quant dots (ggml's): d is a float, bsums[i]
 * the sum of codes 16i .. 16i + 15. */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;

/* Name ("Q4_1"), elements per block and bytes per block; block size 0 for
 * codes the engine does not know. */
const char *quant_name(uint32_t type);
int quant_block_elems(uint32_t type);
size_t quant_block_bytes(uint32_t type);
/* Bytes of a row of n elements; 0 when n is not a multiple of the block or
 * the type is unknown. */
size_t quant_row_bytes(uint32_t type, int64_t n);
/* Whether quant_dequant_row supports the type. */
int quant_can_dequant(uint32_t type);
/* The names of the types quant_can_dequant accepts, ", "-separated, for
 * error messages ("F32, F16, ..."); a static string. */
const char *quant_supported_names(void);

/* Scalar reference: dequantize n elements (a multiple of the block size). */
void quant_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

/* Scalar reference quantizers (tests, activations). n multiple of 32. */
void quant_quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n);
void quant_quantize_row_q8_1(const float *x, block_q8_1 *y, int64_t n);
void quant_quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t n);
void quant_quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t n);
/* ggml's quantize_row_q8_K_ref: per 256 values, d = max / -127 with max the
 * value of largest magnitude, codes round(x / d) (nearest even) capped at
 * 127, bsums of 16; an all-zero block has d = 0 and zero codes. n multiple
 * of 256. */
void quant_quantize_row_q8_K(const float *x, block_q8_K *y, int64_t n);

float qt_f16_to_f32(qt_f16 h);
qt_f16 qt_f32_to_f16(float f);
float qt_bf16_to_f32(qt_bf16 h);
qt_bf16 qt_f32_to_bf16(float f);

#endif
