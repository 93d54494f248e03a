/*
 * test_structured_output.c - response formats end to end on the real model
 * (SmolLM2-135M-Instruct): requests with a JSON schema or json_object, many
 * seeds, all in one batch with an unconstrained greedy request:
 *   - every completion that ends by itself ("eos") parses and validates
 *     against its schema (tests/common/schema_check.c, independent of the
 *     grammar code), and at least half end by themselves within max_tokens (the rest are
 *     cut by it: a small model may nest a recursive schema without end);
 *   - a completion cut by max_tokens ("length") is still a prefix the
 *     grammar accepts;
 *   - the unconstrained request in the same batch gives exactly the tokens
 *     it gives alone (constraints are per sequence);
 *   - a schema outside the subset is refused naming the keyword;
 *   - the whole-vocabulary mask agrees with the token-by-token check.
 * Skips (77) without the model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/backend.h"
#include "core/chat.h"
#include "core/json_grammar.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/engine.h"
#include "tests/common/schema_check.h"
#include "tests/common/test_util.h"

static llm_model *M;
static backend *BE;
static llm_tokenizer *TOK;

static const struct {
    const char *ask;
    const char *schema; /* NULL = json_object */
} CASES[] = {
    {"Describe a person as JSON with a name, an age and hobbies.",
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":40},\"age\":"
     "{\"type\":\"integer\",\"minimum\":18,\"maximum\":99},\"hobbies\":{\"type\":\"array\","
     "\"items\":{\"type\":\"string\"},"
     "\"maxItems\":4}},\"required\":[\"name\",\"age\",\"hobbies\"],\"additionalProperties\":"
     "false}"},
    {"Is the sky blue? Answer in JSON.",
     "{\"type\":\"object\",\"properties\":{\"answer\":{\"enum\":[\"yes\",\"no\",\"maybe\"]},"
     "\"confidence\":{\"type\":\"number\"}},\"required\":[\"answer\",\"confidence\"],"
     "\"additionalProperties\":false}"},
    {"List three colors as JSON.",
     "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":20},"
     "\"minItems\":1,\"maxItems\":5}"},
    {"Give me a JSON object about the weather in Paris.", NULL},
    {"Describe a small family tree in JSON.",
     "{\"$defs\":{\"p\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\","
     "\"maxLength\":30},\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/p\"},"
     "\"maxItems\":2}},\"required\":[\"name\"],\"additionalProperties\":false}},\"$ref\":"
     "\"#/$defs/p\"}"},
    {"Return a JSON value: either a number or null.",
     "{\"anyOf\":[{\"type\":\"number\"},{\"type\":\"null\"},{\"type\":\"object\",\"properties\":"
     "{\"value\":{\"type\":[\"integer\",\"string\"]}},\"required\":[\"value\"],"
     "\"additionalProperties\":false}]}"},
};
enum { N_CASES = sizeof CASES / sizeof CASES[0], SEEDS = 3, MAX_TOKENS = 128 };

typedef struct {
    int32_t *prompt;
    int n_prompt;
    char text[8192];
    size_t len;
    int32_t toks[MAX_TOKENS + 1];
    int n_toks;
    gen_finish finish;
} job;

static int encode_chat(const char *ask, int32_t **ids) {
    char *tmpl = llm_model_chat_template(M), *text = NULL, err[256];
    chat_msg m = {"user", ask};
    int rc = chat_apply(tmpl, &m, 1, 1, &text, err, sizeof err);
    free(tmpl);
    if (rc != 0) return -1;
    int n = tok_encode(TOK, text, strlen(text), 1, 1, ids);
    free(text);
    return n;
}

static void drain(engine_stream *s, job *j) {
    engine_event ev;
    while (engine_stream_next(s, &ev, -1) == 1) {
        if (ev.text_len && j->len + ev.text_len < sizeof j->text) {
            memcpy(j->text + j->len, ev.text, ev.text_len);
            j->len += ev.text_len;
        }
        if (ev.type == ENGINE_EV_TOKEN && j->n_toks <= MAX_TOKENS) j->toks[j->n_toks++] = ev.token;
        if (ev.type == ENGINE_EV_FINISH) j->finish = ev.finish;
        engine_event_clear(&ev);
    }
    j->text[j->len] = 0;
}

static engine_request request(const job *j, const char *schema, int constrained, uint64_t seed) {
    engine_request r = {0};
    r.prompt = j->prompt;
    r.n_prompt = j->n_prompt;
    sampler_params_default(&r.sampling);
    r.sampling.seed = seed;
    r.max_tokens = MAX_TOKENS;
    r.n = 1;
    if (!constrained) {
        r.sampling.temperature = 0;
        r.max_tokens = 48;
    } else if (seed == 0) {
        r.sampling.temperature = 0; /* one greedy run per schema */
    }
    r.format = !constrained ? ENGINE_FORMAT_TEXT
               : schema     ? ENGINE_FORMAT_JSON_SCHEMA
                            : ENGINE_FORMAT_JSON_OBJECT;
    r.json_schema = schema;
    return r;
}

/* Whether text is a prefix the grammar of schema accepts. */
static int grammar_prefix(const char *schema, const char *text) {
    char err[256];
    jg_schema *g = schema ? jg_compile(schema, strlen(schema), err, sizeof err)
                          : jg_compile_any_object(err, sizeof err);
    jg_matcher *m = g ? jg_matcher_new(g) : NULL;
    int ok = m && jg_matcher_feed(m, text, strlen(text)) == 0;
    jg_matcher_free(m);
    jg_schema_free(g);
    return ok;
}

static void test_batch(engine *e) {
    enum { N = N_CASES * SEEDS + 1 };
    static job jobs[N];
    engine_stream *ss[N];
    char err[512];
    memset(jobs, 0, sizeof jobs);
    engine_hold(e, 1); /* all in one batch */
    for (int i = 0; i < N; i++) {
        int c = i < N - 1 ? i / SEEDS : 0;
        jobs[i].n_prompt =
            encode_chat(i < N - 1 ? CASES[c].ask : "Tell me a story.", &jobs[i].prompt);
        CHECK(jobs[i].n_prompt > 0);
        engine_request r = request(&jobs[i], CASES[c].schema, i < N - 1, (uint64_t)(i % SEEDS));
        CHECKF(engine_submit(e, &r, &ss[i], NULL, err, sizeof err) == 0, "submit %d: %s", i, err);
    }
    engine_hold(e, 0);
    for (int i = 0; i < N; i++) {
        drain(ss[i], &jobs[i]);
        engine_stream_free(ss[i]);
    }
    int complete = 0;
    for (int i = 0; i < N - 1; i++) {
        const char *schema = CASES[i / SEEDS].schema;
        const char *vs = schema ? schema : "{\"type\":\"object\"}";
        char why[128] = "";
        if (jobs[i].finish == GEN_FINISH_EOS) {
            complete++;
            int ok = sc_validate(vs, jobs[i].text, why, sizeof why);
            CHECKF(ok, "case %d seed %d: %s\n%s", i / SEEDS, i % SEEDS, why, jobs[i].text);
        } else {
            CHECKF(jobs[i].finish == GEN_FINISH_LENGTH, "case %d: finish %s", i / SEEDS,
                   gen_finish_name(jobs[i].finish));
            CHECKF(grammar_prefix(schema, jobs[i].text), "case %d: '%s'", i / SEEDS, jobs[i].text);
        }
        if (i % SEEDS == 0)
            printf("case %d (%s): %s\n", i / SEEDS, gen_finish_name(jobs[i].finish), jobs[i].text);
    }
    printf("%d of %d constrained completions ended by themselves\n", complete, N - 1);
    CHECK(complete * 2 >= N - 1);

    /* the unconstrained request alone */
    job alone = {.prompt = jobs[N - 1].prompt, .n_prompt = jobs[N - 1].n_prompt};
    engine_request r = request(&alone, NULL, 0, 0);
    engine_stream *s;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == 0);
    drain(s, &alone);
    engine_stream_free(s);
    CHECK(alone.n_toks == jobs[N - 1].n_toks &&
          memcmp(alone.toks, jobs[N - 1].toks, sizeof(int32_t) * (size_t)alone.n_toks) == 0);
    for (int i = 0; i < N; i++) free(jobs[i].prompt);
}

/* jg_mask_logits (prefix-sharing walk, skipping the tokens that begin with a
 * prefix already rejected) agrees with jg_token_allowed (one token at a
 * time) on every token of the vocabulary, in several states; tokens already
 * at -inf stay there and do not change the others' results. */
static void test_mask_consistency(void) {
    char err[256];
    jg_vocab *v = jg_vocab_new(TOK, err, sizeof err);
    jg_schema *g = jg_compile(CASES[0].schema, strlen(CASES[0].schema), err, sizeof err);
    jg_schema *any = jg_compile_any_object(err, sizeof err);
    const char *ints_schema = "{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}";
    jg_schema *ints = jg_compile(ints_schema, strlen(ints_schema), err, sizeof err);
    CHECK(v && g && any && ints);
    const int V = tok_n_vocab(TOK);
    float *l = malloc((size_t)V * sizeof *l);
    const struct {
        jg_schema *g;
        const char *prefix;
    } st[] = {{g, ""},
              {g, "{\"na"},
              {g, "{\"name\": \"Al"},
              {g, "{\"name\":\"A\",\"age\":1"},
              {any, "{\"a\": "},
              {any, "{\"a\": [1, {\"b\":tr"},
              {any, "{}"},
              {any, "{\"ab"},
              {any, "{\"a\": \"xy"},
              {ints, ""},
              {ints, "["},
              {ints, "[1, 23, 4"},
              {ints, "[1,\n -"},
              {ints, "[0"}};
    for (size_t k = 0; k < sizeof st / sizeof st[0]; k++) {
        jg_matcher *m = jg_matcher_new(st[k].g);
        CHECK(jg_matcher_feed(m, st[k].prefix, strlen(st[k].prefix)) == 0);
        for (int pre = 0; pre < 2; pre++) { /* pre: every 5th token starts at -inf */
            for (int i = 0; i < V; i++) l[i] = pre && i % 5 == 0 ? -INFINITY : (float)(i % 7);
            jg_mask_logits(v, m, l);
            int bad = 0, n_ok = 0;
            for (int i = 0; i < V; i++) {
                int ok = jg_token_allowed(v, m, i) && !(pre && i % 5 == 0);
                n_ok += ok;
                bad += ok != (l[i] > -INFINITY);
            }
            CHECKF(bad == 0, "state '%s' (pre %d): %d tokens disagree", st[k].prefix, pre, bad);
            CHECKF(n_ok > 0, "state '%s' (pre %d): nothing allowed", st[k].prefix, pre);
        }
        jg_matcher_free(m);
    }
    free(l);
    jg_schema_free(g);
    jg_schema_free(any);
    jg_schema_free(ints);
    jg_vocab_free(v);
}

static void test_refused(engine *e) {
    job j = {0};
    j.n_prompt = encode_chat("hi", &j.prompt);
    engine_request r = request(&j, "{\"type\":\"string\",\"pattern\":\"^a\"}", 1, 1);
    engine_stream *s = NULL;
    char err[512] = "";
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == ENGINE_EINVAL && s == NULL);
    CHECKF(strstr(err, "response_format") && strstr(err, "'pattern'"), "message: %s", err);
    r.format = ENGINE_FORMAT_JSON_SCHEMA;
    r.json_schema = NULL;
    CHECK(engine_submit(e, &r, &s, NULL, err, sizeof err) == ENGINE_EINVAL);
    free(j.prompt);
}

int main(void) {
    int lrc = tu_load_model("test_structured_output", &M, &TOK);
    if (lrc) return lrc;
    char err[512];
    BE = backend_cpu_create(0, err, sizeof err);
    engine_options o;
    engine_options_default(&o);
    o.kv_memory_mb = 64;
    o.max_context = 1024;
    engine *e = NULL;
    CHECKF(engine_create(M, BE, TOK, &o, &e, err, sizeof err) == 0, "engine_create: %s", err);
    if (e) {
        test_mask_consistency();
        test_batch(e);
        test_refused(e);
        engine_destroy(e);
    }
    tok_free(TOK);
    backend_free(BE);
    llm_model_free(M);
    return tu_finish("test_structured_output");
}
