/*
 * json_match.c - the byte-level matcher over a compiled schema and the
 * vocabulary table that turns it into token masks (see json_grammar.h).
 *
 * A parse stack holds one frame per open JSON value (object, array, string,
 * number, literal set) with its phase and counters. A byte is offered to the
 * top frame, which consumes it, rejects it, completes (a number or literal
 * that a following byte ends: the frame pops and the byte goes to its
 * parent), or asks for a child value (the parent moves on first, so a
 * finished child simply pops). A child whose node is an anyOf forks the
 * stack, one copy per branch; the matcher is the set of live stacks,
 * deduplicated and capped at JG_MAX_STACKS (dropping a stack only narrows
 * what may follow, so what is produced stays valid).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_grammar.h"
#include "core/json_grammar_internal.h"
#include "core/tokenizer.h"

enum { MAX_KEY = 64, MAX_NUMBER = 24, MAX_INT_DIGITS = 15, MAX_EXP_DIGITS = 2, ADDITIONAL = 255 };

typedef struct {
    int32_t node;
    uint8_t phase;
    uint8_t aux;  /* object: property being read (ADDITIONAL: another key); string: UTF-8
                     bytes still due; number: digits of the current part */
    uint8_t flag; /* object key: another key than the properties is possible */
    uint8_t pad;
    uint32_t n; /* array: items; string: code points; literal, key: position; number: bytes */
    uint64_t a; /* object: properties seen; literals: candidates; string: next byte range */
    uint64_t b; /* object key: candidate properties */
} frame;

typedef struct {
    uint8_t depth, ws, started, pad;
    frame f[JG_MAX_DEPTH];
} stack;

typedef struct {
    stack *s;
    int n;
} stack_set;

enum { TRIE_LEVELS = 16 }; /* token prefixes whose states jg_mask_logits keeps */

struct jg_matcher {
    const jg_schema *g;
    stack_set cur, tmp[2];
    stack_set lvl[TRIE_LEVELS + 1]; /* jg_mask_logits: state after d bytes of a token; lazily
                                        allocated */
    uint8_t first_ok[256];
    int first_valid;
};

typedef enum { R_REJECT = 0, R_OK, R_OK_WS, R_OK_POP, R_POP_RETRY, R_PUSH } step_result;

/* ---- stacks ---- */

static size_t stack_bytes(const stack *s) {
    return offsetof(stack, f) + (size_t)s->depth * sizeof(frame);
}

static void set_add(stack_set *out, const stack *s) {
    size_t nb = stack_bytes(s);
    for (int i = 0; i < out->n; i++)
        if (out->s[i].depth == s->depth && memcmp(&out->s[i], s, nb) == 0) return;
    if (out->n == JG_MAX_STACKS) return;
    memcpy(&out->s[out->n++], s, nb);
}

static int is_ws(uint8_t b) { return b == ' ' || b == '\n' || b == '\t' || b == '\r'; }

static step_result take_ws(stack *st) {
    if (st->ws >= JG_MAX_WS) return R_REJECT;
    st->ws++;
    return R_OK_WS;
}

static frame *push_frame(stack *st, int node) {
    frame *f = &st->f[st->depth++];
    memset(f, 0, sizeof *f);
    f->node = node;
    return f;
}

/* ---- objects ---- */

enum { O_START = 0, O_FIRST, O_KEY, O_COLON, O_VALUE, O_AFTER, O_NEXT };

static uint64_t all_props(const jg_node *n) {
    return n->n_strs >= 64 ? ~0ULL : (1ULL << n->n_strs) - 1;
}

/* Another key can be written (and its value nested) here. */
static int key_possible(const stack *st, const frame *f, const jg_node *n) {
    return st->depth < JG_MAX_DEPTH && (n->extra != JG_NONE || (all_props(n) & ~f->a) != 0);
}

static step_result key_byte(frame *f, const jg_node *n, uint8_t b) {
    if (b == '"') {
        for (int i = 0; i < n->n_strs; i++) {
            if (!(f->b >> i & 1) || n->lens[i] != f->n) continue;
            if (f->a >> i & 1) return R_REJECT; /* a key twice */
            f->aux = (uint8_t)i;
            f->a |= 1ULL << i;
            f->phase = O_COLON;
            return R_OK;
        }
        if (!f->flag) return R_REJECT;
        f->aux = ADDITIONAL;
        f->phase = O_COLON;
        return R_OK;
    }
    uint64_t keep = 0;
    for (int i = 0; i < n->n_strs; i++)
        if ((f->b >> i & 1) && f->n < n->lens[i] && (uint8_t)n->strs[i][f->n] == b)
            keep |= 1ULL << i;
    f->b = keep;
    if (f->flag && !(b >= 0x20 && b < 0x7f && b != '"' && b != '\\' && f->n < MAX_KEY)) f->flag = 0;
    if (!keep && !f->flag) return R_REJECT;
    f->n++;
    return R_OK;
}

static step_result step_object(stack *st, frame *f, const jg_node *n, uint8_t b, int *child) {
    switch (f->phase) {
    case O_START:
        if (b != '{') return R_REJECT;
        f->phase = O_FIRST;
        return R_OK;
    case O_FIRST:
    case O_NEXT:
        if (is_ws(b)) return take_ws(st);
        if (b == '}' && f->phase == O_FIRST && (n->required & ~f->a) == 0) return R_OK_POP;
        if (b != '"' || !key_possible(st, f, n)) return R_REJECT;
        f->phase = O_KEY;
        f->n = 0;
        f->flag = n->extra != JG_NONE;
        f->b = f->flag ? all_props(n) : all_props(n) & ~f->a;
        return R_OK;
    case O_KEY: return key_byte(f, n, b);
    case O_COLON:
        if (is_ws(b)) return take_ws(st);
        if (b != ':') return R_REJECT;
        f->phase = O_VALUE;
        return R_OK;
    case O_VALUE:
        if (is_ws(b)) return take_ws(st);
        *child = f->aux == ADDITIONAL ? n->extra : n->kids[f->aux];
        f->phase = O_AFTER;
        return R_PUSH;
    case O_AFTER:
        if (is_ws(b)) return take_ws(st);
        if (b == '}' && (n->required & ~f->a) == 0) return R_OK_POP;
        if (b != ',' || !key_possible(st, f, n)) return R_REJECT;
        f->phase = O_NEXT;
        return R_OK;
    default: return R_REJECT;
    }
}

/* ---- arrays ---- */

enum { A_START = 0, A_FIRST, A_AFTER, A_NEXT };

static step_result step_array(stack *st, frame *f, const jg_node *n, uint8_t b, int *child) {
    const int room = st->depth < JG_MAX_DEPTH;
    switch (f->phase) {
    case A_START:
        if (b != '[') return R_REJECT;
        f->phase = A_FIRST;
        return R_OK;
    case A_FIRST:
    case A_NEXT:
        if (is_ws(b)) return take_ws(st);
        if (f->phase == A_FIRST && b == ']') return n->lo == 0 ? R_OK_POP : R_REJECT;
        if (!room || (n->hi >= 0 && (long)f->n >= n->hi)) return R_REJECT;
        f->n++;
        f->phase = A_AFTER;
        *child = n->extra;
        return R_PUSH;
    case A_AFTER:
        if (is_ws(b)) return take_ws(st);
        if (b == ']') return (long)f->n >= n->lo ? R_OK_POP : R_REJECT;
        if (b != ',' || !room || (n->hi >= 0 && (long)f->n >= n->hi)) return R_REJECT;
        f->phase = A_NEXT;
        return R_OK;
    default: return R_REJECT;
    }
}

/* ---- strings ---- */

enum { S_START = 0, S_IN, S_ESC, S_UTF };

/* A UTF-8 lead byte: how many continuation bytes follow and the range of
 * the first one (no overlongs, surrogates or code points past U+10FFFF). */
static int utf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) return 1;
    if (b == 0xe0) *lo = 0xa0;
    if (b == 0xed) *hi = 0x9f;
    if (b >= 0xe0 && b <= 0xef) return 2;
    if (b == 0xf0) *lo = 0x90;
    if (b == 0xf4) *hi = 0x8f;
    if (b >= 0xf0 && b <= 0xf4) return 3;
    return 0;
}

static step_result step_string(frame *f, const jg_node *n, uint8_t b) {
    const int room = n->hi < 0 || (long)f->n < n->hi;
    switch (f->phase) {
    case S_START:
        if (b != '"') return R_REJECT;
        f->phase = S_IN;
        return R_OK;
    case S_IN: {
        if (b == '"') return (long)f->n >= n->lo ? R_OK_POP : R_REJECT;
        if (b < 0x20 || !room) return R_REJECT;
        f->n++;
        if (b == '\\') {
            f->phase = S_ESC;
        } else if (b >= 0x80) {
            uint8_t lo, hi;
            int more = utf8_lead(b, &lo, &hi);
            if (!more) return R_REJECT;
            f->aux = (uint8_t)more;
            f->a = (uint64_t)lo | (uint64_t)hi << 8;
            f->phase = S_UTF;
        }
        return R_OK;
    }
    case S_ESC:
        if (!strchr("\"\\/bfnrt", b) || b == 0) return R_REJECT;
        f->phase = S_IN;
        return R_OK;
    case S_UTF:
        if (b < (uint8_t)f->a || b > (uint8_t)(f->a >> 8)) return R_REJECT;
        f->a = 0x80 | 0xbf << 8;
        if (--f->aux == 0) f->phase = S_IN;
        return R_OK;
    default: return R_REJECT;
    }
}

/* ---- numbers ---- */

enum { N_START = 0, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

static int number_can_end(const frame *f) {
    return f->phase == N_ZERO || f->phase == N_INT || f->phase == N_FRAC || f->phase == N_EXP;
}

static step_result number_to(frame *f, int phase, int digit) {
    if (f->n >= MAX_NUMBER) return number_can_end(f) ? R_POP_RETRY : R_REJECT;
    f->aux = f->phase == phase ? (uint8_t)(f->aux + digit) : (uint8_t)digit;
    f->phase = (uint8_t)phase;
    f->n++;
    return R_OK;
}

/* ---- integer bounds (minimum / maximum) ---- */

static int64_t pow10_i(int j) {
    int64_t p = 1;
    while (j-- > 0) p *= 10;
    return p;
}

static int int_in_range(const jg_node *n, const frame *f) {
    int64_t x = f->flag ? -(int64_t)f->a : (int64_t)f->a;
    return (!n->has_min || x >= n->min) && (!n->has_max || x <= n->max);
}

/* Some integer that starts as written so far (sign f->flag, magnitude f->a
 * of f->aux digits; a leading 0 takes no more) lies within the bounds. */
static int int_feasible(const jg_node *n, const frame *f) {
    const int k = f->aux, zero = f->phase == N_ZERO;
    for (int j = 0; k + j <= MAX_INT_DIGITS; j++) {
        if ((k == 0 && j == 0) || (zero && j > 0)) continue;
        int64_t lo, hi; /* magnitudes reachable with j more digits */
        if (k == 0) {
            lo = j == 1 ? 0 : pow10_i(j - 1);
            hi = pow10_i(j) - 1;
        } else {
            lo = (int64_t)f->a * pow10_i(j);
            hi = lo + pow10_i(j) - 1;
        }
        int64_t a = f->flag ? -hi : lo, b = f->flag ? -lo : hi;
        if ((!n->has_min || b >= n->min) && (!n->has_max || a <= n->max)) return 1;
    }
    return 0;
}

static step_result step_number(frame *f, int integer, uint8_t b);

/* An integer with bounds: the number grammar, plus every digit must leave
 * a way into the range and the value must be in it to end. */
static step_result step_integer(frame *f, const jg_node *n, uint8_t b) {
    if (!n->has_min && !n->has_max) return step_number(f, 1, b);
    const frame before = *f;
    step_result r = step_number(f, 1, b);
    if (r == R_POP_RETRY) return int_in_range(n, &before) ? r : R_REJECT;
    if (r != R_OK) return r;
    if (b == '-') f->flag = 1;
    else f->a = before.a * 10 + (uint64_t)(b - '0');
    return int_feasible(n, f) ? R_OK : R_REJECT;
}

static step_result step_number(frame *f, int integer, uint8_t b) {
    const int digit = b >= '0' && b <= '9';
    const int e = !integer && (b == 'e' || b == 'E');
    switch (f->phase) {
    case N_START:
        if (b == '-') return number_to(f, N_MINUS, 0);
        /* fall through */
    case N_MINUS:
        if (b == '0') return number_to(f, N_ZERO, 1);
        return digit ? number_to(f, N_INT, 1) : R_REJECT;
    case N_ZERO:
    case N_INT:
        if (digit && f->phase == N_INT && f->aux < MAX_INT_DIGITS) return number_to(f, N_INT, 1);
        if (!integer && b == '.') return number_to(f, N_DOT, 0);
        if (e) return number_to(f, N_E, 0);
        return R_POP_RETRY;
    case N_DOT: return digit ? number_to(f, N_FRAC, 1) : R_REJECT;
    case N_FRAC:
        if (digit) return number_to(f, N_FRAC, 1);
        if (e) return number_to(f, N_E, 0);
        return R_POP_RETRY;
    case N_E:
        if (b == '+' || b == '-') return number_to(f, N_ESIGN, 0);
        /* fall through */
    case N_ESIGN: return digit ? number_to(f, N_EXP, 1) : R_REJECT;
    case N_EXP:
        if (digit && f->aux < MAX_EXP_DIGITS) return number_to(f, N_EXP, 1);
        return R_POP_RETRY;
    default: return R_REJECT;
    }
}

/* ---- literal sets (enum, const, true/false/null) ---- */

static int literal_complete(const frame *f, const jg_node *n) {
    for (int i = 0; i < n->n_strs; i++)
        if ((f->a >> i & 1) && n->lens[i] == f->n) return 1;
    return 0;
}

static step_result step_literals(frame *f, const jg_node *n, uint8_t b) {
    uint64_t keep = 0;
    int open = 0;
    for (int i = 0; i < n->n_strs; i++) {
        if (!(f->a >> i & 1) || f->n >= n->lens[i] || (uint8_t)n->strs[i][f->n] != b) continue;
        keep |= 1ULL << i;
        open |= n->lens[i] > f->n + 1;
    }
    if (!keep) return f->n > 0 && literal_complete(f, n) ? R_POP_RETRY : R_REJECT;
    f->a = keep;
    f->n++;
    return open ? R_OK : R_OK_POP;
}

/* ---- feeding one byte ---- */

static void feed(const jg_schema *g, stack *st, uint8_t b, stack_set *out);

/* Start a value of node `node` at byte b: one stack per anyOf branch. */
static void push_value(const jg_schema *g, stack *st, int node, uint8_t b, stack_set *out) {
    const jg_node *n = &g->nodes[node];
    if (n->kind == JG_N_ANYOF) {
        for (int k = 0; k < n->n_kids; k++) {
            stack copy;
            memcpy(&copy, st, stack_bytes(st));
            push_value(g, &copy, n->kids[k], b, out);
        }
        return;
    }
    if (st->depth >= JG_MAX_DEPTH) return;
    frame *f = push_frame(st, node);
    if (n->kind == JG_N_LITERALS) f->a = n->n_strs >= 64 ? ~0ULL : (1ULL << n->n_strs) - 1;
    feed(g, st, b, out);
}

static void feed(const jg_schema *g, stack *st, uint8_t b, stack_set *out) {
    if (!st->started) {
        st->started = 1;
        push_value(g, st, g->root, b, out);
        return;
    }
    while (st->depth > 0) {
        frame *f = &st->f[st->depth - 1];
        const jg_node *n = &g->nodes[f->node];
        int child = JG_NONE;
        step_result r = R_REJECT;
        switch (n->kind) {
        case JG_N_OBJECT: r = step_object(st, f, n, b, &child); break;
        case JG_N_ARRAY: r = step_array(st, f, n, b, &child); break;
        case JG_N_STRING: r = step_string(f, n, b); break;
        case JG_N_NUMBER: r = step_number(f, 0, b); break;
        case JG_N_INTEGER: r = step_integer(f, n, b); break;
        case JG_N_LITERALS: r = step_literals(f, n, b); break;
        default: break;
        }
        switch (r) {
        case R_REJECT: return;
        case R_OK_POP: st->depth--; /* fall through */
        case R_OK: st->ws = 0;      /* fall through */
        case R_OK_WS: set_add(out, st); return;
        case R_POP_RETRY: st->depth--; continue;
        case R_PUSH:
            st->ws = 0;
            push_value(g, st, child, b, out);
            return;
        }
    }
}

/* dst = src advanced by byte b. */
static void feed_set(const jg_schema *g, const stack_set *src, uint8_t b, stack_set *dst) {
    dst->n = 0;
    for (int k = 0; k < src->n; k++) {
        stack st;
        memcpy(&st, &src->s[k], stack_bytes(&src->s[k]));
        feed(g, &st, b, dst);
    }
}

/* in -> out over bytes p[0..n) (n >= 1); returns the set that holds the result. */
static stack_set *feed_bytes(jg_matcher *m, const stack_set *in, const uint8_t *p, size_t n) {
    const stack_set *src = in;
    stack_set *dst = NULL;
    for (size_t i = 0; i < n; i++) {
        dst = &m->tmp[i & 1];
        feed_set(m->g, src, p[i], dst);
        if (dst->n == 0) return dst;
        src = dst;
    }
    return dst;
}

/* ---- the matcher ---- */

jg_matcher *jg_matcher_new(const jg_schema *g) {
    jg_matcher *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->g = g;
    m->cur.s = malloc(JG_MAX_STACKS * sizeof(stack));
    m->tmp[0].s = malloc(JG_MAX_STACKS * sizeof(stack));
    m->tmp[1].s = malloc(JG_MAX_STACKS * sizeof(stack));
    if (!m->cur.s || !m->tmp[0].s || !m->tmp[1].s) {
        jg_matcher_free(m);
        return NULL;
    }
    jg_matcher_reset(m);
    return m;
}

void jg_matcher_free(jg_matcher *m) {
    if (!m) return;
    free(m->cur.s);
    free(m->tmp[0].s);
    free(m->tmp[1].s);
    for (int d = 0; d <= TRIE_LEVELS; d++) free(m->lvl[d].s);
    free(m);
}

void jg_matcher_reset(jg_matcher *m) {
    memset(&m->cur.s[0], 0, sizeof(stack));
    m->cur.n = 1;
    m->first_valid = 0;
}

int jg_matcher_feed(jg_matcher *m, const void *bytes, size_t n) {
    if (n == 0) return 0;
    stack_set *r = feed_bytes(m, &m->cur, bytes, n);
    if (r->n == 0) return -1;
    for (int k = 0; k < r->n; k++) memcpy(&m->cur.s[k], &r->s[k], stack_bytes(&r->s[k]));
    m->cur.n = r->n;
    m->first_valid = 0;
    return 0;
}

int jg_matcher_can_feed(jg_matcher *m, const void *bytes, size_t n) {
    return n == 0 || feed_bytes(m, &m->cur, bytes, n)->n > 0;
}

int jg_matcher_accepting(const jg_matcher *m) {
    for (int k = 0; k < m->cur.n; k++) {
        const stack *s = &m->cur.s[k];
        if (s->started && s->depth == 0) return 1;
        if (s->depth != 1) continue;
        const frame *f = &s->f[0];
        const jg_node *n = &m->g->nodes[f->node];
        if (n->kind == JG_N_NUMBER && number_can_end(f)) return 1;
        if (n->kind == JG_N_INTEGER && number_can_end(f) && int_in_range(n, f)) return 1;
        if (n->kind == JG_N_LITERALS && f->n > 0 && literal_complete(f, n)) return 1;
    }
    return 0;
}

/* ---- the vocabulary ---- */

struct jg_vocab {
    int n_vocab;
    uint32_t *off; /* n_vocab + 1 offsets into bytes */
    uint8_t *bytes;
    uint8_t *eog;
    uint32_t by_first_start[257]; /* tokens with bytes, grouped by first byte */
    int32_t *by_first;
    int32_t *never; /* tokens that never match (no bytes, not end-of-generation) */
    int n_never;
    /* the by_first tokens in that order, for jg_mask_logits to read in
     * sequence: bytes from s_bytes + s_off[k], length s_off[k + 1] - s_off[k],
     * bytes shared with token k - 1 (0 for the first of its first byte;
     * capped at 255), whether it is plain string content (is_plain) */
    uint8_t *s_bytes, *s_lcp, *s_plain;
    uint32_t *s_off;
};

typedef struct {
    const uint8_t *p;
    uint32_t n;
    int32_t id;
} tok_key;

static int tok_key_cmp(const void *pa, const void *pb) {
    const tok_key *a = pa, *b = pb;
    uint32_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->p, b->p, n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

/* by_first in byte order, so tokens sharing a prefix are neighbours and
 * jg_mask_logits walks each prefix once (a trie walked in order). */
static void sort_by_bytes(jg_vocab *v) {
    uint32_t total = v->by_first_start[256];
    tok_key *k = malloc((size_t)total * sizeof *k + 1);
    if (!k) return; /* unsorted still masks correctly, only slower */
    for (uint32_t i = 0; i < total; i++) {
        int32_t id = v->by_first[i];
        k[i] = (tok_key){v->bytes + v->off[id], v->off[id + 1] - v->off[id], id};
    }
    qsort(k, total, sizeof *k, tok_key_cmp);
    for (uint32_t i = 0; i < total; i++) v->by_first[i] = k[i].id;
    free(k);
}

/* Printable ASCII without '"' or '\\': plain string content. */
static int is_plain(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '"' || p[i] == '\\') return 0;
    return n > 0;
}

/* The s_ arrays of jg_vocab from by_first (sorted or not: s_lcp is exact
 * either way). */
static int sorted_copy(jg_vocab *v) {
    uint32_t total = v->by_first_start[256];
    v->s_off = malloc(((size_t)total + 1) * sizeof *v->s_off);
    v->s_bytes = malloc((size_t)v->off[v->n_vocab] + 1);
    v->s_lcp = malloc((size_t)total + 1);
    v->s_plain = malloc((size_t)total + 1);
    if (!v->s_off || !v->s_bytes || !v->s_lcp || !v->s_plain) return -1;
    uint32_t o = 0;
    for (int b = 0; b < 256; b++)
        for (uint32_t k = v->by_first_start[b]; k < v->by_first_start[b + 1]; k++) {
            int32_t id = v->by_first[k];
            uint32_t n = v->off[id + 1] - v->off[id];
            const uint8_t *p = v->bytes + v->off[id];
            v->s_off[k] = o;
            memcpy(v->s_bytes + o, p, n);
            o += n;
            v->s_plain[k] = is_plain(p, n);
            uint32_t common = 0;
            if (k > v->by_first_start[b]) {
                const int32_t prev = v->by_first[k - 1];
                const uint8_t *q = v->bytes + v->off[prev];
                uint32_t qn = v->off[prev + 1] - v->off[prev];
                while (common < n && common < qn && common < 255 && p[common] == q[common])
                    common++;
            }
            v->s_lcp[k] = (uint8_t)common;
        }
    v->s_off[total] = o;
    return 0;
}

static int vocab_fill(jg_vocab *v, const llm_tokenizer *tok) {
    size_t total = 0;
    for (int32_t id = 0; id < v->n_vocab; id++) {
        int len = tok_piece(tok, id, 0, NULL, 0);
        v->off[id] = (uint32_t)total;
        total += len > 0 ? (size_t)len : 0;
    }
    v->off[v->n_vocab] = (uint32_t)total;
    v->bytes = malloc(total ? total : 1);
    if (!v->bytes) return -1;
    uint32_t count[256] = {0};
    for (int32_t id = 0; id < v->n_vocab; id++) {
        size_t len = v->off[id + 1] - v->off[id];
        if (len) tok_piece(tok, id, 0, (char *)v->bytes + v->off[id], len);
        v->eog[id] = (uint8_t)(tok_is_eog(tok, id) != 0);
        if (len && !v->eog[id]) count[v->bytes[v->off[id]]]++;
        else if (!v->eog[id]) v->never[v->n_never++] = id;
    }
    v->by_first_start[0] = 0;
    for (int b = 0; b < 256; b++) v->by_first_start[b + 1] = v->by_first_start[b] + count[b];
    uint32_t fill[256];
    memcpy(fill, v->by_first_start, sizeof fill);
    for (int32_t id = 0; id < v->n_vocab; id++) {
        size_t len = v->off[id + 1] - v->off[id];
        if (len && !v->eog[id]) v->by_first[fill[v->bytes[v->off[id]]]++] = id;
    }
    sort_by_bytes(v);
    return sorted_copy(v);
}

jg_vocab *jg_vocab_new(const llm_tokenizer *tok, char *err, size_t errlen) {
    jg_vocab *v = calloc(1, sizeof *v);
    if (v) {
        v->n_vocab = tok_n_vocab(tok);
        v->off = malloc(((size_t)v->n_vocab + 1) * sizeof *v->off);
        v->eog = malloc((size_t)v->n_vocab);
        v->by_first = malloc((size_t)v->n_vocab * sizeof *v->by_first);
        v->never = malloc((size_t)v->n_vocab * sizeof *v->never);
    }
    if (!v || !v->off || !v->eog || !v->by_first || !v->never || vocab_fill(v, tok) != 0) {
        jg_vocab_free(v);
        snprintf(err, errlen, "out of memory building the token table for JSON output");
        return NULL;
    }
    return v;
}

void jg_vocab_free(jg_vocab *v) {
    if (!v) return;
    free(v->off);
    free(v->bytes);
    free(v->eog);
    free(v->by_first);
    free(v->never);
    free(v->s_off);
    free(v->s_bytes);
    free(v->s_lcp);
    free(v->s_plain);
    free(v);
}

const uint8_t *jg_vocab_bytes(const jg_vocab *v, int32_t id, size_t *n) {
    *n = 0;
    if (id < 0 || id >= v->n_vocab || v->eog[id]) return NULL;
    *n = v->off[id + 1] - v->off[id];
    return *n ? v->bytes + v->off[id] : NULL;
}

static void first_bytes(jg_matcher *m) {
    if (m->first_valid) return;
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        m->first_ok[b] = (uint8_t)(feed_bytes(m, &m->cur, &byte, 1)->n > 0);
    }
    m->first_valid = 1;
}

int jg_matcher_done(jg_matcher *m) {
    if (!jg_matcher_accepting(m)) return 0;
    first_bytes(m);
    for (int b = 0; b < 256; b++)
        if (m->first_ok[b]) return 0;
    return 1;
}

int jg_token_allowed(const jg_vocab *v, jg_matcher *m, int32_t id) {
    if (id < 0 || id >= v->n_vocab) return 0;
    if (v->eog[id]) return jg_matcher_accepting(m);
    size_t n;
    const uint8_t *p = jg_vocab_bytes(v, id, &n);
    if (!p) return 0;
    first_bytes(m);
    if (!m->first_ok[p[0]]) return 0;
    return n == 1 || jg_matcher_can_feed(m, p, n);
}

/* Whether the token at p[0..n) survives, reusing m->lvl[0..*valid] (the
 * states after the first bytes of the previous token, which shares `common`
 * bytes with this one) and leaving them valid for this token. */
static int trie_step(jg_matcher *m, const uint8_t *p, size_t n, size_t common, size_t *valid) {
    size_t d = common < *valid ? common : *valid;
    while (m->lvl[d].n > 0 && d < n && d < TRIE_LEVELS) {
        if (!m->lvl[d + 1].s && !(m->lvl[d + 1].s = malloc(JG_MAX_STACKS * sizeof(stack)))) break;
        feed_set(m->g, &m->lvl[d], p[d], &m->lvl[d + 1]);
        d++;
    }
    *valid = d;
    if (m->lvl[d].n == 0) return 0;
    return d == n || feed_bytes(m, &m->lvl[d], p + d, n - d)->n > 0;
}

/* How many bytes of plain content (is_plain) some stack takes
 * here as they come: inside a string (up to its maxLength) or an object key
 * that may be another than the properties (up to MAX_KEY). A plain token no
 * longer than that is allowed without walking it. */
static size_t plain_room(const jg_matcher *m) {
    size_t room = 0;
    for (int k = 0; k < m->cur.n; k++) {
        const stack *s = &m->cur.s[k];
        if (s->depth == 0) continue;
        const frame *f = &s->f[s->depth - 1];
        const jg_node *n = &m->g->nodes[f->node];
        size_t r = 0;
        if (n->kind == JG_N_STRING && f->phase == S_IN)
            r = n->hi < 0 ? SIZE_MAX : (size_t)(n->hi - (long)f->n);
        else if (n->kind == JG_N_OBJECT && f->phase == O_KEY && f->flag) r = MAX_KEY - f->n;
        if (r > room) room = r;
    }
    return room;
}

void jg_mask_logits(const jg_vocab *v, jg_matcher *m, float *logits) {
    first_bytes(m);
    const size_t room = plain_room(m);
    m->lvl[0] = m->cur; /* borrowed: level 0 is never written */
    for (int b = 0; b < 256; b++) {
        /* run: bytes the current token shares with the last walked one (the
         * least s_lcp since); dead: a prefix of that token no state
         * survives (SIZE_MAX: none) */
        size_t valid = 0, run = SIZE_MAX, dead = SIZE_MAX;
        int walked = 0;
        if (!m->first_ok[b]) {
            for (uint32_t k = v->by_first_start[b]; k < v->by_first_start[b + 1]; k++)
                logits[v->by_first[k]] = -INFINITY;
            continue;
        }
        for (uint32_t k = v->by_first_start[b]; k < v->by_first_start[b + 1]; k++) {
            int32_t id = v->by_first[k];
            if (v->s_lcp[k] < run) run = v->s_lcp[k];
            if (run >= dead) { /* begins with the prefix the last walked token died on */
                logits[id] = -INFINITY;
                continue;
            }
            if (logits[id] == -INFINITY) continue;
            const uint8_t *p = v->s_bytes + v->s_off[k];
            size_t n = v->s_off[k + 1] - v->s_off[k];
            if (v->s_plain[k] && n <= room) continue;
            int ok = trie_step(m, p, n, walked ? run : 0, &valid);
            walked = 1;
            run = SIZE_MAX;
            dead = ok || valid > n || m->lvl[valid].n > 0 ? SIZE_MAX : valid;
            if (!ok) logits[id] = -INFINITY;
        }
    }
    m->lvl[0].s = NULL;
    for (int k = 0; k < v->n_never; k++) logits[v->never[k]] = -INFINITY;
    if (!jg_matcher_accepting(m))
        for (int32_t id = 0; id < v->n_vocab; id++)
            if (v->eog[id]) logits[id] = -INFINITY;
}

int jg_matcher_feed_token(const jg_vocab *v, jg_matcher *m, int32_t id) {
    size_t n;
    const uint8_t *p = jg_vocab_bytes(v, id, &n);
    if (!p) return -1;
    return jg_matcher_feed(m, p, n);
}
