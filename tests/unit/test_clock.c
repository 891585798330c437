#include <criterion/criterion.h>
#include <pthread.h>

#include "tokenwatch/clock.h"

/* One system clock for every thread: each draws its own jitter. */
typedef struct {
    const tw_clock_t *clock;
    double first;
    int out_of_range;
} draws_t;

static void *draw(void *arg)
{
    draws_t *d = arg;

    for (int k = 0; k < 10000; k++) {
        double v = tw_clock_random01(d->clock);

        if (k == 0)
            d->first = v;
        d->out_of_range += v < 0.0 || v >= 1.0;
    }
    return NULL;
}

Test(clock, one_system_clock_serves_several_threads)
{
    tw_clock_t clock;
    draws_t d[2] = {{&clock, 0, 0}, {&clock, 0, 0}};
    pthread_t t[2];
    int64_t mono;

    tw_clock_init_system(&clock);
    for (int k = 0; k < 2; k++)
        cr_assert_eq(pthread_create(&t[k], NULL, draw, &d[k]), 0);
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    cr_expect_eq(d[0].out_of_range + d[1].out_of_range, 0, "every draw in [0, 1)");
    cr_expect_neq(d[0].first, d[1].first, "each thread its own sequence");
    mono = tw_clock_mono_ms(&clock);
    cr_expect_geq(tw_clock_mono_ms(&clock), mono, "monotonic");
    cr_expect_gt(tw_clock_wall_ms(&clock), 1700000000000LL, "wall time in ms");
}
