/*
 * test_harness.c - Criterion self-test of tests/support/harness.c.
 *
 * Each Test runs in its own Criterion worker process; the fixture below
 * gives it a fresh temporary directory and stops whatever it started in
 * .fini, which Criterion runs after a failed assertion too.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, close_range, nftw, mkdtemp, setenv */
#endif
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];
static th_redis_t ra;
static th_redis_t rb;
static th_sim_t sim;
static th_proc_t proc;

static void setup(void)
{
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    memset(&sim, 0, sizeof sim);
    memset(&proc, 0, sizeof proc);
    cr_assert(th_tmpdir(dir, sizeof dir), "th_tmpdir");
}

static void teardown(void)
{
    th_proc_kill(&proc);
    th_sim_stop(&sim);
    th_redis_stop(&rb);
    th_redis_stop(&ra);
    th_rmtree(dir);
}

TestSuite(harness, .init = setup, .fini = teardown, .timeout = 60);

/* true once pid is gone (or only a zombie waiting for someone else) */
static bool pid_gone(pid_t pid)
{
    char path[64];
    char *stat;
    bool gone;

    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    stat = th_read_file(path);
    if (stat == NULL)
        return true;
    /* "pid (comm) S ..." */
    gone = strstr(stat, ") Z") != NULL;
    free(stat);
    return gone;
}

static bool pred_pid_gone(void *ctx)
{
    return pid_gone(*(pid_t *)ctx);
}

/* ---------------------------------------------------------------- */

Test(harness, tmpdir_and_rmtree)
{
    char sub[PATH_MAX];

    cr_assert_not_null(strstr(dir, "/tokenwatch-test-"));
    cr_assert(th_path(sub, sizeof sub, dir, "a/b"));
    cr_assert(th_write_file(sub, "x", 1) == false, "parent does not exist");
    cr_assert(th_path(sub, sizeof sub, dir, "f.txt"));
    cr_assert(th_write_file(sub, "hello", 5));
    {
        char *s = th_read_file(sub);

        cr_assert_str_eq(s, "hello");
        free(s);
    }
    cr_assert_null(th_read_file("/nonexistent/file"));
    th_rmtree(""); /* refused, harmless */
    th_rmtree(NULL);
    th_rmtree("/tmp"); /* refused: not a tokenwatch-test-* dir */
    cr_assert_eq(access("/tmp", F_OK), 0);
    th_rmtree(dir);
    cr_assert_neq(access(dir, F_OK), 0, "dir removed");
}

Test(harness, free_port_is_bindable)
{
    int a = th_free_port();
    int b = th_free_port();

    cr_assert(a > 0 && a < 65536);
    cr_assert(b > 0 && b < 65536);
}

Test(harness, two_redis_side_by_side)
{
    redisReply *reply;
    char *v;
    pid_t pa, pb;

    cr_assert(th_redis_start(&ra, dir, false), "start a");
    cr_assert(th_redis_start(&rb, dir, false), "start b");
    cr_assert_neq(ra.port, rb.port);
    cr_assert_neq(ra.pid, rb.pid);
    cr_assert_str_neq(ra.dir, rb.dir, "each server has its own dir");

    reply = th_redis_cmd(&ra, "SET %s %s", "k", "from-a");
    cr_assert_not_null(reply);
    cr_assert_eq(reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(reply);

    v = th_redis_get(&ra, "k");
    cr_assert_str_eq(v, "from-a");
    free(v);
    cr_assert_null(th_redis_get(&rb, "k"), "b is another server");

    reply = th_redis_cmd(&ra, "HSET h f %s", "value with spaces");
    freeReplyObject(reply);
    v = th_redis_hget(&ra, "h", "f");
    cr_assert_str_eq(v, "value with spaces");
    free(v);
    cr_assert_null(th_redis_hget(&ra, "h", "missing"));

    reply = th_redis_cmd(&rb, "XADD s * a 1");
    freeReplyObject(reply);
    reply = th_redis_cmd(&rb, "XADD s * a 2");
    freeReplyObject(reply);
    cr_assert_eq(th_redis_xlen(&rb, "s"), 2);
    cr_assert_eq(th_redis_xlen(&ra, "s"), 0);

    reply = th_redis_cmd(&ra, "DEBUG SLEEP 0");
    cr_assert_not_null(reply);
    cr_assert_eq(reply->type, REDIS_REPLY_STATUS, "DEBUG is enabled: %s",
                 reply->str);
    freeReplyObject(reply);

    pa = ra.pid;
    pb = rb.pid;
    th_redis_stop(&ra);
    th_redis_stop(&rb);
    cr_assert_eq(ra.pid, 0);
    cr_assert(pid_gone(pa) && pid_gone(pb));
    cr_assert_null(th_redis_connect(&ra), "stopped server refuses");
    th_redis_stop(&ra); /* idempotent */
    th_redis_kill9(&ra);
}

Test(harness, redis_restart_with_aof_keeps_data)
{
    redisReply *reply;
    char *v;
    int port;

    cr_assert(th_redis_start(&ra, dir, true));
    port = ra.port;
    reply = th_redis_cmd(&ra, "HSET tokenwatch:t:checkpoint token %s",
                         "8263A1B2C3000000012B");
    freeReplyObject(reply);
    reply = th_redis_cmd(&ra, "XADD ev * seq 1");
    freeReplyObject(reply);

    cr_assert(th_redis_restart(&ra), "graceful restart");
    cr_assert_eq(ra.port, port, "same port after restart");
    v = th_redis_hget(&ra, "tokenwatch:t:checkpoint", "token");
    th_assert_dump_dir(v != NULL, dir, "data back after restart");
    cr_assert_str_eq(v, "8263A1B2C3000000012B");
    free(v);

    /* a crash: appendfsync always keeps the acknowledged write */
    reply = th_redis_cmd(&ra, "XADD ev * seq 2");
    freeReplyObject(reply);
    th_redis_kill9(&ra);
    cr_assert_eq(ra.pid, 0);
    cr_assert_null(th_redis_connect(&ra));
    cr_assert(th_redis_restart(&ra), "restart after kill -9");
    cr_assert_eq(th_redis_xlen(&ra, "ev"), 2);
}

Test(harness, redis_without_aof_loses_data_on_restart)
{
    redisReply *reply;

    cr_assert(th_redis_start(&ra, dir, false));
    reply = th_redis_cmd(&ra, "SET k v");
    freeReplyObject(reply);
    cr_assert(th_redis_restart(&ra));
    cr_assert_null(th_redis_get(&ra, "k"));
}

Test(harness, stop_functions_accept_zeroed_structs)
{
    th_redis_t r;
    th_sim_t s;
    th_proc_t p;

    memset(&r, 0, sizeof r);
    memset(&s, 0, sizeof s);
    memset(&p, 0, sizeof p);
    th_redis_stop(&r);
    th_redis_kill9(&r);
    th_redis_stop(NULL);
    th_sim_stop(&s);
    th_sim_stop(NULL);
    th_proc_kill(&p);
    th_proc_kill(NULL);
    th_proc_stop(&p, 100);
    th_proc_signal(&p, SIGTERM);
    cr_assert_not(th_proc_wait(&p, 0));
    cr_assert_not(th_proc_running(&p));
    cr_assert_eq(th_proc_exit_code(&p), -1);
    cr_assert_null(th_redis_connect(&r));
    cr_assert_null(th_redis_cmd(&r, "PING"));
    cr_assert_null(th_sim_request(&s, "GET", "/state", NULL, NULL));
    cr_assert_not(th_redis_restart(&r));
}

Test(harness, proc_exit_code_and_output)
{
    const char *const argv[] = {
        "/bin/sh", "-c", "echo out; echo err >&2; exit 7", NULL,
    };
    char *out = NULL;
    char *err = NULL;
    int rc;

    rc = th_run(dir, argv, NULL, 5000, &out, &err);
    cr_assert_eq(rc, 7);
    cr_assert_str_eq(out, "out\n");
    cr_assert_str_eq(err, "err\n");
    free(out);
    free(err);

    cr_assert(th_proc_spawn(&proc, dir, argv, NULL));
    cr_assert(th_proc_wait(&proc, 5000));
    cr_assert_eq(th_proc_exit_code(&proc), 7);
    cr_assert_eq(th_proc_term_signal(&proc), 0);
    cr_assert_str_neq(proc.out_path, "", "has an output file");
    {
        char *o = th_proc_stdout(&proc);
        char *e = th_proc_stderr(&proc);

        cr_assert_str_eq(o, "out\n");
        cr_assert_str_eq(e, "err\n");
        free(o);
        free(e);
    }
    th_proc_kill(&proc); /* after exit: no-op */
    cr_assert_eq(th_proc_exit_code(&proc), 7);
}

Test(harness, proc_output_files_are_unique)
{
    const char *const argv[] = {"/bin/echo", "hi", NULL};
    th_proc_t a, b;

    cr_assert(th_proc_spawn(&a, dir, argv, NULL));
    cr_assert(th_proc_spawn(&b, dir, argv, NULL));
    cr_assert_str_neq(a.out_path, b.out_path);
    cr_assert_str_neq(a.err_path, b.err_path);
    cr_assert(th_proc_wait(&a, 5000));
    cr_assert(th_proc_wait(&b, 5000));
    cr_assert_eq(th_proc_exit_code(&a), 0);
}

Test(harness, proc_runs_in_dir_with_stdin_null)
{
    const char *const argv[] = {"sh", "-c", "pwd; cat; echo done", NULL};
    char *out = NULL;
    char *expect;
    size_t n = strlen(dir) + 16;
    char real[PATH_MAX];

    cr_assert_not_null(realpath(dir, real));
    cr_assert_eq(th_run(dir, argv, NULL, 5000, &out, NULL), 0,
                 "sh found in PATH, cat reads EOF");
    expect = malloc(n + strlen(real));
    snprintf(expect, n + strlen(real), "%s\ndone\n", real);
    cr_assert_str_eq(out, expect);
    free(expect);
    free(out);
}

Test(harness, proc_timeout_kills_sleep)
{
    const char *const argv[] = {"sleep", "30", NULL};
    long long t0 = th_now_ms();
    char *out = NULL;
    int rc;

    rc = th_run(dir, argv, NULL, 300, &out, NULL);
    cr_assert_eq(rc, -2);
    cr_assert_lt(th_now_ms() - t0, 3000);
    cr_assert_str_eq(out, "");
    free(out);
}

Test(harness, proc_kill_takes_the_process_group)
{
    const char *const argv[] = {
        "/bin/sh", "-c", "sleep 30 & echo $! > child.pid; wait", NULL,
    };
    char path[PATH_MAX];
    char *text = NULL;
    long child;

    cr_assert(th_proc_spawn(&proc, dir, argv, NULL));
    cr_assert(th_path(path, sizeof path, dir, "child.pid"));
    for (int i = 0; i < 250 && text == NULL; i++) {
        text = th_read_file(path);
        if (text != NULL && strchr(text, '\n') == NULL) {
            free(text);
            text = NULL;
        }
        if (text == NULL)
            th_sleep_ms(20);
    }
    cr_assert_not_null(text);
    child = strtol(text, NULL, 10);
    free(text);
    cr_assert_gt(child, 1);
    cr_assert(th_proc_running(&proc));
    cr_assert_not(th_proc_wait(&proc, 50), "still running");

    th_proc_kill(&proc);
    cr_assert(proc.exited);
    cr_assert_eq(th_proc_term_signal(&proc), SIGKILL);
    cr_assert_eq(th_proc_exit_code(&proc), -1);
    {
        pid_t c = (pid_t)child;

        cr_assert(th_wait_until(pred_pid_gone, &c, 2000),
                  "grandchild %ld killed with the group", child);
    }
    th_proc_kill(&proc); /* idempotent */
}

Test(harness, proc_signal_and_stop)
{
    const char *const argv[] = {
        "/bin/sh", "-c", "trap 'echo got-term; exit 3' TERM; "
                         "while :; do sleep 0.05; done", NULL,
    };
    char *out;

    cr_assert(th_proc_spawn(&proc, dir, argv, NULL));
    th_sleep_ms(200); /* let the shell install its trap */
    th_proc_stop(&proc, 5000);
    cr_assert(proc.exited);
    cr_assert_eq(th_proc_exit_code(&proc), 3);
    out = th_proc_stdout(&proc);
    cr_assert_str_eq(out, "got-term\n");
    free(out);
}

Test(harness, env_filtering)
{
    const char *const argv[] = {
        "/bin/sh", "-c",
        "echo \"x=${TOKENWATCH_X-unset} y=${TOKENWATCH_Y-unset} "
        "o=${TH_OTHER-unset} k=${TH_KEEP-unset}\"",
        NULL,
    };
    const char *const extra[] = {
        "TOKENWATCH_Y=from-extra", "TH_OTHER=override", NULL,
    };
    char *out = NULL;

    cr_assert_eq(setenv("TOKENWATCH_X", "secret", 1), 0);
    cr_assert_eq(setenv("TOKENWATCH_Y", "parent", 1), 0);
    cr_assert_eq(setenv("TH_OTHER", "parent", 1), 0);
    cr_assert_eq(setenv("TH_KEEP", "kept", 1), 0);
    cr_assert_eq(th_run(dir, argv, extra, 5000, &out, NULL), 0);
    cr_assert_str_eq(out, "x=unset y=from-extra o=override k=kept\n");
    free(out);

    cr_assert_eq(th_run(dir, argv, NULL, 5000, &out, NULL), 0);
    cr_assert_str_eq(out, "x=unset y=unset o=parent k=kept\n");
    free(out);
}

Test(harness, exec_failure_is_reported)
{
    const char *const missing[] = {"/nonexistent/tokenwatch", NULL};
    const char *const nopath[] = {"no-such-command-th", NULL};
    char *out = NULL;

    cr_assert_not(th_proc_spawn(&proc, dir, missing, NULL));
    cr_assert_eq(proc.pid, 0);
    cr_assert_not(th_proc_spawn(&proc, dir, nopath, NULL));
    cr_assert_eq(th_run(dir, missing, NULL, 1000, &out, NULL), -1);
    cr_assert_str_eq(out, "");
    free(out);
}

Test(harness, children_do_not_inherit_descriptors)
{
    const char *const argv[] = {"/bin/ls", "/proc/self/fd", NULL};
    char *out = NULL;
    int fd = dup(1); /* an extra, inheritable descriptor */

    cr_assert_geq(fd, 3);
    cr_assert_eq(th_run(dir, argv, NULL, 5000, &out, NULL), 0);
    /* 0 1 2 and ls's own directory handle (3) only */
    cr_assert_str_eq(out, "0\n1\n2\n3\n", "got: %s", out);
    free(out);
    close(fd);
}

static bool after_deadline(void *ctx)
{
    return th_now_ms() >= *(long long *)ctx;
}

static bool never(void *ctx)
{
    (void)ctx;
    return false;
}

Test(harness, wait_until)
{
    long long deadline = th_now_ms() + 100;
    long long t0 = th_now_ms();

    cr_assert(th_wait_until(after_deadline, &deadline, 2000));
    cr_assert_geq(th_now_ms() - t0, 90);
    t0 = th_now_ms();
    cr_assert_not(th_wait_until(never, NULL, 150));
    cr_assert_geq(th_now_ms() - t0, 140);
    cr_assert_lt(th_now_ms() - t0, 1000);
}

/* If the test process dies without any cleanup (crash, Criterion
 * timeout), its servers die with it (PR_SET_PDEATHSIG). */
Test(harness, servers_die_with_a_crashed_test)
{
    int fds[2];
    pid_t worker;
    pid_t redis_pid = 0;
    int status;

    cr_assert_eq(pipe(fds), 0);
    worker = fork();
    cr_assert_geq(worker, 0);
    if (worker == 0) {
        th_redis_t r;

        close(fds[0]);
        if (th_redis_start(&r, dir, false)) {
            if (write(fds[1], &r.pid, sizeof r.pid) < 0)
                _exit(2);
        }
        raise(SIGKILL); /* no cleanup at all */
        _exit(1);
    }
    close(fds[1]);
    cr_assert_eq(read(fds[0], &redis_pid, sizeof redis_pid),
                 (ssize_t)sizeof redis_pid);
    close(fds[0]);
    cr_assert_eq(waitpid(worker, &status, 0), worker);
    cr_assert(WIFSIGNALED(status));
    cr_assert(th_wait_until(pred_pid_gone, &redis_pid, 3000),
              "redis %ld outlived its test process", (long)redis_pid);
}

/* ---------------------------------------------------------------- */
/* Simulator (skipped until tests/sim/mongosim.py exists)             */

static void require_sim(void)
{
    char script[PATH_MAX];

    if (!th_sim_script(script, sizeof script) || access(script, R_OK) != 0) {
        /* Criterion 2.4 does not run .fini after cr_skip_test() */
        teardown();
        cr_skip_test("%s not present", script);
    }
}

Test(harness, sim_start_state_stop)
{
    char *body;
    long status = 0;
    pid_t pid;

    require_sim();
    cr_assert(th_sim_start(&sim, dir, NULL), "th_sim_start");
    cr_assert_gt(sim.mongo_port, 0);
    cr_assert_gt(sim.control_port, 0);
    cr_assert_gt(sim.pid, 0);
    cr_assert_not_null(strstr(sim.uri, "mongodb://localhost:"));
    cr_assert_not_null(strstr(sim.uri, "/?replicaSet=rs0"));

    body = th_sim_request(&sim, "GET", "/state", NULL, &status);
    th_assert_dump_dir(body != NULL, dir, "GET /state answered");
    cr_assert_eq(status, 200, "GET /state: %ld %s", status, body);
    cr_assert_not_null(strstr(body, "\"now\""), "state: %s", body);
    free(body);

    pid = sim.pid;
    th_sim_stop(&sim);
    cr_assert_eq(sim.pid, 0);
    cr_assert(pid_gone(pid), "sim pid %ld gone", (long)pid);
    th_sim_stop(&sim); /* idempotent */
    cr_assert_null(th_sim_request(&sim, "GET", "/state", NULL, &status));
    cr_assert_eq(status, 0);
}

Test(harness, sim_mongos_has_a_router_uri_and_shards)
{
    char want[64];

    require_sim();
    cr_assert(th_sim_start(&sim, dir, "{\"profile\": \"mongos\"}"), "th_sim_start mongos");
    snprintf(want, sizeof want, "mongodb://localhost:%d/", sim.mongo_port);
    cr_assert_str_eq(sim.uri, want, "a router's URI names no replica set");
    cr_assert_eq(sim.shard_count, 2);
    cr_assert_str_eq(sim.shards[0].name, "shard0");
    cr_assert_str_eq(sim.shards[1].name, "shard1");
    cr_assert_gt(sim.shards[1].port, 0);
    snprintf(want, sizeof want, "mongodb://localhost:%d/?replicaSet=shard1",
             sim.shards[1].port);
    cr_assert_str_eq(th_sim_shard_uri(&sim, "shard1"), want);
    cr_assert_null(th_sim_shard_uri(&sim, "shard9"));
    cr_assert_null(th_sim_shard_uri(NULL, "shard0"));
    th_sim_stop(&sim);
}

Test(harness, sim_with_scenario_and_events)
{
    char path[PATH_MAX];
    char *body;
    long status = 0;

    require_sim();
    cr_assert(th_sim_start(&sim, dir, "{}"), "th_sim_start with {}");
    cr_assert(th_path(path, sizeof path, sim.dir, "scenario.json"));
    body = th_read_file(path);
    cr_assert_str_eq(body, "{}");
    free(body);

    body = th_sim_request(&sim, "POST", "/events", "{\"count\": 3}",
                          &status);
    th_assert_dump_dir(body != NULL, dir, "POST /events answered");
    cr_assert_eq(status / 100, 2, "POST /events: %ld %s", status, body);
    free(body);

    body = th_sim_request(&sim, "GET", "/log", NULL, &status);
    cr_assert_not_null(body);
    cr_assert_eq(status, 200);
    free(body);

    body = th_sim_request(&sim, "GET", "/no-such-endpoint", NULL, &status);
    cr_assert_not_null(body, "a 404 still returns the body");
    cr_assert_eq(status / 100, 4, "unknown path: %ld", status);
    free(body);
}

Test(harness, sim_bad_scenario_fails_fast)
{
    long long t0;

    require_sim();
    t0 = th_now_ms();
    cr_assert_not(th_sim_start(&sim, dir, "{\"no_such_scenario_key\": 1}"),
                  "mongosim refuses unknown scenario keys");
    cr_assert_eq(sim.pid, 0, "nothing left running");
    cr_assert_lt(th_now_ms() - t0, 5000, "did not wait for the timeout");
}

Test(harness, two_sims_side_by_side)
{
    th_sim_t other;

    require_sim();
    memset(&other, 0, sizeof other);
    cr_assert(th_sim_start(&sim, dir, NULL));
    if (!th_sim_start(&other, dir, NULL)) {
        th_sim_stop(&other);
        cr_assert_fail("second sim");
    }
    cr_expect_neq(sim.mongo_port, other.mongo_port);
    cr_expect_neq(sim.control_port, other.control_port);
    cr_expect_str_neq(sim.dir, other.dir);
    th_sim_stop(&other);
}
