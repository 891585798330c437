/*
 * follower_lease.c - one writer per --name (lease.h): lead, or stand by
 * until the lease is free; renew it while following; give it up on a clean
 * stop. A leader that finds its lease taken, or its commit fenced, stops
 * following at once and goes back to standby (TW_FOLLOWER_STANDBY).
 */
#include "follower_int.h"

#include <stdio.h>
#include <string.h>

#include "tokenwatch/duration.h"
#include "tokenwatch/log.h"
#include "tokenwatch/run.h"

static void show_leading(tw_follower_t *r, bool leading, long long epoch)
{
    tw_metrics_set(r->svc.metrics, "tokenwatch_lease_leader", NULL, leading ? 1 : 0);
    tw_metrics_set(r->svc.metrics, "tokenwatch_lease_epoch", NULL, (double)epoch);
    /* /readyz: "ready: standby" while another process leads. */
    tw_metrics_set_standby(r->svc.metrics, !leading);
}

static void stand_by(tw_follower_t *r, const tw_lease_state_t *st)
{
    char ttl[TW_DURATION_TEXT_MAX], every[TW_DURATION_TEXT_MAX];

    show_leading(r, false, st->epoch);
    if (r->told_standby)
        return;
    tw_duration_words(st->holder_ttl_ms > 0 ? st->holder_ttl_ms : r->opts.lease_ttl_ms, ttl);
    tw_duration_words(r->opts.lease_renew_ms, every);
    TW_INFO("standby: %s is led by %s (epoch %lld); taking over once its lease lapses "
            "(within %s), looking every %s",
            r->opts.name, st->holder, st->epoch, ttl, every);
    r->told_standby = true;
}

/* A key of the wrong type is no outage: it ends the run (exit 2). */
static bool lease_key_wrong(const tw_error_t *err)
{
    return err->domain == TW_ERR_REDIS && strstr(err->message, "TWTYPE") != NULL;
}

int tw__lead(tw_follower_t *r)
{
    tw_lease_state_t st;
    tw_error_t err;

    if (r->opts.lease_ttl_ms <= 0)
        return -1;
    for (;;) {
        if (tw__redis_ready(r, &err) && tw_lease_take(r->redis, &r->lease, &st, &err)) {
            tw__dependency_ok(r, &r->redis_dep);
            if (st.held)
                break;
            stand_by(r, &st);
        } else if (lease_key_wrong(&err)) {
            TW_ERROR("the lease cannot be taken: %s", err.message);
            return TW_EXIT_USAGE;
        } else {
            tw__redis_failed(r, &err);
        }
        tw__pause_ms(r, r->opts.lease_renew_ms);
        if (tw__stop_requested(r))
            return TW_EXIT_OK;
    }
    r->epoch = st.epoch;
    r->lease_renewed_mono = tw_clock_mono_ms(r->clock);
    show_leading(r, true, st.epoch);
    tw_metrics_add(r->svc.metrics, "tokenwatch_lease_takeovers_total", NULL, 1);
    TW_INFO("leading %s (lease epoch %lld, as %s)", r->opts.name, st.epoch, r->lease.owner);
    return -1;
}

/* Lost while leading: say so, and go back to standby. */
int tw__lease_lost(tw_follower_t *r, const char *why)
{
    TW_WARN("%s: stopping following at once and standing by; what was handed on since "
            "the last checkpoint is left to the new leader",
            why);
    tw_metrics_add(r->svc.metrics, "tokenwatch_lease_lost_total", NULL, 1);
    show_leading(r, false, r->epoch);
    r->epoch = 0;
    return TW_FOLLOWER_STANDBY;
}

int tw__lease_keep(tw_follower_t *r, int64_t now_mono)
{
    tw_lease_state_t st;
    tw_error_t err;
    char why[TW_LEASE_OWNER_MAX + 96];

    if (r->epoch == 0 || now_mono - r->lease_renewed_mono < r->opts.lease_renew_ms)
        return -1;
    /* The connection is free once the commit under way has answered. */
    if (!tw__commit_finish(r))
        return r->commit_code;
    /* Redis away: the commits wait for it, and a takeover meanwhile fences them. */
    if (!tw__redis_ready(r, &err) || !tw_lease_take(r->redis, &r->lease, &st, &err)) {
        if (!lease_key_wrong(&err))
            tw__redis_failed(r, &err);
        return -1;
    }
    r->lease_renewed_mono = tw_clock_mono_ms(r->clock);
    tw__dependency_ok(r, &r->redis_dep);
    if (st.held && st.epoch == r->epoch)
        return -1;
    if (st.held && st.epoch == r->epoch + 1) {
        /* The lease was gone from Redis (a failover to a replica that never
         * had it, a restart, a flush) and nobody took it in between: this
         * process took it again, one takeover later. */
        TW_WARN("the lease of %s was gone from Redis (a failover, a restart or a flush): "
                "taken again at epoch %lld",
                r->opts.name, st.epoch);
        r->epoch = st.epoch;
        show_leading(r, true, st.epoch);
        return -1;
    }
    snprintf(why, sizeof why, "the lease of %s was taken over by %s (epoch %lld)",
             r->opts.name, st.held ? "others, then lapsed back to this process" : st.holder,
             st.epoch);
    return tw__lease_lost(r, why);
}

void tw__lease_release(tw_follower_t *r)
{
    tw_error_t err;

    if (r->epoch == 0 || !r->redis)
        return;
    if (tw_lease_release(r->redis, &r->lease, &err))
        TW_INFO("lease of %s released: a standby takes over at its next look",
                r->opts.name);
    else
        TW_WARN("the lease of %s could not be released (%s): a standby takes over once "
                "it lapses",
                r->opts.name, err.message);
    r->epoch = 0;
}
