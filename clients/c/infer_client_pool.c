/*
 * infer_client_pool.c - the endpoints of an infer_client: which servers
 * are up (the heartbeat thread), which one takes a new call, and failover.
 *
 * Choice: among the endpoints that are up, the one with the fewest calls in
 * flight from this client; ties go to the shorter server queue (Stats
 * `waiting` from the last heartbeat: only a queue counts, because a count
 * that moves with every step, like free KV blocks, would send every tie to
 * whichever server looked idlest at one instant for a whole interval);
 * remaining ties go round robin from after the last endpoint chosen.
 *
 * Heartbeat: one thread visits each endpoint when its timer is due. An
 * endpoint with a connection gets Health (and Stats for its queue); one
 * without is dialled first. Health SERVING marks it up; any failure marks
 * it down and sets the timer to a backoff that doubles from an eighth of
 * the interval up to the interval (so a server that comes back is used
 * again within about one interval of its return). A connection that is
 * still open but fails Health is kept (its calls go on; they have their
 * deadlines), one that closed is dropped. Calls that see their connection
 * close mark the endpoint down at once and wake the heartbeat.
 *
 * Locking: c->mu guards every endpoint's state; it is never held across a
 * round trip. Only the heartbeat thread (and infer_close, after joining
 * it) changes an endpoint's conn, so the heartbeat may use it unlocked.
 * Order: c->mu before a connection's own mutex (icl_conn_is_up), never the
 * reverse. The in-flight counts are atomics: the pool adds when it picks,
 * a connection subtracts when the call ends.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/c/infer_client_impl.h"

#define ICL_DEFAULT_CONNECT_MS 5000
#define ICL_DEFAULT_HEARTBEAT_S 5.0
#define ICL_BEAT_MIN_MS 500 /* Health deadline: the interval, within these */
#define ICL_BEAT_MAX_MS 5000
#define ICL_BACKOFF_MIN_NS 50000000LL

typedef struct {
    char *url;
    icl_conn *conn; /* NULL while no connection; changed by the heartbeat only */
    int up;         /* takes new calls */
    atomic_int inflight;
    int64_t calls;
    int64_t waiting; /* Stats at the last heartbeat; -1 unknown */
    int fails;       /* consecutive failed heartbeats: the backoff exponent */
    int64_t next_ns; /* when the heartbeat visits next (CLOCK_MONOTONIC) */
    char last_error[160];
} icl_endpoint;

struct infer_client {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* wakes the heartbeat: stop, or an endpoint went down */
    icl_endpoint *eps;
    size_t n;
    size_t rr;           /* round-robin start of the next choice */
    infer_client_opts o; /* its strings are copies owned here */
    int connect_ms;
    int64_t interval_ns; /* 0: no heartbeat */
    int hb_running;
    int stop;
    pthread_t hb;
};

static int64_t icl_pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t icl_backoff_ns(const infer_client *c, int fails) {
    int64_t d = c->interval_ns / 8;
    if (d < ICL_BACKOFF_MIN_NS) d = ICL_BACKOFF_MIN_NS;
    for (int k = 1; k < fails && d < c->interval_ns; k++) d *= 2;
    return d < c->interval_ns ? d : c->interval_ns;
}

static int icl_beat_ms(const infer_client *c) {
    int64_t ms = c->interval_ns / 1000000;
    if (ms < ICL_BEAT_MIN_MS) ms = ICL_BEAT_MIN_MS;
    if (ms > ICL_BEAT_MAX_MS) ms = ICL_BEAT_MAX_MS;
    return (int)ms;
}

/* An endpoint's connection is gone (seen by a call or a choice): no new
 * calls until the heartbeat has dialled it again. c->mu held. */
static void icl_mark_down_locked(infer_client *c, icl_endpoint *ep, const char *why) {
    if (!ep->up) return;
    ep->up = 0;
    snprintf(ep->last_error, sizeof ep->last_error, "%.150s", why);
    ep->next_ns = icl_pool_now_ns();
    pthread_cond_signal(&c->cv);
}

/* ---- heartbeat ---- */

/* Health, then Stats (its queue; a failed Stats only leaves it unknown).
 * Returns 1 when Health answered. */
static int icl_probe(icl_conn *conn, int ms, char *health, size_t hlen, int64_t *waiting, char *err,
                     size_t errlen) {
    infer_status st = {0};
    Rpc__Frame *f = NULL;
    Inference__HealthRequest hq = INFERENCE__HEALTH_REQUEST__INIT;
    int code = icl_conn_unary(conn, "Health", &hq.base, ms, NULL, &f, &st);
    if (code == INFER_OK) code = icl_health_decode(f, health, hlen, &st);
    if (f) rpc_frame_free(f);
    if (code != INFER_OK) {
        snprintf(err, errlen, "Health: %s: %.120s", infer_status_name(code), st.message);
        return 0;
    }
    *waiting = -1;
    Inference__StatsRequest sq = INFERENCE__STATS_REQUEST__INIT;
    infer_stats_t s;
    if (icl_conn_unary(conn, "Stats", &sq.base, ms, NULL, &f, &st) == INFER_OK) {
        if (icl_stats_decode(f, &s, &st) == INFER_OK) *waiting = s.waiting;
        rpc_frame_free(f);
    }
    return 1;
}

/* Visit one endpoint. Called and returns with c->mu held; drops it for the
 * round trips. */
static void icl_beat(infer_client *c, icl_endpoint *ep) {
    icl_conn *conn = ep->conn, *fresh = NULL;
    pthread_mutex_unlock(&c->mu);
    char err[160] = "", health[32] = "";
    int64_t waiting = -1;
    int ms = icl_beat_ms(c), ok;
    if (!conn) {
        int dial_ms = c->connect_ms > 0 && c->connect_ms < ms ? c->connect_ms : ms;
        ok = icl_conn_open(ep->url, &c->o, dial_ms, &fresh, err, sizeof err) == 0;
        conn = fresh;
    } else {
        ok = icl_conn_is_up(conn);
        if (!ok) snprintf(err, sizeof err, "connection lost");
    }
    if (ok) ok = icl_probe(conn, ms, health, sizeof health, &waiting, err, sizeof err);

    icl_conn *drop = NULL;
    pthread_mutex_lock(&c->mu);
    if (ok) {
        if (fresh) ep->conn = fresh;
        ep->up = !strcmp(health, "SERVING");
        if (!ep->up) snprintf(ep->last_error, sizeof ep->last_error, "server is %s", health);
        ep->waiting = waiting;
        ep->fails = 0;
        ep->next_ns = icl_pool_now_ns() + c->interval_ns;
        return;
    }
    ep->up = 0;
    ep->fails++;
    snprintf(ep->last_error, sizeof ep->last_error, "%s", err);
    ep->next_ns = icl_pool_now_ns() + icl_backoff_ns(c, ep->fails);
    if (fresh) {
        drop = fresh;
    } else if (conn && !icl_conn_is_up(conn)) {
        drop = conn;
        ep->conn = NULL;
    }
    if (drop) {
        pthread_mutex_unlock(&c->mu);
        icl_conn_shut(drop);
        icl_conn_unref(drop);
        pthread_mutex_lock(&c->mu);
    }
}

static void *icl_heartbeat_main(void *arg) {
    infer_client *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        int64_t wake = icl_pool_now_ns() + c->interval_ns;
        for (size_t i = 0; i < c->n && !c->stop; i++) {
            icl_endpoint *ep = &c->eps[i];
            if (ep->next_ns <= icl_pool_now_ns()) icl_beat(c, ep);
            if (ep->next_ns < wake) wake = ep->next_ns;
        }
        if (c->stop || wake <= icl_pool_now_ns()) continue;
        struct timespec ts = {(time_t)(wake / 1000000000), (long)(wake % 1000000000)};
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- choice and failover ---- */

/* The endpoint for a new call, not among `tried` (bit i = endpoint i);
 * NULL when none is up. Counts the call in flight there and gives a
 * reference on its connection (*conn) to the caller. */
static icl_endpoint *icl_pick(infer_client *c, uint64_t tried, size_t *idx, icl_conn **conn) {
    pthread_mutex_lock(&c->mu);
    icl_endpoint *best = NULL;
    int best_fl = 0;
    int64_t best_w = 0;
    for (size_t k = 0; k < c->n; k++) {
        size_t i = (c->rr + k) % c->n;
        icl_endpoint *ep = &c->eps[i];
        if ((tried >> i) & 1 || !ep->up || !ep->conn) continue;
        if (!icl_conn_is_up(ep->conn)) {
            icl_mark_down_locked(c, ep, "connection lost");
            continue;
        }
        int fl = atomic_load(&ep->inflight);
        int64_t w = ep->waiting > 0 ? ep->waiting : 0;
        if (!best || fl < best_fl || (fl == best_fl && w < best_w)) {
            best = ep;
            best_fl = fl;
            best_w = w;
            *idx = i;
        }
    }
    if (best) {
        c->rr = *idx + 1;
        best->calls++;
        atomic_fetch_add(&best->inflight, 1);
        icl_conn_ref(best->conn);
        *conn = best->conn;
    }
    pthread_mutex_unlock(&c->mu);
    return best;
}

/* After an attempt that ended UNAVAILABLE: if its connection is gone, the
 * endpoint is down. Drops the attempt's reference. */
static void icl_attempt_failed(infer_client *c, icl_endpoint *ep, icl_conn *conn, const char *why) {
    if (!icl_conn_is_up(conn)) {
        pthread_mutex_lock(&c->mu);
        if (ep->conn == conn) icl_mark_down_locked(c, ep, why);
        pthread_mutex_unlock(&c->mu);
    }
    icl_conn_unref(conn);
}

/* Milliseconds left before end (0: no deadline -> deadline_ms as given);
 * <= 0 when it has passed. */
static int icl_left_ms(int64_t end, int deadline_ms) {
    if (!end) return deadline_ms;
    int64_t ns = end - icl_pool_now_ns();
    return ns <= 0 ? 0 : (int)((ns + 999999) / 1000000);
}

static int icl_copy_status(infer_status *st, const infer_status *s) {
    if (st) *st = *s;
    return s->code;
}

int icl_unary(infer_client *c, const char *method, const ProtobufCMessage *req, int deadline_ms,
              Rpc__Frame **reply, infer_status *st) {
    *reply = NULL;
    int64_t end = deadline_ms > 0 ? icl_pool_now_ns() + (int64_t)deadline_ms * 1000000 : 0;
    infer_status s;
    icl_status(&s, INFER_UNAVAILABLE, "%s: no server is up (%zu endpoints)", method, c->n);
    uint64_t tried = 0;
    for (int attempt = 0;; attempt++) {
        int left = icl_left_ms(end, deadline_ms);
        if (end && left <= 0) {
            icl_status(&s, INFER_DEADLINE_EXCEEDED,
                       "deadline of %d ms exceeded after %d attempts (last: %.150s)", deadline_ms,
                       attempt, s.message);
            break;
        }
        size_t i;
        icl_conn *conn;
        icl_endpoint *ep = icl_pick(c, tried, &i, &conn);
        if (!ep) break; /* every endpoint up has been tried: the last status stands */
        tried |= 1ull << i;
        int code = icl_conn_unary(conn, method, req, left, &ep->inflight, reply, &s);
        if (code != INFER_UNAVAILABLE) {
            icl_conn_unref(conn);
            break;
        }
        icl_attempt_failed(c, ep, conn, s.message);
    }
    return icl_copy_status(st, &s);
}

int icl_stream_start(infer_client *c, const char *method, const ProtobufCMessage *req,
                     int deadline_ms, infer_chunk_fn cb, void *user, infer_call **out,
                     infer_status *st) {
    *out = NULL;
    int64_t end = deadline_ms > 0 ? icl_pool_now_ns() + (int64_t)deadline_ms * 1000000 : 0;
    infer_status s;
    icl_status(&s, INFER_UNAVAILABLE, "%s: no server is up (%zu endpoints)", method, c->n);
    uint64_t tried = 0;
    for (;;) {
        int left = icl_left_ms(end, deadline_ms);
        if (end && left <= 0) {
            icl_status(&s, INFER_DEADLINE_EXCEEDED, "deadline of %d ms exceeded", deadline_ms);
            break;
        }
        size_t i;
        icl_conn *conn;
        icl_endpoint *ep = icl_pick(c, tried, &i, &conn);
        if (!ep) break;
        tried |= 1ull << i;
        int code = icl_conn_call_start(conn, method, req, left, cb, user, &ep->inflight, out, &s);
        /* Only a call that never left this process may go elsewhere: once
         * sent, its tokens may already be on their way. */
        if (code == INFER_UNAVAILABLE && !icl_conn_is_up(conn)) {
            icl_attempt_failed(c, ep, conn, s.message);
            continue;
        }
        icl_conn_unref(conn); /* a started call holds its own reference */
        break;
    }
    return icl_copy_status(st, &s);
}

/* ---- the client ---- */

static void icl_client_free(infer_client *c) {
    for (size_t i = 0; i < c->n; i++) {
        if (c->eps[i].conn) {
            icl_conn_shut(c->eps[i].conn);
            icl_conn_unref(c->eps[i].conn);
        }
        free(c->eps[i].url);
    }
    free(c->eps);
    free((char *)c->o.api_key);
    free((char *)c->o.tls_ca_file);
    free((char *)c->o.tls_cert_key_file);
    free((char *)c->o.tls_server_name);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Replace *s by a copy of it; 0, or -1 when out of memory. */
static int icl_dup(const char **s) {
    if (!*s) return 0;
    *s = strdup(*s);
    return *s ? 0 : -1;
}

/* The client with its endpoints, nothing dialled; NULL with err set. */
static infer_client *icl_client_new(const char *const *urls, size_t n,
                                    const infer_client_opts *opts, char *err, size_t errlen) {
    infer_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (opts) c->o = *opts;
    int bad = icl_dup(&c->o.api_key) | icl_dup(&c->o.tls_ca_file) |
              icl_dup(&c->o.tls_cert_key_file) | icl_dup(&c->o.tls_server_name);
    c->eps = calloc(n, sizeof *c->eps);
    if (bad || !c->eps) goto oom;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        atomic_init(&c->eps[i].inflight, 0);
        c->eps[i].waiting = -1;
        if (!(c->eps[i].url = strdup(urls[i]))) goto oom;
    }
    c->connect_ms = c->o.connect_timeout_ms ? c->o.connect_timeout_ms : ICL_DEFAULT_CONNECT_MS;
    double hb = c->o.heart_beat_interval_seconds;
    if (hb == 0) hb = ICL_DEFAULT_HEARTBEAT_S;
    c->interval_ns = hb > 0 ? (int64_t)(hb * 1e9) : 0;
    if (hb > 0 && c->interval_ns < 1000000) c->interval_ns = 1000000;
    return c;
oom:
    snprintf(err, errlen, "out of memory");
    icl_client_free(c);
    return NULL;
}

int infer_connect_multi(const char *const *urls, size_t n_urls, const infer_client_opts *opts,
                        infer_client **out, char *err, size_t errlen) {
    *out = NULL;
    if (!urls || n_urls == 0 || n_urls > INFER_MAX_ENDPOINTS) {
        snprintf(err, errlen, "between 1 and %d server URLs are needed", INFER_MAX_ENDPOINTS);
        return -1;
    }
    for (size_t i = 0; i < n_urls; i++) {
        if (!urls[i] || !*urls[i]) {
            snprintf(err, errlen, "no server URL");
            return -1;
        }
    }
    infer_client *c = icl_client_new(urls, n_urls, opts, err, errlen);
    if (!c) return -1;
    size_t n_up = 0;
    int64_t now = icl_pool_now_ns();
    for (size_t i = 0; i < n_urls; i++) {
        icl_endpoint *ep = &c->eps[i];
        char e[200];
        if (icl_conn_open(ep->url, &c->o, c->connect_ms, &ep->conn, e, sizeof e) == 0) {
            ep->up = 1;
            ep->next_ns = now + c->interval_ns;
            n_up++;
        } else {
            snprintf(ep->last_error, sizeof ep->last_error, "%.150s", e);
            ep->fails = 1;
            ep->next_ns = now + icl_backoff_ns(c, 1);
        }
    }
    if (!n_up) {
        if (n_urls == 1) snprintf(err, errlen, "%s", c->eps[0].last_error);
        else
            snprintf(err, errlen, "none of the %zu servers answered (%s: %s)", n_urls,
                     c->eps[0].url, c->eps[0].last_error);
        icl_client_free(c);
        return -1;
    }
    if (c->interval_ns) {
        int rc = pthread_create(&c->hb, NULL, icl_heartbeat_main, c);
        if (rc) {
            snprintf(err, errlen, "heartbeat thread: %s", strerror(rc));
            icl_client_free(c);
            return -1;
        }
        c->hb_running = 1;
    }
    *out = c;
    return 0;
}

int infer_connect(const char *url, const infer_client_opts *opts, infer_client **out, char *err,
                  size_t errlen) {
    return infer_connect_multi(&url, 1, opts, out, err, errlen);
}

void infer_close(infer_client *c) {
    if (!c) return;
    if (c->hb_running) {
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->hb, NULL);
    }
    icl_client_free(c);
}

int infer_connected(infer_client *c) {
    pthread_mutex_lock(&c->mu);
    int up = 0;
    for (size_t i = 0; i < c->n && !up; i++)
        up = c->eps[i].up && c->eps[i].conn && icl_conn_is_up(c->eps[i].conn);
    pthread_mutex_unlock(&c->mu);
    return up;
}

size_t infer_endpoints(infer_client *c, infer_endpoint_info *out, size_t max) {
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n && i < max; i++) {
        const icl_endpoint *ep = &c->eps[i];
        infer_endpoint_info *e = &out[i];
        snprintf(e->url, sizeof e->url, "%s", ep->url);
        e->up = ep->up && ep->conn && icl_conn_is_up(ep->conn);
        e->in_flight = atomic_load(&ep->inflight);
        e->calls = ep->calls;
        e->waiting = ep->waiting;
        snprintf(e->last_error, sizeof e->last_error, "%s", ep->last_error);
    }
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}
