/*
 * httpd.c - the event loop (accept, read, parse, time out, the server's
 * own answers), the worker pool that runs handlers, start and stop. See
 * httpd.h for the contract and httpd_internal.h for who owns what.
 *
 * Timers: each connection has one deadline for its current state; the loop
 * remembers the earliest (next_deadline) and scans the connections only
 * when that moment has passed, so a quiet server sleeps in epoll_wait.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "http/httpd_internal.h"

/* After an error answer: how long a closing connection may still send
 * (discarded) before it is cut, so the answer is not lost to a reset. */
#define HTTPD_LINGER_MS 2000
#define HTTPD_READ_CHUNK 16384
#define HTTPD_MAX_EVENTS 64
/* Bytes of empty lines and request-line framing besides target and fields. */
#define HTTPD_HEAD_SLACK 128

void httpd_opts_default(httpd_opts *o) {
    o->max_connections = HTTPD_DEFAULT_MAX_CONNECTIONS;
    o->header_timeout_ms = HTTPD_DEFAULT_HEADER_TIMEOUT_MS;
    o->body_timeout_ms = HTTPD_DEFAULT_BODY_TIMEOUT_MS;
    o->keepalive_idle_ms = HTTPD_DEFAULT_KEEPALIVE_IDLE_MS;
    o->write_timeout_ms = HTTPD_DEFAULT_WRITE_TIMEOUT_MS;
    o->n_workers = HTTPD_DEFAULT_N_WORKERS;
    o->max_queued = HTTPD_DEFAULT_MAX_QUEUED;
    o->max_url_bytes = HTTPD_DEFAULT_MAX_URL_BYTES;
    o->max_header_bytes = HTTPD_DEFAULT_MAX_HEADER_BYTES;
    o->max_body_bytes = HTTPD_DEFAULT_MAX_BODY_BYTES;
}

static void wake_loop(httpd *h) {
    uint64_t one = 1;
    ssize_t w = write(h->wake_fd, &one, sizeof one);
    (void)w; /* a full counter already wakes the loop */
}

/* ---- connections: state, events, deadlines ---- */

static void conn_set_deadline(httpd_conn *c, int64_t at) {
    c->deadline = at;
    if (at < c->srv->next_deadline) c->srv->next_deadline = at;
}

static uint32_t conn_wanted_events(const httpd_conn *c) {
    /* `out` belongs to the worker in CONN_QUEUED and CONN_HANDLER: read it
     * only in the states where the loop owns it */
    uint32_t out = 0;
    if (c->state != CONN_QUEUED && c->state != CONN_HANDLER)
        out = c->out.len > c->out_off ? EPOLLOUT : 0;
    switch (c->state) {
    case CONN_HEAD:
    case CONN_BODY:
    case CONN_LINGER: return EPOLLIN | EPOLLRDHUP | out;
    case CONN_REPLY: return out;
    case CONN_QUEUED:
    case CONN_HANDLER:
        /* watch only; keep at most one head of pipelined bytes */
        if (c->rd_eof) return 0;
        return c->in.len >= c->srv->head_limit ? EPOLLRDHUP : EPOLLIN | EPOLLRDHUP;
    case CONN_CLOSED: break;
    }
    return 0;
}

static void conn_update_events(httpd_conn *c) {
    uint32_t want = conn_wanted_events(c);
    if (!c->in_epoll || want == c->events) return;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = want;
}

static void conn_close(httpd_conn *c) {
    if (c->state == CONN_CLOSED) return;
    httpd *h = c->srv;
    close(c->fd); /* also leaves the epoll set */
    c->state = CONN_CLOSED;
    if (c->prev) c->prev->next = c->next;
    else h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = h->dead;
    h->dead = c;
    h->n_conns--;
    if (h->accept_paused && !h->stop_seen) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &h->listen_fd};
        if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->listen_fd, &ev) == 0) h->accept_paused = 0;
    }
}

static void free_dead(httpd *h) {
    while (h->dead) {
        httpd_conn *c = h->dead;
        h->dead = c->next;
        httpd_req_destroy(&c->req);
        strbuf_free(&c->in);
        strbuf_free(&c->out);
        free(c);
    }
}

/* Shut the write side and discard input for a while, so that the answer
 * just sent is not destroyed by a reset for unread bytes. */
static void conn_linger(httpd_conn *c) {
    if (c->rd_eof) {
        conn_close(c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    strbuf_free(&c->in);
    conn_set_deadline(c, httpd_now_ms() + HTTPD_LINGER_MS);
    conn_update_events(c);
}

/* Ready for the next request on this connection. */
static void conn_to_idle(httpd_conn *c) {
    httpd *h = c->srv;
    c->state = CONN_HEAD;
    c->head_clock = c->in.len > 0;
    conn_set_deadline(c, httpd_now_ms() +
                             (c->head_clock ? h->o.header_timeout_ms : h->o.keepalive_idle_ms));
    conn_update_events(c);
}

static void conn_flush(httpd_conn *c) {
    while (c->out.len > c->out_off) {
        ssize_t w = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_update_events(c);
            return;
        }
        if (w < 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    strbuf_free(&c->out);
    c->out_off = 0;
    if (c->state == CONN_REPLY) {
        if (c->close_after) conn_linger(c);
        else conn_to_idle(c);
    } else {
        conn_update_events(c);
    }
}

/* The loop's own answer (an error, 503). close: the stream is unframed
 * (or the connection is refused), so it closes after the answer. */
static void conn_reply(httpd_conn *c, int status, const char *code, const char *message,
                       int close) {
    httpd_req_clear(&c->req);
    httpd_format_error(&c->out, status, code, message, !close);
    if (c->out.oom) {
        conn_close(c);
        return;
    }
    c->close_after = close;
    c->state = CONN_REPLY;
    conn_set_deadline(c, httpd_now_ms() + c->srv->o.write_timeout_ms);
    conn_flush(c);
}

/* ---- the worker pool ---- */

/* A worker with nothing to do for this long exits, so a burst of requests
 * does not leave its threads behind; the next burst starts new ones. */
#define WORKER_IDLE_EXIT_MS 5000

/* Wait for work; 0 when the worker should exit (stop, or idle too long). */
static int worker_wait(httpd *h) {
    struct timespec until = clock_realtime_after_ms(WORKER_IDLE_EXIT_MS);
    h->n_idle++;
    int timed_out = 0;
    while (!h->queue_head && !h->quit_workers && !timed_out)
        timed_out = pthread_cond_timedwait(&h->work_cv, &h->mu, &until) == ETIMEDOUT;
    h->n_idle--;
    return h->queue_head != NULL;
}

static void *worker_main(void *arg) {
    httpd *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        if (!worker_wait(h)) break;
        httpd_conn *c = h->queue_head;
        h->queue_head = c->qnext;
        if (!h->queue_head) h->queue_tail = NULL;
        h->n_queued--;
        c->aprev = NULL;
        c->anext = h->active;
        if (h->active) h->active->aprev = c;
        h->active = c;
        pthread_mutex_unlock(&h->mu);

        httpd_req_serve(h, c);

        pthread_mutex_lock(&h->mu);
        if (c->aprev) c->aprev->anext = c->anext;
        else h->active = c->anext;
        if (c->anext) c->anext->aprev = c->aprev;
        c->qnext = h->returned;
        h->returned = c;
        wake_loop(h);
    }
    if (--h->n_threads == 0) pthread_cond_broadcast(&h->workers_cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Start one detached worker; 0 on success. Under mu. */
static int worker_start(httpd *h) {
    pthread_t t;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, worker_main, h);
    pthread_attr_destroy(&attr);
    return rc;
}

/* Queue c for a worker, starting one when none is idle. 0 when the pool
 * is saturated (every worker busy, max_queued waiting). */
static int pool_submit(httpd *h, httpd_conn *c) {
    pthread_mutex_lock(&h->mu);
    int waiting = h->n_queued - h->n_idle;
    if (waiting >= 0 && h->n_threads < h->o.n_workers && worker_start(h) == 0) {
        h->n_threads++;
        waiting = -1;
    }
    int ok = h->n_threads > 0 && waiting < h->o.max_queued;
    if (ok) {
        c->qnext = NULL;
        if (h->queue_tail) h->queue_tail->qnext = c;
        else h->queue_head = c;
        h->queue_tail = c;
        h->n_queued++;
        pthread_cond_signal(&h->work_cv);
    }
    pthread_mutex_unlock(&h->mu);
    return ok;
}

static void conn_dispatch(httpd_conn *c) {
    httpd_req *r = &c->req;
    if (r->body.oom) {
        conn_reply(c, 500, "internal_error", "out of memory for the request body", 1);
        return;
    }
    c->state = CONN_QUEUED;
    c->deadline = INT64_MAX;
    r->eof = c->rd_eof;
    if (!pool_submit(c->srv, c)) {
        conn_reply(c, 503, "server_busy", "every request worker is busy; retry later", 0);
        return;
    }
    conn_update_events(c);
}

/* A worker finished with c: next request, or close. */
static void conn_handler_done(httpd_conn *c) {
    httpd_req *r = &c->req;
    int gone = atomic_load(&r->gone) || r->broken;
    int keep = r->keep && !gone && !c->srv->stop_seen && !(c->rd_eof && c->in.len == 0);
    httpd_req_clear(r);
    if (!c->in_epoll) conn_close(c);
    else if (keep) conn_to_idle(c);
    else if (gone || c->srv->stop_seen) conn_close(c);
    else conn_linger(c);
}

/* ---- reading and parsing ---- */

static void step_head(httpd_conn *c) {
    httpd *h = c->srv;
    if (c->in.len == 0) {
        if (c->rd_eof) conn_close(c);
        return;
    }
    if (!c->head_clock) {
        c->head_clock = 1;
        conn_set_deadline(c, httpd_now_ms() + h->o.header_timeout_ms);
    }
    http_parse_error e;
    size_t used = 0;
    http_parse_rc rc = http_parse_head(c->in.p, c->in.len, &h->lim, &c->req.head, &used, &e);
    if (rc == HTTP_PARSE_MORE) {
        if (c->rd_eof) conn_close(c);
        return;
    }
    if (rc == HTTP_PARSE_ERROR) {
        conn_reply(c, e.status, e.code, e.message, 1);
        return;
    }
    memmove(c->in.p, c->in.p + used, c->in.len - used + 1);
    c->in.len -= used;
    c->head_clock = 0;
    if (c->req.head.body == HTTP_BODY_NONE) {
        conn_dispatch(c);
        return;
    }
    c->state = CONN_BODY;
    http_chunked_init(&c->chunk);
    conn_set_deadline(c, httpd_now_ms() + h->o.body_timeout_ms);
    if (c->req.head.expect_continue && c->req.head.minor == 1) {
        strbuf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        conn_flush(c);
    }
}

static void step_body(httpd_conn *c) {
    httpd *h = c->srv;
    httpd_req *r = &c->req;
    if (c->in.len == 0) {
        if (c->rd_eof) conn_close(c);
        return;
    }
    size_t used;
    int done;
    if (r->head.body == HTTP_BODY_LENGTH) {
        uint64_t need = r->head.content_length - r->body.len;
        used = c->in.len < need ? c->in.len : (size_t)need;
        strbuf_putn(&r->body, c->in.p, used);
        done = r->body.len == r->head.content_length || r->body.oom;
    } else {
        http_parse_error e;
        http_parse_rc rc =
            http_chunked_decode(&c->chunk, c->in.p, c->in.len, &h->lim, &r->body, &used, &e);
        if (rc == HTTP_PARSE_ERROR) {
            conn_reply(c, e.status, e.code, e.message, 1);
            return;
        }
        done = rc == HTTP_PARSE_DONE;
    }
    memmove(c->in.p, c->in.p + used, c->in.len - used + 1);
    c->in.len -= used;
    conn_set_deadline(c, httpd_now_ms() + h->o.body_timeout_ms);
    if (done) conn_dispatch(c);
    else if (c->rd_eof && c->in.len == 0) conn_close(c);
}

/* Parse what is buffered until it runs out or the connection leaves the
 * loop's hands. */
static void conn_process(httpd_conn *c) {
    for (;;) {
        conn_state before = c->state;
        size_t len = c->in.len;
        if (c->state == CONN_HEAD) step_head(c);
        else if (c->state == CONN_BODY) step_body(c);
        else return;
        if (c->state == before && c->in.len == len) return;
    }
}

/* Room left for a head (or pipelined heads) in c->in. */
static size_t head_room(const httpd_conn *c) {
    return c->in.len < c->srv->head_limit ? c->srv->head_limit - c->in.len : 0;
}

/* One read. Returns bytes read, 0 at end of stream, -1 for nothing now,
 * -2 on an error. */
static ssize_t conn_read(httpd_conn *c, size_t room) {
    char buf[HTTPD_READ_CHUNK];
    if (room > sizeof buf) room = sizeof buf;
    if (room == 0) return -1;
    ssize_t n = recv(c->fd, buf, room, 0);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
    if (n == 0) c->rd_eof = 1;
    else if (c->state != CONN_LINGER) strbuf_putn(&c->in, buf, (size_t)n);
    return c->in.oom ? -2 : n;
}

/* Events while a worker holds c: pipelined bytes and the client leaving. */
static void conn_watch_event(httpd_conn *c, uint32_t ev) {
    httpd_req *r = &c->req;
    if (ev & (EPOLLERR | EPOLLHUP)) {
        httpd_req_mark_gone(r);
        epoll_ctl(c->srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->in_epoll = 0;
        return;
    }
    ssize_t n = -1;
    if (ev & EPOLLIN) n = conn_read(c, head_room(c));
    else if (ev & EPOLLRDHUP) c->rd_eof = 1; /* buffer full: the end is all we learn */
    if (n == -2) httpd_req_mark_gone(r);
    else if (c->rd_eof) httpd_req_mark_eof(r);
    conn_update_events(c);
}

static void conn_event(httpd_conn *c, uint32_t ev) {
    if (c->state == CONN_QUEUED || c->state == CONN_HANDLER) {
        conn_watch_event(c, ev);
        return;
    }
    if (ev & EPOLLERR) {
        conn_close(c);
        return;
    }
    if (ev & EPOLLOUT) conn_flush(c);
    if (c->state == CONN_REPLY && (ev & EPOLLHUP)) conn_close(c);
    if (c->state != CONN_HEAD && c->state != CONN_BODY && c->state != CONN_LINGER) return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        ssize_t n = conn_read(c, c->state == CONN_HEAD ? head_room(c) : HTTPD_READ_CHUNK);
        if (n == -2 || (n == -1 && (ev & EPOLLHUP)) || (c->state == CONN_LINGER && n == 0)) {
            conn_close(c);
            return;
        }
    }
    conn_process(c);
}

/* ---- accepting ---- */

static void format_peer(const struct sockaddr_storage *sa, socklen_t len, char *out, size_t n) {
    char host[64], port[16];
    if (getnameinfo((const struct sockaddr *)sa, len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, n, "?");
        return;
    }
    snprintf(out, n, sa->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Over max_connections: answer 503 and close without keeping any state.
 * Bytes the client already sent are drained first, so the close is not a
 * reset that would destroy the answer. */
static void reject_connection(int fd) {
    strbuf b = {0};
    httpd_format_error(&b, 503, "too_many_connections",
                       "the server has too many open connections; retry later", 0);
    char sink[4096];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    if (!b.oom) {
        ssize_t w = send(fd, b.p, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w; /* best effort: a fresh socket has room for it */
    }
    shutdown(fd, SHUT_WR);
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    close(fd);
    strbuf_free(&b);
}

static void add_connection(httpd *h, int fd, const struct sockaddr_storage *sa, socklen_t len) {
    httpd_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->srv = h;
    c->fd = fd;
    httpd_req_init(&c->req, c);
    format_peer(sa, len, c->peer, sizeof c->peer);
    c->state = CONN_HEAD;
    c->head_clock = 1;
    c->events = EPOLLIN | EPOLLRDHUP;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        httpd_req_destroy(&c->req);
        free(c);
        close(fd);
        return;
    }
    c->in_epoll = 1;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    conn_set_deadline(c, httpd_now_ms() + h->o.header_timeout_ms);
}

static void accept_all(httpd *h) {
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int fd = accept4(h->listen_fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: stop accepting until a connection closes */
                epoll_ctl(h->epfd, EPOLL_CTL_DEL, h->listen_fd, NULL);
                h->accept_paused = 1;
            }
            return;
        }
        if (h->n_conns >= h->o.max_connections) reject_connection(fd);
        else add_connection(h, fd, &sa, len);
    }
}

/* ---- the loop ---- */

static void expire(httpd *h, int64_t now) {
    h->next_deadline = INT64_MAX;
    for (httpd_conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline > now) {
            if (c->deadline < h->next_deadline) h->next_deadline = c->deadline;
            continue;
        }
        char msg[128];
        if (c->state == CONN_HEAD && c->head_clock) {
            snprintf(msg, sizeof msg, "request header not received within %d ms",
                     h->o.header_timeout_ms);
            conn_reply(c, 408, "request_timeout", msg, 1);
        } else if (c->state == CONN_BODY) {
            snprintf(msg, sizeof msg, "request body stalled: no bytes for %d ms",
                     h->o.body_timeout_ms);
            conn_reply(c, 408, "request_timeout", msg, 1);
        } else {
            conn_close(c); /* idle keep-alive, lingering, or a reply nobody reads */
        }
    }
}

static void take_returned(httpd *h) {
    uint64_t v;
    ssize_t n = read(h->wake_fd, &v, sizeof v);
    (void)n;
    pthread_mutex_lock(&h->mu);
    httpd_conn *list = h->returned;
    h->returned = NULL;
    int stopping = atomic_load(&h->stopping);
    httpd_conn *queued = NULL;
    if (stopping && !h->stop_seen) {
        queued = h->queue_head;
        h->queue_head = h->queue_tail = NULL;
        h->n_queued = 0;
    }
    pthread_mutex_unlock(&h->mu);
    for (httpd_conn *c = list, *next; c; c = next) {
        next = c->qnext;
        c->qnext = NULL;
        conn_handler_done(c);
        if (c->state == CONN_HEAD || c->state == CONN_BODY) conn_process(c);
    }
    if (!stopping || h->stop_seen) return;
    h->stop_seen = 1;
    for (httpd_conn *c = queued, *next; c; c = next) {
        next = c->qnext;
        conn_close(c);
    }
    if (!h->accept_paused) epoll_ctl(h->epfd, EPOLL_CTL_DEL, h->listen_fd, NULL);
    for (httpd_conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != CONN_HANDLER && c->state != CONN_QUEUED) conn_close(c);
    }
}

static void *loop_main(void *arg) {
    httpd *h = arg;
    struct epoll_event evs[HTTPD_MAX_EVENTS];
    while (!h->stop_seen || h->n_conns > 0) {
        int64_t now = httpd_now_ms();
        int timeout = h->next_deadline == INT64_MAX ? -1
                      : h->next_deadline <= now     ? 0
                                                    : (int)(h->next_deadline - now);
        int n = epoll_wait(h->epfd, evs, HTTPD_MAX_EVENTS, timeout);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &h->listen_fd) accept_all(h);
            else if (p == &h->wake_fd) take_returned(h);
            else if (((httpd_conn *)p)->state != CONN_CLOSED) conn_event(p, evs[i].events);
        }
        now = httpd_now_ms();
        if (now >= h->next_deadline) expire(h, now);
        free_dead(h);
    }
    pthread_mutex_lock(&h->mu);
    h->loop_exited = 1;
    pthread_cond_broadcast(&h->done_cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- start and stop ---- */

static int listen_on(httpd *h, const char *host, int port, char *err, size_t errlen) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rv = getaddrinfo(host, ps, &hints, &ai);
    if (rv != 0) {
        snprintf(err, errlen, "%s: cannot resolve: %s", host ? host : "*", gai_strerror(rv));
        return HTTPD_EADDR;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        int one = 1;
        if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd >= 0 && (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0)) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        snprintf(err, errlen, "%s:%d: cannot listen: %s", host ? host : "*", port, strerror(saved));
        return HTTPD_EADDR;
    }
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    h->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                             : ((struct sockaddr_in *)&sa)->sin_port);
    h->listen_fd = fd;
    return HTTPD_OK;
}

static void apply_opts(httpd *h, const httpd_opts *o) {
    httpd_opts d;
    httpd_opts_default(&d);
    h->o = o ? *o : d;
#define HTTPD_DEFAULT_IF_UNSET(f)                                                                  \
    if (h->o.f <= 0) h->o.f = d.f
    HTTPD_DEFAULT_IF_UNSET(max_connections);
    HTTPD_DEFAULT_IF_UNSET(header_timeout_ms);
    HTTPD_DEFAULT_IF_UNSET(body_timeout_ms);
    HTTPD_DEFAULT_IF_UNSET(keepalive_idle_ms);
    HTTPD_DEFAULT_IF_UNSET(write_timeout_ms);
    HTTPD_DEFAULT_IF_UNSET(n_workers);
    HTTPD_DEFAULT_IF_UNSET(max_queued);
    if (h->o.max_url_bytes == 0) h->o.max_url_bytes = d.max_url_bytes;
    if (h->o.max_header_bytes == 0) h->o.max_header_bytes = d.max_header_bytes;
    if (h->o.max_body_bytes == 0) h->o.max_body_bytes = d.max_body_bytes;
#undef HTTPD_DEFAULT_IF_UNSET
    h->lim = (http_limits){h->o.max_url_bytes, h->o.max_header_bytes, h->o.max_body_bytes};
    h->head_limit = h->o.max_url_bytes + h->o.max_header_bytes + HTTPD_HEAD_SLACK;
}

/* Free what httpd_start set up (fds that are -1 were not opened). */
static void release(httpd *h) {
    if (h->listen_fd >= 0) close(h->listen_fd);
    if (h->epfd >= 0) close(h->epfd);
    if (h->wake_fd >= 0) close(h->wake_fd);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->work_cv);
    pthread_cond_destroy(&h->done_cv);
    pthread_cond_destroy(&h->workers_cv);
    free(h);
}

int httpd_start(const char *host, int port, const httpd_opts *o, httpd_handler_fn handler,
                void *user, httpd **out, char *err, size_t errlen) {
    *out = NULL;
    if (!handler || port < 0 || port > 65535) {
        snprintf(err, errlen, "httpd_start: a handler and a port in 0..65535 are required");
        return HTTPD_EINVAL;
    }
    httpd *h = calloc(1, sizeof *h);
    if (!h) return HTTPD_ENOMEM;
    h->listen_fd = h->epfd = h->wake_fd = -1;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->work_cv, NULL);
    pthread_cond_init(&h->done_cv, NULL);
    pthread_cond_init(&h->workers_cv, NULL);
    apply_opts(h, o);
    h->handler = handler;
    h->user = user;
    h->next_deadline = INT64_MAX;
    int rc = listen_on(h, host, port, err, errlen);
    if (rc == HTTPD_OK) {
        h->epfd = epoll_create1(EPOLL_CLOEXEC);
        h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event le = {.events = EPOLLIN, .data.ptr = &h->listen_fd};
        struct epoll_event we = {.events = EPOLLIN, .data.ptr = &h->wake_fd};
        if (h->epfd < 0 || h->wake_fd < 0 ||
            epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->listen_fd, &le) != 0 ||
            epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->wake_fd, &we) != 0 ||
            pthread_create(&h->loop, NULL, loop_main, h) != 0) {
            snprintf(err, errlen, "httpd_start: %s", strerror(errno));
            rc = HTTPD_EIO;
        }
    }
    if (rc != HTTPD_OK) {
        if (rc == HTTPD_ENOMEM) snprintf(err, errlen, "httpd_start: out of memory");
        release(h);
        return rc;
    }
    *out = h;
    return HTTPD_OK;
}

int httpd_port(const httpd *h) { return h->port; }

/* Shut down the sockets of running handlers: their writes fail and they
 * are reported gone, so they return. */
static void cut_handlers(httpd *h) {
    pthread_mutex_lock(&h->mu);
    for (httpd_conn *c = h->active; c; c = c->anext) {
        shutdown(c->fd, SHUT_RDWR);
        httpd_req_mark_gone(&c->req);
    }
    pthread_mutex_unlock(&h->mu);
}

int httpd_stop(httpd *h, int timeout_ms) {
    atomic_store(&h->stopping, 1);
    wake_loop(h);
    struct timespec until = clock_realtime_after_ms(timeout_ms);
    int rc = HTTPD_OK;
    pthread_mutex_lock(&h->mu);
    while (!h->loop_exited && rc == HTTPD_OK)
        if (pthread_cond_timedwait(&h->done_cv, &h->mu, &until) == ETIMEDOUT) rc = HTTPD_ETIMEDOUT;
    pthread_mutex_unlock(&h->mu);
    if (rc != HTTPD_OK) cut_handlers(h);
    pthread_join(h->loop, NULL);
    pthread_mutex_lock(&h->mu);
    h->quit_workers = 1;
    pthread_cond_broadcast(&h->work_cv);
    while (h->n_threads > 0) pthread_cond_wait(&h->workers_cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    release(h);
    return rc;
}
