/*
 * token.h - resume tokens and cluster times.
 *
 * A resume token is the document {_data: "82<8 hex t><8 hex i>...", ...}
 * that the server puts in each event's _id and in postBatchResumeToken.
 * After the KeyString type byte 0x82 come the cluster time's seconds and
 * increment, big-endian; string order of _data is token order.
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

/* Decodes the cluster time at the front of a token's _data hex string. */
bool tw_token_decode_hex(const char *hex, tw_ctime_t *out, tw_error_t *err);

/* The _data string of a token document (borrowed from token). */
bool tw_token_data(const bson_t *token, const char **data, tw_error_t *err);

bool tw_token_cluster_time(const bson_t *token, tw_ctime_t *out,
                           tw_error_t *err);

/*
 * Reads a token written as JSON ({"_data": "..."}, as stored in the
 * checkpoint) or as bare _data hex. out must be uninitialised; on success
 * the caller owns it (bson_destroy).
 */
bool tw_token_parse(const char *text, bson_t *out, tw_error_t *err);

/* The token as relaxed extended JSON; free with bson_free. */
char *tw_token_to_json(const bson_t *token);

/* Orders two tokens: by cluster time, then by _data. Undecodable sorts first. */
int tw_token_cmp(const bson_t *a, const bson_t *b);

#endif
