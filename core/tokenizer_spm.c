/*
 * tokenizer_spm.c - SentencePiece encoding (tokenizer.ggml.model "llama":
 * Llama 2, TinyLlama, Mistral, Gemma) of one text fragment left by the
 * special-token partition; see tokenizer.h for the contract.
 *
 * It follows llama.cpp's SPM session, which differs from byte-level BPE in
 * every stage: there is no pre-tokenizer and no UTF-8 repair; spaces become
 * U+2581 ("▁"), with one added in front when the vocabulary asks for a space
 * prefix and the fragment starts the text or follows a special token. The
 * text is cut into characters by their lead byte alone, then adjacent
 * symbols are merged whenever their concatenation is a token, highest token
 * score first (leftmost on ties). A symbol left that is not a token falls
 * back to its bytes' <0xNN> tokens.
 */
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer.h"
#include "core/tokenizer_internal.h"

typedef struct {
    uint32_t off, n; /* into the escaped text */
    int32_t prev, next;
} spm_symbol;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes of the merge when pushed: a mismatch later means stale */
} spm_bigram;

typedef struct {
    const llm_tokenizer *t;
    const char *text;
    tok_vec syms; /* spm_symbol */
    tok_vec heap; /* spm_bigram, max-heap */
} spm_session;

/* Pops first: the higher score, then the smaller left index. */
static int spm_before(const spm_bigram *a, const spm_bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int spm_heap_push(tok_vec *h, spm_bigram b) {
    if (tok_vec_push(h, &b)) return TOK_ENOMEM;
    spm_bigram *v = h->p;
    for (size_t i = h->n - 1; i > 0;) {
        size_t parent = (i - 1) / 2;
        if (!spm_before(&v[i], &v[parent])) break;
        spm_bigram tmp = v[i];
        v[i] = v[parent];
        v[parent] = tmp;
        i = parent;
    }
    return 0;
}

static spm_bigram spm_heap_pop(tok_vec *h) {
    spm_bigram *v = h->p;
    spm_bigram top = v[0];
    v[0] = v[--h->n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && spm_before(&v[l], &v[m])) m = l;
        if (r < h->n && spm_before(&v[r], &v[m])) m = r;
        if (m == i) break;
        spm_bigram tmp = v[i];
        v[i] = v[m];
        v[m] = tmp;
        i = m;
    }
    return top;
}

/* Queue the merge of two adjacent symbols when their text is a token. */
static int spm_try_bigram(spm_session *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const spm_symbol *sym = s->syms.p;
    uint32_t n = sym[left].n + sym[right].n;
    int32_t id = tok_vocab_lookup(s->t, s->text + sym[left].off, n);
    if (id < 0) return 0;
    spm_bigram b = {s->t->score ? s->t->score[id] : 0.0f, left, right, n};
    return spm_heap_push(&s->heap, b);
}

/* Length of the character starting with byte c, from its high bits only
 * (as llama.cpp's unicode_len_utf8: continuation bytes count as 1). */
static uint32_t spm_char_len(uint8_t c) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/* One symbol per character of text[0..n), linked left to right. */
static int spm_split(spm_session *s, size_t n) {
    s->syms.n = 0;
    for (size_t off = 0; off < n;) {
        uint32_t len = spm_char_len((uint8_t)s->text[off]);
        if (len > n - off) len = (uint32_t)(n - off);
        spm_symbol sym = {(uint32_t)off, len, (int32_t)s->syms.n - 1, -1};
        off += len;
        if (off < n) sym.next = (int32_t)s->syms.n + 1;
        if (tok_vec_push(&s->syms, &sym)) return TOK_ENOMEM;
    }
    return 0;
}

static int spm_merge(spm_session *s) {
    for (size_t i = 1; i < s->syms.n; i++)
        if (spm_try_bigram(s, (int32_t)i - 1, (int32_t)i)) return TOK_ENOMEM;
    while (s->heap.n) {
        spm_bigram b = spm_heap_pop(&s->heap);
        spm_symbol *sym = s->syms.p;
        spm_symbol *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        if (spm_try_bigram(s, l->prev, b.left) || spm_try_bigram(s, b.left, l->next))
            return TOK_ENOMEM;
    }
    return 0;
}

/* Emit the final symbols: a token when the text is one, else one byte token
 * per byte. A merged symbol is always a token, so only a single character
 * can miss. A byte without a token (a vocabulary trained without byte
 * fallback) becomes <unk> where llama.cpp would fail the whole call. */
static int spm_emit(spm_session *s, tok_vec *out) {
    const llm_tokenizer *t = s->t;
    const spm_symbol *sym = s->syms.p;
    for (int32_t i = s->syms.n ? 0 : -1; i != -1; i = sym[i].next) {
        const char *p = s->text + sym[i].off;
        int32_t id = tok_vocab_lookup(t, p, sym[i].n);
        if (id >= 0) {
            if (tok_vec_push(out, &id)) return TOK_ENOMEM;
            continue;
        }
        for (uint32_t j = 0; j < sym[i].n; j++) {
            int32_t bid = t->byte_id[(uint8_t)p[j]];
            if (bid < 0) bid = t->unk;
            if (bid >= 0 && tok_vec_push(out, &bid)) return TOK_ENOMEM;
        }
    }
    return 0;
}

/* The fragment with the optional space prefix and every ' ' as U+2581. */
static char *spm_escape(const char *text, size_t len, int prefix_space, size_t *out_len) {
    char *buf = malloc(3 * (len + 1) + 1);
    if (!buf) return NULL;
    size_t o = 0;
    if (prefix_space) {
        memcpy(buf, "\xe2\x96\x81", 3);
        o = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + o, "\xe2\x96\x81", 3);
            o += 3;
        } else {
            buf[o++] = text[i];
        }
    }
    *out_len = o;
    return buf;
}

int tok_spm_encode_fragment(const llm_tokenizer *t, const char *text, size_t len, int prefix_space,
                            tok_vec *out) {
    size_t n;
    char *esc = spm_escape(text, len, prefix_space, &n);
    if (!esc) return TOK_ENOMEM;
    spm_session s = {t, esc, {NULL, 0, 0, sizeof(spm_symbol)}, {NULL, 0, 0, sizeof(spm_bigram)}};
    int rc = spm_split(&s, n);
    if (!rc) rc = spm_merge(&s);
    if (!rc) rc = spm_emit(&s, out);
    free(s.syms.p);
    free(s.heap.p);
    free(esc);
    return rc;
}
