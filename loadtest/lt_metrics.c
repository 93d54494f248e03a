/*
 * lt_metrics.c - latency arithmetic of loadtest: per-request records
 * (TTFT, ITL, TPOT, E2E) and the run summary (percentiles, throughput,
 * goodput). See lt_metrics.h for the definitions.
 */
#include "loadtest/lt_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double lt_clock_monotonic(void *ctx) {
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void lt_record_init(lt_record *r, double t_sched) {
    memset(r, 0, sizeof *r);
    r->t_sched = t_sched;
    r->t_first_abs = -1;
    r->input_tokens = -1;
}

void lt_record_free(lt_record *r) {
    free(r->itl_ms);
    free(r->error);
    r->itl_ms = NULL;
    r->error = NULL;
}

void lt_record_start(lt_record *r, const lt_clock *c, double t0) {
    r->t_start_abs = lt_clock_now(c);
    r->t_send = r->t_start_abs - t0;
}

static int itl_push(lt_record *r, double v) {
    if (r->n_itl == r->cap_itl) {
        size_t cap = r->cap_itl ? r->cap_itl * 2 : 64;
        double *p = realloc(r->itl_ms, cap * sizeof *p);
        if (!p) return -1;
        r->itl_ms = p;
        r->cap_itl = cap;
    }
    r->itl_ms[r->n_itl++] = v;
    return 0;
}

int lt_record_tokens_at(lt_record *r, double now, int n) {
    if (n <= 0) return 0;
    int rc = 0;
    if (r->t_first_abs < 0) {
        r->t_first_abs = now;
    } else {
        rc |= itl_push(r, (now - r->t_last_abs) * 1000.0);
    }
    /* The extra tokens of a multi-token event arrived together: gap 0. */
    for (int i = 1; i < n; i++) rc |= itl_push(r, 0.0);
    r->t_last_abs = now;
    r->token_events_tokens += n;
    return rc;
}

int lt_record_tokens(lt_record *r, const lt_clock *c, int n) {
    return lt_record_tokens_at(r, lt_clock_now(c), n);
}

void lt_record_finish(lt_record *r, const lt_clock *c, double t0, const char *error,
                      int output_tokens, int input_tokens) {
    double now = lt_clock_now(c);
    r->finished = 1;
    r->t_done = now - t0;
    r->e2e_ms = (now - r->t_start_abs) * 1000.0;
    r->output_tokens = output_tokens >= 0 ? output_tokens : r->token_events_tokens;
    if (input_tokens >= 0) r->input_tokens = input_tokens;
    if (r->input_tokens < 0) r->input_tokens = 0;
    free(r->error);
    r->error = NULL;
    if (error) {
        r->ok = 0;
        r->error = strdup(error);
    } else {
        r->ok = 1;
    }
    r->has_ttft = r->t_first_abs >= 0;
    r->ttft_ms = r->has_ttft ? (r->t_first_abs - r->t_start_abs) * 1000.0 : 0;
    r->has_tpot = r->has_ttft && r->output_tokens >= 2;
    r->tpot_ms = r->has_tpot ? (r->e2e_ms - r->ttft_ms) / (r->output_tokens - 1) : 0;
}

double lt_percentile(const double *sorted, size_t n, double p) {
    if (n == 1) return sorted[0];
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    if (lo >= n - 1) return sorted[n - 1];
    double frac = rank - (double)lo;
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void lt_dist_compute(double *v, size_t n, lt_dist *d) {
    memset(d, 0, sizeof *d);
    d->n = n;
    if (n == 0) return;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    d->mean = sum / (double)n;
    d->p50 = lt_percentile(v, n, 50);
    d->p90 = lt_percentile(v, n, 90);
    d->p99 = lt_percentile(v, n, 99);
}

int lt_slo_met(const lt_record *r, const lt_slo *slo) {
    if (!r->ok) return 0;
    if (slo->has_ttft && (!r->has_ttft || r->ttft_ms > slo->ttft_ms)) return 0;
    if (slo->has_tpot && r->has_tpot && r->tpot_ms > slo->tpot_ms) return 0;
    return 1;
}

int lt_summarize(const lt_record *const *recs, size_t n, const lt_slo *slo, lt_summary *out) {
    memset(out, 0, sizeof *out);
    size_t n_itl = 0;
    for (size_t i = 0; i < n; i++)
        if (recs[i]->ok) n_itl += recs[i]->n_itl;
    double *ttft = malloc((n + 1) * sizeof *ttft), *tpot = malloc((n + 1) * sizeof *tpot);
    double *e2e = malloc((n + 1) * sizeof *e2e), *itl = malloc((n_itl + 1) * sizeof *itl);
    if (!ttft || !tpot || !e2e || !itl) {
        free(ttft), free(tpot), free(e2e), free(itl);
        return -1;
    }
    size_t nt = 0, np = 0, ne = 0, ni = 0;
    double first = 0, last = 0;
    for (size_t i = 0; i < n; i++) {
        const lt_record *r = recs[i];
        out->sent++;
        if (i == 0 || r->t_send < first) first = r->t_send;
        if (i == 0 || r->t_done > last) last = r->t_done;
        out->output_tokens += r->output_tokens; /* received, failed requests too */
        if (!r->ok) {
            out->failed++;
            continue;
        }
        out->ok++;
        out->input_tokens += r->input_tokens > 0 ? r->input_tokens : 0;
        if (r->has_ttft) ttft[nt++] = r->ttft_ms;
        if (r->has_tpot) tpot[np++] = r->tpot_ms;
        e2e[ne++] = r->e2e_ms;
        if (r->n_itl) memcpy(itl + ni, r->itl_ms, r->n_itl * sizeof *itl);
        ni += r->n_itl;
        if (slo && lt_slo_met(r, slo)) out->good++;
    }
    out->duration_s = n ? last - first : 0;
    lt_dist_compute(ttft, nt, &out->ttft_ms);
    lt_dist_compute(tpot, np, &out->tpot_ms);
    lt_dist_compute(e2e, ne, &out->e2e_ms);
    lt_dist_compute(itl, ni, &out->itl_ms);
    if (out->duration_s > 0) {
        out->request_rps = (double)out->ok / out->duration_s;
        out->input_tps = (double)out->input_tokens / out->duration_s;
        out->output_tps = (double)out->output_tokens / out->duration_s;
    }
    if (slo && (slo->has_ttft || slo->has_tpot)) {
        out->has_slo = 1;
        out->goodput_rps = out->duration_s > 0 ? (double)out->good / out->duration_s : 0;
        out->goodput_fraction = out->sent ? (double)out->good / (double)out->sent : 0;
    }
    free(ttft), free(tpot), free(e2e), free(itl);
    return 0;
}
