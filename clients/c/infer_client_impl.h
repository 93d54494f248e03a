/*
 * infer_client_impl.h - internals shared by the files of libinfer_client:
 * one connection and its call table (infer_client.c), the endpoints and
 * their heartbeat (infer_client_pool.c) and the typed methods
 * (infer_client_methods.c). Not installed.
 */
#ifndef INFER_CLIENT_IMPL_H
#define INFER_CLIENT_IMPL_H

#include <stdatomic.h>

#include "clients/c/infer_client.h"
#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"

/* printf into st (when non-NULL); returns code. */
int icl_status(infer_status *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- one connection (infer_client.c) ---- */

typedef struct icl_conn icl_conn;

/* Dial url and start the receive thread; *out holds one reference.
 * Returns 0, or -1 with a message in err. */
int icl_conn_open(const char *url, const infer_client_opts *o, int connect_timeout_ms,
                  icl_conn **out, char *err, size_t errlen);
/* Close the transport now (calls still open end with UNAVAILABLE, from the
 * receive thread); the memory stays until the last reference goes. */
void icl_conn_shut(icl_conn *c);
void icl_conn_ref(icl_conn *c);
/* Drop a reference; the last one closes, waits for the receive thread and
 * frees. Not from the connection's own callbacks. NULL is a no-op. */
void icl_conn_unref(icl_conn *c);
/* 1 while the connection takes calls. */
int icl_conn_is_up(icl_conn *c);

/* Start a call of METHOD (without the service prefix) with req as payload.
 * cb != NULL makes it a streaming call (each MESSAGE is a GenerateChunk
 * handed to cb); otherwise the first MESSAGE is kept for icl_call_take_reply.
 * inflight (may be NULL) was incremented by the caller for this call; it
 * is decremented when the call ends or fails to start. The call
 * holds a reference on c until infer_call_free. Returns INFER_OK with *out,
 * or a status (nothing to free). */
int icl_conn_call_start(icl_conn *c, const char *method, const ProtobufCMessage *req,
                        int deadline_ms, infer_chunk_fn cb, void *user, atomic_int *inflight,
                        infer_call **out, infer_status *st);

/* The MESSAGE frame of a unary call that ended OK (the caller frees it with
 * rpc_frame_free); NULL if the server sent none. */
Rpc__Frame *icl_call_take_reply(infer_call *call);

/* Start, wait, take the reply on one connection. On INFER_OK, *reply is the
 * response frame (non-NULL, payload present). */
int icl_conn_unary(icl_conn *c, const char *method, const ProtobufCMessage *req, int deadline_ms,
                   atomic_int *inflight, Rpc__Frame **reply, infer_status *st);

/* ---- the endpoints (infer_client_pool.c) ---- */

/* Unary call with failover: on the least busy server that is up; a call
 * that ends UNAVAILABLE is tried again on another one while the deadline
 * allows. Same result contract as icl_conn_unary. */
int icl_unary(infer_client *c, const char *method, const ProtobufCMessage *req, int deadline_ms,
              Rpc__Frame **reply, infer_status *st);

/* Start a streaming call on the least busy server that is up (another one
 * when the connection turns out closed before the call was sent). */
int icl_stream_start(infer_client *c, const char *method, const ProtobufCMessage *req,
                     int deadline_ms, infer_chunk_fn cb, void *user, infer_call **out,
                     infer_status *st);

/* ---- typed replies (infer_client_methods.c), for the heartbeat ---- */

/* Decode a Health reply into status (may be NULL). */
int icl_health_decode(const Rpc__Frame *f, char *status, size_t statuslen, infer_status *st);
/* Decode a Stats reply. */
int icl_stats_decode(const Rpc__Frame *f, infer_stats_t *out, infer_status *st);

#endif
