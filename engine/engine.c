/*
 * engine.c - the step loop (see engine.h).
 *
 * Threads: callers touch only the submission list, the cancel list and the
 * streams, each under a mutex; everything else (model, pool, scheduler,
 * sequences) belongs to the engine thread.
 */
#include "engine/engine.h"
#include "base/clock.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend/backend.h"
#include "core/json_grammar.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "paged_kv/paged_kv.h"
#include "scheduler/scheduler.h"

/* ---------------- streams ---------------- */

struct engine_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    engine_event *q;
    int head, n, cap;
    int n_open; /* completions not finished yet */
    int refs;   /* engine + user */
    int64_t id;
    engine *e;
};

static void stream_unref(engine_stream *s) {
    pthread_mutex_lock(&s->mu);
    int left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left) return;
    for (int i = 0; i < s->n; i++) free(s->q[(s->head + i) % s->cap].text);
    free(s->q);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* Takes ownership of ev->text. */
static void stream_push(engine_stream *s, engine_event *ev) {
    if (ev->t_ms == 0) ev->t_ms = clock_now_ms(); /* events built without a time */
    pthread_mutex_lock(&s->mu);
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        engine_event *q = malloc((size_t)cap * sizeof *q);
        if (!q) { /* drop the text, keep the finish accounting */
            free(ev->text);
            ev->text = NULL;
            ev->text_len = 0;
            if (ev->type == ENGINE_EV_FINISH) s->n_open--;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            return;
        }
        for (int i = 0; i < s->n; i++) q[i] = s->q[(s->head + i) % s->cap];
        free(s->q);
        s->q = q;
        s->head = 0;
        s->cap = cap;
    }
    s->q[(s->head + s->n) % s->cap] = *ev;
    s->n++;
    if (ev->type == ENGINE_EV_FINISH) s->n_open--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int engine_stream_next(engine_stream *s, engine_event *ev, int timeout_ms) {
    pthread_mutex_lock(&s->mu);
    struct timespec dl;
    if (timeout_ms >= 0) dl = clock_realtime_after_ms(timeout_ms);
    while (s->n == 0 && s->n_open > 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) {
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
    }
    if (s->n == 0) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    *ev = s->q[s->head];
    s->head = (s->head + 1) % s->cap;
    s->n--;
    pthread_mutex_unlock(&s->mu);
    return 1;
}

int64_t engine_stream_id(const engine_stream *s) { return s->id; }

const char *gen_finish_name(gen_finish f) {
    switch (f) {
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_EOS: return "eos";
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_CANCELLED: return "cancelled";
    case GEN_FINISH_ERROR: return "error";
    }
    return "unknown";
}

void engine_event_clear(engine_event *ev) {
    free(ev->text);
    ev->text = NULL;
    ev->text_len = 0;
}

/* ---------------- requests and sequences ---------------- */

typedef struct ereq ereq;

typedef struct {
    sched_seq ss;
    ereq *req;
    int index;
    int32_t *tokens; /* prompt + generated */
    int cap;
    int n_gen;
    sampler *smp;
    jg_matcher *gm; /* constrained decoding: where the output is in the grammar; NULL = none */
    tok_stream ts;
    char *text; /* completion text so far */
    size_t text_len, text_cap, emitted;
    int live;
    engine_logprobs lp; /* the pick's logprobs (request.logprobs): seq_pick -> emit_token */
} eseq;

struct ereq {
    int64_t id;
    engine_request p;   /* stop / stop_ids copied below; prompt, json_schema not kept */
    jg_schema *grammar; /* compiled response format, shared by the completions; NULL = text */
    char **stop;
    int32_t *stop_ids;
    int n_prompt;
    int32_t *prompt;
    eseq **seqs; /* n entries; [0] created at intake, others at fork */
    int n_live;
    int forked;
    int cancelled;
    double t_submit, t_first_sched, t_first_token;
    engine_stream *stream;
    ereq *next;
};

struct engine {
    llm_model *m;
    backend *be;
    const llm_tokenizer *tok;
    engine_options opt;
    engine_limits limits;
    int n_vocab;
    pkv_pool *pool;
    sched *sc;
    pthread_t thread;
    int thread_started;

    pthread_mutex_t mu;     /* guards the fields below */
    pthread_cond_t cv_work; /* engine thread waits for work */
    pthread_cond_t cv_idle; /* engine_wait_idle */
    ereq *pending_head, *pending_tail;
    int n_pending;
    int64_t *cancels;
    int n_cancels, cap_cancels;
    int stop;
    int held; /* engine_hold: pending requests wait */
    int busy; /* engine thread has live requests */
    engine_stats stats;
    int64_t next_id;

    /* engine-thread state */
    ereq **live;
    int n_live, cap_live;
    uint64_t arrival;
    int32_t *eog;
    int n_eog;
    jg_vocab *jv; /* token bytes for constrained decoding, built by the first request needing it */
    /* batch buffers */
    int32_t *b_tok, *b_pos, *b_slot, *b_seq_start, *b_ctx, *b_logit_rows;
    const int32_t **b_tables;
    uint8_t *b_single;
    /* the step's picks, made in parallel (run_step): sequence, its logits row,
     * the token */
    eseq **pick_q;
    float **pick_row;
    int32_t *pick_t;
    float *logits, *row;
    char *piece;
    size_t piece_cap;
    long prompt_tokens, generated_tokens, finished;
    double forward_ms, sample_ms; /* engine_stats */
};

const char *const engine_batching_names[ENGINE_BATCH_COUNT] = {"continuous", "static"};
const char *const engine_preempt_names[ENGINE_PREEMPT_COUNT] = {"auto", "swap", "recompute"};

void engine_options_default(engine_options *o) {
    memset(o, 0, sizeof *o);
    o->batch_max_tokens = 512;
    o->batch_max_seqs = 64;
    o->batching = ENGINE_BATCH_CONTINUOUS;
    o->max_waiting = 1024;
    o->num_blocks = 0;
    o->kv_memory_mb = 256;
    o->num_blocks_cpu = 0;
    o->block_size = 16;
    o->watermark = 0.01;
    o->swap_path = NULL;
    o->preempt_mode = ENGINE_PREEMPT_AUTO;
    o->kv_type = KV_F16;
    o->max_context = 0;
    o->enable_prefix_caching = 1;
}

void engine_limits_for(const llm_model *m, const engine_options *o, engine_limits *out) {
    const llm_hparams *hp = llm_model_hparams(m);
    memset(out, 0, sizeof *out);
    out->context_length =
        o->max_context > 0 && o->max_context < hp->n_ctx_train ? o->max_context : hp->n_ctx_train;
    out->block_size = o->block_size;
    out->block_bytes =
        kv_block_bytes(hp->n_layer, hp->n_head_kv * hp->head_dim, o->block_size, o->kv_type);
    out->num_blocks = o->num_blocks;
    if (out->num_blocks <= 0 && out->block_bytes > 0) {
        uint64_t n = kv_blocks_in_budget(o->kv_memory_mb, out->block_bytes);
        out->num_blocks = n > INT32_MAX ? INT32_MAX : (int)n;
    }
    out->watermark_blocks = sched_watermark_blocks(o->watermark, out->num_blocks);
    out->kv_capacity = ((long)out->num_blocks - out->watermark_blocks) * o->block_size;
}

void engine_get_limits(const engine *e, engine_limits *out) { *out = e->limits; }

long engine_blocks_needed(const engine_limits *l, long n_prompt, long max_tokens, int n) {
    long bs = l->block_size;
    long shared = n > 1 ? n_prompt / bs : 0; /* full prompt blocks the forks share */
    long own = n_prompt - shared * bs + max_tokens;
    return shared + (long)n * ((own + bs - 1) / bs);
}

engine_fit engine_check_fit(const engine_limits *l, long n_prompt, long max_tokens, int n,
                            char *err, size_t errlen) {
    long total = n_prompt + max_tokens;
    if (total > l->context_length) {
        snprintf(err, errlen,
                 "prompt (%ld tokens) + max_tokens (%ld) = %ld exceeds the context length of %d "
                 "tokens",
                 n_prompt, max_tokens, total, l->context_length);
        return ENGINE_OVER_CONTEXT;
    }
    if (n <= 1 && total > l->kv_capacity) {
        snprintf(err, errlen,
                 "prompt (%ld tokens) + max_tokens (%ld) = %ld exceeds the KV cache capacity of "
                 "%ld tokens (cache_config.num_blocks x block_size less the watermark)",
                 n_prompt, max_tokens, total, l->kv_capacity);
        return ENGINE_OVER_KV_CAPACITY;
    }
    long need = engine_blocks_needed(l, n_prompt, max_tokens, n);
    long have = l->num_blocks - l->watermark_blocks;
    if (n > 1 && need > have) {
        snprintf(err, errlen,
                 "n (%d) completions of prompt (%ld tokens) + max_tokens (%ld) need up to %ld KV "
                 "blocks of %d tokens at once, more than the cache's %ld "
                 "(cache_config.num_blocks less the watermark); lower n or max_tokens",
                 n, n_prompt, max_tokens, need, l->block_size, have);
        return ENGINE_OVER_KV_CAPACITY;
    }
    return ENGINE_FITS;
}

static void seq_free(eseq *q) {
    if (!q) return;
    sampler_free(q->smp);
    jg_matcher_free(q->gm);
    free(q->tokens);
    free(q->text);
    free(q);
}

static void req_free(ereq *r) {
    if (!r) return;
    for (int i = 0; i < r->p.n; i++) seq_free(r->seqs ? r->seqs[i] : NULL);
    jg_schema_free(r->grammar);
    for (int i = 0; i < r->p.n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->prompt);
    free(r->seqs);
    free(r);
}

static eseq *seq_new(engine *e, ereq *r, int index, const int32_t *tokens, int n_tokens) {
    eseq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->req = r;
    q->index = index;
    q->cap = r->n_prompt + r->p.max_tokens + 1;
    q->tokens = malloc((size_t)q->cap * sizeof *q->tokens);
    sampler_params sp = r->p.sampling;
    sp.seed += (uint64_t)index; /* distinct streams for n > 1, same seed => same output */
    char err[128];
    if (sampler_create(&sp, e->n_vocab, &q->smp, err, sizeof err) != 0) q->smp = NULL;
    if (r->grammar && !e->jv) e->jv = jg_vocab_new(e->tok, err, sizeof err);
    if (r->grammar && e->jv) q->gm = jg_matcher_new(r->grammar);
    if (!q->tokens || !q->smp || (r->grammar && !q->gm)) {
        seq_free(q);
        return NULL;
    }
    memcpy(q->tokens, tokens, (size_t)n_tokens * sizeof *tokens);
    q->ss.n_tokens = n_tokens;
    q->ss.tokens = q->tokens;
    /* rows run_step computes in the multi-token shape (b_single) */
    q->ss.n_multi = r->n_prompt == 1 ? 0 : r->n_prompt;
    q->ss.user = q;
    q->live = 1;
    tok_stream_init(&q->ts, 0);
    return q;
}

/* ---------------- text, stops, events ---------------- */

static int text_append(eseq *q, const char *p, size_t n) {
    if (q->text_len + n + 1 > q->text_cap) {
        size_t cap = q->text_cap ? q->text_cap * 2 : 256;
        while (cap < q->text_len + n + 1) cap *= 2;
        char *t = realloc(q->text, cap);
        if (!t) return -1;
        q->text = t;
        q->text_cap = cap;
    }
    memcpy(q->text + q->text_len, p, n);
    q->text_len += n;
    q->text[q->text_len] = 0;
    return 0;
}

/* Earliest occurrence of a stop string starting at or after `from`. */
static long find_stop(const ereq *r, const char *text, size_t len, size_t from) {
    long best = -1;
    for (int i = 0; i < r->p.n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        size_t start = from >= sl ? from - sl + 1 : 0; /* a stop may straddle old text */
        if (sl == 0 || len < sl || start >= len) continue;
        const char *hit = memmem(text + start, len - start, r->stop[i], sl);
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}

/* Longest suffix of text[from..len) that is a proper prefix of a stop string. */
static size_t stop_holdback(const ereq *r, const char *text, size_t len, size_t from) {
    size_t hold = 0;
    for (int i = 0; i < r->p.n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        for (size_t k = sl ? sl - 1 : 0; k > hold; k--)
            if (k <= len - from && memcmp(text + len - k, r->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

static char *dup_range(const char *p, size_t n) {
    char *t = malloc(n + 1);
    if (!t) return NULL;
    if (n) memcpy(t, p, n);
    t[n] = 0;
    return t;
}

static void emit_token(eseq *q, int32_t tok, size_t upto) {
    ereq *r = q->req;
    engine_event ev = {0};
    ev.type = ENGINE_EV_TOKEN;
    ev.index = q->index;
    ev.token = tok;
    ev.t_ms = clock_now_ms(); /* the token was sampled in this step */
    ev.has_logprobs = r->p.logprobs != 0;
    if (ev.has_logprobs) ev.lp = q->lp;
    size_t n = upto > q->emitted ? upto - q->emitted : 0;
    ev.text = dup_range(q->text ? q->text + q->emitted : "", n);
    ev.text_len = ev.text ? n : 0;
    q->emitted += n;
    stream_push(r->stream, &ev);
}

static void seq_finish(engine *e, eseq *q, gen_finish why) {
    ereq *r = q->req;
    if (!q->live) return;
    if (why != GEN_FINISH_STOP && why != GEN_FINISH_ERROR) {
        char tail[16];
        int n = tok_stream_flush(&q->ts, tail, sizeof tail);
        if (n > 0) text_append(q, tail, (size_t)n);
        long at = find_stop(r, q->text ? q->text : "", q->text_len, q->emitted);
        if (at >= 0) {
            q->text_len = (size_t)at;
            q->text[at] = 0;
            why = GEN_FINISH_STOP;
        }
    }
    double t = clock_now_ms();
    engine_event ev = {0};
    ev.type = ENGINE_EV_FINISH;
    ev.index = q->index;
    ev.token = -1;
    ev.t_ms = t;
    size_t n = q->text_len > q->emitted ? q->text_len - q->emitted : 0;
    ev.text = dup_range(q->text ? q->text + q->emitted : "", n);
    ev.text_len = ev.text ? n : 0;
    q->emitted = q->text_len;
    ev.finish = why;
    ev.prompt_tokens = r->n_prompt;
    ev.completion_tokens = q->n_gen;
    ev.queue_ms = r->t_first_sched > 0 ? r->t_first_sched - r->t_submit : t - r->t_submit;
    ev.ttft_ms = r->t_first_token > 0 ? r->t_first_token - r->t_submit : t - r->t_submit;
    ev.total_ms = t - r->t_submit;
    ev.n_preempted = q->ss.n_preempted;
    if (q->ss.state != SEQ_FINISHED) sched_finish(e->sc, &q->ss);
    q->live = 0;
    r->n_live--;
    e->finished++;
    stream_push(r->stream, &ev);
}

static int is_eog(const engine *e, int32_t t) {
    for (int i = 0; i < e->n_eog; i++)
        if (e->eog[i] == t) return 1;
    return 0;
}

typedef struct {
    const jg_vocab *v;
    jg_matcher *m;
} grammar_ctx;

static int grammar_allowed(void *ctx, int32_t id) {
    grammar_ctx *g = ctx;
    return jg_token_allowed(g->v, g->m, id);
}

static void grammar_mask(void *ctx, float *logits) {
    grammar_ctx *g = ctx;
    jg_mask_logits(g->v, g->m, logits);
}

/* The sampler's pick; under a response format, among the tokens the grammar
 * allows (sequences without one pay nothing). */
static int32_t sample_next(const engine *e, eseq *q, const float *row) {
    const int32_t *hist = q->tokens + q->req->n_prompt;
    if (!q->gm) return sampler_sample(q->smp, row, hist, (size_t)q->n_gen);
    grammar_ctx gc = {e->jv, q->gm};
    sampler_filter f = {grammar_allowed, grammar_mask, &gc};
    return sampler_sample_filtered(q->smp, row, hist, (size_t)q->n_gen, &f);
}

/* q's next token from row (modified in place), or -1 when the grammar
 * allows none. Touches only q's sampler and matcher, and reads the engine's
 * immutable state, so the picks of a step run in parallel (run_step). */
static int32_t seq_pick(const engine *e, eseq *q, float *row) {
    const ereq *r = q->req;
    if (r->p.ignore_eos || q->n_gen < r->p.min_tokens)
        for (int i = 0; i < e->n_eog; i++) row[e->eog[i]] = -INFINITY;
    int32_t t = sample_next(e, q, row);
    if (r->p.logprobs && t >= 0) {
        /* from row, which the grammar's mask never touches (it masks the
         * sampler's copy): the unconstrained model's distribution */
        const int32_t *hist = q->tokens + r->n_prompt;
        int n = sampler_logprobs(q->smp, row, hist, (size_t)q->n_gen, t, &q->lp.logprob,
                                 q->lp.top_ids, q->lp.top_logprobs, r->p.top_logprobs);
        q->lp.n_top = n > 0 ? n : 0;
    }
    return t;
}

/* Take t, q's pick (seq_pick), then update text, stops and events. */
static void seq_take(engine *e, eseq *q, int32_t t) {
    ereq *r = q->req;
    if (t < 0) {
        /* a complete value whose end-of-generation token was suppressed */
        seq_finish(e, q, q->gm && jg_matcher_accepting(q->gm) ? GEN_FINISH_EOS : GEN_FINISH_ERROR);
        return;
    }
    if (r->t_first_token == 0) r->t_first_token = clock_now_ms();
    e->generated_tokens++;
    if (is_eog(e, t)) {
        seq_finish(e, q, GEN_FINISH_EOS);
        return;
    }
    if (q->gm && jg_matcher_feed_token(e->jv, q->gm, t) != 0) {
        seq_finish(e, q, GEN_FINISH_ERROR); /* the mask allowed it: cannot happen */
        return;
    }
    q->tokens[q->ss.n_tokens++] = t;
    q->n_gen++;
    int n = tok_stream_push(&q->ts, e->tok, t, e->piece, e->piece_cap);
    if (n < 0 && n != TOK_EINVAL) {
        size_t need = (size_t)-n;
        char *p = realloc(e->piece, need);
        if (p) {
            e->piece = p;
            e->piece_cap = need;
            n = tok_stream_push(&q->ts, e->tok, t, e->piece, e->piece_cap);
        }
    }
    if (n > 0) {
        size_t from = q->emitted;
        text_append(q, e->piece, (size_t)n);
        long at = find_stop(r, q->text, q->text_len, from);
        if (at >= 0) {
            q->text_len = (size_t)at;
            q->text[at] = 0;
            emit_token(q, t, q->text_len);
            seq_finish(e, q, GEN_FINISH_STOP);
            return;
        }
    }
    size_t hold =
        r->p.n_stop ? stop_holdback(r, q->text ? q->text : "", q->text_len, q->emitted) : 0;
    emit_token(q, t, q->text_len - hold);
    for (int i = 0; i < r->p.n_stop_ids; i++)
        if (r->stop_ids[i] == t) {
            seq_finish(e, q, GEN_FINISH_STOP);
            return;
        }
    if (q->gm && jg_matcher_done(q->gm)) seq_finish(e, q, GEN_FINISH_EOS); /* value complete */
    else if (q->n_gen >= r->p.max_tokens) seq_finish(e, q, GEN_FINISH_LENGTH);
}

static void seq_sample(engine *e, eseq *q, float *row) { seq_take(e, q, seq_pick(e, q, row)); }

static void pick_one(void *ctx, int i) {
    engine *e = ctx;
    e->pick_t[i] = seq_pick(e, e->pick_q[i], e->pick_row[i]);
}

/* ---------------- the step loop ---------------- */

/* Completions 1..n-1 that were never created (the request ended before its
 * first token) finish with the same reason. */
static void finish_unforked(ereq *r, gen_finish why) {
    if (r->forked) return;
    r->forked = 1;
    for (int i = 1; i < r->p.n; i++) {
        engine_event ev = {
            .type = ENGINE_EV_FINISH, .finish = why, .index = i, .prompt_tokens = r->n_prompt};
        stream_push(r->stream, &ev);
    }
}

static int live_add(engine *e, ereq *r) {
    if (e->n_live == e->cap_live) {
        int cap = e->cap_live ? e->cap_live * 2 : 64;
        ereq **p = realloc(e->live, (size_t)cap * sizeof *p);
        if (!p) return -1;
        e->live = p;
        e->cap_live = cap;
    }
    e->live[e->n_live++] = r;
    return 0;
}

/* Intake: new requests become waiting sequences; cancels are applied. */
static void intake(engine *e) {
    pthread_mutex_lock(&e->mu);
    ereq *list = NULL;
    if (!e->held || e->stop) {
        list = e->pending_head;
        e->pending_head = e->pending_tail = NULL;
        e->n_pending = 0;
    }
    int nc = e->n_cancels;
    int64_t cancels[64];
    if (nc > 64) nc = 64;
    if (nc > 0) {
        memcpy(cancels, e->cancels, (size_t)nc * sizeof *cancels);
        memmove(e->cancels, e->cancels + nc, (size_t)(e->n_cancels - nc) * sizeof *e->cancels);
        e->n_cancels -= nc;
    }
    pthread_mutex_unlock(&e->mu);

    while (list) {
        ereq *r = list;
        list = r->next;
        r->next = NULL;
        eseq *q = r->p.max_tokens > 0 ? seq_new(e, r, 0, r->prompt, r->n_prompt) : NULL;
        if (r->p.max_tokens > 0 && (!q || live_add(e, r) != 0)) {
            seq_free(q);
            engine_event ev = {
                .type = ENGINE_EV_FINISH, .finish = GEN_FINISH_ERROR, .prompt_tokens = r->n_prompt};
            for (int i = 0; i < r->p.n; i++) {
                ev.index = i;
                stream_push(r->stream, &ev);
            }
            stream_unref(r->stream);
            req_free(r);
            continue;
        }
        if (r->p.max_tokens == 0) { /* nothing to generate */
            engine_event ev = {.type = ENGINE_EV_FINISH,
                               .finish = GEN_FINISH_LENGTH,
                               .prompt_tokens = r->n_prompt};
            for (int i = 0; i < r->p.n; i++) {
                ev.index = i;
                stream_push(r->stream, &ev);
            }
            stream_unref(r->stream);
            req_free(r);
            continue;
        }
        r->seqs[0] = q;
        r->n_live = 1;
        q->ss.arrival = ++e->arrival;
        sched_add(e->sc, &q->ss);
        e->prompt_tokens += r->n_prompt;
    }
    for (int i = 0; i < nc; i++)
        for (int k = 0; k < e->n_live; k++)
            if (e->live[k]->id == cancels[i]) e->live[k]->cancelled = 1;
    for (int k = 0; k < e->n_live; k++) {
        ereq *r = e->live[k];
        if (!r->cancelled) continue;
        for (int i = 0; i < r->p.n; i++)
            if (r->seqs[i] && r->seqs[i]->live) seq_finish(e, r->seqs[i], GEN_FINISH_CANCELLED);
        finish_unforked(r, GEN_FINISH_CANCELLED);
    }
}

/* Drop finished requests from the live list. */
static void reap(engine *e) {
    int w = 0;
    for (int k = 0; k < e->n_live; k++) {
        ereq *r = e->live[k];
        if (r->n_live == 0 && (r->forked || r->p.n == 1)) {
            stream_unref(r->stream);
            req_free(r);
        } else {
            e->live[w++] = r;
        }
    }
    e->n_live = w;
}

/* Create completions 1..n-1 of r, sharing completion 0's blocks; they
 * sample their first token from the same logits as completion 0. */
static void fork_completions(engine *e, ereq *r) {
    eseq *parent = r->seqs[0];
    r->forked = 1;
    for (int i = 1; i < r->p.n; i++) {
        eseq *c = seq_new(e, r, i, parent->tokens, parent->ss.n_tokens);
        if (c) {
            c->ss.arrival = parent->ss.arrival;
            c->ss.n_computed = parent->ss.n_computed;
            if (sched_add_fork(e->sc, &parent->ss, &c->ss) == 0) {
                r->seqs[i] = c;
                r->n_live++;
                continue;
            }
            seq_free(c);
        }
        engine_event ev = {.type = ENGINE_EV_FINISH,
                           .finish = GEN_FINISH_ERROR,
                           .index = i,
                           .prompt_tokens = r->n_prompt};
        stream_push(r->stream, &ev);
    }
}

static void publish_stats(engine *e) {
    sched_stats ss;
    sched_get_stats(e->sc, &ss);
    pkv_stats ps;
    pkv_get_stats(e->pool, &ps);
    pthread_mutex_lock(&e->mu);
    engine_stats *st = &e->stats;
    st->n_waiting = ss.n_waiting + e->n_pending;
    st->n_running = ss.n_running;
    st->n_swapped = ss.n_swapped;
    for (int t = 0; t < 2; t++) {
        st->blocks_total[t] = ps.total[t];
        st->blocks_free[t] = ps.free[t];
    }
    st->steps = ss.steps;
    st->preempt_swap = ss.preempt_swap;
    st->preempt_recompute = ss.preempt_recompute;
    st->swap_in = ss.swap_in;
    st->prompt_tokens = e->prompt_tokens;
    st->generated_tokens = e->generated_tokens;
    st->requests_finished = e->finished;
    st->forward_ms = e->forward_ms;
    st->sample_ms = e->sample_ms;
    st->last_step_tokens = ss.last_step_tokens;
    st->kv_tokens = ps.tokens[PKV_DEVICE];
    st->blocks_cached = ps.cached;
    st->prefix_queried_tokens = ps.prefix_queried_tokens;
    st->prefix_hit_tokens = ps.prefix_hit_tokens;
    st->prefix_evictions = ps.prefix_evictions;
    int used = ps.total[PKV_DEVICE] - ps.free[PKV_DEVICE];
    if (used > st->peak_blocks_used) {
        st->peak_blocks_used = used;
        double slots = (double)used * st->block_size;
        st->kv_efficiency_peak = slots > 0 ? (double)ps.tokens[PKV_DEVICE] / slots : 0;
        if (st->kv_efficiency_peak > 1) st->kv_efficiency_peak = 1;
    }
    /* submissions and cancels not yet taken in keep the engine busy, so
     * engine_wait_idle never returns on a stale snapshot */
    e->busy = e->n_live > 0 || sched_has_work(e->sc) || e->n_pending > 0 || e->n_cancels > 0;
    if (!e->busy) pthread_cond_broadcast(&e->cv_idle);
    pthread_mutex_unlock(&e->mu);
}

/* Run one scheduled step. Returns the number of sequences it ran. */
static int run_step(engine *e) {
    sched_batch b;
    sched_step(e->sc, &b);
    if (b.n_items == 0) return 0;
    int rows = 0, nl = 0;
    e->b_seq_start[0] = 0;
    double t = clock_now_ms();
    for (int i = 0; i < b.n_items; i++) {
        eseq *q = b.items[i].seq->user;
        const int n0 = q->ss.n_computed, n = b.items[i].n_tokens;
        if (q->req->t_first_sched == 0) q->req->t_first_sched = t;
        for (int k = 0; k < n; k++) {
            int pos = n0 + k;
            e->b_tok[rows + k] = q->tokens[pos];
            e->b_pos[rows + k] = pos;
            e->b_slot[rows + k] = pkv_seq_slot(e->pool, q->ss.kv, pos);
            e->b_single[rows + k] = pos >= q->req->n_prompt || q->req->n_prompt == 1;
        }
        rows += n;
        e->b_seq_start[i + 1] = rows;
        e->b_ctx[i] = n0 + n;
        int nblk;
        e->b_tables[i] = pkv_seq_block_table(e->pool, q->ss.kv, &nblk);
        if (b.items[i].samples) e->b_logit_rows[nl++] = rows - 1;
    }
    llm_batch lb = {
        .n_tokens = rows,
        .token_ids = e->b_tok,
        .positions = e->b_pos,
        .slot_mapping = e->b_slot,
        .n_seqs = b.n_items,
        .seq_start = e->b_seq_start,
        .context_len = e->b_ctx,
        .block_tables = e->b_tables,
        .n_logits = nl,
        .logit_rows = e->b_logit_rows,
        .row_single = e->b_single,
    };
    char err[256];
    double t0 = clock_now_ms();
    int rc = llm_forward(e->m, e->be, pkv_device_cache(e->pool), &lb, e->logits, err, sizeof err);
    double t1 = clock_now_ms();
    e->forward_ms += t1 - t0;
    if (rc != 0) /* the step's KV is garbage: nothing may continue from it or cache it */
        for (int i = 0; i < b.n_items; i++) {
            eseq *q = b.items[i].seq->user;
            seq_finish(e, q, GEN_FINISH_ERROR);
            finish_unforked(q->req, GEN_FINISH_ERROR);
        }
    sched_commit(e->sc, &b);
    int li = 0, n_picks = 0;
    for (int i = 0; i < b.n_items; i++) {
        if (!b.items[i].samples) continue;
        eseq *q = b.items[i].seq->user;
        float *row = e->logits + (size_t)li++ * e->n_vocab;
        if (rc != 0) {
            seq_finish(e, q, GEN_FINISH_ERROR);
            finish_unforked(q->req, GEN_FINISH_ERROR);
            continue;
        }
        ereq *r = q->req;
        if (r->p.n > 1 && !r->forked && q->index == 0) {
            fork_completions(e, r);
            for (int c = 1; c < r->p.n; c++) {
                if (!r->seqs[c]) continue;
                memcpy(e->row, row, (size_t)e->n_vocab * sizeof *row);
                seq_sample(e, r->seqs[c], e->row);
            }
        }
        e->pick_q[n_picks] = q;
        e->pick_row[n_picks++] = row;
    }
    /* sampling (and a grammar's mask) on the backend's threads, which are
     * idle between forward passes; taking the tokens (text, events) stays
     * on this thread, in batch order */
    be_host_for(e->be, n_picks, pick_one, e);
    for (int j = 0; j < n_picks; j++) seq_take(e, e->pick_q[j], e->pick_t[j]);
    e->sample_ms += clock_now_ms() - t1;
    return b.n_items;
}

static void *engine_main(void *arg) {
    engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && (e->n_pending == 0 || e->held) && e->n_cancels == 0 && e->n_live == 0 &&
               !sched_has_work(e->sc)) {
            e->busy = 0;
            pthread_cond_broadcast(&e->cv_idle);
            pthread_cond_wait(&e->cv_work, &e->mu);
        }
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        intake(e);
        if (run_step(e) == 0 && sched_has_work(e->sc)) {
            /* nothing could be scheduled (should not happen once requests are
             * validated against the pool): back off instead of spinning */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        reap(e);
        publish_stats(e);
    }
    /* shutdown: everything still live is cancelled */
    intake(e);
    for (int k = 0; k < e->n_live; k++) e->live[k]->cancelled = 1;
    for (int k = 0; k < e->n_live; k++) {
        ereq *r = e->live[k];
        for (int i = 0; i < r->p.n; i++)
            if (r->seqs[i] && r->seqs[i]->live) seq_finish(e, r->seqs[i], GEN_FINISH_CANCELLED);
        finish_unforked(r, GEN_FINISH_CANCELLED);
    }
    reap(e);
    publish_stats(e);
    return NULL;
}

/* One token through the model before the engine serves anything: the CPU
 * backend packs each weight on its first matmul (a noticeable pause:
 * docs/benchmarks.md), which would otherwise be paid by the first request's
 * time to first token. The token's block is freed again; no stats change. */
static int warm_up(engine *e, char *err, size_t errlen) {
    const int seq = pkv_seq_new(e->pool);
    if (seq < 0) return 0; /* nothing to warm with: the first request packs */
    int rc = 0;
    if (pkv_seq_append(e->pool, seq, 1) == 0) {
        int n_blocks;
        const int32_t tok = 0, pos = 0, slot = pkv_seq_slot(e->pool, seq, 0), ctx = 1, row = 0;
        const int32_t start[2] = {0, 1}, *table = pkv_seq_block_table(e->pool, seq, &n_blocks);
        const llm_batch b = {1, &tok, &pos, &slot, 1, start, &ctx, &table, 1, &row, NULL};
        rc = llm_forward(e->m, e->be, pkv_device_cache(e->pool), &b, e->logits, err, errlen);
    }
    pkv_seq_free(e->pool, seq);
    return rc;
}

/* ---------------- public API ---------------- */

/* What besides the tokens decides a block's KV, for the prefix cache's
 * hashes: the model (its name, shape and weights' size) and a tag for the
 * rules that compute a row (bump it when they change). The pool mixes in
 * the KV dtype and block size. */
static uint64_t prefix_salt(const llm_model *m) {
    const llm_hparams *hp = llm_model_hparams(m);
    const char *tag = "engine-rows-v1";
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    const unsigned char *parts[] = {(const unsigned char *)hp->arch,
                                    (const unsigned char *)hp->name, (const unsigned char *)tag};
    for (int k = 0; k < 3; k++)
        for (const unsigned char *c = parts[k]; *c; c++) h = (h ^ *c) * 1099511628211ULL;
    const int64_t nums[] = {hp->n_vocab, hp->n_embd,      hp->n_layer,
                            hp->n_head,  hp->n_head_kv,   hp->head_dim,
                            hp->n_ff,    hp->n_ctx_train, (int64_t)llm_model_weight_bytes(m)};
    for (size_t k = 0; k < sizeof nums / sizeof *nums; k++)
        for (int i = 0; i < 8; i++)
            h = (h ^ (uint8_t)((uint64_t)nums[k] >> (8 * i))) * 1099511628211ULL;
    return h;
}

static sched_preempt sched_preempt_of(engine_preempt_mode m) {
    switch (m) {
    case ENGINE_PREEMPT_SWAP: return SCHED_PREEMPT_SWAP;
    case ENGINE_PREEMPT_RECOMPUTE: return SCHED_PREEMPT_RECOMPUTE;
    default: return SCHED_PREEMPT_AUTO;
    }
}

int engine_create(llm_model *m, backend *be, const llm_tokenizer *tok, const engine_options *opt,
                  engine **out, char *err, size_t errlen) {
    *out = NULL;
    const llm_hparams *hp = llm_model_hparams(m);
    engine *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    e->m = m;
    e->be = be;
    e->tok = tok;
    e->opt = *opt;
    e->n_vocab = hp->n_vocab;
    engine_limits_for(m, opt, &e->limits);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv_work, NULL);
    pthread_cond_init(&e->cv_idle, NULL);
    const int num_blocks = e->limits.num_blocks;
    pkv_config pc = {hp->n_layer,    hp->n_head_kv * hp->head_dim, opt->block_size,
                     num_blocks,     opt->num_blocks_cpu,          opt->kv_type,
                     opt->swap_path, opt->enable_prefix_caching,   prefix_salt(m)};
    if (pkv_create(&pc, &e->pool, err, errlen) != 0) goto fail;
    sched_config scfg = {opt->batch_max_tokens, opt->batch_max_seqs, opt->watermark,
                         opt->batching == ENGINE_BATCH_STATIC, sched_preempt_of(opt->preempt_mode)};
    if (sched_create(&scfg, e->pool, &e->sc, err, errlen) != 0) goto fail;

    /* end-of-generation ids */
    e->eog = malloc((size_t)hp->n_vocab * sizeof *e->eog);
    if (!e->eog) goto oom;
    for (int32_t i = 0; i < hp->n_vocab; i++)
        if (tok_is_eog(tok, i)) e->eog[e->n_eog++] = i;

    const int T = opt->batch_max_tokens, S = opt->batch_max_seqs;
    e->b_tok = malloc((size_t)T * sizeof *e->b_tok);
    e->b_pos = malloc((size_t)T * sizeof *e->b_pos);
    e->b_slot = malloc((size_t)T * sizeof *e->b_slot);
    e->b_single = malloc((size_t)T);
    e->b_seq_start = malloc((size_t)(S + 1) * sizeof *e->b_seq_start);
    e->b_ctx = malloc((size_t)S * sizeof *e->b_ctx);
    e->b_logit_rows = malloc((size_t)S * sizeof *e->b_logit_rows);
    e->b_tables = malloc((size_t)S * sizeof *e->b_tables);
    e->logits = malloc((size_t)S * (size_t)hp->n_vocab * sizeof *e->logits);
    e->row = malloc((size_t)hp->n_vocab * sizeof *e->row);
    e->pick_q = malloc((size_t)S * sizeof *e->pick_q);
    e->pick_row = malloc((size_t)S * sizeof *e->pick_row);
    e->pick_t = malloc((size_t)S * sizeof *e->pick_t);
    e->piece_cap = 256;
    e->piece = malloc(e->piece_cap);
    if (!e->b_tok || !e->b_pos || !e->b_slot || !e->b_single || !e->b_seq_start || !e->b_ctx ||
        !e->b_logit_rows || !e->b_tables || !e->logits || !e->row || !e->pick_q || !e->pick_row ||
        !e->pick_t || !e->piece)
        goto oom;
    e->stats.block_size = opt->block_size;
    e->stats.num_blocks = num_blocks;
    e->stats.num_blocks_cpu = opt->num_blocks_cpu;
    if (warm_up(e, err, errlen) != 0) goto fail;
    publish_stats(e);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        snprintf(err, errlen, "cannot start the engine thread");
        goto fail;
    }
    e->thread_started = 1;
    *out = e;
    return 0;
oom:
    snprintf(err, errlen, "out of memory creating the engine");
fail:
    engine_destroy(e);
    return -1;
}

void engine_destroy(engine *e) {
    if (!e) return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_broadcast(&e->cv_work);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    /* requests submitted after the thread stopped */
    for (ereq *r = e->pending_head, *n; r; r = n) {
        n = r->next;
        engine_event ev = {.type = ENGINE_EV_FINISH, .finish = GEN_FINISH_CANCELLED};
        for (int i = 0; i < r->p.n; i++) {
            ev.index = i;
            stream_push(r->stream, &ev);
        }
        stream_unref(r->stream);
        req_free(r);
    }
    sched_free(e->sc);
    pkv_free(e->pool);
    free(e->live);
    free(e->cancels);
    free(e->eog);
    jg_vocab_free(e->jv);
    free(e->b_tok);
    free(e->b_pos);
    free(e->b_slot);
    free(e->b_single);
    free(e->b_seq_start);
    free(e->b_ctx);
    free(e->b_logit_rows);
    free(e->b_tables);
    free(e->logits);
    free(e->row);
    free(e->pick_q);
    free(e->pick_row);
    free(e->pick_t);
    free(e->piece);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv_work);
    pthread_cond_destroy(&e->cv_idle);
    free(e);
}

static int validate(const engine *e, const engine_request *r, char *err, size_t errlen) {
    if (!r->prompt || r->n_prompt < 1) {
        snprintf(err, errlen, "prompt is empty");
        return -1;
    }
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->n_vocab) {
            snprintf(err, errlen, "prompt token %d (id %d) is outside the vocabulary of %d", i,
                     r->prompt[i], e->n_vocab);
            return -1;
        }
    if (r->max_tokens < 0) {
        snprintf(err, errlen, "max_tokens must be >= 0, got %d", r->max_tokens);
        return -1;
    }
    if (r->min_tokens < 0 || r->min_tokens > r->max_tokens) {
        snprintf(err, errlen, "min_tokens must be in [0, max_tokens], got %d", r->min_tokens);
        return -1;
    }
    if (r->n < 1 || r->n > e->opt.batch_max_seqs) {
        snprintf(err, errlen, "n must be in [1, %d], got %d", e->opt.batch_max_seqs, r->n);
        return -1;
    }
    if (engine_check_fit(&e->limits, r->n_prompt, r->max_tokens, r->n, err, errlen) != ENGINE_FITS)
        return -1;
    if (r->n_stop < 0 || r->n_stop_ids < 0) {
        snprintf(err, errlen, "negative stop count");
        return -1;
    }
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] < 0 || r->stop_ids[i] >= e->n_vocab) {
            snprintf(err, errlen, "stop token id %d is outside the vocabulary", r->stop_ids[i]);
            return -1;
        }
    for (int i = 0; i < r->n_stop; i++)
        if (!r->stop[i] || !r->stop[i][0]) {
            snprintf(err, errlen, "stop string %d is empty", i);
            return -1;
        }
    if (r->format < ENGINE_FORMAT_TEXT || r->format > ENGINE_FORMAT_JSON_SCHEMA) {
        snprintf(err, errlen, "unknown response format %d", (int)r->format);
        return -1;
    }
    if (r->top_logprobs < 0 || r->top_logprobs > ENGINE_MAX_TOP_LOGPROBS) {
        snprintf(err, errlen, "top_logprobs must be in [0, %d] (got %d)", ENGINE_MAX_TOP_LOGPROBS,
                 r->top_logprobs);
        return -1;
    }
    if (r->format == ENGINE_FORMAT_JSON_SCHEMA && !r->json_schema) {
        snprintf(err, errlen, "response_format json_schema needs a schema");
        return -1;
    }
    return sampler_params_validate(&r->sampling, err, errlen) == 0 ? 0 : -1;
}

/* The request's response format as a grammar (NULL for text); 0 or -1 with
 * a message naming what the schema uses that is not supported. */
static int compile_format(const engine_request *r, jg_schema **out, char *err, size_t errlen) {
    char msg[400];
    *out = NULL;
    if (r->format == ENGINE_FORMAT_TEXT) return 0;
    *out = r->format == ENGINE_FORMAT_JSON_OBJECT
               ? jg_compile_any_object(msg, sizeof msg)
               : jg_compile(r->json_schema, strlen(r->json_schema), msg, sizeof msg);
    if (!*out) snprintf(err, errlen, "response_format: %s", msg);
    return *out ? 0 : -1;
}

int engine_submit(engine *e, const engine_request *rq, engine_stream **out, int64_t *id, char *err,
                  size_t errlen) {
    *out = NULL;
    if (validate(e, rq, err, errlen) != 0) return ENGINE_EINVAL;
    jg_schema *grammar;
    if (compile_format(rq, &grammar, err, errlen) != 0) return ENGINE_EINVAL;
    ereq *r = calloc(1, sizeof *r);
    engine_stream *s = calloc(1, sizeof *s);
    if (!r || !s) {
        jg_schema_free(grammar);
        goto oom;
    }
    r->p = *rq;
    r->p.json_schema = NULL;
    r->grammar = grammar;
    r->n_prompt = rq->n_prompt;
    r->prompt = malloc((size_t)rq->n_prompt * sizeof *r->prompt);
    r->seqs = calloc((size_t)rq->n, sizeof *r->seqs);
    if (!r->prompt || !r->seqs) goto oom;
    memcpy(r->prompt, rq->prompt, (size_t)rq->n_prompt * sizeof *r->prompt);
    r->p.prompt = NULL;
    r->p.stop = NULL;
    r->p.stop_ids = NULL;
    if (rq->n_stop) {
        r->stop = calloc((size_t)rq->n_stop, sizeof *r->stop);
        if (!r->stop) goto oom;
        for (int i = 0; i < rq->n_stop; i++)
            if (!(r->stop[i] = strdup(rq->stop[i]))) goto oom;
    }
    if (rq->n_stop_ids) {
        r->stop_ids = malloc((size_t)rq->n_stop_ids * sizeof *r->stop_ids);
        if (!r->stop_ids) goto oom;
        memcpy(r->stop_ids, rq->stop_ids, (size_t)rq->n_stop_ids * sizeof *r->stop_ids);
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->n_open = rq->n;
    s->refs = 2;
    s->e = e;
    r->stream = s;
    r->t_submit = clock_now_ms();

    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        snprintf(err, errlen, "the engine is shutting down");
        r->stream = NULL;
        req_free(r);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return ENGINE_ESTOPPED;
    }
    if (e->n_pending + e->stats.n_waiting >= e->opt.max_waiting && e->opt.max_waiting > 0) {
        pthread_mutex_unlock(&e->mu);
        snprintf(err, errlen, "too many requests waiting (%d); try again later",
                 e->opt.max_waiting);
        r->stream = NULL;
        req_free(r);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return ENGINE_EBUSY;
    }
    r->id = ++e->next_id;
    s->id = r->id;
    if (e->pending_tail) e->pending_tail->next = r;
    else e->pending_head = r;
    e->pending_tail = r;
    e->n_pending++;
    e->busy = 1;
    pthread_cond_broadcast(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
    if (id) *id = r->id;
    *out = s;
    return 0;
oom:
    snprintf(err, errlen, "out of memory queuing the request");
    if (r) {
        r->stream = NULL;
        req_free(r);
    }
    free(s);
    return ENGINE_ENOMEM;
}

void engine_hold(engine *e, int hold) {
    pthread_mutex_lock(&e->mu);
    e->held = hold != 0;
    pthread_cond_broadcast(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
}

void engine_cancel(engine *e, int64_t id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int cap = e->cap_cancels ? e->cap_cancels * 2 : 16;
        int64_t *p = realloc(e->cancels, (size_t)cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&e->mu);
            return;
        }
        e->cancels = p;
        e->cap_cancels = cap;
    }
    e->cancels[e->n_cancels++] = id;
    pthread_cond_broadcast(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
}

void engine_stream_free(engine_stream *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    int open = s->n_open > 0;
    pthread_mutex_unlock(&s->mu);
    if (open) engine_cancel(s->e, s->id);
    stream_unref(s);
}

void engine_get_stats(engine *e, engine_stats *st) {
    pthread_mutex_lock(&e->mu);
    *st = e->stats;
    pthread_mutex_unlock(&e->mu);
}

int engine_check_kv(engine *e, char *err, size_t errlen) {
    pthread_mutex_lock(&e->mu);
    /* not busy and nothing pending: the engine thread waits for work (or is
     * about to) and cannot touch the pool while we hold the mutex */
    int rc = -1;
    if (e->busy || e->n_pending > 0 || e->n_cancels > 0) snprintf(err, errlen, "engine is busy");
    else rc = pkv_check(e->pool, err, errlen) == 0 ? 0 : -1;
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void engine_wait_idle(engine *e) {
    pthread_mutex_lock(&e->mu);
    while (e->busy || e->n_pending > 0 || e->n_cancels > 0) pthread_cond_wait(&e->cv_idle, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

int engine_format_parse(const char *name, engine_format *out) {
    static const char *const names[] = {"text", "json_object", "json_schema"};
    for (int i = 0; i < (int)(sizeof names / sizeof *names); i++)
        if (name && !strcmp(name, names[i])) {
            *out = (engine_format)i;
            return 0;
        }
    return -1;
}
