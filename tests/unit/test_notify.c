/*
 * The channel list: payloads that cannot be built are counted, channels
 * take only what they want (PagerDuty: no notice, no digest), outcomes are
 * counted in the totals and per channel.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tokenwatch/log.h"
#include "tokenwatch/monitor.h"
#include "tokenwatch/notify.h"

static char *no_payload(const tw_alert_t *a, const void *ctx)
{
    (void)a;
    (void)ctx;
    return NULL;
}

/* Never dereferenced: a channel whose payload cannot be built is not sent. */
#define UNUSED_SENDER ((tw_webhook_t *)(uintptr_t)0x1)

static tw_channel_t broken(void)
{
    tw_channel_t c;

    memset(&c, 0, sizeof c);
    c.name = "Broken";
    c.label = "broken";
    c.payload = no_payload;
    return c;
}

Test(notify, a_payload_that_cannot_be_built_is_counted_not_sent)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_notify_list_t list;
    tw_channel_t spec = broken();
    tw_alert_t a;

    memset(&a, 0, sizeof a);
    a.key = "tokenwatch:{x}:checkpoint";
    cr_assert(tw_metrics_declare(m, "tokenwatch_records_failed_total", TW_METRIC_COUNTER,
                                 "failed"));
    tw_notify_list_init(&list, m, NULL);
    tw_notify_attach(tw_notify_add(&list, &spec), UNUSED_SENDER);
    cr_expect(tw_notify_any(&list));
    cr_expect_eq(tw_notify(&list, &a, "x WARN"), 0, "no channel took it");
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_records_failed_total", NULL), 1.0);
    tw_metrics_free(m);
}

Test(notify, no_sender_no_channel_and_a_full_list_says_so)
{
    tw_notify_list_t list;
    tw_channel_t spec = tw_notify_kind(TW_CHANNEL_SLACK);

    tw_notify_list_init(&list, NULL, NULL);
    cr_assert_not_null(tw_notify_add(&list, &spec));
    cr_expect_not(tw_notify_any(&list), "no sender yet: alerts are only logged");
    cr_expect_not(tw_notify_any(NULL));
    cr_expect_eq(tw_notify(NULL, NULL, "x"), 0);
    for (int k = 1; k < TW_CHANNELS_MAX; k++)
        cr_expect_not_null(tw_notify_add(&list, &spec));
    cr_expect_null(tw_notify_add(&list, &spec), "one too many");
    cr_expect_eq(list.count, (size_t)TW_CHANNELS_MAX);
}

/* Each kind: its name and label, and which take a digest. */
Test(notify, the_kinds)
{
    static const struct {
        tw_channel_kind_t kind;
        const char *name, *label;
        bool digest, wants_all;
    } cases[] = {
        {TW_CHANNEL_SLACK, "Slack", "slack", true, true},
        {TW_CHANNEL_JSON, "JSON", "webhook", true, true},
        {TW_CHANNEL_PAGERDUTY, "PagerDuty", "pagerduty", false, false},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_channel_t c = tw_notify_kind(cases[k].kind);

        cr_expect_str_eq(c.name, cases[k].name);
        cr_expect_str_eq(c.label, cases[k].label);
        cr_expect_not_null(c.payload);
        cr_expect_eq(c.digest != NULL, cases[k].digest, "%s digest", c.name);
        cr_expect_eq(c.wants == NULL, cases[k].wants_all, "%s wants", c.name);
        cr_expect_null(c.sender);
    }
}

/* What a sender reports lands in the totals the suite has always read and in
 * the channel's own series. */
Test(notify, outcomes_count_in_the_totals_and_per_channel)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_notify_list_t list;
    tw_channel_t slack = tw_notify_kind(TW_CHANNEL_SLACK);
    tw_channel_t pd = tw_notify_kind(TW_CHANNEL_PAGERDUTY);
    tw_channel_t *cs, *cp;

    tw_monitor_declare_metrics(m);
    tw_notify_list_init(&list, m, NULL);
    cs = tw_notify_add(&list, &slack);
    cp = tw_notify_add(&list, &pd);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_channel_sent_total", "channel=\"slack\""), 0.0,
                 "the series exists from the start");
    tw_notify_count(cs, TW_WEBHOOK_SENT);
    tw_notify_count(cs, TW_WEBHOOK_SENT);
    tw_notify_count(cp, TW_WEBHOOK_FAILED);
    tw_notify_count(cp, TW_WEBHOOK_DROPPED);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_alerts_sent_total", NULL), 2.0);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_alerts_failed_total", NULL), 1.0);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_alerts_dropped_total", NULL), 1.0);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_channel_sent_total", "channel=\"slack\""), 2.0);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_channel_sent_total", "channel=\"pagerduty\""),
                 0.0);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_channel_failed_total", "channel=\"pagerduty\""),
                 1.0);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_channel_dropped_total", "channel=\"pagerduty\""),
                 1.0);
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_heartbeats_sent_total", NULL), 0.0);
    tw_metrics_free(m);
}

static int built;

static char *counting_payload(const tw_alert_t *a, const void *ctx)
{
    (void)a;
    (void)ctx;
    built++;
    return NULL; /* counted as not built: no sender is touched */
}

/* PagerDuty takes no notice (the follower telling of its own start) and no
 * digest; the other kinds take both. */
Test(notify, pagerduty_takes_neither_notices_nor_digests)
{
    tw_notify_list_t list;
    tw_channel_t pd = tw_notify_kind(TW_CHANNEL_PAGERDUTY);
    tw_digest_t d;
    tw_alert_t a;

    memset(&a, 0, sizeof a);
    memset(&d, 0, sizeof d);
    pd.payload = counting_payload;
    tw_notify_list_init(&list, NULL, NULL);
    tw_notify_attach(tw_notify_add(&list, &pd), UNUSED_SENDER);
    a.own = true;
    a.state = TW_STATE_WARN;
    a.reason = "started without a checkpoint";
    built = 0;
    cr_expect_eq(tw_notify(&list, &a, "notice"), 0);
    cr_expect_eq(built, 0, "a notice is not built for PagerDuty");
    a.reason = NULL;
    cr_expect_eq(tw_notify(&list, &a, "own WARN"), 0);
    cr_expect_eq(built, 1, "a WARN is");
    cr_expect_eq(tw_notify_digest(&list, &d, "digest"), 0, "no digest for PagerDuty");
}
