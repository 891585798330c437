/*
 * The webhook sender (the one sender of every channel: Slack, the generic
 * JSON webhook, PagerDuty, the heartbeat) against a local webhook
 * (tests/support/webhook.py): delivery, retries with backoff, Retry-After,
 * refusals, a hanging webhook, queue overflow, flush, stop, GET and path
 * suffixes, and the URL and a secret in the body kept out of everything
 * tokenwatch prints. Each test starts its own webhook on a free port and
 * sends tokenwatch's log to a file of its own.
 */
#include <criterion/criterion.h>

#include <bson/bson.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tokenwatch/clock.h"
#include "tokenwatch/error.h"
#include "tokenwatch/log.h"
#include "tokenwatch/webhook.h"

/* Every part of the path a real webhook keeps secret says SECRET, so one
 * search finds any leak of it. */
#define SECRET_PATH "/services/T0SECRET1/B0SECRET2/xoxSECRET3token"
#define SECRET_MARK "SECRET"
#define PYTHON "/usr/bin/python3"
#define RECEIVED_MAX 128

typedef struct {
    th_proc_t proc;
    int port;
    char url[256];      /* the secret webhook URL */
    char endpoint[128]; /* how tokenwatch may name it */
} webhook_t;

typedef struct {
    int status;
    double time;
    char method[8];
    char path[256];
    char content_type[128];
    char *raw;
} delivery_t;

typedef struct {
    size_t n;
    delivery_t d[RECEIVED_MAX];
} received_t;

static char dir[PATH_MAX];
static char log_path[PATH_MAX];
static FILE *log_file;
static webhook_t wh;
static tw_webhook_t *sender;
static tw_clock_t test_clock;

static pthread_mutex_t results_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned results_delivered;
static unsigned results_not_delivered;

/* ------------------------------------------------------------------ */
/* Fixture                                                              */

static void on_result(void *ctx, tw_webhook_outcome_t outcome)
{
    (void)ctx;
    pthread_mutex_lock(&results_lock);
    if (outcome == TW_WEBHOOK_SENT)
        results_delivered++;
    else
        results_not_delivered++;
    pthread_mutex_unlock(&results_lock);
}

static void results(unsigned *delivered, unsigned *not_delivered)
{
    pthread_mutex_lock(&results_lock);
    *delivered = results_delivered;
    *not_delivered = results_not_delivered;
    pthread_mutex_unlock(&results_lock);
}

/* Jitter fixed at the middle, so every backoff delay is known. */
static double half(void *ctx)
{
    (void)ctx;
    return 0.5;
}

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cr_assert(th_tmpdir(dir, sizeof dir));
    cr_assert(th_path(log_path, sizeof log_path, dir, "tokenwatch.log"));
    log_file = fopen(log_path, "w");
    cr_assert_not_null(log_file);
    tw_log_configure(TW_LOG_DEBUG, TW_LOG_TEXT, "test", "test", log_file);
    tw_clock_init_system(&test_clock);
    test_clock.random01 = half;
    results_delivered = results_not_delivered = 0;
}

static void teardown(void)
{
    tw_webhook_free(sender);
    sender = NULL;
    th_proc_stop(&wh.proc, 5000);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, "default", "dev", NULL);
    if (log_file)
        fclose(log_file);
    log_file = NULL;
    th_rmtree(dir);
    curl_global_cleanup();
}

TestSuite(webhook, .init = setup, .fini = teardown, .timeout = 60);

static bool port_file_ready(void *ctx)
{
    const char *path = ctx;
    bson_error_t error;
    bson_iter_t it;
    size_t len = 0;
    char *text = th_read_file_len(path, &len);
    bson_t *doc = text && len ? bson_new_from_json((const uint8_t *)text,
                                                   (ssize_t)len, &error)
                              : NULL;

    if (doc && bson_iter_init_find(&it, doc, "port") &&
        BSON_ITER_HOLDS_INT32(&it))
        wh.port = bson_iter_int32(&it);
    bson_destroy(doc);
    free(text);
    return wh.port > 0;
}

static void wh_start(void)
{
    char script[PATH_MAX];
    char port_file[PATH_MAX];
    static const char *const env[] = {"PYTHONUNBUFFERED=1",
                                      "PYTHONDONTWRITEBYTECODE=1", NULL};

    cr_assert_not_null(th_source_dir());
    snprintf(script, sizeof script, "%s/tests/support/webhook.py",
             th_source_dir());
    cr_assert(th_path(port_file, sizeof port_file, dir, "webhook.port"));
    {
        const char *const argv[] = {PYTHON, script, "--port-file", port_file,
                                    NULL};

        cr_assert(th_proc_spawn(&wh.proc, dir, argv, env));
    }
    th_assert_dump(th_wait_until(port_file_ready, port_file, 10000),
                   wh.proc.err_path, "webhook.py writes its port file");
    snprintf(wh.url, sizeof wh.url, "http://127.0.0.1:%d" SECRET_PATH, wh.port);
    snprintf(wh.endpoint, sizeof wh.endpoint, "http://127.0.0.1:%d/\xe2\x80\xa6",
             wh.port);
}

struct buf {
    char *data;
    size_t len;
};

static size_t buf_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct buf *b = ud;
    size_t n = size * nmemb;
    char *grown = realloc(b->data, b->len + n + 1);

    if (!grown)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* A control request to webhook.py; the reply body (free), asserted 200. */
static char *wh_request(const char *method, const char *path, const char *body)
{
    struct buf b = {NULL, 0};
    char url[128];
    long status = 0;
    CURLcode rc;
    CURL *curl = curl_easy_init();

    cr_assert_not_null(curl);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", wh.port, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
    rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    cr_assert_eq(status, 200, "%s %s: HTTP %ld %s", method, path, status,
                 b.data ? b.data : "");
    return b.data ? b.data : strdup("");
}

static void wh_script(const char *json)
{
    free(wh_request("POST", "/control/script", json));
}

static void copy_utf8_field(const bson_t *doc, const char *key, char *out,
                            size_t n)
{
    bson_iter_t it;

    out[0] = '\0';
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(out, n, "%s", bson_iter_utf8(&it, NULL));
}

/* What webhook.py has received, oldest first (received_free). */
static received_t *wh_received(void)
{
    char *list = wh_request("GET", "/control/received", NULL);
    char *wrapped = bson_strdup_printf("{\"a\": %s}", list);
    received_t *r = calloc(1, sizeof *r);
    bson_error_t error;
    bson_iter_t it, arr;
    bson_t *doc = bson_new_from_json((const uint8_t *)wrapped, -1, &error);

    cr_assert_not_null(r);
    cr_assert_not_null(doc, "received: %s", error.message);
    cr_assert(bson_iter_init_find(&it, doc, "a") && BSON_ITER_HOLDS_ARRAY(&it));
    cr_assert(bson_iter_recurse(&it, &arr));
    while (bson_iter_next(&arr) && r->n < RECEIVED_MAX) {
        delivery_t *d = &r->d[r->n++];
        const uint8_t *data;
        uint32_t len;
        bson_t one;
        bson_iter_t f;

        cr_assert(BSON_ITER_HOLDS_DOCUMENT(&arr));
        bson_iter_document(&arr, &len, &data);
        cr_assert(bson_init_static(&one, data, len));
        if (bson_iter_init_find(&f, &one, "status"))
            d->status = (int)bson_iter_as_int64(&f);
        if (bson_iter_init_find(&f, &one, "time"))
            d->time = bson_iter_as_double(&f);
        copy_utf8_field(&one, "path", d->path, sizeof d->path);
        copy_utf8_field(&one, "method", d->method, sizeof d->method);
        copy_utf8_field(&one, "content_type", d->content_type,
                        sizeof d->content_type);
        if (bson_iter_init_find(&f, &one, "raw") && BSON_ITER_HOLDS_UTF8(&f))
            d->raw = strdup(bson_iter_utf8(&f, NULL));
    }
    bson_destroy(doc);
    bson_free(wrapped);
    free(list);
    return r;
}

static void received_free(received_t *r)
{
    if (!r)
        return;
    for (size_t k = 0; k < r->n; k++)
        free(r->d[k].raw);
    free(r);
}

static size_t received_count(void)
{
    received_t *r = wh_received();
    size_t n = r->n;

    received_free(r);
    return n;
}

static bool received_at_least(void *ctx)
{
    return received_count() >= *(size_t *)ctx;
}

static void wait_received(size_t n)
{
    th_assert_dump(th_wait_until(received_at_least, &n, 10000), log_path,
                   "webhook.py receives %zu requests", n);
}

/* Options for quick tests: 50 ms base, 400 ms cap, fixed jitter. */
static tw_webhook_opts_t quick_opts(const char *url)
{
    tw_webhook_opts_t o;

    memset(&o, 0, sizeof o);
    o.url = url;
    o.name = "Slack"; /* the log lines asserted here name the channel */
    o.queue_max = 8;
    o.request_timeout_ms = 5000;
    o.retry_base_ms = 50;
    o.retry_cap_ms = 400;
    o.max_attempts = 5;
    o.clock = &test_clock;
    o.on_result = on_result;
    return o;
}

static void start(const tw_webhook_opts_t *o)
{
    tw_error_t err = {0};

    sender = tw_webhook_start(o, &err);
    cr_assert_not_null(sender, "tw_webhook_start: %s", err.message);
}

static void message(char *out, size_t n, int k)
{
    snprintf(out, n, "{\"text\":\"message %d\"}", k);
}

static void enqueue(int k)
{
    char payload[64];
    char summary[32];

    message(payload, sizeof payload, k);
    snprintf(summary, sizeof summary, "alert %d", k);
    tw_webhook_enqueue(sender, payload, summary);
}

static char *log_text(void)
{
    char *text;

    fflush(log_file);
    text = th_read_file(log_path);
    cr_assert_not_null(text);
    return text;
}

static size_t count_of(const char *text, const char *what)
{
    size_t n = 0;

    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

/* Nothing tokenwatch logged names the secret part of the URL. */
static void expect_log_clean(void)
{
    char *text = log_text();

    th_assert_dump(!strstr(text, SECRET_MARK), log_path,
                   "the webhook's secret path is in the log");
    free(text);
}

static void expect_stats(unsigned long sent, unsigned long failed,
                         unsigned long dropped)
{
    tw_webhook_stats_t st;

    tw_webhook_stats(sender, &st);
    cr_expect_eq(st.sent, sent, "sent %lu, expected %lu", st.sent, sent);
    cr_expect_eq(st.failed, failed, "failed %lu, expected %lu", st.failed, failed);
    cr_expect_eq(st.dropped, dropped, "dropped %lu, expected %lu", st.dropped,
                 dropped);
}

/* ------------------------------------------------------------------ */
/* Delivery and retries                                                 */

Test(webhook, delivers_one_message_once_with_its_exact_body)
{
    static const char payload[] =
        "{\"text\":\"orders WARN \\u2014 caf\xc3\xa9 \\\"quoted\\\"\","
        "\"blocks\":[{\"type\":\"section\",\"text\":{\"type\":\"mrkdwn\","
        "\"text\":\"*3h* left\"}}]}";
    tw_webhook_opts_t o;
    received_t *r;
    unsigned ok, not_ok;
    char *text;

    wh_start();
    o = quick_opts(wh.url);
    start(&o);
    tw_webhook_enqueue(sender, payload, "orders WARN");
    cr_assert(tw_webhook_flush(sender, 5000), "delivered within 5 s");
    th_sleep_ms(200); /* time for a duplicate, if one were coming */
    r = wh_received();
    cr_assert_eq(r->n, 1, "one request, got %zu", r->n);
    cr_expect_str_eq(r->d[0].raw, payload);
    cr_expect_str_eq(r->d[0].path, SECRET_PATH);
    cr_expect_str_eq(r->d[0].content_type, "application/json");
    cr_expect_eq(r->d[0].status, 200);
    received_free(r);
    expect_stats(1, 0, 0);
    results(&ok, &not_ok);
    cr_expect_eq(ok, 1);
    cr_expect_eq(not_ok, 0);
    text = log_text();
    cr_expect(strstr(text, "Slack alert 'orders WARN' delivered (try 1)"),
              "a debug line for the delivery");
    free(text);
    expect_log_clean();
}

Test(webhook, retries_5xx_with_backoff_then_delivers_once)
{
    tw_webhook_opts_t o;
    received_t *r;
    double gap1, gap2;
    char failing[160];
    char *text;

    wh_start();
    wh_script("{\"responses\": [{\"status\": 500}, {\"status\": 503}], "
              "\"then\": 200}");
    o = quick_opts(wh.url);
    start(&o);
    enqueue(1);
    cr_assert(tw_webhook_flush(sender, 10000));
    r = wh_received();
    cr_assert_eq(r->n, 3, "three requests, got %zu", r->n);
    cr_expect_eq(r->d[0].status, 500);
    cr_expect_eq(r->d[1].status, 503);
    cr_expect_eq(r->d[2].status, 200);
    cr_expect_str_eq(r->d[2].raw, r->d[0].raw, "the same body each time");
    /* base 50 ms, jitter 0.5: waits of 25+12 = 37 ms, then 50+25 = 75 ms */
    gap1 = r->d[1].time - r->d[0].time;
    gap2 = r->d[2].time - r->d[1].time;
    cr_log_info("5xx retries: %.1f ms, then %.1f ms (backoff 37, 75)",
                gap1 * 1000, gap2 * 1000);
    cr_expect_geq(gap1, 0.037, "first retry after %.3f s", gap1);
    cr_expect_geq(gap2, 0.075, "second retry after %.3f s", gap2);
    received_free(r);
    expect_stats(1, 0, 0);
    text = log_text();
    snprintf(failing, sizeof failing, "Slack webhook %s failing: HTTP 500",
             wh.endpoint);
    cr_expect_eq(count_of(text, failing), 1, "the outage is told once");
    cr_expect(strstr(text, "answering again"), "and its end");
    free(text);
    expect_log_clean();
}

/* One 429 answered as `script` says, then 200: the seconds between the two
 * requests. cap_ms 0 keeps quick_opts' 400 ms backoff cap. */
static double gap_after_429(const char *script, int64_t cap_ms)
{
    tw_webhook_opts_t o;
    received_t *r;
    double gap;

    wh_start();
    wh_script(script);
    o = quick_opts(wh.url);
    if (cap_ms > 0)
        o.retry_cap_ms = cap_ms;
    start(&o);
    enqueue(1);
    cr_assert(tw_webhook_flush(sender, 10000), "delivered after the 429");
    r = wh_received();
    cr_assert_eq(r->n, 2, "two requests, got %zu", r->n);
    cr_expect_eq(r->d[0].status, 429);
    cr_expect_eq(r->d[1].status, 200);
    gap = r->d[1].time - r->d[0].time;
    received_free(r);
    expect_stats(1, 0, 0);
    return gap;
}

Test(webhook, honours_retry_after_on_429)
{
    double gap = gap_after_429("{\"responses\": [{\"status\": 429, \"retry_after\": 1}], "
                               "\"then\": 200}",
                               5000);

    cr_log_info("429 Retry-After 1: retried after %.1f ms (backoff alone: 37)", gap * 1000);
    cr_expect_geq(gap, 1.0, "retried after %.3f s, before Retry-After", gap);
    expect_log_clean();
}

Test(webhook, caps_retry_after_at_the_backoff_cap)
{
    double gap = gap_after_429("{\"responses\": [{\"status\": 429, \"retry_after\": 3600}], "
                               "\"then\": 200}",
                               0);

    cr_log_info("429 Retry-After 3600, cap 400 ms: retried after %.1f ms", gap * 1000);
    cr_expect_geq(gap, 0.4, "retried after %.3f s", gap);
}

/* Retry-After may be an HTTP-date (RFC 9110 10.2.3); libcurl reads both
 * forms. webhook.py writes a date 2 s ahead, rounded up to the second. */
Test(webhook, honours_an_http_date_retry_after_on_429)
{
    double gap = gap_after_429("{\"responses\": [{\"status\": 429, \"retry_after_date\": 2}], "
                               "\"then\": 200}",
                               5000);

    cr_log_info("429 Retry-After: <date 2 s ahead>: retried after %.1f ms "
                "(backoff alone: 37)", gap * 1000);
    cr_expect_geq(gap, 1.9, "retried after %.3f s, before the Retry-After date", gap);
    cr_expect_lt(gap, 4.5, "retried after %.3f s", gap);
    expect_log_clean();
}

Test(webhook, caps_an_http_date_retry_after_at_the_backoff_cap)
{
    double gap = gap_after_429("{\"responses\": [{\"status\": 429, "
                               "\"retry_after_date\": 3600}], \"then\": 200}",
                               0);

    cr_log_info("429 Retry-After: <date 1 h ahead>, cap 400 ms: retried after %.1f ms",
                gap * 1000);
    cr_expect_geq(gap, 0.4, "retried after %.3f s", gap);
}

/* A date already past asks for no wait: the backoff alone applies. */
Test(webhook, a_past_http_date_retry_after_falls_back_to_backoff)
{
    double gap = gap_after_429("{\"responses\": [{\"status\": 429, "
                               "\"retry_after_date\": -60}], \"then\": 200}",
                               5000);

    cr_expect_geq(gap, 0.037, "retried after %.3f s, before the backoff", gap);
    cr_expect_lt(gap, 1.0, "retried after %.3f s", gap);
}

Test(webhook, refuses_4xx_without_retry_and_goes_on)
{
    tw_webhook_opts_t o;
    received_t *r;
    unsigned ok, not_ok;
    char *text;

    wh_start();
    wh_script("{\"responses\": [{\"status\": 400}], \"then\": 200}");
    o = quick_opts(wh.url);
    start(&o);
    tw_webhook_enqueue(sender, "{\"text\": 1}", "orders bad payload");
    cr_assert(tw_webhook_flush(sender, 5000));
    th_sleep_ms(300); /* several backoff delays: a retry would show */
    cr_expect_eq(received_count(), 1, "tried once");
    expect_stats(0, 1, 0);
    results(&ok, &not_ok);
    cr_expect_eq(not_ok, 1);
    text = log_text();
    cr_expect(strstr(text, "Slack refused alert 'orders bad payload'"),
              "the refusal is logged");
    cr_expect(strstr(text, "HTTP 400 (invalid_payload)"),
              "with Slack's reason");
    free(text);

    enqueue(2);
    cr_assert(tw_webhook_flush(sender, 5000));
    r = wh_received();
    cr_assert_eq(r->n, 2);
    cr_expect_eq(r->d[1].status, 200, "the next message goes out");
    received_free(r);
    expect_stats(1, 1, 0);
    expect_log_clean();
}

Test(webhook, gives_up_after_max_attempts)
{
    tw_webhook_opts_t o;
    char *text;

    wh_start();
    wh_script("{\"responses\": [], \"then\": 500}");
    o = quick_opts(wh.url);
    o.max_attempts = 3;
    start(&o);
    enqueue(1);
    enqueue(2);
    cr_assert(tw_webhook_flush(sender, 10000), "a dead webhook cannot pin the queue");
    cr_expect_eq(received_count(), 6, "three tries for each");
    expect_stats(0, 2, 0);
    text = log_text();
    cr_expect(strstr(text, "Slack alert 'alert 1' given up after 3 tries: "
                           "HTTP 500 (internal_error)"));
    cr_expect_eq(count_of(text, "given up"), 2, "each give-up logged once");
    free(text);
    expect_log_clean();
}

Test(webhook, retries_network_errors_then_gives_up)
{
    char url[256];
    tw_webhook_opts_t o;
    char *text;
    int port = th_free_port();

    cr_assert_gt(port, 0);
    /* Nothing listens there: connection refused. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d" SECRET_PATH, port);
    o = quick_opts(url);
    o.max_attempts = 3;
    start(&o);
    enqueue(1);
    cr_assert(tw_webhook_flush(sender, 10000));
    expect_stats(0, 1, 0);
    text = log_text();
    cr_expect(strstr(text, "given up after 3 tries"), "%s", text);
    free(text);
    expect_log_clean();
}

Test(webhook, request_timeout_ends_a_hanging_request)
{
    tw_webhook_opts_t o;
    received_t *r;
    char *text;

    wh_start();
    wh_script("{\"responses\": [{\"hang\": 30}, {\"hang\": 30}], \"then\": 200}");
    o = quick_opts(wh.url);
    o.request_timeout_ms = 300;
    start(&o);
    enqueue(1);
    cr_assert(tw_webhook_flush(sender, 10000));
    r = wh_received();
    cr_expect_eq(r->n, 3, "two timeouts, then delivered");
    cr_log_info("request timeout 300 ms: tries %.0f ms and %.0f ms apart",
                (r->d[1].time - r->d[0].time) * 1000,
                (r->d[2].time - r->d[1].time) * 1000);
    received_free(r);
    expect_stats(1, 0, 0);
    text = log_text();
    cr_expect(strstr(text, "timed out"), "the timeout is logged");
    free(text);
    expect_log_clean();
}

/* ------------------------------------------------------------------ */
/* A slow webhook, the queue, flush and stop                           */

Test(webhook, enqueue_never_waits_and_overflow_drops_the_oldest)
{
    tw_webhook_opts_t o;
    tw_webhook_stats_t st;
    received_t *r;
    unsigned ok, not_ok;
    long long t0, took;
    char *text;

    wh_start();
    /* The first delivery hangs 2 s: the sender is stuck on it meanwhile. */
    wh_script("{\"responses\": [{\"hang\": 2}], \"then\": 200}");
    o = quick_opts(wh.url);
    o.queue_max = 4;
    start(&o);
    enqueue(0);
    wait_received(1);
    t0 = th_now_ms();
    for (int k = 1; k <= 100; k++)
        enqueue(k);
    took = th_now_ms() - t0;
    tw_webhook_stats(sender, &st);
    cr_log_info("100 enqueues behind a hanging request: %lld ms", took);
    /* Had any enqueue waited for the network, the hang would have ended
     * and the queue drained: these counts show none did. */
    cr_expect_eq(st.queued, 4, "queued %zu", st.queued);
    cr_expect_eq(st.dropped, 96, "dropped %lu", st.dropped);
    cr_expect_eq(st.sent, 0);

    cr_assert(tw_webhook_flush(sender, 10000));
    r = wh_received();
    cr_assert_eq(r->n, 5, "the hung one and the newest four, got %zu", r->n);
    for (size_t k = 0; k < r->n; k++) {
        char want[64];

        message(want, sizeof want, k == 0 ? 0 : 96 + (int)k);
        cr_expect_str_eq(r->d[k].raw, want, "delivery %zu", k);
    }
    received_free(r);
    expect_stats(5, 0, 96);
    results(&ok, &not_ok);
    cr_expect_eq(ok, 5);
    cr_expect_eq(not_ok, 96);
    text = log_text();
    cr_expect_eq(count_of(text, "dropped the oldest alert"), 96,
                 "each drop logged once");
    cr_expect(strstr(text, "dropped the oldest alert 'alert 1' for 'alert 5'"));
    cr_expect(strstr(text, "dropped the oldest alert 'alert 96' for 'alert 100'"));
    free(text);
    expect_log_clean();
}

Test(webhook, stop_returns_within_grace_while_a_request_hangs)
{
    tw_webhook_opts_t o;
    unsigned ok, not_ok;
    long long t0, took;
    char *text;

    wh_start();
    wh_script("{\"responses\": [{\"hang\": 30}], \"then\": 200}");
    o = quick_opts(wh.url);
    o.request_timeout_ms = 60000;
    start(&o);
    enqueue(0);
    wait_received(1);
    enqueue(1);
    enqueue(2);
    t0 = th_now_ms();
    tw_webhook_stop(sender, 300);
    took = th_now_ms() - t0;
    tw_webhook_free(sender);
    sender = NULL;
    cr_log_info("stop with 300 ms grace during a 30 s hang: %lld ms", took);
    cr_expect_geq(took, 250, "the grace is given (%lld ms)", took);
    cr_expect_lt(took, 2000, "and not much more (%lld ms)", took);
    results(&ok, &not_ok);
    cr_expect_eq(ok, 0);
    cr_expect_eq(not_ok, 3, "every message reported");
    text = log_text();
    cr_expect(strstr(text, "Slack alert 'alert 0' not sent: stopping while"));
    cr_expect(strstr(text, "Slack alert 'alert 2' not sent: stopping with it "
                           "still queued"));
    free(text);
    expect_log_clean();
}

Test(webhook, stop_sends_what_is_queued_within_grace)
{
    tw_webhook_opts_t o;
    unsigned ok, not_ok;

    wh_start();
    wh_script("{\"responses\": [{\"status\": 500}], \"then\": 200}");
    o = quick_opts(wh.url);
    start(&o);
    for (int k = 1; k <= 3; k++)
        enqueue(k);
    tw_webhook_stop(sender, 5000);
    tw_webhook_free(sender);
    sender = NULL;
    cr_expect_eq(received_count(), 4, "one retry, three deliveries");
    results(&ok, &not_ok);
    cr_expect_eq(ok, 3);
    cr_expect_eq(not_ok, 0);
    expect_log_clean();
}

Test(webhook, stop_is_quick_when_idle)
{
    tw_webhook_opts_t o;
    long long t0, took;

    wh_start();
    o = quick_opts(wh.url);
    start(&o);
    t0 = th_now_ms();
    tw_webhook_stop(sender, 10000);
    took = th_now_ms() - t0;
    tw_webhook_free(sender);
    sender = NULL;
    cr_expect_lt(took, 1000, "an idle sender stops at once (%lld ms)", took);
    tw_webhook_stop(NULL, 0);
    tw_webhook_free(NULL);
}

Test(webhook, flush_times_out_then_succeeds)
{
    tw_webhook_opts_t o;
    long long t0, took;

    wh_start();
    o = quick_opts(wh.url);
    start(&o);
    cr_expect(tw_webhook_flush(sender, 0), "nothing queued: drained");
    wh_script("{\"responses\": [{\"hang\": 2}], \"then\": 200}");
    enqueue(1);
    t0 = th_now_ms();
    cr_expect_not(tw_webhook_flush(sender, 200), "still in flight");
    took = th_now_ms() - t0;
    cr_log_info("flush(200) on a hanging request returned after %lld ms", took);
    cr_expect_geq(took, 190, "flush waited (%lld ms)", took);
    cr_expect(tw_webhook_flush(sender, 10000), "delivered once the hang ends");
    expect_stats(1, 0, 0);
    cr_expect(tw_webhook_flush(NULL, 0));
}

/* ------------------------------------------------------------------ */
/* The URL is a secret                                                  */

Test(webhook, never_prints_the_webhook_url)
{
    static const char *const bad[] = {
        "ftp://127.0.0.1" SECRET_PATH,
        "127.0.0.1" SECRET_PATH,
        "http://:80" SECRET_PATH,
        "",
    };
    tw_webhook_opts_t o;
    tw_error_t err;
    char *text;

    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        tw_error_clear(&err);
        o = quick_opts(bad[k]);
        cr_expect_null(tw_webhook_start(&o, &err), "refuses bad URL %zu", k);
        cr_expect_eq(err.domain, TW_ERR_USAGE);
        cr_expect_gt(strlen(err.message), 0);
        cr_expect_null(strstr(err.message, SECRET_MARK), "%s", err.message);
    }

    wh_start();
    /* A refusal whose body quotes the path, then a give-up, a drop and a
     * message abandoned at stop: every path that logs. */
    wh_script("{\"responses\": [{\"status\": 404, \"body\": \"no_service "
              SECRET_PATH "\"}, {\"status\": 500}, {\"status\": 500}, "
              "{\"hang\": 30}]}");
    o = quick_opts(wh.url);
    o.max_attempts = 2;
    o.queue_max = 1;
    start(&o);
    enqueue(1);
    cr_assert(tw_webhook_flush(sender, 10000));
    enqueue(2);
    cr_assert(tw_webhook_flush(sender, 10000));
    enqueue(3);
    wait_received(4);
    enqueue(4);
    enqueue(5); /* drops 4 */
    tw_webhook_stop(sender, 100);
    tw_webhook_free(sender);
    sender = NULL;

    text = log_text();
    cr_expect(strstr(text, wh.endpoint), "the endpoint is named redacted");
    cr_expect(strstr(text, "HTTP 404 (no_service"), "Slack's reason is kept");
    cr_expect(strstr(text, "dropped the oldest alert 'alert 4'"));
    free(text);
    expect_log_clean();
}

/* ------------------------------------------------------------------ */
/* GET, path suffixes, a content type and a secret in the body          */

Test(webhook, get_and_path_suffixes)
{
    tw_webhook_opts_t o;
    received_t *r;
    char url[300];

    wh_start();
    /* A query after the path: the suffix goes before it. */
    snprintf(url, sizeof url, "%s?rid=7", wh.url);
    o = quick_opts(url);
    o.name = "heartbeat";
    o.what = "ping";
    o.method = TW_WEBHOOK_GET;
    start(&o);
    tw_webhook_enqueue_to(sender, "ignored for GET", "round failed", "/fail");
    tw_webhook_enqueue(sender, "", "round OK");
    tw_webhook_enqueue_to(sender, "", "round failed", "");
    cr_assert(tw_webhook_flush(sender, 5000));
    r = wh_received();
    cr_assert_eq(r->n, 3, "three pings, got %zu", r->n);
    cr_expect_str_eq(r->d[0].path, SECRET_PATH "/fail?rid=7");
    cr_expect_str_eq(r->d[1].path, SECRET_PATH "?rid=7");
    cr_expect_str_eq(r->d[2].path, SECRET_PATH "?rid=7", "an empty suffix is the URL");
    for (size_t k = 0; k < r->n; k++) {
        cr_expect_str_eq(r->d[k].method, "GET", "ping %zu", k);
        cr_expect_str_eq(r->d[k].raw, "", "no body with GET");
    }
    received_free(r);
    expect_stats(3, 0, 0);
    {
        char *text = log_text();

        cr_expect(strstr(text, "heartbeat ping 'round failed' delivered (try 1)") != NULL,
                  "the channel's own words in the log");
        free(text);
    }
    expect_log_clean();
}

Test(webhook, a_secret_in_the_body_is_cut_from_replies_and_never_logged)
{
    tw_webhook_opts_t o;
    received_t *r;
    char *text;

    wh_start();
    wh_script("{\"responses\": [{\"status\": 400, \"body\": \"unknown key B0dySECRETkey\"}], "
              "\"then\": 202}");
    o = quick_opts(wh.url);
    o.name = "PagerDuty";
    o.body_secret = "B0dySECRETkey";
    o.content_type = "application/vnd.test+json";
    start(&o);
    tw_webhook_enqueue(sender, "{\"routing_key\":\"B0dySECRETkey\"}", "orders CRIT");
    tw_webhook_enqueue(sender, "{\"routing_key\":\"B0dySECRETkey\"}", "orders OK");
    cr_assert(tw_webhook_flush(sender, 5000));
    r = wh_received();
    cr_assert_eq(r->n, 2);
    cr_expect_str_eq(r->d[0].content_type, "application/vnd.test+json");
    cr_expect_str_eq(r->d[1].method, "POST");
    cr_expect_eq(r->d[1].status, 202, "any 2xx is delivered");
    received_free(r);
    expect_stats(1, 1, 0);
    text = log_text();
    cr_expect(strstr(text, "PagerDuty refused alert 'orders CRIT'") != NULL, "%s", text);
    cr_expect(strstr(text, "HTTP 400 (unknown key \xe2\x80\xa6)") != NULL,
              "the reply is cut where the key starts: %s", text);
    free(text);
    expect_log_clean();
}

/* ------------------------------------------------------------------ */
/* The webhook file                                                     */

static bool read_file_case(const char *content, char **url, tw_error_t *err,
                           char *path, size_t n)
{
    cr_assert(th_path(path, n, dir, "webhook.url"));
    if (content)
        cr_assert(th_write_file(path, content, strlen(content)));
    tw_error_clear(err);
    return tw_webhook_read_url_file(path, url, err);
}

Test(webhook, reads_the_webhook_file)
{
    static const struct {
        const char *content;
        const char *url;
    } good[] = {
        {"https://hooks.sender.com/services/T/B/X\n",
         "https://hooks.sender.com/services/T/B/X"},
        {"https://hooks.sender.com/services/T/B/X\r\n",
         "https://hooks.sender.com/services/T/B/X"},
        {"https://hooks.sender.com/services/T/B/X",
         "https://hooks.sender.com/services/T/B/X"},
        {"  https://hooks.sender.com/services/T/B/X \n\n",
         "https://hooks.sender.com/services/T/B/X"},
    };
    char path[PATH_MAX];
    tw_error_t err;

    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        char *url = NULL;

        cr_expect(read_file_case(good[k].content, &url, &err, path, sizeof path),
                  "case %zu: %s", k, err.message);
        cr_expect_str_eq(url ? url : "(null)", good[k].url, "case %zu", k);
        free(url);
    }
}

Test(webhook, refuses_an_empty_missing_or_multi_line_webhook_file)
{
    static const char *const bad[] = {"", "\n", " \r\n",
                                      "https://a.example/SECRETone\n"
                                      "https://b.example/SECRETtwo\n"};
    char path[PATH_MAX];
    char missing[PATH_MAX];
    tw_error_t err;
    char *url = (char *)"unchanged";

    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        cr_expect_not(read_file_case(bad[k], &url, &err, path, sizeof path),
                      "case %zu", k);
        cr_expect_null(url, "case %zu", k);
        cr_expect_eq(err.domain, TW_ERR_USAGE);
        cr_expect(strstr(err.message, path), "names the path: %s", err.message);
        cr_expect_null(strstr(err.message, SECRET_MARK), "%s", err.message);
        if (k < 3)
            cr_expect(strstr(err.message, "empty"), "%s", err.message);
    }
    cr_assert(th_path(missing, sizeof missing, dir, "no-such-file"));
    tw_error_clear(&err);
    cr_expect_not(tw_webhook_read_url_file(missing, &url, &err));
    cr_expect_null(url);
    cr_expect_eq(err.domain, TW_ERR_USAGE);
    cr_expect(strstr(err.message, missing), "names the path: %s", err.message);
    cr_expect(strstr(err.message, "No such file"), "%s", err.message);
}
