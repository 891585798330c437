/*
 * clock.h - where time and randomness come from.
 *
 * Pure modules take `now` as an argument; the loops read it from a
 * tw_clock_t, which tests replace. Wall time (Unix ms) is what goes into
 * records; monotonic time (ms) measures intervals, so a clock step never
 * fires or starves a checkpoint.
 *
 * One clock serves every thread of a process (the loop, the guard, the
 * Slack sender): the system clock's functions are thread-safe (each thread
 * draws its jitter from its own state), and a test clock shared between
 * threads must be too.
 */
#ifndef TOKENWATCH_CLOCK_H
#define TOKENWATCH_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct tw_clock {
    int64_t (*wall_ms)(void *ctx);
    int64_t (*mono_ms)(void *ctx);
    /* A uniformly distributed value in [0, 1): jitter for backoffs. */
    double (*random01)(void *ctx);
    void *ctx;
    /* Waits ms on this clock. NULL: really (nanosleep). A test clock moves
     * its time on instead, so a run of backoffs takes no time at all. */
    void (*sleep_ms)(void *ctx, int64_t ms);
} tw_clock_t;

/* The real clocks, and jitter seeded from the time and the process id. */
void tw_clock_init_system(tw_clock_t *clock);

int64_t tw_clock_wall_ms(const tw_clock_t *clock);
int64_t tw_clock_mono_ms(const tw_clock_t *clock);
double tw_clock_random01(const tw_clock_t *clock);

/* Sleeps ms on the clock (see sleep_ms). */
void tw_clock_sleep_ms(const tw_clock_t *clock, int64_t ms);

/*
 * Waits ms, or until *done is true when cond is signalled (cond set to
 * CLOCK_MONOTONIC; called and returns with lock held, which guards *done).
 * On a clock with a sleep_ms of its own it sleeps that instead, the lock
 * released meanwhile.
 */
void tw_clock_wait(const tw_clock_t *clock, pthread_cond_t *cond, pthread_mutex_t *lock,
                   const bool *done, int64_t ms);

/* CLOCK_MONOTONIC now plus ms, as pthread_cond_timedwait wants it on a
 * condition set to that clock (pthread_condattr_setclock). */
void tw_mono_deadline(int64_t ms, struct timespec *out);

/* CLOCK_MONOTONIC in microseconds: for figures only (how long a commit
 * took, in a debug line), never for a decision, which takes the clock. */
int64_t tw_mono_us(void);

#endif
