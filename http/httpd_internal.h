/*
 * httpd_internal.h - the state httpd.c (event loop, connections, workers)
 * and httpd_reply.c (requests, answers, status table) share. Not part of
 * the contract; only http/ includes it.
 *
 * Ownership: a connection belongs to the loop thread except while its
 * request is queued for or run by a worker (CONN_QUEUED, CONN_HANDLER).
 * Then the worker owns the request, the answer state and `out`; the loop
 * only appends received bytes to `in` and watches for the client leaving.
 * The gone state is shared and guarded by the request's `mu`.
 */
#ifndef HTTP_HTTPD_INTERNAL_H
#define HTTP_HTTPD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "http/http_parse.h"
#include "http/httpd.h"

typedef enum {
    CONN_HEAD,    /* waiting for or reading a request head (idle between requests) */
    CONN_BODY,    /* reading a body */
    CONN_QUEUED,  /* complete request waiting for a worker */
    CONN_HANDLER, /* a worker runs the handler */
    CONN_REPLY,   /* the loop sends its own answer (error, 503) */
    CONN_LINGER,  /* write side shut down; input discarded until EOF */
    CONN_CLOSED,  /* socket closed; freed at the end of the loop iteration */
} conn_state;

typedef enum {
    ANSWER_NONE,
    ANSWER_DONE,   /* a whole response (or an ended stream) went out */
    ANSWER_STREAM, /* a stream is open */
} answer_state;

typedef struct httpd_conn httpd_conn;

struct httpd_req {
    httpd_conn *conn;
    http_head head;
    strbuf body;
    /* answer (the worker, under write_mu) */
    pthread_mutex_t write_mu;
    answer_state answer;
    int chunked; /* the open stream uses chunked coding */
    int keep;    /* the answer left the connection reusable */
    int broken;  /* a write failed: the byte stream is unframed */
    /* gone (under mu; `gone` is also read without it) */
    pthread_mutex_t mu;
    atomic_int gone;
    int eof;      /* the client shut down its sending side */
    int declared; /* httpd_req_watch was called (or a stream began) */
    httpd_watch_mode mode;
    httpd_gone_fn gone_fn;
    void *gone_user;
};

struct httpd_conn {
    httpd *srv;
    int fd;
    conn_state state;
    char peer[64];
    strbuf in;  /* received, not yet parsed */
    strbuf out; /* the loop's pending output (100 Continue, its own answers) */
    size_t out_off;
    int close_after;  /* CONN_REPLY: close once out is sent */
    int rd_eof;       /* read returned end of stream */
    int head_clock;   /* the header timeout runs (a request has started) */
    int in_epoll;     /* registered with the loop's epoll */
    uint32_t events;  /* the registered mask */
    int64_t deadline; /* ms, monotonic; INT64_MAX for none */
    http_chunked chunk;
    httpd_req req;
    httpd_conn *prev, *next;   /* every connection (loop thread) */
    httpd_conn *qnext;         /* work queue / returned list (srv->mu) */
    httpd_conn *aprev, *anext; /* connections a worker holds (srv->mu) */
};

struct httpd {
    httpd_opts o;
    http_limits lim;
    size_t head_limit; /* most bytes buffered before a head must be decided */
    httpd_handler_fn handler;
    void *user;
    int listen_fd, epfd, wake_fd, port;
    pthread_t loop;
    atomic_int stopping;
    /* loop thread only */
    httpd_conn *conns, *dead;
    int n_conns;
    int64_t next_deadline;
    int accept_paused;
    int stop_seen;
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    httpd_conn *queue_head, *queue_tail, *returned, *active;
    int n_queued;
    /* workers are detached: n_threads counts the live ones, and the last to
     * exit after quit_workers signals workers_cv */
    pthread_cond_t workers_cv;
    int n_threads, n_idle, quit_workers, loop_exited;
};

int64_t httpd_now_ms(void);

/* Append a response head. framing: content length (len), chunked, or
 * none (close-delimited or bodiless). keep: the connection stays open. */
typedef enum { FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE } httpd_framing;
int httpd_format_head(strbuf *out, int status, const char *content_type,
                      const httpd_header *headers, size_t n_headers, httpd_framing framing,
                      size_t len, int keep, int minor);
/* A whole JSON error response (head and body). */
void httpd_format_error(strbuf *out, int status, const char *code, const char *message, int keep);

/* The request's client is gone: set the flag, run the callback (once). */
void httpd_req_mark_gone(httpd_req *r);
/* The client shut down its sending side (see the contract). */
void httpd_req_mark_eof(httpd_req *r);
/* Run on a worker: flush the loop's pending output, run the handler,
 * complete what it left open. */
void httpd_req_serve(httpd *h, httpd_conn *c);
void httpd_req_init(httpd_req *r, httpd_conn *c);
/* Forget the request (head, body, answer and gone state) for the next. */
void httpd_req_clear(httpd_req *r);
void httpd_req_destroy(httpd_req *r);

#endif
