/*
 * A store that comes back empty: no checkpoint where one should be (Redis
 * restarted without persistence, flushed, a new instance, a mistyped --name
 * or db). Nothing may start "from now" silently.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define HOUR_OF_OPLOG "{\"rate\": 0, \"retention\": 3600, \"initial_oplog_span\": 3600}"

static fx_t fx;
static fx_webhook_t hook;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(missing, .fini = teardown, .timeout = 60);

Test(missing, a_protected_environment_refuses_to_start_from_now)
{
    static const char *const extra[] = {"--environment", "Prod", NULL};
    char *before, *after, *err = NULL;
    int code;

    fx_start(&fx, HOUR_OF_OPLOG);
    before = fx_redis_state(&fx);
    code = fx_run(&fx, extra, 20000, &err);
    cr_expect_eq(code, 2, "exit 2, got %d: %s", code, err);
    cr_expect(strstr(err, "no checkpoint at tokenwatch:{default}:checkpoint") != NULL, "%s",
              err);
    cr_expect(strstr(err, "--on-missing-checkpoint") != NULL, "%s", err);
    cr_expect(strstr(err, "--resume-from") != NULL && strstr(err, "--confirm Prod") != NULL,
              "%s", err);
    after = fx_redis_state(&fx);
    cr_expect_str_eq(after, before, "nothing written");
    cr_expect_eq(fx_count_commands(&fx, "aggregate"), 0, "no stream opened");
    free(before);
    free(after);
    free(err);
}

Test(missing, elsewhere_it_starts_from_now_with_a_warning_and_one_alert)
{
    const char *extra[] = {"--slack-webhook", NULL, NULL};
    th_proc_t p, again;
    char **texts;
    size_t n = 0;
    char *err;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_webhook_start(&fx, &hook);
    extra[1] = hook.url;
    fx_spawn(&fx, &p, extra);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "starts from now");
    for (int k = 0; k < 100 && n == 0; k++) {
        n = fx_webhook_texts(&hook, &texts);
        if (n == 0)
            th_sleep_ms(50);
    }
    cr_assert_eq(n, 1, "one alert");
    cr_expect(strstr(texts[0], "WARN") != NULL, "%s", texts[0]);
    cr_expect(strstr(texts[0], "started without a checkpoint") != NULL, "%s", texts[0]);
    free(texts[0]);
    free(texts);
    th_proc_stop(&p, 10000);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "warn  [default/dev] no checkpoint at tokenwatch:{default}:checkpoint") !=
                  NULL,
              "%s", err);
    free(err);

    /* The next start has its checkpoint: nothing more to say. */
    fx_spawn(&fx, &again, extra);
    th_sleep_ms(1000);
    th_proc_stop(&again, 10000);
    n = fx_webhook_texts(&hook, &texts);
    cr_expect_eq(n, 1, "no second alert");
    for (size_t k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
}

Test(missing, on_purpose_from_the_oldest_entry_in_prod)
{
    static const char *const extra[] = {"--environment", "prod", "--on-missing-checkpoint",
                                        "oldest", NULL};
    th_proc_t p;
    bson_t stage, state;
    bson_iter_t it, want;
    uint32_t t, i;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "starts");
    th_proc_stop(&p, 10000);
    cr_assert(fx_last_change_stream(&fx, &stage));
    cr_assert(bson_iter_init_find(&it, &stage, "startAtOperationTime"), "by time");
    bson_iter_timestamp(&it, &t, &i);
    fx_sim(&fx, "GET", "/state", NULL, &state);
    cr_assert(bson_iter_init(&want, &state) && bson_iter_find_descendant(&want, "oldest.t", &want));
    cr_expect_eq(t, (uint32_t)bson_iter_as_int64(&want), "the oldest entry's time");
    bson_destroy(&stage);
    bson_destroy(&state);
}

/* ---- a Redis that can lose checkpoints ---------------------------------- */

Test(missing, a_redis_without_persistence_is_said_and_stops_a_protected_start)
{
    static const char *const dev[] = {NULL};
    static const char *const prod[] = {"--environment", "prod", NULL};
    static const char *const accepted[] = {"--environment", "prod", "--accept-store-risk",
                                           NULL};
    char *data, *err = NULL;
    th_proc_t p;
    int code;

    fx_start(&fx, HOUR_OF_OPLOG);
    data = fx_hwm_data(1700000000u, 1);
    fx_seed_checkpoint(&fx, data, NULL);
    freeReplyObject(th_redis_cmd(&fx.redis, "CONFIG SET appendonly no"));
    freeReplyObject(th_redis_cmd(&fx.redis, "CONFIG SET save \"\""));
    code = fx_run(&fx, prod, 20000, &err);
    cr_expect_eq(code, 2, "%s", err);
    cr_expect(strstr(err, "can lose them: no persistence") != NULL, "%s", err);
    cr_expect(strstr(err, "--accept-store-risk") != NULL, "%s", err);
    free(err);

    fx_spawn(&fx, &p, accepted);
    th_sleep_ms(1000);
    cr_expect(th_proc_running(&p), "accepted on purpose");
    th_proc_stop(&p, 10000);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "(accepted: --accept-store-risk)") != NULL, "%s", err);
    free(err);

    freeReplyObject(th_redis_cmd(&fx.redis, "CONFIG SET maxmemory-policy allkeys-lru"));
    fx_spawn(&fx, &p, dev);
    th_sleep_ms(1000);
    cr_expect(th_proc_running(&p), "elsewhere a warning only");
    th_proc_stop(&p, 10000);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "warn") != NULL && strstr(err, "maxmemory-policy allkeys-lru") != NULL,
              "%s", err);
    free(err);
    bson_free(data);
}

/* A read-only replica refuses the lease's first write (READONLY): that was
 * ridden out as an outage for ever, and the replica never named. The store
 * is checked before the lease is taken. */
Test(missing, a_read_only_replica_stops_a_protected_start_before_the_lease)
{
    static const char *const prod[] = {"--environment", "prod", NULL};
    static const char *const dev[] = {NULL};
    char *data, *err = NULL;
    th_proc_t p;
    int code;

    fx_start(&fx, HOUR_OF_OPLOG);
    data = fx_hwm_data(1700000000u, 1);
    fx_seed_checkpoint(&fx, data, NULL);
    bson_free(data);
    /* The replica of a master that never answers keeps its data, read only. */
    freeReplyObject(th_redis_cmd(&fx.redis, "REPLICAOF 127.0.0.1 1"));
    code = fx_run(&fx, prod, 10000, &err);
    cr_expect_eq(code, 2, "exit 2, not an outage ridden out: %d\n%s", code, err);
    cr_expect(strstr(err, "can lose them: a replica") != NULL, "%s", err);
    cr_expect(strstr(err, "--accept-store-risk") != NULL, "%s", err);
    free(err);

    fx_spawn(&fx, &p, dev);
    th_sleep_ms(1000);
    th_proc_stop(&p, 10000);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "warn") != NULL && strstr(err, "can lose them: a replica") != NULL,
              "elsewhere it is said: %s", err);
    free(err);
}

Test(missing, status_says_it_even_where_config_is_refused)
{
    char url[160], *out, *err;
    int code;
    const char *argv[] = {th_binary(), "status", "--mongo-uri", NULL, "--redis-url", url, NULL};
    char *data;

    fx_start(&fx, HOUR_OF_OPLOG);
    data = fx_hwm_data(1700000000u, 1);
    fx_seed_checkpoint(&fx, data, NULL);
    bson_free(data);
    argv[3] = fx.sim.uri;
    /* A managed Redis: the user may not run CONFIG; INFO still answers. */
    freeReplyObject(th_redis_cmd(&fx.redis, "ACL SETUSER limited on >pw ~* +@all -config"));
    freeReplyObject(th_redis_cmd(&fx.redis, "CONFIG SET maxmemory-policy allkeys-lfu"));
    snprintf(url, sizeof url, "redis://limited:pw@127.0.0.1:%d/0", fx.redis.port);
    code = th_run(fx.dir, argv, NULL, 20000, &out, &err);
    cr_expect_eq(code, 0, "the tokens are fine: %s%s", out, err);
    cr_expect(strstr(out, "store: the Redis that holds the checkpoints can lose them: "
                          "maxmemory-policy allkeys-lfu") != NULL,
              "%s", out);
    free(out);
    free(err);
}

/* A user that may run neither CONFIG nor INFO (`+@all -@dangerous`): nothing
 * can be told about the store, and that is a risk like the others. */
Test(missing, a_store_that_cannot_be_probed_stops_a_protected_start)
{
    static const char *const prod[] = {"--environment", "prod", NULL};
    static const char *const accepted[] = {"--environment", "prod", "--accept-store-risk",
                                           NULL};
    static const char *const dev[] = {NULL};
    const char *status[] = {th_binary(), "status", "--mongo-uri", NULL, "--redis-url",
                            fx.redis_url, NULL};
    char *data, *out, *err = NULL;
    th_proc_t p;
    int code;

    fx_start(&fx, HOUR_OF_OPLOG);
    status[3] = fx.sim.uri;
    data = fx_hwm_data(1700000000u, 1);
    fx_seed_checkpoint(&fx, data, NULL);
    bson_free(data);
    freeReplyObject(
        th_redis_cmd(&fx.redis, "ACL SETUSER blind on >pw ~* &* +@all -@dangerous"));
    snprintf(fx.redis_url, sizeof fx.redis_url, "redis://blind:pw@127.0.0.1:%d/0",
             fx.redis.port);
    code = fx_run(&fx, prod, 20000, &err);
    cr_expect_eq(code, 2, "exit 2, got %d: %s", code, err);
    cr_expect(strstr(err, "cannot tell whether the Redis that holds the checkpoints keeps "
                          "them: CONFIG GET and INFO are both refused") != NULL,
              "%s", err);
    cr_expect(strstr(err, "Not starting in protected environment prod") != NULL, "%s", err);
    cr_expect(strstr(err, "--accept-store-risk") != NULL, "%s", err);
    free(err);

    fx_spawn(&fx, &p, accepted);
    th_sleep_ms(1000);
    cr_expect(th_proc_running(&p), "accepted on purpose");
    th_proc_stop(&p, 10000);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "warn") != NULL && strstr(err, "both refused") != NULL &&
                  strstr(err, "(accepted: --accept-store-risk)") != NULL,
              "%s", err);
    free(err);

    fx_spawn(&fx, &p, dev);
    th_sleep_ms(1000);
    cr_expect(th_proc_running(&p), "elsewhere a warning only");
    th_proc_stop(&p, 10000);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "warn") != NULL &&
                  strstr(err, "cannot tell whether the Redis that holds the checkpoints") !=
                      NULL,
              "%s", err);
    free(err);

    code = th_run(fx.dir, status, NULL, 20000, &out, &err);
    cr_expect_eq(code, 0, "the tokens are fine: %s%s", out, err);
    cr_expect(strstr(out, "store: cannot tell whether the Redis that holds the checkpoints "
                          "keeps them: CONFIG GET and INFO are both refused") != NULL,
              "%s", out);
    free(out);
    free(err);
}
