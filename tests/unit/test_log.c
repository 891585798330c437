#include <bson/bson.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/log.h"

/* Logs one message through the real emitter and returns what it wrote. */
static char *emit(tw_log_format_t format, const char *value)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    cr_assert_not_null(f);
    tw_log_configure(TW_LOG_DEBUG, format, "orders-cdc", "prod", f);
    TW_ERROR("server said: %s", value);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, "default", "dev", NULL);
    fclose(f);
    return out;
}

static size_t lines(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *const forged =
    "no such key\n2026-01-01T00:00:00.000Z info  [orders-cdc/prod] all is well";

Test(log, a_newline_in_a_value_does_not_forge_a_text_line)
{
    char *out = emit(TW_LOG_TEXT, forged);

    cr_expect_eq(lines(out), 1, "%s", out);
    cr_expect(strstr(out, "server said: no such key\\n2026-01-01T00:00:00.000Z info ") != NULL,
              "%s", out);
    free(out);
}

Test(log, control_bytes_in_text_lines_are_shown_escaped)
{
    static const struct {
        const char *in, *shown;
    } cases[] = {
        {"a\rb", "server said: a\\rb\n"},
        {"a\tb", "server said: a\\tb\n"},
        {"a\x1b[31mred", "server said: a\\x1b[31mred\n"},
        {"a\x7f" "b", "server said: a\\x7fb\n"},
        {"caf\xc3\xa9", "server said: caf\xc3\xa9\n"},
        {"bad \xff", "server said: bad ?\n"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *out = emit(TW_LOG_TEXT, cases[k].in);
        size_t n = strlen(out), m = strlen(cases[k].shown);

        cr_expect(n >= m && strcmp(out + n - m, cases[k].shown) == 0, "case %zu: %s", k, out);
        cr_expect_eq(lines(out), 1, "case %zu", k);
        free(out);
    }
}

Test(log, json_lines_escape_newlines_and_stay_json)
{
    char *out = emit(TW_LOG_JSON, forged);
    bson_t doc;
    bson_iter_t it;

    cr_expect_eq(lines(out), 1, "%s", out);
    cr_assert(bson_init_from_json(&doc, out, -1, NULL), "%s", out);
    cr_expect(bson_iter_init_find(&it, &doc, "msg") &&
              strncmp(bson_iter_utf8(&it, NULL), "server said: no such key\n2026", 29) == 0,
              "%s", out);
    bson_destroy(&doc);
    free(out);
}

Test(log, json_lines_keep_a_message_with_bytes_that_are_not_utf8)
{
    char *out = emit(TW_LOG_JSON, "bad \xff byte");

    cr_expect(strstr(out, "\"msg\":\"server said: bad ? byte\"") != NULL, "%s", out);
    free(out);
}

Test(log, a_long_line_is_cut_on_a_character_boundary)
{
    char value[6000];
    char *out;

    /* Both parities, so some cap falls inside a character. */
    for (size_t odd = 0; odd < 2; odd++) {
        memset(value, 'x', odd);
        for (size_t k = odd; k + 3 < sizeof value; k += 2)
            memcpy(value + k, "\xc3\xa9", 2);
        value[sizeof value - 3 + odd] = '\0';
        out = emit(TW_LOG_JSON, value);
        cr_expect_eq(lines(out), 1);
        cr_expect(bson_utf8_validate(out, strlen(out), false), "valid UTF-8 (%zu)", odd);
        free(out);
        out = emit(TW_LOG_TEXT, value);
        cr_expect_eq(lines(out), 1);
        cr_expect(bson_utf8_validate(out, strlen(out), false), "valid UTF-8 (%zu)", odd);
        free(out);
    }
}

/*
 * Issue 9: a message longer than a line is cut, on a character boundary and
 * never inside an escape sequence, and marked: JSON lines get
 * "truncated":true and stay one valid object; text lines end in "…". Each
 * unit below fills messages of 3, 4 and 10 KB, shifted by a few bytes so the
 * cut falls on every byte of it.
 */
#define LINE_MAX_BYTES 4096 /* LOG_LINE_MAX, the newline included */
#define ELLIPSIS "\xe2\x80\xa6"

static const struct {
    const char *unit;
    const char *text; /* how a text line shows it */
} cut_units[] = {
    {"x", "x"},
    {"\xc3\xa9", "\xc3\xa9"},                 /* é */
    {"\xe2\x82\xac", "\xe2\x82\xac"},         /* € */
    {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"}, /* 😀 */
    {"\"", "\""},                             /* \" in JSON */
    {"\\", "\\"},                             /* \\ in JSON */
    {"\n", "\\n"},                            /* \n in both */
    {"\x01", "\\x01"},                        /* \u0001 in JSON */
    {"\t", "\\t"},                            /* \t in both */
    {"\x7f", "\\x7f"},                        /* kept in JSON */
};
static const size_t cut_sizes[] = {3 * 1024, 4 * 1024, 10 * 1024};
#define PAD_MAX 6

/* pad 'p's, then unit repeated up to size bytes; the caller frees it. */
static char *filled(size_t pad, const char *unit, size_t size)
{
    char *s = malloc(size + 1);
    size_t n = strlen(unit), at = pad;

    cr_assert_not_null(s);
    memset(s, 'p', pad);
    while (at + n <= size) {
        memcpy(s + at, unit, n);
        at += n;
    }
    s[at] = '\0';
    return s;
}

/* line is one whole line, no longer than a log line. */
static void expect_one_line(const char *line, const char *what)
{
    size_t n = strlen(line);

    cr_expect(n > 0 && line[n - 1] == '\n', "%s: no final newline", what);
    cr_expect_eq(lines(line), 1, "%s: %zu lines", what, lines(line));
    cr_expect_leq(n, LINE_MAX_BYTES, "%s: %zu bytes", what, n);
    cr_expect(bson_utf8_validate(line, n, false), "%s: not UTF-8", what);
}

/* The message kept (its first msg_len bytes) is whole units of value, and marked cut
 * when it is not all of value. */
static void expect_whole_units(const char *value, size_t pad, size_t unit_len, size_t msg_len,
                               bool marked, const char *what)
{
    cr_expect_geq(msg_len, pad, "%s: the padding was cut (%zu)", what, msg_len);
    cr_expect_eq((msg_len - pad) % unit_len, 0, "%s: cut inside a unit (%zu)", what, msg_len);
    cr_expect_eq(marked, msg_len < strlen(value), "%s: kept %zu of %zu, marked %d", what,
                 msg_len, strlen(value), marked);
}

static void check_json_cut(const char *value, size_t pad, size_t k, const char *what)
{
    char *out = emit(TW_LOG_JSON, value);
    static const char prefix[] = "server said: ";
    bson_t doc;
    bson_iter_t it;
    const char *msg;
    uint32_t msg_len = 0;
    bool marked = false;

    expect_one_line(out, what);
    cr_expect(strlen(out) >= 2 && strcmp(out + strlen(out) - 2, "}\n") == 0, "%s: %s", what,
              out + (strlen(out) > 40 ? strlen(out) - 40 : 0));
    if (!bson_init_from_json(&doc, out, -1, NULL)) {
        cr_expect(false, "%s: not JSON: ...%s", what,
                  out + (strlen(out) > 80 ? strlen(out) - 80 : 0));
        free(out);
        return;
    }
    cr_assert(bson_iter_init_find(&it, &doc, "msg") && BSON_ITER_HOLDS_UTF8(&it), "%s", what);
    msg = bson_iter_utf8(&it, &msg_len);
    cr_assert(msg_len >= sizeof prefix - 1 && memcmp(msg, prefix, sizeof prefix - 1) == 0,
              "%s", what);
    msg += sizeof prefix - 1;
    msg_len -= (uint32_t)(sizeof prefix - 1);
    cr_expect(memcmp(msg, value, msg_len) == 0, "%s: msg is not the message's start", what);
    if (bson_iter_init_find(&it, &doc, "truncated"))
        marked = BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
    expect_whole_units(value, pad, strlen(cut_units[k].unit), msg_len, marked, what);
    bson_destroy(&doc);
    free(out);
}

static void check_text_cut(const char *value, size_t pad, size_t k, const char *what)
{
    char *out = emit(TW_LOG_TEXT, value);
    size_t units = (strlen(value) - pad) / strlen(cut_units[k].unit);
    char *shown = filled(pad, cut_units[k].text, pad + units * strlen(cut_units[k].text));
    const char *msg = strstr(out, "server said: ");
    size_t msg_len;
    bool marked;

    expect_one_line(out, what);
    cr_assert_not_null(msg, "%s", what);
    msg += strlen("server said: ");
    msg_len = strlen(msg) - 1; /* the newline */
    marked = msg_len >= 3 && memcmp(msg + msg_len - 3, ELLIPSIS, 3) == 0;
    if (marked)
        msg_len -= 3;
    cr_expect(msg_len <= strlen(shown) && memcmp(msg, shown, msg_len) == 0,
              "%s: not the message's start", what);
    /* Units are shown longer than they are: compare with the shown form. */
    expect_whole_units(shown, pad, strlen(cut_units[k].text), msg_len, marked, what);
    free(shown);
    free(out);
}

Test(log, long_messages_are_cut_whole_marked_and_lines_stay_json)
{
    for (size_t k = 0; k < sizeof cut_units / sizeof cut_units[0]; k++)
        for (size_t z = 0; z < sizeof cut_sizes / sizeof cut_sizes[0]; z++)
            for (size_t pad = 0; pad < PAD_MAX; pad++) {
                char *value = filled(pad, cut_units[k].unit, cut_sizes[z]);
                char what[96];

                snprintf(what, sizeof what, "unit %zu, %zu bytes, pad %zu, json", k,
                         cut_sizes[z], pad);
                check_json_cut(value, pad, k, what);
                snprintf(what, sizeof what, "unit %zu, %zu bytes, pad %zu, text", k,
                         cut_sizes[z], pad);
                check_text_cut(value, pad, k, what);
                free(value);
            }
}

Test(log, a_message_that_fits_is_not_marked)
{
    char *json = emit(TW_LOG_JSON, "short");
    char *text = emit(TW_LOG_TEXT, "short");

    cr_expect(strstr(json, "truncated") == NULL, "%s", json);
    cr_expect(strstr(json, "\"msg\":\"server said: short\"}\n") != NULL, "%s", json);
    cr_expect(strstr(text, ELLIPSIS) == NULL, "%s", text);
    free(json);
    free(text);
}
