/*
 * quant.c - format table, scalar reference dequantizers and quantizers.
 * These are the ground truth the SIMD kernels are tested against, so they
 * are written for clarity, element by element, following the block layouts
 * in quant.h.
 */
#include "core/quant.h"

#include <math.h>
#include <string.h>

typedef struct {
    const char *name;
    int blck;
    size_t bytes;
} quant_info;

static const quant_info QINFO[QT_COUNT] = {
    [QT_F32] = {"F32", 1, 4},
    [QT_F16] = {"F16", 1, 2},
    [QT_Q4_0] = {"Q4_0", 32, 18},
    [QT_Q4_1] = {"Q4_1", 32, 20},
    [QT_Q5_0] = {"Q5_0", 32, 22},
    [QT_Q5_1] = {"Q5_1", 32, 24},
    [QT_Q8_0] = {"Q8_0", 32, 34},
    [QT_Q8_1] = {"Q8_1", 32, 36},
    [QT_Q2_K] = {"Q2_K", 256, 84},
    [QT_Q3_K] = {"Q3_K", 256, 110},
    [QT_Q4_K] = {"Q4_K", 256, 144},
    [QT_Q5_K] = {"Q5_K", 256, 176},
    [QT_Q6_K] = {"Q6_K", 256, 210},
    [QT_Q8_K] = {"Q8_K", 256, 292},
    [QT_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [QT_IQ2_XS] = {"IQ2_XS", 256, 74},
    [QT_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [QT_IQ1_S] = {"IQ1_S", 256, 50},
    [QT_IQ4_NL] = {"IQ4_NL", 32, 18},
    [QT_IQ3_S] = {"IQ3_S", 256, 110},
    [QT_IQ2_S] = {"IQ2_S", 256, 82},
    [QT_IQ4_XS] = {"IQ4_XS", 256, 136},
    [QT_I8] = {"I8", 1, 1},
    [QT_I16] = {"I16", 1, 2},
    [QT_I32] = {"I32", 1, 4},
    [QT_I64] = {"I64", 1, 8},
    [QT_F64] = {"F64", 1, 8},
    [QT_IQ1_M] = {"IQ1_M", 256, 56},
    [QT_BF16] = {"BF16", 1, 2},
    [QT_TQ1_0] = {"TQ1_0", 256, 54},
    [QT_TQ2_0] = {"TQ2_0", 256, 66},
};

const char *quant_name(uint32_t t) {
    return t < QT_COUNT && QINFO[t].name ? QINFO[t].name : "unknown";
}
int quant_block_elems(uint32_t t) { return t < QT_COUNT ? QINFO[t].blck : 0; }
size_t quant_block_bytes(uint32_t t) { return t < QT_COUNT ? QINFO[t].bytes : 0; }

size_t quant_row_bytes(uint32_t t, int64_t n) {
    int b = quant_block_elems(t);
    if (b <= 0 || n < 0 || n % b) return 0;
    return (size_t)(n / b) * QINFO[t].bytes;
}

int quant_can_dequant(uint32_t t) {
    switch (t) {
    case QT_F32:
    case QT_F16:
    case QT_BF16:
    case QT_Q4_0:
    case QT_Q4_1:
    case QT_Q5_0:
    case QT_Q5_1:
    case QT_Q8_0:
    case QT_Q8_1:
    case QT_Q2_K:
    case QT_Q3_K:
    case QT_Q4_K:
    case QT_Q5_K:
    case QT_Q6_K:
    case QT_IQ4_NL:
    case QT_IQ4_XS: return 1;
    default: return 0;
    }
}

const char *quant_supported_names(void) {
    return "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, "
           "IQ4_NL, IQ4_XS";
}

/* ---- half precision ---- */
float qt_f16_to_f32(qt_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

qt_f16 qt_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (qt_f16)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (qt_f16)(sign | 0x7c00); /* overflow -> inf */
    if (absx < 0x38800000u) {                                /* subnormal or zero in half */
        if (absx < 0x33000000u) return (qt_f16)sign;
        uint32_t man = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(absx >> 23); /* 14..24: units of 2^-24 */
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        uint32_t res = man >> shift;
        if (rem > mid || (rem == mid && (res & 1))) res++;
        return (qt_f16)(sign | res);
    }
    /* normal: round to nearest even on the 13 dropped bits */
    uint32_t res = ((absx - 0x38000000u) >> 13);
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (res & 1))) res++;
    return (qt_f16)(sign | res);
}

float qt_bf16_to_f32(qt_bf16 h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

qt_bf16 qt_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (qt_bf16)((x >> 16) | 64); /* quiet nan */
    return (qt_bf16)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

#define F16(x) qt_f16_to_f32(x)

/* ---- dequantizers (one block each) ---- */
static void deq_q4_0(const block_q4_0 *b, float *y) {
    float d = F16(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((b->qs[j] & 0xf) - 8);
        y[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
    }
}

static void deq_q4_1(const block_q4_1 *b, float *y) {
    float d = F16(b->d), m = F16(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(b->qs[j] & 0xf) + m;
        y[j + 16] = d * (float)(b->qs[j] >> 4) + m;
    }
}

static void deq_q5_0(const block_q5_0 *b, float *y) {
    float d = F16(b->d);
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    for (int j = 0; j < 16; j++) {
        int lo = (b->qs[j] & 0xf) | (int)(((qh >> j) & 1) << 4);
        int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

static void deq_q5_1(const block_q5_1 *b, float *y) {
    float d = F16(b->d), m = F16(b->m);
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    for (int j = 0; j < 16; j++) {
        int lo = (b->qs[j] & 0xf) | (int)(((qh >> j) & 1) << 4);
        int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)lo + m;
        y[j + 16] = d * (float)hi + m;
    }
}

static void deq_q8_0(const block_q8_0 *b, float *y) {
    float d = F16(b->d);
    for (int j = 0; j < 32; j++) y[j] = d * (float)b->qs[j];
}

static void deq_q8_1(const block_q8_1 *b, float *y) {
    float d = F16(b->d);
    for (int j = 0; j < 32; j++) y[j] = d * (float)b->qs[j];
}

/* Q4_K packs 8 six-bit (scale, min) pairs into 12 bytes. */
static void q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_K(const block_q4_K *b, float *y) {
    float d = F16(b->d), dmin = F16(b->dmin);
    const uint8_t *q = b->qs;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
        uint8_t sc, m;
        q4k_scale_min(is, b->scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        q4k_scale_min(is + 1, b->scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xf) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        q += 32;
    }
}

static void deq_q6_K(const block_q6_K *b, float *y) {
    float d = F16(b->d);
    const uint8_t *ql = b->ql, *qh = b->qh;
    const int8_t *sc = b->scales;
    for (int n = 0; n < QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int)((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = (int)((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * (float)q1;
            y[l + 32] = d * sc[is + 2] * (float)q2;
            y[l + 64] = d * sc[is + 4] * (float)q3;
            y[l + 96] = d * sc[is + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

static void deq_q5_K(const block_q5_K *b, float *y) {
    float d = F16(b->d), dmin = F16(b->dmin);
    const uint8_t *ql = b->qs;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
        uint8_t sc, m;
        q4k_scale_min(is, b->scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        q4k_scale_min(is + 1, b->scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)((ql[l] & 0xf) | (((b->qh[l] >> is) & 1) << 4)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)((ql[l] >> 4) | (((b->qh[l] >> (is + 1)) & 1) << 4)) - m2;
        ql += 32;
    }
}

/* Q2_K: 16 groups of 16, each with a 4-bit scale and 4-bit min; codes are
 * 2 bits, four groups of 32 sharing a byte at shifts 0, 2, 4, 6. */
static void deq_q2_K(const block_q2_K *b, float *y) {
    float d = F16(b->d), dmin = F16(b->dmin);
    const uint8_t *q = b->qs;
    int is = 0;
    for (int n = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int half = 0; half < 2; half++) {
                uint8_t sc = b->scales[is++];
                float dl = d * (float)(sc & 0xf), ml = dmin * (float)(sc >> 4);
                for (int l = 0; l < 16; l++)
                    *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
            }
}

/* Q3_K's 16 six-bit scales: low 4 bits in bytes 0..7 (two per byte), high
 * 2 bits in bytes 8..11 (four per byte). */
static int q3k_scale(const uint8_t *s, int i) {
    int lo = i < 8 ? s[i] & 0xf : s[i - 8] >> 4;
    int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    return (lo | hi << 4) - 32;
}

static void deq_q3_K(const block_q3_K *b, float *y) {
    float d = F16(b->d);
    const uint8_t *q = b->qs;
    int is = 0, m = 1;
    for (int n = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
            for (int half = 0; half < 2; half++) {
                float dl = d * (float)q3k_scale(b->scales, is++);
                for (int l = 16 * half; l < 16 * half + 16; l++) {
                    int v = ((q[l] >> shift) & 3) - ((b->hmask[l] & m) ? 0 : 4);
                    *y++ = dl * (float)v;
                }
            }
}

static const int8_t IQ4NL_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

static void deq_iq4_nl(const block_iq4_nl *b, float *y) {
    float d = F16(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)IQ4NL_VALUES[b->qs[j] & 0xf];
        y[j + 16] = d * (float)IQ4NL_VALUES[b->qs[j] >> 4];
    }
}

static void deq_iq4_xs(const block_iq4_xs *b, float *y) {
    float d = F16(b->d);
    const uint8_t *qs = b->qs;
    for (int ib = 0; ib < QK_K / 32; ib++, y += 32, qs += 16) {
        int ls =
            ((b->scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((b->scales_h >> 2 * ib) & 3) << 4);
        float dl = d * (float)(ls - 32);
        for (int j = 0; j < 16; j++) {
            y[j] = dl * (float)IQ4NL_VALUES[qs[j] & 0xf];
            y[j + 16] = dl * (float)IQ4NL_VALUES[qs[j] >> 4];
        }
    }
}

void quant_dequant_row(uint32_t type, const void *src, float *y, int64_t n) {
    const uint8_t *p = src;
    int blck = quant_block_elems(type);
    size_t bb = quant_block_bytes(type);
    if (type == QT_F32) {
        memcpy(y, src, (size_t)n * 4);
        return;
    }
    for (int64_t i = 0; i < n / (blck > 0 ? blck : 1); i++, p += bb, y += blck) {
        switch (type) {
        case QT_F16: {
            qt_f16 h;
            memcpy(&h, p, 2);
            *y = qt_f16_to_f32(h);
            break;
        }
        case QT_BF16: {
            qt_bf16 h;
            memcpy(&h, p, 2);
            *y = qt_bf16_to_f32(h);
            break;
        }
        case QT_Q4_0: deq_q4_0((const block_q4_0 *)p, y); break;
        case QT_Q4_1: deq_q4_1((const block_q4_1 *)p, y); break;
        case QT_Q5_0: deq_q5_0((const block_q5_0 *)p, y); break;
        case QT_Q5_1: deq_q5_1((const block_q5_1 *)p, y); break;
        case QT_Q8_0: deq_q8_0((const block_q8_0 *)p, y); break;
        case QT_Q8_1: deq_q8_1((const block_q8_1 *)p, y); break;
        case QT_Q4_K: deq_q4_K((const block_q4_K *)p, y); break;
        case QT_Q6_K: deq_q6_K((const block_q6_K *)p, y); break;
        case QT_Q5_K: deq_q5_K((const block_q5_K *)p, y); break;
        case QT_Q2_K: deq_q2_K((const block_q2_K *)p, y); break;
        case QT_Q3_K: deq_q3_K((const block_q3_K *)p, y); break;
        case QT_IQ4_NL: deq_iq4_nl((const block_iq4_nl *)p, y); break;
        case QT_IQ4_XS: deq_iq4_xs((const block_iq4_xs *)p, y); break;
        default:
            memset(y, 0, (size_t)blck * sizeof *y);
            break; /* callers check quant_can_dequant */
        }
    }
}

/* ---- quantizers (round to nearest, as ggml's reference) ---- */
void quant_quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[i].d = qt_f32_to_f16(d);
        for (int j = 0; j < 32; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void quant_quantize_row_q8_1(const float *x, block_q8_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = qt_f32_to_f16(d);
        y[i].s = qt_f32_to_f16(d * (float)sum);
    }
}

void quant_quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        y[i].d = qt_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int a = (int)fminf(15.0f, x[j] * id + 8.5f);
            int b = (int)fminf(15.0f, x[j + 16] * id + 8.5f);
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

void quant_quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float mn = x[0], mx = x[0];
        for (int j = 1; j < 32; j++) {
            mn = fminf(mn, x[j]);
            mx = fmaxf(mx, x[j]);
        }
        float d = (mx - mn) / 15.0f, id = d ? 1.0f / d : 0.0f;
        y[i].d = qt_f32_to_f16(d);
        y[i].m = qt_f32_to_f16(mn);
        for (int j = 0; j < 16; j++) {
            int a = (int)fminf(15.0f, (x[j] - mn) * id + 0.5f);
            int b = (int)fminf(15.0f, (x[j + 16] - mn) * id + 0.5f);
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

void quant_quantize_row_q8_K(const float *x, block_q8_K *y, int64_t n) {
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        memset(&y[i], 0, sizeof y[i]);
        if (amax == 0.0f) continue;
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = (int)nearbyintf(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
            y[i].bsums[j / 16] = (int16_t)(y[i].bsums[j / 16] + y[i].qs[j]);
        }
        y[i].d = 1.0f / iscale;
    }
}
