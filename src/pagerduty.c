#include "tokenwatch/pagerduty.h"

#include <stdio.h>
#include <string.h>

#include "tokenwatch/token.h"
#include "tokenwatch/utf8.h"

/* A long dedup_key keeps this much of its start. */
#define DEDUP_PREFIX 200

bool tw_pagerduty_wants(const tw_alert_t *a)
{
    return !tw_alert_is_notice(a);
}

const char *tw_pagerduty_action(const tw_alert_t *a)
{
    return a->state == TW_STATE_OK ? "resolve" : "trigger";
}

const char *tw_pagerduty_severity(tw_state_t state)
{
    switch (state) {
    case TW_STATE_WARN: return "warning";
    case TW_STATE_CRIT: return "critical";
    case TW_STATE_LOST: return "critical";
    case TW_STATE_UNKNOWN: return "error";
    case TW_STATE_OK: break;
    }
    return "info";
}

/* FNV-1a, 64 bits: a stable tag for a key too long to send whole. */
static unsigned long long fnv1a(const char *text)
{
    unsigned long long h = 0xcbf29ce484222325ULL;

    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ENV/NAME, made valid UTF-8 (bson_free). */
static char *source_of(const tw_alert_t *a)
{
    char *env = tw_alert_clean(a->environment ? a->environment : "");
    char *name = tw_alert_clean(a->name ? a->name : "");
    char *source = bson_strdup_printf("%s/%s", env, name);

    bson_free(env);
    bson_free(name);
    return source;
}

void tw_pagerduty_dedup_key(const tw_alert_t *a, char *out)
{
    char *source = source_of(a);
    char *key = tw_alert_clean(a->key ? a->key : "");
    char *whole = bson_strdup_printf("tokenwatch/%s/%s", source, key);
    size_t len = strlen(whole);

    if (len <= TW_PAGERDUTY_DEDUP_MAX) {
        memcpy(out, whole, len + 1);
    } else {
        size_t keep = tw_utf8_cut(memcpy(out, whole, DEDUP_PREFIX), DEDUP_PREFIX);

        snprintf(out + keep, TW_PAGERDUTY_DEDUP_MAX + 1 - keep, "\xe2\x80\xa6%016llx",
                 fnv1a(whole));
    }
    bson_free(whole);
    bson_free(key);
    bson_free(source);
}

/* payload: what PagerDuty shows, for a trigger. */
static void append_payload(const tw_alert_t *a, bson_t *event)
{
    char summary[TW_PAGERDUTY_SUMMARY_MAX + 1];
    char now[TW_UTC_TEXT_MAX];
    char *text = tw_alert_plain_text(a);
    char *source = source_of(a);
    char *key = tw_alert_clean(a->key ? a->key : "");
    char *group = tw_alert_clean(a->environment ? a->environment : "");
    bson_t payload, details;

    tw_utf8_format(summary, sizeof summary, "%s", text);
    tw_utc_format(a->now_ms, now);
    BSON_APPEND_DOCUMENT_BEGIN(event, "payload", &payload);
    BSON_APPEND_UTF8(&payload, "summary", summary);
    BSON_APPEND_UTF8(&payload, "source", source);
    BSON_APPEND_UTF8(&payload, "severity", tw_pagerduty_severity(a->state));
    BSON_APPEND_UTF8(&payload, "timestamp", now);
    BSON_APPEND_UTF8(&payload, "component", key);
    BSON_APPEND_UTF8(&payload, "group", group);
    BSON_APPEND_UTF8(&payload, "class", "resume token");
    BSON_APPEND_DOCUMENT_BEGIN(&payload, "custom_details", &details);
    tw_alert_json_fields(a, &details);
    bson_append_document_end(&payload, &details);
    bson_append_document_end(event, &payload);
    bson_free(group);
    bson_free(key);
    bson_free(source);
    bson_free(text);
}

char *tw_pagerduty_event(const tw_alert_t *a, const char *routing_key)
{
    bson_t event = BSON_INITIALIZER;
    char dedup[TW_PAGERDUTY_DEDUP_MAX + 1];
    char *json;

    if (!routing_key)
        return NULL;
    tw_pagerduty_dedup_key(a, dedup);
    BSON_APPEND_UTF8(&event, "routing_key", routing_key);
    BSON_APPEND_UTF8(&event, "event_action", tw_pagerduty_action(a));
    BSON_APPEND_UTF8(&event, "dedup_key", dedup);
    if (a->state != TW_STATE_OK) {
        BSON_APPEND_UTF8(&event, "client", "tokenwatch");
        append_payload(a, &event);
    }
    json = bson_as_relaxed_extended_json(&event, NULL);
    bson_destroy(&event);
    return json;
}
