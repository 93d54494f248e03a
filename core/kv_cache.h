/*
 * kv_cache.h - the KV store the forward pass reads and writes.
 *
 * Memory is a pool of fixed-size blocks; a block holds block_size tokens of
 * K and V for every layer, contiguous, so one memcpy moves a block. A token's
 * physical slot is block_id * block_size + offset. Layout of one block:
 *   [layer][K|V][block_size][kv_dim]  with elements of the cache dtype.
 *
 * This module owns only storage and a simple per-sequence allocator
 * (kv_seq_*): each sequence gets a block table that grows on demand. The
 * paged block manager (paged_kv/) with ref counts and swap replaces the
 * allocator, not the storage layout.
 *
 * Thread-safety: none; the engine thread owns the cache.
 */
#ifndef ENGINE_KV_CACHE_H
#define ENGINE_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KV_F32 = 0, KV_F16 = 1 } kv_dtype;

typedef struct kv_cache {
    int n_layer;
    int kv_dim;     /* n_head_kv * head_dim */
    int block_size; /* tokens per block */
    int num_blocks;
    kv_dtype dtype;
    size_t elt_size;
    size_t block_bytes;
    uint8_t *data; /* num_blocks * block_bytes */
    /* simple allocator state */
    int32_t *free_list;
    int n_free;
    struct kv_seq *seqs;
    int n_seq_slots;
} kv_cache;

/* Bytes of one element of the cache dtype. */
size_t kv_dtype_size(kv_dtype dtype);
/* Bytes of one block: K and V of block_size tokens for n_layer layers of
 * kv_dim elements (the stride between blocks in kv_cache.data). The one
 * place this product is written; sizing, banners and budgets call it. */
size_t kv_block_bytes(int n_layer, int kv_dim, int block_size, kv_dtype dtype);
/* Whole blocks of block_bytes that fit in a budget of mib MiB (whole bytes
 * of it), at least 1. */
uint64_t kv_blocks_in_budget(double mib, size_t block_bytes);

int kv_cache_create(int n_layer, int kv_dim, int block_size, int num_blocks, kv_dtype dtype,
                    kv_cache **out, char *err, size_t errlen);
void kv_cache_free(kv_cache *kv);

/* Pointer to the K (kind 0) or V (kind 1) row of a physical slot in a layer. */
static inline void *kv_slot_ptr(const kv_cache *kv, int layer, int kind, int32_t slot) {
    int32_t blk = slot / kv->block_size, off = slot % kv->block_size;
    return kv->data + (size_t)blk * kv->block_bytes +
           (((size_t)layer * 2 + (size_t)kind) * (size_t)kv->block_size + (size_t)off) *
               (size_t)kv->kv_dim * kv->elt_size;
}

/* ---- simple per-sequence allocator ---- */
/* Returns a sequence handle >= 0, or -1 when the table is full. */
int kv_seq_new(kv_cache *kv);
/* Make room for n_tokens in total for the sequence; -1 if out of blocks
 * (nothing allocated then). */
int kv_seq_reserve(kv_cache *kv, int seq, int n_tokens);
/* Physical slot for token position pos (must be reserved). */
int32_t kv_seq_slot(const kv_cache *kv, int seq, int pos);
const int32_t *kv_seq_block_table(const kv_cache *kv, int seq);
void kv_seq_free(kv_cache *kv, int seq);
int kv_n_free_blocks(const kv_cache *kv);

#endif
