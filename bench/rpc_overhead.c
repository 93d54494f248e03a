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

#include "clients/c/infer_client.h"
#include "core/backend/backend.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/engine.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

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
    double t = now_ms();
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

int main(int argc, char **argv) {
    const char *server = "build/infer-server";
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    const char *prompt = "Hello";
    int threads = 2, calls = 300, warmup = 30, stream_calls = 10, stream_tokens = 64;
    int port = 18700 + (int)(getpid() % 1000);
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
        if (!strcmp(a, "--server")) server = v;
        else if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-t")) threads = atoi(v);
        else if (!strcmp(a, "-n")) calls = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--stream-calls")) stream_calls = atoi(v);
        else if (!strcmp(a, "--stream-tokens")) stream_tokens = atoi(v);
        else if (!strcmp(a, "--port")) port = atoi(v);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (calls < 1 || warmup < 0 || stream_calls < 1 || stream_tokens < 1 || threads < 1) {
        usage();
        return 2;
    }

    /* ---- server ---- */
    char url[64], threads_s[16];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        if (!getenv("RPC_BENCH_SERVER_LOG")) {
            FILE *f = freopen("/dev/null", "w", stderr);
            (void)f;
        }
        execl(server, server, "-m", model, "-t", threads_s, "--listen", url, "--http", "",
              (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", server, strerror(errno));
        _exit(127);
    }
    fprintf(stderr, "rpc-overhead-bench: started %s (pid %d) on %s, %d threads\n", server, (int)pid,
            url, threads);

    infer_client *c = NULL;
    char err[512];
    double t0 = now_ms();
    for (;;) {
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid) {
            fprintf(stderr, "rpc-overhead-bench: the server exited during start-up\n");
            return 1;
        }
        if (!c && infer_connect(url, NULL, &c, err, sizeof err) != 0) c = NULL;
        if (c) {
            char hs[32];
            if (infer_health(c, 1000, hs, sizeof hs, NULL) == INFER_OK) break;
        }
        if (now_ms() - t0 > 60000) {
            fprintf(stderr, "rpc-overhead-bench: server not ready after 60 s\n");
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
            return 1;
        }
        usleep(50 * 1000);
    }

    infer_gen_params gp;
    infer_gen_params_init(&gp);
    gp.prompt = prompt;
    gp.max_tokens = 1;
    gp.temperature = 0;
    gp.ignore_eos = 1;

    int rc = 0;
    double *unary = calloc((size_t)calls, sizeof *unary);
    stream_acc sa = {.cap = stream_calls * stream_tokens};
    sa.d = calloc((size_t)sa.cap, sizeof *sa.d);
    double *stream_itl = calloc((size_t)stream_calls, sizeof *stream_itl);
    int prompt_tokens = 0;
    for (int i = 0; i < warmup + calls; i++) {
        infer_result r;
        infer_status st;
        double a = now_ms();
        if (infer_generate(c, &gp, 30000, &r, &st) != INFER_OK) {
            fprintf(stderr, "Generate failed: %s: %s\n", infer_status_name(st.code), st.message);
            rc = 1;
            break;
        }
        double b = now_ms();
        prompt_tokens = r.usage.prompt_tokens;
        infer_result_free(&r);
        if (i >= warmup) unary[i - warmup] = b - a;
    }
    infer_gen_params sp = gp;
    sp.max_tokens = stream_tokens;
    for (int i = 0; rc == 0 && i < stream_calls + 1; i++) { /* the first call warms up */
        infer_status st;
        stream_acc one = {.d = sa.d + sa.n, .cap = sa.cap - sa.n};
        double a = now_ms();
        if (infer_generate_stream(c, &sp, 60000, on_chunk, &one, &st) != INFER_OK) {
            fprintf(stderr, "GenerateStream failed: %s: %s\n", infer_status_name(st.code),
                    st.message);
            rc = 1;
            break;
        }
        double b = now_ms();
        if (one.n_tokens != stream_tokens) {
            fprintf(stderr, "GenerateStream: %d tokens, expected %d\n", one.n_tokens,
                    stream_tokens);
            rc = 1;
        }
        if (i == 0) continue;
        sa.n += one.n;
        sa.n_tokens += one.n_tokens;
        stream_itl[i - 1] = (b - a) / stream_tokens;
    }
    infer_close(c);
    kill(pid, SIGTERM);
    int wst = 0;
    waitpid(pid, &wst, 0);
    fprintf(stderr, "rpc-overhead-bench: server stopped (%s %d)\n",
            WIFEXITED(wst) ? "exit" : "signal", WIFEXITED(wst) ? WEXITSTATUS(wst) : WTERMSIG(wst));
    if (rc) return rc;
    if (sa.n == 0) {
        fprintf(stderr, "rpc-overhead-bench: no chunk carried sampled_ms (old server?)\n");
        return 1;
    }

    /* ---- engine only, same process ---- */
    llm_model *m = NULL;
    llm_tokenizer *tok = NULL;
    if (llm_model_load(model, &m, NULL, NULL, err, sizeof err) != 0 ||
        tok_load(llm_model_gguf(m), &tok, err, sizeof err) != 0) {
        fprintf(stderr, "load %s: %s\n", model, err);
        return 1;
    }
    backend *be = backend_cpu_create(threads, err, sizeof err);
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
    int n_ids = tok_encode(tok, prompt, strlen(prompt), 1, 1, &ids); /* as the server does */
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
    double *eng = calloc((size_t)calls, sizeof *eng);
    for (int i = 0; i < warmup + calls; i++) {
        engine_stream *s = NULL;
        double a = now_ms();
        if (engine_submit(e, &rq, &s, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "engine_submit: %s\n", err);
            return 1;
        }
        engine_event ev;
        while (engine_stream_next(s, &ev, -1) == 1) engine_event_clear(&ev);
        double b = now_ms();
        engine_stream_free(s);
        if (i >= warmup) eng[i - warmup] = b - a;
    }
    engine_destroy(e);
    backend_free(be);
    tok_free(tok);
    llm_model_free(m);
    free(ids);

    qsort(unary, (size_t)calls, sizeof *unary, cmp_d);
    qsort(eng, (size_t)calls, sizeof *eng, cmp_d);
    qsort(sa.d, (size_t)sa.n, sizeof *sa.d, cmp_d);
    qsort(stream_itl, (size_t)stream_calls, sizeof *stream_itl, cmp_d);
    double u50 = pct(unary, calls, 50), u99 = pct(unary, calls, 99);
    double e50 = pct(eng, calls, 50), e99 = pct(eng, calls, 99);
    double d50 = pct(sa.d, sa.n, 50), d99 = pct(sa.d, sa.n, 99);
    double itl = pct(stream_itl, stream_calls, 50);

    printf("RPC overhead on loopback (%s, %d threads, prompt \"%s\" = %d tokens, %d calls after "
           "%d warm-up)\n",
           url, threads, prompt, prompt_tokens, calls, warmup);
    printf("%-46s %9s %9s %9s %9s\n", "measure", "min ms", "p50 ms", "p99 ms", "mean ms");
    printf("%-46s %9.3f %9.3f %9.3f %9.3f\n", "(a) unary Generate, 1 token (RPC, client)", unary[0],
           u50, u99, mean(unary, calls));
    printf("%-46s %9.3f %9.3f %9.3f %9.3f\n", "(c) engine_submit, 1 token (in process)", eng[0],
           e50, e99, mean(eng, calls));
    printf("%-46s %9.3f %9.3f %9.3f %9s\n", "(a)-(c) RPC overhead per call", unary[0] - eng[0],
           u50 - e50, u99 - e99, "");
    char lbl[64];
    snprintf(lbl, sizeof lbl, "(b) sampled -> client receive, %d-token stream", stream_tokens);
    printf("%-46s %9.3f %9.3f %9.3f %9.3f\n", lbl, sa.d[0], d50, d99, mean(sa.d, sa.n));
    printf("    (%d tokens over %d streams; inter-token interval p50 %.3f ms)\n", sa.n,
           stream_calls, itl);
    printf("{\"bench\":\"rpc_overhead\",\"threads\":%d,\"calls\":%d,\"warmup\":%d,"
           "\"prompt_tokens\":%d,\"unary_min_ms\":%.4f,\"engine_min_ms\":%.4f,\"unary_p50_ms\":%."
           "4f,\"unary_p99_ms\":%.4f,"
           "\"engine_p50_ms\":%.4f,\"engine_p99_ms\":%.4f,\"overhead_p50_ms\":%.4f,"
           "\"stream_calls\":%d,\"stream_tokens\":%d,\"delivery_samples\":%d,"
           "\"delivery_p50_ms\":%.4f,\"delivery_p99_ms\":%.4f,\"delivery_mean_ms\":%.4f,"
           "\"stream_itl_p50_ms\":%.4f}\n",
           threads, calls, warmup, prompt_tokens, unary[0], eng[0], u50, u99, e50, e99, u50 - e50,
           stream_calls, stream_tokens, sa.n, d50, d99, mean(sa.d, sa.n), itl);
    free(unary);
    free(eng);
    free(sa.d);
    free(stream_itl);
    return 0;
}
