/*
 * json_bench - CPU time to turn change events into relaxed extended JSON:
 * libbson's bson_as_relaxed_extended_json against tw_json_relaxed, for a
 * realistic insert (about 330 bytes of BSON: _id token, operationType,
 * clusterTime, wallTime, an 8-field fullDocument, ns, documentKey) and a
 * 10 KB one, and for the event's token (_id) alone. Not a test: it prints
 * figures (CPU time of this process, so a busy machine skews them less).
 *
 *   make bench-json            (or: build/bench/json_bench [N_SMALL] [N_LARGE])
 */
#include <bson/bson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/json.h"

static double cpu_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* An insert as a server sends it; extra adds that many more fields of text
 * to fullDocument (0: about 330 bytes). */
static bson_t *insert_event(int extra)
{
    bson_oid_t oid;
    bson_t *doc, full;

    bson_oid_init_from_string(&oid, "65a1b2c3d4e5f60718293a4b");
    doc = BCON_NEW("_id", "{", "_data",
                   BCON_UTF8("8265A1B2C3000000012B022C0100296E5A1004"),
                   "}", "operationType", BCON_UTF8("insert"), "clusterTime",
                   BCON_TIMESTAMP(1705095875, 1), "wallTime", BCON_DATE_TIME(1705095875123));
    bson_append_document_begin(doc, "fullDocument", -1, &full);
    BSON_APPEND_OID(&full, "_id", &oid);
    BSON_APPEND_UTF8(&full, "sku", "A-1001");
    BSON_APPEND_UTF8(&full, "name", "Caf\xc3\xa9 \"mug\"");
    BSON_APPEND_INT32(&full, "qty", 3);
    BSON_APPEND_DOUBLE(&full, "price", 12.5);
    BSON_APPEND_BOOL(&full, "active", true);
    BSON_APPEND_DATE_TIME(&full, "at", 1705095800000);
    BSON_APPEND_NULL(&full, "note");
    for (int k = 0; k < extra; k++) {
        char key[16];

        snprintf(key, sizeof key, "line%d", k);
        BSON_APPEND_UTF8(&full, key, "A line of an order's notes, with a\ttab and a \"quote\", "
                                     "then plain words until its end.");
    }
    bson_append_document_end(doc, &full);
    BSON_APPEND_DOCUMENT(doc, "ns", BCON_NEW("db", BCON_UTF8("shop"), "coll", BCON_UTF8("orders")));
    BSON_APPEND_DOCUMENT(doc, "documentKey", BCON_NEW("_id", BCON_OID(&oid)));
    return doc;
}

typedef char *(*to_json_fn)(const bson_t *doc, size_t *len);

static char *size_only(const bson_t *doc, size_t *len)
{
    static char none;

    return tw_json_relaxed_size(doc, len) ? &none : NULL;
}

static double time_it(to_json_fn fn, const bson_t *doc, long n, bool owned)
{
    double start = cpu_seconds();
    size_t total = 0;

    for (long k = 0; k < n; k++) {
        size_t len;
        char *json = fn(doc, &len);

        total += len;
        if (owned)
            bson_free(json);
    }
    if (total == 0)
        abort();
    return (cpu_seconds() - start) / (double)n * 1e6;
}

static void compare(const char *what, const bson_t *doc, long n)
{
    char *theirs = bson_as_relaxed_extended_json(doc, NULL);
    char *ours = tw_json_relaxed(doc, NULL);
    double lib, tw;

    if (!theirs || !ours || strcmp(theirs, ours) != 0) {
        fprintf(stderr, "%s: the texts differ\n", what);
        exit(1);
    }
    lib = time_it(bson_as_relaxed_extended_json, doc, n, true);
    tw = time_it(tw_json_relaxed, doc, n, true);
    printf("%-24s %6u B BSON %6zu B JSON  x%-7ld libbson %8.3f us  tw_json_relaxed %7.3f us  "
           "%5.1fx\n",
           what, doc->len, strlen(theirs), n, lib, tw, lib / tw);
    bson_free(theirs);
    bson_free(ours);
}

int main(int argc, char **argv)
{
    long n_small = argc > 1 ? atol(argv[1]) : 200000;
    long n_large = argc > 2 ? atol(argv[2]) : 20000;
    bson_t *small = insert_event(0), *large = insert_event(100);
    bson_iter_t it;
    const uint8_t *data;
    uint32_t len;
    bson_t token;

    bson_iter_init_find(&it, small, "_id");
    bson_iter_document(&it, &len, &data);
    bson_init_static(&token, data, len);
    compare("event", small, n_small);
    compare("event (10 KB)", large, n_large);
    compare("token (_id)", &token, n_small);
    printf("%-24s %6u B BSON %15s x%-7ld tw_json_relaxed_size %.3f us\n", "token, size only",
           token.len, "", n_small, time_it(size_only, &token, n_small, false));
    bson_destroy(small);
    bson_destroy(large);
    return 0;
}
