/*
 * cpu_backend.c - the CPU implementation of backend.h.
 *
 * Matmuls quantize the activation rows once (kernels.h) and split output
 * columns between the pool's threads in chunks taken from an atomic
 * counter, so a slow thread never leaves the other idle at the end.
 * Within a chunk, rows are processed in tiles so each weight row is
 * unpacked once per group of KERN_MAX_ROWS activation rows and the weight
 * chunk stays in cache across the whole row tile. Attention walks each
 * sequence's block table directly (no gather into contiguous buffers).
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "kernels.h"
#include "kv_cache.h"
#include "quant.h"
#include "threadpool.h"

#define COL_CHUNK 16
#define ROW_TILE 64

typedef struct {
    float *buf;
    size_t cap;
} scratch;

typedef struct {
    tp_pool *pool;
    const kern_table *k;
    blk_q8 *xq;
    size_t xq_cap;
    scratch *per_thread; /* [n_threads] */
    _Atomic int counter;
} cpu_impl;

static cpu_impl *impl_of(backend *be) { return be->impl; }

static int ensure(scratch *s, size_t n) {
    if (s->cap >= n) return 0;
    float *p = realloc(s->buf, n * sizeof *p);
    if (!p) return -1;
    s->buf = p;
    s->cap = n;
    return 0;
}

/* ---------------- matmul ---------------- */

typedef struct {
    cpu_impl *ci;
    const be_weight *w;
    const float *x;
    int rows;
    float *y;
    kern_gemm_fn gemm; /* NULL: float path */
    int nb;
    int n_chunks;
} mm_job;

static void mm_quant_worker(void *arg, int ith, int nth) {
    mm_job *j = arg;
    (void)nth;
    (void)ith;
    const int64_t n_out = j->w->n_out;
    for (;;) {
        int c = atomic_fetch_add_explicit(&j->ci->counter, 1, memory_order_relaxed);
        if (c >= j->n_chunks) break;
        int64_t c0 = (int64_t)c * COL_CHUNK, c1 = c0 + COL_CHUNK < n_out ? c0 + COL_CHUNK : n_out;
        const uint8_t *w0 = (const uint8_t *)j->w->data + (size_t)c0 * j->w->row_bytes;
        for (int r0 = 0; r0 < j->rows; r0 += ROW_TILE) {
            int nr = j->rows - r0 < ROW_TILE ? j->rows - r0 : ROW_TILE;
            j->gemm(j->nb, w0, j->w->row_bytes, (int)(c1 - c0), j->ci->xq + (size_t)r0 * j->nb,
                    (size_t)j->nb, nr, j->y + (size_t)r0 * n_out + c0, (size_t)n_out);
        }
    }
}

static void mm_float_worker(void *arg, int ith, int nth) {
    mm_job *j = arg;
    (void)nth;
    const int64_t n_in = j->w->n_in, n_out = j->w->n_out;
    float *wrow = j->ci->per_thread[ith].buf;
    for (;;) {
        int c = atomic_fetch_add_explicit(&j->ci->counter, 1, memory_order_relaxed);
        if (c >= j->n_chunks) break;
        int64_t c0 = (int64_t)c * COL_CHUNK, c1 = c0 + COL_CHUNK < n_out ? c0 + COL_CHUNK : n_out;
        for (int64_t col = c0; col < c1; col++) {
            quant_dequant_row(j->w->type, (const uint8_t *)j->w->data + (size_t)col * j->w->row_bytes,
                              wrow, n_in);
            for (int r = 0; r < j->rows; r++) {
                const float *xr = j->x + (size_t)r * n_in;
                float acc = 0;
                for (int64_t i = 0; i < n_in; i++) acc += wrow[i] * xr[i];
                j->y[(size_t)r * n_out + col] = acc;
            }
        }
    }
}

typedef struct {
    cpu_impl *ci;
    const float *x;
    int rows;
    int n_in;
} q_job;

static void quant_worker(void *arg, int ith, int nth) {
    q_job *q = arg;
    int nb = q->n_in / 32;
    for (int r = ith; r < q->rows; r += nth)
        q->ci->k->quantize(q->x + (size_t)r * q->n_in, q->ci->xq + (size_t)r * nb, q->n_in);
}

static void cpu_matmul(backend *be, const be_weight *w, const float *x, int rows, float *y) {
    cpu_impl *ci = impl_of(be);
    mm_job j = {ci, w, x, rows, y, NULL, 0, (int)((w->n_out + COL_CHUNK - 1) / COL_CHUNK)};
    if (w->n_in % 32 == 0) {
        if (w->type == QT_Q4_1) j.gemm = ci->k->gemm_q4_1;
        else if (w->type == QT_Q4_0) j.gemm = ci->k->gemm_q4_0;
        else if (w->type == QT_Q8_0) j.gemm = ci->k->gemm_q8_0;
    }
    if (j.gemm) {
        j.nb = (int)(w->n_in / 32);
        size_t need = (size_t)rows * (size_t)j.nb;
        if (need > ci->xq_cap) {
            blk_q8 *p = realloc(ci->xq, need * sizeof *p);
            if (!p) { /* out of memory: fall back to the float path */
                j.gemm = NULL;
            } else {
                ci->xq = p;
                ci->xq_cap = need;
            }
        }
    }
    if (j.gemm) {
        q_job q = {ci, x, rows, (int)w->n_in};
        if (rows >= 8) {
            tp_run(ci->pool, quant_worker, &q);
        } else {
            quant_worker(&q, 0, 1);
        }
        atomic_store(&ci->counter, 0);
        tp_run(ci->pool, mm_quant_worker, &j);
        return;
    }
    for (int t = 0; t < tp_size(ci->pool); t++)
        if (ensure(&ci->per_thread[t], (size_t)w->n_in)) return; /* OOM: leave y untouched */
    atomic_store(&ci->counter, 0);
    tp_run(ci->pool, mm_float_worker, &j);
}

/* ---------------- elementwise ---------------- */

static void cpu_rmsnorm(backend *be, const float *x, const float *g, int rows, int cols, float eps,
                        float *y) {
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        /* float products summed in double, as ggml does */
        double ss = 0;
        for (int i = 0; i < cols; i++) ss += (double)(xr[i] * xr[i]);
        const float mean = (float)(ss / cols);
        float scale = 1.0f / sqrtf(mean + eps);
        for (int i = 0; i < cols; i++) yr[i] = xr[i] * scale * g[i];
    }
}

static void cpu_rope(backend *be, float *x, int rows, int n_heads, int head_dim, int rope_dim,
                     const int32_t *positions, float theta_base) {
    const kern_table *k = impl_of(be)->k;
    const float theta_scale = powf(theta_base, -2.0f / (float)rope_dim);
    float cs[512];
    int half = rope_dim / 2;
    if (half > 256) half = 256;
    for (int r = 0; r < rows; r++) {
        float theta = (float)positions[r];
        for (int i = 0; i < half; i++) {
            cs[2 * i] = cosf(theta);
            cs[2 * i + 1] = sinf(theta);
            theta *= theta_scale;
        }
        k->rope_rows(x + (size_t)r * n_heads * head_dim, cs, n_heads, head_dim, half);
    }
}

static void cpu_swiglu(backend *be, const float *gate, const float *up, size_t n, float *out) {
    const kern_table *k = impl_of(be)->k;
    for (size_t i = 0; i < n; i += 1 << 20) {
        int c = n - i < (1u << 20) ? (int)(n - i) : 1 << 20;
        k->silu_mul(gate + i, up + i, out + i, c);
    }
}

static void cpu_kv_store(backend *be, kv_cache *kv, int layer, const float *k, const float *v,
                         int rows, const int32_t *slots) {
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *src[2] = {k + (size_t)r * kv->kv_dim, v + (size_t)r * kv->kv_dim};
        for (int kind = 0; kind < 2; kind++) {
            void *dst = kv_slot_ptr(kv, layer, kind, slots[r]);
            if (kv->dtype == KV_F32) {
                memcpy(dst, src[kind], (size_t)kv->kv_dim * 4);
            } else {
                uint16_t *d = dst;
                for (int i = 0; i < kv->kv_dim; i++) d[i] = qt_f32_to_f16(src[kind][i]);
            }
        }
    }
}

static void cpu_embed(backend *be, const be_weight *emb, const int32_t *ids, int n, float *out) {
    (void)be;
    for (int i = 0; i < n; i++)
        quant_dequant_row(emb->type, (const uint8_t *)emb->data + (size_t)ids[i] * emb->row_bytes,
                          out + (size_t)i * emb->n_in, emb->n_in);
}

/* ---------------- attention ---------------- */

typedef struct {
    cpu_impl *ci;
    kv_cache *kv;
    int layer;
    const be_attn *a;
    const float *q;
    float *out;
    const int32_t *row_seq; /* row -> sequence */
    int n_tasks;
} attn_job;

/*
 * One (row, head) task: scores over the row's causal context read through
 * the block table, softmax, weighted sum of V. With an f16 cache the
 * arithmetic follows ggml's f16 matmuls exactly (see kernels.h): q and the
 * softmax weights are rounded to f16, and the accumulation shape depends on
 * whether the sequence has one row in this step (llama.cpp's vec_dot path)
 * or several (its tiled path). The V sum is kept in `lanes` accumulators
 * indexed by position, so the result does not depend on the block layout.
 */
static void attn_worker(void *arg, int ith, int nth) {
    attn_job *j = arg;
    (void)nth;
    const be_attn *a = j->a;
    kv_cache *kv = j->kv;
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv, bs = kv->block_size;
    float *buf = j->ci->per_thread[ith].buf; /* scores[ctx] | q[hd] | acc[64 * hd] */
    const kern_table *k = j->ci->k;
    const int f16 = kv->dtype == KV_F16;
    for (;;) {
        int task = atomic_fetch_add_explicit(&j->ci->counter, 1, memory_order_relaxed);
        if (task >= j->n_tasks) break;
        int t = task / a->n_head, h = task % a->n_head, kvh = h / group;
        int s = j->row_seq[t];
        const int single = a->row_single ? a->row_single[t] != 0
                                         : a->seq_start[s + 1] - a->seq_start[s] == 1;
        const int lanes = single ? 64 : 16;
        const int32_t *table = a->block_tables[s];
        int n_ctx = a->positions[t] + 1;
        const float *q32 = j->q + ((size_t)t * a->n_head + h) * hd;
        float *scores = buf, *q = buf + n_ctx, *acc = q + hd;
        for (int i = 0; i < hd; i++) q[i] = f16 ? qt_f16_to_f32(qt_f32_to_f16(q32[i])) : q32[i];
        float mx = -INFINITY;
        for (int p = 0; p < n_ctx; p++) {
            int32_t slot = table[p / bs] * bs + p % bs;
            const void *kp = (const uint8_t *)kv_slot_ptr(kv, j->layer, 0, slot) +
                             (size_t)kvh * hd * kv->elt_size;
            float sc;
            if (f16) {
                sc = single ? k->dot_f16_x4(kp, q, hd) : k->dot_f16(kp, q, hd);
            } else {
                const float *kf = kp;
                sc = 0;
                for (int i = 0; i < hd; i++) sc = fmaf(kf[i], q[i], sc);
            }
            sc *= a->scale;
            scores[p] = sc;
            if (sc > mx) mx = sc;
        }
        double sum = k->softmax_exp(scores, n_ctx, mx);
        float inv = (float)(1.0 / sum);
        memset(acc, 0, (size_t)hd * (size_t)lanes * sizeof *acc);
        for (int p = 0; p < n_ctx; p++) {
            int32_t slot = table[p / bs] * bs + p % bs;
            const void *vp = (const uint8_t *)kv_slot_ptr(kv, j->layer, 1, slot) +
                             (size_t)kvh * hd * kv->elt_size;
            float wgt = scores[p] * inv;
            float *lane = acc + (size_t)(p % lanes) * hd;
            if (f16) {
                k->axpy_f16(qt_f16_to_f32(qt_f32_to_f16(wgt)), vp, lane, hd);
            } else {
                const float *vf = vp;
                for (int i = 0; i < hd; i++) lane[i] = fmaf(wgt, vf[i], lane[i]);
            }
        }
        float *res = j->out + ((size_t)t * a->n_head + h) * hd;
        for (int i = 0; i < hd; i++) {
            float l[64];
            for (int ln = 0; ln < lanes; ln++) l[ln] = acc[(size_t)ln * hd + i];
            res[i] = single ? kern_reduce64(l) : kern_tree16(l);
        }
    }
}

static void cpu_attention(backend *be, kv_cache *kv, int layer, const be_attn *a, const float *q,
                          float *out) {
    cpu_impl *ci = impl_of(be);
    int max_ctx = 0;
    for (int s = 0; s < a->n_seqs; s++)
        if (a->context_len[s] > max_ctx) max_ctx = a->context_len[s];
    for (int t = 0; t < tp_size(ci->pool); t++)
        if (ensure(&ci->per_thread[t], (size_t)max_ctx + 65 * (size_t)a->head_dim)) return;
    int32_t *row_seq = malloc((size_t)(a->n_tokens > 0 ? a->n_tokens : 1) * sizeof *row_seq);
    if (!row_seq) return;
    for (int s = 0; s < a->n_seqs; s++)
        for (int r = a->seq_start[s]; r < a->seq_start[s + 1]; r++) row_seq[r] = s;
    attn_job j = {ci, kv, layer, a, q, out, row_seq, a->n_tokens * a->n_head};
    atomic_store(&ci->counter, 0);
    tp_run(ci->pool, attn_worker, &j);
    free(row_seq);
}

static const backend_ops CPU_OPS = {
    "cpu", cpu_matmul, cpu_rmsnorm, cpu_rope, cpu_swiglu, cpu_kv_store, cpu_attention, cpu_embed,
};

backend *backend_cpu_create(int n_threads, char *err, size_t errlen) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    backend *be = calloc(1, sizeof *be);
    cpu_impl *ci = calloc(1, sizeof *ci);
    if (!be || !ci) goto oom;
    ci->k = kern_select();
    ci->per_thread = calloc((size_t)n_threads, sizeof *ci->per_thread);
    if (!ci->per_thread) goto oom;
    ci->pool = tp_create(n_threads);
    if (!ci->pool) {
        snprintf(err, errlen, "cannot start %d CPU threads", n_threads);
        free(ci->per_thread);
        free(ci);
        free(be);
        return NULL;
    }
    be->ops = &CPU_OPS;
    be->n_threads = n_threads;
    be->impl = ci;
    return be;
oom:
    snprintf(err, errlen, "out of memory creating the CPU backend");
    if (ci) free(ci->per_thread);
    free(ci);
    free(be);
    return NULL;
}

const char *backend_cpu_isa(const backend *be) { return ((const cpu_impl *)be->impl)->k->isa; }

void backend_free(backend *be) {
    if (!be) return;
    cpu_impl *ci = be->impl;
    if (ci) {
        tp_free(ci->pool);
        for (int t = 0; t < be->n_threads; t++) free(ci->per_thread[t].buf);
        free(ci->per_thread);
        free(ci->xq);
        free(ci);
    }
    free(be);
}
