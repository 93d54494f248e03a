/*
 * http.c - the HTTP front end: nng's HTTP server in front of the engine.
 *
 * Routes (docs/http.md): POST /generate (the course lab's JSON API),
 * POST /v1/completions and POST /v1/chat/completions (OpenAI), GET
 * /v1/models, GET /health, GET /metrics. One catch-all handler takes every
 * method and path so that 404 and 405 get the same JSON error body as every
 * other failure, instead of nng's HTML pages.
 *
 * Threads: nng calls the handler on one of its task threads, which must not
 * block. Cheap routes (health, models, metrics, early errors) answer there.
 * A generation call gets its own worker thread, which reads the body (so it
 * can refuse an oversized one with 413 before reading it), validates
 * through srv_prepare, submits to the engine and waits for events.
 *   - unary: the worker hands nng a response through the handler's aio and
 *     nng writes it (keep-alive works as usual);
 *   - stream: nng cannot send a response whose body is still being made, so
 *     the worker hijacks the connection and writes the HTTP/1.1 head and one
 *     Server-Sent Event per batch of tokens itself, ending with
 *     "data: [DONE]" and closing the connection (the body is delimited by
 *     the close). A pending read on the connection notices a client that
 *     goes away and cancels the engine request at once, so its KV blocks
 *     are freed even while no token is being written.
 *
 * Shutdown (srv_http_stop): no new call starts, the engine requests of the
 * calls in flight are cancelled, their workers are awaited, then the
 * listener closes. The srv_http state itself is freed by nng's handler
 * destructor, after the last callback that could see it has returned.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/strbuf.h"
#include "server/json_api.h"
#include "server/server.h"

#define HTTP_WRITE_TIMEOUT_MS 30000 /* a client that stops reading is given up */
#define HTTP_READ_TIMEOUT_MS 30000  /* a request body must arrive within this */
#define HTTP_WAIT_SLICE_MS 100      /* how often a waiting worker checks its deadline */
#define HTTP_MAX_CALLS 4096         /* worker threads at once; more get 503 */

typedef struct http_call http_call;

struct srv_http {
    srv *s;
    nng_http_server *server;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy;    /* handler callbacks and workers that may touch s */
    int n_calls; /* workers alive */
    int stopping;
    http_call *calls; /* workers with an engine request, for cancelling at stop */
    char model_name[256];
    long created; /* start time (unix seconds) for /v1/models */
    atomic_long next_id;
};

typedef struct srv_http srv_http;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---------------------------------------------------------------------
 * Responses
 * ------------------------------------------------------------------- */

static const char *error_type(int http_status) {
    switch (http_status) {
    case 400:
    case 405:
    case 411:
    case 413: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    case 504: return "timeout_error";
    default: return "server_error";
    }
}

static char *error_json(int http_status, const char *code, const char *msg) {
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", error_type(http_status));
    cJSON_AddNullToObject(e, "param");
    cJSON_AddStringToObject(e, "code", code);
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* Complete the handler's aio with a response; nng writes it. close asks
 * nng to close the connection afterwards (the body was not read). */
static void reply(nng_aio *aio, int status, const char *ctype, const char *body, size_t len,
                  int close, const char *allow) {
    nng_http_res *res;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    int rv = nng_http_res_set_status(res, (uint16_t)status);
    if (rv == 0 && ctype) rv = nng_http_res_set_header(res, "Content-Type", ctype);
    if (rv == 0 && close) rv = nng_http_res_set_header(res, "Connection", "close");
    if (rv == 0 && allow) rv = nng_http_res_set_header(res, "Allow", allow);
    if (rv == 0 && status == 401) rv = nng_http_res_set_header(res, "WWW-Authenticate", "Bearer");
    if (rv == 0) rv = nng_http_res_copy_data(res, body, len);
    if (rv != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, rv);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void reply_json(nng_aio *aio, int status, const char *json) {
    reply(aio, status, "application/json", json, strlen(json), 0, NULL);
}

static void reply_error(nng_aio *aio, int status, const char *code, int close, const char *allow,
                        const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *body = error_json(status, code, msg);
    if (!body) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    reply(aio, status, "application/json", body, strlen(body), close, allow);
    cJSON_free(body);
}

/* srv status codes -> HTTP status and error code. */
static int status_to_http(int st, const char **code) {
    switch (st) {
    case SRV_INVALID_ARGUMENT: *code = "invalid_parameter"; return 400;
    case SRV_UNAUTHENTICATED: *code = "invalid_api_key"; return 401;
    case SRV_NOT_FOUND: *code = "not_found"; return 404;
    case SRV_RESOURCE_EXHAUSTED: *code = "engine_busy"; return 429;
    case SRV_UNIMPLEMENTED: *code = "not_implemented"; return 501;
    case SRV_UNAVAILABLE: *code = "unavailable"; return 503;
    case SRV_DEADLINE_EXCEEDED: *code = "deadline_exceeded"; return 504;
    case SRV_CANCELLED: *code = "cancelled"; return 503;
    default: *code = "internal_error"; return 500;
    }
}

/* ---------------------------------------------------------------------
 * Response bodies (strbuf.h)
 * ------------------------------------------------------------------- */

/* "data: <json>\n\n"; takes the JSON tree. */
static void hb_event(strbuf *b, cJSON *j) {
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
 * Cheap GET routes (answered on nng's thread)
 * ------------------------------------------------------------------- */

static void handle_health(srv_http *h, nng_aio *aio) {
    if (atomic_load(&h->s->draining)) reply_json(aio, 503, "{\"status\":\"draining\"}");
    else reply_json(aio, 200, "{\"status\":\"ok\"}");
}

static void handle_metrics(srv_http *h, nng_aio *aio) {
    char *text;
    size_t len;
    if (srv_metrics_render(h->s, &text, &len) != 0) {
        reply_error(aio, 500, "internal_error", 0, NULL, "out of memory");
        return;
    }
    reply(aio, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 0, NULL);
    free(text);
}

static cJSON *model_object(srv_http *h) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", h->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)h->created);
    cJSON_AddStringToObject(m, "owned_by", "infer-server");
    return m;
}

static void handle_models(srv_http *h, nng_aio *aio, const char *which) {
    cJSON *root;
    if (which) {
        if (strcmp(which, h->model_name) != 0) {
            reply_error(aio, 404, "model_not_found", 0, NULL, "model '%s' does not exist", which);
            return;
        }
        root = model_object(h);
    } else {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "object", "list");
        cJSON *data = cJSON_AddArrayToObject(root, "data");
        cJSON_AddItemToArray(data, model_object(h));
    }
    char *txt = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!txt) {
        reply_error(aio, 500, "internal_error", 0, NULL, "out of memory");
        return;
    }
    reply_json(aio, 200, txt);
    cJSON_free(txt);
}

/* ---------------------------------------------------------------------
 * Generation calls (one worker thread each)
 * ------------------------------------------------------------------- */

struct http_call {
    srv_http *h;
    srv *s;
    nng_aio *aio;      /* the handler's aio; NULL once completed */
    nng_http_req *req; /* owned by us after a hijack */
    nng_http_conn *conn;
    japi_kind kind;
    size_t body_len;
    int expect_continue;
    double t_arrival;

    /* engine request, once submitted (registered in h->calls) */
    int64_t engine_id;
    int submitted;
    http_call *next, *prev;

    /* streaming: the connection after the hijack */
    pthread_mutex_t mu;
    nng_aio *rd; /* watches for the client going away */
    char rd_buf[512];
    int rd_closing;
    atomic_int peer_gone;
    nng_aio *wr;
};

/* The call's outcome, once per call and before the client can see it, so
 * that a client reading /metrics (or main's drain loop reading
 * active_calls) right after its answer finds it counted. */
static void call_done(http_call *c, int status) {
    srv_metrics_count_status(&c->s->metrics, status);
    atomic_fetch_sub(&c->s->active_calls, 1);
}

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

static int read_body(http_call *c, char **out) {
    char *buf = malloc(c->body_len + 1);
    if (!buf) return NNG_ENOMEM;
    nng_aio *aio;
    int rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    nng_aio_set_timeout(aio, HTTP_READ_TIMEOUT_MS);
    if (c->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        nng_iov iov = {.iov_buf = (void *)cont, .iov_len = sizeof cont - 1};
        nng_aio_set_iov(aio, 1, &iov);
        nng_http_conn_write_all(c->conn, aio);
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
    }
    if (rv == 0 && c->body_len > 0) {
        nng_iov iov = {.iov_buf = buf, .iov_len = c->body_len};
        nng_aio_set_iov(aio, 1, &iov);
        nng_http_conn_read_all(c->conn, aio);
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
    }
    nng_aio_free(aio);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    buf[c->body_len] = 0;
    *out = buf;
    return 0;
}

static void calls_register(http_call *c, int64_t id) {
    srv_http *h = c->h;
    pthread_mutex_lock(&h->mu);
    c->engine_id = id;
    c->submitted = 1;
    c->next = h->calls;
    if (h->calls) h->calls->prev = c;
    h->calls = c;
    int stopping = h->stopping;
    pthread_mutex_unlock(&h->mu);
    if (stopping) engine_cancel(c->s->eng, id);
}

static void calls_unregister(http_call *c) {
    srv_http *h = c->h;
    pthread_mutex_lock(&h->mu);
    if (c->submitted) {
        if (c->prev) c->prev->next = c->next;
        else h->calls = c->next;
        if (c->next) c->next->prev = c->prev;
        c->submitted = 0;
    }
    pthread_mutex_unlock(&h->mu);
}

/* Per-call bookkeeping of the events, shared by unary and streaming. */
typedef struct {
    int n;
    strbuf *text;     /* per completion */
    int32_t **tokens; /* per completion, when return_tokens */
    int *n_tokens, *cap_tokens;
    gen_finish *finish;
    int *completion_tokens;
    double *last_token_ms;
    int prompt_tokens;
    double queue_ms, ttft_ms, total_ms;
    double t_submit;
    int got_first;
    int n_finished;
    int any_error;
} call_state;

static int state_init(call_state *cs, int n, double t_submit) {
    memset(cs, 0, sizeof *cs);
    cs->n = n;
    cs->t_submit = t_submit;
    cs->text = calloc((size_t)n, sizeof *cs->text);
    cs->tokens = calloc((size_t)n, sizeof *cs->tokens);
    cs->n_tokens = calloc((size_t)n, sizeof *cs->n_tokens);
    cs->cap_tokens = calloc((size_t)n, sizeof *cs->cap_tokens);
    cs->finish = calloc((size_t)n, sizeof *cs->finish);
    cs->completion_tokens = calloc((size_t)n, sizeof *cs->completion_tokens);
    cs->last_token_ms = calloc((size_t)n, sizeof *cs->last_token_ms);
    if (!cs->text || !cs->tokens || !cs->n_tokens || !cs->cap_tokens || !cs->finish ||
        !cs->completion_tokens || !cs->last_token_ms)
        return -1;
    for (int i = 0; i < n; i++) cs->finish[i] = GEN_FINISH_ERROR;
    return 0;
}

static void state_free(call_state *cs) {
    for (int i = 0; cs->text && i < cs->n; i++) free(cs->text[i].p);
    for (int i = 0; cs->tokens && i < cs->n; i++) free(cs->tokens[i]);
    free(cs->text);
    free(cs->tokens);
    free(cs->n_tokens);
    free(cs->cap_tokens);
    free(cs->finish);
    free(cs->completion_tokens);
    free(cs->last_token_ms);
}

/* Account one event: metrics, usage, timings. Returns the completion
 * index, or -1 for an index out of range. */
static int state_event(call_state *cs, srv *s, const engine_event *ev) {
    int i = ev->index;
    if (i < 0 || i >= cs->n) return -1;
    double t = now_ms();
    if (ev->type == ENGINE_EV_TOKEN) {
        if (!cs->got_first) {
            cs->got_first = 1;
            srv_hist_observe(&s->metrics.ttft_ms, t - cs->t_submit);
        }
        if (cs->last_token_ms[i] > 0)
            srv_hist_observe(&s->metrics.itl_ms, t - cs->last_token_ms[i]);
        cs->last_token_ms[i] = t;
    } else {
        cs->finish[i] = ev->finish;
        cs->completion_tokens[i] = ev->completion_tokens;
        cs->prompt_tokens = ev->prompt_tokens;
        if (i == 0 || cs->n_finished == 0) {
            cs->queue_ms = ev->queue_ms;
            cs->ttft_ms = ev->ttft_ms;
        }
        if (ev->total_ms > cs->total_ms) cs->total_ms = ev->total_ms;
        if (ev->finish == GEN_FINISH_ERROR) cs->any_error = 1;
        cs->n_finished++;
    }
    return i;
}

static int state_add_token(call_state *cs, int i, int32_t tok) {
    if (cs->n_tokens[i] == cs->cap_tokens[i]) {
        int cap = cs->cap_tokens[i] ? cs->cap_tokens[i] * 2 : 64;
        int32_t *p = realloc(cs->tokens[i], (size_t)cap * sizeof *p);
        if (!p) return -1;
        cs->tokens[i] = p;
        cs->cap_tokens[i] = cap;
    }
    cs->tokens[i][cs->n_tokens[i]++] = tok;
    return 0;
}

static int state_completion_tokens(const call_state *cs) {
    int sum = 0;
    for (int i = 0; i < cs->n; i++) sum += cs->completion_tokens[i];
    return sum;
}

static cJSON *usage_json(const call_state *cs) {
    cJSON *u = cJSON_CreateObject();
    int completion = state_completion_tokens(cs);
    cJSON_AddNumberToObject(u, "prompt_tokens", cs->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", completion);
    cJSON_AddNumberToObject(u, "total_tokens", cs->prompt_tokens + completion);
    return u;
}

static cJSON *timings_json(const call_state *cs) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "queue_ms", round(cs->queue_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "ttft_ms", round(cs->ttft_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "total_ms", round(cs->total_ms * 1000) / 1000);
    return t;
}

static cJSON *ids_json(const int32_t *ids, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* The head shared by every OpenAI object. */
static cJSON *openai_object(const char *id, const char *object, long created, const char *model) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    return o;
}

typedef struct {
    http_call *c;
    japi_request *jr;
    call_state cs;
    engine_stream *st;
    char id[64];
    long created;
    int deadline_hit;
} call_ctx;

/* Next event with the call's deadline applied: 1 = event, -1 = the stream
 * ended. On the deadline the request is cancelled and its remaining
 * (cancelled) events are still read. */
static int next_event(call_ctx *x, engine_event *ev) {
    int limit = x->c->s->cfg.request_timeout_ms;
    for (;;) {
        int slice = HTTP_WAIT_SLICE_MS;
        if (limit > 0 && !x->deadline_hit) {
            double left = x->c->t_arrival + limit - now_ms();
            if (left <= 0) {
                x->deadline_hit = 1;
                engine_cancel(x->c->s->eng, x->c->engine_id);
                continue;
            }
            if (left < slice) slice = (int)left + 1;
        }
        int rc = engine_stream_next(x->st, ev, slice);
        if (rc != 0) return rc;
    }
}

static void unary_call(call_ctx *x) {
    http_call *c = x->c;
    call_state *cs = &x->cs;
    engine_event ev;
    int oom = 0;
    while (next_event(x, &ev) == 1) {
        int i = state_event(cs, c->s, &ev);
        if (i >= 0 && ev.text && ev.text_len) strbuf_putn(&cs->text[i], ev.text, ev.text_len);
        if (i >= 0 && ev.type == ENGINE_EV_TOKEN && x->jr->return_tokens &&
            state_add_token(cs, i, ev.token))
            oom = 1;
        engine_event_clear(&ev);
    }
    engine_stream_free(x->st);
    x->st = NULL;
    calls_unregister(c);
    srv_hist_observe(&c->s->metrics.e2e_ms, now_ms() - cs->t_submit);
    for (int i = 0; i < cs->n; i++) oom |= cs->text[i].oom;

    int cancelled = 0;
    for (int i = 0; i < cs->n; i++) cancelled |= cs->finish[i] == GEN_FINISH_CANCELLED;
    if (x->deadline_hit && cancelled) {
        call_done(c, SRV_DEADLINE_EXCEEDED);
        reply_error(c->aio, 504, "deadline_exceeded", 0, NULL,
                    "the request did not finish within server.request_timeout_ms (%d ms)",
                    c->s->cfg.request_timeout_ms);
        return;
    }
    if (cancelled) {
        call_done(c, SRV_UNAVAILABLE);
        reply_error(c->aio, 503, "shutting_down", 0, NULL,
                    "the request was cancelled: the server is shutting down");
        return;
    }
    if (cs->any_error || oom) {
        call_done(c, SRV_INTERNAL);
        reply_error(c->aio, 500, "internal_error", 0, NULL,
                    oom ? "out of memory" : "generation failed inside the engine");
        return;
    }

    cJSON *root;
    const char *model = x->c->h->model_name;
    if (c->kind == JAPI_GENERATE) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "text", cs->text[0].p ? cs->text[0].p : "");
        if (x->jr->return_tokens)
            cJSON_AddItemToObject(root, "tokens", ids_json(cs->tokens[0], cs->n_tokens[0]));
        cJSON_AddStringToObject(root, "finish_reason", finish_name(c->kind, cs->finish[0]));
        if (cs->n > 1) {
            cJSON *arr = cJSON_AddArrayToObject(root, "completions");
            for (int i = 0; i < cs->n; i++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "index", i);
                cJSON_AddStringToObject(o, "text", cs->text[i].p ? cs->text[i].p : "");
                if (x->jr->return_tokens)
                    cJSON_AddItemToObject(o, "tokens", ids_json(cs->tokens[i], cs->n_tokens[i]));
                cJSON_AddStringToObject(o, "finish_reason", finish_name(c->kind, cs->finish[i]));
                cJSON_AddItemToArray(arr, o);
            }
        }
        cJSON_AddItemToObject(root, "usage", usage_json(cs));
        cJSON_AddItemToObject(root, "timings", timings_json(cs));
    } else {
        int chat = c->kind == JAPI_CHAT;
        root =
            openai_object(x->id, chat ? "chat.completion" : "text_completion", x->created, model);
        cJSON *choices = cJSON_AddArrayToObject(root, "choices");
        for (int i = 0; i < cs->n; i++) {
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", i);
            const char *t = cs->text[i].p ? cs->text[i].p : "";
            if (chat) {
                cJSON *m = cJSON_AddObjectToObject(ch, "message");
                cJSON_AddStringToObject(m, "role", "assistant");
                cJSON_AddStringToObject(m, "content", t);
            } else {
                cJSON_AddStringToObject(ch, "text", t);
            }
            cJSON_AddNullToObject(ch, "logprobs");
            cJSON_AddStringToObject(ch, "finish_reason", openai_finish(cs->finish[i]));
            cJSON_AddItemToArray(choices, ch);
        }
        cJSON_AddItemToObject(root, "usage", usage_json(cs));
    }
    char *txt = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!txt) {
        call_done(c, SRV_INTERNAL);
        reply_error(c->aio, 500, "internal_error", 0, NULL, "out of memory");
        return;
    }
    call_done(c, SRV_OK);
    reply_json(c->aio, 200, txt);
    cJSON_free(txt);
}

/* ---- streaming ---- */

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
        if (rv == 0) {
            watch_arm(c);
        } else {
            atomic_store(&c->peer_gone, 1);
            engine_cancel(c->s->eng, c->engine_id);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static int stream_write(http_call *c, const char *p, size_t n) {
    if (atomic_load(&c->peer_gone)) return NNG_ECLOSED;
    nng_iov iov = {.iov_buf = (void *)p, .iov_len = n};
    nng_aio_set_iov(c->wr, 1, &iov);
    nng_aio_set_timeout(c->wr, HTTP_WRITE_TIMEOUT_MS);
    nng_http_conn_write_all(c->conn, c->wr);
    nng_aio_wait(c->wr);
    int rv = nng_aio_result(c->wr);
    if (rv != 0) atomic_store(&c->peer_gone, 1);
    return rv;
}

/* One SSE event (as JSON) for a piece of text or a finish. */
static cJSON *stream_chunk(call_ctx *x, int i, const char *text, const engine_event *fin,
                           const int32_t *tok) {
    http_call *c = x->c;
    if (c->kind == JAPI_GENERATE) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddStringToObject(o, "text", text ? text : "");
        if (tok && x->jr->return_tokens) cJSON_AddItemToObject(o, "tokens", ids_json(tok, 1));
        if (fin) {
            cJSON_AddStringToObject(o, "finish_reason", finish_name(c->kind, fin->finish));
            cJSON *u = cJSON_AddObjectToObject(o, "usage");
            cJSON_AddNumberToObject(u, "prompt_tokens", fin->prompt_tokens);
            cJSON_AddNumberToObject(u, "completion_tokens", fin->completion_tokens);
            cJSON_AddNumberToObject(u, "total_tokens", fin->prompt_tokens + fin->completion_tokens);
            cJSON *t = cJSON_AddObjectToObject(o, "timings");
            cJSON_AddNumberToObject(t, "queue_ms", round(fin->queue_ms * 1000) / 1000);
            cJSON_AddNumberToObject(t, "ttft_ms", round(fin->ttft_ms * 1000) / 1000);
            cJSON_AddNumberToObject(t, "total_ms", round(fin->total_ms * 1000) / 1000);
        }
        return o;
    }
    int chat = c->kind == JAPI_CHAT;
    cJSON *o = openai_object(x->id, chat ? "chat.completion.chunk" : "text_completion", x->created,
                             c->h->model_name);
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

static void stream_event(call_ctx *x, strbuf *out, engine_event *ev) {
    int i = state_event(&x->cs, x->c->s, ev);
    if (i < 0) return;
    if (ev->type == ENGINE_EV_TOKEN) {
        /* A token whose text is held back (incomplete UTF-8, a possible
         * stop string) is sent with a later one, except to /generate
         * clients that asked for the ids. */
        if (ev->text_len || (x->c->kind == JAPI_GENERATE && x->jr->return_tokens))
            hb_event(out, stream_chunk(x, i, ev->text ? ev->text : "", NULL, &ev->token));
        return;
    }
    if (ev->text_len) hb_event(out, stream_chunk(x, i, ev->text, NULL, NULL));
    hb_event(out, stream_chunk(x, i, x->c->kind == JAPI_CHAT ? NULL : "", ev, NULL));
}

static void stream_call(call_ctx *x) {
    http_call *c = x->c;
    call_state *cs = &x->cs;
    int status = SRV_OK;

    /* Take the connection over; nng forgets it (and the request). */
    nng_http_hijack(c->conn);
    nng_aio_set_output(c->aio, 0, NULL);
    nng_aio_finish(c->aio, 0);
    c->aio = NULL;

    watch_arm(c);

    strbuf out = {0};
    strbuf_puts(&out, "HTTP/1.1 200 OK\r\n"
                      "Content-Type: text/event-stream; charset=utf-8\r\n"
                      "Cache-Control: no-cache\r\n"
                      "X-Accel-Buffering: no\r\n"
                      "Connection: close\r\n\r\n");
    if (c->kind == JAPI_CHAT) {
        for (int i = 0; i < cs->n; i++) {
            cJSON *o = stream_chunk(x, i, NULL, NULL, NULL);
            cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0),
                                           "delta");
            cJSON_AddStringToObject(d, "role", "assistant");
            cJSON_AddStringToObject(d, "content", "");
            hb_event(&out, o);
        }
    }
    if (out.oom || stream_write(c, out.p, out.len) != 0) {
        status = SRV_CANCELLED;
        goto done;
    }

    engine_event ev;
    for (;;) {
        out.len = 0;
        int rc = next_event(x, &ev);
        if (rc != 1) break;
        stream_event(x, &out, &ev);
        engine_event_clear(&ev);
        /* Send what else is ready in the same write. */
        while (out.len < 65536 && engine_stream_next(x->st, &ev, 0) == 1) {
            stream_event(x, &out, &ev);
            engine_event_clear(&ev);
        }
        if (out.oom) {
            status = SRV_INTERNAL;
            break;
        }
        if (out.len && stream_write(c, out.p, out.len) != 0) {
            status = SRV_CANCELLED;
            break;
        }
    }
    if (status == SRV_OK) {
        out.len = 0;
        int cancelled = 0;
        for (int i = 0; i < cs->n; i++) cancelled |= cs->finish[i] == GEN_FINISH_CANCELLED;
        if (x->deadline_hit && cancelled) {
            status = SRV_DEADLINE_EXCEEDED;
            char *e = error_json(504, "deadline_exceeded",
                                 "the request did not finish within server.request_timeout_ms");
            if (e) {
                strbuf_puts(&out, "data: ");
                strbuf_puts(&out, e);
                strbuf_puts(&out, "\n\n");
                cJSON_free(e);
            }
        } else if (atomic_load(&c->peer_gone)) {
            status = SRV_CANCELLED;
        } else if (cancelled) {
            status = SRV_UNAVAILABLE;
        } else if (cs->any_error) {
            status = SRV_INTERNAL;
        }
        if (c->kind != JAPI_GENERATE && x->jr->include_usage) {
            cJSON *o = openai_object(
                x->id, c->kind == JAPI_CHAT ? "chat.completion.chunk" : "text_completion",
                x->created, c->h->model_name);
            cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToObject(o, "usage", usage_json(cs));
            hb_event(&out, o);
        }
        strbuf_puts(&out, "data: [DONE]\n\n");
        if (!out.oom && status != SRV_CANCELLED) stream_write(c, out.p, out.len);
    }

done:
    /* Freeing the stream cancels the request if it still runs (the client
     * went away): its blocks are released now. */
    engine_stream_free(x->st);
    x->st = NULL;
    calls_unregister(c);
    srv_hist_observe(&c->s->metrics.e2e_ms, now_ms() - cs->t_submit);
    call_done(c, status);
    free(out.p);

    if (c->rd) {
        pthread_mutex_lock(&c->mu);
        c->rd_closing = 1;
        pthread_mutex_unlock(&c->mu);
        nng_aio_stop(c->rd);
    }
    if (c->wr) nng_aio_stop(c->wr);
    nng_http_conn_close(c->conn);
    c->conn = NULL;
    if (c->rd) nng_aio_free(c->rd);
    if (c->wr) nng_aio_free(c->wr);
    c->rd = c->wr = NULL;
    nng_http_req_free(c->req);
    c->req = NULL;
}

static void run_call(http_call *c) {
    srv *s = c->s;
    char err[1024];
    char *body = NULL;
    int rv = read_body(c, &body);
    if (rv != 0) {
        /* The client is gone or too slow: nothing to answer to. */
        call_done(c, SRV_CANCELLED);
        nng_aio_finish(c->aio, rv);
        return;
    }

    call_ctx x = {.c = c};
    japi_request jr;
    if (japi_parse(c->kind, body, c->body_len, &jr, err, sizeof err) != 0) {
        free(body);
        call_done(c, SRV_INVALID_ARGUMENT);
        reply_error(c->aio, 400,
                    strncmp(err, "invalid JSON", 12) == 0 || strncmp(err, "request body", 12) == 0
                        ? "invalid_json"
                        : "invalid_parameter",
                    0, NULL, "%s", err);
        return;
    }
    free(body);
    x.jr = &jr;

    srv_request sr;
    memset(&sr, 0, sizeof sr);
    int st = srv_prepare(s, &jr.gen, &sr, err, sizeof err);
    if (st != SRV_OK) {
        const char *code;
        int hs = status_to_http(st, &code);
        call_done(c, st);
        /* Sampling fields sit at the top level of the JSON bodies. */
        const char *msg = strncmp(err, "sampling.", 9) == 0 ? err + 9 : err;
        reply_error(c->aio, hs, code, 0, NULL, "%s", msg);
        japi_request_free(&jr);
        return;
    }

    int n = sr.req.n > 0 ? sr.req.n : 1;
    double t_submit = now_ms();
    if (state_init(&x.cs, n, t_submit) != 0) {
        call_done(c, SRV_INTERNAL);
        reply_error(c->aio, 500, "internal_error", 0, NULL, "out of memory");
        goto out;
    }
    int64_t id = 0;
    st = srv_submit(s, &sr, &x.st, &id, err, sizeof err);
    if (st != SRV_OK) {
        const char *code;
        int hs = status_to_http(st, &code);
        call_done(c, st);
        reply_error(c->aio, hs, code, 0, NULL, "%s", err);
        goto out;
    }
    if (jr.stream &&
        (nng_aio_alloc(&c->wr, NULL, NULL) != 0 || nng_aio_alloc(&c->rd, watch_cb, c) != 0)) {
        engine_stream_free(x.st);
        if (c->wr) nng_aio_free(c->wr);
        c->wr = NULL;
        call_done(c, SRV_INTERNAL);
        reply_error(c->aio, 500, "internal_error", 0, NULL, "out of memory");
        goto out;
    }
    /* Registered: srv_http_stop may cancel it (and abort a stalled write)
     * from now on. */
    calls_register(c, id);
    x.created = (long)time(NULL);
    snprintf(x.id, sizeof x.id, "%s-%lx%04" PRIx64, c->kind == JAPI_CHAT ? "chatcmpl" : "cmpl",
             c->h->created, (uint64_t)id);

    if (jr.stream) stream_call(&x);
    else unary_call(&x);

out:
    state_free(&x.cs);
    srv_request_free(&sr);
    japi_request_free(&jr);
}

static void *call_main(void *arg) {
    http_call *c = arg;
    srv_http *h = c->h;
    run_call(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
    pthread_mutex_lock(&h->mu);
    h->n_calls--;
    h->busy--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Start a worker for a generation call. Returns 0, or -1 when none could
 * be started (the caller answers). */
static int start_call(srv_http *h, nng_aio *aio, nng_http_req *req, nng_http_conn *conn,
                      japi_kind kind, size_t body_len, int expect_continue, double t_arrival) {
    http_call *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->h = h;
    c->s = h->s;
    c->aio = aio;
    c->req = req;
    c->conn = conn;
    c->kind = kind;
    c->body_len = body_len;
    c->expect_continue = expect_continue;
    c->t_arrival = t_arrival;
    pthread_mutex_init(&c->mu, NULL);

    pthread_mutex_lock(&h->mu);
    if (h->n_calls >= HTTP_MAX_CALLS) {
        pthread_mutex_unlock(&h->mu);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return -1;
    }
    h->n_calls++;
    h->busy++;
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_add(&h->s->active_calls, 1); /* call_done takes it back */

    pthread_attr_t attr;
    pthread_t tid;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&tid, &attr, call_main, c);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        atomic_fetch_sub(&h->s->active_calls, 1);
        pthread_mutex_lock(&h->mu);
        h->n_calls--;
        h->busy--;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * Routing
 * ------------------------------------------------------------------- */

/* The key from "Authorization: Bearer KEY" (or "X-API-Key: KEY"), or NULL. */
static const char *presented_key(nng_http_req *req) {
    const char *a = nng_http_req_get_header(req, "Authorization");
    if (a) {
        while (*a == ' ') a++;
        if (strncasecmp(a, "Bearer ", 7) == 0) {
            a += 7;
            while (*a == ' ') a++;
            return a;
        }
        return NULL;
    }
    return nng_http_req_get_header(req, "X-API-Key");
}

static int is_get(const char *method) {
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

static void handle_generation(srv_http *h, nng_aio *aio, nng_http_req *req, nng_http_conn *conn,
                              japi_kind kind, double t_arrival) {
    srv *s = h->s;
    const char *te = nng_http_req_get_header(req, "Transfer-Encoding");
    const char *cl = nng_http_req_get_header(req, "Content-Length");
    if (atomic_load(&s->draining)) {
        srv_metrics_count_status(&s->metrics, SRV_UNAVAILABLE);
        reply_error(aio, 503, "draining", 1, NULL, "the server is shutting down");
        return;
    }
    if (te && !cl) {
        srv_metrics_count_status(&s->metrics, SRV_INVALID_ARGUMENT);
        reply_error(aio, 411, "length_required", 1, NULL,
                    "chunked request bodies are not supported; send Content-Length");
        return;
    }
    size_t len = 0;
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        while (*end == ' ' || *end == '\t') end++;
        if (errno || end == cl || *end || cl[0] == '-') {
            srv_metrics_count_status(&s->metrics, SRV_INVALID_ARGUMENT);
            reply_error(aio, 400, "invalid_header", 1, NULL, "invalid Content-Length '%s'", cl);
            return;
        }
        if (v > (unsigned long long)s->cfg.max_message_bytes) {
            srv_metrics_count_status(&s->metrics, SRV_RESOURCE_EXHAUSTED);
            reply_error(aio, 413, "body_too_large", 1, NULL,
                        "request body of %llu bytes exceeds server.max_message_bytes (%d)", v,
                        s->cfg.max_message_bytes);
            return;
        }
        len = (size_t)v;
    }
    const char *expect = nng_http_req_get_header(req, "Expect");
    int cont = expect && strcasecmp(expect, "100-continue") == 0;
    if (start_call(h, aio, req, conn, kind, len, cont, t_arrival) != 0) {
        srv_metrics_count_status(&s->metrics, SRV_UNAVAILABLE);
        reply_error(aio, 503, "overloaded", 1, NULL, "too many HTTP calls in flight");
    }
}

static void route(srv_http *h, nng_aio *aio, nng_http_req *req, nng_http_conn *conn) {
    double t_arrival = now_ms();
    const char *method = nng_http_req_get_method(req);
    const char *uri = nng_http_req_get_uri(req);
    char path[1024];
    size_t n = strcspn(uri, "?#");
    if (n >= sizeof path) n = sizeof path - 1;
    memcpy(path, uri, n);
    path[n] = 0;
    while (n > 1 && path[n - 1] == '/') path[--n] = 0;

    static const struct {
        const char *path;
        int post; /* 1: POST, 0: GET/HEAD */
        int kind; /* japi_kind, or -1 */
    } routes[] = {
        {"/generate", 1, JAPI_GENERATE},
        {"/v1/completions", 1, JAPI_COMPLETIONS},
        {"/v1/chat/completions", 1, JAPI_CHAT},
        {"/v1/models", 0, -1},
        {"/health", 0, -1},
        {"/metrics", 0, -1},
    };
    int r = -1;
    const char *model_id = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(path, routes[i].path) == 0) r = (int)i;
    if (r < 0 && strncmp(path, "/v1/models/", 11) == 0) {
        r = 3;
        model_id = path + 11;
    }
    /* An answer that leaves a request body unread must close the
     * connection, or nng would parse the body as the next request. */
    int has_body = nng_http_req_get_header(req, "Content-Length") != NULL ||
                   nng_http_req_get_header(req, "Transfer-Encoding") != NULL;
    if (r < 0) {
        reply_error(aio, 404, "not_found", has_body, NULL, "no route for %s %s", method, path);
        return;
    }
    int want_post = routes[r].post;
    if (want_post ? strcmp(method, "POST") != 0 : !is_get(method)) {
        reply_error(aio, 405, "method_not_allowed", has_body, want_post ? "POST" : "GET, HEAD",
                    "%s %s is not allowed; use %s", method, path, want_post ? "POST" : "GET");
        return;
    }
    if (strcmp(routes[r].path, "/health") != 0 &&
        srv_check_key(h->s, presented_key(req)) != SRV_OK) {
        if (want_post) srv_metrics_count_status(&h->s->metrics, SRV_UNAUTHENTICATED);
        reply_error(aio, 401, "invalid_api_key", has_body, NULL,
                    "missing or wrong API key (send Authorization: Bearer KEY)");
        return;
    }
    if (want_post) {
        handle_generation(h, aio, req, conn, (japi_kind)routes[r].kind, t_arrival);
    } else if (strcmp(path, "/health") == 0) {
        handle_health(h, aio);
    } else if (strcmp(path, "/metrics") == 0) {
        handle_metrics(h, aio);
    } else {
        handle_models(h, aio, model_id);
    }
}

/* nng's handler callback (an nng task thread). */
static void http_handle(nng_aio *aio) {
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_handler *hd = nng_aio_get_input(aio, 1);
    nng_http_conn *conn = nng_aio_get_input(aio, 2);
    srv_http *h = nng_http_handler_get_data(hd);

    pthread_mutex_lock(&h->mu);
    if (h->stopping) {
        pthread_mutex_unlock(&h->mu);
        reply_error(aio, 503, "shutting_down", 1, NULL, "the server is shutting down");
        return;
    }
    h->busy++;
    pthread_mutex_unlock(&h->mu);

    atomic_fetch_add(&h->s->metrics.http_requests, 1);
    route(h, aio, req, conn);

    pthread_mutex_lock(&h->mu);
    h->busy--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void http_state_free(void *arg) {
    srv_http *h = arg;
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static void model_name_from_path(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!*base) base = "model";
    size_t n = strlen(base);
    if (n >= cap) n = cap - 1;
    memcpy(out, base, n);
    out[n] = 0;
    if (n > 5 && strcmp(out + n - 5, ".gguf") == 0) out[n - 5] = 0;
}

int srv_http_start(srv *s, const char *url, char *err, size_t errlen) {
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->s = s;
    h->created = (long)time(NULL);
    model_name_from_path(s->cfg.model_path, h->model_name, sizeof h->model_name);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);

    nng_url *u = NULL;
    nng_http_handler *hd = NULL;
    int rv = nng_url_parse(&u, url);
    if (rv != 0) {
        snprintf(err, errlen, "%s: bad HTTP address: %s", url, nng_strerror(rv));
        http_state_free(h);
        return -1;
    }
    if (strcmp(u->u_scheme, "http") != 0) {
        snprintf(err, errlen, "%s: the HTTP address must start with http://", url);
        nng_url_free(u);
        http_state_free(h);
        return -1;
    }
    const char *step = "nng_http_server_hold";
    rv = nng_http_server_hold(&h->server, u);
    nng_url_free(u);
    if (rv != 0) goto fail_nofree;
    /* One handler for every method under "/": routing is ours. */
    step = "nng_http_handler_alloc";
    if ((rv = nng_http_handler_alloc(&hd, "/", http_handle)) != 0) goto fail;
    if ((rv = nng_http_handler_set_method(hd, NULL)) != 0 ||
        (rv = nng_http_handler_set_tree(hd)) != 0 ||
        (rv = nng_http_handler_collect_body(hd, false, 0)) != 0) {
        nng_http_handler_free(hd);
        goto fail;
    }
    if ((rv = nng_http_handler_set_data(hd, h, http_state_free)) != 0) {
        nng_http_handler_free(hd);
        goto fail;
    }
    step = "nng_http_server_add_handler";
    if ((rv = nng_http_server_add_handler(h->server, hd)) != 0) {
        /* The handler's destructor frees h. */
        nng_http_server_release(h->server);
        nng_http_handler_free(hd);
        snprintf(err, errlen, "%s: %s: %s", url, step, nng_strerror(rv));
        return -1;
    }
    step = "listen";
    if ((rv = nng_http_server_start(h->server)) != 0) {
        /* The server owns the handler now; releasing it frees both. */
        snprintf(err, errlen, "%s: %s: %s", url, step, nng_strerror(rv));
        nng_http_server_release(h->server);
        return -1;
    }
    s->http = h;
    return 0;

fail:
    nng_http_server_release(h->server);
fail_nofree:
    snprintf(err, errlen, "%s: %s: %s", url, step, nng_strerror(rv));
    http_state_free(h);
    return -1;
}

void srv_http_stop(srv *s) {
    srv_http *h = s->http;
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    for (http_call *c = h->calls; c; c = c->next) {
        engine_cancel(s->eng, c->engine_id);
        if (c->wr) nng_aio_cancel(c->wr); /* a client that stopped reading */
    }
    pthread_mutex_unlock(&h->mu);

    /* No new connection or callback after this; hijacked streams are ours
     * and end through the cancellations above. */
    nng_http_server_stop(h->server);
    pthread_mutex_lock(&h->mu);
    while (h->busy > 0) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    s->http = NULL;
    /* Frees h through the handler's destructor once nng lets go of it. */
    nng_http_server_release(h->server);
}
