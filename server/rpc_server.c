/*
 * rpc_server.c - the RPC front end: accept connections, dispatch CALL
 * frames to the methods of inference.Inference, encode generation calls'
 * events (server/relay.h) as protobuf frames.
 *
 * Threads:
 *   - one accept thread per listener; it refuses connections over
 *     max_connections itself;
 *   - per connection, once its first frame is in (rpc/rpc.h), the receive
 *     loop of rpc_conn (callbacks below). It
 *     answers the quick methods itself (Tokenize, Detokenize, Cancel,
 *     Health, ModelInfo, Stats), validates and submits generation calls,
 *     and handles CANCEL frames and the connection's end;
 *   - per generation call, a thread that takes the call's relay events and
 *     sends them as MESSAGE frames, then the call's one STATUS.
 *
 * A call ends early once (relay_cancel: the first of CANCEL frame, Cancel
 * method, deadline, connection close, server shutdown or a failed send
 * wins); the relay cancels the engine request (freeing its KV blocks at
 * the next step) and hands out no more events, and its reason decides the
 * STATUS.
 *
 * Lifetime: a connection record (sconn) is referenced by its open
 * connection (dropped in on_close) and by each of its call threads; the
 * last reference releases the rpc_conn and the record.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "core/chat.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "server/relay.h"
#include "server/rpc_server.h"

/* A peer that does not read for this long loses its connection. */
#define SEND_TIMEOUT_MS 30000
#define MAX_LISTENERS 16
#define CALL_STACK_BYTES (512 << 10)
/* A refused connection's STATUS must fit the fresh socket's buffer at
 * once; the accept thread does not wait on a peer for longer. */
#define REFUSE_WRITE_MS 50

enum {
    M_GENERATE,
    M_GENERATE_STREAM,
    M_TOKENIZE,
    M_DETOKENIZE,
    M_CANCEL,
    M_HEALTH,
    M_MODEL_INFO,
    M_STATS,
};

static const struct {
    const char *name;
    int id;
    int while_draining; /* still served during shutdown */
} methods[] = {
    {"Generate", M_GENERATE, 0},    {"GenerateStream", M_GENERATE_STREAM, 0},
    {"Tokenize", M_TOKENIZE, 0},    {"Detokenize", M_DETOKENIZE, 0},
    {"Cancel", M_CANCEL, 1},        {"Health", M_HEALTH, 1},
    {"ModelInfo", M_MODEL_INFO, 1}, {"Stats", M_STATS, 1},
};
#define N_METHODS ((int)(sizeof methods / sizeof methods[0]))

typedef struct sconn sconn;

typedef struct scall {
    struct scall *next;
    sconn *sc;
    uint64_t id;
    int streaming;
    srv_request req; /* borrowed by r */
    relay *r;
    uint32_t deadline_ms;
} scall;

struct sconn {
    sconn *next, *prev;
    rpc_server *rs;
    rpc_conn *c;
    pthread_mutex_t mu; /* calls, refs */
    scall *calls;
    int refs;
};

struct rpc_server {
    srv *s;
    rpc_conn_opts copts;
    int n_ls;
    rpc_listener *ls[MAX_LISTENERS];
    pthread_t acc[MAX_LISTENERS];
    int acc_started[MAX_LISTENERS];
    pthread_mutex_t mu; /* conns, n_conns, n_calls, stopping, max_connections, refusing */
    pthread_cond_t cv;
    sconn *conns;
    int n_conns;
    int n_calls;
    int stopping;
    int max_connections;
    int refusing; /* the last connection was refused (logged once per episode) */
};

static void logf_(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "infer-server: %s\n", line);
}

/* ---- replies ---- */

static int send_status(sconn *sc, uint64_t id, int code, const char *msg) {
    srv_metrics_count_status(&sc->rs->s->metrics, code);
    return rpc_send_status(sc->c, id, code, msg, SEND_TIMEOUT_MS);
}

static int send_statusf(sconn *sc, uint64_t id, int code, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_status(sc, id, code, msg);
}

/* A unary reply: one MESSAGE, then STATUS OK. */
static void send_reply(sconn *sc, uint64_t id, const ProtobufCMessage *m) {
    int rv = rpc_send_message(sc->c, id, m, SEND_TIMEOUT_MS);
    if (rv == RPC_ETOOBIG)
        send_statusf(sc, id, SRV_RESOURCE_EXHAUSTED,
                     "the response (%zu bytes) exceeds server.max_message_bytes (%zu)",
                     protobuf_c_message_get_packed_size(m), sc->rs->copts.max_frame);
    else if (rv == RPC_OK) send_status(sc, id, SRV_OK, NULL);
}

/* The CALL's payload as a message of type d; NULL after the STATUS
 * INVALID_ARGUMENT was sent (bytes that do not decode, a NUL in a string). */
static ProtobufCMessage *call_request(sconn *sc, const Rpc__Frame *f,
                                      const ProtobufCMessageDescriptor *d) {
    ProtobufCMessage *m;
    char err[256];
    if (rpc_msg_unpack(d, f->has_payload ? f->payload.data : NULL,
                       f->has_payload ? f->payload.len : 0, &m, err, sizeof err) == RPC_OK)
        return m;
    send_status(sc, f->call_id, SRV_INVALID_ARGUMENT, err);
    return NULL;
}

/* ---- connection records ---- */

static void sconn_unref(sconn *sc) {
    rpc_server *rs = sc->rs;
    pthread_mutex_lock(&sc->mu);
    int last = --sc->refs == 0;
    pthread_mutex_unlock(&sc->mu);
    if (!last) return;
    pthread_mutex_lock(&rs->mu);
    if (sc->prev) sc->prev->next = sc->next;
    else rs->conns = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    pthread_mutex_unlock(&rs->mu);
    rpc_conn_release(sc->c);
    pthread_mutex_destroy(&sc->mu);
    free(sc);
    /* Counted last: rpc_server_stop may free rs once this reaches 0. */
    pthread_mutex_lock(&rs->mu);
    rs->n_conns--;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

static scall *find_call_locked(sconn *sc, uint64_t id) {
    for (scall *k = sc->calls; k; k = k->next)
        if (k->id == id) return k;
    return NULL;
}

static int call_active(sconn *sc, uint64_t id) {
    pthread_mutex_lock(&sc->mu);
    int found = find_call_locked(sc, id) != NULL;
    pthread_mutex_unlock(&sc->mu);
    return found;
}

/* ---- generation calls ---- */

/* Send one chunk; on failure the call ends (a stalled peer also loses its
 * connection, since its queue is full and we cannot skip frames). */
static void send_chunk(scall *k, const Inference__GenerateChunk *ch) {
    int rv = rpc_send_message(k->sc->c, k->id, &ch->base, SEND_TIMEOUT_MS);
    if (rv == RPC_OK) return;
    if (rv == RPC_ETIMEDOUT) {
        logf_("connection %s: the peer did not read for %d ms; closing it", rpc_conn_peer(k->sc->c),
              SEND_TIMEOUT_MS);
        rpc_conn_close(k->sc->c, 0);
    }
    relay_cancel(k->r, RELAY_END_PEER_GONE);
}

static void usage_pb(Inference__Usage *u, int prompt_tokens, int completion_tokens) {
    u->has_prompt_tokens = u->has_completion_tokens = 1;
    u->prompt_tokens = prompt_tokens;
    u->completion_tokens = completion_tokens;
}

static void timings_pb(Inference__Timings *tm, double queue_ms, double ttft_ms, double total_ms) {
    tm->has_queue_ms = tm->has_ttft_ms = tm->has_total_ms = 1;
    tm->queue_ms = queue_ms;
    tm->ttft_ms = ttft_ms;
    tm->total_ms = total_ms;
}

/* One token's logprobs as protobuf: the message, its alternatives and the
 * pointers to them (protobuf-c's repeated fields). */
typedef struct {
    Inference__TokenLogprob t;
    Inference__TopLogprob tops[ENGINE_MAX_TOP_LOGPROBS];
    Inference__TopLogprob *tp[ENGINE_MAX_TOP_LOGPROBS];
} lp_pb;

static Inference__TokenLogprob *logprob_pb(lp_pb *m, int32_t token, const engine_logprobs *lp) {
    inference__token_logprob__init(&m->t);
    m->t.has_token_id = m->t.has_logprob = 1;
    m->t.token_id = token;
    m->t.logprob = lp->logprob;
    for (int i = 0; i < lp->n_top; i++) {
        inference__top_logprob__init(&m->tops[i]);
        m->tops[i].has_token_id = m->tops[i].has_logprob = 1;
        m->tops[i].token_id = lp->top_ids[i];
        m->tops[i].logprob = lp->top_logprobs[i];
        m->tp[i] = &m->tops[i];
    }
    m->t.n_top_logprobs = (size_t)lp->n_top;
    m->t.top_logprobs = m->tp;
    return &m->t;
}

/* A completion's logprobs (c->lps) into comp; *mem (the caller frees it)
 * backs them. 0, or -1 when out of memory. */
static int completion_logprobs_pb(Inference__Completion *comp, const relay_choice *c, void **mem) {
    *mem = NULL;
    if (c->n_lps == 0) return 0;
    /* the pointer array first: lp_pb's alignment is a pointer's */
    *mem = malloc(c->n_lps * (sizeof(Inference__TokenLogprob *) + sizeof(lp_pb)));
    if (!*mem) return -1;
    Inference__TokenLogprob **ptrs = *mem;
    lp_pb *store = (lp_pb *)(ptrs + c->n_lps);
    for (size_t j = 0; j < c->n_lps; j++)
        ptrs[j] = logprob_pb(&store[j], c->lps[j].token, &c->lps[j].lp);
    comp->n_logprobs = c->n_lps;
    comp->logprobs = ptrs;
    return 0;
}

/* One engine event as a GenerateChunk. */
static void send_event(scall *k, const engine_event *ev) {
    Inference__GenerateChunk ch = INFERENCE__GENERATE_CHUNK__INIT;
    Inference__Usage u = INFERENCE__USAGE__INIT;
    Inference__Timings tm = INFERENCE__TIMINGS__INIT;
    int32_t tokid = ev->token;
    lp_pb lpm;
    Inference__TokenLogprob *tlp;
    ch.has_index = 1;
    ch.index = ev->index;
    ch.text = ev->text ? ev->text : "";
    ch.has_sampled_ms = 1;
    ch.sampled_ms = ev->t_ms;
    if (ev->type == ENGINE_EV_TOKEN) {
        if (k->req.return_token_ids) {
            ch.n_token_ids = 1;
            ch.token_ids = &tokid;
        }
        if (ev->has_logprobs) {
            tlp = logprob_pb(&lpm, ev->token, &ev->lp);
            ch.n_logprobs = 1;
            ch.logprobs = &tlp;
        }
    } else {
        ch.finish_reason = (char *)srv_finish_reason(ev->finish);
        usage_pb(&u, ev->prompt_tokens, ev->completion_tokens);
        timings_pb(&tm, ev->queue_ms, ev->ttft_ms, ev->total_ms);
        ch.usage = &u;
        ch.timings = &tm;
    }
    send_chunk(k, &ch);
}

static void stream_events(scall *k) {
    engine_event ev;
    while (relay_next(k->r, &ev, -1) == 1) {
        /* After an early end the STATUS says how the call ended. */
        if (relay_end_reason(k->r) == RELAY_END_NONE) send_event(k, &ev);
        engine_event_clear(&ev);
    }
}

/* The unary reply: one GenerateResponse. Returns the call's status
 * (RESOURCE_EXHAUSTED when it does not fit a frame, -1 when it could not be
 * sent). */
static int send_response(scall *k, char *msg, size_t msglen) {
    const relay_result *res = relay_result_get(k->r);
    const int n = res->n;
    Inference__GenerateResponse resp = INFERENCE__GENERATE_RESPONSE__INIT;
    Inference__Completion *comps = calloc((size_t)n, sizeof *comps);
    Inference__Completion **cp = calloc((size_t)n, sizeof *cp);
    void **lp_mem = calloc((size_t)n, sizeof *lp_mem);
    Inference__Usage u = INFERENCE__USAGE__INIT;
    Inference__Timings tm = INFERENCE__TIMINGS__INIT;
    int code = SRV_OK;
    int oom = !comps || !cp || !lp_mem;
    for (int i = 0; i < n && !oom; i++) {
        inference__completion__init(&comps[i]);
        oom = completion_logprobs_pb(&comps[i], &res->choices[i], &lp_mem[i]) != 0;
    }
    if (oom) {
        code = SRV_RESOURCE_EXHAUSTED;
        snprintf(msg, msglen, "out of memory while building the response");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const relay_choice *c = &res->choices[i];
        comps[i].has_index = 1;
        comps[i].index = i;
        comps[i].text = c->text.p ? c->text.p : "";
        comps[i].n_token_ids = c->n_ids;
        comps[i].token_ids = c->ids;
        comps[i].finish_reason = (char *)(c->finished ? srv_finish_reason(c->finish) : "error");
        cp[i] = &comps[i];
    }
    resp.n_completions = (size_t)n;
    resp.completions = cp;
    usage_pb(&u, res->prompt_tokens, res->completion_tokens);
    timings_pb(&tm, res->queue_ms, res->ttft_ms < 0 ? 0 : res->ttft_ms, res->total_ms);
    resp.usage = &u;
    resp.timings = &tm;
    int rv = rpc_send_message(k->sc->c, k->id, &resp.base, SEND_TIMEOUT_MS);
    if (rv == RPC_ETOOBIG) {
        code = SRV_RESOURCE_EXHAUSTED;
        snprintf(msg, msglen, "the response (%zu bytes) exceeds server.max_message_bytes (%zu)",
                 protobuf_c_message_get_packed_size(&resp.base), k->sc->rs->copts.max_frame);
    } else if (rv != RPC_OK) {
        code = -1;
    }
out:
    for (int i = 0; lp_mem && i < n; i++) free(lp_mem[i]);
    free(lp_mem);
    free(comps);
    free(cp);
    return code;
}

/* The call's STATUS from how it ended; -1 when nobody is left to tell. */
static int call_status(scall *k, char *msg, size_t msglen) {
    int code = relay_outcome(k->r);
    switch (code) {
    case SRV_OK: return k->streaming ? SRV_OK : send_response(k, msg, msglen);
    case SRV_CANCELLED:
        if (relay_end_reason(k->r) == RELAY_END_PEER_GONE) return -1;
        snprintf(msg, msglen, "cancelled by the client");
        break;
    case SRV_DEADLINE_EXCEEDED:
        snprintf(msg, msglen, "deadline of %u ms exceeded", k->deadline_ms);
        break;
    case SRV_UNAVAILABLE:
        snprintf(msg, msglen, "the server is shutting down (drain timeout of %d ms reached)",
                 k->sc->rs->s->net.drain_timeout_ms);
        break;
    case SRV_RESOURCE_EXHAUSTED:
        snprintf(msg, msglen, "out of memory while collecting the response");
        break;
    default: snprintf(msg, msglen, "the engine failed while generating (see the server log)");
    }
    return code;
}

/* Take a finished call off its connection and the server's count. */
static void call_release(scall *k) {
    sconn *sc = k->sc;
    rpc_server *rs = sc->rs;
    relay_free(k->r);
    srv_request_free(&k->req);
    pthread_mutex_lock(&sc->mu);
    for (scall **pp = &sc->calls; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    pthread_mutex_unlock(&sc->mu);
    free(k);
    sconn_unref(sc);
    pthread_mutex_lock(&rs->mu);
    rs->n_calls--;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

static void *call_main(void *arg) {
    scall *k = arg;
    if (k->streaming) stream_events(k);
    else relay_wait(k->r);
    char msg[256] = "";
    int code = call_status(k, msg, sizeof msg);
    /* Counted before the client can see the STATUS. */
    relay_finish(k->r, code >= 0 ? code : SRV_CANCELLED);
    if (code >= 0) rpc_send_status(k->sc->c, k->id, code, msg, SEND_TIMEOUT_MS);
    call_release(k);
    return NULL;
}

/* Validate and submit; on failure the STATUS is sent and k is freed. */
static int submit_generate(sconn *sc, const Rpc__Frame *f, scall *k) {
    ProtobufCMessage *m;
    char err[768];
    int rc = SRV_INVALID_ARGUMENT;
    if (rpc_msg_unpack(&inference__generate_request__descriptor,
                       f->has_payload ? f->payload.data : NULL, f->has_payload ? f->payload.len : 0,
                       &m, err, sizeof err) != RPC_OK)
        m = NULL;
    Inference__GenerateRequest *in = (Inference__GenerateRequest *)m;
    if (in) rc = srv_prepare(sc->rs->s, in, &k->req, err, sizeof err);
    if (in) inference__generate_request__free_unpacked(in, NULL);
    if (rc == SRV_OK)
        rc =
            relay_submit(k->r, &k->req, k->streaming ? RELAY_STREAM : RELAY_UNARY, err, sizeof err);
    if (rc == SRV_OK) return 0;
    relay_finish(k->r, rc);
    relay_free(k->r);
    srv_request_free(&k->req);
    free(k);
    rpc_send_status(sc->c, f->call_id, rc, err, SEND_TIMEOUT_MS);
    return -1;
}

static void start_generate(sconn *sc, const Rpc__Frame *f, int streaming, uint32_t deadline_ms) {
    rpc_server *rs = sc->rs;
    scall *k = calloc(1, sizeof *k);
    double deadline_at = deadline_ms ? clock_now_ms() + deadline_ms : 0;
    if (k) k->r = relay_create(rs->s, deadline_at);
    if (!k || !k->r) {
        free(k);
        send_status(sc, f->call_id, SRV_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    k->sc = sc;
    k->id = f->call_id;
    k->streaming = streaming;
    k->deadline_ms = deadline_ms;
    if (submit_generate(sc, f, k) != 0) return;
    pthread_mutex_lock(&sc->mu);
    k->next = sc->calls;
    sc->calls = k;
    sc->refs++;
    pthread_mutex_unlock(&sc->mu);
    pthread_mutex_lock(&rs->mu);
    rs->n_calls++;
    pthread_mutex_unlock(&rs->mu);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, CALL_STACK_BYTES);
    pthread_t tid;
    int e = pthread_create(&tid, &attr, call_main, k);
    pthread_attr_destroy(&attr);
    if (e != 0) {
        /* Undo: freeing the relay cancels the engine request. */
        uint64_t id = k->id;
        char msg[128];
        snprintf(msg, sizeof msg, "cannot start a thread for the call: %s", strerror(e));
        relay_finish(k->r, SRV_RESOURCE_EXHAUSTED);
        call_release(k);
        rpc_send_status(sc->c, id, SRV_RESOURCE_EXHAUSTED, msg, SEND_TIMEOUT_MS);
    }
}

/* ---- quick methods (answered on the receive thread) ---- */

/* s[0..n) with every invalid UTF-8 sequence replaced by U+FFFD (the
 * bytes of a partial character at a token boundary); malloc'd. */
static char *utf8_repair(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) return NULL;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        int len = c < 0x80             ? 1
                  : (c & 0xe0) == 0xc0 ? 2
                  : (c & 0xf0) == 0xe0 ? 3
                  : (c & 0xf8) == 0xf0 ? 4
                                       : 0;
        int ok = len > 0 && i + (size_t)len <= n;
        unsigned cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (int k = 1; ok && k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) ok = 0;
            else cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (ok && len > 1) {
            unsigned min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
            if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) ok = 0;
        }
        if (ok) {
            memcpy(o, s + i, (size_t)len);
            o += len;
            i += (size_t)len;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    *o = 0;
    return out;
}

static void do_tokenize(sconn *sc, const Rpc__Frame *f) {
    srv *s = sc->rs->s;
    Inference__TokenizeRequest *in =
        (Inference__TokenizeRequest *)call_request(sc, f, &inference__tokenize_request__descriptor);
    if (!in) return;
    const char *text = in->text ? in->text : "";
    /* Reuse srv_prepare's UTF-8 rule through a minimal request. */
    size_t n = strlen(text);
    char *fixed = utf8_repair(text, n);
    if (fixed && strcmp(fixed, text) != 0) {
        size_t at = 0;
        while (at < n && text[at] == fixed[at]) at++;
        free(fixed);
        inference__tokenize_request__free_unpacked(in, NULL);
        send_statusf(sc, f->call_id, SRV_INVALID_ARGUMENT, "text is not valid UTF-8 (byte %zu)",
                     at);
        return;
    }
    free(fixed);
    int32_t *ids = NULL;
    int k = tok_encode(s->tok, text, n, in->has_add_special && in->add_special,
                       in->has_parse_special ? in->parse_special : 1, &ids);
    inference__tokenize_request__free_unpacked(in, NULL);
    if (k < 0) {
        send_statusf(sc, f->call_id, SRV_INTERNAL, "tokenization failed (code %d)", k);
        return;
    }
    Inference__TokenizeResponse out = INFERENCE__TOKENIZE_RESPONSE__INIT;
    out.n_ids = (size_t)k;
    out.ids = ids;
    send_reply(sc, f->call_id, &out.base);
    free(ids);
}

static void do_detokenize(sconn *sc, const Rpc__Frame *f) {
    srv *s = sc->rs->s;
    Inference__DetokenizeRequest *in = (Inference__DetokenizeRequest *)call_request(
        sc, f, &inference__detokenize_request__descriptor);
    if (!in) return;
    int n_vocab = tok_n_vocab(s->tok);
    for (size_t i = 0; i < in->n_ids; i++)
        if (in->ids[i] < 0 || in->ids[i] >= n_vocab) {
            send_statusf(sc, f->call_id, SRV_INVALID_ARGUMENT,
                         "ids[%zu] = %d is outside the vocabulary [0, %d)", i, in->ids[i], n_vocab);
            inference__detokenize_request__free_unpacked(in, NULL);
            return;
        }
    int special = in->has_render_special && in->render_special;
    int len = tok_decode(s->tok, in->ids, in->n_ids, special, NULL, 0);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    char *text = NULL;
    if (buf) {
        tok_decode(s->tok, in->ids, in->n_ids, special, buf, (size_t)len);
        text = utf8_repair(buf, (size_t)len);
    }
    inference__detokenize_request__free_unpacked(in, NULL);
    if (!text) {
        free(buf);
        send_status(sc, f->call_id, len < 0 ? SRV_INTERNAL : SRV_RESOURCE_EXHAUSTED,
                    len < 0 ? "detokenization failed" : "out of memory");
        return;
    }
    Inference__DetokenizeResponse out = INFERENCE__DETOKENIZE_RESPONSE__INIT;
    out.text = text;
    send_reply(sc, f->call_id, &out.base);
    free(text);
    free(buf);
}

static void do_cancel(sconn *sc, const Rpc__Frame *f) {
    Inference__CancelRequest *in =
        (Inference__CancelRequest *)call_request(sc, f, &inference__cancel_request__descriptor);
    if (!in) return;
    if (!in->has_call_id) {
        inference__cancel_request__free_unpacked(in, NULL);
        send_status(sc, f->call_id, SRV_INVALID_ARGUMENT, "call_id is required");
        return;
    }
    int found = 0;
    pthread_mutex_lock(&sc->mu);
    scall *k = find_call_locked(sc, in->call_id);
    if (k)
        found = relay_cancel(k->r, RELAY_END_CANCEL) || relay_end_reason(k->r) == RELAY_END_CANCEL;
    pthread_mutex_unlock(&sc->mu);
    inference__cancel_request__free_unpacked(in, NULL);
    Inference__CancelResponse out = INFERENCE__CANCEL_RESPONSE__INIT;
    out.has_found = 1;
    out.found = found;
    send_reply(sc, f->call_id, &out.base);
}

static void do_health(sconn *sc, const Rpc__Frame *f) {
    Inference__HealthResponse out = INFERENCE__HEALTH_RESPONSE__INIT;
    out.status = atomic_load(&sc->rs->s->draining) ? "DRAINING" : "SERVING";
    send_reply(sc, f->call_id, &out.base);
}

static void do_model_info(sconn *sc, const Rpc__Frame *f) {
    srv *s = sc->rs->s;
    const llm_hparams *hp = llm_model_hparams(s->model);
    Inference__ModelInfoResponse out = INFERENCE__MODEL_INFO_RESPONSE__INIT;
    char id[1024]; /* the name HTTP uses too */
    server_model_id(s->cfg.model_path, id, sizeof id);
    out.name = id;
    out.architecture = (char *)hp->arch;
    out.path = s->cfg.model_path;
    int context = s->cfg.model_max_length > 0 && s->cfg.model_max_length < hp->n_ctx_train
                      ? s->cfg.model_max_length
                      : hp->n_ctx_train;
#define SET(field, v)                                                                              \
    do {                                                                                           \
        out.has_##field = 1;                                                                       \
        out.field = (v);                                                                           \
    } while (0)
    SET(n_vocab, hp->n_vocab);
    SET(context_length, context);
    SET(n_embd, hp->n_embd);
    SET(n_layer, hp->n_layer);
    SET(n_head, hp->n_head);
    SET(n_head_kv, hp->n_head_kv);
    SET(weight_bytes, (int64_t)llm_model_weight_bytes(s->model));
    SET(bos_id, tok_bos(s->tok));
    SET(eos_id, tok_eos(s->tok));
#undef SET
    const char *fam = s->chat_template ? chat_template_family(s->chat_template) : NULL;
    out.chat_template_family = (char *)(fam ? fam : "");
    send_reply(sc, f->call_id, &out.base);
}

static void do_stats(sconn *sc, const Rpc__Frame *f) {
    srv *s = sc->rs->s;
    engine_stats st;
    engine_get_stats(s->eng, &st);
    Inference__StatsResponse out = INFERENCE__STATS_RESPONSE__INIT;
#define SET(field, v)                                                                              \
    do {                                                                                           \
        out.has_##field = 1;                                                                       \
        out.field = (v);                                                                           \
    } while (0)
    SET(waiting, st.n_waiting);
    SET(running, st.n_running);
    SET(swapped, st.n_swapped);
    SET(blocks_total, st.blocks_total[0]);
    SET(blocks_free, st.blocks_free[0]);
    SET(blocks_cpu_total, st.blocks_total[1]);
    SET(blocks_cpu_free, st.blocks_free[1]);
    SET(preemptions_swap, st.preempt_swap);
    SET(preemptions_recompute, st.preempt_recompute);
    SET(prompt_tokens, st.prompt_tokens);
    SET(generated_tokens, st.generated_tokens);
    SET(requests_finished, st.requests_finished);
    SET(steps, st.steps);
    SET(active_calls, atomic_load(&s->active_calls));
    SET(connections, atomic_load(&s->connections));
#undef SET
    send_reply(sc, f->call_id, &out.base);
}

/* ---- frame dispatch ---- */

static void handle_call(sconn *sc, const Rpc__Frame *f) {
    srv *s = sc->rs->s;
    if (!f->method || !f->method[0]) {
        send_status(sc, f->call_id, SRV_INVALID_ARGUMENT, "CALL frame without a method");
        return;
    }
    if (call_active(sc, f->call_id)) {
        send_statusf(sc, f->call_id, SRV_INVALID_ARGUMENT,
                     "call_id %llu is already in use on this connection",
                     (unsigned long long)f->call_id);
        return;
    }
    int m = -1, while_draining = 0;
    size_t plen = strlen(RPC_METHOD_PREFIX);
    if (strncmp(f->method, RPC_METHOD_PREFIX, plen) == 0)
        for (int i = 0; i < N_METHODS; i++)
            if (strcmp(f->method + plen, methods[i].name) == 0) {
                m = methods[i].id;
                while_draining = methods[i].while_draining;
            }
    /* Health stays open (load balancers probe it without secrets, as GET
     * /health does); everything else, unknown methods included, needs the
     * key, so that a caller without it learns nothing about the service. */
    if (m != M_HEALTH && srv_check_key(s, f->api_key) != SRV_OK) {
        send_status(sc, f->call_id, SRV_UNAUTHENTICATED,
                    f->api_key && f->api_key[0] ? "invalid API key"
                                                : "missing API key: this server requires one");
        return;
    }
    if (m < 0) {
        send_statusf(sc, f->call_id, SRV_UNIMPLEMENTED,
                     "unknown method '%.200s' (inference.Inference has Generate, GenerateStream, "
                     "Tokenize, Detokenize, Cancel, Health, ModelInfo, Stats)",
                     f->method);
        return;
    }
    if (atomic_load(&s->draining) && !while_draining) {
        send_status(sc, f->call_id, SRV_UNAVAILABLE,
                    "the server is shutting down and takes no new calls");
        return;
    }
    uint32_t deadline = f->has_deadline_ms ? f->deadline_ms : 0;
    uint32_t cfg_limit = (uint32_t)s->net.request_timeout_ms;
    if (cfg_limit > 0 && (deadline == 0 || cfg_limit < deadline)) deadline = cfg_limit;
    switch (m) {
    case M_GENERATE: start_generate(sc, f, 0, deadline); break;
    case M_GENERATE_STREAM: start_generate(sc, f, 1, deadline); break;
    case M_TOKENIZE: do_tokenize(sc, f); break;
    case M_DETOKENIZE: do_detokenize(sc, f); break;
    case M_CANCEL: do_cancel(sc, f); break;
    case M_HEALTH: do_health(sc, f); break;
    case M_MODEL_INFO: do_model_info(sc, f); break;
    case M_STATS: do_stats(sc, f); break;
    }
}

static void on_frame(rpc_conn *c, Rpc__Frame *f, void *user) {
    (void)c;
    sconn *sc = user;
    switch ((int)f->type) {
    case RPC__FRAME_TYPE__FRAME_CALL: handle_call(sc, f); break;
    case RPC__FRAME_TYPE__FRAME_CANCEL: {
        pthread_mutex_lock(&sc->mu);
        scall *k = find_call_locked(sc, f->call_id);
        if (k) relay_cancel(k->r, RELAY_END_CANCEL);
        pthread_mutex_unlock(&sc->mu);
        break; /* unknown / finished call: nothing to do */
    }
    case RPC__FRAME_TYPE__FRAME_MESSAGE:
    case RPC__FRAME_TYPE__FRAME_STATUS:
        if (!call_active(sc, f->call_id))
            send_statusf(sc, f->call_id, SRV_INVALID_ARGUMENT,
                         "unexpected %s frame from a client (clients send CALL and CANCEL)",
                         f->type == RPC__FRAME_TYPE__FRAME_MESSAGE ? "MESSAGE" : "STATUS");
        break;
    default:
        if (!call_active(sc, f->call_id))
            send_statusf(sc, f->call_id, SRV_INVALID_ARGUMENT, "unknown frame type %d",
                         (int)f->type);
    }
    rpc_frame_free(f);
}

static void on_bad_frame(rpc_conn *c, int err, int has_id, uint64_t id, const char *msg,
                         void *user) {
    (void)c;
    (void)err;
    sconn *sc = user;
    /* Never a second STATUS for a call in flight. */
    if (!has_id || call_active(sc, id)) id = 0;
    send_status(sc, id, SRV_INVALID_ARGUMENT, msg);
}

static void on_close(rpc_conn *c, int err, const char *msg, void *user) {
    sconn *sc = user;
    srv *s = sc->rs->s;
    if (err == RPC_ETOOBIG) {
        logf_("connection %s: %s; closing it", rpc_conn_peer(c), msg);
        send_status(sc, 0, SRV_RESOURCE_EXHAUSTED, msg);
    } else if (err == RPC_EPROTO) {
        logf_("connection %s: %s; closing it", rpc_conn_peer(c), msg);
        send_status(sc, 0, SRV_INVALID_ARGUMENT, msg);
    } else if (err != RPC_ECLOSED && err != RPC_ETIMEDOUT) {
        /* (idle and silent connections are closed without a word) */
        logf_("connection %s: %s", rpc_conn_peer(c), msg);
    }
    /* The peer is gone (or will be): free its KV blocks now. */
    pthread_mutex_lock(&sc->mu);
    for (scall *k = sc->calls; k; k = k->next) relay_cancel(k->r, RELAY_END_PEER_GONE);
    pthread_mutex_unlock(&sc->mu);
    atomic_fetch_sub(&s->connections, 1);
    sconn_unref(sc);
}

/* Idle for idle_timeout_ms: close unless a call is in flight (a stream
 * may be quiet for a long while, e.g. during a long prompt). */
static int on_idle(rpc_conn *c, void *user) {
    (void)c;
    sconn *sc = user;
    pthread_mutex_lock(&sc->mu);
    int idle = sc->calls == NULL;
    pthread_mutex_unlock(&sc->mu);
    return idle;
}

/* ---- listeners ---- */

/* Over max_connections: one STATUS if the socket takes it at once, then
 * close. The connection never gets a thread. */
static void refuse_connection(rpc_server *rs, rpc_conn *c, int max, int log) {
    char msg[64];
    snprintf(msg, sizeof msg, "too many connections (%d)", max);
    if (log)
        logf_("connection %s refused: %s (server.max_connections); refusing more without a log "
              "line until one is accepted",
              rpc_conn_peer(c), msg);
    srv_metrics_count_status(&rs->s->metrics, SRV_RESOURCE_EXHAUSTED);
    if (rpc_send_status(c, 0, SRV_RESOURCE_EXHAUSTED, msg, 0) == RPC_OK)
        rpc_conn_flush(c, REFUSE_WRITE_MS);
    rpc_conn_release(c);
}

typedef struct {
    rpc_server *rs;
    int i;
} accept_arg;

static void *accept_main(void *arg) {
    accept_arg a = *(accept_arg *)arg;
    free(arg);
    rpc_server *rs = a.rs;
    rpc_listener *l = rs->ls[a.i];
    static const rpc_conn_handlers handlers = {on_frame, on_bad_frame, on_close, on_idle};
    for (;;) {
        rpc_conn *c;
        char err[256];
        int rc = rpc_listener_accept(l, &rs->copts, &c, err, sizeof err);
        if (rc == RPC_ECLOSED) break;
        if (rc != RPC_OK) {
            logf_("%s", err);
            struct timespec ts = {0, 20 * 1000000L}; /* e.g. out of descriptors: back off */
            nanosleep(&ts, NULL);
            continue;
        }
        sconn *sc = calloc(1, sizeof *sc);
        pthread_mutex_lock(&rs->mu);
        int max = rs->max_connections, full = rs->n_conns >= max, log = full && !rs->refusing;
        rs->refusing = full;
        if (rs->stopping || !sc || full) {
            pthread_mutex_unlock(&rs->mu);
            free(sc);
            if (full) refuse_connection(rs, c, max, log);
            else rpc_conn_release(c);
            continue;
        }
        pthread_mutex_init(&sc->mu, NULL);
        sc->rs = rs;
        sc->c = c;
        sc->refs = 1; /* the open connection; dropped by on_close */
        sc->next = rs->conns;
        if (rs->conns) rs->conns->prev = sc;
        rs->conns = sc;
        rs->n_conns++;
        pthread_mutex_unlock(&rs->mu);
        atomic_fetch_add(&rs->s->connections, 1);
        if (rpc_conn_start(c, &handlers, sc, err, sizeof err) != RPC_OK) {
            logf_("connection %s: %s", rpc_conn_peer(c), err);
            atomic_fetch_sub(&rs->s->connections, 1);
            sconn_unref(sc);
        }
    }
    return NULL;
}

int rpc_server_start(srv *s, const char *const *urls, int n, const rpc_tls_opts *tls,
                     const rpc_conn_opts *conn_opts, rpc_server **out, char *err, size_t errlen) {
    *out = NULL;
    if (n > MAX_LISTENERS) {
        snprintf(err, errlen, "too many listen addresses (%d, at most %d)", n, MAX_LISTENERS);
        return -1;
    }
    rpc_server *rs = calloc(1, sizeof *rs);
    if (!rs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    rs->s = s;
    rpc_conn_opts_default(&rs->copts);
    if (conn_opts) {
        if (conn_opts->max_frame) rs->copts.max_frame = conn_opts->max_frame;
        if (conn_opts->max_queue_bytes) rs->copts.max_queue_bytes = conn_opts->max_queue_bytes;
        if (conn_opts->max_queue_frames > 0)
            rs->copts.max_queue_frames = conn_opts->max_queue_frames;
        if (conn_opts->frame_timeout_ms) rs->copts.frame_timeout_ms = conn_opts->frame_timeout_ms;
        if (conn_opts->linger_ms > 0) rs->copts.linger_ms = conn_opts->linger_ms;
        if (conn_opts->first_frame_timeout_ms)
            rs->copts.first_frame_timeout_ms = conn_opts->first_frame_timeout_ms;
        rs->copts.idle_timeout_ms = conn_opts->idle_timeout_ms;
    }
    if (rs->copts.idle_timeout_ms == 0)
        rs->copts.idle_timeout_ms = RPC_SERVER_DEFAULT_IDLE_TIMEOUT_MS;
    rs->max_connections = RPC_SERVER_DEFAULT_MAX_CONNECTIONS;
    pthread_mutex_init(&rs->mu, NULL);
    pthread_cond_init(&rs->cv, NULL);
    for (int i = 0; i < n; i++) {
        if (rpc_listen(urls[i], tls, &rs->ls[i], err, errlen) != RPC_OK) goto fail;
        rs->n_ls = i + 1;
    }
    for (int i = 0; i < n; i++) {
        accept_arg *a = malloc(sizeof *a);
        if (!a) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        a->rs = rs;
        a->i = i;
        int e = pthread_create(&rs->acc[i], NULL, accept_main, a);
        if (e != 0) {
            free(a);
            snprintf(err, errlen, "cannot start the accept thread: %s", strerror(e));
            goto fail;
        }
        rs->acc_started[i] = 1;
    }
    *out = rs;
    return 0;
fail:
    rpc_server_stop(rs);
    return -1;
}

void rpc_server_set_max_connections(rpc_server *r, int n) {
    pthread_mutex_lock(&r->mu);
    r->max_connections = n > 0 ? n : RPC_SERVER_DEFAULT_MAX_CONNECTIONS;
    pthread_mutex_unlock(&r->mu);
}

const char *rpc_server_url(const rpc_server *r, int i) {
    return i >= 0 && i < r->n_ls ? rpc_listener_url(r->ls[i]) : NULL;
}

int rpc_server_wait_idle(rpc_server *r, int timeout_ms) {
    struct timespec ts = clock_realtime_after_ms(timeout_ms);
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (r->n_calls > 0) {
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT && r->n_calls > 0) {
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void rpc_server_cancel_all(rpc_server *r) {
    pthread_mutex_lock(&r->mu);
    for (sconn *sc = r->conns; sc; sc = sc->next) {
        pthread_mutex_lock(&sc->mu);
        for (scall *k = sc->calls; k; k = k->next) relay_cancel(k->r, RELAY_END_SHUTDOWN);
        pthread_mutex_unlock(&sc->mu);
    }
    pthread_mutex_unlock(&r->mu);
}

void rpc_server_stop(rpc_server *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_ls; i++) rpc_listener_close(r->ls[i]);
    for (int i = 0; i < r->n_ls; i++)
        if (r->acc_started[i]) pthread_join(r->acc[i], NULL);
    rpc_server_cancel_all(r);
    /* Close every connection; queued statuses get the linger time. */
    pthread_mutex_lock(&r->mu);
    for (sconn *sc = r->conns; sc; sc = sc->next) rpc_conn_close(sc->c, r->copts.linger_ms);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10 + r->copts.linger_ms / 1000;
    int timed_out = 0;
    while (r->n_conns > 0 || r->n_calls > 0) {
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) {
            timed_out = r->n_conns > 0 || r->n_calls > 0;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_ls; i++) rpc_listener_free(r->ls[i]);
    if (timed_out) {
        /* Threads still use r: leak it rather than free under them. */
        logf_("%d connections / %d calls did not end in time", r->n_conns, r->n_calls);
        return;
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
