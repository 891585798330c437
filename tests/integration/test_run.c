/*
 * tokenwatch run against a real redis-server and the scripted replica set.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(run, .fini = teardown, .timeout = 60);

/* Starts tokenwatch and waits for its first checkpoint (it starts from now). */
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

static int64_t seq_of_line(const char *line)
{
    bson_t doc;
    bson_iter_t it;
    int64_t seq = -1;

    if (bson_init_from_json(&doc, line, -1, NULL)) {
        if (bson_iter_init(&it, &doc) &&
            bson_iter_find_descendant(&it, "fullDocument.seq", &it))
            seq = bson_iter_as_int64(&it);
        bson_destroy(&doc);
    }
    return seq;
}

Test(run, stdout_sink_prints_each_event_and_checkpoints_the_last)
{
    static const char *const extra[] = {"--sink", "stdout", NULL};
    th_proc_t p;
    char *last, *data, *out, *line, *save = NULL;
    int64_t want = 1;

    /* The clock stands still: one oplog entry at (t0, 1), events after it. */
    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, extra);
    last = fx_post_events(&fx, 5);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 5, 10000), p.err_path, "5 events");
    stop_cleanly(&p);

    out = th_proc_stdout(&p);
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        cr_expect_eq(seq_of_line(line), want++, "line: %s", line);
    cr_expect_eq(want, 6, "five lines, seq 1 to 5");
    data = fx_checkpoint_data(&fx);
    cr_expect_str_eq(data, last, "the checkpoint is the last event's token");
    {
        char *source = fx_checkpoint(&fx, "source");
        char *scope = fx_checkpoint(&fx, "scope");
        char *ct = fx_checkpoint(&fx, "cluster_time");
        cr_expect_str_eq(source, "event");
        cr_expect(strncmp(scope, "rs=rs0 db=shop coll=orders pipeline=sha256:", 43) == 0,
                  "%s", scope);
        cr_expect_str_eq(ct, "1700000000:6", "the fifth event is at (t0, 6)");
        free(source);
        free(scope);
        free(ct);
    }
    free(out);
    free(data);
    bson_free(last);
}

/*
 * A stdout that cannot be written (here a full disk) is an outage like
 * Redis's, not the end of the run: said once, the events held and written
 * again with backoff, the checkpoint never moved past them. A stop while
 * it lasts ends the run with exit 1 saying what was not handed on.
 */
Test(run, an_unwritable_stdout_is_ridden_out_without_moving_the_checkpoint)
{
    static const char *const extra[] = {"--sink", "stdout", NULL};
    th_proc_t p;
    char err_path[PATH_MAX];
    char *err;

    fx_start(&fx, "{\"rate\": 0}");
    cr_assert(th_path(err_path, sizeof err_path, fx.dir, "full.err"));
    fx_spawn_to(&fx, &p, extra, "/dev/full", err_path);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "a first checkpoint");
    bson_free(fx_post_events(&fx, 3));
    th_sleep_ms(2500);
    err = th_read_file(err_path);
    cr_expect(th_proc_running(&p), "rides it out:\n%s", err);
    cr_expect_eq(fx_count(err, "stdout unavailable: cannot write events to stdout"), 1,
                 "said once:\n%s", err);
    cr_expect(strstr(err, "holding events and writing them again with backoff"), "%s", err);
    cr_expect_eq(fx_checkpoint_events(&fx), 0, "the checkpoint did not move past them");
    free(err);
    th_proc_signal(&p, SIGTERM);
    th_assert_dump(th_proc_wait(&p, 15000), err_path, "stops");
    err = th_read_file(err_path);
    cr_expect_eq(th_proc_exit_code(&p), 1, "%s", err);
    cr_expect(strstr(err, "could not be handed on"), "%s", err);
    cr_expect_eq(fx_checkpoint_events(&fx), 0);
    free(err);
}

Test(run, redis_sink_writes_the_stream_and_the_checkpoint_together)
{
    static const char *const extra[] = {"--sink", "redis", "--checkpoint-every", "3",
                                        NULL};
    th_proc_t p;
    int64_t *seqs;
    size_t n;
    char *last, *data;
    redisReply *entry;

    fx_start(&fx, NULL);
    start_following(&p, extra);
    last = fx_post_events(&fx, 7);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 7, 10000), p.err_path, "7 events");
    stop_cleanly(&p);

    n = fx_stream_seqs(&fx, &seqs);
    cr_assert_eq(n, 7);
    for (size_t k = 0; k < n; k++)
        cr_expect_eq(seqs[k], (int64_t)k + 1);
    data = fx_checkpoint_data(&fx);
    cr_expect_str_eq(data, last);
    entry = th_redis_cmd(&fx.redis, "XREVRANGE %s + - COUNT 1", FX_STREAM);
    cr_assert(entry && entry->elements == 1);
    {
        redisReply *f = entry->element[0]->element[1];
        cr_assert_eq(f->elements, 10, "fields event, token, cluster_time, op, ns");
        cr_expect_str_eq(f->element[0]->str, "event");
        cr_expect_str_eq(f->element[2]->str, "token");
        cr_expect(strstr(f->element[3]->str, last) != NULL);
        cr_expect_str_eq(f->element[4]->str, "cluster_time");
        cr_expect_str_eq(f->element[6]->str, "op");
        cr_expect_str_eq(f->element[7]->str, "insert");
        cr_expect_str_eq(f->element[8]->str, "ns");
        cr_expect_str_eq(f->element[9]->str, "shop.orders");
    }
    freeReplyObject(entry);
    free(seqs);
    free(data);
    bson_free(last);
}

/* Large events: the batch is committed at TW_BATCH_BYTES_MAX (4 MiB), not
 * held until --checkpoint-every (1000) or the interval (1 h). */
Test(run, a_batch_of_large_events_is_committed_at_its_byte_cap)
{
    static const char *const extra[] = {"--sink", "redis", "--checkpoint-every", "1000",
                                        "--checkpoint-interval", "1h", NULL};
    th_proc_t p;
    bson_t reply;
    long long events;

    fx_start(&fx, NULL);
    start_following(&p, extra);
    fx_sim(&fx, "POST", "/events", "{\"count\": 12, \"size\": 1048576}", &reply);
    bson_destroy(&reply);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 4, 15000), p.err_path,
                   "committed at 4 MiB, not at 1000 events");
    events = fx_checkpoint_events(&fx);
    cr_expect(events >= 4 && events <= 8, "about 4 MiB per batch: %lld", events);
    cr_expect_eq(th_redis_xlen(&fx.redis, FX_STREAM), events, "events and checkpoint together");
    stop_cleanly(&p);
}

Test(run, none_sink_only_checkpoints)
{
    static const char *const extra[] = {"--sink", "none", NULL};
    th_proc_t p;
    char *last, *data;

    fx_start(&fx, NULL);
    start_following(&p, extra);
    last = fx_post_events(&fx, 4);
    th_assert_dump(fx_wait_checkpoint_events(&fx, 4, 10000), p.err_path, "4 events");
    stop_cleanly(&p);
    data = fx_checkpoint_data(&fx);
    cr_expect_str_eq(data, last);
    cr_expect_eq(th_redis_xlen(&fx.redis, FX_STREAM), 0, "no stream is written");
    free(data);
    bson_free(last);
}

Test(run, restart_resumes_after_the_checkpoint)
{
    static const char *const first[] = {"--sink", "redis", "--max-events", "2", NULL};
    static const char *const second[] = {"--sink", "redis", "--max-events", "3", NULL};
    th_proc_t p;
    char *after_first, *err = NULL;
    bson_t stage;
    bson_iter_t it;
    int64_t *seqs;
    size_t n;

    fx_start(&fx, NULL);
    start_following(&p, first);
    bson_free(fx_post_events(&fx, 5));
    th_assert_dump(th_proc_wait(&p, 10000), p.err_path, "--max-events stops it");
    cr_assert_eq(th_proc_exit_code(&p), 0);
    after_first = fx_checkpoint_data(&fx);
    cr_assert_eq(fx_checkpoint_events(&fx), 2);

    cr_assert_eq(fx_run(&fx, second, 20000, &err), 0, "%s", err);
    cr_assert(fx_last_change_stream(&fx, &stage));
    cr_assert(bson_iter_init(&it, &stage) &&
                  bson_iter_find_descendant(&it, "resumeAfter._data", &it),
              "the restart sent resumeAfter");
    cr_expect_str_eq(bson_iter_utf8(&it, NULL), after_first,
                     "resumeAfter is the stored token");
    cr_expect_not(bson_has_field(&stage, "startAtOperationTime"));
    n = fx_stream_seqs(&fx, &seqs);
    cr_assert_eq(n, 5, "2 then 3 events, none twice");
    for (size_t k = 0; k < n; k++)
        cr_expect_eq(seqs[k], (int64_t)k + 1);
    cr_expect_eq(fx_checkpoint_events(&fx), 5, "the count carries over");
    cr_expect(strstr(err, "resumeAfter") != NULL, "the log names the resume point");
    bson_destroy(&stage);
    free(seqs);
    free(err);
    free(after_first);
}

Test(run, a_quiet_stream_checkpoint_keeps_up_with_the_cluster)
{
    th_proc_t p;
    char *first, *later, *source;
    unsigned long t1, t2;

    /* A minute of cluster time per second; a no-op every 10 s of it. */
    fx_start(&fx, "{\"rate\": 60, \"background_every\": 10}");
    start_following(&p, NULL);
    first = fx_checkpoint(&fx, "cluster_time");
    th_sleep_ms(2500);
    later = fx_checkpoint(&fx, "cluster_time");
    source = fx_checkpoint(&fx, "source");
    stop_cleanly(&p);
    t1 = strtoul(first, NULL, 10);
    t2 = strtoul(later, NULL, 10);
    cr_expect_geq(t2 - t1, 90, "moved %lu s of cluster time in 2.5 s", t2 - t1);
    cr_expect_str_eq(source, "pbrt");
    cr_expect_eq(fx_checkpoint_events(&fx), 0);
    free(first);
    free(later);
    free(source);
}

Test(run, max_events_and_until_stop_cleanly)
{
    static const char *const until[] = {"--sink", "redis", "--until", "1700000000:4", NULL};
    th_proc_t p;
    char *ct;
    int64_t *seqs;
    size_t n;

    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, until);
    bson_free(fx_post_events(&fx, 6));
    th_assert_dump(th_proc_wait(&p, 10000), p.err_path, "--until stops it");
    cr_expect_eq(th_proc_exit_code(&p), 0);
    ct = fx_checkpoint(&fx, "cluster_time");
    cr_expect_str_eq(ct, "1700000000:4", "nothing past --until is checkpointed");
    n = fx_stream_seqs(&fx, &seqs);
    cr_expect_eq(n, 3, "events at :2, :3, :4");
    free(seqs);
    free(ct);
}

Test(run, the_checkpoint_never_moves_backwards)
{
    th_proc_t p;
    char *ahead = fx_hwm_data(1700000000 + 100000, 1);
    char *data, *err;

    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, NULL);
    /* Another writer moves the checkpoint far ahead; this watcher's next
     * commit is behind it and must not take it back. */
    fx_seed_checkpoint(&fx, ahead, NULL);
    bson_free(fx_post_events(&fx, 3));
    th_sleep_ms(1000);
    stop_cleanly(&p);
    data = fx_checkpoint_data(&fx);
    cr_expect_str_eq(data, ahead, "the newer checkpoint stays");
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "further ahead") != NULL, "warns: %s", err);
    free(data);
    free(err);
    bson_free(ahead);
}

Test(run, sighup_stops_cleanly_with_the_last_checkpoint)
{
    static const char *const extra[] = {"--checkpoint-every", "1000", "--checkpoint-interval",
                                        "1h", NULL};
    th_proc_t p;

    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, extra);
    bson_free(fx_post_events(&fx, 3));
    th_sleep_ms(500); /* handed on, not yet checkpointed (every 1000 or 1 h) */
    th_proc_signal(&p, SIGHUP);
    th_assert_dump(th_proc_wait(&p, 10000), p.err_path, "exits on SIGHUP");
    cr_expect_eq(th_proc_exit_code(&p), 0, "a clean stop, not a kill");
    cr_expect_eq(fx_checkpoint_events(&fx), 3, "the last checkpoint was written");
}

Test(run, sigterm_during_a_redis_outage_retries_the_last_checkpoint)
{
    /* Redis goes away, a commit starts retrying, then the stop request
     * comes: the last checkpoint is still retried for up to 10 s. */
    static const char *const extra[] = {"--checkpoint-every", "1", NULL};
    th_proc_t p;
    char *err;

    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, extra);
    th_redis_stop(&fx.redis);
    bson_free(fx_post_events(&fx, 3));
    th_sleep_ms(800); /* the commit is retrying */
    th_proc_signal(&p, SIGTERM);
    th_sleep_ms(2000);
    cr_expect(th_proc_running(&p), "still retrying the last checkpoint after 2 s");
    cr_assert(th_redis_restart(&fx.redis));
    th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "exits once it is written");
    err = th_proc_stderr(&p);
    cr_expect_eq(th_proc_exit_code(&p), 0, "%s", err);
    /* It takes no further events while a commit waits: the first one was
     * handed on, and its checkpoint is the one that landed. */
    cr_expect_eq(fx_checkpoint_events(&fx), 1, "the last checkpoint landed:\n%s", err);
    cr_expect(strstr(err, "stopping") != NULL, "%s", err);
    free(err);
}

Test(run, sigterm_during_a_mongodb_outage_stops_within_seconds)
{
    th_proc_t p;
    bson_t reply;
    struct timespec t0, t1;
    double took;
    char *err;

    fx_start(&fx, "{\"rate\": 0}");
    start_following(&p, NULL);
    bson_free(fx_post_events(&fx, 2));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 2, 10000), p.err_path, "2 events");
    fx_sim(&fx, "POST", "/down", "{\"seconds\": 60}", &reply);
    bson_destroy(&reply);
    th_sleep_ms(1500); /* it is now waiting for MongoDB */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    th_proc_signal(&p, SIGTERM);
    th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "exits");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    err = th_proc_stderr(&p);
    cr_expect_eq(th_proc_exit_code(&p), 0, "%s", err);
    /* Each blocking driver call now gives up after 1 s (it was 8.6 s in all). */
    cr_expect_lt(took, 5.0, "stopped in %.1f s:\n%s", took, err);
    cr_expect(strstr(err, "stopping") != NULL, "says so:\n%s", err);
    free(err);
}
