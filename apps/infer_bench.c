/*
 * infer_bench.c - `infer-bench`, a llama-bench style speed test of the
 * engine: prompt processing (pp) and text generation (tg) throughput of one
 * model, repeated and summarised as mean, stddev and median tokens/s.
 *
 * The tests are defined exactly as bench/llamacpp_bench.py defines them for
 * llama.cpp, so bench/compare_llamacpp.sh can put the two side by side:
 *   pp<P>      P pseudo-random prompt tokens evaluated from an empty KV cache
 *              (llm_forward calls of at most --chunk rows), logits for the
 *              last row only; t/s = P / seconds.
 *   tg<N>      after an untimed prompt of --tg-prompt tokens, N single-token
 *              steps feeding fixed pseudo-random ids (no sampling), logits for
 *              the row each step; t/s = N / seconds.
 *   tg<N> xB   the same with B sequences decoding in lockstep, one row each
 *              per step; t/s = B * N / seconds (aggregate).
 * Every test runs once untimed (warm-up), then -r timed repetitions.
 *
 * For decode the weights are read once per step, so weight bytes x steps/s
 * is the bandwidth the step achieves; it is compared against the memory read
 * probe of infer_bench_membw.h, run after the tests with the same thread
 * count (the backend is freed first so its spinning workers do not compete);
 * --membw runs the probe alone. Peak RSS is taken before the probe, so it
 * reflects the engine only.
 *
 * Exit codes: 0 ok, 1 model load / run failure, 2 bad arguments.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "apps/app_start.h"
#include "apps/cli_args.h"
#include "apps/infer_bench_membw.h"
#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "core/model.h"

#define BENCH_BLOCK_SIZE 16
#define MAX_LIST 32

/* ---- arguments ---- */

typedef struct {
    int v[MAX_LIST];
    int n;
} int_list;

typedef struct {
    const char *model;
    int_list pp, tg, seqs;
    int reps;
    int threads;   /* 0: number of cores */
    int chunk;     /* rows per llm_forward call in pp */
    int tg_prompt; /* untimed prompt length before tg */
    kv_dtype kv;
    be_numerics numerics;
    int json;
    int membw_only;   /* run the memory read probe alone, no model */
    int membw_passes; /* timed passes of the probe */
} bench_args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: infer-bench [options]\n"
            "\n"
            "Measures prompt processing (pp) and text generation (tg) speed of a model,\n"
            "llama-bench style; tests are defined as in bench/llamacpp_bench.py.\n"
            "\n"
            "  -m, --model PATH       GGUF model (default: " APP_DEFAULT_MODEL ")\n"
            "  -p, --n-prompt N[,N]   pp test sizes (default 512; 0 = skip)\n"
            "  -n, --n-gen N[,N]      tg test sizes (default 128; 0 = skip)\n"
            "  -B, --n-seqs B[,B]     sequences decoding in lockstep in tg tests (default 1);\n"
            "                         B > 1 reports aggregate tokens/s of all B sequences\n"
            "  -r, --repetitions N    timed runs per test, after one warm-up (default 5)\n"
            "  -t, --threads N        CPU threads (default: number of cores)\n"
            "      --kv f16|f32       KV cache element type (default f16)\n"
            "      --numerics exact|fast  matmul arithmetic: llama.cpp's bits, or one float\n"
            "                         accumulator per output (default exact)\n"
            "      --chunk N          rows per forward call in pp tests (default 512)\n"
            "      --tg-prompt N      untimed prompt tokens before a tg test (default 8)\n"
            "      --json             print a JSON array of results instead of the table\n"
            "      --membw            run only the memory read probe (no model) and print it\n"
            "      --membw-passes N   timed passes of the memory read probe (default %d; 0 = no\n"
            "                         probe: no roofline figures)\n"
            "  -h, --help             show this help\n"
            "\n"
            "For tg tests the table adds the weight bandwidth achieved per decode step\n"
            "(weight bytes x steps/s) against a measured memory read bandwidth (a short\n"
            "probe with the same thread count), and the peak RSS at the end.\n"
            "Exit status: 0 success, 1 model load or run error, 2 bad arguments.\n",
            MEMBW_DEFAULT_PASSES);
}

/* "512" or "128,256": each entry in [lo, hi]. */
static int parse_list(const char *s, long lo, long hi, int_list *out) {
    out->n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char tmp[32];
        if (len == 0 || len >= sizeof tmp || out->n == MAX_LIST) return -1;
        memcpy(tmp, p, len);
        tmp[len] = 0;
        if (cli_parse_int(tmp, lo, hi, &out->v[out->n])) return -1;
        out->n++;
        if (!comma) return 0;
        p = comma + 1;
    }
}

enum {
    OPT_KV = 256,
    OPT_JSON,
    OPT_CHUNK,
    OPT_TG_PROMPT,
    OPT_NUMERICS,
    OPT_MEMBW,
    OPT_MEMBW_PASSES
};

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, bench_args *a) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},
        {"n-prompt", required_argument, 0, 'p'},
        {"n-gen", required_argument, 0, 'n'},
        {"n-seqs", required_argument, 0, 'B'},
        {"repetitions", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'},
        {"kv", required_argument, 0, OPT_KV},
        {"numerics", required_argument, 0, OPT_NUMERICS},
        {"chunk", required_argument, 0, OPT_CHUNK},
        {"tg-prompt", required_argument, 0, OPT_TG_PROMPT},
        {"json", no_argument, 0, OPT_JSON},
        {"membw", no_argument, 0, OPT_MEMBW},
        {"membw-passes", required_argument, 0, OPT_MEMBW_PASSES},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:B:r:t:h", longopts, NULL)) != -1) {
        const char *v = optarg;
        switch (c) {
        case 'm': a->model = v; break;
        case 'p':
            if (parse_list(v, 0, 1 << 20, &a->pp))
                return cli_bad_arg("infer-bench",
                                   "-p: expected integers >= 0 separated by commas, got '%s'", v);
            break;
        case 'n':
            if (parse_list(v, 0, 1 << 20, &a->tg))
                return cli_bad_arg("infer-bench",
                                   "-n: expected integers >= 0 separated by commas, got '%s'", v);
            break;
        case 'B':
            if (parse_list(v, 1, 4096, &a->seqs))
                return cli_bad_arg(
                    "infer-bench",
                    "-B: expected integers in [1, 4096] separated by commas, got '%s'", v);
            break;
        case 'r':
            if (cli_parse_int(v, 1, 100000, &a->reps))
                return cli_bad_arg("infer-bench", "-r: expected an integer >= 1, got '%s'", v);
            break;
        case 't':
            if (cli_parse_int(v, 1, 1024, &a->threads))
                return cli_bad_arg("infer-bench", "-t: expected an integer in [1, 1024], got '%s'",
                                   v);
            break;
        case OPT_KV:
            if (strcmp(v, "f16") == 0) a->kv = KV_F16;
            else if (strcmp(v, "f32") == 0) a->kv = KV_F32;
            else return cli_bad_arg("infer-bench", "--kv: expected f16 or f32, got '%s'", v);
            break;
        case OPT_NUMERICS:
            if (be_numerics_parse(v, &a->numerics))
                return cli_bad_arg("infer-bench", "--numerics: expected exact or fast, got '%s'",
                                   v);
            break;
        case OPT_CHUNK:
            if (cli_parse_int(v, 1, 1 << 20, &a->chunk))
                return cli_bad_arg("infer-bench", "--chunk: expected an integer >= 1, got '%s'", v);
            break;
        case OPT_TG_PROMPT:
            if (cli_parse_int(v, 1, 1 << 20, &a->tg_prompt))
                return cli_bad_arg("infer-bench", "--tg-prompt: expected an integer >= 1, got '%s'",
                                   v);
            break;
        case OPT_JSON: a->json = 1; break;
        case OPT_MEMBW: a->membw_only = 1; break;
        case OPT_MEMBW_PASSES:
            if (cli_parse_int(v, 0, 1000, &a->membw_passes))
                return cli_bad_arg("infer-bench",
                                   "--membw-passes: expected an integer in [0, 1000], got '%s'", v);
            break;
        case 'h': usage(stdout); return 0;
        default: return app_bad_option("infer-bench", c, argv);
        }
    }
    if (optind < argc) return cli_bad_arg("infer-bench", "unexpected argument '%s'", argv[optind]);
    if (a->membw_only && a->membw_passes == 0)
        return cli_bad_arg("infer-bench", "--membw needs --membw-passes >= 1");
    if (a->membw_only) return -1;
    int any = 0;
    for (int i = 0; i < a->pp.n; i++) any |= a->pp.v[i] > 0;
    for (int i = 0; i < a->tg.n; i++) any |= a->tg.v[i] > 0;
    if (!any) return cli_bad_arg("infer-bench", "nothing to run: -p and -n are all 0");
    return -1;
}

/* ---- timing and statistics ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

typedef struct {
    char name[48];  /* JSON test name: pp512, tg128, tg128_b16 */
    char label[48]; /* table label: pp512, tg128, tg128 x16 */
    int n_prompt, n_gen, n_seqs;
    double *samples; /* tokens/s of each timed run */
    int n_samples;
    double avg, median, stddev;
    double weight_gbps; /* tg only: weight bytes x steps/s; 0 otherwise */
} bench_result;

static void result_stats(bench_result *r) {
    int n = r->n_samples;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += r->samples[i];
    r->avg = sum / n;
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (r->samples[i] - r->avg) * (r->samples[i] - r->avg);
    r->stddev = n > 1 ? sqrt(ss / (n - 1)) : 0.0; /* sample stddev, like statistics.stdev */
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) {
        r->median = r->avg;
        return;
    }
    memcpy(s, r->samples, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    r->median = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
}

/* ---- the runs ---- */

typedef struct {
    llm_model *m;
    backend *be;
    kv_cache *kv;
    int n_vocab;
    int first_token; /* lowest id fed: control tokens are skipped */
    uint64_t rng;
    int chunk, tg_prompt;
    kv_dtype kv_type;
    /* batch arrays, sized for the largest step of the current test */
    int32_t *tokens, *positions, *slots, *seq_start, *ctx_len, *logit_rows, *seq_ids;
    const int32_t **tables;
    float *logits;
    int32_t *feed; /* pre-drawn tokens of one run */
    char err[512];
} bench_ctx;

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int32_t rand_token(bench_ctx *c) {
    return c->first_token +
           (int32_t)(splitmix64(&c->rng) % (uint64_t)(c->n_vocab - c->first_token));
}

static void ctx_free_test(bench_ctx *c) {
    kv_cache_free(c->kv);
    c->kv = NULL;
    free(c->tokens);
    free(c->positions);
    free(c->slots);
    free(c->seq_start);
    free(c->ctx_len);
    free(c->logit_rows);
    free(c->seq_ids);
    free(c->tables);
    free(c->logits);
    free(c->feed);
    c->tokens = c->positions = c->slots = c->seq_start = c->ctx_len = c->logit_rows = NULL;
    c->seq_ids = c->feed = NULL;
    c->tables = NULL;
    c->logits = NULL;
}

/* Allocate the cache and arrays for a test of n_seqs sequences of ctx tokens,
 * with at most rows rows per forward call and n_feed pre-drawn tokens. */
static int ctx_prepare_test(bench_ctx *c, int n_seqs, int ctx, int rows, int n_feed) {
    const llm_hparams *hp = llm_model_hparams(c->m);
    int blocks_per_seq = (ctx + BENCH_BLOCK_SIZE - 1) / BENCH_BLOCK_SIZE;
    if ((int64_t)blocks_per_seq * n_seqs > INT_MAX / BENCH_BLOCK_SIZE) {
        snprintf(c->err, sizeof c->err, "test too large: %d sequences x %d tokens", n_seqs, ctx);
        return -1;
    }
    if (kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, BENCH_BLOCK_SIZE,
                        blocks_per_seq * n_seqs, c->kv_type, &c->kv, c->err, sizeof c->err))
        return -1;
    size_t r = (size_t)rows, s = (size_t)n_seqs;
    c->tokens = malloc(r * sizeof *c->tokens);
    c->positions = malloc(r * sizeof *c->positions);
    c->slots = malloc(r * sizeof *c->slots);
    c->seq_start = malloc((s + 1) * sizeof *c->seq_start);
    c->ctx_len = malloc(s * sizeof *c->ctx_len);
    c->logit_rows = malloc(s * sizeof *c->logit_rows);
    c->seq_ids = malloc(s * sizeof *c->seq_ids);
    c->tables = malloc(s * sizeof *c->tables);
    c->logits = malloc(s * (size_t)c->n_vocab * sizeof *c->logits);
    c->feed = malloc((size_t)n_feed * sizeof *c->feed);
    if (!c->tokens || !c->positions || !c->slots || !c->seq_start || !c->ctx_len ||
        !c->logit_rows || !c->seq_ids || !c->tables || !c->logits || !c->feed) {
        snprintf(c->err, sizeof c->err, "out of memory");
        return -1;
    }
    for (int i = 0; i < n_seqs; i++) c->seq_ids[i] = -1;
    return 0;
}

/* Empty the cache and open n_seqs sequences with room for ctx tokens each. */
static int ctx_reset_seqs(bench_ctx *c, int n_seqs, int ctx) {
    for (int i = 0; i < n_seqs; i++) {
        kv_seq_free(c->kv, c->seq_ids[i]);
        c->seq_ids[i] = -1;
    }
    for (int i = 0; i < n_seqs; i++) {
        c->seq_ids[i] = kv_seq_new(c->kv);
        if (c->seq_ids[i] < 0 || kv_seq_reserve(c->kv, c->seq_ids[i], ctx) != 0) {
            snprintf(c->err, sizeof c->err, "KV cache: cannot reserve %d tokens", ctx);
            return -1;
        }
        c->tables[i] = kv_seq_block_table(c->kv, c->seq_ids[i]);
    }
    return 0;
}

static int forward(bench_ctx *c, int n_tokens, int n_seqs, int n_logits) {
    llm_batch b = {n_tokens,   c->tokens, c->positions, c->slots,      n_seqs, c->seq_start,
                   c->ctx_len, c->tables, n_logits,     c->logit_rows, NULL};
    char ferr[256];
    if (llm_forward(c->m, c->be, c->kv, &b, c->logits, ferr, sizeof ferr) != 0) {
        snprintf(c->err, sizeof c->err, "forward pass failed: %s", ferr);
        return -1;
    }
    return 0;
}

/* One pp run: P prompt tokens from an empty cache. Returns tokens/s or -1. */
static double run_pp(bench_ctx *c, int P) {
    for (int i = 0; i < P; i++) c->feed[i] = rand_token(c);
    if (ctx_reset_seqs(c, 1, P)) return -1;
    double t0 = now_s();
    for (int start = 0; start < P; start += c->chunk) {
        int rows = P - start < c->chunk ? P - start : c->chunk;
        int last = start + rows == P;
        for (int i = 0; i < rows; i++) {
            c->tokens[i] = c->feed[start + i];
            c->positions[i] = start + i;
            c->slots[i] = kv_seq_slot(c->kv, c->seq_ids[0], start + i);
        }
        c->seq_start[0] = 0;
        c->seq_start[1] = rows;
        c->ctx_len[0] = start + rows;
        c->logit_rows[0] = rows - 1;
        if (forward(c, rows, 1, last ? 1 : 0)) return -1;
    }
    double dt = now_s() - t0;
    return P / dt;
}

/* One tg run: B sequences, an untimed prompt each, then N timed lockstep
 * steps of one row per sequence. Returns aggregate tokens/s or -1. */
static double run_tg(bench_ctx *c, int N, int B) {
    const int TP = c->tg_prompt;
    int32_t *prompt = c->feed, *gen = c->feed + (size_t)B * TP;
    for (size_t i = 0; i < (size_t)B * (size_t)(TP + N); i++) c->feed[i] = rand_token(c);
    if (ctx_reset_seqs(c, B, TP + N)) return -1;

    /* untimed prompt: all sequences in one batch, logits for each last row */
    for (int s = 0; s < B; s++) {
        for (int i = 0; i < TP; i++) {
            int r = s * TP + i;
            c->tokens[r] = prompt[r];
            c->positions[r] = i;
            c->slots[r] = kv_seq_slot(c->kv, c->seq_ids[s], i);
        }
        c->seq_start[s] = s * TP;
        c->ctx_len[s] = TP;
        c->logit_rows[s] = s * TP + TP - 1;
    }
    c->seq_start[B] = B * TP;
    if (forward(c, B * TP, B, B)) return -1;

    double t0 = now_s();
    for (int step = 0; step < N; step++) {
        int pos = TP + step;
        for (int s = 0; s < B; s++) {
            c->tokens[s] = gen[(size_t)s * N + step];
            c->positions[s] = pos;
            c->slots[s] = kv_seq_slot(c->kv, c->seq_ids[s], pos);
            c->seq_start[s] = s;
            c->ctx_len[s] = pos + 1;
            c->logit_rows[s] = s;
        }
        c->seq_start[B] = B;
        if (forward(c, B, B, B)) return -1;
    }
    double dt = now_s() - t0;
    return (double)B * N / dt;
}

/* Warm-up plus reps timed runs of one test; fills r->samples. */
static int run_test(bench_ctx *c, bench_result *r, int reps) {
    int is_pp = r->n_prompt > 0;
    int B = r->n_seqs;
    int ok = is_pp ? ctx_prepare_test(c, 1, r->n_prompt,
                                      c->chunk < r->n_prompt ? c->chunk : r->n_prompt, r->n_prompt)
                   : ctx_prepare_test(c, B, c->tg_prompt + r->n_gen,
                                      B * c->tg_prompt > B ? B * c->tg_prompt : B,
                                      B * (c->tg_prompt + r->n_gen));
    if (ok != 0) {
        ctx_free_test(c);
        return -1;
    }
    r->samples = calloc((size_t)reps, sizeof *r->samples);
    if (!r->samples) {
        snprintf(c->err, sizeof c->err, "out of memory");
        ctx_free_test(c);
        return -1;
    }
    for (int i = -1; i < reps; i++) { /* i = -1: warm-up */
        double ts = is_pp ? run_pp(c, r->n_prompt) : run_tg(c, r->n_gen, B);
        if (ts < 0) {
            ctx_free_test(c);
            return -1;
        }
        if (i >= 0) r->samples[r->n_samples++] = ts;
    }
    ctx_free_test(c);
    result_stats(r);
    return 0;
}

/* ---- output ---- */

static void print_membw(const membw_result *m) {
    printf("memory read probe: median %.2f GB/s (min %.2f, max %.2f) over %d passes of %.0f MiB "
           "with %d threads; largest cache %.0f MiB\n",
           m->median_gbps, m->min_gbps, m->max_gbps, m->passes, (double)m->buf_bytes / 1048576.0,
           m->threads, (double)m->llc_bytes / 1048576.0);
}

static double peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is KiB on Linux */
}

static void print_table_header(void) {
    printf("| %-28s | %10s | %7s | %-10s | %-12s | %20s | %10s |\n", "model", "size", "threads",
           "isa", "test", "t/s", "median t/s");
    printf("| ---------------------------- | ---------: | ------: | ---------- | ------------ "
           "| -------------------: | ---------: |\n");
}

static void print_table_row(const char *model, double size_mib, int threads, const char *isa,
                            const bench_result *r) {
    char size[32], ts[48];
    snprintf(size, sizeof size, "%.2f MiB", size_mib);
    snprintf(ts, sizeof ts, "%.2f ± %.2f", r->avg, r->stddev);
    /* the ± sign is 2 bytes but one column: pad by one more */
    printf("| %-28.28s | %10s | %7d | %-10s | %-12s | %21s | %10.2f |\n", model, size, threads, isa,
           r->label, ts, r->median);
    fflush(stdout);
}

static int print_json(const bench_result *res, int n, const char *model_name, uint64_t wbytes,
                      int threads, const char *isa, kv_dtype kv, be_numerics numerics,
                      const membw_result *mem, double rss) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return -1;
    for (int i = 0; i < n; i++) {
        const bench_result *r = &res[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) goto fail;
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "test", r->name);
        cJSON_AddNumberToObject(o, "n_prompt", r->n_prompt);
        cJSON_AddNumberToObject(o, "n_gen", r->n_gen);
        cJSON_AddNumberToObject(o, "n_seqs", r->n_seqs);
        cJSON_AddNumberToObject(o, "n_threads", threads);
        cJSON_AddNumberToObject(o, "avg_ts", r->avg);
        cJSON_AddNumberToObject(o, "median_ts", r->median);
        cJSON_AddNumberToObject(o, "stddev_ts", r->stddev);
        cJSON *s = cJSON_CreateDoubleArray(r->samples, r->n_samples);
        if (!s) goto fail;
        cJSON_AddItemToObject(o, "samples_ts", s);
        if (r->n_gen > 0) {
            cJSON_AddNumberToObject(o, "weight_gbps", r->weight_gbps);
            double mem_gbps = mem->median_gbps;
            cJSON_AddNumberToObject(o, "mem_read_gbps", mem_gbps);
            cJSON_AddNumberToObject(o, "mem_read_min_gbps", mem->min_gbps);
            cJSON_AddNumberToObject(o, "mem_read_max_gbps", mem->max_gbps);
            cJSON_AddNumberToObject(o, "mem_probe_bytes", (double)mem->buf_bytes);
            cJSON_AddNumberToObject(o, "mem_probe_passes", mem->passes);
            cJSON_AddNumberToObject(o, "llc_bytes", (double)mem->llc_bytes);
            cJSON_AddNumberToObject(o, "roofline_pct",
                                    mem_gbps > 0 ? 100.0 * r->weight_gbps / mem_gbps : 0.0);
        }
        cJSON_AddStringToObject(o, "impl", "infer-bench");
        cJSON_AddStringToObject(o, "model", model_name);
        cJSON_AddNumberToObject(o, "model_size", (double)wbytes);
        cJSON_AddStringToObject(o, "isa", isa);
        cJSON_AddStringToObject(o, "kv_type", kv == KV_F16 ? "f16" : "f32");
        cJSON_AddStringToObject(o, "numerics", be_numerics_name(numerics));
        cJSON_AddNumberToObject(o, "peak_rss_mib", rss);
    }
    char *text = cJSON_Print(arr);
    cJSON_Delete(arr);
    if (!text) return -1;
    printf("%s\n", text);
    cJSON_free(text);
    return 0;
fail:
    cJSON_Delete(arr);
    return -1;
}

/* The tests, in llama-bench order: all pp, then all tg (each B of -B).
 * Returns how many were written to res. */
static int plan_tests(const bench_args *a, bench_result *res) {
    int n_res = 0;
    for (int i = 0; i < a->pp.n; i++) {
        if (a->pp.v[i] == 0) continue;
        bench_result *r = &res[n_res++];
        r->n_prompt = a->pp.v[i];
        r->n_seqs = 1;
        snprintf(r->name, sizeof r->name, "pp%d", r->n_prompt);
        snprintf(r->label, sizeof r->label, "pp%d", r->n_prompt);
    }
    for (int i = 0; i < a->tg.n; i++) {
        if (a->tg.v[i] == 0) continue;
        for (int j = 0; j < a->seqs.n; j++) {
            bench_result *r = &res[n_res++];
            r->n_gen = a->tg.v[i];
            r->n_seqs = a->seqs.v[j];
            if (r->n_seqs == 1) {
                snprintf(r->name, sizeof r->name, "tg%d", r->n_gen);
                snprintf(r->label, sizeof r->label, "tg%d", r->n_gen);
            } else {
                snprintf(r->name, sizeof r->name, "tg%d_b%d", r->n_gen, r->n_seqs);
                snprintf(r->label, sizeof r->label, "tg%d x%d", r->n_gen, r->n_seqs);
            }
        }
    }
    return n_res;
}

/* The table's closing lines: weight bandwidth of each tg test against the
 * memory probe, and the run's settings. */
static void print_table_footer(const bench_args *a, const bench_result *res, int n_res, int threads,
                               const membw_result *mem, double rss) {
    const double mem_gbps = mem->median_gbps;
    printf("\n");
    for (int i = 0; i < n_res; i++) {
        const bench_result *r = &res[i];
        if (r->n_gen == 0) continue;
        if (mem_gbps > 0)
            printf("%s: weights %.2f GB/s of measured read %.2f GB/s (%.0f%% of roofline)%s\n",
                   r->label, r->weight_gbps, mem_gbps, 100.0 * r->weight_gbps / mem_gbps,
                   r->n_seqs > 1 ? " per lockstep step" : "");
        else
            printf("%s: weights %.2f GB/s (no memory read probe figure)\n", r->label,
                   r->weight_gbps);
    }
    if (mem_gbps > 0) print_membw(mem);
    printf("kv cache %s, %s numerics, %d threads; peak RSS %.1f MiB\n",
           a->kv == KV_F16 ? "f16" : "f32", be_numerics_name(a->numerics), threads, rss);
}

/* Run every test and print the results; frees rt->be before the memory
 * probe. Returns 0 or 1. */
static int run_all(const bench_args *a, app_runtime *rt, bench_result *res, int n_res) {
    const llm_hparams *hp = llm_model_hparams(rt->model);
    const int threads = rt->be->n_threads;
    char isa[32];
    snprintf(isa, sizeof isa, "%s", backend_cpu_isa(rt->be));
    const uint64_t wbytes = llm_model_weight_bytes(rt->model);
    const double size_mib = (double)wbytes / (1024.0 * 1024.0);
    /* the file name says more than general.name (it carries the quant type) */
    const char *slash = strrchr(a->model, '/');
    char model_name[160], model_label[160];
    snprintf(model_name, sizeof model_name, "%s", slash ? slash + 1 : a->model);
    snprintf(model_label, sizeof model_label, "%s", model_name);
    size_t ln = strlen(model_label);
    if (ln > 5 && strcmp(model_label + ln - 5, ".gguf") == 0) model_label[ln - 5] = 0;

    bench_ctx c = {0};
    c.m = rt->model;
    c.be = rt->be;
    c.n_vocab = hp->n_vocab;
    c.first_token = hp->n_vocab > 1000 ? 17 : 0; /* as the python script: skip control ids */
    c.rng = 1234;
    c.chunk = a->chunk;
    c.tg_prompt = a->tg_prompt;
    c.kv_type = a->kv;

    if (!a->json) print_table_header();
    int has_tg = 0;
    for (int i = 0; i < n_res; i++) {
        bench_result *r = &res[i];
        if (run_test(&c, r, a->reps) != 0) {
            if (!a->json) fflush(stdout);
            fprintf(stderr, "infer-bench: %s: %s\n", r->name, c.err);
            return 1;
        }
        if (r->n_gen > 0) {
            /* weights are read once per step; a step advances every sequence by one */
            r->weight_gbps = (double)wbytes * (r->median / r->n_seqs) / 1e9;
            has_tg = 1;
        }
        if (!a->json) print_table_row(model_label, size_mib, threads, isa, r);
    }

    double rss = peak_rss_mib();
    backend_free(rt->be); /* its workers spin; keep them off the cores during the probe */
    rt->be = NULL;
    membw_result mem = {0};
    if (has_tg && a->membw_passes > 0 && membw_measure(threads, a->membw_passes, &mem) != 0)
        fprintf(stderr, "infer-bench: the memory read probe could not run\n");

    if (!a->json) {
        print_table_footer(a, res, n_res, threads, &mem, rss);
        return 0;
    }
    if (print_json(res, n_res, model_name, wbytes, threads, isa, a->kv, a->numerics, &mem, rss)) {
        fprintf(stderr, "infer-bench: out of memory printing JSON\n");
        return 1;
    }
    fprintf(stderr, "infer-bench: peak RSS %.1f MiB\n", rss);
    return 0;
}

/* --membw: the probe alone, with -t threads (default: online cores). */
static int run_membw_only(const bench_args *a) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = a->threads > 0 ? a->threads : (cores > 0 ? (int)cores : 1);
    membw_result m;
    if (membw_measure(threads, a->membw_passes, &m) != 0) {
        fprintf(stderr, "infer-bench: the memory read probe could not run (out of memory?)\n");
        return 1;
    }
    if (!a->json) {
        print_membw(&m);
        return 0;
    }
    printf("{\"test\": \"membw\", \"n_threads\": %d, \"mem_read_gbps\": %.3f, "
           "\"mem_read_min_gbps\": %.3f, \"mem_read_max_gbps\": %.3f, \"mem_probe_bytes\": %zu, "
           "\"mem_probe_passes\": %d, \"llc_bytes\": %zu}\n",
           m.threads, m.median_gbps, m.min_gbps, m.max_gbps, m.buf_bytes, m.passes, m.llc_bytes);
    return 0;
}

int main(int argc, char **argv) {
    bench_args a = {0};
    a.model = APP_DEFAULT_MODEL;
    a.pp = (int_list){{512}, 1};
    a.tg = (int_list){{128}, 1};
    a.seqs = (int_list){{1}, 1};
    a.reps = 5;
    a.chunk = 512;
    a.tg_prompt = 8; /* as bench/llamacpp_bench.py --tg-prompt */
    a.kv = KV_F16;
    a.membw_passes = MEMBW_DEFAULT_PASSES;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (a.membw_only) return run_membw_only(&a);

    bench_result *res = calloc(MAX_LIST * (MAX_LIST + 1), sizeof *res);
    if (!res) {
        fprintf(stderr, "infer-bench: out of memory\n");
        return 1;
    }
    app_open_opts oo = {a.model, a.threads, a.numerics, 0, NULL, NULL, NULL};
    app_runtime rt;
    int n_res = 0;
    rc = app_open("infer-bench", &oo, &rt);
    if (rc < 0) {
        const llm_hparams *hp = llm_model_hparams(rt.model);
        n_res = plan_tests(&a, res);
        for (int i = 0; i < n_res; i++) {
            int ctx = res[i].n_prompt > 0 ? res[i].n_prompt : a.tg_prompt + res[i].n_gen;
            if (ctx > hp->n_ctx_train) {
                fprintf(stderr,
                        "infer-bench: note: %s uses %d positions, beyond the model's "
                        "training context of %d\n",
                        res[i].name, ctx, hp->n_ctx_train);
                break;
            }
        }
        rc = run_all(&a, &rt, res, n_res);
    }
    for (int i = 0; i < n_res; i++) free(res[i].samples);
    free(res);
    app_close(&rt);
    return rc;
}
