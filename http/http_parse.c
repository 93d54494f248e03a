/*
 * http_parse.c - see http_parse.h. The head is located first (request line,
 * then the empty line that ends the fields) with the size limits applied
 * while it is still incomplete, so a peer cannot make us buffer more than
 * the limits; only a complete head is copied and split in place.
 */
#include "http/http_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest method we accept; the request line may be this, two spaces, the
 * target, the version and CRLF. */
#define HTTP_MAX_METHOD 32
#define HTTP_VERSION_BYTES 8 /* "HTTP/1.1" */
#define HTTP_MAX_EMPTY_LINES 8
/* A chunk-size line with its extensions. */
#define HTTP_MAX_CHUNK_LINE 4096

static http_parse_rc fail(http_parse_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static http_parse_rc fail(http_parse_error *err, int status, const char *code, const char *fmt,
                          ...) {
    err->status = status;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return HTTP_PARSE_ERROR;
}

static http_parse_rc bad(http_parse_error *err, const char *what) {
    return fail(err, 400, "bad_request", "%s", what);
}

/* RFC 9110 tchar. */
static int is_tchar(unsigned char ch) {
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) return 1;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int is_token(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i])) return 0;
    return 1;
}

/* A field-value byte: visible ASCII, SP, HT or obs-text. */
static int is_value_byte(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

static int is_ows(char ch) { return ch == ' ' || ch == '\t'; }

/* ---- locating the head ---- */

/* Offset just past the leading empty lines, or (size_t)-1 when the buffer
 * ends inside them (more needed). */
static size_t skip_empty_lines(const char *buf, size_t len, int *too_many) {
    size_t i = 0;
    *too_many = 0;
    for (int n = 0; i < len && buf[i] == '\r'; n++) {
        if (i + 1 >= len) return (size_t)-1;
        if (buf[i + 1] != '\n') return i; /* the request line check reports it */
        if (n == HTTP_MAX_EMPTY_LINES) {
            *too_many = 1;
            return i;
        }
        i += 2;
    }
    return i;
}

/* The request line is not complete and cannot fit: a method and a space
 * before it says the target is what is too long; anything else is garbage. */
static http_parse_rc line_too_long(const char *line, size_t len, const http_limits *lim,
                                   http_parse_error *err) {
    size_t m = 0;
    while (m < len && m <= HTTP_MAX_METHOD && is_tchar((unsigned char)line[m])) m++;
    if (m > 0 && m <= HTTP_MAX_METHOD && m < len && line[m] == ' ')
        return fail(err, 414, "uri_too_long", "request target is longer than %zu bytes",
                    lim->max_url_bytes);
    return bad(err, "malformed request line");
}

/* ---- the request line ---- */

static http_parse_rc parse_version(const char *v, size_t n, int *minor, http_parse_error *err) {
    if (n != HTTP_VERSION_BYTES || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
        v[6] != '.' || v[7] < '0' || v[7] > '9')
        return bad(err, "malformed request line: no valid HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail(err, 505, "http_version_not_supported",
                    "HTTP version %.8s is not supported (HTTP/1.0 and HTTP/1.1 are)", v);
    *minor = v[7] - '0';
    return HTTP_PARSE_DONE;
}

/* Split the target (a NUL-terminated copy the head owns) into path and
 * query. */
static http_parse_rc split_target(http_head *h, char *copy, http_parse_error *err) {
    if (strcmp(copy, "*") == 0) {
        if (strcmp(h->method, "OPTIONS") != 0)
            return bad(err, "request target '*' is only for OPTIONS");
        h->path = copy;
        return HTTP_PARSE_DONE;
    }
    char *path = copy;
    if (copy[0] != '/') {
        size_t skip = strncasecmp(copy, "http://", 7) == 0    ? 7
                      : strncasecmp(copy, "https://", 8) == 0 ? 8
                                                              : 0;
        if (skip == 0) return bad(err, "malformed request target: not a path or absolute URI");
        path = copy + skip + strcspn(copy + skip, "/?");
        if (path == copy + skip)
            return bad(err, "malformed request target: absolute URI without host");
        if (*path != '/') {
            /* "http://host" or "http://host?q": the path is "/"; shift the
             * query right by one in the copy's spare byte to make room. */
            memmove(path + 1, path, strlen(path) + 1);
            *path = '/';
        }
    }
    char *q = strchr(path, '?');
    if (q) {
        *q = '\0';
        h->query = q + 1;
    }
    h->path = path;
    return HTTP_PARSE_DONE;
}

/* line[0..n) is the request line without CRLF, inside h->raw. The target
 * is copied to spare (room for n + 2 bytes) for splitting. */
static http_parse_rc parse_request_line(http_head *h, char *line, size_t n, char *spare,
                                        const http_limits *lim, http_parse_error *err) {
    char *sp1 = memchr(line, ' ', n);
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - line)) : NULL;
    if (!sp1 || !sp2) return bad(err, "malformed request line");
    http_parse_rc rc = parse_version(sp2 + 1, n - (size_t)(sp2 + 1 - line), &h->minor, err);
    if (rc != HTTP_PARSE_DONE) return rc;
    size_t mlen = (size_t)(sp1 - line), tlen = (size_t)(sp2 - sp1 - 1);
    if (mlen > HTTP_MAX_METHOD || !is_token(line, mlen))
        return bad(err, "malformed request line: the method is not a token");
    if (tlen == 0) return bad(err, "malformed request line: empty target");
    if (tlen > lim->max_url_bytes)
        return fail(err, 414, "uri_too_long", "request target is longer than %zu bytes",
                    lim->max_url_bytes);
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)sp1[1 + i];
        if (ch <= 0x20 || ch >= 0x7f) return bad(err, "malformed request target: invalid byte");
    }
    *sp1 = '\0';
    *sp2 = '\0';
    h->method = line;
    h->target = sp1 + 1;
    memcpy(spare, h->target, tlen + 1);
    return split_target(h, spare, err);
}

/* ---- the fields ---- */

/* Split lines of block[0..n) (each ending CRLF, the last one empty) into
 * h->fields, NUL-terminating names and values in place. */
static http_parse_rc split_fields(http_head *h, char *block, size_t n, http_parse_error *err) {
    size_t lines = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (block[i] == '\r' && block[i + 1] == '\n') lines++;
    h->fields = calloc(lines ? lines : 1, sizeof *h->fields);
    if (!h->fields) return fail(err, 500, "internal_error", "out of memory");
    char *p = block, *end = block + n;
    while (p < end) {
        char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == p) break; /* the empty line */
        if (is_ows(*p)) return bad(err, "obsolete line folding in a header field is not accepted");
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || !is_token(p, (size_t)(colon - p)))
            return bad(err, "malformed header field name");
        char *v = colon + 1, *ve = eol;
        while (v < ve && is_ows(*v)) v++;
        while (ve > v && is_ows(ve[-1])) ve--;
        for (char *c = v; c < ve; c++)
            if (!is_value_byte((unsigned char)*c))
                return fail(err, 400, "bad_request",
                            "header field '%.*s' holds a control byte (NUL, CR, LF or another)",
                            (int)(colon - p) > 64 ? 64 : (int)(colon - p), p);
        *colon = '\0';
        *ve = '\0';
        h->fields[h->n_fields].name = p;
        h->fields[h->n_fields].value = v;
        h->n_fields++;
        p = eol + 2;
    }
    return HTTP_PARSE_DONE;
}

/* Calls fn on each comma-separated element of value (trimmed, not
 * NUL-terminated). Stops at the first non-DONE answer. */
typedef http_parse_rc (*element_fn)(const char *e, size_t n, void *ctx, http_parse_error *err);

static http_parse_rc each_element(const char *value, element_fn fn, void *ctx,
                                  http_parse_error *err) {
    const char *p = value;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *e = p, *ee = comma ? comma : p + strlen(p);
        while (e < ee && is_ows(*e)) e++;
        while (ee > e && is_ows(ee[-1])) ee--;
        http_parse_rc rc = fn(e, (size_t)(ee - e), ctx, err);
        if (rc != HTTP_PARSE_DONE || !comma) return rc;
        p = comma + 1;
    }
}

typedef struct {
    int seen;
    uint64_t value;
} length_ctx;

static http_parse_rc length_element(const char *e, size_t n, void *ctx, http_parse_error *err) {
    length_ctx *l = ctx;
    if (n == 0) return bad(err, "Content-Length is not a number");
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i] < '0' || e[i] > '9') return bad(err, "Content-Length is not a number");
        if (v > (UINT64_MAX - 9) / 10) return bad(err, "Content-Length is too large");
        v = v * 10 + (uint64_t)(e[i] - '0');
    }
    if (l->seen && v != l->value) return bad(err, "Content-Length values differ");
    l->seen = 1;
    l->value = v;
    return HTTP_PARSE_DONE;
}

typedef struct {
    int chunked;
} coding_ctx;

static http_parse_rc coding_element(const char *e, size_t n, void *ctx, http_parse_error *err) {
    coding_ctx *t = ctx;
    if (n == 0) return bad(err, "empty transfer coding");
    if (n != 7 || strncasecmp(e, "chunked", 7) != 0)
        return fail(err, 501, "not_implemented", "transfer coding '%.*s' is not supported",
                    n > 32 ? 32 : (int)n, e);
    if (t->chunked) return bad(err, "transfer coding 'chunked' applied twice");
    t->chunked = 1;
    return HTTP_PARSE_DONE;
}

typedef struct {
    int close, keep_alive;
} connection_ctx;

static http_parse_rc connection_element(const char *e, size_t n, void *ctx, http_parse_error *err) {
    (void)err;
    connection_ctx *c = ctx;
    if (n == 5 && strncasecmp(e, "close", 5) == 0) c->close = 1;
    if (n == 10 && strncasecmp(e, "keep-alive", 10) == 0) c->keep_alive = 1;
    return HTTP_PARSE_DONE;
}

/* The fields that decide framing and the connection. */
static http_parse_rc interpret_fields(http_head *h, const http_limits *lim, http_parse_error *err) {
    length_ctx len = {0};
    coding_ctx te = {0};
    connection_ctx conn = {0};
    int hosts = 0, has_te = 0;
    for (size_t i = 0; i < h->n_fields; i++) {
        const char *name = h->fields[i].name, *value = h->fields[i].value;
        http_parse_rc rc = HTTP_PARSE_DONE;
        if (strcasecmp(name, "Host") == 0) {
            hosts++;
        } else if (strcasecmp(name, "Content-Length") == 0) {
            rc = each_element(value, length_element, &len, err);
        } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
            has_te = 1;
            rc = each_element(value, coding_element, &te, err);
        } else if (strcasecmp(name, "Connection") == 0) {
            rc = each_element(value, connection_element, &conn, err);
        } else if (strcasecmp(name, "Expect") == 0) {
            h->expect_continue = strcasecmp(value, "100-continue") == 0;
        }
        if (rc != HTTP_PARSE_DONE) return rc;
    }
    if (h->minor == 1 && hosts != 1)
        return bad(err,
                   hosts ? "more than one Host header" : "HTTP/1.1 request without Host header");
    if (has_te && h->minor == 0) return bad(err, "Transfer-Encoding in an HTTP/1.0 request");
    if (has_te && len.seen)
        return bad(err, "request has both Content-Length and Transfer-Encoding");
    if (len.seen && len.value > lim->max_body_bytes)
        return fail(err, 413, "payload_too_large", "request body is larger than %zu bytes",
                    lim->max_body_bytes);
    h->body = te.chunked              ? HTTP_BODY_CHUNKED
              : len.seen && len.value ? HTTP_BODY_LENGTH
                                      : HTTP_BODY_NONE;
    h->content_length = len.value;
    h->keep_alive = h->minor == 1 ? !conn.close : conn.keep_alive && !conn.close;
    return HTTP_PARSE_DONE;
}

/* ---- the whole head ---- */

/* Copy head[0..n) (request line at 0, its CRLF at line_len) and parse it;
 * with_fields 0: the request line alone (while the fields still arrive). */
static http_parse_rc parse_copy(const char *head, size_t n, size_t line_len, int with_fields,
                                const http_limits *lim, http_head *h, http_parse_error *err) {
    /* the head, NUL, then the target copy with one spare byte (split_target) */
    h->raw = malloc(n + 1 + line_len + 2);
    if (!h->raw) return fail(err, 500, "internal_error", "out of memory");
    memcpy(h->raw, head, n);
    h->raw[n] = '\0';
    h->raw[line_len] = '\0';
    http_parse_rc rc = parse_request_line(h, h->raw, line_len, h->raw + n + 1, lim, err);
    if (rc == HTTP_PARSE_DONE && with_fields)
        rc = split_fields(h, h->raw + line_len + 2, n - line_len - 2, err);
    if (rc == HTTP_PARSE_DONE && with_fields) rc = interpret_fields(h, lim, err);
    return rc;
}

http_parse_rc http_parse_head(const char *buf, size_t len, const http_limits *lim, http_head *out,
                              size_t *consumed, http_parse_error *err) {
    memset(out, 0, sizeof *out);
    *consumed = 0;
    int too_many;
    size_t start = skip_empty_lines(buf, len, &too_many);
    if (too_many) return bad(err, "too many empty lines before the request line");
    if (start == (size_t)-1) return HTTP_PARSE_MORE;
    const char *line = buf + start;
    size_t avail = len - start;
    size_t max_line = HTTP_MAX_METHOD + 1 + lim->max_url_bytes + 1 + HTTP_VERSION_BYTES;
    const char *lf = memchr(line, '\n', avail < max_line + 2 ? avail : max_line + 2);
    if (!lf) return avail > max_line + 1 ? line_too_long(line, avail, lim, err) : HTTP_PARSE_MORE;
    if (lf == line || lf[-1] != '\r') return bad(err, "malformed request line: bare LF");
    size_t line_len = (size_t)(lf - 1 - line);
    /* fields: from after the request line's CRLF through the empty line */
    const char *fields = lf + 1;
    size_t fields_avail = avail - (size_t)(fields - line);
    const char *end = NULL;
    if (fields_avail >= 2 && fields[0] == '\r' && fields[1] == '\n') end = fields + 2;
    else if (fields_avail >= 4) {
        const char *e = memmem(fields, fields_avail, "\r\n\r\n", 4);
        if (e) end = e + 4;
    }
    size_t block = end ? (size_t)(end - fields) : fields_avail;
    if (block > lim->max_header_bytes)
        return fail(err, 431, "header_fields_too_large",
                    "request header block is larger than %zu bytes", lim->max_header_bytes);
    if (!end) {
        /* report a bad request line now rather than after the fields */
        http_head probe = {0};
        http_parse_rc rc = parse_copy(line, line_len + 2, line_len, 0, lim, &probe, err);
        http_head_free(&probe);
        return rc == HTTP_PARSE_ERROR ? rc : HTTP_PARSE_MORE;
    }
    http_parse_rc rc = parse_copy(line, (size_t)(end - line), line_len, 1, lim, out, err);
    if (rc != HTTP_PARSE_DONE) {
        http_head_free(out);
        return rc;
    }
    *consumed = (size_t)(end - buf);
    return HTTP_PARSE_DONE;
}

void http_head_free(http_head *h) {
    free(h->raw);
    free(h->fields);
    memset(h, 0, sizeof *h);
}

const char *http_head_field(const http_head *h, const char *name) {
    for (size_t i = 0; i < h->n_fields; i++)
        if (strcasecmp(h->fields[i].name, name) == 0) return h->fields[i].value;
    return NULL;
}

/* ---- chunked bodies ---- */

enum {
    CH_SIZE,    /* hex digits of a chunk size */
    CH_EXT,     /* chunk extensions up to CR */
    CH_SIZE_LF, /* LF after the size line */
    CH_DATA,    /* chunk data */
    CH_DATA_CR, /* CRLF after the data */
    CH_DATA_LF,
    CH_TRAILER,    /* a trailer line, or the final empty line */
    CH_TRAILER_LF, /* LF after a trailer line */
    CH_END_LF,     /* LF of the final empty line */
    CH_DONE,       /* the body ended */
};

void http_chunked_init(http_chunked *c) { memset(c, 0, sizeof *c); }

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* One byte of a size line (CH_SIZE, CH_EXT, CH_SIZE_LF). */
static http_parse_rc chunk_size_byte(http_chunked *c, char ch, const http_limits *lim,
                                     const strbuf *body, http_parse_error *err) {
    if (c->state != CH_SIZE_LF && ++c->line_bytes > HTTP_MAX_CHUNK_LINE)
        return bad(err, "chunk size line is too long");
    int d = hex_value(ch);
    if (c->state == CH_SIZE && d >= 0) {
        if (c->remaining > (UINT64_MAX >> 4)) return bad(err, "chunk size is too large");
        c->remaining = c->remaining * 16 + (uint64_t)d;
    } else if (c->state == CH_SIZE && c->line_bytes == 1) {
        return bad(err, "malformed chunk size");
    } else if (c->state != CH_SIZE_LF && ch == '\r') {
        c->state = CH_SIZE_LF;
    } else if (c->state == CH_SIZE && (ch == ';' || is_ows(ch))) {
        c->state = CH_EXT;
    } else if (c->state == CH_EXT && is_value_byte((unsigned char)ch)) {
        /* extensions are ignored */
    } else if (c->state == CH_SIZE_LF && ch == '\n') {
        if (c->remaining > lim->max_body_bytes - body->len)
            return fail(err, 413, "payload_too_large", "request body is larger than %zu bytes",
                        lim->max_body_bytes);
        c->state = c->remaining ? CH_DATA : CH_TRAILER;
        c->line_bytes = 0;
    } else {
        return bad(err, "malformed chunk size line");
    }
    return HTTP_PARSE_DONE;
}

/* One byte of the trailer section (CH_TRAILER, CH_TRAILER_LF, CH_END_LF). */
static http_parse_rc trailer_byte(http_chunked *c, char ch, const http_limits *lim,
                                  http_parse_error *err) {
    if (++c->trailer_bytes > lim->max_header_bytes)
        return fail(err, 431, "header_fields_too_large", "chunked trailer is larger than %zu bytes",
                    lim->max_header_bytes);
    if (c->state == CH_TRAILER && c->line_bytes == 0 && ch == '\r') {
        c->state = CH_END_LF;
    } else if (c->state == CH_TRAILER && ch == '\r') {
        c->state = CH_TRAILER_LF;
    } else if (c->state == CH_TRAILER && is_value_byte((unsigned char)ch) &&
               !(c->line_bytes == 0 && is_ows(ch))) {
        c->line_bytes++;
    } else if ((c->state == CH_TRAILER_LF || c->state == CH_END_LF) && ch == '\n') {
        c->state = c->state == CH_END_LF ? CH_DONE : CH_TRAILER;
        c->line_bytes = 0;
    } else {
        return bad(err, "malformed chunked trailer");
    }
    return HTTP_PARSE_DONE;
}

http_parse_rc http_chunked_decode(http_chunked *c, const char *in, size_t len,
                                  const http_limits *lim, strbuf *body, size_t *consumed,
                                  http_parse_error *err) {
    size_t i = 0;
    http_parse_rc rc = HTTP_PARSE_DONE;
    while (i < len && rc == HTTP_PARSE_DONE) {
        if (c->state == CH_DATA) {
            size_t n = len - i < c->remaining ? len - i : (size_t)c->remaining;
            strbuf_putn(body, in + i, n);
            if (body->oom) rc = fail(err, 500, "internal_error", "out of memory");
            c->remaining -= n;
            i += n;
            if (c->remaining == 0) c->state = CH_DATA_CR;
            continue;
        }
        char ch = in[i++];
        if (c->state == CH_DATA_CR || c->state == CH_DATA_LF) {
            if (ch != (c->state == CH_DATA_CR ? '\r' : '\n'))
                rc = bad(err, "chunk data is not followed by CRLF");
            c->state = c->state == CH_DATA_CR ? CH_DATA_LF : CH_SIZE;
        } else if (c->state <= CH_SIZE_LF) {
            rc = chunk_size_byte(c, ch, lim, body, err);
        } else {
            rc = trailer_byte(c, ch, lim, err);
            if (rc == HTTP_PARSE_DONE && c->state == CH_DONE) break;
        }
    }
    *consumed = i;
    if (rc != HTTP_PARSE_DONE) return rc;
    return c->state == CH_DONE ? HTTP_PARSE_DONE : HTTP_PARSE_MORE;
}
