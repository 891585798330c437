/*
 * cmd_status.c - `tokenwatch status`: one round of the monitor, printed as a
 * table or as JSON, with the exit code the guard gives.
 */
#include "tokenwatch/cmd_status.h"

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/duration.h"
#include "tokenwatch/follow.h"
#include "tokenwatch/guard.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/monitor.h"
#include "tokenwatch/oplog.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/run.h"
#include "tokenwatch/shards.h"
#include "tokenwatch/lease.h"
#include "tokenwatch/store.h"
#include "tokenwatch/token.h"

/* Room for an argument quoted back in a refusal, as main.c's. */
#define SHOWN_MAX 512

static void append_seconds(bson_t *doc, const char *key, bool known, double value)
{
    if (known)
        BSON_APPEND_DOUBLE(doc, key, value);
    else
        BSON_APPEND_NULL(doc, key);
}

static void append_clock_json(bson_t *doc, const tw_monitor_clock_t *c)
{
    char now[TW_CTIME_TEXT_MAX];

    tw_ctime_format(c->now, now);
    BSON_APPEND_UTF8(doc, "cluster_time", now);
    BSON_APPEND_UTF8(doc, "clock", c->from_server ? "cluster" : "local");
    append_seconds(doc, "clock_skew_seconds", c->from_server, c->skew_s);
}

static void append_shards_json(bson_t *doc, const tw_shards_t *shards)
{
    bson_t list;

    if (!shards)
        return;
    BSON_APPEND_ARRAY_BEGIN(doc, "shards", &list);
    for (size_t k = 0; k < shards->count; k++) {
        const tw_shard_t *shard = &shards->shards[k];
        char index[24], oldest[TW_CTIME_TEXT_MAX], newest[TW_CTIME_TEXT_MAX];
        bson_t item;

        snprintf(index, sizeof index, "%zu", k);
        BSON_APPEND_DOCUMENT_BEGIN(&list, index, &item);
        BSON_APPEND_UTF8(&item, "name", shard->name);
        BSON_APPEND_BOOL(&item, "readable", shard->readable);
        BSON_APPEND_BOOL(&item, "edge", shards->has_edge && shards->edge == k);
        if (shard->readable) {
            tw_ctime_format(shard->window.oldest, oldest);
            tw_ctime_format(shard->window.newest, newest);
            BSON_APPEND_INT64(&item, "window_seconds", tw_oplog_window_seconds(&shard->window));
            BSON_APPEND_UTF8(&item, "oldest", oldest);
            BSON_APPEND_UTF8(&item, "newest", newest);
        } else {
            BSON_APPEND_UTF8(&item, "error", shard->error.message);
        }
        bson_append_document_end(&list, &item);
    }
    bson_append_array_end(doc, &list);
}

/* Whether the Redis that holds the checkpoints can lose them (status). */
static bool read_store(const tw_settings_t *s, const tw_redis_url_t *url,
                       tw_store_risks_t *out)
{
    tw_store_facts_t facts;
    tw_error_t err;
    char key[TW_KEY_MAX];
    redisContext *c;

    tw_checkpoint_key(s->name, "checkpoint", key);
    c = tw_redis_connect_for(url, key, (int)s->redis_timeout_ms, &err);
    bool ok = c && tw_store_probe(c, &facts, &err);

    if (ok)
        tw_store_assess(&facts, out);
    redisFree(c);
    return ok;
}

/* Who leads this --name (lease.h); false when Redis cannot say. */
static bool read_lease(const tw_settings_t *s, const tw_redis_url_t *url, tw_lease_state_t *out)
{
    tw_error_t err;
    char key[TW_KEY_MAX];
    redisContext *c;

    tw_checkpoint_key(s->name, "checkpoint", key);
    c = tw_redis_connect_for(url, key, (int)s->redis_timeout_ms, &err);
    bool ok = c && tw_lease_read(c, s->name, out, &err);

    redisFree(c);
    return ok;
}

static void append_lease_json(bson_t *doc, const tw_lease_state_t *lease)
{
    bson_t item;

    if (!lease) {
        BSON_APPEND_NULL(doc, "lease");
        return;
    }
    BSON_APPEND_DOCUMENT_BEGIN(doc, "lease", &item);
    if (lease->holder[0])
        BSON_APPEND_UTF8(&item, "leader", lease->holder);
    else
        BSON_APPEND_NULL(&item, "leader");
    BSON_APPEND_INT64(&item, "epoch", lease->epoch);
    BSON_APPEND_INT64(&item, "expires_in_ms", lease->holder[0] ? lease->holder_ttl_ms : 0);
    bson_append_document_end(doc, &item);
}

static void print_lease_line(const tw_lease_state_t *lease)
{
    if (!lease)
        return;
    if (lease->holder[0])
        printf("lease: led by %s (epoch %lld, lease lapses in %lld ms unless renewed)\n",
               lease->holder, lease->epoch, (long long)lease->holder_ttl_ms);
    else
        printf("lease: no process leads (epoch %lld so far)\n", lease->epoch);
}

static void append_store_json(bson_t *doc, const tw_store_risks_t *store)
{
    bson_t item, list;

    if (!store) {
        BSON_APPEND_NULL(doc, "store");
        return;
    }
    BSON_APPEND_DOCUMENT_BEGIN(doc, "store", &item);
    BSON_APPEND_ARRAY_BEGIN(&item, "risks", &list);
    for (size_t k = 0; k < store->count; k++) {
        char index[24];

        snprintf(index, sizeof index, "%zu", k);
        BSON_APPEND_UTF8(&list, index, store->text[k]);
    }
    bson_append_array_end(&item, &list);
    BSON_APPEND_BOOL(&item, "known", !store->unknown);
    if (store->note[0])
        BSON_APPEND_UTF8(&item, "note", store->note);
    bson_append_document_end(doc, &item);
}

static void print_store_line(const tw_store_risks_t *store)
{
    char text[3 * 170];

    if (!store)
        return;
    tw_store_risks_text(store, text, sizeof text);
    if (store->count)
        printf("store: %s: %s\n", tw_store_risks_headline(store), text);
    else
        printf("store: no way found for Redis to lose the checkpoints%s%s\n",
               store->note[0] ? "; " : "", store->note);
}

static void print_status_json(const tw_monitor_t *m, int code, const tw_store_risks_t *store,
                              const tw_lease_state_t *lease)
{
    static const char *const codes[] = {"OK", "WARN", "CRIT", "UNKNOWN"};
    const tw_oplog_window_t *w = tw_monitor_window(m);
    const tw_guarded_t *keys;
    size_t n = tw_monitor_keys(m, &keys);
    bson_t doc = BSON_INITIALIZER, window, list;
    char *json;

    BSON_APPEND_UTF8(&doc, "state", codes[code]);
    BSON_APPEND_INT32(&doc, "exit_code", code);
    if (w) {
        char oldest[TW_CTIME_TEXT_MAX], newest[TW_CTIME_TEXT_MAX];

        tw_ctime_format(w->oldest, oldest);
        tw_ctime_format(w->newest, newest);
        BSON_APPEND_DOCUMENT_BEGIN(&doc, "window", &window);
        BSON_APPEND_INT64(&window, "seconds", tw_oplog_window_seconds(w));
        BSON_APPEND_UTF8(&window, "oldest", oldest);
        BSON_APPEND_UTF8(&window, "newest", newest);
        BSON_APPEND_BOOL(&window, "from_retention", w->from_retention);
        bson_append_document_end(&doc, &window);
    } else {
        BSON_APPEND_NULL(&doc, "window");
    }
    BSON_APPEND_DOUBLE(&doc, "tail_rate", tw_monitor_tail_rate(m));
    append_clock_json(&doc, tw_monitor_clock(m));
    append_shards_json(&doc, tw_monitor_shards(m));
    append_store_json(&doc, store);
    append_lease_json(&doc, lease);
    BSON_APPEND_ARRAY_BEGIN(&doc, "keys", &list);
    for (size_t k = 0; k < n; k++) {
        const tw_guarded_t *g = &keys[k];
        bool measured = g->has_measure && g->state != TW_STATE_UNKNOWN;
        bson_t item;
        char index[24], ct[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

        snprintf(index, sizeof index, "%zu", k);
        BSON_APPEND_DOCUMENT_BEGIN(&list, index, &item);
        BSON_APPEND_UTF8(&item, "key", g->key);
        if (g->position[0])
            BSON_APPEND_UTF8(&item, "position", g->position);
        BSON_APPEND_UTF8(&item, "consumer", tw_consumer_name(g->consumer));
        BSON_APPEND_BOOL(&item, "own", g->own);
        BSON_APPEND_UTF8(&item, "state", tw_state_name(g->state));
        if (g->has_token) {
            tw_ctime_format(g->token, ct);
            tw_utc_format(tw_ctime_wall_ms(g->token), date);
            BSON_APPEND_UTF8(&item, "cluster_time", ct);
            BSON_APPEND_UTF8(&item, "token_date", date);
        }
        append_seconds(&item, "headroom_seconds", measured, (double)g->measure.headroom_s);
        append_seconds(&item, "time_left_seconds", measured && !g->measure.unbounded,
                       g->measure.time_left_s);
        append_seconds(&item, "share", measured, g->measure.share);
        if (g->reason[0])
            BSON_APPEND_UTF8(&item, "reason", g->reason);
        if (g->note[0])
            BSON_APPEND_UTF8(&item, "note", g->note);
        bson_append_document_end(&list, &item);
    }
    bson_append_array_end(&doc, &list);
    json = bson_as_relaxed_extended_json(&doc, NULL);
    printf("%s\n", json);
    bson_free(json);
    bson_destroy(&doc);
}

static void print_shards_table(const tw_shards_t *shards)
{
    if (!shards)
        return;
    for (size_t k = 0; k < shards->count; k++) {
        const tw_shard_t *shard = &shards->shards[k];
        char window[TW_DURATION_TEXT_MAX], oldest[TW_UTC_TEXT_MAX];

        if (!shard->readable) {
            printf("shard %s: cannot be read: %s\n", shard->name, shard->error.message);
            continue;
        }
        tw_duration_words(tw_oplog_window_seconds(&shard->window) * 1000, window);
        tw_utc_format(tw_ctime_wall_ms(shard->window.oldest), oldest);
        printf("shard %s: window %s from %s%s\n", shard->name, window, oldest,
               shards->has_edge && shards->edge == k ? " (the edge: it drives the guard)"
                                                     : "");
    }
}

static void print_clock_line(const tw_monitor_clock_t *c)
{
    char now[TW_UTC_TEXT_MAX], skew[TW_DURATION_TEXT_MAX];
    double off = c->skew_s < 0 ? -c->skew_s : c->skew_s;

    tw_utc_format(tw_ctime_wall_ms(c->now), now);
    if (!c->from_server) {
        printf("clock: the server reports no cluster time; the local clock stands in\n");
        return;
    }
    tw_duration_words((int64_t)(off * 1000.0), skew);
    printf("clock: cluster time %s; the local clock is %s %s it\n", now, skew,
           c->skew_s >= 0 ? "ahead of" : "behind");
}

static void print_status_table(const tw_monitor_t *m, const tw_store_risks_t *store,
                               const tw_lease_state_t *lease)
{
    const tw_oplog_window_t *w = tw_monitor_window(m);
    const tw_guarded_t *keys;
    size_t n = tw_monitor_keys(m, &keys);

    printf("%-40s %-8s %-21s %-10s %-12s %s\n", "KEY", "STATE", "TOKEN TIME (UTC)",
           "HEADROOM", "TIME LEFT", "NOTE");
    for (size_t k = 0; k < n; k++) {
        const tw_guarded_t *g = &keys[k];
        bool measured = g->has_measure && g->state != TW_STATE_UNKNOWN;
        char date[TW_UTC_TEXT_MAX] = "-", headroom[TW_DURATION_TEXT_MAX] = "-";
        char left[TW_DURATION_TEXT_MAX] = "-";

        if (g->has_token)
            tw_utc_format(tw_ctime_wall_ms(g->token), date);
        if (measured) {
            tw_duration_words(g->measure.headroom_s > 0 ? g->measure.headroom_s * 1000 : 0,
                              headroom);
            if (g->state == TW_STATE_LOST)
                snprintf(left, sizeof left, "lost");
            else if (g->measure.unbounded)
                snprintf(left, sizeof left, "unbounded");
            else
                tw_duration_words((int64_t)(g->measure.time_left_s * 1000.0), left);
        }
        printf("%-40s %-8s %-21s %-10s %-12s %s\n", g->display, tw_state_name(g->state), date,
               headroom, left, g->reason[0] ? g->reason : g->note);
    }
    if (w) {
        char window[TW_DURATION_TEXT_MAX], oldest[TW_UTC_TEXT_MAX], newest[TW_UTC_TEXT_MAX];

        tw_duration_words(tw_oplog_window_seconds(w) * 1000, window);
        tw_utc_format(tw_ctime_wall_ms(w->oldest), oldest);
        tw_utc_format(tw_ctime_wall_ms(w->newest), newest);
        printf("window %s%s: %s to %s; tail rate assumed 1.0 (one probe)\n", window,
               w->from_retention ? " (--retention)" : "", oldest, newest);
    }
    print_shards_table(tw_monitor_shards(m));
    print_clock_line(tw_monitor_clock(m));
    print_store_line(store);
    print_lease_line(lease);
}

/* One round of the guard, for cron, Kubernetes CronJobs and Nagios/Icinga. */
int tw_cmd_status(const tw_settings_t *s)
{
    tw_redis_url_t url;
    tw_error_t err;
    mongoc_client_pool_t *pool = NULL;
    tw_monitor_t *m = NULL;
    tw_monitor_opts_t opts;
    const tw_guarded_t *keys;
    tw_store_risks_t store;
    bool store_known;
    tw_lease_state_t lease;
    bool lease_known;
    tw_state_t *states;
    size_t n;
    int code;

    if (s->positional_count > 0) {
        char buf[SHOWN_MAX];

        /* It may be a misplaced connection string: secrets hidden. */
        tw_redact_url(s->positional[0], buf, sizeof buf);
        fprintf(stderr, "tokenwatch status: unexpected argument '%s'\n", buf);
        return TW_EXIT_USAGE;
    }
    if (!tw_redis_url_load(s->redis_url, s->redis_password, &url, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    /* Even with --retention: the window's "now" is the deployment's. */
    pool = tw_follow_pool_new(s->mongo_uri, &err);
    if (!pool) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        tw_redis_url_release(&url);
        return TW_EXIT_USAGE;
    }
    tw_monitor_opts_from_settings(s, &opts);
    opts.pool = pool;
    opts.redis_url = &url;
    opts.unknown_after = 1;
    opts.own_missing_is_unknown = true;
    m = tw_monitor_new(&opts);
    tw_monitor_tick(m);
    n = tw_monitor_keys(m, &keys);
    states = tw_calloc(n, sizeof *states);
    for (size_t k = 0; k < n; k++)
        states[k] = keys[k].assessed ? keys[k].state : TW_STATE_UNKNOWN;
    code = tw_guard_exit_code(states, n);
    store_known = read_store(s, &url, &store);
    lease_known = read_lease(s, &url, &lease);
    if (s->json)
        print_status_json(m, code, store_known ? &store : NULL, lease_known ? &lease : NULL);
    else
        print_status_table(m, store_known ? &store : NULL, lease_known ? &lease : NULL);
    free(states);
    tw_monitor_free(m);
    mongoc_client_pool_destroy(pool);
    tw_redis_url_release(&url);
    return code;
}
