/*
 * pagerduty.h - an alert as a PagerDuty Events API v2 event. Pure: values
 * in, JSON out; the sender (webhook.h) posts it to --pagerduty-url.
 *
 * The mapping (README, "PagerDuty"): WARN, CRIT, LOST and UNKNOWN trigger
 * (severity warning, critical, critical, error); back to OK resolves. Every
 * event of one guarded key carries the same dedup_key, so a resolve closes
 * the alert its triggers opened and repeats add to it; another key, stream
 * or environment has another dedup_key. The follower's notices (reopened
 * by time, started without a checkpoint) are not incidents and are not
 * sent. PagerDuty takes no digest.
 *
 * The routing key is a secret: it is only ever in the body, which no log
 * line, error or metric shows (the sender scrubs it from replies too).
 */
#ifndef TOKENWATCH_PAGERDUTY_H
#define TOKENWATCH_PAGERDUTY_H

#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/alert.h"

#define TW_PAGERDUTY_URL "https://events.pagerduty.com/v2/enqueue"
/* The Events API's limits on dedup_key and payload.summary, in characters;
 * tokenwatch keeps to them in bytes, which is stricter. */
#define TW_PAGERDUTY_DEDUP_MAX 255
#define TW_PAGERDUTY_SUMMARY_MAX 1024

/* Whether the alert is an event for PagerDuty (not a notice). */
bool tw_pagerduty_wants(const tw_alert_t *a);

/* "trigger" or "resolve". */
const char *tw_pagerduty_action(const tw_alert_t *a);

/* "warning", "critical", "error" or "info" (OK). */
const char *tw_pagerduty_severity(tw_state_t state);

/*
 * "tokenwatch/ENV/NAME/KEY", the same for every event of a guarded key. One
 * longer than TW_PAGERDUTY_DEDUP_MAX bytes keeps its first 200 bytes (never
 * cut inside a character), then "…" and 16 hex digits of a hash of the
 * whole, so each key keeps its own. out holds TW_PAGERDUTY_DEDUP_MAX + 1.
 */
void tw_pagerduty_dedup_key(const tw_alert_t *a, char *out);

/*
 * The event (bson_free): routing_key, event_action, dedup_key, and for a
 * trigger payload {summary (the alert's plain text, cut to 1024 bytes on a
 * character boundary), source (ENV/NAME), severity, timestamp, component
 * (the key), group (ENV), class "resume token", custom_details (the
 * generic JSON object)} and client "tokenwatch"; a resolve carries only
 * the first three. Values from outside are made valid UTF-8 (U+FFFD). NULL
 * when it cannot be built.
 */
char *tw_pagerduty_event(const tw_alert_t *a, const char *routing_key);

#endif
