#include "tokenwatch/redact.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>

/* Option keys longer than this are taken for secrets: no guessing. */
#define KEY_MAX 128

typedef struct {
    size_t start, end; /* [start, end) of the input */
} span_t;

typedef struct {
    span_t at[TW_REDACT_SPANS_MAX];
    size_t count;
    bool overflow;       /* more spans than at[] holds */
    size_t overflow_from; /* then: hide everything from here */
} spans_t;

typedef struct {
    char *buf;
    size_t cap, len;
    bool full;
} outbuf_t;

static void spans_add(spans_t *sp, size_t start, size_t end)
{
    if (sp->count < TW_REDACT_SPANS_MAX) {
        sp->at[sp->count].start = start;
        sp->at[sp->count].end = end;
        sp->count++;
    } else if (!sp->overflow || start < sp->overflow_from) {
        sp->overflow = true;
        sp->overflow_from = start;
    }
}

/* After "scheme://", or 0 when the text does not start with a scheme. */
static size_t authority_start(const char *url)
{
    const char *sep = strstr(url, "://");

    if (!sep || !isalpha((unsigned char)url[0]))
        return 0;
    for (const char *p = url; p < sep; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.')
            return 0;
    return (size_t)(sep - url) + 3;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool key_is_secret(const char *key, size_t len)
{
    static const char *const words[] = {"password", "secret", "token",
                                        "authmechanismproperties"};
    char low[KEY_MAX + 1];
    size_t n = 0;

    for (size_t k = 0; k < len; k++) {
        int hi, lo;
        char c = key[k];

        if (n == KEY_MAX)
            return true;
        if (c == '%' && k + 2 < len && (hi = hex_value(key[k + 1])) >= 0 &&
            (lo = hex_value(key[k + 2])) >= 0) {
            c = (char)(hi * 16 + lo);
            k += 2;
            if (c == '\0')
                return true; /* "pass%00word": no guessing */
        }
        low[n++] = (char)tolower((unsigned char)c);
    }
    low[n] = '\0';
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++)
        if (strstr(low, words[w]))
            return true;
    return false;
}

/* The query that starts at url[q] == '?': the values of secret options. */
static void scan_query(const char *url, size_t q, spans_t *sp)
{
    size_t end = q + strcspn(url + q, "#");
    size_t p = q + 1;

    while (p < end) {
        size_t seg = p + strcspn(url + p, "&;#");
        const char *eq = memchr(url + p, '=', seg - p);

        if (eq && key_is_secret(url + p, (size_t)(eq - (url + p))))
            spans_add(sp, (size_t)(eq - url) + 1, seg);
        p = seg + 1;
    }
}

/* The password of the userinfo; returns where the host part starts. */
static size_t scan_userinfo(const char *url, size_t auth, spans_t *sp)
{
    size_t stop = auth + strcspn(url + auth, "?#");
    const char *at = NULL;
    const char *colon;

    for (size_t k = auth; k < stop; k++)
        if (url[k] == '@')
            at = url + k;
    if (!at)
        at = strchr(url + stop, '@');
    if (!at)
        return auth;
    colon = memchr(url + auth, ':', (size_t)(at - (url + auth)));
    if (colon)
        spans_add(sp, (size_t)(colon - url) + 1, (size_t)(at - url));
    return (size_t)(at - url) + 1;
}

static void put(outbuf_t *o, const char *s, size_t n)
{
    if (o->full)
        return;
    if (o->len + n >= o->cap) {
        n = o->cap - 1 - o->len;
        /* Never end inside a UTF-8 character: back off its lead byte too. */
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
        o->full = true;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void sort_spans(spans_t *sp)
{
    for (size_t k = 1; k < sp->count; k++) {
        span_t v = sp->at[k];
        size_t j = k;

        for (; j > 0 && sp->at[j - 1].start > v.start; j--)
            sp->at[j] = sp->at[j - 1];
        sp->at[j] = v;
    }
}

static void emit(const char *url, spans_t *sp, outbuf_t *o)
{
    size_t len = strlen(url);
    size_t pos = 0;

    sort_spans(sp);
    for (size_t k = 0; k < sp->count; k++) {
        const span_t *s = &sp->at[k];

        if (sp->overflow && s->start >= sp->overflow_from)
            break;
        if (s->start < pos) {
            /* Overlaps the span just hidden: one "***" covers both. */
            pos = s->end > pos ? s->end : pos;
            continue;
        }
        put(o, url + pos, s->start - pos);
        put(o, "***", 3);
        pos = s->end;
    }
    if (sp->overflow) {
        size_t from = sp->overflow_from > pos ? sp->overflow_from : pos;

        put(o, url + pos, from - pos);
        put(o, "***", 3);
        return;
    }
    put(o, url + pos, len - pos);
}

void tw_redact_url(const char *url, char *out, size_t out_size)
{
    outbuf_t o = {out, out_size, 0, false};
    spans_t sp;
    size_t auth, host;
    const char *q1, *q2;

    if (out_size == 0)
        return;
    out[0] = '\0';
    if (!url)
        return;
    memset(&sp, 0, sizeof sp);
    auth = authority_start(url);
    host = scan_userinfo(url, auth, &sp);
    /* A '?' inside an unescaped password is not the query: scan from both. */
    q1 = strchr(url + auth, '?');
    q2 = strchr(url + host, '?');
    if (q1)
        scan_query(url, (size_t)(q1 - url), &sp);
    if (q2 && q2 != q1)
        scan_query(url, (size_t)(q2 - url), &sp);
    emit(url, &sp, &o);
}

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026 */

/* A host as it may be written: a name, an IPv4 or a bracketed IPv6. */
static bool host_ok(const char *host, size_t len)
{
    if (len == 0)
        return false;
    if (host[0] == '[')
        return len > 2 && host[len - 1] == ']' &&
               strspn(host + 1, "0123456789abcdefABCDEF:.") >= len - 2;
    for (size_t k = 0; k < len; k++)
        if (!isalnum((unsigned char)host[k]) && !strchr("-._~%", host[k]))
            return false;
    return true;
}

const char *tw_redact_endpoint_secret(const char *url)
{
    size_t auth;

    if (!url)
        return NULL;
    auth = authority_start(url);
    return url + auth + strcspn(url + auth, "/?#");
}

/* scheme://host[:port]/… from url, or false when it has no such start. */
static bool endpoint_shown(const char *url, outbuf_t *o)
{
    size_t auth = authority_start(url);
    const char *end, *at, *host, *colon;
    size_t host_len;

    if (auth == 0)
        return false;
    end = tw_redact_endpoint_secret(url);
    host = url + auth;
    for (at = end; at > host; at--)
        if (at[-1] == '@')
            break;
    host = at; /* after the last '@' of the authority, if any */
    colon = host[0] == '[' ? memchr(host, ']', (size_t)(end - host)) : host;
    colon = colon ? memchr(colon, ':', (size_t)(end - colon)) : NULL;
    host_len = (size_t)((colon ? colon : end) - host);
    if (!host_ok(host, host_len) ||
        (colon && (colon + 1 == end ||
                   strspn(colon + 1, "0123456789") != (size_t)(end - colon - 1))))
        return false;
    for (size_t k = 0; k + 3 < auth; k++) {
        char c = (char)tolower((unsigned char)url[k]);
        put(o, &c, 1);
    }
    put(o, "://", 3);
    put(o, host, (size_t)(end - host));
    put(o, "/" ELLIPSIS, 1 + strlen(ELLIPSIS));
    return true;
}

void tw_redact_endpoint(const char *url, char *out, size_t out_size)
{
    outbuf_t o = {out, out_size, 0, false};

    if (out_size == 0)
        return;
    out[0] = '\0';
    if (url && endpoint_shown(url, &o))
        return;
    o.len = 0;
    o.full = false;
    out[0] = '\0';
    put(&o, ELLIPSIS, strlen(ELLIPSIS));
}

bool tw_redact_scrub(char *text, size_t size, const char *secret)
{
    char *at;

    if (!text || !secret || !secret[0] || !secret[1])
        return false;
    at = strstr(text, secret);
    if (!at)
        return false;
    *at = '\0';
    if ((size_t)(at - text) + sizeof ELLIPSIS <= size)
        memcpy(at, ELLIPSIS, sizeof ELLIPSIS);
    return true;
}
