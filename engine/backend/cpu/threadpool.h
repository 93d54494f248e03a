/*
 * threadpool.h - one persistent pool of worker threads for the CPU backend.
 *
 * tp_run() executes fn(arg, ith, nth) on every thread of the pool, the
 * calling thread included as ith = 0, and returns when all have finished.
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

#endif
