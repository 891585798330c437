#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/token.h"

typedef struct {
    const char *hex;
    bool ok;
    uint32_t t, i;
    const char *reason; /* a word the error must contain */
} decode_case_t;

static const decode_case_t decode_cases[] = {
    {"82612E8513000000012B022C0100296E5A1004", true, 1630438675, 1, NULL},
    /* Amazon DocumentDB, from AWS's examples: an event and a postBatchResumeToken. */
    {"015daf94f600000002010000000200009025", true, 1571788022, 2, NULL},
    {"0167c8cbe60000000004", true, 1741212646, 0, NULL},
    {"82612e8513000000012b02", true, 1630438675, 1, NULL}, /* lower case */
    {"8265536F0000000007", true, 1699966720, 7, NULL},     /* exactly 18 */
    {"82FFFFFFFFFFFFFFFF2B", true, 4294967295u, 4294967295u, NULL},
    {"8265536F00000000", false, 0, 0, "truncated"},
    {"", false, 0, 0, "truncated"},
    {"8365536F000000000701", false, 0, 0, "type byte"},
    {"0065536F000000000701", false, 0, 0, "type byte"},
    {"8265536F0000000007012", false, 0, 0, "odd"},
    {"8265536F00000000070G", false, 0, 0, "not hex"},
    {"82 5536F000000000701", false, 0, 0, "not hex"},
};

Test(token, decodes_table)
{
    for (size_t k = 0; k < sizeof decode_cases / sizeof decode_cases[0]; k++) {
        const decode_case_t *c = &decode_cases[k];
        tw_ctime_t ct = {0, 0};
        tw_error_t err;
        bool ok = tw_token_decode_hex(c->hex, &ct, &err);

        cr_expect_eq(ok, c->ok, "case %zu (%s): ok=%d", k, c->hex, ok);
        if (c->ok) {
            cr_expect_eq(ct.t, c->t, "case %zu: t=%u", k, ct.t);
            cr_expect_eq(ct.i, c->i, "case %zu: i=%u", k, ct.i);
        } else {
            cr_expect(strstr(err.message, c->reason) != NULL,
                      "case %zu: '%s' lacks '%s'", k, err.message, c->reason);
            cr_expect_eq(err.domain, TW_ERR_USAGE);
        }
    }
}

Test(token, parses_json_and_bare_hex_alike)
{
    bson_t a, b;
    tw_ctime_t ta, tb;

    cr_assert(tw_token_parse("{\"_data\": \"8265536F00000000072B0229296E04\"}", &a, NULL));
    cr_assert(tw_token_parse("8265536F00000000072B0229296E04", &b, NULL));
    cr_assert(tw_token_cluster_time(&a, &ta, NULL));
    cr_assert(tw_token_cluster_time(&b, &tb, NULL));
    cr_expect_eq(tw_ctime_cmp(ta, tb), 0);
    cr_expect_eq(tw_token_cmp(&a, &b), 0);
    bson_destroy(&a);
    bson_destroy(&b);
}

Test(token, rejects_json_without_data)
{
    bson_t t;
    tw_error_t err;

    cr_expect_not(tw_token_parse("{\"x\": 1}", &t, &err));
    cr_expect(strstr(err.message, "_data") != NULL, "%s", err.message);
    cr_expect_not(tw_token_parse("{not json", &t, &err));
    cr_expect(strstr(err.message, "JSON") != NULL, "%s", err.message);
}

Test(token, json_round_trip_keeps_the_token)
{
    bson_t t, back;
    char *json;

    cr_assert(tw_token_parse("8265536F00000000072B022C0100296E5A1004", &t, NULL));
    json = tw_token_to_json(&t);
    cr_assert(tw_token_parse(json, &back, NULL), "%s", json);
    cr_expect(bson_equal(&t, &back));
    bson_free(json);
    bson_destroy(&t);
    bson_destroy(&back);
}

Test(token, orders_by_time_then_data)
{
    static const char *const ordered[] = {
        "8265536F00000000012B0229296E04",         /* HWM at (t, 1) */
        "8265536F00000000012B022C0100296E5A1004", /* event at (t, 1) */
        "8265536F00000000022B0229296E04",         /* (t, 2) */
        "8265536F01000000002B0229296E04",         /* (t+1, 0) */
    };
    bson_t tokens[4];

    for (size_t k = 0; k < 4; k++)
        cr_assert(tw_token_parse(ordered[k], &tokens[k], NULL));
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++) {
            int want = a < b ? -1 : (a > b ? 1 : 0);
            cr_expect_eq(tw_token_cmp(&tokens[a], &tokens[b]), want,
                         "cmp(%zu, %zu)", a, b);
        }
    for (size_t k = 0; k < 4; k++)
        bson_destroy(&tokens[k]);
}

Test(token, formats_cluster_time_and_utc)
{
    char ct[TW_CTIME_TEXT_MAX], utc[TW_UTC_TEXT_MAX];
    tw_ctime_t parsed;
    tw_error_t err;

    tw_ctime_format((tw_ctime_t){1700000000, 12}, ct);
    cr_expect_str_eq(ct, "1700000000:12");
    cr_expect(tw_ctime_parse("1700000000:12", &parsed, NULL));
    cr_expect_eq(parsed.t, 1700000000u);
    cr_expect_eq(parsed.i, 12u);
    cr_expect_not(tw_ctime_parse("1700000000", &parsed, &err));
    cr_expect_not(tw_ctime_parse("4294967296:0", &parsed, &err));
    cr_expect_not(tw_ctime_parse("1:-1", &parsed, &err));
    tw_utc_format(1700000000000LL, utc);
    cr_expect_str_eq(utc, "2023-11-14T22:13:20Z");
    tw_utc_format(1700000000123LL, utc);
    cr_expect_str_eq(utc, "2023-11-14T22:13:20.123Z");
}

typedef struct {
    const char *json;
    tw_token_layout_t layout;
    bool has_time;
    uint32_t t, i;
} layout_case_t;

/* Tokens are opaque: every one of these is a token; only some hold a time. */
static const layout_case_t layout_cases[] = {
    {"{\"_data\": \"82612E8513000000012B022C0100296E5A1004\"}", TW_LAYOUT_MONGODB, true,
     1630438675, 1},
    {"{\"_data\": \"015daf94f600000002010000000200009025\"}", TW_LAYOUT_DOCUMENTDB, true,
     1571788022, 2},
    /* Cosmos DB vCore: base64 text. */
    {"{\"_data\": \"AeARBpQ/AAAA\"}", TW_LAYOUT_OPAQUE, false, 0, 0},
    /* Hex with a leading byte nobody documents. */
    {"{\"_data\": \"7F00112233445566778899\"}", TW_LAYOUT_OPAQUE, false, 0, 0},
    /* MongoDB 3.6: _data as BinData, the same KeyString inside. */
    {"{\"_data\": {\"$binary\": {\"base64\": \"gmEuhRMAAAABKw==\", \"subType\": \"00\"}}}",
     TW_LAYOUT_MONGODB, true, 1630438675, 1},
    {"{\"_data\": {\"$binary\": {\"base64\": \"AQID\", \"subType\": \"00\"}}}",
     TW_LAYOUT_OPAQUE, false, 0, 0},
    /* Extra fields travel with the token. */
    {"{\"_data\": \"8265536F00000000072B0229296E04\", \"_typeBits\": {\"$binary\": "
     "{\"base64\": \"QA==\", \"subType\": \"00\"}}}",
     TW_LAYOUT_MONGODB, true, 1699966720, 7},
};

Test(token, reads_every_layout_and_keeps_opaque_tokens)
{
    for (size_t k = 0; k < sizeof layout_cases / sizeof layout_cases[0]; k++) {
        const layout_case_t *c = &layout_cases[k];
        tw_ctime_t ct = {0, 0};
        bson_t token, back;
        tw_error_t err;
        char *json;

        cr_assert(tw_token_parse(c->json, &token, &err), "case %zu: %s", k, err.message);
        cr_expect_eq(tw_token_layout(&token, &ct), c->layout, "case %zu", k);
        cr_expect_eq(tw_token_cluster_time(&token, &ct, NULL), c->has_time, "case %zu", k);
        if (c->has_time) {
            cr_expect_eq(ct.t, c->t, "case %zu: t=%u", k, ct.t);
            cr_expect_eq(ct.i, c->i, "case %zu: i=%u", k, ct.i);
        }
        /* Byte for byte: what is stored comes back the same. */
        json = tw_token_to_json(&token);
        cr_assert(tw_token_parse(json, &back, NULL), "case %zu: %s", k, json);
        cr_expect(bson_equal(&token, &back), "case %zu: %s", k, json);
        bson_free(json);
        bson_destroy(&back);
        bson_destroy(&token);
    }
}

Test(token, bare_text_is_a_token_only_when_hex)
{
    bson_t t;
    tw_error_t err;

    cr_assert(tw_token_parse("015daf94f600000002010000000200009025", &t, NULL));
    cr_expect_eq(tw_token_layout(&t, NULL), TW_LAYOUT_DOCUMENTDB);
    bson_destroy(&t);
    cr_assert(tw_token_parse("7F0011", &t, NULL));
    cr_expect_eq(tw_token_layout(&t, NULL), TW_LAYOUT_OPAQUE);
    bson_destroy(&t);
    cr_expect_not(tw_token_parse("AeARBpQ/AAAA", &t, &err));
    cr_expect(strstr(err.message, "JSON") != NULL, "%s", err.message);
    cr_expect_not(tw_token_parse("", &t, &err));
}

Test(token, layout_names)
{
    cr_expect_str_eq(tw_token_layout_name(TW_LAYOUT_MONGODB), "mongodb");
    cr_expect_str_eq(tw_token_layout_name(TW_LAYOUT_DOCUMENTDB), "documentdb");
    cr_expect_str_eq(tw_token_layout_name(TW_LAYOUT_OPAQUE), "opaque");
    cr_expect_str_eq(tw_time_source_name(TW_TIME_EVENT), "event");
    cr_expect_str_eq(tw_time_source_name(TW_TIME_TOKEN), "token");
    cr_expect_str_eq(tw_time_source_name(TW_TIME_OPERATION), "operation");
    cr_expect_str_eq(tw_time_source_name(TW_TIME_LOCAL), "local");
}

typedef struct {
    const char *event_json; /* NULL: no event (a postBatchResumeToken) */
    const char *token_data;
    bool has_op;
    tw_time_source_t source;
    uint32_t t, i;
} position_case_t;

/* The event's clusterTime, then the token's layout, then operationTime,
 * then the local clock (1700000500 s here). */
static const position_case_t position_cases[] = {
    {"{\"clusterTime\": {\"$timestamp\": {\"t\": 1700000100, \"i\": 3}}}",
     "8265536F00000000072B0229296E04", true, TW_TIME_EVENT, 1700000100, 3},
    {"{\"operationType\": \"insert\"}", "8265536F00000000072B0229296E04", true,
     TW_TIME_TOKEN, 1699966720, 7},
    {NULL, "0167c8cbe60000000004", true, TW_TIME_TOKEN, 1741212646, 0},
    {NULL, "7F0011", true, TW_TIME_OPERATION, 1700000200, 9},
    {"{\"operationType\": \"insert\"}", "7F0011", false, TW_TIME_LOCAL, 1700000500, 0},
};

Test(token, position_time_prefers_the_server)
{
    const tw_ctime_t op = {1700000200, 9};

    for (size_t k = 0; k < sizeof position_cases / sizeof position_cases[0]; k++) {
        const position_case_t *c = &position_cases[k];
        bson_t event, token;
        tw_ctime_t ct;
        tw_time_source_t source;

        if (c->event_json)
            cr_assert(bson_init_from_json(&event, c->event_json, -1, NULL));
        cr_assert(tw_token_parse(c->token_data, &token, NULL));
        source = tw_position_time(c->event_json ? &event : NULL, &token,
                                  c->has_op ? &op : NULL, 1700000500123LL, &ct);
        cr_expect_eq(source, c->source, "case %zu: %s", k, tw_time_source_name(source));
        cr_expect_eq(ct.t, c->t, "case %zu: t=%u", k, ct.t);
        cr_expect_eq(ct.i, c->i, "case %zu: i=%u", k, ct.i);
        if (c->event_json)
            bson_destroy(&event);
        bson_destroy(&token);
    }
}

Test(token, same_time_compares_data_only_within_one_layout)
{
    bson_t mongo, docdb, opaque, opaque2;
    tw_ctime_t same = {1700000000, 1};

    cr_assert(tw_token_parse("8265536F00000000012B022C0100296E5A1004", &mongo, NULL));
    cr_assert(tw_token_parse("0165536F0000000001010000000200009025", &docdb, NULL));
    cr_assert(tw_token_parse("{\"_data\": \"AAAA\"}", &opaque, NULL));
    cr_assert(tw_token_parse("{\"_data\": \"BBBB\"}", &opaque2, NULL));
    /* Different layouts at the same time: no order between them. */
    cr_expect_eq(tw_position_cmp(same, &mongo, same, &docdb), 0);
    /* Opaque tokens: only time orders them. */
    cr_expect_eq(tw_position_cmp(same, &opaque, same, &opaque2), 0);
    cr_expect_eq(tw_position_cmp((tw_ctime_t){1700000000, 0}, &opaque, same, &opaque2), -1);
    cr_expect_eq(tw_position_cmp(same, &mongo, (tw_ctime_t){1700000001, 0}, &docdb), -1);
    bson_destroy(&mongo);
    bson_destroy(&docdb);
    bson_destroy(&opaque);
    bson_destroy(&opaque2);
}

/* JSON that libbson takes but that is not one token: a second _data (which
 * one would win?) or a NUL inside _data (C strings would cut it). */
Test(token, rejects_json_that_is_not_one_token)
{
    static const struct {
        const char *json;
        const char *reason;
    } cases[] = {
        {"{\"_data\": \"8263A1F2C4000000012B\", \"_data\": \"8263A1F2C4000000022B\"}", "twice"},
        {"{\"_data\": \"8263A1F2C4000000012B\", \"_data\": 1}", "twice"},
        {"{\"_data\": \"8263A1F2C4\\u0000000000012B\"}", "NUL"},
    };
    bson_t t;
    tw_error_t err;

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bool ok = tw_token_parse(cases[k].json, &t, &err);

        cr_expect_not(ok, "%s accepted", cases[k].json);
        if (ok)
            bson_destroy(&t);
        else
            cr_expect(strstr(err.message, cases[k].reason) != NULL, "%s: %s", cases[k].json,
                      err.message);
        cr_expect(ok || strstr(err.message, "_data") != NULL, "%s", err.message);
    }
}
