#include "tokenwatch/follow.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

struct tw_follow {
    mongoc_change_stream_t *stream;
    mongoc_collection_t *collection;
    mongoc_database_t *database;
};

#define DEFAULT_SELECTION_TIMEOUT_MS 5000

mongoc_client_pool_t *tw_follow_pool_new(const char *text, tw_error_t *err)
{
    bson_error_t berr;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(text, &berr);
    mongoc_client_pool_t *pool;

    if (!uri) {
        tw_error_set(err, TW_ERR_USAGE, 0, "--mongo-uri is not a connection string");
        return NULL;
    }
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                       DEFAULT_SELECTION_TIMEOUT_MS);
    pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);
    if (!pool) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "cannot create a MongoDB client for --mongo-uri (TLS options?)");
        return NULL;
    }
    mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_set_appname(pool, "tokenwatch");
    return pool;
}

bool tw_follow_is_lost_code(int code)
{
    /* 286 ChangeStreamHistoryLost, 280 ChangeStreamFatalError, 260
     * InvalidResumeToken; 40576/40585 from 3.6 and 4.0 servers. */
    return code == 286 || code == 280 || code == 260 || code == 40576 ||
           code == 40585;
}

/* Retryable codes from the change-streams spec, for servers that do not
 * label their errors (wire version < 9), plus CursorNotFound. */
static bool is_transient_code(uint32_t code)
{
    static const uint32_t codes[] = {6,     7,     43,    63,    89,    91,
                                     133,   150,   189,   234,   262,   9001,
                                     10107, 11600, 11602, 13388, 13435, 13436};

    for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++)
        if (codes[k] == code)
            return true;
    return false;
}

tw_failure_t tw_follow_classify(uint32_t domain, uint32_t code,
                                const bson_t *reply)
{
    bool server_error = domain == MONGOC_ERROR_SERVER || domain == MONGOC_ERROR_QUERY;

    if (server_error) {
        if (tw_follow_is_lost_code((int)code))
            return TW_FAILURE_LOST;
        if (is_transient_code(code) ||
            (reply && mongoc_error_has_label(reply, "ResumableChangeStreamError")))
            return TW_FAILURE_TRANSIENT;
        return TW_FAILURE_FATAL;
    }
    /* Client side: the network, server selection, a broken reply. */
    if (domain == MONGOC_ERROR_STREAM || domain == MONGOC_ERROR_SERVER_SELECTION ||
        domain == MONGOC_ERROR_PROTOCOL)
        return TW_FAILURE_TRANSIENT;
    return TW_FAILURE_FATAL;
}

const char *tw_failure_name(tw_failure_t failure)
{
    switch (failure) {
    case TW_FAILURE_NONE: return "none";
    case TW_FAILURE_TRANSIENT: return "transient";
    case TW_FAILURE_LOST: return "lost";
    case TW_FAILURE_FATAL: return "fatal";
    }
    return "unknown";
}

static void fill_error(const bson_error_t *berr, const bson_t *reply,
                       tw_failure_t *failure, tw_error_t *err)
{
    bson_iter_t it;
    const char *code_name = NULL;

    *failure = tw_follow_classify(berr->domain, berr->code, reply);
    if (reply && bson_iter_init_find(&it, reply, "codeName") &&
        BSON_ITER_HOLDS_UTF8(&it))
        code_name = bson_iter_utf8(&it, NULL);
    if (code_name)
        tw_error_set(err, TW_ERR_MONGO, (int)berr->code, "%s (code %u): %s",
                     code_name, berr->code, berr->message);
    else
        tw_error_set(err, TW_ERR_MONGO,
                     berr->domain == MONGOC_ERROR_SERVER ||
                             berr->domain == MONGOC_ERROR_QUERY
                         ? (int)berr->code
                         : 0,
                     "%s", berr->message);
}

static bool build_pipeline(const char *json, bson_t *out, tw_error_t *err)
{
    bson_error_t berr;
    char *wrapped = bson_strdup_printf("{\"pipeline\": %s}", json ? json : "[]");
    bool ok = bson_init_from_json(out, wrapped, -1, &berr);

    if (!ok)
        tw_error_set(err, TW_ERR_USAGE, 0, "--pipeline: %s", berr.message);
    bson_free(wrapped);
    return ok;
}

static void build_opts(const tw_follow_opts_t *opts, const tw_start_t *start,
                       bson_t *out)
{
    bson_init(out);
    if (opts->max_await_ms > 0)
        BSON_APPEND_INT64(out, "maxAwaitTimeMS", opts->max_await_ms);
    if (opts->full_document)
        BSON_APPEND_UTF8(out, "fullDocument", opts->full_document);
    switch (start->kind) {
    case TW_START_NOW:
        break;
    case TW_START_RESUME_AFTER:
        BSON_APPEND_DOCUMENT(out, "resumeAfter", start->token);
        break;
    case TW_START_START_AFTER:
        BSON_APPEND_DOCUMENT(out, "startAfter", start->token);
        break;
    case TW_START_AT_TIME:
        BSON_APPEND_TIMESTAMP(out, "startAtOperationTime", start->time.t,
                              start->time.i);
        break;
    }
}

tw_follow_t *tw_follow_open(mongoc_client_t *client,
                            const tw_follow_opts_t *opts,
                            const tw_start_t *start, tw_failure_t *failure,
                            tw_error_t *err)
{
    tw_follow_t *f = calloc(1, sizeof *f);
    bson_t pipeline, watch_opts;
    bson_error_t berr;
    const bson_t *reply = NULL;

    *failure = TW_FAILURE_NONE;
    if (!f)
        abort();
    if (!build_pipeline(opts->pipeline, &pipeline, err)) {
        *failure = TW_FAILURE_FATAL;
        free(f);
        return NULL;
    }
    build_opts(opts, start, &watch_opts);
    if (opts->db && opts->collection) {
        f->collection = mongoc_client_get_collection(client, opts->db, opts->collection);
        f->stream = mongoc_collection_watch(f->collection, &pipeline, &watch_opts);
    } else if (opts->db) {
        f->database = mongoc_client_get_database(client, opts->db);
        f->stream = mongoc_database_watch(f->database, &pipeline, &watch_opts);
    } else {
        f->stream = mongoc_client_watch(client, &pipeline, &watch_opts);
    }
    bson_destroy(&pipeline);
    bson_destroy(&watch_opts);
    if (mongoc_change_stream_error_document(f->stream, &berr, &reply)) {
        fill_error(&berr, reply, failure, err);
        tw_follow_close(f);
        return NULL;
    }
    return f;
}

tw_follow_status_t tw_follow_next(tw_follow_t *f, const bson_t **event,
                                  tw_failure_t *failure, tw_error_t *err)
{
    bson_error_t berr;
    const bson_t *reply = NULL;

    *failure = TW_FAILURE_NONE;
    if (mongoc_change_stream_next(f->stream, event))
        return TW_FOLLOW_EVENT;
    if (mongoc_change_stream_error_document(f->stream, &berr, &reply)) {
        fill_error(&berr, reply, failure, err);
        return TW_FOLLOW_FAILED;
    }
    return TW_FOLLOW_IDLE;
}

const bson_t *tw_follow_resume_token(tw_follow_t *f)
{
    return mongoc_change_stream_get_resume_token(f->stream);
}

void tw_follow_close(tw_follow_t *f)
{
    if (!f)
        return;
    mongoc_change_stream_destroy(f->stream);
    mongoc_collection_destroy(f->collection);
    mongoc_database_destroy(f->database);
    free(f);
}

char *tw_follow_scope_format(const char *set_name, const tw_follow_opts_t *opts)
{
    bson_t pipeline;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char digest[13] = "";
    char *canonical = NULL;

    /* The digest is of the parsed pipeline, so spacing does not matter. */
    if (build_pipeline(opts->pipeline, &pipeline, NULL)) {
        canonical = bson_as_canonical_extended_json(&pipeline, NULL);
        bson_destroy(&pipeline);
    }
    if (canonical &&
        EVP_Digest(canonical, strlen(canonical), md, &md_len, EVP_sha256(), NULL)) {
        for (unsigned k = 0; k < 6 && k < md_len; k++)
            snprintf(digest + 2 * k, 3, "%02x", md[k]);
    }
    bson_free(canonical);
    return bson_strdup_printf("rs=%s db=%s coll=%s pipeline=sha256:%s",
                              set_name && set_name[0] ? set_name : "-",
                              opts->db ? opts->db : "*",
                              opts->collection ? opts->collection : "*", digest);
}

bool tw_follow_scope(mongoc_client_t *client, const tw_follow_opts_t *opts,
                     char **scope, tw_failure_t *failure, tw_error_t *err)
{
    bson_error_t berr;
    mongoc_server_description_t *sd;
    const bson_t *hello;
    bson_iter_t it;
    const char *set_name = NULL;

    *scope = NULL;
    *failure = TW_FAILURE_NONE;
    sd = mongoc_client_select_server(client, false, NULL, &berr);
    if (!sd) {
        fill_error(&berr, NULL, failure, err);
        return false;
    }
    hello = mongoc_server_description_hello_response(sd);
    if (bson_iter_init_find(&it, hello, "setName") && BSON_ITER_HOLDS_UTF8(&it))
        set_name = bson_iter_utf8(&it, NULL);
    else if (bson_iter_init_find(&it, hello, "msg") && BSON_ITER_HOLDS_UTF8(&it))
        set_name = "mongos"; /* a sharded cluster has no single set name */
    *scope = tw_follow_scope_format(set_name, opts);
    mongoc_server_description_destroy(sd);
    return true;
}
