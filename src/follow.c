#include "tokenwatch/follow.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"
#include "tokenwatch/split.h"

struct tw_follow {
    mongoc_change_stream_t *stream;
    mongoc_collection_t *collection;
    mongoc_database_t *database;
    mongoc_client_session_t *session; /* NULL: the server has no sessions */
    tw_split_t *split;                /* with --split-large-events */
};

/* Short, so a stop request is seen within about a second even while
 * MongoDB is away: a failed selection is retried by the run loop, with
 * backoff, and libmongoc keeps connecting in the background meanwhile. */
#define DEFAULT_SELECTION_TIMEOUT_MS 1000

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
    /* The run loop retries an aggregate itself, with backoff and a stop check
     * in between; the driver's own retry would only double the wait. */
    if (!mongoc_uri_has_option(uri, MONGOC_URI_RETRYREADS))
        mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYREADS, false);
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
    /* 286 ChangeStreamHistoryLost, 260 InvalidResumeToken, 136
     * CappedPositionLost (an open cursor fell off the oplog; DocumentDB's
     * expired token), 40576 from 3.6 and 4.0 servers. */
    return code == 286 || code == 260 || code == 136 || code == 40576;
}

static const char *reply_errmsg(const bson_t *reply)
{
    bson_iter_t it;

    if (reply && bson_iter_init_find(&it, reply, "errmsg") && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return "";
}

/* The server errors that say something about the resume point or the
 * stream's options, not about the server's health. */
static tw_failure_t classify_stream_error(uint32_t code, const char *errmsg)
{
    if (tw_follow_is_lost_code((int)code))
        return TW_FAILURE_LOST;
    /* Azure Cosmos DB for MongoDB: "Expired resume token or cursor". */
    if (code == 72 && strstr(errmsg, "Expired resume token"))
        return TW_FAILURE_LOST;
    if (code == 280 || code == 40585)
        return strstr(errmsg, "modified by the pipeline") ? TW_FAILURE_FATAL
                                                           : TW_FAILURE_NOT_FOUND;
    if (code == 10334)
        return TW_FAILURE_TOO_LARGE;
    /* Amazon DocumentDB 5.0: "BSON field '$changeStream.startAfter' is an
     * unknown field." Learnt from the answer, not from the host name. */
    if (strstr(errmsg, "startAfter") &&
        (strstr(errmsg, "unknown field") || strstr(errmsg, "not supported") ||
         strstr(errmsg, "nrecognized")))
        return TW_FAILURE_NO_START_AFTER;
    return TW_FAILURE_NONE;
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
        tw_failure_t kind = classify_stream_error(code, reply_errmsg(reply));

        if (kind != TW_FAILURE_NONE)
            return kind;
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
    case TW_FAILURE_NOT_FOUND: return "not-found";
    case TW_FAILURE_TOO_LARGE: return "too-large";
    case TW_FAILURE_NO_START_AFTER: return "no-start-after";
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

static bool is_split_stage(const bson_t *stage)
{
    bson_iter_t it;

    return bson_iter_init(&it, stage) && bson_iter_next(&it) &&
           strcmp(bson_iter_key(&it), TW_SPLIT_STAGE) == 0;
}

/* {"pipeline": [...]} without a trailing split stage, for the scope. */
static void strip_split_stage(const bson_t *in, bson_t *out)
{
    bson_iter_t it, stages;
    bson_t array, stage;
    uint32_t n = 0, count = 0;
    char key[16];
    const char *k;

    bson_init(out);
    BSON_APPEND_ARRAY_BEGIN(out, "pipeline", &array);
    if (bson_iter_init_find(&it, in, "pipeline") && bson_iter_recurse(&it, &stages)) {
        while (bson_iter_next(&stages))
            count++;
        bson_iter_recurse(&it, &stages);
        while (bson_iter_next(&stages) && BSON_ITER_HOLDS_DOCUMENT(&stages)) {
            const uint8_t *data;
            uint32_t len;

            bson_iter_document(&stages, &len, &data);
            bson_init_static(&stage, data, len);
            if (++n == count && is_split_stage(&stage))
                break;
            bson_uint32_to_string(n - 1, &k, key, sizeof key);
            bson_append_document(&array, k, -1, &stage);
        }
    }
    bson_append_array_end(out, &array);
}

static bool parse_pipeline(const char *json, bson_t *out, tw_error_t *err)
{
    bson_error_t berr;
    char *wrapped = bson_strdup_printf("{\"pipeline\": %s}", json ? json : "[]");
    bool ok = bson_init_from_json(out, wrapped, -1, &berr);

    if (!ok)
        tw_error_set(err, TW_ERR_USAGE, 0, "--pipeline: %s", berr.message);
    bson_free(wrapped);
    return ok;
}

/* The pipeline to send: --pipeline, and the split stage last when asked. */
static bool build_pipeline(const tw_follow_opts_t *opts, bson_t *out, tw_error_t *err)
{
    char *with_stage;
    bool ok;

    if (!opts->split_large_events)
        return parse_pipeline(opts->pipeline, out, err);
    with_stage = tw_split_pipeline_append(opts->pipeline, err);
    if (!with_stage)
        return false;
    ok = parse_pipeline(with_stage, out, err);
    bson_free(with_stage);
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
    tw_follow_t *f = tw_calloc(1, sizeof *f);
    bson_t pipeline, watch_opts;
    bson_error_t berr;
    const bson_t *reply = NULL;

    *failure = TW_FAILURE_NONE;
    if (!build_pipeline(opts, &pipeline, err)) {
        *failure = TW_FAILURE_FATAL;
        free(f);
        return NULL;
    }
    build_opts(opts, start, &watch_opts);
    if (opts->split_large_events)
        f->split = tw_split_new(TW_SPLIT_MAX_BYTES_DEFAULT);
    /* A server without sessions (or a refusal) leaves operationTime unread. */
    f->session = mongoc_client_start_session(client, NULL, &berr);
    if (f->session && !mongoc_client_session_append(f->session, &watch_opts, &berr)) {
        mongoc_client_session_destroy(f->session);
        f->session = NULL;
    }
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
        tw_follow_free(f);
        return NULL;
    }
    return f;
}

tw_follow_status_t tw_follow_next(tw_follow_t *f, const bson_t **event,
                                  tw_failure_t *failure, tw_error_t *err)
{
    bson_error_t berr;
    const bson_t *reply = NULL, *doc;

    *failure = TW_FAILURE_NONE;
    while (mongoc_change_stream_next(f->stream, &doc)) {
        if (!f->split) {
            *event = doc;
            return TW_FOLLOW_EVENT;
        }
        /* Fragments of an event over 16 MB: hand on only the whole. */
        if (!tw_split_push(f->split, doc, event, err)) {
            *failure = TW_FAILURE_TRANSIENT; /* reopen from the checkpoint */
            return TW_FOLLOW_FAILED;
        }
        if (*event)
            return TW_FOLLOW_EVENT;
    }
    if (mongoc_change_stream_error_document(f->stream, &berr, &reply)) {
        fill_error(&berr, reply, failure, err);
        return TW_FOLLOW_FAILED;
    }
    return TW_FOLLOW_IDLE;
}

bool tw_follow_partial(const tw_follow_t *f)
{
    return f->split && tw_split_pending(f->split);
}

const bson_t *tw_follow_resume_token(tw_follow_t *f)
{
    return mongoc_change_stream_get_resume_token(f->stream);
}

bool tw_follow_operation_time(const tw_follow_t *f, tw_ctime_t *out)
{
    uint32_t t = 0, i = 0;

    if (!f->session)
        return false;
    mongoc_client_session_get_operation_time(f->session, &t, &i);
    if (t == 0)
        return false;
    out->t = t;
    out->i = i;
    return true;
}

bool tw_follow_cluster_time(mongoc_client_t *client, tw_ctime_t *out, tw_error_t *err)
{
    bson_t cmd = BSON_INITIALIZER, opts = BSON_INITIALIZER, reply;
    mongoc_client_session_t *session;
    bson_error_t berr;
    uint32_t t = 0, i = 0;
    bool ok = false;

    session = mongoc_client_start_session(client, NULL, &berr);
    if (!session) {
        tw_error_set(err, TW_ERR_MONGO, 0, "no session to read the cluster time: %s",
                     berr.message);
        goto out;
    }
    BSON_APPEND_INT32(&cmd, "ping", 1);
    if (mongoc_client_session_append(session, &opts, &berr) &&
        mongoc_client_command_with_opts(client, "admin", &cmd, NULL, &opts, &reply, &berr)) {
        mongoc_client_session_get_operation_time(session, &t, &i);
        ok = t != 0;
        if (!ok)
            tw_error_set(err, TW_ERR_MONGO, 0, "the server's reply has no operationTime");
    } else {
        tw_error_set(err, TW_ERR_MONGO, 0, "ping: %s", berr.message);
    }
    bson_destroy(&reply);
    mongoc_client_session_destroy(session);
    if (ok) {
        out->t = t;
        out->i = i;
    }
out:
    bson_destroy(&cmd);
    bson_destroy(&opts);
    return ok;
}

void tw_follow_free(tw_follow_t *f)
{
    if (!f)
        return;
    mongoc_change_stream_destroy(f->stream);
    mongoc_client_session_destroy(f->session);
    tw_split_free(f->split);
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

    /* The digest is of the parsed pipeline, so spacing does not matter,
     * and without the split stage: adding it changes no event's identity. */
    if (parse_pipeline(opts->pipeline, &pipeline, NULL)) {
        bson_t stripped;

        strip_split_stage(&pipeline, &stripped);
        canonical = bson_as_canonical_extended_json(&stripped, NULL);
        bson_destroy(&stripped);
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
