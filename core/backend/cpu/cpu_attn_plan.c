/*
 * cpu_attn_plan.c - how one attention call is cut into tasks (cpu_internal.h,
 * attn_task) for the pool's threads: which rows, KV heads and query heads
 * each covers, and in what order they are claimed.
 */
#include <stdlib.h>

#include "core/backend/cpu/cpu_internal.h"

static int cmp_u64(const void *x, const void *y) {
    const uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/*
 * The call's tasks, claimed in order by the pool's threads; returns their
 * number, -1 when out of memory.
 *
 * Decode rows (the only row of their sequence in the step) come first.
 * Each reads a context that nothing else in the step reads, from memory,
 * and a task takes all the query heads of a KV head (the decode shape
 * converts each K and V row once for them, where a task per query head
 * would read each KV head once per head). A block keeps a
 * layer's K rows (the KV heads of a position side by side), then its V
 * rows, as one contiguous run, and the hardware prefetchers fetch the
 * whole run whichever head is read; so with rows enough to balance the
 * threads, a task is a row with all its KV heads in turn, whose later
 * heads find their rows in this core's L2 instead of fetching the run
 * again (docs/benchmarks.md, "Figures moved from code comments").
 * Those tasks go longest context first, so the last ones claimed are short
 * (LPT); when a row is longer than a thread's share of all of them, tasks
 * stay one per KV head.
 *
 * Rows of prefill chunks follow, KV head major, then row, then the query
 * heads: consecutive tasks read the same K and V rows (a chunk's rows share
 * most of their context), so they stay in this core's L2; all the heads of
 * a KV head go in one task when there are tasks to spare for balance.
 */
int cpu_attn_plan(cpu_impl *ci, const be_attn *a) {
    const int nth = tp_size(ci->pool), group = a->n_head / a->n_head_kv;
    if (a->n_head > INT16_MAX) return -1;
    if (cpu_grow((void **)&ci->attn_tasks, &ci->attn_tasks_cap,
                 (size_t)a->n_tokens * (size_t)a->n_head, sizeof *ci->attn_tasks) ||
        cpu_grow((void **)&ci->row_key, &ci->row_key_cap, (size_t)a->n_tokens, sizeof *ci->row_key))
        return -1;
    attn_task *tk = ci->attn_tasks;
    int n = 0, n_single = 0;
    int64_t total = 0, longest = 0;
    for (int t = 0; t < a->n_tokens; t++) {
        if (!cpu_row_is_single(ci, a, t)) continue;
        total += a->positions[t] + 1;
        if (a->positions[t] + 1 > longest) longest = a->positions[t] + 1;
        ci->row_key[n_single++] = (uint64_t)(INT32_MAX - a->positions[t]) << 32 | (uint32_t)t;
    }
    const int whole_rows = n_single >= 2 * nth && longest * nth <= total;
    if (whole_rows) qsort(ci->row_key, (size_t)n_single, sizeof *ci->row_key, cmp_u64);
    for (int kvh = 0; kvh < (whole_rows ? 1 : a->n_head_kv); kvh++)
        for (int i = 0; i < n_single; i++)
            tk[n++] = (attn_task){(int32_t)(uint32_t)ci->row_key[i], (int16_t)kvh,
                                  (int16_t)(whole_rows ? a->n_head_kv : 1), 0, (int16_t)group};
    const int n_multi = a->n_tokens - n_single;
    const int nq = n_multi * a->n_head_kv >= 8 * nth ? group : 1;
    for (int kvh = 0; kvh < a->n_head_kv && n_multi > 0; kvh++)
        for (int t = 0; t < a->n_tokens; t++) {
            if (cpu_row_is_single(ci, a, t)) continue;
            for (int h = 0; h < group; h += nq)
                tk[n++] = (attn_task){t, (int16_t)kvh, 1, (int16_t)h, (int16_t)nq};
        }
    return n;
}
