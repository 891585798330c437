/*
 * follower_start.c - where a stream starts when it is not the checkpoint:
 * a SPEC resolved against the window (probing where the oplog cannot be
 * read), --resume-from, a missing checkpoint; and the recovery that moves
 * the checkpoint there.
 */
#include "follower_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/recover.h"
#include "tokenwatch/run.h"
#include "tokenwatch/spec.h"

/*
 * The deployment's cluster time now: the newest oplog entry, else the
 * operationTime of a ping, else (said once) the local clock.
 */
tw_ctime_t tw__cluster_now(tw_follower_t *r, const tw_oplog_window_t *readable)
{
    tw_ctime_t none = {0, 0}, now;
    bool from_server;

    if (readable)
        return readable->newest;
    tw_stop_watch_enter(r->svc.watch);
    now = tw_window_cluster_time(&r->window, r->client, none, tw_clock_wall_ms(r->clock),
                                 &from_server);
    tw_stop_watch_leave(r->svc.watch);
    return now;
}

/* The history window, where it can be read (the router's, on mongos). */
bool tw__read_oplog(tw_follower_t *r, tw_oplog_window_t *w, tw_error_t *err)
{
    tw_ctime_t newest;
    bool ok;

    tw_stop_watch_enter(r->svc.watch);
    ok = tw_window_read(&r->window, r->client, w, &newest, err);
    tw_stop_watch_leave(r->svc.watch);
    return ok;
}

void tw__clear_override(tw_follower_t *r)
{
    if (r->has_override_token)
        bson_destroy(&r->override_token);
    r->has_override_token = false;
    r->has_override = false;
}

/* Starts a recovery: where to start, and what to record when it lands. */
void tw__begin_recovery(tw_follower_t *r, const char *source, tw_start_kind_t kind,
                        const bson_t *token, tw_ctime_t at, char *gap_json)
{
    tw__clear_override(r);
    r->has_override = true;
    r->start_override.kind = kind;
    r->start_override.time = at;
    r->start_override.token = NULL;
    if (token) {
        bson_copy_to(token, &r->override_token);
        r->has_override_token = true;
        r->start_override.token = &r->override_token;
    }
    r->recovering = true;
    snprintf(r->recovery_source, sizeof r->recovery_source, "%s", source);
    r->recovery_reason[0] = '\0';
    bson_free(r->recovery_gap);
    r->recovery_gap = gap_json;
    /* The new position is wherever the new stream says: forget the old one,
     * which may be ahead of it. Events already handed on are committed. */
    tw_checkpoint_release(&r->position);
    tw_checkpoint_init(&r->position);
    r->position.events = r->committed.events;
    r->position.scope = tw_strdup(r->scope);
    r->dirty = false;
}

/*
 * Opens a stream at startAtOperationTime t and closes it: does the server
 * still accept that start? false with err on any other answer.
 */
static bool probe_start(tw_follower_t *r, uint32_t t, bool *accepted, tw_error_t *err)
{
    tw_start_t start = {TW_START_AT_TIME, NULL, {t, 0}};
    tw_failure_t failure;
    tw_follow_t *f = tw__stream_open(r, &start, &failure, err);
    char date[TW_UTC_TEXT_MAX];

    tw_utc_format((int64_t)t * 1000, date);
    *accepted = f != NULL;
    tw__stream_close(r, f);
    if (!*accepted && failure != TW_FAILURE_LOST)
        return false;
    TW_DEBUG("probe: startAtOperationTime %u (%s): %s", t, date,
             *accepted ? "accepted" : "refused");
    if (r->plan_out)
        fprintf(r->plan_out, "probe         startAtOperationTime %u (%s): %s\n", t, date,
                *accepted ? "accepted" : "refused");
    return true;
}

/* How far back a probe for `oldest` looks when nothing was lost. */
#define PROBE_SPAN_S (30 * 86400)

/*
 * The earliest start the server accepts, where its history cannot be read:
 * bisect between `refused` (the lost point, or 30 days back) and now minus
 * --retention (a floor: the server keeps at least that), to one second.
 */
static bool probe_oldest(tw_follower_t *r, const tw_ctime_t *lost, tw_ctime_t now,
                         tw_ctime_t *out, tw_error_t *err)
{
    uint32_t floor_t = now.t - (uint32_t)(r->opts.retention_ms / 1000);
    uint32_t refused_t = lost ? lost->t : (now.t > PROBE_SPAN_S ? now.t - PROBE_SPAN_S : 0);
    uint32_t probe;
    tw_bisect_t b;
    bool accepted;

    if (floor_t > now.t || floor_t <= refused_t)
        floor_t = now.t;
    if (!probe_start(r, floor_t, &accepted, err))
        return false;
    if (!accepted && floor_t != now.t) {
        TW_WARN("the server refuses a start at now minus --retention: it keeps less "
                "history than --retention says");
        floor_t = now.t;
    }
    if (!lost) {
        if (!probe_start(r, refused_t, &accepted, err))
            return false;
        if (accepted) {
            *out = (tw_ctime_t){refused_t, 0};
            return true;
        }
    }
    tw_bisect_init(&b, refused_t, floor_t);
    while (tw_bisect_next(&b, &probe)) {
        if (!probe_start(r, probe, &accepted, err))
            return false;
        tw_bisect_answer(&b, probe, accepted);
    }
    TW_INFO("the earliest start the server accepts is %u (to one second, %u probes)",
            b.accepted_t, b.probes);
    *out = (tw_ctime_t){b.accepted_t, 0};
    return true;
}

/*
 * `oldest`: the first oplog entry where it can be read, else found by
 * probing. The window (for the plan and the alert) comes with it.
 */
/* `oldest` where the oplog cannot be read: the earliest start the server
 * accepts, by probing. */
static bool probe_earliest(tw_follower_t *r, tw_ctime_t *out, tw_error_t *err)
{
    tw_ctime_t now = tw__cluster_now(r, NULL);

    return probe_oldest(r, r->committed.has_token && r->committed.time_source != TW_TIME_UNKNOWN
                               ? &r->committed.cluster_time
                               : NULL,
                        now, out, err);
}

/* Gathers what tw_start_resolve needs for this SPEC, and asks it. */
bool tw__resolve_start(tw_follower_t *r, const char *text, resolved_start_t *out,
                       tw_error_t *err)
{
    tw_spec_t spec;
    tw_error_t werr;
    tw_start_facts_t facts;
    tw_start_choice_t choice;
    bool ok = false;

    memset(out, 0, sizeof *out);
    memset(&facts, 0, sizeof facts);
    if (!tw_spec_parse(text, &spec, err))
        return false;
    out->window_known = tw__read_oplog(r, &out->window, &werr);
    facts.window_known = out->window_known;
    facts.oldest = out->window.oldest;
    if (spec.kind == TW_SPEC_NOW)
        facts.now = tw__cluster_now(r, out->window_known ? &out->window : NULL);
    if (spec.kind == TW_SPEC_OLDEST && !out->window_known) {
        if (!probe_earliest(r, &facts.probed_oldest, err)) {
            tw_error_prefix(err, "cannot find the oldest start the server accepts");
            goto out;
        }
        facts.has_probed_oldest = true;
    }
    if (!tw_start_resolve(&spec, &facts, &choice, err))
        goto out;
    out->kind = choice.resume_after ? TW_START_RESUME_AFTER : TW_START_AT_TIME;
    out->at = choice.at;
    out->has_time = choice.has_time;
    out->clamped = choice.clamped;
    out->probed = choice.probed;
    if (spec.kind == TW_SPEC_TOKEN) {
        bson_copy_to(&spec.token, &out->token);
        out->has_token = true;
    }
    ok = true;
out:
    tw_spec_clear(&spec);
    return ok;
}

void tw__resolved_release(resolved_start_t *rs)
{
    if (rs->has_token)
        bson_destroy(&rs->token);
    rs->has_token = false;
}

const char *tw__start_how(const resolved_start_t *rs)
{
    if (rs->kind == TW_START_RESUME_AFTER)
        return "resumeAfter the given token";
    return rs->probed ? "startAtOperationTime, the earliest start the server accepts "
                        "(found by probing, to one second)"
                      : "startAtOperationTime";
}

/*
 * --resume-from: plan the move, print it for --dry-run, or start it. The
 * checkpoint moves at the first token after the new start, with the old one
 * kept in the history and a skipped stretch recorded as a gap.
 */
int tw__resume_from(tw_follower_t *r, FILE *out)
{
    resolved_start_t rs;
    tw_plan_t plan;
    tw_error_t err;
    int64_t delta;

    if (strcasecmp(r->opts.resume_from, "checkpoint") == 0) {
        TW_INFO("--resume-from checkpoint: the normal start");
        return -1;
    }
    if (!r->opts.dry_run &&
        !tw_recover_confirmed(r->opts.environment, r->opts.protect, r->opts.protect_count,
                              r->opts.confirm, &err)) {
        TW_ERROR("%s", err.message);
        return TW_EXIT_USAGE;
    }
    if (r->opts.dry_run)
        r->plan_out = out;
    if (!tw__resolve_start(r, r->opts.resume_from, &rs, &err)) {
        TW_ERROR("--resume-from: %s", err.message);
        return TW_EXIT_USAGE;
    }
    memset(&plan, 0, sizeof plan);
    /* A token of no known layout has no time to measure a gap by. */
    plan.has_current = r->committed.has_token && rs.has_time &&
                       r->committed.time_source != TW_TIME_UNKNOWN;
    plan.current = r->committed.cluster_time;
    plan.start = rs.at;
    plan.start_how = tw__start_how(&rs);
    plan.window_known = rs.window_known;
    plan.oldest = rs.window.oldest;
    plan.clamped = rs.clamped;
    delta = tw_plan_delta_s(&plan);
    if (r->opts.dry_run) {
        tw_plan_print(&plan, r->opts.name, "resume-from", out);
        fprintf(out, "nothing was changed (--dry-run)\n");
        fflush(out);
        tw__resolved_release(&rs);
        return TW_EXIT_OK;
    }
    if (rs.clamped) {
        char asked[TW_UTC_TEXT_MAX];
        tw_utc_format(tw_ctime_wall_ms(rs.window.oldest), asked);
        TW_WARN("--resume-from %s is older than the oldest oplog entry: starting at the "
                "oldest entry (%s) instead",
                r->opts.resume_from, asked);
    }
    {
        char from[96], to[TW_CTIME_TEXT_MAX];
        tw__describe_position(&r->committed, from, sizeof from);
        tw_ctime_format(rs.at, to);
        TW_WARN("resume-from: moving %s from %s to %s (%s)%s", r->checkpoint_key,
                r->committed.has_token ? from : "nothing", to, tw__start_how(&rs),
                delta > 0 ? "; the skipped stretch is recorded as a gap" : "");
    }
    tw__begin_recovery(r, "resume-from", rs.kind, rs.has_token ? &rs.token : NULL, rs.at,
                   plan.has_current && delta > 0
                       ? tw_gap_json(r->committed.cluster_time, rs.at, "resume-from",
                                     tw_clock_wall_ms(r->clock))
                       : NULL);
    tw__resolved_release(&rs);
    return -1;
}

/*
 * No checkpoint where one was expected (a new deployment, or a store that
 * lost it): never a silent start from now. --on-missing-checkpoint says
 * what to do; by default fail in a protected environment, now elsewhere
 * (with a WARN and one alert).
 */
int tw__missing_checkpoint(tw_follower_t *r)
{
    const tw_follower_opts_t *s = &r->opts;
    const char *policy = tw_missing_checkpoint_policy(s->on_missing_checkpoint, s->environment,
                                                      s->protect, s->protect_count);
    resolved_start_t rs;
    tw_error_t err;
    char why[TW_KEY_MAX + 160];

    snprintf(why, sizeof why,
             "no checkpoint at %s (a new deployment, a Redis that lost its data, or "
             "another --name or database)",
             r->checkpoint_key);
    if (strcmp(policy, "fail") == 0) {
        TW_ERROR("%s: not starting from now on its own in environment %s. To start on "
                 "purpose: --on-missing-checkpoint now|oldest|SPEC, or --resume-from "
                 "SPEC --confirm %s",
                 why, s->environment, s->environment);
        return TW_EXIT_USAGE;
    }
    if (strcmp(policy, "now") == 0) {
        TW_WARN("%s: starting from now; whatever was written before is not handed on "
                "(--on-missing-checkpoint)",
                why);
        tw__alert_warn(r, "started without a checkpoint: following from now; whatever was "
                      "written before the start is not handed on");
        return -1;
    }
    if (!tw__resolve_start(r, policy, &rs, &err)) {
        TW_ERROR("--on-missing-checkpoint %s: %s", policy, err.message);
        return TW_EXIT_USAGE;
    }
    TW_WARN("%s: starting from %s (%s), as --on-missing-checkpoint says", why, policy,
            tw__start_how(&rs));
    tw__begin_recovery(r, "resume-from", rs.kind, rs.has_token ? &rs.token : NULL, rs.at, NULL);
    tw__resolved_release(&rs);
    return -1;
}
