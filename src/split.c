#include "tokenwatch/split.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"

/* A token as the messages quote it: relaxed JSON, cut short if long. */
#define TOKEN_TEXT_MAX 200

struct tw_split {
    size_t max_bytes;
    bool building;
    int64_t next;  /* the fragment expected next (1 when nothing is begun) */
    int64_t of;    /* the fragment count of the event being built */
    size_t bytes;  /* the fragments' BSON sizes so far */
    bson_t body;   /* their fields so far, without _id and splitEvent */
    bson_t event;  /* the last whole event returned (empty otherwise) */
    char last_token[TOKEN_TEXT_MAX]; /* the last fragment taken */
};

/* What a fragment says about itself. */
typedef struct {
    int64_t k, n;
    char token[TOKEN_TEXT_MAX];
} fragment_t;

static void token_text(const bson_t *doc, char out[TOKEN_TEXT_MAX])
{
    bson_iter_t it;
    uint32_t len;
    const uint8_t *data;
    bson_t token;
    char *json = NULL;

    if (!bson_iter_init_find(&it, doc, "_id")) {
        snprintf(out, TOKEN_TEXT_MAX, "(no _id)");
        return;
    }
    if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
        snprintf(out, TOKEN_TEXT_MAX, "(an _id that is not a token document)");
        return;
    }
    bson_iter_document(&it, &len, &data);
    if (bson_init_static(&token, data, len))
        json = bson_as_relaxed_extended_json(&token, NULL);
    if (!json) {
        snprintf(out, TOKEN_TEXT_MAX, "(an unreadable _id)");
        return;
    }
    if (strlen(json) >= TOKEN_TEXT_MAX)
        snprintf(out, TOKEN_TEXT_MAX, "%.*s...", TOKEN_TEXT_MAX - 4, json);
    else
        snprintf(out, TOKEN_TEXT_MAX, "%s", json);
    bson_free(json);
}

static bool read_count(const bson_iter_t *split, const char *key, int64_t *out)
{
    bson_iter_t it;

    if (!bson_iter_recurse(split, &it) || !bson_iter_find(&it, key) ||
        !(BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)))
        return false;
    *out = bson_iter_as_int64(&it);
    return true;
}

static bool read_fragment(const bson_t *doc, fragment_t *f, tw_error_t *err)
{
    bson_iter_t it;

    token_text(doc, f->token);
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_DOCUMENT(&it)) {
        tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_MALFORMED,
                     "a fragment of a split event has %s: without its resume "
                     "token it has no position",
                     f->token);
        return false;
    }
    if (!bson_iter_init_find(&it, doc, "splitEvent") ||
        !BSON_ITER_HOLDS_DOCUMENT(&it) || !read_count(&it, "fragment", &f->k) ||
        !read_count(&it, "of", &f->n) || f->n < 1 || f->n > INT32_MAX ||
        f->k < 1 || f->k > f->n) {
        tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_MALFORMED,
                     "the document at token %s has a splitEvent that is not "
                     "{fragment: k, of: n} with 1 <= k <= n",
                     f->token);
        return false;
    }
    return true;
}

/* Whether fragment f is the one expected next. */
static bool check_sequence(const tw_split_t *s, const fragment_t *f,
                           tw_error_t *err)
{
    if (!s->building && f->k != 1) {
        tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_ORDER,
                     "fragment %lld of %lld at token %s arrived with no split "
                     "event begun: fragment 1 was expected",
                     (long long)f->k, (long long)f->n, f->token);
        return false;
    }
    if (!s->building)
        return true;
    if (f->k == 1) {
        tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_RESTARTED,
                     "fragment 1 of %lld at token %s arrived while fragment "
                     "%lld of %lld of another event was expected after token "
                     "%s: the stream started over inside an event",
                     (long long)f->n, f->token, (long long)s->next,
                     (long long)s->of, s->last_token);
        return false;
    }
    if (f->n != s->of) {
        tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_COUNT,
                     "fragment %lld at token %s says the event has %lld "
                     "fragments, but its earlier fragments (the last at token "
                     "%s) said %lld",
                     (long long)f->k, f->token, (long long)f->n, s->last_token,
                     (long long)s->of);
        return false;
    }
    if (f->k != s->next) {
        tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_ORDER,
                     "fragment %lld of %lld at token %s arrived out of order: "
                     "fragment %lld was expected after token %s",
                     (long long)f->k, (long long)f->n, f->token,
                     (long long)s->next, s->last_token);
        return false;
    }
    return true;
}

/* Appends doc's fields but _id and splitEvent, in order. */
static bool append_fields(bson_t *dst, const bson_t *doc)
{
    bson_iter_t it;

    if (!bson_iter_init(&it, doc))
        return false;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);

        if (strcmp(key, "_id") == 0 || strcmp(key, "splitEvent") == 0)
            continue;
        if (!bson_append_iter(dst, NULL, -1, &it))
            return false;
    }
    return true;
}

/* The whole event: the last fragment's _id, the fields so far, its fields. */
static bool finish(tw_split_t *s, const bson_t *last)
{
    bson_iter_t id;
    bool ok;

    bson_destroy(&s->event);
    bson_init(&s->event);
    ok = bson_iter_init_find(&id, last, "_id") &&
         bson_append_iter(&s->event, "_id", 3, &id) &&
         bson_concat(&s->event, &s->body) && append_fields(&s->event, last);
    /* The body may be large: give its memory back now. */
    bson_destroy(&s->body);
    bson_init(&s->body);
    s->building = false;
    s->next = 1;
    s->of = 0;
    s->bytes = 0;
    return ok;
}

tw_split_t *tw_split_new(size_t max_bytes)
{
    tw_split_t *s = tw_calloc(1, sizeof *s);

    s->max_bytes = max_bytes < BSON_MAX_SIZE ? max_bytes : BSON_MAX_SIZE;
    s->next = 1;
    bson_init(&s->body);
    bson_init(&s->event);
    return s;
}

void tw_split_free(tw_split_t *s)
{
    if (!s)
        return;
    bson_destroy(&s->body);
    bson_destroy(&s->event);
    free(s);
}

void tw_split_reset(tw_split_t *s)
{
    bson_destroy(&s->body);
    bson_init(&s->body);
    bson_destroy(&s->event);
    bson_init(&s->event);
    s->building = false;
    s->next = 1;
    s->of = 0;
    s->bytes = 0;
    s->last_token[0] = '\0';
}

bool tw_split_pending(const tw_split_t *s)
{
    return s->building;
}

bool tw_split_is_fragment(const bson_t *doc)
{
    return bson_has_field(doc, "splitEvent");
}

bool tw_split_push(tw_split_t *s, const bson_t *doc, const bson_t **event,
                   tw_error_t *err)
{
    fragment_t f;

    *event = NULL;
    bson_destroy(&s->event);
    bson_init(&s->event);
    if (!tw_split_is_fragment(doc)) {
        if (!s->building) {
            *event = doc;
            return true;
        }
        token_text(doc, f.token);
        tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_INTERRUPTED,
                     "a whole event at token %s arrived while fragment %lld of "
                     "%lld was expected after token %s",
                     f.token, (long long)s->next, (long long)s->of, s->last_token);
        goto out_drop;
    }
    if (!read_fragment(doc, &f, err) || !check_sequence(s, &f, err))
        goto out_drop;
    if (doc->len > s->max_bytes - s->bytes)
        goto out_too_large;
    if (!s->building) {
        s->building = true;
        s->of = f.n;
    }
    s->bytes += doc->len;
    s->next = f.k + 1;
    memcpy(s->last_token, f.token, sizeof f.token);
    if (f.k < f.n) {
        if (!append_fields(&s->body, doc))
            goto out_too_large;
        return true;
    }
    if (!finish(s, doc))
        goto out_too_large;
    *event = &s->event;
    return true;

out_too_large:
    tw_error_set(err, TW_ERR_MONGO, TW_SPLIT_ERR_TOO_LARGE,
                 "fragment %lld of %lld at token %s takes the split event past "
                 "%zu bytes, the most tokenwatch holds for one event",
                 (long long)f.k, (long long)f.n, f.token, s->max_bytes);
out_drop:
    tw_split_reset(s);
    return false;
}

/* Whether a pipeline element is {"$changeStreamSplitLargeEvent": ...}. */
static bool is_split_stage(const bson_iter_t *stage)
{
    uint32_t len;
    const uint8_t *data;
    bson_t doc;

    if (!BSON_ITER_HOLDS_DOCUMENT(stage))
        return false;
    bson_iter_document(stage, &len, &data);
    return bson_init_static(&doc, data, len) && bson_count_keys(&doc) == 1 &&
           bson_has_field(&doc, TW_SPLIT_STAGE);
}

typedef struct {
    uint32_t stages;    /* how many */
    uint32_t splits;    /* how many of them are the split stage */
    uint32_t first_at;  /* the first split stage's index */
    bool last_is_split; /* the last stage is the split stage */
} pipeline_scan_t;

/* Reads a pipeline: a JSON array of stage documents (NULL: []). */
static bool scan_pipeline(const char *text, pipeline_scan_t *scan, tw_error_t *err)
{
    bson_t wrapped;
    bson_error_t berr;
    bson_iter_t it, stages;
    char *json = bson_strdup_printf("{\"pipeline\": %s}", text ? text : "[]");
    bool ok = false;

    memset(scan, 0, sizeof *scan);
    if (!bson_init_from_json(&wrapped, json, -1, &berr)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "the pipeline is not valid JSON (%s)",
                     berr.message);
        goto out_free_json;
    }
    if (bson_count_keys(&wrapped) != 1 ||
        !bson_iter_init_find(&it, &wrapped, "pipeline") ||
        !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &stages)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "the pipeline must be a JSON array of stages");
        goto out_destroy;
    }
    while (bson_iter_next(&stages)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&stages)) {
            tw_error_set(err, TW_ERR_USAGE, 0, "pipeline stage %u is not an object",
                         scan->stages);
            goto out_destroy;
        }
        scan->last_is_split = is_split_stage(&stages);
        if (scan->last_is_split && scan->splits++ == 0)
            scan->first_at = scan->stages;
        scan->stages++;
    }
    ok = true;
out_destroy:
    bson_destroy(&wrapped);
out_free_json:
    bson_free(json);
    return ok;
}

bool tw_split_pipeline_has_stage(const char *pipeline)
{
    pipeline_scan_t scan;

    return scan_pipeline(pipeline, &scan, NULL) && scan.last_is_split;
}

/* The text with the stage added before its closing bracket (bson_free). */
static char *append_stage_text(const char *text, uint32_t stages)
{
    size_t len = strlen(text);

    if (stages == 0)
        return bson_strdup("[{\"" TW_SPLIT_STAGE "\": {}}]");
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    if (len == 0 || text[len - 1] != ']')
        return NULL;
    len--;
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    return bson_strdup_printf("%.*s, {\"%s\": {}}]", (int)len, text, TW_SPLIT_STAGE);
}

char *tw_split_pipeline_append(const char *pipeline, tw_error_t *err)
{
    const char *text = pipeline ? pipeline : "[]";
    pipeline_scan_t scan, after;
    char *out;

    if (!scan_pipeline(text, &scan, err))
        return NULL;
    if (scan.splits > 1 || (scan.splits == 1 && !scan.last_is_split)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "the pipeline has %s at stage %u (counting from 0) of %u; "
                     "the server takes it only once, as the last stage: remove "
                     "it from --pipeline and let --split-large-events add it",
                     TW_SPLIT_STAGE, scan.first_at, scan.stages);
        return NULL;
    }
    if (scan.last_is_split)
        return bson_strdup(text);
    out = append_stage_text(text, scan.stages);
    /* What was built must read back as the same stages and the stage. */
    if (!out || !scan_pipeline(out, &after, NULL) ||
        after.stages != scan.stages + 1 || !after.last_is_split) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "cannot append %s to the pipeline: it does not end with ']'",
                     TW_SPLIT_STAGE);
        bson_free(out);
        return NULL;
    }
    return out;
}
