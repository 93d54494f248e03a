/*
 * kv_cache.c - block storage and the simple per-sequence allocator (see
 * kv_cache.h). Each sequence keeps a growable block table; blocks come from
 * a LIFO free list.
 */
#include "core/kv_cache.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct kv_seq {
    int used;
    int n_blocks;
    int cap;
    int32_t *table;
} kv_seq;

/* Attention reads a few KiB of each block per layer, all over the pool: with
 * 4 KiB pages nearly every such read is a TLB miss. Ask for transparent huge
 * pages on the 2 MiB extents inside [p, p + n) (advice only; glibc's calloc
 * of a large block is a fresh zeroed mapping, so nothing is copied). */
static void advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1), hi = ((uintptr_t)p + n) & ~(huge - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

size_t kv_dtype_size(kv_dtype dtype) { return dtype == KV_F16 ? 2 : 4; }

size_t kv_block_bytes(int n_layer, int kv_dim, int block_size, kv_dtype dtype) {
    return (size_t)n_layer * 2 * (size_t)block_size * (size_t)kv_dim * kv_dtype_size(dtype);
}

uint64_t kv_blocks_in_budget(double mib, size_t block_bytes) {
    /* Whole bytes of the budget; the integer division is then exact. */
    uint64_t n = (uint64_t)floor(mib * 1048576.0) / (uint64_t)block_bytes;
    return n < 1 ? 1 : n;
}

int kv_cache_create(int n_layer, int kv_dim, int block_size, int num_blocks, kv_dtype dtype,
                    kv_cache **out, char *err, size_t errlen) {
    *out = NULL;
    if (n_layer <= 0 || kv_dim <= 0 || block_size <= 0 || num_blocks <= 0 ||
        (dtype != KV_F32 && dtype != KV_F16)) {
        snprintf(err, errlen,
                 "invalid KV cache shape (layers %d, kv_dim %d, block_size %d, blocks %d)", n_layer,
                 kv_dim, block_size, num_blocks);
        return -1;
    }
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) goto oom;
    kv->n_layer = n_layer;
    kv->kv_dim = kv_dim;
    kv->block_size = block_size;
    kv->num_blocks = num_blocks;
    kv->dtype = dtype;
    kv->elt_size = kv_dtype_size(dtype);
    kv->block_bytes = kv_block_bytes(n_layer, kv_dim, block_size, dtype);
    kv->data = calloc((size_t)num_blocks, kv->block_bytes);
    kv->free_list = malloc((size_t)num_blocks * sizeof *kv->free_list);
    if (!kv->data || !kv->free_list) goto oom;
    advise_huge(kv->data, (size_t)num_blocks * kv->block_bytes);
    for (int i = 0; i < num_blocks; i++) kv->free_list[i] = num_blocks - 1 - i;
    kv->n_free = num_blocks;
    *out = kv;
    return 0;
oom:
    snprintf(err, errlen, "out of memory allocating %d KV blocks", num_blocks);
    kv_cache_free(kv);
    return -1;
}

void kv_cache_free(kv_cache *kv) {
    if (!kv) return;
    for (int i = 0; i < kv->n_seq_slots; i++) free(kv->seqs[i].table);
    free(kv->seqs);
    free(kv->free_list);
    free(kv->data);
    free(kv);
}

int kv_seq_new(kv_cache *kv) {
    for (int i = 0; i < kv->n_seq_slots; i++)
        if (!kv->seqs[i].used) {
            kv->seqs[i].used = 1;
            kv->seqs[i].n_blocks = 0;
            return i;
        }
    int n = kv->n_seq_slots ? kv->n_seq_slots * 2 : 8;
    kv_seq *p = realloc(kv->seqs, (size_t)n * sizeof *p);
    if (!p) return -1;
    memset(p + kv->n_seq_slots, 0, (size_t)(n - kv->n_seq_slots) * sizeof *p);
    kv->seqs = p;
    int id = kv->n_seq_slots;
    kv->n_seq_slots = n;
    kv->seqs[id].used = 1;
    return id;
}

int kv_seq_reserve(kv_cache *kv, int seq, int n_tokens) {
    if (seq < 0 || seq >= kv->n_seq_slots || !kv->seqs[seq].used || n_tokens < 0) return -1;
    kv_seq *s = &kv->seqs[seq];
    int need = (n_tokens + kv->block_size - 1) / kv->block_size;
    if (need <= s->n_blocks) return 0;
    if (need - s->n_blocks > kv->n_free) return -1;
    if (need > s->cap) {
        int32_t *t = realloc(s->table, (size_t)need * sizeof *t);
        if (!t) return -1;
        s->table = t;
        s->cap = need;
    }
    while (s->n_blocks < need) s->table[s->n_blocks++] = kv->free_list[--kv->n_free];
    return 0;
}

int32_t kv_seq_slot(const kv_cache *kv, int seq, int pos) {
    const kv_seq *s = &kv->seqs[seq];
    int b = pos / kv->block_size;
    if (pos < 0 || b >= s->n_blocks) return -1;
    return s->table[b] * kv->block_size + pos % kv->block_size;
}

const int32_t *kv_seq_block_table(const kv_cache *kv, int seq) { return kv->seqs[seq].table; }

void kv_seq_free(kv_cache *kv, int seq) {
    if (seq < 0 || seq >= kv->n_seq_slots || !kv->seqs[seq].used) return;
    kv_seq *s = &kv->seqs[seq];
    for (int i = s->n_blocks - 1; i >= 0; i--) kv->free_list[kv->n_free++] = s->table[i];
    s->n_blocks = 0;
    s->used = 0;
}

int kv_n_free_blocks(const kv_cache *kv) { return kv->n_free; }
