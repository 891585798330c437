/*
 * Secrets never reach any output: a MongoDB password, a Redis password (in
 * the URL, then in --redis-password-file), the Slack webhook's path, the
 * generic JSON webhook's path, the PagerDuty routing key and the heartbeat
 * URL's token (and a Kafka Connect guard's login) are searched for in every
 * log line (text and JSON, at debug), every body the Slack, JSON webhook,
 * PagerDuty (its routing key field aside) and heartbeat (GET, then POST)
 * stand-ins received, /metrics,
 * --help, a dry-run plan, `status` and `status --json`, and the messages of
 * refused values (including refused files).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "guarded.h"

#define T0 1700000000u
#define HOUR 3600
#define OTHER_KEY "billing:resume-token"
/* 48 h of oplog with the clock standing still (test_guard.c's weekend). */
#define WEEKEND "{\"rate\": 0, \"retention\": 172800, \"initial_oplog_span\": 172800, " \
                "\"background_every\": 60}"

/* The Redis password is "R3disS3cr@t/x": percent-encoded in the URL. */
#define REDIS_PASSWORD "R3disS3cr@t/x"
#define REDIS_PASSWORD_URL "R3disS3cr%40t%2Fx"
#define MONGO_PASSWORD_URL "M0ngoS3cr%2Ft"
#define OUTPUTS_MAX 64

/* What may never be printed, encoded or not. */
#define JSON_SECRET "J50nH00kS3cret"
#define ROUTING_KEY "PdR0utingS3cret0000000000000000x"
#define BEAT_SECRET "B3atT0kS3cret"
static const char *const secrets[] = {"R3disS3cr", "M0ngoS3cr", FX_WEBHOOK_SECRET,
                                      JSON_SECRET, "PdR0utingS3cret", BEAT_SECRET};

static fx_t fx;
static fx_webhook_t hook, json_hook, pd_hook, beat_hook;
static struct {
    char label[128];
    char *text;
} outputs[OUTPUTS_MAX];
static size_t output_count;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_webhook_stop(&json_hook);
    fx_webhook_stop(&pd_hook);
    fx_webhook_stop(&beat_hook);
    fx_stop(&fx);
    for (size_t k = 0; k < output_count; k++)
        free(outputs[k].text);
    output_count = 0;
}

TestSuite(secrets, .fini = teardown, .timeout = 120);

/* Keeps text (owned from now on) to be searched by expect_no_secret. */
static void keep(const char *label, char *text)
{
    cr_assert_lt(output_count, OUTPUTS_MAX);
    snprintf(outputs[output_count].label, sizeof outputs[0].label, "%s", label);
    outputs[output_count++].text = text ? text : strdup("");
}

static void keep_proc(const char *label, th_proc_t *p)
{
    char name[128];

    snprintf(name, sizeof name, "%s stdout", label);
    keep(name, th_proc_stdout(p));
    snprintf(name, sizeof name, "%s stderr", label);
    keep(name, th_proc_stderr(p));
}

/* The kept output called label (borrowed), asserting it is there. */
static const char *kept(const char *label)
{
    for (size_t k = 0; k < output_count; k++)
        if (strcmp(outputs[k].label, label) == 0)
            return outputs[k].text;
    cr_assert(false, "no output called %s", label);
    return NULL;
}

/* Every kept output, every secret; returns the number of leaks. */
static int expect_no_secret(void)
{
    int leaks = 0;

    for (size_t k = 0; k < output_count; k++)
        for (size_t s = 0; s < sizeof secrets / sizeof secrets[0]; s++)
            if (strstr(outputs[k].text, secrets[s])) {
                leaks++;
                cr_expect(false, "%s leaks %s:\n%s", outputs[k].label, secrets[s],
                          outputs[k].text);
            }
    return leaks;
}

/* The checkpoint's token (free), read with the password Redis now asks for;
 * NULL if there is none. */
static char *checkpoint_token(void)
{
    redisContext *c = th_redis_connect(&fx.redis);
    redisReply *r = NULL;
    char *token = NULL;

    if (c && (r = redisCommand(c, "AUTH %s", REDIS_PASSWORD)) != NULL &&
        r->type != REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        r = redisCommand(c, "HGET %s token", FX_CHECKPOINT);
        if (r && r->type == REDIS_REPLY_STRING)
            token = strdup(r->str);
    }
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return token;
}

/* ctx: the token before (or NULL); true once the checkpoint moved on. */
static bool checkpoint_moved(void *ctx)
{
    char *now = checkpoint_token();
    bool moved = now && (!ctx || strcmp(now, ctx) != 0);

    free(now);
    return moved;
}

static bool metrics_served(void *ctx)
{
    long status = 0;

    free(fx_http(*(int *)ctx, "GET", "/metrics", NULL, &status));
    return status == 200;
}

static bool an_alert_arrived(void *ctx)
{
    char **texts;
    size_t n = fx_webhook_texts(&hook, &texts);

    (void)ctx;
    for (size_t k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
    return n > 0;
}

/* Every body w received, in one kept output called label; returns how
 * many there were and, in *failed, how many went to a /fail path.
 * PagerDuty's bodies carry the routing key by design: that one value is
 * blanked, and every other secret searched for. */
static size_t keep_bodies(fx_webhook_t *w, const char *label, bool blank_routing_key,
                          size_t *failed)
{
    bson_string_t *all = bson_string_new(NULL);
    bson_iter_t it, list, field;
    bson_t got;
    size_t k = 0;

    *failed = 0;
    fx_webhook_received(w, &got);
    cr_assert(bson_iter_init_find(&it, &got, "a") && bson_iter_recurse(&it, &list));
    while (bson_iter_next(&list)) {
        char *body;
        char *at;

        bson_iter_recurse(&list, &field);
        if (bson_iter_find(&field, "path") && strstr(bson_iter_utf8(&field, NULL), "/fail"))
            (*failed)++;
        bson_iter_recurse(&list, &field);
        cr_assert(bson_iter_find(&field, "raw"));
        body = strdup(bson_iter_utf8(&field, NULL));
        while (blank_routing_key && (at = strstr(body, ROUTING_KEY)) != NULL)
            memset(at, '-', strlen(ROUTING_KEY));
        bson_string_append_printf(all, "%s\n", body);
        free(body);
        k++;
    }
    bson_destroy(&got);
    keep(label, strdup(all->str));
    bson_string_free(all, true);
    return k;
}

static void keep_alerts(void)
{
    char **texts;
    size_t n = fx_webhook_texts(&hook, &texts), failed;

    for (size_t k = 0; k < n; k++) {
        char label[64];

        snprintf(label, sizeof label, "alert %zu", k);
        keep(label, texts[k]);
    }
    free(texts);
    /* The JSON webhook's bodies (its path is the URL itself), PagerDuty's
     * and the heartbeat's. */
    cr_expect_gt(keep_bodies(&json_hook, "JSON webhook bodies", false, &failed), 0,
                 "the JSON webhook received alerts");
    cr_expect_gt(keep_bodies(&pd_hook, "PagerDuty bodies", true, &failed), 0,
                 "PagerDuty received events");
    keep_bodies(&beat_hook, "heartbeat bodies", false, &failed);
}

/* Redis that wants REDIS_PASSWORD, a guarded key close to lost (so an alert
 * goes out at the first probe), and a MongoDB URI with a password: the
 * simulator takes any credentials. */
static void start_world(void)
{
    redisReply *r;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    fx_webhook_start(&fx, &json_hook);
    fx_webhook_start(&fx, &pd_hook);
    fx_webhook_start(&fx, &beat_hook);
    /* The PagerDuty stand-in refuses every event, naming the key in its
     * reply: the refusal is logged without it. */
    {
        char script[2048] = "{\"responses\": [";

        for (int k = 0; k < 12; k++)
            snprintf(script + strlen(script), sizeof script - strlen(script),
                     "%s{\"status\": 400, \"body\": \"bad routing key %s\"}", k ? ", " : "",
                     ROUTING_KEY);
        snprintf(script + strlen(script), sizeof script - strlen(script), "], \"then\": 400}");
        fx_webhook_script(&pd_hook, script);
    }
    fx_set_key_time(&fx, OTHER_KEY, T0 - 47 * HOUR);
    r = th_redis_cmd(&fx.redis, "CONFIG SET requirepass %s", REDIS_PASSWORD);
    cr_assert(r && r->type != REDIS_REPLY_ERROR, "requirepass is set");
    freeReplyObject(r);
    /* PLAIN: the simulator answers saslStart with ok:1, which is all PLAIN
     * asks for (SCRAM wants a real conversation). */
    snprintf(fx.sim.uri, sizeof fx.sim.uri,
             "mongodb://cdc:%s@localhost:%d/?replicaSet=rs0&authMechanism=PLAIN",
             MONGO_PASSWORD_URL, fx.sim.mongo_port);
}

static void set_redis_url(bool with_password)
{
    snprintf(fx.redis_url, sizeof fx.redis_url, "redis://%s127.0.0.1:%d/0",
             with_password ? ":" REDIS_PASSWORD_URL "@" : "", fx.redis.port);
}

/* tokenwatch subcommands against the fixture; stdout and stderr kept. */
static int cli(const char *label, const char *const args[])
{
    char *out, *err;
    char name[128];
    int code = fx_cli(&fx, args, &out, &err);

    snprintf(name, sizeof name, "%s stdout", label);
    keep(name, out);
    snprintf(name, sizeof name, "%s stderr", label);
    keep(name, err);
    return code;
}

static void run_following(const char *label, const char *const more[])
{
    th_proc_t p;
    char addr[64], json_url[256], pd_url[256], beat_url[256];
    const char *extra[40];
    size_t n = 0;
    int port = th_free_port();
    long status = 0;
    char *before;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(json_url, sizeof json_url, "http://127.0.0.1:%d/hooks/%s?token=%s", json_hook.port,
             JSON_SECRET, JSON_SECRET);
    snprintf(pd_url, sizeof pd_url, "http://127.0.0.1:%d/v2/enqueue", pd_hook.port);
    snprintf(beat_url, sizeof beat_url, "http://127.0.0.1:%d/ping/%s", beat_hook.port,
             BEAT_SECRET);
    for (const char *const *a = (const char *const[]){
             "--log-level", "debug", "--guard", OTHER_KEY, "--monitor-interval", "100ms",
             "--metrics-addr", addr, "--slack-webhook", hook.url, "--webhook-url", json_url,
             "--pagerduty-routing-key", ROUTING_KEY, "--pagerduty-url", pd_url,
             "--heartbeat-url", beat_url, NULL};
         *a; a++)
        extra[n++] = *a;
    for (size_t k = 0; more && more[k]; k++)
        extra[n++] = more[k];
    extra[n] = NULL;
    before = checkpoint_token();
    fx_spawn(&fx, &p, extra);
    th_assert_dump(th_wait_until(metrics_served, &port, 10000), p.err_path,
                   "%s: /metrics is served", label);
    free(fx_post_events(&fx, 3));
    th_assert_dump(th_wait_until(checkpoint_moved, before, 20000), p.err_path,
                   "%s: a checkpoint is written", label);
    free(before);
    th_assert_dump(th_wait_until(an_alert_arrived, NULL, 20000), p.err_path,
                   "%s: an alert is sent", label);
    keep("/metrics", fx_http(port, "GET", "/metrics", NULL, &status));
    cr_expect_eq(status, 200);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0, "%s exits cleanly", label);
    keep_proc(label, &p);
    keep_alerts();
}

Test(secrets, none_in_logs_alerts_metrics_status_or_plans)
{
    static const char *const status[] = {"status", NULL};
    static const char *const status_json[] = {"status", "--json", NULL};
    static const char *const help[] = {"--help", NULL};
    static const char *const dry_run[] = {"run", "--db", "shop", "--collection", "orders",
                                          "--resume-from", "oldest", "--dry-run",
                                          "--log-level", "debug", NULL};
    char pw_file[PATH_MAX];
    static const char *const json[] = {"--log-format", "json", NULL};

    start_world();
    set_redis_url(true);
    run_following("run, text log, password in the URL", NULL);
    cr_expect_eq(cli("status", status), 0);
    cr_expect_eq(cli("status --json", status_json), 0);
    cr_expect_eq(cli("--help", help), 0);
    cr_expect_eq(cli("dry run", dry_run), 0);

    /* The password from a file, the log as JSON. */
    cr_assert(th_path(pw_file, sizeof pw_file, fx.dir, "redis-password"));
    cr_assert(th_write_file(pw_file, REDIS_PASSWORD "\n", strlen(REDIS_PASSWORD) + 1));
    set_redis_url(false);
    {
        /* The heartbeat POSTs each round's outcome; a Kafka Connect guard
         * with a login on a closed port is an UNKNOWN position with a reason,
         * in the alerts, the log and /metrics. */
        char connect_url[160];
        const char *more[] = {json[0], json[1], "--redis-password-file", pw_file,
                              "--heartbeat-method", "post", "--guard", connect_url, NULL};
        const char *st[] = {"status", "--json", "--redis-password-file", pw_file, NULL};
        size_t beats, failed;

        snprintf(connect_url, sizeof connect_url,
                 "http://cdc:M0ngoS3crConnect@127.0.0.1:%d/connectors/orders", th_free_port());
        run_following("run, JSON log, password file", more);
        beats = keep_bodies(&beat_hook, "heartbeat bodies, POST", false, &failed);
        cr_expect_gt(beats, 0, "the heartbeat POSTed");
        cr_log_info("%zu heartbeat bodies searched, %zu of failed rounds", beats, failed);
        cr_expect(strstr(kept("run, JSON log, password file stderr"), "cdc:***@127.0.0.1") != NULL,
                  "the Connect guard was read and named redacted");
        cr_expect_eq(cli("status --json, password file", st), 0);
    }
    /* What was searched says what it should, redacted. */
    cr_expect(strstr(kept("run, text log, password in the URL stderr"),
                     "checkpoints in redis://:***@127.0.0.1:") != NULL);
    {
        /* The first alert may be "started without a checkpoint": a CRIT follows. */
        bool crit = false;

        for (int k = 0; k < 4; k++) {
            char label[32];

            snprintf(label, sizeof label, "alert %d", k);
            crit = crit || strstr(kept(label), "is now CRIT") != NULL;
        }
        cr_expect(crit, "a CRIT alert was searched too");
    }
    cr_expect(strstr(kept("dry run stdout"), "nothing was changed (--dry-run)") != NULL);
    cr_expect(strstr(kept("run, text log, password in the URL stderr"),
                     "HTTP 400 (bad routing key \xe2\x80\xa6") != NULL,
              "PagerDuty's refusal is logged, the key cut out of it");
    cr_expect(strstr(kept("status --json stdout"), "\"state\"") != NULL);
    cr_expect(strstr(kept("--help stdout"), "--redis-url") != NULL);
    cr_expect(strstr(kept("/metrics"), "tokenwatch_") != NULL);
    cr_expect(strstr(kept("run, JSON log, password file stderr"), "{\"time\"") != NULL);
    cr_expect_eq(expect_no_secret(), 0);
}

/* Refused values and failed connections: each message, no secret. */
Test(secrets, none_in_refusals)
{
    static const char *const bad[][8] = {
        {"run", "--mongo-uri", "mongodb://cdc:M0ngoS3cr/Pw@host/", NULL},
        {"run", "--mongo-uri", "mongodb://cdc:M0ngoS3cr@h/?authMechanism=SCRAM-SHA-1&"
                               "tlsCertificateKeyFilePassword=M0ngoS3crK&bogus=%%zz", NULL},
        {"run", "--shard-uri", "shard0=mongodb://tw:M0ngoS3cr/x@a:1/", NULL},
        {"run", "--shard-uri", "mongodb://tw:M0ngoS3cr/x@a:1/", NULL},
        {"run", "--redis-url", "redis://:R3disS3cr/x@h/0", NULL},
        {"run", "--redis-url", "redis://app:12/R3disS3cr@h/0", NULL},
        {"run", "--redis-url", "unix:///run/redis.sock?password=R3disS3cr", NULL},
        {"run", "--slack-webhook", "htps://hooks.example/services/" FX_WEBHOOK_SECRET, NULL},
        {"run", "--webhook-url", "http//bots.example/" JSON_SECRET, NULL},
        {"run", "--heartbeat-url", "hc-ping.com/" BEAT_SECRET, NULL},
        {"run", "--pagerduty-routing-key", "PdR0utingS3cret!/x", NULL},
        {"run", "--pagerduty-url", "ftp://events.example/" JSON_SECRET, NULL},
        {"run", "-mongo-uri=mongodb://cdc:M0ngoS3cr@h/", NULL},
        {"status", "mongodb://cdc:M0ngoS3cr@h/", NULL},
        {"run", "mongodb://cdc:M0ngoS3cr@h/", NULL},
        {"mongodb://cdc:M0ngoS3cr@h/", NULL},
        {"checkpoint", "mongodb://cdc:M0ngoS3cr@h/", "--dry-run", NULL},
    };

    start_world();
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char label[64];
        int code;

        snprintf(label, sizeof label, "refusal %zu", k);
        code = cli(label, bad[k]);
        cr_expect(code != 0, "%s is refused", label);
    }
    /* Files whose content is not a URL or a key: refused, never quoted. */
    {
        char url_file[PATH_MAX], key_file[PATH_MAX];
        const char *url_args[] = {"run", "--webhook-url-file", url_file, NULL};
        const char *key_args[] = {"run", "--pagerduty-routing-key-file", key_file, NULL};
        const char *beat_args[] = {"run", "--heartbeat-url-file", url_file, NULL};

        cr_assert(th_path(url_file, sizeof url_file, fx.dir, "webhook-url"));
        cr_assert(th_path(key_file, sizeof key_file, fx.dir, "routing-key"));
        cr_assert(th_write_file(url_file, "not a url " JSON_SECRET BEAT_SECRET "\n",
                                strlen("not a url " JSON_SECRET BEAT_SECRET "\n")));
        cr_assert(th_write_file(key_file, "PdR0utingS3cret with blanks\n",
                                strlen("PdR0utingS3cret with blanks\n")));
        cr_expect_eq(cli("bad webhook URL file", url_args), 2);
        cr_expect_eq(cli("bad routing key file", key_args), 2);
        cr_expect_eq(cli("bad heartbeat URL file", beat_args), 2);
        cr_expect(strstr(kept("bad routing key file stderr"), key_file) != NULL, "%s",
                  kept("bad routing key file stderr"));
    }
    /* A wrong Redis password: the refusal names no password. */
    snprintf(fx.redis_url, sizeof fx.redis_url, "redis://:R3disS3crWrong@127.0.0.1:%d/0",
             fx.redis.port);
    {
        static const char *const show[] = {"checkpoint", "show", "--log-level", "debug", NULL};
        static const char *const status[] = {"status", "--log-level", "debug", NULL};

        cr_expect_neq(cli("wrong Redis password", show), 0);
        cr_expect_neq(cli("wrong Redis password, status", status), 0);
    }
    /* The refusals still say what was wrong, with the secret hidden. */
    cr_expect(strstr(kept("refusal 0 stderr"), "'mongodb://cdc:***@host/'") != NULL, "%s",
              kept("refusal 0 stderr"));
    cr_expect(strstr(kept("refusal 13 stderr"), "'mongodb://cdc:***@h/'") != NULL, "%s",
              kept("refusal 13 stderr"));
    cr_expect(strstr(kept("refusal 10 stderr"), "--pagerduty-routing-key") != NULL, "%s",
              kept("refusal 10 stderr"));
    cr_expect(strstr(kept("wrong Redis password stderr"), "authentication failed") != NULL,
              "%s", kept("wrong Redis password stderr"));
    cr_expect_eq(expect_no_secret(), 0);
}
