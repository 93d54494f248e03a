/*
 * metrics.h - the server's counters and latency histograms, rendered in the
 * Prometheus text format at GET /metrics (together with the engine's stats:
 * queue lengths, running/swapped sequences, KV blocks per tier,
 * preemptions, token counts).
 *
 * Every field is atomic: any thread may observe; the renderer reads a
 * consistent-enough snapshot without locks.
 */
#ifndef SERVER_METRICS_H
#define SERVER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#include "engine/engine.h"

#define SRV_HIST_BUCKETS 14 /* upper bounds in ms: see metrics.c */
#define SRV_N_STATUS 17     /* gRPC codes 0..16 */

typedef struct {
    atomic_long count[SRV_HIST_BUCKETS + 1]; /* last = +Inf */
    atomic_long n;
    atomic_long sum_us;
} srv_hist;

typedef struct {
    atomic_long calls_by_status[SRV_N_STATUS]; /* finished calls (RPC and HTTP) by status */
    atomic_long http_requests;
    /* Per call, from the engine's timings (server/relay.h defines them). */
    srv_hist ttft_ms; /* submit -> first token */
    srv_hist itl_ms;  /* between consecutive tokens of one completion */
    srv_hist e2e_ms;  /* submit -> finish */
} srv_metrics;

/* The server's gauges at render time (their owner is struct srv). */
typedef struct {
    long active_calls;
    long connections;
    int draining;
} srv_metrics_gauges;

void srv_hist_observe(srv_hist *h, double ms);
void srv_metrics_count_status(srv_metrics *m, int status);
/* Prometheus text exposition of m, g and (when eng is not NULL) the
 * engine's stats; *out is malloc'd. Returns 0 or -1 (OOM). */
int srv_metrics_render(srv_metrics *m, const srv_metrics_gauges *g, engine *eng, char **out,
                       size_t *len);

#endif
