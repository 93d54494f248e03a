/*
 * infer_bench_membw.h - the memory read bandwidth probe of infer-bench: the
 * roofline that decode speed is compared against.
 *
 * The probe must measure DRAM, not a cache: its buffer is at least 8x the
 * largest last-level cache the system reports (sysconf and /sys, which can
 * disagree in a VM) and at least 1 GiB, capped at a quarter of MemAvailable.
 * Every thread first writes its own slice (first touch: pages land near the
 * thread that reads them, and distinct contents keep KSM from merging them),
 * then all threads read their slices together, several passes; the result
 * is the median pass, with the spread alongside.
 *
 * Thread-safety: one call at a time per process (it starts its own threads,
 * and a concurrent probe would halve what each sees). Errors: returns -1 and
 * leaves *out zeroed when the buffer cannot be allocated or a thread cannot
 * start.
 */
#ifndef APPS_INFER_BENCH_MEMBW_H
#define APPS_INFER_BENCH_MEMBW_H

#include <stddef.h>

#define MEMBW_DEFAULT_PASSES 7

typedef struct {
    double median_gbps; /* 1e9 bytes/s, median over the passes */
    double min_gbps, max_gbps;
    size_t buf_bytes; /* bytes read per pass */
    size_t llc_bytes; /* largest last-level cache found (0: none reported) */
    int passes;
    int threads;
} membw_result;

/* Largest last-level cache size in bytes the system reports, or 0. */
size_t membw_llc_bytes(void);

/* Measures with n_threads (>= 1) threads and passes (>= 1) timed passes. */
int membw_measure(int n_threads, int passes, membw_result *out);

#endif
