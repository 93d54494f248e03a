/*
 * model_forward.c - the forward pass over a flattened batch (model.h),
 * written against the backend ops interface, one graph for every
 * architecture: the descriptor and hyperparameters (model_internal.h)
 * choose the norm, the Q/K/V layout, rope style, sliding windows, sandwich
 * norms, the feed-forward kind and the residual layout, following the graph
 * builders of llama.cpp's src/models/<arch>.cpp in the order of their
 * float operations where that is cheap.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "core/model_internal.h"

static int check_batch(const llm_model *m, const kv_cache *kv, const llm_batch *b, char *err,
                       size_t errlen) {
    const int64_t n_slots = (int64_t)kv->num_blocks * kv->block_size;
    if (b->n_tokens < 1 || b->n_seqs < 1 || b->n_logits < 0)
        return llm_errf(err, errlen, "empty batch (%d tokens, %d sequences)", b->n_tokens,
                        b->n_seqs);
    if (kv->n_layer != m->hp.n_layer || kv->kv_dim != m->hp.n_head_kv * m->hp.head_dim)
        return llm_errf(err, errlen, "KV cache shape does not match the model");
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens)
        return llm_errf(err, errlen, "seq_start must run from 0 to n_tokens");
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seq_start[s + 1] <= b->seq_start[s] || b->seq_start[s + 1] > b->n_tokens)
            return llm_errf(err, errlen,
                            "sequence %d has no rows (seq_start must increase strictly)", s);
    for (int s = 0; s < b->n_seqs; s++) {
        if (b->seq_start[s + 1] <= b->seq_start[s])
            return llm_errf(err, errlen, "sequence %d has no rows", s);
        if (b->context_len[s] < 1 || !b->block_tables[s])
            return llm_errf(err, errlen, "sequence %d has no context or block table", s);
        for (int k = 0; k < (b->context_len[s] + kv->block_size - 1) / kv->block_size; k++)
            if (b->block_tables[s][k] < 0 || b->block_tables[s][k] >= kv->num_blocks)
                return llm_errf(err, errlen,
                                "sequence %d: block table entry %d = %d outside the pool", s, k,
                                b->block_tables[s][k]);
        for (int r = b->seq_start[s]; r < b->seq_start[s + 1]; r++)
            if (b->positions[r] < 0 || b->positions[r] >= b->context_len[s])
                return llm_errf(err, errlen, "row %d: position %d outside the context of %d tokens",
                                r, b->positions[r], b->context_len[s]);
        if (m->hp.n_pos_embd > 0 && b->context_len[s] > m->hp.n_pos_embd)
            return llm_errf(err, errlen,
                            "sequence %d: %d tokens exceed the model's %d learned positions", s,
                            b->context_len[s], m->hp.n_pos_embd);
    }
    for (int r = 0; r < b->n_tokens; r++) {
        if (b->token_ids[r] < 0 || b->token_ids[r] >= m->hp.n_vocab)
            return llm_errf(err, errlen, "row %d: token id %d outside the vocabulary (%d)", r,
                            b->token_ids[r], m->hp.n_vocab);
        if (b->slot_mapping[r] < 0 || b->slot_mapping[r] >= n_slots)
            return llm_errf(err, errlen, "row %d: KV slot %d outside the pool (%lld slots)", r,
                            b->slot_mapping[r], (long long)n_slots);
    }
    for (int i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->n_tokens)
            return llm_errf(err, errlen, "logit row %d outside the batch", b->logit_rows[i]);
    return 0;
}

/* The step's activations, carved from the model's arena. */
typedef struct {
    float *x, *h, *q, *k, *v, *att, *o, *o2, *g, *u, *wide, *lx;
} fw_bufs;

static int fw_arena(llm_model *m, int T, int NL, fw_bufs *f, char *err, size_t errlen) {
    const llm_hparams *hp = &m->hp;
    const size_t E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    const size_t QD = (size_t)hp->n_head * hp->head_dim, KD = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t W = QD + 2 * KD > 2 * F ? QD + 2 * KD : 2 * F;
    const size_t per_row = 4 * E + 2 * QD + 2 * KD + 2 * F + W + 8;
    size_t need = (size_t)T * per_row + (size_t)NL * E;
    if (need > m->arena_cap) {
        float *p = realloc(m->arena, need * sizeof *p);
        if (!p) return llm_errf(err, errlen, "out of memory for a batch of %d tokens", T);
        m->arena = p;
        m->arena_cap = need;
    }
    const size_t t = (size_t)T;
    f->x = m->arena;
    f->h = f->x + t * E;
    f->q = f->h + t * E;
    f->k = f->q + t * QD;
    f->v = f->k + t * KD;
    f->att = f->v + t * KD;
    f->o = f->att + t * QD;
    f->o2 = f->o + t * E;
    f->g = f->o2 + t * E;
    f->u = f->g + t * F;
    f->wide = f->u + t * F;
    f->lx = f->wide + t * W;
    return 0;
}

/* y = norm(x) * w (+ b) over rows of n_embd */
static void fw_norm(const llm_model *m, backend *be, const float *x, const float *w, const float *b,
                    int rows, float *y) {
    const llm_hparams *hp = &m->hp;
    if (hp->norm == LLM_NORM_LAYER) {
        be->ops->layernorm(be, x, w, b, rows, hp->n_embd, hp->rms_eps, y);
        return;
    }
    be->ops->rmsnorm(be, x, w, rows, hp->n_embd, hp->rms_eps, y);
    if (b) be->ops->add_bias(be, y, b, rows, hp->n_embd);
}

/* Columns [c0, c0 + n) of each row of src (row width w) into dst (row width n). */
static void split_cols(const float *src, int rows, int w, int c0, int n, float *dst) {
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * n, src + (size_t)r * w + c0, (size_t)n * sizeof *dst);
}

/* q, k, v of the normed rows f->h, with biases, per-head norms and RoPE. */
static void fw_qkv(const llm_model *m, backend *be, const llm_layer *L, const llm_batch *b,
                   fw_bufs *f) {
    const llm_hparams *hp = &m->hp;
    const backend_ops *op = be->ops;
    const int T = b->n_tokens, HD = hp->head_dim;
    const int QD = hp->n_head * HD, KD = hp->n_head_kv * HD;
    if (L->fused_qkv) {
        op->matmul(be, &L->wqkv, f->h, T, f->wide);
        if (L->bqkv) op->add_bias(be, f->wide, L->bqkv, T, QD + 2 * KD);
        split_cols(f->wide, T, QD + 2 * KD, 0, QD, f->q);
        split_cols(f->wide, T, QD + 2 * KD, QD, KD, f->k);
        split_cols(f->wide, T, QD + 2 * KD, QD + KD, KD, f->v);
    } else {
        const be_weight *w[3] = {&L->wq, &L->wk, &L->wv};
        float *y[3] = {f->q, f->k, f->v};
        op->matmul_n(be, 3, w, f->h, T, y);
        if (L->bq) op->add_bias(be, f->q, L->bq, T, QD);
        if (L->bk) op->add_bias(be, f->k, L->bk, T, KD);
        if (L->bv) op->add_bias(be, f->v, L->bv, T, KD);
    }
    if (L->q_norm) op->rmsnorm(be, f->q, L->q_norm, T * hp->n_head, HD, hp->rms_eps, f->q);
    if (L->k_norm) op->rmsnorm(be, f->k, L->k_norm, T * hp->n_head_kv, HD, hp->rms_eps, f->k);
    if (hp->rope != LLM_ROPE_NONE) {
        const float theta = L->is_swa ? hp->rope_theta_swa : hp->rope_theta;
        const int neox = hp->rope == LLM_ROPE_NEOX;
        op->rope(be, f->q, T, hp->n_head, HD, hp->rope_dim, b->positions, theta, neox);
        op->rope(be, f->k, T, hp->n_head_kv, HD, hp->rope_dim, b->positions, theta, neox);
    }
}

/* f->o = the attention branch's output for the normed rows f->h. */
static void fw_attention(const llm_model *m, backend *be, kv_cache *kv, int il, const llm_batch *b,
                         be_attn *ad, fw_bufs *f) {
    const llm_hparams *hp = &m->hp;
    const llm_layer *L = &m->layers[il];
    const int T = b->n_tokens;
    fw_qkv(m, be, L, b, f);
    ad->scale = hp->attn_scale;
    if (m->arch->q_prescale) {
        const size_t n = (size_t)T * hp->n_head * hp->head_dim;
        for (size_t i = 0; i < n; i++) f->q[i] *= hp->attn_scale;
        ad->scale = 1.0f;
    }
    ad->window = L->is_swa ? hp->n_swa : 0;
    be->ops->kv_store(be, kv, il, f->k, f->v, T, b->slot_mapping);
    be->ops->attention(be, kv, il, ad, f->q, f->att);
    be->ops->matmul(be, &L->wo, f->att, T, f->o);
    if (L->bo) be->ops->add_bias(be, f->o, L->bo, T, hp->n_embd);
    if (L->post_attn_norm)
        be->ops->rmsnorm(be, f->o, L->post_attn_norm, T, hp->n_embd, hp->rms_eps, f->o);
}

/* out = the feed-forward branch's output for the normed rows f->h. */
static void fw_ffn(const llm_model *m, backend *be, const llm_layer *L, int T, fw_bufs *f,
                   float *out) {
    const llm_hparams *hp = &m->hp;
    const backend_ops *op = be->ops;
    const int F = hp->n_ff;
    const size_t n = (size_t)T * F;
    if (m->arch->fused_up) { /* ffn_up rows: gate, then up */
        op->matmul(be, &L->w_up, f->h, T, f->wide);
        if (L->b_up) op->add_bias(be, f->wide, L->b_up, T, 2 * F);
        split_cols(f->wide, T, 2 * F, 0, F, f->g);
        split_cols(f->wide, T, 2 * F, F, F, f->u);
    } else if (hp->ffn == LLM_FFN_GELU) {
        op->matmul(be, &L->w_up, f->h, T, f->g);
        if (L->b_up) op->add_bias(be, f->g, L->b_up, T, F);
    } else {
        const be_weight *w[2] = {&L->w_gate, &L->w_up};
        float *y[2] = {f->g, f->u};
        op->matmul_n(be, 2, w, f->h, T, y);
        if (L->b_gate) op->add_bias(be, f->g, L->b_gate, T, F);
        if (L->b_up) op->add_bias(be, f->u, L->b_up, T, F);
    }
    if (hp->ffn == LLM_FFN_SWIGLU) op->swiglu(be, f->g, f->u, n, f->g);
    else op->gelu(be, f->g, hp->ffn == LLM_FFN_GEGLU ? f->u : NULL, n, f->g);
    op->matmul(be, &L->w_down, f->g, T, out);
    if (L->b_down) op->add_bias(be, out, L->b_down, T, hp->n_embd);
    if (L->post_ffn_norm) op->rmsnorm(be, out, L->post_ffn_norm, T, hp->n_embd, hp->rms_eps, out);
}

/* x = the scaled token embeddings plus the learned position embeddings */
static void fw_embed(const llm_model *m, backend *be, const llm_batch *b, fw_bufs *f) {
    const llm_hparams *hp = &m->hp;
    const size_t n = (size_t)b->n_tokens * hp->n_embd;
    be->ops->embed(be, &m->tok_embd, b->token_ids, b->n_tokens, f->x);
    if (hp->embd_scale != 1.0f)
        for (size_t i = 0; i < n; i++) f->x[i] *= hp->embd_scale;
    if (hp->n_pos_embd > 0) {
        be->ops->embed(be, &m->pos_embd, b->positions, b->n_tokens, f->h);
        for (size_t i = 0; i < n; i++) f->x[i] += f->h[i];
    }
}

/* logits of the rows b->logit_rows of x */
static void fw_logits(const llm_model *m, backend *be, const llm_batch *b, fw_bufs *f,
                      float *logits) {
    const llm_hparams *hp = &m->hp;
    const int E = hp->n_embd, NL = b->n_logits;
    for (int i = 0; i < NL; i++)
        memcpy(f->lx + (size_t)i * E, f->x + (size_t)b->logit_rows[i] * E,
               (size_t)E * sizeof *f->x);
    fw_norm(m, be, f->lx, m->output_norm, m->output_norm_b, NL, f->lx);
    be->ops->matmul(be, &m->output, f->lx, NL, logits);
    if (m->output_b) be->ops->add_bias(be, logits, m->output_b, NL, hp->n_vocab);
    if (hp->logit_softcap > 0) {
        const float c = hp->logit_softcap, inv = 1.0f / c;
        for (size_t i = 0; i < (size_t)NL * hp->n_vocab; i++)
            logits[i] = tanhf(logits[i] * inv) * c;
    }
}

int llm_forward(llm_model *m, backend *be, kv_cache *kv, const llm_batch *b, float *logits,
                char *err, size_t errlen) {
    if (check_batch(m, kv, b, err, errlen)) return -1;
    const llm_hparams *hp = &m->hp;
    const int T = b->n_tokens;
    const size_t n = (size_t)T * hp->n_embd;
    fw_bufs f = {0};
    if (fw_arena(m, T, b->n_logits > 0 ? b->n_logits : 1, &f, err, errlen)) return -1;
    fw_embed(m, be, b, &f);
    be_attn ad = {.n_tokens = T,
                  .n_seqs = b->n_seqs,
                  .seq_start = b->seq_start,
                  .positions = b->positions,
                  .context_len = b->context_len,
                  .block_tables = b->block_tables,
                  .n_head = hp->n_head,
                  .n_head_kv = hp->n_head_kv,
                  .head_dim = hp->head_dim,
                  .scale = hp->attn_scale,
                  .row_single = b->row_single};
    for (int il = 0; il < hp->n_layer; il++) {
        const llm_layer *L = &m->layers[il];
        fw_norm(m, be, f.x, L->attn_norm, L->attn_norm_b, T, f.h);
        fw_attention(m, be, kv, il, b, &ad, &f);
        if (hp->parallel_residual) { /* x + (ffn(norm2(x)) + attn(norm1(x))), as llama.cpp adds */
            fw_norm(m, be, f.x, L->ffn_norm, L->ffn_norm_b, T, f.h);
            fw_ffn(m, be, L, T, &f, f.o2);
            for (size_t i = 0; i < n; i++) f.x[i] += f.o2[i] + f.o[i];
            continue;
        }
        for (size_t i = 0; i < n; i++) f.x[i] += f.o[i];
        fw_norm(m, be, f.x, L->ffn_norm, L->ffn_norm_b, T, f.h);
        fw_ffn(m, be, L, T, &f, f.o);
        for (size_t i = 0; i < n; i++) f.x[i] += f.o[i];
    }
    if (b->n_logits > 0) fw_logits(m, be, b, &f, logits);
    return 0;
}
