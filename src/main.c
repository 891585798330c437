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
#include "tokenwatch/cmd_status.h"
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
        return tw_cmd_status(s);
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
