/*
 * fuzz_tokenizer.c - the tokenizer (core/tokenizer.h) with two tiny
 * vocabularies (tests/fuzz/tiny_vocab.h), byte-level BPE and SentencePiece,
 * built once at start-up.
 *
 * The first byte of an input picks the vocabulary; the rest is used twice:
 *   - as text: tok_encode with and without special-token parsing, then
 *     tok_decode and the incremental detokenizer over the ids;
 *   - as token ids (little-endian u16 each, folded onto the vocabulary plus
 *     one id below and one above it): tok_piece, tok_decode and tok_stream
 *     over an arbitrary sequence, such as a model may sample.
 *
 * Checks, each a promise of the header: encoding succeeds and yields ids of
 * the vocabulary; add_special only adds BOS; text that is valid UTF-8 comes
 * back byte for byte from tok_decode (control tokens rendered when they
 * were parsed; for SentencePiece only when the ids are all ordinary and
 * byte tokens and the text has no U+2581, since a space prefix after a
 * special token stays and U+2581 decodes as a space); tok_stream's output is the decoded bytes with
 * every invalid or cut-off sequence replaced by one U+FFFD (the reference below, written apart from
 * the tokenizer's); a bad id is refused; a push refused for lack of room changes nothing.
 */
#include <string.h>

#include "core/gguf.h"
#include "core/tokenizer.h"
#include "tests/common/gguf_writer.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/tiny_vocab.h"

/* Built by LLVMFuzzerInitialize, read-only afterwards; tok is the one the
 * current checks use. */
static llm_tokenizer *toks[2];
static llm_tokenizer *tok;

static llm_tokenizer *load_tiny(void (*write)(gguf_writer *)) {
    llm_tokenizer *t;
    gguf_writer *gw = gw_new(3);
    gw_kv_str(gw, "general.architecture", "llama");
    write(gw);
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    gguf_file *f;
    char err[256];
    FUZZ_CHECK(gguf_open_memory(buf, len, &f, err, sizeof err) == GGUF_OK);
    FUZZ_CHECK(tok_load(f, &t, err, sizeof err) == TOK_OK);
    gguf_close(f);
    free(buf);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    toks[0] = load_tiny(tiny_vocab_write);
    toks[1] = load_tiny(tiny_vocab_write_spm);
    FUZZ_CHECK(!tok_is_spm(toks[0]) && tok_is_spm(toks[1]));
    return 0;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF)
 * with each maximal invalid subpart replaced by U+FFFD, as Unicode
 * recommends. out holds 3 * n bytes; returns its length. */
static size_t utf8_repair(const uint8_t *s, size_t n, uint8_t *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need = c < 0x80                 ? 1
                      : c >= 0xc2 && c <= 0xdf ? 2
                      : c >= 0xe0 && c <= 0xef ? 3
                      : c >= 0xf0 && c <= 0xf4 ? 4
                                               : 0;
        uint8_t lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
        uint8_t hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        size_t k = 1;
        while (k < need && i + k < n && s[i + k] >= (k == 1 ? lo : 0x80) &&
               s[i + k] <= (k == 1 ? hi : 0xbf))
            k++;
        if (need && k == need) {
            memcpy(out + o, s + i, k);
            o += k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
        }
        i += k;
    }
    return o;
}

static int is_valid_utf8(const uint8_t *s, size_t n) {
    uint8_t *tmp = malloc(3 * n + 1);
    FUZZ_CHECK(tmp != NULL);
    int same = utf8_repair(s, n, tmp) == n && memcmp(tmp, s, n) == 0;
    free(tmp);
    return same;
}

/* tok_decode into a malloc'd buffer; *len its length. */
static char *decode_all(const int32_t *ids, size_t n, int render_special, size_t *len) {
    int total = tok_decode(tok, ids, n, render_special, NULL, 0);
    FUZZ_CHECK(total >= 0);
    char *buf = malloc((size_t)total + 1);
    FUZZ_CHECK(buf != NULL);
    FUZZ_CHECK(tok_decode(tok, ids, n, render_special, buf, (size_t)total) == total);
    *len = (size_t)total;
    return buf;
}

/* Push one id, first into no room at all (which must either fit or change
 * nothing), then into the room the header says always suffices. */
static int push(tok_stream *s, int32_t id, char *out) {
    tok_stream before = *s;
    int k = tok_stream_push(s, tok, id, out, 0);
    if (k == TOK_ENOSPC) FUZZ_CHECK(memcmp(&before, s, sizeof before) == 0);
    else return k;
    return tok_stream_push(s, tok, id, out, TOK_STREAM_CAP(tok_max_piece_len(tok)));
}

/* The stream's output over the valid ids must be the repaired decoding. */
static void check_stream(const int32_t *ids, size_t n, int render_special) {
    size_t cap = TOK_STREAM_CAP(tok_max_piece_len(tok));
    size_t dlen;
    char *decoded = decode_all(ids, n, render_special, &dlen);
    uint8_t *want = malloc(3 * dlen + 1), *got = malloc(n * cap + 3 + 1);
    FUZZ_CHECK(want != NULL && got != NULL);
    size_t wlen = utf8_repair((const uint8_t *)decoded, dlen, want), glen = 0;
    tok_stream s;
    tok_stream_init_sequence(&s, tok, render_special);
    for (size_t i = 0; i < n; i++) {
        int k = push(&s, ids[i], (char *)got + glen);
        FUZZ_CHECK(k >= 0);
        glen += (size_t)k;
    }
    int k = tok_stream_flush(&s, (char *)got + glen, 3);
    FUZZ_CHECK(k >= 0);
    glen += (size_t)k;
    FUZZ_CHECK(glen == wlen && memcmp(got, want, glen) == 0);
    free(decoded);
    free(want);
    free(got);
}

/* Whether decoding ids must give text back byte for byte. */
static int round_trips(const char *text, size_t len, const int32_t *ids, int n) {
    if (!is_valid_utf8((const uint8_t *)text, len)) return 0;
    if (!tok_is_spm(tok)) return 1;
    if (memmem(text, len, "\xe2\x96\x81", 3)) return 0;
    for (int i = 0; i < n; i++)
        if (tok_type(tok, ids[i]) != TOK_TYPE_NORMAL && tok_type(tok, ids[i]) != TOK_TYPE_BYTE)
            return 0;
    return 1;
}

static void check_text(const char *text, size_t len) {
    int32_t *ids, *with_bos;
    int n = tok_encode(tok, text, len, 0, 1, &ids);
    FUZZ_CHECK(n >= 0);
    for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < tok_n_vocab(tok));
    if (round_trips(text, len, ids, n)) {
        size_t dlen;
        char *back = decode_all(ids, (size_t)n, 1, &dlen);
        FUZZ_CHECK(dlen == len && memcmp(back, text, len) == 0);
        free(back);
    }
    check_stream(ids, (size_t)n, 1);
    free(ids);

    /* without special parsing: control-token text is plain text, and the
     * ids are the same with BOS in front when add_special asks for it */
    n = tok_encode(tok, text, len, 0, 0, &ids);
    int m = tok_encode(tok, text, len, 1, 0, &with_bos);
    FUZZ_CHECK(n >= 0 && m >= 0);
    int bos = tok_add_bos(tok) && tok_bos(tok) >= 0;
    FUZZ_CHECK(m == n + bos && (!bos || with_bos[0] == tok_bos(tok)));
    FUZZ_CHECK(memcmp(with_bos + bos, ids, (size_t)n * sizeof *ids) == 0);
    if (round_trips(text, len, ids, n)) {
        size_t dlen;
        char *back = decode_all(ids, (size_t)n, 0, &dlen);
        FUZZ_CHECK(dlen == len && memcmp(back, text, len) == 0);
        free(back);
    }
    check_stream(ids, (size_t)n, 0);
    free(ids);
    free(with_bos);
}

/* Arbitrary ids, bad ones included: each is refused or rendered. */
static void check_ids(const uint8_t *data, size_t size) {
    int n_vocab = tok_n_vocab(tok);
    size_t n = size / 2, n_good = 0;
    int32_t *good = malloc((n ? n : 1) * sizeof *good);
    FUZZ_CHECK(good != NULL);
    for (size_t i = 0; i < n; i++) {
        int32_t id = (int32_t)((data[2 * i] | data[2 * i + 1] << 8) % (n_vocab + 2)) - 1;
        char piece[4];
        int len = tok_piece(tok, id, 1, piece, sizeof piece);
        if (id < 0 || id >= n_vocab) {
            tok_stream s;
            tok_stream_init(&s, 1);
            FUZZ_CHECK(len == TOK_EINVAL && tok_decode(tok, &id, 1, 1, NULL, 0) == TOK_EINVAL);
            FUZZ_CHECK(tok_stream_push(&s, tok, id, piece, sizeof piece) == TOK_EINVAL);
            continue;
        }
        FUZZ_CHECK(len >= 0 && len <= tok_max_piece_len(tok));
        good[n_good++] = id;
    }
    check_stream(good, n_good, 1);
    check_stream(good, n_good, 0);
    free(good);
}

/* The first byte picks the vocabulary (its low bit); the rest is the text
 * and the ids. One vocabulary per execution halves the cost of an input,
 * and the fuzzer still steers each vocabulary by that byte. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    tok = toks[data[0] & 1];
    check_text((const char *)data + 1, size - 1);
    check_ids(data + 1, size - 1);
    return 0;
}
