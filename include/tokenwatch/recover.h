/*
 * recover.h - moving a checkpoint on purpose: plans, gaps, history and
 * rollback.
 *
 * Every such move keeps the checkpoint it replaces in
 * tokenwatch:{NAME}:history first, and a move that skips history records
 * the stretch in tokenwatch:{NAME}:gaps as {from, to, reason, detected_ms},
 * so what was lost is on record.
 */
#ifndef TOKENWATCH_RECOVER_H
#define TOKENWATCH_RECOVER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tokenwatch/checkpoint.h"
#include "tokenwatch/error.h"
#include "tokenwatch/spec.h"
#include "tokenwatch/token.h"

/* What is known of the deployment when a SPEC is turned into a start. */
typedef struct {
    bool window_known;      /* the oplog was read: */
    tw_ctime_t oldest;      /*   its oldest entry */
    tw_ctime_t now;         /* the deployment's cluster time; needed for `now` */
    bool has_probed_oldest; /* no readable oplog: the earliest start the server */
    tw_ctime_t probed_oldest; /* accepts, found by probing; needed for `oldest` */
} tw_start_facts_t;

/* The start chosen. */
typedef struct {
    bool resume_after; /* resumeAfter the SPEC's token; else startAtOperationTime at `at` */
    tw_ctime_t at;
    bool has_time;     /* false for a token of no known layout */
    bool clamped;      /* older than the oldest entry: moved up to it */
    bool probed;       /* `oldest` came from probing */
} tw_start_choice_t;

/*
 * Turns a SPEC into a start the server still has (pure): `oldest` is the
 * oldest entry, or the earliest start the server accepts; `now` the
 * deployment's cluster time; a time or a token older than a readable
 * oplog's oldest entry becomes that entry, since a start the server no
 * longer has would lose events silently. `checkpoint` is refused (it is
 * where a normal start begins), and so is `oldest` without either fact.
 */
bool tw_start_resolve(const tw_spec_t *spec, const tw_start_facts_t *facts,
                      tw_start_choice_t *out, tw_error_t *err);

/* What a move would do (pure). */
typedef struct {
    bool has_current;
    tw_ctime_t current;
    tw_ctime_t start;
    const char *start_how; /* "resumeAfter the token", "startAtOperationTime", ... */
    bool window_known;
    tw_ctime_t oldest;
    bool clamped; /* the asked-for start was older than the oldest entry */
} tw_plan_t;

/* Seconds from the current checkpoint to the new start: above 0 a gap
 * (history skipped), below 0 an overlap (history handed on again). */
int64_t tw_plan_delta_s(const tw_plan_t *plan);

/* The start is still in the oplog (true when the window is unknown). */
bool tw_plan_inside(const tw_plan_t *plan);

/* Prints the plan: positions, gap or overlap, the oplog, the keys. */
void tw_plan_print(const tw_plan_t *plan, const char *name, const char *source,
                   FILE *out);

/* {"from": "T:I", "to": "T:I", "reason": ..., "detected_ms": ...} (bson_free). */
char *tw_gap_json(tw_ctime_t from, tw_ctime_t to, const char *reason,
                  int64_t detected_ms);

/*
 * Finding the earliest start a server accepts when its history cannot be
 * read (Amazon DocumentDB, mongos without shard access, a missing role):
 * bisect startAtOperationTime between a time it refuses and one it
 * accepts, to one second. Pure: the caller opens (and closes) a stream at
 * each probe and reports the answer.
 */
#define TW_PROBE_MAX 40

typedef struct {
    uint32_t refused_t;  /* a second the server refuses (or is assumed to) */
    uint32_t accepted_t; /* a second it accepts */
    unsigned probes;
} tw_bisect_t;

void tw_bisect_init(tw_bisect_t *b, uint32_t refused_t, uint32_t accepted_t);

/* The next second to probe; false when done (accepted_t is the answer) or
 * after TW_PROBE_MAX probes. */
bool tw_bisect_next(const tw_bisect_t *b, uint32_t *probe_t);
void tw_bisect_answer(tw_bisect_t *b, uint32_t probe_t, bool accepted);

/* Whether --protect names the environment, whatever the case ("none" names
 * no environment: protection turned off on purpose). */
bool tw_env_protected(const char *environment, char *const *protect, size_t protect_count);

/* What a start without a checkpoint does: the --on-missing-checkpoint
 * setting (now, oldest, fail or a SPEC), else fail in a protected
 * environment and now elsewhere. */
const char *tw_missing_checkpoint_policy(const char *setting, const char *environment,
                                         char *const *protect, size_t protect_count);

/* Manual recovery in a protected environment needs --confirm ENV. */
bool tw_recover_confirmed(const char *environment, char *const *protect,
                          size_t protect_count, const char *confirm,
                          tw_error_t *err);

/* The history, newest first (an entry, tw_history_entry_t, is read by
 * record.h's tw_record_history_decode). An entry that cannot be read is
 * kept in its place, marked bad with the reason, so entry numbers stay
 * Redis's. False only when Redis itself fails. */
bool tw_history_list(redisContext *c, const char *name,
                     tw_history_entry_t **entries, size_t *count,
                     tw_error_t *err);
/* Frees what tw_history_list gave. NULL ok. */
void tw_history_free(tw_history_entry_t *entries, size_t count);

/*
 * Restores the nth (1 = newest) history entry as the checkpoint, with
 * source=rollback; the current checkpoint goes to the history first. One
 * script: nothing changes unless all of it does.
 */
bool tw_history_rollback(redisContext *c, const char *name, unsigned n,
                         int64_t now_ms, tw_error_t *err);

#endif
