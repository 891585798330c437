#include "tokenwatch/monitor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
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
#include "tokenwatch/sources.h"
#include "tokenwatch/utf8.h"
#include "tokenwatch/window.h"

/* A --guard value's store read at the last round (HTTP and MongoDB ones;
 * Redis ones share the monitor's Redis counters). */
typedef struct {
    unsigned failures;
    tw_error_t error;
    tw_outage_t outage;
    bool parse_failed; /* the value names nothing: error says why, every round */
} source_state_t;

struct tw_monitor {
    tw_monitor_opts_t opts;
    tw_clock_t *clock;      /* borrowed: the process's one clock */
    tw_clock_t system_clock; /* when none was given */
    mongoc_client_t *client;
    redisContext *redis;
    tw_guarded_t *keys;
    size_t key_count;
    tw_source_t *sources;    /* the --guard values, parsed */
    source_state_t *source_state; /* 1 + source_count: [0] is the own checkpoint */
    size_t source_count;

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

#define LABELS_ROOM (3 * TW_METRICS_LABELS_MAX)

/* key="..." as always for tokenwatch's own forms; position and consumer too for the others. */
static char *build_labels(const tw_guarded_t *g)
{
    char labels[LABELS_ROOM];

    if (!tw_metrics_label(labels, TW_METRICS_LABELS_MAX, "key", g->key))
        return NULL;
    if (g->consumer != TW_CONSUMER_TOKENWATCH || g->position[0]) {
        if (g->position[0] && !tw_metrics_label_append(labels, sizeof labels, "position",
                                                       g->position))
            return NULL;
        if (!tw_metrics_label_append(labels, sizeof labels, "consumer",
                                     tw_consumer_name(g->consumer)))
            return NULL;
    }
    return tw_strdup(labels);
}

static char *build_display(const tw_guarded_t *g)
{
    size_t size = strlen(g->key) + strlen(g->position) + 32;
    char *text = tw_malloc(size);

    if (g->consumer == TW_CONSUMER_TOKENWATCH && !g->position[0])
        snprintf(text, size, "%s", g->key);
    else if (g->position[0])
        snprintf(text, size, "%s %s (%s)", g->key, g->position, tw_consumer_name(g->consumer));
    else
        snprintf(text, size, "%s (%s)", g->key, tw_consumer_name(g->consumer));
    return text;
}

static void init_key(tw_monitor_t *m, tw_guarded_t *g, size_t source, const char *key,
                     const char *position, tw_consumer_t consumer)
{
    memset(g, 0, sizeof *g);
    g->key = tw_strdup(key);
    g->position = tw_strdup(position);
    g->consumer = consumer;
    g->own = source == 0;
    g->source = source;
    g->display = build_display(g);
    g->labels = build_labels(g);
    if (m->opts.metrics && tw_metrics_label_shortened(key)) {
        char labels[TW_METRICS_LABELS_MAX];

        /* Once per key: its series keep this label for good. */
        if (tw_metrics_label(labels, sizeof labels, "key", key))
            TW_INFO("guard: a key of %zu bytes is too long for a metric label: its "
                    "series are labelled %s",
                    strlen(key), labels);
    }
}

static void release_key(tw_guarded_t *g)
{
    free(g->key);
    free(g->position);
    free(g->display);
    free(g->labels);
}

/* A position no longer there: its series go with it. */
static void drop_key(tw_monitor_t *m, tw_guarded_t *g)
{
    static const char *const families[] = {"tokenwatch_token_headroom_seconds",
                                           "tokenwatch_token_time_left_seconds"};

    for (size_t k = 0; m->opts.metrics && g->labels && k < 2; k++)
        tw_metrics_remove(m->opts.metrics, families[k], g->labels);
    for (int s = 0; m->opts.metrics && g->labels && s < TW_STATE_COUNT; s++) {
        char with_state[LABELS_ROOM + 64];

        snprintf(with_state, sizeof with_state, "%s", g->labels);
        if (tw_metrics_label_append(with_state, sizeof with_state, "state",
                                    tw_state_name((tw_state_t)s)))
            tw_metrics_remove(m->opts.metrics, "tokenwatch_token_state", with_state);
    }
    release_key(g);
}

static void add_sources(tw_monitor_t *m, const char *own)
{
    const tw_monitor_opts_t *o = &m->opts;

    m->sources = tw_calloc(o->guard_count + 1, sizeof *m->sources);
    m->source_state = tw_calloc(o->guard_count + 2, sizeof *m->source_state);
    for (size_t k = 0; k < o->guard_count; k++) {
        tw_source_t *s = &m->sources[m->source_count];
        source_state_t *st = &m->source_state[m->source_count + 1];

        if (strcmp(o->guard[k], own) == 0)
            continue;
        if (!tw_source_parse(o->guard[k], s, &st->error)) {
            TW_ERROR("guard: %s", st->error.message);
            st->parse_failed = true;
            s->kind = TW_SOURCE_KEY;
            s->spec = tw_strdup("");
            s->shown = tw_strdup("--guard (a value that names nothing)");
        }
        m->source_count++;
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
    m->keys = tw_calloc(1, sizeof *m->keys);
    init_key(m, &m->keys[0], 0, own, "", TW_CONSUMER_TOKENWATCH);
    m->key_count = 1;
    add_sources(m, own);
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

/* The own checkpoint, read as `run` reads it (a hash, decoded whole), so
 * status never calls OK what run refuses. */
static bool read_own(tw_monitor_t *m, const char *key, tw_positions_t *out, tw_error_t *err)
{
    tw_checkpoint_t cp;
    bool found = false;
    tw_error_t e;
    tw_position_t *p;

    tw_error_clear(&e);
    if (!tw_checkpoint_load(m->redis, key, &cp, &found, &e) && !tw_checkpoint_unusable(&e)) {
        tw_checkpoint_release(&cp);
        *err = e;
        return false;
    }
    p = tw_positions_add(out, key, "", TW_CONSUMER_TOKENWATCH);
    if (e.domain != TW_ERR_NONE) {
        p->kind = TW_POSITION_BAD;
        snprintf(p->reason, sizeof p->reason, "%s", e.message);
    } else {
        p->kind = found ? TW_POSITION_TIME : TW_POSITION_MISSING;
        p->time = cp.cluster_time;
    }
    tw_checkpoint_release(&cp);
    return true;
}

/* Where each source's positions are in the round's readings. */
typedef struct {
    size_t first;
    size_t count;
    bool ok;
} range_t;

/* The own checkpoint and every Redis source; false when Redis itself failed. */
static bool read_redis(tw_monitor_t *m, int64_t now_mono, tw_positions_t *out, range_t *ranges)
{
    tw_source_io_t io = {NULL, NULL, m->opts.redis_timeout_ms};
    tw_error_t err;

    if (!m->redis)
        m->redis = tw_redis_connect_for(m->opts.redis_url, m->keys[0].key,
                                        (int)m->opts.redis_timeout_ms, &err);
    if (!m->redis)
        goto failed;
    io.redis = m->redis;
    ranges[0].first = out->count;
    if (!read_own(m, m->keys[0].key, out, &err))
        goto failed_drop;
    ranges[0].count = out->count - ranges[0].first;
    for (size_t k = 0; k < m->source_count; k++) {
        range_t *r = &ranges[k + 1];

        if (!tw_source_in_redis(&m->sources[k]) || m->source_state[k + 1].parse_failed)
            continue;
        r->first = out->count;
        if (!tw_source_read(&m->sources[k], &io, out, &err))
            goto failed_drop;
        r->count = out->count - r->first;
    }
    for (size_t k = 0; k <= m->source_count; k++)
        ranges[k].ok = k == 0 || (tw_source_in_redis(&m->sources[k - 1]) &&
                                  !m->source_state[k].parse_failed);
    m->redis_failures = 0;
    if (tw_outage_ok(&m->redis_outage, now_mono))
        TW_INFO("guard: Redis can be read again");
    return true;
failed_drop:
    redisFree(m->redis);
    m->redis = NULL;
failed:
    m->redis_failures++;
    m->redis_error = err;
    if (tw_outage_fail(&m->redis_outage, now_mono))
        TW_WARN("guard: cannot read the guarded keys: %s", err.message);
    return false;
}

/* Kafka Connect and Monstache: each its own store, its own failures. */
static void read_elsewhere(tw_monitor_t *m, int64_t now_mono, tw_positions_t *out,
                           range_t *ranges)
{
    tw_source_io_t io = {NULL, NULL, m->opts.redis_timeout_ms};

    for (size_t k = 0; k < m->source_count; k++) {
        tw_source_t *s = &m->sources[k];
        source_state_t *st = &m->source_state[k + 1];
        range_t *r = &ranges[k + 1];
        tw_error_t err;

        if (tw_source_in_redis(s) || st->parse_failed)
            continue;
        if (s->kind == TW_SOURCE_MONSTACHE && !m->client)
            m->client = mongoc_client_pool_pop(m->opts.pool);
        io.mongo = m->client;
        r->first = out->count;
        r->ok = tw_source_read(s, &io, out, &err);
        r->count = out->count - r->first;
        if (r->ok) {
            st->failures = 0;
            if (tw_outage_ok(&st->outage, now_mono))
                TW_INFO("guard: %s can be read again", s->shown);
            continue;
        }
        st->failures++;
        st->error = err;
        if (tw_outage_fail(&st->outage, now_mono))
            TW_WARN("guard: cannot read %s", err.message);
    }
}

/* A value that names nothing: one position at fault, every round. */
static void read_unparsed(tw_monitor_t *m, tw_positions_t *out, range_t *ranges)
{
    for (size_t k = 0; k < m->source_count; k++) {
        const source_state_t *st = &m->source_state[k + 1];
        tw_position_t *p;

        if (!st->parse_failed)
            continue;
        ranges[k + 1].first = out->count;
        p = tw_positions_add(out, m->sources[k].shown, "", TW_CONSUMER_TOKENWATCH);
        p->kind = TW_POSITION_BAD;
        snprintf(p->reason, sizeof p->reason, "%s", st->error.message);
        ranges[k + 1].count = 1;
        ranges[k + 1].ok = true;
    }
}

/* The failures in a row of the store a guarded position is read from. */
static unsigned store_failures(const tw_monitor_t *m, const tw_guarded_t *g,
                               const tw_error_t **err, const char **what)
{
    const tw_source_t *s = g->source > 0 ? &m->sources[g->source - 1] : NULL;

    if (!s || tw_source_in_redis(s)) {
        *err = &m->redis_error;
        *what = "Redis";
        return m->redis_failures;
    }
    *err = &m->source_state[g->source].error;
    *what = s->kind == TW_SOURCE_CONNECT ? "Kafka Connect" : "MongoDB";
    return m->source_state[g->source].failures;
}

/* The position of source src called key/name/consumer among the last
 * round's, starting at *hint (rounds read in the same order); SIZE_MAX. */
static size_t find_key(const tw_monitor_t *m, size_t src, const tw_position_t *p,
                       const bool *taken, size_t *hint)
{
    for (size_t n = 0; n < m->key_count; n++) {
        size_t k = (*hint + n) % m->key_count;
        const tw_guarded_t *g = &m->keys[k];

        if (!taken[k] && g->source == src && g->consumer == p->consumer &&
            strcmp(g->position, p->name) == 0 && strcmp(g->key, p->key) == 0) {
            *hint = k + 1;
            return k;
        }
    }
    return SIZE_MAX;
}

typedef struct {
    tw_guarded_t *keys;
    const tw_position_t **read; /* NULL: kept from the last round, not read */
    size_t count;
} next_t;

static void keep_unread(tw_monitor_t *m, size_t src, bool *taken, next_t *next)
{
    const tw_error_t *err;
    const char *what;
    size_t before = next->count;

    for (size_t k = 0; k < m->key_count; k++) {
        if (taken[k] || m->keys[k].source != src)
            continue;
        taken[k] = true;
        next->read[next->count] = NULL;
        next->keys[next->count++] = m->keys[k];
    }
    /* Never read at all and failing for long: one row says so. */
    if (next->count == before && src > 0 &&
        store_failures(m, &(tw_guarded_t){.source = src}, &err, &what) >= m->opts.unknown_after) {
        init_key(m, &next->keys[next->count], src, m->sources[src - 1].shown, "",
                 TW_CONSUMER_TOKENWATCH);
        next->read[next->count++] = NULL;
    }
}

/* The round's positions become the guarded ones: those seen before keep
 * their state and alert memory, new ones start afresh, gone ones go (with
 * their series); a source that could not be read keeps its last ones. */
static void reconcile(tw_monitor_t *m, const tw_positions_t *readings, const range_t *ranges,
                      next_t *next)
{
    bool *taken = tw_calloc(m->key_count + 1, sizeof *taken);
    size_t cap = readings->count + m->key_count + m->source_count + 1, hint = 0;

    next->keys = tw_calloc(cap, sizeof *next->keys);
    next->read = tw_calloc(cap, sizeof *next->read);
    next->count = 0;
    for (size_t src = 0; src <= m->source_count; src++) {
        if (!ranges[src].ok) {
            keep_unread(m, src, taken, next);
            continue;
        }
        for (size_t r = ranges[src].first; r < ranges[src].first + ranges[src].count; r++) {
            const tw_position_t *p = &readings->items[r];
            size_t k = find_key(m, src, p, taken, &hint);

            if (k != SIZE_MAX) {
                taken[k] = true;
                next->keys[next->count] = m->keys[k];
            } else {
                init_key(m, &next->keys[next->count], src, p->key, p->name, p->consumer);
            }
            next->read[next->count++] = p;
        }
    }
    for (size_t k = 0; k < m->key_count; k++)
        if (!taken[k])
            drop_key(m, &m->keys[k]);
    free(taken);
    free(m->keys);
    m->keys = next->keys;
    m->key_count = next->count;
}

static void update_metrics(tw_monitor_t *m, const tw_guarded_t *g)
{
    const char *labels = g->labels;

    /* Never the series without the key: it would mix keys. */
    if (!m->opts.metrics || !labels)
        return;
    if (g->has_measure && g->state != TW_STATE_UNKNOWN) {
        tw_metrics_set(m->opts.metrics, "tokenwatch_token_headroom_seconds", labels,
                       (double)g->measure.headroom_s);
        tw_metrics_set(m->opts.metrics, "tokenwatch_token_time_left_seconds", labels,
                       g->measure.unbounded ? INFINITY : g->measure.time_left_s);
    }
    for (int s = 0; s < TW_STATE_COUNT; s++) {
        char with_state[LABELS_ROOM + 64];

        snprintf(with_state, sizeof with_state, "%s", labels);
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
    a.key = g->display;
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

        tw_utf8_format(summary, sizeof summary, "%s %s", g->display, tw_state_name(g->state));
        tw_notify(m->opts.notifiers, &a, summary);
    }
    bson_free(text);
}

static void assess_unknown(tw_guarded_t *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void assess_unknown(tw_guarded_t *g, const char *fmt, ...)
{
    va_list ap;

    g->state = TW_STATE_UNKNOWN;
    g->has_token = false;
    va_start(ap, fmt);
    vsnprintf(g->reason, sizeof g->reason, fmt, ap);
    va_end(ap);
    tw_utf8_fix(g->reason);
    g->assessed = true;
}

/* A position read this round (p, NULL when its store was not read). */
static void assess(tw_monitor_t *m, tw_guarded_t *g, const tw_position_t *p)
{
    double rate = tw_monitor_tail_rate(m);
    tw_state_t previous = g->assessed ? g->state : TW_STATE_OK;
    unsigned after = m->opts.unknown_after;
    const tw_error_t *store_err;
    const char *what;
    unsigned failures = store_failures(m, g, &store_err, &what);

    g->reason[0] = '\0';
    if (m->mongo_failures >= after || failures >= after) {
        bool mongo = m->mongo_failures >= after;

        g->state = TW_STATE_UNKNOWN;
        tw_utf8_format(g->reason, sizeof g->reason, "%s unreadable for %u rounds: %s",
                       mongo ? "MongoDB" : what, mongo ? m->mongo_failures : failures,
                       mongo ? m->mongo_error.message : store_err->message);
        g->assessed = true;
        return;
    }
    if (m->mongo_failures > 0 || failures > 0 || !m->has_window || !p)
        return; /* a blip: keep the last state until it lasts */
    snprintf(g->note, sizeof g->note, "%s", p->note);
    switch (p->kind) {
    case TW_POSITION_BAD:
        assess_unknown(g, "%s", p->reason);
        return;
    case TW_POSITION_MISSING:
        if (g->own && !m->opts.own_missing_is_unknown)
            return;
        assess_unknown(g, "%s does not exist%s", g->key, g->own ? " (no checkpoint yet)" : "");
        return;
    case TW_POSITION_NONE:
        /* Nothing the oplog can take: said in the note, never alerted. */
        g->state = TW_STATE_OK;
        g->has_token = false;
        g->has_measure = false;
        g->assessed = true;
        return;
    case TW_POSITION_TIME:
        break;
    }
    g->has_token = true;
    g->token = p->time;
    g->has_measure = true;
    tw_guard_measure(&m->window, p->time, rate, &g->measure);
    g->state = tw_guard_state(p->time, &m->window, &g->measure, &m->opts.warn_at,
                              &m->opts.crit_at, previous);
    g->assessed = true;
}

void tw_monitor_tick(tw_monitor_t *m)
{
    int64_t now_wall = tw_clock_wall_ms(m->clock);
    int64_t now_mono = tw_clock_mono_ms(m->clock);
    range_t *ranges = tw_calloc(m->source_count + 1, sizeof *ranges);
    tw_positions_t readings;
    next_t next;

    tw_positions_init(&readings);
    probe_window(m, now_wall, now_mono);
    read_redis(m, now_mono, &readings, ranges);
    read_elsewhere(m, now_mono, &readings, ranges);
    read_unparsed(m, &readings, ranges);
    window_metrics(m);
    reconcile(m, &readings, ranges, &next);
    for (size_t k = 0; k < m->key_count; k++) {
        tw_guarded_t *g = &m->keys[k];

        assess(m, g, next.read[k]);
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
    free(next.read);
    tw_positions_clear(&readings);
    free(ranges);
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
        release_key(&m->keys[k]);
    free(m->keys);
    for (size_t k = 0; k < m->source_count; k++)
        tw_source_release(&m->sources[k]);
    free(m->sources);
    free(m->source_state);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
