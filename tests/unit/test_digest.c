/*
 * The daily digest: the scheduler as tables of times on a fake clock (days
 * in a row, a start after the hour, clock jumps both ways, never twice a
 * day), --digest-at parsing, and the headline, text and payloads.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/digest.h"
#include "tokenwatch/guard.h"
#include "tokenwatch/settings.h"

#define DAY ((int64_t)86400000)
#define HOUR ((int64_t)3600000)
#define MIN ((int64_t)60000)
/* 2026-11-20T00:00:00Z */
#define D0 ((int64_t)1795132800000)

typedef struct {
    int64_t at;
    bool due;
} tick_t;

/* Runs the ticks through one scheduler at 09:00; the ticks end at at == 0. */
static void run_ticks(const char *name, const tick_t *ticks)
{
    tw_digest_sched_t s;

    tw_digest_sched_init(&s, 9 * 60);
    for (size_t k = 0; ticks[k].at != 0; k++)
        cr_expect_eq(tw_digest_due(&s, ticks[k].at), ticks[k].due, "%s: tick %zu (+%lld min)",
                     name, k, (long long)((ticks[k].at - D0) / MIN));
}

Test(digest, once_a_day_at_the_hour)
{
    static const tick_t ticks[] = {
        {D0 + 8 * HOUR, false},              /* start, before the hour */
        {D0 + 8 * HOUR + 59 * MIN, false},
        {D0 + 9 * HOUR, true},               /* the hour */
        {D0 + 9 * HOUR + 30 * 1000, false},  /* the next round, same minute */
        {D0 + 15 * HOUR, false},
        {D0 + DAY + 8 * HOUR, false},        /* the next day, before */
        {D0 + DAY + 9 * HOUR + 1 * MIN, true},
        {D0 + 2 * DAY + 23 * HOUR, true},    /* a round late in the day */
        {D0 + 2 * DAY + 23 * HOUR + MIN, false},
        {0, false},
    };

    run_ticks("daily", ticks);
}

Test(digest, a_start_after_the_hour_waits_for_tomorrow)
{
    static const tick_t ticks[] = {
        {D0 + 10 * HOUR, false}, /* start at 10:00: today's hour has passed */
        {D0 + 23 * HOUR, false},
        {D0 + DAY + 9 * HOUR, true},
        {0, false},
    };
    static const tick_t restart[] = {
        {D0 + 9 * HOUR + 5 * MIN, false}, /* a restart just after sending */
        {D0 + 9 * HOUR + 6 * MIN, false},
        {0, false},
    };

    run_ticks("start after", ticks);
    run_ticks("restart", restart);
}

Test(digest, clock_jumps_send_once_and_never_twice_a_day)
{
    static const tick_t ticks[] = {
        {D0 + 8 * HOUR, false},
        {D0 + 9 * HOUR, true},
        {D0 + 8 * HOUR + 30 * MIN, false},  /* back an hour and a half */
        {D0 + 9 * HOUR + 1 * MIN, false},   /* past the hour again: sent */
        {D0 + 5 * DAY + 12 * HOUR, true},   /* forward 5 days: one, not five */
        {D0 + 5 * DAY + 12 * HOUR + MIN, false},
        {D0 + 3 * DAY + 10 * HOUR, false},  /* back two days */
        {D0 + 4 * DAY + 10 * HOUR, false},  /* still before the last sent */
        {D0 + 5 * DAY + 13 * HOUR, false},
        {D0 + 6 * DAY + 8 * HOUR, false},
        {D0 + 6 * DAY + 9 * HOUR, true},
        {0, false},
    };

    run_ticks("jumps", ticks);
}

Test(digest, midnight_and_the_last_minute)
{
    tw_digest_sched_t s;

    tw_digest_sched_init(&s, 0);
    cr_expect_not(tw_digest_due(&s, D0 - MIN));     /* 23:59 the day before */
    cr_expect(tw_digest_due(&s, D0));               /* 00:00 */
    cr_expect_not(tw_digest_due(&s, D0 + DAY - 1)); /* 23:59:59.999 */
    cr_expect(tw_digest_due(&s, D0 + DAY));
    tw_digest_sched_init(&s, 23 * 60 + 59);
    cr_expect_not(tw_digest_due(&s, D0));
    cr_expect_not(tw_digest_due(&s, D0 + 23 * HOUR + 58 * MIN));
    cr_expect(tw_digest_due(&s, D0 + 23 * HOUR + 59 * MIN));
    cr_expect_not(tw_digest_due(&s, D0 + DAY));
}

Test(digest, parses_hh_mm)
{
    static const struct {
        const char *text;
        int minute; /* -1: refused */
    } cases[] = {
        {"09:00", 540}, {"00:00", 0}, {"23:59", 1439}, {"12:30", 750},
        {"24:00", -1},  {"9:00", -1}, {"09:60", -1},   {"0900", -1},
        {"09:00Z", -1}, {"", -1},     {"ab:cd", -1},   {"09::0", -1},
        {" 9:00", -1},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_error_t err;
        int minute = -7;
        bool ok;

        tw_error_clear(&err);
        ok = tw_digest_parse_at(cases[k].text, &minute, &err);
        cr_expect_eq(ok, cases[k].minute >= 0, "case %zu '%s'", k, cases[k].text);
        if (ok)
            cr_expect_eq(minute, cases[k].minute, "case %zu", k);
        else
            cr_expect(strstr(err.message, "HH:MM") != NULL, "%s", err.message);
    }
}

Test(digest, the_setting_is_checked_and_kept_in_minutes)
{
    const char *good[] = {"--digest-at", "09:30", NULL};
    const char *bad[] = {"--digest-at", "9.30", NULL};
    const char *envp[] = {NULL};
    const char *env_at[] = {"TOKENWATCH_DIGEST_AT=23:05", NULL};
    tw_settings_t s;
    tw_error_t err;

    memset(&s, 0, sizeof s);
    cr_assert(tw_settings_load(&s, 2, good, envp, &err), "%s", err.message);
    cr_expect_eq(s.digest_at_minute, 9 * 60 + 30);
    tw_settings_release(&s);
    memset(&s, 0, sizeof s);
    cr_assert(tw_settings_load(&s, 0, bad + 2, env_at, &err), "%s", err.message);
    cr_expect_eq(s.digest_at_minute, 23 * 60 + 5);
    tw_settings_release(&s);
    memset(&s, 0, sizeof s);
    cr_assert(tw_settings_load(&s, 0, bad + 2, envp, &err), "%s", err.message);
    cr_expect_eq(s.digest_at_minute, -1, "no digest by default");
    tw_settings_release(&s);
    memset(&s, 0, sizeof s);
    cr_expect_not(tw_settings_load(&s, 2, bad, envp, &err));
    cr_expect(strstr(err.message, "--digest-at") != NULL, "%s", err.message);
    tw_settings_release(&s);
}

static const tw_digest_entry_t all_ok[] = {
    {"tokenwatch:{orders}:checkpoint", TW_STATE_OK, true, 40 * 3600, false, 40 * 3600.0},
    {"billing:resume-token", TW_STATE_OK, true, 31 * 3600, false, 31 * 3600.0},
    {"search:<b>&token", TW_STATE_OK, true, 45 * 3600, true, 0},
};

static const tw_digest_entry_t mixed[] = {
    {"a", TW_STATE_OK, true, 40 * 3600, false, 40 * 3600.0},
    {"b", TW_STATE_WARN, true, 10 * 3600, false, 5 * 3600.0},
    {"c", TW_STATE_CRIT, true, 3 * 3600 + 600, false, 3 * 3600.0},
    {"d", TW_STATE_UNKNOWN, false, 0, false, 0},
};

static tw_digest_t digest_of(const tw_digest_entry_t *entries, size_t n)
{
    tw_digest_t d;

    memset(&d, 0, sizeof d);
    d.environment = "prod";
    d.name = "orders";
    d.now_ms = D0 + 9 * HOUR;
    d.entries = entries;
    d.count = n;
    return d;
}

Test(digest, headlines)
{
    tw_digest_t ok = digest_of(all_ok, 3);
    tw_digest_t bad = digest_of(mixed, 4);
    tw_digest_t none = digest_of(NULL, 0);
    char *h1 = tw_digest_headline(&ok);
    char *h2 = tw_digest_headline(&bad);
    char *h3 = tw_digest_headline(&none);

    cr_expect_str_eq(h1, "all 3 OK, least headroom 1d 7h");
    cr_expect_str_eq(h2, "3 of 4 not OK (1 WARN, 1 CRIT, 1 UNKNOWN), least headroom 3h 10m");
    cr_expect_str_eq(h3, "no guarded position measured yet");
    bson_free(h1);
    bson_free(h2);
    bson_free(h3);
}

Test(digest, text_and_payloads)
{
    tw_digest_t d = digest_of(all_ok, 3);
    char *text = tw_digest_text(&d, false);
    char *slack = tw_digest_slack_payload(&d);
    char *json = tw_digest_json_payload(&d);
    bson_t doc;
    bson_iter_t it;
    bson_error_t error;

    cr_expect(strstr(text, "[prod] tokenwatch orders daily digest 2026-11-20: all 3 OK") ==
                  text, "%s", text);
    cr_expect(strstr(text, "\nbilling:resume-token: OK, headroom 1d 7h, time left 1d 7h") !=
                  NULL, "%s", text);
    cr_expect(strstr(text, "\nsearch:<b>&token: OK, headroom 1d 21h, time left unbounded") !=
                  NULL, "%s", text);
    cr_assert_not_null(slack);
    cr_expect(strstr(slack, "search:&lt;b&gt;&amp;token") != NULL, "escaped for Slack: %s", slack);
    cr_assert(bson_init_from_json(&doc, json, -1, &error), "%s", error.message);
    cr_assert(bson_iter_init_find(&it, &doc, "kind"));
    cr_expect_str_eq(bson_iter_utf8(&it, NULL), "digest");
    cr_assert(bson_iter_init_find(&it, &doc, "all_ok"));
    cr_expect(bson_iter_bool(&it));
    cr_assert(bson_iter_init_find(&it, &doc, "least_headroom_seconds"));
    cr_expect_eq(bson_iter_as_int64(&it), 31 * 3600);
    cr_assert(bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "keys.2.key", &it));
    cr_expect_str_eq(bson_iter_utf8(&it, NULL), "search:<b>&token", "not escaped in JSON");
    cr_assert(bson_iter_init(&it, &doc) &&
              bson_iter_find_descendant(&it, "keys.2.time_left_seconds", &it));
    cr_expect(BSON_ITER_HOLDS_NULL(&it), "unbounded: null");
    bson_destroy(&doc);
    bson_free(json);
    bson_free(slack);
    bson_free(text);
}
