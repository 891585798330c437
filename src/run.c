#include "tokenwatch/run.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tokenwatch/alert.h"
#include "tokenwatch/app.h"
#include "tokenwatch/checkpoint.h"
#include "tokenwatch/duration.h"
#include "tokenwatch/follow.h"
#include "tokenwatch/http.h"
#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/monitor.h"
#include "tokenwatch/notify.h"
#include "tokenwatch/oplog.h"
#include "tokenwatch/recover.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/secret.h"
#include "tokenwatch/retry.h"
#include "tokenwatch/sink.h"
#include "tokenwatch/webhook.h"
#include "tokenwatch/spec.h"
#include "tokenwatch/stop.h"
#include "tokenwatch/store.h"
#include "tokenwatch/utf8.h"

#define RETRY_BASE_MS 250
#define RETRY_CAP_MS 30000
/* After a stop request, how long to keep trying to write the last checkpoint. */
#define FINAL_COMMIT_GRACE_MS 10000
/* ... trying at least this often. */
#define FINAL_RETRY_MS 250
/* A change stream call that has not come back for this long is an outage. */
#define MONGO_SLOW_MS 10000
/* /healthz fails when the loop has not come round for this long. */
#define HEALTH_STALL_MS 60000
/* On the way out, how long queued alerts may take to be delivered. */
#define ALERT_GRACE_MS 3000
/* With --on-token-lost=fail, how long the LOST alert may take before exit 3. */
#define LOST_ALERT_WAIT_MS 10000
/* After a stop request, how long a MongoDB call may keep the loop from
 * stopping by itself before the stop watcher takes over (stop_while_blocked). */
#define STOP_GRACE_MS 1000

/* Redis or MongoDB, as something that can be away for a while. */
typedef struct {
    const char *name;       /* in log lines */
    const char *part;       /* its /readyz part */
    const char *while_away; /* what tokenwatch does meanwhile */
    tw_outage_t outage;
    tw_backoff_t backoff;
} dependency_t;

typedef struct {
    const tw_settings_t *s;
    tw_clock_t *clock;
    volatile sig_atomic_t *stop;
    int64_t stop_seen_ms; /* monotonic; 0 until a stop is seen */

    tw_redis_url_t redis_url;
    redisContext *redis;
    dependency_t redis_dep;

    mongoc_client_pool_t *pool;
    mongoc_client_t *client;
    dependency_t mongo_dep;
    tw_follow_opts_t follow_opts;
    char *scope;

    char checkpoint_key[TW_KEY_MAX];
    char history_key[TW_KEY_MAX];
    char gaps_key[TW_KEY_MAX];
    tw_checkpoint_t committed; /* what Redis holds; has_token false: nothing */
    tw_checkpoint_t position;  /* the newest position handed on */
    bool dirty;                /* position is ahead of committed */
    tw_sink_t sink;
    int64_t events_this_run;
    int64_t events_since_commit;
    int64_t last_commit_mono;

    bool has_until;
    tw_ctime_t until;

    /* A recovery under way (resume-from, fallback): the stream starts at
     * start_override, and the first commit after it moves the checkpoint
     * there, keeps the old one in the history and records the gap. */
    bool recovering;
    char recovery_source[TW_SOURCE_MAX];
    char recovery_reason[TW_SOURCE_MAX]; /* the history entry's reason; "" = the source */
    int commit_code; /* the exit code when commit() failed */
    char *recovery_gap; /* JSON, or NULL */
    bool has_override;
    tw_start_t start_override;
    bson_t override_token;
    bool has_override_token;
    tw_backoff_t lost_backoff;
    unsigned losses; /* resume points lost in a row */
    tw_ctime_t loss_at; /* the position lost last: only moving past it ends a run of losses */
    bool tried_start_after; /* 260 on resumeAfter: startAfter was tried once */
    bool no_start_after;   /* the server does not know startAfter */
    bool told_local_clock; /* said once that the local clock stands in */
    bool until_now;        /* --until now: resolved once connected */
    FILE *plan_out;        /* a dry run prints its probes here */

    /* Metrics, HTTP, alert channels, the guard: all but following (app.h). */
    tw_app_t app;

    /* Held by the main thread except inside MongoDB calls (stop.h). */
    tw_stop_watch_t *watch;
    int exit_code; /* -1 until the run has decided it */
} runner_t;

/* Called from every loop, so it is also where /healthz learns we run (and
 * where the end of a connection flood is noticed). */
static bool stop_requested(runner_t *r)
{
    int64_t now = tw_clock_mono_ms(r->clock);

    tw_metrics_heartbeat(r->app.metrics, now);
    tw_http_tick(r->app.http);
    if (*r->stop && r->stop_seen_ms == 0)
        r->stop_seen_ms = now;
    return *r->stop != 0;
}

/* Sleeps up to ms, waking early on a stop request. */
static void pause_ms(runner_t *r, int64_t ms)
{
    int64_t until = tw_clock_mono_ms(r->clock) + ms;

    while (!stop_requested(r)) {
        int64_t left = until - tw_clock_mono_ms(r->clock);
        struct timespec ts;

        if (left <= 0)
            return;
        if (left > 50)
            left = 50;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)left * 1000000L;
        nanosleep(&ts, NULL);
    }
}

/*
 * The MongoDB calls that can block, each between tw_stop_watch_enter and
 * tw_stop_watch_leave: while one waits, the stop watcher may end the run
 * (stop_while_blocked). Nothing else of the runner is touched inside.
 */
static tw_follow_t *stream_open(runner_t *r, const tw_start_t *start, tw_failure_t *failure,
                                tw_error_t *err)
{
    tw_follow_t *f;

    tw_stop_watch_enter_timed(r->watch);
    f = tw_follow_open(r->client, &r->follow_opts, start, failure, err);
    tw_stop_watch_leave(r->watch);
    return f;
}

static tw_follow_status_t stream_next(runner_t *r, tw_follow_t *f, const bson_t **doc,
                                      tw_failure_t *failure, tw_error_t *err)
{
    tw_follow_status_t status;

    tw_stop_watch_enter_timed(r->watch);
    status = tw_follow_next(f, doc, failure, err);
    tw_stop_watch_leave(r->watch);
    return status;
}

/* Closing sends killCursors and ends the session. */
static void stream_close(runner_t *r, tw_follow_t *f)
{
    tw_stop_watch_enter(r->watch);
    tw_follow_free(f);
    tw_stop_watch_leave(r->watch);
}

static void describe_position(const tw_checkpoint_t *cp, char *out, size_t n)
{
    char ct[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

    tw_ctime_format(cp->cluster_time, ct);
    tw_utc_format(tw_ctime_wall_ms(cp->cluster_time), date);
    snprintf(out, n, "%s (%s)", ct, date);
}

/* Logs an outage once when it starts; later failures only at debug. */
static void dependency_failed(runner_t *r, dependency_t *d, const tw_error_t *err)
{
    tw_metrics_set_ready(r->app.metrics, d->part, false);
    if (tw_outage_fail(&d->outage, tw_clock_mono_ms(r->clock)))
        TW_ERROR("%s unavailable: %s; %s", d->name, err->message, d->while_away);
    else
        TW_DEBUG("%s still unavailable: %s", d->name, err->message);
}

/* And once when it ends. */
static void dependency_ok(runner_t *r, dependency_t *d)
{
    char took[TW_DURATION_TEXT_MAX];
    unsigned failures = d->outage.failures;

    tw_backoff_reset(&d->backoff);
    tw_metrics_set_ready(r->app.metrics, d->part, true);
    if (tw_outage_ok(&d->outage, tw_clock_mono_ms(r->clock))) {
        tw_duration_words(d->outage.ended_after_ms, took);
        TW_INFO("%s available again after %s (%u failed attempts)", d->name, took, failures);
    }
}

static void redis_failed(runner_t *r, const tw_error_t *err)
{
    redisFree(r->redis);
    r->redis = NULL;
    dependency_failed(r, &r->redis_dep, err);
}

static bool redis_connected(runner_t *r, tw_error_t *err)
{
    if (r->redis)
        return true;
    r->redis = tw_redis_connect(&r->redis_url, (int)r->s->redis_timeout_ms, err);
    return r->redis != NULL;
}

/* Waits before the next Redis try; false once a stop makes waiting pointless. */
static bool redis_backoff(runner_t *r, bool final)
{
    int64_t delay = tw_backoff_next(&r->redis_dep.backoff, tw_clock_random01(r->clock));

    if (final) {
        int64_t left = r->stop_seen_ms + FINAL_COMMIT_GRACE_MS -
                       tw_clock_mono_ms(r->clock);
        struct timespec ts;

        if (left <= 0)
            return false;
        /* The last checkpoint goes as soon as Redis is back. */
        if (delay > FINAL_RETRY_MS)
            delay = FINAL_RETRY_MS;
        if (delay > left)
            delay = left;
        ts.tv_sec = delay / 1000;
        ts.tv_nsec = (long)(delay % 1000) * 1000000L;
        nanosleep(&ts, NULL);
        return true;
    }
    pause_ms(r, delay);
    return !stop_requested(r);
}

/*
 * A commit found less in Redis than this process committed there: Redis came
 * back empty, was flushed, or failed over to a replica that was behind. The
 * position held here was written again (a checkpoint never moves back); say
 * what went with it, once per finding.
 */
static void store_lost_commits(runner_t *r, const tw_commit_result_t *res)
{
    char mine[96], held[TW_CTIME_TEXT_MAX], had[96];
    bool behind;

    if (!res->written || !r->committed.has_token)
        return;
    behind = res->has_prior && tw_ctime_cmp(res->prior_time, r->committed.cluster_time) < 0;
    if (!res->stored_absent && !behind)
        return;
    tw_metrics_add(r->app.metrics, "tokenwatch_checkpoints_lost_by_store_total", NULL, 1);
    describe_position(&r->position, mine, sizeof mine);
    describe_position(&r->committed, had, sizeof had);
    if (res->stored_absent) {
        TW_WARN("the checkpoint %s vanished from Redis (restarted empty, flushed, or "
                "failed over to a replica that never had it): written again at %s from "
                "the position held here%s",
                r->checkpoint_key, mine,
                r->s->sink == TW_SINK_REDIS
                    ? "; what the stream held went with it, consumer groups included"
                    : "");
        return;
    }
    tw_ctime_format(res->prior_time, held);
    TW_WARN("the checkpoint %s went back in Redis from %s to %s (a failover to a replica "
            "that was behind, or a restore): written again at %s; it is never followed "
            "from the older one%s",
            r->checkpoint_key, had, held, mine,
            r->s->sink == TW_SINK_REDIS
                ? "; events committed after that time may be missing from the stream"
                : "");
}

/* What the commit script is given: the position, and what goes with it. */
static void commit_request(runner_t *r, tw_commit_t *c)
{
    memset(c, 0, sizeof *c);
    c->checkpoint_key = r->checkpoint_key;
    c->history_key = r->history_key;
    c->gaps_key = r->gaps_key;
    c->record = &r->position;
    if (r->recovering) {
        /* "invalidate" belongs to the token (resume it with startAfter),
         * whatever recovery reached it. */
        if (strcmp(r->position.source, "invalidate") != 0)
            snprintf(r->position.source, sizeof r->position.source, "%s",
                     r->recovery_source);
        c->force = true;
        c->history_reason = r->recovery_reason[0] ? r->recovery_reason : r->recovery_source;
        c->gap_json = r->recovery_gap;
    }
    if (r->s->sink == TW_SINK_REDIS) {
        c->events = &r->sink.batch;
        c->stream_key = r->s->stream_key;
        c->stream_maxlen = r->s->stream_maxlen;
    }
}

/*
 * Sends the commit until it lands. While Redis is away it retries with
 * backoff; after a stop request, for a short grace. A key of the wrong type
 * is no outage: it ends the run at once (exit 2).
 */
static bool commit_send(runner_t *r, const tw_commit_t *c, tw_commit_result_t *result)
{
    tw_error_t err;
    bool final = false;
    char at[96];

    for (;;) {
        if (redis_connected(r, &err) && tw_checkpoint_commit(r->redis, c, result, &err))
            return true;
        if (err.domain == TW_ERR_REDIS && err.code == TW_CHECKPOINT_WRONG_TYPE) {
            /* Not an outage: retrying cannot help, and nothing was written. */
            TW_ERROR("the checkpoint cannot be written: %s. Rename or delete that key "
                     "(is another program using tokenwatch's names?), then start again",
                     err.message);
            r->commit_code = TW_EXIT_USAGE;
            return false;
        }
        redis_failed(r, &err);
        final = final || stop_requested(r);
        if (redis_backoff(r, final))
            continue;
        if (!final) {
            /* The stop came during the wait: now the final grace begins. */
            TW_INFO("stopping: writing the last checkpoint, for up to %d s while Redis "
                    "is away",
                    FINAL_COMMIT_GRACE_MS / 1000);
            final = true;
            continue;
        }
        describe_position(&r->committed, at, sizeof at);
        TW_ERROR("the last checkpoint could not be written (%s); the next start resumes "
                 "from %s and hands on again what came after",
                 err.message, r->committed.has_token ? at : "now");
        return false;
    }
}

/* Says what a commit that landed did. */
static void commit_report(runner_t *r, const tw_commit_result_t *result)
{
    char at[96];

    store_lost_commits(r, result);
    if (result->written)
        tw_metrics_add(r->app.metrics, "tokenwatch_checkpoints_total", NULL, 1);
    if (!result->written) {
        char stored[TW_CTIME_TEXT_MAX];

        describe_position(&r->position, at, sizeof at);
        tw_ctime_format(result->stored_time, stored);
        TW_WARN("checkpoint %s not written: %s already holds %s, further "
                "ahead (is another tokenwatch running with --name %s?)",
                at, r->checkpoint_key, stored, r->s->name);
    } else if (tw_log_enabled(TW_LOG_DEBUG)) {
        describe_position(&r->position, at, sizeof at);
        TW_DEBUG("checkpoint %s source=%s events=%" PRId64 " batch=%zu", at,
                 r->position.source, r->position.events, r->sink.batch.count);
    }
    if (!r->recovering)
        return;
    describe_position(&r->position, at, sizeof at);
    if (r->committed.has_token)
        TW_INFO("%s: checkpoint moved to %s; the previous one is in %s%s%s",
                r->recovery_source, at, r->history_key,
                r->recovery_gap ? ", the gap in " : "", r->recovery_gap ? r->gaps_key : "");
    else
        TW_INFO("%s: first checkpoint written at %s", r->recovery_source, at);
    r->recovering = false;
    r->has_override = false;
    bson_free(r->recovery_gap);
    r->recovery_gap = NULL;
}

/*
 * Writes the position (and, for the redis sink, the events it covers).
 * While Redis is away it takes no further events: commit_send retries until
 * the write lands or a stop request (then for a short grace).
 */
static bool commit(runner_t *r)
{
    tw_error_t err;
    tw_commit_result_t result;
    tw_commit_t c;

    r->commit_code = TW_EXIT_FAILURE;
    if (!r->dirty)
        return true;
    if (!tw_sink_flush(&r->sink, &err)) {
        TW_ERROR("%s", err.message);
        return false;
    }
    r->position.updated_ms = tw_clock_wall_ms(r->clock);
    commit_request(r, &c);
    if (!commit_send(r, &c, &result))
        return false;
    dependency_ok(r, &r->redis_dep);
    commit_report(r, &result);
    tw_event_batch_clear(&r->sink.batch);
    tw_checkpoint_release(&r->committed);
    tw_checkpoint_init(&r->committed);
    tw_checkpoint_copy_position(&r->committed, &r->position);
    memcpy(r->committed.source, r->position.source, sizeof r->committed.source);
    r->committed.events = r->position.events;
    r->dirty = false;
    r->events_since_commit = 0;
    r->last_commit_mono = tw_clock_mono_ms(r->clock);
    return true;
}

/*
 * Can the Redis that holds the checkpoints lose them? Said at every start;
 * in a protected environment it stops the start unless accepted.
 */
static int check_store(runner_t *r)
{
    tw_store_facts_t facts;
    tw_store_risks_t risks;
    tw_error_t err;
    char text[3 * 170];
    bool protected_env = tw_env_protected(r->s->environment, r->s->protect, r->s->protect_count);

    if (!r->redis || !tw_store_probe(r->redis, &facts, &err)) {
        TW_WARN("cannot tell whether Redis keeps its data: %s",
                r->redis ? err.message : "not connected");
        return -1;
    }
    tw_store_assess(&facts, &risks);
    if (risks.note[0])
        TW_WARN("Redis: %s", risks.note);
    if (risks.count == 0)
        return -1;
    tw_store_risks_text(&risks, text, sizeof text);
    if (protected_env && !r->s->accept_store_risk) {
        TW_ERROR("the Redis that holds the checkpoints can lose them: %s. Not starting in "
                 "protected environment %s: fix Redis, or accept it with "
                 "--accept-store-risk",
                 text, r->s->environment);
        return TW_EXIT_USAGE;
    }
    TW_WARN("the Redis that holds the checkpoints can lose them: %s%s", text,
            r->s->accept_store_risk ? " (accepted: --accept-store-risk)" : "");
    return -1;
}

/* Loads the stored checkpoint, waiting out a Redis outage. */
static int load_checkpoint(runner_t *r)
{
    tw_error_t err;
    bool found = false;

    for (;;) {
        if (redis_connected(r, &err)) {
            if (tw_checkpoint_load(r->redis, r->checkpoint_key, &r->committed,
                                   &found, &err))
                break;
            if (tw_checkpoint_unusable(&err) && r->s->resume_from) {
                /* A recovery replaces it: the raw record goes to the history. */
                TW_WARN("the stored checkpoint cannot be used (%s): --resume-from "
                        "replaces it, and the history keeps it as it is",
                        err.message);
                tw_checkpoint_release(&r->committed);
                tw_checkpoint_init(&r->committed);
                break;
            }
            if (tw_checkpoint_unusable(&err)) {
                TW_ERROR("the stored checkpoint cannot be used: %s. Replace it with "
                         "--resume-from SPEC or checkpoint rollback N (the history keeps "
                         "it), or delete the key",
                         err.message);
                return TW_EXIT_USAGE;
            }
        }
        redis_failed(r, &err);
        if (!redis_backoff(r, false))
            return TW_EXIT_OK;
    }
    dependency_ok(r, &r->redis_dep);
    (void)found;
    return -1;
}

/*
 * The deployment's cluster time now: the newest oplog entry, else the
 * operationTime of a ping, else (said once) the local clock.
 */
static tw_ctime_t cluster_now(runner_t *r, const tw_oplog_window_t *readable)
{
    tw_ctime_t now;
    tw_error_t err;
    bool known;

    if (readable)
        return readable->newest;
    tw_stop_watch_enter(r->watch);
    known = tw_follow_cluster_time(r->client, &now, &err);
    tw_stop_watch_leave(r->watch);
    if (known)
        return now;
    if (!r->told_local_clock)
        TW_WARN("the server reports no cluster time (%s): using the local clock "
                "for now",
                err.message);
    r->told_local_clock = true;
    now.t = (uint32_t)(tw_clock_wall_ms(r->clock) / 1000);
    now.i = 0;
    return now;
}

/* The real history window, where the oplog can be read. */
static bool read_oplog(runner_t *r, tw_oplog_window_t *w, tw_error_t *err)
{
    bool ok;

    tw_stop_watch_enter(r->watch);
    ok = tw_oplog_probe(r->client, w, err);
    tw_stop_watch_leave(r->watch);
    return ok;
}

/* The window to show in an alert: the oplog, else --retention as a floor. */
static bool read_window(runner_t *r, tw_oplog_window_t *w, tw_error_t *err)
{
    tw_ctime_t now;

    if (read_oplog(r, w, err))
        return true;
    if (r->s->retention_ms <= 0)
        return false;
    now = cluster_now(r, NULL);
    tw_oplog_from_retention(tw_ctime_wall_ms(now), r->s->retention_ms, w);
    return true;
}

/*
 * A watcher that exits 3 is restarted by its supervisor (a Deployment
 * restarts it for ever): the LOST alert for one checkpoint goes out once per
 * --alert-repeat, not once per restart. Redis remembers which checkpoint was
 * told, until the repeat is due.
 */
/* The key that remembers which lost checkpoint Slack was told of. */
static void lost_alerted_key(const runner_t *r, char key[TW_KEY_MAX], char ct[TW_CTIME_TEXT_MAX])
{
    tw_checkpoint_key(r->s->name, "lost-alerted", key);
    tw_ctime_format(r->committed.cluster_time, ct);
}

static bool lost_already_told(runner_t *r)
{
    char key[TW_KEY_MAX], ct[TW_CTIME_TEXT_MAX];
    redisReply *reply;
    bool told;

    if (!r->redis || !r->committed.has_token)
        return false;
    lost_alerted_key(r, key, ct);
    reply = tw_redis_command(r->redis, NULL, "GET %s", key);
    told = reply && reply->type == REDIS_REPLY_STRING && strcmp(reply->str, ct) == 0;
    freeReplyObject(reply);
    return told;
}

/* Remembered only once Slack took it: a refused alert goes out again at
 * the next start. */
static void lost_told(runner_t *r)
{
    char key[TW_KEY_MAX], ct[TW_CTIME_TEXT_MAX];

    if (!r->redis || !r->committed.has_token)
        return;
    lost_alerted_key(r, key, ct);
    freeReplyObject(tw_redis_command(r->redis, NULL, "SET %s %s PX %lld", key, ct,
                                     (long long)r->s->alert_repeat_ms));
}

/* An alert about the watcher's own checkpoint, as it was last committed. */
static void own_alert(runner_t *r, tw_alert_t *a, tw_state_t state, const char *reason)
{
    memset(a, 0, sizeof *a);
    a->environment = r->s->environment;
    a->name = r->s->name;
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
static void record_failed(runner_t *r, const char *what)
{
    TW_ERROR("%s could not be built (is some text in it not UTF-8?): it is NOT "
             "recorded; counted in tokenwatch_records_failed_total", what);
    tw_metrics_add(r->app.metrics, "tokenwatch_records_failed_total", NULL, 1);
}

/* Queues the alert on every channel; false when none took it. */
static bool enqueue_alert(runner_t *r, const tw_alert_t *a, const char *summary)
{
    return tw_notify(&r->app.notifiers, a, summary) > 0;
}

/* Sends the LOST alert and waits for Slack's answer; true when it took it
 * (no message failed or was dropped meanwhile). */
static bool deliver_lost(runner_t *r, const tw_alert_t *a)
{
    tw_webhook_stats_t before, after;

    tw_notify_stats(&r->app.notifiers, &before);
    if (!enqueue_alert(r, a, "own checkpoint LOST"))
        return false;
    if (!tw_notify_flush(&r->app.notifiers, LOST_ALERT_WAIT_MS)) {
        TW_WARN("the LOST alert could not be delivered within %d s",
                LOST_ALERT_WAIT_MS / 1000);
        return false;
    }
    tw_notify_stats(&r->app.notifiers, &after);
    return after.sent > before.sent && after.failed == before.failed &&
           after.dropped == before.dropped;
}

/* Tells Slack (when there is one) and the log that the own token is lost. */
static void alert_lost(runner_t *r, const tw_oplog_window_t *window, const char *reason,
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
    if (tw_notify_any(&r->app.notifiers) && lost_already_told(r)) {
        TW_INFO("the LOST alert for this checkpoint was sent before this restart; the "
                "next reminder is due after --alert-repeat");
    } else if (tw_notify_any(&r->app.notifiers) && !wait) {
        enqueue_alert(r, &a, "own checkpoint LOST");
    } else if (tw_notify_any(&r->app.notifiers) && deliver_lost(r, &a)) {
        lost_told(r);
    }
}

static int report_lost(runner_t *r, const char *why)
{
    char at[96];
    char *token = r->committed.has_token ? tw_token_to_json(&r->committed.token)
                                         : NULL;

    describe_position(&r->committed, at, sizeof at);
    TW_ERROR("the resume point is lost: %s. The checkpoint %s holds token %s "
             "at cluster time %s, which is no longer in the server's history; "
             "the checkpoint is left as it is. To start again and record what "
             "is skipped: tokenwatch run --name %s --environment %s "
             "--resume-from oldest --dry-run, then the same with --confirm %s "
             "instead of --dry-run; or run with --on-token-lost fallback. To "
             "keep the next token from ageing out, widen the history window: %s.",
             why, r->checkpoint_key, token ? token : "(none)", at, r->s->name,
             r->s->environment, r->s->environment,
             r->s->retention_ms > 0
                 ? "raise the change stream log retention (Amazon DocumentDB: "
                   "change_stream_log_retention_duration, up to 7 days)"
                 : "replSetResizeOplog with minRetentionHours on each member (MongoDB "
                   "4.4+; on Atlas, the cluster's minimum oplog window)");
    bson_free(token);
    return TW_EXIT_LOST;
}

static void clear_override(runner_t *r)
{
    if (r->has_override_token)
        bson_destroy(&r->override_token);
    r->has_override_token = false;
    r->has_override = false;
}

/* Starts a recovery: where to start, and what to record when it lands. */
static void begin_recovery(runner_t *r, const char *source, tw_start_kind_t kind,
                           const bson_t *token, tw_ctime_t at, char *gap_json)
{
    clear_override(r);
    r->has_override = true;
    r->start_override.kind = kind;
    r->start_override.time = at;
    r->start_override.token = NULL;
    if (token) {
        bson_copy_to(token, &r->override_token);
        r->has_override_token = true;
        r->start_override.token = &r->override_token;
    }
    r->recovering = true;
    snprintf(r->recovery_source, sizeof r->recovery_source, "%s", source);
    r->recovery_reason[0] = '\0';
    bson_free(r->recovery_gap);
    r->recovery_gap = gap_json;
    /* The new position is wherever the new stream says: forget the old one,
     * which may be ahead of it. Events already handed on are committed. */
    tw_checkpoint_release(&r->position);
    tw_checkpoint_init(&r->position);
    r->position.events = r->committed.events;
    r->position.scope = tw_strdup(r->scope);
    r->dirty = false;
}

typedef struct {
    tw_start_kind_t kind;
    tw_ctime_t at;
    bson_t token;
    bool has_token;
    bool has_time; /* false for a token of no known layout */
    bool clamped;
    bool window_known; /* the oplog was read */
    bool probed;       /* `oldest` was found by probing */
    tw_oplog_window_t window;
} resolved_start_t;

/*
 * Opens a stream at startAtOperationTime t and closes it: does the server
 * still accept that start? false with err on any other answer.
 */
static bool probe_start(runner_t *r, uint32_t t, bool *accepted, tw_error_t *err)
{
    tw_start_t start = {TW_START_AT_TIME, NULL, {t, 0}};
    tw_failure_t failure;
    tw_follow_t *f = stream_open(r, &start, &failure, err);
    char date[TW_UTC_TEXT_MAX];

    tw_utc_format((int64_t)t * 1000, date);
    *accepted = f != NULL;
    stream_close(r, f);
    if (!*accepted && failure != TW_FAILURE_LOST)
        return false;
    TW_DEBUG("probe: startAtOperationTime %u (%s): %s", t, date,
             *accepted ? "accepted" : "refused");
    if (r->plan_out)
        fprintf(r->plan_out, "probe         startAtOperationTime %u (%s): %s\n", t, date,
                *accepted ? "accepted" : "refused");
    return true;
}

/* How far back a probe for `oldest` looks when nothing was lost. */
#define PROBE_SPAN_S (30 * 86400)

/*
 * The earliest start the server accepts, where its history cannot be read:
 * bisect between `refused` (the lost point, or 30 days back) and now minus
 * --retention (a floor: the server keeps at least that), to one second.
 */
static bool probe_oldest(runner_t *r, const tw_ctime_t *lost, tw_ctime_t now,
                         tw_ctime_t *out, tw_error_t *err)
{
    uint32_t floor_t = now.t - (uint32_t)(r->s->retention_ms / 1000);
    uint32_t refused_t = lost ? lost->t : (now.t > PROBE_SPAN_S ? now.t - PROBE_SPAN_S : 0);
    uint32_t probe;
    tw_bisect_t b;
    bool accepted;

    if (floor_t > now.t || floor_t <= refused_t)
        floor_t = now.t;
    if (!probe_start(r, floor_t, &accepted, err))
        return false;
    if (!accepted && floor_t != now.t) {
        TW_WARN("the server refuses a start at now minus --retention: it keeps less "
                "history than --retention says");
        floor_t = now.t;
    }
    if (!lost) {
        if (!probe_start(r, refused_t, &accepted, err))
            return false;
        if (accepted) {
            *out = (tw_ctime_t){refused_t, 0};
            return true;
        }
    }
    tw_bisect_init(&b, refused_t, floor_t);
    while (tw_bisect_next(&b, &probe)) {
        if (!probe_start(r, probe, &accepted, err))
            return false;
        tw_bisect_answer(&b, probe, accepted);
    }
    TW_INFO("the earliest start the server accepts is %u (to one second, %u probes)",
            b.accepted_t, b.probes);
    *out = (tw_ctime_t){b.accepted_t, 0};
    return true;
}

/*
 * `oldest`: the first oplog entry where it can be read, else found by
 * probing. The window (for the plan and the alert) comes with it.
 */
/* `oldest` where the oplog cannot be read: the earliest start the server
 * accepts, by probing. */
static bool probe_earliest(runner_t *r, tw_ctime_t *out, tw_error_t *err)
{
    tw_ctime_t now = cluster_now(r, NULL);

    return probe_oldest(r, r->committed.has_token && r->committed.time_source != TW_TIME_UNKNOWN
                               ? &r->committed.cluster_time
                               : NULL,
                        now, out, err);
}

/* Gathers what tw_start_resolve needs for this SPEC, and asks it. */
static bool resolve_start(runner_t *r, const char *text, resolved_start_t *out,
                          tw_error_t *err)
{
    tw_spec_t spec;
    tw_error_t werr;
    tw_start_facts_t facts;
    tw_start_choice_t choice;
    bool ok = false;

    memset(out, 0, sizeof *out);
    memset(&facts, 0, sizeof facts);
    if (!tw_spec_parse(text, &spec, err))
        return false;
    out->window_known = read_oplog(r, &out->window, &werr);
    facts.window_known = out->window_known;
    facts.oldest = out->window.oldest;
    if (spec.kind == TW_SPEC_NOW)
        facts.now = cluster_now(r, out->window_known ? &out->window : NULL);
    if (spec.kind == TW_SPEC_OLDEST && !out->window_known) {
        if (!probe_earliest(r, &facts.probed_oldest, err)) {
            tw_error_prefix(err, "cannot find the oldest start the server accepts");
            goto out;
        }
        facts.has_probed_oldest = true;
    }
    if (!tw_start_resolve(&spec, &facts, &choice, err))
        goto out;
    out->kind = choice.resume_after ? TW_START_RESUME_AFTER : TW_START_AT_TIME;
    out->at = choice.at;
    out->has_time = choice.has_time;
    out->clamped = choice.clamped;
    out->probed = choice.probed;
    if (spec.kind == TW_SPEC_TOKEN) {
        bson_copy_to(&spec.token, &out->token);
        out->has_token = true;
    }
    ok = true;
out:
    tw_spec_clear(&spec);
    return ok;
}

static void resolved_release(resolved_start_t *rs)
{
    if (rs->has_token)
        bson_destroy(&rs->token);
    rs->has_token = false;
}

static const char *start_how(const resolved_start_t *rs)
{
    if (rs->kind == TW_START_RESUME_AFTER)
        return "resumeAfter the given token";
    return rs->probed ? "startAtOperationTime, the earliest start the server accepts "
                        "(found by probing, to one second)"
                      : "startAtOperationTime";
}

/*
 * The resume point is gone. `fail`: alert, leave the checkpoint, exit 3.
 * `fallback`: replay from --fallback-from with the gap recorded; returns -1
 * to go on following.
 */
static int handle_lost(runner_t *r, const char *why)
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
    tw_metrics_set_ready(r->app.metrics, "mongo", false);
    if (r->s->on_token_lost == TW_ON_LOST_FAIL) {
        tw_oplog_window_t w;
        bool known = read_window(r, &w, &err);
        alert_lost(r, known ? &w : NULL, why, true);
        return report_lost(r, why);
    }
    if (!resolve_start(r, r->s->fallback_from, &rs, &err)) {
        char fallback_failed[TW_ERROR_MESSAGE_MAX + 64];
        tw_utf8_format(fallback_failed, sizeof fallback_failed, "%s; no fallback: %s", why,
                       err.message);
        alert_lost(r, NULL, fallback_failed, true);
        return report_lost(r, fallback_failed);
    }
    /* A replay that keeps losing its start must not become a storm. */
    if (r->losses > 1)
        pause_ms(r, tw_backoff_next(&r->lost_backoff, tw_clock_random01(r->clock)));
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
    tw_metrics_add(r->app.metrics, "tokenwatch_fallbacks_total", NULL, 1);
    if (r->committed.has_token && skipped_s > 0) {
        gap = tw_gap_json(r->committed.cluster_time, rs.at, why, tw_clock_wall_ms(r->clock));
        if (!gap)
            record_failed(r, "the gap record");
    }
    TW_WARN("fallback: replaying from %s %s; the gap %s..%s %s %s", start_how(&rs), to, from,
            to, gap ? "is recorded in" : "is NOT recorded in", r->gaps_key);
    begin_recovery(r, "fallback", rs.kind, rs.has_token ? &rs.token : NULL, rs.at, gap);
    resolved_release(&rs);
    return -1;
}

/* Sends a WARN about the own checkpoint (when there is a Slack) and logs it. */
static void alert_warn(runner_t *r, const char *reason)
{
    tw_alert_t a;
    char *text;

    own_alert(r, &a, TW_STATE_WARN, reason);
    text = tw_alert_text(&a);
    TW_WARN("alert: %s", text);
    bson_free(text);
    if (tw_notify_any(&r->app.notifiers))
        enqueue_alert(r, &a, "own checkpoint WARN");
}

/*
 * 280: the token is not in this stream's history, though its time may be
 * (another collection's token, a changed filter). Reopen at the token's
 * cluster time: events at that time may come again, none is skipped. If
 * that time is gone too, the open fails as LOST and the policy decides.
 */
static int handle_not_found(runner_t *r, const char *why)
{
    char reason[TW_ERROR_MESSAGE_MAX + 256], at[96];

    if (!r->committed.has_token || r->committed.time_source == TW_TIME_UNKNOWN ||
        r->recovering)
        return handle_lost(r, why);
    describe_position(&r->committed, at, sizeof at);
    tw_utf8_format(reason, sizeof reason,
             "%s; the resume token is not in this stream's history (another "
             "collection's token, or a changed --pipeline). Resuming by time at %s: "
             "events at that time may be handed on again, none is skipped",
             why, at);
    alert_warn(r, reason);
    begin_recovery(r, "by-time", TW_START_AT_TIME, NULL, r->committed.cluster_time, NULL);
    snprintf(r->recovery_reason, sizeof r->recovery_reason, "not-found");
    return -1;
}

/* The server does not know startAfter (Amazon DocumentDB): after an
 * invalidate, start at the time just after it instead. */
static int handle_no_start_after(runner_t *r, const char *why)
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
static int report_too_large(runner_t *r, const char *why)
{
    char at[96];
    char *token = r->committed.has_token ? tw_token_to_json(&r->committed.token) : NULL;

    describe_position(&r->committed, at, sizeof at);
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
static int precheck_lost(runner_t *r)
{
    tw_oplog_window_t w;
    tw_error_t err;
    char why[160], oldest[TW_CTIME_TEXT_MAX];

    if (!r->committed.has_token || r->committed.time_source == TW_TIME_UNKNOWN)
        return -1;
    if (!read_oplog(r, &w, &err)) {
        tw_ctime_t now;

        if (r->s->retention_ms <= 0)
            return -1;
        now = cluster_now(r, NULL);
        if ((int64_t)now.t - (int64_t)r->committed.cluster_time.t > r->s->retention_ms / 1000)
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
    return handle_lost(r, why);
}

/* Connects to the deployment and learns the scope, waiting out outages. */
static int connect_mongo(runner_t *r)
{
    tw_error_t err;
    tw_failure_t failure;

    r->pool = tw_follow_pool_new(r->s->mongo_uri, &err);
    if (!r->pool) {
        TW_ERROR("%s", err.message);
        return TW_EXIT_USAGE;
    }
    r->client = mongoc_client_pool_pop(r->pool);
    for (;;) {
        bool known;

        tw_stop_watch_enter(r->watch);
        known = tw_follow_scope(r->client, &r->follow_opts, &r->scope, &failure, &err);
        tw_stop_watch_leave(r->watch);
        if (known)
            break;
        if (failure != TW_FAILURE_TRANSIENT) {
            TW_ERROR("MongoDB: %s", err.message);
            return TW_EXIT_FAILURE;
        }
        dependency_failed(r, &r->mongo_dep, &err);
        pause_ms(r, tw_backoff_next(&r->mongo_dep.backoff, tw_clock_random01(r->clock)));
        if (stop_requested(r))
            return TW_EXIT_OK;
    }
    dependency_ok(r, &r->mongo_dep);
    return -1;
}

static int check_scope(runner_t *r)
{
    if (!r->committed.has_token)
        return -1;
    if (!r->committed.scope) {
        TW_WARN("the checkpoint %s names no scope (written by hand or by "
                "another tool); using it for %s",
                r->checkpoint_key, r->scope);
        return -1;
    }
    if (strcmp(r->committed.scope, r->scope) != 0 && r->s->resume_from) {
        TW_WARN("the checkpoint %s was written for \"%s\"; --resume-from replaces it "
                "for \"%s\" (the old one goes to %s)",
                r->checkpoint_key, r->committed.scope, r->scope, r->history_key);
        return -1;
    }
    if (strcmp(r->committed.scope, r->scope) != 0) {
        TW_ERROR("the checkpoint %s belongs to another stream: it was written "
                 "for \"%s\", this watcher follows \"%s\". Refusing to resume "
                 "from it: use another --name, or delete the key to start "
                 "from now",
                 r->checkpoint_key, r->committed.scope, r->scope);
        return TW_EXIT_USAGE;
    }
    return -1;
}

/* Takes a new position: a token the stream has passed, at cluster time ct. */
static void advance(runner_t *r, const bson_t *token, tw_ctime_t ct,
                    tw_time_source_t time_source, const char *source,
                    int64_t events_delta)
{
    tw_checkpoint_set_position(&r->position, token, ct, time_source);
    snprintf(r->position.source, sizeof r->position.source, "%s", source);
    r->position.events += events_delta;
    r->dirty = true;
}

static bool past_until(const runner_t *r, tw_ctime_t ct)
{
    return r->has_until && tw_ctime_cmp(ct, r->until) > 0;
}

typedef enum {
    FOLLOW_NEXT,   /* go on with this stream */
    FOLLOW_REOPEN, /* open the stream again from the checkpoint */
    FOLLOW_UNTIL,  /* --until was passed: commit and stop */
    FOLLOW_DONE    /* stop: exit code set */
} follow_outcome_t;

/* Commits what was handed on, or ends the run with exit 1. */
static follow_outcome_t commit_or_done(runner_t *r, follow_outcome_t then, int *code)
{
    if (commit(r))
        return then;
    *code = r->commit_code;
    return FOLLOW_DONE;
}

/* The operationTime of the stream's last reply, or NULL. */
static const tw_ctime_t *reply_time(tw_follow_t *f, tw_ctime_t *buf)
{
    return tw_follow_operation_time(f, buf) ? buf : NULL;
}

/*
 * A run of losses ends only when the stream moves past the position lost
 * last: a replay that hands the same events on and lands in the same loss
 * keeps backing off (1 s, doubling, to 30 s) instead of storming.
 */
static void past_the_loss(runner_t *r, tw_ctime_t at)
{
    if (r->losses == 0 || tw_ctime_cmp(at, r->loss_at) <= 0)
        return;
    r->losses = 0;
    r->tried_start_after = false;
    tw_backoff_reset(&r->lost_backoff);
}

/* One event: hand it on and take its position. */
static follow_outcome_t on_event(runner_t *r, tw_follow_t *f, const bson_t *doc, int *code)
{
    tw_event_t event;
    tw_error_t err;
    tw_ctime_t op;
    bool invalidate;

    dependency_ok(r, &r->mongo_dep);
    if (!tw_event_from_bson(doc, r->s->sink != TW_SINK_NONE, reply_time(f, &op),
                            tw_clock_wall_ms(r->clock), &event, &err)) {
        TW_ERROR("%s", err.message);
        *code = TW_EXIT_FAILURE;
        return FOLLOW_DONE;
    }
    past_the_loss(r, event.cluster_time);
    if (past_until(r, event.cluster_time)) {
        tw_event_release(&event);
        return FOLLOW_UNTIL;
    }
    invalidate = event.invalidate;
    advance(r, event.token, event.cluster_time, event.time_source,
            invalidate ? "invalidate" : "event", 1);
    if (!tw_sink_put(&r->sink, &event, &err)) {
        TW_ERROR("%s", err.message);
        *code = TW_EXIT_FAILURE;
        return FOLLOW_DONE;
    }
    r->events_this_run++;
    r->events_since_commit++;
    tw_metrics_add(r->app.metrics, "tokenwatch_events_total", NULL, 1);
    if (invalidate) {
        TW_WARN("the change stream was invalidated (collection dropped or renamed); "
                "reopening after the invalidate event");
        return commit_or_done(r, FOLLOW_REOPEN, code);
    }
    if (r->s->max_events && r->events_this_run >= r->s->max_events) {
        *code = commit(r) ? TW_EXIT_OK : r->commit_code;
        TW_INFO("stopping after --max-events %" PRId64, r->s->max_events);
        return FOLLOW_DONE;
    }
    if (r->events_since_commit >= r->s->checkpoint_every || tw_event_batch_full(&r->sink.batch))
        return commit_or_done(r, FOLLOW_NEXT, code);
    return FOLLOW_NEXT;
}

/*
 * Is token, at ct, past the position? By time; at the same time by _data
 * within one layout; tokens that cannot be ordered at the same time (two
 * layouts, opaque) are taken when they differ: the server sent the newer.
 */
static bool moves_forward(const runner_t *r, const bson_t *token, tw_ctime_t ct)
{
    const tw_checkpoint_t *p = &r->position;
    int c;

    if (!p->has_token)
        return true;
    c = tw_position_cmp(ct, token, p->cluster_time, &p->token);
    if (c != 0)
        return c > 0;
    return tw_token_layout(token, NULL) != tw_token_layout(&p->token, NULL) ||
           (tw_token_layout(token, NULL) == TW_LAYOUT_OPAQUE && !bson_equal(token, &p->token));
}

/* An empty batch: a quiet stream's postBatchResumeToken still moves. */
static follow_outcome_t on_idle(runner_t *r, tw_follow_t *f, int *code)
{
    const bson_t *token = tw_follow_resume_token(f);
    tw_time_source_t source;
    tw_ctime_t ct, op;

    dependency_ok(r, &r->mongo_dep);
    if (!token || tw_follow_partial(f))
        return FOLLOW_NEXT;
    source = tw_position_time(NULL, token, reply_time(f, &op), tw_clock_wall_ms(r->clock), &ct);
    past_the_loss(r, ct);
    if (!moves_forward(r, token, ct))
        return FOLLOW_NEXT;
    if (past_until(r, ct))
        return FOLLOW_UNTIL;
    advance(r, token, ct, source, "pbrt", 0);
    /* A first start has no checkpoint, a recovery a lost one: take the new
     * one at once. */
    if (!r->committed.has_token || r->recovering)
        return commit_or_done(r, FOLLOW_NEXT, code);
    return FOLLOW_NEXT;
}

/* What a stream's failure means, mid-stream or when it is opened. */
/*
 * 260 on resumeAfter: the token is an invalidate's (a checkpoint written
 * before that was kept with it). Try startAfter once before calling it lost.
 */
static bool invalid_resume_token(runner_t *r, const tw_error_t *err)
{
    if (err->code != 260 || r->tried_start_after || r->has_override ||
        !r->committed.has_token || strcmp(r->committed.source, "invalidate") == 0)
        return false;
    TW_WARN("the server refused resumeAfter with the checkpoint (%s): it is an invalidate "
            "event's token; trying startAfter",
            err->message);
    r->tried_start_after = true;
    snprintf(r->committed.source, sizeof r->committed.source, "invalidate");
    return true;
}

static follow_outcome_t on_failure(runner_t *r, tw_failure_t failure, const tw_error_t *err,
                                   int *code)
{
    switch (failure) {
    case TW_FAILURE_LOST:
        if (commit_or_done(r, FOLLOW_NEXT, code) == FOLLOW_DONE)
            return FOLLOW_DONE;
        if (invalid_resume_token(r, err))
            return FOLLOW_REOPEN;
        *code = handle_lost(r, err->message);
        return *code < 0 ? FOLLOW_REOPEN : FOLLOW_DONE;
    case TW_FAILURE_NOT_FOUND:
        if (commit_or_done(r, FOLLOW_NEXT, code) == FOLLOW_DONE)
            return FOLLOW_DONE;
        *code = handle_not_found(r, err->message);
        return *code < 0 ? FOLLOW_REOPEN : FOLLOW_DONE;
    case TW_FAILURE_NO_START_AFTER:
        *code = handle_no_start_after(r, err->message);
        return *code < 0 ? FOLLOW_REOPEN : FOLLOW_DONE;
    case TW_FAILURE_TOO_LARGE:
        commit(r);
        *code = report_too_large(r, err->message);
        return FOLLOW_DONE;
    case TW_FAILURE_FATAL:
        commit(r);
        TW_ERROR("MongoDB: %s", err->message);
        *code = TW_EXIT_FAILURE;
        return FOLLOW_DONE;
    case TW_FAILURE_NONE:
    case TW_FAILURE_TRANSIENT:
        break;
    }
    dependency_failed(r, &r->mongo_dep, err);
    /* Resume from what is persisted: persist what was handed on. */
    return commit_or_done(r, FOLLOW_REOPEN, code);
}

static void stopped_at_until(runner_t *r, int *code)
{
    char until[TW_CTIME_TEXT_MAX];

    tw_ctime_format(r->until, until);
    *code = commit(r) ? TW_EXIT_OK : r->commit_code;
    TW_INFO("stopping: the stream passed --until %s after %" PRId64 " events", until,
            r->events_this_run);
}

/* Follows one opened stream until it must be reopened or the run ends. */
static follow_outcome_t follow_stream(runner_t *r, tw_follow_t *f, int *code)
{
    for (;;) {
        const bson_t *doc = NULL;
        follow_outcome_t next;
        tw_failure_t failure;
        tw_error_t err;

        if (stop_requested(r)) {
            *code = commit(r) ? TW_EXIT_OK : r->commit_code;
            TW_INFO("stopping on request after %" PRId64 " events", r->events_this_run);
            return FOLLOW_DONE;
        }
        switch (stream_next(r, f, &doc, &failure, &err)) {
        case TW_FOLLOW_EVENT: next = on_event(r, f, doc, code); break;
        case TW_FOLLOW_IDLE: next = on_idle(r, f, code); break;
        default: next = on_failure(r, failure, &err, code); break;
        }
        if (next == FOLLOW_UNTIL) {
            stopped_at_until(r, code);
            return FOLLOW_DONE;
        }
        if (next != FOLLOW_NEXT)
            return next;
        if (r->dirty &&
            tw_clock_mono_ms(r->clock) - r->last_commit_mono >= r->s->checkpoint_interval_ms &&
            commit_or_done(r, FOLLOW_NEXT, code) == FOLLOW_DONE)
            return FOLLOW_DONE;
    }
}

static void log_start(const runner_t *r)
{
    char at[96];

    if (!r->committed.has_token) {
        TW_INFO("following %s from now: no checkpoint at %s yet", r->scope,
                r->checkpoint_key);
        return;
    }
    describe_position(&r->committed, at, sizeof at);
    TW_INFO("following %s from checkpoint %s (%s after %s, %" PRId64
            " events so far)",
            r->scope, r->checkpoint_key,
            strcmp(r->committed.source, "invalidate") == 0 ? "startAfter"
                                                           : "resumeAfter",
            at, r->committed.events);
}

/* The time just after t: where a stream starts to see only what follows. */
static tw_ctime_t just_after(tw_ctime_t t)
{
    if (t.i < UINT32_MAX)
        return (tw_ctime_t){t.t, t.i + 1};
    return (tw_ctime_t){t.t + 1, 0};
}

/* Where the next stream starts: a recovery's start, the checkpoint, or now. */
static tw_start_t choose_start(const runner_t *r)
{
    tw_start_t start = {TW_START_NOW, NULL, {0, 0}};

    if (r->has_override)
        return r->start_override;
    if (!r->committed.has_token)
        return start;
    start.token = &r->committed.token;
    start.kind = TW_START_RESUME_AFTER;
    if (strcmp(r->committed.source, "invalidate") == 0) {
        start.kind = TW_START_START_AFTER;
        /* A server without startAfter: just after the invalidate's time. */
        if (r->no_start_after) {
            start.kind = TW_START_AT_TIME;
            start.token = NULL;
            start.time = just_after(r->committed.cluster_time);
        }
    }
    return start;
}

static int follow_loop(runner_t *r)
{
    tw_error_t err;
    tw_failure_t failure;

    for (;;) {
        tw_start_t start = choose_start(r);
        tw_follow_t *f;
        int code = TW_EXIT_OK;

        if (stop_requested(r)) {
            int code_at_stop = commit(r) ? TW_EXIT_OK : r->commit_code;

            TW_INFO("stopping on request after %" PRId64 " events (the stream was not "
                    "open)",
                    r->events_this_run);
            return code_at_stop;
        }
        tw_metrics_add(r->app.metrics, "tokenwatch_resume_attempts_total", NULL, 1);
        f = stream_open(r, &start, &failure, &err);
        if (!f) {
            if (on_failure(r, failure, &err, &code) == FOLLOW_DONE)
                return code;
            if (failure == TW_FAILURE_TRANSIENT || failure == TW_FAILURE_NONE)
                pause_ms(r, tw_backoff_next(&r->mongo_dep.backoff,
                                            tw_clock_random01(r->clock)));
            continue;
        }
        dependency_ok(r, &r->mongo_dep);
        if (follow_stream(r, f, &code) == FOLLOW_DONE) {
            r->exit_code = code;
            stream_close(r, f);
            return code;
        }
        stream_close(r, f);
        if (r->mongo_dep.outage.down)
            pause_ms(r, tw_backoff_next(&r->mongo_dep.backoff,
                                        tw_clock_random01(r->clock)));
    }
}

static bool setup(runner_t *r, const tw_settings_t *s, tw_clock_t *clock,
                  volatile sig_atomic_t *stop, FILE *out, tw_error_t *err)
{
    memset(r, 0, sizeof *r);
    r->exit_code = -1;
    r->s = s;
    r->clock = clock;
    r->stop = stop;
    r->redis_dep.name = "Redis";
    r->redis_dep.part = "redis";
    r->redis_dep.while_away = "holding events and retrying with backoff";
    tw_backoff_init(&r->redis_dep.backoff, RETRY_BASE_MS, RETRY_CAP_MS);
    r->mongo_dep.name = "MongoDB";
    r->mongo_dep.part = "mongo";
    r->mongo_dep.while_away = "reconnecting with backoff and resuming from the last checkpoint";
    tw_backoff_init(&r->mongo_dep.backoff, RETRY_BASE_MS, RETRY_CAP_MS);
    tw_backoff_init(&r->lost_backoff, RETRY_BASE_MS * 4, RETRY_CAP_MS);
    tw_checkpoint_key(s->name, "checkpoint", r->checkpoint_key);
    tw_checkpoint_key(s->name, "history", r->history_key);
    tw_checkpoint_key(s->name, "gaps", r->gaps_key);
    tw_sink_init(&r->sink, (tw_sink_kind_t)s->sink, out);
    r->follow_opts.db = s->db;
    r->follow_opts.collection = s->collection;
    r->follow_opts.pipeline = s->pipeline;
    r->follow_opts.full_document = s->full_document;
    r->follow_opts.split_large_events = s->split_large_events;
    /* A quiet stream still returns this often, to checkpoint and to stop. */
    r->follow_opts.max_await_ms =
        s->checkpoint_interval_ms < 1000 ? s->checkpoint_interval_ms : 1000;
    if (s->until) {
        tw_spec_t spec;
        if (!tw_spec_parse(s->until, &spec, err))
            return false;
        r->has_until = true;
        r->until = spec.time;
        /* The deployment's "now", read once connected. */
        r->until_now = spec.kind == TW_SPEC_NOW;
        tw_spec_clear(&spec);
    }
    if (!tw_redis_url_load(s->redis_url, s->redis_password, &r->redis_url, err))
        return false;
    r->last_commit_mono = tw_clock_mono_ms(clock);
    return true;
}

/* The metrics endpoint and the alert channels: up before following starts. */
static bool start_app(runner_t *r, tw_error_t *err)
{
    tw_app_opts_t opts;

    tw_app_opts_from_settings(r->s, r->clock, &opts);
    opts.health_stall_ms = HEALTH_STALL_MS;
    return tw_app_start(&r->app, &opts, err);
}

static bool start_monitor(runner_t *r, tw_error_t *err)
{
    tw_monitor_opts_t opts;

    tw_monitor_opts_from_settings(r->s, &opts);
    opts.pool = r->pool;
    opts.redis_url = &r->redis_url;
    opts.unknown_after = TW_GUARD_UNKNOWN_AFTER;
    opts.own_missing_is_unknown = false;
    opts.alerts = true;
    return tw_app_start_guard(&r->app, &opts, err);
}

/*
 * Stopping within a second (issue 9). A stop request is seen by the loop
 * between calls; but a MongoDB call cannot be interrupted, and may keep it
 * from seeing the request for as long as the call waits (a stalled reply:
 * up to socketTimeoutMS, 300 s; an outage: the server selection timeout,
 * several times over; a getMore hung up again and again: for ever, since
 * libmongoc resumes inside one mongoc_change_stream_next). So the main
 * thread holds the stop watcher's lock (stop.h) except inside those calls
 * (stream_open, stream_next, stream_close, read_oplog, cluster_now,
 * connect_mongo, and the guard and pool in teardown). The watcher logs
 * "stop requested: stopping" within 50 ms of the signal; when the main
 * thread is still inside a MongoDB call STOP_GRACE_MS later, the watcher
 * takes the lock, and with it the runner, and calls stop_while_blocked.
 *
 * Guaranteed: every stop ends within about STOP_GRACE_MS plus the final
 * commit (which, as on the main path, retries for up to 10 s while Redis is
 * away), with the exit code of the main path: 0 once the last checkpoint of
 * what was handed on is written, else 1 with a message saying why not.
 * Queued alerts keep their ALERT_GRACE_MS. A stop the loop sees by itself
 * in time goes the normal way: nothing changes there.
 */
static void alerts_grace(runner_t *r)
{
    tw_app_flush_alerts(&r->app, ALERT_GRACE_MS);
}

/*
 * The watcher's way out, on its thread, with the lock: the main thread is
 * inside a MongoDB call and cannot touch the runner (nor its Redis
 * connection) until the process ends. The last checkpoint goes through the
 * normal commit, unless the run has already decided its exit code (it is
 * waiting in teardown). libmongoc is in use on the main thread, so no
 * cleanup runs: flush, then _exit.
 */
static void stop_while_blocked(void *ctx)
{
    runner_t *r = ctx;
    int code = r->exit_code;

    stop_requested(r);
    if (code < 0) {
        TW_WARN("stopping: a MongoDB call has not come back %d ms after the stop request; "
                "writing the last checkpoint without waiting for it",
                STOP_GRACE_MS);
        code = commit(r) ? TW_EXIT_OK : r->commit_code;
        TW_INFO("stopping on request after %" PRId64 " events", r->events_this_run);
    } else {
        TW_INFO("stopping: not waiting for the MongoDB calls still under way");
    }
    alerts_grace(r);
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

/*
 * The stream's call has not come back for MONGO_SLOW_MS (it awaits at most a
 * second): libmongoc may be resuming inside it for as long as the server
 * hangs up, and would say nothing. An outage like any other: one line, not
 * ready, and "available again" once an answer comes. On the watcher's thread,
 * with the runner's lock: the owner is inside the call.
 */
static void stream_slow(void *ctx, int64_t blocked_ms)
{
    runner_t *r = ctx;
    char took[TW_DURATION_TEXT_MAX];
    tw_error_t err;

    tw_duration_words(blocked_ms, took);
    tw_error_set(&err, TW_ERR_MONGO, 0, "no answer to the change stream for %s", took);
    dependency_failed(r, &r->mongo_dep, &err);
}

static bool start_watch(runner_t *r, tw_error_t *err)
{
    tw_stop_watch_opts_t opts;

    memset(&opts, 0, sizeof opts);
    opts.stop = r->stop;
    opts.grace_ms = STOP_GRACE_MS;
    opts.notice = "stop requested: stopping";
    opts.take_over = stop_while_blocked;
    opts.ctx = r;
    opts.slow_ms = MONGO_SLOW_MS;
    opts.on_slow = stream_slow;
    r->watch = tw_stop_watch_start(&opts, err);
    return r->watch != NULL;
}

static void teardown(runner_t *r)
{
    /* The guard first: it holds a client of the pool and may be alerting.
     * It and the pool may wait on MongoDB: the watcher can end the run
     * meanwhile, with the exit code already decided. */
    tw_stop_watch_enter(r->watch);
    tw_app_stop_guard(&r->app);
    if (r->client)
        mongoc_client_pool_push(r->pool, r->client);
    mongoc_client_pool_destroy(r->pool);
    tw_stop_watch_leave(r->watch);
    tw_stop_watch_free(r->watch);
    tw_app_stop(&r->app, ALERT_GRACE_MS);
    tw_app_free(&r->app);
    redisFree(r->redis);
    tw_redis_url_release(&r->redis_url);
    tw_checkpoint_release(&r->committed);
    tw_checkpoint_release(&r->position);
    tw_sink_release(&r->sink);
    free(r->scope);
    clear_override(r);
    bson_free(r->recovery_gap);
}

/*
 * --resume-from: plan the move, print it for --dry-run, or start it. The
 * checkpoint moves at the first token after the new start, with the old one
 * kept in the history and a skipped stretch recorded as a gap.
 */
static int resume_from(runner_t *r, FILE *out)
{
    resolved_start_t rs;
    tw_plan_t plan;
    tw_error_t err;
    int64_t delta;

    if (strcasecmp(r->s->resume_from, "checkpoint") == 0) {
        TW_INFO("--resume-from checkpoint: the normal start");
        return -1;
    }
    if (!r->s->dry_run &&
        !tw_recover_confirmed(r->s->environment, r->s->protect, r->s->protect_count,
                              r->s->confirm, &err)) {
        TW_ERROR("%s", err.message);
        return TW_EXIT_USAGE;
    }
    if (r->s->dry_run)
        r->plan_out = out;
    if (!resolve_start(r, r->s->resume_from, &rs, &err)) {
        TW_ERROR("--resume-from: %s", err.message);
        return TW_EXIT_USAGE;
    }
    memset(&plan, 0, sizeof plan);
    /* A token of no known layout has no time to measure a gap by. */
    plan.has_current = r->committed.has_token && rs.has_time &&
                       r->committed.time_source != TW_TIME_UNKNOWN;
    plan.current = r->committed.cluster_time;
    plan.start = rs.at;
    plan.start_how = start_how(&rs);
    plan.window_known = rs.window_known;
    plan.oldest = rs.window.oldest;
    plan.clamped = rs.clamped;
    delta = tw_plan_delta_s(&plan);
    if (r->s->dry_run) {
        tw_plan_print(&plan, r->s->name, "resume-from", out);
        fprintf(out, "nothing was changed (--dry-run)\n");
        fflush(out);
        resolved_release(&rs);
        return TW_EXIT_OK;
    }
    if (rs.clamped) {
        char asked[TW_UTC_TEXT_MAX];
        tw_utc_format(tw_ctime_wall_ms(rs.window.oldest), asked);
        TW_WARN("--resume-from %s is older than the oldest oplog entry: starting at the "
                "oldest entry (%s) instead",
                r->s->resume_from, asked);
    }
    {
        char from[96], to[TW_CTIME_TEXT_MAX];
        describe_position(&r->committed, from, sizeof from);
        tw_ctime_format(rs.at, to);
        TW_WARN("resume-from: moving %s from %s to %s (%s)%s", r->checkpoint_key,
                r->committed.has_token ? from : "nothing", to, start_how(&rs),
                delta > 0 ? "; the skipped stretch is recorded as a gap" : "");
    }
    begin_recovery(r, "resume-from", rs.kind, rs.has_token ? &rs.token : NULL, rs.at,
                   plan.has_current && delta > 0
                       ? tw_gap_json(r->committed.cluster_time, rs.at, "resume-from",
                                     tw_clock_wall_ms(r->clock))
                       : NULL);
    resolved_release(&rs);
    return -1;
}

/*
 * No checkpoint where one was expected (a new deployment, or a store that
 * lost it): never a silent start from now. --on-missing-checkpoint says
 * what to do; by default fail in a protected environment, now elsewhere
 * (with a WARN and one alert).
 */
static int missing_checkpoint(runner_t *r)
{
    const tw_settings_t *s = r->s;
    const char *policy = tw_missing_checkpoint_policy(s->on_missing_checkpoint, s->environment,
                                                      s->protect, s->protect_count);
    resolved_start_t rs;
    tw_error_t err;
    char why[TW_KEY_MAX + 160];

    snprintf(why, sizeof why,
             "no checkpoint at %s (a new deployment, a Redis that lost its data, or "
             "another --name or database)",
             r->checkpoint_key);
    if (strcmp(policy, "fail") == 0) {
        TW_ERROR("%s: not starting from now on its own in environment %s. To start on "
                 "purpose: --on-missing-checkpoint now|oldest|SPEC, or --resume-from "
                 "SPEC --confirm %s",
                 why, s->environment, s->environment);
        return TW_EXIT_USAGE;
    }
    if (strcmp(policy, "now") == 0) {
        TW_WARN("%s: starting from now; whatever was written before is not handed on "
                "(--on-missing-checkpoint)",
                why);
        alert_warn(r, "started without a checkpoint: following from now; whatever was "
                      "written before the start is not handed on");
        return -1;
    }
    if (!resolve_start(r, policy, &rs, &err)) {
        TW_ERROR("--on-missing-checkpoint %s: %s", policy, err.message);
        return TW_EXIT_USAGE;
    }
    TW_WARN("%s: starting from %s (%s), as --on-missing-checkpoint says", why, policy,
            start_how(&rs));
    begin_recovery(r, "resume-from", rs.kind, rs.has_token ? &rs.token : NULL, rs.at, NULL);
    resolved_release(&rs);
    return -1;
}

/* From the stored checkpoint to the start point; -1: go on and follow. */
static int prepare(runner_t *r, FILE *out)
{
    int code;
    tw_error_t err;

    if ((code = load_checkpoint(r)) >= 0 || (code = check_store(r)) >= 0 ||
        (code = connect_mongo(r)) >= 0 || (code = check_scope(r)) >= 0)
        return code;
    if (r->until_now) {
        tw_oplog_window_t w;
        bool readable = read_oplog(r, &w, &err);

        r->until = cluster_now(r, readable ? &w : NULL);
        r->until.i = UINT32_MAX;
    }
    if (r->s->resume_from)
        code = resume_from(r, out);
    else if (!r->committed.has_token)
        code = missing_checkpoint(r);
    else
        code = precheck_lost(r);
    if (code >= 0)
        return code;
    if (!start_monitor(r, &err)) {
        TW_ERROR("%s", err.message);
        return TW_EXIT_FAILURE;
    }
    if (r->committed.has_token && !r->recovering) {
        tw_checkpoint_copy_position(&r->position, &r->committed);
        memcpy(r->position.source, r->committed.source, sizeof r->position.source);
        r->position.events = r->committed.events;
    }
    if (!r->position.scope)
        r->position.scope = tw_strdup(r->scope);
    return -1;
}

int tw_run(const tw_settings_t *settings, tw_clock_t *clock,
           volatile sig_atomic_t *stop, FILE *out)
{
    runner_t r;
    tw_error_t err;
    int code = TW_EXIT_USAGE;
    char redacted[512];

    if (!setup(&r, settings, clock, stop, out, &err)) {
        TW_ERROR("%s", err.message);
        goto out;
    }
    if (settings->dry_run && !settings->resume_from) {
        TW_ERROR("--dry-run goes with --resume-from (or checkpoint rollback)");
        goto out;
    }
    code = TW_EXIT_FAILURE;
    if (!start_watch(&r, &err)) {
        TW_ERROR("%s", err.message);
        goto out;
    }
    /* A dry run only reads: no metrics port, no alerts, no guard. */
    if (!settings->dry_run && !start_app(&r, &err)) {
        TW_ERROR("%s", err.message);
        goto out;
    }
    if (settings->dry_run)
        r.app.metrics = tw_metrics_new();
    tw_redact_url(settings->redis_url, redacted, sizeof redacted);
    TW_INFO("starting: checkpoints in %s at %s, sink %s", redacted,
            r.checkpoint_key, tw_sink_kind_name((tw_sink_kind_t)settings->sink));
    if ((code = prepare(&r, out)) >= 0)
        goto out;
    log_start(&r);
    code = follow_loop(&r);
out:
    r.exit_code = code;
    teardown(&r);
    return code;
}
