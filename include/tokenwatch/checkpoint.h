/*
 * checkpoint.h - the stored resume position of a stream, in Redis.
 *
 * The record and its encoding are record.h's (no I/O); this module reads
 * and writes it, and is all the Redis I/O there is of it.
 *
 * A commit is atomic and never moves the checkpoint backwards: a Lua script
 * compares the stored cluster time with the new one (at the same time, the
 * tokens' _data, when both have one known layout) and writes only when it
 * does not go back. With the redis sink, the events of the batch are
 * appended by that same script, so events and checkpoint land together:
 * one command, one round trip.
 */
#ifndef TOKENWATCH_CHECKPOINT_H
#define TOKENWATCH_CHECKPOINT_H

#include <hiredis/hiredis.h>
#include <stdbool.h>

#include "tokenwatch/error.h"
#include "tokenwatch/record.h"
#include "tokenwatch/token.h"

/* found is false (and true returned) when the key does not exist. */
bool tw_checkpoint_load(redisContext *c, const char *key, tw_checkpoint_t *out,
                        bool *found, tw_error_t *err);

/*
 * Reads the position a guarded key holds: a checkpoint hash, or a string
 * with a token (JSON or hex) or a SPEC time. found is false (and true
 * returned) when the key does not exist; a value that is none of these
 * fails with TW_ERR_USAGE and the reason, a Redis failure with TW_ERR_REDIS.
 */
bool tw_checkpoint_read_position(redisContext *c, const char *key,
                                 tw_ctime_t *out, bool *found, tw_error_t *err);

/* The record itself is at fault (wrong type, cannot be decoded), not the
 * connection: retrying cannot help. */
bool tw_checkpoint_unusable(const tw_error_t *err);

/* Sends the command tw_record_commit_command builds and reads its reply. */
bool tw_checkpoint_commit(redisContext *c, const tw_commit_t *commit,
                          tw_commit_result_t *result, tw_error_t *err);

/*
 * The same in two steps, so the caller can go on while Redis runs the
 * script (the pipelined commit): _send writes the whole command to the
 * socket (commit's events may be freed after it); _receive reads its reply
 * (and WAIT's) and says what it did. Nothing else may be sent on c in
 * between. A failure of either leaves the outcome unknown: the commit is
 * sent again, which writes nothing twice (the script's checks).
 */
bool tw_checkpoint_commit_send(redisContext *c, const tw_commit_t *commit, tw_error_t *err);
bool tw_checkpoint_commit_receive(redisContext *c, const tw_commit_t *commit,
                                  tw_commit_result_t *result, tw_error_t *err);

#endif
