/*
 * Other consumers' positions guarded end to end (issue 11): Debezium
 * Server's Redis offset hash, oplogtoredis keys found by a pattern every
 * round, a Kafka Connect connector over its REST API (tests/support/
 * connect.py) and Monstache's documents in the scripted MongoDB.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "guarded.h"

#define T0 1700000000u
#define HOUR 3600
#define WEEKEND "{\"rate\": 0, \"retention\": 172800, \"initial_oplog_span\": 172800, " \
                "\"background_every\": 60}"
#define TAIL "2B022C0100296E5A1004"

static fx_t fx;
static fx_webhook_t hook;
static th_proc_t connect_proc;

static void teardown(void)
{
    th_proc_stop(&connect_proc, 5000);
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(consumers, .fini = teardown, .timeout = 90);

static char *hex_token(uint32_t t)
{
    return bson_strdup_printf("82%08X%08X" TAIL, t, 1u);
}

/* Debezium 2.7+: base64 of the BSON token document {_data: hex}. */
static char *base64_token(uint32_t t)
{
    char *hex = hex_token(t);
    bson_t *doc = BCON_NEW("_data", BCON_UTF8(hex));
    char *out = bson_malloc0(4 * (doc->len / 3 + 2) + 1);

    EVP_EncodeBlock((unsigned char *)out, bson_get_data(doc), (int)doc->len);
    bson_destroy(doc);
    bson_free(hex);
    return out;
}

static int status_json(const char *guard, bson_t *doc, char **out_text)
{
    const char *argv[] = {th_binary(), "status", "--json", "--mongo-uri", fx.sim.uri,
                          "--redis-url", fx.redis_url, "--guard", guard, NULL};
    char *out, *err;
    int code = th_run(fx.dir, argv, NULL, 20000, &out, &err);

    cr_assert(bson_init_from_json(doc, out, -1, NULL), "JSON: %s\n%s", out, err);
    free(err);
    if (out_text)
        *out_text = out;
    else
        free(out);
    return code;
}

/* keys.N's field as text, "" when absent. */
static const char *row(bson_t *doc, size_t n, const char *field)
{
    static char buf[4][512];
    static int slot;
    char path[64];
    bson_iter_t it;

    slot = (slot + 1) % 4;
    buf[slot][0] = '\0';
    snprintf(path, sizeof path, "keys.%zu.%s", n, field);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
        snprintf(buf[slot], sizeof buf[slot], "%s", bson_iter_utf8(&it, NULL));
    return buf[slot];
}

Test(consumers, a_debezium_offset_hash_is_one_row_per_connector)
{
    char *hex = hex_token(T0 - 10 * HOUR), *b64 = base64_token(T0 - 30 * HOUR);
    char *v1 = bson_strdup_printf("{\"sec\":%u,\"ord\":1,\"resume_token\":\"%s\"}",
                                  T0 - 10 * HOUR, hex);
    char *v2 = bson_strdup_printf("{\"sec\":%u,\"ord\":1,\"resume_token\":\"%s\"}",
                                  T0 - 30 * HOUR, b64);
    bson_t doc;
    char *out;
    int code;

    fx_start(&fx, WEEKEND);
    fx_seed_own_time(&fx, T0);
    freeReplyObject(th_redis_cmd(&fx.redis, "HSET metadata:debezium:offsets %s %s %s %s %s %s "
                                            "%s %s %s %s",
                                 "[\"redis\",{\"server_id\":\"orders\"}]", v1,
                                 "[\"redis\",{\"server_id\":\"billing\"}]", v2,
                                 "[\"redis\",{\"server_id\":\"hb\"}]", "{\"sec\":-1,\"ord\":-1}",
                                 "[\"redis\",{\"server_id\":\"snap\"}]",
                                 "{\"sec\":0,\"ord\":0,\"initsync\":true}",
                                 "[\"redis\",{\"server_id\":\"junk\"}]", "{\"oops\":1}"));
    code = status_json("metadata:debezium:offsets", &doc, &out);
    cr_expect_eq(code, 3, "UNKNOWN (junk) outranks WARN: %s", out);
    /* Rows sorted by position: billing, hb, junk, orders, snap. */
    cr_expect_str_eq(row(&doc, 1, "position"), "billing");
    cr_expect_str_eq(row(&doc, 1, "state"), "WARN", "2.7+ base64 token, 37%% left: %s", out);
    cr_expect_str_eq(row(&doc, 1, "consumer"), "debezium");
    cr_expect_str_eq(row(&doc, 2, "state"), "OK");
    cr_expect(strstr(row(&doc, 2, "note"), "heartbeat") != NULL, "%s", out);
    cr_expect_str_eq(row(&doc, 3, "state"), "UNKNOWN");
    cr_expect(strstr(row(&doc, 3, "reason"), "neither a Debezium offset") != NULL, "%s", out);
    cr_expect_str_eq(row(&doc, 4, "position"), "orders");
    cr_expect_str_eq(row(&doc, 4, "state"), "OK");
    cr_expect(strstr(row(&doc, 5, "note"), "snapshot") != NULL, "%s", out);
    bson_destroy(&doc);
    free(out);
    {
        const char *argv[] = {th_binary(), "status", "--mongo-uri", fx.sim.uri, "--redis-url",
                              fx.redis_url, "--guard", "metadata:debezium:offsets", NULL};
        char *err;

        th_run(fx.dir, argv, NULL, 20000, &out, &err);
        cr_expect(strstr(out, "metadata:debezium:offsets billing (debezium) WARN") != NULL,
                  "a row per connector, named: %s", out);
        cr_expect(strstr(out, "heartbeat offset") != NULL, "%s", out);
        free(out);
        free(err);
    }
    bson_free(hex);
    bson_free(b64);
    bson_free(v1);
    bson_free(v2);
}

static void set_otr(const char *key, uint32_t t)
{
    char value[32];

    snprintf(value, sizeof value, "%llu", ((unsigned long long)t << 32) | 1u);
    fx_set_key(&fx, key, value);
}

Test(consumers, a_pattern_is_scanned_every_round_with_a_consumer_label)
{
    th_proc_t p;
    int port = th_free_port();
    const char *warn2 = "tokenwatch_token_state{key=\"oplogtoredis::lastProcessedEntry.2\","
                        "consumer=\"oplogtoredis\",state=\"WARN\"}";
    const char *ok1 = "tokenwatch_token_state{key=\"oplogtoredis::lastProcessedEntry.1\","
                      "consumer=\"oplogtoredis\",state=\"OK\"}";
    const char *ok3 = "tokenwatch_token_state{key=\"oplogtoredis::lastProcessedEntry.3\","
                      "consumer=\"oplogtoredis\",state=\"OK\"}";
    char **texts;
    size_t n;
    bool named = false;

    fx_start(&fx, WEEKEND);
    fx_webhook_start(&fx, &hook);
    set_otr("oplogtoredis::lastProcessedEntry.1", T0 - 10 * HOUR);
    set_otr("oplogtoredis::lastProcessedEntry.2", T0 - 30 * HOUR);
    fx_set_key(&fx, "oplogtoredis::lastProcessedEntry.list", "x");
    freeReplyObject(th_redis_cmd(&fx.redis, "DEL oplogtoredis::lastProcessedEntry.list"));
    freeReplyObject(th_redis_cmd(&fx.redis, "RPUSH oplogtoredis::lastProcessedEntry.q a"));
    fx_spawn_guarding(&fx, &p, "oplogtoredis::lastProcessedEntry*", port, hook.url, NULL);
    th_assert_dump(fx_wait_metric(port, warn2, 1, 10000), p.err_path, "%s", warn2);
    th_assert_dump(fx_wait_metric(port, ok1, 1, 10000), p.err_path, "%s", ok1);
    /* A new key is found at the next round; a deleted one's series go. */
    set_otr("oplogtoredis::lastProcessedEntry.3", T0 - HOUR);
    th_assert_dump(fx_wait_metric(port, ok3, 1, 10000), p.err_path, "discovered: %s", ok3);
    freeReplyObject(th_redis_cmd(&fx.redis, "DEL oplogtoredis::lastProcessedEntry.1"));
    th_sleep_ms(500);
    cr_expect(isnan(fx_metric(port, ok1)), "a key gone takes its series with it");
    cr_expect(isnan(fx_metric(port, "tokenwatch_token_state{key=\"oplogtoredis::"
                                     "lastProcessedEntry.q\",consumer=\"oplogtoredis\","
                                     "state=\"UNKNOWN\"}")),
              "a list matched by the pattern is not a position");
    th_proc_stop(&p, 10000);
    n = fx_webhook_texts(&hook, &texts);
    for (size_t k = 0; k < n; k++) {
        named = named || strstr(texts[k], "oplogtoredis::lastProcessedEntry.2 (oplogtoredis) "
                                          "is now WARN") != NULL;
        free(texts[k]);
    }
    free(texts);
    cr_expect(named, "the alert names the key and the consumer (%zu alerts)", n);
}

static int connect_start(const char *user)
{
    char script[PATH_MAX], port_file[PATH_MAX];
    const char *argv[] = {"/usr/bin/python3", script, "--port-file", port_file, "--user", user,
                          NULL};
    char *ports = NULL;
    long long deadline = th_now_ms() + 10000;
    bson_t doc;
    bson_iter_t it;
    int port;

    snprintf(script, sizeof script, "%s/tests/support/connect.py", th_source_dir());
    cr_assert(th_path(port_file, sizeof port_file, fx.dir, "connect-port.json"));
    cr_assert(th_proc_spawn(&connect_proc, fx.dir, argv, NULL), "connect.py starts");
    while (!(ports = th_read_file(port_file)) && th_now_ms() < deadline)
        th_sleep_ms(20);
    cr_assert(ports, "connect.py wrote its port");
    cr_assert(bson_init_from_json(&doc, ports, -1, NULL));
    cr_assert(bson_iter_init_find(&it, &doc, "port"));
    port = (int)bson_iter_as_int64(&it);
    bson_destroy(&doc);
    free(ports);
    return port;
}

Test(consumers, a_kafka_connect_connector_is_read_over_rest_with_its_login_hidden)
{
    int port;
    char *crit = hex_token(T0 - 40 * HOUR), *ok = hex_token(T0 - 10 * HOUR);
    char *offsets, url[256], *out;
    bson_t doc;
    long status;
    int code;

    fx_start(&fx, WEEKEND);
    fx_seed_own_time(&fx, T0);
    port = connect_start("admin:s3cr3t");
    offsets = bson_strdup_printf(
        "[{\"partition\":{\"server_id\":\"orders\"},\"offset\":{\"sec\":%u,\"ord\":1,"
        "\"resume_token\":\"%s\"}},{\"partition\":{\"ns\":\"mongodb://h/shop.orders\"},"
        "\"offset\":{\"_id\":\"{\\\"_data\\\": \\\"%s\\\"}\",\"HEARTBEAT\":\"true\"}}]",
        T0 - 40 * HOUR, crit, ok);
    free(fx_http(port, "PUT", "/control/orders", offsets, &status));
    cr_assert_eq(status, 200);
    snprintf(url, sizeof url, "http://admin:s3cr3t@127.0.0.1:%d/connectors/orders", port);
    code = status_json(url, &doc, &out);
    cr_expect_eq(code, 2, "CRIT: %s", out);
    cr_expect_str_eq(row(&doc, 1, "consumer"), "mongo-kafka", "%s", out);
    cr_expect_str_eq(row(&doc, 1, "state"), "OK");
    cr_expect_str_eq(row(&doc, 1, "note"), "heartbeat");
    cr_expect_str_eq(row(&doc, 2, "position"), "orders");
    cr_expect_str_eq(row(&doc, 2, "state"), "CRIT");
    cr_expect(strstr(row(&doc, 2, "key"), "admin:***@127.0.0.1") != NULL, "%s", out);
    cr_expect(strstr(out, "s3cr3t") == NULL, "the password never shows: %s", out);
    bson_destroy(&doc);
    free(out);

    /* A connector Connect does not know: UNKNOWN at once, with its answer. */
    snprintf(url, sizeof url, "http://admin:s3cr3t@127.0.0.1:%d/connectors/nope", port);
    code = status_json(url, &doc, &out);
    cr_expect_eq(code, 3, "%s", out);
    cr_expect(strstr(row(&doc, 1, "reason"), "404: Connector nope not found") != NULL, "%s",
              out);
    cr_expect(strstr(out, "s3cr3t") == NULL, "%s", out);
    bson_destroy(&doc);
    free(out);
    bson_free(crit);
    bson_free(ok);
    bson_free(offsets);
}

Test(consumers, monstache_documents_are_read_from_mongodb)
{
    char *hex = hex_token(T0 - 10 * HOUR), *body, *out;
    bson_t doc, reply;
    int code;

    fx_start(&fx, WEEKEND);
    fx_seed_own_time(&fx, T0);
    body = bson_strdup_printf("{\"db\": \"monstache\", \"coll\": \"monstache\", \"docs\": "
                              "[{\"_id\": \"default\", \"ts\": {\"$timestamp\": {\"t\": %u, "
                              "\"i\": 1}}}, {\"_id\": \"other\", \"ts\": {\"$timestamp\": "
                              "{\"t\": 1, \"i\": 1}}}]}",
                              T0 - 30 * HOUR);
    fx_sim(&fx, "POST", "/documents", body, &reply);
    bson_destroy(&reply);
    bson_free(body);
    body = bson_strdup_printf("{\"db\": \"monstache\", \"coll\": \"tokens\", \"docs\": "
                              "[{\"resumeName\": \"default\", \"streamID\": \"shop.orders\", "
                              "\"token\": {\"_data\": \"%s\"}}]}",
                              hex);
    fx_sim(&fx, "POST", "/documents", body, &reply);
    bson_destroy(&reply);
    code = status_json("monstache:default", &doc, &out);
    cr_expect_eq(code, 1, "WARN from the ts document: %s", out);
    cr_expect_str_eq(row(&doc, 1, "consumer"), "monstache", "%s", out);
    cr_expect_str_eq(row(&doc, 1, "state"), "WARN");
    cr_expect_str_eq(row(&doc, 2, "position"), "shop.orders");
    cr_expect_str_eq(row(&doc, 2, "state"), "OK");
    bson_destroy(&doc);
    free(out);
    code = status_json("monstache:nobody", &doc, &out);
    cr_expect_eq(code, 3, "no document: UNKNOWN: %s", out);
    cr_expect(strstr(row(&doc, 1, "reason"), "does not exist") != NULL, "%s", out);
    bson_destroy(&doc);
    free(out);
    bson_free(body);
    bson_free(hex);
}
