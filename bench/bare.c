/*
 * bench_bare - the floor tokenwatch is measured against: a bare libmongoc
 * loop that reads a change stream with the options tokenwatch uses (a
 * client pool with error API 2, a session, maxAwaitTimeMS 1000) and does
 * nothing with the events but mongoc_change_stream_next.
 *
 *   bench_bare URI N
 *
 * Prints, on stderr, milliseconds from start to the first event, and from
 * opening the stream to the Nth, then exits 0. Not part of tokenwatch: make bench builds it.
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    double start = now_ms(), first = -1, opened;
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    mongoc_client_t *client;
    mongoc_client_session_t *session;
    mongoc_collection_t *coll;
    mongoc_change_stream_t *stream;
    bson_t pipeline = BSON_INITIALIZER, *opts;
    const bson_t *doc, *reply;
    bson_error_t err;
    long long want, got = 0;
    int rc = 0;

    if (argc != 3 || (want = atoll(argv[2])) < 1) {
        fprintf(stderr, "usage: bench_bare URI N\n");
        return 2;
    }
    mongoc_init();
    uri = mongoc_uri_new_with_error(argv[1], &err);
    if (!uri) {
        fprintf(stderr, "bench_bare: %s\n", err.message);
        return 2;
    }
    pool = mongoc_client_pool_new(uri);
    mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_set_appname(pool, "bench_bare");
    client = mongoc_client_pool_pop(pool);
    opts = BCON_NEW("maxAwaitTimeMS", BCON_INT64(1000));
    session = mongoc_client_start_session(client, NULL, &err);
    if (session)
        mongoc_client_session_append(session, opts, &err);
    coll = mongoc_client_get_collection(client, "bench", "events");
    opened = now_ms();
    stream = mongoc_collection_watch(coll, &pipeline, opts);
    while (got < want) {
        if (mongoc_change_stream_next(stream, &doc)) {
            if (got++ == 0)
                first = now_ms();
            continue;
        }
        if (mongoc_change_stream_error_document(stream, &err, &reply)) {
            fprintf(stderr, "bench_bare: %s\n", err.message);
            rc = 1;
            break;
        }
    }
    fprintf(stderr, "bench_bare: first event %.1f ms, %lld events %.1f ms after opening\n",
            first - start, got, now_ms() - opened);
    mongoc_change_stream_destroy(stream);
    mongoc_collection_destroy(coll);
    if (session)
        mongoc_client_session_destroy(session);
    bson_destroy(opts);
    bson_destroy(&pipeline);
    mongoc_client_pool_push(pool, client);
    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    return rc;
}
