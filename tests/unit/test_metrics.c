#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* What http.c serves /healthz and /readyz from. */
Test(metrics, heartbeat_and_readiness_read_back)
{
    tw_metrics_t *m = tw_metrics_new();
    int64_t beat = -1;
    char missing[64], small[8];

    cr_expect_not(tw_metrics_last_heartbeat(m, &beat), "no heartbeat yet");
    cr_expect_eq(beat, -1, "left as it was");
    tw_metrics_heartbeat(m, 1234);
    cr_expect(tw_metrics_last_heartbeat(m, &beat));
    cr_expect_eq(beat, 1234);

    cr_expect_not(tw_metrics_readiness(m, missing, sizeof missing), "nothing reported");
    cr_expect_str_eq(missing, "");
    tw_metrics_set_ready(m, "mongo", false);
    tw_metrics_set_ready(m, "redis", false);
    cr_expect(tw_metrics_readiness(m, missing, sizeof missing));
    cr_expect_str_eq(missing, "mongo, redis");
    cr_expect(tw_metrics_readiness(m, small, sizeof small));
    cr_expect(strncmp(small, "mongo", 5) == 0 && strlen(small) < sizeof small, "%s", small);
    tw_metrics_set_ready(m, "mongo", true);
    cr_expect(tw_metrics_readiness(m, missing, sizeof missing));
    cr_expect_str_eq(missing, "redis");
    tw_metrics_set_ready(m, "redis", true);
    cr_expect(tw_metrics_readiness(m, missing, sizeof missing));
    cr_expect_str_eq(missing, "");

    cr_expect_not(tw_metrics_last_heartbeat(NULL, &beat));
    cr_expect_not(tw_metrics_readiness(NULL, missing, sizeof missing));
    cr_expect_str_eq(missing, "");
    tw_metrics_free(m);
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
