/*
 * notify.h - the alert channels of a process, as one list. The follower's
 * own alerts (LOST, "started without a checkpoint") and the guard's go
 * through tw_notify, the daily digest through tw_notify_digest; each
 * channel pairs payload functions (pure: the alert or the digest in the
 * channel's format) with the sender that delivers it, a tw_webhook_t of its
 * own, so one dead channel never delays another.
 *
 * The kinds (tw_notify_kind): Slack (Block Kit), a generic JSON webhook
 * (the object of tw_alert_json_payload) and PagerDuty Events v2 (no
 * digest: it is an incident API). A payload that cannot be built is logged
 * and counted in tokenwatch_records_failed_total, never skipped in silence.
 *
 * Metrics: what each sender reports is counted in the totals
 * (tokenwatch_alerts_{sent,failed,dropped}_total) and per channel
 * (tokenwatch_channel_{sent,failed,dropped}_total{channel="slack"}).
 */
#ifndef TOKENWATCH_NOTIFY_H
#define TOKENWATCH_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/alert.h"
#include "tokenwatch/clock.h"
#include "tokenwatch/digest.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/webhook.h"

#define TW_CHANNELS_MAX 4

typedef enum {
    TW_CHANNEL_SLACK = 0,
    TW_CHANNEL_JSON,
    TW_CHANNEL_PAGERDUTY
} tw_channel_kind_t;

typedef struct {
    const char *name;  /* in log lines: "Slack" */
    const char *label; /* the `channel` label of its metrics: "slack" */
    /* The alert in the channel's format (bson_free); NULL: it cannot be
     * built. ctx is the channel's. */
    char *(*payload)(const tw_alert_t *a, const void *ctx);
    /* Whether the channel takes this alert at all; NULL: every one. */
    bool (*wants)(const tw_alert_t *a);
    /* The digest in the channel's format (bson_free; NULL: cannot be
     * built); NULL here: the channel takes no digest. */
    char *(*digest)(const tw_digest_t *d);
    const void *ctx;        /* borrowed (PagerDuty: the routing key) */
    tw_webhook_t *sender;   /* owned by the list once attached; NULL: none yet */
    tw_metrics_t *metrics;  /* the list's, for tw_notify_count */
} tw_channel_t;

typedef struct {
    tw_channel_t channels[TW_CHANNELS_MAX];
    size_t count;
    tw_metrics_t *metrics;    /* borrowed, may be NULL: where outcomes are counted */
    const tw_clock_t *clock;  /* borrowed, may be NULL: shares a flush's time */
} tw_notify_list_t;

void tw_notify_list_init(tw_notify_list_t *list, tw_metrics_t *metrics,
                         const tw_clock_t *clock);

/* The name, label and payload functions of a kind (ctx and sender NULL). */
tw_channel_t tw_notify_kind(tw_channel_kind_t kind);

/*
 * Adds a copy of spec and returns its slot (NULL when the list is full);
 * the channel takes alerts once its sender is attached. Start the sender
 * with on_result = tw_notify_count and ctx = the slot, then attach it.
 * Series of the channel's metrics are created at 0.
 */
tw_channel_t *tw_notify_add(tw_notify_list_t *list, const tw_channel_t *spec);
void tw_notify_attach(tw_channel_t *channel, tw_webhook_t *sender);

/* A tw_webhook_opts_t.on_result: counts the outcome for the channel ctx. */
void tw_notify_count(void *ctx, tw_webhook_outcome_t outcome);

/* Whether any channel has a sender. NULL is none. */
bool tw_notify_any(const tw_notify_list_t *list);

/* Queues the alert on every channel that wants it, `summary` naming it in
 * the senders' log lines. The number of channels that took it. */
size_t tw_notify(const tw_notify_list_t *list, const tw_alert_t *a, const char *summary);

/* Queues the digest on every channel that takes one; how many took it. */
size_t tw_notify_digest(const tw_notify_list_t *list, const tw_digest_t *d,
                        const char *summary);

/* The senders' counters, summed. */
void tw_notify_stats(const tw_notify_list_t *list, tw_webhook_stats_t *out);

/* Waits up to timeout_ms in all (not each) until every channel drained;
 * false when one did not. */
bool tw_notify_flush(const tw_notify_list_t *list, int64_t timeout_ms);

/* Stops every sender, all within one grace_ms (see tw_webhook_stop). */
void tw_notify_stop(tw_notify_list_t *list, int64_t grace_ms);

/* Frees the senders (stopping what still runs); the list is empty after. */
void tw_notify_list_release(tw_notify_list_t *list);

/* Declares the families of the outbound channels (per channel, heartbeat)
 * beside tw_monitor_declare_metrics' own. */
void tw_notify_declare_metrics(tw_metrics_t *metrics);

#endif
