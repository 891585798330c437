#include "tokenwatch/monitor.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/alert.h"
#include "tokenwatch/checkpoint.h"
#include "tokenwatch/duration.h"
#include "tokenwatch/follow.h"
#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/notify.h"
#include "tokenwatch/retry.h"
#include "tokenwatch/utf8.h"
#include "tokenwatch/window.h"

struct tw_monitor {
    tw_monitor_opts_t opts;
    tw_clock_t *clock;      /* borrowed: the process's one clock */
    tw_clock_t system_clock; /* when none was given */
    mongoc_client_t *client;
    redisContext *redis;
    tw_guarded_t *keys;
    size_t key_count;

    tw_tail_t tail;
    tw_oplog_window_t window;
    bool has_window;
    unsigned mongo_failures;
    unsigned redis_failures;
    tw_error_t mongo_error;
    tw_error_t redis_error;
    tw_outage_t mongo_outage;
    tw_outage_t redis_outage;
    bool told_unreadable; /* the history cannot be read: said once */
    tw_window_reader_t reader; /* the oplog, or on mongos every shard's */

    tw_monitor_clock_t clock_now; /* the deployment's time at the last round */

    pthread_t thread;
    bool running;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

void tw_monitor_declare_metrics(tw_metrics_t *metrics)
{
    static const struct {
        const char *name;
        tw_metric_type_t type;
        const char *help;
    } families[] = {
        {"tokenwatch_events_total", TW_METRIC_COUNTER, "Change events handed on."},
        {"tokenwatch_checkpoints_total", TW_METRIC_COUNTER, "Checkpoints written to Redis."},
        {"tokenwatch_checkpoints_lost_by_store_total", TW_METRIC_COUNTER,
         "Commits that found less in Redis than this process had committed there."},
        {"tokenwatch_checkpoint_age_seconds", TW_METRIC_GAUGE,
         "The deployment's cluster time now minus the stored checkpoint's."},
        {"tokenwatch_oplog_window_seconds", TW_METRIC_GAUGE,
         "Newest oplog entry's time minus the oldest's (or --retention)."},
        {"tokenwatch_oplog_tail_rate", TW_METRIC_GAUGE,
         "Seconds the oldest oplog entry advances per second of cluster time."},
        {"tokenwatch_oplog_edge_shard", TW_METRIC_GAUGE,
         "1 for the shard whose oplog window drives the guard (sharded clusters)."},
        {"tokenwatch_shard_up", TW_METRIC_GAUGE,
         "1 when a shard's oplog window could be read at the last round."},
        {"tokenwatch_clock_skew_seconds", TW_METRIC_GAUGE,
         "The local clock minus the deployment's cluster time."},
        {"tokenwatch_token_headroom_seconds", TW_METRIC_GAUGE,
         "A guarded token's cluster time minus the oldest oplog entry's."},
        {"tokenwatch_token_time_left_seconds", TW_METRIC_GAUGE,
         "Headroom divided by the tail rate: seconds until the token is lost."},
        {"tokenwatch_token_state", TW_METRIC_GAUGE,
         "1 for a guarded token's current state (OK, WARN, CRIT, LOST, UNKNOWN)."},
        {"tokenwatch_alerts_sent_total", TW_METRIC_COUNTER,
         "Alerts and digests delivered, all channels together."},
        {"tokenwatch_alerts_failed_total", TW_METRIC_COUNTER,
         "Alerts and digests refused or given up after retries, all channels together."},
        {"tokenwatch_alerts_dropped_total", TW_METRIC_COUNTER,
         "Alerts dropped because the send queue was full."},
        {"tokenwatch_records_failed_total", TW_METRIC_COUNTER,
         "Gap records and alerts that could not be built (logged; nothing recorded or sent)."},
        {"tokenwatch_fallbacks_total", TW_METRIC_COUNTER,
         "Fallback replays after a lost resume point."},
        {"tokenwatch_resume_attempts_total", TW_METRIC_COUNTER,
         "Change streams opened (aggregate commands), first start and resumes."},
        {"tokenwatch_lease_leader", TW_METRIC_GAUGE,
         "1 while this process holds its --name's lease and follows, 0 as a standby."},
        {"tokenwatch_lease_epoch", TW_METRIC_GAUGE,
         "The lease's epoch: takeovers of this --name so far."},
        {"tokenwatch_lease_takeovers_total", TW_METRIC_COUNTER,
         "Times this process took the lease (the first start included)."},
        {"tokenwatch_lease_lost_total", TW_METRIC_COUNTER,
         "Times this process lost the lease while leading (taken over, or fenced)."},
    };

    for (size_t k = 0; k < sizeof families / sizeof families[0]; k++) {
        tw_metrics_declare(metrics, families[k].name, families[k].type, families[k].help);
        /* A counter exists from the start: rate() needs its first 0. */
        if (families[k].type == TW_METRIC_COUNTER)
            tw_metrics_add(metrics, families[k].name, NULL, 0);
    }
    tw_notify_declare_metrics(metrics);
}

static void add_key(tw_monitor_t *m, const char *key, bool own)
{
    tw_guarded_t *grown = tw_realloc(m->keys, (m->key_count + 1) * sizeof *grown);

    m->keys = grown;
    memset(&grown[m->key_count], 0, sizeof grown[0]);
    grown[m->key_count].key = tw_strdup(key);
    grown[m->key_count].own = own;
    m->key_count++;
    if (m->opts.metrics && tw_metrics_label_shortened(key)) {
        char labels[TW_METRICS_LABELS_MAX];

        /* Once per key: its series keep this label for good. */
        if (tw_metrics_label(labels, sizeof labels, "key", key))
            TW_INFO("guard: a key of %zu bytes is too long for a metric label: its "
                    "series are labelled %s",
                    strlen(key), labels);
    }
}

void tw_monitor_opts_from_settings(const tw_settings_t *s, tw_monitor_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->name = s->name;
    opts->environment = s->environment;
    opts->mongo_uri = s->mongo_uri;
    opts->guard = s->guard;
    opts->guard_count = s->guard_count;
    opts->shard_uri = s->shard_uri;
    opts->shard_uri_count = s->shard_uri_count;
    opts->monitor_interval_ms = s->monitor_interval_ms;
    opts->retention_ms = s->retention_ms;
    opts->alert_repeat_ms = s->alert_repeat_ms;
    opts->redis_timeout_ms = s->redis_timeout_ms;
    opts->warn_at = s->warn_at;
    opts->crit_at = s->crit_at;
}

static void init_reader(tw_monitor_t *m)
{
    tw_window_opts_t wo;

    memset(&wo, 0, sizeof wo);
    wo.read_shards = true;
    wo.mongo_uri = m->opts.mongo_uri;
    wo.shard_uri = m->opts.shard_uri;
    wo.shard_uri_count = m->opts.shard_uri_count;
    wo.who = "guard: ";
    tw_window_reader_init(&m->reader, &wo);
}

tw_monitor_t *tw_monitor_new(const tw_monitor_opts_t *opts)
{
    tw_monitor_t *m = tw_calloc(1, sizeof *m);
    char own[TW_KEY_MAX];

    m->opts = *opts;
    if (m->opts.unknown_after == 0)
        m->opts.unknown_after = TW_GUARD_UNKNOWN_AFTER;
    if (opts->clock) {
        m->clock = opts->clock;
    } else {
        tw_clock_init_system(&m->system_clock);
        m->clock = &m->system_clock;
    }
    tw_tail_init(&m->tail);
    init_reader(m);
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->wake, NULL);
    tw_checkpoint_key(opts->name, "checkpoint", own);
    add_key(m, own, true);
    for (size_t k = 0; k < opts->guard_count; k++)
        if (strcmp(opts->guard[k], own) != 0)
            add_key(m, opts->guard[k], false);
    return m;
}

/* The oplog window: the replica set's, or on mongos the edge shard's. */
static bool read_history(tw_monitor_t *m, tw_oplog_window_t *w, tw_ctime_t *newest,
                         tw_error_t *err)
{
    if (!m->client)
        m->client = mongoc_client_pool_pop(m->opts.pool);
    return tw_window_read(&m->reader, m->client, w, newest, err);
}

/* The deployment's time, and the local clock's skew from it. */
static void read_cluster_time(tw_monitor_t *m, tw_ctime_t newest, int64_t now_wall)
{
    tw_monitor_clock_t *c = &m->clock_now;

    c->now = tw_window_cluster_time(&m->reader, m->client, newest, now_wall, &c->from_server);
    c->skew_s = c->from_server ? (double)(now_wall - tw_ctime_wall_ms(c->now)) / 1000.0 : 0;
}

static void history_unreadable(tw_monitor_t *m, const tw_error_t *err, int64_t now_mono)
{
    char retention[TW_DURATION_TEXT_MAX];

    if (m->opts.retention_ms > 0) {
        tw_duration_words(m->opts.retention_ms, retention);
        if (!m->told_unreadable)
            TW_INFO("guard: %s; --retention %s stands in as the window's floor",
                    err->message, retention);
        m->told_unreadable = true;
        tw_oplog_from_retention(tw_ctime_wall_ms(m->clock_now.now),
                                m->opts.retention_ms, &m->window);
        m->has_window = true;
        m->mongo_failures = 0;
        return;
    }
    m->mongo_failures++;
    m->mongo_error = *err;
    if (err->code == TW_OPLOG_UNAUTHORIZED || tw_window_sharded(&m->reader)) {
        if (!m->told_unreadable)
            TW_ERROR("guard: %s", err->message);
        m->told_unreadable = true;
    } else if (tw_outage_fail(&m->mongo_outage, now_mono)) {
        TW_WARN("guard: cannot read the oplog window: %s", err->message);
    }
}

static void probe_window(tw_monitor_t *m, int64_t now_wall, int64_t now_mono)
{
    tw_oplog_window_t w;
    tw_ctime_t newest = {0, 0};
    tw_error_t err;
    bool readable = read_history(m, &w, &newest, &err);

    read_cluster_time(m, newest, now_wall);
    if (!readable) {
        history_unreadable(m, &err, now_mono);
        return;
    }
    m->window = w;
    m->has_window = true;
    m->mongo_failures = 0;
    tw_tail_observe(&m->tail, &w);
    if (tw_outage_ok(&m->mongo_outage, now_mono) || m->told_unreadable)
        TW_INFO("guard: the oplog window can be read again");
    m->told_unreadable = false;
}

/* A guarded key's position. The own checkpoint is read as `run` reads it
 * (a hash, decoded whole), so status never calls OK what run refuses;
 * another consumer's key may hold a hash, a token or a time. */
static bool read_position(tw_monitor_t *m, const tw_guarded_t *g, tw_ctime_t *pos,
                          bool *found, tw_error_t *err)
{
    tw_checkpoint_t cp;
    bool ok;

    if (!g->own)
        return tw_checkpoint_read_position(m->redis, g->key, pos, found, err);
    ok = tw_checkpoint_load(m->redis, g->key, &cp, found, err);
    if (ok && *found)
        *pos = cp.cluster_time;
    tw_checkpoint_release(&cp);
    return ok;
}

/* Redis Cluster: key is served by another node; connect there instead. */
static bool follow_slot(tw_monitor_t *m, const char *key, tw_error_t *err)
{
    redisFree(m->redis);
    m->redis = tw_redis_connect_for(m->opts.redis_url, key, (int)m->opts.redis_timeout_ms, err);
    return m->redis != NULL;
}

/* Reads every guarded key; false when Redis itself failed. */
static bool read_keys(tw_monitor_t *m, int64_t now_mono, tw_error_t *results,
                      bool *found, tw_ctime_t *positions)
{
    tw_error_t err;

    if (!m->redis)
        m->redis = tw_redis_connect_for(m->opts.redis_url, m->keys[0].key,
                                        (int)m->opts.redis_timeout_ms, &err);
    if (!m->redis)
        goto failed;
    for (size_t k = 0; k < m->key_count; k++) {
        tw_error_clear(&results[k]);
        if (!read_position(m, &m->keys[k], &positions[k], &found[k], &results[k]) &&
            tw_redis_moved(&results[k])) {
            if (!follow_slot(m, m->keys[k].key, &err))
                goto failed;
            tw_error_clear(&results[k]);
            read_position(m, &m->keys[k], &positions[k], &found[k], &results[k]);
        }
        /* A record at fault is that key's UNKNOWN; anything else is Redis's. */
        if (results[k].domain != TW_ERR_NONE && !tw_checkpoint_unusable(&results[k])) {
            err = results[k];
            redisFree(m->redis);
            m->redis = NULL;
            goto failed;
        }
    }
    m->redis_failures = 0;
    if (tw_outage_ok(&m->redis_outage, now_mono))
        TW_INFO("guard: Redis can be read again");
    return true;
failed:
    m->redis_failures++;
    m->redis_error = err;
    if (tw_outage_fail(&m->redis_outage, now_mono))
        TW_WARN("guard: cannot read the guarded keys: %s", err.message);
    return false;
}

static void update_metrics(tw_monitor_t *m, const tw_guarded_t *g)
{
    char labels[TW_METRICS_LABELS_MAX];

    /* Never the series without the key: it would mix keys. */
    if (!m->opts.metrics || !tw_metrics_label(labels, sizeof labels, "key", g->key))
        return;
    if (g->has_measure && g->state != TW_STATE_UNKNOWN) {
        tw_metrics_set(m->opts.metrics, "tokenwatch_token_headroom_seconds", labels,
                       (double)g->measure.headroom_s);
        tw_metrics_set(m->opts.metrics, "tokenwatch_token_time_left_seconds", labels,
                       g->measure.unbounded ? INFINITY : g->measure.time_left_s);
    }
    for (int s = 0; s < TW_STATE_COUNT; s++) {
        char with_state[TW_METRICS_LABELS_MAX];

        memcpy(with_state, labels, sizeof labels);
        if (!tw_metrics_label_append(with_state, sizeof with_state, "state",
                                     tw_state_name((tw_state_t)s)))
            continue;
        tw_metrics_set(m->opts.metrics, "tokenwatch_token_state", with_state,
                       g->assessed && g->state == (tw_state_t)s ? 1.0 : 0.0);
    }
    if (g->own && g->has_token)
        tw_metrics_set(m->opts.metrics, "tokenwatch_checkpoint_age_seconds", NULL,
                       (double)(tw_ctime_wall_ms(m->clock_now.now) -
                                tw_ctime_wall_ms(g->token)) /
                           1000.0);
}

static void shard_metrics(tw_monitor_t *m)
{
    const tw_shards_t *shards = tw_window_shards(&m->reader);

    for (size_t k = 0; shards && k < shards->count; k++) {
        const tw_shard_t *shard = &shards->shards[k];
        char labels[TW_METRICS_LABELS_MAX];

        tw_metrics_label(labels, sizeof labels, "shard", shard->name);
        tw_metrics_set(m->opts.metrics, "tokenwatch_shard_up", labels, shard->readable);
        tw_metrics_set(m->opts.metrics, "tokenwatch_oplog_edge_shard", labels,
                       shards->has_edge && shards->edge == k);
        if (shard->readable)
            tw_metrics_set(m->opts.metrics, "tokenwatch_oplog_window_seconds", labels,
                           (double)tw_oplog_window_seconds(&shard->window));
    }
}

static void window_metrics(tw_monitor_t *m)
{
    if (!m->opts.metrics)
        return;
    if (m->clock_now.from_server)
        tw_metrics_set(m->opts.metrics, "tokenwatch_clock_skew_seconds", NULL,
                       m->clock_now.skew_s);
    if (tw_window_sharded(&m->reader))
        shard_metrics(m);
    if (m->has_window && m->mongo_failures == 0) {
        tw_metrics_set(m->opts.metrics, "tokenwatch_oplog_window_seconds", NULL,
                       (double)tw_oplog_window_seconds(&m->window));
        tw_metrics_set(m->opts.metrics, "tokenwatch_oplog_tail_rate", NULL,
                       tw_monitor_tail_rate(m));
    }
}

static void alert(tw_monitor_t *m, const tw_guarded_t *g, tw_notify_t notify)
{
    const tw_shards_t *shards;
    tw_alert_t a;
    char *text;

    memset(&a, 0, sizeof a);
    a.environment = m->opts.environment;
    a.name = m->opts.name;
    a.key = g->key;
    a.own = g->own;
    a.state = g->state;
    a.previous = g->tracker.previous;
    a.notify = notify;
    a.has_token = g->has_token;
    a.token = g->token;
    a.has_measure = g->has_measure && g->state != TW_STATE_UNKNOWN;
    a.measure = g->measure;
    a.window = m->window;
    shards = tw_window_shards(&m->reader);
    if (shards && shards->has_edge && !m->window.from_retention) {
        a.edge_shard = shards->shards[shards->edge].name;
        a.shard_count = shards->count;
    }
    a.reason = g->reason[0] ? g->reason : NULL;
    a.now_ms = tw_ctime_wall_ms(m->clock_now.now);
    text = tw_alert_text(&a);
    if (g->state == TW_STATE_OK)
        TW_INFO("alert: %s", text);
    else
        TW_WARN("alert: %s", text);
    if (tw_notify_any(m->opts.notifiers)) {
        char summary[TW_KEY_MAX + 32];

        tw_utf8_format(summary, sizeof summary, "%s %s", g->key, tw_state_name(g->state));
        tw_notify(m->opts.notifiers, &a, summary);
    }
    bson_free(text);
}

static void assess(tw_monitor_t *m, tw_guarded_t *g, const tw_error_t *read_err,
                   bool read_ok, bool found, tw_ctime_t position)
{
    double rate = tw_monitor_tail_rate(m);
    tw_state_t previous = g->assessed ? g->state : TW_STATE_OK;
    unsigned after = m->opts.unknown_after;

    g->reason[0] = '\0';
    if (m->mongo_failures >= after || m->redis_failures >= after) {
        const tw_error_t *e = m->mongo_failures >= after ? &m->mongo_error : &m->redis_error;

        g->state = TW_STATE_UNKNOWN;
        tw_utf8_format(g->reason, sizeof g->reason, "%s unreadable for %u rounds: %s",
                 m->mongo_failures >= after ? "MongoDB" : "Redis",
                 m->mongo_failures >= after ? m->mongo_failures : m->redis_failures,
                 e->message);
        g->assessed = true;
        return;
    }
    if (m->mongo_failures > 0 || m->redis_failures > 0 || !m->has_window)
        return; /* a blip: keep the last state until it lasts */
    if (!read_ok) {
        g->state = TW_STATE_UNKNOWN;
        g->has_token = false;
        tw_utf8_format(g->reason, sizeof g->reason, "%s", read_err->message);
        g->assessed = true;
        return;
    }
    if (!found) {
        if (g->own && !m->opts.own_missing_is_unknown)
            return;
        g->state = TW_STATE_UNKNOWN;
        g->has_token = false;
        tw_utf8_format(g->reason, sizeof g->reason, "%s does not exist%s", g->key,
                 g->own ? " (no checkpoint yet)" : "");
        g->assessed = true;
        return;
    }
    g->has_token = true;
    g->token = position;
    g->has_measure = true;
    tw_guard_measure(&m->window, position, rate, &g->measure);
    g->state = tw_guard_state(position, &m->window, &g->measure, &m->opts.warn_at,
                              &m->opts.crit_at, previous);
    g->assessed = true;
}

void tw_monitor_tick(tw_monitor_t *m)
{
    int64_t now_wall = tw_clock_wall_ms(m->clock);
    int64_t now_mono = tw_clock_mono_ms(m->clock);
    size_t n = m->key_count;
    tw_error_t *errors = tw_calloc(n, sizeof *errors);
    bool *found = tw_calloc(n, sizeof *found);
    tw_ctime_t *positions = tw_calloc(n, sizeof *positions);
    bool redis_ok;

    probe_window(m, now_wall, now_mono);
    redis_ok = read_keys(m, now_mono, errors, found, positions);
    window_metrics(m);
    for (size_t k = 0; k < n; k++) {
        tw_guarded_t *g = &m->keys[k];
        bool read_ok = redis_ok && errors[k].domain == TW_ERR_NONE;

        assess(m, g, &errors[k], read_ok, found[k], positions[k]);
        if (!g->assessed)
            continue;
        if (m->opts.alerts) {
            tw_notify_t notify = tw_tracker_update(&g->tracker, g->state, now_wall,
                                                   m->opts.alert_repeat_ms);
            /* The follower tells of its own lost token itself, with what it
             * did about it (exit or replay). */
            bool follower_tells = g->own && g->state == TW_STATE_LOST;
            if (notify != TW_NOTIFY_NONE && !follower_tells)
                alert(m, g, notify);
        }
        update_metrics(m, g);
    }
    free(errors);
    free(found);
    free(positions);
    if (m->opts.after_round)
        m->opts.after_round(m->opts.after_round_ctx, m);
}

size_t tw_monitor_keys(const tw_monitor_t *m, const tw_guarded_t **keys)
{
    *keys = m->keys;
    return m->key_count;
}

const tw_oplog_window_t *tw_monitor_window(const tw_monitor_t *m)
{
    return m->has_window ? &m->window : NULL;
}

double tw_monitor_tail_rate(const tw_monitor_t *m)
{
    /* A --retention window moves with the clock: one second a second. */
    return m->has_window && m->window.from_retention ? 1.0 : tw_tail_rate(&m->tail);
}

const tw_shards_t *tw_monitor_shards(const tw_monitor_t *m)
{
    return tw_window_shards(&m->reader);
}

const tw_monitor_clock_t *tw_monitor_clock(const tw_monitor_t *m)
{
    return &m->clock_now;
}

bool tw_monitor_round_ok(const tw_monitor_t *m, char *why, size_t n)
{
    if (m->mongo_failures > 0)
        tw_utf8_format(why, n, "MongoDB: %s", m->mongo_error.message);
    else if (m->redis_failures > 0)
        tw_utf8_format(why, n, "Redis: %s", m->redis_error.message);
    return m->mongo_failures == 0 && m->redis_failures == 0;
}

static void *monitor_main(void *arg)
{
    tw_monitor_t *m = arg;

    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        pthread_mutex_unlock(&m->lock);
        tw_monitor_tick(m);
        pthread_mutex_lock(&m->lock);
        tw_clock_wait(m->clock, &m->wake, &m->lock, &m->stopping, m->opts.monitor_interval_ms);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

bool tw_monitor_start(tw_monitor_t *m, tw_error_t *err)
{
    pthread_condattr_t attr;

    /* Sleep on the monotonic clock: a wall clock step must not stall it. */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_destroy(&m->wake);
    pthread_cond_init(&m->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&m->thread, NULL, monitor_main, m) != 0) {
        tw_error_set(err, TW_ERR_SYSTEM, 0, "cannot start the guard thread");
        return false;
    }
    m->running = true;
    return true;
}

void tw_monitor_stop(tw_monitor_t *m)
{
    if (!m || !m->running)
        return;
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_cond_signal(&m->wake);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
    m->running = false;
}

void tw_monitor_free(tw_monitor_t *m)
{
    if (!m)
        return;
    tw_monitor_stop(m);
    tw_window_reader_release(&m->reader);
    if (m->client)
        mongoc_client_pool_push(m->opts.pool, m->client);
    redisFree(m->redis);
    for (size_t k = 0; k < m->key_count; k++)
        free(m->keys[k].key);
    free(m->keys);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
