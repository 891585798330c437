/*
 * follower_int.h - the follower's private header: its state and the
 * functions its files share (tw__ names are internal, never called from
 * outside the follower). The public API is include/tokenwatch/follower.h.
 */
#ifndef TOKENWATCH_FOLLOWER_INT_H
#define TOKENWATCH_FOLLOWER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tokenwatch/checkpoint.h"
#include "tokenwatch/follow.h"
#include "tokenwatch/follower.h"
#include "tokenwatch/lease.h"
#include "tokenwatch/oplog.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/retry.h"
#include "tokenwatch/sink.h"
#include "tokenwatch/token.h"
#include "tokenwatch/window.h"

#define TW__RETRY_BASE_MS 250
#define TW__RETRY_CAP_MS 30000
/* After a stop request, how long to keep trying to write the last checkpoint. */
#define TW__FINAL_COMMIT_GRACE_MS 10000
/* ... trying at least this often. */
#define TW__FINAL_RETRY_MS 250
/* on_loop (the /healthz beat, the end of a connection flood) runs at most
 * this often, not once per event. */
#define TW__LOOP_TELL_MS 100
/* With --on-token-lost=fail, how long the LOST alert may take before exit 3. */
#define TW__LOST_ALERT_WAIT_MS 10000

/* Redis or MongoDB, as something that can be away for a while. */
typedef struct {
    const char *name;       /* in log lines */
    const char *part;       /* its /readyz part */
    const char *while_away; /* what tokenwatch does meanwhile */
    tw_outage_t outage;
    tw_backoff_t backoff;
    bool ready_told; /* its /readyz part was last set ready */
} dependency_t;

struct tw_follower {
    tw_follower_opts_t opts;
    tw_follower_services_t svc;
    tw_clock_t *clock;
    int64_t stop_seen_ms; /* monotonic; 0 until a stop is seen */
    bool loop_told;       /* on_loop ran ... */
    int64_t loop_told_ms; /* ... last at this monotonic time */

    /* The Redis side (follower_store.c). */
    tw_redis_url_t redis_url;
    redisContext *redis;
    dependency_t redis_dep;
    char checkpoint_key[TW_KEY_MAX];
    char history_key[TW_KEY_MAX];
    char gaps_key[TW_KEY_MAX];
    int commit_code; /* the exit code when tw__commit failed */

    /* The lease (follower_lease.c): epoch 0 while not leading. */
    tw_lease_t lease;
    long long epoch;
    int64_t lease_renewed_mono;
    bool told_standby;
    bool store_checked; /* tw__check_store has said what it found */

    /* The stream (follower.c). */
    mongoc_client_pool_t *pool;
    mongoc_client_t *client;
    dependency_t mongo_dep;
    tw_follow_opts_t follow_opts;
    char *scope;
    tw_window_reader_t window; /* the history window (window.h) */
    bool has_until;
    tw_ctime_t until;
    bool until_now; /* --until now: resolved once connected */

    /* The position and what is handed on. */
    tw_checkpoint_t committed; /* what Redis holds; has_token false: nothing */
    tw_checkpoint_t position;  /* the newest position handed on */
    bool dirty;                /* position is ahead of committed */
    tw_sink_t *sink;   /* NULL until attached */
    dependency_t sink_dep;
    int64_t events_this_run;
    int64_t events_since_commit;
    int64_t events_untold; /* handed on, not yet in tokenwatch_events_total */
    /* The commit sent and not yet answered (the redis sink's pipelined
     * commit), and what it carries: a copy of the position, the sink's
     * sealed batch. inflight_pos and inflight_req also serve the commits
     * that wait. */
    bool inflight;
    tw_checkpoint_t inflight_pos;
    tw_commit_t inflight_req;
    int64_t inflight_started_us;
    int64_t last_commit_mono;

    /* A recovery under way (resume-from, fallback): the stream starts at
     * start_override, and the first commit after it moves the checkpoint
     * there, keeps the old one in the history and records the gap
     * (follower_start.c, follower_lost.c). */
    bool recovering;
    char recovery_source[TW_SOURCE_MAX];
    char recovery_reason[TW_SOURCE_MAX]; /* the history entry's reason; "" = the source */
    char *recovery_gap;                  /* JSON, or NULL */
    bool has_override;
    tw_start_t start_override;
    bson_t override_token;
    bool has_override_token;
    tw_backoff_t lost_backoff;
    unsigned losses;        /* resume points lost in a row */
    tw_ctime_t loss_at;     /* the position lost last: only moving past it ends a run of losses */
    bool tried_start_after; /* 260 on resumeAfter: startAfter was tried once */
    bool no_start_after;    /* the server does not know startAfter */
    FILE *plan_out;         /* a dry run prints its probes here */

    int exit_code; /* -1 until the run has decided it */
};

/* Where a SPEC resolved to (tw__resolve_start). */
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

bool tw__stop_requested(tw_follower_t *r);
/* The same with the monotonic time already read. */
bool tw__stop_requested_at(tw_follower_t *r, int64_t now_mono);
void tw__tell_events(tw_follower_t *r);
void tw__pause_ms(tw_follower_t *r, int64_t ms);
tw_follow_t *tw__stream_open(tw_follower_t *r, const tw_start_t *start, tw_failure_t *failure,
                             tw_error_t *err);
void tw__stream_close(tw_follower_t *r, tw_follow_t *f);
void tw__describe_position(const tw_checkpoint_t *cp, char *out, size_t n);
void tw__dependency_failed(tw_follower_t *r, dependency_t *d, const tw_error_t *err);
void tw__dependency_ok(tw_follower_t *r, dependency_t *d);
bool tw__commit(tw_follower_t *r);
/* The same, without waiting for Redis with the redis sink: the answer is
 * read by tw__commit_finish, before the connection is used for anything
 * else (the next commit, the lease, a quiet stream, a failure, the end). */
bool tw__commit_pipelined(tw_follower_t *r);
bool tw__commit_finish(tw_follower_t *r);
int tw__check_store(tw_follower_t *r);
int tw__check_store_early(tw_follower_t *r);
int tw__load_checkpoint(tw_follower_t *r);
bool tw__lost_already_told(tw_follower_t *r);
void tw__lost_told(tw_follower_t *r);
tw_ctime_t tw__cluster_now(tw_follower_t *r, const tw_oplog_window_t *readable);
bool tw__read_oplog(tw_follower_t *r, tw_oplog_window_t *w, tw_error_t *err);
void tw__clear_override(tw_follower_t *r);
void tw__begin_recovery(tw_follower_t *r, const char *source, tw_start_kind_t kind,
                        const bson_t *token, tw_ctime_t at, char *gap_json);
bool tw__resolve_start(tw_follower_t *r, const char *text, resolved_start_t *out,
                       tw_error_t *err);
void tw__resolved_release(resolved_start_t *rs);
const char *tw__start_how(const resolved_start_t *rs);
void tw__alert_warn(tw_follower_t *r, const char *reason);
int tw__handle_lost(tw_follower_t *r, const char *why);
int tw__handle_not_found(tw_follower_t *r, const char *why);
int tw__handle_no_start_after(tw_follower_t *r, const char *why);
int tw__report_too_large(tw_follower_t *r, const char *why);
int tw__precheck_lost(tw_follower_t *r);
int tw__resume_from(tw_follower_t *r, FILE *out);
int tw__missing_checkpoint(tw_follower_t *r);
bool tw__redis_ready(tw_follower_t *r, tw_error_t *err);
void tw__redis_failed(tw_follower_t *r, const tw_error_t *err);
/* The lease: -1 once leading (or with no lease), else an exit code. */
int tw__lead(tw_follower_t *r);
/* Renews when due: -1, or TW_FOLLOWER_STANDBY when it was taken over. */
int tw__lease_keep(tw_follower_t *r, int64_t now_mono);
/* Says why the lease was lost; TW_FOLLOWER_STANDBY. */
int tw__lease_lost(tw_follower_t *r, const char *why);
void tw__lease_release(tw_follower_t *r);

#endif
