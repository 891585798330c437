#include "tokenwatch/metrics.h"

#include <arpa/inet.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tokenwatch/log.h"
#include "tokenwatch/utf8.h"

/* A scrape far beyond this means series are leaking (a label per event). */
#define RENDER_MAX ((size_t)8 << 20)
#define VALUE_TEXT_MAX 32
#define READY_TEXT_MAX 512

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_TEXT "text/plain; charset=utf-8"

/*
 * Idle or slow clients must not starve the liveness probe (README, /metrics).
 * One polling thread (epoll on Linux) serves every connection, so a
 * connection costs a descriptor and a small buffer, not a thread:
 * - a connection quiet for HTTP_CONNECTION_TIMEOUT_S is cut, so a probe
 *   queued behind a full server waits seconds, not forever;
 * - one client address holds at most HTTP_PER_IP_LIMIT connections, more are
 *   closed at once; a probe from another address always finds room among
 *   HTTP_CONNECTION_LIMIT, unless HTTP_CONNECTION_LIMIT / HTTP_PER_IP_LIMIT
 *   addresses flood together;
 * - the per-address limit is above what a test or a sidecar on the same
 *   loopback address opens by accident (100), far below the total;
 * - the total stays well under the usual 1024 descriptors a process gets.
 * Refusals are logged once per flood; a flood is over after
 * HTTP_FLOOD_QUIET_MS without one, which is logged once too (from
 * tw_http_tick when no connection comes).
 */
#define HTTP_CONNECTION_TIMEOUT_S 3u
#define HTTP_CONNECTION_LIMIT 512u
#define HTTP_PER_IP_LIMIT 128u
#define HTTP_FLOOD_QUIET_MS 30000

typedef struct series {
    struct series *next;
    double value;
    char labels[]; /* "" for the series without labels */
} series_t;

typedef struct family {
    struct family *next;
    char *name;
    char *help; /* escaped for the # HELP line */
    tw_metric_type_t type;
    /* false: a name used before it was declared, kept only so the warning
       is logged once; never rendered. */
    bool declared;
    bool warned;
    series_t *series; /* in creation order */
} family_t;

typedef struct part {
    struct part *next;
    bool ready;
    char name[];
} part_t;

struct tw_metrics {
    pthread_mutex_t lock;
    family_t *families; /* in declaration order */
    part_t *parts;
    bool has_beat;
    int64_t beat_ms;
};

static bool is_name_start(char c, bool colon_ok)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (colon_ok && c == ':');
}

static bool is_name_char(char c, bool colon_ok)
{
    return is_name_start(c, colon_ok) || (c >= '0' && c <= '9');
}

static bool valid_name(const char *s, bool colon_ok)
{
    if (!is_name_start(*s, colon_ok))
        return false;
    while (is_name_char(*++s, colon_ok))
        ;
    return *s == '\0';
}

/* Prometheus refuses a whole scrape over one bad byte in a label value. */
static bool valid_utf8(const char *text)
{
    const unsigned char *s = (const unsigned char *)text;

    while (*s) {
        unsigned long cp, min;
        int more;

        if (*s < 0x80) {
            s++;
            continue;
        }
        if ((*s & 0xe0) == 0xc0) {
            cp = *s & 0x1f, min = 0x80, more = 1;
        } else if ((*s & 0xf0) == 0xe0) {
            cp = *s & 0x0f, min = 0x800, more = 2;
        } else if ((*s & 0xf8) == 0xf0) {
            cp = *s & 0x07, min = 0x10000, more = 3;
        } else {
            return false;
        }
        s++;
        for (; more > 0; more--, s++) {
            if ((*s & 0xc0) != 0x80) /* also stops at the terminator */
                return false;
            cp = (cp << 6) | (*s & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

/*
 * `name="value"(,name="value")*` with only the escapes the format knows.
 * Checked once, when a series is created, so one bad call cannot make every
 * later scrape unreadable.
 */
static bool valid_labels(const char *s)
{
    if (*s == '\0')
        return true;
    if (!valid_utf8(s))
        return false;
    for (;;) {
        if (!is_name_start(*s, false))
            return false;
        while (is_name_char(*++s, false))
            ;
        if (*s++ != '=' || *s++ != '"')
            return false;
        while (*s != '"') {
            if (*s == '\0' || *s == '\n')
                return false;
            if (*s == '\\' && s[1] != '\\' && s[1] != '"' && s[1] != 'n')
                return false;
            s += *s == '\\' ? 2 : 1;
        }
        s++;
        if (*s == '\0')
            return true;
        if (*s++ != ',')
            return false;
    }
}

tw_metrics_t *tw_metrics_new(void)
{
    tw_metrics_t *m = calloc(1, sizeof *m);

    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void family_free(family_t *f)
{
    series_t *s, *next;

    for (s = f->series; s; s = next) {
        next = s->next;
        free(s);
    }
    free(f->name);
    free(f->help);
    free(f);
}

void tw_metrics_free(tw_metrics_t *m)
{
    family_t *f, *fnext;
    part_t *p, *pnext;

    if (!m)
        return;
    for (f = m->families; f; f = fnext) {
        fnext = f->next;
        family_free(f);
    }
    for (p = m->parts; p; p = pnext) {
        pnext = p->next;
        free(p);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The # HELP line escapes only backslash and newline. */
static char *escape_help(const char *help)
{
    size_t len = 0;
    const char *p;
    char *out, *q;

    for (p = help; *p; p++)
        len += (*p == '\\' || *p == '\n') ? 2 : 1;
    out = malloc(len + 1);
    if (!out)
        return NULL;
    for (p = help, q = out; *p; p++) {
        if (*p == '\\' || *p == '\n') {
            *q++ = '\\';
            *q++ = *p == '\n' ? 'n' : '\\';
        } else {
            *q++ = *p;
        }
    }
    *q = '\0';
    return out;
}

static family_t *find_family(tw_metrics_t *m, const char *name)
{
    family_t *f;

    for (f = m->families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static void append_family(tw_metrics_t *m, family_t *f)
{
    family_t **tail = &m->families;

    while (*tail)
        tail = &(*tail)->next;
    *tail = f;
}

static const char *type_name(tw_metric_type_t type)
{
    return type == TW_METRIC_COUNTER ? "counter" : "gauge";
}

bool tw_metrics_declare(tw_metrics_t *m, const char *name,
                        tw_metric_type_t type, const char *help)
{
    family_t *f;
    char *escaped;
    bool ok = false;

    if (!m)
        return false;
    if (!name || !valid_name(name, true) ||
        (type != TW_METRIC_COUNTER && type != TW_METRIC_GAUGE)) {
        TW_WARN("metrics: cannot declare '%s': not a valid metric name",
                name ? name : "(null)");
        return false;
    }
    escaped = escape_help(help ? help : "");
    if (!escaped)
        return false;
    pthread_mutex_lock(&m->lock);
    f = find_family(m, name);
    if (f && f->declared && f->type != type) {
        TW_WARN("metrics: %s is already declared as a %s", name,
                type_name(f->type));
        goto out_unlock;
    }
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f)
            goto out_unlock;
        f->name = strdup(name);
        if (!f->name) {
            free(f);
            goto out_unlock;
        }
        append_family(m, f);
    }
    /* A stub left by an early update holds no series (they were refused). */
    f->declared = true;
    f->type = type;
    free(f->help);
    f->help = escaped;
    escaped = NULL;
    ok = true;
out_unlock:
    pthread_mutex_unlock(&m->lock);
    free(escaped);
    return ok;
}

/* Warns about a misuse of a family once; the caller holds the lock. */
static void warn_once(tw_metrics_t *m, family_t *f, const char *name,
                      const char *what)
{
    if (!f) {
        f = calloc(1, sizeof *f);
        if (f && !(f->name = strdup(name))) {
            free(f);
            f = NULL;
        }
        if (f)
            append_family(m, f);
    }
    if (f && f->warned)
        return;
    if (f)
        f->warned = true;
    TW_WARN("metrics: update of %s dropped: %s", name, what);
}

static series_t *find_series(family_t *f, const char *labels, series_t ***link)
{
    series_t **p;

    for (p = &f->series; *p; p = &(*p)->next)
        if (strcmp((*p)->labels, labels) == 0)
            break;
    if (link)
        *link = p;
    return *p;
}

/*
 * The series an update goes to, created if need be; the caller holds the
 * lock. NULL (and a warning, once per family) when the update is refused.
 */
static series_t *series_for_update(tw_metrics_t *m, const char *name,
                                   const char *labels, bool is_set,
                                   double delta)
{
    family_t *f = find_family(m, name);
    const char *refused = NULL;
    series_t *s, **link;
    size_t len;

    if (!f || !f->declared)
        refused = "the family was not declared";
    else if (f->type == TW_METRIC_COUNTER && is_set)
        refused = "a counter can only be added to";
    else if (f->type == TW_METRIC_COUNTER && !(delta >= 0)) /* NaN too */
        refused = "a counter cannot decrease";
    if (refused) {
        warn_once(m, f, name, refused);
        return NULL;
    }
    s = find_series(f, labels, &link);
    if (s)
        return s;
    if (!valid_labels(labels)) {
        warn_once(m, f, name, "a malformed label set");
        return NULL;
    }
    len = strlen(labels);
    s = calloc(1, sizeof *s + len + 1);
    if (!s)
        return NULL;
    memcpy(s->labels, labels, len + 1);
    *link = s;
    return s;
}

bool tw_metrics_add(tw_metrics_t *m, const char *name, const char *labels,
                    double delta)
{
    series_t *s;

    if (!m || !name)
        return false;
    pthread_mutex_lock(&m->lock);
    s = series_for_update(m, name, labels ? labels : "", false, delta);
    if (s)
        s->value += delta;
    pthread_mutex_unlock(&m->lock);
    return s != NULL;
}

bool tw_metrics_set(tw_metrics_t *m, const char *name, const char *labels,
                    double value)
{
    series_t *s;

    if (!m || !name)
        return false;
    pthread_mutex_lock(&m->lock);
    s = series_for_update(m, name, labels ? labels : "", true, 0);
    if (s)
        s->value = value;
    pthread_mutex_unlock(&m->lock);
    return s != NULL;
}

bool tw_metrics_remove(tw_metrics_t *m, const char *name, const char *labels)
{
    family_t *f;
    series_t *s = NULL, **link;

    if (!m || !name)
        return false;
    pthread_mutex_lock(&m->lock);
    f = find_family(m, name);
    if (f)
        s = find_series(f, labels ? labels : "", &link);
    if (s)
        *link = s->next;
    pthread_mutex_unlock(&m->lock);
    free(s);
    return s != NULL;
}

double tw_metrics_get(tw_metrics_t *m, const char *name, const char *labels)
{
    family_t *f;
    series_t *s = NULL;
    double value = NAN;

    if (!m || !name)
        return NAN;
    pthread_mutex_lock(&m->lock);
    f = find_family(m, name);
    if (f)
        s = find_series(f, labels ? labels : "", NULL);
    if (s)
        value = s->value;
    pthread_mutex_unlock(&m->lock);
    return value;
}

/* A label value too long to show whole (tw_metrics_label): its first
 * SHORT_PREFIX bytes, an ellipsis, SHORT_HASH_HEX digits of its SHA-256. */
#define SHORT_PREFIX 128
#define SHORT_HASH_HEX 16
#define ELLIPSIS "\xe2\x80\xa6" /* U+2026 */
#define SHORT_MAX (SHORT_PREFIX + sizeof ELLIPSIS + SHORT_HASH_HEX)

static size_t escaped_len(const char *value)
{
    size_t len = 0;

    for (const char *p = value; *p; p++)
        len += (*p == '\\' || *p == '"' || *p == '\n') ? 2 : 1;
    return len;
}

/* Ends the way a shortened value ends: the ellipsis, then the hex digits. */
static bool looks_shortened(const char *value)
{
    size_t len = strlen(value);
    const char *hex;

    if (len < sizeof ELLIPSIS - 1 + SHORT_HASH_HEX)
        return false;
    hex = value + len - SHORT_HASH_HEX;
    if (memcmp(hex - (sizeof ELLIPSIS - 1), ELLIPSIS, sizeof ELLIPSIS - 1) != 0)
        return false;
    for (size_t k = 0; k < SHORT_HASH_HEX; k++)
        if (!((hex[k] >= '0' && hex[k] <= '9') || (hex[k] >= 'a' && hex[k] <= 'f')))
            return false;
    return true;
}

bool tw_metrics_label_shortened(const char *value)
{
    return escaped_len(value) > TW_METRICS_VALUE_MAX || looks_shortened(value);
}

static bool shorten(const char *value, char out[SHORT_MAX])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    size_t len = strnlen(value, SHORT_PREFIX);

    if (!EVP_Digest(value, strlen(value), md, &md_len, EVP_sha256(), NULL) ||
        md_len * 2 < SHORT_HASH_HEX)
        return false;
    memcpy(out, value, len);
    len = tw_utf8_cut(out, len);
    memcpy(out + len, ELLIPSIS, sizeof ELLIPSIS - 1);
    len += sizeof ELLIPSIS - 1;
    for (size_t k = 0; k < SHORT_HASH_HEX / 2; k++) {
        out[len++] = digits[md[k] >> 4];
        out[len++] = digits[md[k] & 0xf];
    }
    out[len] = '\0';
    return true;
}

bool tw_metrics_label_append(char *out, size_t n, const char *name,
                             const char *value)
{
    size_t start = strlen(out), len = start;
    char shortened[SHORT_MAX];
    const char *p;

    if (!valid_name(name, false))
        return false;
    if (tw_metrics_label_shortened(value)) {
        if (!shorten(value, shortened))
            return false;
        value = shortened;
    }
    /* Worst case first, so nothing is written unless it all fits. */
    for (p = value; *p; p++)
        len += (*p == '\\' || *p == '"' || *p == '\n') ? 2 : 1;
    len += (start ? 1 : 0) + strlen(name) + 3; /* , = " " */
    if (len >= n)
        return false;
    len = start;
    if (start)
        out[len++] = ',';
    memcpy(out + len, name, strlen(name));
    len += strlen(name);
    out[len++] = '=';
    out[len++] = '"';
    for (p = value; *p; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n') {
            out[len++] = '\\';
            out[len++] = *p == '\n' ? 'n' : *p;
        } else {
            out[len++] = *p;
        }
    }
    out[len++] = '"';
    out[len] = '\0';
    return true;
}

bool tw_metrics_label(char *out, size_t n, const char *name,
                      const char *value)
{
    if (n == 0)
        return false;
    out[0] = '\0';
    return tw_metrics_label_append(out, n, name, value);
}

/*
 * Integers as integers (counters read "42", not "42.000000"); anything else
 * in the shortest form strtod reads back to the same double, as Prometheus's
 * own Go code prints it.
 */
static void format_value(double v, char out[VALUE_TEXT_MAX])
{
    if (isnan(v)) {
        snprintf(out, VALUE_TEXT_MAX, "NaN");
    } else if (isinf(v)) {
        snprintf(out, VALUE_TEXT_MAX, "%s", v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        snprintf(out, VALUE_TEXT_MAX, "0"); /* not "-0" */
    } else if (fabs(v) < 1e15 && v == (double)(int64_t)v) {
        snprintf(out, VALUE_TEXT_MAX, "%.0f", v);
    } else {
        for (int precision = 15; precision <= 17; precision++) {
            snprintf(out, VALUE_TEXT_MAX, "%.*g", precision, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

/* A growable buffer with a ceiling; once failed, it stays failed. */
typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} outbuf_t;

static void out_printf(outbuf_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void out_printf(outbuf_t *o, const char *fmt, ...)
{
    va_list ap;
    int need;
    size_t want;

    if (o->failed)
        return;
    va_start(ap, fmt);
    need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0 || (size_t)need >= RENDER_MAX - o->len) {
        o->failed = true;
        return;
    }
    want = o->len + (size_t)need + 1;
    if (want > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        char *grown;

        while (cap < want)
            cap *= 2;
        grown = realloc(o->data, cap);
        if (!grown) {
            o->failed = true;
            return;
        }
        o->data = grown;
        o->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(o->data + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    o->len += (size_t)need;
}

char *tw_metrics_render(tw_metrics_t *m)
{
    outbuf_t o = {NULL, 0, 0, false};
    char value[VALUE_TEXT_MAX];
    const family_t *f;
    const series_t *s;

    if (!m)
        return NULL;
    pthread_mutex_lock(&m->lock);
    for (f = m->families; f; f = f->next) {
        if (!f->declared)
            continue;
        out_printf(&o, "# HELP %s%s%s\n# TYPE %s %s\n", f->name,
                   f->help[0] ? " " : "", f->help, f->name,
                   type_name(f->type));
        for (s = f->series; s; s = s->next) {
            format_value(s->value, value);
            if (s->labels[0])
                out_printf(&o, "%s{%s} %s\n", f->name, s->labels, value);
            else
                out_printf(&o, "%s %s\n", f->name, value);
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (o.failed) {
        free(o.data);
        return NULL;
    }
    return o.data ? o.data : calloc(1, 1);
}

void tw_metrics_heartbeat(tw_metrics_t *m, int64_t mono_ms)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->has_beat = true;
    m->beat_ms = mono_ms;
    pthread_mutex_unlock(&m->lock);
}

void tw_metrics_set_ready(tw_metrics_t *m, const char *part, bool ready)
{
    part_t *p, **tail;
    size_t len;

    if (!m || !part)
        return;
    pthread_mutex_lock(&m->lock);
    for (tail = &m->parts; *tail; tail = &(*tail)->next)
        if (strcmp((*tail)->name, part) == 0)
            break;
    p = *tail;
    if (!p) {
        len = strlen(part);
        p = calloc(1, sizeof *p + len + 1);
        if (!p) {
            TW_WARN("metrics: out of memory recording readiness of %s", part);
            goto out_unlock;
        }
        memcpy(p->name, part, len + 1);
        *tail = p;
    }
    p->ready = ready;
out_unlock:
    pthread_mutex_unlock(&m->lock);
}

/* Lists the parts that are not ready into out ("" when all are); false when
 * no part was ever reported. */
static bool readiness(tw_metrics_t *m, char *out, size_t n)
{
    const part_t *p;
    size_t len = 0;
    bool any;

    out[0] = '\0';
    pthread_mutex_lock(&m->lock);
    any = m->parts != NULL;
    for (p = m->parts; p; p = p->next) {
        int w;

        if (p->ready || len >= n)
            continue;
        w = snprintf(out + len, n - len, "%s%s", len ? ", " : "", p->name);
        len = w < 0 ? n : len + (size_t)w;
    }
    pthread_mutex_unlock(&m->lock);
    return any;
}

/* ---------------------------------------------------------------- HTTP */

struct tw_http {
    struct MHD_Daemon *daemon;
    tw_metrics_t *metrics;
    const tw_clock_t *clock;
    int64_t stall_ms;
    int64_t started_ms;
    int port;
    /*
     * libmicrohttpd says why a bind failed only through its logger. While
     * tw_http_start runs, lines from the thread running it are kept here for
     * the error; `starting` is only touched by that thread.
     */
    pthread_t starter;
    bool starting;
    char start_message[512];
    /* A flood: refusals since the first one, logged once (flood_lock). */
    pthread_mutex_t flood_lock;
    bool flooding;
    int64_t last_refusal_ms;
    unsigned long long refused;
};

/* libmicrohttpd says this once per refused connection: counted instead.
 * Why, in our words, or NULL for another message. */
static const char *refusal_reason(const char *line)
{
    if (strstr(line, "reached connection limit"))
        return "a connection limit is reached";
    if (strstr(line, "resource limit"))
        return "out of descriptors";
    return NULL;
}

static void flood_refused(tw_http_t *h, const char *reason)
{
    int64_t now = tw_clock_mono_ms(h->clock);

    pthread_mutex_lock(&h->flood_lock);
    if (!h->flooding) {
        h->flooding = true;
        h->refused = 0;
        TW_WARN("metrics http: refusing connections, %s: at most %u at once, "
                "%u per client address, idle ones cut after %u s; further "
                "refusals are counted, not logged",
                reason, HTTP_CONNECTION_LIMIT, HTTP_PER_IP_LIMIT,
                HTTP_CONNECTION_TIMEOUT_S);
    }
    h->refused++;
    h->last_refusal_ms = now;
    pthread_mutex_unlock(&h->flood_lock);
}

/* Ends a flood once no connection was refused for HTTP_FLOOD_QUIET_MS:
 * when a connection comes or goes, and on tw_http_tick. */
static void flood_check(tw_http_t *h)
{
    int64_t now = tw_clock_mono_ms(h->clock);

    pthread_mutex_lock(&h->flood_lock);
    if (h->flooding && now - h->last_refusal_ms >= HTTP_FLOOD_QUIET_MS) {
        h->flooding = false;
        TW_INFO("metrics http: accepting connections again after refusing %llu",
                h->refused);
    }
    pthread_mutex_unlock(&h->flood_lock);
}

static void notify_connection(void *cls, struct MHD_Connection *conn,
                              void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    (void)conn;
    (void)socket_context;
    (void)code;
    flood_check(cls);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    tw_http_t *h = cls;
    char line[512];
    const char *reason;
    size_t len;

    vsnprintf(line, sizeof line, fmt, ap);
    len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    if (pthread_equal(pthread_self(), h->starter) && h->starting) {
        if (h->start_message[0] == '\0') /* the first is the cause */
            snprintf(h->start_message, sizeof h->start_message, "%s", line);
        return;
    }
    reason = refusal_reason(line);
    if (reason) {
        flood_refused(h, reason);
        return;
    }
    TW_WARN("metrics http: %s", line);
}

/* Queues a response; body is copied, or taken over (and freed) with
 * take_body. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned int status,
                               const char *content_type, char *body,
                               bool take_body, const char *allow)
{
    struct MHD_Response *r;
    enum MHD_Result ret = MHD_NO;

    r = MHD_create_response_from_buffer(
        strlen(body), body,
        take_body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!r) {
        if (take_body)
            free(body);
        goto out;
    }
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                content_type) == MHD_NO ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL,
                                "no-store") == MHD_NO ||
        (allow && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow) ==
                      MHD_NO))
        goto out_destroy;
    ret = MHD_queue_response(conn, status, r);
out_destroy:
    MHD_destroy_response(r);
out:
    return ret;
}

static enum MHD_Result serve_metrics(tw_http_t *h, struct MHD_Connection *conn)
{
    char *body = tw_metrics_render(h->metrics);
    char oom[] = "out of memory rendering metrics\n";

    if (!body)
        return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, CONTENT_TYPE_TEXT,
                       oom, false, NULL);
    return respond(conn, MHD_HTTP_OK, CONTENT_TYPE_METRICS, body, true, NULL);
}

static enum MHD_Result serve_healthz(tw_http_t *h, struct MHD_Connection *conn)
{
    char body[256];
    int64_t now = tw_clock_mono_ms(h->clock), since, age;
    bool has_beat;

    pthread_mutex_lock(&h->metrics->lock);
    has_beat = h->metrics->has_beat;
    since = has_beat ? h->metrics->beat_ms : h->started_ms;
    pthread_mutex_unlock(&h->metrics->lock);
    age = now - since;
    if (age < h->stall_ms) {
        snprintf(body, sizeof body, "ok\n");
        return respond(conn, MHD_HTTP_OK, CONTENT_TYPE_TEXT, body, false,
                       NULL);
    }
    snprintf(body, sizeof body,
             "stalled: %s for %lld ms (limit %lld ms)\n",
             has_beat ? "no heartbeat" : "no heartbeat since start",
             (long long)age, (long long)h->stall_ms);
    return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, CONTENT_TYPE_TEXT, body,
                   false, NULL);
}

static enum MHD_Result serve_readyz(tw_http_t *h, struct MHD_Connection *conn)
{
    char missing[READY_TEXT_MAX];
    char body[READY_TEXT_MAX + 32];
    unsigned int status = MHD_HTTP_SERVICE_UNAVAILABLE;

    if (!readiness(h->metrics, missing, sizeof missing)) {
        snprintf(body, sizeof body, "not ready: nothing reported yet\n");
    } else if (missing[0]) {
        snprintf(body, sizeof body, "not ready: %s\n", missing);
    } else {
        snprintf(body, sizeof body, "ready\n");
        status = MHD_HTTP_OK;
    }
    return respond(conn, status, CONTENT_TYPE_TEXT, body, false, NULL);
}

/*
 * Answers on the first call for a request: these endpoints take no body, and
 * libmicrohttpd closes the connection after a response queued before a body
 * it did not read.
 */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn,
                                      const char *url, const char *method,
                                      const char *version,
                                      const char *upload_data,
                                      size_t *upload_data_size, void **con_cls)
{
    tw_http_t *h = cls;
    char not_allowed[] = "method not allowed\n";
    char not_found[] = "not found\n";

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    /* HEAD as well: libmicrohttpd sends the headers of the GET answer. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, CONTENT_TYPE_TEXT,
                       not_allowed, false, "GET, HEAD");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(h, conn);
    if (strcmp(url, "/healthz") == 0)
        return serve_healthz(h, conn);
    if (strcmp(url, "/readyz") == 0)
        return serve_readyz(h, conn);
    return respond(conn, MHD_HTTP_NOT_FOUND, CONTENT_TYPE_TEXT, not_found,
                   false, NULL);
}

/* Digits only (no sign, no spaces), 0..65535. */
static bool parse_port(const char *text, int *port)
{
    long v = 0;
    const char *p;

    if (*text == '\0' || strlen(text) > 5)
        return false;
    for (p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return false;
    *port = (int)v;
    return true;
}

bool tw_http_parse_addr(const char *addr, char *host, size_t host_size,
                        int *port, tw_error_t *err)
{
    char literal[TW_HTTP_HOST_MAX];
    unsigned char scratch[sizeof(struct in6_addr)];
    const char *host_start, *host_end, *colon;
    size_t len;
    bool v6 = addr[0] == '[';

    if (v6) {
        host_start = addr + 1;
        host_end = strchr(addr, ']');
        if (!host_end || host_end[1] != ':') {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s' is not [IPv6]:PORT (e.g. [::1]:9470)", addr);
            return false;
        }
        colon = host_end + 1;
    } else {
        host_start = addr;
        colon = strrchr(addr, ':');
        if (!colon) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s' is not HOST:PORT (e.g. 127.0.0.1:9470)", addr);
            return false;
        }
        host_end = colon;
        if (memchr(addr, ':', (size_t)(colon - addr))) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s': an IPv6 address goes in brackets, as in "
                         "[::1]:9470",
                         addr);
            return false;
        }
    }
    len = (size_t)(host_end - host_start);
    if (len == 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s' names no host: write 0.0.0.0:PORT to listen on "
                     "every interface, 127.0.0.1:PORT for this machine only",
                     addr);
        return false;
    }
    if (len >= sizeof literal || len >= host_size) {
        tw_error_set(err, TW_ERR_USAGE, 0, "'%s': the host is too long", addr);
        return false;
    }
    memcpy(literal, host_start, len);
    literal[len] = '\0';
    if (v6 ? inet_pton(AF_INET6, literal, scratch) != 1
           : strcmp(literal, "localhost") != 0 &&
                 inet_pton(AF_INET, literal, scratch) != 1) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s': the host must be an IPv4 address, localhost or "
                     "an IPv6 address in brackets",
                     addr);
        return false;
    }
    if (!parse_port(colon + 1, port)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s': the port must be a number from 0 to 65535", addr);
        return false;
    }
    memcpy(host, literal, len + 1);
    return true;
}

tw_http_t *tw_http_start(tw_metrics_t *m, const char *addr,
                         const tw_clock_t *clock, int64_t stall_ms,
                         tw_error_t *err)
{
    char host[TW_HTTP_HOST_MAX];
    char service[8];
    int port;
    struct addrinfo hints, *res = NULL;
    const struct addrinfo *ai;
    const union MHD_DaemonInfo *info;
    tw_http_t *h;
    int rc;

    if (!tw_http_parse_addr(addr, host, sizeof host, &port, err))
        return NULL;
    if (!m || !clock || stall_ms <= 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "serving %s needs a registry, a clock and a positive "
                     "stall limit",
                     addr);
        return NULL;
    }
    h = calloc(1, sizeof *h);
    if (!h) {
        tw_error_set(err, TW_ERR_SYSTEM, 0, "out of memory");
        return NULL;
    }
    h->metrics = m;
    h->clock = clock;
    h->stall_ms = stall_ms;
    h->started_ms = tw_clock_mono_ms(clock);
    h->starter = pthread_self();
    pthread_mutex_init(&h->flood_lock, NULL);

    snprintf(service, sizeof service, "%d", port);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        tw_error_set(err, TW_ERR_SYSTEM, rc, "cannot resolve %s: %s", addr,
                     gai_strerror(rc));
        goto out_free_h;
    }
    /* localhost may resolve to ::1 first on a host without IPv6: take the
     * first address that binds. */
    for (ai = res; ai && !h->daemon; ai = ai->ai_next) {
        unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;

        if (ai->ai_family == AF_INET6)
            flags |= MHD_USE_IPv6; /* else MHD reads a sockaddr_in */
        else if (ai->ai_family != AF_INET)
            continue;
        h->starting = true;
        h->daemon = MHD_start_daemon(
            /* The port only names the socket in MHD's messages. */
            flags, (uint16_t)port, NULL, NULL, handle_request, h,
            /* first, so that start-up messages already go through it */
            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
            MHD_OPTION_CONNECTION_TIMEOUT, HTTP_CONNECTION_TIMEOUT_S,
            MHD_OPTION_CONNECTION_LIMIT, HTTP_CONNECTION_LIMIT,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, HTTP_PER_IP_LIMIT,
            MHD_OPTION_NOTIFY_CONNECTION, notify_connection, h,
            MHD_OPTION_END);
        h->starting = false;
    }
    if (!h->daemon) {
        tw_error_set(err, TW_ERR_SYSTEM, 0, "cannot listen on %s: %s", addr,
                     h->start_message[0] ? h->start_message
                                         : "libmicrohttpd did not start");
        goto out_free_res;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info && info->port ? info->port : port;
    freeaddrinfo(res);
    TW_INFO("serving /metrics, /healthz and /readyz on %s (port %d)", addr,
            h->port);
    return h;

out_free_res:
    freeaddrinfo(res);
out_free_h:
    pthread_mutex_destroy(&h->flood_lock);
    free(h);
    return NULL;
}

int tw_http_port(const tw_http_t *h)
{
    return h ? h->port : 0;
}

void tw_http_tick(tw_http_t *h)
{
    if (h)
        flood_check(h);
}

void tw_http_stop(tw_http_t *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    pthread_mutex_destroy(&h->flood_lock);
    free(h);
}
