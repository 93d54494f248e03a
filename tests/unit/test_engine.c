/*
 * test_engine.c - the serving engine end to end on the real model:
 *   - 64 prompts of mixed lengths, greedy, through a device pool too small to
 *     hold them all at once, once with swap and once with recompute: every
 *     output is token-identical to the prompt run alone, preemptions
 *     happened, and afterwards every block of both tiers is free;
 *   - static batching gives the same outputs;
 *   - cancelling a sequence mid-generation frees its blocks and the others
 *     finish unchanged;
 *   - n > 1 completions share the prompt and completion 0 equals n = 1;
 *   - requests submitted while the engine is held form one static batch;
 *   - invalid requests are refused with a message;
 *   - prompts sharing a long prefix give the same greedy outputs with the
 *     prefix cache on and off, find the prefix cached, and still do in a
 *     tiny pool that evicts cached blocks and preempts (recompute, swap),
 *     ending with every block free or cached and pkv_check passing.
 * Under AddressSanitizer the workload is smaller (same checks).
 * Skips (77) without the model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend/backend.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/engine.h"
#include "tests/common/test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define N_PROMPTS 16
#else
#define N_PROMPTS 64
#endif

static llm_model *M;
static backend *BE;
static llm_tokenizer *TOK;

typedef struct {
    int32_t *ids;
    int n;
    int max_tokens;
} prompt;

typedef struct {
    int32_t toks[256];
    int n;
    gen_finish finish;
    int finished;
} outcome;

static prompt P[N_PROMPTS];

/* Slices of the prose corpus, lengths 6..~100 tokens, outputs 4..36. */
static int make_prompts(void) {
    FILE *f = fopen(tu_src_path("tools/ref_corpus/prose.txt"), "rb");
    if (!f) return -1;
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    int32_t *all;
    int n_all = tok_encode(TOK, text, n, 0, 0, &all);
    if (n_all < 400) {
        free(all);
        return -1;
    }
    uint64_t s = 42;
    for (int i = 0; i < N_PROMPTS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int len = 6 + (int)((s >> 33) % 95);
        int start = (int)((s >> 13) % (uint64_t)(n_all - len));
        P[i].ids = malloc((size_t)len * sizeof *P[i].ids);
        memcpy(P[i].ids, all + start, (size_t)len * sizeof *all);
        P[i].n = len;
        P[i].max_tokens = 4 + (int)((s >> 45) % 33);
    }
    free(all);
    return 0;
}

static engine_request greedy_req(int i) {
    engine_request r = {0};
    r.prompt = P[i].ids;
    r.n_prompt = P[i].n;
    sampler_params_default(&r.sampling);
    r.sampling.temperature = 0;
    r.max_tokens = P[i].max_tokens;
    r.ignore_eos = 1; /* exact lengths */
    r.n = 1;
    return r;
}

/* Read a stream to its end into out[index]. */
static void drain(engine_stream *s, outcome *out) {
    engine_event ev;
    while (engine_stream_next(s, &ev, -1) == 1) {
        outcome *o = &out[ev.index];
        if (ev.type == ENGINE_EV_TOKEN && o->n < 256) o->toks[o->n++] = ev.token;
        if (ev.type == ENGINE_EV_FINISH) {
            o->finish = ev.finish;
            o->finished = 1;
        }
        engine_event_clear(&ev);
    }
}

/* Run prompts [0, n) through one engine; all submitted at once. */
static int run_all(const engine_options *opt, outcome *out, int n, engine_stats *st) {
    engine *e;
    char err[256];
    if (engine_create(M, BE, TOK, opt, &e, err, sizeof err) != 0) {
        fprintf(stderr, "engine_create: %s\n", err);
        return -1;
    }
    engine_stream **ss = calloc((size_t)n, sizeof *ss);
    for (int i = 0; i < n; i++) {
        engine_request r = greedy_req(i);
        if (engine_submit(e, &r, &ss[i], NULL, err, sizeof err) != 0) {
            fprintf(stderr, "submit %d: %s\n", i, err);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        drain(ss[i], &out[i]);
        engine_stream_free(ss[i]);
    }
    engine_wait_idle(e);
    engine_get_stats(e, st);
    engine_destroy(e);
    free(ss);
    return 0;
}

static void base_options(engine_options *o) {
    engine_options_default(o);
    o->batch_max_seqs = 16;
    o->batch_max_tokens = 256;
    o->num_blocks = 48; /* all prompts need several hundred blocks */
    o->watermark = 0.02;
}

static int same(const outcome *a, const outcome *b) {
    return a->finished && b->finished && a->n == b->n &&
           memcmp(a->toks, b->toks, (size_t)a->n * sizeof *a->toks) == 0 && a->finish == b->finish;
}

static void check_all_free(const engine_stats *st, const char *what) {
    CHECKF(st->blocks_free[0] == st->blocks_total[0], "%s: %d of %d device blocks free", what,
           st->blocks_free[0], st->blocks_total[0]);
    CHECKF(st->blocks_free[1] == st->blocks_total[1], "%s: %d of %d CPU blocks free", what,
           st->blocks_free[1], st->blocks_total[1]);
    CHECKF(st->n_running == 0 && st->n_waiting == 0 && st->n_swapped == 0,
           "%s: queues not empty (running %d, waiting %d, swapped %d)", what, st->n_running,
           st->n_waiting, st->n_swapped);
}

static outcome ALONE[N_PROMPTS], GOT[N_PROMPTS];

/* brief: only the recompute mode (re-prefilled rows batched with decode
 * rows, the strongest batch-invariance check), to keep a second pass cheap */
static void test_preemption_identical(int brief) {
    /* each prompt alone: one sequence at a time, ample memory */
    engine_options o;
    engine_options_default(&o);
    o.batch_max_seqs = 1;
    o.num_blocks = 64;
    engine_stats st;
    CHECK(run_all(&o, ALONE, N_PROMPTS, &st) == 0);
    CHECK(st.preempt_swap + st.preempt_recompute == 0);
    for (int i = 0; i < N_PROMPTS; i++)
        CHECKF(ALONE[i].finished && ALONE[i].n == P[i].max_tokens, "alone %d: %d tokens", i,
               ALONE[i].n);

    const char *names[2] = {"swap", "recompute"};
    for (int mode = brief ? 1 : 0; mode < 2; mode++) {
        base_options(&o);
        if (mode == 0) {
            o.num_blocks_cpu = 512;
            o.preempt_mode = ENGINE_PREEMPT_SWAP;
        } else {
            o.preempt_mode = ENGINE_PREEMPT_RECOMPUTE;
        }
        CHECK(run_all(&o, GOT, N_PROMPTS, &st) == 0);
        int n_same = 0;
        for (int i = 0; i < N_PROMPTS; i++) {
            int ok = same(&GOT[i], &ALONE[i]);
            n_same += ok;
            if (!ok) fprintf(stderr, "%s: prompt %d differs from running alone\n", names[mode], i);
        }
        long pre = mode == 0 ? st.preempt_swap : st.preempt_recompute;
        printf("%s: %d/%d outputs identical to running alone; %ld preemptions, %ld swap-ins, "
               "%ld steps, KV efficiency at peak %.1f%%\n",
               names[mode], n_same, N_PROMPTS, pre, st.swap_in, st.steps,
               100 * st.kv_efficiency_peak);
        CHECK(n_same == N_PROMPTS);
        CHECKF(pre > 0, "%s: no preemption happened", names[mode]);
        if (mode == 0) CHECK(st.swap_in > 0);
        check_all_free(&st, names[mode]);
    }
    if (brief) return;
    /* static batching: same outputs */
    base_options(&o);
    o.batching = ENGINE_BATCH_STATIC;
    o.num_blocks = 0; /* from the memory budget: everything fits */
    CHECK(run_all(&o, GOT, N_PROMPTS, &st) == 0);
    int n_same = 0;
    for (int i = 0; i < N_PROMPTS; i++) n_same += same(&GOT[i], &ALONE[i]);
    printf("static: %d/%d identical\n", n_same, N_PROMPTS);
    CHECK(n_same == N_PROMPTS);
    check_all_free(&st, "static");
}

static void test_cancel(void) {
    engine_options o;
    base_options(&o);
    o.num_blocks = 128;
    engine *e;
    char err[256];
    CHECK(engine_create(M, BE, TOK, &o, &e, err, sizeof err) == 0);
    enum { N = 4 };
    engine_stream *ss[N];
    int64_t ids[N];
    for (int i = 0; i < N; i++) {
        engine_request r = greedy_req(i);
        r.max_tokens = P[i].max_tokens;
        if (i == 1) r.max_tokens = 200; /* long enough to be cancelled mid-way */
        CHECK(engine_submit(e, &r, &ss[i], &ids[i], err, sizeof err) == 0);
    }
    /* read request 1 until it has produced 3 tokens, then cancel it */
    outcome o1;
    memset(&o1, 0, sizeof o1);
    engine_event ev;
    while (engine_stream_next(ss[1], &ev, -1) == 1) {
        if (ev.type == ENGINE_EV_TOKEN) o1.n++;
        if (ev.type == ENGINE_EV_FINISH) o1.finish = ev.finish, o1.finished = 1;
        engine_event_clear(&ev);
        if (o1.n == 3 && !o1.finished) engine_cancel(e, ids[1]);
    }
    CHECKF(o1.finished && o1.finish == GEN_FINISH_CANCELLED, "finish %s",
           gen_finish_name(o1.finish));
    CHECK(o1.n < 200);
    for (int i = 0; i < N; i++) {
        if (i == 1) continue;
        outcome got;
        memset(&got, 0, sizeof got);
        drain(ss[i], &got);
        CHECKF(same(&got, &ALONE[i]), "request %d changed by the cancel", i);
    }
    for (int i = 0; i < N; i++) engine_stream_free(ss[i]);
    /* a stream freed while running cancels its request */
    engine_request r = greedy_req(5);
    r.max_tokens = 300 - P[5].n;
    engine_stream *s;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == 0);
    CHECK(engine_stream_next(s, &ev, -1) == 1);
    engine_event_clear(&ev);
    engine_stream_free(s);
    engine_wait_idle(e);
    engine_stats st;
    engine_get_stats(e, &st);
    check_all_free(&st, "cancel");
    CHECKF(st.forward_ms > 0 && st.sample_ms > 0 && st.sample_ms < st.forward_ms,
           "engine thread time: forward %.3f ms, sampling %.3f ms", st.forward_ms, st.sample_ms);
    engine_destroy(e);
}

static void test_n_completions(void) {
    engine_options o;
    base_options(&o);
    o.num_blocks = 64;
    engine *e;
    char err[256];
    CHECK(engine_create(M, BE, TOK, &o, &e, err, sizeof err) == 0);
    engine_request r = greedy_req(2);
    r.sampling.temperature = 0.9f;
    r.sampling.seed = 1234;
    r.max_tokens = 12;
    r.n = 3;
    engine_stream *s;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == 0);
    outcome three[3];
    memset(three, 0, sizeof three);
    drain(s, three);
    engine_stream_free(s);
    r.n = 1;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == 0);
    outcome one[1];
    memset(one, 0, sizeof one);
    drain(s, one);
    engine_stream_free(s);
    for (int i = 0; i < 3; i++) CHECK(three[i].finished && three[i].n == 12);
    CHECKF(same(&three[0], &one[0]), "completion 0 of n=3 differs from n=1 with the same seed");
    CHECKF(!same(&three[0], &three[1]) || !same(&three[1], &three[2]),
           "all three sampled completions are identical");
    engine_wait_idle(e);
    engine_stats st;
    engine_get_stats(e, &st);
    check_all_free(&st, "n=3");
    engine_destroy(e);
}

/* Requests submitted while the engine is held wait untouched, then reach
 * the scheduler together: one static batch holds them all, although they
 * were submitted 20 ms apart (without the hold the first would start alone
 * and the others form a second batch). */
static void test_hold(void) {
    engine_options o;
    base_options(&o);
    o.batching = ENGINE_BATCH_STATIC;
    o.batch_max_seqs = 4;
    o.num_blocks = 64;
    engine *e;
    char err[256];
    CHECK(engine_create(M, BE, TOK, &o, &e, err, sizeof err) == 0);
    engine_stream *ss[4];
    int prompt_tokens = 0;
    engine_hold(e, 1);
    for (int i = 0; i < 4; i++) {
        engine_request r = greedy_req(i);
        r.max_tokens = 8;
        prompt_tokens += r.n_prompt;
        CHECK(engine_submit(e, &r, &ss[i], NULL, err, sizeof err) == 0);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    engine_stats st;
    engine_get_stats(e, &st);
    CHECKF(st.steps == 0, "%ld steps ran while held", st.steps);
    engine_hold(e, 0);
    outcome out[4];
    for (int i = 0; i < 4; i++) {
        memset(&out[i], 0, sizeof out[i]);
        drain(ss[i], &out[i]);
        engine_stream_free(ss[i]);
        CHECK(out[i].finished && out[i].n == 8);
    }
    engine_wait_idle(e);
    engine_get_stats(e, &st);
    /* one batch: the prompts' prefill steps, then 7 decode steps */
    const long one_batch = (prompt_tokens + o.batch_max_tokens - 1) / o.batch_max_tokens + 7;
    CHECKF(st.steps == one_batch, "%ld steps, one static batch takes %ld", st.steps, one_batch);
    check_all_free(&st, "hold");
    engine_destroy(e);
}

static void test_invalid(void) {
    engine_options o;
    base_options(&o);
    engine *e;
    char err[256];
    CHECK(engine_create(M, BE, TOK, &o, &e, err, sizeof err) == 0);
    engine_stream *s;
    engine_request r = greedy_req(0);
    r.max_tokens = 100000;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == ENGINE_EINVAL &&
          strstr(err, "exceeds"));
    r = greedy_req(0);
    r.n_prompt = 0;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == ENGINE_EINVAL && strstr(err, "empty"));
    r = greedy_req(0);
    r.sampling.temperature = -1;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == ENGINE_EINVAL &&
          strstr(err, "temperature"));
    r = greedy_req(0);
    int32_t bad = 1 << 20;
    r.prompt = &bad;
    r.n_prompt = 1;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == ENGINE_EINVAL &&
          strstr(err, "vocabulary"));
    r = greedy_req(0);
    r.max_tokens = 0;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == 0);
    outcome z[1];
    memset(z, 0, sizeof z);
    drain(s, z);
    engine_stream_free(s);
    CHECK(z[0].finished && z[0].n == 0 && z[0].finish == GEN_FINISH_LENGTH);
    engine_destroy(e);
}

/* engine_limits: the context is max_context capped by the model, the KV
 * capacity the device blocks less the watermark's (rounded down), and the
 * running engine refuses exactly what engine_check_fit refuses, with the
 * same message. */
static void test_limits(void) {
    const llm_hparams *hp = llm_model_hparams(M);
    engine_options o;
    base_options(&o); /* 48 blocks of 16 */
    o.watermark = 0.25;
    o.max_context = 300;
    engine_limits l;
    engine_limits_for(M, &o, &l);
    CHECKF(l.context_length == 300 && l.num_blocks == 48 && l.block_size == 16 &&
               l.watermark_blocks == 12 && l.kv_capacity == 36 * 16,
           "context %d, %d blocks, watermark %d, capacity %ld", l.context_length, l.num_blocks,
           l.watermark_blocks, l.kv_capacity);
    CHECK(l.block_bytes == kv_block_bytes(hp->n_layer, hp->n_head_kv * hp->head_dim, 16, KV_F16));
    char err[256], err2[256];
    CHECK(engine_check_fit(&l, 200, 100, 1, err, sizeof err) == ENGINE_FITS);
    CHECK(engine_check_fit(&l, 200, 101, 1, err, sizeof err) == ENGINE_OVER_CONTEXT &&
          strstr(err, "= 301 exceeds the context length of 300 tokens"));
    o.max_context = 0;
    engine_limits_for(M, &o, &l);
    CHECK(l.context_length == hp->n_ctx_train);
    CHECK(engine_check_fit(&l, 500, 77, 1, err, sizeof err) == ENGINE_OVER_KV_CAPACITY &&
          strstr(err, "exceeds the KV cache capacity of 576 tokens"));
    /* n completions share the prompt's full blocks: 40 tokens = 2 full
     * blocks + 8; each completion holds 8 + 88 = 96 tokens = 6 blocks, so 5
     * need 2 + 30 = 32 <= 36 blocks and 6 need 38 */
    CHECK(engine_blocks_needed(&l, 40, 88, 5) == 32 && engine_blocks_needed(&l, 40, 88, 6) == 38);
    CHECK(engine_blocks_needed(&l, 40, 88, 1) == 8); /* ceil(128 / 16) */
    CHECK(engine_check_fit(&l, 40, 88, 5, err, sizeof err) == ENGINE_FITS);
    CHECK(engine_check_fit(&l, 40, 88, 6, err, sizeof err) == ENGINE_OVER_KV_CAPACITY &&
          strstr(err, "n (6) completions") && strstr(err, "need up to 38 KV blocks") &&
          strstr(err, "more than the cache's 36"));

    /* blocks from the memory budget, as config_resolve_num_blocks counts them */
    o.num_blocks = 0;
    o.kv_memory_mb = 1;
    engine_limits_for(M, &o, &l);
    CHECK((uint64_t)l.num_blocks == kv_blocks_in_budget(1, l.block_bytes));

    base_options(&o);
    o.watermark = 0.25;
    engine *e;
    CHECK(engine_create(M, BE, TOK, &o, &e, err, sizeof err) == 0);
    engine_limits got;
    engine_get_limits(e, &got);
    engine_limits_for(M, &o, &l);
    CHECK(got.context_length == l.context_length && got.num_blocks == l.num_blocks &&
          got.watermark_blocks == l.watermark_blocks && got.kv_capacity == l.kv_capacity &&
          got.block_bytes == l.block_bytes);
    engine_request r = greedy_req(0);
    r.max_tokens = (int)(l.kv_capacity - r.n_prompt + 1);
    engine_stream *st;
    CHECK(engine_check_fit(&l, r.n_prompt, r.max_tokens, 1, err2, sizeof err2) ==
          ENGINE_OVER_KV_CAPACITY);
    CHECK(engine_submit(e, &r, &st, NULL, err, sizeof err) == ENGINE_EINVAL &&
          strcmp(err, err2) == 0);
    engine_destroy(e);
}

/* ---- prefix caching ---- */

#define N_SHARED 8
#define SHARED_PREFIX 64 /* four 16-token blocks */

static prompt SP[N_SHARED];
static outcome SREF[N_SHARED], SGOT[N_SHARED];

/* N_SHARED prompts: one 64-token prefix, then 9..30 tokens of their own;
 * the last repeats the first, whose 80 tokens are five full blocks (the
 * lookup must still leave its last token to compute). */
static void make_shared_prompts(void) {
    for (int i = 0; i < N_SHARED; i++) {
        int own = i == 0 || i == N_SHARED - 1 ? 16 : 9 + 3 * i;
        const prompt *src = &P[i + 1];
        SP[i].n = SHARED_PREFIX + own;
        SP[i].ids = malloc((size_t)SP[i].n * sizeof *SP[i].ids);
        for (int k = 0; k < SHARED_PREFIX; k++) SP[i].ids[k] = P[0].ids[k % P[0].n] + k % 7;
        for (int k = 0; k < own; k++) SP[i].ids[SHARED_PREFIX + k] = src->ids[k % src->n];
        SP[i].max_tokens = 6 + i;
    }
    memcpy(SP[N_SHARED - 1].ids, SP[0].ids, (size_t)SP[0].n * sizeof *SP[0].ids);
}

static int submit_shared(engine *e, int i, engine_stream **s) {
    engine_request r = {0};
    r.prompt = SP[i].ids;
    r.n_prompt = SP[i].n;
    sampler_params_default(&r.sampling);
    r.sampling.temperature = 0;
    r.max_tokens = SP[i].max_tokens;
    r.ignore_eos = 1;
    r.n = 1;
    char err[256];
    if (engine_submit(e, &r, s, NULL, err, sizeof err) == 0) return 0;
    fprintf(stderr, "submit shared %d: %s\n", i, err);
    return -1;
}

/* Prompt 0 alone first (its blocks get cached), then the rest at once. */
static int run_shared(const engine_options *opt, outcome *out, engine_stats *st) {
    engine *e;
    char err[256];
    if (engine_create(M, BE, TOK, opt, &e, err, sizeof err) != 0) {
        fprintf(stderr, "engine_create: %s\n", err);
        return -1;
    }
    engine_stream *ss[N_SHARED] = {0};
    memset(out, 0, N_SHARED * sizeof *out);
    int rc = submit_shared(e, 0, &ss[0]);
    if (rc == 0) drain(ss[0], &out[0]);
    for (int i = 1; i < N_SHARED && rc == 0; i++) rc = submit_shared(e, i, &ss[i]);
    for (int i = 0; i < N_SHARED; i++) {
        if (ss[i] && i > 0) drain(ss[i], &out[i]);
        engine_stream_free(ss[i]);
    }
    engine_wait_idle(e);
    engine_get_stats(e, st);
    if (engine_check_kv(e, err, sizeof err) != 0) {
        fprintf(stderr, "pool: %s\n", err);
        rc = -1;
    }
    engine_destroy(e);
    return rc;
}

static int n_same_shared(const char *what) {
    int n = 0;
    for (int i = 0; i < N_SHARED; i++) {
        int ok = same(&SGOT[i], &SREF[i]) && SGOT[i].n == SP[i].max_tokens;
        if (!ok) fprintf(stderr, "%s: shared-prefix prompt %d differs from no caching\n", what, i);
        n += ok;
    }
    return n;
}

static void test_prefix_caching_identical(void) {
    make_shared_prompts();
    engine_options o;
    engine_options_default(&o);
    o.batch_max_seqs = 8;
    o.batch_max_tokens = 256;
    o.num_blocks = 64;
    o.enable_prefix_caching = 0;
    engine_stats st;
    CHECK(run_shared(&o, SREF, &st) == 0);
    CHECK(st.prefix_hit_tokens == 0 && st.blocks_cached == 0);

    o.enable_prefix_caching = 1;
    CHECK(run_shared(&o, SGOT, &st) == 0);
    int n = n_same_shared("cached");
    printf("prefix cache: %d/%d identical; %ld of %ld prompt tokens found cached, %d blocks "
           "cached at the end\n",
           n, N_SHARED, st.prefix_hit_tokens, st.prefix_queried_tokens, st.blocks_cached);
    CHECK(n == N_SHARED);
    /* the 7 prompts after the first find at least the shared prefix */
    CHECK(st.prefix_hit_tokens >= (N_SHARED - 1) * SHARED_PREFIX);
    CHECK(st.prefix_hit_tokens < st.prefix_queried_tokens);
    CHECK(st.blocks_cached > 0 && st.blocks_free[0] == st.blocks_total[0]);

    /* a pool too small for the batch: cached blocks are evicted and
     * sequences preempted (recompute: their computed blocks are found
     * again; swap), and the outputs do not change */
    for (int mode = 0; mode < 2; mode++) {
        o.num_blocks = 14;
        o.watermark = 0;
        o.num_blocks_cpu = mode ? 64 : 0;
        o.preempt_mode = mode ? ENGINE_PREEMPT_SWAP : ENGINE_PREEMPT_RECOMPUTE;
        const char *what = mode ? "tiny pool, swap" : "tiny pool, recompute";
        CHECK(run_shared(&o, SGOT, &st) == 0);
        n = n_same_shared(what);
        long pre = st.preempt_recompute + st.preempt_swap;
        printf("%s: %d/%d identical; %ld preemptions, %ld evictions, %ld tokens found cached\n",
               what, n, N_SHARED, pre, st.prefix_evictions, st.prefix_hit_tokens);
        CHECK(n == N_SHARED);
        CHECKF(pre > 0 && st.prefix_evictions > 0, "%s: %ld preemptions, %ld evictions", what, pre,
               st.prefix_evictions);
        CHECK(st.prefix_hit_tokens > 0);
        check_all_free(&st, what);
    }
    for (int i = 0; i < N_SHARED; i++) free(SP[i].ids);
}

int main(void) {
    int lrc = tu_load_model("test_engine", &M, &TOK);
    if (lrc) return lrc;
    char err[512];
    BE = backend_cpu_create(0, err, sizeof err);
    if (make_prompts() != 0) {
        fprintf(stderr, "cannot build prompts from tools/ref_corpus/prose.txt\n");
        return 1;
    }
    test_prefix_caching_identical();
    test_preemption_identical(0);
    test_cancel();
    test_n_completions();
    test_hold();
    test_invalid();
    test_limits();
    /* the fast numerics are batch-invariant too: the same checks on a
     * backend that uses them (ALONE is recomputed with it) */
    backend_free(BE);
    be_cpu_options fo = {0, BE_NUMERICS_FAST};
    BE = backend_cpu_create_opts(&fo, err, sizeof err);
    CHECK(BE != NULL && backend_cpu_numerics(BE) == BE_NUMERICS_FAST);
    if (BE) {
        printf("fast numerics:\n");
        test_preemption_identical(1);
    }
    for (int i = 0; i < N_PROMPTS; i++) free(P[i].ids);
    tok_free(TOK);
    backend_free(BE);
    llm_model_free(M);
    return tu_finish("test_engine");
}
