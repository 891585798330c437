/*
 * cmd_checkpoint.c - `tokenwatch checkpoint show`, `history` and
 * `rollback [N]`: the stored checkpoint, its earlier versions, and going
 * back to one of them.
 */
#include "tokenwatch/cmd_checkpoint.h"

#include <bson/bson.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/checkpoint.h"
#include "tokenwatch/duration.h"
#include "tokenwatch/recover.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/run.h"
#include "tokenwatch/token.h"

static redisContext *connect_redis(const tw_settings_t *s, int *code)
{
    tw_redis_url_t url;
    tw_error_t err;
    redisContext *c;
    char key[TW_KEY_MAX];

    if (!tw_redis_url_load(s->redis_url, s->redis_password, &url, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        *code = TW_EXIT_USAGE;
        return NULL;
    }
    tw_checkpoint_key(s->name, "checkpoint", key);
    c = tw_redis_connect_for(&url, key, (int)s->redis_timeout_ms, &err);
    tw_redis_url_release(&url);
    if (!c) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        *code = TW_EXIT_FAILURE;
    }
    return c;
}

int tw_cmd_checkpoint_history(const tw_settings_t *s)
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
        return err.code == TW_CHECKPOINT_WRONG_TYPE ? TW_EXIT_USAGE : TW_EXIT_FAILURE;
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

/* N (1 unless given) when it is a history entry and, unless --dry-run, a
 * protected environment is confirmed; false once the refusal is said. */
static bool rollback_allowed(const tw_settings_t *s, unsigned long *n)
{
    tw_error_t err;

    if (s->positional_count > 2 ||
        (s->positional_count == 2 && !parse_history_number(s->positional[1], n))) {
        fprintf(stderr,
                "tokenwatch checkpoint rollback: N is a history entry, 1 to %d in "
                "decimal digits, not '%s'\n",
                TW_HISTORY_MAX, s->positional[s->positional_count - 1]);
        return false;
    }
    if (!s->dry_run && !tw_recover_confirmed(s->environment, s->protect, s->protect_count,
                                             s->confirm, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        return false;
    }
    return true;
}

/* --dry-run: where a rollback to entry would resume; nothing is changed. */
static void print_rollback_plan(const char *name, bool found, const tw_checkpoint_t *current,
                                const tw_history_entry_t *entry)
{
    tw_plan_t plan;

    memset(&plan, 0, sizeof plan);
    plan.has_current = found;
    plan.current = current->cluster_time;
    plan.start = entry->checkpoint.cluster_time;
    plan.start_how = "resumeAfter the history entry's token";
    tw_plan_print(&plan, name, "rollback", stdout);
    printf("nothing was changed (--dry-run)\n");
}

int tw_cmd_checkpoint_rollback(const tw_settings_t *s, tw_clock_t *clock)
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

    if (!rollback_allowed(s, &n))
        return TW_EXIT_USAGE;
    c = connect_redis(s, &code);
    if (!c)
        return code;
    tw_checkpoint_init(&current);
    tw_checkpoint_key(s->name, "checkpoint", key);
    if (!tw_history_list(c, s->name, &entries, &count, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
        if (err.code == TW_CHECKPOINT_WRONG_TYPE)
            code = TW_EXIT_USAGE;
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
        print_rollback_plan(s->name, found, &current, &entries[n - 1]);
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

int tw_cmd_checkpoint_show(const tw_settings_t *s, tw_clock_t *clock)
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
    c = tw_redis_connect_for(&url, key, (int)s->redis_timeout_ms, &err);
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
