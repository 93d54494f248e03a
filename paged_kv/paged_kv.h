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
 * Invariants (pkv_check verifies them; tests call it after every operation):
 *   - per tier: free + used == total, and the free list holds no duplicates;
 *   - every block's ref count == number of block-table entries (over all
 *     live sequences) that point at it; free blocks have ref count 0;
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
} pkv_config;

typedef struct pkv_pool pkv_pool;

int pkv_create(const pkv_config *cfg, pkv_pool **out, char *err, size_t errlen);
void pkv_free(pkv_pool *p);

/* Storage of the device tier, for llm_forward. Owned by the pool. */
kv_cache *pkv_device_cache(pkv_pool *p);
size_t pkv_block_bytes(const pkv_pool *p);

int pkv_n_total(const pkv_pool *p, pkv_tier t);
int pkv_n_free(const pkv_pool *p, pkv_tier t);
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
/* Release the sequence and its blocks (ref count - 1, free at 0). */
void pkv_seq_free(pkv_pool *p, int seq);

/* Move all of a device sequence's blocks to the CPU tier (copying data) and
 * free the device blocks; PKV_ENOMEM when the CPU tier lacks room. Shared
 * blocks are copied per sequence (sharing is not preserved across swap). */
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
    int total[2], free[2];
    long tokens[2]; /* tokens held by live sequences per tier (shared blocks count per sequence) */
    long swaps_out, swaps_in, blocks_copied_cow;
} pkv_stats;
void pkv_get_stats(const pkv_pool *p, pkv_stats *s);

#endif
