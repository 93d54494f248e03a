/*
 * infer_client.c - one connection to one server and its call table
 * (icl_conn); the endpoints, the choice among them and the heartbeat are
 * infer_client_pool.c's.
 *
 * One rpc_conn per icl_conn (rpc/rpc.h): its receive thread runs
 * icl_on_frame for every frame, looks the call up by call_id and either
 * keeps the reply (unary), hands a decoded chunk to the call's callback
 * (streaming) or ends the call (STATUS). Callers block on their own call's
 * condition variable; the one that waits also enforces the call's deadline.
 *
 * Locking: one mutex per client guards the call table and every call's
 * state. It is never held while a user callback runs or while a frame is
 * sent, so callbacks may cancel calls and senders may block on the send
 * queue (backpressure) without stalling the receive thread.
 *
 * A call ends exactly once (icl_finish): by its STATUS frame, by its
 * deadline, by a cancel, or by the connection closing. Ending removes it
 * from the table, so late frames for it are dropped; call ids are never
 * reused on a connection. Ending also takes the call off its endpoint's
 * in-flight count (an atomic the pool reads when it picks a server).
 *
 * Lifetime: an icl_conn is reference-counted (the endpoint that holds it,
 * each call started on it); the last reference closes the transport and
 * frees it, so a call may outlive the endpoint's switch to a new
 * connection. A call whose callback is running when it ends
 * is not reported as ended (infer_call_wait) until the callback returns.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/c/infer_client_impl.h"

#define ICL_BUCKETS 256         /* call table: chained hash on call_id */
#define ICL_CANCEL_SEND_MS 1000 /* how long a CANCEL may wait for queue room */
#define ICL_CLOSE_LINGER_MS 200

struct infer_call {
    icl_conn *c;
    uint64_t id;
    struct infer_call *next; /* bucket chain, while in the table */
    pthread_cond_t cv;
    int deadline_ms;     /* as sent, for messages */
    int64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = none */
    int in_table;
    int done;       /* ended: code and message are final */
    int delivering; /* the receive thread is inside cb for this call */
    int code;
    char message[256];
    Rpc__Frame *reply; /* unary: the first MESSAGE */
    infer_chunk_fn cb; /* streaming: chunk callback */
    void *user;
    atomic_int *inflight; /* the endpoint's count; decremented when the call ends */
    int64_t tokens;       /* streaming: token chunks received */
};

struct icl_conn {
    rpc_conn *conn;
    atomic_int refs;
    pthread_mutex_t mu;
    infer_call *table[ICL_BUCKETS];
    uint64_t next_id;
    int closed; /* the connection ended: new calls fail with close_code */
    int close_code;
    char close_msg[200];
    char *api_key;
};

int icl_status(infer_status *st, int code, const char *fmt, ...) {
    if (st) {
        st->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->message, sizeof st->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *infer_status_name(int code) { return rpc_status_name(code); }

static int64_t icl_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- call table (callers hold c->mu) ---- */

static void icl_table_add(icl_conn *c, infer_call *call) {
    infer_call **b = &c->table[call->id % ICL_BUCKETS];
    call->next = *b;
    *b = call;
    call->in_table = 1;
}

static infer_call *icl_table_find(icl_conn *c, uint64_t id) {
    for (infer_call *k = c->table[id % ICL_BUCKETS]; k; k = k->next)
        if (k->id == id) return k;
    return NULL;
}

static void icl_table_remove(icl_conn *c, infer_call *call) {
    if (!call->in_table) return;
    for (infer_call **p = &c->table[call->id % ICL_BUCKETS]; *p; p = &(*p)->next) {
        if (*p == call) {
            *p = call->next;
            break;
        }
    }
    call->in_table = 0;
    call->next = NULL;
}

/* End a call (once): final status, out of the table, waiters woken. */
static void icl_finish(infer_call *call, int code, const char *msg) {
    if (call->done) return;
    call->done = 1;
    call->code = code;
    snprintf(call->message, sizeof call->message, "%s", msg ? msg : "");
    icl_table_remove(call->c, call);
    if (call->inflight) atomic_fetch_sub(call->inflight, 1);
    pthread_cond_broadcast(&call->cv);
}

static void icl_send_cancel(icl_conn *c, uint64_t id) {
    /* Best effort: the call has already ended here; a CANCEL that cannot be
     * queued only means the server finishes its sequence on its own. */
    (void)rpc_send_cancel(c->conn, id, ICL_CANCEL_SEND_MS);
}

/* ---- receive thread ---- */

static int icl_code_of_close(int err) {
    switch (err) {
    case RPC_ETOOBIG: return INFER_RESOURCE_EXHAUSTED;
    case RPC_EPROTO: return INFER_INTERNAL;
    default: return INFER_UNAVAILABLE;
    }
}

static void icl_on_close(rpc_conn *conn, int err, const char *msg, void *user) {
    (void)conn;
    icl_conn *c = user;
    pthread_mutex_lock(&c->mu);
    if (!c->closed) {
        c->closed = 1;
        c->close_code = icl_code_of_close(err);
        snprintf(c->close_msg, sizeof c->close_msg, "connection lost: %s",
                 msg && *msg ? msg : rpc_strerror(err));
    }
    for (int b = 0; b < ICL_BUCKETS; b++) {
        while (c->table[b]) {
            infer_call *call = c->table[b];
            char m[256];
            if (call->cb) /* a stream is not retried: say how far it got */
                snprintf(m, sizeof m, "%.180s (the stream had received %lld tokens)", c->close_msg,
                         (long long)call->tokens);
            else snprintf(m, sizeof m, "%s", c->close_msg);
            icl_finish(call, c->close_code, m);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static void icl_on_bad_frame(rpc_conn *conn, int err, int has_call_id, uint64_t call_id,
                             const char *msg, void *user) {
    (void)conn;
    (void)err;
    icl_conn *c = user;
    if (!has_call_id) return; /* nothing to address it to; the stream is still in sync */
    pthread_mutex_lock(&c->mu);
    infer_call *call = icl_table_find(c, call_id);
    if (call) {
        char m[256];
        snprintf(m, sizeof m, "undecodable frame from the server: %s", msg ? msg : "");
        icl_finish(call, INFER_INTERNAL, m);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Hand one GenerateChunk to the call's callback. Called with c->mu held
 * and call->delivering set; drops the lock around the callback. Returns
 * the callback's verdict (nonzero = cancel). */
static int icl_deliver(icl_conn *c, infer_call *call, const Rpc__Frame *f) {
    pthread_mutex_unlock(&c->mu);
    int verdict = 0;
    Inference__GenerateChunk *ch = inference__generate_chunk__unpack(
        NULL, f->has_payload ? f->payload.len : 0, f->has_payload ? f->payload.data : NULL);
    if (ch) {
        infer_chunk k = {0};
        k.index = ch->has_index ? ch->index : 0;
        k.text = ch->text ? ch->text : "";
        k.text_len = strlen(k.text);
        k.token_ids = ch->token_ids;
        k.n_token_ids = ch->n_token_ids;
        k.finish_reason = ch->finish_reason;
        k.sampled_ms = ch->has_sampled_ms ? ch->sampled_ms : 0;
        if (ch->usage || ch->timings) {
            k.has_usage = 1;
            if (ch->usage) {
                k.usage.prompt_tokens = ch->usage->has_prompt_tokens ? ch->usage->prompt_tokens : 0;
                k.usage.completion_tokens =
                    ch->usage->has_completion_tokens ? ch->usage->completion_tokens : 0;
            }
            if (ch->timings) {
                k.usage.queue_ms = ch->timings->queue_ms;
                k.usage.ttft_ms = ch->timings->ttft_ms;
                k.usage.total_ms = ch->timings->total_ms;
            }
        }
        if (!ch->finish_reason) call->tokens++; /* the server sends one chunk per token */
        verdict = call->cb(&k, call->user) ? 1 : 0;
        inference__generate_chunk__free_unpacked(ch, NULL);
    } else {
        verdict = -1;
    }
    pthread_mutex_lock(&c->mu);
    return verdict;
}

static void icl_on_frame(rpc_conn *conn, Rpc__Frame *f, void *user) {
    (void)conn;
    icl_conn *c = user;
    int send_cancel = 0;
    uint64_t id = f->call_id;
    pthread_mutex_lock(&c->mu);
    infer_call *call = icl_table_find(c, id);
    if (!call) {
        /* a call that already ended here (deadline, cancel): drop */
    } else if (f->type == RPC__FRAME_TYPE__FRAME_STATUS) {
        int code = f->has_status ? (int)f->status : INFER_UNKNOWN;
        icl_finish(call, code, f->message);
    } else if (f->type == RPC__FRAME_TYPE__FRAME_MESSAGE && !call->cb) {
        if (!call->reply) {
            call->reply = f;
            f = NULL;
        }
    } else if (f->type == RPC__FRAME_TYPE__FRAME_MESSAGE) {
        if (call->deadline_ns && icl_now_ns() >= call->deadline_ns) {
            char m[96];
            snprintf(m, sizeof m, "deadline of %d ms exceeded (client)", call->deadline_ms);
            icl_finish(call, INFER_DEADLINE_EXCEEDED, m);
            send_cancel = 1;
        } else {
            call->delivering = 1;
            int verdict = icl_deliver(c, call, f);
            call->delivering = 0;
            if (verdict > 0) {
                icl_finish(call, INFER_CANCELLED, "cancelled by the chunk callback");
                send_cancel = 1;
            } else if (verdict < 0) {
                icl_finish(call, INFER_INTERNAL, "undecodable GenerateChunk from the server");
                send_cancel = 1;
            }
            pthread_cond_broadcast(&call->cv); /* a waiter may be waiting for delivering == 0 */
        }
    }
    /* CALL / CANCEL frames from a server are meaningless to a client: ignored. */
    pthread_mutex_unlock(&c->mu);
    if (send_cancel) icl_send_cancel(c, id);
    if (f) rpc_frame_free(f);
}

/* ---- connection ---- */

int icl_conn_open(const char *url, const infer_client_opts *o, int connect_timeout_ms,
                  icl_conn **out, char *err, size_t errlen) {
    *out = NULL;
    icl_conn *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->refs, 1);
    c->next_id = 1;
    if (o->api_key && *o->api_key && !(c->api_key = strdup(o->api_key))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rpc_conn_opts co;
    rpc_conn_opts_default(&co);
    if (o->max_frame_bytes) co.max_frame = o->max_frame_bytes;
    rpc_tls_opts tls = {.cert_key_file = o->tls_cert_key_file,
                        .ca_file = o->tls_ca_file,
                        .server_name = o->tls_server_name,
                        .insecure = o->tls_insecure};
    char e[200];
    if (rpc_dial(url, &tls, &co, connect_timeout_ms, &c->conn, e, sizeof e) != RPC_OK) {
        snprintf(err, errlen, "%s", e);
        goto fail;
    }
    rpc_conn_handlers h = {
        .on_frame = icl_on_frame, .on_bad_frame = icl_on_bad_frame, .on_close = icl_on_close};
    if (rpc_conn_start(c->conn, &h, c, e, sizeof e) != RPC_OK) {
        snprintf(err, errlen, "connect %s: %s", url, e);
        rpc_conn_release(c->conn);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    free(c->api_key);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return -1;
}

void icl_conn_shut(icl_conn *c) {
    rpc_conn_close(c->conn, ICL_CLOSE_LINGER_MS); /* on_close ends the open calls */
}

void icl_conn_ref(icl_conn *c) { atomic_fetch_add(&c->refs, 1); }

void icl_conn_unref(icl_conn *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    rpc_conn_close(c->conn, ICL_CLOSE_LINGER_MS);
    rpc_conn_release(c->conn); /* waits for the receive thread */
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    for (int b = 0; b < ICL_BUCKETS; b++)
        while (c->table[b]) icl_finish(c->table[b], INFER_UNAVAILABLE, "client closed");
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_destroy(&c->mu);
    free(c->api_key);
    free(c);
}

int icl_conn_is_up(icl_conn *c) {
    pthread_mutex_lock(&c->mu);
    int up = !c->closed;
    pthread_mutex_unlock(&c->mu);
    return up && rpc_conn_is_open(c->conn);
}

/* ---- calls ---- */

int icl_conn_call_start(icl_conn *c, const char *method, const ProtobufCMessage *req,
                        int deadline_ms, infer_chunk_fn cb, void *user, atomic_int *inflight,
                        infer_call **out, infer_status *st) {
    *out = NULL;
    infer_call *call = calloc(1, sizeof *call);
    if (!call) {
        if (inflight) atomic_fetch_sub(inflight, 1);
        return icl_status(st, INFER_RESOURCE_EXHAUSTED, "out of memory");
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&call->cv, &ca);
    pthread_condattr_destroy(&ca);
    call->c = c;
    call->cb = cb;
    call->user = user;
    if (deadline_ms > 0) {
        call->deadline_ms = deadline_ms;
        call->deadline_ns = icl_now_ns() + (int64_t)deadline_ms * 1000000;
    }

    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        if (inflight) atomic_fetch_sub(inflight, 1);
        int code = icl_status(st, c->close_code, "%s", c->close_msg);
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&call->cv);
        free(call);
        return code;
    }
    call->id = c->next_id++;
    call->inflight = inflight; /* counted by the caller; icl_finish uncounts */
    icl_table_add(c, call);    /* before sending: the answer may come at once */
    pthread_mutex_unlock(&c->mu);

    char full[96];
    snprintf(full, sizeof full, "%s%s", RPC_METHOD_PREFIX, method);
    /* Room in the send queue is waited for within the deadline (none: for
     * as long as it takes - that is the backpressure). */
    int rc = rpc_send_call(c->conn, call->id, full, deadline_ms > 0 ? (uint32_t)deadline_ms : 0,
                           c->api_key, req, deadline_ms > 0 ? deadline_ms : -1);
    if (rc != RPC_OK) {
        pthread_mutex_lock(&c->mu);
        if (rc == RPC_ETIMEDOUT)
            icl_finish(call, INFER_DEADLINE_EXCEEDED,
                       "deadline exceeded while waiting to send the call (send queue full)");
        else if (rc == RPC_ETOOBIG)
            icl_finish(call, INFER_RESOURCE_EXHAUSTED, "request exceeds the frame size limit");
        else if (rc == RPC_ENOMEM) icl_finish(call, INFER_RESOURCE_EXHAUSTED, "out of memory");
        else
            icl_finish(call, c->closed ? c->close_code : INFER_UNAVAILABLE,
                       c->closed ? c->close_msg : "connection closed");
        int code = icl_status(st, call->code, "%s", call->message);
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&call->cv);
        free(call);
        return code;
    }
    icl_conn_ref(c); /* the call's reference: infer_call_free drops it */
    *out = call;
    return icl_status(st, INFER_OK, "%s", "");
}

int infer_call_wait(infer_call *call, infer_status *st) {
    icl_conn *c = call->c;
    int send_cancel = 0;
    pthread_mutex_lock(&c->mu);
    while (!call->done || call->delivering) {
        if (!call->done && call->deadline_ns) {
            int64_t dl = call->deadline_ns;
            struct timespec ts = {(time_t)(dl / 1000000000), (long)(dl % 1000000000)};
            int r = pthread_cond_timedwait(&call->cv, &c->mu, &ts);
            if (r == ETIMEDOUT && !call->done) {
                char m[96];
                snprintf(m, sizeof m, "deadline of %d ms exceeded (client)", call->deadline_ms);
                icl_finish(call, INFER_DEADLINE_EXCEEDED, m);
                send_cancel = 1;
            }
        } else {
            pthread_cond_wait(&call->cv, &c->mu);
        }
    }
    int code = icl_status(st, call->code, "%s", call->message);
    pthread_mutex_unlock(&c->mu);
    if (send_cancel) icl_send_cancel(c, call->id);
    return code;
}

void infer_call_cancel(infer_call *call) {
    if (!call) return;
    icl_conn *c = call->c;
    pthread_mutex_lock(&c->mu);
    int was_open = !call->done;
    icl_finish(call, INFER_CANCELLED, "cancelled by the client");
    pthread_mutex_unlock(&c->mu);
    if (was_open) icl_send_cancel(c, call->id);
}

void infer_call_free(infer_call *call) {
    if (!call) return;
    infer_call_cancel(call);
    infer_call_wait(call, NULL); /* lets a running callback return */
    if (call->reply) rpc_frame_free(call->reply);
    pthread_cond_destroy(&call->cv);
    icl_conn *c = call->c;
    free(call);
    icl_conn_unref(c);
}

int64_t infer_call_tokens_received(infer_call *call) {
    pthread_mutex_lock(&call->c->mu);
    int64_t n = call->tokens;
    pthread_mutex_unlock(&call->c->mu);
    return n;
}

Rpc__Frame *icl_call_take_reply(infer_call *call) {
    pthread_mutex_lock(&call->c->mu);
    Rpc__Frame *f = call->reply;
    call->reply = NULL;
    pthread_mutex_unlock(&call->c->mu);
    return f;
}

int icl_conn_unary(icl_conn *c, const char *method, const ProtobufCMessage *req, int deadline_ms,
                   atomic_int *inflight, Rpc__Frame **reply, infer_status *st) {
    *reply = NULL;
    infer_call *call;
    int code = icl_conn_call_start(c, method, req, deadline_ms, NULL, NULL, inflight, &call, st);
    if (code != INFER_OK) return code;
    code = infer_call_wait(call, st);
    if (code == INFER_OK) {
        *reply = icl_call_take_reply(call);
        if (!*reply)
            code =
                icl_status(st, INFER_INTERNAL, "%s: the server sent OK without a response", method);
    }
    infer_call_free(call);
    return code;
}
