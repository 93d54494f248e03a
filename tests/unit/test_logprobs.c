/*
 * test_logprobs.c - log-probabilities of sampled tokens (engine_request
 * .logprobs / .top_logprobs, core/sampler.h sampler_logprobs):
 *   - sampler_logprobs on hand-made logits: the repetition penalty is
 *     applied, temperature / top-k / top-p / min-p are not, a +inf logit
 *     takes all the mass, ties rank the lower id first;
 *   - on the real model, greedy: each TOKEN event's token is its top-1
 *     alternative with the same logprob, the alternatives are sorted, their
 *     probabilities sum to <= 1, and every value equals a log-softmax
 *     computed here, in double, from llm_forward's logits for the same
 *     tokens (prompt in one pass, then one generated token a pass, the
 *     shapes the engine uses);
 *   - sampling at temperature 0.9 with top-k/top-p: the logprobs are still
 *     the model's own (equal to the same reference for the drawn tokens);
 *   - under response_format json_object the values are the unmasked
 *     model's (the reference knows nothing of the grammar);
 *   - logprobs off: no event carries them; top_logprobs 21 is refused.
 * Skips (77) without the model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "core/model.h"
#include "core/sampler.h"
#include "core/tokenizer.h"
#include "engine/engine.h"
#include "tests/common/test_util.h"

#define MAX_GEN 12
#define TOL 2e-3 /* engine vs reference: same kernels, same shapes; rounding only */

static llm_model *M;
static backend *BE;
static llm_tokenizer *TOK;
static int V;

/* ---- the sampler alone ---- */

static void test_sampler_logprobs(void) {
    const float logits[6] = {1.0f, 2.0f, 3.0f, -INFINITY, NAN, 3.0f};
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0.3f; /* none of these may change the values */
    p.top_k = 2;
    p.top_p = 0.5f;
    p.min_p = 0.5f;
    p.repetition_penalty = 2.0f;
    p.repeat_last_n = -1;
    sampler *s;
    char err[128];
    CHECK(sampler_create(&p, 6, &s, err, sizeof err) == 0);
    const int32_t hist[1] = {2}; /* token 2's logit 3 becomes 1.5 */
    double want[6] = {1.0, 2.0, 1.5, -INFINITY, -INFINITY, 3.0};
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(want[i]);
    int32_t ids[6];
    double lps[6], lp;
    int n = sampler_logprobs(s, logits, hist, 1, 2, &lp, ids, lps, 6);
    CHECKF(n == 4, "n = %d (the finite tokens)", n);
    CHECKF(fabs(lp - (1.5 - log(z))) < 1e-6, "penalized token lp %g", lp);
    const int32_t order[4] = {5, 1, 2, 0};
    for (int i = 0; i < 4 && n == 4; i++) {
        CHECKF(ids[i] == order[i], "rank %d: id %d", i, ids[i]);
        CHECKF(fabs(lps[i] - (want[order[i]] - log(z))) < 1e-6, "rank %d: lp %g", i, lps[i]);
    }
    /* no penalty: the two 3.0 logits tie; the lower id ranks first */
    n = sampler_logprobs(s, logits, NULL, 0, 3, &lp, ids, lps, 2);
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 5 && lps[0] == lps[1]);
    CHECK(isinf(lp) && lp < 0);
    n = sampler_logprobs(s, logits, NULL, 0, -1, &lp, ids, lps, 0);
    CHECK(n == 0 && isinf(lp) && lp < 0);
    const float inf2[6] = {INFINITY, 0, 0, INFINITY, 0, 0};
    n = sampler_logprobs(s, inf2, NULL, 0, 3, &lp, ids, lps, 3);
    CHECK(n == 2 && ids[0] == 0 && ids[1] == 3 && fabs(lp - log(0.5)) < 1e-12);
    CHECK(n == 2 && lps[0] == lps[1] && lps[1] == lp);
    const float none[6] = {-INFINITY, NAN, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK(sampler_logprobs(s, none, NULL, 0, 0, &lp, ids, lps, 3) == -1);
    sampler_free(s);
}

/* ---- the reference: llm_forward and a log-softmax written here ---- */

/* log_softmax(logits after tokens[0..n_prompt + j)) for j in [0, n_gen):
 * into ref[j * V ..]. The prompt runs as one batch (multi-token shape), each
 * generated token as a batch of one (single-token shape). */
static int reference(const int32_t *tokens, int n_prompt, int n_gen, double *ref) {
    const llm_hparams *hp = llm_model_hparams(M);
    int n = n_prompt + n_gen;
    kv_cache *kv;
    char err[256];
    if (kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, 16, n / 16 + 2, KV_F16, &kv, err,
                        sizeof err))
        return -1;
    int seq = kv_seq_new(kv);
    kv_seq_reserve(kv, seq, n);
    const int32_t *bt = kv_seq_block_table(kv, seq);
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t *pos = malloc((size_t)n * sizeof *pos), *slots = malloc((size_t)n * sizeof *slots);
    int rc = !logits || !pos || !slots;
    for (int j = 0, p0 = 0; j < n_gen && rc == 0; j++) {
        int c = j == 0 ? n_prompt : 1;
        for (int i = 0; i < c; i++) pos[i] = p0 + i, slots[i] = kv_seq_slot(kv, seq, p0 + i);
        int32_t ss[2] = {0, c}, cl = p0 + c, row = c - 1;
        llm_batch b = {c, tokens + p0, pos, slots, 1, ss, &cl, &bt, 1, &row, NULL};
        rc = llm_forward(M, BE, kv, &b, logits, err, sizeof err);
        if (rc) fprintf(stderr, "forward: %s\n", err);
        double mx = -INFINITY, z = 0;
        for (int v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
        for (int v = 0; v < V; v++) z += exp((double)logits[v] - mx);
        for (int v = 0; v < V; v++) ref[(size_t)j * V + v] = (double)logits[v] - mx - log(z);
        p0 += c;
    }
    free(logits);
    free(pos);
    free(slots);
    kv_cache_free(kv);
    return rc;
}

typedef struct {
    int32_t tok[MAX_GEN];
    engine_logprobs lp[MAX_GEN];
    int n, n_with_lp;
} gen_out;

static int run(engine *e, const engine_request *r, gen_out *o) {
    engine_stream *s;
    char err[256];
    memset(o, 0, sizeof *o);
    if (engine_submit(e, r, &s, NULL, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "submit: %s\n", err);
        return -1;
    }
    engine_event ev;
    while (engine_stream_next(s, &ev, -1) == 1) {
        if (ev.type == ENGINE_EV_TOKEN && o->n < MAX_GEN) {
            o->n_with_lp += ev.has_logprobs != 0;
            o->lp[o->n] = ev.lp;
            o->tok[o->n++] = ev.token;
        }
        engine_event_clear(&ev);
    }
    engine_stream_free(s);
    return 0;
}

/* Every event's values against the reference for the same tokens. */
static void check_against_reference(const char *what, const int32_t *prompt, int n_prompt,
                                    const gen_out *o, int top, int greedy) {
    CHECKF(o->n > 1 && o->n_with_lp == o->n, "%s: %d tokens, %d with logprobs", what, o->n,
           o->n_with_lp);
    int32_t all[256];
    memcpy(all, prompt, (size_t)n_prompt * sizeof *prompt);
    memcpy(all + n_prompt, o->tok, (size_t)o->n * sizeof *o->tok);
    double *ref = malloc((size_t)o->n * V * sizeof *ref);
    CHECK(ref && reference(all, n_prompt, o->n, ref) == 0);
    double worst = 0;
    for (int j = 0; j < o->n && ref; j++) {
        const engine_logprobs *lp = &o->lp[j];
        const double *rj = ref + (size_t)j * V;
        CHECKF(lp->n_top == top, "%s: token %d has %d alternatives", what, j, lp->n_top);
        double mass = 0, d = fabs(lp->logprob - rj[o->tok[j]]);
        worst = d > worst ? d : worst;
        for (int i = 0; i < lp->n_top; i++) {
            mass += exp(lp->top_logprobs[i]);
            CHECKF(lp->top_logprobs[i] <= 0, "%s: positive logprob", what);
            if (i > 0) CHECKF(lp->top_logprobs[i] <= lp->top_logprobs[i - 1], "%s: unsorted", what);
            d = fabs(lp->top_logprobs[i] - rj[lp->top_ids[i]]);
            worst = d > worst ? d : worst;
        }
        CHECKF(mass <= 1 + 1e-9, "%s: token %d: alternatives' mass %.12f", what, j, mass);
        /* the reference's best token is at most TOL more likely than top[0] */
        double best = -INFINITY;
        for (int v = 0; v < V; v++) best = rj[v] > best ? rj[v] : best;
        CHECKF(lp->n_top == 0 || best - lp->top_logprobs[0] < TOL, "%s: token %d misses the best",
               what, j);
        if (greedy && lp->n_top > 0) {
            CHECKF(lp->top_ids[0] == o->tok[j], "%s: greedy token %d is not top-1", what, j);
            CHECKF(lp->top_logprobs[0] == lp->logprob, "%s: top-1 logprob differs", what);
        }
    }
    CHECKF(worst < TOL, "%s: largest difference from the reference %g", what, worst);
    printf("%s: %d tokens, largest difference from the reference %.2e\n", what, o->n, worst);
    free(ref);
}

static void test_engine_logprobs(void) {
    engine_options opt;
    engine_options_default(&opt);
    opt.kv_memory_mb = 32;
    engine *e;
    char err[256];
    if (engine_create(M, BE, TOK, &opt, &e, err, sizeof err) != 0) {
        fprintf(stderr, "engine_create: %s\n", err);
        CHECK(0);
        return;
    }
    const char *text = "The capital of France is Paris. The capital of Italy is";
    int32_t *prompt;
    int n_prompt = tok_encode(TOK, text, strlen(text), 1, 0, &prompt);
    CHECK(n_prompt > 4);
    engine_request r = {0};
    r.prompt = prompt;
    r.n_prompt = n_prompt;
    sampler_params_default(&r.sampling);
    r.sampling.temperature = 0;
    r.max_tokens = 8;
    r.n = 1;
    r.logprobs = 1;
    r.top_logprobs = 5;
    gen_out o;
    CHECK(run(e, &r, &o) == 0);
    check_against_reference("greedy", prompt, n_prompt, &o, 5, 1);

    r.sampling.temperature = 0.9f; /* the logprobs must not see these */
    r.sampling.top_k = 3;
    r.sampling.top_p = 0.8f;
    r.sampling.seed = 7;
    r.top_logprobs = ENGINE_MAX_TOP_LOGPROBS;
    CHECK(run(e, &r, &o) == 0);
    check_against_reference("sampled", prompt, n_prompt, &o, ENGINE_MAX_TOP_LOGPROBS, 0);

    r.sampling.temperature = 0;
    r.format = ENGINE_FORMAT_JSON_OBJECT;
    r.top_logprobs = 3;
    CHECK(run(e, &r, &o) == 0);
    check_against_reference("json_object", prompt, n_prompt, &o, 3, 0);
    /* the prose prompt's model would not open a JSON object by itself */
    CHECK(o.n > 0 && o.lp[0].n_top > 0 && o.lp[0].top_ids[0] != o.tok[0]);
    r.format = ENGINE_FORMAT_TEXT;

    r.logprobs = 0;
    r.top_logprobs = 0;
    CHECK(run(e, &r, &o) == 0);
    CHECK(o.n > 0 && o.n_with_lp == 0);

    r.logprobs = 1;
    r.top_logprobs = ENGINE_MAX_TOP_LOGPROBS + 1;
    engine_stream *s = NULL;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == ENGINE_EINVAL);
    CHECKF(strstr(err, "top_logprobs") != NULL, "message: %s", err);
    free(prompt);
    engine_destroy(e);
}

int main(void) {
    test_sampler_logprobs();
    int lrc = tu_load_model("test_logprobs", &M, &TOK);
    if (lrc) return lrc;
    char err[512];
    V = llm_model_hparams(M)->n_vocab;
    BE = backend_cpu_create(0, err, sizeof err);
    CHECK(BE != NULL);
    if (BE) test_engine_logprobs();
    tok_free(TOK);
    backend_free(BE);
    llm_model_free(M);
    return tu_finish("test_logprobs");
}
