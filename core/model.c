/*
 * model.c - loading a model's weights from GGUF: the tensors its
 * architecture descriptor (model_arch.c) names, with their shapes checked,
 * and the public accessors. The forward pass is in model_forward.c.
 */
#include "core/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/backend/backend.h"
#include "core/model_internal.h"
#include "core/quant.h"

/* Find a 2-D weight and check its shape [n_in, n_out]. */
static int get_weight(llm_model *m, const char *name, int64_t n_in, int64_t n_out, be_weight *w,
                      char *err, size_t errlen) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) return llm_errf(err, errlen, "missing tensor '%s'", name);
    if (t->ne[0] != (uint64_t)n_in || t->ne[1] != (uint64_t)n_out || t->ne[2] != 1 || t->ne[3] != 1)
        return llm_errf(err, errlen, "tensor '%s' has shape [%llu, %llu], expected [%lld, %lld]",
                        name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                        (long long)n_in, (long long)n_out);
    if (!quant_can_dequant(t->type))
        return llm_errf(err, errlen,
                        "tensor '%s' has type %s, which this engine does not support yet", name,
                        quant_name(t->type));
    w->data = t->data;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = quant_row_bytes(t->type, n_in);
    w->mapped = 1; /* gguf_open maps the file read-only */
    m->weight_bytes += t->nbytes;
    return 0;
}

/* 1-D norm weights are converted to f32 copies (they are tiny). */
static int get_norm(llm_model *m, const char *name, int64_t n, float **out, char *err,
                    size_t errlen) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) return llm_errf(err, errlen, "missing tensor '%s'", name);
    if (t->n_elements != (uint64_t)n || t->ne[0] != (uint64_t)n)
        return llm_errf(err, errlen, "tensor '%s' has %llu elements, expected %lld", name,
                        (unsigned long long)t->n_elements, (long long)n);
    if (!quant_can_dequant(t->type))
        return llm_errf(err, errlen, "tensor '%s' has unsupported type %s", name,
                        quant_name(t->type));
    *out = malloc((size_t)n * sizeof **out);
    if (!*out) return llm_errf(err, errlen, "out of memory");
    quant_dequant_row(t->type, t->data, *out, n);
    m->weight_bytes += t->nbytes;
    return 0;
}

/* Touch every page of a tensor so the first step does not pay page faults,
 * and so load progress means something for a cold file. */
static void prefault(const be_weight *w) {
    const volatile uint8_t *p = w->data;
    size_t n = w->row_bytes * (size_t)w->n_out;
    madvise((void *)((uintptr_t)p & ~(uintptr_t)4095), n + 4096, MADV_WILLNEED);
    uint8_t sink = 0;
    for (size_t i = 0; i < n; i += 4096) sink ^= p[i];
    (void)sink;
}

/* A 1-D tensor that may be absent (*out NULL then) unless required. */
static int get_vec(llm_model *m, const char *name, int64_t n, int required, float **out, char *err,
                   size_t errlen) {
    *out = NULL;
    if (!required && !gguf_find_tensor(m->gguf, name)) return 0;
    return get_norm(m, name, n, out, err, errlen);
}

/* blk.<il>.<nm>.weight of shape [n_in, n_out] and, when bias is not NULL,
 * its optional blk.<il>.<nm>.bias of n_out values. */
static int layer_weight(llm_model *m, int il, const char *nm, int64_t n_in, int64_t n_out,
                        be_weight *w, float **bias, char *err, size_t errlen) {
    char n[128];
    snprintf(n, sizeof n, "blk.%d.%s.weight", il, nm);
    if (get_weight(m, n, n_in, n_out, w, err, errlen)) return -1;
    if (!bias) return 0;
    snprintf(n, sizeof n, "blk.%d.%s.bias", il, nm);
    return get_vec(m, n, n_out, 0, bias, err, errlen);
}

/* blk.<il>.<nm>.<suffix> (a norm weight or bias) of n values */
static int layer_vec(llm_model *m, int il, const char *nm, const char *suffix, int64_t n,
                     int required, float **out, char *err, size_t errlen) {
    char name[128];
    snprintf(name, sizeof name, "blk.%d.%s.%s", il, nm, suffix);
    return get_vec(m, name, n, required, out, err, errlen);
}

/* A norm's weight (required) and bias (required for LayerNorm). */
static int layer_norm(llm_model *m, int il, const char *nm, float **w, float **b, char *err,
                      size_t errlen) {
    const int E = m->hp.n_embd;
    if (layer_vec(m, il, nm, "weight", E, 1, w, err, errlen)) return -1;
    return b ? layer_vec(m, il, nm, "bias", E, m->hp.norm == LLM_NORM_LAYER, b, err, errlen) : 0;
}

static int load_layer(llm_model *m, int il, char *err, size_t errlen) {
    const llm_hparams *hp = &m->hp;
    const llm_arch_desc *d = m->arch;
    llm_layer *L = &m->layers[il];
    const int E = hp->n_embd, F = hp->n_ff, HD = hp->head_dim;
    const int QD = hp->n_head * HD, KD = hp->n_head_kv * HD;
    char n[128];
    if (layer_norm(m, il, "attn_norm", &L->attn_norm, &L->attn_norm_b, err, errlen)) return -1;
    snprintf(n, sizeof n, "blk.%d.attn_qkv.weight", il);
    L->fused_qkv = gguf_find_tensor(m->gguf, n) != NULL;
    if (L->fused_qkv) {
        if (layer_weight(m, il, "attn_qkv", E, QD + 2 * KD, &L->wqkv, &L->bqkv, err, errlen))
            return -1;
    } else if (layer_weight(m, il, "attn_q", E, QD, &L->wq, &L->bq, err, errlen) ||
               layer_weight(m, il, "attn_k", E, KD, &L->wk, &L->bk, err, errlen) ||
               layer_weight(m, il, "attn_v", E, KD, &L->wv, &L->bv, err, errlen))
        return -1;
    if (layer_weight(m, il, "attn_output", QD, E, &L->wo, &L->bo, err, errlen)) return -1;
    if (d->qk_norm && (layer_vec(m, il, "attn_q_norm", "weight", HD, 1, &L->q_norm, err, errlen) ||
                       layer_vec(m, il, "attn_k_norm", "weight", HD, 1, &L->k_norm, err, errlen)))
        return -1;
    if (d->sandwich &&
        (layer_norm(m, il, "post_attention_norm", &L->post_attn_norm, NULL, err, errlen) ||
         layer_norm(m, il, "post_ffw_norm", &L->post_ffn_norm, NULL, err, errlen)))
        return -1;
    if (layer_norm(m, il, "ffn_norm", &L->ffn_norm, &L->ffn_norm_b, err, errlen)) return -1;
    if (d->fused_up) {
        if (layer_weight(m, il, "ffn_up", E, 2 * F, &L->w_up, &L->b_up, err, errlen)) return -1;
    } else if (hp->ffn == LLM_FFN_GELU) {
        if (layer_weight(m, il, "ffn_up", E, F, &L->w_up, &L->b_up, err, errlen)) return -1;
    } else if (layer_weight(m, il, "ffn_gate", E, F, &L->w_gate, &L->b_gate, err, errlen) ||
               layer_weight(m, il, "ffn_up", E, F, &L->w_up, &L->b_up, err, errlen))
        return -1;
    return layer_weight(m, il, "ffn_down", F, E, &L->w_down, &L->b_down, err, errlen);
}

/* The tensors outside the layers. */
static int load_globals(llm_model *m, char *err, size_t errlen) {
    llm_hparams *hp = &m->hp;
    const gguf_tensor *te = gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te) return llm_errf(err, errlen, "missing tensor 'token_embd.weight'");
    if (te->ne[1] < 1 || te->ne[1] > INT32_MAX)
        return llm_errf(err, errlen, "tensor 'token_embd.weight' has %llu rows",
                        (unsigned long long)te->ne[1]);
    hp->n_vocab = (int)te->ne[1];
    /* per-frequency rope factors (Phi-3 128k's long/short, Llama 3.1's rope_freqs) change
     * every angle; Llama files keep loading as before, which ignored them */
    static const char *const rope_factors[] = {"rope_factors_long.weight",
                                               "rope_factors_short.weight", "rope_freqs.weight"};
    for (size_t i = 0; i < 3 && strcmp(hp->arch, "llama") != 0; i++)
        if (gguf_find_tensor(m->gguf, rope_factors[i]))
            return llm_errf(err, errlen, "tensor '%s' (rope frequency factors) is not supported",
                            rope_factors[i]);
    const int is_ln = hp->norm == LLM_NORM_LAYER;
    if (get_weight(m, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd, err, errlen) ||
        get_vec(m, "output_norm.weight", hp->n_embd, 1, &m->output_norm, err, errlen) ||
        get_vec(m, "output_norm.bias", hp->n_embd, is_ln, &m->output_norm_b, err, errlen))
        return -1;
    if (hp->n_pos_embd > 0 && get_weight(m, "position_embd.weight", hp->n_embd, hp->n_pos_embd,
                                         &m->pos_embd, err, errlen))
        return -1;
    if (gguf_find_tensor(m->gguf, "output.weight")) {
        if (get_weight(m, "output.weight", hp->n_embd, hp->n_vocab, &m->output, err, errlen) ||
            get_vec(m, "output.bias", hp->n_vocab, 0, &m->output_b, err, errlen))
            return -1;
    } else {
        m->output = m->tok_embd;
        hp->tied_embeddings = 1;
    }
    return 0;
}

int llm_model_load(const char *path, llm_model **out, llm_progress_fn progress, void *user,
                   char *err, size_t errlen) {
    *out = NULL;
    llm_model *m = calloc(1, sizeof *m);
    if (!m) return llm_errf(err, errlen, "out of memory");
    if (gguf_open(path, &m->gguf, err, errlen)) {
        free(m);
        return -1;
    }
    if (llm_arch_hparams(m, path, err, errlen) || load_globals(m, err, errlen)) goto fail;
    const llm_hparams *hp = &m->hp;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        llm_errf(err, errlen, "out of memory");
        goto fail;
    }
    for (int il = 0; il < hp->n_layer; il++)
        if (load_layer(m, il, err, errlen)) goto fail;
    if (llm_arch_layer_swa(m, err, errlen)) goto fail;
    /* prefault weights, reporting progress by layer */
    prefault(&m->tok_embd);
    if (m->pos_embd.data) prefault(&m->pos_embd);
    if (progress) progress(0.0f, user);
    for (int il = 0; il < hp->n_layer; il++) {
        llm_layer *L = &m->layers[il];
        const be_weight *ws[] = {&L->wqkv, &L->wq,     &L->wk,   &L->wv,
                                 &L->wo,   &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof *ws; i++)
            if (ws[i]->data) prefault(ws[i]);
        if (progress) progress((float)(il + 1) / (float)hp->n_layer, user);
    }
    *out = m;
    return 0;
fail:
    llm_model_free(m);
    return -1;
}

void llm_model_free(llm_model *m) {
    if (!m) return;
    if (m->layers)
        for (int il = 0; il < m->hp.n_layer; il++) {
            llm_layer *L = &m->layers[il];
            float *vs[] = {L->attn_norm,
                           L->attn_norm_b,
                           L->ffn_norm,
                           L->ffn_norm_b,
                           L->q_norm,
                           L->k_norm,
                           L->post_attn_norm,
                           L->post_ffn_norm,
                           L->bq,
                           L->bk,
                           L->bv,
                           L->bqkv,
                           L->bo,
                           L->b_gate,
                           L->b_up,
                           L->b_down};
            for (size_t i = 0; i < sizeof vs / sizeof *vs; i++) free(vs[i]);
        }
    free(m->layers);
    free(m->output_norm);
    free(m->output_norm_b);
    free(m->output_b);
    free(m->arena);
    gguf_close(m->gguf);
    free(m);
}

const llm_hparams *llm_model_hparams(const llm_model *m) { return &m->hp; }
const gguf_file *llm_model_gguf(const llm_model *m) { return m->gguf; }

char *llm_model_chat_template(const llm_model *m) {
    gguf_str s;
    if (gguf_get_str(m->gguf, "tokenizer.chat_template", &s) != 0) return NULL;
    char *t = malloc(s.len + 1);
    if (!t) return NULL;
    memcpy(t, s.ptr, s.len);
    t[s.len] = 0;
    return t;
}
uint64_t llm_model_weight_bytes(const llm_model *m) { return m->weight_bytes; }
