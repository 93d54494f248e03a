/*
 * kernels.h - the CPU backend's inner loops, each with a scalar reference
 * and SIMD variants chosen at run time from the CPU's features.
 *
 * Activations are quantized once per row per matmul into blk_q8 blocks that
 * carry their scale d and s = d * sum(qs), so a weight-block dot product is an
 * integer dot plus one or two multiplies (s serves Q4_1's min term and
 * Q4_0's offset of 8).
 *
 * GEMM kernels take a tile of weight rows and activation rows, so each
 * weight block is loaded and unpacked once and reused for every activation
 * row while it sits in registers. Which outputs share a vector register is
 * the kernel's choice (8 lanes of one output, or one lane of 16 columns):
 * every output still gets the reference's operations in the reference's
 * order, so all variants agree bit for bit (test_kernels).
 *
 * Files, each calling only those listed after it (no cycles):
 *   kernels_dispatch.c   the tables (SCALAR, AVX2, VNNI) and kern_select
 *   gemm_avx512.c, gemm_packed_avx512.c, attn_avx512.c, gemm_avx2.c,
 *   attn_avx2.c, elementwise_x86.c
 *                        the x86 kernels (kernels_x86.h), per-function
 *                        target attributes; they share static inline helpers
 *                        through x86_simd.h, gemm_tiles_x86.h and
 *                        gemm_cl_avx512.h, and may call the scalar kernels
 *                        (attn_avx512.c also the AVX2 f16 dots)
 *   gemm_kquant_avx2.c   AVX2 GEMMs of the other weight formats (K-quants,
 *                        Q5_0, Q5_1, IQ4_NL, F32, F16, BF16)
 *   kernels_scalar.c, gemm_kquant_scalar.c
 *                        the scalar references, calling no other kernel file
 *   weight_pack.c        the packed weight layout (plain C)
 */
#ifndef CPU_KERNELS_H
#define CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/quant.h"

#define KERN_MAX_ROWS 4

typedef struct {
    float d;
    float s;
    int8_t qs[32];
} blk_q8;

/* y[r * ys + c] = dot(weight row c, activation row r) for c < nc, r < nr.
 * Weight rows are ws bytes apart, activation rows xs blocks apart; every
 * row has nb blocks. */
typedef void (*kern_gemm_fn)(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                             int nr, float *y, size_t ys);
/*
 * Packed weights (both numerics). A matrix's columns in groups of
 * KERN_PACK_COLS, each group's blocks contiguous, each block laid out for
 * the column-lane kernels: codes interleaved in dwords (dword c of 64-byte
 * row k = bytes 4k..4k+3 of column c's block codes), then the scales:
 *   Q4_0: qs[4][64], float d[16]                       320 bytes (18 x 16 = 288 unpacked)
 *   Q4_1: qs[4][64], f16 d[16], f16 m[16]              320 bytes (same as unpacked)
 *   Q8_0: qs[8][64], float d[16], int32 -128*sum(qs)   640 bytes (34 x 16 = 544 unpacked)
 * A group with fewer than 16 columns repeats its last one. The packed
 * kernels compute exactly the results of the unpacked kernels of their
 * numerics: gemm_*_packed those of gemm_*_fast, gemm_*_packed_exact those
 * of the exact gemm_* (llama.cpp's bits). The exact ones do not read the
 * Q8_0 correction word.
 */
#define KERN_PACK_COLS 16
/* Bytes of one packed group of nb blocks; 0 when the type has no packing. */
size_t kern_pack_group_bytes(uint32_t type, int nb);
/* Pack columns [0, nc) (nc <= 16, rows ws bytes apart) into out. */
void kern_pack_group(uint32_t type, int nb, const void *w, size_t ws, int nc, void *out);
/* The inverse for one column c < 16 of a packed group: its row of nb blocks
 * in the original format, byte for byte (scales stored as float are f16
 * values, which convert back exactly). */
void kern_unpack_column(uint32_t type, int nb, const void *group, int c, void *row);
/* y[r * ys + c] for c < nc (<= 16), r < nr, from one packed group wp.
 * xc: kern_q8_corr of x (the block at x + i has its 8 words at xc + 8 * i),
 * which the exact Q8_0 kernels read and the others ignore (may be NULL). */
typedef void (*kern_gemm_packed_fn)(int nb, const void *wp, int nc, const blk_q8 *x, size_t xs,
                                    const int32_t *xc, int nr, float *y, size_t ys);
/* For each of n blocks, corr[8 * i + l] = -128 * (sum of codes 4l .. 4l + 3 of x[i]):
 * what the exact Q8_0 kernels, which bias the weight codes by 128 to make
 * them vpdpbusd's unsigned operand, subtract from each 4-code dot. Computed
 * once per matmul rather than once per 16 columns, and outside the kernel's
 * dependency chains, where it would lengthen them. */
void kern_q8_corr(const blk_q8 *x, size_t n, int32_t *corr);
typedef void (*kern_quantize_fn)(const float *x, blk_q8 *y, int n);
/*
 * Weights in the K-quant formats (Q2_K .. Q6_K, IQ4_XS: 256-element
 * blocks) dot against activations quantized to block_q8_K
 * (quant_quantize_row_q8_K); the signature is kern_gemm_fn's with nb
 * counted in 256-element blocks. Float weights (F32, F16, BF16) take float
 * activation rows of n elements (n a multiple of 32, rows xs floats apart)
 * that the caller has rounded to the weight's precision
 * (kern_round_activations), so an F16 weight's dot is the product of two
 * f16 values, as in ggml, which converts src1 to f16. The arithmetic is in
 * the numerics contract below.
 */
typedef void (*kern_gemm_k_fn)(int nb, const void *w, size_t ws, int nc, const block_q8_K *x,
                               size_t xs, int nr, float *y, size_t ys);
typedef void (*kern_gemm_f_fn)(int n, const void *w, size_t ws, int nc, const float *x, size_t xs,
                               int nr, float *y, size_t ys);
/* quant_quantize_row_q8_K (n a multiple of 256); every variant gives its bits. */
typedef void (*kern_quantize_k_fn)(const float *x, block_q8_K *y, int n);
/* y = x rounded to f16 (type QT_F16) or bf16 (QT_BF16) precision, nearest
 * even, kept as float; a copy for QT_F32. */
void kern_round_activations(uint32_t type, const float *x, float *y, int n);
typedef float (*kern_dot_f16_fn)(const uint16_t *a, const float *b, int n);
/* The same dot with ggml_vec_dot_f16's shape: 4 accumulators of 16 lanes
 * over steps of 64, reduced (a0 + a2) + (a1 + a3) then as a tree; a tail
 * beyond the last multiple of 64 is added in double. llama.cpp uses this
 * shape when a step has a single token and the tiled one otherwise. */
/* acc[i] = fma(a, v[i], acc[i]) with v in f16 */
typedef void (*kern_axpy_f16_fn)(float a, const uint16_t *v, float *acc, int n);
/* y = x / rms(x) * g for each of rows rows of cols floats; the sum of
 * squares is taken as ggml does, float products added in double in order.
 * y may alias x. */
typedef void (*kern_rmsnorm_fn)(const float *x, const float *g, int rows, int cols, float eps,
                                float *y);
/* y[i] = x[i] rounded to f16 (nearest even; as qt_f32_to_f16, NaN payloads aside) */
typedef void (*kern_f32_to_f16_fn)(const float *x, uint16_t *y, int n);
/* out[i] = silu(g[i]) * u[i] */
typedef void (*kern_silu_mul_fn)(const float *g, const float *u, float *out, int n);
/* Rotate the first 2*half dims of each head by the (cos, sin) pairs in cs:
 * x0' = fma(x0, c, -(x1 * s)), x1' = fma(x0, s, x1 * c) (ggml's rounding). */
typedef void (*kern_rope_fn)(float *x, const float *cs, int n_heads, int head_dim, int half);
/* x[i] = exp(x[i] - max) in place; returns the sum (see kern_exp_ref). */
typedef double (*kern_softmax_exp_fn)(float *x, int n, float max);
/*
 * Attention of one query row for nq query heads that share one KV head, over
 * an f16 cache: position p's K (V) head vector starts off[p] bytes after k
 * (v). q holds nq * hd f32 values (rounded to f16 first, as ggml's f16
 * matmuls do), out receives nq * hd. `single` selects llama.cpp's shapes for
 * a sequence with one row in the step (dot_f16_x4 for the scores, 64 V
 * lanes reduced by kern_reduce64) against several rows (dot_f16, 16 lanes,
 * kern_tree16); the V sum keeps lane p % lanes for position p, so the result
 * does not depend on where positions are stored. work holds at least
 * kern_attn_work(n_ctx, hd, nq) floats.
 */
typedef void (*kern_attn_f16_fn)(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                                 const float *q, int nq, int hd, float scale, int single,
                                 float *work, float *out);
/* The same for nkv KV heads of one row: KV head i's K (V) vector of
 * position p at k (v) + i * kv_stride + off[p], its nq query heads at
 * q + i * nq * hd, results at out + i * nq * hd; bit for bit the results of
 * nkv attn_f16 calls. work: kern_attn_work(n_ctx, hd, nkv * nq) floats. */
typedef void (*kern_attn_f16_row_fn)(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                                     const size_t *off, int n_ctx, const float *q, int nq, int hd,
                                     float scale, int single, float *work, float *out);

typedef struct {
    const char *isa; /* "avx512vnni", "avx2", "scalar" */
    kern_quantize_fn quantize;
    kern_gemm_fn gemm_q4_0;
    kern_gemm_fn gemm_q4_1;
    kern_gemm_fn gemm_q8_0;
    /* the "fast" numerics (see the contract below) */
    kern_gemm_fn gemm_q4_0_fast;
    kern_gemm_fn gemm_q4_1_fast;
    kern_gemm_fn gemm_q8_0_fast;
    /* fast numerics on packed weights; NULL where the ISA has none */
    kern_gemm_packed_fn gemm_q4_0_packed;
    kern_gemm_packed_fn gemm_q4_1_packed;
    kern_gemm_packed_fn gemm_q8_0_packed;
    /* exact numerics on the same packed weights; NULL where the ISA has none */
    kern_gemm_packed_fn gemm_q4_0_packed_exact;
    kern_gemm_packed_fn gemm_q4_1_packed_exact;
    kern_gemm_packed_fn gemm_q8_0_packed_exact;
    /* other formats, one numerics (below); the VNNI table reuses AVX2's */
    kern_quantize_k_fn quantize_q8k;
    kern_gemm_fn gemm_q5_0;
    kern_gemm_fn gemm_q5_1;
    kern_gemm_fn gemm_iq4_nl;
    kern_gemm_k_fn gemm_q4_k;
    kern_gemm_k_fn gemm_q5_k;
    kern_gemm_k_fn gemm_q6_k;
    kern_gemm_k_fn gemm_q2_k;
    kern_gemm_k_fn gemm_q3_k;
    kern_gemm_k_fn gemm_iq4_xs;
    kern_gemm_f_fn gemm_f32;
    kern_gemm_f_fn gemm_f16;
    kern_gemm_f_fn gemm_bf16;
    kern_dot_f16_fn dot_f16;
    kern_dot_f16_fn dot_f16_x4;
    kern_axpy_f16_fn axpy_f16;
    kern_silu_mul_fn silu_mul;
    kern_softmax_exp_fn softmax_exp;
    kern_rope_fn rope_rows;
    kern_attn_f16_fn attn_f16;
    kern_attn_f16_row_fn attn_f16_row;
    kern_f32_to_f16_fn f32_to_f16;
    kern_rmsnorm_fn rmsnorm;
} kern_table;

/*
 * Numerics contract. The reference data come from llama.cpp, whose results
 * on this model are chaotic at the bit level (a one-ulp change can flip an
 * 8-bit activation rounding and move a logit by 0.1). So the kernels follow
 * ggml's arithmetic exactly where it is cheap to do so:
 *   - exp is ggml's vectorized expf (a degree-5 polynomial, scaled by 2^n);
 *   - f16 dot products of length multiple of 16 accumulate in 16 lanes with
 *     fused multiply-adds and reduce the lanes as a 16 -> 8 -> 4 -> 2 -> 1 tree;
 *   - softmax sums reduce each run of 16 values by the same tree and add the
 *     runs in double.
 * kern_tree16 is that reduction.
 *
 * Quantized GEMM has two numerics modes, chosen per backend at run time:
 *   - exact (gemm_q4_0, gemm_q4_1, gemm_q8_0): ggml's vec_dot per output:
 *     8 float lanes, lane l += (float)(int dot of bytes 4l..4l+3 of the
 *     block) * (dw * dx) by fma, the lanes summed as an AVX hsum, plus the
 *     min/offset term mw * sx summed in a separate float; bit-identical to
 *     llama.cpp.
 *   - fast (gemm_*_fast): for output y[r][c] over blocks b = 0, 1, ... in
 *     order, with dw, mw the weight block's scale and min, dx, sx the
 *     activation block's d and s (blk_q8):
 *         isum = exact int32 dot of the block's 32 weight codes with the 32
 *                activation codes (Q4_0, Q4_1: the unsigned nibbles 0..15;
 *                Q8_0: the signed bytes)
 *         acc   = fmaf(dw * dx, (float)isum, acc)      (dw * dx rounded first)
 *         acc_m = fmaf(mw, sx, acc_m)                  (Q4_1: mw = m;
 *                                                       Q4_0: mw = -8 * dw)
 *     both accumulators starting at +0; y = acc + acc_m (Q8_0: y = acc).
 *     (float)isum is exact (|isum| < 2^24). One float chain per output
 *     instead of eight: per 16 outputs and block the AVX-512 kernel needs 8
 *     dpbusd plus a convert, a multiply and one or two fmas, about half the
 *     work of the exact kernels. Results differ from llama.cpp's by float
 *     rounding only (test_model_ref reports by how much).
 * In both modes every SIMD variant is bit-identical to the scalar reference
 * (test_kernels), and an output's value does not depend on how many rows
 * or columns a call computes or how calls are split between threads, so a
 * sequence's results do not depend on what it is batched with.
 */
/*
 * The other weight formats have one numerics each, in both modes: that of
 * llama.cpp's AVX2 vec_dot kernels (the same operations in the same order,
 * so the same bits, for Q5_0, Q5_1, Q2_K .. Q6_K and IQ4_XS, checked against
 * ggml's functions outside the test suite; IQ4_NL pairs blocks differently,
 * and llama.cpp runs repacked Q4_K and IQ4_NL with other arithmetic on
 * AVX2 anyway), with every output's arithmetic spelled out here
 * (test_kquant checks every SIMD variant bit for bit against the scalar
 * reference, and the reference against a dequantize + double dot):
 *   - Q5_0 and IQ4_NL as exact Q8_0 and Q5_1 as exact Q4_1 above (the
 *     signed codes q - 16 or the table values; the unsigned 5-bit codes
 *     with the min term m * sx).
 *   - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS against Q8_K: per 256-block,
 *     8 int32 lanes; lane l gets, for each run of 32 codes,
 *     scale(sub-block) * (sum of the code products at positions 4l .. 4l + 3
 *     of the run) (Q4_K, Q5_K: unsigned codes and the 6-bit scale of the
 *     32-run; Q6_K: the 6-bit code and the int8 scale of each 16, and the
 *     lane then less 32 * (sc[2l] * bsums[2l] + sc[2l+1] * bsums[2l+1]), which
 *     makes the codes code - 32; Q3_K: the 2-bit
 *     code, minus 4 where its hmask bit is clear, and its 6-bit scale - 32
 *     of each 16; Q2_K: the 2-bit code and the 4-bit scale of each 16;
 *     IQ4_XS: the table value and the 6-bit scale - 32 of the 32-run); then
 *     acc[l] = fmaf(x.d * f16(w.d), (float)lane, acc[l]). Q2_K first adds
 *     its min term to the same lanes, acc[l] = fmaf(-(x.d * f16(w.dmin)),
 *     (float)(min[2l] * bsums[2l] + min[2l+1] * bsums[2l+1]), acc[l]), with
 *     its 4-bit min of each 16. Q4_K keeps 4 lanes of the min term:
 *     m[k] = min[2k] * S[2k] + min[2k+1] * S[2k+1] with S[j] the sum of
 *     activation codes of sub-block j (from bsums), and
 *     accm[k] = fmaf(-(x.d * f16(w.dmin)), (float)m[k], accm[k]); Q5_K one
 *     float, summs = fmaf(-(x.d * f16(w.dmin)), (float)(m[0] + .. + m[3]),
 *     summs). y = hsum8(acc) (Q4_K: + ((accm[0] + accm[2]) + (accm[1] +
 *     accm[3])); Q5_K: + summs), where hsum8 adds lanes (l, l + 4), then
 *     (0 + 2) + (1 + 3).
 *   - F32, F16, BF16: per output 32 float lanes, lane i % 32 accumulating
 *     fmaf(w[i], x[i], .) in order of i; then per l < 8
 *     (a[l] + a[l + 16]) + (a[l + 8] + a[l + 24]), and those 8 by hsum8.
 * Integer lanes are exact (no int16 saturation: |code| <= 63, |x| <= 127).
 */
float kern_tree16(const float *lanes);
float kern_exp_ref(float x);

/* Best table for this CPU; ENGINE_ISA=scalar|avx2|avx512vnni forces one
 * (falls back when unsupported). */
const kern_table *kern_select(void);
const kern_table *kern_scalar(void);
/* NULL when the CPU lacks the features. */
const kern_table *kern_avx2(void);
const kern_table *kern_vnni(void);

/* Scalar references (also used by the SIMD tables for tails). */
void kern_quantize_scalar(const float *x, blk_q8 *y, int n);
void kern_gemm_q4_0_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q4_1_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q8_0_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q4_0_fast_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                                size_t xs, int nr, float *y, size_t ys);
void kern_gemm_q4_1_fast_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                                size_t xs, int nr, float *y, size_t ys);
void kern_gemm_q8_0_fast_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x,
                                size_t xs, int nr, float *y, size_t ys);
void kern_quantize_q8k_scalar(const float *x, block_q8_K *y, int n);
void kern_gemm_q5_0_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q5_1_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_iq4_nl_scalar(int nb, const void *w, size_t ws, int nc, const blk_q8 *x, size_t xs,
                             int nr, float *y, size_t ys);
void kern_gemm_q4_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q5_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q6_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q2_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_q3_k_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x, size_t xs,
                           int nr, float *y, size_t ys);
void kern_gemm_iq4_xs_scalar(int nb, const void *w, size_t ws, int nc, const block_q8_K *x,
                             size_t xs, int nr, float *y, size_t ys);
void kern_gemm_f32_scalar(int n, const void *w, size_t ws, int nc, const float *x, size_t xs,
                          int nr, float *y, size_t ys);
void kern_gemm_f16_scalar(int n, const void *w, size_t ws, int nc, const float *x, size_t xs,
                          int nr, float *y, size_t ys);
void kern_gemm_bf16_scalar(int n, const void *w, size_t ws, int nc, const float *x, size_t xs,
                           int nr, float *y, size_t ys);
float kern_dot_f16_scalar(const uint16_t *a, const float *b, int n);
float kern_dot_f16_x4_scalar(const uint16_t *a, const float *b, int n);
/* (l[0..16) + l[32..48)) + (l[16..32) + l[48..64)), then the tree */
float kern_reduce64(const float *l);
void kern_axpy_f16_scalar(float a, const uint16_t *v, float *acc, int n);
void kern_silu_mul_scalar(const float *g, const float *u, float *out, int n);
double kern_softmax_exp_scalar(float *x, int n, float max);
void kern_rope_scalar(float *x, const float *cs, int n_heads, int head_dim, int half);
void kern_f32_to_f16_scalar(const float *x, uint16_t *y, int n);
void kern_rmsnorm_scalar(const float *x, const float *g, int rows, int cols, float eps, float *y);
/* Scratch floats attention over n_ctx positions needs for n_heads query heads. */
size_t kern_attn_work(int n_ctx, int hd, int n_heads);
/* attn_f16_row as nkv calls of attn (the tables without a kernel of their
 * own for it use this). */
void kern_attn_f16_row_with(kern_attn_f16_fn attn, const uint8_t *k, const uint8_t *v,
                            size_t kv_stride, int nkv, const size_t *off, int n_ctx, const float *q,
                            int nq, int hd, float scale, int single, float *work, float *out);
void kern_attn_f16_scalar(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                          const float *q, int nq, int hd, float scale, int single, float *work,
                          float *out);
void kern_attn_f16_row_scalar(const uint8_t *k, const uint8_t *v, size_t kv_stride, int nkv,
                              const size_t *off, int n_ctx, const float *q, int nq, int hd,
                              float scale, int single, float *work, float *out);
/* The kernels the reference attention is written against; each ISA passes
 * its table's entries for them. */
typedef struct {
    kern_dot_f16_fn dot_f16;
    kern_dot_f16_fn dot_f16_x4;
    kern_axpy_f16_fn axpy_f16;
    kern_softmax_exp_fn softmax_exp;
} kern_attn_parts;
/* The reference attention written against parts t (the AVX2 table uses it
 * with its own, the AVX-512 one for the shapes its kernels do not take). */
void kern_attn_f16_with(const kern_attn_parts *t, const uint8_t *k, const uint8_t *v,
                        const size_t *off, int n_ctx, const float *q, int nq, int hd, float scale,
                        int single, float *work, float *out);

#endif
