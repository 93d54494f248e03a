/*
 * rpc_overhead.c - what the RPC front end adds to a request, on loopback.
 *
 * Starts build/infer-server (fork + exec) on a loopback port with the given
 * model and threads, and measures through libinfer_client:
 *   (a) unary Generate of 1 token (greedy, max_tokens 1, ignore_eos, short
 *       prompt): client-side latency per call, p50 / p99;
 *   (b) GenerateStream of S tokens: for every token chunk, the client's
 *       CLOCK_MONOTONIC receive time minus the chunk's sampled_ms (the
 *       server's CLOCK_MONOTONIC time when the engine thread sampled the
 *       token), p50 / p99 over all tokens of all stream calls;
 * then stops the server (SIGTERM to its pid, waits for it) and measures
 *   (c) the same 1-token generate in process: engine_submit on an engine
 *       built like the server's (default config, same threads) up to the
 *       end of its stream.
 * RPC overhead = (a) - (c). Prints a table and one JSON line (last line).
 *
 * Usage: rpc-overhead-bench [--server PATH] [-m MODEL] [-t THREADS] [-n CALLS]
 *          [--warmup N] [--stream-calls N] [--stream-tokens N] [--port P]
 *          [-p PROMPT]
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "clients/c/infer_client.h"
#include "core/backend/backend.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/engine.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, int n, double p) {
    if (n <= 0) return 0;
    int k = (int)(p / 100.0 * n + 0.999999) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k];
}

static double mean(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return n ? s / n : 0;
}

typedef struct {
    double *d; /* receive - sampled, ms */
    int n, cap;
    int n_tokens;
} stream_acc;

static int on_chunk(const infer_chunk *ch, void *user) {
    double t = clock_now_ms();
    stream_acc *a = user;
    if (ch->finish_reason) return 0; /* the final chunk carries no new token */
    a->n_tokens++;
    if (ch->sampled_ms > 0 && a->n < a->cap) a->d[a->n++] = t - ch->sampled_ms;
    return 0;
}

static void usage(void) {
    fputs("usage: rpc-overhead-bench [--server PATH] [-m MODEL] [-t THREADS] [-n CALLS]\n"
          "         [--warmup N] [--stream-calls N] [--stream-tokens N] [--port P] [-p PROMPT]\n",
          stderr);
}

typedef struct {
    const char *server, *model, *prompt;
    int threads, calls, warmup, stream_calls, stream_tokens, port;
} bench_opts;

/* Returns -1 to go on, else the exit status (0 after --help, 2 on misuse). */
static int parse_args(int argc, char **argv, bench_opts *o) {
    *o = (bench_opts){.server = "build/infer-server",
                      .model = "models/SmolLM2-135M-Instruct.Q4_1.gguf",
                      .prompt = "Hello",
                      .threads = 2,
                      .calls = 300,
                      .warmup = 30,
                      .stream_calls = 10,
                      .stream_tokens = 64,
                      .port = 18700 + (int)(getpid() % 1000)};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--server")) o->server = v;
        else if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "-p")) o->prompt = v;
        else if (!strcmp(a, "-t")) o->threads = atoi(v);
        else if (!strcmp(a, "-n")) o->calls = atoi(v);
        else if (!strcmp(a, "--warmup")) o->warmup = atoi(v);
        else if (!strcmp(a, "--stream-calls")) o->stream_calls = atoi(v);
        else if (!strcmp(a, "--stream-tokens")) o->stream_tokens = atoi(v);
        else if (!strcmp(a, "--port")) o->port = atoi(v);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (o->calls < 1 || o->warmup < 0 || o->stream_calls < 1 || o->stream_tokens < 1 ||
        o->threads < 1) {
        usage();
        return 2;
    }
    return -1;
}

/* fork + exec the server on url; its stderr goes to /dev/null unless
 * RPC_BENCH_SERVER_LOG is set. Returns the pid, -1 when fork fails. */
static pid_t start_server(const bench_opts *o, const char *url) {
    char threads_s[16];
    snprintf(threads_s, sizeof threads_s, "%d", o->threads);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        if (!getenv("RPC_BENCH_SERVER_LOG")) {
            FILE *f = freopen("/dev/null", "w", stderr);
            (void)f;
        }
        execl(o->server, o->server, "-m", o->model, "-t", threads_s, "--listen", url, "--http", "",
              (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", o->server, strerror(errno));
        _exit(127);
    }
    fprintf(stderr, "rpc-overhead-bench: started %s (pid %d) on %s, %d threads\n", o->server,
            (int)pid, url, o->threads);
    return pid;
}

/* Connect once the server answers Health; NULL (server stopped) when it
 * exits or is not ready within a minute. */
static infer_client *wait_ready(pid_t pid, const char *url) {
    infer_client *c = NULL;
    char err[512];
    double t0 = clock_now_ms();
    for (;;) {
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid) {
            fprintf(stderr, "rpc-overhead-bench: the server exited during start-up\n");
            return NULL;
        }
        if (!c && infer_connect(url, NULL, &c, err, sizeof err) != 0) c = NULL;
        if (c) {
            char hs[32];
            if (infer_health(c, 1000, hs, sizeof hs, NULL) == INFER_OK) return c;
        }
        if (clock_now_ms() - t0 > 60000) {
            fprintf(stderr, "rpc-overhead-bench: server not ready after 60 s\n");
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
            return NULL;
        }
        usleep(50 * 1000);
    }
}

static void stop_server(pid_t pid) {
    kill(pid, SIGTERM);
    int wst = 0;
    waitpid(pid, &wst, 0);
    fprintf(stderr, "rpc-overhead-bench: server stopped (%s %d)\n",
            WIFEXITED(wst) ? "exit" : "signal", WIFEXITED(wst) ? WEXITSTATUS(wst) : WTERMSIG(wst));
}

/* What the RPC part measured. */
typedef struct {
    double *unary;      /* (a), calls entries */
    stream_acc sa;      /* (b), every token's delivery delay */
    double *stream_itl; /* per stream call, ms per token */
    int prompt_tokens;
} rpc_results;

/* (a): warmup + calls unary 1-token Generates. */
static int measure_unary(infer_client *c, const infer_gen_params *gp, const bench_opts *o,
                         rpc_results *r) {
    for (int i = 0; i < o->warmup + o->calls; i++) {
        infer_result res;
        infer_status st;
        double a = clock_now_ms();
        if (infer_generate(c, gp, 30000, &res, &st) != INFER_OK) {
            fprintf(stderr, "Generate failed: %s: %s\n", infer_status_name(st.code), st.message);
            return 1;
        }
        double b = clock_now_ms();
        r->prompt_tokens = res.usage.prompt_tokens;
        infer_result_free(&res);
        if (i >= o->warmup) r->unary[i - o->warmup] = b - a;
    }
    return 0;
}

/* (b): stream_calls GenerateStreams of stream_tokens tokens after one warm-up
 * call. */
static int measure_stream(infer_client *c, const infer_gen_params *gp, const bench_opts *o,
                          rpc_results *r) {
    infer_gen_params sp = *gp;
    sp.max_tokens = o->stream_tokens;
    stream_acc *sa = &r->sa;
    int rc = 0;
    for (int i = 0; rc == 0 && i < o->stream_calls + 1; i++) { /* the first call warms up */
        infer_status st;
        stream_acc one = {.d = sa->d + sa->n, .cap = sa->cap - sa->n};
        double a = clock_now_ms();
        if (infer_generate_stream(c, &sp, 60000, on_chunk, &one, &st) != INFER_OK) {
            fprintf(stderr, "GenerateStream failed: %s: %s\n", infer_status_name(st.code),
                    st.message);
            return 1;
        }
        double b = clock_now_ms();
        if (one.n_tokens != o->stream_tokens) {
            fprintf(stderr, "GenerateStream: %d tokens, expected %d\n", one.n_tokens,
                    o->stream_tokens);
            rc = 1;
        }
        if (i == 0) continue;
        sa->n += one.n;
        sa->n_tokens += one.n_tokens;
        r->stream_itl[i - 1] = (b - a) / o->stream_tokens;
    }
    return rc;
}

/* (a) and (b) against a server started here and stopped before returning. */
static int measure_rpc(const bench_opts *o, const char *url, rpc_results *r) {
    pid_t pid = start_server(o, url);
    if (pid < 0) return 1;
    infer_client *c = wait_ready(pid, url);
    if (!c) return 1;

    infer_gen_params gp;
    infer_gen_params_init(&gp);
    gp.prompt = o->prompt;
    gp.max_tokens = 1;
    gp.temperature = 0;
    gp.ignore_eos = 1;

    r->unary = calloc((size_t)o->calls, sizeof *r->unary);
    r->sa = (stream_acc){.cap = o->stream_calls * o->stream_tokens};
    r->sa.d = calloc((size_t)r->sa.cap, sizeof *r->sa.d);
    r->stream_itl = calloc((size_t)o->stream_calls, sizeof *r->stream_itl);
    r->prompt_tokens = 0;
    int rc = measure_unary(c, &gp, o, r);
    if (rc == 0) rc = measure_stream(c, &gp, o, r);
    infer_close(c);
    stop_server(pid);
    if (rc) return rc;
    if (r->sa.n == 0) {
        fprintf(stderr, "rpc-overhead-bench: no chunk carried sampled_ms (old server?)\n");
        return 1;
    }
    return 0;
}

/* (c): the same 1-token request through engine_submit on an engine built
 * like the server's; eng gets calls entries. */
static int measure_engine(const bench_opts *o, double *eng) {
    char err[512];
    llm_model *m = NULL;
    llm_tokenizer *tok = NULL;
    if (llm_model_load(o->model, &m, NULL, NULL, err, sizeof err) != 0 ||
        tok_load(llm_model_gguf(m), &tok, err, sizeof err) != 0) {
        fprintf(stderr, "load %s: %s\n", o->model, err);
        return 1;
    }
    backend *be = backend_cpu_create(o->threads, err, sizeof err);
    if (!be) {
        fprintf(stderr, "backend: %s\n", err);
        return 1;
    }
    engine_options eo;
    engine_options_default(&eo);
    engine *e = NULL;
    if (engine_create(m, be, tok, &eo, &e, err, sizeof err) != 0) {
        fprintf(stderr, "engine: %s\n", err);
        return 1;
    }
    int32_t *ids = NULL;
    int n_ids = tok_encode(tok, o->prompt, strlen(o->prompt), 1, 1, &ids); /* as the server does */
    if (n_ids <= 0) {
        fprintf(stderr, "tokenize failed\n");
        return 1;
    }
    engine_request rq = {0};
    rq.prompt = ids;
    rq.n_prompt = n_ids;
    sampler_params_default(&rq.sampling);
    rq.sampling.temperature = 0;
    rq.max_tokens = 1;
    rq.ignore_eos = 1;
    rq.n = 1;
    for (int i = 0; i < o->warmup + o->calls; i++) {
        engine_stream *s = NULL;
        double a = clock_now_ms();
        if (engine_submit(e, &rq, &s, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "engine_submit: %s\n", err);
            return 1;
        }
        engine_event ev;
        while (engine_stream_next(s, &ev, -1) == 1) engine_event_clear(&ev);
        double b = clock_now_ms();
        engine_stream_free(s);
        if (i >= o->warmup) eng[i - o->warmup] = b - a;
    }
    engine_destroy(e);
    backend_free(be);
    tok_free(tok);
    llm_model_free(m);
    free(ids);
    return 0;
}

/* The table, then the JSON line. Sorts the samples in place. */
static void report(const bench_opts *o, const char *url, rpc_results *r, double *eng) {
    int calls = o->calls, stream_calls = o->stream_calls, stream_tokens = o->stream_tokens;
    double *unary = r->unary;
    stream_acc *sa = &r->sa;
    qsort(unary, (size_t)calls, sizeof *unary, cmp_d);
    qsort(eng, (size_t)calls, sizeof *eng, cmp_d);
    qsort(sa->d, (size_t)sa->n, sizeof *sa->d, cmp_d);
    qsort(r->stream_itl, (size_t)stream_calls, sizeof *r->stream_itl, cmp_d);
    double u50 = pct(unary, calls, 50), u99 = pct(unary, calls, 99);
    double e50 = pct(eng, calls, 50), e99 = pct(eng, calls, 99);
    double d50 = pct(sa->d, sa->n, 50), d99 = pct(sa->d, sa->n, 99);
    double itl = pct(r->stream_itl, stream_calls, 50);

    printf("RPC overhead on loopback (%s, %d threads, prompt \"%s\" = %d tokens, %d calls after "
           "%d warm-up)\n",
           url, o->threads, o->prompt, r->prompt_tokens, calls, o->warmup);
    printf("%-46s %9s %9s %9s %9s\n", "measure", "min ms", "p50 ms", "p99 ms", "mean ms");
    printf("%-46s %9.3f %9.3f %9.3f %9.3f\n", "(a) unary Generate, 1 token (RPC, client)", unary[0],
           u50, u99, mean(unary, calls));
    printf("%-46s %9.3f %9.3f %9.3f %9.3f\n", "(c) engine_submit, 1 token (in process)", eng[0],
           e50, e99, mean(eng, calls));
    printf("%-46s %9.3f %9.3f %9.3f %9s\n", "(a)-(c) RPC overhead per call", unary[0] - eng[0],
           u50 - e50, u99 - e99, "");
    char lbl[64];
    snprintf(lbl, sizeof lbl, "(b) sampled -> client receive, %d-token stream", stream_tokens);
    printf("%-46s %9.3f %9.3f %9.3f %9.3f\n", lbl, sa->d[0], d50, d99, mean(sa->d, sa->n));
    printf("    (%d tokens over %d streams; inter-token interval p50 %.3f ms)\n", sa->n,
           stream_calls, itl);
    printf("{\"bench\":\"rpc_overhead\",\"threads\":%d,\"calls\":%d,\"warmup\":%d,"
           "\"prompt_tokens\":%d,\"unary_min_ms\":%.4f,\"engine_min_ms\":%.4f,\"unary_p50_ms\":%."
           "4f,\"unary_p99_ms\":%.4f,"
           "\"engine_p50_ms\":%.4f,\"engine_p99_ms\":%.4f,\"overhead_p50_ms\":%.4f,"
           "\"stream_calls\":%d,\"stream_tokens\":%d,\"delivery_samples\":%d,"
           "\"delivery_p50_ms\":%.4f,\"delivery_p99_ms\":%.4f,\"delivery_mean_ms\":%.4f,"
           "\"stream_itl_p50_ms\":%.4f}\n",
           o->threads, calls, o->warmup, r->prompt_tokens, unary[0], eng[0], u50, u99, e50, e99,
           u50 - e50, stream_calls, stream_tokens, sa->n, d50, d99, mean(sa->d, sa->n), itl);
}

int main(int argc, char **argv) {
    bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", o.port);

    rpc_results r;
    if ((rc = measure_rpc(&o, url, &r))) return rc;
    double *eng = calloc((size_t)o.calls, sizeof *eng);
    if ((rc = measure_engine(&o, eng))) return rc;
    report(&o, url, &r, eng);
    free(r.unary);
    free(eng);
    free(r.sa.d);
    free(r.stream_itl);
    return 0;
}
