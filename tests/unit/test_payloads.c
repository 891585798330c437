/*
 * The generic JSON webhook's object and PagerDuty Events v2 events, as
 * tables: each field, each state's action and severity, dedup keys that
 * pair a trigger with its resolve and differ per key, text from outside
 * that is not UTF-8 or holds Slack markup, and the limits PagerDuty sets.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "example_alert.h"
#include "tokenwatch/alert.h"
#include "tokenwatch/pagerduty.h"

#define T0 1700000000u
#define KEY "R0utingKeyForTests000000000000ab"

static tw_alert_t example(tw_state_t state, tw_notify_t notify)
{
    return example_alert("billing:resume-token", false, state, notify);
}

/* The payload parsed back; asserts it is JSON. */
static void parse(const char *json, bson_t *doc)
{
    bson_error_t error;

    cr_assert_not_null(json, "the payload was built");
    cr_assert(bson_init_from_json(doc, json, -1, &error), "%s: %s", error.message, json);
}

static const char *text_at(const bson_t *doc, const char *path)
{
    bson_iter_t it;

    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it))
        return "(missing)";
    if (BSON_ITER_HOLDS_NULL(&it))
        return "(null)";
    cr_assert(BSON_ITER_HOLDS_UTF8(&it), "%s is not a string", path);
    return bson_iter_utf8(&it, NULL);
}

static bool has(const bson_t *doc, const char *path)
{
    bson_iter_t it;

    return bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it);
}

static double number_at(const bson_t *doc, const char *path)
{
    bson_iter_t it;

    cr_assert(bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it), "%s", path);
    return bson_iter_as_double(&it);
}

/* ------------------------------------------------------------------ */
/* The generic JSON object                                              */

Test(payloads, json_has_every_documented_field)
{
    tw_alert_t a = example(TW_STATE_CRIT, TW_NOTIFY_CHANGE);
    char *json = tw_alert_json_payload(&a);
    bson_t doc;

    parse(json, &doc);
    cr_expect_str_eq(text_at(&doc, "kind"), "alert");
    cr_expect_str_eq(text_at(&doc, "environment"), "prod");
    cr_expect_str_eq(text_at(&doc, "stream"), "orders-cdc");
    cr_expect_str_eq(text_at(&doc, "key"), "billing:resume-token");
    cr_expect_str_eq(text_at(&doc, "state"), "CRIT");
    cr_expect_str_eq(text_at(&doc, "previous_state"), "OK");
    cr_expect_str_eq(text_at(&doc, "event"), "change");
    cr_expect_str_eq(text_at(&doc, "token_time"), "2023-11-15T00:27:34Z");
    cr_expect_str_eq(text_at(&doc, "token_cluster_time"), "1700008054:3");
    cr_expect_eq(number_at(&doc, "window_seconds"), 48 * 3600.0);
    cr_expect_eq(number_at(&doc, "headroom_seconds"), 8054.0);
    cr_expect_float_eq(number_at(&doc, "share"), 8054.0 / (48 * 3600), 1e-9);
    cr_expect_str_eq(text_at(&doc, "window_source"), "oplog");
    cr_expect_float_eq(number_at(&doc, "time_left_seconds"), 8054.0, 1e-6);
    cr_expect_str_eq(text_at(&doc, "lost_around"), "2023-11-16T23:27:34Z");
    cr_expect_str_eq(text_at(&doc, "time"), "2023-11-16T21:13:20Z");
    cr_expect(strstr(text_at(&doc, "advice"), "billing:resume-token moving again") != NULL);
    cr_expect_str_eq(text_at(&doc, "commands.recover"), "(null)", "not the watcher's key");
    cr_expect_str_eq(text_at(&doc, "commands.widen"),
                     "db.adminCommand({replSetResizeOplog: 1, minRetentionHours: 96})");
    cr_expect(strstr(text_at(&doc, "text"), "billing:resume-token is now CRIT") != NULL);
    cr_expect_str_eq(text_at(&doc, "reason"), "(null)");
    cr_expect_str_eq(text_at(&doc, "shard"), "(null)");
    bson_destroy(&doc);
    bson_free(json);
}

/* Per state: event, nulls where nothing is known, the recovery command only
 * for the watcher's own key. */
Test(payloads, json_table_of_states)
{
    static const struct {
        tw_state_t state;
        tw_notify_t notify;
        bool own, measured;
        const char *event, *time_left, *recover;
    } cases[] = {
        {TW_STATE_WARN, TW_NOTIFY_CHANGE, true, true, "change", "number",
         "tokenwatch run --name orders-cdc --environment prod --resume-from oldest --dry-run"},
        {TW_STATE_CRIT, TW_NOTIFY_REPEAT, false, true, "repeat", "number", "(null)"},
        {TW_STATE_LOST, TW_NOTIFY_CHANGE, false, true, "change", "zero", "(null)"},
        {TW_STATE_OK, TW_NOTIFY_RESOLVED, false, true, "resolved", "number", "(null)"},
        {TW_STATE_UNKNOWN, TW_NOTIFY_CHANGE, false, false, "change", "null", "(null)"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_alert_t a = example(cases[k].state, cases[k].notify);
        char *json;
        bson_t doc;
        bson_iter_t it;

        a.own = cases[k].own;
        a.has_measure = cases[k].measured;
        a.has_token = cases[k].measured;
        if (!cases[k].measured)
            a.reason = "Redis unreadable for 3 rounds: connection refused";
        json = tw_alert_json_payload(&a);
        parse(json, &doc);
        cr_expect_str_eq(text_at(&doc, "state"), tw_state_name(cases[k].state), "case %zu", k);
        cr_expect_str_eq(text_at(&doc, "event"), cases[k].event, "case %zu", k);
        cr_expect_str_eq(text_at(&doc, "commands.recover"), cases[k].recover, "case %zu", k);
        cr_assert(bson_iter_init_find(&it, &doc, "time_left_seconds"));
        if (strcmp(cases[k].time_left, "null") == 0) {
            cr_expect(BSON_ITER_HOLDS_NULL(&it), "case %zu", k);
            cr_expect_str_eq(text_at(&doc, "token_time"), "(null)", "case %zu", k);
            cr_expect(strstr(text_at(&doc, "reason"), "Redis unreadable") != NULL);
        } else if (strcmp(cases[k].time_left, "zero") == 0) {
            cr_expect_eq(bson_iter_as_double(&it), 0.0, "case %zu", k);
            cr_expect_str_eq(text_at(&doc, "lost_around"), "(null)", "case %zu", k);
        } else {
            cr_expect_gt(bson_iter_as_double(&it), 0.0, "case %zu", k);
        }
        bson_destroy(&doc);
        bson_free(json);
    }
}

/* Not Slack: markup is left as it is (a JSON consumer escapes for itself);
 * bytes that are not UTF-8 become U+FFFD, so the object is still valid. */
Test(payloads, json_values_are_plain_valid_utf8)
{
    tw_alert_t a = example(TW_STATE_WARN, TW_NOTIFY_CHANGE);
    char *json;
    bson_t doc;

    a.key = "weird:<!channel>&\xff\xfe:key";
    a.reason = "server said \"no\"\n\xc3";
    json = tw_alert_json_payload(&a);
    parse(json, &doc);
    cr_expect_str_eq(text_at(&doc, "key"), "weird:<!channel>&\xef\xbf\xbd\xef\xbf\xbd:key");
    cr_expect_str_eq(text_at(&doc, "reason"), "server said \"no\"\n\xef\xbf\xbd");
    cr_expect(strstr(text_at(&doc, "text"), "&amp;") == NULL, "no Slack escaping");
    bson_destroy(&doc);
    bson_free(json);
}

/* ------------------------------------------------------------------ */
/* PagerDuty Events v2                                                  */

Test(payloads, pagerduty_action_and_severity_per_state)
{
    static const struct {
        tw_state_t state;
        tw_notify_t notify;
        const char *action, *severity;
    } cases[] = {
        {TW_STATE_WARN, TW_NOTIFY_CHANGE, "trigger", "warning"},
        {TW_STATE_CRIT, TW_NOTIFY_CHANGE, "trigger", "critical"},
        {TW_STATE_CRIT, TW_NOTIFY_REPEAT, "trigger", "critical"},
        {TW_STATE_LOST, TW_NOTIFY_CHANGE, "trigger", "critical"},
        {TW_STATE_UNKNOWN, TW_NOTIFY_CHANGE, "trigger", "error"},
        {TW_STATE_OK, TW_NOTIFY_RESOLVED, "resolve", NULL},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_alert_t a = example(cases[k].state, cases[k].notify);
        char *json = tw_pagerduty_event(&a, KEY);
        bson_t doc;

        parse(json, &doc);
        cr_expect_str_eq(text_at(&doc, "routing_key"), KEY, "case %zu", k);
        cr_expect_str_eq(text_at(&doc, "event_action"), cases[k].action, "case %zu", k);
        cr_expect_str_eq(text_at(&doc, "dedup_key"), "tokenwatch/prod/orders-cdc/billing:resume-token",
                         "case %zu", k);
        if (cases[k].severity) {
            cr_expect_str_eq(text_at(&doc, "payload.severity"), cases[k].severity, "case %zu", k);
            cr_expect_str_eq(text_at(&doc, "payload.source"), "prod/orders-cdc");
            cr_expect_str_eq(text_at(&doc, "payload.component"), "billing:resume-token");
            cr_expect_str_eq(text_at(&doc, "payload.group"), "prod");
            cr_expect_str_eq(text_at(&doc, "payload.timestamp"), "2023-11-16T21:13:20Z");
            cr_expect(strstr(text_at(&doc, "payload.summary"), "billing:resume-token is") != NULL);
            cr_expect_str_eq(text_at(&doc, "payload.custom_details.state"),
                             tw_state_name(cases[k].state));
            cr_expect_str_eq(text_at(&doc, "payload.custom_details.kind"), "alert");
        } else {
            cr_expect_not(has(&doc, "payload"), "a resolve carries no payload");
        }
        cr_expect_eq(strcmp(tw_pagerduty_severity(cases[k].state),
                            cases[k].severity ? cases[k].severity : "info"),
                     0, "case %zu", k);
        bson_destroy(&doc);
        bson_free(json);
    }
}

/* A trigger and its resolve share the dedup_key; another key, stream or
 * environment has another. */
Test(payloads, pagerduty_dedup_key_pairs_and_differs)
{
    tw_alert_t crit = example(TW_STATE_CRIT, TW_NOTIFY_CHANGE);
    tw_alert_t ok = example(TW_STATE_OK, TW_NOTIFY_RESOLVED);
    tw_alert_t other = crit, stream = crit, env = crit;
    char a[TW_PAGERDUTY_DEDUP_MAX + 1], b[TW_PAGERDUTY_DEDUP_MAX + 1];
    char c[TW_PAGERDUTY_DEDUP_MAX + 1], d[TW_PAGERDUTY_DEDUP_MAX + 1];
    char e[TW_PAGERDUTY_DEDUP_MAX + 1];

    other.key = "search:resume-token";
    stream.name = "search-cdc";
    env.environment = "stage";
    tw_pagerduty_dedup_key(&crit, a);
    tw_pagerduty_dedup_key(&ok, b);
    tw_pagerduty_dedup_key(&other, c);
    tw_pagerduty_dedup_key(&stream, d);
    tw_pagerduty_dedup_key(&env, e);
    cr_expect_str_eq(a, b, "trigger and resolve pair");
    cr_expect_str_neq(a, c);
    cr_expect_str_neq(a, d);
    cr_expect_str_neq(a, e);
}

/* PagerDuty's limits: dedup_key 255, summary 1024; cut on a character
 * boundary, and two long keys that share their start stay apart. */
Test(payloads, pagerduty_keeps_to_its_limits)
{
    char key1[2048], key2[2048], d1[TW_PAGERDUTY_DEDUP_MAX + 1], d2[TW_PAGERDUTY_DEDUP_MAX + 1];
    tw_alert_t a = example(TW_STATE_WARN, TW_NOTIFY_CHANGE);
    tw_alert_t b;
    char *json;
    bson_t doc;

    /* "é" is two bytes: a cut at an odd byte would split one. */
    for (size_t k = 0; k + 2 < 1500; k += 2)
        memcpy(key1 + k, "\xc3\xa9", 2);
    key1[1498] = '\0';
    memcpy(key2, key1, sizeof key1);
    key2[1496] = 'x';
    key2[1497] = '\0';
    a.key = key1;
    b = a;
    b.key = key2;
    tw_pagerduty_dedup_key(&a, d1);
    tw_pagerduty_dedup_key(&b, d2);
    cr_expect_leq(strlen(d1), (size_t)TW_PAGERDUTY_DEDUP_MAX);
    cr_expect_str_neq(d1, d2, "a hash of the whole keeps them apart");
    json = tw_pagerduty_event(&a, KEY);
    parse(json, &doc);
    cr_expect_leq(strlen(text_at(&doc, "payload.summary")), (size_t)TW_PAGERDUTY_SUMMARY_MAX);
    cr_expect_leq(strlen(text_at(&doc, "dedup_key")), (size_t)TW_PAGERDUTY_DEDUP_MAX);
    cr_expect(bson_utf8_validate(text_at(&doc, "payload.summary"),
                                 strlen(text_at(&doc, "payload.summary")), false));
    cr_expect(bson_utf8_validate(d1, strlen(d1), false));
    bson_destroy(&doc);
    bson_free(json);
}

/* Not UTF-8 in a key: still an event (U+FFFD); a notice is not an event;
 * no routing key, no event. */
Test(payloads, pagerduty_edge_cases)
{
    tw_alert_t a = example(TW_STATE_CRIT, TW_NOTIFY_CHANGE);
    char *json;
    bson_t doc;

    a.key = "bad\xff:key";
    json = tw_pagerduty_event(&a, KEY);
    parse(json, &doc);
    cr_expect_str_eq(text_at(&doc, "dedup_key"), "tokenwatch/prod/orders-cdc/bad\xef\xbf\xbd:key");
    bson_destroy(&doc);
    bson_free(json);
    cr_expect_null(tw_pagerduty_event(&a, NULL));
    a.own = true;
    a.state = TW_STATE_WARN;
    a.reason = "started without a checkpoint";
    cr_expect_not(tw_pagerduty_wants(&a), "a notice opens no incident");
    a.reason = NULL;
    cr_expect(tw_pagerduty_wants(&a));
}
