/*
 * cpu_internal.h - what the CPU backend's files share (internal to
 * core/backend/cpu): the backend's state and the ops each file implements.
 * cpu_backend.c creates and frees the state and holds the ops table;
 * cpu_matmul.c (matmuls and their work splitting), cpu_packed.c (packed
 * copies of weights and the arenas they live in), cpu_rowops.c (row-wise
 * ops, RoPE table, embedding), cpu_attention.c (attention) and
 * cpu_attn_plan.c (how attention is cut into tasks) and cpu_ops_ext.c
 * (LayerNorm, bias, GELU) each use the fields
 * of their concern. Everything runs on the thread that calls the backend,
 * apart from the jobs it hands to the pool's workers.
 */
#ifndef CPU_INTERNAL_H
#define CPU_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/backend/backend.h"
#include "core/backend/cpu/kernels.h"
#include "core/backend/cpu/threadpool.h"
#include "core/kv_cache.h"

/* A weight's packed copy: group_bytes per group of KERN_PACK_COLS columns. */
typedef struct packed_w {
    const void *src; /* NULL: empty slot */
    uint8_t *data;
    size_t group_bytes;
} packed_w;

/* Row `row`, KV heads [kvh, kvh + n_kvh), and of each the nq query heads
 * from its first + h (n_kvh > 1: all of them, nq == the group size). */
typedef struct attn_task {
    int32_t row;
    int16_t kvh, n_kvh, h, nq;
} attn_task;

/* A thread's scratch floats, grown by cpu_ensure. */
typedef struct {
    float *buf;
    size_t cap;
} scratch;

/* One thread's range of matmul chunks (see split_next), on its own cache line. */
typedef struct {
    _Alignas(64) _Atomic uint64_t r;
} split_range;

typedef struct {
    tp_pool *pool;
    const kern_table *k;
    be_numerics numerics;
    /* cpu_matmul.c */
    /* the activation rows in the formats this matmul's weights read, one
     * allocation: blk_q8 rows, then block_q8_K rows, then rows rounded to
     * f16 and to bf16 (see mm_act in cpu_matmul.c) */
    blk_q8 *xq;
    size_t xq_cap;
    int32_t *xc; /* their kern_q8_corr words, for exact Q8_0 weights */
    size_t xc_cap;
    split_range *ranges; /* [n_threads] */
    /* cpu_packed.c: packed copies of weights (either numerics), an open-addressing table
     * keyed by the weight's data pointer; pk_cap is a power of two */
    packed_w *pk;
    size_t pk_n, pk_cap;
    struct pk_arena *arena; /* where packed copies live; newest first */
    scratch *per_thread;    /* [n_threads], for any op */
    _Atomic int counter;    /* work claimed so far in the job running now */
    /* cpu_attention.c: row -> sequence, and each sequence's slot byte offsets */
    int32_t *row_seq;
    size_t row_seq_cap;
    size_t *seq_off_start, seq_off_cap;
    size_t *slot_off, slot_off_cap;
    /* cpu_attn_plan.c */
    struct attn_task *attn_tasks; /* this call's attention tasks */
    size_t attn_tasks_cap;
    uint64_t *row_key; /* (context, row) sort keys of decode rows */
    size_t row_key_cap;
    /* cpu_rowops.c: RoPE (cos, sin) per row, for the positions in rope_pos */
    int rope_rows, rope_dim;
    float rope_theta;
    int32_t *rope_pos;
    size_t rope_pos_cap;
    float *rope_cs;
    size_t rope_cs_cap;
} cpu_impl;

static inline cpu_impl *impl_of(backend *be) { return be->impl; }

static inline int cpu_grow(void **p, size_t *cap, size_t n, size_t elt) {
    if (*cap >= n) return 0;
    void *q = realloc(*p, n * elt);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static inline int cpu_ensure(scratch *s, size_t n) {
    if (s->cap >= n) return 0;
    float *p = realloc(s->buf, n * sizeof *p);
    if (!p) return -1;
    s->buf = p;
    s->cap = n;
    return 0;
}

static inline int cpu_row_is_single(const cpu_impl *ci, const be_attn *a, int t) {
    const int s = ci->row_seq[t];
    return a->row_single ? a->row_single[t] != 0 : a->seq_start[s + 1] - a->seq_start[s] == 1;
}

/* cpu_packed.c */
packed_w cpu_packed_for(cpu_impl *ci, const be_weight *w, kern_gemm_packed_fn *fn);
/* The packed copy of the weight whose data is src, NULL when it has none. */
const packed_w *cpu_packed_find(const cpu_impl *ci, const void *src);
/* Drops every packed copy and the arenas that held them. */
void cpu_packed_forget(cpu_impl *ci);
/* cpu_attn_plan.c */
int cpu_attn_plan(cpu_impl *ci, const be_attn *a);
/* the backend ops (backend.h), by file: cpu_matmul.c */
void cpu_matmul(backend *be, const be_weight *w, const float *x, int rows, float *y);
void cpu_matmul_n(backend *be, int n, const be_weight *const *w, const float *x, int rows,
                  float *const *y);
/* cpu_rowops.c */
void cpu_rmsnorm(backend *be, const float *x, const float *g, int rows, int cols, float eps,
                 float *y);
void cpu_rope(backend *be, float *x, int rows, int n_heads, int head_dim, int rope_dim,
              const int32_t *positions, float theta_base, int neox);
void cpu_swiglu(backend *be, const float *gate, const float *up, size_t n, float *out);
void cpu_kv_store(backend *be, kv_cache *kv, int layer, const float *k, const float *v, int rows,
                  const int32_t *slots);
void cpu_embed(backend *be, const be_weight *emb, const int32_t *ids, int n, float *out);
void cpu_host_for(backend *be, int n, void (*fn)(void *ctx, int i), void *ctx);
/* fn(ctx, r0, r1) over [0, rows) in blocks of grain rows, on the pool for
 * a prefill's rows, on the calling thread for a few */
void cpu_par_rows(cpu_impl *ci, int rows, int grain, void (*fn)(void *ctx, int r0, int r1),
                  void *ctx);
/* cpu_ops_ext.c */
void cpu_layernorm(backend *be, const float *x, const float *g, const float *b, int rows, int cols,
                   float eps, float *y);
void cpu_add_bias(backend *be, float *x, const float *b, int rows, int cols);
void cpu_gelu(backend *be, const float *x, const float *up, size_t n, float *out);
/* cpu_attention.c */
void cpu_attention(backend *be, kv_cache *kv, int layer, const be_attn *a, const float *q,
                   float *out);

#endif
