/*
 * The sink interface: what each kind keeps, what it adds to the commit, and
 * a stdout that fails and comes back (written to a stream that refuses
 * writes while told to).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "tokenwatch/sink.h"

typedef struct {
    bool refuse;
    char data[4096];
    size_t len;
} pipe_t;

static ssize_t pipe_write(void *cookie, const char *buf, size_t n)
{
    pipe_t *p = cookie;

    if (p->refuse) {
        errno = ENOSPC;
        return -1;
    }
    if (n > sizeof p->data - p->len)
        n = sizeof p->data - p->len;
    memcpy(p->data + p->len, buf, n);
    p->len += n;
    return (ssize_t)n;
}

static void make_event(tw_event_t *e, const char *json)
{
    memset(e, 0, sizeof *e);
    e->json = bson_strdup(json);
    e->token_json = bson_strdup("{\"_data\": \"82\"}");
    e->op = bson_strdup("insert");
    e->ns = bson_strdup("shop.orders");
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *at = hay; (at = strstr(at, needle)); at += strlen(needle))
        n++;
    return n;
}

Test(sink, none_keeps_nothing_and_adds_nothing)
{
    tw_sink_opts_t o = {TW_SINK_NONE, NULL, NULL, 0};
    tw_sink_t *s = tw_sink_new(&o);
    tw_sink_part_t part;
    tw_event_t e;

    make_event(&e, "{\"a\": 1}");
    tw_sink_put(s, &e);
    cr_expect_null(e.json, "the event was taken");
    cr_expect_eq(tw_sink_held(s), 0);
    cr_expect_not(tw_sink_wants_json(s));
    tw_sink_commit_part(s, &part);
    cr_expect_null(part.stream_key);
    cr_expect(tw_sink_flush(s, NULL));
    cr_expect_str_eq(tw_sink_name(s), "none");
    tw_sink_free(s);
}

Test(sink, redis_hands_its_batch_to_the_commit_until_committed)
{
    tw_sink_opts_t o = {TW_SINK_REDIS, NULL, "tokenwatch:{o}:events", 1000};
    tw_sink_t *s = tw_sink_new(&o);
    tw_sink_part_t part;
    tw_event_t e;

    for (int k = 0; k < 3; k++) {
        make_event(&e, "{\"a\": 1}");
        tw_sink_put(s, &e);
    }
    cr_expect(tw_sink_in_redis(s));
    tw_sink_seal(s);
    tw_sink_commit_part(s, &part);
    cr_expect_str_eq(part.stream_key, "tokenwatch:{o}:events");
    cr_expect_eq(part.stream_maxlen, 1000);
    cr_assert_not_null(part.events);
    cr_expect_eq(part.events->count, 3);
    /* Following goes on while the commit is under way. */
    make_event(&e, "{\"a\": 2}");
    tw_sink_put(s, &e);
    cr_expect_eq(part.events->count, 3, "a new event is not in the sealed batch");
    cr_expect_eq(tw_sink_held(s), 1);
    cr_expect_eq(tw_sink_sealed(s), 3);
    tw_sink_committed(s);
    cr_expect_eq(tw_sink_sealed(s), 0);
    cr_expect_eq(tw_sink_held(s), 1, "the new event waits for the next commit");
    tw_sink_seal(s);
    tw_sink_commit_part(s, &part);
    cr_expect_eq(part.events->count, 1);
    cr_expect_str_eq(part.events->items[0].json, "{\"a\": 2}");
    tw_sink_committed(s);
    cr_expect_eq(tw_sink_held(s) + tw_sink_sealed(s), 0);
    tw_sink_free(s);
}

/* A seal while a sealed batch is still there (a commit that never landed)
 * keeps every event, in order. */
Test(sink, a_second_seal_keeps_the_first_batch_in_front)
{
    tw_sink_opts_t o = {TW_SINK_REDIS, NULL, "tokenwatch:{o}:events", 1000};
    tw_sink_t *s = tw_sink_new(&o);
    tw_sink_part_t part;
    tw_event_t e;

    make_event(&e, "{\"seq\": 1}");
    tw_sink_put(s, &e);
    tw_sink_seal(s);
    make_event(&e, "{\"seq\": 2}");
    tw_sink_put(s, &e);
    tw_sink_seal(s);
    tw_sink_commit_part(s, &part);
    cr_assert_eq(part.events->count, 2);
    cr_expect_str_eq(part.events->items[0].json, "{\"seq\": 1}");
    cr_expect_str_eq(part.events->items[1].json, "{\"seq\": 2}");
    cr_expect_eq(tw_sink_held(s), 0);
    tw_sink_free(s);
}

Test(sink, stdout_writes_at_once_and_again_after_a_failed_write)
{
    pipe_t p;
    cookie_io_functions_t io = {NULL, pipe_write, NULL, NULL};
    FILE *out;
    tw_sink_opts_t o = {TW_SINK_STDOUT, NULL, NULL, 0};
    tw_sink_t *s;
    tw_event_t e;
    tw_error_t err;

    memset(&p, 0, sizeof p);
    out = fopencookie(&p, "w", io);
    cr_assert_not_null(out);
    setvbuf(out, NULL, _IONBF, 0); /* each line reaches the stream at once */
    o.out = out;
    s = tw_sink_new(&o);
    make_event(&e, "{\"seq\": 1}");
    tw_sink_put(s, &e);
    cr_expect_str_eq(p.data, "{\"seq\": 1}\n", "written at once");
    p.refuse = true;
    make_event(&e, "{\"seq\": 2}");
    tw_sink_put(s, &e);
    cr_expect_not(tw_sink_flush(s, &err), "a failed write fails the flush");
    cr_expect(strstr(err.message, "cannot write events to stdout"), "%s", err.message);
    cr_expect(strstr(err.message, strerror(ENOSPC)), "%s", err.message);
    cr_expect_not(tw_sink_flush(s, &err), "and again while it lasts");
    p.refuse = false;
    cr_expect(tw_sink_flush(s, &err), "back: %s", err.message);
    cr_expect_eq(count(p.data, "{\"seq\": 2}\n"), 1, "seq 2 is written: %s", p.data);
    cr_expect_geq(count(p.data, "{\"seq\": 1}\n"), 1, "seq 1 may come twice: %s", p.data);
    tw_sink_seal(s);
    tw_sink_committed(s);
    cr_expect_eq(tw_sink_held(s), 0);
    p.len = 0;
    memset(p.data, 0, sizeof p.data);
    cr_expect(tw_sink_flush(s, &err));
    cr_expect_eq(p.len, 0, "nothing written again once committed");
    tw_sink_free(s);
    fclose(out);
}

/* An insert event, as a server sends it. */
static bson_t *insert_event(void)
{
    return BCON_NEW("_id", "{", "_data", BCON_UTF8("8265A1B2C3000000012B022C0100296E5A1004"), "}",
                    "operationType", BCON_UTF8("insert"), "clusterTime",
                    BCON_TIMESTAMP(1705095875, 1), "fullDocument", "{", "name",
                    BCON_UTF8("Caf\xc3\xa9 \"mug\"\n"), "qty", BCON_INT32(3), "}", "ns", "{",
                    "db", BCON_UTF8("shop"), "coll", BCON_UTF8("orders"), "}");
}

Test(sink, each_kind_gets_the_json_it_uses_as_libbson_writes_it)
{
    static const struct {
        tw_sink_kind_t kind;
        bool json, token_json;
    } cases[] = {
        {TW_SINK_NONE, false, false},
        {TW_SINK_STDOUT, true, false},
        {TW_SINK_REDIS, true, true},
    };
    bson_t *doc = insert_event();
    bson_iter_t it, id;
    char *whole = bson_as_relaxed_extended_json(doc, NULL), *token;
    bson_t token_doc;
    const uint8_t *data;
    uint32_t len;

    cr_assert(bson_iter_init_find(&it, doc, "_id") && bson_iter_recurse(&it, &id));
    bson_iter_document(&it, &len, &data);
    cr_assert(bson_init_static(&token_doc, data, len));
    token = bson_as_relaxed_extended_json(&token_doc, NULL);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_sink_opts_t o = {cases[k].kind, NULL, NULL, 0};
        tw_sink_t *s = tw_sink_new(&o);
        tw_event_t e;
        tw_error_t err;
        bson_t view;

        cr_assert(tw_event_from_bson(doc, tw_sink_event_json(s), &e, &view, &err), "%s",
                  err.message);
        cr_expect(bson_equal(&view, &token_doc), "the token is a view of _id");
        cr_expect_eq(tw_sink_wants_json(s), cases[k].json);
        if (cases[k].json)
            cr_expect_str_eq(e.json, whole);
        else
            cr_expect_null(e.json);
        if (cases[k].token_json)
            cr_expect_str_eq(e.token_json, token);
        else
            cr_expect_null(e.token_json);
        cr_expect_eq(e.token_json_len, strlen(token), "counted even when not made");
        if (cases[k].token_json) { /* the redis sink's stream entry */
            cr_expect_str_eq(e.op, "insert");
            cr_expect_str_eq(e.ns, "shop.orders");
        } else {
            cr_expect_null(e.op, "only the stream entry needs a copy");
            cr_expect_null(e.ns);
        }
        tw_event_release(&e);
        tw_sink_free(s);
    }
    bson_free(whole);
    bson_free(token);
    bson_destroy(doc);
}

/* The stdout sink's batch fills at the same bytes as when every event's
 * token JSON was made. */
Test(sink, batch_bytes_count_the_token_json_made_or_not)
{
    bson_t *doc = insert_event();
    char *whole = bson_as_relaxed_extended_json(doc, NULL);
    tw_event_batch_t batch = {NULL, 0, 0, 0};
    tw_event_t e;
    bson_t view;

    cr_assert(tw_event_from_bson(doc, TW_EVENT_JSON, &e, &view, NULL));
    tw_event_batch_push(&batch, &e);
    cr_expect_eq(batch.bytes, strlen(whole) + strlen("{ \"_data\" : "
                                                     "\"8265A1B2C3000000012B022C0100296E5A1004\" }"));
    tw_event_batch_release(&batch);
    bson_free(whole);
    bson_destroy(doc);
}

Test(sink, an_id_libbson_cannot_write_fails_the_event_for_every_kind)
{
    bson_t *doc = BCON_NEW("_id", "{", "_data", BCON_UTF8("\xff"), "}", "operationType",
                           BCON_UTF8("insert"));
    static const unsigned json[] = {0, TW_EVENT_JSON, TW_EVENT_JSON | TW_EVENT_TOKEN_JSON};

    for (size_t k = 0; k < sizeof json / sizeof json[0]; k++) {
        tw_event_t e;
        tw_error_t err;
        bson_t view;

        cr_expect_not(tw_event_from_bson(doc, json[k], &e, &view, &err), "json %u", json[k]);
        cr_expect(strstr(err.message, "cannot be written as JSON"), "%s", err.message);
    }
    bson_destroy(doc);
}

/* The one-pass reader takes what bson_iter_find and find_descendant took:
 * the first of each field, the time from clusterTime, else the token, else
 * none (the caller's fallback), and ns as db.coll, db or "". */
Test(sink, an_event_is_read_in_one_pass_as_the_finders_read_it)
{
    static const struct {
        const char *json;
        tw_time_source_t source;
        uint32_t t, i;
        const char *op, *ns;
        bool invalidate;
    } cases[] = {
        {"{\"_id\": {\"_data\": \"8265A1B2C3000000012B022C0100296E5A1004\"}, "
         "\"operationType\": \"insert\", \"clusterTime\": {\"$timestamp\": {\"t\": 7, \"i\": 3}}, "
         "\"ns\": {\"db\": \"shop\", \"coll\": \"orders\"}}",
         TW_TIME_EVENT, 7, 3, "insert", "shop.orders", false},
        {"{\"_id\": {\"_data\": \"8265A1B2C3000000012B022C0100296E5A1004\"}, "
         "\"operationType\": \"invalidate\"}",
         TW_TIME_TOKEN, 0x65A1B2C3u, 1, "invalidate", "", true},
        {"{\"_id\": {\"_data\": \"opaque\"}, \"operationType\": \"dropDatabase\", "
         "\"ns\": {\"db\": \"shop\"}}",
         TW_TIME_UNKNOWN, 0, 0, "dropDatabase", "shop", false},
        {"{\"_id\": {\"_data\": \"opaque\"}, \"operationType\": \"invalidatex\", "
         "\"ns\": {\"coll\": \"c\", \"db\": \"d\", \"db\": \"second\"}, "
         "\"operationType\": \"invalidate\", \"clusterTime\": 5, "
         "\"clusterTime\": {\"$timestamp\": {\"t\": 9, \"i\": 9}}}",
         TW_TIME_UNKNOWN, 0, 0, "invalidatex", "d.c", false},
        {"{\"operationType\": \"insert\", \"_id\": {\"_data\": \"82\"}, \"ns\": 3}",
         TW_TIME_UNKNOWN, 0, 0, "insert", "", false},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bson_error_t berr;
        bson_t *doc = bson_new_from_json((const uint8_t *)cases[k].json, -1, &berr);
        tw_event_t e;
        bson_t view;
        tw_error_t err;

        cr_assert(doc, "case %zu: %s", k, berr.message);
        cr_assert(tw_event_from_bson(doc, TW_EVENT_FIELDS, &e, &view, &err), "case %zu: %s", k,
                  err.message);
        cr_expect_eq(e.time_source, cases[k].source, "case %zu", k);
        if (cases[k].source != TW_TIME_UNKNOWN) {
            cr_expect_eq(e.cluster_time.t, cases[k].t, "case %zu", k);
            cr_expect_eq(e.cluster_time.i, cases[k].i, "case %zu", k);
        }
        cr_expect_str_eq(e.op, cases[k].op, "case %zu", k);
        cr_expect_str_eq(e.ns, cases[k].ns, "case %zu", k);
        cr_expect_eq(e.invalidate, cases[k].invalidate, "case %zu", k);
        tw_event_release(&e);
        bson_destroy(doc);
    }
}

/* A token that is not plain hex is measured by the JSON writer: its length
 * is what libbson would write, escapes included. */
Test(sink, a_token_that_is_not_plain_hex_is_measured_by_the_writer)
{
    static const char *const tokens[] = {
        "{\"_data\": \"82ab\"}", "{\"_data\": \"a\\\"b\"}", "{\"_data\": \"\"}",
        "{\"_data\": \"82\", \"x\": 1}", "{\"_typeBits\": 1, \"_data\": \"82\"}",
        "{\"_data\": {\"$binary\": {\"base64\": \"gmWh\", \"subType\": \"00\"}}}",
    };

    for (size_t k = 0; k < sizeof tokens / sizeof tokens[0]; k++) {
        bson_error_t berr;
        bson_t *token = bson_new_from_json((const uint8_t *)tokens[k], -1, &berr), *doc;
        char *expected;
        tw_event_t e;
        bson_t view;

        cr_assert(token, "case %zu: %s", k, berr.message);
        doc = BCON_NEW("operationType", BCON_UTF8("insert"));
        BSON_APPEND_DOCUMENT(doc, "_id", token);
        expected = bson_as_relaxed_extended_json(token, NULL);
        cr_assert(tw_event_from_bson(doc, 0, &e, &view, NULL), "case %zu", k);
        cr_expect_eq(e.token_json_len, strlen(expected), "case %zu: %s", k, expected);
        bson_free(expected);
        tw_event_release(&e);
        bson_destroy(token);
        bson_destroy(doc);
    }
}
