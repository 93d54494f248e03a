/*
 * lt_http.h - the HTTP side of loadtest: target URLs, a streaming
 * OpenAI-completions call over plain POSIX sockets (HTTP/1.1, one
 * connection per request, Connection: close; Content-Length, chunked or
 * read-to-close bodies; Server-Sent Events), and GET for /metrics.
 *
 * Thread-safety: every function may run on many threads at once; a call
 * only touches its own arguments. Blocking is bounded: each call takes a
 * deadline and an optional cancel flag, checked at least every 50 ms.
 */
#ifndef LT_HTTP_H
#define LT_HTTP_H

#include <stdatomic.h>
#include <stddef.h>

typedef enum { LT_TARGET_RPC, LT_TARGET_HTTP } lt_target_kind;

typedef struct {
    lt_target_kind kind;
    char host[256]; /* without brackets; "" for ipc:// */
    char port[16];
    char path[1024]; /* HTTP: the endpoint to POST ("/v1/completions" by default) */
} lt_url;

/* Parse tcp://HOST:PORT, ipc://PATH, http://HOST[:PORT][/PATH]. Returns 0
 * or -1 with err. */
int lt_url_parse(const char *url, lt_url *out, char *err, size_t errlen);
/* 1 when host names this machine's loopback (localhost, 127.0.0.0/8, ::1). */
int lt_host_is_loopback(const char *host);

/* What one streamed completion reported; token events go to on_tokens. */
typedef struct {
    /* A token event: n tokens whose text is text[0..len) (may be empty),
     * received at clock value `when` (one read's events share it). */
    void (*on_tokens)(void *user, double when, int n, const char *text, size_t len);
    void *user;
    double (*now)(void *user); /* clock for `when` */
    /* filled by the call */
    int status;             /* HTTP status, 0 when none was read */
    int prompt_tokens;      /* -1 when not reported */
    int completion_tokens;  /* -1 when not reported */
    char finish_reason[24]; /* "" when none */
} lt_sse_result;

/* POST body (JSON) to u->path and read the event stream to its end.
 * Returns 0 on a complete answer ([DONE], or a finish_reason and a clean
 * close), else -1 with err saying what happened ("HTTP 503: {...}",
 * "connection closed after 3 events without [DONE]", "timeout", ...).
 * deadline is an absolute value of now(user); cancel (may be NULL) ends
 * the call with err "cancelled" when set. */
int lt_http_stream(const lt_url *u, const char *api_key, const char *body, double deadline,
                   atomic_int *cancel, lt_sse_result *res, char *err, size_t errlen);

/* GET path; on 0, *body is malloc'd (NUL-terminated) and *status set.
 * cancel (may be NULL) ends the call early. */
int lt_http_get(const lt_url *u, const char *path, const char *api_key, double timeout_s,
                atomic_int *cancel, int *status, char **body, char *err, size_t errlen);

/* Server gauges scraped from a Prometheus text page; -1 = absent. */
typedef struct {
    double running, waiting, swapped, kv_blocks_used;
} lt_server_gauges;

/* Our infer_* gauges, or llama.cpp's llamacpp:requests_processing /
 * llamacpp:requests_deferred. Absent metrics stay -1. */
void lt_parse_prometheus(const char *text, lt_server_gauges *g);

#endif
