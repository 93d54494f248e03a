/*
 * metrics.c - the server's counters and latency histograms (metrics.h) and
 * their Prometheus text exposition (format 0.0.4) for GET /metrics.
 *
 * Histograms keep one non-cumulative count per bucket so that observing is
 * a single atomic add; the renderer accumulates them. Bounds are kept in
 * milliseconds and exported in seconds, the Prometheus base unit. The
 * exported _count is the sum of the buckets read, so it always equals the
 * +Inf bucket even while other threads observe.
 */
#include "server/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"

static const double hist_bounds_ms[SRV_HIST_BUCKETS] = {5,   10,  25,  50,   75,   100,  150,
                                                        250, 500, 750, 1000, 2500, 5000, 10000};

/* rpc.proto StatusCode names, indexed by code. */
static const char *const status_names[SRV_N_STATUS] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

void srv_hist_observe(srv_hist *h, double ms) {
    if (!(ms >= 0)) ms = 0; /* NaN and negative clock skew count as 0 */
    int b = 0;
    while (b < SRV_HIST_BUCKETS && ms > hist_bounds_ms[b]) b++;
    atomic_fetch_add_explicit(&h->count[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->n, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (long)llround(ms * 1000.0), memory_order_relaxed);
}

void srv_metrics_count_status(srv_metrics *m, int status) {
    if (status < 0 || status >= SRV_N_STATUS) status = 2; /* UNKNOWN */
    atomic_fetch_add_explicit(&m->calls_by_status[status], 1, memory_order_relaxed);
}

/* ---- a growable text buffer ---- */

static void header(strbuf *b, const char *name, const char *type, const char *help) {
    strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_long(strbuf *b, const char *name, const char *type, const char *help, long v) {
    header(b, name, type, help);
    strbuf_printf(b, "%s %ld\n", name, v);
}

static void render_hist(strbuf *b, const char *name, const char *help, srv_hist *h) {
    header(b, name, "histogram", help);
    long cum = 0;
    for (int i = 0; i <= SRV_HIST_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->count[i], memory_order_relaxed);
        if (i < SRV_HIST_BUCKETS)
            strbuf_printf(b, "%s_bucket{le=\"%g\"} %ld\n", name, hist_bounds_ms[i] / 1000.0, cum);
        else strbuf_printf(b, "%s_bucket{le=\"+Inf\"} %ld\n", name, cum);
    }
    double sum_s = (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6;
    strbuf_printf(b, "%s_sum %.6f\n%s_count %ld\n", name, sum_s, name, cum);
}

int srv_metrics_render(srv_metrics *m, const srv_metrics_gauges *g, engine *eng, char **out,
                       size_t *len) {
    strbuf b = {.p = malloc(8192), .cap = 8192};
    if (!b.p) return -1;
    b.p[0] = 0;

    header(&b, "infer_calls_total", "counter",
           "Finished generation calls (RPC and HTTP) by final status.");
    for (int i = 0; i < SRV_N_STATUS; i++)
        strbuf_printf(&b, "infer_calls_total{status=\"%s\"} %ld\n", status_names[i],
                      atomic_load_explicit(&m->calls_by_status[i], memory_order_relaxed));
    metric_long(&b, "infer_http_requests_total", "counter", "HTTP requests received.",
                atomic_load_explicit(&m->http_requests, memory_order_relaxed));
    render_hist(&b, "infer_time_to_first_token_seconds",
                "Time from submit to the first generated token.", &m->ttft_ms);
    render_hist(&b, "infer_inter_token_latency_seconds",
                "Time between consecutive tokens of one completion.", &m->itl_ms);
    render_hist(&b, "infer_request_duration_seconds",
                "Time from submit to the finish of a call's last completion.", &m->e2e_ms);
    metric_long(&b, "infer_active_calls", "gauge", "Calls in flight, all front ends.",
                g->active_calls);
    metric_long(&b, "infer_rpc_connections", "gauge", "Open RPC connections.", g->connections);
    metric_long(&b, "infer_draining", "gauge", "1 while the server drains for shutdown.",
                g->draining ? 1 : 0);

    if (eng) {
        engine_stats st;
        engine_get_stats(eng, &st);
        metric_long(&b, "infer_sequences_waiting", "gauge", "Requests waiting for admission.",
                    st.n_waiting);
        metric_long(&b, "infer_sequences_running", "gauge", "Requests running on the device.",
                    st.n_running);
        metric_long(&b, "infer_sequences_swapped", "gauge", "Requests preempted to the CPU tier.",
                    st.n_swapped);
        static const char *const tiers[2] = {"device", "cpu"};
        header(&b, "infer_kv_blocks_total", "gauge", "KV cache blocks per tier.");
        for (int t = 0; t < 2; t++)
            strbuf_printf(&b, "infer_kv_blocks_total{tier=\"%s\"} %d\n", tiers[t],
                          st.blocks_total[t]);
        header(&b, "infer_kv_blocks_free", "gauge",
               "KV cache blocks free for allocation per tier (device: with the cached ones).");
        for (int t = 0; t < 2; t++)
            strbuf_printf(&b, "infer_kv_blocks_free{tier=\"%s\"} %d\n", tiers[t],
                          st.blocks_free[t]);
        header(&b, "infer_kv_blocks_used", "gauge", "KV cache blocks in use per tier.");
        for (int t = 0; t < 2; t++)
            strbuf_printf(&b, "infer_kv_blocks_used{tier=\"%s\"} %d\n", tiers[t],
                          st.blocks_total[t] - st.blocks_free[t]);
        metric_long(&b, "infer_kv_blocks_cached", "gauge",
                    "Device blocks kept for the prefix cache (unused, evictable; counted free).",
                    st.blocks_cached);
        metric_long(&b, "infer_prefix_cache_queried_tokens_total", "counter",
                    "Prompt tokens looked up in the prefix cache at admission.",
                    st.prefix_queried_tokens);
        metric_long(&b, "infer_prefix_cache_hit_tokens_total", "counter",
                    "Prompt tokens found computed in the prefix cache (not prefilled again).",
                    st.prefix_hit_tokens);
        metric_long(&b, "infer_prefix_cache_evictions_total", "counter",
                    "Cached blocks evicted to be reused for other KV.", st.prefix_evictions);
        metric_long(&b, "infer_kv_block_size_tokens", "gauge", "Tokens per KV block.",
                    st.block_size);
        metric_long(&b, "infer_kv_tokens", "gauge", "Tokens held in the device tier.",
                    st.kv_tokens);
        metric_long(&b, "infer_kv_peak_blocks_used", "gauge",
                    "Most device blocks in use at once since start.", st.peak_blocks_used);
        header(&b, "infer_preemptions_total", "counter", "Sequences preempted, by mode.");
        strbuf_printf(&b, "infer_preemptions_total{mode=\"swap\"} %ld\n", st.preempt_swap);
        strbuf_printf(&b, "infer_preemptions_total{mode=\"recompute\"} %ld\n",
                      st.preempt_recompute);
        metric_long(&b, "infer_swap_ins_total", "counter", "Swapped sequences brought back.",
                    st.swap_in);
        metric_long(&b, "infer_prompt_tokens_total", "counter", "Prompt tokens processed.",
                    st.prompt_tokens);
        metric_long(&b, "infer_generated_tokens_total", "counter", "Tokens generated.",
                    st.generated_tokens);
        metric_long(&b, "infer_requests_finished_total", "counter",
                    "Engine requests finished (any reason).", st.requests_finished);
        metric_long(&b, "infer_engine_steps_total", "counter", "Engine forward steps.", st.steps);
        metric_long(&b, "infer_last_step_tokens", "gauge", "Rows in the latest forward step.",
                    st.last_step_tokens);
        header(&b, "infer_engine_seconds_total", "counter",
               "Engine thread time by phase: forward passes, sampling (masks included).");
        strbuf_printf(&b, "infer_engine_seconds_total{phase=\"forward\"} %.6f\n",
                      st.forward_ms / 1e3);
        strbuf_printf(&b, "infer_engine_seconds_total{phase=\"sample\"} %.6f\n",
                      st.sample_ms / 1e3);
    }
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
