/* test_strbuf.c - the growable string of base/strbuf.h. */
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"
#include "tests/common/test_util.h"

int main(void) {
    strbuf b = {0};
    CHECK(b.p == NULL && b.len == 0);
    strbuf_puts(&b, "");
    CHECK(b.p != NULL && b.len == 0 && b.p[0] == 0);
    strbuf_puts(&b, "hello");
    strbuf_putn(&b, ", world!!", 7);
    CHECKF(b.len == 12 && strcmp(b.p, "hello, world") == 0, "'%s' (%zu)", b.p, b.len);
    /* embedded NULs are bytes like any other */
    strbuf_putn(&b, "a\0b", 3);
    CHECK(b.len == 15 && memcmp(b.p + 12, "a\0b", 3) == 0 && b.p[15] == 0);
    /* growth across many doublings keeps every byte */
    char chunk[1000];
    for (int i = 0; i < 1000; i++) chunk[i] = (char)('a' + i % 26);
    for (int i = 0; i < 300; i++) strbuf_putn(&b, chunk, sizeof chunk);
    CHECK(b.len == 15 + 300000 && b.cap > b.len && b.p[b.len] == 0);
    int ok = 1;
    for (size_t i = 0; i < 300000; i++) ok &= b.p[15 + i] == (char)('a' + (i % 1000) % 26);
    CHECK(ok);
    CHECK(!b.oom);
    /* after a failed allocation the buffer keeps its contents and ignores
     * further appends */
    b.oom = 1;
    size_t len = b.len;
    strbuf_puts(&b, "more");
    CHECK(b.len == len && b.oom);
    strbuf_free(&b);
    CHECK(b.p == NULL && b.len == 0);
    /* printf: from empty, and across growth */
    strbuf_printf(&b, "%d-%s", 12, "ab");
    CHECKF(b.len == 5 && strcmp(b.p, "12-ab") == 0, "'%s'", b.p);
    for (int i = 0; i < 1000; i++) strbuf_printf(&b, "%04d", i);
    CHECK(b.len == 5 + 4000 && memcmp(b.p + 5 + 4 * 999, "0999", 4) == 0 && b.p[b.len] == 0);
    strbuf_free(&b);
    CHECK(b.p == NULL && b.len == 0 && b.cap == 0 && !b.oom);
    return tu_finish("test_strbuf");
}
