#include "tokenwatch/app.h"

#include <string.h>

#include "tokenwatch/log.h"

void tw_app_opts_from_settings(const tw_settings_t *s, tw_clock_t *clock, tw_app_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->clock = clock;
    opts->metrics_addr = s->metrics_addr;
    /* --slack-webhook-file was read and checked with the settings. */
    opts->slack_webhook = s->slack_webhook;
    opts->health_stall_ms = 60000;
}

static void count_alert(void *ctx, tw_slack_outcome_t outcome)
{
    static const char *const counters[] = {
        [TW_SLACK_SENT] = "tokenwatch_alerts_sent_total",
        [TW_SLACK_FAILED] = "tokenwatch_alerts_failed_total",
        [TW_SLACK_DROPPED] = "tokenwatch_alerts_dropped_total",
    };
    tw_app_t *app = ctx;

    tw_metrics_add(app->metrics, counters[outcome], NULL, 1);
}

static bool start_slack(tw_app_t *app, tw_error_t *err)
{
    tw_slack_opts_t opts;
    char shown[256];

    if (!app->opts.slack_webhook) {
        TW_INFO("no Slack webhook: alerts are only logged");
        return true;
    }
    memset(&opts, 0, sizeof opts);
    opts.webhook_url = app->opts.slack_webhook;
    opts.queue_max = 64;
    opts.request_timeout_ms = 10000;
    opts.retry_base_ms = 1000;
    opts.retry_cap_ms = 60000;
    opts.max_attempts = 10;
    opts.clock = app->opts.clock;
    opts.on_result = count_alert;
    opts.ctx = app;
    app->slack = tw_slack_start(&opts, err);
    if (!app->slack)
        return false;
    tw_notify_list_slack(&app->notifiers, app->metrics, app->slack);
    tw_slack_redact(app->opts.slack_webhook, shown, sizeof shown);
    TW_INFO("alerts go to the Slack webhook %s", shown);
    return true;
}

bool tw_app_start(tw_app_t *app, const tw_app_opts_t *opts, tw_error_t *err)
{
    memset(app, 0, sizeof *app);
    app->opts = *opts;
    app->metrics = tw_metrics_new();
    tw_notify_list_init(&app->notifiers, app->metrics);
    tw_monitor_declare_metrics(app->metrics);
    tw_metrics_set_ready(app->metrics, "mongo", false);
    tw_metrics_set_ready(app->metrics, "redis", false);
    tw_metrics_heartbeat(app->metrics, tw_clock_mono_ms(opts->clock));
    if (strcmp(opts->metrics_addr, "off") != 0) {
        app->http = tw_http_start(app->metrics, opts->metrics_addr, opts->clock,
                                  opts->health_stall_ms, err);
        if (!app->http)
            return false;
    }
    return start_slack(app, err);
}

bool tw_app_start_guard(tw_app_t *app, tw_monitor_opts_t *opts, tw_error_t *err)
{
    opts->clock = app->opts.clock;
    opts->metrics = app->metrics;
    opts->notifiers = &app->notifiers;
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
    tw_slack_stats_t left;

    if (tw_slack_flush(app->slack, grace_ms))
        return true;
    tw_slack_stats(app->slack, &left);
    TW_WARN("Slack alerts not all delivered within %lld s: stopping with %zu still "
            "queued, besides any being sent",
            (long long)(grace_ms / 1000), left.queued);
    return false;
}

void tw_app_stop(tw_app_t *app, int64_t grace_ms)
{
    tw_slack_stop(app->slack, grace_ms);
}

void tw_app_free(tw_app_t *app)
{
    tw_app_stop_guard(app);
    tw_slack_free(app->slack);
    tw_http_free(app->http);
    tw_metrics_free(app->metrics);
    memset(app, 0, sizeof *app);
}
