#include "tokenwatch/webhook.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/retry.h"
#include "tokenwatch/secret.h"
#include "tokenwatch/utf8.h"

#define DEFAULT_QUEUE_MAX 64
#define DEFAULT_REQUEST_TIMEOUT_MS 10000
#define DEFAULT_RETRY_BASE_MS 1000
#define DEFAULT_RETRY_CAP_MS 60000
#define DEFAULT_MAX_ATTEMPTS 10
/* A queue this long is a configuration mistake, not a need. */
#define QUEUE_MAX_LIMIT 100000
#define ENDPOINT_MAX 256
#define SUMMARY_MAX 128
#define NAME_MAX_LEN 32
/* Slack's error replies are one word ("invalid_payload", "no_service"). */
#define REPLY_MAX 200
/* Waits re-read the clock at least this often, so an injected clock that
 * runs faster or slower than the real one is still followed. */
#define WAIT_SLICE_MS 250
/* How long one curl_multi_poll may sleep before the sender looks again. */
#define POLL_MS 1000

typedef struct {
    char *payload;
    size_t payload_len;
    char *url; /* secret; NULL: the sender's own URL */
    char summary[SUMMARY_MAX];
} message_t;

typedef enum {
    SEND_DELIVERED,
    SEND_REJECTED, /* 4xx: the endpoint will refuse it again */
    SEND_GAVE_UP,  /* max_attempts used up */
    SEND_ABANDONED /* stopping: the grace ended first */
} outcome_t;

/* What one POST came back with. */
typedef struct {
    bool done;     /* curl finished the transfer (rc is its result) */
    bool aborted;  /* tw_webhook_stop's grace ended while it ran */
    CURLcode rc;
    long status;
    int64_t retry_after_ms; /* -1: no usable Retry-After */
    char reply[REPLY_MAX + 1];
    size_t reply_len;
    char error[CURL_ERROR_SIZE];
} attempt_t;

struct tw_webhook {
    char *url;                   /* secret; zeroed before it is freed */
    const char *secret;          /* url's path and query: never printed */
    char *body_secret;           /* a secret inside bodies, or NULL */
    char endpoint[ENDPOINT_MAX]; /* url as tw_redact_endpoint shows it */
    char name[NAME_MAX_LEN];     /* "Slack": in log lines */
    char what[NAME_MAX_LEN];     /* "alert": in log lines */
    tw_webhook_method_t method;
    bool newest_only;
    size_t queue_max;
    long request_timeout_ms;
    int64_t retry_base_ms;
    int64_t retry_cap_ms;
    unsigned max_attempts;
    const tw_clock_t *clock;
    tw_clock_t own_clock;
    void (*on_result)(void *ctx, tw_webhook_outcome_t outcome);
    void *ctx;

    /* Used by the sender thread only (curl_multi_wakeup excepted). */
    CURL *curl;
    CURLM *multi;
    struct curl_slist *headers;
    tw_outage_t outage;

    bool sync_ready; /* lock and conditions initialised */
    bool running;    /* thread started and not yet joined */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* to the sender: a message came, or stop */
    pthread_cond_t idle; /* to flushers: nothing queued or in flight */

    /* Guarded by lock. */
    message_t **ring; /* queue_max slots, oldest at head */
    size_t head;
    size_t count;
    bool busy; /* the sender holds a message (posting or backing off) */
    bool stopping;
    int64_t stop_deadline_ms;
    tw_webhook_stats_t stats;
};

static int64_t now_ms(const tw_webhook_t *s)
{
    return tw_clock_mono_ms(s->clock);
}

/* Waits on cond for up to ms (at most one slice); the caller loops. */
static void wait_slice(pthread_cond_t *cond, pthread_mutex_t *lock, int64_t ms)
{
    struct timespec ts;

    if (ms > WAIT_SLICE_MS)
        ms = WAIT_SLICE_MS;
    if (ms < 1)
        ms = 1;
    tw_mono_deadline(ms, &ts);
    pthread_cond_timedwait(cond, lock, &ts);
}

/* Control characters (a reply's newlines) would break a text log line. */
static void make_printable(char *text)
{
    size_t len;

    for (char *p = text; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    len = strlen(text);
    while (len > 0 && text[len - 1] == ' ')
        text[--len] = '\0';
}

/*
 * libcurl's messages name the host, never the path, and the replies are a
 * word or a short JSON object; still, anything that came from outside is
 * cut where a secret (the URL's path, a key in the body) would start, so no
 * future message can leak it.
 */
static void scrub(const tw_webhook_t *s, char *text, size_t size)
{
    tw_redact_scrub(text, size, s->secret);
    tw_redact_scrub(text, size, s->body_secret);
}

bool tw_webhook_check_url(const char *url, tw_error_t *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL;
    char *host = NULL;
    bool ok = u && url && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              (strcmp(scheme, "https") == 0 || strcmp(scheme, "http") == 0) &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              host[0] != '\0';

    /* The URL is the secret: the message never quotes it. */
    if (!ok)
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "not an http(s) URL with a host (expected "
                     "https://host/path...)");
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}

/* url with suffix appended to its path, or NULL when libcurl cannot put it
 * there (the caller then logs and drops the message). */
static char *url_with_suffix(const char *url, const char *suffix)
{
    CURLU *u = curl_url();
    char *path = NULL;
    char *full = NULL;
    char *joined;
    char *out = NULL;
    size_t len;

    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        goto out_cleanup;
    len = strlen(path);
    /* "/uuid/" + "/fail" is "/uuid/fail", not "/uuid//fail". */
    if (len > 0 && path[len - 1] == '/' && suffix[0] == '/')
        len--;
    joined = tw_malloc(len + strlen(suffix) + 1);
    memcpy(joined, path, len);
    memcpy(joined + len, suffix, strlen(suffix) + 1);
    if (curl_url_set(u, CURLUPART_PATH, joined, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_URL, &full, 0) == CURLUE_OK)
        out = tw_strdup(full);
    tw_secret_free(joined);
out_cleanup:
    if (full)
        explicit_bzero(full, strlen(full));
    curl_free(full);
    curl_free(path);
    curl_url_cleanup(u);
    return out;
}

static message_t *message_new(const char *payload, const char *summary)
{
    message_t *m = tw_calloc(1, sizeof *m);

    m->payload_len = strlen(payload);
    m->payload = tw_malloc(m->payload_len + 1);
    memcpy(m->payload, payload, m->payload_len + 1);
    tw_utf8_format(m->summary, sizeof m->summary, "%s", summary ? summary : "message");
    make_printable(m->summary);
    return m;
}

/* A body may hold a secret (PagerDuty's routing key): wiped before it goes. */
static void message_free(message_t *m)
{
    if (!m)
        return;
    explicit_bzero(m->payload, m->payload_len);
    free(m->payload);
    tw_secret_free(m->url);
    free(m);
}

static message_t *pop_locked(tw_webhook_t *s)
{
    message_t *m = s->ring[s->head];

    s->ring[s->head] = NULL;
    s->head = (s->head + 1) % s->queue_max;
    s->count--;
    return m;
}

static void report(const tw_webhook_t *s, tw_webhook_outcome_t outcome)
{
    if (s->on_result)
        s->on_result(s->ctx, outcome);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    attempt_t *a = ud;
    size_t n = size * nmemb;
    size_t room = REPLY_MAX - a->reply_len;
    size_t take = n < room ? n : room;

    /* Only the start is kept for the log; the rest is read and ignored. */
    memcpy(a->reply + a->reply_len, data, take);
    a->reply_len += take;
    a->reply[a->reply_len] = '\0';
    return n;
}

/*
 * True when tw_webhook_stop's grace is over; otherwise shortens *wait_ms so
 * the caller looks again when it ends.
 */
static bool stop_due(tw_webhook_t *s, int *wait_ms)
{
    bool due = false;

    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        int64_t left = s->stop_deadline_ms - now_ms(s);

        if (left <= 0)
            due = true;
        else if (left < *wait_ms)
            *wait_ms = (int)left;
    }
    pthread_mutex_unlock(&s->lock);
    return due;
}

/*
 * One POST through the multi interface, so that tw_webhook_stop can wake the
 * wait (curl_multi_wakeup) and abort a request the webhook never answers.
 */
static void prepare_request(tw_webhook_t *s, const message_t *m, attempt_t *a)
{
    memset(a, 0, sizeof *a);
    a->retry_after_ms = -1;
    curl_easy_setopt(s->curl, CURLOPT_URL, m->url ? m->url : s->url);
    if (s->method == TW_WEBHOOK_GET) {
        curl_easy_setopt(s->curl, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, m->payload);
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)m->payload_len);
    }
}

static void post_once(tw_webhook_t *s, const message_t *m, attempt_t *a)
{
    CURLMcode mc;
    CURLMsg *msg;
    int left;

    prepare_request(s, m, a);
    curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, a->error);
    mc = curl_multi_add_handle(s->multi, s->curl);
    if (mc != CURLM_OK) {
        a->done = true;
        a->rc = CURLE_FAILED_INIT;
        snprintf(a->error, sizeof a->error, "curl_multi_add_handle: %s",
                 curl_multi_strerror(mc));
        return;
    }
    for (;;) {
        int running = 0;
        int wait_ms = POLL_MS;

        mc = curl_multi_perform(s->multi, &running);
        if (mc != CURLM_OK || running == 0)
            break;
        if (stop_due(s, &wait_ms)) {
            a->aborted = true;
            break;
        }
        mc = curl_multi_poll(s->multi, NULL, 0, wait_ms, NULL);
        if (mc != CURLM_OK)
            break;
    }
    while (!a->aborted && (msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg == CURLMSG_DONE) {
            a->done = true;
            a->rc = msg->data.result;
        }
    }
    if (!a->aborted && !a->done) {
        a->done = true;
        a->rc = CURLE_FAILED_INIT;
        snprintf(a->error, sizeof a->error, "curl multi: %s",
                 curl_multi_strerror(mc));
    }
    if (a->done && a->rc == CURLE_OK) {
        curl_off_t wait_s = 0;

        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &a->status);
        /* libcurl reads both forms, delta-seconds and an HTTP-date; 0 when
         * there is none, it cannot be read or its date is past. A day is
         * more than any cap (deliver caps it at retry_cap_ms anyway). */
        if (curl_easy_getinfo(s->curl, CURLINFO_RETRY_AFTER, &wait_s) == CURLE_OK &&
            wait_s > 0)
            a->retry_after_ms = wait_s > 86400 ? 86400000 : (int64_t)wait_s * 1000;
    }
    curl_multi_remove_handle(s->multi, s->curl);
    /* The buffer belongs to this attempt: curl must not keep it. */
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, NULL);
    scrub(s, a->error, sizeof a->error);
    make_printable(a->error);
    scrub(s, a->reply, sizeof a->reply);
    make_printable(a->reply);
}

static void describe(const attempt_t *a, char *out, size_t n)
{
    if (a->rc != CURLE_OK)
        snprintf(out, n, "%s", a->error[0] ? a->error : curl_easy_strerror(a->rc));
    else if (a->reply[0])
        snprintf(out, n, "HTTP %ld (%s)", a->status, a->reply);
    else
        snprintf(out, n, "HTTP %ld", a->status);
}

/*
 * Waits delay_ms before the next try. False when tw_webhook_stop's grace
 * would end first: the message is abandoned now rather than at the end.
 */
static bool pause_before_retry(tw_webhook_t *s, int64_t delay_ms)
{
    int64_t until = now_ms(s) + delay_ms;
    bool go = true;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        int64_t now = now_ms(s);

        if (s->stopping && s->stop_deadline_ms < until) {
            go = false;
            break;
        }
        /* Strictly after: the clock counts whole ms, so "now" may be up to
         * 1 ms behind, and a Retry-After must never be cut short. */
        if (now > until)
            break;
        wait_slice(&s->wake, &s->lock, until - now + 1);
    }
    pthread_mutex_unlock(&s->lock);
    return go;
}

static void webhook_answered(tw_webhook_t *s)
{
    unsigned failures = s->outage.failures;

    if (tw_outage_ok(&s->outage, now_ms(s)))
        TW_INFO("%s webhook %s answering again after %.1fs (%u failed "
                "tries)",
                s->name, s->endpoint, (double)s->outage.ended_after_ms / 1000.0,
                failures);
}

/* Posts m until it is delivered, refused, out of tries or stopped. */
static outcome_t deliver(tw_webhook_t *s, const message_t *m)
{
    tw_backoff_t backoff;
    attempt_t a;
    char why[CURL_ERROR_SIZE + REPLY_MAX + 32];

    tw_backoff_init(&backoff, s->retry_base_ms, s->retry_cap_ms);
    for (unsigned attempt = 1;; attempt++) {
        int64_t delay;

        post_once(s, m, &a);
        if (a.aborted) {
            TW_WARN("%s %s '%s' not sent: stopping while %s did not "
                    "answer",
                    s->name, s->what, m->summary, s->endpoint);
            return SEND_ABANDONED;
        }
        describe(&a, why, sizeof why);
        if (a.rc == CURLE_OK && a.status >= 200 && a.status < 300) {
            webhook_answered(s);
            TW_DEBUG("%s %s '%s' delivered (try %u)", s->name, s->what, m->summary,
                     attempt);
            return SEND_DELIVERED;
        }
        if (a.rc == CURLE_OK && a.status != 429 && a.status < 500) {
            /* It will be refused again: a bad payload, a revoked or
             * mistyped webhook or key, an archived channel. */
            webhook_answered(s);
            TW_ERROR("%s refused %s '%s' at %s: %s; dropped, not "
                     "retried",
                     s->name, s->what, m->summary, s->endpoint, why);
            return SEND_REJECTED;
        }
        if (tw_outage_fail(&s->outage, now_ms(s)))
            TW_WARN("%s webhook %s failing: %s; retrying with backoff",
                    s->name, s->endpoint, why);
        else
            TW_DEBUG("%s webhook %s still failing: %s", s->name, s->endpoint, why);
        if (attempt >= s->max_attempts) {
            TW_WARN("%s %s '%s' given up after %u tries: %s",
                    s->name, s->what, m->summary, attempt, why);
            return SEND_GAVE_UP;
        }
        /* The backoff advances on a 429 too, so 5xx after it wait longer. */
        delay = tw_backoff_next(&backoff, tw_clock_random01(s->clock));
        if (a.rc == CURLE_OK && a.status == 429 && a.retry_after_ms >= 0)
            delay = a.retry_after_ms < s->retry_cap_ms ? a.retry_after_ms
                                                       : s->retry_cap_ms;
        if (!pause_before_retry(s, delay)) {
            TW_WARN("%s %s '%s' not sent: stopping before the next try "
                    "(last: %s)",
                    s->name, s->what, m->summary, why);
            return SEND_ABANDONED;
        }
    }
}

static void *sender_main(void *arg)
{
    tw_webhook_t *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        message_t *m;
        outcome_t outcome;

        while (s->count == 0 && !s->stopping)
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->count == 0 ||
            (s->stopping && now_ms(s) >= s->stop_deadline_ms))
            break;
        m = pop_locked(s);
        /* Set with the pop, so a flush never sees the queue empty and the
         * sender idle while a message is in hand. */
        s->busy = true;
        pthread_mutex_unlock(&s->lock);

        outcome = deliver(s, m);
        report(s, outcome == SEND_DELIVERED ? TW_WEBHOOK_SENT : TW_WEBHOOK_FAILED);
        message_free(m);

        pthread_mutex_lock(&s->lock);
        if (outcome == SEND_DELIVERED)
            s->stats.sent++;
        else
            s->stats.failed++;
        s->busy = false;
        if (s->count == 0)
            pthread_cond_broadcast(&s->idle);
    }
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static bool init_sync(tw_webhook_t *s)
{
    pthread_condattr_t attr;
    bool ok = false;

    if (pthread_condattr_init(&attr) != 0)
        return false;
    /* Timed waits must not jump with the wall clock. */
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0)
        goto out_destroy_attr;
    if (pthread_mutex_init(&s->lock, NULL) != 0)
        goto out_destroy_attr;
    if (pthread_cond_init(&s->wake, &attr) != 0)
        goto out_destroy_lock;
    if (pthread_cond_init(&s->idle, &attr) != 0)
        goto out_destroy_wake;
    s->sync_ready = true;
    ok = true;
    goto out_destroy_attr;
out_destroy_wake:
    pthread_cond_destroy(&s->wake);
out_destroy_lock:
    pthread_mutex_destroy(&s->lock);
out_destroy_attr:
    pthread_condattr_destroy(&attr);
    return ok;
}

static bool init_curl(tw_webhook_t *s, const char *content_type)
{
    struct curl_slist *h;
    char header[160];
    bool ok;

    s->curl = curl_easy_init();
    s->multi = curl_multi_init();
    if (!s->curl || !s->multi)
        return false;
    if (s->method == TW_WEBHOOK_POST) {
        snprintf(header, sizeof header, "Content-Type: %s", content_type);
        h = curl_slist_append(NULL, header);
        if (!h)
            return false;
        s->headers = h;
        /* No "Expect: 100-continue" round trip before the body. */
        h = curl_slist_append(s->headers, "Expect:");
        if (!h)
            return false;
        s->headers = h;
    }
    ok = curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, s->headers) == CURLE_OK &&
         /* Threads: no alarm() around name lookups. */
         curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
         curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, s->request_timeout_ms) ==
             CURLE_OK &&
         curl_easy_setopt(s->curl, CURLOPT_USERAGENT, "tokenwatch") == CURLE_OK &&
         curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    ok = ok && curl_easy_setopt(s->curl, CURLOPT_PROTOCOLS_STR, "http,https") ==
                   CURLE_OK;
#else
    ok = ok && curl_easy_setopt(s->curl, CURLOPT_PROTOCOLS,
                                (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) ==
                   CURLE_OK;
#endif
    return ok;
}

/* The sender leaves signals to the main thread, whose handler sets the stop
 * flag and whose waits they are meant to interrupt. */
static int start_thread(tw_webhook_t *s)
{
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&s->thread, NULL, sender_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    s->running = rc == 0;
    return rc;
}

static const char *or_default(const char *value, const char *def)
{
    return value && value[0] ? value : def;
}

/* What tw_webhook_start refuses before it builds anything. */
static bool check_opts(const tw_webhook_opts_t *opts, tw_error_t *err)
{
    const char *name = opts ? or_default(opts->name, "webhook") : "webhook";

    if (!opts || !opts->url || !opts->url[0]) {
        tw_error_set(err, TW_ERR_USAGE, 0, "no %s URL", name);
        return false;
    }
    if (!tw_webhook_check_url(opts->url, err)) {
        tw_error_prefix(err, "the %s URL", name);
        return false;
    }
    if (opts->queue_max > QUEUE_MAX_LIMIT || opts->request_timeout_ms < 0 ||
        opts->retry_base_ms < 0 || opts->retry_cap_ms < 0 ||
        (opts->method != TW_WEBHOOK_POST && opts->method != TW_WEBHOOK_GET)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "%s sender: queue_max must be at most %d, timeouts "
                     "and retry delays not negative, the method GET or POST",
                     name, QUEUE_MAX_LIMIT);
        return false;
    }
    return true;
}

/* The options, with their defaults, into a zeroed s. */
static void apply_opts(tw_webhook_t *s, const tw_webhook_opts_t *opts)
{
    s->url = tw_strdup(opts->url);
    s->secret = tw_redact_endpoint_secret(s->url);
    s->body_secret = opts->body_secret ? tw_strdup(opts->body_secret) : NULL;
    tw_redact_endpoint(s->url, s->endpoint, sizeof s->endpoint);
    tw_utf8_format(s->name, sizeof s->name, "%s", or_default(opts->name, "webhook"));
    tw_utf8_format(s->what, sizeof s->what, "%s", or_default(opts->what, "alert"));
    s->method = opts->method;
    s->newest_only = opts->newest_only;
    s->queue_max = opts->queue_max ? opts->queue_max : DEFAULT_QUEUE_MAX;
    s->request_timeout_ms = opts->request_timeout_ms ? opts->request_timeout_ms
                                                     : DEFAULT_REQUEST_TIMEOUT_MS;
    s->retry_base_ms = opts->retry_base_ms ? opts->retry_base_ms
                                           : DEFAULT_RETRY_BASE_MS;
    s->retry_cap_ms = opts->retry_cap_ms ? opts->retry_cap_ms
                                         : DEFAULT_RETRY_CAP_MS;
    if (s->retry_cap_ms < s->retry_base_ms)
        s->retry_cap_ms = s->retry_base_ms;
    s->max_attempts = opts->max_attempts ? opts->max_attempts
                                         : DEFAULT_MAX_ATTEMPTS;
    if (opts->clock) {
        s->clock = opts->clock;
    } else {
        /* s is on the heap, so the clock's pointer to its state holds. */
        tw_clock_init_system(&s->own_clock);
        s->clock = &s->own_clock;
    }
    s->on_result = opts->on_result;
    s->ctx = opts->ctx;
    s->ring = tw_calloc(s->queue_max, sizeof *s->ring);
}

tw_webhook_t *tw_webhook_start(const tw_webhook_opts_t *opts, tw_error_t *err)
{
    tw_webhook_t *s = NULL;
    int rc;

    if (!check_opts(opts, err))
        return NULL;
    s = tw_calloc(1, sizeof *s);
    apply_opts(s, opts);
    if (!init_sync(s)) {
        tw_error_set(err, TW_ERR_SYSTEM, 0, "%s sender: cannot create its lock", s->name);
        goto out_free;
    }
    if (!init_curl(s, or_default(opts->content_type, "application/json"))) {
        tw_error_set(err, TW_ERR_SYSTEM, 0,
                     "%s sender: cannot set up libcurl (was "
                     "curl_global_init called?)",
                     s->name);
        goto out_free;
    }
    rc = start_thread(s);
    if (rc != 0) {
        tw_error_set(err, TW_ERR_SYSTEM, rc, "%s sender: cannot start its thread: %s",
                     s->name, strerror(rc));
        goto out_free;
    }
    TW_DEBUG("%s sender started for %s (queue %zu, %u tries per %s)", s->name,
             s->endpoint, s->queue_max, s->max_attempts, s->what);
    return s;
out_free:
    tw_webhook_free(s);
    return NULL;
}

void tw_webhook_enqueue(tw_webhook_t *s, const char *payload, const char *summary)
{
    tw_webhook_enqueue_to(s, payload, summary, NULL);
}

/* Logs a message pushed out of the full queue by the newest. */
static void tell_dropped(const tw_webhook_t *s, const message_t *dropped,
                         const char *newest)
{
    if (s->newest_only)
        TW_DEBUG("%s: %s '%s' replaced by a newer one, '%s'", s->name, s->what,
                 dropped->summary, newest);
    else
        TW_WARN("%s queue full (%zu waiting for %s): dropped the oldest "
                "%s '%s' for '%s'",
                s->name, s->queue_max, s->endpoint, s->what, dropped->summary, newest);
}

void tw_webhook_enqueue_to(tw_webhook_t *s, const char *payload,
                           const char *summary, const char *path_suffix)
{
    message_t *m;
    message_t *dropped = NULL;
    char newest[SUMMARY_MAX];

    if (!s || !payload)
        return;
    m = message_new(payload, summary);
    if (path_suffix && path_suffix[0] && !(m->url = url_with_suffix(s->url, path_suffix))) {
        TW_ERROR("%s %s '%s': the URL cannot take the path '%s'; not sent", s->name,
                 s->what, m->summary, path_suffix);
        message_free(m);
        return;
    }
    /* Once queued, m is the sender's (or the next enqueue's) to free. */
    memcpy(newest, m->summary, sizeof newest);
    pthread_mutex_lock(&s->lock);
    if (s->count == s->queue_max) {
        dropped = pop_locked(s);
        s->stats.dropped++;
    }
    s->ring[(s->head + s->count) % s->queue_max] = m;
    s->count++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    if (dropped) {
        tell_dropped(s, dropped, newest);
        report(s, TW_WEBHOOK_DROPPED);
        message_free(dropped);
    }
}

bool tw_webhook_flush(tw_webhook_t *s, int64_t timeout_ms)
{
    int64_t until;
    bool drained;

    if (!s)
        return true;
    until = now_ms(s) + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        int64_t left;

        drained = s->count == 0 && !s->busy;
        left = until - now_ms(s);
        if (drained || left <= 0)
            break;
        wait_slice(&s->idle, &s->lock, left);
    }
    pthread_mutex_unlock(&s->lock);
    return drained;
}

void tw_webhook_stats(tw_webhook_t *s, tw_webhook_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    out->queued = s->count;
    pthread_mutex_unlock(&s->lock);
}

void tw_webhook_stop_begin(tw_webhook_t *s, int64_t grace_ms)
{
    if (!s || !s->running)
        return;
    pthread_mutex_lock(&s->lock);
    if (!s->stopping) {
        s->stopping = true;
        s->stop_deadline_ms = now_ms(s) + (grace_ms > 0 ? grace_ms : 0);
    }
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    /* Ends a curl_multi_poll now (or the next one, if none runs yet). */
    curl_multi_wakeup(s->multi);
}

void tw_webhook_stop(tw_webhook_t *s, int64_t grace_ms)
{
    if (!s || !s->running)
        return;
    tw_webhook_stop_begin(s, grace_ms);
    pthread_join(s->thread, NULL);
    s->running = false;

    /* The thread is gone: what is left needs no lock. */
    while (s->count > 0) {
        message_t *m = pop_locked(s);

        s->stats.failed++;
        TW_WARN("%s %s '%s' not sent: stopping with it still queued", s->name,
                s->what, m->summary);
        report(s, TW_WEBHOOK_FAILED);
        message_free(m);
    }
}

/* Also frees what a failed tw_webhook_start built, however far it got. */
void tw_webhook_free(tw_webhook_t *s)
{
    if (!s)
        return;
    if (s->running)
        tw_webhook_stop(s, 0);
    if (s->ring) {
        while (s->count > 0)
            message_free(pop_locked(s));
        free(s->ring);
    }
    if (s->sync_ready) {
        pthread_cond_destroy(&s->idle);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
    }
    curl_easy_cleanup(s->curl);
    curl_multi_cleanup(s->multi);
    curl_slist_free_all(s->headers);
    tw_secret_free(s->url);
    tw_secret_free(s->body_secret);
    free(s);
}

bool tw_webhook_read_url_file(const char *path, char **url, tw_error_t *err)
{
    return tw_secret_read_file(path, "the webhook URL file", url, err);
}
