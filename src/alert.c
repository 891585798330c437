#include "tokenwatch/alert.h"

#include <math.h>
#include <string.h>

#include "tokenwatch/duration.h"
#include "tokenwatch/utf8.h"

/* value as valid UTF-8 (U+FFFD for bad bytes), escaped for Slack or not. */
static char *clean(const char *value, bool slack)
{
    bson_string_t *out;
    size_t n, k = 0;

    if (!value)
        return NULL;
    n = strlen(value);
    out = bson_string_new(NULL);
    while (k < n) {
        size_t len = tw_utf8_char_len(value + k, n - k);

        if (len == 0) {
            bson_string_append(out, "\xef\xbf\xbd"); /* U+FFFD */
            len = 1;
        } else if (slack && value[k] == '&') {
            bson_string_append(out, "&amp;");
        } else if (slack && value[k] == '<') {
            bson_string_append(out, "&lt;");
        } else if (slack && value[k] == '>') {
            bson_string_append(out, "&gt;");
        } else {
            char one[5];
            memcpy(one, value + k, len);
            one[len] = '\0';
            bson_string_append(out, one);
        }
        k += len;
    }
    return bson_string_free(out, false);
}

char *tw_alert_escape(const char *value)
{
    return clean(value, true);
}

char *tw_alert_clean(const char *value)
{
    return clean(value, false);
}

/* The alert with every value from outside made valid UTF-8 and, for Slack,
 * escaped (see tw_alert_escape): what the texts and payloads are built from. */
typedef struct {
    tw_alert_t a;
    char *owned[5];
} escaped_t;

static void escaped_init(escaped_t *e, const tw_alert_t *a, bool slack)
{
    e->a = *a;
    e->owned[0] = clean(a->environment, slack);
    e->owned[1] = clean(a->name, slack);
    e->owned[2] = clean(a->key, slack);
    e->owned[3] = clean(a->reason, slack);
    e->owned[4] = clean(a->edge_shard, slack);
    e->a.environment = e->owned[0] ? e->owned[0] : "";
    e->a.name = e->owned[1] ? e->owned[1] : "";
    e->a.key = e->owned[2] ? e->owned[2] : "";
    e->a.reason = e->owned[3];
    e->a.edge_shard = e->owned[4];
}

static void escaped_release(escaped_t *e)
{
    for (size_t k = 0; k < sizeof e->owned / sizeof e->owned[0]; k++)
        bson_free(e->owned[k]);
}

static const char *state_emoji(const tw_alert_t *a)
{
    if (a->notify == TW_NOTIFY_RESOLVED)
        return ":white_check_mark:";
    switch (a->state) {
    case TW_STATE_OK: return ":white_check_mark:";
    case TW_STATE_WARN: return ":warning:";
    case TW_STATE_CRIT: return ":rotating_light:";
    case TW_STATE_LOST: return ":x:";
    case TW_STATE_UNKNOWN: return ":grey_question:";
    }
    return "";
}

static void seconds_words(double seconds, char out[TW_DURATION_TEXT_MAX])
{
    tw_duration_words(seconds > 0 ? (int64_t)llround(seconds * 1000.0) : 0, out);
}

/* On a sharded cluster, whose window it is: " on shard NAME, the
 * smallest of N", else "". */
static void shard_words(const tw_alert_t *a, char out[TW_ALERT_SHARD_TEXT_MAX])
{
    out[0] = '\0';
    if (a->edge_shard && !a->window.from_retention)
        tw_utf8_format(out, TW_ALERT_SHARD_TEXT_MAX, " on shard %s, the smallest of %zu",
                       a->edge_shard, a->shard_count);
}

static void time_left_words(const tw_alert_t *a, char out[TW_DURATION_TEXT_MAX])
{
    if (a->state == TW_STATE_LOST)
        snprintf(out, TW_DURATION_TEXT_MAX, "none (lost)");
    else if (a->measure.unbounded)
        snprintf(out, TW_DURATION_TEXT_MAX, "unbounded (oplog not truncating)");
    else
        seconds_words(a->measure.time_left_s, out);
}

/* The follower telling of its own checkpoint (reopened by time, started
 * without a checkpoint): the reason says it all, nothing is ageing. */
bool tw_alert_is_notice(const tw_alert_t *a)
{
    return a->own && a->state == TW_STATE_WARN && a->reason;
}

static bool needs_action(const tw_alert_t *a)
{
    return !tw_alert_is_notice(a) && (a->state == TW_STATE_WARN || a->state == TW_STATE_CRIT ||
                             a->state == TW_STATE_LOST);
}

char *tw_alert_widen_command(const tw_alert_t *a)
{
    int64_t hours;

    if (!needs_action(a) || a->window.from_retention)
        return NULL;
    /* Twice the window seen, at least a day: room for a stalled weekend. */
    hours = (2 * (a->has_measure ? a->measure.window_s : 0) + 3599) / 3600;
    if (hours < 24)
        hours = 24;
    return bson_strdup_printf(
        "db.adminCommand({replSetResizeOplog: 1, minRetentionHours: %lld})",
        (long long)hours);
}

const char *tw_alert_widen_note(const tw_alert_t *a)
{
    if (a->window.from_retention)
        return "raise the change stream log retention (Amazon DocumentDB: the "
               "cluster parameter change_stream_log_retention_duration, up to "
               "7 days)";
    return "on each replica set member (MongoDB 4.4+; on Atlas, set the "
           "cluster's minimum oplog window instead)";
}

char *tw_alert_advice(const tw_alert_t *a)
{
    if (a->state == TW_STATE_LOST)
        return a->own ? NULL
                      : bson_strdup_printf(
                            "the consumer whose checkpoint is %s cannot resume: "
                            "restart it from a new position (the oldest entry "
                            "still in the oplog is at cluster time %u:%u) and "
                            "reconcile what it missed",
                            a->key, a->window.oldest.t, a->window.oldest.i);
    if ((a->state != TW_STATE_WARN && a->state != TW_STATE_CRIT) || tw_alert_is_notice(a))
        return NULL;
    if (a->own)
        return bson_strdup_printf(
            "this watcher's own checkpoint is ageing, so tokenwatch --name %s "
            "is not following: check its log and get MongoDB and Redis "
            "answering; it resumes by itself",
            a->name);
    return bson_strdup_printf(
        "get the consumer whose checkpoint is %s moving again before the time "
        "left runs out",
        a->key);
}

char *tw_alert_recovery(const tw_alert_t *a)
{
    if (!a->own || !needs_action(a))
        return NULL;
    return bson_strdup_printf(
        "tokenwatch run --name %s --environment %s --resume-from oldest "
        "--dry-run",
        a->name, a->environment);
}

/* When a measured token will be lost, in whole seconds: a forecast has no
 * millisecond precision. */
static int64_t lost_around_ms(const tw_alert_t *a)
{
    return (a->now_ms + (int64_t)(a->measure.time_left_s * 1000.0)) / 1000 * 1000;
}

/* The text, from an alert whose values are already escaped. */
static char *build_text(const tw_alert_t *a)
{
    char token_date[TW_UTC_TEXT_MAX], window[TW_DURATION_TEXT_MAX + TW_ALERT_SHARD_TEXT_MAX];
    char shard[TW_ALERT_SHARD_TEXT_MAX];
    char left[TW_DURATION_TEXT_MAX], when[TW_UTC_TEXT_MAX];
    char *advice = tw_alert_advice(a);
    char *recovery = tw_alert_recovery(a);
    char *widen = tw_alert_widen_command(a);
    char *text;
    const char *lead;
    char detail[TW_ALERT_SHARD_TEXT_MAX + 3 * TW_DURATION_TEXT_MAX + 256] = "";

    if (a->notify == TW_NOTIFY_RESOLVED)
        lead = "resolved";
    else if (a->notify == TW_NOTIFY_REPEAT)
        lead = "still";
    else
        lead = "now";
    if (a->has_token)
        tw_utc_format(tw_ctime_wall_ms(a->token), token_date);
    if (a->has_measure) {
        seconds_words((double)a->measure.window_s, window);
        shard_words(a, shard);
        time_left_words(a, left);
        if (a->state != TW_STATE_LOST && !a->measure.unbounded) {
            tw_utc_format(lost_around_ms(a), when);
            tw_utf8_format(detail, sizeof detail,
                     "; token from %s, %s left (%.0f%% of a %s window%s; lost "
                     "around %s)",
                     token_date, left, a->measure.share * 100.0, window, shard, when);
        } else {
            tw_utf8_format(detail, sizeof detail, "; token from %s, time left %s, window %s%s",
                     a->has_token ? token_date : "?", left, window, shard);
        }
    } else if (a->has_token) {
        snprintf(detail, sizeof detail, "; token from %s", token_date);
    }
    text = bson_strdup_printf(
        "[%s] tokenwatch %s: %s is %s %s%s%s%s%s%s%s%s%s%s%s", a->environment, a->name,
        a->key, lead, tw_state_name(a->state),
        a->notify == TW_NOTIFY_RESOLVED ? " (was " : "",
        a->notify == TW_NOTIFY_RESOLVED ? tw_state_name(a->previous) : "",
        a->notify == TW_NOTIFY_RESOLVED ? ")" : "", detail,
        a->reason ? ": " : "", a->reason ? a->reason : "",
        advice ? ". Now: " : "", advice ? advice : "",
        recovery ? (a->state == TW_STATE_LOST ? ". Recover: " : ". If it is lost: ") : "",
        recovery ? recovery : "");
    if (needs_action(a)) {
        char *longer = bson_strdup_printf("%s. Widen the window: %s%s%s", text,
                                          widen ? widen : "", widen ? " " : "",
                                          tw_alert_widen_note(a));
        bson_free(text);
        text = longer;
    }
    bson_free(advice);
    bson_free(recovery);
    bson_free(widen);
    return text;
}

char *tw_alert_text(const tw_alert_t *a)
{
    escaped_t e;
    char *text;

    escaped_init(&e, a, true);
    text = build_text(&e.a);
    escaped_release(&e);
    return text;
}

static void append_text_block(bson_t *blocks, int *n, const char *type,
                              const char *text_type, const char *text)
{
    bson_t block, body;
    char key[16];

    snprintf(key, sizeof key, "%d", (*n)++);
    BSON_APPEND_DOCUMENT_BEGIN(blocks, key, &block);
    BSON_APPEND_UTF8(&block, "type", type);
    BSON_APPEND_DOCUMENT_BEGIN(&block, "text", &body);
    BSON_APPEND_UTF8(&body, "type", text_type);
    BSON_APPEND_UTF8(&body, "text", text);
    bson_append_document_end(&block, &body);
    bson_append_document_end(blocks, &block);
}

static void append_field(bson_t *fields, int *n, const char *label, const char *value)
{
    bson_t field;
    char key[16];
    char *text = bson_strdup_printf("*%s*\n%s", label, value);

    snprintf(key, sizeof key, "%d", (*n)++);
    BSON_APPEND_DOCUMENT_BEGIN(fields, key, &field);
    BSON_APPEND_UTF8(&field, "type", "mrkdwn");
    BSON_APPEND_UTF8(&field, "text", text);
    bson_append_document_end(fields, &field);
    bson_free(text);
}

/* The payload, from an alert whose values are already escaped. */
static char *build_payload(const tw_alert_t *a)
{
    bson_t payload = BSON_INITIALIZER;
    bson_t blocks, section, fields;
    char *text = build_text(a);
    char *recovery = tw_alert_recovery(a);
    char *header;
    char *json;
    char token_date[TW_UTC_TEXT_MAX], window[TW_DURATION_TEXT_MAX + TW_ALERT_SHARD_TEXT_MAX];
    char shard[TW_ALERT_SHARD_TEXT_MAX];
    char left[TW_DURATION_TEXT_MAX], ct[TW_CTIME_TEXT_MAX];
    char *token_field;
    int nblocks = 0, nfields = 0;

    header = bson_strdup_printf("%s %s%s · %s · %s", state_emoji(a),
                                a->notify == TW_NOTIFY_RESOLVED ? "resolved: " : "",
                                tw_state_name(a->state), a->environment, a->name);
    BSON_APPEND_UTF8(&payload, "text", text);
    BSON_APPEND_ARRAY_BEGIN(&payload, "blocks", &blocks);
    append_text_block(&blocks, &nblocks, "header", "plain_text", header);

    {
        char key[16];
        snprintf(key, sizeof key, "%d", nblocks++);
        BSON_APPEND_DOCUMENT_BEGIN(&blocks, key, &section);
        BSON_APPEND_UTF8(&section, "type", "section");
        BSON_APPEND_ARRAY_BEGIN(&section, "fields", &fields);
        append_field(&fields, &nfields, "Environment", a->environment);
        append_field(&fields, &nfields, "Stream", a->name);
        append_field(&fields, &nfields, "Key", a->key);
        append_field(&fields, &nfields, "State", tw_state_name(a->state));
        if (a->has_token) {
            tw_utc_format(tw_ctime_wall_ms(a->token), token_date);
            tw_ctime_format(a->token, ct);
            token_field = bson_strdup_printf("%s (%s)", token_date, ct);
            append_field(&fields, &nfields, "Token time (UTC)", token_field);
            bson_free(token_field);
        }
        if (a->has_measure) {
            seconds_words((double)a->measure.window_s, window);
        shard_words(a, shard);
            time_left_words(a, left);
            strncat(window, shard, sizeof window - strlen(window) - 1);
            append_field(&fields, &nfields,
                         a->window.from_retention ? "Window (--retention)" : "Oplog window",
                         window);
            append_field(&fields, &nfields, "Time left", left);
        }
        bson_append_array_end(&section, &fields);
        bson_append_document_end(&blocks, &section);
    }
    if (a->reason)
        append_text_block(&blocks, &nblocks, "section", "mrkdwn", a->reason);
    if (needs_action(a)) {
        char *advice = tw_alert_advice(a);
        char *widen = tw_alert_widen_command(a);
        char *how = bson_strdup_printf(
            "%s%s%s%s%s%s*Widen the window:* %s%s%s%s", advice ? advice : "",
            advice ? "\n" : "",
            recovery ? (a->state == TW_STATE_LOST ? "*Recover* (dry run first, then "
                                                    "--confirm ENV): `"
                                                  : "*If it is lost:* `")
                     : "",
            recovery ? recovery : "", recovery ? "`" : "", recovery ? "\n" : "",
            widen ? "`" : "", widen ? widen : "", widen ? "` " : "", tw_alert_widen_note(a));
        append_text_block(&blocks, &nblocks, "section", "mrkdwn", how);
        bson_free(how);
        bson_free(advice);
        bson_free(widen);
    }
    bson_append_array_end(&payload, &blocks);
    json = bson_as_relaxed_extended_json(&payload, NULL);
    bson_destroy(&payload);
    bson_free(header);
    bson_free(text);
    bson_free(recovery);
    return json;
}

char *tw_alert_slack_payload(const tw_alert_t *a)
{
    escaped_t e;
    char *json;

    escaped_init(&e, a, true);
    json = build_payload(&e.a);
    escaped_release(&e);
    return json;
}

char *tw_alert_plain_text(const tw_alert_t *a)
{
    escaped_t e;
    char *text;

    escaped_init(&e, a, false);
    text = build_text(&e.a);
    escaped_release(&e);
    return text;
}

const char *tw_alert_event_name(const tw_alert_t *a)
{
    switch (a->notify) {
    case TW_NOTIFY_RESOLVED: return "resolved";
    case TW_NOTIFY_REPEAT: return "repeat";
    default: return "change";
    }
}

static void append_text_or_null(bson_t *doc, const char *key, const char *value)
{
    if (value)
        BSON_APPEND_UTF8(doc, key, value);
    else
        BSON_APPEND_NULL(doc, key);
}

/* The token and the measures, from an alert whose values are valid UTF-8. */
static void json_measures(const tw_alert_t *a, bson_t *doc)
{
    char date[TW_UTC_TEXT_MAX], ct[TW_CTIME_TEXT_MAX];
    bool bounded = a->has_measure && !a->measure.unbounded && a->state != TW_STATE_LOST;

    if (a->has_token) {
        tw_utc_format(tw_ctime_wall_ms(a->token), date);
        tw_ctime_format(a->token, ct);
    }
    append_text_or_null(doc, "token_time", a->has_token ? date : NULL);
    append_text_or_null(doc, "token_cluster_time", a->has_token ? ct : NULL);
    if (a->has_measure) {
        BSON_APPEND_INT64(doc, "window_seconds", a->measure.window_s);
        BSON_APPEND_INT64(doc, "headroom_seconds", a->measure.headroom_s);
        BSON_APPEND_DOUBLE(doc, "share", a->measure.share);
    } else {
        BSON_APPEND_NULL(doc, "window_seconds");
        BSON_APPEND_NULL(doc, "headroom_seconds");
        BSON_APPEND_NULL(doc, "share");
    }
    BSON_APPEND_UTF8(doc, "window_source", a->window.from_retention ? "retention" : "oplog");
    if (bounded)
        BSON_APPEND_DOUBLE(doc, "time_left_seconds", a->measure.time_left_s);
    else if (a->has_measure && a->state == TW_STATE_LOST)
        BSON_APPEND_INT64(doc, "time_left_seconds", 0);
    else
        BSON_APPEND_NULL(doc, "time_left_seconds");
    BSON_APPEND_BOOL(doc, "time_left_unbounded", a->has_measure && a->measure.unbounded);
    if (bounded)
        tw_utc_format(lost_around_ms(a), date);
    append_text_or_null(doc, "lost_around", bounded ? date : NULL);
}

/* What to do, from an alert whose values are valid UTF-8. */
static void json_advice(const tw_alert_t *a, bson_t *doc)
{
    char *advice = tw_alert_advice(a);
    char *recovery = tw_alert_recovery(a);
    char *widen = tw_alert_widen_command(a);
    bson_t commands;

    append_text_or_null(doc, "advice", advice);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "commands", &commands);
    append_text_or_null(&commands, "recover", recovery);
    append_text_or_null(&commands, "widen", widen);
    bson_append_document_end(doc, &commands);
    append_text_or_null(doc, "widen_note", needs_action(a) ? tw_alert_widen_note(a) : NULL);
    bson_free(advice);
    bson_free(recovery);
    bson_free(widen);
}

void tw_alert_json_fields(const tw_alert_t *a, bson_t *doc)
{
    escaped_t e;
    char now[TW_UTC_TEXT_MAX];
    char *text;

    escaped_init(&e, a, false);
    text = build_text(&e.a);
    tw_utc_format(a->now_ms, now);
    BSON_APPEND_UTF8(doc, "kind", "alert");
    BSON_APPEND_UTF8(doc, "time", now);
    BSON_APPEND_UTF8(doc, "environment", e.a.environment);
    BSON_APPEND_UTF8(doc, "stream", e.a.name);
    BSON_APPEND_UTF8(doc, "key", e.a.key);
    BSON_APPEND_BOOL(doc, "own", a->own);
    BSON_APPEND_UTF8(doc, "state", tw_state_name(a->state));
    BSON_APPEND_UTF8(doc, "previous_state", tw_state_name(a->previous));
    BSON_APPEND_UTF8(doc, "event", tw_alert_event_name(a));
    json_measures(&e.a, doc);
    append_text_or_null(doc, "shard", e.a.edge_shard);
    append_text_or_null(doc, "reason", e.a.reason);
    json_advice(&e.a, doc);
    BSON_APPEND_UTF8(doc, "text", text);
    bson_free(text);
    escaped_release(&e);
}

char *tw_alert_json_payload(const tw_alert_t *a)
{
    bson_t doc = BSON_INITIALIZER;
    char *json;

    tw_alert_json_fields(a, &doc);
    json = bson_as_relaxed_extended_json(&doc, NULL);
    bson_destroy(&doc);
    return json;
}
