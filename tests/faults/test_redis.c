/*
 * Redis broken while a stream is followed with the redis sink: restarted with
 * its AOF, killed -9, restarted empty, asleep (DEBUG SLEEP), paused (CLIENT
 * PAUSE), out of memory (maxmemory, noeviction), a key turned to the wrong type.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(redis, .fini = teardown, .timeout = 120);

/* A running follower with a first checkpoint and a writer behind it. */
static void begin(th_proc_t *p, ft_writer_t *w)
{
    fx_start(&fx, NULL);
    ft_spawn(&fx, p, NULL);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p->err_path, "a first checkpoint");
    ft_writer_start(w, &fx, 5, 20);
    th_assert_dump(ft_wait_seq(&fx, 50, 10000), p->err_path, "following");
}

/* Lets the writer run for ms more, then stops it; the newest seq. */
static int64_t end_writes(ft_writer_t *w, int ms)
{
    th_sleep_ms(ms);
    return ft_writer_stop(w);
}

static void expect_one_outage(th_proc_t *p)
{
    char *err = th_proc_stderr(p);

    cr_expect_eq(fx_count(err, "Redis unavailable"), 1, "one line per outage:\n%s", err);
    cr_expect_eq(fx_count(err, "Redis available again"), 1, "%s", err);
    free(err);
}

Test(redis, restarted_with_its_aof)
{
    th_proc_t p;
    ft_writer_t w;
    ft_tally_t t;

    begin(&p, &w);
    th_redis_stop(&fx.redis);
    th_sleep_ms(1500);
    cr_assert(th_proc_running(&p), "waits for Redis");
    cr_assert(th_redis_restart(&fx.redis));
    t = ft_finish(&fx, &p, end_writes(&w, 1000), NULL, 0);
    ft_report("Redis restarted with its AOF", &t, NULL);
    cr_expect_eq(t.missing, 0, "seq %lld missing", (long long)t.first_missing);
    cr_expect_eq(t.duplicates, 0);
    expect_one_outage(&p);
}

Test(redis, killed_9_with_aof_always)
{
    th_proc_t p;
    ft_writer_t w;
    ft_tally_t t;

    begin(&p, &w);
    th_redis_kill9(&fx.redis);
    th_sleep_ms(1000);
    cr_assert(th_redis_restart(&fx.redis));
    t = ft_finish(&fx, &p, end_writes(&w, 1000), NULL, 0);
    ft_report("Redis killed -9 (AOF, fsync always)", &t, NULL);
    cr_expect_eq(t.missing, 0, "seq %lld missing", (long long)t.first_missing);
    cr_expect_leq(t.duplicates, FT_BATCH);
    expect_one_outage(&p);
}

/* Redis comes back without its data while tokenwatch runs: the stream and the
 * checkpoint are gone with it. tokenwatch says so, writes its checkpoint
 * again from the position it holds (never from nothing) and carries on. */
Test(redis, restarted_empty_while_followed)
{
    th_proc_t p;
    ft_writer_t w;
    int64_t seqs_before, last;
    char aof[PATH_MAX], *err, *ct_before, *ct_after;
    long long lost_len;

    begin(&p, &w);
    ct_before = fx_checkpoint(&fx, "cluster_time");
    th_redis_stop(&fx.redis);
    seqs_before = w.last_seq;
    cr_assert(th_path(aof, sizeof aof, fx.redis.dir, "appendonlydir"));
    ft_remove_tree(aof);
    cr_assert(th_redis_restart(&fx.redis));
    lost_len = th_redis_xlen(&fx.redis, FX_STREAM);
    cr_assert_eq(lost_len, 0, "Redis came back empty");
    last = end_writes(&w, 1500);
    th_assert_dump(ft_wait_seq(&fx, last, 20000), p.err_path, "carries on");
    ct_after = fx_checkpoint(&fx, "cluster_time");
    cr_assert(ct_after, "the checkpoint is written again");
    cr_expect_geq(strtoul(ct_after, NULL, 10), strtoul(ct_before ? ct_before : "0", NULL, 10),
                  "never behind the one committed before");
    cr_assert_neq(ft_stop(&p, SIGTERM, 15000), -1);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    err = th_proc_stderr(&p);
    cr_expect_eq(fx_count(err, "vanished"), 1, "said once:\n%s", err);
    cr_expect(strstr(err, FX_CHECKPOINT), "names the key:\n%s", err);
    {
        /* Every event after the empty restart reached the stream. */
        int64_t *seqs;
        size_t n = fx_stream_seqs(&fx, &seqs);
        int64_t newest = n ? seqs[n - 1] : 0;

        cr_expect_eq(newest, last);
        for (size_t k = 1; k < n; k++)
            cr_expect_eq(seqs[k], seqs[k - 1] + 1, "no hole after the restart");
        cr_expect_leq(n ? seqs[0] : 0, seqs_before + 1, "from where Redis was lost");
        free(seqs);
    }
    fprintf(stderr, "faults: Redis restarted empty: checkpoint %s before, %s after\n",
            ct_before ? ct_before : "-", ct_after);
    free(err);
    free(ct_before);
    free(ct_after);
}

/* A Redis slower than --redis-timeout (500 ms): each batch once. */
static void *debug_sleep(void *arg)
{
    redisReply *r = th_redis_cmd(&((fx_t *)arg)->redis, "DEBUG SLEEP 1.5");

    if (r)
        freeReplyObject(r);
    return NULL;
}

Test(redis, asleep_longer_than_the_timeout)
{
    th_proc_t p;
    ft_writer_t w;
    ft_tally_t t;

    begin(&p, &w);
    for (int k = 0; k < 3; k++) {
        pthread_t sleeper;

        cr_assert_eq(pthread_create(&sleeper, NULL, debug_sleep, &fx), 0);
        pthread_join(sleeper, NULL);
        th_sleep_ms(300);
    }
    t = ft_finish(&fx, &p, end_writes(&w, 500), NULL, 0);
    ft_report("Redis asleep 3 x 1.5 s (timeout 500 ms)", &t, NULL);
    cr_expect_eq(t.missing, 0, "seq %lld missing", (long long)t.first_missing);
    cr_expect_eq(t.duplicates, 0, "a timed-out commit that ran is not repeated");
}

Test(redis, paused_for_writes)
{
    th_proc_t p;
    ft_writer_t w;
    ft_tally_t t;

    begin(&p, &w);
    ft_redis(&fx, "CLIENT PAUSE 2000 WRITE");
    th_sleep_ms(2500);
    ft_redis(&fx, "CLIENT PAUSE 2000 ALL");
    th_sleep_ms(2500);
    t = ft_finish(&fx, &p, end_writes(&w, 500), NULL, 0);
    ft_report("Redis paused 2 s (WRITE), then 2 s (ALL)", &t, NULL);
    cr_expect_eq(t.missing, 0, "seq %lld missing", (long long)t.first_missing);
    cr_expect_eq(t.duplicates, 0);
}

Test(redis, out_of_memory_with_noeviction)
{
    th_proc_t p;
    ft_writer_t w;
    ft_tally_t t;
    char *err;

    begin(&p, &w);
    ft_redis(&fx, "CONFIG SET maxmemory-policy noeviction");
    ft_redis(&fx, "CONFIG SET maxmemory 1");
    th_sleep_ms(2000);
    cr_assert(th_proc_running(&p), "waits for memory");
    ft_redis(&fx, "CONFIG SET maxmemory 0");
    t = ft_finish(&fx, &p, end_writes(&w, 1000), NULL, 0);
    ft_report("Redis out of memory for 2 s (noeviction)", &t, NULL);
    cr_expect_eq(t.missing, 0, "seq %lld missing", (long long)t.first_missing);
    cr_expect_eq(t.duplicates, 0);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "OOM"), "says why:\n%s", err);
    cr_expect_eq(fx_count(err, "Redis unavailable"), 1, "one line for the outage:\n%s", err);
    free(err);
}

/* Someone overwrites the checkpoint with a string mid-stream: exit 2 naming
 * it, and nothing more is appended (the events and the checkpoint are one). */
Test(redis, a_key_turned_to_the_wrong_type_mid_stream)
{
    th_proc_t p;
    ft_writer_t w;
    long long len_before;
    char *err;

    begin(&p, &w);
    ft_redis(&fx, "SET %s garbage", FX_CHECKPOINT);
    len_before = th_redis_xlen(&fx.redis, FX_STREAM);
    cr_assert(th_proc_wait(&p, 10000), "stops");
    ft_writer_stop(&w);
    cr_expect_eq(th_proc_exit_code(&p), 2);
    cr_expect_eq(th_redis_xlen(&fx.redis, FX_STREAM), len_before, "nothing appended");
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, FX_CHECKPOINT), "names the key:\n%s", err);
    cr_expect_eq(fx_count(err, "Redis unavailable"), 0, "not an outage:\n%s", err);
    free(err);
}

/* A failover to a replica that was behind, played by moving the stored
 * checkpoint back: the next commit writes the position held here again, and
 * says what happened; the checkpoint never stays behind. */
Test(redis, a_checkpoint_that_went_back_is_written_again)
{
    th_proc_t p;
    ft_writer_t w;
    int64_t last;
    char *err, *ct;

    begin(&p, &w);
    ft_redis(&fx, "HSET %s cluster_time 1700000000:1", FX_CHECKPOINT);
    last = end_writes(&w, 500);
    th_assert_dump(ft_wait_seq(&fx, last, 10000), p.err_path, "carries on");
    cr_assert_neq(ft_stop(&p, SIGTERM, 15000), -1);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    ct = fx_checkpoint(&fx, "cluster_time");
    cr_expect_gt(strtoul(ct, NULL, 10) * 100000ul + strtoul(strchr(ct, ':') + 1, NULL, 10),
                 1700000000ul * 100000ul + 1ul, "ahead again: %s", ct);
    err = th_proc_stderr(&p);
    cr_expect_eq(fx_count(err, "went back in Redis from"), 1, "said once:\n%s", err);
    free(err);
    free(ct);
}
