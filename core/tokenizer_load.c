/*
 * tokenizer_load.c - builds a llm_tokenizer from tokenizer.ggml.* metadata
 * (see tokenizer.h for the contract): the vocabulary and token types, the
 * merges, bos/eos and the end-of-generation set, the special-token list for
 * the partition, each token's decoded piece, and the pre-tokenizer regexes.
 *
 * Lookups are hash tables (open addressing, FNV-1a): token text -> id and
 * (left, right) merge pair -> rank, so encoding never scans the vocabulary.
 *
 * Regexes run on PCRE2 (UTF mode). `\s` is spelled out as the Unicode
 * White_Space set that llama.cpp's tables use, because PCRE2's own `\s`
 * differs from it (U+0085, U+180E). \p{L} and \p{N} come from PCRE2's
 * Unicode tables; checked code point by code point against llama.cpp
 * (llama-cpp-python 0.3.36), they split identically.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer.h"
#include "core/tokenizer_internal.h"

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

static const tok_pre_def k_pre_defs[] = {
    {"default",
     {"default", NULL},
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL},
     0,
     0},
    {"gpt2",
     {"gpt2",        "gpt-2",       "phi-2",   "jina-es", "jina-de",    "gigachat",
      "jina-v2-es",  "jina-v2-de",  "a.x-4.0", "mellum",  "jina-v1-en", "jina-v2-code",
      "roberta-bpe", "mpt",         "olmo",    "jais",    "trillion",   "granite-docling",
      "exaone4",     "modern-bert", NULL},
     {RX_GPT2, NULL},
     0,
     0},
    {"smollm",
     {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2",
      NULL},
     {"\\p{N}", RX_GPT2, NULL},
     0,
     0},
    {"llama3",
     {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
      "jina-v5-nano", NULL},
     {RX_LLAMA3_LIKE("\\p{N}{1,3}"), NULL},
     1,
     1},
    {"dbrx", {"dbrx", "smaug-bpe", NULL}, {RX_LLAMA3_LIKE("\\p{N}{1,3}"), NULL}, 0, 0},
    {"qwen2",
     {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
      "solar-open", NULL},
     {RX_LLAMA3_LIKE("\\p{N}"), NULL},
     0,
     0},
    {"falcon",
     {"falcon", NULL},
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]", NULL},
     0,
     0},
};

/* SentencePiece vocabularies: no regexes; the name tok_pre_name reports. */
static const tok_pre_def k_pre_spm = {"spm", {NULL}, {NULL}, 0, 1};

/* tokenizer.ggml.pre names for which llama.cpp turns its decode-time space
 * clean-up off (on for every other byte-level BPE vocabulary, off for SPM). */
static const char *const k_no_clean_spaces[] = {
    "smollm",  "command-r",  "qwen2",    "deepseek-r1-qwen", "kormo", "f2llmv2",
    "hunyuan", "solar-open", "trillion", "granite-docling",  NULL};

static int name_in(const char *const *list, const char *name, size_t len) {
    for (; *list; list++)
        if (strlen(*list) == len && memcmp(*list, name, len) == 0) return 1;
    return 0;
}

static const tok_pre_def *pre_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof k_pre_defs / sizeof k_pre_defs[0]; i++)
        for (const char *const *a = k_pre_defs[i].aliases; *a; a++)
            if (strlen(*a) == len && memcmp(*a, name, len) == 0) return &k_pre_defs[i];
    return NULL;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- hash tables ----------------------------------------------------------------------- */

static uint32_t table_size_for(uint64_t n) {
    uint64_t size = 16;
    while (size < 2 * n) size <<= 1;
    return (uint32_t)size;
}

/* Later duplicates replace earlier ones, as in llama.cpp's token_to_id map. */
static void vocab_insert(llm_tokenizer *t, int32_t id) {
    const char *s = t->text_pool + t->text_off[id];
    size_t n = t->text_len[id];
    uint32_t i = (uint32_t)tok_fnv_update(TOK_FNV_INIT, s, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        int32_t cur = t->vocab_ht[i];
        if (cur < 0 ||
            (t->text_len[cur] == n && memcmp(t->text_pool + t->text_off[cur], s, n) == 0)) {
            t->vocab_ht[i] = id;
            return;
        }
    }
}

/* The first occurrence of a pair keeps its rank (llama.cpp uses emplace). */
static void merge_insert(llm_tokenizer *t, int32_t m) {
    const char *ms = t->merge_pool + t->merge_off[m];
    size_t ln = t->merge_llen[m], rn = t->merge_rlen[m];
    uint32_t i = (uint32_t)tok_hash_pair(ms, ln, ms + ln + 1, rn) & t->merge_mask;
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
        int32_t id = tok_vocab_lookup(t, *list, strlen(*list));
        if (id >= 0) return id;
    }
    return -1;
}

static void force_control(llm_tokenizer *t, int32_t id) {
    if (id >= 0 && t->type[id] != TOK_TYPE_CONTROL) t->type[id] = TOK_TYPE_CONTROL;
}

/* Token texts that llama.cpp recognises as end-of-turn, FIM and
 * end-of-generation tokens (forced to CONTROL), and texts that are always
 * user-defined. Each list ends with NULL; earlier texts win. */
static const char *const k_eot_texts[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "<|end_of_text|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "[EOT]",
                                          "<\xef\xbd\x9c"
                                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                          "<end_of_utterance>",
                                          NULL};
static const char *const k_eom_texts[] = {"<|eom_id|>", NULL};
static const char *const k_fim_pre_texts[] = {"<|fim_prefix|>",
                                              "<fim-prefix>",
                                              "<fim_prefix>",
                                              "<\xef\xbd\x9c"
                                              "fim\xe2\x96\x81"
                                              "begin\xef\xbd\x9c>",
                                              "<PRE>",
                                              "\xe2\x96\x81<PRE>",
                                              "<|code_prefix|>",
                                              "<|prefix|>",
                                              NULL};
static const char *const k_fim_suf_texts[] = {"<|fim_suffix|>",
                                              "<fim-suffix>",
                                              "<fim_suffix>",
                                              "<\xef\xbd\x9c"
                                              "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                              "<SUF>",
                                              "\xe2\x96\x81<SUF>",
                                              "<|code_suffix|>",
                                              "<|suffix|>",
                                              NULL};
static const char *const k_fim_mid_texts[] = {"<|fim_middle|>",
                                              "<fim-middle>",
                                              "<fim_middle>",
                                              "<\xef\xbd\x9c"
                                              "fim\xe2\x96\x81"
                                              "end\xef\xbd\x9c>",
                                              "<MID>",
                                              "\xe2\x96\x81<MID>",
                                              "<|code_middle|>",
                                              "<|middle|>",
                                              NULL};
static const char *const k_fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                              "<PAD>",       "[PAD]",     NULL};
static const char *const k_fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                              "<REPO>",       "<reponame>",    NULL};
static const char *const k_fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const k_eog_texts[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<|return|>",
                                          "<|call|>",
                                          "<|flush|>",
                                          "<|calls|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "</s>",
                                          "<|eom_id|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "[EOT]",
                                          "[EOS]",
                                          "<|end_of_text|>",
                                          "<end_of_utterance>",
                                          "<eos>",
                                          "<turn|>",
                                          "<|tool_response>",
                                          "<\xef\xbd\x9c"
                                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                          "[e~[",
                                          NULL};
static const char *const k_always_user[] = {"<|channel|>", "<|message|>", "<|start|>",
                                            "<|constrain|>", NULL};

/* The id of text when it is an EOG token, else -1. */
static int32_t eog_id(const llm_tokenizer *t, const char *text) {
    int32_t id = tok_vocab_lookup(t, text, strlen(text));
    return id >= 0 && t->eog[id] ? id : -1;
}

/* The EOG set: the given ids plus every token named in k_eog_texts; then
 * the type fix-ups that depend on it. */
static void mark_eog(llm_tokenizer *t, const int32_t *extra_eog, size_t n_extra) {
    for (size_t i = 0; i < n_extra; i++)
        if (extra_eog[i] >= 0) t->eog[extra_eog[i]] = 1;
    for (const char *const *p = k_eog_texts; *p; p++) {
        int32_t id = tok_vocab_lookup(t, *p, strlen(*p));
        if (id >= 0) {
            t->eog[id] = 1;
            force_control(t, id);
        }
    }
    for (const char *const *p = k_always_user; *p; p++) {
        int32_t id = tok_vocab_lookup(t, *p, strlen(*p));
        if (id >= 0) t->type[id] = TOK_TYPE_USER_DEFINED;
    }

    /* gpt-oss (harmony) and solar-open: with <|return|> and <|call|> (or <|calls|> and
     * <|flush|>) in the EOG set, <|end|> is not EOG. */
    int32_t end_id = eog_id(t, "<|end|>"), call_id = eog_id(t, "<|call|>");
    if (call_id < 0) call_id = eog_id(t, "<|calls|>");
    if (end_id >= 0 && call_id >= 0 &&
        (eog_id(t, "<|return|>") >= 0 || eog_id(t, "<|flush|>") >= 0)) {
        t->eog[end_id] = 0;
        t->type[end_id] = TOK_TYPE_USER_DEFINED;
    }
    /* Gemma 4 and PLaMo have an ordinary </s> */
    int32_t s_id = eog_id(t, "</s>");
    if (s_id >= 0 && (eog_id(t, "<|tool_response>") >= 0 || eog_id(t, "<|plamo:eos|>") >= 0)) {
        t->eog[s_id] = 0;
        t->type[s_id] = TOK_TYPE_NORMAL;
    }
}

/* llama.cpp recognises end-of-turn, FIM and end-of-generation tokens by their
 * text and forces them to CONTROL; the EOG set is built from the same lists. */
static int detect_special(llm_tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    int32_t eot = -1, eom = -1, fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1,
            fim_rep = -1, fim_sep = -1;
    /* metadata id first; without one, the first listed text that is a token */
    struct {
        const char *key;
        int32_t *id;
        const char *const *texts;
    } detect[] = {
        {"tokenizer.ggml.eot_token_id", &eot, k_eot_texts},
        {"tokenizer.ggml.eom_token_id", &eom, k_eom_texts},
        {"tokenizer.ggml.fim_pre_token_id", &fim_pre, k_fim_pre_texts},
        {"tokenizer.ggml.fim_suf_token_id", &fim_suf, k_fim_suf_texts},
        {"tokenizer.ggml.fim_mid_token_id", &fim_mid, k_fim_mid_texts},
        {"tokenizer.ggml.fim_pad_token_id", &fim_pad, k_fim_pad_texts},
        {"tokenizer.ggml.fim_rep_token_id", &fim_rep, k_fim_rep_texts},
        {"tokenizer.ggml.fim_sep_token_id", &fim_sep, k_fim_sep_texts},
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
    mark_eog(t, extra_eog, sizeof extra_eog / sizeof extra_eog[0]);
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const llm_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Decoded bytes of a NORMAL token: SPM turns U+2581 back into spaces; BPE
 * maps GPT-2's byte alphabet back to bytes (other characters pass). */
static size_t normal_piece(const llm_tokenizer *t, const uint8_t *s, size_t n, char *dst) {
    size_t pos = 0;
    for (size_t i = 0; i < n;) {
        if (t->kind == TOK_KIND_SPM) {
            if (n - i >= 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                dst[pos++] = ' ';
                i += 3;
            } else {
                dst[pos++] = (char)s[i++];
            }
            continue;
        }
        uint32_t cp = 0xfffd;
        int k = tok_utf8_decode_lenient(s + i, n - i, &cp);
        if (k == 0) k = 1;
        if (cp < 0x144 && t->alpha.dec[cp] >= 0) {
            dst[pos++] = (char)t->alpha.dec[cp];
        } else {
            memcpy(dst + pos, s + i, (size_t)k); /* not in the byte alphabet: pass it through */
            pos += (size_t)k;
        }
        i += (size_t)k;
    }
    return pos;
}

/* The byte of a <0xNN> token: up to two hex digits after "<0x", as strtol. */
static char byte_token_value(const uint8_t *s, size_t n) {
    unsigned v = 0;
    for (size_t i = 3; i < 5 && i < n; i++) {
        uint8_t c = s[i];
        unsigned d = c >= '0' && c <= '9'   ? c - '0'
                     : c >= 'a' && c <= 'f' ? c - 'a' + 10
                     : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                            : 16;
        if (d == 16) break;
        v = v * 16 + d;
    }
    return (char)v;
}

static int build_pieces(llm_tokenizer *t) {
    tok_byte_alphabet_init(&t->alpha);
    size_t total = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) total += t->text_len[id] + 1;
    /* a decoded piece is never longer than its text (a byte token: 1 byte) */
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
        case TOK_TYPE_NORMAL: pos += normal_piece(t, s, n, t->piece_pool + pos); break;
        case TOK_TYPE_BYTE: t->piece_pool[pos++] = byte_token_value(s, n); break;
        default: /* unused / undefined tokens decode to nothing */ break;
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

/* Total text of string array idx (n entries), which must fit 32-bit pool
 * offsets; what names the array in the message. */
static int str_arr_total(const gguf_file *f, int64_t idx, uint64_t n, const char *what,
                         size_t *total, char *err, size_t errlen) {
    *total = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_arr_str(f, idx, i, &s)) return TOK_EFORMAT;
        *total += s.len;
    }
    if (*total > UINT32_MAX - 1) {
        set_err(err, errlen, "tokenizer: %s too large", what);
        return TOK_EFORMAT;
    }
    return 0;
}

/* tokenizer.ggml.token_type, when present, must give one type per token; an
 * absent one makes every token NORMAL, an unknown value UNDEFINED. */
static int load_token_types(llm_tokenizer *t, const gguf_file *f, uint64_t n, char *err,
                            size_t errlen) {
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
    size_t total;
    if ((rc = str_arr_total(f, idx, n, "vocabulary text", &total, err, errlen))) return rc;
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

    if ((rc = load_token_types(t, f, n, err, errlen))) return rc;
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
    size_t total;
    if ((rc = str_arr_total(f, idx, n, "merges", &total, err, errlen))) return rc;
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

/* The vocabulary kind (tokenizer.ggml.model) and, for byte-level BPE, the
 * pre-tokenizer (tokenizer.ggml.pre); SentencePiece has none, as in llama.cpp
 * (which ignores tokenizer.ggml.pre for it: Gemma files say "default"). */
static int select_model(const gguf_file *f, tok_kind *kind, const tok_pre_def **out,
                        int *clean_spaces, char *err, size_t errlen) {
    gguf_str model;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &model);
    if (rc) {
        set_err(err, errlen, "tokenizer: metadata key 'tokenizer.ggml.model' is %s",
                rc == GGUF_ENOTFOUND ? "missing" : "not a string");
        return TOK_EFORMAT;
    }
    *clean_spaces = 0;
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) {
        *kind = TOK_KIND_SPM;
        *out = &k_pre_spm;
        return 0;
    }
    if (model.len != 4 || memcmp(model.ptr, "gpt2", 4) != 0) {
        set_err(err, errlen,
                "tokenizer: model '%.*s' is not supported ('gpt2' byte-level BPE and 'llama' "
                "SentencePiece are)",
                (int)(model.len > 64 ? 64 : model.len), model.ptr);
        return TOK_EFORMAT;
    }
    *kind = TOK_KIND_BPE;

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
    *out = pre;
    *clean_spaces = rc != 0 || !name_in(k_no_clean_spaces, pre_name.ptr, pre_name.len);
    return 0;
}

/* Control, user-defined and unknown tokens with text, longest first: the
 * order in which the special-token partition cuts them out. */
static int build_special_list(llm_tokenizer *t) {
    t->special = malloc(sizeof(int32_t) * (size_t)t->n_vocab);
    if (!t->special) return TOK_ENOMEM;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
            t->text_len[id] > 0)
            t->special[t->n_special++] = id;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof(int32_t), cmp_special, t);
    return 0;
}

/* tokenizer.ggml.scores (SPM merge priorities): float32 or int32, at least
 * one per token; absent means all 0, as in llama.cpp. */
static int load_scores(llm_tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    t->score = calloc((size_t)t->n_vocab, sizeof(float));
    if (!t->score) return TOK_ENOMEM;
    int64_t idx = gguf_find_key(f, "tokenizer.ggml.scores");
    if (idx < 0) return 0;
    gguf_type at =
        gguf_kv_type(f, idx) == GGUF_TYPE_ARRAY ? gguf_arr_type(f, idx) : GGUF_TYPE_COUNT;
    if ((at != GGUF_TYPE_FLOAT32 && at != GGUF_TYPE_INT32) ||
        gguf_arr_len(f, idx) < (uint64_t)t->n_vocab) {
        set_err(err, errlen,
                "tokenizer: tokenizer.ggml.scores must be a float32 or int32 array with one "
                "entry per token");
        return TOK_EFORMAT;
    }
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int64_t v;
        if (at == GGUF_TYPE_FLOAT32) gguf_arr_f32(f, idx, (uint64_t)id, &t->score[id]);
        else if (!gguf_arr_int(f, idx, (uint64_t)id, &v)) t->score[id] = (float)v;
    }
    return 0;
}

/* SPM byte fallback: <0xNN> (upper-case hex), else the token that is the
 * byte itself, as llama.cpp's byte_to_token. */
static void build_byte_ids(llm_tokenizer *t) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        char raw = (char)b;
        int32_t id = tok_vocab_lookup(t, name, 6);
        t->byte_id[b] = id >= 0 ? id : tok_vocab_lookup(t, &raw, 1);
    }
}

/* llama.cpp's per-model token attributes: for a model named Phi-3, white
 * space after a special token is dropped (except after <unk>, <s> and
 * <|endoftext|>), and also after </s>. */
static int set_strip_flags(llm_tokenizer *t, const gguf_file *f) {
    gguf_str name;
    if (gguf_get_str(f, "general.name", &name)) return 0;
    char low[256];
    size_t n = name.len < sizeof low - 1 ? name.len : sizeof low - 1;
    for (size_t i = 0; i < n; i++) {
        char c = name.ptr[i];
        low[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    low[n] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return 0;
    t->strip = calloc((size_t)t->n_vocab, 1);
    if (!t->strip) return TOK_ENOMEM;
    for (int i = 0; i < t->n_special; i++) t->strip[t->special[i]] |= TOK_STRIP_RIGHT;
    static const char *const on[] = {"</s>", NULL}, *const off[] = {"<unk>", "<s>", "<|endoftext|>",
                                                                    NULL};
    for (const char *const *p = on; *p; p++) {
        int32_t id = tok_vocab_lookup(t, *p, strlen(*p));
        if (id >= 0) t->strip[id] |= TOK_STRIP_RIGHT;
    }
    for (const char *const *p = off; *p; p++) {
        int32_t id = tok_vocab_lookup(t, *p, strlen(*p));
        if (id >= 0) t->strip[id] &= (uint8_t)~TOK_STRIP_RIGHT;
    }
    return 0;
}

/* Kind-specific state and llama.cpp's defaults before the metadata keys:
 * BPE has merges and BOS = EOS = 11; SPM has scores, byte tokens, BOS 1,
 * EOS 2, <unk> 0, adds BOS and a space prefix. */
static int load_kind(llm_tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    int32_t def_bos = 11, def_eos = 11, def_unk = -1;
    t->add_bos = t->pre->add_bos;
    if (t->kind == TOK_KIND_SPM) {
        def_bos = 1;
        def_eos = 2;
        def_unk = 0;
        t->add_bos = 1;
        t->add_space_prefix = 1;
        int rc = load_scores(t, f, err, errlen);
        if (rc) return rc;
        build_byte_ids(t);
    } else {
        int rc = load_merges(t, f, err, errlen);
        if (rc) return rc;
    }
    t->bos = def_bos < t->n_vocab ? def_bos : -1;
    t->eos = def_eos < t->n_vocab ? def_eos : -1;
    t->unk = def_unk >= 0 && def_unk < t->n_vocab ? def_unk : -1;
    return 0;
}

int tok_load(const gguf_file *f, llm_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    const tok_pre_def *pre;
    tok_kind kind;
    int clean;
    int rc = select_model(f, &kind, &pre, &clean, err, errlen);
    if (rc) return rc;

    llm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "tokenizer: out of memory");
        return TOK_ENOMEM;
    }
    t->kind = kind;
    t->pre = pre;
    t->clean_spaces = clean;
    if ((rc = load_vocab(t, f, err, errlen)) || (rc = load_kind(t, f, err, errlen))) goto fail;

    if ((rc = get_opt_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err, errlen)) ||
        (rc = get_opt_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err, errlen)) ||
        (rc = get_opt_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk, err, errlen)) ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen)) ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos, err, errlen)) ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err,
                           errlen)) ||
        (rc = detect_special(t, f, err, errlen)) || (rc = build_special_list(t)) ||
        (rc = set_strip_flags(t, f)) || (rc = build_pieces(t)) ||
        (rc = compile_regexes(t, err, errlen)))
        goto fail;
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
    free(t->score);
    free(t->strip);
    free(t);
}
