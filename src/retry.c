#include "tokenwatch/retry.h"

void tw_backoff_init(tw_backoff_t *b, int64_t base_ms, int64_t cap_ms)
{
    b->base_ms = base_ms;
    b->cap_ms = cap_ms;
    b->attempt = 0;
}

int64_t tw_backoff_next(tw_backoff_t *b, double random01)
{
    int64_t delay = b->base_ms;

    for (unsigned k = 0; k < b->attempt && delay < b->cap_ms; k++)
        delay *= 2;
    if (delay > b->cap_ms)
        delay = b->cap_ms;
    if (random01 < 0.0)
        random01 = 0.0;
    if (random01 >= 1.0)
        random01 = 0.999999;
    b->attempt++;
    return delay / 2 + (int64_t)((double)(delay - delay / 2) * random01);
}

void tw_backoff_reset(tw_backoff_t *b)
{
    b->attempt = 0;
}

bool tw_outage_fail(tw_outage_t *o, int64_t now_ms)
{
    o->failures++;
    if (o->down)
        return false;
    o->down = true;
    o->since_ms = now_ms;
    return true;
}

bool tw_outage_ok(tw_outage_t *o, int64_t now_ms)
{
    if (!o->down)
        return false;
    o->down = false;
    o->ended_after_ms = now_ms - o->since_ms;
    o->failures = 0;
    return true;
}
