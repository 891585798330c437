/*
 * record.h - a checkpoint as a value and as Redis stores it: no I/O.
 *
 * tokenwatch:{NAME}:checkpoint is a hash: token (the resume token as JSON,
 * byte for byte as the server sent it), cluster_time (T:I), time_source
 * (where that time came from: event, token, operation, local), layout (the
 * token's: mongodb, documentdb, opaque), wall_ms (the cluster time in Unix
 * ms), updated_ms, events (count so far), source (event, pbrt, invalidate,
 * ...), scope (what the token belongs to). tokenwatch:{NAME}:history keeps
 * earlier ones, each that hash as a JSON object plus pushed_ms and reason.
 *
 * This module is the one writer and the one reader of those records, and
 * builds the commit command (the script, its keys and values) that
 * checkpoint.c sends; it reads the script's reply from plain values. Like
 * hiredis's read.c, it touches no socket, so all of it is tested without
 * Redis. The value itself keeps its name, tw_checkpoint_t, and its
 * functions theirs (tw_checkpoint_init, ...): it is what every module holds.
 */
#ifndef TOKENWATCH_RECORD_H
#define TOKENWATCH_RECORD_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
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

/* err->code when a key tokenwatch writes holds another type: nothing was
 * written, and retrying cannot help. */
#define TW_CHECKPOINT_WRONG_TYPE 1001
/* err->code when a stored checkpoint cannot be decoded. */
#define TW_CHECKPOINT_UNUSABLE 1002
/* The commit of a writer whose lease was taken over (fencing). */
#define TW_CHECKPOINT_FENCED 1003
/* Fewer replicas than --redis-wait-replicas acknowledged a commit in time. */
#define TW_CHECKPOINT_UNREPLICATED 1004

typedef struct {
    bson_t token;
    bool has_token;
    tw_ctime_t cluster_time;
    tw_time_source_t time_source;
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

/* The token's layout (read from the token each time: a position moves once
 * per event, and its layout is needed only when written). */
tw_token_layout_t tw_checkpoint_layout(const tw_checkpoint_t *cp);

/* Copies src's position (token, time, its source) into dst. */
void tw_checkpoint_copy_position(tw_checkpoint_t *dst, const tw_checkpoint_t *src);

/* "tokenwatch:{NAME}:<what>" */
void tw_checkpoint_key(const char *name, const char *what,
                       char out[TW_KEY_MAX]);

#define TW_RECORD_FIELDS 9

/* The hash fields of a record, in a fixed order: token, cluster_time,
 * wall_ms, updated_ms, events, source, scope, layout, time_source. The
 * names are static; the values are owned by fields. */
typedef struct {
    const char *names[TW_RECORD_FIELDS];
    char *values[TW_RECORD_FIELDS];
} tw_record_fields_t;

/* Fails (and out is empty) when cp has no token. */
bool tw_record_encode(const tw_checkpoint_t *cp, tw_record_fields_t *out,
                      tw_error_t *err);
void tw_record_fields_release(tw_record_fields_t *fields);

/*
 * Reads a record from hash fields (as HGETALL returns them). Only `token`
 * is required, and any token will do; a missing cluster_time is taken from
 * the token's layout (an opaque token without one has time_source
 * unknown), and a cluster_time that disagrees with a MongoDB token is an
 * error. Fields it does not know are ignored. out is filled on success and
 * empty (released) on failure; err names the field at fault.
 */
bool tw_record_decode(const char *const names[], const char *const values[],
                      size_t count, tw_checkpoint_t *out, tw_error_t *err);

typedef struct {
    tw_checkpoint_t checkpoint; /* token, cluster time, events, source, scope */
    int64_t pushed_ms;
    char reason[TW_SOURCE_MAX];
    bool bad; /* could not be read: problem says why; the rest is empty */
    char problem[TW_ERROR_MESSAGE_MAX];
} tw_history_entry_t;

/*
 * Reads one history entry: the checkpoint hash as a JSON object of strings
 * (read by tw_record_decode), plus pushed_ms and reason. out is filled on
 * success; release it with tw_checkpoint_release(&out->checkpoint) either
 * way.
 */
bool tw_record_history_decode(const char *json, tw_history_entry_t *out,
                              tw_error_t *err);

typedef struct {
    const char *checkpoint_key;
    const char *history_key;
    const char *gaps_key;
    const char *epoch_key; /* the lease's epoch counter (lease.h) */
    long long epoch;       /* the writer's lease epoch; 0: no lease, no fence */
    /* WAIT for this many replicas after the script (0: none), up to
     * wait_timeout_ms; fewer is a failed commit, sent again. */
    int wait_replicas;
    int wait_timeout_ms;
    const tw_checkpoint_t *record; /* its updated_ms is the time of the commit */
    /* The sink's part (tw_sink_commit_part): events appended to a stream by
     * the same script, after its checks; stream_key NULL: none. */
    tw_sink_part_t sink;
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

/*
 * A command as argument strings, for redisAppendCommandArgv (argc, argv,
 * NULL lengths). argv[k] points into the command itself or, for the keys,
 * the reason, the gap and the events' values, into the tw_commit_t it was
 * built from: valid until tw_record_command_release, and while that commit
 * and its record and events are. The other members are what argv points
 * into.
 */
typedef struct {
    size_t argc;
    const char **argv;
    tw_record_fields_t fields;
    char t[16], i[16], now[24], every[24], maxlen[24], count[24], epoch[24];
    char (*times)[TW_CTIME_TEXT_MAX];
} tw_record_command_t;

/* The values before the events (ARGV[1..19]), five per event after them. */
#define TW_RECORD_COMMIT_VALUES 19
#define TW_RECORD_EVENT_VALUES 5

/*
 * The EVAL of the commit script: 4 keys (checkpoint, history, gaps, the
 * lease's epoch counter), 5 with events (and the stream), then the record,
 * the mode, the history and gap values, the stream's MAXLEN, the number of
 * events, the writer's epoch and five values per event (its JSON, token
 * JSON, cluster time, op, ns). Fails (and out is empty)
 * when the record cannot be encoded.
 */
bool tw_record_commit_command(const tw_commit_t *commit, tw_record_command_t *out,
                              tw_error_t *err);
void tw_record_command_release(tw_record_command_t *cmd);

/* The commit script's error reply (message): a key of the wrong type
 * ("TWTYPE ...", nothing written) is TW_CHECKPOINT_WRONG_TYPE, a writer
 * fenced off ("TWFENCED epoch", nothing written) TW_CHECKPOINT_FENCED, any
 * other TW_REDIS_REPLY_ERROR; all in TW_ERR_REDIS. */
void tw_record_commit_error(const char *message, tw_error_t *err);

/* The commit script's reply {flag, text}: flag 1 wrote, text the cluster
 * time it replaced ("" when the hash had none, "-" when there was no hash);
 * flag 0 did not, text the stored cluster time. text is NULL when the
 * reply has no second element or it is not a string. Fills result. */
void tw_record_commit_reply(long long flag, const char *text,
                            tw_commit_result_t *result);

#endif
