/*
 * Redis URLs, and the redaction of any URL for the logs. Besides crashes:
 * the password a URL parses to (4 bytes or more, so that it is not a common
 * substring, and without a '*', so that it is not part of the "***" that
 * hides it) must not survive tw_redact_url. Compared percent-decoded on
 * both sides, so an escaped password is found too; the password may still
 * be seen where the URL holds it elsewhere (as the user, in the host), so
 * the output may hold it only fewer times than the input does.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"

#define PASSWORD_MIN 4

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* text with every %XX decoded, into out (strlen(text) + 1 bytes); its length. */
static size_t percent_decode(const char *text, char *out)
{
    size_t n = 0;

    for (size_t k = 0; text[k]; k++) {
        int hi = text[k] == '%' ? hex_digit(text[k + 1]) : -1;
        int lo = hi >= 0 ? hex_digit(text[k + 2]) : -1;

        if (lo >= 0) {
            out[n++] = (char)(hi * 16 + lo);
            k += 2;
        } else {
            out[n++] = text[k];
        }
    }
    return n;
}

/* Occurrences of needle in hay (lengths given), overlapping ones too. */
static size_t count(const char *hay, size_t len, const char *needle, size_t n)
{
    size_t found = 0;

    for (size_t k = 0; k + n <= len; k++)
        found += memcmp(hay + k, needle, n) == 0;
    return found;
}

/* How often the password is in text, percent-decoded. */
static size_t count_decoded(const char *text, const char *password)
{
    char *decoded = malloc(strlen(text) + 1);
    size_t len, found;

    if (!decoded)
        abort();
    len = percent_decode(text, decoded);
    found = count(decoded, len, password, strlen(password));
    free(decoded);
    return found;
}

/* The parsed password is hidden: each place it was, it is no more. */
static void check_redacted(const char *text, const char *password)
{
    size_t size = 2 * strlen(text) + 16; /* "***" may be longer than what it hides */
    char *out = malloc(size);
    size_t in, shown;

    if (!out)
        abort();
    tw_redact_url(text, out, size);
    in = count_decoded(text, password);
    shown = count_decoded(out, password);
    if (shown > 0 && shown >= in)
        abort(); /* the password survived the redaction */
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_string(data, size);
    tw_redis_url_t url;
    char out[512];
    char small[8];

    memset(&url, 0, sizeof url);
    if (tw_redis_url_parse(text, &url, NULL) && url.password &&
        strlen(url.password) >= PASSWORD_MIN && !strchr(url.password, '*'))
        check_redacted(text, url.password);
    tw_redis_url_release(&url);
    tw_redact_url(text, out, sizeof out);
    tw_redact_url(text, small, sizeof small);
    tw_redact_url(text, small, 1);
    free(text);
    return 0;
}
