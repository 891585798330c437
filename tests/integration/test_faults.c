/*
 * Faults: kill -9, Redis away, MongoDB away, lost resume points, another
 * stream's checkpoint.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(faults, .fini = teardown, .timeout = 90);

/* Every sequence number 1..last appears; returns how many appear twice or more. */
static size_t check_complete(int64_t last)
{
    int64_t *seqs;
    size_t n = fx_stream_seqs(&fx, &seqs);
    unsigned char *seen = calloc((size_t)last + 1, 1);
    size_t duplicates = 0;

    for (size_t k = 0; k < n; k++) {
        cr_assert(seqs[k] >= 1 && seqs[k] <= last, "seq %lld", (long long)seqs[k]);
        if (seen[seqs[k]]++)
            duplicates++;
    }
    for (int64_t s = 1; s <= last; s++)
        cr_expect(seen[s], "seq %lld is missing", (long long)s);
    free(seen);
    free(seqs);
    return duplicates;
}

static bool stream_has(void *ctx)
{
    int64_t *seqs;
    size_t n = fx_stream_seqs(&fx, &seqs);
    bool done = false;

    for (size_t k = 0; k < n; k++)
        if (seqs[k] == *(int64_t *)ctx)
            done = true;
    free(seqs);
    return done;
}

Test(faults, kill_9_mid_stream_loses_nothing)
{
    static const char *const extra[] = {"--sink", "redis", "--checkpoint-every", "10",
                                        NULL};
    th_proc_t p;
    int64_t last = 300;
    size_t duplicates;

    fx_start(&fx, "{\"batch_size\": 10}");
    fx_spawn(&fx, &p, extra);
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    for (int chunk = 0; chunk < 30; chunk++) {
        bson_free(fx_post_events(&fx, 10));
        if (chunk == 12) {
            th_assert_dump(fx_wait_checkpoint_events(&fx, 50, 10000), p.err_path,
                           "some events checkpointed");
            th_proc_kill(&p);
        }
        th_sleep_ms(10);
    }
    cr_expect_lt(fx_checkpoint_events(&fx), last, "killed in the middle");
    fx_spawn(&fx, &p, extra);
    th_assert_dump(th_wait_until(stream_has, &last, 20000), p.err_path, "catches up");
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 10000));
    cr_expect_eq(th_proc_exit_code(&p), 0);
    duplicates = check_complete(last);
    cr_expect_leq(duplicates, 10, "at most one checkpoint batch again: %zu", duplicates);
    cr_log_info("kill -9: %zu duplicates", duplicates);
}

Test(faults, redis_stopped_and_restarted_mid_stream)
{
    static const char *const extra[] = {"--sink", "redis", "--checkpoint-every", "5",
                                        NULL};
    th_proc_t p;
    int64_t last = 60;
    char *before, *after, *err;

    fx_start(&fx, NULL);
    fx_spawn(&fx, &p, extra);
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    bson_free(fx_post_events(&fx, 20));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 20, 10000), p.err_path, "20 events");
    before = fx_checkpoint(&fx, "cluster_time");

    th_redis_stop(&fx.redis);
    bson_free(fx_post_events(&fx, 40));
    th_sleep_ms(1500);
    cr_assert(th_proc_running(&p), "stays up while Redis is away");
    cr_assert(th_redis_restart(&fx.redis));
    th_assert_dump(th_wait_until(stream_has, &last, 30000), p.err_path,
                   "carries on when Redis returns");
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 10000));
    cr_expect_eq(th_proc_exit_code(&p), 0);

    after = fx_checkpoint(&fx, "cluster_time");
    cr_expect_geq(strtoul(after, NULL, 10), strtoul(before, NULL, 10));
    cr_expect_eq(fx_checkpoint_events(&fx), last);
    cr_expect_eq(check_complete(last), 0, "no duplicates: each batch is one transaction");
    err = th_proc_stderr(&p);
    cr_expect_eq(fx_count(err, "Redis unavailable"), 1, "one line per outage:\n%s", err);
    cr_expect_eq(fx_count(err, "Redis available again"), 1, "%s", err);
    free(before);
    free(after);
    free(err);
}

Test(faults, mongodb_away_then_back_resumes_from_the_checkpoint)
{
    th_proc_t p;
    int64_t last = 30;
    bson_t reply;
    char *err;
    char uri[300];

    fx_start(&fx, NULL);
    /* Away longer than server selection waits, so libmongoc's own single
     * resume fails and tokenwatch's reconnect loop takes over. */
    snprintf(uri, sizeof uri, "%s&serverSelectionTimeoutMS=1000", fx.sim.uri);
    {
        const char *const extra[] = {"--sink", "redis", "--mongo-uri", uri, NULL};
        fx_spawn(&fx, &p, extra);
    }
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    bson_free(fx_post_events(&fx, 10));
    cr_assert(fx_wait_checkpoint_events(&fx, 10, 10000));
    fx_sim(&fx, "POST", "/down", "{\"seconds\": 4}", &reply);
    bson_destroy(&reply);
    th_sleep_ms(500);
    bson_free(fx_post_events(&fx, 20));
    th_assert_dump(th_wait_until(stream_has, &last, 40000), p.err_path,
                   "follows again once MongoDB is back");
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 10000));
    cr_expect_eq(th_proc_exit_code(&p), 0);
    cr_expect_eq(check_complete(last), 0);
    err = th_proc_stderr(&p);
    cr_expect_eq(fx_count(err, "MongoDB unavailable"), 1, "one line per outage:\n%s", err);
    cr_expect_eq(fx_count(err, "MongoDB available again"), 1, "%s", err);
    free(err);
}


static void expect_unchanged(const char *before_token, const char *what)
{
    char *now = fx_checkpoint(&fx, "token");
    cr_expect_str_eq(now, before_token, "%s: the checkpoint is untouched", what);
    free(now);
}

Test(faults, a_token_older_than_the_oplog_exits_3_before_any_resume)
{
    char *old = fx_hwm_data(1700000000 - 86400, 1);
    char *token, *err = NULL;
    int code;

    /* An oplog of one hour; the checkpoint is a day old. */
    fx_start(&fx, "{\"retention\": 3600, \"initial_oplog_span\": 3600}");
    fx_seed_checkpoint(&fx, old, NULL);
    token = fx_checkpoint(&fx, "token");
    code = fx_run(&fx, NULL, 20000, &err);
    cr_expect_eq(code, 3, "exit code %d: %s", code, err);
    cr_expect(strstr(err, "older than the oldest oplog entry") != NULL, "%s", err);
    cr_expect(strstr(err, old) != NULL, "names the token: %s", err);
    cr_expect(strstr(err, "1699913600:1") != NULL, "names its cluster time: %s", err);
    cr_expect(strstr(err, "--resume-from oldest --dry-run") != NULL, "says what to do: %s", err);
    cr_expect_eq(fx_count_commands(&fx, "aggregate"), 0, "no resume was tried");
    expect_unchanged(token, "lost before resuming");
    free(token);
    free(err);
    bson_free(old);
}

Test(faults, a_286_at_resume_exits_3)
{
    char *data = fx_hwm_data(1700000000, 1);
    char *token, *err = NULL;
    bson_t reply;
    int code;

    /* The oplog cannot be read (no pre-check), the server answers 286. */
    fx_start(&fx, "{\"rate\": 0}");
    fx_seed_checkpoint(&fx, data, NULL);
    token = fx_checkpoint(&fx, "token");
    fx_sim(&fx, "POST", "/fault", "{\"command\": \"find\", \"kind\": \"error\", \"code\": 13, "
                                  "\"count\": 1000}", &reply);
    bson_destroy(&reply);
    fx_sim(&fx, "POST", "/fault", "{\"command\": \"aggregate\", \"kind\": \"error\", "
                                  "\"code\": 286, \"count\": 1000}", &reply);
    bson_destroy(&reply);
    code = fx_run(&fx, NULL, 20000, &err);
    cr_expect_eq(code, 3, "exit code %d: %s", code, err);
    cr_expect(strstr(err, "286") != NULL, "names the code: %s", err);
    expect_unchanged(token, "lost at resume");
    free(token);
    free(err);
    bson_free(data);
}

Test(faults, history_lost_mid_stream_exits_3)
{
    static const char *const lost_codes[] = {"286", "280", "40576"};

    for (size_t k = 0; k < sizeof lost_codes / sizeof lost_codes[0]; k++) {
        th_proc_t p;
        char body[160];
        char *token, *err;
        bson_t reply;

        fx_start(&fx, NULL);
        fx_spawn(&fx, &p, NULL);
        cr_assert(fx_wait_checkpoint(&fx, 10000));
        th_sleep_ms(300);
        token = fx_checkpoint(&fx, "token");
        snprintf(body, sizeof body,
                 "{\"command\": \"getMore\", \"kind\": \"error\", \"code\": %s, "
                 "\"count\": 1000}",
                 lost_codes[k]);
        fx_sim(&fx, "POST", "/fault", body, &reply);
        bson_destroy(&reply);
        th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "exits");
        err = th_proc_stderr(&p);
        cr_expect_eq(th_proc_exit_code(&p), 3, "code %s: exit %d\n%s", lost_codes[k],
                     th_proc_exit_code(&p), err);
        cr_expect(strstr(err, "resume point is lost") != NULL, "%s", err);
        free(token);
        free(err);
        fx_stop(&fx);
    }
}

Test(faults, a_checkpoint_of_another_scope_is_refused)
{
    char *data = fx_hwm_data(1700000000, 1);
    char *err = NULL;
    int code;

    fx_start(&fx, NULL);
    fx_seed_checkpoint(&fx, data, "rs=rs9 db=shop coll=orders pipeline=sha256:000000000000");
    code = fx_run(&fx, NULL, 20000, &err);
    cr_expect_eq(code, 2, "exit %d: %s", code, err);
    cr_expect(strstr(err, "rs=rs9 db=shop") != NULL, "names the stored scope: %s", err);
    cr_expect(strstr(err, "rs=rs0 db=shop coll=orders") != NULL, "names ours: %s", err);
    cr_expect_eq(fx_count_commands(&fx, "aggregate"), 0, "never resumed from it");
    free(err);
    bson_free(data);
}

Test(faults, a_checkpoint_without_scope_is_used_with_a_warning)
{
    static const char *const extra[] = {"--max-events", "1", NULL};
    char *data = fx_hwm_data(1700000000, 1);
    char *err = NULL;
    bson_t stage;
    bson_iter_t it;

    fx_start(&fx, NULL);
    fx_seed_checkpoint(&fx, data, NULL);
    bson_free(fx_post_events(&fx, 2));
    cr_expect_eq(fx_run(&fx, extra, 20000, &err), 0, "%s", err);
    cr_expect(strstr(err, "names no scope") != NULL, "%s", err);
    cr_assert(fx_last_change_stream(&fx, &stage));
    cr_expect(bson_iter_init(&it, &stage) &&
              bson_iter_find_descendant(&it, "resumeAfter._data", &it) &&
              strcmp(bson_iter_utf8(&it, NULL), data) == 0);
    bson_destroy(&stage);
    free(err);
    bson_free(data);
}

Test(faults, an_invalidated_stream_reopens_with_start_after)
{
    static const char *const extra[] = {"--sink", "redis", NULL};
    th_proc_t p;
    bson_t reply, stage;
    char *source;

    fx_start(&fx, NULL);
    fx_spawn(&fx, &p, extra);
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    bson_free(fx_post_events(&fx, 2));
    cr_assert(fx_wait_checkpoint_events(&fx, 2, 10000));
    fx_sim(&fx, "POST", "/invalidate", "{\"ns\": \"shop.orders\"}", &reply);
    bson_destroy(&reply);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 4, 10000), p.err_path,
                   "drop and invalidate are events too");
    source = fx_checkpoint(&fx, "source");
    cr_expect_str_eq(source, "invalidate");
    th_sleep_ms(300);
    cr_assert(fx_last_change_stream(&fx, &stage));
    cr_expect(bson_has_field(&stage, "startAfter"), "reopened with startAfter");
    bson_free(fx_post_events(&fx, 3));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 7, 10000), p.err_path,
                   "follows the new collection");
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 10000));
    cr_expect_eq(th_proc_exit_code(&p), 0);
    bson_destroy(&stage);
    free(source);
}

/* A key of the wrong type under tokenwatch's names: a clear error naming it
 * and exit 2, never "Redis unavailable" with the batch appended again at
 * every retry. */
static void wrong_type_refused(const char *key, const char *make_it_wrong)
{
    static const char *const extra[] = {"--sink", "redis", "--checkpoint-every", "1", NULL};
    th_proc_t p;
    char *err, want[160];
    long long before, events;

    fx_start(&fx, "{\"rate\": 0}");
    fx_spawn(&fx, &p, extra);
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    bson_free(fx_post_events(&fx, 2));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 2, 10000), p.err_path, "2 events");
    before = th_redis_xlen(&fx.redis, FX_STREAM);
    events = fx_checkpoint_events(&fx);
    freeReplyObject(th_redis_cmd(&fx.redis, "DEL %s", key));
    freeReplyObject(th_redis_cmd(&fx.redis, make_it_wrong, key));
    bson_free(fx_post_events(&fx, 3));
    th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "stops");
    cr_expect_eq(th_proc_exit_code(&p), 2, "exit 2, got %d", th_proc_exit_code(&p));
    if (strcmp(key, FX_STREAM) != 0)
        cr_expect_eq(th_redis_xlen(&fx.redis, FX_STREAM), before,
                     "no event appended without its checkpoint");
    if (strcmp(key, FX_CHECKPOINT) != 0)
        cr_expect_eq(fx_checkpoint_events(&fx), events,
                     "no checkpoint written without its events");
    err = th_proc_stderr(&p);
    snprintf(want, sizeof want, "%s holds a", key);
    cr_expect(strstr(err, want) != NULL, "names the key:\n%s", err);
    cr_expect(strstr(err, "unavailable") == NULL, "not an outage:\n%s", err);
    free(err);
}

Test(faults, a_checkpoint_key_of_the_wrong_type_appends_nothing)
{
    wrong_type_refused(FX_CHECKPOINT, "SET %s garbage");
}

Test(faults, a_history_key_of_the_wrong_type_appends_nothing)
{
    wrong_type_refused("tokenwatch:{default}:history", "SET %s garbage");
}

Test(faults, a_gaps_key_of_the_wrong_type_appends_nothing)
{
    wrong_type_refused("tokenwatch:{default}:gaps", "HSET %s a b");
}

Test(faults, a_stream_key_of_the_wrong_type_writes_no_checkpoint)
{
    wrong_type_refused(FX_STREAM, "SET %s garbage");
}

static void *redis_stalls(void *ctx)
{
    (void)ctx;
    freeReplyObject(th_redis_cmd(&fx.redis, "DEBUG SLEEP 1.5"));
    return NULL;
}

Test(faults, a_redis_slower_than_the_timeout_gets_each_batch_once)
{
    /* Redis stalls 1.5 s while the timeout is 300 ms: the commit times out
     * and is retried, and the first one still runs once Redis wakes (the
     * lost-reply case). The retry must see that and append nothing. */
    static const char *const extra[] = {"--sink", "redis", "--checkpoint-every", "5",
                                        "--redis-timeout", "300ms", NULL};
    th_proc_t p;
    pthread_t stall;
    int64_t last = 20;
    size_t duplicates;

    fx_start(&fx, "{\"rate\": 0}");
    fx_spawn(&fx, &p, extra);
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    cr_assert(pthread_create(&stall, NULL, redis_stalls, NULL) == 0);
    th_sleep_ms(100);
    bson_free(fx_post_events(&fx, 20));
    pthread_join(stall, NULL);
    th_assert_dump(th_wait_until(stream_has, &last, 20000), p.err_path, "all 20 handed on");
    th_sleep_ms(1000);
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 10000));
    cr_expect_eq(th_proc_exit_code(&p), 0);
    duplicates = check_complete(last);
    cr_expect_eq(duplicates, 0, "no batch appended twice: %zu duplicates", duplicates);
}
