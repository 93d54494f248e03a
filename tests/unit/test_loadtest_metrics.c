/*
 * test_loadtest_metrics.c - loadtest's latency arithmetic on a fake clock:
 * TTFT / ITL / TPOT / E2E of single requests (multi-token events, one-token
 * requests, failures), percentiles against hand-computed (numpy-style)
 * values, and the run summary (throughput, goodput, failures kept out of
 * the latency statistics).
 */
#include "loadtest/lt_metrics.h"
#include "tests/common/test_util.h"

#include <math.h>
#include <string.h>

typedef struct {
    double t;
} fake_clock;

static double fake_now(void *ctx) { return ((fake_clock *)ctx)->t; }

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

static void test_percentiles(void) {
    double v[] = {15, 20, 35, 40, 50};
    /* numpy.percentile([15,20,35,40,50], p): 50 -> 35, 90 -> 46, 99 -> 49.6, 25 -> 20 */
    CHECK(NEAR(lt_percentile(v, 5, 50), 35));
    CHECK(NEAR(lt_percentile(v, 5, 90), 46));
    CHECK(NEAR(lt_percentile(v, 5, 99), 49.6));
    CHECK(NEAR(lt_percentile(v, 5, 25), 20));
    CHECK(NEAR(lt_percentile(v, 5, 0), 15));
    CHECK(NEAR(lt_percentile(v, 5, 100), 50));
    double one[] = {7};
    CHECK(NEAR(lt_percentile(one, 1, 99), 7));
    double even[] = {4, 1, 3, 2}; /* unsorted in: lt_dist_compute sorts */
    lt_dist d;
    lt_dist_compute(even, 4, &d);
    CHECK(d.n == 4 && NEAR(d.mean, 2.5) && NEAR(d.p50, 2.5) && NEAR(d.p90, 3.7) &&
          NEAR(d.p99, 3.97));
    lt_dist_compute(even, 0, &d);
    CHECK(d.n == 0 && d.mean == 0);
}

static void test_single_request(void) {
    fake_clock fc = {100.0};
    lt_clock c = {fake_now, &fc};
    lt_record r;
    lt_record_init(&r, 0.5);
    fc.t = 100.6; /* run started at 100.0 */
    lt_record_start(&r, &c, 100.0);
    CHECK(NEAR(r.t_send, 0.6));
    fc.t = 100.8;
    lt_record_tokens(&r, &c, 1); /* first token: TTFT 200 ms */
    fc.t = 100.85;
    lt_record_tokens(&r, &c, 1); /* gap 50 */
    fc.t = 100.95;
    lt_record_tokens(&r, &c, 3); /* gap 100, then 0, 0 */
    fc.t = 101.0;
    lt_record_finish(&r, &c, 100.0, NULL, -1, -1);
    CHECK(r.ok && r.finished && r.error == NULL);
    CHECK(r.has_ttft && NEAR(r.ttft_ms, 200));
    CHECK(NEAR(r.e2e_ms, 400));
    CHECK(r.output_tokens == 5);
    CHECK(r.n_itl == 4);
    CHECK(NEAR(r.itl_ms[0], 50) && NEAR(r.itl_ms[1], 100) && r.itl_ms[2] == 0 && r.itl_ms[3] == 0);
    CHECK(r.has_tpot && NEAR(r.tpot_ms, (400.0 - 200.0) / 4));
    CHECK(NEAR(r.t_done, 1.0));
    CHECK(r.input_tokens == 0); /* neither estimated nor reported */
    lt_record_free(&r);

    /* The server's usage overrides the counted tokens and the estimate. */
    lt_record_init(&r, 0);
    r.input_tokens = 10; /* estimate */
    fc.t = 200;
    lt_record_start(&r, &c, 200);
    fc.t = 200.1;
    lt_record_tokens(&r, &c, 1);
    fc.t = 200.3;
    lt_record_tokens(&r, &c, 1);
    fc.t = 200.5;
    lt_record_finish(&r, &c, 200, NULL, 5, 12);
    CHECK(r.output_tokens == 5 && r.input_tokens == 12);
    CHECK(NEAR(r.tpot_ms, (500.0 - 100.0) / 4));
    lt_record_free(&r);

    /* One output token: no TPOT, no ITL. */
    lt_record_init(&r, 0);
    r.input_tokens = 10;
    fc.t = 300;
    lt_record_start(&r, &c, 300);
    fc.t = 300.05;
    lt_record_tokens(&r, &c, 1);
    fc.t = 300.06;
    lt_record_finish(&r, &c, 300, NULL, -1, -1);
    CHECK(r.ok && r.has_ttft && !r.has_tpot && r.n_itl == 0 && r.output_tokens == 1);
    CHECK(r.input_tokens == 10);
    lt_record_free(&r);

    /* Failure before any token. */
    lt_record_init(&r, 0);
    fc.t = 400;
    lt_record_start(&r, &c, 400);
    fc.t = 400.2;
    lt_record_finish(&r, &c, 400, "HTTP 503: busy", -1, -1);
    CHECK(!r.ok && r.error && !strcmp(r.error, "HTTP 503: busy"));
    CHECK(!r.has_ttft && !r.has_tpot && r.output_tokens == 0 && NEAR(r.e2e_ms, 200));
    lt_record_free(&r);
}

/* A request sent at `send` (run offsets, t0 = 0) with token events at the
 * given times, finishing at `end`. */
static void make(lt_record *r, lt_clock *c, fake_clock *fc, double send, const double *toks, int n,
                 double end, const char *error, int in_tokens) {
    lt_record_init(r, send);
    r->input_tokens = in_tokens;
    fc->t = send;
    lt_record_start(r, c, 0);
    for (int i = 0; i < n; i++) {
        fc->t = toks[i];
        lt_record_tokens(r, c, 1);
    }
    fc->t = end;
    lt_record_finish(r, c, 0, error, -1, -1);
}

static void test_summary(void) {
    fake_clock fc = {0};
    lt_clock c = {fake_now, &fc};
    lt_record a, b, f, s;
    /* a: send 1.0, tokens at 1.1 1.2 1.3 1.4, end 1.4: TTFT 100, TPOT 100, E2E 400 */
    const double ta[] = {1.1, 1.2, 1.3, 1.4};
    make(&a, &c, &fc, 1.0, ta, 4, 1.4, NULL, 10);
    /* b: send 2.0, tokens at 2.3 2.4, end 2.5: TTFT 300, TPOT 200, E2E 500 */
    const double tb[] = {2.3, 2.4};
    make(&b, &c, &fc, 2.0, tb, 2, 2.5, NULL, 20);
    /* s: one token: send 3.0, token 3.05, end 3.05: TTFT 50, no TPOT, E2E 50 */
    const double ts[] = {3.05};
    make(&s, &c, &fc, 3.0, ts, 1, 3.05, NULL, 5);
    /* f: failed after 2 tokens, ends last at 5.0: excluded from latencies */
    const double tf[] = {3.5, 4.5};
    make(&f, &c, &fc, 3.0, tf, 2, 5.0, "connection closed", 7);

    const lt_record *recs[] = {&a, &b, &s, &f};
    lt_slo slo = {1, 1, 250, 150}; /* ttft <= 250, tpot <= 150 */
    lt_summary sm;
    CHECK(lt_summarize(recs, 4, &slo, &sm) == 0);
    CHECK(sm.sent == 4 && sm.ok == 3 && sm.failed == 1);
    CHECK(NEAR(sm.duration_s, 4.0)); /* first send 1.0 -> last completion 5.0 */
    CHECK(sm.input_tokens == 35 && sm.output_tokens == 4 + 2 + 1 + 2); /* input: ok only */
    CHECK(NEAR(sm.request_rps, 3 / 4.0));
    CHECK(NEAR(sm.output_tps, 9 / 4.0) && NEAR(sm.input_tps, 35 / 4.0));
    /* TTFT {100, 300, 50}: mean 150, p50 100, p90 260, p99 296 */
    CHECK(sm.ttft_ms.n == 3 && NEAR(sm.ttft_ms.mean, 150) && NEAR(sm.ttft_ms.p50, 100));
    CHECK(NEAR(sm.ttft_ms.p90, 260) && NEAR(sm.ttft_ms.p99, 296));
    /* TPOT {100, 200} (the one-token request has none) */
    CHECK(sm.tpot_ms.n == 2 && NEAR(sm.tpot_ms.mean, 150) && NEAR(sm.tpot_ms.p50, 150));
    CHECK(NEAR(sm.tpot_ms.p90, 190));
    /* ITL {100,100,100} from a, {100} from b; the failure's 1000 is left out */
    CHECK(sm.itl_ms.n == 4 && NEAR(sm.itl_ms.mean, 100) && NEAR(sm.itl_ms.p99, 100));
    /* E2E {400, 500, 50} */
    CHECK(sm.e2e_ms.n == 3 && NEAR(sm.e2e_ms.p50, 400) && NEAR(sm.e2e_ms.mean, 950.0 / 3));
    /* goodput: a meets both, b fails TTFT (300 > 250), s meets (no TPOT) */
    CHECK(sm.has_slo && sm.good == 2);
    CHECK(NEAR(sm.goodput_rps, 2 / 4.0) && NEAR(sm.goodput_fraction, 0.5));
    CHECK(lt_slo_met(&a, &slo) && !lt_slo_met(&b, &slo) && lt_slo_met(&s, &slo) &&
          !lt_slo_met(&f, &slo));

    /* TTFT-only SLO */
    lt_slo ttft_only = {1, 0, 350, 0};
    CHECK(lt_summarize(recs, 4, &ttft_only, &sm) == 0 && sm.good == 3);
    /* no SLO: no goodput */
    CHECK(lt_summarize(recs, 4, NULL, &sm) == 0 && !sm.has_slo && sm.good == 0);
    /* everything failed: empty distributions, no crash */
    const lt_record *only_f[] = {&f};
    CHECK(lt_summarize(only_f, 1, &slo, &sm) == 0 && sm.ok == 0 && sm.ttft_ms.n == 0 &&
          sm.e2e_ms.n == 0 && sm.good == 0 && NEAR(sm.duration_s, 2.0));
    CHECK(lt_summarize(NULL, 0, NULL, &sm) == 0 && sm.sent == 0 && sm.duration_s == 0);
    lt_record_free(&a);
    lt_record_free(&b);
    lt_record_free(&s);
    lt_record_free(&f);
}

int main(void) {
    test_percentiles();
    test_single_request();
    test_summary();
    return tu_finish("test_loadtest_metrics");
}
