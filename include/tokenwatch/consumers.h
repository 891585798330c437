/*
 * consumers.h - the positions other consumers of a change stream store,
 * recognised by their content. Pure: values in, positions out; no I/O, no
 * clock, no globals (sources.h reads Redis, Kafka Connect and MongoDB).
 *
 * Formats, each from the consumer's own source (README, "Guarding other
 * consumers"; tests/unit/test_consumers.c holds a fixture of each):
 *   debezium     an offset JSON object: {"sec":T,"ord":I,"resume_token":R}
 *                (io.debezium.connector.mongodb.SourceInfo), R the bare
 *                _data hex (1.8-2.6) or base64 of the whole BSON token
 *                document (2.7+, ResumeTokens.toBase64); "initsync":true
 *                during a snapshot; "sec":-1 a heartbeat offset; only
 *                sec/ord up to 1.7. In Debezium Server's Redis offset store
 *                (RedisOffsetBackingStore) a hash, one field per connector:
 *                the field is the JSON [engine, partition].
 *   mongo-kafka  {"_id": "<the token as a JSON string>"} (MongoSourceTask),
 *                plus "HEARTBEAT":"true" (HeartbeatManager: the token is the
 *                cursor's, a real position) or "copy":"true" (copy.existing:
 *                the _id is the copied document's, no position yet).
 *   oplogtoredis a string key oplogtoredis::lastProcessedEntry[.N] holding
 *                the decimal T<<32|I (redispub/mongoTimestampEncoding.go).
 *   monstache    {_id: NAME, ts: Timestamp} in monstache.monstache, or with
 *                resume-strategy 1 {resumeName, streamID, token} in
 *                monstache.tokens (monstache.go saveTokens).
 * Kafka Connect's REST API (KIP-875, Kafka 3.5+) gives the Debezium and
 * mongo-kafka values as {"offsets":[{"partition":{...},"offset":{...}}]}.
 */
#ifndef TOKENWATCH_CONSUMERS_H
#define TOKENWATCH_CONSUMERS_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/error.h"
#include "tokenwatch/token.h"

typedef enum {
    TW_CONSUMER_TOKENWATCH = 0, /* tokenwatch's own forms: a checkpoint hash, a token, a SPEC time */
    TW_CONSUMER_DEBEZIUM,
    TW_CONSUMER_MONGO_KAFKA,
    TW_CONSUMER_OPLOGTOREDIS,
    TW_CONSUMER_MONSTACHE
} tw_consumer_t;

/* "tokenwatch", "debezium", "mongo-kafka", "oplogtoredis", "monstache". */
const char *tw_consumer_name(tw_consumer_t consumer);

typedef enum {
    TW_POSITION_TIME = 0, /* a cluster time to guard */
    TW_POSITION_NONE,     /* no position the oplog can take: a heartbeat offset, a snapshot, none yet */
    TW_POSITION_BAD,      /* cannot be read: reason says why (the position is UNKNOWN) */
    TW_POSITION_MISSING   /* the key does not exist */
} tw_position_kind_t;

#define TW_POSITION_NOTE_MAX 96
/* Values longer than this are refused, not read: a bound on the work and
 * memory one outside value can take. */
#define TW_CONSUMERS_VALUE_MAX (64 * 1024)

typedef struct {
    char *key;  /* where it was read: a Redis key, a connector's URL (redacted), monstache:NAME */
    char *name; /* within it: a connector, a partition, a stream; "" for the key itself */
    tw_consumer_t consumer;
    tw_position_kind_t kind;
    tw_ctime_t time;                   /* TW_POSITION_TIME */
    char note[TW_POSITION_NOTE_MAX];   /* "heartbeat", "snapshot", ...; "" */
    char reason[TW_ERROR_MESSAGE_MAX]; /* TW_POSITION_BAD */
} tw_position_t;

/* A growable list; owns the positions and their strings. */
typedef struct {
    tw_position_t *items;
    size_t count;
    size_t cap;
} tw_positions_t;

void tw_positions_init(tw_positions_t *list);
void tw_positions_clear(tw_positions_t *list); /* frees the items; the list stays usable */
/* Appends a zeroed position with copies of key and name; returns it (valid
 * until the next add). */
tw_position_t *tw_positions_add(tw_positions_t *list, const char *key, const char *name,
                                tw_consumer_t consumer);
/* Sorts by key, then name, so a source's positions keep one order. */
void tw_positions_sort(tw_positions_t *list, size_t from);

/*
 * One offset value as a document: a Debezium offset or a mongo-kafka one
 * (told apart by their fields). Fills p's consumer, kind, time, note and
 * reason; never fails: a value that is neither is TW_POSITION_BAD.
 */
void tw_consumers_offset(const bson_t *offset, tw_position_t *p);

/* The same from JSON text (len bytes, not NUL-terminated); invalid UTF-8,
 * over TW_CONSUMERS_VALUE_MAX or not a JSON object is TW_POSITION_BAD. */
void tw_consumers_offset_json(const char *json, size_t len, tw_position_t *p);

/*
 * What to call a partition: Debezium's server_id (with "/rs" when the
 * partition names a replica set), mongo-kafka's ns, else the text given.
 * partition may be NULL. The result is written to out (capped).
 */
void tw_consumers_partition_name(const bson_t *partition, const char *fallback, char *out,
                                 size_t size);

/* The same for a Redis offset-store hash field: the JSON [engine, partition]. */
void tw_consumers_field_name(const char *field, size_t len, char *out, size_t size);

/* Whether a string key is oplogtoredis's by its name (lastProcessedEntry). */
bool tw_consumers_oplogtoredis_key(const char *key);

/* oplogtoredis's decimal T<<32|I. */
void tw_consumers_oplogtoredis(const char *value, size_t len, tw_position_t *p);

/* Whether text is a decimal too big to be epoch seconds: T<<32|I. */
bool tw_consumers_oplogtoredis_value(const char *value, size_t len);

/* A Monstache document: monstache.monstache's {_id, ts} or a tokens
 * document {resumeName, streamID, token}. */
void tw_consumers_monstache(const bson_t *doc, tw_position_t *p);

/*
 * A Kafka Connect GET /connectors/{name}/offsets reply (KIP-875): one
 * position per entry, keyed key and named by its partition. false (and err)
 * when the reply is not that shape at all.
 */
bool tw_consumers_connect_offsets(const char *json, size_t len, const char *key,
                                  tw_positions_t *out, tw_error_t *err);

#endif
