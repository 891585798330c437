#include <criterion/criterion.h>
#include <math.h>

#include "tokenwatch/guard.h"

#define HOUR 3600
#define DAY (24 * HOUR)
#define T0 1700000000u

static tw_oplog_window_t window_of(uint32_t oldest, uint32_t newest)
{
    tw_oplog_window_t w = {{oldest, 1}, {newest, 1}, 0, 0, false};
    return w;
}

static tw_limit_t share(double s)
{
    tw_limit_t l = {TW_LIMIT_SHARE, s, 0};
    return l;
}

static tw_limit_t duration_s(int64_t seconds)
{
    tw_limit_t l = {TW_LIMIT_DURATION, 0.0, seconds * 1000};
    return l;
}

Test(guard, measures_a_worked_example)
{
    /* A 48 h oplog; the token 12 h above the oldest entry; the tail moving
     * at one oplog second per second. */
    tw_oplog_window_t w = window_of(T0, T0 + 48 * HOUR);
    tw_measure_t m;

    tw_guard_measure(&w, (tw_ctime_t){T0 + 12 * HOUR, 5}, 1.0, &m);
    cr_expect_eq(m.window_s, 48 * HOUR);
    cr_expect_eq(m.headroom_s, 12 * HOUR);
    cr_expect_float_eq(m.share, 0.25, 1e-9);
    cr_expect_float_eq(m.time_left_s, 12.0 * HOUR, 1e-6);
    cr_expect_not(m.unbounded);
    cr_expect_eq(tw_guard_state((tw_ctime_t){T0 + 12 * HOUR, 5}, &w, &m, &(tw_limit_t){TW_LIMIT_SHARE, 0.5, 0},
                                &(tw_limit_t){TW_LIMIT_SHARE, 0.2, 0}, TW_STATE_OK),
                 TW_STATE_WARN);
}

typedef struct {
    uint32_t headroom_s;
    double rate;
    tw_limit_t warn, crit;
    tw_state_t want;
} state_case_t;

Test(guard, thresholds_as_shares_and_durations)
{
    /* Window 100 h. */
    const state_case_t cases[] = {
        {60 * HOUR, 1.0, share(0.5), share(0.2), TW_STATE_OK},
        {50 * HOUR, 1.0, share(0.5), share(0.2), TW_STATE_OK},   /* at the limit: not under */
        {49 * HOUR, 1.0, share(0.5), share(0.2), TW_STATE_WARN},
        {19 * HOUR, 1.0, share(0.5), share(0.2), TW_STATE_CRIT},
        {0, 1.0, share(0.5), share(0.2), TW_STATE_CRIT},         /* at the oldest entry */
        /* Durations compare time left: 10 h of headroom at rate 2 is 5 h. */
        {10 * HOUR, 2.0, duration_s(6 * HOUR), duration_s(2 * HOUR), TW_STATE_WARN},
        {10 * HOUR, 8.0, duration_s(6 * HOUR), duration_s(2 * HOUR), TW_STATE_CRIT},
        {10 * HOUR, 1.0, duration_s(6 * HOUR), duration_s(2 * HOUR), TW_STATE_OK},
        /* Rate 0: nothing is truncated, time left is unbounded. */
        {1, 0.0, duration_s(6 * HOUR), duration_s(2 * HOUR), TW_STATE_OK},
        /* A share still sees the small headroom at rate 0. */
        {1, 0.0, share(0.5), share(0.2), TW_STATE_CRIT},
        /* Mixed: warn by share, crit by duration. */
        {40 * HOUR, 1.0, share(0.5), duration_s(2 * HOUR), TW_STATE_WARN},
        {40 * HOUR, 30.0, share(0.5), duration_s(2 * HOUR), TW_STATE_CRIT},
    };
    tw_oplog_window_t w = window_of(T0, T0 + 100 * HOUR);

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_ctime_t token = {T0 + cases[k].headroom_s, 1};
        tw_measure_t m;
        tw_state_t got;

        tw_guard_measure(&w, token, cases[k].rate, &m);
        got = tw_guard_state(token, &w, &m, &cases[k].warn, &cases[k].crit, TW_STATE_OK);
        cr_expect_eq(got, cases[k].want, "case %zu: %s, want %s", k, tw_state_name(got),
                     tw_state_name(cases[k].want));
    }
}

Test(guard, older_than_the_oldest_entry_is_lost_at_once)
{
    tw_oplog_window_t w = window_of(T0, T0 + 100 * HOUR);
    tw_ctime_t same_second = {T0, 0}; /* (T0, 0) < (T0, 1) */
    tw_ctime_t exact = {T0, 1};
    tw_measure_t m;
    tw_limit_t warn = share(0.5), crit = share(0.2);

    tw_guard_measure(&w, same_second, 1.0, &m);
    cr_expect_eq(tw_guard_state(same_second, &w, &m, &warn, &crit, TW_STATE_OK), TW_STATE_LOST);
    cr_expect_eq(m.time_left_s, 0);
    tw_guard_measure(&w, exact, 1.0, &m);
    cr_expect_eq(tw_guard_state(exact, &w, &m, &warn, &crit, TW_STATE_OK), TW_STATE_CRIT,
                 "the oldest entry itself can still be resumed from");
    tw_guard_measure(&w, (tw_ctime_t){T0 - 7 * DAY, 1}, 0.0, &m);
    cr_expect_eq(tw_guard_state((tw_ctime_t){T0 - 7 * DAY, 1}, &w, &m, &warn, &crit, TW_STATE_OK),
                 TW_STATE_LOST, "even with no truncation");
}

static void observe(tw_tail_t *tail, uint32_t oldest, uint32_t newest)
{
    tw_oplog_window_t w = window_of(oldest, newest);

    tw_tail_observe(tail, &w);
}

Test(guard, tail_rate_is_one_until_measured)
{
    tw_tail_t tail;

    tw_tail_init(&tail);
    cr_expect_float_eq(tw_tail_rate(&tail), 1.0, 1e-12);
    observe(&tail, T0, T0 + DAY);
    cr_expect_float_eq(tw_tail_rate(&tail), 1.0, 1e-12);
    cr_expect_not(tw_tail_measured(&tail));
    observe(&tail, T0 + 10, T0 + DAY);
    cr_expect_not(tw_tail_measured(&tail), "no cluster time passed");
}

Test(guard, weeks_of_oplog_in_milliseconds)
{
    /* A quiet weekend: a probe every 30 s of cluster time, the tail
     * advancing 30 oplog seconds each time (rate 1), for three weeks. */
    tw_tail_t tail;
    uint32_t oldest = T0;
    tw_ctime_t token = {T0 + 2 * DAY, 1};
    tw_limit_t warn = share(0.5), crit = share(0.2);
    tw_state_t last = TW_STATE_OK;
    int changes = 0;

    tw_tail_init(&tail);
    for (int probe = 0; probe < 3 * 7 * DAY / 30; probe++) {
        tw_oplog_window_t w = window_of(oldest, oldest + 3 * DAY);
        tw_measure_t m;
        tw_state_t st;

        tw_tail_observe(&tail, &w);
        tw_guard_measure(&w, token, tw_tail_rate(&tail), &m);
        st = tw_guard_state(token, &w, &m, &warn, &crit, last);
        cr_assert_geq(st, last, "states only worsen for a frozen token");
        if (st != last)
            changes++;
        if (probe > 2 && st != TW_STATE_LOST)
            cr_expect_float_eq(m.time_left_s, (double)m.headroom_s, 1e-6,
                               "rate 1: time left equals headroom");
        last = st;
        oldest += 30;
    }
    cr_expect_eq(last, TW_STATE_LOST);
    cr_expect_eq(changes, 3, "OK to WARN to CRIT to LOST");
}

Test(guard, the_rate_is_per_second_of_cluster_time_not_of_the_wall)
{
    /* A scripted server running an hour a second, or a real one: the same
     * probes in cluster time give the same rate, whatever the wall did. */
    tw_tail_t tail;

    tw_tail_init(&tail);
    for (int k = 0; k <= 10; k++)
        observe(&tail, T0 + (uint32_t)k * HOUR, T0 + 2 * DAY + (uint32_t)k * HOUR);
    cr_expect(tw_tail_measured(&tail));
    cr_expect_float_eq(tw_tail_rate(&tail), 1.0, 1e-9);
}

Test(guard, tail_rate_zero_when_nothing_is_truncated)
{
    tw_tail_t tail;

    tw_tail_init(&tail);
    for (uint32_t k = 0; k < 5; k++)
        observe(&tail, T0, T0 + DAY + k * 30);
    cr_expect(tw_tail_measured(&tail));
    cr_expect_float_eq(tw_tail_rate(&tail), 0.0, 1e-12);
}

Test(guard, stepwise_truncation_gives_a_steady_rate)
{
    /* A 24 h oplog cut in 12 markers of 2 h (kMinStonesToKeep 10 to 100):
     * the oldest entry stands still for 2 h, then jumps 2 h. Probed every
     * 30 s for two days, the rate stays near 1 between the jumps, never 0
     * and never a spike, once a few jumps were seen. */
    tw_tail_t tail;
    double lo = 1e9, hi = 0;

    tw_tail_init(&tail);
    for (uint32_t now = T0; now < T0 + 2 * DAY; now += 30) {
        uint32_t oldest = T0 - DAY + (now - T0) / (2 * HOUR) * (2 * HOUR);
        double rate;

        observe(&tail, oldest, now);
        rate = tw_tail_rate(&tail);
        if (now >= T0 + 8 * HOUR) {
            lo = rate < lo ? rate : lo;
            hi = rate > hi ? rate : hi;
        }
    }
    cr_expect_geq(lo, 0.7, "lowest %f", lo);
    cr_expect_leq(hi, 1.0 + 1e-9, "highest %f", hi);
}

Test(guard, a_tail_that_stopped_long_ago_measures_zero)
{
    /* Truncation stopped (the oplog was resized up): after the horizon the
     * rate falls to 0 rather than remembering the old pace. */
    tw_tail_t tail;

    tw_tail_init(&tail);
    for (uint32_t k = 0; k <= 10; k++)
        observe(&tail, T0 + k * HOUR, T0 + DAY + k * HOUR);
    observe(&tail, T0 + 10 * HOUR, T0 + 3 * DAY + 10 * HOUR); /* still for 2 days */
    cr_expect_float_eq(tw_tail_rate(&tail), 0.0, 1e-12);
}

Test(guard, a_window_that_shrinks_speeds_the_tail)
{
    /* replSetResizeOplog to a smaller size: the oldest entry jumps 10 h. */
    tw_tail_t tail;
    tw_measure_t m;
    tw_oplog_window_t w;

    tw_tail_init(&tail);
    observe(&tail, T0, T0 + DAY);
    observe(&tail, T0 + 30, T0 + DAY + 30);
    cr_expect_float_eq(tw_tail_rate(&tail), 1.0, 1e-9);
    observe(&tail, T0 + 10 * HOUR, T0 + DAY + 60);
    cr_expect_gt(tw_tail_rate(&tail), 100.0);
    w = window_of(T0 + 10 * HOUR, T0 + 12 * HOUR);
    tw_guard_measure(&w, (tw_ctime_t){T0 + 11 * HOUR, 1}, tw_tail_rate(&tail), &m);
    cr_expect_eq(m.window_s, 2 * HOUR);
    cr_expect_lt(m.time_left_s, 60.0, "an hour of headroom goes in under a minute");
    /* An older oldest entry (another member) is not negative truncation. */
    observe(&tail, T0, T0 + DAY + 90);
    cr_expect_geq(tw_tail_rate(&tail), 0.0);
    cr_expect_not(tw_tail_measured(&tail), "measured afresh");
}

Test(guard, a_better_state_needs_the_margin)
{
    tw_oplog_window_t w = window_of(T0, T0 + 100 * HOUR);
    tw_limit_t warn = share(0.5), crit = share(0.2);
    tw_ctime_t token = {T0 + 52 * HOUR, 1}; /* 52%: over 50%, under 55% */
    tw_measure_t m;

    tw_guard_measure(&w, token, 1.0, &m);
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_OK), TW_STATE_OK);
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_WARN), TW_STATE_WARN,
                 "WARN stays until 55%%");
    token.t = T0 + 56 * HOUR;
    tw_guard_measure(&w, token, 1.0, &m);
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_WARN), TW_STATE_OK);
    token.t = T0 + 21 * HOUR; /* over CRIT's 20%, under its 22% */
    tw_guard_measure(&w, token, 1.0, &m);
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_CRIT), TW_STATE_CRIT);
    token.t = T0 + 30 * HOUR;
    tw_guard_measure(&w, token, 1.0, &m);
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_CRIT), TW_STATE_WARN);
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_LOST), TW_STATE_WARN,
                 "a lost token moved on is measured afresh");
}

Test(guard, retention_is_a_floor_not_a_proof_of_loss)
{
    tw_oplog_window_t w = window_of(T0 - 3 * HOUR, T0);
    tw_ctime_t token = {T0 - 4 * HOUR, 1};
    tw_limit_t warn = share(0.5), crit = share(0.2);
    tw_measure_t m;

    w.from_retention = true;
    tw_guard_measure(&w, token, 1.0, &m);
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_OK), TW_STATE_CRIT,
                 "the server may keep more than --retention");
    w.from_retention = false;
    cr_expect_eq(tw_guard_state(token, &w, &m, &warn, &crit, TW_STATE_OK), TW_STATE_LOST);
}

Test(guard, alerts_on_each_change_and_repeats_without_bursts)
{
    const int64_t repeat = 24LL * 3600 * 1000;
    tw_tracker_t t = {0};
    int64_t now = 0;

    cr_expect_eq(tw_tracker_update(&t, TW_STATE_OK, now, repeat), TW_NOTIFY_NONE,
                 "a first OK says nothing");
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_WARN, now += 1000, repeat), TW_NOTIFY_CHANGE);
    for (int k = 0; k < 100; k++)
        cr_expect_eq(tw_tracker_update(&t, TW_STATE_WARN, now += 30000, repeat),
                     TW_NOTIFY_NONE, "no repeat before --alert-repeat");
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_CRIT, now += 30000, repeat), TW_NOTIFY_CHANGE);
    cr_expect_eq(t.previous, TW_STATE_WARN);
    now += repeat;
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_CRIT, now, repeat), TW_NOTIFY_REPEAT);
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_CRIT, now + 1, repeat), TW_NOTIFY_NONE,
                 "one repeat, not a burst");
    /* A long gap between probes still gives a single repeat. */
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_CRIT, now + 10 * repeat, repeat),
                 TW_NOTIFY_REPEAT);
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_CRIT, now + 10 * repeat + 1, repeat),
                 TW_NOTIFY_NONE);
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_OK, now += 11 * repeat, repeat),
                 TW_NOTIFY_RESOLVED);
    cr_expect_eq(t.previous, TW_STATE_CRIT);
    cr_expect_eq(tw_tracker_update(&t, TW_STATE_OK, now += repeat, repeat), TW_NOTIFY_NONE,
                 "OK never repeats");
}

Test(guard, a_first_bad_state_alerts)
{
    tw_tracker_t t = {0};

    cr_expect_eq(tw_tracker_update(&t, TW_STATE_LOST, 5, 1000), TW_NOTIFY_CHANGE);
}

Test(guard, exit_codes_for_nagios)
{
    const struct {
        tw_state_t states[3];
        size_t n;
        int want;
    } cases[] = {
        {{TW_STATE_OK}, 1, 0},
        {{TW_STATE_OK, TW_STATE_WARN}, 2, 1},
        {{TW_STATE_WARN, TW_STATE_CRIT}, 2, 2},
        {{TW_STATE_LOST}, 1, 2},
        {{TW_STATE_UNKNOWN, TW_STATE_WARN}, 2, 3},
        {{TW_STATE_UNKNOWN, TW_STATE_LOST}, 2, 2},
        {{TW_STATE_OK}, 0, 0},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        cr_expect_eq(tw_guard_exit_code(cases[k].states, cases[k].n), cases[k].want,
                     "case %zu", k);
}
