#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/settings.h"
#include "tokenwatch/split.h"

/* Resume tokens: one per fragment, as the server gives each its own. */
#define T1 "{\"_data\": \"8265536F00000000012B022C0100296E5A1004\"}"
#define T2 "{\"_data\": \"8265536F00000000022B022C0100296E5A1004\"}"
#define T3 "{\"_data\": \"8265536F00000000032B022C0100296E5A1004\"}"
#define T4 "{\"_data\": \"8265536F00000000042B022C0100296E5A1004\"}"
#define W1 "{\"_data\": \"8265536E00000000012B022C0100296E5A1004\"}"
#define W2 "{\"_data\": \"8265537000000000012B022C0100296E5A1004\"}"

/* Distinct enough to find in a message: the tokens' differing digits. */
#define N1 "00000000012B"
#define N2 "00000000022B"
#define N3 "00000000032B"
#define NW1 "8265536E"

#define FRAG(token, k, n, fields)                                              \
    "{\"_id\": " token ", \"splitEvent\": {\"fragment\": " #k ", \"of\": " #n   \
    "}" fields "}"

#define WHOLE1 "{\"_id\": " W1 ", \"operationType\": \"insert\", \"n\": 1}"
#define WHOLE2 "{\"_id\": " W2 ", \"operationType\": \"delete\", \"n\": 2}"

#define SAME "=" /* want: the document pushed, passed through as it is */

typedef struct {
    const char *doc;      /* JSON */
    const char *want;     /* the whole event (JSON), SAME, or NULL: none yet */
    int code;             /* a tw_split_code_t when the push must fail, else 0 */
    const char *names[2]; /* what the error must name (token digits) */
} step_t;

typedef struct {
    const char *name;
    size_t max_bytes; /* 0: TW_SPLIT_MAX_BYTES_DEFAULT */
    step_t steps[6];  /* up to the first without doc */
} sequence_case_t;

static const sequence_case_t sequences[] = {
    {"whole events pass through", 0,
     {{WHOLE1, SAME, 0, {NULL}}, {WHOLE2, SAME, 0, {NULL}}}},
    {"two fragments", 0,
     {{FRAG(T1, 1, 2, ", \"operationType\": \"update\", \"fullDocument\": {\"a\": 1}"),
       NULL, 0, {NULL}},
      {FRAG(T2, 2, 2, ", \"fullDocumentBeforeChange\": {\"a\": 0}"),
       "{\"_id\": " T2 ", \"operationType\": \"update\", \"fullDocument\": {\"a\": "
       "1}, \"fullDocumentBeforeChange\": {\"a\": 0}}",
       0, {NULL}}}},
    {"three fragments between whole events", 0,
     {{WHOLE1, SAME, 0, {NULL}},
      {FRAG(T1, 1, 3, ", \"operationType\": \"update\", \"ns\": {\"db\": \"shop\"}"),
       NULL, 0, {NULL}},
      {FRAG(T2, 2, 3, ", \"fullDocument\": {\"a\": 1}"), NULL, 0, {NULL}},
      {FRAG(T3, 3, 3, ", \"fullDocumentBeforeChange\": {\"a\": 0}, \"z\": 9"),
       "{\"_id\": " T3 ", \"operationType\": \"update\", \"ns\": {\"db\": "
       "\"shop\"}, \"fullDocument\": {\"a\": 1}, \"fullDocumentBeforeChange\": "
       "{\"a\": 0}, \"z\": 9}",
       0, {NULL}},
      {WHOLE2, SAME, 0, {NULL}}}},
    {"one fragment of one", 0,
     {{FRAG(T1, 1, 1, ", \"x\": 1"), "{\"_id\": " T1 ", \"x\": 1}", 0, {NULL}}}},
    {"a fragment with only its _id adds nothing", 0,
     {{FRAG(T1, 1, 2, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T2, 2, 2, ""), "{\"_id\": " T2 ", \"x\": 1}", 0, {NULL}}}},
    {"fragment 2 first", 0,
     {{FRAG(T2, 2, 2, ", \"x\": 1"), NULL, TW_SPLIT_ERR_ORDER, {N2, "fragment 1"}}}},
    {"fragment 3 after fragment 1", 0,
     {{FRAG(T1, 1, 3, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T3, 3, 3, ", \"y\": 1"), NULL, TW_SPLIT_ERR_ORDER, {N3, N1}}}},
    {"fragment 2 twice", 0,
     {{FRAG(T1, 1, 3, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T2, 2, 3, ", \"y\": 1"), NULL, 0, {NULL}},
      {FRAG(T2, 2, 3, ", \"y\": 1"), NULL, TW_SPLIT_ERR_ORDER, {N2, "fragment 3"}}}},
    {"of changes mid-event", 0,
     {{FRAG(T1, 1, 3, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T2, 2, 4, ", \"y\": 1"), NULL, TW_SPLIT_ERR_COUNT, {N2, N1}}}},
    {"fragment 1 while half built, then a clean start", 0,
     {{FRAG(T1, 1, 2, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T3, 1, 2, ", \"x\": 1"), NULL, TW_SPLIT_ERR_RESTARTED, {N3, N1}},
      {FRAG(T3, 1, 2, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T4, 2, 2, ", \"y\": 2"), "{\"_id\": " T4 ", \"x\": 1, \"y\": 2}", 0,
       {NULL}}}},
    {"a whole event while half built", 0,
     {{FRAG(T1, 1, 2, ", \"x\": 1"), NULL, 0, {NULL}},
      {WHOLE1, NULL, TW_SPLIT_ERR_INTERRUPTED, {NW1, N1}},
      {WHOLE2, SAME, 0, {NULL}}}},
    {"one fragment over the cap", 40,
     {{FRAG(T1, 1, 2, ", \"x\": 1"), NULL, TW_SPLIT_ERR_TOO_LARGE, {N1, "40 bytes"}}}},
    {"fragments over the cap", 150,
     {{FRAG(T1, 1, 2, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T2, 2, 2, ", \"y\": 1"), NULL, TW_SPLIT_ERR_TOO_LARGE, {N2, "150 bytes"}},
      {WHOLE1, SAME, 0, {NULL}}}},
    {"a whole event is not held to the cap", 10, {{WHOLE1, SAME, 0, {NULL}}}},
    {"splitEvent not a document", 0,
     {{"{\"_id\": " T1 ", \"splitEvent\": \"1/2\"}", NULL, TW_SPLIT_ERR_MALFORMED,
       {N1, "splitEvent"}}}},
    {"fragment 0", 0,
     {{FRAG(T1, 0, 2, ""), NULL, TW_SPLIT_ERR_MALFORMED, {N1, "splitEvent"}}}},
    {"fragment past of", 0,
     {{FRAG(T1, 3, 2, ""), NULL, TW_SPLIT_ERR_MALFORMED, {N1, "splitEvent"}}}},
    {"of as text", 0,
     {{"{\"_id\": " T1 ", \"splitEvent\": {\"fragment\": 1, \"of\": \"2\"}}", NULL,
       TW_SPLIT_ERR_MALFORMED, {N1, "splitEvent"}}}},
    {"a fragment without _id", 0,
     {{"{\"splitEvent\": {\"fragment\": 1, \"of\": 2}}", NULL, TW_SPLIT_ERR_MALFORMED,
       {"no _id", "resume token"}}}},
    {"a malformed fragment mid-event drops it", 0,
     {{FRAG(T1, 1, 2, ", \"x\": 1"), NULL, 0, {NULL}},
      {FRAG(T2, 2, 0, ""), NULL, TW_SPLIT_ERR_MALFORMED, {N2, "splitEvent"}},
      {FRAG(T2, 2, 2, ""), NULL, TW_SPLIT_ERR_ORDER, {N2, "fragment 1"}}}},
};

static bson_t *from_json(const char *json)
{
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *)json, -1, &berr);

    cr_assert(doc, "bad test JSON %s: %s", json, berr.message);
    return doc;
}

static void run_step(tw_split_t *s, const char *name, size_t k, const step_t *st)
{
    bson_t *doc = from_json(st->doc);
    const bson_t *event = (const bson_t *)1;
    tw_error_t err;
    bool ok;

    tw_error_clear(&err);
    ok = tw_split_push(s, doc, &event, &err);
    cr_expect_eq(ok, st->code == 0, "%s, step %zu: ok=%d (%s)", name, k, ok,
                 err.message);
    if (!ok) {
        cr_expect_eq(err.code, st->code, "%s, step %zu: code %d: %s", name, k,
                     err.code, err.message);
        cr_expect_eq(err.domain, TW_ERR_MONGO, "%s, step %zu: domain", name, k);
        cr_expect_null(event, "%s, step %zu: an event on failure", name, k);
        for (size_t n = 0; n < 2 && st->names[n]; n++)
            cr_expect(strstr(err.message, st->names[n]) != NULL,
                      "%s, step %zu: '%s' does not name %s", name, k, err.message,
                      st->names[n]);
    } else if (!st->want) {
        cr_expect_null(event, "%s, step %zu: an event too early", name, k);
    } else if (strcmp(st->want, SAME) == 0) {
        cr_expect_eq(event, doc, "%s, step %zu: not passed through", name, k);
    } else {
        bson_t *want = from_json(st->want);
        char *got = event ? bson_as_relaxed_extended_json(event, NULL) : NULL;

        cr_expect(event && bson_equal(event, want), "%s, step %zu: got %s", name,
                  k, got ? got : "no event");
        cr_expect_not(event && tw_split_is_fragment(event));
        bson_free(got);
        bson_destroy(want);
    }
    /* Half built exactly when a fragment was taken and the event is not out. */
    cr_expect_eq(tw_split_pending(s), ok && !st->want, "%s, step %zu: pending",
                 name, k);
    bson_destroy(doc);
}

Test(split, sequences_table)
{
    for (size_t c = 0; c < sizeof sequences / sizeof sequences[0]; c++) {
        const sequence_case_t *sc = &sequences[c];
        tw_split_t *s = tw_split_new(sc->max_bytes ? sc->max_bytes
                                                   : TW_SPLIT_MAX_BYTES_DEFAULT);

        for (size_t k = 0; k < 6 && sc->steps[k].doc; k++)
            run_step(s, sc->name, k, &sc->steps[k]);
        tw_split_free(s);
    }
}

Test(split, the_cap_counts_the_fragments_bytes)
{
    bson_t *f1 = from_json(FRAG(T1, 1, 2, ", \"x\": 1"));
    bson_t *f2 = from_json(FRAG(T2, 2, 2, ", \"y\": 1"));
    size_t total = f1->len + f2->len;
    const bson_t *event;
    tw_error_t err;
    tw_split_t *s = tw_split_new(total);

    cr_assert(tw_split_push(s, f1, &event, &err), "%s", err.message);
    cr_assert(tw_split_push(s, f2, &event, &err), "exactly the cap: %s", err.message);
    cr_expect(event && event->len < total);
    tw_split_free(s);

    s = tw_split_new(total - 1);
    cr_assert(tw_split_push(s, f1, &event, &err), "%s", err.message);
    cr_expect_not(tw_split_push(s, f2, &event, &err), "one byte over the cap");
    cr_expect_eq(err.code, TW_SPLIT_ERR_TOO_LARGE);
    tw_split_free(s);
    bson_destroy(f1);
    bson_destroy(f2);
}

/* Two fragments of 9 MB make an event over 16 MB, held in memory. */
Test(split, reassembles_an_event_over_16_mb)
{
    size_t half = 9u << 20;
    char *big = malloc(half + 1);
    bson_t *f1 = from_json(FRAG(T1, 1, 2, ", \"operationType\": \"update\""));
    bson_t *f2 = from_json(FRAG(T2, 2, 2, ""));
    const bson_t *event;
    tw_error_t err;
    bson_iter_t it;
    tw_split_t *s = tw_split_new(TW_SPLIT_MAX_BYTES_DEFAULT);

    cr_assert(big);
    memset(big, 'a', half);
    big[half] = '\0';
    cr_assert(BSON_APPEND_UTF8(f1, "fullDocument", big));
    cr_assert(BSON_APPEND_UTF8(f2, "fullDocumentBeforeChange", big));
    cr_assert(tw_split_push(s, f1, &event, &err), "%s", err.message);
    cr_assert(tw_split_push(s, f2, &event, &err), "%s", err.message);
    cr_assert(event);
    cr_expect_gt(event->len, 16u << 20);
    cr_expect(bson_validate(event, BSON_VALIDATE_NONE, NULL));
    cr_expect(bson_iter_init(&it, event) && bson_iter_next(&it) &&
              strcmp(bson_iter_key(&it), "_id") == 0);
    cr_expect(bson_has_field(event, "fullDocument") &&
              bson_has_field(event, "fullDocumentBeforeChange") &&
              !bson_has_field(event, "splitEvent"));
    tw_split_free(s);
    bson_destroy(f1);
    bson_destroy(f2);
    free(big);
}

Test(split, reset_drops_a_half_built_event)
{
    bson_t *f1 = from_json(FRAG(T1, 1, 2, ", \"x\": 1"));
    const bson_t *event;
    tw_split_t *s = tw_split_new(TW_SPLIT_MAX_BYTES_DEFAULT);

    cr_assert(tw_split_push(s, f1, &event, NULL));
    cr_expect(tw_split_pending(s));
    tw_split_reset(s);
    cr_expect_not(tw_split_pending(s));
    /* The reopened stream sends fragment 1 again. */
    cr_expect(tw_split_push(s, f1, &event, NULL));
    cr_expect(tw_split_pending(s));
    tw_split_free(s);
    tw_split_free(NULL);
    bson_destroy(f1);
}

typedef struct {
    const char *doc;
    bool fragment;
} fragment_case_t;

static const fragment_case_t fragment_cases[] = {
    {WHOLE1, false},
    {FRAG(T1, 1, 2, ""), true},
    {"{\"_id\": " T1 ", \"splitEvent\": \"x\"}", true}, /* malformed, refused on push */
    {"{\"_id\": " T1 ", \"fullDocument\": {\"splitEvent\": 1}}", false},
    {"{}", false},
};

Test(split, tells_fragments_from_whole_events)
{
    for (size_t k = 0; k < sizeof fragment_cases / sizeof fragment_cases[0]; k++) {
        bson_t *doc = from_json(fragment_cases[k].doc);

        cr_expect_eq(tw_split_is_fragment(doc), fragment_cases[k].fragment,
                     "case %zu: %s", k, fragment_cases[k].doc);
        bson_destroy(doc);
    }
}

#define STAGE "{\"$changeStreamSplitLargeEvent\": {}}"
#define MATCH "{\"$match\": {}}"
#define UNCHANGED "=" /* want: the very text given */

typedef struct {
    const char *pipeline;
    bool has_stage;
    const char *want;   /* tw_split_pipeline_append's result, UNCHANGED, or NULL: refused */
    const char *reason; /* what the refusal must say */
} pipeline_case_t;

static const pipeline_case_t pipeline_cases[] = {
    {"[]", false, "[" STAGE "]", NULL},
    {"  [ ]\n", false, "[" STAGE "]", NULL},
    {NULL, false, "[" STAGE "]", NULL},
    {"[" MATCH "]", false, "[" MATCH ", " STAGE "]", NULL},
    {"[ " MATCH " ]  ", false, "[ " MATCH ", " STAGE "]", NULL},
    {"[{\"$match\": {\"n\": {\"$numberLong\": \"5\"}}}, {\"$project\": {\"a\": 1}}]",
     false,
     "[{\"$match\": {\"n\": {\"$numberLong\": \"5\"}}}, {\"$project\": {\"a\": 1}}, "
     STAGE "]",
     NULL},
    {"[" STAGE "]", true, UNCHANGED, NULL},
    {"[" MATCH ",\n  " STAGE "]", true, UNCHANGED, NULL},
    {"[" STAGE ", " MATCH "]", false, NULL, "stage 0"},
    {"[" MATCH ", " STAGE ", " MATCH "]", false, NULL, "stage 1"},
    {"[" STAGE ", " STAGE "]", true, NULL, "only once"},
    {MATCH, false, NULL, "array"},
    {"[1]", false, NULL, "stage 0"},
    {"[], \"x\": 1", false, NULL, "array"},
    {"[]}, {\"x\": 1", false, NULL, ""},
    {"[{", false, NULL, "JSON"},
};

Test(split, pipeline_table)
{
    for (size_t k = 0; k < sizeof pipeline_cases / sizeof pipeline_cases[0]; k++) {
        const pipeline_case_t *c = &pipeline_cases[k];
        tw_error_t err;
        char *out;

        tw_error_clear(&err);
        cr_expect_eq(tw_split_pipeline_has_stage(c->pipeline), c->has_stage,
                     "case %zu (%s): has_stage", k, c->pipeline);
        out = tw_split_pipeline_append(c->pipeline, &err);
        if (!c->want) {
            cr_expect_null(out, "case %zu (%s): accepted as %s", k, c->pipeline, out);
            cr_expect(strstr(err.message, c->reason) != NULL,
                      "case %zu: '%s' lacks '%s'", k, err.message, c->reason);
            cr_expect_eq(err.domain, TW_ERR_USAGE, "case %zu", k);
        } else if (strcmp(c->want, UNCHANGED) == 0) {
            cr_expect(out && strcmp(out, c->pipeline) == 0, "case %zu: %s", k, out);
        } else {
            cr_expect(out && strcmp(out, c->want) == 0, "case %zu: %s, not %s", k, out,
                      c->want);
        }
        /* Whatever comes back is a pipeline that ends with the stage. */
        if (out)
            cr_expect(tw_split_pipeline_has_stage(out), "case %zu: %s", k, out);
        bson_free(out);
    }
}

/* --split-large-events: off by default; the flag alone turns it on. */
typedef struct {
    const char *flag; /* or NULL */
    const char *env;  /* "K=V" or NULL */
    bool ok;
    bool on;
} setting_case_t;

static const setting_case_t setting_cases[] = {
    {NULL, NULL, true, false},
    {"--split-large-events", NULL, true, true},
    {"--split-large-events=false", "TOKENWATCH_SPLIT_LARGE_EVENTS=true", true, false},
    {NULL, "TOKENWATCH_SPLIT_LARGE_EVENTS=true", true, true},
    {NULL, "TOKENWATCH_SPLIT_LARGE_EVENTS=0", true, false},
    {NULL, "TOKENWATCH_SPLIT_LARGE_EVENTS=yes", false, false},
    {"--split-large-events=on", NULL, false, false},
};

Test(split, the_setting)
{
    for (size_t k = 0; k < sizeof setting_cases / sizeof setting_cases[0]; k++) {
        const setting_case_t *c = &setting_cases[k];
        const char *argv[] = {c->flag, NULL};
        const char *envp[] = {c->env, NULL};
        tw_settings_t s;
        tw_error_t err;
        bool ok;

        memset(&s, 0, sizeof s);
        tw_error_clear(&err);
        ok = tw_settings_load(&s, c->flag ? 1 : 0, argv, envp, &err);
        cr_expect_eq(ok, c->ok, "case %zu: %s", k, err.message);
        if (ok)
            cr_expect_eq(s.split_large_events, c->on, "case %zu", k);
        else
            cr_expect(strstr(err.message, "SPLIT_LARGE_EVENTS") ||
                          strstr(err.message, "--split-large-events"),
                      "case %zu: '%s' does not name the setting", k, err.message);
        tw_settings_release(&s);
    }
}
