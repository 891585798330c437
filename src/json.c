#include "tokenwatch/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/utf8.h"

/*
 * The text being written: on the heap when owned, else in the caller's
 * stack buffer until it grows. len < cap always, so there is room for the
 * closing NUL. full: a write would have passed TW_JSON_MAX.
 */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool owned;
    bool full;
} jbuf_t;

static bool grow(jbuf_t *b, size_t need)
{
    size_t cap = b->cap;

    if (need >= TW_JSON_MAX - b->len) {
        b->full = true;
        return false;
    }
    while (cap - b->len <= need)
        cap *= 2;
    if (cap > TW_JSON_MAX)
        cap = TW_JSON_MAX;
    if (b->owned) {
        b->data = bson_realloc(b->data, cap);
    } else {
        char *heap = bson_malloc(cap);

        memcpy(heap, b->data, b->len);
        b->data = heap;
        b->owned = true;
    }
    b->cap = cap;
    return true;
}

static inline bool put(jbuf_t *b, const char *s, size_t n)
{
    if (b->cap - b->len <= n && !grow(b, n))
        return false;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return true;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

/* 0: written as it is; 1: escaped; 2: starts a multi-byte sequence (or is
 * not UTF-8). As libbson: ", \ and the controls below 0x20; not 0x7F. */
static const unsigned char byte_class[256] = {
    [0x00 ... 0x1F] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xFF] = 2,
};

/* A key libbson takes: well-formed UTF-8 (it checks array keys too). */
static bool key_ok(const char *key)
{
    const unsigned char *u = (const unsigned char *)key;
    size_t n = strlen(key), seq;

    for (size_t k = 0; k < n; k += seq)
        if (!(seq = u[k] < 0x80 ? 1 : tw_utf8_char_len(key + k, n - k)))
            return false;
    return true;
}

static bool put_escape(jbuf_t *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};

    switch (c) {
    case '"': return PUT_LIT(b, "\\\"");
    case '\\': return PUT_LIT(b, "\\\\");
    case '\b': return PUT_LIT(b, "\\b");
    case '\f': return PUT_LIT(b, "\\f");
    case '\n': return PUT_LIT(b, "\\n");
    case '\r': return PUT_LIT(b, "\\r");
    case '\t': return PUT_LIT(b, "\\t");
    default: return put(b, u, sizeof u);
    }
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Whether none of the 8 bytes at s needs a look: each is at least 0x20,
 * below 0x80, and neither '"' nor '\\' (exact: a match in one byte may set
 * the flag of a higher one, never hide it). */
static inline bool plain8(const unsigned char *s)
{
    uint64_t v, quote, slash, low;

    memcpy(&v, s, 8);
    quote = v ^ (ONES * '"');
    slash = v ^ (ONES * '\\');
    low = (v - ONES * 0x20) & ~v;          /* a byte below 0x20 */
    quote = (quote - ONES) & ~quote;        /* a '"' */
    slash = (slash - ONES) & ~slash;        /* a '\\' */
    return ((low | quote | slash | v) & HIGHS) == 0; /* v: a byte from 0x80 */
}

/* s (n bytes, NULs allowed) between quotes, escaped as libbson does. Fails
 * on anything but well-formed UTF-8 (libbson then decides). Runs of plain
 * bytes are passed over 8 at a time and copied at once. */
static bool put_string(jbuf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0, k = 0;

    if (!PUT_LIT(b, "\""))
        return false;
    while (k < n) {
        unsigned char cls;
        size_t seq;

        if (n - k >= 8 && plain8(u + k)) {
            k += 8;
            continue;
        }
        cls = byte_class[u[k]];
        if (cls == 0) {
            k++;
        } else if (cls == 2) {
            if (!(seq = tw_utf8_char_len(s + k, n - k)))
                return false;
            k += seq;
        } else {
            if (!put(b, s + run, k - run) || !put_escape(b, u[k]))
                return false;
            run = ++k;
        }
    }
    return put(b, s + run, k - run) && PUT_LIT(b, "\"");
}

static bool put_i64(jbuf_t *b, int64_t v)
{
    char digits[24];
    size_t at = sizeof digits;
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        digits[--at] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (v < 0)
        digits[--at] = '-';
    return put(b, digits + at, sizeof digits - at);
}

/* libbson: "%.20g", with ".0" when that printed only digits and '-';
 * NaN and the infinities wrapped in $numberDouble. */
static bool put_double(jbuf_t *b, double v)
{
    char text[64];
    int n;

    if (isnan(v))
        return PUT_LIT(b, "{ \"$numberDouble\" : \"NaN\" }");
    if (isinf(v))
        return v > 0 ? PUT_LIT(b, "{ \"$numberDouble\" : \"Infinity\" }")
                     : PUT_LIT(b, "{ \"$numberDouble\" : \"-Infinity\" }");
    /* A whole number below 2^53 prints as its integer: no printf needed. */
    if (v == 0 && signbit(v))
        return PUT_LIT(b, "-0.0");
    if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v)
        return put_i64(b, (int64_t)v) && PUT_LIT(b, ".0");
    n = snprintf(text, sizeof text, "%.20g", v);
    if (n < 0 || (size_t)n >= sizeof text)
        return false;
    if (strspn(text, "0123456789-") == (size_t)n)
        return put(b, text, (size_t)n) && PUT_LIT(b, ".0");
    return put(b, text, (size_t)n);
}

static void two_digits(char *at, int v)
{
    at[0] = (char)('0' + v / 10);
    at[1] = (char)('0' + v % 10);
}

static bool put_by_libbson(jbuf_t *b, const bson_iter_t *it);

/* Days since 1970-01-01 (not negative) as a civil date: H. Hinnant's
 * civil_from_days, exact over the proleptic Gregorian calendar. */
static void civil_from_days(int64_t days, int *year, int *month, int *day)
{
    int64_t z = days + 719468;
    int64_t era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;

    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = (int)((int64_t)yoe + era * 400 + (*month <= 2));
}

/* Relaxed: { "$numberLong" } before 1970, else ISO 8601 UTC with
 * milliseconds when there are some. Years past 9999 go to libbson. */
static bool put_date(jbuf_t *b, const bson_iter_t *it)
{
    char text[24]; /* YYYY-MM-DDTHH:MM:SS.mmm */
    int64_t ms = bson_iter_date_time(it), secs = ms / 1000;
    int frac = (int)(ms % 1000), in_day = (int)(secs % 86400), year, month, day;

    if (ms < 0)
        return PUT_LIT(b, "{ \"$date\" : { \"$numberLong\" : \"") && put_i64(b, ms) &&
               PUT_LIT(b, "\" } }");
    civil_from_days(secs / 86400, &year, &month, &day);
    if (year > 9999)
        return put_by_libbson(b, it);
    two_digits(text, year / 100);
    two_digits(text + 2, year % 100);
    text[4] = '-';
    two_digits(text + 5, month);
    text[7] = '-';
    two_digits(text + 8, day);
    text[10] = 'T';
    two_digits(text + 11, in_day / 3600);
    text[13] = ':';
    two_digits(text + 14, in_day / 60 % 60);
    text[16] = ':';
    two_digits(text + 17, in_day % 60);
    text[19] = '.';
    text[20] = (char)('0' + frac / 100);
    two_digits(text + 21, frac % 100);
    return PUT_LIT(b, "{ \"$date\" : \"") && put(b, text, frac ? 23 : 19) &&
           PUT_LIT(b, "Z\" }");
}

static bool put_binary(jbuf_t *b, const bson_iter_t *it)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char hex[] = "0123456789abcdef";
    bson_subtype_t subtype;
    uint32_t n;
    const uint8_t *p;
    char quad[4], sub[2];

    bson_iter_binary(it, &subtype, &n, &p);
    if (!PUT_LIT(b, "{ \"$binary\" : { \"base64\" : \""))
        return false;
    for (uint32_t k = 0; k < n; k += 3) {
        uint32_t left = n - k;
        uint32_t v = (uint32_t)p[k] << 16 | (left > 1 ? (uint32_t)p[k + 1] << 8 : 0) |
                     (left > 2 ? p[k + 2] : 0);

        quad[0] = b64[v >> 18];
        quad[1] = b64[(v >> 12) & 63];
        quad[2] = left > 1 ? b64[(v >> 6) & 63] : '=';
        quad[3] = left > 2 ? b64[v & 63] : '=';
        if (!put(b, quad, sizeof quad))
            return false;
    }
    sub[0] = hex[((unsigned)subtype >> 4) & 0xF];
    sub[1] = hex[(unsigned)subtype & 0xF];
    return PUT_LIT(b, "\", \"subType\" : \"") && put(b, sub, sizeof sub) &&
           PUT_LIT(b, "\" } }");
}

static bool put_timestamp(jbuf_t *b, const bson_iter_t *it)
{
    uint32_t t, i;

    bson_iter_timestamp(it, &t, &i);
    return PUT_LIT(b, "{ \"$timestamp\" : { \"t\" : ") && put_i64(b, t) &&
           PUT_LIT(b, ", \"i\" : ") && put_i64(b, i) && PUT_LIT(b, " } }");
}

static bool put_oid(jbuf_t *b, const bson_iter_t *it)
{
    char hex[25];

    bson_oid_to_string(bson_iter_oid(it), hex);
    return PUT_LIT(b, "{ \"$oid\" : \"") && put(b, hex, 24) && PUT_LIT(b, "\" }");
}

static bool put_decimal(jbuf_t *b, const bson_iter_t *it)
{
    bson_decimal128_t dec;
    char text[BSON_DECIMAL128_STRING];

    if (!bson_iter_decimal128(it, &dec))
        return false;
    bson_decimal128_to_string(&dec, text);
    return PUT_LIT(b, "{ \"$numberDecimal\" : \"") && put(b, text, strlen(text)) &&
           PUT_LIT(b, "\" }");
}

/* A rare type (regex, code, symbol, DBPointer, a far date): libbson writes it alone,
 * as { "" : VALUE }, and VALUE is spliced in. The one-element document is
 * made of the element's own bytes (bson_append_iter would cut a code or a
 * symbol at an embedded NUL, and libbson would then write what it refuses
 * in the whole document: fuzz_json found it). */
static bool put_by_libbson(jbuf_t *b, const bson_iter_t *it)
{
    static const char head[] = "{ \"\" : ";
    const uint8_t *value = it->raw + it->off + 1 + bson_iter_key_len(it) + 1;
    size_t vlen = (size_t)(it->raw + it->next_off - value);
    size_t total = 4 + 1 + 1 + vlen + 1;
    uint8_t *raw = bson_malloc(total);
    bson_t one;
    char *json = NULL;
    size_t n = 0;
    bool ok = false;

    raw[0] = (uint8_t)(total & 0xff);
    raw[1] = (uint8_t)((total >> 8) & 0xff);
    raw[2] = (uint8_t)((total >> 16) & 0xff);
    raw[3] = (uint8_t)((total >> 24) & 0xff);
    raw[4] = (uint8_t)bson_iter_type(it);
    raw[5] = '\0'; /* the empty key */
    memcpy(raw + 6, value, vlen);
    raw[total - 1] = '\0';
    if (bson_init_static(&one, raw, total))
        json = bson_as_relaxed_extended_json(&one, &n);
    if (json && n >= sizeof head + 1 && memcmp(json, head, sizeof head - 1) == 0)
        ok = put(b, json + sizeof head - 1, n - (sizeof head - 1) - 2);
    bson_free(json);
    bson_free(raw);
    return ok;
}

static bool put_document(jbuf_t *b, const bson_t *doc, bool array, int depth);

static bool put_child(jbuf_t *b, const bson_iter_t *it, bool array, int depth)
{
    const uint8_t *data;
    uint32_t len;
    bson_t child;

    if (array)
        bson_iter_array(it, &len, &data);
    else
        bson_iter_document(it, &len, &data);
    return bson_init_static(&child, data, len) && put_document(b, &child, array, depth + 1);
}

static bool put_value(jbuf_t *b, const bson_iter_t *it, int depth)
{
    uint32_t n;
    const char *s;

    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &n);
        return put_string(b, s, n);
    case BSON_TYPE_INT32: return put_i64(b, bson_iter_int32(it));
    case BSON_TYPE_INT64: return put_i64(b, bson_iter_int64(it));
    case BSON_TYPE_DOUBLE: return put_double(b, bson_iter_double(it));
    case BSON_TYPE_BOOL:
        return bson_iter_bool(it) ? PUT_LIT(b, "true") : PUT_LIT(b, "false");
    case BSON_TYPE_NULL: return PUT_LIT(b, "null");
    case BSON_TYPE_DOCUMENT: return put_child(b, it, false, depth);
    case BSON_TYPE_ARRAY: return put_child(b, it, true, depth);
    case BSON_TYPE_OID: return put_oid(b, it);
    case BSON_TYPE_DATE_TIME: return put_date(b, it);
    case BSON_TYPE_TIMESTAMP: return put_timestamp(b, it);
    case BSON_TYPE_BINARY: return put_binary(b, it);
    case BSON_TYPE_DECIMAL128: return put_decimal(b, it);
    case BSON_TYPE_MINKEY: return PUT_LIT(b, "{ \"$minKey\" : 1 }");
    case BSON_TYPE_MAXKEY: return PUT_LIT(b, "{ \"$maxKey\" : 1 }");
    case BSON_TYPE_UNDEFINED: return PUT_LIT(b, "{ \"$undefined\" : true }");
    default: return put_by_libbson(b, it);
    }
}

/* "{ k : v, ... }" or "[ v, ... ]"; an empty one nested is "{  }" as in
 * libbson. Fails on corruption and past TW_JSON_DEPTH. */
static bool put_document(jbuf_t *b, const bson_t *doc, bool array, int depth)
{
    bson_iter_t it;
    bool first = true;

    if (depth > TW_JSON_DEPTH || !bson_iter_init(&it, doc) ||
        !(array ? PUT_LIT(b, "[ ") : PUT_LIT(b, "{ ")))
        return false;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);

        if (!first && !PUT_LIT(b, ", "))
            return false;
        first = false;
        if (array ? !key_ok(key) : !(put_string(b, key, strlen(key)) && PUT_LIT(b, " : ")))
            return false;
        if (!put_value(b, &it, depth))
            return false;
    }
    if (it.err_off)
        return false;
    return array ? PUT_LIT(b, " ]") : PUT_LIT(b, " }");
}

/* Writes doc into b; on anything but the cap, b holds libbson's own text
 * instead (or nothing, with false, when libbson has none). */
static bool write_doc(jbuf_t *b, const bson_t *doc)
{
    char *theirs;
    size_t n;
    bool ok;

    if (bson_empty0(doc))
        return PUT_LIT(b, "{ }");
    if (put_document(b, doc, false, 0))
        return true;
    if (b->full)
        return false;
    theirs = bson_as_relaxed_extended_json(doc, &n);
    b->len = 0;
    ok = theirs && put(b, theirs, n);
    bson_free(theirs);
    return ok;
}

char *tw_json_relaxed(const bson_t *doc, size_t *len)
{
    size_t guess = doc->len <= TW_JSON_MAX / 8 ? (size_t)doc->len * 2 + 64 : TW_JSON_MAX / 4;
    jbuf_t b = {bson_malloc(guess), 0, guess, true, false};

    if (len)
        *len = 0;
    if (!write_doc(&b, doc)) {
        bson_free(b.data);
        return NULL;
    }
    b.data[b.len] = '\0';
    if (len)
        *len = b.len;
    return b.data;
}

bool tw_json_relaxed_size(const bson_t *doc, size_t *len)
{
    char stack[512];
    jbuf_t b = {stack, 0, sizeof stack, false, false};
    bool ok = write_doc(&b, doc);

    if (len)
        *len = ok ? b.len : 0;
    if (b.owned)
        bson_free(b.data);
    return ok;
}
