/*
 * httpd_reply.c - the request as a handler sees it: accessors, the gone
 * state, and answers (one response or a stream) written straight to the
 * socket from the answering thread; plus the status table and the JSON
 * error body every answer of this module uses.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "http/httpd_internal.h"

int64_t httpd_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- status codes ---- */

static const struct {
    int status;
    const char *reason;
    const char *error_type;
} STATUS_TABLE[] = {
    {200, "OK", "server_error"},
    {201, "Created", "server_error"},
    {204, "No Content", "server_error"},
    {400, "Bad Request", "invalid_request_error"},
    {401, "Unauthorized", "authentication_error"},
    {403, "Forbidden", "invalid_request_error"},
    {404, "Not Found", "not_found_error"},
    {405, "Method Not Allowed", "invalid_request_error"},
    {408, "Request Timeout", "timeout_error"},
    {409, "Conflict", "invalid_request_error"},
    {411, "Length Required", "invalid_request_error"},
    {413, "Content Too Large", "invalid_request_error"},
    {414, "URI Too Long", "invalid_request_error"},
    {415, "Unsupported Media Type", "invalid_request_error"},
    {422, "Unprocessable Content", "invalid_request_error"},
    {429, "Too Many Requests", "rate_limit_error"},
    {431, "Request Header Fields Too Large", "invalid_request_error"},
    {500, "Internal Server Error", "server_error"},
    {501, "Not Implemented", "server_error"},
    {503, "Service Unavailable", "service_unavailable"},
    {504, "Gateway Timeout", "timeout_error"},
    {505, "HTTP Version Not Supported", "server_error"},
};

static int status_index(int status) {
    for (size_t i = 0; i < sizeof STATUS_TABLE / sizeof STATUS_TABLE[0]; i++)
        if (STATUS_TABLE[i].status == status) return (int)i;
    return -1;
}

const char *httpd_reason(int status) {
    int i = status_index(status);
    return i < 0 ? NULL : STATUS_TABLE[i].reason;
}

const char *httpd_error_type(int status) {
    int i = status_index(status);
    if (i >= 0) return STATUS_TABLE[i].error_type;
    return status >= 400 && status < 500 ? "invalid_request_error" : "server_error";
}

static void json_string(strbuf *out, const char *s) {
    strbuf_putn(out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            strbuf_putn(out, "\\", 1);
            strbuf_putn(out, (const char *)p, 1);
        } else if (*p < 0x20) {
            strbuf_printf(out, "\\u%04x", *p);
        } else {
            strbuf_putn(out, (const char *)p, 1);
        }
    }
    strbuf_putn(out, "\"", 1);
}

void httpd_error_body(strbuf *out, int status, const char *code, const char *message) {
    strbuf_puts(out, "{\"error\":{\"message\":");
    json_string(out, message);
    strbuf_puts(out, ",\"type\":");
    json_string(out, httpd_error_type(status));
    strbuf_puts(out, ",\"param\":null,\"code\":");
    json_string(out, code);
    strbuf_puts(out, "}}");
}

/* ---- response heads ---- */

static int header_ok(const char *name, const char *value) {
    static const char *owned[] = {"Content-Length", "Transfer-Encoding", "Connection"};
    if (!name || !value || !*name) return 0;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
            strchr("()<>@,;:\\\"/[]?={}", *p))
            return 0;
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        if (strcasecmp(name, owned[i]) == 0) return 0;
    return strpbrk(value, "\r\n") == NULL;
}

int httpd_format_head(strbuf *out, int status, const char *content_type,
                      const httpd_header *headers, size_t n_headers, httpd_framing framing,
                      size_t len, int keep, int minor) {
    const char *reason = httpd_reason(status);
    if (!reason || (content_type && strpbrk(content_type, "\r\n"))) return HTTPD_EINVAL;
    for (size_t i = 0; i < n_headers; i++)
        if (!header_ok(headers[i].name, headers[i].value)) return HTTPD_EINVAL;
    strbuf_printf(out, "HTTP/1.1 %d %s\r\n", status, reason);
    if (content_type) strbuf_printf(out, "Content-Type: %s\r\n", content_type);
    for (size_t i = 0; i < n_headers; i++)
        strbuf_printf(out, "%s: %s\r\n", headers[i].name, headers[i].value);
    if (framing == FRAME_LENGTH && status != 204)
        strbuf_printf(out, "Content-Length: %zu\r\n", len);
    if (framing == FRAME_CHUNKED) strbuf_puts(out, "Transfer-Encoding: chunked\r\n");
    if (!keep) strbuf_puts(out, "Connection: close\r\n");
    else if (minor == 0) strbuf_puts(out, "Connection: keep-alive\r\n");
    strbuf_puts(out, "\r\n");
    return out->oom ? HTTPD_ENOMEM : HTTPD_OK;
}

void httpd_format_error(strbuf *out, int status, const char *code, const char *message, int keep) {
    strbuf body = {0};
    httpd_error_body(&body, status, code, message);
    httpd_format_head(out, status, "application/json", NULL, 0, FRAME_LENGTH, body.len, keep, 1);
    strbuf_putn(out, body.p, body.len);
    strbuf_free(&body);
}

/* ---- the request ---- */

void httpd_req_init(httpd_req *r, httpd_conn *c) {
    memset(r, 0, sizeof *r);
    r->conn = c;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->write_mu, NULL);
}

void httpd_req_clear(httpd_req *r) {
    http_head_free(&r->head);
    strbuf_free(&r->body);
    r->body.oom = 0;
    r->answer = ANSWER_NONE;
    r->chunked = r->keep = r->broken = 0;
    atomic_store(&r->gone, 0);
    r->eof = r->declared = 0;
    r->gone_fn = NULL;
    r->gone_user = NULL;
}

void httpd_req_destroy(httpd_req *r) {
    httpd_req_clear(r);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->write_mu);
}

const char *httpd_req_method(const httpd_req *r) { return r->head.method; }
const char *httpd_req_target(const httpd_req *r) { return r->head.target; }
const char *httpd_req_path(const httpd_req *r) { return r->head.path; }
const char *httpd_req_query(const httpd_req *r) { return r->head.query; }
int httpd_req_minor(const httpd_req *r) { return r->head.minor; }
const char *httpd_req_peer(const httpd_req *r) { return r->conn->peer; }

const char *httpd_req_header(const httpd_req *r, const char *name) {
    return http_head_field(&r->head, name);
}

const char *httpd_req_body(const httpd_req *r, size_t *len) {
    if (len) *len = r->body.len;
    return r->body.p ? r->body.p : "";
}

/* ---- gone ---- */

static void mark_gone_locked(httpd_req *r) {
    if (atomic_load(&r->gone)) return;
    atomic_store(&r->gone, 1);
    if (r->gone_fn) r->gone_fn(r, r->gone_user);
}

void httpd_req_mark_gone(httpd_req *r) {
    pthread_mutex_lock(&r->mu);
    mark_gone_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void httpd_req_mark_eof(httpd_req *r) {
    pthread_mutex_lock(&r->mu);
    r->eof = 1;
    if (r->declared && r->mode == HTTPD_WATCH_UNARY) mark_gone_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void httpd_req_watch(httpd_req *r, httpd_watch_mode mode, httpd_gone_fn fn, void *user) {
    pthread_mutex_lock(&r->mu);
    r->declared = 1;
    r->mode = mode;
    r->gone_fn = fn;
    r->gone_user = user;
    if (atomic_load(&r->gone) && fn) fn(r, user);
    else if (r->eof && mode == HTTPD_WATCH_UNARY) mark_gone_locked(r);
    pthread_mutex_unlock(&r->mu);
}

int httpd_req_gone(httpd_req *r) { return atomic_load(&r->gone); }

/* ---- writing ---- */

/* Write all of iov, waiting up to write_timeout_ms for room. A failure
 * leaves the stream unframed and the client gone. */
static int send_all(httpd_req *r, struct iovec *iov, int n) {
    httpd_conn *c = r->conn;
    int64_t deadline = httpd_now_ms() + c->srv->o.write_timeout_ms;
    int rc = HTTPD_OK;
    while (n > 0 && rc == HTTPD_OK) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int64_t left = deadline - httpd_now_ms();
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            if (left <= 0 || poll(&p, 1, (int)left) == 0) rc = HTTPD_ETIMEDOUT;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            rc = HTTPD_EGONE;
            break;
        }
        size_t done = (size_t)w;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    if (rc != HTTPD_OK) {
        r->broken = 1;
        httpd_req_mark_gone(r);
    }
    return rc;
}

static int send_buf(httpd_req *r, const void *p, size_t len) {
    struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
    return len ? send_all(r, &iov, 1) : HTTPD_OK;
}

static int is_head(const httpd_req *r) { return strcmp(r->head.method, "HEAD") == 0; }

static int respond_locked(httpd_req *r, int status, const char *content_type,
                          const httpd_header *headers, size_t n_headers, const void *body,
                          size_t len) {
    if (r->answer != ANSWER_NONE) return HTTPD_EINVAL;
    int keep = r->head.keep_alive && !atomic_load(&r->conn->srv->stopping);
    strbuf head = {0};
    int rc = httpd_format_head(&head, status, content_type, headers, n_headers, FRAME_LENGTH, len,
                               keep, r->head.minor);
    if (rc == HTTPD_OK) {
        struct iovec iov[2] = {{head.p, head.len}, {(void *)body, len}};
        int with_body = len && status != 204 && !is_head(r);
        rc = send_all(r, iov, with_body ? 2 : 1);
        r->answer = ANSWER_DONE;
        r->keep = keep;
    }
    strbuf_free(&head);
    return rc;
}

int httpd_respond(httpd_req *r, int status, const char *content_type, const httpd_header *headers,
                  size_t n_headers, const void *body, size_t len) {
    pthread_mutex_lock(&r->write_mu);
    int rc = respond_locked(r, status, content_type, headers, n_headers, body, len);
    pthread_mutex_unlock(&r->write_mu);
    return rc;
}

int httpd_respond_error(httpd_req *r, int status, const char *code, const char *message,
                        const httpd_header *headers, size_t n_headers) {
    strbuf body = {0};
    httpd_error_body(&body, status, code, message);
    int rc = body.oom ? HTTPD_ENOMEM
                      : httpd_respond(r, status, "application/json", headers, n_headers, body.p,
                                      body.len);
    strbuf_free(&body);
    return rc;
}

int httpd_stream_begin(httpd_req *r, int status, const char *content_type,
                       const httpd_header *headers, size_t n_headers) {
    pthread_mutex_lock(&r->mu);
    r->declared = 1;
    r->mode = HTTPD_WATCH_STREAM;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&r->write_mu);
    int rc = HTTPD_EINVAL;
    if (r->answer == ANSWER_NONE) {
        /* HTTP/1.0 has no chunked coding: the end of the body is the close */
        r->chunked = r->head.minor == 1;
        int keep = r->chunked && r->head.keep_alive && !atomic_load(&r->conn->srv->stopping);
        strbuf head = {0};
        rc = httpd_format_head(&head, status, content_type, headers, n_headers,
                               r->chunked ? FRAME_CHUNKED : FRAME_CLOSE, 0, keep, r->head.minor);
        if (rc == HTTPD_OK) {
            rc = send_buf(r, head.p, head.len);
            r->answer = is_head(r) ? ANSWER_DONE : ANSWER_STREAM;
            r->keep = keep;
        }
        strbuf_free(&head);
    }
    pthread_mutex_unlock(&r->write_mu);
    return rc;
}

int httpd_stream_write(httpd_req *r, const void *data, size_t len) {
    pthread_mutex_lock(&r->write_mu);
    int rc = HTTPD_OK;
    if (r->answer == ANSWER_DONE && is_head(r)) {
        /* a HEAD request gets no body */
    } else if (r->answer != ANSWER_STREAM) {
        rc = HTTPD_EINVAL;
    } else if (r->broken) {
        rc = HTTPD_EGONE;
    } else if (len && r->chunked) {
        char size[24];
        int n = snprintf(size, sizeof size, "%zx\r\n", len);
        struct iovec iov[3] = {{size, (size_t)n}, {(void *)data, len}, {"\r\n", 2}};
        rc = send_all(r, iov, 3);
    } else {
        rc = send_buf(r, data, len);
    }
    pthread_mutex_unlock(&r->write_mu);
    return rc;
}

static int stream_end_locked(httpd_req *r) {
    if (r->answer == ANSWER_DONE && is_head(r)) return HTTPD_OK;
    if (r->answer != ANSWER_STREAM) return HTTPD_EINVAL;
    r->answer = ANSWER_DONE;
    if (r->broken) return HTTPD_EGONE;
    return r->chunked ? send_buf(r, "0\r\n\r\n", 5) : HTTPD_OK;
}

int httpd_stream_end(httpd_req *r) {
    pthread_mutex_lock(&r->write_mu);
    int rc = stream_end_locked(r);
    pthread_mutex_unlock(&r->write_mu);
    return rc;
}

void httpd_req_serve(httpd *h, httpd_conn *c) {
    httpd_req *r = &c->req;
    /* what the loop could not send yet (a 100 Continue) goes first */
    if (c->out.len > c->out_off) send_buf(r, c->out.p + c->out_off, c->out.len - c->out_off);
    strbuf_free(&c->out);
    c->out_off = 0;
    if (!r->broken) h->handler(r, h->user);
    pthread_mutex_lock(&r->write_mu);
    if (r->answer == ANSWER_NONE && !r->broken) {
        strbuf body = {0};
        httpd_error_body(&body, 500, "internal_error", "the request handler gave no answer");
        respond_locked(r, 500, "application/json", NULL, 0, body.p, body.len);
        strbuf_free(&body);
    } else if (r->answer == ANSWER_STREAM) {
        stream_end_locked(r);
    }
    pthread_mutex_unlock(&r->write_mu);
    pthread_mutex_lock(&r->mu);
    r->gone_fn = NULL;
    pthread_mutex_unlock(&r->mu);
}
