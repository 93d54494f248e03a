/*
 * http.c - the HTTP server of the front end: http/httpd (our HTTP/1.1
 * server) in front of the engine; listener, routing, error replies, and the
 * cheap routes. The generation endpoints themselves live in
 * server/http_call.c.
 *
 * Routes (docs/http.md): POST /generate (the course lab's JSON API),
 * POST /v1/completions and POST /v1/chat/completions (OpenAI), GET
 * /v1/models, GET /health, GET /metrics. httpd hands every complete
 * request to one handler, so 404, 405 and OPTIONS get the same JSON shape
 * as every other answer; httpd answers the transport errors (400, 408,
 * 413, 414, 431, 505, ...) itself in that shape.
 *
 * Threads: the handler runs on one of httpd's worker threads, which may
 * block: a generation call runs there to its end (http_call_run).
 *
 * Shutdown (srv_http_stop): no new call starts, the calls in flight are
 * cancelled through their relays, then httpd_stop waits for the handlers
 * and closes the listener.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/clock.h"
#include "server/http_call.h"

/* How long srv_http_stop lets cancelled handlers finish before httpd cuts
 * their sockets: a cancelled call ends at the next engine step. */
#define HTTP_STOP_TIMEOUT_MS 10000

struct srv_http {
    srv *s;
    httpd *d;
    pthread_mutex_t mu;
    int stopping;
    http_call *calls; /* registered calls, for cancelling at stop */
    char model_name[256];
    long created; /* start time (unix seconds) for /v1/models */
};

/* ---------------------------------------------------------------------
 * Responses
 * ------------------------------------------------------------------- */

int http_reply_json(httpd_req *req, int status, const char *json) {
    return httpd_respond(req, status, "application/json", NULL, 0, json, strlen(json));
}

void http_reply_error(httpd_req *req, int status, const char *code, const char *allow,
                      const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    httpd_header hd[1];
    size_t n = 0;
    if (allow) hd[n++] = (httpd_header){"Allow", allow};
    else if (status == 401) hd[n++] = (httpd_header){"WWW-Authenticate", "Bearer"};
    httpd_respond_error(req, status, code, msg, hd, n);
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
 * Cheap GET routes
 * ------------------------------------------------------------------- */

static void handle_health(srv_http *h, httpd_req *req) {
    if (atomic_load(&h->s->draining)) http_reply_json(req, 503, "{\"status\":\"draining\"}");
    else http_reply_json(req, 200, "{\"status\":\"ok\"}");
}

static void handle_metrics(srv_http *h, httpd_req *req) {
    char *text;
    size_t len;
    srv *s = h->s;
    srv_metrics_gauges g = {.active_calls = atomic_load(&s->active_calls),
                            .connections = atomic_load(&s->connections),
                            .draining = atomic_load(&s->draining)};
    if (srv_metrics_render(&s->metrics, &g, s->eng, &text, &len) != 0) {
        http_reply_error(req, 500, "internal_error", NULL, "out of memory");
        return;
    }
    httpd_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, 0, text, len);
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

static void handle_models(srv_http *h, httpd_req *req, const char *which) {
    cJSON *root;
    if (which) {
        if (!http_model_accepts(h, which)) {
            http_reply_model_not_found(h, req, which);
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
        http_reply_error(req, 500, "internal_error", NULL, "out of memory");
        return;
    }
    http_reply_json(req, 200, txt);
    cJSON_free(txt);
}

/* ---------------------------------------------------------------------
 * Generation calls (on the handler's thread; server/http_call.c)
 * ------------------------------------------------------------------- */

const char *http_model_name(const srv_http *h) { return h->model_name; }

int http_model_accepts(const srv_http *h, const char *asked) {
    return server_model_accepts(h->s->cfg.model_path, asked);
}

void http_reply_model_not_found(const srv_http *h, httpd_req *req, const char *asked) {
    http_reply_error(req, 404, "model_not_found", NULL,
                     "model '%.200s' does not exist; this server serves '%s'", asked,
                     h->model_name);
}

long http_created(const srv_http *h) { return h->created; }

void http_call_cancel(http_call *c, relay_end why) {
    relay_cancel(c->r, why);
    for (int i = 0; i < c->n_extra; i++) relay_cancel(c->extra[i], why);
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
    if (stopping) http_call_cancel(c, RELAY_END_SHUTDOWN);
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

static void handle_generation(srv_http *h, httpd_req *req, japi_kind kind, double t_arrival) {
    srv *s = h->s;
    if (atomic_load(&s->draining)) {
        srv_metrics_count_status(&s->metrics, SRV_UNAVAILABLE);
        http_reply_error(req, 503, "draining", NULL, "the server is shutting down");
        return;
    }
    int limit = s->net.request_timeout_ms;
    http_call c = {.h = h, .s = s, .req = req, .kind = kind};
    c.deadline_at = limit > 0 ? t_arrival + limit : 0;
    c.r = relay_create(s, c.deadline_at);
    if (!c.r) {
        srv_metrics_count_status(&s->metrics, SRV_UNAVAILABLE);
        http_reply_error(req, 503, "overloaded", NULL, "out of memory");
        return;
    }
    http_call_run(&c);
    relay_free(c.r);
}

/* ---------------------------------------------------------------------
 * Routing
 * ------------------------------------------------------------------- */

typedef enum { ROUTE_POST, ROUTE_GET } route_method;

static const struct {
    const char *path;
    route_method method;
    int kind; /* japi_kind of a POST route */
} routes[] = {
    {"/generate", ROUTE_POST, JAPI_GENERATE},
    {"/v1/completions", ROUTE_POST, JAPI_COMPLETIONS},
    {"/v1/chat/completions", ROUTE_POST, JAPI_CHAT},
    {"/v1/models", ROUTE_GET, 0},
    {"/health", ROUTE_GET, 0},
    {"/metrics", ROUTE_GET, 0},
};
enum { ROUTE_MODELS = 3 };

#define ALLOW_POST "POST, OPTIONS"
#define ALLOW_GET "GET, HEAD, OPTIONS"
#define ALLOW_ANY "GET, HEAD, POST, OPTIONS"

/* The key from "Authorization: Bearer KEY" (or "X-API-Key: KEY"), or NULL. */
static const char *presented_key(const httpd_req *req) {
    const char *a = httpd_req_header(req, "Authorization");
    if (a) {
        while (*a == ' ') a++;
        if (strncasecmp(a, "Bearer ", 7) == 0) {
            a += 7;
            while (*a == ' ') a++;
            return a;
        }
        return NULL;
    }
    return httpd_req_header(req, "X-API-Key");
}

/* The route of path (trailing slashes ignored), -1 for none; *model_id
 * points into path for /v1/models/ID. */
static int find_route(char *path, const char **model_id) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') path[--n] = 0;
    *model_id = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(path, routes[i].path) == 0) return (int)i;
    if (strncmp(path, "/v1/models/", 11) == 0) {
        *model_id = path + 11;
        return ROUTE_MODELS;
    }
    return -1;
}

/* OPTIONS (on a route, or "*" for the server): 204 with what is allowed. */
static void handle_options(httpd_req *req, int r) {
    const char *allow = r < 0 ? ALLOW_ANY : routes[r].method == ROUTE_POST ? ALLOW_POST : ALLOW_GET;
    httpd_header hd[1] = {{"Allow", allow}};
    httpd_respond(req, 204, NULL, hd, 1, NULL, 0);
}

static void route(srv_http *h, httpd_req *req) {
    double t_arrival = clock_now_ms();
    const char *method = httpd_req_method(req);
    char path[1024];
    snprintf(path, sizeof path, "%s", httpd_req_path(req));
    int is_options = strcmp(method, "OPTIONS") == 0;
    if (is_options && strcmp(path, "*") == 0) {
        handle_options(req, -1);
        return;
    }
    const char *model_id;
    int r = find_route(path, &model_id);
    if (r < 0) {
        http_reply_error(req, 404, "not_found", NULL, "no route for %s %s", method, path);
        return;
    }
    if (is_options) {
        handle_options(req, r);
        return;
    }
    int post = routes[r].method == ROUTE_POST;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (post ? strcmp(method, "POST") != 0 : !get) {
        http_reply_error(req, 405, "method_not_allowed", post ? ALLOW_POST : ALLOW_GET,
                         "%s %s is not allowed; use %s", method, path, post ? "POST" : "GET");
        return;
    }
    if (strcmp(path, "/health") != 0 && srv_check_key(h->s, presented_key(req)) != SRV_OK) {
        if (post) srv_metrics_count_status(&h->s->metrics, SRV_UNAUTHENTICATED);
        http_reply_error(req, 401, "invalid_api_key", NULL,
                         "missing or wrong API key (send Authorization: Bearer KEY)");
        return;
    }
    if (post) handle_generation(h, req, (japi_kind)routes[r].kind, t_arrival);
    else if (strcmp(path, "/health") == 0) handle_health(h, req);
    else if (strcmp(path, "/metrics") == 0) handle_metrics(h, req);
    else handle_models(h, req, model_id);
}

/* httpd's handler (a worker thread). */
static void http_handle(httpd_req *req, void *user) {
    srv_http *h = user;
    pthread_mutex_lock(&h->mu);
    int stopping = h->stopping;
    pthread_mutex_unlock(&h->mu);
    if (stopping) {
        http_reply_error(req, 503, "shutting_down", NULL, "the server is shutting down");
        return;
    }
    atomic_fetch_add(&h->s->metrics.http_requests, 1);
    route(h, req);
}

/* ---------------------------------------------------------------------
 * Start and stop
 * ------------------------------------------------------------------- */

/* "http://HOST:PORT[/]" (HOST may be "[v6]" or empty for any address) into
 * host (NULL = any) and port. Returns 0, or -1 with a message. */
static int parse_url(const char *url, char *host, size_t cap, const char **host_out, int *port,
                     char *err, size_t errlen) {
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "%s: the HTTP address must start with http://", url);
        return -1;
    }
    const char *p = url + 7, *hend, *colon;
    if (*p == '[') {
        hend = strchr(p, ']');
        colon = hend ? hend + 1 : NULL;
        p++;
    } else {
        colon = strrchr(p, ':');
        hend = colon;
    }
    char *end = NULL;
    long v = colon && *colon == ':' ? strtol(colon + 1, &end, 10) : -1;
    if (!hend || v < 0 || v > 65535 || end == colon + 1 || (*end && strcmp(end, "/") != 0) ||
        (size_t)(hend - p) >= cap) {
        snprintf(err, errlen, "%s: bad HTTP address (expected http://HOST:PORT)", url);
        return -1;
    }
    memcpy(host, p, (size_t)(hend - p));
    host[hend - p] = 0;
    *host_out = host[0] && strcmp(host, "*") != 0 ? host : NULL;
    *port = (int)v;
    return 0;
}

int srv_http_start(srv *s, const char *url, char *err, size_t errlen) {
    char hostbuf[256];
    const char *host;
    int port;
    if (parse_url(url, hostbuf, sizeof hostbuf, &host, &port, err, errlen) != 0) return -1;
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->s = s;
    h->created = (long)time(NULL);
    server_model_id(s->cfg.model_path, h->model_name, sizeof h->model_name);
    pthread_mutex_init(&h->mu, NULL);
    httpd_opts o;
    httpd_opts_default(&o);
    if (s->net.max_message_bytes > 0) o.max_body_bytes = (size_t)s->net.max_message_bytes;
    o.max_connections = s->net.max_connections;
    o.header_timeout_ms = s->net.handshake_timeout_ms;
    o.body_timeout_ms = s->net.frame_timeout_ms;
    o.keepalive_idle_ms = s->net.http_idle_timeout_ms;
    o.n_workers = s->net.http_workers;
    char msg[256];
    if (httpd_start(host, port, &o, http_handle, h, &h->d, msg, sizeof msg) != HTTPD_OK) {
        snprintf(err, errlen, "%s: %s", url, msg);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return -1;
    }
    s->http = h;
    return 0;
}

void srv_http_stop(srv *s) {
    srv_http *h = s->http;
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    for (http_call *c = h->calls; c; c = c->next) http_call_cancel(c, RELAY_END_SHUTDOWN);
    pthread_mutex_unlock(&h->mu);
    /* Waits for every handler, so no call can still see h afterwards. */
    httpd_stop(h->d, HTTP_STOP_TIMEOUT_MS);
    s->http = NULL;
    pthread_mutex_destroy(&h->mu);
    free(h);
}
