/*
 * infer_perplexity.c - `infer-perplexity`, the perplexity of a model on a
 * text file, measured the way llama.cpp's llama-perplexity measures it by
 * default, so the two figures can be compared directly.
 *
 * Method (fixed chunks, the default): the whole file is tokenized once
 * (BOS first when the model adds one, special-token text not parsed), cut
 * into chunks of --ctx tokens (a tail shorter than ctx is dropped), and each
 * chunk is evaluated from an empty KV cache with its first token replaced by
 * BOS. Only the second half is scored: the logits of positions ctx/2 ..
 * ctx-2 predict the tokens at ctx/2+1 .. ctx-1, so ctx - ctx/2 - 1 tokens a
 * chunk. PPL = exp(mean NLL) over all scored tokens; its standard error is
 * PPL * sqrt(var(NLL) / (n - 1)), llama.cpp's first-order estimate.
 *
 * --stride S (sliding windows): windows of ctx tokens start every S tokens;
 * each starts with BOS in place of its first token, as chunks do. The first
 * window scores every token it can predict (positions 1 .. ctx-1), each
 * later one only its last S tokens, so every token from the second to the
 * end of the last window is scored exactly once, with at least ctx - S - 1
 * tokens of context after the first window.
 *
 * KL divergence (llama.cpp's idea, our own file layout): --kl-divergence-base
 * FILE stores, per scored token, the target id and the model's log-softmax
 * quantized to 16 bits between the row's maximum and 16 nats below it
 * (values further down are stored as 0 and count as probability 0);
 * --kl-divergence FILE reads it back on the same text and settings and
 * reports KL(base || this model), its spread and how often the two models
 * agree on the most likely token.
 *
 * Log-softmax is computed in double. Exit codes: 0 ok, 1 load / run / input
 * failure (missing file, text too short), 2 bad arguments.
 */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apps/app_start.h"
#include "apps/cli_args.h"
#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "core/model.h"
#include "core/tokenizer.h"

#define PROG "infer-perplexity"
#define PPL_BLOCK_SIZE 16
#define KL_MAGIC "INFPPLKL"
#define KL_VERSION 1u
#define KL_RANGE 16.0 /* nats below the row's maximum that are stored */

/* ---- arguments ---- */

typedef struct {
    const char *model;
    const char *file;
    int ctx, chunks, threads, batch, stride;
    kv_dtype kv;
    be_numerics numerics;
    const char *kl_base_out; /* --kl-divergence-base: write */
    const char *kl_base_in;  /* --kl-divergence: read and compare */
} ppl_args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: infer-perplexity -f FILE [options]\n"
            "\n"
            "Perplexity of a model on a text file by llama-perplexity's method: the file is\n"
            "tokenized (with BOS), cut into chunks of --ctx tokens, each chunk evaluated from an\n"
            "empty cache with BOS as its first token, and only the second half of each chunk\n"
            "scored (the ctx - ctx/2 - 1 tokens after position ctx/2). Prints the running\n"
            "estimate after each chunk ([1]x,[2]y,...) and 'Final estimate: PPL = X +/- SE'.\n"
            "\n"
            "  -m, --model PATH       GGUF model (default: " APP_DEFAULT_MODEL ")\n"
            "  -f, --file PATH        text file (needs at least 2 x ctx tokens)\n"
            "  -c, --ctx N            tokens per chunk / window (default 512)\n"
            "      --chunks N         evaluate at most N chunks (windows with --stride)\n"
            "  -t, --threads N        CPU threads (default: number of cores)\n"
            "  -b, --batch N          rows per forward call (default 512)\n"
            "      --kv f16|f32       KV cache element type (default f16)\n"
            "      --numerics exact|fast  matmul arithmetic (default exact)\n"
            "      --stride S         sliding windows instead of chunks: windows of ctx tokens\n"
            "                         starting every S tokens (1 <= S < ctx); the first window\n"
            "                         scores all its tokens after the first, each later window\n"
            "                         only its last S tokens, so every token is scored once\n"
            "      --kl-divergence-base FILE  write this model's quantized log-probabilities of\n"
            "                         every scored token to FILE (large: ~2 bytes x vocabulary\n"
            "                         per token)\n"
            "      --kl-divergence FILE  compare with a FILE written by --kl-divergence-base on\n"
            "                         the same text and settings: KL(base || this model), and\n"
            "                         how often both models rank the same token first\n"
            "  -h, --help             show this help\n"
            "\n"
            "Progress (chunks done, elapsed, ETA) goes to stderr when it is a terminal.\n"
            "Exit status: 0 success, 1 load, input or run error, 2 bad arguments.\n");
}

enum { OPT_KV = 256, OPT_NUMERICS, OPT_CHUNKS, OPT_STRIDE, OPT_KL_BASE, OPT_KL };

static int parse_int_opt(const char *v, long lo, long hi, int *out, const char *name) {
    if (cli_parse_int(v, lo, hi, out))
        return cli_bad_arg(PROG, "%s: expected an integer in [%ld, %ld], got '%s'", name, lo, hi,
                           v);
    return -1;
}

/* One option; returns -1 to go on, or an exit code. */
static int parse_one(int c, const char *v, char **argv, ppl_args *a) {
    switch (c) {
    case 'm': a->model = v; return -1;
    case 'f': a->file = v; return -1;
    case 'c': return parse_int_opt(v, 4, 1 << 20, &a->ctx, "--ctx");
    case OPT_CHUNKS: return parse_int_opt(v, 1, INT_MAX, &a->chunks, "--chunks");
    case 't': return parse_int_opt(v, 1, 1024, &a->threads, "--threads");
    case 'b': return parse_int_opt(v, 1, 1 << 20, &a->batch, "--batch");
    case OPT_STRIDE: return parse_int_opt(v, 1, 1 << 20, &a->stride, "--stride");
    case OPT_KV:
        if (strcmp(v, "f16") == 0) a->kv = KV_F16;
        else if (strcmp(v, "f32") == 0) a->kv = KV_F32;
        else return cli_bad_arg(PROG, "--kv: expected f16 or f32, got '%s'", v);
        return -1;
    case OPT_NUMERICS:
        if (be_numerics_parse(v, &a->numerics))
            return cli_bad_arg(PROG, "--numerics: expected exact or fast, got '%s'", v);
        return -1;
    case OPT_KL_BASE: a->kl_base_out = v; return -1;
    case OPT_KL: a->kl_base_in = v; return -1;
    case 'h': usage(stdout); return 0;
    default: return app_bad_option(PROG, c, argv);
    }
}

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, ppl_args *a) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},
        {"file", required_argument, 0, 'f'},
        {"ctx", required_argument, 0, 'c'},
        {"chunks", required_argument, 0, OPT_CHUNKS},
        {"threads", required_argument, 0, 't'},
        {"batch", required_argument, 0, 'b'},
        {"kv", required_argument, 0, OPT_KV},
        {"numerics", required_argument, 0, OPT_NUMERICS},
        {"stride", required_argument, 0, OPT_STRIDE},
        {"kl-divergence-base", required_argument, 0, OPT_KL_BASE},
        {"kl-divergence", required_argument, 0, OPT_KL},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:f:c:t:b:h", longopts, NULL)) != -1) {
        int rc = parse_one(c, optarg, argv, a);
        if (rc >= 0) return rc;
    }
    if (optind < argc) return cli_bad_arg(PROG, "unexpected argument '%s'", argv[optind]);
    if (!a->file) return cli_bad_arg(PROG, "no text file: pass -f FILE");
    if (a->stride >= a->ctx)
        return cli_bad_arg(PROG, "--stride %d: must be below --ctx %d", a->stride, a->ctx);
    if (a->kl_base_out && a->kl_base_in)
        return cli_bad_arg(PROG, "--kl-divergence-base and --kl-divergence exclude each other");
    return -1;
}

/* ---- the plan: which windows, which of their positions are scored ---- */

/* Window w covers tokens[start(w) .. start(w) + ctx); the logits of its
 * positions lo(w) .. ctx-2 are scored, position p predicting token p+1. */
typedef struct {
    int ctx, stride; /* stride 0: llama.cpp's chunks */
    int n_windows;
} ppl_plan;

static int64_t plan_start(const ppl_plan *p, int w) {
    return (int64_t)w * (p->stride ? p->stride : p->ctx);
}

static int plan_lo(const ppl_plan *p, int w) {
    if (p->stride == 0) return p->ctx / 2;
    return w == 0 ? 0 : p->ctx - p->stride - 1;
}

static int64_t plan_scored(const ppl_plan *p) {
    int64_t n = 0;
    for (int w = 0; w < p->n_windows; w++) n += p->ctx - 1 - plan_lo(p, w);
    return n;
}

/* Windows that fit in n_tok tokens, at most limit (0: all). The chunk
 * method asks for 2 x ctx tokens, as llama-perplexity does. */
static int plan_make(ppl_plan *p, int64_t n_tok, int limit, char *err, size_t errlen) {
    int64_t need = p->stride ? p->ctx : 2 * (int64_t)p->ctx;
    if (n_tok < need) {
        snprintf(err, errlen,
                 "the text has %lld tokens; %s of %d needs at least %lld (a longer file, or a "
                 "smaller --ctx)",
                 (long long)n_tok, p->stride ? "a window" : "the chunk method with a context",
                 p->ctx, (long long)need);
        return -1;
    }
    int64_t n = p->stride ? 1 + (n_tok - p->ctx) / p->stride : n_tok / p->ctx;
    if (n > INT_MAX) n = INT_MAX;
    if (limit > 0 && n > limit) n = limit;
    p->n_windows = (int)n;
    return 0;
}

/* ---- statistics ---- */

typedef struct {
    double nll, nll2; /* sums */
    int64_t count;
} nll_sum;

static void nll_add(nll_sum *s, double v) {
    s->nll += v;
    s->nll2 += v * v;
    s->count++;
}

/* Mean and its standard error (llama.cpp's mean_and_uncertainty). */
static void mean_se(double sum, double sum2, int64_t n, double *mean, double *se) {
    *mean = sum / (double)n;
    double var = sum2 / (double)n - *mean * *mean;
    *se = n > 1 && var > 0 ? sqrt(var / (double)(n - 1)) : 0.0;
}

/* log-softmax of the target and the row's argmax, in double. lse_out:
 * max + log(sum exp(x - max)). */
static double row_nll(const float *logits, int n_vocab, int32_t target, double *lse_out,
                      int *argmax) {
    int im = 0;
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > logits[im]) im = i;
    double mx = logits[im], sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    if (lse_out) *lse_out = lse;
    if (argmax) *argmax = im;
    return lse - (double)logits[target];
}

/* ---- KL divergence records ---- */

/* File: KL_MAGIC, u32 version, i32 n_vocab, ctx, stride, n_windows, then
 * per scored token: i32 target, f32 floor, f32 scale, u16 q[n_vocab] with
 * log p = floor + scale * (q - 1) for q >= 1, and q = 0 below the floor. */
typedef struct {
    int32_t n_vocab, ctx, stride, n_windows;
} kl_header;

typedef struct {
    FILE *f;
    int writing;
    size_t rec_bytes;
    unsigned char *rec;
    nll_sum base; /* base model's NLL of the targets */
    double kld, kld2;
    float *klds; /* every token's KL, for the quantiles */
    int64_t n, same_top, base_hits, our_hits;
} kl_state;

static size_t kl_rec_bytes(int n_vocab) { return 12 + 2 * (size_t)n_vocab; }

static int kl_open(kl_state *k, const char *path, int writing, const kl_header *h, int64_t n_scored,
                   char *err, size_t errlen) {
    k->writing = writing;
    k->f = fopen(path, writing ? "wb" : "rb");
    if (!k->f) {
        snprintf(err, errlen, "cannot open '%s' for %s", path, writing ? "writing" : "reading");
        return -1;
    }
    k->rec_bytes = kl_rec_bytes(h->n_vocab);
    k->rec = malloc(k->rec_bytes);
    k->klds = writing ? NULL : malloc((size_t)n_scored * sizeof *k->klds);
    if (!k->rec || (!writing && !k->klds)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uint32_t ver = KL_VERSION;
    if (writing) {
        if (fwrite(KL_MAGIC, 8, 1, k->f) != 1 || fwrite(&ver, 4, 1, k->f) != 1 ||
            fwrite(h, sizeof *h, 1, k->f) != 1) {
            snprintf(err, errlen, "cannot write '%s'", path);
            return -1;
        }
        return 0;
    }
    char magic[8];
    kl_header fh;
    if (fread(magic, 8, 1, k->f) != 1 || memcmp(magic, KL_MAGIC, 8) != 0 ||
        fread(&ver, 4, 1, k->f) != 1 || ver != KL_VERSION || fread(&fh, sizeof fh, 1, k->f) != 1) {
        snprintf(err, errlen, "'%s' is not a --kl-divergence-base file of this version", path);
        return -1;
    }
    if (memcmp(&fh, h, sizeof fh) != 0) {
        snprintf(err, errlen,
                 "'%s' was written with vocabulary %d, ctx %d, stride %d, %d windows; this run "
                 "has %d, %d, %d, %d",
                 path, fh.n_vocab, fh.ctx, fh.stride, fh.n_windows, h->n_vocab, h->ctx, h->stride,
                 h->n_windows);
        return -1;
    }
    return 0;
}

static void kl_close(kl_state *k) {
    if (k->f) fclose(k->f);
    free(k->rec);
    free(k->klds);
    memset(k, 0, sizeof *k);
}

/* Quantize one row's log-softmax into k->rec and write it. */
static int kl_write_row(kl_state *k, const float *logits, int n_vocab, int32_t target, double lse) {
    float mx = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    float floor_lp = (float)((double)mx - lse - KL_RANGE);
    float scale = (float)(KL_RANGE / 65534.0);
    memcpy(k->rec, &target, 4);
    memcpy(k->rec + 4, &floor_lp, 4);
    memcpy(k->rec + 8, &scale, 4);
    uint16_t *q = (uint16_t *)(void *)(k->rec + 12);
    for (int i = 0; i < n_vocab; i++) {
        double lp = (double)logits[i] - lse;
        double u = (lp - (double)floor_lp) / (double)scale;
        q[i] = u < 0 ? 0 : (uint16_t)(1 + lrint(u > 65534.0 ? 65534.0 : u));
    }
    return fwrite(k->rec, k->rec_bytes, 1, k->f) == 1 ? 0 : -1;
}

/* Read the base row of the same target and accumulate the comparison. */
static int kl_compare_row(kl_state *k, const float *logits, int n_vocab, int32_t target, double lse,
                          int argmax) {
    if (fread(k->rec, k->rec_bytes, 1, k->f) != 1) return -1;
    int32_t btarget;
    float floor_lp, scale;
    memcpy(&btarget, k->rec, 4);
    memcpy(&floor_lp, k->rec + 4, 4);
    memcpy(&scale, k->rec + 8, 4);
    if (btarget != target) return -2;
    const uint16_t *q = (const uint16_t *)(const void *)(k->rec + 12);
    double kl = 0;
    int bmax = 0;
    for (int i = 0; i < n_vocab; i++) {
        if (q[i] > q[bmax]) bmax = i;
        if (q[i] == 0) continue;
        double lpb = (double)floor_lp + (double)scale * (q[i] - 1);
        kl += exp(lpb) * (lpb - ((double)logits[i] - lse));
    }
    double nll_base =
        q[target] ? -((double)floor_lp + (double)scale * (q[target] - 1)) : -(double)floor_lp;
    nll_add(&k->base, nll_base);
    k->kld += kl;
    k->kld2 += kl * kl;
    k->klds[k->n++] = (float)kl;
    k->same_top += bmax == argmax;
    k->base_hits += bmax == target;
    k->our_hits += argmax == target;
    return 0;
}

static int cmp_float(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

static void kl_report(kl_state *k, const nll_sum *ours) {
    int64_t n = k->n;
    double m, se, bm, bse;
    mean_se(ours->nll, ours->nll2, ours->count, &m, &se);
    mean_se(k->base.nll, k->base.nll2, k->base.count, &bm, &bse);
    printf("KL divergence over %lld tokens (base: the --kl-divergence file)\n", (long long)n);
    printf("  PPL(base)            %10.4f\n", exp(bm));
    printf("  PPL(this)            %10.4f\n", exp(m));
    printf("  ln(PPL/PPL(base))    %10.6f\n", m - bm);
    double km, kse;
    mean_se(k->kld, k->kld2, n, &km, &kse);
    printf("  Mean KLD             %10.6f +/- %.6f\n", km, kse);
    qsort(k->klds, (size_t)n, sizeof *k->klds, cmp_float);
    printf("  Median KLD           %10.6f\n", (double)k->klds[n / 2]);
    printf("  99%% KLD              %10.6f\n", (double)k->klds[(int64_t)(0.99 * (double)(n - 1))]);
    printf("  Maximum KLD          %10.6f\n", (double)k->klds[n - 1]);
    double p = (double)k->same_top / (double)n;
    double pse = n > 1 ? sqrt(p * (1 - p) / (double)(n - 1)) : 0;
    printf("  Same top token       %9.3f%% +/- %.3f%%\n", 100 * p, 100 * pse);
    printf("  Target is top (base) %9.3f%%\n", 100.0 * (double)k->base_hits / (double)n);
    printf("  Target is top (this) %9.3f%%\n", 100.0 * (double)k->our_hits / (double)n);
}

/* ---- evaluation ---- */

typedef struct {
    llm_model *m;
    backend *be;
    kv_cache *kv;
    int seq;
    int n_vocab, batch;
    int32_t *tokens, *positions, *slots, *logit_rows;
    float *logits;
    nll_sum sum;
    kl_state kl; /* f == NULL: no KL file */
    char err[512];
} ppl_ctx;

static int ctx_init(ppl_ctx *c, const ppl_args *a, app_runtime *rt) {
    const llm_hparams *hp = llm_model_hparams(rt->model);
    c->m = rt->model;
    c->be = rt->be;
    c->n_vocab = hp->n_vocab;
    c->batch = a->batch < a->ctx ? a->batch : a->ctx;
    c->seq = -1;
    int blocks = (a->ctx + PPL_BLOCK_SIZE - 1) / PPL_BLOCK_SIZE;
    if (kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, PPL_BLOCK_SIZE, blocks, a->kv,
                        &c->kv, c->err, sizeof c->err))
        return -1;
    size_t r = (size_t)c->batch;
    c->tokens = malloc(r * sizeof *c->tokens);
    c->positions = malloc(r * sizeof *c->positions);
    c->slots = malloc(r * sizeof *c->slots);
    c->logit_rows = malloc(r * sizeof *c->logit_rows);
    c->logits = malloc(r * (size_t)c->n_vocab * sizeof *c->logits);
    if (!c->tokens || !c->positions || !c->slots || !c->logit_rows || !c->logits) {
        snprintf(c->err, sizeof c->err, "out of memory");
        return -1;
    }
    return 0;
}

static void ctx_free(ppl_ctx *c) {
    kv_cache_free(c->kv);
    free(c->tokens);
    free(c->positions);
    free(c->slots);
    free(c->logit_rows);
    free(c->logits);
    kl_close(&c->kl);
}

/* Score one logits row predicting target. */
static int score_row(ppl_ctx *c, const float *row, int32_t target) {
    double lse;
    int argmax;
    double nll = row_nll(row, c->n_vocab, target, &lse, &argmax);
    nll_add(&c->sum, nll);
    if (!c->kl.f) return 0;
    if (c->kl.writing) {
        if (kl_write_row(&c->kl, row, c->n_vocab, target, lse) == 0) return 0;
        snprintf(c->err, sizeof c->err, "cannot write the --kl-divergence-base file");
        return -1;
    }
    int rc = kl_compare_row(&c->kl, row, c->n_vocab, target, lse, argmax);
    if (rc == 0) return 0;
    snprintf(c->err, sizeof c->err,
             rc == -2 ? "the --kl-divergence file scores other tokens (another text or model?)"
                      : "the --kl-divergence file ends early");
    return -1;
}

/* Evaluate one window (win[0] already BOS where the model adds one) from an
 * empty cache, in forward calls of at most c->batch rows, scoring the
 * logits of positions lo .. n-2. */
static int eval_window(ppl_ctx *c, const int32_t *win, int n, int lo) {
    kv_seq_free(c->kv, c->seq);
    c->seq = kv_seq_new(c->kv);
    if (c->seq < 0 || kv_seq_reserve(c->kv, c->seq, n) != 0) {
        snprintf(c->err, sizeof c->err, "KV cache: cannot reserve %d tokens", n);
        return -1;
    }
    const int32_t *table = kv_seq_block_table(c->kv, c->seq);
    for (int start = 0; start < n; start += c->batch) {
        int rows = n - start < c->batch ? n - start : c->batch;
        int n_logits = 0;
        for (int i = 0; i < rows; i++) {
            int pos = start + i;
            c->tokens[i] = win[pos];
            c->positions[i] = pos;
            c->slots[i] = kv_seq_slot(c->kv, c->seq, pos);
            if (pos >= lo && pos <= n - 2) c->logit_rows[n_logits++] = i;
        }
        int32_t seq_start[2] = {0, rows}, ctx_len = start + rows;
        llm_batch b = {rows,     c->tokens, c->positions, c->slots,      1,   seq_start,
                       &ctx_len, &table,    n_logits,     c->logit_rows, NULL};
        char ferr[256];
        if (llm_forward(c->m, c->be, c->kv, &b, c->logits, ferr, sizeof ferr) != 0) {
            snprintf(c->err, sizeof c->err, "forward pass failed: %s", ferr);
            return -1;
        }
        for (int j = 0; j < n_logits; j++) {
            int pos = start + c->logit_rows[j];
            if (score_row(c, c->logits + (size_t)j * (size_t)c->n_vocab, win[pos + 1])) return -1;
        }
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One line, rewritten in place; erased after the last window. */
static void progress(int done, int total, double elapsed, double ppl) {
    double eta = done > 0 ? elapsed / done * (total - done) : 0;
    fprintf(stderr, "\r\033[K%s: %d/%d %s, PPL so far %.4f, %.1f s elapsed, ETA %.1f s", PROG, done,
            total, total == 1 ? "window" : "windows", ppl, elapsed, eta);
    if (done == total) fputs("\r\033[K", stderr);
    fflush(stderr);
}

/* Every window of the plan; prints the running estimates, as each window
 * ends, or, when stdout and the progress line share a terminal, at the end
 * (the progress line shows the running figure meanwhile). */
static int run_windows(ppl_ctx *c, const ppl_plan *p, const int32_t *toks, int32_t bos) {
    int32_t *win = malloc((size_t)p->ctx * sizeof *win);
    double *est = malloc((size_t)p->n_windows * sizeof *est);
    if (!win || !est) {
        free(win);
        free(est);
        snprintf(c->err, sizeof c->err, "out of memory");
        return -1;
    }
    int tty = isatty(STDERR_FILENO), live = !(tty && isatty(STDOUT_FILENO)), rc = 0;
    double t0 = now_s();
    for (int w = 0; w < p->n_windows && rc == 0; w++) {
        memcpy(win, toks + plan_start(p, w), (size_t)p->ctx * sizeof *win);
        if (bos >= 0) win[0] = bos;
        rc = eval_window(c, win, p->ctx, plan_lo(p, w));
        if (rc) break;
        est[w] = exp(c->sum.nll / (double)c->sum.count);
        if (tty) progress(w + 1, p->n_windows, now_s() - t0, est[w]);
        if (live) printf("[%d]%.4f,", w + 1, est[w]);
        fflush(stdout);
    }
    if (rc == 0 && !live)
        for (int w = 0; w < p->n_windows; w++) printf("[%d]%.4f,", w + 1, est[w]);
    if (rc == 0) printf("\n");
    free(win);
    free(est);
    return rc;
}

static void print_final(const nll_sum *s) {
    double m, se;
    mean_se(s->nll, s->nll2, s->count, &m, &se);
    double ppl = exp(m);
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, se * ppl);
}

/* ---- input ---- */

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Tokenize the file as llama-perplexity does (add_special, no special parsing). */
static int tokenize_file(const char *path, const llm_tokenizer *tok, int32_t **ids) {
    size_t len = 0;
    char *text = read_text(path, &len);
    if (!text) {
        fprintf(stderr, "%s: cannot read the text file '%s'\n", PROG, path);
        return -1;
    }
    int n = tok_encode(tok, text, len, 1, 0, ids);
    free(text);
    if (n < 0) fprintf(stderr, "%s: cannot tokenize '%s' (error %d)\n", PROG, path, n);
    return n;
}

static int open_kl(ppl_ctx *c, const ppl_args *a, const ppl_plan *p) {
    const char *path = a->kl_base_out ? a->kl_base_out : a->kl_base_in;
    if (!path) return 0;
    kl_header h = {c->n_vocab, p->ctx, p->stride, p->n_windows};
    return kl_open(&c->kl, path, a->kl_base_out != NULL, &h, plan_scored(p), c->err, sizeof c->err);
}

static int run(const ppl_args *a, app_runtime *rt) {
    int32_t *toks = NULL;
    int n_tok = tokenize_file(a->file, rt->tok, &toks);
    if (n_tok < 0) return 1;
    ppl_plan p = {a->ctx, a->stride, 0};
    ppl_ctx c = {0};
    int rc = 1;
    if (plan_make(&p, n_tok, a->chunks, c.err, sizeof c.err) || ctx_init(&c, a, rt) ||
        open_kl(&c, a, &p))
        goto out;
    const llm_hparams *hp = llm_model_hparams(rt->model);
    if (a->ctx > hp->n_ctx_train)
        fprintf(stderr, "%s: note: --ctx %d is beyond the model's training context of %d\n", PROG,
                a->ctx, hp->n_ctx_train);
    int32_t bos = tok_add_bos(rt->tok) ? tok_bos(rt->tok) : -1;
    fprintf(stderr,
            "%s: %d tokens; %d %s of %d tokens%s; %lld tokens scored; batch %d, kv %s, %s "
            "numerics, %d threads\n",
            PROG, n_tok, p.n_windows, p.stride ? "windows" : "chunks", p.ctx,
            p.stride ? " (sliding)" : "", (long long)plan_scored(&p), c.batch,
            a->kv == KV_F16 ? "f16" : "f32", be_numerics_name(a->numerics), rt->be->n_threads);
    if (run_windows(&c, &p, toks, bos)) goto out;
    print_final(&c.sum);
    if (c.kl.f && !c.kl.writing) kl_report(&c.kl, &c.sum);
    if (c.kl.f && c.kl.writing && fflush(c.kl.f) != 0) {
        snprintf(c.err, sizeof c.err, "cannot write the --kl-divergence-base file");
        goto out;
    }
    rc = 0;
out:
    if (rc) fprintf(stderr, "%s: %s\n", PROG, c.err);
    ctx_free(&c);
    free(toks);
    return rc;
}

int main(int argc, char **argv) {
    char model[4096];
    app_default_model(NULL, model, sizeof model);
    ppl_args a = {0};
    a.model = model;
    a.ctx = 512;
    a.batch = 512;
    a.kv = KV_F16;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (access(a.file, R_OK) != 0) {
        fprintf(stderr, "%s: cannot read the text file '%s'\n", PROG, a.file);
        return 1;
    }
    app_open_opts oo = {a.model, a.threads, a.numerics, 1, NULL, NULL, NULL};
    app_runtime rt;
    rc = app_open(PROG, &oo, &rt);
    if (rc < 0) rc = run(&a, &rt);
    app_close(&rt);
    return rc;
}
