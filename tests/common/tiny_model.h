/*
 * tiny_model.h - a tiny random model written as GGUF, for tests of the
 * loader and the forward pass that must not depend on the real model.
 *
 * spec.arch picks the tensors and keys written, as llama.cpp's converter
 * writes them: "llama" (default; also any unknown name), "mistral",
 * "qwen2" (Q/K/V biases), "gemma3" (Q/K norms, sandwich norms, sliding
 * window of n_swa with pattern swa_pattern, final logit softcap), "gpt2"
 * (LayerNorm with biases, fused attn_qkv, biases everywhere, learned
 * positions, ungated FFN), "gptneox" (the same without learned positions,
 * with NeoX rope over rope_dim dims and use_parallel_residual = par_res),
 * "phi3" (fused attn_qkv, ffn_up holding gate and up).
 *
 * tiny_spec_default() fills a valid spec (vocab 64, 64-wide, 2 layers,
 * 4 heads / 2 KV heads of 16 dims, FFN 96); the caller changes fields
 * (formats, tied embeddings) and, for load-error tests, the corruption
 * knobs. Weights are drawn from a seeded generator, so the same spec gives
 * the same file. Test-only: errors abort via assert.
 */
#ifndef TESTS_TINY_MODEL_H
#define TESTS_TINY_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "tests/common/gguf_writer.h"

typedef struct {
    const char *arch; /* general.architecture; NULL: key omitted */
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx;
    float rope_theta, rms_eps;
    uint32_t attn_type;     /* quant_type of attn_q/k/v/output */
    uint32_t ffn_type;      /* ffn_gate/up/down */
    uint32_t embd_type;     /* token_embd */
    uint32_t output_type;   /* output.weight when not tied */
    uint32_t norm_type;     /* the 1-D norm weights (F32 or F16) */
    int tied;               /* no output.weight: the output reuses token_embd */
    int rope_dim;           /* rope.dimension_count; 0: head_dim */
    int n_swa, swa_pattern; /* gemma3: sliding window (0: key omitted) and its pattern */
    float softcap;          /* gemma3: final_logit_softcapping (0: key omitted) */
    int par_res;            /* gptneox: use_parallel_residual */
    uint64_t seed;
    /* corruption knobs (NULL / 0: off) */
    const char *omit_tensor; /* leave this tensor out */
    const char *
        reshape_tensor; /* write this tensor with one extra output row (norms: one extra element) */
    const char *omit_key;      /* leave this metadata key out (full name) */
    const char *retype_tensor; /* write this tensor as `retype` (same shape) */
    uint32_t retype;
} tiny_spec;

void tiny_spec_default(tiny_spec *s);

/* The model as a GGUF writer (caller frees with gw_free). */
gguf_writer *tiny_model_build(const tiny_spec *s);

/* Write the model to a fresh temporary file; its path goes to `path`.
 * keep_bytes > 0 truncates the file to that many bytes. Returns 0 or -1.
 * The caller unlinks the file. */
int tiny_model_write_temp(const tiny_spec *s, size_t keep_bytes, char *path, size_t pathlen);

/* Size in bytes of the serialized model. */
size_t tiny_model_size(const tiny_spec *s);

#endif
