/*
 * Redis as it runs in production, part two: a three-master Redis Cluster on
 * loopback (redis-server --cluster-enabled, made with redis-cli --cluster
 * create), tokenwatch given any one node, and the slot of its {NAME} keys
 * moved to another master mid-stream (IMPORTING, MIGRATING, MIGRATE,
 * SETSLOT NODE, as redis-cli --cluster reshard does it): nothing missing.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define NODES 3
#define CHECKPOINT "tokenwatch:{default}:checkpoint"
#define STREAM "tokenwatch:{default}:events"

static fx_t fx;
static th_proc_t node[NODES];
static int port[NODES];

static void teardown(void)
{
    for (int k = 0; k < NODES; k++)
        th_proc_stop(&node[k], 5000);
    fx_stop(&fx);
}

TestSuite(cluster, .fini = teardown, .timeout = 120);

static redisReply *on(int k, const char *fmt, ...)
{
    th_redis_t at;
    redisContext *c;
    redisReply *r;
    va_list ap;

    memset(&at, 0, sizeof at);
    at.port = port[k];
    c = th_redis_connect(&at);
    if (!c)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* A free port whose cluster bus (port + 10000) is a port too. */
static int cluster_port(void)
{
    for (int tries = 0; tries < 1000; tries++) {
        int p = th_free_port();

        if (p > 1024 && p <= 55535)
            return p;
    }
    cr_assert_fail("no free port under 55536");
    return -1;
}

static void start_nodes(void)
{
    const char *create[NODES + 8];
    char addr[NODES][32];
    size_t n = 0;
    char *out = NULL, *err = NULL;

    for (int k = 0; k < NODES; k++) {
        char p[16], conf[64];
        const char *argv[] = {"redis-server", "--port", p, "--bind", "127.0.0.1",
                              "--cluster-enabled", "yes", "--cluster-config-file", conf,
                              "--cluster-node-timeout", "2000", "--save", "",
                              "--appendonly", "no", NULL};

        port[k] = cluster_port();
        snprintf(p, sizeof p, "%d", port[k]);
        snprintf(conf, sizeof conf, "nodes-%d.conf", port[k]);
        cr_assert(th_proc_spawn(&node[k], fx.dir, argv, NULL), "node %d starts", k);
    }
    for (int k = 0; k < NODES; k++)
        for (int tries = 0; tries < 50; tries++) {
            redisReply *r = on(k, "PING");
            bool up = r && r->type == REDIS_REPLY_STATUS;

            if (r)
                freeReplyObject(r);
            if (up)
                break;
            th_sleep_ms(100);
        }
    create[n++] = "redis-cli";
    create[n++] = "--cluster";
    create[n++] = "create";
    for (int k = 0; k < NODES; k++) {
        snprintf(addr[k], sizeof addr[k], "127.0.0.1:%d", port[k]);
        create[n++] = addr[k];
    }
    create[n++] = "--cluster-replicas";
    create[n++] = "0";
    create[n++] = "--cluster-yes";
    create[n] = NULL;
    cr_assert_eq(th_run(fx.dir, create, NULL, 30000, &out, &err), 0, "%s%s", out, err);
    free(out);
    free(err);
}

static bool cluster_ok(void *ctx)
{
    (void)ctx;
    for (int k = 0; k < NODES; k++) {
        redisReply *r = on(k, "CLUSTER INFO");
        bool ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");

        if (r)
            freeReplyObject(r);
        if (!ok)
            return false;
    }
    return true;
}

/* The node (index) that serves slot now, by CLUSTER SLOTS on node 0. */
static int owner_of(long long slot)
{
    redisReply *r = on(0, "CLUSTER SLOTS");
    int owner = -1;

    for (size_t k = 0; r && k < r->elements; k++) {
        redisReply *range = r->element[k];
        if (slot >= range->element[0]->integer && slot <= range->element[1]->integer)
            for (int n = 0; n < NODES; n++)
                if (range->element[2]->element[1]->integer == port[n])
                    owner = n;
    }
    if (r)
        freeReplyObject(r);
    return owner;
}

static char *node_id(int k)
{
    redisReply *r = on(k, "CLUSTER MYID");
    char *id = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;

    if (r)
        freeReplyObject(r);
    return id;
}

typedef struct {
    int at;
    int64_t last;
} seq_wait_t;

/* Every seq 1..last in the stream on node `at`. */
static bool complete_on(void *ctx)
{
    seq_wait_t *w = ctx;

    return fx_stream_complete_at(port[w->at], w->last);
}

static bool has_checkpoint(void *ctx)
{
    redisReply *r = on(*(int *)ctx, "EXISTS %s", CHECKPOINT);
    bool yes = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;

    if (r)
        freeReplyObject(r);
    return yes;
}

/* Moves slot from node src to node dst with its keys. */
static void move_slot(long long slot, int src, int dst)
{
    char *src_id = node_id(src), *dst_id = node_id(dst);
    redisReply *r, *keys;

    cr_assert(src_id && dst_id);
    freeReplyObject(on(dst, "CLUSTER SETSLOT %lld IMPORTING %s", slot, src_id));
    freeReplyObject(on(src, "CLUSTER SETSLOT %lld MIGRATING %s", slot, dst_id));
    bson_free(fx_post_events(&fx, 5)); /* events while the slot moves */
    th_sleep_ms(300);
    keys = on(src, "CLUSTER GETKEYSINSLOT %lld 100", slot);
    cr_assert(keys && keys->type == REDIS_REPLY_ARRAY);
    for (size_t k = 0; k < keys->elements; k++) {
        r = on(src, "MIGRATE 127.0.0.1 %d %s 0 5000", port[dst], keys->element[k]->str);
        cr_assert(r && r->type != REDIS_REPLY_ERROR, "MIGRATE %s: %s", keys->element[k]->str,
                  r ? r->str : "no reply");
        freeReplyObject(r);
    }
    freeReplyObject(keys);
    for (int k = 0; k < NODES; k++)
        freeReplyObject(on(k, "CLUSTER SETSLOT %lld NODE %s", slot, dst_id));
    free(src_id);
    free(dst_id);
}

Test(cluster, the_slot_resharded_mid_stream_loses_nothing)
{
    char url[64];
    const char *extra[] = {"--sink", "redis", "--checkpoint-every", "5", "--redis-url", url,
                           NULL};
    th_proc_t p;
    redisReply *r;
    long long slot;
    int src, dst;
    seq_wait_t done;
    char *err;

    fx_start(&fx, "{\"rate\": 0}");
    start_nodes();
    cr_assert(th_wait_until(cluster_ok, NULL, 20000), "the cluster is up");
    r = on(0, "CLUSTER KEYSLOT %s", CHECKPOINT);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER);
    slot = r->integer;
    freeReplyObject(r);
    src = owner_of(slot);
    cr_assert_geq(src, 0);
    dst = (src + 1) % NODES;
    /* Any node will do: tokenwatch finds the slot's owner. */
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port[(src + 2) % NODES]);
    fx_spawn(&fx, &p, extra);
    th_assert_dump(th_wait_until(has_checkpoint, &src, 10000), p.err_path,
                   "a first checkpoint, on the slot's owner");
    bson_free(fx_post_events(&fx, 20));
    done = (seq_wait_t){src, 20};
    th_assert_dump(th_wait_until(complete_on, &done, 15000), p.err_path,
                   "20 events on the slot's owner");
    move_slot(slot, src, dst);
    cr_expect_eq(owner_of(slot), dst, "the slot moved");
    bson_free(fx_post_events(&fx, 15));
    done = (seq_wait_t){dst, 40};
    th_assert_dump(th_wait_until(complete_on, &done, 30000), p.err_path,
                   "every seq 1..40 on the new owner");
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 15000));
    err = th_proc_stderr(&p);
    cr_expect_eq(th_proc_exit_code(&p), 0, "%s", err);
    /* It met the move (TRYAGAIN or ASK while the slot moved, MOVED after)
     * and rode it out. */
    cr_expect(strstr(err, "TRYAGAIN") || strstr(err, "ASK ") || strstr(err, "MOVED "),
              "met the reshard:\n%s", err);
    cr_expect(strstr(err, "Redis available again"), "%s", err);
    {
        const char *line = strstr(err, "Redis unavailable");
        cr_log_info("cluster: %.*s", line ? (int)strcspn(line, "\n") : 4, line ? line : "none");
    }
    r = on(dst, "HGET %s events", CHECKPOINT);
    cr_expect(r && r->type == REDIS_REPLY_STRING && atoll(r->str) == 40,
              "the checkpoint on the new owner counts 40 events: %s\n%s",
              r && r->type == REDIS_REPLY_STRING ? r->str : "(none)", err);
    if (r)
        freeReplyObject(r);
    free(err);
}

/* A stream key outside the name's hash tag cannot go in one commit with the
 * checkpoint on a cluster: a clear error, exit 2, nothing written. */
Test(cluster, a_stream_key_outside_the_hash_tag_is_exit_2)
{
    char url[64];
    const char *extra[] = {"--sink", "redis", "--stream-key", "events", "--redis-url", url,
                           "--checkpoint-every", "1", NULL};
    th_proc_t p;
    char *err;

    fx_start(&fx, "{\"rate\": 0}");
    start_nodes();
    cr_assert(th_wait_until(cluster_ok, NULL, 20000), "the cluster is up");
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port[0]);
    fx_spawn(&fx, &p, extra);
    th_sleep_ms(1000);
    bson_free(fx_post_events(&fx, 3));
    th_assert_dump(th_proc_wait(&p, 15000), p.err_path, "stops");
    err = th_proc_stderr(&p);
    cr_expect_eq(th_proc_exit_code(&p), 2, "%s", err);
    cr_expect(strstr(err, "share one hash tag"), "%s", err);
    free(err);
}
