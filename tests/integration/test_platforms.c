/*
 * The platforms tokenwatch's users run, as the simulator's profiles play
 * them (tests/sim/README.md gives each behaviour's source): Amazon
 * DocumentDB's 01 tokens, expired tokens (136), missing startAfter and
 * unreadable history; MongoDB's 136 on an open cursor, 280 for a token
 * that is not in the stream's history, 10334 for an event over 16 MB;
 * sharded clusters through mongos.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define T0 1700000000u
#define HISTORY "tokenwatch:{default}:history"
#define GAPS "tokenwatch:{default}:gaps"
/* The clock stands still; DocumentDB keeps its 1 h retention plus 15 min;
 * two hours of no-ops every 10 s were written before the start. */
#define DOCDB_HOUR                                                             \
    "{\"profile\": \"documentdb\", \"rate\": 0, \"retention\": 3600, "        \
    "\"history_extra\": 900, \"initial_oplog_span\": 7200}"

static fx_t fx;
static fx_webhook_t hook;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(platforms, .fini = teardown, .timeout = 90);

static void start_following(th_proc_t *p, const char *const extra[])
{
    fx_spawn(&fx, p, extra);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p->err_path,
                   "a first start writes a checkpoint at once");
}

static void stop_cleanly(th_proc_t *p)
{
    th_proc_signal(p, SIGTERM);
    th_assert_dump(th_proc_wait(p, 10000), p->err_path, "exits on SIGTERM");
    th_assert_dump(th_proc_exit_code(p) == 0, p->err_path, "exit code %d",
                   th_proc_exit_code(p));
}

static void expect_field(const char *field, const char *want)
{
    char *got = fx_checkpoint(&fx, field);

    cr_expect(got && strcmp(got, want) == 0, "checkpoint %s: %s, want %s", field,
              got ? got : "(none)", want);
    free(got);
}

/* The $changeStream stage of every aggregate the simulator received, with
 * the code it answered (0 for ok), oldest first; returns how many. */
typedef struct {
    bson_t *stage;
    int code;
} aggregate_t;

static size_t aggregates(aggregate_t **out)
{
    bson_t log;
    bson_iter_t it, entries;
    size_t n = 0;

    *out = NULL;
    fx_sim(&fx, "GET", "/log", NULL, &log);
    cr_assert(bson_iter_init_find(&it, &log, "a") && bson_iter_recurse(&it, &entries));
    while (bson_iter_next(&entries)) {
        bson_iter_t e, stage;
        bson_t entry;
        const uint8_t *data;
        uint32_t len;

        bson_iter_document(&entries, &len, &data);
        cr_assert(bson_init_static(&entry, data, len));
        if (!bson_iter_init_find(&e, &entry, "command") ||
            strcmp(bson_iter_utf8(&e, NULL), "aggregate") != 0)
            continue;
        if (!bson_iter_init(&stage, &entry) ||
            !bson_iter_find_descendant(&stage, "doc.pipeline.0.$changeStream", &stage))
            continue;
        *out = realloc(*out, (n + 1) * sizeof **out);
        bson_iter_document(&stage, &len, &data);
        /* A heap copy of its own: a bson_t in an array that realloc moves
         * would point into its old place. */
        (*out)[n].stage = bson_new_from_data(data, len);
        (*out)[n].code = 0;
        if (bson_iter_init(&e, &entry) && bson_iter_find_descendant(&e, "reply.code", &e))
            (*out)[n].code = (int)bson_iter_as_int64(&e);
        n++;
    }
    bson_destroy(&log);
    return n;
}

static void aggregates_free(aggregate_t *a, size_t n)
{
    for (size_t k = 0; k < n; k++)
        bson_destroy(a[k].stage);
    free(a);
}

/* The startAtOperationTime of a stage, as "T:I", or "". */
static void start_at(const bson_t *stage, char *out, size_t n)
{
    bson_iter_t it;
    uint32_t t, i;

    out[0] = '\0';
    if (bson_iter_init_find(&it, stage, "startAtOperationTime") &&
        BSON_ITER_HOLDS_TIMESTAMP(&it)) {
        bson_iter_timestamp(&it, &t, &i);
        snprintf(out, n, "%u:%u", t, i);
    }
}

/* The _data of a stage's resume option (resumeAfter or startAfter), or "". */
static const char *resume_data(const bson_t *stage, const char *option)
{
    bson_iter_t it;
    char path[64];

    snprintf(path, sizeof path, "%s._data", option);
    if (bson_iter_init(&it, stage) && bson_iter_find_descendant(&it, path, &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return "";
}

/* A DocumentDB-layout high-water-mark token at (t, i). */
static char *docdb_data(uint32_t t, uint32_t i)
{
    return bson_strdup_printf("01%08X%08X04", t, i);
}

static long long list_len(const char *key)
{
    redisReply *r = th_redis_cmd(&fx.redis, "LLEN %s", key);
    long long n = r ? r->integer : -1;

    freeReplyObject(r);
    return n;
}

static bool list_entry(const char *key, long n, bson_t *out)
{
    redisReply *r = th_redis_cmd(&fx.redis, "LINDEX %s %ld", key, n);
    bool ok = r && r->type == REDIS_REPLY_STRING && bson_init_from_json(out, r->str, -1, NULL);

    freeReplyObject(r);
    return ok;
}

static const char *utf8_field(const bson_t *doc, const char *name)
{
    bson_iter_t it;

    return bson_iter_init_find(&it, doc, name) && BSON_ITER_HOLDS_UTF8(&it)
               ? bson_iter_utf8(&it, NULL)
               : "";
}

/* ---- Amazon DocumentDB ------------------------------------------------ */

Test(platforms, documentdb_follows_checkpoints_and_resumes_by_token)
{
    static const char *const extra[] = {"--retention", "1h", NULL};
    th_proc_t p, again;
    char *data, *before, *last;
    aggregate_t *a;
    size_t n;

    fx_start(&fx, DOCDB_HOUR);
    start_following(&p, extra);
    last = fx_post_events(&fx, 5);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 5, 10000), p.err_path, "5 events");
    stop_cleanly(&p);

    before = fx_checkpoint_data(&fx);
    cr_expect_str_eq(before, last, "the checkpoint is the last event's token");
    cr_expect(strncmp(before, "01", 2) == 0, "a DocumentDB token: %s", before);
    expect_field("layout", "documentdb");
    expect_field("time_source", "event");
    expect_field("source", "event");

    bson_free(fx_post_events(&fx, 3));
    fx_spawn(&fx, &again, extra);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 8, 10000), again.err_path,
                   "the restart hands on the 3 new events");
    stop_cleanly(&again);
    n = aggregates(&a);
    cr_assert_geq(n, 2);
    cr_expect_str_eq(resume_data(a[n - 1].stage, "resumeAfter"), before,
                     "the restart resumes after the stored token, byte for byte");
    data = fx_checkpoint_data(&fx);
    cr_expect(strncmp(data, "01", 2) == 0);
    aggregates_free(a, n);
    free(data);
    free(before);
    bson_free(last);
}

static bool source_is(void *ctx)
{
    char *source = fx_checkpoint(&fx, "source");
    bool same = source && strcmp(source, ctx) == 0;

    free(source);
    return same;
}

static bool checkpoint_moves(void *ctx)
{
    char *ct = fx_checkpoint(&fx, "cluster_time");
    bool moved = ct && strcmp(ct, ctx) != 0;

    free(ct);
    return moved;
}

Test(platforms, documentdb_quiet_stream_checkpoint_keeps_up)
{
    static const char *const extra[] = {"--retention", "3h", NULL};
    th_proc_t p;
    char *first;

    /* An hour a second, a no-op every 10 simulated seconds, no events. */
    fx_start(&fx, "{\"profile\": \"documentdb\", \"rate\": 3600, \"retention\": 10800}");
    start_following(&p, extra);
    first = fx_checkpoint(&fx, "cluster_time");
    th_assert_dump(th_wait_until(checkpoint_moves, first, 10000), p.err_path,
                   "the postBatchResumeToken moves the checkpoint");
    stop_cleanly(&p);
    expect_field("source", "pbrt");
    expect_field("layout", "documentdb");
    expect_field("time_source", "token");
    free(first);
}

Test(platforms, documentdb_expired_token_exits_3_with_fail)
{
    static const char *const extra[] = {"--retention", "1h", NULL};
    char *old = docdb_data(T0 - 5 * 3600, 1), *err = NULL;
    aggregate_t *a;
    size_t n;
    int code;

    fx_start(&fx, DOCDB_HOUR);
    fx_seed_checkpoint(&fx, old, NULL);
    code = fx_run(&fx, extra, 30000, &err);
    cr_expect_eq(code, 3, "exit 3 for a lost token, got %d: %s", code, err);
    cr_expect(strstr(err, "lost") != NULL, "%s", err);
    n = aggregates(&a);
    cr_assert_geq(n, 1, "the resume was tried: --retention proves nothing");
    cr_expect_str_eq(resume_data(a[0].stage, "resumeAfter"), old);
    cr_expect_eq(a[0].code, 136, "DocumentDB answers 136, got %d", a[0].code);
    {
        char *data = fx_checkpoint_data(&fx);
        cr_expect_str_eq(data, old, "the checkpoint is left as it is");
        free(data);
    }
    aggregates_free(a, n);
    bson_free(old);
    free(err);
}

Test(platforms, documentdb_fallback_replays_from_the_earliest_accepted_point)
{
    static const char *const extra[] = {"--retention", "1h", "--on-token-lost", "fallback",
                                        NULL};
    char *old = docdb_data(T0 - 5 * 3600, 1);
    char want_to[32], from[32];
    th_proc_t p;
    bson_t gap;
    aggregate_t *a;
    size_t n, probes = 0;

    fx_start(&fx, DOCDB_HOUR);
    fx_seed_checkpoint(&fx, old, NULL);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(th_wait_until(source_is, (void *)"fallback", 15000), p.err_path,
                   "the checkpoint moves to the fallback start");
    stop_cleanly(&p);

    /* Kept: t >= T0 - 4500 (the no-op there has i > 0, so a start at
     * (T0 - 4500, 0) is refused): the first whole second accepted. */
    snprintf(want_to, sizeof want_to, "%u:0", T0 - 4499);
    snprintf(from, sizeof from, "%u:1", T0 - 5 * 3600);
    cr_assert_eq(list_len(GAPS), 1);
    cr_assert(list_entry(GAPS, 0, &gap));
    cr_expect_str_eq(utf8_field(&gap, "from"), from);
    cr_expect_str_eq(utf8_field(&gap, "to"), want_to);
    bson_destroy(&gap);
    n = aggregates(&a);
    for (size_t k = 0; k < n; k++) {
        start_at(a[k].stage, from, sizeof from);
        probes += from[0] != '\0';
    }
    cr_expect_leq(probes, 20, "bounded probing: %zu startAtOperationTime aggregates", probes);
    cr_expect_geq(probes, 2);
    aggregates_free(a, n);
    bson_free(old);
}

Test(platforms, documentdb_checkpoint_older_than_retention_but_kept_resumes)
{
    static const char *const extra[] = {"--retention", "1h", NULL};
    char *kept = docdb_data(T0 - 4000, 1);
    th_proc_t p;
    aggregate_t *a;
    size_t n;

    fx_start(&fx, DOCDB_HOUR);
    fx_seed_checkpoint(&fx, kept, NULL);
    fx_spawn(&fx, &p, extra);
    bson_free(fx_post_events(&fx, 2));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 2, 10000), p.err_path,
                   "resumes and hands on the new events");
    stop_cleanly(&p);
    n = aggregates(&a);
    cr_assert_geq(n, 1);
    cr_expect_str_eq(resume_data(a[0].stage, "resumeAfter"), kept);
    cr_expect_eq(a[0].code, 0, "the server still had it");
    cr_expect_eq(list_len(GAPS), 0, "no gap");
    {
        char *err = th_proc_stderr(&p);
        cr_expect(strstr(err, "LOST") == NULL, "no LOST: %s", err);
        free(err);
    }
    aggregates_free(a, n);
    bson_free(kept);
}

static bool saw_events(void *ctx)
{
    return fx_checkpoint_events(&fx) >= *(long long *)ctx;
}

Test(platforms, documentdb_reopens_after_an_invalidate_without_start_after)
{
    static const char *const extra[] = {"--retention", "1h", NULL};
    long long want = 3;
    char after[32], got[32];
    th_proc_t p;
    bson_t inv;
    bson_iter_t t, i;
    aggregate_t *a;
    size_t n;
    bool refused = false;

    fx_start(&fx, DOCDB_HOUR);
    start_following(&p, extra);
    bson_free(fx_post_events(&fx, 1));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 1, 10000), p.err_path, "1 event");
    fx_sim(&fx, "POST", "/invalidate", "{}", &inv);
    cr_assert(bson_iter_init(&t, &inv) && bson_iter_find_descendant(&t, "time.t", &t));
    cr_assert(bson_iter_init(&i, &inv) && bson_iter_find_descendant(&i, "time.i", &i));
    snprintf(after, sizeof after, "%lld:%lld", (long long)bson_iter_as_int64(&t),
             (long long)bson_iter_as_int64(&i) + 1);
    bson_destroy(&inv);
    /* drop + invalidate are events 2 and 3; then one on the new collection. */
    th_assert_dump(th_wait_until(saw_events, &want, 10000), p.err_path, "drop, invalidate");
    bson_free(fx_post_events(&fx, 1));
    want = 4;
    th_assert_dump(th_wait_until(saw_events, &want, 10000), p.err_path,
                   "follows on after the invalidate");
    stop_cleanly(&p);
    n = aggregates(&a);
    for (size_t k = 0; k < n; k++)
        if (resume_data(a[k].stage, "startAfter")[0] && a[k].code != 0)
            refused = true;
    cr_expect(refused, "startAfter was tried and refused");
    start_at(a[n - 1].stage, got, sizeof got);
    cr_expect_str_eq(got, after, "then startAtOperationTime just after the invalidate");
    aggregates_free(a, n);
}

/* ---- MongoDB ------------------------------------------------------------ */

Test(platforms, mongodb_280_with_history_intact_resumes_by_time)
{
    const char *extra[] = {"--slack-webhook", NULL, NULL};
    char *other_data, want_at[32], got[32];
    bson_t reply, entry;
    bson_iter_t it;
    th_proc_t p;
    aggregate_t *a;
    size_t n;
    char **texts;
    size_t ntexts = 0;

    fx_start(&fx, "{\"rate\": 0}");
    fx_webhook_start(&fx, &hook);
    extra[1] = hook.url;
    /* Another collection's event: still in the history, not in this stream's. */
    fx_sim(&fx, "POST", "/events", "{\"count\": 1, \"ns\": \"shop.other\"}", &reply);
    cr_assert(bson_iter_init(&it, &reply) &&
              bson_iter_find_descendant(&it, "last_token._data", &it));
    other_data = bson_strdup(bson_iter_utf8(&it, NULL));
    cr_assert(bson_iter_init(&it, &reply) &&
              bson_iter_find_descendant(&it, "last_time.t", &it));
    snprintf(want_at, sizeof want_at, "%lld:", (long long)bson_iter_as_int64(&it));
    cr_assert(bson_iter_init(&it, &reply) &&
              bson_iter_find_descendant(&it, "last_time.i", &it));
    snprintf(want_at + strlen(want_at), sizeof want_at - strlen(want_at), "%lld",
             (long long)bson_iter_as_int64(&it));
    bson_destroy(&reply);
    fx_seed_checkpoint(&fx, other_data, NULL);

    fx_spawn(&fx, &p, extra);
    bson_free(fx_post_events(&fx, 2));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 2, 10000), p.err_path,
                   "follows on by time");
    th_sleep_ms(300);
    cr_expect(th_proc_running(&p), "no exit: the token's time is still in the history");
    stop_cleanly(&p);

    n = aggregates(&a);
    cr_assert_geq(n, 2);
    cr_expect_eq(a[0].code, 280, "the token was not found: %d", a[0].code);
    start_at(a[1].stage, got, sizeof got);
    cr_expect_str_eq(got, want_at, "reopened at the token's cluster time");
    cr_expect_eq(list_len(GAPS), 0, "nothing skipped");
    cr_assert(list_entry(HISTORY, 0, &entry), "the old checkpoint is in the history");
    cr_expect_str_eq(utf8_field(&entry, "reason"), "not-found");
    bson_destroy(&entry);
    for (int k = 0; k < 100 && ntexts == 0; k++) {
        ntexts = fx_webhook_texts(&hook, &texts);
        if (ntexts == 0)
            th_sleep_ms(50);
    }
    cr_expect_eq(ntexts, 1, "one WARN alert");
    if (ntexts) {
        cr_expect(strstr(texts[0], "WARN") != NULL, "%s", texts[0]);
        cr_expect(strstr(texts[0], "not in this stream's history") != NULL, "%s", texts[0]);
    }
    for (size_t k = 0; k < ntexts; k++)
        free(texts[k]);
    free(texts);
    aggregates_free(a, n);
    bson_free(other_data);
}

Test(platforms, mongodb_136_on_an_open_cursor_is_a_lost_token)
{
    th_proc_t p;
    bson_t reply;

    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, NULL);
    fx_sim(&fx, "POST", "/fault",
           "{\"command\": \"getMore\", \"kind\": \"error\", \"code\": 136, "
           "\"errmsg\": \"CollectionScan died due to position in capped collection being "
           "deleted\"}",
           &reply);
    bson_destroy(&reply);
    th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "exits");
    th_assert_dump(th_proc_exit_code(&p) == 3, p.err_path, "exit 3, not 1: %d",
                   th_proc_exit_code(&p));
}

Test(platforms, event_over_16mb_without_split_exits_1_and_says_why)
{
    th_proc_t p;
    bson_t reply;
    char *err;

    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, NULL);
    fx_sim(&fx, "POST", "/events", "{\"count\": 1, \"size\": 20000000}", &reply);
    bson_destroy(&reply);
    th_assert_dump(th_proc_wait(&p, 30000), p.err_path, "exits");
    cr_expect_eq(th_proc_exit_code(&p), 1);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "--split-large-events") != NULL, "%s", err);
    cr_expect(strstr(err, "$project") != NULL, "%s", err);
    cr_expect_eq(fx_count_commands(&fx, "aggregate"), 1, "no restart loop");
    free(err);
}

/* ---- Sharded clusters ------------------------------------------------- */

Test(platforms, mongos_follows_every_shard_and_resumes)
{
    th_proc_t p, again;
    bson_t reply;
    char *before;
    aggregate_t *a;
    size_t n;

    fx_start(&fx, "{\"profile\": \"mongos\", \"rate\": 0}");
    start_following(&p, NULL);
    fx_sim(&fx, "POST", "/events", "{\"count\": 2, \"shard\": \"shard0\"}", &reply);
    bson_destroy(&reply);
    fx_sim(&fx, "POST", "/events", "{\"count\": 2, \"shard\": \"shard1\"}", &reply);
    bson_destroy(&reply);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 4, 10000), p.err_path, "4 events");
    stop_cleanly(&p);
    before = fx_checkpoint_data(&fx);
    {
        char *scope = fx_checkpoint(&fx, "scope");
        cr_expect(strncmp(scope, "rs=mongos ", 10) == 0, "%s", scope);
        free(scope);
    }
    fx_sim(&fx, "POST", "/events", "{\"count\": 1, \"shard\": \"shard1\"}", &reply);
    bson_destroy(&reply);
    fx_spawn(&fx, &again, NULL);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 5, 10000), again.err_path, "5 events");
    stop_cleanly(&again);
    n = aggregates(&a);
    cr_expect_str_eq(resume_data(a[n - 1].stage, "resumeAfter"), before);
    aggregates_free(a, n);
    free(before);
}

Test(platforms, mongos_fallback_probes_when_local_is_refused)
{
    static const char *const extra[] = {"--on-token-lost", "fallback", NULL};
    char *old = fx_hwm_data(T0 - 5 * 3600, 1);
    th_proc_t p;
    bson_t gap;
    char want_to[32];

    /* shard1 keeps 30 min, shard0 an hour: shard1 is the edge. */
    fx_start(&fx, "{\"profile\": \"mongos\", \"rate\": 0, \"initial_oplog_span\": 7200, "
                  "\"shards\": [{\"name\": \"shard0\", \"retention\": 3600}, "
                  "{\"name\": \"shard1\", \"retention\": 1800}]}");
    fx_seed_checkpoint(&fx, old, NULL);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(th_wait_until(source_is, (void *)"fallback", 15000), p.err_path,
                   "fallback");
    stop_cleanly(&p);
    snprintf(want_to, sizeof want_to, "%u:0", T0 - 1799);
    cr_assert(list_entry(GAPS, 0, &gap));
    cr_expect_str_eq(utf8_field(&gap, "to"), want_to, "the edge shard's oldest, to 1 s");
    bson_destroy(&gap);
    bson_free(old);
}

/* One stdout line's _id._data (bson_free), and whether it has splitEvent. */
static bool big_event_line(const char *line, char **data, bool *has_split)
{
    bson_t doc;
    bson_iter_t it;

    if (!bson_init_from_json(&doc, line, -1, NULL))
        return false;
    *data = NULL;
    if (bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "_id._data", &it))
        *data = bson_strdup(bson_iter_utf8(&it, NULL));
    *has_split = bson_iter_init_find(&it, &doc, "splitEvent");
    bson_destroy(&doc);
    return *data != NULL;
}

Test(platforms, split_large_events_hands_on_a_20mb_event_whole)
{
    static const char *const plain[] = {"--sink", "stdout", NULL};
    static const char *const split[] = {"--sink", "stdout", "--split-large-events", NULL};
    th_proc_t p, q;
    bson_t reply, command;
    bson_iter_t it;
    char *out, *line, *save = NULL, *data = NULL, *stored;
    size_t lines = 0, size = 0;
    bool has_split = true;

    fx_start(&fx, "{\"rate\": 0}");
    /* A checkpoint written without the stage: adding it changes no scope. */
    start_following(&p, plain);
    stop_cleanly(&p);
    fx_spawn(&fx, &q, split);
    fx_sim(&fx, "POST", "/events", "{\"count\": 1, \"size\": 20000000}", &reply);
    bson_destroy(&reply);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 1, 30000), q.err_path,
                   "the large event is handed on");
    stop_cleanly(&q);

    out = th_proc_stdout(&q);
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lines++;
        size = strlen(line);
        bson_free(data);
        cr_assert(big_event_line(line, &data, &has_split), "a JSON event");
    }
    cr_expect_eq(lines, 1, "one line: the whole event, not its fragments");
    cr_expect_gt(size, 20000000, "all of it: %zu bytes", size);
    cr_expect_not(has_split, "no splitEvent left");
    stored = fx_checkpoint_data(&fx);
    cr_expect_str_eq(stored, data, "the checkpoint is the last fragment's token");
    cr_assert(fx_last_aggregate(&fx, &command, NULL, 0));
    cr_expect(bson_iter_init(&it, &command) &&
                  bson_iter_find_descendant(&it, "pipeline.1.$changeStreamSplitLargeEvent", &it),
              "the stage is last");
    bson_destroy(&command);
    free(stored);
    bson_free(data);
    free(out);
}
