#include "tokenwatch/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/spec.h"

/* The key's type: true with "none", "hash", ... in type (capped). */
static bool key_type(redisContext *c, const char *key, char *type, size_t size,
                     tw_error_t *err)
{
    redisReply *reply = tw_redis_command(c, err, "TYPE %s", key);

    if (!reply)
        return false;
    snprintf(type, size, "%s", reply->type == REDIS_REPLY_STATUS ? reply->str : "?");
    freeReplyObject(reply);
    return true;
}

bool tw_checkpoint_load(redisContext *c, const char *key, tw_checkpoint_t *out,
                        bool *found, tw_error_t *err)
{
    redisReply *reply;
    const char **names = NULL, **values = NULL;
    size_t pairs;
    bool ok = false;
    char type[32];

    *found = false;
    tw_checkpoint_init(out);
    if (!key_type(c, key, type, sizeof type, err))
        return false;
    if (strcmp(type, "none") == 0)
        return true;
    if (strcmp(type, "hash") != 0) {
        tw_error_set(err, TW_ERR_REDIS, TW_CHECKPOINT_WRONG_TYPE,
                     "%s holds a %s, not a checkpoint hash", key, type);
        return false;
    }
    reply = tw_redis_command(c, err, "HGETALL %s", key);
    if (!reply)
        return false;
    if (reply->type != REDIS_REPLY_ARRAY) {
        tw_error_set(err, TW_ERR_REDIS, 0, "%s is not a hash", key);
        goto out_free_reply;
    }
    if (reply->elements == 0) {
        ok = true;
        goto out_free_reply;
    }
    pairs = reply->elements / 2;
    names = tw_calloc(pairs, sizeof *names);
    values = tw_calloc(pairs, sizeof *values);
    for (size_t k = 0; k < pairs; k++) {
        names[k] = reply->element[2 * k]->str;
        values[k] = reply->element[2 * k + 1]->str;
    }
    if (!tw_record_decode(names, values, pairs, out, err)) {
        tw_error_prefix(err, "%s", key);
        err->domain = TW_ERR_REDIS;
        err->code = TW_CHECKPOINT_UNUSABLE;
        goto out_free_arrays;
    }
    *found = true;
    ok = true;
out_free_arrays:
    free(names);
    free(values);
out_free_reply:
    freeReplyObject(reply);
    return ok;
}

bool tw_checkpoint_read_position(redisContext *c, const char *key,
                                 tw_ctime_t *out, bool *found, tw_error_t *err)
{
    redisReply *type = tw_redis_command(c, err, "TYPE %s", key);
    redisReply *value = NULL;
    bool ok = false;

    *found = false;
    if (!type)
        return false;
    if (strcmp(type->str, "none") == 0) {
        ok = true;
    } else if (strcmp(type->str, "hash") == 0) {
        tw_checkpoint_t cp;
        ok = tw_checkpoint_load(c, key, &cp, found, err);
        if (ok && *found && cp.time_source == TW_TIME_UNKNOWN) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "%s holds a token of no known layout and no "
                         "cluster_time, so its age is unknown",
                         key);
            ok = false;
        } else if (ok && *found) {
            *out = cp.cluster_time;
        }
        tw_checkpoint_release(&cp);
    } else if (strcmp(type->str, "string") == 0) {
        tw_spec_t spec;

        value = tw_redis_command(c, err, "GET %s", key);
        if (!value)
            goto out;
        *found = true;
        if (value->type != REDIS_REPLY_STRING || !tw_spec_parse(value->str, &spec, NULL) ||
            (spec.kind != TW_SPEC_TOKEN && spec.kind != TW_SPEC_TIME)) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "%s holds neither a resume token nor a cluster time",
                         key);
            goto out;
        }
        *out = spec.time;
        tw_spec_clear(&spec);
        ok = true;
    } else {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "%s is a %s, not a checkpoint hash or a token string",
                     key, type->str);
    }
out:
    freeReplyObject(value);
    freeReplyObject(type);
    return ok;
}

/* Sends the EVAL of the commit script (with the batch's events) as built. */
static bool send_command(redisContext *c, const tw_record_command_t *cmd, tw_error_t *err)
{
    if (redisAppendCommandArgv(c, (int)cmd->argc, cmd->argv, NULL) != REDIS_OK) {
        tw_error_set(err, TW_ERR_REDIS, 0, "redis: the commit could not be sent");
        return false;
    }
    return true;
}

static bool read_reply(redisContext *c, redisReply **out, tw_error_t *err)
{
    void *reply = NULL;

    if (redisGetReply(c, &reply) != REDIS_OK || !reply) {
        tw_redis_error_from_context(c, err, "redis");
        return false;
    }
    *out = reply;
    return true;
}

/* WAIT for the replicas a commit must reach (commit->wait_replicas > 0). */
static bool send_wait(redisContext *c, const tw_commit_t *commit, tw_error_t *err)
{
    if (commit->wait_replicas <= 0)
        return true;
    if (redisAppendCommand(c, "WAIT %d %d", commit->wait_replicas,
                           commit->wait_timeout_ms) != REDIS_OK) {
        tw_error_set(err, TW_ERR_REDIS, 0, "redis: the WAIT could not be sent");
        return false;
    }
    return true;
}

/* WAIT's answer: how many replicas have the commit. Read even when the
 * script failed (the reply is on the wire); fails when too few have it. */
static bool read_wait(redisContext *c, const tw_commit_t *commit, bool written,
                      tw_error_t *err)
{
    redisReply *reply = NULL;
    tw_error_t werr;
    bool ok;

    if (commit->wait_replicas <= 0)
        return true;
    if (!read_reply(c, &reply, written ? err : &werr))
        return false;
    ok = reply->type == REDIS_REPLY_INTEGER && reply->integer >= commit->wait_replicas;
    if (!ok && written)
        tw_error_set(err, TW_ERR_REDIS, TW_CHECKPOINT_UNREPLICATED,
                     "the commit reached %lld of the %d replicas --redis-wait-replicas "
                     "asks for within %d ms",
                     reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0LL,
                     commit->wait_replicas, commit->wait_timeout_ms);
    freeReplyObject(reply);
    return ok;
}

/* The reply's shape is checked here; what it says, by the record module. */
static bool script_result(const redisReply *r, tw_commit_result_t *result,
                          tw_error_t *err)
{
    const char *text = NULL;

    if (r->type == REDIS_REPLY_ERROR) {
        tw_record_commit_error(r->str, err);
        return false;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        tw_error_set(err, TW_ERR_REDIS, 0, "checkpoint script: unexpected reply");
        return false;
    }
    if (r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING)
        text = r->element[1]->str;
    tw_record_commit_reply(r->element[0]->integer, text, result);
    return true;
}

bool tw_checkpoint_unusable(const tw_error_t *err)
{
    return err->domain != TW_ERR_REDIS || err->code == TW_CHECKPOINT_WRONG_TYPE ||
           err->code == TW_CHECKPOINT_UNUSABLE || err->code == TW_REDIS_REPLY_ERROR;
}

/* Writes what hiredis holds for c to the socket, whole. */
static bool write_out(redisContext *c, tw_error_t *err)
{
    int done = 0;

    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            tw_redis_error_from_context(c, err, "redis");
            return false;
        }
    return true;
}

bool tw_checkpoint_commit_send(redisContext *c, const tw_commit_t *commit, tw_error_t *err)
{
    tw_record_command_t cmd;
    bool ok;

    if (!tw_record_commit_command(commit, &cmd, err))
        return false;
    /* One command, one round trip: the script appends the events too
     * (and WAIT, when asked, goes in the same round trip). hiredis copies
     * the arguments: the events may go once written. */
    ok = send_command(c, &cmd, err) && send_wait(c, commit, err) && write_out(c, err);
    tw_record_command_release(&cmd);
    return ok;
}

bool tw_checkpoint_commit_receive(redisContext *c, const tw_commit_t *commit,
                                  tw_commit_result_t *result, tw_error_t *err)
{
    redisReply *reply = NULL;
    bool ok;

    memset(result, 0, sizeof *result);
    if (!read_reply(c, &reply, err))
        return false;
    ok = script_result(reply, result, err);
    freeReplyObject(reply);
    return read_wait(c, commit, ok, err) && ok;
}

bool tw_checkpoint_commit(redisContext *c, const tw_commit_t *commit,
                          tw_commit_result_t *result, tw_error_t *err)
{
    memset(result, 0, sizeof *result);
    return tw_checkpoint_commit_send(c, commit, err) &&
           tw_checkpoint_commit_receive(c, commit, result, err);
}
