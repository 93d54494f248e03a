/*
 * tokenizer_internal.h - what the tokenizer's files share: the loaded state
 * (struct llm_tokenizer), the pre-tokenizer description, the FNV-1a hashing
 * behind the vocabulary and merge tables, UTF-8 helpers and the GPT-2 byte
 * alphabet. Only core/tokenizer*.c include it; everyone else uses
 * core/tokenizer.h.
 *
 * tokenizer_load.c builds a llm_tokenizer from GGUF metadata and frees it;
 * tokenizer.c answers queries and encodes (special-token partition,
 * pre-tokenizer regexes, BPE); tokenizer_spm.c holds SentencePiece's
 * merge-by-score; tokenizer_stream.c decodes and runs the incremental
 * detokenizer. After tok_load the state is never written again.
 */
#ifndef ENGINE_TOKENIZER_INTERNAL_H
#define ENGINE_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tokenizer.h"

#define TOK_MAX_REGEX 6

typedef struct {
    const char *name;        /* canonical name */
    const char *aliases[24]; /* tokenizer.ggml.pre values that select it */
    const char *regex[TOK_MAX_REGEX];
    int ignore_merges; /* a word that is itself a token skips BPE */
    int add_bos;       /* default for add_bos_token */
} tok_pre_def;

/* GPT-2's byte-level alphabet: every byte as a printable code point. */
typedef struct {
    char enc[256][2]; /* UTF-8 of each byte's code point (1 or 2 bytes) */
    uint8_t enc_len[256];
    int16_t dec[0x144]; /* code point -> byte, -1 if none */
} byte_alphabet;

/* Which algorithm the vocabulary uses (tokenizer.ggml.model). */
typedef enum {
    TOK_KIND_BPE, /* "gpt2": byte-level BPE over pre-tokenized words, merges by rank */
    TOK_KIND_SPM, /* "llama": SentencePiece, merges by token score, <0xNN> byte fallback */
} tok_kind;

/* Per-token strip flags of the special-token partition (llama.cpp's
 * LSTRIP/RSTRIP attributes): white space next to the token is dropped. */
enum { TOK_STRIP_LEFT = 1, TOK_STRIP_RIGHT = 2 };

struct llm_tokenizer {
    tok_kind kind;
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

    float *score;         /* SPM merge priority (tokenizer.ggml.scores); NULL for BPE */
    int32_t byte_id[256]; /* SPM byte fallback: <0xNN> (else the one-byte token), -1 none */
    uint8_t *strip;       /* TOK_STRIP_* per token; NULL when no token has any */

    int32_t bos, eos, eot, eom, unk;
    int add_bos, add_eos;
    int add_space_prefix; /* SPM: a text fragment after BOS/special gets a leading space */
    int clean_spaces;     /* tok_decode removes " ?", " 's", ... (llama.cpp's clean_spaces) */
    const tok_pre_def *pre;
    pcre2_code *re[TOK_MAX_REGEX];
    int n_re;
    byte_alphabet alpha; /* built once at load; encoding and pieces read it */
};

/* ---- hashing (FNV-1a) ------------------------------------------------------------------ */

#define TOK_FNV_INIT 0xcbf29ce484222325ULL

static inline uint64_t tok_fnv_update(uint64_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static inline uint64_t tok_hash_pair(const char *l, size_t ln, const char *r, size_t rn) {
    uint64_t h = tok_fnv_update(TOK_FNV_INIT, l, ln);
    h = tok_fnv_update(h, "\xff", 1); /* 0xff never occurs in UTF-8, so splits stay distinct */
    return tok_fnv_update(h, r, rn);
}

/* Exact stored text -> token id, -1 when absent. */
int32_t tok_vocab_lookup(const llm_tokenizer *t, const char *s, size_t n);

/* ---- UTF-8 and the GPT-2 byte alphabet ----------------------------------------------------- */

/* Decode one code point the way llama.cpp does: lead-byte length, continuation
 * bytes checked, nothing else (overlongs and surrogates pass). Returns the
 * length consumed, 0 when invalid (the caller consumes one byte as U+FFFD). */
int tok_utf8_decode_lenient(const uint8_t *p, size_t n, uint32_t *cp);
/* Encode one code point (at most U+10FFFF); returns its length, 1..4. */
int tok_utf8_encode(uint32_t cp, char *out);

/* Fill the table from GPT-2's bytes_to_unicode. */
void tok_byte_alphabet_init(byte_alphabet *a);

/* ---- shared encoding scratch ----------------------------------------------------------- */

typedef struct {
    void *p;
    size_t n, cap, elem;
} tok_vec;

int tok_vec_reserve(tok_vec *v, size_t need);
int tok_vec_push(tok_vec *v, const void *x);

/* SentencePiece encoding of one text fragment (raw bytes, spaces not yet
 * escaped); appends ids to out (int32_t). prefix_space: prepend " " first. */
int tok_spm_encode_fragment(const llm_tokenizer *t, const char *text, size_t len, int prefix_space,
                            tok_vec *out);

#endif
