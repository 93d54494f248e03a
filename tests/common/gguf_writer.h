/*
 * gguf_writer.h - builds GGUF files in memory for tests (tiny models,
 * corrupted variants). Test-only: errors abort the test via assert.
 */
#ifndef TESTS_GGUF_WRITER_H
#define TESTS_GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

typedef struct gguf_writer gguf_writer;

gguf_writer *gw_new(uint32_t version);
void gw_free(gguf_writer *gw);
void gw_set_alignment(gguf_writer *gw, uint32_t alignment); /* also writes general.alignment */

void gw_kv_u32(gguf_writer *gw, const char *key, uint32_t v);
void gw_kv_i32(gguf_writer *gw, const char *key, int32_t v);
void gw_kv_u64(gguf_writer *gw, const char *key, uint64_t v);
void gw_kv_f32(gguf_writer *gw, const char *key, float v);
void gw_kv_f64(gguf_writer *gw, const char *key, double v);
void gw_kv_bool(gguf_writer *gw, const char *key, int v);
void gw_kv_u8(gguf_writer *gw, const char *key, uint8_t v);
void gw_kv_i8(gguf_writer *gw, const char *key, int8_t v);
void gw_kv_u16(gguf_writer *gw, const char *key, uint16_t v);
void gw_kv_i16(gguf_writer *gw, const char *key, int16_t v);
void gw_kv_i64(gguf_writer *gw, const char *key, int64_t v);
void gw_kv_str(gguf_writer *gw, const char *key, const char *s);
void gw_kv_arr_str(gguf_writer *gw, const char *key, const char *const *strs, size_t n);
void gw_kv_arr_i32(gguf_writer *gw, const char *key, const int32_t *v, size_t n);
void gw_kv_arr_f32(gguf_writer *gw, const char *key, const float *v, size_t n);

/* ne[0] is the innermost dimension; data must hold the tensor's bytes. */
void gw_tensor(gguf_writer *gw, const char *name, uint32_t type, uint32_t n_dims,
               const uint64_t *ne, const void *data, size_t nbytes);

/* Serialize; *buf is malloc'd (caller frees). */
void gw_to_memory(gguf_writer *gw, uint8_t **buf, size_t *len);
int gw_write_file(gguf_writer *gw, const char *path);

#endif
