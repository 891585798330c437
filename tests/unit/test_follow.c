#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/follow.h"

typedef struct {
    uint32_t domain;
    uint32_t code;
    const char *reply_json;
    tw_failure_t want;
} classify_case_t;

static const classify_case_t classify_cases[] = {
    {MONGOC_ERROR_SERVER, 286, NULL, TW_FAILURE_LOST},
    {MONGOC_ERROR_QUERY, 286, NULL, TW_FAILURE_LOST},
    {MONGOC_ERROR_SERVER, 260, NULL, TW_FAILURE_LOST},
    {MONGOC_ERROR_SERVER, 40576, NULL, TW_FAILURE_LOST},
    /* An open cursor that fell off the oplog (MongoDB); an expired token
     * (Amazon DocumentDB). */
    {MONGOC_ERROR_SERVER, 136, NULL, TW_FAILURE_LOST},
    /* Cosmos DB's expired token; other 72s are bad options. */
    {MONGOC_ERROR_SERVER, 72,
     "{\"errmsg\": \"Expired resume token or cursor, reinitialize the change stream cursor\"}",
     TW_FAILURE_LOST},
    {MONGOC_ERROR_SERVER, 72, "{\"errmsg\": \"bad option\"}", TW_FAILURE_FATAL},
    /* Not found: another collection's token, a changed filter. Its time may
     * still be in the history. */
    {MONGOC_ERROR_SERVER, 280,
     "{\"errmsg\": \"cannot resume stream; the resume token was not found. {_data: ...}\"}",
     TW_FAILURE_NOT_FOUND},
    {MONGOC_ERROR_SERVER, 280, NULL, TW_FAILURE_NOT_FOUND},
    {MONGOC_ERROR_SERVER, 40585, NULL, TW_FAILURE_NOT_FOUND},
    /* The pipeline changed _id: waiting or reopening does not help. */
    {MONGOC_ERROR_SERVER, 280,
     "{\"errmsg\": \"Encountered an event whose _id field, which contains the resume "
     "token, was modified by the pipeline.\"}",
     TW_FAILURE_FATAL},
    {MONGOC_ERROR_SERVER, 10334, NULL, TW_FAILURE_TOO_LARGE},
    {MONGOC_ERROR_SERVER, 40415,
     "{\"errmsg\": \"BSON field '$changeStream.startAfter' is an unknown field.\"}",
     TW_FAILURE_NO_START_AFTER},
    {MONGOC_ERROR_SERVER, 40415,
     "{\"errmsg\": \"BSON field '$changeStream.foo' is an unknown field.\"}",
     TW_FAILURE_FATAL},
    /* Lost even with the resumable label: the code decides. */
    {MONGOC_ERROR_SERVER, 286, "{\"errorLabels\": [\"ResumableChangeStreamError\"]}",
     TW_FAILURE_LOST},
    {MONGOC_ERROR_SERVER, 43, NULL, TW_FAILURE_TRANSIENT},
    {MONGOC_ERROR_SERVER, 10107, NULL, TW_FAILURE_TRANSIENT},
    {MONGOC_ERROR_SERVER, 91, NULL, TW_FAILURE_TRANSIENT},
    {MONGOC_ERROR_SERVER, 12345, "{\"errorLabels\": [\"ResumableChangeStreamError\"]}",
     TW_FAILURE_TRANSIENT},
    {MONGOC_ERROR_SERVER, 13, NULL, TW_FAILURE_FATAL},   /* Unauthorized */
    {MONGOC_ERROR_SERVER, 40324, NULL, TW_FAILURE_FATAL}, /* bad stage */
    {MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET, NULL, TW_FAILURE_TRANSIENT},
    {MONGOC_ERROR_SERVER_SELECTION, MONGOC_ERROR_SERVER_SELECTION_FAILURE, NULL,
     TW_FAILURE_TRANSIENT},
    /* A client-side 286 is not the server's: only servers lose history. */
    {MONGOC_ERROR_STREAM, 286, NULL, TW_FAILURE_TRANSIENT},
    {MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_AUTHENTICATE, NULL, TW_FAILURE_FATAL},
    {MONGOC_ERROR_CURSOR, MONGOC_ERROR_CHANGE_STREAM_NO_RESUME_TOKEN, NULL,
     TW_FAILURE_FATAL},
};

Test(follow, classifies_errors)
{
    for (size_t k = 0; k < sizeof classify_cases / sizeof classify_cases[0]; k++) {
        const classify_case_t *c = &classify_cases[k];
        bson_t reply;
        tw_failure_t got;

        if (c->reply_json)
            cr_assert(bson_init_from_json(&reply, c->reply_json, -1, NULL));
        else
            bson_init(&reply);
        got = tw_follow_classify(c->domain, c->code, &reply);
        cr_expect_eq(got, c->want, "case %zu (domain %u code %u): %s", k,
                     c->domain, c->code, tw_failure_name(got));
        bson_destroy(&reply);
    }
}

Test(follow, scope_names_set_db_coll_and_pipeline)
{
    tw_follow_opts_t coll = {"shop", "orders", "[]", NULL, 1000, false};
    tw_follow_opts_t spaced = {"shop", "orders", "[ ]", NULL, 1000, false};
    tw_follow_opts_t db = {"shop", NULL, "[]", NULL, 1000, false};
    tw_follow_opts_t all = {NULL, NULL, "[]", NULL, 1000, false};
    tw_follow_opts_t filtered = {"shop", "orders",
                                 "[{\"$match\": {\"operationType\": \"insert\"}}]",
                                 NULL, 1000, false};
    char *a = tw_follow_scope_format("rs0", &coll);
    char *b = tw_follow_scope_format("rs0", &spaced);
    char *c = tw_follow_scope_format("rs0", &db);
    char *d = tw_follow_scope_format(NULL, &all);
    char *e = tw_follow_scope_format("rs0", &filtered);

    cr_expect(strncmp(a, "rs=rs0 db=shop coll=orders pipeline=sha256:", 43) == 0, "%s", a);
    cr_expect_eq(strlen(a), 43 + 12, "%s", a);
    cr_expect_str_eq(a, b, "spacing must not change the digest");
    cr_expect(strncmp(c, "rs=rs0 db=shop coll=* ", 22) == 0, "%s", c);
    cr_expect(strncmp(d, "rs=- db=* coll=* ", 17) == 0, "%s", d);
    cr_expect_str_neq(a, e, "another pipeline is another scope");
    bson_free(a);
    bson_free(b);
    bson_free(c);
    bson_free(d);
    bson_free(e);
}

Test(follow, the_split_stage_is_not_part_of_the_scope)
{
    tw_follow_opts_t plain = {"shop", "orders", "[]", NULL, 1000, false};
    tw_follow_opts_t split = {"shop", "orders", "[]", NULL, 1000, true};
    tw_follow_opts_t by_hand = {"shop", "orders",
                                "[{\"$changeStreamSplitLargeEvent\": {}}]", NULL, 1000,
                                false};
    char *a = tw_follow_scope_format("rs0", &plain);
    char *b = tw_follow_scope_format("rs0", &split);
    char *c = tw_follow_scope_format("rs0", &by_hand);

    cr_expect_str_eq(a, b);
    cr_expect_str_eq(a, c);
    bson_free(a);
    bson_free(b);
    bson_free(c);
}
