#include "tokenwatch/spec.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char TW_SPEC_FORMS[] =
    "  {\"_data\":\"8263...\"}      a resume token as JSON (resume after it)\n"
    "  8263A1F2C4000000012B...  the token's bare _data hex (82... or 01...)\n"
    "  1700000000:1             a cluster time T:I (start at it)\n"
    "  1700000000               epoch seconds\n"
    "  2026-11-21T05:00:00Z     an RFC 3339 date\n"
    "  oldest | now | checkpoint\n";

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t k = 0; k < n; k++)
        if (!isdigit((unsigned char)s[k]))
            return false;
    return true;
}

static int digits_value(const char *s, size_t n)
{
    int v = 0;

    for (size_t k = 0; k < n; k++)
        v = v * 10 + (s[k] - '0');
    return v;
}

typedef enum { DATE_NOT_A_DATE, DATE_OK, DATE_BAD } date_result_t;

/* "YYYY-MM-DDTHH:MM:SS": the shape only; 't' and ' ' as separator too. */
static bool looks_like_rfc3339(const char *s)
{
    return strlen(s) >= 20 && all_digits(s, 4) && s[4] == '-' && all_digits(s + 5, 2) &&
           s[7] == '-' && all_digits(s + 8, 2) &&
           (s[10] == 'T' || s[10] == 't' || s[10] == ' ') && all_digits(s + 11, 2) &&
           s[13] == ':' && all_digits(s + 14, 2) && s[16] == ':' && all_digits(s + 17, 2);
}

/* Names the first field out of its range, or NULL when all are in range. */
static const char *out_of_range(struct tm *tm, int year)
{
    static const int days_in_month[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    if (tm->tm_mon < 0 || tm->tm_mon > 11)
        return "month (01 to 12)";
    if (tm->tm_mday < 1 ||
        tm->tm_mday > days_in_month[tm->tm_mon] + (tm->tm_mon == 1 && leap))
        return "day (not in that month)";
    if (tm->tm_hour > 23)
        return "hour (00 to 23)";
    if (tm->tm_min > 59)
        return "minute (00 to 59)";
    if (tm->tm_sec > 60)
        return "second (00 to 60)";
    return NULL;
}

/* [.fff](Z|+HH:MM|-HH:MM) after the seconds; *bad names a field out of range. */
static bool parse_zone(const char *p, int *offset, const char **bad)
{
    int hours, minutes;

    *bad = NULL;
    if (*p == '.') {
        if (!isdigit((unsigned char)*++p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        *offset = 0;
        return true;
    }
    if ((*p != '+' && *p != '-') || !all_digits(p + 1, 2) || p[3] != ':' ||
        !all_digits(p + 4, 2) || p[6] != '\0')
        return false;
    hours = digits_value(p + 1, 2);
    minutes = digits_value(p + 4, 2);
    if (hours > 23 || minutes > 59) {
        *bad = "UTC offset (-23:59 to +23:59)";
        return false;
    }
    *offset = (*p == '-' ? -1 : 1) * (hours * 3600 + minutes * 60);
    return true;
}

/* YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM). */
static date_result_t parse_rfc3339(const char *s, uint32_t *out_secs, tw_error_t *err)
{
    int year, offset = 0;
    const char *bad;
    struct tm tm;
    int64_t secs;

    if (!looks_like_rfc3339(s))
        return DATE_NOT_A_DATE;
    memset(&tm, 0, sizeof tm);
    year = digits_value(s, 4);
    tm.tm_year = year - 1900;
    tm.tm_mon = digits_value(s + 5, 2) - 1;
    tm.tm_mday = digits_value(s + 8, 2);
    tm.tm_hour = digits_value(s + 11, 2);
    tm.tm_min = digits_value(s + 14, 2);
    tm.tm_sec = digits_value(s + 17, 2);
    bad = out_of_range(&tm, year);
    if (!bad && !parse_zone(s + 19, &offset, &bad)) {
        if (!bad)
            return DATE_NOT_A_DATE;
    }
    if (bad) {
        tw_error_set(err, TW_ERR_USAGE, 0, "'%s' is not a date: its %s is out of range", s,
                     bad);
        return DATE_BAD;
    }
    secs = (int64_t)timegm(&tm) - offset;
    if (secs < 0 || secs > (int64_t)UINT32_MAX) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s' is outside the cluster times MongoDB can hold (1970 to 2106)", s);
        return DATE_BAD;
    }
    *out_secs = (uint32_t)secs;
    return DATE_OK;
}

bool tw_spec_parse(const char *text, tw_spec_t *out, tw_error_t *err)
{
    tw_error_t inner;
    size_t len = strlen(text);

    memset(out, 0, sizeof *out);
    if (strcasecmp(text, "oldest") == 0) {
        out->kind = TW_SPEC_OLDEST;
        return true;
    }
    if (strcasecmp(text, "now") == 0) {
        out->kind = TW_SPEC_NOW;
        return true;
    }
    if (strcasecmp(text, "checkpoint") == 0) {
        out->kind = TW_SPEC_CHECKPOINT;
        return true;
    }
    if (strchr(text, ':') && all_digits(text, strcspn(text, ":")) &&
        tw_ctime_parse(text, &out->time, NULL)) {
        out->kind = TW_SPEC_TIME;
        out->has_time = true;
        return true;
    }
    if (len <= 10 && all_digits(text, len)) {
        uint64_t secs = 0;
        for (size_t k = 0; k < len; k++)
            secs = secs * 10 + (uint64_t)(text[k] - '0');
        if (secs <= UINT32_MAX) {
            out->kind = TW_SPEC_TIME;
            out->has_time = true;
            out->time.t = (uint32_t)secs;
            out->time.i = 0;
            return true;
        }
    }
    switch (parse_rfc3339(text, &out->time.t, err)) {
    case DATE_BAD:
        return false;
    case DATE_OK:
        out->kind = TW_SPEC_TIME;
        out->has_time = true;
        out->time.i = 0;
        return true;
    case DATE_NOT_A_DATE:
        break;
    }
    /* A token last: a date or a number must never be read as hex. A bare
     * token must be of a known layout; any token can be given as JSON. */
    if (text[0] == '{' || (len >= 18 && tw_token_decode_hex(text, &out->time, NULL))) {
        if (!tw_token_parse(text, &out->token, &inner)) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s' looks like a resume token but %s", text,
                         inner.message);
            return false;
        }
        out->kind = TW_SPEC_TOKEN;
        out->has_token = true;
        out->has_time = tw_token_cluster_time(&out->token, &out->time, NULL);
        return true;
    }
    tw_error_set(err, TW_ERR_USAGE, 0,
                 "'%s' is not a resume position; the forms are:\n%s", text,
                 TW_SPEC_FORMS);
    return false;
}

void tw_spec_clear(tw_spec_t *spec)
{
    if (spec && spec->has_token)
        bson_destroy(&spec->token);
    if (spec)
        memset(spec, 0, sizeof *spec);
}

const char *tw_spec_kind_name(tw_spec_kind_t kind)
{
    switch (kind) {
    case TW_SPEC_TOKEN: return "token";
    case TW_SPEC_TIME: return "time";
    case TW_SPEC_OLDEST: return "oldest";
    case TW_SPEC_NOW: return "now";
    case TW_SPEC_CHECKPOINT: return "checkpoint";
    }
    return "unknown";
}
