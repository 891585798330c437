#include "tokenwatch/log.h"

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/utf8.h"

#define LOG_LINE_MAX 4096
#define LOG_LABEL_MAX 128

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
 * kept. Bytes that are not UTF-8 become '?'. Cut on a character boundary.
 */
static void sanitize(const char *in, bool controls, char *out, size_t cap)
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
}

static void log_emit(tw_log_level_t level, const char *raw)
{
    char when[64];
    char line[LOG_LINE_MAX];
    char message[LOG_LINE_MAX], name[LOG_LABEL_MAX], environment[LOG_LABEL_MAX];
    bool text = log_sink.format != TW_LOG_JSON;
    FILE *out = log_sink.out ? log_sink.out : stderr;
    int n;

    format_now(when, sizeof when);
    /* Values from outside (server messages, Redis keys) reach log lines:
     * one sanitizing place, here, keeps each call one line. */
    sanitize(raw, text, message, sizeof message);
    sanitize(log_sink.name, text, name, sizeof name);
    sanitize(log_sink.environment, text, environment, sizeof environment);
    if (!text) {
        char *msg = bson_utf8_escape_for_json(message, -1);
        char *n_json = bson_utf8_escape_for_json(name, -1);
        char *env = bson_utf8_escape_for_json(environment, -1);

        n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"level\":\"%s\",\"name\":\"%s\","
                     "\"environment\":\"%s\",\"msg\":\"%s\"}\n",
                     when, level_names[level], n_json ? n_json : "",
                     env ? env : "", msg ? msg : "");
        bson_free(msg);
        bson_free(n_json);
        bson_free(env);
    } else {
        n = snprintf(line, sizeof line, "%s %-5s [%s/%s] %s\n", when,
                     level_names[level], name, environment, message);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        /* Keep the line a line, of whole characters: a cut JSON object must
         * still end well. */
        n = (int)tw_utf8_cut(line, sizeof line - 2);
        line[n++] = '\n';
    }
    /* One write per line so threads never interleave inside a line. */
    flockfile(out);
    fwrite(line, 1, (size_t)n, out);
    fflush(out);
    funlockfile(out);
}

void tw_log_write(tw_log_level_t level, const char *fmt, ...)
{
    char message[LOG_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    tw_utf8_cut(message, strlen(message));
    log_emit(level, message);
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
