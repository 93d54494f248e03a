/*
 * cpu_matmul.c - the backend's matmuls. They convert the activation rows
 * once into each format their weights' kernels read (kernels.h: 8-bit
 * blocks of 32 or 256, or floats rounded to f16 / bf16), fall back to
 * dequantize + float dot for the types and shapes no kernel takes, and
 * split output columns between the pool's threads as
 * one contiguous range each, so every thread streams its weights
 * sequentially; a thread that finishes early takes chunks from the end of
 * another's range, so a slow thread never leaves the other idle. Weights
 * that read the same input (Q, K, V; gate, up) share one job. Within a
 * chunk of COL_CHUNK columns every activation row is processed while the
 * chunk's weights sit in cache.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "core/backend/cpu/cpu_internal.h"
#include "core/quant.h"

/* A chunk is 16 weight columns (the AVX-512 kernels' width: 6 to 15 KB of
 * Q4_1, resident in L1 while all rows pass); rows go to the kernel 256 at a
 * time, so the column-lane kernels transpose a chunk at most twice in a
 * 512-row prefill. */
#define COL_CHUNK 16
_Static_assert(COL_CHUNK == KERN_PACK_COLS, "a matmul chunk is one packed group");
#define ROW_TILE 256

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

/* Rows from which activation quantization is split across the pool: below
 * that, quantizing on the calling thread costs less than the extra barrier
 * (docs/benchmarks.md, "Figures moved from code comments"). */
#define PAR_QUANT_ROWS 8
#define MM_MAX_W 3

/* The activation formats weights read (kernels.h): blk_q8 (32-blocks),
 * block_q8_K (K-quants), floats rounded to f16 or bf16, the floats as given. */
typedef enum { ACT_Q8, ACT_Q8K, ACT_F16, ACT_BF16, ACT_F32, ACT_COUNT } mm_act;

/* A weight's kernel: one of the three signatures, by its activation format. */
typedef struct {
    mm_act act;
    kern_gemm_fn q8;
    kern_gemm_k_fn k;
    kern_gemm_f_fn f;
} mm_kernel;

/* Several weights that read the same activations (Q, K, V; gate, up) run as
 * one job: x is converted once into each format the weights read, and the
 * threads share one pool of column chunks, so there is one barrier instead
 * of one per weight. */
typedef struct {
    cpu_impl *ci;
    int n_w;
    const be_weight *w[MM_MAX_W];
    float *y[MM_MAX_W];
    mm_kernel mk[MM_MAX_W];
    packed_w pk[MM_MAX_W]; /* packed copy, or .src NULL */
    kern_gemm_packed_fn pgemm[MM_MAX_W];
    int first_chunk[MM_MAX_W + 1]; /* weight i owns chunks [first_chunk[i], first_chunk[i+1]) */
    int rows, nb, n_in;
    const blk_q8 *xq;
    const block_q8_K *xk;
    const float *xf[ACT_COUNT]; /* rows of n_in floats for ACT_F16, ACT_BF16, ACT_F32 */
    const int32_t *xc;          /* NULL unless a weight's packed kernel reads it */
} mm_job;

/* Rows [r0, r0 + nr) of weight wi's columns [c0, c0 + nc). */
static void mm_rows(const mm_job *j, int wi, int64_t c0, int nc, int r0, int nr) {
    const be_weight *w = j->w[wi];
    const mm_kernel *mk = &j->mk[wi];
    const uint8_t *w0 = (const uint8_t *)w->data + (size_t)c0 * w->row_bytes;
    float *y = j->y[wi] + (size_t)r0 * (size_t)w->n_out + c0;
    const size_t ys = (size_t)w->n_out;
    if (mk->act == ACT_Q8) {
        mk->q8(j->nb, w0, w->row_bytes, nc, j->xq + (size_t)r0 * j->nb, (size_t)j->nb, nr, y, ys);
    } else if (mk->act == ACT_Q8K) {
        const int nbk = j->n_in / QK_K;
        mk->k(nbk, w0, w->row_bytes, nc, j->xk + (size_t)r0 * nbk, (size_t)nbk, nr, y, ys);
    } else {
        mk->f(j->n_in, w0, w->row_bytes, nc, j->xf[mk->act] + (size_t)r0 * j->n_in, (size_t)j->n_in,
              nr, y, ys);
    }
}

/* Column chunk c of the job's combined column space. */
static void mm_chunk(const mm_job *j, int c) {
    int wi = 0;
    while (c >= j->first_chunk[wi + 1]) wi++;
    const be_weight *w = j->w[wi];
    const int64_t n_out = w->n_out, c0 = (int64_t)(c - j->first_chunk[wi]) * COL_CHUNK;
    const int nc = (int)(c0 + COL_CHUNK < n_out ? COL_CHUNK : n_out - c0);
    if (j->pk[wi].src) { /* COL_CHUNK == KERN_PACK_COLS: chunk = packed group */
        const uint8_t *wp =
            j->pk[wi].data + (size_t)(c - j->first_chunk[wi]) * j->pk[wi].group_bytes;
        j->pgemm[wi](j->nb, wp, nc, j->xq, (size_t)j->nb, j->xc, j->rows, j->y[wi] + c0,
                     (size_t)n_out);
        return;
    }
    for (int r0 = 0; r0 < j->rows; r0 += ROW_TILE)
        mm_rows(j, wi, c0, nc, r0, j->rows - r0 < ROW_TILE ? j->rows - r0 : ROW_TILE);
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
    int need[ACT_COUNT];
    blk_q8 *xq;
    block_q8_K *xk;
    float *xf[ACT_COUNT];
} q_job;

/* Convert rows into every format the job's weights read, claimed from a
 * counter so that whichever threads join finish them all. */
static void quant_worker(void *arg, int ith, int nth) {
    q_job *q = arg;
    cpu_impl *ci = q->ci;
    (void)ith;
    (void)nth;
    const size_t n = (size_t)q->n_in;
    for (int r; (r = atomic_fetch_add_explicit(&ci->counter, 1, memory_order_relaxed)) < q->rows;) {
        const float *x = q->x + (size_t)r * n;
        if (q->need[ACT_Q8]) ci->k->quantize(x, q->xq + (size_t)r * (n / 32), q->n_in);
        if (q->need[ACT_Q8K]) ci->k->quantize_q8k(x, q->xk + (size_t)r * (n / QK_K), q->n_in);
        if (q->need[ACT_F16])
            kern_round_activations(QT_F16, x, q->xf[ACT_F16] + (size_t)r * n, q->n_in);
        if (q->need[ACT_BF16])
            kern_round_activations(QT_BF16, x, q->xf[ACT_BF16] + (size_t)r * n, q->n_in);
    }
}

/* The native kernel of w's type under the backend's numerics; 0 when there
 * is none (the float fallback computes it). */
static int kernel_for(const cpu_impl *ci, const be_weight *w, mm_kernel *mk) {
    const kern_table *k = ci->k;
    const int fast = ci->numerics == BE_NUMERICS_FAST;
    *mk = (mm_kernel){ACT_Q8, NULL, NULL, NULL};
    if (w->n_in % 32) return 0;
    switch (w->type) {
    case QT_Q4_0: mk->q8 = fast ? k->gemm_q4_0_fast : k->gemm_q4_0; break;
    case QT_Q4_1: mk->q8 = fast ? k->gemm_q4_1_fast : k->gemm_q4_1; break;
    case QT_Q8_0: mk->q8 = fast ? k->gemm_q8_0_fast : k->gemm_q8_0; break;
    case QT_Q5_0: mk->q8 = k->gemm_q5_0; break;
    case QT_Q5_1: mk->q8 = k->gemm_q5_1; break;
    case QT_IQ4_NL: mk->q8 = k->gemm_iq4_nl; break;
    case QT_Q4_K: mk->k = k->gemm_q4_k; break;
    case QT_Q5_K: mk->k = k->gemm_q5_k; break;
    case QT_Q6_K: mk->k = k->gemm_q6_k; break;
    case QT_Q2_K: mk->k = k->gemm_q2_k; break;
    case QT_Q3_K: mk->k = k->gemm_q3_k; break;
    case QT_IQ4_XS: mk->k = k->gemm_iq4_xs; break;
    case QT_F32: mk->f = k->gemm_f32, mk->act = ACT_F32; break;
    case QT_F16: mk->f = k->gemm_f16, mk->act = ACT_F16; break;
    case QT_BF16: mk->f = k->gemm_bf16, mk->act = ACT_BF16; break;
    default: return 0;
    }
    if (mk->k) {
        mk->act = ACT_Q8K;
        if (w->n_in % QK_K) return 0;
    }
    return mk->q8 || mk->k || mk->f;
}

/* Sizes the activation buffer (ci->xq) for the formats q->need lists and
 * points q's rows into it; -1 when out of memory. */
static int act_buffers(cpu_impl *ci, q_job *q) {
    const size_t rows = (size_t)q->rows, n = (size_t)q->n_in;
    const size_t b8 = q->need[ACT_Q8] ? rows * (n / 32) * sizeof(blk_q8) : 0;
    const size_t bk = q->need[ACT_Q8K] ? rows * (n / QK_K) * sizeof(block_q8_K) : 0;
    const size_t bh = q->need[ACT_F16] ? rows * n * sizeof(float) : 0;
    const size_t bb = q->need[ACT_BF16] ? rows * n * sizeof(float) : 0;
    const size_t total = b8 + bk + bh + bb;
    if (cpu_grow((void **)&ci->xq, &ci->xq_cap, total / sizeof(blk_q8) + 1, sizeof(blk_q8)))
        return -1;
    uint8_t *p = (uint8_t *)ci->xq; /* every part's size keeps 4-byte alignment */
    q->xq = ci->xq;
    q->xk = (block_q8_K *)(p + b8);
    q->xf[ACT_F16] = (float *)(p + b8 + bk);
    q->xf[ACT_BF16] = (float *)(p + b8 + bk + bh);
    q->xf[ACT_F32] = (float *)q->x;
    return 0;
}

/* The exact packed Q8_0 kernels read kern_q8_corr words of the activations. */
static void mm_q8_corr(cpu_impl *ci, mm_job *j, int n) {
    int need_xc = 0;
    for (int i = 0; i < n; i++)
        need_xc |= j->pk[i].src && j->w[i]->type == QT_Q8_0 && ci->numerics == BE_NUMERICS_EXACT;
    if (!need_xc) return;
    const size_t nblk = (size_t)j->rows * (size_t)j->nb;
    if (cpu_grow((void **)&ci->xc, &ci->xc_cap, nblk * 8, sizeof *ci->xc) == 0) {
        kern_q8_corr(ci->xq, nblk, ci->xc);
        j->xc = ci->xc;
    } else
        for (int i = 0; i < n; i++) /* out of memory: the unpacked kernels need none */
            if (j->w[i]->type == QT_Q8_0) j->pk[i].src = NULL;
}

void cpu_matmul(backend *be, const be_weight *w, const float *x, int rows, float *y);

void cpu_matmul_n(backend *be, int n, const be_weight *const *w, const float *x, int rows,
                  float *const *y) {
    cpu_impl *ci = impl_of(be);
    mm_job j = {0};
    j.ci = ci;
    j.n_w = n;
    j.rows = rows;
    q_job q = {.ci = ci, .x = x, .rows = rows, .n_in = n >= 1 ? (int)w[0]->n_in : 0};
    int native = n >= 1 && n <= MM_MAX_W;
    for (int i = 0; native && i < n; i++) {
        j.w[i] = w[i];
        j.y[i] = y[i];
        native &= kernel_for(ci, w[i], &j.mk[i]) && w[i]->n_in == w[0]->n_in;
        q.need[j.mk[i].act] = 1;
        j.pk[i] = j.mk[i].q8 ? cpu_packed_for(ci, w[i], &j.pgemm[i]) : (packed_w){0};
        j.first_chunk[i + 1] = j.first_chunk[i] + (int)((w[i]->n_out + COL_CHUNK - 1) / COL_CHUNK);
    }
    if (native && act_buffers(ci, &q)) native = 0; /* out of memory: the float path needs none */
    if (!native) {
        for (int i = 0; i < n; i++) cpu_matmul(be, w[i], x, rows, y[i]);
        return;
    }
    atomic_store(&ci->counter, 0);
    if (rows >= PAR_QUANT_ROWS) tp_run_any(ci->pool, quant_worker, &q);
    else quant_worker(&q, 0, 1); /* a few rows: cheaper than a barrier */
    j.n_in = q.n_in;
    j.nb = q.n_in / 32;
    j.xq = q.xq;
    j.xk = q.xk;
    for (int a = 0; a < ACT_COUNT; a++) j.xf[a] = q.xf[a];
    mm_q8_corr(ci, &j, n);
    split_init(ci, j.first_chunk[n]);
    tp_run_any(ci->pool, mm_quant_worker, &j);
}

void cpu_matmul(backend *be, const be_weight *w, const float *x, int rows, float *y) {
    cpu_impl *ci = impl_of(be);
    mm_kernel mk;
    if (kernel_for(ci, w, &mk)) {
        cpu_matmul_n(be, 1, &w, x, rows, &y);
        return;
    }
    for (int t = 0; t < tp_size(ci->pool); t++)
        if (cpu_ensure(&ci->per_thread[t], (size_t)w->n_in)) return; /* OOM: leave y untouched */
    mmf_job j = {w, x, rows, y, ci};
    split_init(ci, (int)((w->n_out + COL_CHUNK - 1) / COL_CHUNK));
    tp_run_any(ci->pool, mm_float_worker, &j);
}
