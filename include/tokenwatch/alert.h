/*
 * alert.h - what an alert says. Pure: values in, text out.
 *
 * Each message names the environment, the stream and key, the state, the
 * token's time (UTC), the window and the time left in words; for WARN,
 * CRIT and LOST the exact command that recovers, and how to widen the
 * window. The Slack payload is Block Kit with a plain `text` fallback; the
 * same text (escaped for Slack, see below) is what the log shows.
 */
#ifndef TOKENWATCH_ALERT_H
#define TOKENWATCH_ALERT_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/guard.h"
#include "tokenwatch/oplog.h"
#include "tokenwatch/shards.h"
#include "tokenwatch/token.h"

/* A shard name escaped for Slack is at most 5 times as long ("&amp;"). */
#define TW_ALERT_SHARD_TEXT_MAX (5 * TW_SHARD_NAME_MAX + 48)

typedef struct {
    const char *environment;
    const char *name; /* the stream */
    const char *key;
    bool own; /* the watcher's own checkpoint (recoverable by tokenwatch) */
    tw_state_t state;
    tw_state_t previous;
    tw_notify_t notify;
    bool has_token;
    tw_ctime_t token;
    bool has_measure;
    tw_measure_t measure;
    tw_oplog_window_t window;
    const char *edge_shard; /* the shard whose window it is, or NULL */
    size_t shard_count;
    const char *reason; /* why UNKNOWN, or what happened (may be NULL) */
    int64_t now_ms;     /* wall clock, to say when a token will be lost */
} tw_alert_t;

/*
 * Every value from outside (environment, name, key, reason, edge_shard) is
 * escaped as Slack's formatting rules require (tw_alert_escape), in the text
 * and in every block, so that a key or a server message holding "<!channel>"
 * or "<https://evil|click>" is shown, not acted on; the markup tokenwatch
 * writes itself (*bold*, `code`, :emoji:) is kept.
 */

/* value with &, < and > as &amp;, &lt; and &gt;, and bytes that are not
 * UTF-8 as U+FFFD (bson_free; NULL for NULL). */
char *tw_alert_escape(const char *value);

/* value with bytes that are not UTF-8 as U+FFFD, nothing escaped (bson_free;
 * NULL for NULL): for channels that are not Slack. */
char *tw_alert_clean(const char *value);

/* One line for the log and Slack's fallback, escaped (bson_free). */
char *tw_alert_text(const tw_alert_t *a);

/* The incoming-webhook payload, JSON (bson_free). */
char *tw_alert_slack_payload(const tw_alert_t *a);

/* The same line with values from outside made valid UTF-8 (U+FFFD for bad
 * bytes) but not escaped for Slack: for channels that show plain text. */
char *tw_alert_plain_text(const tw_alert_t *a);

/*
 * The generic JSON webhook's object (README, "The generic JSON webhook"):
 * kind "alert", time, environment, stream, key, own, state,
 * previous_state, event (change, repeat, resolved), token_time,
 * token_cluster_time, window_seconds, headroom_seconds, share,
 * window_source, time_left_seconds, time_left_unbounded, lost_around,
 * shard, reason, advice, commands {recover, widen}, widen_note, text.
 * Values unknown are null; strings are valid UTF-8, not escaped for Slack.
 * tw_alert_json_fields appends them to doc (PagerDuty's custom_details);
 * tw_alert_json_payload is the object as JSON (bson_free; NULL: it cannot
 * be built).
 */
void tw_alert_json_fields(const tw_alert_t *a, bson_t *doc);
char *tw_alert_json_payload(const tw_alert_t *a);

/* "change", "repeat" or "resolved": what a->notify says. */
const char *tw_alert_event_name(const tw_alert_t *a);

/* The follower telling of its own checkpoint (reopened by time, started
 * without a checkpoint): a WARN whose reason says it all, nothing ageing. */
bool tw_alert_is_notice(const tw_alert_t *a);

/* What to do before the token is lost, in words, or NULL (bson_free). */
char *tw_alert_advice(const tw_alert_t *a);

/* The exact command that recovers a lost token, or NULL when there is no
 * tokenwatch command for it (bson_free). */
char *tw_alert_recovery(const tw_alert_t *a);

/* The command that widens the window, or NULL where there is none to type
 * (bson_free); tw_alert_widen_note says where to run it or what to change. */
char *tw_alert_widen_command(const tw_alert_t *a);
const char *tw_alert_widen_note(const tw_alert_t *a);

#endif
