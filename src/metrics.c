#include "tokenwatch/metrics.h"

#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/utf8.h"

/* A scrape far beyond this means series are leaking (a label per event). */
#define RENDER_MAX ((size_t)8 << 20)
#define VALUE_TEXT_MAX 32

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
    bool standby;
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
    tw_metrics_t *m = tw_calloc(1, sizeof *m);

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
    out = tw_malloc(len + 1);
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
    pthread_mutex_lock(&m->lock);
    f = find_family(m, name);
    if (f && f->declared && f->type != type) {
        TW_WARN("metrics: %s is already declared as a %s", name,
                type_name(f->type));
        goto out_unlock;
    }
    if (!f) {
        f = tw_calloc(1, sizeof *f);
        f->name = tw_strdup(name);
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
        f = tw_calloc(1, sizeof *f);
        f->name = tw_strdup(name);
        append_family(m, f);
    }
    if (f->warned)
        return;
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
    s = tw_calloc(1, sizeof *s + len + 1);
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

/* A growable buffer with a ceiling (RENDER_MAX); once over it, it stays
 * failed. */
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

        while (cap < want)
            cap *= 2;
        o->data = tw_realloc(o->data, cap);
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
    return o.data ? o.data : tw_calloc(1, 1);
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

bool tw_metrics_last_heartbeat(tw_metrics_t *m, int64_t *mono_ms)
{
    bool has_beat;

    if (!m)
        return false;
    pthread_mutex_lock(&m->lock);
    has_beat = m->has_beat;
    if (has_beat)
        *mono_ms = m->beat_ms;
    pthread_mutex_unlock(&m->lock);
    return has_beat;
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
        p = tw_calloc(1, sizeof *p + len + 1);
        memcpy(p->name, part, len + 1);
        *tail = p;
    }
    p->ready = ready;
    pthread_mutex_unlock(&m->lock);
}

void tw_metrics_set_standby(tw_metrics_t *m, bool standby)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->standby = standby;
    pthread_mutex_unlock(&m->lock);
}

bool tw_metrics_standby(tw_metrics_t *m)
{
    bool standby;

    if (!m)
        return false;
    pthread_mutex_lock(&m->lock);
    standby = m->standby;
    pthread_mutex_unlock(&m->lock);
    return standby;
}

bool tw_metrics_readiness(tw_metrics_t *m, char *out, size_t n)
{
    const part_t *p;
    size_t len = 0;
    bool any;

    if (n > 0)
        out[0] = '\0';
    if (!m || n == 0)
        return false;
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
