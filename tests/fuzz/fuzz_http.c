/*
 * fuzz_http.c - the HTTP/1.x request parser (http/http_parse.h) on arbitrary
 * bytes, as http/httpd.c drives it: a head, then a chunked body when the
 * head says so, then the next pipelined request, until the bytes run out or
 * the parser refuses.
 *
 * Checks (the header's promises): a refusal names an HTTP status the server
 * sends (400, 413, 414, 431, 501, 505) with a message; MORE consumes
 * nothing for a head; a parsed head's strings lie in its own allocation and
 * are NUL-free C strings, its path is "*" or starts with '/', and its limits
 * hold (target, header block, Content-Length); a head that parsed from
 * buf[0..n) parses identically from the same bytes with any tail appended
 * (the parser may not look past the empty line); a chunked body never grows
 * past max_body_bytes, and decoding it in two pieces gives the same body.
 */
#include <string.h>

#include "base/strbuf.h"
#include "http/http_parse.h"
#include "tests/fuzz/fuzz.h"

static const http_limits LIMITS = {512, 2048, 4096};

static void check_error(const http_parse_error *e) {
    int s = e->status;
    FUZZ_CHECK(s == 400 || s == 413 || s == 414 || s == 431 || s == 500 || s == 501 || s == 505);
    FUZZ_CHECK(e->message[0] != '\0' && memchr(e->message, 0, sizeof e->message));
    FUZZ_CHECK(e->code && e->code[0]);
}

static void check_head(const http_head *h, size_t consumed) {
    FUZZ_CHECK(h->method && h->method[0] && h->target && h->path);
    FUZZ_CHECK(strcmp(h->path, "*") == 0 || h->path[0] == '/');
    FUZZ_CHECK(strlen(h->target) <= LIMITS.max_url_bytes);
    FUZZ_CHECK(consumed <= LIMITS.max_url_bytes + LIMITS.max_header_bytes + 64);
    FUZZ_CHECK(h->minor == 0 || h->minor == 1);
    for (size_t i = 0; i < h->n_fields; i++) {
        FUZZ_CHECK(h->fields[i].name[0] != '\0');
        FUZZ_CHECK(!strchr(h->fields[i].value, '\r') && !strchr(h->fields[i].value, '\n'));
    }
    if (h->body == HTTP_BODY_LENGTH) FUZZ_CHECK(h->content_length <= LIMITS.max_body_bytes);
}

/* The same head from the bytes plus a tail: the parser stops at the head. */
static void check_prefix_stable(const char *buf, size_t consumed, const http_head *h) {
    char *more = malloc(consumed + 8);
    if (!more) return;
    memcpy(more, buf, consumed);
    memcpy(more + consumed, "GET / HT", 8);
    http_head h2;
    size_t c2 = 0;
    http_parse_error e2;
    FUZZ_CHECK(http_parse_head(more, consumed + 8, &LIMITS, &h2, &c2, &e2) == HTTP_PARSE_DONE);
    FUZZ_CHECK(c2 == consumed && strcmp(h2.target, h->target) == 0 && h2.n_fields == h->n_fields &&
               h2.body == h->body && h2.content_length == h->content_length &&
               h2.keep_alive == h->keep_alive);
    http_head_free(&h2);
    free(more);
}

/* Decode a chunked body whole and in two pieces; returns bytes consumed
 * (0 when it did not end). */
static size_t check_chunked(const char *in, size_t len) {
    http_chunked c;
    http_chunked_init(&c);
    strbuf whole = {0};
    size_t used = 0;
    http_parse_error e;
    http_parse_rc rc = http_chunked_decode(&c, in, len, &LIMITS, &whole, &used, &e);
    FUZZ_CHECK(used <= len && whole.len <= LIMITS.max_body_bytes);
    if (rc == HTTP_PARSE_ERROR) check_error(&e);
    if (rc == HTTP_PARSE_DONE) {
        size_t half = used / 2, u1 = 0, u2 = 0;
        http_chunked c2;
        http_chunked_init(&c2);
        strbuf split = {0};
        http_parse_rc r1 = http_chunked_decode(&c2, in, half, &LIMITS, &split, &u1, &e);
        FUZZ_CHECK(r1 == HTTP_PARSE_MORE && u1 == half);
        http_parse_rc r2 =
            http_chunked_decode(&c2, in + half, used - half, &LIMITS, &split, &u2, &e);
        FUZZ_CHECK(r2 == HTTP_PARSE_DONE && u2 == used - half);
        FUZZ_CHECK(split.len == whole.len &&
                   (whole.len == 0 || memcmp(split.p, whole.p, whole.len) == 0));
        strbuf_free(&split);
    }
    strbuf_free(&whole);
    return rc == HTTP_PARSE_DONE ? used : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    size_t off = 0;
    for (int n = 0; n < 8 && off < size; n++) {
        http_head h;
        size_t consumed = 0;
        http_parse_error e;
        http_parse_rc rc = http_parse_head(buf + off, size - off, &LIMITS, &h, &consumed, &e);
        if (rc == HTTP_PARSE_ERROR) {
            check_error(&e);
            return 0;
        }
        if (rc == HTTP_PARSE_MORE) {
            FUZZ_CHECK(consumed == 0);
            return 0;
        }
        FUZZ_CHECK(consumed > 0 && consumed <= size - off);
        check_head(&h, consumed);
        check_prefix_stable(buf + off, consumed, &h);
        off += consumed;
        size_t body = 0;
        if (h.body == HTTP_BODY_LENGTH) {
            body = h.content_length <= size - off ? (size_t)h.content_length : 0;
            if (!body && h.content_length) {
                http_head_free(&h);
                return 0;
            }
        } else if (h.body == HTTP_BODY_CHUNKED) {
            body = check_chunked(buf + off, size - off);
            if (!body) {
                http_head_free(&h);
                return 0;
            }
        }
        off += body;
        http_head_free(&h);
    }
    return 0;
}
