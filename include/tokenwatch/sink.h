/*
 * sink.h - handing change events on.
 *
 * An event is converted once (tw_event_from_bson) into the form every sink
 * and the Redis stream need: relaxed extended JSON, its token, cluster time,
 * operation and namespace, then put into a sink (below).
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
    char *token_json; /* its _id, or NULL */
    /* Their lengths, counted in a batch's bytes; token_json_len also when
     * token_json is not made. 0: not known (strlen is used). */
    size_t json_len;
    size_t token_json_len;
    tw_ctime_t cluster_time;
    tw_time_source_t time_source; /* see tw_event_from_bson */
    char *op; /* operationType, with TW_EVENT_FIELDS, else NULL */
    char *ns; /* "db.coll", "db", or "", with TW_EVENT_FIELDS, else NULL */
    bool invalidate;
} tw_event_t;

/* What an event is given (tw_event_from_bson's want), by the sinks that use
 * it (tw_sink_event_json). */
#define TW_EVENT_JSON 1u       /* the whole event: stdout, redis */
#define TW_EVENT_TOKEN_JSON 2u /* its _id, for the stream entry: redis */
#define TW_EVENT_FIELDS 4u     /* op and ns, for the stream entry: redis */

/*
 * Reads what tokenwatch needs from doc in one pass, copying only what want
 * names (libmongoc reuses doc: the rest is not kept). The JSON is made by
 * tw_json_relaxed (the same text as libbson's): it is the costliest step
 * per event, and the none sink needs none. Without TW_EVENT_TOKEN_JSON the
 * token is still checked to be writable and its JSON's length counted (no
 * text kept), so an event fails, and a batch fills, as when it is made.
 *
 * token is set to a read-only view of the event's _id, valid while doc is.
 * The cluster time is the event's clusterTime, else its token's (a known
 * layout); else time_source is TW_TIME_UNKNOWN and the caller takes the
 * reply's operationTime or its clock (tw_position_time), which no event of
 * MongoDB or DocumentDB needs.
 */
bool tw_event_from_bson(const bson_t *doc, unsigned want, tw_event_t *out, bson_t *token,
                        tw_error_t *err);
void tw_event_release(tw_event_t *event);

/* A batch is committed once it holds this many bytes of events (their JSON
 * and their tokens' JSON, made or not), whatever --checkpoint-every says: memory stays bounded when
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

/*
 * A sink, behind one interface: put (takes the event), flush (makes what
 * was put durable enough to checkpoint past it), its part of the commit's
 * Redis step, and committed (the checkpoint covers what was put). The
 * follower knows no sink by kind.
 *
 *   none    keeps nothing;
 *   stdout  writes a line per event at once and keeps the events until
 *           committed: a failed write (a full disk, a reader that stalls)
 *           fails the flush, which the follower rides out as an outage,
 *           writing the batch again until it lands (a line may come twice,
 *           none goes missing);
 *   redis   keeps the batch for the commit, whose one script appends it to
 *           the stream together with the checkpoint (record.h).
 */
typedef struct {
    tw_sink_kind_t kind;
    FILE *out;               /* stdout: borrowed */
    const char *stream_key;  /* redis: borrowed */
    long long stream_maxlen; /* redis */
} tw_sink_opts_t;

/* What a sink adds to the commit's all-or-nothing Redis step. */
typedef struct {
    const char *stream_key; /* NULL: nothing */
    long long stream_maxlen;
    const tw_event_batch_t *events; /* borrowed, until tw_sink_committed */
} tw_sink_part_t;

typedef struct tw_sink tw_sink_t;

tw_sink_t *tw_sink_new(const tw_sink_opts_t *opts);
void tw_sink_free(tw_sink_t *sink); /* NULL ok */

/* The JSON its events need (tw_event_from_bson's json). */
unsigned tw_sink_event_json(const tw_sink_t *sink);

/* Whether events need their JSON (TW_EVENT_JSON). */
bool tw_sink_wants_json(const tw_sink_t *sink);

/* Whether the events live in the Redis that holds the checkpoints. */
bool tw_sink_in_redis(const tw_sink_t *sink);

/* Takes ownership of *event (zeroed). A write that fails shows at the flush. */
void tw_sink_put(tw_sink_t *sink, tw_event_t *event);

/* At TW_BATCH_BYTES_MAX: commit now. */
bool tw_sink_full(const tw_sink_t *sink);

/* Events held until the next commit. */
size_t tw_sink_held(const tw_sink_t *sink);

/*
 * A commit seals what was put (tw_sink_seal): the sealed batch is its part
 * (tw_sink_commit_part) until tw_sink_committed drops it, while new events
 * are put beside it (the pipelined commit: following goes on while Redis
 * runs the last commit's script).
 */
void tw_sink_seal(tw_sink_t *sink);
size_t tw_sink_sealed(const tw_sink_t *sink);

/* Makes what was put durable enough to checkpoint past it; false with err
 * when it could not (an outage: nothing is lost, try again later). */
bool tw_sink_flush(tw_sink_t *sink, tw_error_t *err);

/* The sink's part of the commit (zeroed when it has none). */
void tw_sink_commit_part(const tw_sink_t *sink, tw_sink_part_t *part);

/* The commit landed: drop what it covered. */
void tw_sink_committed(tw_sink_t *sink);

const char *tw_sink_name(const tw_sink_t *sink);
const char *tw_sink_kind_name(tw_sink_kind_t kind);

#endif
