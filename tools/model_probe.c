/*
 * model_probe.c - `model-probe`, the engine side of tools/check_models.py:
 * load one GGUF file and answer token-level questions about it with the
 * model's own forward pass (llm_forward) and tokenizer, nothing else of the
 * serving stack in between.
 *
 *   model-probe MODEL [--tokenize TEXTS.jsonl] [--greedy PROMPTS.jsonl]
 *               [--n-predict N] [--tf TOKENS.bin --logits OUT.bin] [--chunk C]
 *               [--threads T] [--fast]
 *
 * Output: JSON Lines on stdout, first {"load": true, "arch": .., "n_vocab": ..}
 * or {"load": false, "error": ".."} (then exit 3). Then, in this order:
 *   --tokenize: per input line {"text": str, "add_special": bool}, one line
 *               {"ids": [..]} (parse_special off), or {"ids": null,
 *               "error": ".."} when the file's tokenizer does not load;
 *   --greedy:   per input line {"ids": [..]} (the prompt, as given), one line
 *               {"greedy": [N ids]}: prompt evaluated as one batch from an
 *               empty cache, then N single-token steps taking the argmax
 *               (ties -> lowest id); EOS does not stop it;
 *   --tf:       TOKENS.bin is little-endian int32 token ids, cut into
 *               sequences of --tf-ctx L ids (default: all of them, one
 *               sequence), each evaluated from an empty cache in prefill
 *               steps of C (--chunk, default 512) rows; all n x n_vocab
 *               float32 logits go to OUT.bin and one line {"tf": n} is
 *               printed.
 * A forward error prints {"error": ".."} and exits 1.
 * Numerics: exact (llama.cpp's rounding) unless --fast. KV cache: f16, as
 * llama.cpp's default.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/backend.h"
#include "core/gguf.h"
#include "core/kv_cache.h"
#include "core/model.h"
#include "core/tokenizer.h"

typedef struct {
    const char *model, *tokenize, *greedy, *tf, *logits;
    int n_predict, chunk, threads, fast, tf_ctx;
} probe_args;

static llm_model *M;
static backend *BE;

static void print_json(cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    puts(s ? s : "{}");
    fflush(stdout);
    free(s);
    cJSON_Delete(j);
}

static void print_error(const char *key, const char *msg) {
    cJSON *j = cJSON_CreateObject();
    if (key) cJSON_AddNullToObject(j, key);
    cJSON_AddStringToObject(j, "error", msg);
    print_json(j);
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = 0;
    fclose(f);
    if (len) *len = buf ? (size_t)n : 0;
    return buf;
}

/* A cache for one sequence of n tokens: its slots and block table. */
typedef struct {
    kv_cache *kv;
    int32_t *pos, *slots;
    const int32_t *bt;
} seq_cache;

static int seq_cache_open(seq_cache *c, int n, char *err, size_t errlen) {
    const llm_hparams *hp = llm_model_hparams(M);
    *c = (seq_cache){0};
    if (kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, 16, (n + 15) / 16 + 1, KV_F16,
                        &c->kv, err, errlen)) {
        c->kv = NULL;
        return -1;
    }
    int seq = kv_seq_new(c->kv);
    kv_seq_reserve(c->kv, seq, n);
    c->pos = malloc((size_t)n * sizeof *c->pos);
    c->slots = malloc((size_t)n * sizeof *c->slots);
    for (int i = 0; i < n; i++) {
        c->pos[i] = i;
        c->slots[i] = kv_seq_slot(c->kv, seq, i);
    }
    c->bt = kv_seq_block_table(c->kv, seq);
    return 0;
}

static void seq_cache_close(seq_cache *c) {
    free(c->pos);
    free(c->slots);
    kv_cache_free(c->kv);
}

/* Rows [p0, p0 + n) of the sequence (cache holds [0, p0) already); logits of
 * the rows listed in rows[0..n_rows) (indices within this step). */
static int step(seq_cache *c, const int32_t *toks, int p0, int n, int n_rows, const int32_t *rows,
                float *logits, char *err, size_t errlen) {
    int32_t ss[2] = {0, n}, cl = p0 + n;
    llm_batch b = {n,   toks + p0, c->pos + p0, c->slots + p0, 1,   ss,
                   &cl, &c->bt,    n_rows,      rows,          NULL};
    return llm_forward(M, BE, c->kv, &b, logits, err, errlen);
}

static int argmax(const float *v, int n) {
    int am = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[am]) am = i;
    return am;
}

static int run_tokenize(const char *path) {
    char err[256];
    llm_tokenizer *tok = NULL;
    int tok_rc = tok_load(llm_model_gguf(M), &tok, err, sizeof err);
    char *text = read_all(path, NULL);
    if (!text) {
        fprintf(stderr, "model-probe: cannot read %s\n", path);
        return 2;
    }
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *in = cJSON_Parse(line);
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(in, "text"));
        if (tok_rc || !s) {
            print_error("ids", tok_rc ? err : "bad input line");
            cJSON_Delete(in);
            continue;
        }
        int add = cJSON_IsTrue(cJSON_GetObjectItem(in, "add_special"));
        int32_t *ids = NULL;
        int n = tok_encode(tok, s, strlen(s), add, 0, &ids);
        cJSON *out = cJSON_CreateObject();
        if (n < 0) {
            cJSON_AddNullToObject(out, "ids");
            cJSON_AddStringToObject(out, "error", "tok_encode failed");
        } else {
            cJSON *arr = cJSON_AddArrayToObject(out, "ids");
            for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        }
        free(ids);
        print_json(out);
        cJSON_Delete(in);
    }
    free(text);
    if (!tok_rc) tok_free(tok);
    return 0;
}

/* Greedy continuation of np prompt ids already in toks[0..np); appends
 * n_predict ids. */
static int greedy_one(int32_t *toks, int np, int n_predict, char *err, size_t errlen) {
    const int V = llm_model_hparams(M)->n_vocab;
    seq_cache c;
    if (seq_cache_open(&c, np + n_predict, err, errlen)) return -1;
    float *logits = malloc((size_t)V * sizeof *logits);
    int rc = 0, cur = 0, n_in = np;
    for (int g = 0; g < n_predict && !rc; g++) {
        int32_t last = n_in - 1;
        rc = step(&c, toks, cur, n_in, 1, &last, logits, err, errlen);
        cur += n_in;
        toks[cur] = argmax(logits, V);
        n_in = 1;
    }
    free(logits);
    seq_cache_close(&c);
    return rc;
}

static int run_greedy(const char *path, int n_predict) {
    char *text = read_all(path, NULL);
    if (!text) {
        fprintf(stderr, "model-probe: cannot read %s\n", path);
        return 2;
    }
    char err[256], *save = NULL;
    int rc = 0;
    for (char *line = strtok_r(text, "\n", &save); line && !rc;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *in = cJSON_Parse(line), *pi = cJSON_GetObjectItem(in, "ids");
        int np = cJSON_GetArraySize(pi);
        int32_t *toks = malloc((size_t)(np + n_predict) * sizeof *toks);
        for (int i = 0; i < np; i++) toks[i] = (int32_t)cJSON_GetArrayItem(pi, i)->valueint;
        if (np == 0 || greedy_one(toks, np, n_predict, err, sizeof err)) {
            print_error("greedy", np ? err : "empty prompt");
            rc = np ? 1 : 0;
        } else {
            cJSON *out = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(out, "greedy");
            for (int i = 0; i < n_predict; i++)
                cJSON_AddItemToArray(arr, cJSON_CreateNumber(toks[np + i]));
            print_json(out);
        }
        free(toks);
        cJSON_Delete(in);
    }
    free(text);
    return rc;
}

/* One sequence toks[0..n) from an empty cache; n x V logits. */
static int tf_sequence(const int32_t *toks, int n, int chunk, float *logits, char *err,
                       size_t errlen) {
    const int V = llm_model_hparams(M)->n_vocab;
    int32_t *rows = malloc((size_t)chunk * sizeof *rows);
    seq_cache c = {0};
    snprintf(err, errlen, "out of memory");
    int rc = rows ? seq_cache_open(&c, n, err, errlen) : -1;
    for (int i = 0; rows && i < chunk; i++) rows[i] = i;
    for (int p0 = 0; p0 < n && !rc; p0 += chunk) {
        int k = n - p0 < chunk ? n - p0 : chunk;
        rc = step(&c, toks, p0, k, k, rows, logits + (size_t)p0 * V, err, errlen);
    }
    if (c.kv) seq_cache_close(&c);
    free(rows);
    return rc;
}

static int run_tf(const char *tokens_path, const char *logits_path, int tf_ctx, int chunk) {
    size_t len;
    int32_t *toks = (int32_t *)read_all(tokens_path, &len);
    int n = (int)(len / 4);
    if (!toks || n == 0) {
        fprintf(stderr, "model-probe: cannot read tokens from %s\n", tokens_path);
        free(toks);
        return 2;
    }
    if (tf_ctx <= 0 || tf_ctx > n) tf_ctx = n;
    const int V = llm_model_hparams(M)->n_vocab;
    char err[256] = "out of memory";
    float *logits = malloc((size_t)n * V * sizeof *logits);
    int rc = logits ? 0 : -1;
    for (int s0 = 0; s0 < n && !rc; s0 += tf_ctx) {
        int k = n - s0 < tf_ctx ? n - s0 : tf_ctx;
        rc = tf_sequence(toks + s0, k, chunk, logits + (size_t)s0 * V, err, sizeof err);
    }
    FILE *f = rc ? NULL : fopen(logits_path, "wb");
    if (!rc && (!f || fwrite(logits, sizeof *logits, (size_t)n * V, f) != (size_t)n * V)) {
        snprintf(err, sizeof err, "cannot write %s", logits_path);
        rc = -1;
    }
    if (f) fclose(f);
    if (rc) {
        print_error("tf", err);
    } else {
        cJSON *out = cJSON_CreateObject();
        cJSON_AddNumberToObject(out, "tf", n);
        print_json(out);
    }
    free(logits);
    free(toks);
    return rc ? 1 : 0;
}

static int parse_args(int argc, char **argv, probe_args *a) {
    *a = (probe_args){.n_predict = 32, .chunk = 512, .threads = 0};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(s, "--tokenize") && v) a->tokenize = v;
        else if (!strcmp(s, "--greedy") && v) a->greedy = v;
        else if (!strcmp(s, "--tf") && v) a->tf = v;
        else if (!strcmp(s, "--logits") && v) a->logits = v;
        else if (!strcmp(s, "--n-predict") && v) a->n_predict = atoi(v);
        else if (!strcmp(s, "--chunk") && v) a->chunk = atoi(v);
        else if (!strcmp(s, "--tf-ctx") && v) a->tf_ctx = atoi(v);
        else if (!strcmp(s, "--threads") && v) a->threads = atoi(v);
        else if (!strcmp(s, "--fast")) a->fast = 1, takes = 0;
        else if (s[0] != '-' && !a->model) a->model = s, takes = 0;
        else return -1;
        i += takes;
    }
    if (!a->model || a->n_predict < 1 || a->chunk < 1 || a->tf_ctx < 0 || (!a->tf != !a->logits))
        return -1;
    return 0;
}

int main(int argc, char **argv) {
    probe_args a;
    if (parse_args(argc, argv, &a)) {
        fprintf(stderr, "usage: model-probe MODEL [--tokenize TEXTS.jsonl] [--greedy "
                        "PROMPTS.jsonl] [--n-predict N] [--tf TOKENS.bin --logits OUT.bin] "
                        "[--tf-ctx L] [--chunk C] [--threads T] [--fast]\n");
        return 2;
    }
    char err[512];
    if (llm_model_load(a.model, &M, NULL, NULL, err, sizeof err)) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddFalseToObject(j, "load");
        cJSON_AddStringToObject(j, "error", err);
        print_json(j);
        return 3;
    }
    be_cpu_options o = {a.threads, a.fast ? BE_NUMERICS_FAST : BE_NUMERICS_EXACT};
    BE = backend_cpu_create_opts(&o, err, sizeof err);
    if (!BE) {
        fprintf(stderr, "model-probe: backend: %s\n", err);
        return 1;
    }
    const llm_hparams *hp = llm_model_hparams(M);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddTrueToObject(j, "load");
    cJSON_AddStringToObject(j, "arch", hp->arch);
    cJSON_AddNumberToObject(j, "n_vocab", hp->n_vocab);
    print_json(j);
    int rc = 0;
    if (a.tokenize) rc = run_tokenize(a.tokenize);
    if (!rc && a.greedy) rc = run_greedy(a.greedy, a.n_predict);
    if (!rc && a.tf) rc = run_tf(a.tf, a.logits, a.tf_ctx, a.chunk);
    backend_free(BE);
    llm_model_free(M);
    return rc;
}
