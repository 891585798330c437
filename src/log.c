#include "tokenwatch/log.h"

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/utf8.h"

/* A line's bytes, its newline included, and a NUL. */
#define LOG_LINE_MAX 4096
#define LOG_LABEL_MAX 128
/* What ends a text line's message that was cut: U+2026. */
#define CUT_MARK "\xe2\x80\xa6"

/* The head of a JSON line, its labels escaped (at most 6 bytes a byte),
 * leaves room for a message and the tail. */
_Static_assert(2 * 6 * LOG_LABEL_MAX + 256 < LOG_LINE_MAX, "labels too long for a line");

static struct {
    tw_log_level_t level;
    tw_log_format_t format;
    char name[LOG_LABEL_MAX];
    char environment[LOG_LABEL_MAX];
    FILE *out;
} log_sink = {TW_LOG_INFO, TW_LOG_TEXT, "default", "dev", NULL};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void tw_log_configure(tw_log_level_t level, tw_log_format_t format,
                      const char *name, const char *environment, FILE *out)
{
    log_sink.level = level;
    log_sink.format = format;
    snprintf(log_sink.name, sizeof log_sink.name, "%s", name ? name : "");
    snprintf(log_sink.environment, sizeof log_sink.environment, "%s",
             environment ? environment : "");
    log_sink.out = out;
}

bool tw_log_enabled(tw_log_level_t level)
{
    return level >= log_sink.level;
}

static void format_now(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000L)) < 0)
        buf[0] = '\0';
}

/*
 * Copies in to out[cap] so that it cannot end the line or forge another:
 * with controls (text format), bytes below 0x20 and 0x7f are shown as \n,
 * \r, \t or \xNN; without (JSON, whose escaping covers them) they are
 * kept. Bytes that are not UTF-8 become '?'. Cut on a character boundary,
 * never inside a \xNN; false when it was cut.
 */
static bool sanitize(const char *in, bool controls, char *out, size_t cap)
{
    size_t n = strlen(in), k = 0, o = 0;

    while (k < n) {
        unsigned char c = (unsigned char)in[k];
        size_t len = tw_utf8_char_len(in + k, n - k);
        char shown[8];

        if (len == 0) {
            shown[0] = '?';
            shown[1] = '\0';
            len = 1;
        } else if (controls && (c < 0x20 || c == 0x7f)) {
            if (c == '\n' || c == '\r' || c == '\t')
                snprintf(shown, sizeof shown, "\\%c", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
            else
                snprintf(shown, sizeof shown, "\\x%02x", c);
        } else {
            memcpy(shown, in + k, len);
            shown[len] = '\0';
        }
        if (o + strlen(shown) >= cap)
            break;
        memcpy(out + o, shown, strlen(shown));
        o += strlen(shown);
        k += len;
    }
    out[o] = '\0';
    return k == n;
}

/*
 * A text line: "TIME LEVEL [NAME/ENV] MESSAGE\n" in line[LOG_LINE_MAX]. A
 * message that does not fit is cut (whole characters, whole \xNN) and ends
 * in CUT_MARK. Returns the length.
 */
static size_t format_text(char *line, const char *when, tw_log_level_t level, const char *name,
                          const char *environment, const char *raw, bool cut)
{
    /* The labels are capped at LOG_LABEL_MAX: the head always fits. */
    size_t head = (size_t)snprintf(line, LOG_LINE_MAX, "%s %-5s [%s/%s] ", when,
                                   level_names[level], name, environment);
    size_t len;

    /* Room for the message, the newline and the NUL; then for the mark. */
    if (cut || !sanitize(raw, true, line + head, LOG_LINE_MAX - head - 1)) {
        sanitize(raw, true, line + head, LOG_LINE_MAX - head - 1 - strlen(CUT_MARK));
        len = head + strlen(line + head);
        memcpy(line + len, CUT_MARK, strlen(CUT_MARK));
        len += strlen(CUT_MARK);
    } else {
        len = head + strlen(line + head);
    }
    line[len++] = '\n';
    line[len] = '\0';
    return len;
}

/* The length of the longest start of escaped (JSON string content, valid
 * UTF-8) within limit bytes that ends between two characters or escape
 * sequences (\n, \", \u0001). */
static size_t json_cut_point(const char *escaped, size_t limit)
{
    size_t n = strlen(escaped), at = 0;

    while (at < n) {
        size_t unit;

        if (escaped[at] == '\\')
            unit = escaped[at + 1] == 'u' ? 6 : 2;
        else if ((unit = tw_utf8_char_len(escaped + at, n - at)) == 0)
            unit = 1;
        if (at + unit > limit)
            break;
        at += unit;
    }
    return at;
}

/*
 * A JSON line: one object with time, level, name, environment and msg, in
 * line[LOG_LINE_MAX]. A message that does not fit is cut (whole characters,
 * whole escape sequences) and the object gets "truncated":true, so the line
 * is always one valid object. Returns the length.
 */
static size_t format_json(char *line, const char *when, tw_log_level_t level, const char *name,
                          const char *environment, const char *message, bool cut)
{
    static const char tail[] = "\"}\n", cut_tail[] = "\",\"truncated\":true}\n";
    char *msg = bson_utf8_escape_for_json(message, -1);
    char *n_json = bson_utf8_escape_for_json(name, -1);
    char *env = bson_utf8_escape_for_json(environment, -1);
    size_t head, keep;

    head = (size_t)snprintf(line, LOG_LINE_MAX,
                            "{\"time\":\"%s\",\"level\":\"%s\",\"name\":\"%s\","
                            "\"environment\":\"%s\",\"msg\":\"",
                            when, level_names[level], n_json ? n_json : "", env ? env : "");
    keep = msg ? strlen(msg) : 0;
    if (cut || head + keep + sizeof tail > LOG_LINE_MAX) {
        keep = json_cut_point(msg ? msg : "", LOG_LINE_MAX - head - sizeof cut_tail);
        cut = true;
    }
    memcpy(line + head, msg ? msg : "", keep);
    memcpy(line + head + keep, cut ? cut_tail : tail, cut ? sizeof cut_tail : sizeof tail);
    bson_free(msg);
    bson_free(n_json);
    bson_free(env);
    return strlen(line);
}

/* raw: the message, cut already when cut is true. */
static void log_emit(tw_log_level_t level, const char *raw, bool cut)
{
    char when[64];
    char line[LOG_LINE_MAX];
    char message[LOG_LINE_MAX], name[LOG_LABEL_MAX], environment[LOG_LABEL_MAX];
    bool text = log_sink.format != TW_LOG_JSON;
    FILE *out = log_sink.out ? log_sink.out : stderr;
    size_t n;

    format_now(when, sizeof when);
    /* Values from outside (server messages, Redis keys) reach log lines:
     * one sanitizing place, here, keeps each call one line. */
    sanitize(log_sink.name, text, name, sizeof name);
    sanitize(log_sink.environment, text, environment, sizeof environment);
    if (text) {
        n = format_text(line, when, level, name, environment, raw, cut);
    } else {
        if (!sanitize(raw, false, message, sizeof message))
            cut = true;
        n = format_json(line, when, level, name, environment, message, cut);
    }
    /* One write per line so threads never interleave inside a line. */
    flockfile(out);
    fwrite(line, 1, n, out);
    fflush(out);
    funlockfile(out);
}

void tw_log_write(tw_log_level_t level, const char *fmt, ...)
{
    char message[LOG_LINE_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (n < 0)
        message[0] = '\0';
    tw_utf8_cut(message, strlen(message));
    log_emit(level, message, n >= (int)sizeof message);
}

static void mongoc_log_to_ours(mongoc_log_level_t level, const char *domain,
                               const char *message, void *ctx)
{
    (void)ctx;
    /* Its info lines are about its internals, and its warnings come once per
     * failed read: tokenwatch reports each outage itself, once. */
    if (level > MONGOC_LOG_LEVEL_WARNING)
        return;
    TW_LOG(level <= MONGOC_LOG_LEVEL_ERROR ? TW_LOG_ERROR : TW_LOG_DEBUG,
           "libmongoc %s: %s", domain, message);
}

void tw_log_capture_mongoc(void)
{
    mongoc_log_trace_disable();
    mongoc_log_set_handler(mongoc_log_to_ours, NULL);
}
