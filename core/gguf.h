/*
 * gguf.h - reader for GGUF model files (versions 2 and 3).
 *
 * The file is memory-mapped read-only; tensor data is never copied. Every
 * offset, count and length read from the file is checked against the file's
 * size before it is used, so a truncated or corrupted file produces an error
 * message naming what is wrong instead of a crash.
 *
 * Ownership: a gguf_file owns its mapping; every pointer handed out (strings,
 * array data, tensor data) stays valid until gguf_close(). Strings from the
 * file are NOT NUL-terminated: they come as (pointer, length). Key and tensor
 * names are copied and NUL-terminated at open time.
 * Thread-safety: an open gguf_file is immutable; any number of threads may
 * read it concurrently.
 * Errors: functions that can fail return 0 on success and a negative GGUF_E*
 * code otherwise; gguf_open fills `err` with a readable message.
 */
#ifndef ENGINE_GGUF_H
#define ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

enum {
    GGUF_OK = 0,
    GGUF_ENOTFOUND = -1, /* key or tensor absent */
    GGUF_ETYPE = -2,     /* present, but of another type */
    GGUF_ERANGE = -3,    /* index out of range / value does not fit */
    GGUF_EFORMAT = -4,   /* file malformed */
    GGUF_EIO = -5,       /* open/stat/mmap failed */
    GGUF_ENOMEM = -6,
};

#define GGUF_MAX_DIMS 4

typedef struct gguf_file gguf_file;

typedef struct {
    const char *ptr; /* not NUL-terminated; valid until gguf_close */
    uint64_t len;
} gguf_str;

typedef struct {
    const char *name; /* NUL-terminated copy */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous (innermost) dim; unused dims are 1 */
    uint32_t type;              /* a quant_type (see quant.h) */
    uint64_t offset;            /* relative to the start of the data section */
    uint64_t n_elements;
    uint64_t nbytes;
    const void *data; /* points into the mapping */
} gguf_tensor;

/* Open and fully validate a file. On failure returns NULL-equivalent error
 * code and writes a message such as "tensor 'blk.3.attn_q.weight': data
 * [offset 1234, 4096 bytes] extends past end of file (size 2048)". */
int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen);

/* Same validation over a caller-owned buffer (tests, fuzzing). The buffer
 * must outlive the returned handle. */
int gguf_open_memory(const void *data, size_t size, gguf_file **out, char *err, size_t errlen);

void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);
uint64_t gguf_file_size(const gguf_file *f);

/* ---- metadata ---- */
int64_t gguf_n_kv(const gguf_file *f);
int64_t gguf_find_key(const gguf_file *f, const char *key); /* -1 when absent */
const char *gguf_key(const gguf_file *f, int64_t i);
gguf_type gguf_kv_type(const gguf_file *f, int64_t i);

/* Scalars. Integer getters accept any integer type whose value fits
 * (GGUF_ERANGE otherwise); float getters accept FLOAT32/FLOAT64. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out);
int gguf_get_bool(const gguf_file *f, const char *key, int *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);

/* Arrays (by kv index). For numeric arrays, gguf_arr_data points at the
 * packed little-endian elements in the mapping (possibly unaligned: read
 * with memcpy). gguf_arr_int reads element j of any integer array as int64. */
gguf_type gguf_arr_type(const gguf_file *f, int64_t i);
uint64_t gguf_arr_len(const gguf_file *f, int64_t i);
const void *gguf_arr_data(const gguf_file *f, int64_t i);
int gguf_arr_int(const gguf_file *f, int64_t i, uint64_t j, int64_t *out);
int gguf_arr_f32(const gguf_file *f, int64_t i, uint64_t j, float *out);
int gguf_arr_str(const gguf_file *f, int64_t i, uint64_t j, gguf_str *out);

/* ---- tensors ---- */
int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_get_tensor(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL when absent */

const char *gguf_type_name(gguf_type t);

#endif
