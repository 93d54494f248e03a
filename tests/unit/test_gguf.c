/*
 * test_gguf.c - the GGUF reader: every value type round-trips through a file
 * the test writes itself (v2 and v3, custom alignment); truncated and
 * byte-flipped files fail with a message instead of crashing; the real
 * model's header reads as expected when present.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/gguf.h"
#include "core/quant.h"
#include "tests/common/gguf_writer.h"
#include "tests/common/test_util.h"

static int str_eq(gguf_str s, const char *c) {
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

static void build_sample(gguf_writer *gw) {
    gw_kv_u8(gw, "t.u8", 200);
    gw_kv_i8(gw, "t.i8", -100);
    gw_kv_u16(gw, "t.u16", 60000);
    gw_kv_i16(gw, "t.i16", -30000);
    gw_kv_u32(gw, "t.u32", 4000000000u);
    gw_kv_i32(gw, "t.i32", -2000000000);
    gw_kv_f32(gw, "t.f32", 1.5f);
    gw_kv_bool(gw, "t.bool", 1);
    gw_kv_str(gw, "t.str", "héllo");
    gw_kv_u64(gw, "t.u64", 1ull << 40);
    gw_kv_i64(gw, "t.i64", -(1ll << 40));
    gw_kv_f64(gw, "t.f64", 0.25);
    const char *strs[] = {"a", "", "ccc"};
    gw_kv_arr_str(gw, "t.astr", strs, 3);
    int32_t ints[] = {1, -2, 3};
    gw_kv_arr_i32(gw, "t.ai32", ints, 3);
    float fl[] = {0.5f, -1.0f};
    gw_kv_arr_f32(gw, "t.af32", fl, 2);
    float t0[64];
    for (int i = 0; i < 64; i++) t0[i] = (float)i;
    uint64_t ne0[2] = {32, 2};
    gw_tensor(gw, "w.f32", QT_F32, 2, ne0, t0, sizeof t0);
    block_q8_0 q[2];
    quant_quantize_row_q8_0(t0, q, 64);
    uint64_t ne1[1] = {64};
    gw_tensor(gw, "w.q8", QT_Q8_0, 1, ne1, q, sizeof q);
}

static void check_sample(gguf_file *f, uint32_t version, uint32_t align) {
    CHECK(gguf_version(f) == version);
    CHECK(gguf_alignment(f) == align);
    int64_t v;
    uint32_t u;
    float x;
    int b;
    gguf_str s;
    CHECK(gguf_get_i64(f, "t.u8", &v) == 0 && v == 200);
    CHECK(gguf_get_i64(f, "t.i8", &v) == 0 && v == -100);
    CHECK(gguf_get_i64(f, "t.u16", &v) == 0 && v == 60000);
    CHECK(gguf_get_i64(f, "t.i16", &v) == 0 && v == -30000);
    CHECK(gguf_get_u32(f, "t.u32", &u) == 0 && u == 4000000000u);
    CHECK(gguf_get_i64(f, "t.i32", &v) == 0 && v == -2000000000);
    CHECK(gguf_get_u32(f, "t.i32", &u) == GGUF_ERANGE);
    CHECK(gguf_get_f32(f, "t.f32", &x) == 0 && x == 1.5f);
    CHECK(gguf_get_f32(f, "t.f64", &x) == 0 && x == 0.25f);
    CHECK(gguf_get_bool(f, "t.bool", &b) == 0 && b == 1);
    CHECK(gguf_get_str(f, "t.str", &s) == 0 && str_eq(s, "héllo"));
    CHECK(gguf_get_i64(f, "t.u64", &v) == 0 && v == (1ll << 40));
    CHECK(gguf_get_u32(f, "t.u64", &u) == GGUF_ERANGE);
    CHECK(gguf_get_i64(f, "t.i64", &v) == 0 && v == -(1ll << 40));
    CHECK(gguf_get_str(f, "t.u8", &s) == GGUF_ETYPE);
    CHECK(gguf_get_u32(f, "missing", &u) == GGUF_ENOTFOUND);
    int64_t ia = gguf_find_key(f, "t.astr");
    CHECK(ia >= 0 && gguf_arr_type(f, ia) == GGUF_TYPE_STRING && gguf_arr_len(f, ia) == 3);
    CHECK(gguf_arr_str(f, ia, 0, &s) == 0 && str_eq(s, "a"));
    CHECK(gguf_arr_str(f, ia, 1, &s) == 0 && s.len == 0);
    CHECK(gguf_arr_str(f, ia, 2, &s) == 0 && str_eq(s, "ccc"));
    CHECK(gguf_arr_str(f, ia, 3, &s) == GGUF_ERANGE);
    int64_t ii = gguf_find_key(f, "t.ai32");
    CHECK(gguf_arr_int(f, ii, 1, &v) == 0 && v == -2);
    CHECK(gguf_arr_f32(f, gguf_find_key(f, "t.af32"), 1, &x) == 0 && x == -1.0f);
    CHECK(gguf_n_tensors(f) == 2);
    const gguf_tensor *t = gguf_find_tensor(f, "w.f32");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 32 && t->ne[1] == 2 && t->nbytes == 256);
    if (t) {
        float e;
        memcpy(&e, (const char *)t->data + 4 * 37, 4);
        CHECK(e == 37.0f);
        CHECK(((uintptr_t)t->data - (uintptr_t)gguf_get_tensor(f, 0)->data) % align == 0);
    }
    t = gguf_find_tensor(f, "w.q8");
    CHECK(t && t->type == QT_Q8_0 && t->nbytes == 68);
    if (t)
        CHECK(((const uint8_t *)t->data - (const uint8_t *)gguf_find_tensor(f, "w.f32")->data) %
                  align ==
              0);
    CHECK(gguf_find_tensor(f, "nope") == NULL);
}

static void test_roundtrip(uint32_t version, uint32_t align) {
    gguf_writer *gw = gw_new(version);
    if (align != 32) gw_set_alignment(gw, align);
    build_sample(gw);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    gguf_file *f = NULL;
    char err[256];
    int rc = gguf_open_memory(buf, len, &f, err, sizeof err);
    CHECKF(rc == 0, "v%u align %u: %s", version, align, err);
    if (f) check_sample(f, version, align);
    gguf_close(f);
    /* Every truncation must fail cleanly; an exact-size heap copy lets ASan
     * catch any read past the end. */
    int failures = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *c = malloc(cut ? cut : 1);
        memcpy(c, buf, cut);
        err[0] = 0;
        rc = gguf_open_memory(c, cut, &f, err, sizeof err);
        if (rc == 0) {
            gguf_close(f);
            /* only padding after the last tensor may be cut */
        } else {
            failures++;
            CHECKF(err[0] != 0, "cut at %zu: no message", cut);
        }
        free(c);
    }
    CHECK(failures >= (int)len - 32);
    free(buf);
}

static void test_bad_headers(void) {
    char err[256];
    gguf_file *f;
    CHECK(gguf_open_memory("GGUF", 4, &f, err, sizeof err) != 0 && strstr(err, "truncated"));
    uint8_t bad[24] = {'G', 'G', 'U', 'X'};
    CHECK(gguf_open_memory(bad, sizeof bad, &f, err, sizeof err) != 0 && strstr(err, "not a GGUF"));
    uint8_t v1[24] = {'G', 'G', 'U', 'F', 1, 0, 0, 0};
    CHECK(gguf_open_memory(v1, sizeof v1, &f, err, sizeof err) != 0 && strstr(err, "version 1"));
    /* tensor count far beyond the file */
    uint8_t huge[24] = {'G',  'G',  'U',  'F',  3,    0,    0,    0,
                        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    CHECK(gguf_open_memory(huge, sizeof huge, &f, err, sizeof err) != 0 &&
          strstr(err, "tensor count"));
    CHECK(gguf_open("/nonexistent/model.gguf", &f, err, sizeof err) == GGUF_EIO &&
          strstr(err, "cannot open"));
    /* duplicate keys, bad alignment, unknown tensor type, misaligned offset */
    gguf_writer *gw = gw_new(3);
    gw_kv_u32(gw, "a", 1);
    gw_kv_u32(gw, "a", 2);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    CHECK(gguf_open_memory(buf, len, &f, err, sizeof err) != 0 && strstr(err, "duplicate"));
    free(buf);
    gw_free(gw);
    gw = gw_new(3);
    gw_kv_u32(gw, "general.alignment", 24);
    gw_to_memory(gw, &buf, &len);
    CHECK(gguf_open_memory(buf, len, &f, err, sizeof err) != 0 && strstr(err, "power of two"));
    free(buf);
    gw_free(gw);
    gw = gw_new(3);
    float d[32] = {0};
    uint64_t ne[1] = {32};
    gw_tensor(gw, "x", 99, 1, ne, d, sizeof d);
    gw_to_memory(gw, &buf, &len);
    CHECK(gguf_open_memory(buf, len, &f, err, sizeof err) != 0 &&
          strstr(err, "unknown tensor type"));
    free(buf);
    gw_free(gw);
    gw = gw_new(3);
    uint64_t ne2[1] = {33};
    gw_tensor(gw, "x", QT_Q8_0, 1, ne2, d, 34);
    gw_to_memory(gw, &buf, &len);
    CHECK(gguf_open_memory(buf, len, &f, err, sizeof err) != 0 && strstr(err, "multiple"));
    free(buf);
    gw_free(gw);
}

/* Flip random bytes of the sample file: must never crash (ASan/UBSan watch). */
static void test_flips(void) {
    gguf_writer *gw = gw_new(3);
    build_sample(gw);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    uint64_t s = 12345;
    for (int it = 0; it < 20000; it++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t pos = (size_t)((s >> 33) % len);
        uint8_t old = buf[pos];
        buf[pos] ^= (uint8_t)(1u << ((s >> 20) & 7));
        gguf_file *f;
        char err[256];
        if (gguf_open_memory(buf, len, &f, err, sizeof err) == 0) gguf_close(f);
        buf[pos] = old;
    }
    free(buf);
    CHECK(1);
}

static void test_real_model(void) {
    const char *path = tu_model_path();
    if (!path) {
        printf("real model absent: skipping real-file checks\n");
        return;
    }
    gguf_file *f;
    char err[512];
    int rc = gguf_open(path, &f, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    gguf_str s;
    CHECK(gguf_get_str(f, "general.architecture", &s) == 0 && str_eq(s, "llama"));
    uint32_t u;
    CHECK(gguf_get_u32(f, "llama.block_count", &u) == 0 && u == 30);
    CHECK(gguf_n_tensors(f) == 272);
    int64_t it = gguf_find_key(f, "tokenizer.ggml.tokens");
    CHECK(gguf_arr_len(f, it) == 49152);
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    CHECK(t && t->type == QT_Q8_0 && t->ne[0] == 576 && t->ne[1] == 49152);
    /* header size: where the first tensor's data starts */
    size_t hdr = (size_t)((const uint8_t *)gguf_get_tensor(f, 0)->data - (const uint8_t *)t->data);
    (void)hdr;
    uint64_t size = gguf_file_size(f);
    const uint8_t *base = NULL;
    uint64_t min_off = UINT64_MAX;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++)
        if (gguf_get_tensor(f, i)->offset < min_off) {
            min_off = gguf_get_tensor(f, i)->offset;
            base = (const uint8_t *)gguf_get_tensor(f, i)->data - min_off;
        }
    /* cut the real file at many points, header and data */
    FILE *fp = fopen(path, "rb");
    uint8_t *copy = malloc(size);
    CHECK(fp && copy && fread(copy, 1, size, fp) == size);
    if (fp) fclose(fp);
    size_t data_start = (size_t)(base - (const uint8_t *)gguf_get_tensor(f, 0)->data) + 0;
    (void)data_start;
    int n_cuts = 0, n_fail = 0;
    for (uint64_t cut = 0; cut < size; cut += (cut < 2000000 ? 9973 : 997331)) {
        gguf_file *g;
        char e2[512] = "";
        n_cuts++;
        if (gguf_open_memory(copy, cut, &g, e2, sizeof e2) != 0) {
            n_fail++;
            CHECKF(e2[0], "cut %llu: empty message", (unsigned long long)cut);
        } else {
            gguf_close(g);
        }
    }
    CHECKF(n_fail == n_cuts, "%d of %d cuts opened", n_cuts - n_fail, n_cuts);
    /* flip bytes in the header region of the real file */
    uint64_t s2 = 99;
    for (int i = 0; i < 300; i++) {
        s2 = s2 * 6364136223846793005ull + 1442695040888963407ull;
        size_t pos = (size_t)((s2 >> 33) % 1500000);
        uint8_t old = copy[pos];
        copy[pos] ^= 0xff;
        gguf_file *g;
        char e2[512];
        if (gguf_open_memory(copy, size, &g, e2, sizeof e2) == 0) gguf_close(g);
        copy[pos] = old;
    }
    printf("real model: %d truncations all rejected with a message\n", n_cuts);
    free(copy);
    gguf_close(f);
}

int main(void) {
    test_roundtrip(3, 32);
    test_roundtrip(2, 32);
    test_roundtrip(3, 64);
    test_roundtrip(3, 8);
    test_bad_headers();
    test_flips();
    test_real_model();
    return tu_finish("test_gguf");
}
