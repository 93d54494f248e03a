/*
 * tokenizer_stream.c - decoding: token ids back to bytes (tok_piece,
 * tok_decode) and the incremental detokenizer (tok_stream), which emits only
 * complete, valid UTF-8; see tokenizer.h for the contract.
 *
 * Pieces are precomputed at load (tokenizer_load.c: GPT-2 byte alphabet or
 * SentencePiece's U+2581 and <0xNN> byte tokens), so decoding only copies.
 * A vocabulary with a space prefix (SentencePiece) loses one leading space
 * of the first piece of a whole sequence, and most byte-level BPE
 * pre-tokenizers clean up spaces before punctuation, as llama.cpp's
 * detokenize does; pieces and streams are never cleaned (nor are llama.cpp's).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer.h"
#include "core/tokenizer_internal.h"

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

/* Concatenate the pieces into buf (up to cap bytes); returns the full
 * length or TOK_EINVAL. */
static int decode_raw(const llm_tokenizer *t, const int32_t *ids, size_t n, int render_special,
                      char *buf, size_t cap) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return TOK_EINVAL;
        size_t pn;
        const char *p = piece_ptr(t, ids[i], render_special, &pn);
        if (i == 0 && t->add_space_prefix && pn && p[0] == ' ') {
            p++;
            pn--;
        }
        if (buf && total < cap) memcpy(buf + total, p, pn < cap - total ? pn : cap - total);
        total += pn;
        if (total > INT32_MAX) return TOK_EINVAL;
    }
    return (int)total;
}

/* llama.cpp's clean_up_tokenization_spaces, in place, in its three passes
 * (each reads the buffer the previous steps have rewritten, as llama.cpp's
 * does): " ?" " !" " ." " ," lose the space; " ' " becomes "'"; " 's",
 * " 'm", " 're", " 've" lose the space. Returns the new length. */
static size_t clean_spaces(char *s, size_t n) {
    size_t o = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) o--;
        s[o++] = x;
    }
    n = o;
    o = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        if (x == '\'' && i + 1 < n && s[i - 1] == ' ' && s[i + 1] == ' ') {
            o--;
            s[++i] = 0;
        }
        s[o++] = x;
    }
    n = o;
    o = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        if (s[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = s[i + 1], x2 = i + 2 < n ? s[i + 2] : 0;
            if (x1 == 's' || x1 == 'm' || (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) o--;
        }
        s[o++] = x;
    }
    return o;
}

int tok_decode(const llm_tokenizer *t, const int32_t *ids, size_t n, int render_special, char *buf,
               size_t cap) {
    if (!t->clean_spaces) return decode_raw(t, ids, n, render_special, buf, cap);
    int total = decode_raw(t, ids, n, render_special, NULL, 0);
    if (total <= 0) return total;
    char *tmp = malloc((size_t)total);
    if (!tmp) return TOK_ENOMEM;
    decode_raw(t, ids, n, render_special, tmp, (size_t)total);
    size_t m = clean_spaces(tmp, (size_t)total);
    if (buf && cap) memcpy(buf, tmp, m < cap ? m : cap);
    free(tmp);
    return (int)m;
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

void tok_stream_init_sequence(tok_stream *s, const llm_tokenizer *t, int render_special) {
    tok_stream_init(s, render_special);
    s->strip_space = t->add_space_prefix;
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
    int strip = s->strip_space && pn && p[0] == ' ';
    p += strip;
    pn -= (size_t)strip;
    if (pn == 0) {
        s->strip_space = 0; /* only the first token, even when it strips nothing */
        return 0;
    }
    uint8_t pending[sizeof s->pending];
    memcpy(pending, s->pending, (size_t)s->n_pending);
    two_part d = {pending, (size_t)s->n_pending, (const uint8_t *)p, pn};
    size_t held;
    size_t need = stream_process(&d, NULL, &held);
    if (need > cap || need > INT32_MAX) return TOK_ENOSPC;
    stream_process(&d, out, &held);
    s->strip_space = 0;
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
