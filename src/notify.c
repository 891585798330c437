#include "tokenwatch/notify.h"

#include <string.h>

#include "tokenwatch/log.h"
#include "tokenwatch/pagerduty.h"

#define CHANNEL_SENT "tokenwatch_channel_sent_total"
#define CHANNEL_FAILED "tokenwatch_channel_failed_total"
#define CHANNEL_DROPPED "tokenwatch_channel_dropped_total"

static char *slack_payload(const tw_alert_t *a, const void *ctx)
{
    (void)ctx;
    return tw_alert_slack_payload(a);
}

static char *json_payload(const tw_alert_t *a, const void *ctx)
{
    (void)ctx;
    return tw_alert_json_payload(a);
}

static char *pagerduty_payload(const tw_alert_t *a, const void *ctx)
{
    return tw_pagerduty_event(a, ctx);
}

tw_channel_t tw_notify_kind(tw_channel_kind_t kind)
{
    tw_channel_t c;

    memset(&c, 0, sizeof c);
    switch (kind) {
    case TW_CHANNEL_SLACK:
        c.name = "Slack";
        c.label = "slack";
        c.payload = slack_payload;
        c.digest = tw_digest_slack_payload;
        break;
    case TW_CHANNEL_JSON:
        c.name = "JSON";
        c.label = "webhook";
        c.payload = json_payload;
        c.digest = tw_digest_json_payload;
        break;
    case TW_CHANNEL_PAGERDUTY:
        /* An incident API: no digest. */
        c.name = "PagerDuty";
        c.label = "pagerduty";
        c.payload = pagerduty_payload;
        c.wants = tw_pagerduty_wants;
        break;
    }
    return c;
}

void tw_notify_list_init(tw_notify_list_t *list, tw_metrics_t *metrics,
                         const tw_clock_t *clock)
{
    memset(list, 0, sizeof *list);
    list->metrics = metrics;
    list->clock = clock;
}

static void channel_series(const tw_channel_t *c, char *labels, size_t n)
{
    if (!tw_metrics_label(labels, n, "channel", c->label ? c->label : c->name))
        labels[0] = '\0';
}

tw_channel_t *tw_notify_add(tw_notify_list_t *list, const tw_channel_t *spec)
{
    tw_channel_t *c;
    char labels[TW_METRICS_LABELS_MAX];

    if (list->count == TW_CHANNELS_MAX)
        return NULL;
    c = &list->channels[list->count++];
    *c = *spec;
    c->metrics = list->metrics;
    channel_series(c, labels, sizeof labels);
    tw_metrics_add(c->metrics, CHANNEL_SENT, labels, 0);
    tw_metrics_add(c->metrics, CHANNEL_FAILED, labels, 0);
    tw_metrics_add(c->metrics, CHANNEL_DROPPED, labels, 0);
    return c;
}

void tw_notify_attach(tw_channel_t *channel, tw_webhook_t *sender)
{
    channel->sender = sender;
}

void tw_notify_count(void *ctx, tw_webhook_outcome_t outcome)
{
    static const char *const totals[] = {
        [TW_WEBHOOK_SENT] = "tokenwatch_alerts_sent_total",
        [TW_WEBHOOK_FAILED] = "tokenwatch_alerts_failed_total",
        [TW_WEBHOOK_DROPPED] = "tokenwatch_alerts_dropped_total",
    };
    static const char *const per_channel[] = {
        [TW_WEBHOOK_SENT] = CHANNEL_SENT,
        [TW_WEBHOOK_FAILED] = CHANNEL_FAILED,
        [TW_WEBHOOK_DROPPED] = CHANNEL_DROPPED,
    };
    const tw_channel_t *c = ctx;
    char labels[TW_METRICS_LABELS_MAX];

    channel_series(c, labels, sizeof labels);
    tw_metrics_add(c->metrics, totals[outcome], NULL, 1);
    tw_metrics_add(c->metrics, per_channel[outcome], labels, 1);
}

bool tw_notify_any(const tw_notify_list_t *list)
{
    for (size_t k = 0; list && k < list->count; k++)
        if (list->channels[k].sender)
            return true;
    return false;
}

/* Queues payload (bson_free'd here); NULL is logged and counted. */
static bool queue(const tw_notify_list_t *list, const tw_channel_t *c, char *payload,
                  const char *what, const char *summary)
{
    if (!payload) {
        /* Never skipped in silence: logged and counted. */
        TW_ERROR("the %s %s '%s' could not be built (is some text in it not "
                 "UTF-8?): it is NOT sent; counted in tokenwatch_records_failed_total",
                 c->name, what, summary);
        tw_metrics_add(list->metrics, "tokenwatch_records_failed_total", NULL, 1);
        return false;
    }
    tw_webhook_enqueue(c->sender, payload, summary);
    /* PagerDuty's body holds the routing key. */
    explicit_bzero(payload, strlen(payload));
    bson_free(payload);
    return true;
}

size_t tw_notify(const tw_notify_list_t *list, const tw_alert_t *a, const char *summary)
{
    size_t took = 0;

    for (size_t k = 0; list && k < list->count; k++) {
        const tw_channel_t *c = &list->channels[k];

        if (!c->sender || (c->wants && !c->wants(a)))
            continue;
        if (queue(list, c, c->payload(a, c->ctx), "alert", summary))
            took++;
    }
    return took;
}

size_t tw_notify_digest(const tw_notify_list_t *list, const tw_digest_t *d,
                        const char *summary)
{
    size_t took = 0;

    for (size_t k = 0; list && k < list->count; k++) {
        const tw_channel_t *c = &list->channels[k];

        if (!c->sender || !c->digest)
            continue;
        if (queue(list, c, c->digest(d), "digest", summary))
            took++;
    }
    return took;
}

void tw_notify_stats(const tw_notify_list_t *list, tw_webhook_stats_t *out)
{
    memset(out, 0, sizeof *out);
    for (size_t k = 0; list && k < list->count; k++) {
        tw_webhook_stats_t one;

        tw_webhook_stats(list->channels[k].sender, &one);
        out->sent += one.sent;
        out->failed += one.failed;
        out->dropped += one.dropped;
        out->queued += one.queued;
    }
}

bool tw_notify_flush(const tw_notify_list_t *list, int64_t timeout_ms)
{
    int64_t until;
    bool drained = true;

    if (!list)
        return true;
    until = list->clock ? tw_clock_mono_ms(list->clock) + timeout_ms : 0;
    for (size_t k = 0; k < list->count; k++) {
        int64_t left = list->clock ? until - tw_clock_mono_ms(list->clock) : timeout_ms;

        if (!tw_webhook_flush(list->channels[k].sender, left > 0 ? left : 0))
            drained = false;
    }
    return drained;
}

void tw_notify_stop(tw_notify_list_t *list, int64_t grace_ms)
{
    for (size_t k = 0; list && k < list->count; k++)
        tw_webhook_stop_begin(list->channels[k].sender, grace_ms);
    for (size_t k = 0; list && k < list->count; k++)
        tw_webhook_stop(list->channels[k].sender, grace_ms);
}

void tw_notify_list_release(tw_notify_list_t *list)
{
    for (size_t k = 0; list && k < list->count; k++) {
        tw_webhook_free(list->channels[k].sender);
        list->channels[k].sender = NULL;
    }
    if (list)
        list->count = 0;
}

void tw_notify_declare_metrics(tw_metrics_t *metrics)
{
    static const struct {
        const char *name;
        const char *help;
    } families[] = {
        {CHANNEL_SENT, "Alerts and digests a channel's endpoint accepted."},
        {CHANNEL_FAILED,
         "Alerts and digests a channel's endpoint refused, or given up after retries."},
        {CHANNEL_DROPPED, "Alerts and digests dropped because a channel's queue was full."},
        {"tokenwatch_heartbeats_sent_total", "Heartbeat pings the heartbeat URL accepted."},
        {"tokenwatch_heartbeats_failed_total",
         "Heartbeat pings refused, or given up after retries."},
        {"tokenwatch_heartbeats_dropped_total",
         "Heartbeat pings replaced by a newer one before they could be sent."},
    };

    for (size_t k = 0; k < sizeof families / sizeof families[0]; k++)
        tw_metrics_declare(metrics, families[k].name, TW_METRIC_COUNTER, families[k].help);
    /* The heartbeat has one series each, there from the first scrape. */
    for (size_t k = 3; k < sizeof families / sizeof families[0]; k++)
        tw_metrics_add(metrics, families[k].name, NULL, 0);
}
