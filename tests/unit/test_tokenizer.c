/*
 * test_tokenizer.c - byte-level BPE tokenizer.
 *
 * Part 1 builds tiny vocabularies with the test GGUF writer and checks each
 * rule on its own: merge ranks, the GPT-2 byte alphabet, single-byte
 * fallback, special-token matching, digit and whitespace splitting per
 * pre-tokenizer, decoding and the incremental UTF-8 detokenizer.
 * Part 2 (when the real model and tests/golden/tokenize_lines.jsonl exist)
 * requires token-for-token identity with llama.cpp on every reference line,
 * a lossless stream round trip, and a speed bound.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/gguf.h"
#include "core/tokenizer.h"
#include "tests/common/gguf_writer.h"
#include "tests/common/test_util.h"

/* ---- tiny vocabulary ------------------------------------------------------------------- */

/* GPT-2 bytes_to_unicode, written independently of the engine's version. */
static int is_printable_byte(int b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
}

static void byte_char(int b, char *out) {
    int cp = b;
    if (!is_printable_byte(b)) {
        int n = 0;
        for (int c = 0; c < b; c++) n += !is_printable_byte(c);
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

/* Map raw text to the byte alphabet ("a b" -> "a\xc4\xa0" "b"). */
static const char *mapped(const char *raw, char *out) {
    out[0] = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
        char c[3];
        byte_char(*p, c);
        strcat(out, c);
    }
    return out;
}

enum { N_BYTES = 256, MAX_TOKENS = 400 };

typedef struct {
    char *text[MAX_TOKENS];
    int32_t type[MAX_TOKENS];
    int n;
    char *merges[64];
    int n_merges;
} vocab_spec;

static int spec_add(vocab_spec *v, const char *text, int type) {
    v->text[v->n] = strdup(text);
    v->type[v->n] = type;
    return v->n++;
}

/* Add the merge of two raw strings and the merged token; returns its id. */
static int spec_merge(vocab_spec *v, const char *left, const char *right) {
    char l[64], r[64], both[130];
    mapped(left, l);
    mapped(right, r);
    snprintf(both, sizeof both, "%s %s", l, r);
    v->merges[v->n_merges++] = strdup(both);
    snprintf(both, sizeof both, "%s%s", l, r);
    return spec_add(v, both, TOK_TYPE_NORMAL);
}

static void spec_free(vocab_spec *v) {
    for (int i = 0; i < v->n; i++) free(v->text[i]);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
}

/* Ids of the tiny vocabulary (bytes are 0..255: id == byte value). */
static int ID_AB, ID_BC, ID_HE, ID_LL, ID_HELL, ID_HELLO, ID_SP_W, ID_OR, ID_SP_WOR, ID_LD,
    ID_SP_WORLD, ID_SPSP, ID_SP_B, ID_NLNL, ID_12, ID_SP_EMOJI_LEAD, ID_APOS_S, ID_APOS_BIG_S,
    ID_IM_START, ID_IM_END, ID_EOT, ID_END, ID_TOOL, ID_EOS;

static void build_spec(vocab_spec *v) {
    memset(v, 0, sizeof *v);
    for (int b = 0; b < N_BYTES; b++) {
        char c[3];
        byte_char(b, c);
        spec_add(v, c, TOK_TYPE_NORMAL);
    }
    /* "b c" ranks before "a b": "abc" must become a + bc */
    ID_BC = spec_merge(v, "b", "c");
    ID_AB = spec_merge(v, "a", "b");
    ID_HE = spec_merge(v, "h", "e");
    ID_LL = spec_merge(v, "l", "l");
    ID_HELL = spec_merge(v, "he", "ll");
    ID_HELLO = spec_merge(v, "hell", "o");
    ID_SP_W = spec_merge(v, " ", "w");
    ID_OR = spec_merge(v, "o", "r");
    ID_SP_WOR = spec_merge(v, " w", "or");
    ID_LD = spec_merge(v, "l", "d");
    ID_SP_WORLD = spec_merge(v, " wor", "ld");
    ID_SPSP = spec_merge(v, " ", " ");
    ID_SP_B = spec_merge(v, " ", "b");
    ID_NLNL = spec_merge(v, "\n", "\n");
    ID_12 = spec_merge(v, "1", "2");
    ID_SP_EMOJI_LEAD = spec_merge(v, " ", "\xf0");
    ID_APOS_S = spec_merge(v, "'", "s");
    ID_APOS_BIG_S = spec_merge(v, "'", "S");
    /* a merge whose result is missing from the vocabulary: falls back to bytes */
    char l[8], r[8], both[20];
    snprintf(both, sizeof both, "%s %s", mapped("x", l), mapped("y", r));
    v->merges[v->n_merges++] = strdup(both);

    ID_IM_START = spec_add(v, "<|im_start|>", TOK_TYPE_CONTROL);
    ID_IM_END = spec_add(v, "<|im_end|>", TOK_TYPE_CONTROL);
    ID_END = spec_add(v, "<|end|>", TOK_TYPE_CONTROL);
    ID_EOT = spec_add(v, "<|endoftext|>", TOK_TYPE_CONTROL);
    ID_TOOL = spec_add(v, "<tool>", TOK_TYPE_USER_DEFINED);
    ID_EOS = spec_add(v, "</s>", TOK_TYPE_CONTROL);
}

/* Serialize the spec with the given metadata; NULL pre = key absent. */
static llm_tokenizer *load_spec(const vocab_spec *v, const char *model, const char *pre,
                                int add_bos, char *err, size_t errlen, int *rc_out) {
    gguf_writer *gw = gw_new(3);
    gw_kv_str(gw, "general.architecture", "llama");
    if (model) gw_kv_str(gw, "tokenizer.ggml.model", model);
    if (pre) gw_kv_str(gw, "tokenizer.ggml.pre", pre);
    gw_kv_arr_str(gw, "tokenizer.ggml.tokens", (const char *const *)v->text, (size_t)v->n);
    gw_kv_arr_i32(gw, "tokenizer.ggml.token_type", v->type, (size_t)v->n);
    gw_kv_arr_str(gw, "tokenizer.ggml.merges", (const char *const *)v->merges, (size_t)v->n_merges);
    gw_kv_u32(gw, "tokenizer.ggml.bos_token_id", (uint32_t)ID_IM_START);
    gw_kv_u32(gw, "tokenizer.ggml.eos_token_id", (uint32_t)ID_EOS);
    gw_kv_bool(gw, "tokenizer.ggml.add_bos_token", add_bos);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    gguf_file *f;
    llm_tokenizer *t = NULL;
    int rc = gguf_open_memory(buf, len, &f, err, errlen);
    if (rc == 0) {
        rc = tok_load(f, &t, err, errlen);
        gguf_close(f); /* the tokenizer must not need the file any more */
    }
    free(buf);
    if (rc_out) *rc_out = rc;
    return t;
}

/* Encode and compare with the expected ids (terminated by -1). */
static int encodes_to(const llm_tokenizer *t, const char *text, int add_special, int parse_special,
                      const int *want) {
    int32_t *ids;
    int n = tok_encode(t, text, strlen(text), add_special, parse_special, &ids);
    int nw = 0;
    while (want[nw] >= 0) nw++;
    int same = n == nw;
    for (int i = 0; same && i < n; i++) same = ids[i] == want[i];
    if (!same) {
        fprintf(stderr, "encode(\"%s\"): got", text);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, ", want");
        for (int i = 0; i < nw; i++) fprintf(stderr, " %d", want[i]);
        fputc('\n', stderr);
    }
    free(ids);
    return same;
}

#define ENC(t, text, add, special, ...)                                                            \
    encodes_to(t, text, add, special, (const int[]){__VA_ARGS__, -1})

static void test_merges_and_bytes(const llm_tokenizer *t) {
    CHECK(ENC(t, "abc", 0, 0, 'a', ID_BC)); /* lower rank merges first */
    CHECK(ENC(t, "ab", 0, 0, ID_AB));
    CHECK(ENC(t, "abab", 0, 0, ID_AB, ID_AB));
    CHECK(ENC(t, "hello world", 0, 0, ID_HELLO, ID_SP_WORLD));
    CHECK(ENC(t, "hellohello", 0, 0, ID_HELLO, ID_HELLO));
    /* a merged symbol that is not a token falls back to its single bytes */
    CHECK(ENC(t, "xy", 0, 0, 'x', 'y'));
    /* bytes outside printable ASCII map through the GPT-2 alphabet */
    CHECK(ENC(t, "\x01\xc3\xa9", 0, 0, 0x01, 0xc3, 0xa9));
    CHECK(ENC(t, " ", 0, 0, ' '));
    /* invalid UTF-8 is encoded as U+FFFD (EF BF BD), as llama.cpp does */
    CHECK(ENC(t, "\xff", 0, 0, 0xef, 0xbf, 0xbd));
    int32_t *none = NULL;
    CHECK(tok_encode(t, "", 0, 0, 1, &none) == 0);
    free(none);

    char m[16];
    mapped(" w", m);
    CHECK(tok_find(t, m, strlen(m)) == ID_SP_W);
    CHECK(tok_find(t, "<|im_end|>", 10) == ID_IM_END);
    CHECK(tok_find(t, "nope", 4) == -1);
    size_t tl;
    const char *tx = tok_text(t, ID_HELLO, &tl);
    CHECK(tx && tl == 5 && memcmp(tx, "hello", 5) == 0);
    CHECK(tok_text(t, -1, NULL) == NULL);
}

static void test_pretokenizer(const vocab_spec *v) {
    char err[256];
    llm_tokenizer *sm = load_spec(v, "gpt2", "smollm", 0, err, sizeof err, NULL);
    llm_tokenizer *g2 = load_spec(v, "gpt2", "gpt-2", 0, err, sizeof err, NULL);
    llm_tokenizer *l3 = load_spec(v, "gpt2", "llama-bpe", 0, err, sizeof err, NULL);
    CHECK(sm && g2 && l3);
    if (!sm || !g2 || !l3) return;
    CHECK(strcmp(tok_pre_name(sm), "smollm") == 0 && strcmp(tok_pre_name(g2), "gpt2") == 0 &&
          strcmp(tok_pre_name(l3), "llama3") == 0);
    /* smollm splits every digit off; gpt2 keeps a number together; llama3 groups by 3 */
    CHECK(ENC(sm, "12", 0, 0, '1', '2'));
    CHECK(ENC(sm, "1212", 0, 0, '1', '2', '1', '2'));
    CHECK(ENC(g2, "12", 0, 0, ID_12));
    CHECK(ENC(g2, "1212", 0, 0, ID_12, ID_12));
    CHECK(ENC(l3, "1212", 0, 0, ID_12, '1', '2'));
    /* whitespace: a run before a word leaves its last space to the word */
    CHECK(ENC(sm, "a   b", 0, 0, 'a', ID_SPSP, ID_SP_B));
    CHECK(ENC(sm, "a  ", 0, 0, 'a', ID_SPSP));
    CHECK(ENC(sm, "\n\n", 0, 0, ID_NLNL));
    CHECK(ENC(sm, "\n\n\n", 0, 0, ID_NLNL, '\n'));
    CHECK(ENC(sm, "\t b", 0, 0, '\t', ID_SP_B));
    /* contractions are case-sensitive in gpt2 ("'S" is punctuation + letter), not in llama3 */
    CHECK(ENC(sm, "a's", 0, 0, 'a', ID_APOS_S));
    CHECK(ENC(sm, "a'S", 0, 0, 'a', '\'', 'S'));
    CHECK(ENC(l3, "a'S", 0, 0, 'a', ID_APOS_BIG_S));
    tok_free(sm);
    tok_free(g2);
    tok_free(l3);
}

static void test_special(const llm_tokenizer *t) {
    /* matched whole with parse_special, as plain text without */
    CHECK(ENC(t, "<|im_start|>hello<|im_end|>", 0, 1, ID_IM_START, ID_HELLO, ID_IM_END));
    CHECK(ENC(t, "<|im_end|>", 0, 0, '<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|', '>'));
    /* text adjacent on both sides, and the longest token wins */
    CHECK(ENC(t, "ab<|endoftext|>ab", 0, 1, ID_AB, ID_EOT, ID_AB));
    CHECK(ENC(t, "<|end|><|endoftext|>", 0, 1, ID_END, ID_EOT));
    CHECK(ENC(t, " <|im_start|> ", 0, 1, ' ', ID_IM_START, ' '));
    /* user-defined tokens are always matched (llama.cpp behaviour) */
    CHECK(ENC(t, "ab<tool>", 0, 0, ID_AB, ID_TOOL));
    CHECK(ENC(t, "<|im_start|<|im_start|>", 0, 1, '<', '|', 'i', 'm', '_', 's', 't', 'a', 'r', 't',
              '|', ID_IM_START));

    CHECK(tok_is_control(t, ID_IM_START) && !tok_is_control(t, ID_TOOL) && !tok_is_control(t, 'a'));
    CHECK(tok_is_eog(t, ID_IM_END) && tok_is_eog(t, ID_EOT) && tok_is_eog(t, ID_EOS));
    CHECK(!tok_is_eog(t, ID_IM_START) && !tok_is_eog(t, 'a') && !tok_is_eog(t, -1) &&
          !tok_is_eog(t, 1 << 20));
    CHECK(tok_bos(t) == ID_IM_START && tok_eos(t) == ID_EOS);
}

static void test_bos(const vocab_spec *v) {
    char err[256];
    llm_tokenizer *t = load_spec(v, "gpt2", "smollm", 1, err, sizeof err, NULL);
    CHECK(t && tok_add_bos(t));
    if (!t) return;
    CHECK(ENC(t, "ab", 1, 0, ID_IM_START, ID_AB));
    CHECK(ENC(t, "ab", 0, 0, ID_AB));
    tok_free(t);
}

static int piece_is(const llm_tokenizer *t, int32_t id, int special, const char *want) {
    char buf[64];
    int n = tok_piece(t, id, special, buf, sizeof buf);
    return n == (int)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

static void test_pieces(const llm_tokenizer *t) {
    CHECK(piece_is(t, ID_SP_WORLD, 0, " world"));
    CHECK(piece_is(t, ' ', 0, " "));
    CHECK(piece_is(t, '\n', 0, "\n"));
    CHECK(piece_is(t, 0xc3, 0, "\xc3"));
    CHECK(piece_is(t, ID_IM_END, 0, ""));
    CHECK(piece_is(t, ID_IM_END, 1, "<|im_end|>"));
    CHECK(piece_is(t, ID_TOOL, 0, "<tool>"));
    CHECK(tok_piece(t, -1, 0, NULL, 0) == TOK_EINVAL);
    char small[3];
    CHECK(tok_piece(t, ID_SP_WORLD, 0, small, sizeof small) == 6 && memcmp(small, " wo", 3) == 0);
    CHECK(tok_max_piece_len(t) >= 13);
}

/* Push ids one at a time; return everything emitted (flushed at the end). */
static int stream_all(const llm_tokenizer *t, const int32_t *ids, int n, int special, char *out,
                      size_t cap, int *per_token) {
    tok_stream s;
    tok_stream_init(&s, special);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        int k = tok_stream_push(&s, t, ids[i], out + o, cap - o);
        if (k < 0) return k;
        if (per_token) per_token[i] = k;
        o += (size_t)k;
    }
    int k = tok_stream_flush(&s, out + o, cap - o);
    if (k < 0) return k;
    return (int)(o + (size_t)k);
}

static void test_stream(const llm_tokenizer *t) {
    char out[256];
    int per[8];
    /* a 4-byte emoji split over four tokens comes out whole with the last one */
    const int32_t emoji[] = {0xf0, 0x9f, 0x98, 0x80};
    int n = stream_all(t, emoji, 4, 0, out, sizeof out, per);
    CHECK(n == 4 && memcmp(out, "\xf0\x9f\x98\x80", 4) == 0);
    CHECK(per[0] == 0 && per[1] == 0 && per[2] == 0 && per[3] == 4);
    /* a token ending in a lead byte: the space goes out, the lead byte waits */
    const int32_t mixed[] = {ID_SP_EMOJI_LEAD, 0x9f, 0x98, 0x80, 'a'};
    n = stream_all(t, mixed, 5, 0, out, sizeof out, per);
    CHECK(n == 6 && memcmp(out,
                           " \xf0\x9f\x98\x80"
                           "a",
                           6) == 0);
    CHECK(per[0] == 1 && per[1] == 0 && per[2] == 0 && per[3] == 4 && per[4] == 1);
    /* 2- and 3-byte characters */
    const int32_t e_acute[] = {0xc3, 0xa9, 0xe4, 0xbd, 0xa0};
    n = stream_all(t, e_acute, 5, 0, out, sizeof out, per);
    CHECK(n == 5 && memcmp(out, "\xc3\xa9\xe4\xbd\xa0", 5) == 0 && per[0] == 0 && per[1] == 2 &&
          per[4] == 3);
    /* bytes that can never complete become U+FFFD at once; a cut-off tail on flush */
    const int32_t bad[] = {0xff, 'a', 0xf0, 'b', 0xe4, 0xbd};
    n = stream_all(t, bad, 6, 0, out, sizeof out, per);
    CHECK(n == 11 && memcmp(out,
                            "\xef\xbf\xbd"
                            "a"
                            "\xef\xbf\xbd"
                            "b"
                            "\xef\xbf\xbd",
                            11) == 0);
    CHECK(per[0] == 3 && per[2] == 0 && per[3] == 4 && per[5] == 0);
    /* control tokens render only when asked */
    const int32_t ctl[] = {ID_IM_START, 'a'};
    n = stream_all(t, ctl, 2, 0, out, sizeof out, NULL);
    CHECK(n == 1 && out[0] == 'a');
    n = stream_all(t, ctl, 2, 1, out, sizeof out, NULL);
    CHECK(n == 13 && memcmp(out, "<|im_start|>a", 13) == 0);
    /* too small a buffer: error, and the stream is unchanged */
    tok_stream s;
    tok_stream_init(&s, 0);
    CHECK(tok_stream_push(&s, t, ID_SP_WORLD, out, 3) == TOK_ENOSPC);
    CHECK(tok_stream_push(&s, t, ID_SP_WORLD, out, sizeof out) == 6);
    CHECK(tok_stream_push(&s, t, -5, out, sizeof out) == TOK_EINVAL);
    CHECK(tok_stream_flush(&s, out, sizeof out) == 0);
}

static void test_round_trip(const llm_tokenizer *t) {
    static const char *texts[] = {
        "hello world",
        "  leading spaces",
        "tabs\tand\nnewlines\n\n\n",
        "1234567 + 3.14",
        "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c",                         /* Chinese */
        "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7", /* ZWJ family */
        "e\xcc\x81 combining",
        "<|im_start|>user\nhi<|im_end|>\n",
        "we'll 'S <tool>x",
        ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids;
        size_t len = strlen(texts[i]);
        int n = tok_encode(t, texts[i], len, 0, 1, &ids);
        char out[256];
        int m = tok_decode(t, ids, (size_t)n, 1, out, sizeof out);
        CHECKF(m == (int)len && memcmp(out, texts[i], len) == 0, "round trip of \"%s\"", texts[i]);
        int k = stream_all(t, ids, n, 1, out, sizeof out, NULL);
        CHECKF(k == (int)len && memcmp(out, texts[i], len) == 0, "stream round trip of \"%s\"",
               texts[i]);
        free(ids);
    }
}

static void test_load_errors(const vocab_spec *v) {
    char err[256];
    int rc;
    llm_tokenizer *t = load_spec(v, "t5", "smollm", 0, err, sizeof err, &rc);
    CHECK(!t && rc == TOK_EFORMAT && strstr(err, "'t5'"));
    t = load_spec(v, NULL, "smollm", 0, err, sizeof err, &rc);
    CHECK(!t && rc == TOK_EFORMAT && strstr(err, "tokenizer.ggml.model"));
    t = load_spec(v, "gpt2", "no-such-pre", 0, err, sizeof err, &rc);
    CHECK(!t && rc == TOK_EFORMAT && strstr(err, "no-such-pre"));
    /* an absent pre-tokenizer name means llama.cpp's "default" */
    t = load_spec(v, "gpt2", NULL, 0, err, sizeof err, &rc);
    CHECK(t && strcmp(tok_pre_name(t), "default") == 0);
    tok_free(t);

    gguf_writer *gw = gw_new(3);
    gw_kv_str(gw, "tokenizer.ggml.model", "gpt2");
    gw_kv_arr_str(gw, "tokenizer.ggml.tokens", (const char *const *)v->text, (size_t)v->n);
    gw_kv_arr_i32(gw, "tokenizer.ggml.token_type", v->type, 3); /* wrong length */
    gw_kv_arr_str(gw, "tokenizer.ggml.merges", (const char *const *)v->merges, (size_t)v->n_merges);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    gguf_file *f;
    CHECK(gguf_open_memory(buf, len, &f, err, sizeof err) == 0);
    rc = tok_load(f, &t, err, sizeof err);
    CHECK(rc == TOK_EFORMAT && !t && strstr(err, "token_type"));
    gguf_close(f);
    free(buf);

    gw = gw_new(3);
    gw_kv_str(gw, "tokenizer.ggml.model", "gpt2");
    gw_kv_arr_str(gw, "tokenizer.ggml.tokens", (const char *const *)v->text, (size_t)v->n);
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    CHECK(gguf_open_memory(buf, len, &f, err, sizeof err) == 0);
    rc = tok_load(f, &t, err, sizeof err);
    CHECK(rc == TOK_EFORMAT && !t && strstr(err, "tokenizer.ggml.merges"));
    gguf_close(f);
    free(buf);
}

/* ---- the real model against llama.cpp --------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_real_model(const char *model_path) {
    char err[256];
    gguf_file *f;
    llm_tokenizer *t;
    if (gguf_open(model_path, &f, err, sizeof err) || tok_load(f, &t, err, sizeof err)) {
        CHECKF(0, "loading %s: %s", model_path, err);
        return;
    }
    gguf_close(f);
    CHECK(tok_n_vocab(t) == 49152 && tok_bos(t) == 1 && tok_eos(t) == 2 && !tok_add_bos(t));
    CHECK(strcmp(tok_pre_name(t), "smollm") == 0);
    /* llama.cpp's end-of-generation set for this vocabulary is exactly {0, 2, 4} */
    int n_eog = 0;
    for (int32_t id = 0; id < tok_n_vocab(t); id++) n_eog += tok_is_eog(t, id);
    CHECK(n_eog == 3 && tok_is_eog(t, 0) && tok_is_eog(t, 2) && tok_is_eog(t, 4));
    CHECK(tok_find(t, "<|im_start|>", 12) == 1);
    CHECK(ENC(t, "Hello world! 123", 0, 1, 19556, 905, 17, 216, 33, 34, 35));

    size_t len;
    char *data = tu_read_file(tu_src_path("tests/golden/tokenize_lines.jsonl"), &len);
    if (!data) {
        printf(
            "tokenizer: tests/golden/tokenize_lines.jsonl missing, llama.cpp comparison skipped\n");
        tok_free(t);
        return;
    }
    int total = 0, same = 0, round_trip = 0, shown = 0;
    double secs = 0;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        cJSON *text = cJSON_GetObjectItem(j, "text"), *ref = cJSON_GetObjectItem(j, "ids");
        if (!cJSON_IsString(text) || !cJSON_IsArray(ref)) {
            CHECKF(0, "bad reference line: %.80s", line);
            cJSON_Delete(j);
            continue;
        }
        const char *s = text->valuestring;
        size_t sl = strlen(s);
        int32_t *ids;
        double t0 = now_s();
        int n = tok_encode(t, s, sl, 0, 1, &ids);
        secs += now_s() - t0;
        int ok = n == cJSON_GetArraySize(ref);
        for (int i = 0; ok && i < n; i++) ok = ids[i] == cJSON_GetArrayItem(ref, i)->valueint;
        if (!ok && shown++ < 5) fprintf(stderr, "tokenizer: differs from llama.cpp on %s\n", line);
        total++;
        same += ok;

        /* streaming detokenization gives back exactly the text */
        size_t cap = TOK_STREAM_CAP(tok_max_piece_len(t)) * ((size_t)n + 1) + 16;
        char *out = malloc(cap);
        int k = stream_all(t, ids, n, 1, out, cap, NULL);
        round_trip += k == (int)sl && memcmp(out, s, sl) == 0;
        free(out);
        free(ids);
        cJSON_Delete(j);
    }
    free(data);
    printf("tokenizer: %d/%d lines identical to llama.cpp (encode %.1f ms)\n", same, total,
           secs * 1e3);
    CHECK(total >= 2000);
    CHECK(same == total);
    CHECKF(round_trip == total, "%d/%d lines survive encode + stream decode", round_trip, total);
    CHECKF(secs < 1.0, "encoding %d lines took %.3f s", total, secs);
    tok_free(t);
}

int main(void) {
    vocab_spec v;
    build_spec(&v);
    char err[256];
    int rc;
    llm_tokenizer *t = load_spec(&v, "gpt2", "smollm", 0, err, sizeof err, &rc);
    CHECKF(t != NULL, "tok_load: %s", err);
    if (t) {
        CHECK(tok_n_vocab(t) == v.n && !tok_add_bos(t));
        test_merges_and_bytes(t);
        test_special(t);
        test_pieces(t);
        test_stream(t);
        test_round_trip(t);
        tok_free(t);
    }
    test_pretokenizer(&v);
    test_bos(&v);
    test_load_errors(&v);
    spec_free(&v);

    const char *model = tu_model_path();
    if (model) test_real_model(model);
    else printf("tokenizer: real model not found, llama.cpp comparison skipped\n");
    return tu_finish("test_tokenizer");
}
