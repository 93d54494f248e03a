/*
 * httpd.h - a small hardened HTTP/1.1 server: the transport under an HTTP
 * front end. It knows requests and responses, nothing of what they mean.
 *
 * Threads: ONE event-loop thread accepts, reads and parses the requests of
 * every connection (epoll; an idle or half-received connection costs a few
 * buffers, never a thread). A complete request (head and whole body) is
 * handed to a handler thread from a pool that grows on demand up to
 * n_workers; a worker idle for a few seconds exits, so the threads go back
 * to what the load needs. The handler may run as
 * long as it needs (a generation); while it runs, the loop keeps watching
 * the connection for the client going away.
 *
 * Limits and what the server answers by itself (every such body is JSON:
 * {"error": {"message", "type", "param": null, "code"}}, see
 * httpd_error_body; "Connection: close" and a lingering close follow every
 * error after which the byte stream is no longer framed):
 *   - 400: malformed request (http/http_parse.h lists the cases: bad request
 *     line, obs-fold, control bytes in a value, no Host in HTTP/1.1, bad or
 *     differing Content-Length, Content-Length with Transfer-Encoding, a
 *     malformed chunk). Bytes after such a request are never served.
 *   - 408: the request line and headers did not all arrive within
 *     header_timeout_ms (the clock starts at accept, or at the first byte of
 *     a request on a kept-alive connection), or a body made no progress for
 *     body_timeout_ms.
 *   - 413 / 414 / 431: body over max_body_bytes (Content-Length, or decoded
 *     chunked size), target over max_url_bytes, header block over
 *     max_header_bytes; each decided before more is buffered.
 *   - 501: a transfer coding other than chunked. 505: HTTP other than 1.0
 *     and 1.1.
 *   - 503: a connection beyond max_connections is accepted, answered 503
 *     and closed at once (best effort: a client that already sent a request
 *     normally reads the answer); a complete request that finds every
 *     worker busy and max_queued requests already waiting is answered 503
 *     (the connection stays open: the request was read whole).
 *   - 500: a handler that returned without answering.
 * An idle kept-alive connection is closed without an answer after
 * keepalive_idle_ms. "Expect: 100-continue" is answered before the body is
 * read. Pipelined requests are answered in order, one at a time.
 *
 * Answers (from the handler, or from any thread it delegates to, one call
 * at a time per request, until the handler returns): either one response
 * (httpd_respond, with Content-Length) or a stream (httpd_stream_begin /
 * _write / _end: chunked for HTTP/1.1, delimited by closing the connection
 * for HTTP/1.0). A write blocks up to write_timeout_ms for a client that
 * stops reading, then fails with HTTPD_ETIMEDOUT; the connection is then
 * treated as gone. The module sets Content-Length, Transfer-Encoding and
 * Connection itself; extra headers (Allow, WWW-Authenticate, ...) are
 * passed as name/value pairs. A HEAD request gets the head only.
 *
 * Disconnects: a request is "gone" when the client cannot receive its
 * answer any more: the socket reports an error or hang-up (EPOLLERR /
 * EPOLLHUP, a reset), a write failed or timed out, or httpd_stop cut it. An
 * end of stream from the client (a half-close: it shut down its sending
 * side) depends on how the request is answered (httpd_watch_mode):
 *   - HTTPD_WATCH_STREAM (also implied by httpd_stream_begin): NOT gone -
 *     a client may send its request, shut down writing and read the stream;
 *   - HTTPD_WATCH_UNARY: gone - the client cannot send anything more on
 *     this connection, and nearly every client that does this has closed
 *     the socket (a closed socket and a half-closed one look the same until
 *     something is written);
 *   - not declared yet: the end of stream is remembered and counts as gone
 *     once the handler declares UNARY.
 * Gone is reported once: httpd_req_gone turns 1 and the callback given to
 * httpd_req_watch runs (on the thread that noticed: the loop, the one whose
 * write failed, or httpd_stop's), with the request's lock held: it must be quick and must not call
 * httpd functions on that request (it typically cancels a generation).
 *
 * Stop (httpd_stop): no new connection; idle and half-received connections
 * and requests still waiting for a worker are closed; running handlers get
 * up to timeout_ms to return (the front end cancels them), after which their
 * sockets are shut down (writes fail, they are reported gone) and they are
 * waited for; then every thread is joined and everything freed.
 *
 * Errors: functions return HTTPD_OK (0) or a negative HTTPD_E* code; those
 * taking err/errlen fill a message a user can read.
 */
#ifndef HTTP_HTTPD_H
#define HTTP_HTTPD_H

#include <stddef.h>

#include "base/strbuf.h"

enum {
    HTTPD_OK = 0,
    HTTPD_EINVAL = -1,    /* bad argument: unknown status, header with CR/LF, wrong call order */
    HTTPD_ENOMEM = -2,    /* out of memory */
    HTTPD_EADDR = -3,     /* cannot resolve or bind the address */
    HTTPD_EIO = -4,       /* other socket or thread errors (the message says which) */
    HTTPD_EGONE = -5,     /* the client is gone; nothing more can reach it */
    HTTPD_ETIMEDOUT = -6, /* a write did not complete within write_timeout_ms; httpd_stop
                             had to cut running handlers */
};

typedef struct {
    int max_connections;     /* open connections at most; more get 503 */
    int header_timeout_ms;   /* request line + headers must arrive within */
    int body_timeout_ms;     /* longest time without body progress */
    int keepalive_idle_ms;   /* an idle kept-alive connection is closed after */
    int write_timeout_ms;    /* one write may block this long */
    int n_workers;           /* handlers running at once */
    int max_queued;          /* complete requests waiting for a worker; more get 503 */
    size_t max_url_bytes;    /* request target (414) */
    size_t max_header_bytes; /* header block (431) */
    size_t max_body_bytes;   /* decoded request body (413) */
} httpd_opts;

#define HTTPD_DEFAULT_MAX_CONNECTIONS 1024
#define HTTPD_DEFAULT_HEADER_TIMEOUT_MS 10000
#define HTTPD_DEFAULT_BODY_TIMEOUT_MS 30000
#define HTTPD_DEFAULT_KEEPALIVE_IDLE_MS 60000
#define HTTPD_DEFAULT_WRITE_TIMEOUT_MS 30000
#define HTTPD_DEFAULT_N_WORKERS 256
#define HTTPD_DEFAULT_MAX_QUEUED 1024
#define HTTPD_DEFAULT_MAX_URL_BYTES 8192
#define HTTPD_DEFAULT_MAX_HEADER_BYTES 16384
#define HTTPD_DEFAULT_MAX_BODY_BYTES (8u << 20)

/* Fill o with the defaults above. */
void httpd_opts_default(httpd_opts *o);

typedef struct httpd httpd;
typedef struct httpd_req httpd_req;

typedef struct {
    const char *name;
    const char *value;
} httpd_header;

/* Called on a worker thread for each complete request. The request and
 * every string it returns live until the handler returns. */
typedef void (*httpd_handler_fn)(httpd_req *r, void *user);

/* Listen on host ("127.0.0.1", "0.0.0.0", "::", a name; NULL = any) and
 * port (0 = a free one, see httpd_port) and start the loop. o NULL = the
 * defaults; a field <= 0 takes its default. */
int httpd_start(const char *host, int port, const httpd_opts *o, httpd_handler_fn handler,
                void *user, httpd **out, char *err, size_t errlen);
/* The bound port. */
int httpd_port(const httpd *h);
/* Stop and free (see the contract above). HTTPD_OK, or HTTPD_ETIMEDOUT
 * when handlers had to be cut; h is freed either way. Not from a handler. */
int httpd_stop(httpd *h, int timeout_ms);

/* ---- the request ---- */

const char *httpd_req_method(const httpd_req *r);
/* The target as received ("/v1/x?y=1", "*", "http://host/p"). */
const char *httpd_req_target(const httpd_req *r);
/* The path without the query ("/v1/x"; "*" for OPTIONS *). */
const char *httpd_req_path(const httpd_req *r);
/* The query after '?', or NULL. */
const char *httpd_req_query(const httpd_req *r);
/* 0 for HTTP/1.0, 1 for HTTP/1.1. */
int httpd_req_minor(const httpd_req *r);
/* Value of the first header called name (case-insensitive), or NULL. */
const char *httpd_req_header(const httpd_req *r, const char *name);
/* The body (decoded when chunked; NUL-terminated, "" when empty). */
const char *httpd_req_body(const httpd_req *r, size_t *len);
/* "127.0.0.1:54321", "[::1]:54321". */
const char *httpd_req_peer(const httpd_req *r);

/* ---- disconnects ---- */

typedef enum {
    HTTPD_WATCH_UNARY,  /* answered by one response: a half-close is gone */
    HTTPD_WATCH_STREAM, /* answered by a stream: a half-close is not gone */
} httpd_watch_mode;

typedef void (*httpd_gone_fn)(httpd_req *r, void *user);

/* Declare how the request will be answered and (optionally, fn may be NULL)
 * what to call when its client is gone. When it is gone already, fn runs
 * before this returns. May be called again (fn NULL removes it). */
void httpd_req_watch(httpd_req *r, httpd_watch_mode mode, httpd_gone_fn fn, void *user);
/* 1 once the client is gone. */
int httpd_req_gone(httpd_req *r);

/* ---- answers ---- */

/* One response. content_type may be NULL (no body type); body may be NULL
 * when len is 0. HTTPD_EINVAL: a status missing from httpd_reason's table,
 * a header name that is not a token or a value with CR/LF/NUL, a name the
 * module owns (Content-Length, Transfer-Encoding, Connection), or an
 * answer already given. HTTPD_EGONE / HTTPD_ETIMEDOUT: see above. */
int httpd_respond(httpd_req *r, int status, const char *content_type, const httpd_header *headers,
                  size_t n_headers, const void *body, size_t len);
/* A JSON error response (httpd_error_body). */
int httpd_respond_error(httpd_req *r, int status, const char *code, const char *message,
                        const httpd_header *headers, size_t n_headers);

/* Start a stream: the head goes out now. Errors as httpd_respond. */
int httpd_stream_begin(httpd_req *r, int status, const char *content_type,
                       const httpd_header *headers, size_t n_headers);
/* Send one piece (nothing for len 0); returns once it is written. */
int httpd_stream_write(httpd_req *r, const void *data, size_t len);
/* End the stream (the last chunk for HTTP/1.1). A handler that returns
 * with a stream open has it ended for it. */
int httpd_stream_end(httpd_req *r);

/* ---- status codes and error bodies ---- */

/* Reason phrase of a status this module may send ("OK", "Not Found", ...),
 * or NULL for one it does not know. */
const char *httpd_reason(int status);
/* The "type" of an error body for status: "invalid_request_error" (4xx),
 * "authentication_error" (401), "not_found_error" (404),
 * "rate_limit_error" (429), "timeout_error" (408, 504),
 * "service_unavailable" (503), "server_error" (other 5xx). */
const char *httpd_error_type(int status);
/* Append {"error": {"message": message, "type": httpd_error_type(status),
 * "param": null, "code": code}} to out (strings JSON-escaped). */
void httpd_error_body(strbuf *out, int status, const char *code, const char *message);

#endif
