#include "tokenwatch/lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenwatch/redis.h"

/*
 * KEYS: the lease, the epoch counter. ARGV: the owner, the TTL (ms).
 * {1, epoch}: this owner holds it (taken now, or renewed); {0, holder,
 * pttl, epoch}: another does.
 */
static const char take_script[] =
    "for _, k in ipairs(KEYS) do\n"
    "  local t = redis.call('TYPE', k)['ok']\n"
    "  if t ~= 'string' and t ~= 'none' then\n"
    "    return redis.error_reply('TWTYPE ' .. k .. ' holds a ' .. t .. ', not a string')\n"
    "  end\n"
    "end\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return {1, redis.call('GET', KEYS[2]) or '0'}\n"
    "end\n"
    "if cur then\n"
    "  return {0, cur, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or '0'}\n"
    "end\n"
    "local e = redis.call('INCR', KEYS[2])\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return {1, tostring(e)}\n";

static const char release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

void tw_lease_owner_id(char *out, size_t n)
{
    char host[64] = "";
    struct timespec ts;

    gethostname(host, sizeof host - 1);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(out, n, "%s:%ld:%04lx", host[0] ? host : "localhost", (long)getpid(),
             (unsigned long)((ts.tv_nsec ^ (long)getpid()) & 0xffff));
}

void tw_lease_init(tw_lease_t *lease, const char *name, const char *owner, int64_t ttl_ms)
{
    memset(lease, 0, sizeof *lease);
    tw_checkpoint_key(name, "lease", lease->lease_key);
    tw_checkpoint_key(name, "epoch", lease->epoch_key);
    if (owner)
        snprintf(lease->owner, sizeof lease->owner, "%s", owner);
    else
        tw_lease_owner_id(lease->owner, sizeof lease->owner);
    lease->ttl_ms = ttl_ms;
}

/* A value from Redis, fit to print: control bytes as '?'. */
static void copy_text(char *out, size_t n, const redisReply *r)
{
    snprintf(out, n, "%.*s", r && r->type == REDIS_REPLY_STRING ? (int)r->len : 0,
             r && r->type == REDIS_REPLY_STRING ? r->str : "");
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

bool tw_lease_take(redisContext *c, const tw_lease_t *lease, tw_lease_state_t *out,
                   tw_error_t *err)
{
    redisReply *r;
    bool ok = false;

    memset(out, 0, sizeof *out);
    out->holder_ttl_ms = -1;
    r = tw_redis_command(c, err, "EVAL %s 2 %s %s %s %lld", take_script, lease->lease_key,
                         lease->epoch_key, lease->owner, (long long)lease->ttl_ms);
    if (!r)
        return false;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        tw_error_set(err, TW_ERR_REDIS, TW_REDIS_REPLY_ERROR, "the lease script answered "
                     "something else than expected");
        goto out;
    }
    out->held = r->element[0]->integer == 1;
    if (out->held) {
        char epoch[32];

        copy_text(epoch, sizeof epoch, r->element[1]);
        out->epoch = strtoll(epoch, NULL, 10);
        snprintf(out->holder, sizeof out->holder, "%s", lease->owner);
    } else {
        copy_text(out->holder, sizeof out->holder, r->element[1]);
        if (r->elements > 2 && r->element[2]->type == REDIS_REPLY_INTEGER)
            out->holder_ttl_ms = r->element[2]->integer;
        if (r->elements > 3) {
            char epoch[32];

            copy_text(epoch, sizeof epoch, r->element[3]);
            out->epoch = strtoll(epoch, NULL, 10);
        }
    }
    ok = true;
out:
    freeReplyObject(r);
    return ok;
}

bool tw_lease_release(redisContext *c, const tw_lease_t *lease, tw_error_t *err)
{
    redisReply *r = tw_redis_command(c, err, "EVAL %s 1 %s %s", release_script,
                                     lease->lease_key, lease->owner);
    bool ok = r != NULL;

    freeReplyObject(r);
    return ok;
}

bool tw_lease_read(redisContext *c, const char *name, tw_lease_state_t *out, tw_error_t *err)
{
    tw_lease_t keys;
    redisReply *r;
    char epoch[32];

    memset(out, 0, sizeof *out);
    out->holder_ttl_ms = -1;
    tw_lease_init(&keys, name, "", 0);
    r = tw_redis_command(c, err, "MGET %s %s", keys.lease_key, keys.epoch_key);
    if (!r)
        return false;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        copy_text(out->holder, sizeof out->holder, r->element[0]);
        copy_text(epoch, sizeof epoch, r->element[1]);
        out->epoch = strtoll(epoch, NULL, 10);
    }
    freeReplyObject(r);
    if (!out->holder[0])
        return true;
    r = tw_redis_command(c, err, "PTTL %s", keys.lease_key);
    if (!r)
        return false;
    if (r->type == REDIS_REPLY_INTEGER)
        out->holder_ttl_ms = r->integer;
    freeReplyObject(r);
    return true;
}
