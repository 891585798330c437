#include "tokenwatch/oplog.h"

#include <string.h>

static bool read_entry(const bson_t *doc, tw_ctime_t *ts, int64_t *wall_ms)
{
    bson_iter_t it;

    if (!bson_iter_init_find(&it, doc, "ts") || !BSON_ITER_HOLDS_TIMESTAMP(&it))
        return false;
    bson_iter_timestamp(&it, &ts->t, &ts->i);
    *wall_ms = 0;
    if (bson_iter_init_find(&it, doc, "wall") && BSON_ITER_HOLDS_DATE_TIME(&it))
        *wall_ms = bson_iter_date_time(&it);
    return true;
}

/* One end of the oplog: direction 1 the oldest entry, -1 the newest. */
static bool probe_end(mongoc_collection_t *oplog, int direction, tw_ctime_t *ts,
                      int64_t *wall_ms, tw_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    bson_t opts = BSON_INITIALIZER;
    bson_t sort, projection;
    mongoc_cursor_t *cursor;
    const bson_t *doc;
    bson_error_t berr;
    const bson_t *reply = NULL;
    bool ok = false;

    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "$natural", direction);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &projection);
    BSON_APPEND_INT32(&projection, "ts", 1);
    BSON_APPEND_INT32(&projection, "wall", 1);
    bson_append_document_end(&opts, &projection);
    BSON_APPEND_INT64(&opts, "limit", 1);
    cursor = mongoc_collection_find_with_opts(oplog, &filter, &opts, NULL);
    if (mongoc_cursor_next(cursor, &doc)) {
        ok = read_entry(doc, ts, wall_ms);
        if (!ok)
            tw_error_set(err, TW_ERR_MONGO, 0,
                         "local.oplog.rs entry has no ts Timestamp");
    } else if (mongoc_cursor_error_document(cursor, &berr, &reply)) {
        bool server = berr.domain == MONGOC_ERROR_SERVER || berr.domain == MONGOC_ERROR_QUERY;

        if (server && (berr.code == 13 || berr.code == 18 || berr.code == 8000)) {
            tw_error_set(err, TW_ERR_MONGO, TW_OPLOG_UNAUTHORIZED,
                         "cannot read local.oplog.rs (%s): grant the user "
                         "read on the local database ({role: \"read\", db: "
                         "\"local\"}), or give the window with --retention "
                         "(for Amazon DocumentDB: its "
                         "change_stream_log_retention_duration)",
                         berr.message);
        } else {
            tw_error_set(err, TW_ERR_MONGO, server ? (int)berr.code : 0,
                         "reading local.oplog.rs: %s", berr.message);
        }
    } else {
        tw_error_set(err, TW_ERR_MONGO, 0,
                     "local.oplog.rs is empty or missing: is this a replica "
                     "set member? (for a deployment without an oplog, use "
                     "--retention)");
    }
    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return ok;
}

bool tw_oplog_probe(mongoc_client_t *client, tw_oplog_window_t *out,
                    tw_error_t *err)
{
    mongoc_collection_t *oplog = mongoc_client_get_collection(client, "local", "oplog.rs");
    bool ok;

    memset(out, 0, sizeof *out);
    ok = probe_end(oplog, 1, &out->oldest, &out->oldest_wall_ms, err) &&
         probe_end(oplog, -1, &out->newest, &out->newest_wall_ms, err);
    mongoc_collection_destroy(oplog);
    return ok;
}

void tw_oplog_from_retention(int64_t now_wall_ms, int64_t retention_ms,
                             tw_oplog_window_t *out)
{
    int64_t now_s = now_wall_ms / 1000;
    int64_t oldest_s = now_s - retention_ms / 1000;

    memset(out, 0, sizeof *out);
    out->from_retention = true;
    out->newest.t = (uint32_t)now_s;
    out->oldest.t = (uint32_t)(oldest_s > 0 ? oldest_s : 0);
    out->newest_wall_ms = now_wall_ms;
    out->oldest_wall_ms = (int64_t)out->oldest.t * 1000;
}

int64_t tw_oplog_window_seconds(const tw_oplog_window_t *w)
{
    return (int64_t)w->newest.t - (int64_t)w->oldest.t;
}
