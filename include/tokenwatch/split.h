/*
 * split.h - events over 16 MB, sent in fragments and put back together.
 *
 * A change event over 16 MB fails with 10334 BSONObjectTooLarge. With
 * {"$changeStreamSplitLargeEvent": {}} as the LAST pipeline stage (MongoDB
 * 6.0.9+, 7.0+) the server sends such an event as fragments instead:
 *
 *   {_id: <token of fragment k>, splitEvent: {fragment: k, of: n}, <fields>}
 *
 * fragments 1..n in order, each with its own resume token. The event is
 * every fragment's fields but _id and splitEvent, in order; its position
 * is the last fragment's _id. Resuming after fragment k's token gives
 * fragment k+1, so a stream reopened at the last checkpoint (which is never
 * inside an event) starts again at fragment 1.
 *
 * tw_split_t is a reassembler fed one change-stream document at a time.
 * Pure: no I/O, no clock. A document without splitEvent passes through as
 * a whole event; fragments are collected until fragment n of n, which
 * yields the whole event. The whole event may exceed 16 MB: libbson holds
 * it in memory (up to BSON_MAX_SIZE); only the wire limits a document.
 */
#ifndef TOKENWATCH_SPLIT_H
#define TOKENWATCH_SPLIT_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/error.h"

/* The stage's name; the stage is {"$changeStreamSplitLargeEvent": {}}. */
#define TW_SPLIT_STAGE "$changeStreamSplitLargeEvent"

/*
 * A cap for tw_split_new: an event holds at most fullDocument and
 * fullDocumentBeforeChange (16 MB each) and an updateDescription, so 64 MiB
 * fits every event a server can produce and still bounds what a faulty
 * stream can make tokenwatch allocate.
 */
#define TW_SPLIT_MAX_BYTES_DEFAULT ((size_t)64 << 20)

/* err->code for a rejected document (domain TW_ERR_MONGO). Negative, so
 * never taken for a server code. */
typedef enum {
    TW_SPLIT_ERR_MALFORMED = -801,   /* splitEvent or _id not as documented */
    TW_SPLIT_ERR_ORDER = -802,       /* fragment k arrived, another expected */
    TW_SPLIT_ERR_COUNT = -803,       /* `of` changed in the middle of an event */
    TW_SPLIT_ERR_RESTARTED = -804,   /* fragment 1 while an event is half built */
    TW_SPLIT_ERR_INTERRUPTED = -805, /* a whole event while one is half built */
    TW_SPLIT_ERR_TOO_LARGE = -806    /* the fragments add up to over the cap */
} tw_split_code_t;

typedef struct tw_split tw_split_t;

/*
 * A reassembler whose fragments of one event may add up to at most
 * max_bytes (the sum of their BSON sizes, _id and splitEvent included; the
 * whole event is a little smaller). The cap is there for memory: it bounds
 * what one event can make tokenwatch hold, about twice max_bytes at the
 * moment the last fragment is joined. It is clamped to BSON_MAX_SIZE.
 * Free with tw_split_free.
 */
tw_split_t *tw_split_new(size_t max_bytes);

/* Accepts NULL. Invalidates an event tw_split_push returned. */
void tw_split_free(tw_split_t *s);

/*
 * Drops a half-built event (and the last event returned), as when the
 * stream is reopened: it starts again at fragment 1 of that event.
 */
void tw_split_reset(tw_split_t *s);

/*
 * Feeds one change-stream document (borrowed, read during the call only).
 *
 * On success *event is the whole event, or NULL when doc was a fragment
 * and more are to come. The event is borrowed: valid until the next call of
 * tw_split_push, tw_split_reset or tw_split_free on s, and, when doc was
 * not a fragment (then *event == doc), no longer than doc itself. Copy it
 * to keep it. A reassembled event has the last fragment's _id first, then
 * the fragments' other fields in their order, and no splitEvent.
 *
 * Fails (err: domain TW_ERR_MONGO, a tw_split_code_t, a message naming the
 * tokens) on a fragment out of order, a change of `of` mid-event, fragment
 * 1 while another event is half built, a whole event while one is half
 * built, fragments over the cap, or a malformed fragment. After a failure
 * the half-built event is dropped, as by tw_split_reset: reopen the stream
 * at the last checkpoint.
 */
bool tw_split_push(tw_split_t *s, const bson_t *doc, const bson_t **event,
                   tw_error_t *err);

/*
 * Whether an event is half built: its fragments' tokens are positions
 * inside one event, so the checkpoint must not move to them (nor to a
 * postBatchResumeToken) until tw_split_push returns the whole event.
 */
bool tw_split_pending(const tw_split_t *s);

/* Whether doc is a fragment: it has a top-level splitEvent field. */
bool tw_split_is_fragment(const bson_t *doc);

/*
 * Whether a pipeline (a JSON array of stages, as --pipeline holds it)
 * ends with the stage. False for text that is not such an array.
 */
bool tw_split_pipeline_has_stage(const char *pipeline);

/*
 * The pipeline with {"$changeStreamSplitLargeEvent": {}} appended, as JSON
 * (bson_free): the operator's stages are kept as written. A pipeline that
 * already ends with the stage comes back unchanged, so this can be called
 * on every open. NULL with err (TW_ERR_USAGE) when the text is not a JSON
 * array of stages or the stage is in it but not last (the server refuses
 * it anywhere but last, and more than once).
 */
char *tw_split_pipeline_append(const char *pipeline, tw_error_t *err);

#endif
