/*
 * infer_client_impl.h - internals shared by the files of libinfer_client:
 * the connection and call table (infer_client.c) and the typed methods
 * (infer_client_methods.c). Not installed.
 */
#ifndef INFER_CLIENT_IMPL_H
#define INFER_CLIENT_IMPL_H

#include "clients/c/infer_client.h"
#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"

/* printf into st (when non-NULL); returns code. */
int icl_status(infer_status *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Start a call of METHOD (without the service prefix) with req as payload.
 * cb != NULL makes it a streaming call (each MESSAGE is a GenerateChunk
 * handed to cb); otherwise the first MESSAGE is kept for icl_call_take_reply.
 * Returns INFER_OK with *out, or a status (nothing to free). */
int icl_call_start(infer_client *c, const char *method, const ProtobufCMessage *req,
                   int deadline_ms, infer_chunk_fn cb, void *user, infer_call **out,
                   infer_status *st);

/* The MESSAGE frame of a unary call that ended OK (the caller frees it with
 * rpc_frame_free); NULL if the server sent none. */
Rpc__Frame *icl_call_take_reply(infer_call *call);

/* Start, wait, take the reply: for unary methods. On INFER_OK, *reply is
 * the response frame (non-NULL, payload present). */
int icl_unary(infer_client *c, const char *method, const ProtobufCMessage *req, int deadline_ms,
              Rpc__Frame **reply, infer_status *st);

#endif
