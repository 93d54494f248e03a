/*
 * scheduler.c - see scheduler.h. Three intrusive doubly linked queues kept
 * in arrival order; one pass over them per step. All memory decisions are
 * asked of the paged_kv pool before anything is changed, so a step never
 * leaves a half-scheduled sequence behind.
 */
#include "scheduler/scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sched_seq *head, *tail;
    int n;
} queue;

struct sched {
    sched_config cfg;
    pkv_pool *pool;
    queue waiting, running, swapped;
    sched_item *items;
    long step;
    int static_batch_open;
    sched_stats st;
};

/* ---- queues (arrival order) ---- */

static void q_remove(queue *q, sched_seq *s) {
    if (s->prev) s->prev->next = s->next;
    else q->head = s->next;
    if (s->next) s->next->prev = s->prev;
    else q->tail = s->prev;
    s->prev = s->next = NULL;
    q->n--;
}

static void q_insert_after(queue *q, sched_seq *at, sched_seq *s) {
    s->prev = at;
    s->next = at ? at->next : q->head;
    if (s->next) s->next->prev = s;
    else q->tail = s;
    if (at) at->next = s;
    else q->head = s;
    q->n++;
}

/* Insert keeping arrival order; scanning from the tail makes the common
 * case (a newcomer) O(1). */
static void q_insert_ordered(queue *q, sched_seq *s) {
    sched_seq *at = q->tail;
    while (at && at->arrival > s->arrival) at = at->prev;
    q_insert_after(q, at, s);
}

static queue *queue_of(sched *s, sched_state st) {
    switch (st) {
    case SEQ_WAITING: return &s->waiting;
    case SEQ_RUNNING: return &s->running;
    case SEQ_SWAPPED: return &s->swapped;
    default: return NULL;
    }
}

int sched_create(const sched_config *cfg, pkv_pool *pool, sched **out, char *err, size_t errlen) {
    *out = NULL;
    if (cfg->batch_max_tokens < 1 || cfg->batch_max_seqs < 1 || cfg->watermark < 0 ||
        cfg->watermark >= 1) {
        snprintf(err, errlen,
                 "invalid scheduler budgets (batch_max_tokens %d, batch_max_seqs %d, watermark %g)",
                 cfg->batch_max_tokens, cfg->batch_max_seqs, cfg->watermark);
        return -1;
    }
    sched *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->cfg = *cfg;
    s->pool = pool;
    s->items = calloc((size_t)cfg->batch_max_seqs, sizeof *s->items);
    if (!s->items) goto oom;
    *out = s;
    return 0;
oom:
    free(s);
    snprintf(err, errlen, "out of memory creating the scheduler");
    return -1;
}

void sched_free(sched *s) {
    if (!s) return;
    free(s->items);
    free(s);
}

void sched_add(sched *s, sched_seq *q) {
    q->state = SEQ_WAITING;
    q->n_computed = 0;
    q->kv = -1;
    q->step_stamp = -1;
    q->prev = q->next = NULL;
    q_insert_ordered(&s->waiting, q);
}

int sched_add_fork(sched *s, sched_seq *parent, sched_seq *child) {
    if (parent->state != SEQ_RUNNING || parent->kv < 0) return -1;
    int kv = pkv_seq_fork(s->pool, parent->kv);
    if (kv < 0) return -1;
    child->kv = kv;
    child->state = SEQ_RUNNING;
    child->step_stamp = parent->step_stamp;
    child->prev = child->next = NULL;
    q_insert_after(&s->running, parent, child);
    return 0;
}

void sched_finish(sched *s, sched_seq *q) {
    queue *qu = queue_of(s, q->state);
    if (qu) q_remove(qu, q);
    if (q->kv >= 0) pkv_seq_free(s->pool, q->kv);
    q->kv = -1;
    q->state = SEQ_FINISHED;
    s->st.finished++;
}

int sched_watermark_blocks(double watermark, int num_blocks) {
    return (int)(watermark * num_blocks);
}

/* Blocks a swap-in or admission must leave free. The reserve is for the
 * running sequences to grow into; with none running it protects nothing,
 * and keeping it would shut out forever a sequence that fits the pool but
 * not the pool less the reserve (and, FCFS, everything queued behind it). */
static int reserve(const sched *s, int wm) { return s->running.n > 0 ? wm : 0; }

static int blocks_for(const sched *s, int n_tokens) {
    int bs = pkv_block_size(s->pool);
    return (n_tokens + bs - 1) / bs;
}

/* Device blocks admitting q takes from pkv_n_free: its blocks less the
 * cached prefix it starts on, plus the prefix's idle (cached, ref 0)
 * blocks, which leave the evictable list. */
static int admit_cost(const sched *s, const sched_seq *q) {
    int idle = 0, hit = 0;
    if (q->tokens) hit = pkv_prefix_lookup(s->pool, q->tokens, q->n_tokens, q->n_multi, &idle);
    if (hit < 0) hit = idle = 0;
    return blocks_for(s, q->n_tokens) - hit + idle;
}

/* A device sequence for q holding its cached prefix; *n_hit gets the
 * prefix's tokens (computed already). Returns the handle or < 0. */
static int admit_kv(sched *s, const sched_seq *q, int *n_hit) {
    *n_hit = 0;
    if (!q->tokens) return pkv_seq_new(s->pool);
    return pkv_seq_new_prefix(s->pool, q->tokens, q->n_tokens, q->n_multi, n_hit);
}

/* Take the newest running sequence out of the device pool: swap it out
 * when allowed and possible, otherwise drop its cache for recomputation. */
static void preempt(sched *s, sched_seq *v, sched_batch *b) {
    q_remove(&s->running, v);
    v->n_preempted++;
    int nb = pkv_seq_n_blocks(s->pool, v->kv);
    if (s->cfg.preempt != SCHED_PREEMPT_RECOMPUTE && pkv_n_total(s->pool, PKV_CPU) > 0 &&
        nb <= pkv_n_free(s->pool, PKV_CPU) && pkv_swap_out(s->pool, v->kv) == 0) {
        v->state = SEQ_SWAPPED;
        q_insert_ordered(&s->swapped, v);
        b->n_preempt_swap++;
        s->st.preempt_swap++;
        return;
    }
    pkv_seq_free(s->pool, v->kv);
    v->kv = -1;
    v->n_computed = 0;
    v->state = SEQ_WAITING;
    q_insert_ordered(&s->waiting, v);
    b->n_preempt_recompute++;
    s->st.preempt_recompute++;
}

static void add_item(sched *s, sched_batch *b, sched_seq *q, int take) {
    sched_item *it = &s->items[b->n_items++];
    it->seq = q;
    it->n_tokens = take;
    it->samples = q->n_computed + take == q->n_tokens;
    b->n_tokens += take;
    q->step_stamp = s->step;
}

int sched_step(sched *s, sched_batch *b) {
    memset(b, 0, sizeof *b);
    b->items = s->items;
    s->step++;
    int budget_tok = s->cfg.batch_max_tokens, budget_seq = s->cfg.batch_max_seqs;
    const int wm = sched_watermark_blocks(s->cfg.watermark, pkv_n_total(s->pool, PKV_DEVICE));

    /* static mode: a new batch is formed only when the previous one is done */
    if (s->cfg.static_mode && s->running.n == 0 && s->swapped.n == 0) {
        int free_blocks = pkv_n_free(s->pool, PKV_DEVICE), admitted = 0;
        while (s->waiting.head && admitted < s->cfg.batch_max_seqs) {
            sched_seq *q = s->waiting.head;
            int need = admit_cost(s, q), hit;
            if (admitted > 0 && free_blocks - need < wm) break;
            int kv = admit_kv(s, q, &hit);
            if (kv < 0) break;
            q_remove(&s->waiting, q);
            q->kv = kv;
            q->n_computed = hit;
            q->state = SEQ_RUNNING;
            q_insert_ordered(&s->running, q);
            free_blocks -= need;
            admitted++;
            b->n_admitted++;
            s->st.admitted++;
        }
    }

    /* 1. running: decodes and prompts in progress, oldest first */
    for (sched_seq *q = s->running.head, *next; q; q = next) {
        next = q->next;
        if (budget_tok == 0 || budget_seq == 0) break;
        int take = q->n_tokens - q->n_computed;
        if (take < 1) continue; /* nothing to compute (should not happen) */
        if (take > budget_tok) take = budget_tok;
        int preempted_self = 0;
        while (pkv_blocks_needed(s->pool, q->kv, take) > pkv_n_free(s->pool, PKV_DEVICE)) {
            sched_seq *victim = s->running.tail;
            while (victim && victim->step_stamp == s->step && victim != q) victim = victim->prev;
            if (!victim) victim = q;
            if (victim == next) next = victim->next;
            preempt(s, victim, b);
            if (victim == q) {
                preempted_self = 1;
                break;
            }
        }
        if (preempted_self) continue;
        if (pkv_seq_append(s->pool, q->kv, take) != 0) continue;
        add_item(s, b, q, take);
        budget_tok -= take;
        budget_seq--;
    }
    int preempted = b->n_preempt_swap + b->n_preempt_recompute;

    /* 2. swapped: bring back the oldest while there is room */
    if (!preempted) {
        for (sched_seq *q = s->swapped.head, *next; q; q = next) {
            next = q->next;
            if (budget_tok == 0 || budget_seq == 0) break;
            int take = q->n_tokens - q->n_computed;
            if (take > budget_tok) take = budget_tok;
            int len = pkv_seq_len(s->pool, q->kv);
            int need = blocks_for(s, len + take);
            if (pkv_n_free(s->pool, PKV_DEVICE) - need < reserve(s, wm)) break;
            if (pkv_swap_in(s->pool, q->kv) != 0) break;
            q_remove(&s->swapped, q);
            q->state = SEQ_RUNNING;
            q_insert_ordered(&s->running, q);
            b->n_swap_in++;
            s->st.swap_in++;
            if (take < 1 || pkv_seq_append(s->pool, q->kv, take) != 0) continue;
            add_item(s, b, q, take);
            budget_tok -= take;
            budget_seq--;
        }
    }

    /* 3. waiting: admit in arrival order (continuous mode) */
    if (!s->cfg.static_mode && !preempted && s->swapped.n == 0) {
        while (s->waiting.head && budget_tok > 0 && budget_seq > 0) {
            sched_seq *q = s->waiting.head;
            int need_total = admit_cost(s, q), hit;
            if (pkv_n_free(s->pool, PKV_DEVICE) - need_total < reserve(s, wm)) break;
            int kv = admit_kv(s, q, &hit);
            if (kv < 0) break;
            int left = q->n_tokens - hit;
            int take = left < budget_tok ? left : budget_tok;
            if (pkv_seq_append(s->pool, kv, take) != 0) {
                pkv_seq_free(s->pool, kv);
                break;
            }
            q_remove(&s->waiting, q);
            q->kv = kv;
            q->n_computed = hit;
            q->state = SEQ_RUNNING;
            q_insert_ordered(&s->running, q);
            b->n_admitted++;
            s->st.admitted++;
            add_item(s, b, q, take);
            budget_tok -= take;
            budget_seq--;
        }
    }
    s->st.steps++;
    s->st.tokens_scheduled += b->n_tokens;
    s->st.last_step_tokens = b->n_tokens;
    return b->n_items;
}

void sched_commit(sched *s, const sched_batch *b) {
    for (int i = 0; i < b->n_items; i++) {
        sched_seq *q = b->items[i].seq;
        if (q->state == SEQ_FINISHED) continue;
        q->n_computed += b->items[i].n_tokens;
        if (q->tokens && q->kv >= 0)
            pkv_seq_cache_computed(s->pool, q->kv, q->tokens, q->n_computed, q->n_multi);
    }
}

int sched_has_work(const sched *s) { return s->waiting.n + s->running.n + s->swapped.n > 0; }

void sched_get_stats(const sched *s, sched_stats *st) {
    *st = s->st;
    st->n_waiting = s->waiting.n;
    st->n_running = s->running.n;
    st->n_swapped = s->swapped.n;
}

const sched_config *sched_get_config(const sched *s) { return &s->cfg; }
