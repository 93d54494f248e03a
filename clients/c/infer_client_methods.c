/*
 * infer_client_methods.c - the typed methods of libinfer_client: build the
 * request message from the caller's plain structs, run the call
 * (infer_client.c) and copy the response into caller-owned results.
 *
 * "Unset" parameters (INFER_UNSET_*) are left out of the request, so the
 * server applies its defaults; anything set is sent as given and validated
 * by the server (INVALID_ARGUMENT with a precise message).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/c/infer_client_impl.h"

void infer_gen_params_init(infer_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = INFER_UNSET_FLOAT;
    p->top_k = INFER_UNSET_INT;
    p->top_p = INFER_UNSET_FLOAT;
    p->min_p = INFER_UNSET_FLOAT;
    p->repetition_penalty = INFER_UNSET_FLOAT;
    p->repeat_last_n = INFER_UNSET_INT;
    p->max_tokens = INFER_UNSET_INT;
    p->min_tokens = INFER_UNSET_INT;
    p->ignore_eos = INFER_UNSET_BOOL;
    p->n = INFER_UNSET_INT;
    p->add_special = INFER_UNSET_BOOL;
    p->return_token_ids = INFER_UNSET_BOOL;
}

/* The request message, pointing into p (nothing to free but msgs). */
typedef struct {
    Inference__GenerateRequest req;
    Inference__SamplingParams sp;
    Inference__ChatMessage *msg_store;
    Inference__ChatMessage **msgs;
    Inference__ResponseFormat rf;
} icl_gen_request;

static int icl_gen_build(const infer_gen_params *p, icl_gen_request *r, infer_status *st) {
    memset(r, 0, sizeof *r);
    inference__generate_request__init(&r->req);
    inference__sampling_params__init(&r->sp);
    if (!p) return icl_status(st, INFER_INVALID_ARGUMENT, "no generation parameters");
    Inference__GenerateRequest *q = &r->req;
    q->prompt = (char *)p->prompt;
    q->n_prompt_ids = p->n_prompt_ids;
    q->prompt_ids = (int32_t *)p->prompt_ids;
    if (p->n_messages) {
        r->msg_store = calloc(p->n_messages, sizeof *r->msg_store);
        r->msgs = calloc(p->n_messages, sizeof *r->msgs);
        if (!r->msg_store || !r->msgs) {
            free(r->msg_store);
            free(r->msgs);
            return icl_status(st, INFER_RESOURCE_EXHAUSTED, "out of memory");
        }
        for (size_t i = 0; i < p->n_messages; i++) {
            inference__chat_message__init(&r->msg_store[i]);
            /* required fields: an absent role or content is sent as "" and
             * the server names the problem */
            r->msg_store[i].role = (char *)(p->messages[i].role ? p->messages[i].role : "");
            r->msg_store[i].content =
                (char *)(p->messages[i].content ? p->messages[i].content : "");
            r->msgs[i] = &r->msg_store[i];
        }
        q->n_messages = p->n_messages;
        q->messages = r->msgs;
    }

    Inference__SamplingParams *s = &r->sp;
    int any = 0;
#define ICL_SET(field, unset)                                                                      \
    if (p->field != (unset)) {                                                                     \
        s->has_##field = 1;                                                                        \
        s->field = p->field;                                                                       \
        any = 1;                                                                                   \
    }
    ICL_SET(temperature, INFER_UNSET_FLOAT)
    ICL_SET(top_k, INFER_UNSET_INT)
    ICL_SET(top_p, INFER_UNSET_FLOAT)
    ICL_SET(min_p, INFER_UNSET_FLOAT)
    ICL_SET(repetition_penalty, INFER_UNSET_FLOAT)
    ICL_SET(repeat_last_n, INFER_UNSET_INT)
#undef ICL_SET
    if (p->has_seed) {
        s->has_seed = 1;
        s->seed = p->seed;
        any = 1;
    }
    if (any) q->sampling = s;

#define ICL_SET_REQ(field, unset)                                                                  \
    if (p->field != (unset)) {                                                                     \
        q->has_##field = 1;                                                                        \
        q->field = p->field;                                                                       \
    }
    ICL_SET_REQ(max_tokens, INFER_UNSET_INT)
    ICL_SET_REQ(min_tokens, INFER_UNSET_INT)
    ICL_SET_REQ(n, INFER_UNSET_INT)
    ICL_SET_REQ(ignore_eos, INFER_UNSET_BOOL)
    ICL_SET_REQ(add_special, INFER_UNSET_BOOL)
    ICL_SET_REQ(return_token_ids, INFER_UNSET_BOOL)
#undef ICL_SET_REQ
    if (p->response_format) {
        Inference__ResponseFormat init = INFERENCE__RESPONSE_FORMAT__INIT;
        r->rf = init;
        r->rf.type = (char *)p->response_format;
        r->rf.json_schema = (char *)p->json_schema;
        q->response_format = &r->rf;
    }
    q->n_stop = p->n_stop;
    q->stop = (char **)p->stop;
    q->n_stop_ids = p->n_stop_ids;
    q->stop_ids = (int32_t *)p->stop_ids;
    return INFER_OK;
}

static void icl_gen_release(icl_gen_request *r) {
    free(r->msg_store);
    free(r->msgs);
}

/* Unpack a reply payload with desc; NULL (and st set) when it does not decode. */
static ProtobufCMessage *icl_unpack(const ProtobufCMessageDescriptor *desc, const Rpc__Frame *f,
                                    const char *method, infer_status *st) {
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, f->has_payload ? f->payload.len : 0,
                                                    f->has_payload ? f->payload.data : NULL);
    if (!m) icl_status(st, INFER_INTERNAL, "%s: undecodable response from the server", method);
    return m;
}

static void icl_usage_from(infer_usage *u, const Inference__Usage *us,
                           const Inference__Timings *t) {
    memset(u, 0, sizeof *u);
    if (us) {
        u->prompt_tokens = us->has_prompt_tokens ? us->prompt_tokens : 0;
        u->completion_tokens = us->has_completion_tokens ? us->completion_tokens : 0;
    }
    if (t) {
        u->queue_ms = t->queue_ms;
        u->ttft_ms = t->ttft_ms;
        u->total_ms = t->total_ms;
    }
}

void infer_result_free(infer_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_completions; i++) {
        free(r->completions[i].text);
        free(r->completions[i].token_ids);
    }
    free(r->completions);
    memset(r, 0, sizeof *r);
}

static int icl_cmp_completion(const void *a, const void *b) {
    const infer_completion *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

int infer_generate(infer_client *c, const infer_gen_params *p, int deadline_ms, infer_result *out,
                   infer_status *st) {
    memset(out, 0, sizeof *out);
    icl_gen_request r;
    int code = icl_gen_build(p, &r, st);
    if (code != INFER_OK) return code;
    Rpc__Frame *f;
    code = icl_unary(c, "Generate", &r.req.base, deadline_ms, &f, st);
    icl_gen_release(&r);
    if (code != INFER_OK) return code;
    Inference__GenerateResponse *resp = (Inference__GenerateResponse *)icl_unpack(
        &inference__generate_response__descriptor, f, "Generate", st);
    rpc_frame_free(f);
    if (!resp) return INFER_INTERNAL;

    code = INFER_OK;
    out->completions =
        calloc(resp->n_completions ? resp->n_completions : 1, sizeof *out->completions);
    if (!out->completions) {
        code = icl_status(st, INFER_RESOURCE_EXHAUSTED, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < resp->n_completions; i++) {
        const Inference__Completion *in = resp->completions[i];
        infer_completion *cp = &out->completions[i];
        out->n_completions = i + 1;
        cp->index = in->has_index ? in->index : (int)i;
        cp->text = strdup(in->text ? in->text : "");
        if (in->n_token_ids) {
            cp->token_ids = malloc(in->n_token_ids * sizeof *cp->token_ids);
            if (cp->token_ids) {
                memcpy(cp->token_ids, in->token_ids, in->n_token_ids * sizeof *cp->token_ids);
                cp->n_token_ids = in->n_token_ids;
            }
        }
        if (!cp->text || (in->n_token_ids && !cp->token_ids)) {
            code = icl_status(st, INFER_RESOURCE_EXHAUSTED, "out of memory");
            goto done;
        }
        snprintf(cp->finish_reason, sizeof cp->finish_reason, "%s",
                 in->finish_reason ? in->finish_reason : "");
    }
    qsort(out->completions, out->n_completions, sizeof *out->completions, icl_cmp_completion);
    icl_usage_from(&out->usage, resp->usage, resp->timings);
done:
    inference__generate_response__free_unpacked(resp, NULL);
    if (code != INFER_OK) infer_result_free(out);
    return code;
}

int infer_stream_start(infer_client *c, const infer_gen_params *p, int deadline_ms,
                       infer_chunk_fn cb, void *user, infer_call **out, infer_status *st) {
    *out = NULL;
    if (!cb) return icl_status(st, INFER_INVALID_ARGUMENT, "no chunk callback");
    icl_gen_request r;
    int code = icl_gen_build(p, &r, st);
    if (code != INFER_OK) return code;
    code = icl_stream_start(c, "GenerateStream", &r.req.base, deadline_ms, cb, user, out, st);
    icl_gen_release(&r); /* the frame was encoded when it was queued */
    return code;
}

int infer_generate_stream(infer_client *c, const infer_gen_params *p, int deadline_ms,
                          infer_chunk_fn cb, void *user, infer_status *st) {
    infer_call *call;
    int code = infer_stream_start(c, p, deadline_ms, cb, user, &call, st);
    if (code != INFER_OK) return code;
    code = infer_call_wait(call, st);
    infer_call_free(call);
    return code;
}

int infer_tokenize(infer_client *c, const char *text, int add_special, int parse_special,
                   int deadline_ms, int32_t **ids, size_t *n_ids, infer_status *st) {
    *ids = NULL;
    *n_ids = 0;
    Inference__TokenizeRequest req = INFERENCE__TOKENIZE_REQUEST__INIT;
    req.text = (char *)(text ? text : "");
    if (add_special != INFER_UNSET_BOOL) {
        req.has_add_special = 1;
        req.add_special = add_special != 0;
    }
    if (parse_special != INFER_UNSET_BOOL) {
        req.has_parse_special = 1;
        req.parse_special = parse_special != 0;
    }
    Rpc__Frame *f;
    int code = icl_unary(c, "Tokenize", &req.base, deadline_ms, &f, st);
    if (code != INFER_OK) return code;
    Inference__TokenizeResponse *resp = (Inference__TokenizeResponse *)icl_unpack(
        &inference__tokenize_response__descriptor, f, "Tokenize", st);
    rpc_frame_free(f);
    if (!resp) return INFER_INTERNAL;
    if (resp->n_ids) {
        *ids = malloc(resp->n_ids * sizeof **ids);
        if (!*ids) {
            inference__tokenize_response__free_unpacked(resp, NULL);
            return icl_status(st, INFER_RESOURCE_EXHAUSTED, "out of memory");
        }
        memcpy(*ids, resp->ids, resp->n_ids * sizeof **ids);
        *n_ids = resp->n_ids;
    }
    inference__tokenize_response__free_unpacked(resp, NULL);
    return INFER_OK;
}

int infer_detokenize(infer_client *c, const int32_t *ids, size_t n_ids, int render_special,
                     int deadline_ms, char **text, infer_status *st) {
    *text = NULL;
    Inference__DetokenizeRequest req = INFERENCE__DETOKENIZE_REQUEST__INIT;
    req.n_ids = n_ids;
    req.ids = (int32_t *)ids;
    if (render_special != INFER_UNSET_BOOL) {
        req.has_render_special = 1;
        req.render_special = render_special != 0;
    }
    Rpc__Frame *f;
    int code = icl_unary(c, "Detokenize", &req.base, deadline_ms, &f, st);
    if (code != INFER_OK) return code;
    Inference__DetokenizeResponse *resp = (Inference__DetokenizeResponse *)icl_unpack(
        &inference__detokenize_response__descriptor, f, "Detokenize", st);
    rpc_frame_free(f);
    if (!resp) return INFER_INTERNAL;
    *text = strdup(resp->text ? resp->text : "");
    inference__detokenize_response__free_unpacked(resp, NULL);
    return *text ? INFER_OK : icl_status(st, INFER_RESOURCE_EXHAUSTED, "out of memory");
}

int icl_health_decode(const Rpc__Frame *f, char *status, size_t statuslen, infer_status *st) {
    Inference__HealthResponse *resp = (Inference__HealthResponse *)icl_unpack(
        &inference__health_response__descriptor, f, "Health", st);
    if (!resp) return INFER_INTERNAL;
    if (status && statuslen) snprintf(status, statuslen, "%s", resp->status ? resp->status : "");
    inference__health_response__free_unpacked(resp, NULL);
    return INFER_OK;
}

int infer_health(infer_client *c, int deadline_ms, char *status, size_t statuslen,
                 infer_status *st) {
    if (status && statuslen) status[0] = 0;
    Inference__HealthRequest req = INFERENCE__HEALTH_REQUEST__INIT;
    Rpc__Frame *f;
    int code = icl_unary(c, "Health", &req.base, deadline_ms, &f, st);
    if (code != INFER_OK) return code;
    code = icl_health_decode(f, status, statuslen, st);
    rpc_frame_free(f);
    return code;
}

int icl_stats_decode(const Rpc__Frame *f, infer_stats_t *out, infer_status *st) {
    memset(out, 0xff, sizeof *out); /* every field -1 */
    Inference__StatsResponse *r = (Inference__StatsResponse *)icl_unpack(
        &inference__stats_response__descriptor, f, "Stats", st);
    if (!r) return INFER_INTERNAL;
#define ICL_COPY(field)                                                                            \
    if (r->has_##field) out->field = r->field;
    ICL_COPY(waiting)
    ICL_COPY(running)
    ICL_COPY(swapped)
    ICL_COPY(blocks_total)
    ICL_COPY(blocks_free)
    ICL_COPY(blocks_cpu_total)
    ICL_COPY(blocks_cpu_free)
    ICL_COPY(preemptions_swap)
    ICL_COPY(preemptions_recompute)
    ICL_COPY(prompt_tokens)
    ICL_COPY(generated_tokens)
    ICL_COPY(requests_finished)
    ICL_COPY(steps)
    ICL_COPY(active_calls)
    ICL_COPY(connections)
#undef ICL_COPY
    inference__stats_response__free_unpacked(r, NULL);
    return INFER_OK;
}

int infer_stats(infer_client *c, int deadline_ms, infer_stats_t *out, infer_status *st) {
    memset(out, 0xff, sizeof *out); /* every field -1 */
    Inference__StatsRequest req = INFERENCE__STATS_REQUEST__INIT;
    Rpc__Frame *f;
    int code = icl_unary(c, "Stats", &req.base, deadline_ms, &f, st);
    if (code != INFER_OK) return code;
    code = icl_stats_decode(f, out, st);
    rpc_frame_free(f);
    return code;
}

int infer_model_info(infer_client *c, int deadline_ms, infer_model_info_t *out, infer_status *st) {
    memset(out, 0, sizeof *out);
    out->n_vocab = out->context_length = out->n_embd = out->n_layer = -1;
    out->n_head = out->n_head_kv = out->bos_id = out->eos_id = -1;
    out->weight_bytes = -1;
    Inference__ModelInfoRequest req = INFERENCE__MODEL_INFO_REQUEST__INIT;
    Rpc__Frame *f;
    int code = icl_unary(c, "ModelInfo", &req.base, deadline_ms, &f, st);
    if (code != INFER_OK) return code;
    Inference__ModelInfoResponse *r = (Inference__ModelInfoResponse *)icl_unpack(
        &inference__model_info_response__descriptor, f, "ModelInfo", st);
    rpc_frame_free(f);
    if (!r) return INFER_INTERNAL;
    snprintf(out->name, sizeof out->name, "%s", r->name ? r->name : "");
    snprintf(out->architecture, sizeof out->architecture, "%s",
             r->architecture ? r->architecture : "");
    snprintf(out->path, sizeof out->path, "%s", r->path ? r->path : "");
    snprintf(out->chat_template_family, sizeof out->chat_template_family, "%s",
             r->chat_template_family ? r->chat_template_family : "");
#define ICL_COPY(field)                                                                            \
    if (r->has_##field) out->field = r->field;
    ICL_COPY(n_vocab)
    ICL_COPY(context_length)
    ICL_COPY(n_embd)
    ICL_COPY(n_layer)
    ICL_COPY(n_head)
    ICL_COPY(n_head_kv)
    ICL_COPY(weight_bytes)
    ICL_COPY(bos_id)
    ICL_COPY(eos_id)
#undef ICL_COPY
    inference__model_info_response__free_unpacked(r, NULL);
    return INFER_OK;
}
