#include "tokenwatch/digest.h"

#include <bson/bson.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/alert.h"
#include "tokenwatch/duration.h"
#include "tokenwatch/guard.h"
#include "tokenwatch/token.h"

#define DAY_MS ((int64_t)86400000)

bool tw_digest_parse_at(const char *text, int *minute, tw_error_t *err)
{
    int hh, mm;

    if (!text || strlen(text) != 5 || text[2] != ':' ||
        strspn(text, "0123456789:") != 5 || text[0] == ':' || text[1] == ':' ||
        text[3] == ':' || text[4] == ':')
        goto bad;
    hh = (text[0] - '0') * 10 + (text[1] - '0');
    mm = (text[3] - '0') * 10 + (text[4] - '0');
    if (hh > 23 || mm > 59)
        goto bad;
    *minute = hh * 60 + mm;
    return true;
bad:
    tw_error_set(err, TW_ERR_USAGE, 0, "'%s' is not a time of day HH:MM (00:00 to 23:59, UTC)",
                 text ? text : "");
    return false;
}

void tw_digest_sched_init(tw_digest_sched_t *s, int at_minute)
{
    memset(s, 0, sizeof *s);
    s->at_minute = at_minute;
}

/* Days and minutes of now_ms, floored (a time before 1970 too). */
static void split_day(int64_t now_ms, int64_t *day, int *minute)
{
    int64_t rest;

    *day = now_ms / DAY_MS;
    rest = now_ms % DAY_MS;
    if (rest < 0) {
        rest += DAY_MS;
        (*day)--;
    }
    *minute = (int)(rest / 60000);
}

bool tw_digest_due(tw_digest_sched_t *s, int64_t now_ms)
{
    int64_t day;
    int minute;

    split_day(now_ms, &day, &minute);
    if (!s->started) {
        s->started = true;
        s->last_day = minute >= s->at_minute ? day : day - 1;
        return false;
    }
    if (day <= s->last_day || minute < s->at_minute)
        return false;
    s->last_day = day;
    return true;
}

static bool least_headroom(const tw_digest_t *d, int64_t *least)
{
    bool any = false;

    for (size_t k = 0; k < d->count; k++) {
        const tw_digest_entry_t *e = &d->entries[k];

        if (e->has_measure && (!any || e->headroom_s < *least)) {
            *least = e->headroom_s;
            any = true;
        }
    }
    return any;
}

/* " (1 WARN, 1 CRIT)": the states other than OK, in the enum's order. */
static void not_ok_counts(const tw_digest_t *d, char *out, size_t n, size_t *bad)
{
    size_t per[TW_STATE_COUNT] = {0};
    size_t len = 0;

    *bad = 0;
    out[0] = '\0';
    for (size_t k = 0; k < d->count; k++)
        if ((unsigned)d->entries[k].state < TW_STATE_COUNT)
            per[d->entries[k].state]++;
    for (int s = 0; s < TW_STATE_COUNT; s++) {
        if (s == TW_STATE_OK || per[s] == 0)
            continue;
        len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%zu %s",
                                *bad ? ", " : " (", per[s], tw_state_name((tw_state_t)s));
        *bad += per[s];
    }
    if (*bad && len < n)
        snprintf(out + len, n - len, ")");
}

char *tw_digest_headline(const tw_digest_t *d)
{
    char states[128], words[TW_DURATION_TEXT_MAX], least_text[TW_DURATION_TEXT_MAX + 32];
    int64_t least = 0;
    size_t bad;

    not_ok_counts(d, states, sizeof states, &bad);
    if (least_headroom(d, &least)) {
        tw_duration_words(least > 0 ? least * 1000 : 0, words);
        if (least < 0)
            snprintf(least_text, sizeof least_text, ", least headroom none (lost)");
        else
            snprintf(least_text, sizeof least_text, ", least headroom %s", words);
    } else {
        snprintf(least_text, sizeof least_text, ", nothing measured yet");
    }
    if (d->count == 0)
        return bson_strdup_printf("no guarded position measured yet");
    if (bad == 0)
        return bson_strdup_printf("all %zu OK%s", d->count, least_text);
    return bson_strdup_printf("%zu of %zu not OK%s%s", bad, d->count, states, least_text);
}

/* "key: WARN, headroom 3h, time left 3h" for one entry. */
static void append_line(bson_string_t *out, const tw_digest_entry_t *e, bool slack)
{
    char headroom[TW_DURATION_TEXT_MAX], left[TW_DURATION_TEXT_MAX];
    char *key = slack ? tw_alert_escape(e->key) : tw_alert_clean(e->key);

    if (!e->has_measure) {
        bson_string_append_printf(out, "\n%s: %s, not measured", key ? key : "",
                                  tw_state_name((tw_state_t)e->state));
        bson_free(key);
        return;
    }
    tw_duration_words(e->headroom_s > 0 ? e->headroom_s * 1000 : 0, headroom);
    if (e->state == TW_STATE_LOST)
        snprintf(left, sizeof left, "none (lost)");
    else if (e->unbounded)
        snprintf(left, sizeof left, "unbounded");
    else
        tw_duration_words(e->time_left_s > 0 ? (int64_t)(e->time_left_s * 1000.0) : 0, left);
    bson_string_append_printf(out, "\n%s: %s, headroom %s, time left %s", key ? key : "",
                              tw_state_name((tw_state_t)e->state), headroom, left);
    bson_free(key);
}

char *tw_digest_text(const tw_digest_t *d, bool slack)
{
    char *headline = tw_digest_headline(d);
    char *env = slack ? tw_alert_escape(d->environment) : tw_alert_clean(d->environment);
    char *name = slack ? tw_alert_escape(d->name) : tw_alert_clean(d->name);
    char date[TW_UTC_TEXT_MAX];
    bson_string_t *out = bson_string_new(NULL);

    tw_utc_format(d->now_ms, date);
    date[10] = '\0'; /* the day: 2026-11-21 */
    bson_string_append_printf(out, "[%s] tokenwatch %s daily digest %s: %s", env ? env : "",
                              name ? name : "", date, headline);
    for (size_t k = 0; k < d->count; k++)
        append_line(out, &d->entries[k], slack);
    bson_free(name);
    bson_free(env);
    bson_free(headline);
    return bson_string_free(out, false);
}

char *tw_digest_slack_payload(const tw_digest_t *d)
{
    bson_t doc = BSON_INITIALIZER, blocks, block, text;
    char *all = tw_digest_text(d, true);
    char *body = strchr(all, '\n');
    char *section = bson_strdup_printf("```%s```", body ? body + 1 : "");
    char *json;

    BSON_APPEND_UTF8(&doc, "text", all);
    BSON_APPEND_ARRAY_BEGIN(&doc, "blocks", &blocks);
    BSON_APPEND_DOCUMENT_BEGIN(&blocks, "0", &block);
    BSON_APPEND_UTF8(&block, "type", "section");
    BSON_APPEND_DOCUMENT_BEGIN(&block, "text", &text);
    BSON_APPEND_UTF8(&text, "type", "mrkdwn");
    BSON_APPEND_UTF8(&text, "text", section);
    bson_append_document_end(&block, &text);
    bson_append_document_end(&blocks, &block);
    bson_append_array_end(&doc, &blocks);
    json = bson_as_relaxed_extended_json(&doc, NULL);
    bson_destroy(&doc);
    bson_free(section);
    bson_free(all);
    return json;
}

static void append_entry(bson_t *keys, size_t k, const tw_digest_entry_t *e)
{
    char index[24];
    char *key = tw_alert_clean(e->key);
    bson_t one;

    snprintf(index, sizeof index, "%zu", k);
    BSON_APPEND_DOCUMENT_BEGIN(keys, index, &one);
    BSON_APPEND_UTF8(&one, "key", key ? key : "");
    BSON_APPEND_UTF8(&one, "state", tw_state_name((tw_state_t)e->state));
    if (e->has_measure)
        BSON_APPEND_INT64(&one, "headroom_seconds", e->headroom_s);
    else
        BSON_APPEND_NULL(&one, "headroom_seconds");
    if (e->has_measure && !e->unbounded)
        BSON_APPEND_DOUBLE(&one, "time_left_seconds",
                           e->state == TW_STATE_LOST ? 0.0 : e->time_left_s);
    else
        BSON_APPEND_NULL(&one, "time_left_seconds");
    BSON_APPEND_BOOL(&one, "time_left_unbounded", e->has_measure && e->unbounded);
    bson_append_document_end(keys, &one);
    bson_free(key);
}

char *tw_digest_json_payload(const tw_digest_t *d)
{
    bson_t doc = BSON_INITIALIZER, keys;
    char now[TW_UTC_TEXT_MAX];
    char *headline = tw_digest_headline(d);
    char *text = tw_digest_text(d, false);
    char *env = tw_alert_clean(d->environment);
    char *name = tw_alert_clean(d->name);
    int64_t least = 0;
    size_t bad;
    char states[128];
    char *json;

    not_ok_counts(d, states, sizeof states, &bad);
    tw_utc_format(d->now_ms, now);
    BSON_APPEND_UTF8(&doc, "kind", "digest");
    BSON_APPEND_UTF8(&doc, "time", now);
    BSON_APPEND_UTF8(&doc, "environment", env ? env : "");
    BSON_APPEND_UTF8(&doc, "stream", name ? name : "");
    BSON_APPEND_UTF8(&doc, "headline", headline);
    BSON_APPEND_BOOL(&doc, "all_ok", bad == 0);
    if (least_headroom(d, &least))
        BSON_APPEND_INT64(&doc, "least_headroom_seconds", least);
    else
        BSON_APPEND_NULL(&doc, "least_headroom_seconds");
    BSON_APPEND_ARRAY_BEGIN(&doc, "keys", &keys);
    for (size_t k = 0; k < d->count; k++)
        append_entry(&keys, k, &d->entries[k]);
    bson_append_array_end(&doc, &keys);
    BSON_APPEND_UTF8(&doc, "text", text);
    json = bson_as_relaxed_extended_json(&doc, NULL);
    bson_destroy(&doc);
    bson_free(name);
    bson_free(env);
    bson_free(text);
    bson_free(headline);
    return json;
}
