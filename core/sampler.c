/*
 * sampler.c - per-request token sampling (see sampler.h for the contract).
 *
 * Each call copies the logits into scratch (so NaN can be sanitized and the
 * penalty applied without touching the caller's row), then narrows the
 * candidate set step by step. Every cut keeps a prefix of the candidates
 * ordered by (logit desc, id asc), so the final set is the shortest of the
 * prefixes; that lets us avoid sorting:
 *   - top-k keeps a bounded min-heap while scanning the vocab;
 *   - min-p is a plain threshold on exp((l - max) / T) >= min_p;
 *   - top-p needs order only inside the min-p set, and only when that set
 *     holds at least top_p of the mass; there a quickselect that tracks the
 *     settled mass finds the cut in expected linear time, without sorting.
 * The order (logit desc, id asc) is total, so ties resolve the same way on
 * every path and the draw is reproducible.
 */
#include "core/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t id;
    float logit; /* penalized logit; becomes the unnormalized weight later */
} cand;

struct sampler {
    sampler_params p;
    int n_vocab;
    uint64_t rng[4]; /* xoshiro256** state */
    float *work;     /* penalized copy of the logits */
    cand *cands;     /* candidate scratch, n_vocab entries */
    uint32_t *stamp; /* per-token marks to apply the penalty once per token */
    uint32_t epoch;
};

/* ---- PRNG: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform double in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* ---- parameters ---- */

void sampler_params_default(sampler_params *p) {
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repetition_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
}

int sampler_params_validate(const sampler_params *p, char *err, size_t errlen) {
    if (!(p->temperature >= 0.0f) || isinf(p->temperature)) {
        snprintf(err, errlen, "temperature must be a finite number >= 0 (got %g)",
                 (double)p->temperature);
        return -1;
    }
    if (p->top_k < 0) {
        snprintf(err, errlen, "top_k must be >= 0, 0 = off (got %d)", p->top_k);
        return -1;
    }
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        snprintf(err, errlen, "top_p must be in (0, 1], 1 = off (got %g)", (double)p->top_p);
        return -1;
    }
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) {
        snprintf(err, errlen, "min_p must be in [0, 1], 0 = off (got %g)", (double)p->min_p);
        return -1;
    }
    if (!(p->repetition_penalty > 0.0f) || isinf(p->repetition_penalty)) {
        snprintf(err, errlen, "repetition_penalty must be a finite number > 0, 1 = off (got %g)",
                 (double)p->repetition_penalty);
        return -1;
    }
    if (p->repeat_last_n < -1) {
        snprintf(err, errlen, "repeat_last_n must be >= -1, -1 = whole history (got %d)",
                 p->repeat_last_n);
        return -1;
    }
    return 0;
}

int sampler_create(const sampler_params *p, int n_vocab, sampler **out, char *err, size_t errlen) {
    *out = NULL;
    if (sampler_params_validate(p, err, errlen) != 0) return -1;
    if (n_vocab <= 0) {
        snprintf(err, errlen, "sampler: vocabulary size must be > 0 (got %d)", n_vocab);
        return -1;
    }
    sampler *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->stamp = calloc((size_t)n_vocab, sizeof *s->stamp);
    if (!s->work || !s->cands || !s->stamp) goto oom;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    *out = s;
    return 0;
oom:
    sampler_free(s);
    snprintf(err, errlen, "sampler: out of memory for a vocabulary of %d", n_vocab);
    return -1;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->work);
    free(s->cands);
    free(s->stamp);
    free(s);
}

const sampler_params *sampler_get_params(const sampler *s) { return &s->p; }

/* ---- candidate ordering ---- */

/* a ranks before b: higher logit, then lower id. */
static int cand_better(const cand *a, const cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (cand_better(a, b)) return -1;
    if (cand_better(b, a)) return 1;
    return 0;
}

static void cand_swap(cand *a, cand *b) {
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Rearrange a[0..n) (weights in .logit) so that its first k elements are
 * the shortest rank-order prefix whose weights sum to >= target, and return
 * k (n when the whole set falls short by rounding). A quickselect that
 * carries the mass of what it has settled: expected O(n), no sorting. The
 * order is total, so equal weights cannot degrade it. */
static int cand_take_mass(cand *a, int n, double target) {
    int lo = 0, hi = n - 1;
    double acc = 0.0; /* mass of a[0..lo), all ranked before a[lo..hi] */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        /* median of three, moved to hi */
        if (cand_better(&a[mid], &a[lo])) cand_swap(&a[mid], &a[lo]);
        if (cand_better(&a[hi], &a[lo])) cand_swap(&a[hi], &a[lo]);
        if (cand_better(&a[hi], &a[mid])) cand_swap(&a[hi], &a[mid]);
        cand_swap(&a[mid], &a[hi]);
        const cand pivot = a[hi];
        int store = lo;
        double better = 0.0;
        for (int i = lo; i < hi; i++) {
            if (cand_better(&a[i], &pivot)) {
                better += a[i].logit;
                cand_swap(&a[i], &a[store++]);
            }
        }
        cand_swap(&a[store], &a[hi]);
        /* [lo, store) ranks before the pivot at store, (store, hi] after */
        if (acc + better >= target) {
            hi = store - 1;
        } else if (acc + better + pivot.logit >= target) {
            return store + 1;
        } else {
            acc += better + pivot.logit;
            lo = store + 1;
        }
    }
    return lo < n ? lo + 1 : n;
}

/* Min-heap on rank: the root is the worst of the kept candidates. */
static void heap_sift_down(cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_better(&h[w], &h[l])) w = l;
        if (r < n && cand_better(&h[w], &h[r])) w = r;
        if (w == i) return;
        cand_swap(&h[i], &h[w]);
        i = w;
    }
}

static void heap_sift_up(cand *h, int i) {
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!cand_better(&h[parent], &h[i])) return;
        cand_swap(&h[parent], &h[i]);
        i = parent;
    }
}

/* ---- the pipeline ---- */

/* The repetition penalty changes some logits of this call. */
static int penalty_applies(const sampler *s, const int32_t *history, size_t n_history) {
    return s->p.repetition_penalty != 1.0f && s->p.repeat_last_n != 0 && history && n_history > 0;
}

/* The first index of the largest logit, NaN never winning; -1 when none
 * exceeds -inf: what prepare returns when no penalty applies, in two tight
 * passes instead of a copy of the logits and a branchy scan (it runs once per
 * token over the whole vocabulary); build_dist's greedy case uses it. */
static int32_t argmax_first(const float *logits, int n) {
    /* 16 running maxima the compiler keeps in vector registers (a max in
     * any order is the same value; NaN is skipped by the comparison) */
    float m[16];
    for (int j = 0; j < 16; j++) m[j] = -INFINITY;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) m[j] = logits[i + j] > m[j] ? logits[i + j] : m[j];
    float mx = -INFINITY;
    for (; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int j = 0; j < 16; j++) mx = m[j] > mx ? m[j] : mx;
    if (mx == -INFINITY) return -1;
    for (int k = 0; k < n; k++)
        if (logits[k] == mx) return k;
    return -1;
}

/* Copy and sanitize the logits, apply the repetition penalty. Returns the
 * argmax (ties to the lowest id) or -1 when nothing is finite-or-+inf. */
static int32_t prepare(sampler *s, const float *logits, const int32_t *history, size_t n_history) {
    const int V = s->n_vocab;
    for (int i = 0; i < V; i++) {
        float l = logits[i];
        s->work[i] = isnan(l) ? -INFINITY : l;
    }
    float pen = s->p.repetition_penalty;
    if (penalty_applies(s, history, n_history)) {
        size_t n = n_history;
        if (s->p.repeat_last_n > 0 && (size_t)s->p.repeat_last_n < n)
            n = (size_t)s->p.repeat_last_n;
        if (++s->epoch == 0) { /* wrapped: clear marks once every 2^32 calls */
            memset(s->stamp, 0, (size_t)V * sizeof *s->stamp);
            s->epoch = 1;
        }
        for (size_t i = n_history - n; i < n_history; i++) {
            int32_t id = history[i];
            if (id < 0 || id >= V || s->stamp[id] == s->epoch) continue;
            s->stamp[id] = s->epoch;
            float l = s->work[id];
            s->work[id] = l > 0.0f ? l / pen : l * pen;
        }
    }
    int32_t best = -1;
    float bl = -INFINITY;
    for (int i = 0; i < V; i++) {
        if (s->work[i] > bl) {
            bl = s->work[i];
            best = i;
        }
    }
    return best;
}

/* Build the final distribution in s->cands[0..n) with unnormalized weights
 * in .logit; returns n (>= 1), or -1 when no token is possible. *total gets
 * the weights' sum. */
static int finish_dist(sampler *s, int32_t best, double *total);

static int is_greedy(const sampler *s) { return s->p.temperature == 0.0f || s->p.top_k == 1; }

static int build_dist(sampler *s, const float *logits, const int32_t *history, size_t n_history,
                      double *total) {
    const int greedy = is_greedy(s);
    int32_t best = greedy && !penalty_applies(s, history, n_history)
                       ? argmax_first(logits, s->n_vocab) /* nothing else needs the copy */
                       : prepare(s, logits, history, n_history);
    return finish_dist(s, best, total);
}

/* The rest of build_dist, from best (the argmax of s->work, which holds the
 * penalized logits unless greedy). */
static int finish_dist(sampler *s, int32_t best, double *total) {
    const int V = s->n_vocab;
    const int greedy = is_greedy(s);
    if (best < 0) return -1;
    const float mx = greedy ? 0.0f : s->work[best]; /* only sampling reads it */
    if (greedy || isinf(mx)) {
        /* Greedy, or a +inf logit that takes all the mass. */
        s->cands[0].id = best;
        s->cands[0].logit = 1.0f;
        *total = 1.0;
        return 1;
    }
    const float inv_t = 1.0f / s->p.temperature;
    cand *c = s->cands;
    int n;

    /* top-k: keep the k best in a heap while scanning. */
    if (s->p.top_k > 0 && s->p.top_k < V) {
        int k = s->p.top_k;
        n = 0;
        for (int i = 0; i < V; i++) {
            cand x = {i, s->work[i]};
            if (x.logit == -INFINITY) continue;
            if (n < k) {
                c[n] = x;
                heap_sift_up(c, n++);
            } else if (cand_better(&x, &c[0])) {
                c[0] = x;
                heap_sift_down(c, n, 0);
            }
        }
    } else {
        n = 0;
        for (int i = 0; i < V; i++) {
            if (s->work[i] == -INFINITY) continue;
            c[n].id = i;
            c[n].logit = s->work[i];
            n++;
        }
    }

    /* Weights relative to the best token (weight 1); Z = top-k set's mass. */
    double z = 0.0;
    for (int i = 0; i < n; i++) {
        float w = expf((c[i].logit - mx) * inv_t);
        c[i].logit = w;
        z += w;
    }

    /* min-p: drop tokens below min_p of the best one's probability. */
    double mass = z;
    if (s->p.min_p > 0.0f) {
        int m = 0;
        mass = 0.0;
        for (int i = 0; i < n; i++) {
            if (c[i].logit >= s->p.min_p) {
                c[m++] = c[i];
                mass += c[i].logit;
            }
        }
        n = m;
    }

    /* top-p over the top-k set: the shortest prefix with mass >= top_p * Z.
     * When the min-p set holds less than that, min-p is the shorter cut. */
    if (s->p.top_p < 1.0f && mass >= (double)s->p.top_p * z) {
        n = cand_take_mass(c, n, (double)s->p.top_p * z);
        mass = 0.0;
        for (int i = 0; i < n; i++) mass += c[i].logit;
    }
    *total = mass;
    return n;
}

/* Draw from the distribution build_dist left in s->cands[0..n). */
static int32_t draw(sampler *s, int n, double total) {
    if (n < 0) return -1;
    if (n == 1) return s->cands[0].id;
    double u = rng_uniform(s->rng) * total, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->cands[i].logit;
        if (u < acc) return s->cands[i].id;
    }
    /* u landed in the rounding gap at the top: take the last positive one */
    for (int i = n - 1; i >= 0; i--)
        if (s->cands[i].logit > 0.0f) return s->cands[i].id;
    return s->cands[0].id;
}

int32_t sampler_sample(sampler *s, const float *logits, const int32_t *history, size_t n_history) {
    double total = 0.0;
    int n = build_dist(s, logits, history, n_history, &total);
    return draw(s, n, total);
}

/* ---- a filter (constrained decoding) ---- */

/* Candidates checked one by one, best first, before the whole vocabulary is
 * handed to the filter's mask. */
enum { FILTER_WINDOW = 64 };

/* The best w finite candidates of s->work in rank order into s->cands;
 * returns how many (fewer than w only when the vocabulary has no more). */
static int best_candidates(sampler *s, int w) {
    cand *c = s->cands;
    int n = 0;
    for (int i = 0; i < s->n_vocab; i++) {
        cand x = {i, s->work[i]};
        if (x.logit == -INFINITY) continue;
        if (n < w) {
            c[n] = x;
            heap_sift_up(c, n++);
        } else if (cand_better(&x, &c[0])) {
            c[0] = x;
            heap_sift_down(c, n, 0);
        }
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    return n;
}

/* Leave in s->work only tokens f allows, as build_dist's cuts need them:
 * greedy needs the best allowed token, top-k the k best, min-p those within
 * its ratio of the best allowed; those are checked in rank order from a
 * window of the best candidates, every other token set to -inf (the cuts
 * would drop it anyway, so the result equals masking the whole vocabulary).
 * When the window does not settle it, f->mask filters every token. Returns
 * the best allowed token or -1. */
static int32_t filter_work(sampler *s, const sampler_filter *f) {
    const int greedy = is_greedy(s);
    const int need = greedy ? 1 : s->p.top_k;
    const int minp = !greedy && s->p.min_p > 0.0f;
    const float inv_t = greedy ? 0.0f : 1.0f / s->p.temperature;
    int w = need > FILTER_WINDOW ? need : FILTER_WINDOW;
    if (w > s->n_vocab) w = s->n_vocab;
    cand *c = s->cands;
    int n = best_candidates(s, w), kept = 0, settled = n < w;
    for (int i = 0; i < n && !settled; i++) {
        if (minp && kept > 0 && expf((c[i].logit - c[0].logit) * inv_t) < s->p.min_p) settled = 1;
        else if (f->allowed(f->ctx, c[i].id)) c[kept++] = c[i];
        if (need > 0 && kept == need) settled = 1;
    }
    if (n < w) { /* every finite token was in the window: the checks above decide */
        kept = 0;
        for (int i = 0; i < n; i++)
            if (f->allowed(f->ctx, c[i].id)) c[kept++] = c[i];
    }
    if (settled) {
        for (int i = 0; i < s->n_vocab; i++) s->work[i] = -INFINITY;
        for (int i = 0; i < kept; i++) s->work[c[i].id] = c[i].logit;
        return kept ? c[0].id : -1;
    }
    f->mask(f->ctx, s->work);
    int32_t best = -1;
    for (int i = 0; i < s->n_vocab; i++)
        if (s->work[i] > -INFINITY && (best < 0 || s->work[i] > s->work[best])) best = i;
    return best;
}

int32_t sampler_sample_filtered(sampler *s, const float *logits, const int32_t *history,
                                size_t n_history, const sampler_filter *f) {
    if (!f) return sampler_sample(s, logits, history, n_history);
    if (prepare(s, logits, history, n_history) < 0) return -1;
    double total = 0.0;
    int n = finish_dist(s, filter_work(s, f), &total);
    return draw(s, n, total);
}

int sampler_probs(sampler *s, const float *logits, const int32_t *history, size_t n_history,
                  int32_t *ids, float *probs, int cap) {
    double total;
    int n = build_dist(s, logits, history, n_history, &total);
    if (n < 0) return -1;
    qsort(s->cands, (size_t)n, sizeof *s->cands, cand_cmp);
    for (int i = 0; i < n && i < cap; i++) {
        ids[i] = s->cands[i].id;
        probs[i] = (float)(s->cands[i].logit / total);
    }
    return n;
}

int sampler_logprobs(sampler *s, const float *logits, const int32_t *history, size_t n_history,
                     int32_t token, double *token_lp, int32_t *ids, double *lps, int n_top) {
    *token_lp = -INFINITY;
    int32_t best = prepare(s, logits, history, n_history);
    if (best < 0) return -1;
    const int V = s->n_vocab;
    const double mx = s->work[best];
    double lse;
    if (isinf(mx)) {
        /* +inf logits share all the mass equally; every other token gets -inf */
        int n_inf = 0;
        for (int i = 0; i < V; i++) n_inf += isinf(s->work[i]) && s->work[i] > 0;
        for (int i = 0; i < V; i++) s->work[i] = s->work[i] == INFINITY ? 0.0f : -INFINITY;
        lse = log((double)n_inf);
    } else {
        double z = 0.0;
        for (int i = 0; i < V; i++) z += exp((double)s->work[i] - mx); /* exp(-inf) = 0 */
        lse = mx + log(z);
    }
    if (token >= 0 && token < V) *token_lp = (double)s->work[token] - lse;
    int n = n_top > 0 ? best_candidates(s, n_top < V ? n_top : V) : 0;
    for (int i = 0; i < n; i++) {
        ids[i] = s->cands[i].id;
        lps[i] = (double)s->cands[i].logit - lse;
    }
    return n;
}
