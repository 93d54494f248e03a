/*
 * weight_pack.c - the packed weight layout (kernels.h, KERN_PACK_COLS):
 * packing a group of columns and reading one column back. Plain C, one
 * definition for every ISA; gemm_packed_avx512.c reads what this writes.
 */
#include <string.h>

#include "core/backend/cpu/kernels.h"

size_t kern_pack_group_bytes(uint32_t type, int nb) {
    const size_t blk = type == QT_Q4_0 || type == QT_Q4_1 ? 320 : type == QT_Q8_0 ? 640 : 0;
    return blk * (size_t)nb;
}

void kern_pack_group(uint32_t type, int nb, const void *w, size_t ws, int nc, void *out) {
    const size_t blk = kern_pack_group_bytes(type, 1);
    for (int b = 0; b < nb; b++) {
        uint8_t *o = (uint8_t *)out + (size_t)b * blk;
        for (int c = 0; c < KERN_PACK_COLS; c++) {
            const uint8_t *row = (const uint8_t *)w + (size_t)(c < nc ? c : nc - 1) * ws;
            if (type == QT_Q8_0) {
                const block_q8_0 *wb = (const block_q8_0 *)row + b;
                int32_t sum = 0;
                for (int k = 0; k < 32; k++) {
                    o[(k / 4) * 64 + 4 * c + k % 4] = (uint8_t)wb->qs[k];
                    sum += wb->qs[k];
                }
                float d = qt_f16_to_f32(wb->d);
                int32_t corr = -128 * sum;
                memcpy(o + 512 + 4 * c, &d, 4);
                memcpy(o + 576 + 4 * c, &corr, 4);
            } else {
                const uint8_t *qs;
                if (type == QT_Q4_1) {
                    const block_q4_1 *wb = (const block_q4_1 *)row + b;
                    qs = wb->qs;
                    memcpy(o + 256 + 2 * c, &wb->d, 2);
                    memcpy(o + 288 + 2 * c, &wb->m, 2);
                } else {
                    const block_q4_0 *wb = (const block_q4_0 *)row + b;
                    qs = wb->qs;
                    float d = qt_f16_to_f32(wb->d);
                    memcpy(o + 256 + 4 * c, &d, 4);
                }
                for (int k = 0; k < 16; k++) o[(k / 4) * 64 + 4 * c + k % 4] = qs[k];
            }
        }
    }
}

void kern_unpack_column(uint32_t type, int nb, const void *group, int c, void *row) {
    const size_t blk = kern_pack_group_bytes(type, 1);
    for (int b = 0; b < nb; b++) {
        const uint8_t *o = (const uint8_t *)group + (size_t)b * blk;
        float d;
        if (type == QT_Q8_0) {
            block_q8_0 *wb = (block_q8_0 *)row + b;
            for (int k = 0; k < 32; k++) wb->qs[k] = (int8_t)o[(k / 4) * 64 + 4 * c + k % 4];
            memcpy(&d, o + 512 + 4 * c, 4);
            wb->d = qt_f32_to_f16(d);
        } else if (type == QT_Q4_1) {
            block_q4_1 *wb = (block_q4_1 *)row + b;
            for (int k = 0; k < 16; k++) wb->qs[k] = o[(k / 4) * 64 + 4 * c + k % 4];
            memcpy(&wb->d, o + 256 + 2 * c, 2);
            memcpy(&wb->m, o + 288 + 2 * c, 2);
        } else {
            block_q4_0 *wb = (block_q4_0 *)row + b;
            for (int k = 0; k < 16; k++) wb->qs[k] = o[(k / 4) * 64 + 4 * c + k % 4];
            memcpy(&d, o + 256 + 4 * c, 4);
            wb->d = qt_f32_to_f16(d);
        }
    }
}
