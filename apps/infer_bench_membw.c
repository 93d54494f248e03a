/*
 * infer_bench_membw.c - the memory read bandwidth probe (contract in
 * infer_bench_membw.h).
 *
 * Why each step: a buffer only a few times the reported last-level cache let
 * an earlier version of this probe read part of it from cache (the same
 * machine gave 100 GB/s and, minutes later, 35 GB/s), so the size is scaled
 * from the largest cache found. A buffer filled by one thread puts its pages
 * on that thread's node, and one filled with a repeated byte can be merged
 * into a few physical pages, so each thread writes distinct values into its
 * own slice. One pass can be hit by another process; the median of several is
 * what a decode step can expect.
 */

#include "apps/infer_bench_membw.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEMBW_MIN_BYTES ((size_t)1 << 30)
#define MEMBW_LLC_FACTOR 8
#define MEMBW_FLOOR_BYTES ((size_t)256 << 20) /* below this the probe refuses */

typedef uint64_t membw_vec __attribute__((vector_size(16)));

/* Workers check in, then wait for `go`, so timing starts with all of them
 * ready (a barrier would leave them stuck if a thread failed to start). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready, go;
} membw_gate;

typedef struct {
    membw_vec *p;
    size_t n;     /* vectors, a multiple of 4 */
    size_t first; /* index of p[0] in the whole buffer: fill values differ per slice */
    int fill;     /* 1: write the slice; 0: read it */
    membw_gate *gate;
    uint64_t sum;
} membw_job;

static double membw_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "32768K", "32M", "1048576" -> bytes; 0 when unparsable. */
static size_t parse_cache_size(const char *s) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s) return 0;
    if (*end == 'K' || *end == 'k') v <<= 10;
    else if (*end == 'M' || *end == 'm') v <<= 20;
    else if (*end == 'G' || *end == 'g') v <<= 30;
    return (size_t)v;
}

size_t membw_llc_bytes(void) {
    size_t best = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0 && (size_t)l3 > best) best = (size_t)l3;
#endif
#ifdef _SC_LEVEL4_CACHE_SIZE
    long l4 = sysconf(_SC_LEVEL4_CACHE_SIZE);
    if (l4 > 0 && (size_t)l4 > best) best = (size_t)l4;
#endif
    for (int idx = 0; idx < 8; idx++) {
        char path[96], line[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(line, sizeof line, f)) {
            size_t v = parse_cache_size(line);
            if (v > best) best = v;
        }
        fclose(f);
    }
    return best;
}

/* MemAvailable in bytes, or 0 when /proc/meminfo cannot tell. */
static size_t mem_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[128];
    size_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024;
}

/* The buffer size the header promises, rounded down to 1 MiB. */
static size_t probe_bytes(size_t llc) {
    size_t want = llc * MEMBW_LLC_FACTOR;
    if (want < MEMBW_MIN_BYTES) want = MEMBW_MIN_BYTES;
    size_t avail = mem_available_bytes();
    if (avail > 0 && want > avail / 4) want = avail / 4;
    return want & ~(((size_t)1 << 20) - 1);
}

static void *membw_worker(void *arg) {
    membw_job *j = arg;
    pthread_mutex_lock(&j->gate->mu);
    j->gate->ready++;
    pthread_cond_broadcast(&j->gate->cv);
    while (!j->gate->go) pthread_cond_wait(&j->gate->cv, &j->gate->mu);
    pthread_mutex_unlock(&j->gate->mu);
    if (j->fill) {
        for (size_t i = 0; i < j->n; i++) {
            uint64_t k = (uint64_t)(j->first + i) * 2 + 1;
            j->p[i] = (membw_vec){k * 0x9e3779b97f4a7c15ull, (k + 1) * 0xc2b2ae3d27d4eb4full};
        }
        return NULL;
    }
    membw_vec a0 = {0, 0}, a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < j->n; i += 4) {
        a0 += j->p[i];
        a1 += j->p[i + 1];
        a2 += j->p[i + 2];
        a3 += j->p[i + 3];
    }
    membw_vec s = a0 + a1 + a2 + a3;
    j->sum = s[0] + s[1];
    return NULL;
}

/* One phase (fill or read) on all threads; returns its seconds from the
 * moment all threads are ready, or -1 when a thread could not start. */
static double run_phase(membw_vec *buf, size_t per, int n_threads, int fill, membw_job *jobs,
                        pthread_t *tid) {
    membw_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    int started = 0;
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (membw_job){buf + (size_t)t * per, per, (size_t)t * per, fill, &gate, 0};
        if (pthread_create(&tid[t], NULL, membw_worker, &jobs[t])) break;
        started++;
    }
    pthread_mutex_lock(&gate.mu);
    while (gate.ready < started) pthread_cond_wait(&gate.cv, &gate.mu);
    gate.go = 1;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    double t0 = membw_now();
    for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
    double dt = membw_now() - t0;
    pthread_cond_destroy(&gate.cv);
    pthread_mutex_destroy(&gate.mu);
    return started == n_threads ? dt : -1.0;
}

static int cmp_gbps(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Timed read passes over a filled buffer; fills gbps[0..passes). */
static int read_passes(membw_vec *buf, size_t per, int n_threads, int passes, double *gbps) {
    membw_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *tid = calloc((size_t)n_threads, sizeof *tid);
    int rc = jobs && tid ? 0 : -1;
    if (rc == 0 && run_phase(buf, per, n_threads, 1, jobs, tid) < 0) rc = -1;
    uint64_t sink = 0;
    for (int p = 0; p < passes && rc == 0; p++) {
        double dt = run_phase(buf, per, n_threads, 0, jobs, tid);
        if (dt <= 0) {
            rc = -1;
            break;
        }
        for (int t = 0; t < n_threads; t++) sink ^= jobs[t].sum;
        gbps[p] = (double)(per * (size_t)n_threads * sizeof(membw_vec)) / dt / 1e9;
    }
    /* keep the sums observable so the reads cannot be optimised away */
    if (sink == 0x5eed5eed5eed5eedull)
        fprintf(stderr, "infer-bench: (checksum %llx)\n", (unsigned long long)sink);
    free(jobs);
    free(tid);
    return rc;
}

int membw_measure(int n_threads, int passes, membw_result *out) {
    memset(out, 0, sizeof *out);
    if (n_threads < 1 || passes < 1) return -1;
    size_t llc = membw_llc_bytes();
    size_t size = probe_bytes(llc);
    if (size < MEMBW_FLOOR_BYTES) return -1;
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return -1;
#ifdef MADV_HUGEPAGE
    madvise(mem, size, MADV_HUGEPAGE); /* fewer TLB misses, like a large weight mapping */
#endif
    size_t n_vec = size / sizeof(membw_vec);
    size_t per = (n_vec / (size_t)n_threads) & ~(size_t)3;
    double *gbps = calloc((size_t)passes, sizeof *gbps);
    int rc = gbps ? read_passes(mem, per, n_threads, passes, gbps) : -1;
    if (rc == 0) {
        qsort(gbps, (size_t)passes, sizeof *gbps, cmp_gbps);
        out->median_gbps =
            passes % 2 ? gbps[passes / 2] : 0.5 * (gbps[passes / 2 - 1] + gbps[passes / 2]);
        out->min_gbps = gbps[0];
        out->max_gbps = gbps[passes - 1];
        out->buf_bytes = per * (size_t)n_threads * sizeof(membw_vec);
        out->llc_bytes = llc;
        out->passes = passes;
        out->threads = n_threads;
    }
    free(gbps);
    munmap(mem, size);
    return rc;
}
