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

/* YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM); 't' and ' ' as separator too. */
static bool parse_rfc3339(const char *s, uint32_t *out_secs)
{
    static const int days_in_month[] = {31, 29, 31, 30, 31, 30,
                                        31, 31, 30, 31, 30, 31};
    int year, mon, day, hour, min, sec, offset = 0;
    const char *p;
    struct tm tm;
    int64_t secs;

    if (strlen(s) < 20 || !all_digits(s, 4) || s[4] != '-' ||
        !all_digits(s + 5, 2) || s[7] != '-' || !all_digits(s + 8, 2) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !all_digits(s + 11, 2) || s[13] != ':' || !all_digits(s + 14, 2) ||
        s[16] != ':' || !all_digits(s + 17, 2))
        return false;
    year = digits_value(s, 4);
    mon = digits_value(s + 5, 2);
    day = digits_value(s + 8, 2);
    hour = digits_value(s + 11, 2);
    min = digits_value(s + 14, 2);
    sec = digits_value(s + 17, 2);
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month[mon - 1] ||
        hour > 23 || min > 59 || sec > 60)
        return false;
    p = s + 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        offset = 0;
    } else if ((*p == '+' || *p == '-') && all_digits(p + 1, 2) &&
               p[3] == ':' && all_digits(p + 4, 2) && p[6] == '\0') {
        offset = digits_value(p + 1, 2) * 3600 + digits_value(p + 4, 2) * 60;
        if (*p == '-')
            offset = -offset;
    } else {
        return false;
    }
    memset(&tm, 0, sizeof tm);
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    secs = (int64_t)timegm(&tm) - offset;
    /* timegm normalises 31 Feb into March: a date that moved was invalid. */
    if (tm.tm_mday != day || secs < 0 || secs > (int64_t)UINT32_MAX)
        return false;
    *out_secs = (uint32_t)secs;
    return true;
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
    if (parse_rfc3339(text, &out->time.t)) {
        out->kind = TW_SPEC_TIME;
        out->has_time = true;
        out->time.i = 0;
        return true;
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
