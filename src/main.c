/*
 * main.c - the command line: which subcommand, the settings, signals and
 * exit codes; each subcommand is a cmd_*.c of its own (run is run.c). The
 * only place that exits.
 */
#include <curl/curl.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/cmd_checkpoint.h"
#include "tokenwatch/cmd_decode.h"
#include "tokenwatch/cmd_healthcheck.h"
#include "tokenwatch/cmd_status.h"
#include "tokenwatch/log.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/run.h"
#include "tokenwatch/settings.h"

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

static int dispatch(const char *command, tw_settings_t *s, tw_clock_t *clock)
{
    if (strcmp(command, "status") == 0)
        return tw_cmd_status(s);
    if (strcmp(command, "healthcheck") == 0)
        return tw_cmd_healthcheck(s);
    if (s->json) {
        fprintf(stderr, "tokenwatch %s: --json is for status\n", command);
        return TW_EXIT_USAGE;
    }
    if (strcmp(command, "decode") == 0)
        return tw_cmd_decode(s);
    if (strcmp(command, "checkpoint") == 0) {
        const char *what = s->positional_count > 0 ? s->positional[0] : "";

        if (strcmp(what, "rollback") == 0)
            return tw_cmd_checkpoint_rollback(s, clock);
        if (s->dry_run) {
            char buf[SHOWN_MAX];

            fprintf(stderr, "tokenwatch checkpoint %s: --dry-run is for rollback\n",
                    shown(what, buf));
            return TW_EXIT_USAGE;
        }
        if (s->positional_count == 1 && strcmp(what, "show") == 0)
            return tw_cmd_checkpoint_show(s, clock);
        if (s->positional_count == 1 && strcmp(what, "history") == 0)
            return tw_cmd_checkpoint_history(s);
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
