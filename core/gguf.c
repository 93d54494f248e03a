/*
 * gguf.c - GGUF parsing and validation.
 *
 * The whole header (metadata and tensor infos) is parsed once at open time
 * through a bounds-checked cursor; afterwards every accessor works on
 * validated records. Nothing read from the file is trusted: counts are
 * bounded by the bytes that remain, sizes are checked for overflow, tensor
 * data must lie inside the file.
 */
#include "core/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/quant.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 4

typedef struct {
    char *key;
    gguf_type type;
    gguf_type arr_type; /* for arrays */
    uint64_t arr_len;
    const uint8_t *val; /* scalar value or first array element */
    gguf_str *strs;     /* string arrays: validated (ptr, len) of each element */
} kv_rec;

struct gguf_file {
    const uint8_t *base;
    size_t size;
    int mapped;
    uint32_t version;
    uint32_t alignment;
    int64_t n_kv;
    kv_rec *kvs;
    int64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t data_offset;
};

typedef struct {
    const uint8_t *base;
    size_t size, pos;
    char *err;
    size_t errlen;
} cursor;

static int fail(cursor *c, const char *fmt, ...) {
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return GGUF_EFORMAT;
}

static size_t remaining(const cursor *c) { return c->size - c->pos; }

static int rd(cursor *c, void *dst, size_t n, const char *what) {
    if (remaining(c) < n)
        return fail(c, "truncated file: reading %s at offset %zu needs %zu bytes, file size %zu",
                    what, c->pos, n, c->size);
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_str(cursor *c, gguf_str *s, const char *what) {
    uint64_t len = 0;
    if (rd(c, &len, 8, what)) return GGUF_EFORMAT;
    if (len > remaining(c))
        return fail(c,
                    "%s: string length %llu at offset %zu exceeds the %zu bytes left in the file",
                    what, (unsigned long long)len, c->pos - 8, remaining(c));
    s->ptr = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += len;
    return 0;
}

static size_t type_size(gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

static const char *TYPE_NAMES[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};

const char *gguf_type_name(gguf_type t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? TYPE_NAMES[t] : "invalid";
}

static char *dup_str(gguf_str s) {
    char *p = malloc(s.len + 1);
    if (!p) return NULL;
    memcpy(p, s.ptr, s.len);
    p[s.len] = 0;
    return p;
}

/* Skip (and validate) a value of type t; used for nested arrays. */
static int skip_value(cursor *c, gguf_type t, int depth, const char *key) {
    if (depth > GGUF_MAX_ARRAY_DEPTH) return fail(c, "key '%s': arrays nested too deeply", key);
    size_t ts = type_size(t);
    if (ts) {
        if (remaining(c) < ts) return fail(c, "truncated file: value of key '%s'", key);
        c->pos += ts;
        return 0;
    }
    if (t == GGUF_TYPE_STRING) {
        gguf_str s;
        return rd_str(c, &s, key);
    }
    if (t == GGUF_TYPE_ARRAY) {
        uint32_t et = 0;
        uint64_t n = 0;
        if (rd(c, &et, 4, key) || rd(c, &n, 8, key)) return GGUF_EFORMAT;
        if (et >= GGUF_TYPE_COUNT)
            return fail(c, "key '%s': invalid array element type %u", key, et);
        size_t es = type_size((gguf_type)et);
        if (es) {
            if (n > remaining(c) / es)
                return fail(c, "key '%s': array of %llu elements exceeds the file", key,
                            (unsigned long long)n);
            c->pos += n * es;
            return 0;
        }
        for (uint64_t i = 0; i < n; i++)
            if (skip_value(c, (gguf_type)et, depth + 1, key)) return GGUF_EFORMAT;
        return 0;
    }
    return fail(c, "key '%s': invalid value type %u", key, (unsigned)t);
}

static int parse_kv(cursor *c, kv_rec *kv, int64_t idx) {
    gguf_str key;
    char what[64];
    snprintf(what, sizeof what, "key of metadata entry %lld", (long long)idx);
    if (rd_str(c, &key, what)) return GGUF_EFORMAT;
    if (key.len == 0) return fail(c, "metadata entry %lld has an empty key", (long long)idx);
    kv->key = dup_str(key);
    if (!kv->key) return GGUF_ENOMEM;
    uint32_t t = 0;
    if (rd(c, &t, 4, kv->key)) return GGUF_EFORMAT;
    if (t >= GGUF_TYPE_COUNT) return fail(c, "key '%s': invalid value type %u", kv->key, t);
    kv->type = (gguf_type)t;
    if (kv->type != GGUF_TYPE_ARRAY) {
        kv->val = c->base + c->pos;
        return skip_value(c, kv->type, 0, kv->key);
    }
    uint32_t et = 0;
    uint64_t n = 0;
    if (rd(c, &et, 4, kv->key) || rd(c, &n, 8, kv->key)) return GGUF_EFORMAT;
    if (et >= GGUF_TYPE_COUNT)
        return fail(c, "key '%s': invalid array element type %u", kv->key, et);
    kv->arr_type = (gguf_type)et;
    kv->arr_len = n;
    kv->val = c->base + c->pos;
    size_t es = type_size(kv->arr_type);
    if (es) {
        if (n > remaining(c) / es)
            return fail(
                c, "key '%s': array of %llu x %zu bytes exceeds the %zu bytes left in the file",
                kv->key, (unsigned long long)n, es, remaining(c));
        c->pos += n * es;
        return 0;
    }
    if (kv->arr_type == GGUF_TYPE_STRING) {
        if (n > remaining(c) / 8)
            return fail(c, "key '%s': array of %llu strings exceeds the file", kv->key,
                        (unsigned long long)n);
        kv->strs = malloc((n ? n : 1) * sizeof *kv->strs);
        if (!kv->strs) return GGUF_ENOMEM;
        for (uint64_t i = 0; i < n; i++)
            if (rd_str(c, &kv->strs[i], kv->key)) return GGUF_EFORMAT;
        return 0;
    }
    for (uint64_t i = 0; i < n; i++) /* nested arrays: validated, not exposed */
        if (skip_value(c, kv->arr_type, 1, kv->key)) return GGUF_EFORMAT;
    return 0;
}

static int parse_tensor(cursor *c, gguf_tensor *t, int64_t idx) {
    gguf_str name;
    char what[64];
    snprintf(what, sizeof what, "name of tensor %lld", (long long)idx);
    if (rd_str(c, &name, what)) return GGUF_EFORMAT;
    t->name = dup_str(name);
    if (!t->name) return GGUF_ENOMEM;
    if (rd(c, &t->n_dims, 4, t->name)) return GGUF_EFORMAT;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return fail(c, "tensor '%s': %u dimensions (must be 1..%d)", t->name, t->n_dims,
                    GGUF_MAX_DIMS);
    uint64_t n = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (rd(c, &t->ne[d], 8, t->name)) return GGUF_EFORMAT;
        if (t->ne[d] > (1ull << 40) || (t->ne[d] && n > (UINT64_MAX >> 1) / t->ne[d]))
            return fail(c, "tensor '%s': dimension %u = %llu is out of range", t->name, d,
                        (unsigned long long)t->ne[d]);
        n *= t->ne[d];
    }
    t->n_elements = n;
    if (rd(c, &t->type, 4, t->name)) return GGUF_EFORMAT;
    int blck = quant_block_elems(t->type);
    if (blck <= 0) return fail(c, "tensor '%s': unknown tensor type %u", t->name, t->type);
    if (t->ne[0] % (uint64_t)blck)
        return fail(c, "tensor '%s': row length %llu is not a multiple of the %s block size %d",
                    t->name, (unsigned long long)t->ne[0], quant_name(t->type), blck);
    uint64_t bb = quant_block_bytes(t->type);
    if (n / (uint64_t)blck > UINT64_MAX / bb)
        return fail(c, "tensor '%s': size overflows", t->name);
    t->nbytes = n / (uint64_t)blck * bb;
    if (rd(c, &t->offset, 8, t->name)) return GGUF_EFORMAT;
    return 0;
}

static int parse(gguf_file *f, char *err, size_t errlen) {
    cursor c = {f->base, f->size, 0, err, errlen};
    char magic[4];
    if (rd(&c, magic, 4, "magic")) return GGUF_EFORMAT;
    if (memcmp(magic, "GGUF", 4) != 0)
        return fail(&c, "not a GGUF file (magic %02x %02x %02x %02x, expected 'GGUF')",
                    (uint8_t)magic[0], (uint8_t)magic[1], (uint8_t)magic[2], (uint8_t)magic[3]);
    if (rd(&c, &f->version, 4, "version")) return GGUF_EFORMAT;
    if (f->version == 1) return fail(&c, "GGUF version 1 is not supported (only 2 and 3)");
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0 && f->version)
            return fail(&c, "big-endian GGUF files are not supported");
        return fail(&c, "unsupported GGUF version %u (only 2 and 3)", f->version);
    }
    uint64_t nt = 0, nkv = 0;
    if (rd(&c, &nt, 8, "tensor count") || rd(&c, &nkv, 8, "metadata count")) return GGUF_EFORMAT;
    /* every kv needs >= 12 bytes (key length + type), every tensor >= 28 */
    if (nkv > remaining(&c) / 12)
        return fail(&c, "metadata count %llu is impossible for a file of %zu bytes",
                    (unsigned long long)nkv, c.size);
    if (nt > remaining(&c) / 28)
        return fail(&c, "tensor count %llu is impossible for a file of %zu bytes",
                    (unsigned long long)nt, c.size);
    f->kvs = calloc(nkv ? nkv : 1, sizeof *f->kvs);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    if (!f->kvs || !f->tensors) return GGUF_ENOMEM;
    for (uint64_t i = 0; i < nkv; i++) {
        f->n_kv = (int64_t)i + 1;
        int rc = parse_kv(&c, &f->kvs[i], (int64_t)i);
        if (rc) return rc;
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->kvs[j].key, f->kvs[i].key) == 0)
                return fail(&c, "duplicate metadata key '%s'", f->kvs[i].key);
    }
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        if (f->kvs[ai].type != GGUF_TYPE_UINT32)
            return fail(&c, "general.alignment has type %s, expected u32",
                        gguf_type_name(f->kvs[ai].type));
        memcpy(&f->alignment, f->kvs[ai].val, 4);
        if (f->alignment == 0 || (f->alignment & (f->alignment - 1)))
            return fail(&c, "general.alignment %u is not a power of two", f->alignment);
    }
    for (uint64_t i = 0; i < nt; i++) {
        f->n_tensors = (int64_t)i + 1;
        int rc = parse_tensor(&c, &f->tensors[i], (int64_t)i);
        if (rc) return rc;
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->tensors[j].name, f->tensors[i].name) == 0)
                return fail(&c, "duplicate tensor name '%s'", f->tensors[i].name);
    }
    uint64_t data = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (nt > 0 && data > c.size)
        return fail(&c, "truncated file: data section would start at %llu, file size %zu",
                    (unsigned long long)data, c.size);
    f->data_offset = data;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment)
            return fail(&c, "tensor '%s': offset %llu is not a multiple of the alignment %u",
                        t->name, (unsigned long long)t->offset, f->alignment);
        if (t->offset > c.size - data || t->nbytes > c.size - data - t->offset)
            return fail(&c,
                        "tensor '%s': data [offset %llu, %llu bytes] extends past the end of the "
                        "file (data section %llu bytes)",
                        t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                        (unsigned long long)(c.size - data));
        t->data = f->base + data + t->offset;
    }
    return 0;
}

static int finish_open(gguf_file *f, gguf_file **out, char *err, size_t errlen) {
    int rc = parse(f, err, errlen);
    if (rc) {
        if (rc == GGUF_ENOMEM && err && errlen) snprintf(err, errlen, "out of memory reading GGUF");
        gguf_close(f);
        *out = NULL;
        return rc;
    }
    *out = f;
    return 0;
}

int gguf_open_memory(const void *data, size_t size, gguf_file **out, char *err, size_t errlen) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return GGUF_ENOMEM;
    f->base = data;
    f->size = size;
    return finish_open(f, out, err, errlen);
}

int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return GGUF_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a regular file", path);
        close(fd);
        return GGUF_EIO;
    }
    if (st.st_size == 0) {
        snprintf(err, errlen, "'%s' is empty", path);
        close(fd);
        return GGUF_EFORMAT;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot map '%s': %s", path, strerror(errno));
        return GGUF_EIO;
    }
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(p, (size_t)st.st_size);
        return GGUF_ENOMEM;
    }
    f->base = p;
    f->size = (size_t)st.st_size;
    f->mapped = 1;
    char inner[400] = "";
    int rc = finish_open(f, out, inner, sizeof inner);
    if (rc) snprintf(err, errlen, "%s: %s", path, inner);
    return rc;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_kv; i++) {
        free(f->kvs[i].key);
        free(f->kvs[i].strs);
    }
    for (int64_t i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    if (f->mapped) munmap((void *)f->base, f->size);
    free(f);
}

uint32_t gguf_version(const gguf_file *f) { return f->version; }
uint32_t gguf_alignment(const gguf_file *f) { return f->alignment; }
uint64_t gguf_file_size(const gguf_file *f) { return f->size; }
int64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }

int64_t gguf_find_key(const gguf_file *f, const char *key) {
    for (int64_t i = 0; i < f->n_kv; i++)
        if (f->kvs[i].key && strcmp(f->kvs[i].key, key) == 0) return i;
    return -1;
}

const char *gguf_key(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_kv ? f->kvs[i].key : NULL;
}
gguf_type gguf_kv_type(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_kv ? f->kvs[i].type : GGUF_TYPE_COUNT;
}

/* Read an integer value of type t at p as int64 (u64 beyond INT64_MAX -> ERANGE). */
static int read_int(gguf_type t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case GGUF_TYPE_UINT8: *out = *p; return 0;
    case GGUF_TYPE_INT8: *out = (int8_t)*p; return 0;
    case GGUF_TYPE_BOOL: *out = *p != 0; return 0;
    case GGUF_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *out = v;
        return 0;
    }
    case GGUF_TYPE_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        *out = v;
        return 0;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        *out = v;
        return 0;
    }
    case GGUF_TYPE_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        *out = v;
        return 0;
    }
    case GGUF_TYPE_INT64: {
        int64_t v;
        memcpy(&v, p, 8);
        *out = v;
        return 0;
    }
    case GGUF_TYPE_UINT64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > (uint64_t)INT64_MAX) return GGUF_ERANGE;
        *out = (int64_t)v;
        return 0;
    }
    default: return GGUF_ETYPE;
    }
}

static const kv_rec *find(const gguf_file *f, const char *key) {
    int64_t i = gguf_find_key(f, key);
    return i < 0 ? NULL : &f->kvs[i];
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const kv_rec *kv = find(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (kv->type == GGUF_TYPE_BOOL || kv->type == GGUF_TYPE_FLOAT32 ||
        kv->type == GGUF_TYPE_FLOAT64)
        return GGUF_ETYPE;
    return read_int(kv->type, kv->val, out);
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    int64_t v;
    int rc = gguf_get_i64(f, key, &v);
    if (rc) return rc;
    if (v < 0 || v > (int64_t)UINT32_MAX) return GGUF_ERANGE;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const kv_rec *kv = find(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->val, 4);
        return 0;
    }
    if (kv->type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
        return 0;
    }
    return GGUF_ETYPE;
}

int gguf_get_bool(const gguf_file *f, const char *key, int *out) {
    const kv_rec *kv = find(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (kv->type != GGUF_TYPE_BOOL) return GGUF_ETYPE;
    *out = *kv->val != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const kv_rec *kv = find(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (kv->type != GGUF_TYPE_STRING) return GGUF_ETYPE;
    uint64_t len = 0;
    memcpy(&len, kv->val, 8);
    out->ptr = (const char *)kv->val + 8;
    out->len = len;
    return 0;
}

gguf_type gguf_arr_type(const gguf_file *f, int64_t i) {
    if (i < 0 || i >= f->n_kv || f->kvs[i].type != GGUF_TYPE_ARRAY) return GGUF_TYPE_COUNT;
    return f->kvs[i].arr_type;
}
uint64_t gguf_arr_len(const gguf_file *f, int64_t i) {
    if (i < 0 || i >= f->n_kv || f->kvs[i].type != GGUF_TYPE_ARRAY) return 0;
    return f->kvs[i].arr_len;
}
const void *gguf_arr_data(const gguf_file *f, int64_t i) {
    if (i < 0 || i >= f->n_kv || f->kvs[i].type != GGUF_TYPE_ARRAY) return NULL;
    if (!type_size(f->kvs[i].arr_type)) return NULL;
    return f->kvs[i].val;
}

int gguf_arr_int(const gguf_file *f, int64_t i, uint64_t j, int64_t *out) {
    if (i < 0 || i >= f->n_kv) return GGUF_ENOTFOUND;
    const kv_rec *kv = &f->kvs[i];
    if (kv->type != GGUF_TYPE_ARRAY) return GGUF_ETYPE;
    if (j >= kv->arr_len) return GGUF_ERANGE;
    size_t es = type_size(kv->arr_type);
    if (!es || kv->arr_type == GGUF_TYPE_FLOAT32 || kv->arr_type == GGUF_TYPE_FLOAT64)
        return GGUF_ETYPE;
    return read_int(kv->arr_type, kv->val + j * es, out);
}

int gguf_arr_f32(const gguf_file *f, int64_t i, uint64_t j, float *out) {
    if (i < 0 || i >= f->n_kv) return GGUF_ENOTFOUND;
    const kv_rec *kv = &f->kvs[i];
    if (kv->type != GGUF_TYPE_ARRAY) return GGUF_ETYPE;
    if (j >= kv->arr_len) return GGUF_ERANGE;
    if (kv->arr_type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->val + j * 4, 4);
        return 0;
    }
    if (kv->arr_type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->val + j * 8, 8);
        *out = (float)d;
        return 0;
    }
    return GGUF_ETYPE;
}

int gguf_arr_str(const gguf_file *f, int64_t i, uint64_t j, gguf_str *out) {
    if (i < 0 || i >= f->n_kv) return GGUF_ENOTFOUND;
    const kv_rec *kv = &f->kvs[i];
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING) return GGUF_ETYPE;
    if (j >= kv->arr_len) return GGUF_ERANGE;
    *out = kv->strs[j];
    return 0;
}

int64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }
const gguf_tensor *gguf_get_tensor(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}
