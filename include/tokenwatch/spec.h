/*
 * spec.h - resume positions (SPEC), as operators write them.
 *
 *   {"_data":"8263..."}    a resume token as JSON (any token): resume after it
 *   8263A1F2C4000000012B  the same, bare _data hex (82 MongoDB, 01 DocumentDB)
 *   1700000000:1          a cluster time T:I: startAtOperationTime
 *   1700000000            epoch seconds (increment 0)
 *   2026-11-21T05:00:00Z  an RFC 3339 date (any offset; seconds precision)
 *   oldest | now | checkpoint
 *
 * Parsing is pure: `oldest`, `now` and `checkpoint` are resolved later by
 * whoever knows the oplog, the clock and the stored checkpoint.
 */
#ifndef TOKENWATCH_SPEC_H
#define TOKENWATCH_SPEC_H

#include <bson/bson.h>
#include <stdbool.h>

#include "tokenwatch/error.h"
#include "tokenwatch/token.h"

typedef enum {
    TW_SPEC_TOKEN,
    TW_SPEC_TIME,
    TW_SPEC_OLDEST,
    TW_SPEC_NOW,
    TW_SPEC_CHECKPOINT
} tw_spec_kind_t;

typedef struct {
    tw_spec_kind_t kind;
    bson_t token;    /* valid when has_token; released by tw_spec_clear */
    bool has_token;  /* TW_SPEC_TOKEN; false in a zeroed or failed spec */
    tw_ctime_t time; /* TW_SPEC_TOKEN (its cluster time) and TW_SPEC_TIME */
    bool has_time;   /* false for a token of no known layout */
} tw_spec_t;

/* The forms, one per line, for error messages and --help. */
extern const char TW_SPEC_FORMS[];

/* out is filled only on success (zeroed otherwise); call tw_spec_clear when
 * done with it, which is safe on a zeroed or failed spec too. */
bool tw_spec_parse(const char *text, tw_spec_t *out, tw_error_t *err);

void tw_spec_clear(tw_spec_t *spec);

const char *tw_spec_kind_name(tw_spec_kind_t kind);

#endif
