/*
 * test_model_tiny.c - the model loader and the forward pass (core/model.c
 * over the CPU backend and the KV store) on tiny random Llama models built
 * by tests/common/tiny_model, so it runs without the real model file.
 *
 *  - llm_forward's logits match a naive double-precision forward written
 *    here (RMSNorm, interleaved-pair RoPE, GQA causal attention, SwiGLU),
 *    within the error of the engine's 8-bit activations and f16 KV cache,
 *    for quantized (Q8_0, Q4_1/Q4_0) and float (F16/F32) weights, tied and
 *    separate output matrices, f16 and f32 caches, prefill and decode.
 *  - Batching does not change results: three sequences in one flattened
 *    batch, with scattered physical blocks, give bit-identical logits to each
 *    sequence run alone; a prompt prefilled in chunks gives bit-identical
 *    logits to one prefill (multi-row steps on both sides: a one-row step is
 *    the decode shape, with different arithmetic by design); thread count
 *    and kernel family (scalar vs SIMD) do not change a bit.
 *  - llm_forward and llm_model_load reject bad input with a message that
 *    names the problem (TINY_VERBOSE=1 prints the load-error messages).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend/backend.h"
#include "core/gguf.h"
#include "core/kv_cache.h"
#include "core/model.h"
#include "core/quant.h"
#include "tests/common/test_util.h"
#include "tests/common/tiny_model.h"

static uint64_t rng_state = 0x853c49e6748fea9bull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---------------- loading ---------------- */
static int load_spec(const tiny_spec *s, size_t keep_bytes, llm_model **m, char *err,
                     size_t errlen) {
    char path[512];
    *m = NULL;
    if (tiny_model_write_temp(s, keep_bytes, path, sizeof path)) {
        snprintf(err, errlen, "cannot write a temporary model file");
        return -2;
    }
    int rc = llm_model_load(path, m, NULL, NULL, err, errlen);
    unlink(path); /* the mapping stays valid */
    return rc;
}

/* ---------------- double-precision reference forward ---------------- */
typedef struct {
    double *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *wg, *wu, *wd;
} ref_layer;

typedef struct {
    int V, E, F, L, H, HKV, HD, QD, KD;
    double theta, eps;
    double *embd, *out_norm, *out;
    ref_layer *layers;
} ref_model;

/* Dequantize a tensor of the loaded file into doubles [rows][n_in]. */
static double *ref_tensor(const gguf_file *f, const char *name, int64_t n_in, int64_t rows) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) return NULL;
    size_t rb = quant_row_bytes(t->type, n_in);
    double *out = malloc((size_t)(n_in * rows) * sizeof *out);
    float *tmp = malloc((size_t)n_in * sizeof *tmp);
    for (int64_t r = 0; r < rows; r++) {
        quant_dequant_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, tmp, n_in);
        for (int64_t i = 0; i < n_in; i++) out[r * n_in + i] = tmp[i];
    }
    free(tmp);
    return out;
}

static void ref_load(ref_model *R, const llm_model *m, const tiny_spec *s) {
    const gguf_file *f = llm_model_gguf(m);
    memset(R, 0, sizeof *R);
    R->V = s->n_vocab;
    R->E = s->n_embd;
    R->F = s->n_ff;
    R->L = s->n_layer;
    R->H = s->n_head;
    R->HKV = s->n_head_kv;
    R->HD = s->head_dim;
    R->QD = R->H * R->HD;
    R->KD = R->HKV * R->HD;
    R->theta = s->rope_theta;
    R->eps = s->rms_eps;
    R->embd = ref_tensor(f, "token_embd.weight", R->E, R->V);
    R->out_norm = ref_tensor(f, "output_norm.weight", R->E, 1);
    R->out = s->tied ? NULL : ref_tensor(f, "output.weight", R->E, R->V);
    R->layers = calloc((size_t)R->L, sizeof *R->layers);
    for (int l = 0; l < R->L; l++) {
        ref_layer *Y = &R->layers[l];
        char n[96];
#define G(field, nm, nin, rows)                                                                    \
    snprintf(n, sizeof n, "blk.%d." nm ".weight", l);                                              \
    Y->field = ref_tensor(f, n, nin, rows);
        G(attn_norm, "attn_norm", R->E, 1)
        G(ffn_norm, "ffn_norm", R->E, 1)
        G(wq, "attn_q", R->E, R->QD)
        G(wk, "attn_k", R->E, R->KD)
        G(wv, "attn_v", R->E, R->KD)
        G(wo, "attn_output", R->QD, R->E)
        G(wg, "ffn_gate", R->E, R->F)
        G(wu, "ffn_up", R->E, R->F)
        G(wd, "ffn_down", R->F, R->E)
#undef G
    }
}

static void ref_free(ref_model *R) {
    free(R->embd);
    free(R->out_norm);
    free(R->out);
    for (int l = 0; l < R->L; l++) {
        ref_layer *Y = &R->layers[l];
        double *p[] = {Y->attn_norm, Y->ffn_norm, Y->wq, Y->wk, Y->wv, Y->wo, Y->wg, Y->wu, Y->wd};
        for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
    }
    free(R->layers);
}

static void mat_vec(const double *W, const double *x, int n_in, int n_out, double *y) {
    for (int o = 0; o < n_out; o++) {
        double acc = 0;
        for (int i = 0; i < n_in; i++) acc += W[(size_t)o * n_in + i] * x[i];
        y[o] = acc;
    }
}

static void rms_norm(const double *x, const double *g, int n, double eps, double *y) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * sc * g[i];
}

/* Llama GGUF rope: adjacent pairs (2i, 2i+1) of each head rotated by
 * pos * theta^(-2i / head_dim). */
static void rope(double *x, int n_heads, int hd, int pos, double theta) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double a = pos * pow(theta, -2.0 * i / hd), c = cos(a), s = sin(a);
            double *v = x + h * hd + 2 * i, x0 = v[0], x1 = v[1];
            v[0] = x0 * c - x1 * s;
            v[1] = x0 * s + x1 * c;
        }
}

/* Logits [T][V] of a sequence of T tokens at positions 0..T-1. */
static void ref_forward(const ref_model *R, const int32_t *tok, int T, double *logits) {
    const int E = R->E, QD = R->QD, KD = R->KD, HD = R->HD, F = R->F;
    double *K = calloc((size_t)R->L * T * KD, sizeof *K),
           *Vc = calloc((size_t)R->L * T * KD, sizeof *Vc);
    double *x = malloc(E * sizeof *x), *h = malloc(E * sizeof *h), *q = malloc(QD * sizeof *q);
    double *att = malloc(QD * sizeof *att), *o = malloc(E * sizeof *o), *g = malloc(F * sizeof *g),
           *u = malloc(F * sizeof *u), *sc = malloc(T * sizeof *sc);
    for (int t = 0; t < T; t++) {
        memcpy(x, R->embd + (size_t)tok[t] * E, E * sizeof *x);
        for (int l = 0; l < R->L; l++) {
            const ref_layer *Y = &R->layers[l];
            double *kt = K + ((size_t)l * T + t) * KD, *vt = Vc + ((size_t)l * T + t) * KD;
            rms_norm(x, Y->attn_norm, E, R->eps, h);
            mat_vec(Y->wq, h, E, QD, q);
            mat_vec(Y->wk, h, E, KD, kt);
            mat_vec(Y->wv, h, E, KD, vt);
            rope(q, R->H, HD, t, R->theta);
            rope(kt, R->HKV, HD, t, R->theta);
            for (int hh = 0; hh < R->H; hh++) {
                int kvh = hh / (R->H / R->HKV);
                double mx = -INFINITY, sum = 0;
                for (int p = 0; p <= t; p++) {
                    const double *kp = K + ((size_t)l * T + p) * KD + kvh * HD;
                    double d = 0;
                    for (int i = 0; i < HD; i++) d += q[hh * HD + i] * kp[i];
                    sc[p] = d / sqrt((double)HD);
                    if (sc[p] > mx) mx = sc[p];
                }
                for (int p = 0; p <= t; p++) sum += (sc[p] = exp(sc[p] - mx));
                for (int i = 0; i < HD; i++) {
                    double acc = 0;
                    for (int p = 0; p <= t; p++)
                        acc += sc[p] / sum * Vc[((size_t)l * T + p) * KD + kvh * HD + i];
                    att[hh * HD + i] = acc;
                }
            }
            mat_vec(Y->wo, att, QD, E, o);
            for (int i = 0; i < E; i++) x[i] += o[i];
            rms_norm(x, Y->ffn_norm, E, R->eps, h);
            mat_vec(Y->wg, h, E, F, g);
            mat_vec(Y->wu, h, E, F, u);
            for (int i = 0; i < F; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            mat_vec(Y->wd, g, F, E, o);
            for (int i = 0; i < E; i++) x[i] += o[i];
        }
        rms_norm(x, R->out_norm, E, R->eps, h);
        mat_vec(R->out ? R->out : R->embd, h, E, R->V, logits + (size_t)t * R->V);
    }
    free(K);
    free(Vc);
    free(x);
    free(h);
    free(q);
    free(att);
    free(o);
    free(g);
    free(u);
    free(sc);
}

/* ---------------- running the engine ---------------- */

/* One sequence's part of a step: rows for positions start .. start + n - 1
 * of `tokens`, K/V slots from `table` (physical block ids). */
typedef struct {
    const int32_t *tokens;
    int start, n;
    const int32_t *table;
} seq_step;

/* Run one flattened step; logits of every row go to `logits` [rows][V]. */
static int run_step(llm_model *m, backend *be, kv_cache *kv, const seq_step *ss, int n_seqs,
                    float *logits, char *err, size_t errlen) {
    int T = 0;
    for (int s = 0; s < n_seqs; s++) T += ss[s].n;
    int32_t *tok = malloc(T * sizeof *tok), *pos = malloc(T * sizeof *pos),
            *slot = malloc(T * sizeof *slot), *rows = malloc(T * sizeof *rows),
            *start = malloc((n_seqs + 1) * sizeof *start), *ctx = malloc(n_seqs * sizeof *ctx);
    const int32_t **tables = malloc(n_seqs * sizeof *tables);
    int r = 0;
    for (int s = 0; s < n_seqs; s++) {
        start[s] = r;
        ctx[s] = ss[s].start + ss[s].n;
        tables[s] = ss[s].table;
        for (int i = 0; i < ss[s].n; i++, r++) {
            int p = ss[s].start + i;
            tok[r] = ss[s].tokens[p];
            pos[r] = p;
            slot[r] = ss[s].table[p / kv->block_size] * kv->block_size + p % kv->block_size;
            rows[r] = r;
        }
    }
    start[n_seqs] = T;
    llm_batch b = {.n_tokens = T,
                   .token_ids = tok,
                   .positions = pos,
                   .slot_mapping = slot,
                   .n_seqs = n_seqs,
                   .seq_start = start,
                   .context_len = ctx,
                   .block_tables = (const int32_t *const *)tables,
                   .n_logits = T,
                   .logit_rows = rows};
    int rc = llm_forward(m, be, kv, &b, logits, err, errlen);
    free(tok);
    free(pos);
    free(slot);
    free(rows);
    free(start);
    free(ctx);
    free(tables);
    return rc;
}

static const int32_t CONTIG[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static kv_cache *new_kv(const llm_hparams *hp, kv_dtype dt) {
    kv_cache *kv;
    char err[256];
    if (kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, 4, 48, dt, &kv, err,
                        sizeof err)) {
        fprintf(stderr, "kv_cache_create: %s\n", err);
        exit(1);
    }
    return kv;
}

static backend *new_backend(int n_threads) {
    char err[256];
    backend *be = backend_cpu_create(n_threads, err, sizeof err);
    if (!be) {
        fprintf(stderr, "backend_cpu_create: %s\n", err);
        exit(1);
    }
    return be;
}

static int bits_equal(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* ---------------- accuracy vs the reference ---------------- */

/* Per row, the error relative to the spread of the reference logits:
 * max_i |l_i - r_i| / rms(r), and the RMS of l - r over rms(r). */
typedef struct {
    double max_err, sum_sq_err;
    int rows, argmax_same, argmax_clear, argmax_clear_same;
} cmp_stats;

static void compare_rows(const float *got, const double *want, int rows, int V, double tol,
                         cmp_stats *st) {
    for (int r = 0; r < rows; r++) {
        const float *g = got + (size_t)r * V;
        const double *w = want + (size_t)r * V;
        double ss = 0, e = 0, se = 0;
        int ag = 0, aw = 0, aw2 = -1;
        for (int i = 0; i < V; i++) {
            ss += w[i] * w[i];
            if (g[i] > g[ag]) ag = i;
            if (w[i] > w[aw]) aw = i;
        }
        for (int i = 0; i < V; i++)
            if (i != aw && (aw2 < 0 || w[i] > w[aw2])) aw2 = i;
        double rms = sqrt(ss / V);
        for (int i = 0; i < V; i++) {
            double d = fabs(g[i] - w[i]) / rms;
            if (!(d <= e)) e = d; /* NaN propagates */
            se += d * d;
        }
        if (!(e <= st->max_err)) st->max_err = e;
        st->sum_sq_err += se / V;
        st->rows++;
        st->argmax_same += ag == aw;
        /* a clear winner (margin above twice the tolerated error) must win */
        if (w[aw] - w[aw2] > 2 * tol * rms) {
            st->argmax_clear++;
            st->argmax_clear_same += ag == aw;
        }
    }
}

typedef struct {
    const char *name;
    tiny_spec spec;
    /* allowed error vs the double-precision reference, as max |l - r| / rms(r)
     * per row and as the RMS over all rows, with an f16 and an f32 KV cache */
    double max_f16kv, rms_f16kv, max_f32kv, rms_f32kv;
} variant;

static void test_accuracy(const variant *vt, int32_t *prompt, int T) {
    char err[512];
    llm_model *m;
    if (load_spec(&vt->spec, 0, &m, err, sizeof err)) {
        CHECKF(0, "%s: load failed: %s", vt->name, err);
        return;
    }
    const llm_hparams *hp = llm_model_hparams(m);
    CHECKF(hp->n_vocab == vt->spec.n_vocab && hp->n_embd == 64 && hp->n_layer == 2 &&
               hp->n_head == 4 && hp->n_head_kv == 2 && hp->head_dim == 16 && hp->n_ff == 96 &&
               hp->rope_dim == 16 && hp->rope_theta == 10000.0f && hp->rms_eps == 1e-5f &&
               hp->n_ctx_train == 256 && hp->tied_embeddings == vt->spec.tied &&
               strcmp(hp->arch, "llama") == 0 && strcmp(hp->name, "tiny-test-model") == 0,
           "%s: hyperparameters read wrongly", vt->name);
    ref_model R;
    ref_load(&R, m, &vt->spec);
    const int V = R.V;
    double *want = malloc((size_t)T * V * sizeof *want);
    ref_forward(&R, prompt, T, want);
    float *got = malloc((size_t)T * V * sizeof *got);
    backend *be = new_backend(2);
    for (int kvt = 0; kvt < 2; kvt++) {
        kv_dtype dt = kvt ? KV_F32 : KV_F16;
        const char *kvn = kvt ? "f32" : "f16";
        double tmax = kvt ? vt->max_f32kv : vt->max_f16kv,
               trms = kvt ? vt->rms_f32kv : vt->rms_f16kv;
        cmp_stats pre = {0}, dec = {0};
        /* (1) one prefill of all T rows */
        kv_cache *kv = new_kv(hp, dt);
        seq_step st = {prompt, 0, T, CONTIG};
        if (run_step(m, be, kv, &st, 1, got, err, sizeof err))
            CHECKF(0, "%s: forward failed: %s", vt->name, err);
        compare_rows(got, want, T, V, tmax, &pre);
        kv_cache_free(kv);
        /* (2) prefill of P rows, then one-row decode steps */
        const int P = T / 2;
        kv = new_kv(hp, dt);
        seq_step p0 = {prompt, 0, P, CONTIG};
        if (run_step(m, be, kv, &p0, 1, got, err, sizeof err))
            CHECKF(0, "%s: prefill failed: %s", vt->name, err);
        for (int p = P; p < T; p++) {
            seq_step d1 = {prompt, p, 1, CONTIG};
            if (run_step(m, be, kv, &d1, 1, got, err, sizeof err))
                CHECKF(0, "%s: decode failed: %s", vt->name, err);
            compare_rows(got, want + (size_t)p * V, 1, V, tmax, &dec);
        }
        kv_cache_free(kv);
        double rp = sqrt(pre.sum_sq_err / pre.rows), rd = sqrt(dec.sum_sq_err / dec.rows);
        printf("%-22s %s KV: prefill max %.2e rms %.2e, decode max %.2e rms %.2e (tol %.0e, %.0e); "
               "argmax %d/%d, %d/%d\n",
               vt->name, kvn, pre.max_err, rp, dec.max_err, rd, tmax, trms, pre.argmax_same,
               pre.rows, dec.argmax_same, dec.rows);
        CHECKF(pre.max_err <= tmax && rp <= trms,
               "%s, %s KV: prefill logits off the reference (max %.3g, rms %.3g)", vt->name, kvn,
               pre.max_err, rp);
        CHECKF(dec.max_err <= tmax && rd <= trms,
               "%s, %s KV: decode logits off the reference (max %.3g, rms %.3g)", vt->name, kvn,
               dec.max_err, rd);
        CHECKF(pre.argmax_clear_same == pre.argmax_clear &&
                   dec.argmax_clear_same == dec.argmax_clear,
               "%s, %s KV: a clear top-1 token differs from the reference", vt->name, kvn);
        CHECKF(pre.argmax_same * 10 >= pre.rows * 8 && dec.argmax_same * 10 >= dec.rows * 8,
               "%s, %s KV: argmax agrees on only %d/%d and %d/%d rows", vt->name, kvn,
               pre.argmax_same, pre.rows, dec.argmax_same, dec.rows);
    }
    backend_free(be);
    free(got);
    free(want);
    ref_free(&R);
    llm_model_free(m);
}

/* ---------------- batching invariances ---------------- */

/* Three sequences in two steps:
 *   step 1: A rows 0-4, B rows 0-6, C rows 0-1   (all multi-row)
 *   step 2: A rows 5-7, B row 7 (decode shape), C rows 2-5
 * once in one cache with scattered blocks (one flattened batch per step),
 * once per sequence alone in a fresh cache with contiguous blocks. */
static void test_batch_invariance(llm_model *m, kv_dtype dt) {
    const llm_hparams *hp = llm_model_hparams(m);
    const int V = hp->n_vocab;
    int32_t toks[3][8];
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 8; i++) toks[s][i] = (int32_t)(rng_u64() % (uint64_t)V);
    static const int32_t TA[] = {9, 2}, TB[] = {5, 11}, TC[] = {7, 3}; /* block size 4 */
    const int32_t *tables[3] = {TA, TB, TC};
    const int split[3][2] = {{5, 3}, {7, 1}, {2, 4}};
    char err[512];
    backend *be = new_backend(2);

    float *batched[2], *alone[2];
    int rows[2] = {0, 0};
    for (int st = 0; st < 2; st++)
        for (int s = 0; s < 3; s++) rows[st] += split[s][st];
    for (int st = 0; st < 2; st++) {
        batched[st] = malloc((size_t)rows[st] * V * sizeof(float));
        alone[st] = malloc((size_t)rows[st] * V * sizeof(float));
    }
    kv_cache *kv = new_kv(hp, dt);
    for (int st = 0; st < 2; st++) {
        seq_step ss[3];
        for (int s = 0; s < 3; s++)
            ss[s] = (seq_step){toks[s], st ? split[s][0] : 0, split[s][st], tables[s]};
        if (run_step(m, be, kv, ss, 3, batched[st], err, sizeof err))
            CHECKF(0, "batched step %d: %s", st, err);
    }
    kv_cache_free(kv);
    for (int s = 0; s < 3; s++) {
        kv = new_kv(hp, dt);
        for (int st = 0; st < 2; st++) {
            int off = 0;
            for (int s2 = 0; s2 < s; s2++) off += split[s2][st];
            seq_step ss = {toks[s], st ? split[s][0] : 0, split[s][st], CONTIG};
            if (run_step(m, be, kv, &ss, 1, alone[st] + (size_t)off * V, err, sizeof err))
                CHECKF(0, "alone seq %d step %d: %s", s, st, err);
        }
        kv_cache_free(kv);
    }
    for (int st = 0; st < 2; st++) {
        int off = 0;
        for (int s = 0; s < 3; s++) {
            CHECKF(bits_equal(batched[st] + (size_t)off * V, alone[st] + (size_t)off * V,
                              (size_t)split[s][st] * V),
                   "%s KV, step %d, sequence %d: batched logits differ from the sequence alone",
                   dt == KV_F16 ? "f16" : "f32", st + 1, s);
            off += split[s][st];
        }
    }
    for (int st = 0; st < 2; st++) {
        free(batched[st]);
        free(alone[st]);
    }
    backend_free(be);
}

/* One 13-row prefill vs chunks of 5 + 4 + 4 rows (and 6 + 7 in scattered
 * blocks): the logits of every row are bit-identical. */
static void test_chunked_prefill(llm_model *m, kv_dtype dt) {
    const llm_hparams *hp = llm_model_hparams(m);
    const int V = hp->n_vocab, T = 13;
    int32_t tok[13];
    for (int i = 0; i < T; i++) tok[i] = (int32_t)(rng_u64() % (uint64_t)V);
    float *one = malloc((size_t)T * V * sizeof *one),
          *chunked = malloc((size_t)T * V * sizeof *chunked);
    char err[512];
    backend *be = new_backend(2);
    kv_cache *kv = new_kv(hp, dt);
    seq_step all = {tok, 0, T, CONTIG};
    if (run_step(m, be, kv, &all, 1, one, err, sizeof err)) CHECKF(0, "prefill: %s", err);
    kv_cache_free(kv);
    static const int32_t SCAT[] = {30, 4, 17, 22};
    const int chunkings[2][4] = {{5, 4, 4, 0}, {6, 7, 0, 0}};
    for (int c = 0; c < 2; c++) {
        kv = new_kv(hp, dt);
        int p = 0;
        for (int i = 0; i < 4 && chunkings[c][i]; i++) {
            seq_step st = {tok, p, chunkings[c][i], c ? SCAT : CONTIG};
            if (run_step(m, be, kv, &st, 1, chunked + (size_t)p * V, err, sizeof err))
                CHECKF(0, "chunk: %s", err);
            p += chunkings[c][i];
        }
        kv_cache_free(kv);
        CHECKF(bits_equal(one, chunked, (size_t)T * V),
               "%s KV: chunked prefill (%s) differs from one prefill", dt == KV_F16 ? "f16" : "f32",
               c ? "6+7, scattered blocks" : "5+4+4");
    }
    free(one);
    free(chunked);
    backend_free(be);
}

/* Thread count and kernel family do not change a bit (the SIMD kernels are
 * bit-identical to the scalar ones by contract). */
static void test_backend_invariance(llm_model *m) {
    const llm_hparams *hp = llm_model_hparams(m);
    const int V = hp->n_vocab, T = 11;
    int32_t tok[11];
    for (int i = 0; i < T; i++) tok[i] = (int32_t)(rng_u64() % (uint64_t)V);
    char err[512];
    float *ref = malloc((size_t)(T + 1) * V * sizeof *ref),
          *got = malloc((size_t)(T + 1) * V * sizeof *got);
    /* prefill T - 1 rows, then a decode row: both shapes */
    const char *old = getenv("ENGINE_ISA");
    char saved[64] = "";
    if (old) snprintf(saved, sizeof saved, "%s", old);
    for (int cfg = 0; cfg < 4; cfg++) {
        int threads = cfg == 1 ? 1 : cfg == 2 ? 3 : 2;
        if (cfg == 3) setenv("ENGINE_ISA", "scalar", 1);
        backend *be = new_backend(threads);
        if (cfg == 3) {
            CHECK(strcmp(backend_cpu_isa(be), "scalar") == 0);
            if (old) setenv("ENGINE_ISA", saved, 1);
            else unsetenv("ENGINE_ISA");
        }
        float *out = cfg == 0 ? ref : got;
        kv_cache *kv = new_kv(hp, KV_F16);
        seq_step pre = {tok, 0, T - 1, CONTIG}, dec = {tok, T - 1, 1, CONTIG};
        if (run_step(m, be, kv, &pre, 1, out, err, sizeof err) ||
            run_step(m, be, kv, &dec, 1, out + (size_t)(T - 1) * V, err, sizeof err))
            CHECKF(0, "forward: %s", err);
        kv_cache_free(kv);
        if (cfg > 0)
            CHECKF(bits_equal(ref, got, (size_t)T * V), "logits change with %s",
                   cfg == 3   ? "the scalar kernels"
                   : cfg == 1 ? "1 thread"
                              : "3 threads");
        if (cfg == 0) printf("default kernels: %s\n", backend_cpu_isa(be));
        backend_free(be);
    }
    free(ref);
    free(got);
}

/* ---------------- llm_forward errors ---------------- */
typedef struct {
    int n_tokens, n_seqs;
    int32_t *tok, *pos, *slot, *start, *ctx, *rows;
    const int32_t **tables;
} heap_batch;

/* A valid batch of 2 sequences (3 + 2 rows) in exact-size heap arrays so an
 * over-read shows under ASan. */
static void hb_init(heap_batch *h) {
    h->n_tokens = 5;
    h->n_seqs = 2;
    h->tok = malloc(5 * sizeof(int32_t));
    h->pos = malloc(5 * sizeof(int32_t));
    h->slot = malloc(5 * sizeof(int32_t));
    h->rows = malloc(5 * sizeof(int32_t));
    h->start = malloc(3 * sizeof(int32_t));
    h->ctx = malloc(2 * sizeof(int32_t));
    h->tables = malloc(2 * sizeof(*h->tables));
    static const int32_t t0[] = {3}, t1[] = {8};
    const int32_t tok[] = {1, 2, 3, 4, 5}, pos[] = {0, 1, 2, 0, 1}, slot[] = {12, 13, 14, 32, 33};
    for (int i = 0; i < 5; i++) {
        h->tok[i] = tok[i];
        h->pos[i] = pos[i];
        h->slot[i] = slot[i];
        h->rows[i] = i;
    }
    h->start[0] = 0;
    h->start[1] = 3;
    h->start[2] = 5;
    h->ctx[0] = 3;
    h->ctx[1] = 2;
    h->tables[0] = t0;
    h->tables[1] = t1;
}
static void hb_free(heap_batch *h) {
    free(h->tok);
    free(h->pos);
    free(h->slot);
    free(h->rows);
    free(h->start);
    free(h->ctx);
    free(h->tables);
}
static llm_batch hb_batch(const heap_batch *h) {
    return (llm_batch){.n_tokens = h->n_tokens,
                       .token_ids = h->tok,
                       .positions = h->pos,
                       .slot_mapping = h->slot,
                       .n_seqs = h->n_seqs,
                       .seq_start = h->start,
                       .context_len = h->ctx,
                       .block_tables = (const int32_t *const *)h->tables,
                       .n_logits = h->n_tokens,
                       .logit_rows = h->rows};
}

static void expect_forward_error(llm_model *m, backend *be, kv_cache *kv, const heap_batch *h,
                                 const char *what, const char *needle) {
    char err[512] = "";
    float *logits = malloc((size_t)h->n_tokens * llm_model_hparams(m)->n_vocab * sizeof *logits);
    llm_batch b = hb_batch(h);
    int rc = llm_forward(m, be, kv, &b, logits, err, sizeof err);
    CHECKF(rc < 0, "%s: accepted", what);
    CHECKF(rc >= 0 || strstr(err, needle) != NULL, "%s: message '%s' does not mention '%s'", what,
           err, needle);
    free(logits);
}

static void test_forward_errors(llm_model *m) {
    const llm_hparams *hp = llm_model_hparams(m);
    const int V = hp->n_vocab;
    backend *be = new_backend(2);
    kv_cache *kv = new_kv(hp, KV_F16); /* 48 blocks of 4: 192 slots */
    heap_batch h;
    hb_init(&h);
    char err[512];
    float *good = malloc(5 * (size_t)V * sizeof *good),
          *again = malloc(5 * (size_t)V * sizeof *again);
    llm_batch b = hb_batch(&h);
    CHECKF(llm_forward(m, be, kv, &b, good, err, sizeof err) == 0, "valid batch rejected: %s", err);

    h.tok[2] = -1;
    expect_forward_error(m, be, kv, &h, "negative token id", "token id");
    h.tok[2] = V;
    expect_forward_error(m, be, kv, &h, "token id = n_vocab", "token id");
    h.tok[2] = 3;
    h.pos[4] = 2; /* context_len of sequence 1 is 2 */
    expect_forward_error(m, be, kv, &h, "position beyond the context", "position");
    h.pos[4] = -1;
    expect_forward_error(m, be, kv, &h, "negative position", "position");
    h.pos[4] = 1;
    h.slot[1] = 192;
    expect_forward_error(m, be, kv, &h, "slot past the pool", "slot");
    h.slot[1] = -1;
    expect_forward_error(m, be, kv, &h, "negative slot", "slot");
    h.slot[1] = 13;
    h.start[0] = 1;
    expect_forward_error(m, be, kv, &h, "seq_start[0] != 0", "seq_start");
    h.start[0] = 0;
    h.start[2] = 4;
    expect_forward_error(m, be, kv, &h, "seq_start[n_seqs] != n_tokens", "seq_start");
    h.start[2] = 5;
    h.start[1] = 0;
    expect_forward_error(m, be, kv, &h, "a sequence without rows", "no rows");
    h.start[1] = 3;
    h.ctx[0] = 0;
    expect_forward_error(m, be, kv, &h, "zero context", "context");
    h.ctx[0] = 3;
    h.rows[4] = 5;
    expect_forward_error(m, be, kv, &h, "logit row past the batch", "logit row");
    h.rows[4] = 4;
    h.n_tokens = 0;
    h.start[2] = 0;
    h.start[1] = 0;
    expect_forward_error(m, be, kv, &h, "empty batch", "empty");
    h.n_tokens = 5;
    h.start[1] = 3;
    h.start[2] = 5;
    /* a cache of another shape */
    kv_cache *kv2;
    CHECK(kv_cache_create(hp->n_layer + 1, hp->n_head_kv * hp->head_dim, 4, 8, KV_F16, &kv2, err,
                          sizeof err) == 0);
    {
        char e2[512] = "";
        llm_batch b2 = hb_batch(&h);
        int rc = llm_forward(m, be, kv2, &b2, again, e2, sizeof e2);
        CHECKF(rc < 0 && strstr(e2, "KV cache"), "a cache with another layer count: rc %d '%s'", rc,
               e2);
    }
    kv_cache_free(kv2);

    /* rejected batches leave the cache untouched: the valid batch again gives the same logits */
    b = hb_batch(&h);
    CHECKF(llm_forward(m, be, kv, &b, again, err, sizeof err) == 0, "valid batch rejected: %s",
           err);
    CHECK(bits_equal(good, again, 5 * (size_t)V));
    free(good);
    free(again);
    hb_free(&h);
    kv_cache_free(kv);
    backend_free(be);
}

/* Non-monotonic seq_start whose middle entry points past n_tokens: must be
 * rejected without reading positions[] past its end (run under ASan). */
static void test_forward_seq_start_overread(llm_model *m) {
    const llm_hparams *hp = llm_model_hparams(m);
    backend *be = new_backend(1);
    kv_cache *kv = new_kv(hp, KV_F16);
    heap_batch h;
    hb_init(&h);
    h.start[1] = 7; /* {0, 7, 5}: sequence 0 would span rows 0..6 of 5 */
    expect_forward_error(m, be, kv, &h, "seq_start entry past n_tokens", "seq");
    hb_free(&h);
    kv_cache_free(kv);
    backend_free(be);
}

/* ---------------- llm_model_load errors ---------------- */
static void expect_load_error(const tiny_spec *s, size_t keep, const char *what, const char *n1,
                              const char *n2) {
    char err[512] = "";
    llm_model *m;
    int rc = load_spec(s, keep, &m, err, sizeof err);
    if (getenv("TINY_VERBOSE")) /* show the messages */
        printf("%s: %s\n", what, err);
    CHECKF(rc == -1 || rc < 0, "%s: accepted", what);
    if (rc == 0) {
        llm_model_free(m);
        return;
    }
    CHECKF(m == NULL, "%s: model handle set on failure", what);
    CHECKF(strstr(err, n1) != NULL, "%s: message '%s' does not mention '%s'", what, err, n1);
    if (n2)
        CHECKF(strstr(err, n2) != NULL, "%s: message '%s' does not mention '%s'", what, err, n2);
}

static void test_load_errors(void) {
    tiny_spec s;
    tiny_spec_default(&s);
    s.omit_tensor = "blk.1.ffn_down.weight";
    expect_load_error(&s, 0, "missing tensor", "blk.1.ffn_down.weight", "missing");
    tiny_spec_default(&s);
    s.omit_tensor = "token_embd.weight";
    expect_load_error(&s, 0, "missing token_embd", "token_embd.weight", "missing");
    tiny_spec_default(&s);
    s.omit_tensor = "output_norm.weight";
    expect_load_error(&s, 0, "missing output_norm", "output_norm.weight", NULL);
    tiny_spec_default(&s);
    s.reshape_tensor = "blk.0.attn_k.weight";
    expect_load_error(&s, 0, "wrong shape", "blk.0.attn_k.weight", "shape");
    tiny_spec_default(&s);
    s.tied = 0;
    s.reshape_tensor = "output.weight";
    expect_load_error(&s, 0, "wrong output shape", "output.weight", NULL);
    tiny_spec_default(&s);
    s.reshape_tensor = "blk.1.ffn_norm.weight";
    expect_load_error(&s, 0, "wrong norm size", "blk.1.ffn_norm.weight", NULL);
    tiny_spec_default(&s);
    s.retype_tensor = "blk.0.attn_q.weight";
    s.retype = QT_I32;
    expect_load_error(&s, 0, "unsupported tensor type", "blk.0.attn_q.weight", "I32");
    tiny_spec_default(&s);
    s.arch = "mamba";
    expect_load_error(&s, 0, "wrong architecture", "mamba", "architecture");
    tiny_spec_default(&s);
    s.arch = NULL;
    expect_load_error(&s, 0, "no architecture", "general.architecture", NULL);
    tiny_spec_default(&s);
    s.omit_key = "llama.block_count";
    expect_load_error(&s, 0, "missing block_count", "llama.block_count", NULL);
    tiny_spec_default(&s);
    s.omit_key = "llama.embedding_length";
    expect_load_error(&s, 0, "missing embedding_length", "llama.embedding_length", NULL);
    /* head counts: KV heads not dividing the heads, zero KV heads, zero heads */
    tiny_spec_default(&s);
    s.n_head_kv = 3;
    expect_load_error(&s, 0, "kv heads not dividing heads", "head", NULL);
    tiny_spec_default(&s);
    s.n_head_kv = 0;
    expect_load_error(&s, 0, "zero kv heads", "head", NULL);
    tiny_spec_default(&s);
    s.n_head = 0;
    expect_load_error(&s, 0, "zero heads", "head", NULL);
    /* more heads than the embedding has room for: head_dim = 64/128 = 0 */
    tiny_spec_default(&s);
    s.n_head = 128;
    s.n_head_kv = 128;
    s.head_dim = 0;
    expect_load_error(&s, 0, "head_dim 0", "head", NULL);

    /* truncated files: header, metadata, tensor table, data */
    tiny_spec_default(&s);
    size_t full = tiny_model_size(&s);
    const size_t cuts[] = {3, 16, 40, 200, full / 3, full / 2, full - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "file cut to %zu of %zu bytes", cuts[i], full);
        char err[512] = "";
        llm_model *m;
        int rc = load_spec(&s, cuts[i], &m, err, sizeof err);
        if (getenv("TINY_VERBOSE")) printf("%s: %s\n", what, err);
        CHECKF(rc != 0 && m == NULL &&
                   (strstr(err, "truncated") || strstr(err, "past the end") ||
                    strstr(err, "impossible")),
               "%s: rc %d, message '%s'", what, rc, err);
        if (rc == 0) llm_model_free(m);
    }
    char err[512] = "";
    llm_model *m = (llm_model *)&err; /* must be reset to NULL */
    CHECKF(llm_model_load("/nonexistent/tiny.gguf", &m, NULL, NULL, err, sizeof err) != 0 &&
               m == NULL && strstr(err, "/nonexistent/tiny.gguf"),
           "missing file: '%s'", err);
}

static void progress_cb(float f, void *user) {
    float *last = user;
    if (f < last[0] || f < 0 || f > 1) last[1] = 1; /* not monotone / out of range */
    last[0] = f;
}

int main(void) {
    enum { T = 24 };
    int32_t prompt[T];
    for (int i = 0; i < T; i++) prompt[i] = (int32_t)(rng_u64() % 64);

    variant vs[3];
    tiny_spec_default(&vs[0].spec);
    vs[0].name = "Q8_0, tied embeddings";
    vs[0].max_f16kv = vs[0].max_f32kv = 0.2;
    vs[0].rms_f16kv = vs[0].rms_f32kv = 0.05;
    tiny_spec_default(&vs[1].spec);
    vs[1].name = "Q4_1 + Q4_0 output";
    vs[1].spec.attn_type = vs[1].spec.ffn_type = QT_Q4_1;
    vs[1].spec.output_type = QT_Q4_0;
    vs[1].spec.tied = 0;
    vs[1].spec.seed = 2;
    vs[1].max_f16kv = vs[1].max_f32kv = 0.2;
    vs[1].rms_f16kv = vs[1].rms_f32kv = 0.05;
    tiny_spec_default(&vs[2].spec);
    vs[2].name = "F16/F32 matrices";
    vs[2].spec.attn_type = QT_F16;
    vs[2].spec.ffn_type = QT_F32;
    vs[2].spec.embd_type = QT_F16;
    vs[2].spec.output_type = QT_F32;
    vs[2].spec.norm_type = QT_F16;
    vs[2].spec.tied = 0;
    vs[2].spec.seed = 3;
    vs[2].max_f16kv = 0.01;
    vs[2].rms_f16kv = 0.002;
    /* F16 matrices multiply activations rounded to f16, as ggml's do */
    vs[2].max_f32kv = 0.01;
    vs[2].rms_f32kv = 0.002;
    for (int i = 0; i < 3; i++) test_accuracy(&vs[i], prompt, T);

    char err[512];
    llm_model *m;
    if (load_spec(&vs[1].spec, 0, &m, err, sizeof err)) {
        CHECKF(0, "load: %s", err);
        return tu_finish("test_model_tiny");
    }
    test_batch_invariance(m, KV_F16);
    test_batch_invariance(m, KV_F32);
    test_chunked_prefill(m, KV_F16);
    test_chunked_prefill(m, KV_F32);
    test_backend_invariance(m);
    test_forward_errors(m);

    /* progress reaches 1 and never goes back */
    {
        char path[512];
        float prog[2] = {-1, 0};
        llm_model *m2;
        CHECK(tiny_model_write_temp(&vs[0].spec, 0, path, sizeof path) == 0);
        CHECK(llm_model_load(path, &m2, progress_cb, prog, err, sizeof err) == 0);
        unlink(path);
        CHECKF(prog[0] == 1.0f && prog[1] == 0, "progress ended at %g (bad %g)", prog[0], prog[1]);
        llm_model_free(m2);
    }
    test_load_errors();
    test_forward_seq_start_overread(m); /* last: an over-read aborts under ASan */
    llm_model_free(m);
    return tu_finish("test_model_tiny");
}
