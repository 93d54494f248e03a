/*
 * srv.c - request validation and submission shared by the server's front
 * ends (RPC and HTTP): a GenerateRequest becomes an engine_request, or an
 * INVALID_ARGUMENT with a message that names the field and the value.
 *
 * Every rule the engine would enforce is checked here first, so that a
 * client gets a message in terms of its own request ("max_tokens",
 * "sampling.top_p") instead of the engine's; engine_submit still checks
 * again (and says why) for anything that slips through.
 */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/chat.h"
#include "core/json_grammar.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "server/server.h"

#define DEFAULT_MAX_TOKENS 128
#define MAX_STOP_IDS 1024

static int fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* Offset of the first byte that breaks UTF-8 (overlongs, surrogates and
 * code points beyond U+10FFFF included), or -1 when s[0..n) is valid. */
static long utf8_invalid_at(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        unsigned min, cp;
        if ((c & 0xe0) == 0xc0) len = 2, min = 0x80, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0) len = 3, min = 0x800, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0) len = 4, min = 0x10000, cp = c & 0x07;
        else return (long)i;
        if (i + (size_t)len > n) return (long)i;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return (long)i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (long)i;
        i += (size_t)len;
    }
    return -1;
}

static int check_utf8(const char *what, const char *s, char *err, size_t errlen) {
    long at = utf8_invalid_at(s, strlen(s));
    if (at < 0) return SRV_OK;
    return fail(err, errlen, SRV_INVALID_ARGUMENT, "%s is not valid UTF-8 (byte %ld)", what, at);
}

/* A seed for requests that give none: distinct per request and process. */
static uint64_t random_seed(void) {
    static atomic_ullong counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 40) ^
                 (atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ull);
    /* splitmix64 finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x & 0xffffffffu; /* short enough to retype */
}

static int prepare_sampling(const Inference__SamplingParams *in, sampler_params *sp, char *err,
                            size_t errlen) {
    sampler_params_default(sp);
    sp->seed = random_seed();
    if (!in) return SRV_OK;
    if (in->has_temperature) {
        if (!(in->temperature >= 0.0f) || !isfinite(in->temperature))
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "sampling.temperature must be >= 0, got %g", (double)in->temperature);
        sp->temperature = in->temperature;
    }
    if (in->has_top_k) {
        if (in->top_k < 0)
            return fail(err, errlen, SRV_INVALID_ARGUMENT, "sampling.top_k must be >= 0, got %d",
                        in->top_k);
        sp->top_k = in->top_k;
    }
    if (in->has_top_p) {
        if (!(in->top_p > 0.0f && in->top_p <= 1.0f))
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "sampling.top_p must be in (0, 1], got %g", (double)in->top_p);
        sp->top_p = in->top_p;
    }
    if (in->has_min_p) {
        if (!(in->min_p >= 0.0f && in->min_p <= 1.0f))
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "sampling.min_p must be in [0, 1], got %g", (double)in->min_p);
        sp->min_p = in->min_p;
    }
    if (in->has_repetition_penalty) {
        if (!(in->repetition_penalty > 0.0f) || !isfinite(in->repetition_penalty))
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "sampling.repetition_penalty must be > 0, got %g",
                        (double)in->repetition_penalty);
        sp->repetition_penalty = in->repetition_penalty;
    }
    if (in->has_repeat_last_n) {
        if (in->repeat_last_n < -1)
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "sampling.repeat_last_n must be >= -1 (-1 = whole history), got %d",
                        in->repeat_last_n);
        sp->repeat_last_n = in->repeat_last_n;
    }
    if (in->has_seed) sp->seed = in->seed;
    char perr[256];
    if (sampler_params_validate(sp, perr, sizeof perr) != 0)
        return fail(err, errlen, SRV_INVALID_ARGUMENT, "sampling: %s", perr);
    return SRV_OK;
}

/* The prompt as token ids (*ids malloc'd). */
static int prepare_prompt(srv *s, const Inference__GenerateRequest *in, int32_t **ids, int *n,
                          char *err, size_t errlen) {
    *ids = NULL;
    *n = 0;
    int has_text = in->prompt != NULL, has_ids = in->n_prompt_ids > 0,
        has_msgs = in->n_messages > 0;
    int given = has_text + has_ids + has_msgs;
    if (given == 0)
        return fail(err, errlen, SRV_INVALID_ARGUMENT,
                    "one of prompt, prompt_ids or messages is required");
    if (given > 1) {
        char got[64] = "";
        const char *names[3] = {has_text ? "prompt" : NULL, has_ids ? "prompt_ids" : NULL,
                                has_msgs ? "messages" : NULL};
        for (int i = 0; i < 3; i++) {
            if (!names[i]) continue;
            size_t len = strlen(got);
            snprintf(got + len, sizeof got - len, "%s%s", len ? " and " : "", names[i]);
        }
        return fail(err, errlen, SRV_INVALID_ARGUMENT,
                    "exactly one of prompt, prompt_ids or messages may be set (got %s)", got);
    }
    const int n_vocab = tok_n_vocab(s->tok);
    if (has_ids) {
        if (in->n_prompt_ids > (size_t)INT32_MAX)
            return fail(err, errlen, SRV_INVALID_ARGUMENT, "prompt_ids is too long");
        for (size_t i = 0; i < in->n_prompt_ids; i++)
            if (in->prompt_ids[i] < 0 || in->prompt_ids[i] >= n_vocab)
                return fail(err, errlen, SRV_INVALID_ARGUMENT,
                            "prompt_ids[%zu] = %d is outside the vocabulary [0, %d)", i,
                            in->prompt_ids[i], n_vocab);
        *ids = malloc(in->n_prompt_ids * sizeof **ids);
        if (!*ids) return fail(err, errlen, SRV_RESOURCE_EXHAUSTED, "out of memory");
        memcpy(*ids, in->prompt_ids, in->n_prompt_ids * sizeof **ids);
        *n = (int)in->n_prompt_ids;
        return SRV_OK;
    }
    char *rendered = NULL;
    const char *text = in->prompt;
    if (has_text) {
        if (!text[0]) return fail(err, errlen, SRV_INVALID_ARGUMENT, "prompt is empty");
        int rc = check_utf8("prompt", text, err, errlen);
        if (rc != SRV_OK) return rc;
    } else {
        if (!s->chat_template)
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "messages: the model has no chat template (tokenizer.chat_template); "
                        "send a prompt instead");
        chat_msg *msgs = calloc(in->n_messages, sizeof *msgs);
        if (!msgs) return fail(err, errlen, SRV_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < in->n_messages; i++) {
            const Inference__ChatMessage *m = in->messages[i];
            char what[64];
            if (!m->role || !m->role[0]) {
                free(msgs);
                return fail(err, errlen, SRV_INVALID_ARGUMENT, "messages[%zu].role is empty", i);
            }
            snprintf(what, sizeof what, "messages[%zu].role", i);
            int rc = check_utf8(what, m->role, err, errlen);
            snprintf(what, sizeof what, "messages[%zu].content", i);
            if (rc == SRV_OK) rc = check_utf8(what, m->content ? m->content : "", err, errlen);
            if (rc != SRV_OK) {
                free(msgs);
                return rc;
            }
            msgs[i].role = m->role;
            msgs[i].content = m->content ? m->content : "";
        }
        char cerr[256];
        int rc =
            chat_apply(s->chat_template, msgs, in->n_messages, 1, &rendered, cerr, sizeof cerr);
        free(msgs);
        if (rc != 0) return fail(err, errlen, SRV_INVALID_ARGUMENT, "messages: %s", cerr);
        text = rendered;
    }
    int add_special = in->has_add_special ? in->add_special : 1;
    int k = tok_encode(s->tok, text, strlen(text), add_special, 1, ids);
    free(rendered);
    if (k < 0) {
        *ids = NULL;
        return fail(err, errlen, SRV_INTERNAL, "tokenization failed (code %d)", k);
    }
    if (k == 0) {
        free(*ids);
        *ids = NULL;
        return fail(err, errlen, SRV_INVALID_ARGUMENT, "prompt is empty");
    }
    *n = k;
    return SRV_OK;
}

/* response_format -> r->format; the schema is compiled once here so that a
 * schema outside the subset is INVALID_ARGUMENT naming the keyword (the
 * engine compiles its own copy at submit). */
static int prepare_format(const Inference__ResponseFormat *in, srv_request *out, char *err,
                          size_t errlen) {
    engine_request *r = &out->req;
    const char *t = in && in->type ? in->type : "text";
    engine_format f;
    if (engine_format_parse(t, &f) != 0)
        return fail(err, errlen, SRV_INVALID_ARGUMENT,
                    "response_format.type must be \"text\", \"json_object\" or \"json_schema\", "
                    "got \"%s\"",
                    t);
    if (f != ENGINE_FORMAT_JSON_SCHEMA) {
        r->format = f;
        return SRV_OK;
    }
    if (!in->json_schema)
        return fail(err, errlen, SRV_INVALID_ARGUMENT,
                    "response_format.json_schema is required with type \"json_schema\"");
    char msg[400];
    jg_schema *g = jg_compile(in->json_schema, strlen(in->json_schema), msg, sizeof msg);
    if (!g) return fail(err, errlen, SRV_INVALID_ARGUMENT, "response_format: %s", msg);
    jg_schema_free(g);
    if (!(out->json_schema = strdup(in->json_schema)))
        return fail(err, errlen, SRV_RESOURCE_EXHAUSTED, "out of memory");
    r->format = ENGINE_FORMAT_JSON_SCHEMA;
    r->json_schema = out->json_schema;
    return SRV_OK;
}

/* logprobs / top_logprobs -> r; top_logprobs > 0 needs logprobs, as in
 * OpenAI's chat API. */
static int prepare_logprobs(const Inference__GenerateRequest *in, engine_request *r, char *err,
                            size_t errlen) {
    r->logprobs = in->has_logprobs && in->logprobs;
    if (!in->has_top_logprobs) return SRV_OK;
    if (in->top_logprobs < 0 || in->top_logprobs > ENGINE_MAX_TOP_LOGPROBS)
        return fail(err, errlen, SRV_INVALID_ARGUMENT, "top_logprobs must be in [0, %d], got %d",
                    ENGINE_MAX_TOP_LOGPROBS, in->top_logprobs);
    if (in->top_logprobs > 0 && !r->logprobs)
        return fail(err, errlen, SRV_INVALID_ARGUMENT,
                    "top_logprobs (%d) needs logprobs set to true", in->top_logprobs);
    r->top_logprobs = in->top_logprobs;
    return SRV_OK;
}

int srv_prepare(srv *s, const Inference__GenerateRequest *in, srv_request *out, char *err,
                size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!in) return fail(err, errlen, SRV_INVALID_ARGUMENT, "missing request");
    engine_request *r = &out->req;
    const int n_vocab = tok_n_vocab(s->tok);

    /* Cheap field checks first, tokenization last. */
    int rc = prepare_sampling(in->sampling, &r->sampling, err, errlen);
    if (rc != SRV_OK) return rc;
    r->max_tokens = DEFAULT_MAX_TOKENS;
    if (in->has_max_tokens) {
        if (in->max_tokens < 0)
            return fail(err, errlen, SRV_INVALID_ARGUMENT, "max_tokens must be >= 0, got %d",
                        in->max_tokens);
        r->max_tokens = in->max_tokens;
    }
    if (in->has_min_tokens) {
        if (in->min_tokens < 0)
            return fail(err, errlen, SRV_INVALID_ARGUMENT, "min_tokens must be >= 0, got %d",
                        in->min_tokens);
        if (in->min_tokens > r->max_tokens)
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "min_tokens (%d) must not exceed max_tokens (%d)", in->min_tokens,
                        r->max_tokens);
        r->min_tokens = in->min_tokens;
    }
    r->n = 1;
    if (in->has_n) {
        int max_n = s->cfg.batch_max_seqs;
        if (in->n < 1 || in->n > max_n)
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "n must be in [1, %d] (batcher_config.batch_max_seqs), got %d", max_n,
                        in->n);
        r->n = in->n;
    }
    r->ignore_eos = in->has_ignore_eos && in->ignore_eos;
    if ((rc = prepare_logprobs(in, r, err, errlen)) != SRV_OK) return rc;
    if (in->n_stop > (size_t)s->net.max_stop_strings)
        return fail(err, errlen, SRV_INVALID_ARGUMENT,
                    "too many stop strings: %zu (server.max_stop_strings is %d)", in->n_stop,
                    s->net.max_stop_strings);
    for (size_t i = 0; i < in->n_stop; i++) {
        char what[32];
        if (!in->stop[i] || !in->stop[i][0])
            return fail(err, errlen, SRV_INVALID_ARGUMENT, "stop[%zu] is empty", i);
        snprintf(what, sizeof what, "stop[%zu]", i);
        if ((rc = check_utf8(what, in->stop[i], err, errlen)) != SRV_OK) return rc;
    }
    if (in->n_stop_ids > MAX_STOP_IDS)
        return fail(err, errlen, SRV_INVALID_ARGUMENT, "too many stop_ids: %zu (at most %d)",
                    in->n_stop_ids, MAX_STOP_IDS);
    for (size_t i = 0; i < in->n_stop_ids; i++)
        if (in->stop_ids[i] < 0 || in->stop_ids[i] >= n_vocab)
            return fail(err, errlen, SRV_INVALID_ARGUMENT,
                        "stop_ids[%zu] = %d is outside the vocabulary [0, %d)", i, in->stop_ids[i],
                        n_vocab);

    if ((rc = prepare_format(in->response_format, out, err, errlen)) != SRV_OK) {
        srv_request_free(out);
        return rc;
    }
    int n_prompt;
    if ((rc = prepare_prompt(s, in, &out->prompt_ids, &n_prompt, err, errlen)) != SRV_OK) {
        srv_request_free(out);
        return rc;
    }
    r->prompt = out->prompt_ids;
    r->n_prompt = n_prompt;

    /* What one request may hold: the engine's limits (engine_submit refuses
     * more), checked here so the caller gets INVALID_ARGUMENT before a
     * stream is opened. */
    engine_limits lim;
    engine_get_limits(s->eng, &lim);
    if (engine_check_fit(&lim, n_prompt, r->max_tokens, r->n, err, errlen) != ENGINE_FITS) {
        srv_request_free(out); /* after the message: it zeroes r */
        return SRV_INVALID_ARGUMENT;
    }

    if (in->n_stop) {
        out->stop = calloc(in->n_stop, sizeof *out->stop);
        if (!out->stop) goto oom;
        r->stop = (const char *const *)out->stop;
        r->n_stop = (int)in->n_stop; /* set first: srv_request_free frees what is there */
        for (size_t i = 0; i < in->n_stop; i++)
            if (!(out->stop[i] = strdup(in->stop[i]))) goto oom;
    }
    if (in->n_stop_ids) {
        out->stop_ids = malloc(in->n_stop_ids * sizeof *out->stop_ids);
        if (!out->stop_ids) goto oom;
        memcpy(out->stop_ids, in->stop_ids, in->n_stop_ids * sizeof *out->stop_ids);
        r->stop_ids = out->stop_ids;
        r->n_stop_ids = (int)in->n_stop_ids;
    }
    out->return_token_ids = in->has_return_token_ids && in->return_token_ids;
    return SRV_OK;
oom:
    srv_request_free(out);
    return fail(err, errlen, SRV_RESOURCE_EXHAUSTED, "out of memory");
}

void srv_request_free(srv_request *r) {
    if (!r) return;
    free(r->prompt_ids);
    if (r->stop)
        for (int i = 0; i < r->req.n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->json_schema);
    memset(r, 0, sizeof *r);
}

int srv_submit(srv *s, const srv_request *r, engine_stream **out, int64_t *id, char *err,
               size_t errlen) {
    *out = NULL;
    if (atomic_load(&s->draining))
        return fail(err, errlen, SRV_UNAVAILABLE, "the server is shutting down");
    char eerr[512];
    int rc = engine_submit(s->eng, &r->req, out, id, eerr, sizeof eerr);
    switch (rc) {
    case ENGINE_OK: return SRV_OK;
    case ENGINE_EINVAL: return fail(err, errlen, SRV_INVALID_ARGUMENT, "%s", eerr);
    case ENGINE_EBUSY: return fail(err, errlen, SRV_RESOURCE_EXHAUSTED, "%s", eerr);
    case ENGINE_ESTOPPED: return fail(err, errlen, SRV_UNAVAILABLE, "%s", eerr);
    case ENGINE_ENOMEM: return fail(err, errlen, SRV_RESOURCE_EXHAUSTED, "%s", eerr);
    default: return fail(err, errlen, SRV_INTERNAL, "engine_submit failed (%d): %s", rc, eerr);
    }
}

int srv_check_key(const srv *s, const char *presented) {
    const char *key = s->net.api_key;
    if (!key[0]) return SRV_OK;
    if (!presented) return SRV_UNAUTHENTICATED;
    /* Compare in time independent of where the strings differ. */
    size_t n = strlen(key), m = strlen(presented);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)((unsigned char)key[i] ^ (unsigned char)presented[m ? i % m : 0]);
    return diff == 0 ? SRV_OK : SRV_UNAUTHENTICATED;
}

const char *srv_finish_reason(int gen_finish_value) {
    return gen_finish_name((gen_finish)gen_finish_value);
}
