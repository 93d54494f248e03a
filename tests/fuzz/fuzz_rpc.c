/*
 * fuzz_rpc.c - the RPC framing (rpc/rpc.h) and the message decoding of
 * proto/inference.proto on arbitrary bytes.
 *
 * The input is a byte stream as a connection receives it: length-prefixed
 * frames one after the other. rpc_frame_parse takes them in turn until it
 * needs more bytes or refuses an oversized prefix, as the receive loop does;
 * a body that does not decode is skipped by its length and probed with
 * rpc_frame_peek_call_id. Every payload of a decoded frame is decoded as
 * the request and the response type of every method of inference.Inference
 * (servers decode the first, clients the second).
 *
 * Checks: a decoded frame or message encodes again, and that encoding
 * decodes to a message that encodes to the same bytes (what a peer reads
 * is what was meant); a parse consumes either nothing (need more bytes,
 * too big) or one whole prefixed frame.
 */
#include <string.h>

#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"
#include "tests/fuzz/fuzz.h"

/* Whether m or a message inside it kept fields it did not know. */
static int has_unknown_fields(const ProtobufCMessage *m) {
    if (m->n_unknown_fields) return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        const char *at = (const char *)m + fd->offset;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + fd->quantifier_offset);
            ProtobufCMessage *const *sub = *(ProtobufCMessage *const *const *)at;
            for (size_t k = 0; k < n; k++)
                if (has_unknown_fields(sub[k])) return 1;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)at;
            if (sub && has_unknown_fields(sub)) return 1;
        }
    }
    return 0;
}

/* Encode m, decode that, encode again: both encodings must be equal.
 * protobuf-c keeps unknown fields and writes them back in its own encoding
 * of the key, which it may then refuse (field number 0 written overlong is
 * accepted, written plainly it is not: corpus/rpc/overlong-tag0.bin), so
 * with unknown fields the second decoding may fail. */
static void check_reencode(const ProtobufCMessage *m) {
    uint8_t *once, *twice;
    size_t n1, n2;
    FUZZ_CHECK(rpc_msg_pack(m, &once, &n1) == RPC_OK);
    ProtobufCMessage *back = protobuf_c_message_unpack(m->descriptor, NULL, n1, once);
    if (!back && has_unknown_fields(m)) {
        free(once);
        return;
    }
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(rpc_msg_pack(back, &twice, &n2) == RPC_OK);
    FUZZ_CHECK(n1 == n2 && memcmp(once, twice, n1) == 0);
    protobuf_c_message_free_unpacked(back, NULL);
    free(once);
    free(twice);
}

static void decode_as(const ProtobufCMessageDescriptor *d, const ProtobufCBinaryData *payload) {
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, payload->len, payload->data);
    if (!m) return;
    FUZZ_CHECK(protobuf_c_message_check(m));
    check_reencode(m);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void check_frame(const Rpc__Frame *f) {
    uint8_t *wire;
    size_t len, used;
    Rpc__Frame *back;
    char err[256];
    FUZZ_CHECK(rpc_frame_pack(f, 0, &wire, &len) == RPC_OK);
    int rc = rpc_frame_parse(wire, len, 0, &back, &used, err, sizeof err);
    FUZZ_CHECK(rc == RPC_OK || has_unknown_fields(&f->base));
    FUZZ_CHECK(used == len);
    rpc_frame_free(back);
    free(wire);
    check_reencode(&f->base);
    (void)rpc_status_name(f->status);
    if (!f->has_payload) return;
    const ProtobufCServiceDescriptor *svc = &inference__inference__descriptor;
    for (unsigned i = 0; i < svc->n_methods; i++) {
        decode_as(svc->methods[i].input, &f->payload);
        decode_as(svc->methods[i].output, &f->payload);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t off = 0;
    while (off < size) {
        Rpc__Frame *f;
        size_t used;
        char err[256];
        int rc = rpc_frame_parse(data + off, size - off, RPC_DEFAULT_MAX_FRAME, &f, &used, err,
                                 sizeof err);
        (void)rpc_strerror(rc);
        if (rc == RPC_EAGAIN || rc == RPC_ETOOBIG) {
            FUZZ_CHECK(used == 0 && f == NULL);
            break;
        }
        FUZZ_CHECK(used >= RPC_HEADER_BYTES && used <= size - off);
        FUZZ_CHECK(used - RPC_HEADER_BYTES == rpc_frame_get_len(data + off));
        if (rc == RPC_OK) {
            FUZZ_CHECK(f != NULL);
            check_frame(f);
            rpc_frame_free(f);
        } else {
            uint64_t call_id;
            FUZZ_CHECK(rc == RPC_EPROTO && f == NULL && err[0]);
            (void)rpc_frame_peek_call_id(data + off + RPC_HEADER_BYTES, used - RPC_HEADER_BYTES,
                                         &call_id);
        }
        off += used;
    }
    return 0;
}
