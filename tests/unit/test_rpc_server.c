/*
 * test_rpc_server.c - infer-server on loopback with the real model, driven
 * with raw frames through rpc/rpc.h:
 *   - a table of bad inputs (malformed, truncated, oversized and garbage
 *     frames, unknown methods, every invalid parameter, NUL bytes in the
 *     API key, a prompt, a stop string, a chat message, a deadline, a
 *     duplicate call id, CANCEL) each gets its status code and a message
 *     naming the problem; afterwards Health is SERVING and Stats shows
 *     every KV block free;
 *   - 1100 idle TCP connections add no server threads, those over
 *     max_connections are refused with RESOURCE_EXHAUSTED; a partial first
 *     frame is cut after the frame timeout, a silent connection after the
 *     first-frame timeout;
 *   - GenerateStream delivers tokens as they are sampled: the first chunk
 *     reaches the client before the server finished the request;
 *   - greedy Generate through the server equals gen_run in this process;
 *   - 200 streaming calls over 4 connections all end OK with every token
 *     (40 under the sanitizers);
 *   - a client process killed (SIGKILL) mid-stream has its sequence
 *     cancelled and its blocks freed within 1 s (Stats);
 *   - with an API key, calls without it or with a wrong one get
 *     UNAUTHENTICATED (Health stays open);
 *   - a full waiting queue refuses a call with RESOURCE_EXHAUSTED;
 *   - SIGTERM drains: new calls get UNAVAILABLE, a stream in flight
 *     completes (or ends UNAVAILABLE after the drain timeout), exit 0.
 * Every wait is bounded. Skips (77) without the model or the server binary.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/backend/backend.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/generate.h"
#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"
#include "server/rpc_server.h"
#include "tests/common/test_util.h"

#define MAX_MESSAGE 65536
#define FRAME_TIMEOUT_MS 500
#define NUM_BLOCKS 256
#define IO_TIMEOUT_MS 20000

static const char *MODEL;
static char SERVER_BIN[4096];
static char SELF_BIN[4096];

typedef struct {
    pid_t pid;
    int port;
    char url[64];
    char log[128];
} server;

static server *LIVE[4];

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void kill_live_servers(void) {
    for (int i = 0; i < 4; i++)
        if (LIVE[i] && LIVE[i]->pid > 0) {
            kill(LIVE[i]->pid, SIGKILL);
            waitpid(LIVE[i]->pid, NULL, 0);
            LIVE[i]->pid = 0;
        }
}

static void dump_log(const server *sv) {
    FILE *f = fopen(sv->log, "r");
    if (!f) return;
    char line[512];
    fprintf(stderr, "---- %s ----\n", sv->log);
    while (fgets(line, sizeof line, f)) fputs(line, stderr);
    fclose(f);
}

/* ---- frames ---- */

static rpc_conn *dial(const server *sv) {
    rpc_conn *c = NULL;
    char err[256];
    rpc_conn_opts o;
    rpc_conn_opts_default(&o);
    o.max_frame = 16u << 20;
    if (rpc_dial(sv->url, NULL, &o, 5000, &c, err, sizeof err) != RPC_OK) return NULL;
    if (rpc_conn_start(c, NULL, NULL, err, sizeof err) != RPC_OK) {
        rpc_conn_release(c);
        return NULL;
    }
    return c;
}

typedef struct {
    int code; /* -1: no status (timeout or closed) */
    char msg[512];
    int n_messages;
    Rpc__Frame *first; /* first MESSAGE (caller frees) */
    double t_first, t_status;
} outcome;

/* Read frames until the STATUS of call id (others are dropped). */
/* Wait for the STATUS of each of n calls (frames of other calls are
 * dropped); o[i] gets the outcome of ids[i]. Statuses may arrive in any
 * order. */
static void wait_statuses(rpc_conn *c, const uint64_t *ids, int n, int timeout_ms, outcome *o) {
    int pending = n;
    for (int i = 0; i < n; i++) {
        memset(&o[i], 0, sizeof o[i]);
        o[i].code = -1;
    }
    double until = now_ms() + timeout_ms;
    while (pending > 0) {
        int left = (int)(until - now_ms());
        char why[300] = "(timed out)";
        Rpc__Frame *f = NULL;
        if (left > 0) {
            char err[256];
            int rv = rpc_conn_recv(c, &f, left, err, sizeof err);
            if (rv == RPC_EPROTO) continue;
            if (rv != RPC_OK) {
                snprintf(why, sizeof why, "(no status: %s: %s)", rpc_strerror(rv), err);
                f = NULL;
            }
        }
        if (!f) {
            for (int i = 0; i < n; i++)
                if (o[i].t_status == 0) snprintf(o[i].msg, sizeof o[i].msg, "%s", why);
            return;
        }
        int i = 0;
        while (i < n && (ids[i] != f->call_id || o[i].t_status != 0)) i++;
        if (i < n && f->type == RPC__FRAME_TYPE__FRAME_MESSAGE) {
            if (o[i].n_messages++ == 0) {
                o[i].first = f;
                o[i].t_first = now_ms();
                continue;
            }
        } else if (i < n && f->type == RPC__FRAME_TYPE__FRAME_STATUS) {
            o[i].code = f->has_status ? (int)f->status : 0;
            snprintf(o[i].msg, sizeof o[i].msg, "%s", f->message ? f->message : "");
            o[i].t_status = now_ms();
            pending--;
        }
        rpc_frame_free(f);
    }
}

static void wait_status(rpc_conn *c, uint64_t id, int timeout_ms, outcome *o) {
    wait_statuses(c, &id, 1, timeout_ms, o);
}

static void outcome_clear(outcome *o) {
    rpc_frame_free(o->first);
    o->first = NULL;
}

/* A unary call; *reply gets the payload frame (may be NULL). */
static int unary(rpc_conn *c, uint64_t id, const char *method, const ProtobufCMessage *req,
                 const char *key, Rpc__Frame **reply, char *msg, size_t msglen) {
    *reply = NULL;
    if (rpc_send_call(c, id, method, 0, key, req, 1000) != RPC_OK) return -1;
    outcome o;
    wait_status(c, id, IO_TIMEOUT_MS, &o);
    if (msg && msglen) {
        size_t n = strlen(o.msg) < msglen - 1 ? strlen(o.msg) : msglen - 1;
        memcpy(msg, o.msg, n);
        msg[n] = 0;
    }
    *reply = o.first;
    return o.code;
}

static int health(const server *sv, char *status, size_t len, const char *key) {
    rpc_conn *c = dial(sv);
    if (!c) return -1;
    Inference__HealthRequest req = INFERENCE__HEALTH_REQUEST__INIT;
    Rpc__Frame *rep;
    int code = unary(c, 1, RPC_METHOD_PREFIX "Health", &req.base, key, &rep, NULL, 0);
    if (code == 0 && rep && status) {
        Inference__HealthResponse *h =
            inference__health_response__unpack(NULL, rep->payload.len, rep->payload.data);
        snprintf(status, len, "%s", h && h->status ? h->status : "?");
        if (h) inference__health_response__free_unpacked(h, NULL);
    }
    rpc_frame_free(rep);
    rpc_conn_release(c);
    return code;
}

static Inference__StatsResponse *stats(rpc_conn *c, const char *key) {
    static uint64_t id = 1000000;
    Inference__StatsRequest req = INFERENCE__STATS_REQUEST__INIT;
    Rpc__Frame *rep;
    int code = unary(c, id++, RPC_METHOD_PREFIX "Stats", &req.base, key, &rep, NULL, 0);
    Inference__StatsResponse *s = NULL;
    if (code == 0 && rep)
        s = inference__stats_response__unpack(NULL, rep->payload.len, rep->payload.data);
    rpc_frame_free(rep);
    return s;
}

/* Poll Stats until no sequence is held and every block is free; returns
 * the ms it took, or -1 after timeout_ms. */
static double wait_all_free(rpc_conn *c, int timeout_ms, const char *key) {
    double t0 = now_ms();
    while (now_ms() - t0 < timeout_ms) {
        Inference__StatsResponse *s = stats(c, key);
        int ok = s && s->waiting == 0 && s->running == 0 && s->swapped == 0 &&
                 s->blocks_free == s->blocks_total;
        if (s) inference__stats_response__free_unpacked(s, NULL);
        if (ok) return now_ms() - t0;
        tu_sleep_ms(10);
    }
    return -1;
}

/* ---- server process ---- */

static int start_server(server *sv, const char *const *extra, int n_extra) {
    for (int attempt = 0; attempt < 8; attempt++) {
        memset(sv, 0, sizeof *sv);
        sv->port = 20000 + rand() % 40000;
        snprintf(sv->url, sizeof sv->url, "tcp://127.0.0.1:%d", sv->port);
        snprintf(sv->log, sizeof sv->log, "/tmp/test_rpc_server.%d.%d.log", (int)getpid(),
                 sv->port);
        char nb[32], frame_to[32];
        snprintf(nb, sizeof nb, "cache_config.num_blocks=%d", NUM_BLOCKS);
        snprintf(frame_to, sizeof frame_to, "%d", FRAME_TIMEOUT_MS);
        char mm[64];
        snprintf(mm, sizeof mm, "server.max_message_bytes=%d", MAX_MESSAGE);
        const char *argv[40] = {
            SERVER_BIN,        "-m",     MODEL,   "--listen", sv->url, "--http", "",
            "--frame-timeout", frame_to, "--set", nb,         "--set", mm};
        int n = 13;
        for (int i = 0; i < n_extra && n < 38; i++) argv[n++] = extra[i];
        argv[n] = NULL;
        pid_t pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            int fd = open(sv->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            execv(SERVER_BIN, (char *const *)argv);
            _exit(127);
        }
        sv->pid = pid;
        for (int i = 0; i < 4; i++)
            if (!LIVE[i]) {
                LIVE[i] = sv;
                break;
            }
        /* Ready when Health answers; gone when it exited (port taken?). */
        double t0 = now_ms();
        int exited = 0;
        while (now_ms() - t0 < 120000) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                exited = 1;
                sv->pid = 0;
                break;
            }
            const char *key = NULL;
            for (int i = 0; i + 1 < n_extra; i++)
                if (strcmp(extra[i], "--api-key") == 0) key = extra[i + 1];
            if (health(sv, NULL, 0, key) == 0) return 0;
            tu_sleep_ms(50);
        }
        if (!exited) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            sv->pid = 0;
            dump_log(sv);
            return -1;
        }
        FILE *f = fopen(sv->log, "r");
        char buf[4096] = "";
        if (f) {
            size_t k = fread(buf, 1, sizeof buf - 1, f);
            buf[k] = 0;
            fclose(f);
        }
        if (!strstr(buf, "in use")) {
            fputs(buf, stderr);
            return -1;
        }
        unlink(sv->log);
    }
    return -1;
}

/* Wait for the process to exit (SIGTERM it first when `term`); returns
 * the exit status, or -1 after timeout_ms (then it is killed). */
static int stop_server(server *sv, int term, int timeout_ms) {
    if (sv->pid <= 0) return -1;
    if (term) kill(sv->pid, SIGTERM);
    double t0 = now_ms();
    while (now_ms() - t0 < timeout_ms) {
        int st;
        if (waitpid(sv->pid, &st, WNOHANG) == sv->pid) {
            sv->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        tu_sleep_ms(10);
    }
    kill(sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
    sv->pid = 0;
    return -1;
}

/* ---- the bad-input table ---- */

typedef enum { K_RAW, K_CALL, K_GEN, K_SPECIAL } case_kind;

typedef struct {
    const char *name;
    case_kind kind;
    /* K_RAW: bytes to send (len < 0: strlen), then_close: close our side after */
    const char *raw;
    int raw_len;
    int then_close;
    /* K_CALL: a frame built by build(); K_GEN: a GenerateRequest set up by gen() */
    void (*build)(Rpc__Frame *f, uint8_t *scratch);
    void (*gen)(Inference__GenerateRequest *r, Inference__SamplingParams *sp);
    const char *method; /* K_GEN: default Generate */
    uint32_t deadline_ms;
    int expect_code; /* -1: no STATUS expected */
    const char *expect_msg;
    int expect_close; /* the server closes the connection after */
} bad_case;

static char *STOPS17[17] = {"a", "b", "c", "d", "e", "f", "g", "h", "i",
                            "j", "k", "l", "m", "n", "o", "p", "q"};
static Inference__ChatMessage BAD_MSG = INFERENCE__CHAT_MESSAGE__INIT;
static Inference__ChatMessage *BAD_MSGS[1] = {&BAD_MSG};
static int32_t IDS_OK[2] = {1, 2};
static int32_t IDS_BAD[2] = {1, 999999};
static char *STOP_BAD_UTF8[1] = {"ok\xff"};
static char *STOP_EMPTY[1] = {""};

static void g_none(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)r;
    (void)sp;
}
static void g_two(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    r->prompt = "hi";
    r->n_prompt_ids = 2;
    r->prompt_ids = IDS_OK;
}
static void g_empty(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    r->prompt = "";
}
static void g_utf8(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    r->prompt = "caf\xc3 au lait";
}
#define PROMPT_OK(r) ((r)->prompt = "Hello")
static void g_temp(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    PROMPT_OK(r);
    sp->has_temperature = 1;
    sp->temperature = -1.0f;
}
static void g_top_p_hi(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    PROMPT_OK(r);
    sp->has_top_p = 1;
    sp->top_p = 1.5f;
}
static void g_top_p_zero(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    PROMPT_OK(r);
    sp->has_top_p = 1;
    sp->top_p = 0.0f;
}
static void g_min_p(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    PROMPT_OK(r);
    sp->has_min_p = 1;
    sp->min_p = 2.0f;
}
static void g_top_k(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    PROMPT_OK(r);
    sp->has_top_k = 1;
    sp->top_k = -3;
}
static void g_rep(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    PROMPT_OK(r);
    sp->has_repetition_penalty = 1;
    sp->repetition_penalty = 0.0f;
}
static void g_n0(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_n = 1;
    r->n = 0;
}
static void g_nbig(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_n = 1;
    r->n = 1000;
}
static void g_stops(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->n_stop = 17;
    r->stop = STOPS17;
}
static void g_stop_utf8(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->n_stop = 1;
    r->stop = STOP_BAD_UTF8;
}
static void g_stop_empty(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->n_stop = 1;
    r->stop = STOP_EMPTY;
}
static void g_top_lp(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_logprobs = r->has_top_logprobs = 1;
    r->logprobs = 1;
    r->top_logprobs = 21;
}
static void g_top_lp_alone(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_top_logprobs = 1;
    r->top_logprobs = 2;
}
static void g_max_neg(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_max_tokens = 1;
    r->max_tokens = -5;
}
static void g_min_neg(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_min_tokens = 1;
    r->min_tokens = -1;
}
static void g_min_gt_max(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_max_tokens = r->has_min_tokens = 1;
    r->max_tokens = 4;
    r->min_tokens = 8;
}
static void g_ids_bad(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    r->n_prompt_ids = 2;
    r->prompt_ids = IDS_BAD;
}
static void g_stop_ids_bad(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->n_stop_ids = 2;
    r->stop_ids = IDS_BAD;
}
static void g_context(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_max_tokens = 1;
    r->max_tokens = 100000;
}
static void g_capacity(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    PROMPT_OK(r);
    r->has_max_tokens = 1;
    r->max_tokens = NUM_BLOCKS * 16; /* within the 8192 context, beyond 256 blocks */
}
static void g_msg_utf8(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    (void)sp;
    BAD_MSG.role = "user";
    BAD_MSG.content = "\xed\xa0\x80"; /* a UTF-16 surrogate */
    r->n_messages = 1;
    r->messages = BAD_MSGS;
}
static void g_long(Inference__GenerateRequest *r, Inference__SamplingParams *sp) {
    PROMPT_OK(r);
    r->has_max_tokens = r->has_ignore_eos = 1;
    r->max_tokens = 2000;
    r->ignore_eos = 1;
    sp->has_temperature = 1;
    sp->temperature = 0.0f;
}

static void f_no_method(Rpc__Frame *f, uint8_t *s) {
    (void)s;
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
}
static void f_unknown_method(Rpc__Frame *f, uint8_t *s) {
    (void)s;
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
    f->method = RPC_METHOD_PREFIX "Frobnicate";
}
static void f_unknown_service(Rpc__Frame *f, uint8_t *s) {
    (void)s;
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
    f->method = "other.Service/Generate";
}
static void f_message(Rpc__Frame *f, uint8_t *s) {
    (void)s;
    f->type = RPC__FRAME_TYPE__FRAME_MESSAGE;
}
static void f_bad_type(Rpc__Frame *f, uint8_t *s) {
    (void)s;
    f->type = (Rpc__FrameType)9;
}
static void f_garbage_payload(Rpc__Frame *f, uint8_t *s) {
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
    f->method = RPC_METHOD_PREFIX "Generate";
    memset(s, 0xff, 16);
    f->has_payload = 1;
    f->payload.data = s;
    f->payload.len = 16;
}
static void f_tokenize_utf8(Rpc__Frame *f, uint8_t *s) {
    Inference__TokenizeRequest t = INFERENCE__TOKENIZE_REQUEST__INIT;
    t.text = "abc\x80";
    size_t n = inference__tokenize_request__pack(&t, s);
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
    f->method = RPC_METHOD_PREFIX "Tokenize";
    f->has_payload = 1;
    f->payload.data = s;
    f->payload.len = n;
}
static void f_detok_bad(Rpc__Frame *f, uint8_t *s) {
    Inference__DetokenizeRequest t = INFERENCE__DETOKENIZE_REQUEST__INIT;
    t.n_ids = 2;
    t.ids = IDS_BAD;
    size_t n = inference__detokenize_request__pack(&t, s);
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
    f->method = RPC_METHOD_PREFIX "Detokenize";
    f->has_payload = 1;
    f->payload.data = s;
    f->payload.len = n;
}
static void f_cancel_no_id(Rpc__Frame *f, uint8_t *s) {
    (void)s;
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
    f->method = RPC_METHOD_PREFIX "Cancel";
}

/* A CALL of method whose payload is the raw bytes p[0..n) (hand-encoded:
 * protobuf-c cannot put a NUL into a string). */
static void raw_payload(Rpc__Frame *f, uint8_t *s, const char *method, const char *p, size_t n) {
    memcpy(s, p, n);
    f->type = RPC__FRAME_TYPE__FRAME_CALL;
    f->method = (char *)method;
    f->has_payload = 1;
    f->payload.data = s;
    f->payload.len = n;
}
#define GENERATE RPC_METHOD_PREFIX "Generate"
static void f_nul_prompt(Rpc__Frame *f, uint8_t *s) {
    raw_payload(f, s, GENERATE, "\x0a\x08hi\0there", 10);
}
static void f_nul_stop(Rpc__Frame *f, uint8_t *s) {
    raw_payload(f, s, GENERATE,
                "\x0a\x02hi\x3a\x04"
                "e\0nd",
                10);
}
static void f_nul_chat(Rpc__Frame *f, uint8_t *s) {
    raw_payload(f, s, GENERATE, "\x1a\x0b\x0a\x04user\x12\x03x\0y", 13);
}
static void f_nul_tokenize(Rpc__Frame *f, uint8_t *s) {
    raw_payload(f, s, RPC_METHOD_PREFIX "Tokenize",
                "\x0a\x03"
                "a\0b",
                5);
}

static const bad_case CASES[] = {
    /* framing */
    {"garbage body", K_RAW, "\x08\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff", 12, 0, NULL, NULL,
     NULL, 0, 3, "malformed frame", 0},
    {"text instead of frames", K_RAW, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", -1, 0, NULL, NULL, NULL,
     0, 8, "exceeds the limit", 1},
    {"oversized frame (64 MiB announced)", K_RAW, "\x00\x00\x00\x04", 4, 0, NULL, NULL, NULL, 0, 8,
     "exceeds the limit of 65536 bytes", 1},
    {"oversized frame (cap + 1)", K_RAW, "\x01\x00\x01\x00", 4, 0, NULL, NULL, NULL, 0, 8,
     "frame of 65537 bytes", 1},
    {"truncated body", K_RAW, "\x64\x00\x00\x00\x08\x01\x10\x01", 8, 0, NULL, NULL, NULL, 0, 3,
     "truncated frame", 1},
    {"truncated length prefix", K_RAW, "\x10\x00", 2, 0, NULL, NULL, NULL, 0, 3, "truncated frame",
     1},
    {"truncated, then the client hangs up", K_RAW, "\x64\x00\x00\x00\x08", 5, 1, NULL, NULL, NULL,
     0, -1, NULL, 1},
    {"empty body", K_RAW, "\x00\x00\x00\x00", 4, 0, NULL, NULL, NULL, 0, 3, "malformed frame", 0},
    {"NUL in the API key", K_RAW,
     "\x28\x00\x00\x00\x08\x00\x10\x01\x1a\x1ainference.Inference/Health\x2a\x06k\0junk", 44, 0,
     NULL, NULL, NULL, 0, 3, "Frame.api_key: strings may not contain NUL", 0},
    {"frame without a type", K_RAW, "\x02\x00\x00\x00\x08\x2a", 6, 0, NULL, NULL, NULL, 0, 3,
     "malformed frame", 0},
    {"CALL without a method", K_CALL, NULL, 0, 0, f_no_method, NULL, NULL, 0, 3, "without a method",
     0},
    {"unknown method", K_CALL, NULL, 0, 0, f_unknown_method, NULL, NULL, 0, 12,
     "unknown method 'inference.Inference/Frobnicate'", 0},
    {"unknown service", K_CALL, NULL, 0, 0, f_unknown_service, NULL, NULL, 0, 12, "unknown method",
     0},
    {"MESSAGE frame from a client", K_CALL, NULL, 0, 0, f_message, NULL, NULL, 0, 3,
     "unexpected MESSAGE frame", 0},
    {"unknown frame type", K_CALL, NULL, 0, 0, f_bad_type, NULL, NULL, 0, 3, "frame", 0},
    {"NUL in the prompt", K_CALL, NULL, 0, 0, f_nul_prompt, NULL, NULL, 0, 3,
     "GenerateRequest.prompt: strings may not contain NUL", 0},
    {"NUL in a stop string", K_CALL, NULL, 0, 0, f_nul_stop, NULL, NULL, 0, 3,
     "GenerateRequest.stop: strings may not contain NUL", 0},
    {"NUL in a chat message", K_CALL, NULL, 0, 0, f_nul_chat, NULL, NULL, 0, 3,
     "GenerateRequest.messages.content: strings may not contain NUL", 0},
    {"NUL in the text to tokenize", K_CALL, NULL, 0, 0, f_nul_tokenize, NULL, NULL, 0, 3,
     "TokenizeRequest.text: strings may not contain NUL", 0},
    {"payload that is not a GenerateRequest", K_CALL, NULL, 0, 0, f_garbage_payload, NULL, NULL, 0,
     3, "is not a valid inference.GenerateRequest", 0},
    /* parameters */
    {"no prompt", K_GEN, NULL, 0, 0, NULL, g_none, NULL, 0, 3,
     "one of prompt, prompt_ids or messages is required", 0},
    {"prompt and prompt_ids", K_GEN, NULL, 0, 0, NULL, g_two, NULL, 0, 3,
     "exactly one of prompt, prompt_ids or messages may be set (got prompt and prompt_ids)", 0},
    {"empty prompt", K_GEN, NULL, 0, 0, NULL, g_empty, NULL, 0, 3, "prompt is empty", 0},
    {"invalid UTF-8 prompt", K_GEN, NULL, 0, 0, NULL, g_utf8, NULL, 0, 3,
     "prompt is not valid UTF-8 (byte 3)", 0},
    {"temperature < 0", K_GEN, NULL, 0, 0, NULL, g_temp, NULL, 0, 3,
     "sampling.temperature must be >= 0, got -1", 0},
    {"top_p > 1", K_GEN, NULL, 0, 0, NULL, g_top_p_hi, NULL, 0, 3,
     "sampling.top_p must be in (0, 1], got 1.5", 0},
    {"top_p = 0", K_GEN, NULL, 0, 0, NULL, g_top_p_zero, "GenerateStream", 0, 3,
     "sampling.top_p must be in (0, 1], got 0", 0},
    {"min_p > 1", K_GEN, NULL, 0, 0, NULL, g_min_p, NULL, 0, 3,
     "sampling.min_p must be in [0, 1], got 2", 0},
    {"top_k < 0", K_GEN, NULL, 0, 0, NULL, g_top_k, NULL, 0, 3,
     "sampling.top_k must be >= 0, got -3", 0},
    {"repetition_penalty = 0", K_GEN, NULL, 0, 0, NULL, g_rep, NULL, 0, 3,
     "sampling.repetition_penalty must be > 0, got 0", 0},
    {"n = 0", K_GEN, NULL, 0, 0, NULL, g_n0, NULL, 0, 3, "n must be in [1, 64]", 0},
    {"n too big", K_GEN, NULL, 0, 0, NULL, g_nbig, NULL, 0, 3, "got 1000", 0},
    {"17 stop strings", K_GEN, NULL, 0, 0, NULL, g_stops, NULL, 0, 3,
     "too many stop strings: 17 (server.max_stop_strings is 16)", 0},
    {"invalid UTF-8 stop string", K_GEN, NULL, 0, 0, NULL, g_stop_utf8, NULL, 0, 3,
     "stop[0] is not valid UTF-8", 0},
    {"empty stop string", K_GEN, NULL, 0, 0, NULL, g_stop_empty, NULL, 0, 3, "stop[0] is empty", 0},
    {"top_logprobs > 20", K_GEN, NULL, 0, 0, NULL, g_top_lp, NULL, 0, 3,
     "top_logprobs must be in [0, 20], got 21", 0},
    {"top_logprobs without logprobs", K_GEN, NULL, 0, 0, NULL, g_top_lp_alone, "GenerateStream", 0,
     3, "top_logprobs (2) needs logprobs set to true", 0},
    {"max_tokens < 0", K_GEN, NULL, 0, 0, NULL, g_max_neg, NULL, 0, 3,
     "max_tokens must be >= 0, got -5", 0},
    {"min_tokens < 0", K_GEN, NULL, 0, 0, NULL, g_min_neg, NULL, 0, 3,
     "min_tokens must be >= 0, got -1", 0},
    {"min_tokens > max_tokens", K_GEN, NULL, 0, 0, NULL, g_min_gt_max, NULL, 0, 3,
     "min_tokens (8) must not exceed max_tokens (4)", 0},
    {"prompt id outside the vocabulary", K_GEN, NULL, 0, 0, NULL, g_ids_bad, NULL, 0, 3,
     "prompt_ids[1] = 999999 is outside the vocabulary", 0},
    {"stop id outside the vocabulary", K_GEN, NULL, 0, 0, NULL, g_stop_ids_bad, NULL, 0, 3,
     "stop_ids[1] = 999999", 0},
    {"prompt + max_tokens beyond the context", K_GEN, NULL, 0, 0, NULL, g_context, NULL, 0, 3,
     "+ max_tokens (100000) = 100001 exceeds the context length of 8192 tokens", 0},
    {"prompt + max_tokens beyond the KV cache", K_GEN, NULL, 0, 0, NULL, g_capacity, NULL, 0, 3,
     "+ max_tokens (4096) = 4097 exceeds the KV cache capacity of 4064 tokens", 0},
    {"invalid UTF-8 in a chat message", K_GEN, NULL, 0, 0, NULL, g_msg_utf8, NULL, 0, 3,
     "messages[0].content is not valid UTF-8", 0},
    {"deadline exceeded", K_GEN, NULL, 0, 0, NULL, g_long, "GenerateStream", 300, 4,
     "deadline of 300 ms exceeded", 0},
    {"deadline exceeded (unary)", K_GEN, NULL, 0, 0, NULL, g_long, NULL, 200, 4,
     "deadline of 200 ms exceeded", 0},
    {"Tokenize with invalid UTF-8", K_CALL, NULL, 0, 0, f_tokenize_utf8, NULL, NULL, 0, 3,
     "text is not valid UTF-8 (byte 3)", 0},
    {"Detokenize with an id outside the vocabulary", K_CALL, NULL, 0, 0, f_detok_bad, NULL, NULL, 0,
     3, "ids[1] = 999999", 0},
    {"Cancel without call_id", K_CALL, NULL, 0, 0, f_cancel_no_id, NULL, NULL, 0, 3,
     "call_id is required", 0},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

static void run_case(const server *sv, const bad_case *bc) {
    rpc_conn *c = dial(sv);
    CHECKF(c != NULL, "%s: cannot connect", bc->name);
    if (!c) return;
    const uint64_t id = 77;
    int rv = RPC_OK;
    if (bc->kind == K_RAW) {
        size_t n = bc->raw_len < 0 ? strlen(bc->raw) : (size_t)bc->raw_len;
        rv = rpc_conn_send_bytes(c, bc->raw, n, 1000);
        if (bc->then_close) {
            rpc_conn_flush(c, 1000);
            rpc_conn_release(c);
            return; /* the server must just survive it (checked later) */
        }
    } else if (bc->kind == K_CALL) {
        Rpc__Frame f = RPC__FRAME__INIT;
        uint8_t scratch[256];
        f.call_id = id;
        bc->build(&f, scratch);
        rv = rpc_conn_send(c, &f, 1000);
    } else {
        Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
        Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
        r.sampling = &sp;
        bc->gen(&r, &sp);
        char method[64];
        snprintf(method, sizeof method, RPC_METHOD_PREFIX "%s",
                 bc->method ? bc->method : "Generate");
        rv = rpc_send_call(c, id, method, bc->deadline_ms, NULL, &r.base, 1000);
    }
    CHECKF(rv == RPC_OK, "%s: send failed: %s", bc->name, rpc_strerror(rv));
    outcome o;
    /* Raw garbage has no call id: any STATUS will do (id 0). */
    uint64_t want_id = bc->kind == K_RAW ? 0 : id;
    if (bc->kind == K_RAW && strncmp(bc->raw, "\x02\x00\x00\x00\x08\x2a", 6) == 0) want_id = 42;
    wait_status(c, want_id, 5000, &o);
    CHECKF(o.code == bc->expect_code, "%s: status %d (%s), expected %d (%s): '%s'", bc->name,
           o.code, rpc_status_name(o.code), bc->expect_code, rpc_status_name(bc->expect_code),
           o.msg);
    if (bc->expect_msg)
        CHECKF(strstr(o.msg, bc->expect_msg) != NULL, "%s: message '%s' lacks '%s'", bc->name,
               o.msg, bc->expect_msg);
    if (bc->kind == K_GEN && bc->expect_code != 4)
        CHECKF(o.n_messages == 0, "%s: %d MESSAGE frames before the error", bc->name, o.n_messages);
    if (bc->expect_close) {
        Rpc__Frame *f = NULL;
        char err[256];
        double t0 = now_ms();
        int r2;
        do {
            r2 = rpc_conn_recv(c, &f, 3000, err, sizeof err);
            rpc_frame_free(f);
            f = NULL;
        } while (r2 == RPC_OK && now_ms() - t0 < 3000);
        CHECKF(r2 == RPC_ECLOSED, "%s: connection not closed by the server (%s)", bc->name,
               rpc_strerror(r2));
    } else {
        /* The connection still works. */
        Inference__HealthRequest hr = INFERENCE__HEALTH_REQUEST__INIT;
        Rpc__Frame *rep;
        int code = unary(c, 5000, RPC_METHOD_PREFIX "Health", &hr.base, NULL, &rep, NULL, 0);
        CHECKF(code == 0, "%s: the connection is unusable afterwards (%d)", bc->name, code);
        rpc_frame_free(rep);
    }
    if (bc->expect_code >= 0)
        printf("  %-45s -> %s: %s\n", bc->name, rpc_status_name(o.code), o.msg);
    outcome_clear(&o);
    rpc_conn_release(c);
}

/* Duplicate call ids and CANCEL frames on one connection. */
static void test_cancel_and_duplicates(const server *sv) {
    rpc_conn *c = dial(sv);
    CHECK(c != NULL);
    if (!c) return;
    Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    r.sampling = &sp;
    g_long(&r, &sp);
    CHECK(rpc_send_call(c, 5, RPC_METHOD_PREFIX "GenerateStream", 0, NULL, &r.base, 1000) ==
          RPC_OK);
    /* wait for the first chunk so the call is surely running */
    Rpc__Frame *f = NULL;
    char err[256];
    int got_chunk = 0;
    double t0 = now_ms();
    while (!got_chunk && now_ms() - t0 < IO_TIMEOUT_MS) {
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        got_chunk = f->call_id == 5 && f->type == RPC__FRAME_TYPE__FRAME_MESSAGE;
        rpc_frame_free(f);
    }
    CHECK(got_chunk);
    /* the same id again */
    CHECK(rpc_send_call(c, 5, RPC_METHOD_PREFIX "Generate", 0, NULL, &r.base, 1000) == RPC_OK);
    int dup_seen = 0, cancelled = 0;
    t0 = now_ms();
    CHECK(rpc_send_cancel(c, 5, 1000) == RPC_OK);
    while (now_ms() - t0 < IO_TIMEOUT_MS && !cancelled) {
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        if (f->type == RPC__FRAME_TYPE__FRAME_STATUS && f->call_id == 5) {
            if (f->status == RPC__STATUS_CODE__INVALID_ARGUMENT && f->message &&
                strstr(f->message, "already in use"))
                dup_seen = 1;
            else if (f->status == RPC__STATUS_CODE__CANCELLED) cancelled = 1;
            else CHECKF(0, "unexpected status %d '%s'", f->status, f->message ? f->message : "");
        }
        rpc_frame_free(f);
    }
    CHECK(dup_seen);
    CHECK(cancelled);
    printf("  %-45s -> INVALID_ARGUMENT, CANCELLED\n", "duplicate call id, CANCEL frame");

    /* the Cancel method, by call id */
    CHECK(rpc_send_call(c, 6, RPC_METHOD_PREFIX "GenerateStream", 0, NULL, &r.base, 1000) ==
          RPC_OK);
    got_chunk = 0;
    t0 = now_ms();
    while (!got_chunk && now_ms() - t0 < IO_TIMEOUT_MS) {
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        got_chunk = f->call_id == 6 && f->type == RPC__FRAME_TYPE__FRAME_MESSAGE;
        rpc_frame_free(f);
    }
    Inference__CancelRequest cr = INFERENCE__CANCEL_REQUEST__INIT;
    cr.has_call_id = 1;
    cr.call_id = 6;
    CHECK(rpc_send_call(c, 7, RPC_METHOD_PREFIX "Cancel", 0, NULL, &cr.base, 1000) == RPC_OK);
    int found = -1, status6 = -1, status7 = -1;
    t0 = now_ms();
    while (now_ms() - t0 < IO_TIMEOUT_MS && (status6 < 0 || status7 < 0)) {
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        if (f->call_id == 7 && f->type == RPC__FRAME_TYPE__FRAME_MESSAGE) {
            Inference__CancelResponse *resp =
                inference__cancel_response__unpack(NULL, f->payload.len, f->payload.data);
            found = resp && resp->found;
            if (resp) inference__cancel_response__free_unpacked(resp, NULL);
        }
        if (f->type == RPC__FRAME_TYPE__FRAME_STATUS && f->call_id == 6) status6 = (int)f->status;
        if (f->type == RPC__FRAME_TYPE__FRAME_STATUS && f->call_id == 7) status7 = (int)f->status;
        rpc_frame_free(f);
    }
    CHECK(found == 1);
    CHECK(status6 == RPC__STATUS_CODE__CANCELLED);
    CHECK(status7 == RPC__STATUS_CODE__OK);
    printf("  %-45s -> found, CANCELLED\n", "Cancel method");
    rpc_conn_release(c);
}

/* ---- streaming and correctness ---- */

static void test_streaming(const server *sv) {
    rpc_conn *c = dial(sv);
    CHECK(c != NULL);
    if (!c) return;
    const int N = 40;
    Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    r.prompt = "Once upon a time, in a land far away,";
    r.sampling = &sp;
    sp.has_temperature = 1;
    sp.temperature = 0.0f;
    r.has_max_tokens = r.has_ignore_eos = r.has_return_token_ids = 1;
    r.max_tokens = N;
    r.ignore_eos = 1;
    r.return_token_ids = 1;
    double t_send = now_ms();
    CHECK(rpc_send_call(c, 1, RPC_METHOD_PREFIX "GenerateStream", 0, NULL, &r.base, 1000) ==
          RPC_OK);
    int n_chunks = 0, n_tokens = 0, final_seen = 0, code = -1;
    double t_first = 0, t_last_token = 0, total_ms = 0;
    char text[4096] = "";
    char err[256];
    double t0 = now_ms();
    while (now_ms() - t0 < 60000) {
        Rpc__Frame *f;
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        if (f->type == RPC__FRAME_TYPE__FRAME_STATUS) {
            code = (int)f->status;
            rpc_frame_free(f);
            break;
        }
        Inference__GenerateChunk *ch =
            inference__generate_chunk__unpack(NULL, f->payload.len, f->payload.data);
        CHECK(ch != NULL);
        if (ch) {
            n_chunks++;
            if (ch->n_token_ids) {
                n_tokens += (int)ch->n_token_ids;
                t_last_token = now_ms();
                if (!t_first) t_first = t_last_token;
            }
            if (ch->text) strncat(text, ch->text, sizeof text - strlen(text) - 1);
            if (ch->finish_reason) {
                final_seen = 1;
                CHECK(strcmp(ch->finish_reason, "length") == 0);
                CHECK(ch->usage && ch->usage->completion_tokens == N);
                CHECK(ch->usage && ch->usage->prompt_tokens > 5);
                CHECK(ch->timings && ch->timings->has_total_ms);
                if (ch->timings) total_ms = ch->timings->total_ms;
            }
            inference__generate_chunk__free_unpacked(ch, NULL);
        }
        rpc_frame_free(f);
    }
    CHECK(code == 0);
    CHECK(final_seen);
    CHECKF(n_tokens == N, "tokens %d", n_tokens);
    CHECKF(n_chunks == N + 1, "chunks %d", n_chunks);
    /* The first token reached us before the server finished the request:
     * t_first - t_send over-estimates the server-side time to first token. */
    CHECKF(t_first - t_send < total_ms, "first chunk after %.1f ms, request took %.1f ms",
           t_first - t_send, total_ms);
    CHECKF(t_last_token - t_first > 0.3 * total_ms,
           "tokens arrived in a burst: %.1f ms between first and last, request %.1f ms",
           t_last_token - t_first, total_ms);
    printf("streaming: %d tokens, first after %.1f ms, last after %.1f ms, request %.1f ms\n",
           n_tokens, t_first - t_send, t_last_token - t_send, total_ms);
    rpc_conn_release(c);
}

static void test_greedy_equals_gen_run(const server *sv) {
    const char *prompt = "The capital of France is";
    const int N = 24;
    /* through the server */
    rpc_conn *c = dial(sv);
    CHECK(c != NULL);
    if (!c) return;
    Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    r.prompt = (char *)prompt;
    r.sampling = &sp;
    sp.has_temperature = 1;
    sp.temperature = 0.0f;
    r.has_max_tokens = r.has_return_token_ids = 1;
    r.max_tokens = N;
    r.return_token_ids = 1;
    r.has_logprobs = r.has_top_logprobs = 1;
    r.logprobs = 1;
    r.top_logprobs = 3;
    Rpc__Frame *rep;
    char msg[256];
    int code = unary(c, 1, RPC_METHOD_PREFIX "Generate", &r.base, NULL, &rep, msg, sizeof msg);
    CHECKF(code == 0, "Generate: %d %s", code, msg);
    Inference__GenerateResponse *resp =
        rep ? inference__generate_response__unpack(NULL, rep->payload.len, rep->payload.data)
            : NULL;
    rpc_frame_free(rep);
    rpc_conn_release(c);
    CHECK(resp && resp->n_completions == 1);
    if (!resp || resp->n_completions != 1) {
        if (resp) inference__generate_response__free_unpacked(resp, NULL);
        return;
    }

    /* in this process */
    char err[512];
    llm_model *m = NULL;
    llm_tokenizer *tok = NULL;
    backend *be = NULL;
    int32_t *ids = NULL;
    gen_result res = {0};
    CHECK(llm_model_load(MODEL, &m, NULL, NULL, err, sizeof err) == 0);
    CHECK(m && tok_load(llm_model_gguf(m), &tok, err, sizeof err) == 0);
    be = backend_cpu_create(2, err, sizeof err);
    CHECK(be != NULL);
    if (m && tok && be) {
        int n = tok_encode(tok, prompt, strlen(prompt), 1, 1, &ids);
        gen_request gr = {.prompt = ids, .n_prompt = n, .max_tokens = N};
        sampler_params_default(&gr.sampling);
        gr.sampling.temperature = 0.0f;
        gen_options opt;
        gen_options_default(&opt);
        gen_stats st;
        CHECK(gen_run(m, be, tok, &gr, 1, &opt, &res, &st, err, sizeof err) == 0);
        const Inference__Completion *cp = resp->completions[0];
        CHECKF(res.text && cp->text && strcmp(res.text, cp->text) == 0,
               "server '%s' vs gen_run '%s'", cp->text ? cp->text : "", res.text ? res.text : "");
        CHECKF((int)cp->n_token_ids == res.n_tokens, "%zu vs %d tokens", cp->n_token_ids,
               res.n_tokens);
        for (int i = 0; i < res.n_tokens && i < (int)cp->n_token_ids; i++)
            CHECKF(cp->token_ids[i] == res.tokens[i], "token %d: %d vs %d", i, cp->token_ids[i],
                   res.tokens[i]);
        /* greedy: each token is its own top-1 alternative, with its logprob */
        CHECKF(cp->n_logprobs == cp->n_token_ids, "%zu logprobs", cp->n_logprobs);
        for (size_t i = 0; i < cp->n_logprobs && i < cp->n_token_ids; i++) {
            const Inference__TokenLogprob *lp = cp->logprobs[i];
            CHECK(lp->token_id == cp->token_ids[i] && lp->n_top_logprobs == 3);
            CHECK(lp->n_top_logprobs > 0 && lp->top_logprobs[0]->token_id == lp->token_id &&
                  lp->top_logprobs[0]->logprob == lp->logprob && lp->logprob <= 0);
        }
        CHECK(strcmp(cp->finish_reason, gen_finish_name(res.finish)) == 0);
        CHECK(resp->usage && resp->usage->prompt_tokens == n &&
              resp->usage->completion_tokens == res.n_tokens);
        printf("greedy: server == gen_run: '%s'\n", res.text ? res.text : "");
    }
    gen_result_free(&res);
    free(ids);
    if (be) backend_free(be);
    if (tok) tok_free(tok);
    if (m) llm_model_free(m);
    inference__generate_response__free_unpacked(resp, NULL);
}

/* 200 streaming calls over 4 connections, all in flight at once. */
#if defined(__SANITIZE_ADDRESS__)
#define STREAMS_PER_CONN 10 /* same checks, a fifth of the work */
#else
#define STREAMS_PER_CONN 50
#endif

static void test_concurrent_streams(const server *sv) {
    enum { CONNS = 4, PER_CONN = STREAMS_PER_CONN, TOKENS = 8 };
    rpc_conn *c[CONNS];
    for (int i = 0; i < CONNS; i++) {
        c[i] = dial(sv);
        CHECK(c[i] != NULL);
        if (!c[i]) {
            while (i-- > 0) rpc_conn_release(c[i]);
            return;
        }
    }
    Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    r.prompt = "Count with me: one, two,";
    r.sampling = &sp;
    r.has_max_tokens = r.has_ignore_eos = 1;
    r.max_tokens = TOKENS;
    r.ignore_eos = 1;
    double t0 = now_ms();
    for (int k = 0; k < PER_CONN; k++)
        for (int i = 0; i < CONNS; i++) {
            sp.has_seed = 1;
            sp.seed = (uint64_t)(k * CONNS + i);
            CHECK(rpc_send_call(c[i], (uint64_t)k + 1, RPC_METHOD_PREFIX "GenerateStream", 0, NULL,
                                &r.base, 5000) == RPC_OK);
        }
    int ok = 0, right_count = 0, chunks[CONNS][PER_CONN + 1];
    memset(chunks, 0, sizeof chunks);
    for (int i = 0; i < CONNS; i++) {
        int done = 0;
        while (done < PER_CONN && now_ms() - t0 < 120000) {
            Rpc__Frame *f;
            char err[256];
            int rv = rpc_conn_recv(c[i], &f, 1000, err, sizeof err);
            if (rv == RPC_ETIMEDOUT) continue;
            if (rv != RPC_OK) break;
            int k = f->call_id >= 1 && f->call_id <= PER_CONN ? (int)f->call_id : 0;
            if (f->type == RPC__FRAME_TYPE__FRAME_STATUS) {
                done++;
                if (f->status == RPC__STATUS_CODE__OK) ok++;
                else fprintf(stderr, "stream %d/%d: %d %s\n", i, k, f->status, f->message);
            } else {
                Inference__GenerateChunk *ch =
                    inference__generate_chunk__unpack(NULL, f->payload.len, f->payload.data);
                if (ch && !ch->finish_reason) chunks[i][k]++;
                if (ch && ch->finish_reason && ch->usage &&
                    ch->usage->completion_tokens == TOKENS && chunks[i][k] == TOKENS)
                    right_count++;
                if (ch) inference__generate_chunk__free_unpacked(ch, NULL);
            }
            rpc_frame_free(f);
        }
    }
    CHECKF(ok == CONNS * PER_CONN, "%d of %d streams ended OK", ok, CONNS * PER_CONN);
    CHECKF(right_count == CONNS * PER_CONN, "%d streams had %d token chunks and usage", right_count,
           TOKENS);
    printf("concurrency: %d streams over %d connections, %d OK with %d tokens each, %.0f ms\n",
           CONNS * PER_CONN, CONNS, right_count, TOKENS, now_ms() - t0);
    for (int i = 0; i < CONNS; i++) rpc_conn_release(c[i]);
}

/* Child process (exec'd, so it has its own nng): start a long stream, say
 * "1" on stdout after the first chunk, then wait to be killed. */
static int stream_child(const char *url) {
    rpc_conn *c = NULL;
    char err[256];
    if (rpc_dial(url, NULL, NULL, 5000, &c, err, sizeof err) != RPC_OK) return 1;
    if (rpc_conn_start(c, NULL, NULL, err, sizeof err) != RPC_OK) return 1;
    Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    r.sampling = &sp;
    g_long(&r, &sp);
    for (uint64_t id = 1; id <= 3; id++)
        if (rpc_send_call(c, id, RPC_METHOD_PREFIX "GenerateStream", 0, NULL, &r.base, 1000) !=
            RPC_OK)
            return 1;
    for (;;) {
        Rpc__Frame *f;
        if (rpc_conn_recv(c, &f, 30000, err, sizeof err) != RPC_OK) return 1;
        int chunk = f->type == RPC__FRAME_TYPE__FRAME_MESSAGE;
        rpc_frame_free(f);
        if (chunk) break;
    }
    if (write(1, "1", 1) != 1) return 1;
    for (;;) pause();
}

static void test_killed_client(const server *sv) {
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl(SELF_BIN, SELF_BIN, "--stream-child", sv->url, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char b = 0;
    ssize_t n = -1;
    /* bounded wait for the child's signal */
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(p[0], &rs);
    struct timeval tv = {60, 0};
    if (select(p[0] + 1, &rs, NULL, NULL, &tv) == 1) n = read(p[0], &b, 1);
    close(p[0]);
    CHECKF(n == 1 && b == '1', "the child did not start streaming");
    rpc_conn *c = dial(sv);
    CHECK(c != NULL);
    Inference__StatsResponse *s = c ? stats(c, NULL) : NULL;
    CHECKF(s && s->running + s->waiting == 3, "running %d waiting %d", s ? s->running : -1,
           s ? s->waiting : -1);
    CHECK(s && s->blocks_free < s->blocks_total);
    if (s) inference__stats_response__free_unpacked(s, NULL);
    double t_kill = now_ms();
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    double took = c ? wait_all_free(c, 3000, NULL) : -1;
    double since_kill = now_ms() - t_kill;
    CHECKF(took >= 0 && since_kill < 1000, "blocks free after %.0f ms (poll %.0f)", since_kill,
           took);
    printf("killed client: 3 sequences cancelled, every block free %.0f ms after SIGKILL\n",
           since_kill);
    rpc_conn_release(c);
}

/* ---- API key and drain (second server) ---- */

static void test_api_key_and_drain_timeout(void) {
    server sv2;
    /* One sequence at a time and one waiting: the third call is refused. */
    const char *extra[] = {"--api-key", "s3cret-key",
                           "--set",     "server.drain_timeout_ms=400",
                           "--set",     "batcher_config.batch_max_seqs=1",
                           "--set",     "batcher_config.max_waiting=1"};
    if (start_server(&sv2, extra, 8) != 0) {
        CHECKF(0, "cannot start the server with an API key");
        return;
    }
    rpc_conn *c = dial(&sv2);
    CHECK(c != NULL);
    if (!c) return;
    Inference__StatsRequest sr = INFERENCE__STATS_REQUEST__INIT;
    Rpc__Frame *rep;
    char msg[256];
    int code = unary(c, 1, RPC_METHOD_PREFIX "Stats", &sr.base, NULL, &rep, msg, sizeof msg);
    CHECKF(code == 16 && strstr(msg, "missing API key"), "no key: %d '%s'", code, msg);
    CHECK(rep == NULL);
    rpc_frame_free(rep);
    code = unary(c, 2, RPC_METHOD_PREFIX "Stats", &sr.base, "wrong", &rep, msg, sizeof msg);
    CHECKF(code == 16 && strstr(msg, "invalid API key"), "wrong key: %d '%s'", code, msg);
    rpc_frame_free(rep);
    Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
    r.prompt = "Hello";
    code = unary(c, 3, RPC_METHOD_PREFIX "Generate", &r.base, "s3cret-key-", &rep, msg, sizeof msg);
    CHECKF(code == 16, "longer key: %d '%s'", code, msg);
    rpc_frame_free(rep);
    code = unary(c, 4, RPC_METHOD_PREFIX "Frobnicate", &r.base, NULL, &rep, msg, sizeof msg);
    CHECKF(code == 16, "unknown method without a key: %d '%s'", code, msg);
    rpc_frame_free(rep);
    code = unary(c, 5, RPC_METHOD_PREFIX "Stats", &sr.base, "s3cret-key", &rep, msg, sizeof msg);
    CHECKF(code == 0, "right key: %d '%s'", code, msg);
    rpc_frame_free(rep);
    Inference__HealthRequest hr = INFERENCE__HEALTH_REQUEST__INIT;
    code = unary(c, 6, RPC_METHOD_PREFIX "Health", &hr.base, NULL, &rep, msg, sizeof msg);
    CHECKF(code == 0, "Health without a key: %d '%s'", code, msg);
    rpc_frame_free(rep);
    printf("  %-45s -> UNAUTHENTICATED\n", "missing / wrong API key");

    /* A long stream runs, a second waits, a third is one too many. */
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    r.sampling = &sp;
    g_long(&r, &sp);
    CHECK(rpc_send_call(c, 10, RPC_METHOD_PREFIX "GenerateStream", 0, "s3cret-key", &r.base,
                        1000) == RPC_OK);
    outcome o;
    memset(&o, 0, sizeof o);
    Rpc__Frame *f;
    char err[256];
    double t0 = now_ms();
    while (now_ms() - t0 < IO_TIMEOUT_MS) {
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        int chunk = f->type == RPC__FRAME_TYPE__FRAME_MESSAGE;
        rpc_frame_free(f);
        if (chunk) break;
    }
    CHECK(rpc_send_call(c, 11, RPC_METHOD_PREFIX "GenerateStream", 0, "s3cret-key", &r.base,
                        1000) == RPC_OK);
    tu_sleep_ms(50);
    CHECK(rpc_send_call(c, 12, RPC_METHOD_PREFIX "Generate", 0, "s3cret-key", &r.base, 1000) ==
          RPC_OK);
    wait_status(c, 12, 10000, &o);
    CHECKF(o.code == 8 && strstr(o.msg, "too many requests waiting (1)"), "overload: %d '%s'",
           o.code, o.msg);
    printf("  %-45s -> %s: %s\n", "waiting queue full", rpc_status_name(o.code), o.msg);
    outcome_clear(&o);

    /* SIGTERM: both are cut after the drain timeout. */
    kill(sv2.pid, SIGTERM);
    const uint64_t cut[2] = {10, 11};
    outcome oc[2];
    wait_statuses(c, cut, 2, 10000, oc);
    CHECKF(oc[0].code == 14 && strstr(oc[0].msg, "drain timeout"), "after drain timeout: %d '%s'",
           oc[0].code, oc[0].msg);
    CHECKF(oc[1].code == 14, "the waiting call after the drain timeout: %d '%s'", oc[1].code,
           oc[1].msg);
    outcome_clear(&oc[0]);
    outcome_clear(&oc[1]);
    int st = stop_server(&sv2, 0, 15000);
    CHECKF(st == 0, "exit status %d after the drain timeout", st);
    rpc_conn_release(c);
    if (st != 0) dump_log(&sv2);
    unlink(sv2.log);
    printf("drain timeout: stream ended UNAVAILABLE, exit %d\n", st);
}

/* SIGTERM on the main server: a stream in flight completes, a new call
 * gets UNAVAILABLE, the process exits 0. */
static void test_drain(server *sv) {
    rpc_conn *c = dial(sv);
    CHECK(c != NULL);
    if (!c) return;
    Inference__GenerateRequest r = INFERENCE__GENERATE_REQUEST__INIT;
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    r.prompt = "Write a list of fruits:";
    r.sampling = &sp;
    sp.has_temperature = 1;
    sp.temperature = 0.0f;
    r.has_max_tokens = r.has_ignore_eos = 1;
    r.max_tokens = 32;
    r.ignore_eos = 1;
    CHECK(rpc_send_call(c, 1, RPC_METHOD_PREFIX "GenerateStream", 0, NULL, &r.base, 1000) ==
          RPC_OK);
    Rpc__Frame *f;
    char err[256];
    double t0 = now_ms();
    int chunks = 0;
    while (now_ms() - t0 < IO_TIMEOUT_MS && chunks == 0) {
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        chunks += f->type == RPC__FRAME_TYPE__FRAME_MESSAGE;
        rpc_frame_free(f);
    }
    kill(sv->pid, SIGTERM);
    tu_sleep_ms(50);
    /* a new call on the same connection */
    Inference__GenerateRequest r2 = INFERENCE__GENERATE_REQUEST__INIT;
    r2.prompt = "Hello";
    CHECK(rpc_send_call(c, 2, RPC_METHOD_PREFIX "Generate", 0, NULL, &r2.base, 1000) == RPC_OK);
    Inference__HealthRequest hr = INFERENCE__HEALTH_REQUEST__INIT;
    CHECK(rpc_send_call(c, 3, RPC_METHOD_PREFIX "Health", 0, NULL, &hr.base, 1000) == RPC_OK);
    int code1 = -1, code2 = -1, code3 = -1, tokens = 0;
    char health[32] = "";
    t0 = now_ms();
    while (now_ms() - t0 < IO_TIMEOUT_MS && (code1 < 0 || code2 < 0 || code3 < 0)) {
        if (rpc_conn_recv(c, &f, 1000, err, sizeof err) != RPC_OK) continue;
        if (f->type == RPC__FRAME_TYPE__FRAME_STATUS) {
            if (f->call_id == 1) code1 = (int)f->status;
            if (f->call_id == 2) {
                code2 = (int)f->status;
                CHECK(f->message && strstr(f->message, "shutting down"));
            }
            if (f->call_id == 3) code3 = (int)f->status;
        } else if (f->call_id == 1) {
            Inference__GenerateChunk *ch =
                inference__generate_chunk__unpack(NULL, f->payload.len, f->payload.data);
            if (ch && ch->usage) tokens = ch->usage->completion_tokens;
            if (ch) inference__generate_chunk__free_unpacked(ch, NULL);
        } else if (f->call_id == 3) {
            Inference__HealthResponse *h =
                inference__health_response__unpack(NULL, f->payload.len, f->payload.data);
            if (h && h->status) snprintf(health, sizeof health, "%s", h->status);
            if (h) inference__health_response__free_unpacked(h, NULL);
        }
        rpc_frame_free(f);
    }
    CHECKF(code1 == 0 && tokens == 32, "the stream in flight: status %d, %d tokens", code1, tokens);
    CHECKF(code2 == 14, "new call while draining: %d", code2);
    CHECKF(code3 == 0 && strcmp(health, "DRAINING") == 0, "health while draining: %d %s", code3,
           health);
    rpc_conn_release(c);
    int st = stop_server(sv, 0, 20000);
    CHECKF(st == 0, "exit status %d", st);
    printf("drain: stream finished (%d tokens), new call UNAVAILABLE, exit %d\n", tokens, st);
}

/* ---- connection limits ---- */

/* Threads of process pid (/proc), or -1. */
static int process_threads(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

static int tcp_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The first frame the server sent on fd before closing it, within
 * timeout_ms: 1 closed (*code / msg: its STATUS, -1 when none), 0 still
 * open. */
static int read_until_closed(int fd, int timeout_ms, int *code, char *msg, size_t msglen) {
    uint8_t buf[512];
    const size_t cap = sizeof buf;
    size_t got = 0;
    int closed = 0;
    *code = -1;
    msg[0] = 0;
    double until = now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(until - now_ms());
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left > 0 ? left : 0) <= 0) break;
        ssize_t n = read(fd, buf + got, cap - got);
        if (n <= 0) {
            closed = 1;
            break;
        }
        got += (size_t)n;
        if (got == cap) break;
    }
    Rpc__Frame *f = NULL;
    size_t used;
    char err[128];
    if (rpc_frame_parse(buf, got, 0, &f, &used, err, sizeof err) == RPC_OK) {
        *code = f->has_status ? (int)f->status : -1;
        snprintf(msg, msglen, "%s", f->message ? f->message : "");
    }
    rpc_frame_free(f);
    return closed;
}

/* Idle sockets cost the server no threads; those over max_connections
 * are refused; a silent one is closed after the first-frame timeout. */
static void test_connection_limits(const server *sv) {
    enum { N = RPC_SERVER_DEFAULT_MAX_CONNECTIONS + 76 };
    static int fds[N];
    int silent = tcp_connect(sv->port), partial = tcp_connect(sv->port);
    double t_open = now_ms();
    CHECK(silent >= 0 && partial >= 0);
    if (partial >= 0) CHECK(write(partial, "\x10\x00", 2) == 2);
    tu_sleep_ms(1000); /* the partial frame's cut is over (it ran on threads) */
    int before = process_threads(sv->pid);
    int opened = 0;
    for (int i = 0; i < N; i++) opened += (fds[i] = tcp_connect(sv->port)) >= 0;
    CHECKF(opened == N, "%d of %d connections opened", opened, N);
    tu_sleep_ms(300);
    int during = process_threads(sv->pid);
    int refused = 0, refused_ok = 0, code;
    char msg[256];
    for (int i = 0; i < N; i++) {
        if (fds[i] < 0 || !read_until_closed(fds[i], 0, &code, msg, sizeof msg)) continue;
        refused++;
        refused_ok += code == 8 && strstr(msg, "too many connections (1024)") != NULL;
    }
    /* The silent connection holds one of the places; each refused one was
     * told why. */
    CHECKF(refused >= N - RPC_SERVER_DEFAULT_MAX_CONNECTIONS + 1 &&
               refused <= N - RPC_SERVER_DEFAULT_MAX_CONNECTIONS + 4,
           "%d of %d connections refused", refused, N);
    CHECKF(refused_ok == refused, "%d of %d refusals carried the STATUS", refused_ok, refused);
    CHECKF(during - before <= 2, "%d idle connections added %d threads to the server", N - refused,
           during - before);
    printf("connection cap: %d idle connections added %d server threads; %d over the cap "
           "refused with RESOURCE_EXHAUSTED\n",
           N - refused, during - before, refused);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0) close(fds[i]);
    /* the partial frame was cut after --frame-timeout, the silent socket
     * after the first-frame timeout */
    if (partial >= 0) {
        CHECK(read_until_closed(partial, 3000, &code, msg, sizeof msg) == 1);
        CHECKF(code == 3 && strstr(msg, "truncated frame") != NULL, "partial first frame: %d '%s'",
               code, msg);
        close(partial);
    }
    if (silent >= 0) {
        int closed = read_until_closed(silent, 15000, &code, msg, sizeof msg);
        double took = now_ms() - t_open;
        CHECKF(closed && took >= RPC_DEFAULT_FIRST_FRAME_TIMEOUT_MS - 500 &&
                   took < RPC_DEFAULT_FIRST_FRAME_TIMEOUT_MS + 3000,
               "silent connection: closed %d after %.0f ms", closed, took);
        printf("silent connection closed after %.0f ms\n", took);
        close(silent);
    }
    /* and the server takes connections again */
    char hs[32] = "";
    CHECK(health(sv, hs, sizeof hs, NULL) == 0 && strcmp(hs, "SERVING") == 0);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--stream-child") == 0) return stream_child(argv[2]);
    MODEL = tu_model_path();
    if (!MODEL) {
        printf("test_rpc_server: model missing, skipped\n");
        return TU_SKIP;
    }
    static char model_copy[4096];
    snprintf(model_copy, sizeof model_copy, "%s", MODEL);
    MODEL = model_copy;
    const char *bd = getenv("ENGINE_BUILD_DIR");
    snprintf(SERVER_BIN, sizeof SERVER_BIN, "%s/infer-server", bd && *bd ? bd : ".");
    if (access(SERVER_BIN, X_OK) != 0) {
        printf("test_rpc_server: %s missing, skipped\n", SERVER_BIN);
        return TU_SKIP;
    }
    ssize_t k = readlink("/proc/self/exe", SELF_BIN, sizeof SELF_BIN - 1);
    if (k <= 0) return 1;
    SELF_BIN[k] = 0;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    srand((unsigned)(time(NULL) ^ getpid()));
    alarm(600); /* a hard bound on the whole test */
    atexit(kill_live_servers);

    server sv;
    if (start_server(&sv, NULL, 0) != 0) {
        fprintf(stderr, "cannot start infer-server\n");
        return 1;
    }
    printf("server at %s (pid %d)\n", sv.url, (int)sv.pid);

    printf("bad inputs (%d cases + duplicate id, CANCEL, Cancel, API key):\n", N_CASES);
    for (int i = 0; i < N_CASES; i++) run_case(&sv, &CASES[i]);
    test_cancel_and_duplicates(&sv);
    char hs[32] = "";
    CHECK(health(&sv, hs, sizeof hs, NULL) == 0 && strcmp(hs, "SERVING") == 0);
    rpc_conn *c = dial(&sv);
    double t = c ? wait_all_free(c, 5000, NULL) : -1;
    CHECKF(t >= 0, "KV blocks still in use after the bad inputs");
    Inference__StatsResponse *s = c ? stats(c, NULL) : NULL;
    CHECK(s && s->blocks_total == NUM_BLOCKS && s->blocks_free == NUM_BLOCKS);
    CHECK(s && s->active_calls == 0);
    if (s) inference__stats_response__free_unpacked(s, NULL);
    rpc_conn_release(c);
    printf("after the bad inputs: Health SERVING, %d of %d blocks free\n", NUM_BLOCKS, NUM_BLOCKS);
    test_connection_limits(&sv);

    test_streaming(&sv);
    test_greedy_equals_gen_run(&sv);
    test_concurrent_streams(&sv);
    test_killed_client(&sv);
    test_api_key_and_drain_timeout();
    test_drain(&sv);
    if (tu_failures) dump_log(&sv);
    unlink(sv.log);
    return tu_finish("test_rpc_server");
}
