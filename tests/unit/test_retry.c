#include <criterion/criterion.h>

#include "tokenwatch/retry.h"

Test(retry, backoff_doubles_to_the_cap_with_jitter_in_the_upper_half)
{
    /* base 100, cap 1000: full delays 100 200 400 800 1000 1000 */
    static const int64_t full[] = {100, 200, 400, 800, 1000, 1000};
    tw_backoff_t lo, hi;

    tw_backoff_init(&lo, 100, 1000);
    tw_backoff_init(&hi, 100, 1000);
    for (size_t k = 0; k < sizeof full / sizeof full[0]; k++) {
        int64_t least = tw_backoff_next(&lo, 0.0);
        int64_t most = tw_backoff_next(&hi, 0.999999);

        cr_expect_eq(least, full[k] / 2, "try %zu: %lld", k, (long long)least);
        cr_expect(most <= full[k] && most >= full[k] - 1, "try %zu: %lld", k,
                  (long long)most);
    }
    tw_backoff_reset(&lo);
    cr_expect_eq(tw_backoff_next(&lo, 0.0), 50);
}

Test(retry, backoff_never_overflows)
{
    tw_backoff_t b;

    tw_backoff_init(&b, 250, 30000);
    for (int k = 0; k < 200; k++)
        cr_assert_leq(tw_backoff_next(&b, 0.5), 30000);
}

Test(retry, an_outage_is_told_once_when_it_starts_and_once_when_it_ends)
{
    tw_outage_t o = {0};

    cr_expect_not(tw_outage_ok(&o, 0), "no outage yet");
    cr_expect(tw_outage_fail(&o, 1000));
    cr_expect_not(tw_outage_fail(&o, 2000));
    cr_expect_not(tw_outage_fail(&o, 3000));
    cr_expect_eq(o.failures, 3);
    cr_expect(tw_outage_ok(&o, 61000));
    cr_expect_eq(o.ended_after_ms, 60000);
    cr_expect_not(tw_outage_ok(&o, 62000));
    cr_expect(tw_outage_fail(&o, 70000), "a new outage is told again");
}
