/*
 * model.c - Llama-architecture model: hyperparameters and weights from GGUF
 * (architecture differences as data: keys are looked up under the file's
 * architecture prefix), and the forward pass over a flattened batch written
 * against the backend ops interface.
 */
#include "core/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "core/quant.h"

typedef struct {
    float *attn_norm, *ffn_norm;
    be_weight wq, wk, wv, wo, w_gate, w_up, w_down;
} llm_layer;

struct llm_model {
    gguf_file *gguf;
    llm_hparams hp;
    be_weight tok_embd, output;
    float *output_norm;
    llm_layer *layers;
    uint64_t weight_bytes;
    /* forward scratch, grown on demand */
    float *arena;
    size_t arena_cap;
};

static int errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int get_u32_key(const gguf_file *f, const char *arch, const char *suffix, int required,
                       uint32_t dflt, int *out, char *err, size_t errlen) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == GGUF_ENOTFOUND && !required) v = dflt;
    else if (rc == GGUF_ENOTFOUND) return errf(err, errlen, "missing metadata key '%s'", key);
    else if (rc) return errf(err, errlen, "metadata key '%s' is not a valid unsigned integer", key);
    if (v > (1u << 30)) return errf(err, errlen, "metadata key '%s' = %u is out of range", key, v);
    *out = (int)v;
    return 0;
}

static int get_f32_key(const gguf_file *f, const char *arch, const char *suffix, float dflt,
                       float *out, char *err, size_t errlen) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_f32(f, key, out);
    if (rc == GGUF_ENOTFOUND) {
        *out = dflt;
        return 0;
    }
    if (rc) return errf(err, errlen, "metadata key '%s' is not a float", key);
    if (!isfinite(*out) || *out <= 0)
        return errf(err, errlen, "metadata key '%s' = %g is invalid", key, *out);
    return 0;
}

/* Find a 2-D weight and check its shape [n_in, n_out]. */
static int get_weight(llm_model *m, const char *name, int64_t n_in, int64_t n_out, be_weight *w,
                      char *err, size_t errlen) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) return errf(err, errlen, "missing tensor '%s'", name);
    if (t->ne[0] != (uint64_t)n_in || t->ne[1] != (uint64_t)n_out || t->ne[2] != 1 || t->ne[3] != 1)
        return errf(err, errlen, "tensor '%s' has shape [%llu, %llu], expected [%lld, %lld]", name,
                    (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], (long long)n_in,
                    (long long)n_out);
    if (!quant_can_dequant(t->type))
        return errf(err, errlen, "tensor '%s' has type %s, which this engine does not support yet",
                    name, quant_name(t->type));
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
    if (!t) return errf(err, errlen, "missing tensor '%s'", name);
    if (t->n_elements != (uint64_t)n || t->ne[0] != (uint64_t)n)
        return errf(err, errlen, "tensor '%s' has %llu elements, expected %lld", name,
                    (unsigned long long)t->n_elements, (long long)n);
    if (!quant_can_dequant(t->type))
        return errf(err, errlen, "tensor '%s' has unsupported type %s", name, quant_name(t->type));
    *out = malloc((size_t)n * sizeof **out);
    if (!*out) return errf(err, errlen, "out of memory");
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

int llm_model_load(const char *path, llm_model **out, llm_progress_fn progress, void *user,
                   char *err, size_t errlen) {
    *out = NULL;
    llm_model *m = calloc(1, sizeof *m);
    if (!m) return errf(err, errlen, "out of memory");
    if (gguf_open(path, &m->gguf, err, errlen)) {
        free(m);
        return -1;
    }
    const gguf_file *f = m->gguf;
    llm_hparams *hp = &m->hp;
    gguf_str s;
    if (gguf_get_str(f, "general.architecture", &s)) goto fail_msg_arch;
    snprintf(hp->arch, sizeof hp->arch, "%.*s", (int)(s.len < 31 ? s.len : 31), s.ptr);
    if (strcmp(hp->arch, "llama") != 0 && strcmp(hp->arch, "mistral") != 0) {
        errf(err, errlen, "%s: architecture '%s' is not supported (supported: llama)", path,
             hp->arch);
        goto fail;
    }
    if (gguf_get_str(f, "general.name", &s) == 0)
        snprintf(hp->name, sizeof hp->name, "%.*s", (int)(s.len < 127 ? s.len : 127), s.ptr);
    const char *a = hp->arch;
    if (get_u32_key(f, a, "block_count", 1, 0, &hp->n_layer, err, errlen) ||
        get_u32_key(f, a, "embedding_length", 1, 0, &hp->n_embd, err, errlen) ||
        get_u32_key(f, a, "feed_forward_length", 1, 0, &hp->n_ff, err, errlen) ||
        get_u32_key(f, a, "attention.head_count", 1, 0, &hp->n_head, err, errlen) ||
        get_u32_key(f, a, "context_length", 0, 2048, &hp->n_ctx_train, err, errlen) ||
        get_f32_key(f, a, "rope.freq_base", 10000.0f, &hp->rope_theta, err, errlen) ||
        get_f32_key(f, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps, err, errlen))
        goto fail;
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_ff < 1) {
        errf(err, errlen, "invalid model dimensions (layers %d, embd %d, heads %d, ff %d)",
             hp->n_layer, hp->n_embd, hp->n_head, hp->n_ff);
        goto fail;
    }
    if (get_u32_key(f, a, "attention.head_count_kv", 0, (uint32_t)hp->n_head, &hp->n_head_kv, err,
                    errlen) ||
        get_u32_key(f, a, "attention.key_length", 0, (uint32_t)(hp->n_embd / hp->n_head),
                    &hp->head_dim, err, errlen))
        goto fail;
    if (get_u32_key(f, a, "rope.dimension_count", 0, (uint32_t)hp->head_dim, &hp->rope_dim, err,
                    errlen))
        goto fail;
    if (hp->n_head_kv < 1 || hp->n_head % hp->n_head_kv || hp->head_dim < 2 || hp->head_dim % 2 ||
        hp->rope_dim > hp->head_dim || hp->rope_dim % 2 || hp->rope_dim > 512) {
        errf(err, errlen,
             "invalid attention shape (heads %d, kv heads %d, head_dim %d, rope_dim %d)",
             hp->n_head, hp->n_head_kv, hp->head_dim, hp->rope_dim);
        goto fail;
    }
    const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    if (!te) {
        errf(err, errlen, "missing tensor 'token_embd.weight'");
        goto fail;
    }
    hp->n_vocab = (int)te->ne[1];
    if (get_weight(m, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd, err, errlen) ||
        get_norm(m, "output_norm.weight", hp->n_embd, &m->output_norm, err, errlen))
        goto fail;
    if (gguf_find_tensor(f, "output.weight")) {
        if (get_weight(m, "output.weight", hp->n_embd, hp->n_vocab, &m->output, err, errlen))
            goto fail;
    } else {
        m->output = m->tok_embd;
        hp->tied_embeddings = 1;
    }
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        errf(err, errlen, "out of memory");
        goto fail;
    }
    const int q_dim = hp->n_head * hp->head_dim, kv_dim = hp->n_head_kv * hp->head_dim;
    for (int il = 0; il < hp->n_layer; il++) {
        llm_layer *L = &m->layers[il];
        char n[96];
#define W(field, nm, nin, nout)                                                                    \
    snprintf(n, sizeof n, "blk.%d." nm ".weight", il);                                             \
    if (get_weight(m, n, nin, nout, &L->field, err, errlen)) goto fail;
        W(wq, "attn_q", hp->n_embd, q_dim)
        W(wk, "attn_k", hp->n_embd, kv_dim)
        W(wv, "attn_v", hp->n_embd, kv_dim)
        W(wo, "attn_output", q_dim, hp->n_embd)
        W(w_gate, "ffn_gate", hp->n_embd, hp->n_ff)
        W(w_up, "ffn_up", hp->n_embd, hp->n_ff)
        W(w_down, "ffn_down", hp->n_ff, hp->n_embd)
#undef W
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", il);
        if (get_norm(m, n, hp->n_embd, &L->attn_norm, err, errlen)) goto fail;
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", il);
        if (get_norm(m, n, hp->n_embd, &L->ffn_norm, err, errlen)) goto fail;
    }
    /* prefault weights, reporting progress by layer */
    prefault(&m->tok_embd);
    if (progress) progress(0.0f, user);
    for (int il = 0; il < hp->n_layer; il++) {
        llm_layer *L = &m->layers[il];
        const be_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof *ws; i++) prefault(ws[i]);
        if (progress) progress((float)(il + 1) / (float)hp->n_layer, user);
    }
    *out = m;
    return 0;
fail_msg_arch:
    errf(err, errlen, "%s: missing or invalid 'general.architecture'", path);
fail:
    llm_model_free(m);
    return -1;
}

void llm_model_free(llm_model *m) {
    if (!m) return;
    if (m->layers)
        for (int il = 0; il < m->hp.n_layer; il++) {
            free(m->layers[il].attn_norm);
            free(m->layers[il].ffn_norm);
        }
    free(m->layers);
    free(m->output_norm);
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

static int check_batch(const llm_model *m, const kv_cache *kv, const llm_batch *b, char *err,
                       size_t errlen) {
    const int64_t n_slots = (int64_t)kv->num_blocks * kv->block_size;
    if (b->n_tokens < 1 || b->n_seqs < 1 || b->n_logits < 0)
        return errf(err, errlen, "empty batch (%d tokens, %d sequences)", b->n_tokens, b->n_seqs);
    if (kv->n_layer != m->hp.n_layer || kv->kv_dim != m->hp.n_head_kv * m->hp.head_dim)
        return errf(err, errlen, "KV cache shape does not match the model");
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens)
        return errf(err, errlen, "seq_start must run from 0 to n_tokens");
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seq_start[s + 1] <= b->seq_start[s] || b->seq_start[s + 1] > b->n_tokens)
            return errf(err, errlen, "sequence %d has no rows (seq_start must increase strictly)",
                        s);
    for (int s = 0; s < b->n_seqs; s++) {
        if (b->seq_start[s + 1] <= b->seq_start[s])
            return errf(err, errlen, "sequence %d has no rows", s);
        if (b->context_len[s] < 1 || !b->block_tables[s])
            return errf(err, errlen, "sequence %d has no context or block table", s);
        for (int k = 0; k < (b->context_len[s] + kv->block_size - 1) / kv->block_size; k++)
            if (b->block_tables[s][k] < 0 || b->block_tables[s][k] >= kv->num_blocks)
                return errf(err, errlen, "sequence %d: block table entry %d = %d outside the pool",
                            s, k, b->block_tables[s][k]);
        for (int r = b->seq_start[s]; r < b->seq_start[s + 1]; r++)
            if (b->positions[r] < 0 || b->positions[r] >= b->context_len[s])
                return errf(err, errlen, "row %d: position %d outside the context of %d tokens", r,
                            b->positions[r], b->context_len[s]);
    }
    for (int r = 0; r < b->n_tokens; r++) {
        if (b->token_ids[r] < 0 || b->token_ids[r] >= m->hp.n_vocab)
            return errf(err, errlen, "row %d: token id %d outside the vocabulary (%d)", r,
                        b->token_ids[r], m->hp.n_vocab);
        if (b->slot_mapping[r] < 0 || b->slot_mapping[r] >= n_slots)
            return errf(err, errlen, "row %d: KV slot %d outside the pool (%lld slots)", r,
                        b->slot_mapping[r], (long long)n_slots);
    }
    for (int i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->n_tokens)
            return errf(err, errlen, "logit row %d outside the batch", b->logit_rows[i]);
    return 0;
}

int llm_forward(llm_model *m, backend *be, kv_cache *kv, const llm_batch *b, float *logits,
                char *err, size_t errlen) {
    if (check_batch(m, kv, b, err, errlen)) return -1;
    const llm_hparams *hp = &m->hp;
    const backend_ops *op = be->ops;
    const int T = b->n_tokens, E = hp->n_embd, F = hp->n_ff;
    const int QD = hp->n_head * hp->head_dim, KD = hp->n_head_kv * hp->head_dim;
    const int NL = b->n_logits > 0 ? b->n_logits : 1;
    /* x, h, q, k, v, att, o: activations; g, u: FFN; lx: logit rows */
    size_t need = (size_t)T * (size_t)(2 * E + QD + 2 * KD + QD + E + 2 * F + 8) + (size_t)NL * E;
    if (need > m->arena_cap) {
        float *p = realloc(m->arena, need * sizeof *p);
        if (!p) return errf(err, errlen, "out of memory for a batch of %d tokens", T);
        m->arena = p;
        m->arena_cap = need;
    }
    float *x = m->arena, *h = x + (size_t)T * E, *q = h + (size_t)T * E, *k = q + (size_t)T * QD;
    float *v = k + (size_t)T * KD, *att = v + (size_t)T * KD, *o = att + (size_t)T * QD;
    float *g = o + (size_t)T * E, *u = g + (size_t)T * F, *lx = u + (size_t)T * F;

    op->embed(be, &m->tok_embd, b->token_ids, T, x);
    be_attn ad = {T,
                  b->n_seqs,
                  b->seq_start,
                  b->positions,
                  b->context_len,
                  b->block_tables,
                  hp->n_head,
                  hp->n_head_kv,
                  hp->head_dim,
                  1.0f / sqrtf((float)hp->head_dim),
                  b->row_single};
    for (int il = 0; il < hp->n_layer; il++) {
        const llm_layer *L = &m->layers[il];
        op->rmsnorm(be, x, L->attn_norm, T, E, hp->rms_eps, h);
        const be_weight *qkv_w[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_y[3] = {q, k, v};
        op->matmul_n(be, 3, qkv_w, h, T, qkv_y);
        op->rope(be, q, T, hp->n_head, hp->head_dim, hp->rope_dim, b->positions, hp->rope_theta);
        op->rope(be, k, T, hp->n_head_kv, hp->head_dim, hp->rope_dim, b->positions, hp->rope_theta);
        op->kv_store(be, kv, il, k, v, T, b->slot_mapping);
        op->attention(be, kv, il, &ad, q, att);
        op->matmul(be, &L->wo, att, T, o);
        for (size_t i = 0; i < (size_t)T * E; i++) x[i] += o[i];
        op->rmsnorm(be, x, L->ffn_norm, T, E, hp->rms_eps, h);
        const be_weight *ffn_w[2] = {&L->w_gate, &L->w_up};
        float *ffn_y[2] = {g, u};
        op->matmul_n(be, 2, ffn_w, h, T, ffn_y);
        op->swiglu(be, g, u, (size_t)T * F, g);
        op->matmul(be, &L->w_down, g, T, o);
        for (size_t i = 0; i < (size_t)T * E; i++) x[i] += o[i];
    }
    if (b->n_logits == 0) return 0;
    for (int i = 0; i < b->n_logits; i++)
        memcpy(lx + (size_t)i * E, x + (size_t)b->logit_rows[i] * E, (size_t)E * sizeof *x);
    op->rmsnorm(be, lx, m->output_norm, b->n_logits, E, hp->rms_eps, lx);
    op->matmul(be, &m->output, lx, b->n_logits, logits);
    return 0;
}
