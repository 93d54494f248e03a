/*
 * http_call.h - internal to the HTTP front end: what the HTTP server
 * (server/http.c: listener, routing, worker threads, request bodies, error
 * replies) shares with the generation endpoints (server/http_call.c: JSON
 * replies and Server-Sent Events, fed by the call's relay).
 *
 * Threads: an http_call belongs to its worker thread; h->mu guards the
 * list of registered calls, which srv_http_stop walks to cancel them, and
 * c->mu guards the connection watch against the worker's teardown.
 */
#ifndef SERVER_HTTP_CALL_H
#define SERVER_HTTP_CALL_H

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stddef.h>

#include "server/json_api.h"
#include "server/relay.h"
#include "server/server.h"

typedef struct srv_http srv_http;

typedef struct http_call {
    srv_http *h;
    srv *s;
    relay *r;          /* created with the call: it counts it from the start */
    nng_aio *aio;      /* the handler's aio; NULL once completed or hijacked */
    nng_http_req *req; /* owned by us after a hijack */
    nng_http_conn *conn;
    japi_kind kind;
    size_t body_len;
    int expect_continue;
    double t_arrival; /* relay_now_ms() when routed: the deadline counts from here */

    int registered; /* in h's list, for srv_http_stop */
    struct http_call *next, *prev;

    /* A hijacked connection (streams, and unary calls whose connection
     * closes after the reply): the worker writes through wr, and a pending
     * read on rd notices a client that goes away. */
    pthread_mutex_t mu;
    nng_aio *rd;
    char rd_buf[512];
    int rd_closing;
    nng_aio *wr;
} http_call;

/* ---- http.c ---- */

const char *http_model_name(const srv_http *h);
long http_created(const srv_http *h);

/* The request body (NUL-terminated, malloc'd), after "100 Continue" when
 * the client asked for it. Returns 0 or an nng error. */
int http_read_body(http_call *c, char **out);

/* Put c on the list that srv_http_stop cancels (cancelled at once when the
 * server already stops), and take it off. */
void http_calls_register(http_call *c);
void http_calls_unregister(http_call *c);

/* A response with a copy of body; close adds "Connection: close", allow an
 * "Allow" header. NULL on OOM. */
nng_http_res *http_response(int status, const char *ctype, const char *body, size_t len, int close,
                            const char *allow);
/* Complete the handler's aio with a response; nng writes it. */
void http_reply(nng_aio *aio, int status, const char *ctype, const char *body, size_t len,
                int close, const char *allow);
/* The JSON error body of every failure (OpenAI's shape); cJSON_free it. */
char *http_error_json(int status, const char *code, const char *msg);
void http_reply_error(nng_aio *aio, int status, const char *code, int close, const char *allow,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* A status code (server.h) as an HTTP status and error code. */
int http_status_of(int st, const char **code);

/* ---- http_call.c ---- */

/* The worker's job: read and validate the body, submit, relay the events
 * as JSON or SSE, reply, record the call (relay_finish) and tear down its
 * connection if it was hijacked. Leaves c->r for the caller to free. */
void http_call_run(http_call *c);

#endif
