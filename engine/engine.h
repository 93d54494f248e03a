/*
 * engine.h - the serving engine: one thread runs the step loop over the
 * paged KV pool and the scheduler; callers submit requests from any thread
 * and receive tokens through a per-request stream as they are sampled.
 *
 * Each step: the scheduler picks sequences and token counts within its
 * budgets, the engine flattens them into one llm_batch (prompt chunks and
 * decodes together), runs the forward pass, samples the sequences whose
 * chunk reached their last token with each one's own sampler, detokenizes
 * incrementally, applies stop strings / stop ids / EOS / max_tokens, and
 * pushes events. A finished or cancelled sequence frees its blocks at once;
 * with prefix caching its computed full blocks stay cached (evictable) for
 * later prompts that begin with the same tokens (paged_kv.h).
 *
 * Numerics: a row uses the single-token attention shape when it is a
 * generated token (or the prompt is one token long), the multi-token shape
 * otherwise - the shapes llama.cpp uses for decode and prompt evaluation -
 * so results do not depend on how the scheduler chunks, batches, preempts
 * or recomputes a sequence.
 *
 * Ownership: the model, backend and tokenizer are borrowed and must outlive
 * the engine; only the engine thread uses them while it runs.
 * Thread-safety: engine_submit, engine_cancel, engine_get_stats and the
 * stream functions may be called from any thread.
 */
#ifndef ENGINE_ENGINE_H
#define ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/kv_cache.h"
#include "core/sampler.h"

struct llm_model;
struct backend;
struct llm_tokenizer;

/* How sequences share steps. CONTINUOUS: every step re-decides who runs,
 * a finished sequence's place is taken at once; STATIC: collect a batch
 * while nothing runs and run it to completion. */
typedef enum {
    ENGINE_BATCH_CONTINUOUS = 0,
    ENGINE_BATCH_STATIC,
    ENGINE_BATCH_COUNT
} engine_batching;
/* What happens to a running sequence that must give up its blocks. AUTO:
 * swap to the CPU tier when there is one (num_blocks_cpu > 0), else
 * recompute; SWAP: swap (needs the CPU tier); RECOMPUTE: free the blocks
 * and recompute the sequence later from its tokens. */
typedef enum {
    ENGINE_PREEMPT_AUTO = 0,
    ENGINE_PREEMPT_SWAP,
    ENGINE_PREEMPT_RECOMPUTE,
    ENGINE_PREEMPT_COUNT
} engine_preempt_mode;

/* The modes' names, index = enum value: what the config file spells and
 * the banners print. */
extern const char *const engine_batching_names[ENGINE_BATCH_COUNT];
extern const char *const engine_preempt_names[ENGINE_PREEMPT_COUNT];

typedef struct engine_options {
    int batch_max_tokens;     /* rows per step */
    int batch_max_seqs;       /* sequences per step */
    engine_batching batching; /* continuous or static */
    int max_waiting;          /* submit fails with ENGINE_EBUSY beyond this */
    int num_blocks;           /* device tier blocks; <= 0: from kv_memory_mb */
    double kv_memory_mb;      /* budget for num_blocks <= 0, MiB */
    int num_blocks_cpu;       /* swap tier (0: no swapping) */
    int block_size;           /* tokens per block */
    double watermark;         /* fraction of device blocks kept free at admission */
    const char *swap_path;    /* NULL: swap tier in RAM */
    engine_preempt_mode preempt_mode;
    kv_dtype kv_type;
    int max_context;           /* 0: the model's training context */
    int enable_prefix_caching; /* share computed full prompt blocks between sequences */
} engine_options;

/* The defaults of every option: the one table of them (engine/config.c
 * starts its config from here too). */
void engine_options_default(engine_options *o);

enum {
    ENGINE_OK = 0,
    ENGINE_EINVAL = -1,   /* bad request parameters (message says which) */
    ENGINE_EBUSY = -2,    /* waiting queue full */
    ENGINE_ESTOPPED = -3, /* engine shutting down */
    ENGINE_ENOMEM = -4,
};

/* What the completion text must be. JSON_OBJECT: any JSON object;
 * JSON_SCHEMA: a JSON value valid against json_schema (the subset of
 * core/json_grammar.h). Both are enforced by masking each step's logits
 * (constrained decoding); the completion ends ("eos") as soon as the value
 * is complete, or is cut by max_tokens ("length") or a stop string. */
typedef enum {
    ENGINE_FORMAT_TEXT = 0,
    ENGINE_FORMAT_JSON_OBJECT,
    ENGINE_FORMAT_JSON_SCHEMA,
} engine_format;

/* The format named as the OpenAI API names it ("text", "json_object",
 * "json_schema"); -1 for any other name. */
int engine_format_parse(const char *name, engine_format *out);

typedef struct {
    const int32_t *prompt; /* borrowed for the duration of engine_submit */
    int n_prompt;
    sampler_params sampling;
    int max_tokens;
    int min_tokens;
    int ignore_eos;
    const char *const *stop; /* copied */
    int n_stop;
    const int32_t *stop_ids; /* copied; generation ends after one of these */
    int n_stop_ids;
    int n; /* completions for this prompt (>= 1); they share the prompt's blocks */
    engine_format format;
    const char *json_schema; /* JSON_SCHEMA: the schema's JSON text, compiled at submit (a
                              * schema outside the subset is ENGINE_EINVAL, the message
                              * names the keyword); borrowed for engine_submit */
    int logprobs;            /* != 0: TOKEN events carry log-probabilities (engine_logprobs) */
    int top_logprobs; /* alternatives per token, 0 .. ENGINE_MAX_TOP_LOGPROBS (needs logprobs) */
} engine_request;

/* Most alternatives a TOKEN event reports (OpenAI's top_logprobs limit). */
#define ENGINE_MAX_TOP_LOGPROBS 20

/* A sampled token's log-probability and the most likely alternatives, from
 * the model's own distribution at that step (sampler_logprobs): the log
 * softmax, in double precision, of the logits after the repetition penalty
 * and after the EOS suppression of ignore_eos / min_tokens, but before
 * temperature, top-k, top-p and min-p (vLLM's default). Under a response
 * format the grammar's mask is NOT applied: the values are those of the
 * unconstrained model, so a forced token may have a low logprob and the
 * alternatives may include tokens the grammar refused. */
typedef struct {
    double logprob; /* the sampled token's */
    int n_top;      /* entries in top_ids / top_logprobs, most likely first */
    int32_t top_ids[ENGINE_MAX_TOP_LOGPROBS];
    double top_logprobs[ENGINE_MAX_TOP_LOGPROBS];
} engine_logprobs;

/* Why a completion ended. (Named gen_ for its first client, generate.h;
 * the engine produces it.) */
typedef enum {
    GEN_FINISH_LENGTH = 0,
    GEN_FINISH_EOS,
    GEN_FINISH_STOP,
    GEN_FINISH_CANCELLED,
    GEN_FINISH_ERROR,
} gen_finish;

/* "length", "eos", "stop", "cancelled", "error" */
const char *gen_finish_name(gen_finish f);

typedef enum { ENGINE_EV_TOKEN = 0, ENGINE_EV_FINISH } engine_ev_type;

typedef struct {
    engine_ev_type type;
    int index;     /* completion index, 0 .. n-1 */
    int32_t token; /* TOKEN: sampled id */
    char *text;    /* TOKEN/FINISH: newly final text (may be empty), NUL-terminated */
    size_t text_len;
    gen_finish finish; /* FINISH */
    int prompt_tokens, completion_tokens;
    double queue_ms; /* submit -> first scheduled */
    double ttft_ms;  /* submit -> first token */
    double total_ms; /* submit -> finish */
    int n_preempted;
    double t_ms;        /* CLOCK_MONOTONIC ms when the engine thread created the event
                         * (TOKEN: right after the token was sampled and detokenized) */
    int has_logprobs;   /* TOKEN of a request with logprobs: lp is filled */
    engine_logprobs lp; /* of token */
} engine_event;

/* Free an event's text. */
void engine_event_clear(engine_event *ev);

typedef struct engine engine;
typedef struct engine_stream engine_stream;

/* What one request may hold, for a model and options: prompt + max_tokens
 * must fit both the context and the device pool less the watermark. The
 * one computation of these numbers: engine_submit checks against them, the
 * server validates with them and infer-generate sizes requests by them. */
typedef struct {
    int context_length;   /* max_context capped by the model's training context */
    int num_blocks;       /* device blocks (resolved from kv_memory_mb when <= 0) */
    int block_size;       /* tokens per block */
    int watermark_blocks; /* blocks the watermark keeps free (sched_watermark_blocks) */
    long kv_capacity;     /* (num_blocks - watermark_blocks) * block_size tokens */
    size_t block_bytes;   /* bytes of one block (kv_block_bytes) */
} engine_limits;

/* Fill *out for model m and options o (before or without an engine). */
void engine_limits_for(const struct llm_model *m, const engine_options *o, engine_limits *out);
/* The limits of a running engine (as engine_limits_for gave at create). */
void engine_get_limits(const engine *e, engine_limits *out);

typedef enum { ENGINE_FITS = 0, ENGINE_OVER_CONTEXT, ENGINE_OVER_KV_CAPACITY } engine_fit;
/* Whether a request of n completions of n_prompt + max_tokens tokens can
 * ever run within l: each completion within the context, and all of them at
 * once within the device pool less the watermark. Completions 1..n-1 fork
 * from completion 0 after the prefill, sharing its full prompt blocks, so
 * the worst case holds those once plus, per completion, the blocks for the
 * prompt's partial last block and max_tokens. When it does not fit, a
 * message that names the limit, e.g. "prompt (5 tokens) + max_tokens
 * (100000) = 100005 exceeds the context length of 8192 tokens". A request
 * that fits may still wait for blocks held by others. */
engine_fit engine_check_fit(const engine_limits *l, long n_prompt, long max_tokens, int n,
                            char *err, size_t errlen);
/* Blocks the worst case of such a request holds (see engine_check_fit). */
long engine_blocks_needed(const engine_limits *l, long n_prompt, long max_tokens, int n);

int engine_create(struct llm_model *m, struct backend *be, const struct llm_tokenizer *tok,
                  const engine_options *opt, engine **out, char *err, size_t errlen);
/* Stops the thread; unfinished requests finish as cancelled. Streams stay
 * valid until freed. */
void engine_destroy(engine *e);

/* Queue a request. On success *out is a stream the caller reads and frees;
 * *id (if not NULL) identifies it for engine_cancel. */
int engine_submit(engine *e, const engine_request *r, engine_stream **out, int64_t *id, char *err,
                  size_t errlen);
/* hold != 0: requests submitted from now on wait, untouched, until
 * engine_hold(e, 0) releases them all at once (for a set of requests that
 * must reach the scheduler together, as infer-generate's prompts do: static
 * batching collects whatever has arrived when it forms a batch). */
void engine_hold(engine *e, int hold);
/* Cancel a request by id (no-op if it already finished). */
void engine_cancel(engine *e, int64_t id);

/* Next event: 1 = got one, 0 = timed out (timeout_ms >= 0), -1 = the stream
 * has ended (every completion finished and all events were read). */
int engine_stream_next(engine_stream *s, engine_event *ev, int timeout_ms);
int64_t engine_stream_id(const engine_stream *s);
/* Cancels the request if it is still running, then releases the stream. */
void engine_stream_free(engine_stream *s);

typedef struct {
    int n_waiting, n_running, n_swapped;
    int blocks_total[2], blocks_free[2];
    long steps, preempt_swap, preempt_recompute, swap_in;
    long prompt_tokens, generated_tokens, requests_finished;
    int last_step_tokens;
    int block_size, num_blocks, num_blocks_cpu;
    long kv_tokens;            /* tokens held in the device tier now */
    int peak_blocks_used;      /* most device blocks in use at once */
    double kv_efficiency_peak; /* tokens / allocated slots at that peak */
    /* engine-thread time since start: in forward passes, and in sampling
     * (the picks with a response format's masks, and taking the tokens:
     * text, stops, events) */
    double forward_ms, sample_ms;
    /* prefix cache: device blocks cached (free for allocation, evictable),
     * prompt tokens looked up at admission and those found computed */
    int blocks_cached;
    long prefix_queried_tokens, prefix_hit_tokens;
    long prefix_evictions; /* cached blocks reused for other KV */
} engine_stats;

void engine_get_stats(engine *e, engine_stats *st);
/* pkv_check of the engine's block pool, for tests: 0, or -1 with the
 * message (also when the engine is busy and the pool cannot be looked at). */
int engine_check_kv(engine *e, char *err, size_t errlen);
/* Block until no request is waiting, running or swapped. */
void engine_wait_idle(engine *e);

#endif
