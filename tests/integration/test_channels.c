/*
 * Alert channels end to end: a real `tokenwatch run` guarding keys against
 * the scripted replica set, with Slack, the generic JSON webhook and
 * PagerDuty (each a local webhook.py of its own) at once; a dead channel
 * beside a live one; the heartbeat after healthy and failed rounds.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "guarded.h"

#define T0 1700000000u
#define HOUR 3600
#define KEY_A "billing:resume-token"
#define KEY_B "search:resume-token"
#define ROUTING_KEY "R0utingKeyS3cretForTests00000000"
#define HEARTBEAT_SECRET "B3atT0kenS3cret"
/* 48 h of oplog with the clock standing still (test_guard.c's weekend). */
#define WEEKEND "{\"rate\": 0, \"retention\": 172800, \"initial_oplog_span\": 172800, " \
                "\"background_every\": 60}"
#define DELIVERIES_MAX 64

static fx_t fx;
static fx_webhook_t slack, json, pagerduty, beat;

static void teardown(void)
{
    fx_webhook_stop(&slack);
    fx_webhook_stop(&json);
    fx_webhook_stop(&pagerduty);
    fx_webhook_stop(&beat);
    fx_stop(&fx);
}

TestSuite(channels, .fini = teardown, .timeout = 120);

typedef struct {
    char method[8];
    char path[256];
    int status;
    bson_t body; /* {} when the body is not a JSON object */
} delivery_t;

typedef struct {
    size_t n;
    delivery_t d[DELIVERIES_MAX];
} deliveries_t;

static void copy_text(const bson_t *doc, const char *key, char *out, size_t n)
{
    bson_iter_t it;

    out[0] = '\0';
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(out, n, "%s", bson_iter_utf8(&it, NULL));
}

/* What a stand-in received (release with deliveries_free). */
static void deliveries(fx_webhook_t *w, deliveries_t *out)
{
    bson_t got;
    bson_iter_t it, list;

    memset(out, 0, sizeof *out);
    fx_webhook_received(w, &got);
    cr_assert(bson_iter_init_find(&it, &got, "a") && bson_iter_recurse(&it, &list));
    while (bson_iter_next(&list) && out->n < DELIVERIES_MAX) {
        delivery_t *d = &out->d[out->n++];
        const uint8_t *data;
        uint32_t len;
        bson_t one;
        bson_iter_t f;

        bson_iter_document(&list, &len, &data);
        cr_assert(bson_init_static(&one, data, len));
        copy_text(&one, "method", d->method, sizeof d->method);
        copy_text(&one, "path", d->path, sizeof d->path);
        if (bson_iter_init_find(&f, &one, "status"))
            d->status = (int)bson_iter_as_int64(&f);
        if (bson_iter_init_find(&f, &one, "body") && BSON_ITER_HOLDS_DOCUMENT(&f)) {
            bson_iter_document(&f, &len, &data);
            bson_init_static(&one, data, len);
            bson_copy_to(&one, &d->body);
        } else {
            bson_init(&d->body);
        }
    }
    bson_destroy(&got);
}

static void deliveries_free(deliveries_t *r)
{
    for (size_t k = 0; k < r->n; k++)
        bson_destroy(&r->d[k].body);
    r->n = 0;
}

static const char *field(const bson_t *doc, const char *path)
{
    bson_iter_t it;

    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return "";
}

typedef struct {
    fx_webhook_t *w;
    size_t at_least;
} count_wait_t;

static bool has_count(void *ctx)
{
    count_wait_t *c = ctx;

    return fx_webhook_count(c->w) >= c->at_least;
}

static bool wait_count(fx_webhook_t *w, size_t at_least, int timeout_ms)
{
    count_wait_t c = {w, at_least};

    return th_wait_until(has_count, &c, timeout_ms);
}

static void spawn(th_proc_t *p, int metrics_port, const char *const more[])
{
    char pd_url[128];
    const char *extra[32];
    size_t n = 0;

    snprintf(pd_url, sizeof pd_url, "http://127.0.0.1:%d/v2/enqueue", pagerduty.port);
    for (const char *const *a = (const char *const[]){
             "--environment", "stage", "--guard", KEY_B, "--webhook-url", json.url,
             "--pagerduty-routing-key", ROUTING_KEY, "--pagerduty-url", pd_url, NULL};
         *a; a++)
        extra[n++] = *a;
    for (size_t k = 0; more && more[k]; k++)
        extra[n++] = more[k];
    extra[n] = NULL;
    fx_spawn_guarding(&fx, p, KEY_A, metrics_port, slack.url, extra);
}

/* How often secret occurs in p's stderr. */
static int in_stderr(th_proc_t *p, const char *secret)
{
    char *err = th_proc_stderr(p);
    int n = err ? fx_count(err, secret) : 0;

    free(err);
    return n;
}

static void start_hooks(void)
{
    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &slack);
    fx_webhook_start(&fx, &json);
    fx_webhook_start(&fx, &pagerduty);
}

static void set_clock(const char *body)
{
    bson_t reply;

    fx_sim(&fx, "POST", "/clock", body, &reply);
    bson_destroy(&reply);
}

/* Both guarded keys fresh: at the simulator's newest entry. */
static void refresh_keys(void)
{
    bson_t state;
    bson_iter_t it;
    uint32_t newest;

    fx_sim(&fx, "GET", "/state", NULL, &state);
    cr_assert(bson_iter_init(&it, &state) && bson_iter_find_descendant(&it, "newest.t", &it));
    newest = (uint32_t)bson_iter_as_int64(&it);
    bson_destroy(&state);
    fx_set_key_time(&fx, KEY_A, newest);
    fx_set_key_time(&fx, KEY_B, newest);
}

/* The states each stand-in saw for key, in order, as "WARN CRIT LOST OK". */
static void states_for(const deliveries_t *r, const char *key, const char *state_path,
                       const char *key_path, char *out, size_t n)
{
    out[0] = '\0';
    for (size_t k = 0; k < r->n; k++) {
        if (strcmp(field(&r->d[k].body, key_path), key) != 0)
            continue;
        snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? " " : "",
                 field(&r->d[k].body, state_path));
    }
}

/* The Slack text's "KEY is now STATE" / "is resolved OK" as a state name. */
static void slack_states_for(const deliveries_t *r, const char *key, char *out, size_t n)
{
    static const char *const states[] = {"WARN", "CRIT", "LOST", "OK"};

    out[0] = '\0';
    for (size_t k = 0; k < r->n; k++) {
        const char *text = field(&r->d[k].body, "text");

        if (!strstr(text, key))
            continue;
        for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
            char now[128];

            snprintf(now, sizeof now, "%s is %s %s", key, s == 3 ? "resolved" : "now",
                     states[s]);
            if (strstr(text, now))
                snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? " " : "",
                         states[s]);
        }
    }
}

Test(channels, every_state_change_reaches_every_channel_exactly_once)
{
    th_proc_t p;
    int port = th_free_port();
    char series[256], got[256];
    deliveries_t r;
    const char *dedup_a = NULL, *dedup_b = NULL;

    start_hooks();
    fx_set_key_time(&fx, KEY_A, T0 - 20 * HOUR); /* 58% of the window: OK */
    fx_set_key_time(&fx, KEY_B, T0 - 20 * HOUR);
    spawn(&p, port, NULL);
    snprintf(series, sizeof series, "tokenwatch_token_state{key=\"%s\",state=\"OK\"}", KEY_B);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "first probe: OK");
    set_clock("{\"rate\": 36000}"); /* the weekend: both keys age together */
    th_assert_dump(wait_count(&pagerduty, 6, 20000), p.err_path, "WARN, CRIT, LOST for both");
    set_clock("{\"rate\": 0}");
    refresh_keys();
    th_assert_dump(wait_count(&pagerduty, 8, 10000), p.err_path, "both resolved");
    th_assert_dump(wait_count(&slack, 8, 10000) && wait_count(&json, 8, 10000), p.err_path,
                   "Slack and the JSON webhook too");
    th_sleep_ms(1000); /* room for a duplicate to show up */
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);

    deliveries(&slack, &r);
    cr_expect_eq(r.n, 8, "Slack: 8 messages, got %zu", r.n);
    slack_states_for(&r, KEY_A, got, sizeof got);
    cr_expect_str_eq(got, "WARN CRIT LOST OK", "Slack, %s", KEY_A);
    slack_states_for(&r, KEY_B, got, sizeof got);
    cr_expect_str_eq(got, "WARN CRIT LOST OK", "Slack, %s", KEY_B);
    deliveries_free(&r);

    deliveries(&json, &r);
    cr_expect_eq(r.n, 8, "JSON webhook: 8 objects, got %zu", r.n);
    states_for(&r, KEY_A, "state", "key", got, sizeof got);
    cr_expect_str_eq(got, "WARN CRIT LOST OK", "JSON, %s", KEY_A);
    states_for(&r, KEY_B, "state", "key", got, sizeof got);
    cr_expect_str_eq(got, "WARN CRIT LOST OK", "JSON, %s", KEY_B);
    for (size_t k = 0; k < r.n; k++) {
        cr_expect_str_eq(r.d[k].method, "POST");
        cr_expect_str_eq(field(&r.d[k].body, "kind"), "alert");
        cr_expect_str_eq(field(&r.d[k].body, "environment"), "stage");
    }
    deliveries_free(&r);

    deliveries(&pagerduty, &r);
    cr_assert_eq(r.n, 8, "PagerDuty: 8 events, got %zu", r.n);
    states_for(&r, KEY_A, "payload.severity", "payload.component", got, sizeof got);
    cr_expect_str_eq(got, "warning critical critical", "PagerDuty triggers, %s", KEY_A);
    for (size_t k = 0; k < r.n; k++) {
        const bson_t *e = &r.d[k].body;
        const char *dedup = field(e, "dedup_key");
        bool is_a = strstr(dedup, KEY_A) != NULL;

        cr_expect_eq(r.d[k].status, 202, "answered as PagerDuty does");
        cr_expect_str_eq(r.d[k].path, "/v2/enqueue");
        cr_expect_str_eq(field(e, "routing_key"), ROUTING_KEY);
        if (is_a && !dedup_a)
            dedup_a = dedup;
        if (!is_a && !dedup_b)
            dedup_b = dedup;
        cr_expect_str_eq(dedup, is_a ? dedup_a : dedup_b, "one dedup_key per key");
        /* The last event of each key resolves; the others trigger. */
        cr_expect_str_eq(field(e, "event_action"), k >= 6 ? "resolve" : "trigger", "event %zu",
                         k);
    }
    cr_expect_str_eq(dedup_a, "tokenwatch/stage/default/" KEY_A);
    cr_expect_str_eq(dedup_b, "tokenwatch/stage/default/" KEY_B);
    deliveries_free(&r);
    cr_expect_eq(in_stderr(&p, ROUTING_KEY), 0, "the routing key is never logged");
}

static bool slack_has(void *ctx)
{
    (void)ctx;
    return fx_webhook_count(&slack) >= 1;
}

/* The JSON webhook hangs on every request and PagerDuty refuses every
 * connection: Slack still hears at once. */
Test(channels, a_dead_channel_does_not_delay_another)
{
    th_proc_t p;
    int port = th_free_port();
    char series[256];
    long long changed, took;
    int dead_port = th_free_port();
    char pd_dead[128];

    start_hooks();
    fx_webhook_script(&json, "{\"responses\": [], \"then_hang\": 60}");
    /* Nothing listens on dead_port: every PagerDuty try is refused. */
    snprintf(pd_dead, sizeof pd_dead, "http://127.0.0.1:%d/v2/enqueue", dead_port);
    fx_set_key_time(&fx, KEY_A, T0 - 20 * HOUR);
    fx_set_key_time(&fx, KEY_B, T0 - 20 * HOUR);
    {
        const char *const more[] = {"--pagerduty-url", pd_dead, NULL};

        spawn(&p, port, more);
    }
    snprintf(series, sizeof series, "tokenwatch_token_state{key=\"%s\",state=\"OK\"}", KEY_A);
    th_assert_dump(fx_wait_metric(port, series, 1, 10000), p.err_path, "first probe: OK");
    /* The first alerts: both keys CRIT, then the JSON webhook is stuck. */
    fx_set_key_time(&fx, KEY_B, T0 - 47 * HOUR);
    th_assert_dump(wait_count(&json, 1, 10000) && wait_count(&slack, 1, 10000), p.err_path,
                   "the first alert: Slack has it, the JSON webhook hangs on it");
    changed = th_now_ms();
    fx_set_key_time(&fx, KEY_A, T0 - 47 * HOUR);
    th_assert_dump(th_wait_until(slack_has, NULL, 10000) && wait_count(&slack, 2, 5000),
                   p.err_path, "the second alert reaches Slack");
    took = th_now_ms() - changed;
    cr_log_info("Slack delivery with the JSON webhook hanging and PagerDuty refused: %lld ms "
                "(monitor interval 100 ms)",
                took);
    cr_expect_lt(took, 2000, "Slack waited %lld ms on the dead channels", took);
    cr_expect_eq(fx_webhook_count(&json), 1, "the JSON webhook is still on its first request");
    snprintf(series, sizeof series, "tokenwatch_channel_sent_total{channel=\"slack\"}");
    th_assert_dump(fx_wait_metric(port, series, 2, 5000), p.err_path, "counted for Slack");
    cr_expect_eq(fx_metric(port, "tokenwatch_channel_sent_total{channel=\"webhook\"}"), 0);
    cr_expect_eq(fx_metric(port, "tokenwatch_channel_sent_total{channel=\"pagerduty\"}"), 0);
    th_proc_signal(&p, SIGTERM);
    th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "stops despite the dead channels");
    cr_expect_eq(th_proc_exit_code(&p), 0);
    cr_expect_eq(in_stderr(&p, ROUTING_KEY), 0);
}

typedef struct {
    const char *path;
    size_t at_least;
} path_wait_t;

static size_t count_path(const char *path, const char *method)
{
    deliveries_t r;
    size_t n = 0;

    deliveries(&beat, &r);
    for (size_t k = 0; k < r.n; k++)
        if (strcmp(r.d[k].path, path) == 0 && (!method || strcmp(r.d[k].method, method) == 0))
            n++;
    deliveries_free(&r);
    return n;
}

static bool has_path(void *ctx)
{
    path_wait_t *w = ctx;

    return count_path(w->path, NULL) >= w->at_least;
}

static bool wait_path(const char *path, size_t at_least, int timeout_ms)
{
    path_wait_t w = {path, at_least};

    return th_wait_until(has_path, &w, timeout_ms);
}

/* The path of the last ping received. */
static void last_path(char *out, size_t n)
{
    deliveries_t r;

    deliveries(&beat, &r);
    snprintf(out, n, "%s", r.n ? r.d[r.n - 1].path : "");
    deliveries_free(&r);
}

Test(channels, the_heartbeat_pings_after_healthy_rounds_and_fails_when_redis_is_down)
{
    th_proc_t p;
    int port = th_free_port();
    char url[256], last[256];
    const char *ok_path = "/ping/" HEARTBEAT_SECRET;
    const char *fail_path = "/ping/" HEARTBEAT_SECRET "/fail";
    size_t ok_before;

    start_hooks();
    fx_webhook_start(&fx, &beat);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ping/%s", beat.port, HEARTBEAT_SECRET);
    fx_set_key_time(&fx, KEY_A, T0 - 10 * HOUR);
    fx_set_key_time(&fx, KEY_B, T0 - 10 * HOUR);
    {
        const char *const more[] = {"--heartbeat-url", url, NULL};

        spawn(&p, port, more);
    }
    th_assert_dump(wait_path(ok_path, 3, 10000), p.err_path, "pings after healthy rounds");
    cr_expect_eq(count_path(ok_path, "GET"), count_path(ok_path, NULL), "GET by default");
    cr_expect_eq(count_path(fail_path, NULL), 0, "no /fail while healthy");
    th_redis_stop(&fx.redis);
    th_assert_dump(wait_path(fail_path, 2, 10000), p.err_path, "/fail once Redis is down");
    ok_before = count_path(ok_path, NULL);
    th_sleep_ms(500); /* five rounds with Redis down */
    cr_expect_eq(count_path(ok_path, NULL), ok_before, "no healthy ping while Redis is down");
    last_path(last, sizeof last);
    cr_expect_str_eq(last, fail_path);
    cr_assert(th_redis_restart(&fx.redis));
    th_assert_dump(wait_path(ok_path, ok_before + 2, 20000), p.err_path,
                   "healthy pings again once Redis is back");
    th_assert_dump(fx_wait_metric(port, "tokenwatch_heartbeats_sent_total", 5, 5000) ||
                       fx_metric(port, "tokenwatch_heartbeats_sent_total") >= 5,
                   p.err_path, "pings counted");
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    cr_expect_eq(in_stderr(&p, HEARTBEAT_SECRET), 0, "the URL's token is secret");
}

/* --heartbeat-method post: the same pings as POSTs with a text body. */
Test(channels, the_heartbeat_can_post)
{
    th_proc_t p;
    int port = th_free_port();
    char url[256];
    const char *ok_path = "/ping/" HEARTBEAT_SECRET;

    start_hooks();
    fx_webhook_start(&fx, &beat);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ping/%s", beat.port, HEARTBEAT_SECRET);
    fx_set_key_time(&fx, KEY_A, T0 - 10 * HOUR);
    fx_set_key_time(&fx, KEY_B, T0 - 10 * HOUR);
    {
        const char *const more[] = {"--heartbeat-url", url, "--heartbeat-method", "post", NULL};

        spawn(&p, port, more);
    }
    th_assert_dump(wait_path(ok_path, 2, 10000), p.err_path, "pings");
    cr_expect_eq(count_path(ok_path, "POST"), count_path(ok_path, NULL), "all POSTs");
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
}
