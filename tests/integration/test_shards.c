/*
 * The guard on a sharded cluster (the simulator's mongos profile: a router
 * and a replica set per shard, each with its own oplog) and on an oplog
 * truncated in steps.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "guarded.h"

#define T0 1700000000u
#define HOUR 3600
#define OTHER_KEY "billing:resume-token"
/* shard0 keeps an hour, shard1 half an hour: shard1 is the edge. */
#define TWO_SHARDS                                                                       \
    "{\"profile\": \"mongos\", \"rate\": 0, \"initial_oplog_span\": 7200, "               \
    "\"shards\": [{\"name\": \"shard0\", \"retention\": 3600}, "                          \
    "{\"name\": \"shard1\", \"retention\": 1800}]}"

static fx_t fx;
static fx_webhook_t hook;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(shards, .fini = teardown, .timeout = 90);

static int status(const char *const more[], char **out)
{
    const char *argv[16];
    char *err = NULL;
    size_t n = 0;
    int code;

    argv[n++] = th_binary();
    argv[n++] = "status";
    argv[n++] = "--mongo-uri";
    argv[n++] = fx.sim.uri;
    argv[n++] = "--redis-url";
    argv[n++] = fx.redis_url;
    argv[n++] = "--guard";
    argv[n++] = OTHER_KEY;
    for (size_t k = 0; more && more[k]; k++)
        argv[n++] = more[k];
    argv[n] = NULL;
    code = th_run(fx.dir, argv, NULL, 30000, out, &err);
    free(err);
    return code;
}

Test(shards, status_reads_every_shard_and_the_edge_drives_the_state)
{
    static const char *const json[] = {"--json", NULL};
    char *out;
    bson_t doc;
    bson_iter_t it;
    int code;

    fx_start(&fx, TWO_SHARDS);
    fx_seed_own_time(&fx, T0);
    /* 1000 s above shard1's oldest entry: 56% of its window, OK; 1000 s
     * older: below it, LOST (shard0 alone would say 44%, WARN). */
    fx_set_key_time(&fx, OTHER_KEY, T0 - 800);
    code = status(NULL, &out);
    cr_expect_eq(code, 0, "%s", out);
    cr_expect(strstr(out, "shard shard0: window 1h from ") != NULL, "%s", out);
    cr_expect(strstr(out, "shard shard1: window 30m from ") != NULL, "%s", out);
    cr_expect(strstr(out, "shard1: window 30m from 2023-11-14T21:43:20Z (the edge") != NULL, "%s",
              out);
    cr_expect(fx_count(out, "(the edge") == 1, "%s", out);
    free(out);

    fx_set_key_time(&fx, OTHER_KEY, T0 - 2800);
    code = status(json, &out);
    cr_expect_eq(code, 2, "LOST on the edge shard: %s", out);
    cr_assert(bson_init_from_json(&doc, out, -1, NULL), "%s", out);
    cr_expect(bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "keys.1.state", &it) &&
                  strcmp(bson_iter_utf8(&it, NULL), "LOST") == 0,
              "%s", out);
    cr_expect(bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "shards.1.edge", &it) &&
                  bson_iter_bool(&it),
              "%s", out);
    cr_expect(bson_iter_init(&it, &doc) &&
                  bson_iter_find_descendant(&it, "shards.1.window_seconds", &it) &&
                  bson_iter_as_int64(&it) == 1800,
              "%s", out);
    cr_expect(bson_iter_init(&it, &doc) &&
                  bson_iter_find_descendant(&it, "window.seconds", &it) &&
                  bson_iter_as_int64(&it) == 1800,
              "the guard's window is the edge's: %s", out);
    bson_destroy(&doc);
    free(out);
}

static void spawn_guarding(th_proc_t *p, int port, const char *const more[])
{
    fx_spawn_guarding(&fx, p, OTHER_KEY, port, hook.url, more);
}

Test(shards, metrics_per_shard_then_a_shard_down_is_said_once)
{
    th_proc_t p;
    int port = th_free_port();
    bson_t reply;
    char **texts;
    size_t n;
    char *err;

    fx_start(&fx, TWO_SHARDS);
    fx_webhook_start(&fx, &hook);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 800);
    spawn_guarding(&p, port, NULL);
    th_assert_dump(fx_wait_metric(port, "tokenwatch_shard_up{shard=\"shard1\"}", 1, 15000),
                   p.err_path, "shard1 read");
    cr_expect_eq(fx_metric(port, "tokenwatch_oplog_window_seconds{shard=\"shard0\"}"), 3600);
    cr_expect_eq(fx_metric(port, "tokenwatch_oplog_window_seconds{shard=\"shard1\"}"), 1800);
    cr_expect_eq(fx_metric(port, "tokenwatch_oplog_window_seconds"), 1800);
    cr_expect_eq(fx_metric(port, "tokenwatch_oplog_edge_shard{shard=\"shard1\"}"), 1);
    cr_expect_eq(fx_metric(port, "tokenwatch_oplog_edge_shard{shard=\"shard0\"}"), 0);

    fx_sim(&fx, "POST", "/down", "{\"seconds\": 60, \"shard\": \"shard1\"}", &reply);
    bson_destroy(&reply);
    th_assert_dump(fx_wait_metric(port, "tokenwatch_shard_up{shard=\"shard1\"}", 0, 20000),
                   p.err_path, "shard1 down");
    cr_expect_eq(fx_metric(port, "tokenwatch_shard_up{shard=\"shard0\"}"), 1);
    th_assert_dump(fx_wait_metric(port,
                                  "tokenwatch_token_state{key=\"" OTHER_KEY
                                  "\",state=\"UNKNOWN\"}",
                                  1, 30000),
                   p.err_path, "UNKNOWN without --retention");
    th_sleep_ms(3000); /* many more rounds */
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 15000));
    err = th_proc_stderr(&p);
    cr_expect_eq(fx_count(err, "guard: 1 of 2 shards cannot be read"), 1, "said once:\n%s", err);
    cr_expect(strstr(err, "shard1 (shard1/localhost:") != NULL, "names the shard:\n%s", err);
    free(err);
    n = fx_webhook_texts(&hook, &texts);
    {
        int unknown = 0;

        for (size_t k = 0; k < n; k++) {
            unknown += strstr(texts[k], OTHER_KEY " is now UNKNOWN") != NULL;
            free(texts[k]);
        }
        free(texts);
        cr_expect_eq(unknown, 1, "one UNKNOWN alert, not one a round (%zu alerts)", n);
    }
}

Test(shards, a_shard_down_with_retention_keeps_a_window)
{
    static const char *const more[] = {"--retention", "1h", NULL};
    bson_t reply;
    char *out;
    int code;

    fx_start(&fx, TWO_SHARDS);
    fx_seed_own_time(&fx, T0);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 600);
    fx_sim(&fx, "POST", "/down", "{\"seconds\": 60, \"shard\": \"shard0\"}", &reply);
    bson_destroy(&reply);
    code = status(more, &out);
    cr_expect_eq(code, 0, "OK on --retention's window: %s", out);
    cr_expect(strstr(out, "window 1h (--retention)") != NULL, "%s", out);
    cr_expect(strstr(out, "shard shard0: cannot be read") != NULL, "%s", out);
    free(out);
}

/* ---- an oplog truncated in steps ---------------------------------------- */

Test(shards, stepwise_truncation_warns_crits_and_loses_once_each)
{
    /* 4 h kept, cut in 8 markers of 30 min; limits as durations. The clock
     * runs half an hour a second: the oldest entry jumps once a second. */
    static const char *const more[] = {"--warn-at", "1h", "--crit-at", "30m", NULL};
    th_proc_t p;
    int port = th_free_port();
    bson_t reply;
    char **texts;
    size_t n;
    int warn = 0, crit = 0, lost = 0, resolved = 0;

    fx_start(&fx, "{\"rate\": 0, \"retention\": 14400, \"initial_oplog_span\": 16200, "
                  "\"truncate_markers\": 8, \"background_every\": 60}");
    fx_webhook_start(&fx, &hook);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 5400); /* 1.5 h old, with 2.5 h or more of headroom */
    spawn_guarding(&p, port, more);
    th_assert_dump(fx_wait_metric(port,
                                  "tokenwatch_token_state{key=\"" OTHER_KEY "\",state=\"OK\"}",
                                  1, 10000),
                   p.err_path, "OK at first");
    fx_sim(&fx, "POST", "/clock", "{\"rate\": 1800}", &reply);
    bson_destroy(&reply);
    th_assert_dump(fx_wait_metric(port,
                                  "tokenwatch_token_state{key=\"" OTHER_KEY
                                  "\",state=\"LOST\"}",
                                  1, 30000),
                   p.err_path, "LOST in the end");
    fx_sim(&fx, "POST", "/clock", "{\"rate\": 0}", &reply);
    bson_destroy(&reply);
    th_sleep_ms(1000);
    th_proc_stop(&p, 10000);
    n = fx_webhook_texts(&hook, &texts);
    for (size_t k = 0; k < n; k++) {
        warn += strstr(texts[k], OTHER_KEY " is now WARN") != NULL;
        crit += strstr(texts[k], OTHER_KEY " is now CRIT") != NULL;
        lost += strstr(texts[k], OTHER_KEY " is now LOST") != NULL;
        resolved += strstr(texts[k], OTHER_KEY " is resolved") != NULL;
        free(texts[k]);
    }
    free(texts);
    cr_expect_eq(warn, 1, "WARN once");
    cr_expect_eq(crit, 1, "CRIT once");
    cr_expect_eq(lost, 1, "LOST once");
    cr_expect_eq(resolved, 0, "no flapping back to OK between the steps");
}

Test(shards, a_shard_uri_of_its_own_is_used)
{
    char over[400], wrong[64];
    const char *more[] = {"--shard-uri", over, NULL};
    char *out;
    int code;

    fx_start(&fx, TWO_SHARDS);
    fx_seed_own_time(&fx, T0);
    fx_set_key_time(&fx, OTHER_KEY, T0 - 800);
    /* A port nothing listens on: shard1 is read through the override only. */
    snprintf(wrong, sizeof wrong, "%d", th_free_port());
    snprintf(over, sizeof over, "shard1=mongodb://localhost:%s/?replicaSet=shard1", wrong);
    code = status(more, &out);
    cr_expect_eq(code, 3, "shard1 unreadable, no --retention: UNKNOWN: %s", out);
    cr_expect(strstr(out, "shard shard1: cannot be read") != NULL, "%s", out);
    free(out);
    snprintf(over, sizeof over, "shard1=%s", fx_shard_uri(&fx, "shard1"));
    code = status(more, &out);
    cr_expect_eq(code, 0, "%s", out);
    cr_expect(strstr(out, "shard shard1: window 30m") != NULL, "%s", out);
    free(out);
}
