/*
 * test_client.c - libinfer_client and infer-cli against a real infer-server.
 *
 * Starts $ENGINE_BUILD_DIR/infer-server with the real model on a free
 * loopback port (skips with 77 when the model or the server binary is
 * missing) and checks what a user of the client relies on:
 *   - Health, ModelInfo, Stats answer; Tokenize/Detokenize round-trip text;
 *   - greedy unary Generate and GenerateStream produce the same text, and
 *     exactly max_tokens tokens with ignore_eos;
 *   - 200 concurrent streaming calls over 4 connections (one thread each)
 *     all complete with the right token counts;
 *   - a stream cancelled from another thread ends with CANCELLED; a chunk
 *     callback's nonzero return cancels; a deadline ends a call with
 *     DEADLINE_EXCEEDED; a bad parameter comes back INVALID_ARGUMENT;
 *   - afterwards nothing is running and every KV block is free;
 *   - infer-cli's generate prints the same greedy text; its health works;
 *   - a client whose server goes away gets UNAVAILABLE, not a hang.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clients/c/infer_client.h"
#include "tests/common/test_util.h"

#define N_CONNS 4
#define CALLS_PER_CONN 50
#define SMALL_TOKENS 8

static char g_url[64];
static pid_t g_server = -1;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void stop_server(void) {
    if (g_server > 0) {
        kill(g_server, SIGKILL);
        waitpid(g_server, NULL, 0);
        g_server = -1;
    }
}

/* Start infer-server on loopback and wait until Health answers. */
static int start_server(const char *bin, const char *model) {
    int port = tu_free_port();
    if (port < 0) return -1;
    snprintf(g_url, sizeof g_url, "tcp://127.0.0.1:%d", port);
    g_server = fork();
    if (g_server < 0) return -1;
    if (g_server == 0) {
        /* 1024 blocks of 16 tokens: plenty for 64 running sequences of a
         * few dozen tokens (and for the long streams that get cancelled),
         * and quick to set up under the sanitizers. No HTTP listener. */
        unsetenv("ENGINE_API_KEY");
        execl(bin, bin, "-m", model, "--listen", g_url, "--http", "", "--set",
              "cache_config.num_blocks=1024", (char *)NULL);
        _exit(127);
    }
    double t0 = now_s();
    while (now_s() - t0 < 120) {
        int wst;
        if (waitpid(g_server, &wst, WNOHANG) == g_server) {
            fprintf(stderr, "infer-server exited during start-up (status %d)\n", wst);
            g_server = -1;
            return -1;
        }
        infer_client *c;
        char err[256];
        infer_client_opts o = {.connect_timeout_ms = 1000};
        if (infer_connect(g_url, &o, &c, err, sizeof err) == 0) {
            char h[32];
            int rc = infer_health(c, 2000, h, sizeof h, NULL);
            infer_close(c);
            if (rc == INFER_OK) return 0;
        }
        tu_sleep_ms(100);
    }
    fprintf(stderr, "infer-server did not answer Health within 120 s\n");
    stop_server();
    return -1;
}

static infer_client *connect_or_fail(void) {
    infer_client *c = NULL;
    char err[256];
    int rc = infer_connect(g_url, NULL, &c, err, sizeof err);
    CHECKF(rc == 0, "connect: %s", err);
    return rc == 0 ? c : NULL;
}

/* ---- basic methods ---- */

static void test_health_model_stats(infer_client *c) {
    char h[32];
    infer_status st;
    CHECKF(infer_health(c, 5000, h, sizeof h, &st) == INFER_OK, "%s", st.message);
    CHECKF(!strcmp(h, "SERVING"), "health %s", h);

    infer_model_info_t m;
    CHECKF(infer_model_info(c, 5000, &m, &st) == INFER_OK, "%s", st.message);
    CHECKF(m.n_vocab > 1000 && m.n_layer > 0 && m.context_length > 0, "vocab %d layers %d",
           m.n_vocab, m.n_layer);

    infer_stats_t s;
    CHECKF(infer_stats(c, 5000, &s, &st) == INFER_OK, "%s", st.message);
    CHECK(s.blocks_total > 0 && s.blocks_free >= 0 && s.blocks_free <= s.blocks_total);
}

static void test_tokenize_round_trip(infer_client *c) {
    const char *text = "Hello world, this is a test of the tokenizer: caf\xc3\xa9 123!";
    int32_t *ids;
    size_t n;
    infer_status st;
    int rc = infer_tokenize(c, text, 0, INFER_UNSET_BOOL, 5000, &ids, &n, &st);
    CHECKF(rc == INFER_OK, "%s", st.message);
    if (rc != INFER_OK) return;
    CHECK(n > 5 && n < strlen(text));
    char *back;
    rc = infer_detokenize(c, ids, n, INFER_UNSET_BOOL, 5000, &back, &st);
    CHECKF(rc == INFER_OK, "%s", st.message);
    if (rc == INFER_OK) {
        CHECKF(!strcmp(back, text), "detokenized '%s'", back);
        free(back);
    }
    free(ids);
}

/* ---- streaming helpers ---- */

typedef struct {
    char text[4096];
    size_t len;
    int n_tokens; /* token ids received */
    int n_chunks;
    int completion_tokens; /* from the final usage */
    char finish[16];
    int cancel_after; /* > 0: return nonzero at this chunk */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} stream_acc;

static void acc_init(stream_acc *a) {
    memset(a, 0, sizeof *a);
    a->completion_tokens = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
}

static void acc_destroy(stream_acc *a) {
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
}

static int on_chunk(const infer_chunk *ch, void *user) {
    stream_acc *a = user;
    pthread_mutex_lock(&a->mu);
    if (a->len + ch->text_len < sizeof a->text) {
        memcpy(a->text + a->len, ch->text, ch->text_len);
        a->len += ch->text_len;
        a->text[a->len] = 0;
    }
    a->n_tokens += (int)ch->n_token_ids;
    a->n_chunks++;
    if (ch->finish_reason) snprintf(a->finish, sizeof a->finish, "%s", ch->finish_reason);
    if (ch->has_usage) a->completion_tokens = ch->usage.completion_tokens;
    int stop = a->cancel_after > 0 && a->n_chunks >= a->cancel_after;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return stop;
}

static void greedy_params(infer_gen_params *p, const char *prompt, int max_tokens) {
    infer_gen_params_init(p);
    p->prompt = prompt;
    p->temperature = 0.0f;
    p->max_tokens = max_tokens;
    p->ignore_eos = 1;
    p->return_token_ids = 1;
}

/* ---- unary == streamed ---- */

static char g_greedy_text[4096];

static void test_unary_equals_stream(infer_client *c) {
    infer_gen_params p;
    greedy_params(&p, "The capital of France is", 16);
    infer_result r;
    infer_status st;
    int rc = infer_generate(c, &p, 60000, &r, &st);
    CHECKF(rc == INFER_OK, "generate: %s %s", infer_status_name(rc), st.message);
    if (rc != INFER_OK) return;
    CHECK(r.n_completions == 1);
    CHECKF(r.usage.completion_tokens == 16, "completion_tokens %d", r.usage.completion_tokens);
    CHECK(r.usage.prompt_tokens > 0);
    CHECKF(r.completions[0].n_token_ids == 16, "token ids %zu", r.completions[0].n_token_ids);
    CHECKF(!strcmp(r.completions[0].finish_reason, "length"), "finish %s",
           r.completions[0].finish_reason);
    CHECK(strlen(r.completions[0].text) > 0);
    snprintf(g_greedy_text, sizeof g_greedy_text, "%s", r.completions[0].text);

    stream_acc a;
    acc_init(&a);
    rc = infer_generate_stream(c, &p, 60000, on_chunk, &a, &st);
    CHECKF(rc == INFER_OK, "stream: %s %s", infer_status_name(rc), st.message);
    CHECKF(!strcmp(a.text, r.completions[0].text), "unary '%s' vs streamed '%s'",
           r.completions[0].text, a.text);
    CHECKF(a.n_tokens == 16, "streamed tokens %d", a.n_tokens);
    CHECKF(a.completion_tokens == 16, "streamed usage %d", a.completion_tokens);
    CHECKF(!strcmp(a.finish, "length"), "stream finish %s", a.finish);
    CHECK(a.n_chunks >= 2); /* pushed as sampled, not in one piece */
    acc_destroy(&a);
    infer_result_free(&r);
}

/* ---- 200 concurrent streams over 4 connections ---- */

typedef struct {
    int conn_index;
    int ok; /* calls that ended OK with the right counts */
    int failures;
    char first_error[512];
} conc_arg;

static void *conc_thread(void *arg) {
    conc_arg *ca = arg;
    infer_client *c;
    char err[256];
    if (infer_connect(g_url, NULL, &c, err, sizeof err)) {
        snprintf(ca->first_error, sizeof ca->first_error, "connect: %s", err);
        ca->failures = CALLS_PER_CONN;
        return NULL;
    }
    static const char *prompts[] = {"Once upon a time", "The quick brown fox",
                                    "In a galaxy far away",
                                    "def fibonacci(n):", "The three primary colors are"};
    infer_call *calls[CALLS_PER_CONN];
    stream_acc *accs = calloc(CALLS_PER_CONN, sizeof *accs);
    for (int i = 0; i < CALLS_PER_CONN; i++) {
        acc_init(&accs[i]);
        infer_gen_params p;
        infer_gen_params_init(&p);
        p.prompt = prompts[(ca->conn_index + i) % 5];
        p.max_tokens = SMALL_TOKENS;
        p.ignore_eos = 1;
        p.return_token_ids = 1;
        p.has_seed = 1;
        p.seed = (uint64_t)(ca->conn_index * 1000 + i);
        infer_status st;
        if (infer_stream_start(c, &p, 300000, on_chunk, &accs[i], &calls[i], &st) != INFER_OK) {
            calls[i] = NULL;
            ca->failures++;
            if (!ca->first_error[0])
                snprintf(ca->first_error, sizeof ca->first_error, "start: %s", st.message);
        }
    }
    for (int i = 0; i < CALLS_PER_CONN; i++) {
        if (!calls[i]) continue;
        infer_status st;
        int rc = infer_call_wait(calls[i], &st);
        infer_call_free(calls[i]);
        stream_acc *a = &accs[i];
        if (rc == INFER_OK && a->n_tokens == SMALL_TOKENS && a->completion_tokens == SMALL_TOKENS &&
            !strcmp(a->finish, "length")) {
            ca->ok++;
        } else {
            ca->failures++;
            if (!ca->first_error[0])
                snprintf(ca->first_error, sizeof ca->first_error,
                         "call %d: %s '%s', %d tokens, usage %d, finish '%s'", i,
                         infer_status_name(rc), st.message, a->n_tokens, a->completion_tokens,
                         a->finish);
        }
    }
    for (int i = 0; i < CALLS_PER_CONN; i++) acc_destroy(&accs[i]);
    free(accs);
    infer_close(c);
    return NULL;
}

static void test_concurrent_streams(void) {
    pthread_t th[N_CONNS];
    conc_arg args[N_CONNS];
    double t0 = now_s();
    for (int i = 0; i < N_CONNS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].conn_index = i;
        pthread_create(&th[i], NULL, conc_thread, &args[i]);
    }
    int ok = 0;
    for (int i = 0; i < N_CONNS; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].ok;
        CHECKF(args[i].failures == 0, "connection %d: %d failed, first: %s", i, args[i].failures,
               args[i].first_error);
    }
    CHECKF(ok == N_CONNS * CALLS_PER_CONN, "%d of %d streams complete", ok,
           N_CONNS * CALLS_PER_CONN);
    printf("test_client: %d concurrent streams over %d connections in %.2f s\n",
           N_CONNS * CALLS_PER_CONN, N_CONNS, now_s() - t0);
}

/* ---- cancel, deadline, bad input ---- */

typedef struct {
    infer_call *call;
    stream_acc *acc;
} cancel_arg;

static void *cancel_thread(void *arg) {
    cancel_arg *ca = arg;
    pthread_mutex_lock(&ca->acc->mu);
    while (ca->acc->n_chunks < 2) pthread_cond_wait(&ca->acc->cv, &ca->acc->mu);
    pthread_mutex_unlock(&ca->acc->mu);
    infer_call_cancel(ca->call);
    return NULL;
}

static void test_cancel_from_other_thread(infer_client *c) {
    infer_gen_params p;
    greedy_params(&p, "Write a very long story about a dragon.", 2000);
    stream_acc a;
    acc_init(&a);
    infer_call *call;
    infer_status st;
    int rc = infer_stream_start(c, &p, 120000, on_chunk, &a, &call, &st);
    CHECKF(rc == INFER_OK, "%s", st.message);
    if (rc != INFER_OK) return;
    cancel_arg ca = {call, &a};
    pthread_t th;
    double t0 = now_s();
    pthread_create(&th, NULL, cancel_thread, &ca);
    rc = infer_call_wait(call, &st);
    double dt = now_s() - t0;
    pthread_join(th, NULL);
    CHECKF(rc == INFER_CANCELLED, "cancel: %s %s", infer_status_name(rc), st.message);
    CHECKF(dt < 30, "cancel took %.1f s", dt);
    pthread_mutex_lock(&a.mu);
    int chunks = a.n_chunks;
    pthread_mutex_unlock(&a.mu);
    CHECK(chunks >= 2 && a.n_tokens < 2000);
    infer_call_free(call);
    acc_destroy(&a);
}

static void test_callback_cancels(infer_client *c) {
    infer_gen_params p;
    greedy_params(&p, "Count from one to one hundred:", 500);
    stream_acc a;
    acc_init(&a);
    a.cancel_after = 3;
    infer_status st;
    int rc = infer_generate_stream(c, &p, 120000, on_chunk, &a, &st);
    CHECKF(rc == INFER_CANCELLED, "callback cancel: %s %s", infer_status_name(rc), st.message);
    CHECKF(a.n_chunks == 3, "chunks after cancel %d", a.n_chunks); /* none after the verdict */
    acc_destroy(&a);
}

static void test_deadline(infer_client *c) {
    infer_gen_params p;
    greedy_params(&p, "Write a very long story about a dragon.", 2000);
    stream_acc a;
    acc_init(&a);
    infer_status st;
    double t0 = now_s();
    int rc = infer_generate_stream(c, &p, 300, on_chunk, &a, &st);
    double dt = now_s() - t0;
    CHECKF(rc == INFER_DEADLINE_EXCEEDED, "stream deadline: %s %s", infer_status_name(rc),
           st.message);
    CHECKF(dt < 5, "deadline of 300 ms took %.2f s", dt);
    acc_destroy(&a);

    infer_result r;
    t0 = now_s();
    rc = infer_generate(c, &p, 200, &r, &st);
    dt = now_s() - t0;
    CHECKF(rc == INFER_DEADLINE_EXCEEDED, "unary deadline: %s %s", infer_status_name(rc),
           st.message);
    CHECKF(dt < 5, "deadline of 200 ms took %.2f s", dt);
    if (rc == INFER_OK) infer_result_free(&r);
}

static void test_invalid_argument(infer_client *c) {
    infer_gen_params p;
    greedy_params(&p, "Hello", 8);
    p.temperature = -1.0f;
    infer_result r;
    infer_status st;
    int rc = infer_generate(c, &p, 10000, &r, &st);
    CHECKF(rc == INFER_INVALID_ARGUMENT, "temperature -1: %s %s", infer_status_name(rc),
           st.message);
    CHECKF(strstr(st.message, "temperature") != NULL, "message '%s'", st.message);
    if (rc == INFER_OK) infer_result_free(&r);

    infer_gen_params_init(&p); /* no prompt at all */
    rc = infer_generate(c, &p, 10000, &r, &st);
    CHECKF(rc == INFER_INVALID_ARGUMENT, "no prompt: %s %s", infer_status_name(rc), st.message);
    if (rc == INFER_OK) infer_result_free(&r);
}

/* Cancelled and timed-out sequences are freed by the server soon after. */
static void test_all_blocks_free(infer_client *c) {
    infer_stats_t s = {0};
    infer_status st;
    double t0 = now_s();
    int settled = 0;
    while (now_s() - t0 < 10) {
        if (infer_stats(c, 5000, &s, &st) != INFER_OK) break;
        if (s.running == 0 && s.waiting == 0 && s.swapped <= 0 && s.blocks_free == s.blocks_total) {
            settled = 1;
            break;
        }
        tu_sleep_ms(50);
    }
    CHECKF(settled, "after the tests: running %lld waiting %lld blocks free %lld of %lld",
           (long long)s.running, (long long)s.waiting, (long long)s.blocks_free,
           (long long)s.blocks_total);
}

/* ---- infer-cli ---- */

static int run_capture(const char *cmd, char *out, size_t cap) {
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(const char *build) {
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, "%s/infer-cli --url %s health", build, g_url);
    int rc = run_capture(cmd, out, sizeof out);
    CHECKF(rc == 0 && !strcmp(out, "SERVING\n"), "infer-cli health: rc %d '%s'", rc, out);

    snprintf(cmd, sizeof cmd,
             "%s/infer-cli --url %s generate --greedy --ignore-eos -n 16 -q "
             "'The capital of France is'",
             build, g_url);
    rc = run_capture(cmd, out, sizeof out);
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n') out[n - 1] = 0;
    CHECKF(rc == 0 && !strcmp(out, g_greedy_text), "infer-cli generate: rc %d '%s' vs '%s'", rc,
           out, g_greedy_text);

    snprintf(cmd, sizeof cmd,
             "%s/infer-cli --url %s stream --greedy --ignore-eos -n 16 -q "
             "'The capital of France is'",
             build, g_url);
    rc = run_capture(cmd, out, sizeof out);
    n = strlen(out);
    if (n && out[n - 1] == '\n') out[n - 1] = 0;
    CHECKF(rc == 0 && !strcmp(out, g_greedy_text), "infer-cli stream: rc %d '%s'", rc, out);

    snprintf(cmd, sizeof cmd, "%s/infer-cli --url %s generate --temperature -2 hi 2>&1", build,
             g_url);
    rc = run_capture(cmd, out, sizeof out);
    CHECKF(rc == 1 && strstr(out, "INVALID_ARGUMENT"), "infer-cli bad temperature: rc %d '%s'", rc,
           out);

    snprintf(cmd, sizeof cmd, "%s/infer-cli generate --help", build);
    rc = run_capture(cmd, out, sizeof out);
    CHECKF(rc == 0 && strstr(out, "--max-tokens"), "infer-cli generate --help: rc %d", rc);
}

/* ---- server gone ---- */

static void test_server_gone(infer_client *c) {
    stop_server();
    char h[32];
    infer_status st;
    double t0 = now_s();
    int rc = infer_health(c, 5000, h, sizeof h, &st);
    CHECKF(rc == INFER_UNAVAILABLE, "health after the server died: %s %s", infer_status_name(rc),
           st.message);
    CHECK(now_s() - t0 < 6);
    infer_client *c2;
    char err[256];
    infer_client_opts o = {.connect_timeout_ms = 1000};
    CHECK(infer_connect(g_url, &o, &c2, err, sizeof err) != 0);
}

int main(void) {
    const char *model = tu_model_path();
    const char *build = getenv("ENGINE_BUILD_DIR");
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/infer-server", build && *build ? build : ".");
    if (!model || access(bin, X_OK) != 0) {
        printf("test_client: SKIP (needs the model and %s)\n", bin);
        return TU_SKIP;
    }
    signal(SIGPIPE, SIG_IGN);
    if (start_server(bin, model) != 0) {
        CHECK(!"infer-server started");
        return tu_finish("test_client");
    }
    infer_client *c = connect_or_fail();
    if (c) {
        test_health_model_stats(c);
        test_tokenize_round_trip(c);
        test_unary_equals_stream(c);
        test_concurrent_streams();
        test_cancel_from_other_thread(c);
        test_callback_cancels(c);
        test_deadline(c);
        test_invalid_argument(c);
        test_all_blocks_free(c);
        test_cli(build && *build ? build : ".");
        test_server_gone(c);
        infer_close(c);
    }
    stop_server();
    return tu_finish("test_client");
}
