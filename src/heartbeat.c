#include "tokenwatch/heartbeat.h"

#include <stdio.h>
#include <stdlib.h>

#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"

struct tw_heartbeat {
    tw_webhook_t *sender;
    tw_metrics_t *metrics;
};

const char *tw_heartbeat_suffix(bool healthy)
{
    return healthy ? NULL : TW_HEARTBEAT_FAIL_SUFFIX;
}

static void count_ping(void *ctx, tw_webhook_outcome_t outcome)
{
    static const char *const counters[] = {
        [TW_WEBHOOK_SENT] = "tokenwatch_heartbeats_sent_total",
        [TW_WEBHOOK_FAILED] = "tokenwatch_heartbeats_failed_total",
        [TW_WEBHOOK_DROPPED] = "tokenwatch_heartbeats_dropped_total",
    };
    tw_heartbeat_t *h = ctx;

    tw_metrics_add(h->metrics, counters[outcome], NULL, 1);
}

tw_heartbeat_t *tw_heartbeat_start(const tw_heartbeat_opts_t *opts, tw_error_t *err)
{
    tw_heartbeat_t *h = tw_calloc(1, sizeof *h);
    tw_webhook_opts_t w = {0};

    h->metrics = opts->metrics;
    w.url = opts->url;
    w.name = "heartbeat";
    w.what = "ping";
    w.method = opts->method;
    w.content_type = "text/plain; charset=utf-8";
    w.newest_only = true;
    w.queue_max = 1;
    /* A ping is due every round: a short life, few tries. */
    w.request_timeout_ms = 10000;
    w.retry_base_ms = 1000;
    w.retry_cap_ms = 10000;
    w.max_attempts = 3;
    w.clock = opts->clock;
    w.on_result = count_ping;
    w.ctx = h;
    h->sender = tw_webhook_start(&w, err);
    if (!h->sender) {
        free(h);
        return NULL;
    }
    return h;
}

void tw_heartbeat_round(tw_heartbeat_t *h, bool healthy, const char *why)
{
    char body[256];

    if (!h)
        return;
    snprintf(body, sizeof body, "tokenwatch guard round %s%s%s", healthy ? "OK" : "failed",
             why ? ": " : "", why ? why : "");
    tw_webhook_enqueue_to(h->sender, body, healthy ? "round OK" : "round failed",
                          tw_heartbeat_suffix(healthy));
}

tw_webhook_t *tw_heartbeat_sender(tw_heartbeat_t *h)
{
    return h ? h->sender : NULL;
}

void tw_heartbeat_free(tw_heartbeat_t *h, int64_t grace_ms)
{
    if (!h)
        return;
    tw_webhook_stop(h->sender, grace_ms);
    tw_webhook_free(h->sender);
    free(h);
}
