/*
 * retry.h - capped exponential backoff with jitter, and outage bookkeeping.
 *
 * Both are pure: the caller passes the random value and the time, so tests
 * can check every delay and every log decision.
 */
#ifndef TOKENWATCH_RETRY_H
#define TOKENWATCH_RETRY_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t base_ms;
    int64_t cap_ms;
    unsigned attempt; /* failures so far; 0 after a success */
} tw_backoff_t;

void tw_backoff_init(tw_backoff_t *b, int64_t base_ms, int64_t cap_ms);

/*
 * The wait before the next try, then counts the failure. "Equal jitter":
 * half the capped exponential delay plus a random share of the other half,
 * so retries never hammer in lockstep and never wait less than half.
 * random01 is in [0, 1).
 */
int64_t tw_backoff_next(tw_backoff_t *b, double random01);

void tw_backoff_reset(tw_backoff_t *b);

/*
 * An outage is logged once when it starts and once when it ends, never per
 * retry. tw_outage_fail returns true when this failure starts an outage (log
 * it); tw_outage_ok returns true when this success ends one (log it, with
 * tw_outage_duration_ms).
 */
typedef struct {
    bool down;
    int64_t since_ms;
    int64_t ended_after_ms;
    unsigned failures;
} tw_outage_t;

bool tw_outage_fail(tw_outage_t *o, int64_t now_ms);
bool tw_outage_ok(tw_outage_t *o, int64_t now_ms);

#endif
