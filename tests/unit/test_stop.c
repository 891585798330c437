#include <criterion/criterion.h>
#include <time.h>

#include "tokenwatch/stop.h"

/* Written on the watcher's thread; read after tw_stop_watch_free joined it. */
typedef struct {
    int calls;
    long long at_ms;
} taken_t;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Returns instead of ending the process: the watcher then stops watching. */
static void record(void *ctx)
{
    taken_t *t = ctx;

    t->calls++;
    t->at_ms = now_ms();
}

static tw_stop_watch_t *start(volatile sig_atomic_t *flag, int64_t grace_ms, taken_t *t)
{
    tw_stop_watch_opts_t opts = {.stop = flag, .grace_ms = grace_ms, .poll_ms = 10,
                                 .take_over = record, .ctx = t};
    tw_error_t err;
    tw_stop_watch_t *w = tw_stop_watch_start(&opts, &err);

    cr_assert(w, "%s", err.message);
    return w;
}

Test(stop, takes_over_after_the_grace_while_the_owner_is_inside_a_call)
{
    volatile sig_atomic_t flag = 0;
    taken_t t = {0, 0};
    tw_stop_watch_t *w = start(&flag, 200, &t);
    long long t0;

    tw_stop_watch_enter(w);
    t0 = now_ms();
    flag = 1;
    sleep_ms(600);
    tw_stop_watch_leave(w);
    tw_stop_watch_free(w);
    cr_expect_eq(t.calls, 1, "once");
    cr_expect(t.at_ms - t0 >= 200 && t.at_ms - t0 < 450, "after the grace: %lld ms",
              t.at_ms - t0);
}

Test(stop, never_while_the_owner_is_outside_calls)
{
    volatile sig_atomic_t flag = 1;
    taken_t t = {0, 0};
    tw_stop_watch_t *w = start(&flag, 50, &t);

    sleep_ms(300);
    tw_stop_watch_free(w);
    cr_expect_eq(t.calls, 0);
}

Test(stop, a_call_that_ends_within_the_grace_is_left_alone)
{
    volatile sig_atomic_t flag = 1;
    taken_t t = {0, 0};
    tw_stop_watch_t *w = start(&flag, 300, &t);

    tw_stop_watch_enter(w);
    sleep_ms(100);
    tw_stop_watch_leave(w);
    sleep_ms(400);
    tw_stop_watch_free(w);
    cr_expect_eq(t.calls, 0);
}

Test(stop, the_first_call_entered_after_the_grace_is_taken_over)
{
    volatile sig_atomic_t flag = 1;
    taken_t t = {0, 0};
    tw_stop_watch_t *w = start(&flag, 50, &t);

    sleep_ms(200); /* the owner is busy outside any call past the grace */
    tw_stop_watch_enter(w);
    sleep_ms(100);
    tw_stop_watch_leave(w);
    tw_stop_watch_free(w);
    cr_expect_eq(t.calls, 1);
}

Test(stop, without_a_stop_request_nothing_happens_and_free_is_prompt)
{
    volatile sig_atomic_t flag = 0;
    taken_t t = {0, 0};
    tw_stop_watch_opts_t opts = {.stop = &flag, .poll_ms = 5000, .take_over = record,
                                 .ctx = &t};
    tw_stop_watch_t *w = tw_stop_watch_start(&opts, NULL);
    long long t0;

    cr_assert(w);
    tw_stop_watch_enter(w);
    sleep_ms(100);
    tw_stop_watch_leave(w);
    t0 = now_ms();
    tw_stop_watch_free(w);
    cr_expect_lt(now_ms() - t0, 200, "free does not wait out the poll");
    cr_expect_eq(t.calls, 0);
    tw_stop_watch_enter(NULL);
    tw_stop_watch_leave(NULL);
    tw_stop_watch_free(NULL);
}

/* Written on the watcher's thread; read after free joined it. */
typedef struct {
    int calls;
    int64_t blocked_ms;
} slow_t;

static void on_slow(void *ctx, int64_t blocked_ms)
{
    slow_t *s = ctx;

    s->calls++;
    s->blocked_ms = blocked_ms;
}

static tw_stop_watch_t *start_slow(volatile sig_atomic_t *flag, slow_t *s)
{
    tw_stop_watch_opts_t opts = {.stop = flag, .grace_ms = 200, .poll_ms = 10, .ctx = s,
                                 .slow_ms = 150, .on_slow = on_slow};
    tw_error_t err;
    tw_stop_watch_t *w = tw_stop_watch_start(&opts, &err);

    cr_assert(w, "%s", err.message);
    return w;
}

Test(stop, a_timed_call_slower_than_slow_ms_is_said_once)
{
    volatile sig_atomic_t flag = 0;
    slow_t s = {0, 0};
    tw_stop_watch_t *w = start_slow(&flag, &s);

    tw_stop_watch_enter_timed(w);
    sleep_ms(500);
    tw_stop_watch_leave(w);
    tw_stop_watch_free(w);
    cr_expect_eq(s.calls, 1, "once per call");
    cr_expect(s.blocked_ms >= 150 && s.blocked_ms < 400, "when it got slow: %lld ms",
              (long long)s.blocked_ms);
}

Test(stop, quick_timed_calls_and_untimed_slow_ones_are_not_said)
{
    volatile sig_atomic_t flag = 0;
    slow_t s = {0, 0};
    tw_stop_watch_t *w = start_slow(&flag, &s);

    for (int k = 0; k < 5; k++) {
        tw_stop_watch_enter_timed(w);
        sleep_ms(100);
        tw_stop_watch_leave(w);
        sleep_ms(100); /* outside: the watcher may not wait on the lock */
    }
    tw_stop_watch_enter(w);
    sleep_ms(400);
    tw_stop_watch_leave(w);
    tw_stop_watch_free(w);
    cr_expect_eq(s.calls, 0);
}

Test(stop, each_slow_call_is_said)
{
    volatile sig_atomic_t flag = 0;
    slow_t s = {0, 0};
    tw_stop_watch_t *w = start_slow(&flag, &s);

    for (int k = 0; k < 2; k++) {
        tw_stop_watch_enter_timed(w);
        sleep_ms(300);
        tw_stop_watch_leave(w);
    }
    tw_stop_watch_free(w);
    cr_expect_eq(s.calls, 2);
}
