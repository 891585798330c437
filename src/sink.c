#include "tokenwatch/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/json.h"
#include "tokenwatch/mem.h"

static char *dup_utf8(const bson_t *doc, const char *dotted)
{
    bson_iter_t it;

    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, dotted, &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
        return bson_strdup(bson_iter_utf8(&it, NULL));
    return NULL;
}

bool tw_event_from_bson(const bson_t *doc, unsigned json, const tw_ctime_t *op_time,
                        int64_t local_ms, tw_event_t *out, tw_error_t *err)
{
    bson_iter_t it;
    bson_t borrowed;
    const uint8_t *data;
    uint32_t len;
    char *db, *coll;
    bool token_ok;

    memset(out, 0, sizeof *out);
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_DOCUMENT(&it)) {
        tw_error_set(err, TW_ERR_MONGO, 0,
                     "a change event has no _id resume token (did --pipeline "
                     "remove or change _id?)");
        return false;
    }
    bson_iter_document(&it, &len, &data);
    if (!bson_init_static(&borrowed, data, len)) {
        tw_error_set(err, TW_ERR_MONGO, 0, "a change event's _id is corrupt");
        return false;
    }
    /* Own a copy: libmongoc reuses the event document. */
    out->token = bson_copy(&borrowed);
    out->time_source = tw_position_time(doc, out->token, op_time, local_ms, &out->cluster_time);
    if (json & TW_EVENT_JSON)
        out->json = tw_json_relaxed(doc, &out->json_len);
    if (json & TW_EVENT_TOKEN_JSON) {
        out->token_json = tw_json_relaxed(out->token, &out->token_json_len);
        token_ok = out->token_json != NULL;
    } else {
        token_ok = tw_json_relaxed_size(out->token, &out->token_json_len);
    }
    out->op = dup_utf8(doc, "operationType");
    if (!out->op)
        out->op = bson_strdup("");
    out->invalidate = strcmp(out->op, "invalidate") == 0;
    db = dup_utf8(doc, "ns.db");
    coll = dup_utf8(doc, "ns.coll");
    if (db && coll)
        out->ns = bson_strdup_printf("%s.%s", db, coll);
    else
        out->ns = bson_strdup(db ? db : "");
    bson_free(db);
    bson_free(coll);
    if (((json & TW_EVENT_JSON) && !out->json) || !token_ok) {
        tw_event_release(out);
        tw_error_set(err, TW_ERR_MONGO, 0, "a change event cannot be written as JSON");
        return false;
    }
    return true;
}

void tw_event_release(tw_event_t *event)
{
    if (!event)
        return;
    bson_free(event->json);
    bson_free(event->token_json);
    bson_free(event->op);
    bson_free(event->ns);
    if (event->token)
        bson_destroy(event->token);
    memset(event, 0, sizeof *event);
}

/* A text's length as a batch counts it: the recorded length, else strlen
 * (an event built by hand), else 0. */
static size_t counted(const char *text, size_t len)
{
    return len || !text ? len : strlen(text);
}

void tw_event_batch_push(tw_event_batch_t *batch, tw_event_t *event)
{
    if (batch->count == batch->capacity) {
        size_t grown = batch->capacity ? batch->capacity * 2 : 64;
        tw_event_t *items = tw_realloc(batch->items, grown * sizeof *items);

        batch->items = items;
        batch->capacity = grown;
    }
    batch->bytes += counted(event->json, event->json_len) +
                    counted(event->token_json, event->token_json_len);
    batch->items[batch->count++] = *event;
    memset(event, 0, sizeof *event);
}

bool tw_event_batch_full(const tw_event_batch_t *batch)
{
    return batch->bytes >= TW_BATCH_BYTES_MAX;
}

void tw_event_batch_clear(tw_event_batch_t *batch)
{
    if (!batch)
        return;
    for (size_t k = 0; k < batch->count; k++)
        tw_event_release(&batch->items[k]);
    batch->count = 0;
    batch->bytes = 0;
}

void tw_event_batch_release(tw_event_batch_t *batch)
{
    if (!batch)
        return;
    tw_event_batch_clear(batch);
    free(batch->items);
    memset(batch, 0, sizeof *batch);
}

/*
 * The sinks, behind one interface. Every sink holds what was put since the
 * last commit (tw_sink_committed drops it): the redis sink to hand it to the
 * commit's script, the stdout sink to write it again after a failed write.
 */
typedef struct {
    tw_sink_kind_t kind;
    const char *name;
    bool holds;    /* keeps the events until committed */
    unsigned json; /* TW_EVENT_JSON, TW_EVENT_TOKEN_JSON */
    void (*wrote)(tw_sink_t *sink, tw_event_t *event); /* at put, may be NULL */
    bool (*flush)(tw_sink_t *sink, tw_error_t *err);   /* may be NULL */
    void (*part)(const tw_sink_t *sink, tw_sink_part_t *part); /* may be NULL */
} sink_ops_t;

struct tw_sink {
    const sink_ops_t *ops;
    tw_sink_opts_t opts;
    tw_event_batch_t batch; /* events not yet committed */
    bool write_failed;      /* stdout: write the batch again at flush */
    int write_errno;
};

static bool write_event(tw_sink_t *sink, const tw_event_t *event)
{
    return fputs(event->json, sink->opts.out) != EOF && fputc('\n', sink->opts.out) != EOF;
}

/* A line per event, at once; a failed write is retried at the flush. */
static void stdout_wrote(tw_sink_t *sink, tw_event_t *event)
{
    if (!sink->write_failed && !write_event(sink, event)) {
        sink->write_failed = true;
        sink->write_errno = errno;
    }
}

/*
 * Makes every line of the batch reach stdout. After a failed write the whole
 * batch is written again (a line may come twice, none goes missing): the
 * checkpoint moves only past what was flushed.
 */
static bool stdout_flush(tw_sink_t *sink, tw_error_t *err)
{
    if (sink->write_failed) {
        clearerr(sink->opts.out);
        sink->write_failed = false;
        for (size_t k = 0; k < sink->batch.count && !sink->write_failed; k++)
            if (!write_event(sink, &sink->batch.items[k])) {
                sink->write_failed = true;
                sink->write_errno = errno;
            }
    }
    if (!sink->write_failed && fflush(sink->opts.out) != 0) {
        sink->write_failed = true;
        sink->write_errno = errno;
    }
    if (!sink->write_failed)
        return true;
    clearerr(sink->opts.out);
    tw_error_set(err, TW_ERR_SYSTEM, sink->write_errno, "cannot write events to stdout: %s",
                 strerror(sink->write_errno));
    return false;
}

static void redis_part(const tw_sink_t *sink, tw_sink_part_t *part)
{
    part->stream_key = sink->opts.stream_key;
    part->stream_maxlen = sink->opts.stream_maxlen;
    part->events = &sink->batch;
}

static const sink_ops_t sink_ops[] = {
    {TW_SINK_NONE, "none", false, 0, NULL, NULL, NULL},
    {TW_SINK_STDOUT, "stdout", true, TW_EVENT_JSON, stdout_wrote, stdout_flush, NULL},
    {TW_SINK_REDIS, "redis", true, TW_EVENT_JSON | TW_EVENT_TOKEN_JSON, NULL, NULL,
     redis_part},
};

tw_sink_t *tw_sink_new(const tw_sink_opts_t *opts)
{
    tw_sink_t *sink = tw_calloc(1, sizeof *sink);

    sink->opts = *opts;
    sink->ops = &sink_ops[0];
    for (size_t k = 0; k < sizeof sink_ops / sizeof sink_ops[0]; k++)
        if (sink_ops[k].kind == opts->kind)
            sink->ops = &sink_ops[k];
    return sink;
}

void tw_sink_free(tw_sink_t *sink)
{
    if (!sink)
        return;
    tw_event_batch_release(&sink->batch);
    free(sink);
}

unsigned tw_sink_event_json(const tw_sink_t *sink)
{
    return sink->ops->json;
}

bool tw_sink_wants_json(const tw_sink_t *sink)
{
    return (sink->ops->json & TW_EVENT_JSON) != 0;
}

bool tw_sink_in_redis(const tw_sink_t *sink)
{
    return sink->ops->kind == TW_SINK_REDIS;
}

void tw_sink_put(tw_sink_t *sink, tw_event_t *event)
{
    if (sink->ops->wrote)
        sink->ops->wrote(sink, event);
    if (sink->ops->holds)
        tw_event_batch_push(&sink->batch, event);
    else
        tw_event_release(event);
}

bool tw_sink_full(const tw_sink_t *sink)
{
    return tw_event_batch_full(&sink->batch);
}

size_t tw_sink_held(const tw_sink_t *sink)
{
    return sink->batch.count;
}

bool tw_sink_flush(tw_sink_t *sink, tw_error_t *err)
{
    return !sink->ops->flush || sink->ops->flush(sink, err);
}

void tw_sink_commit_part(const tw_sink_t *sink, tw_sink_part_t *part)
{
    memset(part, 0, sizeof *part);
    if (sink->ops->part)
        sink->ops->part(sink, part);
}

void tw_sink_committed(tw_sink_t *sink)
{
    tw_event_batch_clear(&sink->batch);
}

const char *tw_sink_name(const tw_sink_t *sink)
{
    return sink->ops->name;
}

const char *tw_sink_kind_name(tw_sink_kind_t kind)
{
    switch (kind) {
    case TW_SINK_NONE: return "none";
    case TW_SINK_STDOUT: return "stdout";
    case TW_SINK_REDIS: return "redis";
    }
    return "unknown";
}
