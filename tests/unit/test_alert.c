#include <criterion/criterion.h>
#include <string.h>

#include "example_alert.h"
#include "tokenwatch/alert.h"

#define T0 1700000000u

static tw_alert_t example(tw_state_t state, tw_notify_t notify)
{
    return example_alert("tokenwatch:{orders-cdc}:checkpoint", true, state, notify);
}

Test(alert, text_names_everything_an_operator_needs)
{
    tw_alert_t a = example(TW_STATE_CRIT, TW_NOTIFY_CHANGE);
    char *text = tw_alert_text(&a);

    cr_expect(strstr(text, "[prod]") != NULL, "%s", text);
    cr_expect(strstr(text, "orders-cdc") != NULL);
    cr_expect(strstr(text, "tokenwatch:{orders-cdc}:checkpoint is now CRIT") != NULL, "%s", text);
    cr_expect(strstr(text, "2023-11-15T00:27:34Z") != NULL, "token time: %s", text);
    cr_expect(strstr(text, "2h 14m left") != NULL, "time left in words: %s", text);
    cr_expect(strstr(text, "2d window") != NULL, "%s", text);
    cr_expect(strstr(text, "If it is lost: tokenwatch run --name orders-cdc --environment "
                           "prod --resume-from oldest --dry-run") != NULL, "%s", text);
    cr_expect(strstr(text, "is not following") != NULL, "advice for its own key: %s", text);
    cr_expect(strstr(text, "db.adminCommand({replSetResizeOplog: 1, minRetentionHours: 96})") != NULL,
              "%s", text);
    bson_free(text);
}

Test(alert, resolved_says_what_it_was)
{
    tw_alert_t a = example(TW_STATE_OK, TW_NOTIFY_RESOLVED);
    char *text, *recovery;

    a.previous = TW_STATE_WARN;
    text = tw_alert_text(&a);
    recovery = tw_alert_recovery(&a);
    cr_expect(strstr(text, "is resolved OK (was WARN)") != NULL, "%s", text);
    cr_expect_null(recovery, "nothing to recover");
    cr_expect(strstr(text, "Recover") == NULL, "%s", text);
    bson_free(text);
}

Test(alert, lost_gives_the_confirmed_recovery)
{
    tw_alert_t a = example(TW_STATE_LOST, TW_NOTIFY_CHANGE);
    char *recovery;

    a.token = (tw_ctime_t){T0 - 10, 1};
    tw_guard_measure(&a.window, a.token, 1.0, &a.measure);
    recovery = tw_alert_recovery(&a);
    cr_expect_str_eq(recovery, "tokenwatch run --name orders-cdc --environment prod "
                               "--resume-from oldest --dry-run");
    {
        char *json = tw_alert_slack_payload(&a);
        cr_expect(strstr(json, "then --confirm ENV") != NULL, "%s", json);
        bson_free(json);
    }
    bson_free(recovery);
}

Test(alert, another_consumers_key_gets_advice_not_our_command)
{
    tw_alert_t a = example(TW_STATE_LOST, TW_NOTIFY_CHANGE);
    char *recovery;

    a.own = false;
    a.key = "billing:resume";
    recovery = tw_alert_recovery(&a);
    cr_expect_null(recovery, "no tokenwatch command for another consumer's key");
    recovery = tw_alert_advice(&a);
    cr_expect(strstr(recovery, "billing:resume") != NULL, "%s", recovery);
    cr_expect(strstr(recovery, "1700000000:1") != NULL, "the oldest entry: %s", recovery);
    bson_free(recovery);
}

Test(alert, retention_deployments_widen_differently)
{
    tw_alert_t a = example(TW_STATE_WARN, TW_NOTIFY_CHANGE);
    a.window.from_retention = true;
    cr_expect_null(tw_alert_widen_command(&a), "no oplog to resize");
    cr_expect(strstr(tw_alert_widen_note(&a), "change_stream_log_retention_duration") != NULL);
}

Test(alert, slack_payload_is_block_kit_with_a_text_fallback)
{
    tw_alert_t a = example(TW_STATE_WARN, TW_NOTIFY_CHANGE);
    char *json = tw_alert_slack_payload(&a);
    bson_t doc;
    bson_iter_t it;
    char *text = tw_alert_text(&a);

    cr_assert(bson_init_from_json(&doc, json, -1, NULL), "valid JSON: %s", json);
    cr_expect(bson_iter_init_find(&it, &doc, "text") &&
              strcmp(bson_iter_utf8(&it, NULL), text) == 0);
    cr_expect(bson_iter_init(&it, &doc) &&
              bson_iter_find_descendant(&it, "blocks.0.type", &it) &&
              strcmp(bson_iter_utf8(&it, NULL), "header") == 0);
    cr_expect(bson_iter_init(&it, &doc) &&
              bson_iter_find_descendant(&it, "blocks.0.text.text", &it) &&
              strstr(bson_iter_utf8(&it, NULL), "WARN · prod · orders-cdc") != NULL);
    cr_expect(bson_iter_init(&it, &doc) &&
              bson_iter_find_descendant(&it, "blocks.1.fields.6.text", &it) &&
              strstr(bson_iter_utf8(&it, NULL), "Time left") != NULL,
              "%s", json);
    cr_expect(strstr(json, "*If it is lost:*") != NULL, "%s", json);
    cr_expect(strstr(json, "*Widen the window:*") != NULL, "%s", json);
    bson_destroy(&doc);
    bson_free(json);
    bson_free(text);
}

Test(alert, text_with_quotes_stays_valid_json)
{
    tw_alert_t a = example(TW_STATE_UNKNOWN, TW_NOTIFY_CHANGE);
    char *json;
    bson_t doc;

    a.key = "weird\"key\\with\nnewline";
    a.reason = "key holds \"garbage\"";
    a.has_measure = false;
    json = tw_alert_slack_payload(&a);
    cr_expect(bson_init_from_json(&doc, json, -1, NULL), "%s", json);
    bson_destroy(&doc);
    bson_free(json);
}

Test(alert, a_sharded_cluster_names_the_edge_shard)
{
    tw_alert_t a = example(TW_STATE_CRIT, TW_NOTIFY_CHANGE);
    char *text, *payload;

    a.edge_shard = "shard1";
    a.shard_count = 3;
    text = tw_alert_text(&a);
    cr_expect(strstr(text, "of a 2d window on shard shard1, the smallest of 3; lost around") != NULL,
              "%s", text);
    payload = tw_alert_slack_payload(&a);
    cr_expect(strstr(payload, "2d on shard shard1, the smallest of 3") != NULL, "%s", payload);
    bson_free(text);
    bson_free(payload);
}

Test(alert, a_notice_from_the_follower_gives_no_ageing_advice)
{
    tw_alert_t a = example(TW_STATE_WARN, TW_NOTIFY_CHANGE);
    char *text;

    a.reason = "started without a checkpoint: following from now";
    text = tw_alert_text(&a);
    cr_expect(strstr(text, "started without a checkpoint") != NULL, "%s", text);
    cr_expect(strstr(text, "ageing") == NULL, "%s", text);
    cr_expect(strstr(text, "--resume-from oldest") == NULL, "%s", text);
    cr_expect(strstr(text, "Widen the window") == NULL, "%s", text);
    bson_free(text);
}

/* Values from outside (keys and fields from Redis, server messages, names
 * an operator typed) must not turn into Slack markup: &, < and > become
 * &amp;, &lt; and &gt;; what tokenwatch writes itself stays markup. */
static tw_alert_t hostile(void)
{
    tw_alert_t a = example(TW_STATE_UNKNOWN, TW_NOTIFY_CHANGE);

    a.environment = "<!here>";
    a.key = "k<!channel>&<@U123>";
    a.own = false;
    a.reason = "see <https://evil|click> & <!channel>";
    a.has_token = false;
    a.has_measure = false;
    return a;
}

Test(alert, text_escapes_hostile_values)
{
    tw_alert_t a = hostile();
    char *text = tw_alert_text(&a);

    cr_expect_str_eq(text, "[&lt;!here&gt;] tokenwatch orders-cdc: "
                           "k&lt;!channel&gt;&amp;&lt;@U123&gt; is now UNKNOWN: "
                           "see &lt;https://evil|click&gt; &amp; &lt;!channel&gt;");
    bson_free(text);
}

Test(alert, text_escapes_the_key_in_advice)
{
    tw_alert_t a = hostile();
    char *text;

    a.state = TW_STATE_WARN;
    a.reason = NULL;
    text = tw_alert_text(&a);
    cr_expect(strstr(text, "checkpoint is k&lt;!channel&gt;&amp;&lt;@U123&gt; moving") != NULL,
              "%s", text);
    cr_expect(strchr(text, '<') == NULL && strchr(text, '>') == NULL, "%s", text);
    bson_free(text);
}

static char *block_field(const bson_t *doc, const char *path)
{
    bson_iter_t it;

    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it) ||
        !BSON_ITER_HOLDS_UTF8(&it))
        return bson_strdup("(missing)");
    return bson_strdup(bson_iter_utf8(&it, NULL));
}

Test(alert, slack_payload_escapes_hostile_values_in_every_block)
{
    tw_alert_t a = hostile();
    char *json = tw_alert_slack_payload(&a);
    char *text = tw_alert_text(&a);
    static const struct {
        const char *path;
        const char *expected;
    } cases[] = {
        {"blocks.0.text.text", ":grey_question: UNKNOWN · &lt;!here&gt; · orders-cdc"},
        {"blocks.1.fields.0.text", "*Environment*\n&lt;!here&gt;"},
        {"blocks.1.fields.1.text", "*Stream*\norders-cdc"},
        {"blocks.1.fields.2.text", "*Key*\nk&lt;!channel&gt;&amp;&lt;@U123&gt;"},
        {"blocks.2.text.text", "see &lt;https://evil|click&gt; &amp; &lt;!channel&gt;"},
    };
    bson_t doc;

    cr_assert(bson_init_from_json(&doc, json, -1, NULL), "valid JSON: %s", json);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *got = block_field(&doc, cases[k].path);
        cr_expect_str_eq(got, cases[k].expected, "%s", cases[k].path);
        bson_free(got);
    }
    {
        char *fallback = block_field(&doc, "text");
        cr_expect_str_eq(fallback, text);
        bson_free(fallback);
    }
    bson_destroy(&doc);
    bson_free(json);
    bson_free(text);
}

Test(alert, slack_payload_escapes_the_key_in_advice_but_keeps_its_own_markup)
{
    tw_alert_t a = hostile();
    char *json;

    a.state = TW_STATE_LOST;
    a.reason = NULL;
    json = tw_alert_slack_payload(&a);
    cr_expect(strstr(json, "checkpoint is k&lt;!channel&gt;&amp;&lt;@U123&gt; cannot resume") !=
                  NULL, "%s", json);
    cr_expect(strstr(json, "*Widen the window:* `db.adminCommand(") != NULL, "%s", json);
    cr_expect(strstr(json, "<!") == NULL && strstr(json, "<@") == NULL, "%s", json);
    bson_free(json);
}

Test(alert, hostile_values_in_our_own_alert_and_shard_are_escaped)
{
    tw_alert_t a = example(TW_STATE_CRIT, TW_NOTIFY_CHANGE);
    char *text, *json;

    a.name = "n<!channel>";
    a.environment = "e&<@U1>";
    a.edge_shard = "<!here>";
    a.shard_count = 2;
    text = tw_alert_text(&a);
    json = tw_alert_slack_payload(&a);
    cr_expect(strstr(text, "--name n&lt;!channel&gt; --environment e&amp;&lt;@U1&gt; ") != NULL,
              "%s", text);
    cr_expect(strstr(text, "on shard &lt;!here&gt;, the smallest of 2") != NULL, "%s", text);
    cr_expect(strchr(text, '<') == NULL, "%s", text);
    cr_expect(strstr(json, "<!") == NULL && strstr(json, "<@") == NULL, "%s", json);
    bson_free(text);
    bson_free(json);
}

Test(alert, escape_table)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"plain key:1", "plain key:1"},
        {"<!channel>", "&lt;!channel&gt;"},
        {"<!here>", "&lt;!here&gt;"},
        {"<@U123>", "&lt;@U123&gt;"},
        {"<https://evil|click>", "&lt;https://evil|click&gt;"},
        {"a&b", "a&amp;b"},
        {"&amp;", "&amp;amp;"},
        {"*bold* `code` :x:", "*bold* `code` :x:"},
        {"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac"},
        {"cut \xe6\x97", "cut \xef\xbf\xbd\xef\xbf\xbd"},
        {"bad \xff<", "bad \xef\xbf\xbd&lt;"},
    };

    cr_expect_null(tw_alert_escape(NULL));
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *got = tw_alert_escape(cases[k].in);
        cr_expect_str_eq(got, cases[k].out, "case %zu", k);
        bson_free(got);
    }
}
