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

void tw_tail_observe(tw_tail_t *tail, tw_ctime_t oldest, int64_t mono_ms)
{
    tail->mono_ms[tail->next] = mono_ms;
    tail->oldest_s[tail->next] = (double)oldest.t + (double)oldest.i / 4294967296.0;
    tail->next = (tail->next + 1) % TW_TAIL_SAMPLES;
    if (tail->count < TW_TAIL_SAMPLES)
        tail->count++;
}

/* The first and the last sample held. */
static void tail_ends(const tw_tail_t *tail, size_t *first, size_t *last)
{
    *last = (tail->next + TW_TAIL_SAMPLES - 1) % TW_TAIL_SAMPLES;
    *first = tail->count < TW_TAIL_SAMPLES ? 0 : tail->next;
}

bool tw_tail_measured(const tw_tail_t *tail)
{
    size_t first, last;

    if (tail->count < 2)
        return false;
    tail_ends(tail, &first, &last);
    return tail->mono_ms[last] > tail->mono_ms[first];
}

double tw_tail_rate(const tw_tail_t *tail)
{
    size_t first, last;
    double advanced, elapsed;

    if (!tw_tail_measured(tail))
        return 1.0;
    tail_ends(tail, &first, &last);
    advanced = tail->oldest_s[last] - tail->oldest_s[first];
    elapsed = (double)(tail->mono_ms[last] - tail->mono_ms[first]) / 1000.0;
    /* A resized or replaced member can report an older oldest entry: that
     * is no truncation, not a negative one. */
    return advanced > 0 ? advanced / elapsed : 0.0;
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

tw_state_t tw_guard_state(tw_ctime_t token, const tw_oplog_window_t *window,
                          const tw_measure_t *m, const tw_limit_t *warn,
                          const tw_limit_t *crit)
{
    if (tw_ctime_cmp(token, window->oldest) < 0)
        return TW_STATE_LOST;
    if (tw_guard_under(m, crit))
        return TW_STATE_CRIT;
    if (tw_guard_under(m, warn))
        return TW_STATE_WARN;
    return TW_STATE_OK;
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
