/*
 * run.c - `tokenwatch run`: the loop that joins the app (metrics, HTTP,
 * alert channels, the guard: app.h) and the follower (the stream, the sink,
 * the position, recovery: follower.h), with the stop watcher between them.
 */
#include "tokenwatch/run.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenwatch/app.h"
#include "tokenwatch/follower.h"
#include "tokenwatch/guard.h"
#include "tokenwatch/lease.h"
#include "tokenwatch/log.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/sink.h"
#include "tokenwatch/stop.h"

/* A change stream call that has not come back for this long is an outage. */
#define MONGO_SLOW_MS 10000
/* /healthz fails when the loop has not come round for this long. */
#define HEALTH_STALL_MS 60000
/* On the way out, how long queued alerts may take to be delivered. */
#define ALERT_GRACE_MS 3000
/* After a stop request, how long a MongoDB call may keep the loop from
 * stopping by itself before the stop watcher takes over (stop_while_blocked). */
#define STOP_GRACE_MS 1000

typedef struct {
    const tw_settings_t *s;
    tw_clock_t *clock;
    volatile sig_atomic_t *stop;
    tw_app_t app;
    tw_follower_opts_t opts;
    char lease_owner[TW_LEASE_OWNER_MAX];
    tw_follower_t *follower;
    /* Held by the main thread except inside MongoDB calls (stop.h). */
    tw_stop_watch_t *watch;
} runner_t;

/* The follower's loops came round: /healthz learns we run (and the end of a
 * connection flood is noticed). */
static void on_loop(void *ctx, int64_t now_mono)
{
    runner_t *r = ctx;

    tw_app_tick(&r->app, now_mono);
}

/* The metrics endpoint and the alert channels: up before following starts. */
static bool start_app(runner_t *r, tw_error_t *err)
{
    tw_app_opts_t opts;

    tw_app_opts_from_settings(r->s, r->clock, &opts);
    opts.health_stall_ms = HEALTH_STALL_MS;
    return tw_app_start(&r->app, &opts, err);
}

/* Once the follower has a MongoDB pool and a Redis URL to lend it. */
static bool start_guard(void *ctx, mongoc_client_pool_t *pool, const tw_redis_url_t *redis_url,
                        tw_error_t *err)
{
    runner_t *r = ctx;
    tw_monitor_opts_t opts;

    tw_monitor_opts_from_settings(r->s, &opts);
    opts.pool = pool;
    opts.redis_url = redis_url;
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
 * (the follower's stream calls, oplog reads and connects, and the guard
 * and pool in teardown). The watcher logs
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
 * inside a MongoDB call and cannot touch the follower (nor its Redis
 * connection) until the process ends. The last checkpoint goes through the
 * normal commit, unless the run has already decided its exit code (it is
 * waiting in teardown). libmongoc is in use on the main thread, so no
 * cleanup runs: flush, then _exit.
 */
static void stop_while_blocked(void *ctx)
{
    runner_t *r = ctx;
    int code = tw_follower_stop_now(r->follower, STOP_GRACE_MS);

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
 * with the follower's lock: the owner is inside the call.
 */
static void stream_slow(void *ctx, int64_t blocked_ms)
{
    runner_t *r = ctx;

    tw_follower_stream_slow(r->follower, blocked_ms);
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

static void attach(runner_t *r, FILE *out)
{
    tw_follower_services_t svc;

    memset(&svc, 0, sizeof svc);
    svc.stop = r->stop;
    svc.metrics = tw_app_metrics(&r->app);
    svc.notifiers = tw_app_notifiers(&r->app);
    svc.watch = r->watch;
    svc.out = out;
    svc.on_loop = on_loop;
    svc.start_guard = start_guard;
    svc.ctx = r;
    tw_follower_attach(r->follower, &svc);
}

static void teardown(runner_t *r)
{
    /* The guard first: it holds a client of the pool and may be alerting.
     * It and the pool may wait on MongoDB: the watcher can end the run
     * meanwhile, with the exit code already decided. */
    tw_stop_watch_enter(r->watch);
    tw_app_stop_guard(&r->app);
    if (r->follower)
        tw_follower_close_mongo(r->follower);
    tw_stop_watch_leave(r->watch);
    tw_stop_watch_free(r->watch);
    tw_app_stop(&r->app, ALERT_GRACE_MS);
    tw_app_free(&r->app);
    tw_follower_free(r->follower);
}

static int run_follower(runner_t *r, FILE *out)
{
    int code;

    attach(r, out);
    if ((code = tw_follower_prepare(r->follower)) >= 0)
        return code;
    return tw_follower_follow(r->follower);
}

/*
 * The lease was taken over (or a commit fenced): the guard and the stream
 * stop, and a new follower stands by. The guard and the pool may wait on
 * MongoDB, as in teardown.
 */
static bool back_to_standby(runner_t *r, tw_error_t *err)
{
    tw_follower_t *next = tw_follower_new(&r->opts, r->clock, err);

    if (!next)
        return false;
    tw_stop_watch_enter(r->watch);
    tw_app_stop_guard(&r->app);
    tw_follower_close_mongo(r->follower);
    tw_stop_watch_leave(r->watch);
    tw_follower_free(r->follower);
    r->follower = next;
    return true;
}

static int follow_or_stand_by(runner_t *r, FILE *out)
{
    char redacted[512];
    tw_error_t err;
    int code;

    tw_redact_url(r->s->redis_url, redacted, sizeof redacted);
    TW_INFO("starting: checkpoints in %s at %s, sink %s", redacted,
            tw_follower_checkpoint_key(r->follower),
            tw_sink_kind_name((tw_sink_kind_t)r->s->sink));
    while ((code = run_follower(r, out)) == TW_FOLLOWER_STANDBY)
        if (!back_to_standby(r, &err)) {
            TW_ERROR("%s", err.message);
            return TW_EXIT_FAILURE;
        }
    tw_follower_release_lease(r->follower);
    return code;
}

int tw_run(const tw_settings_t *settings, tw_clock_t *clock,
           volatile sig_atomic_t *stop, FILE *out)
{
    runner_t r;
    tw_error_t err;
    int code = TW_EXIT_USAGE;

    memset(&r, 0, sizeof r);
    r.s = settings;
    r.clock = clock;
    r.stop = stop;
    tw_follower_opts_from_settings(settings, &r.opts);
    tw_lease_owner_id(r.lease_owner, sizeof r.lease_owner);
    r.opts.lease_owner = r.lease_owner;
    r.follower = tw_follower_new(&r.opts, clock, &err);
    if (!r.follower) {
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
        tw_app_init_dry(&r.app);
    code = follow_or_stand_by(&r, out);
out:
    if (r.follower)
        tw_follower_set_exit_code(r.follower, code);
    teardown(&r);
    return code;
}
