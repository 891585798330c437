#include "tokenwatch/duration.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *suffix;
    int64_t ms;
} units[] = {
    /* "ms" before "m": the longest suffix wins. */
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

#define DURATION_MAX_MS ((int64_t)3650 * 86400000) /* ten years */

bool tw_duration_parse(const char *text, int64_t *out_ms, tw_error_t *err)
{
    const char *p = text;
    int64_t total = 0;

    if (*p == '\0')
        goto bad;
    while (*p) {
        int64_t number = 0;
        size_t digits = 0;
        size_t k;

        while (isdigit((unsigned char)p[digits])) {
            number = number * 10 + (p[digits] - '0');
            if (number > DURATION_MAX_MS)
                goto too_big;
            digits++;
        }
        if (digits == 0)
            goto bad;
        p += digits;
        for (k = 0; k < sizeof units / sizeof units[0]; k++) {
            size_t n = strlen(units[k].suffix);
            if (strncmp(p, units[k].suffix, n) == 0)
                break;
        }
        if (k == sizeof units / sizeof units[0])
            goto bad;
        if (number > DURATION_MAX_MS / units[k].ms)
            goto too_big;
        total += number * units[k].ms;
        if (total > DURATION_MAX_MS)
            goto too_big;
        p += strlen(units[k].suffix);
    }
    *out_ms = total;
    return true;

bad:
    tw_error_set(err, TW_ERR_USAGE, 0,
                 "'%s' is not a duration: write a number with a unit, "
                 "as 500ms, 30s, 15m, 6h, 7d (or 1h30m)",
                 text);
    return false;
too_big:
    tw_error_set(err, TW_ERR_USAGE, 0,
                 "'%s' is too long a duration (at most 3650d)", text);
    return false;
}

void tw_duration_format(int64_t ms, char out[TW_DURATION_TEXT_MAX])
{
    int64_t total = ms;
    size_t used = 0;

    if (ms <= 0) {
        snprintf(out, TW_DURATION_TEXT_MAX, "0s");
        return;
    }
    out[0] = '\0';
    for (int k = (int)(sizeof units / sizeof units[0]) - 1; k >= 0; k--) {
        int64_t n = ms / units[k].ms;
        if (n == 0)
            continue;
        /* Mixing ms into a longer sum reads badly: 1500ms, not 1s500ms. */
        if (units[k].ms == 1 && used > 0) {
            snprintf(out, TW_DURATION_TEXT_MAX, "%lldms", (long long)total);
            return;
        }
        used += (size_t)snprintf(out + used, TW_DURATION_TEXT_MAX - used,
                                 "%lld%s", (long long)n, units[k].suffix);
        ms -= n * units[k].ms;
    }
}

void tw_duration_words(int64_t ms, char out[TW_DURATION_TEXT_MAX])
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } words[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    int shown = 0;
    size_t used = 0;

    out[0] = '\0';
    for (size_t k = 0; k < sizeof words / sizeof words[0] && shown < 2; k++) {
        int64_t n = ms / words[k].ms;
        if (n == 0 && shown == 0)
            continue;
        if (n > 0)
            used += (size_t)snprintf(out + used, TW_DURATION_TEXT_MAX - used,
                                     "%s%lld%s", shown ? " " : "",
                                     (long long)n, words[k].suffix);
        ms -= n * words[k].ms;
        shown++;
    }
    if (used == 0)
        snprintf(out, TW_DURATION_TEXT_MAX, "0s");
}

/* A share: decimal digits, an optional '.' and more digits, then '%'.
 * The grammar is checked by hand before strtod reads the value: strtod
 * alone would also take hex (0x10), exponents (1e1), signs, leading white
 * space, inf and nan. */
static bool parse_share(const char *text, size_t len, double *out)
{
    size_t k = strspn(text, "0123456789");

    if (k == 0)
        return false;
    if (text[k] == '.') {
        size_t fraction = strspn(text + k + 1, "0123456789");

        if (fraction == 0)
            return false; /* "5.%": a fraction needs a digit */
        k += 1 + fraction;
    }
    if (k != len - 1 || text[k] != '%')
        return false;
    *out = strtod(text, NULL);
    return *out <= 100.0;
}

bool tw_limit_parse(const char *text, tw_limit_t *out, tw_error_t *err)
{
    size_t len = strlen(text);

    if (len > 0 && text[len - 1] == '%') {
        double value;

        if (!parse_share(text, len, &value)) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s' is not a share: write 0%% to 100%% in decimal "
                         "digits (20%%, 12.5%%)",
                         text);
            return false;
        }
        out->kind = TW_LIMIT_SHARE;
        out->share = value / 100.0;
        out->ms = 0;
        return true;
    }
    if (!tw_duration_parse(text, &out->ms, NULL)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s' is not a limit: write a share of the window (20%%) "
                     "or a duration (2h)",
                     text);
        return false;
    }
    out->kind = TW_LIMIT_DURATION;
    out->share = 0.0;
    return true;
}
