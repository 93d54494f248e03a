/*
 * test_quant.c - tensor element formats (core/quant.c).
 *
 * Every scalar dequantizer is checked on blocks built byte by byte in this
 * file from chosen integer codes and scales, with the expected floats
 * computed by an independent formula (in double, from the codes), so a
 * layout mistake (nibble order, high-bit planes, packed 6-bit scales) shows
 * up as a wrong element. Half-precision conversions are checked against a
 * reference written from the IEEE definitions: every f16 value, round trips,
 * ties to even, subnormals, overflow and NaN. Quantize/dequantize round trips
 * must stay within the error the format allows, and the format table must
 * agree with ggml's block sizes.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"
#include "tests/common/test_util.h"

/* ---- deterministic random numbers ---- */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(void) { return (double)(rng_u64() >> 11) * 0x1p-53; } /* [0, 1) */
static float rng_range(float lo, float hi) { return lo + (hi - lo) * (float)rng_unif(); }

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16 value from its bits, straight from the definition. */
static double ref_f16(uint16_t h) {
    int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp((double)(1024 + m), e - 25);
    return sign ? -v : v;
}

/* Nearest f16 (ties to even) of a finite or infinite float, by search over
 * the ordered positive f16 codes; 0x7c00 stands for 65536 when rounding, so
 * values from 65520 up go to infinity. */
static uint16_t ref_f32_to_f16(float x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    if (isinf(x)) return sign | 0x7c00;
    int lo = 0, hi = 0x7c00; /* invariant: val(lo) <= a (val(0x7c00) = 65536 treated as a limit) */
    if (a >= 65536.0) return sign | 0x7c00;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (ref_f16((uint16_t)mid) <= a) lo = mid;
        else hi = mid;
    }
    double vlo = ref_f16((uint16_t)lo), vhi = hi == 0x7c00 ? 65536.0 : ref_f16((uint16_t)hi);
    int pick;
    if (a - vlo < vhi - a) pick = lo;
    else if (a - vlo > vhi - a) pick = hi;
    else pick = (lo & 1) ? hi : lo;
    return (uint16_t)(sign | pick);
}

/* Nearest bf16 (ties to even) of a finite float: bf16 is the top half of
 * the f32 bits, so the two candidates are truncation and the next code. */
static uint16_t ref_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    uint16_t t = (uint16_t)(u >> 16);
    double a = (double)x, vlo = (double)bits_f32((uint32_t)t << 16);
    uint16_t t1 = (uint16_t)(t + 1);
    /* next code away from zero; past the largest finite value it is inf */
    double vhi = (double)bits_f32((uint32_t)t1 << 16);
    double dl = fabs(a - vlo), dh = fabs(vhi - a);
    if ((t1 & 0x7fff) == 0x7f80)
        dh = fabs(ldexp(1.0, 128) * (x < 0 ? -1 : 1) - a); /* inf as 2^128 */
    if (dl < dh) return t;
    if (dl > dh) return t1;
    return (t & 1) ? t1 : t;
}

static uint16_t f16_of(double v) {
    return ref_f32_to_f16((float)v);
} /* callers use ref_f16 of the code */

/* ---- format table ---- */
static void test_format_table(void) {
    /* ggml's block sizes (ggml.c type_traits), written out independently */
    static const struct {
        uint32_t t;
        const char *name;
        int blck;
        size_t bytes;
    } want[] = {
        {QT_F32, "F32", 1, 4},
        {QT_F16, "F16", 1, 2},
        {QT_Q4_0, "Q4_0", 32, 18},
        {QT_Q4_1, "Q4_1", 32, 20},
        {QT_Q5_0, "Q5_0", 32, 22},
        {QT_Q5_1, "Q5_1", 32, 24},
        {QT_Q8_0, "Q8_0", 32, 34},
        {QT_Q8_1, "Q8_1", 32, 36},
        {QT_Q2_K, "Q2_K", 256, 84},
        {QT_Q3_K, "Q3_K", 256, 110},
        {QT_Q4_K, "Q4_K", 256, 144},
        {QT_Q5_K, "Q5_K", 256, 176},
        {QT_Q6_K, "Q6_K", 256, 210},
        {QT_Q8_K, "Q8_K", 256, 292},
        {QT_IQ2_XXS, "IQ2_XXS", 256, 66},
        {QT_IQ2_XS, "IQ2_XS", 256, 74},
        {QT_IQ3_XXS, "IQ3_XXS", 256, 98},
        {QT_IQ1_S, "IQ1_S", 256, 50},
        {QT_IQ4_NL, "IQ4_NL", 32, 18},
        {QT_IQ3_S, "IQ3_S", 256, 110},
        {QT_IQ2_S, "IQ2_S", 256, 82},
        {QT_IQ4_XS, "IQ4_XS", 256, 136},
        {QT_I8, "I8", 1, 1},
        {QT_I16, "I16", 1, 2},
        {QT_I32, "I32", 1, 4},
        {QT_I64, "I64", 1, 8},
        {QT_F64, "F64", 1, 8},
        {QT_IQ1_M, "IQ1_M", 256, 56},
        {QT_BF16, "BF16", 1, 2},
        {QT_TQ1_0, "TQ1_0", 256, 54},
        {QT_TQ2_0, "TQ2_0", 256, 66},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        uint32_t t = want[i].t;
        CHECKF(strcmp(quant_name(t), want[i].name) == 0, "type %u name %s", t, quant_name(t));
        CHECKF(quant_block_elems(t) == want[i].blck, "%s block elems %d", want[i].name,
               quant_block_elems(t));
        CHECKF(quant_block_bytes(t) == want[i].bytes, "%s block bytes %zu", want[i].name,
               quant_block_bytes(t));
        int64_t b = want[i].blck;
        CHECKF(quant_row_bytes(t, 3 * b) == 3 * want[i].bytes, "%s row of 3 blocks", want[i].name);
        CHECKF(quant_row_bytes(t, b * 1000) == 1000 * want[i].bytes, "%s row of 1000 blocks",
               want[i].name);
        if (b > 1) {
            CHECKF(quant_row_bytes(t, b + 1) == 0, "%s partial block must give 0", want[i].name);
            CHECKF(quant_row_bytes(t, b - 1) == 0, "%s partial block must give 0", want[i].name);
        }
        CHECKF(quant_row_bytes(t, -b) == 0, "%s negative n", want[i].name);
    }
    /* the block structs match the table */
    CHECK(sizeof(block_q4_0) == 18);
    CHECK(sizeof(block_q4_1) == 20);
    CHECK(sizeof(block_q5_0) == 22);
    CHECK(sizeof(block_q5_1) == 24);
    CHECK(sizeof(block_q8_0) == 34);
    CHECK(sizeof(block_q8_1) == 36);
    CHECK(sizeof(block_q4_K) == 144);
    CHECK(sizeof(block_q6_K) == 210);
    CHECK(quant_row_bytes(QT_F32, 7) == 28);
    CHECK(quant_row_bytes(QT_F16, 7) == 14);

    /* which formats the dequantizer knows */
    const uint32_t can[] = {QT_F32,  QT_F16,  QT_BF16,   QT_Q4_0,  QT_Q4_1, QT_Q5_0,
                            QT_Q5_1, QT_Q8_0, QT_Q8_1,   QT_Q2_K,  QT_Q3_K, QT_Q4_K,
                            QT_Q5_K, QT_Q6_K, QT_IQ4_NL, QT_IQ4_XS};
    for (size_t i = 0; i < sizeof can / sizeof *can; i++)
        CHECKF(quant_can_dequant(can[i]), "%u", can[i]);
    const uint32_t cannot[] = {QT_Q8_K, QT_IQ2_XXS, QT_I32, QT_F64, QT_TQ1_0};
    for (size_t i = 0; i < sizeof cannot / sizeof *cannot; i++)
        CHECKF(!quant_can_dequant(cannot[i]), "%s should not be dequantizable",
               quant_name(cannot[i]));

    /* unknown codes: the gaps (4, 5: removed Q4_2/Q4_3; 31-33; 36-39) and past the end */
    const uint32_t unknown[] = {4, 5, 31, 32, 33, 36, 39, QT_COUNT, 41, 1000, 0xffffffffu};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        uint32_t t = unknown[i];
        CHECKF(strcmp(quant_name(t), "unknown") == 0, "type %u name '%s'", t, quant_name(t));
        CHECKF(quant_block_elems(t) == 0, "type %u block elems %d", t, quant_block_elems(t));
        CHECKF(quant_block_bytes(t) == 0, "type %u block bytes", t);
        CHECKF(quant_row_bytes(t, 32) == 0 && quant_row_bytes(t, 256) == 0, "type %u row bytes", t);
        CHECKF(!quant_can_dequant(t), "type %u dequantizable", t);
    }
    /* dequantizing a format the engine cannot read must stay inside the
     * buffers (ASan) and leave no garbage: zeros or the old contents */
    const uint32_t odd[] = {QT_Q2_K, QT_IQ4_NL, 4, 1000};
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        uint8_t *src = calloc(1, 256 * 8);
        float *dst = malloc(256 * sizeof *dst);
        for (int j = 0; j < 256; j++) dst[j] = 7.0f;
        quant_dequant_row(odd[i], src, dst, 256);
        int ok = 1;
        for (int j = 0; j < 256; j++) ok &= dst[j] == 0.0f || dst[j] == 7.0f;
        CHECKF(ok, "dequantizing unsupported type %u wrote garbage", odd[i]);
        free(src);
        free(dst);
    }
}

/* ---- half precision ---- */
static void test_f16(void) {
    /* known encodings */
    static const struct {
        uint16_t h;
        float f;
    } known[] = {
        {0x0000, 0.0f},         {0x3c00, 1.0f},        {0xc000, -2.0f},       {0x3800, 0.5f},
        {0x7bff, 65504.0f},     {0xfbff, -65504.0f},   {0x0400, 0x1p-14f},    {0x0001, 0x1p-24f},
        {0x03ff, 0x1.ff8p-15f}, {0x3555, 0x1.554p-2f}, {0x4248, 3.140625f},   {0x7c00, INFINITY},
        {0xfc00, -INFINITY},    {0x8001, -0x1p-24f},   {0x3bff, 0x1.ffcp-1f}, {0x3c01, 0x1.004p0f},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        CHECKF(qt_f16_to_f32(known[i].h) == known[i].f, "f16 0x%04x -> %g, want %g", known[i].h,
               qt_f16_to_f32(known[i].h), known[i].f);
        CHECKF(qt_f32_to_f16(known[i].f) == known[i].h, "%g -> 0x%04x, want 0x%04x", known[i].f,
               qt_f32_to_f16(known[i].f), known[i].h);
    }
    CHECK(qt_f32_to_f16(-0.0f) == 0x8000);
    CHECK(signbit(qt_f16_to_f32(0x8000)) && qt_f16_to_f32(0x8000) == 0.0f);

    /* exhaustive: every code decodes to its IEEE value and round-trips */
    int bad_val = 0, bad_rt = 0, bad_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qt_f16_to_f32((uint16_t)h);
        double want = ref_f16((uint16_t)h);
        if (isnan(want)) {
            uint16_t back = qt_f32_to_f16(f);
            if (!isnan(f) || (signbit(f) != 0) != ((h & 0x8000) != 0) ||
                (back & 0x7c00) != 0x7c00 || !(back & 0x3ff) || (back & 0x8000) != (h & 0x8000))
                bad_nan++;
            continue;
        }
        if ((double)f != want || !signbit(f) != !signbit(want)) {
            if (bad_val++ < 5) fprintf(stderr, "f16 0x%04x -> %a, want %a\n", h, f, want);
        }
        if (qt_f32_to_f16(f) != h) {
            if (bad_rt++ < 5)
                fprintf(stderr, "f16 0x%04x round trip gives 0x%04x\n", h, qt_f32_to_f16(f));
        }
    }
    CHECKF(bad_val == 0, "%d f16 codes decode wrongly", bad_val);
    CHECKF(bad_rt == 0, "%d f16 codes do not round-trip", bad_rt);
    CHECKF(bad_nan == 0, "%d f16 NaN codes mishandled", bad_nan);

    /* rounding: ties to even, in the normal range */
    CHECK(qt_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);            /* tie, 0x3c00 even */
    CHECK(qt_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);        /* tie, 0x3c01 odd */
    CHECK(qt_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01); /* just above a tie */
    CHECK(qt_f32_to_f16(1.0f + 0x1p-11f - 0x1p-20f) == 0x3c00); /* just below */
    CHECK(qt_f32_to_f16(-(1.0f + 3 * 0x1p-11f)) == 0xbc02);
    CHECK(qt_f32_to_f16(2.0f - 0x1p-12f) == 0x4000); /* carries into the exponent */
    CHECK(qt_f32_to_f16(2047.5f) == 0x6800);         /* 2047.5 ties to 2048 (even) */
    CHECK(qt_f32_to_f16(2046.5f) == 0x67fe);         /* 2046.5: between 2046 and 2047 */
    /* subnormals */
    CHECK(qt_f32_to_f16(0x1p-25f) == 0x0000);        /* tie between 0 and 2^-24 */
    CHECK(qt_f32_to_f16(0x1.000002p-25f) == 0x0001); /* just above half */
    CHECK(qt_f32_to_f16(0x1p-26f) == 0x0000);
    CHECK(qt_f32_to_f16(3 * 0x1p-25f) == 0x0002);       /* 1.5 units: tie to even 2 */
    CHECK(qt_f32_to_f16(5 * 0x1p-25f) == 0x0002);       /* 2.5 units: tie to even 2 */
    CHECK(qt_f32_to_f16(1023.5f * 0x1p-24f) == 0x0400); /* largest subnormal + 0.5 -> min normal */
    CHECK(qt_f32_to_f16(1022.5f * 0x1p-24f) == 0x03fe);
    CHECK(qt_f32_to_f16(1e-10f) == 0x0000);
    CHECK(qt_f32_to_f16(-1e-10f) == 0x8000);
    CHECK(qt_f32_to_f16(0x1p-149f) == 0x0000); /* f32 subnormal */
    /* overflow */
    CHECK(qt_f32_to_f16(65519.996f) == 0x7bff);
    CHECK(qt_f32_to_f16(65520.0f) == 0x7c00); /* tie to even = inf */
    CHECK(qt_f32_to_f16(-65520.0f) == 0xfc00);
    CHECK(qt_f32_to_f16(1e10f) == 0x7c00);
    CHECK(qt_f32_to_f16(-3.4e38f) == 0xfc00);
    CHECK(qt_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(qt_f32_to_f16(-INFINITY) == 0xfc00);
    /* NaN stays NaN (also a NaN whose payload sits in the low bits only) */
    uint16_t hn = qt_f32_to_f16(NAN);
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
    hn = qt_f32_to_f16(bits_f32(0x7f800001u));
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
    hn = qt_f32_to_f16(bits_f32(0xff800001u));
    CHECK((hn & 0xfc00) == 0xfc00 && (hn & 0x3ff) != 0);

    /* random floats over the whole f16 range and beyond vs the search reference */
    int bad = 0;
    for (int i = 0; i < 400000; i++) {
        /* exponent spread over [2^-27, 2^17), random mantissa and sign */
        uint32_t e = 100 + (uint32_t)(rng_u64() % 44);
        uint32_t u = (uint32_t)(rng_u64() & 0x807fffffu) | (e << 23);
        if (i % 4 == 0) u = (u & ~0x1fffu) | 0x1000u; /* force an exact tie in the normal range */
        float x = bits_f32(u);
        uint16_t got = qt_f32_to_f16(x), want = ref_f32_to_f16(x);
        if (got != want && bad++ < 5)
            fprintf(stderr, "f32 %a -> f16 0x%04x, want 0x%04x\n", x, got, want);
    }
    CHECKF(bad == 0, "%d random floats rounded wrongly to f16", bad);
}

static void test_bf16(void) {
    CHECK(qt_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(qt_bf16_to_f32(0xc040) == -3.0f);
    CHECK(qt_bf16_to_f32(0x4049) == 3.140625f);
    CHECK(qt_bf16_to_f32(0x0001) == 0x1p-133f);
    CHECK(qt_bf16_to_f32(0x7f80) == INFINITY);
    CHECK(isnan(qt_bf16_to_f32(0x7fc0)));
    CHECK(qt_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(qt_f32_to_bf16(bits_f32(0x3f808000u)) == 0x3f80); /* tie, even */
    CHECK(qt_f32_to_bf16(bits_f32(0x3f818000u)) == 0x3f82); /* tie, odd -> up */
    CHECK(qt_f32_to_bf16(bits_f32(0x3f808001u)) == 0x3f81);
    CHECK(qt_f32_to_bf16(bits_f32(0x3f807fffu)) == 0x3f80);
    CHECK(qt_f32_to_bf16(bits_f32(0xbf818000u)) == 0xbf82);
    CHECK(qt_f32_to_bf16(bits_f32(0x7f7f8000u)) == 0x7f80); /* rounds up to inf */
    CHECK(qt_f32_to_bf16(bits_f32(0x7f7f7fffu)) == 0x7f7f);
    CHECK(qt_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(qt_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(qt_f32_to_bf16(-0.0f) == 0x8000);
    /* a NaN with only low payload bits must not truncate to inf */
    uint16_t n1 = qt_f32_to_bf16(bits_f32(0x7f800001u)), n2 = qt_f32_to_bf16(bits_f32(0xff800001u));
    CHECKF((n1 & 0x7f80) == 0x7f80 && (n1 & 0x7f) != 0 && !(n1 & 0x8000), "nan -> 0x%04x", n1);
    CHECKF((n2 & 0xff80) == 0xff80 && (n2 & 0x7f) != 0, "-nan -> 0x%04x", n2);
    CHECK(isnan(qt_bf16_to_f32(qt_f32_to_bf16(NAN))));

    int bad_rt = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qt_bf16_to_f32((uint16_t)h);
        if (f32_bits(f) != h << 16) bad_rt++;
        if (!isnan(f) && qt_f32_to_bf16(f) != h) bad_rt++;
    }
    CHECKF(bad_rt == 0, "%d bf16 codes do not round-trip", bad_rt);
    int bad = 0;
    for (int i = 0; i < 400000; i++) {
        uint32_t u = (uint32_t)rng_u64();
        if ((u & 0x7f800000u) == 0x7f800000u) continue; /* finite only */
        if (i % 4 == 0) u = (u & ~0xffffu) | 0x8000u;   /* exact tie */
        float x = bits_f32(u);
        uint16_t got = qt_f32_to_bf16(x), want = ref_f32_to_bf16(x);
        if (got != want && bad++ < 5)
            fprintf(stderr, "f32 0x%08x -> bf16 0x%04x, want 0x%04x\n", u, got, want);
    }
    CHECKF(bad == 0, "%d random floats rounded wrongly to bf16", bad);
}

/* ---- dequantizers on hand-built blocks ---- */

/* Compare a dequantized row with expected values (exact: every element of
 * these formats is an exactly representable product/sum, see each test). */
static void expect_row(const char *what, uint32_t type, const void *src, const double *want,
                       int n) {
    float *got = malloc((size_t)n * sizeof *got);
    quant_dequant_row(type, src, got, n);
    int bad = 0;
    for (int i = 0; i < n; i++)
        if ((double)got[i] != (double)(float)want[i]) {
            if (bad++ < 4) fprintf(stderr, "%s[%d] = %.9g, want %.9g\n", what, i, got[i], want[i]);
        }
    CHECKF(bad == 0, "%s: %d of %d elements wrong", what, bad, n);
    free(got);
}

static void test_dequant_plain(void) {
    /* F32: bytes copied as is */
    float f[5] = {1.5f, -0.0f, INFINITY, 0x1p-149f, -123456.78f};
    double fw[5] = {1.5, -0.0, INFINITY, 0x1p-149, (double)-123456.78f};
    expect_row("F32", QT_F32, f, fw, 5);
    /* F16: little-endian codes */
    uint8_t h[8] = {0x00, 0x3c, 0x00, 0xc0, 0x55, 0x35, 0x01, 0x00};
    double hw[4] = {1.0, -2.0, 0x1.554p-2, 0x1p-24};
    expect_row("F16", QT_F16, h, hw, 4);
    /* BF16 */
    uint8_t b[8] = {0x80, 0x3f, 0x40, 0xc0, 0x49, 0x40, 0x80, 0x7f};
    double bw[4] = {1.0, -3.0, 3.140625, INFINITY};
    expect_row("BF16", QT_BF16, b, bw, 4);
}

/* Scales with a full 11-bit significand so products are not trivially exact
 * by luck of small mantissas. */
static const double SCALES[] = {0x1.554p-2 /* 0x3555 */, 0.5, 0x1.ffcp-9, 0x1.0a8p-5, 3.0};

static void test_dequant_q8_0(void) {
    for (size_t si = 0; si < sizeof SCALES / sizeof *SCALES; si++) {
        uint8_t raw[2 * 34];
        double want[64];
        for (int blk = 0; blk < 2; blk++) {
            double d = SCALES[si] * (blk ? 2 : 1);
            uint16_t dh = f16_of(d);
            d = ref_f16(dh);
            uint8_t *p = raw + blk * 34;
            p[0] = (uint8_t)(dh & 0xff);
            p[1] = (uint8_t)(dh >> 8);
            for (int j = 0; j < 32; j++) {
                int q = j == 0 ? -128 : j == 1 ? 127 : (int)(rng_u64() % 256) - 128;
                p[2 + j] = (uint8_t)(int8_t)q;
                want[blk * 32 + j] = d * q;
            }
        }
        expect_row("Q8_0", QT_Q8_0, raw, want, 64);
    }
}

static void test_dequant_q4(void) {
    for (size_t si = 0; si < sizeof SCALES / sizeof *SCALES; si++) {
        /* Q4_0: element j < 16 is the low nibble of qs[j], element j + 16 its high nibble */
        uint8_t raw0[2 * 18], raw1[2 * 20];
        double want0[64], want1[64];
        for (int blk = 0; blk < 2; blk++) {
            int v[32];
            for (int j = 0; j < 32; j++)
                v[j] = blk == 0 ? (j < 16 ? j : 31 - j) : (int)(rng_u64() % 16);
            double d = SCALES[si], m = -SCALES[(si + 1) % 5] * 7;
            uint16_t dh = f16_of(d), mh = f16_of(m);
            d = ref_f16(dh);
            m = ref_f16(mh);
            uint8_t *p = raw0 + blk * 18, *p1 = raw1 + blk * 20;
            p[0] = (uint8_t)dh;
            p[1] = (uint8_t)(dh >> 8);
            p1[0] = (uint8_t)dh;
            p1[1] = (uint8_t)(dh >> 8);
            p1[2] = (uint8_t)mh;
            p1[3] = (uint8_t)(mh >> 8);
            for (int j = 0; j < 16; j++) {
                p[2 + j] = (uint8_t)(v[j] | (v[j + 16] << 4));
                p1[4 + j] = (uint8_t)(v[j] | (v[j + 16] << 4));
            }
            for (int j = 0; j < 32; j++) {
                want0[blk * 32 + j] = d * (v[j] - 8);
                want1[blk * 32 + j] =
                    d * v[j] + m; /* exact in double; one f32 rounding as the engine */
            }
        }
        expect_row("Q4_0", QT_Q4_0, raw0, want0, 64);
        expect_row("Q4_1", QT_Q4_1, raw1, want1, 64);
    }
}

static void test_dequant_q5(void) {
    for (size_t si = 0; si < sizeof SCALES / sizeof *SCALES; si++) {
        /* 5-bit codes: low 4 bits as in Q4, bit 4 of element j in bit j of qh (little-endian u32)
         */
        uint8_t raw0[2 * 22], raw1[2 * 24];
        double want0[64], want1[64];
        for (int blk = 0; blk < 2; blk++) {
            int v[32];
            for (int j = 0; j < 32; j++) v[j] = blk == 0 ? j : (int)(rng_u64() % 32);
            double d = SCALES[si], m = SCALES[(si + 2) % 5] * -9;
            uint16_t dh = f16_of(d), mh = f16_of(m);
            d = ref_f16(dh);
            m = ref_f16(mh);
            uint32_t qh = 0;
            for (int j = 0; j < 32; j++) qh |= (uint32_t)(v[j] >> 4) << j;
            uint8_t *p = raw0 + blk * 22, *p1 = raw1 + blk * 24;
            p[0] = (uint8_t)dh;
            p[1] = (uint8_t)(dh >> 8);
            p1[0] = (uint8_t)dh;
            p1[1] = (uint8_t)(dh >> 8);
            p1[2] = (uint8_t)mh;
            p1[3] = (uint8_t)(mh >> 8);
            for (int k = 0; k < 4; k++) {
                p[2 + k] = (uint8_t)(qh >> (8 * k));
                p1[4 + k] = (uint8_t)(qh >> (8 * k));
            }
            for (int j = 0; j < 16; j++) {
                p[6 + j] = (uint8_t)((v[j] & 15) | ((v[j + 16] & 15) << 4));
                p1[8 + j] = (uint8_t)((v[j] & 15) | ((v[j + 16] & 15) << 4));
            }
            for (int j = 0; j < 32; j++) {
                want0[blk * 32 + j] = d * (v[j] - 16);
                want1[blk * 32 + j] = d * v[j] + m;
            }
        }
        expect_row("Q5_0", QT_Q5_0, raw0, want0, 64);
        expect_row("Q5_1", QT_Q5_1, raw1, want1, 64);
    }
}

/* Q4_K: 8 sub-blocks of 32 with 6-bit scale sc[i] and min mn[i] packed in 12
 * bytes (ggml's layout): bytes 0-3 low 6 bits of sc[0..3] with the top 2 bits
 * of sc[4..7]; bytes 4-7 the same for mn; bytes 8-11 low nibbles sc[4..7],
 * high nibbles mn[4..7]. Quants: 4 chunks of 32 bytes; chunk c holds
 * sub-block 2c in its low nibbles and 2c+1 in its high nibbles.
 * value = d * sc * q - dmin * mn. */
static void test_dequant_q4_K(void) {
    for (int trial = 0; trial < 6; trial++) {
        uint8_t raw[2 * 144];
        double want[512];
        for (int blk = 0; blk < 2; blk++) {
            int sc[8], mn[8], q[256];
            for (int i = 0; i < 8; i++) {
                sc[i] = trial == 0 ? 63 - i : (int)(rng_u64() % 64);
                mn[i] = trial == 0 ? i * 9 : (int)(rng_u64() % 64);
            }
            for (int e = 0; e < 256; e++) q[e] = trial == 0 ? e % 16 : (int)(rng_u64() % 16);
            double d = SCALES[trial % 5] / 64, dmin = SCALES[(trial + 3) % 5] / 32;
            uint16_t dh = f16_of(d), mh = f16_of(dmin);
            d = ref_f16(dh);
            dmin = ref_f16(mh);
            uint8_t *p = raw + blk * 144;
            p[0] = (uint8_t)dh;
            p[1] = (uint8_t)(dh >> 8);
            p[2] = (uint8_t)mh;
            p[3] = (uint8_t)(mh >> 8);
            uint8_t *s = p + 4, *qs = p + 16;
            for (int j = 0; j < 4; j++) {
                s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
                s[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
                s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
            }
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++)
                    qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
            for (int e = 0; e < 256; e++) {
                int sb = e / 32;
                want[blk * 256 + e] = d * sc[sb] * q[e] - dmin * mn[sb];
            }
        }
        expect_row("Q4_K", QT_Q4_K, raw, want, 512);
    }
}

/* Q6_K: 6-bit codes q in [0, 64), value = d * scales[e / 16] * (q - 32).
 * Two halves of 128 elements; in half n, for l < 32 and k < 4 the element
 * 128n + 32k + l keeps its low 4 bits in ql[64n + l + 32 * (k & 1)] (low
 * nibble for k < 2, high for k >= 2) and its top 2 bits in bits 2k..2k+1 of
 * qh[32n + l]. Byte layout: ql[128] qh[64] scales[16] d. */
static void test_dequant_q6_K(void) {
    for (int trial = 0; trial < 6; trial++) {
        uint8_t raw[2 * 210];
        double want[512];
        memset(raw, 0, sizeof raw);
        for (int blk = 0; blk < 2; blk++) {
            int sc[16], q[256];
            for (int i = 0; i < 16; i++)
                sc[i] = trial == 0 ? (i * 17) % 256 - 128 : (int)(rng_u64() % 256) - 128;
            for (int e = 0; e < 256; e++) q[e] = trial == 0 ? e % 64 : (int)(rng_u64() % 64);
            double d = SCALES[trial % 5] / 128;
            uint16_t dh = f16_of(d);
            d = ref_f16(dh);
            uint8_t *p = raw + blk * 210, *ql = p, *qh = p + 128;
            for (int e = 0; e < 256; e++) {
                int n = e / 128, k = (e % 128) / 32, l = e % 32;
                uint8_t *lo = &ql[64 * n + l + 32 * (k & 1)];
                *lo |= (uint8_t)((q[e] & 15) << (k >= 2 ? 4 : 0));
                qh[32 * n + l] |= (uint8_t)((q[e] >> 4) << (2 * k));
            }
            for (int i = 0; i < 16; i++) p[192 + i] = (uint8_t)(int8_t)sc[i];
            p[208] = (uint8_t)dh;
            p[209] = (uint8_t)(dh >> 8);
            for (int e = 0; e < 256; e++) want[blk * 256 + e] = d * sc[e / 16] * (q[e] - 32);
        }
        expect_row("Q6_K", QT_Q6_K, raw, want, 512);
    }
}

static void test_dequant_q8_1(void) {
    block_q8_1 b[1];
    b->d = f16_of(0.25);
    b->s = f16_of(100.0); /* s is not used by the dequantizer */
    double want[32];
    for (int j = 0; j < 32; j++) {
        b->qs[j] = (int8_t)(j * 8 - 128);
        want[j] = 0.25 * (j * 8 - 128);
    }
    expect_row("Q8_1", QT_Q8_1, b, want, 32);
}

/* ---- quantize / dequantize round trips ---- */

/* Largest error of rounding v to f16: half an ulp, which is 2^-25 absolute
 * in the subnormal range (tiny blocks have subnormal f16 scales). */
static double f16_err(double v) { return fmax(fabs(v) * 0x1p-11, 0x1p-25); }
static void test_roundtrip(void) {
    enum { N = 32 * 64 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    block_q8_0 *q8 = malloc(N / 32 * sizeof *q8);
    block_q8_1 *q81 = malloc(N / 32 * sizeof *q81);
    block_q4_0 *q40 = malloc(N / 32 * sizeof *q40);
    block_q4_1 *q41 = malloc(N / 32 * sizeof *q41);
    for (int trial = 0; trial < 8; trial++) {
        /* blocks of different magnitudes and offsets; some all equal, one all zero */
        for (int b = 0; b < N / 32; b++) {
            float scale = powf(10.0f, rng_range(-4.0f, 3.0f)),
                  off = trial & 1 ? rng_range(-2, 2) * scale : 0;
            for (int j = 0; j < 32; j++) {
                float v = rng_range(-scale, scale) + off;
                if (b == 3) v = 0.0f;
                if (b == 4) v = scale;
                if (b == 5) v = -scale;
                x[b * 32 + j] = v;
            }
        }
        int bad8 = 0, bad81 = 0, bad40 = 0, bad41 = 0;
        quant_quantize_row_q8_0(x, q8, N);
        quant_dequant_row(QT_Q8_0, q8, y, N);
        for (int b = 0; b < N / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            double d = amax / 127.0;
            for (int j = 0; j < 32; j++) {
                /* half a step, plus the f16 rounding of the scale times |q| <= 127 */
                double err = fabs((double)y[b * 32 + j] - x[b * 32 + j]);
                if (err > 0.5 * d + 127 * f16_err(d)) bad8++;
            }
            int has127 = 0;
            for (int j = 0; j < 32; j++) has127 |= q8[b].qs[j] == 127 || q8[b].qs[j] == -127;
            if (amax > 0 && !has127) bad8++;
        }
        quant_quantize_row_q8_1(x, q81, N);
        for (int b = 0; b < N / 32; b++) {
            /* same codes and scale as Q8_0; s = f16(d * sum(qs)) with the unrounded d */
            int sum = 0;
            for (int j = 0; j < 32; j++) {
                if (q81[b].qs[j] != q8[b].qs[j]) bad81++;
                sum += q81[b].qs[j];
            }
            if (q81[b].d != q8[b].d) bad81++;
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            if (q81[b].s != ref_f32_to_f16((amax / 127.0f) * (float)sum)) bad81++;
        }
        quant_quantize_row_q4_0(x, q40, N);
        quant_dequant_row(QT_Q4_0, q40, y, N);
        for (int b = 0; b < N / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            double d = amax / 8.0; /* |d|: the largest magnitude maps to code 0 (-8 d) */
            for (int j = 0; j < 32; j++) {
                double xv = x[b * 32 + j], err = fabs((double)y[b * 32 + j] - xv);
                /* +8 d clamps to 7 d, so only values beyond 7.5 d may be off by up to d */
                double lim = fabs(xv) <= 7.0 * d ? 0.5 * d : 1.0 * d;
                if (err > lim + 8 * f16_err(d)) {
                    if (bad40++ < 3) fprintf(stderr, "Q4_0 x=%g y=%g d=%g\n", xv, y[b * 32 + j], d);
                }
            }
        }
        quant_quantize_row_q4_1(x, q41, N);
        quant_dequant_row(QT_Q4_1, q41, y, N);
        for (int b = 0; b < N / 32; b++) {
            float mn = x[b * 32], mx = x[b * 32];
            for (int j = 1; j < 32; j++) {
                mn = fminf(mn, x[b * 32 + j]);
                mx = fmaxf(mx, x[b * 32 + j]);
            }
            double d = ((double)mx - mn) / 15.0;
            for (int j = 0; j < 32; j++) {
                double xv = x[b * 32 + j], err = fabs((double)y[b * 32 + j] - xv);
                /* half a step + the f16 rounding of d (times up to 15) and of the min */
                if (err > 0.5 * d + 15 * f16_err(d) + f16_err(mn)) {
                    if (bad41++ < 3)
                        fprintf(stderr, "Q4_1 x=%g y=%g d=%g mn=%g\n", xv, y[b * 32 + j], d, mn);
                }
            }
        }
        CHECKF(bad8 == 0, "trial %d: %d Q8_0 round-trip errors", trial, bad8);
        CHECKF(bad81 == 0, "trial %d: %d Q8_1 block errors", trial, bad81);
        CHECKF(bad40 == 0, "trial %d: %d Q4_0 round-trip errors", trial, bad40);
        CHECKF(bad41 == 0, "trial %d: %d Q4_1 round-trip errors", trial, bad41);
    }
    /* an all-zero block gives d = 0 and zeros, never NaN */
    float z[32] = {0};
    quant_quantize_row_q8_0(z, q8, 32);
    quant_quantize_row_q4_0(z, q40, 32);
    quant_quantize_row_q4_1(z, q41, 32);
    float out[32];
    quant_dequant_row(QT_Q8_0, q8, out, 32);
    int ok = 1;
    for (int j = 0; j < 32; j++) ok &= out[j] == 0.0f;
    quant_dequant_row(QT_Q4_0, q40, out, 32);
    for (int j = 0; j < 32; j++) ok &= out[j] == 0.0f;
    quant_dequant_row(QT_Q4_1, q41, out, 32);
    for (int j = 0; j < 32; j++) ok &= out[j] == 0.0f;
    CHECKF(ok, "an all-zero block must dequantize to zeros");
    /* values on the Q8_0 grid are reproduced exactly */
    float g[32];
    for (int j = 0; j < 32; j++)
        g[j] = (float)(j * 8 - 127) * 0.5f; /* amax 63.5 -> d = 0.5 exactly */
    g[31] = 63.5f;
    quant_quantize_row_q8_0(g, q8, 32);
    quant_dequant_row(QT_Q8_0, q8, out, 32);
    ok = 1;
    for (int j = 0; j < 32; j++) ok &= out[j] == g[j];
    CHECKF(ok, "Q8_0 grid values must round-trip exactly");
    free(x);
    free(y);
    free(q8);
    free(q81);
    free(q40);
    free(q41);
}

int main(void) {
    test_format_table();
    test_f16();
    test_bf16();
    test_dequant_plain();
    test_dequant_q8_0();
    test_dequant_q8_1();
    test_dequant_q4();
    test_dequant_q5();
    test_dequant_q4_K();
    test_dequant_q6_K();
    test_roundtrip();
    return tu_finish("test_quant");
}
