/*
 * test_scheduler.c - the iteration-level scheduler keeps its contract,
 * driven by a fake engine loop over a real paged_kv pool (no model).
 *
 * The harness plays the engine: every step it calls sched_step, checks the
 * batch, "runs" it (each scheduled position gets a tag written into its K
 * row; before that, every context position the item attends to must still
 * hold the tag written when it was computed, so a lost swap, a wrong
 * copy-on-write or a stale slot shows up as wrong data), commits, appends a
 * token to every item that samples, forks and finishes sequences. After
 * every step it checks the pool (pkv_check) and the batch against the
 * policy: budgets, a device slot for every scheduled token in a block no
 * other sequence shares, order of service (running, then swapped, then
 * waiting, each oldest first), `samples` only on the chunk that reaches the
 * last token, preemption of the newest, no admission in a preempting step
 * or while anything is swapped, the watermark, static batches.
 *
 * Scenario tests pin the exact batches of small cases; seeded random runs
 * (both preemption modes, swap tiers with and without room, static mode,
 * forks, cancels) check that every sequence finishes with exactly its
 * target tokens within a bounded number of steps and every block comes
 * back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "paged_kv/paged_kv.h"
#include "scheduler/scheduler.h"
#include "tests/common/test_util.h"

#define MAX_TOKENS 512

/* One request as the fake engine sees it. */
typedef struct tseq {
    sched_seq ss;
    int id;
    int prompt;
    int target;  /* finished when n_tokens reaches it */
    int n_forks; /* children forked at the first sample */
    int forked;
    int done;                     /* 0 live, 1 reached its target, 2 cancelled */
    int pre_state, pre_preempted; /* before the current step */
    long seen;                    /* last step it appeared in a batch */
    uint32_t tok[MAX_TOKENS], tag[MAX_TOKENS];
} tseq;

typedef struct {
    pkv_pool *pool;
    sched *s;
    sched_config cfg;
    int bs, nb, nb_cpu, wm_blocks;
    tseq **all;
    int n_all, cap_all;
    uint64_t arrival;
    uint32_t rng;
    int *blk_ref;
    long steps;
    int quiet_after; /* stop printing detail after this many failures */
} harness;

static uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

static uint32_t rnd(harness *h) {
    uint32_t x = h->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return h->rng = x;
}

static int rnd_below(harness *h, int n) { return n > 0 ? (int)(rnd(h) % (uint32_t)n) : 0; }
static int rnd_range(harness *h, int lo, int hi) { return lo + rnd_below(h, hi - lo + 1); }

static int h_init(harness *h, int bs, int nb, int nb_cpu, const sched_config *cfg) {
    memset(h, 0, sizeof *h);
    pkv_config pc = {1, 8, bs, nb, nb_cpu, KV_F32, NULL, 0, 0};
    char err[256] = "";
    int rc = pkv_create(&pc, &h->pool, err, sizeof err);
    CHECKF(rc == 0, "pkv_create: %s", err);
    if (rc != 0) return -1;
    rc = sched_create(cfg, h->pool, &h->s, err, sizeof err);
    CHECKF(rc == 0, "sched_create: %s", err);
    if (rc != 0) {
        pkv_free(h->pool);
        return -1;
    }
    h->cfg = *cfg;
    h->bs = bs;
    h->nb = nb;
    h->nb_cpu = nb_cpu;
    h->wm_blocks = (int)(cfg->watermark * nb);
    h->blk_ref = calloc((size_t)nb, sizeof *h->blk_ref);
    h->rng = 0x9e3779b9u;
    h->quiet_after = tu_failures + 20;
    return 0;
}

static void h_free(harness *h) {
    for (int i = 0; i < h->n_all; i++) free(h->all[i]);
    free(h->all);
    free(h->blk_ref);
    sched_free(h->s);
    pkv_free(h->pool);
}

static tseq *h_track(harness *h) {
    if (h->n_all == h->cap_all) {
        h->cap_all = h->cap_all ? 2 * h->cap_all : 64;
        h->all = realloc(h->all, (size_t)h->cap_all * sizeof *h->all);
    }
    tseq *t = calloc(1, sizeof *t);
    t->id = h->n_all;
    t->seen = -1;
    t->ss.user = t;
    t->ss.kv = -1;
    h->all[h->n_all++] = t;
    return t;
}

/* Append a token; its tag chains the previous one so a position's tag
 * stands for the whole prefix, as a real K row would. */
static void seq_push(tseq *t, uint32_t tok) {
    int n = t->ss.n_tokens;
    uint32_t prev = n > 0 ? t->tag[n - 1] : mix(0x51ed0000u + (uint32_t)t->id);
    t->tok[n] = tok;
    t->tag[n] = mix(prev ^ mix(tok + (uint32_t)n));
    t->ss.n_tokens = n + 1;
}

/* A new request with `prompt` tokens, finished at `target` tokens. */
static tseq *h_add_at(harness *h, int prompt, int target, uint64_t arrival) {
    tseq *t = h_track(h);
    t->prompt = prompt;
    t->target = target;
    for (int i = 0; i < prompt; i++) seq_push(t, rnd(h));
    t->ss.arrival = arrival;
    if (arrival > h->arrival) h->arrival = arrival;
    sched_add(h->s, &t->ss);
    return t;
}

static tseq *h_add(harness *h, int prompt, int target) {
    return h_add_at(h, prompt, target, h->arrival + 1);
}

/* As the engine does after the parent's first forward: the child shares the
 * parent's tokens and cache and has the parent's arrival. */
static tseq *h_fork(harness *h, tseq *parent, int target) {
    tseq *c = h_track(h);
    c->prompt = parent->prompt;
    c->target = target;
    memcpy(c->tok, parent->tok, (size_t)parent->ss.n_tokens * sizeof *c->tok);
    memcpy(c->tag, parent->tag, (size_t)parent->ss.n_tokens * sizeof *c->tag);
    c->ss.n_tokens = parent->ss.n_tokens;
    c->ss.n_computed = parent->ss.n_computed;
    c->ss.arrival = parent->ss.arrival;
    if (sched_add_fork(h->s, &parent->ss, &c->ss) != 0) {
        c->done = 2; /* never entered the scheduler */
        c->ss.state = SEQ_FINISHED;
        return NULL;
    }
    return c;
}

static void h_finish(harness *h, tseq *t, int why) {
    sched_finish(h->s, &t->ss);
    t->done = why;
    CHECK(t->ss.state == SEQ_FINISHED && t->ss.kv == -1);
}

static int live(const tseq *t) { return t->done == 0; }

static uint32_t *k_row(harness *h, int32_t slot) {
    return pkv_slot_ptr(h->pool, PKV_DEVICE, 0, 0, slot);
}

static int pool_ok(harness *h) {
    char err[256] = "";
    int rc = pkv_check(h->pool, err, sizeof err);
    CHECKF(rc == 0, "step %ld: pkv_check: %s", h->steps, err);
    return rc == 0;
}

static int state_rank(int st) { return st == SEQ_RUNNING ? 0 : st == SEQ_SWAPPED ? 1 : 2; }

#define HCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        tu_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            tu_failures++;                                                                         \
            if (tu_failures <= h->quiet_after) {                                                   \
                fprintf(stderr, "%s:%d: step %ld: CHECK failed: %s: ", __FILE__, __LINE__,         \
                        h->steps, #cond);                                                          \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fputc('\n', stderr);                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* The batch just returned by sched_step, checked against the policy, then
 * "computed": context tags verified, new positions tagged. */
static void check_batch(harness *h, const sched_batch *b, int n_ret, const sched_stats *pre) {
    const sched_config *c = &h->cfg;
    HCHECK(n_ret == b->n_items, "returned %d, n_items %d", n_ret, b->n_items);
    HCHECK(b->n_items >= 0 && b->n_items <= c->batch_max_seqs, "n_items %d > %d", b->n_items,
           c->batch_max_seqs);
    HCHECK(b->n_tokens <= c->batch_max_tokens, "n_tokens %d > %d", b->n_tokens,
           c->batch_max_tokens);

    /* device blocks referenced by each live sequence */
    memset(h->blk_ref, 0, (size_t)h->nb * sizeof *h->blk_ref);
    for (int i = 0; i < h->n_all; i++) {
        tseq *t = h->all[i];
        if (!live(t) || t->ss.kv < 0 || pkv_seq_tier(h->pool, t->ss.kv) != PKV_DEVICE) continue;
        int nbl = 0;
        const int32_t *tab = pkv_seq_block_table(h->pool, t->ss.kv, &nbl);
        for (int k = 0; k < nbl; k++) h->blk_ref[tab[k]]++;
    }

    int sum = 0, prev_rank = -1;
    uint64_t prev_arrival = 0;
    for (int i = 0; i < b->n_items; i++) {
        const sched_item *it = &b->items[i];
        tseq *t = it->seq ? it->seq->user : NULL;
        HCHECK(t != NULL, "item %d has no sequence", i);
        if (!t) continue;
        const int n0 = t->ss.n_computed, n = it->n_tokens;
        sum += n;
        HCHECK(live(t), "item %d: seq %d is finished", i, t->id);
        HCHECK(t->seen != h->steps, "seq %d twice in one batch", t->id);
        t->seen = h->steps;
        HCHECK(t->ss.state == SEQ_RUNNING, "seq %d scheduled in state %d", t->id, t->ss.state);
        HCHECK(n >= 1 && n0 + n <= t->ss.n_tokens, "seq %d: rows %d from %d of %d tokens", t->id, n,
               n0, t->ss.n_tokens);
        HCHECK(it->samples == (n0 + n == t->ss.n_tokens), "seq %d: samples %d, %d+%d of %d", t->id,
               it->samples, n0, n, t->ss.n_tokens);
        /* a chunk stops short of the last token only when the token budget ran out */
        if (!it->samples)
            HCHECK(i == b->n_items - 1 && b->n_tokens == c->batch_max_tokens,
                   "seq %d chunked at %d+%d with budget left (item %d of %d, %d tokens)", t->id, n0,
                   n, i, b->n_items, b->n_tokens);
        /* order of service: running, swapped, waiting; each oldest first */
        int rank = state_rank(t->pre_state);
        if (c->static_mode && rank == 2) rank = 0; /* a static batch is admitted, then run */
        HCHECK(rank > prev_rank || (rank == prev_rank && t->ss.arrival >= prev_arrival),
               "seq %d (was state %d, arrival %llu) after rank %d arrival %llu", t->id,
               t->pre_state, (unsigned long long)t->ss.arrival, prev_rank,
               (unsigned long long)prev_arrival);
        prev_rank = rank;
        prev_arrival = t->ss.arrival;
        if (t->ss.kv < 0 || t->ss.state != SEQ_RUNNING) continue;
        HCHECK(pkv_seq_tier(h->pool, t->ss.kv) == PKV_DEVICE, "seq %d scheduled off the device",
               t->id);
        HCHECK(pkv_seq_len(h->pool, t->ss.kv) == n0 + n, "seq %d: pool len %d, expected %d+%d",
               t->id, pkv_seq_len(h->pool, t->ss.kv), n0, n);
        if (n0 + n > t->ss.n_tokens) continue;
        /* the forward pass: read the context, write the new rows */
        for (int pos = 0; pos < n0 + n; pos++) {
            int32_t slot = pkv_seq_slot(h->pool, t->ss.kv, pos);
            HCHECK(slot >= 0, "seq %d pos %d has no slot", t->id, pos);
            if (slot < 0) continue;
            uint32_t *row = k_row(h, slot);
            if (pos < n0) {
                HCHECK(row[0] == t->tag[pos], "seq %d pos %d: cache lost its row", t->id, pos);
            } else {
                HCHECK(h->blk_ref[slot / h->bs] == 1, "seq %d pos %d written into a shared block",
                       t->id, pos);
                row[0] = t->tag[pos];
            }
        }
    }
    HCHECK(sum == b->n_tokens, "items sum to %d, batch says %d", sum, b->n_tokens);

    /* what changed state in this step */
    int n_pre_swap = 0, n_pre_rec = 0, n_swap_in = 0, n_adm = 0;
    uint64_t max_admitted = 0, min_preempted = UINT64_MAX;
    int counts[4] = {0};
    for (int i = 0; i < h->n_all; i++) {
        tseq *t = h->all[i];
        if (!live(t)) continue;
        counts[t->ss.state]++;
        if (t->ss.n_preempted != t->pre_preempted) {
            HCHECK(t->ss.n_preempted == t->pre_preempted + 1 && t->pre_state == SEQ_RUNNING,
                   "seq %d preempted %d -> %d from state %d", t->id, t->pre_preempted,
                   t->ss.n_preempted, t->pre_state);
            if (t->ss.arrival < min_preempted) min_preempted = t->ss.arrival;
            if (t->ss.state == SEQ_SWAPPED) {
                n_pre_swap++;
                HCHECK(t->ss.kv >= 0 && pkv_seq_tier(h->pool, t->ss.kv) == PKV_CPU &&
                           pkv_seq_len(h->pool, t->ss.kv) == t->ss.n_computed,
                       "swapped seq %d not whole in the CPU tier", t->id);
                HCHECK(c->preempt != SCHED_PREEMPT_RECOMPUTE && h->nb_cpu > 0,
                       "seq %d swapped in mode %d with %d CPU blocks", t->id, c->preempt,
                       h->nb_cpu);
            } else {
                n_pre_rec++;
                HCHECK(t->ss.state == SEQ_WAITING && t->ss.kv == -1 && t->ss.n_computed == 0,
                       "recomputed seq %d: state %d kv %d n_computed %d", t->id, t->ss.state,
                       t->ss.kv, t->ss.n_computed);
            }
        } else if (t->pre_state == SEQ_WAITING && t->ss.state == SEQ_RUNNING) {
            n_adm++;
            if (t->ss.arrival > max_admitted) max_admitted = t->ss.arrival;
        } else if (t->pre_state == SEQ_SWAPPED && t->ss.state == SEQ_RUNNING) {
            n_swap_in++;
        } else {
            HCHECK(t->pre_state == (int)t->ss.state || t->pre_state == -1,
                   "seq %d went from state %d to %d", t->id, t->pre_state, t->ss.state);
        }
    }
    HCHECK(n_pre_swap == b->n_preempt_swap && n_pre_rec == b->n_preempt_recompute &&
               n_swap_in == b->n_swap_in && n_adm == b->n_admitted,
           "batch counts swap %d rec %d in %d adm %d, seen %d %d %d %d", b->n_preempt_swap,
           b->n_preempt_recompute, b->n_swap_in, b->n_admitted, n_pre_swap, n_pre_rec, n_swap_in,
           n_adm);
    if (n_pre_swap + n_pre_rec > 0) {
        HCHECK(b->n_admitted == 0 && b->n_swap_in == 0,
               "a preempting step admitted %d and swapped in %d", b->n_admitted, b->n_swap_in);
        /* the victims were the newest: nothing newer is still running */
        for (int i = 0; i < h->n_all; i++) {
            tseq *t = h->all[i];
            if (live(t) && t->ss.state == SEQ_RUNNING)
                HCHECK(t->ss.arrival <= min_preempted,
                       "seq %d (arrival %llu) kept running, an older one was preempted", t->id,
                       (unsigned long long)t->ss.arrival);
        }
    }
    if (b->n_admitted > 0) {
        HCHECK(counts[SEQ_SWAPPED] == 0, "admitted with %d swapped", counts[SEQ_SWAPPED]);
        /* first come, first served: nobody older is left waiting */
        for (int i = 0; i < h->n_all; i++) {
            tseq *t = h->all[i];
            if (live(t) && t->ss.state == SEQ_WAITING)
                HCHECK(t->ss.arrival >= max_admitted,
                       "seq %d (arrival %llu) left waiting behind arrival %llu", t->id,
                       (unsigned long long)t->ss.arrival, (unsigned long long)max_admitted);
        }
        /* the watermark binds once anything runs beside the newcomer */
        if (pre->n_running + b->n_swap_in > 0 || b->n_admitted >= 2)
            HCHECK(pkv_n_free(h->pool, PKV_DEVICE) >= h->wm_blocks,
                   "admission left %d free blocks, watermark %d", pkv_n_free(h->pool, PKV_DEVICE),
                   h->wm_blocks);
        if (c->static_mode)
            HCHECK(pre->n_running == 0 && pre->n_swapped == 0,
                   "static mode admitted beside %d running, %d swapped", pre->n_running,
                   pre->n_swapped);
    }
    sched_stats st;
    sched_get_stats(h->s, &st);
    HCHECK(st.n_waiting == counts[SEQ_WAITING] && st.n_running == counts[SEQ_RUNNING] &&
               st.n_swapped == counts[SEQ_SWAPPED],
           "queues %d/%d/%d, sequences %d/%d/%d", st.n_waiting, st.n_running, st.n_swapped,
           counts[SEQ_WAITING], counts[SEQ_RUNNING], counts[SEQ_SWAPPED]);
    HCHECK(st.last_step_tokens == b->n_tokens, "stats last_step_tokens %d", st.last_step_tokens);
    pool_ok(h);
}

/* sched_step plus every check; the batch is left uncommitted. */
static int h_step(harness *h, sched_batch *b) {
    for (int i = 0; i < h->n_all; i++) {
        tseq *t = h->all[i];
        t->pre_state = live(t) ? (int)t->ss.state : -1;
        t->pre_preempted = t->ss.n_preempted;
    }
    sched_stats pre;
    sched_get_stats(h->s, &pre);
    h->steps++;
    int n = sched_step(h->s, b);
    check_batch(h, b, n, &pre);
    return n;
}

/* The rest of the engine's step: commit, fork at the first sample, append
 * the sampled tokens, finish whoever reached its target. */
static void h_commit(harness *h, const sched_batch *b) {
    sched_commit(h->s, b);
    for (int i = 0; i < h->n_all; i++) {
        tseq *t = h->all[i];
        if (!live(t)) continue;
        if (t->ss.state == SEQ_WAITING)
            HCHECK(t->ss.kv == -1 && t->ss.n_computed == 0, "waiting seq %d: kv %d computed %d",
                   t->id, t->ss.kv, t->ss.n_computed);
        else
            HCHECK(t->ss.kv >= 0 && pkv_seq_len(h->pool, t->ss.kv) == t->ss.n_computed,
                   "seq %d (state %d): pool len %d, n_computed %d", t->id, t->ss.state,
                   pkv_seq_len(h->pool, t->ss.kv), t->ss.n_computed);
    }
    for (int i = 0; i < b->n_items; i++) {
        if (!b->items[i].samples) continue;
        tseq *t = b->items[i].seq->user;
        if (t->n_forks > 0 && !t->forked) {
            t->forked = 1;
            for (int k = 0; k < t->n_forks; k++) {
                int lo = t->ss.n_tokens + 1, hi = t->target + 8;
                if (hi > h->nb * h->bs) hi = h->nb * h->bs;
                if (hi > MAX_TOKENS) hi = MAX_TOKENS;
                if (hi < lo) hi = lo;
                tseq *ch = h_fork(h, t, rnd_range(h, lo, hi));
                if (ch) seq_push(ch, rnd(h));
            }
        }
        seq_push(t, rnd(h));
    }
    for (int i = 0; i < h->n_all; i++) {
        tseq *t = h->all[i];
        if (live(t) && t->ss.n_tokens >= t->target) {
            HCHECK(t->ss.n_tokens == t->target, "seq %d overshot: %d of %d", t->id, t->ss.n_tokens,
                   t->target);
            h_finish(h, t, 1);
        }
    }
    pool_ok(h);
}

static int h_run_step(harness *h, sched_batch *b) {
    int n = h_step(h, b);
    h_commit(h, b);
    return n;
}

/* Index of t in the batch, -1 when absent. */
static int item_of(const sched_batch *b, const tseq *t) {
    for (int i = 0; i < b->n_items; i++)
        if (b->items[i].seq == &t->ss) return i;
    return -1;
}

/* Run until nothing is left (or max_steps); returns the steps taken. */
static long h_drain(harness *h, long max_steps) {
    sched_batch b;
    long n = 0;
    while (sched_has_work(h->s) && n < max_steps) {
        int got = h_run_step(h, &b);
        HCHECK(got > 0, "nothing scheduled while work is queued");
        if (got == 0) break;
        n++;
    }
    return n;
}

static void check_all_free(harness *h) {
    CHECKF(pkv_n_free(h->pool, PKV_DEVICE) == h->nb, "device: %d of %d free",
           pkv_n_free(h->pool, PKV_DEVICE), h->nb);
    CHECKF(pkv_n_free(h->pool, PKV_CPU) == h->nb_cpu, "cpu: %d of %d free",
           pkv_n_free(h->pool, PKV_CPU), h->nb_cpu);
    CHECK(!sched_has_work(h->s));
    pool_ok(h);
}

static sched_config mkcfg(int max_tokens, int max_seqs, double wm, int static_mode,
                          sched_preempt mode) {
    sched_config c = {max_tokens, max_seqs, wm, static_mode, mode};
    return c;
}

/* ---- scenarios ---- */

static void test_create_rejects_bad_budgets(void) {
    pkv_config pc = {1, 8, 4, 8, 0, KV_F32, NULL, 0, 0};
    pkv_pool *p = NULL;
    char err[256] = "";
    CHECK(pkv_create(&pc, &p, err, sizeof err) == 0);
    const sched_config bad[] = {
        mkcfg(0, 1, 0, 0, SCHED_PREEMPT_AUTO),
        mkcfg(8, 0, 0, 0, SCHED_PREEMPT_AUTO),
        mkcfg(8, 1, -0.1, 0, SCHED_PREEMPT_AUTO),
        mkcfg(8, 1, 1.0, 0, SCHED_PREEMPT_AUTO),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sched *s = (sched *)1;
        err[0] = 0;
        CHECK(sched_create(&bad[i], p, &s, err, sizeof err) != 0 && s == NULL && err[0]);
    }
    pkv_free(p);
}

/* Arrival order decides admission, not call order; a long prompt is
 * prefilled in chunks that fill the token budget, and only the last chunk
 * samples; running sequences go before waiting ones. */
static void test_fcfs_admission_and_chunked_prefill(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(8, 4, 0, 0, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 64, 0, &c)) return;
    tseq *s3 = h_add_at(h, 3, 10, 30);
    tseq *s1 = h_add_at(h, 20, 30, 10);
    tseq *s2 = h_add_at(h, 2, 10, 20);
    sched_batch b;

    CHECK(h_step(h, &b) == 1);
    CHECK(b.items[0].seq == &s1->ss && b.items[0].n_tokens == 8 && !b.items[0].samples);
    CHECK(b.n_admitted == 1 && b.n_tokens == 8);
    CHECK(s2->ss.state == SEQ_WAITING && s3->ss.state == SEQ_WAITING);
    h_commit(h, &b);

    CHECK(h_step(h, &b) == 1); /* the prompt continues; no budget for newcomers */
    CHECK(b.items[0].seq == &s1->ss && b.items[0].n_tokens == 8 && !b.items[0].samples);
    CHECK(b.n_admitted == 0);
    h_commit(h, &b);

    CHECK(h_step(h, &b) == 3); /* last chunk of s1, then s2 whole, then s3 cut */
    CHECK(b.items[0].seq == &s1->ss && b.items[0].n_tokens == 4 && b.items[0].samples);
    CHECK(b.items[1].seq == &s2->ss && b.items[1].n_tokens == 2 && b.items[1].samples);
    CHECK(b.items[2].seq == &s3->ss && b.items[2].n_tokens == 2 && !b.items[2].samples);
    CHECK(b.n_admitted == 2 && b.n_tokens == 8);
    h_commit(h, &b);
    CHECK(s1->ss.n_tokens == 21 && s1->ss.n_computed == 20);

    /* decodes first, then s3's last prompt token, then a newcomer's chunk
     * with what is left; the fifth sequence exceeds batch_max_seqs */
    tseq *s4 = h_add(h, 20, 30);
    tseq *s5 = h_add(h, 1, 5);
    CHECK(h_step(h, &b) == 4);
    CHECK(b.items[0].seq == &s1->ss && b.items[0].n_tokens == 1 && b.items[0].samples);
    CHECK(b.items[1].seq == &s2->ss && b.items[1].n_tokens == 1 && b.items[1].samples);
    CHECK(b.items[2].seq == &s3->ss && b.items[2].n_tokens == 1 && b.items[2].samples);
    CHECK(b.items[3].seq == &s4->ss && b.items[3].n_tokens == 5 && !b.items[3].samples);
    CHECK(s5->ss.state == SEQ_WAITING);
    h_commit(h, &b);

    h_drain(h, 1000);
    CHECK(s1->done == 1 && s2->done == 1 && s3->done == 1 && s4->done == 1 && s5->done == 1);
    check_all_free(h);
    sched_stats st;
    sched_get_stats(h->s, &st);
    CHECK(st.admitted == 5 && st.finished == 5 && st.preempt_swap + st.preempt_recompute == 0);
    h_free(h);
}

/* Three sequences fill an 8-block pool (4 tokens a block). The first decode
 * step needs two new blocks: A takes the free one, B's need preempts the
 * newest, C. Returns with A, B running, C preempted, D waiting. */
static void pressure_setup(harness *h, tseq **A, tseq **B, tseq **C, tseq **D, sched_batch *b) {
    *A = h_add(h, 8, 14);
    *B = h_add(h, 8, 14);
    *C = h_add(h, 12, 16);
    CHECK(h_run_step(h, b) == 3 && b->n_admitted == 3);
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 1);
    *D = h_add(h, 1, 3);

    CHECK(h_step(h, b) == 2);
    CHECK(b->items[0].seq == &(*A)->ss && b->items[1].seq == &(*B)->ss);
    CHECK((*C)->ss.n_preempted == 1 && (*A)->ss.n_preempted == 0 && (*B)->ss.n_preempted == 0);
    /* D would fit in the 2 blocks now free, but nothing is admitted in a
     * step that preempted */
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 2);
    CHECK(b->n_admitted == 0 && (*D)->ss.state == SEQ_WAITING);
    h_commit(h, b);
}

static void test_preemption_swaps_the_newest_and_swaps_it_back(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(64, 8, 0, 0, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 8, 16, &c)) return;
    tseq *A, *B, *C, *D;
    sched_batch b;
    pressure_setup(h, &A, &B, &C, &D, &b);
    CHECK(b.n_preempt_swap == 1 && b.n_preempt_recompute == 0);
    CHECK(C->ss.state == SEQ_SWAPPED && pkv_seq_tier(h->pool, C->ss.kv) == PKV_CPU);
    CHECK(C->ss.n_computed == 12 && pkv_seq_len(h->pool, C->ss.kv) == 12);
    CHECK(pkv_n_free(h->pool, PKV_CPU) == 13);

    /* C needs 4 blocks, 2 are free: it stays out, and D may not pass it */
    CHECK(h_run_step(h, &b) == 2 && b.n_swap_in == 0 && b.n_admitted == 0);
    CHECK(C->ss.state == SEQ_SWAPPED && D->ss.state == SEQ_WAITING);

    /* B's 3 blocks come free: running A, then swapped C, then waiting D */
    h_finish(h, B, 2);
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 5);
    CHECK(h_step(h, &b) == 3);
    CHECK(b.items[0].seq == &A->ss && b.items[1].seq == &C->ss && b.items[2].seq == &D->ss);
    CHECK(b.n_swap_in == 1 && b.n_admitted == 1);
    CHECK(b.items[1].n_tokens == 1 && b.items[1].samples); /* C continues where it stopped */
    CHECK(C->ss.state == SEQ_RUNNING && pkv_seq_tier(h->pool, C->ss.kv) == PKV_DEVICE);
    CHECK(pkv_n_free(h->pool, PKV_CPU) == 16);
    h_commit(h, &b);
    sched_stats st;
    sched_get_stats(h->s, &st);
    CHECK(st.preempt_swap == 1 && st.swap_in == 1 && st.preempt_recompute == 0);

    h_drain(h, 1000);
    CHECK(A->done == 1 && C->done == 1 && D->done == 1);
    check_all_free(h);
    h_free(h);
}

/* Recompute (or a swap that has no CPU room) drops the cache: the sequence
 * waits at the front of the queue with n_computed 0 and comes back with
 * its whole prompt plus what it generated, in one chunk. */
static void recompute_case(sched_preempt mode, int nb_cpu) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(64, 8, 0, 0, mode);
    if (h_init(h, 4, 8, nb_cpu, &c)) return;
    tseq *A, *B, *C, *D;
    sched_batch b;
    pressure_setup(h, &A, &B, &C, &D, &b);
    CHECKF(b.n_preempt_recompute == 1 && b.n_preempt_swap == 0, "mode %d cpu %d", mode, nb_cpu);
    CHECK(C->ss.state == SEQ_WAITING && C->ss.kv == -1 && C->ss.n_computed == 0);
    CHECK(C->ss.n_tokens == 13);
    CHECK(pkv_n_free(h->pool, PKV_CPU) == nb_cpu);

    /* C (4 blocks) heads the queue and 2 are free: D waits behind it */
    CHECK(h_run_step(h, &b) == 2 && b.n_admitted == 0);
    h_finish(h, B, 2);
    CHECK(h_step(h, &b) == 3);
    CHECK(b.items[0].seq == &A->ss && b.items[1].seq == &C->ss && b.items[2].seq == &D->ss);
    CHECK(b.items[1].n_tokens == 13 && b.items[1].samples);
    CHECK(b.n_admitted == 2 && b.n_swap_in == 0);
    h_commit(h, &b);
    CHECK(C->ss.n_tokens == 14 && C->ss.n_computed == 13);

    h_drain(h, 1000);
    CHECK(A->done == 1 && C->done == 1 && D->done == 1);
    sched_stats st;
    sched_get_stats(h->s, &st);
    CHECK(st.preempt_recompute == 1 && st.preempt_swap == 0 && st.swap_in == 0);
    check_all_free(h);
    h_free(h);
}

static void test_recompute_preemption_refills_prompt_and_output(void) {
    recompute_case(SCHED_PREEMPT_RECOMPUTE, 16); /* a CPU tier, but recompute asked for */
    recompute_case(SCHED_PREEMPT_AUTO, 0);       /* no CPU tier */
    recompute_case(SCHED_PREEMPT_AUTO, 2);       /* CPU tier too small for C's 3 blocks */
    recompute_case(SCHED_PREEMPT_SWAP, 2);
    recompute_case(SCHED_PREEMPT_SWAP, 0);
}

/* A sequence that needs a block when it is itself the newest gives up its
 * own place; the older ones keep theirs. */
static void test_newest_preempts_itself(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(64, 8, 0, 0, SCHED_PREEMPT_SWAP);
    if (h_init(h, 4, 4, 8, &c)) return;
    tseq *A = h_add(h, 5, 12); /* 2 blocks, grows into its second */
    tseq *B = h_add(h, 8, 12); /* 2 full blocks, needs a third at once */
    sched_batch b;
    CHECK(h_run_step(h, &b) == 2 && pkv_n_free(h->pool, PKV_DEVICE) == 0);
    CHECK(h_step(h, &b) == 1);
    CHECK(b.items[0].seq == &A->ss && b.n_preempt_swap == 1);
    CHECK(B->ss.state == SEQ_SWAPPED && A->ss.state == SEQ_RUNNING);
    h_commit(h, &b);
    h_drain(h, 1000);
    CHECK(A->done == 1 && B->done == 1);
    check_all_free(h);
    h_free(h);
}

/* Admission keeps watermark x num_blocks free: 20 blocks, 25% -> 5 stay
 * free, so 15 one-block prompts get in. */
static void test_watermark_limits_admission(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(512, 64, 0.25, 0, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 20, 0, &c)) return;
    tseq *t[20];
    for (int i = 0; i < 20; i++) t[i] = h_add(h, 4, 6);
    sched_batch b;
    CHECK(h_step(h, &b) == 15 && b.n_admitted == 15);
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 5);
    CHECK(t[14]->ss.state == SEQ_RUNNING && t[15]->ss.state == SEQ_WAITING);
    h_commit(h, &b);
    h_drain(h, 1000);
    for (int i = 0; i < 20; i++) CHECK(t[i]->done == 1);
    check_all_free(h);
    h_free(h);
}

/* The reserve protects running sequences; with nothing running it must not
 * keep out a request that fits the pool but not pool - reserve, or that
 * request (and everything queued behind it) would wait forever. */
static void test_watermark_does_not_block_an_idle_pool(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(64, 4, 0.1, 0, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 10, 0, &c)) return;
    tseq *big = h_add(h, 37, 40); /* all 10 blocks; the reserve is 1 */
    tseq *small = h_add(h, 2, 4);
    sched_batch b;
    CHECK(h_step(h, &b) == 1 && item_of(&b, big) == 0);
    h_commit(h, &b);
    h_drain(h, 1000);
    CHECK(big->done == 1 && small->done == 1);
    check_all_free(h);
    h_free(h);

    /* the same for a preempted sequence: 10 blocks of 16, reserve 2. A
     * (1 token) and B (112, 7 blocks) get in; at step 18 B needs its 9th
     * block, none is free, and B, the newest, preempts itself needing 9
     * blocks to come back: more than 10 - 2, so only an idle pool takes it */
    const sched_preempt modes[] = {SCHED_PREEMPT_SWAP, SCHED_PREEMPT_RECOMPUTE};
    for (int m = 0; m < 2; m++) {
        c = mkcfg(256, 4, 0.2, 0, modes[m]);
        if (h_init(h, 16, 10, 16, &c)) return;
        tseq *A = h_add(h, 1, 30);
        tseq *B = h_add(h, 112, 140);
        for (int i = 0; i < 17; i++) h_run_step(h, &b);
        CHECK(B->ss.n_preempted == 0 && pkv_n_free(h->pool, PKV_DEVICE) == 0);
        h_run_step(h, &b);
        CHECK(b.n_items == 1 && item_of(&b, A) == 0 && B->ss.n_preempted == 1);
        CHECK(B->ss.state == (m == 0 ? SEQ_SWAPPED : SEQ_WAITING) && B->ss.n_tokens == 129);
        while (!A->done) h_run_step(h, &b);
        CHECK(B->ss.state != SEQ_RUNNING);
        CHECK(h_step(h, &b) == 1 && item_of(&b, B) == 0); /* back in the idle pool */
        CHECK(m == 0 ? b.n_swap_in == 1 : b.items[0].n_tokens == 129);
        h_commit(h, &b);
        h_drain(h, 1000);
        CHECK(A->done == 1 && B->done == 1);
        check_all_free(h);
        h_free(h);
    }
}

/* Static batching: a batch of at most batch_max_seqs forms only when the
 * previous one is completely gone. */
static void test_static_mode_runs_batches_to_completion(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(64, 3, 0, 1, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 64, 0, &c)) return;
    tseq *t[7];
    const int target[7] = {6, 12, 8, 6, 7, 9, 5};
    for (int i = 0; i < 7; i++) t[i] = h_add(h, 4, target[i]);
    sched_batch b;
    CHECK(h_step(h, &b) == 3 && b.n_admitted == 3);
    for (int i = 0; i < 3; i++) CHECK(item_of(&b, t[i]) == i);
    h_commit(h, &b);
    int batches = 1;
    long guard = 0;
    while (sched_has_work(h->s) && guard++ < 1000) {
        sched_stats pre;
        sched_get_stats(h->s, &pre);
        int n = h_run_step(h, &b);
        CHECK(n > 0 && n <= 3);
        if (b.n_admitted > 0) {
            batches++;
            CHECK(pre.n_running == 0 && pre.n_swapped == 0);
        }
        if (t[0]->done && !t[1]->done) CHECK(t[3]->ss.state == SEQ_WAITING);
    }
    CHECK(batches == 3);
    for (int i = 0; i < 7; i++) CHECK(t[i]->done == 1);
    check_all_free(h);
    h_free(h);
}

/* sched_finish from every state returns every block of both tiers. */
static void test_finish_from_any_state_frees_blocks(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(64, 8, 0, 0, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 6, 3, &c)) return;
    tseq *A = h_add(h, 4, 20), *B = h_add(h, 4, 20), *C = h_add(h, 8, 20), *D = h_add(h, 8, 20);
    sched_batch b;
    CHECK(h_run_step(h, &b) == 4 && pkv_n_free(h->pool, PKV_DEVICE) == 0);
    /* A and B each need a block: D (newest) is swapped out (3 CPU blocks
     * take its 2), then C, with no CPU room left, is recomputed */
    CHECK(h_run_step(h, &b) == 2);
    CHECK(b.n_preempt_swap == 1 && b.n_preempt_recompute == 1);
    CHECK(D->ss.state == SEQ_SWAPPED && C->ss.state == SEQ_WAITING && C->ss.n_preempted == 1);
    tseq *E = h_add(h, 3, 20); /* waiting, never admitted */
    CHECK(E->ss.state == SEQ_WAITING && E->ss.kv == -1);

    h_finish(h, E, 2);
    h_finish(h, C, 2);
    CHECK(pkv_n_free(h->pool, PKV_CPU) == 1);
    h_finish(h, D, 2);
    CHECK(pkv_n_free(h->pool, PKV_CPU) == 3);
    h_finish(h, A, 2);
    h_finish(h, B, 2);
    check_all_free(h);
    sched_stats st;
    sched_get_stats(h->s, &st);
    CHECK(st.n_waiting == 0 && st.n_running == 0 && st.n_swapped == 0 && st.finished == 5);
    CHECK(h_step(h, &b) == 0);
    h_free(h);

    /* a running sequence in the middle of its prompt */
    c = mkcfg(4, 2, 0, 0, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 8, 0, &c)) return;
    tseq *P = h_add(h, 10, 12);
    CHECK(h_run_step(h, &b) == 1 && P->ss.n_computed == 4 && P->ss.state == SEQ_RUNNING);
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 7);
    h_finish(h, P, 2);
    check_all_free(h);
    h_free(h);
}

/* Forks share the parent's blocks (no new block at fork time), run right
 * after the parent, and copy the shared partial block on their first
 * write. */
static void test_forks_share_blocks_and_run_beside_the_parent(void) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(64, 8, 0, 0, SCHED_PREEMPT_AUTO);
    if (h_init(h, 4, 16, 0, &c)) return;
    tseq *P = h_add(h, 6, 12);
    tseq *Q = h_add(h, 3, 8);
    P->n_forks = 2;
    sched_batch b;
    CHECK(h_step(h, &b) == 2);
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 13);
    h_commit(h, &b); /* forks two children, then everyone samples a token */
    CHECK(h->n_all == 4);
    tseq *c1 = h->all[2], *c2 = h->all[3];
    CHECK(c1->ss.state == SEQ_RUNNING && c2->ss.state == SEQ_RUNNING);
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 13);
    pkv_stats ps0, ps1;
    pkv_get_stats(h->pool, &ps0);

    CHECK(h_step(h, &b) == 4);
    CHECK(b.items[0].seq == &P->ss && b.items[3].seq == &Q->ss);
    CHECK(item_of(&b, c1) >= 1 && item_of(&b, c1) <= 2 && item_of(&b, c2) >= 1 &&
          item_of(&b, c2) <= 2);
    /* three sequences write position 6 of one shared partial block: two
     * copies, the last keeps the original */
    pkv_get_stats(h->pool, &ps1);
    CHECK(ps1.blocks_copied_cow - ps0.blocks_copied_cow == 2);
    CHECK(pkv_n_free(h->pool, PKV_DEVICE) == 11);
    h_commit(h, &b);
    h_drain(h, 1000);
    CHECK(P->done == 1 && Q->done == 1 && c1->done == 1 && c2->done == 1);
    check_all_free(h);

    /* a fork needs a running parent */
    tseq *W = h_add(h, 3, 5);
    tseq *X = h_track(h);
    CHECK(sched_add_fork(h->s, &W->ss, &X->ss) != 0);
    X->done = 2;
    h_finish(h, W, 2);
    check_all_free(h);
    h_free(h);
}

/* ---- random runs ---- */

typedef struct {
    const char *name;
    int bs, nb, nb_cpu, max_tokens, max_seqs;
    double wm;
    int static_mode;
    sched_preempt mode;
    int n_seqs, pct_fork, pct_cancel;
} rcfg;

typedef struct {
    long steps, preempt_swap, preempt_recompute, swap_in, forks, cancels;
} rtotals;

static void random_run(const rcfg *rc, uint32_t seed, rtotals *tot) {
    harness hh, *h = &hh;
    sched_config c = mkcfg(rc->max_tokens, rc->max_seqs, rc->wm, rc->static_mode, rc->mode);
    if (h_init(h, rc->bs, rc->nb, rc->nb_cpu, &c)) return;
    h->rng = mix(seed * 7919u + 17u) | 1u;
    const int cap = rc->nb * rc->bs < MAX_TOKENS ? rc->nb * rc->bs : MAX_TOKENS;
    const long max_steps = 200000;
    int added = 0, failed0 = tu_failures, stalled = 0;
    sched_batch b;
    while (h->steps < max_steps) {
        /* bursts of arrivals, sometimes none for a while */
        if (added < rc->n_seqs && rnd_below(h, 4) == 0) {
            int k = rnd_range(h, 1, 3);
            for (; k > 0 && added < rc->n_seqs; k--, added++) {
                int prompt, target;
                if (rnd_below(h, 10) == 0) { /* near the pool's capacity */
                    prompt = rnd_range(h, 1, cap - 1);
                    target = cap - rnd_below(h, 2);
                } else {
                    prompt = rnd_range(h, 1, cap / 3);
                    target = prompt + rnd_range(h, 1, cap / 3);
                }
                if (target <= prompt) target = prompt + 1;
                if (target > cap) target = cap;
                if (prompt >= target) prompt = target - 1;
                tseq *t = h_add(h, prompt, target);
                if (rnd_below(h, 100) < rc->pct_fork) t->n_forks = rnd_range(h, 1, 2);
            }
        }
        if (rnd_below(h, 1000) < rc->pct_cancel * 10) {
            int n_live = 0;
            for (int i = 0; i < h->n_all; i++) n_live += live(h->all[i]);
            if (n_live > 0) {
                int pick = rnd_below(h, n_live);
                for (int i = 0; i < h->n_all; i++)
                    if (live(h->all[i]) && pick-- == 0) {
                        h_finish(h, h->all[i], 2);
                        tot->cancels++;
                        break;
                    }
                pool_ok(h);
            }
        }
        if (!sched_has_work(h->s)) {
            if (added == rc->n_seqs) break;
            continue;
        }
        int n = h_run_step(h, &b);
        if (n == 0) {
            HCHECK(0, "%s seed %u: nothing scheduled with work queued", rc->name, seed);
            stalled = 1;
            break;
        }
        if (tu_failures > failed0 + 20) break; /* enough to debug */
    }
    CHECKF(h->steps < max_steps && !stalled, "%s seed %u: no progress (%ld steps)", rc->name, seed,
           h->steps);
    int n_done = 0;
    for (int i = 0; i < h->n_all; i++) {
        tseq *t = h->all[i];
        CHECKF(t->done != 0, "%s seed %u: seq %d never finished (state %d, %d of %d tokens)",
               rc->name, seed, t->id, t->ss.state, t->ss.n_tokens, t->target);
        if (t->done == 1) {
            n_done++;
            CHECKF(t->ss.n_tokens == t->target, "%s seed %u: seq %d ended at %d of %d", rc->name,
                   seed, t->id, t->ss.n_tokens, t->target);
        }
        if (t->id >= added) tot->forks++;
    }
    CHECKF(n_done > 0, "%s seed %u: nothing completed", rc->name, seed);
    check_all_free(h);
    sched_stats st;
    sched_get_stats(h->s, &st);
    tot->steps += h->steps;
    tot->preempt_swap += st.preempt_swap;
    tot->preempt_recompute += st.preempt_recompute;
    tot->swap_in += st.swap_in;
    if (tu_failures != failed0)
        fprintf(stderr, "random run %s seed %u failed (%ld steps)\n", rc->name, seed, h->steps);
    h_free(h);
}

static void test_random_runs_finish_every_sequence(void) {
    // clang-format off
    const rcfg cfgs[] = {
        /* name            bs  nb cpu  tok seqs  wm   static mode                     n  fork cancel */
        {"recompute",       4, 16,  0,  16, 4, 0.10, 0, SCHED_PREEMPT_RECOMPUTE, 60, 10, 2},
        {"auto-swap",       4, 16, 24,  16, 4, 0.05, 0, SCHED_PREEMPT_AUTO, 60, 10, 2},
        {"swap-cpu-small",  2, 12,  6,   8, 3, 0.10, 0, SCHED_PREEMPT_SWAP, 60, 10, 2},
        {"auto-nocpu-wm",   4, 20,  0,  32, 8, 0.20, 0, SCHED_PREEMPT_AUTO, 60, 15, 1},
        {"big-budget",      8, 24, 64,  64, 8, 0.00, 0, SCHED_PREEMPT_AUTO, 80, 20, 1},
        {"tiny-budget",     4, 10, 10,   3, 2, 0.10, 0, SCHED_PREEMPT_SWAP, 40, 10, 2},
        {"block1",          1, 48, 16,  12, 6, 0.05, 0, SCHED_PREEMPT_AUTO, 50, 10, 2},
        {"static-rec",      4, 16,  0,  16, 4, 0.10, 1, SCHED_PREEMPT_RECOMPUTE, 50, 10, 2},
        {"static-swap",     4, 16, 24,  16, 4, 0.05, 1, SCHED_PREEMPT_SWAP, 50, 10, 2},
    };
    // clang-format on
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        rtotals tot = {0};
        for (uint32_t seed = 1; seed <= 24; seed++) random_run(&cfgs[i], seed, &tot);
        printf("  %-15s steps %6ld  preempt swap %5ld recompute %5ld  swap-in %5ld  forks %3ld "
               "cancels %3ld\n",
               cfgs[i].name, tot.steps, tot.preempt_swap, tot.preempt_recompute, tot.swap_in,
               tot.forks, tot.cancels);
        /* the pools are small on purpose: preemption must actually happen */
        CHECKF(tot.preempt_swap + tot.preempt_recompute > 0, "%s: no preemption", cfgs[i].name);
        if (cfgs[i].mode != SCHED_PREEMPT_RECOMPUTE && cfgs[i].nb_cpu > 0)
            CHECKF(tot.preempt_swap > 0 && tot.swap_in > 0, "%s: no swapping", cfgs[i].name);
        else CHECK(tot.preempt_swap == 0);
    }
}

/* The watermark in blocks rounds down: a pool smaller than 1/watermark
 * keeps nothing back. */
static void test_watermark_blocks_round_down(void) {
    CHECK(sched_watermark_blocks(0.01, 100) == 1);
    CHECK(sched_watermark_blocks(0.01, 99) == 0);
    CHECK(sched_watermark_blocks(0.5, 7) == 3);
    CHECK(sched_watermark_blocks(0.0, 4096) == 0);
    CHECK(sched_watermark_blocks(0.02, 48) == 0);
    CHECK(sched_watermark_blocks(0.25, 48) == 12);
}

int main(void) {
    test_watermark_blocks_round_down();
    test_create_rejects_bad_budgets();
    test_fcfs_admission_and_chunked_prefill();
    test_preemption_swaps_the_newest_and_swaps_it_back();
    test_recompute_preemption_refills_prompt_and_output();
    test_newest_preempts_itself();
    test_watermark_limits_admission();
    test_watermark_does_not_block_an_idle_pool();
    test_static_mode_runs_batches_to_completion();
    test_finish_from_any_state_frees_blocks();
    test_forks_share_blocks_and_run_beside_the_parent();
    test_random_runs_finish_every_sequence();
    return tu_finish("test_scheduler");
}
