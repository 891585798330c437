/*
 * guard.h - how close a resume token is to falling out of the server's
 * history, and when to say so. Pure: the window, the clock and the limits
 * come in as values.
 *
 *   window    = newest entry's time - oldest entry's time (or --retention)
 *   headroom  = token's cluster time - oldest entry's time
 *   tail rate = seconds the oldest entry advances per second of cluster
 *               time (the newest entry's), from one move of the oldest
 *               entry to the last over the horizon (1.0 until measured, 0
 *               when the oplog is not being truncated)
 *   time left = headroom / tail rate, in seconds of cluster time
 *               (unbounded at rate 0)
 *
 * Every time is the deployment's: a scripted server that runs an hour a
 * second and a real one agree. Storage engines truncate in steps (whole
 * truncate markers, 10 to 100 per oplog), so the oldest entry stands still
 * and then jumps: measuring from move to move over hours, not over the
 * last few probes, keeps the rate steady between jumps.
 *
 * A LIMIT written as a share (20%) is compared with headroom / window; one
 * written as a duration (2h) with time left. A token older than the oldest
 * entry is LOST at once, unless the window is only --retention's floor:
 * the server may still hold it, so it is CRIT until the server says.
 */
#ifndef TOKENWATCH_GUARD_H
#define TOKENWATCH_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenwatch/duration.h"
#include "tokenwatch/oplog.h"
#include "tokenwatch/token.h"

typedef enum {
    TW_STATE_OK = 0,
    TW_STATE_WARN,
    TW_STATE_CRIT,
    TW_STATE_LOST,
    TW_STATE_UNKNOWN
} tw_state_t;

#define TW_STATE_COUNT 5

const char *tw_state_name(tw_state_t state);

/* Failed reads of MongoDB or Redis in a row before a token is UNKNOWN. */
#define TW_GUARD_UNKNOWN_AFTER 3

/* Moves of the oldest entry remembered, and the horizon the rate is
 * measured over: at least 6 hours of cluster time, and at least 30% of the
 * window, so that even 10 markers per oplog give three moves. */
#define TW_TAIL_SAMPLES 64
#define TW_TAIL_HORIZON_S (6 * 3600)
#define TW_TAIL_HORIZON_SHARE 0.3

/* A state gets better only once its limit is cleared by this share of it,
 * so a rate that wavers between two jumps does not flap WARN, OK, WARN. */
#define TW_GUARD_RECOVERY_MARGIN 0.1

typedef struct {
    tw_ctime_t at[TW_TAIL_SAMPLES];     /* cluster time of a move */
    tw_ctime_t oldest[TW_TAIL_SAMPLES]; /* the oldest entry after it */
    size_t count;                       /* samples held, up to TW_TAIL_SAMPLES */
    size_t next;                        /* where the next sample goes */
    tw_ctime_t now;                     /* the last probe's cluster time */
    double window_s;                    /* the last probe's window */
} tw_tail_t;

void tw_tail_init(tw_tail_t *tail);

/* Records a probe: its oldest entry, and its newest as the cluster time. */
void tw_tail_observe(tw_tail_t *tail, const tw_oplog_window_t *window);

/* Oldest-entry seconds per cluster second; 1.0 until cluster time passed. */
double tw_tail_rate(const tw_tail_t *tail);
bool tw_tail_measured(const tw_tail_t *tail);

typedef struct {
    int64_t window_s;
    int64_t headroom_s; /* negative: older than the oldest entry */
    double share;       /* headroom / window, 1 for an empty window */
    double rate;
    bool unbounded;     /* rate 0: the oplog is not being truncated */
    double time_left_s; /* 0 when lost; meaningless when unbounded */
} tw_measure_t;

void tw_guard_measure(const tw_oplog_window_t *window, tw_ctime_t token,
                      double rate, tw_measure_t *out);

/* OK, WARN, CRIT or LOST for a measured token, from its previous state
 * (OK for none): a better state needs TW_GUARD_RECOVERY_MARGIN to spare. */
tw_state_t tw_guard_state(tw_ctime_t token, const tw_oplog_window_t *window,
                          const tw_measure_t *m, const tw_limit_t *warn,
                          const tw_limit_t *crit, tw_state_t previous);

/* A LIMIT reached: the share or the time left is under it. */
bool tw_guard_under(const tw_measure_t *m, const tw_limit_t *limit);

typedef enum {
    TW_NOTIFY_NONE = 0,
    TW_NOTIFY_CHANGE,  /* a new state that is not OK */
    TW_NOTIFY_REPEAT,  /* still not OK after --alert-repeat */
    TW_NOTIFY_RESOLVED /* back to OK */
} tw_notify_t;

/* One guarded token's alerting memory. */
typedef struct {
    bool assessed;
    tw_state_t state;
    tw_state_t previous;   /* before the last change */
    int64_t since_ms;      /* wall ms the state began */
    int64_t last_alert_ms; /* wall ms of the last alert */
} tw_tracker_t;

/*
 * Feeds a state in and says whether to alert: on every change (back to OK
 * is "resolved"; a first state of OK says nothing), and again every
 * repeat_ms while not OK. At most one alert per call, so never a burst.
 */
tw_notify_t tw_tracker_update(tw_tracker_t *t, tw_state_t state,
                              int64_t now_ms, int64_t repeat_ms);

/* Nagios/Icinga exit code for the worst of the states: CRIT or LOST 2,
 * then UNKNOWN 3, then WARN 1, else 0. */
int tw_guard_exit_code(const tw_state_t *states, size_t count);

#endif
