/*
 * test_model_ref.c - the forward pass on the real model against llama.cpp
 * reference data (tests/golden, made by tools/gen_references.py):
 *   - teacher-forced: top-1 agreement >= 99% and mean KL(llama.cpp || ours)
 *     <= 0.01 nats over >= 2000 positions. KL is computed over llama.cpp's
 *     top-K tokens plus one bucket for the rest of the mass (the stored
 *     reference keeps K = 128 entries per position); this coarsening can
 *     only lower KL, by at most the tail's share, which the test reports.
 *   - greedy: 32-token continuations identical for >= 18 of 20 prompts.
 * Then the same with the fast numerics (backend.h), whose rounding differs
 * from llama.cpp's: a one-ulp difference flips some 8-bit activation
 * codes, so the logits move by the activation quantization noise, not by
 * float error. Measured: top-1 96.5%, mean KL 0.0029, 5 of 20 greedy runs
 * identical; for scale, exact and fast are each about KL 0.0027 from the
 * same model run with f32 activations (first 512 positions), and 0.0033
 * from each other. Asserted: top-1 >= 95%, mean KL <= 0.005, >= 3 of 20.
 * Skips (exit 77) when the model or the reference files are absent.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "core/model.h"
#include "tests/common/test_util.h"

static llm_model *M;
static backend *BE;

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

/* Evaluate tokens[0..n) as one sequence from an empty cache, logits for all rows. */
static float *eval_all(const int32_t *tokens, int n, int chunk) {
    const llm_hparams *hp = llm_model_hparams(M);
    kv_cache *kv;
    char err[256];
    if (kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, 16, (n + 15) / 16 + 1, KV_F16,
                        &kv, err, sizeof err))
        return NULL;
    int seq = kv_seq_new(kv);
    kv_seq_reserve(kv, seq, n);
    float *logits = malloc((size_t)n * hp->n_vocab * sizeof *logits);
    int32_t *pos = malloc((size_t)n * sizeof *pos), *slots = malloc((size_t)n * sizeof *slots);
    int32_t *rows = malloc((size_t)n * sizeof *rows);
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        slots[i] = kv_seq_slot(kv, seq, i);
    }
    const int32_t *bt = kv_seq_block_table(kv, seq);
    for (int p0 = 0; p0 < n; p0 += chunk) {
        int c = n - p0 < chunk ? n - p0 : chunk;
        for (int i = 0; i < c; i++) rows[i] = i;
        int32_t ss[2] = {0, c}, cl = p0 + c;
        llm_batch b = {c, tokens + p0, pos + p0, slots + p0, 1, ss, &cl, &bt, c, rows, NULL};
        if (llm_forward(M, BE, kv, &b, logits + (size_t)p0 * hp->n_vocab, err, sizeof err)) {
            fprintf(stderr, "forward: %s\n", err);
            free(logits);
            logits = NULL;
            break;
        }
    }
    free(pos);
    free(slots);
    free(rows);
    kv_cache_free(kv);
    return logits;
}

static void test_teacher_forced(const char *mode, double top1_min, double kl_limit) {
    size_t len;
    char *buf = read_all(tu_src_path("tests/golden/teacher_forced.bin"), &len);
    if (!buf) {
        printf("teacher_forced.bin absent: skipped\n");
        return;
    }
    CHECK(len > 20 && memcmp(buf, "TFREF001", 8) == 0);
    uint32_t n_chunks, K, n_vocab;
    memcpy(&n_chunks, buf + 8, 4);
    memcpy(&K, buf + 12, 4);
    memcpy(&n_vocab, buf + 16, 4);
    const int V = llm_model_hparams(M)->n_vocab;
    CHECK((int)n_vocab == V);
    size_t off = 20;
    long n_pos = 0, top1_agree = 0;
    double kl_sum = 0, kl_max = 0, tail_sum = 0, dlp_sum = 0;
    int max_chunks = getenv("TEST_REF_CHUNKS") ? atoi(getenv("TEST_REF_CHUNKS")) : 1 << 30;
    for (uint32_t c = 0; c < n_chunks && (int)c < max_chunks; c++) {
        uint32_t n;
        memcpy(&n, buf + off, 4);
        off += 4;
        int32_t *tokens = malloc(n * sizeof *tokens);
        memcpy(tokens, buf + off, n * 4);
        off += (size_t)n * 4;
        /* alternate prefill chunking to also cover multi-step prefill */
        float *logits = eval_all(tokens, (int)n, c % 2 ? 512 : 100);
        CHECK(logits != NULL);
        for (uint32_t p = 0; p < n; p++) {
            float tail;
            memcpy(&tail, buf + off, 4);
            const char *ent = buf + off + 4;
            off += 4 + 8 * (size_t)K;
            if (!logits) continue;
            const float *lg = logits + (size_t)p * V;
            double mx = -INFINITY, se = 0;
            int am = 0;
            for (int i = 0; i < V; i++) {
                if (lg[i] > mx) {
                    mx = lg[i];
                    am = i;
                }
            }
            for (int i = 0; i < V; i++) se += exp(lg[i] - mx);
            double lse = mx + log(se);
            double kl = 0, q_top = 0;
            int32_t id0;
            memcpy(&id0, ent, 4);
            top1_agree += (id0 == am);
            {
                float lp0;
                memcpy(&lp0, ent + 4, 4);
                dlp_sum += fabs((lg[id0] - lse) - lp0);
            }
            for (uint32_t k = 0; k < K; k++) {
                int32_t id;
                float lp;
                memcpy(&id, ent + 8 * k, 4);
                memcpy(&lp, ent + 8 * k + 4, 4);
                double lq = lg[id] - lse;
                q_top += exp(lq);
                kl += exp(lp) * (lp - lq);
            }
            if (isfinite(tail)) {
                double q_tail = 1.0 - q_top;
                if (q_tail < 1e-12) q_tail = 1e-12;
                kl += exp(tail) * (tail - log(q_tail));
                tail_sum += exp(tail);
            }
            kl_sum += kl;
            if (kl > kl_max) kl_max = kl;
            n_pos++;
        }
        free(logits);
        free(tokens);
    }
    double top1 = n_pos ? (double)top1_agree / n_pos : 0, kl_mean = n_pos ? kl_sum / n_pos : 1;
    printf("%s: teacher-forced vs llama.cpp: %ld positions, top-1 agreement %.2f%%, mean KL %.6f "
           "nats (max %.4f; mean reference mass outside top-%u %.4f; mean |logprob diff| of the "
           "reference top-1 %.5f)\n",
           mode, n_pos, 100 * top1, kl_mean, kl_max, K, n_pos ? tail_sum / n_pos : 0,
           n_pos ? dlp_sum / n_pos : 0);
    CHECK(n_pos >= 2000);
    CHECKF(top1 >= top1_min, "%s: top-1 agreement %.4f", mode, top1);
    CHECKF(kl_mean <= kl_limit, "%s: mean KL %.6f", mode, kl_mean);
    free(buf);
}

static void test_greedy(const char *mode, int min_same) {
    char *text = read_all(tu_src_path("tests/golden/greedy.jsonl"), NULL);
    if (!text) {
        printf("greedy.jsonl absent: skipped\n");
        return;
    }
    const llm_hparams *hp = llm_model_hparams(M);
    int n_prompts = 0, n_same = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue;
        cJSON *pi = cJSON_GetObjectItem(j, "prompt_ids"),
              *gi = cJSON_GetObjectItem(j, "greedy_ids");
        int np = cJSON_GetArraySize(pi), ng = cJSON_GetArraySize(gi);
        int32_t *toks = malloc((size_t)(np + ng) * sizeof *toks);
        for (int i = 0; i < np; i++) toks[i] = cJSON_GetArrayItem(pi, i)->valueint;
        kv_cache *kv;
        char err[256];
        kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, 16, (np + ng) / 16 + 2, KV_F16,
                        &kv, err, sizeof err);
        int seq = kv_seq_new(kv);
        kv_seq_reserve(kv, seq, np + ng);
        const int32_t *bt = kv_seq_block_table(kv, seq);
        float *logits = malloc((size_t)hp->n_vocab * sizeof *logits);
        int32_t *pos = malloc((size_t)(np + ng) * sizeof *pos),
                *slots = malloc((size_t)(np + ng) * sizeof *slots);
        for (int i = 0; i < np + ng; i++) {
            pos[i] = i;
            slots[i] = kv_seq_slot(kv, seq, i);
        }
        int cur = 0, same = 1, first_diff = -1;
        int n_in = np;
        for (int g = 0; g < ng; g++) {
            int32_t ss[2] = {0, n_in}, cl = cur + n_in, lr = n_in - 1;
            llm_batch b = {n_in, toks + cur, pos + cur, slots + cur, 1, ss, &cl, &bt, 1, &lr, NULL};
            if (llm_forward(M, BE, kv, &b, logits, err, sizeof err)) {
                same = 0;
                break;
            }
            cur += n_in;
            int am = 0;
            for (int i = 1; i < hp->n_vocab; i++)
                if (logits[i] > logits[am]) am = i;
            toks[cur] = am;
            n_in = 1;
            if (am != cJSON_GetArrayItem(gi, g)->valueint) {
                same = 0;
                first_diff = g;
                break;
            }
        }
        n_prompts++;
        n_same += same;
        if (!same)
            printf("greedy prompt %d: first difference at token %d\n", n_prompts, first_diff);
        free(toks);
        free(logits);
        free(pos);
        free(slots);
        kv_cache_free(kv);
        cJSON_Delete(j);
    }
    printf("%s: greedy 32-token continuations identical to llama.cpp: %d of %d\n", mode, n_same,
           n_prompts);
    CHECK(n_prompts == 20);
    CHECKF(n_same >= min_same, "%s: %d of %d identical", mode, n_same, n_prompts);
    free(text);
}

int main(void) {
    const char *path = tu_model_path();
    if (!path) {
        printf("test_model_ref: model absent (run tools/fetch-model): SKIP\n");
        return TU_SKIP;
    }
    char err[512];
    if (llm_model_load(path, &M, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    BE = backend_cpu_create(0, err, sizeof err);
    test_teacher_forced("exact", 0.99, 0.01);
    test_greedy("exact", 18);
    backend_free(BE);
    be_cpu_options fo = {0, BE_NUMERICS_FAST};
    BE = backend_cpu_create_opts(&fo, err, sizeof err);
    test_teacher_forced("fast", 0.95, 0.005);
    backend_cpu_forget_weights(BE); /* the greedy pass packs the weights again */
    test_greedy("fast", 3);
    backend_free(BE);
    llm_model_free(M);
    return tu_finish("test_model_ref");
}
