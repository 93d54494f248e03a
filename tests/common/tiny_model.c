/* tiny_model.c - see tiny_model.h. */
#include "tests/common/tiny_model.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/quant.h"

void tiny_spec_default(tiny_spec *s) {
    memset(s, 0, sizeof *s);
    s->arch = "llama";
    s->n_vocab = 64;
    s->n_embd = 64;
    s->n_layer = 2;
    s->n_head = 4;
    s->n_head_kv = 2;
    s->head_dim = 16;
    s->n_ff = 96;
    s->n_ctx = 256;
    s->rope_theta = 10000.0f;
    s->rms_eps = 1e-5f;
    s->attn_type = QT_Q8_0;
    s->ffn_type = QT_Q8_0;
    s->embd_type = QT_Q8_0;
    s->output_type = QT_Q8_0;
    s->norm_type = QT_F32;
    s->tied = 1;
    s->seed = 1;
}

static uint64_t next(uint64_t *st) {
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float unif(uint64_t *st, float a) {
    return a * (2.0f * (float)((next(st) >> 40) * 0x1p-24) - 1.0f);
}

/* Encode n_out rows of n_in floats in `type`; returns malloc'd bytes. */
static void *encode(uint32_t type, const float *w, int64_t n_in, int64_t n_out, size_t *nbytes,
                    uint64_t *st) {
    size_t rb = quant_row_bytes(type, n_in);
    assert(rb > 0 || n_in == 0);
    *nbytes = rb * (size_t)n_out;
    uint8_t *out = malloc(*nbytes ? *nbytes : 1);
    assert(out);
    for (int64_t r = 0; r < n_out; r++) {
        const float *x = w + r * n_in;
        uint8_t *y = out + (size_t)r * rb;
        switch (type) {
        case QT_F32: memcpy(y, x, (size_t)n_in * 4); break;
        case QT_F16:
            for (int64_t i = 0; i < n_in; i++) {
                uint16_t h = qt_f32_to_f16(x[i]);
                memcpy(y + 2 * i, &h, 2);
            }
            break;
        case QT_BF16:
            for (int64_t i = 0; i < n_in; i++) {
                uint16_t h = qt_f32_to_bf16(x[i]);
                memcpy(y + 2 * i, &h, 2);
            }
            break;
        case QT_Q8_0: quant_quantize_row_q8_0(x, (block_q8_0 *)(void *)y, n_in); break;
        case QT_Q4_0: quant_quantize_row_q4_0(x, (block_q4_0 *)(void *)y, n_in); break;
        case QT_Q4_1: quant_quantize_row_q4_1(x, (block_q4_1 *)(void *)y, n_in); break;
        default: /* formats the engine may not read: only the size matters */
            for (size_t i = 0; i < rb; i++) y[i] = (uint8_t)next(st);
            break;
        }
    }
    return out;
}

static void add_tensor(gguf_writer *gw, const tiny_spec *s, uint64_t *st, const char *name,
                       uint32_t type, int64_t n_in, int64_t n_out, float amp, float center) {
    if (s->omit_tensor && strcmp(s->omit_tensor, name) == 0) return;
    int is_1d = n_out == 0;
    int64_t rows = is_1d ? 1 : n_out, cols = n_in;
    if (s->reshape_tensor && strcmp(s->reshape_tensor, name) == 0) {
        if (is_1d) cols += 32; /* keep it a whole number of blocks */
        else rows += 1;
    }
    if (s->retype_tensor && strcmp(s->retype_tensor, name) == 0) type = s->retype;
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    assert(w);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = center + unif(st, amp);
    size_t nbytes;
    void *data = encode(type, w, cols, rows, &nbytes, st);
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    gw_tensor(gw, name, type, is_1d ? 1 : 2, ne, data, nbytes);
    free(data);
    free(w);
}

static void key_u32(gguf_writer *gw, const tiny_spec *s, const char *arch, const char *suffix,
                    uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, suffix);
    if (s->omit_key && strcmp(s->omit_key, k) == 0) return;
    gw_kv_u32(gw, k, v);
}
static void key_f32(gguf_writer *gw, const tiny_spec *s, const char *arch, const char *suffix,
                    float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, suffix);
    if (s->omit_key && strcmp(s->omit_key, k) == 0) return;
    gw_kv_f32(gw, k, v);
}

static int is_arch(const tiny_spec *s, const char *name) {
    return s->arch && strcmp(s->arch, name) == 0;
}

/* One layer's tensors, in the order (and with the random draws) the Llama
 * layout has always had, the other architectures' tensors around them. */
static void add_layer(gguf_writer *gw, const tiny_spec *s, uint64_t *st, int il, int layer_norm) {
    const int64_t E = s->n_embd, F = s->n_ff, QD = (int64_t)s->n_head * s->head_dim,
                  KD = (int64_t)s->n_head_kv * s->head_dim;
    /* uniform amplitudes giving a standard deviation of 1/sqrt(n_in) */
    const float aE = sqrtf(3.0f / (float)E), aQ = sqrtf(3.0f / (float)(QD > 0 ? QD : 1)),
                aF = sqrtf(3.0f / (float)F);
    const int fused_qkv = is_arch(s, "gpt2") || is_arch(s, "gptneox") || is_arch(s, "phi3");
    const int biases = layer_norm, ungated = layer_norm, fused_up = is_arch(s, "phi3");
    char n[96];
#define T(nm, kind, type, nin, nout, amp, ctr)                                                     \
    snprintf(n, sizeof n, "blk.%d." nm "." kind, il);                                              \
    add_tensor(gw, s, st, n, type, nin, nout, amp, ctr);
    T("attn_norm", "weight", s->norm_type, E, 0, 0.2f, 1.0f)
    if (layer_norm) {
        T("attn_norm", "bias", QT_F32, E, 0, 0.2f, 0.0f)
    }
    if (fused_qkv) {
        T("attn_qkv", "weight", s->attn_type, E, QD + 2 * KD, aE, 0.0f)
        if (biases) {
            T("attn_qkv", "bias", QT_F32, QD + 2 * KD, 0, 0.3f, 0.0f)
        }
    } else {
        T("attn_q", "weight", s->attn_type, E, QD, aE, 0.0f)
        T("attn_k", "weight", s->attn_type, E, KD, aE, 0.0f)
        T("attn_v", "weight", s->attn_type, E, KD, aE, 0.0f)
    }
    if (is_arch(s, "qwen2")) {
        T("attn_q", "bias", QT_F32, QD, 0, 0.3f, 0.0f)
        T("attn_k", "bias", QT_F32, KD, 0, 0.3f, 0.0f)
        T("attn_v", "bias", QT_F32, KD, 0, 0.3f, 0.0f)
    }
    if (is_arch(s, "gemma3")) {
        T("attn_q_norm", "weight", s->norm_type, s->head_dim, 0, 0.2f, 1.0f)
        T("attn_k_norm", "weight", s->norm_type, s->head_dim, 0, 0.2f, 1.0f)
        T("post_attention_norm", "weight", s->norm_type, E, 0, 0.2f, 1.0f)
        T("post_ffw_norm", "weight", s->norm_type, E, 0, 0.2f, 1.0f)
    }
    T("attn_output", "weight", s->attn_type, QD, E, aQ, 0.0f)
    if (biases) {
        T("attn_output", "bias", QT_F32, E, 0, 0.3f, 0.0f)
    }
    T("ffn_norm", "weight", s->norm_type, E, 0, 0.2f, 1.0f)
    if (layer_norm) {
        T("ffn_norm", "bias", QT_F32, E, 0, 0.2f, 0.0f)
    }
    if (!ungated && !fused_up) {
        T("ffn_gate", "weight", s->ffn_type, E, F, 1.5f * aE, 0.0f)
    }
    T("ffn_up", "weight", s->ffn_type, E, fused_up ? 2 * F : F, aE, 0.0f)
    if (biases) {
        T("ffn_up", "bias", QT_F32, F, 0, 0.3f, 0.0f)
    }
    T("ffn_down", "weight", s->ffn_type, F, E, aF, 0.0f)
    if (biases) {
        T("ffn_down", "bias", QT_F32, E, 0, 0.3f, 0.0f)
    }
#undef T
}

gguf_writer *tiny_model_build(const tiny_spec *s) {
    gguf_writer *gw = gw_new(3);
    const char *arch = s->arch ? s->arch : "llama";
    if (s->arch) gw_kv_str(gw, "general.architecture", s->arch);
    gw_kv_str(gw, "general.name", "tiny-test-model");
    key_u32(gw, s, arch, "context_length", (uint32_t)s->n_ctx);
    key_u32(gw, s, arch, "embedding_length", (uint32_t)s->n_embd);
    key_u32(gw, s, arch, "block_count", (uint32_t)s->n_layer);
    key_u32(gw, s, arch, "feed_forward_length", (uint32_t)s->n_ff);
    key_u32(gw, s, arch, "attention.head_count", (uint32_t)s->n_head);
    key_u32(gw, s, arch, "attention.head_count_kv", (uint32_t)s->n_head_kv);
    if (s->n_head > 0 && s->head_dim != s->n_embd / s->n_head) {
        key_u32(gw, s, arch, "attention.key_length", (uint32_t)s->head_dim);
        key_u32(gw, s, arch, "attention.value_length", (uint32_t)s->head_dim);
    }
    const int layer_norm = is_arch(s, "gpt2") || is_arch(s, "gptneox");
    if (!is_arch(s, "gpt2"))
        key_u32(gw, s, arch, "rope.dimension_count",
                (uint32_t)(s->rope_dim > 0 ? s->rope_dim : s->head_dim));
    key_f32(gw, s, arch, "rope.freq_base", s->rope_theta);
    key_f32(gw, s, arch,
            layer_norm ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon",
            s->rms_eps);
    if (is_arch(s, "gemma3") && s->n_swa > 0) {
        key_u32(gw, s, arch, "attention.sliding_window", (uint32_t)s->n_swa);
        key_u32(gw, s, arch, "attention.sliding_window_pattern", (uint32_t)s->swa_pattern);
    }
    if (is_arch(s, "gemma3") && s->softcap > 0)
        key_f32(gw, s, arch, "final_logit_softcapping", s->softcap);
    if (is_arch(s, "gptneox")) {
        char k[128];
        snprintf(k, sizeof k, "%s.use_parallel_residual", arch);
        if (!s->omit_key || strcmp(s->omit_key, k) != 0) gw_kv_bool(gw, k, s->par_res != 0);
    }

    uint64_t st = s->seed * 0x2545f4914f6cdd1dull + 12345;
    const int64_t E = s->n_embd;
    /* uniform amplitudes giving a standard deviation of 1/sqrt(n_in) */
    const float aE = sqrtf(3.0f / (float)E);
    add_tensor(gw, s, &st, "token_embd.weight", s->embd_type, E, s->n_vocab, 1.0f, 0.0f);
    add_tensor(gw, s, &st, "output_norm.weight", s->norm_type, E, 0, 0.2f, 1.0f);
    if (layer_norm) add_tensor(gw, s, &st, "output_norm.bias", QT_F32, E, 0, 0.2f, 0.0f);
    if (is_arch(s, "gpt2"))
        add_tensor(gw, s, &st, "position_embd.weight", QT_F32, E, s->n_ctx, 0.5f, 0.0f);
    if (!s->tied)
        add_tensor(gw, s, &st, "output.weight", s->output_type, E, s->n_vocab, 3.0f * aE, 0.0f);
    for (int il = 0; il < s->n_layer; il++) add_layer(gw, s, &st, il, layer_norm);
    return gw;
}

size_t tiny_model_size(const tiny_spec *s) {
    gguf_writer *gw = tiny_model_build(s);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    free(buf);
    gw_free(gw);
    return len;
}

int tiny_model_write_temp(const tiny_spec *s, size_t keep_bytes, char *path, size_t pathlen) {
    const char *dir = getenv("TMPDIR");
    snprintf(path, pathlen, "%s/tiny_model_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    gguf_writer *gw = tiny_model_build(s);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    if (keep_bytes > 0 && keep_bytes < len) len = keep_bytes;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    free(buf);
    int rc = close(fd);
    if (off != len || rc != 0) {
        unlink(path);
        return -1;
    }
    return 0;
}
