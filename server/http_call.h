/*
 * http_call.h - internal to the HTTP front end: what the HTTP server
 * (server/http.c: listener, routing, error replies, cheap routes) shares
 * with the generation endpoints (server/http_call.c: JSON replies and
 * Server-Sent Events, fed by the call's relay).
 *
 * Threads: an http_call lives on the httpd worker thread that runs its
 * request; h->mu guards the list of registered calls, which srv_http_stop
 * walks to cancel them. The client-gone callback may run on httpd's loop
 * thread: it only cancels the relay (relay_cancel is thread-safe).
 */
#ifndef SERVER_HTTP_CALL_H
#define SERVER_HTTP_CALL_H

#include <stddef.h>

#include "http/httpd.h"
#include "server/json_api.h"
#include "server/relay.h"
#include "server/server.h"

typedef struct srv_http srv_http;

typedef struct http_call {
    srv_http *h;
    srv *s;
    relay *r;       /* created with the call: it counts it from the start */
    httpd_req *req; /* the request; valid until the handler returns */
    japi_kind kind;
    double deadline_at; /* r's deadline (relay_create), 0 = none */
    /* A /v1/completions list of prompts: one relay per prompt after the
     * first (r), owned by http_call.c; cancelled together with r. */
    relay **extra;
    int n_extra;

    int registered; /* in h's list, for srv_http_stop */
    struct http_call *next, *prev;
} http_call;

/* ---- http.c ---- */

const char *http_model_name(const srv_http *h);
/* A client's "model" names the served model (server_model_accepts); the
 * 404 reply when it does not, the same for /v1/models/{id} and bodies. */
int http_model_accepts(const srv_http *h, const char *asked);
void http_reply_model_not_found(const srv_http *h, httpd_req *req, const char *asked);
long http_created(const srv_http *h);

/* Cancel every relay of c (r and extra). Any thread. */
void http_call_cancel(http_call *c, relay_end why);
/* Put c on the list that srv_http_stop cancels (cancelled at once when the
 * server already stops), and take it off. */
void http_calls_register(http_call *c);
void http_calls_unregister(http_call *c);

/* A JSON reply: 0, or an httpd error when the client is gone. */
int http_reply_json(httpd_req *req, int status, const char *json);
/* The JSON error reply of every failure (httpd_error_body's shape); allow
 * adds an "Allow" header, a 401 gets "WWW-Authenticate: Bearer". */
void http_reply_error(httpd_req *req, int status, const char *code, const char *allow,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* A status code (server.h) as an HTTP status and error code. */
int http_status_of(int st, const char **code);

/* ---- http_call.c ---- */

/* The worker's job: parse and validate the body, submit, relay the events
 * as JSON or SSE, reply, and record the call (relay_finish). A client that
 * goes away while the call runs cancels it at once (httpd_req_watch), so
 * its KV blocks are freed even while nothing is being written. Leaves c->r
 * for the caller to free. */
void http_call_run(http_call *c);

#endif
