/*
 * lt_workload.c - trace parsing, synthetic prompts and arrival gaps for
 * loadtest (see lt_workload.h).
 */
#include "loadtest/lt_workload.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lt_request_free(lt_request *r) {
    free(r->id);
    free(r->prompt);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    memset(r, 0, sizeof *r);
}

void lt_trace_free(lt_trace *t) {
    for (size_t i = 0; i < t->n; i++) lt_request_free(&t->reqs[i]);
    free(t->reqs);
    t->reqs = NULL;
    t->n = 0;
}

/* ---- trace lines ------------------------------------------------------ */

typedef struct {
    const char *name;
    int line;
    char *err;
    size_t errlen;
} ctx_t;

static int fail(ctx_t *c, const char *fmt, ...) {
    int k = snprintf(c->err, c->errlen, "%s:%d: ", c->name, c->line);
    if (k < 0 || (size_t)k >= c->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

/* The value as JSON, cut to a readable length. */
static void show(const cJSON *v, char *buf, size_t len) {
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(buf, len, "?");
        return;
    }
    if (strlen(s) > 40) snprintf(buf, len, "%.37s...", s);
    else snprintf(buf, len, "%s", s);
    cJSON_free(s);
}

static int get_int(ctx_t *c, const cJSON *v, const char *key, long long min, long long *out) {
    char got[64];
    if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
        v->valuedouble >= (double)min && v->valuedouble <= 9007199254740992.0) {
        *out = (long long)v->valuedouble;
        return 0;
    }
    show(v, got, sizeof got);
    return fail(c, "%s must be an integer >= %lld, got %s", key, min, got);
}

static int get_num(ctx_t *c, const cJSON *v, const char *key, double *out) {
    char got[64];
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= 0) {
        *out = v->valuedouble;
        return 0;
    }
    show(v, got, sizeof got);
    return fail(c, "%s must be a number >= 0, got %s", key, got);
}

static int add_stop(lt_request *r, const char *s) {
    char **p = realloc(r->stop, (r->n_stop + 1) * sizeof *p);
    if (!p) return -1;
    r->stop = p;
    if (!(p[r->n_stop] = strdup(s))) return -1;
    r->n_stop++;
    return 0;
}

static int parse_line(ctx_t *c, const cJSON *o, lt_request *r) {
    char got[64];
    long long iv;
    int have_t = 0, have_max = 0, have_min = 0;
    memset(r, 0, sizeof *r);
    r->max_tokens = 128;
    r->ignore_eos = -1;
    r->line = c->line;
    if (!cJSON_IsObject(o)) {
        show(o, got, sizeof got);
        return fail(c, "a trace line must be a JSON object, got %s", got);
    }
    for (const cJSON *v = o->child; v; v = v->next) {
        const char *k = v->string;
        if (!strcmp(k, "t")) {
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0) {
                show(v, got, sizeof got);
                return fail(c, "t must be a number >= 0 (seconds), got %s", got);
            }
            r->t = v->valuedouble;
            have_t = 1;
        } else if (!strcmp(k, "prompt")) {
            if (!cJSON_IsString(v)) {
                show(v, got, sizeof got);
                return fail(c, "prompt must be a string, got %s", got);
            }
            if (!(r->prompt = strdup(v->valuestring))) return fail(c, "out of memory");
        } else if (!strcmp(k, "prompt_len")) {
            if (get_int(c, v, k, 1, &iv)) return -1;
            if (iv > 1000000) return fail(c, "prompt_len must be at most 1000000, got %lld", iv);
            r->prompt_len = (int)iv;
        } else if (!strcmp(k, "max_tokens") || !strcmp(k, "max_length")) {
            if (have_max) return fail(c, "give one of max_tokens and max_length, not both");
            if (get_int(c, v, k, 1, &iv)) return -1;
            if (iv > 1000000) return fail(c, "%s must be at most 1000000, got %lld", k, iv);
            r->max_tokens = (int)iv;
            have_max = 1;
        } else if (!strcmp(k, "min_tokens") || !strcmp(k, "min_length")) {
            if (have_min) return fail(c, "give one of min_tokens and min_length, not both");
            if (get_int(c, v, k, 0, &iv)) return -1;
            if (iv > 1000000) return fail(c, "%s must be at most 1000000, got %lld", k, iv);
            r->min_tokens = (int)iv;
            r->has_min_tokens = have_min = 1;
        } else if (!strcmp(k, "temperature")) {
            if (get_num(c, v, k, &r->temperature)) return -1;
            r->has_temperature = 1;
        } else if (!strcmp(k, "top_k")) {
            if (get_int(c, v, k, 0, &iv)) return -1;
            if (iv > 1000000000) return fail(c, "top_k is too large, got %lld", iv);
            r->top_k = (int)iv;
            r->has_top_k = 1;
        } else if (!strcmp(k, "top_p")) {
            if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1)) {
                show(v, got, sizeof got);
                return fail(c, "top_p must be a number in (0, 1], got %s", got);
            }
            r->top_p = v->valuedouble;
            r->has_top_p = 1;
        } else if (!strcmp(k, "seed")) {
            if (get_int(c, v, k, 0, &iv)) return -1;
            r->seed = (uint64_t)iv;
            r->has_seed = 1;
        } else if (!strcmp(k, "ignore_eos")) {
            if (!cJSON_IsBool(v)) {
                show(v, got, sizeof got);
                return fail(c, "ignore_eos must be true or false, got %s", got);
            }
            r->ignore_eos = cJSON_IsTrue(v);
        } else if (!strcmp(k, "stop")) {
            if (cJSON_IsString(v)) {
                if (add_stop(r, v->valuestring)) return fail(c, "out of memory");
            } else if (cJSON_IsArray(v)) {
                for (const cJSON *e = v->child; e; e = e->next) {
                    if (!cJSON_IsString(e)) {
                        show(v, got, sizeof got);
                        return fail(c, "stop must be a string or an array of strings, got %s", got);
                    }
                    if (add_stop(r, e->valuestring)) return fail(c, "out of memory");
                }
            } else {
                show(v, got, sizeof got);
                return fail(c, "stop must be a string or an array of strings, got %s", got);
            }
        } else if (!strcmp(k, "id")) {
            if (!cJSON_IsString(v)) {
                show(v, got, sizeof got);
                return fail(c, "id must be a string, got %s", got);
            }
            if (!(r->id = strdup(v->valuestring))) return fail(c, "out of memory");
        } else {
            return fail(c,
                        "unknown key \"%.64s\" (known: t, prompt, prompt_len, max_tokens, "
                        "min_tokens, temperature, top_k, top_p, seed, ignore_eos, stop, id)",
                        k);
        }
    }
    if (!have_t) return fail(c, "missing t (arrival offset in seconds)");
    if (!r->prompt == !r->prompt_len)
        return fail(c, r->prompt ? "give one of prompt and prompt_len, not both"
                                 : "missing prompt (a string) or prompt_len (an integer >= 1)");
    if (r->has_min_tokens && r->min_tokens > r->max_tokens)
        return fail(c, "min_tokens (%d) must not exceed max_tokens (%d)", r->min_tokens,
                    r->max_tokens);
    return 0;
}

static int cmp_t(const void *a, const void *b) {
    const lt_request *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line); /* stable: file order */
}

int lt_trace_parse(const char *name, const char *text, lt_trace *out, char *err, size_t errlen) {
    ctx_t c = {name, 0, err, errlen};
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        c.line++;
        const char *s = p;
        size_t n = len;
        while (n && (*s == ' ' || *s == '\t' || *s == '\r')) s++, n--;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
        p = nl ? nl + 1 : p + len;
        if (n == 0 || *s == '#') continue;
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithLengthOpts(s, n, &end, 0);
        if (!o) {
            size_t col = end && end >= s ? (size_t)(end - s) + 1 : 1;
            fail(&c, "invalid JSON near column %zu", col);
            goto bad;
        }
        if (end && (size_t)(end - s) < n) {
            cJSON_Delete(o);
            fail(&c, "trailing characters after the JSON object (one object per line)");
            goto bad;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 64;
            lt_request *q = realloc(out->reqs, cap * sizeof *q);
            if (!q) {
                cJSON_Delete(o);
                fail(&c, "out of memory");
                goto bad;
            }
            out->reqs = q;
        }
        int rc = parse_line(&c, o, &out->reqs[out->n]);
        cJSON_Delete(o);
        out->n++; /* freed on error too */
        if (rc) goto bad;
    }
    if (out->n == 0) {
        snprintf(err, errlen, "%s: no requests in the trace", name);
        goto bad;
    }
    qsort(out->reqs, out->n, sizeof *out->reqs, cmp_t);
    return 0;
bad:
    lt_trace_free(out);
    return -1;
}

int lt_trace_load(const char *path, lt_trace *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (len + 1 >= cap) {
            char *q = realloc(buf, cap * 2);
            if (!q) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = q;
            cap *= 2;
        }
        size_t k = fread(buf + len, 1, cap - len - 1, f);
        len += k;
        if (k == 0) break;
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf || rerr) {
        free(buf);
        snprintf(err, errlen, "%s: %s", path, buf ? "read error" : "out of memory");
        return -1;
    }
    buf[len] = 0;
    if (strlen(buf) != len) {
        free(buf);
        snprintf(err, errlen, "%s: contains a NUL byte (not a text file?)", path);
        return -1;
    }
    int rc = lt_trace_parse(path, buf, out, err, errlen);
    free(buf);
    return rc;
}

/* ---- randomness ------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void lt_rng_seed(lt_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lt_rng_next(lt_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double lt_rng_uniform(lt_rng *r) {
    return ((double)(lt_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double lt_rng_normal(lt_rng *r) {
    double u1 = lt_rng_uniform(r), u2 = lt_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double lt_rng_gamma(lt_rng *r, double shape, double scale) {
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a+1) * U^(1/a) */
        double u = lt_rng_uniform(r);
        return lt_rng_gamma(r, shape + 1.0, scale) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = lt_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0);
        v = v * v * v;
        double u = lt_rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v * scale;
        if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v * scale;
    }
}

double lt_arrival_gap(lt_rng *r, double rate, double burstiness) {
    return lt_rng_gamma(r, burstiness, 1.0 / (rate * burstiness));
}

/* ---- synthetic prompts ------------------------------------------------ */

/* Frequent English words with a leading space: one token each in GPT-2 /
 * Llama 3 / SmolLM style BPE vocabularies. */
static const char *const WORDS[] = {
    " the",       " of",      " and",     " to",       " in",       " is",         " that",
    " for",       " it",      " as",      " was",      " with",     " be",         " by",
    " on",        " not",     " he",      " this",     " are",      " or",         " his",
    " from",      " at",      " which",   " but",      " have",     " an",         " had",
    " they",      " you",     " were",    " their",    " one",      " all",        " we",
    " can",       " her",     " has",     " there",    " been",     " if",         " more",
    " when",      " will",    " would",   " who",      " so",       " no",         " time",
    " people",    " year",    " way",     " day",      " man",      " thing",      " woman",
    " life",      " child",   " world",   " school",   " state",    " family",     " group",
    " country",   " problem", " hand",    " part",     " place",    " case",       " week",
    " company",   " system",  " program", " question", " work",     " number",     " night",
    " point",     " home",    " water",   " room",     " mother",   " area",       " money",
    " story",     " fact",    " month",   " lot",      " right",    " study",      " book",
    " eye",       " job",     " word",    " business", " issue",    " side",       " kind",
    " head",      " house",   " service", " friend",   " father",   " power",      " hour",
    " game",      " line",    " end",     " member",   " law",      " car",        " city",
    " name",      " team",    " minute",  " idea",     " body",     " back",       " face",
    " level",     " office",  " door",    " health",   " person",   " art",        " war",
    " history",   " party",   " good",    " new",      " first",    " last",       " long",
    " great",     " little",  " own",     " other",    " old",      " big",        " high",
    " different", " small",   " large",   " next",     " early",    " young",      " important",
    " few",       " public",  " bad",     " same",     " able",     " make",       " know",
    " take",      " see",     " come",    " think",    " look",     " want",       " give",
    " use",       " find",    " tell",    " ask",      " feel",     " try",        " leave",
    " call",      " keep",    " let",     " begin",    " seem",     " help",       " talk",
    " turn",      " start",   " show",    " hear",     " play",     " run",        " move",
    " like",      " live",    " believe", " hold",     " bring",    " happen",     " write",
    " provide",   " sit",     " stand",   " lose",     " pay",      " meet",       " include",
    " continue",  " set",     " learn",   " change",   " lead",     " understand", " watch",
    " follow",    " stop",    " create",  " speak",    " read",     " spend",      " grow",
    " open",      " walk",    " win",     " offer",    " remember", " love",       " consider",
    " appear",    " buy",     " wait",    " serve",    " die",      " send",       " build",
    " stay",      " fall",    " cut",     " reach",    " kill",     " remain",     " suggest",
    " raise",     " pass",    " sell",    " require",  " report",   " decide",     " pull",
    " very",      " also",
};
#define N_WORDS (sizeof WORDS / sizeof WORDS[0])

char *lt_synth_prompt(uint64_t seed, uint64_t index, int n) {
    if (n < 1) n = 1;
    size_t cap = (size_t)n * 12 + 1, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    uint64_t mix = seed ^ (index * 0x9e3779b97f4a7c15ull) ^ 0x5851f42d4c957f2dull;
    lt_rng r;
    lt_rng_seed(&r, splitmix64(&mix));
    for (int i = 0; i < n; i++) {
        const char *w = WORDS[lt_rng_next(&r) % N_WORDS];
        size_t wl = strlen(w);
        if (i == 0) w++, wl--; /* no leading space at the very start */
        memcpy(s + len, w, wl);
        len += wl;
    }
    s[len] = 0;
    return s;
}

int lt_estimate_tokens(const char *text) {
    /* ~4 bytes per token for English BPE */
    size_t n = strlen(text);
    return n ? (int)((n + 3) / 4) : 0;
}
