/*
 * log.h - one line per thing worth telling, as text or JSON, on stderr.
 *
 * The log sink is the only global state besides the stop flag: every module
 * logs, and threading a logger through each call would add noise without
 * making anything testable that is not already. TW_LOG checks the level
 * before it formats anything, so a debug line costs nothing at info.
 *
 * A line is at most 4095 bytes, its newline included. A longer message is
 * cut on a character boundary, never inside an escape sequence, and marked:
 * a JSON line gets "truncated":true after "msg" (still one valid object), a
 * text line's message ends in "…" (U+2026).
 *
 * Never pass a secret (password, webhook URL) to a log call: redact it first
 * (tw_redact_url, redact.h).
 */
#ifndef TOKENWATCH_LOG_H
#define TOKENWATCH_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    TW_LOG_DEBUG = 0,
    TW_LOG_INFO,
    TW_LOG_WARN,
    TW_LOG_ERROR
} tw_log_level_t;

typedef enum { TW_LOG_TEXT = 0, TW_LOG_JSON } tw_log_format_t;

/* name and environment are copied; out NULL means stderr. */
void tw_log_configure(tw_log_level_t level, tw_log_format_t format,
                      const char *name, const char *environment, FILE *out);

bool tw_log_enabled(tw_log_level_t level);

void tw_log_write(tw_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Routes libmongoc's own log lines into ours (warnings and above). */
void tw_log_capture_mongoc(void);

#define TW_LOG(level, ...)                                                     \
    do {                                                                       \
        if (tw_log_enabled(level))                                             \
            tw_log_write((level), __VA_ARGS__);                                \
    } while (0)

#define TW_DEBUG(...) TW_LOG(TW_LOG_DEBUG, __VA_ARGS__)
#define TW_INFO(...) TW_LOG(TW_LOG_INFO, __VA_ARGS__)
#define TW_WARN(...) TW_LOG(TW_LOG_WARN, __VA_ARGS__)
#define TW_ERROR(...) TW_LOG(TW_LOG_ERROR, __VA_ARGS__)

#endif
