/*
 * follower.h - the follower: one change stream, the sink it hands events
 * to, the position it checkpoints in Redis, and the recovery when that
 * position is lost (fallback, --resume-from, a missing checkpoint).
 *
 * It takes its own options (tw_follower_opts_from_settings fills them from
 * the settings, in one place) and borrows what the process runs beside it
 * (tw_follower_services_t: metrics, alert channels, the stop watcher); run.c
 * joins the two. The follower's code is split by concern, one file each,
 * sharing a private header (src/follower_int.h):
 *   follower.c        the stream loop: events, idle batches, failures;
 *   follower_store.c  the Redis side: load, store check, commit;
 *   follower_start.c  where a stream starts: SPECs, probes, --resume-from,
 *                     a missing checkpoint;
 *   follower_lost.c   a lost or unknown resume point: alerts, fallback.
 *
 * One writer per --name: prepare first takes the lease (lease.h), standing
 * by while another process holds it; following renews it, and a follower
 * that loses it returns TW_FOLLOWER_STANDBY.
 *
 * Lifecycle: tw_follower_new (checks the options), tw_follower_attach,
 * tw_follower_prepare, tw_follower_follow; on the way out
 * tw_follower_release_lease (a clean stop), tw_follower_close_mongo (it may
 * wait on MongoDB), tw_follower_free.
 */
#ifndef TOKENWATCH_FOLLOWER_H
#define TOKENWATCH_FOLLOWER_H

#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/error.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/notify.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/settings.h"
#include "tokenwatch/stop.h"

/* What the follower reads of the settings; strings and lists are borrowed
 * and outlive the follower. */
typedef struct {
    const char *name;        /* --name: the keys' prefix */
    const char *environment; /* in alerts and recovery commands */
    char *const *protect;    /* environments where recovery needs --confirm */
    size_t protect_count;

    const char *mongo_uri; /* secret */
    const char *db;
    const char *collection;
    const char *pipeline;
    const char *full_document;
    bool split_large_events;

    const char *redis_url; /* secret */
    const char *redis_password;
    int64_t redis_timeout_ms;
    int redis_wait_replicas; /* WAIT after each commit; 0: none */
    int64_t lease_ttl_ms; /* 0: no lease */
    int64_t lease_renew_ms;
    const char *lease_owner; /* this process's id, the same for each follower it makes */
    bool accept_store_risk;

    tw_sink_kind_t sink;
    const char *stream_key;
    int64_t stream_maxlen;
    int64_t checkpoint_every;
    int64_t checkpoint_interval_ms;
    int64_t max_events; /* 0: no limit */
    const char *until;  /* a SPEC, or NULL */

    int64_t retention_ms; /* 0: read the oplog */
    int64_t alert_repeat_ms;
    tw_on_lost_t on_token_lost;
    const char *fallback_from;         /* a SPEC */
    const char *on_missing_checkpoint; /* NULL: by environment */
    const char *resume_from;           /* a SPEC, or NULL */
    bool dry_run;
    const char *confirm;
} tw_follower_opts_t;

void tw_follower_opts_from_settings(const tw_settings_t *s, tw_follower_opts_t *opts);

/* What the process lends the follower (all borrowed). */
typedef struct {
    volatile sig_atomic_t *stop; /* set by a signal handler */
    tw_metrics_t *metrics;
    const tw_notify_list_t *notifiers; /* the alert channels */
    tw_stop_watch_t *watch;            /* around every MongoDB call */
    FILE *out;                         /* the stdout sink; a dry run's plan */
    /* Called each time a loop comes round (and while waiting): /healthz. */
    void (*on_loop)(void *ctx, int64_t now_mono);
    /* Starts the guard, once MongoDB and Redis are known; false with err. */
    bool (*start_guard)(void *ctx, mongoc_client_pool_t *pool, const tw_redis_url_t *redis_url,
                        tw_error_t *err);
    void *ctx;
} tw_follower_services_t;

typedef struct tw_follower tw_follower_t;

/* Not an exit code: the lease was taken over (or a commit fenced), and the
 * run goes back to standby with a new follower. */
#define TW_FOLLOWER_STANDBY 100

/* Checks what can be checked without a server (--until, the Redis URL).
 * NULL with err (TW_ERR_USAGE) on bad options. */
tw_follower_t *tw_follower_new(const tw_follower_opts_t *opts, tw_clock_t *clock,
                               tw_error_t *err);

void tw_follower_attach(tw_follower_t *f, const tw_follower_services_t *svc);

/* The checkpoint key ("tokenwatch:NAME:checkpoint"). */
const char *tw_follower_checkpoint_key(const tw_follower_t *f);

/* From the stored checkpoint to the start point: load it, check the store,
 * connect, check the scope, then --resume-from, a missing checkpoint or a
 * lost one. An exit code, or -1: go on and follow. */
int tw_follower_prepare(tw_follower_t *f);

/* Follows until a stop, --until, --max-events or a failure: the exit code. */
int tw_follower_follow(tw_follower_t *f);

/* The stop watcher's way out while the main thread is inside a MongoDB
 * call: the last checkpoint, unless the exit code is already decided. The
 * exit code. On the watcher's thread, holding the follower (stop.h). */
int tw_follower_stop_now(tw_follower_t *f, int64_t grace_ms);

/* The stream's call has not come back for blocked_ms: a MongoDB outage. */
void tw_follower_stream_slow(tw_follower_t *f, int64_t blocked_ms);

/* The run's exit code is decided: a stop watcher will not commit again. */
void tw_follower_set_exit_code(tw_follower_t *f, int code);

/* Gives the lease up, if held: a standby takes over at its next look. */
void tw_follower_release_lease(tw_follower_t *f);

/* Gives back the client and closes the pool (after the guard stopped). */
void tw_follower_close_mongo(tw_follower_t *f);

/* NULL ok. */
void tw_follower_free(tw_follower_t *f);

#endif
