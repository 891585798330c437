#include "tokenwatch/app.h"

#include <string.h>

#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/utf8.h"

void tw_app_opts_from_settings(const tw_settings_t *s, tw_clock_t *clock, tw_app_opts_t *opts)
{
    tw_app_channels_t *c = &opts->channels;

    memset(opts, 0, sizeof *opts);
    opts->clock = clock;
    opts->metrics_addr = s->metrics_addr;
    opts->environment = s->environment;
    opts->name = s->name;
    /* The *-file settings were read and checked with the settings. */
    c->slack_webhook = s->slack_webhook;
    c->webhook_url = s->webhook_url;
    c->pagerduty_key = s->pagerduty_routing_key;
    c->pagerduty_url = s->pagerduty_url;
    c->heartbeat_url = s->heartbeat_url;
    c->heartbeat_method = s->heartbeat_method == TW_HEARTBEAT_POST ? TW_WEBHOOK_POST
                                                                   : TW_WEBHOOK_GET;
    c->digest_at_minute = s->digest_at_minute;
    opts->health_stall_ms = 60000;
}

/* One channel: its slot in the list, then its sender, counting into it. */
static bool start_channel(tw_app_t *app, tw_channel_kind_t kind, const char *url,
                          const char *secret, tw_error_t *err)
{
    tw_channel_t spec = tw_notify_kind(kind);
    tw_channel_t *c;
    tw_webhook_opts_t opts;
    tw_webhook_t *sender;
    char shown[256];

    spec.ctx = secret;
    c = tw_notify_add(&app->notifiers, &spec);
    memset(&opts, 0, sizeof opts);
    opts.url = url;
    opts.name = spec.name;
    opts.body_secret = secret;
    opts.queue_max = 64;
    opts.request_timeout_ms = 10000;
    opts.retry_base_ms = 1000;
    opts.retry_cap_ms = 60000;
    opts.max_attempts = 10;
    opts.clock = app->opts.clock;
    opts.on_result = tw_notify_count;
    opts.ctx = c;
    sender = c ? tw_webhook_start(&opts, err) : NULL;
    if (!sender)
        return false;
    tw_notify_attach(c, sender);
    tw_redact_endpoint(url, shown, sizeof shown);
    TW_INFO("alerts go to the %s channel at %s", spec.name, shown);
    return true;
}

static bool start_channels(tw_app_t *app, tw_error_t *err)
{
    const tw_app_channels_t *c = &app->opts.channels;

    if (c->slack_webhook && !start_channel(app, TW_CHANNEL_SLACK, c->slack_webhook, NULL, err))
        return false;
    if (c->webhook_url && !start_channel(app, TW_CHANNEL_JSON, c->webhook_url, NULL, err))
        return false;
    if (c->pagerduty_key &&
        !start_channel(app, TW_CHANNEL_PAGERDUTY, c->pagerduty_url, c->pagerduty_key, err))
        return false;
    if (!tw_notify_any(&app->notifiers))
        TW_INFO("no alert channel (Slack, JSON webhook, PagerDuty): alerts are only logged");
    return true;
}

static bool start_heartbeat(tw_app_t *app, tw_error_t *err)
{
    tw_heartbeat_opts_t opts;
    char shown[256];

    if (!app->opts.channels.heartbeat_url)
        return true;
    memset(&opts, 0, sizeof opts);
    opts.url = app->opts.channels.heartbeat_url;
    opts.method = app->opts.channels.heartbeat_method;
    opts.clock = app->opts.clock;
    opts.metrics = app->metrics;
    app->heartbeat = tw_heartbeat_start(&opts, err);
    if (!app->heartbeat)
        return false;
    tw_redact_endpoint(opts.url, shown, sizeof shown);
    TW_INFO("a heartbeat goes to %s after every guard round (%s on a failed one)", shown,
            TW_HEARTBEAT_FAIL_SUFFIX);
    return true;
}

bool tw_app_start(tw_app_t *app, const tw_app_opts_t *opts, tw_error_t *err)
{
    memset(app, 0, sizeof *app);
    app->opts = *opts;
    app->metrics = tw_metrics_new();
    tw_notify_list_init(&app->notifiers, app->metrics, opts->clock);
    tw_monitor_declare_metrics(app->metrics);
    tw_metrics_set_ready(app->metrics, "mongo", false);
    tw_metrics_set_ready(app->metrics, "redis", false);
    tw_metrics_heartbeat(app->metrics, tw_clock_mono_ms(opts->clock));
    tw_digest_sched_init(&app->digest, opts->channels.digest_at_minute);
    if (strcmp(opts->metrics_addr, "off") != 0) {
        app->http = tw_http_start(app->metrics, opts->metrics_addr, opts->clock,
                                  opts->health_stall_ms, err);
        if (!app->http)
            return false;
    }
    return start_channels(app, err) && start_heartbeat(app, err);
}

/* The guarded positions the round assessed, as digest entries (free). */
static size_t digest_entries(const tw_monitor_t *m, tw_digest_entry_t **out)
{
    const tw_guarded_t *keys;
    size_t n = tw_monitor_keys(m, &keys);
    size_t count = 0;

    *out = tw_calloc(n ? n : 1, sizeof **out);
    for (size_t k = 0; k < n; k++) {
        tw_digest_entry_t *e = &(*out)[count];

        if (!keys[k].assessed)
            continue;
        e->key = keys[k].key;
        e->state = keys[k].state;
        e->has_measure = keys[k].has_measure && keys[k].state != TW_STATE_UNKNOWN;
        e->headroom_s = keys[k].measure.headroom_s;
        e->unbounded = keys[k].measure.unbounded;
        e->time_left_s = keys[k].measure.time_left_s;
        count++;
    }
    return count;
}

static void send_digest(tw_app_t *app, const tw_monitor_t *m, int64_t now_ms)
{
    tw_digest_t d;
    tw_digest_entry_t *entries;
    char *headline;

    memset(&d, 0, sizeof d);
    d.environment = app->opts.environment;
    d.name = app->opts.name;
    d.now_ms = now_ms;
    d.count = digest_entries(m, &entries);
    d.entries = entries;
    headline = tw_digest_headline(&d);
    TW_INFO("daily digest: %s", headline);
    tw_notify_digest(&app->notifiers, &d, "daily digest");
    bson_free(headline);
    free(entries);
}

/* After each guard round: the heartbeat, and the digest once a day. */
static void after_round(void *ctx, tw_monitor_t *m)
{
    tw_app_t *app = ctx;
    char why[TW_REASON_MAX] = "";
    bool ok = tw_monitor_round_ok(m, why, sizeof why);
    int64_t now = tw_clock_wall_ms(app->opts.clock);

    tw_heartbeat_round(app->heartbeat, ok, ok ? NULL : why);
    if (app->opts.channels.digest_at_minute >= 0 && tw_notify_any(&app->notifiers) &&
        tw_digest_due(&app->digest, now))
        send_digest(app, m, now);
}

bool tw_app_start_guard(tw_app_t *app, tw_monitor_opts_t *opts, tw_error_t *err)
{
    opts->clock = app->opts.clock;
    opts->metrics = app->metrics;
    opts->notifiers = &app->notifiers;
    opts->after_round = after_round;
    opts->after_round_ctx = app;
    app->monitor = tw_monitor_new(opts);
    return tw_monitor_start(app->monitor, err);
}

void tw_app_stop_guard(tw_app_t *app)
{
    tw_monitor_free(app->monitor);
    app->monitor = NULL;
}

bool tw_app_flush_alerts(tw_app_t *app, int64_t grace_ms)
{
    tw_webhook_stats_t left;

    if (tw_notify_flush(&app->notifiers, grace_ms))
        return true;
    tw_notify_stats(&app->notifiers, &left);
    TW_WARN("alerts not all delivered within %lld s: stopping with %zu still "
            "queued, besides any being sent",
            (long long)(grace_ms / 1000), left.queued);
    return false;
}

void tw_app_stop(tw_app_t *app, int64_t grace_ms)
{
    tw_webhook_stop_begin(tw_heartbeat_sender(app->heartbeat), grace_ms);
    tw_notify_stop(&app->notifiers, grace_ms);
    tw_heartbeat_free(app->heartbeat, grace_ms);
    app->heartbeat = NULL;
}

void tw_app_free(tw_app_t *app)
{
    tw_app_stop_guard(app);
    tw_notify_list_release(&app->notifiers);
    tw_heartbeat_free(app->heartbeat, 0);
    tw_http_free(app->http);
    tw_metrics_free(app->metrics);
    memset(app, 0, sizeof *app);
}

void tw_app_init_dry(tw_app_t *app)
{
    memset(app, 0, sizeof *app);
    app->metrics = tw_metrics_new();
}

tw_metrics_t *tw_app_metrics(tw_app_t *app)
{
    return app->metrics;
}

const tw_notify_list_t *tw_app_notifiers(const tw_app_t *app)
{
    return &app->notifiers;
}

void tw_app_tick(tw_app_t *app, int64_t now_mono)
{
    tw_metrics_heartbeat(app->metrics, now_mono);
    tw_http_tick(app->http);
}
