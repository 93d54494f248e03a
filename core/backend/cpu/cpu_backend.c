/*
 * cpu_backend.c - the CPU implementation of backend.h.
 *
 * Matmuls quantize the activation rows once (kernels.h) and split output
 * columns between the pool's threads
 * as one contiguous range each, so every thread streams its weights
 * sequentially; a thread that finishes early takes chunks from the end of
 * another's range, so a slow thread never leaves the other idle. Weights
 * that read the same input (Q, K, V; gate, up) share one job. Within a
 * chunk of COL_CHUNK columns every activation row is processed while the
 * chunk's weights sit in cache. Attention walks each sequence's block table
 * directly (no gather into contiguous buffers). Jobs run with tp_run_any:
 * all work is claimed dynamically, so a worker the OS has not scheduled yet
 * does not hold a step up.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/backend/backend.h"
#include "core/backend/cpu/kernels.h"
#include "core/backend/cpu/threadpool.h"
#include "core/kv_cache.h"
#include "core/quant.h"

/* A chunk is 16 weight columns (the AVX-512 kernels' width: 6 to 15 KB of
 * Q4_1, resident in L1 while all rows pass); rows go to the kernel 256 at a
 * time, so the column-lane kernels transpose a chunk at most twice in a
 * 512-row prefill. */
#define COL_CHUNK 16
_Static_assert(COL_CHUNK == KERN_PACK_COLS, "a matmul chunk is one packed group");
#define ROW_TILE 256

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
    blk_q8 *xq; /* quantized activation rows */
    size_t xq_cap;
    int32_t *xc; /* their kern_q8_corr words, for exact Q8_0 weights */
    size_t xc_cap;
    split_range *ranges; /* [n_threads] */
    /* packed copies of weights (either numerics), an open-addressing table
     * keyed by the weight's data pointer; pk_cap is a power of two */
    struct packed_w *pk;
    size_t pk_n, pk_cap;
    struct pk_arena *arena; /* where packed copies live; newest first */
    scratch *per_thread;    /* [n_threads] */
    _Atomic int counter;
    /* attention: row -> sequence, and each sequence's slot byte offsets */
    int32_t *row_seq;
    size_t row_seq_cap;
    size_t *seq_off_start, seq_off_cap;
    size_t *slot_off, slot_off_cap;
    struct attn_task *attn_tasks; /* this call's attention tasks */
    size_t attn_tasks_cap;
    uint64_t *row_key; /* (context, row) sort keys of decode rows */
    size_t row_key_cap;
    /* RoPE (cos, sin) per row, for the positions in rope_pos */
    int rope_rows, rope_dim;
    float rope_theta;
    int32_t *rope_pos;
    size_t rope_pos_cap;
    float *rope_cs;
    size_t rope_cs_cap;
} cpu_impl;

static cpu_impl *impl_of(backend *be) { return be->impl; }

static int grow(void **p, size_t *cap, size_t n, size_t elt) {
    if (*cap >= n) return 0;
    void *q = realloc(*p, n * elt);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int ensure(scratch *s, size_t n) {
    if (s->cap >= n) return 0;
    float *p = realloc(s->buf, n * sizeof *p);
    if (!p) return -1;
    s->buf = p;
    s->cap = n;
    return 0;
}

/* ---------------- work splitting ---------------- */

/*
 * Matmul chunks [0, n) are split into one contiguous range per thread, so
 * each thread reads its weights as one sequential stream (prefetchers follow
 * it; interleaved chunks would restart the stream at every chunk). A thread
 * that finishes its range takes chunks from the end of another's, so a late
 * or preempted thread does not hold the job up. A range is packed as
 * next | end << 32 in one atomic word: the owner advances next, a thief
 * lowers end, and a CAS keeps them from taking the same chunk.
 */
static void split_init(cpu_impl *ci, int n) {
    const int nth = tp_size(ci->pool);
    for (int i = 0; i < nth; i++) {
        uint64_t lo = (uint64_t)((int64_t)n * i / nth), hi = (uint64_t)((int64_t)n * (i + 1) / nth);
        atomic_store_explicit(&ci->ranges[i].r, lo | hi << 32, memory_order_relaxed);
    }
}

/* Claims chunks [*first, *first + return value); 0 when none are left. A
 * claim is a quarter of what remains, at most SPLIT_MAX_CLAIM chunks: fewer
 * atomic operations (each also waits for the thread's outstanding memory
 * accesses), and little left stranded with a thread that gets preempted.
 * The owner claims from the front of its range, a thief from the end. */
#define SPLIT_MAX_CLAIM 8
static int split_next(cpu_impl *ci, int ith, int nth, int *first) {
    for (int k = 0; k < nth; k++) {
        _Atomic uint64_t *r = &ci->ranges[(ith + k) % nth].r;
        uint64_t v = atomic_load_explicit(r, memory_order_relaxed);
        for (;;) {
            uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
            if (lo >= hi) break;
            uint32_t n = (hi - lo + 3) / 4;
            if (n > SPLIT_MAX_CLAIM) n = SPLIT_MAX_CLAIM;
            uint64_t nv = k == 0 ? v + n : v - ((uint64_t)n << 32);
            if (atomic_compare_exchange_weak_explicit(r, &v, nv, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *first = (int)(k == 0 ? lo : hi - n);
                return (int)n;
            }
        }
    }
    return 0;
}

/* ---------------- packed weights ---------------- */

/*
 * With a kernel table that has packed GEMMs for the backend's numerics
 * (AVX-512: exact and fast), every quantized weight is packed (kernels.h,
 * KERN_PACK_COLS) on its first matmul into memory the backend owns, and
 * later matmuls read only the packed copy: per block the column-lane
 * layout is a few loads instead of a transposition (exact numerics, per
 * core, weights in cache: 131-151 GMAC/s for one row where the row-major
 * kernel does 36, 193 for 16 rows where the transposing kernel does 148).
 * A weight in a file mapping (be_weight.mapped) then has its whole pages
 * dropped from the process (MADV_DONTNEED; read again from the file only
 * if touched, e.g. embedding rows of a tied output matrix), so the weights
 * stay resident once. Packing goes weight by weight: the peak is the model
 * plus its largest matrix.
 *
 * Packed copies are carved from arenas of at least PK_ARENA bytes, 2 MiB
 * aligned and advised as transparent huge pages: a decode step streams
 * every weight once, and with 4 KiB pages each page of that stream costs a
 * TLB miss and stops the hardware prefetchers at its boundary. Arenas are
 * only released all together (backend_cpu_forget_weights).
 */
#define PK_HUGE ((size_t)2 << 20)
#define PK_ARENA ((size_t)32 << 20)
typedef struct pk_arena {
    struct pk_arena *next;
    void *map; /* the mapping, map_len bytes; base is its first 2 MiB boundary */
    size_t map_len;
    uint8_t *base;
    size_t used, cap;
} pk_arena;

/* n bytes (a multiple of 64), 64-byte aligned; NULL when out of memory. */
static void *pk_alloc(cpu_impl *ci, size_t n) {
    pk_arena *a = ci->arena;
    if (a && a->cap - a->used >= n) {
        void *p = a->base + a->used;
        a->used += n;
        return p;
    }
    const size_t cap = n > PK_ARENA ? (n + PK_HUGE - 1) / PK_HUGE * PK_HUGE : PK_ARENA;
    a = malloc(sizeof *a);
    if (!a) return NULL;
    a->map_len = cap + PK_HUGE;
    a->map = mmap(NULL, a->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a->map == MAP_FAILED) {
        free(a);
        return NULL;
    }
    a->base = (uint8_t *)(((uintptr_t)a->map + PK_HUGE - 1) & ~(uintptr_t)(PK_HUGE - 1));
    a->cap = cap;
    a->used = n;
#ifdef MADV_HUGEPAGE
    (void)madvise(a->base, cap, MADV_HUGEPAGE); /* advice only: 4 KiB pages work too */
#endif
    a->next = ci->arena;
    ci->arena = a;
    return a->base;
}

typedef struct packed_w {
    const void *src; /* NULL: empty slot */
    uint8_t *data;
    size_t group_bytes;
} packed_w;

static size_t pk_slot(const cpu_impl *ci, const void *src) {
    uint64_t h = (uint64_t)(uintptr_t)src * 0x9e3779b97f4a7c15ull;
    size_t i = (size_t)(h >> 20) & (ci->pk_cap - 1);
    while (ci->pk[i].src && ci->pk[i].src != src) i = (i + 1) & (ci->pk_cap - 1);
    return i;
}

static int pk_insert(cpu_impl *ci, packed_w e) {
    if (2 * (ci->pk_n + 1) > ci->pk_cap) {
        size_t old_cap = ci->pk_cap, cap = old_cap ? 2 * old_cap : 256;
        packed_w *old = ci->pk, *t = calloc(cap, sizeof *t);
        if (!t) return -1;
        ci->pk = t;
        ci->pk_cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].src) ci->pk[pk_slot(ci, old[i].src)] = old[i];
        free(old);
    }
    ci->pk[pk_slot(ci, e.src)] = e;
    ci->pk_n++;
    return 0;
}

typedef struct {
    cpu_impl *ci;
    const be_weight *w;
    uint8_t *out;
    size_t group_bytes;
    int g0, g1, nb; /* groups [g0, g1) */
} pack_job;

static void pack_worker(void *arg, int ith, int nth) {
    pack_job *j = arg;
    (void)ith;
    (void)nth;
    const be_weight *w = j->w;
    for (int g; (g = j->g0 + atomic_fetch_add_explicit(&j->ci->counter, 1, memory_order_relaxed)) <
                j->g1;) {
        const int64_t c0 = (int64_t)g * KERN_PACK_COLS;
        const int nc = (int)(w->n_out - c0 < KERN_PACK_COLS ? w->n_out - c0 : KERN_PACK_COLS);
        kern_pack_group(w->type, j->nb, (const uint8_t *)w->data + (size_t)c0 * w->row_bytes,
                        w->row_bytes, nc, j->out + (size_t)g * j->group_bytes);
    }
}

/* The packed copy of w, made on first use, by value (a later insert may
 * move the table); .src NULL when w is not packed (no packed kernel for
 * its type and the backend's numerics, or out of memory: the caller then
 * uses the unpacked kernels, which give the same results). */
static packed_w packed_for(cpu_impl *ci, const be_weight *w, kern_gemm_packed_fn *fn) {
    const packed_w none = {NULL, NULL, 0};
    if (w->n_in % 32) return none;
    const kern_table *k = ci->k;
    if (ci->numerics == BE_NUMERICS_FAST)
        *fn = w->type == QT_Q4_1   ? k->gemm_q4_1_packed
              : w->type == QT_Q4_0 ? k->gemm_q4_0_packed
              : w->type == QT_Q8_0 ? k->gemm_q8_0_packed
                                   : NULL;
    else
        *fn = w->type == QT_Q4_1   ? k->gemm_q4_1_packed_exact
              : w->type == QT_Q4_0 ? k->gemm_q4_0_packed_exact
              : w->type == QT_Q8_0 ? k->gemm_q8_0_packed_exact
                                   : NULL;
    if (!*fn || w->n_in / 32 > INT32_MAX ||
        (w->n_out + KERN_PACK_COLS - 1) / KERN_PACK_COLS > INT32_MAX)
        return none;
    if (ci->pk_cap) {
        const packed_w *e = &ci->pk[pk_slot(ci, w->data)];
        if (e->src) return *e;
    }
    const int groups = (int)((w->n_out + KERN_PACK_COLS - 1) / KERN_PACK_COLS);
    pack_job j = {ci,
                  w,
                  NULL,
                  kern_pack_group_bytes(w->type, (int)(w->n_in / 32)),
                  0,
                  0,
                  (int)(w->n_in / 32)};
    j.out = pk_alloc(ci, j.group_bytes * (size_t)groups); /* group_bytes: a multiple of 64 */
    if (!j.out) return none;
    const packed_w e = {w->data, j.out, j.group_bytes};
    if (pk_insert(ci, e)) return none; /* its arena space stays unused */
    /* About 1 MiB of the original at a time, its whole pages dropped once
     * packed, so a large matrix is never resident twice. Pages shared with
     * a neighbouring tensor are kept. */
    const size_t group_src = KERN_PACK_COLS * w->row_bytes;
    const int step = group_src >= (1u << 20) ? 1 : (int)((1u << 20) / group_src);
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)w->data;
    uintptr_t dropped = (a + page - 1) & ~(page - 1);
    for (j.g0 = 0; j.g0 < groups; j.g0 = j.g1) {
        j.g1 = groups - j.g0 < step ? groups : j.g0 + step;
        atomic_store(&ci->counter, 0);
        tp_run_any(ci->pool, pack_worker, &j);
        const int64_t rows = j.g1 == groups ? w->n_out : (int64_t)j.g1 * KERN_PACK_COLS;
        const uintptr_t hi = (a + (size_t)rows * w->row_bytes) & ~(page - 1);
        if (w->mapped && hi > dropped) {
            madvise((void *)dropped, hi - dropped, MADV_DONTNEED);
            dropped = hi;
        }
    }
    return e;
}

/* ---------------- matmul ---------------- */

/* Rows from which activation quantization is split across the pool: below
 * that, quantizing on the calling thread (about 0.3 us a row of 576 values)
 * costs less than the extra barrier. */
#define PAR_QUANT_ROWS 8
#define MM_MAX_W 3

/* Several weights that read the same activations (Q, K, V; gate, up) run as
 * one job: x is quantized once and the threads share one pool of column
 * chunks, so there is one barrier instead of one per weight. */
typedef struct {
    cpu_impl *ci;
    int n_w;
    const be_weight *w[MM_MAX_W];
    float *y[MM_MAX_W];
    kern_gemm_fn gemm[MM_MAX_W];
    packed_w pk[MM_MAX_W]; /* packed copy, or .src NULL */
    kern_gemm_packed_fn pgemm[MM_MAX_W];
    int first_chunk[MM_MAX_W + 1]; /* weight i owns chunks [first_chunk[i], first_chunk[i+1]) */
    int rows, nb;
    const blk_q8 *xq;
    const int32_t *xc; /* NULL unless a weight's packed kernel reads it */
} mm_job;

/* Column chunk c of the job's combined column space. */
static void mm_chunk(const mm_job *j, int c) {
    int wi = 0;
    while (c >= j->first_chunk[wi + 1]) wi++;
    const be_weight *w = j->w[wi];
    const int64_t n_out = w->n_out, c0 = (int64_t)(c - j->first_chunk[wi]) * COL_CHUNK;
    const int nc = (int)(c0 + COL_CHUNK < n_out ? COL_CHUNK : n_out - c0);
    const uint8_t *w0 = (const uint8_t *)w->data + (size_t)c0 * w->row_bytes;
    float *y = j->y[wi] + c0;
    if (j->pk[wi].src) { /* COL_CHUNK == KERN_PACK_COLS: chunk = packed group */
        const uint8_t *wp =
            j->pk[wi].data + (size_t)(c - j->first_chunk[wi]) * j->pk[wi].group_bytes;
        j->pgemm[wi](j->nb, wp, nc, j->xq, (size_t)j->nb, j->xc, j->rows, y, (size_t)n_out);
        return;
    }
    for (int r0 = 0; r0 < j->rows; r0 += ROW_TILE) {
        int nr = j->rows - r0 < ROW_TILE ? j->rows - r0 : ROW_TILE;
        j->gemm[wi](j->nb, w0, w->row_bytes, nc, j->xq + (size_t)r0 * j->nb, (size_t)j->nb, nr,
                    y + (size_t)r0 * n_out, (size_t)n_out);
    }
}

static void mm_quant_worker(void *arg, int ith, int nth) {
    mm_job *j = arg;
    for (int first, n; (n = split_next(j->ci, ith, nth, &first)) > 0;)
        for (int c = first; c < first + n; c++) mm_chunk(j, c);
}

typedef struct {
    const be_weight *w;
    const float *x;
    int rows;
    float *y;
    cpu_impl *ci;
} mmf_job;

static void mm_float_worker(void *arg, int ith, int nth) {
    mmf_job *j = arg;
    const int64_t n_in = j->w->n_in, n_out = j->w->n_out;
    float *wrow = j->ci->per_thread[ith].buf;
    for (int first, n; (n = split_next(j->ci, ith, nth, &first)) > 0;)
        for (int c = first; c < first + n; c++) {
            int64_t c0 = (int64_t)c * COL_CHUNK,
                    c1 = c0 + COL_CHUNK < n_out ? c0 + COL_CHUNK : n_out;
            for (int64_t col = c0; col < c1; col++) {
                quant_dequant_row(j->w->type,
                                  (const uint8_t *)j->w->data + (size_t)col * j->w->row_bytes, wrow,
                                  n_in);
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

/* Quantize rows, claimed from a counter so that whichever threads join
 * finish them all. */
static void quant_worker(void *arg, int ith, int nth) {
    q_job *q = arg;
    cpu_impl *ci = q->ci;
    (void)ith;
    (void)nth;
    const int nb = q->n_in / 32;
    for (int r; (r = atomic_fetch_add_explicit(&ci->counter, 1, memory_order_relaxed)) < q->rows;)
        ci->k->quantize(q->x + (size_t)r * q->n_in, ci->xq + (size_t)r * nb, q->n_in);
}

static kern_gemm_fn gemm_for(const cpu_impl *ci, const be_weight *w) {
    const kern_table *k = ci->k;
    if (w->n_in % 32) return NULL;
    if (ci->numerics == BE_NUMERICS_FAST)
        return w->type == QT_Q4_1   ? k->gemm_q4_1_fast
               : w->type == QT_Q4_0 ? k->gemm_q4_0_fast
               : w->type == QT_Q8_0 ? k->gemm_q8_0_fast
                                    : NULL;
    return w->type == QT_Q4_1   ? k->gemm_q4_1
           : w->type == QT_Q4_0 ? k->gemm_q4_0
           : w->type == QT_Q8_0 ? k->gemm_q8_0
                                : NULL;
}
static void cpu_matmul(backend *be, const be_weight *w, const float *x, int rows, float *y);

static void cpu_matmul_n(backend *be, int n, const be_weight *const *w, const float *x, int rows,
                         float *const *y) {
    cpu_impl *ci = impl_of(be);
    mm_job j = {0};
    j.ci = ci;
    j.n_w = n;
    j.rows = rows;
    int quant = n >= 1 && n <= MM_MAX_W;
    for (int i = 0; quant && i < n; i++) {
        j.w[i] = w[i];
        j.y[i] = y[i];
        j.gemm[i] = gemm_for(ci, w[i]);
        j.pk[i] = packed_for(ci, w[i], &j.pgemm[i]);
        j.first_chunk[i + 1] = j.first_chunk[i] + (int)((w[i]->n_out + COL_CHUNK - 1) / COL_CHUNK);
        quant &= j.gemm[i] != NULL && w[i]->n_in == w[0]->n_in;
    }
    if (quant) {
        j.nb = (int)(w[0]->n_in / 32);
        if (grow((void **)&ci->xq, &ci->xq_cap, (size_t)rows * (size_t)j.nb, sizeof *ci->xq))
            quant = 0; /* out of memory: the float path needs none */
    }
    if (!quant) {
        for (int i = 0; i < n; i++) cpu_matmul(be, w[i], x, rows, y[i]);
        return;
    }
    q_job q = {ci, x, rows, (int)w[0]->n_in};
    atomic_store(&ci->counter, 0);
    if (rows >= PAR_QUANT_ROWS) tp_run_any(ci->pool, quant_worker, &q);
    else quant_worker(&q, 0, 1); /* a few rows: cheaper than a barrier */
    j.xq = ci->xq;
    int need_xc = 0; /* exact packed Q8_0 kernels read kern_q8_corr words */
    for (int i = 0; i < n; i++)
        need_xc |= j.pk[i].src && w[i]->type == QT_Q8_0 && ci->numerics == BE_NUMERICS_EXACT;
    if (need_xc) {
        const size_t nblk = (size_t)rows * (size_t)j.nb;
        if (grow((void **)&ci->xc, &ci->xc_cap, nblk * 8, sizeof *ci->xc) == 0) {
            kern_q8_corr(ci->xq, nblk, ci->xc);
            j.xc = ci->xc;
        } else
            for (int i = 0; i < n; i++) /* out of memory: the unpacked kernels need none */
                if (w[i]->type == QT_Q8_0) j.pk[i].src = NULL;
    }
    split_init(ci, j.first_chunk[n]);
    tp_run_any(ci->pool, mm_quant_worker, &j);
}

static void cpu_matmul(backend *be, const be_weight *w, const float *x, int rows, float *y) {
    cpu_impl *ci = impl_of(be);
    if (gemm_for(ci, w)) {
        cpu_matmul_n(be, 1, &w, x, rows, &y);
        return;
    }
    for (int t = 0; t < tp_size(ci->pool); t++)
        if (ensure(&ci->per_thread[t], (size_t)w->n_in)) return; /* OOM: leave y untouched */
    mmf_job j = {w, x, rows, y, ci};
    split_init(ci, (int)((w->n_out + COL_CHUNK - 1) / COL_CHUNK));
    tp_run_any(ci->pool, mm_float_worker, &j);
}

/* ---------------- elementwise ---------------- */

/*
 * Row-wise ops run on the calling thread for up to a decode batch of rows
 * (a barrier costs more than norming or rotating a few dozen rows) and are
 * split across the pool in blocks of rows for a prefill, where serial
 * elementwise work would leave the other threads idle for a tenth of the
 * step.
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
static void par_rows(cpu_impl *ci, int rows, int grain, void (*fn)(void *ctx, int r0, int r1),
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

static void cpu_rmsnorm(backend *be, const float *x, const float *g, int rows, int cols, float eps,
                        float *y) {
    cpu_impl *ci = impl_of(be);
    norm_ctx c = {ci->k, x, g, cols, eps, y};
    par_rows(ci, rows, 8, rmsnorm_rows, &c); /* 8: the AVX-512 kernel's row group */
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
    if (grow((void **)&ci->rope_pos, &ci->rope_pos_cap, (size_t)rows, sizeof *ci->rope_pos) ||
        grow((void **)&ci->rope_cs, &ci->rope_cs_cap, (size_t)rows * 2 * (size_t)half,
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

static void cpu_rope(backend *be, float *x, int rows, int n_heads, int head_dim, int rope_dim,
                     const int32_t *positions, float theta_base) {
    cpu_impl *ci = impl_of(be);
    if (rope_table(ci, rows, rope_dim, positions, theta_base)) return; /* out of memory */
    rope_ctx c = {ci->k, x, ci->rope_cs, n_heads, head_dim, rope_dim / 2};
    par_rows(ci, rows, 4, rope_rows_fn, &c);
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

static void cpu_swiglu(backend *be, const float *gate, const float *up, size_t n, float *out) {
    cpu_impl *ci = impl_of(be);
    /* split into rows of 256 for the pool (elementwise: any split works) */
    const int row = 256;
    size_t rows = n / row;
    if (rows > 0 && rows < (size_t)INT32_MAX) {
        swiglu_ctx c = {ci->k, gate, up, out, row};
        par_rows(ci, (int)rows, 4, swiglu_rows, &c);
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

static void cpu_kv_store(backend *be, kv_cache *kv, int layer, const float *k, const float *v,
                         int rows, const int32_t *slots) {
    cpu_impl *ci = impl_of(be);
    kv_ctx c = {ci->k, kv, layer, {k, v}, slots};
    par_rows(ci, rows, 4, kv_store_rows, &c);
}

/* A weight packed for the output (tied embeddings) is read back from its
 * packed copy: its mapped original was dropped and stays out of memory. */
static void cpu_embed(backend *be, const be_weight *emb, const int32_t *ids, int n, float *out) {
    cpu_impl *ci = impl_of(be);
    const packed_w *pk = ci->pk_cap ? &ci->pk[pk_slot(ci, emb->data)] : NULL;
    if (pk && pk->src && ensure(&ci->per_thread[0], emb->row_bytes / sizeof(float) + 1) == 0) {
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

/* ---------------- attention ---------------- */

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

/* Row `row`, KV heads [kvh, kvh + n_kvh), and of each the nq query heads
 * from its first + h (n_kvh > 1: all of them, nq == the group size). */
typedef struct attn_task {
    int32_t row;
    int16_t kvh, n_kvh, h, nq;
} attn_task;

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

static int row_is_single(const cpu_impl *ci, const be_attn *a, int t) {
    const int s = ci->row_seq[t];
    return a->row_single ? a->row_single[t] != 0 : a->seq_start[s + 1] - a->seq_start[s] == 1;
}

/* One task: scores over the row's causal context read through the block
 * table, softmax, weighted sum of V. With an f16 cache the arithmetic
 * follows ggml's f16 matmuls exactly (kernels.h, attn_f16): the
 * accumulation shape depends on whether the sequence has one row in this
 * step (llama.cpp's vec_dot path) or several (its tiled path). */
static void attn_run(const attn_job *j, const attn_task *task, float *work) {
    const be_attn *a = j->a;
    const cpu_impl *ci = j->ci;
    const int t = task->row, hd = a->head_dim, single = row_is_single(ci, a, t);
    const int group = a->n_head / a->n_head_kv, h = task->kvh * group + task->h, nq = task->nq;
    const size_t *off = ci->slot_off + ci->seq_off_start[ci->row_seq[t]];
    const int n_ctx = a->positions[t] + 1;
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

static int cmp_u64(const void *x, const void *y) {
    const uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/*
 * The call's tasks, claimed in order by the pool's threads; returns their
 * number, -1 when out of memory.
 *
 * Decode rows (the only row of their sequence in the step) come first.
 * Each reads a context that nothing else in the step reads, from memory,
 * and a task takes all the query heads of a KV head (the decode shape
 * converts each K and V row once for them; at batch 1, 3 tasks on 2
 * threads beat 9 that read each KV head up to 3 times). A block keeps a
 * layer's K rows (the KV heads of a position side by side), then its V
 * rows, as one contiguous run, and the hardware prefetchers fetch the
 * whole run whichever head is read; so with rows enough to balance the
 * threads, a task is a row with all its KV heads in turn, whose later
 * heads find their rows in this core's L2 instead of fetching the run
 * again (16 rows of 500 positions out of cache, 30 layers: 26 -> 19 ms).
 * Those tasks go longest context first, so the last ones claimed are short
 * (LPT); when a row is longer than a thread's share of all of them, tasks
 * stay one per KV head.
 *
 * Rows of prefill chunks follow, KV head major, then row, then the query
 * heads: consecutive tasks read the same K and V rows (a chunk's rows share
 * most of their context), so they stay in this core's L2; all the heads of
 * a KV head go in one task when there are tasks to spare for balance.
 */
static int attn_plan(cpu_impl *ci, const be_attn *a) {
    const int nth = tp_size(ci->pool), group = a->n_head / a->n_head_kv;
    if (a->n_head > INT16_MAX) return -1;
    if (grow((void **)&ci->attn_tasks, &ci->attn_tasks_cap, (size_t)a->n_tokens * (size_t)a->n_head,
             sizeof *ci->attn_tasks) ||
        grow((void **)&ci->row_key, &ci->row_key_cap, (size_t)a->n_tokens, sizeof *ci->row_key))
        return -1;
    attn_task *tk = ci->attn_tasks;
    int n = 0, n_single = 0;
    int64_t total = 0, longest = 0;
    for (int t = 0; t < a->n_tokens; t++) {
        if (!row_is_single(ci, a, t)) continue;
        total += a->positions[t] + 1;
        if (a->positions[t] + 1 > longest) longest = a->positions[t] + 1;
        ci->row_key[n_single++] = (uint64_t)(INT32_MAX - a->positions[t]) << 32 | (uint32_t)t;
    }
    const int whole_rows = n_single >= 2 * nth && longest * nth <= total;
    if (whole_rows) qsort(ci->row_key, (size_t)n_single, sizeof *ci->row_key, cmp_u64);
    for (int kvh = 0; kvh < (whole_rows ? 1 : a->n_head_kv); kvh++)
        for (int i = 0; i < n_single; i++)
            tk[n++] = (attn_task){(int32_t)(uint32_t)ci->row_key[i], (int16_t)kvh,
                                  (int16_t)(whole_rows ? a->n_head_kv : 1), 0, (int16_t)group};
    const int n_multi = a->n_tokens - n_single;
    const int nq = n_multi * a->n_head_kv >= 8 * nth ? group : 1;
    for (int kvh = 0; kvh < a->n_head_kv && n_multi > 0; kvh++)
        for (int t = 0; t < a->n_tokens; t++) {
            if (row_is_single(ci, a, t)) continue;
            for (int h = 0; h < group; h += nq)
                tk[n++] = (attn_task){t, (int16_t)kvh, 1, (int16_t)h, (int16_t)nq};
        }
    return n;
}

static void cpu_attention(backend *be, kv_cache *kv, int layer, const be_attn *a, const float *q,
                          float *out) {
    cpu_impl *ci = impl_of(be);
    int max_ctx = 0;
    size_t total_ctx = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        if (a->context_len[s] > max_ctx) max_ctx = a->context_len[s];
        total_ctx += (size_t)a->context_len[s];
    }
    for (int t = 0; t < tp_size(ci->pool); t++)
        if (ensure(&ci->per_thread[t], kern_attn_work(max_ctx, a->head_dim, a->n_head))) return;
    if (grow((void **)&ci->row_seq, &ci->row_seq_cap, (size_t)a->n_tokens, sizeof *ci->row_seq) ||
        grow((void **)&ci->seq_off_start, &ci->seq_off_cap, (size_t)a->n_seqs,
             sizeof *ci->seq_off_start) ||
        grow((void **)&ci->slot_off, &ci->slot_off_cap, total_ctx, sizeof *ci->slot_off))
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
    const int n_tasks = attn_plan(ci, a);
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

static const backend_ops CPU_OPS = {
    "cpu",      cpu_matmul,   cpu_matmul_n,  cpu_rmsnorm, cpu_rope,
    cpu_swiglu, cpu_kv_store, cpu_attention, cpu_embed,
};

const char *be_numerics_name(be_numerics n) { return n == BE_NUMERICS_FAST ? "fast" : "exact"; }

int be_numerics_parse(const char *name, be_numerics *out) {
    if (strcmp(name, "exact") == 0) *out = BE_NUMERICS_EXACT;
    else if (strcmp(name, "fast") == 0) *out = BE_NUMERICS_FAST;
    else return -1;
    return 0;
}

backend *backend_cpu_create(int n_threads, char *err, size_t errlen) {
    be_cpu_options o = {n_threads, BE_NUMERICS_EXACT};
    return backend_cpu_create_opts(&o, err, errlen);
}

backend *backend_cpu_create_opts(const be_cpu_options *opt, char *err, size_t errlen) {
    int n_threads = opt ? opt->n_threads : 0;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    backend *be = calloc(1, sizeof *be);
    cpu_impl *ci = calloc(1, sizeof *ci);
    if (!be || !ci) goto oom;
    ci->k = kern_select();
    ci->numerics = opt && opt->numerics == BE_NUMERICS_FAST ? BE_NUMERICS_FAST : BE_NUMERICS_EXACT;
    ci->rope_rows = -1; /* no RoPE table yet */
    ci->per_thread = calloc((size_t)n_threads, sizeof *ci->per_thread);
    ci->ranges = aligned_alloc(64, (size_t)n_threads * sizeof *ci->ranges);
    if (!ci->per_thread || !ci->ranges) goto oom;
    ci->pool = tp_create(n_threads);
    if (!ci->pool) {
        snprintf(err, errlen, "cannot start %d CPU threads", n_threads);
        free(ci->per_thread);
        free(ci->ranges);
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
    if (ci) {
        free(ci->per_thread);
        free(ci->ranges);
    }
    free(ci);
    free(be);
    return NULL;
}

const char *backend_cpu_isa(const backend *be) { return ((const cpu_impl *)be->impl)->k->isa; }
void backend_cpu_forget_weights(backend *be) {
    cpu_impl *ci = be->impl;
    for (pk_arena *a = ci->arena, *next; a; a = next) {
        next = a->next;
        munmap(a->map, a->map_len);
        free(a);
    }
    ci->arena = NULL;
    free(ci->pk);
    ci->pk = NULL;
    ci->pk_n = ci->pk_cap = 0;
}

be_numerics backend_cpu_numerics(const backend *be) {
    return ((const cpu_impl *)be->impl)->numerics;
}

void backend_free(backend *be) {
    if (!be) return;
    cpu_impl *ci = be->impl;
    if (ci) {
        tp_free(ci->pool);
        for (int t = 0; t < be->n_threads; t++) free(ci->per_thread[t].buf);
        free(ci->per_thread);
        free(ci->xq);
        free(ci->xc);
        free(ci->ranges);
        free(ci->row_seq);
        free(ci->seq_off_start);
        free(ci->slot_off);
        free(ci->attn_tasks);
        free(ci->row_key);
        free(ci->rope_pos);
        free(ci->rope_cs);
        backend_cpu_forget_weights(be);
        free(ci);
    }
    free(be);
}
