/*
 * rpc_conn.c - connections and listeners of the RPC transport over nng byte
 * streams (tcp://, ipc://, tls+tcp://); the contract is in rpc.h.
 *
 * A started connection runs two threads:
 *   - the receive loop reads a 4-byte prefix, checks it against max_frame,
 *     reads the body (the whole frame within frame_timeout_ms of its first
 *     byte), decodes it and hands it on (callback or inbox);
 *   - the writer drains the send queue in order, one frame at a time.
 * Blocking I/O on one nng_aio per thread keeps each loop a plain sequence of
 * steps; nng's own callback threads never run our code, so nothing we do
 * can stall nng's task queue.
 *
 * Locking: one mutex guards the queue, the inbox and the lifecycle fields.
 * I/O happens outside it. Frames are encoded by the sender before the lock
 * is taken, so the writer only copies bytes to the transport.
 *
 * Lifetime: refs counts the users' references; `threads` the loops still
 * running. Memory goes when both reach zero: a releasing user waits for the
 * loops and frees; if the last release came from the receive thread itself,
 * the last loop to exit frees (after joining the other).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "base/clock.h"
#include "rpc/rpc.h"

typedef struct qitem {
    struct qitem *next;
    uint8_t *data;
    size_t len;
} qitem;

/* Reading one frame step by step. The same steps serve the receive loop
 * (blocking waits) and the first frame of an accepted connection (nng
 * callbacks, before any thread of ours exists). */
typedef enum { FR_MORE, FR_DONE, FR_FAIL } fr_state;

typedef struct {
    uint8_t hdr[RPC_HEADER_BYTES];
    uint8_t *body; /* malloc'd once the length is known; FR_DONE: taken by the caller */
    uint32_t len;
    size_t got;         /* bytes of the part being read (prefix, then body) */
    int in_body;        /* the prefix is complete */
    int started;        /* a byte of this frame arrived */
    double start_by;    /* monotonic ms the frame must start by (idle timeout); 0: none */
    double done_by;     /* ... must be complete by (first frame, frame timeout); 0: none */
    int start_limit_ms; /* the limits behind start_by and done_by, for messages */
    int done_limit_ms;
    int idle; /* FR_FAIL: nothing arrived before start_by */
    int err;  /* FR_FAIL: RPC_E* code and message */
    char msg[256];
} frame_rd;

typedef struct inbox_item {
    struct inbox_item *next;
    Rpc__Frame *f; /* NULL: a bad frame, see msg */
    char *msg;
} inbox_item;

struct rpc_conn {
    nng_stream *stream;
    rpc_conn_opts o;
    char peer[80];

    pthread_mutex_t mu;
    pthread_cond_t cv_room;   /* senders: queue room; flushers: queue empty */
    pthread_cond_t cv_writer; /* writer: work or closing */
    pthread_cond_t cv_inbox;  /* rpc_conn_recv */
    pthread_cond_t cv_exit;   /* releaser: loops ended */

    /* send queue (guarded by mu) */
    qitem *qhead, *qtail;
    size_t q_bytes; /* queued + in flight */
    int q_frames;
    int closing;         /* no more sends */
    int hold_close;      /* the reader drops input before the close (see reader_finish) */
    nng_aio *linger_aio; /* timer: closes the stream when the linger time is up */
    int linger_armed;
    double linger_until; /* monotonic ms; writer gives up after it */
    int stream_closed;   /* nng_stream_close done */

    /* receiving: rd is the frame being read, by first_aio's callback
     * until the threads start, then by the receive loop */
    frame_rd rd;
    int accepted;       /* the first frame is read without a thread */
    nng_aio *first_aio; /* its reads (and retries of the thread start) */
    fr_state first_state;
    rpc_conn_handlers h;
    void *user;
    int inbox_mode;
    inbox_item *ihead, *itail;
    int recv_done;
    int close_err;
    char close_msg[256];

    /* lifecycle */
    int started;
    int refs;
    int threads;
    int released;
    int self_release; /* the last release came from the receive thread */
    pthread_t recv_tid, send_tid;
    int have_recv, have_send; /* threads created (to be joined) */
};

struct rpc_listener {
    nng_stream_listener *l;
    nng_tls_config *tls;
    char url[300];
    pthread_mutex_t mu; /* orders accept starts against close (see io_start) */
    int closed;
};

/* ---- helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Absolute CLOCK_REALTIME time timeout_ms from now (for cond waits). */
static struct timespec deadline_ts(int timeout_ms) { return clock_realtime_after_ms(timeout_ms); }

static int map_nng(int rv) {
    switch (rv) {
    case 0: return RPC_OK;
    case NNG_ECLOSED:
    case NNG_ECONNSHUT:
    case NNG_ECONNRESET:
    case NNG_ECONNREFUSED: /* what a TLS stream reports when the peer hangs up */
    case NNG_ECANCELED: return RPC_ECLOSED;
    case NNG_ETIMEDOUT: return RPC_ETIMEDOUT;
    case NNG_ENOMEM: return RPC_ENOMEM;
    case NNG_EADDRINUSE:
    case NNG_EADDRINVAL:
    case NNG_ENOTSUP: return RPC_EADDR;
    default: return RPC_EIO;
    }
}

void rpc_conn_opts_default(rpc_conn_opts *o) {
    o->max_frame = RPC_DEFAULT_MAX_FRAME;
    o->max_queue_bytes = RPC_DEFAULT_QUEUE_BYTES;
    o->max_queue_frames = RPC_DEFAULT_QUEUE_FRAMES;
    o->frame_timeout_ms = RPC_DEFAULT_FRAME_TIMEOUT_MS;
    o->linger_ms = RPC_DEFAULT_LINGER_MS;
    o->first_frame_timeout_ms = RPC_DEFAULT_FIRST_FRAME_TIMEOUT_MS;
    o->idle_timeout_ms = 0;
}

static void opts_resolve(rpc_conn_opts *dst, const rpc_conn_opts *src) {
    rpc_conn_opts_default(dst);
    if (!src) return;
    if (src->max_frame) dst->max_frame = src->max_frame;
    if (src->max_queue_bytes) dst->max_queue_bytes = src->max_queue_bytes;
    if (src->max_queue_frames > 0) dst->max_queue_frames = src->max_queue_frames;
    if (src->frame_timeout_ms) dst->frame_timeout_ms = src->frame_timeout_ms;
    if (src->linger_ms > 0) dst->linger_ms = src->linger_ms;
    if (src->first_frame_timeout_ms) dst->first_frame_timeout_ms = src->first_frame_timeout_ms;
    dst->idle_timeout_ms = src->idle_timeout_ms;
}

/* ---- TLS ---- */

static int tls_config_make(int server, const char *url, const rpc_tls_opts *t, nng_tls_config **out,
                           char *err, size_t errlen) {
    *out = NULL;
    nng_tls_config *cfg;
    int rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
    if (rv != 0) {
        set_err(err, errlen, "%s: TLS is not available: %s", url, nng_strerror(rv));
        return RPC_EIO;
    }
    if (server && (!t || !t->cert_key_file || !t->cert_key_file[0])) {
        set_err(err, errlen, "%s: a TLS listener needs a certificate and key file", url);
        nng_tls_config_free(cfg);
        return RPC_EINVAL;
    }
    if (t && t->cert_key_file && t->cert_key_file[0] &&
        (rv = nng_tls_config_cert_key_file(cfg, t->cert_key_file, NULL)) != 0) {
        set_err(err, errlen, "%s: cannot load certificate and key '%s': %s", url, t->cert_key_file,
                nng_strerror(rv));
        nng_tls_config_free(cfg);
        return RPC_EIO;
    }
    if (t && t->ca_file && t->ca_file[0]) {
        if ((rv = nng_tls_config_ca_file(cfg, t->ca_file)) != 0) {
            set_err(err, errlen, "%s: cannot load CA file '%s': %s", url, t->ca_file,
                    nng_strerror(rv));
            nng_tls_config_free(cfg);
            return RPC_EIO;
        }
        nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED);
    } else if (server || (t && t->insecure)) {
        nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_NONE);
    }
    if (!server && t && t->server_name && t->server_name[0])
        nng_tls_config_server_name(cfg, t->server_name);
    *out = cfg;
    return RPC_OK;
}

static int is_tls_url(const char *url) { return strncmp(url, "tls+tcp://", 10) == 0; }

static int url_supported(const char *url) {
    return strncmp(url, "tcp://", 6) == 0 || strncmp(url, "ipc://", 6) == 0 || is_tls_url(url);
}

/* ---- connection ---- */

static void describe_peer(rpc_conn *c) {
    nng_sockaddr sa;
    snprintf(c->peer, sizeof c->peer, "unknown");
    if (nng_stream_get_addr(c->stream, NNG_OPT_REMADDR, &sa) != 0) return;
    if (sa.s_family == NNG_AF_INET) {
        const uint8_t *a = (const uint8_t *)&sa.s_in.sa_addr;
        const uint8_t *p = (const uint8_t *)&sa.s_in.sa_port;
        snprintf(c->peer, sizeof c->peer, "%u.%u.%u.%u:%u", a[0], a[1], a[2], a[3],
                 (unsigned)p[0] << 8 | p[1]);
    } else if (sa.s_family == NNG_AF_INET6) {
        const uint8_t *p = (const uint8_t *)&sa.s_in6.sa_port;
        snprintf(c->peer, sizeof c->peer, "[ipv6]:%u", (unsigned)p[0] << 8 | p[1]);
    } else if (sa.s_family == NNG_AF_IPC) {
        snprintf(c->peer, sizeof c->peer, "ipc");
    }
}

static void stream_close(rpc_conn *c);

/* The linger time is up: whatever is still in flight (a write to a peer
 * that does not read) is aborted by closing the stream. Runs on an nng
 * task thread; stream_close only takes our mutex briefly. */
static void linger_expired(void *arg) {
    rpc_conn *c = arg;
    if (nng_aio_result(c->linger_aio) == 0) stream_close(c);
}

static rpc_conn *conn_new(nng_stream *s, const rpc_conn_opts *o) {
    rpc_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (nng_aio_alloc(&c->linger_aio, linger_expired, c) != 0) {
        free(c);
        return NULL;
    }
    c->stream = s;
    opts_resolve(&c->o, o);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv_room, NULL);
    pthread_cond_init(&c->cv_writer, NULL);
    pthread_cond_init(&c->cv_inbox, NULL);
    pthread_cond_init(&c->cv_exit, NULL);
    c->refs = 1;
    nng_stream_set_bool(s, NNG_OPT_TCP_NODELAY, true); /* tokens are small and urgent */
    describe_peer(c);
    return c;
}

static void queue_clear_locked(rpc_conn *c) {
    qitem *q = c->qhead;
    while (q) {
        qitem *n = q->next;
        c->q_bytes -= q->len;
        c->q_frames--;
        free(q->data);
        free(q);
        q = n;
    }
    c->qhead = c->qtail = NULL;
}

static void conn_free(rpc_conn *c) {
    nng_aio_stop(c->linger_aio); /* waits for a running linger_expired */
    nng_aio_free(c->linger_aio);
    if (c->first_aio) nng_aio_free(c->first_aio); /* waits for a running first_frame_cb */
    free(c->rd.body);
    queue_clear_locked(c);
    for (inbox_item *i = c->ihead; i;) {
        inbox_item *n = i->next;
        rpc_frame_free(i->f);
        free(i->msg);
        free(i);
        i = n;
    }
    nng_stream_free(c->stream);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv_room);
    pthread_cond_destroy(&c->cv_writer);
    pthread_cond_destroy(&c->cv_inbox);
    pthread_cond_destroy(&c->cv_exit);
    free(c);
}

/* Close the transport once (aborts both loops' pending I/O). */
static void stream_close(rpc_conn *c) {
    pthread_mutex_lock(&c->mu);
    /* Under mu, so that no I/O starts after the close (see io_start). */
    if (!c->stream_closed) nng_stream_close(c->stream);
    c->stream_closed = 1;
    c->closing = 1;
    queue_clear_locked(c);
    pthread_cond_broadcast(&c->cv_room);
    pthread_cond_broadcast(&c->cv_writer);
    pthread_mutex_unlock(&c->mu);
}

/* Start a send or receive unless the stream is closed: nng 1.5 parks an
 * operation started after nng_stream_close forever instead of failing it.
 * Starting never blocks; completion is awaited outside the lock. */
static int io_start(rpc_conn *c, nng_aio *aio, int is_send) {
    pthread_mutex_lock(&c->mu);
    int closed = c->stream_closed;
    if (!closed) {
        if (is_send) nng_stream_send(c->stream, aio);
        else nng_stream_recv(c->stream, aio);
    }
    pthread_mutex_unlock(&c->mu);
    return closed ? RPC_ECLOSED : RPC_OK;
}

void rpc_conn_close(rpc_conn *c, int linger_ms) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    /* Without a writer nobody would flush: close at once. */
    int now = linger_ms <= 0 || !c->have_send || c->stream_closed;
    int arm = 0;
    if (!now) {
        double until = clock_now_ms() + linger_ms;
        if (!c->closing || until < c->linger_until) c->linger_until = until;
        c->closing = 1;
        arm = !c->linger_armed;
        c->linger_armed = 1;
        pthread_cond_broadcast(&c->cv_writer);
        pthread_cond_broadcast(&c->cv_room);
    }
    pthread_mutex_unlock(&c->mu);
    if (now) stream_close(c);
    /* The writer honours linger_until between frames; a frame already in
     * flight to a peer that stopped reading is cut by this timer. */
    else if (arm) nng_sleep_aio((nng_duration)linger_ms, c->linger_aio);
}

int rpc_conn_is_open(rpc_conn *c) {
    pthread_mutex_lock(&c->mu);
    int open = !c->closing;
    pthread_mutex_unlock(&c->mu);
    return open;
}

const char *rpc_conn_peer(const rpc_conn *c) { return c->peer; }

/* Write all of buf; timeout_ms < 0 = none. */
static int write_all(rpc_conn *c, nng_aio *aio, const uint8_t *buf, size_t len, int timeout_ms) {
    double until = timeout_ms >= 0 ? clock_now_ms() + timeout_ms : 0;
    while (len > 0) {
        nng_iov iov = {.iov_buf = (void *)buf, .iov_len = len};
        nng_aio_set_iov(aio, 1, &iov);
        if (timeout_ms >= 0) {
            double left = until - clock_now_ms();
            if (left <= 0) return RPC_ETIMEDOUT;
            nng_aio_set_timeout(aio, (nng_duration)(left + 1));
        } else {
            nng_aio_set_timeout(aio, NNG_DURATION_INFINITE);
        }
        if (io_start(c, aio, 1) != RPC_OK) return RPC_ECLOSED;
        nng_aio_wait(aio);
        int rv = nng_aio_result(aio);
        if (rv != 0) return map_nng(rv);
        size_t n = nng_aio_count(aio);
        if (n == 0) return RPC_EIO;
        buf += n;
        len -= n;
    }
    return RPC_OK;
}

static void thread_exit(rpc_conn *c, int is_recv) {
    pthread_mutex_lock(&c->mu);
    int last = --c->threads == 0;
    int free_here = last && c->released && c->self_release;
    pthread_cond_broadcast(&c->cv_exit);
    pthread_mutex_unlock(&c->mu);
    if (free_here) {
        /* Nobody waits: the last loop frees, after the other has ended. */
        pthread_join(is_recv ? c->send_tid : c->recv_tid, NULL);
        pthread_detach(pthread_self());
        conn_free(c);
    }
}

static void *writer_main(void *arg) {
    rpc_conn *c = arg;
    nng_aio *aio = NULL;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0) aio = NULL;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->qhead && !c->closing && !c->stream_closed)
            pthread_cond_wait(&c->cv_writer, &c->mu);
        if (c->stream_closed || !aio) break;
        if (!c->qhead) { /* closing and flushed */
            if (c->hold_close && c->linger_until > clock_now_ms()) {
                struct timespec ts = deadline_ts((int)(c->linger_until - clock_now_ms()) + 1);
                pthread_cond_timedwait(&c->cv_writer, &c->mu, &ts);
                continue;
            }
            break;
        }
        int timeout = -1;
        if (c->closing) {
            double left = c->linger_until - clock_now_ms();
            if (left <= 0) break;
            timeout = (int)left + 1;
        }
        /* Off the list but still counted (q_bytes, q_frames) while in
         * flight, so a close cannot free it under us and flush waits for it. */
        qitem *q = c->qhead;
        c->qhead = q->next;
        if (!c->qhead) c->qtail = NULL;
        pthread_mutex_unlock(&c->mu);
        int rv = write_all(c, aio, q->data, q->len, timeout);
        pthread_mutex_lock(&c->mu);
        c->q_bytes -= q->len;
        c->q_frames--;
        free(q->data);
        free(q);
        pthread_cond_broadcast(&c->cv_room);
        if (rv != RPC_OK) break;
    }
    pthread_mutex_unlock(&c->mu);
    stream_close(c); /* also ends the receive loop */
    if (aio) nng_aio_free(aio);
    thread_exit(c, 0);
    return NULL;
}

/* ---- reading frames ---- */

static void frame_rd_reset(frame_rd *r, int start_within_ms, int done_within_ms) {
    free(r->body);
    memset(r, 0, sizeof *r);
    double now = clock_now_ms();
    if (start_within_ms > 0) {
        r->start_by = now + start_within_ms;
        r->start_limit_ms = start_within_ms;
    }
    if (done_within_ms > 0) {
        r->done_by = now + done_within_ms;
        r->done_limit_ms = done_within_ms;
    }
}

static fr_state frame_rd_fail(frame_rd *r, int err, const char *fmt, ...) {
    r->err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    return FR_FAIL;
}

static fr_state frame_rd_timed_out(frame_rd *r) {
    if (r->in_body)
        return frame_rd_fail(r, RPC_EPROTO,
                             "truncated frame: %zu of %u body bytes arrived within %d ms", r->got,
                             r->len, r->done_limit_ms);
    if (r->started)
        return frame_rd_fail(r, RPC_EPROTO,
                             "truncated frame: %zu of %d length bytes arrived within %d ms", r->got,
                             RPC_HEADER_BYTES, r->done_limit_ms);
    if (r->start_by && (!r->done_by || r->start_by <= r->done_by)) {
        r->idle = 1;
        return frame_rd_fail(r, RPC_ETIMEDOUT, "no frame for %d ms (idle timeout)",
                             r->start_limit_ms);
    }
    return frame_rd_fail(r, RPC_ETIMEDOUT, "no frame within %d ms of connecting", r->done_limit_ms);
}

/* Point aio at the bytes still missing, with the time left for them. */
static fr_state frame_rd_arm(frame_rd *r, nng_aio *aio) {
    nng_iov iov;
    iov.iov_buf = r->in_body ? r->body + r->got : r->hdr + r->got;
    iov.iov_len = (r->in_body ? r->len : RPC_HEADER_BYTES) - r->got;
    nng_aio_set_iov(aio, 1, &iov);
    double by = r->done_by;
    if (!r->started && r->start_by && (!by || r->start_by < by)) by = r->start_by;
    if (!by) {
        nng_aio_set_timeout(aio, NNG_DURATION_INFINITE);
        return FR_MORE;
    }
    double left = by - clock_now_ms();
    if (left <= 0) return frame_rd_timed_out(r);
    nng_aio_set_timeout(aio, (nng_duration)left + 1);
    return FR_MORE;
}

/* Account for a finished receive (nng result rv, n bytes). */
static fr_state frame_rd_step(rpc_conn *c, frame_rd *r, int rv, size_t n) {
    if (rv == NNG_ETIMEDOUT) return frame_rd_timed_out(r);
    if (rv == 0 && n == 0) rv = NNG_ECLOSED;
    if (rv != 0 && map_nng(rv) != RPC_ECLOSED)
        return frame_rd_fail(r, map_nng(rv), "receive failed: %s", nng_strerror(rv));
    if (rv != 0 && r->in_body)
        return frame_rd_fail(r, RPC_EPROTO,
                             "truncated frame: connection closed after %zu of %u body bytes",
                             r->got, r->len);
    if (rv != 0 && r->started)
        return frame_rd_fail(r, RPC_ECLOSED,
                             "connection closed inside a frame (%zu of %d length bytes)", r->got,
                             RPC_HEADER_BYTES);
    if (rv != 0) return frame_rd_fail(r, RPC_ECLOSED, "connection closed");
    if (!r->started) {
        r->started = 1;
        double by = clock_now_ms() + c->o.frame_timeout_ms;
        if (c->o.frame_timeout_ms > 0 && (!r->done_by || by < r->done_by)) {
            r->done_by = by;
            r->done_limit_ms = c->o.frame_timeout_ms;
        }
    }
    r->got += n;
    if (!r->in_body) {
        if (r->got < RPC_HEADER_BYTES) return FR_MORE;
        r->len = rpc_frame_get_len(r->hdr);
        if (r->len > c->o.max_frame)
            return frame_rd_fail(r, RPC_ETOOBIG, "frame of %u bytes exceeds the limit of %zu bytes",
                                 r->len, c->o.max_frame);
        r->body = malloc(r->len ? r->len : 1);
        if (!r->body)
            return frame_rd_fail(r, RPC_ENOMEM, "out of memory for a frame of %u bytes", r->len);
        r->in_body = 1;
        r->got = 0;
    }
    return r->got < r->len ? FR_MORE : FR_DONE;
}

/* Blocking: read the rest of the frame r. */
static fr_state read_frame(rpc_conn *c, nng_aio *aio, frame_rd *r) {
    for (;;) {
        fr_state st = frame_rd_arm(r, aio);
        if (st != FR_MORE) return st;
        int rv = NNG_ECLOSED;
        if (io_start(c, aio, 0) == RPC_OK) {
            nng_aio_wait(aio);
            rv = nng_aio_result(aio);
        }
        st = frame_rd_step(c, r, rv, rv == 0 ? nng_aio_count(aio) : 0);
        if (st != FR_MORE) return st;
    }
}

static void inbox_push(rpc_conn *c, Rpc__Frame *f, const char *msg) {
    inbox_item *it = calloc(1, sizeof *it);
    if (!it) {
        rpc_frame_free(f);
        return;
    }
    it->f = f;
    it->msg = msg ? strdup(msg) : NULL;
    pthread_mutex_lock(&c->mu);
    if (c->itail) c->itail->next = it;
    else c->ihead = it;
    c->itail = it;
    pthread_cond_broadcast(&c->cv_inbox);
    pthread_mutex_unlock(&c->mu);
}

static int callbacks_live(rpc_conn *c) {
    pthread_mutex_lock(&c->mu);
    int live = !c->released;
    pthread_mutex_unlock(&c->mu);
    return live;
}

/* Decode a complete body (freed here) and hand it on. */
static void deliver(rpc_conn *c, uint8_t *body, uint32_t len) {
    Rpc__Frame *f = NULL;
    char derr[200];
    int rv = rpc_frame_unpack(body, len, &f, derr, sizeof derr);
    uint64_t cid = 0;
    int has_cid = rv != RPC_OK && rpc_frame_peek_call_id(body, len, &cid);
    free(body);
    if (c->inbox_mode) {
        inbox_push(c, f, rv == RPC_OK ? NULL : derr);
    } else if (!callbacks_live(c)) {
        rpc_frame_free(f);
    } else if (rv == RPC_OK) {
        if (c->h.on_frame) c->h.on_frame(c, f, c->user);
        else rpc_frame_free(f);
    } else if (c->h.on_bad_frame) {
        c->h.on_bad_frame(c, rv, has_cid, cid, derr, c->user);
    }
}

/* The idle time ran out: 1 when the owner wants the connection kept. */
static int idle_vetoed(rpc_conn *c) {
    return !c->inbox_mode && c->h.on_idle && callbacks_live(c) && !c->h.on_idle(c, c->user);
}

/* The receive loop ended with err: tell the owner, then close. */
static void reader_finish(rpc_conn *c, nng_aio *aio, int err, const char *msg) {
    int drop_input = (err == RPC_ETOOBIG || err == RPC_EPROTO) && aio;
    pthread_mutex_lock(&c->mu);
    c->hold_close = drop_input;
    c->recv_done = 1;
    c->close_err = err;
    snprintf(c->close_msg, sizeof c->close_msg, "%s", msg);
    pthread_cond_broadcast(&c->cv_inbox);
    pthread_mutex_unlock(&c->mu);
    if (!c->inbox_mode && c->h.on_close && callbacks_live(c)) c->h.on_close(c, err, msg, c->user);
    if (drop_input) {
        /* The peer may still be sending. Closing a TCP socket with unread
         * bytes sends a reset, which can destroy the STATUS on its way to
         * the peer: flush it, then read and drop input for a moment; the
         * writer holds the close back meanwhile (hold_close). */
        rpc_conn_flush(c, c->o.linger_ms);
        double until = clock_now_ms() + (c->o.linger_ms < 250 ? c->o.linger_ms : 250);
        uint8_t sink[4096];
        for (;;) {
            double left = until - clock_now_ms();
            if (left <= 0) break;
            nng_iov iov = {.iov_buf = sink, .iov_len = sizeof sink};
            nng_aio_set_iov(aio, 1, &iov);
            nng_aio_set_timeout(aio, (nng_duration)left + 1);
            if (io_start(c, aio, 0) != RPC_OK) break;
            nng_aio_wait(aio);
            if (nng_aio_result(aio) != 0) break;
        }
        pthread_mutex_lock(&c->mu);
        c->hold_close = 0;
        pthread_cond_broadcast(&c->cv_writer);
        pthread_mutex_unlock(&c->mu);
    }
    /* Let what on_close queued (a final STATUS) go out, then close. */
    rpc_conn_close(c, c->o.linger_ms);
}

static void *reader_main(void *arg) {
    rpc_conn *c = arg;
    frame_rd *r = &c->rd;
    nng_aio *aio = NULL;
    fr_state st;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
        aio = NULL;
        st = frame_rd_fail(r, RPC_ENOMEM, "out of memory");
    } else if (c->accepted) {
        st = c->first_state; /* read by first_frame_cb */
    } else {
        frame_rd_reset(r, c->o.idle_timeout_ms, 0);
        st = read_frame(c, aio, r);
    }
    for (;;) {
        if (st == FR_FAIL && !(r->idle && idle_vetoed(c))) break;
        if (st == FR_DONE) {
            uint8_t *body = r->body;
            r->body = NULL;
            deliver(c, body, r->len);
        }
        frame_rd_reset(r, c->o.idle_timeout_ms, 0);
        st = read_frame(c, aio, r);
    }
    reader_finish(c, aio, r->err, r->msg);
    if (aio) nng_aio_free(aio);
    thread_exit(c, 1);
    return NULL;
}

/* Create the writer and the receive loop, those not running yet; under
 * mu. Returns 0 or the pthread error. */
static int threads_start_locked(rpc_conn *c) {
    /* Small stacks: a server holds two loops per connection. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    int e = 0;
    if (!c->have_send && (e = pthread_create(&c->send_tid, &attr, writer_main, c)) == 0) {
        c->have_send = 1;
        c->threads++;
    }
    if (!e && !c->have_recv && (e = pthread_create(&c->recv_tid, &attr, reader_main, c)) == 0) {
        c->have_recv = 1;
        c->threads++;
    }
    pthread_attr_destroy(&attr);
    return e;
}

/* Pause before trying again to start the threads of a connection whose
 * first frame is in (the process ran out of threads for a moment). */
#define THREAD_RETRY_MS 100

/* The next read of the first frame; not FR_MORE when there is nothing to
 * wait for (the time is up, the stream is closed). */
static fr_state first_frame_next(rpc_conn *c) {
    fr_state st = frame_rd_arm(&c->rd, c->first_aio);
    if (st != FR_MORE) return st;
    if (io_start(c, c->first_aio, 0) != RPC_OK) return frame_rd_step(c, &c->rd, NNG_ECLOSED, 0);
    return FR_MORE;
}

/* nng callback: a read of the first frame finished (or a retry timer
 * fired). Once the frame is complete or has failed, start the threads;
 * the receive loop takes it from there (even a failure is reported by
 * the loop, so on_close always runs on the receive thread). */
static void first_frame_cb(void *arg) {
    rpc_conn *c = arg;
    if (c->first_state == FR_MORE) {
        int rv = nng_aio_result(c->first_aio);
        fr_state st = frame_rd_step(c, &c->rd, rv, rv == 0 ? nng_aio_count(c->first_aio) : 0);
        if (st == FR_MORE) st = first_frame_next(c);
        if (st == FR_MORE) return;
        c->first_state = st;
    }
    pthread_mutex_lock(&c->mu);
    int e = c->released ? 0 : threads_start_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (e != 0) nng_sleep_aio(THREAD_RETRY_MS, c->first_aio);
}

/* An accepted connection: read its first frame without a thread. */
static int first_frame_start(rpc_conn *c) {
    if (nng_aio_alloc(&c->first_aio, first_frame_cb, c) != 0) return RPC_ENOMEM;
    frame_rd_reset(&c->rd, 0, c->o.first_frame_timeout_ms);
    c->first_state = FR_MORE;
    fr_state st = first_frame_next(c);
    if (st != FR_MORE) {
        /* Nothing to read: hand over through the callback all the same. */
        c->first_state = st;
        nng_sleep_aio(0, c->first_aio);
    }
    return RPC_OK;
}

int rpc_conn_start(rpc_conn *c, const rpc_conn_handlers *h, void *user, char *err, size_t errlen) {
    pthread_mutex_lock(&c->mu);
    if (c->started) {
        pthread_mutex_unlock(&c->mu);
        set_err(err, errlen, "connection already started");
        return RPC_EINVAL;
    }
    if (h) c->h = *h;
    c->user = user;
    c->inbox_mode = !h || (!h->on_frame && !h->on_bad_frame && !h->on_close);
    c->started = 1;
    int e = c->accepted ? 0 : threads_start_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (c->accepted && first_frame_start(c) != RPC_OK) e = ENOMEM;
    if (e != 0) {
        set_err(err, errlen, "cannot start connection threads: %s", strerror(e));
        pthread_mutex_lock(&c->mu);
        c->recv_done = 1;
        c->close_err = RPC_ENOMEM;
        pthread_mutex_unlock(&c->mu);
        stream_close(c);
        return RPC_ENOMEM;
    }
    return RPC_OK;
}

int rpc_conn_recv(rpc_conn *c, Rpc__Frame **out, int timeout_ms, char *err, size_t errlen) {
    *out = NULL;
    struct timespec ts = deadline_ts(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->ihead) {
            inbox_item *it = c->ihead;
            c->ihead = it->next;
            if (!c->ihead) c->itail = NULL;
            pthread_mutex_unlock(&c->mu);
            int rv = RPC_OK;
            if (it->f) *out = it->f;
            else {
                rv = RPC_EPROTO;
                set_err(err, errlen, "%s", it->msg ? it->msg : "malformed frame");
            }
            free(it->msg);
            free(it);
            return rv;
        }
        if (c->recv_done || !c->started) {
            int rv = c->started ? c->close_err : RPC_EINVAL;
            set_err(err, errlen, "%s", c->started ? c->close_msg : "connection not started");
            pthread_mutex_unlock(&c->mu);
            return rv;
        }
        if (timeout_ms == 0) break;
        if (timeout_ms < 0) pthread_cond_wait(&c->cv_inbox, &c->mu);
        else if (pthread_cond_timedwait(&c->cv_inbox, &c->mu, &ts) == ETIMEDOUT && !c->ihead &&
                 !c->recv_done)
            break;
    }
    pthread_mutex_unlock(&c->mu);
    set_err(err, errlen, "no frame within %d ms", timeout_ms);
    return RPC_ETIMEDOUT;
}

/* Queue an owned buffer (freed here on failure). */
static int enqueue(rpc_conn *c, uint8_t *data, size_t len, int timeout_ms) {
    qitem *q = malloc(sizeof *q);
    if (!q) {
        free(data);
        return RPC_ENOMEM;
    }
    q->next = NULL;
    q->data = data;
    q->len = len;
    struct timespec ts = deadline_ts(timeout_ms > 0 ? timeout_ms : 0);
    int rv = RPC_OK;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->closing) {
            rv = RPC_ECLOSED;
            break;
        }
        int room = c->q_frames == 0 || (c->q_bytes + len <= c->o.max_queue_bytes &&
                                        c->q_frames < c->o.max_queue_frames);
        if (room) break;
        if (timeout_ms == 0) {
            rv = RPC_ETIMEDOUT;
            break;
        }
        if (timeout_ms < 0) pthread_cond_wait(&c->cv_room, &c->mu);
        else if (pthread_cond_timedwait(&c->cv_room, &c->mu, &ts) == ETIMEDOUT) {
            room = c->q_frames == 0 || (c->q_bytes + len <= c->o.max_queue_bytes &&
                                        c->q_frames < c->o.max_queue_frames);
            if (!room || c->closing) {
                rv = c->closing ? RPC_ECLOSED : RPC_ETIMEDOUT;
                break;
            }
        }
    }
    if (rv == RPC_OK) {
        if (c->qtail) c->qtail->next = q;
        else c->qhead = q;
        c->qtail = q;
        c->q_bytes += len;
        c->q_frames++;
        pthread_cond_signal(&c->cv_writer);
    }
    pthread_mutex_unlock(&c->mu);
    if (rv != RPC_OK) {
        free(data);
        free(q);
    }
    return rv;
}

int rpc_conn_send(rpc_conn *c, const Rpc__Frame *f, int timeout_ms) {
    uint8_t *buf;
    size_t len;
    int rv = rpc_frame_pack(f, c->o.max_frame, &buf, &len);
    if (rv != RPC_OK) return rv;
    return enqueue(c, buf, len, timeout_ms);
}

int rpc_conn_send_bytes(rpc_conn *c, const void *data, size_t len, int timeout_ms) {
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return RPC_ENOMEM;
    if (len) memcpy(buf, data, len);
    return enqueue(c, buf, len, timeout_ms);
}

int rpc_send_call(rpc_conn *c, uint64_t call_id, const char *method, uint32_t deadline_ms,
                  const char *api_key, const ProtobufCMessage *request, int timeout_ms) {
    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = call_id;
    f.type = RPC__FRAME_TYPE__FRAME_CALL;
    f.method = (char *)method;
    if (deadline_ms) {
        f.has_deadline_ms = 1;
        f.deadline_ms = deadline_ms;
    }
    f.api_key = (char *)api_key;
    uint8_t *payload = NULL;
    size_t plen = 0;
    if (request) {
        int rv = rpc_msg_pack(request, &payload, &plen);
        if (rv != RPC_OK) return rv;
        f.has_payload = 1;
        f.payload.data = payload;
        f.payload.len = plen;
    }
    int rv = rpc_conn_send(c, &f, timeout_ms);
    free(payload);
    return rv;
}

int rpc_send_message(rpc_conn *c, uint64_t call_id, const ProtobufCMessage *msg, int timeout_ms) {
    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = call_id;
    f.type = RPC__FRAME_TYPE__FRAME_MESSAGE;
    uint8_t *payload = NULL;
    size_t plen = 0;
    if (msg) {
        int rv = rpc_msg_pack(msg, &payload, &plen);
        if (rv != RPC_OK) return rv;
    }
    f.has_payload = 1;
    f.payload.data = payload;
    f.payload.len = plen;
    int rv = rpc_conn_send(c, &f, timeout_ms);
    free(payload);
    return rv;
}

int rpc_send_status(rpc_conn *c, uint64_t call_id, int code, const char *message, int timeout_ms) {
    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = call_id;
    f.type = RPC__FRAME_TYPE__FRAME_STATUS;
    f.has_status = 1;
    f.status = (Rpc__StatusCode)code;
    f.message = (char *)(message && message[0] ? message : NULL);
    return rpc_conn_send(c, &f, timeout_ms);
}

int rpc_send_cancel(rpc_conn *c, uint64_t call_id, int timeout_ms) {
    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = call_id;
    f.type = RPC__FRAME_TYPE__FRAME_CANCEL;
    return rpc_conn_send(c, &f, timeout_ms);
}

/* Before the start: write the queue in the caller's thread. */
static int flush_here(rpc_conn *c, int timeout_ms) {
    nng_aio *aio;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0) return RPC_ENOMEM;
    double until = clock_now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    int rv = RPC_OK;
    pthread_mutex_lock(&c->mu);
    while (c->qhead && rv == RPC_OK) {
        qitem *q = c->qhead;
        c->qhead = q->next;
        if (!c->qhead) c->qtail = NULL;
        pthread_mutex_unlock(&c->mu);
        int left = timeout_ms < 0 ? -1 : (int)(until - clock_now_ms());
        rv =
            timeout_ms >= 0 && left <= 0 ? RPC_ETIMEDOUT : write_all(c, aio, q->data, q->len, left);
        pthread_mutex_lock(&c->mu);
        c->q_bytes -= q->len;
        c->q_frames--;
        free(q->data);
        free(q);
    }
    pthread_cond_broadcast(&c->cv_room);
    pthread_mutex_unlock(&c->mu);
    nng_aio_free(aio);
    return rv;
}

int rpc_conn_flush(rpc_conn *c, int timeout_ms) {
    pthread_mutex_lock(&c->mu);
    int started = c->started;
    pthread_mutex_unlock(&c->mu);
    if (!started) return flush_here(c, timeout_ms);
    struct timespec ts = deadline_ts(timeout_ms > 0 ? timeout_ms : 0);
    int rv = RPC_OK;
    pthread_mutex_lock(&c->mu);
    while (c->q_frames > 0) {
        if (c->stream_closed) {
            rv = RPC_ECLOSED;
            break;
        }
        if (timeout_ms == 0) {
            rv = RPC_ETIMEDOUT;
            break;
        }
        if (timeout_ms < 0) pthread_cond_wait(&c->cv_room, &c->mu);
        else if (pthread_cond_timedwait(&c->cv_room, &c->mu, &ts) == ETIMEDOUT && c->q_frames > 0) {
            rv = RPC_ETIMEDOUT;
            break;
        }
    }
    if (rv == RPC_OK && c->stream_closed && c->q_frames > 0) rv = RPC_ECLOSED;
    pthread_mutex_unlock(&c->mu);
    return rv;
}

void rpc_conn_hold(rpc_conn *c) {
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

void rpc_conn_release(rpc_conn *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    if (!last) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->released = 1;
    int on_own_thread =
        c->threads > 0 && ((c->have_recv && pthread_equal(pthread_self(), c->recv_tid)) ||
                           (c->have_send && pthread_equal(pthread_self(), c->send_tid)));
    c->self_release = on_own_thread;
    pthread_mutex_unlock(&c->mu);
    rpc_conn_close(c, c->o.linger_ms);
    if (on_own_thread) return; /* the last loop frees */
    /* A first frame still being read ends with the close; after the stop
     * its callback starts no threads (released is set). */
    if (c->first_aio) nng_aio_stop(c->first_aio);
    pthread_mutex_lock(&c->mu);
    while (c->threads > 0) pthread_cond_wait(&c->cv_exit, &c->mu);
    pthread_mutex_unlock(&c->mu);
    if (c->have_send) pthread_join(c->send_tid, NULL);
    if (c->have_recv) pthread_join(c->recv_tid, NULL);
    conn_free(c);
}

/* ---- dialing and listening ---- */

int rpc_dial(const char *url, const rpc_tls_opts *tls, const rpc_conn_opts *o, int timeout_ms,
             rpc_conn **out, char *err, size_t errlen) {
    *out = NULL;
    if (!url || !url_supported(url)) {
        set_err(err, errlen,
                "unsupported address '%s' (expected tcp://host:port, ipc:///path "
                "or tls+tcp://host:port)",
                url ? url : "(null)");
        return RPC_EADDR;
    }
    nng_stream_dialer *d = NULL;
    nng_aio *aio = NULL;
    nng_tls_config *cfg = NULL;
    int rv = nng_stream_dialer_alloc(&d, url);
    if (rv != 0) {
        set_err(err, errlen, "bad address '%s': %s", url, nng_strerror(rv));
        return map_nng(rv) == RPC_EIO ? RPC_EADDR : map_nng(rv);
    }
    if (is_tls_url(url)) {
        int r = tls_config_make(0, url, tls, &cfg, err, errlen);
        if (r != RPC_OK) {
            nng_stream_dialer_free(d);
            return r;
        }
        if ((rv = nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg)) != 0) {
            set_err(err, errlen, "%s: cannot apply the TLS configuration: %s", url,
                    nng_strerror(rv));
            nng_tls_config_free(cfg);
            nng_stream_dialer_free(d);
            return RPC_EIO;
        }
    }
    if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
        set_err(err, errlen, "out of memory");
        if (cfg) nng_tls_config_free(cfg);
        nng_stream_dialer_free(d);
        return RPC_ENOMEM;
    }
    nng_aio_set_timeout(aio, timeout_ms < 0 ? NNG_DURATION_INFINITE : (nng_duration)timeout_ms);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    rv = nng_aio_result(aio);
    nng_stream *s = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
    nng_aio_free(aio);
    nng_stream_dialer_free(d);
    if (cfg) nng_tls_config_free(cfg); /* the dialer held its own reference */
    if (rv != 0) {
        set_err(err, errlen, "cannot connect to %s: %s", url, nng_strerror(rv));
        int r = map_nng(rv);
        return r == RPC_ECLOSED ? RPC_EIO : r;
    }
    rpc_conn *c = conn_new(s, o);
    if (!c) {
        nng_stream_free(s);
        set_err(err, errlen, "out of memory");
        return RPC_ENOMEM;
    }
    *out = c;
    return RPC_OK;
}

int rpc_listen(const char *url, const rpc_tls_opts *tls, rpc_listener **out, char *err,
               size_t errlen) {
    *out = NULL;
    if (!url || !url_supported(url)) {
        set_err(err, errlen,
                "unsupported address '%s' (expected tcp://host:port, ipc:///path "
                "or tls+tcp://host:port)",
                url ? url : "(null)");
        return RPC_EADDR;
    }
    rpc_listener *l = calloc(1, sizeof *l);
    if (!l) {
        set_err(err, errlen, "out of memory");
        return RPC_ENOMEM;
    }
    snprintf(l->url, sizeof l->url, "%s", url);
    pthread_mutex_init(&l->mu, NULL);
    int rv = nng_stream_listener_alloc(&l->l, url);
    if (rv != 0) {
        set_err(err, errlen, "bad address '%s': %s", url, nng_strerror(rv));
        pthread_mutex_destroy(&l->mu);
        free(l);
        return RPC_EADDR;
    }
    if (is_tls_url(url)) {
        int r = tls_config_make(1, url, tls, &l->tls, err, errlen);
        if (r != RPC_OK) {
            rpc_listener_free(l);
            return r;
        }
        if ((rv = nng_stream_listener_set_ptr(l->l, NNG_OPT_TLS_CONFIG, l->tls)) != 0) {
            set_err(err, errlen, "%s: cannot apply the TLS configuration: %s", url,
                    nng_strerror(rv));
            rpc_listener_free(l);
            return RPC_EIO;
        }
    }
    if ((rv = nng_stream_listener_listen(l->l)) != 0) {
        set_err(err, errlen, "cannot listen on %s: %s", url, nng_strerror(rv));
        rpc_listener_free(l);
        return rv == NNG_EADDRINUSE || rv == NNG_EADDRINVAL ? RPC_EADDR : map_nng(rv);
    }
    /* Show the real port when the URL asked for port 0. */
    int port = rpc_listener_port(l);
    size_t n = strlen(url);
    if (port > 0 && n >= 2 && strcmp(url + n - 2, ":0") == 0)
        snprintf(l->url, sizeof l->url, "%.*s:%d", (int)(n - 2), url, port);
    *out = l;
    return RPC_OK;
}

int rpc_listener_port(const rpc_listener *l) {
    int port = -1;
    if (strncmp(l->url, "ipc://", 6) == 0) return -1;
    if (nng_stream_listener_get_int(l->l, NNG_OPT_TCP_BOUND_PORT, &port) != 0) return -1;
    return port;
}

const char *rpc_listener_url(const rpc_listener *l) { return l->url; }

int rpc_listener_accept(rpc_listener *l, const rpc_conn_opts *o, rpc_conn **out, char *err,
                        size_t errlen) {
    *out = NULL;
    nng_aio *aio;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
        set_err(err, errlen, "out of memory");
        return RPC_ENOMEM;
    }
    pthread_mutex_lock(&l->mu);
    int closed = l->closed;
    if (!closed) nng_stream_listener_accept(l->l, aio);
    pthread_mutex_unlock(&l->mu);
    if (closed) {
        nng_aio_free(aio);
        set_err(err, errlen, "listener closed");
        return RPC_ECLOSED;
    }
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    nng_stream *s = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
    nng_aio_free(aio);
    if (rv != 0) {
        pthread_mutex_lock(&l->mu);
        closed = l->closed;
        pthread_mutex_unlock(&l->mu);
        if (rv == NNG_ECLOSED || closed) {
            set_err(err, errlen, "listener closed");
            return RPC_ECLOSED;
        }
        set_err(err, errlen, "accept on %s failed: %s", l->url, nng_strerror(rv));
        return map_nng(rv) == RPC_ECLOSED ? RPC_EIO : map_nng(rv);
    }
    rpc_conn *c = conn_new(s, o);
    if (!c) {
        nng_stream_free(s);
        set_err(err, errlen, "out of memory");
        return RPC_ENOMEM;
    }
    c->accepted = 1;
    *out = c;
    return RPC_OK;
}

void rpc_listener_close(rpc_listener *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    if (!l->closed) nng_stream_listener_close(l->l);
    l->closed = 1;
    pthread_mutex_unlock(&l->mu);
}

void rpc_listener_free(rpc_listener *l) {
    if (!l) return;
    rpc_listener_close(l);
    nng_stream_listener_free(l->l);
    if (l->tls) nng_tls_config_free(l->tls);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
