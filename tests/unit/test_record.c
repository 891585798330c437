#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/record.h"
#include "tokenwatch/redis.h" /* TW_REDIS_REPLY_ERROR */

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
    cr_expect_eq(tw_checkpoint_layout(&cp), TW_LAYOUT_OPAQUE);
    tw_checkpoint_release(&cp);
}

/* Every field back as it went in, for records of each kind. */
Test(record, round_trips_every_field)
{
    static const struct {
        const char *token;
        tw_ctime_t time;
        tw_time_source_t source;
        int64_t wall_ms, updated_ms, events;
        const char *what, *scope;
    } cases[] = {
        {"8265536F00000000072B022C0100296E5A1004", {1699966720, 7}, TW_TIME_TOKEN,
         1699966720000LL, 1699966724123LL, 42, "event", "rs=rs0 db=shop coll=orders"},
        {"8265536F00000000072B022C0100296E5A1004", {1699966720, 7}, TW_TIME_EVENT,
         1699966720000LL, 0, 0, "", NULL},
        {"{\"_data\": \"015daf94f600000002010000000200009025\"}", {1571788022, 2},
         TW_TIME_EVENT, 1571788022000LL, 1571788022999LL, 9223372036854775807LL,
         "pbrt", "db=shop"},
        {"{\"_data\": \"AeARBpQ/AAAA\"}", {1700000000, 3}, TW_TIME_OPERATION,
         1700000000000LL, 1700000001000LL, 1, "invalidate", "coll=orders"},
        {"{\"_data\": \"AeARBpQ/AAAA\"}", {1700000000, 0}, TW_TIME_LOCAL, -5, 1, 2,
         "rollback", "scope with \"quotes\" and \xc3\xa9"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_checkpoint_t cp, back;
        tw_record_fields_t fields;
        bson_t token;

        tw_checkpoint_init(&cp);
        cr_assert(tw_token_parse(cases[k].token, &token, NULL));
        tw_checkpoint_set_position(&cp, &token, cases[k].time, cases[k].source);
        bson_destroy(&token);
        cp.wall_ms = cases[k].wall_ms;
        cp.updated_ms = cases[k].updated_ms;
        cp.events = cases[k].events;
        snprintf(cp.source, sizeof cp.source, "%s", cases[k].what);
        cp.scope = cases[k].scope ? strdup(cases[k].scope) : NULL;
        cr_assert(tw_record_encode(&cp, &fields, NULL), "case %zu", k);
        cr_assert(tw_record_decode(fields.names, (const char *const *)fields.values,
                                   TW_RECORD_FIELDS, &back, NULL),
                  "case %zu", k);
        cr_expect(back.has_token, "case %zu", k);
        cr_expect(bson_equal(&cp.token, &back.token), "case %zu", k);
        cr_expect_eq(tw_ctime_cmp(back.cluster_time, cp.cluster_time), 0, "case %zu", k);
        cr_expect_eq(back.time_source, cp.time_source, "case %zu", k);
        cr_expect_eq(tw_checkpoint_layout(&back), tw_checkpoint_layout(&cp), "case %zu", k);
        cr_expect_eq(back.wall_ms, cp.wall_ms, "case %zu", k);
        cr_expect_eq(back.updated_ms, cp.updated_ms, "case %zu", k);
        cr_expect_eq(back.events, cp.events, "case %zu", k);
        cr_expect_str_eq(back.source, cp.source, "case %zu", k);
        if (cp.scope)
            cr_expect_str_eq(back.scope, cp.scope, "case %zu", k);
        else
            cr_expect_null(back.scope, "case %zu", k);
        tw_record_fields_release(&fields);
        tw_checkpoint_release(&cp);
        tw_checkpoint_release(&back);
    }
}

Test(record, encode_needs_a_token)
{
    tw_checkpoint_t cp;
    tw_record_fields_t fields;
    tw_error_t err;

    tw_checkpoint_init(&cp);
    cr_assert_not(tw_record_encode(&cp, &fields, &err));
    cr_expect(strstr(err.message, "needs a token") != NULL, "%s", err.message);
    for (size_t k = 0; k < TW_RECORD_FIELDS; k++)
        cr_expect_null(fields.values[k]);
    tw_record_fields_release(&fields);
    tw_record_fields_release(NULL);
}

/* Each number field named, with the text it holds. */
Test(record, names_the_field_that_is_not_a_number)
{
    static const struct {
        const char *name, *value, *want;
    } cases[] = {
        {"wall_ms", "soon", "checkpoint field wall_ms is not a number: 'soon'"},
        {"updated_ms", "1.5", "checkpoint field updated_ms is not a number: '1.5'"},
        {"events", "", "checkpoint field events is not a number: ''"},
        {"events", "99999999999999999999", "checkpoint field events is not a number"},
        {"wall_ms", "12 ", "checkpoint field wall_ms is not a number: '12 '"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *names[] = {"token", cases[k].name};
        const char *values[] = {"8265536F00000000072B", cases[k].value};
        tw_checkpoint_t cp;
        tw_error_t err;

        cr_expect_not(tw_record_decode(names, values, 2, &cp, &err), "case %zu", k);
        cr_expect(strstr(err.message, cases[k].want) != NULL, "case %zu: %s", k,
                  err.message);
        cr_expect_not(cp.has_token, "case %zu: not released", k);
    }
}

/* What a field left out, empty or unknown reads as. */
Test(record, reads_missing_and_unknown_fields)
{
    const char *names[] = {"token", "scope", "time_source", "layout", "colour"};
    const char *values[] = {"{\"_data\": \"015daf94f600000002010000000200009025\"}", "",
                            "sundial", "mongodb", "blue"};
    tw_checkpoint_t cp;

    cr_assert(tw_record_decode(names, values, 5, &cp, NULL));
    cr_expect_eq(cp.cluster_time.t, 1571788022u);
    cr_expect_eq(cp.cluster_time.i, 2u);
    cr_expect_eq(cp.time_source, TW_TIME_TOKEN, "no cluster_time: the token's");
    cr_expect_eq(tw_checkpoint_layout(&cp), TW_LAYOUT_DOCUMENTDB, "the token's, not the field's");
    cr_expect_eq(cp.wall_ms, 1571788022000LL);
    cr_expect_eq(cp.updated_ms, 0);
    cr_expect_str_eq(cp.source, "");
    cr_expect_null(cp.scope, "an empty scope names none");
    tw_checkpoint_release(&cp);
}

Test(record, an_unknown_time_source_falls_back_to_the_tokens)
{
    static const struct {
        const char *token, *time_source;
        tw_time_source_t want;
    } cases[] = {
        {"8265536F00000000072B", "sundial", TW_TIME_TOKEN},
        {"8265536F00000000072B", "event", TW_TIME_EVENT},
        {"{\"_data\": \"AeARBpQ/AAAA\"}", "sundial", TW_TIME_UNKNOWN},
        {"{\"_data\": \"AeARBpQ/AAAA\"}", "local", TW_TIME_LOCAL},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *names[] = {"token", "cluster_time", "time_source"};
        const char *values[] = {cases[k].token, "1699966720:7", cases[k].time_source};
        tw_checkpoint_t cp;

        cr_assert(tw_record_decode(names, values, 3, &cp, NULL), "case %zu", k);
        cr_expect_eq(cp.time_source, cases[k].want, "case %zu", k);
        tw_checkpoint_release(&cp);
    }
}

Test(record, reads_a_history_entry)
{
    static const char json[] =
        "{\"token\": \"{ \\\"_data\\\" : \\\"8265536F00000000072B\\\" }\", "
        "\"cluster_time\": \"1699966720:7\", \"wall_ms\": \"1699966720000\", "
        "\"updated_ms\": \"1699966724123\", \"events\": \"42\", \"source\": \"event\", "
        "\"scope\": \"db=shop\", \"pushed_ms\": \"1699966800000\", \"reason\": \"periodic\"}";
    tw_history_entry_t e;

    cr_assert(tw_record_history_decode(json, &e, NULL));
    cr_expect_eq(e.checkpoint.cluster_time.t, 1699966720u);
    cr_expect_eq(e.checkpoint.cluster_time.i, 7u);
    cr_expect_eq(e.checkpoint.updated_ms, 1699966724123LL);
    cr_expect_eq(e.checkpoint.events, 42);
    cr_expect_str_eq(e.checkpoint.source, "event");
    cr_expect_str_eq(e.checkpoint.scope, "db=shop");
    cr_expect_eq(e.pushed_ms, 1699966800000LL);
    cr_expect_str_eq(e.reason, "periodic");
    cr_expect_not(e.bad);
    tw_checkpoint_release(&e.checkpoint);
}

/* A field that is not a string is left out, as if it were missing. */
Test(record, rejects_broken_history_entries)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"not json", "a history entry is not JSON"},
        {"{\"cluster_time\": \"1:1\", \"reason\": \"periodic\"}", "no token field"},
        {"{\"token\": 7}", "no token field"},
        {"{\"token\": \"8265536F00000000072B\", \"events\": \"many\"}",
         "checkpoint field events is not a number"},
        {"{\"token\": \"8265536F00000000072B\", \"cluster_time\": \"1:1\"}", "disagrees"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_history_entry_t e;
        tw_error_t err;

        cr_expect_not(tw_record_history_decode(cases[k].json, &e, &err), "case %zu", k);
        cr_expect(strstr(err.message, cases[k].want) != NULL, "case %zu: %s", k,
                  err.message);
        tw_checkpoint_release(&e.checkpoint);
    }
}

Test(record, a_history_entry_without_its_extras)
{
    tw_history_entry_t e;

    cr_assert(tw_record_history_decode(
        "{\"token\": \"8265536F00000000072B\", \"events\": 7, \"pushed_ms\": 1}", &e, NULL));
    cr_expect_eq(e.checkpoint.events, 0, "a number, not a string: left out");
    cr_expect_eq(e.pushed_ms, 0);
    cr_expect_str_eq(e.reason, "");
    tw_checkpoint_release(&e.checkpoint);
}

/* The commit command. */

#define SCRIPT ((const char *)1) /* the commit script's text, whatever it is */
#define KEYS "tokenwatch:{orders}:checkpoint", "tokenwatch:{orders}:history", \
             "tokenwatch:{orders}:gaps"
#define RECORD "{ \"_data\" : \"8265536F00000000072B022C0100296E5A1004\" }", "1699966720", \
               "7", "8265536F00000000072B022C0100296E5A1004", "1699966720000", \
               "1699966724123", "42", "event", \
               "rs=rs0 db=shop coll=orders pipeline=sha256:44136fa355b3"
#define EPOCH_KEY "tokenwatch:{orders}:epoch"
#define GAP "{ \"from\" : \"1699966000:1\", \"to\" : \"1699966720:7\" }"

typedef struct {
    const char *name;
    size_t nevents;
    bool force;
    const char *reason, *gap;
    long long maxlen;
    const char *want[40]; /* NULL-terminated */
} command_case_t;

static const command_case_t command_cases[] = {
    {"advance, no events", 0, false, NULL, NULL, 0,
     {"EVAL", SCRIPT, "4", KEYS, EPOCH_KEY, RECORD, "advance", "1699966724123", "300000", "", "",
      "mongodb", "token", "0", "0", "0", NULL}},
    {"advance, two events", 2, false, NULL, NULL, 10000,
     {"EVAL", SCRIPT, "5", KEYS, EPOCH_KEY, "tokenwatch:{orders}:events", RECORD, "advance",
      "1699966724123", "300000", "", "", "mongodb", "token", "10000", "2", "7",
      "{\"n\": 1}", "{\"_data\": \"01\"}", "1699966719:1", "insert", "shop.orders",
      "{\"n\": 2}", "{\"_data\": \"02\"}", "1699966720:7", "delete", "", NULL}},
    {"force, a reason and a gap", 0, true, "fallback", GAP, 0,
     {"EVAL", SCRIPT, "4", KEYS, EPOCH_KEY, RECORD, "force", "1699966724123", "300000", "fallback",
      GAP, "mongodb", "token", "0", "0", "0", NULL}},
    {"force, neither reason nor gap", 0, true, NULL, NULL, 0,
     {"EVAL", SCRIPT, "4", KEYS, EPOCH_KEY, RECORD, "force", "1699966724123", "300000", "", "",
      "mongodb", "token", "0", "0", "0", NULL}},
    {"force, with events", 1, true, "resume-from", NULL, 5,
     {"EVAL", SCRIPT, "5", KEYS, EPOCH_KEY, "tokenwatch:{orders}:events", RECORD, "force",
      "1699966724123", "300000", "resume-from", "", "mongodb", "token", "5", "1", "0",
      "{\"n\": 1}", "{\"_data\": \"01\"}", "1699966719:1", "insert", "shop.orders", NULL}},
};

static void make_events(tw_event_t items[2], tw_event_batch_t *batch, size_t count)
{
    static char json[2][16] = {"{\"n\": 1}", "{\"n\": 2}"};
    static char token[2][24] = {"{\"_data\": \"01\"}", "{\"_data\": \"02\"}"};
    static char op[2][8] = {"insert", "delete"};
    static char ns[2][16] = {"shop.orders", ""};
    static const tw_ctime_t times[2] = {{1699966719, 1}, {1699966720, 7}};

    memset(items, 0, 2 * sizeof *items);
    for (size_t k = 0; k < 2; k++) {
        items[k].json = json[k];
        items[k].token_json = token[k];
        items[k].cluster_time = times[k];
        items[k].op = op[k];
        items[k].ns = ns[k];
    }
    batch->items = items;
    batch->count = count;
    batch->capacity = 2;
}

static void make_commit(tw_commit_t *c, const tw_checkpoint_t *cp, const command_case_t *k,
                        tw_event_t items[2], tw_event_batch_t *batch)
{
    memset(c, 0, sizeof *c);
    c->checkpoint_key = "tokenwatch:{orders}:checkpoint";
    c->history_key = "tokenwatch:{orders}:history";
    c->gaps_key = "tokenwatch:{orders}:gaps";
    c->epoch_key = EPOCH_KEY;
    c->epoch = k->nevents == 2 ? 7 : 0;
    c->record = cp;
    make_events(items, batch, k->nevents);
    c->sink.events = batch;
    c->sink.stream_key = "tokenwatch:{orders}:events";
    c->sink.stream_maxlen = k->maxlen;
    c->force = k->force;
    c->history_reason = k->reason;
    c->gap_json = k->gap;
}

Test(record, builds_the_commit_command)
{
    for (size_t k = 0; k < sizeof command_cases / sizeof command_cases[0]; k++) {
        const command_case_t *c = &command_cases[k];
        tw_checkpoint_t cp;
        tw_event_t items[2];
        tw_event_batch_t batch;
        tw_commit_t commit;
        tw_record_command_t cmd;
        size_t n = 0;

        make_record(&cp);
        make_commit(&commit, &cp, c, items, &batch);
        cr_assert(tw_record_commit_command(&commit, &cmd, NULL), "%s", c->name);
        while (c->want[n])
            n++;
        cr_expect_eq(cmd.argc, n, "%s: %zu values, not %zu", c->name, cmd.argc, n);
        for (size_t a = 0; a < n && a < cmd.argc; a++) {
            if (c->want[a] == SCRIPT)
                cr_expect(strstr(cmd.argv[a], "redis.call('HSET', KEYS[1]") != NULL,
                          "%s: argv[1] is the script", c->name);
            else
                cr_expect_str_eq(cmd.argv[a], c->want[a], "%s: argv[%zu]", c->name, a);
        }
        tw_record_command_release(&cmd);
        tw_checkpoint_release(&cp);
    }
}

/* The script finds MAXLEN at ARGV[17], the count at ARGV[18], the epoch at
 * ARGV[19] and the events from ARGV[20], five values each: where the
 * builder puts them. */
Test(record, the_command_puts_values_where_the_script_reads_them)
{
    for (size_t k = 0; k < sizeof command_cases / sizeof command_cases[0]; k++) {
        const command_case_t *c = &command_cases[k];
        tw_checkpoint_t cp;
        tw_event_t items[2];
        tw_event_batch_t batch;
        tw_commit_t commit;
        tw_record_command_t cmd;
        size_t keys = c->nevents ? 5 : 4, values = 3 + keys; /* ARGV[1] */
        char n[24];

        make_record(&cp);
        make_commit(&commit, &cp, c, items, &batch);
        cr_assert(tw_record_commit_command(&commit, &cmd, NULL));
        cr_expect_eq(cmd.argc, 3 + keys + TW_RECORD_COMMIT_VALUES +
                                   TW_RECORD_EVENT_VALUES * c->nevents, "%s", c->name);
        cr_expect(strstr(cmd.argv[1], "ARGV[17]") && strstr(cmd.argv[1], "ARGV[18]") &&
                  strstr(cmd.argv[1], "ARGV[19]") &&
                  strstr(cmd.argv[1], "local b = 20 + k * 5"));
        cr_expect_eq(TW_RECORD_COMMIT_VALUES, 19);
        cr_expect_eq(TW_RECORD_EVENT_VALUES, 5);
        snprintf(n, sizeof n, "%lld", c->maxlen);
        cr_expect_str_eq(cmd.argv[values + 16], n, "%s: ARGV[17]", c->name);
        snprintf(n, sizeof n, "%zu", c->nevents);
        cr_expect_str_eq(cmd.argv[values + 17], n, "%s: ARGV[18]", c->name);
        snprintf(n, sizeof n, "%lld", commit.epoch);
        cr_expect_str_eq(cmd.argv[values + 18], n, "%s: ARGV[19]", c->name);
        for (size_t e = 0; e < c->nevents; e++)
            cr_expect_str_eq(cmd.argv[values + 19 + 5 * e], items[e].json, "%s", c->name);
        tw_record_command_release(&cmd);
        tw_checkpoint_release(&cp);
    }
}

Test(record, the_command_of_any_token)
{
    static const struct {
        const char *token, *data, *layout;
    } cases[] = {
        {"{\"_data\": \"AeARBpQ/AAAA\"}", "AeARBpQ/AAAA", "opaque"},
        {"{\"_data\": {\"$binary\": {\"base64\": \"gmVTbwAAAAcr\", \"subType\": \"00\"}}}", "",
         "mongodb"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_checkpoint_t cp;
        tw_event_t items[2];
        tw_event_batch_t batch;
        tw_commit_t commit;
        tw_record_command_t cmd;
        bson_t token;

        make_record(&cp);
        cr_assert(tw_token_parse(cases[k].token, &token, NULL), "case %zu", k);
        tw_checkpoint_set_position(&cp, &token, (tw_ctime_t){1699966720, 7}, TW_TIME_EVENT);
        bson_destroy(&token);
        make_commit(&commit, &cp, &command_cases[0], items, &batch);
        cr_assert(tw_record_commit_command(&commit, &cmd, NULL), "case %zu", k);
        cr_expect_str_eq(cmd.argv[10], cases[k].data, "case %zu: ARGV[4], _data", k);
        cr_expect_str_eq(cmd.argv[21], cases[k].layout, "case %zu: ARGV[15]", k);
        cr_expect_str_eq(cmd.argv[22], "event", "case %zu: ARGV[16]", k);
        tw_record_command_release(&cmd);
        tw_checkpoint_release(&cp);
    }
}

Test(record, no_command_without_a_token)
{
    tw_checkpoint_t cp;
    tw_event_t items[2];
    tw_event_batch_t batch;
    tw_commit_t commit;
    tw_record_command_t cmd;
    tw_error_t err;

    tw_checkpoint_init(&cp);
    make_commit(&commit, &cp, &command_cases[1], items, &batch);
    cr_assert_not(tw_record_commit_command(&commit, &cmd, &err));
    cr_expect(strstr(err.message, "needs a token") != NULL, "%s", err.message);
    cr_expect_eq(cmd.argc, 0);
    cr_expect_null(cmd.argv);
    tw_record_command_release(&cmd);
    tw_record_command_release(NULL);
}

Test(record, reads_the_commit_reply)
{
    static const struct {
        long long flag;
        const char *text;
        tw_commit_result_t want;
    } cases[] = {
        {1, "-", {.written = true, .stored_absent = true}},
        {1, "", {.written = true}},
        {1, NULL, {.written = true}},
        {1, "1699966720:7",
         {.written = true, .has_prior = true, .prior_time = {1699966720, 7}}},
        {1, "junk", {.written = true}},
        {0, "1699966720:7", {.stored_time = {1699966720, 7}}},
        {0, NULL, {0}},
        {0, "-", {0}},
        {2, "1699966720:7", {.stored_time = {1699966720, 7}}},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_commit_result_t r;

        memset(&r, 0xff, sizeof r);
        tw_record_commit_reply(cases[k].flag, cases[k].text, &r);
        cr_expect_eq(r.written, cases[k].want.written, "case %zu", k);
        cr_expect_eq(r.stored_absent, cases[k].want.stored_absent, "case %zu", k);
        cr_expect_eq(r.has_prior, cases[k].want.has_prior, "case %zu", k);
        cr_expect_eq(tw_ctime_cmp(r.prior_time, cases[k].want.prior_time), 0, "case %zu", k);
        cr_expect_eq(tw_ctime_cmp(r.stored_time, cases[k].want.stored_time), 0, "case %zu", k);
    }
}

Test(record, reads_the_commit_error)
{
    static const struct {
        const char *message;
        int code;
        const char *want;
    } cases[] = {
        {"TWTYPE tokenwatch:{orders}:history holds a string, not a list",
         TW_CHECKPOINT_WRONG_TYPE,
         "nothing was written: tokenwatch:{orders}:history holds a string, not a list"},
        {"ERR user_script:1: Script attempted to access nonexistent global variable",
         TW_REDIS_REPLY_ERROR, "checkpoint script: ERR user_script:1: Script attempted"},
        {"TWTYPEX", TW_REDIS_REPLY_ERROR, "checkpoint script: TWTYPEX"},
        {"CROSSSLOT Keys in request don't hash to the same slot", TW_CHECKPOINT_WRONG_TYPE,
         "nothing was written: on Redis Cluster every key of a commit must share"},
        {"TWFENCED 8", TW_CHECKPOINT_FENCED,
         "nothing was written: another tokenwatch took the lease over (epoch 8)"},
        {"OOM command not allowed", TW_REDIS_REPLY_ERROR,
         "checkpoint script: OOM command not allowed"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_error_t err;

        tw_record_commit_error(cases[k].message, &err);
        cr_expect_eq(err.domain, TW_ERR_REDIS, "case %zu", k);
        cr_expect_eq(err.code, cases[k].code, "case %zu", k);
        cr_expect(strncmp(err.message, cases[k].want, strlen(cases[k].want)) == 0,
                  "case %zu: %s", k, err.message);
    }
}

/* A history entry keeps the time source its checkpoint had: an opaque
 * token's "operation" time is not "unknown" once it is history. */
Test(record, a_history_entry_keeps_its_time_source)
{
    static const char json[] =
        "{\"token\": \"{\\\"_data\\\": \\\"0A1B2C3D\\\"}\", \"cluster_time\": \"1700000000:5\", "
        "\"wall_ms\": \"1700000000000\", \"updated_ms\": \"1700000001000\", "
        "\"events\": \"3\", \"source\": \"event\", \"scope\": \"rs0/shop.orders\", "
        "\"layout\": \"opaque\", \"time_source\": \"operation\", "
        "\"pushed_ms\": \"1700000002000\", \"reason\": \"periodic\"}";
    tw_history_entry_t e;
    tw_error_t err;

    cr_assert(tw_record_history_decode(json, &e, &err), "%s", err.message);
    cr_expect_eq(e.checkpoint.time_source, TW_TIME_OPERATION, "got %s",
                 tw_time_source_name(e.checkpoint.time_source));
    cr_expect_eq(e.checkpoint.cluster_time.t, 1700000000u);
    cr_expect_eq(e.checkpoint.cluster_time.i, 5u);
    cr_expect_eq(e.pushed_ms, 1700000002000LL);
    tw_checkpoint_release(&e.checkpoint);
}
