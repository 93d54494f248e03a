/*
 * test_http.c - infer-server's HTTP front end, driven over raw sockets.
 *
 * Starts $ENGINE_BUILD_DIR/infer-server with the real model on free
 * loopback ports (skips with 77 when the model or the server binary is
 * missing), writes HTTP/1.1 requests by hand and checks what an HTTP user
 * relies on:
 *   - GET /health, /v1/models, /metrics (Prometheus names and content type);
 *   - POST /generate with the course lab's max_length, greedy and
 *     repeatable, token ids on request; keep-alive across requests;
 *   - POST /v1/completions unary and streamed (SSE events arrive one by one
 *     and end with [DONE]; the streamed text equals the unary one), n > 1;
 *   - POST /v1/chat/completions streamed (role first, finish_reason last);
 *   - errors with OpenAI-style JSON bodies: bad JSON (with its position),
 *     a wrong type, a bad value, unknown path (404), wrong method (405),
 *     body too large (413, "Content Too Large");
 *   - JSON rules: a NUL escape in any string, a number out of range
 *     (1e400) and a duplicate key are refused, naming the field; a request
 *     whose n completions can never fit the KV pool is refused (400);
 *   - transport errors answered in JSON: Content-Length with
 *     Transfer-Encoding (400, the smuggled request is not served), 414,
 *     431, no Host, HTTP/2.0 (505), an unknown method (405), OPTIONS (204
 *     with Allow), HEAD; stalled headers and a stalled body get 408;
 *   - Expect: 100-continue is honoured; 16 concurrent streams complete;
 *   - a second server: API key (401), a call past server.request_timeout_ms
 *     gets 504, a full waiting queue gives 429;
 *   - a client that disconnects mid-stream, or from a non-streaming call
 *     (keep-alive or not), has its request cancelled and every KV block is
 *     free again within 1 s; a half-closed client still gets its stream;
 *   - SIGTERM drains: /health says so, new calls get 503, a running stream
 *     completes, and the server exits 0 (under the sanitizers: no leak).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/common/test_util.h"

#define IO_TIMEOUT_MS 60000 /* generous: the sanitizer build is slow */

typedef struct {
    pid_t pid;
    int http_port;
    char log[256];
} server;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ---------------------------------------------------------------------
 * A minimal HTTP/1.1 client
 * ------------------------------------------------------------------- */

static int http_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* recv with a timeout; returns bytes, 0 at EOF, -1 on error/timeout. */
static ssize_t recv_some(int fd, char *buf, size_t cap, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0) return -1;
    ssize_t k = recv(fd, buf, cap, 0);
    return k;
}

typedef struct {
    int status;
    char head[4096];
    char *body; /* NUL-terminated */
    size_t body_len;
} http_resp;

static void resp_free(http_resp *r) {
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Value of a header in r->head (case-insensitive name), copied to out. */
static int resp_header(const http_resp *r, const char *name, char *out, size_t cap) {
    size_t n = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2]) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            p += n + 1;
            while (*p == ' ') p++;
            size_t k = strcspn(p, "\r\n");
            if (k >= cap) k = cap - 1;
            memcpy(out, p, k);
            out[k] = 0;
            return 1;
        }
        p = strstr(p, "\r\n");
    }
    return 0;
}

/* Read one response: the head, then Content-Length bytes or up to EOF.
 * Interim 1xx responses are returned as such (no body). */
static int read_response(int fd, http_resp *r) {
    memset(r, 0, sizeof *r);
    size_t hl = 0;
    char *end = NULL;
    /* Read byte by byte up to the blank line so no body byte is consumed
     * (responses are small; simplicity beats speed here). */
    while (!end) {
        if (hl + 1 >= sizeof r->head) return -1;
        ssize_t k = recv_some(fd, r->head + hl, 1, IO_TIMEOUT_MS);
        if (k <= 0) return -1;
        hl += (size_t)k;
        r->head[hl] = 0;
        end = strstr(r->head, "\r\n\r\n");
    }
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
    if (r->status >= 100 && r->status < 200) {
        r->body = calloc(1, 1);
        return 0;
    }
    char v[64];
    long want = -1;
    if (resp_header(r, "Content-Length", v, sizeof v)) want = atol(v);
    size_t cap = want >= 0 ? (size_t)want + 1 : 65536, len = 0;
    r->body = malloc(cap);
    if (!r->body) return -1;
    while (want < 0 || len < (size_t)want) {
        if (len + 1 >= cap) {
            cap *= 2;
            char *p = realloc(r->body, cap);
            if (!p) return -1;
            r->body = p;
        }
        ssize_t k = recv_some(fd, r->body + len, cap - 1 - len, IO_TIMEOUT_MS);
        if (k < 0) return -1;
        if (k == 0) break;
        len += (size_t)k;
    }
    r->body[len] = 0;
    r->body_len = len;
    return 0;
}

/* One request on a fresh connection ("Connection: close"). extra: more
 * header lines, each ending in \r\n (may be NULL). */
static int http_call(int port, const char *method, const char *path, const char *extra,
                     const char *body, http_resp *r) {
    memset(r, 0, sizeof *r);
    int fd = http_connect(port);
    if (fd < 0) return -1;
    char head[2048];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(
        head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s",
        method, path, port, extra ? extra : "", body ? "Content-Type: application/json\r\n" : "");
    if (body) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", blen);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    int rc = send_all(fd, head, (size_t)n);
    if (rc == 0 && body) rc = send_all(fd, body, blen);
    if (rc == 0) rc = read_response(fd, r);
    close(fd);
    return rc;
}

static cJSON *resp_json(const http_resp *r) { return r->body ? cJSON_Parse(r->body) : NULL; }

/* The value at "a.b.0.c" (numeric parts index arrays), or NULL. Thread-safe
 * (the concurrent-stream test parses events on many threads). */
static const cJSON *jpath(const cJSON *o, const char *path) {
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *v = o;
    for (char *tok = strtok_r(buf, ".", &save); tok && v; tok = strtok_r(NULL, ".", &save)) {
        if (tok[0] >= '0' && tok[0] <= '9') v = cJSON_GetArrayItem(v, atoi(tok));
        else v = cJSON_GetObjectItemCaseSensitive(v, tok);
    }
    return v;
}

static const char *jstr(const cJSON *o, const char *path) {
    const cJSON *v = jpath(o, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *path) {
    const cJSON *v = jpath(o, path);
    return cJSON_IsNumber(v) ? v->valuedouble : -1e300;
}

/* ---------------------------------------------------------------------
 * The server process
 * ------------------------------------------------------------------- */

static void server_kill(server *sv) {
    if (sv->pid > 0) {
        kill(sv->pid, SIGKILL);
        waitpid(sv->pid, NULL, 0);
        sv->pid = -1;
    }
}

/* SIGTERM: the server drains and must exit 0 (under the sanitizers that
 * also means no leak and no error report). Returns the exit status. */
static int server_stop(server *sv) {
    if (sv->pid <= 0) return -1;
    kill(sv->pid, SIGTERM);
    double t0 = now_ms();
    while (now_ms() - t0 < 60000) {
        int wst;
        if (waitpid(sv->pid, &wst, WNOHANG) == sv->pid) {
            sv->pid = -1;
            return WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
        }
        tu_sleep_ms(50);
    }
    server_kill(sv);
    return -2;
}

static void server_dump_log(const server *sv) {
    FILE *f = fopen(sv->log, "r");
    if (!f) return;
    fprintf(stderr, "---- %s ----\n", sv->log);
    char line[1024];
    while (fgets(line, sizeof line, f)) fputs(line, stderr);
    fclose(f);
}

/* second: the second server's settings (API key, 5 s deadline, one
 * sequence per step and one waiting request at most). */
static int server_start(server *sv, const char *bin, const char *model, int second) {
    memset(sv, 0, sizeof *sv);
    int rpc_port = tu_free_port();
    sv->http_port = tu_free_port();
    if (rpc_port < 0 || sv->http_port < 0) return -1;
    snprintf(sv->log, sizeof sv->log, "/tmp/test_http_server_%d_%d.log", (int)getpid(),
             sv->http_port);
    char listen[96], http[96], key[300];
    snprintf(listen, sizeof listen, "server.listen=tcp://127.0.0.1:%d", rpc_port);
    snprintf(http, sizeof http, "server.http_listen=http://127.0.0.1:%d", sv->http_port);
    snprintf(key, sizeof key, "server.api_key=%s", second ? "s3cret-key" : "");
    const char *timeout = second ? "server.request_timeout_ms=5000" : "server.request_timeout_ms=0";
    const char *seqs =
        second ? "batcher_config.batch_max_seqs=1" : "batcher_config.batch_max_seqs=64";
    const char *waiting =
        second ? "batcher_config.max_waiting=1" : "batcher_config.max_waiting=1024";
    sv->pid = fork();
    if (sv->pid < 0) return -1;
    if (sv->pid == 0) {
        FILE *f = freopen(sv->log, "w", stderr);
        (void)f;
        unsetenv("ENGINE_API_KEY");
        /* 256 blocks of 16 tokens: room for the streams below, quick to
         * set up under the sanitizers. */
        /* short connection timeouts, so test_slow_clients waits seconds */
        execl(bin, bin, "-m", model, "--set", listen, "--set", http, "--set", key, "--set",
              "cache_config.num_blocks=256", "--set", "server.max_message_bytes=65536", "--set",
              timeout, "--set", seqs, "--set", waiting, "--set", "server.handshake_timeout_ms=3000",
              "--set", "server.frame_timeout_ms=4000", (char *)NULL);
        _exit(127);
    }
    double t0 = now_ms();
    while (now_ms() - t0 < 120000) {
        int wst;
        if (waitpid(sv->pid, &wst, WNOHANG) == sv->pid) {
            fprintf(stderr, "infer-server exited during start-up (status %d)\n", wst);
            sv->pid = -1;
            server_dump_log(sv);
            return -1;
        }
        http_resp r;
        if (http_call(sv->http_port, "GET", "/health", NULL, NULL, &r) == 0 && r.status == 200) {
            resp_free(&r);
            return 0;
        }
        resp_free(&r);
        tu_sleep_ms(100);
    }
    fprintf(stderr, "infer-server's /health did not answer within 120 s\n");
    server_kill(sv);
    server_dump_log(sv);
    return -1;
}

/* A gauge or counter from /metrics ("name{labels}" exactly as rendered). */
static double metric_with(int port, const char *extra, const char *series) {
    http_resp r;
    double v = -1;
    if (http_call(port, "GET", "/metrics", extra, NULL, &r) == 0 && r.status == 200) {
        size_t n = strlen(series);
        for (const char *p = r.body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
            if (strncmp(p, series, n) == 0 && p[n] == ' ') {
                v = atof(p + n + 1);
                break;
            }
        }
    }
    resp_free(&r);
    return v;
}

static double metric(int port, const char *series) { return metric_with(port, NULL, series); }

static double metric_auth(int port, const char *series) {
    return metric_with(port, "Authorization: Bearer s3cret-key\r\n", series);
}

/* Every device block free within ms (a finished request's FINISH event can
 * reach the client a moment before the engine thread returns its blocks). */
static int all_blocks_free_within(int port, int auth, int ms) {
    double (*get)(int, const char *) = auth ? metric_auth : metric;
    double total = get(port, "infer_kv_blocks_total{tier=\"device\"}");
    for (double t0 = now_ms(); now_ms() - t0 < ms; tu_sleep_ms(10))
        if (total > 0 && get(port, "infer_kv_blocks_free{tier=\"device\"}") == total) return 1;
    return 0;
}

/* ---------------------------------------------------------------------
 * Server-Sent Events
 * ------------------------------------------------------------------- */

typedef struct {
    int status;
    char ctype[128];
    cJSON *events[1024];
    int n_events;
    int done;              /* saw data: [DONE] */
    int reads_with_events; /* recv calls that completed at least one event */
    char text[8192];       /* concatenated choices[0].text / delta.content */
    char finish[32];       /* the last finish_reason seen */
    char first_role[32];
} sse_result;

static void sse_free(sse_result *s) {
    for (int i = 0; i < s->n_events; i++) cJSON_Delete(s->events[i]);
    memset(s, 0, sizeof *s);
}

/* The data of one event ("data: X" -> "X"), or NULL. Streams are chunked
 * on HTTP/1.1, and every chunk holds whole events, so the chunk framing
 * ("\r\n1a3\r\n") only ever precedes an event's "data: ". */
static char *sse_data(char *event) {
    char *d = strstr(event, "data: ");
    return d ? d + 6 : NULL;
}

static void sse_take(sse_result *s, const char *data) {
    if (strcmp(data, "[DONE]") == 0) {
        s->done = 1;
        return;
    }
    cJSON *j = cJSON_Parse(data);
    if (!j) {
        fprintf(stderr, "unparsable SSE data: %s\n", data);
        return;
    }
    if (s->n_events < 1024) s->events[s->n_events++] = j;
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const char *t = NULL, *fin = NULL, *role = NULL;
    if (ch) {
        const cJSON *d = cJSON_GetObjectItem(ch, "delta");
        t = d ? jstr(d, "content") : jstr(ch, "text");
        role = d ? jstr(d, "role") : NULL;
        fin = jstr(ch, "finish_reason");
    } else {
        t = jstr(j, "text"); /* /generate */
        fin = jstr(j, "finish_reason");
    }
    if (t) strncat(s->text, t, sizeof s->text - strlen(s->text) - 1);
    if (fin) snprintf(s->finish, sizeof s->finish, "%s", fin);
    if (role && !s->first_role[0]) snprintf(s->first_role, sizeof s->first_role, "%s", role);
    if (s->n_events >= 1024) cJSON_Delete(j);
}

/* Send a streaming request and read the events. stop_after > 0: return
 * with the connection open (*fd_out) after that many events. half_close:
 * shut down the sending side once the request is sent. Carries the
 * second server's key (a server without one ignores it). */
static int sse_call_ex(int port, const char *path, const char *body, sse_result *s, int stop_after,
                       int *fd_out, int half_close) {
    memset(s, 0, sizeof *s);
    int fd = http_connect(port);
    if (fd < 0) return -1;
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Accept: text/event-stream\r\nAuthorization: Bearer s3cret-key\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     path, strlen(body));
    if (send_all(fd, head, (size_t)n) || send_all(fd, body, strlen(body)) ||
        (half_close && shutdown(fd, SHUT_WR) != 0)) {
        close(fd);
        return -1;
    }
    http_resp r;
    /* The head, byte by byte, then the event stream until EOF. */
    size_t hl = 0;
    memset(&r, 0, sizeof r);
    while (!strstr(r.head, "\r\n\r\n")) {
        if (hl + 1 >= sizeof r.head || recv_some(fd, r.head + hl, 1, IO_TIMEOUT_MS) != 1) {
            close(fd);
            return -1;
        }
        r.head[++hl] = 0;
    }
    sscanf(r.head, "HTTP/1.%*d %d", &s->status);
    resp_header(&r, "Content-Type", s->ctype, sizeof s->ctype);
    char *buf = malloc(1 << 20);
    size_t len = 0;
    int rc = 0;
    while (!s->done) {
        ssize_t k = recv_some(fd, buf + len, (1 << 20) - 1 - len, IO_TIMEOUT_MS);
        if (k <= 0) break;
        len += (size_t)k;
        buf[len] = 0;
        int got = 0;
        char *ev;
        while ((ev = strstr(buf, "\n\n")) != NULL) {
            *ev = 0;
            if (sse_data(buf)) sse_take(s, sse_data(buf));
            got++;
            size_t used = (size_t)(ev + 2 - buf);
            memmove(buf, ev + 2, len - used + 1);
            len -= used;
        }
        if (got) s->reads_with_events++;
        if (stop_after > 0 && s->n_events >= stop_after) {
            *fd_out = fd;
            free(buf);
            return 0;
        }
    }
    free(buf);
    close(fd);
    return rc;
}

static int sse_call(int port, const char *path, const char *body, sse_result *s, int stop_after,
                    int *fd_out) {
    return sse_call_ex(port, path, body, s, stop_after, fd_out, 0);
}

/* ---------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------- */

static void test_health_models_metrics(int port) {
    http_resp r;
    CHECK(http_call(port, "GET", "/health", NULL, NULL, &r) == 0);
    CHECKF(r.status == 200 && r.body && strstr(r.body, "\"status\":\"ok\""), "%d %s", r.status,
           r.body);
    resp_free(&r);

    CHECK(http_call(port, "GET", "/v1/models", NULL, NULL, &r) == 0);
    cJSON *j = resp_json(&r);
    CHECKF(r.status == 200 && j, "%d %s", r.status, r.body);
    CHECK(j && jstr(j, "object") && !strcmp(jstr(j, "object"), "list"));
    const char *id = j ? jstr(j, "data.0.id") : NULL;
    CHECKF(id && strstr(id, "SmolLM2"), "model id %s", id ? id : "(none)");
    CHECK(j && jstr(j, "data.0.object") && !strcmp(jstr(j, "data.0.object"), "model"));
    cJSON_Delete(j);
    resp_free(&r);
    /* The id and the file name are the aliases /v1/models/{id} and
     * request bodies both accept. */
    const char *aliases[] = {"/v1/models/SmolLM2-135M-Instruct.Q4_1",
                             "/v1/models/SmolLM2-135M-Instruct.Q4_1.gguf"};
    for (int i = 0; i < 2; i++) {
        CHECK(http_call(port, "GET", aliases[i], NULL, NULL, &r) == 0);
        j = resp_json(&r);
        CHECKF(r.status == 200 && j && jstr(j, "id") &&
                   !strcmp(jstr(j, "id"), "SmolLM2-135M-Instruct.Q4_1"),
               "%s: %d %s", aliases[i], r.status, r.body);
        cJSON_Delete(j);
        resp_free(&r);
    }

    CHECK(http_call(port, "GET", "/metrics", NULL, NULL, &r) == 0);
    char ct[128] = "";
    resp_header(&r, "Content-Type", ct, sizeof ct);
    CHECKF(r.status == 200 && strstr(ct, "text/plain") && strstr(ct, "version=0.0.4"),
           "%d content-type '%s'", r.status, ct);
    static const char *const names[] = {
        "infer_calls_total{status=\"OK\"}",
        "infer_calls_total{status=\"INVALID_ARGUMENT\"}",
        "infer_http_requests_total",
        "infer_time_to_first_token_seconds_bucket{le=\"0.005\"}",
        "infer_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
        "infer_inter_token_latency_seconds_count",
        "infer_request_duration_seconds_sum",
        "infer_sequences_waiting",
        "infer_sequences_running",
        "infer_sequences_swapped",
        "infer_kv_blocks_total{tier=\"device\"}",
        "infer_kv_blocks_free{tier=\"device\"}",
        "infer_kv_blocks_used{tier=\"cpu\"}",
        "infer_kv_blocks_cached",
        "infer_prefix_cache_queried_tokens_total",
        "infer_prefix_cache_hit_tokens_total",
        "infer_prefix_cache_evictions_total",
        "infer_preemptions_total{mode=\"swap\"}",
        "infer_preemptions_total{mode=\"recompute\"}",
        "infer_prompt_tokens_total",
        "infer_generated_tokens_total",
        "infer_engine_steps_total",
        "infer_engine_seconds_total{phase=\"forward\"}",
        "infer_engine_seconds_total{phase=\"sample\"}",
        "infer_active_calls",
        "infer_rpc_connections",
        "# TYPE infer_time_to_first_token_seconds histogram",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECKF(r.body && strstr(r.body, names[i]), "/metrics lacks %s", names[i]);
    resp_free(&r);
}

static void test_generate(int port, char *greedy_text, size_t cap) {
    const char *body = "{\"prompt\": \"The capital of France is\", \"max_length\": 8, "
                       "\"temperature\": 0, \"return_tokens\": true}";
    http_resp r;
    CHECK(http_call(port, "POST", "/generate", NULL, body, &r) == 0);
    cJSON *j = resp_json(&r);
    CHECKF(r.status == 200 && j, "%d %s", r.status, r.body);
    const char *text = j ? jstr(j, "text") : NULL;
    const char *fin = j ? jstr(j, "finish_reason") : NULL;
    int completion = j ? (int)jnum(j, "usage.completion_tokens") : -1;
    CHECKF(text && text[0], "text %s", r.body);
    CHECKF(fin && (!strcmp(fin, "length") || !strcmp(fin, "eos")), "finish %s", fin ? fin : "-");
    CHECKF(completion >= 1 && completion <= 8, "completion_tokens %d", completion);
    if (fin && !strcmp(fin, "length")) CHECK(completion == 8);
    CHECK(j && jnum(j, "usage.prompt_tokens") >= 5);
    CHECK(j && jnum(j, "timings.total_ms") > 0 && jnum(j, "timings.ttft_ms") > 0);
    const cJSON *toks = j ? cJSON_GetObjectItem(j, "tokens") : NULL;
    CHECKF(cJSON_IsArray(toks) && cJSON_GetArraySize(toks) == completion, "tokens %d vs %d",
           cJSON_GetArraySize(toks), completion);
    if (text) snprintf(greedy_text, cap, "%s", text);
    cJSON_Delete(j);
    resp_free(&r);

    /* Greedy is repeatable. */
    CHECK(http_call(port, "POST", "/generate", NULL, body, &r) == 0);
    j = resp_json(&r);
    const char *again = j ? jstr(j, "text") : NULL;
    CHECKF(again && text && !strcmp(again, greedy_text), "'%s' vs '%s'", again ? again : "-",
           greedy_text);
    cJSON_Delete(j);
    resp_free(&r);

    /* min_length holds EOS back: exactly that many tokens. */
    CHECK(
        http_call(port, "POST", "/generate", NULL,
                  "{\"prompt\": \"Hi\", \"min_length\": 6, \"max_length\": 6, \"temperature\": 0}",
                  &r) == 0);
    j = resp_json(&r);
    CHECKF(r.status == 200 && j && jnum(j, "usage.completion_tokens") == 6, "%d %s", r.status,
           r.body);
    cJSON_Delete(j);
    resp_free(&r);
}

static void test_keep_alive(int port) {
    /* Two requests on one connection, the first with a body: the body must
     * be consumed exactly, or the second request would be misparsed. */
    int fd = http_connect(port);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *body = "{\"prompt\": \"Hello\", \"max_tokens\": 2, \"temperature\": 0}";
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    http_resp r;
    CHECK(send_all(fd, req, (size_t)n) == 0);
    CHECK(read_response(fd, &r) == 0 && r.status == 200);
    resp_free(&r);
    const char *get = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(send_all(fd, get, strlen(get)) == 0);
    CHECKF(read_response(fd, &r) == 0 && r.status == 200 && strstr(r.body, "ok"), "%d", r.status);
    resp_free(&r);
    close(fd);
}

static void test_expect_continue(int port) {
    int fd = http_connect(port);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *body = "{\"prompt\": \"Hello\", \"max_tokens\": 1}";
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /generate HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     strlen(body));
    http_resp r;
    CHECK(send_all(fd, req, (size_t)n) == 0);
    CHECKF(read_response(fd, &r) == 0 && r.status == 100, "interim status %d", r.status);
    resp_free(&r);
    CHECK(send_all(fd, body, strlen(body)) == 0);
    CHECKF(read_response(fd, &r) == 0 && r.status == 200, "final status %d", r.status);
    resp_free(&r);
    close(fd);
}

static void test_completions(int port, const char *greedy_text) {
    const char *body = "{\"model\": \"SmolLM2-135M-Instruct.Q4_1\", "
                       "\"prompt\": \"The capital of France is\", "
                       "\"max_tokens\": 8, \"temperature\": 0, \"user\": \"u1\", "
                       "\"frequency_penalty\": 0}";
    http_resp r;
    CHECK(http_call(port, "POST", "/v1/completions", NULL, body, &r) == 0);
    cJSON *j = resp_json(&r);
    CHECKF(r.status == 200 && j, "%d %s", r.status, r.body);
    CHECK(j && jstr(j, "object") && !strcmp(jstr(j, "object"), "text_completion"));
    CHECK(j && jstr(j, "id") && !strncmp(jstr(j, "id"), "cmpl-", 5));
    CHECK(j && jnum(j, "created") > 1600000000);
    const char *text = j ? jstr(j, "choices.0.text") : NULL;
    CHECKF(text && !strcmp(text, greedy_text), "completions '%s' vs /generate '%s'",
           text ? text : "-", greedy_text);
    const char *fin = j ? jstr(j, "choices.0.finish_reason") : NULL;
    CHECKF(fin && (!strcmp(fin, "length") || !strcmp(fin, "stop")), "finish %s", fin ? fin : "-");
    CHECK(j && jnum(j, "usage.total_tokens") ==
                   jnum(j, "usage.prompt_tokens") + jnum(j, "usage.completion_tokens"));
    cJSON_Delete(j);
    resp_free(&r);

    /* n = 2, sampled: two choices, indexes 0 and 1. */
    CHECK(http_call(port, "POST", "/v1/completions", NULL,
                    "{\"prompt\": \"Once upon a time\", \"max_tokens\": 4, \"n\": 2, "
                    "\"temperature\": 0.8, \"seed\": 7, \"stop\": [\"\\n\\n\"]}",
                    &r) == 0);
    j = resp_json(&r);
    CHECKF(r.status == 200 && j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")) == 2,
           "%d %s", r.status, r.body);
    CHECK(j && jnum(j, "choices.1.index") == 1);
    cJSON_Delete(j);
    resp_free(&r);

    /* Streamed: the same greedy text, in several events, then [DONE]. */
    sse_result s;
    CHECK(sse_call(port, "/v1/completions",
                   "{\"prompt\": \"The capital of France is\", \"max_tokens\": 8, "
                   "\"temperature\": 0, \"stream\": true, "
                   "\"stream_options\": {\"include_usage\": true}}",
                   &s, 0, NULL) == 0);
    CHECKF(s.status == 200 && strstr(s.ctype, "text/event-stream"), "%d '%s'", s.status, s.ctype);
    CHECK(s.done);
    CHECKF(!strcmp(s.text, greedy_text), "streamed '%s' vs '%s'", s.text, greedy_text);
    CHECKF(s.n_events >= 3, "%d events", s.n_events);
    CHECKF(s.reads_with_events >= 2, "events arrived in %d reads", s.reads_with_events);
    CHECKF(!strcmp(s.finish, "length") || !strcmp(s.finish, "stop"), "finish '%s'", s.finish);
    cJSON *last = s.n_events ? s.events[s.n_events - 1] : NULL;
    CHECKF(last && jnum(last, "usage.completion_tokens") >= 1, "usage chunk missing");
    CHECK(s.n_events && jstr(s.events[0], "object") &&
          !strcmp(jstr(s.events[0], "object"), "text_completion"));
    sse_free(&s);

    /* A longer stream arrives incrementally: the first event well before
     * the last. */
    CHECK(sse_call(port, "/v1/completions",
                   "{\"prompt\": \"Write a story:\", \"max_tokens\": 24, \"ignore_eos\": true, "
                   "\"temperature\": 0, \"stream\": true}",
                   &s, 0, NULL) == 0);
    CHECKF(s.n_events >= 10 && s.reads_with_events >= 3, "%d events in %d reads", s.n_events,
           s.reads_with_events);
    CHECK(s.done && !strcmp(s.finish, "length"));
    sse_free(&s);
}

/* "prompt" as a list (OpenAI): one set of n choices per prompt, index =
 * prompt * n + j; streamed choices interleave, each with its index. */
static void test_completions_prompt_list(int port, const char *greedy_text) {
    http_resp r;
    CHECK(http_call(port, "POST", "/v1/completions", NULL,
                    "{\"prompt\": [\"The capital of France is\", \"Once upon a time\", [1, 2, 3]], "
                    "\"max_tokens\": 8, \"temperature\": 0, \"n\": 2}",
                    &r) == 0);
    cJSON *j = resp_json(&r);
    cJSON *ch = j ? cJSON_GetObjectItem(j, "choices") : NULL;
    CHECKF(r.status == 200 && cJSON_GetArraySize(ch) == 6, "%d %s", r.status, r.body);
    for (int i = 0; ch && i < cJSON_GetArraySize(ch); i++) {
        cJSON *c = cJSON_GetArrayItem(ch, i);
        CHECKF(jnum(c, "index") == i, "choice %d has index %g", i, jnum(c, "index"));
    }
    const char *t0 = j ? jstr(j, "choices.0.text") : NULL,
               *t1 = j ? jstr(j, "choices.1.text") : NULL;
    CHECKF(t0 && t1 && !strcmp(t0, greedy_text) && !strcmp(t1, greedy_text),
           "prompt 0: '%s' '%s' vs '%s'", t0 ? t0 : "-", t1 ? t1 : "-", greedy_text);
    CHECK(j && jnum(j, "usage.completion_tokens") >= 6);
    cJSON_Delete(j);
    resp_free(&r);

    sse_result s;
    CHECK(sse_call(port, "/v1/completions",
                   "{\"prompt\": [\"Once upon a time\", \"The capital of France is\"], "
                   "\"max_tokens\": 8, \"temperature\": 0, \"stream\": true, "
                   "\"stream_options\": {\"include_usage\": true}}",
                   &s, 0, NULL) == 0);
    char text[2][1024] = {"", ""};
    int finished[2] = {0, 0};
    for (int e = 0; e < s.n_events; e++) {
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(s.events[e], "choices"), 0);
        if (!c) continue;
        int i = (int)jnum(c, "index");
        CHECKF(i == 0 || i == 1, "streamed index %d", i);
        if (i != 0 && i != 1) continue;
        const char *t = jstr(c, "text");
        if (t) strncat(text[i], t, sizeof text[i] - strlen(text[i]) - 1);
        finished[i] += jstr(c, "finish_reason") != NULL;
    }
    CHECK(s.status == 200 && s.done && finished[0] == 1 && finished[1] == 1);
    CHECKF(!strcmp(text[1], greedy_text), "streamed prompt 1 '%s' vs '%s'", text[1], greedy_text);
    cJSON *last = s.n_events ? s.events[s.n_events - 1] : NULL;
    CHECKF(last && jnum(last, "usage.completion_tokens") >= 2, "usage chunk missing");
    sse_free(&s);
}

static void test_chat_stream(int port) {
    sse_result s;
    CHECK(sse_call(port, "/v1/chat/completions",
                   "{\"model\": \"SmolLM2-135M-Instruct.Q4_1.gguf\", \"messages\": "
                   "[{\"role\": \"system\", \"content\": "
                   "\"You are brief.\"}, {\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                   "\"text\": \"Say hello.\"}]}], \"max_tokens\": 8, \"temperature\": 0, "
                   "\"stream\": true}",
                   &s, 0, NULL) == 0);
    CHECKF(s.status == 200, "status %d", s.status);
    CHECK(s.done);
    CHECKF(!strcmp(s.first_role, "assistant"), "role '%s'", s.first_role);
    CHECKF(s.text[0], "empty chat text");
    CHECKF(!strcmp(s.finish, "length") || !strcmp(s.finish, "stop"), "finish '%s'", s.finish);
    CHECK(s.n_events && jstr(s.events[0], "object") &&
          !strcmp(jstr(s.events[0], "object"), "chat.completion.chunk"));
    CHECK(s.n_events && jstr(s.events[0], "id") &&
          !strncmp(jstr(s.events[0], "id"), "chatcmpl-", 9));
    char streamed[8192];
    snprintf(streamed, sizeof streamed, "%s", s.text);
    sse_free(&s);

    /* Unary chat: the same text in choices[0].message. */
    http_resp r;
    CHECK(http_call(port, "POST", "/v1/chat/completions", NULL,
                    "{\"messages\": [{\"role\": \"system\", \"content\": \"You are brief.\"}, "
                    "{\"role\": \"user\", \"content\": \"Say hello.\"}], \"max_tokens\": 8, "
                    "\"temperature\": 0}",
                    &r) == 0);
    cJSON *j = resp_json(&r);
    CHECKF(r.status == 200 && j, "%d %s", r.status, r.body);
    const char *content = j ? jstr(j, "choices.0.message.content") : NULL;
    CHECKF(content && !strcmp(content, streamed), "'%s' vs '%s'", content ? content : "-",
           streamed);
    CHECK(j && jstr(j, "choices.0.message.role") &&
          !strcmp(jstr(j, "choices.0.message.role"), "assistant"));
    CHECK(j && !strcmp(jstr(j, "object"), "chat.completion"));
    cJSON_Delete(j);
    resp_free(&r);
}

/* One bad request: expected status and a substring of error.message. */
static void expect_error(int port, const char *method, const char *path, const char *extra,
                         const char *body, int status, const char *type, const char *msg_part) {
    http_resp r;
    int rc = http_call(port, method, path, extra, body, &r);
    cJSON *j = resp_json(&r);
    const char *msg = j ? jstr(j, "error.message") : NULL;
    const char *t = j ? jstr(j, "error.type") : NULL;
    CHECKF(rc == 0 && r.status == status, "%s %s: status %d, want %d (%s)", method, path, r.status,
           status, r.body ? r.body : "");
    CHECKF(msg && strstr(msg, msg_part), "%s %s: message '%s' lacks '%s'", method, path,
           msg ? msg : "(none)", msg_part);
    CHECKF(t && (!type || !strcmp(t, type)), "%s %s: type '%s'", method, path, t ? t : "(none)");
    char ct[128] = "";
    resp_header(&r, "Content-Type", ct, sizeof ct);
    CHECKF(strstr(ct, "application/json"), "%s %s: content-type '%s'", method, path, ct);
    cJSON_Delete(j);
    resp_free(&r);
}

static void test_errors(int port) {
    expect_error(port, "POST", "/generate", NULL, "{\"prompt\": \"x\",", 400,
                 "invalid_request_error", "invalid JSON at line 1, column 16");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"x\"\n  \"max_tokens\": 3}",
                 400, "invalid_request_error", "line 2, column 3");
    expect_error(port, "POST", "/v1/completions", NULL, "[1, 2]", 400, NULL,
                 "must be a JSON object");
    expect_error(port, "POST", "/generate", NULL, "", 400, NULL, "empty");
    expect_error(port, "POST", "/generate", NULL, "{\"prompt\": \"x\", \"temperature\": \"hot\"}",
                 400, "invalid_request_error", "temperature must be a number");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"x\", \"max_tokens\": 2.5}",
                 400, NULL, "max_tokens must be an integer");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"x\", \"stream\": 1}", 400,
                 NULL, "stream must be a boolean");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"x\", \"stop\": 5}", 400,
                 NULL, "stop must be a string or an array");
    expect_error(port, "POST", "/v1/chat/completions", NULL, "{\"messages\": \"hi\"}", 400, NULL,
                 "messages must be an array");
    expect_error(port, "POST", "/v1/chat/completions", NULL,
                 "{\"messages\": [{\"role\": 1, \"content\": \"x\"}]}", 400, NULL,
                 "messages[0].role must be a string");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"x\", \"top_p\": 1.5}", 400,
                 NULL, "top_p must be in (0, 1]");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"x\", \"temperature\": -1}",
                 400, NULL, "temperature must be >= 0");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"\"}", 400, NULL,
                 "prompt is empty");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"max_tokens\": 3}", 400, NULL, "prompt");
    expect_error(port, "POST", "/v1/completions", NULL,
                 "{\"prompt\": \"x\", \"max_tokens\": 100000000}", 400, NULL, "exceeds");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": \"x\", \"echo\": true}", 400,
                 NULL, "echo is not supported");
    expect_error(port, "POST", "/generate", NULL,
                 "{\"prompt\": \"x\", \"max_length\": 3, \"max_tokens\": 4}", 400, NULL,
                 "give one");
    expect_error(port, "GET", "/v2/nothing", NULL, NULL, 404, "not_found_error", "no route");
    expect_error(port, "POST", "/v1/nothing", NULL, "{}", 404, "not_found_error", "no route");
    expect_error(port, "GET", "/v1/completions", NULL, NULL, 405, NULL, "use POST");
    expect_error(port, "DELETE", "/health", NULL, NULL, 405, NULL, "use GET");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": [\"a\", 5]}", 400, NULL,
                 "prompt[1] must be a string or a non-empty array of token ids, got number");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": [\"a\", []]}", 400, NULL,
                 "prompt[1] must be a string or a non-empty array of token ids");
    expect_error(port, "POST", "/v1/completions", NULL, "{\"prompt\": [\"a\", \"\"]}", 400, NULL,
                 "prompt[1]: prompt is empty");
    expect_error(port, "POST", "/v1/completions", NULL,
                 "{\"prompt\": [\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
                 "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}",
                 400, NULL, "at most 16 prompts per request, got 17");
    expect_error(port, "POST", "/generate", NULL, "{\"prompt\": [\"a\", \"b\"]}", 400, NULL,
                 "a list of prompts is for /v1/completions");
    expect_error(port, "GET", "/v1/models/not-a-model", NULL, NULL, 404, "not_found_error",
                 "does not exist");
    /* A body naming another model gets the same 404 as /v1/models/{id}. */
    expect_error(port, "POST", "/v1/completions", NULL,
                 "{\"model\": \"not-a-model\", \"prompt\": \"x\"}", 404, "not_found_error",
                 "model 'not-a-model' does not exist; this server serves "
                 "'SmolLM2-135M-Instruct.Q4_1'");
    expect_error(port, "POST", "/v1/chat/completions", NULL,
                 "{\"model\": \"gpt-4\", \"messages\": [{\"role\": \"user\", \"content\": "
                 "\"x\"}]}",
                 404, "not_found_error", "does not exist");

    /* 413: the Content-Length alone decides; the body is never read. */
    int fd = http_connect(port);
    CHECK(fd >= 0);
    if (fd >= 0) {
        const char *head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           "Content-Length: 10000000\r\n\r\n{\"prompt\": \"";
        http_resp r;
        CHECK(send_all(fd, head, strlen(head)) == 0);
        CHECK(read_response(fd, &r) == 0);
        cJSON *j = resp_json(&r);
        const char *msg = j ? jstr(j, "error.message") : NULL;
        CHECKF(r.status == 413 && msg && strstr(msg, "larger than 65536 bytes"), "%d %s", r.status,
               r.body ? r.body : "");
        CHECKF(!strncmp(r.head, "HTTP/1.1 413 Content Too Large\r\n", 32), "%.40s", r.head);
        cJSON_Delete(j);
        resp_free(&r);
        close(fd);
    }
    /* Just over the configured 65536 bytes, sent in full. */
    size_t big = 70000;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    body[big] = 0;
    expect_error(port, "POST", "/generate", NULL, body, 413, NULL, "larger than");
    free(body);

    /* After all that the server still serves. */
    http_resp r;
    CHECK(http_call(port, "GET", "/health", NULL, NULL, &r) == 0 && r.status == 200);
    resp_free(&r);
}

/* Strings are served whole or refused; numbers out of range and keys given
 * twice are refused; every message names the field. */
static void test_json_rules(int port) {
    expect_error(port, "POST", "/v1/completions", NULL,
                 "{\"prompt\": \"Paris\\u0000 is the capital of France\", \"max_tokens\": 1}", 400,
                 "invalid_request_error", "prompt: strings may not contain NUL (\\u0000)");
    expect_error(port, "POST", "/v1/chat/completions", NULL,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}]}", 400, NULL,
                 "messages[0].content: strings may not contain NUL");
    expect_error(port, "POST", "/v1/chat/completions", NULL,
                 "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                 "\"text\": \"x\\u0000\"}]}]}",
                 400, NULL, "messages[0].content[0].text: strings may not contain NUL");
    expect_error(port, "POST", "/v1/completions", NULL,
                 "{\"prompt\": \"x\", \"stop\": [\"a\", \"b\\u0000c\"]}", 400, NULL,
                 "stop[1]: strings may not contain NUL");
    /* An escaped backslash before "u0000" is text, not a NUL. */
    http_resp r;
    CHECK(http_call(port, "POST", "/generate", NULL,
                    "{\"prompt\": \"a\\\\u0000b\", \"max_tokens\": 1}", &r) == 0);
    CHECKF(r.status == 200, "escaped backslash: %d %s", r.status, r.body ? r.body : "");
    resp_free(&r);
    expect_error(port, "POST", "/generate", NULL, "{\"prompt\": \"x\", \"temperature\": 1e400}",
                 400, NULL, "temperature: 1e400 is out of range for a number");
    expect_error(port, "POST", "/v1/completions", NULL,
                 "{\"prompt\": \"x\", \"max_tokens\": -1e999}", 400, NULL,
                 "max_tokens: -1e999 is out of range");
    expect_error(port, "POST", "/generate", NULL,
                 "{\"prompt\": \"x\", \"temperature\": 0, \"temperature\": 2}", 400, NULL,
                 "duplicate key \"temperature\" in the request object");
    expect_error(port, "POST", "/v1/chat/completions", NULL,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"a\", \"role\": \"system\"}]}",
                 400, NULL, "messages[0]: duplicate key \"role\"");
    /* a request that could never fit the KV pool (256 blocks of 16 here) is
     * refused at admission with the numbers, not admitted to wait forever */
    expect_error(port, "POST", "/v1/completions", NULL,
                 "{\"prompt\": \"x\", \"n\": 64, \"max_tokens\": 8000}", 400, NULL,
                 "n (64) completions of prompt (");
}

/* Send raw bytes on a new connection and read one response; returns the
 * connection (or -1). */
static int raw_call(int port, const char *req, size_t len, http_resp *r) {
    memset(r, 0, sizeof *r);
    int fd = http_connect(port);
    if (fd < 0) return -1;
    if (send_all(fd, req, len) != 0 || read_response(fd, r) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A JSON error body in the documented shape, with the given status. */
static void check_json_error(const http_resp *r, int status, const char *what) {
    cJSON *j = resp_json(r);
    char ct[128] = "";
    resp_header(r, "Content-Type", ct, sizeof ct);
    CHECKF(r->status == status && j && jstr(j, "error.message") && jstr(j, "error.type") &&
               jstr(j, "error.code") && cJSON_IsNull(jpath(j, "error.param")) &&
               strstr(ct, "application/json"),
           "%s: %d (want %d) %s", what, r->status, status, r->body ? r->body : "");
    cJSON_Delete(j);
}

/* After an answer, the connection closes without serving anything else. */
static void check_closed(int fd, const char *what) {
    char c;
    CHECKF(recv_some(fd, &c, 1, IO_TIMEOUT_MS) == 0, "%s: more bytes after the error", what);
}

/* Requests the transport refuses, each with a JSON error. */
static void test_transport_errors(int port) {
    http_resp r;
    /* A request smuggled behind Content-Length + Transfer-Encoding. */
    const char *smuggle = "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                          "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = raw_call(port, smuggle, strlen(smuggle), &r);
    check_json_error(&r, 400, "Content-Length with Transfer-Encoding");
    if (fd >= 0) check_closed(fd, "smuggling");
    resp_free(&r);
    if (fd >= 0) close(fd);

    char *big = malloc(40000);
    int n = snprintf(big, 40000, "GET /health?%09000d HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    fd = raw_call(port, big, (size_t)n, &r);
    check_json_error(&r, 414, "long URL");
    resp_free(&r);
    if (fd >= 0) close(fd);
    n = snprintf(big, 40000, "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: %020000d\r\n\r\n", 0);
    fd = raw_call(port, big, (size_t)n, &r);
    check_json_error(&r, 431, "big header block");
    resp_free(&r);
    if (fd >= 0) close(fd);
    free(big);

    static const struct {
        const char *req;
        int status;
    } bad[] = {
        {"GET /health HTTP/1.1\r\n\r\n", 400},            /* no Host */
        {"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505}, /* version */
        {"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n", 405},
        {"OPTIONS /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fd = raw_call(port, bad[i].req, strlen(bad[i].req), &r);
        check_json_error(&r, bad[i].status, bad[i].req);
        resp_free(&r);
        if (fd >= 0) close(fd);
    }
    const char *opt = "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    fd = raw_call(port, opt, strlen(opt), &r);
    char allow[128] = "";
    resp_header(&r, "Allow", allow, sizeof allow);
    CHECKF(r.status == 204 && strstr(allow, "POST") && strstr(allow, "GET"), "OPTIONS *: %d '%s'",
           r.status, allow);
    resp_free(&r);
    if (fd >= 0) close(fd);
    CHECK(http_call(port, "OPTIONS", "/v1/completions", NULL, NULL, &r) == 0);
    resp_header(&r, "Allow", allow, sizeof allow);
    CHECKF(r.status == 204 && !strcmp(allow, "POST, OPTIONS"), "OPTIONS: %d '%s'", r.status, allow);
    resp_free(&r);
    CHECK(http_call(port, "HEAD", "/health", NULL, NULL, &r) == 0);
    CHECKF(r.status == 200 && r.body_len == 0, "HEAD: %d, %zu body bytes", r.status, r.body_len);
    resp_free(&r);
}

/* A client that stalls in its headers (slowloris) or its body gets 408
 * and the connection closes: server.handshake_timeout_ms (3 s here) and
 * server.frame_timeout_ms (4 s) run concurrently. */
static void test_slow_clients(int port) {
    int head_fd = http_connect(port), body_fd = http_connect(port);
    CHECK(head_fd >= 0 && body_fd >= 0);
    if (head_fd < 0 || body_fd < 0) return;
    const char *head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    const char *body = "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pr";
    double t0 = now_ms();
    CHECK(send_all(head_fd, head, strlen(head)) == 0 && send_all(body_fd, body, strlen(body)) == 0);
    http_resp r;
    CHECK(read_response(head_fd, &r) == 0);
    double took = now_ms() - t0;
    check_json_error(&r, 408, "stalled headers");
    CHECKF(took > 2500 && took < 8000, "headers: 408 after %.0f ms", took);
    check_closed(head_fd, "stalled headers");
    resp_free(&r);
    CHECK(read_response(body_fd, &r) == 0);
    took = now_ms() - t0;
    check_json_error(&r, 408, "stalled body");
    CHECKF(took > 3500 && took < 10000, "body: 408 after %.0f ms", took);
    check_closed(body_fd, "stalled body");
    resp_free(&r);
    close(head_fd);
    close(body_fd);
}

/* A client may send its request, shut down its sending side, and still
 * read the whole stream. */
static void test_half_close_stream(int port) {
    sse_result s;
    CHECK(
        sse_call_ex(port, "/v1/completions",
                    "{\"prompt\": \"Count: one, two,\", \"max_tokens\": 12, \"ignore_eos\": true, "
                    "\"stream\": true, \"stream_options\": {\"include_usage\": true}}",
                    &s, 0, NULL, 1) == 0);
    cJSON *last = s.n_events ? s.events[s.n_events - 1] : NULL;
    CHECKF(s.status == 200 && s.done && last && jnum(last, "usage.completion_tokens") == 12,
           "half-closed stream: status %d, done %d, %d events", s.status, s.done, s.n_events);
    sse_free(&s);
}

typedef struct {
    int port;
    int ok;
    int tokens;
    char why[256];
} stream_job;

static void *stream_worker(void *arg) {
    stream_job *j = arg;
    sse_result s;
    if (sse_call(j->port, "/v1/completions",
                 "{\"prompt\": \"Count: one, two,\", \"max_tokens\": 8, \"ignore_eos\": true, "
                 "\"stream\": true, \"stream_options\": {\"include_usage\": true}}",
                 &s, 0, NULL) == 0) {
        cJSON *last = s.n_events ? s.events[s.n_events - 1] : NULL;
        j->tokens = last ? (int)jnum(last, "usage.completion_tokens") : -1;
        j->ok = s.status == 200 && s.done && !strcmp(s.finish, "length");
        snprintf(j->why, sizeof j->why, "status %d, done %d, finish '%s', %d events, %d tokens",
                 s.status, s.done, s.finish, s.n_events, j->tokens);
    } else {
        snprintf(j->why, sizeof j->why, "request failed (connect, send or response head)");
    }
    sse_free(&s);
    return NULL;
}

/* Streams at once, each on its own connection and server thread. */
static void test_concurrent_streams(int port) {
    enum { N = 16 };
    pthread_t th[N];
    stream_job jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (stream_job){.port = port};
        CHECK(pthread_create(&th[i], NULL, stream_worker, &jobs[i]) == 0);
    }
    int good = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        good += jobs[i].ok && jobs[i].tokens == 8;
        if (!(jobs[i].ok && jobs[i].tokens == 8))
            fprintf(stderr, "stream %d: %s\n", i, jobs[i].why);
    }
    CHECKF(good == N, "%d of %d concurrent streams complete with 8 tokens", good, N);
}

/* Reset fd (what a killed client looks like, rather than a polite FIN) and
 * check that the call's KV blocks are all free within 1 s and that it was
 * counted as CANCELLED. */
static void check_disconnect_frees(int port, int fd, double total, double cancelled0,
                                   const char *what) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    double t0 = now_ms(), freed_after = -1;
    while (now_ms() - t0 < 1000) {
        if (metric(port, "infer_kv_blocks_free{tier=\"device\"}") == total &&
            metric(port, "infer_sequences_running") == 0) {
            freed_after = now_ms() - t0;
            break;
        }
        tu_sleep_ms(20);
    }
    CHECKF(freed_after >= 0, "%s: KV blocks not all free 1 s after the client disconnected", what);
    fprintf(stderr, "%s: blocks free again %.0f ms after the disconnect\n", what, freed_after);
    double cancelled = -1;
    for (int i = 0; i < 50 && cancelled <= cancelled0; i++) {
        cancelled = metric(port, "infer_calls_total{status=\"CANCELLED\"}");
        if (cancelled <= cancelled0) tu_sleep_ms(20);
    }
    CHECKF(cancelled == cancelled0 + 1, "%s: CANCELLED calls %g -> %g", what, cancelled0,
           cancelled);
}

static void test_disconnect_frees_blocks(int port) {
    double total = metric(port, "infer_kv_blocks_total{tier=\"device\"}");
    double cancelled0 = metric(port, "infer_calls_total{status=\"CANCELLED\"}");
    CHECK(total > 0);
    sse_result s;
    int fd = -1;
    CHECK(sse_call(port, "/v1/completions",
                   "{\"prompt\": \"Tell me a very long story about a dragon.\", "
                   "\"max_tokens\": 1500, \"ignore_eos\": true, \"temperature\": 0, "
                   "\"stream\": true}",
                   &s, 2, &fd) == 0);
    CHECK(fd >= 0 && s.n_events >= 2);
    double free_mid = metric(port, "infer_kv_blocks_free{tier=\"device\"}");
    CHECKF(free_mid >= 0 && free_mid < total, "blocks free %g of %g while streaming", free_mid,
           total);
    sse_free(&s);
    if (fd >= 0) check_disconnect_frees(port, fd, total, cancelled0, "stream");
}

/* A non-streaming call whose client goes away before the answer is
 * cancelled too, instead of generating to the end for nobody, whether its
 * connection was to be kept alive or not. */
static void test_unary_disconnect_frees_blocks(int port, int keep_alive) {
    double total = metric(port, "infer_kv_blocks_total{tier=\"device\"}");
    double cancelled0 = metric(port, "infer_calls_total{status=\"CANCELLED\"}");
    CHECK(total > 0);
    const char *body = "{\"prompt\": \"Tell me a very long story about a dragon.\", "
                       "\"max_tokens\": 1500, \"ignore_eos\": true, \"temperature\": 0}";
    char req[512];
    int n =
        snprintf(req, sizeof req,
                 "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n%s\r\n%s",
                 strlen(body), keep_alive ? "" : "Connection: close\r\n", body);
    int fd = http_connect(port);
    CHECK(fd >= 0 && send_all(fd, req, (size_t)n) == 0);
    if (fd < 0) return;
    /* Generating: some blocks are held. */
    int running = 0;
    for (double t0 = now_ms(); now_ms() - t0 < 10000 && !running; tu_sleep_ms(10))
        running = metric(port, "infer_sequences_running") == 1 &&
                  metric(port, "infer_kv_blocks_free{tier=\"device\"}") < total;
    CHECKF(running, "the non-streaming call did not start");
    check_disconnect_frees(port, fd, total, cancelled0,
                           keep_alive ? "unary, keep-alive" : "unary, Connection: close");
}

static void test_metrics_counted(int port) {
    double ok = metric(port, "infer_calls_total{status=\"OK\"}");
    double bad = metric(port, "infer_calls_total{status=\"INVALID_ARGUMENT\"}");
    double ttft = metric(port, "infer_time_to_first_token_seconds_count");
    double itl = metric(port, "infer_inter_token_latency_seconds_count");
    double e2e = metric(port, "infer_request_duration_seconds_count");
    double reqs = metric(port, "infer_http_requests_total");
    CHECKF(ok >= 10, "OK calls %g", ok);
    CHECKF(bad >= 15, "INVALID_ARGUMENT calls %g", bad);
    CHECKF(ttft >= 10 && e2e >= ttft && itl > ttft, "ttft %g itl %g e2e %g", ttft, itl, e2e);
    CHECKF(reqs > ok + bad, "http requests %g", reqs);
    CHECK(metric(port, "infer_active_calls") == 0);
    CHECK(all_blocks_free_within(port, 0, 1000));
}

/* SIGTERM while a stream runs: /health says draining, new calls get 503,
 * the stream still completes, and the server exits 0. */
static void test_drain(server *sv) {
    int port = sv->http_port;
    sse_result s;
    int fd = -1;
    CHECK(sse_call(port, "/generate",
                   "{\"prompt\": \"Tell me a story.\", \"max_tokens\": 40, \"ignore_eos\": true, "
                   "\"temperature\": 0, \"stream\": true}",
                   &s, 1, &fd) == 0);
    sse_free(&s);
    kill(sv->pid, SIGTERM);
    int draining = 0;
    for (double t0 = now_ms(); now_ms() - t0 < 5000 && !draining;) {
        http_resp r;
        if (http_call(port, "GET", "/health", NULL, NULL, &r) == 0 && r.status == 503 &&
            strstr(r.body, "draining"))
            draining = 1;
        resp_free(&r);
        if (!draining) tu_sleep_ms(20);
    }
    CHECK(draining);
    expect_error(port, "POST", "/generate", NULL, "{\"prompt\": \"Hi\"}", 503,
                 "service_unavailable", "shutting down");

    /* The rest of the stream. */
    int events = 0, done = 0, tokens = -1;
    if (fd >= 0) {
        char *buf = malloc(1 << 20);
        size_t len = 0;
        ssize_t k;
        while (!done && (k = recv_some(fd, buf + len, (1 << 20) - 1 - len, IO_TIMEOUT_MS)) > 0) {
            len += (size_t)k;
            buf[len] = 0;
            char *ev;
            while ((ev = strstr(buf, "\n\n")) != NULL) {
                *ev = 0;
                const char *data = sse_data(buf);
                if (data && !strcmp(data, "[DONE]")) done = 1;
                else if (data) {
                    events++;
                    cJSON *j = cJSON_Parse(data);
                    if (j && jstr(j, "finish_reason"))
                        tokens = (int)jnum(j, "usage.completion_tokens");
                    cJSON_Delete(j);
                }
                size_t used = (size_t)(ev + 2 - buf);
                memmove(buf, ev + 2, len - used + 1);
                len -= used;
            }
        }
        free(buf);
        close(fd);
    }
    CHECKF(done && tokens == 40, "drained stream: done %d, %d tokens, %d events", done, tokens,
           events);
    int st = -1;
    for (double t0 = now_ms(); now_ms() - t0 < 60000;) {
        int wst;
        if (waitpid(sv->pid, &wst, WNOHANG) == sv->pid) {
            sv->pid = -1;
            st = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
            break;
        }
        tu_sleep_ms(50);
    }
    server_kill(sv);
    CHECKF(st == 0, "exit status %d after SIGTERM", st);
}

/* A second server: API key, a 5 s request deadline, a queue bound. */
static void test_api_key_and_deadline(const char *bin, const char *model) {
    server sv;
    if (server_start(&sv, bin, model, 1) != 0) {
        CHECKF(0, "second server (with an API key) did not start");
        return;
    }
    int port = sv.http_port;
    http_resp r;
    CHECK(http_call(port, "GET", "/health", NULL, NULL, &r) == 0 && r.status == 200);
    resp_free(&r);
    expect_error(port, "GET", "/v1/models", NULL, NULL, 401, "authentication_error", "API key");
    expect_error(port, "GET", "/v1/models", "Authorization: Bearer wrong\r\n", NULL, 401,
                 "authentication_error", "API key");
    expect_error(port, "POST", "/v1/completions", "Authorization: Bearer s3cret-ke\r\n",
                 "{\"prompt\": \"x\", \"max_tokens\": 1}", 401, NULL, "API key");
    expect_error(port, "GET", "/metrics", NULL, NULL, 401, NULL, "API key");
    CHECK(http_call(port, "GET", "/v1/models", "Authorization: Bearer s3cret-key\r\n", NULL, &r) ==
              0 &&
          r.status == 200);
    resp_free(&r);
    CHECK(http_call(port, "POST", "/generate", "Authorization: Bearer s3cret-key\r\n",
                    "{\"prompt\": \"Hi\", \"max_length\": 2}", &r) == 0 &&
          r.status == 200);
    resp_free(&r);

    /* Busy: one sequence runs (a stream), one request waits (A), the next
     * (B) is refused with 429. */
    sse_result s;
    int sfd = -1;
    CHECK(sse_call(port, "/generate",
                   "{\"prompt\": \"Hi\", \"max_length\": 4000, \"ignore_eos\": true, "
                   "\"stream\": true}",
                   &s, 1, &sfd) == 0);
    sse_free(&s);
    int afd = http_connect(port);
    const char *a_body = "{\"prompt\": \"Hi\", \"max_length\": 2}";
    char a_req[512];
    int n = snprintf(a_req, sizeof a_req,
                     "POST /generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-key\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     strlen(a_body), a_body);
    CHECK(afd >= 0 && send_all(afd, a_req, (size_t)n) == 0);
    for (double t0 = now_ms();
         now_ms() - t0 < 2000 && metric_auth(port, "infer_sequences_waiting") < 1;)
        tu_sleep_ms(10);
    expect_error(port, "POST", "/generate", "Authorization: Bearer s3cret-key\r\n", a_body, 429,
                 "rate_limit_error", "waiting");
    if (sfd >= 0) close(sfd); /* cancels the stream: A runs */
    if (afd >= 0) {
        http_resp r2;
        CHECKF(read_response(afd, &r2) == 0 && r2.status == 200, "waiting request: %d %s",
               r2.status, r2.body ? r2.body : "");
        resp_free(&r2);
        close(afd);
    }

    /* 4000 tokens take far longer than 5 s: the call ends with 504 and the
     * request's blocks are freed. */
    double t0 = now_ms();
    expect_error(port, "POST", "/generate", "Authorization: Bearer s3cret-key\r\n",
                 "{\"prompt\": \"Hi\", \"max_length\": 4000, \"ignore_eos\": true}", 504,
                 "timeout_error", "request_timeout_ms");
    double took = now_ms() - t0;
    CHECKF(took >= 4900 && took < 20000, "deadline answer after %.0f ms", took);
    CHECK(metric_auth(port, "infer_calls_total{status=\"DEADLINE_EXCEEDED\"}") == 1);
    CHECK(all_blocks_free_within(port, 1, 1000));
    int st = server_stop(&sv);
    CHECKF(st == 0, "second server: exit status %d after SIGTERM", st);
    if (st != 0) server_dump_log(&sv);
    unlink(sv.log);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const char *model = tu_model_path();
    if (!model) {
        printf("test_http: model not found, skipping\n");
        return TU_SKIP;
    }
    const char *dir = getenv("ENGINE_BUILD_DIR");
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/infer-server", dir && *dir ? dir : ".");
    if (access(bin, X_OK) != 0) {
        printf("test_http: %s not built, skipping\n", bin);
        return TU_SKIP;
    }
    char model_copy[4096];
    snprintf(model_copy, sizeof model_copy, "%s", model);

    server sv;
    if (server_start(&sv, bin, model_copy, 0) != 0) {
        CHECKF(0, "infer-server did not start");
        return tu_finish("test_http");
    }
    int port = sv.http_port;
    char greedy[4096] = "";

    test_health_models_metrics(port);
    test_generate(port, greedy, sizeof greedy);
    test_keep_alive(port);
    test_expect_continue(port);
    test_completions(port, greedy);
    test_completions_prompt_list(port, greedy);
    test_chat_stream(port);
    test_errors(port);
    test_json_rules(port);
    test_transport_errors(port);
    test_slow_clients(port);
    test_concurrent_streams(port);
    test_disconnect_frees_blocks(port);
    test_unary_disconnect_frees_blocks(port, 0);
    test_unary_disconnect_frees_blocks(port, 1);
    test_half_close_stream(port);
    test_metrics_counted(port);

    test_drain(&sv);
    if (tu_failures) server_dump_log(&sv);
    unlink(sv.log);

    test_api_key_and_deadline(bin, model_copy);
    return tu_finish("test_http");
}
