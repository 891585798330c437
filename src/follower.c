/*
 * follower.c - the stream loop: open where the position says, hand each
 * event on, take the position of quiet batches, sort failures, commit.
 */
#include "follower_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/duration.h"
#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/run.h"
#include "tokenwatch/spec.h"

/* The events counted since the last time, into tokenwatch_events_total:
 * at each commit and when the stream is quiet, not per event (a lock). */
void tw__tell_events(tw_follower_t *r)
{
    if (r->events_untold == 0)
        return;
    tw_metrics_add(r->svc.metrics, "tokenwatch_events_total", NULL, (double)r->events_untold);
    r->events_untold = 0;
}

/* Called from every loop, so it is also where /healthz learns we run (and
 * where the end of a connection flood is noticed). */
bool tw__stop_requested_at(tw_follower_t *r, int64_t now)
{
    /* Not each event: a lock each; /healthz needs a beat a minute. */
    if (r->svc.on_loop && (!r->loop_told || now - r->loop_told_ms >= TW__LOOP_TELL_MS ||
                           now < r->loop_told_ms)) {
        r->loop_told = true;
        r->loop_told_ms = now;
        r->svc.on_loop(r->svc.ctx, now);
    }
    if (*r->svc.stop && r->stop_seen_ms == 0)
        r->stop_seen_ms = now;
    return *r->svc.stop != 0;
}

bool tw__stop_requested(tw_follower_t *r)
{
    return tw__stop_requested_at(r, tw_clock_mono_ms(r->clock));
}

/* Sleeps up to ms, waking early on a stop request. */
void tw__pause_ms(tw_follower_t *r, int64_t ms)
{
    int64_t until = tw_clock_mono_ms(r->clock) + ms;

    while (!tw__stop_requested(r)) {
        int64_t left = until - tw_clock_mono_ms(r->clock);

        if (left <= 0)
            return;
        tw_clock_sleep_ms(r->clock, left > 50 ? 50 : left);
    }
}

/*
 * The MongoDB calls that can block, each between tw_stop_watch_enter and
 * tw_stop_watch_leave: while one waits, the stop watcher may end the run
 * (stop_while_blocked). Nothing else of the runner is touched inside.
 */
tw_follow_t *tw__stream_open(tw_follower_t *r, const tw_start_t *start, tw_failure_t *failure,
                             tw_error_t *err)
{
    tw_follow_t *f;

    tw_stop_watch_enter_timed(r->svc.watch);
    f = tw_follow_open(r->client, &r->follow_opts, start, failure, err);
    tw_stop_watch_leave(r->svc.watch);
    return f;
}

static tw_follow_status_t stream_next(tw_follower_t *r, tw_follow_t *f, const bson_t **doc,
                                      tw_failure_t *failure, tw_error_t *err)
{
    tw_follow_status_t status;

    tw_stop_watch_enter_timed(r->svc.watch);
    status = tw_follow_next(f, doc, failure, err);
    tw_stop_watch_leave(r->svc.watch);
    return status;
}

/* Closing sends killCursors and ends the session. */
void tw__stream_close(tw_follower_t *r, tw_follow_t *f)
{
    tw_stop_watch_enter(r->svc.watch);
    tw_follow_free(f);
    tw_stop_watch_leave(r->svc.watch);
}

void tw__describe_position(const tw_checkpoint_t *cp, char *out, size_t n)
{
    char ct[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

    tw_ctime_format(cp->cluster_time, ct);
    tw_utc_format(tw_ctime_wall_ms(cp->cluster_time), date);
    snprintf(out, n, "%s (%s)", ct, date);
}

/* Logs an outage once when it starts; later failures only at debug. */
void tw__dependency_failed(tw_follower_t *r, dependency_t *d, const tw_error_t *err)
{
    tw_metrics_set_ready(r->svc.metrics, d->part, false);
    d->ready_told = false;
    if (tw_outage_fail(&d->outage, tw_clock_mono_ms(r->clock)))
        TW_ERROR("%s unavailable: %s; %s", d->name, err->message, d->while_away);
    else
        TW_DEBUG("%s still unavailable: %s", d->name, err->message);
}

/* And once when it ends. */
void tw__dependency_ok(tw_follower_t *r, dependency_t *d)
{
    char took[TW_DURATION_TEXT_MAX];
    unsigned failures = d->outage.failures;

    /* The common case, once per event: nothing changes. */
    if (d->ready_told && !d->outage.down && failures == 0)
        return;
    tw_backoff_reset(&d->backoff);
    tw_metrics_set_ready(r->svc.metrics, d->part, true);
    d->ready_told = true;
    if (tw_outage_ok(&d->outage, tw_clock_mono_ms(r->clock))) {
        /* Redis is back, perhaps as another node (a failover to a replica
         * that was behind): the position is committed again, which says
         * what went missing and never lets the checkpoint stay behind. */
        if (d == &r->redis_dep && r->committed.has_token)
            r->dirty = true;
        tw_duration_words(d->outage.ended_after_ms, took);
        TW_INFO("%s available again after %s (%u failed attempts)", d->name, took, failures);
    }
}

/* Connects to the deployment and learns the scope, waiting out outages. */
static int connect_mongo(tw_follower_t *r)
{
    tw_error_t err;
    tw_failure_t failure;

    r->pool = tw_follow_pool_new(r->opts.mongo_uri, &err);
    if (!r->pool) {
        TW_ERROR("%s", err.message);
        return TW_EXIT_USAGE;
    }
    r->client = mongoc_client_pool_pop(r->pool);
    for (;;) {
        bool known;

        tw_stop_watch_enter(r->svc.watch);
        known = tw_follow_scope(r->client, &r->follow_opts, &r->scope, &failure, &err);
        tw_stop_watch_leave(r->svc.watch);
        if (known)
            break;
        if (failure != TW_FAILURE_TRANSIENT) {
            TW_ERROR("MongoDB: %s", err.message);
            return TW_EXIT_FAILURE;
        }
        tw__dependency_failed(r, &r->mongo_dep, &err);
        tw__pause_ms(r, tw_backoff_next(&r->mongo_dep.backoff, tw_clock_random01(r->clock)));
        if (tw__stop_requested(r))
            return TW_EXIT_OK;
    }
    tw__dependency_ok(r, &r->mongo_dep);
    return -1;
}

static int check_scope(tw_follower_t *r)
{
    if (!r->committed.has_token)
        return -1;
    if (!r->committed.scope) {
        TW_WARN("the checkpoint %s names no scope (written by hand or by "
                "another tool); using it for %s",
                r->checkpoint_key, r->scope);
        return -1;
    }
    if (strcmp(r->committed.scope, r->scope) != 0 && r->opts.resume_from) {
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
static void advance(tw_follower_t *r, const bson_t *token, tw_ctime_t ct,
                    tw_time_source_t time_source, const char *source,
                    int64_t events_delta)
{
    size_t len = strlen(source);

    tw_checkpoint_set_position(&r->position, token, ct, time_source);
    if (len >= sizeof r->position.source)
        len = sizeof r->position.source - 1;
    memcpy(r->position.source, source, len);
    r->position.source[len] = '\0';
    r->position.events += events_delta;
    r->dirty = true;
}

static bool past_until(const tw_follower_t *r, tw_ctime_t ct)
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
static follow_outcome_t commit_or_done(tw_follower_t *r, follow_outcome_t then, int *code)
{
    if (tw__commit(r))
        return then;
    *code = r->commit_code;
    return FOLLOW_DONE;
}

/* The same while events flow: following goes on while Redis runs it. */
static follow_outcome_t commit_pipelined_or_done(tw_follower_t *r, int *code)
{
    if (tw__commit_pipelined(r))
        return FOLLOW_NEXT;
    *code = r->commit_code;
    return FOLLOW_DONE;
}

/* The commit under way answered before anything else, or the run ends. */
static bool finish_or_done(tw_follower_t *r, int *code)
{
    if (tw__commit_finish(r))
        return true;
    *code = r->commit_code;
    return false;
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
static void past_the_loss(tw_follower_t *r, tw_ctime_t at)
{
    if (r->losses == 0 || tw_ctime_cmp(at, r->loss_at) <= 0)
        return;
    r->losses = 0;
    r->tried_start_after = false;
    tw_backoff_reset(&r->lost_backoff);
}

/* An event without a time of its own (no clusterTime, an opaque token):
 * the reply's operationTime, else the local clock. */
static void event_time_fallback(tw_follower_t *r, tw_follow_t *f, tw_event_t *event)
{
    tw_ctime_t op;

    if (event->time_source == TW_TIME_UNKNOWN)
        event->time_source = tw_position_time(NULL, NULL, reply_time(f, &op),
                                              tw_clock_wall_ms(r->clock), &event->cluster_time);
}

/* One event: hand it on and take its position. */
static follow_outcome_t on_event(tw_follower_t *r, tw_follow_t *f, const bson_t *doc, int *code)
{
    tw_event_t event;
    tw_error_t err;
    bson_t token; /* a view into doc */
    bool invalidate;

    tw__dependency_ok(r, &r->mongo_dep);
    if (!tw_event_from_bson(doc, tw_sink_event_json(r->sink), &event, &token, &err)) {
        TW_ERROR("%s", err.message);
        *code = TW_EXIT_FAILURE;
        return FOLLOW_DONE;
    }
    event_time_fallback(r, f, &event);
    past_the_loss(r, event.cluster_time);
    if (past_until(r, event.cluster_time)) {
        tw_event_release(&event);
        return FOLLOW_UNTIL;
    }
    invalidate = event.invalidate;
    advance(r, &token, event.cluster_time, event.time_source,
            invalidate ? "invalidate" : "event", 1);
    tw_sink_put(r->sink, &event);
    r->events_this_run++;
    r->events_since_commit++;
    r->events_untold++;
    if (invalidate) {
        TW_WARN("the change stream was invalidated (collection dropped or renamed); "
                "reopening after the invalidate event");
        return commit_or_done(r, FOLLOW_REOPEN, code);
    }
    if (r->opts.max_events && r->events_this_run >= r->opts.max_events) {
        *code = tw__commit(r) ? TW_EXIT_OK : r->commit_code;
        TW_INFO("stopping after --max-events %" PRId64, r->opts.max_events);
        return FOLLOW_DONE;
    }
    if (r->events_since_commit >= r->opts.checkpoint_every || tw_sink_full(r->sink))
        return commit_pipelined_or_done(r, code);
    return FOLLOW_NEXT;
}

/*
 * Is token, at ct, past the position? By time; at the same time by _data
 * within one layout; tokens that cannot be ordered at the same time (two
 * layouts, opaque) are taken when they differ: the server sent the newer.
 */
static bool moves_forward(const tw_follower_t *r, const bson_t *token, tw_ctime_t ct)
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
static follow_outcome_t on_idle(tw_follower_t *r, tw_follow_t *f, int *code)
{
    const bson_t *token = tw_follow_resume_token(f);
    tw_time_source_t source;
    tw_ctime_t ct, op;

    tw__dependency_ok(r, &r->mongo_dep);
    tw__tell_events(r);
    if (!finish_or_done(r, code))
        return FOLLOW_DONE;
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
static bool invalid_resume_token(tw_follower_t *r, const tw_error_t *err)
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

static follow_outcome_t on_failure(tw_follower_t *r, tw_failure_t failure, const tw_error_t *err,
                                   int *code)
{
    if (!finish_or_done(r, code))
        return FOLLOW_DONE;
    switch (failure) {
    case TW_FAILURE_LOST:
        if (commit_or_done(r, FOLLOW_NEXT, code) == FOLLOW_DONE)
            return FOLLOW_DONE;
        if (invalid_resume_token(r, err))
            return FOLLOW_REOPEN;
        *code = tw__handle_lost(r, err->message);
        return *code < 0 ? FOLLOW_REOPEN : FOLLOW_DONE;
    case TW_FAILURE_NOT_FOUND:
        if (commit_or_done(r, FOLLOW_NEXT, code) == FOLLOW_DONE)
            return FOLLOW_DONE;
        *code = tw__handle_not_found(r, err->message);
        return *code < 0 ? FOLLOW_REOPEN : FOLLOW_DONE;
    case TW_FAILURE_NO_START_AFTER:
        *code = tw__handle_no_start_after(r, err->message);
        return *code < 0 ? FOLLOW_REOPEN : FOLLOW_DONE;
    case TW_FAILURE_TOO_LARGE:
        tw__commit(r);
        *code = tw__report_too_large(r, err->message);
        return FOLLOW_DONE;
    case TW_FAILURE_FATAL:
        tw__commit(r);
        TW_ERROR("MongoDB: %s", err->message);
        *code = TW_EXIT_FAILURE;
        return FOLLOW_DONE;
    case TW_FAILURE_NONE:
    case TW_FAILURE_TRANSIENT:
        break;
    }
    tw__dependency_failed(r, &r->mongo_dep, err);
    /* Resume from what is persisted: persist what was handed on. */
    return commit_or_done(r, FOLLOW_REOPEN, code);
}

static void stopped_at_until(tw_follower_t *r, int *code)
{
    char until[TW_CTIME_TEXT_MAX];

    tw_ctime_format(r->until, until);
    *code = tw__commit(r) ? TW_EXIT_OK : r->commit_code;
    TW_INFO("stopping: the stream passed --until %s after %" PRId64 " events", until,
            r->events_this_run);
}

/* Follows one opened stream until it must be reopened or the run ends. */
static follow_outcome_t follow_stream(tw_follower_t *r, tw_follow_t *f, int *code)
{
    /* One clock read per event: after the call that may wait, and the
     * handling that may commit, so it is fresh for the next round. */
    int64_t now = tw_clock_mono_ms(r->clock);

    for (;;) {
        const bson_t *doc = NULL;
        follow_outcome_t next;
        tw_failure_t failure;
        tw_error_t err;

        if (tw__stop_requested_at(r, now)) {
            *code = tw__commit(r) ? TW_EXIT_OK : r->commit_code;
            TW_INFO("stopping on request after %" PRId64 " events", r->events_this_run);
            return FOLLOW_DONE;
        }
        if ((*code = tw__lease_keep(r, now)) >= 0)
            return FOLLOW_DONE;
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
        now = tw_clock_mono_ms(r->clock);
        if (r->dirty && now - r->last_commit_mono >= r->opts.checkpoint_interval_ms &&
            commit_pipelined_or_done(r, code) == FOLLOW_DONE)
            return FOLLOW_DONE;
    }
}

static void log_start(const tw_follower_t *r)
{
    char at[96];

    if (!r->committed.has_token) {
        TW_INFO("following %s from now: no checkpoint at %s yet", r->scope,
                r->checkpoint_key);
        return;
    }
    tw__describe_position(&r->committed, at, sizeof at);
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
static tw_start_t choose_start(const tw_follower_t *r)
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

int tw_follower_follow(tw_follower_t *r)
{
    tw_error_t err;
    tw_failure_t failure;

    log_start(r);
    for (;;) {
        tw_start_t start = choose_start(r);
        tw_follow_t *f;
        int code = TW_EXIT_OK;

        if (tw__stop_requested(r)) {
            int code_at_stop = tw__commit(r) ? TW_EXIT_OK : r->commit_code;

            TW_INFO("stopping on request after %" PRId64 " events (the stream was not "
                    "open)",
                    r->events_this_run);
            return code_at_stop;
        }
        if ((code = tw__lease_keep(r, tw_clock_mono_ms(r->clock))) >= 0)
            return code;
        tw_metrics_add(r->svc.metrics, "tokenwatch_resume_attempts_total", NULL, 1);
        f = tw__stream_open(r, &start, &failure, &err);
        if (!f) {
            if (on_failure(r, failure, &err, &code) == FOLLOW_DONE)
                return code;
            if (failure == TW_FAILURE_TRANSIENT || failure == TW_FAILURE_NONE)
                tw__pause_ms(r, tw_backoff_next(&r->mongo_dep.backoff,
                                            tw_clock_random01(r->clock)));
            continue;
        }
        tw__dependency_ok(r, &r->mongo_dep);
        if (follow_stream(r, f, &code) == FOLLOW_DONE) {
            if (!tw__commit_finish(r) && code == TW_EXIT_OK)
                code = r->commit_code;
            r->exit_code = code;
            tw__stream_close(r, f);
            return code;
        }
        tw__stream_close(r, f);
        if (r->mongo_dep.outage.down)
            tw__pause_ms(r, tw_backoff_next(&r->mongo_dep.backoff,
                                        tw_clock_random01(r->clock)));
    }
}

/* From the stored checkpoint to the start point; -1: go on and follow. */
int tw_follower_prepare(tw_follower_t *r)
{
    int code;
    tw_error_t err;

    if ((code = tw__check_store_early(r)) >= 0 ||
        (!r->opts.dry_run && (code = tw__lead(r)) >= 0) ||
        (code = tw__load_checkpoint(r)) >= 0 || (code = tw__check_store(r)) >= 0 ||
        (code = connect_mongo(r)) >= 0 || (code = check_scope(r)) >= 0)
        return code;
    if (r->until_now) {
        tw_oplog_window_t w;
        bool readable = tw__read_oplog(r, &w, &err);

        r->until = tw__cluster_now(r, readable ? &w : NULL);
        r->until.i = UINT32_MAX;
    }
    if (r->opts.resume_from)
        code = tw__resume_from(r, r->svc.out);
    else if (!r->committed.has_token)
        code = tw__missing_checkpoint(r);
    else
        code = tw__precheck_lost(r);
    if (code >= 0)
        return code;
    if (r->svc.start_guard &&
        !r->svc.start_guard(r->svc.ctx, r->pool, &r->redis_url, &err)) {
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

void tw_follower_opts_from_settings(const tw_settings_t *s, tw_follower_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->name = s->name;
    o->environment = s->environment;
    o->protect = s->protect;
    o->protect_count = s->protect_count;
    o->mongo_uri = s->mongo_uri;
    o->db = s->db;
    o->collection = s->collection;
    o->pipeline = s->pipeline;
    o->full_document = s->full_document;
    o->split_large_events = s->split_large_events;
    o->redis_url = s->redis_url;
    o->redis_password = s->redis_password;
    o->redis_timeout_ms = s->redis_timeout_ms;
    o->redis_wait_replicas = (int)s->redis_wait_replicas;
    o->lease_ttl_ms = s->lease_ttl_ms;
    o->lease_renew_ms = s->lease_renew_ms;
    o->accept_store_risk = s->accept_store_risk;
    o->sink = (tw_sink_kind_t)s->sink;
    o->stream_key = s->stream_key;
    o->stream_maxlen = s->stream_maxlen;
    o->checkpoint_every = s->checkpoint_every;
    o->checkpoint_interval_ms = s->checkpoint_interval_ms;
    o->max_events = s->max_events;
    o->until = s->until;
    o->retention_ms = s->retention_ms;
    o->alert_repeat_ms = s->alert_repeat_ms;
    o->on_token_lost = (tw_on_lost_t)s->on_token_lost;
    o->fallback_from = s->fallback_from;
    o->on_missing_checkpoint = s->on_missing_checkpoint;
    o->resume_from = s->resume_from;
    o->dry_run = s->dry_run;
    o->confirm = s->confirm;
}

static void init_dependencies(tw_follower_t *r)
{
    r->redis_dep.name = "Redis";
    r->redis_dep.part = "redis";
    r->redis_dep.while_away = "holding events and retrying with backoff";
    tw_backoff_init(&r->redis_dep.backoff, TW__RETRY_BASE_MS, TW__RETRY_CAP_MS);
    r->mongo_dep.name = "MongoDB";
    r->mongo_dep.part = "mongo";
    r->mongo_dep.while_away = "reconnecting with backoff and resuming from the last checkpoint";
    tw_backoff_init(&r->mongo_dep.backoff, TW__RETRY_BASE_MS, TW__RETRY_CAP_MS);
    r->sink_dep.part = "sink";
    r->sink_dep.while_away = "holding events and writing them again with backoff";
    tw_backoff_init(&r->sink_dep.backoff, TW__RETRY_BASE_MS, TW__RETRY_CAP_MS);
    tw_backoff_init(&r->lost_backoff, TW__RETRY_BASE_MS * 4, TW__RETRY_CAP_MS);
}

static bool parse_until(tw_follower_t *r, tw_error_t *err)
{
    tw_spec_t spec;

    if (!r->opts.until)
        return true;
    if (!tw_spec_parse(r->opts.until, &spec, err))
        return false;
    r->has_until = true;
    r->until = spec.time;
    /* The deployment's "now", read once connected. */
    r->until_now = spec.kind == TW_SPEC_NOW;
    tw_spec_clear(&spec);
    return true;
}

tw_follower_t *tw_follower_new(const tw_follower_opts_t *opts, tw_clock_t *clock,
                               tw_error_t *err)
{
    tw_follower_t *r = tw_calloc(1, sizeof *r);

    r->opts = *opts;
    r->clock = clock;
    r->exit_code = -1;
    init_dependencies(r);
    tw_window_reader_init(&r->window, &(tw_window_opts_t){.mongo_uri = opts->mongo_uri});
    tw_checkpoint_key(opts->name, "checkpoint", r->checkpoint_key);
    tw_checkpoint_key(opts->name, "history", r->history_key);
    tw_checkpoint_key(opts->name, "gaps", r->gaps_key);
    tw_lease_init(&r->lease, opts->name, opts->lease_owner, opts->lease_ttl_ms);
    r->follow_opts.db = opts->db;
    r->follow_opts.collection = opts->collection;
    r->follow_opts.pipeline = opts->pipeline;
    r->follow_opts.full_document = opts->full_document;
    r->follow_opts.split_large_events = opts->split_large_events;
    /* A quiet stream still returns this often, to checkpoint and to stop. */
    r->follow_opts.max_await_ms =
        opts->checkpoint_interval_ms < 1000 ? opts->checkpoint_interval_ms : 1000;
    r->last_commit_mono = tw_clock_mono_ms(clock);
    if (!parse_until(r, err) ||
        !tw_redis_url_load(opts->redis_url, opts->redis_password, &r->redis_url, err)) {
        tw_follower_free(r);
        return NULL;
    }
    return r;
}

void tw_follower_attach(tw_follower_t *r, const tw_follower_services_t *svc)
{
    tw_sink_opts_t so;

    r->svc = *svc;
    memset(&so, 0, sizeof so);
    so.kind = r->opts.sink;
    so.out = svc->out;
    so.stream_key = r->opts.stream_key;
    so.stream_maxlen = r->opts.stream_maxlen;
    tw_sink_free(r->sink);
    r->sink = tw_sink_new(&so);
    r->sink_dep.name = tw_sink_name(r->sink);
}

const char *tw_follower_checkpoint_key(const tw_follower_t *r)
{
    return r->checkpoint_key;
}

int tw_follower_stop_now(tw_follower_t *r, int64_t grace_ms)
{
    int code = r->exit_code;

    tw__stop_requested(r);
    if (code == TW_FOLLOWER_STANDBY)
        code = TW_EXIT_OK; /* stopped while going back to standby */
    if (code >= 0) {
        TW_INFO("stopping: not waiting for the MongoDB calls still under way");
        return code;
    }
    TW_WARN("stopping: a MongoDB call has not come back %lld ms after the stop request; "
            "writing the last checkpoint without waiting for it",
            (long long)grace_ms);
    code = tw__commit(r) ? TW_EXIT_OK : r->commit_code;
    TW_INFO("stopping on request after %" PRId64 " events", r->events_this_run);
    tw__lease_release(r);
    return code;
}

void tw_follower_stream_slow(tw_follower_t *r, int64_t blocked_ms)
{
    char took[TW_DURATION_TEXT_MAX];
    tw_error_t err;

    tw_duration_words(blocked_ms, took);
    tw_error_set(&err, TW_ERR_MONGO, 0, "no answer to the change stream for %s", took);
    tw__dependency_failed(r, &r->mongo_dep, &err);
}

void tw_follower_release_lease(tw_follower_t *r)
{
    tw__lease_release(r);
}

void tw_follower_set_exit_code(tw_follower_t *r, int code)
{
    r->exit_code = code;
}

void tw_follower_close_mongo(tw_follower_t *r)
{
    if (r->client)
        mongoc_client_pool_push(r->pool, r->client);
    r->client = NULL;
    mongoc_client_pool_destroy(r->pool);
    r->pool = NULL;
}

void tw_follower_free(tw_follower_t *r)
{
    if (!r)
        return;
    tw_follower_close_mongo(r);
    redisFree(r->redis);
    tw_redis_url_release(&r->redis_url);
    tw_window_reader_release(&r->window);
    tw_checkpoint_release(&r->committed);
    tw_checkpoint_release(&r->position);
    tw_checkpoint_release(&r->inflight_pos);
    tw_sink_free(r->sink);
    free(r->scope);
    tw__clear_override(r);
    bson_free(r->recovery_gap);
    free(r);
}
