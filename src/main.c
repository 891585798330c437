/*
 * main.c - subcommands, exit codes and signals. The only place that exits.
 */
#include <bson/bson.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/checkpoint.h"
#include "tokenwatch/clock.h"
#include "tokenwatch/duration.h"
#include "tokenwatch/follow.h"
#include "tokenwatch/http.h"
#include "tokenwatch/log.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/monitor.h"
#include "tokenwatch/recover.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/run.h"
#include "tokenwatch/settings.h"
#include "tokenwatch/store.h"
#include "tokenwatch/token.h"

/* An argument quoted back in a refusal may be a misplaced connection
 * string ("status mongodb://u:pw@h/"): its secrets are hidden. */
#define SHOWN_MAX 512

static const char *shown(const char *arg, char out[SHOWN_MAX])
{
    tw_redact_url(arg, out, SHOWN_MAX);
    return out;
}

#ifndef TW_VERSION
#define TW_VERSION "0.1.0"
#endif

/* The one global besides the log sink: set by the signal handler only. */
static volatile sig_atomic_t stop_flag;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A closed terminal or a supervisor's hangup: stop cleanly too, with
     * the last checkpoint, rather than die without it. */
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static void print_usage(FILE *out)
{
    fputs("tokenwatch " TW_VERSION
          ": follow a MongoDB change stream and keep its resume token safe\n"
          "\n"
          "Usage:\n"
          "  tokenwatch [run] [options]          follow, hand on events, "
          "checkpoint (long-running)\n"
          "  tokenwatch status [--json] [options] measure every guarded token "
          "now;\n"
          "                                      exit 0 OK, 1 WARN, 2 CRIT or "
          "LOST, 3 UNKNOWN\n"
          "  tokenwatch checkpoint show [options] print the stored checkpoint\n"
          "  tokenwatch checkpoint history        its earlier checkpoints, newest first\n"
          "  tokenwatch checkpoint rollback [N]   restore the Nth previous one (--dry-run,\n"
          "                                      --confirm ENV)\n"
          "  tokenwatch decode TOKEN             the cluster time and date "
          "inside a resume token\n"
          "  tokenwatch healthcheck              exit 0 when the running watcher's "
          "/healthz\n"
          "                                      (at --metrics-addr) answers 200 "
          "(container HEALTHCHECK)\n"
          "  tokenwatch --version | --help\n"
          "\n"
          "Exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage or "
          "configuration error,\n"
          "3 the resume point is lost.\n\n",
          out);
    tw_settings_print_help(out);
}

static int cmd_decode(const tw_settings_t *s)
{
    bson_t token;
    tw_ctime_t ct;
    tw_error_t err;
    tw_token_layout_t layout;
    const char *data;
    char ct_text[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

    if (s->positional_count != 1) {
        fprintf(stderr, "tokenwatch decode: give exactly one token "
                        "({\"_data\":\"82...\"} or the bare hex)\n");
        return TW_EXIT_USAGE;
    }
    if (!tw_token_parse(s->positional[0], &token, &err)) {
        fprintf(stderr, "tokenwatch decode: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    layout = tw_token_layout(&token, &ct);
    if (layout == TW_LAYOUT_OPAQUE && tw_token_data(&token, &data, NULL) &&
        (strncmp(data, "82", 2) == 0 || strncmp(data, "01", 2) == 0) &&
        !tw_token_decode_hex(data, &ct, &err)) {
        /* A known type byte, but broken: say how. */
        fprintf(stderr, "tokenwatch decode: %s\n", err.message);
        bson_destroy(&token);
        return TW_EXIT_USAGE;
    }
    bson_destroy(&token);
    if (layout == TW_LAYOUT_OPAQUE) {
        printf("layout        opaque (no known layout: the token holds no cluster "
               "time tokenwatch can read; a checkpoint takes its time from the "
               "event or the server)\n");
        return TW_EXIT_OK;
    }
    tw_ctime_format(ct, ct_text);
    tw_utc_format(tw_ctime_wall_ms(ct), date);
    printf("layout        %s\ncluster_time  %s\ndate          %s\n",
           layout == TW_LAYOUT_MONGODB ? "mongodb (82: MongoDB KeyString)"
                                       : "documentdb (01: Amazon DocumentDB, as in AWS's examples)",
           ct_text, date);
    return TW_EXIT_OK;
}

static redisContext *connect_redis(const tw_settings_t *s, int *code)
{
    tw_redis_url_t url;
    tw_error_t err;
    redisContext *c;

    if (!tw_redis_url_load(s->redis_url, s->redis_password, &url, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        *code = TW_EXIT_USAGE;
        return NULL;
    }
    c = tw_redis_connect(&url, (int)s->redis_timeout_ms, &err);
    tw_redis_url_release(&url);
    if (!c) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        *code = TW_EXIT_FAILURE;
    }
    return c;
}

static int cmd_checkpoint_history(const tw_settings_t *s)
{
    tw_history_entry_t *entries;
    size_t count;
    tw_error_t err;
    int code = TW_EXIT_FAILURE;
    redisContext *c = connect_redis(s, &code);

    if (!c)
        return code;
    if (!tw_history_list(c, s->name, &entries, &count, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        redisFree(c);
        return TW_EXIT_FAILURE;
    }
    printf("%-4s %-24s %-21s %-12s %-12s %-21s %s\n", "N", "CLUSTER TIME", "DATE (UTC)",
           "SOURCE", "KEPT FOR", "KEPT AT (UTC)", "EVENTS");
    for (size_t k = 0; k < count; k++) {
        const tw_checkpoint_t *cp = &entries[k].checkpoint;
        char ct[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX], pushed[TW_UTC_TEXT_MAX];

        if (entries[k].bad) {
            printf("%-4zu (unreadable: %s)\n", k + 1, entries[k].problem);
            continue;
        }

        tw_ctime_format(cp->cluster_time, ct);
        tw_utc_format(tw_ctime_wall_ms(cp->cluster_time), date);
        tw_utc_format(entries[k].pushed_ms / 1000 * 1000, pushed);
        printf("%-4zu %-24s %-21s %-12s %-12s %-21s %" PRId64 "\n", k + 1, ct, date,
               cp->source[0] ? cp->source : "-", entries[k].reason[0] ? entries[k].reason : "-",
               entries[k].pushed_ms ? pushed : "-", cp->events);
    }
    if (count == 0)
        printf("(no history for %s)\n", s->name);
    tw_history_free(entries, count);
    redisFree(c);
    return TW_EXIT_OK;
}

/* N of checkpoint rollback: decimal digits only (sscanf took "1abc" as 1,
 * "+1" and " 1" too), 1 to TW_HISTORY_MAX. */
static bool parse_history_number(const char *text, unsigned long *n)
{
    size_t len = strlen(text);

    if (len == 0 || len > 9 || strspn(text, "0123456789") != len)
        return false;
    *n = strtoul(text, NULL, 10);
    return *n >= 1 && *n <= TW_HISTORY_MAX;
}

static int cmd_checkpoint_rollback(const tw_settings_t *s, tw_clock_t *clock)
{
    tw_history_entry_t *entries = NULL;
    size_t count = 0;
    tw_checkpoint_t current;
    tw_error_t err;
    char key[TW_KEY_MAX];
    bool found = false;
    unsigned long n = 1;
    int code = TW_EXIT_FAILURE;
    redisContext *c;

    if (s->positional_count > 2 ||
        (s->positional_count == 2 && !parse_history_number(s->positional[1], &n))) {
        fprintf(stderr,
                "tokenwatch checkpoint rollback: N is a history entry, 1 to %d in "
                "decimal digits, not '%s'\n",
                TW_HISTORY_MAX, s->positional[s->positional_count - 1]);
        return TW_EXIT_USAGE;
    }
    if (!s->dry_run && !tw_recover_confirmed(s->environment, s->protect, s->protect_count,
                                             s->confirm, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    c = connect_redis(s, &code);
    if (!c)
        return code;
    tw_checkpoint_init(&current);
    tw_checkpoint_key(s->name, "checkpoint", key);
    if (!tw_history_list(c, s->name, &entries, &count, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        goto out;
    }
    if (!tw_checkpoint_load(c, key, &current, &found, &err)) {
        if (!tw_checkpoint_unusable(&err)) {
            fprintf(stderr, "tokenwatch: %s\n", err.message);
            goto out;
        }
        /* Rolling back is the way out of a checkpoint that cannot be read. */
        fprintf(stderr, "tokenwatch: the current checkpoint cannot be read (%s): it is "
                        "kept in the history as it is\n",
                err.message);
        found = false;
    }
    if (n > count) {
        fprintf(stderr, "tokenwatch: there is no history entry %lu (%zu kept)\n", n, count);
        code = TW_EXIT_USAGE;
        goto out;
    }
    if (entries[n - 1].bad) {
        fprintf(stderr, "tokenwatch: history entry %lu cannot be used: %s\n", n,
                entries[n - 1].problem);
        code = TW_EXIT_USAGE;
        goto out;
    }
    if (s->dry_run) {
        tw_plan_t plan;

        memset(&plan, 0, sizeof plan);
        plan.has_current = found;
        plan.current = current.cluster_time;
        plan.start = entries[n - 1].checkpoint.cluster_time;
        plan.start_how = "resumeAfter the history entry's token";
        tw_plan_print(&plan, s->name, "rollback", stdout);
        printf("nothing was changed (--dry-run)\n");
        code = TW_EXIT_OK;
        goto out;
    }
    if (!tw_history_rollback(c, s->name, (unsigned)n, tw_clock_wall_ms(clock), &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        goto out;
    }
    {
        char ct[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

        tw_ctime_format(entries[n - 1].checkpoint.cluster_time, ct);
        tw_utc_format(tw_ctime_wall_ms(entries[n - 1].checkpoint.cluster_time), date);
        printf("%s rolled back to %s (%s); the checkpoint it replaced is history entry 1\n",
               key, ct, date);
    }
    code = TW_EXIT_OK;
out:
    tw_history_free(entries, count);
    tw_checkpoint_release(&current);
    redisFree(c);
    return code;
}

static int cmd_checkpoint_show(const tw_settings_t *s, tw_clock_t *clock)
{
    tw_redis_url_t url;
    redisContext *c = NULL;
    tw_checkpoint_t cp;
    tw_error_t err;
    char key[TW_KEY_MAX];
    bool found = false;
    int code = TW_EXIT_FAILURE;

    tw_checkpoint_init(&cp);
    tw_checkpoint_key(s->name, "checkpoint", key);
    if (!tw_redis_url_load(s->redis_url, s->redis_password, &url, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    c = tw_redis_connect(&url, (int)s->redis_timeout_ms, &err);
    if (!c || !tw_checkpoint_load(c, key, &cp, &found, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        /* A record that cannot be read is malformed (2), not an outage (1). */
        if (c && tw_checkpoint_unusable(&err))
            code = TW_EXIT_USAGE;
        goto out;
    }
    if (!found) {
        fprintf(stderr, "tokenwatch: no checkpoint at %s\n", key);
        goto out;
    }
    {
        char ct[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX], updated[TW_UTC_TEXT_MAX];
        char age[TW_DURATION_TEXT_MAX];
        char *token = tw_token_to_json(&cp.token);
        int64_t now = tw_clock_wall_ms(clock);

        tw_ctime_format(cp.cluster_time, ct);
        tw_utc_format(tw_ctime_wall_ms(cp.cluster_time), date);
        tw_utc_format(cp.updated_ms, updated);
        tw_duration_words(now - tw_ctime_wall_ms(cp.cluster_time), age);
        printf("key           %s\n", key);
        printf("token         %s\n", token);
        printf("cluster_time  %s\n", ct);
        printf("date          %s (%s ago)\n", date, age);
        printf("updated       %s\n", cp.updated_ms ? updated : "-");
        printf("events        %" PRId64 "\n", cp.events);
        printf("source        %s\n", cp.source[0] ? cp.source : "-");
        printf("scope         %s\n", cp.scope ? cp.scope : "-");
        bson_free(token);
    }
    code = TW_EXIT_OK;
out:
    redisFree(c);
    tw_checkpoint_release(&cp);
    tw_redis_url_release(&url);
    return code;
}

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
    redisContext *c = tw_redis_connect(url, (int)s->redis_timeout_ms, &err);
    bool ok = c && tw_store_probe(c, &facts, &err);

    if (ok)
        tw_store_assess(&facts, out);
    redisFree(c);
    return ok;
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
        printf("store: the Redis that holds the checkpoints can lose them: %s\n", text);
    else
        printf("store: no way found for Redis to lose the checkpoints%s%s\n",
               store->note[0] ? "; " : "", store->note);
}

static void print_status_json(const tw_monitor_t *m, int code, const tw_store_risks_t *store)
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
    BSON_APPEND_ARRAY_BEGIN(&doc, "keys", &list);
    for (size_t k = 0; k < n; k++) {
        const tw_guarded_t *g = &keys[k];
        bool measured = g->has_measure && g->state != TW_STATE_UNKNOWN;
        bson_t item;
        char index[16], ct[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

        snprintf(index, sizeof index, "%zu", k);
        BSON_APPEND_DOCUMENT_BEGIN(&list, index, &item);
        BSON_APPEND_UTF8(&item, "key", g->key);
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

static void print_status_table(const tw_monitor_t *m, const tw_store_risks_t *store)
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
        printf("%-40s %-8s %-21s %-10s %-12s %s\n", g->key, tw_state_name(g->state), date,
               headroom, left, g->reason);
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
}

/* One round of the guard, for cron, Kubernetes CronJobs and Nagios/Icinga. */
static int cmd_status(const tw_settings_t *s)
{
    tw_redis_url_t url;
    tw_error_t err;
    mongoc_client_pool_t *pool = NULL;
    tw_monitor_t *m = NULL;
    tw_monitor_opts_t opts;
    const tw_guarded_t *keys;
    tw_store_risks_t store;
    bool store_known;
    tw_state_t *states;
    size_t n;
    int code;

    if (s->positional_count > 0) {
        char buf[SHOWN_MAX];

        fprintf(stderr, "tokenwatch status: unexpected argument '%s'\n",
                shown(s->positional[0], buf));
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
    memset(&opts, 0, sizeof opts);
    opts.settings = s;
    opts.pool = pool;
    opts.redis_url = &url;
    opts.unknown_after = 1;
    opts.own_missing_is_unknown = true;
    m = tw_monitor_new(&opts);
    tw_monitor_tick(m);
    n = tw_monitor_keys(m, &keys);
    states = calloc(n, sizeof *states);
    if (!states)
        abort();
    for (size_t k = 0; k < n; k++)
        states[k] = keys[k].assessed ? keys[k].state : TW_STATE_UNKNOWN;
    code = tw_guard_exit_code(states, n);
    store_known = read_store(s, &url, &store);
    if (s->json)
        print_status_json(m, code, store_known ? &store : NULL);
    else
        print_status_table(m, store_known ? &store : NULL);
    free(states);
    tw_monitor_free(m);
    mongoc_client_pool_destroy(pool);
    tw_redis_url_release(&url);
    return code;
}

static size_t discard_body(char *data, size_t size, size_t n, void *ctx)
{
    (void)data;
    (void)ctx;
    return size * n;
}

/*
 * The container HEALTHCHECK: asks the running watcher's /healthz, so the
 * image needs no curl. A wildcard listen address is reached on loopback.
 */
static int cmd_healthcheck(const tw_settings_t *s)
{
    char host[TW_HTTP_HOST_MAX], url[TW_HTTP_HOST_MAX + 32];
    tw_error_t err;
    int port;
    long status = 0;
    CURL *curl;
    CURLcode rc;

    if (strcmp(s->metrics_addr, "off") == 0) {
        fprintf(stderr, "tokenwatch healthcheck: --metrics-addr is off: nothing to ask\n");
        return TW_EXIT_USAGE;
    }
    if (!tw_http_parse_addr(s->metrics_addr, host, sizeof host, &port, &err)) {
        fprintf(stderr, "tokenwatch healthcheck: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    if (strcmp(host, "0.0.0.0") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "::1");
    snprintf(url, sizeof url, strchr(host, ':') ? "http://[%s]:%d/healthz" : "http://%s:%d/healthz",
             host, port);
    curl = curl_easy_init();
    if (!curl)
        return TW_EXIT_FAILURE;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        fprintf(stderr, "tokenwatch healthcheck: %s: %s\n", url, curl_easy_strerror(rc));
        return TW_EXIT_FAILURE;
    }
    if (status != 200) {
        fprintf(stderr, "tokenwatch healthcheck: %s answered %ld\n", url, status);
        return TW_EXIT_FAILURE;
    }
    printf("healthy\n");
    return TW_EXIT_OK;
}

static int dispatch(const char *command, tw_settings_t *s, tw_clock_t *clock)
{
    if (strcmp(command, "status") == 0)
        return cmd_status(s);
    if (strcmp(command, "healthcheck") == 0)
        return cmd_healthcheck(s);
    if (s->json) {
        fprintf(stderr, "tokenwatch %s: --json is for status\n", command);
        return TW_EXIT_USAGE;
    }
    if (strcmp(command, "decode") == 0)
        return cmd_decode(s);
    if (strcmp(command, "checkpoint") == 0) {
        const char *what = s->positional_count > 0 ? s->positional[0] : "";

        if (strcmp(what, "rollback") == 0)
            return cmd_checkpoint_rollback(s, clock);
        if (s->dry_run) {
            char buf[SHOWN_MAX];

            fprintf(stderr, "tokenwatch checkpoint %s: --dry-run is for rollback\n",
                    shown(what, buf));
            return TW_EXIT_USAGE;
        }
        if (s->positional_count == 1 && strcmp(what, "show") == 0)
            return cmd_checkpoint_show(s, clock);
        if (s->positional_count == 1 && strcmp(what, "history") == 0)
            return cmd_checkpoint_history(s);
        fprintf(stderr, "tokenwatch checkpoint: expected show, history or rollback [N]\n");
        return TW_EXIT_USAGE;
    }
    if (s->positional_count > 0) {
        char buf[SHOWN_MAX];

        fprintf(stderr, "tokenwatch run: unexpected argument '%s'\n",
                shown(s->positional[0], buf));
        return TW_EXIT_USAGE;
    }
    install_signals();
    return tw_run(s, clock, &stop_flag, stdout);
}

extern char **environ;

int main(int argc, char *argv[])
{
    static const char *const commands[] = {"run",    "status",      "checkpoint",
                                           "decode", "healthcheck", NULL};
    tw_settings_t settings;
    tw_error_t err;
    tw_clock_t clock;
    tw_log_level_t level;
    tw_log_format_t format;
    const char *command = "run";
    int first = 1;
    int code;

    if (argc > 1 && argv[1][0] != '-') {
        size_t k;
        for (k = 0; commands[k]; k++)
            if (strcmp(argv[1], commands[k]) == 0)
                break;
        if (!commands[k]) {
            char buf[SHOWN_MAX];

            fprintf(stderr, "tokenwatch: unknown command '%s' (run, status, "
                            "checkpoint, decode, healthcheck; see --help)\n",
                    shown(argv[1], buf));
            return TW_EXIT_USAGE;
        }
        command = argv[1];
        first = 2;
    }

    mongoc_init();
    /* Before settings: libmongoc warns while it parses --mongo-uri. */
    tw_log_capture_mongoc();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    memset(&settings, 0, sizeof settings);
    if (!tw_settings_load(&settings, argc - first,
                          (const char *const *)(argv + first),
                          (const char *const *)environ, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        code = TW_EXIT_USAGE;
        goto out;
    }
    if (settings.help) {
        print_usage(stdout);
        code = TW_EXIT_OK;
        goto out;
    }
    if (settings.version) {
        printf("tokenwatch %s (libmongoc %s, hiredis %d.%d.%d, libcurl %s)\n", TW_VERSION,
               mongoc_get_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
               curl_version_info(CURLVERSION_NOW)->version);
        code = TW_EXIT_OK;
        goto out;
    }
    /* The settings table lists both in the enums' order. */
    level = (tw_log_level_t)settings.log_level;
    format = (tw_log_format_t)settings.log_format;
    tw_log_configure(level, format, settings.name, settings.environment, NULL);
    for (size_t k = 0; k < settings.warning_count; k++)
        TW_WARN("%s", settings.warnings[k]);
    tw_clock_init_system(&clock);
    code = dispatch(command, &settings, &clock);
out:
    tw_settings_release(&settings);
    curl_global_cleanup();
    mongoc_cleanup();
    return code;
}
