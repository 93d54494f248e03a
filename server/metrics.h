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
    srv_hist ttft_ms; /* submit -> first token */
    srv_hist itl_ms;  /* between consecutive tokens of a stream */
    srv_hist e2e_ms;  /* submit -> finish */
} srv_metrics;

struct srv;

void srv_hist_observe(srv_hist *h, double ms);
void srv_metrics_count_status(srv_metrics *m, int status);
/* Prometheus text exposition; *out is malloc'd. Returns 0 or -1 (OOM). */
int srv_metrics_render(struct srv *s, char **out, size_t *len);

#endif
