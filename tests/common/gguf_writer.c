/* gguf_writer.c - see gguf_writer.h. A growable byte buffer for the header
 * and KV section, plus a list of tensors laid out at aligned offsets. */
#include "tests/common/gguf_writer.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t n, cap;
} gw_buf;

typedef struct {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[4];
    uint8_t *data;
    size_t nbytes;
} gw_tensor_rec;

struct gguf_writer {
    uint32_t version, alignment;
    uint64_t n_kv;
    gw_buf kv;
    gw_tensor_rec *tensors;
    size_t n_tensors;
};

static void buf_put(gw_buf *b, const void *d, size_t n) {
    if (n == 0) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        assert(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(gw_buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void put_u64(gw_buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void put_str(gw_buf *b, const char *s) {
    put_u64(b, strlen(s));
    buf_put(b, s, strlen(s));
}

gguf_writer *gw_new(uint32_t version) {
    gguf_writer *gw = calloc(1, sizeof *gw);
    assert(gw);
    gw->version = version;
    gw->alignment = 32;
    return gw;
}

void gw_free(gguf_writer *gw) {
    if (!gw) return;
    for (size_t i = 0; i < gw->n_tensors; i++) {
        free(gw->tensors[i].name);
        free(gw->tensors[i].data);
    }
    free(gw->tensors);
    free(gw->kv.p);
    free(gw);
}

static void kv_head(gguf_writer *gw, const char *key, uint32_t type) {
    put_str(&gw->kv, key);
    put_u32(&gw->kv, type);
    gw->n_kv++;
}

#define GW_SCALAR(fn, ctype, tcode)                                                                \
    void fn(gguf_writer *gw, const char *key, ctype v) {                                           \
        kv_head(gw, key, tcode);                                                                   \
        buf_put(&gw->kv, &v, sizeof v);                                                            \
    }
GW_SCALAR(gw_kv_u8, uint8_t, 0)
GW_SCALAR(gw_kv_i8, int8_t, 1)
GW_SCALAR(gw_kv_u16, uint16_t, 2)
GW_SCALAR(gw_kv_i16, int16_t, 3)
GW_SCALAR(gw_kv_u32, uint32_t, 4)
GW_SCALAR(gw_kv_i32, int32_t, 5)
GW_SCALAR(gw_kv_f32, float, 6)
GW_SCALAR(gw_kv_u64, uint64_t, 10)
GW_SCALAR(gw_kv_i64, int64_t, 11)
GW_SCALAR(gw_kv_f64, double, 12)

void gw_kv_bool(gguf_writer *gw, const char *key, int v) {
    uint8_t b = v ? 1 : 0;
    kv_head(gw, key, 7);
    buf_put(&gw->kv, &b, 1);
}

void gw_set_alignment(gguf_writer *gw, uint32_t alignment) {
    gw->alignment = alignment;
    gw_kv_u32(gw, "general.alignment", alignment);
}

void gw_kv_str(gguf_writer *gw, const char *key, const char *s) {
    kv_head(gw, key, 8);
    put_str(&gw->kv, s);
}

void gw_kv_arr_str(gguf_writer *gw, const char *key, const char *const *strs, size_t n) {
    kv_head(gw, key, 9);
    put_u32(&gw->kv, 8);
    put_u64(&gw->kv, n);
    for (size_t i = 0; i < n; i++) put_str(&gw->kv, strs[i]);
}

void gw_kv_arr_i32(gguf_writer *gw, const char *key, const int32_t *v, size_t n) {
    kv_head(gw, key, 9);
    put_u32(&gw->kv, 5);
    put_u64(&gw->kv, n);
    buf_put(&gw->kv, v, n * 4);
}

void gw_kv_arr_f32(gguf_writer *gw, const char *key, const float *v, size_t n) {
    kv_head(gw, key, 9);
    put_u32(&gw->kv, 6);
    put_u64(&gw->kv, n);
    buf_put(&gw->kv, v, n * 4);
}

void gw_tensor(gguf_writer *gw, const char *name, uint32_t type, uint32_t n_dims,
               const uint64_t *ne, const void *data, size_t nbytes) {
    gw->tensors = realloc(gw->tensors, (gw->n_tensors + 1) * sizeof *gw->tensors);
    assert(gw->tensors);
    gw_tensor_rec *t = &gw->tensors[gw->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t i = 0; i < 4; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    t->data = malloc(nbytes ? nbytes : 1);
    assert(t->data);
    if (nbytes) memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

void gw_to_memory(gguf_writer *gw, uint8_t **out, size_t *len) {
    gw_buf b = {0};
    buf_put(&b, "GGUF", 4);
    put_u32(&b, gw->version);
    put_u64(&b, gw->n_tensors);
    put_u64(&b, gw->n_kv);
    buf_put(&b, gw->kv.p, gw->kv.n);
    size_t off = 0;
    for (size_t i = 0; i < gw->n_tensors; i++) {
        gw_tensor_rec *t = &gw->tensors[i];
        put_str(&b, t->name);
        put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&b, t->ne[d]);
        put_u32(&b, t->type);
        off = align_up(off, gw->alignment);
        put_u64(&b, off);
        off += t->nbytes;
    }
    static const uint8_t zero;
    while (b.n % gw->alignment) buf_put(&b, &zero, 1);
    size_t base = b.n;
    for (size_t i = 0; i < gw->n_tensors; i++) {
        while ((b.n - base) % gw->alignment) buf_put(&b, &zero, 1);
        buf_put(&b, gw->tensors[i].data, gw->tensors[i].nbytes);
    }
    *out = b.p;
    *len = b.n;
}

int gw_write_file(gguf_writer *gw, const char *path) {
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(buf);
        return -1;
    }
    size_t w = fwrite(buf, 1, len, fp);
    int rc = fclose(fp);
    free(buf);
    return (w == len && rc == 0) ? 0 : -1;
}
