/*
 * notify.h - the alert channels of a process, as one list. The follower's
 * own alerts (LOST, "started without a checkpoint") and the guard's go
 * through tw_notify; each channel pairs a payload function (pure: the alert
 * in the channel's format) with the sender that delivers it.
 *
 * Today there is one channel, Slack. A payload that cannot be built is
 * logged and counted in tokenwatch_records_failed_total, never skipped in
 * silence.
 */
#ifndef TOKENWATCH_NOTIFY_H
#define TOKENWATCH_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/alert.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/slack.h"

#define TW_CHANNELS_MAX 4

typedef struct {
    const char *name;                        /* in log lines: "Slack" */
    char *(*payload)(const tw_alert_t *a);   /* bson_free; NULL: cannot be built */
    tw_slack_t *sender;                      /* borrowed: the webhook sender */
} tw_channel_t;

typedef struct {
    tw_channel_t channels[TW_CHANNELS_MAX];
    size_t count;
    tw_metrics_t *metrics; /* borrowed, may be NULL: where failures are counted */
} tw_notify_list_t;

void tw_notify_list_init(tw_notify_list_t *list, tw_metrics_t *metrics);

/* Adds a channel; false when the list is full. A NULL sender adds nothing. */
bool tw_notify_add(tw_notify_list_t *list, const char *name,
                   char *(*payload)(const tw_alert_t *a), tw_slack_t *sender);

/* The list with Slack as its channel when there is a sender (may be NULL). */
void tw_notify_list_slack(tw_notify_list_t *list, tw_metrics_t *metrics, tw_slack_t *slack);

/* Whether any channel is configured. */
bool tw_notify_any(const tw_notify_list_t *list);

/* Queues the alert on every channel, `summary` naming it in the senders'
 * log lines. The number of channels that took it. */
size_t tw_notify(const tw_notify_list_t *list, const tw_alert_t *a, const char *summary);

#endif
