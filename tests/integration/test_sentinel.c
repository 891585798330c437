/*
 * Redis as it runs in production, part one: a master, a replica and three
 * sentinels on loopback (redis-server in sentinel mode), tokenwatch given
 * redis-sentinel://s1,s2,s3/0#mymaster, and SENTINEL FAILOVER mid-stream:
 * nothing missing from the stream on the new master, whose checkpoint is
 * never behind what was committed.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define SENTINELS 3

static fx_t fx;
static th_redis_t replica;
static th_proc_t sentinel[SENTINELS];
static int sentinel_port[SENTINELS];

static void teardown(void)
{
    for (int k = 0; k < SENTINELS; k++)
        th_proc_stop(&sentinel[k], 5000);
    th_redis_stop(&replica);
    fx_stop(&fx);
}

TestSuite(sentinel, .fini = teardown, .timeout = 120);

static redisReply *ask(int port, const char *fmt, const char *arg)
{
    th_redis_t at;

    memset(&at, 0, sizeof at);
    at.port = port;
    return th_redis_cmd(&at, fmt, arg);
}

static void start_sentinels(void)
{
    for (int k = 0; k < SENTINELS; k++) {
        char conf[PATH_MAX], text[PATH_MAX + 512], name[32];
        const char *argv[] = {"redis-server", conf, "--sentinel", NULL};

        sentinel_port[k] = th_free_port();
        snprintf(name, sizeof name, "sentinel-%d.conf", k);
        cr_assert(th_path(conf, sizeof conf, fx.dir, name));
        snprintf(text, sizeof text,
                 "port %d\nbind 127.0.0.1\ndir %s\n"
                 "sentinel monitor mymaster 127.0.0.1 %d 2\n"
                 "sentinel down-after-milliseconds mymaster 2000\n"
                 "sentinel failover-timeout mymaster 10000\n",
                 sentinel_port[k], fx.dir, fx.redis.port);
        cr_assert(th_write_file(conf, text, strlen(text)));
        cr_assert(th_proc_spawn(&sentinel[k], fx.dir, argv, NULL), "sentinel %d starts", k);
    }
}

typedef struct {
    int port;
    int want_port;
} master_wait_t;

/* The sentinel names want_port as the master and knows its replica. */
static bool master_is(void *ctx)
{
    master_wait_t *w = ctx;
    redisReply *r = ask(w->port, "SENTINEL get-master-addr-by-name %s", "mymaster");
    bool yes = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               atoi(r->element[1]->str) == w->want_port;

    if (r)
        freeReplyObject(r);
    if (!yes)
        return false;
    r = ask(w->port, "SENTINEL replicas %s", "mymaster");
    yes = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1;
    if (r)
        freeReplyObject(r);
    return yes;
}

static bool replica_synced(void *ctx)
{
    char *info = NULL;
    redisReply *r = th_redis_cmd(ctx, "INFO replication");
    bool yes = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up");

    (void)info;
    if (r)
        freeReplyObject(r);
    return yes;
}

typedef struct {
    th_redis_t *at;
    int64_t last;
} seq_wait_t;

/* Every seq 1..last in the stream on `at`. */
static bool complete_on(void *ctx)
{
    seq_wait_t *w = ctx;

    return fx_stream_complete_at(w->at->port, w->last);
}

Test(sentinel, a_failover_mid_stream_loses_nothing)
{
    static const char *const base[] = {"--sink", "redis", "--checkpoint-every", "5", NULL};
    char url[256];
    const char *extra[10];
    th_proc_t p;
    master_wait_t to_replica;
    seq_wait_t done = {&replica, 40};
    char *ct_before, *ct_after, *err;
    redisReply *r;

    fx_start(&fx, "{\"rate\": 0}");
    cr_assert(th_redis_start(&replica, fx.dir, false));
    r = th_redis_cmd(&replica, "REPLICAOF 127.0.0.1 %d", fx.redis.port);
    cr_assert(r && r->type != REDIS_REPLY_ERROR);
    freeReplyObject(r);
    cr_assert(th_wait_until(replica_synced, &replica, 10000), "the replica syncs");
    start_sentinels();
    to_replica = (master_wait_t){sentinel_port[0], fx.redis.port};
    cr_assert(th_wait_until(master_is, &to_replica, 20000), "the sentinels see both");
    snprintf(url, sizeof url, "redis-sentinel://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/0#mymaster",
             sentinel_port[0], sentinel_port[1], sentinel_port[2]);
    for (int k = 0; base[k]; k++)
        extra[k] = base[k];
    extra[4] = "--redis-url";
    extra[5] = url;
    /* Without it a failover can take back what the old master took last
     * (replication is asynchronous): the README says so. */
    extra[6] = "--redis-wait-replicas";
    extra[7] = "1";
    extra[8] = NULL;
    /* The fixture's own --redis-url comes first; this one wins. */
    fx_spawn(&fx, &p, extra);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "follows through the sentinels");
    bson_free(fx_post_events(&fx, 20));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 20, 10000), p.err_path, "20 events");
    ct_before = fx_checkpoint(&fx, "cluster_time");
    r = ask(sentinel_port[0], "SENTINEL FAILOVER %s", "mymaster");
    cr_assert(r && r->type != REDIS_REPLY_ERROR, "%s", r ? r->str : "no reply");
    freeReplyObject(r);
    to_replica.want_port = replica.port;
    cr_assert(th_wait_until(master_is, &to_replica, 30000), "the replica is promoted");
    bson_free(fx_post_events(&fx, 20));
    th_assert_dump(th_wait_until(complete_on, &done, 30000), p.err_path,
                   "every seq 1..40 in the stream on the new master");
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 15000));
    err = th_proc_stderr(&p);
    cr_expect_eq(th_proc_exit_code(&p), 0, "%s", err);
    ct_after = th_redis_hget(&replica, "tokenwatch:{default}:checkpoint", "cluster_time");
    cr_assert_not_null(ct_after, "the new master holds the checkpoint");
    cr_expect(strtoull(ct_after, NULL, 10) >= strtoull(ct_before, NULL, 10),
              "never behind what was committed: %s, then %s", ct_before, ct_after);
    /* The old master turned replica refused the next write: an outage of
     * one commit, ridden out by asking the sentinels again. */
    cr_expect(strstr(err, "Redis available again"), "the failover was ridden out:\n%s", err);
    {
        const char *line = strstr(err, "Redis unavailable");
        cr_log_info("sentinel: %.*s", line ? (int)strcspn(line, "\n") : 4,
                    line ? line : "none");
    }
    free(err);
    free(ct_before);
    free(ct_after);
}
