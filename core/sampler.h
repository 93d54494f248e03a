/*
 * sampler.h - turns one row of logits into the next token, per request.
 *
 * A sampler holds one request's parameters, its own PRNG and scratch memory
 * sized for the vocabulary. The pipeline (the order llama.cpp uses):
 *   repetition penalty -> temperature -> top-k -> top-p -> min-p -> draw.
 * temperature == 0 means greedy: the penalized argmax, ties to the lowest id.
 * top-p's mass is measured over what top-k kept; min-p's threshold is
 * relative to the most likely token. Candidates are never fully sorted when
 * a cut makes that unnecessary (heap / partial selection over the vocab).
 *
 * Determinism: same parameters (seed included) + same logits + same history
 * => same tokens. There is no global state; rand() is never used.
 *
 * Ownership: the caller owns the logits and history it passes; the sampler
 * owns its scratch. Thread-safety: one thread at a time per sampler;
 * different samplers are independent.
 */
#ifndef ENGINE_SAMPLER_H
#define ENGINE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float temperature;        /* 0 = greedy; must be >= 0 */
    int top_k;                /* 0 = off (whole vocabulary); must be >= 0 */
    float top_p;              /* in (0, 1]; 1 = off */
    float min_p;              /* in [0, 1]; 0 = off */
    float repetition_penalty; /* > 0; 1 = off. CTRL-style: positive logits are
                                 divided, negative ones multiplied */
    int repeat_last_n;        /* tokens of history the penalty looks at; 0 = off,
                                 -1 = the whole history */
    uint64_t seed;
} sampler_params;

/* llama.cpp-like defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repetition_penalty 1.0, repeat_last_n 64, seed 0. */
void sampler_params_default(sampler_params *p);

/* 0 when valid; otherwise -1 and a message naming the bad field and value. */
int sampler_params_validate(const sampler_params *p, char *err, size_t errlen);

typedef struct sampler sampler;

/* Validates p and allocates scratch for n_vocab logits. Returns 0 or -1 with
 * a message. */
int sampler_create(const sampler_params *p, int n_vocab, sampler **out, char *err, size_t errlen);
void sampler_free(sampler *s);
const sampler_params *sampler_get_params(const sampler *s);

/* Pick the next token from logits[n_vocab] (not modified). history holds the
 * sequence's tokens so far (prompt and generated, oldest first); the
 * repetition penalty looks at its last repeat_last_n entries. Logits of -inf
 * (e.g. a suppressed EOS) are never chosen; NaN counts as -inf. Returns the
 * token id, or -1 when every logit is -inf/NaN. */
int32_t sampler_sample(sampler *s, const float *logits, const int32_t *history, size_t n_history);

/* A constraint on the next token (e.g. a grammar, core/json_grammar.h):
 * allowed(ctx, id) says whether token id may come next; mask(ctx, logits)
 * sets logits[id] = -INFINITY for every token allowed() refuses (entries
 * already -inf may be skipped). Both must agree. */
typedef struct {
    int (*allowed)(void *ctx, int32_t id);
    void (*mask)(void *ctx, float *logits);
    void *ctx;
} sampler_filter;

/* sampler_sample over only the tokens f allows: the distribution
 * sampler_sample has on logits with every refused token set to -inf
 * (greedy: the same token; a draw may pick another token of it than
 * sampler_sample would for the seed, candidates being in another order), but allowed() is asked
 * about the best candidates in rank order only as far as the cuts need (greedy: until the first
 * allowed one; top-k: the first k allowed; min-p: down to its threshold), and the whole-vocabulary
 * mask() runs only when a window of the best 64 (or top_k) candidates does not settle it. f NULL =
 * sampler_sample. Returns -1 when no token is allowed. */
int32_t sampler_sample_filtered(sampler *s, const float *logits, const int32_t *history,
                                size_t n_history, const sampler_filter *f);

/* The distribution sampler_sample would draw from: fills up to cap
 * (id, probability) pairs, most likely first, probabilities summing to 1.
 * Returns the number of candidates (which may exceed cap: only cap are
 * written), or -1 when every logit is -inf/NaN. Does not advance the PRNG. */
int sampler_probs(sampler *s, const float *logits, const int32_t *history, size_t n_history,
                  int32_t *ids, float *probs, int cap);

/* The model's own log-probabilities at this step (what OpenAI's and vLLM's
 * default "logprobs" report): log_softmax, in double precision, of the
 * logits after the repetition penalty and before temperature, top-k, top-p
 * and min-p - so they do not depend on those settings. *token_lp gets
 * token's log-probability (-inf when its logit is -inf, or token is outside
 * the vocabulary, e.g. -1); ids/lps get the n_top most likely tokens, most
 * likely first, ties to the lowest id (the order greedy sampling uses, so
 * at temperature 0 without a filter the sampled token is ids[0]). Returns
 * how many were written (< n_top only when fewer tokens have a finite
 * logit), or -1 when every logit is -inf/NaN. Uses the sampler's scratch
 * (call it before or after sampler_sample*, not between their uses of it);
 * does not advance the PRNG. */
int sampler_logprobs(sampler *s, const float *logits, const int32_t *history, size_t n_history,
                     int32_t token, double *token_lp, int32_t *ids, double *lps, int n_top);

#endif
