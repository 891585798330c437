/*
 * example_alert.h - the alert the payload tests start from: a token 2 h
 * 14 min into a 48 h window, an hour before the window's end.
 */
#ifndef TOKENWATCH_TEST_EXAMPLE_ALERT_H
#define TOKENWATCH_TEST_EXAMPLE_ALERT_H

#include <stdbool.h>
#include <string.h>

#include "tokenwatch/alert.h"
#include "tokenwatch/guard.h"

#define EXAMPLE_T0 1700000000u

static inline tw_alert_t example_alert(const char *key, bool own, tw_state_t state,
                                       tw_notify_t notify)
{
    tw_alert_t a;

    memset(&a, 0, sizeof a);
    a.environment = "prod";
    a.name = "orders-cdc";
    a.key = key;
    a.own = own;
    a.state = state;
    a.previous = TW_STATE_OK;
    a.notify = notify;
    a.has_token = true;
    a.token = (tw_ctime_t){EXAMPLE_T0 + 8054, 3};
    a.window.oldest = (tw_ctime_t){EXAMPLE_T0, 1};
    a.window.newest = (tw_ctime_t){EXAMPLE_T0 + 48 * 3600, 1};
    a.has_measure = true;
    tw_guard_measure(&a.window, a.token, 1.0, &a.measure);
    a.now_ms = (int64_t)(EXAMPLE_T0 + 47 * 3600) * 1000;
    return a;
}

#endif
