/*
 * fuzz_gguf.c - the GGUF reader (core/gguf.h) on arbitrary bytes.
 *
 * The input is a whole file, opened with gguf_open_memory. When the reader
 * accepts it, everything is read back through the public getters, as the
 * model loader and the tokenizer do: every key with every scalar getter,
 * every element of every array, every tensor and the first row of its data
 * dequantized. The reader promises that an accepted file is fully
 * validated, so the checks are its contract: names find their own entry,
 * strings and tensor data lie inside the buffer, sizes agree with the
 * shape, and a getter asked for the wrong type answers an error code.
 */
#include <string.h>

#include "core/gguf.h"
#include "core/quant.h"
#include "tests/fuzz/fuzz.h"

typedef struct {
    const uint8_t *base;
    size_t size;
} span;

static int inside(const span *s, const void *p, uint64_t n) {
    const uint8_t *q = p;
    return q >= s->base && q <= s->base + s->size && n <= (uint64_t)(s->base + s->size - q);
}

/* Every scalar getter on one key: each either reads or refuses by type. */
static void read_scalars(const gguf_file *f, const span *in, const char *key, gguf_type type) {
    uint32_t u32;
    int64_t i64;
    float f32;
    int b;
    gguf_str s;
    int rc = gguf_get_u32(f, key, &u32);
    FUZZ_CHECK(rc == GGUF_OK || rc == GGUF_ETYPE || rc == GGUF_ERANGE);
    rc = gguf_get_i64(f, key, &i64);
    FUZZ_CHECK(rc == GGUF_OK || rc == GGUF_ETYPE || rc == GGUF_ERANGE);
    rc = gguf_get_f32(f, key, &f32);
    FUZZ_CHECK(rc ==
               (type == GGUF_TYPE_FLOAT32 || type == GGUF_TYPE_FLOAT64 ? GGUF_OK : GGUF_ETYPE));
    rc = gguf_get_bool(f, key, &b);
    FUZZ_CHECK(rc == (type == GGUF_TYPE_BOOL ? GGUF_OK : GGUF_ETYPE));
    rc = gguf_get_str(f, key, &s);
    FUZZ_CHECK(rc == (type == GGUF_TYPE_STRING ? GGUF_OK : GGUF_ETYPE));
    if (rc == GGUF_OK) FUZZ_CHECK(inside(in, s.ptr, s.len));
}

/* Every element of array i with every element getter. */
static void read_array(const gguf_file *f, const span *in, int64_t i) {
    gguf_type et = gguf_arr_type(f, i);
    uint64_t n = gguf_arr_len(f, i);
    FUZZ_CHECK(et < GGUF_TYPE_COUNT);
    const void *data = gguf_arr_data(f, i);
    if (data) FUZZ_CHECK(inside(in, data, n)); /* at least one byte per element */
    for (uint64_t j = 0; j <= n; j++) {
        int64_t v;
        float x;
        gguf_str s;
        int ri = gguf_arr_int(f, i, j, &v), rf = gguf_arr_f32(f, i, j, &x);
        int rs = gguf_arr_str(f, i, j, &s);
        if (j == n) { /* one past the end */
            FUZZ_CHECK(ri != GGUF_OK && rf != GGUF_OK && rs != GGUF_OK);
            break;
        }
        FUZZ_CHECK(rs == (et == GGUF_TYPE_STRING ? GGUF_OK : GGUF_ETYPE));
        if (rs == GGUF_OK) FUZZ_CHECK(inside(in, s.ptr, s.len));
        FUZZ_CHECK(ri == GGUF_OK || ri == GGUF_ETYPE || ri == GGUF_ERANGE);
        FUZZ_CHECK(rf == GGUF_OK || rf == GGUF_ETYPE);
    }
}

static void read_kvs(const gguf_file *f, const span *in) {
    int64_t n = gguf_n_kv(f);
    FUZZ_CHECK(n >= 0);
    for (int64_t i = 0; i < n; i++) {
        const char *key = gguf_key(f, i);
        FUZZ_CHECK(key != NULL && gguf_find_key(f, key) == i);
        gguf_type type = gguf_kv_type(f, i);
        FUZZ_CHECK(type < GGUF_TYPE_COUNT && gguf_type_name(type) != NULL);
        read_scalars(f, in, key, type);
        if (type == GGUF_TYPE_ARRAY) read_array(f, in, i);
        else FUZZ_CHECK(gguf_arr_type(f, i) == GGUF_TYPE_COUNT && gguf_arr_len(f, i) == 0);
    }
    FUZZ_CHECK(gguf_key(f, n) == NULL && gguf_kv_type(f, n) == GGUF_TYPE_COUNT);
}

/* Dequantize the tensor's first row, as the model loader would. */
static void read_first_row(const gguf_tensor *t) {
    enum { MAX_ROW = 4096 };
    float row[MAX_ROW];
    if (t->n_elements == 0 || t->ne[0] > MAX_ROW || !quant_can_dequant(t->type)) return;
    FUZZ_CHECK(quant_row_bytes(t->type, (int64_t)t->ne[0]) <= t->nbytes);
    quant_dequant_row(t->type, t->data, row, (int64_t)t->ne[0]);
}

static void read_tensors(const gguf_file *f, const span *in) {
    int64_t n = gguf_n_tensors(f);
    FUZZ_CHECK(n >= 0);
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_get_tensor(f, i);
        FUZZ_CHECK(t != NULL && t->name != NULL && gguf_find_tensor(f, t->name) == t);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        uint64_t elems = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            if ((uint32_t)d >= t->n_dims) FUZZ_CHECK(t->ne[d] == 1);
            elems *= t->ne[d];
        }
        FUZZ_CHECK(elems == t->n_elements);
        int blck = quant_block_elems(t->type);
        FUZZ_CHECK(blck > 0 && t->ne[0] % (uint64_t)blck == 0);
        FUZZ_CHECK(t->nbytes == t->n_elements / (uint64_t)blck * quant_block_bytes(t->type));
        FUZZ_CHECK(inside(in, t->data, t->nbytes));
        FUZZ_CHECK(t->offset % gguf_alignment(f) == 0);
        read_first_row(t);
    }
    FUZZ_CHECK(gguf_get_tensor(f, n) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *f = NULL;
    char err[256];
    int rc = gguf_open_memory(data, size, &f, err, sizeof err);
    if (rc != GGUF_OK) {
        FUZZ_CHECK(f == NULL && rc == GGUF_EFORMAT && memchr(err, 0, sizeof err) && err[0]);
        return 0;
    }
    span in = {data, size};
    FUZZ_CHECK(gguf_version(f) == 2 || gguf_version(f) == 3);
    uint32_t align = gguf_alignment(f);
    FUZZ_CHECK(align != 0 && (align & (align - 1)) == 0);
    FUZZ_CHECK(gguf_file_size(f) == size);
    read_kvs(f, &in);
    read_tensors(f, &in);
    gguf_close(f);
    return 0;
}
