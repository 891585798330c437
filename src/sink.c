#include "tokenwatch/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"

static char *dup_utf8(const bson_t *doc, const char *dotted)
{
    bson_iter_t it;

    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, dotted, &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
        return bson_strdup(bson_iter_utf8(&it, NULL));
    return NULL;
}

bool tw_event_from_bson(const bson_t *doc, bool with_json, const tw_ctime_t *op_time,
                        int64_t local_ms, tw_event_t *out, tw_error_t *err)
{
    bson_iter_t it;
    bson_t borrowed;
    const uint8_t *data;
    uint32_t len;
    char *db, *coll;

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
    if (with_json)
        out->json = bson_as_relaxed_extended_json(doc, NULL);
    out->token_json = tw_token_to_json(out->token);
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
    if ((with_json && !out->json) || !out->token_json) {
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

void tw_event_batch_push(tw_event_batch_t *batch, tw_event_t *event)
{
    if (batch->count == batch->capacity) {
        size_t grown = batch->capacity ? batch->capacity * 2 : 64;
        tw_event_t *items = tw_realloc(batch->items, grown * sizeof *items);

        batch->items = items;
        batch->capacity = grown;
    }
    batch->bytes += (event->json ? strlen(event->json) : 0) +
                    (event->token_json ? strlen(event->token_json) : 0);
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

void tw_sink_init(tw_sink_t *sink, tw_sink_kind_t kind, FILE *out)
{
    memset(sink, 0, sizeof *sink);
    sink->kind = kind;
    sink->out = out;
}

void tw_sink_release(tw_sink_t *sink)
{
    if (!sink)
        return;
    tw_event_batch_release(&sink->batch);
}

bool tw_sink_put(tw_sink_t *sink, tw_event_t *event, tw_error_t *err)
{
    bool ok = true;

    switch (sink->kind) {
    case TW_SINK_NONE:
        break;
    case TW_SINK_STDOUT:
        if (fputs(event->json, sink->out) == EOF || fputc('\n', sink->out) == EOF) {
            tw_error_set(err, TW_ERR_SYSTEM, errno,
                         "cannot write an event to stdout: %s", strerror(errno));
            ok = false;
        }
        break;
    case TW_SINK_REDIS:
        tw_event_batch_push(&sink->batch, event);
        return true;
    }
    tw_event_release(event);
    return ok;
}

bool tw_sink_flush(tw_sink_t *sink, tw_error_t *err)
{
    if (sink->kind == TW_SINK_STDOUT && fflush(sink->out) != 0) {
        tw_error_set(err, TW_ERR_SYSTEM, errno, "cannot write events to stdout: %s",
                     strerror(errno));
        return false;
    }
    return true;
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
