/*
 * relay.h - one generation call's life between a front end (RPC in
 * server/rpc_server.c, HTTP in server/http_call.c) and the engine.
 *
 * A relay submits the prepared request, waits on the engine stream with the
 * call's deadline, accounts every event (per-choice text, token ids and
 * finish reasons for unary replies; usage and timings for both modes),
 * records the latency metrics once per call from the engine's own clock,
 * ends the call early when asked (client cancel, peer gone, shutdown) by
 * cancelling the engine request, and tears the call down. Front ends only
 * decode requests and encode what the relay hands them.
 *
 * Metrics (one definition for every front end, all from engine timings):
 *   TTFT  submit -> first token of the call's earliest completion;
 *   ITL   between consecutive tokens of one completion (event clock);
 *   E2E   submit -> the last completion's finish.
 *
 * Life of a call:
 *   relay_create    counts the call in srv.active_calls
 *   relay_submit    srv_submit in a mode; the engine request runs from here
 *   relay_next      (stream mode) the events to encode, or
 *   relay_wait      (unary mode) until the end, accumulating
 *   relay_outcome   the call's status from how it ended
 *   relay_finish    counts the final status and the metrics, and takes
 *                   the call out of active_calls, before the client is told
 *   relay_free      frees the stream and the accumulated result
 * A call that fails before relay_submit still goes through relay_finish.
 *
 * Threads: one thread (the call's) drives create .. free. relay_cancel and
 * relay_end_reason may be called from any thread until relay_free, e.g. from
 * a connection's receive loop or httpd's callback that sees the peer go.
 * Ownership: the relay borrows srv; the caller owns the srv_request.
 * Errors: status codes from server.h.
 */
#ifndef SERVER_RELAY_H
#define SERVER_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "server/server.h"

typedef enum {
    RELAY_UNARY = 0, /* one reply at the end: text, ids and logprobs are accumulated */
    RELAY_STREAM,    /* every event is handed to the front end */
} relay_mode;

/* Why a call ended before the engine finished it on its own. */
typedef enum {
    RELAY_END_NONE = 0,
    RELAY_END_CANCEL,    /* the client cancelled it (CANCEL frame, Cancel method) */
    RELAY_END_DEADLINE,  /* its deadline passed */
    RELAY_END_PEER_GONE, /* the client went away: nobody is left to answer */
    RELAY_END_SHUTDOWN,  /* the server cancelled it while shutting down */
} relay_end;

/* A sampled token and its logprobs (unary mode, request.logprobs). */
typedef struct {
    int32_t token;
    engine_logprobs lp;
} relay_logprob;

typedef struct {
    strbuf text;  /* unary mode */
    int32_t *ids; /* unary mode, when the request asked for token ids */
    size_t n_ids, cap_ids;
    relay_logprob *lps; /* unary mode, when the request asked for logprobs: one per token */
    size_t n_lps, cap_lps;
    gen_finish finish; /* GEN_FINISH_ERROR until its FINISH event */
    int finished;
    int completion_tokens;
} relay_choice;

typedef struct {
    int n; /* completions */
    relay_choice *choices;
    int prompt_tokens, completion_tokens; /* completion_tokens: all choices */
    double queue_ms, ttft_ms, total_ms;   /* of the call: earliest first token, last finish */
    int any_error;                        /* a completion finished with GEN_FINISH_ERROR */
    int oom;                              /* accumulating the reply ran out of memory */
} relay_result;

typedef struct relay relay;

/* deadline_at: clock_now_ms() value at which the call is cancelled with
 * DEADLINE_EXCEEDED; 0 = none. NULL on OOM (nothing counted). */
relay *relay_create(srv *s, double deadline_at);

/* Submit a prepared request (srv_submit; req is only read here). Returns
 * SRV_OK or its status with a message; a call cancelled before this is
 * cancelled at once. */
int relay_submit(relay *r, const srv_request *req, relay_mode mode, char *err, size_t errlen);
/* The engine request's id; -1 before relay_submit succeeded. */
int64_t relay_engine_id(const relay *r);

/* End the call early (the first reason wins) and cancel its engine
 * request, whose KV blocks are freed at the next engine step. Returns 1
 * when this reason won. Any thread. */
int relay_cancel(relay *r, relay_end why);
relay_end relay_end_reason(const relay *r);

/* Stream mode: the next event to encode, with the deadline applied.
 * 1 = *ev filled (the caller clears it), 0 = none within timeout_ms
 * (>= 0; -1 waits), -1 = the stream ended. Once the call ended early,
 * the remaining TOKEN events are drained here; FINISH events are still
 * returned, for a front end that closes each completion (HTTP's SSE). */
int relay_next(relay *r, engine_event *ev, int timeout_ms);

/* Unary mode: wait for the end, accumulating the reply. */
void relay_wait(relay *r);

const relay_result *relay_result_get(const relay *r);

/* The status the call ended with: OK, CANCELLED (client cancel or peer
 * gone), DEADLINE_EXCEEDED, UNAVAILABLE (shutdown, or the engine
 * cancelled it), INTERNAL (engine error), RESOURCE_EXHAUSTED (OOM). */
int relay_outcome(const relay *r);

/* Record the call once: its final status (which may differ from
 * relay_outcome when encoding or sending failed), its latency metrics,
 * and its end in active_calls. */
void relay_finish(relay *r, int status);

/* Frees the engine stream (cancelling a request still running) and the
 * result. NULL is a no-op. */
void relay_free(relay *r);

#endif
