/*
 * error.h - the one error type.
 *
 * Functions that can fail return bool and fill a tw_error_t (which may be
 * NULL). Library codes (hiredis, libmongoc, libcurl) are translated once, in
 * the module that wraps the library, and never travel further.
 */
#ifndef TOKENWATCH_ERROR_H
#define TOKENWATCH_ERROR_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    TW_ERR_NONE = 0,
    TW_ERR_USAGE,  /* bad flag, setting, SPEC or token: exit 2 */
    TW_ERR_SYSTEM, /* files, locks, threads, processes */
    TW_ERR_MONGO,  /* code = server code or TW_MONGO_* */
    TW_ERR_REDIS,
    TW_ERR_HTTP
} tw_error_domain_t;

#define TW_ERROR_MESSAGE_MAX 512

typedef struct {
    tw_error_domain_t domain;
    int code;
    char message[TW_ERROR_MESSAGE_MAX];
} tw_error_t;

/* Fills err (when not NULL); the message is truncated, never overflowed,
 * and always valid UTF-8: cut on a character boundary, any byte that is not
 * UTF-8 replaced by '?'. */
void tw_error_set(tw_error_t *err, tw_error_domain_t domain, int code,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Prepends "context: " to an error already set, to say where it happened. */
void tw_error_prefix(tw_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void tw_error_clear(tw_error_t *err);

#endif
