#include "tokenwatch/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/utf8.h"

void tw_error_set(tw_error_t *err, tw_error_domain_t domain, int code,
                  const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    err->domain = domain;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    /* Server messages are cut by libmongoc's buffer and by ours: cut on a
     * character, and what is not UTF-8 replaced, so the message can go into
     * JSON (gap records, alerts, JSON logs). */
    tw_utf8_fix(err->message);
}

void tw_error_prefix(tw_error_t *err, const char *fmt, ...)
{
    char prefix[TW_ERROR_MESSAGE_MAX];
    char joined[TW_ERROR_MESSAGE_MAX];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* A long message loses its tail: the context in front matters more. */
    if (snprintf(joined, sizeof joined, "%s: %s", prefix, err->message) < 0)
        return;
    tw_utf8_fix(joined);
    memcpy(err->message, joined, sizeof joined);
}

void tw_error_clear(tw_error_t *err)
{
    if (!err)
        return;
    err->domain = TW_ERR_NONE;
    err->code = 0;
    err->message[0] = '\0';
}

