/*
 * follow.h - one change stream, opened and iterated with libmongoc.
 *
 * libmongoc already resumes what the change-streams spec calls resumable
 * (once, from its cached token). What reaches us has failed or skipped
 * that, and tw_follow sorts it: the resume point is gone (LOST), the token
 * is not in this stream's history though its time may be (NOT_FOUND), an
 * event is over 16 MB (TOO_LARGE), the server does not know startAfter
 * (NO_START_AFTER), the server or network is away for now (TRANSIENT:
 * reconnect with backoff), or it will not get better by waiting (FATAL).
 *
 * Each stream runs in an explicit session, so the reply's operationTime
 * (the deployment's cluster time) can be read after every call.
 */
#ifndef TOKENWATCH_FOLLOW_H
#define TOKENWATCH_FOLLOW_H

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/error.h"
#include "tokenwatch/token.h"

typedef enum {
    TW_START_NOW = 0,      /* no option: from the current cluster time */
    TW_START_RESUME_AFTER, /* the normal restart */
    TW_START_START_AFTER,  /* after an invalidate event */
    TW_START_AT_TIME       /* startAtOperationTime */
} tw_start_kind_t;

typedef struct {
    tw_start_kind_t kind;
    const bson_t *token; /* borrowed, for the two token kinds */
    tw_ctime_t time;     /* for TW_START_AT_TIME */
} tw_start_t;

typedef struct {
    const char *db;         /* NULL: the whole deployment */
    const char *collection; /* NULL: the whole database */
    const char *pipeline;   /* a JSON array of stages */
    const char *full_document;
    int64_t max_await_ms;
    /* Append $changeStreamSplitLargeEvent and hand on whole events. */
    bool split_large_events;
} tw_follow_opts_t;

typedef enum {
    TW_FAILURE_NONE = 0,
    TW_FAILURE_TRANSIENT,
    TW_FAILURE_LOST,           /* 286, 260, 136, 40576; Cosmos DB's 72 */
    TW_FAILURE_NOT_FOUND,      /* 280, 40585: the token, not its time, is gone */
    TW_FAILURE_TOO_LARGE,      /* 10334: an event over 16 MB */
    TW_FAILURE_NO_START_AFTER, /* the server does not know startAfter */
    TW_FAILURE_FATAL
} tw_failure_t;

typedef enum { TW_FOLLOW_EVENT, TW_FOLLOW_IDLE, TW_FOLLOW_FAILED } tw_follow_status_t;

typedef struct tw_follow tw_follow_t;

/*
 * A client pool for uri, with error API 2 and the appname set. Without a
 * serverSelectionTimeoutMS in the URI it uses 5 s instead of libmongoc's
 * 30 s, so a watcher stays responsive to signals during an outage.
 */
mongoc_client_pool_t *tw_follow_pool_new(const char *uri, tw_error_t *err);

/*
 * Sends the aggregate. On failure returns NULL, fills err (code = the
 * server's code, 0 for a client-side error) and *failure.
 */
tw_follow_t *tw_follow_open(mongoc_client_t *client,
                            const tw_follow_opts_t *opts,
                            const tw_start_t *start, tw_failure_t *failure,
                            tw_error_t *err);

/*
 * EVENT: *event is borrowed, valid until the next call; with
 * split_large_events it is a whole event, reassembled from its fragments,
 * whose _id is the last fragment's. IDLE: an empty batch came back (the
 * resume token may have moved: postBatchResumeToken).
 * FAILED: err and *failure are filled; the stream is done.
 */
tw_follow_status_t tw_follow_next(tw_follow_t *f, const bson_t **event,
                                  tw_failure_t *failure, tw_error_t *err);

/* An event is half reassembled: neither its fragments' tokens nor the
 * postBatchResumeToken is a position to checkpoint yet. */
bool tw_follow_partial(const tw_follow_t *f);

/* The stream's current resume token (borrowed; copy it to keep it), or NULL. */
const bson_t *tw_follow_resume_token(tw_follow_t *f);

/* The operationTime of the stream's last reply: the deployment's cluster
 * time. False when the server sent none (or has no sessions). */
bool tw_follow_operation_time(const tw_follow_t *f, tw_ctime_t *out);

/*
 * The deployment's current cluster time: the operationTime of a ping run
 * in an explicit session. False when the server gives none.
 */
bool tw_follow_cluster_time(mongoc_client_t *client, tw_ctime_t *out, tw_error_t *err);

/* Closes the stream (killCursors, the session ends) and frees f; NULL is fine. */
void tw_follow_free(tw_follow_t *f);

/* Codes that mean the resume point is gone: 286, 260, 136, 40576. */
bool tw_follow_is_lost_code(int code);

/* Sorts an error libmongoc surfaced; reply may be NULL or empty. */
tw_failure_t tw_follow_classify(uint32_t domain, uint32_t code,
                                const bson_t *reply);

const char *tw_failure_name(tw_failure_t failure);

/*
 * What a checkpoint belongs to, as one line:
 * "rs=rs0 db=shop coll=orders pipeline=sha256:0123456789ab" ("*" for an
 * unscoped db or coll). The replica set name comes from the server.
 */
bool tw_follow_scope(mongoc_client_t *client, const tw_follow_opts_t *opts,
                     char **scope, tw_failure_t *failure, tw_error_t *err);

/* The scope text for a known replica set name (pure, for tests). */
char *tw_follow_scope_format(const char *set_name, const tw_follow_opts_t *opts);

#endif
