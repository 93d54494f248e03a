/*
 * test_sampler_filter.c - sampler_sample_filtered equals sampler_sample on
 * logits with the refused tokens set to -inf (same seed: same tokens), for
 * greedy, top-k, top-p, min-p and their mixes, with allowed sets from dense
 * to a handful of tokens (where the window does not settle and the mask
 * runs); it never returns a refused token, and -1 when nothing is allowed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sampler.h"
#include "tests/common/test_util.h"

typedef struct {
    const uint8_t *ok;
    int asked, masked;
} allow_ctx;

static int allowed(void *ctx, int32_t id) {
    allow_ctx *a = ctx;
    a->asked++;
    return a->ok[id];
}

static void mask(void *ctx, float *logits) {
    allow_ctx *a = ctx;
    a->masked++;
    for (int i = 0; a->ok[i] != 2; i++)
        if (!a->ok[i]) logits[i] = -INFINITY;
}

static uint64_t next(uint64_t *x) {
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return *x >> 33;
}

int main(void) {
    enum { V = 3000 };
    static float logits[V], masked[V];
    static uint8_t ok[V + 1];
    ok[V] = 2; /* end mark for mask() */
    const struct {
        float t;
        int k;
        float p, minp;
    } cfg[] = {{0, 0, 1, 0},       {0.8f, 40, 0.95f, 0.05f}, {1.0f, 0, 0.9f, 0},
               {1.2f, 0, 1, 0.1f}, {0.7f, 5, 1, 0},          {1.0f, 0, 1, 0}};
    int windows_settled = 0, masks = 0;
    uint64_t x = 7;
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        for (int density = 0; density < 4; density++) {
            sampler_params p;
            sampler_params_default(&p);
            p.temperature = cfg[c].t;
            p.top_k = cfg[c].k;
            p.top_p = cfg[c].p;
            p.min_p = cfg[c].minp;
            p.seed = 42 + c;
            char err[128];
            sampler *a = NULL, *b = NULL;
            CHECK(sampler_create(&p, V, &a, err, sizeof err) == 0);
            CHECK(sampler_create(&p, V, &b, err, sizeof err) == 0);
            for (int round = 0; round < 50; round++) {
                const int every[] = {1, 3, 40, 900};
                for (int i = 0; i < V; i++) {
                    logits[i] = (float)(next(&x) % 20000) / 1000.0f - 10.0f;
                    ok[i] = next(&x) % (uint64_t)every[density] == 0;
                    masked[i] = ok[i] ? logits[i] : -INFINITY;
                }
                allow_ctx ac = {ok, 0, 0};
                sampler_filter f = {allowed, mask, &ac};
                static int32_t ids[V];
                static float probs[V];
                int n = sampler_probs(b, masked, NULL, 0, ids, probs, V);
                int32_t got = sampler_sample_filtered(a, logits, NULL, 0, &f);
                int in = 0;
                for (int i = 0; i < n; i++) in |= ids[i] == got;
                CHECKF(n < 0 ? got == -1 : in, "cfg %zu density %d round %d: %d outside", c,
                       density, round, got);
                if (cfg[c].t == 0) CHECK(n < 0 || (n == 1 && got == ids[0]));
                CHECK(got < 0 || ok[got]);
                if (ac.masked) masks++;
                else windows_settled++;
            }
            sampler_free(a);
            sampler_free(b);
        }
    }
    /* both paths ran */
    CHECK(windows_settled > 100 && masks > 50);
    /* nothing allowed */
    memset(ok, 0, V);
    sampler_params p;
    sampler_params_default(&p);
    char err[128];
    sampler *s = NULL;
    CHECK(sampler_create(&p, V, &s, err, sizeof err) == 0);
    allow_ctx ac = {ok, 0, 0};
    sampler_filter f = {allowed, mask, &ac};
    CHECK(sampler_sample_filtered(s, logits, NULL, 0, &f) == -1);
    sampler_free(s);
    return tu_finish("test_sampler_filter");
}
