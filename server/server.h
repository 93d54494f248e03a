/*
 * server.h - state shared by the inference server's front ends (the RPC
 * listener in server/rpc_server.c and the HTTP listener in server/http.c).
 *
 * One srv owns the model, tokenizer, backend and engine for the process.
 * Both front ends turn their input into an Inference__GenerateRequest and
 * call srv_prepare(), so validation rules and messages are the same on
 * every path; they then submit to the engine and relay its events.
 *
 * Thread-safety: everything here may be called from any thread (the engine
 * API is thread-safe; counters are atomic).
 */
#ifndef SERVER_SERVER_H
#define SERVER_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/engine.h"
#include "proto/inference.pb-c.h"
#include "server/metrics.h"
#include "server/server_config.h"

struct llm_model;
struct backend;
struct llm_tokenizer;

typedef struct srv {
    engine_config cfg;   /* the engine's sections of the config */
    server_settings net; /* the server section: listeners, limits, API key */
    struct llm_model *model;
    struct backend *be;
    struct llm_tokenizer *tok;
    engine *eng;
    const char *chat_template; /* from the GGUF, NUL-terminated copy, may be NULL */
    atomic_int draining;       /* set on SIGTERM/SIGINT: new calls get UNAVAILABLE */
    atomic_int active_calls;   /* calls in flight, all front ends */
    atomic_int connections;    /* open RPC connections */
    srv_metrics metrics;
    struct srv_http *http; /* HTTP front end (server/http.c); NULL when off */
} srv;

/* gRPC status codes (rpc.proto StatusCode). */
enum {
    SRV_OK = 0,
    SRV_CANCELLED = 1,
    SRV_INVALID_ARGUMENT = 3,
    SRV_DEADLINE_EXCEEDED = 4,
    SRV_NOT_FOUND = 5,
    SRV_RESOURCE_EXHAUSTED = 8,
    SRV_UNIMPLEMENTED = 12,
    SRV_INTERNAL = 13,
    SRV_UNAVAILABLE = 14,
    SRV_UNAUTHENTICATED = 16,
};

/* A validated request ready for engine_submit; owns its token ids and
 * stop strings. */
typedef struct {
    engine_request req;
    int32_t *prompt_ids;
    char **stop;
    int32_t *stop_ids;
    char *json_schema; /* req.json_schema's copy */
    int return_token_ids;
} srv_request;

/* Validate and tokenize (text, ids or chat messages). Returns SRV_OK or a
 * status code (INVALID_ARGUMENT, ...) with a precise message, e.g.
 * "sampling.top_p must be in (0, 1], got 1.5". */
int srv_prepare(srv *s, const Inference__GenerateRequest *in, srv_request *out, char *err,
                size_t errlen);
void srv_request_free(srv_request *r);

/* Submit a prepared request; maps engine errors to status codes
 * (EBUSY -> RESOURCE_EXHAUSTED, ESTOPPED -> UNAVAILABLE, EINVAL ->
 * INVALID_ARGUMENT). */
int srv_submit(srv *s, const srv_request *r, engine_stream **out, int64_t *id, char *err,
               size_t errlen);

/* Shared-secret check; SRV_OK when no key is configured. */
int srv_check_key(const srv *s, const char *presented);

/* "length", "stop", ... for an engine finish reason. */
const char *srv_finish_reason(int gen_finish_value);

/* HTTP front end (server/http.c) */
/* Serve HTTP at url ("http://host:port"). Returns 0, or -1 with a message. */
int srv_http_start(srv *s, const char *url, char *err, size_t errlen);
/* Cancel the HTTP calls in flight, wait for their threads, close the
 * listener. A no-op when srv_http_start was not called or failed. */
void srv_http_stop(srv *s);

#endif
