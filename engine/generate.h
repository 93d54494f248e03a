/*
 * generate.h - offline generation on the serving engine: submit every
 * request at once and collect the completions.
 *
 * gen_run starts an engine (engine.h) over the given model, submits all
 * requests, and gathers each stream's events into results. By default the
 * engine batches continuously (a finished sequence's place is taken by the
 * next waiting one at the very next step); static batching (collect a batch,
 * run it to completion) is available to compare against.
 *
 * Ownership: requests and their prompt ids are borrowed. Results are
 * allocated by gen_run and released with gen_result_free. The model,
 * backend and tokenizer are borrowed; the engine thread uses them during
 * the call.
 * Errors: gen_run returns 0 or -1 with a message; a request that fails
 * validation fails the call before anything runs.
 */
#ifndef ENGINE_GENERATE_H
#define ENGINE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/kv_cache.h"
#include "core/sampler.h"
#include "engine/engine.h"

struct llm_model;
struct backend;
struct llm_tokenizer;

typedef struct {
    const int32_t *prompt; /* prompt token ids (BOS included if wanted); n_prompt >= 1 */
    int n_prompt;
    sampler_params sampling;
    int max_tokens;          /* >= 0; tokens to generate at most */
    int min_tokens;          /* end-of-generation tokens are suppressed before this many */
    int ignore_eos;          /* suppress end-of-generation tokens entirely */
    const char *const *stop; /* stop strings (borrowed, may be NULL): generation ends
                                when the text contains one; it is cut from the text */
    int n_stop;
    int format;              /* engine_format (engine.h): text, any JSON object, a schema */
    const char *json_schema; /* the schema's JSON text with ENGINE_FORMAT_JSON_SCHEMA (borrowed) */
} gen_request;

typedef struct {
    int32_t *tokens; /* generated ids (an ending EOG token is not included) */
    int n_tokens;
    char *text; /* detokenized completion, valid UTF-8, NUL-terminated */
    size_t text_len;
    gen_finish finish;
    int n_prompt;
    double prompt_ms; /* wall time of its batch's prefill (shared by the batch) */
    double gen_ms;    /* from the end of the prefill to this request's last token */
} gen_result;

void gen_result_free(gen_result *r);

/* Called for every generated token, from the calling thread, in order per
 * request. text/len is the new completion text that became final with this
 * token (possibly empty: an incomplete UTF-8 character or a possible stop
 * string prefix is held back and arrives with a later call). token is -1 for
 * the final call of a request that releases held-back text (finish set).
 * Return nonzero to stop that request (finish = cancelled). */
typedef int (*gen_token_fn)(void *user, int request, int32_t token, const char *text, size_t len);

typedef struct {
    int batch_size;           /* engine batch_max_seqs (default 8) */
    int prefill_chunk;        /* engine batch_max_tokens: rows per step (default 512) */
    kv_dtype kv_type;         /* default KV_F16 */
    engine_batching batching; /* default continuous */
    /* Full engine options (block counts, swap, watermark...). When set, it
     * is used as is and the four fields above are ignored. */
    const engine_options *engine;
    gen_token_fn on_token; /* may be NULL */
    void *user;
} gen_options;

void gen_options_default(gen_options *o);

typedef struct {
    long prompt_tokens;
    long gen_tokens;
    double prompt_ms; /* wall time until every request had its first token */
    double gen_ms;    /* the rest of the wall time */
    double total_ms;
    long steps;                 /* engine steps */
    long preemptions;           /* swap + recompute */
    double forward_ms;          /* engine thread in forward passes */
    double sample_ms;           /* engine thread sampling (engine_stats) */
    long prefix_queried_tokens; /* prompt tokens looked up in the prefix cache */
    long prefix_hit_tokens;     /* of those, found cached (not computed) */
    int peak_blocks;            /* most device KV blocks in use at once */
    double kv_efficiency_peak;  /* tokens held / allocated KV slots at that peak */
} gen_stats;

/* Run requests reqs[0..n) and fill results[0..n) (zeroed first). On error
 * the results of finished requests stay filled and must still be freed. */
int gen_run(struct llm_model *m, struct backend *be, const struct llm_tokenizer *tok,
            const gen_request *reqs, int n, const gen_options *opt, gen_result *results,
            gen_stats *stats, char *err, size_t errlen);

#endif
