/*
 * threadpool.c - see threadpool.h. A job is published in one atomic word:
 *
 *   job = seq << 32 | open << 31 | joined << 16 | active
 *
 * seq numbers the jobs, open says workers may still join, joined counts the
 * workers that joined this job, active those still running it. Workers spin
 * on the word (with a pause instruction, then sched_yield), then fall back to
 * a condition variable after a spin budget. A worker joins with a CAS that
 * requires the job to be open, so after tp_run_any closes the job (clears
 * open) and sees active drop to 0, no worker can touch it any more: the
 * caller does not wait for a worker the scheduler has not run yet.
 */
#include "core/backend/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Pure spinning for a few microseconds, then spinning with sched_yield()
 * (so an oversubscribed machine still makes progress), then sleeping. */
#define SPIN_PAUSE_ITERS 4096
#define SPIN_ITERS 200000

#define JOB_OPEN ((uint64_t)1 << 31)
#define JOB_JOINED_1 ((uint64_t)1 << 16)
#define JOB_ACTIVE_MASK ((uint64_t)0xffff)
#define JOB_SEQ(v) ((uint32_t)((v) >> 32))
#define JOB_JOINED(v) ((int)(((v) >> 16) & 0x7fff))

struct tp_pool {
    int n;
    pthread_t *threads;
    _Atomic uint64_t job;
    _Atomic int stop;
    _Atomic int sleepers;
    tp_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

typedef struct {
    tp_pool *p;
    int ith;
} worker_arg;

/* Join the job in v if it is still open; returns 1 when joined. */
static int try_join(tp_pool *p, uint64_t v) {
    uint32_t seq = JOB_SEQ(v);
    while (JOB_SEQ(v) == seq && (v & JOB_OPEN))
        if (atomic_compare_exchange_weak_explicit(&p->job, &v, v + JOB_JOINED_1 + 1,
                                                  memory_order_acquire, memory_order_relaxed))
            return 1;
    return 0;
}

static void *worker(void *a) {
    worker_arg wa = *(worker_arg *)a;
    free(a);
    tp_pool *p = wa.p;
    uint32_t seen = 0;
    for (;;) {
        uint64_t v;
        int spins = 0;
        while (JOB_SEQ(v = atomic_load_explicit(&p->job, memory_order_acquire)) == seen) {
            if (atomic_load(&p->stop)) return NULL;
            if (++spins < SPIN_ITERS) {
                if (spins < SPIN_PAUSE_ITERS) CPU_RELAX();
                else sched_yield();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (JOB_SEQ(atomic_load(&p->job)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = JOB_SEQ(v);
        if (!try_join(p, v)) continue; /* closed before we got here: not ours to run */
        p->fn(p->arg, wa.ith, p->n);
        atomic_fetch_sub_explicit(&p->job, 1, memory_order_release);
    }
}

tp_pool *tp_create(int n) {
    if (n < 1) n = 1;
    tp_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)n, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) {
            p->n = i;
            tp_free(p);
            return NULL;
        }
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            p->n = i;
            tp_free(p);
            return NULL;
        }
    }
    return p;
}

void tp_free(tp_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int tp_size(const tp_pool *p) { return p->n; }

static void wait_relax(int spins) {
    if (spins < SPIN_PAUSE_ITERS) CPU_RELAX();
    else sched_yield();
}

static void run(tp_pool *p, tp_fn fn, void *arg, int all) {
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    uint64_t v = atomic_load_explicit(&p->job, memory_order_relaxed);
    atomic_store_explicit(&p->job, (uint64_t)(JOB_SEQ(v) + 1) << 32 | JOB_OPEN,
                          memory_order_release);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n);
    int spins = 0;
    if (all) /* every worker must run it once */
        while (JOB_JOINED(atomic_load_explicit(&p->job, memory_order_acquire)) < p->n - 1)
            wait_relax(spins++);
    atomic_fetch_and_explicit(&p->job, ~JOB_OPEN, memory_order_relaxed);
    while (atomic_load_explicit(&p->job, memory_order_acquire) & JOB_ACTIVE_MASK)
        wait_relax(spins++);
}

void tp_run(tp_pool *p, tp_fn fn, void *arg) { run(p, fn, arg, 1); }
void tp_run_any(tp_pool *p, tp_fn fn, void *arg) { run(p, fn, arg, 0); }
