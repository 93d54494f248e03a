/*
 * threadpool.h - one persistent pool of worker threads for the CPU backend.
 *
 * tp_run() executes fn(arg, ith, nth) on every thread of the pool, the
 * calling thread included as ith = 0, and returns when all have finished.
 * tp_run_any() runs fn on the calling thread and on each worker that picks
 * the job up before the caller's own fn returns; it returns when those have
 * finished, and no worker touches the job afterwards. fn must then claim its
 * work dynamically so that any subset of the threads (the caller alone, at
 * worst) completes it: a worker the scheduler has not run yet costs nothing
 * on a busy machine, instead of holding up every job.
 * Workers spin briefly between jobs (a token needs hundreds of small ops, so
 * a sleep/wake per op would cost more than the op) and then sleep on a
 * condition variable when idle.
 *
 * Thread-safety: one caller at a time; the pool is owned by its backend.
 */
#ifndef CPU_THREADPOOL_H
#define CPU_THREADPOOL_H

typedef struct tp_pool tp_pool;
typedef void (*tp_fn)(void *arg, int ith, int nth);

tp_pool *tp_create(int n_threads);
void tp_free(tp_pool *p);
int tp_size(const tp_pool *p);
void tp_run(tp_pool *p, tp_fn fn, void *arg);
void tp_run_any(tp_pool *p, tp_fn fn, void *arg);

#endif
