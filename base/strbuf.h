/*
 * strbuf.h - a growable, always NUL-terminated byte string.
 *
 * Contract: a zeroed strbuf ({0}) is empty and ready. Appends grow the
 * buffer geometrically; when an allocation fails the buffer keeps what it
 * had, sets `oom`, and ignores every later append, so callers check `oom`
 * once at the end instead of after every call. `p` is NULL until the first
 * successful append; the caller frees it with free() (strbuf_free does).
 */
#ifndef STRBUF_H
#define STRBUF_H

#include <stddef.h>

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

void strbuf_putn(strbuf *b, const char *s, size_t n);
void strbuf_puts(strbuf *b, const char *s);
/* Append printf-formatted text. */
void strbuf_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_free(strbuf *b);

#endif
