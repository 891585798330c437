#include "tokenwatch/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/json.h"
#include "tokenwatch/mem.h"

/* The fields of a change event tokenwatch reads, found in one pass. */
typedef struct {
    const uint8_t *id; /* the _id document */
    uint32_t id_len;
    const char *op, *db, *coll;
    uint32_t op_len, db_len, coll_len;
    bool has_time;
    tw_ctime_t time;
} event_fields_t;

/* ns: the first db and coll strings, as bson_iter_find_descendant would. */
static void scan_ns(bson_iter_t *ns, event_fields_t *f)
{
    bson_iter_t in;

    if (!BSON_ITER_HOLDS_DOCUMENT(ns) || !bson_iter_recurse(ns, &in))
        return;
    while (bson_iter_next(&in) && !(f->db && f->coll)) {
        const char *key = bson_iter_key(&in);

        if (!f->db && strcmp(key, "db") == 0 && BSON_ITER_HOLDS_UTF8(&in))
            f->db = bson_iter_utf8(&in, &f->db_len);
        else if (!f->coll && strcmp(key, "coll") == 0 && BSON_ITER_HOLDS_UTF8(&in))
            f->coll = bson_iter_utf8(&in, &f->coll_len);
    }
}

/* Each field is taken at its first occurrence, as bson_iter_find does; the
 * scan ends once it has what it needs (ns only for the stream entry): a
 * server sends _id, operationType and clusterTime first. */
static void scan_event(const bson_t *doc, bool need_ns, event_fields_t *f)
{
    bson_iter_t it;
    bool seen_id = false, seen_op = false, seen_time = false, seen_ns = !need_ns;

    memset(f, 0, sizeof *f);
    if (!bson_iter_init(&it, doc))
        return;
    while (!(seen_id && seen_op && seen_time && seen_ns) && bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);

        if (!seen_id && strcmp(key, "_id") == 0) {
            seen_id = true;
            if (BSON_ITER_HOLDS_DOCUMENT(&it))
                bson_iter_document(&it, &f->id_len, &f->id);
        } else if (!seen_op && strcmp(key, "operationType") == 0) {
            seen_op = true;
            if (BSON_ITER_HOLDS_UTF8(&it))
                f->op = bson_iter_utf8(&it, &f->op_len);
        } else if (!seen_time && strcmp(key, "clusterTime") == 0) {
            seen_time = true;
            f->has_time = BSON_ITER_HOLDS_TIMESTAMP(&it);
            if (f->has_time)
                bson_iter_timestamp(&it, &f->time.t, &f->time.i);
        } else if (!seen_ns && strcmp(key, "ns") == 0) {
            seen_ns = true;
            scan_ns(&it, f);
        }
    }
}

static const bool is_hex[256] = {
    ['0'] = true, ['1'] = true, ['2'] = true, ['3'] = true, ['4'] = true, ['5'] = true,
    ['6'] = true, ['7'] = true, ['8'] = true, ['9'] = true, ['a'] = true, ['b'] = true,
    ['c'] = true, ['d'] = true, ['e'] = true, ['f'] = true, ['A'] = true, ['B'] = true,
    ['C'] = true, ['D'] = true, ['E'] = true, ['F'] = true,
};

/* {_data: "<hex>"}, as every MongoDB and DocumentDB token is: its JSON is
 * '{ "_data" : "' hex '" }', written by libbson without an escape. */
static bool plain_hex_token(const bson_t *token, size_t *json_len)
{
    bson_iter_t it;
    const char *hex;
    uint32_t len;

    if (!bson_iter_init(&it, token) || !bson_iter_next(&it) ||
        strcmp(bson_iter_key(&it), "_data") != 0 || !BSON_ITER_HOLDS_UTF8(&it))
        return false;
    hex = bson_iter_utf8(&it, &len);
    for (uint32_t k = 0; k < len; k++)
        if (!is_hex[(unsigned char)hex[k]])
            return false;
    if (bson_iter_next(&it))
        return false;
    *json_len = 16 + (size_t)len;
    return true;
}

static char *copy_ns(const event_fields_t *f)
{
    size_t n = f->db ? f->db_len : 0, m = f->db && f->coll ? f->coll_len : 0;
    char *ns = bson_malloc(n + (m ? m + 1 : 0) + 1);

    memcpy(ns, f->db ? f->db : "", n);
    if (m) {
        ns[n] = '.';
        memcpy(ns + n + 1, f->coll, m);
        n += m + 1;
    }
    ns[n] = '\0';
    return ns;
}

/* The token's JSON, made or only measured. */
static bool token_json(const bson_t *token, unsigned want, tw_event_t *out)
{
    if (want & TW_EVENT_TOKEN_JSON) {
        out->token_json = tw_json_relaxed(token, &out->token_json_len);
        return out->token_json != NULL;
    }
    return plain_hex_token(token, &out->token_json_len) ||
           tw_json_relaxed_size(token, &out->token_json_len);
}

bool tw_event_from_bson(const bson_t *doc, unsigned want, tw_event_t *out, bson_t *token,
                        tw_error_t *err)
{
    event_fields_t f;

    memset(out, 0, sizeof *out);
    scan_event(doc, (want & TW_EVENT_FIELDS) != 0, &f);
    if (!f.id) {
        tw_error_set(err, TW_ERR_MONGO, 0,
                     "a change event has no _id resume token (did --pipeline "
                     "remove or change _id?)");
        return false;
    }
    if (!bson_init_static(token, f.id, f.id_len)) {
        tw_error_set(err, TW_ERR_MONGO, 0, "a change event's _id is corrupt");
        return false;
    }
    out->time_source = TW_TIME_UNKNOWN;
    if (f.has_time) {
        out->cluster_time = f.time;
        out->time_source = TW_TIME_EVENT;
    } else if (tw_token_layout(token, &out->cluster_time) != TW_LAYOUT_OPAQUE) {
        out->time_source = TW_TIME_TOKEN;
    }
    out->invalidate = f.op && f.op_len == 10 && memcmp(f.op, "invalidate", 10) == 0;
    if (want & TW_EVENT_FIELDS) {
        out->op = bson_strndup(f.op ? f.op : "", f.op ? f.op_len : 0);
        out->ns = copy_ns(&f);
    }
    if (want & TW_EVENT_JSON)
        out->json = tw_json_relaxed(doc, &out->json_len);
    if (!token_json(token, want, out) || ((want & TW_EVENT_JSON) && !out->json)) {
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
    tw_event_batch_t batch;  /* events put since the last seal */
    tw_event_batch_t sealed; /* the batch of the commit under way */
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
    part->events = &sink->sealed;
}

static const sink_ops_t sink_ops[] = {
    {TW_SINK_NONE, "none", false, 0, NULL, NULL, NULL},
    {TW_SINK_STDOUT, "stdout", true, TW_EVENT_JSON, stdout_wrote, stdout_flush, NULL},
    {TW_SINK_REDIS, "redis", true, TW_EVENT_JSON | TW_EVENT_TOKEN_JSON | TW_EVENT_FIELDS, NULL, NULL,
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
    tw_event_batch_release(&sink->sealed);
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

void tw_sink_seal(tw_sink_t *sink)
{
    tw_event_batch_t none = {NULL, 0, 0, 0};

    /* The last commit's batch is dropped by tw_sink_committed first; were
     * it not, its events would be kept in front of the new ones. */
    if (sink->sealed.count > 0) {
        for (size_t k = 0; k < sink->batch.count; k++)
            tw_event_batch_push(&sink->sealed, &sink->batch.items[k]);
        tw_event_batch_release(&sink->batch);
        return;
    }
    tw_event_batch_release(&sink->sealed);
    sink->sealed = sink->batch;
    sink->batch = none;
}

size_t tw_sink_sealed(const tw_sink_t *sink)
{
    return sink->sealed.count;
}

void tw_sink_commit_part(const tw_sink_t *sink, tw_sink_part_t *part)
{
    memset(part, 0, sizeof *part);
    if (sink->ops->part)
        sink->ops->part(sink, part);
}

void tw_sink_committed(tw_sink_t *sink)
{
    tw_event_batch_clear(&sink->sealed);
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
