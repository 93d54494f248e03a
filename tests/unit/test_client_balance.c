/*
 * test_client_balance.c - libinfer_client over three infer-servers.
 *
 * Starts three $ENGINE_BUILD_DIR/infer-server processes (one thread each,
 * the real model) on free loopback ports (skips with 77 when the model or
 * the server binary is missing), connects one client to all three with a
 * 0.5 s heartbeat and checks what a user of several endpoints relies on:
 *   - sequential unary calls go round robin: each server serves exactly a
 *     third (counted by the servers' own Stats, not by the client);
 *   - concurrent calls spread too: each server gets at least a fifth;
 *   - SIGKILL of one server under load loses no unary call: every call
 *     ends OK (the ones in flight there fail over to the others) and the
 *     endpoint is reported down;
 *   - the server restarted on the same port is up in the client again
 *     within two heartbeats of answering Health, and takes calls;
 *   - a stream whose server is killed ends UNAVAILABLE (no retry) with the
 *     number of tokens it had received in its message, equal to the
 *     chunks its callback saw;
 *   - with every server gone a call ends UNAVAILABLE at once, no hang.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clients/c/infer_client.h"
#include "tests/common/test_util.h"

#define N_SERVERS 3
#define HEARTBEAT_S 0.5
#define N_THREADS 6
#define LOAD_CALLS 90

static char g_url[N_SERVERS][64];
static pid_t g_pid[N_SERVERS] = {-1, -1, -1};
static const char *g_bin, *g_model;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void kill_server(int i) {
    if (g_pid[i] > 0) {
        kill(g_pid[i], SIGKILL);
        waitpid(g_pid[i], NULL, 0);
        g_pid[i] = -1;
    }
}

/* Health over a connection of its own; 1 when SERVING. */
static int server_healthy(int i) {
    infer_client *c;
    char err[256], h[32] = "";
    infer_client_opts o = {.connect_timeout_ms = 1000, .heart_beat_interval_seconds = -1};
    if (infer_connect(g_url[i], &o, &c, err, sizeof err)) return 0;
    int rc = infer_health(c, 2000, h, sizeof h, NULL);
    infer_close(c);
    return rc == INFER_OK && !strcmp(h, "SERVING");
}

/* Start server i on its URL (same port on a restart); wait for Health. */
static int start_server(int i) {
    g_pid[i] = fork();
    if (g_pid[i] < 0) return -1;
    if (g_pid[i] == 0) {
        unsetenv("ENGINE_API_KEY");
        execl(g_bin, g_bin, "-m", g_model, "--listen", g_url[i], "--http", "", "-t", "1", "--set",
              "cache_config.num_blocks=256", (char *)NULL);
        _exit(127);
    }
    for (double t0 = now_s(); now_s() - t0 < 120; tu_sleep_ms(50)) {
        int wst;
        if (waitpid(g_pid[i], &wst, WNOHANG) == g_pid[i]) {
            fprintf(stderr, "infer-server %d exited during start-up (status %d)\n", i, wst);
            g_pid[i] = -1;
            return -1;
        }
        if (server_healthy(i)) return 0;
    }
    kill_server(i);
    return -1;
}

/* Server i's own Stats over a connection of its own; 0 on success. */
static int server_stats(int i, infer_stats_t *s) {
    infer_client *c;
    char err[256];
    infer_client_opts o = {.heart_beat_interval_seconds = -1};
    if (infer_connect(g_url[i], &o, &c, err, sizeof err)) return -1;
    int rc = infer_stats(c, 2000, s, NULL);
    infer_close(c);
    return rc == INFER_OK ? 0 : -1;
}

/* Generate calls the server has finished (its own count), or -1. */
static int64_t server_finished(int i) {
    infer_stats_t s;
    return server_stats(i, &s) == 0 ? s.requests_finished : -1;
}

static int generate_small(infer_client *c, int max_tokens, infer_status *st) {
    infer_gen_params p;
    infer_gen_params_init(&p);
    p.prompt = "Count: one two three";
    p.max_tokens = max_tokens;
    p.ignore_eos = 1;
    p.temperature = 0;
    infer_result r;
    int rc = infer_generate(c, &p, 30000, &r, st);
    if (rc == INFER_OK) infer_result_free(&r);
    return rc;
}

/* ---- spread ---- */

static void test_round_robin(infer_client *c) {
    int64_t before[N_SERVERS];
    for (int i = 0; i < N_SERVERS; i++) before[i] = server_finished(i);
    int failed = 0;
    infer_status st;
    for (int k = 0; k < 30; k++)
        if (generate_small(c, 1, &st) != INFER_OK) failed++;
    CHECKF(failed == 0, "%d sequential calls failed (last: %s)", failed, st.message);
    /* 10 each, give or take the ties a heartbeat's queue reading moves (see
     * test_restart_is_used_again) */
    int64_t total = 0;
    for (int i = 0; i < N_SERVERS; i++) {
        int64_t got = server_finished(i) - before[i];
        total += got;
        CHECKF(got >= 8 && got <= 12, "server %d served %lld of 30 sequential calls", i,
               (long long)got);
    }
    CHECKF(total == 30, "the servers count %lld of 30 calls", (long long)total);
}

typedef struct {
    infer_client *c;
    atomic_int *next; /* calls handed out */
    atomic_int *ok, *failed;
    int total, max_tokens;
} load_arg;

static void *load_main(void *arg) {
    load_arg *a = arg;
    while (atomic_fetch_add(a->next, 1) < a->total) {
        infer_status st;
        int rc = generate_small(a->c, a->max_tokens, &st);
        if (rc == INFER_OK) {
            atomic_fetch_add(a->ok, 1);
        } else {
            atomic_fetch_add(a->failed, 1);
            fprintf(stderr, "call failed: %s %s\n", infer_status_name(rc), st.message);
        }
    }
    return NULL;
}

/* N_THREADS callers run `total` calls; kill_at >= 0: SIGKILL server
 * kill_at once a third of the calls have finished. */
static void run_load(infer_client *c, int total, int max_tokens, int kill_at, int *ok,
                     int *failed) {
    atomic_int next = 0, n_ok = 0, n_failed = 0;
    load_arg a = {c, &next, &n_ok, &n_failed, total, max_tokens};
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) pthread_create(&th[t], NULL, load_main, &a);
    if (kill_at >= 0) {
        while (atomic_load(&n_ok) + atomic_load(&n_failed) < total / 3) tu_sleep_ms(5);
        kill_server(kill_at);
    }
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    *ok = atomic_load(&n_ok);
    *failed = atomic_load(&n_failed);
}

static void test_concurrent_spread(infer_client *c) {
    int64_t before[N_SERVERS];
    for (int i = 0; i < N_SERVERS; i++) before[i] = server_finished(i);
    int ok, failed;
    run_load(c, LOAD_CALLS, 4, -1, &ok, &failed);
    CHECKF(ok == LOAD_CALLS && failed == 0, "%d ok, %d failed", ok, failed);
    for (int i = 0; i < N_SERVERS; i++) {
        int64_t got = server_finished(i) - before[i];
        CHECKF(got >= LOAD_CALLS / 5, "server %d served %lld of %d concurrent calls", i,
               (long long)got, LOAD_CALLS);
    }
}

/* ---- failover and return ---- */

static int endpoint_up(infer_client *c, int i) {
    infer_endpoint_info e[N_SERVERS];
    return infer_endpoints(c, e, N_SERVERS) == N_SERVERS && e[i].up;
}

static void test_kill_under_load(infer_client *c) {
    int ok, failed;
    run_load(c, LOAD_CALLS, 8, 1, &ok, &failed);
    CHECKF(ok == LOAD_CALLS && failed == 0, "after SIGKILL of one server: %d ok, %d failed", ok,
           failed);
    CHECK(!endpoint_up(c, 1));
    infer_endpoint_info e[N_SERVERS];
    infer_endpoints(c, e, N_SERVERS);
    CHECKF(e[1].last_error[0] != 0, "the dead endpoint says why it is down");
}

static void test_restart_is_used_again(infer_client *c) {
    if (start_server(1) != 0) {
        CHECK(!"server 1 restarted on its port");
        return;
    }
    double ready = now_s(), up_at = -1;
    while (now_s() - ready < 5) {
        if (endpoint_up(c, 1)) {
            up_at = now_s();
            break;
        }
        tu_sleep_ms(10);
    }
    CHECKF(up_at >= 0 && up_at - ready <= 2 * HEARTBEAT_S,
           "restarted server up in the client %.2f s after it answered (limit %.1f s)",
           up_at < 0 ? -1.0 : up_at - ready, 2 * HEARTBEAT_S);
    /* 9 sequential calls: each server, the restarted one included, takes a
     * fair share. Not exactly 3 each: a tie goes to the shorter queue the
     * last heartbeat saw, and a heartbeat that caught a call waiting on one
     * server sends the next tie elsewhere (seen once: 4 / 3 / 2). */
    int64_t before[N_SERVERS], total = 0;
    for (int i = 0; i < N_SERVERS; i++) before[i] = server_finished(i);
    infer_status st;
    for (int k = 0; k < 9; k++) CHECKF(generate_small(c, 1, &st) == INFER_OK, "%s", st.message);
    for (int i = 0; i < N_SERVERS; i++) {
        int64_t served = server_finished(i) - before[i];
        total += served;
        CHECKF(served >= 2, "server %d%s served %lld of 9", i, i == 1 ? " (restarted)" : "",
               (long long)served);
    }
    CHECKF(total == 9, "the servers count %lld of 9 calls", (long long)total);
}

/* ---- a deadline spans the retries ---- */

/* Requests running on server i (its own count), or -1. */
static int64_t server_running(int i) {
    infer_stats_t s;
    return server_stats(i, &s) == 0 ? s.running : -1;
}

typedef struct {
    infer_client *c;
    int rc;
    double seconds;
    infer_status st;
} long_call;

enum { DEADLINE_MS = 2500 };

static void *long_call_main(void *arg) {
    long_call *lc = arg;
    infer_gen_params p;
    infer_gen_params_init(&p);
    p.prompt = "Count: one two three";
    p.max_tokens = 4000; /* far longer than the deadline on any server */
    p.ignore_eos = 1;
    p.temperature = 0;
    infer_result r;
    double t0 = now_s();
    lc->rc = infer_generate(lc->c, &p, DEADLINE_MS, &r, &lc->st);
    lc->seconds = now_s() - t0;
    if (lc->rc == INFER_OK) infer_result_free(&r);
    return NULL;
}

/* A unary call whose server is killed under it is retried elsewhere, but
 * within what is left of its deadline: it ends DEADLINE_EXCEEDED at about
 * DEADLINE_MS from its start, not DEADLINE_MS after the retry. */
static void test_deadline_spans_retries(infer_client *c) {
    long_call lc = {.c = c};
    pthread_t th;
    if (pthread_create(&th, NULL, long_call_main, &lc) != 0) {
        CHECK(!"thread started");
        return;
    }
    /* 1 s into the call (40% of its deadline), so that a retry given the
     * whole deadline again would end a second late */
    tu_sleep_ms(1000);
    int victim = -1;
    for (int tries = 0; tries < 50 && victim < 0; tries++) {
        if (tries) tu_sleep_ms(10);
        for (int i = 0; i < N_SERVERS && victim < 0; i++)
            if (server_running(i) > 0) victim = i;
    }
    CHECKF(victim >= 0, "the long call runs on some server");
    if (victim >= 0) kill_server(victim);
    pthread_join(th, NULL);
    CHECKF(lc.rc == INFER_DEADLINE_EXCEEDED, "long call: %s %s", infer_status_name(lc.rc),
           lc.st.message);
    CHECKF(lc.seconds < DEADLINE_MS / 1e3 + 0.5,
           "the retried call ended %.2f s after it started (deadline %.1f s)", lc.seconds,
           DEADLINE_MS / 1e3);
    printf(
        "deadline across a retry: server %d killed under the call, which ended %s after %.2f s\n",
        victim, infer_status_name(lc.rc), lc.seconds);
    if (victim >= 0) CHECKF(start_server(victim) == 0, "server %d restarted", victim);
    for (double t0 = now_s(); victim >= 0 && !endpoint_up(c, victim) && now_s() - t0 < 5;)
        tu_sleep_ms(10);
}

/* ---- a stream is not retried ---- */

typedef struct {
    atomic_int chunks;
} stream_seen;

static int count_chunk(const infer_chunk *ch, void *user) {
    stream_seen *s = user;
    if (!ch->finish_reason) atomic_fetch_add(&s->chunks, 1);
    return 0;
}

static void test_stream_loses_server(infer_client *c) {
    infer_gen_params p;
    infer_gen_params_init(&p);
    p.prompt = "Tell a long story";
    p.max_tokens = 2000;
    p.ignore_eos = 1;
    stream_seen seen = {0};
    infer_call *call;
    infer_status st;
    CHECKF(infer_stream_start(c, &p, 60000, count_chunk, &seen, &call, &st) == INFER_OK, "%s",
           st.message);
    if (st.code != INFER_OK) return;
    while (atomic_load(&seen.chunks) < 3) tu_sleep_ms(5);
    infer_endpoint_info e[N_SERVERS];
    infer_endpoints(c, e, N_SERVERS);
    int victim = -1;
    for (int i = 0; i < N_SERVERS; i++)
        if (e[i].in_flight == 1) victim = i;
    CHECKF(victim >= 0, "one endpoint has the stream in flight");
    if (victim >= 0) kill_server(victim);
    int rc = infer_call_wait(call, &st);
    int64_t got = infer_call_tokens_received(call);
    char want[64];
    snprintf(want, sizeof want, "received %lld tokens", (long long)got);
    CHECKF(rc == INFER_UNAVAILABLE, "lost stream: %s %s", infer_status_name(rc), st.message);
    CHECKF(got == atomic_load(&seen.chunks) && got >= 3, "tokens %lld, callback saw %d",
           (long long)got, atomic_load(&seen.chunks));
    CHECKF(strstr(st.message, want) != NULL, "message '%s' says '%s'", st.message, want);
    infer_call_free(call);
}

static void test_all_gone(infer_client *c) {
    for (int i = 0; i < N_SERVERS; i++) kill_server(i);
    double t0 = now_s();
    infer_status st;
    int rc = generate_small(c, 1, &st);
    CHECKF(rc == INFER_UNAVAILABLE, "with no server: %s %s", infer_status_name(rc), st.message);
    CHECK(now_s() - t0 < 2);
    CHECK(!infer_connected(c));
}

int main(void) {
    g_model = tu_model_path();
    const char *build = getenv("ENGINE_BUILD_DIR");
    static char bin[4096];
    snprintf(bin, sizeof bin, "%s/infer-server", build && *build ? build : ".");
    g_bin = bin;
    if (!g_model || access(bin, X_OK) != 0) {
        printf("test_client_balance: SKIP (needs the model and %s)\n", bin);
        return TU_SKIP;
    }
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < N_SERVERS; i++) {
        snprintf(g_url[i], sizeof g_url[i], "tcp://127.0.0.1:%d", tu_free_port());
        if (start_server(i) != 0) {
            CHECKF(0, "infer-server %d started", i);
            for (int k = 0; k < N_SERVERS; k++) kill_server(k);
            return tu_finish("test_client_balance");
        }
    }
    const char *urls[N_SERVERS] = {g_url[0], g_url[1], g_url[2]};
    infer_client_opts o = {.heart_beat_interval_seconds = HEARTBEAT_S};
    infer_client *c;
    char err[256];
    CHECKF(infer_connect_multi(urls, N_SERVERS, &o, &c, err, sizeof err) == 0, "%s", err);
    if (tu_failures == 0) {
        double t0 = now_s();
        test_round_robin(c);
        test_concurrent_spread(c);
        test_kill_under_load(c);
        test_restart_is_used_again(c);
        test_deadline_spans_retries(c);
        test_stream_loses_server(c);
        test_all_gone(c);
        infer_close(c);
        printf("test_client_balance: scenarios in %.1f s\n", now_s() - t0);
    }
    for (int i = 0; i < N_SERVERS; i++) kill_server(i);
    return tu_finish("test_client_balance");
}
