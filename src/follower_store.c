/*
 * follower_store.c - the follower's Redis side: the connection and its
 * outages, loading the checkpoint, checking the store can keep it, and the
 * commit (the position, and the events that go with it, in one step).
 */
#include "follower_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/recover.h"
#include "tokenwatch/run.h"
#include "tokenwatch/store.h"

void tw__redis_failed(tw_follower_t *r, const tw_error_t *err)
{
    redisFree(r->redis);
    r->redis = NULL;
    tw__dependency_failed(r, &r->redis_dep, err);
}

bool tw__redis_ready(tw_follower_t *r, tw_error_t *err)
{
    if (r->redis)
        return true;
    r->redis = tw_redis_connect_for(&r->redis_url, r->checkpoint_key,
                                    (int)r->opts.redis_timeout_ms, err);
    return r->redis != NULL;
}

/* Waits before the next try of d (Redis, the sink); false once a stop makes
 * waiting pointless. */
static bool backoff(tw_follower_t *r, dependency_t *d, bool final)
{
    int64_t delay = tw_backoff_next(&d->backoff, tw_clock_random01(r->clock));

    if (final) {
        int64_t left = r->stop_seen_ms + TW__FINAL_COMMIT_GRACE_MS -
                       tw_clock_mono_ms(r->clock);

        if (left <= 0)
            return false;
        /* The last checkpoint goes as soon as it can. */
        if (delay > TW__FINAL_RETRY_MS)
            delay = TW__FINAL_RETRY_MS;
        if (delay > left)
            delay = left;
        tw_clock_sleep_ms(r->clock, delay);
        return true;
    }
    tw__pause_ms(r, delay);
    return !tw__stop_requested(r);
}

/*
 * After a failed try of d: waits for the next one. Once a stop is
 * requested the tries go on for the final grace only (doing what `doing`
 * says); false when it is over.
 */
static bool try_again(tw_follower_t *r, dependency_t *d, bool *final, const char *doing)
{
    *final = *final || tw__stop_requested(r);
    if (backoff(r, d, *final))
        return true;
    if (*final)
        return false;
    /* The stop came during the wait: now the final grace begins. */
    TW_INFO("stopping: %s, for up to %d s while %s is away", doing,
            TW__FINAL_COMMIT_GRACE_MS / 1000, d->name);
    *final = true;
    return true;
}

/*
 * A commit found less in Redis than this process committed there: Redis came
 * back empty, was flushed, or failed over to a replica that was behind. The
 * position held here was written again (a checkpoint never moves back); say
 * what went with it, once per finding.
 */
static void store_lost_commits(tw_follower_t *r, const tw_commit_result_t *res)
{
    char mine[96], held[TW_CTIME_TEXT_MAX], had[96];
    bool behind;

    if (!res->written || !r->committed.has_token)
        return;
    behind = res->has_prior && tw_ctime_cmp(res->prior_time, r->committed.cluster_time) < 0;
    if (!res->stored_absent && !behind)
        return;
    tw_metrics_add(r->svc.metrics, "tokenwatch_checkpoints_lost_by_store_total", NULL, 1);
    tw__describe_position(&r->position, mine, sizeof mine);
    tw__describe_position(&r->committed, had, sizeof had);
    if (res->stored_absent) {
        TW_WARN("the checkpoint %s vanished from Redis (restarted empty, flushed, or "
                "failed over to a replica that never had it): written again at %s from "
                "the position held here%s",
                r->checkpoint_key, mine,
                tw_sink_in_redis(r->sink)
                    ? "; what the stream held went with it, consumer groups included"
                    : "");
        return;
    }
    tw_ctime_format(res->prior_time, held);
    TW_WARN("the checkpoint %s went back in Redis from %s to %s (a failover to a replica "
            "that was behind, or a restore): written again at %s; it is never followed "
            "from the older one%s",
            r->checkpoint_key, had, held, mine,
            tw_sink_in_redis(r->sink)
                ? "; events committed after that time may be missing from the stream"
                : "");
}

/* The commit under way carries a copy of the position: following moves
 * the position on meanwhile. */
static void seal_position(tw_follower_t *r)
{
    tw_checkpoint_t *p = &r->inflight_pos;

    tw_checkpoint_release(p);
    tw_checkpoint_init(p);
    tw_checkpoint_copy_position(p, &r->position);
    memcpy(p->source, r->position.source, sizeof p->source);
    p->events = r->position.events;
    p->updated_ms = r->position.updated_ms;
    p->scope = r->position.scope ? tw_strdup(r->position.scope) : NULL;
}

/* What the commit script is given: the position, and what goes with it. */
static void commit_request(tw_follower_t *r, tw_commit_t *c)
{
    memset(c, 0, sizeof *c);
    c->checkpoint_key = r->checkpoint_key;
    c->history_key = r->history_key;
    c->gaps_key = r->gaps_key;
    c->epoch_key = r->lease.epoch_key;
    c->epoch = r->epoch;
    c->wait_replicas = r->opts.redis_wait_replicas;
    c->wait_timeout_ms = (int)(r->opts.redis_timeout_ms / 2);
    c->record = &r->inflight_pos;
    if (r->recovering) {
        /* "invalidate" belongs to the token (resume it with startAfter),
         * whatever recovery reached it. */
        if (strcmp(r->inflight_pos.source, "invalidate") != 0)
            snprintf(r->inflight_pos.source, sizeof r->inflight_pos.source, "%s",
                     r->recovery_source);
        c->force = true;
        c->history_reason = r->recovery_reason[0] ? r->recovery_reason : r->recovery_source;
        c->gap_json = r->recovery_gap;
    }
    tw_sink_commit_part(r->sink, &c->sink);
}

/*
 * After a failed try of a commit: true to try again (after the backoff).
 * While Redis is away it retries with backoff; after a stop request, for a
 * short grace. A key of the wrong type is no outage: it ends the run at
 * once (exit 2); a fenced commit hands the lead over.
 */
static bool commit_retry(tw_follower_t *r, const tw_error_t *err, bool *final)
{
    char at[96];

    if (err->domain == TW_ERR_REDIS && err->code == TW_CHECKPOINT_FENCED) {
        char why[TW_ERROR_MESSAGE_MAX + 64];

        snprintf(why, sizeof why, "the checkpoint was not written: %s", err->message);
        r->commit_code = tw__lease_lost(r, why);
        return false;
    }
    if (err->domain == TW_ERR_REDIS && err->code == TW_CHECKPOINT_WRONG_TYPE) {
        /* Not an outage: retrying cannot help, and nothing was written. */
        TW_ERROR("the checkpoint cannot be written: %s%s", err->message,
                 strstr(err->message, "Redis Cluster")
                     ? ""
                     : ". Rename or delete that key (is another program using "
                       "tokenwatch's names?), then start again");
        r->commit_code = TW_EXIT_USAGE;
        return false;
    }
    tw__redis_failed(r, err);
    if (try_again(r, &r->redis_dep, final, "writing the last checkpoint"))
        return true;
    tw__describe_position(&r->committed, at, sizeof at);
    TW_ERROR("the last checkpoint could not be written (%s); the next start resumes "
             "from %s and hands on again what came after",
             err->message, r->committed.has_token ? at : "now");
    return false;
}

/* Sends the commit and waits for it until it lands (see commit_retry). */
static bool commit_send(tw_follower_t *r, const tw_commit_t *c, tw_commit_result_t *result)
{
    tw_error_t err;
    bool final = false;

    for (;;) {
        if (tw__redis_ready(r, &err) && tw_checkpoint_commit(r->redis, c, result, &err))
            return true;
        if (!commit_retry(r, &err, &final))
            return false;
    }
}

/* Says what a commit that landed did. */
static void commit_report(tw_follower_t *r, const tw_commit_result_t *result, int64_t took_us)
{
    char at[96];

    store_lost_commits(r, result);
    if (result->written)
        tw_metrics_add(r->svc.metrics, "tokenwatch_checkpoints_total", NULL, 1);
    if (!result->written) {
        char stored[TW_CTIME_TEXT_MAX];

        tw__describe_position(&r->inflight_pos, at, sizeof at);
        tw_ctime_format(result->stored_time, stored);
        TW_WARN("checkpoint %s not written: %s already holds %s, further "
                "ahead (is another tokenwatch running with --name %s?)",
                at, r->checkpoint_key, stored, r->opts.name);
    } else if (tw_log_enabled(TW_LOG_DEBUG)) {
        tw__describe_position(&r->inflight_pos, at, sizeof at);
        TW_DEBUG("checkpoint %s source=%s events=%" PRId64 " batch=%zu committed in %.3f ms",
                 at, r->inflight_pos.source, r->inflight_pos.events, tw_sink_sealed(r->sink),
                 (double)took_us / 1000.0);
    }
    if (!r->recovering)
        return;
    tw__describe_position(&r->inflight_pos, at, sizeof at);
    if (r->committed.has_token)
        TW_INFO("%s: checkpoint moved to %s; the previous one is in %s%s%s",
                r->recovery_source, at, r->history_key,
                r->recovery_gap ? ", the gap in " : "", r->recovery_gap ? r->gaps_key : "");
    else
        TW_INFO("%s: first checkpoint written at %s", r->recovery_source, at);
    r->recovering = false;
    r->has_override = false;
    bson_free(r->recovery_gap);
    r->recovery_gap = NULL;
}

/*
 * Makes the sink hand on what it holds before the checkpoint moves past it.
 * A sink that cannot write is an outage like Redis's: its events stay held
 * and are written again with backoff (no further events are taken); after a
 * stop request, for the final grace.
 */
static bool flush_sink(tw_follower_t *r)
{
    tw_error_t err;
    bool final = false;
    char at[96];

    for (;;) {
        if (tw_sink_flush(r->sink, &err)) {
            tw__dependency_ok(r, &r->sink_dep);
            return true;
        }
        tw__dependency_failed(r, &r->sink_dep, &err);
        if (try_again(r, &r->sink_dep, &final, "handing on the last events"))
            continue;
        tw__describe_position(&r->committed, at, sizeof at);
        TW_ERROR("the events since the last checkpoint could not be handed on (%s); the "
                 "checkpoint stays at %s and the next start hands them on again",
                 err.message, r->committed.has_token ? at : "nothing (none was written)");
        return false;
    }
}

/* The commit landed: the position it carried is what Redis holds. */
static void commit_landed(tw_follower_t *r, const tw_commit_result_t *result, int64_t took_us)
{
    tw__dependency_ok(r, &r->redis_dep);
    commit_report(r, result, took_us);
    tw_sink_committed(r->sink);
    tw_checkpoint_release(&r->committed);
    tw_checkpoint_init(&r->committed);
    tw_checkpoint_copy_position(&r->committed, &r->inflight_pos);
    memcpy(r->committed.source, r->inflight_pos.source, sizeof r->committed.source);
    r->committed.events = r->inflight_pos.events;
}

/*
 * Reads the answer to the commit under way (sent by tw__commit_pipelined),
 * and after a failure sends it again until it lands, as a commit does: the
 * script writes nothing twice.
 */
bool tw__commit_finish(tw_follower_t *r)
{
    tw_commit_result_t result;
    tw_error_t err;
    bool final = false;

    if (!r->inflight)
        return true;
    r->inflight = false; /* what follows may use the connection */
    if (!r->redis ||
        !tw_checkpoint_commit_receive(r->redis, &r->inflight_req, &result, &err)) {
        if (!r->redis)
            tw_error_set(&err, TW_ERR_REDIS, 0, "redis: the connection was closed");
        if (!commit_retry(r, &err, &final) || !commit_send(r, &r->inflight_req, &result))
            return false;
    }
    commit_landed(r, &result, tw_mono_us() - r->inflight_started_us);
    return true;
}

/*
 * Writes the position (and, for the redis sink, the events it covers).
 * While Redis is away it takes no further events: commit_send retries until
 * the write lands or a stop request (then for a short grace). With wait
 * false and the redis sink, the commit is only sent: following goes on
 * while Redis runs the script, and tw__commit_finish reads its answer
 * before anything else uses the connection. The other sinks always wait:
 * what they handed on is not in the commit, and a stop must find it
 * acknowledged (a kill then repeats at most one batch).
 */
static bool commit_start(tw_follower_t *r, bool wait)
{
    tw_commit_result_t result;
    tw_error_t err;

    r->commit_code = TW_EXIT_FAILURE;
    tw__tell_events(r);
    if (!r->dirty)
        return true;
    if (!flush_sink(r))
        return false;
    r->position.updated_ms = tw_clock_wall_ms(r->clock);
    seal_position(r);
    tw_sink_seal(r->sink);
    commit_request(r, &r->inflight_req);
    r->dirty = false;
    r->events_since_commit = 0;
    r->last_commit_mono = tw_clock_mono_ms(r->clock);
    r->inflight_started_us = tw_mono_us();
    if (!wait && tw_sink_in_redis(r->sink)) {
        if (tw__redis_ready(r, &err) &&
            tw_checkpoint_commit_send(r->redis, &r->inflight_req, &err)) {
            r->inflight = true;
            return true;
        }
        /* Said and retried below, on a new connection. */
        if (r->redis)
            tw__redis_failed(r, &err);
    }
    if (!commit_send(r, &r->inflight_req, &result))
        return false;
    commit_landed(r, &result, tw_mono_us() - r->inflight_started_us);
    return true;
}

bool tw__commit(tw_follower_t *r)
{
    return tw__commit_finish(r) && commit_start(r, true);
}

bool tw__commit_pipelined(tw_follower_t *r)
{
    return tw__commit_finish(r) && commit_start(r, false);
}

/*
 * Can the Redis that holds the checkpoints lose them, or can nothing be told
 * (CONFIG GET and INFO both refused)? Said at every start (once); in a
 * protected environment it stops the start unless accepted.
 */
static int judge_store(tw_follower_t *r, const tw_store_facts_t *facts)
{
    tw_store_risks_t risks;
    char text[3 * 170];
    bool protected_env = tw_env_protected(r->opts.environment, r->opts.protect, r->opts.protect_count);

    r->store_checked = true;
    tw_store_assess(facts, &risks);
    if (risks.note[0])
        TW_WARN("Redis: %s", risks.note);
    if (risks.count == 0)
        return -1;
    tw_store_risks_text(&risks, text, sizeof text);
    if (protected_env && !r->opts.accept_store_risk) {
        TW_ERROR("%s: %s. Not starting in protected environment %s: %s, or accept it with "
                 "--accept-store-risk",
                 tw_store_risks_headline(&risks), text, r->opts.environment,
                 tw_store_risks_remedy(&risks));
        return TW_EXIT_USAGE;
    }
    TW_WARN("%s: %s%s", tw_store_risks_headline(&risks), text,
            r->opts.accept_store_risk ? " (accepted: --accept-store-risk)" : "");
    return -1;
}

/* The check once the checkpoint is loaded, unless it was made before. */
int tw__check_store(tw_follower_t *r)
{
    tw_store_facts_t facts;
    tw_error_t err;

    if (r->store_checked)
        return -1;
    if (!r->redis || !tw_store_probe(r->redis, &facts, &err)) {
        r->store_checked = true;
        TW_WARN("cannot tell whether Redis keeps its data: no answer to the probe: %s",
                r->redis ? err.message : "not connected");
        return -1;
    }
    return judge_store(r, &facts);
}

/*
 * The same, before the lease is taken when Redis answers already: a
 * read-only replica refuses the lease's writes, which would otherwise be
 * ridden out as an outage for ever, the replica never named. When Redis
 * does not answer (yet), the check comes once the checkpoint is loaded.
 */
int tw__check_store_early(tw_follower_t *r)
{
    tw_store_facts_t facts;
    tw_error_t err;

    if (r->store_checked || !tw__redis_ready(r, &err) ||
        !tw_store_probe(r->redis, &facts, &err))
        return -1;
    return judge_store(r, &facts);
}

/* Loads the stored checkpoint, waiting out a Redis outage. */
int tw__load_checkpoint(tw_follower_t *r)
{
    tw_error_t err;
    bool found = false;

    for (;;) {
        if (tw__redis_ready(r, &err)) {
            if (tw_checkpoint_load(r->redis, r->checkpoint_key, &r->committed,
                                   &found, &err))
                break;
            if (tw_checkpoint_unusable(&err) && r->opts.resume_from) {
                /* A recovery replaces it: the raw record goes to the history. */
                TW_WARN("the stored checkpoint cannot be used (%s): --resume-from "
                        "replaces it, and the history keeps it as it is",
                        err.message);
                tw_checkpoint_release(&r->committed);
                tw_checkpoint_init(&r->committed);
                break;
            }
            if (tw_checkpoint_unusable(&err)) {
                TW_ERROR("the stored checkpoint cannot be used: %s. Replace it with "
                         "--resume-from SPEC or checkpoint rollback N (the history keeps "
                         "it), or delete the key",
                         err.message);
                return TW_EXIT_USAGE;
            }
        }
        tw__redis_failed(r, &err);
        if (!backoff(r, &r->redis_dep, false))
            return TW_EXIT_OK;
    }
    tw__dependency_ok(r, &r->redis_dep);
    (void)found;
    return -1;
}

/*
 * A watcher that exits 3 is restarted by its supervisor (a Deployment
 * restarts it for ever): the LOST alert for one checkpoint goes out once per
 * --alert-repeat, not once per restart. Redis remembers which checkpoint was
 * told, until the repeat is due.
 */
/* The key that remembers which lost checkpoint Slack was told of. */
static void lost_alerted_key(const tw_follower_t *r, char key[TW_KEY_MAX], char ct[TW_CTIME_TEXT_MAX])
{
    tw_checkpoint_key(r->opts.name, "lost-alerted", key);
    tw_ctime_format(r->committed.cluster_time, ct);
}

bool tw__lost_already_told(tw_follower_t *r)
{
    char key[TW_KEY_MAX], ct[TW_CTIME_TEXT_MAX];
    redisReply *reply;
    bool told;

    if (!r->redis || !r->committed.has_token)
        return false;
    lost_alerted_key(r, key, ct);
    reply = tw_redis_command(r->redis, NULL, "GET %s", key);
    told = reply && reply->type == REDIS_REPLY_STRING && strcmp(reply->str, ct) == 0;
    freeReplyObject(reply);
    return told;
}

/* Remembered only once Slack took it: a refused alert goes out again at
 * the next start. */
void tw__lost_told(tw_follower_t *r)
{
    char key[TW_KEY_MAX], ct[TW_CTIME_TEXT_MAX];

    if (!r->redis || !r->committed.has_token)
        return;
    lost_alerted_key(r, key, ct);
    freeReplyObject(tw_redis_command(r->redis, NULL, "SET %s %s PX %lld", key, ct,
                                     (long long)r->opts.alert_repeat_ms));
}
