#include "tokenwatch/utf8.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static bool continuation(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

/* How many bytes a character starting with lead says it has (0: no lead),
 * and the smallest second byte that is not overlong or a surrogate. */
static size_t expected_len(unsigned char lead, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (lead < 0x80)
        return 1;
    if (lead < 0xc2)
        return 0; /* continuation byte, or overlong 2-byte form */
    if (lead < 0xe0)
        return 2;
    if (lead < 0xf0) {
        if (lead == 0xe0)
            *lo = 0xa0; /* overlong */
        if (lead == 0xed)
            *hi = 0x9f; /* UTF-16 surrogates */
        return 3;
    }
    if (lead < 0xf5) {
        if (lead == 0xf0)
            *lo = 0x90; /* overlong */
        if (lead == 0xf4)
            *hi = 0x8f; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

size_t tw_utf8_char_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned char lo, hi;
    size_t want;

    if (n == 0)
        return 0;
    want = expected_len(u[0], &lo, &hi);
    if (want == 0 || want > n)
        return 0;
    if (want > 1 && (u[1] < lo || u[1] > hi))
        return 0;
    for (size_t k = 2; k < want; k++) {
        if (!continuation(u[k]))
            return 0;
    }
    return want;
}

/* True when s[0..n) is the beginning of a well-formed character that n cut
 * short. */
static bool incomplete(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned char lo, hi;
    size_t want = expected_len(u[0], &lo, &hi);

    if (want <= n)
        return false;
    if (n > 1 && (u[1] < lo || u[1] > hi))
        return false;
    for (size_t k = 2; k < n; k++) {
        if (!continuation(u[k]))
            return false;
    }
    return true;
}

size_t tw_utf8_cut(char *buf, size_t len)
{
    /* A character is at most 4 bytes: its lead is among the last 3. */
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)buf[len - back];

        if (continuation(c))
            continue;
        if (incomplete(buf + len - back, back))
            len -= back;
        break;
    }
    buf[len] = '\0';
    return len;
}

size_t tw_utf8_scrub(char *s)
{
    size_t n = strlen(s), k = 0, replaced = 0;

    while (k < n) {
        size_t len = tw_utf8_char_len(s + k, n - k);

        if (len == 0) {
            s[k++] = '?';
            replaced++;
        } else {
            k += len;
        }
    }
    return replaced;
}

void tw_utf8_fix(char *s)
{
    tw_utf8_cut(s, strlen(s));
    tw_utf8_scrub(s);
}

size_t tw_utf8_format(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cap == 0)
        return 0;
    va_start(ap, fmt);
    n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    if ((size_t)n < cap)
        return (size_t)n;
    return tw_utf8_cut(buf, cap - 1);
}
