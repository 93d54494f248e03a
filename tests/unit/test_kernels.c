/*
 * test_kernels.c - the CPU kernels (core/backend/cpu/kernels.h: the scalar
 * references, the x86 tables, the packed layout), the thread pool, and the
 * backend's host_for (core/backend/backend.h) over it.
 *
 * The numerics contract in kernels.h says every SIMD table computes exactly
 * what the scalar reference computes, so each table this CPU supports is
 * compared with kern_scalar() bit for bit on random data of many shapes
 * (tile edges, odd strides, tails). Separately the scalar kernels are
 * checked against double-precision references with error bounds derived
 * from the arithmetic (8-bit activations for the GEMMs, ulps for exp), and
 * the reduction orders the contract names are checked on inputs where the
 * order changes the result.
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/backend/backend.h"
#include "core/backend/cpu/kernels.h"
#include "core/backend/cpu/threadpool.h"
#include "core/quant.h"
#include "tests/common/test_util.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_range(float lo, float hi) {
    return lo + (hi - lo) * (float)((rng_u64() >> 40) * 0x1p-24);
}
static float rng_normalish(void) { /* sum of 4 uniforms, mean 0, sd ~ 1 */
    float s = 0;
    for (int i = 0; i < 4; i++) s += rng_range(-1.7320508f, 1.7320508f);
    return s * 0.5f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
/* bit-identical, or both NaN */
static int same_float(float a, float b) {
    return f32_bits(a) == f32_bits(b) || (isnan(a) && isnan(b));
}

/* Distance in ulps between two finite floats of the same sign (monotonic
 * integer mapping of the bits). */
static int64_t ulp_diff(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

typedef struct {
    const char *name;
    const kern_table *t;
} simd_table;
static simd_table tables[2];
static int n_tables;

/* ---------------- quantize ---------------- */
static void fill_activations(float *x, int n, int style) {
    for (int i = 0; i < n; i++) {
        float v = rng_normalish();
        switch (style % 4) {
        case 0: break;
        case 1:
            v *= powf(10.0f, rng_range(-6, 2));
            break; /* per-element magnitudes (s stays within f16) */
        case 2: v = (i % 32 == 5) ? 50.0f * v : v; break;        /* an outlier per block */
        case 3: v = (i / 32) % 3 == 0 ? 0.0f : v * 1e-3f; break; /* zero blocks */
        }
        x[i] = v;
    }
}

static void test_quantize(void) {
    const kern_table *S = kern_scalar();
    const int sizes[] = {32, 64, 96, 32 * 18, 32 * 48};
    for (int ti = 0; ti < n_tables; ti++) {
        int bad = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (int style = 0; style < 8; style++) {
                int n = sizes[si], nb = n / 32;
                float *x = malloc((size_t)n * sizeof *x);
                blk_q8 *a = malloc((size_t)nb * sizeof *a), *b = malloc((size_t)nb * sizeof *b);
                fill_activations(x, n, style);
                memset(a, 0x5a, (size_t)nb * sizeof *a);
                memset(b, 0xa5, (size_t)nb * sizeof *b);
                S->quantize(x, a, n);
                tables[ti].t->quantize(x, b, n);
                for (int k = 0; k < nb; k++)
                    if (memcmp(a[k].qs, b[k].qs, 32) || f32_bits(a[k].d) != f32_bits(b[k].d) ||
                        f32_bits(a[k].s) != f32_bits(b[k].s))
                        bad++;
                free(x);
                free(a);
                free(b);
            }
        CHECKF(bad == 0, "%s quantize: %d blocks differ from scalar", tables[ti].name, bad);
    }

    /* hand-checkable: amax = 127 makes the inverse scale exactly 1, so the
     * codes are x rounded half to even and d = 1 */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) + 0.5f; /* -15.5 ... 15.5: all ties */
    x[0] = -127.0f;
    int want_sum = 0;
    int8_t want[32];
    for (int j = 0; j < 32; j++) {
        want[j] =
            (int8_t)(j == 0 ? -127 : ((j - 16) % 2 == 0 ? j - 16 : j - 15)); /* even neighbour */
        want_sum += want[j];
    }
    for (int ti = -1; ti < n_tables; ti++) {
        const kern_table *T = ti < 0 ? S : tables[ti].t;
        blk_q8 q;
        T->quantize(x, &q, 32);
        CHECKF(memcmp(q.qs, want, 32) == 0, "%s: quantize must round half to even", T->isa);
        CHECKF(q.d == 1.0f && q.s == (float)want_sum, "%s: d %g s %g (want 1, %d)", T->isa, q.d,
               q.s, want_sum);
    }
    /* zero block: zero codes and scales */
    float z[32] = {0};
    blk_q8 q;
    S->quantize(z, &q, 32);
    int zero = q.d == 0.0f && q.s == 0.0f;
    for (int j = 0; j < 32; j++) zero &= q.qs[j] == 0;
    CHECK(zero);
}

/* ---------------- GEMM ---------------- */
typedef enum { WQ4_0, WQ4_1, WQ8_0 } wkind;
static const char *wname[] = {"q4_0", "q4_1", "q8_0"};
static size_t wblock_bytes(wkind k) { return k == WQ4_0 ? 18 : k == WQ4_1 ? 20 : 34; }
static uint32_t wtype(wkind k) { return k == WQ4_0 ? QT_Q4_0 : k == WQ4_1 ? QT_Q4_1 : QT_Q8_0; }
/* fast: the "fast" numerics kernels (kernels.h), else the exact ones */
static kern_gemm_fn wgemm(const kern_table *t, wkind k, int fast) {
    if (fast)
        return k == WQ4_0 ? t->gemm_q4_0_fast : k == WQ4_1 ? t->gemm_q4_1_fast : t->gemm_q8_0_fast;
    return k == WQ4_0 ? t->gemm_q4_0 : k == WQ4_1 ? t->gemm_q4_1 : t->gemm_q8_0;
}

static kern_gemm_packed_fn wpacked(const kern_table *t, wkind k, int fast) {
    if (fast)
        return k == WQ4_0   ? t->gemm_q4_0_packed
               : k == WQ4_1 ? t->gemm_q4_1_packed
                            : t->gemm_q8_0_packed;
    return k == WQ4_0   ? t->gemm_q4_0_packed_exact
           : k == WQ4_1 ? t->gemm_q4_1_packed_exact
                        : t->gemm_q8_0_packed_exact;
}

/* Random weight rows of nb blocks, ws bytes apart (ws > row bytes: padding
 * the kernels must skip). Codes span the full range (Q8_0 includes -128). */
static void fill_weights(wkind k, uint8_t *w, int nc, int nb, size_t ws) {
    for (int c = 0; c < nc; c++) {
        uint8_t *row = w + (size_t)c * ws;
        for (int b = 0; b < nb; b++) {
            uint8_t *blk = row + (size_t)b * wblock_bytes(k);
            uint16_t d = qt_f32_to_f16(rng_range(-0.05f, 0.05f)),
                     m = qt_f32_to_f16(rng_range(-0.3f, 0.3f));
            memcpy(blk, &d, 2);
            size_t off = 2;
            if (k == WQ4_1) {
                memcpy(blk + 2, &m, 2);
                off = 4;
            }
            for (size_t i = off; i < wblock_bytes(k); i++) blk[i] = (uint8_t)rng_u64();
        }
    }
}

/* dot of weight row c (dequantized) with activations in double */
static double ref_dot(wkind k, const uint8_t *wrow, int nb, const float *x) {
    float wf[32];
    double acc = 0;
    for (int b = 0; b < nb; b++) {
        quant_dequant_row(wtype(k), wrow + (size_t)b * wblock_bytes(k), wf, 32);
        for (int i = 0; i < 32; i++) acc += (double)wf[i] * x[b * 32 + i];
    }
    return acc;
}

/* Every SIMD kernel equals the scalar reference bit for bit over tile
 * shapes and tails (which also makes an output independent of how many
 * rows and columns a call covers), and the reference stays within the
 * rounding bound of the exact dot. */
static void test_gemm(int fast) {
    const char *mode = fast ? "fast" : "exact";
    const int ncs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33};
    const int nrs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 40, 64};
    const int nbs[] = {1, 2, 18, 48, 160}; /* 160: past the AVX-512 kernels' block buffer */
    const kern_table *S = kern_scalar();
    const int NCMAX = 33, NRMAX = 64, NBMAX = 160;
    const size_t pad_w = 6; /* extra bytes between weight rows (keeps 2-byte alignment) */
    const size_t pad_x = 3; /* extra blocks between activation rows */
    const size_t pad_y = 5; /* extra floats between output rows */
    uint8_t *w = malloc((size_t)NCMAX * (NBMAX * 34 + pad_w));
    float *x = malloc((size_t)NRMAX * NBMAX * 32 * sizeof *x);
    blk_q8 *xq = malloc((size_t)NRMAX * (NBMAX + pad_x) * sizeof *xq);
    int32_t *xc = malloc((size_t)NRMAX * (NBMAX + pad_x) * 8 * sizeof *xc);
    size_t ysz = (size_t)NRMAX * (NCMAX + pad_y);
    float *y0 = malloc(ysz * sizeof *y0), *y1 = malloc(ysz * sizeof *y1);
    int mismatch[3][2] = {{0}}, outside[3][2] = {{0}}, outside_scalar[3] = {0}, calls = 0;
    int pk_mismatch[3][2] = {{0}}, pk_outside[3][2] = {{0}}, pk_calls = 0, pk_unpack_bad[3] = {0};
    uint8_t *pk = aligned_alloc(64, 3 * kern_pack_group_bytes(QT_Q8_0, NBMAX)); /* 33 columns */
    int ref_bad[3] = {0}, ref_bad_orig[3] = {0};
    double worst_rel[3] = {0};
    for (int kk = 0; kk < 3; kk++) {
        wkind k = (wkind)kk;
        for (size_t ib = 0; ib < sizeof nbs / sizeof *nbs; ib++) {
            int nb = nbs[ib];
            size_t ws = (size_t)nb * wblock_bytes(k) + pad_w, xs = (size_t)nb + pad_x;
            fill_weights(k, w, NCMAX, nb, ws);
            for (int r = 0; r < NRMAX; r++) {
                fill_activations(x + (size_t)r * nb * 32, nb * 32, r);
                S->quantize(x + (size_t)r * nb * 32, xq + (size_t)r * xs, nb * 32);
                kern_q8_corr(xq + (size_t)r * xs, (size_t)nb, xc + (size_t)r * xs * 8);
            }
            for (size_t ic = 0; ic < sizeof ncs / sizeof *ncs; ic++)
                for (size_t ir = 0; ir < sizeof nrs / sizeof *nrs; ir++) {
                    int nc = ncs[ic], nr = nrs[ir];
                    size_t ys = (size_t)nc + pad_y;
                    for (size_t i = 0; i < ysz; i++) y0[i] = -12345.0f;
                    wgemm(S, k, fast)(nb, w, ws, nc, xq, xs, nr, y0, ys);
                    calls++;
                    for (int ti = 0; ti < n_tables; ti++) {
                        for (size_t i = 0; i < ysz; i++) y1[i] = -12345.0f;
                        wgemm(tables[ti].t, k, fast)(nb, w, ws, nc, xq, xs, nr, y1, ys);
                        for (size_t i = 0; i < ysz; i++) {
                            int in = i / ys < (size_t)nr && i % ys < (size_t)nc;
                            if (f32_bits(y0[i]) != f32_bits(y1[i])) {
                                if (in) mismatch[kk][ti]++;
                                else outside[kk][ti]++;
                            }
                        }
                    }
                    /* packed weights (either numerics): group by group, the same bits */
                    const size_t gb = kern_pack_group_bytes(wtype(k), nb);
                    for (int ti = 0; ti < n_tables; ti++) {
                        kern_gemm_packed_fn pf = wpacked(tables[ti].t, k, fast);
                        if (!pf) continue;
                        for (int g = 0; g * 16 < nc; g++)
                            kern_pack_group(wtype(k), nb, w + (size_t)g * 16 * ws, ws,
                                            nc - 16 * g < 16 ? nc - 16 * g : 16, pk + g * gb);
                        for (size_t i = 0; i < ysz; i++) y1[i] = -12345.0f;
                        for (int g = 0; g * 16 < nc; g++)
                            pf(nb, pk + g * gb, nc - 16 * g < 16 ? nc - 16 * g : 16, xq, xs, xc, nr,
                               y1 + 16 * g, ys);
                        pk_calls++;
                        /* and back: every column's bytes as they were */
                        uint8_t row[160 * 34];
                        for (int cc = 0; cc < nc; cc++) {
                            kern_unpack_column(wtype(k), nb, pk + cc / 16 * gb, cc % 16, row);
                            if (memcmp(row, w + (size_t)cc * ws, (size_t)nb * wblock_bytes(k)))
                                pk_unpack_bad[kk]++;
                        }
                        for (size_t i = 0; i < ysz; i++) {
                            int in = i / ys < (size_t)nr && i % ys < (size_t)nc;
                            if (f32_bits(y0[i]) != f32_bits(y1[i])) {
                                if (in) pk_mismatch[kk][ti]++;
                                else pk_outside[kk][ti]++;
                            }
                        }
                    }
                    /* the scalar reference never writes outside the tile either */
                    for (size_t i = 0; i < ysz; i++) {
                        int in = i / ys < (size_t)nr && i % ys < (size_t)nc;
                        if (!in && y0[i] != -12345.0f) outside_scalar[kk]++;
                    }
                    /* numerics: the largest shapes only (the others share the code) */
                    if (nc != 33 || (nr != 17 && nr != 9)) continue;
                    for (int r = 0; r < nr; r++)
                        for (int c = 0; c < nc; c++) {
                            const uint8_t *wrow = w + (size_t)c * ws;
                            const blk_q8 *xr = xq + (size_t)r * xs;
                            const float *xo = x + (size_t)r * nb * 32;
                            float wf[32];
                            /* (a) vs the dequantized activations: float rounding of the
                             * per-block terms, and the f16 rounding of s (Q4 min term) */
                            double exact = 0, mag = 0, sbound = 0, qerr = 0;
                            for (int b = 0; b < nb; b++) {
                                const uint8_t *wb = wrow + (size_t)b * wblock_bytes(k);
                                quant_dequant_row(wtype(k), wb, wf, 32);
                                uint16_t h;
                                memcpy(&h, wb + (k == WQ4_1 ? 2 : 0), 2);
                                double mw = k == WQ4_1   ? qt_f16_to_f32(h)
                                            : k == WQ4_0 ? -8.0 * qt_f16_to_f32(h)
                                                         : 0;
                                float amax = 0;
                                for (int i = 0; i < 32; i++)
                                    amax = fmaxf(amax, fabsf(xo[b * 32 + i]));
                                double dtrue = amax / 127.0, dx = xr[b].d;
                                int qsum = 0;
                                for (int i = 0; i < 32; i++) {
                                    double xv = dx * xr[b].qs[i];
                                    exact += (double)wf[i] * xv;
                                    /* the kernel splits w = d q + m: bound each part */
                                    mag += (fabs((double)wf[i]) + 2 * fabs(mw)) * fabs(xv);
                                    qsum += xr[b].qs[i];
                                    /* (b) activation quantization: half a step plus the f16
                                     * rounding of the scale times the code */
                                    qerr += fabs((double)wf[i]) *
                                            (0.5 * dtrue * (1 + 0x1p-20) +
                                             abs(xr[b].qs[i]) * fmax(dtrue * 0x1p-11, 0x1p-25));
                                }
                                sbound += fabs(mw) * fabs(dx * qsum - (double)xr[b].s);
                            }
                            double got = y0[(size_t)r * ys + c];
                            double bound = sbound + (nb + 8) * 0x1p-24 * mag + 1e-30;
                            if (fabs(got - exact) > bound) {
                                if (ref_bad[kk]++ < 3)
                                    fprintf(stderr,
                                            "%s nb=%d r=%d c=%d: %.9g vs exact %.9g (bound %.3g)\n",
                                            wname[kk], nb, r, c, got, exact, bound);
                            }
                            double orig = ref_dot(k, wrow, nb, xo);
                            if (fabs(got - orig) > bound + qerr) {
                                if (ref_bad_orig[kk]++ < 3)
                                    fprintf(stderr,
                                            "%s nb=%d r=%d c=%d: %.9g vs float input %.9g (bound "
                                            "%.3g)\n",
                                            wname[kk], nb, r, c, got, orig, bound + qerr);
                            }
                            double ratio = fabs(got - orig) / (bound + qerr);
                            if (ratio > worst_rel[kk]) worst_rel[kk] = ratio;
                        }
                }
        }
        for (int ti = 0; ti < n_tables; ti++) {
            CHECKF(mismatch[kk][ti] == 0, "%s gemm_%s (%s): %d outputs differ from scalar",
                   tables[ti].name, wname[kk], mode, mismatch[kk][ti]);
            CHECKF(outside[kk][ti] == 0, "%s gemm_%s (%s): %d writes outside the output tile",
                   tables[ti].name, wname[kk], mode, outside[kk][ti]);
            CHECKF(pk_mismatch[kk][ti] == 0, "%s gemm_%s (packed): %d outputs differ from scalar",
                   tables[ti].name, wname[kk], pk_mismatch[kk][ti]);
            CHECKF(pk_outside[kk][ti] == 0, "%s gemm_%s (packed): %d writes outside the tile",
                   tables[ti].name, wname[kk], pk_outside[kk][ti]);
        }
        CHECKF(pk_unpack_bad[kk] == 0, "%s: %d columns differ after pack + unpack", wname[kk],
               pk_unpack_bad[kk]);
        CHECKF(outside_scalar[kk] == 0, "scalar gemm_%s (%s): %d writes outside the output tile",
               wname[kk], mode, outside_scalar[kk]);
        CHECKF(ref_bad[kk] == 0, "gemm_%s (%s): %d outputs off the dequantized dot", wname[kk],
               mode, ref_bad[kk]);
        CHECKF(ref_bad_orig[kk] == 0, "gemm_%s (%s): %d outputs beyond the 8-bit activation bound",
               wname[kk], mode, ref_bad_orig[kk]);
        printf("gemm_%s (%s): worst error vs f32 activations = %.2f of the 8-bit bound\n",
               wname[kk], mode, worst_rel[kk]);
    }
    CHECK(calls == 3 * 5 * 11 * 12);
    if (kern_vnni()) CHECK(pk_calls == 3 * 5 * 11 * 12);
    printf("gemm (%s): %d packed-weight calls compared\n", mode, pk_calls);
    free(pk);
    free(w);
    free(x);
    free(xq);
    free(xc);
    free(y0);
    free(y1);
}

/* ---------------- f16 dots, axpy ---------------- */
static void fill_f16(uint16_t *a, int n, float scale) {
    for (int i = 0; i < n; i++) a[i] = qt_f32_to_f16(rng_normalish() * scale);
}

static void test_dot_f16(void) {
    const int ns[] = {16, 64, 128, 8, 72, 100, 1, 15, 17, 63, 65, 192, 200};
    const kern_table *S = kern_scalar();
    int bad[2][2] = {{0}}, ref_bad = 0;
    for (size_t in = 0; in < sizeof ns / sizeof *ns; in++)
        for (int trial = 0; trial < 50; trial++) {
            int n = ns[in];
            uint16_t *a = malloc((size_t)n * sizeof *a);
            float *b = malloc((size_t)n * sizeof *b);
            fill_f16(a, n, trial % 2 ? 1.0f : 30.0f);
            for (int i = 0; i < n; i++) b[i] = rng_normalish() * (trial % 3 ? 1.0f : 1e-3f);
            float r0 = S->dot_f16(a, b, n), r1 = S->dot_f16_x4(a, b, n);
            for (int ti = 0; ti < n_tables; ti++) {
                bad[ti][0] += !same_float(r0, tables[ti].t->dot_f16(a, b, n));
                bad[ti][1] += !same_float(r1, tables[ti].t->dot_f16_x4(a, b, n));
            }
            double exact = 0, mag = 0;
            for (int i = 0; i < n; i++) {
                exact += (double)qt_f16_to_f32(a[i]) * b[i];
                mag += fabs((double)qt_f16_to_f32(a[i]) * b[i]);
            }
            /* a sum of n terms in float: at most ~n roundings of the magnitude */
            double bound = (n + 2) * 0x1p-24 * mag + 1e-30;
            if (fabs(r0 - exact) > bound || fabs(r1 - exact) > bound) {
                if (ref_bad++ < 3)
                    fprintf(stderr, "dot n=%d: %.9g %.9g vs %.9g\n", n, r0, r1, exact);
            }
            free(a);
            free(b);
        }
    for (int ti = 0; ti < n_tables; ti++) {
        CHECKF(bad[ti][0] == 0, "%s dot_f16: %d results differ from scalar", tables[ti].name,
               bad[ti][0]);
        CHECKF(bad[ti][1] == 0, "%s dot_f16_x4: %d results differ from scalar", tables[ti].name,
               bad[ti][1]);
    }
    CHECKF(ref_bad == 0, "dot_f16: %d results beyond the float rounding bound", ref_bad);

    /* The accumulation shape is part of the contract (kernels.h): lane l of a
     * length-16k dot holds elements l, l+16, ...; reduced by kern_tree16. With
     * a = 1 everywhere the dot is a lane-ordered sum of b; these values make
     * the result depend on the order: 2^24 + 1 loses the 1, unless it is
     * added to another 1 first. */
    uint16_t ones[64];
    for (int i = 0; i < 64; i++) ones[i] = 0x3c00;
    float b[64];
    for (int i = 0; i < 64; i++) b[i] = 0.0f;
    b[0] = 0x1p24f; /* lane 0 */
    b[16] = 1.0f;   /* lane 0 again: fma(1, 1, 2^24) = 2^24 (ties to even) */
    b[1] = 1.0f;    /* lane 1 */
    b[9] = 1.0f;    /* lane 9: tree adds lanes 1 and 9 first -> 2, then 2^24 + 2 is exact */
    float lanes[16] = {0};
    for (int i = 0; i < 32; i++) lanes[i % 16] = fmaf(1.0f, b[i], lanes[i % 16]);
    float want = kern_tree16(lanes);
    CHECKF(want == 0x1p24f + 2.0f, "tree16 order: got %.1f", want);
    for (int ti = -1; ti < n_tables; ti++) {
        const kern_table *T = ti < 0 ? S : tables[ti].t;
        float got = T->dot_f16(ones, b, 32);
        CHECKF(got == want, "%s dot_f16 accumulation shape: %.1f, want %.1f", T->isa, got, want);
    }
    /* dot_f16_x4: 64 lanes reduced by kern_reduce64, a tail beyond 64 added in double */
    float b4[65] = {0};
    b4[3] = 0x1p24f;
    b4[35] = 1.0f; /* first pairing (3, 35) loses the 1 */
    b4[19] = 1.0f;
    b4[51] = 1.0f; /* (19, 51) keeps 2 */
    b4[64] = 1.0f; /* tail */
    uint16_t ones65[65];
    for (int i = 0; i < 65; i++) ones65[i] = 0x3c00;
    float want64 = kern_reduce64(b4), want65 = (float)((double)want64 + 1.0);
    CHECKF(want64 == 0x1p24f + 2.0f, "reduce64 order: %.1f", want64);
    for (int ti = -1; ti < n_tables; ti++) {
        const kern_table *T = ti < 0 ? S : tables[ti].t;
        float g64 = T->dot_f16_x4(ones65, b4, 64), g65 = T->dot_f16_x4(ones65, b4, 65);
        CHECKF(g64 == want64 && g65 == want65, "%s dot_f16_x4 shape: %.1f %.1f, want %.1f %.1f",
               T->isa, g64, g65, want64, want65);
    }
}

static void test_reductions(void) {
    /* kern_tree16: (l[i] + l[i+8]) then (t[i] + t[i+4]) then (t0 + t2) + (t1 + t3) */
    float l[16] = {0};
    l[0] = 0x1p24f;
    l[8] = 1.0f; /* first level: 2^24 + 1 -> 2^24 (lost) */
    l[1] = 1.0f;
    l[5] = 1.0f; /* t[1] = 1, t[5] = 1 -> second level 2 */
    float r = kern_tree16(l);
    CHECKF(r == 0x1p24f + 2.0f, "kern_tree16 reduction order: %.1f", r);
    /* exact sums for small integers, any arrangement */
    for (int trial = 0; trial < 100; trial++) {
        float v[16];
        double s = 0;
        for (int i = 0; i < 16; i++) {
            v[i] = (float)((int)(rng_u64() % 2001) - 1000);
            s += v[i];
        }
        CHECK(kern_tree16(v) == (float)s);
    }
    /* kern_reduce64: x[i] = (l[i] + l[32+i]) + (l[16+i] + l[48+i]), then the tree */
    float L[64] = {0};
    L[3] = 0x1p24f;
    L[35] = 1.0f; /* (2^24 + 1) loses the 1 */
    L[19] = 1.0f;
    L[51] = 1.0f; /* (1 + 1) = 2 survives */
    r = kern_reduce64(L);
    CHECKF(r == 0x1p24f + 2.0f, "kern_reduce64 reduction order: %.1f", r);
    /* accuracy on random data */
    int bad = 0;
    for (int trial = 0; trial < 200; trial++) {
        float v[64];
        double s = 0, mag = 0;
        for (int i = 0; i < 64; i++) {
            v[i] = rng_normalish() * powf(2.0f, rng_range(-10, 10));
            s += v[i];
            mag += fabs(v[i]);
        }
        if (fabs(kern_reduce64(v) - s) > 8 * 0x1p-24 * mag) bad++;
        double s16 = 0, m16 = 0;
        for (int i = 0; i < 16; i++) {
            s16 += v[i];
            m16 += fabs(v[i]);
        }
        if (fabs(kern_tree16(v) - s16) > 5 * 0x1p-24 * m16) bad++;
    }
    CHECKF(bad == 0, "%d reductions beyond their rounding bound", bad);
}

static void test_axpy(void) {
    const kern_table *S = kern_scalar();
    int bad[2] = {0}, first_n[2] = {-1, -1}, ref_bad = 0;
    for (int n = 1; n <= 136; n++)
        for (int trial = 0; trial < 8; trial++) {
            uint16_t *v = malloc((size_t)n * sizeof *v);
            float *acc0 = malloc((size_t)n * sizeof *acc0),
                  *acc1 = malloc((size_t)n * sizeof *acc1);
            fill_f16(v, n, 1.0f);
            float a = rng_normalish();
            for (int i = 0; i < n; i++) acc0[i] = rng_normalish();
            memcpy(acc1, acc0, (size_t)n * sizeof *acc0);
            float *init = malloc((size_t)n * sizeof *init);
            memcpy(init, acc0, (size_t)n * sizeof *acc0);
            S->axpy_f16(a, v, acc0, n);
            for (int i = 0; i < n; i++) {
                /* one fma: the exact a*v + acc rounded once */
                double exact = (double)a * qt_f16_to_f32(v[i]) + init[i];
                if ((float)exact != acc0[i] &&
                    fabs(exact - acc0[i]) > 0.5000001 * fabs(exact) * 0x1p-23)
                    ref_bad++;
            }
            for (int ti = 0; ti < n_tables; ti++) {
                memcpy(acc1, init, (size_t)n * sizeof *acc0);
                tables[ti].t->axpy_f16(a, v, acc1, n);
                for (int i = 0; i < n; i++)
                    if (f32_bits(acc0[i]) != f32_bits(acc1[i])) {
                        if (first_n[ti] < 0) first_n[ti] = n;
                        bad[ti]++;
                    }
            }
            free(v);
            free(acc0);
            free(acc1);
            free(init);
        }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s axpy_f16: %d elements differ from scalar (first at n = %d)",
               tables[ti].name, bad[ti], first_n[ti]);
    CHECKF(ref_bad == 0, "axpy_f16 scalar: %d elements are not a single fma", ref_bad);
}

/* ---------------- exp, silu, softmax, rope ---------------- */
static void test_exp(void) {
    /* kern_exp_ref vs exp in double on [-87, 88] (normal results), in ulps of
     * the exact value: ggml's expf is documented at 1.45 + 0.5 ulps; this
     * variant (the polynomial's constant term folded in, as ggml's AVX-512
     * code does) measures 2.23 on a fine grid, so allow 2.5 */
    double worst = 0;
    float worst_x = 0;
    int bad = 0;
    for (int i = 0; i <= 2000000; i++) {
        float x = i < 1000000 ? -87.0f + 175.0f * (float)i / 1000000.0f : rng_range(-87.0f, 88.0f);
        if (i % 1000 == 7) x = rng_range(-1e-3f, 1e-3f);
        double want = exp((double)x);
        int ex;
        frexp(want, &ex);
        double u = fabs((double)kern_exp_ref(x) - want) / ldexp(1.0, ex - 24);
        if (u > worst) {
            worst = u;
            worst_x = x;
        }
        if (!(u <= 2.5)) bad++;
    }
    CHECKF(bad == 0, "kern_exp_ref: %d points beyond 2.5 ulps (worst %.2f ulps at x = %a)", bad,
           worst, worst_x);
    printf("kern_exp_ref: worst %.2f ulps on [-87, 88] (at x = %g)\n", worst, worst_x);
    /* exact points and the ends of the range */
    CHECK(kern_exp_ref(0.0f) == 1.0f);
    CHECK(kern_exp_ref(-0.0f) == 1.0f);
    CHECK(kern_exp_ref(INFINITY) == INFINITY);
    CHECK(kern_exp_ref(-INFINITY) == 0.0f);
    CHECK(isnan(kern_exp_ref(NAN)));
    CHECK(kern_exp_ref(89.0f) == INFINITY);
    CHECK(kern_exp_ref(100.0f) == INFINITY);
    CHECK(kern_exp_ref(1e30f) == INFINITY);
    CHECK(kern_exp_ref(FLT_MAX) == INFINITY);
    CHECK(kern_exp_ref(-104.0f) == 0.0f);
    CHECK(kern_exp_ref(-150.0f) == 0.0f);
    CHECK(kern_exp_ref(-1e30f) == 0.0f);
    CHECK(kern_exp_ref(-FLT_MAX) == 0.0f);
    /* the subnormal range (-103.9, -87.3): small absolute error */
    int bad_sub = 0;
    for (int i = 0; i < 20000; i++) {
        float x = rng_range(-103.9f, -87.0f);
        double want = exp((double)x), got = kern_exp_ref(x);
        if (!(got >= 0) || fabs(got - want) > fmax(4 * 0x1p-23 * want, 2 * 0x1p-149)) bad_sub++;
    }
    CHECKF(bad_sub == 0, "kern_exp_ref: %d points wrong in the subnormal range", bad_sub);
    /* monotone over a fine grid around 0 and near the ends */
    int nonmono = 0;
    float prev = kern_exp_ref(-90.0f);
    for (float x = -90.0f; x < 89.0f; x += 0.00390625f) {
        float e = kern_exp_ref(x);
        if (e < prev) nonmono++;
        prev = e;
    }
    CHECKF(nonmono == 0, "kern_exp_ref: %d decreasing steps", nonmono);
}

static const float SILU_EXTREMES[] = {100.0f,   -100.0f,   1e-30f,  -1e-30f, 0.0f,   -0.0f,
                                      INFINITY, -INFINITY, NAN,     88.0f,   -88.0f, 89.0f,
                                      -89.0f,   104.0f,    -104.0f, 1e30f,   -1e30f, FLT_MIN,
                                      -FLT_MIN, 0x1p-149f, 20.0f,   -20.0f,  1.0f,   -1.0f};

static void test_silu(void) {
    const kern_table *S = kern_scalar();
    const int n_ext = (int)(sizeof SILU_EXTREMES / sizeof *SILU_EXTREMES);
    int bad[2] = {0}, ref_bad = 0;
    for (int n = 1; n <= 80; n++)
        for (int trial = 0; trial < 6; trial++) {
            float *g = malloc((size_t)n * sizeof *g), *u = malloc((size_t)n * sizeof *u);
            float *o0 = malloc((size_t)n * sizeof *o0), *o1 = malloc((size_t)n * sizeof *o1);
            for (int i = 0; i < n; i++) {
                g[i] = trial < 3 ? rng_normalish() * 6 : SILU_EXTREMES[(i + trial * 7) % n_ext];
                u[i] = trial == 5 ? SILU_EXTREMES[(i * 5 + 3) % n_ext] : rng_normalish();
            }
            S->silu_mul(g, u, o0, n);
            for (int ti = 0; ti < n_tables; ti++) {
                tables[ti].t->silu_mul(g, u, o1, n);
                for (int i = 0; i < n; i++) bad[ti] += !same_float(o0[i], o1[i]);
            }
            for (int i = 0; i < n; i++) {
                double x = g[i], want = x / (1.0 + exp(-x)) * u[i];
                if (isnan(want)) {
                    if (!isnan(o0[i]) && ref_bad++ < 5)
                        fprintf(stderr, "silu(%g)*%g = %g, want nan\n", g[i], u[i], o0[i]);
                } else if (isinf(want) || fabs(want) > FLT_MAX) {
                    if (o0[i] != (float)want && ref_bad++ < 5)
                        fprintf(stderr, "silu(%g)*%g = %g, want %g\n", g[i], u[i], o0[i], want);
                } else if (fabs(o0[i] - want) > 8 * 0x1p-24 * fabs(want) + 1e-36 * fabs(u[i])) {
                    /* a few roundings; below x = -88.7 exp(-x) overflows in float and
                     * silu(x) = x / inf = -0 where the true value is below 3e-37 (as ggml) */
                    if (ref_bad++ < 5)
                        fprintf(stderr, "silu(%g)*%g = %g, want %g\n", g[i], u[i], o0[i], want);
                }
            }
            free(g);
            free(u);
            free(o0);
            free(o1);
        }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s silu_mul: %d elements differ from scalar", tables[ti].name,
               bad[ti]);
    CHECKF(ref_bad == 0, "silu_mul: %d elements off the double reference", ref_bad);
}

static void test_softmax(void) {
    const kern_table *S = kern_scalar();
    int bad[2] = {0}, ref_bad = 0;
    for (int n = 1; n <= 300; n += (n < 40 ? 1 : 13))
        for (int trial = 0; trial < 4; trial++) {
            float *x = malloc((size_t)n * sizeof *x), *a = malloc((size_t)n * sizeof *a),
                  *b = malloc((size_t)n * sizeof *b);
            float mx = -INFINITY;
            for (int i = 0; i < n; i++) {
                x[i] = rng_normalish() * (trial == 0 ? 1.0f : trial == 1 ? 20.0f : 3.0f);
                if (trial == 3 && i % 3 == 1) x[i] = -INFINITY; /* masked scores */
                if (x[i] > mx) mx = x[i];
            }
            if (trial == 3 && n > 1 && isinf(mx)) mx = x[0] = 0.0f;
            memcpy(a, x, (size_t)n * sizeof *x);
            double s0 = S->softmax_exp(a, n, mx);
            for (int ti = 0; ti < n_tables; ti++) {
                memcpy(b, x, (size_t)n * sizeof *x);
                double s1 = tables[ti].t->softmax_exp(b, n, mx);
                if (memcmp(&s0, &s1, sizeof s0) != 0) bad[ti]++;
                for (int i = 0; i < n; i++) bad[ti] += f32_bits(a[i]) != f32_bits(b[i]);
            }
            double want = 0, got_sum = 0;
            for (int i = 0; i < n; i++) {
                want += exp((double)x[i] - mx);
                got_sum += a[i];
                if (isinf(x[i]) ? a[i] != 0.0f : ulp_diff(a[i], kern_exp_ref(x[i] - mx)) != 0)
                    ref_bad++;
            }
            /* the sum returned is the sum of the values written, up to float rounding */
            if (fabs(s0 - got_sum) > 4 * 0x1p-24 * got_sum || fabs(s0 - want) > 4e-6 * want) {
                if (ref_bad++ < 3)
                    fprintf(stderr, "softmax n=%d: sum %.9g, values %.9g, exact %.9g\n", n, s0,
                            got_sum, want);
            }
            free(x);
            free(a);
            free(b);
        }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s softmax_exp: %d values/sums differ from scalar", tables[ti].name,
               bad[ti]);
    CHECKF(ref_bad == 0, "softmax_exp: %d results off", ref_bad);
}

static void test_rope(void) {
    const kern_table *S = kern_scalar();
    const int hds[] = {2, 16, 18, 64, 128};
    int bad[2] = {0}, ref_bad = 0;
    for (size_t ih = 0; ih < sizeof hds / sizeof *hds; ih++)
        for (int nh = 1; nh <= 5; nh++)
            for (int trial = 0; trial < 4; trial++) {
                int hd = hds[ih],
                    half = trial == 3 && hd > 2 ? hd / 4 : hd / 2; /* partial rotary too */
                int n = nh * hd;
                float *x = malloc((size_t)n * sizeof *x), *a = malloc((size_t)n * sizeof *a),
                      *b = malloc((size_t)n * sizeof *b), *cs = malloc((size_t)hd * sizeof *cs);
                for (int i = 0; i < n; i++) x[i] = rng_normalish() * 4;
                for (int i = 0; i < half; i++) {
                    double th = rng_range(-100, 100);
                    cs[2 * i] = (float)cos(th);
                    cs[2 * i + 1] = (float)sin(th);
                }
                memcpy(a, x, (size_t)n * sizeof *x);
                S->rope_rows(a, cs, nh, hd, half);
                for (int ti = 0; ti < n_tables; ti++) {
                    memcpy(b, x, (size_t)n * sizeof *x);
                    tables[ti].t->rope_rows(b, cs, nh, hd, half);
                    for (int i = 0; i < n; i++) bad[ti] += f32_bits(a[i]) != f32_bits(b[i]);
                }
                for (int h = 0; h < nh; h++)
                    for (int i = 0; i < hd / 2; i++) {
                        const float *v = x + h * hd + 2 * i;
                        const float *o = a + h * hd + 2 * i;
                        double w0 = v[0], w1 = v[1];
                        if (i < half) {
                            double c = cs[2 * i], s = cs[2 * i + 1];
                            w0 = v[0] * c - v[1] * s;
                            w1 = v[0] * s + v[1] * c;
                        }
                        double lim = 4 * 0x1p-24 * (fabs(v[0]) + fabs(v[1]));
                        if (fabs(o[0] - w0) > lim || fabs(o[1] - w1) > lim) ref_bad++;
                    }
                free(x);
                free(a);
                free(b);
                free(cs);
            }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s rope_rows: %d elements differ from scalar", tables[ti].name,
               bad[ti]);
    CHECKF(ref_bad == 0,
           "rope_rows: %d elements off the exact rotation (or dims past `half` touched)", ref_bad);
}

static void test_f32_to_f16(void) {
    const kern_table *S = kern_scalar();
    int bad[2] = {0}, ref_bad = 0;
    const float special[] = {0.0f,       -0.0f,    65504.0f,  65520.0f,        -65520.0f,
                             1e30f,      INFINITY, -INFINITY, 0x1p-24f,        0x1p-25f,
                             0x1.8p-25f, 0x1p-14f, 6.1e-5f,   1.0f + 0x1p-11f, 1.0f + 0x1.8p-11f,
                             1e-10f,     -3.14159f};
    const int ns = (int)(sizeof special / sizeof *special);
    for (int n = 1; n <= 70; n++)
        for (int trial = 0; trial < 4; trial++) {
            float x[70];
            uint16_t a[70], b[70];
            for (int i = 0; i < n; i++)
                x[i] = trial == 3 ? special[(i * 7 + n) % ns]
                                  : rng_normalish() * powf(10.0f, rng_range(-8, 5));
            S->f32_to_f16(x, a, n);
            for (int i = 0; i < n; i++) ref_bad += a[i] != qt_f32_to_f16(x[i]);
            for (int ti = 0; ti < n_tables; ti++) {
                memset(b, 0xee, sizeof b);
                tables[ti].t->f32_to_f16(x, b, n);
                bad[ti] += memcmp(a, b, (size_t)n * sizeof *a) != 0;
            }
        }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s f32_to_f16: %d arrays differ from scalar", tables[ti].name,
               bad[ti]);
    CHECK(ref_bad == 0);
}

static void test_rmsnorm(void) {
    const kern_table *S = kern_scalar();
    const int colss[] = {1, 7, 8, 16, 17, 64, 576, 1000};
    int bad[2] = {0}, ref_bad = 0;
    for (size_t ic = 0; ic < sizeof colss / sizeof *colss; ic++)
        for (int rows = 1; rows <= 19; rows += 3) {
            int cols = colss[ic];
            size_t n = (size_t)rows * cols;
            float *x = malloc(n * sizeof *x), *g = malloc((size_t)cols * sizeof *g);
            float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
            for (size_t i = 0; i < n; i++) x[i] = rng_normalish() * powf(4.0f, rng_range(-3, 3));
            for (int i = 0; i < cols; i++) g[i] = rng_normalish();
            S->rmsnorm(x, g, rows, cols, 1e-5f, a);
            for (int r = 0; r < rows; r++) { /* against double precision */
                double ss = 0;
                for (int i = 0; i < cols; i++) ss += (double)x[r * cols + i] * x[r * cols + i];
                double sc = 1.0 / sqrt(ss / cols + 1e-5);
                for (int i = 0; i < cols; i++) {
                    double want = x[r * cols + i] * sc * g[i];
                    if (fabs(a[r * cols + i] - want) > 1e-5 * fabs(want) + 1e-30) ref_bad++;
                }
            }
            for (int ti = 0; ti < n_tables; ti++) {
                tables[ti].t->rmsnorm(x, g, rows, cols, 1e-5f, b);
                bad[ti] += memcmp(a, b, n * sizeof *a) != 0;
                memcpy(b, x, n * sizeof *b); /* in place */
                tables[ti].t->rmsnorm(b, g, rows, cols, 1e-5f, b);
                bad[ti] += memcmp(a, b, n * sizeof *a) != 0;
            }
            free(x);
            free(g);
            free(a);
            free(b);
        }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s rmsnorm: %d cases differ from scalar", tables[ti].name, bad[ti]);
    CHECKF(ref_bad == 0, "rmsnorm scalar: %d values off the double-precision norm", ref_bad);
}

/* ---------------- attention ---------------- */
/* off[0..n): distinct slots of n_slots, row bytes apart, in shuffled order
 * (as a paged cache gives them). */
static void shuffled_offsets(size_t *off, int n, int n_slots, size_t row) {
    int *perm = malloc((size_t)n_slots * sizeof *perm);
    for (int i = 0; i < n_slots; i++) perm[i] = i;
    for (int i = n_slots - 1; i > 0; i--) {
        int jx = (int)(rng_u64() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[jx];
        perm[jx] = t;
    }
    for (int p = 0; p < n; p++) off[p] = (size_t)perm[p] * row;
    free(perm);
}

/* One attention problem: n_slots slots of row bytes of K and of V (each
 * slot's first fill_elts f16 values random), n of them in shuffled order,
 * nh query heads of hd random values, two outputs and scratch for them. */
typedef struct {
    uint8_t *k, *v;
    size_t *off;
    float *q, *o0, *o1, *work;
} attn_case;

static attn_case attn_case_new(int n, int n_slots, size_t row, int fill_elts, int nh, int hd) {
    attn_case c = {malloc((size_t)n_slots * row),
                   malloc((size_t)n_slots * row),
                   malloc((size_t)n * sizeof *c.off),
                   malloc((size_t)nh * hd * sizeof *c.q),
                   malloc((size_t)nh * hd * sizeof *c.o0),
                   malloc((size_t)nh * hd * sizeof *c.o1),
                   malloc(kern_attn_work(n, hd, nh) * sizeof *c.work)};
    for (int sl = 0; sl < n_slots; sl++) {
        fill_f16((uint16_t *)(c.k + sl * row), fill_elts, 1.0f);
        fill_f16((uint16_t *)(c.v + sl * row), fill_elts, 1.0f);
    }
    shuffled_offsets(c.off, n, n_slots, row);
    for (int i = 0; i < nh * hd; i++) c.q[i] = rng_normalish() * 2.0f;
    return c;
}

static void attn_case_free(attn_case *c) {
    free(c->k);
    free(c->v);
    free(c->off);
    free(c->q);
    free(c->o0);
    free(c->o1);
    free(c->work);
}

/* Each table's attn_f16 against the scalar reference, bit for bit, over
 * scattered positions (a random permutation of slots, as a paged cache
 * gives), both accumulation shapes, context lengths around the 16- and
 * 64-lane edges and head sizes with and without SIMD-friendly multiples. */
static void test_attention(void) {
    const kern_table *S = kern_scalar();
    const int hds[] = {64, 128, 16, 32, 8, 80};
    const int ctxs[] = {1, 2, 15, 16, 17, 32, 33, 40, 48, 63, 64, 65, 100, 128, 129, 200, 300};
    int bad[2] = {0}, calls = 0, ref_bad = 0;
    for (size_t ih = 0; ih < sizeof hds / sizeof *hds; ih++)
        for (size_t ic = 0; ic < sizeof ctxs / sizeof *ctxs; ic++)
            for (int single = 0; single < 2; single++) {
                const int hd = hds[ih], n = ctxs[ic], nq = 1 + (int)(ic % 3);
                const size_t row = (size_t)hd * 2 + 6; /* bytes between slots */
                const int n_slots = n + 7;
                attn_case c = attn_case_new(n, n_slots, row, hd, nq, hd);
                const uint8_t *k = c.k, *v = c.v;
                const size_t *off = c.off;
                const float *q = c.q;
                float *o0 = c.o0, *o1 = c.o1, *work = c.work;
                const float scale = 1.0f / sqrtf((float)hd);
                S->attn_f16(k, v, off, n, q, nq, hd, scale, single, work, o0);
                calls++;
                for (int ti = 0; ti < n_tables; ti++) {
                    for (int i = 0; i < nq * hd; i++) o1[i] = -1234.0f;
                    tables[ti].t->attn_f16(k, v, off, n, q, nq, hd, scale, single, work, o1);
                    for (int i = 0; i < nq * hd; i++) bad[ti] += !same_float(o0[i], o1[i]);
                }
                /* the reference is a softmax-weighted mean of V: check it in double */
                for (int h = 0; h < nq; h++) {
                    double *sc = malloc((size_t)n * sizeof *sc), mx = -INFINITY, sum = 0;
                    for (int p = 0; p < n; p++) {
                        const uint16_t *kp = (const uint16_t *)(k + off[p]);
                        double d = 0;
                        for (int i = 0; i < hd; i++)
                            d += (double)qt_f16_to_f32(kp[i]) * q[h * hd + i];
                        sc[p] = d * scale;
                        if (sc[p] > mx) mx = sc[p];
                    }
                    for (int p = 0; p < n; p++) sum += (sc[p] = exp(sc[p] - mx));
                    for (int i = 0; i < hd; i++) {
                        double want = 0;
                        for (int p = 0; p < n; p++)
                            want +=
                                sc[p] / sum * qt_f16_to_f32(((const uint16_t *)(v + off[p]))[i]);
                        /* f16 rounding of q and of the weights dominates */
                        if (fabs(o0[h * hd + i] - want) > 0.02) ref_bad++;
                    }
                    free(sc);
                }
                attn_case_free(&c);
            }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s attn_f16: %d outputs differ from scalar", tables[ti].name,
               bad[ti]);
    CHECKF(ref_bad == 0, "attn_f16 scalar: %d outputs off the double-precision attention", ref_bad);
    CHECK(calls == 6 * 17 * 2);
}

/* Each table's attn_f16_row (all KV heads of a row in one call) against
 * the scalar attn_f16 called once per KV head, bit for bit: KV heads side
 * by side in each slot (as in the cache), slots shuffled, both shapes, the
 * AVX-512 kernel's own case (3 query heads per KV head, hd a multiple of
 * 64) and the others it hands back to attn_f16. */
static void test_attention_rows(void) {
    const kern_table *S = kern_scalar();
    const int hds[] = {64, 128, 32};
    const int ctxs[] = {1, 15, 16, 17, 63, 64, 65, 100, 200, 333};
    const int nkvs[] = {1, 2, 3, 8}, nqs[] = {3, 1, 2};
    int bad[2] = {0}, calls = 0;
    for (size_t ih = 0; ih < sizeof hds / sizeof *hds; ih++)
        for (size_t ic = 0; ic < sizeof ctxs / sizeof *ctxs; ic++)
            for (size_t ik = 0; ik < sizeof nkvs / sizeof *nkvs; ik++)
                for (int single = 0; single < 2; single++) {
                    const int hd = hds[ih], n = ctxs[ic], nkv = nkvs[ik];
                    const int nq = nqs[(ic + ik) % 3], nh = nkv * nq;
                    const size_t stride = (size_t)hd * 2, row = stride * (size_t)nkv + 64;
                    const int n_slots = n + 5;
                    attn_case c = attn_case_new(n, n_slots, row, (int)(row / 2), nh, hd);
                    const uint8_t *k = c.k, *v = c.v;
                    const size_t *off = c.off;
                    const float *q = c.q;
                    float *o0 = c.o0, *o1 = c.o1, *work = c.work;
                    const float scale = 1.0f / sqrtf((float)hd);
                    for (int g = 0; g < nkv; g++)
                        S->attn_f16(k + g * stride, v + g * stride, off, n, q + g * nq * hd, nq, hd,
                                    scale, single, work, o0 + g * nq * hd);
                    for (int ti = 0; ti < n_tables; ti++) {
                        for (int i = 0; i < nh * hd; i++) o1[i] = -1234.0f;
                        tables[ti].t->attn_f16_row(k, v, stride, nkv, off, n, q, nq, hd, scale,
                                                   single, work, o1);
                        for (int i = 0; i < nh * hd; i++) bad[ti] += !same_float(o0[i], o1[i]);
                    }
                    calls++;
                    attn_case_free(&c);
                }
    for (int ti = 0; ti < n_tables; ti++)
        CHECKF(bad[ti] == 0, "%s attn_f16_row: %d outputs differ from per-head scalar calls",
               tables[ti].name, bad[ti]);
    CHECK(calls == 3 * 10 * 4 * 2);
}

static void test_tables(void) {
    const kern_table *S = kern_scalar();
    CHECK(S && strcmp(S->isa, "scalar") == 0);
    CHECK(S->quantize == kern_quantize_scalar && S->gemm_q4_0 == kern_gemm_q4_0_scalar &&
          S->gemm_q4_1 == kern_gemm_q4_1_scalar && S->gemm_q8_0 == kern_gemm_q8_0_scalar &&
          S->gemm_q4_0_fast == kern_gemm_q4_0_fast_scalar &&
          S->gemm_q4_1_fast == kern_gemm_q4_1_fast_scalar &&
          S->gemm_q8_0_fast == kern_gemm_q8_0_fast_scalar && S->dot_f16 == kern_dot_f16_scalar &&
          S->dot_f16_x4 == kern_dot_f16_x4_scalar && S->axpy_f16 == kern_axpy_f16_scalar &&
          S->silu_mul == kern_silu_mul_scalar && S->softmax_exp == kern_softmax_exp_scalar &&
          S->rope_rows == kern_rope_scalar && S->attn_f16 == kern_attn_f16_scalar &&
          S->f32_to_f16 == kern_f32_to_f16_scalar && S->rmsnorm == kern_rmsnorm_scalar);
    const kern_table *sel = kern_select();
    CHECK(sel != NULL);
    if (kern_vnni()) CHECK(strcmp(kern_vnni()->isa, "avx512vnni") == 0);
    if (kern_avx2()) CHECK(strcmp(kern_avx2()->isa, "avx2") == 0);
    for (int ti = 0; ti < n_tables; ti++) {
        const kern_table *T = tables[ti].t;
        CHECKF(T->quantize && T->gemm_q4_0 && T->gemm_q4_1 && T->gemm_q8_0 && T->gemm_q4_0_fast &&
                   T->gemm_q4_1_fast && T->gemm_q8_0_fast && T->dot_f16 && T->dot_f16_x4 &&
                   T->axpy_f16 && T->silu_mul && T->softmax_exp && T->rope_rows && T->attn_f16 &&
                   T->attn_f16_row && T->f32_to_f16 && T->rmsnorm,
               "%s table has a NULL entry", T->isa);
    }
}

/* ---------------- thread pool ---------------- */
typedef struct {
    _Atomic int calls[8];
    int seen[8]; /* plain writes: must be visible to the caller after tp_run */
    int round;
    _Atomic int bad_nth;
    int nth_want;
} tp_state;

static void tp_count(void *arg, int ith, int nth) {
    tp_state *s = arg;
    if (nth != s->nth_want || ith < 0 || ith >= 8) {
        atomic_fetch_add(&s->bad_nth, 1);
        return;
    }
    atomic_fetch_add(&s->calls[ith], 1);
    s->seen[ith] = s->round;
    if ((s->round & 255) == ith) { /* now and then a slow thread */
        volatile int spin = 0;
        for (int i = 0; i < 20000; i++) spin += i;
    }
}

typedef struct {
    _Atomic int calls[4];
    _Atomic int next, done;
    int items;
} any_job;

static void tp_any_fn(void *arg, int ith, int nth) {
    any_job *j = arg;
    (void)nth;
    atomic_fetch_add(&j->calls[ith], 1);
    while (atomic_fetch_add(&j->next, 1) < j->items) atomic_fetch_add(&j->done, 1);
}

static void test_threadpool(void) {
    for (int nt = 1; nt <= 3; nt++) {
        tp_pool *p = tp_create(nt);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK(tp_size(p) == nt);
        tp_state s;
        memset(&s, 0, sizeof s);
        s.nth_want = nt;
        int wrong = 0;
        /* more threads than cores: each job waits for the scheduler to run
         * every thread (sched_yield spinning), ~0.3 ms a job on a busy
         * 2-core machine, so fewer jobs keep the test fast */
        const int RUNS = nt <= sysconf(_SC_NPROCESSORS_ONLN) ? 10000 : 2000;
        for (int run = 1; run <= RUNS; run++) {
            s.round = run;
            tp_run(p, tp_count, &s);
            for (int i = 0; i < nt; i++)
                if (atomic_load(&s.calls[i]) != run || s.seen[i] != run) wrong++;
            if (run == RUNS / 2 && nt > 1) {
                /* let the workers go idle (spin budget, then the condition
                 * variable) before the next job */
                struct timespec ts = {0, 300 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        for (int i = nt; i < 8; i++) wrong += atomic_load(&s.calls[i]) != 0;
        CHECKF(wrong == 0 && atomic_load(&s.bad_nth) == 0,
               "%d threads: %d runs where a thread did not run exactly once, %d bad (ith, nth)", nt,
               wrong, atomic_load(&s.bad_nth));
        tp_free(p);
    }
    /* tp_run_any: the caller always runs the job, a worker at most once, and
     * none after the call returns (jobs live on the caller's stack, as the
     * backend's do): each job's counts are recorded on return and must not
     * change later. Work claimed from a counter is done exactly once. */
    for (int nt = 1; nt <= 3; nt++) {
        tp_pool *p = tp_create(nt);
        CHECK(p != NULL);
        if (!p) continue;
        enum { JOBS = 3000 };
        static any_job jobs[JOBS];
        static int snap[JOBS][4];
        int bad = 0, joined = 0;
        for (int k = 0; k < JOBS; k++) {
            any_job *jb = &jobs[k];
            memset(jb, 0, sizeof *jb);
            jb->items = 64 + k % 100;
            tp_run_any(p, tp_any_fn, jb);
            for (int i = 0; i < 4; i++) snap[k][i] = atomic_load(&jb->calls[i]);
            bad += snap[k][0] != 1 || atomic_load(&jb->done) != jb->items;
            for (int i = 1; i < 4; i++) {
                bad += snap[k][i] > 1 || (i >= nt && snap[k][i] != 0);
                joined += snap[k][i];
            }
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int late = 0;
        for (int k = 0; k < JOBS; k++)
            for (int i = 0; i < 4; i++) late += atomic_load(&jobs[k].calls[i]) != snap[k][i];
        CHECKF(bad == 0 && late == 0, "%d threads: tp_run_any: %d bad jobs, %d late calls", nt, bad,
               late);
        if (nt > 1)
            printf("tp_run_any, %d threads: workers joined %d of %d jobs\n", nt, joined,
                   JOBS * (nt - 1));
        tp_free(p);
    }

    /* edge cases: a size below 1 means 1; free right after create; free(NULL) */
    tp_pool *p = tp_create(0);
    CHECK(p && tp_size(p) == 1);
    tp_free(p);
    for (int i = 0; i < 20; i++) tp_free(tp_create(3));
    tp_free(NULL);
}

typedef struct {
    atomic_int calls[128];
    int order[128], n_order;
} host_items;

static void host_count(void *ctx, int i) {
    host_items *h = ctx;
    atomic_fetch_add(&h->calls[i], 1);
}

static void host_record(void *ctx, int i) {
    host_items *h = ctx;
    h->order[h->n_order++] = i;
}

/* be_host_for: each item exactly once on the CPU backend's threads, for
 * every count (none, one, fewer and more than the threads); in order on the
 * caller when a backend has no host_for. */
static void test_host_for(void) {
    static const int counts[] = {0, 1, 2, 3, 7, 128};
    for (int nt = 1; nt <= 3; nt++) {
        char err[256];
        backend *be = backend_cpu_create(nt, err, sizeof err);
        CHECKF(be != NULL, "backend_cpu_create(%d): %s", nt, err);
        if (!be) continue;
        int bad = 0;
        for (int rep = 0; rep < 300; rep++)
            for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
                static host_items h;
                memset(&h, 0, sizeof h);
                be_host_for(be, counts[c], host_count, &h);
                for (int i = 0; i < 128; i++) bad += atomic_load(&h.calls[i]) != (i < counts[c]);
            }
        CHECKF(bad == 0, "%d threads: host_for ran %d items other than once", nt, bad);
        backend_free(be);
    }
    backend_ops no_host = {.name = "no-host"};
    backend plain = {&no_host, 1, NULL};
    static host_items h;
    memset(&h, 0, sizeof h);
    be_host_for(&plain, 5, host_record, &h);
    CHECK(h.n_order == 5 && h.order[0] == 0 && h.order[4] == 4);
}

int main(void) {
    if (kern_avx2()) tables[n_tables++] = (simd_table){"avx2", kern_avx2()};
    else
        printf(
            "test_kernels: AVX2 kernels not supported on this CPU, skipping their comparisons\n");
    if (kern_vnni()) tables[n_tables++] = (simd_table){"avx512vnni", kern_vnni()};
    else
        printf("test_kernels: AVX-512 VNNI kernels not supported on this CPU, skipping their "
               "comparisons\n");
    test_tables();
    test_quantize();
    test_gemm(0);
    test_gemm(1);
    test_dot_f16();
    test_reductions();
    test_axpy();
    test_exp();
    test_silu();
    test_softmax();
    test_rope();
    test_attention();
    test_attention_rows();
    test_f32_to_f16();
    test_rmsnorm();
    test_threadpool();
    test_host_for();
    return tu_finish("test_kernels");
}
