/*
 * http_call.c - the HTTP generation endpoints (POST /generate,
 * /v1/completions, /v1/chat/completions): on httpd's worker thread, decode
 * the JSON body, hand the call to its relay (server/relay.h) and encode
 * what the relay gives back, as one JSON reply or as Server-Sent Events
 * (httpd's stream: chunked on HTTP/1.1, so the connection may be kept).
 * A /v1/completions list of prompts runs as one relay per prompt, submitted
 * together; the reply merges their choices (index = prompt * n + j), a
 * stream interleaves their events, and the call ends as its worst relay.
 * A body whose "model" is not the served one is answered 404, as
 * /v1/models/{id} is.
 *
 * While the call runs, httpd watches its connection (httpd_req_watch): a
 * client that goes away cancels the relay at once, so the engine request's
 * KV blocks are freed even while nothing is being written, on keep-alive
 * connections too. A unary call treats a half-closed client as gone (it
 * cannot be told apart from a closed one); a stream does not, so a client
 * that shuts down its sending side after the request still reads it all.
 */
#include "server/http_call.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/strbuf.h"
#include "core/tokenizer.h"

#define SSE_BATCH_BYTES 65536 /* events ready at once are sent in one write up to this */
#define STREAM_POLL_MS 5      /* several prompts: the wait on one stream before the next */

typedef struct {
    http_call *c;
    japi_request *jr;
    char id[64]; /* OpenAI object id */
    long created;
    size_t *lp_offsets; /* stream with logprobs: per choice, /v1/completions' next text_offset */
} call_ctx;

/* A call's relays: one per prompt (c->r, then c->extra). */
static int n_relays(const http_call *c) { return 1 + c->n_extra; }
static relay *relay_at(const http_call *c, int k) { return k == 0 ? c->r : c->extra[k - 1]; }

/* The index of choice i of prompt k (OpenAI: prompt-major). */
static int choice_index(const http_call *c, int k, int i) {
    return k * relay_result_get(c->r)->n + i;
}

/* The call's status: the first relay that did not end OK decides. */
static int call_outcome(const http_call *c) {
    for (int k = 0; k < n_relays(c); k++) {
        int st = relay_outcome(relay_at(c, k));
        if (st != SRV_OK) return st;
    }
    return SRV_OK;
}

/* relay_finish for every relay, with the call's final status. */
static void call_finish(http_call *c, int st) {
    for (int k = 0; k < n_relays(c); k++) relay_finish(relay_at(c, k), st);
}

/* ---------------------------------------------------------------------
 * JSON pieces
 * ------------------------------------------------------------------- */

/* The model-facing finish reason of the OpenAI dialects: EOS and stop
 * strings are both "stop" there. */
static const char *openai_finish(gen_finish f) {
    switch (f) {
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_EOS:
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

static const char *finish_name(japi_kind kind, gen_finish f) {
    return kind == JAPI_GENERATE ? srv_finish_reason((int)f) : openai_finish(f);
}

static cJSON *usage_json(int prompt_tokens, int completion_tokens) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", prompt_tokens + completion_tokens);
    return u;
}

static cJSON *timings_json(double queue_ms, double ttft_ms, double total_ms) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "queue_ms", round(queue_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "ttft_ms", round(ttft_ms * 1000) / 1000);
    cJSON_AddNumberToObject(t, "total_ms", round(total_ms * 1000) / 1000);
    return t;
}

static cJSON *ids_json(const int32_t *ids, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* ---- logprobs (docs/http.md "Log-probabilities") ---- */

/* Length of the valid UTF-8 sequence at p[0..n), 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xc2 && c <= 0xdf ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] >= 0x90))
        return 0; /* overlong, surrogate or above U+10FFFF */
    return len;
}

/* A token's bytes (special tokens rendered) into raw, and as JSON-safe text
 * into txt: bytes that are not valid UTF-8 (part of a character split over
 * tokens) become U+FFFD there; the exact bytes are in raw. */
static void token_piece(const srv *s, int32_t id, strbuf *raw, strbuf *txt) {
    raw->len = txt->len = 0;
    char buf[256];
    int n = tok_piece(s->tok, id, 1, buf, sizeof buf);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof buf) n = (int)sizeof buf; /* no vocabulary has such pieces */
    strbuf_putn(raw, buf, (size_t)n);
    const unsigned char *p = (const unsigned char *)buf;
    for (size_t i = 0; i < (size_t)n;) {
        size_t k = utf8_seq(p + i, (size_t)n - i);
        if (k) strbuf_putn(txt, buf + i, k);
        else strbuf_puts(txt, "\xef\xbf\xbd");
        i += k ? k : 1;
    }
    strbuf_putn(txt, "", 0); /* NUL-terminated, also when empty */
}

/* JSON has no -inf: OpenAI's -9999.0 stands for an impossible token. */
static double lp_value(double lp) { return isfinite(lp) ? lp : -9999.0; }

/* Chat: {"token", "logprob", "bytes"}. */
static cJSON *chat_lp_entry(const srv *s, int32_t id, double lp, strbuf *raw, strbuf *txt) {
    token_piece(s, id, raw, txt);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", txt->p ? txt->p : "");
    cJSON_AddNumberToObject(o, "logprob", lp_value(lp));
    cJSON *b = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; i < raw->len; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)raw->p[i]));
    return o;
}

/* A choice's "logprobs" object before its first token. */
static cJSON *logprobs_object(japi_kind kind) {
    cJSON *o = cJSON_CreateObject();
    if (kind == JAPI_CHAT) {
        cJSON_AddArrayToObject(o, "content");
        return o;
    }
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

/* Append token tok and its logprobs to o (logprobs_object's shape);
 * /v1/completions: *offset is the token's text_offset, advanced by its bytes. */
static void logprobs_add(const call_ctx *x, cJSON *o, int32_t tok, const engine_logprobs *lp,
                         size_t *offset) {
    const srv *s = x->c->s;
    strbuf raw = {0}, txt = {0};
    if (x->c->kind == JAPI_CHAT) {
        cJSON *e = chat_lp_entry(s, tok, lp->logprob, &raw, &txt);
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int i = 0; i < lp->n_top; i++)
            cJSON_AddItemToArray(top,
                                 chat_lp_entry(s, lp->top_ids[i], lp->top_logprobs[i], &raw, &txt));
        cJSON_AddItemToArray(cJSON_GetObjectItem(o, "content"), e);
    } else {
        cJSON *top = cJSON_CreateObject();
        for (int i = 0; i < lp->n_top; i++) {
            token_piece(s, lp->top_ids[i], &raw, &txt);
            /* two ids with one text: the first (more likely) one stands */
            if (!cJSON_GetObjectItemCaseSensitive(top, txt.p ? txt.p : ""))
                cJSON_AddNumberToObject(top, txt.p ? txt.p : "", lp_value(lp->top_logprobs[i]));
        }
        token_piece(s, tok, &raw, &txt);
        cJSON_AddItemToArray(cJSON_GetObjectItem(o, "tokens"),
                             cJSON_CreateString(txt.p ? txt.p : ""));
        cJSON_AddItemToArray(cJSON_GetObjectItem(o, "token_logprobs"),
                             cJSON_CreateNumber(lp_value(lp->logprob)));
        cJSON_AddItemToArray(cJSON_GetObjectItem(o, "top_logprobs"), top);
        cJSON_AddItemToArray(cJSON_GetObjectItem(o, "text_offset"),
                             cJSON_CreateNumber((double)*offset));
        *offset += raw.len;
    }
    strbuf_free(&raw);
    strbuf_free(&txt);
}

/* The head shared by every OpenAI object. */
static cJSON *openai_object(const call_ctx *x, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", x->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)x->created);
    cJSON_AddStringToObject(o, "model", http_model_name(x->c->h));
    return o;
}

/* "data: <json>\n\n"; takes the JSON tree. */
static void sse_event(strbuf *b, cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!txt) {
        b->oom = 1;
        return;
    }
    strbuf_puts(b, "data: ");
    strbuf_puts(b, txt);
    strbuf_puts(b, "\n\n");
    cJSON_free(txt);
}

/* ---------------------------------------------------------------------
 * The connection
 * ------------------------------------------------------------------- */

/* httpd's callback when the client is gone (any thread, quick). */
static void call_gone(httpd_req *req, void *user) {
    (void)req;
    http_call_cancel(user, RELAY_END_PEER_GONE);
}

/* A piece of a stream; a failed write means the client is gone. */
static int stream_write(http_call *c, const char *p, size_t n) {
    if (relay_end_reason(c->r) == RELAY_END_PEER_GONE) return HTTPD_EGONE;
    int rv = httpd_stream_write(c->req, p, n);
    if (rv != HTTPD_OK) http_call_cancel(c, RELAY_END_PEER_GONE);
    return rv;
}

/* ---------------------------------------------------------------------
 * Unary replies
 * ------------------------------------------------------------------- */

static void reply_error(http_call *c, int status, const char *code, const char *msg) {
    http_reply_error(c->req, status, code, NULL, "%s", msg);
}

static cJSON *generate_json(const call_ctx *x, const relay_result *res) {
    int ids = x->jr->return_tokens;
    const relay_choice *c0 = &res->choices[0];
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "text", c0->text.p ? c0->text.p : "");
    if (ids) cJSON_AddItemToObject(root, "tokens", ids_json(c0->ids, c0->n_ids));
    cJSON_AddStringToObject(root, "finish_reason", finish_name(JAPI_GENERATE, c0->finish));
    if (res->n > 1) {
        cJSON *arr = cJSON_AddArrayToObject(root, "completions");
        for (int i = 0; i < res->n; i++) {
            const relay_choice *ci = &res->choices[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "index", i);
            cJSON_AddStringToObject(o, "text", ci->text.p ? ci->text.p : "");
            if (ids) cJSON_AddItemToObject(o, "tokens", ids_json(ci->ids, ci->n_ids));
            cJSON_AddStringToObject(o, "finish_reason", finish_name(JAPI_GENERATE, ci->finish));
            cJSON_AddItemToArray(arr, o);
        }
    }
    cJSON_AddItemToObject(root, "usage", usage_json(res->prompt_tokens, res->completion_tokens));
    cJSON_AddItemToObject(
        root, "timings",
        timings_json(res->queue_ms, res->ttft_ms < 0 ? 0 : res->ttft_ms, res->total_ms));
    return root;
}

/* Prompt k's choices, appended to choices. */
static void openai_choices(const call_ctx *x, int k, const relay_result *res, cJSON *choices) {
    int chat = x->c->kind == JAPI_CHAT;
    for (int i = 0; i < res->n; i++) {
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", choice_index(x->c, k, i));
        const char *t = res->choices[i].text.p ? res->choices[i].text.p : "";
        if (chat) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", t);
        } else {
            cJSON_AddStringToObject(ch, "text", t);
        }
        if (x->jr->gen.logprobs) {
            cJSON *lo = logprobs_object(x->c->kind);
            size_t offset = 0;
            const relay_choice *c = &res->choices[i];
            for (size_t j = 0; j < c->n_lps; j++)
                logprobs_add(x, lo, c->lps[j].token, &c->lps[j].lp, &offset);
            cJSON_AddItemToObject(ch, "logprobs", lo);
        } else {
            cJSON_AddNullToObject(ch, "logprobs");
        }
        cJSON_AddStringToObject(ch, "finish_reason", openai_finish(res->choices[i].finish));
        cJSON_AddItemToArray(choices, ch);
    }
}

/* The choices of every prompt's relay, and their usage summed. */
static cJSON *openai_json(const call_ctx *x) {
    int chat = x->c->kind == JAPI_CHAT;
    cJSON *root = openai_object(x, chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    int prompt_tokens = 0, completion_tokens = 0;
    for (int k = 0; k < n_relays(x->c); k++) {
        const relay_result *res = relay_result_get(relay_at(x->c, k));
        openai_choices(x, k, res, choices);
        prompt_tokens += res->prompt_tokens;
        completion_tokens += res->completion_tokens;
    }
    cJSON_AddItemToObject(root, "usage", usage_json(prompt_tokens, completion_tokens));
    return root;
}

/* The error reply of a call that did not end OK. */
static void reply_outcome_error(http_call *c, int st) {
    char msg[160];
    switch (st) {
    case SRV_CANCELLED: return; /* the client went away: nobody to answer */
    case SRV_DEADLINE_EXCEEDED:
        snprintf(msg, sizeof msg,
                 "the request did not finish within server.request_timeout_ms (%d ms)",
                 c->s->net.request_timeout_ms);
        reply_error(c, 504, "deadline_exceeded", msg);
        return;
    case SRV_UNAVAILABLE:
        reply_error(c, 503, "shutting_down",
                    "the request was cancelled: the server is shutting down");
        return;
    case SRV_RESOURCE_EXHAUSTED: reply_error(c, 500, "internal_error", "out of memory"); return;
    default: reply_error(c, 500, "internal_error", "generation failed inside the engine");
    }
}

static void unary_call(call_ctx *x) {
    http_call *c = x->c;
    for (int k = 0; k < n_relays(c); k++) relay_wait(relay_at(c, k));
    const relay_result *res = relay_result_get(c->r);
    int st = call_outcome(c);
    char *txt = NULL;
    if (st == SRV_OK) {
        cJSON *root = c->kind == JAPI_GENERATE ? generate_json(x, res) : openai_json(x);
        txt = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        if (!txt) st = SRV_RESOURCE_EXHAUSTED;
    }
    /* Counted before the client can see the answer, so that a client
     * reading /metrics (or main's drain loop reading active_calls) right
     * after it finds the call counted. */
    call_finish(c, st);
    if (txt) http_reply_json(c->req, 200, txt);
    else reply_outcome_error(c, st);
    cJSON_free(txt);
}

/* ---------------------------------------------------------------------
 * Streams
 * ------------------------------------------------------------------- */

/* One SSE event (as JSON) for a piece of text or a finish. */
static cJSON *stream_chunk(const call_ctx *x, int i, const char *text, const engine_event *fin,
                           const int32_t *tok) {
    http_call *c = x->c;
    if (c->kind == JAPI_GENERATE) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddStringToObject(o, "text", text ? text : "");
        if (tok && x->jr->return_tokens) cJSON_AddItemToObject(o, "tokens", ids_json(tok, 1));
        if (fin) {
            cJSON_AddStringToObject(o, "finish_reason", finish_name(c->kind, fin->finish));
            cJSON_AddItemToObject(o, "usage",
                                  usage_json(fin->prompt_tokens, fin->completion_tokens));
            cJSON_AddItemToObject(o, "timings",
                                  timings_json(fin->queue_ms, fin->ttft_ms, fin->total_ms));
        }
        return o;
    }
    int chat = c->kind == JAPI_CHAT;
    cJSON *o = openai_object(x, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", i);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (text) cJSON_AddStringToObject(d, "content", text);
    } else {
        cJSON_AddStringToObject(ch, "text", text ? text : "");
    }
    cJSON_AddNullToObject(ch, "logprobs");
    if (fin) cJSON_AddStringToObject(ch, "finish_reason", openai_finish(fin->finish));
    else cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    return o;
}

/* An event of prompt k's relay. */
static void stream_event(const call_ctx *x, strbuf *out, int k, const engine_event *ev) {
    int i = choice_index(x->c, k, ev->index);
    if (ev->type == ENGINE_EV_TOKEN) {
        /* A token whose text is held back (incomplete UTF-8, a possible
         * stop string) is sent with a later one, except to /generate
         * clients that asked for the ids, and to OpenAI clients that asked
         * for logprobs: each token's chunk carries its logprobs, with
         * whatever text became final (maybe none). */
        int lp = ev->has_logprobs && x->c->kind != JAPI_GENERATE && x->lp_offsets;
        if (ev->text_len || lp || (x->c->kind == JAPI_GENERATE && x->jr->return_tokens)) {
            cJSON *o = stream_chunk(x, i, ev->text ? ev->text : "", NULL, &ev->token);
            if (lp) {
                cJSON *lo = logprobs_object(x->c->kind);
                logprobs_add(x, lo, ev->token, &ev->lp, &x->lp_offsets[i]);
                cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
                cJSON_ReplaceItemInObject(ch, "logprobs", lo);
            }
            sse_event(out, o);
        }
        return;
    }
    if (ev->text_len) sse_event(out, stream_chunk(x, i, ev->text, NULL, NULL));
    sse_event(out, stream_chunk(x, i, x->c->kind == JAPI_CHAT ? NULL : "", ev, NULL));
}

/* The response head; 0, or an httpd error when the client is gone. */
static int stream_begin(http_call *c) {
    static const httpd_header hd[] = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};
    int rv = httpd_stream_begin(c->req, 200, "text/event-stream; charset=utf-8", hd,
                                sizeof hd / sizeof hd[0]);
    if (rv != HTTPD_OK) http_call_cancel(c, RELAY_END_PEER_GONE);
    return rv;
}

/* For chat, each choice's role first. */
static void stream_roles(const call_ctx *x, strbuf *out, int n) {
    if (x->c->kind != JAPI_CHAT) return;
    for (int i = 0; i < n; i++) {
        cJSON *o = stream_chunk(x, i, NULL, NULL, NULL);
        cJSON *d =
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "delta");
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        sse_event(out, o);
    }
}

/* Move what relay k has ready (up to SSE_BATCH_BYTES in out) into out;
 * with wait_ms != 0 wait that long (-1: until) for its first event.
 * Returns 1 when something was added, 0 when nothing was ready, -1 when
 * the relay's stream ended. */
static int stream_take(const call_ctx *x, strbuf *out, int k, int wait_ms) {
    relay *r = relay_at(x->c, k);
    engine_event ev;
    int added = 0, rv = 0;
    while (out->len < SSE_BATCH_BYTES && (rv = relay_next(r, &ev, added ? 0 : wait_ms)) == 1) {
        stream_event(x, out, k, &ev);
        engine_event_clear(&ev);
        added = 1;
    }
    if (added) return 1;
    return rv < 0 ? -1 : 0;
}

/* Relay events until every stream ends, the ready ones of all prompts in
 * one write, choices interleaved as their tokens come; 0, or -1 when out
 * of memory. With one prompt it waits on its stream; with several it
 * polls them in turn, waiting briefly on each when none had anything. */
static int stream_events(const call_ctx *x, strbuf *out) {
    http_call *c = x->c;
    int n = n_relays(c), live = n, turn = 0;
    int ended[JAPI_MAX_PROMPTS] = {0};
    while (live > 0) {
        out->len = 0;
        int any = 0;
        for (int k = 0; k < n; k++) {
            if (ended[k]) continue;
            int rv = stream_take(x, out, k, 0);
            if (rv < 0) ended[k] = 1, live--;
            any |= rv > 0;
        }
        if (!any && live > 0) {
            while (ended[turn % n]) turn++;
            int k = turn++ % n;
            int rv = stream_take(x, out, k, n == 1 ? -1 : STREAM_POLL_MS);
            if (rv < 0) ended[k] = 1, live--;
        }
        if (out->oom) return -1;
        if (out->len) stream_write(c, out->p, out->len); /* a failure ends the call */
    }
    return 0;
}

/* The end of a stream that the client still reads: an error event when
 * the deadline passed, the usage when asked for, and [DONE]. */
static void stream_tail(const call_ctx *x, strbuf *out, int st) {
    http_call *c = x->c;
    out->len = 0;
    if (st == SRV_DEADLINE_EXCEEDED) {
        strbuf_puts(out, "data: ");
        httpd_error_body(out, 504, "deadline_exceeded",
                         "the request did not finish within server.request_timeout_ms");
        strbuf_puts(out, "\n\n");
    }
    if (c->kind != JAPI_GENERATE && x->jr->include_usage) {
        int prompt_tokens = 0, completion_tokens = 0;
        for (int k = 0; k < n_relays(c); k++) {
            prompt_tokens += relay_result_get(relay_at(c, k))->prompt_tokens;
            completion_tokens += relay_result_get(relay_at(c, k))->completion_tokens;
        }
        cJSON *o =
            openai_object(x, c->kind == JAPI_CHAT ? "chat.completion.chunk" : "text_completion");
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", usage_json(prompt_tokens, completion_tokens));
        sse_event(out, o);
    }
    strbuf_puts(out, "data: [DONE]\n\n");
    if (!out->oom) stream_write(c, out->p, out->len);
}

static void stream_call(call_ctx *x) {
    http_call *c = x->c;
    strbuf out = {0};
    int st = SRV_CANCELLED;
    size_t n_choices = (size_t)n_relays(c) * (size_t)relay_result_get(c->r)->n;
    if (x->jr->gen.logprobs && !(x->lp_offsets = calloc(n_choices, sizeof *x->lp_offsets))) {
        call_finish(c, SRV_RESOURCE_EXHAUSTED);
        reply_error(c, 500, "internal_error", "out of memory");
        return;
    }
    stream_roles(x, &out, relay_result_get(c->r)->n);
    if (!out.oom && stream_begin(c) == HTTPD_OK && stream_write(c, out.p, out.len) == 0)
        st = stream_events(x, &out) == 0 ? call_outcome(c) : SRV_INTERNAL;
    call_finish(c, st);
    if (st != SRV_CANCELLED) stream_tail(x, &out, st);
    strbuf_free(&out);
    free(x->lp_offsets);
}

/* ---------------------------------------------------------------------
 * The call
 * ------------------------------------------------------------------- */

/* A srv_prepare failure as the reply (the prompt named in a list). */
static void reply_prepare_error(http_call *c, int st, int k, int listed, const char *err) {
    const char *code;
    int hs = http_status_of(st, &code);
    /* Sampling fields sit at the top level of the JSON bodies. */
    const char *msg = strncmp(err, "sampling.", 9) == 0 ? err + 9 : err;
    if (listed) http_reply_error(c->req, hs, code, NULL, "prompt[%d]: %s", k, msg);
    else http_reply_error(c->req, hs, code, NULL, "%s", msg);
}

/* Validate every prompt into sr[0..n) (n: 1, or the prompt list's
 * length). Returns 0, or -1 after answering and freeing what it made. */
static int call_prepare(http_call *c, japi_request *jr, srv_request *sr, int n) {
    char err[1024];
    for (int k = 0; k < n; k++) {
        if (jr->n_prompts > 0) japi_select_prompt(jr, k);
        int st = srv_prepare(c->s, &jr->gen, &sr[k], err, sizeof err);
        if (st != SRV_OK) {
            for (int i = 0; i < k; i++) srv_request_free(&sr[i]);
            relay_finish(c->r, st);
            reply_prepare_error(c, st, k, jr->n_prompts > 0, err);
            return -1;
        }
    }
    return 0;
}

/* The relays of prompts 1..n-1 (c->extra). Returns 0, or -1 after
 * answering (c->r and what was made finished; c->extra empty). */
static int call_extra_relays(http_call *c, int n) {
    if (n <= 1) return 0;
    c->extra = calloc((size_t)n - 1, sizeof *c->extra);
    for (int k = 0; c->extra && k < n - 1; k++) {
        if (!(c->extra[k] = relay_create(c->s, c->deadline_at))) break;
        c->n_extra++;
    }
    if (c->n_extra == n - 1) return 0;
    call_finish(c, SRV_RESOURCE_EXHAUSTED);
    for (int k = 0; k < c->n_extra; k++) relay_free(c->extra[k]);
    free(c->extra);
    c->extra = NULL;
    c->n_extra = 0;
    http_reply_error(c->req, 503, "overloaded", NULL, "out of memory");
    return -1;
}

/* Parse and validate the body into *sr (one per prompt, *n of them).
 * Returns 0, or -1 after answering. */
static int call_decode(http_call *c, japi_request *jr, srv_request **sr, int *n) {
    char err[1024];
    size_t len;
    const char *body = httpd_req_body(c->req, &len);
    if (japi_parse(c->kind, body, len, jr, err, sizeof err) != 0) {
        relay_finish(c->r, SRV_INVALID_ARGUMENT);
        int json = strncmp(err, "invalid JSON", 12) == 0 || strncmp(err, "request body", 12) == 0;
        http_reply_error(c->req, 400, json ? "invalid_json" : "invalid_parameter", NULL, "%s", err);
        return -1;
    }
    int rc = -1;
    *n = jr->n_prompts > 0 ? jr->n_prompts : 1;
    *sr = calloc((size_t)*n, sizeof **sr);
    if (!*sr) {
        relay_finish(c->r, SRV_RESOURCE_EXHAUSTED);
        http_reply_error(c->req, 503, "overloaded", NULL, "out of memory");
    } else if (jr->model && !http_model_accepts(c->h, jr->model)) {
        relay_finish(c->r, SRV_NOT_FOUND);
        http_reply_model_not_found(c->h, c->req, jr->model);
    } else if (call_prepare(c, jr, *sr, *n) == 0) {
        if (call_extra_relays(c, *n) == 0) return 0;
        for (int k = 0; k < *n; k++) srv_request_free(&(*sr)[k]);
    }
    free(*sr);
    *sr = NULL;
    japi_request_free(jr);
    return rc;
}

/* Submit every prompt and watch the connection. Returns 0, or -1 after
 * answering. */
static int call_start(call_ctx *x, const srv_request *sr) {
    http_call *c = x->c;
    char err[1024];
    relay_mode mode = x->jr->stream ? RELAY_STREAM : RELAY_UNARY;
    for (int k = 0; k < n_relays(c); k++) {
        int st = relay_submit(relay_at(c, k), &sr[k], mode, err, sizeof err);
        if (st != SRV_OK) {
            const char *code;
            int hs = http_status_of(st, &code);
            call_finish(c, st); /* relay_free cancels those submitted */
            http_reply_error(c->req, hs, code, NULL, "%s", err);
            return -1;
        }
    }
    /* A client already gone cancels the call here and now. */
    httpd_req_watch(c->req, x->jr->stream ? HTTPD_WATCH_STREAM : HTTPD_WATCH_UNARY, call_gone, c);
    /* Registered: srv_http_stop may cancel it from now on. */
    http_calls_register(c);
    x->created = (long)time(NULL);
    snprintf(x->id, sizeof x->id, "%s-%lx%04" PRIx64, c->kind == JAPI_CHAT ? "chatcmpl" : "cmpl",
             http_created(c->h), (uint64_t)relay_engine_id(c->r));
    return 0;
}

void http_call_run(http_call *c) {
    japi_request jr;
    srv_request *sr = NULL;
    int n = 0;
    if (call_decode(c, &jr, &sr, &n) != 0) return;
    call_ctx x = {.c = c, .jr = &jr};
    if (call_start(&x, sr) == 0) {
        if (jr.stream) stream_call(&x);
        else unary_call(&x);
        http_calls_unregister(c);
        /* No callback may see c after this. */
        httpd_req_watch(c->req, jr.stream ? HTTPD_WATCH_STREAM : HTTPD_WATCH_UNARY, NULL, NULL);
    }
    for (int k = 0; k < c->n_extra; k++) relay_free(c->extra[k]);
    free(c->extra);
    c->extra = NULL;
    c->n_extra = 0;
    for (int k = 0; k < n; k++) srv_request_free(&sr[k]);
    free(sr);
    japi_request_free(&jr);
}
