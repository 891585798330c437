/*
 * checkpoint.h - the stored resume position of a stream, in Redis.
 *
 * tokenwatch:{NAME}:checkpoint is a hash: token (the resume token as JSON,
 * byte for byte as the server sent it), cluster_time (T:I), time_source
 * (where that time came from: event, token, operation, local), layout (the
 * token's: mongodb, documentdb, opaque), wall_ms (the cluster time in Unix
 * ms), updated_ms, events (count so far), source (event, pbrt, invalidate,
 * ...), scope (what the token belongs to).
 *
 * A commit is atomic and never moves the checkpoint backwards: a Lua script
 * compares the stored cluster time with the new one (at the same time, the
 * tokens' _data, when both have one known layout) and writes only when it
 * does not go back. With the redis sink, the events of
 * the batch and the checkpoint covering them go in one MULTI/EXEC, sent as
 * one pipeline.
 */
#ifndef TOKENWATCH_CHECKPOINT_H
#define TOKENWATCH_CHECKPOINT_H

#include <bson/bson.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/error.h"
#include "tokenwatch/sink.h"
#include "tokenwatch/token.h"

#define TW_KEY_MAX 256
#define TW_SOURCE_MAX 16

/* The history keeps this many earlier checkpoints, newest first: one before
 * every manual change, fallback or rollback, and one every few minutes. */
#define TW_HISTORY_MAX 100
#define TW_HISTORY_EVERY_MS (5 * 60 * 1000)
#define TW_GAPS_MAX 1000
#define TW_STR_(x) #x
#define TW_STR(x) TW_STR_(x)

typedef struct {
    bson_t token;
    bool has_token;
    tw_ctime_t cluster_time;
    tw_time_source_t time_source;
    tw_token_layout_t layout;
    int64_t wall_ms;
    int64_t updated_ms;
    int64_t events;
    char source[TW_SOURCE_MAX];
    char *scope; /* NULL: the record names no scope */
} tw_checkpoint_t;

void tw_checkpoint_init(tw_checkpoint_t *cp);
void tw_checkpoint_release(tw_checkpoint_t *cp);

/* Replaces cp's token with a copy of token and sets the cluster time from
 * its layout; fails for an opaque token (use tw_checkpoint_set_position). */
bool tw_checkpoint_set_token(tw_checkpoint_t *cp, const bson_t *token,
                             tw_error_t *err);

/* Replaces cp's token with a copy of token, at cluster time ct from source. */
void tw_checkpoint_set_position(tw_checkpoint_t *cp, const bson_t *token,
                                tw_ctime_t ct, tw_time_source_t source);

/* Copies src's position (token, time, its source, layout) into dst. */
void tw_checkpoint_copy_position(tw_checkpoint_t *dst, const tw_checkpoint_t *src);

/* "tokenwatch:{NAME}:<what>" */
void tw_checkpoint_key(const char *name, const char *what,
                       char out[TW_KEY_MAX]);

#define TW_CHECKPOINT_FIELDS 9

/* The hash fields of a record, in a fixed order; values are owned by fields. */
typedef struct {
    const char *names[TW_CHECKPOINT_FIELDS];
    char *values[TW_CHECKPOINT_FIELDS];
} tw_checkpoint_fields_t;

bool tw_checkpoint_encode(const tw_checkpoint_t *cp,
                          tw_checkpoint_fields_t *out, tw_error_t *err);
void tw_checkpoint_fields_release(tw_checkpoint_fields_t *fields);

/*
 * Reads a record from hash fields (as HGETALL returns them). Only `token`
 * is required, and any token will do; a missing cluster_time is taken from
 * the token's layout (an opaque token without one has time_source
 * unknown), and a cluster_time that disagrees with a MongoDB token is an
 * error.
 */
bool tw_checkpoint_decode(const char *const names[], const char *const values[],
                          size_t count, tw_checkpoint_t *out, tw_error_t *err);

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

typedef struct {
    const char *checkpoint_key;
    const char *history_key;
    const char *gaps_key;
    const tw_checkpoint_t *record; /* its updated_ms is the time of the commit */
    /* For the redis sink; NULL or empty otherwise. */
    const tw_event_batch_t *events;
    const char *stream_key;
    long long stream_maxlen;
    /* A recovery (resume-from, fallback): write whatever is stored, keep it
     * in the history with history_reason, and record gap_json (or NULL). */
    bool force;
    const char *history_reason;
    const char *gap_json;
} tw_commit_t;

typedef struct {
    bool written;            /* false: the stored checkpoint is ahead */
    tw_ctime_t stored_time;  /* when not written: what Redis holds */
    bool stored_absent;      /* written where no checkpoint was */
    bool has_prior;          /* written over a checkpoint of this time: */
    tw_ctime_t prior_time;
} tw_commit_result_t;

/* err->code when a key tokenwatch writes holds another type: nothing was
 * written, and retrying cannot help. */
#define TW_CHECKPOINT_WRONG_TYPE 1001
/* err->code when a stored checkpoint cannot be decoded. */
#define TW_CHECKPOINT_UNUSABLE 1002

/* The record itself is at fault (wrong type, cannot be decoded), not the
 * connection: retrying cannot help. */
bool tw_checkpoint_unusable(const tw_error_t *err);

bool tw_checkpoint_commit(redisContext *c, const tw_commit_t *commit,
                          tw_commit_result_t *result, tw_error_t *err);

#endif
