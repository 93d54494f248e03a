/*
 * rpc_frame.c - encoding and decoding of RPC frames: the u32 little-endian
 * length prefix and the Rpc__Frame body (proto/rpc.proto). Pure functions,
 * no I/O; the connection code (rpc_conn.c) and the tests build on them.
 *
 * The cap is checked on the prefix alone, before any body byte is looked
 * at, so an oversized frame costs the receiver nothing but four bytes.
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

int rpc_frame_peek_call_id(const uint8_t *body, size_t len, uint64_t *call_id) {
    const uint8_t *p = body, *end = body + len;
    while (p < end) {
        uint64_t key, v;
        if (read_varint(&p, end, &key) != 0) return 0;
        unsigned field = (unsigned)(key >> 3), wt = (unsigned)(key & 7);
        switch (wt) {
        case 0:
            if (read_varint(&p, end, &v) != 0) return 0;
            if (field == 1) {
                *call_id = v;
                return 1;
            }
            break;
        case 1:
            if ((size_t)(end - p) < 8) return 0;
            p += 8;
            break;
        case 2:
            if (read_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p)) return 0;
            p += v;
            break;
        case 5:
            if ((size_t)(end - p) < 4) return 0;
            p += 4;
            break;
        default: return 0;
        }
    }
    return 0;
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
