/*
 * paged_kv.h - vLLM-style KV block manager: fixed-size blocks in two tiers
 * (device and CPU swap), ref counts, per-sequence block tables.
 *
 * A block holds block_size tokens of K and V for all layers in the layout of
 * core/kv_cache.h, so one memcpy moves a block between tiers. The device
 * tier's storage is an ordinary kv_cache the forward pass reads through
 * slots and block tables; the swap tier is RAM or, with swap_path, a
 * file-backed shared mapping (disk offload).
 *
 * The manager knows blocks and sequences, nothing about requests: the
 * scheduler decides who runs and who is preempted; this module answers
 * "can it grow", grows, forks, swaps and frees.
 *
 * Prefix cache (device tier, enable_prefix_caching): a full block whose KV
 * has been computed is registered under a hash of (its parent block's hash,
 * its token ids, its shape split - see pkv_seq_cache_computed), the chain
 * rooted in a salt of the pool (model identity, KV dtype, block size, a
 * policy tag). A registered block whose ref count falls to 0 is not freed
 * but kept, cached, in an LRU list; allocation takes a free block first,
 * then evicts the least recently used cached block (dropping its hash). A
 * new sequence whose tokens begin with registered blocks takes them by
 * reference (pkv_seq_new_prefix). Cached blocks count as available: the
 * device tier's pkv_n_free is free + cached. The swap tier caches nothing.
 *
 * Invariants (pkv_check verifies them; tests call it after every operation):
 *   - per tier: free + cached + used == total, and the free list holds no
 *     duplicates (cached is 0 in the swap tier);
 *   - every block's ref count == number of block-table entries (over all
 *     live sequences) that point at it; free and cached blocks have ref
 *     count 0;
 *   - every cached block is registered, and is in the LRU list and the hash
 *     table exactly once; a free block is not registered; the hash table
 *     holds exactly the registered (cached or used) blocks, each under its
 *     own hash, no hash twice;
 *   - a sequence's table covers exactly ceil(len / block_size) blocks, all
 *     in the sequence's current tier.
 *
 * Thread-safety: none; the engine thread owns the pool.
 * Errors: functions return 0 / a handle >= 0 on success and a negative
 * PKV_E* code otherwise; nothing is changed by a failed call.
 */
#ifndef PAGED_KV_H
#define PAGED_KV_H

#include <stddef.h>
#include <stdint.h>

#include "core/kv_cache.h"

enum {
    PKV_OK = 0,
    PKV_ENOMEM = -1, /* not enough free blocks in the tier */
    PKV_EINVAL = -2, /* bad handle / argument */
    PKV_ESTATE = -3, /* sequence in the wrong tier for the operation */
    PKV_EIO = -4,    /* swap file could not be created / mapped */
};

typedef enum { PKV_DEVICE = 0, PKV_CPU = 1 } pkv_tier;

typedef struct {
    int n_layer;
    int kv_dim;         /* n_head_kv * head_dim */
    int block_size;     /* tokens per block */
    int num_blocks;     /* device tier */
    int num_blocks_cpu; /* swap tier; 0 disables swapping */
    kv_dtype dtype;
    const char *swap_path; /* NULL: swap tier in RAM; else a file created/truncated for it */
    int enable_prefix_caching;
    uint64_t prefix_salt; /* what else changes the KV (model identity, policy tag); the pool
                           * mixes in dtype and block size */
} pkv_config;

typedef struct pkv_pool pkv_pool;

int pkv_create(const pkv_config *cfg, pkv_pool **out, char *err, size_t errlen);
void pkv_free(pkv_pool *p);

/* Storage of the device tier, for llm_forward. Owned by the pool. */
kv_cache *pkv_device_cache(pkv_pool *p);
size_t pkv_block_bytes(const pkv_pool *p);

int pkv_n_total(const pkv_pool *p, pkv_tier t);
/* Blocks an allocation may take: free plus (device tier) cached. */
int pkv_n_free(const pkv_pool *p, pkv_tier t);
/* Cached blocks: registered, ref count 0, evictable (device tier only). */
int pkv_n_cached(const pkv_pool *p);
int pkv_block_size(const pkv_pool *p);

/* ---- sequences ---- */
/* New empty sequence in the device tier; returns its handle. */
int pkv_seq_new(pkv_pool *p);
/* Blocks the device tier must hand out for the sequence to hold n_new more
 * tokens (including a copy-on-write of a shared last block). Exact: a
 * successful pkv_seq_append(seq, n_new) takes exactly this many. For a
 * swapped-out sequence: the blocks swap-in plus this growth would take.
 * PKV_EINVAL for a bad handle or n_new < 0. */
int pkv_blocks_needed(const pkv_pool *p, int seq, int n_new);
/* Grow the sequence by n_new tokens (slots become valid for positions
 * len .. len + n_new - 1). A shared last partial block is copied first
 * (copy-on-write of its filled rows). PKV_ENOMEM leaves everything
 * unchanged; PKV_ESTATE for a swapped-out sequence. */
int pkv_seq_append(pkv_pool *p, int seq, int n_new);
/* Shorten to n tokens (e.g. drop speculative or rejected tokens); frees
 * blocks no longer covered. Either tier; PKV_EINVAL unless 0 <= n <= len. */
int pkv_seq_truncate(pkv_pool *p, int seq, int n);
int pkv_seq_len(const pkv_pool *p, int seq);
/* PKV_DEVICE for a bad handle too (pkv_seq_len < 0 tells those apart). */
pkv_tier pkv_seq_tier(const pkv_pool *p, int seq);
/* Physical slot (block * block_size + offset) of position pos, or -1. Slots
 * and block ids are those of the sequence's current tier. */
int32_t pkv_seq_slot(const pkv_pool *p, int seq, int pos);
/* Block table (valid until the sequence changes) and its length. */
const int32_t *pkv_seq_block_table(const pkv_pool *p, int seq, int *n_blocks);
/* A new sequence sharing all of parent's blocks (ref counts + 1), in the
 * parent's tier; the next append to either copies the shared last block if
 * it is partial. */
int pkv_seq_fork(pkv_pool *p, int parent);
/* Release the sequence and its blocks (ref count - 1; at 0 a registered
 * block becomes cached, the others free). Blocks are released back to
 * front, so a sequence's last blocks are evicted before its first. */
void pkv_seq_free(pkv_pool *p, int seq);

/* ---- prefix cache ----
 * n_multi: how many leading tokens of the sequence have their rows computed
 * in the multi-token (prompt) shape, the rest in the single-token shape;
 * the shapes may round differently, so a block's identity includes how many
 * of its rows are of each. With caching disabled, lookups find nothing and
 * registration does nothing. */

/* Leading full blocks of tokens[0, n_tokens) the cache holds, never all
 * of the tokens: at most (n_tokens - 1) / block_size blocks, so at least
 * one token is left to compute (its logits are wanted). *n_idle (may be
 * NULL) gets how many of them are cached (ref count 0): taking them lowers
 * pkv_n_free by that much. Returns the block count, or PKV_EINVAL. */
int pkv_prefix_lookup(const pkv_pool *p, const int32_t *tokens, int n_tokens, int n_multi,
                      int *n_idle);
/* A new device sequence holding the blocks pkv_prefix_lookup finds (ref
 * counts + 1, cached ones leave the LRU list); its length is their tokens,
 * also stored in *n_hit (may be NULL). Counts n_tokens queried and the hit
 * tokens in the stats. Returns the handle, or a PKV_E* code (nothing
 * changed). */
int pkv_seq_new_prefix(pkv_pool *p, const int32_t *tokens, int n_tokens, int n_multi, int *n_hit);
/* Register the sequence's full blocks among positions [0, n_computed),
 * whose KV the caller has computed, under the hashes of tokens (the
 * sequence's tokens, at least n_computed of them). A block whose hash is
 * already registered (another block holds the same KV) stays unregistered.
 * Call it only after the step that wrote those positions; does nothing for
 * a swapped-out sequence or when an allocation for its hashes fails. */
void pkv_seq_cache_computed(pkv_pool *p, int seq, const int32_t *tokens, int n_computed,
                            int n_multi);

/* Move all of a device sequence's blocks to the CPU tier (copying data) and
 * release the device blocks (registered ones stay cached on the device);
 * PKV_ENOMEM when the CPU tier lacks room. Shared blocks are copied per
 * sequence (sharing is not preserved across swap). */
int pkv_swap_out(pkv_pool *p, int seq);
/* The reverse; PKV_ENOMEM when the device tier lacks room. */
int pkv_swap_in(pkv_pool *p, int seq);
/* Blocks the sequence holds (what a swap would move). */
int pkv_seq_n_blocks(const pkv_pool *p, int seq);

/* Pointer to the K (kind 0) or V (kind 1) row of a slot of a tier, as
 * kv_slot_ptr addresses the device cache; NULL when out of range. For tests
 * and tools that look at the swap tier. */
void *pkv_slot_ptr(const pkv_pool *p, pkv_tier t, int layer, int kind, int32_t slot);

/* Verify every invariant; 0 or PKV_EINVAL with a message. */
int pkv_check(const pkv_pool *p, char *err, size_t errlen);

typedef struct {
    int total[2], free[2]; /* free: as pkv_n_free (device: free + cached) */
    int cached;            /* device blocks cached (ref count 0, evictable) */
    long tokens[2]; /* tokens held by live sequences per tier (shared blocks count per sequence) */
    long swaps_out, swaps_in, blocks_copied_cow;
    long prefix_queried_tokens, prefix_hit_tokens; /* pkv_seq_new_prefix: asked, found */
    long prefix_evictions;                         /* cached blocks taken for allocation */
} pkv_stats;
void pkv_get_stats(const pkv_pool *p, pkv_stats *s);

#endif
