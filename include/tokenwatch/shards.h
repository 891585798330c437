/*
 * shards.h - the oplog windows of a sharded cluster.
 *
 * mongos refuses `local` (error 20) and each shard keeps its own oplog, so
 * the window that matters is the shard whose history begins latest: a
 * token falls out of that one first (mongos answers 286 when any shard has
 * lost it). The shards come from listShards ("rs/host1,host2"); each is
 * reached as its replica set with the router URI's credentials and
 * options, or with a URI of its own (--shard-uri NAME=URI).
 *
 * The text helpers are pure; discovery and probing are thin I/O.
 */
#ifndef TOKENWATCH_SHARDS_H
#define TOKENWATCH_SHARDS_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/error.h"
#include "tokenwatch/oplog.h"

#define TW_SHARD_NAME_MAX 128
#define TW_SHARD_HOSTS_MAX 512
/* More shards than this are not read (their windows are not guarded). */
#define TW_SHARDS_MAX 64

typedef struct {
    char name[TW_SHARD_NAME_MAX];
    char hosts[TW_SHARD_HOSTS_MAX]; /* for messages: no credentials */
    bool overridden;                /* reached with --shard-uri */
    mongoc_client_t *client;
    bool readable;
    tw_oplog_window_t window;
    tw_error_t error;
} tw_shard_t;

typedef struct {
    tw_shard_t *shards;
    size_t count;
    size_t edge; /* the shard whose window drives the guard */
    bool has_edge;
} tw_shards_t;

/* Splits listShards' host "rs/h1:p,h2:p" into the set name and the hosts;
 * a host without "rs/" (a standalone shard) has no set name. */
bool tw_shard_host_split(const char *host, char *set_name, size_t set_size,
                         char *hosts, size_t hosts_size, tw_error_t *err);

/* The URI of a shard: its hosts and set name, with the router URI's
 * credentials and options (replicaSet aside). Free with mongoc_uri_destroy. */
mongoc_uri_t *tw_shard_uri(const char *router_uri, const char *set_name, const char *hosts,
                           tw_error_t *err);

/* The override for NAME in a list of "NAME=URI", or NULL. */
const char *tw_shard_override(const char *const *overrides, size_t count, const char *name);

/* The shard whose oldest entry is newest (ties: the smaller window), among
 * readable ones; false when none is. */
bool tw_shards_edge(const tw_shard_t *shards, size_t count, size_t *edge);

/* Whether the client is connected to mongos (hello's msg "isdbgrid"). */
bool tw_shards_is_router(mongoc_client_t *router, bool *is_router, tw_error_t *err);

/* Lists the shards through the router and makes a client for each. With
 * overrides, a shard listShards does not name is read too; when listShards
 * is refused, the overrides alone are used. */
bool tw_shards_discover(mongoc_client_t *router, const char *router_uri,
                        const char *const *overrides, size_t override_count,
                        tw_shards_t *out, tw_error_t *err);

/*
 * Reads every shard's window. True when all could be read: *edge is then
 * the edge shard's window. *newest is raised to the newest entry of any
 * readable shard (the cluster's time; start it at {0, 0}). Otherwise err
 * names the shards that could not be read.
 */
bool tw_shards_probe(tw_shards_t *s, tw_oplog_window_t *edge, tw_ctime_t *newest,
                     tw_error_t *err);

/* Closes the shards' clients and empties s, ready for reuse. NULL ok. */
void tw_shards_release(tw_shards_t *s);

#endif
