/*
 * app.h - what a tokenwatch process runs beside following: the clock, the
 * metrics registry, the HTTP server (/metrics, /healthz, /readyz), the alert
 * channels and the guard thread, started and stopped in one place. The
 * follower (run.c) uses them through this struct; the guard is started
 * once the follower has a MongoDB pool and a Redis URL to lend it.
 *
 * Lifecycle: tw_app_start, tw_app_start_guard; on the way out
 * tw_app_stop_guard (it may wait on MongoDB), tw_app_stop (the alert
 * channels get their grace), tw_app_free. Each accepts what was never
 * started.
 */
#ifndef TOKENWATCH_APP_H
#define TOKENWATCH_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/digest.h"
#include "tokenwatch/error.h"
#include "tokenwatch/heartbeat.h"
#include "tokenwatch/http.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/monitor.h"
#include "tokenwatch/notify.h"
#include "tokenwatch/settings.h"
#include "tokenwatch/webhook.h"

/* The channels' endpoints: borrowed; the secret ones are never printed.
 * NULL: that channel is off (without any, alerts are only logged). */
typedef struct {
    const char *slack_webhook;    /* secret */
    const char *webhook_url;      /* secret: the generic JSON webhook */
    const char *pagerduty_key;    /* secret: the Events v2 routing key */
    const char *pagerduty_url;    /* the Events API endpoint */
    const char *heartbeat_url;    /* secret */
    tw_webhook_method_t heartbeat_method;
    int digest_at_minute;         /* minutes after 00:00 UTC; -1: no digest */
} tw_app_channels_t;

typedef struct {
    tw_clock_t *clock;         /* borrowed: the process's one clock */
    const char *metrics_addr;  /* HOST:PORT, or "off" */
    const char *environment;   /* in the digest */
    const char *name;          /* the stream, in the digest */
    tw_app_channels_t channels;
    int64_t health_stall_ms;   /* /healthz fails when the loop has not come round */
} tw_app_opts_t;

typedef struct {
    tw_app_opts_t opts;
    tw_metrics_t *metrics;
    tw_http_t *http;             /* NULL with --metrics-addr off */
    tw_notify_list_t notifiers;  /* the alert channels, each with its sender */
    tw_heartbeat_t *heartbeat;   /* NULL without --heartbeat-url */
    tw_digest_sched_t digest;    /* used by the guard thread only */
    tw_monitor_t *monitor;       /* the guard thread, once started */
} tw_app_t;

/* The app's part of the settings, in one place. */
void tw_app_opts_from_settings(const tw_settings_t *s, tw_clock_t *clock, tw_app_opts_t *opts);

/* The metrics registry (not ready until told), the HTTP server and the alert
 * channels: up before following starts. app is zeroed first. */
bool tw_app_start(tw_app_t *app, const tw_app_opts_t *opts, tw_error_t *err);

/* A dry run only reads: a metrics registry for the follower to count in,
 * and nothing else (no port, no channels, no guard). app is zeroed first. */
void tw_app_init_dry(tw_app_t *app);

/* What the app lends the follower and the guard (borrowed). */
tw_metrics_t *tw_app_metrics(tw_app_t *app);
const tw_notify_list_t *tw_app_notifiers(const tw_app_t *app);

/* The main loop came round at now_mono: /healthz learns it (and the HTTP
 * server notices the end of a connection flood). */
void tw_app_tick(tw_app_t *app, int64_t now_mono);

/* The guard thread, with the app's clock, metrics and channels filled in,
 * and after each round the heartbeat and, when due, the digest. */
bool tw_app_start_guard(tw_app_t *app, tw_monitor_opts_t *opts, tw_error_t *err);

/* Stops and frees the guard thread: it holds a client of the follower's pool. */
void tw_app_stop_guard(tw_app_t *app);

/* Waits up to grace_ms for queued alerts; false (and a WARN) if some are left. */
bool tw_app_flush_alerts(tw_app_t *app, int64_t grace_ms);

/* Stops the alert senders and the heartbeat, all within grace_ms for what
 * is queued. */
void tw_app_stop(tw_app_t *app, int64_t grace_ms);

/* Frees everything, stopping what still runs. */
void tw_app_free(tw_app_t *app);

#endif
