/*
 * test_loadtest_trace.c - loadtest's workload: JSONL trace parsing (good
 * traces with aliases and comments; every kind of bad line gives
 * "FILE:LINE: what is wrong"), the loader on a real file, the seeded gamma
 * arrival process (mean gap 1/R, burstiness changes the spread, same seed
 * same gaps) and synthetic prompts (deterministic, distinct per request).
 */
#include "loadtest/lt_workload.h"
#include "tests/common/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_good_trace(void) {
    const char *text =
        "# a comment\n"
        "\n"
        "{\"t\": 1.5, \"prompt\": \"Hello\", \"max_length\": 16, \"min_length\": 2, \"id\": "
        "\"b\"}\n"
        "  {\"t\": 0, \"prompt_len\": 64, \"temperature\": 0, \"top_k\": 40, \"top_p\": 0.9,"
        " \"seed\": 7, \"ignore_eos\": true, \"stop\": [\"\\n\", \"END\"]}  \r\n"
        "{\"t\": 1.5, \"prompt_len\": 3, \"max_tokens\": 4, \"min_tokens\": 0, \"stop\": \"x\"}";
    lt_trace tr;
    char err[256] = "";
    CHECKF(lt_trace_parse("good.jsonl", text, &tr, err, sizeof err) == 0, "%s", err);
    if (tr.n != 3) {
        CHECKF(0, "n = %zu", tr.n);
        lt_trace_free(&tr);
        return;
    }
    /* sorted by t, ties in file order */
    const lt_request *a = &tr.reqs[0], *b = &tr.reqs[1], *c = &tr.reqs[2];
    CHECK(a->t == 0 && a->prompt == NULL && a->prompt_len == 64 && a->max_tokens == 128);
    CHECK(a->has_temperature && a->temperature == 0 && a->has_top_k && a->top_k == 40);
    CHECK(a->has_top_p && fabs(a->top_p - 0.9) < 1e-12 && a->has_seed && a->seed == 7);
    CHECK(a->ignore_eos == 1 && a->n_stop == 2 && !strcmp(a->stop[1], "END") && a->line == 4);
    CHECK(b->t == 1.5 && b->prompt && !strcmp(b->prompt, "Hello") && b->max_tokens == 16);
    CHECK(b->has_min_tokens && b->min_tokens == 2 && b->id && !strcmp(b->id, "b"));
    CHECK(b->ignore_eos == -1 && !b->has_temperature && b->line == 3);
    CHECK(c->line == 5 && c->max_tokens == 4 && c->n_stop == 1 && !strcmp(c->stop[0], "x"));
    lt_trace_free(&tr);
}

static void expect_bad(const char *text, const char *want) {
    lt_trace tr;
    char err[512] = "";
    int rc = lt_trace_parse("trace.jsonl", text, &tr, err, sizeof err);
    CHECKF(rc == -1, "accepted: %s", text);
    /* a trailing '*' in want matches any rest (cJSON's error column varies) */
    size_t wl = strlen(want);
    int match = wl && want[wl - 1] == '*' ? !strncmp(err, want, wl - 1) : !strcmp(err, want);
    CHECKF(rc == -1 && match, "\n  got  %s\n  want %s", err, want);
    CHECK(tr.n == 0 && tr.reqs == NULL);
}

static void test_bad_lines(void) {
    const char *ok = "{\"t\": 0, \"prompt_len\": 4}\n";
    char buf[1024];
#define BAD(line, want)                                                                            \
    do {                                                                                           \
        snprintf(buf, sizeof buf, "%s# c\n%s\n", ok, line);                                        \
        expect_bad(buf, want);                                                                     \
    } while (0)
    BAD("{\"t\": 0, \"prompt_len\": 4, \"max_tokens\": \"abc\"}",
        "trace.jsonl:3: max_tokens must be an integer >= 1, got \"abc\"");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"max_length\": 0}",
        "trace.jsonl:3: max_length must be an integer >= 1, got 0");
    BAD("{\"t\": 0, \"prompt_len\": 4.5}",
        "trace.jsonl:3: prompt_len must be an integer >= 1, got 4.5");
    BAD("{\"t\": -1, \"prompt_len\": 4}",
        "trace.jsonl:3: t must be a number >= 0 (seconds), got -1");
    BAD("{\"t\": \"0\", \"prompt_len\": 4}",
        "trace.jsonl:3: t must be a number >= 0 (seconds), got \"0\"");
    BAD("{\"prompt_len\": 4}", "trace.jsonl:3: missing t (arrival offset in seconds)");
    BAD("{\"t\": 0}", "trace.jsonl:3: missing prompt (a string) or prompt_len (an integer >= 1)");
    BAD("{\"t\": 0, \"prompt\": \"x\", \"prompt_len\": 4}",
        "trace.jsonl:3: give one of prompt and prompt_len, not both");
    BAD("{\"t\": 0, \"prompt\": 5}", "trace.jsonl:3: prompt must be a string, got 5");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"max_tokens\": 8, \"max_length\": 8}",
        "trace.jsonl:3: give one of max_tokens and max_length, not both");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"temperature\": -0.5}",
        "trace.jsonl:3: temperature must be a number >= 0, got -0.5");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"top_p\": 1.5}",
        "trace.jsonl:3: top_p must be a number in (0, 1], got 1.5");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"ignore_eos\": 1}",
        "trace.jsonl:3: ignore_eos must be true or false, got 1");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"stop\": [\"a\", 3]}",
        "trace.jsonl:3: stop must be a string or an array of strings, got [\"a\",3]");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"id\": 3}", "trace.jsonl:3: id must be a string, got 3");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"min_tokens\": 9, \"max_tokens\": 8}",
        "trace.jsonl:3: min_tokens (9) must not exceed max_tokens (8)");
    BAD("{\"t\": 0, \"prompt_len\": 4, \"bogus\": 1}",
        "trace.jsonl:3: unknown key \"bogus\" (known: t, prompt, prompt_len, max_tokens, "
        "min_tokens, temperature, top_k, top_p, seed, ignore_eos, stop, id)");
    BAD("[1, 2]", "trace.jsonl:3: a trace line must be a JSON object, got [1,2]");
    BAD("{\"t\": 0, \"prompt_len\": 4", "trace.jsonl:3: invalid JSON near column *");
    BAD("{\"t\": 0, \"prompt_len\": 4} {}",
        "trace.jsonl:3: trailing characters after the JSON object (one object per line)");
#undef BAD
    expect_bad("# only comments\n\n", "trace.jsonl: no requests in the trace");
}

static void test_load_file(void) {
    char path[] = "/tmp/test_loadtest_traceXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *text =
        "{\"t\": 0.25, \"prompt\": \"a\"}\n{\"t\": 0.0, \"prompt_len\": 2, \"max_tokens\": true}\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    lt_trace tr;
    char err[512] = "", want[600];
    CHECK(lt_trace_load(path, &tr, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s:2: max_tokens must be an integer >= 1, got true", path);
    CHECKF(!strcmp(err, want), "%s", err);
    unlink(path);
    CHECK(lt_trace_load(path, &tr, err, sizeof err) == -1 && strstr(err, "No such file"));
}

static void gap_stats(uint64_t seed, double rate, double burst, int n, double *mean, double *cv) {
    lt_rng r;
    lt_rng_seed(&r, seed);
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        double g = lt_arrival_gap(&r, rate, burst);
        s += g;
        s2 += g * g;
    }
    *mean = s / n;
    double var = s2 / n - *mean * *mean;
    *cv = sqrt(var) / *mean;
}

static void test_arrivals(void) {
    double mean, cv;
    /* Poisson: mean 1/R, coefficient of variation 1 */
    gap_stats(42, 4.0, 1.0, 200000, &mean, &cv);
    CHECKF(fabs(mean - 0.25) < 0.25 * 0.02, "mean %g", mean);
    CHECKF(fabs(cv - 1.0) < 0.03, "cv %g", cv);
    /* Gamma shape B: cv = 1/sqrt(B); mean still 1/R */
    gap_stats(7, 10.0, 0.25, 200000, &mean, &cv);
    CHECKF(fabs(mean - 0.1) < 0.1 * 0.03, "mean %g", mean);
    CHECKF(fabs(cv - 2.0) < 0.1, "cv %g", cv);
    gap_stats(7, 10.0, 4.0, 200000, &mean, &cv);
    CHECKF(fabs(mean - 0.1) < 0.1 * 0.02, "mean %g", mean);
    CHECKF(fabs(cv - 0.5) < 0.02, "cv %g", cv);
    /* reproducible with the same seed, different with another */
    lt_rng a, b, c;
    lt_rng_seed(&a, 123);
    lt_rng_seed(&b, 123);
    lt_rng_seed(&c, 124);
    int same = 1, differ = 0;
    for (int i = 0; i < 1000; i++) {
        double x = lt_arrival_gap(&a, 2, 0.5), y = lt_arrival_gap(&b, 2, 0.5),
               z = lt_arrival_gap(&c, 2, 0.5);
        same &= x == y;
        differ |= x != z;
        CHECK(x > 0);
    }
    CHECK(same && differ);
}

static void test_prompts(void) {
    char *a = lt_synth_prompt(1, 0, 50), *b = lt_synth_prompt(1, 0, 50);
    char *c = lt_synth_prompt(1, 1, 50), *d = lt_synth_prompt(2, 0, 50);
    CHECK(a && b && c && d);
    if (a && b && c && d) {
        CHECK(!strcmp(a, b));
        CHECK(strcmp(a, c) && strcmp(a, d));
        /* 50 words: 49 spaces, no leading space */
        int spaces = 0;
        for (const char *p = a; *p; p++) spaces += *p == ' ';
        CHECKF(spaces == 49 && a[0] != ' ', "%s", a);
        /* no shared prefix between requests beyond a couple of words */
        size_t k = 0;
        while (a[k] && a[k] == c[k]) k++;
        CHECKF(k < 24, "prefix of %zu bytes shared: %s / %s", k, a, c);
        CHECK(lt_estimate_tokens(a) > 0);
    }
    free(a), free(b), free(c), free(d);
    char *one = lt_synth_prompt(0, 9, 1);
    CHECK(one && strlen(one) > 0 && !strchr(one, ' '));
    free(one);
}

int main(void) {
    test_good_trace();
    test_bad_lines();
    test_load_file();
    test_arrivals();
    test_prompts();
    return tu_finish("test_loadtest_trace");
}
