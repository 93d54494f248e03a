/*
 * tiny_vocab.c - see tiny_vocab.h. BPE token text is stored in GPT-2's byte
 * alphabet (a space is stored as U+0120), built here from the rule rather
 * than shared with the engine, so a mistake on either side shows up; the
 * SentencePiece vocabulary stores a space as U+2581.
 */
#include "tests/fuzz/tiny_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer.h"

enum { N_BYTES = 256, MAX_TOKENS = 320, MAX_MERGES = 40, MAX_TEXT = 48 };

typedef struct {
    char text[MAX_TOKENS][MAX_TEXT];
    int32_t type[MAX_TOKENS];
    int n;
    char merges[MAX_MERGES][2 * MAX_TEXT];
    int n_merges;
    char alphabet[N_BYTES][3]; /* each byte as stored: 1 or 2 UTF-8 bytes, NUL-terminated */
} vocab;

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other
 * 68 take code points from U+0100 on, in byte order. */
static void alphabet_init(vocab *v) {
    unsigned next = 256;
    for (int b = 0; b < N_BYTES; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        unsigned cp = printable ? (unsigned)b : next++;
        char *o = v->alphabet[b];
        if (cp < 0x80) {
            o[0] = (char)cp;
            o[1] = 0;
        } else {
            o[0] = (char)(0xc0 | (cp >> 6));
            o[1] = (char)(0x80 | (cp & 0x3f));
            o[2] = 0;
        }
    }
}

static void stored_form(const vocab *v, const char *raw, char *out) {
    out[0] = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++) strcat(out, v->alphabet[*p]);
}

static void add_token(vocab *v, const char *stored, int32_t type) {
    snprintf(v->text[v->n], MAX_TEXT, "%s", stored);
    v->type[v->n++] = type;
}

/* The merge "left right" of two raw strings; with_token adds the result. */
static void add_merge(vocab *v, const char *left, const char *right, int with_token) {
    char l[MAX_TEXT], r[MAX_TEXT];
    stored_form(v, left, l);
    stored_form(v, right, r);
    snprintf(v->merges[v->n_merges++], 2 * MAX_TEXT, "%s %s", l, r);
    if (with_token) {
        char both[MAX_TEXT];
        /* every merged pair here is short; a longer one is a bug in the table */
        if ((size_t)snprintf(both, sizeof both, "%.*s%s", MAX_TEXT - 1, l, r) >= sizeof both)
            abort();
        add_token(v, both, TOK_TYPE_NORMAL);
    }
}

static void build(vocab *v) {
    static const char *const merges[][2] = {
        {"h", "e"},    {"l", "l"},       {"he", "ll"},     {"hell", "o"},        {" ", "w"},
        {"o", "r"},    {" w", "or"},     {"l", "d"},       {" wor", "ld"},       {"t", "h"},
        {"th", "e"},   {" ", "the"},     {"i", "n"},       {" ", "in"},          {"a", "n"},
        {"an", "d"},   {" ", "and"},     {" ", " "},       {"  ", "  "},         {"\n", "\n"},
        {"1", "2"},    {"12", "3"},      {"'", "s"},       {"'", "t"},           {"\xc3", "\xa9"},
        {" ", "\xf0"}, {"\xf0", "\x9f"}, {"\xe4", "\xbd"}, {"\xe4\xbd", "\xa0"}, {"e", "r"},
    };
    memset(v, 0, sizeof *v);
    alphabet_init(v);
    for (int b = 0; b < N_BYTES; b++) add_token(v, v->alphabet[b], TOK_TYPE_NORMAL);
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++)
        add_merge(v, merges[i][0], merges[i][1], 1);
    add_merge(v, "x", "y", 0);
    add_token(v, "<|im_start|>", TOK_TYPE_CONTROL);
    add_token(v, "<|im_end|>", TOK_TYPE_CONTROL);
    add_token(v, "<|endoftext|>", TOK_TYPE_CONTROL);
    add_token(v, "<tool>", TOK_TYPE_USER_DEFINED);
}

void tiny_vocab_write(gguf_writer *gw) {
    vocab v;
    build(&v);
    const char *tokens[MAX_TOKENS], *merges[MAX_MERGES];
    for (int i = 0; i < v.n; i++) tokens[i] = v.text[i];
    for (int i = 0; i < v.n_merges; i++) merges[i] = v.merges[i];
    gw_kv_str(gw, "tokenizer.ggml.model", "gpt2");
    gw_kv_str(gw, "tokenizer.ggml.pre", "smollm");
    gw_kv_arr_str(gw, "tokenizer.ggml.tokens", tokens, (size_t)v.n);
    gw_kv_arr_i32(gw, "tokenizer.ggml.token_type", v.type, (size_t)v.n);
    gw_kv_arr_str(gw, "tokenizer.ggml.merges", merges, (size_t)v.n_merges);
    gw_kv_u32(gw, "tokenizer.ggml.bos_token_id", (uint32_t)(v.n - 4));
    gw_kv_u32(gw, "tokenizer.ggml.eos_token_id", (uint32_t)(v.n - 2));
    gw_kv_bool(gw, "tokenizer.ggml.add_bos_token", 1);
}

/* SentencePiece: <unk>, <s>, </s>, the 256 <0xNN> byte tokens, pieces with
 * scores (longer ones score higher, as after training), <tool>. */
void tiny_vocab_write_spm(gguf_writer *gw) {
    static const char *const pieces[] = {"\xe2\x96\x81",
                                         "e",
                                         "h",
                                         "l",
                                         "o",
                                         "w",
                                         "r",
                                         "d",
                                         "he",
                                         "ll",
                                         "hell",
                                         "hello",
                                         "or",
                                         "ld",
                                         "\xe2\x96\x81w",
                                         "\xe2\x96\x81wor",
                                         "\xe2\x96\x81world",
                                         "\xe2\x96\x81h",
                                         "\xe2\x96\x81hello",
                                         "\xe2\x96\x81\xe2\x96\x81",
                                         "\xc3\xa9",
                                         "\xe4\xbd\xa0",
                                         "12",
                                         "123"};
    enum { N_PIECES = sizeof pieces / sizeof pieces[0], N = 3 + N_BYTES + N_PIECES + 1 };
    static char bytes[N_BYTES][7];
    const char *tokens[N];
    int32_t types[N];
    float scores[N];
    int n = 0;
    tokens[n] = "<unk>", types[n] = TOK_TYPE_UNKNOWN, scores[n++] = 0;
    tokens[n] = "<s>", types[n] = TOK_TYPE_CONTROL, scores[n++] = 0;
    tokens[n] = "</s>", types[n] = TOK_TYPE_CONTROL, scores[n++] = 0;
    for (int b = 0; b < N_BYTES; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[n] = bytes[b], types[n] = TOK_TYPE_BYTE, scores[n++] = 0;
    }
    for (int i = 0; i < N_PIECES; i++)
        tokens[n] = pieces[i], types[n] = TOK_TYPE_NORMAL, scores[n++] = (float)strlen(pieces[i]);
    tokens[n] = "<tool>", types[n] = TOK_TYPE_USER_DEFINED, scores[n++] = 0;
    gw_kv_str(gw, "tokenizer.ggml.model", "llama");
    gw_kv_str(gw, "tokenizer.ggml.pre", "default");
    gw_kv_arr_str(gw, "tokenizer.ggml.tokens", tokens, (size_t)n);
    gw_kv_arr_i32(gw, "tokenizer.ggml.token_type", types, (size_t)n);
    gw_kv_arr_f32(gw, "tokenizer.ggml.scores", scores, (size_t)n);
}
