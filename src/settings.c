#include "tokenwatch/settings.h"

#include <bson/bson.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "tokenwatch/checks.h"
#include "tokenwatch/digest.h"
#include "tokenwatch/duration.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/log.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/secret.h"
#include "tokenwatch/spec.h"

typedef enum {
    TYPE_STRING,   /* char *, checked by `check` when set */
    TYPE_INT,      /* int64_t within [min, max] */
    TYPE_DURATION, /* int64_t ms within [min, max] */
    TYPE_ENUM,     /* int: index into choices */
    TYPE_LIST,     /* char **field, size_t count right after it: comma-separated,
                      flags repeatable; a higher source replaces the list */
    TYPE_LIMIT,    /* tw_limit_t: a share (20%) or a duration (2h) */
    TYPE_BOOL      /* bool: a flag without a value (or =true / =false) */
} setting_type_t;

/* May hold a password: its check redacts what it quotes, help says so. */
#define SECRET 1u
/* A TYPE_LIST whose items may hold commas: separated by white space. */
#define SPACED 2u

typedef bool (*check_fn)(const char *value, tw_error_t *err);

typedef struct {
    const char *name;
    const char *env;
    setting_type_t type;
    int64_t min, max;
    const char *const *choices;
    const char *def; /* as text, NULL: none */
    const char *metavar;
    const char *help;
    unsigned flags;
    size_t offset;
    check_fn check;
} setting_def_t;

static bool check_name(const char *value, tw_error_t *err);
static bool check_pipeline(const char *value, tw_error_t *err);
static bool check_until(const char *value, tw_error_t *err);
static bool check_not_empty(const char *value, tw_error_t *err);
static void add_string(char ***list, size_t *count, const char *text);
static bool check_spec(const char *value, tw_error_t *err);
static bool check_fallback_spec(const char *value, tw_error_t *err);
static bool check_missing_policy(const char *value, tw_error_t *err);
static bool check_routing_key(const char *value, tw_error_t *err);
static bool check_digest_at(const char *value, tw_error_t *err);

static const char *const sink_choices[] = {"none", "stdout", "redis", NULL};
static const char *const full_document_choices[] = {
    "updateLookup", "whenAvailable", "required", NULL};
static const char *const log_format_choices[] = {"text", "json", NULL};
static const char *const on_lost_choices[] = {"fail", "fallback", NULL};
static const char *const log_level_choices[] = {"debug", "info", "warn",
                                                "error", NULL};
static const char *const heartbeat_method_choices[] = {"get", "post", NULL};

#define F(field) offsetof(tw_settings_t, field)
#define DAY_MS ((int64_t)86400000)

static const setting_def_t table[] = {
    {"config", "TOKENWATCH_CONFIG", TYPE_STRING, 0, 0, NULL, NULL, "FILE",
     "settings file of KEY=VALUE lines (the environment names), as for "
     "docker --env-file",
     0, F(config), NULL},
    {"name", "TOKENWATCH_NAME", TYPE_STRING, 0, 0, NULL, "default", "NAME",
     "the stream's name: in Redis keys, logs, alerts and metrics", 0, F(name),
     check_name},
    {"environment", "TOKENWATCH_ENVIRONMENT", TYPE_STRING, 0, 0, NULL, "dev",
     "ENV", "label on every log line and alert (prod, stage, ...)", 0,
     F(environment), check_name},
    {"mongo-uri", "TOKENWATCH_MONGO_URI", TYPE_STRING, 0, 0, NULL,
     "mongodb://127.0.0.1:27017/?replicaSet=rs0", "URI",
     "the deployment to follow", SECRET, F(mongo_uri), tw_check_mongo_uri},
    {"mongo-uri-file", "TOKENWATCH_MONGO_URI_FILE", TYPE_STRING, 0, 0, NULL, NULL, "FILE",
     "read --mongo-uri from this file (a mounted secret); wins over --mongo-uri", 0,
     F(mongo_uri_file), check_not_empty},
    {"db", "TOKENWATCH_DB", TYPE_STRING, 0, 0, NULL, NULL, "DB",
     "watch this database (with --collection: one collection); neither: the "
     "whole deployment",
     0, F(db), check_not_empty},
    {"collection", "TOKENWATCH_COLLECTION", TYPE_STRING, 0, 0, NULL, NULL,
     "COLL", "watch this collection of --db", 0, F(collection),
     check_not_empty},
    {"pipeline", "TOKENWATCH_PIPELINE", TYPE_STRING, 0, 0, NULL, "[]", "JSON",
     "extra aggregation stages after $changeStream, as a JSON array", 0,
     F(pipeline), check_pipeline},
    {"full-document", "TOKENWATCH_FULL_DOCUMENT", TYPE_STRING, 0, 0,
     full_document_choices, NULL, "MODE",
     "updateLookup, whenAvailable or required (default: the server's)", 0,
     F(full_document), NULL},
    {"split-large-events", "TOKENWATCH_SPLIT_LARGE_EVENTS", TYPE_BOOL, 0, 0,
     NULL, "false", "",
     "append $changeStreamSplitLargeEvent to the pipeline and reassemble "
     "events over 16 MB before the sink (MongoDB 6.0.9+/7.0+)",
     0, F(split_large_events), NULL},
    {"redis-url", "TOKENWATCH_REDIS_URL", TYPE_STRING, 0, 0, NULL,
     "redis://127.0.0.1:6379/0", "URL",
     "where checkpoints live: redis://[user:password@]host:port/db or "
     "unix:///path.sock?db=N",
     SECRET, F(redis_url), tw_check_redis_url},
    {"accept-store-risk", "TOKENWATCH_ACCEPT_STORE_RISK", TYPE_BOOL, 0, 0, NULL, "false", "",
     "start in a protected environment even though the Redis can lose "
     "checkpoints (no persistence, allkeys-* eviction, a replica) or cannot "
     "be asked (CONFIG GET and INFO both refused)",
     0, F(accept_store_risk), NULL},
    {"redis-timeout", "TOKENWATCH_REDIS_TIMEOUT", TYPE_DURATION, 100, 60000, NULL, "5s",
     "DUR",
     "how long one Redis command may take before it counts as failed (a "
     "commit that timed out is retried without writing its batch twice)",
     0, F(redis_timeout_ms), NULL},
    {"redis-wait-replicas", "TOKENWATCH_REDIS_WAIT_REPLICAS", TYPE_INT, 0, 16, NULL, "0", "N",
     "a commit counts once this many replicas have it (Redis WAIT, up to half of "
     "--redis-timeout), so a failover cannot take it back; 0: the master's word",
     0, F(redis_wait_replicas), NULL},
    {"lease-ttl", "TOKENWATCH_LEASE_TTL", TYPE_DURATION, 0, DAY_MS, NULL, "10s", "DUR",
     "one writer per --name: the leader's lease in Redis lapses after this "
     "without renewal, and a standby takes over; 0s: no lease",
     0, F(lease_ttl_ms), NULL},
    {"lease-renew", "TOKENWATCH_LEASE_RENEW", TYPE_DURATION, 50, DAY_MS, NULL, "2s", "DUR",
     "how often the leader renews its lease, and a standby looks for a free one "
     "(at most half of --lease-ttl)",
     0, F(lease_renew_ms), NULL},
    {"redis-password-file", "TOKENWATCH_REDIS_PASSWORD_FILE", TYPE_STRING, 0,
     0, NULL, NULL, "FILE",
     "read the Redis password from this file (overrides one in the URL)", 0,
     F(redis_password_file), check_not_empty},
    {"sink", "TOKENWATCH_SINK", TYPE_ENUM, 0, 0, sink_choices, "none", "KIND",
     "where events go: none, stdout (one JSON line each), redis (a stream)",
     0, F(sink), NULL},
    {"stream-key", "TOKENWATCH_STREAM_KEY", TYPE_STRING, 0, 0, NULL, NULL,
     "KEY", "the Redis stream for --sink redis (default tokenwatch:{NAME}:events)",
     0, F(stream_key), check_not_empty},
    {"stream-maxlen", "TOKENWATCH_STREAM_MAXLEN", TYPE_INT, 1,
     (int64_t)1000000000000, NULL, "1000000", "N",
     "trim the stream to about this many entries", 0, F(stream_maxlen), NULL},
    {"checkpoint-interval", "TOKENWATCH_CHECKPOINT_INTERVAL", TYPE_DURATION,
     10, DAY_MS, NULL, "1s", "DUR",
     "checkpoint at least this often while the position moves", 0,
     F(checkpoint_interval_ms), NULL},
    {"checkpoint-every", "TOKENWATCH_CHECKPOINT_EVERY", TYPE_INT, 1, 1000000,
     NULL, "1000", "N", "checkpoint after this many events", 0,
     F(checkpoint_every), NULL},
    {"max-events", NULL, TYPE_INT, 1, INT64_MAX, NULL, NULL, "N",
     "stop cleanly after this many events", 0, F(max_events), NULL},
    {"until", NULL, TYPE_STRING, 0, 0, NULL, NULL, "SPEC",
     "stop cleanly once the stream passes this cluster time", 0,
     F(until), check_until},
    {"guard", "TOKENWATCH_GUARD", TYPE_LIST, 0, 0, NULL, NULL, "KEY",
     "another consumer's position to guard: a Redis key or pattern, a Kafka "
     "Connect connector's URL, monstache:NAME (repeatable; the environment "
     "takes a comma-separated list)",
     0, F(guard), tw_check_guard},
    {"warn-at", "TOKENWATCH_WARN_AT", TYPE_LIMIT, 0, 0, NULL, "50%", "LIMIT",
     "warn when a token's time left falls under this: a share of the oplog "
     "window or a duration",
     0, F(warn_at), NULL},
    {"crit-at", "TOKENWATCH_CRIT_AT", TYPE_LIMIT, 0, 0, NULL, "20%", "LIMIT",
     "critical under this share of the window or duration", 0, F(crit_at),
     NULL},
    {"monitor-interval", "TOKENWATCH_MONITOR_INTERVAL", TYPE_DURATION, 100,
     DAY_MS, NULL, "30s", "DUR",
     "how often the oplog window and the guarded tokens are measured", 0,
     F(monitor_interval_ms), NULL},
    {"retention", "TOKENWATCH_RETENTION", TYPE_DURATION, 1000, 3650 * DAY_MS,
     NULL, NULL, "DUR",
     "the window when the oplog cannot be read (Amazon DocumentDB's change "
     "stream log retention: 3h by default)",
     0, F(retention_ms), NULL},
    {"shard-uri", "TOKENWATCH_SHARD_URI", TYPE_LIST, 0, 0, NULL, NULL, "NAME=URI",
     "on a sharded cluster, read this shard's oplog window with this URI "
     "instead of the router's credentials and listShards' hosts (repeatable; "
     "the environment takes a space-separated list)",
     SECRET | SPACED, F(shard_uri), tw_check_shard_uri},
    {"slack-webhook", "TOKENWATCH_SLACK_WEBHOOK", TYPE_STRING, 0, 0, NULL,
     NULL, "URL", "Slack incoming webhook; without one alerts are only logged",
     SECRET, F(slack_webhook), tw_check_webhook_url},
    {"slack-webhook-file", "TOKENWATCH_SLACK_WEBHOOK_FILE", TYPE_STRING, 0, 0,
     NULL, NULL, "FILE", "read the Slack webhook URL from this file", 0,
     F(slack_webhook_file), check_not_empty},
    {"webhook-url", "TOKENWATCH_WEBHOOK_URL", TYPE_STRING, 0, 0, NULL, NULL, "URL",
     "generic JSON webhook: each alert and the digest POSTed as one JSON object "
     "(Alertmanager receivers, Teams workflows, your own bot)",
     SECRET, F(webhook_url), tw_check_webhook_url},
    {"webhook-url-file", "TOKENWATCH_WEBHOOK_URL_FILE", TYPE_STRING, 0, 0, NULL, NULL,
     "FILE", "read the generic webhook URL from this file", 0, F(webhook_url_file),
     check_not_empty},
    {"pagerduty-routing-key", "TOKENWATCH_PAGERDUTY_ROUTING_KEY", TYPE_STRING, 0, 0, NULL,
     NULL, "KEY",
     "PagerDuty Events API v2 integration key: WARN, CRIT, LOST and UNKNOWN "
     "trigger, OK resolves (no digest)",
     SECRET, F(pagerduty_routing_key), check_routing_key},
    {"pagerduty-routing-key-file", "TOKENWATCH_PAGERDUTY_ROUTING_KEY_FILE", TYPE_STRING, 0,
     0, NULL, NULL, "FILE", "read the PagerDuty routing key from this file", 0,
     F(pagerduty_routing_key_file), check_not_empty},
    {"pagerduty-url", "TOKENWATCH_PAGERDUTY_URL", TYPE_STRING, 0, 0, NULL,
     "https://events.pagerduty.com/v2/enqueue", "URL",
     "where PagerDuty events are POSTed (a proxy or a test stand-in)", 0,
     F(pagerduty_url), tw_check_webhook_url},
    {"heartbeat-url", "TOKENWATCH_HEARTBEAT_URL", TYPE_STRING, 0, 0, NULL, NULL, "URL",
     "dead man's switch (healthchecks.io, Cronitor): pinged after every healthy "
     "guard round, with /fail appended to its path after a failed one",
     SECRET, F(heartbeat_url), tw_check_webhook_url},
    {"heartbeat-url-file", "TOKENWATCH_HEARTBEAT_URL_FILE", TYPE_STRING, 0, 0, NULL, NULL,
     "FILE", "read the heartbeat URL from this file", 0, F(heartbeat_url_file),
     check_not_empty},
    {"heartbeat-method", "TOKENWATCH_HEARTBEAT_METHOD", TYPE_ENUM, 0, 0,
     heartbeat_method_choices, "get", "METHOD",
     "get, or post (with a one-line text body saying how the round went)", 0,
     F(heartbeat_method), NULL},
    {"digest-at", "TOKENWATCH_DIGEST_AT", TYPE_STRING, 0, 0, NULL, NULL, "HH:MM",
     "send a daily digest of every guarded position at this time of day, UTC, "
     "to Slack and the generic webhook (not PagerDuty)",
     0, F(digest_at), check_digest_at},
    {"alert-repeat", "TOKENWATCH_ALERT_REPEAT", TYPE_DURATION, 1000,
     365 * DAY_MS, NULL, "24h", "DUR",
     "while a token is not OK, repeat its alert this often", 0,
     F(alert_repeat_ms), NULL},
    {"metrics-addr", "TOKENWATCH_METRICS_ADDR", TYPE_STRING, 0, 0, NULL,
     "127.0.0.1:9470", "HOST:PORT",
     "serve /healthz, /readyz and Prometheus /metrics here; off disables", 0,
     F(metrics_addr), tw_check_metrics_addr},
    {"on-token-lost", "TOKENWATCH_ON_TOKEN_LOST", TYPE_ENUM, 0, 0, on_lost_choices,
     "fail", "POLICY",
     "when the resume point is gone: fail (alert, exit 3) or fallback (alert, "
     "record the gap, replay from --fallback-from)",
     0, F(on_token_lost), NULL},
    {"fallback-from", "TOKENWATCH_FALLBACK_FROM", TYPE_STRING, 0, 0, NULL, "oldest",
     "SPEC", "where a fallback replay starts (never before the oldest oplog entry)",
     0, F(fallback_from), check_fallback_spec},
    {"on-missing-checkpoint", "TOKENWATCH_ON_MISSING_CHECKPOINT", TYPE_STRING, 0, 0, NULL,
     NULL, "POLICY",
     "when there is no checkpoint (a new deployment, or a store that lost it): "
     "now (warn and alert once), oldest, a SPEC, or fail (exit 2); default: "
     "fail in a protected environment, now elsewhere",
     0, F(on_missing_checkpoint), check_missing_policy},
    {"resume-from", NULL, TYPE_STRING, 0, 0, NULL, NULL, "SPEC",
     "manual recovery: start from SPEC instead of the checkpoint (the current "
     "one goes to history first)",
     0, F(resume_from), check_spec},
    {"dry-run", NULL, TYPE_BOOL, 0, 0, NULL, NULL, "",
     "with --resume-from or checkpoint rollback: print the plan, change nothing",
     0, F(dry_run), NULL},
    {"confirm", NULL, TYPE_STRING, 0, 0, NULL, NULL, "ENV",
     "required with --resume-from and checkpoint rollback in a protected "
     "environment: the --environment again",
     0, F(confirm), check_not_empty},
    {"protect", "TOKENWATCH_PROTECT", TYPE_LIST, 0, 0, NULL, "prod,production,live",
     "LIST", "environments where manual recovery needs --confirm", 0, F(protect),
     check_not_empty},
    {"log-format", "TOKENWATCH_LOG_FORMAT", TYPE_ENUM, 0, 0,
     log_format_choices, "text", "FMT", "text, or json (one object per line)",
     0, F(log_format), NULL},
    {"log-level", "TOKENWATCH_LOG_LEVEL", TYPE_ENUM, 0, 0, log_level_choices,
     "info", "LVL", "debug, info, warn or error", 0, F(log_level), NULL},
};

#define TABLE_SIZE (sizeof table / sizeof table[0])

_Static_assert(offsetof(tw_settings_t, guard_count) ==
                       offsetof(tw_settings_t, guard) + sizeof(char **) &&
                   offsetof(tw_settings_t, protect_count) ==
                       offsetof(tw_settings_t, protect) + sizeof(char **) &&
                   offsetof(tw_settings_t, shard_uri_count) ==
                       offsetof(tw_settings_t, shard_uri) + sizeof(char **),
               "a TYPE_LIST field must be followed by its count");
_Static_assert(TABLE_SIZE <= sizeof((tw_settings_t *)0)->sources /
                                 sizeof(tw_setting_source_t),
               "tw_settings_t.sources is too small for the table");

static bool check_name(const char *value, tw_error_t *err)
{
    size_t len = strlen(value);

    if (len == 0 || len > 64)
        goto bad;
    for (size_t k = 0; k < len; k++) {
        char c = value[k];
        if (!isalnum((unsigned char)c) && c != '-' && c != '_' && c != '.')
            goto bad;
    }
    return true;
bad:
    /* Braces or colons would break the {NAME} hash tag of the Redis keys. */
    tw_error_set(err, TW_ERR_USAGE, 0,
                 "'%s' is not a valid name: 1 to 64 letters, digits, '-', "
                 "'_' or '.'",
                 value);
    return false;
}

/* An Events API integration key: 32 characters as PagerDuty issues them;
 * any run of letters, digits, '-' and '_' is taken. Never quoted. */
static bool check_routing_key(const char *value, tw_error_t *err)
{
    size_t len = strlen(value);

    if (len > 0 && len <= 128 &&
        strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") ==
            len)
        return true;
    tw_error_set(err, TW_ERR_USAGE, 0,
                 "not a routing key (1 to 128 letters, digits, '-' or '_'; PagerDuty's "
                 "are 32 characters)");
    return false;
}

static bool check_digest_at(const char *value, tw_error_t *err)
{
    int minute;

    return tw_digest_parse_at(value, &minute, err);
}

static bool check_not_empty(const char *value, tw_error_t *err)
{
    if (value[0] != '\0')
        return true;
    tw_error_set(err, TW_ERR_USAGE, 0, "the value is empty");
    return false;
}

static bool check_missing_policy(const char *value, tw_error_t *err)
{
    tw_error_t inner;

    if (strcmp(value, "now") == 0 || strcmp(value, "fail") == 0 ||
        strcmp(value, "oldest") == 0 || check_spec(value, &inner))
        return true;
    tw_error_set(err, TW_ERR_USAGE, 0, "'%s' is not now, oldest, fail or a SPEC", value);
    return false;
}

static bool check_pipeline(const char *value, tw_error_t *err)
{
    bson_t wrapped;
    bson_error_t berr;
    bson_iter_t it, stages;
    char *json = bson_strdup_printf("{\"pipeline\": %s}", value);
    bool ok = false;

    if (!bson_init_from_json(&wrapped, json, -1, &berr)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "not valid JSON (%s); write an array of stages, e.g. "
                     "[{\"$match\": {\"operationType\": \"insert\"}}]",
                     berr.message);
        goto out_free_json;
    }
    if (!bson_iter_init_find(&it, &wrapped, "pipeline") ||
        !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &stages)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "the pipeline must be a JSON array of stages");
        goto out_destroy;
    }
    while (bson_iter_next(&stages)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&stages)) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "pipeline stage %s is not an object",
                         bson_iter_key(&stages));
            goto out_destroy;
        }
    }
    ok = true;
out_destroy:
    bson_destroy(&wrapped);
out_free_json:
    bson_free(json);
    return ok;
}

static bool check_until(const char *value, tw_error_t *err)
{
    tw_spec_t spec;

    if (!tw_spec_parse(value, &spec, err))
        return false;
    if (spec.kind == TW_SPEC_OLDEST || spec.kind == TW_SPEC_CHECKPOINT) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s' is not a stopping point: give a cluster time, a "
                     "date, epoch seconds, a token or now",
                     value);
        tw_spec_clear(&spec);
        return false;
    }
    tw_spec_clear(&spec);
    return true;
}

static bool check_spec(const char *value, tw_error_t *err)
{
    tw_spec_t spec;

    if (!tw_spec_parse(value, &spec, err))
        return false;
    tw_spec_clear(&spec);
    return true;
}

/* Any SPEC but `checkpoint`: that is the position that was lost. */
static bool check_fallback_spec(const char *value, tw_error_t *err)
{
    if (!check_spec(value, err))
        return false;
    if (strcasecmp(value, "checkpoint") == 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "a fallback cannot start at the checkpoint it replaces: "
                     "give oldest, now, a time or a token");
        return false;
    }
    return true;
}

static void describe_source(const setting_def_t *def,
                            tw_setting_source_t source, const char *where,
                            char *out, size_t n)
{
    switch (source) {
    case TW_SOURCE_FILE:
        snprintf(out, n, "%s in %s", def->env, where);
        break;
    case TW_SOURCE_ENV:
        snprintf(out, n, "environment variable %s", def->env);
        break;
    case TW_SOURCE_FLAG:
        snprintf(out, n, "--%s", def->name);
        break;
    case TW_SOURCE_DEFAULT:
        snprintf(out, n, "default of --%s", def->name);
        break;
    }
}

/* Frees a string a setting held; a secret one is zeroed first. */
static void free_value(const setting_def_t *def, char *value)
{
    if (def->flags & SECRET)
        tw_secret_free(value);
    else
        free(value);
}

static void list_clear(const setting_def_t *def, char ***items, size_t *count)
{
    for (size_t k = 0; k < *count; k++)
        free_value(def, (*items)[k]);
    free(*items);
    *items = NULL;
    *count = 0;
}

/* ASCII white space, as isspace() in the C locale. */
#define BLANKS " \t\n\v\f\r"

static bool is_blank(char c)
{
    return c != '\0' && strchr(BLANKS, c) != NULL;
}

/* Narrows text[0..*len) to what lies between the blanks around it. */
static const char *trim_blanks(const char *text, size_t *len)
{
    while (*len > 0 && is_blank(*text)) {
        text++;
        (*len)--;
    }
    while (*len > 0 && is_blank(text[*len - 1]))
        (*len)--;
    return text;
}

/* Appends comma-separated items, each without the blanks around it ("a, b"
 * is a and b); a list set by a lower source is replaced, so flags override
 * the environment instead of adding to it. */
static bool apply_list(tw_settings_t *s, size_t index, const char *value,
                       tw_setting_source_t source, tw_error_t *err)
{
    const setting_def_t *def = &table[index];
    char ***items = (char ***)((char *)s + def->offset);
    size_t *count = (size_t *)((char *)s + def->offset + sizeof(char **));
    const char *p = value;

    const char *separators = def->flags & SPACED ? BLANKS : ",";

    if (value[strspn(value, BLANKS)] == '\0') {
        tw_error_set(err, TW_ERR_USAGE, 0, "the value is empty%s",
                     def->offset == offsetof(tw_settings_t, protect)
                         ? " (to turn protection off on purpose: --protect none)"
                         : "");
        return false;
    }
    if (s->sources[index] != source)
        list_clear(def, items, count);
    for (size_t n = 1;; n++) {
        size_t len, kept;
        const char *start;
        char *item;

        if (def->flags & SPACED) {
            p += strspn(p, separators);
            if (!*p)
                break;
        }
        len = strcspn(p, separators);
        kept = len;
        start = trim_blanks(p, &kept);
        /* "a,,b", "a, ,b", "a,": an item lost to a comma too many. */
        if (kept == 0) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "item %zu of the list is empty (two commas in a row, "
                         "or one at an end?)",
                         n);
            return false;
        }
        item = tw_strndup(start, kept);
        if (def->check && !def->check(item, err)) {
            free_value(def, item);
            return false;
        }
        add_string(items, count, item);
        free_value(def, item);
        p += len;
        if (!*p)
            break;
        p++;
    }
    return true;
}

/* The one parser every source goes through. */
/* Which of the setting's choices value is; the list in the error if none. */
static bool parse_choice(const setting_def_t *def, const char *value, size_t *index,
                         tw_error_t *err)
{
    char list[160] = "";
    size_t used = 0;

    for (size_t k = 0; def->choices[k]; k++)
        if (strcmp(value, def->choices[k]) == 0) {
            *index = k;
            return true;
        }
    for (size_t k = 0; def->choices[k]; k++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s",
                                 k ? ", " : "", def->choices[k]);
    tw_error_set(err, TW_ERR_USAGE, 0, "'%s' is not one of: %s", value, list);
    return false;
}

static bool parse_int(const setting_def_t *def, const char *value, int64_t *out,
                      tw_error_t *err)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(value, &end, 10);
    if (errno || end == value || *end != '\0' || !isdigit((unsigned char)value[0])) {
        tw_error_set(err, TW_ERR_USAGE, 0, "'%s' is not a whole number", value);
        return false;
    }
    if (v < def->min || v > def->max) {
        tw_error_set(err, TW_ERR_USAGE, 0, "%lld is out of range [%lld, %lld]", v,
                     (long long)def->min, (long long)def->max);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_duration_setting(const setting_def_t *def, const char *value, int64_t *out,
                                   tw_error_t *err)
{
    char lo[TW_DURATION_TEXT_MAX], hi[TW_DURATION_TEXT_MAX];
    int64_t number;

    if (!tw_duration_parse(value, &number, err))
        return false;
    if (number < def->min || number > def->max) {
        tw_duration_format(def->min, lo);
        tw_duration_format(def->max, hi);
        tw_error_set(err, TW_ERR_USAGE, 0, "'%s' is out of range [%s, %s]", value, lo, hi);
        return false;
    }
    *out = number;
    return true;
}

static bool parse_bool(const char *value, bool *out, tw_error_t *err)
{
    if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
        *out = true;
    else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
        *out = false;
    else {
        tw_error_set(err, TW_ERR_USAGE, 0, "'%s' is not true or false", value);
        return false;
    }
    return true;
}

/* Parses value by the setting's type into its field; err says why not. */
static bool set_field(tw_settings_t *s, size_t index, const char *value,
                      tw_setting_source_t source, tw_error_t *err)
{
    const setting_def_t *def = &table[index];
    void *field = (char *)s + def->offset;
    size_t k;

    switch (def->type) {
    case TYPE_STRING:
        if (def->choices && !parse_choice(def, value, &k, err))
            return false;
        if (def->check && !def->check(value, err))
            return false;
        free_value(def, *(char **)field);
        *(char **)field = tw_strdup(value);
        return true;
    case TYPE_INT:
        return parse_int(def, value, (int64_t *)field, err);
    case TYPE_DURATION:
        return parse_duration_setting(def, value, (int64_t *)field, err);
    case TYPE_ENUM:
        if (!parse_choice(def, value, &k, err))
            return false;
        *(int *)field = (int)k;
        return true;
    case TYPE_LIST:
        return apply_list(s, index, value, source, err);
    case TYPE_LIMIT:
        return tw_limit_parse(value, (tw_limit_t *)field, err);
    case TYPE_BOOL:
        return parse_bool(value, (bool *)field, err);
    }
    return false;
}

static bool apply(tw_settings_t *s, size_t index, const char *value,
                  tw_setting_source_t source, const char *where,
                  tw_error_t *err)
{
    char origin[160];
    tw_error_t inner;

    tw_error_clear(&inner);
    if (set_field(s, index, value, source, &inner)) {
        s->sources[index] = source;
        return true;
    }
    describe_source(&table[index], source, where, origin, sizeof origin);
    /* Checks of secret settings (URIs) redact what they quote. */
    tw_error_set(err, TW_ERR_USAGE, 0, "bad value for %s: %s", origin, inner.message);
    return false;
}

/* The URI holds a password: it is read from the file, checked, and never
 * quoted back, not even in part. */
static bool load_mongo_uri_file(tw_settings_t *s, tw_error_t *err)
{
    char *uri;
    tw_error_t inner;

    if (!tw_secret_read_file(s->mongo_uri_file, "--mongo-uri-file", &uri, err))
        return false;
    if (!tw_check_mongo_uri(uri, &inner)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "--mongo-uri-file %s does not hold a MongoDB connection string",
                     s->mongo_uri_file);
        tw_secret_free(uri);
        return false;
    }
    tw_secret_free(s->mongo_uri);
    s->mongo_uri = uri;
    return true;
}

/* A secret read from a file: where the path is, where the value goes, and
 * the value's check (NULL: any one line). */
typedef struct {
    size_t file;
    size_t value;
    check_fn check;
} secret_file_t;

static const secret_file_t secret_files[] = {
    {F(slack_webhook_file), F(slack_webhook), tw_check_webhook_url},
    {F(webhook_url_file), F(webhook_url), tw_check_webhook_url},
    {F(pagerduty_routing_key_file), F(pagerduty_routing_key), check_routing_key},
    {F(heartbeat_url_file), F(heartbeat_url), tw_check_webhook_url},
    {F(redis_password_file), F(redis_password), NULL},
};

/* Read with the settings, so every command refuses a bad file (exit 2)
 * naming the setting and the path; the content is the secret and is never
 * quoted. The file wins over the value given directly (--slack-webhook, a
 * password in --redis-url). */
static bool load_secret_file(tw_settings_t *s, const secret_file_t *sf, tw_error_t *err)
{
    const char *path = *(char **)((char *)s + sf->file);
    char **value = (char **)((char *)s + sf->value);
    size_t index = 0;
    char origin[160];
    char *read;
    tw_error_t inner;

    while (table[index].offset != sf->file)
        index++;
    describe_source(&table[index], s->sources[index], s->config, origin, sizeof origin);
    if (!tw_secret_read_file(path, origin, &read, err))
        return false;
    if (sf->check && !sf->check(read, &inner)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "%s %s: %s", origin, path, inner.message);
        tw_secret_free(read);
        return false;
    }
    tw_secret_free(*value);
    *value = read;
    return true;
}

static bool load_secret_files(tw_settings_t *s, tw_error_t *err)
{
    for (size_t k = 0; k < sizeof secret_files / sizeof secret_files[0]; k++)
        if (*(char **)((char *)s + secret_files[k].file) &&
            !load_secret_file(s, &secret_files[k], err))
            return false;
    return true;
}

/* A Redis ACL user needs a password, from the URL or the password file. */
static bool check_redis_user(const tw_settings_t *s, tw_error_t *err)
{
    size_t index = 0;
    char origin[160];
    tw_error_t inner;
    bool ok;

    while (table[index].offset != F(redis_url))
        index++;
    ok = tw_check_redis_login(s->redis_url, s->redis_password, &inner);
    if (!ok) {
        describe_source(&table[index], s->sources[index], s->config, origin, sizeof origin);
        tw_error_set(err, TW_ERR_USAGE, 0, "bad value for %s: %s", origin, inner.message);
    }
    return ok;
}

static ssize_t find_by_env(const char *env, size_t len)
{
    for (size_t k = 0; k < TABLE_SIZE; k++)
        if (table[k].env && strlen(table[k].env) == len &&
            strncmp(table[k].env, env, len) == 0)
            return (ssize_t)k;
    return -1;
}

static ssize_t find_by_flag(const char *flag, size_t len)
{
    for (size_t k = 0; k < TABLE_SIZE; k++)
        if (strlen(table[k].name) == len && strncmp(table[k].name, flag, len) == 0)
            return (ssize_t)k;
    return -1;
}

static void add_string(char ***list, size_t *count, const char *text)
{
    char **grown = tw_realloc(*list, (*count + 1) * sizeof **list);

    *list = grown;
    grown[*count] = tw_strdup(text);
    (*count)++;
}

/* A config file longer than this is a mistake (a log, a binary). */
#define CONFIG_FILE_MAX ((size_t)1 << 20)

/* One KEY=VALUE line (p, n bytes), its end of line already cut. */
static bool load_line(tw_settings_t *s, const char *origin, unsigned lineno, const char *p,
                      size_t n, tw_error_t *err)
{
    const char *eq;
    char *value;
    ssize_t index;
    bool ok;

    if (memchr(p, '\0', n)) {
        const char *key_end = memchr(p, '=', n);

        /* The value must not be cut there silently. */
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "config file %s line %u: contains a NUL byte (in %.*s): a value is text",
                     origin, lineno, (int)(key_end ? (size_t)(key_end - p) : 0), p);
        return false;
    }
    while (n > 0 && isspace((unsigned char)*p)) {
        p++;
        n--;
    }
    if (n == 0 || *p == '#')
        return true;
    /* The value is taken literally, as docker --env-file does, so one file
     * means the same to both. */
    eq = memchr(p, '=', n);
    if (!eq) {
        tw_error_set(err, TW_ERR_USAGE, 0, "config file %s line %u: expected KEY=VALUE",
                     origin, lineno);
        return false;
    }
    index = find_by_env(p, (size_t)(eq - p));
    if (index < 0 || table[index].offset == F(config)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "config file %s line %u: unknown key %.*s",
                     origin, lineno, (int)(eq - p), p);
        return false;
    }
    value = tw_strndup(eq + 1, n - (size_t)(eq - p) - 1);
    ok = apply(s, (size_t)index, value, TW_SOURCE_FILE, origin, err);
    free_value(&table[index], value);
    return ok;
}

bool tw_settings_load_text(tw_settings_t *s, const char *origin, const char *text, size_t len,
                           tw_error_t *err)
{
    size_t at = 0;
    unsigned lineno = 0;

    /* A UTF-8 byte order mark (Windows editors write one) is said, not
     * skipped in silence nor read as part of the first key. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "config file %s starts with a UTF-8 byte order mark: save it without "
                     "one (as UTF-8 without BOM)",
                     origin);
        return false;
    }
    while (at < len) {
        const char *p = text + at;
        const char *nl = memchr(p, '\n', len - at);
        size_t n = nl ? (size_t)(nl - p) : len - at;

        lineno++;
        at += nl ? n + 1 : n;
        while (n > 0 && p[n - 1] == '\r')
            n--;
        if (!load_line(s, origin, lineno, p, n, err))
            return false;
    }
    return true;
}

static bool load_file(tw_settings_t *s, const char *path, tw_setting_source_t source,
                      tw_error_t *err)
{
    FILE *f = fopen(path, "r");
    char origin[160];
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    bool ok = false;

    describe_source(&table[0], source, NULL, origin, sizeof origin);
    if (!f) {
        tw_error_set(err, TW_ERR_USAGE, errno, "%s: cannot read config file %s: %s", origin,
                     path, strerror(errno));
        return false;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        tw_error_set(err, TW_ERR_USAGE, EISDIR,
                     "%s: %s is a directory, not a config file of KEY=VALUE lines",
                     origin, path);
        goto out;
    }
    text = tw_malloc(CONFIG_FILE_MAX + 1);
    len = fread(text, 1, CONFIG_FILE_MAX + 1, f);
    if (ferror(f)) {
        tw_error_set(err, TW_ERR_USAGE, errno, "%s: cannot read config file %s: %s", origin,
                     path, strerror(errno));
        goto out;
    }
    if (len > CONFIG_FILE_MAX) {
        tw_error_set(err, TW_ERR_USAGE, 0, "%s: config file %s is over %zu bytes: not a "
                     "config file?", origin, path, CONFIG_FILE_MAX);
        goto out;
    }
    ok = tw_settings_load_text(s, path, text, len, err);
out:
    /* The file may hold secrets (TOKENWATCH_MONGO_URI=...). */
    if (text)
        explicit_bzero(text, len);
    free(text);
    fclose(f);
    return ok;
}

static bool load_env(tw_settings_t *s, const char *const envp[], tw_error_t *err)
{
    static const char prefix[] = "TOKENWATCH_";

    for (size_t k = 0; envp && envp[k]; k++) {
        const char *entry = envp[k];
        const char *eq = strchr(entry, '=');
        ssize_t index;

        if (!eq || strncmp(entry, prefix, sizeof prefix - 1) != 0)
            continue;
        index = find_by_env(entry, (size_t)(eq - entry));
        if (index < 0) {
            /* A warning, not an error: Kubernetes injects TOKENWATCH_PORT and
             * friends for a Service named tokenwatch. */
            char *msg = bson_strdup_printf(
                "ignoring unknown environment variable %.*s",
                (int)(eq - entry), entry);
            add_string(&s->warnings, &s->warning_count, msg);
            bson_free(msg);
            continue;
        }
        if (table[index].offset == F(config))
            continue;
        if (!apply(s, (size_t)index, eq + 1, TW_SOURCE_ENV, NULL, err))
            return false;
    }
    return true;
}

/* Splits "--name=value" / "--name value"; returns the table index. */
static bool next_flag(int argc, const char *const argv[], int *k, ssize_t *index,
                      const char **value, tw_error_t *err)
{
    const char *arg = argv[*k] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);

    *index = find_by_flag(arg, len);
    if (*index < 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "unknown option --%.*s (see tokenwatch --help)", (int)len,
                     arg);
        return false;
    }
    if (eq) {
        *value = eq + 1;
        return true;
    }
    if (table[*index].type == TYPE_BOOL) {
        *value = "true";
        return true;
    }
    if (*k + 1 >= argc) {
        tw_error_set(err, TW_ERR_USAGE, 0, "--%s needs a value (%s)",
                     table[*index].name, table[*index].metavar);
        return false;
    }
    *k += 1;
    *value = argv[*k];
    return true;
}

/* The config file's path: from the environment, or a --config flag. */
static const char *find_config(int argc, const char *const argv[], const char *const envp[],
                               tw_setting_source_t *source)
{
    const char *config = NULL;

    *source = TW_SOURCE_ENV;
    for (size_t k = 0; envp && envp[k]; k++)
        if (strncmp(envp[k], "TOKENWATCH_CONFIG=", 18) == 0)
            config = envp[k] + 18;
    for (int k = 0; k < argc; k++) {
        if (strcmp(argv[k], "--") == 0)
            break;
        if (strcmp(argv[k], "--config") == 0 && k + 1 < argc) {
            config = argv[k + 1];
            *source = TW_SOURCE_FLAG;
        } else if (strncmp(argv[k], "--config=", 9) == 0) {
            config = argv[k] + 9;
            *source = TW_SOURCE_FLAG;
        }
    }
    return config;
}

/* A flag without a value of its own; false when arg is none of them. */
static bool plain_flag(tw_settings_t *s, const char *arg)
{
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
        s->help = true;
    else if (strcmp(arg, "--version") == 0)
        s->version = true;
    else if (strcmp(arg, "--json") == 0)
        s->json = true;
    else
        return false;
    return true;
}

static bool load_flags(tw_settings_t *s, int argc, const char *const argv[], tw_error_t *err)
{
    bool options_done = false;

    for (int k = 0; k < argc; k++) {
        const char *arg = argv[k];
        ssize_t index;
        const char *value;

        if (options_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            add_string(&s->positional, &s->positional_count, arg);
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (plain_flag(s, arg))
            continue;
        if (arg[1] != '-') {
            char shown[512];

            /* "-mongo-uri=mongodb://u:pw@h": a typo may carry a secret. */
            tw_redact_url(arg, shown, sizeof shown);
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "unknown option %s (see tokenwatch --help)", shown);
            return false;
        }
        if (!next_flag(argc, argv, &k, &index, &value, err) ||
            !apply(s, (size_t)index, value, TW_SOURCE_FLAG, NULL, err))
            return false;
    }
    return true;
}

/* What only the settings together can say, and what follows from them. */
static bool settle(tw_settings_t *s, tw_error_t *err)
{
    if (s->mongo_uri_file && !load_mongo_uri_file(s, err))
        return false;
    if (!load_secret_files(s, err))
        return false;
    if (!check_redis_user(s, err))
        return false;
    if (s->collection && !s->db) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "--collection (TOKENWATCH_COLLECTION) needs --db "
                     "(TOKENWATCH_DB): which database holds '%s'?",
                     s->collection);
        return false;
    }
    if (s->crit_at.kind == s->warn_at.kind &&
        ((s->crit_at.kind == TW_LIMIT_SHARE && s->crit_at.share > s->warn_at.share) ||
         (s->crit_at.kind == TW_LIMIT_DURATION && s->crit_at.ms > s->warn_at.ms))) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "--crit-at must not be above --warn-at: a token is critical "
                     "after it is warned about");
        return false;
    }
    s->digest_at_minute = -1;
    if (s->digest_at && !tw_digest_parse_at(s->digest_at, &s->digest_at_minute, err))
        return false;
    if (s->lease_ttl_ms > 0 &&
        (s->lease_ttl_ms < 500 || s->lease_renew_ms * 2 > s->lease_ttl_ms)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "--lease-ttl must be 0s (no lease) or at least 500ms, and "
                     "--lease-renew at most half of it: a leader renews well before "
                     "its lease lapses");
        return false;
    }
    if (!s->stream_key) {
        size_t n = strlen(s->name) + sizeof "tokenwatch:{}:events";

        s->stream_key = tw_malloc(n);
        snprintf(s->stream_key, n, "tokenwatch:{%s}:events", s->name);
    }
    return true;
}

bool tw_settings_load(tw_settings_t *s, int argc, const char *const argv[],
                      const char *const envp[], tw_error_t *err)
{
    tw_setting_source_t config_source;
    const char *config;

    for (size_t k = 0; k < TABLE_SIZE; k++) {
        if (table[k].def && !apply(s, k, table[k].def, TW_SOURCE_DEFAULT, NULL, err))
            return false;
    }
    /* The config file sits below the environment and the flags, but its
     * own location comes from them. */
    config = find_config(argc, argv, envp, &config_source);
    if (config && (!apply(s, 0, config, config_source, NULL, err) ||
                   !load_file(s, config, config_source, err)))
        return false;
    return load_env(s, envp, err) && load_flags(s, argc, argv, err) && settle(s, err);
}

void tw_settings_release(tw_settings_t *s)
{
    if (!s)
        return;
    for (size_t k = 0; k < TABLE_SIZE; k++) {
        if (table[k].type == TYPE_STRING) {
            char **field = (char **)((char *)s + table[k].offset);
            free_value(&table[k], *field);
        } else if (table[k].type == TYPE_LIST) {
            list_clear(&table[k], (char ***)((char *)s + table[k].offset),
                       (size_t *)((char *)s + table[k].offset + sizeof(char **)));
        }
    }
    tw_secret_free(s->redis_password);
    for (size_t k = 0; k < s->positional_count; k++)
        free(s->positional[k]);
    free(s->positional);
    for (size_t k = 0; k < s->warning_count; k++)
        free(s->warnings[k]);
    free(s->warnings);
    memset(s, 0, sizeof *s);
}

tw_setting_source_t tw_settings_source_of(const tw_settings_t *s,
                                          const char *name)
{
    ssize_t index = find_by_flag(name, strlen(name));

    return index < 0 ? TW_SOURCE_DEFAULT : s->sources[index];
}

size_t tw_settings_count(void)
{
    return TABLE_SIZE;
}

const char *tw_settings_env_name(size_t index)
{
    return index < TABLE_SIZE ? table[index].env : NULL;
}

bool tw_settings_is_secret(size_t index)
{
    return index < TABLE_SIZE && (table[index].flags & SECRET);
}

void tw_settings_print_help(FILE *out)
{
    fputs("Options (flag, environment variable; default < --config file < "
          "environment < flag):\n",
          out);
    for (size_t k = 0; k < TABLE_SIZE; k++) {
        const setting_def_t *def = &table[k];
        char flag[64];

        snprintf(flag, sizeof flag, "--%s%s%s", def->name, def->metavar[0] ? " " : "",
                 def->metavar);
        fprintf(out, "  %-28s %s", flag, def->help);
        if (def->def)
            fprintf(out, " [default: %s]", def->def);
        if (def->env)
            fprintf(out, " [env: %s]", def->env);
        else
            fputs(" [flag only]", out);
        if (def->flags & SECRET)
            fputs(" (its password is never logged)", out);
        fputc('\n', out);
    }
    fputs("\nDurations: 500ms, 30s, 15m, 6h, 7d. Resume positions (SPEC):\n",
          out);
    fputs(TW_SPEC_FORMS, out);
}
