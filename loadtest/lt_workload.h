/*
 * lt_workload.h - what loadtest sends and when: request specs read from a
 * JSON Lines trace, synthetic prompts of a given token length, and the
 * seeded gamma arrival process of open-loop runs.
 *
 * No global state; the RNG is a value the caller owns. Errors come back as
 * messages ("trace.jsonl:7: max_tokens must be an integer >= 1, got \"abc\"").
 */
#ifndef LT_WORKLOAD_H
#define LT_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

/* One request's contents. Unset numbers: has_* = 0 (server default). */
typedef struct {
    double t;       /* arrival offset, seconds (trace replay) */
    char *id;       /* NULL when none */
    char *prompt;   /* NULL when prompt_len is used */
    int prompt_len; /* tokens to synthesise (when prompt is NULL) */
    int max_tokens; /* always set (default 128) */
    int has_min_tokens, min_tokens;
    int has_temperature;
    double temperature;
    int has_top_k, top_k;
    int has_top_p;
    double top_p;
    int has_seed;
    uint64_t seed;
    int ignore_eos; /* -1 unset, 0, 1 */
    char **stop;
    size_t n_stop;
    int line; /* trace line number, 0 when not from a trace */
} lt_request;

void lt_request_free(lt_request *r);

typedef struct {
    lt_request *reqs; /* sorted by t (stable) */
    size_t n;
} lt_trace;

/* Parse a JSONL trace file. Returns 0, or -1 with err set
 * ("FILE:LINE: what is wrong"). */
int lt_trace_load(const char *path, lt_trace *out, char *err, size_t errlen);
/* The same from a string (name is used in messages). */
int lt_trace_parse(const char *name, const char *text, lt_trace *out, char *err, size_t errlen);
void lt_trace_free(lt_trace *t);

/* xoshiro256** seeded through splitmix64. */
typedef struct {
    uint64_t s[4];
} lt_rng;

void lt_rng_seed(lt_rng *r, uint64_t seed);
uint64_t lt_rng_next(lt_rng *r);
double lt_rng_uniform(lt_rng *r); /* (0, 1) */
double lt_rng_normal(lt_rng *r);
/* Gamma(shape, scale) by Marsaglia and Tsang (shape < 1 boosted). */
double lt_rng_gamma(lt_rng *r, double shape, double scale);

/* Gap before the next open-loop arrival: Gamma(shape=burstiness,
 * scale=1/(rate*burstiness)), mean 1/rate; burstiness 1 = Poisson. */
double lt_arrival_gap(lt_rng *r, double rate, double burstiness);

/* A prompt of about n tokens made of common English words (each one BPE
 * token in typical vocabularies), deterministic in (seed, index): different
 * indices give different word sequences from the first word on. malloc'd. */
char *lt_synth_prompt(uint64_t seed, uint64_t index, int n);

/* Rough token estimate of a text (for servers that report no usage). */
int lt_estimate_tokens(const char *text);

#endif
