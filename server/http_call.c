/*
 * http_call.c - the HTTP generation endpoints (POST /generate,
 * /v1/completions, /v1/chat/completions): a worker thread decodes the JSON
 * body, hands the call to its relay (server/relay.h) and encodes what the
 * relay gives back, as one JSON reply or as Server-Sent Events.
 *
 *   - unary on a keep-alive connection: the reply goes back through the
 *     handler's aio and nng writes it (keep-alive works as usual);
 *   - stream, or unary on a connection that closes after the reply: the
 *     worker hijacks the connection and writes the reply itself (a stream:
 *     the HTTP/1.1 head, one event per batch of tokens, "data: [DONE]",
 *     then the close delimits the body). A read kept pending on the
 *     connection notices a client that goes away, and the relay cancels
 *     the engine request at once, so its KV blocks are freed even while
 *     nothing is being written. A keep-alive connection cannot be watched
 *     so: nng closes a connection whose pending read is cancelled, and the
 *     next request would otherwise land in the watch's buffer.
 */
#include "server/http_call.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/strbuf.h"

#define HTTP_WRITE_TIMEOUT_MS 30000 /* a client that stops reading is given up */
#define SSE_BATCH_BYTES 65536       /* events ready at once are sent in one write up to this */

typedef struct {
    http_call *c;
    japi_request *jr;
    char id[64]; /* OpenAI object id */
    long created;
} call_ctx;

/* ---------------------------------------------------------------------
 * JSON pieces
 * ------------------------------------------------------------------- */

/* The model-facing finish reason of the OpenAI dialects: EOS and stop
 * strings are both "stop" there. */
static const char *openai_finish(gen_finish f) {
    switch (f) {
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_EOS:
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

static const char *finish_name(japi_kind kind, gen_finish f) {
    return kind == JAPI_GENERATE ? srv_finish_reason((int)f) : openai_finish(f);
}

static cJSON *usage_json(int prompt_tokens, int completion_tokens) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", prompt_tokens + completion_tokens);
    return u;
}

static cJSON *timings_json(double queue_ms, double ttft_ms, double total_ms) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "queue_ms", round(queue_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "ttft_ms", round(ttft_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "total_ms", round(total_ms * 1000) / 1000);
    return t;
}

static cJSON *ids_json(const int32_t *ids, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* The head shared by every OpenAI object. */
static cJSON *openai_object(const call_ctx *x, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", x->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)x->created);
    cJSON_AddStringToObject(o, "model", http_model_name(x->c->h));
    return o;
}

/* "data: <json>\n\n"; takes the JSON tree. */
static void sse_event(strbuf *b, cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!txt) {
        b->oom = 1;
        return;
    }
    strbuf_puts(b, "data: ");
    strbuf_puts(b, txt);
    strbuf_puts(b, "\n\n");
    cJSON_free(txt);
}

/* ---------------------------------------------------------------------
 * A hijacked connection
 * ------------------------------------------------------------------- */

static void watch_arm(http_call *c) {
    nng_iov iov = {.iov_buf = c->rd_buf, .iov_len = sizeof c->rd_buf};
    nng_aio_set_iov(c->rd, 1, &iov);
    nng_http_conn_read(c->conn, c->rd);
}

/* Runs on an nng thread when the read completes: data from the client is
 * ignored (the request was complete), an error means the peer is gone. */
static void watch_cb(void *arg) {
    http_call *c = arg;
    int rv = nng_aio_result(c->rd);
    pthread_mutex_lock(&c->mu);
    if (!c->rd_closing) {
        if (rv == 0) watch_arm(c);
        else relay_cancel(c->r, RELAY_END_PEER_GONE);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Take the connection over (nng forgets it and the request) and watch it. */
static int conn_hijack(http_call *c) {
    if (nng_aio_alloc(&c->wr, NULL, NULL) != 0 || nng_aio_alloc(&c->rd, watch_cb, c) != 0) {
        if (c->wr) nng_aio_free(c->wr);
        c->wr = NULL;
        return -1;
    }
    nng_http_hijack(c->conn);
    nng_aio_set_output(c->aio, 0, NULL);
    nng_aio_finish(c->aio, 0);
    c->aio = NULL;
    watch_arm(c);
    return 0;
}

static void conn_teardown(http_call *c) {
    pthread_mutex_lock(&c->mu);
    c->rd_closing = 1;
    pthread_mutex_unlock(&c->mu);
    nng_aio_stop(c->rd);
    nng_aio_stop(c->wr);
    nng_http_conn_close(c->conn);
    c->conn = NULL;
    nng_aio_free(c->rd);
    nng_aio_free(c->wr);
    c->rd = c->wr = NULL;
    nng_http_req_free(c->req);
    c->req = NULL;
}

static int conn_write(http_call *c, const char *p, size_t n) {
    if (relay_end_reason(c->r) == RELAY_END_PEER_GONE) return NNG_ECLOSED;
    nng_iov iov = {.iov_buf = (void *)p, .iov_len = n};
    nng_aio_set_iov(c->wr, 1, &iov);
    nng_aio_set_timeout(c->wr, HTTP_WRITE_TIMEOUT_MS);
    nng_http_conn_write_all(c->conn, c->wr);
    nng_aio_wait(c->wr);
    int rv = nng_aio_result(c->wr);
    if (rv != 0) relay_cancel(c->r, RELAY_END_PEER_GONE);
    return rv;
}

/* A whole response on the hijacked connection, which then closes. */
static void conn_reply(http_call *c, int status, const char *body) {
    nng_http_res *res = http_response(status, "application/json", body, strlen(body), 1, NULL);
    if (!res) return;
    nng_aio_set_timeout(c->wr, HTTP_WRITE_TIMEOUT_MS);
    nng_http_conn_write_res(c->conn, res, c->wr);
    nng_aio_wait(c->wr);
    nng_http_res_free(res);
}

/* ---------------------------------------------------------------------
 * Unary replies
 * ------------------------------------------------------------------- */

static void reply_body(http_call *c, int status, const char *json) {
    if (c->aio) http_reply(c->aio, status, "application/json", json, strlen(json), 0, NULL);
    else conn_reply(c, status, json);
}

static void reply_error(http_call *c, int status, const char *code, const char *msg) {
    char *body = http_error_json(status, code, msg);
    if (!body) {
        if (c->aio) nng_aio_finish(c->aio, NNG_ENOMEM);
        return;
    }
    reply_body(c, status, body);
    cJSON_free(body);
}

static cJSON *generate_json(const call_ctx *x, const relay_result *res) {
    int ids = x->jr->return_tokens;
    const relay_choice *c0 = &res->choices[0];
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "text", c0->text.p ? c0->text.p : "");
    if (ids) cJSON_AddItemToObject(root, "tokens", ids_json(c0->ids, c0->n_ids));
    cJSON_AddStringToObject(root, "finish_reason", finish_name(JAPI_GENERATE, c0->finish));
    if (res->n > 1) {
        cJSON *arr = cJSON_AddArrayToObject(root, "completions");
        for (int i = 0; i < res->n; i++) {
            const relay_choice *ci = &res->choices[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "index", i);
            cJSON_AddStringToObject(o, "text", ci->text.p ? ci->text.p : "");
            if (ids) cJSON_AddItemToObject(o, "tokens", ids_json(ci->ids, ci->n_ids));
            cJSON_AddStringToObject(o, "finish_reason", finish_name(JAPI_GENERATE, ci->finish));
            cJSON_AddItemToArray(arr, o);
        }
    }
    cJSON_AddItemToObject(root, "usage", usage_json(res->prompt_tokens, res->completion_tokens));
    cJSON_AddItemToObject(
        root, "timings",
        timings_json(res->queue_ms, res->ttft_ms < 0 ? 0 : res->ttft_ms, res->total_ms));
    return root;
}

static cJSON *openai_json(const call_ctx *x, const relay_result *res) {
    int chat = x->c->kind == JAPI_CHAT;
    cJSON *root = openai_object(x, chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    for (int i = 0; i < res->n; i++) {
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", i);
        const char *t = res->choices[i].text.p ? res->choices[i].text.p : "";
        if (chat) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", t);
        } else {
            cJSON_AddStringToObject(ch, "text", t);
        }
        cJSON_AddNullToObject(ch, "logprobs");
        cJSON_AddStringToObject(ch, "finish_reason", openai_finish(res->choices[i].finish));
        cJSON_AddItemToArray(choices, ch);
    }
    cJSON_AddItemToObject(root, "usage", usage_json(res->prompt_tokens, res->completion_tokens));
    return root;
}

/* The error reply of a call that did not end OK. */
static void reply_outcome_error(http_call *c, int st) {
    char msg[160];
    switch (st) {
    case SRV_CANCELLED: /* the client went away: nobody to answer */
        if (c->aio) nng_aio_finish(c->aio, NNG_ECLOSED);
        return;
    case SRV_DEADLINE_EXCEEDED:
        snprintf(msg, sizeof msg,
                 "the request did not finish within server.request_timeout_ms (%d ms)",
                 c->s->net.request_timeout_ms);
        reply_error(c, 504, "deadline_exceeded", msg);
        return;
    case SRV_UNAVAILABLE:
        reply_error(c, 503, "shutting_down",
                    "the request was cancelled: the server is shutting down");
        return;
    case SRV_RESOURCE_EXHAUSTED: reply_error(c, 500, "internal_error", "out of memory"); return;
    default: reply_error(c, 500, "internal_error", "generation failed inside the engine");
    }
}

static void unary_call(call_ctx *x) {
    http_call *c = x->c;
    relay_wait(c->r);
    const relay_result *res = relay_result_get(c->r);
    int st = relay_outcome(c->r);
    char *txt = NULL;
    if (st == SRV_OK) {
        cJSON *root = c->kind == JAPI_GENERATE ? generate_json(x, res) : openai_json(x, res);
        txt = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        if (!txt) st = SRV_RESOURCE_EXHAUSTED;
    }
    /* Counted before the client can see the answer, so that a client
     * reading /metrics (or main's drain loop reading active_calls) right
     * after it finds the call counted. */
    relay_finish(c->r, st);
    if (txt) reply_body(c, 200, txt);
    else reply_outcome_error(c, st);
    cJSON_free(txt);
}

/* ---------------------------------------------------------------------
 * Streams
 * ------------------------------------------------------------------- */

/* One SSE event (as JSON) for a piece of text or a finish. */
static cJSON *stream_chunk(const call_ctx *x, int i, const char *text, const engine_event *fin,
                           const int32_t *tok) {
    http_call *c = x->c;
    if (c->kind == JAPI_GENERATE) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddStringToObject(o, "text", text ? text : "");
        if (tok && x->jr->return_tokens) cJSON_AddItemToObject(o, "tokens", ids_json(tok, 1));
        if (fin) {
            cJSON_AddStringToObject(o, "finish_reason", finish_name(c->kind, fin->finish));
            cJSON_AddItemToObject(o, "usage",
                                  usage_json(fin->prompt_tokens, fin->completion_tokens));
            cJSON_AddItemToObject(o, "timings",
                                  timings_json(fin->queue_ms, fin->ttft_ms, fin->total_ms));
        }
        return o;
    }
    int chat = c->kind == JAPI_CHAT;
    cJSON *o = openai_object(x, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", i);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (text) cJSON_AddStringToObject(d, "content", text);
    } else {
        cJSON_AddStringToObject(ch, "text", text ? text : "");
    }
    cJSON_AddNullToObject(ch, "logprobs");
    if (fin) cJSON_AddStringToObject(ch, "finish_reason", openai_finish(fin->finish));
    else cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    return o;
}

static void stream_event(const call_ctx *x, strbuf *out, const engine_event *ev) {
    int i = ev->index;
    if (ev->type == ENGINE_EV_TOKEN) {
        /* A token whose text is held back (incomplete UTF-8, a possible
         * stop string) is sent with a later one, except to /generate
         * clients that asked for the ids. */
        if (ev->text_len || (x->c->kind == JAPI_GENERATE && x->jr->return_tokens))
            sse_event(out, stream_chunk(x, i, ev->text ? ev->text : "", NULL, &ev->token));
        return;
    }
    if (ev->text_len) sse_event(out, stream_chunk(x, i, ev->text, NULL, NULL));
    sse_event(out, stream_chunk(x, i, x->c->kind == JAPI_CHAT ? NULL : "", ev, NULL));
}

/* The response head and, for chat, each choice's role. */
static void stream_head(const call_ctx *x, strbuf *out, int n) {
    strbuf_puts(out, "HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/event-stream; charset=utf-8\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Accel-Buffering: no\r\n"
                     "Connection: close\r\n\r\n");
    if (x->c->kind != JAPI_CHAT) return;
    for (int i = 0; i < n; i++) {
        cJSON *o = stream_chunk(x, i, NULL, NULL, NULL);
        cJSON *d =
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "delta");
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        sse_event(out, o);
    }
}

/* Relay events until the stream ends; 0, or -1 when out of memory. */
static int stream_events(const call_ctx *x, strbuf *out) {
    http_call *c = x->c;
    engine_event ev;
    while (relay_next(c->r, &ev, -1) == 1) {
        out->len = 0;
        stream_event(x, out, &ev);
        engine_event_clear(&ev);
        /* Send what else is ready in the same write. */
        while (out->len < SSE_BATCH_BYTES && relay_next(c->r, &ev, 0) == 1) {
            stream_event(x, out, &ev);
            engine_event_clear(&ev);
        }
        if (out->oom) return -1;
        if (out->len) conn_write(c, out->p, out->len); /* a failure ends the call */
    }
    return 0;
}

/* The end of a stream that the client still reads: an error event when
 * the deadline passed, the usage when asked for, and [DONE]. */
static void stream_tail(const call_ctx *x, strbuf *out, int st) {
    http_call *c = x->c;
    out->len = 0;
    if (st == SRV_DEADLINE_EXCEEDED) {
        char *e = http_error_json(504, "deadline_exceeded",
                                  "the request did not finish within server.request_timeout_ms");
        if (e) {
            strbuf_puts(out, "data: ");
            strbuf_puts(out, e);
            strbuf_puts(out, "\n\n");
            cJSON_free(e);
        }
    }
    if (c->kind != JAPI_GENERATE && x->jr->include_usage) {
        const relay_result *res = relay_result_get(c->r);
        cJSON *o =
            openai_object(x, c->kind == JAPI_CHAT ? "chat.completion.chunk" : "text_completion");
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", usage_json(res->prompt_tokens, res->completion_tokens));
        sse_event(out, o);
    }
    strbuf_puts(out, "data: [DONE]\n\n");
    if (!out->oom) conn_write(c, out->p, out->len);
}

static void stream_call(const call_ctx *x) {
    http_call *c = x->c;
    strbuf out = {0};
    int st = SRV_CANCELLED;
    stream_head(x, &out, relay_result_get(c->r)->n);
    if (!out.oom && conn_write(c, out.p, out.len) == 0)
        st = stream_events(x, &out) == 0 ? relay_outcome(c->r) : SRV_INTERNAL;
    relay_finish(c->r, st);
    if (st != SRV_CANCELLED) stream_tail(x, &out, st);
    strbuf_free(&out);
}

/* ---------------------------------------------------------------------
 * The call
 * ------------------------------------------------------------------- */

/* Read, parse and validate the body. Returns 0, or -1 after answering. */
static int call_decode(http_call *c, japi_request *jr, srv_request *sr) {
    char err[1024];
    char *body = NULL;
    int rv = http_read_body(c, &body);
    if (rv != 0) {
        /* The client is gone or too slow: nothing to answer to. */
        relay_finish(c->r, SRV_CANCELLED);
        nng_aio_finish(c->aio, rv);
        return -1;
    }
    rv = japi_parse(c->kind, body, c->body_len, jr, err, sizeof err);
    free(body);
    if (rv != 0) {
        relay_finish(c->r, SRV_INVALID_ARGUMENT);
        int json = strncmp(err, "invalid JSON", 12) == 0 || strncmp(err, "request body", 12) == 0;
        http_reply_error(c->aio, 400, json ? "invalid_json" : "invalid_parameter", 0, NULL, "%s",
                         err);
        return -1;
    }
    int st = srv_prepare(c->s, &jr->gen, sr, err, sizeof err);
    if (st != SRV_OK) {
        const char *code;
        int hs = http_status_of(st, &code);
        relay_finish(c->r, st);
        /* Sampling fields sit at the top level of the JSON bodies. */
        const char *msg = strncmp(err, "sampling.", 9) == 0 ? err + 9 : err;
        http_reply_error(c->aio, hs, code, 0, NULL, "%s", msg);
        japi_request_free(jr);
        return -1;
    }
    return 0;
}

/* Whether nng closes the connection after this request's reply (HTTP/1.0,
 * or "Connection: close"), so that the call may watch it. */
static int closes_after_reply(nng_http_req *req) {
    const char *v = nng_http_req_get_version(req);
    const char *conn = nng_http_req_get_header(req, "Connection");
    return (v && strcmp(v, "HTTP/1.1") != 0) || (conn && strcasestr(conn, "close"));
}

/* Submit, and take the connection over when the call may watch it.
 * Returns 0, or -1 after answering. */
static int call_start(call_ctx *x, const srv_request *sr) {
    http_call *c = x->c;
    char err[1024];
    int st = relay_submit(c->r, sr, x->jr->stream ? RELAY_STREAM : RELAY_UNARY, err, sizeof err);
    if (st == SRV_OK && (x->jr->stream || closes_after_reply(c->req)) && conn_hijack(c) != 0) {
        st = SRV_INTERNAL;
        snprintf(err, sizeof err, "out of memory");
    }
    if (st != SRV_OK) {
        const char *code;
        int hs = http_status_of(st, &code);
        relay_finish(c->r, st);
        http_reply_error(c->aio, hs, code, 0, NULL, "%s", err);
        return -1;
    }
    /* Registered: srv_http_stop may cancel it (and abort a stalled write)
     * from now on. */
    http_calls_register(c);
    x->created = (long)time(NULL);
    snprintf(x->id, sizeof x->id, "%s-%lx%04" PRIx64, c->kind == JAPI_CHAT ? "chatcmpl" : "cmpl",
             http_created(c->h), (uint64_t)relay_engine_id(c->r));
    return 0;
}

void http_call_run(http_call *c) {
    japi_request jr;
    srv_request sr;
    memset(&sr, 0, sizeof sr);
    if (call_decode(c, &jr, &sr) != 0) return;
    call_ctx x = {.c = c, .jr = &jr};
    if (call_start(&x, &sr) == 0) {
        if (jr.stream) stream_call(&x);
        else unary_call(&x);
        http_calls_unregister(c);
        if (c->rd) conn_teardown(c);
    }
    srv_request_free(&sr);
    japi_request_free(&jr);
}
