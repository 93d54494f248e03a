/*
 * generate.c - static-batch generation loop (see generate.h).
 *
 * One batch lives in an array of gen_seq. Prefill walks the prompts of the
 * batch as one stream of rows cut into chunks of at most prefill_chunk rows;
 * a prompt may span chunks, and its logits are requested only in the chunk
 * holding its last row. Decode steps then feed each running sequence's last
 * sampled token as one row. Text is produced by the tokenizer's incremental
 * detokenizer; with stop strings, any tail that could still grow into a stop
 * string is held back from the callback until it is decided.
 */
#include "generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "tokenizer.h"

#define GEN_BLOCK_SIZE 16

const char *gen_finish_name(gen_finish f) {
    switch (f) {
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_EOS: return "eos";
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_CANCELLED: return "cancelled";
    }
    return "unknown";
}

void gen_result_free(gen_result *r) {
    if (!r) return;
    free(r->tokens);
    free(r->text);
    memset(r, 0, sizeof *r);
}

void gen_options_default(gen_options *o) {
    memset(o, 0, sizeof *o);
    o->batch_size = 8;
    o->prefill_chunk = 512;
    o->kv_type = KV_F16; /* llama.cpp's default; results match it bit for bit */
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

typedef struct {
    int req;        /* index into the request array */
    int kv_seq;     /* kv cache sequence handle, -1 when none */
    sampler *smp;
    int32_t *hist;  /* prompt + generated ids, for the repetition penalty */
    int n_hist;
    int n_past;     /* tokens in the KV cache */
    int32_t last;   /* last sampled token, not yet in the cache */
    int running;
    tok_stream ts;
    size_t text_cap;
    size_t emitted; /* bytes of result text already handed to the callback */
} gen_seq;

/* Everything one gen_run call allocates, freed in one place. */
typedef struct {
    llm_model *m;
    backend *be;
    const llm_tokenizer *tok;
    const gen_request *reqs;
    gen_result *res;
    const gen_options *opt;
    int n_vocab;
    kv_cache *kv;
    gen_seq *seqs;
    int n_seqs;
    int32_t *eog;   /* end-of-generation ids, suppressed for min_tokens/ignore_eos */
    int n_eog;
    /* step buffers */
    int32_t *tok_ids, *pos, *slots, *seq_start, *ctx_len, *logit_rows, *logit_seq;
    const int32_t **tables;
    float *logits;
    char *piece;    /* detokenizer output scratch */
    size_t piece_cap;
} gen_ctx;

static int text_append(gen_ctx *g, gen_seq *s, const char *p, size_t n) {
    gen_result *r = &g->res[s->req];
    if (r->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap ? s->text_cap : 256;
        while (cap < r->text_len + n + 1) cap *= 2;
        char *t = realloc(r->text, cap);
        if (!t) return -1;
        r->text = t;
        s->text_cap = cap;
    }
    memcpy(r->text + r->text_len, p, n);
    r->text_len += n;
    r->text[r->text_len] = 0;
    return 0;
}

/* Earliest occurrence of any stop string at or after `from`; -1 if none. */
static long find_stop(const gen_request *q, const char *text, size_t len, size_t from) {
    long best = -1;
    for (int i = 0; i < q->n_stop; i++) {
        const char *st = q->stop[i];
        size_t sl = st ? strlen(st) : 0;
        if (sl == 0 || from >= len) continue;
        const char *hit = memmem(text + from, len - from, st, sl);
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}

/* Length of the longest suffix of text[from..len) that is a proper prefix of
 * a stop string (text that must wait for the next token). */
static size_t stop_holdback(const gen_request *q, const char *text, size_t len, size_t from) {
    size_t hold = 0;
    for (int i = 0; i < q->n_stop; i++) {
        const char *st = q->stop[i];
        size_t sl = st ? strlen(st) : 0;
        for (size_t k = sl ? sl - 1 : 0; k > hold; k--) {
            if (k <= len - from && memcmp(text + len - k, st, k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

/* Hand the callback text[emitted..upto). Returns its verdict (nonzero: stop). */
static int emit(gen_ctx *g, gen_seq *s, int32_t token, size_t upto) {
    gen_result *r = &g->res[s->req];
    const char *p = r->text ? r->text + s->emitted : "";
    size_t n = upto > s->emitted ? upto - s->emitted : 0;
    s->emitted += n;
    if (!g->opt->on_token) return 0;
    return g->opt->on_token(g->opt->user, s->req, token, p, n);
}

static void seq_finish(gen_ctx *g, gen_seq *s, gen_finish why, double t_gen0) {
    gen_result *r = &g->res[s->req];
    if (why != GEN_FINISH_STOP) {
        /* release what the detokenizer held (an incomplete character) */
        char tail[16];
        int n = tok_stream_flush(&s->ts, tail, sizeof tail);
        if (n > 0 && text_append(g, s, tail, (size_t)n) != 0) n = 0;
        long at = find_stop(&g->reqs[s->req], r->text, r->text_len, s->emitted);
        if (at >= 0) {
            r->text_len = (size_t)at;
            r->text[at] = 0;
            why = GEN_FINISH_STOP;
        }
    }
    r->finish = why;
    r->gen_ms = now_ms() - t_gen0;
    if (!r->text) text_append(g, s, "", 0);
    emit(g, s, -1, r->text_len);
    s->running = 0;
    sampler_free(s->smp);
    s->smp = NULL;
    if (s->kv_seq >= 0) kv_seq_free(g->kv, s->kv_seq);
    s->kv_seq = -1;
}

/* Sample the next token of s from its logits row, record it, and decide
 * whether the sequence goes on. Returns 0, or -1 on a hard error. */
static int seq_step(gen_ctx *g, gen_seq *s, float *row, double t_gen0, char *err, size_t errlen) {
    const gen_request *q = &g->reqs[s->req];
    gen_result *r = &g->res[s->req];
    if (r->n_tokens >= q->max_tokens) {
        seq_finish(g, s, GEN_FINISH_LENGTH, t_gen0);
        return 0;
    }
    if (q->ignore_eos || r->n_tokens < q->min_tokens)
        for (int i = 0; i < g->n_eog; i++) row[g->eog[i]] = -INFINITY;
    int32_t t = sampler_sample(s->smp, row, s->hist, (size_t)s->n_hist);
    if (t < 0) {
        snprintf(err, errlen, "request %d: no token can be sampled (all logits are NaN or -inf)",
                 s->req);
        return -1;
    }
    if (tok_is_eog(g->tok, t)) {
        seq_finish(g, s, GEN_FINISH_EOS, t_gen0);
        return 0;
    }
    s->hist[s->n_hist++] = t;
    r->tokens[r->n_tokens++] = t;
    s->last = t;

    int n = tok_stream_push(&s->ts, g->tok, t, g->piece, g->piece_cap);
    if (n < 0 && n != TOK_EINVAL) {
        size_t need = (size_t)-n;
        char *p = realloc(g->piece, need);
        if (!p) goto oom;
        g->piece = p;
        g->piece_cap = need;
        n = tok_stream_push(&s->ts, g->tok, t, g->piece, g->piece_cap);
    }
    if (n > 0) {
        size_t from = s->emitted;
        if (text_append(g, s, g->piece, (size_t)n) != 0) goto oom;
        long at = find_stop(q, r->text, r->text_len, from);
        if (at >= 0) {
            r->text_len = (size_t)at;
            r->text[at] = 0;
            emit(g, s, t, r->text_len);
            seq_finish(g, s, GEN_FINISH_STOP, t_gen0);
            return 0;
        }
    }
    size_t hold = q->n_stop ? stop_holdback(q, r->text ? r->text : "", r->text_len, s->emitted) : 0;
    if (emit(g, s, t, r->text_len - hold) != 0) {
        seq_finish(g, s, GEN_FINISH_CANCELLED, t_gen0);
        return 0;
    }
    if (r->n_tokens >= q->max_tokens) seq_finish(g, s, GEN_FINISH_LENGTH, t_gen0);
    return 0;
oom:
    snprintf(err, errlen, "request %d: out of memory for the completion text", s->req);
    return -1;
}

static int blocks_for(int n_tokens) { return (n_tokens + GEN_BLOCK_SIZE - 1) / GEN_BLOCK_SIZE; }

static void ctx_free(gen_ctx *g) {
    for (int i = 0; i < g->n_seqs; i++) {
        sampler_free(g->seqs[i].smp);
        free(g->seqs[i].hist);
    }
    free(g->seqs);
    if (g->kv) kv_cache_free(g->kv);
    free(g->eog);
    free(g->tok_ids);
    free(g->pos);
    free(g->slots);
    free(g->seq_start);
    free(g->ctx_len);
    free(g->logit_rows);
    free(g->logit_seq);
    free(g->tables);
    free(g->logits);
    free(g->piece);
}

/* Prefill the prompts of seqs[0..n) in chunks; samples each one's first
 * token. Returns 0 or -1. */
static int run_prefill(gen_ctx *g, int n, double *t_end, char *err, size_t errlen) {
    const int chunk = g->opt->prefill_chunk;
    int si = 0, p = 0; /* cursor: sequence index, position within its prompt */
    int n_logits_total = 0;
    char ferr[256];
    while (si < n) {
        int rows = 0, ns = 0, nl = 0;
        g->seq_start[0] = 0;
        while (si < n && rows < chunk) {
            gen_seq *s = &g->seqs[si];
            const gen_request *q = &g->reqs[s->req];
            int take = q->n_prompt - p;
            if (take > chunk - rows) take = chunk - rows;
            for (int k = 0; k < take; k++) {
                g->tok_ids[rows + k] = q->prompt[p + k];
                g->pos[rows + k] = p + k;
                g->slots[rows + k] = kv_seq_slot(g->kv, s->kv_seq, p + k);
            }
            rows += take;
            p += take;
            g->ctx_len[ns] = p;
            g->tables[ns] = kv_seq_block_table(g->kv, s->kv_seq);
            g->seq_start[++ns] = rows;
            if (p == q->n_prompt) {
                g->logit_rows[nl] = rows - 1;
                g->logit_seq[nl++] = si;
                si++;
                p = 0;
            }
        }
        llm_batch b = {
            .n_tokens = rows,
            .token_ids = g->tok_ids,
            .positions = g->pos,
            .slot_mapping = g->slots,
            .n_seqs = ns,
            .seq_start = g->seq_start,
            .context_len = g->ctx_len,
            .block_tables = g->tables,
            .n_logits = nl,
            .logit_rows = g->logit_rows,
        };
        if (llm_forward(g->m, g->be, g->kv, &b, g->logits + (size_t)n_logits_total * g->n_vocab,
                        ferr, sizeof ferr) != 0) {
            snprintf(err, errlen, "prefill: %s", ferr);
            return -1;
        }
        n_logits_total += nl;
    }
    *t_end = now_ms();
    for (int i = 0; i < n; i++) g->seqs[i].n_past = g->reqs[g->seqs[i].req].n_prompt;
    /* logits rows are in sequence order: one per sequence */
    for (int i = 0; i < n; i++)
        if (seq_step(g, &g->seqs[i], g->logits + (size_t)i * g->n_vocab, *t_end, err, errlen) != 0)
            return -1;
    return 0;
}

static int run_decode_step(gen_ctx *g, int n, double t_gen0, char *err, size_t errlen) {
    int ns = 0;
    char ferr[256];
    g->seq_start[0] = 0;
    for (int i = 0; i < n; i++) {
        gen_seq *s = &g->seqs[i];
        if (!s->running) continue;
        if (kv_seq_reserve(g->kv, s->kv_seq, s->n_past + 1) != 0) {
            snprintf(err, errlen, "request %d: KV cache out of blocks at %d tokens", s->req,
                     s->n_past + 1);
            return -1;
        }
        g->tok_ids[ns] = s->last;
        g->pos[ns] = s->n_past;
        g->slots[ns] = kv_seq_slot(g->kv, s->kv_seq, s->n_past);
        g->ctx_len[ns] = s->n_past + 1;
        g->seq_start[ns + 1] = ns + 1;
        g->logit_rows[ns] = ns;
        g->logit_seq[ns] = i;
        ns++;
    }
    /* block tables last: a reserve above may have moved an earlier table */
    for (int k = 0; k < ns; k++)
        g->tables[k] = kv_seq_block_table(g->kv, g->seqs[g->logit_seq[k]].kv_seq);
    llm_batch b = {
        .n_tokens = ns,
        .token_ids = g->tok_ids,
        .positions = g->pos,
        .slot_mapping = g->slots,
        .n_seqs = ns,
        .seq_start = g->seq_start,
        .context_len = g->ctx_len,
        .block_tables = g->tables,
        .n_logits = ns,
        .logit_rows = g->logit_rows,
    };
    if (llm_forward(g->m, g->be, g->kv, &b, g->logits, ferr, sizeof ferr) != 0) {
        snprintf(err, errlen, "decode: %s", ferr);
        return -1;
    }
    for (int k = 0; k < ns; k++) {
        gen_seq *s = &g->seqs[g->logit_seq[k]];
        s->n_past++;
        if (seq_step(g, s, g->logits + (size_t)k * g->n_vocab, t_gen0, err, errlen) != 0) return -1;
    }
    return 0;
}

static int validate(const gen_ctx *g, int n, int n_ctx, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        const gen_request *q = &g->reqs[i];
        if (!q->prompt || q->n_prompt < 1) {
            snprintf(err, errlen, "request %d: the prompt is empty (at least one token needed)", i);
            return -1;
        }
        if (q->max_tokens < 0 || q->min_tokens < 0) {
            snprintf(err, errlen, "request %d: max_tokens and min_tokens must be >= 0 (got %d, %d)",
                     i, q->max_tokens, q->min_tokens);
            return -1;
        }
        if ((long)q->n_prompt + q->max_tokens > n_ctx) {
            snprintf(err, errlen,
                     "request %d: prompt (%d tokens) + max_tokens (%d) exceeds the model's "
                     "context of %d tokens",
                     i, q->n_prompt, q->max_tokens, n_ctx);
            return -1;
        }
        for (int k = 0; k < q->n_prompt; k++) {
            if (q->prompt[k] < 0 || q->prompt[k] >= g->n_vocab) {
                snprintf(err, errlen, "request %d: prompt token %d has id %d outside the "
                         "vocabulary of %d", i, k, q->prompt[k], g->n_vocab);
                return -1;
            }
        }
        char perr[200];
        if (sampler_params_validate(&q->sampling, perr, sizeof perr) != 0) {
            snprintf(err, errlen, "request %d: %s", i, perr);
            return -1;
        }
    }
    return 0;
}

int gen_run(llm_model *m, backend *be, const llm_tokenizer *tok, const gen_request *reqs, int n,
            const gen_options *opt_in, gen_result *results, gen_stats *stats, char *err,
            size_t errlen) {
    gen_options opt;
    if (opt_in) {
        opt = *opt_in;
    } else {
        gen_options_default(&opt);
    }
    if (opt.batch_size <= 0 || opt.prefill_chunk <= 0) {
        snprintf(err, errlen, "batch_size and prefill_chunk must be > 0 (got %d, %d)",
                 opt.batch_size, opt.prefill_chunk);
        return -1;
    }
    double t0 = now_ms();
    gen_stats st = {0};
    memset(results, 0, (size_t)(n > 0 ? n : 0) * sizeof *results);
    if (stats) *stats = st;
    if (n <= 0) return 0;

    const llm_hparams *hp = llm_model_hparams(m);
    gen_ctx g = {.m = m, .be = be, .tok = tok, .reqs = reqs, .res = results, .opt = &opt};
    g.n_vocab = hp->n_vocab;
    if (validate(&g, n, hp->n_ctx_train, err, errlen) != 0) return -1;

    const int bs = opt.batch_size < n ? opt.batch_size : n;
    int max_blocks = 0;
    for (int b0 = 0; b0 < n; b0 += bs) {
        int blocks = 0;
        for (int i = b0; i < n && i < b0 + bs; i++)
            blocks += blocks_for(reqs[i].n_prompt + reqs[i].max_tokens);
        if (blocks > max_blocks) max_blocks = blocks;
    }

    int rc = -1;
    char kerr[256];
    int rows_cap = opt.prefill_chunk > bs ? opt.prefill_chunk : bs;
    if (kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, GEN_BLOCK_SIZE, max_blocks,
                        opt.kv_type, &g.kv, kerr, sizeof kerr) != 0) {
        snprintf(err, errlen, "KV cache (%d blocks of %d tokens): %s", max_blocks, GEN_BLOCK_SIZE,
                 kerr);
        return -1;
    }
    g.seqs = calloc((size_t)bs, sizeof *g.seqs);
    g.eog = malloc((size_t)g.n_vocab * sizeof *g.eog);
    g.tok_ids = malloc((size_t)rows_cap * sizeof *g.tok_ids);
    g.pos = malloc((size_t)rows_cap * sizeof *g.pos);
    g.slots = malloc((size_t)rows_cap * sizeof *g.slots);
    g.seq_start = malloc((size_t)(bs + 1) * sizeof *g.seq_start);
    g.ctx_len = malloc((size_t)bs * sizeof *g.ctx_len);
    g.logit_rows = malloc((size_t)bs * sizeof *g.logit_rows);
    g.logit_seq = malloc((size_t)bs * sizeof *g.logit_seq);
    g.tables = malloc((size_t)bs * sizeof *g.tables);
    g.logits = malloc((size_t)bs * (size_t)g.n_vocab * sizeof *g.logits);
    g.piece_cap = 1024;
    g.piece = malloc(g.piece_cap);
    if (!g.seqs || !g.eog || !g.tok_ids || !g.pos || !g.slots || !g.seq_start || !g.ctx_len ||
        !g.logit_rows || !g.logit_seq || !g.tables || !g.logits || !g.piece) {
        snprintf(err, errlen, "out of memory for the generation buffers (batch %d)", bs);
        goto done;
    }
    int n_tok_vocab = tok_n_vocab(tok) < g.n_vocab ? tok_n_vocab(tok) : g.n_vocab;
    for (int i = 0; i < n_tok_vocab; i++)
        if (tok_is_eog(tok, i)) g.eog[g.n_eog++] = i;

    for (int b0 = 0; b0 < n; b0 += bs) {
        int nb = n - b0 < bs ? n - b0 : bs;
        g.n_seqs = nb;
        for (int i = 0; i < nb; i++) {
            gen_seq *s = &g.seqs[i];
            const gen_request *q = &reqs[b0 + i];
            gen_result *r = &results[b0 + i];
            memset(s, 0, sizeof *s);
            s->req = b0 + i;
            s->kv_seq = -1;
            r->n_prompt = q->n_prompt;
            r->tokens = malloc((size_t)(q->max_tokens > 0 ? q->max_tokens : 1) * sizeof *r->tokens);
            s->hist = malloc((size_t)(q->n_prompt + q->max_tokens) * sizeof *s->hist);
            if (!r->tokens || !s->hist) {
                snprintf(err, errlen, "request %d: out of memory", s->req);
                goto done;
            }
            memcpy(s->hist, q->prompt, (size_t)q->n_prompt * sizeof *s->hist);
            s->n_hist = q->n_prompt;
            char serr[200];
            if (sampler_create(&q->sampling, g.n_vocab, &s->smp, serr, sizeof serr) != 0) {
                snprintf(err, errlen, "request %d: %s", s->req, serr);
                goto done;
            }
            tok_stream_init(&s->ts, 0);
            s->kv_seq = kv_seq_new(g.kv);
            if (s->kv_seq < 0 || kv_seq_reserve(g.kv, s->kv_seq, q->n_prompt) != 0) {
                snprintf(err, errlen, "request %d: no room in the KV cache for %d prompt tokens",
                         s->req, q->n_prompt);
                goto done;
            }
            s->running = 1;
        }
        double tp0 = now_ms(), tp1;
        if (run_prefill(&g, nb, &tp1, err, errlen) != 0) goto done;
        st.prompt_ms += tp1 - tp0;
        for (int i = 0; i < nb; i++) {
            results[b0 + i].prompt_ms = tp1 - tp0;
            st.prompt_tokens += reqs[b0 + i].n_prompt;
        }
        for (;;) {
            int any = 0;
            for (int i = 0; i < nb; i++) any |= g.seqs[i].running;
            if (!any) break;
            if (run_decode_step(&g, nb, tp1, err, errlen) != 0) goto done;
        }
        st.gen_ms += now_ms() - tp1;
        for (int i = 0; i < nb; i++) {
            st.gen_tokens += results[b0 + i].n_tokens;
            free(g.seqs[i].hist);
            g.seqs[i].hist = NULL;
        }
        st.n_batches++;
    }
    rc = 0;
done:
    ctx_free(&g);
    st.total_ms = now_ms() - t0;
    if (stats) *stats = st;
    return rc;
}
