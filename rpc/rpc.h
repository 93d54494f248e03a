/*
 * rpc.h - framing and connections of the RPC transport (proto/rpc.proto),
 * shared by infer-server and the clients.
 *
 * Wire format: every frame is a u32 little-endian length followed by that
 * many bytes of an encoded Rpc__Frame. A receiver checks the length against
 * its cap (max_frame) BEFORE it reads the body.
 *
 * Transports: nng byte streams - "tcp://host:port", "ipc:///path",
 * "tls+tcp://host:port" (certificates from rpc_tls_opts).
 *
 * A connection (rpc_conn) has ONE receive loop (a thread) that reads
 * frames in order and hands each to a callback, or to an inbox read with
 * rpc_conn_recv when no callbacks are given; and ONE ordered send queue
 * drained by a writer thread. An accepted connection costs no thread until
 * its first frame is complete: that frame is read with nng's asynchronous
 * I/O, and only then (or once it failed) do the two threads start, so
 * sockets that never speak cannot pile up threads. The queue is bounded (bytes and frames): a
 * sender whose frame does not fit waits up to its timeout_ms, then gets
 * RPC_ETIMEDOUT - that is the backpressure against a peer that reads too
 * slowly. Frames from concurrent senders go out whole and in the order
 * their rpc_conn_send calls queued them.
 *
 * Receive-loop rules (the same at both ends):
 *   - length > max_frame: on_close(RPC_ETOOBIG, "frame of N bytes exceeds
 *     the limit of M bytes") and the connection closes (a stream cannot be
 *     resynchronized after an unread body). A server answers it with STATUS
 *     RESOURCE_EXHAUSTED from on_close; the queue is flushed (bounded by
 *     linger) before the transport closes.
 *   - body that is not a valid Rpc__Frame: on_bad_frame(RPC_EPROTO, call id
 *     if one could be read, message); the loop goes on with the next frame
 *     (the length prefix kept the stream in sync).
 *   - a frame that started but did not complete within frame_timeout_ms:
 *     on_close(RPC_EPROTO, "truncated frame: ...") and the connection closes.
 *   - accepted connections: the first frame must be complete within
 *     first_frame_timeout_ms of the start; nothing at all by then:
 *     on_close(RPC_ETIMEDOUT, "no frame within N ms of connecting"), part
 *     of a frame: on_close(RPC_EPROTO, "truncated frame: ...").
 *   - no frame started for idle_timeout_ms (when set): on_idle decides;
 *     without on_idle, or when it says so, on_close(RPC_ETIMEDOUT, "no
 *     frame for N ms (idle timeout)") and the connection closes.
 *   - a string field holding a NUL byte (protobuf-c would cut it there) is
 *     a body that does not decode: on_bad_frame, see rpc_frame_unpack.
 *   - end of stream: on_close(RPC_ECLOSED, ...); inside a frame the message
 *     says it was truncated.
 *
 * Ownership and lifetime: rpc_dial / rpc_listener_accept return a
 * connection holding one reference. rpc_conn_hold adds one,
 * rpc_conn_release drops one; when the last goes, the connection is closed
 * (if still open), its threads are waited for, and it is freed. After that
 * last release returns no callback runs. The release may also be made from
 * a callback of that very connection: then the callback in progress is the
 * last one and the memory goes when the receive thread exits.
 * on_close is called exactly once per started connection (unless the last
 * reference went first).
 *
 * Thread-safety: every rpc_conn_* function may be called from any thread,
 * including from the connection's own callbacks (but a callback must not
 * wait on its own connection's rpc_conn_recv). Callbacks run on the
 * receive thread, one at a time, in arrival order: a callback that blocks
 * stalls that connection's receiving (never its sending).
 *
 * Errors: functions return RPC_OK (0) or a negative RPC_E* code; those that
 * take err/errlen fill a message a user can read.
 */
#ifndef RPC_RPC_H
#define RPC_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "proto/rpc.pb-c.h"

enum {
    RPC_OK = 0,
    RPC_ECLOSED = -1,   /* connection or listener closed (by the peer or locally) */
    RPC_ETIMEDOUT = -2, /* send queue stayed full, dial / recv timed out */
    RPC_ETOOBIG = -3,   /* frame larger than max_frame */
    RPC_EPROTO = -4,    /* bytes that are not a valid frame, truncated frame */
    RPC_ENOMEM = -5,
    RPC_EADDR = -6,  /* bad or unsupported URL, address in use, cannot resolve */
    RPC_EIO = -7,    /* other transport / TLS errors (the message says which) */
    RPC_EAGAIN = -8, /* rpc_frame_parse: more bytes needed */
    RPC_EINVAL = -9, /* bad argument */
};

/* Bytes of the length prefix. */
#define RPC_HEADER_BYTES 4
/* Defaults of rpc_conn_opts (0 fields take these). */
#define RPC_DEFAULT_MAX_FRAME (4u << 20)
#define RPC_DEFAULT_QUEUE_BYTES (16u << 20)
#define RPC_DEFAULT_QUEUE_FRAMES 4096
#define RPC_DEFAULT_FRAME_TIMEOUT_MS 10000
#define RPC_DEFAULT_LINGER_MS 1000
#define RPC_DEFAULT_FIRST_FRAME_TIMEOUT_MS 10000

/* Method names on the wire. */
#define RPC_METHOD_PREFIX "inference.Inference/"

/* "OK", "INVALID_ARGUMENT", ... for a gRPC status code ("UNKNOWN" otherwise). */
const char *rpc_status_name(int code);
/* "closed", "timed out", ... for an RPC_E* code. */
const char *rpc_strerror(int err);

/* ---- frames (pure functions, no I/O) ---- */

/* Read / write the u32 little-endian length prefix. */
uint32_t rpc_frame_get_len(const uint8_t hdr[RPC_HEADER_BYTES]);
void rpc_frame_put_len(uint8_t hdr[RPC_HEADER_BYTES], uint32_t len);

/* Encode f with its length prefix into a malloc'd buffer (*out, *len
 * includes the prefix). RPC_ETOOBIG when the body exceeds max_frame
 * (0 = no cap), RPC_ENOMEM. */
int rpc_frame_pack(const Rpc__Frame *f, size_t max_frame, uint8_t **out, size_t *len);

/* Decode a frame body (without the prefix). *out is freed with
 * rpc_frame_free. RPC_EPROTO with a message for bytes that do not decode,
 * lack required fields or hold a NUL in a string field ("malformed frame:
 * Frame.api_key: strings may not contain NUL"). */
int rpc_frame_unpack(const uint8_t *body, size_t len, Rpc__Frame **out, char *err, size_t errlen);

/* Parse the first complete frame of buf[0..len) (prefix + body).
 * RPC_OK: *out set, *consumed = bytes used. RPC_EAGAIN: incomplete (need
 * more bytes; *consumed = 0). RPC_ETOOBIG: the prefix announces more than
 * max_frame (checked before anything else). RPC_EPROTO: the body is not a
 * frame (*consumed still covers it, so a caller may skip it). */
int rpc_frame_parse(const uint8_t *buf, size_t len, size_t max_frame, Rpc__Frame **out,
                    size_t *consumed, char *err, size_t errlen);

/* Best effort: the call_id (field 1) of a body that failed to decode, so an
 * error can still be addressed to its call. Returns 1 when found. */
int rpc_frame_peek_call_id(const uint8_t *body, size_t len, uint64_t *call_id);

void rpc_frame_free(Rpc__Frame *f);

/* Check that no string field of the message of type d encoded in
 * data[0..len) (sub-messages included) contains a NUL byte: protobuf-c
 * would silently cut such a string at the NUL. RPC_EPROTO with err naming
 * the field ("GenerateRequest.prompt: strings may not contain NUL").
 * Bytes fields may hold anything; unknown fields are not looked at. The
 * bytes must already have decoded (this only adds the NUL rule). */
int rpc_msg_check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                          char *err, size_t errlen);

/* Decode a payload as a message of type d (free it with
 * protobuf_c_message_free_unpacked). RPC_EPROTO with a message a client
 * can read for bytes that do not decode ("the payload (N bytes) is not a
 * valid inference.X") or a string holding a NUL (see above). */
int rpc_msg_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                   ProtobufCMessage **out, char *err, size_t errlen);

/* Encode any protobuf-c message into a malloc'd buffer (for payloads). */
int rpc_msg_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len);

/* ---- transports ---- */

typedef struct {
    /* PEM file holding the certificate chain and the private key. Server:
     * required for tls+tcp://. Client: optional (client certificate). */
    const char *cert_key_file;
    /* PEM CA bundle. Client: verify the server against it. Server: when
     * set, clients must present a certificate it signed. */
    const char *ca_file;
    /* Client: name expected in the server certificate (default: URL host). */
    const char *server_name;
    /* Client: do not verify the server (tests only). */
    int insecure;
} rpc_tls_opts;

typedef struct {
    size_t max_frame;       /* largest frame body received or sent; 0 = default */
    size_t max_queue_bytes; /* unsent bytes queued at most; 0 = default */
    int max_queue_frames;   /* unsent frames queued at most; 0 = default */
    int frame_timeout_ms;   /* a started frame must complete within; 0 = default, <0 none */
    int linger_ms;          /* closing after an error: time to flush the queue; 0 = default */
    /* Accepted connections: the first frame must be complete within this
     * long of rpc_conn_start; 0 = default, <0 none. */
    int first_frame_timeout_ms;
    /* No frame started for this long: the connection is idle (see
     * on_idle); <= 0 none (the default). */
    int idle_timeout_ms;
} rpc_conn_opts;

void rpc_conn_opts_default(rpc_conn_opts *o);

typedef struct rpc_conn rpc_conn;
typedef struct rpc_listener rpc_listener;

/* Callbacks of a started connection; any may be NULL (then frames go to
 * the inbox only when on_frame is NULL too, see rpc_conn_start). */
typedef struct {
    /* A decoded frame. The callee owns f (rpc_frame_free). */
    void (*on_frame)(rpc_conn *c, Rpc__Frame *f, void *user);
    /* A body that did not decode; the loop continues. has_call_id says
     * whether call_id could be recovered from the bytes. */
    void (*on_bad_frame)(rpc_conn *c, int err, int has_call_id, uint64_t call_id, const char *msg,
                         void *user);
    /* The receive loop ended (err: RPC_ECLOSED, RPC_ETOOBIG, RPC_EPROTO,
     * RPC_ETIMEDOUT, RPC_EIO, RPC_ENOMEM). Frames queued from here are still flushed (bounded by
     * linger_ms), then the transport closes. */
    void (*on_close)(rpc_conn *c, int err, const char *msg, void *user);
    /* idle_timeout_ms passed without a frame: return 1 to close the
     * connection (on_close(RPC_ETIMEDOUT) follows), 0 to keep it for
     * another idle_timeout_ms (e.g. while the owner has work in flight
     * for the peer). NULL: close. */
    int (*on_idle)(rpc_conn *c, void *user);
} rpc_conn_handlers;

/* Connect. timeout_ms < 0: no limit. tls is used for tls+tcp:// (NULL =
 * no client certificate, verification per system defaults: fails without
 * ca_file unless insecure). The connection is not started yet. */
int rpc_dial(const char *url, const rpc_tls_opts *tls, const rpc_conn_opts *o, int timeout_ms,
             rpc_conn **out, char *err, size_t errlen);

/* Bind and listen (tcp port 0 picks a free port: see rpc_listener_port). */
int rpc_listen(const char *url, const rpc_tls_opts *tls, rpc_listener **out, char *err,
               size_t errlen);
/* The bound TCP port (tcp:// and tls+tcp://), or -1. */
int rpc_listener_port(const rpc_listener *l);
const char *rpc_listener_url(const rpc_listener *l);
/* Wait for the next connection (not started yet). RPC_ECLOSED once the
 * listener is closed. */
int rpc_listener_accept(rpc_listener *l, const rpc_conn_opts *o, rpc_conn **out, char *err,
                        size_t errlen);
/* Stop listening; a blocked rpc_listener_accept returns RPC_ECLOSED. */
void rpc_listener_close(rpc_listener *l);
/* Close (if needed) and free; no accept may be running. */
void rpc_listener_free(rpc_listener *l);

/* Start the receive loop and the writer. With h == NULL (or all of h's
 * callbacks NULL) received frames are queued for rpc_conn_recv.
 * Frames may be queued with rpc_conn_send before the start. A connection
 * from rpc_listener_accept starts its threads only when its first frame is
 * in (or failed): frames queued before that wait for them. */
int rpc_conn_start(rpc_conn *c, const rpc_conn_handlers *h, void *user, char *err, size_t errlen);

/* Inbox mode: the next frame. RPC_OK with *out (rpc_frame_free it);
 * RPC_ETIMEDOUT (timeout_ms >= 0 elapsed); RPC_EPROTO for a body that did
 * not decode (reported once, in order; err says why); at the end the
 * close reason (RPC_ECLOSED / RPC_ETOOBIG / RPC_EPROTO / RPC_EIO) with its
 * message, on every later call too. */
int rpc_conn_recv(rpc_conn *c, Rpc__Frame **out, int timeout_ms, char *err, size_t errlen);

/* Queue a frame (encoded now, in the caller's thread). timeout_ms: how long
 * to wait for queue room (< 0 forever, 0 not at all). RPC_ETIMEDOUT when
 * there was no room in time, RPC_ECLOSED after close, RPC_ETOOBIG when the
 * frame exceeds max_frame. A frame larger than the whole queue bound is
 * accepted once the queue is empty. */
int rpc_conn_send(rpc_conn *c, const Rpc__Frame *f, int timeout_ms);
/* Queue raw bytes as they are (tools and tests: garbage, truncated frames). */
int rpc_conn_send_bytes(rpc_conn *c, const void *data, size_t len, int timeout_ms);

/* Convenience senders. payload / msg may be NULL (empty payload). */
int rpc_send_call(rpc_conn *c, uint64_t call_id, const char *method, uint32_t deadline_ms,
                  const char *api_key, const ProtobufCMessage *request, int timeout_ms);
int rpc_send_message(rpc_conn *c, uint64_t call_id, const ProtobufCMessage *msg, int timeout_ms);
int rpc_send_status(rpc_conn *c, uint64_t call_id, int code, const char *message, int timeout_ms);
int rpc_send_cancel(rpc_conn *c, uint64_t call_id, int timeout_ms);

/* Wait until everything queued has been written (RPC_OK), the time runs
 * out (RPC_ETIMEDOUT) or the connection closes (RPC_ECLOSED). Before
 * rpc_conn_start the caller's thread writes the queue itself (e.g. a last
 * STATUS for a connection that is refused without being started). */
int rpc_conn_flush(rpc_conn *c, int timeout_ms);

/* Close. linger_ms == 0: at once (queued frames are dropped); > 0: stop
 * accepting sends, let the writer flush for up to linger_ms, then close
 * (a write still blocked on a peer that does not read is cut then).
 * Idempotent; the receive loop ends with on_close(RPC_ECLOSED). */
void rpc_conn_close(rpc_conn *c, int linger_ms);
/* 1 while sends are accepted. */
int rpc_conn_is_open(rpc_conn *c);
/* Peer address for logs ("127.0.0.1:54321", "ipc", ...). */
const char *rpc_conn_peer(const rpc_conn *c);

void rpc_conn_hold(rpc_conn *c);
void rpc_conn_release(rpc_conn *c);

#endif
