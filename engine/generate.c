/*
 * generate.c - see generate.h. A thin client of the engine: everything
 * about batching, memory and sampling happens there.
 */
#include "engine/generate.h"
#include "base/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend/backend.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/engine.h"

void gen_result_free(gen_result *r) {
    if (!r) return;
    free(r->tokens);
    free(r->text);
    memset(r, 0, sizeof *r);
}

void gen_options_default(gen_options *o) {
    engine_options eo;
    engine_options_default(&eo);
    memset(o, 0, sizeof *o);
    o->batch_size = 8;
    o->prefill_chunk = eo.batch_max_tokens;
    o->kv_type = eo.kv_type;
    o->batching = eo.batching;
}

static int append(gen_result *r, int32_t tok, const char *text, size_t len, int *cap) {
    if (tok >= 0) {
        if (r->n_tokens == *cap) {
            int c = *cap ? *cap * 2 : 64;
            int32_t *p = realloc(r->tokens, (size_t)c * sizeof *p);
            if (!p) return -1;
            r->tokens = p;
            *cap = c;
        }
        r->tokens[r->n_tokens++] = tok;
    }
    char *t = realloc(r->text, r->text_len + len + 1);
    if (!t) return -1;
    r->text = t;
    memcpy(r->text + r->text_len, text ? text : "", len);
    r->text_len += len;
    r->text[r->text_len] = 0;
    return 0;
}

/* Submit every request, held so that all reach the scheduler in the same
 * step; 0, or -1 with the message of the first refused. */
static int submit_all(engine *e, const gen_request *reqs, int n, engine_stream **streams, char *err,
                      size_t errlen) {
    int rc = 0;
    engine_hold(e, 1);
    for (int i = 0; i < n && rc == 0; i++) {
        const gen_request *q = &reqs[i];
        engine_request r = {0};
        r.prompt = q->prompt;
        r.n_prompt = q->n_prompt;
        r.sampling = q->sampling;
        r.max_tokens = q->max_tokens;
        r.min_tokens = q->min_tokens;
        r.ignore_eos = q->ignore_eos;
        r.stop = q->stop;
        r.n_stop = q->n_stop;
        r.format = (engine_format)q->format;
        r.json_schema = q->json_schema;
        r.n = 1;
        char e2[256];
        if (engine_submit(e, &r, &streams[i], NULL, e2, sizeof e2) != 0) {
            snprintf(err, errlen, "request %d: %s", i, e2);
            rc = -1;
        }
    }
    engine_hold(e, 0);
    return rc;
}

int gen_run(llm_model *m, backend *be, const llm_tokenizer *tok, const gen_request *reqs, int n,
            const gen_options *opt, gen_result *results, gen_stats *stats, char *err,
            size_t errlen) {
    gen_stats local;
    gen_options dflt;
    if (!stats) stats = &local;
    if (!opt) {
        gen_options_default(&dflt);
        opt = &dflt;
    }
    memset(stats, 0, sizeof *stats);
    for (int i = 0; i < n; i++) memset(&results[i], 0, sizeof results[i]);
    if (n <= 0) return 0;
    const llm_hparams *hp = llm_model_hparams(m);
    engine_options eo;
    if (opt->engine) {
        eo = *opt->engine;
    } else {
        engine_options_default(&eo);
        eo.batch_max_seqs = opt->batch_size > 0 ? opt->batch_size : 1;
        if (opt->prefill_chunk > 0) eo.batch_max_tokens = opt->prefill_chunk;
        if (eo.batch_max_tokens < eo.batch_max_seqs) eo.batch_max_tokens = eo.batch_max_seqs;
        eo.kv_type = opt->kv_type;
        eo.batching = opt->batching;
        /* room for a full batch of the longest request, plus the watermark */
        long longest = 1;
        for (int i = 0; i < n; i++) {
            long t = (long)reqs[i].n_prompt + reqs[i].max_tokens;
            if (t > hp->n_ctx_train) t = hp->n_ctx_train;
            if (t > longest) longest = t;
        }
        int per_seq = (int)((longest + eo.block_size - 1) / eo.block_size);
        int seqs = eo.batch_max_seqs < n ? eo.batch_max_seqs : n;
        eo.num_blocks = per_seq * seqs + 2;
        eo.watermark = 0;
    }
    eo.max_waiting = n + 1;
    engine *e;
    if (engine_create(m, be, tok, &eo, &e, err, errlen) != 0) return -1;
    engine_stream **streams = calloc((size_t)n, sizeof *streams);
    int *caps = calloc((size_t)n, sizeof *caps);
    if (!streams || !caps) {
        snprintf(err, errlen, "out of memory");
        free(streams);
        free(caps);
        engine_destroy(e);
        return -1;
    }
    double t0 = clock_now_ms();
    int rc = submit_all(e, reqs, n, streams, err, errlen);
    double last_first = t0;
    for (int i = 0; i < n && rc == 0; i++) {
        gen_result *res = &results[i];
        res->n_prompt = reqs[i].n_prompt;
        engine_event ev;
        int cancelled = 0;
        while (engine_stream_next(streams[i], &ev, -1) == 1) {
            int32_t t = ev.type == ENGINE_EV_TOKEN ? ev.token : -1;
            if (append(res, t, ev.text, ev.text_len, &caps[i]) != 0) {
                snprintf(err, errlen, "out of memory collecting request %d", i);
                rc = -1;
            }
            if (!cancelled && opt->on_token &&
                opt->on_token(opt->user, i, t, ev.text ? ev.text : "", ev.text_len) != 0) {
                cancelled = 1;
                engine_cancel(e, engine_stream_id(streams[i]));
            }
            if (ev.type == ENGINE_EV_FINISH) {
                res->finish = ev.finish;
                res->prompt_ms = ev.ttft_ms;
                res->gen_ms = ev.total_ms - ev.ttft_ms;
                if (t0 + ev.ttft_ms > last_first) last_first = t0 + ev.ttft_ms;
                stats->prompt_tokens += ev.prompt_tokens;
                stats->gen_tokens += res->n_tokens;
                if (ev.finish == GEN_FINISH_ERROR) {
                    snprintf(err, errlen, "request %d failed in the engine", i);
                    rc = -1;
                }
            }
            engine_event_clear(&ev);
        }
        if (!res->text) append(res, -1, "", 0, &caps[i]);
    }
    engine_stats es;
    engine_get_stats(e, &es);
    stats->steps = es.steps;
    stats->preemptions = es.preempt_swap + es.preempt_recompute;
    stats->peak_blocks = es.peak_blocks_used;
    stats->kv_efficiency_peak = es.kv_efficiency_peak;
    stats->forward_ms = es.forward_ms;
    stats->sample_ms = es.sample_ms;
    stats->prefix_queried_tokens = es.prefix_queried_tokens;
    stats->prefix_hit_tokens = es.prefix_hit_tokens;
    for (int i = 0; i < n; i++) engine_stream_free(streams[i]);
    engine_destroy(e);
    double t1 = clock_now_ms();
    stats->total_ms = t1 - t0;
    stats->prompt_ms = last_first - t0;
    stats->gen_ms = stats->total_ms - stats->prompt_ms;
    free(streams);
    free(caps);
    return rc;
}
