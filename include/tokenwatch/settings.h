/*
 * settings.h - every setting in one table.
 *
 * Each setting has a name (the flag without "--"), an environment variable
 * (also the key in a --config file), a type, bounds, a default and a help
 * line. Precedence: default < config file < environment < flag. Every
 * source goes through the same parser, so a value means the same wherever
 * it is written. Parsing never exits: errors name the setting and where it
 * came from, and main() turns them into exit 2.
 */
#ifndef TOKENWATCH_SETTINGS_H
#define TOKENWATCH_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tokenwatch/duration.h"
#include "tokenwatch/error.h"

typedef enum { TW_SINK_NONE = 0, TW_SINK_STDOUT, TW_SINK_REDIS } tw_sink_kind_t;

typedef enum { TW_ON_LOST_FAIL = 0, TW_ON_LOST_FALLBACK } tw_on_lost_t;

typedef enum { TW_HEARTBEAT_GET = 0, TW_HEARTBEAT_POST } tw_heartbeat_method_t;

typedef enum {
    TW_SOURCE_DEFAULT = 0,
    TW_SOURCE_FILE,
    TW_SOURCE_ENV,
    TW_SOURCE_FLAG
} tw_setting_source_t;

/* Owned strings are NULL when a setting has no value. */
typedef struct {
    char *config;
    char *name;
    char *environment;
    char *mongo_uri;
    char *mongo_uri_file; /* read into mongo_uri when loading */
    char *db;
    char *collection;
    char *pipeline; /* a JSON array of stages, validated */
    char *full_document;
    bool split_large_events; /* append the split stage, reassemble fragments */
    char *redis_url;
    char *redis_password_file;
    char *redis_password; /* secret: read from redis_password_file at load */
    int64_t redis_timeout_ms;
    bool accept_store_risk; /* start in a protected environment anyway */
    int64_t redis_wait_replicas; /* WAIT for this many after each commit */
    int64_t lease_ttl_ms;   /* 0: no lease */
    int64_t lease_renew_ms;
    int sink; /* tw_sink_kind_t */
    char *stream_key;
    int64_t stream_maxlen;
    int64_t checkpoint_interval_ms;
    int64_t checkpoint_every;
    int64_t max_events; /* 0: no limit */
    char *until;        /* a SPEC, validated */
    int log_format;     /* tw_log_format_t */
    int log_level;      /* tw_log_level_t */
    char **guard;       /* more checkpoint keys to guard */
    size_t guard_count;
    tw_limit_t warn_at;
    tw_limit_t crit_at;
    int64_t monitor_interval_ms;
    int64_t retention_ms; /* 0: read the oplog */
    char **shard_uri;     /* NAME=URI, secret */
    size_t shard_uri_count;
    char *slack_webhook;  /* secret */
    char *slack_webhook_file;
    char *webhook_url;    /* secret: the generic JSON webhook */
    char *webhook_url_file;
    char *pagerduty_routing_key; /* secret */
    char *pagerduty_routing_key_file;
    char *pagerduty_url;
    char *heartbeat_url;  /* secret */
    char *heartbeat_url_file;
    int heartbeat_method; /* tw_heartbeat_method_t */
    char *digest_at;      /* HH:MM (UTC), or NULL */
    int digest_at_minute; /* digest_at in minutes after 00:00 UTC; -1: none */
    int64_t alert_repeat_ms;
    char *metrics_addr; /* "off" disables */
    int on_token_lost;  /* tw_on_lost_t */
    char *fallback_from; /* a SPEC */
    char *on_missing_checkpoint; /* now, oldest, fail, a SPEC, or NULL */
    char *resume_from;   /* a SPEC, or NULL */
    bool dry_run;
    char *confirm;
    char **protect; /* environments where manual recovery needs --confirm */
    size_t protect_count;

    /* Not settings: what parsing found besides them. */
    bool help;
    bool version;
    bool json; /* --json: status prints JSON */
    char **positional; /* arguments that are not options, in order */
    size_t positional_count;
    char **warnings; /* for the log, once it is configured */
    size_t warning_count;
    tw_setting_source_t sources[64]; /* by table index */
} tw_settings_t;

/*
 * Fills s from the table's defaults, the config file (--config or
 * TOKENWATCH_CONFIG), envp ("K=V" strings, NULL-terminated) and args (the
 * options after the subcommand). s must be zeroed or freshly released.
 */
bool tw_settings_load(tw_settings_t *s, int argc, const char *const argv[],
                      const char *const envp[], tw_error_t *err);

void tw_settings_release(tw_settings_t *s);

/*
 * Applies the KEY=VALUE lines of a config file held in text (len bytes, no
 * terminator needed; origin names it in errors). Blank lines and lines
 * starting with # are skipped; the value is everything after the first =,
 * taken literally. No I/O; the first bad line fails with its number.
 */
bool tw_settings_load_text(tw_settings_t *s, const char *origin,
                           const char *text, size_t len, tw_error_t *err);

/* The table's environment names, in order (NULL past the end or for a
 * flag-only setting). */
size_t tw_settings_count(void);
const char *tw_settings_env_name(size_t index);
/* Whether the setting at index is marked secret (a password, a URL that is
 * one, a routing key): tw_settings_release zeroes its value before freeing
 * it. */
bool tw_settings_is_secret(size_t index);

/* Prints the option list generated from the table. */
void tw_settings_print_help(FILE *out);

/* Where a named setting's value came from (TW_SOURCE_DEFAULT if unknown). */
tw_setting_source_t tw_settings_source_of(const tw_settings_t *s,
                                          const char *name);

#endif
