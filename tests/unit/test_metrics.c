#include <criterion/criterion.h>
#include <curl/curl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tokenwatch/log.h"
#include "tokenwatch/metrics.h"
#include "tokenwatch/monitor.h"

#define EVENTS "tokenwatch_events_total"
#define STATE "tokenwatch_token_state"
#define LEFT "tokenwatch_token_time_left_seconds"

static void quiet_logs(void)
{
    tw_log_configure(TW_LOG_ERROR, TW_LOG_TEXT, "test", "test", NULL);
}

TestSuite(metrics, .init = quiet_logs);

/* ------------------------------------------------------------ render */

typedef enum { OP_END = 0, OP_COUNTER, OP_GAUGE, OP_ADD, OP_SET, OP_REMOVE } op_kind_t;

typedef struct {
    op_kind_t kind;
    const char *name;
    const char *text; /* help for a declaration, labels for an update */
    double value;
} op_t;

typedef struct {
    const char *title;
    op_t ops[8];
    const char *expected;
} render_case_t;

static const render_case_t render_cases[] = {
    {"empty registry", {{OP_END, NULL, NULL, 0}}, ""},
    {"counter without labels",
     {{OP_COUNTER, EVENTS, "Change events seen.", 0},
      {OP_ADD, EVENTS, NULL, 1},
      {OP_ADD, EVENTS, "", 2}},
     "# HELP tokenwatch_events_total Change events seen.\n"
     "# TYPE tokenwatch_events_total counter\n"
     "tokenwatch_events_total 3\n"},
    {"a delta of 0 creates the series",
     {{OP_COUNTER, "tokenwatch_fallbacks_total", "Fallbacks.", 0},
      {OP_ADD, "tokenwatch_fallbacks_total", NULL, 0}},
     "# HELP tokenwatch_fallbacks_total Fallbacks.\n"
     "# TYPE tokenwatch_fallbacks_total counter\n"
     "tokenwatch_fallbacks_total 0\n"},
    {"declared family without series",
     {{OP_GAUGE, "tokenwatch_oplog_window_seconds", "Oplog window.", 0}},
     "# HELP tokenwatch_oplog_window_seconds Oplog window.\n"
     "# TYPE tokenwatch_oplog_window_seconds gauge\n"},
    {"gauge with labels, series in creation order",
     {{OP_GAUGE, LEFT, "Seconds left.", 0},
      {OP_SET, LEFT, "key=\"b\"", 10},
      {OP_SET, LEFT, "key=\"a\"", 20},
      {OP_SET, LEFT, "key=\"b\"", 30}},
     "# HELP tokenwatch_token_time_left_seconds Seconds left.\n"
     "# TYPE tokenwatch_token_time_left_seconds gauge\n"
     "tokenwatch_token_time_left_seconds{key=\"b\"} 30\n"
     "tokenwatch_token_time_left_seconds{key=\"a\"} 20\n"},
    {"two labels and a gauge added to",
     {{OP_GAUGE, STATE, "1 for the current state.", 0},
      {OP_ADD, STATE, "key=\"k\",state=\"OK\"", 1},
      {OP_ADD, STATE, "key=\"k\",state=\"OK\"", -1},
      {OP_ADD, STATE, "key=\"k\",state=\"WARN\"", 1}},
     "# HELP tokenwatch_token_state 1 for the current state.\n"
     "# TYPE tokenwatch_token_state gauge\n"
     "tokenwatch_token_state{key=\"k\",state=\"OK\"} 0\n"
     "tokenwatch_token_state{key=\"k\",state=\"WARN\"} 1\n"},
    {"families in declaration order, not update order",
     {{OP_GAUGE, "b_gauge", "B.", 0},
      {OP_COUNTER, "a_total", "A.", 0},
      {OP_ADD, "a_total", NULL, 5},
      {OP_SET, "b_gauge", NULL, 7}},
     "# HELP b_gauge B.\n# TYPE b_gauge gauge\nb_gauge 7\n"
     "# HELP a_total A.\n# TYPE a_total counter\na_total 5\n"},
    {"help text escaped",
     {{OP_GAUGE, "g", "two\nlines, a \\ and \"quotes\"", 0}},
     "# HELP g two\\nlines, a \\\\ and \"quotes\"\n# TYPE g gauge\n"},
    {"empty help",
     {{OP_COUNTER, "c_total", "", 0}, {OP_ADD, "c_total", NULL, 1}},
     "# HELP c_total\n# TYPE c_total counter\nc_total 1\n"},
    {"removed series gone, re-created at the end",
     {{OP_GAUGE, LEFT, "L.", 0},
      {OP_SET, LEFT, "key=\"a\"", 1},
      {OP_SET, LEFT, "key=\"b\"", 2},
      {OP_REMOVE, LEFT, "key=\"a\"", 0},
      {OP_SET, LEFT, "key=\"c\"", 3},
      {OP_SET, LEFT, "key=\"a\"", 4}},
     "# HELP tokenwatch_token_time_left_seconds L.\n"
     "# TYPE tokenwatch_token_time_left_seconds gauge\n"
     "tokenwatch_token_time_left_seconds{key=\"b\"} 2\n"
     "tokenwatch_token_time_left_seconds{key=\"c\"} 3\n"
     "tokenwatch_token_time_left_seconds{key=\"a\"} 4\n"},
    {"name with a colon",
     {{OP_COUNTER, "job:events:rate", "R.", 0},
      {OP_ADD, "job:events:rate", NULL, 2}},
     "# HELP job:events:rate R.\n# TYPE job:events:rate counter\n"
     "job:events:rate 2\n"},
};

static void apply(tw_metrics_t *m, const op_t *op, const char *title)
{
    bool ok = true;

    switch (op->kind) {
    case OP_END: return;
    case OP_COUNTER:
        ok = tw_metrics_declare(m, op->name, TW_METRIC_COUNTER, op->text);
        break;
    case OP_GAUGE:
        ok = tw_metrics_declare(m, op->name, TW_METRIC_GAUGE, op->text);
        break;
    case OP_ADD: ok = tw_metrics_add(m, op->name, op->text, op->value); break;
    case OP_SET: ok = tw_metrics_set(m, op->name, op->text, op->value); break;
    case OP_REMOVE: ok = tw_metrics_remove(m, op->name, op->text); break;
    }
    cr_assert(ok, "%s: op %d on %s refused", title, (int)op->kind, op->name);
}

Test(metrics, renders_table)
{
    for (size_t k = 0; k < sizeof render_cases / sizeof render_cases[0]; k++) {
        const render_case_t *c = &render_cases[k];
        tw_metrics_t *m = tw_metrics_new();
        char *text;

        cr_assert(m);
        for (const op_t *op = c->ops; op->kind != OP_END; op++)
            apply(m, op, c->title);
        text = tw_metrics_render(m);
        cr_assert(text, "%s: render failed", c->title);
        cr_expect_str_eq(text, c->expected, "%s", c->title);
        free(text);
        tw_metrics_free(m);
    }
}

Test(metrics, formats_values)
{
    static const struct {
        double value;
        const char *text;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {42, "42"},
        {-12, "-12"},
        {0.5, "0.5"},
        {0.1, "0.1"},
        {1.0 / 3, "0.3333333333333333"},
        {123456.789, "123456.789"},
        {1e15, "1e+15"},
        {1e-7, "1e-07"},
        {999999999999999, "999999999999999"},
        {1700000000123, "1700000000123"},
        {NAN, "NaN"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_metrics_t *m = tw_metrics_new();
        char expected[128];
        char *text;

        cr_assert(tw_metrics_declare(m, "g", TW_METRIC_GAUGE, "G."));
        cr_assert(tw_metrics_set(m, "g", NULL, cases[k].value));
        text = tw_metrics_render(m);
        snprintf(expected, sizeof expected, "# HELP g G.\n# TYPE g gauge\ng %s\n",
                 cases[k].text);
        cr_expect_str_eq(text, expected, "value %.17g", cases[k].value);
        free(text);
        tw_metrics_free(m);
    }
}

/* ------------------------------------------------- refused updates */

typedef struct {
    const char *title;
    op_t op;
} refusal_case_t;

static const refusal_case_t refusal_cases[] = {
    {"add to an undeclared family", {OP_ADD, "nope_total", NULL, 1}},
    {"set an undeclared family", {OP_SET, "nope", NULL, 1}},
    {"set a counter", {OP_SET, "c_total", NULL, 5}},
    {"decrease a counter", {OP_ADD, "c_total", NULL, -1}},
    {"add NaN to a counter", {OP_ADD, "c_total", NULL, NAN}},
    {"unquoted label value", {OP_SET, "g", "key=a", 1}},
    {"unterminated label value", {OP_SET, "g", "key=\"a", 1}},
    {"label name starting with a digit", {OP_SET, "g", "1key=\"a\"", 1}},
    {"label name with a colon", {OP_SET, "g", "a:b=\"a\"", 1}},
    {"unknown escape", {OP_SET, "g", "key=\"a\\q\"", 1}},
    {"raw newline in a value", {OP_SET, "g", "key=\"a\nb\"", 1}},
    {"trailing comma", {OP_SET, "g", "key=\"a\",", 1}},
    {"braces included", {OP_SET, "g", "{key=\"a\"}", 1}},
    {"space after the comma", {OP_SET, "g", "a=\"1\", b=\"2\"", 1}},
    {"invalid UTF-8", {OP_SET, "g", "key=\"\xff\"", 1}},
    {"overlong UTF-8", {OP_SET, "g", "key=\"\xc0\xaf\"", 1}},
    {"UTF-16 surrogate", {OP_SET, "g", "key=\"\xed\xa0\x80\"", 1}},
};

Test(metrics, refuses_misuse_table)
{
    for (size_t k = 0; k < sizeof refusal_cases / sizeof refusal_cases[0]; k++) {
        const refusal_case_t *c = &refusal_cases[k];
        tw_metrics_t *m = tw_metrics_new();
        char *before, *after;
        bool ok;

        cr_assert(tw_metrics_declare(m, "c_total", TW_METRIC_COUNTER, "C."));
        cr_assert(tw_metrics_declare(m, "g", TW_METRIC_GAUGE, "G."));
        before = tw_metrics_render(m);
        ok = c->op.kind == OP_ADD
                 ? tw_metrics_add(m, c->op.name, c->op.text, c->op.value)
                 : tw_metrics_set(m, c->op.name, c->op.text, c->op.value);
        after = tw_metrics_render(m);
        cr_expect_not(ok, "%s: accepted", c->title);
        cr_expect_str_eq(after, before, "%s: the scrape changed", c->title);
        cr_expect(isnan(tw_metrics_get(m, c->op.name, c->op.text)), "%s",
                  c->title);
        free(before);
        free(after);
        tw_metrics_free(m);
    }
}

Test(metrics, accepts_valid_label_sets)
{
    static const char *const labels[] = {
        "key=\"a\"",
        "key=\"\"",
        "_k=\"x\"",
        "key=\"with \\\"quotes\\\", \\\\ and \\n\"",
        "key=\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91\"",
        "a=\"1\",b=\"2\",c=\"3\"",
        "key=\"a,b=c\"",
    };
    tw_metrics_t *m = tw_metrics_new();

    cr_assert(tw_metrics_declare(m, "g", TW_METRIC_GAUGE, "G."));
    for (size_t k = 0; k < sizeof labels / sizeof labels[0]; k++) {
        cr_expect(tw_metrics_set(m, "g", labels[k], (double)k), "%s", labels[k]);
        cr_expect_eq(tw_metrics_get(m, "g", labels[k]), (double)k, "%s",
                     labels[k]);
    }
    tw_metrics_free(m);
}

Test(metrics, rejects_bad_declarations)
{
    static const char *const bad_names[] = {"", "1abc", "a-b", "a b", "é"};
    tw_metrics_t *m = tw_metrics_new();
    char *text;

    for (size_t k = 0; k < sizeof bad_names / sizeof bad_names[0]; k++)
        cr_expect_not(tw_metrics_declare(m, bad_names[k], TW_METRIC_GAUGE, "x"),
                      "'%s'", bad_names[k]);
    cr_expect_not(tw_metrics_declare(m, NULL, TW_METRIC_GAUGE, "x"));
    cr_assert(tw_metrics_declare(m, "x_total", TW_METRIC_COUNTER, "old"));
    cr_expect_not(tw_metrics_declare(m, "x_total", TW_METRIC_GAUGE, "gauge"));
    cr_expect(tw_metrics_declare(m, "x_total", TW_METRIC_COUNTER, "new"));
    text = tw_metrics_render(m);
    cr_expect_str_eq(text, "# HELP x_total new\n# TYPE x_total counter\n");
    free(text);
    tw_metrics_free(m);
}

Test(metrics, declaring_after_a_refused_update_works)
{
    tw_metrics_t *m = tw_metrics_new();
    char *text;

    cr_expect_not(tw_metrics_add(m, "late_total", NULL, 1));
    cr_assert(tw_metrics_declare(m, "late_total", TW_METRIC_COUNTER, "Late."));
    cr_assert(tw_metrics_add(m, "late_total", NULL, 2));
    text = tw_metrics_render(m);
    cr_expect_str_eq(text, "# HELP late_total Late.\n# TYPE late_total counter\n"
                           "late_total 2\n");
    free(text);
    tw_metrics_free(m);
}

static size_t count_lines_with(const char *text, const char *needle)
{
    size_t n = 0;

    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

Test(metrics, warns_once_per_family)
{
    char *logged = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&logged, &size);
    tw_metrics_t *m = tw_metrics_new();

    cr_assert(out);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, "test", "test", out);
    for (int k = 0; k < 100; k++)
        tw_metrics_add(m, "undeclared_total", NULL, 1);
    cr_assert(tw_metrics_declare(m, "c_total", TW_METRIC_COUNTER, "C."));
    for (int k = 0; k < 100; k++)
        tw_metrics_add(m, "c_total", NULL, -1);
    tw_log_configure(TW_LOG_ERROR, TW_LOG_TEXT, "test", "test", NULL);
    fclose(out);
    cr_expect_eq(count_lines_with(logged, "undeclared_total"), 1, "%s", logged);
    cr_expect_eq(count_lines_with(logged, "c_total"), 1, "%s", logged);
    cr_expect(strstr(logged, "not declared") != NULL, "%s", logged);
    cr_expect(strstr(logged, "cannot decrease") != NULL, "%s", logged);
    free(logged);
    tw_metrics_free(m);
}

Test(metrics, get_and_remove)
{
    tw_metrics_t *m = tw_metrics_new();

    cr_assert(tw_metrics_declare(m, EVENTS, TW_METRIC_COUNTER, "E."));
    cr_assert(tw_metrics_declare(m, LEFT, TW_METRIC_GAUGE, "L."));
    cr_expect(isnan(tw_metrics_get(m, "absent", NULL)));
    cr_expect(isnan(tw_metrics_get(m, EVENTS, NULL)), "declared, no series");
    cr_assert(tw_metrics_add(m, EVENTS, NULL, 2.5));
    cr_expect_eq(tw_metrics_get(m, EVENTS, NULL), 2.5);
    cr_expect_eq(tw_metrics_get(m, EVENTS, ""), 2.5, "NULL and \"\" are one");
    cr_assert(tw_metrics_set(m, LEFT, "key=\"a\"", -3));
    cr_expect_eq(tw_metrics_get(m, LEFT, "key=\"a\""), -3);
    cr_expect(isnan(tw_metrics_get(m, LEFT, "key=\"b\"")));
    cr_expect(isnan(tw_metrics_get(m, LEFT, NULL)));
    cr_expect(tw_metrics_remove(m, LEFT, "key=\"a\""));
    cr_expect(isnan(tw_metrics_get(m, LEFT, "key=\"a\"")));
    cr_expect_not(tw_metrics_remove(m, LEFT, "key=\"a\""), "already gone");
    cr_expect_not(tw_metrics_remove(m, "absent", NULL));
    tw_metrics_free(m);
    tw_metrics_free(NULL);
}

Test(metrics, null_registry_is_a_no_op)
{
    cr_expect_not(tw_metrics_declare(NULL, "c_total", TW_METRIC_COUNTER, "C."));
    cr_expect_not(tw_metrics_add(NULL, "c_total", NULL, 1));
    cr_expect_not(tw_metrics_set(NULL, "g", NULL, 1));
    cr_expect_not(tw_metrics_remove(NULL, "g", NULL));
    cr_expect(isnan(tw_metrics_get(NULL, "g", NULL)));
    cr_expect_null(tw_metrics_render(NULL));
    tw_metrics_heartbeat(NULL, 1);
    tw_metrics_set_ready(NULL, "mongo", true);
    tw_metrics_free(NULL);
}

/* ------------------------------------------------------------ labels */

typedef struct {
    const char *name;
    const char *value;
    size_t size;
    bool ok;
    const char *expected;
} label_case_t;

static const label_case_t label_cases[] = {
    {"key", "tokenwatch:{a}:checkpoint", 64, true,
     "key=\"tokenwatch:{a}:checkpoint\""},
    {"key", "", 64, true, "key=\"\""},
    {"key", "say \"hi\"", 64, true, "key=\"say \\\"hi\\\"\""},
    {"key", "C:\\path\\", 64, true, "key=\"C:\\\\path\\\\\""},
    {"key", "two\nlines", 64, true, "key=\"two\\nlines\""},
    {"key", "tab\tstays", 64, true, "key=\"tab\tstays\""},
    {"key", "caf\xc3\xa9", 64, true, "key=\"caf\xc3\xa9\""},
    {"state", "OK", 11, true, "state=\"OK\""},  /* exactly fits */
    {"state", "OK", 10, false, ""},             /* one byte short */
    {"k", "\"", 7, true, "k=\"\\\"\""},         /* escape counted */
    {"k", "\"", 6, false, ""},
    {"1key", "v", 64, false, ""},
    {"a-b", "v", 64, false, ""},
    {"a:b", "v", 64, false, ""},
    {"", "v", 64, false, ""},
};

Test(metrics, label_escaping_table)
{
    for (size_t k = 0; k < sizeof label_cases / sizeof label_cases[0]; k++) {
        const label_case_t *c = &label_cases[k];
        char out[64];
        bool ok;

        memset(out, 'X', sizeof out);
        ok = tw_metrics_label(out, c->size, c->name, c->value);
        cr_expect_eq(ok, c->ok, "%s=%s in %zu: ok=%d", c->name, c->value,
                     c->size, ok);
        cr_expect_str_eq(out, c->expected, "%s=%s in %zu", c->name, c->value,
                         c->size);
    }
}

Test(metrics, label_append_builds_a_set)
{
    char labels[TW_METRICS_LABELS_MAX];
    char small[24];
    tw_metrics_t *m = tw_metrics_new();
    char *text;

    cr_assert(tw_metrics_label(labels, sizeof labels, "key", "a\"b"));
    cr_assert(tw_metrics_label_append(labels, sizeof labels, "state", "OK"));
    cr_expect_str_eq(labels, "key=\"a\\\"b\",state=\"OK\"");

    cr_assert(tw_metrics_label(small, sizeof small, "key", "0123456789"));
    cr_expect_not(tw_metrics_label_append(small, sizeof small, "state", "OK"));
    cr_expect_str_eq(small, "key=\"0123456789\"", "left as it was");

    /* What the helpers build, the registry takes and renders verbatim. */
    cr_assert(tw_metrics_declare(m, STATE, TW_METRIC_GAUGE, "S."));
    cr_assert(tw_metrics_set(m, STATE, labels, 1));
    text = tw_metrics_render(m);
    cr_expect_str_eq(text, "# HELP tokenwatch_token_state S.\n"
                           "# TYPE tokenwatch_token_state gauge\n"
                           "tokenwatch_token_state{key=\"a\\\"b\",state=\"OK\"} 1\n");
    free(text);
    tw_metrics_free(m);
}

/*
 * Issue 10: a guarded key too long for a label still gets a series of its
 * own. Up to 1024 bytes (escaped) a value is shown whole; above, as its
 * first 128 bytes, "…" and 16 hex digits of the SHA-256 of the whole value,
 * never "" (which wrote the series without the key).
 */
static char *repeat(const char *unit, size_t times)
{
    size_t len = strlen(unit);
    char *out = malloc(len * times + 1);

    cr_assert_not_null(out);
    for (size_t k = 0; k < times; k++)
        memcpy(out + k * len, unit, len);
    out[len * times] = '\0';
    return out;
}

/* Builds key=<value>,state="OK" as the monitor does; the registry must take
 * it as a series of its own. */
static void expect_own_series(tw_metrics_t *m, const char *labels)
{
    char with_state[TW_METRICS_LABELS_MAX];

    cr_assert_gt(strlen(labels), 0, "a label, not \"\"");
    memcpy(with_state, labels, strlen(labels) + 1);
    cr_assert(tw_metrics_label_append(with_state, sizeof with_state, "state", "OK"),
              "room for the state label");
    cr_expect(tw_metrics_set(m, STATE, with_state, 1), "the registry takes %.60s...",
              with_state);
}

Test(metrics, a_value_too_long_for_a_label_is_shortened_never_dropped)
{
    char labels[TW_METRICS_LABELS_MAX];
    char again[TW_METRICS_LABELS_MAX];
    char other[TW_METRICS_LABELS_MAX];
    char *a5000 = repeat("a", 5000);
    char *a4999b = repeat("a", 5000);
    char *a1024 = repeat("a", 1024);
    char *a1025 = repeat("a", 1025);
    char *quotes = repeat("\"", 600);
    char *euros = repeat("\xe2\x82\xac", 400);
    char *expected;
    tw_metrics_t *m = tw_metrics_new();

    cr_assert(tw_metrics_declare(m, STATE, TW_METRIC_GAUGE, "S."));

    /* The exact form, so it stays stable across versions. */
    expected = malloc(8 + 128 + 3 + 16 + 2);
    snprintf(expected, 8 + 128 + 3 + 16 + 2, "key=\"%.128s\xe2\x80\xa6" "c526c6222044dab5\"",
             a5000);
    cr_assert(tw_metrics_label(labels, sizeof labels, "key", a5000));
    cr_expect_str_eq(labels, expected);
    cr_assert(tw_metrics_label(again, sizeof again, "key", a5000));
    cr_expect_str_eq(again, labels, "the same key, the same label");
    expect_own_series(m, labels);

    /* Two keys that differ only past the prefix: two series. */
    a4999b[4999] = 'b';
    cr_assert(tw_metrics_label(other, sizeof other, "key", a4999b));
    cr_expect_str_neq(other, labels, "two keys, one series");
    expect_own_series(m, other);

    /* At the cap a value is whole; one byte over, shortened. */
    cr_assert(tw_metrics_label(labels, sizeof labels, "key", a1024));
    cr_expect_eq(strlen(labels), 1024 + 6, "whole: %zu bytes", strlen(labels));
    expect_own_series(m, labels);
    cr_assert(tw_metrics_label(labels, sizeof labels, "key", a1025));
    cr_expect_eq(strlen(labels), 6 + 128 + 3 + 16, "shortened: %zu bytes", strlen(labels));
    expect_own_series(m, labels);

    /* Escapes count: 600 quotes are 1200 bytes escaped. */
    cr_assert(tw_metrics_label(labels, sizeof labels, "key", quotes));
    cr_expect(strstr(labels, "\xe2\x80\xa6") != NULL, "shortened: %.60s", labels);
    expect_own_series(m, labels);

    /* The prefix is never cut inside a character (the scrape would fail). */
    cr_assert(tw_metrics_label(labels, sizeof labels, "key", euros));
    cr_expect_eq(strlen(labels), 6 + 126 + 3 + 16, "42 whole euro signs: %zu bytes",
                 strlen(labels));
    expect_own_series(m, labels);

    /* A short key that looks like a shortened one is shortened too, so it
     * cannot take another key's series. */
    cr_assert(tw_metrics_label(labels, sizeof labels, "key",
                               "x\xe2\x80\xa6" "0123456789abcdef"));
    cr_expect_str_neq(labels, "key=\"x\xe2\x80\xa6" "0123456789abcdef\"");
    expect_own_series(m, labels);

    free(expected);
    free(a5000);
    free(a4999b);
    free(a1024);
    free(a1025);
    free(quotes);
    free(euros);
    tw_metrics_free(m);
}

/* ----------------------------------------------------------- threads */

#define WRITERS 4
#define ADDS_EACH 20000

static void *writer(void *arg)
{
    tw_metrics_t *m = arg;

    for (int k = 0; k < ADDS_EACH; k++)
        tw_metrics_add(m, EVENTS, NULL, 1);
    return NULL;
}

static void *reader(void *arg)
{
    tw_metrics_t *m = arg;

    for (int k = 0; k < 200; k++)
        free(tw_metrics_render(m));
    return NULL;
}

Test(metrics, concurrent_updates_are_not_lost)
{
    tw_metrics_t *m = tw_metrics_new();
    pthread_t threads[WRITERS + 1];

    cr_assert(tw_metrics_declare(m, EVENTS, TW_METRIC_COUNTER, "E."));
    for (int k = 0; k < WRITERS; k++)
        cr_assert_eq(pthread_create(&threads[k], NULL, writer, m), 0);
    cr_assert_eq(pthread_create(&threads[WRITERS], NULL, reader, m), 0);
    for (int k = 0; k <= WRITERS; k++)
        pthread_join(threads[k], NULL);
    cr_expect_eq(tw_metrics_get(m, EVENTS, NULL), (double)WRITERS * ADDS_EACH);
    tw_metrics_free(m);
}

/* -------------------------------------------------------- parse_addr */

typedef struct {
    const char *addr;
    bool ok;
    const char *host;
    int port;
} addr_case_t;

static const addr_case_t addr_cases[] = {
    {"127.0.0.1:9470", true, "127.0.0.1", 9470},
    {"0.0.0.0:0", true, "0.0.0.0", 0},
    {"localhost:8080", true, "localhost", 8080},
    {"[::1]:9470", true, "::1", 9470},
    {"[::]:65535", true, "::", 65535},
    {"10.1.2.3:00080", true, "10.1.2.3", 80},
    {"", false, NULL, 0},
    {"9470", false, NULL, 0},
    {":9470", false, NULL, 0},
    {"127.0.0.1", false, NULL, 0},
    {"127.0.0.1:", false, NULL, 0},
    {"127.0.0.1:65536", false, NULL, 0},
    {"127.0.0.1:-1", false, NULL, 0},
    {"127.0.0.1:+80", false, NULL, 0},
    {"127.0.0.1: 80", false, NULL, 0},
    {"127.0.0.1:80x", false, NULL, 0},
    {"127.0.0.1:999999", false, NULL, 0},
    {"256.0.0.1:80", false, NULL, 0},
    {"example.com:80", false, NULL, 0},
    {"::1:9470", false, NULL, 0},
    {"[::1]9470", false, NULL, 0},
    {"[::1]", false, NULL, 0},
    {"[::1:9470", false, NULL, 0},
    {"[127.0.0.1]:80", false, NULL, 0},
    {"[]:80", false, NULL, 0},
    {"off:80", false, NULL, 0},
};

Test(metrics, parse_addr_table)
{
    for (size_t k = 0; k < sizeof addr_cases / sizeof addr_cases[0]; k++) {
        const addr_case_t *c = &addr_cases[k];
        char host[TW_HTTP_HOST_MAX] = "";
        int port = -1;
        tw_error_t err;
        bool ok;

        tw_error_clear(&err);
        ok = tw_http_parse_addr(c->addr, host, sizeof host, &port, &err);
        cr_expect_eq(ok, c->ok, "'%s': ok=%d (%s)", c->addr, ok, err.message);
        if (c->ok) {
            cr_expect_str_eq(host, c->host, "'%s'", c->addr);
            cr_expect_eq(port, c->port, "'%s': port %d", c->addr, port);
        } else {
            cr_expect_eq(err.domain, TW_ERR_USAGE, "'%s'", c->addr);
            cr_expect(strstr(err.message, c->addr) != NULL,
                      "the error names '%s': %s", c->addr, err.message);
        }
    }
}

Test(metrics, parse_addr_small_host_buffer)
{
    char host[4];
    int port;
    tw_error_t err;

    cr_expect_not(tw_http_parse_addr("127.0.0.1:80", host, sizeof host, &port,
                                     &err));
    cr_expect(strstr(err.message, "127.0.0.1:80") != NULL, "%s", err.message);
    cr_expect(tw_http_parse_addr("[::]:80", host, sizeof host, &port, NULL));
    cr_expect_str_eq(host, "::");
}

/* -------------------------------------------------------------- HTTP */

static _Atomic int64_t fake_now;

static int64_t fake_ms(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static double fake_random01(void *ctx)
{
    (void)ctx;
    return 0;
}

static tw_clock_t fake_clock = {fake_ms, fake_ms, fake_random01, NULL, {0}};

static void http_setup(void)
{
    quiet_logs();
    atomic_store(&fake_now, 1000000);
    cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
}

static void http_teardown(void)
{
    curl_global_cleanup();
}

TestSuite(http, .init = http_setup, .fini = http_teardown, .timeout = 30);

typedef struct {
    long status;
    char body[8192];
    size_t len;
    char content_type[128];
    char allow[64];
} reply_t;

static size_t collect(char *data, size_t size, size_t count, void *arg)
{
    reply_t *r = arg;
    size_t n = size * count;

    if (n >= sizeof r->body - r->len)
        return 0; /* fails the transfer: bodies here are small */
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static void header_value(CURL *curl, const char *name, char *out, size_t n)
{
    struct curl_header *h;

    out[0] = '\0';
    if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
        snprintf(out, n, "%s", h->value);
}

/* method "GET", "HEAD" or "POST"; the reply is cleared first. */
static void fetch(const char *host, int port, const char *method,
                  const char *path, reply_t *r)
{
    char url[256];
    CURL *curl = curl_easy_init();
    CURLcode rc;

    memset(r, 0, sizeof *r);
    cr_assert(curl);
    snprintf(url, sizeof url, "http://%s:%d%s", host, port, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "POST") == 0)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "a=1");
    rc = curl_easy_perform(curl);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    header_value(curl, "Content-Type", r->content_type, sizeof r->content_type);
    header_value(curl, "Allow", r->allow, sizeof r->allow);
    curl_easy_cleanup(curl);
}

static void get(int port, const char *path, reply_t *r)
{
    fetch("127.0.0.1", port, "GET", path, r);
}

static tw_http_t *start_local(tw_metrics_t *m, int64_t stall_ms)
{
    tw_error_t err;
    tw_http_t *h;

    tw_error_clear(&err);
    h = tw_http_start(m, "127.0.0.1:0", &fake_clock, stall_ms, &err);
    cr_assert(h, "start: %s", err.message);
    cr_assert_gt(tw_http_port(h), 0);
    return h;
}

Test(http, serves_metrics)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h;
    reply_t r;
    char *rendered;

    cr_assert(tw_metrics_declare(m, EVENTS, TW_METRIC_COUNTER, "Events."));
    cr_assert(tw_metrics_declare(m, LEFT, TW_METRIC_GAUGE, "Left."));
    cr_assert(tw_metrics_add(m, EVENTS, NULL, 7));
    cr_assert(tw_metrics_set(m, LEFT, "key=\"a\\\"b\"", 1.5));
    h = start_local(m, 1000);
    get(tw_http_port(h), "/metrics", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    cr_expect_str_eq(r.body,
                     "# HELP tokenwatch_events_total Events.\n"
                     "# TYPE tokenwatch_events_total counter\n"
                     "tokenwatch_events_total 7\n"
                     "# HELP tokenwatch_token_time_left_seconds Left.\n"
                     "# TYPE tokenwatch_token_time_left_seconds gauge\n"
                     "tokenwatch_token_time_left_seconds{key=\"a\\\"b\"} 1.5\n");
    rendered = tw_metrics_render(m);
    cr_expect_str_eq(r.body, rendered);
    free(rendered);

    /* Later updates show in the next scrape; a query string is ignored. */
    cr_assert(tw_metrics_add(m, EVENTS, NULL, 1));
    get(tw_http_port(h), "/metrics?name[]=x", &r);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.body, "tokenwatch_events_total 8\n") != NULL, "%s",
              r.body);

    fetch("127.0.0.1", tw_http_port(h), "HEAD", "/metrics", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.len, 0);
    tw_http_stop(h);
    tw_metrics_free(m);
}

Test(http, empty_registry_is_an_empty_scrape)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    reply_t r;

    get(tw_http_port(h), "/metrics", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "");
    tw_http_stop(h);
    tw_metrics_free(m);
}

Test(http, healthz_follows_the_heartbeat)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    int port = tw_http_port(h);
    reply_t r;

    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200, "young server, no heartbeat yet: %s", r.body);
    cr_expect_str_eq(r.content_type, "text/plain; charset=utf-8");
    atomic_fetch_add(&fake_now, 1000);
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 503);
    cr_expect_str_eq(r.body,
                     "stalled: no heartbeat since start for 1000 ms (limit 1000 ms)\n");

    tw_metrics_heartbeat(m, atomic_load(&fake_now));
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "ok\n");
    atomic_fetch_add(&fake_now, 999);
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200, "999 ms is younger than 1000");
    atomic_fetch_add(&fake_now, 1);
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 503);
    cr_expect_str_eq(r.body, "stalled: no heartbeat for 1000 ms (limit 1000 ms)\n");
    atomic_fetch_add(&fake_now, 60000);
    get(port, "/healthz", &r);
    cr_expect_str_eq(r.body, "stalled: no heartbeat for 61000 ms (limit 1000 ms)\n");

    tw_metrics_heartbeat(m, atomic_load(&fake_now));
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200, "recovers with the next heartbeat");
    tw_http_stop(h);
    tw_metrics_free(m);
}

Test(http, readyz_lists_parts_not_ready)
{
    static const struct {
        const char *part; /* NULL: no change */
        bool ready;
        long status;
        const char *body;
    } steps[] = {
        {NULL, false, 503, "not ready: nothing reported yet\n"},
        {"mongo", false, 503, "not ready: mongo\n"},
        {"redis", false, 503, "not ready: mongo, redis\n"},
        {"mongo", true, 503, "not ready: redis\n"},
        {"redis", true, 200, "ready\n"},
        {"redis", true, 200, "ready\n"},
        {"redis", false, 503, "not ready: redis\n"},
        {"redis", true, 200, "ready\n"},
    };
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    reply_t r;

    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        if (steps[k].part)
            tw_metrics_set_ready(m, steps[k].part, steps[k].ready);
        get(tw_http_port(h), "/readyz", &r);
        cr_expect_eq(r.status, steps[k].status, "step %zu: %ld", k, r.status);
        cr_expect_str_eq(r.body, steps[k].body, "step %zu", k);
    }
    tw_http_stop(h);
    tw_metrics_free(m);
}

Test(http, unknown_paths_and_methods)
{
    static const struct {
        const char *method;
        const char *path;
        long status;
    } cases[] = {
        {"GET", "/", 404},
        {"GET", "/metricsx", 404},
        {"GET", "/metrics/", 404},
        {"GET", "/favicon.ico", 404},
        {"POST", "/metrics", 405},
        {"POST", "/healthz", 405},
        {"POST", "/nowhere", 405},
    };
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    reply_t r;

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fetch("127.0.0.1", tw_http_port(h), cases[k].method, cases[k].path, &r);
        cr_expect_eq(r.status, cases[k].status, "%s %s: %ld", cases[k].method,
                     cases[k].path, r.status);
        if (cases[k].status == 405)
            cr_expect_str_eq(r.allow, "GET, HEAD", "%s %s", cases[k].method,
                             cases[k].path);
    }
    tw_http_stop(h);
    tw_metrics_free(m);
}

Test(http, taken_port_names_the_address)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *first = start_local(m, 1000), *second;
    char addr[64];
    tw_error_t err;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", tw_http_port(first));
    tw_error_clear(&err);
    second = tw_http_start(m, addr, &fake_clock, 1000, &err);
    cr_expect_null(second);
    cr_expect_eq(err.domain, TW_ERR_SYSTEM);
    cr_expect(strstr(err.message, addr) != NULL, "names %s: %s", addr,
              err.message);
    cr_expect(strstr(err.message, "in use") != NULL, "says why: %s",
              err.message);
    tw_http_stop(second);
    tw_http_stop(first);
    tw_metrics_free(m);
}

Test(http, start_refuses_bad_arguments)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_error_t err;

    tw_error_clear(&err);
    cr_expect_null(tw_http_start(m, "nonsense", &fake_clock, 1000, &err));
    cr_expect_eq(err.domain, TW_ERR_USAGE);
    cr_expect(strstr(err.message, "nonsense") != NULL, "%s", err.message);
    tw_error_clear(&err);
    cr_expect_null(tw_http_start(m, "127.0.0.1:0", &fake_clock, 0, &err));
    cr_expect_eq(err.domain, TW_ERR_USAGE);
    cr_expect_null(tw_http_start(m, "127.0.0.1:0", &fake_clock, 0, NULL));
    cr_expect_null(tw_http_start(NULL, "127.0.0.1:0", &fake_clock, 1000, NULL));
    cr_expect_null(tw_http_start(m, "127.0.0.1:0", NULL, 1000, NULL));
    tw_http_stop(NULL);
    tw_metrics_free(m);
}

Test(http, listens_on_localhost)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_error_t err;
    tw_http_t *h = tw_http_start(m, "localhost:0", &fake_clock, 1000, &err);
    reply_t r;

    cr_assert(h, "%s", err.message);
    fetch("localhost", tw_http_port(h), "GET", "/healthz", &r);
    cr_expect_eq(r.status, 200);
    tw_http_stop(h);
    tw_metrics_free(m);
}

static bool ipv6_loopback_works(void)
{
    struct sockaddr_in6 sa;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0)
        return false;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

Test(http, listens_on_ipv6_loopback)
{
    tw_metrics_t *m;
    tw_error_t err;
    tw_http_t *h;
    reply_t r;

    if (!ipv6_loopback_works())
        cr_skip_test("no IPv6 loopback here");
    m = tw_metrics_new();
    h = tw_http_start(m, "[::1]:0", &fake_clock, 1000, &err);
    cr_assert(h, "%s", err.message);
    fetch("[::1]", tw_http_port(h), "GET", "/healthz", &r);
    cr_expect_eq(r.status, 200);
    tw_http_stop(h);
    tw_metrics_free(m);
}

/* The README's metrics table is the reference: every family tokenwatch
 * declares must be named in it. */
Test(metrics, the_readme_documents_every_metric)
{
    char path[512], buf[4096];
    char *text = NULL, *rendered, *save = NULL;
    size_t len = 0, n;
    FILE *f, *mem;
    tw_metrics_t *m = tw_metrics_new();

    snprintf(path, sizeof path, "%s/README.md", TW_SOURCE_DIR);
    f = fopen(path, "r");
    cr_assert(f, "%s", path);
    mem = open_memstream(&text, &len);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, mem);
    fclose(mem);
    fclose(f);
    tw_monitor_declare_metrics(m);
    rendered = tw_metrics_render(m);
    for (char *line = strtok_r(rendered, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char name[128], quoted[140];

        if (sscanf(line, "# TYPE %127s", name) != 1)
            continue;
        snprintf(quoted, sizeof quoted, "`%s", name);
        cr_expect(strstr(text, quoted) != NULL, "README lacks %s", name);
    }
    free(rendered);
    tw_metrics_free(m);
    free(text);
}

/* The whole log written to path so far (malloc'd). */
static char *read_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[4096];
    size_t n;

    cr_assert(f && mem);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, mem);
    fclose(mem);
    fclose(f);
    return text;
}

/* A flood ends after 30 s without a refusal: tw_http_tick notices it with
 * no connection coming, and logs it once. */
Test(http, a_flood_ends_on_tick_once_quiet)
{
    enum { CLIENTS = 200 };
    char path[] = "/tmp/tw-flood-log-XXXXXX";
    int fds[CLIENTS], opened = 0;
    struct sockaddr_in sa;
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    FILE *log = fdopen(mkstemp(path), "w");
    char *text = NULL;

    cr_assert(log);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, "test", "test", log);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)tw_http_port(h));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int k = 0; k < CLIENTS; k++) {
        fds[k] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[k] >= 0 && connect(fds[k], (struct sockaddr *)&sa, sizeof sa) == 0)
            opened++;
    }
    for (int wait = 0; wait < 100; wait++) {
        free(text);
        text = read_log(path);
        if (strstr(text, "refusing connections"))
            break;
        usleep(50000);
    }
    cr_assert(strstr(text, "refusing connections"), "%d connections, no flood:\n%s", opened,
              text);
    for (int k = 0; k < CLIENTS; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    /* Let the server thread take in every connection (a refusal after the
     * clock moves would restart the quiet period). */
    usleep(300000);
    atomic_fetch_add(&fake_now, 29999);
    tw_http_tick(h);
    free(text);
    text = read_log(path);
    cr_expect_null(strstr(text, "accepting connections again"), "too soon:\n%s", text);
    atomic_fetch_add(&fake_now, 1);
    tw_http_tick(h);
    tw_http_tick(h);
    tw_http_tick(NULL);
    free(text);
    text = read_log(path);
    cr_expect_eq(count_lines_with(text, "accepting connections again after refusing "), 1, "%s",
                 text);
    tw_http_stop(h);
    quiet_logs();
    fclose(log);
    unlink(path);
    free(text);
    tw_metrics_free(m);
}
