/*
 * test_perplexity.c - infer-perplexity on the real model and a short text:
 * the chunk method's running estimates and final PPL equal an independent
 * computation (the same tokens fed one row per forward call, log-softmax
 * summed here), the sliding-window variant likewise, the rows per forward
 * call do not change the result, a --kl-divergence run against its own base
 * file finds the model equal to itself, and bad input (missing file, text
 * shorter than 2 x ctx, bad flags, a base file of other settings) fails
 * with a message and a non-zero status. Skips (77) without the model or
 * the built program.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "tests/common/test_util.h"

#define CTX 32
#define MAX_EST 16

static char g_prog[4096], g_text[4096];
static const char *g_model;

/* Run the program with args; stdout and stderr (merged) into out. */
static int run_tool(const char *args, char *out, size_t cap) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s' -m '%s' -t 2 %s 2>&1", g_prog, g_model, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "[1]a,[2]b,..." and "Final estimate: PPL = X +/- SE". Returns the count. */
static int parse_estimates(const char *out, double *est, double *final, double *se) {
    int n = 0;
    char key[16];
    for (;;) {
        snprintf(key, sizeof key, "[%d]", n + 1);
        const char *p = strstr(out, key);
        if (!p || n == MAX_EST) break;
        est[n++] = strtod(p + strlen(key), NULL);
    }
    const char *f = strstr(out, "Final estimate: PPL = ");
    *final = *se = NAN;
    if (f) sscanf(f, "Final estimate: PPL = %lf +/- %lf", final, se);
    return n;
}

/* The reference: every window evaluated one row per llm_forward call (the
 * multi-token attention shape asked for explicitly, as the program's batched
 * rows get), NLL of the scored tokens summed in double. stride 0: chunks. */
static int reference(int stride, int n_windows, double *est, double *final) {
    char err[512];
    llm_model *m = NULL;
    llm_tokenizer *tok = NULL;
    backend *be = NULL;
    kv_cache *kv = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    size_t len = 0;
    char *text = tu_read_file(g_text, &len);
    int ok = text && llm_model_load(g_model, &m, NULL, NULL, err, sizeof err) == 0 &&
             tok_load(llm_model_gguf(m), &tok, err, sizeof err) == 0 &&
             (be = backend_cpu_create(2, err, sizeof err)) != NULL;
    const llm_hparams *hp = ok ? llm_model_hparams(m) : NULL;
    ok = ok && kv_cache_create(hp->n_layer, hp->n_head_kv * hp->head_dim, 16, CTX / 16 + 1, KV_F16,
                               &kv, err, sizeof err) == 0;
    int n_ids = ok ? tok_encode(tok, text, len, 1, 0, &ids) : -1;
    ok = ok && n_ids > 2 * CTX && (logits = malloc((size_t)hp->n_vocab * sizeof *logits));
    int32_t bos = ok && tok_add_bos(tok) ? tok_bos(tok) : -1;
    double sum = 0, sum2 = 0;
    long count = 0;
    for (int w = 0; ok && w < n_windows; w++) {
        int start = w * (stride ? stride : CTX);
        int lo = stride == 0 ? CTX / 2 : (w == 0 ? 0 : CTX - stride - 1);
        int seq = kv_seq_new(kv);
        ok = seq >= 0 && kv_seq_reserve(kv, seq, CTX) == 0;
        const int32_t *table = kv_seq_block_table(kv, seq);
        for (int pos = 0; ok && pos < CTX - 1; pos++) {
            int32_t t = pos == 0 && bos >= 0 ? bos : ids[start + pos];
            int32_t slot = kv_seq_slot(kv, seq, pos), seq_start[2] = {0, 1}, ctx_len = pos + 1;
            int32_t row = 0;
            uint8_t multi = 0;
            llm_batch b = {1, &t, &pos, &slot, 1, seq_start, &ctx_len, &table, 1, &row, &multi};
            ok = llm_forward(m, be, kv, &b, logits, err, sizeof err) == 0;
            if (!ok || pos < lo) continue;
            double mx = logits[0], s = 0;
            for (int i = 1; i < hp->n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
            for (int i = 0; i < hp->n_vocab; i++) s += exp((double)logits[i] - mx);
            double nll = mx + log(s) - (double)logits[ids[start + pos + 1]];
            sum += nll;
            sum2 += nll * nll;
            count++;
        }
        kv_seq_free(kv, seq);
        if (ok) est[w] = exp(sum / (double)count);
    }
    if (!ok) fprintf(stderr, "reference failed: %s\n", err);
    if (ok) *final = exp(sum / (double)count);
    free(logits);
    free(ids);
    free(text);
    kv_cache_free(kv);
    if (be) backend_free(be);
    tok_free(tok);
    llm_model_free(m);
    return ok ? 0 : -1;
}

static int close_rel(double a, double b, double tol) {
    return isfinite(a) && isfinite(b) && fabs(a - b) <= tol * fabs(b);
}

/* The program's estimates against the reference, window by window. */
static void check_against_reference(const char *args, int stride, int n_windows) {
    static char out[1 << 16];
    double est[MAX_EST], ref[MAX_EST], final, se, ref_final = NAN;
    int rc = run_tool(args, out, sizeof out);
    CHECKF(rc == 0, "%s: exit %d\n%s", args, rc, out);
    int n = parse_estimates(out, est, &final, &se);
    CHECKF(n == n_windows, "%s: %d estimates, want %d\n%s", args, n, n_windows, out);
    CHECK(isfinite(final) && final > 1 && isfinite(se) && se > 0);
    CHECK(reference(stride, n_windows, ref, &ref_final) == 0);
    /* printed with 4 decimals: agree to that and the last bit of rounding */
    for (int i = 0; i < n && i < n_windows; i++)
        CHECKF(close_rel(est[i], ref[i], 2e-5), "%s: window %d: %.4f, reference %.6f", args, i + 1,
               est[i], ref[i]);
    CHECKF(close_rel(final, ref_final, 2e-5), "%s: final %.4f, reference %.6f", args, final,
           ref_final);
}

static void check_bad_inputs(void) {
    static char out[1 << 16];
    char args[8192];
    CHECK(run_tool("-f /nonexistent/text.txt", out, sizeof out) == 1);
    CHECKF(strstr(out, "cannot read the text file") != NULL, "%s", out);
    char shortf[] = "/tmp/test_perplexity_short_XXXXXX";
    int fd = mkstemp(shortf);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, "Too short a text.\n", 18) == 18);
        close(fd);
        snprintf(args, sizeof args, "-f '%s' -c %d", shortf, CTX);
        CHECK(run_tool(args, out, sizeof out) == 1);
        CHECKF(strstr(out, "needs at least 64") != NULL, "%s", out);
        unlink(shortf);
    }
    snprintf(args, sizeof args, "-f '%s' -c 2", g_text);
    CHECK(run_tool(args, out, sizeof out) == 2);
    snprintf(args, sizeof args, "-f '%s' -c %d --stride %d", g_text, CTX, CTX);
    CHECK(run_tool(args, out, sizeof out) == 2);
    CHECK(run_tool("-c 32", out, sizeof out) == 2); /* no -f */
    snprintf(args, sizeof args, "-f '%s' --kv f8", g_text);
    CHECK(run_tool(args, out, sizeof out) == 2);
}

/* A model against its own base file: KL ~ 0, the same top token, the same
 * PPL; a base file of other settings is refused. */
static void check_kl(void) {
    static char out[1 << 16];
    char base[] = "/tmp/test_perplexity_kl_XXXXXX", args[8192];
    int fd = mkstemp(base);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    snprintf(args, sizeof args, "-f '%s' -c %d --chunks 2 --kl-divergence-base '%s'", g_text, CTX,
             base);
    CHECKF(run_tool(args, out, sizeof out) == 0, "%s", out);
    snprintf(args, sizeof args, "-f '%s' -c %d --chunks 2 --batch 5 --kl-divergence '%s'", g_text,
             CTX, base);
    CHECKF(run_tool(args, out, sizeof out) == 0, "%s", out);
    double kld = NAN, same = NAN, ppl_base = NAN, ppl = NAN;
    const char *p;
    if ((p = strstr(out, "Mean KLD"))) kld = strtod(p + 8, NULL);
    if ((p = strstr(out, "Same top token"))) same = strtod(p + 14, NULL);
    if ((p = strstr(out, "PPL(base)"))) ppl_base = strtod(p + 9, NULL);
    if ((p = strstr(out, "PPL(this)"))) ppl = strtod(p + 9, NULL);
    CHECKF(isfinite(kld) && fabs(kld) < 1e-4, "mean KLD %g\n%s", kld, out);
    CHECKF(same >= 90.0, "same top %g%%\n%s", same, out);
    CHECKF(close_rel(ppl_base, ppl, 1e-3), "PPL base %g, this %g", ppl_base, ppl);
    snprintf(args, sizeof args, "-f '%s' -c %d --chunks 3 --kl-divergence '%s'", g_text, CTX, base);
    CHECK(run_tool(args, out, sizeof out) == 1);
    CHECKF(strstr(out, "was written with") != NULL, "%s", out);
    unlink(base);
}

int main(void) {
    g_model = tu_model_path();
    const char *build = getenv("ENGINE_BUILD_DIR");
    if (!g_model || !build) {
        fprintf(stderr, "SKIP: needs the model and ENGINE_BUILD_DIR\n");
        return TU_SKIP;
    }
    snprintf(g_prog, sizeof g_prog, "%s/infer-perplexity", build);
    if (access(g_prog, X_OK) != 0) {
        fprintf(stderr, "SKIP: %s not built\n", g_prog);
        return TU_SKIP;
    }
    snprintf(g_text, sizeof g_text, "%s", tu_src_path("tools/ref_corpus/prose.txt"));
    char args[8192];
    snprintf(args, sizeof args, "-f '%s' -c %d --chunks 3", g_text, CTX);
    check_against_reference(args, 0, 3);
    /* rows per forward call split the chunk's scored half: same figures */
    snprintf(args, sizeof args, "-f '%s' -c %d --chunks 3 --batch 7", g_text, CTX);
    check_against_reference(args, 0, 3);
    snprintf(args, sizeof args, "-f '%s' -c %d --stride 8 --chunks 4 --batch 12", g_text, CTX);
    check_against_reference(args, 8, 4);
    check_kl();
    check_bad_inputs();
    return tu_finish("test_perplexity");
}
