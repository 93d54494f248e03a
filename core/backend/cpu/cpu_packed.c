/*
 * cpu_packed.c - packed copies of the quantized weights (kernels.h,
 * KERN_PACK_COLS), made on a weight's first matmul, kept in arenas the
 * backend owns and found by the weight's data pointer.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/backend/cpu/cpu_internal.h"
#include "core/quant.h"

/*
 * With a kernel table that has packed GEMMs for the backend's numerics
 * (AVX-512: exact and fast), every quantized weight is packed (kernels.h,
 * KERN_PACK_COLS) on its first matmul into memory the backend owns, and
 * later matmuls read only the packed copy: per block the column-lane
 * layout is a few loads instead of a transposition, faster than the
 * row-major kernels at one row and than the transposing ones at many
 * (docs/benchmarks.md, "Figures moved from code comments").
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
packed_w cpu_packed_for(cpu_impl *ci, const be_weight *w, kern_gemm_packed_fn *fn) {
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

const packed_w *cpu_packed_find(const cpu_impl *ci, const void *src) {
    const packed_w *e = ci->pk_cap ? &ci->pk[pk_slot(ci, src)] : NULL;
    return e && e->src ? e : NULL;
}

void cpu_packed_forget(cpu_impl *ci) {
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
