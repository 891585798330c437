/*
 * The guard end to end: a quiet weekend in fast time, alerts to a local
 * webhook, `status` for cron and Nagios, and /metrics.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"
#include "guarded.h"
#include "inproc.h"
#include "tokenwatch/metrics.h"

#define T0 1700000000u
#define HOUR 3600
#define OTHER_KEY "billing:resume-token"

/* 48 h of oplog, kept 48 h; the clock stands still until a test starts it. */
#define WEEKEND "{\"rate\": 0, \"retention\": 172800, \"initial_oplog_span\": 172800, " \
                "\"background_every\": 60}"

static fx_t fx;
static fx_webhook_t hook;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(guard, .fini = teardown, .timeout = 90);

typedef struct {
    size_t at_least;
} texts_wait_t;

static bool has_texts(void *ctx)
{
    char **texts;
    size_t n = fx_webhook_texts(&hook, &texts);

    for (size_t k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
    return n >= ((texts_wait_t *)ctx)->at_least;
}

static bool wait_texts(size_t at_least, int timeout_ms)
{
    texts_wait_t w = {at_least};

    return th_wait_until(has_texts, &w, timeout_ms);
}

static void spawn_guarding(th_proc_t *p, int metrics_port, const char *const more[])
{
    const char *extra[24];
    size_t n = 0;

    extra[n++] = "--environment";
    extra[n++] = "stage";
    for (size_t k = 0; more && more[k]; k++)
        extra[n++] = more[k];
    extra[n] = NULL;
    fx_spawn_guarding(&fx, p, OTHER_KEY, metrics_port, hook.url, extra);
}

static void expect_no_secret(th_proc_t *p)
{
    char *out = th_proc_stdout(p);
    char *err = th_proc_stderr(p);

    cr_expect(strstr(err, FX_WEBHOOK_SECRET) == NULL, "the webhook leaked:\n%s", err);
    cr_expect(strstr(out, FX_WEBHOOK_SECRET) == NULL, "the webhook leaked:\n%s", out);
    free(out);
    free(err);
}

Test(guard, a_quiet_weekend_goes_warn_crit_lost_each_once_then_resolves)
{
    th_proc_t p;
    int port = th_free_port();
    char series[256];
    char **texts;
    size_t n;
    bson_t reply;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    /* 28 h of headroom in a 48 h window: 58%, OK. */
    fx_set_key_time(&fx, OTHER_KEY, T0 - 20 * HOUR);
    spawn_guarding(&p, port, NULL);
    snprintf(series, sizeof series, "tokenwatch_token_state{key=\"%s\",state=\"OK\"}", OTHER_KEY);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "first probe: OK");

    /* The weekend: ten hours of cluster writes per second, the token frozen. */
    fx_sim(&fx, "POST", "/clock", "{\"rate\": 36000}", &reply);
    bson_destroy(&reply);
    th_assert_dump(wait_texts(3, 20000), p.err_path, "WARN, CRIT and LOST alerts");
    fx_sim(&fx, "POST", "/clock", "{\"rate\": 0}", &reply);
    bson_destroy(&reply);
    th_sleep_ms(1000); /* room for a duplicate to show up */

    /* The consumer catches up: a fresh token. */
    {
        bson_t state;
        bson_iter_t it;
        fx_sim(&fx, "GET", "/state", NULL, &state);
        cr_assert(bson_iter_init(&it, &state) &&
                  bson_iter_find_descendant(&it, "newest.t", &it));
        fx_set_key_time(&fx, OTHER_KEY, (uint32_t)bson_iter_as_int64(&it));
        bson_destroy(&state);
    }
    th_assert_dump(wait_texts(4, 10000), p.err_path, "resolved");
    th_sleep_ms(500);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);

    n = fx_webhook_texts(&hook, &texts);
    cr_assert_eq(n, 4, "exactly four alerts, got %zu", n);
    cr_expect(strstr(texts[0], OTHER_KEY " is now WARN") != NULL, "%s", texts[0]);
    cr_expect(strstr(texts[1], OTHER_KEY " is now CRIT") != NULL, "%s", texts[1]);
    cr_expect(strstr(texts[2], OTHER_KEY " is now LOST") != NULL, "%s", texts[2]);
    cr_expect(strstr(texts[3], OTHER_KEY " is resolved OK (was LOST)") != NULL, "%s", texts[3]);
    for (size_t k = 0; k < n; k++) {
        cr_expect(strstr(texts[k], "[stage]") != NULL, "%s", texts[k]);
        cr_expect(strstr(texts[k], "tokenwatch:{default}:checkpoint") == NULL,
                  "the watcher's own fresh checkpoint never alerts: %s", texts[k]);
        free(texts[k]);
    }
    free(texts);
    expect_no_secret(&p);
}

Test(guard, a_webhook_failing_twice_delivers_once)
{
    th_proc_t p;
    int port = th_free_port();
    char **texts;
    size_t n;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    fx_webhook_script(&hook, "{\"responses\": [{\"status\": 500}, {\"status\": 500}], "
                             "\"then\": 200}");
    fx_set_key_time(&fx, OTHER_KEY, T0 - 60 * HOUR); /* already lost */
    spawn_guarding(&p, port, NULL);
    th_assert_dump(wait_texts(1, 20000), p.err_path, "delivered after two 500s");
    th_assert_dump(fx_wait_metric(port, "tokenwatch_alerts_sent_total", 1, 5000), p.err_path,
                   "counted once");
    th_sleep_ms(500);
    cr_expect_eq(fx_webhook_count(&hook), 3, "two failures and one delivery");
    cr_expect_eq(fx_metric(port, "tokenwatch_alerts_failed_total"), 0);
    n = fx_webhook_texts(&hook, &texts);
    cr_expect_eq(n, 1);
    for (size_t k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
    th_proc_stop(&p, 10000);
    expect_no_secret(&p);
}

static bool webhook_called(void *ctx)
{
    return fx_webhook_count(ctx) >= 1;
}

static bool stream_has(void *ctx)
{
    return th_redis_xlen(&fx.redis, FX_STREAM) >= *(long long *)ctx;
}

Test(guard, a_hanging_webhook_leaves_following_at_full_speed)
{
    static const char *const more[] = {"--sink", "redis", NULL};
    th_proc_t p;
    int port = th_free_port();
    long long want = 500;
    long long started;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    fx_webhook_script(&hook, "{\"responses\": [{\"hang\": 60}], \"then\": 200}");
    fx_set_key_time(&fx, OTHER_KEY, T0 - 60 * HOUR);
    spawn_guarding(&p, port, more);
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    th_assert_dump(th_wait_until(webhook_called, &hook, 10000), p.err_path,
                   "the alert reached the hanging webhook");
    started = th_now_ms();
    for (int k = 0; k < 10; k++)
        bson_free(fx_post_events(&fx, 50));
    th_assert_dump(th_wait_until(stream_has, &want, 10000), p.err_path,
                   "500 events flow while the webhook hangs");
    cr_log_info("500 events in %lld ms with a hanging webhook", th_now_ms() - started);
    cr_expect_eq(fx_webhook_count(&hook), 1, "one request, still hanging");
    th_proc_signal(&p, SIGTERM);
    th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "stops despite the hang");
    cr_expect_eq(th_proc_exit_code(&p), 0);
    cr_expect(fx_wait_checkpoint_events(&fx, 500, 1000));
    expect_no_secret(&p);
}

typedef struct {
    uint32_t other; /* the guarded key's time; 0: garbage */
    int want_code;
    const char *want_state;
} status_case_t;

Test(guard, status_exit_codes_in_each_state)
{
    static const status_case_t cases[] = {
        {T0 - 10 * HOUR, 0, "OK"},   /* 79% of the window left */
        {T0 - 30 * HOUR, 1, "WARN"}, /* 37% */
        {T0 - 40 * HOUR, 2, "CRIT"}, /* 17% */
        {T0 - 60 * HOUR, 2, "LOST"}, /* older than the oldest entry */
        {0, 3, "UNKNOWN"},           /* garbage */
    };
    char *own = fx_hwm_data(T0, 1);

    fx_start(&fx, WEEKEND);
    fx_seed_checkpoint(&fx, own, NULL);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *argv[] = {th_binary(), "status", "--mongo-uri", fx.sim.uri, "--redis-url",
                              fx.redis_url, "--guard", OTHER_KEY, NULL, NULL};
        char *out, *err;
        int code;

        if (cases[k].other)
            fx_set_key_time(&fx, OTHER_KEY, cases[k].other);
        else
            fx_set_key(&fx, OTHER_KEY, "not a token");
        code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
        cr_expect_eq(code, cases[k].want_code, "case %zu: exit %d\n%s%s", k, code, out, err);
        cr_expect(strstr(out, cases[k].want_state) != NULL, "case %zu:\n%s", k, out);
        free(out);
        free(err);

        argv[8] = "--json";
        code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
        cr_expect_eq(code, cases[k].want_code, "case %zu --json", k);
        {
            bson_t doc;
            bson_iter_t it;
            cr_assert(bson_init_from_json(&doc, out, -1, NULL), "JSON: %s", out);
            cr_expect(bson_iter_init(&it, &doc) &&
                      bson_iter_find_descendant(&it, "keys.1.state", &it) &&
                      strcmp(bson_iter_utf8(&it, NULL), cases[k].want_state) == 0,
                      "case %zu: %s", k, out);
            cr_expect(bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "keys.0.state", &it) &&
                      strcmp(bson_iter_utf8(&it, NULL), "OK") == 0, "own checkpoint OK: %s", out);
            bson_destroy(&doc);
        }
        free(out);
        free(err);
    }
    bson_free(own);
}

Test(guard, an_unreadable_oplog_names_the_role_and_retention_stands_in)
{
    char *out, *err;
    bson_t reply;
    char recent[32];
    int code;

    fx_start(&fx, WEEKEND);
    fx_sim(&fx, "POST", "/fault",
           "{\"command\": \"find\", \"kind\": \"error\", \"code\": 13, \"count\": 100}", &reply);
    bson_destroy(&reply);
    {
        const char *argv[] = {th_binary(), "status", "--mongo-uri", fx.sim.uri, "--redis-url",
                              fx.redis_url, NULL};
        code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
        cr_expect_eq(code, 3, "UNKNOWN: %s", out);
        cr_expect(strstr(out, "read on the local database") != NULL, "%s", out);
        cr_expect(strstr(out, "--retention") != NULL, "%s", out);
        free(out);
        free(err);
    }
    /* With --retention the window is [now - 3h, now] on the cluster's clock
     * (the simulator's T0, years before the local clock). */
    snprintf(recent, sizeof recent, "%u:1", T0 - 1800);
    {
        char *data = NULL;
        const char *argv[] = {th_binary(), "status", "--mongo-uri", fx.sim.uri, "--redis-url",
                              fx.redis_url, "--retention", "3h", "--guard", OTHER_KEY,
                              "--name", "docdb", NULL};
        fx_set_key(&fx, OTHER_KEY, recent);
        {
            /* The own checkpoint is a hash, as run writes it (a string is
             * UNKNOWN: run would refuse it). */
            char *hwm = fx_hwm_data(T0 - 1800, 1);
            char token[160];

            snprintf(token, sizeof token, "{ \"_data\" : \"%s\" }", hwm);
            freeReplyObject(th_redis_cmd(&fx.redis, "HSET tokenwatch:{docdb}:checkpoint "
                                                    "token %s cluster_time %s",
                                         token, recent));
            bson_free(hwm);
        }
        code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
        cr_expect_eq(code, 0, "%s%s", out, err);
        cr_expect(strstr(out, "window 3h (--retention)") != NULL, "%s", out);
        free(out);
        free(err);
        free(data);
    }
}

Test(guard, metrics_are_scraped_with_the_right_values)
{
    th_proc_t p;
    int port = th_free_port();
    char series[256];
    double window, headroom;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 30 * HOUR);
    spawn_guarding(&p, port, NULL);
    snprintf(series, sizeof series, "tokenwatch_token_state{key=\"%s\",state=\"WARN\"}", OTHER_KEY);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "WARN");
    bson_free(fx_post_events(&fx, 3));
    th_assert_dump(fx_wait_metric(port, "tokenwatch_events_total", 3, 10000), p.err_path, "events");

    window = fx_metric(port, "tokenwatch_oplog_window_seconds");
    cr_expect(window >= 172800 - 60 && window <= 172800, "window %f", window);
    snprintf(series, sizeof series, "tokenwatch_token_headroom_seconds{key=\"%s\"}", OTHER_KEY);
    headroom = fx_metric(port, series);
    cr_expect(headroom >= 18 * HOUR - 60 && headroom <= 18 * HOUR, "headroom %f", headroom);
    snprintf(series, sizeof series, "tokenwatch_token_state{key=\"%s\",state=\"OK\"}", OTHER_KEY);
    cr_expect_eq(fx_metric(port, series), 0);
    cr_assert(fx_wait_checkpoint_events(&fx, 3, 10000));
    th_assert_dump(fx_wait_metric(port, "tokenwatch_oplog_tail_rate", 0, 10000), p.err_path,
                   "measured over two probes: nothing truncated");
    cr_expect_geq(fx_metric(port, "tokenwatch_checkpoints_total"), 1);
    snprintf(series, sizeof series, "tokenwatch_token_time_left_seconds{key=\"%s\"}", OTHER_KEY);
    cr_expect(isinf(fx_metric(port, series)), "unbounded at rate 0");
    cr_expect_eq(fx_metric(port, "tokenwatch_fallbacks_total"), 0);
    {
        long status;
        char *body = fx_http(port, "GET", "/healthz", NULL, &status);
        cr_expect_eq(status, 200);
        free(body);
        body = fx_http(port, "GET", "/readyz", NULL, &status);
        cr_expect_eq(status, 200, "%s", body);
        free(body);
    }
    {
        /* The container HEALTHCHECK asks the same endpoint. */
        char addr[64];
        char *out, *err;
        const char *argv[] = {th_binary(), "healthcheck", "--metrics-addr", addr, NULL};

        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        cr_expect_eq(th_run(fx.dir, argv, NULL, 10000, &out, &err), 0, "%s", err);
        cr_expect(strstr(out, "healthy") != NULL, "%s", out);
        free(out);
        free(err);
        th_proc_stop(&p, 10000);
        cr_expect_eq(th_proc_exit_code(&p), 0);
        cr_expect_eq(th_run(fx.dir, argv, NULL, 10000, &out, &err), 1, "nobody answers now");
        free(out);
        free(err);
    }
}

/*
 * Issue 10: a guarded key too long for a label wrote the series without the
 * key (and two such keys shared it). Keys of 1,000 bytes are shown whole;
 * two of 3,000 bytes that differ only in their last byte each get a series
 * of their own, labelled as tw_metrics_label shortens them, said once each.
 */
static size_t count_of(const char *text, const char *what)
{
    size_t n = 0;

    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

static char *long_key(size_t len, char last)
{
    char *key = malloc(len + 1);

    cr_assert_not_null(key);
    memcpy(key, "billing:", 8);
    for (size_t k = 8; k < len; k++)
        key[k] = (char)('a' + k % 26);
    key[len - 1] = last;
    key[len] = '\0';
    return key;
}

Test(guard, a_key_too_long_for_a_label_gets_its_own_series)
{
    th_proc_t p;
    int port = th_free_port();
    char *k1000 = long_key(1000, '1');
    char *k3000a = long_key(3000, 'a');
    char *k3000b = long_key(3000, 'b');
    char label_a[TW_METRICS_LABELS_MAX], label_b[TW_METRICS_LABELS_MAX];
    char series[TW_METRICS_LABELS_MAX + 128];
    const char *more[] = {"--guard", k1000, "--guard", k3000a, "--guard", k3000b, NULL};
    char *metrics, *err;
    long status;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 30 * HOUR);
    fx_set_key_time(&fx, k1000, T0 - 30 * HOUR);
    fx_set_key_time(&fx, k3000a, T0 - 30 * HOUR);
    fx_set_key_time(&fx, k3000b, T0 - 30 * HOUR);
    spawn_guarding(&p, port, more);

    snprintf(series, sizeof series, "tokenwatch_token_state{key=\"%s\",state=\"WARN\"}", k1000);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "the 1,000-byte key, whole");
    th_sleep_ms(300); /* rounds of 100 ms: every key measured */
    metrics = fx_http(port, "GET", "/metrics", NULL, &status);
    cr_assert_eq(status, 200);
    cr_expect_null(strstr(metrics, "tokenwatch_token_state{state="),
                   "a token_state series without its key");
    cr_expect_null(strstr(metrics, "\ntokenwatch_token_headroom_seconds "),
                   "a headroom series without its key");
    cr_expect_null(strstr(metrics, "\ntokenwatch_token_time_left_seconds "),
                   "a time-left series without its key");
    free(metrics);

    cr_assert(tw_metrics_label(label_a, sizeof label_a, "key", k3000a));
    cr_assert(tw_metrics_label(label_b, sizeof label_b, "key", k3000b));
    cr_expect_str_neq(label_a, label_b, "two keys, two labels");
    snprintf(series, sizeof series, "tokenwatch_token_state{%s,state=\"WARN\"}", label_a);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "%s", series);
    snprintf(series, sizeof series, "tokenwatch_token_state{%s,state=\"WARN\"}", label_b);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "%s", series);
    snprintf(series, sizeof series, "tokenwatch_token_headroom_seconds{%s}", label_b);
    cr_expect(!isnan(fx_metric(port, series)), "%s", series);

    /* Several rounds later, each shortened key was told about once. */
    bson_free(fx_post_events(&fx, 1));
    th_sleep_ms(500);
    err = th_proc_stderr(&p);
    cr_expect_eq(count_of(err, "too long for a metric label"), 2, "told once per key:\n%.2000s",
                 err);
    free(err);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    free(k1000);
    free(k3000a);
    free(k3000b);
}

Test(guard, redis_unreadable_for_three_rounds_is_unknown_then_resolves)
{
    th_proc_t p;
    int port = th_free_port();
    char series[256];
    char **texts;
    size_t n;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 10 * HOUR); /* OK */
    spawn_guarding(&p, port, NULL);
    snprintf(series, sizeof series, "tokenwatch_token_state{key=\"%s\",state=\"OK\"}", OTHER_KEY);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "OK first");
    th_redis_stop(&fx.redis);
    th_assert_dump(wait_texts(1, 10000), p.err_path, "UNKNOWN after three rounds");
    cr_assert(th_redis_restart(&fx.redis));
    th_assert_dump(wait_texts(4, 20000), p.err_path, "resolved for both keys");
    th_proc_stop(&p, 10000);
    n = fx_webhook_texts(&hook, &texts);
    for (size_t k = 0; k < n; k++) {
        if (k < 2)
            cr_expect(strstr(texts[k], "is now UNKNOWN") != NULL &&
                          strstr(texts[k], "Redis unreadable for 3 rounds") != NULL,
                      "%s", texts[k]);
        else
            cr_expect(strstr(texts[k], "is resolved OK (was UNKNOWN)") != NULL, "%s", texts[k]);
        free(texts[k]);
    }
    cr_expect_eq(n, 4, "UNKNOWN and resolved, for the own key and the guarded one");
    free(texts);
}

Test(guard, a_bad_state_repeats_every_alert_repeat_without_bursts)
{
    char **texts;
    size_t n;
    char *log;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 60 * HOUR); /* LOST */
    fx_seed_own_at_newest(&fx);
    {
        const char *const extra[] = {"--guard", OTHER_KEY, "--monitor-interval", "100ms",
                                     "--alert-repeat", "1s", "--environment", "stage",
                                     "--slack-webhook", hook.url, NULL};
        /* 3.3 s on the fake clock, a round each 100 ms, in no time. */
        log = fx_inproc_guard(&fx, extra, 33, 100);
    }
    n = fx_webhook_texts(&hook, &texts);
    /* The change at 0 s, a repeat at 1, 2 and 3 s. */
    cr_expect_eq(n, 4, "%zu alerts in 3.3 s with --alert-repeat 1s:\n%s", n, log);
    free(log);
    for (size_t k = 0; k < n; k++) {
        cr_expect(strstr(texts[k], k == 0 ? "is now LOST" : "is still LOST") != NULL, "%s",
                  texts[k]);
        free(texts[k]);
    }
    free(texts);
}

Test(guard, fast_time_measures_the_tail_per_cluster_second)
{
    /* The simulator runs an hour a second and truncates as it goes: per
     * wall second the tail moves 3600 s, per cluster second 1 s. Time left
     * is then the headroom, as `status` says, not 3600 times less. */
    static const char *const more[] = {"--warn-at", "1h", "--crit-at", "30m", NULL};
    th_proc_t p;
    int port = th_free_port();
    char series[256];
    double rate, headroom, left;

    fx_start(&fx, "{\"rate\": 3600, \"retention\": 172800, \"initial_oplog_span\": 172800, "
                  "\"background_every\": 60}");
    fx_webhook_start(&fx, &hook);
    fx_set_key_time(&fx, OTHER_KEY, T0 + 30 * 24 * HOUR); /* far ahead: stays OK */
    spawn_guarding(&p, port, more);
    th_sleep_ms(2500);
    rate = fx_metric(port, "tokenwatch_oplog_tail_rate");
    cr_expect(rate > 0.9 && rate < 1.1, "about one second a cluster second: %f", rate);
    snprintf(series, sizeof series, "tokenwatch_token_headroom_seconds{key=\"%s\"}", OTHER_KEY);
    headroom = fx_metric(port, series);
    snprintf(series, sizeof series, "tokenwatch_token_time_left_seconds{key=\"%s\"}", OTHER_KEY);
    left = fx_metric(port, series);
    cr_expect(fabs(left - headroom) < headroom * 0.1, "time left %f, headroom %f", left,
              headroom);
    cr_expect(fx_metric(port, "tokenwatch_clock_skew_seconds") > 365.0 * 24 * HOUR,
              "the local clock is years ahead of the simulator's");
    th_proc_stop(&p, 10000);
    expect_no_secret(&p);
}

Test(guard, status_shows_the_cluster_clock_and_the_local_skew)
{
    char *out, *err;
    int code;
    const char *argv[] = {th_binary(), "status", "--mongo-uri", fx.sim.uri, "--redis-url",
                          fx.redis_url, "--json", NULL};

    fx_start(&fx, WEEKEND);
    argv[3] = fx.sim.uri;
    argv[5] = fx.redis_url;
    fx_seed_own_time(&fx, T0);
    code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
    cr_expect_eq(code, 0, "%s%s", out, err);
    cr_expect(strstr(out, "\"cluster_time\" : \"1700000000:") != NULL, "%s", out);
    cr_expect(strstr(out, "\"clock\" : \"cluster\"") != NULL, "%s", out);
    cr_expect(strstr(out, "\"clock_skew_seconds\" : ") != NULL, "%s", out);
    free(out);
    free(err);
    argv[6] = NULL;
    code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
    cr_expect(strstr(out, "clock: cluster time 2023-11-14T22:13:20Z; the local clock is ") !=
                  NULL,
              "%s", out);
    cr_expect(strstr(out, " ahead of it") != NULL, "%s", out);
    free(out);
    free(err);
}

Test(guard, past_the_retention_floor_is_crit_not_lost)
{
    /* No oplog to read (DocumentDB): a token older than now - --retention
     * may still be kept; only the server's refusal proves it lost. */
    char *out, *err;
    bson_t reply;
    char old[32];
    int code;
    const char *argv[] = {th_binary(), "status", "--mongo-uri", NULL, "--redis-url", NULL,
                          "--retention", "3h", "--guard", OTHER_KEY, NULL};

    fx_start(&fx, WEEKEND);
    argv[3] = fx.sim.uri;
    argv[5] = fx.redis_url;
    fx_sim(&fx, "POST", "/fault",
           "{\"command\": \"find\", \"kind\": \"error\", \"code\": 13, \"count\": 100}", &reply);
    bson_destroy(&reply);
    snprintf(old, sizeof old, "%u:1", T0 - 4 * HOUR);
    fx_set_key(&fx, OTHER_KEY, old);
    fx_seed_own_time(&fx, T0);
    code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
    cr_expect_eq(code, 2, "%s%s", out, err);
    cr_expect(strstr(out, OTHER_KEY) != NULL && strstr(out, " CRIT ") != NULL, "%s", out);
    cr_expect(strstr(out, "LOST") == NULL, "%s", out);
    free(out);
    free(err);
}

Test(guard, a_server_without_cluster_time_leaves_the_local_clock)
{
    char *out, *err;
    bson_t reply;
    int code;
    const char *argv[] = {th_binary(), "status", "--mongo-uri", NULL, "--redis-url", NULL,
                          "--retention", "3h", NULL};

    fx_start(&fx, "{\"rate\": 0, \"operation_time\": false}");
    argv[3] = fx.sim.uri;
    argv[5] = fx.redis_url;
    fx_sim(&fx, "POST", "/fault",
           "{\"command\": \"find\", \"kind\": \"error\", \"code\": 13, \"count\": 100}", &reply);
    bson_destroy(&reply);
    fx_seed_own_time(&fx, (uint32_t)(time(NULL) - 1800));
    code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
    cr_expect_eq(code, 0, "half an hour old in a 3h window by the local clock: %s%s", out, err);
    cr_expect(strstr(out, "the local clock stands in") != NULL, "%s", out);
    free(out);
    free(err);
}

Test(guard, garbage_that_is_not_utf8_is_unknown_everywhere)
{
    /* A guarded hash whose wall_ms holds invalid UTF-8: status --json used
     * to crash on it, and its UNKNOWN alert was never sent. */
    static const char *const more[] = {NULL};
    char *out, *err, **texts;
    const char *argv[] = {th_binary(), "status", "--mongo-uri", NULL, "--redis-url", NULL,
                          "--guard", OTHER_KEY, "--json", NULL};
    bson_t doc;
    bson_iter_t it;
    th_proc_t p;
    size_t n = 0;
    int code;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    argv[3] = fx.sim.uri;
    argv[5] = fx.redis_url;
    {
        /* %b (binary) is hiredis's own: not through th_redis_cmd's printf check. */
        redisContext *c = th_redis_connect(&fx.redis);
        cr_assert(c);
        freeReplyObject(redisCommand(c, "HSET %s cluster_time %s wall_ms %b", OTHER_KEY,
                                     "1700000000:1", "\xff\xfe\xc3", (size_t)3));
        redisFree(c);
    }
    fx_seed_own_at_newest(&fx);
    code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
    cr_expect_eq(code, 3, "UNKNOWN, no crash: %d\n%s%s", code, out, err);
    cr_assert(bson_init_from_json(&doc, out, -1, NULL), "valid JSON: %s", out);
    cr_expect(bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "keys.1.state", &it) &&
                  strcmp(bson_iter_utf8(&it, NULL), "UNKNOWN") == 0,
              "%s", out);
    cr_expect(bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "keys.1.reason", &it),
              "with the reason: %s", out);
    bson_destroy(&doc);
    free(out);
    free(err);

    spawn_guarding(&p, th_free_port(), more);
    for (int k = 0; k < 100 && n == 0; k++) {
        n = fx_webhook_texts(&hook, &texts);
        if (n == 0)
            th_sleep_ms(50);
    }
    th_proc_stop(&p, 10000);
    cr_assert_geq(n, 1, "the UNKNOWN alert was sent");
    cr_expect(strstr(texts[0], OTHER_KEY " is now UNKNOWN") != NULL, "%s", texts[0]);
    for (size_t k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
}
