/*
 * test_loadtest_badserver.c - loadtest against misbehaving HTTP servers
 * (tiny fake servers on loopback, one thread each): a server that closes
 * at once, one that sends the headers and half an SSE stream, one that
 * never answers, one that answers 503, and well-behaved chunked streams
 * split at awkward places. The run must end within its bounds, record
 * every broken request as failed with a clear error, and parse the good
 * ones. Also: URL parsing, the loopback rule, exit statuses, Prometheus
 * scraping.
 */
#include "loadtest/lt_http.h"
#include "loadtest/lt_run.h"
#include "tests/common/test_util.h"

#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum { B_CLOSE, B_HALF, B_SILENT, B_503, B_CHUNKED_OK, B_HALF_CHUNKED } behaviour;

typedef struct {
    behaviour b;
    int lfd, port;
    atomic_int stop;
    pthread_t th;
    int held[256];
    int n_held;
} fake_server;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put(int fd, const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0) return;
        s += k;
        n -= (size_t)k;
    }
}

static void read_request(int fd) {
    char buf[8192];
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1000) > 0) (void)!recv(fd, buf, sizeof buf, 0);
}

static const char *SSE_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Connection: close\r\n";

static void serve(fake_server *s, int fd) {
    char chunk[256];
    switch (s->b) {
    case B_CLOSE: close(fd); return;
    case B_SILENT:
        if (s->n_held < 256) s->held[s->n_held++] = fd;
        else close(fd);
        return;
    case B_503:
        read_request(fd);
        put(fd, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                "Content-Length: 56\r\n\r\n{\"error\": {\"message\": \"server is draining\", "
                "\"code\": 1}}\n");
        break;
    case B_HALF:
        read_request(fd);
        put(fd, SSE_HEAD);
        put(fd, "\r\ndata: {\"choices\": [{\"text\": \" one\", \"finish_reason\": null}]}\n\n"
                "data: {\"choices\": [{\"text\": \" two\", \"finish_reason\": null}]}\n\nda");
        usleep(20000);
        break;
    case B_HALF_CHUNKED:
        read_request(fd);
        put(fd, SSE_HEAD);
        put(fd, "Transfer-Encoding: chunked\r\n\r\n");
        snprintf(chunk, sizeof chunk, "data: {\"choices\": [{\"text\": \" one\"}]}\n\n");
        {
            char hdr[32];
            snprintf(hdr, sizeof hdr, "%zx\r\n", strlen(chunk));
            put(fd, hdr);
            put(fd, chunk);
            put(fd, "\r\n");
        }
        put(fd, "40\r\ndata: {\"cho"); /* promised 64 bytes, sent 15 */
        usleep(20000);
        break;
    case B_CHUNKED_OK: {
        read_request(fd);
        put(fd, SSE_HEAD);
        put(fd, "Transfer-Encoding: chunked\r\n\r\n");
        /* llama-server-like: one event per token, usage at the end; the
         * stream is cut into chunks of 7 bytes (events split anywhere) */
        const char *body =
            "data: {\"choices\":[{\"text\":\" Hello\",\"index\":0,\"finish_reason\":null}]}\n\n"
            ": keep-alive comment\n\n"
            "data: {\"choices\":[{\"text\":\",\",\"index\":0,\"finish_reason\":null}]}\n\n"
            "data: {\"choices\":[{\"text\":\" world\",\"index\":0,\"finish_reason\":null}]}\r\n\r\n"
            "data: {\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}]}\n\n"
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3}}\n\n"
            "data: [DONE]\n\n";
        size_t n = strlen(body);
        for (size_t off = 0; off < n; off += 7) {
            size_t k = n - off < 7 ? n - off : 7;
            char hdr[32];
            snprintf(hdr, sizeof hdr, "%zx\r\n", k);
            put(fd, hdr);
            memcpy(chunk, body + off, k);
            chunk[k] = 0;
            put(fd, chunk);
            put(fd, "\r\n");
            if (off == 70) usleep(30000); /* a visible inter-token gap */
        }
        put(fd, "0\r\n\r\n");
        break;
    }
    }
    close(fd);
}

static void *server_main(void *arg) {
    fake_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {s->lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd >= 0) serve(s, fd);
    }
    for (int i = 0; i < s->n_held; i++) close(s->held[i]);
    close(s->lfd);
    return NULL;
}

static int server_start(fake_server *s, behaviour b) {
    memset(s, 0, sizeof *s);
    s->b = b;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof a) || listen(s->lfd, 64) ||
        getsockname(s->lfd, (struct sockaddr *)&a, &al))
        return -1;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->th, NULL, server_main, s);
}

static void server_stop(fake_server *s) {
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static cJSON *load_json(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *t = slurp(path);
    cJSON *o = t ? cJSON_Parse(t) : NULL;
    free(t);
    return o;
}

/* Run loadtest in process; returns its exit status, *secs the wall time. */
static int run_lt(const char *const *args, double *secs) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = "loadtest";
    for (int i = 0; args[i]; i++) argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    double t = now_s();
    int rc = lt_main(argc, argv);
    *secs = now_s() - t;
    return rc;
}

/* Every response failed and its error contains want. */
static void check_all_failed(const char *dir, int n, const char *want) {
    cJSON *r = load_json(dir, "responses.json");
    CHECKF(cJSON_GetArraySize(r) == n, "%d responses", cJSON_GetArraySize(r));
    const cJSON *e;
    cJSON_ArrayForEach(e, r) {
        const cJSON *err = cJSON_GetObjectItem(e, "error");
        CHECKF(cJSON_IsString(err) && strstr(err->valuestring, want), "error %s, want \"%s\"",
               cJSON_IsString(err) ? err->valuestring : "null", want);
    }
    cJSON_Delete(r);
    cJSON *s = load_json(dir, "summary.json");
    const cJSON *ok = cJSON_GetObjectItem(s, "requests_ok"),
                *f = cJSON_GetObjectItem(s, "requests_failed");
    CHECK(cJSON_IsNumber(ok) && ok->valueint == 0 && cJSON_IsNumber(f) && f->valueint == n);
    const cJSON *ttft = cJSON_GetObjectItem(s, "ttft_ms");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ttft, "p50")));
    cJSON_Delete(s);
}

static void test_misbehaving(const char *dir) {
    struct {
        behaviour b;
        const char *want;
    } cases[] = {
        {B_CLOSE, "before any response"},
        {B_HALF, "connection closed after 2 events without [DONE]"},
        {B_HALF_CHUNKED, "connection closed after 1 events without [DONE]: connection closed "
                         "before the end of the body"},
        {B_503, "HTTP 503: {\"error\": {\"message\": \"server is draining\""},
        {B_SILENT, "timeout (no response headers): no end within --request-timeout 1 s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_server s;
        CHECK(server_start(&s, cases[i].b) == 0);
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
        const char *args[] = {"--url",
                              url,
                              "--concurrency",
                              "3",
                              "-n",
                              "6",
                              "--max-tokens",
                              "4",
                              "--request-timeout",
                              "1",
                              "--quiet",
                              "--out",
                              dir,
                              NULL};
        double secs;
        int rc = run_lt(args, &secs);
        CHECKF(rc == 0, "case %zu: exit %d", i, rc);
        /* 6 requests, 3 at a time: silent ones take 2 x 1 s */
        CHECKF(secs < 4.0, "case %zu took %.2f s", i, secs);
        check_all_failed(dir, 6, cases[i].want);
        /* --fail-on-error turns failures into exit status 1 */
        if (cases[i].b == B_CLOSE) {
            const char *a2[] = {"--url", url,       "--rate",          "50", "-n",
                                "3",     "--quiet", "--fail-on-error", NULL};
            CHECK(run_lt(a2, &secs) == 1);
        }
        server_stop(&s);
    }
}

static void test_drain_timeout(const char *dir) {
    /* A server that never answers, --duration bounds the sending and
     * --drain-timeout the wait: the requests end as failed "timeout". */
    fake_server s;
    CHECK(server_start(&s, B_SILENT) == 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    const char *args[] = {
        "--url", url,       "--rate", "20", "--duration",        "0.5", "--drain-timeout",
        "0.5",   "--quiet", "--out",  dir,  "--sample-interval", "0.1", NULL};
    double secs;
    int rc = run_lt(args, &secs);
    CHECK(rc == 0);
    CHECKF(secs >= 0.9 && secs < 2.5, "took %.2f s", secs);
    cJSON *r = load_json(dir, "responses.json");
    int n = cJSON_GetArraySize(r);
    CHECKF(n >= 3 && n <= 30, "%d requests in 0.5 s at 20/s", n);
    cJSON_Delete(r);
    check_all_failed(dir, n, "timeout: still running at the end of --drain-timeout");
    cJSON *tl = load_json(dir, "timeline.json");
    CHECKF(cJSON_GetArraySize(tl) >= 5, "%d samples", cJSON_GetArraySize(tl));
    const cJSON *first = cJSON_GetArrayItem(tl, 0);
    CHECK(cJSON_GetObjectItem(first, "in_flight") && cJSON_GetObjectItem(first, "output_tokens"));
    CHECK(!cJSON_GetObjectItem(first, "running")); /* no /metrics: omitted */
    cJSON_Delete(tl);
    server_stop(&s);
}

static void test_chunked_ok(const char *dir) {
    fake_server s;
    CHECK(server_start(&s, B_CHUNKED_OK) == 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    const char *args[] = {"--url", url, "--concurrency", "2",         "-n", "4", "--quiet",
                          "--out", dir, "--slo",         "ttft=1000", NULL};
    double secs;
    CHECK(run_lt(args, &secs) == 0);
    cJSON *r = load_json(dir, "responses.json");
    CHECK(cJSON_GetArraySize(r) == 4);
    const cJSON *e;
    cJSON_ArrayForEach(e, r) {
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(e, "error")));
        const cJSON *text = cJSON_GetObjectItem(e, "text");
        CHECKF(cJSON_IsString(text) && !strcmp(text->valuestring, " Hello, world"), "%s",
               cJSON_IsString(text) ? text->valuestring : "?");
        CHECK(cJSON_GetObjectItem(e, "output_tokens")->valueint == 3);
        CHECK(cJSON_GetObjectItem(e, "input_tokens")->valueint == 11);
        CHECK(!strcmp(cJSON_GetObjectItem(e, "finish_reason")->valuestring, "length"));
        const cJSON *itl = cJSON_GetObjectItem(e, "itl_ms");
        CHECK(cJSON_GetArraySize(itl) == 2);
        CHECK(cJSON_IsNumber(cJSON_GetObjectItem(e, "tpot_ms")));
    }
    cJSON_Delete(r);
    cJSON *sm = load_json(dir, "summary.json");
    CHECK(cJSON_GetObjectItem(sm, "requests_ok")->valueint == 4);
    CHECK(cJSON_GetObjectItem(sm, "output_tokens")->valueint == 12);
    CHECK(cJSON_GetObjectItem(sm, "goodput_fraction")->valuedouble == 1.0);
    CHECK(!strcmp(cJSON_GetObjectItem(sm, "kind")->valuestring, "http"));
    CHECK(!strcmp(cJSON_GetObjectItem(sm, "mode")->valuestring, "concurrency"));
    cJSON_Delete(sm);
    server_stop(&s);
}

static void test_max_inflight(const char *dir) {
    /* 10 arrivals at 200/s but one slot: later arrivals wait, which shows
     * as t_send > t_sched and in max_inflight_waits; all succeed. */
    fake_server s;
    CHECK(server_start(&s, B_CHUNKED_OK) == 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    const char *args[] = {"--url",          url, "--rate",  "200",   "-n", "10",
                          "--max-inflight", "1", "--quiet", "--out", dir,  NULL};
    double secs;
    CHECK(run_lt(args, &secs) == 0);
    cJSON *sm = load_json(dir, "summary.json");
    CHECK(cJSON_GetObjectItem(sm, "requests_ok")->valueint == 10);
    CHECKF(cJSON_GetObjectItem(sm, "max_inflight_waits")->valueint >= 5, "%d waits",
           cJSON_GetObjectItem(sm, "max_inflight_waits")->valueint);
    cJSON_Delete(sm);
    cJSON *r = load_json(dir, "responses.json");
    const cJSON *last = cJSON_GetArrayItem(r, 9);
    double late = cJSON_GetObjectItem(last, "t_send")->valuedouble -
                  cJSON_GetObjectItem(last, "t_sched")->valuedouble;
    CHECKF(late > 0.1, "last request sent %.3f s after its time", late);
    cJSON_Delete(r);
    server_stop(&s);
}

static void test_silent_rpc(const char *dir) {
    /* An RPC target that accepts the connection and never answers. */
    fake_server s;
    CHECK(server_start(&s, B_SILENT) == 0);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", s.port);
    const char *args[] = {"--url", url,       "--concurrency", "2", "-n", "3", "--request-timeout",
                          "1",     "--quiet", "--out",         dir, NULL};
    double secs;
    int rc = run_lt(args, &secs);
    CHECK(rc == 0);
    CHECKF(secs < 4.0, "took %.2f s", secs);
    if (rc == 0) check_all_failed(dir, 3, "timeout: no end within --request-timeout 1 s");
    server_stop(&s);
}

static void test_urls_and_usage(void) {
    lt_url u;
    char err[256];
    CHECK(lt_url_parse("http://127.0.0.1:8080", &u, err, sizeof err) == 0 &&
          u.kind == LT_TARGET_HTTP && !strcmp(u.host, "127.0.0.1") && !strcmp(u.port, "8080") &&
          !strcmp(u.path, "/v1/completions"));
    CHECK(lt_url_parse("http://[::1]:9/x/completions", &u, err, sizeof err) == 0 &&
          !strcmp(u.host, "::1") && !strcmp(u.path, "/x/completions"));
    CHECK(lt_url_parse("http://localhost", &u, err, sizeof err) == 0 && !strcmp(u.port, "80"));
    CHECK(lt_url_parse("tcp://127.0.0.1:8700", &u, err, sizeof err) == 0 &&
          u.kind == LT_TARGET_RPC);
    CHECK(lt_url_parse("ipc:///tmp/x.sock", &u, err, sizeof err) == 0 && u.host[0] == 0);
    CHECK(lt_url_parse("tcp://127.0.0.1", &u, err, sizeof err) == -1);
    CHECK(lt_url_parse("https://127.0.0.1", &u, err, sizeof err) == -1 && strstr(err, "https"));
    CHECK(lt_url_parse("ftp://x", &u, err, sizeof err) == -1);
    CHECK(lt_host_is_loopback("127.0.0.1") && lt_host_is_loopback("127.1.2.3") &&
          lt_host_is_loopback("::1") && lt_host_is_loopback("localhost"));
    CHECK(!lt_host_is_loopback("10.0.0.1") && !lt_host_is_loopback("example.com") &&
          !lt_host_is_loopback("::") && !lt_host_is_loopback("128.0.0.1"));

    double secs;
    const char *remote[] = {"--url", "http://10.1.2.3:8080", "--rate", "1", NULL};
    CHECK(run_lt(remote, &secs) == 2);
    const char *no_mode[] = {"--url", "http://127.0.0.1:1", NULL};
    CHECK(run_lt(no_mode, &secs) == 2);
    const char *both[] = {"--url", "http://127.0.0.1:1", "--rate", "1", "--concurrency", "2", NULL};
    CHECK(run_lt(both, &secs) == 2);
    const char *bad_num[] = {"--url", "http://127.0.0.1:1", "--rate", "fast", NULL};
    CHECK(run_lt(bad_num, &secs) == 2);
    const char *bad_slo[] = {"--url", "http://127.0.0.1:1", "--rate", "1", "--slo", "e2e=5", NULL};
    CHECK(run_lt(bad_slo, &secs) == 2);
    const char *no_trace[] = {"--url", "http://127.0.0.1:1", "--trace", "/nonexistent.jsonl", NULL};
    CHECK(run_lt(no_trace, &secs) == 2);
    /* nothing listens on the port: requests fail, the run completes */
    const char *refused[] = {"--url", "http://127.0.0.1:1", "--rate", "100", "-n", "2", "--quiet",
                             NULL};
    CHECK(run_lt(refused, &secs) == 0 && secs < 2);
}

static void test_dead_server_closed_loop(const char *dir) {
    /* Closed loop for a fixed time against a refused port: failures come
     * back at once, yet the run sends a bounded number of requests. */
    const char *args[] = {"--url",
                          "http://127.0.0.1:1",
                          "--concurrency",
                          "4",
                          "--duration",
                          "0.5",
                          "--quiet",
                          "--out",
                          dir,
                          NULL};
    double secs;
    CHECK(run_lt(args, &secs) == 0);
    CHECKF(secs >= 0.5 && secs < 1.5, "took %.2f s", secs);
    cJSON *sm = load_json(dir, "summary.json");
    int sent = cJSON_GetObjectItem(sm, "requests_sent")->valueint;
    CHECKF(sent >= 4 && sent <= 80, "%d requests", sent);
    CHECK(cJSON_GetObjectItem(sm, "requests_failed")->valueint == sent);
    cJSON_Delete(sm);
}

static void test_prometheus(void) {
    lt_server_gauges g;
    lt_parse_prometheus("# HELP infer_sequences_running x\n# TYPE infer_sequences_running gauge\n"
                        "infer_sequences_running 3\ninfer_sequences_waiting 5\n"
                        "infer_sequences_swapped 0\ninfer_kv_blocks_used{tier=\"cpu\"} 9\n"
                        "infer_kv_blocks_used{tier=\"device\"} 42\n",
                        &g);
    CHECK(g.running == 3 && g.waiting == 5 && g.swapped == 0 && g.kv_blocks_used == 42);
    lt_parse_prometheus("llamacpp:requests_processing 2\nllamacpp:requests_deferred 7\n"
                        "llamacpp:kv_cache_usage_ratio 0.5\n",
                        &g);
    CHECK(g.running == 2 && g.waiting == 7 && g.swapped == -1 && g.kv_blocks_used == -1);
    lt_parse_prometheus("", &g);
    CHECK(g.running == -1 && g.waiting == -1);
}

int main(void) {
    char dir[] = "/tmp/test_loadtest_badXXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_urls_and_usage();
    test_prometheus();
    test_chunked_ok(dir);
    test_misbehaving(dir);
    test_drain_timeout(dir);
    test_max_inflight(dir);
    test_dead_server_closed_loop(dir);
    test_silent_rpc(dir);
    const char *files[] = {"responses.json", "summary.json", "timeline.json"};
    for (int i = 0; i < 3; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    return tu_finish("test_loadtest_badserver");
}
