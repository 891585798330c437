/*
 * tw_json_relaxed against libbson's bson_as_relaxed_extended_json, the
 * answer it must give byte for byte: every BSON type, the escapes, invalid
 * UTF-8, the number and date edges, nesting, a large string, corrupt
 * documents, and two thousand random documents from a fixed seed.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tokenwatch/json.h"

/* Counts what the comparisons saw, so a test can tell it covered both. */
typedef struct {
    size_t texts;
    size_t nulls;
} seen_t;

static void expect_same(const bson_t *doc, const char *what, seen_t *seen)
{
    size_t their_len = 0, our_len = 0, size_len = 0;
    char *theirs = bson_as_relaxed_extended_json(doc, &their_len);
    char *ours = tw_json_relaxed(doc, &our_len);
    bool sized = tw_json_relaxed_size(doc, &size_len);

    if (!theirs) {
        cr_expect_null(ours, "%s: libbson gives NULL, we gave %s", what, ours);
        cr_expect_not(sized, "%s: sized though libbson gives NULL", what);
        if (seen)
            seen->nulls++;
    } else {
        cr_expect_not_null(ours, "%s: NULL, libbson gives %.200s", what, theirs);
        if (ours)
            cr_expect(our_len == their_len && strcmp(ours, theirs) == 0,
                      "%s:\n ours   %.400s\n theirs %.400s", what, ours, theirs);
        cr_expect(sized && size_len == their_len, "%s: size %zu, libbson %zu", what, size_len,
                  their_len);
        if (seen)
            seen->texts++;
    }
    bson_free(theirs);
    bson_free(ours);
}

static void expect_same_value(const char *what, const char *s, size_t n)
{
    bson_t doc = BSON_INITIALIZER;

    bson_append_utf8(&doc, "v", 1, s, (int)n);
    expect_same(&doc, what, NULL);
    bson_destroy(&doc);
}

Test(json, every_type)
{
    static const uint8_t bytes[] = "\x00\x01\xfe\xffhello binary";
    bson_t *doc, scope = BSON_INITIALIZER;
    bson_oid_t oid;
    bson_decimal128_t dec;

    bson_oid_init_from_string(&oid, "5f1a2b3c4d5e6f7081920a1b");
    bson_decimal128_from_string("-1234.5678E+300", &dec);
    BSON_APPEND_INT32(&scope, "x", 1);
    doc = BCON_NEW("double", BCON_DOUBLE(1.5), "utf8", BCON_UTF8("text"), "doc", "{", "a",
                   BCON_INT32(1), "}", "array", "[", BCON_INT32(1), BCON_UTF8("two"), "]",
                   "bin0", BCON_BIN(BSON_SUBTYPE_BINARY, bytes, sizeof bytes),
                   "bin4", BCON_BIN(BSON_SUBTYPE_UUID, bytes, 16),
                   "bin80", BCON_BIN(BSON_SUBTYPE_USER, bytes, 5),
                   "bin_empty", BCON_BIN(BSON_SUBTYPE_BINARY, bytes, 0), "undef", BCON_UNDEFINED,
                   "oid", BCON_OID(&oid), "true", BCON_BOOL(true), "false", BCON_BOOL(false),
                   "date", BCON_DATE_TIME(1700000000123), "null", BCON_NULL,
                   "regex", BCON_REGEX("^a\"b\\\\c$", "xsmi"), "dbptr",
                   BCON_DBPOINTER("db.coll", &oid), "code", BCON_CODE("function() {\n}"),
                   "symbol", BCON_SYMBOL("sym"), "cws", BCON_CODEWSCOPE("f()", &scope), "int32",
                   BCON_INT32(-7), "ts", BCON_TIMESTAMP(1700000000, 42), "int64",
                   BCON_INT64(1234567890123), "dec", BCON_DECIMAL128(&dec), "min", BCON_MINKEY,
                   "max", BCON_MAXKEY);
    bson_append_binary(doc, "bin2", 4, BSON_SUBTYPE_BINARY_DEPRECATED, bytes, 7);
    expect_same(doc, "every type", NULL);
    bson_destroy(doc);
    bson_destroy(&scope);
}

Test(json, strings_as_values_and_keys)
{
    static const struct {
        const char *s;
        size_t n;
    } cases[] = {
        {"", 0},
        {"plain ascii", 11},
        {"quote \" inside", 14},
        {"back\\slash", 10},
        {"\b\f\n\r\t", 5},
        {"slash / and del \x7f", 17},
        {"\xc3\xa9t\xc3\xa9", 6},             /* 2-byte */
        {"\xe6\x97\xa5\xe6\x9c\xac", 6},      /* 3-byte */
        {"\xf0\x9f\x98\x80!", 5},             /* 4-byte */
        {"\xef\xbf\xbf\xf4\x8f\xbf\xbf", 7},  /* U+FFFF, U+10FFFF */
        {"\xe2\x80\xa8\xe2\x80\xa9", 6},      /* line and paragraph separators */
        {"\"\"\\\\\"", 5},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bson_t doc = BSON_INITIALIZER;
        char what[32];

        snprintf(what, sizeof what, "string %zu", k);
        expect_same_value(what, cases[k].s, cases[k].n);
        bson_append_int32(&doc, cases[k].s, (int)cases[k].n, 1);
        snprintf(what, sizeof what, "key %zu", k);
        expect_same(&doc, what, NULL);
        bson_destroy(&doc);
    }
}

Test(json, every_ascii_byte_and_embedded_nul)
{
    char all[128];

    for (int c = 0; c < 128; c++) {
        char one[3] = {'a', (char)c, 'z'};
        char what[32];

        all[c] = (char)c;
        snprintf(what, sizeof what, "byte 0x%02x", c);
        expect_same_value(what, one, sizeof one);
    }
    expect_same_value("bytes 0x00-0x7f", all, sizeof all);
    expect_same_value("only NULs", "\0\0\0", 3);
}

Test(json, invalid_utf8_as_libbson)
{
    static const struct {
        const char *s;
        size_t n;
    } cases[] = {
        {"\x80", 1},                 /* stray continuation */
        {"a\xc3", 2},                /* cut short */
        {"\xc3(", 2},
        {"\xc0\xaf", 2},             /* overlong */
        {"\xc0\x80", 2},             /* overlong NUL: libbson's validator takes it */
        {"\xe0\x80\xaf", 3},
        {"\xed\xa0\x80", 3},         /* surrogate */
        {"\xf4\x90\x80\x80", 4},     /* past U+10FFFF */
        {"\xf8\x88\x80\x80\x80", 5}, /* 5-byte form */
        {"\xfe\xff", 2},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bson_t doc = BSON_INITIALIZER, child;
        char what[32];

        snprintf(what, sizeof what, "invalid %zu", k);
        expect_same_value(what, cases[k].s, cases[k].n);
        bson_append_int32(&doc, cases[k].s, (int)cases[k].n, 1);
        expect_same(&doc, "as a key", NULL);
        bson_reinit(&doc);
        bson_append_array_begin(&doc, "a", 1, &child);
        bson_append_int32(&child, cases[k].s, (int)cases[k].n, 1);
        bson_append_array_end(&doc, &child);
        expect_same(&doc, "as an array's key", NULL);
        bson_reinit(&doc);
        bson_append_regex(&doc, "r", 1, cases[k].s, "i");
        expect_same(&doc, "in a regex", NULL);
        bson_destroy(&doc);
    }
}

Test(json, doubles)
{
    static const double cases[] = {
        0.0, 1.0, -1.0, 1.5, -2.25, 0.1, 1e300, -1e300, 1e-300, 5e-324, 1e15, 1e16, 1e17,
        1e20, 1e21, 9007199254740991.0, 9007199254740992.0, 9007199254740993.0, 123456789.0,
        3.141592653589793, 1.7976931348623157e308, -4503599627370496.5, 2.5e-5,
    };
    bson_t doc = BSON_INITIALIZER;

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char key[16];

        snprintf(key, sizeof key, "%zu", k);
        BSON_APPEND_DOUBLE(&doc, key, cases[k]);
    }
    BSON_APPEND_DOUBLE(&doc, "neg0", -0.0);
    BSON_APPEND_DOUBLE(&doc, "nan", NAN);
    BSON_APPEND_DOUBLE(&doc, "-nan", -NAN);
    BSON_APPEND_DOUBLE(&doc, "inf", INFINITY);
    BSON_APPEND_DOUBLE(&doc, "-inf", -INFINITY);
    expect_same(&doc, "doubles", NULL);
    bson_destroy(&doc);
}

Test(json, integers_dates_timestamps)
{
    static const int64_t dates[] = {
        0, 1, 999, 1000, -1, -1000, -62135596800000, 1700000000000, 1700000000001,
        253402300799999,          /* 9999-12-31T23:59:59.999 */
        253402300800000,          /* 10000-01-01 */
        INT64_MAX, INT64_MIN,
    };
    bson_t *doc = BCON_NEW("i32min", BCON_INT32(INT32_MIN), "i32max", BCON_INT32(INT32_MAX),
                           "i64min", BCON_INT64(INT64_MIN), "i64max", BCON_INT64(INT64_MAX),
                           "zero", BCON_INT64(0), "ts0", BCON_TIMESTAMP(0, 0), "tsmax",
                           BCON_TIMESTAMP(UINT32_MAX, UINT32_MAX));

    for (size_t k = 0; k < sizeof dates / sizeof dates[0]; k++) {
        char key[16];

        snprintf(key, sizeof key, "d%zu", k);
        BSON_APPEND_DATE_TIME(doc, key, dates[k]);
    }
    expect_same(doc, "integers, dates, timestamps", NULL);
    bson_destroy(doc);
}

Test(json, empty_and_nested)
{
    bson_t empty = BSON_INITIALIZER;
    bson_t *doc = BCON_NEW("d", "{", "}", "a", "[", "]", "aa", "[", "[", "]", "{", "}", "]",
                           "dd", "{", "x", "{", "y", "[", BCON_INT32(1), "{", "z",
                           BCON_NULL, "}", "]", "}", "}");

    expect_same(&empty, "empty", NULL);
    expect_same(doc, "nested", NULL);
    bson_destroy(doc);
}

/* Nesting of depth levels: ours to TW_JSON_DEPTH, then libbson's "{ ... }"
 * past 200. */
Test(json, deep_nesting)
{
    static const int depths[] = {50, TW_JSON_DEPTH - 1, TW_JSON_DEPTH, TW_JSON_DEPTH + 1,
                                 199, 200, 201, 250};

    for (size_t k = 0; k < sizeof depths / sizeof depths[0]; k++) {
        bson_t *level = bson_new();
        char what[32];

        BSON_APPEND_INT32(level, "0", 1);
        for (int d = 0; d < depths[k]; d++) {
            bson_t *up = bson_new();

            if (d % 2)
                cr_assert(BSON_APPEND_DOCUMENT(up, "0", level));
            else
                cr_assert(BSON_APPEND_ARRAY(up, "0", level));
            bson_destroy(level);
            level = up;
        }
        snprintf(what, sizeof what, "depth %d", depths[k]);
        expect_same(level, what, NULL);
        bson_destroy(level);
    }
}

Test(json, large_string)
{
    size_t n = 1024 * 1024;
    char *s = bson_malloc(n);
    bson_t doc = BSON_INITIALIZER;

    for (size_t k = 0; k < n; k++)
        s[k] = (char)(k % 97 == 0 ? '"' : k % 89 == 0 ? '\n' : 'a' + (char)(k % 26));
    memcpy(s + 1000, "\xf0\x9f\x98\x80", 4);
    bson_append_utf8(&doc, "big", 3, s, (int)n);
    expect_same(&doc, "1 MB string", NULL);
    bson_reinit(&doc);
    memset(s, 0, n);
    bson_append_utf8(&doc, "nuls", 4, s, (int)n);
    expect_same(&doc, "1 MB of NULs", NULL);
    bson_destroy(&doc);
    bson_free(s);
}

/* A change event as a server sends it: an insert. */
static bson_t *change_event(void)
{
    bson_oid_t oid;

    bson_oid_init_from_string(&oid, "65a1b2c3d4e5f60718293a4b");
    return BCON_NEW(
        "_id", "{", "_data",
        BCON_UTF8("8265A1B2C3000000012B022C0100296E5A1004B1E2C3D4E5F60718293A4B5C6D7E8F46"
                  "645F6964006465A1B2C3D4E5F60718293A4B0004"),
        "}", "operationType", BCON_UTF8("insert"), "clusterTime",
        BCON_TIMESTAMP(1705095875, 1), "wallTime", BCON_DATE_TIME(1705095875123),
        "fullDocument", "{", "_id", BCON_OID(&oid), "sku", BCON_UTF8("A-1001"), "name",
        BCON_UTF8("Caf\xc3\xa9 \"Zoë\" mug"), "qty", BCON_INT32(3), "price", BCON_DOUBLE(12.5),
        "tags", "[", BCON_UTF8("kitchen"), BCON_UTF8("gift"), "]", "active", BCON_BOOL(true),
        "note", BCON_NULL, "}", "ns", "{", "db", BCON_UTF8("shop"), "coll",
        BCON_UTF8("orders"), "}", "documentKey", "{", "_id", BCON_OID(&oid), "}");
}

Test(json, change_event)
{
    bson_t *event = change_event();

    expect_same(event, "change event", NULL);
    bson_destroy(event);
}

/* Below and above the 512 bytes tw_json_relaxed_size keeps on the stack. */
Test(json, size_without_text)
{
    bson_t doc = BSON_INITIALIZER;
    char s[2000];
    size_t len = 0;

    memset(s, 'x', sizeof s);
    for (size_t n = 0; n < sizeof s; n += 97) {
        char what[32];

        bson_reinit(&doc);
        bson_append_utf8(&doc, "s", 1, s, (int)n);
        snprintf(what, sizeof what, "%zu bytes", n);
        expect_same(&doc, what, NULL);
    }
    bson_reinit(&doc);
    bson_append_utf8(&doc, "bad", 3, "\xff", 1);
    cr_expect_not(tw_json_relaxed_size(&doc, &len));
    cr_expect_eq(len, 0);
    bson_destroy(&doc);
}

/* xorshift64*: the same documents on every run. */
static uint64_t next_random(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

static size_t random_text(uint64_t *rnd, char *out, size_t cap, bool key)
{
    static const char *const pieces[] = {"a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01",
                                         "\x1f", "\x7f", "\xc3\xa9", "\xe6\x97\xa5",
                                         "\xf0\x9f\x98\x80", "$", "."};
    size_t n = 0, want = next_random(rnd) % 24;

    for (size_t k = 0; k < want; k++) {
        const char *p = pieces[next_random(rnd) % (sizeof pieces / sizeof pieces[0])];
        size_t len = strlen(p);

        if (next_random(rnd) % 300 == 0) { /* now and then any byte */
            char c = (char)(next_random(rnd) % 256);

            p = &c;
            len = key && c == 0 ? 0 : 1;
            if (n + len < cap) {
                memcpy(out + n, p, len);
                n += len;
            }
            continue;
        }
        if (!key && next_random(rnd) % 50 == 0)
            p = "\0", len = 1;
        if (n + len < cap) {
            memcpy(out + n, p, len);
            n += len;
        }
    }
    out[n] = '\0';
    return n;
}

static void random_doc(uint64_t *rnd, bson_t *doc, int depth, bool array);

static void random_value(uint64_t *rnd, bson_t *doc, const char *key, int depth)
{
    char text[128];
    size_t n;
    bson_t child;
    bson_oid_t oid;
    uint64_t r = next_random(rnd);
    double d;

    switch (next_random(rnd) % (depth < 4 ? 16 : 14)) {
    case 0:
        n = random_text(rnd, text, sizeof text, false);
        bson_append_utf8(doc, key, -1, text, (int)n);
        break;
    case 1: bson_append_int32(doc, key, -1, (int32_t)r); break;
    case 2: bson_append_int64(doc, key, -1, (int64_t)r >> (r % 64)); break;
    case 3:
        memcpy(&d, &r, sizeof d); /* any bit pattern: NaNs, subnormals, huge */
        bson_append_double(doc, key, -1, r % 3 ? (double)(int64_t)(r % 100000) / 8 : d);
        break;
    case 4: bson_append_bool(doc, key, -1, r & 1); break;
    case 5: bson_append_null(doc, key, -1); break;
    case 6:
        bson_oid_init_from_data(&oid, (const uint8_t *)&r);
        bson_append_oid(doc, key, -1, &oid);
        break;
    case 7: bson_append_date_time(doc, key, -1, (int64_t)(r % 400000000000000ULL) - 100000000000000); break;
    case 8: bson_append_timestamp(doc, key, -1, (uint32_t)r, (uint32_t)(r >> 32)); break;
    case 9:
        n = random_text(rnd, text, sizeof text, false);
        bson_append_binary(doc, key, -1, (bson_subtype_t)(r % 3 == 0 ? 0x80 : r % 5), (const uint8_t *)text, (uint32_t)n);
        break;
    case 10:
        n = random_text(rnd, text, sizeof text, true);
        bson_append_regex(doc, key, -1, text, r & 1 ? "imx" : "");
        break;
    case 11: bson_append_minkey(doc, key, -1); break;
    case 12: {
        bson_decimal128_t dec = {r, r * 31};

        bson_append_decimal128(doc, key, -1, &dec);
        break;
    }
    case 13:
        n = random_text(rnd, text, sizeof text, false);
        bson_append_code(doc, key, -1, text);
        break;
    case 14:
        bson_append_document_begin(doc, key, -1, &child);
        random_doc(rnd, &child, depth + 1, false);
        bson_append_document_end(doc, &child);
        break;
    default:
        bson_append_array_begin(doc, key, -1, &child);
        random_doc(rnd, &child, depth + 1, true);
        bson_append_array_end(doc, &child);
        break;
    }
}

static void random_doc(uint64_t *rnd, bson_t *doc, int depth, bool array)
{
    size_t fields = next_random(rnd) % 8;

    for (size_t k = 0; k < fields; k++) {
        char key[128];

        if (array)
            snprintf(key, sizeof key, "%zu", k);
        else
            random_text(rnd, key, sizeof key, true);
        random_value(rnd, doc, key, depth);
    }
}

Test(json, random_documents)
{
    uint64_t rnd = 0x9E3779B97F4A7C15ULL;
    seen_t seen = {0, 0};

    for (int k = 0; k < 2000; k++) {
        bson_t doc = BSON_INITIALIZER;
        char what[32];

        random_doc(&rnd, &doc, 0, false);
        snprintf(what, sizeof what, "random document %d", k);
        expect_same(&doc, what, &seen);
        bson_destroy(&doc);
    }
    cr_expect_gt(seen.texts, 1000, "most give text: %zu", seen.texts);
    cr_expect_gt(seen.nulls, 20, "some give NULL: %zu", seen.nulls);
}

/* Bytes of a change event changed at random (its length prefix and last
 * byte kept, so it is still a bson_t): whatever libbson makes of it. */
Test(json, corrupt_documents)
{
    bson_t *event = change_event();
    uint64_t rnd = 42;
    seen_t seen = {0, 0};

    for (int k = 0; k < 2000; k++) {
        uint8_t *bytes = bson_malloc(event->len);
        bson_t doc;

        memcpy(bytes, bson_get_data(event), event->len);
        for (uint64_t m = 1 + next_random(&rnd) % 3; m > 0; m--)
            bytes[4 + next_random(&rnd) % (event->len - 5)] = (uint8_t)next_random(&rnd);
        if (bson_init_static(&doc, bytes, event->len))
            expect_same(&doc, "corrupt event", &seen);
        bson_free(bytes);
    }
    cr_expect_gt(seen.texts, 100, "%zu", seen.texts);
    cr_expect_gt(seen.nulls, 100, "%zu", seen.nulls);
    bson_destroy(event);
}

/* Found by fuzz_json: a code value with an embedded NUL and bytes that are
 * not UTF-8. libbson refuses the document (NULL); the writer once copied
 * the value with bson_append_iter, which cut it at the NUL, and wrote the
 * valid rest. The rare types are now copied byte for byte. */
Test(json, a_rare_value_is_copied_whole_not_cut_at_a_nul)
{
    /* The fuzzer's 40 bytes, the length prefix fixed as fuzz_json fixes it. */
    static const uint8_t found[] = {
        0x28, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x61, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x10, 0x30,
        0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x7f, 0xff, 0x2c, 0x00, 0xd0, 0x54, 0x1f, 0x04,
        0xc5, 0xff, 0xff, 0xff, 0xff, 0x65, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00};
    /* { "c" : code "a\0b" } and the same as a symbol. */
    static const uint8_t code[] = {0x10, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x00, 0x04,
                                   0x00, 0x00, 0x00, 0x61, 0x00, 0x62, 0x00, 0x00};
    static const uint8_t symbol[] = {0x10, 0x00, 0x00, 0x00, 0x0e, 0x63, 0x00, 0x04,
                                     0x00, 0x00, 0x00, 0x61, 0x00, 0x62, 0x00, 0x00};
    bson_t doc;

    cr_assert(bson_init_static(&doc, found, sizeof found));
    expect_same(&doc, "the fuzzer's document", NULL);
    cr_assert(bson_init_static(&doc, code, sizeof code));
    expect_same(&doc, "a code with a NUL inside", NULL);
    cr_assert(bson_init_static(&doc, symbol, sizeof symbol));
    expect_same(&doc, "a symbol with a NUL inside", NULL);
}

/* Runs of plain bytes are passed over 8 at a time: a byte that needs a look
 * (an escape, a control, 0x7F, UTF-8, not UTF-8) is found at every place
 * of a chunk and of the tail, in strings of every length around 8 and 16. */
Test(json, a_byte_that_needs_a_look_is_found_at_every_place)
{
    static const char *const odd[] = {"\"", "\\", "\x01", "\x1f", "\x7f", " ", "~",
                                      "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                      "\x80", "\xff", "\n"};
    char text[40];

    for (size_t o = 0; o < sizeof odd / sizeof odd[0]; o++)
        for (size_t len = 1; len <= 24; len++)
            for (size_t at = 0; at < len; at++) {
                size_t m = strlen(odd[o]), n = 0;
                char what[64];

                for (size_t k = 0; k < len; k++) {
                    if (k == at) {
                        memcpy(text + n, odd[o], m);
                        n += m;
                    } else {
                        text[n++] = (char)('a' + k % 26);
                    }
                }
                snprintf(what, sizeof what, "odd %zu, length %zu, at %zu", o, len, at);
                expect_same_value(what, text, n);
            }
}
