/*
 * window.h - the one reader of a deployment's history window, for the
 * follower and the guard alike: on a replica set its oplog; on a sharded
 * cluster (mongos) every shard's, the window being the edge shard's (the
 * one that keeps least), when the reader is told to reach the shards;
 * else the router's. And the deployment's time: the newest entry read,
 * else a ping's operationTime, else (said once) the local clock.
 *
 * The guard reads the shards (with --shard-uri where a shard needs its
 * own). The follower reads through the router: the start it needs is one
 * the router accepts, and where the router refuses local.oplog.rs it finds
 * that start by probing (follower_start.c).
 *
 * The client is lent per call (each thread keeps its own); the reader
 * keeps what it learnt: the topology, the shards, whether it said the local
 * clock stands in.
 */
#ifndef TOKENWATCH_WINDOW_H
#define TOKENWATCH_WINDOW_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenwatch/error.h"
#include "tokenwatch/oplog.h"
#include "tokenwatch/shards.h"
#include "tokenwatch/token.h"

typedef struct {
    bool read_shards;         /* on mongos, read each shard's oplog */
    const char *mongo_uri;    /* the router's: shard URIs borrow its credentials */
    char *const *shard_uri;   /* NAME=URI overrides (borrowed) */
    size_t shard_uri_count;
    const char *who;          /* log lines' prefix: "guard: " or "" */
} tw_window_opts_t;

typedef struct {
    tw_window_opts_t opts;
    bool topology_known;
    bool sharded;
    bool rediscover; /* a shard failed: list them again next read */
    tw_shards_t shards;
    bool told_local_clock;
} tw_window_reader_t;

void tw_window_reader_init(tw_window_reader_t *r, const tw_window_opts_t *opts);
void tw_window_reader_release(tw_window_reader_t *r);

/* The window, and the newest entry's time (the edge's newest may be older
 * than another shard's: *newest is the newest of all). */
bool tw_window_read(tw_window_reader_t *r, mongoc_client_t *client, tw_oplog_window_t *w,
                    tw_ctime_t *newest, tw_error_t *err);

/* The deployment's time now: newest when known (t != 0), else a ping's
 * operationTime, else the local clock at now_wall_ms (said once, at WARN);
 * *from_server says which. client may be NULL. */
tw_ctime_t tw_window_cluster_time(tw_window_reader_t *r, mongoc_client_t *client,
                                  tw_ctime_t newest, int64_t now_wall_ms, bool *from_server);

/* Whether the deployment is a sharded cluster (once a read has told). */
bool tw_window_sharded(const tw_window_reader_t *r);

/* The shards and their windows, or NULL when not read. Borrowed. */
const tw_shards_t *tw_window_shards(const tw_window_reader_t *r);

#endif
