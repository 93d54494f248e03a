/*
 * http_parse.h - the HTTP/1.x request parser of http/httpd.c: pure
 * functions over byte buffers, no sockets, no threads (so tests and fuzzers
 * can drive it directly).
 *
 * Head (http_parse_head): the request line and the header fields up to the
 * empty line. Lines end with CRLF; a bare CR or LF is an error. Up to a few
 * empty lines before the request line are skipped. What is refused, with
 * the status a server should answer:
 *   - 400: a request line that is not "METHOD SP target SP HTTP/d.d", a
 *     method that is not a token, a target that is not an absolute path,
 *     "*" (OPTIONS only) or an absolute URI (http:// or https://); a field
 *     name that is not a token or is followed by white space; obs-fold (a
 *     line starting with SP or HT); NUL, CR, LF or another control byte in
 *     a field value; HTTP/1.1 without exactly one Host; Content-Length that
 *     is not all digits, overflows, or appears with differing values;
 *     Content-Length together with Transfer-Encoding; Transfer-Encoding in
 *     an HTTP/1.0 request or "chunked" that is not the last coding;
 *   - 414: a request target longer than max_url_bytes (decided as soon as
 *     the request line cannot fit, before it ends);
 *   - 431: a header block (after the request line, up to and including the
 *     empty line) longer than max_header_bytes (decided as soon as it
 *     cannot fit);
 *   - 413: Content-Length over max_body_bytes;
 *   - 501: a transfer coding other than chunked;
 *   - 505: a well-formed version other than HTTP/1.0 and HTTP/1.1.
 *
 * Chunked bodies (http_chunked_decode): chunk sizes in hex with optional
 * extensions (ignored), data, the last chunk and optional trailer fields
 * (checked for form and size, then dropped). The decoded body is appended to
 * a strbuf; a body that would exceed max_body_bytes is 413 before its bytes
 * are stored, a malformed chunk 400, trailers over max_header_bytes 431.
 */
#ifndef HTTP_HTTP_PARSE_H
#define HTTP_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"

typedef enum {
    HTTP_PARSE_DONE,  /* a complete head / body */
    HTTP_PARSE_MORE,  /* more bytes needed; nothing was consumed or kept */
    HTTP_PARSE_ERROR, /* malformed or over a limit: see http_parse_error */
} http_parse_rc;

typedef struct {
    int status;        /* the HTTP status to answer: 400, 413, 414, 431, 501, 505 */
    const char *code;  /* machine-readable code for the error body */
    char message[200]; /* what was wrong, for a user */
} http_parse_error;

typedef struct {
    size_t max_url_bytes;    /* request target */
    size_t max_header_bytes; /* header block (and chunked trailers) */
    size_t max_body_bytes;   /* decoded body */
} http_limits;

typedef struct {
    const char *name;  /* as received; compare case-insensitively */
    const char *value; /* without leading and trailing white space */
} http_field;

typedef enum {
    HTTP_BODY_NONE,
    HTTP_BODY_LENGTH,  /* content_length bytes follow */
    HTTP_BODY_CHUNKED, /* chunked transfer coding follows */
} http_body_kind;

/* A parsed head. Every string points into `raw` (one allocation owned by
 * the head; http_head_free frees it). */
typedef struct {
    char *raw;
    const char *method;
    const char *target; /* as received */
    const char *path;   /* target without query; "/..." or "*" */
    const char *query;  /* after '?', or NULL */
    int minor;          /* HTTP/1.<minor>: 0 or 1 */
    http_field *fields;
    size_t n_fields;
    http_body_kind body;
    uint64_t content_length; /* HTTP_BODY_LENGTH */
    int keep_alive;          /* per version and Connection */
    int expect_continue;     /* Expect: 100-continue */
} http_head;

/* Parse the head at the start of buf[0..len). DONE: *out filled (free with
 * http_head_free), *consumed = bytes of the head including the empty line.
 * MORE: incomplete and within the limits. ERROR: *err filled. */
http_parse_rc http_parse_head(const char *buf, size_t len, const http_limits *lim, http_head *out,
                              size_t *consumed, http_parse_error *err);
void http_head_free(http_head *h);
/* Value of the first field called name (case-insensitive), or NULL. */
const char *http_head_field(const http_head *h, const char *name);

/* State of one chunked body; zero it (or http_chunked_init) per body. */
typedef struct {
    int state;
    uint64_t remaining; /* data bytes left in the current chunk */
    size_t line_bytes;  /* bytes of the current size or trailer line */
    size_t trailer_bytes;
} http_chunked;

void http_chunked_init(http_chunked *c);
/* Decode from in[0..len), appending data to body. *consumed: bytes used
 * (always, also on MORE: the caller drops them). DONE: the body ended
 * (bytes after it are not consumed). ERROR: *err filled; body->oom is
 * reported as 500. */
http_parse_rc http_chunked_decode(http_chunked *c, const char *in, size_t len,
                                  const http_limits *lim, strbuf *body, size_t *consumed,
                                  http_parse_error *err);

#endif
