/*
 * http.c - the HTTP server of the front end: nng's HTTP server in front of
 * the engine; listener, routing, worker threads, request bodies, error
 * replies, and the cheap routes. The generation endpoints themselves live
 * in server/http_call.c.
 *
 * Routes (docs/http.md): POST /generate (the course lab's JSON API),
 * POST /v1/completions and POST /v1/chat/completions (OpenAI), GET
 * /v1/models, GET /health, GET /metrics. One catch-all handler takes every
 * method and path so that 404 and 405 get the same JSON error body as every
 * other failure, instead of nng's HTML pages.
 *
 * Threads: nng calls the handler on one of its task threads, which must not
 * block. Cheap routes (health, models, metrics, early errors) answer there.
 * A generation call gets its own worker thread (http_call_run), which reads
 * the body (so it can refuse an oversized one with 413 before reading it),
 * validates, submits and relays the call.
 *
 * Shutdown (srv_http_stop): no new call starts, the calls in flight are
 * cancelled through their relays, their workers are awaited, then the
 * listener closes. The srv_http state itself is freed by nng's handler
 * destructor, after the last callback that could see it has returned.
 */
#include <errno.h>
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

#include "server/http_call.h"

#define HTTP_READ_TIMEOUT_MS 30000 /* a request body must arrive within this */
#define HTTP_MAX_CALLS 4096        /* worker threads at once; more get 503 */

struct srv_http {
    srv *s;
    nng_http_server *server;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy;    /* handler callbacks and workers that may touch s */
    int n_calls; /* workers alive */
    int stopping;
    http_call *calls; /* registered workers, for cancelling at stop */
    char model_name[256];
    long created; /* start time (unix seconds) for /v1/models */
};

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

char *http_error_json(int http_status, const char *code, const char *msg) {
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

nng_http_res *http_response(int status, const char *ctype, const char *body, size_t len, int close,
                            const char *allow) {
    nng_http_res *res;
    if (nng_http_res_alloc(&res) != 0) return NULL;
    int rv = nng_http_res_set_status(res, (uint16_t)status);
    if (rv == 0 && ctype) rv = nng_http_res_set_header(res, "Content-Type", ctype);
    if (rv == 0 && close) rv = nng_http_res_set_header(res, "Connection", "close");
    if (rv == 0 && allow) rv = nng_http_res_set_header(res, "Allow", allow);
    if (rv == 0 && status == 401) rv = nng_http_res_set_header(res, "WWW-Authenticate", "Bearer");
    if (rv == 0) rv = nng_http_res_copy_data(res, body, len);
    if (rv != 0) {
        nng_http_res_free(res);
        return NULL;
    }
    return res;
}

/* close asks nng to close the connection afterwards (the body was not
 * read). */
void http_reply(nng_aio *aio, int status, const char *ctype, const char *body, size_t len,
                int close, const char *allow) {
    nng_http_res *res = http_response(status, ctype, body, len, close, allow);
    if (!res) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void reply_json(nng_aio *aio, int status, const char *json) {
    http_reply(aio, status, "application/json", json, strlen(json), 0, NULL);
}

void http_reply_error(nng_aio *aio, int status, const char *code, int close, const char *allow,
                      const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *body = http_error_json(status, code, msg);
    if (!body) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    http_reply(aio, status, "application/json", body, strlen(body), close, allow);
    cJSON_free(body);
}

int http_status_of(int st, const char **code) {
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
 * Cheap GET routes (answered on nng's thread)
 * ------------------------------------------------------------------- */

static void handle_health(srv_http *h, nng_aio *aio) {
    if (atomic_load(&h->s->draining)) reply_json(aio, 503, "{\"status\":\"draining\"}");
    else reply_json(aio, 200, "{\"status\":\"ok\"}");
}

static void handle_metrics(srv_http *h, nng_aio *aio) {
    char *text;
    size_t len;
    srv *s = h->s;
    srv_metrics_gauges g = {.active_calls = atomic_load(&s->active_calls),
                            .connections = atomic_load(&s->connections),
                            .draining = atomic_load(&s->draining)};
    if (srv_metrics_render(&s->metrics, &g, s->eng, &text, &len) != 0) {
        http_reply_error(aio, 500, "internal_error", 0, NULL, "out of memory");
        return;
    }
    http_reply(aio, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 0, NULL);
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
            http_reply_error(aio, 404, "model_not_found", 0, NULL, "model '%s' does not exist",
                             which);
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
        http_reply_error(aio, 500, "internal_error", 0, NULL, "out of memory");
        return;
    }
    reply_json(aio, 200, txt);
    cJSON_free(txt);
}

/* ---------------------------------------------------------------------
 * Generation calls (one worker thread each; server/http_call.c)
 * ------------------------------------------------------------------- */

const char *http_model_name(const srv_http *h) { return h->model_name; }

long http_created(const srv_http *h) { return h->created; }

int http_read_body(http_call *c, char **out) {
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

void http_calls_register(http_call *c) {
    srv_http *h = c->h;
    pthread_mutex_lock(&h->mu);
    c->registered = 1;
    c->next = h->calls;
    if (h->calls) h->calls->prev = c;
    h->calls = c;
    int stopping = h->stopping;
    pthread_mutex_unlock(&h->mu);
    if (stopping) relay_cancel(c->r, RELAY_END_SHUTDOWN);
}

void http_calls_unregister(http_call *c) {
    srv_http *h = c->h;
    pthread_mutex_lock(&h->mu);
    if (c->registered) {
        if (c->prev) c->prev->next = c->next;
        else h->calls = c->next;
        if (c->next) c->next->prev = c->prev;
        c->registered = 0;
    }
    pthread_mutex_unlock(&h->mu);
}

static void call_free(http_call *c) {
    relay_free(c->r);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* A worker is done with h. */
static void worker_leave(srv_http *h) {
    pthread_mutex_lock(&h->mu);
    h->n_calls--;
    h->busy--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void *call_main(void *arg) {
    http_call *c = arg;
    srv_http *h = c->h;
    http_call_run(c);
    call_free(c);
    worker_leave(h);
    return NULL;
}

static http_call *call_new(srv_http *h, nng_aio *aio, nng_http_req *req, nng_http_conn *conn,
                           japi_kind kind, double t_arrival) {
    http_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    int limit = h->s->net.request_timeout_ms;
    c->r = relay_create(h->s, limit > 0 ? t_arrival + limit : 0);
    if (!c->r) {
        free(c);
        return NULL;
    }
    c->h = h;
    c->s = h->s;
    c->aio = aio;
    c->req = req;
    c->conn = conn;
    c->kind = kind;
    c->t_arrival = t_arrival;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

/* Start a worker for a generation call. Returns 0, or -1 when none could
 * be started (counted as UNAVAILABLE; the caller answers). */
static int start_call(srv_http *h, http_call *c) {
    pthread_mutex_lock(&h->mu);
    int room = h->n_calls < HTTP_MAX_CALLS;
    if (room) {
        h->n_calls++;
        h->busy++;
    }
    pthread_mutex_unlock(&h->mu);
    if (room) {
        pthread_attr_t attr;
        pthread_t tid;
        int rc = pthread_attr_init(&attr);
        if (rc == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            rc = pthread_create(&tid, &attr, call_main, c);
            pthread_attr_destroy(&attr);
        }
        if (rc == 0) return 0;
        worker_leave(h);
    }
    relay_finish(c->r, SRV_UNAVAILABLE);
    call_free(c);
    return -1;
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
        http_reply_error(aio, 503, "draining", 1, NULL, "the server is shutting down");
        return;
    }
    if (te && !cl) {
        srv_metrics_count_status(&s->metrics, SRV_INVALID_ARGUMENT);
        http_reply_error(aio, 411, "length_required", 1, NULL,
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
            http_reply_error(aio, 400, "invalid_header", 1, NULL, "invalid Content-Length '%s'",
                             cl);
            return;
        }
        if (v > (unsigned long long)s->net.max_message_bytes) {
            srv_metrics_count_status(&s->metrics, SRV_RESOURCE_EXHAUSTED);
            http_reply_error(aio, 413, "body_too_large", 1, NULL,
                             "request body of %llu bytes exceeds server.max_message_bytes (%d)", v,
                             s->net.max_message_bytes);
            return;
        }
        len = (size_t)v;
    }
    const char *expect = nng_http_req_get_header(req, "Expect");
    int cont = expect && strcasecmp(expect, "100-continue") == 0;
    http_call *c = call_new(h, aio, req, conn, kind, t_arrival);
    if (!c) {
        srv_metrics_count_status(&s->metrics, SRV_UNAVAILABLE);
        http_reply_error(aio, 503, "overloaded", 1, NULL, "out of memory");
        return;
    }
    c->body_len = len;
    c->expect_continue = cont;
    if (start_call(h, c) != 0)
        http_reply_error(aio, 503, "overloaded", 1, NULL, "too many HTTP calls in flight");
}

static void route(srv_http *h, nng_aio *aio, nng_http_req *req, nng_http_conn *conn) {
    double t_arrival = relay_now_ms();
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
        http_reply_error(aio, 404, "not_found", has_body, NULL, "no route for %s %s", method, path);
        return;
    }
    int want_post = routes[r].post;
    if (want_post ? strcmp(method, "POST") != 0 : !is_get(method)) {
        http_reply_error(aio, 405, "method_not_allowed", has_body, want_post ? "POST" : "GET, HEAD",
                         "%s %s is not allowed; use %s", method, path, want_post ? "POST" : "GET");
        return;
    }
    if (strcmp(routes[r].path, "/health") != 0 &&
        srv_check_key(h->s, presented_key(req)) != SRV_OK) {
        if (want_post) srv_metrics_count_status(&h->s->metrics, SRV_UNAUTHENTICATED);
        http_reply_error(aio, 401, "invalid_api_key", has_body, NULL,
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
        http_reply_error(aio, 503, "shutting_down", 1, NULL, "the server is shutting down");
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
        relay_cancel(c->r, RELAY_END_SHUTDOWN);
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
