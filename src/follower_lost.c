/*
 * follower_lost.c - a resume point the server no longer has, or never had:
 * the LOST alert (once per --alert-repeat across restarts), exit 3 or the
 * fallback replay with its gap, a token of another stream (280), a server
 * without startAfter, an event over 16 MB.
 */
#include "follower_int.h"

#include <stdlib.h>
#include <string.h>

#include "tokenwatch/alert.h"
#include "tokenwatch/duration.h"
#include "tokenwatch/log.h"
#include "tokenwatch/recover.h"
#include "tokenwatch/run.h"
#include "tokenwatch/utf8.h"

/* The window to show in an alert: the oplog, else --retention as a floor. */
static bool read_window(tw_follower_t *r, tw_oplog_window_t *w, tw_error_t *err)
{
    tw_ctime_t now;

    if (tw__read_oplog(r, w, err))
        return true;
    if (r->opts.retention_ms <= 0)
        return false;
    now = tw__cluster_now(r, NULL);
    tw_oplog_from_retention(tw_ctime_wall_ms(now), r->opts.retention_ms, w);
    return true;
}

/* An alert about the watcher's own checkpoint, as it was last committed. */
static void own_alert(tw_follower_t *r, tw_alert_t *a, tw_state_t state, const char *reason)
{
    memset(a, 0, sizeof *a);
    a->environment = r->opts.environment;
    a->name = r->opts.name;
    a->key = r->checkpoint_key;
    a->own = true;
    a->state = state;
    a->notify = TW_NOTIFY_CHANGE;
    a->has_token = r->committed.has_token;
    a->token = r->committed.cluster_time;
    a->reason = reason;
    a->now_ms = tw_clock_wall_ms(r->clock);
}

/* A record that could not be built is an error, logged and counted, never
 * skipped in silence. */
static void record_failed(tw_follower_t *r, const char *what)
{
    TW_ERROR("%s could not be built (is some text in it not UTF-8?): it is NOT "
             "recorded; counted in tokenwatch_records_failed_total", what);
    tw_metrics_add(r->svc.metrics, "tokenwatch_records_failed_total", NULL, 1);
}

/* Queues the alert on every channel; false when none took it. */
static bool enqueue_alert(tw_follower_t *r, const tw_alert_t *a, const char *summary)
{
    return tw_notify(r->svc.notifiers, a, summary) > 0;
}

/* Waits up to TW__LOST_ALERT_WAIT_MS for the channels to take what is
 * queued; a stop request ends the wait (the alert grace of the way out
 * still gives the alert its chance). */
static bool flush_unless_stopped(tw_follower_t *r)
{
    int64_t until = tw_clock_mono_ms(r->clock) + TW__LOST_ALERT_WAIT_MS;

    for (;;) {
        int64_t left = until - tw_clock_mono_ms(r->clock);

        if (tw_notify_flush(r->svc.notifiers, left < 100 ? left : 100))
            return true;
        if (tw__stop_requested(r)) {
            TW_WARN("stopping: not waiting for the LOST alert to be delivered; it is "
                    "sent again at the next start");
            return false;
        }
        if (left <= 100) {
            TW_WARN("the LOST alert could not be delivered within %d s",
                    TW__LOST_ALERT_WAIT_MS / 1000);
            return false;
        }
    }
}

/* Sends the LOST alert and waits for the channels' answers; true when they took it
 * (no message failed or was dropped meanwhile). */
static bool deliver_lost(tw_follower_t *r, const tw_alert_t *a)
{
    tw_webhook_stats_t before, after;

    tw_notify_stats(r->svc.notifiers, &before);
    if (!enqueue_alert(r, a, "own checkpoint LOST"))
        return false;
    if (!flush_unless_stopped(r))
        return false;
    tw_notify_stats(r->svc.notifiers, &after);
    return after.sent > before.sent && after.failed == before.failed &&
           after.dropped == before.dropped;
}

/* Tells the channels (when there are any) and the log that the own token is lost. */
static void alert_lost(tw_follower_t *r, const tw_oplog_window_t *window, const char *reason,
                       bool wait)
{
    tw_alert_t a;
    char *text;

    own_alert(r, &a, TW_STATE_LOST, reason);
    if (window)
        a.window = *window;
    text = tw_alert_text(&a);
    TW_ERROR("alert: %s", text);
    bson_free(text);
    if (tw_notify_any(r->svc.notifiers) && tw__lost_already_told(r)) {
        TW_INFO("the LOST alert for this checkpoint was sent before this restart; the "
                "next reminder is due after --alert-repeat");
    } else if (tw_notify_any(r->svc.notifiers) && !wait) {
        enqueue_alert(r, &a, "own checkpoint LOST");
    } else if (tw_notify_any(r->svc.notifiers) && deliver_lost(r, &a)) {
        tw__lost_told(r);
    }
}

static int report_lost(tw_follower_t *r, const char *why)
{
    char at[96];
    char *token = r->committed.has_token ? tw_token_to_json(&r->committed.token)
                                         : NULL;

    tw__describe_position(&r->committed, at, sizeof at);
    TW_ERROR("the resume point is lost: %s. The checkpoint %s holds token %s "
             "at cluster time %s, which is no longer in the server's history; "
             "the checkpoint is left as it is. To start again and record what "
             "is skipped: tokenwatch run --name %s --environment %s "
             "--resume-from oldest --dry-run, then the same with --confirm %s "
             "instead of --dry-run; or run with --on-token-lost fallback. To "
             "keep the next token from ageing out, widen the history window: %s.",
             why, r->checkpoint_key, token ? token : "(none)", at, r->opts.name,
             r->opts.environment, r->opts.environment,
             r->opts.retention_ms > 0
                 ? "raise the change stream log retention (Amazon DocumentDB: "
                   "change_stream_log_retention_duration, up to 7 days)"
                 : "replSetResizeOplog with minRetentionHours on each member (MongoDB "
                   "4.4+; on Atlas, the cluster's minimum oplog window)");
    bson_free(token);
    return TW_EXIT_LOST;
}

/*
 * The resume point is gone. `fail`: alert, leave the checkpoint, exit 3.
 * `fallback`: replay from --fallback-from with the gap recorded; returns -1
 * to go on following.
 */
int tw__handle_lost(tw_follower_t *r, const char *why)
{
    resolved_start_t rs;
    tw_error_t err;
    char reason[TW_ERROR_MESSAGE_MAX + 160], skipped[TW_DURATION_TEXT_MAX];
    char from[TW_CTIME_TEXT_MAX], to[TW_CTIME_TEXT_MAX], to_date[TW_UTC_TEXT_MAX];
    char *gap = NULL;
    int64_t skipped_s;

    r->losses++;
    if (r->committed.has_token && tw_ctime_cmp(r->committed.cluster_time, r->loss_at) > 0)
        r->loss_at = r->committed.cluster_time;
    tw_metrics_set_ready(r->svc.metrics, "mongo", false);
    if (r->opts.on_token_lost == TW_ON_LOST_FAIL) {
        tw_oplog_window_t w;
        bool known = read_window(r, &w, &err);
        alert_lost(r, known ? &w : NULL, why, true);
        return report_lost(r, why);
    }
    if (!tw__resolve_start(r, r->opts.fallback_from, &rs, &err)) {
        char fallback_failed[TW_ERROR_MESSAGE_MAX + 64];
        tw_utf8_format(fallback_failed, sizeof fallback_failed, "%s; no fallback: %s", why,
                       err.message);
        alert_lost(r, NULL, fallback_failed, true);
        return report_lost(r, fallback_failed);
    }
    /* A replay that keeps losing its start must not become a storm. */
    if (r->losses > 1)
        tw__pause_ms(r, tw_backoff_next(&r->lost_backoff, tw_clock_random01(r->clock)));
    skipped_s = r->committed.has_token && rs.has_time &&
                        r->committed.time_source != TW_TIME_UNKNOWN
                    ? (int64_t)rs.at.t - (int64_t)r->committed.cluster_time.t
                    : 0;
    tw_duration_words(skipped_s > 0 ? skipped_s * 1000 : 0, skipped);
    tw_ctime_format(r->committed.cluster_time, from);
    tw_ctime_format(rs.at, to);
    tw_utc_format(tw_ctime_wall_ms(rs.at), to_date);
    tw_utf8_format(reason, sizeof reason, "%s; replayed from %s (%s)%s; %s of history skipped",
             why, to, to_date,
             rs.clamped  ? ", the oldest entry, since --fallback-from is older"
             : rs.probed ? ", the earliest start the server accepts (found by probing)"
                         : "",
             skipped);
    alert_lost(r, rs.window_known ? &rs.window : NULL, reason, false);
    tw_metrics_add(r->svc.metrics, "tokenwatch_fallbacks_total", NULL, 1);
    if (r->committed.has_token && skipped_s > 0) {
        gap = tw_gap_json(r->committed.cluster_time, rs.at, why, tw_clock_wall_ms(r->clock));
        if (!gap)
            record_failed(r, "the gap record");
    }
    TW_WARN("fallback: replaying from %s %s; the gap %s..%s %s %s", tw__start_how(&rs), to, from,
            to, gap ? "is recorded in" : "is NOT recorded in", r->gaps_key);
    tw__begin_recovery(r, "fallback", rs.kind, rs.has_token ? &rs.token : NULL, rs.at, gap);
    tw__resolved_release(&rs);
    return -1;
}

/* Sends a WARN about the own checkpoint (to the channels, if any) and logs it. */
void tw__alert_warn(tw_follower_t *r, const char *reason)
{
    tw_alert_t a;
    char *text;

    own_alert(r, &a, TW_STATE_WARN, reason);
    text = tw_alert_text(&a);
    TW_WARN("alert: %s", text);
    bson_free(text);
    if (tw_notify_any(r->svc.notifiers))
        enqueue_alert(r, &a, "own checkpoint WARN");
}

/*
 * 280: the token is not in this stream's history, though its time may be
 * (another collection's token, a changed filter). Reopen at the token's
 * cluster time: events at that time may come again, none is skipped. If
 * that time is gone too, the open fails as LOST and the policy decides.
 */
int tw__handle_not_found(tw_follower_t *r, const char *why)
{
    char reason[TW_ERROR_MESSAGE_MAX + 256], at[96];

    if (!r->committed.has_token || r->committed.time_source == TW_TIME_UNKNOWN ||
        r->recovering)
        return tw__handle_lost(r, why);
    tw__describe_position(&r->committed, at, sizeof at);
    tw_utf8_format(reason, sizeof reason,
             "%s; the resume token is not in this stream's history (another "
             "collection's token, or a changed --pipeline). Resuming by time at %s: "
             "events at that time may be handed on again, none is skipped",
             why, at);
    tw__alert_warn(r, reason);
    tw__begin_recovery(r, "by-time", TW_START_AT_TIME, NULL, r->committed.cluster_time, NULL);
    snprintf(r->recovery_reason, sizeof r->recovery_reason, "not-found");
    return -1;
}

/* The server does not know startAfter (Amazon DocumentDB): after an
 * invalidate, start at the time just after it instead. */
int tw__handle_no_start_after(tw_follower_t *r, const char *why)
{
    if (r->no_start_after || !r->committed.has_token) {
        TW_ERROR("MongoDB: %s", why);
        return TW_EXIT_FAILURE;
    }
    r->no_start_after = true;
    TW_WARN("the server does not support startAfter (%s): reopening after the "
            "invalidate with startAtOperationTime instead",
            why);
    return -1;
}

/* 10334: an event over 16 MB. Every resume from here fails the same way, so
 * stop and say both ways out, rather than retry. */
int tw__report_too_large(tw_follower_t *r, const char *why)
{
    char at[96];
    char *token = r->committed.has_token ? tw_token_to_json(&r->committed.token) : NULL;

    tw__describe_position(&r->committed, at, sizeof at);
    TW_ERROR("an event after token %s (%s) is larger than 16 MB and the server cannot "
             "send it: %s. Every resume from this token fails the same way, so "
             "tokenwatch stops instead of retrying. Either %s, or leave the large "
             "fields out with --pipeline, e.g. '[{\"$project\": "
             "{\"fullDocumentBeforeChange\": 0, \"updateDescription\": 0}}]'; then start "
             "again from the same checkpoint",
             token ? token : "(none)", at, why,
             r->follow_opts.split_large_events
                 ? "--split-large-events is on, so a single field is over 16 MB: "
                   "project it away"
                 : "run with --split-large-events (MongoDB 6.0.9+ and 7.0+: the event "
                   "arrives in fragments and is handed on whole)");
    bson_free(token);
    return TW_EXIT_FAILURE;
}

/*
 * Before any resume is tried: is the stored token older than the oplog?
 * Only a readable oplog proves it: --retention is a floor (the server may
 * keep more), so a checkpoint older than it is tried, not given up.
 */
int tw__precheck_lost(tw_follower_t *r)
{
    tw_oplog_window_t w;
    tw_error_t err;
    char why[160], oldest[TW_CTIME_TEXT_MAX];

    if (!r->committed.has_token || r->committed.time_source == TW_TIME_UNKNOWN)
        return -1;
    if (!tw__read_oplog(r, &w, &err)) {
        tw_ctime_t now;

        if (r->opts.retention_ms <= 0)
            return -1;
        now = tw__cluster_now(r, NULL);
        if ((int64_t)now.t - (int64_t)r->committed.cluster_time.t > r->opts.retention_ms / 1000)
            TW_INFO("the checkpoint is older than --retention; trying to resume all the "
                    "same: the retention is a floor, and only the server's answer "
                    "proves a loss");
        return -1;
    }
    if (tw_ctime_cmp(r->committed.cluster_time, w.oldest) >= 0)
        return -1;
    tw_ctime_format(w.oldest, oldest);
    snprintf(why, sizeof why, "the checkpoint is older than the oldest oplog entry (%s)",
             oldest);
    return tw__handle_lost(r, why);
}
