/*
 * lt_http.c - HTTP/1.1 client of loadtest over POSIX sockets: one
 * connection per request, response bodies by Content-Length, chunked
 * transfer encoding or read-to-close, Server-Sent Events of OpenAI-style
 * completions (our infer-server, llama-server, vLLM, TGI), and a Prometheus
 * text scraper for the server gauges.
 *
 * Every wait is a poll() of at most 50 ms so a cancel flag and the
 * deadline are noticed promptly; nothing here blocks without bound.
 */
#include "loadtest/lt_http.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- URLs --------------------------------------------------------------- */

static int host_port(const char *s, lt_url *u, const char *def_port, char *err, size_t errlen) {
    const char *end = s + strcspn(s, "/");
    const char *hp = s, *colon;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(end - hp));
        if (!rb) goto bad;
        if ((size_t)(rb - hp - 1) >= sizeof u->host) goto bad;
        memcpy(u->host, hp + 1, (size_t)(rb - hp - 1));
        u->host[rb - hp - 1] = 0;
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
        if (!colon && rb + 1 != end) goto bad;
    } else {
        colon = memchr(hp, ':', (size_t)(end - hp));
        const char *he = colon ? colon : end;
        if (he == hp || (size_t)(he - hp) >= sizeof u->host) goto bad;
        memcpy(u->host, hp, (size_t)(he - hp));
        u->host[he - hp] = 0;
    }
    if (colon) {
        size_t n = (size_t)(end - colon - 1);
        if (n == 0 || n >= sizeof u->port) goto bad;
        memcpy(u->port, colon + 1, n);
        u->port[n] = 0;
        for (size_t i = 0; i < n; i++)
            if (!isdigit((unsigned char)u->port[i])) goto bad;
    } else if (def_port) {
        snprintf(u->port, sizeof u->port, "%s", def_port);
    } else {
        snprintf(err, errlen, "%s: a port is required", s);
        return -1;
    }
    if (strlen(end) >= sizeof u->path) goto bad;
    snprintf(u->path, sizeof u->path, "%s", end);
    return 0;
bad:
    snprintf(err, errlen, "cannot parse host:port in \"%s\"", s);
    return -1;
}

int lt_url_parse(const char *url, lt_url *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!strncmp(url, "tcp://", 6)) {
        out->kind = LT_TARGET_RPC;
        if (host_port(url + 6, out, NULL, err, errlen)) return -1;
        if (out->path[0]) {
            snprintf(err, errlen, "%s: a tcp:// URL has no path", url);
            return -1;
        }
        return 0;
    }
    if (!strncmp(url, "ipc://", 6)) {
        out->kind = LT_TARGET_RPC;
        if (!url[6]) {
            snprintf(err, errlen, "%s: ipc:// needs a path", url);
            return -1;
        }
        return 0;
    }
    if (!strncmp(url, "http://", 7)) {
        out->kind = LT_TARGET_HTTP;
        if (host_port(url + 7, out, "80", err, errlen)) return -1;
        if (!out->path[0] || !strcmp(out->path, "/"))
            snprintf(out->path, sizeof out->path, "/v1/completions");
        return 0;
    }
    if (!strncmp(url, "https://", 8)) {
        snprintf(err, errlen, "%s: https is not supported (loopback targets speak plain HTTP)",
                 url);
        return -1;
    }
    snprintf(err, errlen, "%s: the URL must start with tcp://, ipc:// or http://", url);
    return -1;
}

int lt_host_is_loopback(const char *host) {
    if (!strcasecmp(host, "localhost") || !strcasecmp(host, "localhost.")) return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* ---- sockets ------------------------------------------------------------ */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    double (*now)(void *);
    void *user;
    double deadline;
    atomic_int *cancel;
} bound_t;

static double bnow(const bound_t *b) { return b->now ? b->now(b->user) : mono(); }

/* 0: go on; -1: deadline or cancel (err says which). */
static int bound_check(const bound_t *b, char *err, size_t errlen) {
    if (b->cancel && atomic_load(b->cancel)) {
        snprintf(err, errlen, "cancelled");
        return -1;
    }
    if (bnow(b) >= b->deadline) {
        snprintf(err, errlen, "timeout");
        return -1;
    }
    return 0;
}

/* Wait for events on fd in 50 ms slices. 1 ready, -1 bound hit. */
static int wait_fd(int fd, short events, const bound_t *b, char *err, size_t errlen) {
    for (;;) {
        if (bound_check(b, err, errlen)) return -1;
        struct pollfd p = {fd, events, 0};
        int rc = poll(&p, 1, 50);
        if (rc > 0) return 1;
        if (rc < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

static int dial(const lt_url *u, const bound_t *b, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(u->host, u->port, &hints, &res);
    if (gai) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    snprintf(err, errlen, "connect %s:%s: no address", u->host, u->port);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            if (wait_fd(fd, POLLOUT, b, err, errlen) < 0) {
                close(fd);
                fd = -1;
                break; /* bound hit: do not try the next address */
            }
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc == 0) break;
        snprintf(err, errlen, "connect %s:%s: %s", u->host, u->port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n, const bound_t *b, char *err, size_t errlen) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, b, err, errlen) < 0) return -1;
            continue;
        }
        snprintf(err, errlen, "send: %s", k < 0 ? strerror(errno) : "connection closed");
        return -1;
    }
    return 0;
}

/* ---- response reading --------------------------------------------------- */

/* Body consumer: decoded bytes as they arrive; return 1 to stop reading
 * (the answer is complete), 0 to go on, -1 on an error already in err. */
typedef int (*body_fn)(void *ctx, const char *p, size_t n, double when);

enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

typedef struct {
    int status;
    long long content_length; /* -1 = none */
    int chunked, is_sse;
    long long body_seen;
    int cstate;
    long long cremain;
    char cline[256];
    size_t clen;
} rx_t;

static int parse_head(rx_t *rx, char *head, char *err, size_t errlen) {
    rx->content_length = -1;
    char *line = head, *nl = strstr(line, "\r\n");
    if (nl) *nl = 0;
    int major, minor, st;
    if (sscanf(line, "HTTP/%d.%d %d", &major, &minor, &st) != 3 || st < 100 || st > 999) {
        snprintf(err, errlen, "not an HTTP response: \"%.60s\"", line);
        return -1;
    }
    rx->status = st;
    while (nl) {
        line = nl + 2;
        nl = strstr(line, "\r\n");
        if (nl) *nl = 0;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = 0;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        if (!strcasecmp(line, "content-length")) rx->content_length = atoll(v);
        else if (!strcasecmp(line, "transfer-encoding") && strcasestr(v, "chunked"))
            rx->chunked = 1;
        else if (!strcasecmp(line, "content-type") && strcasestr(v, "text/event-stream"))
            rx->is_sse = 1;
    }
    return 0;
}

/* Decode body bytes per the framing. 1 = body complete, 0 = more, -1 error. */
static int rx_body(rx_t *rx, const char *p, size_t n, body_fn fn, void *ctx, double when, char *err,
                   size_t errlen) {
    if (!rx->chunked) {
        size_t take = n;
        if (rx->content_length >= 0 && (long long)take > rx->content_length - rx->body_seen)
            take = (size_t)(rx->content_length - rx->body_seen);
        rx->body_seen += (long long)take;
        int rc = take ? fn(ctx, p, take, when) : 0;
        if (rc) return rc;
        return rx->content_length >= 0 && rx->body_seen >= rx->content_length;
    }
    while (n) {
        switch (rx->cstate) {
        case CH_SIZE:
        case CH_DATA_END:
        case CH_TRAILER: {
            char c = *p++;
            n--;
            if (c != '\n') {
                if (rx->clen + 1 < sizeof rx->cline) rx->cline[rx->clen++] = c;
                continue;
            }
            if (rx->clen && rx->cline[rx->clen - 1] == '\r') rx->clen--;
            rx->cline[rx->clen] = 0;
            size_t len = rx->clen;
            rx->clen = 0;
            if (rx->cstate == CH_DATA_END) {
                if (len) {
                    snprintf(err, errlen, "bad chunked encoding (no CRLF after a chunk)");
                    return -1;
                }
                rx->cstate = CH_SIZE;
            } else if (rx->cstate == CH_SIZE) {
                char *end;
                errno = 0;
                long long sz = strtoll(rx->cline, &end, 16);
                if (end == rx->cline || sz < 0 || errno) {
                    snprintf(err, errlen, "bad chunk size \"%.20s\"", rx->cline);
                    return -1;
                }
                rx->cremain = sz;
                rx->cstate = sz ? CH_DATA : CH_TRAILER;
            } else if (len == 0) {
                rx->cstate = CH_DONE;
                return 1;
            }
            break;
        }
        case CH_DATA: {
            size_t take = n < (size_t)rx->cremain ? n : (size_t)rx->cremain;
            int rc = fn(ctx, p, take, when);
            if (rc) return rc;
            p += take;
            n -= take;
            rx->cremain -= (long long)take;
            if (!rx->cremain) rx->cstate = CH_DATA_END;
            break;
        }
        default: return 1;
        }
    }
    return 0;
}

typedef struct {
    int (*on_head)(void *ctx, const rx_t *rx); /* after the headers; may set up the body */
    body_fn body;
    void *ctx;
} handlers_t;

/* Send req and read the answer. Returns 1 when the body ended by its
 * framing or the consumer said so, 0 when the peer closed the connection
 * (the consumer decides whether that is complete), -1 on error. */
static int exchange(const lt_url *u, const char *req, size_t req_len, const bound_t *b, rx_t *rx,
                    const handlers_t *h, char *err, size_t errlen) {
    memset(rx, 0, sizeof *rx);
    int fd = dial(u, b, err, errlen);
    if (fd < 0) return -1;
    int result = -1;
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap + 1);
    int head_done = 0;
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (send_all(fd, req, req_len, b, err, errlen)) goto out;
    for (;;) {
        if (wait_fd(fd, POLLIN, b, err, errlen) < 0) {
            if (!strcmp(err, "timeout"))
                snprintf(err, errlen, "timeout (%s)",
                         !head_done ? "no response headers" : "response incomplete");
            goto out;
        }
        if (!head_done && len == cap) {
            snprintf(err, errlen, "response headers larger than %zu bytes", cap);
            goto out;
        }
        ssize_t k = recv(fd, buf + len, head_done ? cap : cap - len, 0);
        double when = bnow(b);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
            if (errno != ECONNRESET) {
                snprintf(err, errlen, "recv: %s", strerror(errno));
                goto out;
            }
            k = 0; /* a reset is a close here (peers that close with unread input reset) */
        }
        if (k == 0) {
            if (!head_done) {
                snprintf(err, errlen,
                         len ? "connection closed inside the response headers"
                             : "connection closed before any response");
                goto out;
            }
            if (rx->chunked || (rx->content_length >= 0 && rx->body_seen < rx->content_length)) {
                snprintf(err, errlen,
                         "connection closed before the end of the body (%lld bytes read)",
                         rx->body_seen);
                /* let the consumer add what it knows */
                result = 0;
                goto out_closed_early;
            }
            result = 0;
            goto out;
        }
        if (head_done) {
            int rc = rx_body(rx, buf, (size_t)k, h->body, h->ctx, when, err, errlen);
            if (rc) {
                result = rc > 0 ? 1 : -1;
                goto out;
            }
            continue;
        }
        len += (size_t)k;
        buf[len] = 0;
        char *eoh = strstr(buf, "\r\n\r\n");
        if (!eoh) continue;
        *eoh = 0;
        size_t rest = len - (size_t)(eoh + 4 - buf);
        if (parse_head(rx, buf, err, errlen)) goto out;
        head_done = 1;
        if (h->on_head && h->on_head(h->ctx, rx)) {
            result = 1;
            goto out;
        }
        if (rx->content_length == 0 && !rx->chunked) {
            result = 1;
            goto out;
        }
        if (rest) {
            int rc = rx_body(rx, eoh + 4, rest, h->body, h->ctx, when, err, errlen);
            if (rc) {
                result = rc > 0 ? 1 : -1;
                goto out;
            }
        }
        len = 0;
    }
out_closed_early:
    result = -2; /* closed mid-body; err set */
out:
    free(buf);
    close(fd);
    return result;
}

/* ---- streamed completions ----------------------------------------------- */

#define ERR_EXCERPT 300
#define MAX_PLAIN_BODY (16u << 20)

typedef struct {
    lt_sse_result *res;
    int status, is_sse;
    char line[8192]; /* current SSE line (longer lines are accumulated in big) */
    char *big;
    size_t len, bigcap;
    int done;   /* [DONE] seen */
    int events; /* data events */
    char error[512];
    char *plain; /* non-SSE body */
    size_t plain_len, plain_cap;
} sse_ctx;

static int sse_on_head(void *vctx, const rx_t *rx) {
    sse_ctx *c = vctx;
    c->status = rx->status;
    c->res->status = rx->status;
    c->is_sse = rx->is_sse;
    return 0;
}

static void json_event(sse_ctx *c, const char *data, double when) {
    cJSON *o = cJSON_Parse(data);
    if (!o) {
        if (!c->error[0]) snprintf(c->error, sizeof c->error, "bad JSON in event: %.80s", data);
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (e && !cJSON_IsNull(e)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        if (cJSON_IsString(m))
            snprintf(c->error, sizeof c->error, "server error: %s", m->valuestring);
        else if (cJSON_IsString(e))
            snprintf(c->error, sizeof c->error, "server error: %s", e->valuestring);
        else snprintf(c->error, sizeof c->error, "server error event");
    }
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
    /* /generate streams its fields at the top level: {"index", "text", "finish_reason"?} */
    if (!ch && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "text"))) ch = o;
    if (ch) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(ch, "text");
        if (!cJSON_IsString(t)) /* chat-style delta */
            t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ch, "delta"),
                                                 "content");
        if (!cJSON_IsString(t)) /* a whole chat answer */
            t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ch, "message"),
                                                 "content");
        if (cJSON_IsString(t) && t->valuestring[0] && c->res->on_tokens)
            c->res->on_tokens(c->res->user, when, 1, t->valuestring, strlen(t->valuestring));
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(f))
            snprintf(c->res->finish_reason, sizeof c->res->finish_reason, "%s", f->valuestring);
    }
    const cJSON *us = cJSON_GetObjectItemCaseSensitive(o, "usage");
    if (cJSON_IsObject(us)) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(us, "prompt_tokens");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(us, "completion_tokens");
        if (cJSON_IsNumber(pt)) c->res->prompt_tokens = pt->valueint;
        if (cJSON_IsNumber(ct)) c->res->completion_tokens = ct->valueint;
    }
    cJSON_Delete(o);
}

static int sse_line(sse_ctx *c, char *line, size_t len, double when) {
    if (len && line[len - 1] == '\r') line[--len] = 0;
    if (strncmp(line, "data:", 5)) return 0; /* event:, id:, comments, blank */
    char *d = line + 5;
    if (*d == ' ') d++;
    c->events++;
    if (!strcmp(d, "[DONE]")) {
        c->done = 1;
        return 1;
    }
    json_event(c, d, when);
    return 0;
}

static int append(char **p, size_t *len, size_t *cap, const char *s, size_t n, size_t max) {
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < *len + n + 1) nc *= 2;
        if (nc > max + 1) nc = max + 1;
        if (nc < *len + n + 1) return -1;
        char *q = realloc(*p, nc);
        if (!q) return -1;
        *p = q;
        *cap = nc;
    }
    memcpy(*p + *len, s, n);
    *len += n;
    (*p)[*len] = 0;
    return 0;
}

static int sse_body(void *vctx, const char *p, size_t n, double when) {
    sse_ctx *c = vctx;
    if (c->status != 200 || !c->is_sse) {
        size_t max = c->status != 200 ? ERR_EXCERPT : MAX_PLAIN_BODY;
        size_t take = c->plain_len + n > max ? max - c->plain_len : n;
        if (take && append(&c->plain, &c->plain_len, &c->plain_cap, p, take, max)) return 1;
        return c->plain_len >= max; /* enough for an error excerpt */
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (c->len + 1 < sizeof c->line) {
                c->line[c->len++] = p[i];
            } else { /* long line: move to the heap */
                size_t cap = c->bigcap, l = 0;
                if (!c->big) {
                    if (append(&c->big, &l, &cap, c->line, c->len, 64u << 20)) return -1;
                } else {
                    l = c->len;
                }
                if (append(&c->big, &l, &cap, p + i, 1, 64u << 20)) return -1;
                c->len = l;
                c->bigcap = cap;
            }
            continue;
        }
        char *line = c->big ? c->big : c->line;
        line[c->len] = 0;
        int rc = sse_line(c, line, c->len, when);
        c->len = 0;
        free(c->big);
        c->big = NULL;
        c->bigcap = 0;
        if (rc) return 1;
    }
    return 0;
}

static void excerpt(const char *s, size_t n, char *out, size_t outlen) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < outlen; i++)
        out[j++] = (s[i] == '\n' || s[i] == '\r' || s[i] == '\t') ? ' ' : s[i];
    out[j] = 0;
}

int lt_http_stream(const lt_url *u, const char *api_key, const char *body, double deadline,
                   atomic_int *cancel, lt_sse_result *res, char *err, size_t errlen) {
    res->status = 0;
    res->prompt_tokens = res->completion_tokens = -1;
    res->finish_reason[0] = 0;
    size_t blen = strlen(body);
    size_t cap = blen + 2048;
    char *req = malloc(cap);
    if (!req) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char auth[600] = "";
    if (api_key && *api_key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %.500s\r\n", api_key);
    int is6 = strchr(u->host, ':') != NULL;
    int hl = snprintf(req, cap,
                      "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: loadtest\r\n"
                      "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                      u->path, is6 ? "[" : "", u->host, is6 ? "]" : "", u->port, blen, auth);
    memcpy(req + hl, body, blen);
    sse_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        free(req);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->res = res;
    bound_t b = {res->now, res->user, deadline, cancel};
    handlers_t h = {sse_on_head, sse_body, c};
    rx_t rx;
    int rc = exchange(u, req, (size_t)hl + blen, &b, &rx, &h, err, errlen);
    free(req);
    int ret = -1;
    if (c->status && c->status != 200) {
        char ex[ERR_EXCERPT + 1];
        excerpt(c->plain ? c->plain : "", c->plain_len, ex, sizeof ex);
        snprintf(err, errlen, "HTTP %d: %s", c->status, ex);
    } else if (rc == -1) {
        /* err set by exchange: connect, timeout, cancelled, ... */
        if (c->events && (!strncmp(err, "timeout", 7) || !strcmp(err, "cancelled"))) {
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, " after %d events", c->events);
        }
    } else if (c->error[0]) {
        snprintf(err, errlen, "%s", c->error);
    } else if (c->status == 200 && !c->is_sse) {
        /* A server that ignored "stream": one JSON answer. */
        double when = res->now ? res->now(res->user) : mono();
        if (rc >= 0 && c->plain) {
            json_event(c, c->plain, when);
            if (c->error[0]) snprintf(err, errlen, "%s", c->error);
            else ret = 0;
        } else {
            if (rc != -2) snprintf(err, errlen, "empty response body"); /* else err says why */
        }
    } else if (c->done) {
        ret = 0;
    } else if (rc >= 0 && res->finish_reason[0]) {
        ret = 0; /* a server that closes without [DONE] after finishing */
    } else {
        char *cause = rc == -2 ? strdup(err) : NULL; /* what the framing layer saw */
        snprintf(err, errlen, "connection closed after %d events without [DONE]%s%s", c->events,
                 cause ? ": " : "", cause ? cause : "");
        free(cause);
    }
    free(c->plain);
    free(c->big);
    free(c);
    return ret;
}

/* ---- GET ---------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
} acc_t;

static int acc_body(void *vctx, const char *p, size_t n, double when) {
    (void)when;
    acc_t *a = vctx;
    return append(&a->p, &a->len, &a->cap, p, n, 16u << 20) ? -1 : 0;
}

int lt_http_get(const lt_url *u, const char *path, const char *api_key, double timeout_s,
                atomic_int *cancel, int *status, char **body, char *err, size_t errlen) {
    char req[2048], auth[600] = "";
    if (api_key && *api_key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %.500s\r\n", api_key);
    int is6 = strchr(u->host, ':') != NULL;
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: loadtest\r\n"
                     "Connection: close\r\n%s\r\n",
                     path, is6 ? "[" : "", u->host, is6 ? "]" : "", u->port, auth);
    acc_t a = {0};
    bound_t b = {NULL, NULL, mono() + timeout_s, cancel};
    handlers_t h = {NULL, acc_body, &a};
    rx_t rx;
    int rc = exchange(u, req, (size_t)n, &b, &rx, &h, err, errlen);
    if (rc < 0) {
        free(a.p);
        if (rc == -2) snprintf(err, errlen, "connection closed mid-body");
        return -1;
    }
    *status = rx.status;
    if (!a.p && !(a.p = calloc(1, 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *body = a.p;
    return 0;
}

/* ---- Prometheus --------------------------------------------------------- */

void lt_parse_prometheus(const char *text, lt_server_gauges *g) {
    g->running = g->waiting = g->swapped = g->kv_blocks_used = -1;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[512];
        if (len < sizeof line && *p != '#') {
            memcpy(line, p, len);
            line[len] = 0;
            char *sp = strrchr(line, ' ');
            if (sp) {
                *sp = 0;
                char *end;
                double v = strtod(sp + 1, &end);
                if (end != sp + 1) {
                    if (!strcmp(line, "infer_sequences_running") ||
                        !strcmp(line, "llamacpp:requests_processing"))
                        g->running = v;
                    else if (!strcmp(line, "infer_sequences_waiting") ||
                             !strcmp(line, "llamacpp:requests_deferred"))
                        g->waiting = v;
                    else if (!strcmp(line, "infer_sequences_swapped")) g->swapped = v;
                    else if (!strcmp(line, "infer_kv_blocks_used{tier=\"device\"}"))
                        g->kv_blocks_used = v;
                }
            }
        }
        p = nl ? nl + 1 : p + len;
    }
}
