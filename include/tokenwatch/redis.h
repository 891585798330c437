/*
 * redis.h - connecting to Redis: the URL, the password, timeouts.
 *
 * A hiredis context belongs to one thread, and after any error it is dead:
 * free it and connect again (hiredis's own rule).
 */
#ifndef TOKENWATCH_REDIS_H
#define TOKENWATCH_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>

#include "tokenwatch/error.h"

typedef struct {
    char *host;      /* NULL for a unix socket */
    int port;
    char *socket;    /* unix socket path, or NULL */
    char *user;      /* Redis 6 ACL user, or NULL */
    char *password;  /* or NULL; zeroed before it is freed */
    int db;
    /* Sentinel: the master is asked of these, by name (host is NULL). */
    char **sentinel_host;
    int *sentinel_port;
    size_t sentinel_count;
    char *master_name;
} tw_redis_url_t;

#define TW_REDIS_SENTINELS_MAX 16

/*
 * redis://[[user]:password@]host[:port][/db] or unix:///path.sock[?db=N]
 * (a socket's password comes from the password file), or Redis Sentinel as
 * Lettuce writes it: redis-sentinel://[[user]:password@]h1[:26379],h2[:26379]
 * [/db]#MASTER (up to TW_REDIS_SENTINELS_MAX sentinels; the password is the
 * master's, the sentinels are asked without one).
 * rediss:// is refused: hiredis 0.14 has no TLS. Errors never quote the
 * password. out is always safe to release.
 */
bool tw_redis_url_parse(const char *text, tw_redis_url_t *out,
                        tw_error_t *err);

void tw_redis_url_release(tw_redis_url_t *url);

/* The URL with password (borrowed, may be NULL: the URL's own) in place of
 * the URL's own; the settings read it from --redis-password-file. A user
 * without any password is refused. */
bool tw_redis_url_load(const char *text, const char *password,
                       tw_redis_url_t *out, tw_error_t *err);

/*
 * Connects, authenticates and selects the database, with timeout_ms for the
 * connect and for every command after. Through Sentinel: asks each sentinel
 * in turn for the master's address and connects there, refusing a node
 * whose ROLE is not master (a failover under way): every reconnect after a
 * failover finds the new master. Returns NULL and fills err on failure.
 */
redisContext *tw_redis_connect(const tw_redis_url_t *url, int timeout_ms,
                               tw_error_t *err);

/*
 * The same, for the node that serves key: on Redis Cluster (a node that
 * answers CLUSTER KEYSLOT) the connection goes to the owner of key's slot,
 * as CLUSTER SLOTS says now; elsewhere it is tw_redis_connect's. A name's
 * keys share its {NAME} hash tag, so one slot, one node, serves them all;
 * after a reshard a command answers MOVED (or ASK while the slot moves),
 * which fails it, and the reconnect finds the new owner.
 */
redisContext *tw_redis_connect_for(const tw_redis_url_t *url, const char *key, int timeout_ms,
                                   tw_error_t *err);

/* Whether a command failed because its key's slot is served elsewhere
 * (Redis Cluster's MOVED, or ASK while the slot moves). */
bool tw_redis_moved(const tw_error_t *err);

/* err->code of an error reply from Redis (others are hiredis I/O codes). */
#define TW_REDIS_REPLY_ERROR 1000

/*
 * Runs a command and checks the reply is not an error. On failure the reply
 * is freed, err says what Redis said, and the context should be dropped.
 */
redisReply *tw_redis_command(redisContext *c, tw_error_t *err,
                             const char *fmt, ...);

/* The text of a context's I/O error, or of an error reply. */
void tw_redis_error_from_context(const redisContext *c, tw_error_t *err,
                                 const char *what);

#endif
