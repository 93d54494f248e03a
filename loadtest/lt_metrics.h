/*
 * lt_metrics.h - per-request latency records and the run summary of
 * loadtest.
 *
 * Pure arithmetic: nothing here does I/O or reads a clock directly. Times
 * come from an injected lt_clock so the tests can drive a fake one. A
 * record belongs to one thread at a time (the worker running the request,
 * then the summariser once the request has finished).
 *
 * Definitions (docs/loadtest.md says the same for users):
 *   TTFT  send -> first token event received (client clock).
 *   ITL   gap between successive token events; an event that carries k > 1
 *         tokens adds its gap once and k-1 gaps of 0.
 *   TPOT  (E2E - TTFT) / (output tokens - 1); undefined for < 2 tokens.
 *   E2E   send -> end of the request (last byte / final status).
 *   Percentiles: linear interpolation between closest ranks (numpy's
 *   default): rank = p/100 * (n-1).
 * Failed requests count in sent/failed and token totals, never in the
 * latency distributions.
 */
#ifndef LT_METRICS_H
#define LT_METRICS_H

#include <stddef.h>

/* A monotonic clock in seconds. */
typedef struct {
    double (*now)(void *ctx);
    void *ctx;
} lt_clock;

/* CLOCK_MONOTONIC in seconds (ctx unused). */
double lt_clock_monotonic(void *ctx);

static inline double lt_clock_now(const lt_clock *c) { return c->now(c->ctx); }

typedef struct {
    /* offsets from the run's start, seconds */
    double t_sched, t_send, t_done;
    /* absolute clock values, seconds (t_first < 0: no token yet) */
    double t_start_abs, t_first_abs, t_last_abs;
    double *itl_ms;
    size_t n_itl, cap_itl;
    int token_events_tokens; /* tokens counted from received events */
    int input_tokens;        /* server's count when reported, else the estimate */
    int output_tokens;       /* server's count when reported, else counted */
    int ok;                  /* 1 after a successful finish */
    int finished;
    char finish_reason[24];
    char *error; /* malloc'd, NULL when ok */
    /* derived at finish (ms); has_* = 0 when undefined */
    double ttft_ms, tpot_ms, e2e_ms;
    int has_ttft, has_tpot;
} lt_record;

void lt_record_init(lt_record *r, double t_sched);
void lt_record_free(lt_record *r);
/* The request is being sent now; t0 is the run's start on the same clock. */
void lt_record_start(lt_record *r, const lt_clock *c, double t0);
/* A token event carrying n >= 1 tokens arrived now. Returns 0, -1 on OOM. */
int lt_record_tokens(lt_record *r, const lt_clock *c, int n);
/* Same, at an explicit clock value (events parsed from one read share it). */
int lt_record_tokens_at(lt_record *r, double now, int n);
/* The request ended now. error NULL = success. output_tokens / input_tokens
 * < 0 = not reported by the server (the counted events / the estimate
 * already in r->input_tokens are kept). */
void lt_record_finish(lt_record *r, const lt_clock *c, double t0, const char *error,
                      int output_tokens, int input_tokens);

/* Summary of one distribution; n = 0 means no values (others are 0). */
typedef struct {
    size_t n;
    double mean, p50, p90, p99;
} lt_dist;

/* Linear-interpolation percentile (0..100) of sorted values, n >= 1. */
double lt_percentile(const double *sorted, size_t n, double p);
/* Fill d from the values (sorted in place). */
void lt_dist_compute(double *v, size_t n, lt_dist *d);

typedef struct {
    int has_ttft, has_tpot;
    double ttft_ms, tpot_ms;
} lt_slo;

/* 1 when the record succeeded and meets every part of the SLO that is set
 * (a request without TPOT, i.e. one output token, passes the TPOT part). */
int lt_slo_met(const lt_record *r, const lt_slo *slo);

typedef struct {
    size_t sent, ok, failed;
    double duration_s;       /* first send -> last completion */
    long long input_tokens;  /* over successful requests (prompts that were served) */
    long long output_tokens; /* over every request (tokens received, failures too) */
    double request_rps, input_tps, output_tps; /* ok requests / tokens per second of duration */
    lt_dist ttft_ms, tpot_ms, itl_ms, e2e_ms;
    int has_slo;
    size_t good;
    double goodput_rps, goodput_fraction; /* good / duration, good / sent */
} lt_summary;

/* Summarise n finished records; slo may be NULL (no goodput). Returns 0,
 * -1 on OOM. */
int lt_summarize(const lt_record *const *recs, size_t n, const lt_slo *slo, lt_summary *out);

#endif
