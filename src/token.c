#include "tokenwatch/token.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

bool tw_token_decode_hex(const char *hex, tw_ctime_t *out, tw_error_t *err)
{
    size_t len = strlen(hex);

    for (size_t k = 0; k < len; k++) {
        if (hex_value(hex[k]) < 0) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "token is not hex: character '%c' at position %zu",
                         isprint((unsigned char)hex[k]) ? hex[k] : '?', k);
            return false;
        }
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
    if (hex_value(hex[0]) != 8 || hex_value(hex[1]) != 2) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token does not start with a cluster time: type byte "
                     "is %c%c, expected 82",
                     hex[0], hex[1]);
        return false;
    }
    out->t = hex_u32(hex + 2);
    out->i = hex_u32(hex + 10);
    return true;
}

bool tw_token_data(const bson_t *token, const char **data, tw_error_t *err)
{
    bson_iter_t it;

    if (!bson_iter_init_find(&it, token, "_data") ||
        !BSON_ITER_HOLDS_UTF8(&it)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "token has no _data string (binary _data tokens come "
                     "from MongoDB 3.6, which is not supported)");
        return false;
    }
    *data = bson_iter_utf8(&it, NULL);
    return true;
}

bool tw_token_cluster_time(const bson_t *token, tw_ctime_t *out,
                           tw_error_t *err)
{
    const char *data;

    return tw_token_data(token, &data, err) &&
           tw_token_decode_hex(data, out, err);
}

bool tw_token_parse(const char *text, bson_t *out, tw_error_t *err)
{
    bson_error_t berr;
    tw_ctime_t ct;
    const char *p = text;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '{') {
        if (!bson_init_from_json(out, p, -1, &berr)) {
            tw_error_set(err, TW_ERR_USAGE, 0, "token is not valid JSON: %s",
                         berr.message);
            return false;
        }
        if (!tw_token_cluster_time(out, &ct, err)) {
            bson_destroy(out);
            return false;
        }
        return true;
    }
    if (!tw_token_decode_hex(p, &ct, err))
        return false;
    bson_init(out);
    BSON_APPEND_UTF8(out, "_data", p);
    return true;
}

char *tw_token_to_json(const bson_t *token)
{
    return bson_as_relaxed_extended_json(token, NULL);
}

int tw_token_cmp(const bson_t *a, const bson_t *b)
{
    tw_ctime_t ta, tb;
    const char *da, *db;
    bool oka = tw_token_data(a, &da, NULL) && tw_token_decode_hex(da, &ta, NULL);
    bool okb = tw_token_data(b, &db, NULL) && tw_token_decode_hex(db, &tb, NULL);
    int c;

    if (!oka || !okb)
        return (int)oka - (int)okb;
    c = tw_ctime_cmp(ta, tb);
    if (c != 0)
        return c;
    c = strcasecmp(da, db);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
}
