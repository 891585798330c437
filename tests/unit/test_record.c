#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/record.h"

static void make_record(tw_checkpoint_t *cp)
{
    bson_t token;

    tw_checkpoint_init(cp);
    cr_assert(tw_token_parse("8265536F00000000072B022C0100296E5A1004", &token, NULL));
    cr_assert(tw_checkpoint_set_token(cp, &token, NULL));
    bson_destroy(&token);
    cp->updated_ms = 1699966724123LL;
    cp->events = 42;
    snprintf(cp->source, sizeof cp->source, "event");
    cp->scope = strdup("rs=rs0 db=shop coll=orders pipeline=sha256:44136fa355b3");
}

Test(record, key_carries_the_hash_tag)
{
    char key[TW_KEY_MAX];

    tw_checkpoint_key("orders-cdc", "checkpoint", key);
    cr_expect_str_eq(key, "tokenwatch:{orders-cdc}:checkpoint");
}

Test(record, encodes_the_contract_fields)
{
    static const struct {
        const char *name;
        const char *value;
    } want[] = {
        {"token", "{ \"_data\" : \"8265536F00000000072B022C0100296E5A1004\" }"},
        {"cluster_time", "1699966720:7"},
        {"wall_ms", "1699966720000"},
        {"updated_ms", "1699966724123"},
        {"events", "42"},
        {"source", "event"},
        {"scope", "rs=rs0 db=shop coll=orders pipeline=sha256:44136fa355b3"},
        {"layout", "mongodb"},
        {"time_source", "token"},
    };
    tw_checkpoint_t cp;
    tw_record_fields_t fields;

    make_record(&cp);
    cr_assert(tw_record_encode(&cp, &fields, NULL));
    for (size_t k = 0; k < TW_RECORD_FIELDS; k++) {
        cr_expect_str_eq(fields.names[k], want[k].name);
        cr_expect_str_eq(fields.values[k], want[k].value, "field %s", want[k].name);
    }
    tw_record_fields_release(&fields);
    tw_checkpoint_release(&cp);
}

Test(record, decode_reverses_encode)
{
    tw_checkpoint_t cp, back;
    tw_record_fields_t fields;

    make_record(&cp);
    cr_assert(tw_record_encode(&cp, &fields, NULL));
    cr_assert(tw_record_decode(fields.names, (const char *const *)fields.values,
                               TW_RECORD_FIELDS, &back, NULL));
    cr_expect(bson_equal(&cp.token, &back.token));
    cr_expect_eq(tw_ctime_cmp(cp.cluster_time, back.cluster_time), 0);
    cr_expect_eq(back.wall_ms, cp.wall_ms);
    cr_expect_eq(back.updated_ms, cp.updated_ms);
    cr_expect_eq(back.events, 42);
    cr_expect_str_eq(back.source, "event");
    cr_expect_str_eq(back.scope, cp.scope);
    tw_record_fields_release(&fields);
    tw_checkpoint_release(&cp);
    tw_checkpoint_release(&back);
}

Test(record, a_hand_written_record_needs_only_a_token)
{
    const char *names[] = {"token"};
    const char *values[] = {"8265536F00000000072B0229296E04"};
    tw_checkpoint_t cp;

    cr_assert(tw_record_decode(names, values, 1, &cp, NULL));
    cr_expect_eq(cp.cluster_time.t, 1699966720u);
    cr_expect_eq(cp.cluster_time.i, 7u);
    cr_expect_eq(cp.wall_ms, 1699966720000LL);
    cr_expect_null(cp.scope);
    cr_expect_eq(cp.events, 0);
    tw_checkpoint_release(&cp);
}

typedef struct {
    const char *names[3];
    const char *values[3];
    size_t count;
    const char *reason;
} bad_record_t;

static const bad_record_t bad_records[] = {
    {{"cluster_time"}, {"1:1"}, 1, "no token"},
    {{"token"}, {"{\"id\": \"83\"}"}, 1, "token"},
    {{"token"}, {"AeARBpQ/AAAA"}, 1, "token"},
    {{"token", "cluster_time"}, {"8265536F00000000072B", "1699966720:8"}, 2, "disagrees"},
    {{"token", "cluster_time"}, {"8265536F00000000072B", "yesterday"}, 2, "yesterday"},
    {{"token", "events"}, {"8265536F00000000072B", "many"}, 2, "events"},
};

Test(record, rejects_broken_records)
{
    for (size_t k = 0; k < sizeof bad_records / sizeof bad_records[0]; k++) {
        const bad_record_t *c = &bad_records[k];
        tw_checkpoint_t cp;
        tw_error_t err;

        cr_expect_not(tw_record_decode(c->names, c->values, c->count, &cp, &err),
                      "case %zu accepted", k);
        cr_expect(strstr(err.message, c->reason) != NULL, "case %zu: %s", k,
                  err.message);
    }
}

/* Tokens are opaque: a DocumentDB token, and one of no known layout whose
 * time came from the server's operationTime, both come back as stored. */
Test(record, keeps_tokens_of_any_layout)
{
    static const struct {
        const char *token;
        tw_time_source_t source;
        const char *layout;
    } cases[] = {
        {"{\"_data\": \"015daf94f600000002010000000200009025\"}", TW_TIME_EVENT, "documentdb"},
        {"{\"_data\": \"AeARBpQ/AAAA\"}", TW_TIME_OPERATION, "opaque"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_checkpoint_t cp, back;
        tw_record_fields_t fields;
        bson_t token;

        tw_checkpoint_init(&cp);
        cr_assert(tw_token_parse(cases[k].token, &token, NULL));
        tw_checkpoint_set_position(&cp, &token, (tw_ctime_t){1700000000, 3}, cases[k].source);
        bson_destroy(&token);
        cr_assert(tw_record_encode(&cp, &fields, NULL));
        cr_expect_str_eq(fields.values[7], cases[k].layout);
        cr_expect_str_eq(fields.values[8], tw_time_source_name(cases[k].source));
        cr_assert(tw_record_decode(fields.names, (const char *const *)fields.values,
                                   TW_RECORD_FIELDS, &back, NULL));
        cr_expect(bson_equal(&cp.token, &back.token), "case %zu", k);
        cr_expect_eq(back.cluster_time.t, 1700000000u);
        cr_expect_eq(back.cluster_time.i, 3u);
        cr_expect_eq(back.time_source, cases[k].source);
        tw_record_fields_release(&fields);
        tw_checkpoint_release(&cp);
        tw_checkpoint_release(&back);
    }
}

Test(record, an_opaque_token_alone_has_an_unknown_time)
{
    const char *names[] = {"token"};
    const char *values[] = {"{\"_data\": \"AeARBpQ/AAAA\"}"};
    tw_checkpoint_t cp;

    cr_assert(tw_record_decode(names, values, 1, &cp, NULL));
    cr_expect_eq(cp.time_source, TW_TIME_UNKNOWN);
    cr_expect_eq(cp.layout, TW_LAYOUT_OPAQUE);
    tw_checkpoint_release(&cp);
}
