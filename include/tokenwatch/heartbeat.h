/*
 * heartbeat.h - a dead man's switch: after each guard round tokenwatch pings
 * a URL (healthchecks.io, Cronitor and the like), the URL itself after a
 * healthy round and the URL with "/fail" appended to its path after a round
 * that could not read MongoDB or Redis; the service pages when the pings
 * stop or say fail. Its own sender, with a queue of one: only the newest
 * ping matters, so one replaces an older one still waiting.
 *
 * The URL is a secret (it often carries the check's token): never printed,
 * as for every webhook (webhook.h). Outcomes are counted in
 * tokenwatch_heartbeats_{sent,failed,dropped}_total.
 */
#ifndef TOKENWATCH_HEARTBEAT_H
#define TOKENWATCH_HEARTBEAT_H

#include <stdbool.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/error.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/webhook.h"

#define TW_HEARTBEAT_FAIL_SUFFIX "/fail"

typedef struct {
    const char *url;            /* secret; NULL: no heartbeat */
    tw_webhook_method_t method; /* GET or POST (a short text body) */
    const tw_clock_t *clock;    /* borrowed; NULL: the system's */
    tw_metrics_t *metrics;      /* borrowed, may be NULL */
} tw_heartbeat_opts_t;

typedef struct tw_heartbeat tw_heartbeat_t;

/* The path suffix of a round's ping: NULL after a healthy round, else
 * TW_HEARTBEAT_FAIL_SUFFIX. Pure. */
const char *tw_heartbeat_suffix(bool healthy);

/* NULL with err filled when the URL or the sender cannot be set up. */
tw_heartbeat_t *tw_heartbeat_start(const tw_heartbeat_opts_t *opts, tw_error_t *err);

/* Queues the round's ping; why (no secret; may be NULL) says what failed. */
void tw_heartbeat_round(tw_heartbeat_t *h, bool healthy, const char *why);

/* The sender, for flush, stats and stop (borrowed; NULL for NULL). */
tw_webhook_t *tw_heartbeat_sender(tw_heartbeat_t *h);

/* Stops (grace_ms for a ping in flight) and frees; NULL ok. */
void tw_heartbeat_free(tw_heartbeat_t *h, int64_t grace_ms);

#endif
