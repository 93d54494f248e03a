/*
 * cpu_rowops.c - the backend's row-wise ops: rmsnorm, RoPE (with its
 * (cos, sin) table; interleaved or NeoX pairs), SwiGLU, storing K and V rows
 * into the cache, and embedding lookups. cpu_ops_ext.c holds the ops the
 * non-Llama architectures add (LayerNorm, bias, GELU), split with
 * cpu_par_rows from here; host_for (the engine's sampling) shares the
 * same dynamic split.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "core/backend/cpu/cpu_internal.h"
#include "core/quant.h"

/*
 * Row-wise ops run on the calling thread for up to a decode batch of rows
 * (a barrier costs more than norming or rotating a few dozen rows) and are
 * split across the pool in blocks of rows for a prefill, where serial
 * elementwise work would leave the other threads idle for a noticeable
 * share of the step (docs/benchmarks.md, "Figures moved from code
 * comments").
 */
#define PAR_MIN_ROWS 64

typedef struct {
    cpu_impl *ci;
    void (*fn)(void *ctx, int r0, int r1);
    void *ctx;
    int rows, grain;
} par_job;

static void par_worker(void *arg, int ith, int nth) {
    par_job *j = arg;
    (void)ith;
    (void)nth;
    for (int r; (r = atomic_fetch_add_explicit(&j->ci->counter, j->grain, memory_order_relaxed)) <
                j->rows;)
        j->fn(j->ctx, r, r + j->grain < j->rows ? r + j->grain : j->rows);
}

/* fn(ctx, r0, r1) over [0, rows) in blocks of grain rows */
void cpu_par_rows(cpu_impl *ci, int rows, int grain, void (*fn)(void *ctx, int r0, int r1),
                  void *ctx) {
    if (rows < PAR_MIN_ROWS || tp_size(ci->pool) == 1) {
        fn(ctx, 0, rows);
        return;
    }
    par_job j = {ci, fn, ctx, rows, grain};
    atomic_store(&ci->counter, 0);
    tp_run_any(ci->pool, par_worker, &j);
}

typedef struct {
    void (*fn)(void *ctx, int i);
    void *ctx;
} host_job;

static void host_items(void *arg, int i0, int i1) {
    const host_job *h = arg;
    for (int i = i0; i < i1; i++) h->fn(h->ctx, i);
}

/* backend.h host_for: items claimed one at a time (an item is a whole
 * sequence's sampling, large next to the claim); a single item runs on the
 * caller with no job posted */
void cpu_host_for(backend *be, int n, void (*fn)(void *ctx, int i), void *ctx) {
    cpu_impl *ci = impl_of(be);
    host_job h = {fn, ctx};
    if (n < 2 || tp_size(ci->pool) == 1) {
        host_items(&h, 0, n);
        return;
    }
    par_job j = {ci, host_items, &h, n, 1};
    atomic_store(&ci->counter, 0);
    tp_run_any(ci->pool, par_worker, &j);
}

typedef struct {
    const kern_table *k;
    const float *x, *g;
    int cols;
    float eps;
    float *y;
} norm_ctx;

static void rmsnorm_rows(void *arg, int r0, int r1) {
    const norm_ctx *c = arg;
    size_t o = (size_t)r0 * c->cols;
    c->k->rmsnorm(c->x + o, c->g, r1 - r0, c->cols, c->eps, c->y + o);
}

void cpu_rmsnorm(backend *be, const float *x, const float *g, int rows, int cols, float eps,
                 float *y) {
    cpu_impl *ci = impl_of(be);
    norm_ctx c = {ci->k, x, g, cols, eps, y};
    cpu_par_rows(ci, rows, 8, rmsnorm_rows, &c); /* 8: the AVX-512 kernel's row group */
}

/*
 * RoPE: the (cos, sin) table of each row depends only on its position, the
 * base and the rotary dims, which are the same for Q and K of every layer in
 * a forward pass, so it is computed on the first call and reused while
 * those match (positions compared by value).
 */
static int rope_table(cpu_impl *ci, int rows, int rope_dim, const int32_t *positions,
                      float theta_base) {
    int half = rope_dim / 2;
    if (ci->rope_rows == rows && ci->rope_dim == rope_dim && ci->rope_theta == theta_base &&
        memcmp(ci->rope_pos, positions, (size_t)rows * sizeof *positions) == 0)
        return 0;
    if (cpu_grow((void **)&ci->rope_pos, &ci->rope_pos_cap, (size_t)rows, sizeof *ci->rope_pos) ||
        cpu_grow((void **)&ci->rope_cs, &ci->rope_cs_cap, (size_t)rows * 2 * (size_t)half,
                 sizeof *ci->rope_cs)) {
        ci->rope_rows = -1;
        return -1;
    }
    const float theta_scale = powf(theta_base, -2.0f / (float)rope_dim);
    for (int r = 0; r < rows; r++) {
        float theta = (float)positions[r], *cs = ci->rope_cs + (size_t)r * 2 * half;
        for (int i = 0; i < half; i++) {
            cs[2 * i] = cosf(theta);
            cs[2 * i + 1] = sinf(theta);
            theta *= theta_scale;
        }
    }
    memcpy(ci->rope_pos, positions, (size_t)rows * sizeof *positions);
    ci->rope_rows = rows;
    ci->rope_dim = rope_dim;
    ci->rope_theta = theta_base;
    return 0;
}

typedef struct {
    const kern_table *k;
    float *x;
    const float *cs;
    int n_heads, head_dim, half;
} rope_ctx;

static void rope_rows_fn(void *arg, int r0, int r1) {
    const rope_ctx *c = arg;
    for (int r = r0; r < r1; r++)
        c->k->rope_rows(c->x + (size_t)r * c->n_heads * c->head_dim,
                        c->cs + (size_t)r * 2 * c->half, c->n_heads, c->head_dim, c->half);
}

/* NeoX pairs (i, i + half), with the interleaved kernel's rounding */
static void rope_neox_rows_fn(void *arg, int r0, int r1) {
    const rope_ctx *c = arg;
    for (int r = r0; r < r1; r++) {
        const float *cs = c->cs + (size_t)r * 2 * c->half;
        for (int h = 0; h < c->n_heads; h++) {
            float *x = c->x + ((size_t)r * c->n_heads + h) * c->head_dim;
            for (int i = 0; i < c->half; i++) {
                const float x0 = x[i], x1 = x[i + c->half], co = cs[2 * i], si = cs[2 * i + 1];
                x[i] = fmaf(x0, co, -(x1 * si));
                x[i + c->half] = fmaf(x0, si, x1 * co);
            }
        }
    }
}

void cpu_rope(backend *be, float *x, int rows, int n_heads, int head_dim, int rope_dim,
              const int32_t *positions, float theta_base, int neox) {
    cpu_impl *ci = impl_of(be);
    if (rope_table(ci, rows, rope_dim, positions, theta_base)) return; /* out of memory */
    rope_ctx c = {ci->k, x, ci->rope_cs, n_heads, head_dim, rope_dim / 2};
    cpu_par_rows(ci, rows, 4, neox ? rope_neox_rows_fn : rope_rows_fn, &c);
}

typedef struct {
    const kern_table *k;
    const float *gate, *up;
    float *out;
    int n; /* elements per row */
} swiglu_ctx;

static void swiglu_rows(void *arg, int r0, int r1) {
    const swiglu_ctx *c = arg;
    size_t o = (size_t)r0 * c->n;
    c->k->silu_mul(c->gate + o, c->up + o, c->out + o, (r1 - r0) * c->n);
}

void cpu_swiglu(backend *be, const float *gate, const float *up, size_t n, float *out) {
    cpu_impl *ci = impl_of(be);
    /* split into rows of 256 for the pool (elementwise: any split works) */
    const int row = 256;
    size_t rows = n / row;
    if (rows > 0 && rows < (size_t)INT32_MAX) {
        swiglu_ctx c = {ci->k, gate, up, out, row};
        cpu_par_rows(ci, (int)rows, 4, swiglu_rows, &c);
    }
    for (size_t i = rows * row; i < n; i += 1 << 20) {
        int c = n - i < (1u << 20) ? (int)(n - i) : 1 << 20;
        ci->k->silu_mul(gate + i, up + i, out + i, c);
    }
}

typedef struct {
    const kern_table *k;
    kv_cache *kv;
    int layer;
    const float *src[2];
    const int32_t *slots;
} kv_ctx;

static void kv_store_rows(void *arg, int r0, int r1) {
    const kv_ctx *c = arg;
    kv_cache *kv = c->kv;
    for (int r = r0; r < r1; r++)
        for (int kind = 0; kind < 2; kind++) {
            const float *src = c->src[kind] + (size_t)r * kv->kv_dim;
            void *dst = kv_slot_ptr(kv, c->layer, kind, c->slots[r]);
            if (kv->dtype == KV_F32) memcpy(dst, src, (size_t)kv->kv_dim * 4);
            else c->k->f32_to_f16(src, dst, kv->kv_dim);
        }
}

void cpu_kv_store(backend *be, kv_cache *kv, int layer, const float *k, const float *v, int rows,
                  const int32_t *slots) {
    cpu_impl *ci = impl_of(be);
    kv_ctx c = {ci->k, kv, layer, {k, v}, slots};
    cpu_par_rows(ci, rows, 4, kv_store_rows, &c);
}

/* A weight packed for the output (tied embeddings) is read back from its
 * packed copy: its mapped original was dropped and stays out of memory. */
void cpu_embed(backend *be, const be_weight *emb, const int32_t *ids, int n, float *out) {
    cpu_impl *ci = impl_of(be);
    const packed_w *pk = cpu_packed_find(ci, emb->data);
    if (pk && cpu_ensure(&ci->per_thread[0], emb->row_bytes / sizeof(float) + 1) == 0) {
        const int nb = (int)(emb->n_in / 32);
        for (int i = 0; i < n; i++) {
            kern_unpack_column(emb->type, nb,
                               pk->data + (size_t)(ids[i] / KERN_PACK_COLS) * pk->group_bytes,
                               ids[i] % KERN_PACK_COLS, ci->per_thread[0].buf);
            quant_dequant_row(emb->type, ci->per_thread[0].buf, out + (size_t)i * emb->n_in,
                              emb->n_in);
        }
        return;
    }
    for (int i = 0; i < n; i++)
        quant_dequant_row(emb->type, (const uint8_t *)emb->data + (size_t)ids[i] * emb->row_bytes,
                          out + (size_t)i * emb->n_in, emb->n_in);
}
