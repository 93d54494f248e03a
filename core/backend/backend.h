/*
 * backend.h - the ops interface the forward pass is written against.
 *
 * A backend executes the model's operators on its own memory and threads.
 * The CPU backend (backend/cpu/) is the reference and the default; a CUDA
 * backend implements the same table. Tensors are described by plain
 * structs: weights stay in their stored quant format (quant.h), activations
 * are row-major f32 matrices [rows x cols].
 *
 * Ownership: the backend owns its thread pool and scratch memory. Weight
 * pointers are borrowed from the model. Thread-safety: one caller thread at a
 * time per backend (ops are internally parallel).
 */
#ifndef ENGINE_BACKEND_H
#define ENGINE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

struct kv_cache;

/* A 2-D weight matrix W[n_out][n_in] stored row by row in `type`. */
typedef struct {
    const void *data;
    uint32_t type; /* quant_type */
    int64_t n_in;  /* elements per row (ne[0]) */
    int64_t n_out; /* rows (ne[1]) */
    size_t row_bytes;
    /* data lies in a read-only file mapping: a backend that keeps its own
     * copy (the CPU backend's packed weights) may drop these pages from
     * memory; touching them again reads them back from the file */
    int mapped;
} be_weight;

/* Attention over the paged KV cache for one step's flattened batch. */
typedef struct {
    int n_tokens;
    int n_seqs;
    const int32_t *seq_start;   /* [n_seqs + 1] */
    const int32_t *positions;   /* [n_tokens] */
    const int32_t *context_len; /* [n_seqs] */
    const int32_t *const *block_tables;
    int n_head;
    int n_head_kv;
    int head_dim;
    float scale;
    const uint8_t *row_single; /* optional, see llm_batch */
    /* sliding window: 0 = full causal attention; W > 0: the row at position p
     * attends positions max(0, p - W + 1) .. p only (llama.cpp's standard
     * SWA mask, which hides p0 when p - p0 >= W) */
    int window;
} be_attn;

typedef struct backend backend;

typedef struct backend_ops {
    const char *name;
    /* y[rows][W.n_out] = x[rows][W.n_in] * W^T */
    void (*matmul)(backend *be, const be_weight *w, const float *x, int rows, float *y);
    /* y[i] = x * W[i]^T for i < n (n <= 3, all W[i] with the same n_in): the
     * same results as n matmul calls, with x prepared once */
    void (*matmul_n)(backend *be, int n, const be_weight *const *w, const float *x, int rows,
                     float *const *y);
    /* y = x / rms(x) * g  row by row; y may alias x */
    void (*rmsnorm)(backend *be, const float *x, const float *g, int rows, int cols, float eps,
                    float *y);
    /* RoPE of each head of each row in place, over the head's first rope_dim
     * dims (the rest unchanged), angle positions[row] * theta^(-2i/rope_dim)
     * for pair i < rope_dim / 2. neox = 0: pair i is dims (2i, 2i + 1), as
     * in Llama GGUF files; neox = 1: pair i is dims (i, i + rope_dim / 2)
     * (llama.cpp's LLAMA_ROPE_TYPE_NEOX: GPT-NeoX, Qwen2, Gemma, Phi-3) */
    void (*rope)(backend *be, float *x, int rows, int n_heads, int head_dim, int rope_dim,
                 const int32_t *positions, float theta, int neox);
    /* out = silu(gate) * up, elementwise over n */
    void (*swiglu)(backend *be, const float *gate, const float *up, size_t n, float *out);
    /* copy rows' K and V into their slots of `layer` */
    void (*kv_store)(backend *be, struct kv_cache *kv, int layer, const float *k, const float *v,
                     int rows, const int32_t *slot_mapping);
    /* out[n_tokens][n_head*head_dim] = softmax(q k^T * scale, causal) v */
    void (*attention)(backend *be, struct kv_cache *kv, int layer, const be_attn *a, const float *q,
                      float *out);
    /* out[i] = dequantized row ids[i] of the embedding matrix */
    void (*embed)(backend *be, const be_weight *emb, const int32_t *ids, int n, float *out);
    /* LayerNorm row by row: y = (x - mean) / sqrt(var + eps) * g + b, with
     * mean and (biased) variance over the row's cols values; g NULL: 1,
     * b NULL: 0. y may alias x. */
    void (*layernorm)(backend *be, const float *x, const float *g, const float *b, int rows,
                      int cols, float eps, float *y);
    /* x[r][c] += b[c] for r < rows, c < cols (a linear layer's bias) */
    void (*add_bias)(backend *be, float *x, const float *b, int rows, int cols);
    /* out[i] = gelu(x[i]) * up[i] (up NULL: out[i] = gelu(x[i])), elementwise
     * over n; gelu is the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
     * x^3))). The CPU backend rounds as ggml's CPU op does: for |x| < 10
     * the input and the gelu value are rounded to f16; gelu(x) = x for
     * x >= 10 and 0 for x <= -10. out may alias x or up. */
    void (*gelu)(backend *be, const float *x, const float *up, size_t n, float *out);
    /* Host work between steps (the engine's sampling): fn(ctx, i) once for
     * each i < n, in any order, on the backend's host threads (the caller
     * among them); returns when all have run. Calls for different i must
     * not share mutable state. NULL (a backend without host threads): the
     * caller runs them in order (be_host_for). */
    void (*host_for)(backend *be, int n, void (*fn)(void *ctx, int i), void *ctx);
} backend_ops;

struct backend {
    const backend_ops *ops;
    int n_threads;
    void *impl;
};

/* fn(ctx, i) for i < n through be->ops->host_for, or in order on the
 * calling thread when the backend has none. */
static inline void be_host_for(backend *be, int n, void (*fn)(void *ctx, int i), void *ctx) {
    if (be->ops->host_for) be->ops->host_for(be, n, fn, ctx);
    else
        for (int i = 0; i < n; i++) fn(ctx, i);
}

/* Arithmetic of the quantized matmuls (backend/cpu/kernels.h states both):
 * EXACT reproduces llama.cpp's results bit for bit; FAST keeps one float
 * accumulator per output (fewer float ops per weight block, so faster GEMMs:
 * docs/benchmarks.md has the figures; results within float rounding of
 * EXACT). Both are deterministic and batch-invariant: a
 * row's result does not depend on the other rows of the step. */
typedef enum { BE_NUMERICS_EXACT = 0, BE_NUMERICS_FAST = 1 } be_numerics;

typedef struct {
    int n_threads;        /* <= 0: number of cores */
    be_numerics numerics; /* default (zeroed struct) EXACT */
} be_cpu_options;

/* "exact" / "fast"; parse returns -1 for any other name */
const char *be_numerics_name(be_numerics n);
int be_numerics_parse(const char *name, be_numerics *out);

/* Create the CPU backend; opt NULL: all defaults. With FAST numerics on
 * AVX-512 the backend keeps packed copies of the weights it multiplies,
 * keyed by their data pointers: free it (or call backend_cpu_forget_weights)
 * before the model whose weights it used, so another model mapped at the
 * same address is never served stale copies. */
backend *backend_cpu_create_opts(const be_cpu_options *opt, char *err, size_t errlen);
/* Drop the backend's packed weight copies (they are rebuilt on next use). */
void backend_cpu_forget_weights(backend *be);
/* The same with n_threads workers (<= 0: number of cores) and exact numerics. */
backend *backend_cpu_create(int n_threads, char *err, size_t errlen);
void backend_free(backend *be);
/* Kernel family the CPU backend picked ("avx512vnni", "avx2", "scalar"). */
const char *backend_cpu_isa(const backend *be);
be_numerics backend_cpu_numerics(const backend *be);

#endif
