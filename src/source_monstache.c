/*
 * source_monstache.c - Monstache's position, in MongoDB itself (the
 * guard's own client): DB.monstache {_id: NAME, ts} and, with
 * resume-strategy 1, DB.tokens {resumeName: NAME, streamID, token}
 * (monstache.go: saveTimestamp, saveTokens).
 */
#include <string.h>

#include "sources_int.h"
#include "tokenwatch/utf8.h"

#define STREAM_NAME_MAX 256

static void stream_name(const bson_t *doc, size_t index, char *out, size_t size)
{
    bson_iter_t it;

    if (bson_iter_init_find(&it, doc, "streamID") && BSON_ITER_HOLDS_UTF8(&it))
        tw_utf8_format(out, size, "%s", bson_iter_utf8(&it, NULL));
    else
        snprintf(out, size, "stream %zu", index);
}

/* Every document of coll matching filter, as positions. */
static bool read_docs(mongoc_client_t *client, tw_source_t *s, const char *coll,
                      const bson_t *filter, bool named, tw_positions_t *out, tw_error_t *err)
{
    mongoc_collection_t *c = mongoc_client_get_collection(client, s->db, coll);
    bson_t *opts = BCON_NEW("limit", BCON_INT64(TW_SOURCES_POSITIONS_MAX));
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(c, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t error;
    size_t index = 0;
    bool ok = true;

    while (mongoc_cursor_next(cursor, &doc)) {
        char name[STREAM_NAME_MAX] = "";
        tw_position_t *p;

        if (named)
            stream_name(doc, index, name, sizeof name);
        p = tw_positions_add(out, s->shown, name, TW_CONSUMER_MONSTACHE);
        tw_consumers_monstache(doc, p);
        index++;
    }
    if (mongoc_cursor_error(cursor, &error)) {
        tw_error_set(err, TW_ERR_MONGO, (int)error.code, "%s: %s.%s: %s", s->shown, s->db, coll,
                     error.message);
        ok = false;
    }
    mongoc_cursor_destroy(cursor);
    bson_destroy(opts);
    mongoc_collection_destroy(c);
    return ok;
}

bool tw_sources_read_monstache(tw_source_t *s, mongoc_client_t *client, tw_positions_t *out,
                               tw_error_t *err)
{
    bson_t *by_id = BCON_NEW("_id", BCON_UTF8(s->name));
    bson_t *by_name = BCON_NEW("resumeName", BCON_UTF8(s->name));
    size_t first = out->count;
    bool ok;

    if (!client) {
        tw_error_set(err, TW_ERR_MONGO, 0, "%s: no MongoDB client", s->shown);
        ok = false;
    } else {
        ok = read_docs(client, s, "monstache", by_id, false, out, err) &&
             read_docs(client, s, "tokens", by_name, true, out, err);
    }
    if (ok && out->count == first) {
        tw_position_t *p = tw_positions_add(out, s->shown, "", TW_CONSUMER_MONSTACHE);

        p->kind = TW_POSITION_MISSING;
    }
    bson_destroy(by_id);
    bson_destroy(by_name);
    return ok;
}
