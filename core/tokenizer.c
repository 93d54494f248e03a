/*
 * tokenizer.c - byte-level BPE encoding and the tokenizer's queries; see
 * tokenizer.h for the contract, tokenizer_load.c for how the state and the
 * pre-tokenizer regexes are built.
 *
 * The goal is llama.cpp's exact output, so each stage follows its behaviour
 * (not its code): the special-token partition goes token by token in
 * length order over all text fragments (SentencePiece vocabularies then
 * continue in tokenizer_spm.c); each pre-tokenizer regex runs
 * separately inside every piece left by the previous regex, and unmatched
 * stretches become pieces of their own; BPE merges the lowest-ranked
 * adjacent pair first (leftmost on ties) and falls back to single-byte
 * tokens for a symbol that is not in the vocabulary.
 */
#include "core/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/tokenizer_internal.h"

/* ---- lookups --------------------------------------------------------------------------- */

int32_t tok_vocab_lookup(const llm_tokenizer *t, const char *s, size_t n) {
    uint32_t i = (uint32_t)tok_fnv_update(TOK_FNV_INIT, s, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_ht[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(t->text_pool + t->text_off[id], s, n) == 0) return id;
    }
}

static int32_t merge_rank(const llm_tokenizer *t, const char *l, size_t ln, const char *r,
                          size_t rn) {
    if (!t->merge_ht) return -1;
    uint32_t i = (uint32_t)tok_hash_pair(l, ln, r, rn) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        int32_t m = t->merge_ht[i];
        if (m < 0) return -1;
        const char *ms = t->merge_pool + t->merge_off[m];
        if (t->merge_llen[m] == ln && t->merge_rlen[m] == rn && memcmp(ms, l, ln) == 0 &&
            memcmp(ms + ln + 1, r, rn) == 0)
            return m;
    }
}

/* ---- UTF-8 and the GPT-2 byte alphabet ----------------------------------------------------- */

int tok_utf8_decode_lenient(const uint8_t *p, size_t n, uint32_t *cp) {
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

int tok_utf8_encode(uint32_t cp, char *out) {
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
static int byte_is_printable(uint32_t b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
}

/* A printable byte stands for itself; the others, in byte order, for
 * U+0100, U+0101, ... */
void tok_byte_alphabet_init(byte_alphabet *a) {
    for (int i = 0; i < 0x144; i++) a->dec[i] = -1;
    uint32_t n_unprintable = 0;
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t cp = byte_is_printable(b) ? b : 256 + n_unprintable++;
        a->enc_len[b] = (uint8_t)tok_utf8_encode(cp, a->enc[b]);
        a->dec[cp] = (int16_t)b;
    }
}

/* ---- growable buffers ------------------------------------------------------------------ */

int tok_vec_reserve(tok_vec *v, size_t need) {
    if (need <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < need) cap *= 2;
    void *p = realloc(v->p, cap * v->elem);
    if (!p) return TOK_ENOMEM;
    v->p = p;
    v->cap = cap;
    return 0;
}

int tok_vec_push(tok_vec *v, const void *x) {
    if (tok_vec_reserve(v, v->n + 1)) return TOK_ENOMEM;
    memcpy((char *)v->p + v->n * v->elem, x, v->elem);
    v->n++;
    return 0;
}

/* ---- queries --------------------------------------------------------------------------- */

int tok_n_vocab(const llm_tokenizer *t) { return t->n_vocab; }
int32_t tok_bos(const llm_tokenizer *t) { return t->bos; }
int32_t tok_eos(const llm_tokenizer *t) { return t->eos; }
int tok_add_bos(const llm_tokenizer *t) { return t->add_bos; }
int tok_add_eos(const llm_tokenizer *t) { return t->add_eos; }
int tok_max_piece_len(const llm_tokenizer *t) { return (int)t->max_piece_len; }
const char *tok_pre_name(const llm_tokenizer *t) { return t->pre->name; }
int tok_is_spm(const llm_tokenizer *t) { return t->kind == TOK_KIND_SPM; }
int tok_add_space_prefix(const llm_tokenizer *t) { return t->add_space_prefix; }
int tok_clean_spaces(const llm_tokenizer *t) { return t->clean_spaces; }

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
    return tok_vocab_lookup(t, text, len);
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
    tok_vec out;      /* int32_t */
    tok_vec frags[2]; /* fragment */
    tok_vec spans[2]; /* span */
    tok_vec word;     /* char: mapped word */
    tok_vec syms;     /* symbol */
    tok_vec heap;     /* bigram */
    pcre2_match_data *md;
} encoder;

static int bigram_less(const bigram *a, const bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(tok_vec *h, bigram b) {
    if (tok_vec_push(h, &b)) return TOK_ENOMEM;
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

static bigram heap_pop(tok_vec *h) {
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

static int emit(encoder *e, int32_t id) { return tok_vec_push(&e->out, &id); }

/* Map a word's raw bytes (n > 0) into e->word in the byte alphabet, one
 * symbol per byte, linked left to right; the merge heap starts empty. */
static int map_word(encoder *e, const char *raw, size_t n) {
    e->word.n = 0;
    e->syms.n = 0;
    e->heap.n = 0;
    if (tok_vec_reserve(&e->word, 2 * n) || tok_vec_reserve(&e->syms, n)) return TOK_ENOMEM;
    char *w = e->word.p;
    symbol *s = e->syms.p;
    size_t wn = 0;
    /* one symbol per byte: each byte is exactly one character of the alphabet */
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)raw[i];
        s[i].off = (uint32_t)wn;
        s[i].n = e->t->alpha.enc_len[b];
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        memcpy(w + wn, e->t->alpha.enc[b], e->t->alpha.enc_len[b]);
        wn += e->t->alpha.enc_len[b];
    }
    e->word.n = wn;
    e->syms.n = n;
    return 0;
}

/* Emit the merged symbols of e->word; a symbol that is not a token becomes
 * the single-byte tokens of its text. */
static int emit_symbols(encoder *e) {
    const llm_tokenizer *t = e->t;
    const char *w = e->word.p;
    const symbol *s = e->syms.p;
    for (int32_t i = 0; i != -1; i = s[i].next) {
        if (s[i].n == 0) continue;
        int32_t id = tok_vocab_lookup(t, w + s[i].off, s[i].n);
        if (id >= 0) {
            if (emit(e, id)) return TOK_ENOMEM;
            continue;
        }
        /* not a token: fall back to single-byte tokens of its text, dropping misses */
        for (uint32_t j = 0; j < s[i].n; j++) {
            int32_t bid = tok_vocab_lookup(t, w + s[i].off + j, 1);
            if (bid >= 0 && emit(e, bid)) return TOK_ENOMEM;
        }
    }
    return 0;
}

/* BPE over one pre-tokenized word (raw bytes). */
static int bpe_word(encoder *e, const char *raw, size_t n) {
    const llm_tokenizer *t = e->t;
    if (n == 0) return 0;
    int rc = map_word(e, raw, n);
    if (rc) return rc;

    if (t->pre->ignore_merges) {
        int32_t id = tok_vocab_lookup(t, e->word.p, e->word.n);
        if (id >= 0) return emit(e, id);
    }

    for (size_t i = 1; i < n; i++)
        if (add_bigram(e, (int32_t)i - 1, (int32_t)i)) return TOK_ENOMEM;

    while (e->heap.n) {
        bigram b = heap_pop(&e->heap);
        symbol *s = e->syms.p;
        symbol *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = b.left;
        if (add_bigram(e, l->prev, b.left) || add_bigram(e, b.left, l->next)) return TOK_ENOMEM;
    }
    return emit_symbols(e);
}

static int span_push(tok_vec *v, size_t off, size_t len) {
    span sp = {(uint32_t)off, (uint32_t)len};
    return len ? tok_vec_push(v, &sp) : 0;
}

/* Split every span of `in` with regex re: matches and the stretches between
 * them become spans of `out`. Each span is matched on its own, so lookahead
 * never sees past its end. */
static int regex_split(encoder *e, pcre2_code *re, const char *text, const tok_vec *in,
                       tok_vec *out) {
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
        int k = tok_utf8_decode_lenient((const uint8_t *)text + i, len - i, &cp);
        if (k == 0 || cp > 0x10ffff) {
            cp = 0xfffd;
            k = k ? k : 1;
        }
        surrogates |= cp >= 0xd800 && cp < 0xe000;
        o += (size_t)tok_utf8_encode(cp, buf + o);
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

static int is_c_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Cut every occurrence of special token id out of text fragment fr, pushing
 * the pieces to out; white space next to the token goes when its strip flags
 * say so. *found is set when the token occurs. */
static int cut_special(const llm_tokenizer *t, const char *text, fragment fr, int32_t id,
                       tok_vec *out, int *found) {
    const char *st = t->text_pool + t->text_off[id];
    size_t sn = t->text_len[id];
    uint8_t strip = t->strip ? t->strip[id] : 0;
    size_t pos = fr.off, end = fr.off + fr.len;
    while (pos < end) {
        const char *m = memmem(text + pos, end - pos, st, sn);
        if (!m) break;
        size_t mo = (size_t)(m - text);
        fragment left = {pos, mo - pos, -1}, tokf = {mo, sn, id};
        if (strip & TOK_STRIP_LEFT)
            while (left.len && is_c_space(text[left.off + left.len - 1])) left.len--;
        if ((left.len && tok_vec_push(out, &left)) || tok_vec_push(out, &tokf)) return TOK_ENOMEM;
        pos = mo + sn;
        if (strip & TOK_STRIP_RIGHT)
            while (pos < end && is_c_space(text[pos])) pos++;
        *found = 1;
    }
    fragment rest = {pos, end - pos, -1};
    if (rest.len && tok_vec_push(out, &rest)) return TOK_ENOMEM;
    return 0;
}

/* Cut special tokens out of the text fragments, one token at a time in
 * length order, leftmost occurrences first (llama.cpp's tokenizer_st_partition). */
static int partition_special(encoder *e, const char *text, size_t len, int parse_special,
                             int *which) {
    const llm_tokenizer *t = e->t;
    int cur = 0;
    e->frags[0].n = 0;
    fragment whole = {0, len, -1};
    if (tok_vec_push(&e->frags[0], &whole)) return TOK_ENOMEM;
    for (int si = 0; si < t->n_special; si++) {
        int32_t id = t->special[si];
        uint8_t ty = t->type[id];
        if (!parse_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) continue;
        size_t sn = t->text_len[id];
        tok_vec *in = &e->frags[cur], *out = &e->frags[cur ^ 1];
        out->n = 0;
        int found = 0;
        for (size_t k = 0; k < in->n; k++) {
            fragment fr = ((fragment *)in->p)[k];
            int rc = fr.id >= 0 || fr.len < sn ? tok_vec_push(out, &fr)
                                               : cut_special(t, text, fr, id, out, &found);
            if (rc) return TOK_ENOMEM;
        }
        if (found) cur ^= 1;
    }
    *which = cur;
    return 0;
}

/* Set up the scratch for encoding len bytes; on failure the caller still
 * calls encoder_free_scratch and frees e->out. */
static int encoder_init(encoder *e, const llm_tokenizer *t, size_t len) {
    memset(e, 0, sizeof *e);
    e->t = t;
    e->out.elem = sizeof(int32_t);
    e->frags[0].elem = e->frags[1].elem = sizeof(fragment);
    e->spans[0].elem = e->spans[1].elem = sizeof(span);
    e->word.elem = 1;
    e->syms.elem = sizeof(symbol);
    e->heap.elem = sizeof(bigram);
    e->md = pcre2_match_data_create(4, NULL);
    if (!e->md || tok_vec_reserve(&e->out, len / 2 + 4)) return TOK_ENOMEM;
    return 0;
}

/* Free everything but the output ids. */
static void encoder_free_scratch(encoder *e) {
    pcre2_match_data_free(e->md);
    free(e->frags[0].p);
    free(e->frags[1].p);
    free(e->spans[0].p);
    free(e->spans[1].p);
    free(e->word.p);
    free(e->syms.p);
    free(e->heap.p);
}

int tok_encode(const llm_tokenizer *t, const char *text, size_t len, int add_special,
               int parse_special, int32_t **out) {
    *out = NULL;
    if (!text && len) return TOK_EINVAL;
    encoder e;
    int rc = encoder_init(&e, t, len);
    if (rc) goto done;

    if (add_special && t->add_bos && t->bos >= 0 && (rc = emit(&e, t->bos))) goto done;
    if (len) {
        int which;
        if ((rc = partition_special(&e, text, len, parse_special, &which))) goto done;
        const fragment *fr = e.frags[which].p;
        size_t nfr = e.frags[which].n;
        int prev_special = 1; /* SPM: the text at the start counts as following a special */
        for (size_t k = 0; k < nfr; k++) {
            fragment f = fr[k]; /* copy: encode_text does not touch frags, but be explicit */
            if (f.id >= 0) rc = emit(&e, f.id);
            else if (t->kind == TOK_KIND_SPM)
                rc = tok_spm_encode_fragment(t, text + f.off, f.len,
                                             t->add_space_prefix && prev_special, &e.out);
            else rc = encode_text(&e, text, f.off, f.len);
            if (rc) goto done;
            prev_special = f.id >= 0;
        }
    }
    if (add_special && t->add_eos && t->eos >= 0 && (rc = emit(&e, t->eos))) goto done;

done:
    encoder_free_scratch(&e);
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
