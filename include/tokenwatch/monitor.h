/*
 * monitor.h - the guard, as a loop: every --monitor-interval it measures the
 * oplog window and every guarded token, decides each token's state, alerts
 * on changes and keeps the metrics. It runs on its own thread with its own
 * MongoDB client and Redis connection, so a slow probe never stalls
 * following; `tokenwatch status` runs one round of it.
 */
#ifndef TOKENWATCH_MONITOR_H
#define TOKENWATCH_MONITOR_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/consumers.h"
#include "tokenwatch/error.h"
#include "tokenwatch/guard.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/notify.h"
#include "tokenwatch/oplog.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/settings.h"
#include "tokenwatch/shards.h"

#define TW_REASON_MAX (TW_ERROR_MESSAGE_MAX + 128)

typedef struct tw_monitor tw_monitor_t;

/* One guarded token as last measured. A --guard value may expand into
 * several (a hash field per connector, the keys a pattern matches, a
 * connector's partitions): each is one of these, found again by key,
 * position and consumer from round to round. */
typedef struct {
    char *key;      /* the Redis key (or the connector's URL redacted, monstache:NAME) */
    char *position; /* within it: a connector, partition or stream; "" for the key itself */
    tw_consumer_t consumer;
    char *display;  /* the key, or "key position (consumer)": status rows and alerts */
    char *labels;   /* its metric labels, without state; NULL: too long to label */
    size_t source;  /* 0: the own checkpoint; k: the k-th --guard value */
    char note[TW_POSITION_NOTE_MAX]; /* "heartbeat", "snapshot ...": shown in status */
    bool own; /* the watcher's own checkpoint */
    bool assessed;
    tw_state_t state;
    bool has_token;
    tw_ctime_t token;
    bool has_measure;
    tw_measure_t measure;
    char reason[TW_REASON_MAX]; /* why UNKNOWN */
    tw_tracker_t tracker;
} tw_guarded_t;

typedef struct {
    /* What the guard reads of the settings (borrowed strings and lists,
     * outliving the monitor); tw_monitor_opts_from_settings fills them. */
    const char *name;                /* --name: the own checkpoint's key */
    const char *environment;         /* in alerts */
    const char *mongo_uri;           /* the router's, for shard discovery */
    char *const *guard;              /* --guard keys */
    size_t guard_count;
    char *const *shard_uri;          /* --shard-uri overrides */
    size_t shard_uri_count;
    int64_t monitor_interval_ms;
    int64_t retention_ms;            /* 0: none */
    int64_t alert_repeat_ms;
    int64_t redis_timeout_ms;
    tw_limit_t warn_at;
    tw_limit_t crit_at;

    tw_clock_t *clock;              /* borrowed, the process's one clock; NULL: the system's */
    mongoc_client_pool_t *pool;     /* a client is popped for the monitor */
    const tw_redis_url_t *redis_url;
    tw_metrics_t *metrics; /* may be NULL */
    const tw_notify_list_t *notifiers; /* borrowed, may be NULL: alerts are only logged */
    /* Failed rounds in a row before tokens are UNKNOWN: 3 for the watcher,
     * 1 for a one-shot status. */
    unsigned unknown_after;
    /* A missing own checkpoint: UNKNOWN (status) or not assessed yet (run,
     * which writes it within a second of starting). */
    bool own_missing_is_unknown;
    bool alerts; /* log and send alerts on state changes */
    /* Called at the end of each round, on the guard's thread (the heartbeat
     * and the daily digest); may be NULL. */
    void (*after_round)(void *ctx, tw_monitor_t *m);
    void *after_round_ctx;
} tw_monitor_opts_t;


/* The guard's part of the settings, in one place (the rest of opts is
 * zeroed: the caller adds the clock, pool, Redis URL and services). */
void tw_monitor_opts_from_settings(const tw_settings_t *s, tw_monitor_opts_t *opts);

/* The deployment's time at the last round, and the local clock's skew. */
typedef struct {
    tw_ctime_t now;
    bool from_server; /* false: the local clock stood in */
    double skew_s;    /* local minus cluster; 0 when not from the server */
} tw_monitor_clock_t;

tw_monitor_t *tw_monitor_new(const tw_monitor_opts_t *opts);

/* One round: measure, assess, alert, update metrics. */
void tw_monitor_tick(tw_monitor_t *m);

/* The guarded tokens, in order: the own checkpoint first. Borrowed. */
size_t tw_monitor_keys(const tw_monitor_t *m, const tw_guarded_t **keys);

/* The last window read, or NULL when none was. Borrowed. */
const tw_oplog_window_t *tw_monitor_window(const tw_monitor_t *m);
double tw_monitor_tail_rate(const tw_monitor_t *m);

/* The shards and their windows on a sharded cluster, else NULL. Borrowed. */
const tw_shards_t *tw_monitor_shards(const tw_monitor_t *m);

const tw_monitor_clock_t *tw_monitor_clock(const tw_monitor_t *m);

/* Whether the last round read MongoDB and Redis; if not, why into why (n
 * bytes, the message the log shows). */
bool tw_monitor_round_ok(const tw_monitor_t *m, char *why, size_t n);

/* Runs rounds on a thread of its own, every --monitor-interval. */
bool tw_monitor_start(tw_monitor_t *m, tw_error_t *err);

/* Stops the thread, after the round under way; nothing if none runs. NULL is fine. */
void tw_monitor_stop(tw_monitor_t *m);

/* Stops the thread (if any) and frees; NULL is fine. */
void tw_monitor_free(tw_monitor_t *m);

/* Declares every tokenwatch metric family, so /metrics shows them all
 * from the first scrape. */
void tw_monitor_declare_metrics(tw_metrics_t *metrics);

#endif
