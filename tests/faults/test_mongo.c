/*
 * MongoDB broken while a stream is followed with the redis sink: connections
 * dropped mid-batch, stalled replies, transient errors with and without
 * labels, the server away. Every event is handed on; the checkpoint carries
 * what was handed on, so a reopen repeats nothing.
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

TestSuite(mongo, .fini = teardown, .timeout = 120);

/* Follows while `fault` (a body for path) is posted `times` times, 400 ms
 * apart, with events arriving meanwhile; then `then` (may be NULL) once. */
static void run_through2(const char *name, const char *path, const char *fault, int times,
                         const char *then)
{
    th_proc_t p;
    ft_writer_t w;
    ft_tally_t t;
    int64_t last;
    char more[64];
    long long began;

    fx_start(&fx, "{\"batch_size\": 7}");
    ft_spawn(&fx, &p, NULL);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "a first checkpoint");
    ft_writer_start(&w, &fx, 3, 15);
    th_assert_dump(ft_wait_seq(&fx, 30, 10000), p.err_path, "following");
    began = th_now_ms();
    for (int k = 0; k < times; k++) {
        ft_sim(&fx, "POST", path, fault);
        th_sleep_ms(400);
    }
    if (then)
        ft_sim(&fx, "POST", "/fault", then);
    th_sleep_ms(500);
    last = ft_writer_stop(&w);
    t = ft_finish(&fx, &p, last, NULL, 0);
    snprintf(more, sizeof more, "caught up %.1f s after the first fault",
             (double)(th_now_ms() - began) / 1000.0);
    ft_report(name, &t, more);
    cr_expect_eq(t.missing, 0, "seq %lld and %zu more missing", (long long)t.first_missing,
                 t.missing);
    cr_expect_eq(t.duplicates, 0, "a reopen resumes from what was handed on");
}

static void run_through(const char *name, const char *path, const char *fault, int times)
{
    run_through2(name, path, fault, times, NULL);
}

Test(mongo, connections_dropped_mid_batch)
{
    run_through("MongoDB hung up on getMore x5", "/fault",
                "{\"command\": \"getMore\", \"kind\": \"hangup\", \"count\": 1}", 5);
}

Test(mongo, replies_stalled)
{
    run_through("MongoDB getMore stalled 2 s x2", "/fault",
                "{\"command\": \"getMore\", \"kind\": \"stall\", \"seconds\": 2, \"count\": 1}",
                2);
}

Test(mongo, transient_errors_with_labels)
{
    run_through("MongoDB 91 ShutdownInProgress, labelled, x4", "/fault",
                "{\"command\": \"getMore\", \"kind\": \"error\", \"count\": 1, \"code\": 91, "
                "\"codeName\": \"ShutdownInProgress\", \"errmsg\": \"shutting down\", "
                "\"labels\": [\"ResumableChangeStreamError\"]}",
                4);
}

Test(mongo, transient_errors_without_labels)
{
    run_through("MongoDB 6 HostUnreachable, unlabelled, x4", "/fault",
                "{\"command\": \"getMore\", \"kind\": \"error\", \"count\": 1, \"code\": 6, "
                "\"codeName\": \"HostUnreachable\", \"errmsg\": \"host unreachable\"}",
                4);
}

Test(mongo, cursor_not_found)
{
    run_through("MongoDB 43 CursorNotFound x3", "/fault",
                "{\"command\": \"getMore\", \"kind\": \"error\", \"count\": 1, \"code\": 43, "
                "\"codeName\": \"CursorNotFound\", \"errmsg\": \"cursor id 1 not found\"}",
                3);
}

/* The cursor dies, and the reopen is refused three times before it works. */
Test(mongo, reopen_refused_for_a_while)
{
    run_through2("MongoDB reopen refused x3 (11600 InterruptedAtShutdown)", "/fault",
                 "{\"command\": \"aggregate\", \"kind\": \"error\", \"count\": 3, "
                 "\"code\": 11600, \"codeName\": \"InterruptedAtShutdown\", "
                 "\"errmsg\": \"interrupted at shutdown\"}",
                 1, "{\"command\": \"getMore\", \"kind\": \"hangup\", \"count\": 1}");
}

Test(mongo, away_for_two_seconds)
{
    run_through("MongoDB away 2 s", "/down", "{\"seconds\": 2}", 1);
}

/* Every getMore hung up on a quiet stream: libmongoc resumes inside one
 * call (the aggregate works, its first batch is empty, the next getMore
 * hangs up) for as long as that lasts, and never returns. After 10 s
 * without an answer it is an outage like any other: said once, and once
 * when it ends. */
Test(mongo, hanging_up_for_long_is_said_once, .timeout = 60)
{
    th_proc_t p;
    ft_writer_t w;
    int64_t last;
    char *err, *token;
    ft_tally_t t;

    fx_start(&fx, NULL);
    ft_spawn(&fx, &p, NULL);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "a first checkpoint");
    ft_writer_start(&w, &fx, 3, 50);
    th_assert_dump(ft_wait_seq(&fx, 30, 10000), p.err_path, "following");
    last = ft_writer_stop(&w);
    th_assert_dump(ft_wait_seq(&fx, last, 10000), p.err_path, "caught up, quiet");
    ft_sim(&fx, "POST", "/fault",
           "{\"command\": \"getMore\", \"kind\": \"hangup\", \"count\": 1000000}");
    th_sleep_ms(12000);
    ft_sim(&fx, "DELETE", "/fault", NULL);
    token = fx_post_events(&fx, 20);
    bson_free(token);
    last += 20;
    th_assert_dump(ft_wait_seq(&fx, last, 20000), p.err_path, "carries on after");
    err = th_proc_stderr(&p);
    cr_expect_eq(fx_count(err, "MongoDB unavailable"), 1, "said once:\n%s", err);
    cr_expect_eq(fx_count(err, "no answer to the change stream for 10s"), 1, "%s", err);
    cr_expect_eq(fx_count(err, "MongoDB available again"), 1, "and its end:\n%s", err);
    free(err);
    t = ft_finish(&fx, &p, last, NULL, 0);
    ft_report("MongoDB hanging up on every getMore for 12 s", &t, NULL);
    cr_expect_eq(t.missing, 0);
    cr_expect_eq(t.duplicates, 0);
}
