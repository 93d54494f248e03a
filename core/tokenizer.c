/*
 * tokenizer.c - byte-level BPE tokenizer; see tokenizer.h for the contract.
 *
 * The goal is llama.cpp's exact output, so each stage follows its behaviour
 * (not its code): the special-token partition goes token by token in
 * length order over all text fragments; each pre-tokenizer regex runs
 * separately inside every piece left by the previous regex, and unmatched
 * stretches become pieces of their own; BPE merges the lowest-ranked
 * adjacent pair first (leftmost on ties) and falls back to single-byte
 * tokens for a symbol that is not in the vocabulary.
 *
 * Regexes run on PCRE2 (UTF mode). `\s` is spelled out as the Unicode
 * White_Space set that llama.cpp's tables use, because PCRE2's own `\s`
 * differs from it (U+0085, U+180E). \p{L} and \p{N} come from PCRE2's
 * Unicode tables; checked code point by code point against llama.cpp
 * (llama-cpp-python 0.3.36), they split identically.
 *
 * Lookups are hash tables (open addressing, FNV-1a): token text -> id and
 * (left, right) merge pair -> rank, so encoding never scans the vocabulary.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "core/tokenizer.h"

#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_REGEX 6

/* ---- pre-tokenizers -------------------------------------------------------------------- */

/* Unicode White_Space, as llama.cpp classifies whitespace. */
#define WS                                                                                         \
    "\\t\\n\\x{0b}\\f\\r "                                                                         \
    "\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
#define RX_S "[" WS "]"
#define RX_NOT_S "[^" WS "]"

#define RX_GPT2                                                                                    \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" RX_S "+(?!" RX_NOT_S ")"

#define RX_CONTRACTIONS_ANYCASE "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

/* llama3 / qwen2 family; DIGITS is the number rule ("\\p{N}{1,3}" or "\\p{N}"). */
#define RX_LLAMA3_LIKE(DIGITS)                                                                     \
    RX_CONTRACTIONS_ANYCASE "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" DIGITS "| ?[^" WS                    \
                            "\\p{L}\\p{N}]+[\\r\\n]*|" RX_S "*[\\r\\n]+|" RX_S "+(?!" RX_NOT_S     \
                            ")|" RX_S "+"

typedef struct {
    const char *name;        /* canonical name */
    const char *aliases[24]; /* tokenizer.ggml.pre values that select it */
    const char *regex[TOK_MAX_REGEX];
    int ignore_merges; /* a word that is itself a token skips BPE */
    int add_bos;       /* default for add_bos_token */
} tok_pre_def;

static const tok_pre_def k_pre_defs[] = {
    {"default",
     {"default", NULL},
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL},
     0,
     0},
    {"gpt2",
     {"gpt2",       "gpt-2",        "phi-2",           "jina-es", "jina-de",
      "gigachat",   "jina-v2-es",   "jina-v2-de",      "a.x-4.0", "mellum",
      "jina-v1-en", "jina-v2-code", "roberta-bpe",     "mpt",     "olmo",
      "jais",       "trillion",     "granite-docling", "exaone4", NULL},
     {RX_GPT2, NULL},
     0,
     0},
    {"smollm",
     {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", NULL},
     {"\\p{N}", RX_GPT2, NULL},
     0,
     0},
    {"llama3",
     {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
      NULL},
     {RX_LLAMA3_LIKE("\\p{N}{1,3}"), NULL},
     1,
     1},
    {"dbrx", {"dbrx", "smaug-bpe", NULL}, {RX_LLAMA3_LIKE("\\p{N}{1,3}"), NULL}, 0, 0},
    {"qwen2",
     {"qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2", "hunyuan", NULL},
     {RX_LLAMA3_LIKE("\\p{N}"), NULL},
     0,
     0},
    {"falcon",
     {"falcon", NULL},
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]", NULL},
     0,
     0},
};

static const tok_pre_def *pre_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof k_pre_defs / sizeof k_pre_defs[0]; i++)
        for (const char *const *a = k_pre_defs[i].aliases; *a; a++)
            if (strlen(*a) == len && memcmp(*a, name, len) == 0) return &k_pre_defs[i];
    return NULL;
}

/* ---- tokenizer state ------------------------------------------------------------------- */

struct llm_tokenizer {
    int n_vocab;
    char *text_pool; /* stored token texts, back to back */
    uint32_t *text_off;
    uint32_t *text_len;
    uint8_t *type; /* TOK_TYPE_* */
    uint8_t *eog;
    char *piece_pool; /* decoded bytes of each token (control tokens: their text) */
    uint32_t *piece_off;
    uint32_t *piece_len;
    uint32_t max_piece_len;
    int32_t *vocab_ht; /* open addressing: token ids, -1 empty */
    uint32_t vocab_mask;

    uint32_t n_merges;
    char *merge_pool; /* "left right" strings */
    uint32_t *merge_off;
    uint32_t *merge_llen;
    uint32_t *merge_rlen;
    int32_t *merge_ht; /* open addressing: merge ranks, -1 empty */
    uint32_t merge_mask;

    int32_t *special; /* control/user-defined/unknown ids, longest text first */
    int n_special;

    int32_t bos, eos, eot, eom;
    int add_bos, add_eos;
    const tok_pre_def *pre;
    pcre2_code *re[TOK_MAX_REGEX];
    int n_re;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- hashing --------------------------------------------------------------------------- */

static uint64_t fnv_update(uint64_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t hash_pair(const char *l, size_t ln, const char *r, size_t rn) {
    uint64_t h = fnv_update(FNV_INIT, l, ln);
    h = fnv_update(h, "\xff", 1); /* 0xff never occurs in UTF-8, so splits stay distinct */
    return fnv_update(h, r, rn);
}

static uint32_t table_size_for(uint64_t n) {
    uint64_t size = 16;
    while (size < 2 * n) size <<= 1;
    return (uint32_t)size;
}

static int32_t vocab_lookup(const llm_tokenizer *t, const char *s, size_t n) {
    uint32_t i = (uint32_t)fnv_update(FNV_INIT, s, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_ht[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(t->text_pool + t->text_off[id], s, n) == 0) return id;
    }
}

/* Later duplicates replace earlier ones, as in llama.cpp's token_to_id map. */
static void vocab_insert(llm_tokenizer *t, int32_t id) {
    const char *s = t->text_pool + t->text_off[id];
    size_t n = t->text_len[id];
    uint32_t i = (uint32_t)fnv_update(FNV_INIT, s, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        int32_t cur = t->vocab_ht[i];
        if (cur < 0 ||
            (t->text_len[cur] == n && memcmp(t->text_pool + t->text_off[cur], s, n) == 0)) {
            t->vocab_ht[i] = id;
            return;
        }
    }
}

static int32_t merge_rank(const llm_tokenizer *t, const char *l, size_t ln, const char *r,
                          size_t rn) {
    if (!t->merge_ht) return -1;
    uint32_t i = (uint32_t)hash_pair(l, ln, r, rn) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        int32_t m = t->merge_ht[i];
        if (m < 0) return -1;
        const char *ms = t->merge_pool + t->merge_off[m];
        if (t->merge_llen[m] == ln && t->merge_rlen[m] == rn && memcmp(ms, l, ln) == 0 &&
            memcmp(ms + ln + 1, r, rn) == 0)
            return m;
    }
}

/* The first occurrence of a pair keeps its rank (llama.cpp uses emplace). */
static void merge_insert(llm_tokenizer *t, int32_t m) {
    const char *ms = t->merge_pool + t->merge_off[m];
    size_t ln = t->merge_llen[m], rn = t->merge_rlen[m];
    uint32_t i = (uint32_t)hash_pair(ms, ln, ms + ln + 1, rn) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        int32_t cur = t->merge_ht[i];
        if (cur < 0) {
            t->merge_ht[i] = m;
            return;
        }
        const char *cs = t->merge_pool + t->merge_off[cur];
        if (t->merge_llen[cur] == ln && t->merge_rlen[cur] == rn &&
            memcmp(cs, ms, ln + 1 + rn) == 0)
            return;
    }
}

/* ---- UTF-8 and the GPT-2 byte alphabet ----------------------------------------------------- */

/* Decode one code point the way llama.cpp does: lead-byte length, continuation
 * bytes checked, nothing else (overlongs and surrogates pass). Returns the
 * length consumed, 0 when invalid (the caller consumes one byte as U+FFFD). */
static int utf8_decode_lenient(const uint8_t *p, size_t n, uint32_t *cp) {
    uint8_t c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    if ((c & 0xe0) == 0xc0) len = 2;
    else if ((c & 0xf0) == 0xe0) len = 3;
    else if ((c & 0xf8) == 0xf0) len = 4;
    else return 0;
    if ((size_t)len > n) return 0;
    uint32_t v = c & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    *cp = v;
    return len;
}

static int utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68
 * to U+0100.. in byte order. All results are below U+0144. */
static uint32_t byte_to_cp(uint8_t b) {
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae) return b;
    uint32_t n = 0;
    for (uint32_t c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || c >= 0xae)) n++;
    return 256 + n;
}

typedef struct {
    char enc[256][2]; /* UTF-8 of each byte's code point (1 or 2 bytes) */
    uint8_t enc_len[256];
    int16_t dec[0x144]; /* code point -> byte, -1 if none */
} byte_alphabet;

static void byte_alphabet_init(byte_alphabet *a) {
    for (int i = 0; i < 0x144; i++) a->dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = byte_to_cp((uint8_t)b);
        a->enc_len[b] = (uint8_t)utf8_encode(cp, a->enc[b]);
        a->dec[cp] = (int16_t)b;
    }
}

/* ---- growable buffers ------------------------------------------------------------------ */

typedef struct {
    void *p;
    size_t n, cap, elem;
} vec;

static int vec_reserve(vec *v, size_t need) {
    if (need <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < need) cap *= 2;
    void *p = realloc(v->p, cap * v->elem);
    if (!p) return TOK_ENOMEM;
    v->p = p;
    v->cap = cap;
    return 0;
}

static int vec_push(vec *v, const void *x) {
    if (vec_reserve(v, v->n + 1)) return TOK_ENOMEM;
    memcpy((char *)v->p + v->n * v->elem, x, v->elem);
    v->n++;
    return 0;
}

/* ---- loading --------------------------------------------------------------------------- */

static int get_str_arr(const gguf_file *f, const char *key, int64_t *idx, uint64_t *n, int required,
                       char *err, size_t errlen) {
    *idx = gguf_find_key(f, key);
    *n = 0;
    if (*idx < 0) {
        if (required) set_err(err, errlen, "tokenizer: metadata key '%s' is missing", key);
        return required ? TOK_EFORMAT : 0;
    }
    if (gguf_kv_type(f, *idx) != GGUF_TYPE_ARRAY || gguf_arr_type(f, *idx) != GGUF_TYPE_STRING) {
        set_err(err, errlen, "tokenizer: metadata key '%s' is not an array of strings", key);
        return TOK_EFORMAT;
    }
    *n = gguf_arr_len(f, *idx);
    return 0;
}

/* Optional token id key: absent -> keep *id; out of range -> keep *id (llama.cpp warns). */
static int get_opt_id(const gguf_file *f, const char *key, int n_vocab, int32_t *id, char *err,
                      size_t errlen) {
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == GGUF_ENOTFOUND) return 0;
    if (rc == GGUF_ERANGE) return 0;
    if (rc) {
        set_err(err, errlen, "tokenizer: metadata key '%s' is not an integer", key);
        return TOK_EFORMAT;
    }
    if (v < (uint32_t)n_vocab) *id = (int32_t)v;
    return 0;
}

static int get_opt_bool(const gguf_file *f, const char *key, int *out, char *err, size_t errlen) {
    int v;
    int rc = gguf_get_bool(f, key, &v);
    if (rc == GGUF_ENOTFOUND) return 0;
    if (rc) {
        set_err(err, errlen, "tokenizer: metadata key '%s' is not a bool", key);
        return TOK_EFORMAT;
    }
    *out = v;
    return 0;
}

/* The first text of list (in list order) that is a token, -1 if none. */
static int32_t find_by_texts(const llm_tokenizer *t, const char *const *list) {
    for (; *list; list++) {
        int32_t id = vocab_lookup(t, *list, strlen(*list));
        if (id >= 0) return id;
    }
    return -1;
}

static void force_control(llm_tokenizer *t, int32_t id) {
    if (id >= 0 && t->type[id] != TOK_TYPE_CONTROL) t->type[id] = TOK_TYPE_CONTROL;
}

/* llama.cpp recognises end-of-turn, FIM and end-of-generation tokens by their
 * text and forces them to CONTROL; the EOG set is built from the same lists. */
static int detect_special(llm_tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    static const char *const eot_texts[] = {"<|eot_id|>",
                                            "<|im_end|>",
                                            "<|end|>",
                                            "<end_of_turn>",
                                            "<|endoftext|>",
                                            "<|end_of_text|>",
                                            "<EOT>",
                                            "_<EOT>",
                                            "<\xef\xbd\x9c"
                                            "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                            "<end_of_utterance>",
                                            NULL};
    static const char *const eom_texts[] = {"<|eom_id|>", NULL};
    static const char *const fim_pre_texts[] = {"<|fim_prefix|>",
                                                "<fim-prefix>",
                                                "<fim_prefix>",
                                                "<\xef\xbd\x9c"
                                                "fim\xe2\x96\x81"
                                                "begin\xef\xbd\x9c>",
                                                "<PRE>",
                                                "\xe2\x96\x81<PRE>",
                                                "<|code_prefix|>",
                                                NULL};
    static const char *const fim_suf_texts[] = {"<|fim_suffix|>",
                                                "<fim-suffix>",
                                                "<fim_suffix>",
                                                "<\xef\xbd\x9c"
                                                "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                                "<SUF>",
                                                "\xe2\x96\x81<SUF>",
                                                "<|code_suffix|>",
                                                NULL};
    static const char *const fim_mid_texts[] = {"<|fim_middle|>",
                                                "<fim-middle>",
                                                "<fim_middle>",
                                                "<\xef\xbd\x9c"
                                                "fim\xe2\x96\x81"
                                                "end\xef\xbd\x9c>",
                                                "<MID>",
                                                "\xe2\x96\x81<MID>",
                                                "<|code_middle|>",
                                                NULL};
    static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
                                                NULL};
    static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                                "<REPO>",       "<reponame>",    NULL};
    static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
    static const char *const eog_texts[] = {
        "<|eot_id|>",      "<|im_end|>",         "<|end|>",    "<|return|>", "<|call|>",
        "<end_of_turn>",   "<|endoftext|>",      "<|eom_id|>", "<EOT>",      "_<EOT>",
        "<|end_of_text|>", "<end_of_utterance>", NULL};
    static const char *const always_user[] = {"<|channel|>", "<|message|>", "<|start|>",
                                              "<|constrain|>", NULL};

    int32_t eot = -1, eom = -1, fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1,
            fim_rep = -1, fim_sep = -1;
    /* metadata id first; without one, the first listed text that is a token */
    struct {
        const char *key;
        int32_t *id;
        const char *const *texts;
    } detect[] = {
        {"tokenizer.ggml.eot_token_id", &eot, eot_texts},
        {"tokenizer.ggml.eom_token_id", &eom, eom_texts},
        {"tokenizer.ggml.fim_pre_token_id", &fim_pre, fim_pre_texts},
        {"tokenizer.ggml.fim_suf_token_id", &fim_suf, fim_suf_texts},
        {"tokenizer.ggml.fim_mid_token_id", &fim_mid, fim_mid_texts},
        {"tokenizer.ggml.fim_pad_token_id", &fim_pad, fim_pad_texts},
        {"tokenizer.ggml.fim_rep_token_id", &fim_rep, fim_rep_texts},
        {"tokenizer.ggml.fim_sep_token_id", &fim_sep, fim_sep_texts},
    };
    for (size_t i = 0; i < sizeof detect / sizeof detect[0]; i++) {
        int rc = get_opt_id(f, detect[i].key, t->n_vocab, detect[i].id, err, errlen);
        if (rc) return rc;
        if (*detect[i].id >= 0) continue;
        *detect[i].id = find_by_texts(t, detect[i].texts);
        force_control(t, *detect[i].id);
    }
    t->eot = eot;
    t->eom = eom;

    int32_t extra_eog[] = {fim_pad, fim_rep, fim_sep, t->eos, eot, eom};
    for (size_t i = 0; i < sizeof extra_eog / sizeof extra_eog[0]; i++)
        if (extra_eog[i] >= 0) t->eog[extra_eog[i]] = 1;
    for (const char *const *p = eog_texts; *p; p++) {
        int32_t id = vocab_lookup(t, *p, strlen(*p));
        if (id >= 0) {
            t->eog[id] = 1;
            force_control(t, id);
        }
    }
    for (const char *const *p = always_user; *p; p++) {
        int32_t id = vocab_lookup(t, *p, strlen(*p));
        if (id >= 0) t->type[id] = TOK_TYPE_USER_DEFINED;
    }

    /* gpt-oss (harmony): with <|return|> and <|call|> present, <|end|> is not EOG. */
    int32_t ret_id = vocab_lookup(t, "<|return|>", 10), call_id = vocab_lookup(t, "<|call|>", 8),
            end_id = vocab_lookup(t, "<|end|>", 7);
    if (ret_id >= 0 && call_id >= 0 && end_id >= 0 && t->eog[ret_id] && t->eog[call_id] &&
        t->eog[end_id]) {
        t->eog[end_id] = 0;
        t->type[end_id] = TOK_TYPE_USER_DEFINED;
    }
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const llm_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int build_pieces(llm_tokenizer *t) {
    byte_alphabet a;
    byte_alphabet_init(&a);
    size_t total = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) total += t->text_len[id];
    /* a decoded piece is never longer than its text */
    t->piece_pool = malloc(total + 1);
    t->piece_off = malloc(sizeof(uint32_t) * (size_t)t->n_vocab);
    t->piece_len = malloc(sizeof(uint32_t) * (size_t)t->n_vocab);
    if (!t->piece_pool || !t->piece_off || !t->piece_len) return TOK_ENOMEM;
    size_t pos = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const uint8_t *s = (const uint8_t *)t->text_pool + t->text_off[id];
        size_t n = t->text_len[id];
        t->piece_off[id] = (uint32_t)pos;
        switch (t->type[id]) {
        case TOK_TYPE_CONTROL:
        case TOK_TYPE_USER_DEFINED:
        case TOK_TYPE_UNKNOWN:
            memcpy(t->piece_pool + pos, s, n);
            pos += n;
            break;
        case TOK_TYPE_NORMAL:
            for (size_t i = 0; i < n;) {
                uint32_t cp = 0xfffd;
                int k = utf8_decode_lenient(s + i, n - i, &cp);
                if (k == 0) k = 1;
                if (cp < 0x144 && a.dec[cp] >= 0) {
                    t->piece_pool[pos++] = (char)a.dec[cp];
                } else {
                    /* not in the byte alphabet: pass the character through */
                    memcpy(t->piece_pool + pos, s + i, (size_t)k);
                    pos += (size_t)k;
                }
                i += (size_t)k;
            }
            break;
        default: /* byte / unused / undefined tokens decode to nothing */ break;
        }
        t->piece_len[id] = (uint32_t)(pos - t->piece_off[id]);
        if (t->piece_len[id] > t->max_piece_len) t->max_piece_len = t->piece_len[id];
    }
    return 0;
}

static int compile_regexes(llm_tokenizer *t, char *err, size_t errlen) {
    for (int i = 0; i < TOK_MAX_REGEX && t->pre->regex[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)t->pre->regex[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF, &ec, &eo, NULL);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            set_err(err, errlen, "tokenizer: pre-tokenizer '%s' regex %d: %s at offset %zu",
                    t->pre->name, i, (const char *)msg, (size_t)eo);
            return TOK_EREGEX;
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort; the interpreter also works */
        t->re[t->n_re++] = re;
    }
    return 0;
}

static int load_vocab(llm_tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    int64_t idx;
    uint64_t n;
    int rc = get_str_arr(f, "tokenizer.ggml.tokens", &idx, &n, 1, err, errlen);
    if (rc) return rc;
    if (n == 0 || n > INT32_MAX / 2) {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.tokens has %llu entries",
                (unsigned long long)n);
        return TOK_EFORMAT;
    }
    t->n_vocab = (int)n;
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_arr_str(f, idx, i, &s)) return TOK_EFORMAT;
        total += s.len;
    }
    if (total > UINT32_MAX - 1) {
        set_err(err, errlen, "tokenizer: vocabulary text too large");
        return TOK_EFORMAT;
    }
    t->text_pool = malloc(total + 1);
    t->text_off = malloc(sizeof(uint32_t) * n);
    t->text_len = malloc(sizeof(uint32_t) * n);
    t->type = malloc(n);
    t->eog = calloc(n, 1);
    t->vocab_mask = table_size_for(n) - 1;
    t->vocab_ht = malloc(sizeof(int32_t) * ((size_t)t->vocab_mask + 1));
    if (!t->text_pool || !t->text_off || !t->text_len || !t->type || !t->eog || !t->vocab_ht)
        return TOK_ENOMEM;
    memset(t->vocab_ht, 0xff, sizeof(int32_t) * ((size_t)t->vocab_mask + 1));
    size_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        gguf_arr_str(f, idx, i, &s);
        if (s.len) memcpy(t->text_pool + pos, s.ptr, s.len);
        t->text_off[i] = (uint32_t)pos;
        t->text_len[i] = (uint32_t)s.len;
        pos += s.len;
    }

    int64_t tidx = gguf_find_key(f, "tokenizer.ggml.token_type");
    if (tidx >= 0 && gguf_arr_len(f, tidx) != n) {
        set_err(err, errlen, "tokenizer: token_type has %llu entries, tokens has %llu",
                (unsigned long long)gguf_arr_len(f, tidx), (unsigned long long)n);
        return TOK_EFORMAT;
    }
    for (uint64_t i = 0; i < n; i++) {
        int64_t ty = TOK_TYPE_NORMAL;
        if (tidx >= 0 && gguf_arr_int(f, tidx, i, &ty)) {
            set_err(err, errlen, "tokenizer: tokenizer.ggml.token_type is not an integer array");
            return TOK_EFORMAT;
        }
        t->type[i] =
            (ty >= TOK_TYPE_UNDEFINED && ty <= TOK_TYPE_BYTE) ? (uint8_t)ty : TOK_TYPE_UNDEFINED;
    }
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->text_len[id]) vocab_insert(t, id);
    return 0;
}

static int load_merges(llm_tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    int64_t idx;
    uint64_t n;
    int rc = get_str_arr(f, "tokenizer.ggml.merges", &idx, &n, 1, err, errlen);
    if (rc) return rc;
    if (n > INT32_MAX / 2) {
        set_err(err, errlen, "tokenizer: too many merges (%llu)", (unsigned long long)n);
        return TOK_EFORMAT;
    }
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_arr_str(f, idx, i, &s)) return TOK_EFORMAT;
        total += s.len;
    }
    if (total > UINT32_MAX - 1) {
        set_err(err, errlen, "tokenizer: merges too large");
        return TOK_EFORMAT;
    }
    t->n_merges = (uint32_t)n;
    t->merge_pool = malloc(total + 1);
    t->merge_off = malloc(sizeof(uint32_t) * (n ? n : 1));
    t->merge_llen = malloc(sizeof(uint32_t) * (n ? n : 1));
    t->merge_rlen = malloc(sizeof(uint32_t) * (n ? n : 1));
    t->merge_mask = table_size_for(n) - 1;
    t->merge_ht = malloc(sizeof(int32_t) * ((size_t)t->merge_mask + 1));
    if (!t->merge_pool || !t->merge_off || !t->merge_llen || !t->merge_rlen || !t->merge_ht)
        return TOK_ENOMEM;
    memset(t->merge_ht, 0xff, sizeof(int32_t) * ((size_t)t->merge_mask + 1));
    size_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        gguf_arr_str(f, idx, i, &s);
        if (s.len) memcpy(t->merge_pool + pos, s.ptr, s.len);
        t->merge_off[i] = (uint32_t)pos;
        pos += s.len;
        /* split at the first space after position 0 */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) { /* malformed entry: can never match */
            t->merge_llen[i] = t->merge_rlen[i] = 0;
            continue;
        }
        t->merge_llen[i] = (uint32_t)(sp - s.ptr);
        t->merge_rlen[i] = (uint32_t)(s.len - t->merge_llen[i] - 1);
        merge_insert(t, (int32_t)i);
    }
    return 0;
}

int tok_load(const gguf_file *f, llm_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    gguf_str model;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &model);
    if (rc) {
        set_err(err, errlen, "tokenizer: metadata key 'tokenizer.ggml.model' is %s",
                rc == GGUF_ENOTFOUND ? "missing" : "not a string");
        return TOK_EFORMAT;
    }
    if (model.len != 4 || memcmp(model.ptr, "gpt2", 4) != 0) {
        set_err(err, errlen,
                "tokenizer: model '%.*s' is not supported (only 'gpt2' byte-level BPE)",
                (int)(model.len > 64 ? 64 : model.len), model.ptr);
        return TOK_EFORMAT;
    }

    const tok_pre_def *pre;
    gguf_str pre_name;
    rc = gguf_get_str(f, "tokenizer.ggml.pre", &pre_name);
    if (rc == GGUF_ENOTFOUND) {
        pre = &k_pre_defs[0]; /* llama.cpp's "default" */
    } else if (rc) {
        set_err(err, errlen, "tokenizer: metadata key 'tokenizer.ggml.pre' is not a string");
        return TOK_EFORMAT;
    } else if (!(pre = pre_find(pre_name.ptr, pre_name.len))) {
        set_err(err, errlen, "tokenizer: unknown pre-tokenizer '%.*s' (tokenizer.ggml.pre)",
                (int)(pre_name.len > 64 ? 64 : pre_name.len), pre_name.ptr);
        return TOK_EFORMAT;
    }

    llm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "tokenizer: out of memory");
        return TOK_ENOMEM;
    }
    t->pre = pre;
    t->add_bos = pre->add_bos;
    t->add_eos = 0;
    if ((rc = load_vocab(t, f, err, errlen)) || (rc = load_merges(t, f, err, errlen))) goto fail;

    /* llama.cpp's defaults for gpt2 vocabularies, then the metadata */
    t->bos = t->n_vocab > 11 ? 11 : -1;
    t->eos = t->n_vocab > 11 ? 11 : -1;
    if ((rc = get_opt_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err, errlen)) ||
        (rc = get_opt_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err, errlen)) ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen)) ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos, err, errlen)) ||
        (rc = detect_special(t, f, err, errlen)))
        goto fail;

    t->special = malloc(sizeof(int32_t) * (size_t)t->n_vocab);
    if (!t->special) {
        rc = TOK_ENOMEM;
        goto fail;
    }
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
            t->text_len[id] > 0)
            t->special[t->n_special++] = id;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof(int32_t), cmp_special, t);

    if ((rc = build_pieces(t)) || (rc = compile_regexes(t, err, errlen))) goto fail;
    *out = t;
    return 0;

fail:
    if (rc == TOK_ENOMEM) set_err(err, errlen, "tokenizer: out of memory");
    tok_free(t);
    return rc;
}

void tok_free(llm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->text_pool);
    free(t->text_off);
    free(t->text_len);
    free(t->type);
    free(t->eog);
    free(t->piece_pool);
    free(t->piece_off);
    free(t->piece_len);
    free(t->vocab_ht);
    free(t->merge_pool);
    free(t->merge_off);
    free(t->merge_llen);
    free(t->merge_rlen);
    free(t->merge_ht);
    free(t->special);
    free(t);
}

int tok_n_vocab(const llm_tokenizer *t) { return t->n_vocab; }
int32_t tok_bos(const llm_tokenizer *t) { return t->bos; }
int32_t tok_eos(const llm_tokenizer *t) { return t->eos; }
int tok_add_bos(const llm_tokenizer *t) { return t->add_bos; }
int tok_add_eos(const llm_tokenizer *t) { return t->add_eos; }
int tok_max_piece_len(const llm_tokenizer *t) { return (int)t->max_piece_len; }
const char *tok_pre_name(const llm_tokenizer *t) { return t->pre->name; }

int tok_is_eog(const llm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

int tok_is_control(const llm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->type[id] == TOK_TYPE_CONTROL;
}

int tok_type(const llm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->type[id] : -1;
}

int32_t tok_find(const llm_tokenizer *t, const char *text, size_t len) {
    if (len == 0) return -1;
    return vocab_lookup(t, text, len);
}

const char *tok_text(const llm_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    if (len) *len = t->text_len[id];
    return t->text_pool + t->text_off[id];
}

/* ---- encoding -------------------------------------------------------------------------- */

typedef struct {
    size_t off, len;
    int32_t id; /* >= 0: a special token; -1: text */
} fragment;

typedef struct {
    uint32_t off, len;
} span;

typedef struct {
    int32_t rank;
    int32_t left, right;
    uint32_t size; /* left.n + right.n when pushed: symbols only grow, so a mismatch = stale */
} bigram;

typedef struct {
    uint32_t off, n; /* into the mapped word */
    int32_t prev, next;
} symbol;

/* Scratch memory for one tok_encode call. */
typedef struct {
    const llm_tokenizer *t;
    byte_alphabet alpha;
    vec out;      /* int32_t */
    vec frags[2]; /* fragment */
    vec spans[2]; /* span */
    vec word;     /* char: mapped word */
    vec syms;     /* symbol */
    vec heap;     /* bigram */
    pcre2_match_data *md;
} encoder;

static int bigram_less(const bigram *a, const bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(vec *h, bigram b) {
    if (vec_push(h, &b)) return TOK_ENOMEM;
    bigram *v = h->p;
    size_t i = h->n - 1;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_less(&v[i], &v[parent])) break;
        bigram tmp = v[i];
        v[i] = v[parent];
        v[parent] = tmp;
        i = parent;
    }
    return 0;
}

static bigram heap_pop(vec *h) {
    bigram *v = h->p;
    bigram top = v[0];
    v[0] = v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && bigram_less(&v[l], &v[m])) m = l;
        if (r < h->n && bigram_less(&v[r], &v[m])) m = r;
        if (m == i) break;
        bigram tmp = v[i];
        v[i] = v[m];
        v[m] = tmp;
        i = m;
    }
    return top;
}

static int add_bigram(encoder *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const symbol *s = e->syms.p;
    const char *w = e->word.p;
    int32_t rank = merge_rank(e->t, w + s[left].off, s[left].n, w + s[right].off, s[right].n);
    if (rank < 0) return 0;
    bigram b = {rank, left, right, s[left].n + s[right].n};
    return heap_push(&e->heap, b);
}

static int emit(encoder *e, int32_t id) { return vec_push(&e->out, &id); }

/* BPE over one pre-tokenized word (raw bytes). */
static int bpe_word(encoder *e, const char *raw, size_t n) {
    const llm_tokenizer *t = e->t;
    if (n == 0) return 0;
    e->word.n = 0;
    e->syms.n = 0;
    e->heap.n = 0;
    if (vec_reserve(&e->word, 2 * n) || vec_reserve(&e->syms, n)) return TOK_ENOMEM;
    char *w = e->word.p;
    symbol *s = e->syms.p;
    size_t wn = 0;
    /* one symbol per byte: each byte is exactly one character of the alphabet */
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)raw[i];
        s[i].off = (uint32_t)wn;
        s[i].n = e->alpha.enc_len[b];
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        memcpy(w + wn, e->alpha.enc[b], e->alpha.enc_len[b]);
        wn += e->alpha.enc_len[b];
    }
    e->word.n = wn;
    e->syms.n = n;

    if (t->pre->ignore_merges) {
        int32_t id = vocab_lookup(t, w, wn);
        if (id >= 0) return emit(e, id);
    }

    for (size_t i = 1; i < n; i++)
        if (add_bigram(e, (int32_t)i - 1, (int32_t)i)) return TOK_ENOMEM;

    while (e->heap.n) {
        bigram b = heap_pop(&e->heap);
        s = e->syms.p;
        symbol *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = b.left;
        if (add_bigram(e, l->prev, b.left) || add_bigram(e, b.left, l->next)) return TOK_ENOMEM;
    }

    s = e->syms.p;
    for (int32_t i = 0; i != -1; i = s[i].next) {
        if (s[i].n == 0) continue;
        int32_t id = vocab_lookup(t, w + s[i].off, s[i].n);
        if (id >= 0) {
            if (emit(e, id)) return TOK_ENOMEM;
            continue;
        }
        /* not a token: fall back to single-byte tokens of its text, dropping misses */
        for (uint32_t j = 0; j < s[i].n; j++) {
            int32_t bid = vocab_lookup(t, w + s[i].off + j, 1);
            if (bid >= 0 && emit(e, bid)) return TOK_ENOMEM;
        }
    }
    return 0;
}

static int span_push(vec *v, size_t off, size_t len) {
    span sp = {(uint32_t)off, (uint32_t)len};
    return len ? vec_push(v, &sp) : 0;
}

/* Split every span of `in` with regex re: matches and the stretches between
 * them become spans of `out`. Each span is matched on its own, so lookahead
 * never sees past its end. */
static int regex_split(encoder *e, pcre2_code *re, const char *text, const vec *in, vec *out) {
    out->n = 0;
    const span *sp = in->p;
    for (size_t k = 0; k < in->n; k++) {
        PCRE2_SPTR subj = (PCRE2_SPTR)(text + sp[k].off);
        size_t n = sp[k].len, pos = 0, gap = 0;
        while (pos < n) {
            int rc = pcre2_match(re, subj, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) return TOK_EREGEX;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* empty match: step one character, keep it in the gap */
                pos = ms + 1;
                while (pos < n && (subj[pos] & 0xc0) == 0x80) pos++;
                continue;
            }
            if (span_push(out, sp[k].off + gap, ms - gap) ||
                span_push(out, sp[k].off + ms, me - ms))
                return TOK_ENOMEM;
            gap = pos = me;
        }
        if (span_push(out, sp[k].off + gap, n - gap)) return TOK_ENOMEM;
    }
    return 0;
}

/* Re-encode text the way llama.cpp sees it: invalid bytes become U+FFFD,
 * code points above U+10FFFF too; valid UTF-8 comes out unchanged.
 * Surrogates (ED A0..BF xx) pass through like in llama.cpp, which files them
 * under "other" symbols; *view gets a copy (NULL when there are none) where
 * they are replaced by the private-use U+E000 (same class, same length), so
 * the regexes only ever see valid UTF-8. */
static char *normalize_utf8(const char *text, size_t len, size_t *out_len, char **view) {
    *view = NULL;
    char *buf = malloc(3 * len + 1);
    if (!buf) return NULL;
    size_t o = 0;
    int surrogates = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = utf8_decode_lenient((const uint8_t *)text + i, len - i, &cp);
        if (k == 0 || cp > 0x10ffff) {
            cp = 0xfffd;
            k = k ? k : 1;
        }
        surrogates |= cp >= 0xd800 && cp < 0xe000;
        o += (size_t)utf8_encode(cp, buf + o);
        i += (size_t)k;
    }
    *out_len = o;
    if (surrogates) {
        *view = malloc(o + 1);
        if (!*view) {
            free(buf);
            return NULL;
        }
        memcpy(*view, buf, o);
        for (size_t i = 0; i + 2 < o; i++)
            if ((uint8_t)buf[i] == 0xed && (uint8_t)buf[i + 1] >= 0xa0)
                memcpy(*view + i, "\xee\x80\x80", 3);
    }
    return buf;
}

static int encode_text(encoder *e, const char *text, size_t off, size_t len) {
    const llm_tokenizer *t = e->t;
    size_t nlen;
    char *view;
    char *norm = normalize_utf8(text + off, len, &nlen, &view);
    if (!norm) return TOK_ENOMEM;
    int rc = 0;
    int cur = 0;
    e->spans[0].n = 0;
    if ((rc = span_push(&e->spans[0], 0, nlen))) goto done;
    for (int i = 0; i < t->n_re; i++) {
        if ((rc = regex_split(e, t->re[i], view ? view : norm, &e->spans[cur], &e->spans[cur ^ 1])))
            goto done;
        cur ^= 1;
    }
    const span *sp = e->spans[cur].p;
    for (size_t k = 0; k < e->spans[cur].n; k++)
        if ((rc = bpe_word(e, norm + sp[k].off, sp[k].len))) goto done;
done:
    free(norm);
    free(view);
    return rc;
}

/* Cut special tokens out of the text fragments, one token at a time in
 * length order, leftmost occurrences first (llama.cpp's tokenizer_st_partition). */
static int partition_special(encoder *e, const char *text, size_t len, int parse_special,
                             int *which) {
    const llm_tokenizer *t = e->t;
    int cur = 0;
    e->frags[0].n = 0;
    fragment whole = {0, len, -1};
    if (vec_push(&e->frags[0], &whole)) return TOK_ENOMEM;
    for (int si = 0; si < t->n_special; si++) {
        int32_t id = t->special[si];
        uint8_t ty = t->type[id];
        if (!parse_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) continue;
        const char *st = t->text_pool + t->text_off[id];
        size_t sn = t->text_len[id];
        vec *in = &e->frags[cur], *out = &e->frags[cur ^ 1];
        out->n = 0;
        int found = 0;
        for (size_t k = 0; k < in->n; k++) {
            fragment fr = ((fragment *)in->p)[k];
            if (fr.id >= 0 || fr.len < sn) {
                if (vec_push(out, &fr)) return TOK_ENOMEM;
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            while (pos < end) {
                const char *m = memmem(text + pos, end - pos, st, sn);
                if (!m) break;
                size_t mo = (size_t)(m - text);
                fragment left = {pos, mo - pos, -1}, tokf = {mo, sn, id};
                if ((left.len && vec_push(out, &left)) || vec_push(out, &tokf)) return TOK_ENOMEM;
                pos = mo + sn;
                found = 1;
            }
            fragment rest = {pos, end - pos, -1};
            if (rest.len && vec_push(out, &rest)) return TOK_ENOMEM;
        }
        if (found) cur ^= 1;
    }
    *which = cur;
    return 0;
}

int tok_encode(const llm_tokenizer *t, const char *text, size_t len, int add_special,
               int parse_special, int32_t **out) {
    *out = NULL;
    if (!text && len) return TOK_EINVAL;
    encoder e;
    memset(&e, 0, sizeof e);
    e.t = t;
    byte_alphabet_init(&e.alpha);
    e.out.elem = sizeof(int32_t);
    e.frags[0].elem = e.frags[1].elem = sizeof(fragment);
    e.spans[0].elem = e.spans[1].elem = sizeof(span);
    e.word.elem = 1;
    e.syms.elem = sizeof(symbol);
    e.heap.elem = sizeof(bigram);
    int rc = 0;
    e.md = pcre2_match_data_create(4, NULL);
    if (!e.md || vec_reserve(&e.out, len / 2 + 4)) {
        rc = TOK_ENOMEM;
        goto done;
    }

    if (add_special && t->add_bos && t->bos >= 0 && (rc = emit(&e, t->bos))) goto done;
    if (len) {
        int which;
        if ((rc = partition_special(&e, text, len, parse_special, &which))) goto done;
        const fragment *fr = e.frags[which].p;
        size_t nfr = e.frags[which].n;
        for (size_t k = 0; k < nfr; k++) {
            fragment f = fr[k]; /* copy: encode_text does not touch frags, but be explicit */
            rc = f.id >= 0 ? emit(&e, f.id) : encode_text(&e, text, f.off, f.len);
            if (rc) goto done;
        }
    }
    if (add_special && t->add_eos && t->eos >= 0 && (rc = emit(&e, t->eos))) goto done;

done:
    pcre2_match_data_free(e.md);
    free(e.frags[0].p);
    free(e.frags[1].p);
    free(e.spans[0].p);
    free(e.spans[1].p);
    free(e.word.p);
    free(e.syms.p);
    free(e.heap.p);
    if (rc) {
        free(e.out.p);
        return rc;
    }
    if (e.out.n > INT32_MAX) {
        free(e.out.p);
        return TOK_EINVAL;
    }
    *out = e.out.p;
    return (int)e.out.n;
}

/* ---- decoding -------------------------------------------------------------------------- */

static const char *piece_ptr(const llm_tokenizer *t, int32_t id, int render_special, size_t *n) {
    uint8_t ty = t->type[id];
    if (!render_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) {
        *n = 0;
        return t->piece_pool;
    }
    *n = t->piece_len[id];
    return t->piece_pool + t->piece_off[id];
}

int tok_piece(const llm_tokenizer *t, int32_t id, int render_special, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return TOK_EINVAL;
    size_t n;
    const char *p = piece_ptr(t, id, render_special, &n);
    if (buf && cap) memcpy(buf, p, n < cap ? n : cap);
    return (int)n;
}

int tok_decode(const llm_tokenizer *t, const int32_t *ids, size_t n, int render_special, char *buf,
               size_t cap) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return TOK_EINVAL;
        size_t pn;
        const char *p = piece_ptr(t, ids[i], render_special, &pn);
        if (buf && total < cap) memcpy(buf + total, p, pn < cap - total ? pn : cap - total);
        total += pn;
        if (total > INT32_MAX) return TOK_EINVAL;
    }
    return (int)total;
}

/* ---- incremental detokenizer -------------------------------------------------------------- */

enum { U8_VALID, U8_INVALID, U8_INCOMPLETE };

/* Classify the sequence starting at p[0] (strict UTF-8: no overlongs,
 * surrogates or code points above U+10FFFF). *len: bytes of a valid
 * character, or of the maximal invalid subpart to replace by one U+FFFD. */
static int utf8_classify(const uint8_t *p, size_t n, size_t *len) {
    uint8_t c = p[0];
    if (c < 0x80) {
        *len = 1;
        return U8_VALID;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) need = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        *len = 1;
        return U8_INVALID;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *len = i;
            return U8_INCOMPLETE;
        }
        uint8_t lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xbf;
        if (p[i] < lo_i || p[i] > hi_i) {
            *len = i;
            return U8_INVALID;
        }
    }
    *len = need;
    return U8_VALID;
}

void tok_stream_init(tok_stream *s, int render_special) {
    memset(s, 0, sizeof *s);
    s->render_special = render_special;
}

/* The bytes a stream works on: what it held back, then the new piece. */
typedef struct {
    const uint8_t *a;
    size_t na;
    const uint8_t *b;
    size_t nb;
} two_part;

static uint8_t two_part_at(const two_part *d, size_t i) {
    return i < d->na ? d->a[i] : d->b[i - d->na];
}

/* Write complete characters to out (when out != NULL) and return the output
 * length; *held = trailing bytes that may still become a valid character. */
static size_t stream_process(const two_part *d, char *out, size_t *held) {
    size_t n = d->na + d->nb, o = 0, i = 0;
    *held = 0;
    while (i < n) {
        uint8_t win[4];
        size_t w = n - i < 4 ? n - i : 4, len;
        for (size_t k = 0; k < w; k++) win[k] = two_part_at(d, i + k);
        int cls = utf8_classify(win, w, &len);
        if (cls == U8_INCOMPLETE) {
            *held = n - i;
            break;
        }
        if (cls == U8_VALID) {
            if (out) memcpy(out + o, win, len);
            o += len;
        } else {
            if (out) memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
        }
        i += len;
    }
    return o;
}

int tok_stream_push(tok_stream *s, const llm_tokenizer *t, int32_t id, char *out, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return TOK_EINVAL;
    size_t pn;
    const char *p = piece_ptr(t, id, s->render_special, &pn);
    if (pn == 0) return 0;
    uint8_t pending[sizeof s->pending];
    memcpy(pending, s->pending, (size_t)s->n_pending);
    two_part d = {pending, (size_t)s->n_pending, (const uint8_t *)p, pn};
    size_t held;
    size_t need = stream_process(&d, NULL, &held);
    if (need > cap || need > INT32_MAX) return TOK_ENOSPC;
    stream_process(&d, out, &held);
    /* held <= 3: an incomplete character is at most 3 bytes */
    for (size_t k = 0; k < held; k++) s->pending[k] = (char)two_part_at(&d, d.na + d.nb - held + k);
    s->n_pending = (int)held;
    return (int)need;
}

int tok_stream_flush(tok_stream *s, char *out, size_t cap) {
    if (s->n_pending == 0) return 0;
    if (cap < 3) return TOK_ENOSPC;
    memcpy(out, "\xef\xbf\xbd", 3); /* an incomplete character is one maximal subpart */
    s->n_pending = 0;
    return 3;
}
