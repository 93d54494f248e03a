/*
 * cpu_attention.c - the backend's attention: it walks each sequence's
 * block table directly (no gather into contiguous buffers), computing the
 * byte offset of every context position once per call, and runs the tasks
 * cpu_attn_plan lays out on the pool. A sliding window (be_attn.window)
 * narrows each row's context to its last `window` positions.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "core/backend/cpu/cpu_internal.h"

typedef struct {
    cpu_impl *ci;
    const be_attn *a;
    const uint8_t *k0, *v0; /* this layer's K and V at slot offset 0 */
    size_t head_bytes;      /* one KV head */
    int elt_size;
    const float *q;
    float *out;
    const struct attn_task *tasks;
    int n_tasks;
} attn_job;

/* One head over an f32 cache: llama.cpp's shapes (see kern_attn_f16_fn) in
 * plain float arithmetic. */
static void attn_f32_head(const uint8_t *k, const uint8_t *v, const size_t *off, int n_ctx,
                          const float *q, int hd, float scale, int single, const kern_table *kt,
                          float *work, float *res) {
    const int lanes = single ? 64 : 16;
    float *scores = work, *acc = work + n_ctx + hd, mx = -INFINITY;
    for (int p = 0; p < n_ctx; p++) {
        const float *kf = (const float *)(k + off[p]);
        float sc = 0;
        for (int i = 0; i < hd; i++) sc = fmaf(kf[i], q[i], sc);
        sc *= scale;
        scores[p] = sc;
        if (sc > mx) mx = sc;
    }
    float inv = (float)(1.0 / kt->softmax_exp(scores, n_ctx, mx));
    memset(acc, 0, (size_t)hd * (size_t)lanes * sizeof *acc);
    for (int p = 0; p < n_ctx; p++) {
        const float *vf = (const float *)(v + off[p]);
        float wgt = scores[p] * inv, *lane = acc + (size_t)(p % lanes) * hd;
        for (int i = 0; i < hd; i++) lane[i] = fmaf(wgt, vf[i], lane[i]);
    }
    for (int i = 0; i < hd; i++) {
        float l[64];
        for (int ln = 0; ln < lanes; ln++) l[ln] = acc[(size_t)ln * hd + i];
        res[i] = single ? kern_reduce64(l) : kern_tree16(l);
    }
}

/* One task: scores over the row's causal context read through the block
 * table, softmax, weighted sum of V. With an f16 cache the arithmetic
 * follows ggml's f16 matmuls exactly (kernels.h, attn_f16): the
 * accumulation shape depends on whether the sequence has one row in this
 * step (llama.cpp's vec_dot path) or several (its tiled path). */
static void attn_run(const attn_job *j, const attn_task *task, float *work) {
    const be_attn *a = j->a;
    const cpu_impl *ci = j->ci;
    const int t = task->row, hd = a->head_dim, single = cpu_row_is_single(ci, a, t);
    const int group = a->n_head / a->n_head_kv, h = task->kvh * group + task->h, nq = task->nq;
    /* a sliding window starts the row's context later: its first position
     * is skipped in the offsets (context positions are relative from then on) */
    const int first =
        a->window > 0 && a->positions[t] >= a->window ? a->positions[t] - a->window + 1 : 0;
    const size_t *off = ci->slot_off + ci->seq_off_start[ci->row_seq[t]] + first;
    const int n_ctx = a->positions[t] + 1 - first;
    const uint8_t *k = j->k0 + (size_t)task->kvh * j->head_bytes,
                  *v = j->v0 + (size_t)task->kvh * j->head_bytes;
    const float *q = j->q + ((size_t)t * a->n_head + h) * hd;
    float *res = j->out + ((size_t)t * a->n_head + h) * hd;
    if (j->elt_size == 2) {
        ci->k->attn_f16_row(k, v, j->head_bytes, task->n_kvh, off, n_ctx, q, nq, hd, a->scale,
                            single, work, res);
        return;
    }
    for (int g = 0; g < task->n_kvh; g++, k += j->head_bytes, v += j->head_bytes)
        for (int i = 0; i < nq; i++, q += hd, res += hd)
            attn_f32_head(k, v, off, n_ctx, q, hd, a->scale, single, ci->k, work, res);
}

static void attn_worker(void *arg, int ith, int nth) {
    attn_job *j = arg;
    (void)nth;
    float *work = j->ci->per_thread[ith].buf;
    for (int i;
         (i = atomic_fetch_add_explicit(&j->ci->counter, 1, memory_order_relaxed)) < j->n_tasks;)
        attn_run(j, &j->tasks[i], work);
}

void cpu_attention(backend *be, kv_cache *kv, int layer, const be_attn *a, const float *q,
                   float *out) {
    cpu_impl *ci = impl_of(be);
    int max_ctx = 0;
    size_t total_ctx = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        if (a->context_len[s] > max_ctx) max_ctx = a->context_len[s];
        total_ctx += (size_t)a->context_len[s];
    }
    for (int t = 0; t < tp_size(ci->pool); t++)
        if (cpu_ensure(&ci->per_thread[t], kern_attn_work(max_ctx, a->head_dim, a->n_head))) return;
    if (cpu_grow((void **)&ci->row_seq, &ci->row_seq_cap, (size_t)a->n_tokens,
                 sizeof *ci->row_seq) ||
        cpu_grow((void **)&ci->seq_off_start, &ci->seq_off_cap, (size_t)a->n_seqs,
                 sizeof *ci->seq_off_start) ||
        cpu_grow((void **)&ci->slot_off, &ci->slot_off_cap, total_ctx, sizeof *ci->slot_off))
        return;
    /* Byte offset of each context position from its layer's slot 0: the
     * same for K and V and every head, so it is computed once per call. */
    const size_t bs = (size_t)kv->block_size, row_bytes = (size_t)kv->kv_dim * kv->elt_size;
    size_t *off = ci->slot_off;
    for (int s = 0; s < a->n_seqs; s++) {
        ci->seq_off_start[s] = (size_t)(off - ci->slot_off);
        for (int r = a->seq_start[s]; r < a->seq_start[s + 1]; r++) ci->row_seq[r] = s;
        const int32_t *table = a->block_tables[s];
        for (int p = 0; p < a->context_len[s]; p++)
            *off++ = (size_t)table[p / bs] * kv->block_bytes + (size_t)(p % bs) * row_bytes;
    }
    const int n_tasks = cpu_attn_plan(ci, a);
    if (n_tasks < 0) return;
    attn_job j = {.ci = ci,
                  .a = a,
                  .k0 = kv_slot_ptr(kv, layer, 0, 0),
                  .v0 = kv_slot_ptr(kv, layer, 1, 0),
                  .head_bytes = (size_t)a->head_dim * kv->elt_size,
                  .elt_size = (int)kv->elt_size,
                  .q = q,
                  .out = out,
                  .tasks = ci->attn_tasks,
                  .n_tasks = n_tasks};
    atomic_store(&ci->counter, 0);
    tp_run_any(ci->pool, attn_worker, &j);
}
