/*
 * Stop requests while a MongoDB call blocks (issue 9): every SIGTERM or
 * SIGHUP ends the process within a second or so, exit 0, with a "stopping"
 * line and the last checkpoint covering every event handed on, whatever
 * the MongoDB driver is waiting for (a stalled reply, a server that is
 * down, connections hung up again and again).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

/* From the signal to the process reaped. */
#define STOP_BOUND_MS 1500
/* Long enough to see how long a stop took before the stop watcher. */
#define STOP_WAIT_MS 45000

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(stop, .fini = teardown, .timeout = 120);

typedef struct {
    const char *fault; /* "stall", "down", "hangup" */
    bool waiting;      /* only requests not answered yet */
    int at_least;
} fault_wait_t;

/* Requests in the simulator's log (hello included) with w->fault. */
static int count_faults(const fault_wait_t *w)
{
    bson_t reply;
    bson_iter_t it, entries;
    int n = 0;

    fx_sim(&fx, "GET", "/log?all=1", NULL, &reply);
    cr_assert(bson_iter_init_find(&it, &reply, "a") && bson_iter_recurse(&it, &entries));
    while (bson_iter_next(&entries)) {
        bson_iter_t fault, answer;

        bson_iter_recurse(&entries, &fault);
        bson_iter_recurse(&entries, &answer);
        if (!bson_iter_find(&fault, "fault") || !BSON_ITER_HOLDS_UTF8(&fault) ||
            strcmp(bson_iter_utf8(&fault, NULL), w->fault) != 0)
            continue;
        if (w->waiting && bson_iter_find(&answer, "reply") &&
            !BSON_ITER_HOLDS_NULL(&answer))
            continue;
        n++;
    }
    bson_destroy(&reply);
    return n;
}

static bool enough_faults(void *ctx)
{
    const fault_wait_t *w = ctx;

    return count_faults(w) >= w->at_least;
}

static void wait_faults(th_proc_t *p, const char *fault, bool waiting, int at_least)
{
    fault_wait_t w = {fault, waiting, at_least};

    th_assert_dump(th_wait_until(enough_faults, &w, 20000), p->err_path,
                   "the simulator sees %d request(s) with fault %s", at_least, fault);
}

/* Has the simulator sent the event with this sequence number? */
static bool sent_seq(void *ctx)
{
    int64_t want = *(int64_t *)ctx;
    bson_t reply;
    bson_iter_t it, entries;
    bool sent = false;

    fx_sim(&fx, "GET", "/log", NULL, &reply);
    cr_assert(bson_iter_init_find(&it, &reply, "a") && bson_iter_recurse(&it, &entries));
    while (!sent && bson_iter_next(&entries)) {
        bson_iter_t seqs;

        bson_iter_recurse(&entries, &seqs);
        if (!bson_iter_find_descendant(&seqs, "reply.seqs", &seqs) ||
            !BSON_ITER_HOLDS_ARRAY(&seqs) || !bson_iter_recurse(&seqs, &seqs))
            continue;
        while (bson_iter_next(&seqs))
            if (bson_iter_as_int64(&seqs) == want)
                sent = true;
    }
    bson_destroy(&reply);
    return sent;
}

static void post_fault(const char *body)
{
    bson_t reply;

    fx_sim(&fx, "POST", "/fault", body, &reply);
    bson_destroy(&reply);
}

/*
 * A checkpoint every 5 events and no time-based one: 5 events committed,
 * then 3 more handed on (--sink redis: to the batch) and not committed yet.
 * Returns with the simulator having sent all 8. uri NULL: the fixture's.
 */
static void follow_eight_events(th_proc_t *p, const char *sink, const char *uri)
{
    const char *const extra[] = {"--sink", sink, "--checkpoint-every", "5",
                                 "--checkpoint-interval", "1h", "--mongo-uri",
                                 uri ? uri : fx.sim.uri, NULL};
    int64_t last = 8;

    fx_spawn(&fx, p, extra);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p->err_path, "a first checkpoint");
    bson_free(fx_post_events(&fx, 5));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 5, 10000), p->err_path,
                   "5 events committed");
    bson_free(fx_post_events(&fx, 3));
    th_assert_dump(th_wait_until(sent_seq, &last, 10000), p->err_path,
                   "the simulator sent all 8 events");
}

/* Sends sig and returns how long the process took to end (ms). */
static long long stop_with(th_proc_t *p, int sig)
{
    long long t0 = th_now_ms(), took;

    th_proc_signal(p, sig);
    th_assert_dump(th_proc_wait(p, STOP_WAIT_MS), p->err_path, "exits at all");
    took = th_now_ms() - t0;
    cr_log_info("stop took %lld ms", took);
    return took;
}

/* Exit 0 within the bound, a "stopping" line, and a checkpoint of all. */
static void expect_clean_stop(th_proc_t *p, long long took, long long events)
{
    char *err = th_proc_stderr(p);
    int64_t *seqs;
    size_t n;

    cr_expect_lt(took, STOP_BOUND_MS, "stopped in %lld ms:\n%s", took, err);
    cr_expect_eq(th_proc_exit_code(p), 0, "exit %d:\n%s", th_proc_exit_code(p), err);
    cr_expect(strstr(err, "stopping") != NULL, "says so:\n%s", err);
    cr_expect_eq(fx_checkpoint_events(&fx), events, "the checkpoint covers every event:\n%s",
                 err);
    cr_expect_eq(th_redis_xlen(&fx.redis, FX_STREAM), fx_checkpoint_events(&fx),
                 "every event in the stream is covered by the checkpoint");
    n = fx_stream_seqs(&fx, &seqs);
    for (size_t k = 0; k < n; k++)
        cr_expect_eq(seqs[k], (int64_t)k + 1, "the stream holds seq 1..%zu in order", n);
    free(seqs);
    free(err);
}

static void stop_while_getmore_stalls(int sig)
{
    th_proc_t p;

    fx_start(&fx, "{\"rate\": 0}");
    follow_eight_events(&p, "redis", NULL);
    post_fault("{\"command\": \"getMore\", \"kind\": \"stall\", \"seconds\": 30, "
               "\"count\": 1000}");
    wait_faults(&p, "stall", true, 1);
    expect_clean_stop(&p, stop_with(&p, sig), 8);
}

Test(stop, sigterm_while_every_getmore_stalls)
{
    stop_while_getmore_stalls(SIGTERM);
}

Test(stop, sighup_while_every_getmore_stalls)
{
    stop_while_getmore_stalls(SIGHUP);
}

/* An operator's URI may keep libmongoc's own 30 s server selection: a stop
 * must not wait for it. */
Test(stop, sigterm_while_mongodb_is_down)
{
    th_proc_t p;
    bson_t reply;
    char uri[300];

    fx_start(&fx, "{\"rate\": 0}");
    snprintf(uri, sizeof uri, "%s&serverSelectionTimeoutMS=30000", fx.sim.uri);
    follow_eight_events(&p, "redis", uri);
    fx_sim(&fx, "POST", "/down", "{\"seconds\": 60}", &reply);
    bson_destroy(&reply);
    wait_faults(&p, "down", false, 2);
    th_sleep_ms(1000); /* well into reconnecting */
    expect_clean_stop(&p, stop_with(&p, SIGTERM), 8);
}

/* The default server selection (1 s), with the server gone altogether. */
Test(stop, sigterm_while_mongodb_is_stopped)
{
    th_proc_t p;

    fx_start(&fx, "{\"rate\": 0}");
    follow_eight_events(&p, "redis", NULL);
    th_sim_stop(&fx.sim);
    th_sleep_ms(1500); /* well into reconnecting */
    expect_clean_stop(&p, stop_with(&p, SIGTERM), 8);
}

Test(stop, sigterm_while_getmore_hangs_up_again_and_again)
{
    th_proc_t p;

    fx_start(&fx, "{\"rate\": 0}");
    follow_eight_events(&p, "redis", NULL);
    post_fault("{\"command\": \"getMore\", \"kind\": \"hangup\", \"count\": 100000}");
    wait_faults(&p, "hangup", false, 3);
    expect_clean_stop(&p, stop_with(&p, SIGTERM), 8);
}

/* The stdout sink: every line printed is covered by the checkpoint, and
 * none is left in a buffer. */
Test(stop, sigterm_while_getmore_stalls_flushes_stdout)
{
    th_proc_t p;
    long long took;
    char *out, *err;

    fx_start(&fx, "{\"rate\": 0}");
    follow_eight_events(&p, "stdout", NULL);
    post_fault("{\"command\": \"getMore\", \"kind\": \"stall\", \"seconds\": 30, "
               "\"count\": 1000}");
    wait_faults(&p, "stall", true, 1);
    took = stop_with(&p, SIGTERM);
    out = th_proc_stdout(&p);
    err = th_proc_stderr(&p);
    cr_expect_lt(took, STOP_BOUND_MS, "stopped in %lld ms:\n%s", took, err);
    cr_expect_eq(th_proc_exit_code(&p), 0, "exit %d:\n%s", th_proc_exit_code(&p), err);
    cr_expect(strstr(err, "stopping") != NULL, "says so:\n%s", err);
    cr_expect_eq(fx_count(out, "\"seq\""), 8, "8 lines on stdout:\n%s", out);
    cr_expect_eq(fx_checkpoint_events(&fx), 8, "the checkpoint covers them:\n%s", err);
    free(out);
    free(err);
}

/* Redis away as well: the watcher's last commit retries for 10 s as the
 * main path's does, then exits 1 saying where the next start resumes. */
Test(stop, sigterm_while_getmore_stalls_and_redis_is_away_exits_1_saying_why)
{
    th_proc_t p;
    long long took;
    char *err;

    fx_start(&fx, "{\"rate\": 0}");
    follow_eight_events(&p, "redis", NULL);
    post_fault("{\"command\": \"getMore\", \"kind\": \"stall\", \"seconds\": 30, "
               "\"count\": 1000}");
    wait_faults(&p, "stall", true, 1);
    th_redis_stop(&fx.redis);
    took = stop_with(&p, SIGTERM);
    err = th_proc_stderr(&p);
    cr_expect_eq(th_proc_exit_code(&p), 1, "exit %d:\n%s", th_proc_exit_code(&p), err);
    cr_expect(took >= 10000 && took < 12000,
              "1 s, then the commit's 10 s grace, then out: %lld ms\n%s", took, err);
    cr_expect(strstr(err, "the last checkpoint could not be written") != NULL, "%s", err);
    cr_expect(strstr(err, "the next start resumes from") != NULL, "%s", err);
    cr_assert(th_redis_restart(&fx.redis));
    cr_expect_eq(fx_checkpoint_events(&fx), 5, "the checkpoint before the stop stays");
    cr_expect_eq(th_redis_xlen(&fx.redis, FX_STREAM), 5, "and covers the stream");
    free(err);
}
