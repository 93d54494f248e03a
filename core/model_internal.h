/*
 * model_internal.h - what the model's files share (internal to core):
 * the architecture descriptor, the loaded layers and the model struct.
 *
 *   model_arch.c     the descriptor table and the hyperparameters from the
 *                    file's `<arch>.*` keys
 *   model.c          loading the tensors each descriptor names, and the
 *                    public accessors
 *   model_forward.c  the forward pass, one for every architecture
 */
#ifndef ENGINE_MODEL_INTERNAL_H
#define ENGINE_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend/backend.h"
#include "core/model.h"

/*
 * How an architecture differs from Llama, as data. Tensors of any
 * architecture may carry a `.bias` beside their `.weight` (loaded when the
 * file has them; LayerNorm architectures' norms have one); a layer's Q, K
 * and V come from one fused `attn_qkv` (rows Q, then K, then V) when the
 * file has it, from attn_q/attn_k/attn_v otherwise.
 */
typedef struct {
    const char *name;
    llm_norm_kind norm;
    llm_ffn_kind ffn;
    llm_rope_kind rope;
    const char *eps_key;     /* "attention.layer_norm_rms_epsilon" or "..._epsilon" */
    uint8_t fused_up;        /* ffn_up holds gate then up (2 * n_ff rows), no ffn_gate */
    uint8_t qk_norm;         /* attn_q_norm, attn_k_norm: RMSNorm of each head of Q, K */
    uint8_t sandwich;        /* post_attention_norm, post_ffw_norm on the branch outputs */
    uint8_t pos_embd;        /* position_embd.weight, n_ctx_train rows, added to the input */
    uint8_t embd_scale_sqrt; /* input embeddings multiplied by sqrt(n_embd) */
    uint8_t q_prescale;      /* Q multiplied by the attention scale before attention (as
                                llama.cpp does for these, which rounds differently) */
    uint8_t swa_pattern;     /* with a sliding window and no pattern key: layer il is
                                local unless il % pattern == pattern - 1; 0: no SWA */
    uint8_t par_res_key;     /* reads `use_parallel_residual` (required) */
} llm_arch_desc;

/* The descriptor of an architecture name, NULL when unsupported. */
const llm_arch_desc *llm_arch_find(const char *name);
/* "llama, mistral, ..." for messages */
const char *llm_arch_names(void);

typedef struct {
    float *attn_norm, *attn_norm_b, *ffn_norm, *ffn_norm_b;
    float *post_attn_norm, *post_ffn_norm;                    /* sandwich norms, or NULL */
    float *q_norm, *k_norm;                                   /* [head_dim], or NULL */
    float *bq, *bk, *bv, *bqkv, *bo, *b_gate, *b_up, *b_down; /* biases, or NULL */
    int fused_qkv;                                            /* wqkv instead of wq, wk, wv */
    be_weight wqkv, wq, wk, wv, wo, w_gate, w_up, w_down;     /* w_gate unused: GELU, fused_up */
    int is_swa;
} llm_layer;

struct llm_model {
    gguf_file *gguf;
    const llm_arch_desc *arch;
    llm_hparams hp;
    be_weight tok_embd, pos_embd, output;
    float *output_norm, *output_norm_b, *output_b;
    llm_layer *layers;
    uint64_t weight_bytes;
    /* forward scratch, grown on demand */
    float *arena;
    size_t arena_cap;
};

int llm_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The hyperparameters of m->gguf into m->hp, m->arch set; layer SWA flags
 * are set by llm_arch_layer_swa once the layers exist. */
int llm_arch_hparams(llm_model *m, const char *path, char *err, size_t errlen);
/* Mark the sliding-window layers (m->layers allocated). */
int llm_arch_layer_swa(llm_model *m, char *err, size_t errlen);

#endif
