/*
 * slack.h - sends ready-made JSON payloads to a Slack incoming webhook.
 *
 * The watcher must never wait for Slack, so a tw_slack_t owns a bounded
 * queue and one sender thread: tw_slack_enqueue() only copies the payload
 * under a mutex and returns. The sender posts the oldest message first and
 * retries it (network errors, HTTP 5xx, 429) with capped exponential backoff
 * and jitter before it moves on, so alerts reach Slack in the order they were
 * raised; max_attempts bounds how long one message can hold the queue.
 *
 * Every enqueued message ends in exactly one way, counted in
 * tw_slack_stats_t and reported once through on_result:
 *   sent     - Slack answered 2xx;
 *   failed   - Slack refused it (4xx other than 429), max_attempts ran out,
 *              or tw_slack_stop's grace ended before it could be sent;
 *   dropped  - the queue was full when a newer message came: the oldest
 *              waiting one makes room (the newest says most about now).
 *
 * The webhook URL is a secret: this module never prints it. Logs and error
 * messages name the endpoint as tw_slack_redact() shows it
 * ("https://hooks.slack.com/…").
 *
 * curl_global_init() must have run (main() does it) before tw_slack_start().
 * Lifecycle: tw_slack_start, then tw_slack_stop (the grace for the queue),
 * then tw_slack_free.
 */
#ifndef TOKENWATCH_SLACK_H
#define TOKENWATCH_SLACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/error.h"

/* Zero (or NULL) in any field but webhook_url means the default shown. */
/* How a message ended; each ends exactly once. */
typedef enum {
    TW_SLACK_SENT = 0, /* Slack answered 2xx */
    TW_SLACK_FAILED,   /* refused, out of tries, or unsent at stop */
    TW_SLACK_DROPPED   /* pushed out of a full queue */
} tw_slack_outcome_t;

typedef struct {
    const char *webhook_url;  /* copied; secret; http:// or https:// */
    size_t queue_max;         /* 64: messages waiting, not counting the one
                                 being sent or retried */
    int request_timeout_ms;   /* 10000: one POST, connect included */
    int64_t retry_base_ms;    /* 1000 */
    int64_t retry_cap_ms;     /* 60000: also caps a 429's Retry-After */
    unsigned max_attempts;    /* 10: tries per message, the first included */
    /* Time and jitter (borrowed; must outlive the sender). It is called from
     * the sender thread, so do not share a clock whose random01 another
     * thread calls (the system clock's jitter state is not locked). NULL: a
     * system clock of the sender's own. */
    const tw_clock_t *clock;
    /* Called once per message with its outcome (see above), from the sender
     * thread, or from the thread calling tw_slack_enqueue (a drop) or
     * tw_slack_stop (messages left unsent); never with a lock held, so it
     * may call tw_slack_stats. May be NULL. */
    void (*on_result)(void *ctx, tw_slack_outcome_t outcome);
    void *ctx;
} tw_slack_opts_t;

typedef struct {
    unsigned long sent;
    unsigned long failed;
    unsigned long dropped;
    size_t queued; /* waiting now, not counting the one in flight */
} tw_slack_stats_t;

typedef struct tw_slack tw_slack_t;

/*
 * Checks the options, copies the URL and starts the sender thread. NULL
 * with err filled (TW_ERR_USAGE for a bad URL or option, TW_ERR_SYSTEM when
 * curl or the thread cannot be set up).
 */
tw_slack_t *tw_slack_start(const tw_slack_opts_t *opts, tw_error_t *err);

/*
 * Queues a copy of payload_json (the request body, sent as is with
 * Content-Type: application/json) and returns without waiting for the
 * network. summary (copied, may be NULL) names the message in log lines,
 * e.g. "orders WARN"; it must hold no secret. When the queue is full the
 * oldest waiting message is dropped, counted and logged. Thread-safe.
 */
void tw_slack_enqueue(tw_slack_t *s, const char *payload_json,
                      const char *summary);

/*
 * Waits until nothing is queued or in flight (every message sent, failed
 * or dropped), or until timeout_ms has passed on the clock. Returns true
 * when the queue drained, false on timeout. Messages keep going out after a
 * timeout. Thread-safe.
 */
bool tw_slack_flush(tw_slack_t *s, int64_t timeout_ms);

/* A snapshot of the counters. Thread-safe. */
void tw_slack_stats(tw_slack_t *s, tw_slack_stats_t *out);

/*
 * Gives the sender up to grace_ms to send what is queued (no retry is
 * started that could not begin before the grace ends), then aborts a
 * request still running and stops (joins) the thread; s stays valid for
 * tw_slack_stats and tw_slack_free. Messages left unsent are counted
 * failed, logged and reported to on_result. Returns within about grace_ms
 * even when the webhook hangs. NULL ok; a second call does nothing. Call it
 * from one thread, after the last tw_slack_enqueue.
 */
void tw_slack_stop(tw_slack_t *s, int64_t grace_ms);

/*
 * Frees s, stopping its thread first (tw_slack_stop with no grace) if
 * tw_slack_stop has not run. NULL ok.
 */
void tw_slack_free(tw_slack_t *s);

/*
 * Reads a webhook URL from path: one line, with its trailing newline, CR
 * and blanks removed. *url is malloc'd (the caller frees it, ideally after
 * zeroing). An unreadable or empty file, or one with a second line, is a
 * TW_ERR_USAGE error that names the path and never quotes the content.
 */
bool tw_slack_read_webhook_file(const char *path, char **url, tw_error_t *err);

/*
 * The one check of a webhook URL, used by the settings load and by
 * tw_slack_start: http:// or https:// (any case) with a host, as libcurl's
 * URL parser reads it; any host, port, path and query. Anything else is a
 * TW_ERR_USAGE error whose message never quotes the URL (it is the secret).
 */
bool tw_slack_check_url(const char *url, tw_error_t *err);

/*
 * The URL reduced to scheme, host and port, for logs:
 * "https://hooks.slack.com/services/T/B/X" -> "https://hooks.slack.com/…".
 * Any user name or password is left out. What cannot be parsed becomes
 * "…". Truncated to fit n bytes (NUL included); NULL url ok.
 */
void tw_slack_redact(const char *url, char *out, size_t n);

#endif
