/*
 * rpc_frame.c - encoding and decoding of RPC frames: the u32 little-endian
 * length prefix and the Rpc__Frame body (proto/rpc.proto). Pure functions,
 * no I/O; the connection code (rpc_conn.c) and the tests build on them.
 *
 * The cap is checked on the prefix alone, before any body byte is looked
 * at, so an oversized frame costs the receiver nothing but four bytes.
 *
 * protobuf-c hands out strings NUL-terminated and without their length, so
 * a NUL inside one would silently cut it (an API key "<key>\0junk" would
 * pass as <key>). Decoding therefore walks the wire bytes once more and
 * refuses a string field that holds a NUL (rpc_msg_check_strings).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc.h"

const char *rpc_status_name(int code) {
    switch (code) {
    case 0: return "OK";
    case 1: return "CANCELLED";
    case 2: return "UNKNOWN";
    case 3: return "INVALID_ARGUMENT";
    case 4: return "DEADLINE_EXCEEDED";
    case 5: return "NOT_FOUND";
    case 8: return "RESOURCE_EXHAUSTED";
    case 12: return "UNIMPLEMENTED";
    case 13: return "INTERNAL";
    case 14: return "UNAVAILABLE";
    case 16: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
    }
}

const char *rpc_strerror(int err) {
    switch (err) {
    case RPC_OK: return "ok";
    case RPC_ECLOSED: return "connection closed";
    case RPC_ETIMEDOUT: return "timed out";
    case RPC_ETOOBIG: return "frame too large";
    case RPC_EPROTO: return "protocol error";
    case RPC_ENOMEM: return "out of memory";
    case RPC_EADDR: return "bad address";
    case RPC_EIO: return "transport error";
    case RPC_EAGAIN: return "incomplete frame";
    case RPC_EINVAL: return "invalid argument";
    default: return "unknown error";
    }
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

uint32_t rpc_frame_get_len(const uint8_t hdr[RPC_HEADER_BYTES]) {
    return (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
           (uint32_t)hdr[3] << 24;
}

void rpc_frame_put_len(uint8_t hdr[RPC_HEADER_BYTES], uint32_t len) {
    hdr[0] = (uint8_t)len;
    hdr[1] = (uint8_t)(len >> 8);
    hdr[2] = (uint8_t)(len >> 16);
    hdr[3] = (uint8_t)(len >> 24);
}

int rpc_frame_pack(const Rpc__Frame *f, size_t max_frame, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!f) return RPC_EINVAL;
    size_t body = rpc__frame__get_packed_size(f);
    if ((max_frame && body > max_frame) || body > UINT32_MAX) return RPC_ETOOBIG;
    uint8_t *buf = malloc(RPC_HEADER_BYTES + body);
    if (!buf) return RPC_ENOMEM;
    rpc_frame_put_len(buf, (uint32_t)body);
    rpc__frame__pack(f, buf + RPC_HEADER_BYTES);
    *out = buf;
    *len = RPC_HEADER_BYTES + body;
    return RPC_OK;
}

int rpc_frame_unpack(const uint8_t *body, size_t len, Rpc__Frame **out, char *err, size_t errlen) {
    *out = NULL;
    if (len == 0) {
        set_err(err, errlen, "malformed frame: empty body");
        return RPC_EPROTO;
    }
    Rpc__Frame *f = rpc__frame__unpack(NULL, len, body);
    if (!f) {
        set_err(err, errlen, "malformed frame: %zu bytes that do not decode as rpc.Frame", len);
        return RPC_EPROTO;
    }
    char why[200];
    if (rpc_msg_check_strings(&rpc__frame__descriptor, body, len, why, sizeof why) != RPC_OK) {
        set_err(err, errlen, "malformed frame: %s", why);
        rpc_frame_free(f);
        return RPC_EPROTO;
    }
    *out = f;
    return RPC_OK;
}

int rpc_frame_parse(const uint8_t *buf, size_t len, size_t max_frame, Rpc__Frame **out,
                    size_t *consumed, char *err, size_t errlen) {
    *out = NULL;
    *consumed = 0;
    if (len < RPC_HEADER_BYTES) return RPC_EAGAIN;
    uint32_t body = rpc_frame_get_len(buf);
    if (max_frame && body > max_frame) {
        set_err(err, errlen, "frame of %u bytes exceeds the limit of %zu bytes", body, max_frame);
        return RPC_ETOOBIG;
    }
    if (len - RPC_HEADER_BYTES < body) return RPC_EAGAIN;
    *consumed = RPC_HEADER_BYTES + (size_t)body;
    return rpc_frame_unpack(buf + RPC_HEADER_BYTES, body, out, err, errlen);
}

/* Protobuf varint at *p (bounded by end); 0 on success. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Skip the value of a field of wire type wt; *len_out gets the length of a
 * length-delimited one (wire type 2), whose bytes are skipped too. */
static int skip_value(const uint8_t **p, const uint8_t *end, unsigned wt, uint64_t *len_out) {
    uint64_t v;
    switch (wt) {
    case 0: return read_varint(p, end, &v);
    case 1:
        if ((size_t)(end - *p) < 8) return -1;
        *p += 8;
        return 0;
    case 2:
        if (read_varint(p, end, &v) != 0 || v > (uint64_t)(end - *p)) return -1;
        *len_out = v;
        *p += v;
        return 0;
    case 5:
        if ((size_t)(end - *p) < 4) return -1;
        *p += 4;
        return 0;
    default: return -1;
    }
}

int rpc_frame_peek_call_id(const uint8_t *body, size_t len, uint64_t *call_id) {
    const uint8_t *p = body, *end = body + len;
    while (p < end) {
        uint64_t key, v;
        if (read_varint(&p, end, &key) != 0) return 0;
        if ((key & 7) == 0 && key >> 3 == 1) {
            if (read_varint(&p, end, &v) != 0) return 0;
            *call_id = v;
            return 1;
        }
        if (skip_value(&p, end, (unsigned)(key & 7), &v) != 0) return 0;
    }
    return 0;
}

/* Nesting followed by the NUL check; deeper messages are not ours. */
#define MAX_CHECK_DEPTH 32

/* Walk the wire bytes of a message of type d: every string field's bytes
 * (sub-messages too) must be free of NUL. path names the message so far
 * ("GenerateRequest.messages"). */
static int check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                         char *path, size_t pathlen, int depth, char *err, size_t errlen) {
    size_t used = strlen(path);
    while (p < end) {
        uint64_t key, vlen = 0;
        if (read_varint(&p, end, &key) != 0) return RPC_OK; /* unpack judged the bytes */
        unsigned wt = (unsigned)(key & 7);
        if (skip_value(&p, end, wt, &vlen) != 0) return RPC_OK;
        if (wt != 2 || key >> 3 > UINT32_MAX) continue;
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
        if (!fd) continue; /* unknown field: kept as bytes, never read as a string */
        const uint8_t *val = p - vlen;
        snprintf(path + used, pathlen - used, ".%s", fd->name);
        if (fd->type == PROTOBUF_C_TYPE_STRING && memchr(val, 0, (size_t)vlen)) {
            set_err(err, errlen, "%s: strings may not contain NUL", path);
            return RPC_EPROTO;
        }
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE && depth < MAX_CHECK_DEPTH &&
            check_strings(fd->descriptor, val, p, path, pathlen, depth + 1, err, errlen) != RPC_OK)
            return RPC_EPROTO;
        path[used] = 0;
    }
    return RPC_OK;
}

int rpc_msg_check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                          char *err, size_t errlen) {
    char path[256];
    snprintf(path, sizeof path, "%s", d->short_name);
    return check_strings(d, data, data + len, path, sizeof path, 0, err, errlen);
}

int rpc_msg_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                   ProtobufCMessage **out, char *err, size_t errlen) {
    *out = protobuf_c_message_unpack(d, NULL, len, data);
    if (!*out) {
        set_err(err, errlen, "the payload (%zu bytes) is not a valid %s", len, d->name);
        return RPC_EPROTO;
    }
    if (rpc_msg_check_strings(d, data, len, err, errlen) != RPC_OK) {
        protobuf_c_message_free_unpacked(*out, NULL);
        *out = NULL;
        return RPC_EPROTO;
    }
    return RPC_OK;
}

void rpc_frame_free(Rpc__Frame *f) {
    if (f) rpc__frame__free_unpacked(f, NULL);
}

int rpc_msg_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!m) return RPC_EINVAL;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return RPC_ENOMEM;
    protobuf_c_message_pack(m, buf);
    *out = buf;
    *len = n;
    return RPC_OK;
}
