/*
 * relay.c - one generation call's life (relay.h): submit, wait with the
 * deadline, account the events, cancel, record, tear down.
 *
 * Early ends race with submission (a client may cancel, or a peer go away,
 * while the request is still being submitted): the reason and the engine
 * id are both atomics, written before the other is read on each side, so
 * at least one side sees both and cancels the engine request.
 */
#include "server/relay.h"
#include "base/clock.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The longest single wait on the engine stream; the deadline is re-checked
 * after each. */
#define RELAY_WAIT_SLICE_MS 60000

struct relay {
    srv *s;
    relay_mode mode;
    int return_token_ids;
    int logprobs; /* the request's: accumulate each token's in unary mode */
    double deadline_at;
    engine_stream *es;
    atomic_llong eid; /* engine request id; -1 until submitted */
    atomic_int end;   /* relay_end */
    relay_result res;
    double *last_token_ms; /* per choice: event time of its latest token */
};

relay *relay_create(srv *s, double deadline_at) {
    relay *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->s = s;
    r->deadline_at = deadline_at;
    r->res.ttft_ms = -1;
    atomic_init(&r->eid, -1);
    atomic_init(&r->end, RELAY_END_NONE);
    atomic_fetch_add(&s->active_calls, 1);
    return r;
}

static int result_init(relay_result *res, int n, double **last_token_ms) {
    res->n = n;
    res->choices = calloc((size_t)n, sizeof *res->choices);
    *last_token_ms = calloc((size_t)n, sizeof **last_token_ms);
    if (!res->choices || !*last_token_ms) return -1;
    for (int i = 0; i < n; i++) res->choices[i].finish = GEN_FINISH_ERROR;
    return 0;
}

int relay_submit(relay *r, const srv_request *req, relay_mode mode, char *err, size_t errlen) {
    r->mode = mode;
    if (result_init(&r->res, req->req.n > 0 ? req->req.n : 1, &r->last_token_ms) != 0) {
        snprintf(err, errlen, "out of memory");
        return SRV_RESOURCE_EXHAUSTED;
    }
    r->return_token_ids = req->return_token_ids;
    r->logprobs = req->req.logprobs;
    int64_t id = 0;
    int st = srv_submit(r->s, req, &r->es, &id, err, errlen);
    if (st != SRV_OK) return st;
    atomic_store(&r->eid, (long long)id);
    if (atomic_load(&r->end) != RELAY_END_NONE) engine_cancel(r->s->eng, id);
    return SRV_OK;
}

int64_t relay_engine_id(const relay *r) { return (int64_t)atomic_load(&r->eid); }

int relay_cancel(relay *r, relay_end why) {
    int expected = RELAY_END_NONE;
    if (!atomic_compare_exchange_strong(&r->end, &expected, (int)why)) return 0;
    long long id = atomic_load(&r->eid);
    if (id >= 0) engine_cancel(r->s->eng, id);
    return 1;
}

relay_end relay_end_reason(const relay *r) { return (relay_end)atomic_load(&r->end); }

static int acc_id(relay_choice *c, int32_t id) {
    if (c->n_ids == c->cap_ids) {
        size_t cap = c->cap_ids ? c->cap_ids * 2 : 64;
        int32_t *p = realloc(c->ids, cap * sizeof *p);
        if (!p) return -1;
        c->ids = p;
        c->cap_ids = cap;
    }
    c->ids[c->n_ids++] = id;
    return 0;
}

static int acc_logprob(relay_choice *c, const engine_event *ev) {
    if (c->n_lps == c->cap_lps) {
        size_t cap = c->cap_lps ? c->cap_lps * 2 : 16;
        relay_logprob *p = realloc(c->lps, cap * sizeof *p);
        if (!p) return -1;
        c->lps = p;
        c->cap_lps = cap;
    }
    c->lps[c->n_lps].token = ev->token;
    c->lps[c->n_lps++].lp = ev->lp;
    return 0;
}

/* Account one event: ITL, usage, timings and, in unary mode, the reply. */
static void account(relay *r, const engine_event *ev) {
    relay_result *res = &r->res;
    relay_choice *c = &res->choices[ev->index];
    if (ev->type == ENGINE_EV_TOKEN) {
        double *last = &r->last_token_ms[ev->index];
        if (*last > 0) srv_hist_observe(&r->s->metrics.itl_ms, ev->t_ms - *last);
        *last = ev->t_ms;
        if (r->mode == RELAY_UNARY && r->return_token_ids && acc_id(c, ev->token) != 0)
            res->oom = 1;
        if (r->mode == RELAY_UNARY && r->logprobs && ev->has_logprobs && acc_logprob(c, ev) != 0)
            res->oom = 1;
    } else {
        c->finish = ev->finish;
        c->finished = 1;
        c->completion_tokens = ev->completion_tokens;
        res->prompt_tokens = ev->prompt_tokens;
        res->completion_tokens += ev->completion_tokens;
        if (res->ttft_ms < 0 || (ev->completion_tokens > 0 && ev->ttft_ms < res->ttft_ms)) {
            res->ttft_ms = ev->ttft_ms;
            res->queue_ms = ev->queue_ms;
        }
        if (ev->total_ms > res->total_ms) res->total_ms = ev->total_ms;
        if (ev->finish == GEN_FINISH_ERROR) res->any_error = 1;
    }
    if (r->mode == RELAY_UNARY && ev->text_len) {
        strbuf_putn(&c->text, ev->text, ev->text_len);
        if (c->text.oom) res->oom = 1;
    }
}

/* The wait allowed before the deadline; cancels the call once it passed. */
static int wait_slice(relay *r, int timeout_ms) {
    if (r->deadline_at <= 0 || relay_end_reason(r) != RELAY_END_NONE) return timeout_ms;
    double left = r->deadline_at - clock_now_ms();
    if (left <= 0) {
        relay_cancel(r, RELAY_END_DEADLINE);
        return timeout_ms;
    }
    int slice = left > RELAY_WAIT_SLICE_MS ? RELAY_WAIT_SLICE_MS : (int)ceil(left);
    return timeout_ms >= 0 && timeout_ms < slice ? timeout_ms : slice;
}

int relay_next(relay *r, engine_event *ev, int timeout_ms) {
    double until = timeout_ms >= 0 ? clock_now_ms() + timeout_ms : 0;
    for (;;) {
        int rv = engine_stream_next(r->es, ev, wait_slice(r, timeout_ms));
        if (rv < 0) return -1;
        if (rv == 0) {
            if (timeout_ms >= 0 && clock_now_ms() >= until) return 0;
            continue; /* a deadline slice ended */
        }
        if (ev->index < 0 || ev->index >= r->res.n) {
            engine_event_clear(ev); /* not a completion of this call */
            continue;
        }
        account(r, ev);
        if (relay_end_reason(r) == RELAY_END_NONE || ev->type == ENGINE_EV_FINISH) return 1;
        engine_event_clear(ev); /* draining a call that ended early */
    }
}

void relay_wait(relay *r) {
    engine_event ev;
    while (relay_next(r, &ev, -1) == 1) engine_event_clear(&ev);
}

const relay_result *relay_result_get(const relay *r) { return &r->res; }

int relay_outcome(const relay *r) {
    switch (relay_end_reason(r)) {
    case RELAY_END_CANCEL:
    case RELAY_END_PEER_GONE: return SRV_CANCELLED;
    case RELAY_END_DEADLINE: return SRV_DEADLINE_EXCEEDED;
    case RELAY_END_SHUTDOWN: return SRV_UNAVAILABLE;
    case RELAY_END_NONE: break;
    }
    if (r->res.oom) return SRV_RESOURCE_EXHAUSTED;
    if (r->res.any_error) return SRV_INTERNAL;
    for (int i = 0; i < r->res.n; i++)
        if (r->res.choices[i].finish == GEN_FINISH_CANCELLED) return SRV_UNAVAILABLE;
    return SRV_OK;
}

void relay_finish(relay *r, int status) {
    srv_metrics *m = &r->s->metrics;
    int finished = 0;
    for (int i = 0; i < r->res.n; i++) finished |= r->res.choices[i].finished;
    if (r->res.completion_tokens > 0) srv_hist_observe(&m->ttft_ms, r->res.ttft_ms);
    if (finished) srv_hist_observe(&m->e2e_ms, r->res.total_ms);
    srv_metrics_count_status(m, status);
    atomic_fetch_sub(&r->s->active_calls, 1);
}

void relay_free(relay *r) {
    if (!r) return;
    if (r->es) engine_stream_free(r->es);
    for (int i = 0; r->res.choices && i < r->res.n; i++) {
        strbuf_free(&r->res.choices[i].text);
        free(r->res.choices[i].ids);
        free(r->res.choices[i].lps);
    }
    free(r->res.choices);
    free(r->last_token_ms);
    free(r);
}
