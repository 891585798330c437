#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/duration.h"

typedef struct {
    const char *text;
    bool ok;
    int64_t ms;
} duration_case_t;

static const duration_case_t duration_cases[] = {
    {"500ms", true, 500},
    {"30s", true, 30000},
    {"15m", true, 900000},
    {"6h", true, 21600000},
    {"7d", true, 604800000},
    {"1h30m", true, 5400000},
    {"0s", true, 0},
    {"1m500ms", true, 60500},
    {"", false, 0},
    {"30", false, 0},      /* no unit: ambiguous */
    {"s", false, 0},
    {"-5s", false, 0},
    {"1.5h", false, 0},
    {"5 s", false, 0},
    {"10w", false, 0},
    {"3651d", false, 0},    /* over ten years */
    {"99999999999999999999s", false, 0},
};

Test(duration, parses_table)
{
    for (size_t k = 0; k < sizeof duration_cases / sizeof duration_cases[0]; k++) {
        const duration_case_t *c = &duration_cases[k];
        int64_t ms = -1;
        tw_error_t err;
        bool ok = tw_duration_parse(c->text, &ms, &err);

        cr_expect_eq(ok, c->ok, "'%s': ok=%d", c->text, ok);
        if (c->ok)
            cr_expect_eq(ms, c->ms, "'%s': %lld", c->text, (long long)ms);
        else
            cr_expect(strstr(err.message, c->text) != NULL,
                      "error names the value: %s", err.message);
    }
}

Test(duration, formats_shortest_exact_form)
{
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {{0, "0s"}, {500, "500ms"}, {1000, "1s"}, {1500, "1500ms"},
                 {90000, "1m30s"}, {86400000, "1d"}, {90061000, "1d1h1m1s"}};
    char out[TW_DURATION_TEXT_MAX];

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t back;
        tw_duration_format(cases[k].ms, out);
        cr_expect_str_eq(out, cases[k].text);
        cr_expect(tw_duration_parse(out, &back, NULL));
        cr_expect_eq(back, cases[k].ms, "round trip of %s", out);
    }
}

Test(duration, words_for_people)
{
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {{0, "0s"},
                 {45000, "45s"},
                 {(2 * 3600 + 14 * 60 + 59) * 1000LL, "2h 14m"},
                 {(3 * 86400 + 4 * 3600) * 1000LL, "3d 4h"},
                 {(86400 + 30) * 1000LL, "1d"},
                 {3600000, "1h"}};
    char out[TW_DURATION_TEXT_MAX];

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_duration_words(cases[k].ms, out);
        cr_expect_str_eq(out, cases[k].text, "%lld ms", (long long)cases[k].ms);
    }
}

Test(duration, limits_are_shares_or_durations)
{
    tw_limit_t l;
    tw_error_t err;

    cr_assert(tw_limit_parse("20%", &l, NULL));
    cr_expect_eq(l.kind, TW_LIMIT_SHARE);
    cr_expect_float_eq(l.share, 0.20, 1e-9);
    cr_assert(tw_limit_parse("12.5%", &l, NULL));
    cr_expect_float_eq(l.share, 0.125, 1e-9);
    cr_assert(tw_limit_parse("2h", &l, NULL));
    cr_expect_eq(l.kind, TW_LIMIT_DURATION);
    cr_expect_eq(l.ms, 7200000);
    cr_expect_not(tw_limit_parse("120%", &l, &err));
    cr_expect_not(tw_limit_parse("%", &l, &err));
    cr_expect_not(tw_limit_parse("abc%", &l, &err));
    cr_expect_not(tw_limit_parse("2", &l, &err));
    cr_expect(strstr(err.message, "share") != NULL, "%s", err.message);
}

/* A share is decimal digits, an optional fraction, then '%'; a duration is
 * digits and units: nothing strtod or strtol would also take. */
Test(duration, only_the_documented_grammar_is_taken)
{
    static const char *const bad_limits[] = {"0x10%", "1e1%", "+5%",  " 5%", "5.%", ".5%",
                                             "inf%",  "nan%", "5 %",  "5%%", "-0%", "1,5%",
                                             "0x10s", "1e3ms", "+5s", " 5s", "5s ", "-5s",
                                             "5 s",   "5S"};
    static const char *const bad_durations[] = {"0x10s", "1e3ms", "+5s", " 5s", "5s ",
                                                "-5s",   "5 s",   "1.5s", "s",  "5"};
    tw_limit_t l;
    tw_error_t err;
    int64_t ms;

    for (size_t k = 0; k < sizeof bad_limits / sizeof bad_limits[0]; k++) {
        cr_expect_not(tw_limit_parse(bad_limits[k], &l, &err), "'%s' accepted", bad_limits[k]);
        cr_expect(strstr(err.message, bad_limits[k]) != NULL, "%s", err.message);
    }
    for (size_t k = 0; k < sizeof bad_durations / sizeof bad_durations[0]; k++) {
        cr_expect_not(tw_duration_parse(bad_durations[k], &ms, &err), "'%s' accepted",
                      bad_durations[k]);
        cr_expect(strstr(err.message, "duration") != NULL, "%s", err.message);
    }
    cr_assert(tw_limit_parse("007.50%", &l, &err), "%s", err.message);
    cr_expect_float_eq(l.share, 0.075, 1e-9);
    cr_assert(tw_limit_parse("100%", &l, &err), "%s", err.message);
    cr_expect_float_eq(l.share, 1.0, 1e-9);
    cr_expect_not(tw_limit_parse("100.5%", &l, &err));
}
