#include "tokenwatch/token.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tokenwatch/json.h"

/* "82" + 8 hex digits of seconds + 8 of increment. */
#define TOKEN_TIME_HEX_LEN 18

int tw_ctime_cmp(tw_ctime_t a, tw_ctime_t b)
{
    if (a.t != b.t)
        return a.t < b.t ? -1 : 1;
    if (a.i != b.i)
        return a.i < b.i ? -1 : 1;
    return 0;
}

int64_t tw_ctime_wall_ms(tw_ctime_t ct)
{
    return (int64_t)ct.t * 1000;
}

void tw_ctime_format(tw_ctime_t ct, char out[TW_CTIME_TEXT_MAX])
{
    snprintf(out, TW_CTIME_TEXT_MAX, "%" PRIu32 ":%" PRIu32, ct.t, ct.i);
}

static bool parse_u32(const char *text, size_t len, uint32_t *out)
{
    uint64_t value = 0;

    if (len == 0 || len > 10)
        return false;
    for (size_t k = 0; k < len; k++) {
        if (!isdigit((unsigned char)text[k]))
            return false;
        value = value * 10 + (uint64_t)(text[k] - '0');
    }
    if (value > UINT32_MAX)
        return false;
    *out = (uint32_t)value;
    return true;
}

bool tw_ctime_parse(const char *text, tw_ctime_t *out, tw_error_t *err)
{
    const char *colon = strchr(text, ':');
    tw_ctime_t ct;

    if (!colon || !parse_u32(text, (size_t)(colon - text), &ct.t) ||
        !parse_u32(colon + 1, strlen(colon + 1), &ct.i)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s' is not a cluster time T:I (two 32-bit numbers)",
                     text);
        return false;
    }
    *out = ct;
    return true;
}

void tw_utc_format(int64_t unix_ms, char out[TW_UTC_TEXT_MAX])
{
    time_t secs = (time_t)(unix_ms >= 0 ? unix_ms / 1000
                                        : (unix_ms - 999) / 1000);
    int ms = (int)(unix_ms - (int64_t)secs * 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    if (ms == 0)
        snprintf(out, TW_UTC_TEXT_MAX, "%04d-%02d-%02dT%02d:%02d:%02dZ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec);
    else
        snprintf(out, TW_UTC_TEXT_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ms);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static uint32_t hex_u32(const char *hex)
{
    uint32_t value = 0;

    for (int k = 0; k < 8; k++)
        value = (value << 4) | (uint32_t)hex_value(hex[k]);
    return value;
}

/* A layout's name, type byte and where its time sits. */
static const struct {
    tw_token_layout_t layout;
    const char *name;
    unsigned char type_byte;
} layouts[] = {
    {TW_LAYOUT_OPAQUE, "opaque", 0},
    {TW_LAYOUT_MONGODB, "mongodb", 0x82},
    {TW_LAYOUT_DOCUMENTDB, "documentdb", 0x01},
};

static const char *const time_sources[] = {
    [TW_TIME_EVENT] = "event",         [TW_TIME_TOKEN] = "token",
    [TW_TIME_OPERATION] = "operation", [TW_TIME_LOCAL] = "local",
    [TW_TIME_UNKNOWN] = "unknown",
};

const char *tw_token_layout_name(tw_token_layout_t layout)
{
    for (size_t k = 0; k < sizeof layouts / sizeof layouts[0]; k++)
        if (layouts[k].layout == layout)
            return layouts[k].name;
    return "opaque";
}

bool tw_token_layout_parse(const char *name, tw_token_layout_t *out)
{
    for (size_t k = 0; k < sizeof layouts / sizeof layouts[0]; k++) {
        if (strcmp(layouts[k].name, name) == 0) {
            *out = layouts[k].layout;
            return true;
        }
    }
    return false;
}

const char *tw_time_source_name(tw_time_source_t source)
{
    if ((size_t)source < sizeof time_sources / sizeof time_sources[0])
        return time_sources[source];
    return "unknown";
}

bool tw_time_source_parse(const char *name, tw_time_source_t *out)
{
    for (size_t k = 0; k < sizeof time_sources / sizeof time_sources[0]; k++) {
        if (strcmp(time_sources[k], name) == 0) {
            *out = (tw_time_source_t)k;
            return true;
        }
    }
    return false;
}

static tw_token_layout_t layout_of_byte(unsigned byte)
{
    for (size_t k = 1; k < sizeof layouts / sizeof layouts[0]; k++)
        if (layouts[k].type_byte == byte)
            return layouts[k].layout;
    return TW_LAYOUT_OPAQUE;
}

static bool is_hex(const char *text, size_t len, size_t *bad)
{
    for (size_t k = 0; k < len; k++) {
        if (hex_value(text[k]) < 0) {
            *bad = k;
            return false;
        }
    }
    return true;
}

bool tw_token_decode_hex(const char *hex, tw_ctime_t *out, tw_error_t *err)
{
    size_t len = strlen(hex), bad = 0;
    unsigned type_byte;

    if (!is_hex(hex, len, &bad)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token is not hex: character '%c' at position %zu",
                     isprint((unsigned char)hex[bad]) ? hex[bad] : '?', bad);
        return false;
    }
    if (len % 2 != 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token has an odd number of hex digits (%zu): a byte is "
                     "cut in half",
                     len);
        return false;
    }
    if (len < TOKEN_TIME_HEX_LEN) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token is truncated: %zu hex digits, a cluster time "
                     "needs %d",
                     len, TOKEN_TIME_HEX_LEN);
        return false;
    }
    type_byte = (unsigned)(hex_value(hex[0]) << 4 | hex_value(hex[1]));
    if (layout_of_byte(type_byte) == TW_LAYOUT_OPAQUE) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token layout is not known: type byte is %c%c (known: 82 "
                     "MongoDB, 01 Amazon DocumentDB), so it holds no cluster "
                     "time tokenwatch can read",
                     hex[0], hex[1]);
        return false;
    }
    out->t = hex_u32(hex + 2);
    out->i = hex_u32(hex + 10);
    return true;
}

static uint32_t be_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

tw_token_layout_t tw_token_layout(const bson_t *token, tw_ctime_t *out)
{
    bson_iter_t it;
    tw_ctime_t ct;

    if (!bson_iter_init_find(&it, token, "_data"))
        return TW_LAYOUT_OPAQUE;
    if (BSON_ITER_HOLDS_UTF8(&it)) {
        const char *hex = bson_iter_utf8(&it, NULL);

        if (!tw_token_decode_hex(hex, &ct, NULL))
            return TW_LAYOUT_OPAQUE;
        if (out)
            *out = ct;
        return layout_of_byte((unsigned)(hex_value(hex[0]) << 4 | hex_value(hex[1])));
    }
    if (BSON_ITER_HOLDS_BINARY(&it)) {
        const uint8_t *bytes;
        uint32_t len;
        bson_subtype_t subtype;

        /* MongoDB 3.6 wrote the same KeyString as BinData. */
        bson_iter_binary(&it, &subtype, &len, &bytes);
        if (len < 9 || bytes[0] != 0x82)
            return TW_LAYOUT_OPAQUE;
        if (out) {
            out->t = be_u32(bytes + 1);
            out->i = be_u32(bytes + 5);
        }
        return TW_LAYOUT_MONGODB;
    }
    return TW_LAYOUT_OPAQUE;
}

bool tw_token_data(const bson_t *token, const char **data, tw_error_t *err)
{
    bson_iter_t it;

    if (!bson_iter_init_find(&it, token, "_data") ||
        !BSON_ITER_HOLDS_UTF8(&it)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "token has no _data string");
        return false;
    }
    *data = bson_iter_utf8(&it, NULL);
    return true;
}

bool tw_token_cluster_time(const bson_t *token, tw_ctime_t *out,
                           tw_error_t *err)
{
    const char *data;

    if (tw_token_layout(token, out) != TW_LAYOUT_OPAQUE)
        return true;
    if (tw_token_data(token, &data, NULL))
        return tw_token_decode_hex(data, out, err);
    tw_error_set(err, TW_ERR_USAGE, 0,
                 "token's _data is not a string of a known layout, so it "
                 "holds no cluster time tokenwatch can read");
    return false;
}

/* libbson takes JSON that is not one token: a second _data (which one would
 * count?) or a NUL inside the _data string (C strings would cut it). */
static bool check_one_data(const bson_t *token, tw_error_t *err)
{
    bson_iter_t it;
    unsigned seen = 0;

    if (!bson_iter_init(&it, token))
        return false;
    while (bson_iter_next(&it)) {
        uint32_t len;
        const char *data;

        if (strcmp(bson_iter_key(&it), "_data") != 0)
            continue;
        if (++seen > 1) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "token has _data twice: a resume token has one");
            return false;
        }
        if (!BSON_ITER_HOLDS_UTF8(&it))
            continue;
        data = bson_iter_utf8(&it, &len);
        if (memchr(data, '\0', len)) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "token's _data holds a NUL character (\\u0000 at %zu)",
                         (size_t)((const char *)memchr(data, '\0', len) - data));
            return false;
        }
    }
    return true;
}

static bool parse_json_token(const char *json, bson_t *out, tw_error_t *err)
{
    bson_error_t berr;
    bson_iter_t it;

    if (!bson_init_from_json(out, json, -1, &berr)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "token is not valid JSON: %s",
                     berr.message);
        return false;
    }
    if (!bson_iter_init_find(&it, out, "_data") ||
        !(BSON_ITER_HOLDS_UTF8(&it) || BSON_ITER_HOLDS_BINARY(&it))) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token has no _data string or binary: a resume token is "
                     "the whole _id of a change event, {\"_data\": ...}");
        bson_destroy(out);
        return false;
    }
    if (!check_one_data(out, err)) {
        bson_destroy(out);
        return false;
    }
    return true;
}

bool tw_token_parse(const char *text, bson_t *out, tw_error_t *err)
{
    const char *p = text;
    size_t len, bad = 0;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '{')
        return parse_json_token(p, out, err);
    len = strlen(p);
    if (len == 0 || !is_hex(p, len, &bad)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token is not hex%s: a bare token is its _data hex; give any "
                     "other token as JSON, {\"_data\": ...}",
                     len == 0 ? " (empty)" : "");
        return false;
    }
    if (len % 2 != 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token has an odd number of hex digits (%zu): a byte is cut "
                     "in half",
                     len);
        return false;
    }
    bson_init(out);
    BSON_APPEND_UTF8(out, "_data", p);
    return true;
}

char *tw_token_to_json(const bson_t *token)
{
    return tw_json_relaxed(token, NULL);
}

static bool event_cluster_time(const bson_t *event, tw_ctime_t *out)
{
    bson_iter_t it;

    if (!event || !bson_iter_init_find(&it, event, "clusterTime") ||
        !BSON_ITER_HOLDS_TIMESTAMP(&it))
        return false;
    bson_iter_timestamp(&it, &out->t, &out->i);
    return true;
}

tw_time_source_t tw_position_time(const bson_t *event, const bson_t *token,
                                  const tw_ctime_t *op_time, int64_t local_ms,
                                  tw_ctime_t *out)
{
    if (event_cluster_time(event, out))
        return TW_TIME_EVENT;
    if (token && tw_token_layout(token, out) != TW_LAYOUT_OPAQUE)
        return TW_TIME_TOKEN;
    if (op_time) {
        *out = *op_time;
        return TW_TIME_OPERATION;
    }
    out->t = (uint32_t)(local_ms / 1000);
    out->i = 0;
    return TW_TIME_LOCAL;
}

int tw_position_cmp(tw_ctime_t ta, const bson_t *a, tw_ctime_t tb,
                    const bson_t *b)
{
    tw_token_layout_t la = tw_token_layout(a, NULL), lb = tw_token_layout(b, NULL);
    const char *da, *db;
    int c = tw_ctime_cmp(ta, tb);

    if (c != 0)
        return c;
    if (la != lb || la == TW_LAYOUT_OPAQUE || !tw_token_data(a, &da, NULL) ||
        !tw_token_data(b, &db, NULL))
        return 0;
    c = strcasecmp(da, db);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

int tw_token_cmp(const bson_t *a, const bson_t *b)
{
    tw_ctime_t ta = {0, 0}, tb = {0, 0};
    bool oka = tw_token_layout(a, &ta) != TW_LAYOUT_OPAQUE;
    bool okb = tw_token_layout(b, &tb) != TW_LAYOUT_OPAQUE;

    if (!oka || !okb)
        return (int)oka - (int)okb;
    return tw_position_cmp(ta, a, tb, b);
}
