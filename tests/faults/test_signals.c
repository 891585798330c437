/*
 * A stop request (SIGTERM or SIGHUP) during each outage: seen within a
 * second of the signal when nothing else holds it up ("stopping" logged),
 * and the process ends with the last checkpoint written (exit 0, covering
 * everything in the stream) or, when Redis stays away past the 10 s grace,
 * with exit 1 and a message saying where the next start resumes.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

static fx_t fx;
static fx_webhook_t hook;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(signals, .fini = teardown, .timeout = 120);

/* An outage: begin() starts it, end() (may be NULL) ends it, called from a
 * thread end_after_ms after the signal. bound_ms: the stop's limit. */
typedef struct {
    const char *name;
    void (*begin)(void);
    void (*end)(void);
    int end_after_ms;
    int bound_ms;
    bool webhook;
} outage_t;

static void redis_down(void) { th_redis_stop(&fx.redis); }
static void redis_back(void) { cr_assert(th_redis_restart(&fx.redis)); }
static void redis_paused(void) { ft_redis(&fx, "CLIENT PAUSE 3000 ALL"); }
static void redis_oom(void)
{
    ft_redis(&fx, "CONFIG SET maxmemory-policy noeviction");
    ft_redis(&fx, "CONFIG SET maxmemory 1");
}
static void redis_memory_back(void) { ft_redis(&fx, "CONFIG SET maxmemory 0"); }

static void *sleep_redis(void *arg)
{
    redisReply *r = th_redis_cmd(&fx.redis, "DEBUG SLEEP 2");

    (void)arg;
    if (r)
        freeReplyObject(r);
    return NULL;
}

static void redis_asleep(void)
{
    pthread_t t;

    cr_assert_eq(pthread_create(&t, NULL, sleep_redis, NULL), 0);
    pthread_detach(t);
    th_sleep_ms(100);
}

static void mongo_down(void) { ft_sim(&fx, "POST", "/down", "{\"seconds\": 60}"); }
static void mongo_stalled(void)
{
    ft_sim(&fx, "POST", "/fault",
           "{\"command\": \"getMore\", \"kind\": \"stall\", \"seconds\": 30, \"count\": 100}");
}
static void mongo_hangups(void)
{
    ft_sim(&fx, "POST", "/fault",
           "{\"command\": \"any\", \"kind\": \"hangup\", \"count\": 100000}");
}
static void mongo_errors(void)
{
    ft_sim(&fx, "POST", "/fault",
           "{\"command\": \"any\", \"kind\": \"error\", \"count\": 100000, \"code\": 91, "
           "\"codeName\": \"ShutdownInProgress\", \"errmsg\": \"shutting down\", "
           "\"labels\": [\"ResumableChangeStreamError\"]}");
}
static void webhook_hangs(void)
{
    fx_webhook_script(&hook, "{\"responses\": [{\"hang\": 60}, {\"hang\": 60}, {\"hang\": 60}], \"then\": 200}");
}
static void webhook_fails(void)
{
    fx_webhook_script(&hook, "{\"responses\": [], \"then\": 500}");
}
static void webhook_429(void)
{
    fx_webhook_script(&hook, "{\"responses\": [{\"status\": 429, \"retry_after\": 30}, "
                             "{\"status\": 429, \"retry_after\": 30}, "
                             "{\"status\": 429, \"retry_after\": 30}], \"then\": 429}");
}
/* Its port closed: every delivery is refused. */
static void webhook_refused(void) { fx_webhook_stop(&hook); }
/* Redis away, its data gone: end() brings it back empty. */
static void redis_down_emptied(void)
{
    char aof[PATH_MAX];

    th_redis_stop(&fx.redis);
    cr_assert(th_path(aof, sizeof aof, fx.redis.dir, "appendonlydir"));
    ft_remove_tree(aof);
}

static const outage_t outages[] = {
    {"Redis down 1.5 s", redis_down, redis_back, 1500, 1500 + 1000, false},
    {"Redis paused 3 s", redis_paused, NULL, 0, 3000 + 1000, false},
    {"Redis asleep 2 s", redis_asleep, NULL, 0, 2000 + 1000, false},
    {"Redis out of memory 1.5 s", redis_oom, redis_memory_back, 1500, 1500 + 1000, false},
    {"MongoDB down", mongo_down, NULL, 0, 1500, false},
    {"MongoDB getMore stalled 30 s", mongo_stalled, NULL, 0, 1500, false},
    {"MongoDB hanging up", mongo_hangups, NULL, 0, 1500, false},
    {"MongoDB failing (91, labelled)", mongo_errors, NULL, 0, 1500, false},
    {"webhook hanging", webhook_hangs, NULL, 0, 3000 + 1000, true},
    {"webhook failing (500)", webhook_fails, NULL, 0, 3000 + 1000, true},
    {"webhook 429 (Retry-After: 30)", webhook_429, NULL, 0, 3000 + 1000, true},
    {"webhook refused", webhook_refused, NULL, 0, 3000 + 1000, true},
    {"Redis restarted empty after 1.5 s", redis_down_emptied, redis_back, 1500, 1500 + 1000,
     false},
};

/* Signals, ends the outage after its time (here, not in a thread: a
 * restarted Redis dies with the thread that spawned it), and waits. The
 * milliseconds the stop took, or -1. */
static long long signal_and_end(th_proc_t *p, const outage_t *o, int sig)
{
    long long started = th_now_ms();

    th_proc_signal(p, sig);
    if (o->end) {
        if (th_proc_wait(p, o->end_after_ms))
            return th_now_ms() - started;
        o->end();
    }
    if (th_proc_wait(p, 20000))
        return th_now_ms() - started;
    th_proc_kill(p);
    return -1;
}

/* "t:i" as one number that orders like the pair. */
static unsigned long long ctime_key(const char *text)
{
    const char *colon = strchr(text, ':');

    return (strtoull(text, NULL, 10) << 32) | (colon ? strtoull(colon + 1, NULL, 10) : 0);
}

/* The newest stream entry's cluster_time is covered by the checkpoint's. */
static void expect_checkpoint_covers_stream(void)
{
    redisReply *r = th_redis_cmd(&fx.redis, "XREVRANGE %s + - COUNT 1", FX_STREAM);
    char *ct = fx_checkpoint(&fx, "cluster_time");
    char newest[32] = "";

    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && ct);
    for (size_t f = 0; f + 1 < r->element[0]->element[1]->elements; f += 2)
        if (strcmp(r->element[0]->element[1]->element[f]->str, "cluster_time") == 0)
            snprintf(newest, sizeof newest, "%s", r->element[0]->element[1]->element[f + 1]->str);
    cr_expect(newest[0] && ctime_key(newest) <= ctime_key(ct), "checkpoint %s covers the newest event %s", ct, newest);
    freeReplyObject(r);
    free(ct);
}

/* Follows, starts the outage, signals, and checks how the stop ended. */
static void stop_during(const outage_t *o, int sig)
{
    const char *extra[] = {"--slack-webhook", NULL, NULL};
    th_proc_t p;
    long long took;
    char *err;

    fx_start(&fx, NULL);
    if (o->webhook) {
        fx_webhook_start(&fx, &hook);
        extra[1] = hook.url;
        o->begin(); /* the first start's alert meets it */
    }
    ft_spawn(&fx, &p, o->webhook ? extra : NULL);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "a first checkpoint");
    bson_free(fx_post_events(&fx, 40));
    th_assert_dump(ft_wait_seq(&fx, 40, 10000), p.err_path, "following");
    if (!o->webhook)
        o->begin();
    bson_free(fx_post_events(&fx, 20));
    th_sleep_ms(300);
    took = signal_and_end(&p, o, sig);
    fprintf(stderr, "faults: %s during %s: stopped in %lld ms (limit %d), exit %d\n",
            sig == SIGHUP ? "SIGHUP" : "SIGTERM", o->name, took, o->bound_ms,
            th_proc_exit_code(&p));
    err = th_proc_stderr(&p);
    cr_expect_neq(took, -1, "stops");
    cr_expect_leq(took, o->bound_ms, "%s: stopped in %lld ms", o->name, took);
    cr_expect(strstr(err, "stopping"), "says it is stopping:\n%s", err);
    cr_expect_eq(th_proc_exit_code(&p), 0, "the last checkpoint written:\n%s", err);
    expect_checkpoint_covers_stream();
    free(err);
}

#define STOP_TESTS(id, k)                                                         \
    Test(signals, sigterm_##id) { stop_during(&outages[k], SIGTERM); }             \
    Test(signals, sighup_##id) { stop_during(&outages[k], SIGHUP); }

STOP_TESTS(redis_down, 0)
STOP_TESTS(redis_paused, 1)
STOP_TESTS(redis_asleep, 2)
STOP_TESTS(redis_out_of_memory, 3)
STOP_TESTS(mongo_down, 4)
STOP_TESTS(mongo_stalled, 5)
STOP_TESTS(mongo_hanging_up, 6)
STOP_TESTS(mongo_failing, 7)
STOP_TESTS(webhook_hanging, 8)
STOP_TESTS(webhook_failing, 9)
STOP_TESTS(webhook_429, 10)
STOP_TESTS(webhook_refused, 11)
STOP_TESTS(redis_restarted_empty, 12)

/* Redis stays away (stopped, or killed -9): the 10 s grace, then exit 1
 * saying where the next start resumes; the checkpoint in Redis (from
 * before) still covers the stream. */
static void stop_while_redis_stays_away(const char *name, void (*away)(th_redis_t *), int sig)
{
    th_proc_t p;
    long long took;
    char *err;

    fx_start(&fx, NULL);
    ft_spawn(&fx, &p, NULL);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "a first checkpoint");
    bson_free(fx_post_events(&fx, 40));
    th_assert_dump(ft_wait_seq(&fx, 40, 10000), p.err_path, "following");
    away(&fx.redis);
    bson_free(fx_post_events(&fx, 20));
    th_sleep_ms(300);
    took = ft_stop(&p, sig, 20000);
    fprintf(stderr, "faults: %s while %s: exit %d after %lld ms\n",
            sig == SIGHUP ? "SIGHUP" : "SIGTERM", name, th_proc_exit_code(&p), took);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, "stopping"), "says it is stopping:\n%s", err);
    cr_expect_eq(th_proc_exit_code(&p), 1);
    cr_expect(took >= 9500 && took <= 10000 + 1500, "the 10 s grace: %lld ms", took);
    cr_expect(strstr(err, "the last checkpoint could not be written"), "%s", err);
    cr_expect(strstr(err, "the next start resumes from"), "%s", err);
    cr_assert(th_redis_restart(&fx.redis));
    expect_checkpoint_covers_stream();
    free(err);
}

Test(signals, sigterm_while_redis_stays_away)
{
    stop_while_redis_stays_away("Redis stays away", th_redis_stop, SIGTERM);
}

Test(signals, sighup_while_redis_stays_away)
{
    stop_while_redis_stays_away("Redis stays away", th_redis_stop, SIGHUP);
}

Test(signals, sigterm_while_redis_is_killed)
{
    stop_while_redis_stays_away("Redis killed -9 (away)", th_redis_kill9, SIGTERM);
}

Test(signals, sighup_while_redis_is_killed)
{
    stop_while_redis_stays_away("Redis killed -9 (away)", th_redis_kill9, SIGHUP);
}
