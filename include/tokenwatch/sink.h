/*
 * sink.h - handing change events on.
 *
 * An event is converted once (tw_event_from_bson) into the form every sink
 * and the Redis stream need: relaxed extended JSON, its token, cluster time,
 * operation and namespace. The stdout sink writes a line per event at once
 * and is flushed before the checkpoint that covers it; the redis sink keeps
 * the events in a batch that tw_checkpoint_commit writes together with the
 * checkpoint, in one transaction.
 */
#ifndef TOKENWATCH_SINK_H
#define TOKENWATCH_SINK_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdio.h>

#include "tokenwatch/error.h"
#include "tokenwatch/settings.h"
#include "tokenwatch/token.h"

typedef struct {
    char *json;       /* the whole event, relaxed extended JSON, or NULL */
    char *token_json; /* its _id */
    /* On the heap: a bson_t points into itself and must not be moved, and
     * events are moved into batches. */
    bson_t *token;
    tw_ctime_t cluster_time;
    tw_time_source_t time_source; /* see tw_position_time */
    char *op; /* operationType */
    char *ns; /* "db.coll", "db", or "" */
    bool invalidate;
} tw_event_t;

/*
 * Copies what it needs from doc (which libmongoc may reuse). The event's
 * JSON is made only with_json: the none sink has no use for it, and it is
 * the costliest step per event. Its cluster time is the event's
 * clusterTime, else its token's, else op_time (the reply's operationTime,
 * may be NULL), else local_ms.
 */
bool tw_event_from_bson(const bson_t *doc, bool with_json, const tw_ctime_t *op_time,
                        int64_t local_ms, tw_event_t *out, tw_error_t *err);
void tw_event_release(tw_event_t *event);

/* A batch is committed once it holds this many bytes of events (their JSON
 * and tokens), whatever --checkpoint-every says: memory stays bounded when
 * events are large. One event larger than this is a batch of its own. */
#define TW_BATCH_BYTES_MAX ((size_t)4 * 1024 * 1024)

typedef struct {
    tw_event_t *items;
    size_t count;
    size_t capacity;
    size_t bytes; /* the items' JSON and tokens */
} tw_event_batch_t;

/* Full: at TW_BATCH_BYTES_MAX bytes. */
bool tw_event_batch_full(const tw_event_batch_t *batch);

/* Takes ownership of *event (which is zeroed). */
void tw_event_batch_push(tw_event_batch_t *batch, tw_event_t *event);
void tw_event_batch_clear(tw_event_batch_t *batch);
void tw_event_batch_release(tw_event_batch_t *batch);

typedef struct {
    tw_sink_kind_t kind;
    FILE *out;              /* stdout sink: borrowed */
    tw_event_batch_t batch; /* redis sink: events not yet committed */
} tw_sink_t;

void tw_sink_init(tw_sink_t *sink, tw_sink_kind_t kind, FILE *out);
void tw_sink_release(tw_sink_t *sink);

/* Takes ownership of *event. */
bool tw_sink_put(tw_sink_t *sink, tw_event_t *event, tw_error_t *err);

/* Makes what was put durable enough to checkpoint past it (stdout: fflush). */
bool tw_sink_flush(tw_sink_t *sink, tw_error_t *err);

const char *tw_sink_kind_name(tw_sink_kind_t kind);

#endif
