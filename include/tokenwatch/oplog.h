/*
 * oplog.h - the server's history window: its oldest and newest entries.
 *
 * Read from local.oplog.rs (find, sort $natural 1 and -1, limit 1) on a
 * client of its own, so a slow probe never stalls following. Where the
 * oplog cannot be read (no permission; Amazon DocumentDB keeps a change
 * stream log with a retention instead), --retention stands in for it.
 */
#ifndef TOKENWATCH_OPLOG_H
#define TOKENWATCH_OPLOG_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/error.h"
#include "tokenwatch/token.h"

typedef struct {
    tw_ctime_t oldest;
    tw_ctime_t newest;
    int64_t oldest_wall_ms; /* the entries' wall clock, when recorded */
    int64_t newest_wall_ms;
    bool from_retention; /* a stand-in: now minus --retention, and now */
} tw_oplog_window_t;

/* err->code for a probe the server refused for lack of privileges. */
#define TW_OPLOG_UNAUTHORIZED 13

/*
 * Reads the window. A permission error says which role is missing and how
 * to use --retention instead.
 */
bool tw_oplog_probe(mongoc_client_t *client, tw_oplog_window_t *out,
                    tw_error_t *err);

/* The stand-in window for --retention: [now - retention, now]. */
void tw_oplog_from_retention(int64_t now_wall_ms, int64_t retention_ms,
                             tw_oplog_window_t *out);

/* newest - oldest, in seconds of cluster time. */
int64_t tw_oplog_window_seconds(const tw_oplog_window_t *w);

#endif
