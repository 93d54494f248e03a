/*
 * scheduler.h - iteration-level scheduler (continuous batching).
 *
 * Every engine step the scheduler re-decides which sequences run and how
 * many tokens each computes, within two budgets: batch_max_tokens (rows in
 * the step) and batch_max_seqs. Order of service:
 *   1. running sequences, oldest first: a decode is one token; a prompt in
 *      progress continues with as much as the token budget leaves (chunked
 *      prefill);
 *   2. swapped-out sequences, oldest first, if nothing was preempted in this
 *      step and the device pool has room above the watermark;
 *   3. waiting sequences in arrival order, if no sequence is swapped out,
 *      while the pool keeps `watermark` of its blocks free after admission
 *      (the reserve is not kept when nothing is running, so a sequence that
 *      fits the whole pool always runs eventually).
 * When a running sequence cannot get the blocks it needs, the newest running
 * sequence is preempted: swapped to the CPU tier when the mode allows and
 * the tier has room, otherwise its blocks are freed and it is recomputed
 * later from its tokens (prompt and what it generated so far).
 *
 * Static mode collects up to batch_max_seqs waiting sequences only when
 * nothing is running or swapped, and runs them to completion.
 *
 * The scheduler owns policy and queues; memory is the paged_kv pool's; the
 * sequences' tokens and sampling state are the engine's (sched_seq is
 * embedded in the engine's per-sequence record).
 * Thread-safety: none; the engine thread owns it.
 */
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <stdint.h>

#include "paged_kv/paged_kv.h"

typedef enum { SEQ_WAITING = 0, SEQ_RUNNING, SEQ_SWAPPED, SEQ_FINISHED } sched_state;
typedef enum { SCHED_PREEMPT_AUTO = 0, SCHED_PREEMPT_SWAP, SCHED_PREEMPT_RECOMPUTE } sched_preempt;

typedef struct sched_seq {
    uint64_t arrival; /* arrival order; lower is older (set by the caller) */
    int n_tokens;     /* tokens known: prompt + generated */
    int n_computed;   /* tokens whose K/V are in the cache */
    int kv;           /* paged_kv handle, -1 when none */
    /* Prefix caching (NULL tokens: none for this sequence): the caller's
     * tokens, n_tokens of them valid, and how many leading ones are
     * computed in the multi-token shape (paged_kv.h). Admission starts the
     * sequence on the cached blocks its tokens begin with (n_computed set
     * past them); each commit registers the blocks it filled. */
    const int32_t *tokens;
    int n_multi;
    sched_state state;
    int n_preempted; /* times this sequence was preempted */
    long step_stamp; /* scheduler-owned: last step that scheduled it */
    void *user;
    struct sched_seq *prev, *next; /* queue links (scheduler-owned) */
} sched_seq;

typedef struct {
    int batch_max_tokens;
    int batch_max_seqs;
    double watermark; /* fraction of device blocks kept free at admission */
    int static_mode;
    sched_preempt preempt;
} sched_config;

typedef struct {
    sched_seq *seq;
    int n_tokens; /* rows this step: tokens seq->n_computed .. + n_tokens - 1 */
    int samples;  /* the chunk reaches the last known token: sample after it */
} sched_item;

typedef struct {
    sched_item *items;
    int n_items;
    int n_tokens;
    int n_preempt_swap, n_preempt_recompute, n_swap_in, n_admitted;
} sched_batch;

typedef struct {
    int n_waiting, n_running, n_swapped;
    long steps, preempt_swap, preempt_recompute, swap_in, admitted, finished;
    long tokens_scheduled;
    int last_step_tokens;
} sched_stats;

typedef struct sched sched;

/* Device blocks the watermark keeps free at admission: watermark (a
 * fraction) of num_blocks, rounded down. The one rule for it: the
 * scheduler applies it, the engine's capacity limit and the banners report
 * it. */
int sched_watermark_blocks(double watermark, int num_blocks);

int sched_create(const sched_config *cfg, pkv_pool *pool, sched **out, char *err, size_t errlen);
void sched_free(sched *s);

/* Queue a new sequence (state WAITING, n_computed 0, kv -1). */
void sched_add(sched *s, sched_seq *q);
/* Put child right after parent in the running queue, sharing parent's
 * blocks (pkv fork). child must have parent's n_tokens/n_computed set. */
int sched_add_fork(sched *s, sched_seq *parent, sched_seq *child);
/* Remove a sequence from whatever queue it is in and free its blocks. */
void sched_finish(sched *s, sched_seq *q);

/* Build the next step's batch (valid until the next call). Blocks for every
 * scheduled token are allocated before it returns. */
int sched_step(sched *s, sched_batch *out);
/* After the forward pass: n_computed += n_tokens for each item, and the
 * full blocks it completed join the prefix cache. Call it only for a pass
 * that succeeded (after a failed one, finish the items' sequences first;
 * finished ones are skipped). */
void sched_commit(sched *s, const sched_batch *b);

int sched_has_work(const sched *s);
void sched_get_stats(const sched *s, sched_stats *st);
const sched_config *sched_get_config(const sched *s);

#endif
