/*
 * webhook.h - sends ready-made payloads to one HTTP endpoint: a Slack
 * incoming webhook, a generic JSON webhook, PagerDuty's Events API, a
 * heartbeat URL. One tw_webhook_t per channel, so a dead endpoint delays
 * only its own messages.
 *
 * The watcher must never wait for the network, so a tw_webhook_t owns a
 * bounded queue and one sender thread: tw_webhook_enqueue() only copies the
 * payload under a mutex and returns. The sender sends the oldest message
 * first and retries it (network errors, HTTP 5xx, 429) with capped
 * exponential backoff and jitter before it moves on, so messages arrive in
 * the order they were raised; max_attempts bounds how long one message can
 * hold the queue.
 *
 * Every enqueued message ends in exactly one way, counted in
 * tw_webhook_stats_t and reported once through on_result:
 *   sent     - the endpoint answered 2xx;
 *   failed   - it refused it (4xx other than 429), max_attempts ran out,
 *              or tw_webhook_stop's grace ended before it could be sent;
 *   dropped  - the queue was full when a newer message came: the oldest
 *              waiting one makes room (the newest says most about now).
 *
 * The URL is a secret, and so is body_secret (a key inside the body, such
 * as PagerDuty's routing key): this module never prints either, nor any
 * body. Logs and error messages name the endpoint as tw_redact_endpoint()
 * shows it ("https://hooks.slack.com/…"), and what comes back from the
 * network (curl's messages, the reply) is cut where either secret starts.
 *
 * curl_global_init() must have run (main() does it) before tw_webhook_start().
 * Lifecycle: tw_webhook_start, then tw_webhook_stop (the grace for the
 * queue), then tw_webhook_free.
 */
#ifndef TOKENWATCH_WEBHOOK_H
#define TOKENWATCH_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/error.h"

/* How a message ended; each ends exactly once. */
typedef enum {
    TW_WEBHOOK_SENT = 0, /* the endpoint answered 2xx */
    TW_WEBHOOK_FAILED,   /* refused, out of tries, or unsent at stop */
    TW_WEBHOOK_DROPPED   /* pushed out of a full queue */
} tw_webhook_outcome_t;

typedef enum {
    TW_WEBHOOK_POST = 0, /* the payload as the request body */
    TW_WEBHOOK_GET       /* no body: the payload is ignored */
} tw_webhook_method_t;

/* Zero (or NULL) in any field but url means the default shown. */
typedef struct {
    const char *url;          /* copied; secret; http:// or https:// */
    const char *name;         /* "webhook": names the channel in log lines
                                 ("Slack alert 'x' delivered"); copied */
    const char *what;         /* "alert": what one message is, in log lines */
    tw_webhook_method_t method;
    const char *content_type; /* "application/json" (POST only); copied */
    const char *body_secret;  /* a secret inside the body, or NULL; copied */
    bool newest_only;         /* only the newest message matters (a
                                 heartbeat): a drop is expected, logged at
                                 debug, still counted */
    size_t queue_max;         /* 64: messages waiting, not counting the one
                                 being sent or retried */
    int request_timeout_ms;   /* 10000: one request, connect included */
    int64_t retry_base_ms;    /* 1000 */
    int64_t retry_cap_ms;     /* 60000: also caps a 429's Retry-After */
    unsigned max_attempts;    /* 10: tries per message, the first included */
    /* Time and jitter (borrowed; must outlive the sender). It is called from
     * the sender thread, so do not share a clock whose random01 another
     * thread calls (the system clock's jitter state is not locked). NULL: a
     * system clock of the sender's own. */
    const tw_clock_t *clock;
    /* Called once per message with its outcome (see above), from the sender
     * thread, or from the thread calling tw_webhook_enqueue (a drop) or
     * tw_webhook_stop (messages left unsent); never with a lock held, so it
     * may call tw_webhook_stats. May be NULL. */
    void (*on_result)(void *ctx, tw_webhook_outcome_t outcome);
    void *ctx;
} tw_webhook_opts_t;

typedef struct {
    unsigned long sent;
    unsigned long failed;
    unsigned long dropped;
    size_t queued; /* waiting now, not counting the one in flight */
} tw_webhook_stats_t;

typedef struct tw_webhook tw_webhook_t;

/*
 * Checks the options, copies the URL and starts the sender thread. NULL
 * with err filled (TW_ERR_USAGE for a bad URL or option, TW_ERR_SYSTEM when
 * curl or the thread cannot be set up).
 */
tw_webhook_t *tw_webhook_start(const tw_webhook_opts_t *opts, tw_error_t *err);

/*
 * Queues a copy of payload (the request body, sent as is with the content
 * type of the options) and returns without waiting for the network.
 * summary (copied, may be NULL) names the message in log lines, e.g.
 * "orders WARN"; it must hold no secret. When the queue is full the oldest
 * waiting message is dropped, counted and logged. Thread-safe.
 */
void tw_webhook_enqueue(tw_webhook_t *s, const char *payload,
                        const char *summary);

/*
 * The same, to the URL with path_suffix appended to its path (before any
 * query): "/fail" turns https://hc-ping.com/UUID?x=1 into
 * https://hc-ping.com/UUID/fail?x=1. NULL or "" is the URL itself.
 */
void tw_webhook_enqueue_to(tw_webhook_t *s, const char *payload,
                           const char *summary, const char *path_suffix);

/*
 * Waits until nothing is queued or in flight (every message sent, failed
 * or dropped), or until timeout_ms has passed on the clock. Returns true
 * when the queue drained, false on timeout. Messages keep going out after a
 * timeout. Thread-safe; NULL is drained.
 */
bool tw_webhook_flush(tw_webhook_t *s, int64_t timeout_ms);

/* A snapshot of the counters. Thread-safe; NULL gives zeros. */
void tw_webhook_stats(tw_webhook_t *s, tw_webhook_stats_t *out);

/*
 * Gives the sender up to grace_ms to send what is queued (no retry is
 * started that could not begin before the grace ends), then aborts a
 * request still running and stops (joins) the thread; s stays valid for
 * tw_webhook_stats and tw_webhook_free. Messages left unsent are counted
 * failed, logged and reported to on_result. Returns within about grace_ms
 * even when the endpoint hangs. NULL ok; a second call does nothing. Call
 * it from one thread, after the last tw_webhook_enqueue.
 */
void tw_webhook_stop(tw_webhook_t *s, int64_t grace_ms);

/*
 * Starts the grace of tw_webhook_stop without waiting for it: several
 * senders stopped together (begin each, then tw_webhook_stop each) take
 * the longest grace, not the sum. A later tw_webhook_stop keeps this
 * deadline. NULL ok.
 */
void tw_webhook_stop_begin(tw_webhook_t *s, int64_t grace_ms);

/*
 * Frees s, stopping its thread first (tw_webhook_stop with no grace) if
 * tw_webhook_stop has not run. NULL ok.
 */
void tw_webhook_free(tw_webhook_t *s);

/*
 * Reads a URL from path: one line, with its trailing newline, CR and blanks
 * removed (tw_secret_read_file). *url is the caller's (tw_secret_free). An
 * unreadable or empty file, or one with a second line, is a TW_ERR_USAGE
 * error that names the path and never quotes the content.
 */
bool tw_webhook_read_url_file(const char *path, char **url, tw_error_t *err);

/*
 * The one check of a webhook URL, used by the settings load and by
 * tw_webhook_start: http:// or https:// (any case) with a host, as libcurl's
 * URL parser reads it; any host, port, path and query. Anything else is a
 * TW_ERR_USAGE error whose message never quotes the URL (it is the secret).
 */
bool tw_webhook_check_url(const char *url, tw_error_t *err);

#endif
