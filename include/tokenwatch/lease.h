/*
 * lease.h - one writer per --name: a lease in Redis with a fencing epoch.
 *
 * tokenwatch:{NAME}:lease holds the leader's owner id (host:pid:random)
 * with a TTL; tokenwatch:{NAME}:epoch counts takeovers and never expires.
 * A process takes the lease when it is free (the epoch grows by one), and
 * renews it well inside the TTL; a process that finds it held is a standby
 * and polls. Every checkpoint commit carries the writer's epoch, and the
 * commit script refuses one older than the counter (record.h): a leader
 * paused past its TTL, whose successor took over, cannot write when it
 * wakes. Releasing (on a clean stop) hands over at once.
 *
 * Both keys share the {NAME} hash tag with the checkpoint, so the commit
 * script may read the counter on Redis Cluster too.
 */
#ifndef TOKENWATCH_LEASE_H
#define TOKENWATCH_LEASE_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenwatch/error.h"
#include "tokenwatch/record.h"

#define TW_LEASE_OWNER_MAX 128

typedef struct {
    char lease_key[TW_KEY_MAX];
    char epoch_key[TW_KEY_MAX];
    char owner[TW_LEASE_OWNER_MAX]; /* this process */
    int64_t ttl_ms;
} tw_lease_t;

/* What a take or a read found. */
typedef struct {
    bool held;        /* by this process (take) */
    long long epoch;  /* the counter: this process's epoch when held */
    char holder[TW_LEASE_OWNER_MAX]; /* the leader, "" when none */
    int64_t holder_ttl_ms;           /* how long its lease has left; -1 unknown */
} tw_lease_state_t;

/* The keys for name, the owner id (NULL: made from the host, the pid and a
 * random part; one per process: see tw_lease_owner_id), the TTL. */
void tw_lease_init(tw_lease_t *lease, const char *name, const char *owner, int64_t ttl_ms);

/* An owner id for this process: host:pid:random. */
void tw_lease_owner_id(char *out, size_t n);

/* Takes the lease when it is free, renews it when this process holds it
 * (then the epoch is unchanged), else says who holds it. false with err on
 * a Redis failure or a key of the wrong type. */
bool tw_lease_take(redisContext *c, const tw_lease_t *lease, tw_lease_state_t *out,
                   tw_error_t *err);

/* Gives it up if this process holds it (a clean stop: the standby takes over
 * at its next poll). */
bool tw_lease_release(redisContext *c, const tw_lease_t *lease, tw_error_t *err);

/* Who leads name, for status (no writes). */
bool tw_lease_read(redisContext *c, const char *name, tw_lease_state_t *out, tw_error_t *err);

#endif
