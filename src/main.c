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
#include "tokenwatch/log.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/run.h"
#include "tokenwatch/settings.h"
#include "tokenwatch/token.h"

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
          "  tokenwatch checkpoint show [options] print the stored checkpoint\n"
          "  tokenwatch decode TOKEN             the cluster time and date "
          "inside a resume token\n"
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
    tw_token_cluster_time(&token, &ct, NULL);
    bson_destroy(&token);
    tw_ctime_format(ct, ct_text);
    tw_utc_format(tw_ctime_wall_ms(ct), date);
    printf("cluster_time  %s\ndate          %s\n", ct_text, date);
    return TW_EXIT_OK;
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
    if (!tw_redis_url_parse(s->redis_url, &url, &err)) {
        fprintf(stderr, "tokenwatch: --redis-url: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    if (s->redis_password_file) {
        char *password;
        if (!tw_redis_read_password_file(s->redis_password_file, &password, &err)) {
            fprintf(stderr, "tokenwatch: %s\n", err.message);
            code = TW_EXIT_USAGE;
            goto out;
        }
        free(url.password);
        url.password = password;
    }
    c = tw_redis_connect(&url, 5000, &err);
    if (!c || !tw_checkpoint_load(c, key, &cp, &found, &err)) {
        fprintf(stderr, "tokenwatch: %s\n", err.message);
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

static int dispatch(const char *command, tw_settings_t *s, tw_clock_t *clock)
{
    if (strcmp(command, "decode") == 0)
        return cmd_decode(s);
    if (strcmp(command, "checkpoint") == 0) {
        if (s->positional_count == 1 && strcmp(s->positional[0], "show") == 0)
            return cmd_checkpoint_show(s, clock);
        fprintf(stderr, "tokenwatch checkpoint: expected 'show'\n");
        return TW_EXIT_USAGE;
    }
    if (s->positional_count > 0) {
        fprintf(stderr, "tokenwatch run: unexpected argument '%s'\n",
                s->positional[0]);
        return TW_EXIT_USAGE;
    }
    install_signals();
    return tw_run(s, clock, &stop_flag, stdout);
}

extern char **environ;

int main(int argc, char *argv[])
{
    static const char *const commands[] = {"run", "checkpoint", "decode", NULL};
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
            fprintf(stderr, "tokenwatch: unknown command '%s' (run, checkpoint, "
                            "decode; see --help)\n",
                    argv[1]);
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
