/*
 * sources.h - what a --guard value names, and reading its positions.
 *
 * A guard value is one of (tw_source_parse, pure):
 *   KEY                       a Redis key: tokenwatch's checkpoint hash, a
 *                             token or SPEC time, Debezium Server's offset
 *                             hash (one position per field), oplogtoredis's
 *                             string; told apart by content (consumers.h)
 *   PATTERN                   a key with *, ? or [: Redis SCAN MATCH every
 *                             round, each key found read as KEY (keys of
 *                             other types skipped), at most
 *                             TW_SOURCES_SCAN_MAX keys
 *   http(s)://HOST/connectors/NAME
 *                             a Kafka Connect connector: GET .../offsets
 *                             (KIP-875), Debezium and mongo-kafka values
 *   monstache:NAME, monstache:DB/NAME
 *                             Monstache's position in MongoDB (the guard's
 *                             own client): DB.monstache {_id: NAME} and
 *                             DB.tokens {resumeName: NAME}; DB "monstache"
 *
 * Reading (tw_source_read) is the I/O shell: it appends the source's
 * positions, sorted, to a list. It fails only when the store itself cannot
 * be read (Redis, the Connect worker, MongoDB): a value at fault is a
 * position of kind TW_POSITION_BAD instead.
 */
#ifndef TOKENWATCH_SOURCES_H
#define TOKENWATCH_SOURCES_H

#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/consumers.h"
#include "tokenwatch/error.h"

/* Keys one pattern may match, and positions one source may hold, per round. */
#define TW_SOURCES_SCAN_MAX 10000
#define TW_SOURCES_POSITIONS_MAX 10000
/* A Kafka Connect reply larger than this is refused. */
#define TW_SOURCES_HTTP_MAX (8 * 1024 * 1024)

typedef enum {
    TW_SOURCE_KEY = 0,
    TW_SOURCE_GLOB,
    TW_SOURCE_CONNECT,
    TW_SOURCE_MONSTACHE
} tw_source_kind_t;

typedef struct {
    tw_source_kind_t kind;
    char *spec;  /* as given: a URL may hold credentials, never printed */
    char *shown; /* fit to print: the key, the URL redacted, monstache:NAME */
    char *db;    /* monstache */
    char *name;  /* monstache */
    bool told_cap; /* the scan cap was said, until it is no longer hit */
} tw_source_t;

/* Parses a guard value; false (err names the value, redacted) for an empty
 * one, a URL that does not name /connectors/NAME, or an empty Monstache name. */
bool tw_source_parse(const char *spec, tw_source_t *out, tw_error_t *err);
void tw_source_release(tw_source_t *s);

/* The Redis store is the source's (KEY, GLOB), not HTTP or MongoDB. */
bool tw_source_in_redis(const tw_source_t *s);

typedef struct {
    redisContext *redis;    /* borrowed: KEY and GLOB */
    mongoc_client_t *mongo; /* borrowed: MONSTACHE */
    int64_t timeout_ms;     /* HTTP */
} tw_source_io_t;

/*
 * Appends the source's positions to out, sorted. false (err filled, out as
 * it was) when its store could not be read.
 */
bool tw_source_read(tw_source_t *s, const tw_source_io_t *io, tw_positions_t *out,
                    tw_error_t *err);

/* A Redis key, as --guard KEY reads it (from_glob: a key of another type or
 * one gone is skipped). Exposed for the glob reader and the tests. */
bool tw_sources_read_key(redisContext *c, const char *key, bool from_glob,
                         tw_positions_t *out, tw_error_t *err);

#endif
