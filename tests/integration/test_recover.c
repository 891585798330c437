/*
 * Recovery: the lost-token policies, --resume-from in every form, dry runs,
 * protected environments, history and rollback. What the simulator received
 * and what Redis holds are checked, not only what tokenwatch printed.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "inproc.h"

#define T0 1700000000u
#define HOUR 3600
#define CHECKPOINT "tokenwatch:{default}:checkpoint"
#define HISTORY "tokenwatch:{default}:history"
#define GAPS "tokenwatch:{default}:gaps"
/* One hour of oplog, kept one hour, the clock standing still: the oldest
 * entry is (T0 - 3600, 1). */
#define HOUR_OF_OPLOG "{\"rate\": 0, \"retention\": 3600, \"initial_oplog_span\": 3600}"

static fx_t fx;
static fx_webhook_t hook;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(recover, .fini = teardown, .timeout = 90);

/* The oldest oplog entry, as "T:I". */
static void oldest_entry(char *out, size_t n)
{
    bson_t state;
    bson_iter_t t, i;

    fx_sim(&fx, "GET", "/state", NULL, &state);
    cr_assert(bson_iter_init(&t, &state) && bson_iter_find_descendant(&t, "oldest.t", &t));
    cr_assert(bson_iter_init(&i, &state) && bson_iter_find_descendant(&i, "oldest.i", &i));
    snprintf(out, n, "%lld:%lld", (long long)bson_iter_as_int64(&t),
             (long long)bson_iter_as_int64(&i));
    bson_destroy(&state);
}

/* The newest oplog entry, as "T:I". */
static void newest_entry(char *out, size_t n)
{
    bson_t state;
    bson_iter_t t, i;

    fx_sim(&fx, "GET", "/state", NULL, &state);
    cr_assert(bson_iter_init(&t, &state) && bson_iter_find_descendant(&t, "newest.t", &t));
    cr_assert(bson_iter_init(&i, &state) && bson_iter_find_descendant(&i, "newest.i", &i));
    snprintf(out, n, "%lld:%lld", (long long)bson_iter_as_int64(&t),
             (long long)bson_iter_as_int64(&i));
    bson_destroy(&state);
}

/* The startAtOperationTime of the newest aggregate, as "T:I", or "". */
static void last_start_at(char *out, size_t n)
{
    bson_t stage;
    bson_iter_t it;
    uint32_t t = 0, i = 0;

    out[0] = '\0';
    cr_assert(fx_last_change_stream(&fx, &stage), "an aggregate was sent");
    if (bson_iter_init_find(&it, &stage, "startAtOperationTime") &&
        BSON_ITER_HOLDS_TIMESTAMP(&it)) {
        bson_iter_timestamp(&it, &t, &i);
        snprintf(out, n, "%u:%u", t, i);
    }
    bson_destroy(&stage);
}

static bool source_is(void *ctx)
{
    char *source = fx_checkpoint(&fx, "source");
    bool same = source && strcmp(source, ctx) == 0;

    free(source);
    return same;
}

static bool wait_source(const char *source, int timeout_ms)
{
    return th_wait_until(source_is, (void *)source, timeout_ms);
}

/* The n-th (0 = newest) element of a list, parsed. */
static bool list_entry(const char *key, long n, bson_t *out)
{
    redisReply *r = th_redis_cmd(&fx.redis, "LINDEX %s %ld", key, n);
    bool ok = r && r->type == REDIS_REPLY_STRING && bson_init_from_json(out, r->str, -1, NULL);

    freeReplyObject(r);
    return ok;
}

static const char *field(const bson_t *doc, const char *name)
{
    bson_iter_t it;

    return bson_iter_init_find(&it, doc, name) && BSON_ITER_HOLDS_UTF8(&it)
               ? bson_iter_utf8(&it, NULL)
               : "";
}

static long long list_len(const char *key)
{
    redisReply *r = th_redis_cmd(&fx.redis, "LLEN %s", key);
    long long n = r ? r->integer : -1;

    freeReplyObject(r);
    return n;
}

Test(recover, fallback_replays_from_the_oldest_entry_and_records_the_gap)
{
    static const char *const extra[] = {"--on-token-lost", "fallback", "--sink", "redis",
                                        NULL};
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    char oldest[32], started[32];
    th_proc_t p;
    bson_t gap, kept;
    char *err;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, lost, "rs=rs0 db=shop coll=orders pipeline=sha256:349371af0a20");
    oldest_entry(oldest, sizeof oldest);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(wait_source("fallback", 15000), p.err_path, "the fallback lands");
    bson_free(fx_post_events(&fx, 2));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 2, 10000), p.err_path, "and follows on");
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);

    last_start_at(started, sizeof started);
    cr_expect_str_eq(started, oldest, "startAtOperationTime is the oldest entry");
    cr_assert_eq(list_len(GAPS), 1);
    cr_assert(list_entry(GAPS, 0, &gap));
    cr_expect_str_eq(field(&gap, "from"), "1699913600:1", "from the lost checkpoint");
    cr_expect_str_eq(field(&gap, "to"), oldest, "to the replay's start");
    cr_expect(strstr(field(&gap, "reason"), "older than the oldest oplog entry") != NULL);
    {
        bson_iter_t it;
        cr_expect(bson_iter_init_find(&it, &gap, "detected_ms") &&
                  bson_iter_as_int64(&it) > 1700000000000LL, "detected_ms is a wall time");
    }
    cr_assert(list_entry(HISTORY, 0, &kept));
    cr_expect_str_eq(field(&kept, "reason"), "fallback");
    cr_expect(strstr(field(&kept, "token"), lost) != NULL, "the lost checkpoint is kept");
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "replayed from") != NULL, "%s", err);
    cr_expect(strstr(err, "of history skipped") != NULL, "%s", err);
    bson_destroy(&gap);
    bson_destroy(&kept);
    free(err);
    bson_free(lost);
}

Test(recover, fallback_from_a_time_inside_the_oplog_starts_there)
{
    static const char *const extra[] = {"--on-token-lost", "fallback", "--fallback-from",
                                        "1699998000:0", NULL};
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    char started[32];
    th_proc_t p;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, lost, NULL);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(wait_source("fallback", 15000), p.err_path, "the fallback lands");
    th_proc_stop(&p, 10000);
    last_start_at(started, sizeof started);
    cr_expect_str_eq(started, "1699998000:0");
    bson_free(lost);
}

Test(recover, fallback_from_before_the_oplog_uses_the_oldest_entry_and_says_so)
{
    static const char *const extra[] = {"--on-token-lost", "fallback", "--fallback-from",
                                        "2023-11-14T00:00:00Z", NULL};
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    char started[32], oldest[32];
    th_proc_t p;
    char *err;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, lost, NULL);
    oldest_entry(oldest, sizeof oldest);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(wait_source("fallback", 15000), p.err_path, "the fallback lands");
    th_proc_stop(&p, 10000);
    last_start_at(started, sizeof started);
    cr_expect_str_eq(started, oldest, "never before the oldest entry");
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "the oldest entry, since --fallback-from is older") != NULL, "%s", err);
    free(err);
    bson_free(lost);
}

Test(recover, fail_alerts_and_changes_nothing)
{
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    char *before, *after, *err, **texts;
    size_t n;
    int code;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_webhook_start(&fx, &hook);
    fx_seed_checkpoint(&fx, lost, NULL);
    before = fx_redis_state(&fx);
    {
        const char *const extra[] = {"--slack-webhook", hook.url, NULL};
        code = fx_run(&fx, extra, 30000, &err);
    }
    cr_expect_eq(code, 3, "%s", err);
    freeReplyObject(th_redis_cmd(&fx.redis, "DEL tokenwatch:{default}:lost-alerted"));
    after = fx_redis_state(&fx);
    cr_expect_str_eq(after, before, "the checkpoint, history and gaps are untouched");
    n = fx_webhook_texts(&hook, &texts);
    cr_expect_eq(n, 1, "the LOST alert was delivered before the exit");
    for (size_t k = 0; k < n; k++) {
        cr_expect(strstr(texts[k], "is now LOST") != NULL, "%s", texts[k]);
        free(texts[k]);
    }
    free(texts);
    cr_expect(strstr(err, FX_WEBHOOK_SECRET) == NULL);
    free(before);
    free(after);
    free(err);
    bson_free(lost);
}

Test(recover, restarts_after_exit_3_do_not_repeat_the_alert)
{
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    char **texts;
    size_t n;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_webhook_start(&fx, &hook);
    fx_seed_checkpoint(&fx, lost, NULL);
    for (int run = 0; run < 3; run++) {
        const char *const extra[] = {"--slack-webhook", hook.url, NULL};
        char *err = NULL;
        cr_expect_eq(fx_run(&fx, extra, 30000, &err), 3, "run %d: %s", run, err);
        free(err);
    }
    n = fx_webhook_texts(&hook, &texts);
    cr_expect_eq(n, 1, "a supervisor restarting the watcher gets one alert, not %zu", n);
    for (size_t k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
    bson_free(lost);
}

Test(recover, a_lost_alert_slack_refused_is_sent_at_the_next_start)
{
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    char **texts;
    size_t n;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_webhook_start(&fx, &hook);
    /* 400 is not retried: the first start's LOST alert is refused. */
    fx_webhook_script(&hook, "{\"responses\": [{\"status\": 400, \"body\": \"no_text\"}], "
                             "\"then\": 200}");
    fx_seed_checkpoint(&fx, lost, NULL);
    for (int run = 0; run < 3; run++) {
        const char *const extra[] = {"--slack-webhook", hook.url, NULL};
        char *err = NULL;
        cr_expect_eq(fx_run(&fx, extra, 30000, &err), 3, "run %d: %s", run, err);
        free(err);
    }
    cr_expect_eq(fx_webhook_count(&hook), 2, "refused once, delivered at the next start, "
                                             "then not again");
    n = fx_webhook_texts(&hook, &texts);
    cr_expect_eq(n, 1, "one LOST alert reached Slack, not %zu", n);
    for (size_t k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
    bson_free(lost);
}

/*
 * A replay that keeps losing its start backs off from 1 s, doubling, with
 * the fake clock's jitter of one half: it waits 0.75 s, 1.5 s, 3 s, 6 s...
 * The first start and the first replay come at once, then one replay after
 * each wait: at 0, 0, 0.75, 2.25 and 5.25 s, five in 6 s (a storm held
 * 1,213 before issue 9).
 */
#define BACKOFF_AGGREGATES_IN_6S 5

Test(recover, a_failing_fallback_backs_off_instead_of_storming)
{
    static const char *const extra[] = {"--on-token-lost", "fallback", NULL};
    char *data = fx_hwm_data(T0, 1);
    char *before, *after;
    fx_inproc_t run;
    bson_t reply;
    int aggregates;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, data, NULL);
    before = fx_redis_state(&fx);
    fx_sim(&fx, "POST", "/fault", "{\"command\": \"aggregate\", \"kind\": \"error\", "
                                  "\"code\": 286, \"count\": 100000}", &reply);
    bson_destroy(&reply);
    /* 6 s on the fake clock, in no time. */
    fx_inproc_run(&fx, extra, 6000, &run);
    cr_expect_eq(run.code, 0, "stops cleanly even while failing:\n%s", run.log);
    aggregates = fx_count_commands(&fx, "aggregate");
    cr_expect_eq(aggregates, BACKOFF_AGGREGATES_IN_6S,
                 "%d aggregates in 6 s (%lld ms on the clock):\n%s", aggregates,
                 (long long)run.moved_ms, run.log);
    free(run.log);
    after = fx_redis_state(&fx);
    cr_expect_str_eq(after, before, "nothing landed, so nothing changed");
    free(before);
    free(after);
    bson_free(data);
}

Test(recover, a_replay_that_keeps_landing_in_the_same_loss_backs_off)
{
    /* Events come, then the history is lost again at every getMore: each
     * replay hands the same events on. They must not reset the backoff. */
    static const char *const extra[] = {"--on-token-lost", "fallback", NULL};
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    fx_inproc_t run;
    bson_t reply;
    int aggregates;

    fx_start(&fx, "{\"rate\": 0, \"retention\": 3600, \"initial_oplog_span\": 3600, "
                  "\"events\": 5}");
    fx_seed_checkpoint(&fx, lost, NULL);
    fx_sim(&fx, "POST", "/fault", "{\"command\": \"getMore\", \"kind\": \"error\", "
                                  "\"code\": 286, \"count\": 100000}", &reply);
    bson_destroy(&reply);
    fx_inproc_run(&fx, extra, 6000, &run);
    cr_expect_eq(run.code, 0, "%s", run.log);
    aggregates = fx_count_commands(&fx, "aggregate");
    cr_expect_eq(aggregates, BACKOFF_AGGREGATES_IN_6S, "%d aggregates in 6 s:\n%s",
                 aggregates, run.log);
    free(run.log);
    cr_expect_leq(list_len(GAPS), 2, "no storm of gaps");
    cr_expect_leq(list_len(HISTORY), 2, "the same checkpoint is kept once, not per replay");
    bson_free(lost);
}

Test(recover, a_replay_across_an_invalidate_goes_on_with_start_after)
{
    static const char *const replay[] = {"--resume-from", "oldest", NULL};
    th_proc_t p, q, again;
    bson_t reply;
    char *before;
    long long want;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_spawn(&fx, &p, NULL);
    cr_assert(fx_wait_checkpoint(&fx, 10000));
    bson_free(fx_post_events(&fx, 1));
    fx_sim(&fx, "POST", "/invalidate", "{}", &reply);
    bson_destroy(&reply);
    bson_free(fx_post_events(&fx, 1));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 4, 10000), p.err_path,
                   "event, drop, invalidate, event");
    th_proc_stop(&p, 10000);
    want = fx_checkpoint_events(&fx) + 4;

    /* Replay the hour: across the invalidate again, and on past it. */
    fx_spawn(&fx, &q, replay);
    th_assert_dump(fx_wait_checkpoint_events(&fx, want, 15000), q.err_path,
                   "the replay passes the invalidate");
    th_sleep_ms(500);
    cr_expect(th_proc_running(&q), "no exit 3 at the invalidate");
    th_proc_stop(&q, 10000);
    cr_expect_eq(th_proc_exit_code(&q), 0);
    before = fx_checkpoint(&fx, "cluster_time");

    fx_spawn(&fx, &again, NULL);
    th_sleep_ms(1500);
    cr_expect(th_proc_running(&again), "a restart does not exit 3");
    th_proc_stop(&again, 10000);
    cr_expect_eq(th_proc_exit_code(&again), 0);
    free(before);
}

Test(recover, a_rollback_to_an_invalidate_keeps_start_after)
{
    static const char *const rollback[] = {"checkpoint", "rollback", "1", NULL};
    char entry[512], *out, *err, *source;
    bson_t reply;
    bson_iter_t it;
    th_proc_t p;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_sim(&fx, "POST", "/invalidate", "{}", &reply);
    {
        bson_iter_t t, i;
        cr_assert(bson_iter_init(&it, &reply) &&
                  bson_iter_find_descendant(&it, "invalidate_token._data", &it));
        cr_assert(bson_iter_init(&t, &reply) && bson_iter_find_descendant(&t, "time.t", &t));
        cr_assert(bson_iter_init(&i, &reply) && bson_iter_find_descendant(&i, "time.i", &i));
        snprintf(entry, sizeof entry,
                 "{\"token\": \"{ \\\"_data\\\" : \\\"%s\\\" }\", \"cluster_time\": "
                 "\"%lld:%lld\", \"events\": \"3\", \"source\": \"invalidate\", "
                 "\"pushed_ms\": \"1\", \"reason\": \"periodic\"}",
                 bson_iter_utf8(&it, NULL), (long long)bson_iter_as_int64(&t),
                 (long long)bson_iter_as_int64(&i));
    }
    bson_destroy(&reply);
    freeReplyObject(th_redis_cmd(&fx.redis, "LPUSH %s %s", HISTORY, entry));
    cr_expect_eq(fx_cli(&fx, rollback, &out, &err), 0, "%s", err);
    free(out);
    free(err);
    source = fx_checkpoint(&fx, "source");
    cr_expect_str_eq(source, "invalidate", "the token's mark is kept");
    free(source);
    fx_spawn(&fx, &p, NULL);
    th_sleep_ms(1500);
    cr_expect(th_proc_running(&p), "resumes with startAfter, no exit 3");
    th_proc_stop(&p, 10000);
    {
        bson_t stage;
        cr_assert(fx_last_change_stream(&fx, &stage));
        cr_expect(bson_iter_init_find(&it, &stage, "startAfter"), "startAfter");
        bson_destroy(&stage);
    }
}

typedef struct {
    const char *spec;
    const char *want_start_at; /* "" for a resumeAfter */
    const char *want_resume_after;
} resume_case_t;

Test(recover, resume_from_every_form)
{
    static const resume_case_t cases[] = {
        {"1699998000:7", "1699998000:7", NULL},
        {"1699998000", "1699998000:0", NULL},
        {"2023-11-14T21:40:00Z", "1699998000:0", NULL},
        {"oldest", "1699996400:1", NULL},
        {"now", "newest", NULL},
        /* Tokens inside the oplog (T0 - 1000), as hex and as JSON. */
        {"826553ED180000000A2B0229296E04", "", "826553ED180000000A2B0229296E04"},
        {"{\"_data\": \"826553ED180000000B2B0229296E04\"}", "", "826553ED180000000B2B0229296E04"},
        /* A token older than the oplog starts at the oldest entry instead. */
        {"82655300000000000A2B0229296E04", "1699996400:1", NULL},
    };
    char *current = fx_hwm_data(T0, 1);

    fx_start(&fx, HOUR_OF_OPLOG);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *const extra[] = {"--resume-from", cases[k].spec, NULL};
        th_proc_t p;
        char started[32];
        bson_t kept;

        freeReplyObject(th_redis_cmd(&fx.redis, "DEL %s %s %s", CHECKPOINT, HISTORY, GAPS));
        fx_seed_checkpoint(&fx, current, NULL);
        fx_spawn(&fx, &p, extra);
        th_assert_dump(wait_source("resume-from", 15000), p.err_path, "case %zu lands", k);
        th_proc_stop(&p, 10000);
        cr_expect_eq(th_proc_exit_code(&p), 0);
        if (cases[k].want_resume_after) {
            bson_t stage;
            bson_iter_t it;
            cr_assert(fx_last_change_stream(&fx, &stage));
            cr_expect(bson_iter_init(&it, &stage) &&
                          bson_iter_find_descendant(&it, "resumeAfter._data", &it) &&
                          strcmp(bson_iter_utf8(&it, NULL), cases[k].want_resume_after) == 0,
                      "case %zu: resumeAfter", k);
            bson_destroy(&stage);
        } else {
            char want[32];
            if (strcmp(cases[k].want_start_at, "newest") == 0)
                newest_entry(want, sizeof want);
            else
                snprintf(want, sizeof want, "%s", cases[k].want_start_at);
            last_start_at(started, sizeof started);
            cr_expect_str_eq(started, want, "case %zu (%s)", k, cases[k].spec);
        }
        cr_assert(list_entry(HISTORY, 0, &kept), "case %zu: history", k);
        cr_expect_str_eq(field(&kept, "reason"), "resume-from");
        cr_expect(strstr(field(&kept, "token"), current) != NULL, "the old checkpoint kept");
        bson_destroy(&kept);
        /* Every start here is before the current checkpoint: an overlap, no gap. */
        cr_expect_eq(list_len(GAPS), 0, "case %zu: no gap for an overlap", k);
    }
    bson_free(current);
}

Test(recover, resume_from_forward_records_the_gap)
{
    static const char *const extra[] = {"--resume-from", "now", NULL};
    char *current = fx_hwm_data(T0 - 1800, 1);
    char newest[32];
    th_proc_t p;
    bson_t gap;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, current, NULL);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(wait_source("resume-from", 15000), p.err_path, "lands");
    th_proc_stop(&p, 10000);
    cr_assert(list_entry(GAPS, 0, &gap));
    newest_entry(newest, sizeof newest);
    cr_expect_str_eq(field(&gap, "from"), "1699998200:1");
    cr_expect_str_eq(field(&gap, "to"), newest, "now is the newest entry");
    cr_expect_str_eq(field(&gap, "reason"), "resume-from");
    bson_destroy(&gap);
    bson_free(current);
}

Test(recover, dry_run_prints_the_plan_and_changes_nothing)
{
    static const char *const args[] = {"run", "--db", "shop", "--collection", "orders",
                                       "--resume-from", "oldest", "--dry-run",
                                       "--environment", "prod", NULL};
    char *current = fx_hwm_data(T0 - 600, 1);
    char *before, *after, *out, *err;
    int code;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, current, NULL);
    before = fx_redis_state(&fx);
    code = fx_cli(&fx, args, &out, &err);
    cr_expect_eq(code, 0, "a dry run needs no --confirm, even in prod: %s", err);
    after = fx_redis_state(&fx);
    cr_expect_str_eq(after, before, "nothing changed");
    cr_expect_eq(fx_count_commands(&fx, "aggregate"), 0, "no stream was opened");
    cr_expect(strstr(out, "current checkpoint 1699999400:1 (2023-11-14T22:03:20Z)") != NULL, "%s", out);
    cr_expect(strstr(out, "new start          1699996400:1 (2023-11-14T21:13:20Z), "
                          "startAtOperationTime") != NULL, "%s", out);
    cr_expect(strstr(out, "an overlap: 50m of history handed on again") != NULL, "%s", out);
    cr_expect(strstr(out, "inside the oplog") != NULL, "%s", out);
    cr_expect(strstr(out, HISTORY) != NULL, "%s", out);
    cr_expect(strstr(out, "nothing was changed (--dry-run)") != NULL, "%s", out);
    free(before);
    free(after);
    free(out);
    free(err);
    bson_free(current);
}

Test(recover, protected_environments_need_a_matching_confirm)
{
    char *current = fx_hwm_data(T0 - 600, 1);
    char *before, *after, *out, *err;
    static const char *const missing[] = {"run", "--db", "shop", "--collection", "orders",
                                          "--resume-from", "oldest", "--environment", "prod",
                                          NULL};
    static const char *const typo[] = {"run", "--db", "shop", "--collection", "orders",
                                       "--resume-from", "oldest", "--environment", "prod",
                                       "--confirm", "prd", NULL};
    static const char *const mine[] = {"run", "--db", "shop", "--collection", "orders",
                                       "--resume-from", "oldest", "--environment", "payments",
                                       "--protect", "payments", NULL};

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, current, NULL);
    before = fx_redis_state(&fx);
    cr_expect_eq(fx_cli(&fx, missing, &out, &err), 2);
    cr_expect(strstr(err, "environment prod is protected") != NULL, "%s", err);
    cr_expect(strstr(err, "--confirm prod") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(fx_cli(&fx, typo, &out, &err), 2);
    cr_expect(strstr(err, "--confirm prd does not match --environment prod") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(fx_cli(&fx, mine, &out, &err), 2, "--protect names the environments");
    free(out);
    free(err);
    after = fx_redis_state(&fx);
    cr_expect_str_eq(after, before, "refusals change nothing");
    cr_expect_eq(fx_count_commands(&fx, "aggregate"), 0);
    free(before);
    free(after);
    bson_free(current);
}

Test(recover, history_and_rollback)
{
    static const char *const extra[] = {"--resume-from", "oldest", NULL};
    static const char *const history[] = {"checkpoint", "history", NULL};
    static const char *const rollback[] = {"checkpoint", "rollback", NULL};
    static const char *const rollback_dry[] = {"checkpoint", "rollback", "1", "--dry-run", NULL};
    static const char *const rollback_prod[] = {"checkpoint", "rollback", "--environment",
                                                "live", NULL};
    static const char *const rollback_far[] = {"checkpoint", "rollback", "9", NULL};
    char *current = fx_hwm_data(T0 - 600, 1);
    char *before, *after, *out, *err, *data;
    th_proc_t p;
    bson_t kept;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, current, NULL);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(wait_source("resume-from", 15000), p.err_path, "lands");
    th_proc_stop(&p, 10000);

    cr_expect_eq(fx_cli(&fx, history, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "1    1699999400:1") != NULL, "newest first: %s", out);
    cr_expect(strstr(out, "resume-from") != NULL, "%s", out);
    free(out);
    free(err);

    before = fx_redis_state(&fx);
    cr_expect_eq(fx_cli(&fx, rollback_dry, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "plan (rollback)") != NULL, "%s", out);
    free(out);
    free(err);
    cr_expect_eq(fx_cli(&fx, rollback_prod, &out, &err), 2, "live is protected");
    free(out);
    free(err);
    cr_expect_eq(fx_cli(&fx, rollback_far, &out, &err), 2, "no such entry");
    cr_expect(strstr(err, "no history entry 9") != NULL, "%s", err);
    free(out);
    free(err);
    after = fx_redis_state(&fx);
    cr_expect_str_eq(after, before, "dry run and refusals change nothing");
    free(before);
    free(after);

    cr_expect_eq(fx_cli(&fx, rollback, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "rolled back to 1699999400:1") != NULL, "%s", out);
    free(out);
    free(err);
    data = fx_checkpoint_data(&fx);
    cr_expect_str_eq(data, current, "the checkpoint before resume-from is back");
    {
        char *source = fx_checkpoint(&fx, "source");
        cr_expect_str_eq(source, "rollback");
        free(source);
    }
    cr_expect_eq(list_len(HISTORY), 2, "the replaced checkpoint joined the history");
    cr_assert(list_entry(HISTORY, 0, &kept));
    cr_expect_str_eq(field(&kept, "reason"), "rollback");
    cr_expect_str_eq(field(&kept, "source"), "resume-from");
    bson_destroy(&kept);
    free(data);
    bson_free(current);
}

Test(recover, a_bounded_replay_stops_at_until)
{
    static const char *const extra[] = {"--resume-from", "1700000000:2", "--until",
                                        "1700000000:4", "--sink", "redis", NULL};
    char *current = fx_hwm_data(T0, 9);
    char *err = NULL;
    int64_t *seqs;
    size_t n;

    fx_start(&fx, "{\"rate\": 0, \"events\": 0}");
    bson_free(fx_post_events(&fx, 6)); /* at (T0, 2) to (T0, 7) */
    fx_seed_checkpoint(&fx, current, NULL);
    cr_expect_eq(fx_run(&fx, extra, 30000, &err), 0, "%s", err);
    n = fx_stream_seqs(&fx, &seqs);
    cr_expect_eq(n, 3, "(T0, 2), (T0, 3), (T0, 4)");
    for (size_t k = 0; k < n; k++)
        cr_expect_eq(seqs[k], (int64_t)k + 1);
    free(seqs);
    free(err);
    bson_free(current);
}

Test(recover, a_spec_that_fits_no_form_lists_the_forms)
{
    static const char *const args[] = {"run", "--resume-from", "last tuesday", NULL};
    char *out, *err;

    fx_start(&fx, NULL);
    cr_expect_eq(fx_cli(&fx, args, &out, &err), 2);
    cr_expect(strstr(err, "T:I") != NULL && strstr(err, "RFC 3339") != NULL, "%s", err);
    free(out);
    free(err);
}

static bool hook_received(void *ctx)
{
    (void)ctx;
    return fx_webhook_count(&hook) >= 1;
}

/*
 * A server message in a language other than English, long enough to be cut
 * by a fixed-size buffer: the cut fell inside a character, libbson refused
 * the JSON built from it, and the gap record and the LOST alert vanished
 * (the log said the gap was recorded).
 */
Test(recover, a_long_non_ascii_server_message_still_records_the_gap_and_alerts)
{
    char *inside = fx_hwm_data(T0 - HOUR / 2, 1);
    bson_string_t *fault = bson_string_new("{\"command\": \"aggregate\", \"kind\": \"error\", "
                                           "\"code\": 286, \"count\": 1, \"errmsg\": \"");
    char **texts;
    size_t n;
    th_proc_t p;
    bson_t reply, gap;
    redisReply *raw;

    for (int k = 0; k < 300; k++)
        bson_string_append(fault, k % 2 ? "\xe6\x97\xa5\xe6\x9c\xac" : "\xc3\xa9");
    bson_string_append(fault, "\"}");
    fx_start(&fx, HOUR_OF_OPLOG);
    fx_webhook_start(&fx, &hook);
    fx_seed_checkpoint(&fx, inside, NULL);
    fx_sim(&fx, "POST", "/fault", fault->str, &reply);
    bson_destroy(&reply);
    {
        const char *const extra[] = {"--on-token-lost", "fallback", "--fallback-from", "now",
                                     "--slack-webhook", hook.url, NULL};
        fx_spawn(&fx, &p, extra);
    }
    th_assert_dump(wait_source("fallback", 15000), p.err_path, "the fallback lands");
    th_assert_dump(th_wait_until(hook_received, NULL, 10000), p.err_path,
                   "the LOST alert is delivered");
    th_proc_stop(&p, 10000);

    raw = th_redis_cmd(&fx.redis, "LINDEX %s 0", GAPS);
    cr_assert(raw && raw->type == REDIS_REPLY_STRING, "the gap is recorded in %s", GAPS);
    cr_expect(bson_utf8_validate(raw->str, raw->len, false), "the gap is UTF-8: %s", raw->str);
    cr_assert(bson_init_from_json(&gap, raw->str, -1, NULL), "the gap is JSON: %s", raw->str);
    cr_expect(strstr(field(&gap, "reason"), "\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac") != NULL,
              "the reason keeps the server's words: %s", raw->str);
    cr_expect_eq(list_len(GAPS), 1);
    bson_destroy(&gap);
    freeReplyObject(raw);

    n = fx_webhook_texts(&hook, &texts);
    cr_expect_eq(n, 1, "one LOST alert");
    for (size_t k = 0; k < n; k++) {
        cr_expect(strstr(texts[k], "is now LOST") != NULL, "%s", texts[k]);
        cr_expect(bson_utf8_validate(texts[k], strlen(texts[k]), false));
        free(texts[k]);
    }
    free(texts);
    bson_string_free(fault, true);
    bson_free(inside);
}

/*
 * A stop request while the LOST alert waits for a channel that hangs: the
 * wait (up to 10 s) did not look at the stop, so the process took it and
 * then the 3 s alert grace. Now the stop ends the wait: the alert is not
 * remembered as sent, and goes out again at the next start.
 */
Test(recover, a_stop_while_the_lost_alert_hangs_is_prompt)
{
    char *lost = fx_hwm_data(T0 - 24 * HOUR, 1);
    const char *extra[] = {"--slack-webhook", NULL, NULL};
    long long t0, took;
    th_proc_t p;
    char *err;

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_webhook_start(&fx, &hook);
    fx_webhook_script(&hook, "{\"responses\": [], \"then_hang\": 60}");
    fx_seed_checkpoint(&fx, lost, NULL);
    extra[1] = hook.url;
    fx_spawn(&fx, &p, extra);
    th_assert_dump(th_wait_until(hook_received, NULL, 10000), p.err_path,
                   "the LOST alert is on its way");
    th_sleep_ms(200);
    t0 = th_now_ms();
    th_proc_signal(&p, SIGTERM);
    th_assert_dump(th_proc_wait(&p, 20000), p.err_path, "exits");
    took = th_now_ms() - t0;
    err = th_proc_stderr(&p);
    cr_expect_eq(th_proc_exit_code(&p), 3, "the token is still lost:\n%s", err);
    cr_expect(strstr(err, "stopping") != NULL, "says so:\n%s", err);
    /* 1 s for the stop, the 3 s alert grace, and some slack. */
    cr_log_info("stopped in %lld ms", took);
    cr_expect_lt(took, 5000, "stopped in %lld ms:\n%s", took, err);
    cr_expect(th_redis_get(&fx.redis, "tokenwatch:{default}:lost-alerted") == NULL,
              "not remembered as sent");
    free(err);
    bson_free(lost);
}
