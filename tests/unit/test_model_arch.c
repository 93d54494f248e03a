/*
 * test_model_arch.c - the architectures beyond Llama (qwen2, gemma3, gpt2,
 * gptneox, phi3; llama as the control) on tiny random models written by
 * tests/common/tiny_model, and the backend ops they added.
 *
 *  - Ops against straightforward double references: layernorm (with and
 *    without weight and bias), add_bias, gelu (plain and gated, as the
 *    contract in backend.h states, ggml's f16 rounding included), NeoX
 *    rope over partial rotary dims.
 *  - Each architecture's llm_forward logits match a naive double forward
 *    written here from llama.cpp's graphs (src/models/<arch>.cpp): norms,
 *    biases, fused QKV, per-head Q/K norms, sandwich norms, interleaved vs
 *    NeoX rope, partial rope, sliding-window layers with their own rope
 *    base, learned positions, parallel residual, GEGLU/GELU/SwiGLU, gated
 *    and fused up projections, the final logit softcap. F32 weights and an
 *    f32 cache keep the engine's error at float rounding, so a wrong layout
 *    (off by a pair order or a window) shows as errors of order 0.1. Every
 *    row of a prefill is checked, then decode steps (the one-row shape).
 *  - Loading names what an architecture lacks (a missing Q norm, a missing
 *    use_parallel_residual key, missing learned positions).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
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

static backend *BE;

/* ---------------- ops ---------------- */
static double f16r(double x) { return qt_f16_to_f32(qt_f32_to_f16((float)x)); }

static double gelu_ref(double x) {
    if (x <= -10) return 0;
    if (x >= 10) return x;
    double xh = f16r(x);
    return f16r(0.5 * xh * (1 + tanh(sqrt(2 / M_PI) * xh * (1 + 0.044715 * xh * xh))));
}

static void test_ops(void) {
    enum { R = 70, C = 48 }; /* 70 rows: past the pool split threshold */
    static float x[R * C], y[R * C], g[C], b[C], u[R * C];
    uint64_t st = 7;
    for (int i = 0; i < R * C; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(st >> 40) % 2000 - 1000) / 97.0f + (i % C == 3 ? 40.0f : 0.0f);
        u[i] = (float)((int)(st >> 20) % 200 - 100) / 50.0f;
    }
    for (int c = 0; c < C; c++) g[c] = 0.5f + c / 40.0f, b[c] = c / 10.0f - 2.0f;
    for (int variant = 0; variant < 3; variant++) {
        const float *gw = variant == 2 ? NULL : g, *bw = variant >= 1 ? NULL : b;
        BE->ops->layernorm(BE, x, gw, bw, R, C, 1e-5f, y);
        double worst = 0;
        for (int r = 0; r < R; r++) {
            double mean = 0, var = 0;
            for (int c = 0; c < C; c++) mean += x[r * C + c];
            mean /= C;
            for (int c = 0; c < C; c++) var += (x[r * C + c] - mean) * (x[r * C + c] - mean);
            var /= C;
            for (int c = 0; c < C; c++) {
                double want =
                    (x[r * C + c] - mean) / sqrt(var + 1e-5) * (gw ? gw[c] : 1) + (bw ? bw[c] : 0);
                worst = fmax(worst, fabs(want - y[r * C + c]));
            }
        }
        CHECKF(worst < 1e-5, "layernorm variant %d: max error %g", variant, worst);
    }
    memcpy(y, x, sizeof x);
    BE->ops->add_bias(BE, y, b, R, C);
    int bad = 0;
    for (int i = 0; i < R * C; i++) bad += y[i] != x[i] + b[i % C];
    CHECKF(bad == 0, "add_bias: %d wrong values", bad);
    for (int gated = 0; gated < 2; gated++) {
        BE->ops->gelu(BE, x, gated ? u : NULL, (size_t)R * C - 5, y);
        double worst = 0;
        for (int i = 0; i < R * C - 5; i++) {
            double want = gelu_ref(x[i]) * (gated ? u[i] : 1);
            worst = fmax(worst, fabs(want - y[i]) / (1 + fabs(want)));
        }
        CHECKF(worst < 1e-3, "gelu gated=%d: max relative error %g", gated, worst);
    }
}

static void test_rope_neox(void) {
    enum { R = 5, H = 3, HD = 16, RD = 8 };
    float x[R * H * HD], y[R * H * HD];
    int32_t pos[R] = {0, 1, 7, 100, 3};
    for (int i = 0; i < R * H * HD; i++) x[i] = sinf((float)i * 0.37f);
    for (int neox = 0; neox < 2; neox++) {
        memcpy(y, x, sizeof x);
        BE->ops->rope(BE, y, R, H, HD, RD, pos, 10000.0f, neox);
        double worst = 0;
        for (int r = 0; r < R; r++)
            for (int h = 0; h < H; h++) {
                const float *xs = x + (r * H + h) * HD, *ys = y + (r * H + h) * HD;
                double want[HD];
                for (int i = 0; i < HD; i++) want[i] = xs[i];
                for (int i = 0; i < RD / 2; i++) {
                    double a = pos[r] * pow(10000.0, -2.0 * i / RD);
                    int i0 = neox ? i : 2 * i, i1 = neox ? i + RD / 2 : 2 * i + 1;
                    want[i0] = xs[i0] * cos(a) - xs[i1] * sin(a);
                    want[i1] = xs[i0] * sin(a) + xs[i1] * cos(a);
                }
                for (int i = 0; i < HD; i++) worst = fmax(worst, fabs(want[i] - ys[i]));
            }
        CHECKF(worst < 1e-4, "rope neox=%d partial: max error %g", neox, worst);
    }
}

/* ---------------- double reference forward ---------------- */
typedef struct {
    int V, E, F, L, H, HKV, HD, QD, KD, RD, layer_norm, neox, rope, gelu, gated, par, qk_norm;
    int window, pattern, pos_embd;
    double theta, eps, softcap, embd_scale;
    const gguf_file *f;
} ref_cfg;

/* name's data as doubles ([rows][n_in]), NULL when absent */
static double *rt(const ref_cfg *c, const char *name, int64_t n_in, int64_t rows) {
    const gguf_tensor *t = gguf_find_tensor(c->f, name);
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

static double *rlt(const ref_cfg *c, int il, const char *nm, int64_t n_in, int64_t rows) {
    char n[128];
    snprintf(n, sizeof n, "blk.%d.%s", il, nm);
    return rt(c, n, n_in, rows);
}

static void ref_norm(const ref_cfg *c, const double *x, const double *w, const double *b, int n,
                     double *y) {
    double mean = 0, ss = 0;
    if (c->layer_norm) {
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
    }
    for (int i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
    double s = 1 / sqrt(ss / n + c->eps);
    for (int i = 0; i < n; i++) y[i] = (x[i] - mean) * s * (w ? w[i] : 1) + (b ? b[i] : 0);
}

static void ref_lin(const double *W, const double *bias, const double *x, int n_in, int n_out,
                    double *y) {
    for (int o = 0; o < n_out; o++) {
        double s = bias ? bias[o] : 0;
        for (int i = 0; i < n_in; i++) s += W[(size_t)o * n_in + i] * x[i];
        y[o] = s;
    }
}

static void ref_rope(const ref_cfg *c, double *x, int n_heads, int pos, double theta) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < c->RD / 2; i++) {
            double a = pos * pow(theta, -2.0 * i / c->RD);
            double *v = x + h * c->HD;
            int i0 = c->neox ? i : 2 * i, i1 = c->neox ? i + c->RD / 2 : 2 * i + 1;
            double x0 = v[i0], x1 = v[i1];
            v[i0] = x0 * cos(a) - x1 * sin(a);
            v[i1] = x0 * sin(a) + x1 * cos(a);
        }
}

/* Attention of all T rows of one layer: q [T][QD], k, v [T][KD] -> att [T][QD]. */
static void ref_attn(const ref_cfg *c, const double *q, const double *k, const double *v, int T,
                     int window, double *att) {
    double *sc = malloc((size_t)T * sizeof *sc);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < c->H; h++) {
            const int kh = h / (c->H / c->HKV), lo = window > 0 && t >= window ? t - window + 1 : 0;
            double mx = -INFINITY, sum = 0;
            for (int p = lo; p <= t; p++) {
                double s = 0;
                for (int i = 0; i < c->HD; i++)
                    s += q[(size_t)t * c->QD + h * c->HD + i] *
                         k[(size_t)p * c->KD + kh * c->HD + i];
                sc[p] = s / sqrt(c->HD);
                mx = fmax(mx, sc[p]);
            }
            for (int p = lo; p <= t; p++) sum += sc[p] = exp(sc[p] - mx);
            for (int i = 0; i < c->HD; i++) {
                double o = 0;
                for (int p = lo; p <= t; p++) o += sc[p] * v[(size_t)p * c->KD + kh * c->HD + i];
                att[(size_t)t * c->QD + h * c->HD + i] = o / sum;
            }
        }
    free(sc);
}

typedef struct {
    double *an, *anb, *fn, *fnb, *qn, *kn, *pan, *pfn, *qkv, *bqkv, *wq, *wk, *wv, *bq, *bk, *bv;
    double *wo, *bo, *wg, *wu, *bu, *wd, *bd;
    double *own_g, *own_u; /* the blocks wg and wu point into */
} ref_layer;

static void ref_layer_load(const ref_cfg *c, int il, ref_layer *R) {
    const int E = c->E, F = c->F, QKV = c->QD + 2 * c->KD;
    memset(R, 0, sizeof *R);
    R->an = rlt(c, il, "attn_norm.weight", E, 1), R->anb = rlt(c, il, "attn_norm.bias", E, 1);
    R->fn = rlt(c, il, "ffn_norm.weight", E, 1), R->fnb = rlt(c, il, "ffn_norm.bias", E, 1);
    R->qn = rlt(c, il, "attn_q_norm.weight", c->HD, 1);
    R->kn = rlt(c, il, "attn_k_norm.weight", c->HD, 1);
    R->pan = rlt(c, il, "post_attention_norm.weight", E, 1);
    R->pfn = rlt(c, il, "post_ffw_norm.weight", E, 1);
    R->qkv = rlt(c, il, "attn_qkv.weight", E, QKV), R->bqkv = rlt(c, il, "attn_qkv.bias", QKV, 1);
    if (R->qkv) {
        R->wq = R->qkv, R->wk = R->qkv + (size_t)c->QD * E, R->wv = R->wk + (size_t)c->KD * E;
    } else {
        R->wq = rlt(c, il, "attn_q.weight", E, c->QD),
        R->wk = rlt(c, il, "attn_k.weight", E, c->KD);
        R->wv = rlt(c, il, "attn_v.weight", E, c->KD);
    }
    if (R->bqkv) R->bq = R->bqkv, R->bk = R->bqkv + c->QD, R->bv = R->bk + c->KD;
    else {
        R->bq = rlt(c, il, "attn_q.bias", c->QD, 1), R->bk = rlt(c, il, "attn_k.bias", c->KD, 1);
        R->bv = rlt(c, il, "attn_v.bias", c->KD, 1);
    }
    R->wo = rlt(c, il, "attn_output.weight", c->QD, E),
    R->bo = rlt(c, il, "attn_output.bias", E, 1);
    R->wg = R->own_g = rlt(c, il, "ffn_gate.weight", E, F);
    R->wu = R->own_u = rlt(c, il, "ffn_up.weight", E, R->wg || !c->gated ? F : 2 * F);
    R->bu = rlt(c, il, "ffn_up.bias", F, 1);
    if (!R->wg && c->gated) R->wg = R->wu, R->wu = R->wu + (size_t)F * E; /* fused: gate, up */
    R->wd = rlt(c, il, "ffn_down.weight", F, E), R->bd = rlt(c, il, "ffn_down.bias", E, 1);
}

static void ref_layer_free(ref_layer *R) {
    double *ps[] = {R->an,   R->anb, R->fn, R->fnb, R->qn, R->kn, R->pan,   R->pfn,  R->qkv,
                    R->bqkv, R->wo,  R->bo, R->bd,  R->wd, R->bu, R->own_g, R->own_u};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) free(ps[i]);
    if (!R->qkv) free(R->wq), free(R->wk), free(R->wv);
    if (!R->bqkv) free(R->bq), free(R->bk), free(R->bv);
}

/* out = ffn(h) for one row */
static void ref_ffn(const ref_cfg *c, const ref_layer *R, const double *h, double *out) {
    double *g = malloc((size_t)c->F * sizeof *g), *u = malloc((size_t)c->F * sizeof *u);
    ref_lin(R->wu, R->bu, h, c->E, c->F, u);
    if (c->gated) ref_lin(R->wg, NULL, h, c->E, c->F, g);
    for (int i = 0; i < c->F; i++) {
        if (!c->gated) g[i] = gelu_ref(u[i]);
        else if (c->gelu) g[i] = gelu_ref(g[i]) * u[i];
        else g[i] = g[i] / (1 + exp(-g[i])) * u[i];
    }
    ref_lin(R->wd, R->bd, g, c->F, c->E, out);
    if (R->pfn) ref_norm(c, out, R->pfn, NULL, c->E, out);
    free(g);
    free(u);
}

/* One layer over all T rows of x [T][E]. */
static void ref_layer_run(const ref_cfg *c, int il, double *x, int T) {
    const int E = c->E;
    ref_layer R;
    ref_layer_load(c, il, &R);
    const int swa = c->window > 0 && (c->pattern == 0 || il % c->pattern < c->pattern - 1);
    double *h = malloc((size_t)T * E * sizeof *h), *q = malloc((size_t)T * c->QD * sizeof *q);
    double *k = malloc((size_t)T * c->KD * sizeof *k), *v = malloc((size_t)T * c->KD * sizeof *v);
    double *att = malloc((size_t)T * c->QD * sizeof *att), *o = malloc((size_t)E * sizeof *o);
    double *f = malloc((size_t)E * sizeof *f), *h2 = malloc((size_t)E * sizeof *h2);
    for (int t = 0; t < T; t++) {
        double *ht = h + (size_t)t * E, *qt = q + (size_t)t * c->QD, *kt = k + (size_t)t * c->KD;
        ref_norm(c, x + (size_t)t * E, R.an, R.anb, E, ht);
        ref_lin(R.wq, R.bq, ht, E, c->QD, qt);
        ref_lin(R.wk, R.bk, ht, E, c->KD, kt);
        ref_lin(R.wv, R.bv, ht, E, c->KD, v + (size_t)t * c->KD);
        for (int hh = 0; R.qn && hh < c->H; hh++)
            ref_norm(c, qt + hh * c->HD, R.qn, NULL, c->HD, qt + hh * c->HD);
        for (int hh = 0; R.kn && hh < c->HKV; hh++)
            ref_norm(c, kt + hh * c->HD, R.kn, NULL, c->HD, kt + hh * c->HD);
        if (c->rope) {
            ref_rope(c, qt, c->H, t, swa ? 10000.0 : c->theta);
            ref_rope(c, kt, c->HKV, t, swa ? 10000.0 : c->theta);
        }
    }
    ref_attn(c, q, k, v, T, swa ? c->window : 0, att);
    for (int t = 0; t < T; t++) {
        double *xt = x + (size_t)t * E;
        ref_lin(R.wo, R.bo, att + (size_t)t * c->QD, c->QD, E, o);
        if (R.pan) ref_norm(c, o, R.pan, NULL, E, o);
        if (!c->par)
            for (int i = 0; i < E; i++) xt[i] += o[i];
        ref_norm(c, xt, R.fn, R.fnb, E, h2);
        ref_ffn(c, &R, h2, f);
        for (int i = 0; i < E; i++) xt[i] += f[i] + (c->par ? o[i] : 0);
    }
    free(h), free(q), free(k), free(v), free(att), free(o), free(f), free(h2);
    ref_layer_free(&R);
}

/* logits [T][V] of every row of tokens */
static void ref_forward(const ref_cfg *c, const int32_t *tok, int T, double *logits) {
    const int E = c->E;
    double *emb = rt(c, "token_embd.weight", E, c->V), *x = malloc((size_t)T * E * sizeof *x);
    double *pe = c->pos_embd ? rt(c, "position_embd.weight", E, T) : NULL;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < E; i++)
            x[(size_t)t * E + i] =
                emb[(size_t)tok[t] * E + i] * c->embd_scale + (pe ? pe[(size_t)t * E + i] : 0);
    for (int il = 0; il < c->L; il++) ref_layer_run(c, il, x, T);
    double *on = rt(c, "output_norm.weight", E, 1), *onb = rt(c, "output_norm.bias", E, 1);
    double *out = rt(c, "output.weight", E, c->V), *h = malloc((size_t)E * sizeof *h);
    for (int t = 0; t < T; t++) {
        ref_norm(c, x + (size_t)t * E, on, onb, E, h);
        ref_lin(out ? out : emb, NULL, h, E, c->V, logits + (size_t)t * c->V);
        for (int i = 0; c->softcap > 0 && i < c->V; i++)
            logits[(size_t)t * c->V + i] =
                c->softcap * tanh(logits[(size_t)t * c->V + i] / c->softcap);
    }
    free(emb), free(x), free(pe), free(on), free(onb), free(out), free(h);
}

/* ---------------- engine vs reference ---------------- */
static ref_cfg cfg_of(const tiny_spec *s, const llm_model *m) {
    const char *a = s->arch;
    ref_cfg c = {.V = s->n_vocab,
                 .E = s->n_embd,
                 .F = s->n_ff,
                 .L = s->n_layer,
                 .H = s->n_head,
                 .HKV = s->n_head_kv,
                 .HD = s->head_dim,
                 .QD = s->n_head * s->head_dim,
                 .KD = s->n_head_kv * s->head_dim,
                 .RD = s->rope_dim > 0 ? s->rope_dim : s->head_dim,
                 .theta = s->rope_theta,
                 .eps = s->rms_eps,
                 .embd_scale = 1,
                 .rope = 1,
                 .gated = 1,
                 .f = llm_model_gguf(m)};
    c.layer_norm = !strcmp(a, "gpt2") || !strcmp(a, "gptneox");
    c.neox =
        !strcmp(a, "qwen2") || !strcmp(a, "gemma3") || !strcmp(a, "gptneox") || !strcmp(a, "phi3");
    c.rope = strcmp(a, "gpt2") != 0;
    c.gated = !c.layer_norm;
    c.gelu = c.layer_norm || !strcmp(a, "gemma3");
    c.par = !strcmp(a, "gptneox") && s->par_res;
    c.pos_embd = !strcmp(a, "gpt2");
    if (!strcmp(a, "gemma3")) {
        c.embd_scale = sqrt((double)s->n_embd);
        c.window = s->n_swa;
        c.pattern = s->swa_pattern;
        c.softcap = s->softcap;
    }
    return c;
}

enum { NT = 14, NPRE = 8 };

/* Prefill NPRE tokens (all rows' logits), then decode one row at a time. */
static void engine_logits(llm_model *m, const int32_t *tok, float *logits) {
    const llm_hparams *hp = llm_model_hparams(m);
    kv_cache *kv;
    char err[256];
    CHECK(kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, 4, 8, KV_F32, &kv, err,
                          sizeof err) == 0);
    static const int32_t table[8] = {5, 2, 7, 0, 3, 6, 1, 4};
    const int32_t *tables[1] = {table};
    for (int start = 0; start < NT;) {
        const int n = start == 0 ? NPRE : 1;
        int32_t ids[NPRE], pos[NPRE], slot[NPRE], rows[NPRE], ss[2] = {0, n}, ctx = start + n;
        for (int i = 0; i < n; i++) {
            ids[i] = tok[start + i], pos[i] = start + i, rows[i] = i;
            slot[i] = table[(start + i) / 4] * 4 + (start + i) % 4;
        }
        llm_batch b = {.n_tokens = n,
                       .token_ids = ids,
                       .positions = pos,
                       .slot_mapping = slot,
                       .n_seqs = 1,
                       .seq_start = ss,
                       .context_len = &ctx,
                       .block_tables = tables,
                       .n_logits = n,
                       .logit_rows = rows};
        int rc = llm_forward(m, BE, kv, &b, logits + (size_t)start * hp->n_vocab, err, sizeof err);
        CHECKF(rc == 0, "llm_forward: %s", err);
        start += n;
    }
    kv_cache_free(kv);
}

static void check_arch(const tiny_spec *s, const char *label) {
    char path[512], err[256];
    llm_model *m = NULL;
    CHECK(tiny_model_write_temp(s, 0, path, sizeof path) == 0);
    int rc = llm_model_load(path, &m, NULL, NULL, err, sizeof err);
    unlink(path);
    CHECKF(rc == 0, "%s: load: %s", label, err);
    if (rc) return;
    int32_t tok[NT];
    for (int i = 0; i < NT; i++) tok[i] = (i * 37 + 11) % s->n_vocab;
    const int V = s->n_vocab;
    float *got = malloc((size_t)NT * V * sizeof *got);
    double *want = malloc((size_t)NT * V * sizeof *want);
    engine_logits(m, tok, got);
    ref_cfg c = cfg_of(s, m);
    ref_forward(&c, tok, NT, want);
    double worst = 0, scale = 0;
    int argmax_same = 0;
    for (int t = 0; t < NT; t++) {
        int ag = 0, aw = 0;
        for (int v = 0; v < V; v++) {
            worst = fmax(worst, fabs(got[t * V + v] - want[t * V + v]));
            scale = fmax(scale, fabs(want[t * V + v]));
            if (got[t * V + v] > got[t * V + ag]) ag = v;
            if (want[t * V + v] > want[t * V + aw]) aw = v;
        }
        argmax_same += ag == aw;
    }
    printf("%-28s max |err| %.2e (logits up to %.2f), argmax %d/%d\n", label, worst, scale,
           argmax_same, NT);
    CHECKF(worst < 2e-3 && scale > 0.5, "%s: logits differ from the reference by %g", label, worst);
    free(got);
    free(want);
    llm_model_free(m);
}

static tiny_spec spec_for(const char *arch) {
    tiny_spec s;
    tiny_spec_default(&s);
    s.arch = arch;
    s.attn_type = s.ffn_type = s.embd_type = s.output_type = QT_F32;
    s.tied = 0;
    return s;
}

static void test_archs(void) {
    tiny_spec s = spec_for("llama");
    check_arch(&s, "llama");
    s = spec_for("qwen2");
    s.tied = 1;
    check_arch(&s, "qwen2 (qkv biases, neox)");
    s = spec_for("gemma3");
    s.head_dim = 32; /* q_dim 128 != n_embd 64, as in Gemma 3 */
    s.n_layer = 3;
    s.n_swa = 4;
    s.swa_pattern = 2;
    s.softcap = 3.0f;
    s.rope_theta = 1e6f;
    check_arch(&s, "gemma3 (swa 4, softcap 3)");
    s.n_swa = 0;
    s.softcap = 0;
    check_arch(&s, "gemma3 (no swa)");
    s = spec_for("gpt2");
    check_arch(&s, "gpt2");
    s = spec_for("gptneox");
    s.n_head_kv = s.n_head;
    s.rope_dim = 8;
    s.par_res = 1;
    check_arch(&s, "gptneox (parallel, rope 8/16)");
    s.par_res = 0;
    check_arch(&s, "gptneox (sequential)");
    s = spec_for("phi3");
    check_arch(&s, "phi3");
}

static void expect_load_error(tiny_spec *s, const char *want) {
    char path[512], err[256] = "";
    llm_model *m = NULL;
    CHECK(tiny_model_write_temp(s, 0, path, sizeof path) == 0);
    int rc = llm_model_load(path, &m, NULL, NULL, err, sizeof err);
    unlink(path);
    CHECKF(rc != 0 && strstr(err, want), "%s: expected an error naming '%s', got rc %d '%s'",
           s->arch, want, rc, err);
    llm_model_free(m);
}

static void test_load_errors(void) {
    tiny_spec s = spec_for("gemma3");
    s.omit_tensor = "blk.1.attn_q_norm.weight";
    expect_load_error(&s, "blk.1.attn_q_norm.weight");
    s = spec_for("gptneox");
    s.n_head_kv = s.n_head;
    s.omit_key = "gptneox.use_parallel_residual";
    expect_load_error(&s, "use_parallel_residual");
    s = spec_for("gpt2");
    s.omit_tensor = "position_embd.weight";
    expect_load_error(&s, "position_embd.weight");
    s = spec_for("gpt2");
    s.omit_tensor = "blk.0.ffn_norm.bias";
    expect_load_error(&s, "blk.0.ffn_norm.bias");
    s = spec_for("phi3");
    s.reshape_tensor = "blk.1.ffn_up.weight";
    expect_load_error(&s, "blk.1.ffn_up.weight");
}

int main(void) {
    char err[256];
    BE = backend_cpu_create(2, err, sizeof err);
    if (!BE) {
        fprintf(stderr, "backend: %s\n", err);
        return 1;
    }
    test_ops();
    test_rope_neox();
    test_archs();
    test_load_errors();
    backend_free(BE);
    return tu_finish("test_model_arch");
}
