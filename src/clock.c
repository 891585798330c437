#include "tokenwatch/clock.h"

#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int64_t timespec_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t system_wall_ms(void *ctx)
{
    (void)ctx;
    return timespec_ms(CLOCK_REALTIME);
}

static int64_t system_mono_ms(void *ctx)
{
    (void)ctx;
    return timespec_ms(CLOCK_MONOTONIC);
}

/* Each thread draws from its own state, seeded from the time and its own
 * address on first use, so one clock can serve every thread. */
static double system_random01(void *ctx)
{
    /* Jitter only needs to spread retries apart, not to be unpredictable. */
    static __thread unsigned short state[3];
    static __thread int seeded;

    (void)ctx;
    if (!seeded) {
        int64_t now = timespec_ms(CLOCK_MONOTONIC) ^ (int64_t)(uintptr_t)&seeded;

        state[0] = (unsigned short)(now & 0xffff);
        state[1] = (unsigned short)((now >> 16) & 0xffff);
        state[2] = (unsigned short)getpid();
        seeded = 1;
    }
    return erand48(state);
}

void tw_clock_init_system(tw_clock_t *clock)
{
    clock->wall_ms = system_wall_ms;
    clock->mono_ms = system_mono_ms;
    clock->random01 = system_random01;
    clock->ctx = NULL;
    clock->sleep_ms = NULL;
}

int64_t tw_clock_wall_ms(const tw_clock_t *clock)
{
    return clock->wall_ms(clock->ctx);
}

int64_t tw_clock_mono_ms(const tw_clock_t *clock)
{
    return clock->mono_ms(clock->ctx);
}

double tw_clock_random01(const tw_clock_t *clock)
{
    return clock->random01(clock->ctx);
}

void tw_clock_sleep_ms(const tw_clock_t *clock, int64_t ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    if (clock && clock->sleep_ms) {
        clock->sleep_ms(clock->ctx, ms);
        return;
    }
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

void tw_clock_wait(const tw_clock_t *clock, pthread_cond_t *cond, pthread_mutex_t *lock,
                   const bool *done, int64_t ms)
{
    struct timespec until;

    if (clock && clock->sleep_ms) {
        pthread_mutex_unlock(lock);
        clock->sleep_ms(clock->ctx, ms);
        pthread_mutex_lock(lock);
        return;
    }
    tw_mono_deadline(ms, &until);
    while (!*done && pthread_cond_timedwait(cond, lock, &until) == 0)
        ;
}

void tw_mono_deadline(int64_t ms, struct timespec *out)
{
    clock_gettime(CLOCK_MONOTONIC, out);
    out->tv_sec += (time_t)(ms / 1000);
    out->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

int64_t tw_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
