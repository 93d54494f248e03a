/*
 * test_generate.c - the generation loop on the real model: batching and
 * prefill chunking do not change greedy tokens, limits (max_tokens,
 * min_tokens, stop strings, context) hold, sampling is reproducible per
 * seed, streamed text adds up to the final text, and a response format
 * constrains the output. Skips (77) when the
 * model file is absent.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/backend.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "tests/common/test_util.h"

static llm_model *g_model;
static backend *g_be;
static llm_tokenizer *g_tok;

static const char *PROMPTS[] = {
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "Once upon a time",
    "The three primary colors are",
    "def fibonacci(n):\n",
    "<|im_start|>user\nSay hello in one word.<|im_end|>\n<|im_start|>assistant\n",
    "In 1492, Columbus",
};
enum { N_PROMPTS = sizeof PROMPTS / sizeof PROMPTS[0] };

static int32_t *g_ids[N_PROMPTS];
static int g_n_ids[N_PROMPTS];

static void make_reqs(gen_request *r, int n, int max_tokens, float temp, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].prompt = g_ids[i % N_PROMPTS];
        r[i].n_prompt = g_n_ids[i % N_PROMPTS];
        sampler_params_default(&r[i].sampling);
        r[i].sampling.temperature = temp;
        r[i].sampling.seed = seed + (uint64_t)i;
        r[i].max_tokens = max_tokens;
    }
}

static int run(gen_request *r, int n, int batch, int chunk, gen_result *out) {
    gen_options o;
    gen_options_default(&o);
    o.batch_size = batch;
    if (chunk > 0) o.prefill_chunk = chunk;
    char err[512];
    gen_stats st;
    int rc = gen_run(g_model, g_be, g_tok, r, n, &o, out, &st, err, sizeof err);
    if (rc != 0) fprintf(stderr, "gen_run: %s\n", err);
    return rc;
}

static int same_tokens(const gen_result *a, const gen_result *b) {
    return a->n_tokens == b->n_tokens && a->finish == b->finish &&
           memcmp(a->tokens, b->tokens, (size_t)a->n_tokens * sizeof *a->tokens) == 0 &&
           strcmp(a->text, b->text) == 0;
}

static void free_results(gen_result *r, int n) {
    for (int i = 0; i < n; i++) gen_result_free(&r[i]);
}

static void test_batched_greedy_equals_single(void) {
    gen_request r[N_PROMPTS];
    gen_result single[N_PROMPTS], batched[N_PROMPTS], chunked[N_PROMPTS];
    make_reqs(r, N_PROMPTS, 16, 0.0f, 1);
    CHECK(run(r, N_PROMPTS, 1, 0, single) == 0);
    CHECK(run(r, N_PROMPTS, 4, 0, batched) == 0);
    CHECK(run(r, N_PROMPTS, 4, 7, chunked) == 0); /* prompts split across prefill calls */
    for (int i = 0; i < N_PROMPTS; i++) {
        CHECKF(same_tokens(&single[i], &batched[i]), "prompt %d: batch 4 differs from batch 1", i);
        CHECKF(same_tokens(&single[i], &chunked[i]), "prompt %d: chunked prefill differs", i);
        CHECK(single[i].n_tokens >= 1 && single[i].n_tokens <= 16);
        CHECK(single[i].n_prompt == g_n_ids[i]);
    }
    free_results(single, N_PROMPTS);
    free_results(batched, N_PROMPTS);
    free_results(chunked, N_PROMPTS);
}

static void test_max_tokens_respected(void) {
    gen_request r[N_PROMPTS];
    gen_result out[N_PROMPTS];
    make_reqs(r, N_PROMPTS, 5, 0.8f, 3);
    r[1].max_tokens = 0;
    r[2].max_tokens = 1;
    r[3].ignore_eos = 1;
    r[3].max_tokens = 17;
    CHECK(run(r, N_PROMPTS, 3, 0, out) == 0);
    for (int i = 0; i < N_PROMPTS; i++) {
        CHECKF(out[i].n_tokens <= r[i].max_tokens, "prompt %d: %d tokens > max %d", i,
               out[i].n_tokens, r[i].max_tokens);
        if (out[i].finish == GEN_FINISH_LENGTH) CHECK(out[i].n_tokens == r[i].max_tokens);
        CHECK(out[i].text != NULL);
    }
    CHECK(out[1].n_tokens == 0 && out[1].finish == GEN_FINISH_LENGTH && out[1].text[0] == 0);
    CHECK(out[3].n_tokens == 17 && out[3].finish == GEN_FINISH_LENGTH);
    free_results(out, N_PROMPTS);
}

static void test_same_seed_same_output(void) {
    gen_request r[N_PROMPTS];
    gen_result a[N_PROMPTS], b[N_PROMPTS], c[N_PROMPTS];
    make_reqs(r, N_PROMPTS, 12, 1.0f, 42);
    for (int i = 0; i < N_PROMPTS; i++) r[i].sampling.top_k = 0, r[i].sampling.min_p = 0.0f;
    CHECK(run(r, N_PROMPTS, 4, 0, a) == 0);
    CHECK(run(r, N_PROMPTS, 4, 0, b) == 0);
    for (int i = 0; i < N_PROMPTS; i++) CHECKF(same_tokens(&a[i], &b[i]), "prompt %d", i);
    make_reqs(r, N_PROMPTS, 12, 1.0f, 4242);
    for (int i = 0; i < N_PROMPTS; i++) r[i].sampling.top_k = 0, r[i].sampling.min_p = 0.0f;
    CHECK(run(r, N_PROMPTS, 4, 0, c) == 0);
    int differ = 0;
    for (int i = 0; i < N_PROMPTS; i++) differ += !same_tokens(&a[i], &c[i]);
    CHECKF(differ > 0, "other seeds should change some outputs");
    free_results(a, N_PROMPTS);
    free_results(b, N_PROMPTS);
    free_results(c, N_PROMPTS);
}

typedef struct {
    char buf[8192];
    size_t len;
    int finals;
} stream_acc;

static int collect(void *user, int request, int32_t token, const char *text, size_t len) {
    stream_acc *acc = (stream_acc *)user + request;
    if (token < 0) acc->finals++;
    if (acc->len + len < sizeof acc->buf) {
        memcpy(acc->buf + acc->len, text, len);
        acc->len += len;
    }
    return 0;
}

static void test_stop_strings_and_streaming(void) {
    gen_request r[2];
    gen_result base[2], cut[2];
    make_reqs(r, 2, 24, 0.0f, 1);
    r[0].prompt = g_ids[1];
    r[0].n_prompt = g_n_ids[1];
    r[1].prompt = g_ids[2];
    r[1].n_prompt = g_n_ids[2];
    CHECK(run(r, 2, 2, 0, base) == 0);
    /* A stop string taken from the middle of each greedy completion. */
    char stops[2][8];
    const char *stop_list[2][1];
    for (int i = 0; i < 2; i++) {
        size_t at = base[i].text_len / 2;
        snprintf(stops[i], sizeof stops[i], "%.4s", base[i].text + at);
        stop_list[i][0] = stops[i];
        r[i].stop = stop_list[i];
        r[i].n_stop = 1;
    }
    stream_acc acc[2];
    memset(acc, 0, sizeof acc);
    gen_options o;
    gen_options_default(&o);
    o.batch_size = 2;
    o.on_token = collect;
    o.user = acc;
    char err[256];
    CHECK(gen_run(g_model, g_be, g_tok, r, 2, &o, cut, NULL, err, sizeof err) == 0);
    for (int i = 0; i < 2; i++) {
        const char *first = strstr(base[i].text, stops[i]);
        size_t want = first ? (size_t)(first - base[i].text) : base[i].text_len;
        CHECKF(cut[i].finish == GEN_FINISH_STOP, "prompt %d: finish %s", i,
               gen_finish_name(cut[i].finish));
        CHECKF(cut[i].text_len == want && strncmp(cut[i].text, base[i].text, want) == 0,
               "prompt %d: '%s' should be the text before '%s'", i, cut[i].text, stops[i]);
        CHECKF(acc[i].len == cut[i].text_len && memcmp(acc[i].buf, cut[i].text, acc[i].len) == 0,
               "prompt %d: streamed text differs from the final text", i);
        CHECK(acc[i].finals == 1);
    }
    free_results(base, 2);
    free_results(cut, 2);
}

static void test_min_tokens_suppresses_eos(void) {
    gen_request r[1];
    gen_result a[1], b[1];
    make_reqs(r, 1, 48, 0.0f, 1);
    r[0].prompt = g_ids[4];
    r[0].n_prompt = g_n_ids[4];
    CHECK(run(r, 1, 1, 0, a) == 0);
    if (a[0].finish == GEN_FINISH_EOS) {
        r[0].min_tokens = a[0].n_tokens + 3;
        CHECK(run(r, 1, 1, 0, b) == 0);
        CHECKF(b[0].n_tokens >= r[0].min_tokens, "%d tokens, min %d", b[0].n_tokens,
               r[0].min_tokens);
        /* before the suppressed EOS the tokens are the same */
        CHECK(memcmp(a[0].tokens, b[0].tokens, (size_t)a[0].n_tokens * sizeof(int32_t)) == 0);
        gen_result_free(&b[0]);
    } else {
        fprintf(stderr, "note: greedy did not hit EOS in 48 tokens; min_tokens check skipped\n");
    }
    gen_result_free(&a[0]);
}

static void test_context_limit_is_an_error(void) {
    gen_request r[1];
    gen_result out[1];
    make_reqs(r, 1, llm_model_hparams(g_model)->n_ctx_train, 0.0f, 1);
    char err[256] = "";
    CHECK(gen_run(g_model, g_be, g_tok, r, 1, NULL, out, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "context") != NULL, "got '%s'", err);
    gen_result_free(&out[0]);
    r[0].max_tokens = 4;
    r[0].sampling.top_p = 2.0f;
    CHECK(gen_run(g_model, g_be, g_tok, r, 1, NULL, out, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "top_p") != NULL, "got '%s'", err);
    gen_result_free(&out[0]);
}

/* A response format reaches the engine: each prompt's output is a JSON
 * object (json_object) or an object with the schema's one integer field,
 * parsed by cJSON, while a text request in the same run is unchanged. */
static void test_response_format(void) {
    gen_request r[3];
    gen_result out[3], alone[1];
    make_reqs(r, 3, 40, 0.0f, 1);
    r[0].format = ENGINE_FORMAT_JSON_OBJECT;
    r[1].format = ENGINE_FORMAT_JSON_SCHEMA;
    r[1].json_schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},"
                       "\"required\":[\"n\"],\"additionalProperties\":false}";
    CHECK(run(r, 3, 3, 0, out) == 0);
    /* {"n": <integer>} is complete long before 40 tokens: the grammar ends it */
    CHECKF(out[1].finish != GEN_FINISH_LENGTH, "schema output cut by max_tokens: '%s'",
           out[1].text);
    for (int i = 0; i < 2; i++) {
        if (out[i].finish == GEN_FINISH_LENGTH) continue; /* cut by max_tokens: a prefix */
        cJSON *j = cJSON_Parse(out[i].text);
        CHECKF(cJSON_IsObject(j), "request %d: '%s' is not a JSON object", i, out[i].text);
        if (i == 1 && j) {
            CHECKF(cJSON_GetArraySize(j) == 1 &&
                       cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "n")),
                   "'%s' does not follow the schema", out[i].text);
        }
        cJSON_Delete(j);
    }
    CHECK(run(&r[2], 1, 1, 0, alone) == 0);
    CHECK(same_tokens(&out[2], &alone[0]));
    free_results(out, 3);
    free_results(alone, 1);
}

int main(void) {
    const char *path = tu_model_path();
    if (!path) {
        printf("test_generate: model not found, skipping\n");
        return TU_SKIP;
    }
    char err[512];
    if (llm_model_load(path, &g_model, NULL, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    if (tok_load(llm_model_gguf(g_model), &g_tok, err, sizeof err) != 0) {
        fprintf(stderr, "tokenizer: %s\n", err);
        return 1;
    }
    g_be = backend_cpu_create(2, err, sizeof err);
    if (!g_be) {
        fprintf(stderr, "backend: %s\n", err);
        return 1;
    }
    for (int i = 0; i < N_PROMPTS; i++) {
        g_n_ids[i] = tok_encode(g_tok, PROMPTS[i], strlen(PROMPTS[i]), 1, 1, &g_ids[i]);
        CHECK(g_n_ids[i] > 0);
    }
    test_batched_greedy_equals_single();
    test_max_tokens_respected();
    test_same_seed_same_output();
    test_stop_strings_and_streaming();
    test_min_tokens_suppresses_eos();
    test_context_limit_is_an_error();
    test_response_format();
    for (int i = 0; i < N_PROMPTS; i++) free(g_ids[i]);
    backend_free(g_be);
    tok_free(g_tok);
    llm_model_free(g_model);
    return tu_finish("test_generate");
}
