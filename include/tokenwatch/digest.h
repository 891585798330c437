/*
 * digest.h - the daily digest: once a day at --digest-at (UTC), one message
 * listing every guarded position with its state, headroom and time left,
 * under a headline such as "all 12 OK, least headroom 1d 7h". Pure: the
 * scheduler decides from the time it is given, the texts and payloads from
 * the entries; app.c asks after each guard round and sends.
 */
#ifndef TOKENWATCH_DIGEST_H
#define TOKENWATCH_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* No guard.h here (it brings libmongoc): the settings parse --digest-at
 * with this header and stay free of I/O libraries. */
#include "tokenwatch/error.h"

/* One guarded position as the last round measured it. */
typedef struct {
    const char *key;
    int state;          /* a tw_state_t (guard.h) */
    bool has_measure;
    int64_t headroom_s;
    bool unbounded;     /* the oplog is not being truncated */
    double time_left_s; /* meaningless when unbounded or not measured */
} tw_digest_entry_t;

typedef struct {
    const char *environment;
    const char *name; /* the stream */
    int64_t now_ms;   /* wall clock: the digest's date */
    const tw_digest_entry_t *entries;
    size_t count;
} tw_digest_t;

/*
 * The scheduler. Once a UTC day, at the first check at or after at_minute
 * (minutes after 00:00 UTC): tw_digest_due says true once and remembers the
 * day. The first check only learns the day: a start after the hour sends
 * nothing until the next day's hour (a restart never sends a second digest
 * the same day); a start before it sends at the hour. A clock that jumps
 * forward sends one digest, not one per day skipped; one that jumps back
 * sends nothing until it passes a day not yet sent.
 */
typedef struct {
    int at_minute;
    bool started;
    int64_t last_day; /* UTC days since 1970 of the last digest (or start) */
} tw_digest_sched_t;

/* "HH:MM" (00:00 to 23:59, two digits each) into minutes after midnight. */
bool tw_digest_parse_at(const char *text, int *minute, tw_error_t *err);

void tw_digest_sched_init(tw_digest_sched_t *s, int at_minute);

/* Whether a digest is due at now_ms (wall clock); true marks it sent. */
bool tw_digest_due(tw_digest_sched_t *s, int64_t now_ms);

/* "all 12 OK, least headroom 1d 7h" or "2 of 12 not OK (1 WARN, 1 CRIT),
 * least headroom 3h 10m" (bson_free). */
char *tw_digest_headline(const tw_digest_t *d);

/* The headline, then a line per position (bson_free); values from outside
 * made valid UTF-8, escaped for Slack when slack is true. */
char *tw_digest_text(const tw_digest_t *d, bool slack);

/* Slack: {"text", "blocks"}; the generic webhook: {"kind": "digest", time,
 * environment, stream, headline, all_ok, least_headroom_seconds, keys: [{key,
 * state, headroom_seconds, time_left_seconds, time_left_unbounded}], text}.
 * bson_free; NULL when it cannot be built. */
char *tw_digest_slack_payload(const tw_digest_t *d);
char *tw_digest_json_payload(const tw_digest_t *d);

#endif
