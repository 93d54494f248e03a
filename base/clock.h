/*
 * clock.h - the two clocks the code waits on: CLOCK_MONOTONIC in
 * milliseconds for measuring and deadlines, and absolute CLOCK_REALTIME
 * times for pthread_cond_timedwait (which takes that clock by default).
 * Thread-safety: both functions are pure reads of the system clocks.
 */
#ifndef BASE_CLOCK_H
#define BASE_CLOCK_H

#include <time.h>

/* CLOCK_MONOTONIC now, in milliseconds (with fractions). */
double clock_now_ms(void);

/* CLOCK_REALTIME timeout_ms (>= 0) from now, for pthread_cond_timedwait. */
struct timespec clock_realtime_after_ms(long timeout_ms);

#endif
