/*
 * json_api.h - the JSON bodies of the HTTP front end mapped onto the RPC
 * request (Inference__GenerateRequest), so that HTTP and RPC share one
 * validation path (srv_prepare).
 *
 * Three dialects: the course lab's POST /generate ("max_length" and
 * "min_length" are aliases of max_tokens / min_tokens), OpenAI's
 * /v1/completions and OpenAI's /v1/chat/completions (messages). This layer
 * checks JSON syntax and the type of every field it knows ("temperature
 * must be a number"); value ranges are srv_prepare's business. Unknown
 * fields are ignored, as OpenAI-compatible servers do, except the OpenAI
 * features we do not implement when they would change the output (echo,
 * best_of > 1, suffix, tools, logit_bias): those are refused so a
 * client is never silently given something else than it asked for. For the
 * same reason a body is refused when a string holds a NUL ("\u0000",
 * which would cut it), a number is out of a double's range (1e400), or an
 * object (at any depth) has a key twice; the message names the field.
 *
 * Ownership: japi_request owns everything it points to (the parsed JSON
 * tree backs the strings); japi_request_free releases it. No shared state.
 */
#ifndef SERVER_JSON_API_H
#define SERVER_JSON_API_H

#include <stddef.h>
#include <stdint.h>

#include "proto/inference.pb-c.h"

typedef enum { JAPI_GENERATE = 0, JAPI_COMPLETIONS, JAPI_CHAT } japi_kind;

/* /v1/completions: the most alternatives "logprobs": N may ask for (OpenAI's
 * legacy limit; /v1/chat/completions' top_logprobs goes to
 * ENGINE_MAX_TOP_LOGPROBS). */
#define JAPI_MAX_LEGACY_LOGPROBS 5

/* /v1/completions: the most prompts one "prompt" list may hold. */
#define JAPI_MAX_PROMPTS 16

/* One prompt of a /v1/completions "prompt" list: text, or token ids. */
typedef struct {
    const char *text; /* NULL for ids */
    int32_t *ids;
    size_t n_ids;
} japi_prompt;

typedef struct {
    Inference__GenerateRequest gen; /* ready for srv_prepare */
    Inference__SamplingParams sampling;
    Inference__ResponseFormat response_format; /* gen.response_format when given */
    int stream;                                /* "stream": true */
    int include_usage;                         /* "stream_options": {"include_usage": true} */
    int return_tokens;                         /* /generate: token ids in the response */
    const char *model;                         /* "model" as sent, or NULL */
    /* /v1/completions with a list of prompts (OpenAI: one set of choices
     * per prompt, choice index = prompt index * n + j): the prompts, 0
     * when "prompt" is a single one. gen holds prompts[0];
     * japi_select_prompt points it at another. */
    japi_prompt *prompts;
    int n_prompts;

    /* storage behind gen */
    struct cJSON *root;
    Inference__ChatMessage *msg_store;
    Inference__ChatMessage **msgs;
    char **joined; /* chat contents built from text parts */
    size_t n_joined;
    char **stop;
    int32_t *prompt_ids;
    int32_t *stop_ids;
    char *schema_text; /* response_format's schema as JSON text (cJSON_free) */
} japi_request;

/* Parse body[0..len) as a request of the given dialect. Returns 0, or -1
 * with a message for the client: "invalid JSON at line 1, column 17:
 * unexpected character 'x'", "temperature must be a number, got string",
 * "prompt: strings may not contain NUL (\u0000)", "duplicate key
 * \"temperature\" in the request object", ... On failure *out needs no free. */
int japi_parse(japi_kind kind, const char *body, size_t len, japi_request *out, char *err,
               size_t errlen);
void japi_request_free(japi_request *r);
/* Point r->gen's prompt at prompts[i] (0 <= i < n_prompts). */
void japi_select_prompt(japi_request *r, int i);

#endif
