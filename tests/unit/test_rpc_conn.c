/*
 * test_rpc_conn.c - RPC connections over real loopback transports, no model
 * (rpc/rpc_conn.c):
 *   - frames cross tcp:// and ipc:// intact and in order, from several
 *     sending threads at once, in callback mode and in inbox mode;
 *   - a frame over the receiver's cap ends its loop with RPC_ETOOBIG before
 *     the body is read, and a STATUS queued from on_close still reaches the
 *     peer before the connection closes;
 *   - an undecodable body is reported and the next frame still arrives;
 *   - a frame that stalls midway is cut after frame_timeout_ms;
 *   - accepted connections that have not sent a frame add no threads; a
 *     silent one is closed after first_frame_timeout_ms (RPC_ETIMEDOUT), a
 *     partial first frame after frame_timeout_ms (RPC_EPROTO);
 *   - idle_timeout_ms closes a connection without frames, unless on_idle
 *     keeps it (work in flight);
 *   - backpressure: against a peer that does not read, sends fail with
 *     RPC_ETIMEDOUT once the bounded queue is full, and succeed again when
 *     it drains;
 *   - closing one end ends the other's loop (RPC_ECLOSED); releasing from
 *     inside a callback is safe;
 *   - tls+tcp:// works with a throw-away self-signed certificate (skipped
 *     when the openssl tool is missing).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"
#include "tests/common/test_util.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A connected pair: client dialed, server accepted (neither started). */
typedef struct {
    rpc_listener *l;
    rpc_conn *cli, *srv;
} pair;

typedef struct {
    rpc_listener *l;
    const rpc_conn_opts *o;
    rpc_conn *c;
    int rc;
} accept_job;

static void *accept_thread(void *arg) {
    accept_job *j = arg;
    char err[256];
    j->rc = rpc_listener_accept(j->l, j->o, &j->c, err, sizeof err);
    if (j->rc != RPC_OK) fprintf(stderr, "accept: %s\n", err);
    return NULL;
}

static int make_pair(const char *url, const rpc_tls_opts *stls, const rpc_tls_opts *ctls,
                     const rpc_conn_opts *so, const rpc_conn_opts *co, pair *p) {
    memset(p, 0, sizeof *p);
    char err[256];
    if (rpc_listen(url, stls, &p->l, err, sizeof err) != RPC_OK) {
        fprintf(stderr, "listen %s: %s\n", url, err);
        return -1;
    }
    accept_job j = {p->l, so, NULL, 0};
    pthread_t t;
    pthread_create(&t, NULL, accept_thread, &j);
    int rc = rpc_dial(rpc_listener_url(p->l), ctls, co, 5000, &p->cli, err, sizeof err);
    if (rc != RPC_OK) {
        fprintf(stderr, "dial %s: %s\n", rpc_listener_url(p->l), err);
        rpc_listener_close(p->l);
    }
    pthread_join(t, NULL);
    p->srv = j.c;
    return rc == RPC_OK && j.rc == RPC_OK ? 0 : -1;
}

static void free_pair(pair *p) {
    if (p->cli) rpc_conn_release(p->cli);
    if (p->srv) rpc_conn_release(p->srv);
    rpc_listener_free(p->l);
}

/* ---- callback mode: an echo server ---- */

typedef struct {
    atomic_int frames, bad, closed, close_err;
} echo_state;

static void echo_frame(rpc_conn *c, Rpc__Frame *f, void *user) {
    echo_state *st = user;
    atomic_fetch_add(&st->frames, 1);
    /* answer every CALL with its payload as a MESSAGE, then OK */
    Rpc__Frame m = RPC__FRAME__INIT;
    m.call_id = f->call_id;
    m.type = RPC__FRAME_TYPE__FRAME_MESSAGE;
    m.has_payload = f->has_payload;
    m.payload = f->payload;
    rpc_conn_send(c, &m, 5000);
    rpc_send_status(c, f->call_id, 0, NULL, 5000);
    rpc_frame_free(f);
}

static void echo_bad(rpc_conn *c, int err, int has_id, uint64_t id, const char *msg, void *user) {
    (void)err;
    echo_state *st = user;
    atomic_fetch_add(&st->bad, 1);
    rpc_send_status(c, has_id ? id : 0, 3, msg, 5000);
}

static void echo_close(rpc_conn *c, int err, const char *msg, void *user) {
    echo_state *st = user;
    atomic_store(&st->close_err, err);
    if (err == RPC_ETOOBIG) rpc_send_status(c, 0, 8, msg, 5000);
    atomic_store(&st->closed, 1);
}

static const rpc_conn_handlers ECHO = {echo_frame, echo_bad, echo_close, NULL};

typedef struct {
    rpc_conn *c;
    int base;
    int n;
} sender_job;

static void *sender_thread(void *arg) {
    sender_job *j = arg;
    for (int i = 0; i < j->n; i++) {
        Inference__TokenizeRequest t = INFERENCE__TOKENIZE_REQUEST__INIT;
        char text[32];
        snprintf(text, sizeof text, "msg %d", j->base + i);
        t.text = text;
        if (rpc_send_call(j->c, (uint64_t)(j->base + i), "x/Echo", 0, NULL, &t.base, 5000) !=
            RPC_OK)
            break;
    }
    return NULL;
}

static void test_echo(const char *url) {
    pair p;
    echo_state st = {0};
    CHECKF(make_pair(url, NULL, NULL, NULL, NULL, &p) == 0, "%s", url);
    if (!p.srv || !p.cli) {
        free_pair(&p);
        return;
    }
    char err[256];
    CHECK(rpc_conn_start(p.srv, &ECHO, &st, err, sizeof err) == RPC_OK);
    CHECK(rpc_conn_start(p.cli, NULL, NULL, err, sizeof err) == RPC_OK);

    /* 4 threads x 250 calls; per call: MESSAGE (same payload) then STATUS */
    enum { T = 4, N = 250 };
    pthread_t th[T];
    sender_job jobs[T];
    for (int i = 0; i < T; i++) {
        jobs[i] = (sender_job){p.cli, 1 + i * N, N};
        pthread_create(&th[i], NULL, sender_thread, &jobs[i]);
    }
    static int state[T * N + 1]; /* 0 nothing, 1 message seen, 2 status after message */
    memset(state, 0, sizeof state);
    int done = 0, in_order = 1, payload_ok = 1;
    double t0 = now_ms();
    while (done < T * N && now_ms() - t0 < 20000) {
        Rpc__Frame *f;
        if (rpc_conn_recv(p.cli, &f, 1000, err, sizeof err) != RPC_OK) continue;
        int id = (int)f->call_id;
        if (id < 1 || id > T * N) {
            in_order = 0;
        } else if (f->type == RPC__FRAME_TYPE__FRAME_MESSAGE) {
            if (state[id] != 0) in_order = 0;
            state[id] = 1;
            Inference__TokenizeRequest *t =
                inference__tokenize_request__unpack(NULL, f->payload.len, f->payload.data);
            char want[32];
            snprintf(want, sizeof want, "msg %d", id);
            if (!t || !t->text || strcmp(t->text, want) != 0) payload_ok = 0;
            if (t) inference__tokenize_request__free_unpacked(t, NULL);
        } else if (f->type == RPC__FRAME_TYPE__FRAME_STATUS) {
            if (state[id] != 1) in_order = 0;
            state[id] = 2;
            done++;
        }
        rpc_frame_free(f);
    }
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    CHECKF(done == T * N, "%s: %d of %d calls answered", url, done, T * N);
    CHECK(in_order);
    CHECK(payload_ok);
    CHECK(atomic_load(&st.frames) == T * N);

    /* garbage body: reported, and the connection goes on */
    const uint8_t bad[] = {3, 0, 0, 0, 0x08, 0x09, 0xff};
    CHECK(rpc_conn_send_bytes(p.cli, bad, sizeof bad, 1000) == RPC_OK);
    CHECK(rpc_send_call(p.cli, 5000, "x/Echo", 0, NULL, NULL, 1000) == RPC_OK);
    int got_bad = 0, got_next = 0;
    t0 = now_ms();
    while (!(got_bad && got_next) && now_ms() - t0 < 5000) {
        Rpc__Frame *f;
        if (rpc_conn_recv(p.cli, &f, 1000, err, sizeof err) != RPC_OK) continue;
        if (f->type == RPC__FRAME_TYPE__FRAME_STATUS && f->call_id == 9 && f->status == 3)
            got_bad = 1; /* the call id was recovered from the broken body */
        if (f->type == RPC__FRAME_TYPE__FRAME_STATUS && f->call_id == 5000) got_next = 1;
        rpc_frame_free(f);
    }
    CHECK(got_bad && got_next);
    CHECK(atomic_load(&st.bad) == 1);

    /* closing the client ends the server's loop */
    rpc_conn_close(p.cli, 0);
    t0 = now_ms();
    while (!atomic_load(&st.closed) && now_ms() - t0 < 5000) usleep(1000);
    CHECK(atomic_load(&st.closed) == 1 && atomic_load(&st.close_err) == RPC_ECLOSED);
    CHECK(rpc_send_call(p.cli, 1, "x/Echo", 0, NULL, NULL, 0) == RPC_ECLOSED);
    Rpc__Frame *f;
    CHECK(rpc_conn_recv(p.cli, &f, 2000, err, sizeof err) == RPC_ECLOSED);
    free_pair(&p);
    printf("%s: %d calls from %d threads, in order\n", url, T * N, T);
}

/* ---- caps, timeouts, backpressure ---- */

static void test_oversized(void) {
    pair p;
    echo_state st = {0};
    rpc_conn_opts so;
    rpc_conn_opts_default(&so);
    so.max_frame = 1024;
    CHECK(make_pair("tcp://127.0.0.1:0", NULL, NULL, &so, NULL, &p) == 0);
    if (!p.srv || !p.cli) {
        free_pair(&p);
        return;
    }
    char err[256];
    CHECK(rpc_conn_start(p.srv, &ECHO, &st, err, sizeof err) == RPC_OK);
    CHECK(rpc_conn_start(p.cli, NULL, NULL, err, sizeof err) == RPC_OK);
    /* a real 4 KiB frame: the receiver refuses it from the prefix */
    Rpc__Frame f = RPC__FRAME__INIT;
    static uint8_t big[4096];
    f.call_id = 1;
    f.type = RPC__FRAME_TYPE__FRAME_CALL;
    f.has_payload = 1;
    f.payload.data = big;
    f.payload.len = sizeof big;
    CHECK(rpc_conn_send(p.cli, &f, 1000) == RPC_OK);
    Rpc__Frame *g = NULL;
    int rv = rpc_conn_recv(p.cli, &g, 5000, err, sizeof err);
    CHECKF(rv == RPC_OK && g && g->type == RPC__FRAME_TYPE__FRAME_STATUS && g->status == 8 &&
               strstr(g->message, "exceeds the limit of 1024 bytes"),
           "rv %d", rv);
    rpc_frame_free(g);
    CHECK(rpc_conn_recv(p.cli, &g, 5000, err, sizeof err) == RPC_ECLOSED);
    CHECK(atomic_load(&st.close_err) == RPC_ETOOBIG);
    CHECK(atomic_load(&st.frames) == 0);
    /* and a sender refuses to build a frame over its own cap */
    rpc_conn_opts co;
    rpc_conn_opts_default(&co);
    free_pair(&p);
    co.max_frame = 100;
    CHECK(make_pair("tcp://127.0.0.1:0", NULL, NULL, NULL, &co, &p) == 0);
    if (p.cli) CHECK(rpc_conn_send(p.cli, &f, 0) == RPC_ETOOBIG);
    free_pair(&p);
    printf("oversized frames: refused before the body, STATUS delivered, closed\n");
}

static void test_frame_timeout(void) {
    pair p;
    rpc_conn_opts so;
    rpc_conn_opts_default(&so);
    so.frame_timeout_ms = 200;
    CHECK(make_pair("tcp://127.0.0.1:0", NULL, NULL, &so, NULL, &p) == 0);
    if (!p.srv || !p.cli) {
        free_pair(&p);
        return;
    }
    char err[256];
    CHECK(rpc_conn_start(p.srv, NULL, NULL, err, sizeof err) == RPC_OK);
    CHECK(rpc_conn_start(p.cli, NULL, NULL, err, sizeof err) == RPC_OK);
    /* idle connections are not timed out */
    Rpc__Frame *g;
    CHECK(rpc_conn_recv(p.srv, &g, 400, err, sizeof err) == RPC_ETIMEDOUT);
    const uint8_t part[] = {50, 0, 0, 0, 0x08, 0x01};
    double t0 = now_ms();
    CHECK(rpc_conn_send_bytes(p.cli, part, sizeof part, 1000) == RPC_OK);
    int rv = rpc_conn_recv(p.srv, &g, 5000, err, sizeof err);
    double took = now_ms() - t0;
    CHECKF(rv == RPC_EPROTO && strstr(err, "truncated frame: 2 of 50 body bytes"), "%d %s", rv,
           err);
    CHECKF(took >= 150 && took < 2000, "cut after %.0f ms", took);
    free_pair(&p);
    printf("stalled frame: cut after %.0f ms (frame_timeout_ms 200)\n", took);
}

static void test_backpressure(void) {
    pair p;
    rpc_conn_opts co;
    rpc_conn_opts_default(&co);
    co.max_queue_bytes = 64 << 10;
    co.max_queue_frames = 16;
    CHECK(make_pair("tcp://127.0.0.1:0", NULL, NULL, NULL, &co, &p) == 0);
    if (!p.srv || !p.cli) {
        free_pair(&p);
        return;
    }
    char err[256];
    /* The server is not started: nobody reads its socket. */
    CHECK(rpc_conn_start(p.cli, NULL, NULL, err, sizeof err) == RPC_OK);
    static uint8_t blob[60000];
    Rpc__Frame f = RPC__FRAME__INIT;
    f.type = RPC__FRAME_TYPE__FRAME_MESSAGE;
    f.has_payload = 1;
    f.payload.data = blob;
    f.payload.len = sizeof blob;
    int sent = 0, rv = RPC_OK;
    double t0 = now_ms();
    while (now_ms() - t0 < 20000) {
        f.call_id = (uint64_t)sent + 1;
        rv = rpc_conn_send(p.cli, &f, 100);
        if (rv != RPC_OK) break;
        sent++;
    }
    CHECKF(rv == RPC_ETIMEDOUT, "send result %d after %d frames", rv, sent);
    CHECK(sent > 1); /* kernel buffers took some */
    CHECK(rpc_conn_flush(p.cli, 50) == RPC_ETIMEDOUT);
    /* start reading: the queue drains and sends succeed again */
    CHECK(rpc_conn_start(p.srv, NULL, NULL, err, sizeof err) == RPC_OK);
    int got = 0;
    t0 = now_ms();
    while (got < sent && now_ms() - t0 < 20000) {
        Rpc__Frame *g;
        if (rpc_conn_recv(p.srv, &g, 1000, err, sizeof err) != RPC_OK) continue;
        CHECK(g->call_id == (uint64_t)got + 1 && g->payload.len == sizeof blob);
        got++;
        rpc_frame_free(g);
    }
    CHECK(got == sent);
    CHECK(rpc_conn_flush(p.cli, 5000) == RPC_OK);
    f.call_id = 999999;
    CHECK(rpc_conn_send(p.cli, &f, 1000) == RPC_OK);
    free_pair(&p);
    printf("backpressure: %d frames of 60 KB queued/in flight, then RPC_ETIMEDOUT; drained\n",
           sent);
}

/* ---- accepted connections: first frame, idle time ---- */

static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

typedef struct {
    atomic_int frames, closed, close_err, busy;
    char close_msg[256];
} watch_state;

static void watch_frame(rpc_conn *c, Rpc__Frame *f, void *user) {
    (void)c;
    watch_state *st = user;
    atomic_fetch_add(&st->frames, 1);
    rpc_frame_free(f);
}

static void watch_close(rpc_conn *c, int err, const char *msg, void *user) {
    (void)c;
    watch_state *st = user;
    snprintf(st->close_msg, sizeof st->close_msg, "%s", msg);
    atomic_store(&st->close_err, err);
    atomic_fetch_add(&st->closed, 1);
}

static int watch_idle(rpc_conn *c, void *user) {
    (void)c;
    watch_state *st = user;
    return !atomic_load(&st->busy);
}

static const rpc_conn_handlers WATCH = {watch_frame, NULL, watch_close, watch_idle};

static int wait_closed(watch_state *st, int n, int timeout_ms) {
    double t0 = now_ms();
    while (atomic_load(&st->closed) < n && now_ms() - t0 < timeout_ms) usleep(2000);
    return atomic_load(&st->closed) >= n;
}

/* n accepted connections, started lazily; dialed ones are not started. */
static int accept_many(rpc_listener *l, const rpc_conn_opts *so, watch_state *st, int n,
                       rpc_conn **cli, rpc_conn **srv) {
    char err[256];
    for (int i = 0; i < n; i++) {
        if (rpc_dial(rpc_listener_url(l), NULL, NULL, 5000, &cli[i], err, sizeof err) != RPC_OK ||
            rpc_listener_accept(l, so, &srv[i], err, sizeof err) != RPC_OK ||
            rpc_conn_start(srv[i], &WATCH, &st[i], err, sizeof err) != RPC_OK) {
            fprintf(stderr, "connection %d: %s\n", i, err);
            return i;
        }
    }
    return n;
}

static void test_first_frame(void) {
    enum { N = 200 };
    static rpc_conn *cli[N], *srv[N];
    static watch_state st[N];
    memset(st, 0, sizeof st);
    rpc_listener *l = NULL;
    char err[256];
    CHECK(rpc_listen("tcp://127.0.0.1:0", NULL, &l, err, sizeof err) == RPC_OK);
    if (!l) return;
    rpc_conn_opts so;
    rpc_conn_opts_default(&so);
    so.first_frame_timeout_ms = 1500;
    so.frame_timeout_ms = 200;
    /* the first pair lets nng start its own worker threads */
    int made = accept_many(l, &so, st, 1, cli, srv);
    int before = thread_count();
    made += accept_many(l, &so, st + 1, N - 1, cli + 1, srv + 1);
    CHECK(made == N);
    int idle_threads = thread_count();
    CHECKF(idle_threads - before <= 2, "%d silent connections added %d threads", N - 1,
           idle_threads - before);
    /* a complete first frame starts that connection's two threads */
    CHECK(rpc_conn_start(cli[0], NULL, NULL, err, sizeof err) == RPC_OK);
    CHECK(rpc_send_call(cli[0], 1, "x/Hello", 0, NULL, NULL, 1000) == RPC_OK);
    double t0 = now_ms();
    while (atomic_load(&st[0].frames) == 0 && now_ms() - t0 < 5000) usleep(1000);
    CHECK(atomic_load(&st[0].frames) == 1);
    /* a partial first frame is cut after frame_timeout_ms, as later ones */
    const uint8_t part[] = {50, 0, 0, 0, 0x08};
    CHECK(rpc_conn_send_bytes(cli[1], part, sizeof part, 1000) == RPC_OK);
    CHECK(rpc_conn_start(cli[1], NULL, NULL, err, sizeof err) == RPC_OK);
    CHECK(wait_closed(&st[1], 1, 1000));
    CHECKF(atomic_load(&st[1].close_err) == RPC_EPROTO &&
               strstr(st[1].close_msg, "truncated frame: 1 of 50 body bytes"),
           "%d %s", atomic_load(&st[1].close_err), st[1].close_msg);
    /* the silent ones are closed after first_frame_timeout_ms */
    int closed = 0;
    for (int i = 2; i < N; i++) closed += wait_closed(&st[i], 1, 5000);
    double took = now_ms() - t0;
    CHECKF(closed == N - 2, "%d of %d silent connections closed", closed, N - 2);
    CHECKF(atomic_load(&st[2].close_err) == RPC_ETIMEDOUT &&
               strstr(st[2].close_msg, "no frame within 1500 ms of connecting"),
           "%d %s", atomic_load(&st[2].close_err), st[2].close_msg);
    CHECK(took < 4000);
    CHECK(atomic_load(&st[0].closed) == 0); /* the one that spoke stays */
    Rpc__Frame *g = NULL;
    CHECK(rpc_conn_start(cli[2], NULL, NULL, err, sizeof err) == RPC_OK);
    CHECK(rpc_conn_recv(cli[2], &g, 2000, err, sizeof err) == RPC_ECLOSED);
    for (int i = 0; i < N; i++) {
        rpc_conn_release(cli[i]);
        rpc_conn_release(srv[i]);
    }
    rpc_listener_free(l);
    printf("first frame: %d silent connections added %d threads; closed after 1500 ms\n", N - 1,
           idle_threads - before);
}

static void test_idle_timeout(void) {
    rpc_listener *l = NULL;
    char err[256];
    CHECK(rpc_listen("tcp://127.0.0.1:0", NULL, &l, err, sizeof err) == RPC_OK);
    if (!l) return;
    rpc_conn_opts so;
    rpc_conn_opts_default(&so);
    so.idle_timeout_ms = 300;
    rpc_conn *cli = NULL, *srv = NULL;
    static watch_state st;
    memset(&st, 0, sizeof st);
    atomic_store(&st.busy, 1);
    CHECK(accept_many(l, &so, &st, 1, &cli, &srv) == 1);
    if (cli) CHECK(rpc_conn_start(cli, NULL, NULL, err, sizeof err) == RPC_OK);
    if (cli) CHECK(rpc_send_call(cli, 1, "x/Work", 0, NULL, NULL, 1000) == RPC_OK);
    /* while the owner has work in flight, on_idle keeps the connection */
    usleep(900 * 1000);
    CHECK(atomic_load(&st.frames) == 1 && atomic_load(&st.closed) == 0);
    double t0 = now_ms();
    atomic_store(&st.busy, 0);
    CHECK(wait_closed(&st, 1, 3000));
    double took = now_ms() - t0;
    CHECKF(atomic_load(&st.close_err) == RPC_ETIMEDOUT && strstr(st.close_msg, "idle timeout"),
           "%d %s", atomic_load(&st.close_err), st.close_msg);
    CHECKF(took < 1000, "closed %.0f ms after it became idle", took);
    Rpc__Frame *g = NULL;
    if (cli) CHECK(rpc_conn_recv(cli, &g, 2000, err, sizeof err) == RPC_ECLOSED);
    rpc_conn_release(cli);
    rpc_conn_release(srv);
    rpc_listener_free(l);
    printf("idle timeout: kept while busy, closed %.0f ms after it became idle\n", took);
}

/* ---- release from a callback ---- */

static atomic_int released_in_cb;

static void release_on_frame(rpc_conn *c, Rpc__Frame *f, void *user) {
    (void)user;
    rpc_frame_free(f);
    rpc_send_status(c, 1, 0, "bye", 1000);
    /* Set before the release: once released, the client may see the close
     * and read the flag before this thread runs another instruction. */
    atomic_store(&released_in_cb, 1);
    rpc_conn_release(c); /* the last reference, from the receive thread */
}

static void test_release_in_callback(void) {
    pair p;
    CHECK(make_pair("tcp://127.0.0.1:0", NULL, NULL, NULL, NULL, &p) == 0);
    if (!p.srv || !p.cli) {
        free_pair(&p);
        return;
    }
    char err[256];
    rpc_conn_handlers h = {release_on_frame, NULL, NULL, NULL};
    CHECK(rpc_conn_start(p.srv, &h, NULL, err, sizeof err) == RPC_OK);
    p.srv = NULL; /* owned by the callback now */
    CHECK(rpc_conn_start(p.cli, NULL, NULL, err, sizeof err) == RPC_OK);
    CHECK(rpc_send_call(p.cli, 1, "x/Bye", 0, NULL, NULL, 1000) == RPC_OK);
    Rpc__Frame *g = NULL;
    CHECK(rpc_conn_recv(p.cli, &g, 5000, err, sizeof err) == RPC_OK && g &&
          g->type == RPC__FRAME_TYPE__FRAME_STATUS && strcmp(g->message, "bye") == 0);
    rpc_frame_free(g);
    CHECK(rpc_conn_recv(p.cli, &g, 5000, err, sizeof err) == RPC_ECLOSED);
    CHECK(atomic_load(&released_in_cb) == 1);
    free_pair(&p);
}

/* ---- TLS ---- */

static void test_tls(void) {
    char dir[] = "/tmp/test_rpc_tls.XXXXXX";
    if (!mkdtemp(dir)) return;
    char pem[128], cmd[512];
    snprintf(pem, sizeof pem, "%s/server.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
             "-keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1 && cat %s/cert.pem %s/key.pem "
             "> %s",
             dir, dir, dir, dir, pem);
    if (system(cmd) != 0) {
        printf("tls: openssl tool not usable, skipped\n");
        return;
    }
    char ca[128];
    snprintf(ca, sizeof ca, "%s/cert.pem", dir);
    rpc_tls_opts stls = {.cert_key_file = pem};
    rpc_tls_opts ctls = {.ca_file = ca, .server_name = "localhost"};
    pair p;
    echo_state st = {0};
    CHECK(make_pair("tls+tcp://127.0.0.1:0", &stls, &ctls, NULL, NULL, &p) == 0);
    if (p.srv && p.cli) {
        char err[256];
        CHECK(rpc_conn_start(p.srv, &ECHO, &st, err, sizeof err) == RPC_OK);
        CHECK(rpc_conn_start(p.cli, NULL, NULL, err, sizeof err) == RPC_OK);
        CHECK(rpc_send_call(p.cli, 7, "x/Echo", 0, NULL, NULL, 1000) == RPC_OK);
        int msg = 0, status = 0;
        double t0 = now_ms();
        while (!status && now_ms() - t0 < 10000) {
            Rpc__Frame *g;
            if (rpc_conn_recv(p.cli, &g, 1000, err, sizeof err) != RPC_OK) continue;
            msg += g->type == RPC__FRAME_TYPE__FRAME_MESSAGE;
            status += g->type == RPC__FRAME_TYPE__FRAME_STATUS;
            rpc_frame_free(g);
        }
        CHECK(msg == 1 && status == 1);
        printf("tls+tcp: call answered over TLS\n");
    }
    free_pair(&p);
    /* a client that does not trust the certificate fails to connect */
    rpc_listener *l = NULL;
    char err[256];
    CHECK(rpc_listen("tls+tcp://127.0.0.1:0", &stls, &l, err, sizeof err) == RPC_OK);
    if (l) {
        accept_job j = {l, NULL, NULL, 0};
        pthread_t t;
        pthread_create(&t, NULL, accept_thread, &j);
        rpc_conn *c = NULL;
        rpc_tls_opts strict = {.server_name = "localhost"};
        int rv = rpc_dial(rpc_listener_url(l), &strict, NULL, 5000, &c, err, sizeof err);
        pthread_join(t, NULL);
        if (j.c) rpc_conn_start(j.c, NULL, NULL, err, sizeof err); /* runs its handshake */
        /* The handshake may only fail at the first I/O. */
        if (rv == RPC_OK) {
            rpc_conn_start(c, NULL, NULL, err, sizeof err);
            rpc_send_call(c, 1, "x/Echo", 0, NULL, NULL, 1000);
            Rpc__Frame *g = NULL;
            rv = rpc_conn_recv(c, &g, 5000, err, sizeof err);
            rpc_frame_free(g);
            CHECKF(rv != RPC_OK, "an untrusted server was accepted");
            rpc_conn_release(c);
        }
        rpc_listener_close(l);
        if (j.c) rpc_conn_release(j.c);
        rpc_listener_free(l);
    }
    /* a TLS listener without a certificate is refused with a message */
    CHECK(rpc_listen("tls+tcp://127.0.0.1:0", NULL, &l, err, sizeof err) != RPC_OK);
    CHECK(strstr(err, "certificate") != NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

static void test_addresses(void) {
    rpc_listener *l = NULL;
    rpc_conn *c = NULL;
    char err[256];
    CHECK(rpc_listen("http://127.0.0.1:0", NULL, &l, err, sizeof err) == RPC_EADDR);
    CHECK(strstr(err, "unsupported address") != NULL);
    CHECK(rpc_dial("udp://x", NULL, NULL, 100, &c, err, sizeof err) == RPC_EADDR);
    CHECK(rpc_listen("tcp://127.0.0.1:0", NULL, &l, err, sizeof err) == RPC_OK);
    int port = l ? rpc_listener_port(l) : -1;
    CHECK(port > 0);
    rpc_listener *l2 = NULL;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    CHECK(rpc_listen(url, NULL, &l2, err, sizeof err) == RPC_EADDR); /* in use */
    CHECK(strstr(err, "cannot listen") != NULL);
    rpc_listener_free(l);
    /* nobody listens there now */
    CHECK(rpc_dial(url, NULL, NULL, 2000, &c, err, sizeof err) != RPC_OK);
    CHECK(strstr(err, "cannot connect") != NULL);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(120);
    test_echo("tcp://127.0.0.1:0");
    char ipc[96];
    snprintf(ipc, sizeof ipc, "ipc:///tmp/test_rpc_conn.%d.sock", (int)getpid());
    test_echo(ipc);
    unlink(ipc + 6);
    test_oversized();
    test_frame_timeout();
    test_backpressure();
    test_first_frame();
    test_idle_timeout();
    test_release_in_callback();
    test_addresses();
    test_tls();
    return tu_finish("test_rpc_conn");
}
