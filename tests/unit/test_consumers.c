/*
 * The positions other consumers store, as their own code writes them.
 * Sources of each fixture:
 *  - Debezium: io.debezium.connector.mongodb.SourceInfo (the offset's sec,
 *    ord, resume_token, initsync; its javadoc's {sec 1422998530, ord 0, h}
 *    example), ResumeTokens.toBase64 (2.7+, DBZ-6522: base64 of the BSON
 *    token document, java.util.Base64 with padding), the semantics doc
 *    section 7 (heartbeat offsets "sec":-1,"ord":-1), and
 *    RedisOffsetBackingStore (hash field = JSON [engine, partition]).
 *    The base64 fixture is the BSON of {_data: HEX} (what BsonDocumentCodec
 *    writes for that document) in base64.
 *  - mongo-kafka: MongoSourceTask (offset {_id: token.toJson()}, "copy":
 *    "true" while copying, the copied document's _id {_id, copyingData}),
 *    HeartbeatManager ({_id: token JSON, HEARTBEAT: "true"}).
 *  - oplogtoredis: lib/redispub/mongoTimestampEncoding_test.go's table
 *    (T 1234 I 5678 is "5299989648942"; the max value).
 *  - Monstache: monstache.go (monstache.monstache {_id, ts}; tokens
 *    {resumeName, streamID, token}).
 *  - Kafka Connect: KIP-875's GET /connectors/{name}/offsets reply.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/consumers.h"

#define T_DBZ 1666193824u
#define HEX_DBZ "82635019A0000000012B022C0100296E5A10046DA5C8BBB3AA4A4DB2CDC5FE9D2C8C1C463C5F6964003C6F72646572732D310004"
#define B64_DBZ                                                                                    \
    "eQAAAAJfZGF0YQBpAAAAODI2MzUwMTlBMDAwMDAwMDAxMkIwMjJDMDEwMDI5NkU1QTEwMDQ2REE1QzhCQkIzQUE0QTREQj" \
    "JDREM1RkU5RDJDOEMxQzQ2M0M1RjY5NjQwMDNDNkY3MjY0NjU3MjczMkQzMTAwMDQAAA=="

typedef struct {
    const char *value;
    tw_consumer_t consumer;
    tw_position_kind_t kind;
    uint32_t t, i;
    const char *word; /* in the note (TIME/NONE) or the reason (BAD) */
} offset_case_t;

static const offset_case_t offset_cases[] = {
    /* Debezium 1.8-2.6: _data hex. */
    {"{\"sec\":1666193824,\"ord\":1,\"resume_token\":\"" HEX_DBZ "\"}", TW_CONSUMER_DEBEZIUM,
     TW_POSITION_TIME, T_DBZ, 1, ""},
    /* Debezium 2.7+: base64 of the BSON token document. */
    {"{\"sec\":1666193824,\"ord\":1,\"resume_token\":\"" B64_DBZ "\"}", TW_CONSUMER_DEBEZIUM,
     TW_POSITION_TIME, T_DBZ, 1, ""},
    /* With a transaction's lsid and txnNumber (SourceInfo adds them). */
    {"{\"sec\":1666193824,\"ord\":1,\"lsid\":\"x\",\"txnNumber\":3,\"resume_token\":\"" HEX_DBZ
     "\"}",
     TW_CONSUMER_DEBEZIUM, TW_POSITION_TIME, T_DBZ, 1, ""},
    /* Up to 1.7: sec/ord only (the oplog era), SourceInfo's javadoc example. */
    {"{\"sec\":1422998530,\"ord\":0,\"h\":398278732173914406}", TW_CONSUMER_DEBEZIUM,
     TW_POSITION_TIME, 1422998530, 0, "sec/ord"},
    /* A heartbeat offset: no position. */
    {"{\"sec\":-1,\"ord\":-1}", TW_CONSUMER_DEBEZIUM, TW_POSITION_NONE, 0, 0, "heartbeat"},
    /* A snapshot: its start, or none yet. */
    {"{\"sec\":1666193824,\"ord\":1,\"initsync\":true}", TW_CONSUMER_DEBEZIUM, TW_POSITION_TIME,
     T_DBZ, 1, "snapshot"},
    {"{\"sec\":0,\"ord\":0,\"initsync\":true}", TW_CONSUMER_DEBEZIUM, TW_POSITION_NONE, 0, 0,
     "snapshot"},
    {"{\"sec\":0,\"ord\":0}", TW_CONSUMER_DEBEZIUM, TW_POSITION_NONE, 0, 0, "no position"},
    /* Garbage of every kind: that position UNKNOWN, with the reason. */
    {"{\"sec\":1666193824,\"ord\":1,\"resume_token\":\"zz!!\"}", TW_CONSUMER_DEBEZIUM,
     TW_POSITION_BAD, 0, 0, "resume_token"},
    {"{\"resume_token\":\"8365536F000000000701\"}", TW_CONSUMER_DEBEZIUM, TW_POSITION_BAD, 0, 0,
     "type byte"},
    {"{\"resume_token\":\"QUJDRA==\"}", TW_CONSUMER_DEBEZIUM, TW_POSITION_BAD, 0, 0, "BSON"},
    {"{\"resume_token\":7}", TW_CONSUMER_DEBEZIUM, TW_POSITION_BAD, 0, 0, "wrong type"},
    {"{\"sec\":\"1666193824\"}", TW_CONSUMER_DEBEZIUM, TW_POSITION_BAD, 0, 0, "wrong type"},
    {"{\"sec\":99999999999,\"ord\":1}", TW_CONSUMER_DEBEZIUM, TW_POSITION_BAD, 0, 0, "range"},
    {"{\"foo\":1}", TW_CONSUMER_TOKENWATCH, TW_POSITION_BAD, 0, 0, "neither"},
    {"not json", TW_CONSUMER_TOKENWATCH, TW_POSITION_BAD, 0, 0, "JSON object"},
    {"[1,2]", TW_CONSUMER_TOKENWATCH, TW_POSITION_BAD, 0, 0, "JSON object"},
    {"", TW_CONSUMER_TOKENWATCH, TW_POSITION_BAD, 0, 0, "JSON object"},
    {"{\"sec\":1,\"note\":\"\xff\xfe\"}", TW_CONSUMER_TOKENWATCH, TW_POSITION_BAD, 0, 0, "UTF-8"},
    /* mongo-kafka: the token as a JSON string in _id. */
    {"{\"_id\":\"{\\\"_data\\\": \\\"" HEX_DBZ "\\\"}\"}", TW_CONSUMER_MONGO_KAFKA,
     TW_POSITION_TIME, T_DBZ, 1, ""},
    {"{\"HEARTBEAT\":\"true\",\"_id\":\"{\\\"_data\\\": \\\"" HEX_DBZ "\\\"}\"}",
     TW_CONSUMER_MONGO_KAFKA, TW_POSITION_TIME, T_DBZ, 1, "heartbeat"},
    {"{\"copy\":\"true\",\"_id\":\"{\\\"_id\\\": {\\\"$oid\\\": \\\"5f3c2a7100000000000000aa\\\"}, "
     "\\\"copyingData\\\": true}\"}",
     TW_CONSUMER_MONGO_KAFKA, TW_POSITION_NONE, 0, 0, "copying"},
    {"{\"_id\":\"{\\\"_data\\\": \\\"nothex\\\"}\"}", TW_CONSUMER_MONGO_KAFKA, TW_POSITION_BAD, 0,
     0, "no known layout"},
    {"{\"_id\":\"not json\"}", TW_CONSUMER_MONGO_KAFKA, TW_POSITION_BAD, 0, 0, "JSON"},
    {"{\"_id\":5}", TW_CONSUMER_MONGO_KAFKA, TW_POSITION_BAD, 0, 0, "not a string"},
};

Test(consumers, offsets_table)
{
    for (size_t k = 0; k < sizeof offset_cases / sizeof offset_cases[0]; k++) {
        const offset_case_t *c = &offset_cases[k];
        tw_position_t p;

        memset(&p, 0, sizeof p);
        tw_consumers_offset_json(c->value, strlen(c->value), &p);
        cr_expect_eq(p.kind, c->kind, "case %zu (%s): kind %d (%s)", k, c->value, p.kind,
                     p.reason);
        cr_expect_eq(p.consumer, c->consumer, "case %zu: consumer %s", k,
                     tw_consumer_name(p.consumer));
        if (c->kind == TW_POSITION_TIME) {
            cr_expect_eq(p.time.t, c->t, "case %zu: t %u", k, p.time.t);
            cr_expect_eq(p.time.i, c->i, "case %zu: i %u", k, p.time.i);
        }
        cr_expect(strstr(c->kind == TW_POSITION_BAD ? p.reason : p.note, c->word) != NULL,
                  "case %zu: '%s' / '%s' lacks '%s'", k, p.reason, p.note, c->word);
    }
}

Test(consumers, an_offset_over_the_cap_is_refused_unread)
{
    size_t len = TW_CONSUMERS_VALUE_MAX + 1;
    char *big = malloc(len);
    tw_position_t p;

    memset(big, ' ', len);
    big[0] = '{';
    memset(&p, 0, sizeof p);
    tw_consumers_offset_json(big, len, &p);
    cr_expect_eq(p.kind, TW_POSITION_BAD);
    cr_expect(strstr(p.reason, "bytes") != NULL, "%s", p.reason);
    free(big);
}

typedef struct {
    const char *field;
    const char *want;
} field_case_t;

Test(consumers, names_a_redis_offset_field_by_its_partition)
{
    static const field_case_t cases[] = {
        {"[\"redis\",{\"server_id\":\"orders\"}]", "orders"},
        {"[\"kafka\",{\"server_id\":\"inventory\",\"rs\":\"rs0\"}]", "inventory/rs0"},
        {"[\"x\",{\"ns\":\"mongodb://h:27017/shop.orders\"}]", "mongodb://h:27017/shop.orders"},
        {"not json at all", "not json at all"},
        {"[\"redis\",\"no partition\"]", "[\"redis\",\"no partition\"]"},
        {"\xff[bad", "?[bad"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[512];

        tw_consumers_field_name(cases[k].field, strlen(cases[k].field), name, sizeof name);
        cr_expect_str_eq(name, cases[k].want, "case %zu", k);
    }
}

typedef struct {
    const char *value;
    tw_position_kind_t kind;
    uint32_t t, i;
} otr_case_t;

Test(consumers, oplogtoredis_table)
{
    static const otr_case_t cases[] = {
        {"5299989648942", TW_POSITION_TIME, 1234, 5678},
        {"5299989643264", TW_POSITION_TIME, 1234, 0},
        {"18446744073709551615", TW_POSITION_TIME, 4294967295u, 4294967295u},
        {"7301444403200000001", TW_POSITION_TIME, 1700000000u, 1},
        {"0", TW_POSITION_NONE, 0, 0},
        {"18446744073709551616", TW_POSITION_BAD, 0, 0}, /* over 64 bits */
        {"nope", TW_POSITION_BAD, 0, 0},
        {"", TW_POSITION_BAD, 0, 0},
        {"12 34", TW_POSITION_BAD, 0, 0},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_position_t p;

        memset(&p, 0, sizeof p);
        tw_consumers_oplogtoredis(cases[k].value, strlen(cases[k].value), &p);
        cr_expect_eq(p.kind, cases[k].kind, "case %zu: %d %s", k, p.kind, p.reason);
        cr_expect_eq(p.consumer, TW_CONSUMER_OPLOGTOREDIS);
        if (cases[k].kind == TW_POSITION_TIME)
            cr_expect(p.time.t == cases[k].t && p.time.i == cases[k].i, "case %zu: %u:%u", k,
                      p.time.t, p.time.i);
    }
    cr_expect(tw_consumers_oplogtoredis_value("5299989648942", 13));
    cr_expect(!tw_consumers_oplogtoredis_value("1700000000", 10), "epoch seconds stay a SPEC");
    cr_expect(tw_consumers_oplogtoredis_key("oplogtoredis::lastProcessedEntry.3"));
    cr_expect(tw_consumers_oplogtoredis_key("oplogtoredis::lastProcessedEntry"));
    cr_expect(!tw_consumers_oplogtoredis_key("billing:resume-token"));
}

Test(consumers, monstache_documents)
{
    bson_t *ts = BCON_NEW("_id", "default", "ts", BCON_TIMESTAMP(1700000000, 3));
    bson_t *token = BCON_NEW("resumeName", "default", "streamID", "shop.orders", "token", "{",
                             "_data", BCON_UTF8(HEX_DBZ), "}");
    bson_t *opaque = BCON_NEW("resumeName", "default", "token", "{", "_data", "zz", "}");
    bson_t *wrong = BCON_NEW("_id", "default", "ts", BCON_INT64(1700000000));
    bson_t *neither = BCON_NEW("_id", "default");
    tw_position_t p;

    memset(&p, 0, sizeof p);
    tw_consumers_monstache(ts, &p);
    cr_expect(p.kind == TW_POSITION_TIME && p.time.t == 1700000000 && p.time.i == 3);
    memset(&p, 0, sizeof p);
    tw_consumers_monstache(token, &p);
    cr_expect(p.kind == TW_POSITION_TIME && p.time.t == T_DBZ && p.time.i == 1);
    memset(&p, 0, sizeof p);
    tw_consumers_monstache(opaque, &p);
    cr_expect_eq(p.kind, TW_POSITION_BAD);
    memset(&p, 0, sizeof p);
    tw_consumers_monstache(wrong, &p);
    cr_expect(p.kind == TW_POSITION_BAD && strstr(p.reason, "Timestamp"), "%s", p.reason);
    memset(&p, 0, sizeof p);
    tw_consumers_monstache(neither, &p);
    cr_expect_eq(p.kind, TW_POSITION_BAD);
    bson_destroy(ts);
    bson_destroy(token);
    bson_destroy(opaque);
    bson_destroy(wrong);
    bson_destroy(neither);
}

Test(consumers, kafka_connect_offsets_reply)
{
    static const char reply[] =
        "{\"offsets\":[{\"partition\":{\"server_id\":\"orders\"},\"offset\":{\"sec\":1666193824,"
        "\"ord\":1,\"resume_token\":\"" HEX_DBZ "\"}},"
        "{\"partition\":{\"ns\":\"mongodb://h/shop.orders\"},\"offset\":{\"_id\":\"{\\\"_data\\\": "
        "\\\"" HEX_DBZ "\\\"}\",\"HEARTBEAT\":\"true\"}},"
        "{\"partition\":{\"server_id\":\"empty\"},\"offset\":null},"
        "{\"partition\":{\"server_id\":\"junk\"},\"offset\":{\"x\":1}}]}";
    tw_positions_t list;
    tw_error_t err;

    tw_positions_init(&list);
    cr_assert(tw_consumers_connect_offsets(reply, strlen(reply), "http://c/connectors/x", &list,
                                           &err),
              "%s", err.message);
    cr_assert_eq(list.count, 4);
    cr_expect_str_eq(list.items[0].name, "orders");
    cr_expect(list.items[0].kind == TW_POSITION_TIME && list.items[0].time.t == T_DBZ);
    cr_expect_eq(list.items[0].consumer, TW_CONSUMER_DEBEZIUM);
    cr_expect_str_eq(list.items[1].name, "mongodb://h/shop.orders");
    cr_expect_eq(list.items[1].consumer, TW_CONSUMER_MONGO_KAFKA);
    cr_expect_str_eq(list.items[1].note, "heartbeat");
    cr_expect_eq(list.items[2].kind, TW_POSITION_NONE);
    cr_expect_eq(list.items[3].kind, TW_POSITION_BAD);
    cr_expect_str_eq(list.items[3].key, "http://c/connectors/x");
    tw_positions_clear(&list);

    cr_expect(!tw_consumers_connect_offsets("{\"error_code\":404}", 18, "k", &list, &err));
    cr_expect(strstr(err.message, "offsets") != NULL, "%s", err.message);
    cr_expect(!tw_consumers_connect_offsets("<html>", 6, "k", &list, &err));
    cr_expect_eq(list.count, 0);
}

Test(consumers, positions_sort_by_key_then_name)
{
    tw_positions_t list;

    tw_positions_init(&list);
    tw_positions_add(&list, "b", "1", TW_CONSUMER_DEBEZIUM);
    tw_positions_add(&list, "a", "2", TW_CONSUMER_DEBEZIUM);
    tw_positions_add(&list, "a", "1", TW_CONSUMER_DEBEZIUM);
    tw_positions_sort(&list, 0);
    cr_expect(strcmp(list.items[0].key, "a") == 0 && strcmp(list.items[0].name, "1") == 0);
    cr_expect(strcmp(list.items[2].key, "b") == 0);
    tw_positions_clear(&list);
    tw_positions_clear(&list); /* twice is fine */
}
