/*
 * test_rpc_frame.c - the RPC frame codec (rpc/rpc_frame.c), no I/O, no model:
 *   - a CALL frame round-trips through pack/parse with every field intact,
 *     and the prefix is the body length in little-endian order;
 *   - two frames back to back parse one after the other;
 *   - every proper prefix of a frame is "incomplete" (RPC_EAGAIN), never an
 *     error and never a frame;
 *   - a prefix announcing more than the cap is refused from its four bytes
 *     alone, and pack refuses to build such a frame;
 *   - garbage, empty bodies and bodies missing required fields are
 *     RPC_EPROTO with a message, and the call id is still recovered when it
 *     is there;
 *   - a NUL byte inside a string field (Frame.api_key, GenerateRequest's
 *     prompt, a stop string, a chat message's content) is refused with the
 *     field's name; NUL in a bytes field is fine.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"
#include "tests/common/test_util.h"

static void test_roundtrip(void) {
    Inference__GenerateRequest req = INFERENCE__GENERATE_REQUEST__INIT;
    req.prompt = "Hello";
    req.has_max_tokens = 1;
    req.max_tokens = 7;
    uint8_t *payload;
    size_t plen;
    CHECK(rpc_msg_pack(&req.base, &payload, &plen) == RPC_OK);

    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = 1234567890123ull;
    f.type = RPC__FRAME_TYPE__FRAME_CALL;
    f.method = RPC_METHOD_PREFIX "Generate";
    f.has_deadline_ms = 1;
    f.deadline_ms = 2500;
    f.api_key = "secret";
    f.has_payload = 1;
    f.payload.data = payload;
    f.payload.len = plen;

    uint8_t *buf;
    size_t len;
    CHECK(rpc_frame_pack(&f, 0, &buf, &len) == RPC_OK);
    CHECK(len > RPC_HEADER_BYTES);
    CHECK(rpc_frame_get_len(buf) == len - RPC_HEADER_BYTES);
    uint32_t body = (uint32_t)(len - RPC_HEADER_BYTES);
    CHECK(buf[0] == (body & 0xff) && buf[1] == ((body >> 8) & 0xff) && buf[2] == 0 && buf[3] == 0);

    Rpc__Frame *g;
    size_t used;
    char err[256];
    CHECK(rpc_frame_parse(buf, len, 1 << 20, &g, &used, err, sizeof err) == RPC_OK);
    CHECK(used == len);
    if (g) {
        CHECK(g->call_id == f.call_id);
        CHECK(g->type == RPC__FRAME_TYPE__FRAME_CALL);
        CHECK(g->method && strcmp(g->method, RPC_METHOD_PREFIX "Generate") == 0);
        CHECK(g->has_deadline_ms && g->deadline_ms == 2500);
        CHECK(g->api_key && strcmp(g->api_key, "secret") == 0);
        CHECK(g->has_payload && g->payload.len == plen);
        Inference__GenerateRequest *r =
            inference__generate_request__unpack(NULL, g->payload.len, g->payload.data);
        CHECK(r && r->prompt && strcmp(r->prompt, "Hello") == 0 && r->has_max_tokens &&
              r->max_tokens == 7);
        if (r) inference__generate_request__free_unpacked(r, NULL);
        rpc_frame_free(g);
    }

    /* Every proper prefix is incomplete. */
    for (size_t k = 0; k < len; k++) {
        Rpc__Frame *h = NULL;
        int rv = rpc_frame_parse(buf, k, 1 << 20, &h, &used, err, sizeof err);
        CHECKF(rv == RPC_EAGAIN && !h && used == 0, "prefix of %zu bytes: %d", k, rv);
        rpc_frame_free(h);
    }

    /* Two frames back to back. */
    Rpc__Frame st = RPC__FRAME__INIT;
    st.call_id = 9;
    st.type = RPC__FRAME_TYPE__FRAME_STATUS;
    st.has_status = 1;
    st.status = RPC__STATUS_CODE__INVALID_ARGUMENT;
    st.message = "bad";
    uint8_t *buf2;
    size_t len2;
    CHECK(rpc_frame_pack(&st, 0, &buf2, &len2) == RPC_OK);
    uint8_t *both = malloc(len + len2);
    memcpy(both, buf, len);
    memcpy(both + len, buf2, len2);
    CHECK(rpc_frame_parse(both, len + len2, 0, &g, &used, err, sizeof err) == RPC_OK);
    CHECK(used == len && g && g->call_id == f.call_id);
    rpc_frame_free(g);
    CHECK(rpc_frame_parse(both + used, len + len2 - used, 0, &g, &used, err, sizeof err) == RPC_OK);
    CHECK(used == len2 && g && g->call_id == 9 && g->has_status &&
          g->status == RPC__STATUS_CODE__INVALID_ARGUMENT && strcmp(g->message, "bad") == 0);
    rpc_frame_free(g);

    /* The cap: pack refuses, parse refuses from the prefix alone. */
    uint8_t *nb;
    size_t nl;
    CHECK(rpc_frame_pack(&f, body - 1, &nb, &nl) == RPC_ETOOBIG && !nb);
    CHECK(rpc_frame_pack(&f, body, &nb, &nl) == RPC_OK);
    free(nb);
    CHECK(rpc_frame_parse(buf, RPC_HEADER_BYTES, body - 1, &g, &used, err, sizeof err) ==
          RPC_ETOOBIG);
    CHECKF(strstr(err, "exceeds the limit") != NULL, "%s", err);
    uint8_t huge[4];
    rpc_frame_put_len(huge, 0xffffffffu);
    CHECK(rpc_frame_get_len(huge) == 0xffffffffu);
    CHECK(rpc_frame_parse(huge, 4, RPC_DEFAULT_MAX_FRAME, &g, &used, err, sizeof err) ==
          RPC_ETOOBIG);

    free(both);
    free(buf2);
    free(buf);
    free(payload);
}

static int parse_body(const uint8_t *body, size_t n, char *err, size_t errlen) {
    uint8_t *buf = malloc(n + RPC_HEADER_BYTES);
    rpc_frame_put_len(buf, (uint32_t)n);
    if (n) memcpy(buf + RPC_HEADER_BYTES, body, n);
    Rpc__Frame *g = NULL;
    size_t used = 0;
    int rv = rpc_frame_parse(buf, n + RPC_HEADER_BYTES, 0, &g, &used, err, errlen);
    CHECK(used == n + RPC_HEADER_BYTES); /* skippable even when bad */
    rpc_frame_free(g);
    free(buf);
    return rv;
}

static void test_bad_bodies(void) {
    char err[256];
    /* empty body: required fields missing */
    CHECK(parse_body(NULL, 0, err, sizeof err) == RPC_EPROTO);
    CHECKF(strstr(err, "malformed frame") != NULL, "%s", err);

    /* garbage: an invalid wire type / truncated varint */
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK(parse_body(garbage, sizeof garbage, err, sizeof err) == RPC_EPROTO);
    CHECKF(strstr(err, "do not decode") != NULL, "%s", err);
    const uint8_t text[] = "GET / HTTP/1.1\r\n\r\n";
    CHECK(parse_body(text, sizeof text - 1, err, sizeof err) == RPC_EPROTO);

    /* call_id present, type missing: undecodable, but the id is found */
    const uint8_t only_id[] = {0x08, 0x2a, 0x1a, 0x01, 'x'};
    CHECK(parse_body(only_id, sizeof only_id, err, sizeof err) == RPC_EPROTO);
    uint64_t id = 0;
    CHECK(rpc_frame_peek_call_id(only_id, sizeof only_id, &id) == 1 && id == 42);
    /* the id after another field */
    const uint8_t later_id[] = {0x1a, 0x02, 'a', 'b', 0x08, 0x07};
    CHECK(rpc_frame_peek_call_id(later_id, sizeof later_id, &id) == 1 && id == 7);
    CHECK(rpc_frame_peek_call_id(garbage, sizeof garbage, &id) == 0);
    /* a length-delimited field that runs past the end */
    const uint8_t overrun[] = {0x1a, 0x10, 'a'};
    CHECK(rpc_frame_peek_call_id(overrun, sizeof overrun, &id) == 0);

    /* a payload field cut short inside an otherwise good frame */
    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = 5;
    f.type = RPC__FRAME_TYPE__FRAME_CALL;
    f.method = "inference.Inference/Health";
    uint8_t *buf;
    size_t len;
    CHECK(rpc_frame_pack(&f, 0, &buf, &len) == RPC_OK);
    size_t body = len - RPC_HEADER_BYTES;
    CHECK(parse_body(buf + RPC_HEADER_BYTES, body - 3, err, sizeof err) == RPC_EPROTO);
    free(buf);
}

/* Append field `field` (wire type 2) holding s[0..n) to buf at *at. */
static void put_bytes(uint8_t *buf, size_t *at, unsigned field, const void *s, size_t n) {
    buf[(*at)++] = (uint8_t)(field << 3 | 2);
    buf[(*at)++] = (uint8_t)n;
    memcpy(buf + *at, s, n);
    *at += n;
}

static void test_nul_in_strings(void) {
    /* Frame{call_id 9, CALL, method "m", api_key "k\0junk"} */
    uint8_t body[64] = {0x08, 9, 0x10, 1};
    size_t n = 4;
    put_bytes(body, &n, 3, "m", 1);
    put_bytes(body, &n, 5, "k\0junk", 6);
    Rpc__Frame *f = NULL;
    char err[256] = "";
    CHECK(rpc_frame_unpack(body, n, &f, err, sizeof err) == RPC_EPROTO && !f);
    CHECKF(strstr(err, "Frame.api_key: strings may not contain NUL") != NULL, "%s", err);
    uint64_t id = 0;
    CHECK(rpc_frame_peek_call_id(body, n, &id) == 1 && id == 9);
    /* a NUL in a bytes field (the payload) is fine */
    n = 4;
    put_bytes(body, &n, 6, "a\0b", 3);
    CHECK(rpc_frame_unpack(body, n, &f, err, sizeof err) == RPC_OK && f);
    rpc_frame_free(f);

    /* GenerateRequest: prompt, a stop string, a chat message's content */
    struct {
        const char *want;
        uint8_t msg[64];
        size_t len;
    } cases[3] = {{"GenerateRequest.prompt: strings may not contain NUL", {0}, 0},
                  {"GenerateRequest.stop: strings may not contain NUL", {0}, 0},
                  {"GenerateRequest.messages.content: strings may not contain NUL", {0}, 0}};
    put_bytes(cases[0].msg, &cases[0].len, 1, "hi\0there", 8);
    put_bytes(cases[1].msg, &cases[1].len, 1, "hi", 2);
    put_bytes(cases[1].msg, &cases[1].len, 7, "ok", 2);
    put_bytes(cases[1].msg, &cases[1].len, 7, "e\0nd", 4);
    uint8_t chat[32];
    size_t clen = 0;
    put_bytes(chat, &clen, 1, "user", 4);
    put_bytes(chat, &clen, 2, "x\0y", 3);
    put_bytes(cases[2].msg, &cases[2].len, 3, chat, clen);
    for (int i = 0; i < 3; i++) {
        ProtobufCMessage *m = NULL;
        err[0] = 0;
        int rv = rpc_msg_unpack(&inference__generate_request__descriptor, cases[i].msg,
                                cases[i].len, &m, err, sizeof err);
        CHECKF(rv == RPC_EPROTO && !m && strcmp(err, cases[i].want) == 0, "case %d: %d %s", i, rv,
               err);
    }
    /* the same request without the NUL decodes */
    uint8_t ok[32];
    size_t oklen = 0;
    put_bytes(ok, &oklen, 1, "hi there", 8);
    ProtobufCMessage *m = NULL;
    CHECK(rpc_msg_unpack(&inference__generate_request__descriptor, ok, oklen, &m, err,
                         sizeof err) == RPC_OK &&
          m && strcmp(((Inference__GenerateRequest *)m)->prompt, "hi there") == 0);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    CHECK(rpc_msg_unpack(&inference__generate_request__descriptor, (const uint8_t *)"\xff", 1, &m,
                         err, sizeof err) == RPC_EPROTO);
    CHECK(strstr(err, "is not a valid inference.GenerateRequest") != NULL);
}

static void test_names(void) {
    CHECK(strcmp(rpc_status_name(0), "OK") == 0);
    CHECK(strcmp(rpc_status_name(3), "INVALID_ARGUMENT") == 0);
    CHECK(strcmp(rpc_status_name(8), "RESOURCE_EXHAUSTED") == 0);
    CHECK(strcmp(rpc_status_name(16), "UNAUTHENTICATED") == 0);
    CHECK(strcmp(rpc_status_name(99), "UNKNOWN") == 0);
    CHECK(strcmp(rpc_strerror(RPC_ETOOBIG), "frame too large") == 0);
}

int main(void) {
    test_roundtrip();
    test_bad_bodies();
    test_nul_in_strings();
    test_names();
    return tu_finish("test_rpc_frame");
}
