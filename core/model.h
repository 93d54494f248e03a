/*
 * model.h - a decoder-only transformer loaded from GGUF, and its forward
 * pass over a flattened batch.
 *
 * Architectures (general.architecture): llama, mistral, qwen2, gemma3,
 * gpt2, gptneox, phi3. They share one forward pass; what differs between
 * them (norm kind, activation, rope style, residual layout, which tensors
 * exist) is data: a per-architecture descriptor (model_arch.c) and the
 * hyperparameters below, read from the file's `<arch>.*` keys.
 *
 * Weights stay in the memory-mapped file in their stored (quantized) formats.
 * The forward pass is written against the backend ops interface
 * (backend/backend.h) and reads/writes K and V through a kv_cache
 * (kv_cache.h) addressed by physical slots and per-sequence block tables.
 *
 * Ownership: llm_model owns the gguf_file it was loaded from.
 * Thread-safety: a loaded model is immutable; llm_forward may not be called
 * concurrently on the same kv_cache.
 */
#ifndef ENGINE_MODEL_H
#define ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/gguf.h"

struct backend;
struct kv_cache;

typedef enum { LLM_NORM_RMS = 0, LLM_NORM_LAYER = 1 } llm_norm_kind;
/* SWIGLU: silu(gate) * up; GEGLU: gelu(gate) * up; GELU: gelu(up), no gate */
typedef enum { LLM_FFN_SWIGLU = 0, LLM_FFN_GEGLU = 1, LLM_FFN_GELU = 2 } llm_ffn_kind;
/* NORM: interleaved pairs (Llama GGUF); NEOX: pairs (i, i + rope_dim/2) */
typedef enum { LLM_ROPE_NORM = 0, LLM_ROPE_NEOX = 1, LLM_ROPE_NONE = 2 } llm_rope_kind;

typedef struct {
    char arch[32];
    char name[128];
    int n_vocab;
    int n_ctx_train;
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_ff;
    int rope_dim;
    float rope_theta;
    float rms_eps;       /* epsilon of the model's norm (RMS or LayerNorm) */
    int tied_embeddings; /* output projection reuses token_embd */
    llm_norm_kind norm;
    llm_ffn_kind ffn;
    llm_rope_kind rope;
    int parallel_residual; /* x += attn(norm1(x)) + ffn(norm2(x)) (GPT-NeoX) */
    int n_swa;             /* sliding window of the SWA layers; 0: none */
    float rope_theta_swa;  /* rope base of the SWA layers */
    float embd_scale;      /* token embeddings are multiplied by this (1: none) */
    float attn_scale;      /* softmax scale of q.k */
    float logit_softcap;   /* logits = c * tanh(logits / c); 0: none */
    int n_pos_embd;        /* rows of learned position embeddings; 0: none */
} llm_hparams;

typedef struct llm_model llm_model;

typedef void (*llm_progress_fn)(float fraction, void *user);

/* Load and validate a model. Errors name the missing/mis-shaped tensor or
 * key. progress (may be NULL) is called with fractions in [0, 1]. */
int llm_model_load(const char *path, llm_model **out, llm_progress_fn progress, void *user,
                   char *err, size_t errlen);
void llm_model_free(llm_model *m);
const llm_hparams *llm_model_hparams(const llm_model *m);
const gguf_file *llm_model_gguf(const llm_model *m);
/* The model's chat template (tokenizer.chat_template) as a malloc'd
 * NUL-terminated copy the caller frees, or NULL when the file has none (or
 * out of memory). */
char *llm_model_chat_template(const llm_model *m);
/* Bytes of weight data the forward pass reads per step (all tensors). */
uint64_t llm_model_weight_bytes(const llm_model *m);

/*
 * One step's flattened batch (the shape of vLLM's attention metadata):
 *   rows:      token_ids[n_tokens], positions[n_tokens], slot_mapping[n_tokens]
 *              (physical KV slot = block id * block_size + offset) where the
 *              row's K and V are written;
 *   sequences: seq_start[n_seqs + 1] cumulative row offsets; context_len[n_seqs]
 *              = tokens in the cache for that sequence after this step;
 *              block_tables[s] = physical block ids of sequence s, covering
 *              context_len[s] tokens;
 *   logits:    logit_rows[n_logits] = rows whose logits are returned, in order.
 * Rows of one sequence are consecutive and their positions ascend; the last
 * row of a sequence has position context_len - 1.
 */
typedef struct {
    int n_tokens;
    const int32_t *token_ids;
    const int32_t *positions;
    const int32_t *slot_mapping;
    int n_seqs;
    const int32_t *seq_start;
    const int32_t *context_len;
    const int32_t *const *block_tables;
    int n_logits;
    const int32_t *logit_rows;
    /* Optional, per row: 1 = attention in llama.cpp's single-token shape,
     * 0 = its multi-token shape. NULL: single iff the row's sequence has one
     * row in this batch. (Only rounding differs; see kernels.h.) */
    const uint8_t *row_single;
} llm_batch;

/* Run the batch; writes n_logits x n_vocab floats to logits_out.
 * Returns 0, or a negative code with a message (bad token id, position
 * beyond the cache, slot outside the pool). */
int llm_forward(llm_model *m, struct backend *be, struct kv_cache *kv, const llm_batch *b,
                float *logits_out, char *err, size_t errlen);

#endif
