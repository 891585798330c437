/*
 * token.h - resume tokens and cluster times.
 *
 * A resume token is the document a server puts in each event's _id and in
 * postBatchResumeToken. It is opaque: tokenwatch stores it and passes it
 * back byte for byte, whatever its _data holds (hex with any leading byte,
 * BinData, base64 text). Two layouts are known, and give the cluster time
 * inside:
 *   mongodb     _data "82" + 8 hex t + 8 hex i + ...: the KeyString type
 *               byte 0x82 (Timestamp) and the time big-endian (MongoDB's
 *               resume_token.cpp); BinData _data (3.6) holds the same bytes.
 *   documentdb  _data "01" + 8 hex t + 8 hex i + ...: as in AWS's examples
 *               (the layout itself is undocumented).
 * Anything else is "opaque": its position's time comes from elsewhere (the
 * event's clusterTime, the reply's operationTime, the local clock), and
 * tw_position_time says which.
 */
#ifndef TOKENWATCH_TOKEN_H
#define TOKENWATCH_TOKEN_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/error.h"

/* A BSON Timestamp: seconds since the epoch and an increment. */
typedef struct {
    uint32_t t;
    uint32_t i;
} tw_ctime_t;

int tw_ctime_cmp(tw_ctime_t a, tw_ctime_t b);

/* The cluster time as Unix milliseconds (its seconds; the increment is not a time). */
int64_t tw_ctime_wall_ms(tw_ctime_t ct);

#define TW_CTIME_TEXT_MAX 24 /* "4294967295:4294967295" */
void tw_ctime_format(tw_ctime_t ct, char out[TW_CTIME_TEXT_MAX]);

/* Parses "T:I" (both decimal, 32-bit). */
bool tw_ctime_parse(const char *text, tw_ctime_t *out, tw_error_t *err);

#define TW_UTC_TEXT_MAX 64
/* Unix ms as RFC 3339 UTC: "2026-11-21T05:00:00Z", with ".123" when ms != 0. */
void tw_utc_format(int64_t unix_ms, char out[TW_UTC_TEXT_MAX]);

typedef enum {
    TW_LAYOUT_OPAQUE = 0, /* no known layout: no time inside */
    TW_LAYOUT_MONGODB,    /* 82... */
    TW_LAYOUT_DOCUMENTDB  /* 01... */
} tw_token_layout_t;

const char *tw_token_layout_name(tw_token_layout_t layout);
bool tw_token_layout_parse(const char *name, tw_token_layout_t *out);

/* Where a position's cluster time came from, best first. */
typedef enum {
    TW_TIME_EVENT = 0, /* the event's clusterTime */
    TW_TIME_TOKEN,     /* read from a known token layout */
    TW_TIME_OPERATION, /* the reply's operationTime */
    TW_TIME_LOCAL,     /* the local clock: the last resort */
    TW_TIME_UNKNOWN    /* a stored record that names none and an opaque token */
} tw_time_source_t;

const char *tw_time_source_name(tw_time_source_t source);
bool tw_time_source_parse(const char *name, tw_time_source_t *out);

/*
 * Decodes the cluster time at the front of a hex _data string of a known
 * layout (82 or 01). Fails, saying why, for text that is not hex, an odd
 * length, too short a string, or an unknown type byte.
 */
bool tw_token_decode_hex(const char *hex, tw_ctime_t *out, tw_error_t *err);

/* The layout of a token; with a known one, its cluster time into out (may be NULL). */
tw_token_layout_t tw_token_layout(const bson_t *token, tw_ctime_t *out);

/* The _data string of a token document (borrowed); fails for BinData. */
bool tw_token_data(const bson_t *token, const char **data, tw_error_t *err);

/* The cluster time inside a token of a known layout; fails for opaque ones. */
bool tw_token_cluster_time(const bson_t *token, tw_ctime_t *out,
                           tw_error_t *err);

/*
 * Reads a token written as JSON (any document with a _data field, as stored
 * in the checkpoint) or as bare _data hex (any leading byte). out must be
 * uninitialised; on success the caller owns it (bson_destroy).
 */
bool tw_token_parse(const char *text, bson_t *out, tw_error_t *err);

/* The token as relaxed extended JSON (tw_json_relaxed: libbson's text);
 * free with bson_free. */
char *tw_token_to_json(const bson_t *token);

/*
 * A position's cluster time, from the best source there is: the event's
 * clusterTime (event may be NULL), the token's layout, the reply's
 * operationTime (op_time may be NULL), and only then local_ms.
 */
tw_time_source_t tw_position_time(const bson_t *event, const bson_t *token,
                                  const tw_ctime_t *op_time, int64_t local_ms,
                                  tw_ctime_t *out);

/*
 * Orders two positions by their cluster times; at the same time by _data,
 * but only when both tokens have one known layout (otherwise equal).
 */
int tw_position_cmp(tw_ctime_t ta, const bson_t *a, tw_ctime_t tb,
                    const bson_t *b);

/* tw_position_cmp with the times read from the tokens' layouts; a token
 * without one sorts first. */
int tw_token_cmp(const bson_t *a, const bson_t *b);

#endif
