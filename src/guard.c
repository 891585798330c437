#include "tokenwatch/guard.h"

#include <string.h>

const char *tw_state_name(tw_state_t state)
{
    switch (state) {
    case TW_STATE_OK: return "OK";
    case TW_STATE_WARN: return "WARN";
    case TW_STATE_CRIT: return "CRIT";
    case TW_STATE_LOST: return "LOST";
    case TW_STATE_UNKNOWN: return "UNKNOWN";
    }
    return "UNKNOWN";
}

void tw_tail_init(tw_tail_t *tail)
{
    memset(tail, 0, sizeof *tail);
}

/* a - b in seconds; whole seconds first, so the increments keep their
 * weight next to a Unix time. */
static double ctime_diff(tw_ctime_t a, tw_ctime_t b)
{
    return (double)((int64_t)a.t - (int64_t)b.t) +
           ((double)a.i - (double)b.i) / 4294967296.0;
}

static size_t tail_at(const tw_tail_t *tail, size_t k) /* 0 = the oldest held */
{
    size_t first = tail->count < TW_TAIL_SAMPLES ? 0 : tail->next;

    return (first + k) % TW_TAIL_SAMPLES;
}

void tw_tail_observe(tw_tail_t *tail, const tw_oplog_window_t *window)
{
    if (tail->count > 0) {
        tw_ctime_t last = tail->oldest[tail_at(tail, tail->count - 1)];
        int moved = tw_ctime_cmp(window->oldest, last);

        /* A resized or replaced member can report an older oldest entry, or
         * an older newest one: that is no truncation; measure afresh. */
        if (moved < 0 || tw_ctime_cmp(window->newest, tail->now) < 0)
            tw_tail_init(tail);
        else if (moved == 0)
            goto seen;
    }
    tail->at[tail->next] = window->newest;
    tail->oldest[tail->next] = window->oldest;
    tail->next = (tail->next + 1) % TW_TAIL_SAMPLES;
    if (tail->count < TW_TAIL_SAMPLES)
        tail->count++;
seen:
    tail->now = window->newest;
    tail->window_s = (double)tw_oplog_window_seconds(window);
}

/* The sample the rate is measured from: the last move at least a horizon
 * ago, so the measure spans whole steps; else the oldest held. A tail that
 * stood still all that time measures 0 from it. */
static size_t tail_reference(const tw_tail_t *tail)
{
    double horizon = tail->window_s * TW_TAIL_HORIZON_SHARE;

    if (horizon < TW_TAIL_HORIZON_S)
        horizon = TW_TAIL_HORIZON_S;
    for (size_t k = tail->count; k-- > 0;) {
        size_t at = tail_at(tail, k);

        if (ctime_diff(tail->now, tail->at[at]) >= horizon)
            return at;
    }
    return tail_at(tail, 0);
}

bool tw_tail_measured(const tw_tail_t *tail)
{
    return tail->count > 0 && ctime_diff(tail->now, tail->at[tail_reference(tail)]) > 0;
}

double tw_tail_rate(const tw_tail_t *tail)
{
    size_t ref, last;

    if (!tw_tail_measured(tail))
        return 1.0;
    ref = tail_reference(tail);
    last = tail_at(tail, tail->count - 1);
    return ctime_diff(tail->oldest[last], tail->oldest[ref]) /
           ctime_diff(tail->now, tail->at[ref]);
}

void tw_guard_measure(const tw_oplog_window_t *window, tw_ctime_t token,
                      double rate, tw_measure_t *out)
{
    memset(out, 0, sizeof *out);
    out->window_s = tw_oplog_window_seconds(window);
    out->headroom_s = (int64_t)token.t - (int64_t)window->oldest.t;
    out->share = out->window_s > 0 ? (double)out->headroom_s / (double)out->window_s
                                   : 1.0;
    out->rate = rate;
    out->unbounded = rate <= 0.0;
    if (out->headroom_s <= 0)
        out->time_left_s = 0;
    else if (!out->unbounded)
        out->time_left_s = (double)out->headroom_s / rate;
}

bool tw_guard_under(const tw_measure_t *m, const tw_limit_t *limit)
{
    if (limit->kind == TW_LIMIT_SHARE)
        return m->share < limit->share;
    return !m->unbounded && m->time_left_s * 1000.0 < (double)limit->ms;
}

/* The limit a better state must clear: TW_GUARD_RECOVERY_MARGIN beyond it. */
static tw_limit_t with_margin(const tw_limit_t *limit)
{
    tw_limit_t l = *limit;

    l.share *= 1.0 + TW_GUARD_RECOVERY_MARGIN;
    l.ms = (int64_t)((double)l.ms * (1.0 + TW_GUARD_RECOVERY_MARGIN));
    return l;
}

static tw_state_t state_under(const tw_measure_t *m, const tw_limit_t *warn,
                              const tw_limit_t *crit)
{
    if (tw_guard_under(m, crit))
        return TW_STATE_CRIT;
    if (tw_guard_under(m, warn))
        return TW_STATE_WARN;
    return TW_STATE_OK;
}

tw_state_t tw_guard_state(tw_ctime_t token, const tw_oplog_window_t *window,
                          const tw_measure_t *m, const tw_limit_t *warn,
                          const tw_limit_t *crit, tw_state_t previous)
{
    tw_state_t now;

    if (tw_ctime_cmp(token, window->oldest) < 0)
        return window->from_retention ? TW_STATE_CRIT : TW_STATE_LOST;
    now = state_under(m, warn, crit);
    if ((previous == TW_STATE_WARN || previous == TW_STATE_CRIT) && now < previous) {
        tw_limit_t w = with_margin(warn), c = with_margin(crit);
        tw_state_t strict = state_under(m, &w, &c);

        return strict < previous ? strict : previous;
    }
    return now;
}

tw_notify_t tw_tracker_update(tw_tracker_t *t, tw_state_t state,
                              int64_t now_ms, int64_t repeat_ms)
{
    if (!t->assessed || state != t->state) {
        bool first = !t->assessed;

        t->previous = first ? TW_STATE_OK : t->state;
        t->assessed = true;
        t->state = state;
        t->since_ms = now_ms;
        if (state == TW_STATE_OK && first)
            return TW_NOTIFY_NONE;
        t->last_alert_ms = now_ms;
        return state == TW_STATE_OK ? TW_NOTIFY_RESOLVED : TW_NOTIFY_CHANGE;
    }
    if (state != TW_STATE_OK && now_ms - t->last_alert_ms >= repeat_ms) {
        t->last_alert_ms = now_ms;
        return TW_NOTIFY_REPEAT;
    }
    return TW_NOTIFY_NONE;
}

int tw_guard_exit_code(const tw_state_t *states, size_t count)
{
    bool warn = false, unknown = false;

    for (size_t k = 0; k < count; k++) {
        if (states[k] == TW_STATE_CRIT || states[k] == TW_STATE_LOST)
            return 2;
        unknown = unknown || states[k] == TW_STATE_UNKNOWN;
        warn = warn || states[k] == TW_STATE_WARN;
    }
    return unknown ? 3 : (warn ? 1 : 0);
}
