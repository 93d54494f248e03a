/*
 * model_arch.c - the architecture descriptors (model_internal.h) and the
 * hyperparameters read from a file's `<arch>.*` keys, following llama.cpp's
 * src/llama-model.cpp and src/models/<arch>.cpp for key names, defaults and
 * rope styles.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/model_internal.h"

#define RMS_EPS "attention.layer_norm_rms_epsilon"
#define LN_EPS "attention.layer_norm_epsilon"

/* name, norm, ffn, rope, eps key, fused_up, qk_norm, sandwich, pos_embd,
 * embd_scale_sqrt, q_prescale, swa_pattern, par_res_key */
static const llm_arch_desc ARCHS[] = {
    {"llama", LLM_NORM_RMS, LLM_FFN_SWIGLU, LLM_ROPE_NORM, RMS_EPS, 0, 0, 0, 0, 0, 0, 0, 0},
    {"mistral", LLM_NORM_RMS, LLM_FFN_SWIGLU, LLM_ROPE_NORM, RMS_EPS, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen2", LLM_NORM_RMS, LLM_FFN_SWIGLU, LLM_ROPE_NEOX, RMS_EPS, 0, 0, 0, 0, 0, 0, 0, 0},
    {"gemma3", LLM_NORM_RMS, LLM_FFN_GEGLU, LLM_ROPE_NEOX, RMS_EPS, 0, 1, 1, 0, 1, 1, 6, 0},
    {"gpt2", LLM_NORM_LAYER, LLM_FFN_GELU, LLM_ROPE_NONE, LN_EPS, 0, 0, 0, 1, 0, 0, 0, 0},
    {"gptneox", LLM_NORM_LAYER, LLM_FFN_GELU, LLM_ROPE_NEOX, LN_EPS, 0, 0, 0, 0, 0, 0, 0, 1},
    {"phi3", LLM_NORM_RMS, LLM_FFN_SWIGLU, LLM_ROPE_NEOX, RMS_EPS, 1, 0, 0, 0, 0, 1, 0, 0},
};

const llm_arch_desc *llm_arch_find(const char *name) {
    for (size_t i = 0; i < sizeof ARCHS / sizeof *ARCHS; i++)
        if (strcmp(ARCHS[i].name, name) == 0) return &ARCHS[i];
    return NULL;
}

const char *llm_arch_names(void) { return "llama, mistral, qwen2, gemma3, gpt2, gptneox, phi3"; }

int llm_errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int get_u32_key(const gguf_file *f, const char *arch, const char *suffix, int required,
                       uint32_t dflt, int *out, char *err, size_t errlen) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == GGUF_ENOTFOUND && !required) v = dflt;
    else if (rc == GGUF_ENOTFOUND) return llm_errf(err, errlen, "missing metadata key '%s'", key);
    else if (rc)
        return llm_errf(err, errlen, "metadata key '%s' is not a valid unsigned integer", key);
    if (v > (1u << 30))
        return llm_errf(err, errlen, "metadata key '%s' = %u is out of range", key, v);
    *out = (int)v;
    return 0;
}

static int get_f32_key(const gguf_file *f, const char *arch, const char *suffix, float dflt,
                       float *out, char *err, size_t errlen) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_f32(f, key, out);
    if (rc == GGUF_ENOTFOUND) {
        *out = dflt;
        return 0;
    }
    if (rc) return llm_errf(err, errlen, "metadata key '%s' is not a float", key);
    if (!isfinite(*out) || *out <= 0)
        return llm_errf(err, errlen, "metadata key '%s' = %g is invalid", key, *out);
    return 0;
}

/* Keys every architecture has (llama.cpp's defaults where optional). */
static int base_hparams(const gguf_file *f, const llm_arch_desc *d, llm_hparams *hp, char *err,
                        size_t errlen) {
    const char *a = hp->arch;
    if (get_u32_key(f, a, "block_count", 1, 0, &hp->n_layer, err, errlen) ||
        get_u32_key(f, a, "embedding_length", 1, 0, &hp->n_embd, err, errlen) ||
        get_u32_key(f, a, "feed_forward_length", 1, 0, &hp->n_ff, err, errlen) ||
        get_u32_key(f, a, "attention.head_count", 1, 0, &hp->n_head, err, errlen) ||
        get_u32_key(f, a, "context_length", d->pos_embd, 2048, &hp->n_ctx_train, err, errlen) ||
        get_f32_key(f, a, "rope.freq_base", 10000.0f, &hp->rope_theta, err, errlen) ||
        get_f32_key(f, a, d->eps_key, 1e-5f, &hp->rms_eps, err, errlen))
        return -1;
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_ff < 1)
        return llm_errf(err, errlen,
                        "invalid model dimensions (layers %d, embd %d, heads %d, ff %d)",
                        hp->n_layer, hp->n_embd, hp->n_head, hp->n_ff);
    if (get_u32_key(f, a, "attention.head_count_kv", 0, (uint32_t)hp->n_head, &hp->n_head_kv, err,
                    errlen) ||
        get_u32_key(f, a, "attention.key_length", 0, (uint32_t)(hp->n_embd / hp->n_head),
                    &hp->head_dim, err, errlen))
        return -1;
    int hd_v;
    if (get_u32_key(f, a, "attention.value_length", 0, (uint32_t)hp->head_dim, &hd_v, err, errlen))
        return -1;
    if (hd_v != hp->head_dim)
        return llm_errf(err, errlen, "key length %d differs from value length %d (not supported)",
                        hp->head_dim, hd_v);
    if (get_u32_key(f, a, "rope.dimension_count", 0, (uint32_t)hp->head_dim, &hp->rope_dim, err,
                    errlen))
        return -1;
    if (hp->n_head_kv < 1 || hp->n_head % hp->n_head_kv || hp->head_dim < 2 || hp->head_dim % 2 ||
        hp->rope_dim > hp->head_dim || hp->rope_dim % 2 || hp->rope_dim > 512)
        return llm_errf(err, errlen,
                        "invalid attention shape (heads %d, kv heads %d, head_dim %d, rope_dim %d)",
                        hp->n_head, hp->n_head_kv, hp->head_dim, hp->rope_dim);
    return 0;
}

/* Sliding window, final softcap, attention scale, parallel residual. */
static int extra_hparams(const gguf_file *f, const llm_arch_desc *d, llm_hparams *hp, char *err,
                         size_t errlen) {
    const char *a = hp->arch;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = d->embd_scale_sqrt ? sqrtf((float)hp->n_embd) : 1.0f;
    hp->rope_theta_swa = 10000.0f;
    if (d->swa_pattern) {
        if (get_u32_key(f, a, "attention.sliding_window", 0, 0, &hp->n_swa, err, errlen) ||
            get_f32_key(f, a, "rope.freq_base_swa", 10000.0f, &hp->rope_theta_swa, err, errlen))
            return -1;
    }
    if (get_f32_key(f, a, "final_logit_softcapping", 0.0f, &hp->logit_softcap, err, errlen))
        return -1;
    /* Gemma 3 27B (62 layers) scales by n_embd / n_head, as llama.cpp (from gemma_pytorch) */
    if (strcmp(a, "gemma3") == 0 && hp->n_layer == 62)
        hp->attn_scale = 1.0f / sqrtf((float)(hp->n_embd / hp->n_head));
    if (d->par_res_key) {
        char key[160];
        snprintf(key, sizeof key, "%s.use_parallel_residual", a);
        int v = 0, rc = gguf_get_bool(f, key, &v);
        if (rc == GGUF_ENOTFOUND) return llm_errf(err, errlen, "missing metadata key '%s'", key);
        if (rc) return llm_errf(err, errlen, "metadata key '%s' is not a bool", key);
        hp->parallel_residual = v != 0;
    }
    if (d->pos_embd) hp->n_pos_embd = hp->n_ctx_train;
    if (d->rope == LLM_ROPE_NONE) hp->rope_dim = 0;
    return 0;
}

int llm_arch_hparams(llm_model *m, const char *path, char *err, size_t errlen) {
    const gguf_file *f = m->gguf;
    llm_hparams *hp = &m->hp;
    gguf_str s;
    if (gguf_get_str(f, "general.architecture", &s))
        return llm_errf(err, errlen, "%s: missing or invalid 'general.architecture'", path);
    snprintf(hp->arch, sizeof hp->arch, "%.*s", (int)(s.len < 31 ? s.len : 31), s.ptr);
    m->arch = llm_arch_find(hp->arch);
    if (!m->arch)
        return llm_errf(err, errlen, "%s: architecture '%s' is not supported (supported: %s)", path,
                        hp->arch, llm_arch_names());
    if (gguf_get_str(f, "general.name", &s) == 0)
        snprintf(hp->name, sizeof hp->name, "%.*s", (int)(s.len < 127 ? s.len : 127), s.ptr);
    hp->norm = m->arch->norm;
    hp->ffn = m->arch->ffn;
    hp->rope = m->arch->rope;
    if (base_hparams(f, m->arch, hp, err, errlen) || extra_hparams(f, m->arch, hp, err, errlen))
        return -1;
    return 0;
}

int llm_arch_layer_swa(llm_model *m, char *err, size_t errlen) {
    const llm_hparams *hp = &m->hp;
    if (hp->n_swa <= 0) return 0;
    char key[160];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", hp->arch);
    int64_t ki = gguf_find_key(m->gguf, key);
    if (ki >= 0 && gguf_kv_type(m->gguf, ki) == GGUF_TYPE_ARRAY) {
        /* one bool per layer (true: sliding window) */
        if (gguf_arr_type(m->gguf, ki) != GGUF_TYPE_BOOL ||
            gguf_arr_len(m->gguf, ki) != (uint64_t)hp->n_layer)
            return llm_errf(err, errlen, "metadata key '%s' is not %d bools", key, hp->n_layer);
        const uint8_t *v = gguf_arr_data(m->gguf, ki);
        for (int il = 0; il < hp->n_layer; il++) m->layers[il].is_swa = v[il] != 0;
        return 0;
    }
    int pattern;
    if (get_u32_key(m->gguf, hp->arch, "attention.sliding_window_pattern", 0, m->arch->swa_pattern,
                    &pattern, err, errlen))
        return -1;
    /* llama.cpp's set_swa_pattern: 0 = all layers local; else the last of
     * every `pattern` layers is global */
    for (int il = 0; il < hp->n_layer; il++)
        m->layers[il].is_swa = pattern == 0 || il % pattern < pattern - 1;
    return 0;
}
